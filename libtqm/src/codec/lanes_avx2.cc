// The lanes codec's AVX2 decoder; lanes.cc chooses it at run time.

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

// ---- AVX2 ------------------------------------------------------------------
//
// The same schedule for CPUs without AVX-512 VBMI (Haswell to Alder Lake,
// Zen 1-3), 16 lanes in two 8-lane registers (lanes 0-7, 8-15). There is no
// vpermi2b for the length table, and vpgatherdd is slow on AMD and on Intel
// with the Gather Data Sampling fix; but canonical codes put shorter codes
// at smaller values, so the length is a step function of the first 7 bits:
// Lmin plus the number of thresholds C_l (7-bit prefixes under codes of
// <= l bits, Lmin <= l < Lmax) they reach, one compare each. The compares
// run on the first 15 bits of all 16 lanes packed into one register of
// 16-bit elements, which also holds the 8-bit prefixes for the symbol lookup
// after the block (pshufb by 4-bit buckets). Simple vector operations take
// 2 cycles on Zen 5, so one group's chain is ~150 cycles a block; the
// groups of a round are interleaved step by step (left to out-of-order
// execution, four groups were no faster than two), and everything a group
// keeps between steps fits three registers, since a spill and reload on the
// chain costs ~12 cycles. That layout now serves one-group chunks and the
// blocks near a stream's end; the full rounds of two or four groups take
// the pair decoder below, which packs two groups' prefixes, lengths and
// counts into bytes of one register (1.36-1.59x as fast on Zen 3), and
// patches escapes in registers without a branch (bench/results/
// 2026-12-08-lanes-avx2.txt).

#define TQM_AVX2 __attribute__((target("avx2,bmi,bmi2,popcnt")))
#define TQM_AVX2_INLINE TQM_AVX2 inline __attribute__((always_inline))

// Per-chunk constants.
struct Avx2Tables {
  // Thresholds on the first 15 bits: (C_l << 8) - 1, above which the code
  // is longer than l, padded with 0x7FFF, which nothing exceeds.
  __m256i thr[7];
  __m256i lmin;  // shortest code length, 16-bit elements
  // Symbol (h << k) by the 8-bit prefix x: codes of <= 4 bits fill whole
  // buckets of 16 prefixes (x >> 4 < pure, as shorter codes come first),
  // looked up by x >> 4 in `bucket`; each later bucket takes one pshufb by
  // x & 15 (2-3 of them for quantized weights).
  __m256i bucket;
  __m256i long_key[16];  // x >> 4 of bucket pure + i, in every byte
  __m256i long_sym[16];  // its 16 symbols, in both 128-bit halves
  int nlong;             // 16 - pure
  // Low plane: 16 fields of k bits from 16 bytes, in 16-bit elements.
  __m256i low_ctrl;   // pshufb: the two bytes holding each field
  __m256i low_mul;    // pmullw: moves each field to the top of its element
  __m128i low_shift;  // 16 - k, to move it back down
  // k = 3: 32 fields from 12 bytes, two to a 16-bit element.
  __m256i low3_ctrl;  // pshufb: the two bytes holding each pair
  __m256i low3_mul;   // pmullw: moves each pair to bits 10-15
  int k;
  // The escape's 8-bit prefixes: x - esc_lo <= esc_span (bytes, unsigned).
  __m256i esc_lo, esc_span;
  size_t* next_escape;  // the chunk's escape counter (PatchEscapes)
  // The escaped bytes, the index of the last (a zero byte and 0 when the
  // chunk has none) and their number, and k as a shift count, for the patch
  // in registers.
  const uint8_t* esc_bytes;
  size_t esc_last, num_escapes;
  __m128i esc_shift;
};

// One group's lanes. d = 15 - cnt (bits held), in [-16, 15], as 16-bit
// elements in packed order (one register, not two, and one add a step). A
// lane takes a word when d >= 0: the sign bits are the refill mask, and
// vpsllvd by d (zero-extended) of the word shifted left by one places it
// below the held bits, or gives 0 where d < 0 (counts >= 32), so the refill
// needs no compare and no masking.
struct Avx2Lanes {
  __m256i buf[2], d;
  size_t pos;
};

// Lanes below `na`, as 16-bit masks in packed order: 128-bit half 0 holds
// lanes 0-3 and 8-11, half 1 lanes 4-7 and 12-15 (what vpackusdw makes of
// lanes 0-7 and 8-15, and what vpunpck{l,h}wd undo).
TQM_AVX2_INLINE __m256i Avx2Active16(int na) {
  const __m256i iota = _mm256_setr_epi16(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
  return _mm256_cmpgt_epi16(_mm256_set1_epi16(static_cast<int16_t>(na)), iota);
}

// Before steps 2r and 2r + 1: each lane below `na` (all when kFull) with
// fewer than 16 bits takes the next word of the group's stream.
template <bool kFastLoad, bool kFull>
TQM_AVX2_INLINE void Avx2Refill(const Parsed& p, int g, const uint8_t* data, int na,
                                Avx2Lanes& ln) {
  __m256i d = ln.d;
  if (!kFull) {  // inactive lanes: negative, so they take nothing
    d = _mm256_or_si256(d, _mm256_andnot_si256(Avx2Active16(na), _mm256_set1_epi16(-1)));
  }
  const __m256i zero = _mm256_setzero_si256();
  // Lanes 0-7 and 8-15: d doubled into dwords for the sign bits, and
  // zero-extended for the shift counts.
  const unsigned k0 = ~static_cast<unsigned>(
      _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_unpacklo_epi16(d, d)))) & 255;
  const unsigned k1 = ~static_cast<unsigned>(
      _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_unpackhi_epi16(d, d)))) & 255;
  const unsigned n0 = static_cast<unsigned>(__builtin_popcount(k0));
  // At most 16 words from pos: lanes 0-7 take theirs from the first 8,
  // lanes 8-15 from the 8 after those lanes 0-7 take.
  const uint8_t* src = data + ln.pos;
  alignas(32) uint8_t tail[32];
  if (!kFastLoad) {
    // Words past the stream's end read as 0 (a corrupt stream; caught by
    // CheckEnds), and nothing outside the stream is touched.
    std::memset(tail, 0, sizeof(tail));
    if (ln.pos < p.end[g]) std::memcpy(tail, src, std::min<size_t>(32, p.end[g] - ln.pos));
    src = tail;
  }
  __m256i w0 = _mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src))), 1);
  __m256i w1 = _mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * n0))), 1);
  w0 = _mm256_permutevar8x32_epi32(
      w0, _mm256_load_si256(reinterpret_cast<const __m256i*>(kRank.v[k0])));
  w1 = _mm256_permutevar8x32_epi32(
      w1, _mm256_load_si256(reinterpret_cast<const __m256i*>(kRank.v[k1])));
  ln.pos += 2 * (n0 + static_cast<unsigned>(__builtin_popcount(k1)));
  ln.buf[0] = _mm256_or_si256(ln.buf[0], _mm256_sllv_epi32(w0, _mm256_unpacklo_epi16(d, zero)));
  ln.buf[1] = _mm256_or_si256(ln.buf[1], _mm256_sllv_epi32(w1, _mm256_unpackhi_epi16(d, zero)));
  // d - 16 where d >= 0: d | ~15 is that for d in [0, 15] and d itself for
  // d in [-16, -1].
  const __m256i take16 = _mm256_set1_epi16(~15);
  ln.d = _mm256_or_si256(ln.d, kFull ? take16 : _mm256_and_si256(Avx2Active16(na), take16));
}

// One step: each lane below `na` (all when kFull) decodes a code. Returns the
// first 15 bits of each lane before the step, packed (Avx2Active16's order).
template <int T, bool kFull>
TQM_AVX2_INLINE __m256i Avx2Step(const Avx2Tables& tb, int na, Avx2Lanes& ln) {
  // 15 bits, so that signed 16-bit compares order them.
  const __m256i v =
      _mm256_packus_epi32(_mm256_srli_epi32(ln.buf[0], 17), _mm256_srli_epi32(ln.buf[1], 17));
  // Lmin minus the compare masks (-1 each), summed as a tree.
  __m256i m[T];
#pragma GCC unroll 7
  for (int l = 0; l < T; ++l) m[l] = _mm256_cmpgt_epi16(v, tb.thr[l]);
  m[0] = _mm256_sub_epi16(tb.lmin, m[0]);
#pragma GCC unroll 7
  for (int w = 1; w < T; w *= 2) {
#pragma GCC unroll 7
    for (int l = 0; l + w < T; l += 2 * w) {
      m[l] = l == 0 ? _mm256_sub_epi16(m[l], m[l + w]) : _mm256_add_epi16(m[l], m[l + w]);
    }
  }
  __m256i len = m[0];
  if (!kFull) len = _mm256_and_si256(len, Avx2Active16(na));
  const __m256i zero = _mm256_setzero_si256();
  ln.buf[0] = _mm256_sllv_epi32(ln.buf[0], _mm256_unpacklo_epi16(len, zero));
  ln.buf[1] = _mm256_sllv_epi32(ln.buf[1], _mm256_unpackhi_epi16(len, zero));
  ln.d = _mm256_add_epi16(ln.d, len);
  return v;
}

// ORs the low plane's fields of block b into v[0] and v[1] (its 64 bytes).
TQM_AVX2_INLINE void Avx2MergeLow(const Avx2Tables& tb, const Parsed& p,
                                  absl::Span<const uint8_t> in, size_t b, __m256i v[2]) {
  if (tb.k == 0) return;
  // 8k bytes per block; the fields of positions 16u..16u+15 lie in the 16
  // bytes from 2uk. Near the payload's end, a zero-padded copy (bits past
  // it read as 0, as in the portable decoder).
  {
    const size_t low_off = p.low + 8 * static_cast<size_t>(tb.k) * b;
    const uint8_t* src = in.data() + low_off;
    alignas(32) uint8_t tail[64];
    if (low_off + 6 * static_cast<size_t>(tb.k) + 16 > in.size()) {
      std::memset(tail, 0, sizeof(tail));
      std::memcpy(tail, src, std::min<size_t>(8 * tb.k, in.size() - low_off));
      src = tail;
    }
    if (tb.k == 3) {
      // Fields 2j and 2j + 1 (6 bits) to bits 0-2 and 8-10 of element j,
      // which are bytes 2j and 2j + 1 in place: 8 operations for 32 fields
      // where the general way below takes 11.
      const __m256i mask = _mm256_set1_epi16(0x0707);
#pragma GCC unroll 2
      for (int u = 0; u < 2; ++u) {
        const __m256i x = _mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 12 * u)));
        const __m256i e = _mm256_srli_epi16(
            _mm256_mullo_epi16(_mm256_shuffle_epi8(x, tb.low3_ctrl), tb.low3_mul), 10);
        v[u] = _mm256_or_si256(
            v[u], _mm256_and_si256(_mm256_or_si256(e, _mm256_slli_epi16(e, 5)), mask));
      }
      return;
    }
    __m256i f[4];
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const __m256i x = _mm256_broadcastsi128_si256(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * u * tb.k)));
      f[u] = _mm256_srl_epi16(
          _mm256_mullo_epi16(_mm256_shuffle_epi8(x, tb.low_ctrl), tb.low_mul), tb.low_shift);
    }
    v[0] = _mm256_or_si256(v[0], _mm256_permute4x64_epi64(_mm256_packus_epi16(f[0], f[1]), 0xD8));
    v[1] = _mm256_or_si256(v[1], _mm256_permute4x64_epi64(_mm256_packus_epi16(f[2], f[3]), 0xD8));
  }
}

// Writes block b (rc positions) from the prefixes of its four steps: symbol
// lookup and the low plane.
template <bool kFull>
TQM_AVX2_INLINE void Avx2Finish(const Avx2Tables& tb, const Parsed& p,
                                absl::Span<const uint8_t> in, size_t b, size_t rc,
                                const __m256i top[4], uint8_t* out) {
  // The 8-bit prefixes in position order: byte t of lane j's dword.
  const __m256i low_bytes = _mm256_set1_epi16(0x00FF);
  const __m256i s01 = _mm256_blendv_epi8(_mm256_slli_epi16(top[1], 1),
                                         _mm256_srli_epi16(top[0], 7), low_bytes);
  const __m256i s23 = _mm256_blendv_epi8(_mm256_slli_epi16(top[3], 1),
                                         _mm256_srli_epi16(top[2], 7), low_bytes);
  const __m256i x0 = _mm256_unpacklo_epi16(s01, s23), x1 = _mm256_unpackhi_epi16(s01, s23);
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(x0, 4), nibble);
  const __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(x1, 4), nibble);
  const __m256i lo0 = _mm256_and_si256(x0, nibble), lo1 = _mm256_and_si256(x1, nibble);
  __m256i v[2] = {_mm256_shuffle_epi8(tb.bucket, hi0), _mm256_shuffle_epi8(tb.bucket, hi1)};
#pragma GCC unroll 1
  for (int i = 0; i < tb.nlong; ++i) {
    v[0] = _mm256_blendv_epi8(v[0], _mm256_shuffle_epi8(tb.long_sym[i], lo0),
                              _mm256_cmpeq_epi8(hi0, tb.long_key[i]));
    v[1] = _mm256_blendv_epi8(v[1], _mm256_shuffle_epi8(tb.long_sym[i], lo1),
                              _mm256_cmpeq_epi8(hi1, tb.long_key[i]));
  }
  Avx2MergeLow(tb, p, in, b, v);
  uint8_t* o = out + kBlock * b;
  if (kFull) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), v[0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 32), v[1]);
  } else {
    alignas(32) uint8_t t[kBlock];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), v[0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(t + 32), v[1]);
    std::memcpy(o, t, rc);
  }
  if (p.esc_hi != 0) {
    // x0 and x1 hold the prefixes in the byte order of v[0] and v[1].
    const __m256i d0 = _mm256_sub_epi8(x0, tb.esc_lo), d1 = _mm256_sub_epi8(x1, tb.esc_lo);
    const uint64_t m0 = static_cast<uint32_t>(_mm256_movemask_epi8(
        _mm256_cmpeq_epi8(_mm256_min_epu8(d0, tb.esc_span), d0)));
    const uint64_t m1 = static_cast<uint32_t>(_mm256_movemask_epi8(
        _mm256_cmpeq_epi8(_mm256_min_epu8(d1, tb.esc_span), d1)));
    uint64_t esc = m0 | m1 << 32;
    if (!kFull) esc &= _bzhi_u64(~0ull, static_cast<unsigned>(rc));
    if (esc != 0) PatchEscapes(p, in.data(), esc, o, tb.next_escape);
  }
}

// Decodes blocks b0 .. b0 + NG - 1 of groups g0 .. g0 + NG - 1, step by step
// across the groups. kFastLoad: every group's stream has >= 64 bytes left
// (plain loads). kFull: rc == 64 (NG > 1 only with kFull).
template <int NG, int T, bool kFastLoad, bool kFull>
TQM_AVX2_INLINE void Avx2Blocks(const Avx2Tables& tb, const Parsed& p,
                                absl::Span<const uint8_t> in, int g0, size_t b0, size_t rc,
                                Avx2Lanes* ln, uint8_t* out) {
  Avx2Lanes l[NG];
  for (int i = 0; i < NG; ++i) l[i] = ln[i];
  __m256i top[NG][4];
#pragma GCC unroll 2
  for (int r = 0; r < 2; ++r) {
    const int na = kFull ? kLanes : ActiveLanes(rc, 2 * r);
#pragma GCC unroll 4
    for (int i = 0; i < NG; ++i) Avx2Refill<kFastLoad, kFull>(p, g0 + i, in.data(), na, l[i]);
#pragma GCC unroll 2
    for (int t = 2 * r; t < 2 * r + 2; ++t) {
      const int nt = kFull ? kLanes : ActiveLanes(rc, t);
#pragma GCC unroll 4
      for (int i = 0; i < NG; ++i) top[i][t] = Avx2Step<T, kFull>(tb, nt, l[i]);
    }
  }
  for (int i = 0; i < NG; ++i) ln[i] = l[i];
#pragma GCC unroll 4
  for (int i = 0; i < NG; ++i) Avx2Finish<kFull>(tb, p, in, b0 + i, rc, top[i], out);
}

// One block of group g outside the fast path: loads limited to the stream's
// end, and (!kFull) inactive lanes. Rare, so one copy serves every
// threshold count: the padding thresholds make seven right for all.
template <bool kFull>
TQM_AVX2 __attribute__((noinline)) void Avx2CarefulBlock(const Avx2Tables& tb, const Parsed& p,
                                                        absl::Span<const uint8_t> in, int g,
                                                        size_t b, size_t rc, Avx2Lanes& ln,
                                                        uint8_t* out) {
  Avx2Blocks<1, 7, false, kFull>(tb, p, in, g, b, rc, &ln, out);
}

// ---- Two groups per register -------------------------------------------------
//
// Codes are at most 8 bits, so a lane's 8-bit prefix (a byte) says both its
// code length and its symbol, and its count d fits a byte as well: the two
// groups of a pair share one register of 32 bytes for the prefixes, the
// lengths and the counts, and every compare and add of the length works on
// 32 lanes. Byte i of such a register is lane
// (i & 4 ? 8 : 0) + 4 * (i >> 4) + (i & 3) of the pair's first group
// (i & 8 == 0) or second: the order in which four vpshufb pick the top
// bytes of the four dword registers A0 (lanes 0-7 of the first group), A1
// (8-15), B0 and B1 within their 128-bit halves. The same order makes the
// four steps' prefix registers, interleaved by vpunpck{l,h}{bw,wd}, the
// 128 prefixes of the pair's two blocks in position order (the blocks of
// groups g and g + 1 of a round are adjacent in the output), with no
// lane-crossing shuffle.

// Per-chunk constants of the pair decoder (besides Avx2Tables).
struct PairTables {
  __m256i thr[7];      // the thresholds on the 8-bit prefix x ^ 0x80 (signed)
  __m256i lmin;        // shortest code length, bytes
  // Or: the length by 4-bit bucket x >> 4, less the mid thresholds below
  // the bucket; then one compare per mid threshold on x ^ 0x80. A mid
  // threshold, the last prefix with a code of <= l bits where that is not a
  // bucket's last, needs l >= 5 (codes of <= 4 bits end on a bucket's last
  // prefix), and l < Lmax <= 8: at most 3, padded with 0x7F, which nothing
  // exceeds.
  __m256i len_hi;
  __m256i mid[3];
  __m256i top_ctrl[4];  // vpshufb: byte 3 of each dword of A0, A1, B0, B1 to its byte
  __m256i cnt_ctrl[4];  // vpshufb: the byte of each dword of A0..B1, zero-extended
};

struct PairLanes {
  __m256i buf[4];  // A0, A1, B0, B1: lanes 0-7 and 8-15 of the two groups
  __m256i d;       // 15 - cnt of each lane, bytes in the pair's order
  size_t pos[2];
};

// For each 8-lane mask, the vpshufb control that gives each set lane (its
// dword) the next word of 16 bytes loaded into both 128-bit halves, in lane
// order, and every other lane 0.
struct WordCtrlTable {
  alignas(32) uint8_t v[256][32];
  constexpr WordCtrlTable() : v() {
    for (int m = 0; m < 256; ++m) {
      int r = 0;
      for (int j = 0; j < 8; ++j) {
        const bool set = (m >> j) & 1;
        v[m][4 * j] = set ? static_cast<uint8_t>(2 * r) : 0x80;
        v[m][4 * j + 1] = set ? static_cast<uint8_t>(2 * r + 1) : 0x80;
        v[m][4 * j + 2] = v[m][4 * j + 3] = 0x80;
        r += set;
      }
    }
  }
};
inline constexpr WordCtrlTable kWordCtrl;

// Before steps 2r and 2r + 1: each lane with fewer than 16 bits takes the
// next word of its group's stream (every lane is active: full blocks only).
TQM_AVX2_INLINE void PairRefill(const PairTables& pt, const uint8_t* data, PairLanes& ln) {
  const unsigned take = ~static_cast<unsigned>(_mm256_movemask_epi8(ln.d));
  unsigned m[4], n[4];
#pragma GCC unroll 4
  for (int x = 0; x < 4; ++x) {
    m[x] = _pext_u32(take, 0x000F000Fu << (4 * x));  // its 8 lanes, in lane order
    n[x] = static_cast<unsigned>(__builtin_popcount(m[x]));
  }
  const uint8_t* src[4] = {data + ln.pos[0], data + ln.pos[0] + 2 * n[0], data + ln.pos[1],
                           data + ln.pos[1] + 2 * n[2]};
  ln.pos[0] += 2 * (n[0] + n[1]);
  ln.pos[1] += 2 * (n[2] + n[3]);
  // A taking lane's word goes below its held bits: shifted left by
  // 16 - cnt = d + 1. The others get 0 from the control.
  const __m256i e = _mm256_add_epi8(ln.d, _mm256_set1_epi8(1));
#pragma GCC unroll 4
  for (int x = 0; x < 4; ++x) {
    const __m256i w = _mm256_shuffle_epi8(
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src[x]))),
        _mm256_load_si256(reinterpret_cast<const __m256i*>(kWordCtrl.v[m[x]])));
    ln.buf[x] = _mm256_or_si256(ln.buf[x],
                                _mm256_sllv_epi32(w, _mm256_shuffle_epi8(e, pt.cnt_ctrl[x])));
  }
  // d - 16 where d >= 0 (d | 0xF0; d in [-16, -1] stays).
  ln.d = _mm256_or_si256(ln.d, _mm256_set1_epi8(static_cast<char>(0xF0)));
}

// One step of both groups; returns the 8-bit prefixes before it. The length
// from the bucket and TM (0-2) mid thresholds, or (TM < 0) from T thresholds.
template <int TM, int T>
TQM_AVX2_INLINE __m256i PairStep(const PairTables& pt, PairLanes& ln) {
  const __m256i x = _mm256_or_si256(
      _mm256_or_si256(_mm256_shuffle_epi8(ln.buf[0], pt.top_ctrl[0]),
                      _mm256_shuffle_epi8(ln.buf[1], pt.top_ctrl[1])),
      _mm256_or_si256(_mm256_shuffle_epi8(ln.buf[2], pt.top_ctrl[2]),
                      _mm256_shuffle_epi8(ln.buf[3], pt.top_ctrl[3])));
  __m256i len;
  if constexpr (TM >= 0) {
    // Quantized weights' codes put 2-3 mid thresholds in a chunk: 3-10
    // operations where a compare and an add per threshold took 9-15.
    len = _mm256_shuffle_epi8(
        pt.len_hi, _mm256_and_si256(_mm256_srli_epi16(x, 4), _mm256_set1_epi8(0x0F)));
    if (TM > 0) {
      const __m256i xs = _mm256_xor_si256(x, _mm256_set1_epi8(static_cast<char>(0x80)));
      __m256i m = _mm256_cmpgt_epi8(xs, pt.mid[0]);
      if (TM > 1) m = _mm256_add_epi8(m, _mm256_cmpgt_epi8(xs, pt.mid[1]));
      if (TM > 2) len = _mm256_sub_epi8(len, _mm256_cmpgt_epi8(xs, pt.mid[2]));
      len = _mm256_sub_epi8(len, m);
    }
  } else {
    const __m256i xs = _mm256_xor_si256(x, _mm256_set1_epi8(static_cast<char>(0x80)));
    __m256i m[T];
#pragma GCC unroll 7
    for (int l = 0; l < T; ++l) m[l] = _mm256_cmpgt_epi8(xs, pt.thr[l]);
    m[0] = _mm256_sub_epi8(pt.lmin, m[0]);
#pragma GCC unroll 7
    for (int w = 1; w < T; w *= 2) {
#pragma GCC unroll 7
      for (int l = 0; l + w < T; l += 2 * w) {
        m[l] = l == 0 ? _mm256_sub_epi8(m[l], m[l + w]) : _mm256_add_epi8(m[l], m[l + w]);
      }
    }
    len = m[0];
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    ln.buf[i] = _mm256_sllv_epi32(ln.buf[i], _mm256_shuffle_epi8(len, pt.cnt_ctrl[i]));
  }
  ln.d = _mm256_add_epi8(ln.d, len);
  return x;
}

// 0xFF at byte 96 only: 32 bytes from 96 - i are a register with byte i set
// (none when i >= 32 or i < 0 - the loads stay inside for i in [-32, 64]).
alignas(32) constexpr uint8_t kOneHot[160] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF};

// ORs escaped high part `e` (shifted by k) into position i of block v[0..1];
// nothing when i == 64.
TQM_AVX2_INLINE void Avx2OrEscape(const Avx2Tables& tb, size_t e, unsigned i, __m256i v[2]) {
  // Past the chunk's last escape, 0 (as PatchEscapes): a load and a select.
  const uint8_t byte = tb.esc_bytes[std::min(e, tb.esc_last)];
  const __m256i x = _mm256_sll_epi16(
      _mm256_set1_epi8(static_cast<char>(e < tb.num_escapes ? byte : 0)), tb.esc_shift);
  v[0] = _mm256_or_si256(
      v[0], _mm256_and_si256(x, _mm256_loadu_si256(
                                    reinterpret_cast<const __m256i*>(kOneHot + 96 - i))));
  v[1] = _mm256_or_si256(
      v[1], _mm256_and_si256(x, _mm256_loadu_si256(
                                    reinterpret_cast<const __m256i*>(kOneHot + 128 - i))));
}

// PatchEscapes on a block in registers (v[0..1]), without a branch when it
// has at most two escaped positions.
TQM_AVX2_INLINE void Avx2PatchEscapes(const Avx2Tables& tb, uint64_t mask, __m256i v[2]) {
  size_t& next = *tb.next_escape;
  const uint64_t rest = _blsr_u64(mask);
  if (__builtin_expect(_blsr_u64(rest) != 0, 0)) {
    for (; mask != 0; mask = _blsr_u64(mask)) {
      Avx2OrEscape(tb, next++, static_cast<unsigned>(_tzcnt_u64(mask)), v);
    }
    return;
  }
  // _tzcnt_u64(0) is 64: no position.
  Avx2OrEscape(tb, next, static_cast<unsigned>(_tzcnt_u64(mask)), v);
  Avx2OrEscape(tb, next + 1, static_cast<unsigned>(_tzcnt_u64(rest)), v);
  next += static_cast<size_t>(__builtin_popcountll(mask));
}

// Symbols, low plane and escapes of full blocks b and b + 1 (adjacent in the
// output) from their 128 prefixes in position order (four registers): one
// pass over the long buckets for all four.
template <bool kEscapes>
TQM_AVX2_INLINE void PairFinish(const Avx2Tables& tb, const Parsed& p,
                                absl::Span<const uint8_t> in, size_t b, const __m256i x[4],
                                uint8_t* out) {
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  __m256i hi[4], lo[4], v[4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    hi[i] = _mm256_and_si256(_mm256_srli_epi16(x[i], 4), nibble);
    lo[i] = _mm256_and_si256(x[i], nibble);
    v[i] = _mm256_shuffle_epi8(tb.bucket, hi[i]);
  }
#pragma GCC unroll 1
  for (int j = 0; j < tb.nlong; ++j) {
    const __m256i sym = tb.long_sym[j], key = tb.long_key[j];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_blendv_epi8(v[i], _mm256_shuffle_epi8(sym, lo[i]),
                                _mm256_cmpeq_epi8(hi[i], key));
    }
  }
  Avx2MergeLow(tb, p, in, b, v);
  Avx2MergeLow(tb, p, in, b + 1, v + 2);
  if (kEscapes) {
    uint64_t m[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const __m256i d = _mm256_sub_epi8(x[i], tb.esc_lo);
      m[i] = static_cast<uint32_t>(
          _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(d, tb.esc_span), d)));
    }
    Avx2PatchEscapes(tb, m[0] | m[1] << 32, v);
    Avx2PatchEscapes(tb, m[2] | m[3] << 32, v + 2);
  }
  uint8_t* o = out + kBlock * b;
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 32 * i), v[i]);
}

// Decodes blocks b0 .. b0 + 2 * NP - 1 (groups 0 .. 2 * NP - 1 of a round)
// with NP pairs of groups, step by step across the pairs; every stream has
// >= 64 bytes left.
template <int NP, int TM, int T, bool kEscapes>
TQM_AVX2_INLINE void PairBlocks(const Avx2Tables& tb, const PairTables& pt, const Parsed& p,
                                absl::Span<const uint8_t> in, size_t b0, PairLanes* ln,
                                uint8_t* out) {
  __m256i x[NP][4];
#pragma GCC unroll 2
  for (int r = 0; r < 2; ++r) {
#pragma GCC unroll 2
    for (int i = 0; i < NP; ++i) PairRefill(pt, in.data(), ln[i]);
#pragma GCC unroll 2
    for (int t = 2 * r; t < 2 * r + 2; ++t) {
#pragma GCC unroll 2
      for (int i = 0; i < NP; ++i) x[i][t] = PairStep<TM, T>(pt, ln[i]);
    }
  }
#pragma GCC unroll 2
  for (int i = 0; i < NP; ++i) {
    const __m256i u_lo = _mm256_unpacklo_epi8(x[i][0], x[i][1]);
    const __m256i u_hi = _mm256_unpackhi_epi8(x[i][0], x[i][1]);
    const __m256i v_lo = _mm256_unpacklo_epi8(x[i][2], x[i][3]);
    const __m256i v_hi = _mm256_unpackhi_epi8(x[i][2], x[i][3]);
    const __m256i y[4] = {_mm256_unpacklo_epi16(u_lo, v_lo), _mm256_unpackhi_epi16(u_lo, v_lo),
                          _mm256_unpacklo_epi16(u_hi, v_hi), _mm256_unpackhi_epi16(u_hi, v_hi)};
    PairFinish<kEscapes>(tb, p, in, b0 + 2 * i, y, out);
  }
}

// Moves the lanes of groups g and g + 1 between the two layouts.
TQM_AVX2_INLINE void PairToLanes(const PairLanes& pr, Avx2Lanes* a, Avx2Lanes* b) {
  alignas(32) int8_t d8[32];
  alignas(32) int16_t d16[2][16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(d8), pr.d);
  for (int e = 0; e < 16; ++e) {  // element e of Avx2Lanes::d: byte 16 * (e >> 3) + (e & 7)
    d16[0][e] = d8[16 * (e >> 3) + (e & 7)];
    d16[1][e] = d8[16 * (e >> 3) + 8 + (e & 7)];
  }
  a->buf[0] = pr.buf[0];
  a->buf[1] = pr.buf[1];
  b->buf[0] = pr.buf[2];
  b->buf[1] = pr.buf[3];
  a->d = _mm256_load_si256(reinterpret_cast<const __m256i*>(d16[0]));
  b->d = _mm256_load_si256(reinterpret_cast<const __m256i*>(d16[1]));
  a->pos = pr.pos[0];
  b->pos = pr.pos[1];
}

// Whether round `it` can take the pair decoder: every stream has >= 64 bytes
// left. Prefetches as FastRound does.
template <int NP>
TQM_AVX2_INLINE bool PairFastRound(const Parsed& p, const uint8_t* data, const PairLanes* ln,
                                   size_t it) {
  for (int i = 0; i < NP; ++i) {
    if (ln[i].pos[0] + kBlock > p.end[2 * i] || ln[i].pos[1] + kBlock > p.end[2 * i + 1]) {
      return false;
    }
  }
  for (int i = 0; i < NP; ++i) {
    PrefetchAt(data, ln[i].pos[0] + kPrefetchAhead);
    PrefetchAt(data, ln[i].pos[1] + kPrefetchAhead);
  }
  PrefetchAt(data, p.low + 8 * p.k * it * 2 * NP + kPrefetchAhead);
  return true;
}

// TM, T: the pair decoder's length (PairStep; G >= 2).
template <int G, int TM, int T>
TQM_AVX2 absl::Status DecodeAvx2(const Avx2Tables& tb, const PairTables& pt, const Parsed& p,
                                 absl::Span<const uint8_t> in, uint8_t* out) {
  Avx2Lanes ln[G];
  for (int g = 0; g < G; ++g) {
    ln[g].buf[0] = ln[g].buf[1] = _mm256_setzero_si256();
    ln[g].d = _mm256_set1_epi16(15);  // cnt = 0
    ln[g].pos = p.begin[g];
  }
  const size_t full = p.n / kBlock, blocks = (p.n + kBlock - 1) / kBlock;
  const size_t rounds = full / G;
  size_t it = 0;
  if constexpr (G == 1) {
    for (; it < rounds && FastRound<G>(p, in.data(), ln, it); ++it) {
      Avx2Blocks<G, 7, true, true>(tb, p, in, 0, it * G, kBlock, ln, out);
    }
  } else {
    constexpr int NP = G / 2;
    PairLanes pr[NP];
    for (int i = 0; i < NP; ++i) {
      for (__m256i& b : pr[i].buf) b = _mm256_setzero_si256();
      pr[i].d = _mm256_set1_epi8(15);  // cnt = 0
      pr[i].pos[0] = p.begin[2 * i];
      pr[i].pos[1] = p.begin[2 * i + 1];
    }
    if (p.esc_hi != 0) {
      for (; it < rounds && PairFastRound<NP>(p, in.data(), pr, it); ++it) {
        PairBlocks<NP, TM, T, true>(tb, pt, p, in, it * G, pr, out);
      }
    } else {
      for (; it < rounds && PairFastRound<NP>(p, in.data(), pr, it); ++it) {
        PairBlocks<NP, TM, T, false>(tb, pt, p, in, it * G, pr, out);
      }
    }
    for (int i = 0; i < NP; ++i) PairToLanes(pr[i], &ln[2 * i], &ln[2 * i + 1]);
  }
  for (; it < rounds; ++it) {
    for (int g = 0; g < G; ++g) {
      Avx2CarefulBlock<true>(tb, p, in, g, it * G + g, kBlock, ln[g], out);
    }
  }
  for (size_t b = rounds * G; b < blocks; ++b) {
    const int g = static_cast<int>(b % G);
    Avx2CarefulBlock<false>(tb, p, in, g, b, std::min<size_t>(kBlock, p.n - b * kBlock), ln[g],
                            out);
  }
  size_t pos[kMaxGroups];
  uint32_t nonzero[kMaxGroups];
  for (int g = 0; g < G; ++g) {
    pos[g] = ln[g].pos;
    const __m256i z = _mm256_setzero_si256();
    const unsigned lo = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(ln[g].buf[0], z))));
    const unsigned hi = static_cast<unsigned>(
        _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(ln[g].buf[1], z))));
    nonzero[g] = ~(lo | hi << 8) & 0xFFFF;
  }
  return CheckEnds(p, pos, nonzero, *tb.next_escape);
}

}  // namespace

// Sets up the tables and runs the AVX2 decoder. Returns false (nothing
// decoded) when the code lengths are not the step function the thresholds
// describe, which Parse's canonical codes rule out.
TQM_AVX2 bool DecodeWithAvx2(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out,
                             absl::Status* status) {
  // The length is that step function exactly when len7 never decreases:
  // then C_l - 1, the last prefix with a code of <= l bits, is where len7
  // steps past l. One pass (this set-up once cost a quarter of decoding a
  // 4 KiB chunk, most of stories260K's).
  const int lmin = p.len7[0];
  int16_t thr[7];
  int nt = 0;
  for (int i = 1; i < 128; ++i) {
    const int step = p.len7[i] - p.len7[i - 1];
    if (step < 0 || nt + step > 7) return false;
    for (int s = 0; s < step; ++s) thr[nt++] = static_cast<int16_t>(i - 1);
  }
  Avx2Tables tb;
  for (int t = 0; t < 7; ++t) {
    tb.thr[t] = _mm256_set1_epi16(static_cast<int16_t>(t < nt ? (thr[t] + 1) * 256 - 1 : 0x7FFF));
  }
  tb.lmin = _mm256_set1_epi16(static_cast<int16_t>(lmin));
  int pure = 0;
  while (pure < 16 && p.len7[8 * pure + 7] <= 4) ++pure;
  alignas(32) uint8_t bucket[32] = {};
  for (int i = 0; i < pure; ++i) bucket[i] = bucket[16 + i] = p.sym[16 * i];
  tb.bucket = _mm256_load_si256(reinterpret_cast<const __m256i*>(bucket));
  tb.nlong = 16 - pure;
  for (int i = 0; i < tb.nlong; ++i) {
    tb.long_key[i] = _mm256_set1_epi8(static_cast<char>(pure + i));
    tb.long_sym[i] = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p.sym + 16 * (pure + i))));
  }
  alignas(32) uint8_t ctrl[32];
  alignas(32) uint16_t mul[16];
  for (int i = 0; i < 16; ++i) {
    const int bit = p.k * i;  // of position i of 16, from the 16 bytes' start
    ctrl[2 * i] = static_cast<uint8_t>(bit >> 3);
    ctrl[2 * i + 1] = static_cast<uint8_t>((bit >> 3) + 1);
    mul[i] = static_cast<uint16_t>(p.k == 0 ? 0 : 1u << (16 - (bit & 7) - p.k));
  }
  tb.low_ctrl = _mm256_load_si256(reinterpret_cast<const __m256i*>(ctrl));
  tb.low_mul = _mm256_load_si256(reinterpret_cast<const __m256i*>(mul));
  tb.low_shift = _mm_cvtsi32_si128(16 - p.k);
  alignas(32) uint8_t ctrl3[32];
  alignas(32) uint16_t mul3[16];
  for (int j = 0; j < 16; ++j) {
    const int bit = 6 * (j & 7) + (j >= 8 ? 48 : 0);  // of fields 2j, 2j + 1
    ctrl3[2 * j] = static_cast<uint8_t>(bit >> 3);
    ctrl3[2 * j + 1] = static_cast<uint8_t>((bit >> 3) + 1);
    mul3[j] = static_cast<uint16_t>(1u << (10 - (bit & 7)));
  }
  tb.low3_ctrl = _mm256_load_si256(reinterpret_cast<const __m256i*>(ctrl3));
  tb.low3_mul = _mm256_load_si256(reinterpret_cast<const __m256i*>(mul3));
  tb.k = p.k;
  tb.esc_lo = _mm256_set1_epi8(static_cast<char>(p.esc_lo));
  tb.esc_span = _mm256_set1_epi8(static_cast<char>(p.esc_hi - p.esc_lo - 1));
  size_t escapes = 0;
  tb.next_escape = &escapes;
  static const uint8_t kNoEscape = 0;
  tb.esc_bytes = p.num_escapes > 0 ? in.data() + p.escapes : &kNoEscape;
  tb.esc_last = p.num_escapes > 0 ? p.num_escapes - 1 : 0;
  tb.num_escapes = p.num_escapes;
  tb.esc_shift = _mm_cvtsi32_si128(p.k);
  PairTables pt;
  for (int t = 0; t < 7; ++t) {
    // The last 8-bit prefix with a code of <= l bits is 2 thr + 1; compared
    // as signed bytes after x ^ 0x80 (0x7F: nothing exceeds it).
    pt.thr[t] = _mm256_set1_epi8(
        static_cast<char>(t < nt ? ((2 * thr[t] + 1) ^ 0x80) : 0x7F));
  }
  pt.lmin = _mm256_set1_epi8(static_cast<char>(lmin));
  int nm = 0;
  alignas(32) uint8_t len_hi[32];
  for (int h = 0; h < 16; ++h) {
    len_hi[h] = len_hi[16 + h] = static_cast<uint8_t>(p.len7[8 * h] - nm);
    for (int t = 0; t < nt; ++t) {
      // The last 8-bit prefix with a code of <= l bits is 2 thr + 1.
      const int last = 2 * thr[t] + 1;
      if (last >> 4 == h && (last & 15) != 15) {
        if (nm == 3) return false;  // ruled out by Lmax <= 8 (see PairTables)
        pt.mid[nm++] = _mm256_set1_epi8(static_cast<char>(last ^ 0x80));
      }
    }
  }
  for (int t = nm; t < 3; ++t) pt.mid[t] = _mm256_set1_epi8(0x7F);
  pt.len_hi = _mm256_load_si256(reinterpret_cast<const __m256i*>(len_hi));
  for (int x = 0; x < 4; ++x) {
    alignas(32) uint8_t top[32], cnt[32];
    for (int i = 0; i < 32; ++i) {
      const int r = i & 15;  // within its 128-bit half
      top[i] = r >= 4 * x && r < 4 * x + 4 ? static_cast<uint8_t>(4 * (r - 4 * x) + 3) : 0x80;
      cnt[i] = (r & 3) == 0 ? static_cast<uint8_t>(4 * x + r / 4) : 0x80;
    }
    pt.top_ctrl[x] = _mm256_load_si256(reinterpret_cast<const __m256i*>(top));
    pt.cnt_ctrl[x] = _mm256_load_si256(reinterpret_cast<const __m256i*>(cnt));
  }
  // Each (mid) threshold costs a compare and an add per pair-step, so four
  // groups, the encoder's choice from 16 KiB, get one variant per count;
  // two groups take all seven thresholds (the padding never counts). nm is
  // at most 3, so the plain-threshold variants of four groups below are not
  // reached; yet without them the nm = 3 variant ran 15 % slower on Zen 3
  // (outliers, 3.06 -> 2.65 GB/s, the same source: code placement), so
  // they stay until that is understood.
  if (p.groups == 1) {
    *status = DecodeAvx2<1, -1, 7>(tb, pt, p, in, out);
  } else if (p.groups == 2) {
    *status = DecodeAvx2<2, -1, 7>(tb, pt, p, in, out);
  } else if (nm == 0) {
    *status = DecodeAvx2<4, 0, 0>(tb, pt, p, in, out);
  } else if (nm == 1) {
    *status = DecodeAvx2<4, 1, 0>(tb, pt, p, in, out);
  } else if (nm == 2) {
    *status = DecodeAvx2<4, 2, 0>(tb, pt, p, in, out);
  } else if (nm == 3) {
    *status = DecodeAvx2<4, 3, 0>(tb, pt, p, in, out);
  } else if (nt <= 5) {
    *status = DecodeAvx2<4, -1, 5>(tb, pt, p, in, out);
  } else if (nt == 6) {
    *status = DecodeAvx2<4, -1, 6>(tb, pt, p, in, out);
  } else {
    *status = DecodeAvx2<4, -1, 7>(tb, pt, p, in, out);
  }
  return true;
}

}  // namespace lanes_internal
}  // namespace tqm

#pragma GCC diagnostic pop

#endif  // TQM_LANES_X86
