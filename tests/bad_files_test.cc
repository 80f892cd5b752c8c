// The catalogue of hand-crafted bad .tqm files (spec/vectors/bad/): each one
// breaks exactly one rule of the format and must be rejected with the status
// code and message named in spec/vectors/bad/EXPECTED.txt, either when it is
// opened or, for problems that only tensor data can show, by Verify().
//
// The files are produced here, from a small packed model, by one mutation
// each; the checksums covering the mutated bytes are then recomputed
// (fuzz/file_editor.h), so that the intended check -- not a checksum -- is
// what rejects the file. The test regenerates the catalogue and compares it
// byte for byte with the committed files. After a deliberate format or
// writer change, rewrite them with
//   TQM_UPDATE_BAD_FILES=1 build/tests/bad_files_test

#include <dirent.h>
#include <sys/stat.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../fuzz/file_editor.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "tqm/format.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

using tqm_fuzz::ChunkLoc;
using tqm_fuzz::FixChecksums;
using tqm_fuzz::FixOptions;
using tqm_fuzz::Layout;
using tqm_fuzz::Scan;
using tqm_fuzz::SectionLoc;
using tqm_fuzz::Store;
using tqm_fuzz::TensorLoc;
namespace format = tqm::format;

const char kBadDir[] = TQM_SOURCE_DIR "/spec/vectors/bad";

using tqm_test::ReadFile;
using tqm_test::WriteFile;

// The base: METADATA with all four value types, a table, an unquantized
// tensor first (one stored chunk, 48 bytes, padding after it), then two
// quantized tensors in 64-byte chunks (seqtable with escapes).
std::string BaseFile(tqm::Granularity g) {
  tqm::MemorySource m;
  m.AddMeta({"test.aa", tqm::MetaValue::Int(7)});
  m.AddMeta({"test.ab", tqm::MetaValue::Float(0.5)});
  m.AddMeta({"test.s", tqm::MetaValue::String("hello")});
  m.AddMeta({"test.b", tqm::MetaValue::Bytes(std::string("\0\1", 2))});
  m.Add("model.norm.weight", {12}, tqm_test::RepeatingPattern(12, 3));
  m.Add("model.layers.0.wa", {8, 32}, tqm_test::RepeatingPattern(256, 1));
  m.Add("model.layers.0.wb", {4, 16}, tqm_test::RepeatingPattern(64, 2));
  tqm::PackOptions o;
  o.chunk_size = 64;
  o.granularity = g;
  o.entropy = false;  // format 1.0 codecs only: the catalogue is about the container
  o.threads = 1;
  absl::StatusOr<std::string> s = tqm::PackToString(m, o);
  if (!s.ok()) {
    ADD_FAILURE() << s.status();
    return "";
  }
  return *s;
}

// A format 1.3 file (EXTENDED_TENSORS): a 4 x 20 tensor of 4-bit codes in
// groups of 8 (groups of 8, 8 and 4 per row: 12 pairs), an F32 vector, six
// RAW I32 values, a 0-d F32 scalar and an empty RAW I64 tensor, in that
// order.
std::string ExtendedFile() {
  tqm::MemorySource m;
  m.Add("model.layers.0.wg", {4, 20}, tqm_test::RepeatingPattern(80, 5));
  m.Add("model.norm.weight", {12}, tqm_test::RepeatingPattern(12, 3));
  std::string ids;
  for (int32_t i = 0; i < 6; ++i) ids.append(reinterpret_cast<const char*>(&i), 4);
  m.AddRaw("model.ids", {6}, format::kDTypeI32, ids);
  m.Add("model.scale", {}, {0.5f});
  m.AddRaw("model.empty", {0, 3}, format::kDTypeI64, "");
  tqm::PackOptions o;
  o.chunk_size = 64;
  o.bits = 4;
  o.granularity = tqm::Granularity::kGroup;
  o.group_size = 8;
  o.entropy = false;
  o.threads = 1;
  absl::StatusOr<std::string> s = tqm::PackToString(m, o);
  if (!s.ok()) {
    ADD_FAILURE() << s.status();
    return "";
  }
  return *s;
}

// One catalogue entry.
struct BadFile {
  std::string name;     // file name in spec/vectors/bad/
  std::string stage;    // "open": FromBuffer/Open fail; "verify": Verify fails
  absl::StatusCode code;
  std::string message;  // substring of the error message
  std::string bytes;
  bool checksums_valid; // every checksum recomputed after the mutation
};

class Catalogue {
 public:
  Catalogue() {
    base_ = BaseFile(tqm::Granularity::kTensor);
    rows_ = BaseFile(tqm::Granularity::kRow);
    ext_ = ExtendedFile();
    Build();
  }
  const std::vector<BadFile>& files() const { return files_; }

 private:
  using Edit = std::function<void(std::string* b, const Layout& l)>;

  // Applies `edit` to a copy of `from`, recomputes the checksums `fix` names.
  void Add(const std::string& name, const char* stage, absl::StatusCode code,
           const std::string& message, Edit edit, FixOptions fix = FixOptions(),
           const std::string* from = nullptr) {
    std::string b = from ? *from : base_;
    const Layout l = Scan(b);
    edit(&b, l);
    FixChecksums(&b, fix);
    // Where the mutation points a structure into the header, the recomputed
    // checksums cover each other and cannot all be right (the reader rejects
    // these files before it looks at a checksum).
    const bool self_covering = name == "directory_in_header" || name == "section_in_header";
    const bool all = fix.chunks && fix.sections && fix.skip_section == 0 && fix.directory &&
                     fix.header && !self_covering;
    files_.push_back({name + ".tqm", stage, code, message, b, all});
  }
  // No checksum is touched (the file is cut or the mutation is the checksum).
  void AddRaw(const std::string& name, absl::StatusCode code, const std::string& message,
              std::string bytes) {
    files_.push_back({name + ".tqm", "open", code, message, std::move(bytes), false});
  }

  static const SectionLoc& Sec(const Layout& l, uint32_t id) {
    const SectionLoc* s = l.Find(id);
    if (!s) {
      ADD_FAILURE() << "base file has no section " << id;
      static SectionLoc none;
      return none;
    }
    return *s;
  }
  static const TensorLoc& Tensor(const Layout& l, const std::string& b, const char* name) {
    for (const TensorLoc& t : l.tensors) {
      if (b.compare(t.name, t.name_len, name) == 0) return t;
    }
    ADD_FAILURE() << "base file has no tensor " << name;
    static TensorLoc none;
    return none;
  }
  // A seqtable chunk of the base whose encoding holds at least one escape and
  // no tail, so that its payload can be rewritten at the same size.
  static const ChunkLoc& SeqChunk(const Layout& l) {
    for (const TensorLoc& t : l.tensors) {
      for (const ChunkLoc& c : t.chunks) {
        const uint32_t groups = c.decoded_size / 4;
        if (c.codec == format::kCodecSeqTable && c.decoded_size % 4 == 0 &&
            c.encoded_size > 2 * groups && c.encoded_size < 6 * groups) {
          return c;
        }
      }
    }
    ADD_FAILURE() << "base file has no seqtable chunk with escapes";
    static ChunkLoc none;
    return none;
  }
  uint32_t TableSize() const {
    uint32_t n = 0;
    tqm_fuzz::Load(base_, Sec(Scan(base_), format::kSectionTable).offset, &n);
    return n;
  }

  // Moves the directory to make room for a section of `payload` before it.
  static void AppendSection(std::string* b, const Layout& l, uint32_t id, uint32_t flags,
                            const std::string& payload) {
    const std::string dir = b->substr(l.directory_offset,
                                      uint64_t{l.section_count} * format::kSectionEntrySize);
    b->resize(l.directory_offset);
    const uint64_t offset = b->size();
    *b += payload;
    b->resize((b->size() + 63) / 64 * 64, '\0');
    const uint64_t dir_offset = b->size();
    *b += dir;
    std::string e(format::kSectionEntrySize, '\0');
    Store<uint32_t>(&e, 0, id);
    Store<uint32_t>(&e, 4, flags);
    Store<uint64_t>(&e, 8, offset);
    Store<uint64_t>(&e, 16, payload.size());
    *b += e;
    Store<uint64_t>(b, 16, b->size());
    Store<uint64_t>(b, 24, dir_offset);
    Store<uint32_t>(b, 32, l.section_count + 1);
  }

  void Build();

  std::string base_, rows_, ext_;
  std::vector<BadFile> files_;
};

void Catalogue::Build() {
  using C = absl::StatusCode;
  const C kLoss = C::kDataLoss, kUnimpl = C::kUnimplemented, kLimit = C::kResourceExhausted;
  const FixOptions kAll;
  FixOptions header_only;
  header_only.chunks = header_only.sections = header_only.directory = false;
  FixOptions no_sections;
  no_sections.sections = false;
  FixOptions no_chunks;
  no_chunks.chunks = false;
  FixOptions no_data;
  no_data.skip_section = format::kSectionData;
  FixOptions none;
  none.chunks = none.sections = none.directory = none.header = false;
  const Layout L = Scan(base_);  // for numbers that appear in messages

  // ---- header ----
  AddRaw("empty", kLoss, "shorter than the 64-byte header", "");
  AddRaw("short_header", kLoss, "shorter than the 64-byte header", base_.substr(0, 63));
  Add("bad_magic", "open", kLoss, "(not a .tqm file)",
      [](std::string* b, const Layout&) { (*b)[1] = 'X'; });
  Add("future_major", "open", kUnimpl, "major_version 2 is not supported",
      [](std::string* b, const Layout&) { Store<uint16_t>(b, 8, 2); });
  Add("major_zero", "open", kUnimpl, "major_version 0 is not supported",
      [](std::string* b, const Layout&) { Store<uint16_t>(b, 8, 0); });
  Add("unknown_header_flag", "open", kUnimpl, "flags 0x2 has bits this reader does not know",
      [](std::string* b, const Layout&) { Store<uint32_t>(b, 12, 2); });
  Add("header_reserved_36", "open", kLoss, "header: reserved0 is 1, must be 0",
      [](std::string* b, const Layout&) { Store<uint32_t>(b, 36, 1); });
  Add("header_reserved_48", "open", kLoss, "header: reserved1 is 9223372036854775808",
      [](std::string* b, const Layout&) { Store<uint64_t>(b, 48, uint64_t{1} << 63); });
  Add("header_checksum", "open", kLoss, "does not match the checksum of bytes 0-55",
      [](std::string* b, const Layout&) { (*b)[60] ^= 1; }, none);
  Add("header_bit_flip", "open", kLoss, "does not match the checksum of bytes 0-55",
      [](std::string* b, const Layout&) { (*b)[17] ^= 1; }, none);
  Add("file_size_larger", "open", kLoss,
      absl::StrFormat("file_size says %d bytes but the file is %d bytes", base_.size() + 64,
                      base_.size()),
      [](std::string* b, const Layout&) { Store<uint64_t>(b, 16, b->size() + 64); });
  Add("file_size_huge", "open", kLoss, "file_size says 18446744073709551615 bytes",
      [](std::string* b, const Layout&) { Store<uint64_t>(b, 16, ~uint64_t{0}); });
  AddRaw("truncated_tail", kLoss,
         absl::StrFormat("file_size says %d bytes but the file is %d bytes", base_.size(),
                         base_.size() - 64),
         base_.substr(0, base_.size() - 64));
  AddRaw("extended_tail", kLoss,
         absl::StrFormat("file_size says %d bytes but the file is %d bytes", base_.size(),
                         base_.size() + 64),
         base_ + std::string(64, '\0'));
  Add("section_count_zero", "open", kLoss, "section_count is 0",
      [](std::string* b, const Layout&) { Store<uint32_t>(b, 32, 0); });
  Add("section_count_huge", "open", kLimit, "section_count 4294967295 exceeds the limit of 64",
      [](std::string* b, const Layout&) { Store<uint32_t>(b, 32, 0xFFFFFFFFu); });
  Add("section_count_65", "open", kLimit, "section_count 65 exceeds the limit of 64",
      [](std::string* b, const Layout&) { Store<uint32_t>(b, 32, 65); });

  // ---- directory ----
  Add("directory_outside_file", "open", kLoss,
      absl::StrFormat("section directory (directory_offset %d, 4 entries", base_.size()),
      [](std::string* b, const Layout&) { Store<uint64_t>(b, 24, b->size()); });
  Add("directory_offset_huge", "open", kLoss,
      "section directory (directory_offset 18446744073709551552",
      [](std::string* b, const Layout&) { Store<uint64_t>(b, 24, ~uint64_t{63}); });
  Add("directory_misaligned", "open", kLoss,
      absl::StrFormat("directory_offset %d is not a multiple of 64", L.directory_offset - 56),
      [](std::string* b, const Layout& l) { Store<uint64_t>(b, 24, l.directory_offset - 56); });
  Add("directory_in_header", "open", kLoss, "directory_offset 0 is not a multiple of 64",
      [](std::string* b, const Layout&) { Store<uint64_t>(b, 24, 0); });
  Add("directory_checksum", "open", kLoss, "does not match directory_checksum",
      [](std::string* b, const Layout& l) { (*b)[l.directory_offset + 20] ^= 0x40; },
      header_only);
  Add("section_id_zero", "open", kLoss, "section id 0 is never assigned",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTable).entry, 0);
      });
  Add("section_unknown_flags", "open", kUnimpl,
      "section TABLE (id 2): flags 0x3 has bits this reader does not know",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTable).entry + 4, 3);
      });
  Add("section_not_required", "open", kLoss, "section TABLE (id 2) lacks the REQUIRED flag",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTable).entry + 4, 0);
      });
  Add("duplicate_section_id", "open", kLoss, "section METADATA (id 1) appears twice",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTable).entry, format::kSectionMetadata);
      });
  Add("unknown_required_section", "open", kUnimpl,
      "section id 99 is marked REQUIRED but this reader does not know it",
      [](std::string* b, const Layout& l) {
        AppendSection(b, l, 99, format::kSectionFlagRequired, "from the future");
      });
  Add("missing_table_section", "open", kLoss, "required section TABLE (id 2) is missing",
      [](std::string* b, const Layout& l) {
        // Unknown id, not REQUIRED: skipped, so the TABLE is missing.
        Store<uint32_t>(b, Sec(l, format::kSectionTable).entry, 9);
        Store<uint32_t>(b, Sec(l, format::kSectionTable).entry + 4, 0);
      });
  Add("section_offset_past_end", "open", kLoss,
      absl::StrFormat("section METADATA (id 1) (offset %d", base_.size() + 64),
      [](std::string* b, const Layout& l) {
        Store<uint64_t>(b, Sec(l, format::kSectionMetadata).entry + 8, b->size() + 64);
      });
  Add("section_offset_huge", "open", kLoss,
      "section DATA (id 4) (offset 18446744073709551552",
      [](std::string* b, const Layout& l) {
        Store<uint64_t>(b, Sec(l, format::kSectionData).entry + 8, ~uint64_t{63});
      });
  Add("section_length_overflow", "open", kLoss, "length 18446744073709551615) extends past",
      [](std::string* b, const Layout& l) {
        Store<uint64_t>(b, Sec(l, format::kSectionMetadata).entry + 16, ~uint64_t{0});
      });
  Add("section_length_past_end", "open", kLoss, "section TENSOR_INDEX (id 3) (offset",
      [](std::string* b, const Layout& l) {
        const SectionLoc& s = Sec(l, format::kSectionTensorIndex);
        Store<uint64_t>(b, s.entry + 16, b->size() - s.offset + 1);
      });
  Add("section_misaligned", "open", kLoss,
      absl::StrFormat("section TABLE (id 2): offset %d is not a multiple of 64",
                      Sec(L, format::kSectionTable).offset + 4),
      [](std::string* b, const Layout& l) {
        const SectionLoc& s = Sec(l, format::kSectionTable);
        Store<uint64_t>(b, s.entry + 8, s.offset + 4);
      });
  Add("section_in_header", "open", kLoss,
      "section METADATA (id 1): offset 0 is not a multiple of 64 of at least 64",
      [](std::string* b, const Layout& l) {
        Store<uint64_t>(b, Sec(l, format::kSectionMetadata).entry + 8, 0);
      });
  Add("overlapping_sections", "open", kLoss,
      "overlaps section METADATA (id 1)", [](std::string* b, const Layout& l) {
        const SectionLoc& m = Sec(l, format::kSectionMetadata);
        Store<uint64_t>(b, m.entry + 16,
                        Sec(l, format::kSectionTable).offset - m.offset + 8);
      });
  Add("section_overlaps_directory", "open", kLoss, "overlaps section TENSOR_INDEX (id 3)",
      [](std::string* b, const Layout& l) {
        const SectionLoc& x = Sec(l, format::kSectionTensorIndex);
        Store<uint64_t>(b, x.entry + 16, l.directory_offset - x.offset + 32);
      });
  Add("same_range_twice", "open", kLoss, "overlaps section", [](std::string* b, const Layout& l) {
    const SectionLoc& m = Sec(l, format::kSectionMetadata);
    const SectionLoc& t = Sec(l, format::kSectionTable);
    Store<uint64_t>(b, t.entry + 8, m.offset);
    Store<uint64_t>(b, t.entry + 16, m.length);
  });
  Add("section_checksum", "open", kLoss, "section METADATA (id 1): checksum",
      [](std::string* b, const Layout& l) {
        (*b)[Sec(l, format::kSectionMetadata).offset + 8] ^= 1;
      },
      no_sections);

  // ---- METADATA ----
  auto meta = [](const Layout& l, size_t i) -> const tqm_fuzz::MetaLoc& { return l.meta.at(i); };
  Add("metadata_count_huge", "open", kLoss, "METADATA: count 4294967295 exceeds",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionMetadata).offset, 0xFFFFFFFFu);
      });
  Add("metadata_count_plus_one", "open", kLoss, "key_len needs 2 bytes but 0 remain",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionMetadata).offset, l.meta.size() + 1);
      });
  Add("metadata_trailing_bytes", "open", kLoss,
      absl::StrFormat("bytes remain after the last of %d entries", L.meta.size() - 1),
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionMetadata).offset, l.meta.size() - 1);
      });
  Add("metadata_reserved", "open", kLoss, "METADATA: reserved field reserved is 1",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionMetadata).offset + 4, 1);
      });
  Add("metadata_key_empty", "open", kLoss, "key_len is 0",
      [&](std::string* b, const Layout& l) { Store<uint16_t>(b, meta(l, 0).entry, 0); });
  Add("metadata_key_too_long", "open", kLimit, "key_len 257 exceeds the limit of 256",
      [&](std::string* b, const Layout& l) { Store<uint16_t>(b, meta(l, 0).entry, 257); });
  Add("metadata_key_characters", "open", kLoss, "key has characters outside [A-Za-z0-9._-]",
      [&](std::string* b, const Layout& l) { (*b)[meta(l, 0).key + 4] = ' '; });
  Add("duplicate_metadata_key", "open", kLoss, "'test.aa': key appears twice",
      [&](std::string* b, const Layout& l) { (*b)[meta(l, 1).key + 6] = 'a'; });
  Add("metadata_unknown_type", "open", kLoss, "type 9 is not 1, 2, 3 or 4",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, meta(l, 0).type, 9); });
  Add("metadata_type_zero", "open", kLoss, "type 0 is not 1, 2, 3 or 4",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, meta(l, 0).type, 0); });
  Add("metadata_value_past_end", "open", kLoss, "value needs 4294967295 bytes",
      [&](std::string* b, const Layout& l) {
        Store<uint32_t>(b, meta(l, 2).value, 0xFFFFFFFFu);
      });

  // ---- TABLE ----
  Add("table_too_large", "open", kLoss, "TABLE: count 65536 exceeds the 65535 codes",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTable).offset, 65536);
      });
  Add("table_count_huge", "open", kLoss, "TABLE: count 4294967295 exceeds the 65535 codes",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTable).offset, 0xFFFFFFFFu);
      });
  Add("table_size_mismatch", "open", kLoss,
      absl::StrFormat("is not 8 + 4 * count (count %d)", TableSize() + 1),
      [this](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTable).offset, TableSize() + 1);
      });
  Add("table_reserved", "open", kLoss, "TABLE: reserved field reserved is 1",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTable).offset + 4, 1);
      });

  // ---- TENSOR_INDEX: counts and records ----
  auto wa = [this](const Layout& l) -> const TensorLoc& {
    return Tensor(l, base_, "model.layers.0.wa");
  };
  auto norm = [this](const Layout& l) -> const TensorLoc& {
    return Tensor(l, base_, "model.norm.weight");
  };
  Add("tensor_count_huge", "open", kLoss, "tensor_count 4294967295 exceeds",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTensorIndex).offset, 0xFFFFFFFFu);
      });
  Add("index_trailing_bytes", "open", kLoss,
      absl::StrFormat("bytes remain after the last of %d tensor records",
                      L.tensors.size() - 1),
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTensorIndex).offset, l.tensors.size() - 1);
      });
  Add("index_reserved", "open", kLoss, "TENSOR_INDEX: reserved field reserved is 1",
      [](std::string* b, const Layout& l) {
        Store<uint32_t>(b, Sec(l, format::kSectionTensorIndex).offset + 4, 1);
      });
  Add("tensor_name_empty", "open", kLoss, "name_len is 0",
      [&](std::string* b, const Layout& l) { Store<uint16_t>(b, wa(l).record, 0); });
  Add("tensor_name_too_long", "open", kLimit, "name_len 1025 exceeds the limit of 1024",
      [&](std::string* b, const Layout& l) { Store<uint16_t>(b, wa(l).record, 1025); });
  Add("tensor_name_nul", "open", kLoss, "name contains a 00 byte",
      [&](std::string* b, const Layout& l) { (*b)[wa(l).name + 3] = '\0'; });
  Add("duplicate_tensor_name", "open", kLoss, "name is the name of an earlier tensor",
      [&](std::string* b, const Layout& l) {
        const TensorLoc& t = Tensor(l, *b, "model.layers.0.wb");
        (*b)[t.name + t.name_len - 1] = 'a';
      });
  Add("unknown_source_dtype", "open", kLoss, "source_dtype 9 is not 1, 2, 3 or 4",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, wa(l).dtype, 9); });
  Add("source_dtype_zero", "open", kLoss, "source_dtype 0 is not 1, 2, 3 or 4",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, wa(l).dtype, 0); });
  Add("unknown_storage", "open", kLoss, "storage 7 is not 1, 2 or 3",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, wa(l).storage, 7); });
  Add("ndim_zero", "open", kLoss, "ndim is 0",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, wa(l).ndim, 0); });
  Add("ndim_nine", "open", kLimit, "ndim 9 exceeds the limit of 8",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, wa(l).ndim, 9); });
  Add("tensor_reserved", "open", kLoss,
      "'model.layers.0.wa': reserved0 is 1, must be 0",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, wa(l).reserved, 1); });
  Add("layer_negative", "open", kLoss, "layer -2 is less than -1",
      [&](std::string* b, const Layout& l) { Store<int32_t>(b, wa(l).layer, -2); });
  Add("zero_dimension", "open", kLoss, "dims[1] is 0",
      [&](std::string* b, const Layout& l) { Store<uint64_t>(b, wa(l).dims + 8, 0); });
  Add("shape_overflow", "open", kLimit, "dims[1] = 4294967296 makes the tensor's byte size",
      [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, wa(l).dims, uint64_t{1} << 32);
        Store<uint64_t>(b, wa(l).dims + 8, uint64_t{1} << 32);
      });
  Add("shape_overflow_f32", "open", kLimit,
      "dims[0] = 2305843009213693952 makes the tensor's byte size",
      [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, norm(l).dims, uint64_t{1} << 61);  // x 4 bytes > 2^62
      });
  Add("shape_larger_than_chunks", "open", kLoss,
      "4 chunks decode to 256 bytes but the tensor has 34359738368",
      [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, wa(l).dims, uint64_t{1} << 30);
      });
  Add("shape_smaller_than_chunks", "open", kLoss,
      "chunks 0-0 decode to more than the tensor's 32 bytes",
      [&](std::string* b, const Layout& l) { Store<uint64_t>(b, wa(l).dims, 1); });

  // ---- quantization parameters ----
  auto scale = [&](float v) {
    return [&, v](std::string* b, const Layout& l) { Store<float>(b, wa(l).affine, v); };
  };
  auto zero = [&](float v) {
    return [&, v](std::string* b, const Layout& l) { Store<float>(b, wa(l).affine + 4, v); };
  };
  Add("scale_nan", "open", kLoss, "params[0]: scale nan is not finite", scale(std::nanf("")));
  Add("scale_zero", "open", kLoss, "params[0]: scale 0 is not finite and greater than 0",
      scale(0.0f));
  Add("scale_negative", "open", kLoss, "params[0]: scale -1 is not", scale(-1.0f));
  Add("scale_infinite", "open", kLoss, "params[0]: scale inf is not",
      scale(std::numeric_limits<float>::infinity()));
  Add("zero_point_fraction", "open", kLoss, "params[0]: zero 0.5 is not finite and integral",
      zero(0.5f));
  Add("zero_point_nan", "open", kLoss, "params[0]: zero nan is not", zero(std::nanf("")));
  Add("per_row_rows_huge", "open", kLoss,
      "1099511627776 (scale, zero) pairs of 8 bytes run past the end",
      [this](std::string* b, const Layout& l) {
        Store<uint64_t>(b, Tensor(l, rows_, "model.layers.0.wa").dims, uint64_t{1} << 40);
      },
      kAll, &rows_);
  Add("per_row_scale_nan", "open", kLoss, "params[5]: scale nan is not finite",
      [this](std::string* b, const Layout& l) {
        Store<float>(b, Tensor(l, rows_, "model.layers.0.wa").affine + 5 * 8, std::nanf(""));
      },
      kAll, &rows_);

  // ---- chunk records ----
  auto chunk = [&](const Layout& l, size_t k) -> const ChunkLoc& { return wa(l).chunks.at(k); };
  Add("chunk_count_huge", "open", kLoss, "chunk_count 4294967295: its 32-byte records run past",
      [&](std::string* b, const Layout& l) {
        Store<uint32_t>(b, wa(l).chunk_count, 0xFFFFFFFFu);
      });
  Add("chunk_count_zero", "open", kLoss, "0 chunks decode to 0 bytes but the tensor has 256",
      [&](std::string* b, const Layout& l) { Store<uint32_t>(b, wa(l).chunk_count, 0); });
  Add("chunk_list_reserved", "open", kLoss, "reserved field reserved1 is 1",
      [&](std::string* b, const Layout& l) { Store<uint32_t>(b, wa(l).chunk_count + 4, 1); });
  Add("chunk_reserved_1", "open", kLoss,
      "'model.layers.0.wa': chunk 1: reserved0 is not zero",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, chunk(l, 1).record + 1, 1); });
  Add("chunk_reserved_20", "open", kLoss,
      "'model.layers.0.wa': chunk 1: reserved1 is 1, must be 0",
      [&](std::string* b, const Layout& l) { Store<uint32_t>(b, chunk(l, 1).record + 20, 1); });
  Add("unknown_codec", "open", kUnimpl, "codec 9 (",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, chunk(l, 0).record, 9); });
  Add("codec_255", "open", kUnimpl, "codec 255 (",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, chunk(l, 0).record, 255); });
  Add("chunk_decoded_zero", "open", kLoss, "decoded_size is 0",
      [&](std::string* b, const Layout& l) { Store<uint32_t>(b, chunk(l, 0).record + 4, 0); });
  Add("chunk_decoded_huge", "open", kLimit, "decoded_size 4194305 exceeds the limit of 4194304",
      [&](std::string* b, const Layout& l) {
        Store<uint32_t>(b, chunk(l, 0).record + 4, format::kMaxChunkDecodedSize + 1);
      });
  Add("chunk_encoded_zero", "open", kLoss, "encoded_size is 0",
      [&](std::string* b, const Layout& l) { Store<uint32_t>(b, chunk(l, 0).record + 16, 0); });
  Add("stored_size_mismatch", "open", kLoss, "stored chunk has encoded_size 47 but decoded_size 48",
      [&](std::string* b, const Layout& l) {
        const ChunkLoc& c = norm(l).chunks.at(0);
        Store<uint32_t>(b, c.record + 16, c.encoded_size - 1);
      });
  Add("seqtable_size_too_small", "open", kLoss, "seqtable encoded_size 1 is impossible",
      [&](std::string* b, const Layout& l) {
        Store<uint32_t>(b, SeqChunk(l).record + 16, 1);
      });
  Add("seqtable_size_too_large", "open", kLoss,
      "seqtable encoded_size 98 is impossible for decoded_size 64",
      [&](std::string* b, const Layout& l) {
        // 16 groups take at most 16 * 6 = 96 bytes.
        Store<uint32_t>(b, SeqChunk(l).record + 16, 98);
      });
  Add("seqtable_size_odd", "open", kLoss, "is impossible for decoded_size 64",
      [&](std::string* b, const Layout& l) {
        const ChunkLoc& c = SeqChunk(l);
        Store<uint32_t>(b, c.record + 16, c.encoded_size + 1);
      });
  Add("chunk_offset_past_end", "open", kLoss, "lie outside the DATA section",
      [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, chunk(l, 0).record + 8, b->size() + 64);
      });
  Add("chunk_offset_huge", "open", kLoss, "lie outside the DATA section",
      [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, chunk(l, 0).record + 8, ~uint64_t{63});
      });
  Add("chunk_offset_misaligned", "open", kLoss,
      absl::StrFormat("offset %d is not a multiple of 64", chunk(L, 0).offset + 2),
      [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, chunk(l, 0).record + 8, chunk(l, 0).offset + 2);
      });
  Add("chunk_in_metadata", "open", kLoss, "lie outside the DATA section",
      [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, chunk(l, 0).record + 8, Sec(l, format::kSectionMetadata).offset);
      });
  Add("chunk_crosses_data_end", "open", kLoss, "lie outside the DATA section",
      [&](std::string* b, const Layout& l) {
        // The last chunk of DATA, two bytes longer (still a possible size).
        const ChunkLoc& c = Tensor(l, base_, "model.layers.0.wb").chunks.back();
        Store<uint32_t>(b, c.record + 16, c.encoded_size + 2);
      });
  Add("chunk_overlap", "open", kLoss, "overlaps chunk",
      [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, chunk(l, 1).record + 8, chunk(l, 0).offset);
      });
  Add("chunk_overlap_across_tensors", "open", kLoss,
      "of tensor 'model.layers.0.wa' (offset", [&](std::string* b, const Layout& l) {
        Store<uint64_t>(b, chunk(l, 0).record + 8, norm(l).chunks.at(0).offset);
      });
  Add("chunks_short_of_tensor", "open", kLoss, "1 chunks decode to 44 bytes but the tensor has 48",
      [&](std::string* b, const Layout& l) {
        const ChunkLoc& c = norm(l).chunks.at(0);
        Store<uint32_t>(b, c.record + 4, 44);
        Store<uint32_t>(b, c.record + 16, 44);
      });
  Add("chunks_beyond_tensor", "open", kLoss, "chunks 0-0 decode to more than the tensor's 48",
      [&](std::string* b, const Layout& l) {
        const ChunkLoc& c = norm(l).chunks.at(0);
        Store<uint32_t>(b, c.record + 4, 52);
        Store<uint32_t>(b, c.record + 16, 52);
      });

  // ---- format 1.3 tensor records (EXTENDED_TENSORS) ----
  auto ext = [this](const Layout& l, const char* name) -> const TensorLoc& {
    return Tensor(l, ext_, name);
  };
  const char kGroup[] = "model.layers.0.wg";
  auto on_ext = [&](const std::string& name, absl::StatusCode code,
                    const std::string& message, Edit edit) {
    Add(name, "open", code, message, std::move(edit), kAll, &ext_);
  };
  on_ext("bits_zero", kLoss, "'model.layers.0.wg': bits 0 is not 1 to 8",
         [&](std::string* b, const Layout& l) {
           Store<uint8_t>(b, ext(l, kGroup).reserved, 0);
         });
  on_ext("bits_nine", kLoss, "'model.layers.0.wg': bits 9 is not 1 to 8",
         [&](std::string* b, const Layout& l) {
           Store<uint8_t>(b, ext(l, kGroup).reserved, 9);
         });
  on_ext("bits_for_raw", kLoss, "'model.ids': bits is 8, must be 0 for storage 5",
         [&](std::string* b, const Layout& l) {
           Store<uint8_t>(b, ext(l, "model.ids").reserved, 8);
         });
  on_ext("bits_for_f32", kLoss, "'model.scale': bits is 1, must be 0 for storage 1",
         [&](std::string* b, const Layout& l) {
           Store<uint8_t>(b, ext(l, "model.scale").reserved, 1);
         });
  on_ext("raw_q8_0", kLoss, "'model.ids': RAW storage of source_dtype 4 (Q8_0)",
         [&](std::string* b, const Layout& l) {
           Store<uint8_t>(b, ext(l, "model.ids").dtype, format::kDTypeQ8_0);
         });
  on_ext("group_size_zero", kLoss, "'model.layers.0.wg': group_size 0 is not 1 to 65536",
         [&](std::string* b, const Layout& l) {
           Store<uint32_t>(b, ext(l, kGroup).group, 0);
         });
  on_ext("group_size_65537", kLoss, "group_size 65537 is not 1 to 65536",
         [&](std::string* b, const Layout& l) {
           Store<uint32_t>(b, ext(l, kGroup).group, format::kMaxGroupSize + 1);
         });
  on_ext("group_reserved", kLoss, "reserved field params reserved is 1, must be 0",
         [&](std::string* b, const Layout& l) {
           Store<uint32_t>(b, ext(l, kGroup).group + 4, 1);
         });
  on_ext("group_pairs_past_end", kLoss,
         "3298534883328 (scale, zero) pairs of 8 bytes run past the end",
         [&](std::string* b, const Layout& l) {
           Store<uint64_t>(b, ext(l, kGroup).dims, uint64_t{1} << 40);  // x 3 groups
         });
  on_ext("source_dtype_15", kLoss, "source_dtype 15 is not 1 to 14",
         [&](std::string* b, const Layout& l) {
           Store<uint8_t>(b, ext(l, "model.ids").dtype, 15);
         });
  on_ext("storage_6", kLoss, "storage 6 is not 1 to 5",
         [&](std::string* b, const Layout& l) {
           Store<uint8_t>(b, ext(l, "model.ids").storage, 6);
         });
  on_ext("ndim_zero_group", kLoss, "'model.layers.0.wg': ndim is 0",
         [&](std::string* b, const Layout& l) {
           Store<uint8_t>(b, ext(l, kGroup).ndim, 0);
         });
  on_ext("zero_dimension_group", kLoss, "'model.layers.0.wg': dims[1] is 0",
         [&](std::string* b, const Layout& l) {
           Store<uint64_t>(b, ext(l, kGroup).dims + 8, 0);
         });
  on_ext("empty_tensor_with_chunk", kLoss,
         "'model.ids': chunk 0: chunks 0-0 decode to more than the tensor's 0 bytes",
         [&](std::string* b, const Layout& l) {
           Store<uint64_t>(b, ext(l, "model.ids").dims, 0);
         });
  // Without the flag, the 1.3 values are what they were in 1.2: corrupt.
  on_ext("extended_flag_cleared", kLoss,
         "'model.layers.0.wg': storage 4 is not 1, 2 or 3",
         [](std::string* b, const Layout&) { Store<uint32_t>(b, 12, 0); });
  Add("source_dtype_5_without_flag", "open", kLoss, "source_dtype 5 is not 1, 2, 3 or 4",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, norm(l).dtype, 5); });
  Add("ndim_zero_without_flag", "open", kLoss, "'model.norm.weight': ndim is 0",
      [&](std::string* b, const Layout& l) { Store<uint8_t>(b, norm(l).ndim, 0); });
  Add("zero_dimension_without_flag", "open", kLoss, "'model.norm.weight': dims[0] is 0",
      [&](std::string* b, const Layout& l) { Store<uint64_t>(b, norm(l).dims, 0); });

  // ---- only tensor data can show these: Open() succeeds, Verify() fails ----
  Add("data_checksum", "verify", kLoss, "section DATA (id 4): checksum",
      [&](std::string* b, const Layout& l) { (*b)[norm(l).chunks.at(0).offset] ^= 1; },
      no_data);
  Add("chunk_checksum", "verify", kLoss, "chunk checksum",
      [&](std::string* b, const Layout& l) { (*b)[norm(l).chunks.at(0).offset] ^= 1; },
      no_chunks);
  Add("padding_between_sections", "verify", kLoss,
      absl::StrFormat("padding: byte after section METADATA (id 1) is 0x01, must be 0 at "
                      "offset %d",
                      Sec(L, format::kSectionTable).offset - 1),
      [](std::string* b, const Layout& l) {
        (*b)[Sec(l, format::kSectionTable).offset - 1] = 1;
      });
  Add("padding_between_chunks", "verify", kLoss,
      "padding: byte after chunk 0 of tensor 'model.norm.weight' is 0x80",
      [&](std::string* b, const Layout& l) {
        const ChunkLoc& c = norm(l).chunks.at(0);
        (*b)[c.offset + c.encoded_size] = 0x80;
      });
  Add("padding_at_end", "verify", kLoss, "padding: byte after",
      [&](std::string* b, const Layout& l) {
        // Grow the file by 64 bytes of padding after the directory, one of
        // them not zero.
        b->append(64, '\0');
        b->back() = 1;
        Store<uint64_t>(b, 16, b->size());
      });
  const uint32_t n = TableSize();
  auto code_at_start = [&](uint16_t code) {
    return [&, code](std::string* b, const Layout& l) {
      Store<uint16_t>(b, SeqChunk(l).offset, code);
    };
  };
  Add("seqtable_invalid_code_n", "verify", kLoss,
      absl::StrFormat("invalid code %d (table has %d entries)", n, n), code_at_start(n));
  Add("seqtable_invalid_code_fffe", "verify", kLoss,
      absl::StrFormat("invalid code 65534 (table has %d entries)", n), code_at_start(0xFFFE));
  // Same size, rewritten so that the last group is an escape with its raw
  // bytes cut off by the end of the payload.
  Add("seqtable_escape_cut_off", "verify", kLoss, "escape cut off",
      [&](std::string* b, const Layout& l) {
        const ChunkLoc& c = SeqChunk(l);
        const uint32_t groups = c.decoded_size / 4;
        const uint32_t full = (c.encoded_size - 2 * groups) / 4;  // whole escapes before
        std::string p;
        for (uint32_t g = 0; g < full; ++g) p += std::string("\xff\xff" "abcd", 6);
        for (uint32_t g = full; g + 1 < groups; ++g) p += std::string(2, '\0');
        p += "\xff\xff";
        p += std::string(c.encoded_size - p.size(), 'z');  // fewer than 4 raw bytes
        b->replace(c.offset, c.encoded_size, p);
      });
  Add("seqtable_payload_leftover", "verify", kLoss, "payload length does not match",
      [&](std::string* b, const Layout& l) {
        const ChunkLoc& c = SeqChunk(l);
        b->replace(c.offset, c.encoded_size, std::string(c.encoded_size, '\0'));
      });
}

struct Expectation {
  std::string stage;
  std::string code;
  std::string message;
};

// EXPECTED.txt: "<file> <stage> <CODE> <message substring...>" per line.
std::map<std::string, Expectation> ReadExpected() {
  std::map<std::string, Expectation> out;
  std::istringstream in(ReadFile(std::string(kBadDir) + "/EXPECTED.txt"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string name;
    Expectation e;
    ls >> name >> e.stage >> e.code;
    std::getline(ls >> std::ws, e.message);
    out[name] = e;
  }
  return out;
}

std::string ExpectedText(const std::vector<BadFile>& files) {
  std::string s =
      "# Hand-crafted bad .tqm files: each breaks one rule of spec/FORMAT.md and must be\n"
      "# rejected. Generated by tests/bad_files_test.cc (TQM_UPDATE_BAD_FILES=1 to rewrite).\n"
      "# <file> <stage> <absl status code> <substring of the error message>\n"
      "#   stage open:   Reader::Open / Reader::FromBuffer fail\n"
      "#   stage verify: the file opens (the index is sound) and Reader::Verify fails\n";
  for (const BadFile& f : files) {
    s += absl::StrFormat("%s %s %s %s\n", f.name, f.stage, absl::StatusCodeToString(f.code),
                         f.message);
  }
  return s;
}

std::vector<std::string> ListTqm(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tqm") == 0) names.push_back(n);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The status a file gets from FromBuffer (stage open) or Verify (stage verify).
absl::Status Check(absl::Span<const uint8_t> bytes, const std::string& name,
                   std::string* stage) {
  auto r = tqm::Reader::FromBuffer(bytes, name);
  if (!r.ok()) {
    *stage = "open";
    return r.status();
  }
  *stage = "verify";
  return (*r)->Verify();
}

TEST(BadFiles, GeneratedCatalogueIsRejectedAsIntended) {
  Catalogue cat;
  ASSERT_GT(cat.files().size(), 80u);
  for (const BadFile& f : cat.files()) {
    SCOPED_TRACE(f.name);
    if (f.checksums_valid) {
      // Every checksum is right: a checksum is not what rejects this file.
      std::string again = f.bytes;
      FixChecksums(&again);
      EXPECT_EQ(again, f.bytes);
    }
    std::string stage;
    absl::Status s = Check(tqm_fuzz::Bytes(f.bytes), f.name, &stage);
    EXPECT_EQ(stage, f.stage) << s;
    EXPECT_EQ(s.code(), f.code) << s;
    EXPECT_NE(s.message().find(f.message), std::string::npos)
        << "message: " << s.message() << "\nexpected to contain: " << f.message;
    EXPECT_NE(s.message().find(f.name), std::string::npos) << "message does not name the file";
  }
}

TEST(BadFiles, CommittedFilesMatchTheGenerator) {
  Catalogue cat;
  if (const char* u = getenv("TQM_UPDATE_BAD_FILES"); u && *u && std::string(u) != "0") {
    mkdir(TQM_SOURCE_DIR "/spec", 0755);
    mkdir(TQM_SOURCE_DIR "/spec/vectors", 0755);
    mkdir(kBadDir, 0755);
    for (const std::string& old : ListTqm(kBadDir)) {
      unlink((std::string(kBadDir) + "/" + old).c_str());
    }
    for (const BadFile& f : cat.files()) WriteFile(std::string(kBadDir) + "/" + f.name, f.bytes);
    WriteFile(std::string(kBadDir) + "/EXPECTED.txt", ExpectedText(cat.files()));
    std::cout << "wrote " << cat.files().size() << " files to " << kBadDir << "\n";
  }
  EXPECT_EQ(ReadFile(std::string(kBadDir) + "/EXPECTED.txt"), ExpectedText(cat.files()))
      << "spec/vectors/bad/EXPECTED.txt is stale: TQM_UPDATE_BAD_FILES=1 " << "bad_files_test";
  std::vector<std::string> want;
  for (const BadFile& f : cat.files()) {
    want.push_back(f.name);
    EXPECT_EQ(ReadFile(std::string(kBadDir) + "/" + f.name), f.bytes)
        << f.name << " differs from the generator: TQM_UPDATE_BAD_FILES=1 bad_files_test";
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ListTqm(kBadDir), want) << "spec/vectors/bad/ holds files the generator does not";
}

// The committed files, as a reader from the outside sees them: by path
// (Reader::Open maps the file) and from memory, with the same result.
TEST(BadFiles, CommittedFilesAreRejectedAsExpected) {
  const std::map<std::string, Expectation> expected = ReadExpected();
  ASSERT_FALSE(expected.empty()) << "no " << kBadDir << "/EXPECTED.txt";
  EXPECT_EQ(ListTqm(kBadDir).size(), expected.size());
  for (const auto& [name, e] : expected) {
    SCOPED_TRACE(name);
    const std::string path = std::string(kBadDir) + "/" + name;
    const std::string bytes = ReadFile(path);
    std::string stage;
    absl::Status s = Check(tqm_fuzz::Bytes(bytes), path, &stage);
    EXPECT_EQ(stage, e.stage) << s;
    EXPECT_EQ(absl::StatusCodeToString(s.code()), e.code) << s;
    EXPECT_NE(s.message().find(e.message), std::string::npos) << s;

    auto opened = tqm::Reader::Open(path);
    absl::Status o = opened.ok() ? (*opened)->Verify() : opened.status();
    EXPECT_EQ(opened.ok(), e.stage == "verify") << o;
    EXPECT_EQ(absl::StatusCodeToString(o.code()), e.code) << o;
    EXPECT_NE(o.message().find(e.message), std::string::npos) << o;
  }
}

// Controls: what the catalogue's mutations must not break.
TEST(BadFiles, BaseFilesAndOptionalSectionsAreAccepted) {
  for (tqm::Granularity g : {tqm::Granularity::kTensor, tqm::Granularity::kRow}) {
    const std::string b = BaseFile(g);
    auto r = tqm::Reader::FromBuffer(tqm_fuzz::Bytes(b), "base.tqm");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE((*r)->Verify().ok());
    EXPECT_EQ((*r)->header().flags, 0u);
  }
  // The 1.3 base is what its catalogue entries assume, and the editor walks
  // its group parameters and its 0-d and empty tensors as the reader does.
  {
    const std::string b = ExtendedFile();
    auto r = tqm::Reader::FromBuffer(tqm_fuzz::Bytes(b), "extended.tqm");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE((*r)->Verify().ok());
    EXPECT_EQ((*r)->header().flags, format::kHeaderFlagExtendedTensors);
    EXPECT_EQ((*r)->header().minor, 3);
    const Layout l = Scan(b);
    const auto& ts = (*r)->tensors();
    ASSERT_EQ(l.tensors.size(), ts.size());
    ASSERT_EQ(ts.size(), 5u);
    EXPECT_EQ(ts[0].storage, format::kStorageU8Group);
    EXPECT_EQ(ts[0].group_size, 8u);
    EXPECT_EQ(ts[0].bits, 4);
    EXPECT_EQ(ts[0].affine.size(), 12u);
    EXPECT_EQ(ts[2].storage, format::kStorageRaw);
    EXPECT_TRUE(ts[3].dims.empty());
    EXPECT_EQ(ts[4].numel, 0u);
    EXPECT_TRUE(ts[4].chunks.empty());
    for (size_t i = 0; i < ts.size(); ++i) {
      SCOPED_TRACE(ts[i].name);
      EXPECT_EQ(b.compare(l.tensors[i].name, l.tensors[i].name_len, ts[i].name), 0);
      EXPECT_EQ(l.tensors[i].n_affine, ts[i].affine.size());
      EXPECT_EQ(l.tensors[i].chunks.size(), ts[i].chunks.size());
      if (!ts[i].affine.empty()) {
        float scale;
        ASSERT_TRUE(tqm_fuzz::Load(b, l.tensors[i].affine, &scale));
        EXPECT_EQ(scale, ts[i].affine[0].scale);
      }
    }
    std::string again = b;
    FixChecksums(&again);
    EXPECT_EQ(again, b);
  }
  // An unknown section without the REQUIRED flag is skipped.
  std::string b = BaseFile(tqm::Granularity::kTensor);
  const Layout l = Scan(b);
  const std::string dir = b.substr(l.directory_offset, l.section_count * 32);
  std::string e(32, '\0');
  Store<uint32_t>(&e, 0, 77);
  Store<uint64_t>(&e, 8, l.directory_offset);
  Store<uint64_t>(&e, 16, 5);
  b.resize(l.directory_offset);
  b += "later";
  b.resize(b.size() + 59, '\0');
  const uint64_t dir_offset = b.size();
  b += dir + e;
  Store<uint64_t>(&b, 16, b.size());
  Store<uint64_t>(&b, 24, dir_offset);
  Store<uint32_t>(&b, 32, l.section_count + 1);
  FixChecksums(&b);
  auto r = tqm::Reader::FromBuffer(tqm_fuzz::Bytes(b), "optional.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->Verify().ok()) << (*r)->Verify();
}

// The smallest metadata entries a writer can produce (one-letter key, empty
// STRING or BYTES value: 8 bytes) must be readable in any number.
TEST(GoodFiles, ManyTinyMetadataEntries) {
  tqm::MemorySource m;
  for (char k = 'a'; k <= 'z'; ++k) {
    m.AddMeta({std::string(1, k), k % 2 ? tqm::MetaValue::String("")
                                        : tqm::MetaValue::Bytes("")});
  }
  m.Add("w", {4}, {1, 2, 3, 4});
  tqm::PackOptions o;
  o.entropy = false;
  absl::StatusOr<std::string> b = tqm::PackToString(m, o);
  ASSERT_TRUE(b.ok()) << b.status();
  auto r = tqm::Reader::FromBuffer(tqm_fuzz::Bytes(*b), "tiny-metadata.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->metadata().size(), 26u + 2u);
}

}  // namespace
