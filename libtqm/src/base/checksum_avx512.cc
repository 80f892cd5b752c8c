// XXH3-64 compiled for AVX512 from xxHash's inline build (the header of Debian's
// libxxhash-dev); checksum.cc calls it when the CPU has AVX512. Built with
// -m flags for this file only (CMakeLists.txt); empty on other targets.

#if defined(__x86_64__)

#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX512
#include <xxhash.h>

namespace tqm {
namespace checksum_internal {

uint64_t Xxh3Avx512(const void* data, size_t n) { return XXH3_64bits(data, n); }

}  // namespace checksum_internal
}  // namespace tqm

#endif
