// Internals of the lanes codec shared by its decoders: the parsed chunk,
// the portable lane state and the helpers every decoder uses. lanes.cc holds
// the format (parsing, end checks, the encoder), the portable decoder and the
// dispatch; lanes_avx512.cc, lanes_avx2.cc and lanes_neon.cc one vector
// decoder each, chosen at run time (base/cpu.h).

#ifndef TQM_SRC_CODEC_LANES_INTERNAL_H_
#define TQM_SRC_CODEC_LANES_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TQM_LANES_X86 1
#else
#define TQM_LANES_X86 0  // also a value in expressions (HaveAvx2Bmi2)
#endif
#if defined(__aarch64__) && defined(__ARM_NEON) && defined(__GNUC__)
#include <arm_neon.h>
#define TQM_LANES_NEON 1
#else
#define TQM_LANES_NEON 0
#endif

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "codec/entropy.h"

namespace tqm {
namespace lanes_internal {

using entropy_internal::GetVarint;
using entropy_internal::kLanesMaxK;
using entropy_internal::kLanesMaxLength;
using entropy_internal::kModeCoded;
using entropy_internal::kModeRaw;
using entropy_internal::PutVarint;


constexpr int kLanes = 16;        // lanes in a group
constexpr int kBlock = 64;        // positions in a block: 4 steps of 16 lanes
constexpr int kMaxGroups = 4;
// How far ahead of each stream (and of the low plane) the vector decoders
// prefetch. On 256 chunks of 256 KiB, decoded once each (input from L3 and
// DRAM), 256 bytes took the AVX-512 decoder from 3.9-4.1 to 4.3 GB/s; 512
// was as good, 1024 and 2048 no better than none, a second prefetch to L2
// further ahead slower. (Measured when escapes were patched behind a branch;
// much of the gap to one chunk decoded again and again, 5.9, was that
// branch: see PatchEscapesAvx512.)
constexpr size_t kPrefetchAhead = 256;

inline absl::Status Corrupt(const std::string& what) { return absl::DataLossError("lanes: " + what); }

// Lanes of a block of `rc` positions (1..64) that have a symbol at step t.
inline int ActiveLanes(size_t rc, int t) {
  return rc > static_cast<size_t>(t) ? static_cast<int>((rc - t + 3) / 4) : 0;
}


// A parsed coded chunk: decode tables and where each part lies in the payload.
struct Parsed {
  size_t n = 0;
  int k = 0;
  int groups = 1;
  uint8_t len7[128];  // code length by the first 7 bits of a lane
  uint8_t sym[256];   // h << k by the first 8 bits (0 for the escape's)
  uint32_t esc_lo = 0, esc_hi = 0;  // the escape's 8-bit prefixes: [esc_lo, esc_hi)
  size_t begin[kMaxGroups];  // byte offsets of the streams in the payload
  size_t end[kMaxGroups];
  size_t escapes = 0;  // offset of the escaped high parts
  size_t num_escapes = 0;
  size_t low = 0;  // offset of the low plane (it runs to the payload's end)
};


// After the last block: every stream read to its end, and no lane holding a
// set bit (the unused bits of each lane's last word are zero).
absl::Status CheckEnds(const Parsed& p, const size_t pos[kMaxGroups],
                       const uint32_t nonzero_lanes[kMaxGroups], size_t escapes);

// ORs the escaped high parts into the positions of o[] set in `mask`, in
// position order, taking them from escape *next on. Past the chunk's last
// escape they read as 0 (CheckEnds then rejects the chunk).
inline void PatchEscapes(const Parsed& p, const uint8_t* in, uint64_t mask, uint8_t* o,
                         size_t* next) {
  while (mask != 0) {
    const int i = __builtin_ctzll(mask);
    mask &= mask - 1;
    const uint32_t e = *next < p.num_escapes ? in[p.escapes + *next] : 0;
    ++*next;
    o[i] |= static_cast<uint8_t>(e << p.k);
  }
}


// Plain C++: the same schedule one lane at a time (the reference for the
// AVX-512 and AVX2 decoders, and the decoder on other CPUs).
struct PortableLanes {
  uint32_t buf[kLanes] = {};
  uint32_t cnt[kLanes] = {};
  size_t pos = 0;
};


// ORs the K-bit fields of 64 positions (8K bytes at `low`, read 8 at a time:
// 8 more must be readable) into o[0..63].
template <int K>
inline void MergeLow(const uint8_t* low, uint8_t* o) {
  for (int e = 0; e < 8; ++e) {
    uint64_t v, w = 0, x;
    std::memcpy(&v, low + K * e, 8);
    for (int i = 0; i < 8; ++i) w |= ((v >> (K * i)) & ((1u << K) - 1)) << (8 * i);
    std::memcpy(&x, o + 8 * e, 8);
    x |= w;  // little-endian host: byte i of w is position 8e + i
    std::memcpy(o + 8 * e, &x, 8);
  }
}

// The 64-bit mask of a block's flag bytes (each 0 or 1): bit i = flag[i].
// Eight flags per multiply; little-endian host.
inline uint64_t FlagsToMask(const uint8_t flag[kBlock]) {
  uint64_t mask = 0;
  for (int e = 0; e < 8; ++e) {
    uint64_t w;
    std::memcpy(&w, flag + 8 * e, 8);
    mask |= ((w * 0x0102040810204080ull) >> 56) << (8 * e);
  }
  return mask;
}

// ORs the low plane's fields of full block b into o[0..63] (8k + 8 bytes
// from its fields on are readable).
inline void MergeLowBlock(const Parsed& p, const uint8_t* data, size_t b, uint8_t* o) {
  const uint8_t* low = data + p.low + 8 * static_cast<size_t>(p.k) * b;
  switch (p.k) {  // constant shifts
    case 0: return;
    case 1: return MergeLow<1>(low, o);
    case 2: return MergeLow<2>(low, o);
    case 3: return MergeLow<3>(low, o);
    case 4: return MergeLow<4>(low, o);
    case 5: return MergeLow<5>(low, o);
    case 6: return MergeLow<6>(low, o);
    default: return MergeLow<7>(low, o);
  }
}


// Whether the fast path of PortableBlock (and the NEON decoder) may decode block b of group g (rc == 64).
// `pos`: the group's stream position.
inline bool PortableFast(const Parsed& p, size_t in_size, size_t pos, int g, size_t b) {
  // The low plane's last byte is the payload's last: 8-byte reads need
  // 8 * (b + 1) * k + 8 <= its size (k = 0: nothing is read).
  return pos + kBlock <= p.end[g] &&
         (p.k == 0 || p.low + (8 * (b + 1)) * p.k + 8 <= in_size);
}

// Decodes blocks `first` .. end with the lanes in ln[] (the NEON decoder
// hands its state over for the last blocks) and checks the ends.
absl::Status DecodePortableFrom(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out,
                                PortableLanes* ln, size_t first, size_t escapes);

#if TQM_LANES_X86

// Both decoders: for each 8-bit lane mask, each lane's rank among the set lanes below it.
struct RankTable {
  alignas(32) uint32_t v[256][8];
  constexpr RankTable() : v() {
    for (int m = 0; m < 256; ++m) {
      uint32_t r = 0;
      for (int i = 0; i < 8; ++i) {
        v[m][i] = r;
        r += (m >> i) & 1;
      }
    }
  }
};
inline constexpr RankTable kRank;

// Prefetches base + offset into L1; the address may lie past the buffer (it
// is formed as an integer, and a prefetch never faults).
inline void PrefetchAt(const uint8_t* base, size_t offset) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(base) + offset),
               _MM_HINT_T0);
}

// Whether round `it` (blocks it*G .. it*G+G-1) can take the vector decoders'
// fast path: every group's stream has >= 64 bytes left, so plain loads stay
// inside it. If so, prefetches each stream and the low plane: the refill
// loads are on the lanes' chains, so a cache miss there stalls the group.
template <int G, typename Lanes>
inline bool FastRound(const Parsed& p, const uint8_t* data, const Lanes* ln, size_t it) {
  for (int g = 0; g < G; ++g) {
    if (ln[g].pos + kBlock > p.end[g]) return false;
  }
  for (int g = 0; g < G; ++g) PrefetchAt(data, ln[g].pos + kPrefetchAhead);
  PrefetchAt(data, p.low + 8 * p.k * it * G + kPrefetchAhead);
  return true;
}


// The AVX-512 decoder (lanes_avx512.cc); the CPU must have AVX-512 VBMI.
absl::Status DecodeAvx512(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out);
// The AVX2 decoder (lanes_avx2.cc); the CPU must have AVX2 and BMI1/2.
// Returns false (nothing decoded) when it cannot take the chunk.
bool DecodeWithAvx2(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out,
                    absl::Status* status);

#endif  // TQM_LANES_X86

#if TQM_LANES_NEON
// The NEON decoder (lanes_neon.cc).
absl::Status DecodeNeon(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out);
#endif  // TQM_LANES_NEON

}  // namespace lanes_internal
}  // namespace tqm

#endif  // TQM_SRC_CODEC_LANES_INTERNAL_H_
