// The byte layout module (libtqm/src/container/layout.h): every record
// encodes to the bytes spec/FORMAT.md gives and decodes back to the same
// struct; decoding rejects a truncated record and a reserved field that is
// not zero, with the reader's messages; the field offsets the module exports
// are those of the spec's tables; and the records the module decodes from a
// packed file are the reader's view of that file.

#include "container/layout.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "base/checksum.h"
#include "tqm/format.h"
#include "tqm/reader.h"
#include "tqm/source.h"
#include "tqm/writer.h"

namespace {

namespace layout = tqm::layout;
namespace format = tqm::format;
using absl::StatusCode;
using tqm::Cursor;

absl::Span<const uint8_t> Span(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// A cursor over `s` as if it started at file offset `base`.
Cursor At(const std::string& s, uint64_t base = 0, std::string where = "f") {
  return Cursor(Span(s), base, std::move(where));
}

template <typename T>
T Get(const std::string& s, uint64_t off) {
  T v;
  EXPECT_LE(off + sizeof(T), s.size());
  std::memcpy(&v, s.data() + off, sizeof(T));
  return v;
}

void ExpectError(const absl::Status& s, StatusCode code, const std::string& message) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(s.message(), message);
}

// ---------------------------------------------------------------------------
// Header.

layout::Header SomeHeader(uint64_t file_size) {
  layout::Header h;
  h.minor_version = 3;
  h.flags = format::kHeaderFlagExtendedTensors;
  h.file_size = file_size;
  h.directory_offset = 128;
  h.section_count = 4;
  h.directory_checksum = 0x0123456789ABCDEFull;
  return h;
}

TEST(Header, EncodesTheSpecFieldsAndSealsItself) {
  std::string b;
  layout::Encode(SomeHeader(256), &b);
  ASSERT_EQ(b.size(), 64u);
  EXPECT_EQ(std::memcmp(b.data(), format::kMagic, 8), 0);
  EXPECT_EQ(Get<uint16_t>(b, 8), 1);
  EXPECT_EQ(Get<uint16_t>(b, 10), 3);
  EXPECT_EQ(Get<uint32_t>(b, 12), 1u);
  EXPECT_EQ(Get<uint64_t>(b, 16), 256u);
  EXPECT_EQ(Get<uint64_t>(b, 24), 128u);
  EXPECT_EQ(Get<uint32_t>(b, 32), 4u);
  EXPECT_EQ(Get<uint64_t>(b, 40), 0x0123456789ABCDEFull);
  EXPECT_EQ(Get<uint64_t>(b, 56), tqm::Checksum(Span(b).subspan(0, 56)));
  EXPECT_EQ(layout::Header::kDirectoryChecksumAt, 40u);
  EXPECT_EQ(layout::Header::kHeaderChecksumAt, format::kHeaderChecksummedSize);
}

TEST(Header, RoundTrips) {
  std::string b;
  const layout::Header h = SomeHeader(256);
  layout::Encode(h, &b);
  b.resize(256, '\0');  // the cursor spans the whole file (R7)
  Cursor c = At(b);
  layout::Header d;
  ASSERT_TRUE(layout::Decode(c, &d).ok());
  EXPECT_EQ(c.offset(), 64u);
  EXPECT_EQ(d.minor_version, h.minor_version);
  EXPECT_EQ(d.flags, h.flags);
  EXPECT_EQ(d.file_size, h.file_size);
  EXPECT_EQ(d.directory_offset, h.directory_offset);
  EXPECT_EQ(d.section_count, h.section_count);
  EXPECT_EQ(d.directory_checksum, h.directory_checksum);
  EXPECT_EQ(d.header_checksum, Get<uint64_t>(b, 56));
}

TEST(Header, DecodeErrors) {
  std::string b;
  layout::Encode(SomeHeader(64), &b);
  {
    std::string t = b.substr(0, 63);
    Cursor c = At(t, 0, "x: header");
    layout::Header d;
    ExpectError(layout::Decode(c, &d), StatusCode::kDataLoss,
                "x: header: header needs 64 bytes but 63 remain at offset 0");
  }
  {
    layout::Header h = SomeHeader(64);
    h.reserved0 = 7;
    std::string r;
    layout::Encode(h, &r);  // sealed: the reserved field, not the checksum, fails
    Cursor c = At(r, 0, "x: header");
    layout::Header d;
    ExpectError(layout::Decode(c, &d), StatusCode::kDataLoss,
                "x: header: reserved0 is 7, must be 0 at offset 36");
  }
  {
    layout::Header h = SomeHeader(64);
    h.reserved1 = 1;
    std::string r;
    layout::Encode(h, &r);
    Cursor c = At(r, 0, "x: header");
    layout::Header d;
    ExpectError(layout::Decode(c, &d), StatusCode::kDataLoss,
                "x: header: reserved1 is 1, must be 0 at offset 48");
  }
  {
    std::string r = b;
    r[20] ^= 1;  // a field changed after sealing
    Cursor c = At(r, 0, "x: header");
    layout::Header d;
    const absl::Status s = layout::Decode(c, &d);
    EXPECT_EQ(s.code(), StatusCode::kDataLoss);
    EXPECT_NE(s.message().find("header_checksum"), std::string::npos) << s;
  }
}

// ---------------------------------------------------------------------------
// Directory entry and section head.

TEST(SectionEntry, RoundTrips) {
  layout::SectionEntry s;
  s.id = format::kSectionTable;
  s.flags = format::kSectionFlagRequired;
  s.offset = 192;
  s.length = 24;
  s.checksum = 0xFEDCBA9876543210ull;
  std::string b;
  layout::Encode(s, &b);
  ASSERT_EQ(b.size(), layout::SectionEntry::kSize);
  EXPECT_EQ(Get<uint64_t>(b, layout::SectionEntry::kLengthAt), 24u);
  EXPECT_EQ(Get<uint64_t>(b, layout::SectionEntry::kChecksumAt), s.checksum);
  Cursor c = At(b, 1024);
  layout::SectionEntry d;
  ASSERT_TRUE(layout::Decode(c, /*file_size=*/4096, &d).ok());
  EXPECT_EQ(d.id, s.id);
  EXPECT_EQ(d.flags, s.flags);
  EXPECT_EQ(d.offset, s.offset);
  EXPECT_EQ(d.length, s.length);
  EXPECT_EQ(d.checksum, s.checksum);
}

TEST(SectionEntry, DecodeErrors) {
  layout::SectionEntry s;
  s.id = format::kSectionData;
  s.flags = format::kSectionFlagRequired | 4;
  s.offset = 192;
  std::string b;
  layout::Encode(s, &b);
  layout::SectionEntry d;
  Cursor c = At(b, 1024, "x: entry 2");
  ExpectError(layout::Decode(c, 4096, &d), StatusCode::kUnimplemented,
              "x: entry 2: section DATA (id 4): flags 0x5 has bits this reader does not "
              "know at offset 1028");
  std::string t = b.substr(0, 31);
  Cursor ct = At(t, 1024, "x: entry 2");
  ExpectError(layout::Decode(ct, 4096, &d), StatusCode::kDataLoss,
              "x: entry 2: checksum needs 8 bytes but 7 remain at offset 1048");
  // The uniqueness check comes right after the id (R13 before R14).
  Cursor cu = At(b, 1024, "x: entry 2");
  const absl::Status u = layout::Decode(
      cu, 4096, &d, [](uint32_t id) { return absl::DataLossError(std::to_string(id)); });
  ExpectError(u, StatusCode::kDataLoss, "4");
}

TEST(SectionHead, RoundTripsAndChecksReserved) {
  std::string b;
  layout::Encode(layout::SectionHead{7, 0}, &b);
  ASSERT_EQ(b.size(), 8u);
  Cursor c = At(b, 64, "x: TABLE");
  layout::SectionHead h;
  ASSERT_TRUE(layout::Decode(c, "count", &h).ok());
  EXPECT_EQ(h.count, 7u);
  std::string r;
  layout::Encode(layout::SectionHead{7, 2}, &r);
  Cursor cr = At(r, 64, "x: TABLE");
  ExpectError(layout::Decode(cr, "count", &h), StatusCode::kDataLoss,
              "x: TABLE: reserved field reserved is 2, must be 0 at offset 72");
}

// ---------------------------------------------------------------------------
// Metadata entry.

TEST(MetaEntry, RoundTripsEveryType) {
  const std::vector<tqm::MetaEntry> entries = {
      {"a.int", tqm::MetaValue::Int(-5)},
      {"a.float", tqm::MetaValue::Float(0.25)},
      {"a.str", tqm::MetaValue::String("hello")},
      {"a.bytes", tqm::MetaValue::Bytes(std::string("\0\1\2", 3))},
  };
  for (const tqm::MetaEntry& e : entries) {
    std::string b;
    layout::Encode(e, &b);
    const layout::MetaEntryOffsets o = layout::MetaOffsets(e.key.size());
    EXPECT_EQ(Get<uint16_t>(b, o.key_len), e.key.size());
    EXPECT_EQ(b.substr(o.key, e.key.size()), e.key);
    EXPECT_EQ(Get<uint8_t>(b, o.type), e.value.type);
    Cursor c = At(b);
    tqm::MetaEntry d;
    ASSERT_TRUE(layout::Decode(c, &d).ok()) << e.key;
    EXPECT_EQ(c.remaining(), 0u);
    EXPECT_EQ(d.key, e.key);
    EXPECT_EQ(d.value.type, e.value.type);
    EXPECT_EQ(d.value.int64, e.value.int64);
    EXPECT_EQ(d.value.float64, e.value.float64);
    EXPECT_EQ(d.value.bytes, e.value.bytes);
  }
}

TEST(MetaEntry, DecodeErrors) {
  std::string b;
  layout::Encode({"k", tqm::MetaValue::String("value")}, &b);
  tqm::MetaEntry d;
  std::string t = b.substr(0, b.size() - 1);
  Cursor c = At(t, 100, "x: METADATA: entry 0");
  ExpectError(layout::Decode(c, &d), StatusCode::kDataLoss,
              "x: METADATA: entry 0 'k': value needs 5 bytes but 4 remain at offset 108");
  std::string bad = b;
  bad[3] = 9;  // type
  Cursor cb = At(bad, 100, "x: METADATA: entry 0");
  ExpectError(layout::Decode(cb, &d), StatusCode::kDataLoss,
              "x: METADATA: entry 0 'k': type 9 is not 1, 2, 3 or 4 at offset 103");
}

// ---------------------------------------------------------------------------
// Tensor and chunk records.

layout::TensorRecord GroupRecord() {
  layout::TensorRecord t;
  t.name = "model.layers.3.w";
  t.source_dtype = format::kDTypeBF16;
  t.storage = format::kStorageU8Group;
  t.bits = 4;
  t.layer = 3;
  t.dims = {2, 5};
  t.group_size = 2;
  uint64_t pairs = 0;
  EXPECT_TRUE(layout::PairCount(t.storage, t.dims, t.group_size, &pairs));
  EXPECT_EQ(pairs, 6u);  // 2 rows of ceil(5 / 2) groups
  for (uint64_t k = 0; k < pairs; ++k) t.params.push_back({0.5f + k, float(k)});
  t.chunk_count = 1;
  return t;
}

TEST(TensorRecord, EncodesAtTheSpecOffsets) {
  const layout::TensorRecord t = GroupRecord();
  std::string b;
  layout::Encode(t, &b);
  const layout::TensorRecordOffsets o =
      layout::TensorOffsets(t.name.size(), t.dims.size(), t.storage, t.params.size(), 0);
  // 18 + L + 8D + Q bytes before the chunk records, Q = 8 + 8P (spec).
  EXPECT_EQ(b.size(), 18 + t.name.size() + 8 * 2 + 8 + 8 * 6);
  EXPECT_EQ(o.chunks, b.size());
  EXPECT_EQ(o.source_dtype, 2 + t.name.size());
  EXPECT_EQ(Get<uint8_t>(b, o.bits), 4);
  EXPECT_EQ(Get<int32_t>(b, o.layer), 3);
  EXPECT_EQ(Get<uint64_t>(b, o.dims + 8), 5u);
  EXPECT_EQ(Get<uint32_t>(b, o.params), 2u);
  EXPECT_EQ(o.pairs, o.params + 8);
  EXPECT_EQ(Get<float>(b, o.pairs + 8), 1.5f);
  EXPECT_EQ(Get<uint32_t>(b, o.chunk_count), 1u);
}

TEST(TensorRecord, RoundTrips) {
  const layout::TensorRecord t = GroupRecord();
  std::string b;
  layout::Encode(t, &b);
  b.append(32, '\0');  // room for the one chunk record chunk_count announces
  Cursor c = At(b, 8, "x: tensor 0");
  layout::TensorRecord d;
  ASSERT_TRUE(layout::Decode(c, /*extended=*/true, &d).ok());
  EXPECT_EQ(c.remaining(), 32u);
  EXPECT_EQ(d.name, t.name);
  EXPECT_EQ(d.source_dtype, t.source_dtype);
  EXPECT_EQ(d.storage, t.storage);
  EXPECT_EQ(d.bits, t.bits);
  EXPECT_EQ(d.layer, t.layer);
  EXPECT_EQ(d.dims, t.dims);
  EXPECT_EQ(d.group_size, t.group_size);
  ASSERT_EQ(d.params.size(), t.params.size());
  for (size_t k = 0; k < d.params.size(); ++k) {
    EXPECT_EQ(d.params[k].scale, t.params[k].scale);
    EXPECT_EQ(d.params[k].zero, t.params[k].zero);
  }
  EXPECT_EQ(d.chunk_count, 1u);
  EXPECT_EQ(d.numel, 10u);
  EXPECT_EQ(d.byte_size, 10u);
  std::string again;
  layout::Encode(d, &again);
  EXPECT_EQ(again, b.substr(0, b.size() - 32));
}

TEST(TensorRecord, DecodeErrors) {
  layout::TensorRecord t = GroupRecord();
  std::string b;
  layout::Encode(t, &b);
  layout::TensorRecord d;
  {
    // chunk_count announces a record the bytes do not hold.
    Cursor c = At(b, 8, "x: tensor 0");
    ExpectError(layout::Decode(c, true, &d), StatusCode::kDataLoss,
                "x: tensor 0 'model.layers.3.w': chunk_count 1: its 32-byte records run "
                "past the end of the section (0 bytes remain) at offset 106");
  }
  {
    std::string tr = b.substr(0, 36);  // inside dims[1]
    Cursor c = At(tr, 8, "x: tensor 0");
    ExpectError(layout::Decode(c, true, &d), StatusCode::kDataLoss,
                "x: tensor 0 'model.layers.3.w': dims needs 8 bytes but 2 remain at "
                "offset 42");
  }
  {
    // Without EXTENDED_TENSORS the bits byte is reserved0 and storage 4 is
    // unknown: the storage is what fails first (R42 before R44).
    Cursor c = At(b, 8, "x: tensor 0");
    ExpectError(
        layout::Decode(c, false, &d), StatusCode::kDataLoss,
        "x: tensor 0 'model.layers.3.w': storage 4 is not 1, 2 or 3 at offset 27");
  }
  {
    layout::TensorRecord r = t;
    r.params_reserved = 3;
    std::string rb;
    layout::Encode(r, &rb);
    Cursor c = At(rb, 8, "x: tensor 0");
    ExpectError(layout::Decode(c, true, &d), StatusCode::kDataLoss,
                "x: tensor 0 'model.layers.3.w': reserved field params reserved is 3, "
                "must be 0 at offset 58");
  }
  {
    layout::TensorRecord r = t;
    r.reserved1 = 1;
    std::string rb;
    layout::Encode(r, &rb);
    rb.append(32, '\0');
    Cursor c = At(rb, 8, "x: tensor 0");
    ExpectError(
        layout::Decode(c, true, &d), StatusCode::kDataLoss,
        "x: tensor 0 'model.layers.3.w': reserved field reserved1 is 1, must be 0 "
        "at offset 114");
  }
  {
    layout::TensorRecord r = t;
    r.storage = format::kStorageF32;
    r.bits = 0;
    r.params.clear();
    r.source_dtype = format::kDTypeF32;
    r.bits = 2;  // R44 without the flag
    std::string rb;
    layout::Encode(r, &rb);
    rb.append(32, '\0');
    Cursor c = At(rb, 8, "x: tensor 0");
    ExpectError(layout::Decode(c, false, &d), StatusCode::kDataLoss,
                "x: tensor 0 'model.layers.3.w': reserved0 is 2, must be 0 at offset 29");
  }
  {
    // The uniqueness callback runs after the name, before the fields.
    std::string bad = b;
    bad[2 + t.name.size()] = 99;  // source_dtype
    Cursor c = At(bad, 8, "x: tensor 0");
    const absl::Status s = layout::Decode(
        c, true, &d, [](const Cursor& at, const std::string& name, uint64_t off) {
          return absl::DataLossError(at.context() + "|" + name + "|" +
                                     std::to_string(off));
        });
    ExpectError(s, StatusCode::kDataLoss,
                "x: tensor 0 'model.layers.3.w'|model.layers.3.w|10");
  }
}

TEST(PairCount, FollowsTheStorage) {
  uint64_t n = 0;
  const std::vector<uint64_t> dims = {3, 4, 10};
  EXPECT_TRUE(layout::PairCount(format::kStorageF32, dims, 0, &n));
  EXPECT_EQ(n, 0u);
  EXPECT_TRUE(layout::PairCount(format::kStorageU8Tensor, dims, 0, &n));
  EXPECT_EQ(n, 1u);
  EXPECT_TRUE(layout::PairCount(format::kStorageU8Row, dims, 0, &n));
  EXPECT_EQ(n, 3u);
  EXPECT_TRUE(layout::PairCount(format::kStorageU8Group, dims, 4, &n));
  EXPECT_EQ(n, 3u * 4 * 3);
  const std::vector<uint64_t> huge = {uint64_t{1} << 40, uint64_t{1} << 40, 2};
  EXPECT_FALSE(layout::PairCount(format::kStorageU8Group, huge, 1, &n));
}

layout::ChunkRecord SomeChunk() {
  layout::ChunkRecord r;
  r.codec = format::kCodecHuffman;
  r.decoded_size = 4096;
  r.offset = 640;
  r.encoded_size = 1000;
  r.checksum = 0x1122334455667788ull;
  return r;
}

TEST(ChunkRecord, RoundTrips) {
  const layout::ChunkRecord r = SomeChunk();
  std::string b;
  layout::Encode(r, &b);
  ASSERT_EQ(b.size(), layout::ChunkRecord::kSize);
  EXPECT_EQ(Get<uint8_t>(b, layout::ChunkRecord::kCodecAt), format::kCodecHuffman);
  EXPECT_EQ(Get<uint32_t>(b, layout::ChunkRecord::kDecodedSizeAt), 4096u);
  EXPECT_EQ(Get<uint64_t>(b, layout::ChunkRecord::kOffsetAt), 640u);
  EXPECT_EQ(Get<uint32_t>(b, layout::ChunkRecord::kEncodedSizeAt), 1000u);
  EXPECT_EQ(Get<uint64_t>(b, layout::ChunkRecord::kChecksumAt), r.checksum);
  Cursor c = At(b, 200);
  layout::ChunkRecord d;
  ASSERT_TRUE(layout::Decode(c, layout::ChunkContext{0, 576, 2048}, &d).ok());
  EXPECT_EQ(d.codec, r.codec);
  EXPECT_EQ(d.decoded_size, r.decoded_size);
  EXPECT_EQ(d.offset, r.offset);
  EXPECT_EQ(d.encoded_size, r.encoded_size);
  EXPECT_EQ(d.checksum, r.checksum);
}

TEST(ChunkRecord, DecodeErrors) {
  layout::ChunkRecord d;
  {
    std::string b;
    layout::Encode(SomeChunk(), &b);
    b.resize(20);
    Cursor c = At(b, 200, "x: tensor 1 'w'");
    ExpectError(layout::Decode(c, {}, &d), StatusCode::kDataLoss,
                "x: tensor 1 'w': reserved1 needs 4 bytes but 0 remain at offset 220");
  }
  {
    layout::ChunkRecord r = SomeChunk();
    r.reserved0 = 0x010000;  // the third reserved byte
    std::string b;
    layout::Encode(r, &b);
    EXPECT_EQ(Get<uint8_t>(b, 3), 1);
    Cursor c = At(b, 200, "x: tensor 1 'w'");
    ExpectError(layout::Decode(c, {3}, &d), StatusCode::kDataLoss,
                "x: tensor 1 'w': chunk 3: reserved0 is not zero at offset 201");
  }
  {
    layout::ChunkRecord r = SomeChunk();
    r.reserved1 = 5;
    std::string b;
    layout::Encode(r, &b);
    Cursor c = At(b, 200, "x: tensor 1 'w'");
    ExpectError(layout::Decode(c, {0}, &d), StatusCode::kDataLoss,
                "x: tensor 1 'w': chunk 0: reserved1 is 5, must be 0 at offset 220");
  }
  {
    std::string b;
    layout::Encode(SomeChunk(), &b);
    Cursor c = At(b, 200, "x: tensor 1 'w'");
    ExpectError(layout::Decode(c, {1, 0, 1024}, &d), StatusCode::kDataLoss,
                "x: tensor 1 'w': chunk 1: encoded bytes (offset 640, 1000 bytes) lie "
                "outside the DATA section (offset 0, length 1024) at offset 208");
  }
}

// ---------------------------------------------------------------------------
// A packed file decoded record by record gives what the reader reports.

TEST(PackedFile, DecodesToTheReadersView) {
  tqm::MemorySource src;
  std::vector<float> w(64 * 40), n(40);
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(i % 17) - 8.0f;
  for (size_t i = 0; i < n.size(); ++i) n[i] = 1.0f + i;
  src.Add("model.layers.0.mlp.w", {64, 40}, w);
  src.Add("model.norm.weight", {40}, n);
  tqm::PackOptions o;
  o.chunk_size = 1024;
  auto packed = tqm::PackToString(src, o);
  ASSERT_TRUE(packed.ok()) << packed.status();
  const std::string& f = *packed;
  auto reader = tqm::Reader::FromBuffer(Span(f), "p.tqm");
  ASSERT_TRUE(reader.ok()) << reader.status();

  Cursor hc = At(f);
  layout::Header h;
  ASSERT_TRUE(layout::Decode(hc, &h).ok());
  EXPECT_EQ(h.directory_offset, (*reader)->header().directory_offset);
  layout::SectionEntry index, data;
  for (uint32_t i = 0; i < h.section_count; ++i) {
    const uint64_t e = h.directory_offset + i * layout::SectionEntry::kSize;
    Cursor c(Span(f).subspan(e, layout::SectionEntry::kSize), e, "dir");
    layout::SectionEntry s;
    ASSERT_TRUE(layout::Decode(c, f.size(), &s).ok());
    if (s.id == format::kSectionTensorIndex) index = s;
    if (s.id == format::kSectionData) data = s;
  }
  Cursor c(Span(f).subspan(index.offset, index.length), index.offset, "index");
  layout::SectionHead head;
  ASSERT_TRUE(layout::Decode(c, "tensor_count", &head).ok());
  ASSERT_EQ(head.count, (*reader)->tensors().size());
  for (uint32_t i = 0; i < head.count; ++i) {
    const tqm::TensorInfo& want = (*reader)->tensors()[i];
    layout::TensorRecord t;
    ASSERT_TRUE(layout::Decode(c, false, &t).ok());
    EXPECT_EQ(t.name, want.name);
    EXPECT_EQ(t.dims, want.dims);
    EXPECT_EQ(t.params.size(), want.affine.size());
    EXPECT_EQ(t.byte_size, want.byte_size);
    ASSERT_EQ(t.chunk_count, want.chunks.size());
    for (uint32_t k = 0; k < t.chunk_count; ++k) {
      layout::ChunkRecord r;
      ASSERT_TRUE(layout::Decode(c, {k, data.offset, data.length}, &r).ok());
      EXPECT_EQ(r.offset, want.chunks[k].offset);
      EXPECT_EQ(r.encoded_size, want.chunks[k].encoded_size);
      EXPECT_EQ(r.checksum, want.chunks[k].checksum);
    }
  }
  EXPECT_EQ(c.remaining(), 0u);
}

}  // namespace
