// GGUF import: the stories260K fixtures written by llama.cpp
// (../shared/fixtures/gguf) against the llama2.c checkpoint they were made
// from, metadata mapping, and a catalogue of malformed files (every
// truncation of a small file, huge counts, bad offsets, ...) that must be
// rejected with the right error class and never crash.

#include "tqm/gguf.h"

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "interop/import_internal.h"
#include "interop/llama.h"
#include "test_util.h"
#include "tqm/export.h"
#include "tqm/import.h"
#include "tqm/metadata.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace tqm {
namespace {

using tqm_test::Exists;
using tqm_test::ReadFile;
using tqm_test::SharedPath;
using tqm_test::WriteFile;

std::string Fixture(const std::string& name) {
  return SharedPath("fixtures/gguf/" + name);
}

#define SKIP_WITHOUT(path)                                     \
  do {                                                         \
    if (!Exists(path)) GTEST_SKIP() << (path) << " is absent"; \
  } while (0)

class TempDir {
 public:
  // /dev/shm when there is one: the truncation and mutation tests write
  // thousands of small files.
  TempDir() {
    std::string tmpl =
        (Exists("/dev/shm") ? "/dev/shm" : "/tmp") + std::string("/tqm_gguf_test.XXXXXX");
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Index of the tensor called `name` in `src`, or -1.
int Find(const TensorSource& src, const std::string& name) {
  for (size_t i = 0; i < src.tensors().size(); ++i) {
    if (src.tensors()[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

std::vector<float> ReadAll(TensorSource& src, const std::string& name) {
  std::vector<float> v;
  const int i = Find(src, name);
  EXPECT_GE(i, 0) << name;
  if (i >= 0) {
    absl::Status s = src.Read(i, &v);
    EXPECT_TRUE(s.ok()) << s;
  }
  return v;
}

const MetaValue* Meta(const TensorSource& s, const std::string& key) {
  return FindMeta(s.metadata(), key);
}

int64_t MetaInt(const TensorSource& s, const std::string& key) {
  const MetaValue* v = Meta(s, key);
  EXPECT_NE(v, nullptr) << key;
  if (v == nullptr) return -999;
  EXPECT_EQ(v->type, format::kMetaInt64) << key;
  return v->int64;
}

float RoundF16(float x) { return internal::HalfToFloat(internal::FloatToHalf(x)); }

// The llama2.c reference for a HF tensor name (lm_head is the tied embedding).
std::vector<float> Reference(TensorSource& l2c, const std::string& name) {
  return ReadAll(l2c, name == "lm_head.weight" ? "model.embed_tokens.weight" : name);
}

TEST(GgufFixtures, F32EqualsLlama2cCheckpoint) {
  SKIP_WITHOUT(Fixture("stories260K-f32.gguf"));
  TQM_SKIP_WITHOUT_SHARED();
  auto g = OpenGguf(Fixture("stories260K-f32.gguf"));
  ASSERT_TRUE(g.ok()) << g.status();
  auto l = OpenLlama2c(tqm_test::Stories260K());
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_EQ((*g)->tensors().size(), 48u);
  ASSERT_EQ((*l)->tensors().size(), 47u);
  for (const SourceTensor& t : (*g)->tensors()) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.dtype, format::kDTypeF32);
    const std::string ref_name =
        t.name == "lm_head.weight" ? "model.embed_tokens.weight" : t.name;
    const int r = Find(**l, ref_name);
    ASSERT_GE(r, 0) << "no such tensor in the llama2.c checkpoint";
    EXPECT_EQ(t.dims, (*l)->tensors()[r].dims);
    const std::vector<float> got = ReadAll(**g, t.name);
    const std::vector<float> want = Reference(**l, t.name);
    ASSERT_EQ(got.size(), want.size());
    // Bit for bit: q/k rows are in the same (Meta) layout in both files.
    EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 4), 0);
  }
}

TEST(GgufFixtures, F16WithinHalfRounding) {
  SKIP_WITHOUT(Fixture("stories260K-f16.gguf"));
  TQM_SKIP_WITHOUT_SHARED();
  auto g = OpenGguf(Fixture("stories260K-f16.gguf"));
  ASSERT_TRUE(g.ok()) << g.status();
  auto l = OpenLlama2c(tqm_test::Stories260K());
  ASSERT_TRUE(l.ok()) << l.status();
  int f16 = 0;
  for (const SourceTensor& t : (*g)->tensors()) {
    SCOPED_TRACE(t.name);
    const std::vector<float> got = ReadAll(**g, t.name);
    const std::vector<float> want = Reference(**l, t.name);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(t.dtype, t.dims.size() == 2 ? format::kDTypeF16 : format::kDTypeF32);
    f16 += t.dtype == format::kDTypeF16;
    for (size_t i = 0; i < got.size(); ++i) {
      // llama.cpp rounds to nearest even, as FloatToHalf does.
      const float expect = t.dtype == format::kDTypeF16 ? RoundF16(want[i]) : want[i];
      ASSERT_EQ(got[i], expect) << "element " << i;
      ASSERT_LE(std::fabs(got[i] - want[i]), std::fabs(want[i]) * (1.0f / 2048) + 6e-8f);
    }
  }
  EXPECT_EQ(f16, 37);
}

TEST(GgufFixtures, Q8_0WithinBlockScale) {
  SKIP_WITHOUT(Fixture("stories260K-q8_0.gguf"));
  TQM_SKIP_WITHOUT_SHARED();
  auto g = OpenGguf(Fixture("stories260K-q8_0.gguf"));
  ASSERT_TRUE(g.ok()) << g.status();
  auto l = OpenLlama2c(tqm_test::Stories260K());
  ASSERT_TRUE(l.ok()) << l.status();
  int q8 = 0, f16 = 0;
  for (const SourceTensor& t : (*g)->tensors()) {
    SCOPED_TRACE(t.name);
    const std::vector<float> got = ReadAll(**g, t.name);
    const std::vector<float> want = Reference(**l, t.name);
    ASSERT_EQ(got.size(), want.size());
    if (t.dtype == format::kDTypeQ8_0) {
      ++q8;
      for (size_t b = 0; b < got.size() / 32; ++b) {
        float amax = 0;
        for (size_t j = 0; j < 32; ++j)
          amax = std::max(amax, std::fabs(want[32 * b + j]));
        const float d = amax / 127;
        for (size_t j = 0; j < 32; ++j) {
          ASSERT_LE(std::fabs(got[32 * b + j] - want[32 * b + j]), 0.6f * d + 1e-9f)
              << "block " << b << " element " << j;
        }
      }
      // Our quantizer is ggml's: re-quantizing the reference gives the
      // fixture's values exactly.
      std::string q;
      internal::QuantizeQ8_0(want.data(), want.size(), &q);
      for (size_t b = 0; b < got.size() / 32; ++b) {
        const uint8_t* blk = reinterpret_cast<const uint8_t*>(q.data()) + 34 * b;
        const float d = internal::HalfToFloat(LoadLE16(blk));
        for (size_t j = 0; j < 32; ++j) {
          ASSERT_EQ(got[32 * b + j], static_cast<int8_t>(blk[2 + j]) * d);
        }
      }
    } else if (t.dtype == format::kDTypeF16) {
      ++f16;
      EXPECT_NE(t.name.find("mlp.down_proj"), std::string::npos);
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], RoundF16(want[i]));
    } else {
      EXPECT_EQ(t.dims.size(), 1u);
      EXPECT_EQ(got, want);
    }
  }
  EXPECT_EQ(q8, 32);
  EXPECT_EQ(f16, 5);
}

// Q8_0 imports as group:32 codes with zero 128 and exports back to the
// fixture's blocks bit for bit (issue: lossless Q8_0).
TEST(GgufFixtures, Q8_0ImportsAsGroupCodesAndExportsBitExact) {
  SKIP_WITHOUT(Fixture("stories260K-q8_0.gguf"));
  const std::string fixture = Fixture("stories260K-q8_0.gguf");
  auto g = OpenGguf(fixture);
  ASSERT_TRUE(g.ok()) << g.status();
  const std::string dir = ::testing::TempDir();
  const std::string packed = dir + "/q8_lossless.tqm", back = dir + "/q8_back.gguf";
  ASSERT_TRUE(Pack(**g, packed, PackOptions()).ok());
  auto r = Reader::Open(packed);
  ASSERT_TRUE(r.ok()) << r.status();
  int groups = 0;
  for (size_t t = 0; t < (*r)->tensors().size(); ++t) {
    const TensorInfo& ti = (*r)->tensors()[t];
    if (ti.source_dtype != format::kDTypeQ8_0) continue;
    ++groups;
    EXPECT_EQ(ti.storage, format::kStorageU8Group) << ti.name;
    EXPECT_EQ(ti.group_size, 32u) << ti.name;
    // The dequantized values are the fixture's, exactly.
    const std::vector<float> want = ReadAll(**g, ti.name);
    std::vector<float> got(ti.numel);
    ASSERT_TRUE((*r)->ReadFloat(t, absl::MakeSpan(got)).ok());
    EXPECT_EQ(got, want) << ti.name;
  }
  EXPECT_EQ(groups, 32);
  GgufExportOptions o;
  o.type = GgufExportType::kQ8_0;
  ASSERT_TRUE(ExportGguf(**r, back, o).ok());
  auto a = ReadGgufInfo(fixture);
  auto b = ReadGgufInfo(back);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string fa = ReadFile(fixture), fb = ReadFile(back);
  int compared = 0;
  for (const GgufTensorInfo& ta : a->tensors) {
    if (ta.type != gguf::kGgmlQ8_0) continue;
    for (const GgufTensorInfo& tb : b->tensors) {
      if (tb.name != ta.name) continue;
      ASSERT_EQ(tb.type, gguf::kGgmlQ8_0) << ta.name;
      ASSERT_EQ(tb.size, ta.size) << ta.name;
      EXPECT_EQ(fa.compare(ta.offset, ta.size, fb, tb.offset, tb.size), 0) << ta.name;
      ++compared;
    }
  }
  EXPECT_EQ(compared, 32);
}

TEST(GgufFixtures, MetadataMapped) {
  SKIP_WITHOUT(Fixture("stories260K-f32.gguf"));
  for (const char* name :
       {"stories260K-f32.gguf", "stories260K-f16.gguf", "stories260K-q8_0.gguf"}) {
    SCOPED_TRACE(name);
    auto g = OpenGguf(Fixture(name));
    ASSERT_TRUE(g.ok()) << g.status();
    const TensorSource& s = **g;
    EXPECT_EQ(Meta(s, meta_keys::kArchitecture)->bytes, "llama");
    EXPECT_EQ(MetaInt(s, meta_keys::kDim), 64);
    EXPECT_EQ(MetaInt(s, meta_keys::kHiddenDim), 172);
    EXPECT_EQ(MetaInt(s, meta_keys::kLayers), 5);
    EXPECT_EQ(MetaInt(s, meta_keys::kHeads), 8);
    EXPECT_EQ(MetaInt(s, meta_keys::kKvHeads), 4);
    EXPECT_EQ(MetaInt(s, meta_keys::kVocabSize), 512);
    EXPECT_EQ(MetaInt(s, meta_keys::kSeqLen), 128);
    EXPECT_EQ(MetaInt(s, meta_keys::kTiedClassifier), 0);  // output.weight is stored
    EXPECT_EQ(Meta(s, meta_keys::kNormEps)->float64, static_cast<double>(1e-5f));
    EXPECT_EQ(Meta(s, meta_keys::kRopeTheta)->float64, 10000.0);
    EXPECT_EQ(Meta(s, meta_keys::kRopeLayout)->bytes, "meta");
    EXPECT_EQ(Meta(s, meta_keys::kSourceFormat)->bytes, "gguf");
    EXPECT_EQ(Meta(s, meta_keys::kSourceFile)->bytes, name);
    EXPECT_EQ(Meta(s, "gguf.general.name")->bytes, "llama");
    EXPECT_EQ(Meta(s, "gguf.tokenizer.ggml.model")->bytes, "llama");
    EXPECT_EQ(MetaInt(s, "gguf.tokenizer.ggml.bos_token_id"), 1);
    EXPECT_EQ(MetaInt(s, "gguf.tokenizer.ggml.seperator_token_id"), 4294967295);
    EXPECT_EQ(MetaInt(s, "gguf.llama.rope.dimension_count"), 8);
    // Mapped keys are not repeated; arrays become the tokenizer blob.
    EXPECT_EQ(Meta(s, "gguf.llama.embedding_length"), nullptr);
    EXPECT_EQ(Meta(s, "gguf.general.architecture"), nullptr);
    EXPECT_EQ(Meta(s, "gguf.tokenizer.ggml.tokens"), nullptr);
    const MetaValue* tok = Meta(s, meta_keys::kTokenizerLlama2c);
    ASSERT_NE(tok, nullptr);
    EXPECT_EQ(tok->type, format::kMetaBytes);
    const std::string tok512 = SharedPath("models/stories260K/tok512.bin");
    if (Exists(tok512)) {
      // The converter's inverse: byte for byte the llama2.c tokenizer file.
      EXPECT_TRUE(tok->bytes == ReadFile(tok512))
          << "tokenizer blob differs from tok512.bin";
    }
  }
  auto f16 = OpenGguf(Fixture("stories260K-q8_0.gguf"));
  ASSERT_TRUE(f16.ok());
  EXPECT_EQ(MetaInt(**f16, "gguf.general.file_type"), 18);
}

TEST(GgufFixtures, VocabOnlyFile) {
  const std::string path = Fixture("ggml-vocab-llama-spm.gguf");
  SKIP_WITHOUT(path);
  auto info = ReadGgufInfo(path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->version, 3u);
  EXPECT_EQ(info->metadata.size(), 22u);
  EXPECT_TRUE(info->tensors.empty());
  const GgufKeyValue* tokens = info->Find("tokenizer.ggml.tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->array_size, 32000u);
  ASSERT_EQ(tokens->array_strings.size(), 32000u);
  EXPECT_EQ(tokens->array_strings[1], "<s>");
  const GgufKeyValue* add_bos = info->Find("tokenizer.ggml.add_bos_token");
  ASSERT_NE(add_bos, nullptr);
  EXPECT_EQ(add_bos->type, gguf::kTypeBool);
  EXPECT_EQ(add_bos->uint_value, 1u);

  auto src = OpenGguf(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE((*src)->tensors().empty());
  EXPECT_EQ(MetaInt(**src, meta_keys::kDim), 4096);
  EXPECT_EQ(MetaInt(**src, meta_keys::kVocabSize), 32000);
  EXPECT_EQ(MetaInt(**src, meta_keys::kSeqLen), 4096);
  EXPECT_EQ(MetaInt(**src, "gguf.tokenizer.ggml.add_bos_token"), 1);
  EXPECT_EQ(Meta(**src, "gguf.tokenizer.ggml.pre")->bytes, "default");
  const MetaValue* blob = Meta(**src, meta_keys::kTokenizerLlama2c);
  ASSERT_NE(blob, nullptr);
  auto back = VocabFromLlama2cTokenizer(blob->bytes, 32000);
  ASSERT_TRUE(back.ok()) << back.status();
  // Normal and byte tokens survive the trip; scores are kept bit for bit.
  const GgufKeyValue* scores = info->Find("tokenizer.ggml.scores");
  for (size_t i = 3; i < 32000; ++i) {
    ASSERT_EQ(back->tokens[i], tokens->array_strings[i]) << i;
    ASSERT_EQ(back->scores[i], static_cast<float>(scores->array_numbers[i])) << i;
  }
}

TEST(GgufFixtures, OpenModelSniffsGguf) {
  SKIP_WITHOUT(Fixture("stories260K-q8_0.gguf"));
  auto src = OpenModel(Fixture("stories260K-q8_0.gguf"));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(Meta(**src, meta_keys::kSourceFormat)->bytes, "gguf");
  EXPECT_EQ((*src)->tensors().size(), 48u);
}

TEST(GgufNames, MapBothWays) {
  const std::pair<const char*, const char*> cases[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
      {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"blk.12.attn_k.weight", "model.layers.12.self_attn.k_proj.weight"},
      {"blk.3.attn_v.bias", "model.layers.3.self_attn.v_proj.bias"},
      {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
      {"blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"},
      {"blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"},
      {"blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"},
      {"blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"},
      {"blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"},
  };
  for (const auto& [g, h] : cases) {
    EXPECT_EQ(llama::GgufToHfName(g), h);
    EXPECT_EQ(llama::HfToGgufName(h), g);
  }
  for (const char* bad :
       {"blk.01.attn_q.weight", "blk..attn_q.weight", "blk.1.attn_q", "rope_freqs.weight",
        "blk.99999999999.attn_q.weight", "blk.1.attn_qq.weight", ""}) {
    EXPECT_EQ(llama::GgufToHfName(bad), "") << bad;
  }
}

// ---- hand-built files ----

// Builds GGUF bytes field by field.
class Builder {
 public:
  Builder& U8(uint8_t v) {
    b_.push_back(static_cast<char>(v));
    return *this;
  }
  Builder& U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  Builder& U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) b_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  Builder& F32(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return U32(u);
  }
  Builder& Str(const std::string& s) {
    U64(s.size());
    b_ += s;
    return *this;
  }
  Builder& Raw(const std::string& s) {
    b_ += s;
    return *this;
  }
  Builder& Header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b_ += "GGUF";
    U32(version);
    U64(n_tensors);
    return U64(n_kv);
  }
  Builder& KvU32(const std::string& k, uint32_t v) {
    return Str(k).U32(gguf::kTypeU32).U32(v);
  }
  Builder& KvStr(const std::string& k, const std::string& v) {
    return Str(k).U32(gguf::kTypeString).Str(v);
  }
  Builder& Tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                  uint64_t offset) {
    Str(name).U32(static_cast<uint32_t>(ne.size()));
    for (uint64_t n : ne) U64(n);
    return U32(type).U64(offset);
  }
  Builder& Align(size_t a = 32) {
    while (b_.size() % a) b_.push_back('\0');
    return *this;
  }
  const std::string& bytes() const { return b_; }
  size_t size() const { return b_.size(); }

 private:
  std::string b_;
};

// A small valid llama-shaped file: 2 layers' worth of names is not needed;
// one F32 norm, one F16 matrix and one Q8_0 matrix, a tokenizer, hparams.
// Its last tensor ends exactly at the end of the file.
std::string SmallGguf() {
  Builder b;
  b.Header(3, 8);
  b.KvStr("general.architecture", "llama");
  b.KvU32("llama.embedding_length", 32);
  b.KvU32("llama.block_count", 1);
  b.KvU32("llama.attention.head_count", 4);
  b.Str("llama.attention.layer_norm_rms_epsilon").U32(gguf::kTypeF32).F32(1e-6f);
  b.KvStr("tokenizer.ggml.model", "llama");
  b.Str("tokenizer.ggml.tokens").U32(gguf::kTypeArray).U32(gguf::kTypeString).U64(4);
  b.Str("<unk>").Str("<s>").Str("</s>").Str("\xE2\x96\x81hi");
  b.Str("tokenizer.ggml.scores").U32(gguf::kTypeArray).U32(gguf::kTypeF32).U64(4);
  b.F32(0).F32(0).F32(0).F32(-1.5f);
  b.Tensor("output_norm.weight", {32}, gguf::kGgmlF32, 0);
  b.Tensor("token_embd.weight", {32, 4}, gguf::kGgmlF16, 128);
  b.Tensor("blk.0.attn_q.weight", {32, 32}, gguf::kGgmlQ8_0, 384);
  b.Align();
  for (int i = 0; i < 32; ++i) b.F32(1.0f + i);
  for (int i = 0; i < 128; ++i) b.U8(0).U8(0x3C);  // f16 1.0
  for (int r = 0; r < 32; ++r) {
    b.U8(0).U8(0x38);  // d = 0.5
    for (int j = 0; j < 32; ++j) b.U8(static_cast<uint8_t>(j - 16));
  }
  return b.bytes();
}

TEST(GgufSmall, ValidFileReads) {
  TempDir dir;
  const std::string path = dir.File("small.gguf");
  WriteFile(path, SmallGguf());
  auto src = OpenGguf(path);
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ((*src)->tensors().size(), 3u);
  EXPECT_EQ((*src)->tensors()[0].name, "model.norm.weight");
  EXPECT_EQ((*src)->tensors()[1].name, "model.embed_tokens.weight");
  EXPECT_EQ((*src)->tensors()[1].dims, (std::vector<uint64_t>{4, 32}));
  EXPECT_EQ((*src)->tensors()[2].dtype, format::kDTypeQ8_0);
  std::vector<float> v;
  ASSERT_TRUE((*src)->Read(0, &v).ok());
  EXPECT_EQ(v[31], 32.0f);
  ASSERT_TRUE((*src)->Read(1, &v).ok());
  EXPECT_EQ(v, std::vector<float>(128, 1.0f));
  ASSERT_TRUE((*src)->Read(2, &v).ok());
  EXPECT_EQ(v[0], -8.0f);
  EXPECT_EQ(v[33], -7.5f);
  EXPECT_EQ(MetaInt(**src, meta_keys::kVocabSize), 4);
  EXPECT_EQ(MetaInt(**src, meta_keys::kKvHeads), 4);  // defaults to head_count
  EXPECT_EQ(MetaInt(**src, meta_keys::kTiedClassifier), 1);
  EXPECT_EQ(Meta(**src, meta_keys::kNormEps)->float64, static_cast<double>(1e-6f));
  const MetaValue* blob = Meta(**src, meta_keys::kTokenizerLlama2c);
  ASSERT_NE(blob, nullptr);
  std::string want("\x06\0\0\0", 4);
  auto token = [&](float score, const std::string& t) {
    want.append(reinterpret_cast<const char*>(&score), 4);
    const uint32_t n = t.size();
    want.append(reinterpret_cast<const char*>(&n), 4);
    want += t;
  };
  token(0, "<unk>");
  token(0, "\n<s>\n");
  token(0, "\n</s>\n");
  token(-1.5f, " hi");
  EXPECT_TRUE(blob->bytes == want);
}

TEST(GgufSmall, EveryTruncatedPrefixRejected) {
  TempDir dir;
  const std::string full = SmallGguf();
  const std::string path = dir.File("cut.gguf");
  for (size_t n = 0; n < full.size(); ++n) {
    WriteFile(path, full.substr(0, n));
    auto src = OpenGguf(path);
    ASSERT_FALSE(src.ok()) << "prefix of " << n << " bytes accepted";
    EXPECT_EQ(src.status().code(), absl::StatusCode::kDataLoss)
        << n << ": " << src.status();
    EXPECT_NE(src.status().message().find(path), std::string::npos) << src.status();
  }
}

TEST(GgufSmall, MutationsNeverCrash) {
  TempDir dir;
  const std::string full = SmallGguf();
  const std::string path = dir.File("flip.gguf");
  int accepted = 0;
  for (size_t i = 0; i < full.size(); ++i) {
    for (uint8_t x : {0x01, 0x80, 0xFF}) {
      std::string m = full;
      m[i] = static_cast<char>(m[i] ^ x);
      WriteFile(path, m);
      auto src = OpenGguf(path);
      if (!src.ok()) continue;
      ++accepted;  // data bytes and some values are not checkable
      std::vector<float> v;
      for (size_t t = 0; t < (*src)->tensors().size(); ++t) (void)(*src)->Read(t, &v);
    }
  }
  EXPECT_GT(accepted, 0);
}

// Flips bytes all over the header of a real llama.cpp file (metadata with
// string and numeric arrays, 48 tensor infos): open never crashes, and what
// opens reads.
TEST(GgufFixtures, HeaderMutationsNeverCrash) {
  const std::string fixture = Fixture("stories260K-f16.gguf");
  SKIP_WITHOUT(fixture);
  auto info = ReadGgufInfo(fixture);
  ASSERT_TRUE(info.ok()) << info.status();
  TempDir dir;
  const std::string path = dir.File("m.gguf");
  const std::string good = ReadFile(fixture);
  WriteFile(path, good);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  int opened = 0, rejected = 0;
  for (size_t i = 0; i < info->data_offset; i += 5) {
    for (uint8_t x : {0x01, 0xFF}) {
      f.seekp(i);
      f.put(static_cast<char>(good[i] ^ x));
      f.flush();
      auto src = OpenGguf(path);
      if (src.ok()) {
        ++opened;
        std::vector<float> v;
        for (size_t t = 0; t < (*src)->tensors().size(); ++t) (void)(*src)->Read(t, &v);
      } else {
        ++rejected;
      }
      f.seekp(i);
      f.put(good[i]);
      f.flush();
    }
  }
  EXPECT_GT(opened, 0);
  EXPECT_GT(rejected, 0);
}

struct BadCase {
  const char* name;
  std::function<std::string()> make;
  absl::StatusCode code;
  const char* message;  // substring of the error
};

std::string WithTensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type,
                       uint64_t offset, size_t data_bytes,
                       const std::vector<std::pair<std::string, uint32_t>>& u32s = {}) {
  Builder b;
  b.Header(1, u32s.size());
  for (const auto& [k, v] : u32s) b.KvU32(k, v);
  b.Tensor(name, ne, type, offset).Align();
  b.Raw(std::string(data_bytes, '\0'));
  return b.bytes();
}

TEST(GgufSmall, RejectsCatalogue) {
  using C = absl::StatusCode;
  const uint64_t huge = ~uint64_t{0};
  const std::vector<BadCase> cases = {
      {"bad magic", [] { return std::string("GGUG") + std::string(20, '\0'); },
       C::kDataLoss, "magic"},
      {"version 1", [] { return Builder().Header(0, 0, 1).bytes(); }, C::kUnimplemented,
       "version 1"},
      {"version 4", [] { return Builder().Header(0, 0, 4).bytes(); }, C::kUnimplemented,
       "version 4"},
      {"big-endian version", [] { return Builder().Header(0, 0, 0x03000000).bytes(); },
       C::kUnimplemented, "big-endian"},
      {"huge metadata count", [=] { return Builder().Header(0, huge).bytes(); },
       C::kDataLoss, "metadata count"},
      {"huge tensor count", [=] { return Builder().Header(huge, 0).bytes(); },
       C::kDataLoss, "tensor count"},
      {"huge key length",
       [=] { return Builder().Header(0, 1).U64(huge).Raw(std::string(16, 'k')).bytes(); },
       C::kDataLoss, "metadata key length"},
      {"huge string value",
       [=] {
         return Builder()
             .Header(0, 1)
             .Str("a")
             .U32(gguf::kTypeString)
             .U64(1ull << 40)
             .bytes();
       },
       C::kDataLoss, "string value length"},
      {"empty key", [] { return Builder().Header(0, 1).Str("").U32(0).U8(0).bytes(); },
       C::kDataLoss, "empty"},
      {"duplicate key",
       [] { return Builder().Header(0, 2).KvU32("a", 1).KvU32("a", 2).bytes(); },
       C::kDataLoss, "duplicate metadata key 'a'"},
      {"unknown value type",
       [] { return Builder().Header(0, 1).Str("a").U32(13).U64(0).bytes(); },
       C::kDataLoss, "unknown value type 13"},
      {"bool 2",
       [] { return Builder().Header(0, 1).Str("a").U32(gguf::kTypeBool).U8(2).bytes(); },
       C::kDataLoss, "bool"},
      {"nested array",
       [] {
         return Builder()
             .Header(0, 1)
             .Str("a")
             .U32(gguf::kTypeArray)
             .U32(gguf::kTypeArray)
             .U64(1)
             .bytes();
       },
       C::kUnimplemented, "arrays of arrays"},
      {"huge array",
       [=] {
         return Builder()
             .Header(0, 1)
             .Str("a")
             .U32(gguf::kTypeArray)
             .U32(gguf::kTypeU32)
             .U64(huge / 2)
             .bytes();
       },
       C::kDataLoss, "cannot fit"},
      {"huge string array",
       [] {
         return Builder()
             .Header(0, 1)
             .Str("tokenizer.ggml.tokens")
             .U32(gguf::kTypeArray)
             .U32(gguf::kTypeString)
             .U64(1ull << 40)
             .Raw(std::string(64, '\0'))
             .bytes();
       },
       C::kDataLoss, "cannot fit"},
      {"alignment not a power of two",
       [] { return Builder().Header(0, 1).KvU32("general.alignment", 24).bytes(); },
       C::kDataLoss, "power of two"},
      {"alignment zero",
       [] { return Builder().Header(0, 1).KvU32("general.alignment", 0).bytes(); },
       C::kDataLoss, "power of two"},
      {"alignment u64",
       [] {
         return Builder()
             .Header(0, 1)
             .Str("general.alignment")
             .U32(gguf::kTypeU64)
             .U64(32)
             .bytes();
       },
       C::kDataLoss, "must be u32"},
      {"zero dims", [] { return WithTensor("t", {}, gguf::kGgmlF32, 0, 32); },
       C::kDataLoss, "0 dimensions"},
      {"five dims",
       [] {
         return WithTensor("t", {1, 1, 1, 1, 1}, gguf::kGgmlF32, 0, 32);
       },
       C::kDataLoss, "5 dimensions"},
      {"element count overflow",
       [] {
         return WithTensor("t", {1ull << 32, 1ull << 32}, gguf::kGgmlF32, 0, 32);
       },
       C::kDataLoss, "overflows"},
      {"byte size overflow",
       [] { return WithTensor("t", {1ull << 62}, gguf::kGgmlF32, 0, 32); }, C::kDataLoss,
       "overflows"},
      {"negative ne", [=] { return WithTensor("t", {huge}, gguf::kGgmlF32, 0, 32); },
       C::kDataLoss, "overflows"},
      {"unsupported type Q4_0", [] { return WithTensor("t", {32}, 2, 0, 32); },
       C::kUnimplemented, "Q4_0"},
      {"unknown type", [] { return WithTensor("t", {32}, 999, 0, 32); },
       C::kUnimplemented, "type 999"},
      {"Q8_0 row of 33", [] { return WithTensor("t", {33}, gguf::kGgmlQ8_0, 0, 64); },
       C::kDataLoss, "multiple of 32"},
      {"misaligned offset", [] { return WithTensor("t", {4}, gguf::kGgmlF32, 16, 64); },
       C::kDataLoss, "not a multiple of the alignment"},
      {"offset past the end", [] { return WithTensor("t", {4}, gguf::kGgmlF32, 64, 32); },
       C::kDataLoss, "past the end"},
      {"huge offset", [=] { return WithTensor("t", {4}, gguf::kGgmlF32, huge - 31, 32); },
       C::kDataLoss, "past the end"},
      {"data cut short", [] { return WithTensor("t", {16}, gguf::kGgmlF32, 0, 32); },
       C::kDataLoss, "past the end"},
      {"empty tensor name", [] { return WithTensor("", {4}, gguf::kGgmlF32, 0, 32); },
       C::kDataLoss, "empty"},
      {"NUL in tensor name",
       [] { return WithTensor(std::string("a\0b", 3), {4}, gguf::kGgmlF32, 0, 32); },
       C::kDataLoss, "NUL"},
      {"huge tensor name",
       [] { return WithTensor(std::string(2000, 'n'), {4}, gguf::kGgmlF32, 0, 32); },
       C::kResourceExhausted, "tensor name length"},
      {"overlapping tensors",
       [] {
         Builder b;
         b.Header(2, 0)
             .Tensor("a", {16}, gguf::kGgmlF32, 0)
             .Tensor("b", {8}, gguf::kGgmlF32, 32)
             .Align();
         return b.Raw(std::string(64, '\0')).bytes();
       },
       C::kDataLoss, "overlaps"},
      {"duplicate tensor",
       [] {
         Builder b;
         b.Header(2, 0)
             .Tensor("a", {8}, gguf::kGgmlF32, 0)
             .Tensor("a", {8}, gguf::kGgmlF32, 32)
             .Align();
         return b.Raw(std::string(64, '\0')).bytes();
       },
       C::kDataLoss, "duplicate tensor name 'a'"},
      {"two names for one HF tensor",
       [] {
         Builder b;
         b.Header(2, 0)
             .Tensor("output_norm.weight", {8}, gguf::kGgmlF32, 0)
             .Tensor("model.norm.weight", {8}, gguf::kGgmlF32, 32)
             .Align();
         return b.Raw(std::string(64, '\0')).bytes();
       },
       C::kDataLoss, "maps to"},
      {"embedding_length contradicts token_embd",
       [] {
         Builder b;
         b.Header(1, 2)
             .KvStr("general.architecture", "llama")
             .KvU32("llama.embedding_length", 8);
         b.Tensor("token_embd.weight", {4, 2}, gguf::kGgmlF32, 0).Align();
         return b.Raw(std::string(32, '\0')).bytes();
       },
       C::kDataLoss, "embedding_length=8"},
      {"head_count_kv does not divide",
       [] {
         Builder b;
         b.Header(0, 3).KvStr("general.architecture", "llama");
         b.KvU32("llama.attention.head_count", 6)
             .KvU32("llama.attention.head_count_kv", 4);
         return b.bytes();
       },
       C::kDataLoss, "head_count_kv=4"},
      {"block beyond block_count",
       [] {
         Builder b;
         b.Header(1, 2)
             .KvStr("general.architecture", "llama")
             .KvU32("llama.block_count", 2);
         b.Tensor("blk.2.attn_norm.weight", {8}, gguf::kGgmlF32, 0).Align();
         return b.Raw(std::string(32, '\0')).bytes();
       },
       C::kDataLoss, "blk.2"},
      {"hyperparameter of the wrong type",
       [] {
         Builder b;
         b.Header(0, 2).KvStr("general.architecture", "llama");
         b.KvStr("llama.block_count", "five");
         return b.bytes();
       },
       C::kDataLoss, "block_count"},
      {"eps of the wrong type",
       [] {
         Builder b;
         b.Header(0, 2).KvStr("general.architecture", "llama");
         b.KvU32("llama.attention.layer_norm_rms_epsilon", 1);
         return b.bytes();
       },
       C::kDataLoss, "expected f32"},
      {"scores shorter than tokens",
       [] {
         Builder b;
         b.Header(0, 3).KvStr("tokenizer.ggml.model", "llama");
         b.Str("tokenizer.ggml.tokens")
             .U32(gguf::kTypeArray)
             .U32(gguf::kTypeString)
             .U64(2);
         b.Str("a").Str("b");
         b.Str("tokenizer.ggml.scores")
             .U32(gguf::kTypeArray)
             .U32(gguf::kTypeF32)
             .U64(1)
             .F32(0);
         return b.bytes();
       },
       C::kDataLoss, "scores"},
  };
  TempDir dir;
  const std::string path = dir.File("bad.gguf");
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    WriteFile(path, c.make());
    auto src = OpenGguf(path);
    ASSERT_FALSE(src.ok());
    EXPECT_EQ(src.status().code(), c.code) << src.status();
    EXPECT_NE(src.status().message().find(c.message), std::string::npos) << src.status();
    EXPECT_NE(src.status().message().find(path), std::string::npos) << src.status();
  }
}

TEST(GgufSmall, IntegerAndF64TensorsKeptVerbatim) {
  TempDir dir;
  const std::string path = dir.File("ints.gguf");
  struct Want {
    const char* name;
    uint32_t type;
    format::SourceDType dtype;
    size_t size;
  };
  const Want wants[] = {
      {"i8", gguf::kGgmlI8, format::kDTypeI8, 1},
      {"i16", gguf::kGgmlI16, format::kDTypeI16, 2},
      {"i32", gguf::kGgmlI32, format::kDTypeI32, 4},
      {"i64", gguf::kGgmlI64, format::kDTypeI64, 8},
      {"f64", gguf::kGgmlF64, format::kDTypeF64, 8},
      {"f32", gguf::kGgmlF32, format::kDTypeF32, 4},
  };
  Builder b;
  b.Header(std::size(wants), 0);
  uint64_t offset = 0;
  for (const Want& w : wants) {
    b.Tensor(w.name, {3, 2}, w.type, offset);  // ggml order: 3 per row, 2 rows
    offset += 64;
  }
  b.Align();
  std::vector<std::string> data;
  for (size_t i = 0; i < std::size(wants); ++i) {
    std::string bytes(6 * wants[i].size, '\0');
    for (size_t j = 0; j < bytes.size(); ++j) bytes[j] = static_cast<char>(i * 50 + j);
    if (wants[i].type == gguf::kGgmlF32) {
      bytes.clear();
      for (float f : {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f})
        bytes.append(reinterpret_cast<const char*>(&f), 4);
    }
    data.push_back(bytes);
    b.Raw(bytes + std::string(64 - bytes.size(), '\0'));
  }
  WriteFile(path, b.bytes());
  auto src = OpenGguf(path);
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ((*src)->tensors().size(), std::size(wants));
  for (size_t i = 0; i < std::size(wants); ++i) {
    const SourceTensor& t = (*src)->tensors()[i];
    EXPECT_EQ(t.name, wants[i].name);
    EXPECT_EQ(t.dtype, wants[i].dtype) << t.name;
    EXPECT_EQ(t.dims, (std::vector<uint64_t>{2, 3})) << t.name;
    const bool is_float = wants[i].type == gguf::kGgmlF32;
    EXPECT_EQ(t.kind, is_float ? TensorKind::kFloat : TensorKind::kRaw) << t.name;
    std::string raw;
    ASSERT_TRUE((*src)->ReadRaw(i, &raw).ok()) << t.name;
    EXPECT_TRUE(raw == data[i]) << t.name;
    std::vector<float> v;
    EXPECT_EQ((*src)->Read(i, &v).ok(), is_float) << t.name;
  }
}

TEST(GgufSmall, EmptyTensorKeptVerbatim) {
  TempDir dir;
  const std::string path = dir.File("empty_tensor.gguf");
  Builder b;
  b.Header(1, 0).Tensor("e", {4, 0}, gguf::kGgmlF16, 0).Align();
  WriteFile(path, b.bytes());
  auto src = OpenGguf(path);
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ((*src)->tensors().size(), 1u);
  EXPECT_EQ((*src)->tensors()[0].kind, TensorKind::kRaw);
  EXPECT_EQ((*src)->tensors()[0].dims, (std::vector<uint64_t>{0, 4}));
  std::string raw = "x";
  ASSERT_TRUE((*src)->ReadRaw(0, &raw).ok());
  EXPECT_TRUE(raw.empty());
}

TEST(GgufSmall, ZeroTensorsAndUnalignedEndIsValid) {
  TempDir dir;
  const std::string path = dir.File("empty.gguf");
  WriteFile(path, Builder().Header(0, 1).KvStr("general.name", "x").bytes());
  auto src = OpenGguf(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(Meta(**src, "gguf.general.name")->bytes, "x");
  // Version 2 reads the same.
  WriteFile(path, Builder().Header(0, 0, 2).bytes());
  EXPECT_TRUE(OpenGguf(path).ok());
}

TEST(GgufSmall, AlignmentKeyHonoured) {
  TempDir dir;
  const std::string path = dir.File("a64.gguf");
  Builder b;
  b.Header(1, 1)
      .KvU32("general.alignment", 64)
      .Tensor("t", {4}, gguf::kGgmlF32, 0)
      .Align(64);
  b.F32(1).F32(2).F32(3).F32(4);
  WriteFile(path, b.bytes());
  auto info = ReadGgufInfo(path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->alignment, 64u);
  EXPECT_EQ(info->data_offset % 64, 0u);
  auto src = OpenGguf(path);
  ASSERT_TRUE(src.ok());
  std::vector<float> v;
  ASSERT_TRUE((*src)->Read(0, &v).ok());
  EXPECT_EQ(v, (std::vector<float>{1, 2, 3, 4}));
  // An offset aligned to 32 but not 64 is rejected under alignment 64.
  Builder c;
  c.Header(1, 1)
      .KvU32("general.alignment", 64)
      .Tensor("t", {4}, gguf::kGgmlF32, 32)
      .Align(64);
  c.Raw(std::string(64, '\0'));
  WriteFile(path, c.bytes());
  EXPECT_EQ(OpenGguf(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(GgufVocab, Llama2cConversionsInvert) {
  GgufVocab v;
  v.tokens = {"<unk>",
              "<s>",
              "</s>",
              "<0x0A>",
              "\xE2\x96\x81the",
              "",
              "a\xE2\x96\x81"
              "b"};
  v.scores = {0, 0, 0, 0, -1, -2, -3};
  v.types = {2, 3, 3, 6, 1, 3, 1};
  auto blob = Llama2cTokenizerFromVocab(v);
  ASSERT_TRUE(blob.ok()) << blob.status();
  auto back = VocabFromLlama2cTokenizer(*blob, 7);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->tokens, v.tokens);
  EXPECT_EQ(back->scores, v.scores);
  EXPECT_EQ(back->types, v.types);
  // Malformed blobs.
  EXPECT_EQ(VocabFromLlama2cTokenizer("", 1).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(VocabFromLlama2cTokenizer(*blob, 8).status().code(),
            absl::StatusCode::kDataLoss);
  std::string bad = *blob;
  bad[8] = '\x7F';  // first token's length
  EXPECT_EQ(VocabFromLlama2cTokenizer(bad, 7).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(VocabFromLlama2cTokenizer(*blob, 1ull << 62).status().code(),
            absl::StatusCode::kDataLoss);
  v.scores.pop_back();
  EXPECT_EQ(Llama2cTokenizerFromVocab(v).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tqm
