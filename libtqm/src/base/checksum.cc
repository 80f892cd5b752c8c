// XXH3-64 (seed 0). One-shot checksums (every chunk a reader verifies)
// run xxHash's inline build compiled for AVX-512 or AVX2 when the CPU has
// it (checksum_avx512.cc, checksum_avx2.cc; cpu.h, TQM_CPU caps it), else
// Debian's libxxhash, which is built for SSE2.

#include "base/checksum.h"

#include <xxhash.h>

#include "base/cpu.h"

namespace tqm {
namespace checksum_internal {
#if defined(__x86_64__)
uint64_t Xxh3Avx2(const void* data, size_t n);
uint64_t Xxh3Avx512(const void* data, size_t n);
#endif
uint64_t Xxh3Library(const void* data, size_t n) { return XXH3_64bits(data, n); }

ChecksumFn PickChecksum() {
#if defined(__x86_64__)
  if (cpu::HasAvx512()) return Xxh3Avx512;
  if (cpu::HasAvx2()) return Xxh3Avx2;
#endif
  return Xxh3Library;
}
}  // namespace checksum_internal

uint64_t Checksum(absl::Span<const uint8_t> bytes) {
  static const checksum_internal::ChecksumFn fn = checksum_internal::PickChecksum();
  return fn(bytes.data(), bytes.size());
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
