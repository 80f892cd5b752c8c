// Multi-stream canonical Huffman (entropy.h, kCodecHuffman).
//
// Layout of a coded chunk (mode kModeCoded):
//   mode byte | symbol table block (code lengths 0..12)
//   | byte sizes of streams 0..6, LEB128 | streams 0..7
// Stream k codes output bytes k, k + 8, k + 16, ... Codes are canonical (shorter codes
// first, then by symbol) and written first bit first into an LSB-first bit stream, so the
// decoder indexes its table with the low bits of a 64-bit little-endian
// load. A stream's size is exactly ceil(its bits / 8); padding bits are 0.
//
// Why this shape: one 64-bit load yields at least 57 bits, enough for five
// 11-bit or four 12-bit codes, so the inner loop is an and, two table loads,
// a store and a shift per symbol, and the eight streams are independent
// chains that an out-of-order core overlaps. (Sixteen streams spill
// registers on x86-64 and measured 35% slower.) The loop is bound by the
// length of those chains (and, load, shift per symbol; the reload every
// fifth symbol), not by the number of instructions: decoding four streams at
// a time runs at 0.55x, while one table load per code instead of two, or
// fewer stores (a row assembled in a register), measured slower on Zen 5.
// So what counts is latency: a sentinel in a fixed bit and a bounds check
// per batch of iterations rather than per iteration (14 %), byte tables
// indexed without a scale and the sentinel set off the reload's chain (4 %),
// and an and with a mask rather than BMI2's bzhi, which issues on fewer
// ports (2 %).

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "absl/strings/str_format.h"
#include "base/endian.h"
#include "codec/entropy.h"
#include "tqm/status.h"

namespace tqm {
namespace {

using entropy_internal::kHuffmanMaxLength;
using entropy_internal::kHuffmanShortCodeSlack;
using entropy_internal::kHuffmanStreams;
using entropy_internal::kModeCoded;
using entropy_internal::kModeConstant;
using entropy_internal::GetVarint;
using entropy_internal::kModeRaw;
using entropy_internal::PutVarint;

absl::Status Corrupt(const std::string& what) {
  return absl::DataLossError("huffman: " + what);
}

// Bytes with their bits in reverse order.
struct ByteReversal {
  uint8_t v[256];
  constexpr ByteReversal() : v() {
    for (int i = 0; i < 256; ++i) {
      int r = 0;
      for (int b = 0; b < 8; ++b) r |= ((i >> b) & 1) << (7 - b);
      v[i] = static_cast<uint8_t>(r);
    }
  }
};
constexpr ByteReversal kByteReversal;

// The low `len` (<= 16) bits of `code` in reverse order. Two table loads: ~4 %
// faster decoding of stories260K's small chunks than four mask-and-shift
// steps, because the decode table build reverses one code per symbol.
inline uint32_t Reverse(uint32_t code, int len) {
  const uint32_t r = uint32_t{kByteReversal.v[code & 0xff]} << 8 |
                     kByteReversal.v[(code >> 8) & 0xff];
  return r >> (16 - len);
}

// Canonical codes for `lengths`, bit-reversed for LSB-first streams.
void CanonicalCodes(const uint8_t lengths[256], uint32_t codes[256]) {
  int count[kHuffmanMaxLength + 2] = {};
  for (int s = 0; s < 256; ++s) count[lengths[s]]++;
  count[0] = 0;
  uint32_t next[kHuffmanMaxLength + 2] = {};
  uint32_t code = 0;
  for (int l = 1; l <= kHuffmanMaxLength; ++l) {
    code = (code + count[l - 1]) << 1;
    next[l] = code;
  }
  for (int s = 0; s < 256; ++s) {
    codes[s] = lengths[s] ? Reverse(next[lengths[s]]++, lengths[s]) : 0;
  }
}

// Decoder table: for each value of the next `log` bits, the length of the
// code they start with and its symbol. Two byte loads per symbol, but no ALU
// work to unpack an entry; two byte arrays rather than one array of pairs,
// because a load indexed without a scale returns sooner (measured 2-3 %
// faster decoding on Zen 5), and the length's load is on the critical path.
struct DecodeTable {
  int log = 0;
  uint8_t len[1 << kHuffmanMaxLength];
  uint8_t sym[1 << kHuffmanMaxLength];
};

// masks[l][w] has bit i set when symbol 64 * w + i has code length l, and
// count[l] is the number of such symbols, for l = 1 .. kHuffmanMaxLength.
// Sets of symbols rather than counters: counting `count[len[s]]++` over 256
// symbols is a chain of loads and stores through the same few counters,
// which cost more than the rest of the table build.
using LengthMasks = uint64_t[kHuffmanMaxLength + 1][4];

#if defined(__SSE2__)
// Sixteen 16-byte compares per length; a count per byte lane, summed by psadbw.
void MaskByLengthSse2(const uint8_t len[256], LengthMasks masks,
                      int count[kHuffmanMaxLength + 1]) {
  __m128i v[16];
  for (int b = 0; b < 16; ++b) {
    v[b] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(len + 16 * b));
  }
  for (int l = 1; l <= kHuffmanMaxLength; ++l) {
    const __m128i want = _mm_set1_epi8(static_cast<char>(l));
    __m128i hits = _mm_setzero_si128();  // per byte lane, at most 16
    for (int w = 0; w < 4; ++w) {
      uint64_t m = 0;
      for (int b = 0; b < 4; ++b) {
        const __m128i eq = _mm_cmpeq_epi8(v[4 * w + b], want);
        hits = _mm_sub_epi8(hits, eq);
        m |= uint64_t{static_cast<uint32_t>(_mm_movemask_epi8(eq))} << (16 * b);
      }
      masks[l][w] = m;
    }
    const __m128i sums = _mm_sad_epu8(hits, _mm_setzero_si128());
    count[l] = _mm_cvtsi128_si32(sums) + _mm_cvtsi128_si32(_mm_srli_si128(sums, 8));
  }
}
#endif

// `portable` takes the plain C++ loop on every CPU (the decoders' Isa::kPortable,
// so that the tests cover it).
void MaskByLength(const uint8_t len[256], bool portable, LengthMasks masks,
                  int count[kHuffmanMaxLength + 1]) {
#if defined(__SSE2__)
  if (!portable) {
    MaskByLengthSse2(len, masks, count);
    return;
  }
#endif
  std::memset(masks, 0, sizeof(LengthMasks));
  int c[4][kHuffmanMaxLength + 1] = {};  // four counter sets: shorter chains
  for (int s = 0; s < 256; ++s) {
    masks[len[s]][s >> 6] |= uint64_t{1} << (s & 63);
    ++c[s & 3][len[s]];
  }
  for (int l = 1; l <= kHuffmanMaxLength; ++l) count[l] = c[0][l] + c[1][l] + c[2][l] + c[3][l];
}

absl::Status BuildDecodeTable(const uint32_t lengths[256], bool portable, DecodeTable* t) {
  uint8_t len[256];
  for (int s = 0; s < 256; ++s) len[s] = static_cast<uint8_t>(lengths[s]);  // <= 12
  LengthMasks masks;
  int count[kHuffmanMaxLength + 1] = {};
  MaskByLength(len, portable, masks, count);
  uint32_t kraft = 0;
  int distinct = 0, min_len = 0, max_len = 0;
  for (int l = 1; l <= kHuffmanMaxLength; ++l) {
    kraft += static_cast<uint32_t>(count[l]) << (kHuffmanMaxLength - l);
    distinct += count[l];
    if (count[l] != 0) {
      if (min_len == 0) min_len = l;
      max_len = l;
    }
  }
  if (distinct < 2 || kraft != (1u << kHuffmanMaxLength)) {
    return Corrupt(absl::StrFormat(
        "code lengths of %d symbols do not form a complete prefix code", distinct));
  }
  // Codes are read first bit first, so the entries of the codes of length
  // <= L repeat with period 2^L: the table for L + 1 bits is the one for L
  // bits twice over, plus one entry per code of length L + 1. Doubling
  // writes 2^log entries with memcpy instead of one loop per symbol (which
  // cost more than decoding a 4 KiB chunk). Canonical codes of one length go
  // to its symbols in increasing order: the mask's bits, lowest first. Below
  // the shortest length there are no codes, so the table starts there, empty.
  t->log = max_len;
  const size_t empty = size_t{1} << (min_len - 1);
  std::memset(t->len, 0, empty);  // all overwritten: the code is complete
  std::memset(t->sym, 0, empty);
  uint32_t code = 0;  // the next canonical code of length l
  for (int l = min_len; l <= max_len; ++l) {
    const size_t half = size_t{1} << (l - 1);
    std::memcpy(t->len + half, t->len, half);
    std::memcpy(t->sym + half, t->sym, half);
    code = (code + count[l - 1]) << 1;
    uint32_t c = code;
    for (int w = 0; w < 4; ++w) {
      for (uint64_t m = masks[l][w]; m != 0; m &= m - 1) {
        const int s = 64 * w + __builtin_ctzll(m);
        const uint32_t at = Reverse(c++, l);
        t->len[at] = static_cast<uint8_t>(l);
        t->sym[at] = static_cast<uint8_t>(s);
      }
    }
  }
  return absl::OkStatus();
}

struct Streams {
  size_t start[kHuffmanStreams];  // byte offset in the input
  size_t size[kHuffmanStreams];
  size_t count[kHuffmanStreams];  // symbols
};

// Peeks 64 bits at bit position `bp`, reading zeros past `size`.
inline uint64_t PeekSafe(const uint8_t* base, size_t size, uint64_t bp) {
  size_t byte = bp >> 3;
  uint64_t v = 0;
  if (byte + 8 <= size) {
    v = LoadLE64(base + byte);
  } else {
    for (size_t i = 0; byte + i < size && i < 8; ++i)
      v |= uint64_t{base[byte + i]} << (8 * i);
  }
  return v >> (bp & 7);
}

inline int Clz64(uint64_t v) { return __builtin_clzll(v); }  // v != 0

// The inner loop: kPerLoad symbols of each stream per iteration. The
// streams are independent dependency chains (a table load and a shift per
// symbol); decoding symbol i of every stream before symbol i + 1 of any
// keeps the chains side by side, so the core overlaps them without a deep
// window. An iteration advances a stream by at most kPerLoad * log bits, so
// the input bound is checked once per batch of iterations that provably stay
// inside it rather than in every iteration (the check was ~5 % of the ops).
template <int kPerLoad>
__attribute__((always_inline)) inline size_t DecodeFast(const DecodeTable& t,
                                                        const uint8_t* base, size_t size,
                                                        const Streams& st,
                                                        uint64_t bp[kHuffmanStreams],
                                                        uint8_t* out) {
  constexpr int kN = kHuffmanStreams;
  // A load gives >= 57 bits; the codes of an iteration reach bit 54 at most.
  static_assert(kPerLoad * (kPerLoad == 5 ? 11 : kHuffmanMaxLength) <= 56, "");
  const uint64_t log = t.log, mask = (uint64_t{1} << log) - 1;
  const uint64_t step = kPerLoad * log;  // most bits an iteration consumes
  const size_t limit = st.count[kN - 1];  // the smallest
  if (size < 8) return 0;
  const uint64_t max_bp = (static_cast<uint64_t>(size) - 8) * 8;
  uint64_t p[kN];
  std::copy(bp, bp + kN, p);
  size_t j = 0;
  for (;;) {
    // Every load must stay inside the input, whatever the streams hold:
    // iteration i of this batch starts at or below hi + i * step.
    uint64_t hi = p[0];
    for (int k = 1; k < kN; ++k) hi = std::max(hi, p[k]);
    if (hi > max_bp) break;
    const size_t iters = std::min<uint64_t>((max_bp - hi) / step + 1, (limit - j) / kPerLoad);
    if (iters == 0) break;
    uint8_t* o = out + j * kN;
    j += iters * kPerLoad;
    for (size_t n = iters; n > 0; --n, o += kPerLoad * kN) {
      uint64_t bits[kN];
#pragma GCC unroll 16
      for (int k = 0; k < kN; ++k) {
        const unsigned r = p[k] & 7;
        bits[k] = LoadLE64(base + (p[k] >> 3)) >> r;
      }
#pragma GCC unroll 8
      for (int i = 0; i < kPerLoad; ++i) {
#pragma GCC unroll 16
        for (int k = 0; k < kN; ++k) {
          const uint64_t idx = bits[k] & mask;
          // A sentinel in bit 63, above the bits the codes can reach
          // (0..54), tells once they are consumed how many they took: one
          // count-leading-zeros per load instead of an add per symbol. Set
          // here, beside the table loads, not on the reload's chain.
          if (i == 0) bits[k] |= uint64_t{1} << 63;
          // Volatile only to keep GCC from merging the eight byte stores of a
          // row into one assembled with shifts and ors (measured slower:
          // more ops per symbol).
          *static_cast<volatile uint8_t*>(o + i * kN + k) = t.sym[idx];
          bits[k] >>= t.len[idx];
        }
      }
#pragma GCC unroll 16
      for (int k = 0; k < kN; ++k) p[k] += Clz64(bits[k]);
    }
  }
  std::copy(p, p + kN, bp);
  return j;
}

template <int kPerLoad>
__attribute__((always_inline)) inline absl::Status DecodeStreams(
    const DecodeTable& t, absl::Span<const uint8_t> in, const Streams& st, uint8_t* out) {
  uint64_t bp[kHuffmanStreams];
  for (int k = 0; k < kHuffmanStreams; ++k) bp[k] = uint64_t{st.start[k]} * 8;
  const size_t done = DecodeFast<kPerLoad>(t, in.data(), in.size(), st, bp, out);
  const uint64_t mask = (uint64_t{1} << t.log) - 1;
  for (int k = 0; k < kHuffmanStreams; ++k) {
    uint64_t pos = bp[k];
    const uint64_t end_bits = uint64_t{st.start[k] + st.size[k]} * 8;
    for (size_t j = done; j < st.count[k]; ++j) {
      if (pos > end_bits) break;  // overran its stream: reported below
      const uint64_t idx = PeekSafe(in.data(), in.size(), pos) & mask;
      out[j * kHuffmanStreams + k] = t.sym[idx];
      pos += t.len[idx];
    }
    // The stream must end in its last byte, with zero padding.
    if (pos > end_bits || (st.size[k] > 0 && pos <= end_bits - 8) ||
        (st.size[k] == 0 && pos != end_bits)) {
      return Corrupt(absl::StrFormat("stream %d does not end where its size says", k));
    }
    if (pos < end_bits && (in[(end_bits >> 3) - 1] >> (pos & 7)) != 0) {
      return Corrupt(absl::StrFormat("stream %d has nonzero padding", k));
    }
  }
  return absl::OkStatus();
}

absl::Status DecodePortable(const DecodeTable& t, absl::Span<const uint8_t> in,
                            const Streams& st, uint8_t* out) {
  return t.log <= 11 ? DecodeStreams<5>(t, in, st, out)
                     : DecodeStreams<4>(t, in, st, out);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(TQM_ENTROPY_NO_ASM)
#define TQM_HUFFMAN_BMI2 1
// The same loop, inlined here and compiled for BMI2: shifts by a register
// without %cl (shrx) and lzcnt for the sentinel.
__attribute__((target("bmi2,lzcnt"))) absl::Status DecodeBmi2(
    const DecodeTable& t, absl::Span<const uint8_t> in, const Streams& st, uint8_t* out) {
  return t.log <= 11 ? DecodeStreams<5>(t, in, st, out)
                     : DecodeStreams<4>(t, in, st, out);
}
#endif

}  // namespace

namespace entropy_internal {

namespace {

// Appends the coded form of `in` with code `lengths` (complete, non-zero for
// every byte value of `in`), or its raw form when that is not smaller.
void EncodeWithLengths(absl::Span<const uint8_t> in, const uint8_t lengths[256],
                       std::string* out) {
  const size_t n = in.size();
  uint32_t codes[256];
  CanonicalCodes(lengths, codes);
  std::string streams[kHuffmanStreams];
  for (int k = 0; k < kHuffmanStreams; ++k) {
    std::string& s = streams[k];
    s.reserve(n / kHuffmanStreams * kHuffmanMaxLength / 8 + 8);
    uint64_t acc = 0;
    int fill = 0;
    for (size_t i = k; i < n; i += kHuffmanStreams) {
      acc |= uint64_t{codes[in[i]]} << fill;
      fill += lengths[in[i]];
      if (fill >= 32) {
        char b[4];
        std::memcpy(b, &acc, 4);  // little-endian host
        s.append(b, 4);
        acc >>= 32;
        fill -= 32;
      }
    }
    for (; fill > 0; fill -= 8, acc >>= 8) s.push_back(static_cast<char>(acc & 0xff));
  }
  std::string coded;
  coded.push_back(static_cast<char>(kModeCoded));
  uint32_t values[256];
  for (int s = 0; s < 256; ++s) values[s] = lengths[s];
  WriteSymbolValues(values, kHuffmanMaxLength, &coded);
  size_t total = 0;
  for (int k = 0; k < kHuffmanStreams; ++k) {
    if (k + 1 < kHuffmanStreams)
      PutVarint(static_cast<uint32_t>(streams[k].size()), &coded);
    total += streams[k].size();
  }
  if (coded.size() + total >= n + 1) {  // incompressible: the bytes verbatim
    out->push_back(static_cast<char>(kModeRaw));
    out->append(reinterpret_cast<const char*>(in.data()), n);
    return;
  }
  out->append(coded);
  for (int k = 0; k < kHuffmanStreams; ++k) out->append(streams[k]);
}

absl::Status CheckInputSize(absl::Span<const uint8_t> in) {
  if (in.size() <= kEntropyMaxInput) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "huffman: input of %d bytes exceeds the limit of %d", in.size(), kEntropyMaxInput));
}

// Bits of coding `counts` with `lengths`.
uint64_t CodedBits(const uint32_t counts[256], const uint8_t lengths[256]) {
  uint64_t bits = 0;
  for (int s = 0; s < 256; ++s) bits += uint64_t{counts[s]} * lengths[s];
  return bits;
}

}  // namespace

absl::Status EncodeHuffmanWithLimit(absl::Span<const uint8_t> in, int max_length,
                                    std::string* out) {
  if (max_length == 0) return EncodeHuffmanAndShortCodes(in, out, nullptr);
  TQM_RETURN_IF_ERROR(CheckInputSize(in));
  if (max_length < 8 || max_length > kHuffmanMaxLength) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "huffman: length limit %d outside [8, %d]", max_length, kHuffmanMaxLength));
  }
  uint32_t counts[256];
  if (EncodeSimpleModes(in, counts, out)) return absl::OkStatus();
  uint8_t lengths[256];
  LimitedHuffmanLengths(counts, max_length, lengths);
  EncodeWithLengths(in, lengths, out);
  return absl::OkStatus();
}

absl::Status EncodeHuffmanAndShortCodes(absl::Span<const uint8_t> in, std::string* out,
                                        std::string* short_out) {
  TQM_RETURN_IF_ERROR(CheckInputSize(in));
  uint32_t counts[256];
  if (EncodeSimpleModes(in, counts, out)) return absl::OkStatus();
  // 11-bit codes decode five to a load instead of four (~15% faster);
  // take them unless they cost noticeably more than 12-bit ones.
  uint8_t len11[256], len12[256];
  LimitedHuffmanLengths(counts, 11, len11);
  LimitedHuffmanLengths(counts, 12, len12);
  const uint64_t bits11 = CodedBits(counts, len11), bits12 = CodedBits(counts, len12);
  if (static_cast<double>(bits11) <= bits12 * (1 + kHuffmanShortCodeSlack)) {
    EncodeWithLengths(in, len11, out);
    return absl::OkStatus();
  }
  EncodeWithLengths(in, len12, out);
  if (short_out != nullptr) EncodeWithLengths(in, len11, short_out);
  return absl::OkStatus();
}

absl::Status DecodeHuffmanWith(Isa isa, absl::Span<const uint8_t> in,
                               absl::Span<uint8_t> out) {
  const size_t n = out.size();
  if (in.empty()) return Corrupt("empty input");
  bool done = false;
  absl::Status simple = DecodeSimpleModes("huffman", in, out, &done);
  if (!simple.ok() || done) return simple;
  if (n > kEntropyMaxInput)
    return absl::ResourceExhaustedError("huffman: output too large");
  size_t pos = 1;
  uint32_t lengths[256];
  absl::Status s = ReadSymbolValues(in, &pos, kHuffmanMaxLength, "huffman", lengths);
  if (!s.ok()) return s;
  DecodeTable table;
  s = BuildDecodeTable(lengths, isa == Isa::kPortable, &table);
  if (!s.ok()) return s;
  Streams st;
  uint64_t sizes_total = 0;  // 64-bit: no overflow on any platform
  for (int k = 0; k + 1 < kHuffmanStreams; ++k) {
    uint32_t v;
    if (!GetVarint(in, &pos, &v))
      return Corrupt(absl::StrFormat("size of stream %d cut off", k));
    st.size[k] = v;
    sizes_total += v;  // < 8 * 2^32
  }
  if (sizes_total > in.size() - pos) return Corrupt("stream sizes exceed the input");
  st.size[kHuffmanStreams - 1] = in.size() - pos - sizes_total;
  for (int k = 0; k < kHuffmanStreams; ++k) {
    st.start[k] = pos;
    pos += st.size[k];
    st.count[k] = n > static_cast<size_t>(k) ? (n - 1 - k) / kHuffmanStreams + 1 : 0;
  }
#ifdef TQM_HUFFMAN_BMI2
  if (isa != Isa::kPortable && HaveBmi2()) return DecodeBmi2(table, in, st, out.data());
#endif
  return DecodePortable(table, in, st, out.data());
}

}  // namespace entropy_internal

absl::Status EncodeHuffman(absl::Span<const uint8_t> in, std::string* out) {
  return entropy_internal::EncodeHuffmanAndShortCodes(in, out, nullptr);
}

absl::Status DecodeHuffman(absl::Span<const uint8_t> in, absl::Span<uint8_t> out) {
  return entropy_internal::DecodeHuffmanWith(entropy_internal::Isa::kAuto, in, out);
}

}  // namespace tqm
