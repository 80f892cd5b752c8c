// The stored and seqtable chunk codecs, and dispatch to the others
// (spec/FORMAT.md, "Codecs").
//
// The seqtable decoder validates as it goes but keeps the common path tight:
// it looks at eight codes at once and, when all of them are table codes
// (the usual case in a chunk the writer chose seqtable for), expands them
// without further branches.

#include "tqm/codec.h"

#include "entropy.h"

#include <cstring>

#include "absl/strings/str_format.h"

namespace tqm {
namespace {

inline uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;  // little-endian host (checked in reader.cc)
}

// Spec R61 (invalid code) and R62 (payload too short or too long).
absl::Status SeqError(const char* what, size_t pos) {
  return absl::DataLossError(
      absl::StrFormat("seqtable: %s at payload byte %d", what, pos));
}

}  // namespace

SeqTable::SeqTable(std::vector<uint32_t> entries) : entries_(std::move(entries)) {
  codes_.reserve(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) {
    codes_.emplace(entries_[i], static_cast<uint16_t>(i));
  }
}

size_t SeqTableEncodedSize(absl::Span<const uint8_t> in, const SeqTable& table) {
  size_t groups = in.size() / 4;
  size_t size = in.size() % 4;
  for (size_t g = 0; g < groups; ++g) {
    uint32_t v;
    std::memcpy(&v, in.data() + 4 * g, 4);
    size += table.Lookup(v) == format::kEscape ? 6 : 2;
  }
  return size;
}

void EncodeSeqTable(absl::Span<const uint8_t> in, const SeqTable& table,
                    std::string* out) {
  size_t groups = in.size() / 4;
  for (size_t g = 0; g < groups; ++g) {
    uint32_t v;
    std::memcpy(&v, in.data() + 4 * g, 4);
    uint16_t code = table.Lookup(v);
    char w[2] = {static_cast<char>(code & 0xFF), static_cast<char>(code >> 8)};
    out->append(w, 2);
    if (code == format::kEscape)
      out->append(reinterpret_cast<const char*>(&in[4 * g]), 4);
  }
  out->append(reinterpret_cast<const char*>(in.data() + 4 * groups), in.size() % 4);
}

absl::Status DecodeSeqTableReference(absl::Span<const uint8_t> in,
                                     absl::Span<const uint32_t> table,
                                     absl::Span<uint8_t> out) {
  const size_t groups = out.size() / 4, tail = out.size() % 4;
  size_t pos = 0;
  for (size_t g = 0; g < groups; ++g) {
    if (in.size() - pos < 2) return SeqError("payload ends inside the codes", pos);
    uint16_t code = static_cast<uint16_t>(in[pos] | (in[pos + 1] << 8));
    pos += 2;
    if (code == format::kEscape) {
      if (in.size() - pos < 4) return SeqError("escape cut off", pos);
      for (int k = 0; k < 4; ++k) out[4 * g + k] = in[pos + k];
      pos += 4;
    } else if (code < table.size()) {
      uint32_t v = table[code];
      for (int k = 0; k < 4; ++k) out[4 * g + k] = static_cast<uint8_t>(v >> (8 * k));
    } else {
      return SeqError(
          absl::StrFormat("invalid code %d (table has %d entries)", code, table.size())
              .c_str(),
          pos - 2);
    }
  }
  if (in.size() - pos != tail) return SeqError("payload length does not match", pos);
  for (size_t k = 0; k < tail; ++k) out[4 * groups + k] = in[pos + k];
  return absl::OkStatus();
}

absl::Status DecodeSeqTable(absl::Span<const uint8_t> in,
                            absl::Span<const uint32_t> table, absl::Span<uint8_t> out) {
  const size_t groups = out.size() / 4, tail = out.size() % 4;
  const uint8_t* p = in.data();
  const uint8_t* const end = in.data() + in.size();
  uint8_t* o = out.data();
  const uint32_t* t = table.data();
  const uint32_t n = static_cast<uint32_t>(table.size());
  size_t g = 0;
  while (g < groups) {
    // Fast path: up to eight table codes in a row. The codes before the first
    // escape or invalid code are expanded without further branches; that
    // code then takes the careful path below.
    if (groups - g >= 8 && end - p >= 16) {
      uint16_t c[8];
      std::memcpy(c, p, 16);
      uint32_t bad = 0;
      for (int k = 0; k < 8; ++k) bad |= static_cast<uint32_t>(c[k] >= n) << k;
      if (!bad) {
        for (int k = 0; k < 8; ++k) std::memcpy(o + 4 * k, &t[c[k]], 4);
        p += 16;
        o += 32;
        g += 8;
        continue;
      }
      // Expand all eight with clamped indices (branch-free, in bounds since
      // n >= 1 here), then keep only the valid prefix.
      const int valid = __builtin_ctz(bad);
      if (n > 0) {
        for (int k = 0; k < 8; ++k) {
          const uint32_t idx = c[k] < n ? c[k] : n - 1;
          std::memcpy(o + 4 * k, &t[idx], 4);
        }
      }
      p += 2 * valid;
      o += 4 * valid;
      g += valid;
    }
    if (end - p < 2) return SeqError("payload ends inside the codes", p - in.data());
    uint16_t code = Load16(p);
    p += 2;
    if (code < n) {
      std::memcpy(o, &t[code], 4);
    } else if (code == format::kEscape) {
      if (end - p < 4) return SeqError("escape cut off", p - in.data());
      std::memcpy(o, p, 4);
      p += 4;
    } else {
      return SeqError(
          absl::StrFormat("invalid code %d (table has %d entries)", code, n).c_str(),
          p - 2 - in.data());
    }
    o += 4;
    ++g;
  }
  if (static_cast<size_t>(end - p) != tail) {
    return SeqError("payload length does not match the decoded size", p - in.data());
  }
  if (tail) std::memcpy(o, p, tail);  // (p may be null for an empty payload)
  return absl::OkStatus();
}

const char* CodecName(uint8_t codec) {
  switch (codec) {
    case format::kCodecStored:
      return "stored";
    case format::kCodecSeqTable:
      return "seqtable";
    case format::kCodecZstd:
      return "zstd";
    case format::kCodecRans:
      return "rans";
    case format::kCodecHuffman:
      return "huffman";
    default:
      return "unknown";
  }
}

bool IsKnownCodec(uint8_t codec) {
  return codec == format::kCodecStored || codec == format::kCodecSeqTable ||
         codec == format::kCodecZstd || codec == format::kCodecRans ||
         codec == format::kCodecHuffman;
}

absl::Status DecodeChunkBytes(uint8_t codec, absl::Span<const uint8_t> in,
                              absl::Span<const uint32_t> table, absl::Span<uint8_t> out) {
  switch (codec) {
    case format::kCodecStored:
      if (in.size() != out.size()) {
        return absl::DataLossError(absl::StrFormat(
            "stored chunk has %d bytes, expected %d", in.size(), out.size()));
      }
      if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
      return absl::OkStatus();
    case format::kCodecSeqTable:
      return DecodeSeqTable(in, table, out);
    case format::kCodecZstd:
      return DecodeZstd(in, out);
    case format::kCodecRans:
      return DecodeRans(in, out);
    case format::kCodecHuffman:
      return DecodeHuffman(in, out);
    default:
      return absl::UnimplementedError(absl::StrFormat(
          "codec %d (%s) is not supported by this reader", codec, CodecName(codec)));
  }
}

}  // namespace tqm
