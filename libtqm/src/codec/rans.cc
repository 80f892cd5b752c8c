// Interleaved order-0 rANS (entropy.h, kCodecRans).
//
// Layout of a coded chunk (mode kModeCoded):
//   mode byte | symbol table block (frequencies, summing to 2^12)
//   | 8 lane states, 7 bytes each, little-endian | 32-bit little-endian words
// Byte i of the chunk belongs to lane i % 8; a lane's symbols are taken two
// at a time ("groups"). The decoder decodes a group of every lane, then
// renormalizes each lane in lane order, reading one word when the lane's
// state fell below 2^24. States are 64-bit and lie in [2^24, 2^56) between
// groups; with 12-bit frequencies two symbols take at most 24 bits of
// state, so one 32-bit read per group always suffices.
//
// Why this shape: a decoder step is three table loads, a multiply and an
// add, and the renormalization (a compare, a select and a counter bump that
// chains the lanes together) happens for every second symbol only: about
// 12 instructions per byte. Eight lanes hide the latency of a step without
// spilling on x86-64; the states cost about 5 bytes per lane (40 per chunk)
// beyond the information they carry. (A SIMD layout, 32-bit states in 32 to
// 64 lanes decoded with gathers, measured ~1.5x faster with AVX-512, no
// faster with AVX2 and ~2x slower without SIMD, at 2-4x the state bytes.)

#include <algorithm>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/endian.h"
#include "codec/entropy.h"

namespace tqm {
namespace {

using entropy_internal::kModeCoded;
using entropy_internal::kModeConstant;
using entropy_internal::kModeRaw;
using entropy_internal::kRansLanes;
using entropy_internal::kRansLow;
using entropy_internal::kRansPrecision;
using entropy_internal::kRansStateBytes;

constexpr uint32_t kM = 1u << kRansPrecision;
constexpr uint32_t kMask = kM - 1;
constexpr uint64_t kL = kRansLow;
constexpr int kGroup = 2;  // symbols per lane per renormalization
constexpr size_t kGroupBytes =
    kRansLanes * kGroup;  // output bytes per group of all lanes
static_assert(kGroup * kRansPrecision <= 24, "a group must fit one 32-bit read");
static_assert(kRansLow == uint64_t{1} << (kGroup * kRansPrecision), "");

absl::Status Corrupt(const std::string& what) {
  return absl::DataLossError("rans: " + what);
}

inline void Put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// Encoder's view of a symbol.
struct EncSymbol {
  uint32_t freq;
  uint32_t cum;
};

// C(s, x): the state that decodes to symbol s and state x.
inline uint64_t EncodeStep(uint64_t x, const EncSymbol& s) {
  uint64_t q = x / s.freq;
  return (q << kRansPrecision) + (x - q * s.freq) + s.cum;
}

// Decoder's view: for each slot of [0, 2^12), its symbol, the symbol's
// frequency, and the slot's offset within the symbol's range. Separate
// arrays cost a load each instead of ALU operations to unpack one entry.
// kPad slots past the end take the overrun of the 16-byte stores that fill
// the table (never read).
constexpr uint32_t kPad = 16;
struct DecodeTable {
  uint16_t freq[kM + kPad];
  uint16_t offset[kM + kPad];
  uint8_t sym[kM + kPad];
};

// The store is volatile only to keep GCC from merging the sixteen byte
// stores of a group into one wide store assembled with shifts and ors,
// which costs two ALU operations per byte where a store costs none.
__attribute__((always_inline)) inline void DecodeStep(uint64_t& x, uint8_t* o,
                                                      const DecodeTable& t) {
  const uint32_t slot = static_cast<uint32_t>(x) & kMask;
  *static_cast<volatile uint8_t*>(o) = t.sym[slot];
  x = (x >> kRansPrecision) * t.freq[slot] + t.offset[slot];
}

// Reads word words[k] into a lane whose state fell below L, and counts it.
// Branch-free: whether a lane needs a word is a coin flip on high-entropy
// data, and compilers turn the plain conditional into a branch. (BMI2's
// shlx and bzhi were tried: the constants they need in registers cost
// spills that made the loop slower.)
__attribute__((always_inline)) inline void Renorm(uint64_t& x, const uint8_t* words,
                                                  uint64_t& k) {
  const uint64_t y = (x << 32) | LoadLE32(words + 4 * k);
#if defined(__x86_64__) && defined(__GNUC__) && !defined(TQM_ENTROPY_NO_ASM)
  static_assert(kL == 0x1000000, "");
  asm("cmpq $0x1000000, %[x]\n\t"
      "cmovbq %[y], %[x]\n\t"
      "adcq $0, %[k]"
      : [x] "+r"(x), [k] "+r"(k)
      : [y] "r"(y)
      : "cc");
#else
  const uint64_t need = x < kL;
  const uint64_t mask = 0 - need;
  x = (x & ~mask) | (y & mask);
  k += need;
#endif
}

// 0, 1, 2, ...: the offsets of a symbol's slots, copied 8 at a time.
struct Iota {
  uint16_t v[kM + kPad];
  constexpr Iota() : v() {
    for (uint32_t i = 0; i < kM + kPad; ++i) v[i] = static_cast<uint16_t>(i);
  }
};
constexpr Iota kIota;

absl::Status BuildDecodeTable(const uint32_t freqs[256], DecodeTable* t) {
  // Each symbol's run of slots is written in whole 16-byte stores, which may
  // run up to 15 bytes past it; the next symbol's run (or the padding) takes
  // the overrun. A slot-by-slot loop and memset took about a third of the
  // rANS decode time of stories260K's 2-32 KB chunks.
  uint32_t cum = 0;
  for (int s = 0; s < 256; ++s) {
    const uint32_t f = freqs[s];
    if (f == 0) continue;
    if (f > kM - cum) break;  // reported below
    uint16_t f8[8];
    std::fill(f8, f8 + 8, static_cast<uint16_t>(f));
    uint8_t s16[16];
    std::memset(s16, s, 16);
    for (uint32_t k = 0; k < f; k += 8) {
      std::memcpy(t->freq + cum + k, f8, 16);
      std::memcpy(t->offset + cum + k, kIota.v + k, 16);
    }
    for (uint32_t k = 0; k < f; k += 16) std::memcpy(t->sym + cum + k, s16, 16);
    cum += f;
  }
  uint64_t total = 0;
  for (int s = 0; s < 256; ++s) total += freqs[s];
  if (total != kM) {
    return Corrupt(absl::StrFormat("frequencies sum to %d, not %d", total, kM));
  }
  // One symbol with all of 2^12 is the constant mode's job.
  for (int s = 0; s < 256; ++s) {
    if (freqs[s] == kM) return Corrupt("a coded chunk needs two symbols or more");
  }
  return absl::OkStatus();
}

// Decodes groups [g, end) one symbol at a time, checking every read. Used
// for the last partial group and once fewer than a group's worth of words
// remain.
absl::Status DecodeCareful(size_t g, uint64_t x[kRansLanes], const DecodeTable& t,
                           const uint8_t*& p, const uint8_t* end, uint8_t* out,
                           size_t n) {
  for (size_t base = g * kGroupBytes; base < n; base += kGroupBytes) {
    for (size_t i = base; i < std::min(n, base + kGroupBytes); ++i) {
      DecodeStep(x[i % kRansLanes], out + i, t);
    }
    for (int j = 0; j < kRansLanes && base + j < n; ++j) {
      if (x[j] < kL) {
        if (end - p < 4) return Corrupt("words end before the last symbol");
        x[j] = (x[j] << 32) | LoadLE32(p);
        p += 4;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DecodeLanes(const DecodeTable& t, const uint64_t st[kRansLanes],
                         const uint8_t* p, const uint8_t* end, uint8_t* out, size_t n) {
  uint64_t x0 = st[0], x1 = st[1], x2 = st[2], x3 = st[3];
  uint64_t x4 = st[4], x5 = st[5], x6 = st[6], x7 = st[7];
  size_t g = 0;
  const size_t full = n / kGroupBytes;
  // Words read so far; each iteration reads at most one per lane.
  uint64_t k = 0;
  const uint64_t words = static_cast<uint64_t>(end - p) / 4;
  for (; g < full && words - k >= kRansLanes; ++g) {
    uint8_t* o = out + g * kGroupBytes;
    DecodeStep(x0, o + 0, t);
    DecodeStep(x1, o + 1, t);
    DecodeStep(x2, o + 2, t);
    DecodeStep(x3, o + 3, t);
    DecodeStep(x4, o + 4, t);
    DecodeStep(x5, o + 5, t);
    DecodeStep(x6, o + 6, t);
    DecodeStep(x7, o + 7, t);
    DecodeStep(x0, o + 8, t);
    DecodeStep(x1, o + 9, t);
    DecodeStep(x2, o + 10, t);
    DecodeStep(x3, o + 11, t);
    DecodeStep(x4, o + 12, t);
    DecodeStep(x5, o + 13, t);
    DecodeStep(x6, o + 14, t);
    DecodeStep(x7, o + 15, t);
    Renorm(x0, p, k);
    Renorm(x1, p, k);
    Renorm(x2, p, k);
    Renorm(x3, p, k);
    Renorm(x4, p, k);
    Renorm(x5, p, k);
    Renorm(x6, p, k);
    Renorm(x7, p, k);
  }
  p += 4 * k;
  uint64_t x[kRansLanes] = {x0, x1, x2, x3, x4, x5, x6, x7};
  absl::Status s = DecodeCareful(g, x, t, p, end, out, n);
  if (!s.ok()) return s;
  if (p != end) {
    return Corrupt(absl::StrFormat("%d bytes left after the last symbol", end - p));
  }
  for (int j = 0; j < kRansLanes; ++j) {
    if (x[j] != kL) return Corrupt(absl::StrFormat("lane %d ends in a wrong state", j));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status EncodeRans(absl::Span<const uint8_t> in, std::string* out) {
  const size_t n = in.size();
  if (n > kEntropyMaxInput) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "rans: input of %d bytes exceeds the limit of %d", n, kEntropyMaxInput));
  }
  uint32_t counts[256];
  if (entropy_internal::EncodeSimpleModes(in, counts, out)) return absl::OkStatus();
  auto raw = [&]() {  // incompressible: the bytes verbatim
    out->push_back(static_cast<char>(kModeRaw));
    out->append(reinterpret_cast<const char*>(in.data()), n);
    return absl::OkStatus();
  };
  uint32_t freqs[256];
  entropy_internal::NormalizeFrequencies(counts, n, kRansPrecision, freqs);
  EncSymbol syms[256];
  uint32_t cum = 0;
  for (int s = 0; s < 256; ++s) {
    syms[s] = {freqs[s], cum};
    cum += freqs[s];
  }

  // Encode backwards: groups from last to first, lanes from last to first,
  // so that the words come out in exactly the reverse of the order the
  // decoder reads them.
  std::vector<uint32_t> words;
  words.reserve(n / 4 + 16);
  uint64_t x[kRansLanes];
  std::fill(x, x + kRansLanes, kL);
  const size_t groups = (n + kGroupBytes - 1) / kGroupBytes;
  for (size_t g = groups; g-- > 0;) {
    const size_t base = g * kGroupBytes;
    for (int j = kRansLanes - 1; j >= 0; --j) {
      const size_t i0 = base + j, i1 = base + kRansLanes + j;
      if (i0 >= n) continue;
      const EncSymbol& s0 = syms[in[i0]];
      // From a state >= x_max, encoding the group would leave [L, 2^32 L):
      // x_max = 2^32 L * f0 * f1 / M^2 (one symbol: 2^32 L * f0 / M).
      uint64_t x_max;
      if (i1 < n) {
        const EncSymbol& s1 = syms[in[i1]];
        x_max = (uint64_t{s0.freq} * s1.freq) << 32;
        if (x[j] >= x_max) {
          words.push_back(static_cast<uint32_t>(x[j]));
          x[j] >>= 32;
        }
        x[j] = EncodeStep(x[j], s1);
      } else {
        x_max = uint64_t{s0.freq} << (32 + 24 - kRansPrecision);
        if (x[j] >= x_max) {
          words.push_back(static_cast<uint32_t>(x[j]));
          x[j] >>= 32;
        }
      }
      x[j] = EncodeStep(x[j], s0);
    }
  }

  std::string coded;
  coded.push_back(static_cast<char>(kModeCoded));
  entropy_internal::WriteSymbolValues(freqs, kM, &coded);
  const size_t header = coded.size() + kRansLanes * kRansStateBytes;
  if (header + 4 * words.size() >= n + 1) return raw();
  size_t start = out->size();
  out->append(coded);
  out->resize(start + header + 4 * words.size());
  uint8_t* o = reinterpret_cast<uint8_t*>(&(*out)[start + coded.size()]);
  for (int j = 0; j < kRansLanes; ++j) {
    for (int b = 0; b < kRansStateBytes; ++b)
      *o++ = static_cast<uint8_t>(x[j] >> (8 * b));
  }
  for (size_t k = words.size(); k-- > 0; o += 4) Put32(o, words[k]);
  return absl::OkStatus();
}

namespace entropy_internal {

absl::Status DecodeRansWith(Isa isa, absl::Span<const uint8_t> in,
                            absl::Span<uint8_t> out) {
  const size_t n = out.size();
  if (in.empty()) return Corrupt("empty input");
  bool done = false;
  absl::Status simple = DecodeSimpleModes("rans", in, out, &done);
  if (!simple.ok() || done) return simple;
  if (n > kEntropyMaxInput) return absl::ResourceExhaustedError("rans: output too large");
  size_t pos = 1;
  uint32_t freqs[256];
  absl::Status s = ReadSymbolValues(in, &pos, kM, "rans", freqs);
  if (!s.ok()) return s;
  DecodeTable table;
  s = BuildDecodeTable(freqs, &table);
  if (!s.ok()) return s;
  if (in.size() - pos < kRansLanes * kRansStateBytes)
    return Corrupt("lane states cut off");
  uint64_t st[kRansLanes];
  for (int j = 0; j < kRansLanes; ++j) {
    uint64_t v = 0;
    for (int b = 0; b < kRansStateBytes; ++b) v |= uint64_t{in[pos++]} << (8 * b);
    st[j] = v;
  }
  const uint8_t* words = in.data() + pos;
  const uint8_t* end = in.data() + in.size();
  (void)isa;  // one implementation: plain C++ (plus a cmov on x86-64)
  return DecodeLanes(table, st, words, end, out.data(), n);
}

}  // namespace entropy_internal

absl::Status DecodeRans(absl::Span<const uint8_t> in, absl::Span<uint8_t> out) {
  return entropy_internal::DecodeRansWith(entropy_internal::Isa::kAuto, in, out);
}

}  // namespace tqm
