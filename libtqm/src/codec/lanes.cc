// Huffman over 16-wide lane groups with raw low bits (entropy.h, kCodecLanes).
//
// Layout of a coded chunk (mode kModeCoded):
//   mode byte | params byte (bits 0-2: k, bits 4-5: log2 of the group count G,
//   bits 3, 6, 7: zero) | symbol table block (code lengths 1..8 of the high
//   parts h = byte >> k, h < 256 >> k) | G stream sizes in 16-bit words,
//   LEB128 | streams 0..G-1 (16-bit little-endian words) | low plane
// The n output bytes form blocks of 64 positions; block b belongs to group
// b % G. Position 64b + 4j + t of a block is symbol t (0..3) of lane j
// (0..15) of its group. Each lane is a 32-bit buffer whose top `cnt` bits are
// the next code bits. Before steps 0 and 2 of a block, every lane of the
// group that has a symbol at that step and holds fewer than 16 bits takes the
// next word of its group's stream, in lane order, below the bits it holds
// (words past the stream's end count as 0); then each step decodes one
// canonical (MSB-first) code of at most 8 bits per lane. The byte is
// (h << k) | l, where l is the k-bit field at bit k * position of the low
// plane (LSB-first). spec/FORMAT.md, "Codec 5: lanes", is normative.
//
// Why this shape: the scalar Huffman decoder (huffman.cc) is bound by the
// latency of its eight per-stream chains, and x86-64 has no registers for
// more. Here 16 lanes share one vector register, so a group of 16 chains
// costs about as much as one scalar chain, and four groups interleave. With
// codes of at most 8 bits, the code length is a 128-entry byte table in two
// vector registers (vpermi2b, no memory access) and the symbol lookup leaves
// the chain: the 8-bit prefixes of 64 positions are looked up together after
// the block. Refills take a word for each lane that needs one from a shared
// stream; the word each lane takes is its rank among those lanes, which a
// 256-entry table gives per 8 lanes (vpexpandw does the same but is
// microcoded on Zen 5: 4.5 GB/s against 7.8). The low k bits of a byte are
// close to uniform in quantized weights and are stored as they are, which
// keeps the coded alphabet small enough for 8-bit codes; k is chosen per
// chunk by size. CPUs with AVX2 but not AVX-512 VBMI have their own decoder
// (its section says how it finds lengths and symbols without vpermi2b), and
// so does AArch64 (NEON: tbl lookups in 128-bit registers).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

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

#include "absl/strings/str_format.h"
#include "base/cpu.h"
#include "codec/entropy.h"

namespace tqm {
namespace {

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

absl::Status Corrupt(const std::string& what) { return absl::DataLossError("lanes: " + what); }

// Lanes of a block of `rc` positions (1..64) that have a symbol at step t.
inline int ActiveLanes(size_t rc, int t) {
  return rc > static_cast<size_t>(t) ? static_cast<int>((rc - t + 3) / 4) : 0;
}

// Canonical codes of symbols 0..nsym-1 and of the escape symbol (length
// esc_len, 0: none), which comes after every symbol of its length: by
// length, then by symbol; MSB-first values. Returns the escape's code.
uint32_t CanonicalCodes(const uint8_t len[256], int nsym, int esc_len, uint32_t code[256]) {
  uint32_t count[kLanesMaxLength + 1] = {}, next[kLanesMaxLength + 1];
  for (int s = 0; s < nsym; ++s) ++count[len[s]];
  ++count[esc_len];
  uint32_t c = 0;
  count[0] = 0;
  for (int l = 1; l <= kLanesMaxLength; ++l) {
    c = (c + count[l - 1]) << 1;
    next[l] = c;
  }
  for (int s = 0; s < nsym; ++s) {
    if (len[s] != 0) code[s] = next[len[s]]++;
  }
  return esc_len != 0 ? next[esc_len] : 0;
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

// Sets sym[] over the 8-bit prefixes [first, last) of one code and len7[]
// over their 7-bit prefixes: a code of <= 7 bits covers both halves of each
// pair, and the two 8-bit codes of a pair have the same length (8), so
// either half may set it. memset, not a loop per prefix: on the small
// chunks of stories260K that loop was a tenth of the decode time.
inline void FillPrefixes(Parsed* p, uint32_t first, uint32_t last, uint8_t sym, uint8_t len) {
  std::memset(p->sym + first, sym, last - first);
  std::memset(p->len7 + (first >> 1), len, (last - first + 1) >> 1);
}

absl::Status Parse(absl::Span<const uint8_t> in, size_t n, Parsed* p) {
  size_t pos = 1;  // past the mode byte
  if (pos >= in.size()) return Corrupt("chunk ends before its parameters byte");
  const uint8_t params = in[pos++];
  if ((params & 0xC8) != 0 || ((params >> 4) & 3) == 3) {
    return Corrupt(absl::StrFormat("bad parameters byte 0x%02x", params));
  }
  p->n = n;
  p->k = params & 7;
  p->groups = 1 << ((params >> 4) & 3);
  uint32_t lengths[256];
  absl::Status s = entropy_internal::ReadSymbolValues(in, &pos, kLanesMaxLength,
                                                      "lanes code lengths", lengths);
  if (!s.ok()) return s;
  const int nsym = 256 >> p->k;
  uint32_t kraft = 0;
  uint8_t len[256];
  for (int h = nsym; h < 256; ++h) {
    if (lengths[h] != 0) {
      return Corrupt(absl::StrFormat("code length for high part %d, but %d low bits leave %d",
                                     h, p->k, nsym));
    }
  }
  for (int h = 0; h < nsym; ++h) {
    len[h] = static_cast<uint8_t>(lengths[h]);
    if (len[h] != 0) kraft += 1u << (kLanesMaxLength - len[h]);
  }
  if (pos >= in.size()) return Corrupt("chunk ends before the escape code length");
  const int esc_len = in[pos++];
  if (esc_len > kLanesMaxLength) {
    return Corrupt(absl::StrFormat("escape code length %d exceeds %d", esc_len,
                                   kLanesMaxLength));
  }
  if (esc_len != 0) kraft += 1u << (kLanesMaxLength - esc_len);
  if (kraft != 1u << kLanesMaxLength) {
    return Corrupt("code lengths do not form a complete prefix code");
  }
  uint32_t code[256];
  const uint32_t esc_code = CanonicalCodes(len, nsym, esc_len, code);
  if (esc_len != 0) {
    p->esc_lo = esc_code << (kLanesMaxLength - esc_len);
    p->esc_hi = (esc_code + 1) << (kLanesMaxLength - esc_len);
    FillPrefixes(p, p->esc_lo, p->esc_hi, 0, static_cast<uint8_t>(esc_len));
  }
  for (int h = 0; h < nsym; ++h) {
    if (len[h] == 0) continue;
    const uint32_t first = code[h] << (kLanesMaxLength - len[h]);
    const uint32_t last = (code[h] + 1) << (kLanesMaxLength - len[h]);
    FillPrefixes(p, first, last, static_cast<uint8_t>(h << p->k), len[h]);
  }
  uint64_t total = 0;
  for (int g = 0; g < p->groups; ++g) {
    uint32_t words;
    if (!GetVarint(in, &pos, &words)) return Corrupt(absl::StrFormat("bad size of stream %d", g));
    p->begin[g] = static_cast<size_t>(total);  // relative for now
    total += 2 * static_cast<uint64_t>(words);  // no overflow: words < 2^32
    p->end[g] = static_cast<size_t>(total);
  }
  uint32_t escapes = 0;
  if (esc_len != 0 && !GetVarint(in, &pos, &escapes)) {
    return Corrupt("bad number of escapes");
  }
  const uint64_t low_size = (static_cast<uint64_t>(n) * p->k + 7) / 8;
  const uint64_t rest = in.size() - pos;
  if (total > rest || escapes > rest - total || rest - total - escapes != low_size) {
    return Corrupt(absl::StrFormat(
        "%d bytes follow the sizes; the streams take %d, the escapes %d and the low plane %d",
        rest, total, escapes, low_size));
  }
  for (int g = 0; g < p->groups; ++g) {
    p->begin[g] += pos;
    p->end[g] += pos;
  }
  p->escapes = pos + static_cast<size_t>(total);
  p->num_escapes = static_cast<size_t>(escapes);
  for (size_t e = 0; e < p->num_escapes; ++e) {
    if (in[p->escapes + e] >= nsym) {
      return Corrupt(absl::StrFormat("escape %d is high part %d, but %d low bits leave %d", e,
                                     in[p->escapes + e], p->k, nsym));
    }
  }
  p->low = p->escapes + p->num_escapes;
  return absl::OkStatus();
}

// After the last block: every stream read to its end, and no lane holding a
// set bit (the unused bits of each lane's last word are zero).
absl::Status CheckEnds(const Parsed& p, const size_t pos[kMaxGroups],
                       const uint32_t nonzero_lanes[kMaxGroups], size_t escapes) {
  for (int g = 0; g < p.groups; ++g) {
    if (pos[g] != p.end[g]) {
      return Corrupt(absl::StrFormat("stream %d holds %d bytes but decoding took %d", g,
                                     p.end[g] - p.begin[g],
                                     static_cast<int64_t>(pos[g] - p.begin[g])));
    }
  }
  for (int g = 0; g < p.groups; ++g) {
    if (nonzero_lanes[g] != 0) {
      return Corrupt(absl::StrFormat("stream %d: lane %d ends with nonzero padding bits", g,
                                     __builtin_ctz(nonzero_lanes[g])));
    }
  }
  if (escapes != p.num_escapes) {
    return Corrupt(absl::StrFormat("the chunk holds %d escaped high parts but its codes take %d",
                                   p.num_escapes, escapes));
  }
  return absl::OkStatus();
}

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

// Decodes block b (rc positions) of a group. kFast: a full block whose
// stream has >= 64 bytes left and whose low plane bytes can be read 8 at a
// time.
template <bool kFast>
inline void PortableBlock(const Parsed& p, absl::Span<const uint8_t> in, size_t end,
                          PortableLanes& ln, size_t b, size_t rc, uint8_t* out,
                          size_t* next_escape) {
  const uint8_t* data = in.data();
  const uint8_t* len7 = p.len7;
  uint8_t idx[kBlock];
  // Locals, so that the byte stores to idx cannot alias them.
  uint32_t buf[kLanes], cnt[kLanes];
  std::memcpy(buf, ln.buf, sizeof(buf));
  std::memcpy(cnt, ln.cnt, sizeof(cnt));
  size_t pos = ln.pos;
  for (int r = 0; r < 2; ++r) {
    if (kFast) {
      // One lane's refill and two codes at a time; the lanes are independent
      // chains apart from the stream position, a cheap add. Branch-free:
      // whether a lane refills is data-dependent.
      for (int j = 0; j < kLanes; ++j) {
        uint32_t c = cnt[j], v = buf[j];
        const uint32_t take = c < 16;
        const uint32_t w = data[pos] | static_cast<uint32_t>(data[pos + 1]) << 8;
        v |= (w << (16 - (c & 15))) & (0u - take);
        pos += 2 * take;
        c += 16 * take;
        const uint32_t i0 = v >> 24;
        const uint32_t l0 = len7[i0 >> 1];
        v <<= l0;
        const uint32_t i1 = v >> 24;
        const uint32_t l1 = len7[i1 >> 1];
        idx[4 * j + 2 * r] = static_cast<uint8_t>(i0);
        idx[4 * j + 2 * r + 1] = static_cast<uint8_t>(i1);
        buf[j] = v << l1;
        cnt[j] = c - l0 - l1;
      }
      continue;
    }
    const int na = ActiveLanes(rc, 2 * r);
    for (int j = 0; j < na; ++j) {
      const uint32_t c = cnt[j];
      if (c >= 16) continue;
      uint32_t w = 0;
      if (pos + 2 <= end) w = data[pos] | static_cast<uint32_t>(data[pos + 1]) << 8;
      pos += 2;
      buf[j] |= w << (16 - c);
      cnt[j] = c + 16;
    }
    for (int t = 2 * r; t < 2 * r + 2; ++t) {
      const int nt = ActiveLanes(rc, t);
      for (int j = 0; j < nt; ++j) {
        const uint32_t i = buf[j] >> 24;
        const uint32_t l = len7[i >> 1];
        idx[4 * j + t] = static_cast<uint8_t>(i);
        buf[j] <<= l;
        cnt[j] -= l;
      }
    }
  }
  std::memcpy(ln.buf, buf, sizeof(buf));
  std::memcpy(ln.cnt, cnt, sizeof(cnt));
  ln.pos = pos;
  uint8_t* o = out + b * kBlock;
  for (size_t q = 0; q < rc; ++q) o[q] = p.sym[idx[q]];
  if (p.esc_hi != 0) {
    uint64_t esc = 0;
    if (kFast) {
      // A flag byte per position (a loop compilers vectorize), then the
      // mask. The escape's prefixes span <= 128.
      const uint32_t lo = p.esc_lo, span = p.esc_hi - p.esc_lo;
      uint8_t flag[kBlock];
      for (int q = 0; q < kBlock; ++q) flag[q] = static_cast<uint8_t>(idx[q] - lo) < span;
      esc = FlagsToMask(flag);
    } else {
      for (size_t q = 0; q < rc; ++q) {
        esc |= static_cast<uint64_t>(idx[q] >= p.esc_lo && idx[q] < p.esc_hi) << q;
      }
    }
    PatchEscapes(p, data, esc, o, next_escape);
  }
  if (p.k == 0) return;
  const uint8_t* low = data + p.low;
  const uint32_t mask = (1u << p.k) - 1;
  if (kFast) return MergeLowBlock(p, data, b, o);
  const size_t low_size = in.size() - p.low;
  for (size_t q = 0; q < rc; ++q) {
    const uint64_t bit = (b * kBlock + q) * p.k;
    const size_t byte = static_cast<size_t>(bit >> 3);
    uint32_t v = low[byte];
    if (byte + 1 < low_size) v |= static_cast<uint32_t>(low[byte + 1]) << 8;
    o[q] |= static_cast<uint8_t>((v >> (bit & 7)) & mask);
  }
}

// Whether PortableBlock<true> may decode block b of group g (rc == 64).
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
                                PortableLanes* ln, size_t first, size_t escapes) {
  const size_t blocks = (p.n + kBlock - 1) / kBlock;
  for (size_t b = first; b < blocks; ++b) {
    const int g = static_cast<int>(b % p.groups);
    const size_t rc = std::min<size_t>(kBlock, p.n - b * kBlock);
    if (rc == kBlock && PortableFast(p, in.size(), ln[g].pos, g, b)) {
      PortableBlock<true>(p, in, p.end[g], ln[g], b, rc, out, &escapes);
    } else {
      PortableBlock<false>(p, in, p.end[g], ln[g], b, rc, out, &escapes);
    }
  }
  size_t pos[kMaxGroups];
  uint32_t nonzero[kMaxGroups] = {};
  for (int g = 0; g < p.groups; ++g) {
    pos[g] = ln[g].pos;
    for (int j = 0; j < kLanes; ++j) nonzero[g] |= static_cast<uint32_t>(ln[g].buf[j] != 0) << j;
  }
  return CheckEnds(p, pos, nonzero, escapes);
}

absl::Status DecodePortable(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out) {
  PortableLanes ln[kMaxGroups];
  for (int g = 0; g < p.groups; ++g) ln[g].pos = p.begin[g];
  return DecodePortableFrom(p, in, out, ln, 0, 0);
}

#if TQM_LANES_NEON

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
absl::Status DecodeNeon(const Parsed& p, absl::Span<const uint8_t> in, uint8_t* out) {
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

#endif  // TQM_LANES_NEON

#if TQM_LANES_X86

// GCC 12 warns about the `_mm512_undefined_*` operands inside its own
// intrinsic headers (a false positive with -O2); nothing here is undefined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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
constexpr RankTable kRank;

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
// chain costs ~12 cycles.

#define TQM_AVX2 __attribute__((target("avx2,bmi2,popcnt")))
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
  int k;
  // The escape's 8-bit prefixes: x - esc_lo <= esc_span (bytes, unsigned).
  __m256i esc_lo, esc_span;
  size_t* next_escape;  // the chunk's escape counter (PatchEscapes)
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
  if (tb.k != 0) {
    // 8k bytes per block; the fields of positions 16u..16u+15 lie in the 16
    // bytes from 2uk. Near the payload's end, a zero-padded copy (bits past
    // it read as 0, as in the portable decoder).
    const size_t low_off = p.low + 8 * static_cast<size_t>(tb.k) * b;
    const uint8_t* src = in.data() + low_off;
    alignas(32) uint8_t tail[64];
    if (low_off + 6 * static_cast<size_t>(tb.k) + 16 > in.size()) {
      std::memset(tail, 0, sizeof(tail));
      std::memcpy(tail, src, std::min<size_t>(8 * tb.k, in.size() - low_off));
      src = tail;
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

template <int G, int T>
TQM_AVX2 absl::Status DecodeAvx2(const Avx2Tables& tb, const Parsed& p,
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
  for (; it < rounds && FastRound<G>(p, in.data(), ln, it); ++it) {
    Avx2Blocks<G, T, true, true>(tb, p, in, 0, it * G, kBlock, ln, out);
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
  tb.k = p.k;
  tb.esc_lo = _mm256_set1_epi8(static_cast<char>(p.esc_lo));
  tb.esc_span = _mm256_set1_epi8(static_cast<char>(p.esc_hi - p.esc_lo - 1));
  size_t escapes = 0;
  tb.next_escape = &escapes;
  // Each threshold costs a compare and an add per step (quantized weights
  // use 5 or 6; 7 instead of 6 costs 4 %), so four groups, the encoder's
  // choice from 16 KiB, get one variant per count; smaller chunks take
  // all seven (the padding never counts).
  if (p.groups == 1) {
    *status = DecodeAvx2<1, 7>(tb, p, in, out);
  } else if (p.groups == 2) {
    *status = DecodeAvx2<2, 7>(tb, p, in, out);
  } else if (nt <= 3) {
    *status = DecodeAvx2<4, 3>(tb, p, in, out);
  } else if (nt == 4) {
    *status = DecodeAvx2<4, 4>(tb, p, in, out);
  } else if (nt == 5) {
    *status = DecodeAvx2<4, 5>(tb, p, in, out);
  } else if (nt == 6) {
    *status = DecodeAvx2<4, 6>(tb, p, in, out);
  } else {
    *status = DecodeAvx2<4, 7>(tb, p, in, out);
  }
  return true;
}

#pragma GCC diagnostic pop

#endif  // TQM_LANES_X86

// ---- Encoder ---------------------------------------------------------------

// A code for one chunk: k low bits stored as they are, the code lengths of
// the high parts (0: absent, or escaped when esc_len > 0) and of the escape.
struct LanesCode {
  int k = 0;
  uint8_t len[256] = {};
  int esc_len = 0;
};

// Code lengths (<= 8 bits) for high parts with counts hc[0..nsym), escaping
// those that occur fewer than min_count times. Returns the bits of the codes
// and escaped high parts (8 bits each), or 0 when the code would have fewer
// than two symbols.
uint64_t CodeWithEscapes(const uint32_t hc[256], int nsym, uint64_t min_count, LanesCode* c) {
  uint32_t cc[256] = {};
  int map[256];
  int m = 0;
  uint64_t escaped = 0;
  for (int h = 0; h < nsym; ++h) {
    if (hc[h] == 0) continue;
    if (hc[h] < min_count) {
      escaped += hc[h];
    } else {
      map[m] = h;
      cc[m++] = hc[h];
    }
  }
  const int core = m;
  if (escaped > 0) cc[m++] = static_cast<uint32_t>(escaped);  // m <= 256: a slot was freed
  if (m < 2) return 0;
  uint8_t cl[256] = {};
  entropy_internal::LimitedHuffmanLengths(cc, kLanesMaxLength, cl);
  std::memset(c->len, 0, sizeof(c->len));
  uint64_t bits = 0;
  for (int i = 0; i < core; ++i) {
    c->len[map[i]] = cl[i];
    bits += static_cast<uint64_t>(cc[i]) * cl[i];
  }
  c->esc_len = escaped > 0 ? cl[core] : 0;
  return bits + escaped * (c->esc_len + 8);
}

std::string TableBlock(const uint8_t len[256]) {
  uint32_t values[256];
  for (int h = 0; h < 256; ++h) values[h] = len[h];
  std::string t;
  entropy_internal::WriteSymbolValues(values, kLanesMaxLength, &t);
  return t;
}

// Appends the coded form of `in` with code `c` and `groups` groups.
void WriteCoded(absl::Span<const uint8_t> in, const LanesCode& c, int groups, std::string* out) {
  const size_t n = in.size();
  const int k = c.k;
  const uint8_t* len = c.len;
  uint32_t code[256];
  const uint32_t esc_code = CanonicalCodes(len, 256 >> k, c.esc_len, code);
  out->push_back(static_cast<char>(kModeCoded));
  int glog = 0;
  while ((1 << glog) < groups) ++glog;
  out->push_back(static_cast<char>(k | glog << 4));
  out->append(TableBlock(len));
  out->push_back(static_cast<char>(c.esc_len));
  // Each position's code and length (the escape's for an escaped high part),
  // and the escaped high parts in position order.
  std::vector<uint8_t> pcode(n), plen(n);
  std::string escapes;
  for (size_t i = 0; i < n; ++i) {
    const int h = in[i] >> k;
    if (len[h] != 0) {
      pcode[i] = static_cast<uint8_t>(code[h]);
      plen[i] = len[h];
    } else {
      pcode[i] = static_cast<uint8_t>(esc_code);
      plen[i] = static_cast<uint8_t>(c.esc_len);
      escapes.push_back(static_cast<char>(h));
    }
  }
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<std::vector<uint16_t>> streams(groups);
  std::vector<uint16_t> words[kLanes];  // reused by every group
  for (int g = 0; g < groups; ++g) {
    // Each lane's bits, MSB-first, in 16-bit words.
    for (int j = 0; j < kLanes; ++j) {
      std::vector<uint16_t>& w = words[j];
      w.clear();
      uint32_t acc = 0;
      int bits = 0;
      for (size_t b = g; b < blocks; b += groups) {
        const size_t rc = std::min<size_t>(kBlock, n - b * kBlock);
        for (int t = 0; t < 4 && 4 * j + t < static_cast<int>(rc); ++t) {
          const size_t i = b * kBlock + 4 * j + t;
          acc = (acc << plen[i]) | pcode[i];
          bits += plen[i];
          if (bits >= 16) {
            bits -= 16;
            w.push_back(static_cast<uint16_t>(acc >> bits));
            acc &= (1u << bits) - 1;
          }
        }
      }
      if (bits > 0) w.push_back(static_cast<uint16_t>(acc << (16 - bits)));
    }
    // The decoder's refill schedule decides the order of the words.
    uint32_t cnt[kLanes] = {};
    size_t next[kLanes] = {};
    std::vector<uint16_t>& s = streams[g];
    for (size_t b = g; b < blocks; b += groups) {
      const size_t rc = std::min<size_t>(kBlock, n - b * kBlock);
      const uint8_t* pl = plen.data() + b * kBlock;
      for (int r = 0; r < 2; ++r) {
        const int na = ActiveLanes(rc, 2 * r);
        for (int j = 0; j < na; ++j) {
          if (cnt[j] >= 16) continue;
          s.push_back(next[j] < words[j].size() ? words[j][next[j]] : 0);
          ++next[j];
          cnt[j] += 16;
        }
        for (int t = 2 * r; t < 2 * r + 2; ++t) {
          const int nt = ActiveLanes(rc, t);
          for (int j = 0; j < nt; ++j) cnt[j] -= pl[4 * j + t];
        }
      }
    }
  }
  for (const auto& s : streams) PutVarint(static_cast<uint32_t>(s.size()), out);
  if (c.esc_len != 0) PutVarint(static_cast<uint32_t>(escapes.size()), out);
  for (const auto& s : streams) {
    // 16-bit little-endian words (little-endian host).
    out->append(reinterpret_cast<const char*>(s.data()), 2 * s.size());
  }
  out->append(escapes);
  if (k == 0) return;
  const size_t start = out->size();
  out->resize(start + (n * k + 7) / 8);
  uint8_t* o = reinterpret_cast<uint8_t*>(&(*out)[start]);
  uint64_t acc = 0;
  int bits = 0;
  const uint32_t mask = (1u << k) - 1;
  for (size_t i = 0; i < n; ++i) {
    acc |= static_cast<uint64_t>(in[i] & mask) << bits;
    bits += k;
    if (bits >= 32) {
      std::memcpy(o, &acc, 4);  // little-endian host
      o += 4;
      acc >>= 32;
      bits -= 32;
    }
  }
  while (bits > 0) {
    *o++ = static_cast<uint8_t>(acc);
    acc >>= 8;
    bits -= 8;
  }
}

}  // namespace

namespace entropy_internal {

bool HaveAvx512Vbmi() { return TQM_LANES_X86 && cpu::HasAvx512Vbmi(); }

bool HaveAvx2Bmi2() { return TQM_LANES_X86 && cpu::HasAvx2(); }

const char* LanesDecoderName(LanesIsa isa) {
  if (isa == LanesIsa::kAuto && HaveAvx512Vbmi()) return "AVX-512";
  if (isa != LanesIsa::kPortable && HaveAvx2Bmi2()) return "AVX2";
#if TQM_LANES_NEON
  if (isa == LanesIsa::kAuto && cpu::HasNeon()) return "NEON";
#endif
  return "portable C++";
}

int LanesGroupsFor(size_t n) {
  if (n >= kLanesFourGroupsMin) return 4;
  if (n >= kLanesTwoGroupsMin) return 2;
  return 1;
}

absl::Status EncodeLanesWith(absl::Span<const uint8_t> in, int k, int groups,
                             std::string* out) {
  if (in.size() > kEntropyMaxInput) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "lanes: input of %d bytes exceeds the limit of %d", in.size(), kEntropyMaxInput));
  }
  if (groups != 0 && groups != 1 && groups != 2 && groups != 4) {
    return absl::InvalidArgumentError(absl::StrFormat("lanes: %d groups (1, 2 or 4)", groups));
  }
  if (k < -1 || k > kLanesMaxK) {
    return absl::InvalidArgumentError(absl::StrFormat("lanes: k = %d (0..%d)", k, kLanesMaxK));
  }
  uint32_t counts[256];
  if (EncodeSimpleModes(in, counts, out)) return absl::OkStatus();
  const size_t n = in.size();
  if (groups == 0) groups = LanesGroupsFor(n);
  // Every k, each with no escapes and with the high parts rarer than 2^-m
  // escaped (codes of at most 8 bits cannot follow a long tail; an escape
  // costs its code and a byte). Package-merge for all of them took most of
  // the time of packing small tensors, so each is first estimated from its
  // order-0 entropy with a correction for the 8-bit limit (whole-bit
  // lengths ignored), and the four best estimates get real codes; the
  // smallest of those wins.
  struct Candidate {
    int k;
    uint64_t min_count;
    double estimate;  // bits
  };
  std::vector<Candidate> cands;
  const double total = static_cast<double>(n);
  for (int kk = (k < 0 ? 0 : k); kk <= (k < 0 ? kLanesMaxK : k); ++kk) {
    uint32_t hc[256] = {};
    for (int v = 0; v < 256; ++v) hc[v >> kk] += counts[v];
    const int nsym = 256 >> kk;
    double clogc[256];  // c log2 c
    int distinct = 0;
    for (int h = 0; h < nsym; ++h) {
      clogc[h] = hc[h] > 0 ? hc[h] * std::log2(static_cast<double>(hc[h])) : 0;
      distinct += hc[h] != 0;
    }
    if (distinct < 2) continue;
    int last_escaped = -1;
    for (int m : {0, 13, 12, 11, 10, 9, 8, 7, 6}) {
      const uint64_t min_count = m == 0 ? 0 : (static_cast<uint64_t>(n) >> m);
      int escaped = 0;  // skip thresholds that escape the same set
      uint64_t esc_count = 0;
      for (int h = 0; h < nsym; ++h) {
        if (hc[h] != 0 && hc[h] < min_count) {
          ++escaped;
          esc_count += hc[h];
        }
      }
      if (escaped == last_escaped || distinct - escaped + (escaped > 0) < 2) continue;
      last_escaped = escaped;
      // Ideal code lengths, except that a symbol rarer than 2^-8 gets 8 bits;
      // the code space those take beyond their probability lengthens the
      // other codes by -log2(1 - excess) bits each.
      double bits = 0, excess = 0;
      uint64_t common = 0;
      auto cost = [&](uint64_t c, double c_log_c) {
        if (c == 0) return;
        const double prob = c / total;
        if (prob < 1.0 / 256) {
          bits += 8.0 * c;
          excess += 1.0 / 256 - prob;
        } else {
          bits += c * std::log2(total) - c_log_c;
          common += c;
        }
      };
      for (int h = 0; h < nsym; ++h) {
        if (hc[h] >= min_count) cost(hc[h], clogc[h]);
      }
      const double e = static_cast<double>(esc_count);
      if (esc_count > 0) cost(esc_count, e * std::log2(e));
      if (excess < 1) bits -= common * std::log2(1 - excess);
      cands.push_back({kk, min_count, bits + 8 * e + total * kk});
    }
  }
  std::sort(cands.begin(), cands.end(),
            [](const Candidate& x, const Candidate& y) { return x.estimate < y.estimate; });
  if (cands.size() > 4) cands.resize(4);
  bool found = false;
  uint64_t best_bits = 0;
  LanesCode best;
  for (const Candidate& cand : cands) {
    uint32_t hc[256] = {};
    for (int v = 0; v < 256; ++v) hc[v >> cand.k] += counts[v];
    LanesCode c;
    c.k = cand.k;
    const uint64_t coded = CodeWithEscapes(hc, 256 >> cand.k, cand.min_count, &c);
    if (coded == 0) continue;
    // Table, streams rounded to words, about half a word per lane at the end.
    const uint64_t bits = 8 * TableBlock(c.len).size() + coded +
                          static_cast<uint64_t>(n) * cand.k + 8 * kLanes * groups;
    if (!found || bits < best_bits) {
      found = true;
      best_bits = bits;
      best = c;
    }
  }
  const size_t start = out->size();
  if (found) {
    WriteCoded(in, best, groups, out);
    if (out->size() - start <= n) return absl::OkStatus();
    out->resize(start);
  }
  out->push_back(static_cast<char>(kModeRaw));
  out->append(reinterpret_cast<const char*>(in.data()), n);
  return absl::OkStatus();
}

absl::Status DecodeLanesWith(LanesIsa isa, absl::Span<const uint8_t> in,
                             absl::Span<uint8_t> out) {
  if (in.empty()) return Corrupt("empty chunk");
  bool done;
  absl::Status s = DecodeSimpleModes("lanes", in, out, &done);
  if (!s.ok() || done) return s;
  Parsed p;
  s = Parse(in, out.size(), &p);
  if (!s.ok()) return s;
#if TQM_LANES_X86
  if (isa == LanesIsa::kAuto && HaveAvx512Vbmi()) {
    return p.esc_hi != 0 ? DecodeAvx512Groups<true>(p, in, out.data())
                         : DecodeAvx512Groups<false>(p, in, out.data());
  }
  if (isa != LanesIsa::kPortable && HaveAvx2Bmi2()) {
    if (DecodeWithAvx2(p, in, out.data(), &s)) return s;
  }
#endif
#if TQM_LANES_NEON
  if (isa == LanesIsa::kAuto && cpu::HasNeon()) {
    switch (p.groups) {
      case 1:
        return DecodeNeon<1>(p, in, out.data());
      case 2:
        return DecodeNeon<2>(p, in, out.data());
      default:
        return DecodeNeon<4>(p, in, out.data());
    }
  }
#endif
  return DecodePortable(p, in, out.data());
}

}  // namespace entropy_internal

absl::Status EncodeLanes(absl::Span<const uint8_t> in, std::string* out) {
  return entropy_internal::EncodeLanesWith(in, -1, 0, out);
}

absl::Status DecodeLanes(absl::Span<const uint8_t> in, absl::Span<uint8_t> out) {
  return entropy_internal::DecodeLanesWith(entropy_internal::LanesIsa::kAuto, in, out);
}

}  // namespace tqm
