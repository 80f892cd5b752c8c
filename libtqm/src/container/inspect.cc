// Inspect(): a Reader's header, sections, metadata, table and per-tensor
// codec mix as a struct, and its text and JSON renderings.

#include "tqm/inspect.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/checksum.h"
#include "base/cpu.h"
#include "codec/codec_internal.h"
#include "codec/entropy.h"
#include "tqm/codec.h"
#include "tqm/source.h"

namespace tqm {
namespace {

// The source dtype in lower case ("f32", "i64", "q8_0").
std::string LowerDTypeName(format::SourceDType d) {
  return absl::AsciiStrToLower(DTypeName(d));
}

// "f32", "raw", or the code width and what one (scale, zero) pair covers:
// "u8/tensor", "u8/row", "u4/group:32".
std::string StorageName(const TensorInfo& t) {
  switch (t.storage) {
    case format::kStorageF32:
      return "f32";
    case format::kStorageRaw:
      return "raw";
    case format::kStorageU8Tensor:
      return absl::StrFormat("u%d/tensor", t.bits);
    case format::kStorageU8Row:
      return absl::StrFormat("u%d/row", t.bits);
    case format::kStorageU8Group:
      return absl::StrFormat("u%d/group:%d", t.bits, t.group_size);
  }
  return "?";
}

const char* SectionName(uint32_t id) {
  switch (id) {
    case format::kSectionMetadata:
      return "METADATA";
    case format::kSectionTable:
      return "TABLE";
    case format::kSectionTensorIndex:
      return "TENSOR_INDEX";
    case format::kSectionData:
      return "DATA";
  }
  return "unknown";
}

}  // namespace

std::string JsonQuote(const std::string& s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = s[i];
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7F) {
      out += absl::StrFormat("\\u%04x", c);
    } else if (c >= 0x80) {
      // Pass valid UTF-8 through; escape stray bytes as U+FFFD-free \u00XX.
      int len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
      bool ok = len > 0 && i + len <= s.size();
      for (int k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
      if (ok) {
        out.append(s, i, len);
        i += len - 1;
      } else {
        out += absl::StrFormat("\\u%04x", c);
      }
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

namespace {

std::string Dims(const std::vector<uint64_t>& d) {
  return absl::StrCat("[", absl::StrJoin(d, ", "), "]");
}

std::string CodecMix(const uint64_t* by_codec) {
  std::vector<std::string> parts;
  for (int c = 0; c < 256; ++c) {
    if (by_codec[c]) parts.push_back(absl::StrFormat("%s:%d", CodecName(c), by_codec[c]));
  }
  return absl::StrJoin(parts, " ");
}

std::string MetaText(const MetaValue& v) {
  switch (v.type) {
    case format::kMetaInt64:
      return absl::StrCat(v.int64);
    case format::kMetaFloat64:
      return absl::StrFormat("%g", v.float64);
    case format::kMetaString:
      return absl::StrCat("\"", EscapeForTerminal(v.bytes), "\"");
    default:
      return absl::StrFormat("<%d bytes>", v.bytes.size());
  }
}

}  // namespace

std::string EscapeForTerminal(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7F || c >= 0x80 || c == '\\') {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

InspectReport Inspect(const Reader& reader) {
  InspectReport r;
  r.file = reader.name();
  r.file_size = reader.bytes().size();
  r.header = reader.header();
  r.sections = reader.sections();
  r.metadata = reader.metadata();
  r.table_entries = reader.table().size();
  r.table_bytes = format::kTableHeaderSize + 4ull * r.table_entries;
  for (const TensorInfo& t : reader.tensors()) {
    TensorReport tr;
    tr.name = t.name;
    tr.dims = t.dims;
    tr.source_dtype = LowerDTypeName(t.source_dtype);
    tr.storage = StorageName(t);
    tr.layer = t.layer;
    tr.numel = t.numel;
    tr.decoded_bytes = t.byte_size;
    tr.encoded_bytes = t.encoded_size;
    for (const ChunkInfo& c : t.chunks) {
      ++tr.chunks_by_codec[c.codec];
      ++r.chunks_by_codec[c.codec];
    }
    tr.bits_per_weight = t.numel ? 8.0 * t.encoded_size / t.numel : 0;
    r.weights += t.numel;
    r.decoded_bytes += t.byte_size;
    r.encoded_bytes += t.encoded_size;
    r.tensors.push_back(std::move(tr));
  }
  r.bits_per_weight = r.weights ? 8.0 * r.file_size / r.weights : 0;
  return r;
}

std::string FormatText(const InspectReport& r) {
  std::string o;
  absl::StrAppendFormat(&o, "file:      %s\n", EscapeForTerminal(r.file));
  absl::StrAppendFormat(&o, "format:    tqm %d.%d, flags 0x%x, %d bytes, %d sections\n",
                        r.header.major, r.header.minor, r.header.flags, r.file_size,
                        r.sections.size());
  for (const SectionInfo& s : r.sections) {
    absl::StrAppendFormat(&o, "  section %-12s id %d  offset %10d  length %10d%s\n",
                          SectionName(s.id), s.id, s.offset, s.length,
                          (s.flags & format::kSectionFlagRequired) ? "  required" : "");
  }
  absl::StrAppendFormat(&o, "metadata:  %d entries\n", r.metadata.size());
  for (const MetaEntry& e : r.metadata) {
    absl::StrAppendFormat(&o, "  %-28s %s\n", EscapeForTerminal(e.key), MetaText(e.value));
  }
  absl::StrAppendFormat(&o, "table:     %d entries (%d bytes)\n", r.table_entries,
                        r.table_bytes);
  absl::StrAppendFormat(&o, "tensors:   %d, %d weights, %d decoded bytes, %d encoded bytes\n",
                        r.tensors.size(), r.weights, r.decoded_bytes, r.encoded_bytes);
  absl::StrAppendFormat(&o, "chunks:    %s\n", CodecMix(r.chunks_by_codec));
  absl::StrAppendFormat(&o, "size:      %.3f bits/weight over the whole file\n",
                        r.bits_per_weight);
  absl::StrAppendFormat(&o, "\n%-52s %-16s %-5s %-9s %5s %10s %10s %6s  %s\n", "name", "shape",
                        "dtype", "storage", "layer", "decoded", "encoded", "bits/w",
                        "codecs");
  for (const TensorReport& t : r.tensors) {
    absl::StrAppendFormat(&o, "%-52s %-16s %-5s %-9s %5s %10d %10d %6.3f  %s\n",
                          EscapeForTerminal(t.name), Dims(t.dims), t.source_dtype, t.storage,
                          t.layer < 0 ? std::string("-") : absl::StrCat(t.layer),
                          t.decoded_bytes, t.encoded_bytes, t.bits_per_weight,
                          CodecMix(t.chunks_by_codec));
  }
  if (r.verified) {
    absl::StrAppendFormat(&o, "\nverify:    %s\n",
                          r.verify_error.empty() ? "OK (all checksums match, every chunk decodes)"
                                                 : "FAILED: " + EscapeForTerminal(r.verify_error));
    absl::StrAppendFormat(
        &o, "           %.3f s on %d thread%s, %.2f GB/s decoded; %s\n", r.verify_seconds,
        r.verify_threads, r.verify_threads == 1 ? "" : "s",
        r.verify_seconds > 0 ? r.decoded_bytes / r.verify_seconds / 1e9 : 0.0, r.decoders);
  }
  return o;
}

std::string ActiveDecoders() {
  const bool avx512_sum = checksum_internal::PickChecksum() != checksum_internal::Xxh3Library &&
                          cpu::HasAvx512();
  const bool avx2_sum =
      checksum_internal::PickChecksum() != checksum_internal::Xxh3Library && !avx512_sum;
  return absl::StrFormat(
      "lanes %s, huffman %s, seqtable %s, checksum %s (TQM_CPU %s)",
      entropy_internal::LanesDecoderName(entropy_internal::Isa::kAuto),
      entropy_internal::HaveBmi2() ? "BMI2" : "portable C++",
      codec_internal::SeqTableAvx2Available() ? "AVX2" : "portable C++",
      avx512_sum ? "AVX-512" : (avx2_sum ? "AVX2" : "libxxhash"), cpu::CapName());
}

void VerifyInto(const Reader& reader, unsigned threads, InspectReport* report) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status s = reader.Verify(threads);
  report->verify_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report->verified = true;
  report->verify_threads = threads;
  report->verify_error = s.ok() ? std::string() : std::string(s.message());
  report->decoders = ActiveDecoders();
}

std::string FormatJson(const InspectReport& r) {
  std::string o = "{";
  absl::StrAppendFormat(&o, "\"file\":%s,\"file_size\":%d,", JsonQuote(r.file), r.file_size);
  absl::StrAppendFormat(&o, "\"version\":{\"major\":%d,\"minor\":%d},\"flags\":%d,",
                        r.header.major, r.header.minor, r.header.flags);
  o += "\"sections\":[";
  for (size_t i = 0; i < r.sections.size(); ++i) {
    const SectionInfo& s = r.sections[i];
    absl::StrAppendFormat(&o,
                          "%s{\"id\":%d,\"name\":\"%s\",\"flags\":%d,\"offset\":%d,"
                          "\"length\":%d,\"checksum\":\"%016x\"}",
                          i ? "," : "", s.id, SectionName(s.id), s.flags, s.offset, s.length,
                          s.checksum);
  }
  o += "],\"metadata\":{";
  for (size_t i = 0; i < r.metadata.size(); ++i) {
    const MetaEntry& e = r.metadata[i];
    o += i ? "," : "";
    o += JsonQuote(e.key) + ":";
    switch (e.value.type) {
      case format::kMetaInt64:
        absl::StrAppend(&o, e.value.int64);
        break;
      case format::kMetaFloat64:
        if (std::isfinite(e.value.float64)) {
          absl::StrAppendFormat(&o, "%.17g", e.value.float64);
        } else {
          o += "null";
        }
        break;
      case format::kMetaString:
        o += JsonQuote(e.value.bytes);
        break;
      default: {
        auto b = absl::Span<const uint8_t>(
            reinterpret_cast<const uint8_t*>(e.value.bytes.data()), e.value.bytes.size());
        absl::StrAppendFormat(&o, "{\"bytes\":%d,\"xxh3\":\"%016x\"}", b.size(), Checksum(b));
      }
    }
  }
  absl::StrAppendFormat(&o, "},\"table\":{\"entries\":%d,\"bytes\":%d},", r.table_entries,
                        r.table_bytes);
  auto codecs = [](const uint64_t* by) {
    std::string s = "{";
    bool first = true;
    for (int c = 0; c < 256; ++c) {
      if (!by[c]) continue;
      absl::StrAppendFormat(&s, "%s\"%s\":%d", first ? "" : ",", CodecName(c), by[c]);
      first = false;
    }
    return s + "}";
  };
  absl::StrAppendFormat(&o,
                        "\"weights\":%d,\"decoded_bytes\":%d,\"encoded_bytes\":%d,"
                        "\"bits_per_weight\":%.6f,\"chunks\":%s,\"tensors\":[",
                        r.weights, r.decoded_bytes, r.encoded_bytes, r.bits_per_weight,
                        codecs(r.chunks_by_codec));
  for (size_t i = 0; i < r.tensors.size(); ++i) {
    const TensorReport& t = r.tensors[i];
    absl::StrAppendFormat(&o,
                          "%s{\"name\":%s,\"shape\":[%s],\"dtype\":\"%s\",\"storage\":\"%s\","
                          "\"layer\":%s,\"numel\":%d,\"decoded_bytes\":%d,"
                          "\"encoded_bytes\":%d,\"bits_per_weight\":%.6f,\"chunks\":%s}",
                          i ? "," : "", JsonQuote(t.name), absl::StrJoin(t.dims, ","),
                          t.source_dtype, t.storage,
                          t.layer < 0 ? std::string("null") : absl::StrCat(t.layer), t.numel,
                          t.decoded_bytes, t.encoded_bytes, t.bits_per_weight,
                          codecs(t.chunks_by_codec));
  }
  o += "]";
  if (r.verified) {
    absl::StrAppendFormat(&o,
                          ",\"verify\":{\"ok\":%s,\"error\":%s,\"seconds\":%.6f,"
                          "\"threads\":%d,\"decoded_gb_per_s\":%.3f,\"decoders\":%s}",
                          r.verify_error.empty() ? "true" : "false",
                          r.verify_error.empty() ? "null" : JsonQuote(r.verify_error),
                          r.verify_seconds, r.verify_threads,
                          r.verify_seconds > 0 ? r.decoded_bytes / r.verify_seconds / 1e9 : 0.0,
                          JsonQuote(r.decoders));
  }
  return o + "}\n";
}

}  // namespace tqm
