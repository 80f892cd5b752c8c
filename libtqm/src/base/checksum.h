// The one checksum of the format: XXH3-64 with seed 0, one-shot and streamed.

#ifndef TQM_SRC_CHECKSUM_H_
#define TQM_SRC_CHECKSUM_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/types/span.h"

namespace tqm {

uint64_t Checksum(absl::Span<const uint8_t> bytes);

namespace checksum_internal {
using ChecksumFn = uint64_t (*)(const void* data, size_t n);
// The implementation Checksum() uses on this CPU under TQM_CPU, and the
// library's own (SSE2) one, for tests and benchmarks.
ChecksumFn PickChecksum();
uint64_t Xxh3Library(const void* data, size_t n);
}  // namespace checksum_internal

// Streaming XXH3-64: Update() in pieces gives the same value as Checksum()
// over the concatenation.
class StreamChecksum {
 public:
  StreamChecksum();
  ~StreamChecksum();
  void Update(absl::Span<const uint8_t> bytes);
  uint64_t Digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace tqm

#endif  // TQM_SRC_CHECKSUM_H_
