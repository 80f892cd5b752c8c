// Golden test vectors in spec/vectors/: each NAME.tqm must open, verify and
// decode to exactly NAME.decoded (every tensor's stored bytes, in index
// order), and today's writer must still produce it byte for byte from the
// same input. Set TQM_REGENERATE_VECTORS=1 to rewrite them after an
// intentional, versioned format change.

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <sstream>

#include "../fuzz/file_editor.h"
#include "codec/entropy.h"
#include "test_util.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

struct Vector {
  const char* name;
  tqm::MemorySource (*make)();
  tqm::PackOptions (*options)();
  // Applied to the writer's output: for payloads the writer never chooses
  // (the raw and constant modes of a codec whose chunk it would store).
  std::string (*edit)(std::string) = nullptr;
};

// Replaces the payload of chunk `c` of tensor `t` with `payload` of codec
// `codec`, zeroing what is left of the old bytes (padding), and recomputes
// the checksums. The payload must fit before the next chunk or the end of
// DATA.
void ReplaceChunk(std::string* b, size_t t, size_t c, uint8_t codec,
                  const std::string& payload) {
  const tqm_fuzz::Layout l = tqm_fuzz::Scan(*b);
  ASSERT_LT(t, l.tensors.size());
  ASSERT_LT(c, l.tensors[t].chunks.size());
  const tqm_fuzz::ChunkLoc& k = l.tensors[t].chunks[c];
  const tqm_fuzz::SectionLoc* data = l.Find(tqm::format::kSectionData);
  ASSERT_NE(data, nullptr);
  uint64_t end = data->offset + data->length;
  for (const tqm_fuzz::TensorLoc& x : l.tensors) {
    for (const tqm_fuzz::ChunkLoc& y : x.chunks) {
      if (y.offset > k.offset) end = std::min(end, y.offset);
    }
  }
  ASSERT_LE(payload.size(), end - k.offset) << "payload does not fit the chunk's slot";
  std::fill(b->begin() + k.offset, b->begin() + k.offset + k.encoded_size, '\0');
  b->replace(k.offset, payload.size(), payload);
  tqm_fuzz::Store<uint8_t>(b, k.record, codec);
  tqm_fuzz::Store<uint32_t>(b, k.record + 16, static_cast<uint32_t>(payload.size()));
  tqm_fuzz::FixChecksums(b);
}

// "tiny" (spec/FORMAT.md Appendix A): two tensors; a 5x7 matrix whose 35
// bytes are 8 groups (7 table hits, 1 escape) and a 3-byte tail, in one
// seqtable chunk; and an 8-element norm kept float32 in a stored chunk.
tqm::MemorySource Tiny() {
  tqm::MemorySource m;
  std::vector<float> w(35);
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i % 8 < 4) ? 0.5f : -0.25f;
  w[30] = 1.0f;  // group 7 (bytes 28..31) is not in the table: an escape
  m.Add("model.layers.0.mlp.up_proj.weight", {5, 7}, w);
  m.Add("model.norm.weight", {8}, {1, 1, 1, 1, 2, 2, 2, 2});
  m.AddMeta({"general.architecture", tqm::MetaValue::String("llama")});
  return m;
}
// The 1.0 vectors use only the stored and seqtable codecs.
tqm::PackOptions V10() {
  tqm::PackOptions o;
  o.entropy = false;
  return o;
}
tqm::PackOptions TinyOptions() { return V10(); }

// "rows": per-row parameters, a tensor of 15 bytes (3-byte tail), small chunks.
tqm::MemorySource Rows() {
  tqm::MemorySource m;
  std::vector<float> a(15), b(64);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 5) * (i < 5 ? 1 : -0.5f);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>((i / 4) % 2);
  m.Add("a.weight", {3, 5}, a);
  m.Add("model.layers.2.b.weight", {4, 16}, b);
  m.AddMeta({"test.int", tqm::MetaValue::Int(-42)});
  m.AddMeta({"test.float", tqm::MetaValue::Float(0.125)});
  m.AddMeta({"test.bytes", tqm::MetaValue::Bytes(std::string("\x00\x01\xff", 3))});
  return m;
}
tqm::PackOptions RowsOptions() {
  tqm::PackOptions o = V10();
  o.granularity = tqm::Granularity::kRow;
  o.chunk_size = 16;
  return o;
}

// "stored": no table, a tensor split over several stored chunks.
tqm::MemorySource Stored() {
  tqm::MemorySource m;
  m.Add("model.embed_tokens.weight", {10, 20}, tqm_test::Gaussian(200, 42, 1.0f));
  return m;
}
tqm::PackOptions StoredOptions() {
  tqm::PackOptions o = V10();
  o.max_table_entries = 0;
  o.chunk_size = 64;
  return o;
}

// "entropy" (format 1.1): Gaussian weights in 4 KiB chunks plus a skewed
// low-entropy tensor; the size profile picks Huffman for some chunks and rANS
// for others. zstd is left out: its output may differ between libzstd
// versions, and the vectors must be reproducible byte for byte.
tqm::MemorySource Entropy() {
  tqm::MemorySource m;
  m.Add("model.layers.0.self_attn.q_proj.weight", {64, 128},
        tqm_test::Gaussian(64 * 128, 9, 0.02f));
  std::vector<float> skew(4096);
  std::mt19937 rng(5);
  for (float& x : skew) x = (rng() % 16 == 0) ? static_cast<float>(rng() % 64) : 0.0f;
  skew[0] = 255.0f;
  m.Add("model.layers.0.mlp.down_proj.weight", {32, 128}, skew);
  m.Add("model.norm.weight", {16}, tqm_test::Gaussian(16, 2, 1.0f));
  return m;
}
tqm::PackOptions EntropySizeOptions() {
  tqm::PackOptions o;
  o.profile = tqm::Profile::kSize;
  o.zstd_level = 0;
  o.lanes = false;  // a 1.1 file
  o.chunk_size = 4096;
  return o;
}

// "lanes" (format 1.2): the same Gaussian weights under the balanced profile,
// in chunks of 4 KiB, and a 1,500-byte tensor whose last block of 64
// positions is partial, plus the float32 norm.
tqm::MemorySource Lanes() {
  tqm::MemorySource m;
  m.Add("model.layers.0.self_attn.q_proj.weight", {64, 128},
        tqm_test::Gaussian(64 * 128, 9, 0.02f));
  m.Add("model.layers.0.self_attn.k_proj.weight", {12, 125},
        tqm_test::Gaussian(12 * 125, 4, 0.05f));
  m.Add("model.norm.weight", {16}, tqm_test::Gaussian(16, 2, 1.0f));
  return m;
}
tqm::PackOptions LanesOptions() {
  tqm::PackOptions o;
  o.chunk_size = 4096;
  return o;
}

// "extended" (format 1.3, EXTENDED_TENSORS): 4-bit codes with one pair per
// group of 32 along the last dimension (80 columns: groups of 32, 32, 16),
// tensors stored verbatim (I64 position ids, a BOOL mask, an F16 norm kept
// by name), a 0-d F32 scalar and an empty I64 tensor.
tqm::MemorySource Extended() {
  tqm::MemorySource m;
  m.Add("model.layers.0.self_attn.q_proj.weight", {16, 80},
        tqm_test::Gaussian(16 * 80, 11, 0.02f));
  std::string ids;
  for (int64_t i = 0; i < 6; ++i) {
    const int64_t v = i == 5 ? -1 : i * 1000;
    ids.append(reinterpret_cast<const char*>(&v), 8);
  }
  m.AddRaw("model.position_ids", {1, 6}, tqm::format::kDTypeI64, ids);
  m.AddRaw("model.mask", {3}, tqm::format::kDTypeBool, std::string("\x01\x00\x01", 3));
  m.AddRaw("model.norm.weight", {4}, tqm::format::kDTypeF16,
           std::string("\x00\x3c\x00\xc0\x00\x00\xff\x7b", 8));  // 1, -2, 0, 65504
  m.Add("model.logit_scale", {}, {0.125f});
  m.AddRaw("model.empty", {0, 2}, tqm::format::kDTypeI64, "");
  return m;
}
tqm::PackOptions ExtendedOptions() {
  tqm::PackOptions o;
  o.bits = 4;
  o.granularity = tqm::Granularity::kGroup;
  o.group_size = 32;
  o.chunk_size = 512;
  o.keep = [](const std::string& name) { return name == "model.norm.weight"; };
  return o;
}

// "huffman12" (format 1.1): one 64 x 64 tensor whose 4096 codes follow a
// dyadic distribution (2048, 1024, 512 and 256 of four values, 2 each of
// four more, 1 each of the other 248): its optimal Huffman code needs
// 12-bit lengths, and codes of at most 11 bits would cost far more than
// the 0.25 % the writer allows, so the size profile keeps a Huffman chunk
// with 12-bit codes. Values 0 to 255 quantize to themselves (scale 1,
// zero 0).
tqm::MemorySource Huffman12() {
  std::vector<float> codes;
  const int big[4] = {2048, 1024, 512, 256};
  const int big_value[4] = {128, 127, 129, 126};
  for (int i = 0; i < 4; ++i)
    codes.insert(codes.end(), big[i], static_cast<float>(big_value[i]));
  int twos = 0;
  for (int v = 0; v < 256; ++v) {
    if (v >= 126 && v <= 129) continue;
    codes.insert(codes.end(), twos < 4 ? 2 : 1, static_cast<float>(v));
    ++twos;
  }
  // A fixed permutation (1237 is odd, so i -> 1237 i mod 4096 is one).
  std::vector<float> w(codes.size());
  for (size_t i = 0; i < w.size(); ++i) w[(i * 1237) % w.size()] = codes[i];
  tqm::MemorySource m;
  m.Add("model.layers.0.mlp.gate_proj.weight", {64, 64}, w);
  return m;
}
tqm::PackOptions Huffman12Options() {
  tqm::PackOptions o;
  o.profile = tqm::Profile::kSize;
  o.zstd_level = 0;
  o.lanes = false;  // a 1.1 file
  o.max_table_entries = 0;
  return o;
}

// "lanes_g1" (format 1.2): a 12 x 50 tensor, 600 bytes, below the 1 KiB
// from which the writer takes two groups of lanes: one chunk of codec 5
// with G = 1, whose last block has 24 of its 64 positions.
tqm::MemorySource LanesOneGroup() {
  tqm::MemorySource m;
  // One outlier widens the range, so the codes crowd a few values and the
  // chunk compresses well enough for the balanced profile to leave stored.
  std::vector<float> w = tqm_test::Gaussian(600, 21, 0.02f);
  w[7] = 0.5f;
  m.Add("model.layers.0.self_attn.v_proj.weight", {12, 50}, w);
  return m;
}
tqm::PackOptions LanesOneGroupOptions() {
  tqm::PackOptions o;
  o.max_table_entries = 0;
  return o;
}

// "modes" (format 1.2): the raw and constant modes of codecs 3, 4 and 5,
// which the writer never picks (a stored chunk is one byte smaller than a
// raw one, and the fastest codec takes a constant chunk). The writer stores
// six float32 vectors; each chunk is then rewritten in one mode of one
// codec: 48 bytes of Gaussian values as `00` + the bytes (49 bytes, which
// fit the chunk's 64-byte slot), and 64 bytes of 0x3F as `01 3F`.
const char* const kModeNames[6] = {"raw.rans",      "raw.huffman",      "raw.lanes",
                                   "constant.rans", "constant.huffman", "constant.lanes"};
tqm::MemorySource Modes() {
  tqm::MemorySource m;
  float c;
  const uint32_t bits = 0x3F3F3F3Fu;
  std::memcpy(&c, &bits, 4);
  for (int i = 0; i < 6; ++i) {
    if (i < 3) {
      m.Add(kModeNames[i], {12}, tqm_test::Gaussian(12, 30 + i, 1.0f));
    } else {
      m.Add(kModeNames[i], {16}, std::vector<float>(16, c));
    }
  }
  return m;
}
tqm::PackOptions ModesOptions() {
  tqm::PackOptions o = V10();
  o.max_table_entries = 0;
  return o;
}
std::string ModesEdit(std::string b) {
  const uint8_t codecs[3] = {tqm::format::kCodecRans, tqm::format::kCodecHuffman,
                             tqm::format::kCodecLanes};
  const tqm_fuzz::Layout l = tqm_fuzz::Scan(b);
  for (size_t t = 0; t < 6; ++t) {
    const tqm_fuzz::ChunkLoc& k = l.tensors.at(t).chunks.at(0);
    const std::string bytes = b.substr(k.offset, k.encoded_size);
    const std::string payload = t < 3 ? std::string(1, '\0') + bytes
                                      : std::string("\x01", 1) + bytes.substr(0, 1);
    ReplaceChunk(&b, t, 0, codecs[t % 3], payload);
  }
  tqm_fuzz::Store<uint16_t>(&b, 10, 2);  // minor_version: codec 5 is used
  tqm_fuzz::FixChecksums(&b);
  return b;
}

const Vector kVectors[] = {
    {"entropy", Entropy, EntropySizeOptions},
    {"extended", Extended, ExtendedOptions},
    {"lanes", Lanes, LanesOptions},
    {"tiny", Tiny, TinyOptions},
    {"rows", Rows, RowsOptions},
    {"stored", Stored, StoredOptions},
    {"huffman12", Huffman12, Huffman12Options},
    {"lanes_g1", LanesOneGroup, LanesOneGroupOptions},
    {"modes", Modes, ModesOptions, ModesEdit},
};

std::string Dir() { return std::string(TQM_SOURCE_DIR) + "/spec/vectors/"; }

std::string DecodedBytes(const tqm::Reader& r) {
  std::string out;
  for (size_t i = 0; i < r.tensors().size(); ++i) {
    std::string buf(r.tensors()[i].byte_size, '\0');
    absl::Status s = r.DecodeTensor(
        i, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(buf.data()), buf.size()));
    EXPECT_TRUE(s.ok()) << s;
    out += buf;
  }
  return out;
}

TEST(Vectors, DecodeToTheirGoldenBytes) {
  const bool regenerate = std::getenv("TQM_REGENERATE_VECTORS") != nullptr;
  for (const Vector& v : kVectors) {
    SCOPED_TRACE(v.name);
    tqm::MemorySource src = v.make();
    auto packed = tqm::PackToString(src, v.options());
    ASSERT_TRUE(packed.ok()) << packed.status();
    if (v.edit) *packed = v.edit(*packed);
    const std::string path = Dir() + v.name + ".tqm";
    if (regenerate) {
      auto r = tqm::Reader::FromBuffer(tqm_test::AsSpan(*packed));
      ASSERT_TRUE(r.ok());
      tqm_test::WriteFile(path, *packed);
      tqm_test::WriteFile(Dir() + v.name + ".decoded", DecodedBytes(**r));
    }
    const std::string golden = tqm_test::ReadFile(path);
    const std::string decoded = tqm_test::ReadFile(Dir() + v.name + ".decoded");
    ASSERT_FALSE(golden.empty()) << "missing " << path;
    auto r = tqm::Reader::Open(path);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->Verify().ok());
    EXPECT_EQ(DecodedBytes(**r), decoded);
    EXPECT_EQ(*packed, golden) << "the writer no longer reproduces " << path;
  }
}

TEST(Vectors, EntropyVectorsUseTheEntropyCodecs) {
  auto r = tqm::Reader::Open(Dir() + "entropy.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->header().minor, 1);
  int codecs[8] = {};
  for (const auto& t : (*r)->tensors()) {
    for (const auto& c : t.chunks) ++codecs[c.codec];
  }
  EXPECT_GT(codecs[tqm::format::kCodecRans], 0);
  EXPECT_GT(codecs[tqm::format::kCodecHuffman], 0);
}

TEST(Vectors, LanesVectorUsesTheLanesCodec) {
  auto r = tqm::Reader::Open(Dir() + "lanes.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->header().minor, 2);
  int lanes = 0;
  for (const auto& t : (*r)->tensors()) {
    for (const auto& c : t.chunks) lanes += c.codec == tqm::format::kCodecLanes;
  }
  EXPECT_EQ(lanes, 3);  // two chunks of the 8 KiB tensor, one of the 1.5 KiB one
}

TEST(Vectors, TinyUsesEveryFeatureOfTheSeqtableCodec) {
  auto r = tqm::Reader::Open(Dir() + "tiny.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  const tqm::TensorInfo& w = (*r)->tensors()[0];
  EXPECT_EQ(w.chunks[0].codec, tqm::format::kCodecSeqTable);
  EXPECT_GT((*r)->table().size(), 0u);
  const tqm::TensorInfo& n = (*r)->tensors()[1];
  EXPECT_EQ(n.storage, tqm::format::kStorageF32);
  EXPECT_FALSE((*r)->InPlace(1).empty());
}

// Appendix A of spec/FORMAT.md is a hex dump of tiny.tqm: it must match.
TEST(Vectors, SpecHexDumpMatchesTiny) {
  const std::string doc = tqm_test::ReadFile(std::string(TQM_SOURCE_DIR) + "/spec/FORMAT.md");
  const std::string begin = "<!-- HEXDUMP BEGIN tiny.tqm -->";
  size_t b = doc.find(begin), e = doc.find("<!-- HEXDUMP END -->");
  ASSERT_NE(b, std::string::npos);
  ASSERT_NE(e, std::string::npos);
  std::istringstream in(doc.substr(b + begin.size(), e - b - begin.size()));
  std::string line, bytes;
  while (std::getline(in, line)) {
    if (line.size() < 10 || line[8] != ':') continue;
    size_t offset = std::stoul(line.substr(0, 8), nullptr, 16);
    ASSERT_EQ(offset, bytes.size()) << line;
    for (size_t k = 0; k < 16; ++k) {
      size_t pos = 10 + 3 * k;
      if (pos + 2 > line.size() || line[pos] == ' ') break;
      bytes.push_back(static_cast<char>(std::stoul(line.substr(pos, 2), nullptr, 16)));
    }
  }
  EXPECT_EQ(bytes, tqm_test::ReadFile(Dir() + "tiny.tqm"))
      << "run scripts/spec_hexdump.py after regenerating the vectors";
}

// The claims the new vectors are made for, checked on the committed files.
TEST(Vectors, Huffman12UsesTwelveBitCodes) {
  auto r = tqm::Reader::Open(Dir() + "huffman12.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->header().minor, 1);
  const tqm::ChunkInfo& c = (*r)->tensors().at(0).chunks.at(0);
  ASSERT_EQ(c.codec, tqm::format::kCodecHuffman);
  const std::string file = tqm_test::ReadFile(Dir() + "huffman12.tqm");
  const std::string payload = file.substr(c.offset, c.encoded_size);
  const std::string decoded = tqm_test::ReadFile(Dir() + "huffman12.decoded");
  std::string with12, with11;
  ASSERT_TRUE(tqm::entropy_internal::EncodeHuffmanWithLimit(tqm_test::AsSpan(decoded), 12,
                                                            &with12)
                  .ok());
  ASSERT_TRUE(tqm::entropy_internal::EncodeHuffmanWithLimit(tqm_test::AsSpan(decoded), 11,
                                                            &with11)
                  .ok());
  EXPECT_EQ(payload, with12);
  EXPECT_NE(payload, with11);
  EXPECT_GT(with11.size() * 1000,
            with12.size() * 1003);  // more than 0.25 % (+ a margin) larger
}

TEST(Vectors, LanesOneGroupHasASingleGroup) {
  auto r = tqm::Reader::Open(Dir() + "lanes_g1.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  const tqm::ChunkInfo& c = (*r)->tensors().at(0).chunks.at(0);
  ASSERT_EQ(c.codec, tqm::format::kCodecLanes);
  EXPECT_EQ(c.decoded_size % 64, 24u);
  const std::string file = tqm_test::ReadFile(Dir() + "lanes_g1.tqm");
  EXPECT_EQ(file[c.offset], 2) << "mode coded";
  EXPECT_EQ((static_cast<uint8_t>(file[c.offset + 1]) >> 4) & 3, 0) << "G = 1";
}

TEST(Vectors, ModesUsesRawAndConstantOfEachEntropyCodec) {
  const std::string file = tqm_test::ReadFile(Dir() + "modes.tqm");
  auto r = tqm::Reader::Open(Dir() + "modes.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)->header().minor, 2);
  ASSERT_EQ((*r)->tensors().size(), 6u);
  const uint8_t codecs[3] = {tqm::format::kCodecRans, tqm::format::kCodecHuffman,
                             tqm::format::kCodecLanes};
  for (size_t t = 0; t < 6; ++t) {
    const tqm::ChunkInfo& c = (*r)->tensors()[t].chunks.at(0);
    EXPECT_EQ(c.codec, codecs[t % 3]) << t;
    EXPECT_EQ(file[c.offset], t < 3 ? 0 : 1) << t;
    EXPECT_EQ(c.encoded_size, t < 3 ? c.decoded_size + 1 : 2u) << t;
  }
}

// "zstd_blocks" (format 1.1) is not made by the writer: zstd's output
// depends on the libzstd version, so the file is committed and only
// decoded. Its one float32 tensor (2048 values, (i mod 37) / 4) is one zstd
// chunk whose frame has no Single_Segment_Flag, a 1 KiB window, several
// blocks and a content checksum. To remake it (spec/README.md):
//   zstd -19 --zstd=wlog=10 spec/vectors/zstd_blocks.decoded -o /tmp/f.zst
//   TQM_ZSTD_FRAME=/tmp/f.zst build/bin/vectors_test --gtest_filter='Vectors.Zstd*'
std::vector<float> ZstdBlocksValues() {
  std::vector<float> v(2048);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 37) * 0.25f;
  return v;
}

TEST(Vectors, ZstdBlocksDecodes) {
  const std::string path = Dir() + "zstd_blocks.tqm";
  if (const char* frame_path = std::getenv("TQM_ZSTD_FRAME")) {
    tqm::MemorySource m;
    m.Add("model.embed_tokens.weight", {2048}, ZstdBlocksValues());
    tqm::PackOptions o = V10();
    o.max_table_entries = 0;
    auto packed = tqm::PackToString(m, o);
    ASSERT_TRUE(packed.ok()) << packed.status();
    std::string b = *packed;
    ReplaceChunk(&b, 0, 0, tqm::format::kCodecZstd, tqm_test::ReadFile(frame_path));
    tqm_fuzz::Store<uint16_t>(&b, 10, 1);  // minor_version 1: codec 2
    tqm_fuzz::FixChecksums(&b);
    tqm_test::WriteFile(path, b);
  }
  std::string expected(2048 * 4, '\0');
  const std::vector<float> values = ZstdBlocksValues();
  std::memcpy(&expected[0], values.data(), expected.size());
  EXPECT_EQ(tqm_test::ReadFile(Dir() + "zstd_blocks.decoded"), expected);
  auto r = tqm::Reader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Verify().ok());
  EXPECT_EQ((*r)->header().minor, 1);
  EXPECT_EQ(DecodedBytes(**r), expected);
  // The frame is what the file is for: walk its header and blocks
  // (RFC 8878) and check it has several blocks and no single segment.
  const tqm::ChunkInfo& c = (*r)->tensors().at(0).chunks.at(0);
  ASSERT_EQ(c.codec, tqm::format::kCodecZstd);
  const std::string f = tqm_test::ReadFile(path).substr(c.offset, c.encoded_size);
  ASSERT_GT(f.size(), 6u);
  const uint8_t fhd = static_cast<uint8_t>(f[4]);
  EXPECT_EQ(fhd & 0x20, 0) << "Single_Segment_Flag";
  EXPECT_NE(fhd & 0x04, 0) << "Content_Checksum_Flag";
  EXPECT_EQ(fhd & 0x03, 0) << "Dictionary_ID_Flag";
  const size_t fcs_bytes[4] = {0, 2, 4, 8};
  size_t p = 5 + 1 + fcs_bytes[fhd >> 6];  // Window_Descriptor, Frame_Content_Size
  int blocks = 0;
  for (bool last = false; !last; ++blocks) {
    ASSERT_LE(p + 3, f.size());
    const uint32_t h = static_cast<uint8_t>(f[p]) | static_cast<uint8_t>(f[p + 1]) << 8 |
                       static_cast<uint32_t>(static_cast<uint8_t>(f[p + 2])) << 16;
    last = h & 1;
    p += 3 + (((h >> 1) & 3) == 1 ? 1 : h >> 3);
  }
  EXPECT_EQ(p + 4, f.size()) << "the frame ends with its checksum";
  EXPECT_GE(blocks, 4);
}

// spec/FORMAT.md states each rule once: every R1..R89 has exactly one
// definition ("- Rn. " at the start of a line, in "Validation"), and every
// rule the text or WRITING.md cites is defined.
TEST(Spec, EveryRuleIsDefinedExactlyOnce) {
  const std::string dir = std::string(TQM_SOURCE_DIR) + "/spec/";
  const std::string doc = tqm_test::ReadFile(dir + "FORMAT.md");
  ASSERT_FALSE(doc.empty());
  std::map<int, int> defined;
  std::istringstream in(doc);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("- R", 0) != 0) continue;
    size_t end = 3;
    while (end < line.size() && std::isdigit(static_cast<unsigned char>(line[end])))
      ++end;
    if (end > 3 && end < line.size() && line[end] == '.')
      ++defined[std::stoi(line.substr(3))];
  }
  for (int r = 1; r <= 89; ++r) EXPECT_EQ(defined[r], 1) << "R" << r;
  EXPECT_EQ(defined.size(), 89u);
  for (const char* name : {"FORMAT.md", "WRITING.md"}) {
    const std::string text = tqm_test::ReadFile(dir + name);
    for (size_t p = text.find('R'); p != std::string::npos; p = text.find('R', p + 1)) {
      if (p > 0 && std::isalnum(static_cast<unsigned char>(text[p - 1]))) continue;
      size_t e = p + 1;
      while (e < text.size() && std::isdigit(static_cast<unsigned char>(text[e]))) ++e;
      if (e == p + 1 || e - p > 4 ||
          (e < text.size() && std::isalnum(static_cast<unsigned char>(text[e]))))
        continue;
      const int r = std::stoi(text.substr(p + 1, e - p - 1));
      EXPECT_EQ(defined.count(r), 1u) << name << " cites undefined R" << r;
    }
  }
}

}  // namespace
