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
// (lanes_avx2.cc says how it finds lengths and symbols without vpermi2b), and
// so does AArch64 (NEON: tbl lookups in 128-bit registers).


#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/cpu.h"
#include "codec/entropy.h"
#include "codec/lanes_internal.h"

namespace tqm {
namespace lanes_internal {
namespace {

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

}  // namespace

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

namespace {

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
}  // namespace lanes_internal


namespace entropy_internal {

using lanes_internal::CodeWithEscapes;
using lanes_internal::Corrupt;
using lanes_internal::kLanes;
using lanes_internal::LanesCode;
using lanes_internal::Parsed;
using lanes_internal::TableBlock;
using lanes_internal::WriteCoded;

bool HaveAvx512Vbmi() { return TQM_LANES_X86 && cpu::HasAvx512Vbmi(); }

bool HaveAvx2Bmi2() { return TQM_LANES_X86 && cpu::HasAvx2(); }

const char* LanesDecoderName(Isa isa) {
  if (isa == Isa::kAuto && HaveAvx512Vbmi()) return "AVX-512";
  if (isa != Isa::kPortable && HaveAvx2Bmi2()) return "AVX2";
#if TQM_LANES_NEON
  if (isa == Isa::kAuto && cpu::HasNeon()) return "NEON";
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

absl::Status DecodeLanesWith(Isa isa, absl::Span<const uint8_t> in,
                             absl::Span<uint8_t> out) {
  if (in.empty()) return Corrupt("empty chunk");
  bool done;
  absl::Status s = DecodeSimpleModes("lanes", in, out, &done);
  if (!s.ok() || done) return s;
  Parsed p;
  s = lanes_internal::Parse(in, out.size(), &p);
  if (!s.ok()) return s;
#if TQM_LANES_X86
  if (isa == Isa::kAuto && HaveAvx512Vbmi()) {
    return lanes_internal::DecodeAvx512(p, in, out.data());
  }
  if (isa != Isa::kPortable && HaveAvx2Bmi2()) {
    if (lanes_internal::DecodeWithAvx2(p, in, out.data(), &s)) return s;
  }
#endif
#if TQM_LANES_NEON
  if (isa == Isa::kAuto && cpu::HasNeon()) {
    return lanes_internal::DecodeNeon(p, in, out.data());
  }
#endif
  return lanes_internal::DecodePortable(p, in, out.data());
}

}  // namespace entropy_internal

absl::Status EncodeLanes(absl::Span<const uint8_t> in, std::string* out) {
  return entropy_internal::EncodeLanesWith(in, -1, 0, out);
}

absl::Status DecodeLanes(absl::Span<const uint8_t> in, absl::Span<uint8_t> out) {
  return entropy_internal::DecodeLanesWith(entropy_internal::Isa::kAuto, in, out);
}

}  // namespace tqm
