// Conformance of tqm::Reader to spec/FORMAT.md, "Validation": for every
// reader rule R1..R66 and R86..R89, a valid small file from tqm::PackToString is mutated
// to break exactly that rule (checksums recomputed so that the intended check is the one
// that fires), and the test asserts the error class the spec assigns and that the message
// names the file, the structure or field and the offset. Also: the check orders the spec
// mandates, valid edge cases a reader must accept, and the worked example of Appendix A
// against spec/vectors/tiny.tqm.
//
// File-based goldens of corrupt files live in tests/bad_files_test.cc; this
// file covers rules, building its inputs in memory. Fields are found through
// libtqm's layout module (container/layout.h), which owns the byte layout;
// the Appendix A walkthrough instead checks literal offsets against the
// spec's worked example, so the module's offsets are pinned independently.

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "container/layout.h"
#include "test_util.h"
#include "tqm/codec.h"
#include "tqm/format.h"
#include "tqm/reader.h"
#include "tqm/source.h"
#include "tqm/writer.h"

namespace {

using absl::StatusCode;
using tqm_test::AsSpan;
namespace layout = tqm::layout;
using H = tqm::layout::Header;        // header field offsets
using E = tqm::layout::SectionEntry;  // directory entry field offsets

constexpr char kFileName[] = "conf.tqm";
constexpr uint32_t kUnknownSection = 9;  // an id version 1.0 does not assign

// ---------------------------------------------------------------------------
// A file held in memory, with little-endian field access and helpers that
// recompute checksums after a mutation.

struct File {
  std::string b;

  template <typename T>
  T Get(uint64_t off) const {
    T v;
    EXPECT_LE(off + sizeof(T), b.size());
    std::memcpy(&v, b.data() + off, sizeof(T));
    return v;
  }
  template <typename T>
  void Set(uint64_t off, T v) {
    ASSERT_LE(off + sizeof(T), b.size());
    std::memcpy(&b[off], &v, sizeof(T));
  }
  uint8_t& At(uint64_t off) { return reinterpret_cast<uint8_t&>(b[off]); }

  uint64_t DirOffset() const { return Get<uint64_t>(H::kDirectoryOffsetAt); }
  uint32_t SectionCount() const { return Get<uint32_t>(H::kSectionCountAt); }
  // Offset of the directory entry of section `id`.
  uint64_t Entry(uint32_t id) const {
    for (uint32_t i = 0; i < SectionCount(); ++i) {
      uint64_t e = DirOffset() + E::kSize * i;
      if (Get<uint32_t>(e + E::kIdAt) == id) return e;
    }
    ADD_FAILURE() << "no section " << id;
    return 0;
  }
  uint64_t SecOff(uint32_t id) const { return Get<uint64_t>(Entry(id) + E::kOffsetAt); }
  uint64_t SecLen(uint32_t id) const { return Get<uint64_t>(Entry(id) + E::kLengthAt); }

  uint64_t Xxh(uint64_t off, uint64_t len) const {
    return XXH3_64bits(b.data() + off, len);
  }

  // Header checksum: XXH3-64 of bytes 0..55, stored at 56.
  void SealHeader() {
    Set<uint64_t>(H::kHeaderChecksumAt, Xxh(0, tqm::format::kHeaderChecksummedSize));
  }
  // Directory checksum (header offset 40), then the header.
  void SealDirectory() {
    const uint64_t d = DirOffset(), n = uint64_t{SectionCount()} * E::kSize;
    if (d <= b.size() && n <= b.size() - d)
      Set<uint64_t>(H::kDirectoryChecksumAt, Xxh(d, n));
    SealHeader();
  }
  // Every section checksum whose range lies in the file, then the directory
  // and the header.
  void Reseal() {
    const uint64_t d = DirOffset();
    for (uint32_t i = 0; i < SectionCount() && d + E::kSize * (i + 1) <= b.size(); ++i) {
      const uint64_t e = d + E::kSize * i;
      const uint64_t off = Get<uint64_t>(e + E::kOffsetAt),
                     len = Get<uint64_t>(e + E::kLengthAt);
      if (off <= b.size() && len <= b.size() - off) {
        Set<uint64_t>(e + E::kChecksumAt, Xxh(off, len));
      }
    }
    SealDirectory();
  }

  // Appends a directory entry for a new section holding `payload` (the
  // writer puts the directory last, so it can grow in place), places the
  // payload at the next multiple of 64 after it, and reseals. Returns the
  // offset of the new entry.
  uint64_t AddSection(uint32_t id, uint32_t flags, const std::string& payload) {
    const uint64_t d = DirOffset();
    const uint32_t n = SectionCount();
    EXPECT_EQ(d + E::kSize * n, b.size()) << "directory is not last";
    const uint64_t e = b.size();
    b.append(E::kSize, '\0');
    while (b.size() % tqm::format::kAlignment) b.push_back('\0');
    const uint64_t off = b.size();
    b += payload;
    while (b.size() % tqm::format::kAlignment) b.push_back('\0');
    std::string entry;
    layout::Encode(layout::SectionEntry{id, flags, off, payload.size(), 0}, &entry);
    b.replace(e, E::kSize, entry);
    Set<uint32_t>(H::kSectionCountAt, n + 1);
    Set<uint64_t>(H::kFileSizeAt, b.size());
    Reseal();
    return e;
  }
};

// Offsets of the fields of one metadata entry.
struct MetaLayout {
  uint64_t key_len, key, type, value;
  std::string key_str;
};

std::vector<MetaLayout> WalkMetadata(const File& f) {
  std::vector<MetaLayout> out;
  const uint64_t s = f.SecOff(tqm::format::kSectionMetadata);
  const uint32_t count = f.Get<uint32_t>(s + layout::SectionHead::kCountAt);
  uint64_t p = s + layout::SectionHead::kSize;
  for (uint32_t i = 0; i < count; ++i) {
    const uint16_t kl = f.Get<uint16_t>(p);
    const layout::MetaEntryOffsets o = layout::MetaOffsets(kl);
    MetaLayout m;
    m.key_len = p + o.key_len;
    m.key = p + o.key;
    m.key_str = f.b.substr(m.key, kl);
    m.type = p + o.type;
    m.value = p + o.value;
    const uint8_t type = f.Get<uint8_t>(m.type);
    p = m.value + (type <= tqm::format::kMetaFloat64 ? 8 : 4 + f.Get<uint32_t>(m.value));
    out.push_back(m);
  }
  return out;
}

// Offsets of the fields of one tensor record and its chunk records.
// `reserved0` is the `bits` byte in a file with EXTENDED_TENSORS; for
// U8_GROUP, `params` is the group_size field and `pairs` the first pair.
struct TensorLayout {
  uint64_t rec, name, dtype, storage, ndim, reserved0, layer, dims, params, pairs,
      chunk_count, reserved1;
  std::vector<uint64_t> chunks;  // offsets of the 32-byte chunk records
};

std::vector<TensorLayout> WalkIndex(const File& f) {
  std::vector<TensorLayout> out;
  const uint64_t s = f.SecOff(tqm::format::kSectionTensorIndex);
  const uint32_t count = f.Get<uint32_t>(s + layout::SectionHead::kCountAt);
  uint64_t p = s + layout::SectionHead::kSize;
  for (uint32_t i = 0; i < count; ++i) {
    const uint16_t nl = f.Get<uint16_t>(p);
    const layout::TensorRecordOffsets head = layout::TensorOffsets(nl, 0, 0, 0, 0);
    const uint8_t ndim = f.Get<uint8_t>(p + head.ndim);
    const uint8_t storage = f.Get<uint8_t>(p + head.storage);
    std::vector<uint64_t> dims;
    for (uint8_t d = 0; d < ndim; ++d)
      dims.push_back(f.Get<uint64_t>(p + head.dims + 8 * d));
    const layout::TensorRecordOffsets shaped =
        layout::TensorOffsets(nl, ndim, storage, 0, 0);
    const uint32_t g =
        storage == tqm::format::kStorageU8Group ? f.Get<uint32_t>(p + shaped.params) : 0;
    uint64_t pairs = 0;
    EXPECT_TRUE(layout::PairCount(storage, dims, g, &pairs));
    const uint32_t cc = f.Get<uint32_t>(
        p + layout::TensorOffsets(nl, ndim, storage, pairs, 0).chunk_count);
    const layout::TensorRecordOffsets o =
        layout::TensorOffsets(nl, ndim, storage, pairs, cc);
    TensorLayout t;
    t.rec = p;
    t.name = p + o.name;
    t.dtype = p + o.source_dtype;
    t.storage = p + o.storage;
    t.ndim = p + o.ndim;
    t.reserved0 = p + o.bits;
    t.layer = p + o.layer;
    t.dims = p + o.dims;
    t.params = p + o.params;
    t.pairs = p + o.pairs;
    t.chunk_count = p + o.chunk_count;
    t.reserved1 = p + o.reserved1;
    for (uint32_t k = 0; k < cc; ++k)
      t.chunks.push_back(p + o.chunks + layout::ChunkRecord::kSize * k);
    p += o.size;
    out.push_back(t);
  }
  return out;
}

// Chunk record field offsets.
constexpr uint64_t kChCodec = layout::ChunkRecord::kCodecAt,
                   kChDecoded = layout::ChunkRecord::kDecodedSizeAt,
                   kChOffset = layout::ChunkRecord::kOffsetAt,
                   kChEncoded = layout::ChunkRecord::kEncodedSizeAt,
                   kChReserved1 = layout::ChunkRecord::kReserved1At,
                   kChChecksum = layout::ChunkRecord::kChecksumAt;

// The base file: tensor 0 is a 5x7 U8_TENSOR matrix in one seqtable chunk
// (as in spec/vectors/tiny.tqm: codes 0,1,0,1,0,1,0, an escape, a 3-byte
// tail; a 2-entry table); tensors 1 and 2 are F32 vectors of 8 and 4 values
// in one stored chunk each. Metadata of all four types.
const char kT0[] = "model.layers.0.mlp.up_proj.weight";

tqm::MemorySource BaseSource() {
  tqm::MemorySource m;
  std::vector<float> w(35);
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i % 8 < 4) ? 0.5f : -0.25f;
  w[30] = 1.0f;
  m.Add(kT0, {5, 7}, w);
  m.Add("a.weight", {8}, {1, 2, 3, 4, 5, 6, 7, 8});
  m.Add("b.weight", {4}, {-1, -2, -3, -4});
  m.AddMeta({"general.architecture", tqm::MetaValue::String("llama")});
  m.AddMeta({"test.i", tqm::MetaValue::Int(-42)});
  m.AddMeta({"test.f", tqm::MetaValue::Float(0.125)});
  m.AddMeta({"test.b", tqm::MetaValue::Bytes(std::string("\x00\x01\xff", 3))});
  return m;
}

// Options for a 1.0 file: stored and seqtable chunks only, so that the
// layout the tests mutate does not depend on the writer's entropy codecs.
tqm::PackOptions V10() {
  tqm::PackOptions o;
  o.entropy = false;
  return o;
}

File Pack(tqm::MemorySource src, const tqm::PackOptions& o = V10()) {
  auto bytes = tqm::PackToString(src, o);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return File{bytes.ok() ? *bytes : std::string()};
}

File Base() { return Pack(BaseSource()); }

File Rows() {
  tqm::PackOptions o = V10();
  o.granularity = tqm::Granularity::kRow;
  return Pack(BaseSource(), o);
}

absl::StatusOr<std::unique_ptr<tqm::Reader>> Open(const File& f) {
  return tqm::Reader::FromBuffer(AsSpan(f.b), kFileName);
}

// Every message names the file and, unless `offset` is false, an offset;
// and contains each of `parts`.
void ExpectMessage(const absl::Status& s, const std::vector<std::string>& parts,
                   bool offset = true) {
  const std::string m(s.message());
  EXPECT_NE(m.find(kFileName), std::string::npos) << "does not name the file: " << m;
  if (offset) EXPECT_NE(m.find("offset "), std::string::npos) << "names no offset: " << m;
  for (const std::string& p : parts) {
    EXPECT_NE(m.find(p), std::string::npos) << "lacks \"" << p << "\": " << m;
  }
}

// Open() must fail with `code` and a message containing `parts`.
void ExpectOpenError(const File& f, StatusCode code,
                     const std::vector<std::string>& parts, bool offset = true) {
  auto r = Open(f);
  ASSERT_FALSE(r.ok()) << "accepted; expected " << absl::StatusCodeToString(code)
                       << " with " << (parts.empty() ? "" : parts[0]);
  EXPECT_EQ(r.status().code(), code) << r.status();
  ExpectMessage(r.status(), parts, offset);
}

void ExpectOpens(const File& f) {
  auto r = Open(f);
  EXPECT_TRUE(r.ok()) << r.status();
}

// Open() succeeds; Verify() fails with DataLoss and `parts`.
void ExpectVerifyError(const File& f, const std::vector<std::string>& parts) {
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  absl::Status s = (*r)->Verify();
  ASSERT_FALSE(s.ok()) << "Verify() accepted the file";
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
  ExpectMessage(s, parts);
}

// ---------------------------------------------------------------------------

TEST(Conformance, BaseFilesAreValidAndShapedAsTheTestsAssume) {
  for (const File& f : {Base(), Rows()}) {
    auto r = Open(f);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->Verify().ok());
    const auto& t = (*r)->tensors();
    ASSERT_EQ(t.size(), 3u);
    ASSERT_EQ(t[0].chunks.size(), 1u);
    EXPECT_EQ(t[0].chunks[0].codec, tqm::format::kCodecSeqTable);
    EXPECT_EQ(t[0].chunks[0].decoded_size, 35u);
    EXPECT_EQ(t[0].chunks[0].encoded_size, 23u);
    EXPECT_EQ((*r)->table().size(), 2u);
    EXPECT_EQ(t[1].chunks[0].codec, tqm::format::kCodecStored);
    EXPECT_EQ(t[2].chunks[0].codec, tqm::format::kCodecStored);
    EXPECT_EQ(t[1].chunks[0].offset, t[0].chunks[0].offset + 64);
    EXPECT_EQ(t[2].chunks[0].offset, t[0].chunks[0].offset + 128);
    // The test-side walkers agree with the reader.
    auto idx = WalkIndex(f);
    ASSERT_EQ(idx.size(), 3u);
    EXPECT_EQ(f.Get<uint64_t>(idx[1].chunks[0] + kChOffset), t[1].chunks[0].offset);
    EXPECT_EQ(WalkMetadata(f).size(), (*r)->metadata().size());
    EXPECT_EQ((*r)->header().minor, 0);
    // Directory last: File::AddSection relies on it.
    EXPECT_EQ(f.DirOffset() + E::kSize * f.SectionCount(), f.b.size());
  }
  EXPECT_EQ(Rows().Get<uint8_t>(WalkIndex(Rows())[0].storage),
            tqm::format::kStorageU8Row);
}

// ---------------------------------------------------------------------------
// Header: R1-R11.

TEST(Header, R1_ShorterThan64Bytes) {
  const File f = Base();
  for (size_t n : {0, 1, 8, 10, 56, 63}) {
    SCOPED_TRACE(n);
    ExpectOpenError(File{f.b.substr(0, n)}, StatusCode::kDataLoss, {"shorter than"},
                    /*offset=*/false);
  }
  // Through Open() too, which stats the file before mapping it.
  const std::string path = ::testing::TempDir() + "/conformance_short.tqm";
  tqm_test::WriteFile(path, f.b.substr(0, 20));
  auto r = tqm::Reader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status();
  std::remove(path.c_str());
}

TEST(Header, R2_Magic) {
  for (size_t i = 0; i < 8; ++i) {
    File f = Base();
    f.At(i) ^= 0x20;
    f.SealHeader();
    ExpectOpenError(f, StatusCode::kDataLoss, {"header", "magic", "offset 0"});
  }
  // R2 before R3: a bad magic wins over an unknown major version.
  File f = Base();
  f.At(0) = 0x88;
  f.Set<uint16_t>(H::kMajorVersionAt, 2);
  ExpectOpenError(f, StatusCode::kDataLoss, {"magic"});
}

TEST(Header, R3_MajorVersion_CheckedBeforeTheHeaderChecksum) {
  for (uint16_t major : {0, 2, 0xFFFF}) {
    File f = Base();
    f.Set<uint16_t>(H::kMajorVersionAt, major);
    // Not resealed: R3 comes before R4, since another major version may lay
    // its header out differently.
    ExpectOpenError(f, StatusCode::kUnimplemented,
                    {"header", "major_version " + std::to_string(major), "offset 8"});
    f.SealHeader();
    ExpectOpenError(f, StatusCode::kUnimplemented, {"major_version"});
  }
}

TEST(Header, MinorVersionsAreAllAccepted) {
  for (uint16_t minor : {1, 7, 0xFFFF}) {
    File f = Base();
    f.Set<uint16_t>(H::kMinorVersionAt, minor);
    f.SealHeader();
    auto r = Open(f);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->header().minor, minor);
  }
}

TEST(Header, R4_HeaderChecksum_CheckedBeforeTheFields) {
  // Any change to bytes 0..55 after the version, or to the checksum itself.
  for (uint64_t off : {10, 12, 16, 24, 32, 36, 40, 48, 56, 63}) {
    SCOPED_TRACE(off);
    File f = Base();
    f.At(off) ^= 0x01;
    ExpectOpenError(f, StatusCode::kDataLoss, {"header", "header_checksum", "offset 56"});
  }
  // An unknown flag without a matching checksum is corruption, not a feature.
  File f = Base();
  f.Set<uint32_t>(H::kFlagsAt, 1);
  ExpectOpenError(f, StatusCode::kDataLoss, {"header_checksum"});
}

TEST(Header, R5_UnknownFlags) {
  for (uint32_t flags : {2u, 0x80000000u}) {
    File f = Base();
    f.Set<uint32_t>(H::kFlagsAt, flags);
    f.SealHeader();
    ExpectOpenError(f, StatusCode::kUnimplemented, {"header", "flags", "offset 12"});
  }
}

TEST(Header, R6_Reserved) {
  File f = Base();
  f.Set<uint32_t>(H::kReserved0At, 1);
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kDataLoss, {"header", "reserved0", "offset 36"});
  f = Base();
  f.Set<uint64_t>(H::kReserved1At, uint64_t{1} << 63);
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kDataLoss, {"header", "reserved1", "offset 48"});
}

TEST(Header, R7_FileSize) {
  // Header says one byte more / less than the file.
  for (int delta : {-1, 1, 64}) {
    File f = Base();
    f.Set<uint64_t>(H::kFileSizeAt, f.b.size() + delta);
    f.SealHeader();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"header", "file_size", "truncated", "offset 16"});
  }
  // The file is extended or truncated; the header is intact.
  File f = Base();
  f.b.append(64, '\0');
  ExpectOpenError(f, StatusCode::kDataLoss, {"file_size", "extended"});
  f = Base();
  f.b.resize(f.b.size() - 32);
  ExpectOpenError(f, StatusCode::kDataLoss, {"file_size", "truncated"});
}

TEST(Header, R8_SectionCount) {
  File f = Base();
  f.Set<uint32_t>(H::kSectionCountAt, 0);
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"header", "section_count is 0", "offset 32"});
  // Above the limit: ResourceExhausted, checked before the count sizes the
  // directory (which would also run past the end of the file).
  for (uint32_t n : {65u, 0xFFFFFFFFu}) {
    f = Base();
    f.Set<uint32_t>(H::kSectionCountAt, n);
    f.SealHeader();
    ExpectOpenError(f, StatusCode::kResourceExhausted,
                    {"section_count", "limit", "offset 32"});
  }
}

TEST(Header, R9_DirectoryOffsetAlignment) {
  const uint64_t dir = Base().DirOffset();
  for (uint64_t d : {uint64_t{0}, uint64_t{32}, uint64_t{63}, dir + 1, dir + 32}) {
    SCOPED_TRACE(d);
    File f = Base();
    f.Set<uint64_t>(H::kDirectoryOffsetAt, d);
    f.SealHeader();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"header", "directory_offset", "multiple of 64", "offset 24"});
  }
}

TEST(Header, R10_DirectoryInsideTheFile) {
  File f = Base();
  f.Set<uint64_t>(H::kDirectoryOffsetAt,
                  f.DirOffset() + 64);  // aligned, but 4 entries run past the end
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"section directory", "past the end", "offset 24"});
  f = Base();
  f.Set<uint64_t>(H::kDirectoryOffsetAt, uint64_t{1} << 63);  // far outside; no overflow
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kDataLoss, {"past the end"});
  f = Base();
  f.Set<uint32_t>(H::kSectionCountAt, 5);  // a fifth entry beyond the end of the file
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kDataLoss, {"past the end"});
}

TEST(Header, R11_DirectoryChecksum_CheckedBeforeTheEntries) {
  File f = Base();
  f.At(f.DirOffset() + E::kSize + 8) ^= 0x01;  // a byte of entry 1
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"section directory", "directory_checksum",
                   absl::StrFormat("offset %d", f.DirOffset())});
  // An unknown section flag in a directory whose checksum does not match is
  // corruption (R11), not an unknown feature (R14).
  f = Base();
  f.At(f.Entry(4) + E::kFlagsAt) |= 0x02;
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kDataLoss, {"directory_checksum"});
}

// ---------------------------------------------------------------------------
// Directory: R12-R20.

TEST(Directory, R12_IdZero) {
  File f = Base();
  f.AddSection(0, 0, "x");
  ExpectOpenError(f, StatusCode::kDataLoss, {"section directory entry 4", "id 0"});
}

TEST(Directory, R13_DuplicateId) {
  File f = Base();
  f.AddSection(tqm::format::kSectionMetadata, tqm::format::kSectionFlagRequired,
               std::string(8, '\0'));
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"section directory entry 4", "METADATA (id 1) appears twice"});
}

TEST(Directory, R14_UnknownSectionFlags) {
  File f = Base();
  f.At(f.Entry(4) + E::kFlagsAt) |= 0x02;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kUnimplemented, {"DATA (id 4)", "flags 0x3"});
  f = Base();
  f.AddSection(kUnknownSection, 0x80000000u, "x");
  ExpectOpenError(f, StatusCode::kUnimplemented, {"id 9", "flags 0x80000000"});
}

TEST(Directory, R15_UnknownRequiredSection) {
  File f = Base();
  const uint64_t e =
      f.AddSection(kUnknownSection, tqm::format::kSectionFlagRequired, "future");
  ExpectOpenError(f, StatusCode::kUnimplemented,
                  {"id 9", "REQUIRED", absl::StrFormat("offset %d", e)});
  // Without REQUIRED the same section is skipped: neither its contents nor
  // its checksum are examined at open (R64 checks the checksum in Verify).
  f = Base();
  const uint64_t e2 = f.AddSection(kUnknownSection, 0, "future");
  f.Set<uint64_t>(e2 + 24, 12345);
  f.SealDirectory();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->sections().size(), 5u);
  EXPECT_EQ((*r)->tensors().size(), 3u);
  // An empty optional section is allowed too.
  f = Base();
  f.AddSection(kUnknownSection, 0, "");
  r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->Verify().ok());
}

TEST(Directory, R16_SectionOffsetAlignment) {
  for (uint64_t off : {0ull, 32ull, 0x41ull}) {
    SCOPED_TRACE(off);
    File f = Base();
    const uint64_t e = f.AddSection(kUnknownSection, 0, "");  // empty: overlaps nothing
    f.Set<uint64_t>(e + E::kOffsetAt, off);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"entry 4", "id 9", "multiple of 64",
                     absl::StrFormat("offset %d", e + E::kOffsetAt)});
  }
  // A core section too.
  File f = Base();
  f.Set<uint64_t>(f.Entry(2) + E::kOffsetAt, f.SecOff(2) + 4);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"TABLE (id 2)", "multiple of 64"});
}

TEST(Directory, R17_SectionInsideTheFile) {
  File f = Base();
  uint64_t e = f.AddSection(kUnknownSection, 0, "x");
  f.Set<uint64_t>(e + E::kLengthAt, 65);  // one byte past the end of the file
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"id 9", "past the end"});
  f = Base();
  e = f.AddSection(kUnknownSection, 0, "x");
  f.Set<uint64_t>(e + E::kLengthAt, ~uint64_t{0});  // no overflow in the range check
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"id 9", "past the end"});
  f = Base();
  e = f.AddSection(kUnknownSection, 0, "");
  f.Set<uint64_t>(e + E::kOffsetAt, f.b.size() + 64);  // an empty range, but outside
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"id 9", "past the end"});
}

TEST(Directory, R18_Overlap) {
  // A section over METADATA.
  File f = Base();
  uint64_t e = f.AddSection(kUnknownSection, 0, "12345678");
  f.Set<uint64_t>(e + E::kOffsetAt, f.SecOff(1));
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"overlaps", "METADATA (id 1)", "id 9"});
  // A section over the directory.
  f = Base();
  e = f.AddSection(kUnknownSection, 0, "12345678");
  f.Set<uint64_t>(e + E::kOffsetAt, f.DirOffset());
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"overlaps", "the section directory"});
  // Two core sections: TABLE moved onto METADATA.
  f = Base();
  f.Set<uint64_t>(f.Entry(2) + E::kOffsetAt, f.SecOff(1));
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"overlaps", "TABLE (id 2)", "METADATA (id 1)"});
  // Empty ranges overlap nothing (spec "Offsets and ranges"), even at an
  // offset strictly inside another section.
  f = Base();
  e = f.AddSection(kUnknownSection, 0, "");
  f.Set<uint64_t>(e + E::kOffsetAt, f.SecOff(4) + 64);
  ASSERT_GT(f.SecLen(4), 64u);
  f.Reseal();
  ExpectOpens(f);
}

TEST(Directory, R19_CoreSectionMissingOrNotRequired) {
  for (uint32_t id = 1; id <= 4; ++id) {
    SCOPED_TRACE(id);
    // Present without REQUIRED.
    File f = Base();
    f.Set<uint32_t>(f.Entry(id) + E::kFlagsAt, 0);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"lacks the REQUIRED flag"});
    // Missing: its entry now describes an optional section of unknown id.
    f = Base();
    f.Set<uint32_t>(f.Entry(id) + E::kFlagsAt, 0);
    f.Set<uint32_t>(f.Entry(id), kUnknownSection);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"section directory", "is missing"});
  }
  // A directory of fewer than four entries.
  File f = Base();
  f.Set<uint32_t>(H::kSectionCountAt, 3);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"is missing"});
}

TEST(Directory, R20_SectionChecksums_CheckedBeforeTheContents) {
  for (uint32_t id = 1; id <= 3; ++id) {
    SCOPED_TRACE(id);
    File f = Base();
    f.At(f.SecOff(id)) ^= 0x40;  // count: would also break the contents
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"section", "checksum", absl::StrFormat("offset %d", f.SecOff(id))});
  }
  // An unknown metadata type under a stale checksum is reported as the
  // checksum, not as R26.
  File f = Base();
  f.At(WalkMetadata(f)[0].type) = 9;
  ExpectOpenError(f, StatusCode::kDataLoss, {"METADATA (id 1)", "checksum"});
  // DATA is not checked at open (R63 in Verify, R59 per chunk).
  f = Base();
  f.Set<uint64_t>(f.Entry(4) + E::kChecksumAt, 1);
  f.SealDirectory();
  ExpectOpens(f);
}

// ---------------------------------------------------------------------------
// METADATA: R21-R29.

TEST(Metadata, R21_HeaderTooShortOrReservedNonzero) {
  File f = Base();
  f.Set<uint32_t>(f.SecOff(1) + layout::SectionHead::kReservedAt, 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"METADATA", "reserved"});
  for (uint64_t len : {0, 4, 7}) {
    f = Base();
    f.Set<uint64_t>(f.Entry(1) + E::kLengthAt, len);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"METADATA", "remain"});
  }
}

TEST(Metadata, R22_CountNotBackedByBytes) {
  File f = Base();
  f.Set<uint32_t>(f.SecOff(1), 0xFFFFFFFF);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"METADATA", "count 4294967295"});
  // The bound is (length - 8) / 8: entries of 8 bytes (a 1-byte key and an
  // empty value) are valid, and a file made of them opens.
  tqm::MemorySource m;
  for (char c = 'a'; c <= 'z'; ++c) {
    m.AddMeta({std::string(1, c),
               c % 2 ? tqm::MetaValue::Bytes("") : tqm::MetaValue::String("")});
  }
  File g = Pack(m);
  auto r = Open(g);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->metadata().size(), 28u);
  // One more entry than the exact count is then not backed.
  const uint32_t count = g.Get<uint32_t>(g.SecOff(1));
  g.Set<uint32_t>(g.SecOff(1), count + 1);
  g.Reseal();
  ExpectOpenError(g, StatusCode::kDataLoss, {"METADATA"});
}

TEST(Metadata, R23_EntryPastTheEnd) {
  File f = Base();
  auto m = WalkMetadata(f);
  ASSERT_EQ(m[3].key_str, "test.b");
  f.Set<uint32_t>(m[3].value, 0x7FFFFFFF);  // BYTES length
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"METADATA: entry 3 'test.b'", "value", "remain"});
  // The last entry cut short by shrinking the section.
  f = Base();
  f.Set<uint64_t>(f.Entry(1) + E::kLengthAt, f.SecLen(1) - 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"METADATA", "remain"});
}

TEST(Metadata, R24_KeyLength) {
  File f = Base();
  auto m = WalkMetadata(f);
  f.Set<uint16_t>(m[1].key_len, 0);
  f.Reseal();
  ExpectOpenError(
      f, StatusCode::kDataLoss,
      {"entry 1", "key_len is 0", absl::StrFormat("offset %d", m[1].key_len)});
  // Above the limit: ResourceExhausted, before the key is read (it would run
  // past the section for 0xFFFF).
  for (uint16_t len : {257, 0xFFFF}) {
    f = Base();
    f.Set<uint16_t>(m[1].key_len, len);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kResourceExhausted, {"entry 1", "key_len", "limit"});
  }
}

TEST(Metadata, R25_KeyCharacters) {
  for (int c : {int{' '}, int{'/'}, 0x00, 0x80, 0xFF}) {
    File f = Base();
    auto m = WalkMetadata(f);
    f.At(m[1].key + 4) = static_cast<uint8_t>(c);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"entry 1", "outside [A-Za-z0-9._-]"});
  }
}

TEST(Metadata, R26_Type) {
  for (uint8_t t : {0, 5, 255}) {
    File f = Base();
    auto m = WalkMetadata(f);
    f.At(m[2].type) = t;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"entry 2 'test.f'", absl::StrFormat("type %d", t),
                     absl::StrFormat("offset %d", m[2].type)});
  }
}

TEST(Metadata, R27_DuplicateKey) {
  File f = Base();
  auto m = WalkMetadata(f);
  ASSERT_EQ(m[2].key_str, "test.f");
  f.At(m[2].key + 5) = 'i';  // test.f -> test.i
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"entry 2 'test.i'", "appears twice"});
}

TEST(Metadata, R28_TrailingBytes) {
  File f = Base();
  f.Set<uint32_t>(f.SecOff(1), f.Get<uint32_t>(f.SecOff(1)) - 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"METADATA", "remain after the last"});
}

TEST(Metadata, R29_Utf8IsAnOptionalCheckThisReaderSkips) {
  File f = Base();
  auto m = WalkMetadata(f);
  f.At(m[0].value + 4) = 0xFF;  // "llama" -> "\xFFlama"
  f.Reseal();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->FindMeta("general.architecture")->bytes, "\xFFlama");
}

// ---------------------------------------------------------------------------
// TABLE: R30-R33.

TEST(Table, R30_HeaderTooShortOrReservedNonzero) {
  File f = Base();
  f.Set<uint32_t>(f.SecOff(2) + layout::SectionHead::kReservedAt, 7);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"TABLE", "reserved"});
  f = Base();
  f.Set<uint64_t>(f.Entry(2) + E::kLengthAt, 4);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"TABLE", "remain"});
}

TEST(Table, R31_CountAbove65535) {
  for (uint32_t n : {65536u, 0xFFFFFFFFu}) {
    File f = Base();
    f.Set<uint32_t>(f.SecOff(2), n);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"TABLE", "65535"});
  }
}

TEST(Table, R32_LengthIsNot8Plus4Count) {
  for (uint32_t n : {0u, 1u, 3u}) {
    File f = Base();
    f.Set<uint32_t>(f.SecOff(2), n);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"TABLE", "8 + 4 * count"});
  }
}

TEST(Table, R33_DuplicateEntriesAreAnOptionalCheckThisReaderSkips) {
  File f = Base();
  const uint64_t entries = f.SecOff(2) + layout::SectionHead::kSize;
  f.Set<uint32_t>(entries + 4, f.Get<uint32_t>(entries));
  f.Reseal();
  ExpectOpens(f);
}

// ---------------------------------------------------------------------------
// TENSOR_INDEX: R34-R49.

TEST(TensorIndex, R34_HeaderTooShortOrReservedNonzero) {
  File f = Base();
  f.Set<uint32_t>(f.SecOff(3) + layout::SectionHead::kReservedAt, 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"TENSOR_INDEX", "reserved"});
  f = Base();
  f.Set<uint64_t>(f.Entry(3) + E::kLengthAt, 6);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"TENSOR_INDEX", "remain"});
}

TEST(TensorIndex, R35_TensorCountNotBackedByBytes) {
  File f = Base();
  const uint64_t fit = (f.SecLen(3) - 8) / 59;
  f.Set<uint32_t>(f.SecOff(3), static_cast<uint32_t>(fit + 1));
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"TENSOR_INDEX", "tensor_count"});
  f.Set<uint32_t>(f.SecOff(3), 0xFFFFFFFF);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"TENSOR_INDEX", "tensor_count 4294967295"});
}

TEST(TensorIndex, R36_RecordPastTheEnd) {
  // The name of the last tensor runs past the section.
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<uint16_t>(t[2].rec, 1000);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"TENSOR_INDEX: tensor 2", "name", "remain"});
  // chunk_count records are checked against the bytes left before allocating.
  for (uint32_t n : {2u, 1000u, 0xFFFFFFFFu}) {
    f = Base();
    f.Set<uint32_t>(t[2].chunk_count, n);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"tensor 2 'b.weight'", "chunk_count"});
  }
  // Per-row parameters: dims[0] pairs of 8 bytes must be there.
  File g = Rows();
  auto r = WalkIndex(g);
  g.Set<uint64_t>(r[0].dims, uint64_t{1} << 40);
  g.Reseal();
  ExpectOpenError(g, StatusCode::kDataLoss, {kT0, "(scale, zero) pairs", "past the end"});
  // Cut the section inside a record.
  f = Base();
  f.Set<uint64_t>(f.Entry(3) + E::kLengthAt, f.SecLen(3) - 9);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"tensor 2 'b.weight'", "chunk_count"});
}

TEST(TensorIndex, R37_NameLength) {
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<uint16_t>(t[1].rec, 0);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"tensor 1", "name_len is 0", absl::StrFormat("offset %d", t[1].rec)});
  // The spec's own example: name_len 5000 is R37 (ResourceExhausted), not a
  // name running past the section (R36).
  for (uint16_t len : {1025, 5000, 0xFFFF}) {
    f = Base();
    f.Set<uint16_t>(t[1].rec, len);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kResourceExhausted, {"tensor 1", "name_len", "limit"});
  }
}

TEST(TensorIndex, R38_NameContainsNul) {
  File f = Base();
  auto t = WalkIndex(f);
  f.At(t[1].name + 1) = 0;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"tensor 1", "00 byte", absl::StrFormat("offset %d", t[1].name + 1)});
}

TEST(TensorIndex, R39_Utf8IsAnOptionalCheckThisReaderSkips) {
  File f = Base();
  auto t = WalkIndex(f);
  f.At(t[1].name) = 0xFF;
  f.Reseal();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->FindTensor("\xFF.weight"), 1);
}

TEST(TensorIndex, R40_DuplicateName) {
  File f = Base();
  auto t = WalkIndex(f);
  f.At(t[2].name) = 'a';  // b.weight -> a.weight
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"tensor 2 'a.weight'", "earlier tensor"});
}

TEST(TensorIndex, R41_SourceDType) {
  for (uint8_t v : {0, 5, 255}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.At(t[1].dtype) = v;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"tensor 1 'a.weight'", absl::StrFormat("source_dtype %d", v),
                     absl::StrFormat("offset %d", t[1].dtype)});
  }
}

TEST(TensorIndex, R42_Storage) {
  // storage is a closed set in major version 1 (spec "Versioning"): an
  // unknown value is corruption, not a newer feature.
  for (uint8_t v : {0, 4, 255}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.At(t[1].storage) = v;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"tensor 1 'a.weight'", absl::StrFormat("storage %d", v),
                     absl::StrFormat("offset %d", t[1].storage)});
  }
}

TEST(TensorIndex, R43_Ndim) {
  File f = Base();
  auto t = WalkIndex(f);
  f.At(t[1].ndim) = 0;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"tensor 1", "ndim is 0"});
  for (uint8_t v : {9, 255}) {
    f = Base();
    f.At(t[1].ndim) = v;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kResourceExhausted,
                    {"tensor 1", absl::StrFormat("ndim %d", v), "limit"});
  }
}

TEST(TensorIndex, R44_Reserved) {
  File f = Base();
  auto t = WalkIndex(f);
  f.At(t[0].reserved0) = 1;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {kT0, "reserved0"});
  f = Base();
  f.Set<uint32_t>(t[0].reserved1, 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {kT0, "reserved1"});
}

TEST(TensorIndex, R45_Layer) {
  for (int32_t layer : {-2, std::numeric_limits<int32_t>::min()}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.Set<int32_t>(t[1].layer, layer);
    f.Reseal();
    ExpectOpenError(
        f, StatusCode::kDataLoss,
        {"tensor 1", "less than -1", absl::StrFormat("offset %d", t[1].layer)});
  }
  // The field, not the name, is what the file says: a layer that disagrees
  // with the name is valid.
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<int32_t>(t[0].layer, std::numeric_limits<int32_t>::max());
  f.Set<int32_t>(t[1].layer, 3);
  f.Reseal();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->tensors()[1].layer, 3);
}

TEST(TensorIndex, R46_ZeroDimension) {
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<uint64_t>(t[0].dims + 8, 0);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {kT0, "dims[1] is 0", absl::StrFormat("offset %d", t[0].dims + 8)});
}

TEST(TensorIndex, R47_ByteSizeLimit) {
  const uint64_t two62 = uint64_t{1} << 62;
  struct Case {
    int tensor;
    uint64_t d0, d1;
  };
  // U8 (E = 1): 2 * 2^61 = 2^62; a product that overflows 64 bits.
  // F32 (E = 4): 2^60 elements are 2^62 bytes.
  for (Case c : {Case{0, 2, two62 / 2}, Case{0, uint64_t{1} << 40, uint64_t{1} << 40},
                 Case{0, ~uint64_t{0}, ~uint64_t{0}}, Case{1, two62 / 4, 0}}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.Set<uint64_t>(t[c.tensor].dims, c.d0);
    if (c.tensor == 0) f.Set<uint64_t>(t[c.tensor].dims + 8, c.d1);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kResourceExhausted, {"dims[", "2^62"});
  }
  // Just below the limit the record passes R47 and fails R57 instead.
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<uint64_t>(t[0].dims, 1);
  f.Set<uint64_t>(t[0].dims + 8, two62 - 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {kT0, "decode to"});
  f = Base();
  f.Set<uint64_t>(t[1].dims, two62 / 4 - 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"a.weight", "decode to"});
}

TEST(TensorIndex, R48_QuantizationParameters) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float scale : {0.0f, -0.0f, -1.0f, nan, inf, -inf}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.Set<float>(t[0].params, scale);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {kT0, "params[0]: scale", absl::StrFormat("offset %d", t[0].params)});
  }
  for (float zero : {0.5f, -1.25f, nan, inf}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.Set<float>(t[0].params + 4, zero);
    f.Reseal();
    ExpectOpenError(
        f, StatusCode::kDataLoss,
        {kT0, "params[0]: zero", absl::StrFormat("offset %d", t[0].params + 4)});
  }
  // Per-row: the pair of a later row.
  File g = Rows();
  auto r = WalkIndex(g);
  g.Set<float>(r[0].params + 8 * 3, 0.0f);
  g.Reseal();
  ExpectOpenError(g, StatusCode::kDataLoss, {kT0, "params[3]: scale"});
  // Valid edge values: a subnormal scale, a zero of -0.0, a large integral zero.
  const std::vector<std::pair<float, float>> valid = {
      {1e-45f, -0.0f}, {1e-3f, 1e30f}, {std::numeric_limits<float>::max(), -300.0f}};
  for (auto [scale, zero] : valid) {
    File f = Base();
    auto t = WalkIndex(f);
    f.Set<float>(t[0].params, scale);
    f.Set<float>(t[0].params + 4, zero);
    f.Reseal();
    ExpectOpens(f);
  }
}

TEST(TensorIndex, R49_TrailingBytes) {
  File f = Base();
  f.Set<uint32_t>(f.SecOff(3), 2);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"TENSOR_INDEX", "remain after the last of 2"});
}

// ---------------------------------------------------------------------------
// Chunk records: R50-R58 and the optional seqtable size bounds.

TEST(ChunkRecord, R50_UnimplementedCodecRejectedAtOpen) {
  std::vector<uint8_t> codecs = {6, 9, 255};
  // Reserved ids 2-4 too, as long as this build does not implement them.
  for (uint8_t c : {2, 3, 4}) {
    if (!tqm::IsKnownCodec(c)) codecs.push_back(c);
  }
  for (uint8_t codec : codecs) {
    File f = Base();
    auto t = WalkIndex(f);
    f.At(t[1].chunks[0] + kChCodec) = codec;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kUnimplemented,
                    {"tensor 1 'a.weight': chunk 0", absl::StrFormat("codec %d", codec),
                     absl::StrFormat("offset %d", t[1].chunks[0])});
  }
}

TEST(ChunkRecord, R51_Reserved) {
  for (uint64_t k : {1, 2, 3}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.At(t[1].chunks[0] + k) = 1;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"a.weight': chunk 0", "reserved0"});
  }
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<uint32_t>(t[1].chunks[0] + kChReserved1, 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"a.weight': chunk 0", "reserved1"});
}

TEST(ChunkRecord, R52_DecodedSize) {
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<uint32_t>(t[1].chunks[0] + kChDecoded, 0);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"chunk 0", "decoded_size is 0"});
  for (uint32_t n : {(1u << 22) + 1, 0xFFFFFFFFu}) {
    f = Base();
    f.Set<uint32_t>(t[1].chunks[0] + kChDecoded, n);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kResourceExhausted,
                    {"chunk 0", "decoded_size", "limit"});
  }
  // The only fault is a chunk above the limit: a 5 MiB float32 tensor in one
  // stored chunk of 5 MiB (the sizes agree). R52, not R57 or R55.
  f = Base();
  const uint32_t five = 5u << 20;
  f.Set<uint64_t>(t[1].dims, five / 4);
  f.Set<uint32_t>(t[1].chunks[0] + kChDecoded, five);
  f.Set<uint32_t>(t[1].chunks[0] + kChEncoded, five);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kResourceExhausted,
                  {"a.weight': chunk 0", "decoded_size"});
  // Exactly 4 MiB is allowed (it then fails R55 here: DATA is small).
  f = Base();
  f.Set<uint64_t>(t[1].dims, (1u << 22) / 4);
  f.Set<uint32_t>(t[1].chunks[0] + kChDecoded, 1u << 22);
  f.Set<uint32_t>(t[1].chunks[0] + kChEncoded, 1u << 22);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"a.weight': chunk 0", "outside the DATA"});
}

TEST(ChunkRecord, R53_EncodedSizeZero) {
  for (int tensor : {0, 1}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.Set<uint32_t>(t[tensor].chunks[0] + kChEncoded, 0);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"chunk 0", "encoded_size is 0"});
  }
}

TEST(ChunkRecord, R54_OffsetAlignment) {
  for (uint64_t delta : {1, 4, 32}) {
    File f = Base();
    auto t = WalkIndex(f);
    const uint64_t off = f.Get<uint64_t>(t[1].chunks[0] + kChOffset);
    f.Set<uint64_t>(t[1].chunks[0] + kChOffset, off + delta);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"a.weight': chunk 0", "not a multiple of 64",
                     absl::StrFormat("offset %d", t[1].chunks[0] + kChOffset)});
  }
}

TEST(ChunkRecord, R55_InsideData) {
  File f = Base();
  auto t = WalkIndex(f);
  // Aligned, but in another section, before DATA, or far away.
  for (uint64_t off : {f.SecOff(3), f.SecOff(1), uint64_t{64}, ~uint64_t{63}}) {
    f = Base();
    f.Set<uint64_t>(t[1].chunks[0] + kChOffset, off);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {"a.weight': chunk 0", "outside the DATA"});
  }
  // Starting inside DATA, running past its end: the last chunk, grown.
  f = Base();
  f.Set<uint64_t>(t[2].dims, 16);
  f.Set<uint32_t>(t[2].chunks[0] + kChDecoded, 64);
  f.Set<uint32_t>(t[2].chunks[0] + kChEncoded, 64);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"b.weight': chunk 0", "outside the DATA"});
}

TEST(ChunkRecord, R56_StoredSizesDiffer) {
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<uint32_t>(t[1].chunks[0] + kChEncoded, 31);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"a.weight': chunk 0", "stored chunk"});
}

TEST(ChunkRecord, OptionalSeqtableSizeBoundsAreChecked) {
  // decoded_size 35: G = 8, t = 3, so 19 <= encoded_size <= 51 and
  // encoded_size - 3 even.
  for (uint32_t n : {18u, 22u, 24u, 52u, 53u}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.Set<uint32_t>(t[0].chunks[0] + kChEncoded, n);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss, {kT0, "chunk 0", "seqtable encoded_size"});
  }
  // At the bounds the record is fine (decoding then finds the payload wrong).
  for (uint32_t n : {19u, 51u}) {
    File f = Base();
    auto t = WalkIndex(f);
    f.Set<uint32_t>(t[0].chunks[0] + kChEncoded, n);
    f.Reseal();
    ExpectOpens(f);
  }
}

TEST(ChunkRecord, R57_DecodedSizesDoNotAddUp) {
  File f = Base();
  auto t = WalkIndex(f);
  f.Set<uint64_t>(t[1].dims, 9);  // 36 bytes, one chunk of 32
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"a.weight'", "decode to 32 bytes"});
  f = Base();
  f.Set<uint64_t>(t[1].dims, 7);  // 28 bytes, one chunk of 32
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"a.weight': chunk 0", "more than"});
  // A tensor with no chunks (the 32 bytes of its record are left over, but
  // the record is judged first).
  f = Base();
  f.Set<uint32_t>(t[2].chunk_count, 0);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"b.weight'", "0 chunks decode to 0 bytes"});
}

TEST(ChunkRecord, R58_Overlap) {
  File f = Base();
  auto t = WalkIndex(f);
  // b.weight's 16 bytes onto a.weight's 32.
  f.Set<uint64_t>(t[2].chunks[0] + kChOffset,
                  f.Get<uint64_t>(t[1].chunks[0] + kChOffset));
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"TENSOR_INDEX", "overlaps", "a.weight", "b.weight"});
  // Two records naming the same bytes, even with identical contents.
  tqm::MemorySource m;
  m.Add("x", {4}, {1, 2, 3, 4});
  m.Add("y", {4}, {1, 2, 3, 4});
  File g = Pack(m);
  auto u = WalkIndex(g);
  g.Set<uint64_t>(u[1].chunks[0] + kChOffset,
                  g.Get<uint64_t>(u[0].chunks[0] + kChOffset));
  g.Reseal();
  ExpectOpenError(g, StatusCode::kDataLoss, {"overlaps"});
}

// ---------------------------------------------------------------------------
// Decode: R59-R62.

// Rewrites chunk `k` of tensor `i`'s checksum to match its bytes, and
// reseals the sections.
void SealChunk(File* f, int i) {
  auto t = WalkIndex(*f);
  const uint64_t rec = t[i].chunks[0];
  f->Set<uint64_t>(rec + kChChecksum, f->Xxh(f->Get<uint64_t>(rec + kChOffset),
                                             f->Get<uint32_t>(rec + kChEncoded)));
  f->Reseal();
}

uint64_t ChunkData(const File& f, int i) {
  return f.Get<uint64_t>(WalkIndex(f)[i].chunks[0] + kChOffset);
}

absl::Status Decode(const tqm::Reader& r, size_t t, bool verify) {
  std::vector<uint8_t> out(r.tensors()[t].chunks[0].decoded_size);
  return r.DecodeChunk(t, 0, absl::MakeSpan(out), verify);
}

TEST(Decode, R59_ChunkChecksum) {
  for (int i : {0, 1}) {
    File f = Base();
    f.At(ChunkData(f, i) + 3) ^= 0x01;
    f.Reseal();  // DATA's own checksum is not looked at when decoding
    auto r = Open(f);
    ASSERT_TRUE(r.ok()) << r.status();
    absl::Status s = Decode(**r, i, true);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
    ExpectMessage(s, {"DATA", (*r)->tensors()[i].name, "chunk 0", "chunk checksum",
                      absl::StrFormat("offset %d", ChunkData(f, i))});
    // The check may be skipped on request; decoding stays safe (for the
    // seqtable chunk this flip turns code 1 into code 257: R61).
    s = Decode(**r, i, false);
    if (i == 0) {
      EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
    } else {
      EXPECT_TRUE(s.ok()) << s;
    }
    std::vector<uint8_t> all((*r)->tensors()[i].byte_size);
    EXPECT_EQ((*r)->DecodeTensor(i, absl::MakeSpan(all)).code(), StatusCode::kDataLoss);
  }
}

TEST(Decode, R60_UnimplementedCodec) {
  // R50 rejects such chunks at open, so R60 is reached only through the codec
  // dispatch itself.
  std::vector<uint8_t> in(8), out(8);
  for (uint8_t codec : {6, 9, 255}) {
    absl::Status s = tqm::DecodeChunkBytes(codec, in, {}, absl::MakeSpan(out));
    EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << s;
    EXPECT_NE(s.message().find(absl::StrFormat("codec %d", codec)), std::string::npos)
        << s;
  }
}

TEST(Decode, R61_InvalidSeqtableCode) {
  // N = 2: codes 2..0xFFFE are invalid. Replace the first code (0).
  for (uint16_t code : {2, 3, 0x100, 0xFFFE}) {
    File f = Base();
    f.Set<uint16_t>(ChunkData(f, 0), code);
    SealChunk(&f, 0);
    auto r = Open(f);
    ASSERT_TRUE(r.ok()) << r.status();
    for (bool verify : {true, false}) {
      absl::Status s = Decode(**r, 0, verify);
      EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
      ExpectMessage(s, {kT0, "chunk 0", absl::StrFormat("invalid code %d", code),
                        "payload byte 0"});
    }
  }
}

TEST(Decode, R62_SeqtablePayloadLength) {
  // Payload: codes 0,1,0,1,0,1,0 (bytes 0-13), FF FF + 4 raw bytes (14-19),
  // tail (20-22). Ends early: an escape at group 6 and another at group 7
  // whose 4 raw bytes would run past the end.
  File f = Base();
  const uint64_t p = ChunkData(f, 0);
  f.Set<uint16_t>(p + 12, 0xFFFF);
  f.Set<uint16_t>(p + 18, 0xFFFF);
  SealChunk(&f, 0);
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  absl::Status s = Decode(**r, 0, true);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
  ExpectMessage(s, {kT0, "escape cut off"});
  // Bytes left over: the escape at group 7 becomes code 0, leaving 4 + 3.
  f = Base();
  f.Set<uint16_t>(p + 14, 0);
  SealChunk(&f, 0);
  r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  s = Decode(**r, 0, true);
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s;
  ExpectMessage(s, {kT0, "payload length"});
}

TEST(Decode, EscapedGroupThatIsInTheTableIsAccepted) {
  // "A decoder MUST accept an escaped group that happens to be in the
  // table." Re-encode the chunk with group 0 (99 99 99 99, table code 0)
  // escaped, and compare with the decode of the original encoding.
  File f = Base();
  auto r0 = Open(f);
  ASSERT_TRUE(r0.ok());
  std::vector<uint8_t> want(35);
  ASSERT_TRUE((*r0)->DecodeChunk(0, 0, absl::MakeSpan(want)).ok());
  // 6 + 2*6 + 6 + 3 = 27 bytes; chunk 1 starts 64 bytes after chunk 0, so
  // the longer payload still overlaps nothing.
  std::string payload;
  auto put16 = [&](uint16_t v) {
    payload.push_back(static_cast<char>(v & 0xFF));
    payload.push_back(static_cast<char>(v >> 8));
  };
  put16(0xFFFF);
  payload += std::string(4, '\x99');
  for (uint16_t c : {1, 0, 1, 0, 1, 0}) put16(c);
  put16(0xFFFF);
  payload += std::string("\x00\x00\xff\x00", 4);
  payload += std::string(3, '\x99');
  ASSERT_EQ(payload.size(), 27u);
  const uint64_t p = ChunkData(f, 0);
  std::memcpy(&f.b[p], payload.data(), payload.size());
  f.Set<uint32_t>(WalkIndex(f)[0].chunks[0] + kChEncoded, 27);
  SealChunk(&f, 0);
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<uint8_t> got(35);
  ASSERT_TRUE((*r)->DecodeChunk(0, 0, absl::MakeSpan(got)).ok());
  EXPECT_EQ(got, want);
  EXPECT_TRUE((*r)->Verify().ok());
}

// ---------------------------------------------------------------------------
// Full verification: R63-R66.

TEST(Verify, R63_DataChecksum) {
  File f = Base();
  f.At(ChunkData(f, 0) + 40) = 1;  // padding after chunk 0, inside DATA
  ExpectVerifyError(
      f, {"DATA (id 4)", "checksum", absl::StrFormat("offset %d", f.SecOff(4))});
}

TEST(Verify, R64_SkippedOptionalSectionChecksum) {
  File f = Base();
  const uint64_t e = f.AddSection(kUnknownSection, 0, "optional");
  f.Set<uint64_t>(e + E::kChecksumAt, 1);
  f.SealDirectory();
  ExpectVerifyError(f, {"section id 9", "checksum"});
}

TEST(Verify, R65_Padding) {
  // After a section.
  File f = Base();
  ASSERT_NE(f.SecLen(1) % 64, 0u);
  const uint64_t after_meta = f.SecOff(1) + f.SecLen(1);
  f.At(after_meta) = 0x5A;
  ExpectVerifyError(f, {"padding", "after section METADATA (id 1)", "0x5a",
                        absl::StrFormat("offset %d", after_meta)});
  // Inside DATA, between chunks (DATA's checksum resealed, so R63 passes).
  f = Base();
  const uint64_t gap = ChunkData(f, 0) + 23;
  f.At(gap) = 1;
  f.Reseal();
  ExpectVerifyError(f, {"padding", "after chunk 0 of tensor '" + std::string(kT0) + "'",
                        absl::StrFormat("offset %d", gap)});
  // After the last structure of the file.
  f = Base();
  f.AddSection(kUnknownSection, 0, "x");
  f.b.back() = 1;
  f.Reseal();
  ExpectVerifyError(f, {"padding", "after section id 9"});
}

TEST(Verify, R66_EveryChunkIsDecoded) {
  // A chunk whose checksum is stale while DATA's is right.
  File f = Base();
  f.At(ChunkData(f, 1)) ^= 0x01;
  f.Reseal();
  ExpectVerifyError(f, {"DATA", "a.weight", "chunk checksum"});
  // A seqtable chunk that does not decode, with every checksum right.
  f = Base();
  f.Set<uint16_t>(ChunkData(f, 0) + 2, 7);
  SealChunk(&f, 0);
  ExpectVerifyError(f, {kT0, "invalid code 7", "payload byte 2"});
}

// ---------------------------------------------------------------------------
// Format 1.3: tensor records in a file that sets EXTENDED_TENSORS (R5, R35,
// R36, R41-R44, R46, R57 as amended; R86-R89).

constexpr uint32_t kExtFlag = tqm::format::kHeaderFlagExtendedTensors;
const char kG[] = "model.layers.0.g";

// Tensor 0: 2 x 3 I16 values stored RAW; 1: a 0-d F32 scalar; 2: an empty
// RAW U8 tensor of shape [3, 0] (no chunk); 3: a 3 x 10 tensor of 3-bit
// codes in groups of 4 (U8_GROUP: groups of 4, 4 and 2 per row, 9 pairs),
// last so that the section can be cut inside its parameters.
tqm::MemorySource ExtSource() {
  tqm::MemorySource m;
  const int16_t v[6] = {-3, 0, 7, 32767, -32768, 1};
  m.AddRaw("a.raw", {2, 3}, tqm::format::kDTypeI16,
           std::string(reinterpret_cast<const char*>(v), sizeof(v)));
  m.Add("s", {}, {0.25f});
  m.AddRaw("e", {3, 0}, tqm::format::kDTypeU8, "");
  std::vector<float> w(30);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>((i * 7) % 11) - 5.0f;
  m.Add(kG, {3, 10}, w);
  return m;
}

File Ext() {
  tqm::PackOptions o = V10();
  o.bits = 3;
  o.granularity = tqm::Granularity::kGroup;
  o.group_size = 4;
  return Pack(ExtSource(), o);
}

TEST(Extended, BaseFileIsValidAndShapedAsTheTestsAssume) {
  const File f = Ext();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Verify().ok());
  EXPECT_EQ((*r)->header().flags, kExtFlag);
  EXPECT_EQ((*r)->header().minor, 3);
  const auto& t = (*r)->tensors();
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0].storage, tqm::format::kStorageRaw);
  EXPECT_EQ(t[0].byte_size, 12u);
  EXPECT_TRUE(t[1].dims.empty());
  EXPECT_EQ(t[1].numel, 1u);
  EXPECT_EQ(t[2].numel, 0u);
  EXPECT_TRUE(t[2].chunks.empty());
  EXPECT_EQ(t[3].storage, tqm::format::kStorageU8Group);
  EXPECT_EQ(t[3].bits, 3);
  EXPECT_EQ(t[3].group_size, 4u);
  EXPECT_EQ(t[3].affine.size(), 9u);
  auto idx = WalkIndex(f);
  ASSERT_EQ(idx.size(), 4u);
  EXPECT_EQ(f.Get<uint8_t>(idx[3].reserved0), 3);
  EXPECT_EQ(f.Get<uint32_t>(idx[3].params), 4u);
  EXPECT_EQ(f.Get<float>(idx[3].pairs + 8 * 8), t[3].affine[8].scale);
  EXPECT_EQ(idx[3].reserved1 + 4 + layout::ChunkRecord::kSize * t[3].chunks.size(),
            f.SecOff(3) + f.SecLen(3));
  // Record sizes: 18 + L + 8D + Q + 32C (the 0-d one has D = 0, the empty
  // one C = 0, the group one Q = 8 + 8 * 9).
  EXPECT_EQ(idx[2].rec - idx[1].rec, 18u + 1 + 0 + 0 + 32);
  EXPECT_EQ(idx[3].rec - idx[2].rec, 18u + 1 + 16 + 0 + 0);
}

TEST(Extended, R5_ExtendedTensorsIsAKnownFlag) {
  // Bit 0 on a file of 1.2 records: known, and it makes reserved0 the bits
  // field, so the U8 tensor now needs a width (R87).
  File f = Base();
  f.Set<uint32_t>(H::kFlagsAt, kExtFlag);
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kDataLoss, {kT0, "bits 0 is not 1 to 8"});
  f.At(WalkIndex(f)[0].reserved0) = 8;
  f.Reseal();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->tensors()[0].bits, 8);
  // Every other bit is still unknown, with or without bit 0.
  f = Ext();
  f.Set<uint32_t>(H::kFlagsAt, kExtFlag | 2);
  f.SealHeader();
  ExpectOpenError(f, StatusCode::kUnimplemented, {"flags"}, /*offset=*/false);
}

TEST(Extended, FlagClearedMakesTheExtensionsCorrupt) {
  File f = Ext();
  f.Set<uint32_t>(H::kFlagsAt, 0);
  f.SealHeader();
  // Tensor 0 is RAW I16: source_dtype 7 is not a 1.2 value (checked before
  // its storage 5, which is not one either).
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"tensor 0 'a.raw'", "source_dtype 7 is not 1, 2, 3 or 4"});
  f.At(WalkIndex(f)[0].dtype) = tqm::format::kDTypeF16;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"tensor 0 'a.raw'", "storage 5 is not 1, 2 or 3"});
}

TEST(Extended, R35_TensorCountBoundUses27ByteRecords) {
  File f = Ext();
  const uint64_t fit = (f.SecLen(3) - 8) / 27;
  ASSERT_GT(fit, (f.SecLen(3) - 8) / 59);
  f.Set<uint32_t>(f.SecOff(3), static_cast<uint32_t>(fit + 1));
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"TENSOR_INDEX", "records of at least 27 bytes"});
  // A count within the 27-byte bound gets past R35 to the records.
  f.Set<uint32_t>(f.SecOff(3), static_cast<uint32_t>(fit));
  f.Reseal();
  auto r = Open(f);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find("records of at least"), std::string::npos)
      << r.status();
}

TEST(Extended, R36_GroupParametersPastTheEnd) {
  // dims[0] = 2^40 rows of 3 groups: the pairs are checked against the
  // bytes left before anything is allocated.
  File f = Ext();
  auto t = WalkIndex(f);
  f.Set<uint64_t>(t[3].dims, uint64_t{1} << 40);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {kG, "3298534883328 (scale, zero) pairs", "past the end"});
  // The section ends inside group_size.
  f = Ext();
  f.Set<uint64_t>(f.Entry(3) + E::kLengthAt, t[3].params + 2 - f.SecOff(3));
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {kG, "group_size", "remain"});
}

TEST(Extended, R41_SourceDType) {
  for (uint8_t v : {0, 15, 255}) {
    File f = Ext();
    f.At(WalkIndex(f)[1].dtype) = v;
    f.Reseal();
    ExpectOpenError(
        f, StatusCode::kDataLoss,
        {"tensor 1 's'", absl::StrFormat("source_dtype %d is not 1 to 14", v)});
  }
  // Informational for F32 storage: every value 1 to 14 is valid.
  for (uint8_t v = 1; v <= 14; ++v) {
    File f = Ext();
    f.At(WalkIndex(f)[1].dtype) = v;
    f.Reseal();
    ExpectOpens(f);
  }
  // For RAW it is the element type: another 2-byte type keeps the sizes.
  for (uint8_t v :
       {tqm::format::kDTypeF16, tqm::format::kDTypeBF16, tqm::format::kDTypeU16}) {
    File f = Ext();
    f.At(WalkIndex(f)[0].dtype) = v;
    f.Reseal();
    ExpectOpens(f);
  }
  // A 4-byte type doubles the byte size: the chunk no longer covers it.
  File f = Ext();
  f.At(WalkIndex(f)[0].dtype) = tqm::format::kDTypeI32;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"'a.raw'", "decode to 12 bytes but the tensor has 24"});
}

TEST(Extended, R42_Storage) {
  for (uint8_t v : {0, 6, 255}) {
    File f = Ext();
    f.At(WalkIndex(f)[1].storage) = v;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {"tensor 1 's'", absl::StrFormat("storage %d is not 1 to 5", v)});
  }
}

TEST(Extended, R43_R46_ShapelessOnlyForF32AndRaw) {
  // ndim 0 and a zero dimension on the U8_GROUP tensor.
  File f = Ext();
  auto t = WalkIndex(f);
  f.At(t[3].ndim) = 0;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {kG, "ndim is 0"});
  f = Ext();
  f.Set<uint64_t>(t[3].dims + 8, 0);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {kG, "dims[1] is 0", absl::StrFormat("offset %d", t[3].dims + 8)});
  f = Ext();
  f.At(t[3].ndim) = 9;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kResourceExhausted, {kG, "ndim 9", "limit"});
  // Without the flag, not even for F32.
  f = Base();
  auto b = WalkIndex(f);
  f.Set<uint64_t>(b[1].dims, 0);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"'a.weight'", "dims[0] is 0"});
  // A zero dimension before a huge one: the product is 0, no overflow.
  tqm::MemorySource m;
  m.AddRaw("z", {0, ~uint64_t{0}, 5}, tqm::format::kDTypeF64, "");
  File z = Pack(m);
  auto r = Open(z);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->tensors()[0].byte_size, 0u);
}

TEST(Extended, R44_R87_Bits) {
  for (uint8_t v : {0, 9, 255}) {
    File f = Ext();
    auto t = WalkIndex(f);
    f.At(t[3].reserved0) = v;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {kG, absl::StrFormat("bits %d is not 1 to 8", v),
                     absl::StrFormat("offset %d", t[3].reserved0)});
  }
  for (int k : {0, 1}) {  // RAW, F32
    File f = Ext();
    auto t = WalkIndex(f);
    f.At(t[k].reserved0) = 8;
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {absl::StrFormat("tensor %d", k), "bits is 8, must be 0"});
  }
  // reserved1 stays reserved.
  File f = Ext();
  f.Set<uint32_t>(WalkIndex(f)[2].reserved1, 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {"tensor 2 'e'", "reserved1"});
}

TEST(Extended, R89_CodeWidthIsAnOptionalCheckThisReaderSkips) {
  // bits 1 with codes up to 7: a writer error the reader need not catch.
  File f = Ext();
  f.At(WalkIndex(f)[3].reserved0) = 1;
  f.Reseal();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->tensors()[3].bits, 1);
  EXPECT_TRUE((*r)->Verify().ok());
}

TEST(Extended, R57_EmptyTensorWithAChunk) {
  File f = Ext();
  f.Set<uint64_t>(WalkIndex(f)[0].dims, 0);  // a.raw keeps its 12-byte chunk
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"'a.raw': chunk 0", "more than the tensor's 0 bytes"});
}

TEST(Extended, R86_RawOfQ8_0) {
  File f = Ext();
  auto t = WalkIndex(f);
  f.At(t[0].dtype) = tqm::format::kDTypeQ8_0;
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss,
                  {"'a.raw'", "RAW storage of source_dtype 4",
                   absl::StrFormat("offset %d", t[0].dtype)});
}

TEST(Extended, R88_GroupSizeAndReserved) {
  for (uint32_t g : {0u, 65537u, 0xFFFFFFFFu}) {
    File f = Ext();
    auto t = WalkIndex(f);
    f.Set<uint32_t>(t[3].params, g);
    f.Reseal();
    ExpectOpenError(f, StatusCode::kDataLoss,
                    {kG, absl::StrFormat("group_size %d is not 1 to 65536", g),
                     absl::StrFormat("offset %d", t[3].params)});
  }
  File f = Ext();
  f.Set<uint32_t>(WalkIndex(f)[3].params + 4, 1);
  f.Reseal();
  ExpectOpenError(f, StatusCode::kDataLoss, {kG, "reserved", "must be 0"});
}

TEST(Extended, GroupPairsFollowTheSpecFormula) {
  // "Tensor data": element i uses pair floor(i / C) * ceil(C / G) +
  // floor((i mod C) / G); each value is scale * (q - zero) in binary32.
  for (uint32_t g : {1u, 3u, 4u, 10u, 64u}) {
    SCOPED_TRACE(g);
    tqm::PackOptions o = V10();
    o.bits = 5;
    o.granularity = tqm::Granularity::kGroup;
    o.group_size = g;
    File f = Pack(ExtSource(), o);
    auto r = Open(f);
    ASSERT_TRUE(r.ok()) << r.status();
    const tqm::TensorInfo& t = (*r)->tensors()[3];
    const uint64_t c = 10, per_row = (c + g - 1) / g;
    ASSERT_EQ(t.affine.size(), 3 * per_row);
    std::vector<uint8_t> q(t.numel);
    std::vector<float> x(t.numel);
    ASSERT_TRUE((*r)->DecodeTensor(3, absl::MakeSpan(q)).ok());
    ASSERT_TRUE((*r)->ReadFloat(3, absl::MakeSpan(x)).ok());
    for (uint64_t i = 0; i < t.numel; ++i) {
      EXPECT_LT(q[i], 32);
      const tqm::Affine& a = t.affine[i / c * per_row + i % c / g];
      EXPECT_EQ(x[i], a.scale * (static_cast<float>(q[i]) - a.zero)) << i;
    }
  }
}

TEST(Extended, RawElementsAreTheSourceBytes) {
  File f = Ext();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<uint8_t> raw(12);
  ASSERT_TRUE((*r)->DecodeTensor(0, absl::MakeSpan(raw)).ok());
  std::vector<float> x(6);
  ASSERT_TRUE((*r)->ReadFloat(0, absl::MakeSpan(x)).ok());
  const int16_t v[6] = {-3, 0, 7, 32767, -32768, 1};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(raw[2 * i] | raw[2 * i + 1] << 8,
              static_cast<uint16_t>(v[i]));  // little-endian
    EXPECT_EQ(x[i], v[i]);
  }
  // The 0-d scalar and the empty tensor.
  float s = 0;
  ASSERT_TRUE((*r)->ReadFloat(1, absl::MakeSpan(&s, 1)).ok());
  EXPECT_EQ(s, 0.25f);
  EXPECT_TRUE((*r)->ReadFloat(2, absl::Span<float>()).ok());
}

TEST(Extended, DataIsEmptyWhenEveryTensorIsEmpty) {
  tqm::MemorySource m;
  m.AddRaw("e", {0}, tqm::format::kDTypeBool, "");
  File f = Pack(m);
  EXPECT_EQ(f.SecLen(4), 0u);
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->header().flags, kExtFlag);
  EXPECT_TRUE((*r)->Verify().ok());
}

// spec/WRITING.md "Layer numbers": the table of examples, row by row, as the
// reference writer derives the field.
TEST(LayerNumbers, SpecExamples) {
  const std::pair<const char*, int32_t> rows[] = {
      {"model.layers.12.mlp.up_proj.weight", 12},
      {"model.layers.0.input_layernorm.weight", 0},
      {"model.decoder.layers.5.fc1.weight", 5},
      {"transformer.h.7.attn.c_attn.weight", 7},
      {"bert.encoder.layer.3.output.dense.weight", 3},
      {"layers.2.attention.wq.weight", 2},
      {"blk.3.attn_q.weight", 3},
      {"blocks.4.attn.qkv.weight", 4},
      {"block.4.mlp.weight", 4},
      {"model.layers.01.mlp.up_proj.weight", -1},
      {"model.layers.3x.weight", -1},
      {"model.layers.2147483648.weight", -1},
      {"myblk.3.weight", -1},
      {"model.embed_tokens.weight", -1},
      {"model.norm.weight", -1},
      {"lm_head.weight", -1},
      // A pair that fails does not stop the search.
      {"layers.3x.blk.4.weight", 4},
      {"model.layers.2147483647", 2147483647},
  };
  for (const auto& [name, layer] : rows)
    EXPECT_EQ(tqm::LayerFromName(name), layer) << name;
  // The writer records it.
  tqm::MemorySource m;
  m.Add("transformer.h.7.mlp.weight", {2}, {1, 2});
  File f = Pack(m);
  EXPECT_EQ(f.Get<int32_t>(WalkIndex(f)[0].layer), 7);
}

// ---------------------------------------------------------------------------
// Valid edge cases a conforming reader must accept.

TEST(Accept, FileWithNoTensors) {
  // DATA is empty and starts where TENSOR_INDEX does: empty ranges overlap
  // nothing.
  tqm::MemorySource m;
  m.AddMeta({"k", tqm::MetaValue::Int(1)});
  File f = Pack(m);
  EXPECT_EQ(f.SecLen(4), 0u);
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->tensors().empty());
  EXPECT_TRUE((*r)->Verify().ok());
}

TEST(Accept, SectionsAndEntriesInAnyOrder) {
  // Reverse the directory entries.
  File f = Base();
  const uint64_t d = f.DirOffset();
  std::string dir = f.b.substr(d, 128), rev;
  for (int i = 3; i >= 0; --i) rev += dir.substr(32 * i, 32);
  f.b.replace(d, 128, rev);
  f.SealDirectory();
  auto r = Open(f);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)->Verify().ok());
}

// ---------------------------------------------------------------------------
// spec/FORMAT.md Appendix A: the prose after the hex dump, claim by claim.

TEST(AppendixA, WalkthroughMatchesTinyVector) {
  const std::string dir = std::string(TQM_SOURCE_DIR) + "/spec/vectors/";
  File f{tqm_test::ReadFile(dir + "tiny.tqm")};
  ASSERT_EQ(f.b.size(), 704u);
  auto r = tqm::Reader::FromBuffer(AsSpan(f.b), "tiny.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  const tqm::Reader& rd = **r;
  ASSERT_TRUE(rd.Verify().ok());
  // Header.
  EXPECT_EQ(rd.header().major, 1);
  EXPECT_EQ(rd.header().minor, 0);
  EXPECT_EQ(rd.header().flags, 0u);
  EXPECT_EQ(rd.header().file_size, 0x2c0u);
  EXPECT_EQ(rd.header().directory_offset, 0x240u);
  EXPECT_EQ(rd.header().section_count, 4u);
  EXPECT_EQ(f.Get<uint64_t>(40), 0x5334d5c370053954u);
  EXPECT_EQ(f.Get<uint32_t>(36), 0u);
  EXPECT_EQ(f.Get<uint64_t>(48), 0u);
  EXPECT_EQ(f.Get<uint64_t>(0x38), f.Xxh(0, 56));
  // Directory.
  struct Sec {
    uint32_t id;
    uint64_t off, len;
  };
  const Sec want[] = {
      {1, 0x40, 0x5f}, {2, 0xc0, 0x10}, {4, 0x100, 0x60}, {3, 0x180, 0xbe}};
  ASSERT_EQ(rd.sections().size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(rd.sections()[i].id, want[i].id);
    EXPECT_EQ(rd.sections()[i].offset, want[i].off);
    EXPECT_EQ(rd.sections()[i].length, want[i].len);
    EXPECT_EQ(rd.sections()[i].flags, tqm::format::kSectionFlagRequired);
  }
  // METADATA: three STRING entries.
  ASSERT_EQ(rd.metadata().size(), 3u);
  const std::pair<const char*, const char*> meta[] = {{"general.architecture", "llama"},
                                                      {"tqm.writer", "libtqm 0.1"},
                                                      {"tqm.granularity", "tensor"}};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(rd.metadata()[i].key, meta[i].first);
    EXPECT_EQ(rd.metadata()[i].value.type, tqm::format::kMetaString);
    EXPECT_EQ(rd.metadata()[i].value.bytes, meta[i].second);
  }
  // TABLE: code 0 = 99 99 99 99, code 1 = 00 00 00 00.
  ASSERT_EQ(rd.table().size(), 2u);
  EXPECT_EQ(rd.table()[0], 0x99999999u);
  EXPECT_EQ(rd.table()[1], 0u);
  // The quantized tensor.
  ASSERT_EQ(rd.tensors().size(), 2u);
  const tqm::TensorInfo& w = rd.tensors()[0];
  EXPECT_EQ(w.name, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(w.source_dtype, tqm::format::kDTypeF32);
  EXPECT_EQ(w.storage, tqm::format::kStorageU8Tensor);
  EXPECT_EQ(w.dims, (std::vector<uint64_t>{5, 7}));
  EXPECT_EQ(w.byte_size, 35u);
  EXPECT_EQ(w.layer, 0);
  ASSERT_EQ(w.affine.size(), 1u);
  uint32_t scale_bits;
  std::memcpy(&scale_bits, &w.affine[0].scale, 4);
  EXPECT_EQ(scale_bits, 0x3ba0a0a1u);
  EXPECT_EQ(w.affine[0].scale, 1.25f / 255.0f);
  EXPECT_EQ(w.affine[0].zero, 51.0f);
  ASSERT_EQ(w.chunks.size(), 1u);
  EXPECT_EQ(w.chunks[0].codec, tqm::format::kCodecSeqTable);
  EXPECT_EQ(w.chunks[0].offset, 0x100u);
  EXPECT_EQ(w.chunks[0].decoded_size, 35u);
  EXPECT_EQ(w.chunks[0].encoded_size, 23u);
  const std::string payload = f.b.substr(0x100, 23);
  EXPECT_EQ(payload,
            std::string("\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00"
                        "\xff\xff\x00\x00\xff\x00\x99\x99\x99",
                        23));
  // Decoded and dequantized: 0.5 and -0.25 in alternating runs of four, with
  // one 1.0 (element 30), exactly.
  std::vector<uint8_t> q(35);
  ASSERT_TRUE(rd.DecodeTensor(0, absl::MakeSpan(q)).ok());
  std::vector<float> x(35);
  ASSERT_TRUE(rd.ReadFloat(0, absl::MakeSpan(x)).ok());
  for (size_t i = 0; i < 35; ++i) {
    const float in = i == 30 ? 1.0f : (i % 8 < 4 ? 0.5f : -0.25f);
    const uint8_t qq = i == 30 ? 255 : (i % 8 < 4 ? 153 : 0);
    EXPECT_EQ(q[i], qq) << i;
    EXPECT_EQ(x[i], in) << i;
  }
  // The float32 tensor.
  const tqm::TensorInfo& n = rd.tensors()[1];
  EXPECT_EQ(n.name, "model.norm.weight");
  EXPECT_EQ(n.source_dtype, tqm::format::kDTypeF32);
  EXPECT_EQ(n.storage, tqm::format::kStorageF32);
  EXPECT_EQ(n.dims, (std::vector<uint64_t>{8}));
  EXPECT_EQ(n.layer, -1);
  EXPECT_TRUE(n.affine.empty());
  ASSERT_EQ(n.chunks.size(), 1u);
  EXPECT_EQ(n.chunks[0].codec, tqm::format::kCodecStored);
  EXPECT_EQ(n.chunks[0].offset, 0x140u);
  EXPECT_EQ(n.chunks[0].encoded_size, 32u);
  std::vector<float> v(8);
  ASSERT_TRUE(rd.ReadFloat(1, absl::MakeSpan(v)).ok());
  EXPECT_EQ(v, (std::vector<float>{1, 1, 1, 1, 2, 2, 2, 2}));
  // tiny.decoded: the two tensors' decoded bytes, 35 + 32, in index order.
  const std::string decoded = tqm_test::ReadFile(dir + "tiny.decoded");
  ASSERT_EQ(decoded.size(), 67u);
  EXPECT_EQ(decoded.substr(0, 35), std::string(q.begin(), q.end()));
  EXPECT_EQ(0, std::memcmp(decoded.data() + 35, v.data(), 32));
  // "each starting at a multiple of 64, with zero padding between them".
  for (const tqm::SectionInfo& s : rd.sections()) EXPECT_EQ(s.offset % 64, 0u);
}

}  // namespace

// spec/WRITING.md "Worked examples": each payload decodes, under its codec,
// to the bytes the text gives.
namespace {
std::string Hex(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}
std::string DecodeExample(uint8_t codec, const std::string& payload, size_t n) {
  std::string out(n, '\x55');
  absl::Status s = tqm::DecodeChunkBytes(
      codec, tqm_test::AsSpan(payload), {},
      absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(&out[0]), out.size()));
  EXPECT_TRUE(s.ok()) << s;
  return out;
}
}  // namespace

TEST(WorkedExamples, DecodeToTheirBytes) {
  // rans: 61 62 61 with f[0x61] = f[0x62] = 2048.
  std::string rans = Hex({0x02, 0x61, 0x62, 0xFF, 0xFF, 0x00, 0x10, 0x00, 0x00});
  rans += Hex({0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00});
  rans += Hex({0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00});
  rans += Hex({0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00});
  for (int j = 3; j < 8; ++j) rans += Hex({0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00});
  ASSERT_EQ(rans.size(), 65u);
  EXPECT_EQ(DecodeExample(tqm::format::kCodecRans, rans, 3), "aba");
  const std::string text = "abacabaaaaaaaacaaaba";
  EXPECT_EQ(DecodeExample(tqm::format::kCodecHuffman,
                          Hex({0x02, 0x61, 0x63, 0x24, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01,
                               0x01, 0x01, 0x00, 0x01, 0x04, 0x03, 0x00, 0x01, 0x06, 0x00}),
                          20),
            text);
  const std::string stream = Hex({0x00, 0x50, 0x00, 0x40, 0x00, 0x00, 0x00, 0x20, 0x00, 0x20,
                                  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00});
  EXPECT_EQ(DecodeExample(tqm::format::kCodecLanes,
                          Hex({0x02, 0x01, 0x30, 0x31, 0x04, 0x00, 0x0A}) + stream +
                              Hex({0xDD, 0xFF, 0x0B}),
                          20),
            text);
  EXPECT_EQ(DecodeExample(tqm::format::kCodecLanes,
                          Hex({0x02, 0x00, 0x61, 0x61, 0x04, 0x01, 0x0A, 0x05}) + stream +
                              Hex({0x62, 0x63, 0x62, 0x63, 0x62}),
                          20),
            text);
}
