// XXH3-64 (seed 0) via Debian's libxxhash.

#include "checksum.h"

#include <xxhash.h>

namespace tqm {

uint64_t Checksum(absl::Span<const uint8_t> bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

struct StreamChecksum::State {
  XXH3_state_t* s = XXH3_createState();
  ~State() { XXH3_freeState(s); }
};

StreamChecksum::StreamChecksum() : state_(new State) { XXH3_64bits_reset(state_->s); }
StreamChecksum::~StreamChecksum() = default;

void StreamChecksum::Update(absl::Span<const uint8_t> bytes) {
  XXH3_64bits_update(state_->s, bytes.data(), bytes.size());
}

uint64_t StreamChecksum::Digest() const { return XXH3_64bits_digest(state_->s); }

}  // namespace tqm
