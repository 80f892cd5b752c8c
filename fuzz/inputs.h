// How fuzz_chunk and fuzz_roundtrip read their input bytes, shared with the
// seed-corpus generator (make_corpus.cc) so that seeds and harnesses agree.
// Every parse accepts any byte string: short inputs read as zeros.

#ifndef TQM_FUZZ_INPUTS_H_
#define TQM_FUZZ_INPUTS_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "tqm/format.h"
#include "tqm/metadata.h"
#include "tqm/writer.h"

namespace tqm_fuzz {

// Reads input bytes front to back; past the end it yields zeros.
class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint32_t LE(int bytes) {
    uint32_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint32_t{U8()} << (8 * i);
    return v;
  }
  size_t remaining() const { return size_ - pos_; }
  absl::Span<const uint8_t> Rest() const {
    return absl::Span<const uint8_t>(data_ + pos_, size_ - pos_);
  }
  void Skip(size_t n) { pos_ += n < remaining() ? n : remaining(); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// ---- fuzz_chunk ----
//   u8 codec | u8 flags | u16 table size N | u24 decoded size (& 0x1FFFF) |
//   u32 seed | [flags & 1: table entries, 4 bytes each, as many of N as fit] |
//   payload (the rest).
// Without flag 1 the table is generated from the seed: entry i =
// i * 0x9E3779B1 ^ seed.
inline constexpr size_t kChunkHeader = 11;
inline constexpr uint32_t kMaxFuzzDecoded = 0x1FFFF;

struct ChunkInput {
  uint8_t codec = 0;
  std::vector<uint32_t> table;
  uint32_t decoded_size = 0;
  absl::Span<const uint8_t> payload;
};

inline uint32_t GeneratedEntry(uint32_t i, uint32_t seed) { return i * 0x9E3779B1u ^ seed; }

inline ChunkInput ParseChunkInput(const uint8_t* data, size_t size) {
  ByteReader r(data, size);
  ChunkInput in;
  in.codec = r.U8();
  const uint8_t flags = r.U8();
  uint32_t n = r.LE(2);
  in.decoded_size = r.LE(3) & kMaxFuzzDecoded;
  const uint32_t seed = r.LE(4);
  if (flags & 1) {
    if (n > r.remaining() / 4) n = static_cast<uint32_t>(r.remaining() / 4);
    in.table.resize(n);
    for (uint32_t i = 0; i < n; ++i) in.table[i] = r.LE(4);
  } else {
    in.table.resize(n);
    for (uint32_t i = 0; i < n; ++i) in.table[i] = GeneratedEntry(i, seed);
  }
  in.payload = r.Rest();
  return in;
}

inline std::string MakeChunkInput(uint8_t codec, bool explicit_table, uint16_t n,
                                  uint32_t decoded_size, uint32_t seed,
                                  const std::vector<uint32_t>& table,
                                  const std::string& payload) {
  std::string s;
  s += static_cast<char>(codec);
  s += static_cast<char>(explicit_table ? 1 : 0);
  for (int i = 0; i < 2; ++i) s += static_cast<char>(n >> (8 * i));
  for (int i = 0; i < 3; ++i) s += static_cast<char>(decoded_size >> (8 * i));
  for (int i = 0; i < 4; ++i) s += static_cast<char>(seed >> (8 * i));
  if (explicit_table) {
    for (uint32_t e : table) {
      for (int i = 0; i < 4; ++i) s += static_cast<char>(e >> (8 * i));
    }
  }
  return s + payload;
}

// ---- fuzz_roundtrip ----
//   u8 options: bit 0 per-row, bit 1 quantize_all, bits 2-4 chunk size index,
//               bits 5-7 table limit index |
//   u8 codecs: bit 0 entropy codecs, bits 1-2 profile (size, balanced, speed,
//              balanced), bit 3 second pack on 2 threads, bit 4 zstd level 19
//              (else 1) |
//   u8 values: bits 0-1 mode (0: 4-value palette, 1: 16-value palette,
//              2: int8 * 2^e, 3: raw float32 bits), bits 2-7 e + 24 |
//   u8 tensor count (1 + b % 4) | u8 metadata count (b % 12) |
//   per tensor: u8 ndim (1 + b % 3), ndim x u8 dim (1 + b % 16) |
//   per metadata entry: u8 type (1 + b % 4), u8 value |
//   the rest: the value stream, read cyclically (zeros when empty).
inline constexpr uint32_t kChunkSizes[8] = {4, 8, 12, 64, 100, 256, 4096, 65536};
inline constexpr uint32_t kTableLimits[8] = {0, 1, 2, 3, 16, 255, 4096, 65535};

struct RoundtripInput {
  tqm::MemorySource source;
  tqm::PackOptions options;
  // Pack the second time with 2 encoder threads (the first uses 1).
  bool second_threaded = false;
  // The values handed to the source, for comparison after decoding.
  std::vector<std::vector<float>> values;
  std::vector<std::vector<uint64_t>> dims;
};

inline RoundtripInput ParseRoundtripInput(const uint8_t* data, size_t size) {
  ByteReader r(data, size);
  RoundtripInput in;
  const uint8_t opt = r.U8();
  in.options.granularity = (opt & 1) ? tqm::Granularity::kRow : tqm::Granularity::kTensor;
  in.options.quantize_all = (opt & 2) != 0;
  in.options.chunk_size = kChunkSizes[(opt >> 2) & 7];
  in.options.max_table_entries = kTableLimits[(opt >> 5) & 7];
  const uint8_t codecs = r.U8();
  in.options.entropy = (codecs & 1) != 0;
  constexpr tqm::Profile kProfiles[4] = {tqm::Profile::kSize, tqm::Profile::kBalanced,
                                         tqm::Profile::kSpeed, tqm::Profile::kBalanced};
  in.options.profile = kProfiles[(codecs >> 1) & 3];
  in.options.threads = 1;
  in.second_threaded = (codecs & 8) != 0;
  in.options.zstd_level = (codecs & 16) ? 19 : 1;
  const uint8_t vmode = r.U8();
  const int tensors = 1 + r.U8() % 4;
  const int metas = r.U8() % 12;
  for (int t = 0; t < tensors; ++t) {
    const int ndim = 1 + r.U8() % 3;
    std::vector<uint64_t> d;
    for (int k = 0; k < ndim; ++k) d.push_back(1 + r.U8() % 16);
    in.dims.push_back(d);
  }
  for (int m = 0; m < metas; ++m) {
    const uint8_t type = 1 + r.U8() % 4;
    const uint8_t v = r.U8();
    // One-letter keys: the smallest entries a writer can produce.
    std::string key(1, static_cast<char>('a' + m));
    switch (type) {
      case tqm::format::kMetaInt64:
        in.source.AddMeta({key, tqm::MetaValue::Int(static_cast<int8_t>(v))});
        break;
      case tqm::format::kMetaFloat64:
        in.source.AddMeta({key, tqm::MetaValue::Float(v / 4.0)});
        break;
      case tqm::format::kMetaString:
        in.source.AddMeta({key, tqm::MetaValue::String(std::string(v % 4, 'x'))});
        break;
      default:
        in.source.AddMeta({key, tqm::MetaValue::Bytes(std::string(v % 4, '\0'))});
    }
  }
  const absl::Span<const uint8_t> stream = r.Rest();
  size_t pos = 0;
  auto next = [&]() -> uint8_t {
    if (stream.empty()) return 0;
    uint8_t b = stream[pos % stream.size()];
    ++pos;
    return b;
  };
  const int mode = vmode & 3;
  const float step = std::ldexp(1.0f, (vmode >> 2) - 24);
  for (int t = 0; t < tensors; ++t) {
    uint64_t numel = 1;
    for (uint64_t d : in.dims[t]) numel *= d;
    std::vector<float> v(numel);
    for (float& x : v) {
      switch (mode) {
        case 0:
          x = static_cast<float>(next() % 4) * step;
          break;
        case 1:
          x = (static_cast<float>(next() % 16) - 8.0f) * step;
          break;
        case 2:
          x = static_cast<float>(static_cast<int8_t>(next())) * step;
          break;
        default: {
          uint32_t bits = 0;
          for (int i = 0; i < 4; ++i) bits |= uint32_t{next()} << (8 * i);
          std::memcpy(&x, &bits, 4);
        }
      }
    }
    // Layer-numbered names so that the writer's layer parsing is exercised.
    std::string name = t == 0 ? "model.embed_tokens.weight"
                              : "model.layers." + std::to_string(t - 1) + ".w";
    in.values.push_back(v);
    in.source.Add(name, in.dims[t], std::move(v));
  }
  return in;
}

}  // namespace tqm_fuzz

#endif  // TQM_FUZZ_INPUTS_H_
