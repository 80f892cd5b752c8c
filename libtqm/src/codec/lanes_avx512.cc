// The lanes codec's AVX-512 (VBMI) decoder; lanes.cc chooses it at run time.

#include "codec/lanes_internal.h"

#if TQM_LANES_X86

#include <algorithm>

// GCC 12 warns about the `_mm512_undefined_*` operands inside its own
// intrinsic headers (a false positive with -O2); nothing here is undefined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace tqm {
namespace lanes_internal {
namespace {

#define TQM_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2,bmi2,popcnt")))
#define TQM_AVX512_INLINE TQM_AVX512 inline __attribute__((always_inline))

// The decode tables and constants, held in registers.
struct SimdTables {
  __m512i len0, len1, sym0, sym1, sym2, sym3;  // code length by 7 bits, h << k by 8
  __m512i perm, ctrl, low_mask;                // low-plane unpacking
  __m512i esc_lo, esc_last;                    // the escape's 8-bit prefixes
  __m128i shift;                               // k, for escaped high parts
};

// One group's lanes.
struct SimdLanes {
  __m512i buf, cnt;
  size_t pos;
};

// PatchEscapes in registers: the next popcount(mask) escaped high parts
// (0 past the chunk's last), spread to the set positions of `mask` in order,
// shifted left by k and ORed into v.
TQM_AVX512_INLINE __m512i PatchEscapesAvx512(const Parsed& p, const uint8_t* in, __mmask64 mask,
                                             __m128i shift, __m512i v, size_t* next) {
  __m512i e;
  if (__builtin_expect(*next + kBlock <= p.num_escapes, 1)) {
    e = _mm512_loadu_si512(in + p.escapes + *next);
  } else {  // the chunk's last 64 escapes, or a corrupt chunk taking more than it has
    const size_t at = std::min(*next, p.num_escapes);
    const size_t avail = p.num_escapes - at;
    e = _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, static_cast<unsigned>(avail)),
                                in + p.escapes + at);
  }
  *next += static_cast<size_t>(__builtin_popcountll(mask));
  // Each escaped part is < 256 >> k, so no bit crosses into the next byte.
  return _mm512_or_si512(v, _mm512_sll_epi16(_mm512_maskz_expand_epi8(mask, e), shift));
}

// Decodes block b (rc positions) of a group. kFastLoad: the group's stream
// has >= 64 bytes left (plain loads). kFull: rc == 64. kEscapes: the code
// has an escape.
template <bool kFastLoad, bool kFull, bool kEscapes>
TQM_AVX512_INLINE void Block(const SimdTables tb, SimdLanes& ln, const Parsed& p, int g,
                             const uint8_t* in, size_t b, size_t rc, uint8_t* out,
                             size_t* next_escape) {
  const __m512i c16 = _mm512_set1_epi32(16);
  constexpr __mmask64 kByte0 = 0x1111111111111111ull;  // byte 0 of each 32-bit lane
  __m512i buf = ln.buf, cnt = ln.cnt;
  size_t pos = ln.pos;
  // The 8-bit prefixes of the block's 64 positions, in position order: step
  // t's prefix (the top byte of each lane) goes to byte t of the lane.
  __m512i idx = _mm512_setzero_si512();
#pragma GCC unroll 2
  for (int r = 0; r < 2; ++r) {
    const __mmask16 act =
        kFull ? 0xFFFF : static_cast<__mmask16>((1u << ActiveLanes(rc, 2 * r)) - 1);
    const __mmask16 km = _mm512_mask_cmplt_epu32_mask(act, cnt, c16);
    const unsigned m = _cvtmask16_u32(km);
    const __m256i lo = _mm256_load_si256(reinterpret_cast<const __m256i*>(kRank.v[m & 255]));
    const __m256i hi =
        _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(kRank.v[m >> 8])),
                         _mm256_set1_epi32(__builtin_popcount(m & 255)));
    const __m512i rank = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    __m256i data;
    if (kFastLoad) {
      data = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + pos));
    } else {
      // Words past the stream's end read as 0 (a corrupt stream; caught by
      // CheckEnds), and nothing outside the payload is touched.
      const size_t avail = pos < p.end[g] ? std::min<size_t>(16, (p.end[g] - pos) / 2) : 0;
      data = avail == 0 ? _mm256_setzero_si256()
                        : _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << avail) - 1),
                                                   in + pos);
    }
    pos += 2 * static_cast<size_t>(__builtin_popcount(m));
    const __m512i w =
        _mm512_maskz_permutexvar_epi16(0x55555555u, rank, _mm512_castsi256_si512(data));
    buf = _mm512_or_si512(buf, _mm512_maskz_sllv_epi32(km, w, _mm512_sub_epi32(c16, cnt)));
    cnt = _mm512_mask_add_epi32(cnt, km, cnt, c16);
#pragma GCC unroll 2
    for (int t = 2 * r; t < 2 * r + 2; ++t) {
      const __mmask64 bytes =
          kFull ? kByte0 : _pdep_u64((1ull << ActiveLanes(rc, t)) - 1, kByte0);
      const __m512i len =
          _mm512_maskz_permutex2var_epi8(bytes, tb.len0, _mm512_srli_epi32(buf, 25), tb.len1);
      idx = _mm512_mask_mov_epi8(idx, kByte0 << t,
                                 t == 3 ? buf : _mm512_srli_epi32(buf, 24 - 8 * t));
      buf = _mm512_sllv_epi32(buf, len);
      cnt = _mm512_sub_epi32(cnt, len);
    }
  }
  ln.buf = buf;
  ln.cnt = cnt;
  ln.pos = pos;
  __m512i v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx),
                                     _mm512_permutex2var_epi8(tb.sym0, idx, tb.sym1),
                                     _mm512_permutex2var_epi8(tb.sym2, idx, tb.sym3));
  if (p.k != 0) {
    const size_t low_bytes = kFull ? 8 * p.k : (rc * p.k + 7) / 8;
    __m512i l = _mm512_maskz_loadu_epi8(_bzhi_u64(~0ull, static_cast<unsigned>(low_bytes)),
                                        in + p.low + 8 * p.k * b);
    l = _mm512_multishift_epi64_epi8(tb.ctrl, _mm512_permutexvar_epi8(tb.perm, l));
    v = _mm512_ternarylogic_epi32(v, l, tb.low_mask, 0xF8);  // v | (l & mask)
  }
  const __mmask64 here = kFull ? ~0ull : _bzhi_u64(~0ull, static_cast<unsigned>(rc));
  if (kEscapes) {
    // No branch on whether the block has escapes (in 5-40 % of blocks): on
    // 256 distinct Student-t chunks its mispredicts cost 3.15 vs 4.6 GB/s.
    // A benchmark that decodes the same few chunks again and again hides
    // this: the branch predictor learns their escape pattern (one chunk
    // copied 128 times, so streamed from DRAM all the same: 5.2 GB/s).
    const __mmask64 esc = _mm512_mask_cmple_epu8_mask(_mm512_cmpge_epu8_mask(idx, tb.esc_lo),
                                                      idx, tb.esc_last) &
                          here;
    v = PatchEscapesAvx512(p, in, esc, tb.shift, v, next_escape);
  }
  if (kFull) {
    _mm512_storeu_si512(out + kBlock * b, v);
  } else {
    _mm512_mask_storeu_epi8(out + kBlock * b, here, v);
  }
}

template <int G, bool kEscapes>
TQM_AVX512 absl::Status DecodeAvx512(const Parsed& p, absl::Span<const uint8_t> in,
                                     uint8_t* out) {
  alignas(64) uint8_t len[128], perm[64], ctrl[64];
  std::memcpy(len, p.len7, 128);
  for (int i = 0; i < 64; ++i) {
    perm[i] = static_cast<uint8_t>((i / 8) * p.k + i % 8);
    ctrl[i] = static_cast<uint8_t>((i % 8) * p.k);
  }
  SimdTables tb;
  tb.len0 = _mm512_load_si512(len);
  tb.len1 = _mm512_load_si512(len + 64);
  tb.sym0 = _mm512_loadu_si512(p.sym);
  tb.sym1 = _mm512_loadu_si512(p.sym + 64);
  tb.sym2 = _mm512_loadu_si512(p.sym + 128);
  tb.sym3 = _mm512_loadu_si512(p.sym + 192);
  tb.perm = _mm512_load_si512(perm);
  tb.ctrl = _mm512_load_si512(ctrl);
  tb.low_mask = _mm512_set1_epi8(static_cast<char>((1 << p.k) - 1));
  tb.shift = _mm_cvtsi32_si128(p.k);
  // [esc_lo, esc_last] as bytes (esc_hi may be 256); no escape: [1, 0].
  tb.esc_lo = _mm512_set1_epi8(static_cast<char>(p.esc_hi != 0 ? p.esc_lo : 1));
  tb.esc_last = _mm512_set1_epi8(static_cast<char>(p.esc_hi != 0 ? p.esc_hi - 1 : 0));
  SimdLanes ln[G];
  size_t escapes = 0;
  for (int g = 0; g < G; ++g) {
    ln[g].buf = _mm512_setzero_si512();
    ln[g].cnt = _mm512_setzero_si512();
    ln[g].pos = p.begin[g];
  }
  const uint8_t* data = in.data();
  const size_t full = p.n / kBlock, blocks = (p.n + kBlock - 1) / kBlock;
  const size_t rounds = full / G;
  size_t it = 0;
  for (; it < rounds && FastRound<G>(p, data, ln, it); ++it) {
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) Block<true, true, kEscapes>(tb, ln[g], p, g, data, it * G + g, kBlock, out, &escapes);
  }
  for (; it < rounds; ++it) {
    for (int g = 0; g < G; ++g) Block<false, true, kEscapes>(tb, ln[g], p, g, data, it * G + g, kBlock, out, &escapes);
  }
  for (size_t b = rounds * G; b < blocks; ++b) {
    const int g = static_cast<int>(b % G);
    Block<false, false, kEscapes>(tb, ln[g], p, g, data, b, std::min<size_t>(kBlock, p.n - b * kBlock),
                        out, &escapes);
  }
  size_t pos[kMaxGroups];
  uint32_t nonzero[kMaxGroups];
  for (int g = 0; g < G; ++g) {
    pos[g] = ln[g].pos;
    nonzero[g] = _cvtmask16_u32(_mm512_test_epi32_mask(ln[g].buf, ln[g].buf));
  }
  return CheckEnds(p, pos, nonzero, escapes);
}

template <bool kEscapes>
TQM_AVX512 absl::Status DecodeAvx512Groups(const Parsed& p, absl::Span<const uint8_t> in,
                                           uint8_t* out) {
  switch (p.groups) {
    case 1:
      return DecodeAvx512<1, kEscapes>(p, in, out);
    case 2:
      return DecodeAvx512<2, kEscapes>(p, in, out);
    default:
      return DecodeAvx512<4, kEscapes>(p, in, out);
  }
}

}  // namespace

TQM_AVX512 absl::Status DecodeAvx512(const Parsed& p, absl::Span<const uint8_t> in,
                                     uint8_t* out) {
  return p.esc_hi != 0 ? DecodeAvx512Groups<true>(p, in, out)
                       : DecodeAvx512Groups<false>(p, in, out);
}

}  // namespace lanes_internal
}  // namespace tqm

#pragma GCC diagnostic pop

#endif  // TQM_LANES_X86
