// The lanes codec's NEON decoder (AArch64); lanes.cc chooses it at run time.

#include "codec/lanes_internal.h"

#if TQM_LANES_NEON

#include <algorithm>

namespace tqm {
namespace lanes_internal {
namespace {

// ---- NEON (AArch64) ----------------------------------------------------------
//
// The AVX-512 schedule in 128-bit registers: a group's 16 lanes are four
// uint32x4_t. The top byte of every lane is gathered by one tbl of the four
// registers; the code length is a 128-entry table in eight registers (tbl +
// tbx); refill words are gathered from 32 stream bytes by tbl with indices
// from a 256-entry table per 8 lanes. Full blocks whose streams and low plane
// have room take this path; the rest, and the end checks, run the portable
// code from the same state, so both agree byte for byte and status for
// status. Verified under qemu-aarch64 (tests); its speed has not been
// measured on Arm hardware.

// For each 8-lane refill mask: tbl indices putting the word of each set lane
// (stream bytes 2r, 2r + 1, r = its rank among the set lanes) in the low half
// of its 32-bit lane; 0x80 elsewhere (tbl reads 0, also after adding <= 16).
struct NeonRefillTable {
  alignas(16) uint8_t v[256][32];
  constexpr NeonRefillTable() : v() {
    for (int m = 0; m < 256; ++m) {
      int r = 0;
      for (int j = 0; j < 8; ++j) {
        for (int q = 0; q < 4; ++q) v[m][4 * j + q] = 0x80;
        if ((m >> j) & 1) {
          v[m][4 * j] = static_cast<uint8_t>(2 * r);
          v[m][4 * j + 1] = static_cast<uint8_t>(2 * r + 1);
          ++r;
        }
      }
    }
  }
};
constexpr NeonRefillTable kNeonRefill;

struct NeonTables {
  uint8x16x4_t len_lo, len_hi;  // code length by the first 7 bits: 0..63, 64..127
};

struct NeonLanes {
  uint32x4_t buf[4], cnt[4];
  size_t pos;
};

// Full block b of a group whose stream has >= 64 bytes left.
// Inlined so that the groups of a round interleave.
inline __attribute__((always_inline)) void NeonBlock(const NeonTables& tb, NeonLanes& ln,
                                                     const Parsed& p, const uint8_t* data,
                                                     size_t b, uint8_t* out,
                                                     size_t* next_escape) {
  static constexpr uint8_t kTop[16] = {3, 7, 11, 15, 19, 23, 27, 31,
                                       35, 39, 43, 47, 51, 55, 59, 63};
  static constexpr uint8_t kWeights[16] = {1, 2, 4, 8, 16, 32, 64, 128,
                                           1, 2, 4, 8, 16, 32, 64, 128};
  const uint32x4_t c16 = vdupq_n_u32(16);
  const uint8x16_t top_idx = vld1q_u8(kTop);
  uint32x4_t buf[4], cnt[4];
  for (int i = 0; i < 4; ++i) {
    buf[i] = ln.buf[i];
    cnt[i] = ln.cnt[i];
  }
  size_t pos = ln.pos;
  uint8x16x4_t prefix;  // step t's 8-bit prefixes, lane order
  for (int r = 0; r < 2; ++r) {
    uint32x4_t need[4];
    for (int i = 0; i < 4; ++i) need[i] = vcltq_u32(cnt[i], c16);
    const uint8x16_t set = vcombine_u8(
        vmovn_u16(vcombine_u16(vmovn_u32(need[0]), vmovn_u32(need[1]))),
        vmovn_u16(vcombine_u16(vmovn_u32(need[2]), vmovn_u32(need[3]))));
    const uint8x16_t bits = vandq_u8(set, vld1q_u8(kWeights));
    const unsigned m_lo = vaddv_u8(vget_low_u8(bits)), m_hi = vaddv_u8(vget_high_u8(bits));
    const unsigned r_lo = static_cast<unsigned>(__builtin_popcount(m_lo));
    const uint8x16_t off = vdupq_n_u8(static_cast<uint8_t>(2 * r_lo));
    uint8x16x2_t words;
    words.val[0] = vld1q_u8(data + pos);
    words.val[1] = vld1q_u8(data + pos + 16);
    const uint8x16_t idx[4] = {vld1q_u8(kNeonRefill.v[m_lo]), vld1q_u8(kNeonRefill.v[m_lo] + 16),
                               vaddq_u8(vld1q_u8(kNeonRefill.v[m_hi]), off),
                               vaddq_u8(vld1q_u8(kNeonRefill.v[m_hi] + 16), off)};
    for (int i = 0; i < 4; ++i) {
      // Lanes that take no word read 0; 16 - cnt <= 0 for them.
      const uint32x4_t w = vreinterpretq_u32_u8(vqtbl2q_u8(words, idx[i]));
      buf[i] = vorrq_u32(buf[i], vshlq_u32(w, vreinterpretq_s32_u32(vsubq_u32(c16, cnt[i]))));
      cnt[i] = vaddq_u32(cnt[i], vandq_u32(need[i], c16));
    }
    pos += 2 * (r_lo + static_cast<unsigned>(__builtin_popcount(m_hi)));
    for (int t = 2 * r; t < 2 * r + 2; ++t) {
      uint8x16x4_t lanes;
      for (int i = 0; i < 4; ++i) lanes.val[i] = vreinterpretq_u8_u32(buf[i]);
      const uint8x16_t x = vqtbl4q_u8(lanes, top_idx);
      prefix.val[t] = x;
      const uint8x16_t x7 = vshrq_n_u8(x, 1);
      const uint8x16_t len = vqtbx4q_u8(vqtbl4q_u8(tb.len_lo, x7), tb.len_hi,
                                        vsubq_u8(x7, vdupq_n_u8(64)));
      const uint16x8_t l01 = vmovl_u8(vget_low_u8(len)), l23 = vmovl_u8(vget_high_u8(len));
      const uint32x4_t l[4] = {vmovl_u16(vget_low_u16(l01)), vmovl_u16(vget_high_u16(l01)),
                               vmovl_u16(vget_low_u16(l23)), vmovl_u16(vget_high_u16(l23))};
      for (int i = 0; i < 4; ++i) {
        buf[i] = vshlq_u32(buf[i], vreinterpretq_s32_u32(l[i]));
        cnt[i] = vsubq_u32(cnt[i], l[i]);
      }
    }
  }
  for (int i = 0; i < 4; ++i) {
    ln.buf[i] = buf[i];
    ln.cnt[i] = cnt[i];
  }
  ln.pos = pos;
  // Position 4j + t is step t of lane j: vst4q interleaves exactly so.
  alignas(16) uint8_t idx[kBlock];
  vst4q_u8(idx, prefix);
  uint8x16x4_t sym[4];
  for (int q = 0; q < 4; ++q) sym[q] = vld1q_u8_x4(p.sym + 64 * q);
  uint8_t* o = out + kBlock * b;
  uint8x16_t any = vdupq_n_u8(0);
  const uint8x16_t esc_lo = vdupq_n_u8(static_cast<uint8_t>(p.esc_lo));
  const uint8x16_t esc_span = vdupq_n_u8(static_cast<uint8_t>(p.esc_hi - p.esc_lo));
  uint8x16_t flag[4];
  for (int q = 0; q < 4; ++q) {
    const uint8x16_t x = vld1q_u8(idx + 16 * q);
    uint8x16_t v = vqtbl4q_u8(sym[0], x);
    v = vqtbx4q_u8(v, sym[1], vsubq_u8(x, vdupq_n_u8(64)));
    v = vqtbx4q_u8(v, sym[2], vsubq_u8(x, vdupq_n_u8(128)));
    v = vqtbx4q_u8(v, sym[3], vsubq_u8(x, vdupq_n_u8(192)));
    vst1q_u8(o + 16 * q, v);
    flag[q] = vcltq_u8(vsubq_u8(x, esc_lo), esc_span);  // no escape: span 0, never
    any = vorrq_u8(any, flag[q]);
  }
  if (vmaxvq_u8(any) != 0) {
    alignas(16) uint8_t f[kBlock];
    for (int q = 0; q < 4; ++q) vst1q_u8(f + 16 * q, vandq_u8(flag[q], vdupq_n_u8(1)));
    PatchEscapes(p, data, FlagsToMask(f), o, next_escape);
  }
  MergeLowBlock(p, data, b, o);
}

template <int G>
absl::Status DecodeNeonGroups(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out) {
  NeonTables tb;
  tb.len_lo = vld1q_u8_x4(p.len7);
  tb.len_hi = vld1q_u8_x4(p.len7 + 64);
  NeonLanes ln[G];
  for (int g = 0; g < G; ++g) {
    for (int i = 0; i < 4; ++i) ln[g].buf[i] = ln[g].cnt[i] = vdupq_n_u32(0);
    ln[g].pos = p.begin[g];
  }
  const uint8_t* data = in.data();
  const size_t rounds = p.n / kBlock / G;
  size_t escapes = 0, it = 0;
  for (; it < rounds; ++it) {
    bool fast = true;
    for (int g = 0; g < G; ++g) {
      fast = fast && PortableFast(p, in.size(), ln[g].pos, g, it * G + g);
    }
    if (!fast) break;
    for (int g = 0; g < G; ++g) NeonBlock(tb, ln[g], p, data, it * G + g, out, &escapes);
  }
  PortableLanes handover[kMaxGroups];
  for (int g = 0; g < G; ++g) {
    for (int i = 0; i < 4; ++i) {
      vst1q_u32(handover[g].buf + 4 * i, ln[g].buf[i]);
      vst1q_u32(handover[g].cnt + 4 * i, ln[g].cnt[i]);
    }
    handover[g].pos = ln[g].pos;
  }
  return DecodePortableFrom(p, in, out, handover, it * G, escapes);
}


}  // namespace

absl::Status DecodeNeon(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out) {
  switch (p.groups) {
    case 1:
      return DecodeNeonGroups<1>(p, in, out);
    case 2:
      return DecodeNeonGroups<2>(p, in, out);
    default:
      return DecodeNeonGroups<4>(p, in, out);
  }
}

}  // namespace lanes_internal
}  // namespace tqm

#endif  // TQM_LANES_NEON
