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
#include <initializer_list>
#include <iostream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../fuzz/file_editor.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "codec/entropy.h"
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

// A file for the codec rules (R67-R85) of formats 1.1 and 1.2: two
// quantized tensors in one stored chunk each, which the catalogue rewrites
// into payloads of codecs 2 to 5. "model.layers.0.wq" (16 x 64) holds 1024
// bytes of a few repeating values, which every entropy codec codes;
// "model.layers.0.wz" (4 x 64) is 256 zero bytes, which fit hand-made
// payloads. Portable: RepeatingPattern and zeros, no <random>.
std::string CodecFile() {
  tqm::MemorySource m;
  m.Add("model.layers.0.wq", {16, 64}, tqm_test::RepeatingPattern(1024, 7));
  m.Add("model.layers.0.wz", {4, 64}, std::vector<float>(256, 0.0f));
  tqm::PackOptions o;
  o.entropy = false;
  o.max_table_entries = 0;
  o.threads = 1;
  absl::StatusOr<std::string> s = tqm::PackToString(m, o);
  if (!s.ok()) {
    ADD_FAILURE() << s.status();
    return "";
  }
  return *s;
}

// Rewrites chunk 0 of tensor `t` (0: wq, 1: wz) of a CodecFile() as a
// payload of `codec`, zeroing the rest of the old bytes (padding), and
// records minor_version 2 (the lowest that defines every codec). The
// payload must fit the chunk's slot: 1024 bytes for wq, 256 (in a 256-byte
// slot, the last chunk of DATA) for wz.
void Recode(std::string* b, size_t t, uint8_t codec, const std::string& payload) {
  const Layout l = Scan(*b);
  const ChunkLoc& c = l.tensors.at(t).chunks.at(0);
  if (payload.size() > c.encoded_size) {
    ADD_FAILURE() << "payload of " << payload.size() << " bytes does not fit";
    return;
  }
  std::fill(b->begin() + c.offset, b->begin() + c.offset + c.encoded_size, '\0');
  b->replace(c.offset, payload.size(), payload);
  Store<uint8_t>(b, c.record, codec);
  Store<uint32_t>(b, c.record + 16, static_cast<uint32_t>(payload.size()));
  Store<uint16_t>(b, 10, 2);
}

// Valid payloads for the 256 zero bytes of CodecFile()'s wz, by hand (see
// Catalogue::BuildCodecs()): a zstd frame of one RLE block, and a lanes
// payload with k = 0, G = 1, len[0] = 1, an escape of length 1, one stream
// of 32 zero words (each lane takes two words in block 0 and needs only
// the first) and no escaped byte.
std::string ZstdZeros256() {
  return std::string("\x28\xB5\x2F\xFD\x60\x00\x00\x03\x08\x00\x00", 11);
}
std::string LanesZeros256() {
  return std::string("\x02\x00\x00\x00\x04\x01\x20\x00", 8) + std::string(64, '\0');
}

// The byte after the symbol table block that starts at payload offset `p`
// (spec/FORMAT.md, "Symbol table block"), for editing encoder output; 0 if
// the block is malformed.
size_t SymbolTableEnd(const std::string& in, size_t p) {
  if (p + 2 > in.size()) return 0;
  const int lo = static_cast<uint8_t>(in[p]), hi = static_cast<uint8_t>(in[p + 1]);
  size_t bit = 8 * (p + 2);
  auto get = [&](int w) {
    uint32_t v = 0;
    for (int i = 0; i < w; ++i, ++bit) {
      if (bit / 8 >= in.size()) return uint32_t{0};
      v |= ((static_cast<uint8_t>(in[bit / 8]) >> (bit % 8)) & 1u) << i;
    }
    return v;
  };
  uint32_t a = 4, n = 1;
  for (int sym = lo; sym <= hi; ++sym) {
    int k = 0;
    while (k < 15 && (n << k) < a) ++k;
    uint32_t q = 0;
    while (q < 16 && get(1) == 1) ++q;
    const uint32_t u = q < 16 ? (q << k) + get(k) : get(16);
    a += u;
    if (++n == 8) {
      a = (a + 1) / 2;
      n = 4;
    }
  }
  return (bit + 7) / 8;
}

// An unsigned LEB128 number at `*p`; advances *p.
uint64_t Leb(const std::string& in, size_t* p) {
  uint64_t v = 0;
  for (int shift = 0; *p < in.size(); shift += 7) {
    const uint8_t x = static_cast<uint8_t>(in[(*p)++]);
    v |= uint64_t{x & 0x7Fu} << shift;
    if (!(x & 0x80)) break;
  }
  return v;
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
    codec_ = CodecFile();
    Build();
    BuildCodecs();
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
  void BuildCodecs();

  std::string base_, rows_, ext_, codec_;
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

// The codec rules, R67-R85: each entry rewrites one chunk of CodecFile()
// as a payload that breaks one rule. Open() succeeds (the index is sound);
// Verify() decodes the chunk and fails.
void Catalogue::BuildCodecs() {
  using C = absl::StatusCode;
  const C kLoss = C::kDataLoss;
  auto B = [](std::initializer_list<int> bytes) {
    std::string s;
    for (int x : bytes) s.push_back(static_cast<char>(x));
    return s;
  };
  auto on = [&](const std::string& name, const std::string& message, size_t tensor,
                uint8_t codec, std::string payload) {
    Add(
        name, "verify", kLoss, message,
        [=](std::string* b, const Layout&) { Recode(b, tensor, codec, payload); },
        FixOptions(), &codec_);
  };
  const Layout l = Scan(codec_);
  const ChunkLoc& wq = l.tensors.at(0).chunks.at(0);
  const std::string q = codec_.substr(wq.offset, wq.encoded_size);
  auto span = [](const std::string& x) { return tqm_fuzz::Bytes(x); };
  const uint8_t kZstd = format::kCodecZstd, kRans = format::kCodecRans,
                kHuffman = format::kCodecHuffman, kLanes = format::kCodecLanes;

  // ---- zstd (codec 2), on the 256 zero bytes of wz. A valid frame: magic,
  // descriptor 0x60 (2-byte content size, single segment), content size
  // 256 - 256 = 0, one RLE block (last, 256 bytes) of byte 00. ----
  const std::string magic = B({0x28, 0xB5, 0x2F, 0xFD});
  const std::string rle256 = B({0x03, 0x08, 0x00, 0x00});
  const std::string frame = ZstdZeros256();
  EXPECT_EQ(frame, magic + B({0x60, 0x00, 0x00}) + rle256);
  on("zstd_skippable_frame", "does not start with the frame magic", 1, kZstd,
     B({0x50, 0x2A, 0x4D, 0x18, 0x00, 0x00, 0x00, 0x00}) + frame);
  on("zstd_legacy_magic", "does not start with the frame magic", 1, kZstd,
     B({0x27, 0xB5, 0x2F, 0xFD}) + frame.substr(4));
  on("zstd_reserved_bit", "zstd: not a zstd frame", 1, kZstd,
     magic + B({0x68, 0x00, 0x00}) + rle256);
  on("zstd_no_content_size", "zstd: frame does not declare its content size", 1, kZstd,
     magic + B({0x00, 0x00}) + rle256);
  on("zstd_content_size_mismatch", "zstd: frame declares 257 bytes, expected 256", 1,
     kZstd, magic + B({0x60, 0x01, 0x00}) + rle256);
  on("zstd_trailing_byte", "zstd: input is not exactly one frame (trailing bytes)", 1,
     kZstd, frame + B({0x00}));
  on("zstd_second_frame", "zstd: input is not exactly one frame (trailing bytes)", 1,
     kZstd, frame + frame);
  on("zstd_frame_cut_off", "zstd: input is not exactly one frame (Src size is incorrect)",
     1, kZstd, frame.substr(0, frame.size() - 1));
  on("zstd_dictionary_id", "zstd: Dictionary mismatch", 1, kZstd,
     magic + B({0x61, 0x01, 0x00, 0x00}) + rle256);
  on("zstd_block_type_reserved", "zstd: input is not exactly one frame", 1, kZstd,
     magic + B({0x60, 0x00, 0x00, 0x07, 0x08, 0x00, 0x00}));
  on("zstd_short_content", "zstd: Data corruption detected", 1, kZstd,
     magic + B({0x60, 0x00, 0x00, 0xFB, 0x07, 0x00, 0x00}));
  on("zstd_checksum_mismatch", "zstd: Restored data doesn't match checksum", 1, kZstd,
     magic + B({0x64, 0x00, 0x00}) + rle256 + B({0x00, 0x00, 0x00, 0x00}));

  // ---- mode byte and symbol table block (codecs 3, 4, 5) ----
  on("rans_mode_3", "rans: unknown mode 3", 1, kRans, B({0x03, 0x00}));
  on("huffman_mode_3", "huffman: unknown mode 3", 1, kHuffman, B({0x03, 0x00}));
  on("lanes_mode_255", "lanes: unknown mode 255", 1, kLanes, B({0xFF, 0x00}));
  on("huffman_raw_size", "huffman: raw chunk holds 255 bytes, expected 256", 1, kHuffman,
     B({0x00}) + std::string(255, '\0'));
  on("lanes_constant_size", "lanes: malformed constant chunk", 1, kLanes,
     B({0x01, 0x00, 0x00}));
  on("rans_table_lo_above_hi",
     "rans symbol table: lowest symbol 98 > highest 97 at byte 1", 0, kRans,
     B({0x02, 0x62, 0x61}) + std::string(64, '\0'));
  on("huffman_table_past_end", "huffman symbol table: cut off at byte 3", 0, kHuffman,
     B({0x02, 0x00, 0xFF}));
  // v[0x61] = 13: zigzag 26, k = 2, q = 6: six ones, a zero, r = 2.
  on("huffman_length_13",
     "huffman symbol table: symbol 97 has value 13, outside [0, 12] at byte 5", 0,
     kHuffman, B({0x02, 0x61, 0x61, 0x3F, 0x01}) + std::string(16, '\0'));
  // v[0x61] = 0 in 3 bits, then a padding bit set.
  on("rans_table_padding", "rans symbol table: nonzero padding at byte 4", 0, kRans,
     B({0x02, 0x61, 0x61, 0x08}) + std::string(64, '\0'));

  // ---- rans (codec 3) ----
  // f[0x61] = 4096 (escape: 16 ones, then 8192 in 16 bits).
  on("rans_frequency_4096", "rans: a coded chunk needs two symbols or more", 0, kRans,
     B({0x02, 0x61, 0x61, 0xFF, 0xFF, 0x00, 0x20}) + std::string(64, '\0'));
  // f[0x61] = 2048, f[0x62] = 2047: 4095 in all.
  on("rans_frequencies_4095", "rans: frequencies sum to 4095, not 4096", 0, kRans,
     B({0x02, 0x61, 0x62, 0xFF, 0xFF, 0x00, 0x10, 0x02, 0x00}) + std::string(64, '\0'));
  // The table of the spec's example (2048 + 2048), then 55 of the 56 state bytes.
  on("rans_states_cut_off", "rans: lane states cut off", 0, kRans,
     B({0x02, 0x61, 0x62, 0xFF, 0xFF, 0x00, 0x10, 0x00, 0x00}) + std::string(55, '\0'));
  std::string rans;
  EXPECT_TRUE(tqm::EncodeRans(span(q), &rans).ok());
  EXPECT_EQ(rans[0], 2) << "the rans payload of wq is coded";
  on("rans_words_cut_off", "rans: words end before the last symbol", 0, kRans,
     rans.substr(0, rans.size() - 4));
  on("rans_words_left_over", "rans: 4 bytes left after the last symbol", 0, kRans,
     rans + std::string(4, '\0'));

  // ---- huffman (codec 4) ----
  on("huffman_one_length",
     "huffman: code lengths of 1 symbols do not form a complete prefix code", 0, kHuffman,
     B({0x02, 0x61, 0x61, 0x04}) + std::string(16, '\0'));
  // len 1, 1, 1 for 0x61 to 0x63: the code is over-full.
  on("huffman_lengths_overfull",
     "huffman: code lengths of 3 symbols do not form a complete prefix code", 0, kHuffman,
     B({0x02, 0x61, 0x63, 0x04}) + std::string(16, '\0'));
  // The spec's example table (1, 2, 2), then sizes that run out.
  const std::string h3 = B({0x02, 0x61, 0x63, 0x24, 0x00});
  on("huffman_size_past_end", "huffman: size of stream 1 cut off", 0, kHuffman,
     h3 + B({0x01}));
  on("huffman_size_fifth_byte", "huffman: size of stream 0", 0, kHuffman,
     h3 + B({0xFF, 0xFF, 0xFF, 0xFF, 0x10}) + std::string(16, '\0'));
  on("huffman_sizes_exceed_payload", "huffman: stream sizes exceed the input", 0,
     kHuffman, h3 + B({5, 5, 5, 5, 5, 5, 5}) + std::string(3, '\0'));
  std::string huff;
  EXPECT_TRUE(tqm::EncodeHuffman(span(q), &huff).ok());
  EXPECT_EQ(huff[0], 2) << "the huffman payload of wq is coded";
  {
    // Stream 0 one byte longer (a zero byte after its last code), stream 7
    // as before; and stream 0 one byte shorter, its last byte going to 1.
    size_t p = SymbolTableEnd(huff, 1);
    const size_t sizes = p;
    const uint64_t s0 = Leb(huff, &p);
    const size_t s0_end = p;
    const uint64_t s1 = Leb(huff, &p);
    size_t streams = p;
    for (int k = 2; k < 7; ++k) Leb(huff, &streams);
    EXPECT_TRUE(s0 > 1 && s0 < 127 && s1 < 126) << "one-byte sizes";
    std::string longer = huff;
    longer.insert(streams + s0, 1, '\0');
    longer[sizes] = static_cast<char>(s0 + 1);
    on("huffman_stream_padded_by_a_byte",
       "huffman: stream 0 does not end where its size says", 0, kHuffman, longer);
    std::string shorter = huff;
    shorter[sizes] = static_cast<char>(s0 - 1);
    shorter[s0_end] = static_cast<char>(s1 + 1);
    on("huffman_code_past_stream", "huffman: stream 0 does not end where its size says",
       0, kHuffman, shorter);
  }

  // ---- lanes (codec 5) ----
  // A valid payload for the 256 zero bytes of wz, by hand: k = 0, G = 1;
  // len[0] = 1 and an escape of length 1; one stream of 32 zero words (each
  // lane takes two words in block 0 and needs only the first); E = 0.
  const std::string lanes_head = B({0x02, 0x00, 0x00, 0x00, 0x04, 0x01});
  const std::string lanes_ok = LanesZeros256();
  EXPECT_EQ(lanes_ok.substr(0, lanes_head.size()), lanes_head);
  on("lanes_params_reserved_bit", "lanes: bad parameters byte 0x08", 1, kLanes,
     B({0x02, 0x08}) + lanes_ok.substr(2));
  on("lanes_group_code_3", "lanes: bad parameters byte 0x30", 1, kLanes,
     B({0x02, 0x30}) + lanes_ok.substr(2));
  on("lanes_ends_after_mode", "lanes: chunk ends before its parameters byte", 1, kLanes,
     B({0x02}));
  // k = 7, so H = 2: a length for high part 5.
  on("lanes_length_beyond_high_parts",
     "lanes: code length for high part 5, but 7 low bits leave 2", 1, kLanes,
     B({0x02, 0x07, 0x05, 0x05, 0x04, 0x00}) + std::string(16, '\0'));
  on("lanes_ends_before_escape_length", "lanes: chunk ends before the escape code length",
     1, kLanes, B({0x02, 0x00, 0x61, 0x62, 0x04}));
  on("lanes_escape_length_9", "lanes: escape code length 9 exceeds 8", 1, kLanes,
     B({0x02, 0x00, 0x61, 0x62, 0x04, 0x09}) + std::string(16, '\0'));
  // len[0x61] = len[0x62] = 1 and an escape of 1: 384 of 256.
  on("lanes_lengths_overfull", "lanes: code lengths do not form a complete prefix code",
     1, kLanes, B({0x02, 0x00, 0x61, 0x62, 0x04, 0x01}) + std::string(16, '\0'));
  on("lanes_size_past_end", "lanes: bad size of stream 0", 1, kLanes,
     lanes_head + B({0x80}));
  on("lanes_size_fifth_byte", "lanes: bad size of stream 0", 1, kLanes,
     lanes_head + B({0xFF, 0xFF, 0xFF, 0xFF, 0x10, 0x00}) + std::string(16, '\0'));
  on("lanes_sizes_mismatch",
     "lanes: 64 bytes follow the sizes; the streams take 62, the escapes 0 and the low "
     "plane 0",
     1, kLanes, lanes_head + B({31, 0}) + std::string(64, '\0'));
  // k = 1 (H = 128): one escaped byte of 0x80; sizes add up (2 + 1 + 32).
  on("lanes_escape_too_large",
     "lanes: escape 0 is high part 128, but 1 low bits leave 128", 1, kLanes,
     B({0x02, 0x01, 0x00, 0x00, 0x04, 0x01, 0x01, 0x01, 0x00, 0x00, 0x80}) +
         std::string(32, '\0'));
  {
    std::string x = lanes_head + B({33, 0}) + std::string(66, '\0');
    on("lanes_stream_left_over", "lanes: stream 0 holds 66 bytes but decoding took 64", 1,
       kLanes, x);
    x = lanes_ok;
    x[lanes_head.size() + 2 + 2 * 16] = 1;  // lane 0's second word, never needed
    on("lanes_buffer_not_zero", "lanes: stream 0: lane 0 ends with nonzero padding bits",
       1, kLanes, x);
    x = lanes_head + B({32, 1}) + std::string(64, '\0') + B({0x00});
    on("lanes_escape_left_over",
       "lanes: the chunk holds 1 escaped high parts but its codes take 0", 1, kLanes, x);
  }
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

// Controls: the payloads the codec entries break are valid as they are, and
// so are the unmodified encodings they edit.
TEST(BadFiles, CodecControlsAreAccepted) {
  const std::string base = CodecFile();
  const Layout l = Scan(base);
  const ChunkLoc& wq = l.tensors.at(0).chunks.at(0);
  const std::string q = base.substr(wq.offset, wq.encoded_size);
  std::string rans, huff;
  ASSERT_TRUE(tqm::EncodeRans(tqm_fuzz::Bytes(q), &rans).ok());
  ASSERT_TRUE(tqm::EncodeHuffman(tqm_fuzz::Bytes(q), &huff).ok());
  const struct {
    size_t tensor;
    uint8_t codec;
    std::string payload;
  } controls[] = {{1, format::kCodecZstd, ZstdZeros256()},
                  {1, format::kCodecLanes, LanesZeros256()},
                  {0, format::kCodecRans, rans},
                  {0, format::kCodecHuffman, huff}};
  for (const auto& c : controls) {
    SCOPED_TRACE(static_cast<int>(c.codec));
    std::string b = base;
    Recode(&b, c.tensor, c.codec, c.payload);
    FixChecksums(&b);
    auto r = tqm::Reader::FromBuffer(tqm_fuzz::Bytes(b), "control.tqm");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE((*r)->Verify().ok()) << (*r)->Verify();
    std::string out((*r)->tensors()[c.tensor].byte_size, '\x55');
    ASSERT_TRUE(
        (*r)->DecodeTensor(c.tensor, absl::Span<uint8_t>(
                                         reinterpret_cast<uint8_t*>(&out[0]), out.size()))
            .ok());
    const ChunkLoc& k = l.tensors.at(c.tensor).chunks.at(0);
    EXPECT_EQ(out, base.substr(k.offset, k.decoded_size));
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
