// Pieces shared by the order-0 entropy codecs (entropy.h): byte histograms,
// the empirical entropy, the compact symbol table block, frequency
// normalization for rANS and length-limited code lengths for Huffman.
//
// The symbol table block codes each value as the zigzag difference from the
// previous symbol's value with a Rice code whose parameter follows a running
// mean of recent magnitudes (as in LOCO-I). Weight histograms are smooth, so
// the differences are small: a 64 KiB chunk of ~180 distinct bytes costs
// about 100 bytes of table, well under 0.5% of its coded size.

#include "codec/entropy.h"

#if defined(__x86_64__) && defined(__GNUC__)
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/cpu.h"

namespace tqm {
namespace entropy_internal {
namespace {

// Unary prefixes longer than this escape to a raw value.
constexpr int kRiceEscape = 16;
constexpr int kRawValueBits = 16;  // > bits of zigzag(+-max_value) for max_value < 2^15

class BitWriter {
 public:
  explicit BitWriter(std::string* out) : out_(out) {}
  // Appends the low `n` (<= 32) bits of `v`, least significant first.
  void Put(uint32_t v, int n) {
    acc_ |= static_cast<uint64_t>(v & ((uint64_t{1} << n) - 1)) << fill_;
    fill_ += n;
    while (fill_ >= 8) {
      out_->push_back(static_cast<char>(acc_ & 0xff));
      acc_ >>= 8;
      fill_ -= 8;
    }
  }
  void Flush() {
    if (fill_ > 0) out_->push_back(static_cast<char>(acc_ & 0xff));
    acc_ = 0;
    fill_ = 0;
  }

 private:
  std::string* out_;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

// Bounds-checked LSB-first bit reader over in[pos, end).
class BitReader {
 public:
  BitReader(absl::Span<const uint8_t> in, size_t pos) : in_(in), pos_(pos) {}
  // Reads `n` (<= 32) bits; false when the input ends first.
  bool Get(int n, uint32_t* v) {
    while (fill_ < n) {
      if (pos_ >= in_.size()) return false;
      acc_ |= static_cast<uint64_t>(in_[pos_++]) << fill_;
      fill_ += 8;
    }
    *v = static_cast<uint32_t>(acc_ & ((uint64_t{1} << n) - 1));
    acc_ >>= n;
    fill_ -= n;
    return true;
  }
  // Reads ones up to the first zero (consumed too) and sets *q to their
  // number, or reads `max` ones and sets *q = max; false when the input ends
  // first. Same bits consumed as Get(1) in a loop, a byte at a time.
  bool GetOnes(uint32_t max, uint32_t* q) {
    uint32_t ones = 0;
    for (;;) {
      if (fill_ == 0) {
        if (pos_ >= in_.size()) return false;
        acc_ = in_[pos_++];
        fill_ = 8;
      }
      const uint64_t zeros = ~acc_ & ((uint64_t{1} << fill_) - 1);
      const uint32_t run = zeros != 0 ? static_cast<uint32_t>(__builtin_ctzll(zeros))
                                      : static_cast<uint32_t>(fill_);
      if (ones + run >= max) {
        Skip(static_cast<int>(max - ones));
        *q = max;
        return true;
      }
      if (zeros != 0) {
        Skip(static_cast<int>(run) + 1);
        *q = ones + run;
        return true;
      }
      ones += run;
      Skip(fill_);
    }
  }
  // Byte position after the last byte any bit was read from.
  size_t pos() const { return pos_; }
  // Whether the unread bits of the last byte read are all zero.
  bool PaddingIsZero() const { return acc_ == 0; }

 private:
  void Skip(int n) {  // n <= fill_ < 40
    acc_ >>= n;
    fill_ -= n;
  }
  absl::Span<const uint8_t> in_;
  size_t pos_;
  uint64_t acc_ = 0;
  int fill_ = 0;
};

// The adaptive Rice parameter: smallest k with n * 2^k >= sum.
struct RiceModel {
  uint32_t sum = 4;
  uint32_t n = 1;
  int K() const {
    int k = 0;
    while ((n << k) < sum && k < 15) ++k;
    return k;
  }
  void Update(uint32_t u) {
    sum += u;
    if (++n == 8) {
      sum = (sum + 1) >> 1;
      n >>= 1;
    }
  }
};

inline uint32_t ZigZag(int32_t d) {
  return (static_cast<uint32_t>(d) << 1) ^ static_cast<uint32_t>(d >> 31);
}
inline int32_t UnZigZag(uint32_t u) {
  return static_cast<int32_t>(u >> 1) ^ -static_cast<int32_t>(u & 1);
}

}  // namespace

void Histogram(absl::Span<const uint8_t> in, uint32_t counts[256]) {
  // Four sub-histograms so that runs of one byte value do not serialize on
  // the same counter.
  uint32_t c[4][256] = {};
  const uint8_t* p = in.data();
  size_t n = in.size(), i = 0;
  for (; i + 4 <= n; i += 4) {
    ++c[0][p[i]];
    ++c[1][p[i + 1]];
    ++c[2][p[i + 2]];
    ++c[3][p[i + 3]];
  }
  for (; i < n; ++i) ++c[0][p[i]];
  for (int s = 0; s < 256; ++s) counts[s] = c[0][s] + c[1][s] + c[2][s] + c[3][s];
}

void WriteSymbolValues(const uint32_t values[256], uint32_t max_value, std::string* out) {
  int lo = 0, hi = 255;
  while (lo < 255 && values[lo] == 0) ++lo;
  while (hi > lo && values[hi] == 0) --hi;
  out->push_back(static_cast<char>(lo));
  out->push_back(static_cast<char>(hi));
  BitWriter bw(out);
  RiceModel model;
  int32_t prev = 0;
  for (int s = lo; s <= hi; ++s) {
    int32_t v = static_cast<int32_t>(std::min(values[s], max_value));
    uint32_t u = ZigZag(v - prev);
    prev = v;
    int k = model.K();
    uint32_t q = u >> k;
    if (q < kRiceEscape) {
      bw.Put((1u << q) - 1, static_cast<int>(q) + 1);  // q ones, then a zero
      bw.Put(u, k);
    } else {
      bw.Put((1u << kRiceEscape) - 1, kRiceEscape);
      bw.Put(u, kRawValueBits);
    }
    model.Update(u);
  }
  bw.Flush();
}

absl::Status ReadSymbolValues(absl::Span<const uint8_t> in, size_t* pos,
                              uint32_t max_value, const char* what,
                              uint32_t values[256]) {
  auto error = [&](const char* why, size_t at) {
    return absl::DataLossError(
        absl::StrFormat("%s symbol table: %s at byte %d", what, why, at));
  };
  std::fill(values, values + 256, 0u);
  if (*pos > in.size() || in.size() - *pos < 2) return error("cut off", *pos);
  int lo = in[*pos], hi = in[*pos + 1];
  if (lo > hi)
    return error(absl::StrFormat("lowest symbol %d > highest %d", lo, hi).c_str(), *pos);
  BitReader br(in, *pos + 2);
  RiceModel model;
  int32_t prev = 0;
  for (int s = lo; s <= hi; ++s) {
    int k = model.K();
    uint32_t q;
    if (!br.GetOnes(kRiceEscape, &q)) return error("cut off", br.pos());
    uint32_t u, low = 0;
    if (q < kRiceEscape) {
      if (!br.Get(k, &low)) return error("cut off", br.pos());
      if (q > (0xffffffffu >> k)) return error("value out of range", br.pos());
      u = (q << k) | low;
    } else {
      if (!br.Get(kRawValueBits, &u)) return error("cut off", br.pos());
    }
    int64_t v = static_cast<int64_t>(prev) + UnZigZag(u);
    if (v < 0 || v > static_cast<int64_t>(max_value)) {
      return error(
          absl::StrFormat("symbol %d has value %d, outside [0, %d]", s, v, max_value)
              .c_str(),
          br.pos());
    }
    values[s] = static_cast<uint32_t>(v);
    prev = static_cast<int32_t>(v);
    model.Update(u);
  }
  if (!br.PaddingIsZero()) return error("nonzero padding", br.pos());
  *pos = br.pos();
  return absl::OkStatus();
}

void NormalizeFrequencies(const uint32_t counts[256], uint64_t total, int precision,
                          uint32_t freqs[256]) {
  const int64_t target = int64_t{1} << precision;
  // Start from the proportional share (at least 1), then move single units
  // between symbols while that lowers the coded size. The cost is convex and
  // separable in the frequencies, so when no single move helps the
  // allocation is optimal.
  int64_t sum = 0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s] == 0) {
      freqs[s] = 0;
      continue;
    }
    uint64_t f = static_cast<uint64_t>(counts[s]) * static_cast<uint64_t>(target) / total;
    freqs[s] = static_cast<uint32_t>(std::max<uint64_t>(1, f));
    sum += freqs[s];
  }
  // gain[s]: bits saved by freqs[s] + 1; loss[s]: bits lost by freqs[s] - 1.
  double gain[256], loss[256];
  auto update = [&](int s) {
    gain[s] = counts[s] * std::log2((freqs[s] + 1.0) / freqs[s]);
    loss[s] =
        freqs[s] <= 1 ? HUGE_VAL : counts[s] * std::log2(freqs[s] / (freqs[s] - 1.0));
  };
  for (int s = 0; s < 256; ++s) {
    if (counts[s] != 0) {
      update(s);
    } else {
      gain[s] = -1;
      loss[s] = HUGE_VAL;
    }
  }
  auto best_gain = [&]() {
    return static_cast<int>(std::max_element(gain, gain + 256) - gain);
  };
  auto least_loss = [&]() {
    return static_cast<int>(std::min_element(loss, loss + 256) - loss);
  };
  while (sum < target) {
    int s = best_gain();
    ++freqs[s];
    ++sum;
    update(s);
  }
  while (sum > target) {
    int s = least_loss();  // a symbol > 1 exists: target >= number of symbols
    --freqs[s];
    --sum;
    update(s);
  }
  for (int iter = 0; iter < 4096; ++iter) {
    int up = best_gain(), down = least_loss();
    if (up == down || !(gain[up] > loss[down] * (1 + 1e-12))) break;
    ++freqs[up];
    --freqs[down];
    update(up);
    update(down);
  }
}

void LimitedHuffmanLengths(const uint32_t counts[256], int max_length,
                           uint8_t lengths[256]) {
  // Package-merge (Larmore & Hirschberg). Leaves sorted by weight (ties by
  // symbol); level l (from the deepest) is the merge of the leaves with the
  // pairwise packages of level l+1, a leaf first when weights tie. Taking the
  // first 2n-2 items of the top list, a leaf's code length is the number of
  // lists in which it is among the items taken. The lists live in two flat
  // arrays (weights, leaf flags) and the merge picks with conditional moves:
  // the writer runs this twice per chunk, and the branchy version with a
  // growing vector per list was a sixth of packing small tensors.
  uint64_t keys[256];
  int n = 0;
  for (int s = 0; s < 256; ++s) {
    lengths[s] = 0;
    if (counts[s] != 0) keys[n++] = uint64_t{counts[s]} << 8 | static_cast<uint64_t>(s);
  }
  if (n < 2) return;
  std::sort(keys, keys + n);
  int syms[256];
  uint64_t leaf[256];
  for (int i = 0; i < n; ++i) {
    syms[i] = static_cast<int>(keys[i] & 0xff);
    leaf[i] = keys[i] >> 8;
  }
  // A list holds at most n leaves and n packages.
  const size_t cap = 2 * static_cast<size_t>(n);
  std::vector<uint64_t> weight(static_cast<size_t>(max_length) * cap);
  std::vector<uint8_t> is_leaf(static_cast<size_t>(max_length) * cap);
  std::vector<size_t> size(max_length);
  const size_t un = static_cast<size_t>(n);
  {
    uint64_t* w = &weight[(max_length - 1) * cap];
    uint8_t* f = &is_leaf[(max_length - 1) * cap];
    for (size_t i = 0; i < un; ++i) {
      w[i] = leaf[i];
      f[i] = 1;
    }
    size[max_length - 1] = un;
  }
  for (int l = max_length - 2; l >= 0; --l) {
    const uint64_t* below = &weight[(l + 1) * cap];
    const size_t packages = size[l + 1] / 2;
    uint64_t* w = &weight[l * cap];
    uint8_t* f = &is_leaf[l * cap];
    size_t a = 0, b = 0, k = 0;
    while (a < un && b < packages) {
      const uint64_t pw = below[2 * b] + below[2 * b + 1];
      const uint64_t lw = leaf[a];
      const bool take_leaf = lw <= pw;
      w[k] = take_leaf ? lw : pw;
      f[k] = take_leaf;
      a += take_leaf;
      b += !take_leaf;
      ++k;
    }
    for (; a < un; ++a, ++k) {
      w[k] = leaf[a];
      f[k] = 1;
    }
    for (; b < packages; ++b, ++k) {
      w[k] = below[2 * b] + below[2 * b + 1];
      f[k] = 0;
    }
    size[l] = k;
  }
  size_t take = 2 * un - 2;
  for (int l = 0; l < max_length && take > 0; ++l) {
    const uint8_t* f = &is_leaf[l * cap];
    size_t leaves = 0;
    for (size_t i = 0; i < take; ++i) leaves += f[i];
    for (size_t i = 0; i < leaves; ++i) ++lengths[syms[i]];
    take = 2 * (take - leaves);
  }
}

void PutVarint(uint32_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

bool GetVarint(absl::Span<const uint8_t> in, size_t* pos, uint32_t* v) {
  uint32_t r = 0;
  for (int shift = 0; shift < 35; shift += 7) {
    if (*pos >= in.size()) return false;
    uint8_t b = in[(*pos)++];
    if (shift == 28 && b > 0x0f) return false;
    r |= static_cast<uint32_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = r;
      return true;
    }
  }
  return false;
}

// The BMI2 decoders also use LZCNT; cpu::HasAvx2 checks both (and the
// AVX2 level of TQM_CPU).
bool HaveBmi2() { return cpu::HasAvx2(); }

bool EncodeSimpleModes(absl::Span<const uint8_t> in, uint32_t counts[256],
                       std::string* out) {
  if (in.empty()) {
    out->push_back(static_cast<char>(kModeRaw));
    return true;
  }
  Histogram(in, counts);
  int distinct = 0;
  for (int s = 0; s < 256; ++s) distinct += counts[s] != 0;
  if (distinct != 1) return false;
  out->push_back(static_cast<char>(kModeConstant));
  out->push_back(static_cast<char>(in[0]));
  return true;
}

absl::Status DecodeSimpleModes(const char* codec, absl::Span<const uint8_t> in,
                               absl::Span<uint8_t> out, bool* done) {
  const size_t n = out.size();
  auto corrupt = [codec](const std::string& what) {
    return absl::DataLossError(absl::StrFormat("%s: %s", codec, what));
  };
  *done = true;
  const uint8_t mode = in[0];
  if (mode == kModeRaw) {
    if (in.size() - 1 != n) {
      return corrupt(
          absl::StrFormat("raw chunk holds %d bytes, expected %d", in.size() - 1, n));
    }
    if (n != 0) std::memcpy(out.data(), in.data() + 1, n);
    return absl::OkStatus();
  }
  if (mode == kModeConstant) {
    if (in.size() != 2 || n == 0) return corrupt("malformed constant chunk");
    std::memset(out.data(), in[1], n);
    return absl::OkStatus();
  }
  if (mode != kModeCoded) return corrupt(absl::StrFormat("unknown mode %d", mode));
  if (n == 0) return corrupt("coded chunk for empty output");
  *done = false;
  return absl::OkStatus();
}

}  // namespace entropy_internal

double Order0EntropyBits(absl::Span<const uint8_t> data) {
  uint32_t counts[256];
  entropy_internal::Histogram(data, counts);
  double n = static_cast<double>(data.size()), bits = 0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s] != 0) bits += counts[s] * std::log2(n / counts[s]);
  }
  return bits;
}

}  // namespace tqm
