// XXH3-64 compiled for AVX2 from xxHash's inline build (the header of Debian's
// libxxhash-dev); checksum.cc calls it when the CPU has AVX2. Built with
// -m flags for this file only (CMakeLists.txt); empty on other targets.

#if defined(__x86_64__)

#include <cstddef>
#include <cstdint>

#define XXH_INLINE_ALL
#define XXH_VECTOR XXH_AVX2
#include <xxhash.h>

namespace tqm {
namespace checksum_internal {

uint64_t Xxh3Avx2(const void* data, size_t n) { return XXH3_64bits(data, n); }

}  // namespace checksum_internal
}  // namespace tqm

#endif
