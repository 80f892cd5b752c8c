// Golden test vectors in spec/vectors/: each NAME.tqm must open, verify and
// decode to exactly NAME.decoded (every tensor's stored bytes, in index
// order), and today's writer must still produce it byte for byte from the
// same input. Set TQM_REGENERATE_VECTORS=1 to rewrite them after an
// intentional, versioned format change.

#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <map>
#include <random>
#include <sstream>

#include "test_util.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

struct Vector {
  const char* name;
  tqm::MemorySource (*make)();
  tqm::PackOptions (*options)();
};

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

const Vector kVectors[] = {
    {"entropy", Entropy, EntropySizeOptions},
    {"extended", Extended, ExtendedOptions},
    {"lanes", Lanes, LanesOptions},
    {"tiny", Tiny, TinyOptions},
    {"rows", Rows, RowsOptions},
    {"stored", Stored, StoredOptions},
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
    while (end < line.size() && std::isdigit(static_cast<unsigned char>(line[end]))) ++end;
    if (end > 3 && end < line.size() && line[end] == '.') ++defined[std::stoi(line.substr(3))];
  }
  for (int r = 1; r <= 89; ++r) EXPECT_EQ(defined[r], 1) << "R" << r;
  EXPECT_EQ(defined.size(), 89u);
  for (const char* name : {"FORMAT.md", "WRITING.md"}) {
    const std::string text = tqm_test::ReadFile(dir + name);
    for (size_t p = text.find('R'); p != std::string::npos; p = text.find('R', p + 1)) {
      if (p > 0 && std::isalnum(static_cast<unsigned char>(text[p - 1]))) continue;
      size_t e = p + 1;
      while (e < text.size() && std::isdigit(static_cast<unsigned char>(text[e]))) ++e;
      if (e == p + 1 || e - p > 4 || (e < text.size() && std::isalnum(static_cast<unsigned char>(text[e])))) continue;
      const int r = std::stoi(text.substr(p + 1, e - p - 1));
      EXPECT_EQ(defined.count(r), 1u) << name << " cites undefined R" << r;
    }
  }
}

}  // namespace
