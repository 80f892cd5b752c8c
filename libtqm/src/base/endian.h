// Little-endian loads and stores: the one place that turns bytes into
// integers. tqm files and every format tqm imports (safetensors, GGUF,
// llama2.c) are little-endian, and tqm builds only for little-endian hosts,
// so each load is a memcpy that compilers emit as one unaligned move.

#ifndef TQM_SRC_BASE_ENDIAN_H_
#define TQM_SRC_BASE_ENDIAN_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "tqm reads and writes little-endian data with plain loads");

namespace tqm {

template <typename T>
inline T LoadLE(const void* p) {
  static_assert(std::is_trivially_copyable<T>::value, "");
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
inline uint16_t LoadLE16(const void* p) { return LoadLE<uint16_t>(p); }
inline uint32_t LoadLE32(const void* p) { return LoadLE<uint32_t>(p); }
inline uint64_t LoadLE64(const void* p) { return LoadLE<uint64_t>(p); }

template <typename T>
inline void StoreLE(T v, void* p) {
  static_assert(std::is_trivially_copyable<T>::value, "");
  std::memcpy(p, &v, sizeof(T));
}
inline void StoreLE64(uint64_t v, void* p) { StoreLE<uint64_t>(v, p); }

// Appends the sizeof(T) little-endian bytes of `v`.
template <typename T>
inline void AppendLE(std::string* out, T v) {
  char b[sizeof(T)];
  StoreLE<T>(v, b);
  out->append(b, sizeof(T));
}

}  // namespace tqm

#endif  // TQM_SRC_BASE_ENDIAN_H_
