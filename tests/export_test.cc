// Exporters (GGUF, llama2.c, safetensors F16/BF16) and sharded safetensors
// import: pack -> export -> reimport round trips, llama.cpp compatibility of
// the GGUF tokenizer arrays (compared with the llama.cpp-written fixtures),
// the Hugging Face <-> Meta q/k permutation, and float16 rounding.

#include "tqm/export.h"

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "import_internal.h"
#include "llama_names.h"
#include "test_util.h"
#include "tqm/gguf.h"
#include "tqm/import.h"
#include "tqm/metadata.h"
#include "tqm/reader.h"
#include "tqm/safetensors.h"
#include "tqm/writer.h"

namespace tqm {
namespace {

using tqm_test::Exists;
using tqm_test::ReadFile;
using tqm_test::SharedPath;
using tqm_test::WriteFile;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (Exists("/dev/shm") ? "/dev/shm" : "/tmp") +
                       std::string("/tqm_export_test.XXXXXX");
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string Tok512() { return SharedPath("models/stories260K/tok512.bin"); }
std::string Fixture(const std::string& n) { return SharedPath("fixtures/gguf/" + n); }

// Packs `src` into `path` and opens it.
std::unique_ptr<Reader> PackAndOpen(TensorSource& src, const std::string& path,
                                    PackOptions opt = {}) {
  auto st = Pack(src, path, opt);
  EXPECT_TRUE(st.ok()) << st.status();
  auto r = Reader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(r).value() : nullptr;
}

// stories260K packed with its tokenizer.
std::unique_ptr<Reader> PackStories(const TempDir& dir) {
  auto src = OpenLlama2c(tqm_test::Stories260K());
  EXPECT_TRUE(src.ok()) << src.status();
  PackOptions opt;
  if (Exists(Tok512())) {
    opt.extra_metadata.push_back(
        {meta_keys::kTokenizerLlama2c, MetaValue::Bytes(ReadFile(Tok512()))});
  }
  return PackAndOpen(**src, dir.File("stories.tqm"), opt);
}

std::vector<float> Floats(const Reader& r, const std::string& name) {
  const int t = r.FindTensor(name);
  EXPECT_GE(t, 0) << name;
  std::vector<float> v(t >= 0 ? r.tensors()[t].numel : 0);
  if (t >= 0) EXPECT_TRUE(r.ReadFloat(t, absl::MakeSpan(v)).ok());
  return v;
}

std::vector<float> Floats(TensorSource& s, const std::string& name) {
  std::vector<float> v;
  for (size_t i = 0; i < s.tensors().size(); ++i) {
    if (s.tensors()[i].name == name) {
      EXPECT_TRUE(s.Read(i, &v).ok()) << name;
      return v;
    }
  }
  ADD_FAILURE() << "no tensor " << name;
  return v;
}

int64_t MetaInt(const std::vector<MetaEntry>& m, const std::string& key) {
  const MetaValue* v = FindMeta(m, key);
  EXPECT_NE(v, nullptr) << key;
  return v ? v->int64 : -999;
}

float RoundF16(float x) { return internal::HalfToFloat(internal::FloatToHalf(x)); }

// A small model in the HF layout with a separate classifier and metadata.
MemorySource HfModel() {
  MemorySource m = tqm_test::SmallModel(2, 32, 64, 96);
  m.Add("lm_head.weight", {96, 32}, tqm_test::Gaussian(96 * 32, 77));
  m.AddMeta({meta_keys::kHeads, MetaValue::Int(4)});
  m.AddMeta({meta_keys::kRopeLayout, MetaValue::String("hf")});
  m.AddMeta({meta_keys::kSeqLen, MetaValue::Int(64)});
  return m;
}

// ---- float16 ----

TEST(HalfRounding, EveryHalfRoundTripsAndTiesGoToEven) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = internal::HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(internal::HalfToFloat(internal::FloatToHalf(f))));
      continue;
    }
    ASSERT_EQ(internal::FloatToHalf(f), h) << std::hex << h;
    // Midway to the next half up (same sign) rounds to the even one.
    const uint32_t next = h + 1;
    if ((h & 0x7FFF) >= 0x7BFF) continue;  // next is inf/nan
    const float g = internal::HalfToFloat(static_cast<uint16_t>(next));
    const float mid = static_cast<float>((static_cast<double>(f) + g) / 2);
    const uint16_t want =
        (h & 1) ? static_cast<uint16_t>(next) : static_cast<uint16_t>(h);
    ASSERT_EQ(internal::FloatToHalf(mid), want) << std::hex << h;
  }
  EXPECT_EQ(internal::FloatToHalf(65520.0f), 0x7C00);  // rounds to inf
  EXPECT_EQ(internal::FloatToHalf(65519.0f), 0x7BFF);
  EXPECT_EQ(internal::FloatToHalf(1e-10f), 0);
  EXPECT_EQ(internal::FloatToBFloat16(1.0f), 0x3F80);
  EXPECT_EQ(internal::FloatToBFloat16(1.00390625f), 0x3F80);  // tie to even
  EXPECT_EQ(internal::FloatToBFloat16(1.01171875f), 0x3F82);  // tie to even (up)
}

TEST(RopeLayout, PermutationInvertsAndMatchesTheDefinition) {
  const uint64_t head = 8, rows = 16, cols = 3;
  std::vector<float> hf(rows * cols);
  for (size_t i = 0; i < hf.size(); ++i) hf[i] = static_cast<float>(i);
  std::vector<float> meta = hf;
  internal::HfToMetaRows(absl::MakeSpan(meta), rows, cols, head);
  for (uint64_t h = 0; h < rows / head; ++h) {
    for (uint64_t i = 0; i < head / 2; ++i) {
      for (uint64_t c = 0; c < cols; ++c) {
        EXPECT_EQ(meta[(h * head + 2 * i) * cols + c], hf[(h * head + i) * cols + c]);
        EXPECT_EQ(meta[(h * head + 2 * i + 1) * cols + c],
                  hf[(h * head + i + head / 2) * cols + c]);
      }
    }
  }
  internal::MetaToHfRows(absl::MakeSpan(meta), rows, cols, head);
  EXPECT_EQ(meta, hf);
}

// ---- llama2.c ----

TEST(ExportLlama2c, Stories260KRoundTrip) {
  TQM_SKIP_WITHOUT_SHARED();
  TempDir dir;
  auto r = PackStories(dir);
  ASSERT_NE(r, nullptr);
  const std::string out = dir.File("out.bin");
  absl::Status s = ExportLlama2c(*r, out);
  ASSERT_TRUE(s.ok()) << s;
  // Same header and size as the original (tied classifier, seq_len 512).
  const std::string orig = ReadFile(tqm_test::Stories260K());
  const std::string got = ReadFile(out);
  ASSERT_EQ(got.size(), orig.size());
  EXPECT_EQ(got.substr(0, 28), orig.substr(0, 28));
  auto back = OpenLlama2c(out);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ((*back)->tensors().size(), r->tensors().size());
  for (const SourceTensor& t : (*back)->tensors()) {
    SCOPED_TRACE(t.name);
    const std::vector<float> want = Floats(*r, t.name);
    const std::vector<float> have = Floats(**back, t.name);
    ASSERT_EQ(have.size(), want.size());
    EXPECT_EQ(std::memcmp(have.data(), want.data(), 4 * want.size()), 0);
  }
  // The RoPE tables (seq_len * head_size / 2 floats each, cos then sin) end
  // the file (tied: no classifier follows them) and match the ones llama2.c's
  // PyTorch export wrote into the original to within float32 rounding.
  const size_t floats = 2 * 512 * 8 / 2, rope = floats * 4;
  std::vector<float> a(floats), b(floats);
  std::memcpy(a.data(), got.data() + got.size() - rope, rope);
  std::memcpy(b.data(), orig.data() + orig.size() - rope, rope);
  size_t exact = 0;
  for (size_t i = 0; i < floats; ++i) {
    ASSERT_NEAR(a[i], b[i], 2e-6) << "RoPE float " << i;
    exact += a[i] == b[i];
  }
  EXPECT_GT(exact, floats * 9 / 10);
  EXPECT_EQ(a[0], 1.0f);           // cos(0)
  EXPECT_EQ(a[floats / 2], 0.0f);  // sin(0)
}

TEST(ExportLlama2c, SeparateClassifierAndHfLayout) {
  TempDir dir;
  MemorySource m = HfModel();
  auto r = PackAndOpen(m, dir.File("hf.tqm"));
  ASSERT_NE(r, nullptr);
  const std::string out = dir.File("hf.bin");
  ASSERT_TRUE(ExportLlama2c(*r, out).ok());
  const std::string bytes = ReadFile(out);
  int32_t header[7];
  std::memcpy(header, bytes.data(), 28);
  EXPECT_EQ(header[0], 32);
  EXPECT_EQ(header[1], 64);
  EXPECT_EQ(header[2], 2);
  EXPECT_EQ(header[3], 4);
  EXPECT_EQ(header[4], 2);  // k_proj has 16 rows: 2 heads of 8
  EXPECT_EQ(header[5], -96);
  EXPECT_EQ(header[6], 64);
  auto back = OpenLlama2c(out);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(Floats(**back, "lm_head.weight"), Floats(*r, "lm_head.weight"));
  for (const char* name : {"model.layers.1.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.k_proj.weight"}) {
    SCOPED_TRACE(name);
    std::vector<float> want = Floats(*r, name);
    const uint64_t rows = want.size() / 32;
    internal::HfToMetaRows(absl::MakeSpan(want), rows, 32, 8);
    EXPECT_EQ(Floats(**back, name), want);
    EXPECT_NE(Floats(**back, name), Floats(*r, name));
  }
  EXPECT_EQ(Floats(**back, "model.layers.0.self_attn.v_proj.weight"),
            Floats(*r, "model.layers.0.self_attn.v_proj.weight"));
}

TEST(ExportLlama2c, NeedsHeadsAndTheWholeModel) {
  TempDir dir;
  MemorySource m = tqm_test::SmallModel(2, 32, 64, 96);
  auto r = PackAndOpen(m, dir.File("small.tqm"));
  ASSERT_NE(r, nullptr);
  absl::Status s = ExportLlama2c(*r, dir.File("x.bin"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("n_heads"), std::string::npos) << s;
  EXPECT_FALSE(Exists(dir.File("x.bin")));
  ExportOverrides ov;
  ov.n_heads = 4;
  ov.seq_len = 16;
  EXPECT_TRUE(ExportLlama2c(*r, dir.File("x.bin"), ov).ok());
  ov.n_heads = 5;  // does not divide dim
  EXPECT_EQ(ExportLlama2c(*r, dir.File("y.bin"), ov).code(),
            absl::StatusCode::kFailedPrecondition);

  MemorySource partial;
  partial.Add("model.embed_tokens.weight", {8, 4}, std::vector<float>(32, 0.5f));
  partial.Add("model.layers.0.input_layernorm.weight", {4}, std::vector<float>(4, 1));
  partial.AddMeta({meta_keys::kHeads, MetaValue::Int(2)});
  auto p = PackAndOpen(partial, dir.File("partial.tqm"));
  ASSERT_NE(p, nullptr);
  s = ExportLlama2c(*p, dir.File("p.bin"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("layer 0 lacks"), std::string::npos) << s;
  // Everything but the final norm.
  MemorySource no_norm;
  MemorySource full = tqm_test::SmallModel(1, 32, 64, 96);
  std::vector<float> v;
  for (size_t i = 0; i < full.tensors().size(); ++i) {
    if (full.tensors()[i].name == "model.norm.weight") continue;
    ASSERT_TRUE(full.Read(i, &v).ok());
    no_norm.Add(full.tensors()[i].name, full.tensors()[i].dims, v);
  }
  no_norm.AddMeta({meta_keys::kHeads, MetaValue::Int(4)});
  auto nn = PackAndOpen(no_norm, dir.File("nonorm.tqm"));
  ASSERT_NE(nn, nullptr);
  s = ExportLlama2c(*nn, dir.File("nn.bin"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("no tensor model.norm.weight"), std::string::npos) << s;

  MemorySource extra = tqm_test::SmallModel(1, 32, 64, 96);
  extra.Add("model.layers.0.self_attn.q_proj.bias", {32}, std::vector<float>(32, 0));
  extra.AddMeta({meta_keys::kHeads, MetaValue::Int(4)});
  auto e = PackAndOpen(extra, dir.File("extra.tqm"));
  ASSERT_NE(e, nullptr);
  s = ExportGguf(*e, dir.File("e.gguf"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("q_proj.bias"), std::string::npos) << s;
}

// ---- GGUF ----

TEST(ExportGguf, Stories260KAllTypesRoundTrip) {
  TQM_SKIP_WITHOUT_SHARED();
  TempDir dir;
  auto r = PackStories(dir);
  ASSERT_NE(r, nullptr);
  for (GgufExportType type :
       {GgufExportType::kF32, GgufExportType::kF16, GgufExportType::kQ8_0}) {
    SCOPED_TRACE(static_cast<int>(type));
    const std::string out = dir.File("out.gguf");
    GgufExportOptions opt;
    opt.type = type;
    absl::Status s = ExportGguf(*r, out, opt);
    ASSERT_TRUE(s.ok()) << s;
    auto info = ReadGgufInfo(out);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->version, 3u);
    EXPECT_EQ(info->tensors.size(), 47u);  // tied: no output.weight
    auto g = OpenGguf(out);
    ASSERT_TRUE(g.ok()) << g.status();
    const std::vector<MetaEntry>& m = (*g)->metadata();
    EXPECT_EQ(MetaInt(m, meta_keys::kDim), 64);
    EXPECT_EQ(MetaInt(m, meta_keys::kHiddenDim), 172);
    EXPECT_EQ(MetaInt(m, meta_keys::kLayers), 5);
    EXPECT_EQ(MetaInt(m, meta_keys::kHeads), 8);
    EXPECT_EQ(MetaInt(m, meta_keys::kKvHeads), 4);
    EXPECT_EQ(MetaInt(m, meta_keys::kVocabSize), 512);
    EXPECT_EQ(MetaInt(m, meta_keys::kSeqLen), 512);
    EXPECT_EQ(MetaInt(m, meta_keys::kTiedClassifier), 1);
    EXPECT_EQ(MetaInt(m, "gguf.llama.rope.dimension_count"), 8);
    EXPECT_EQ(MetaInt(m, "gguf.general.file_type"), type == GgufExportType::kF32   ? 0
                                                    : type == GgufExportType::kF16 ? 1
                                                                                   : 7);
    if (Exists(Tok512())) {
      const MetaValue* blob = FindMeta(m, meta_keys::kTokenizerLlama2c);
      ASSERT_NE(blob, nullptr);
      EXPECT_TRUE(blob->bytes == ReadFile(Tok512()));
    }
    for (const SourceTensor& t : (*g)->tensors()) {
      SCOPED_TRACE(t.name);
      const std::vector<float> want = Floats(*r, t.name);
      const std::vector<float> have = Floats(**g, t.name);
      ASSERT_EQ(have.size(), want.size());
      if (t.dtype == format::kDTypeF32) {
        EXPECT_TRUE(type == GgufExportType::kF32 || t.dims.size() == 1);
        EXPECT_EQ(have, want);
      } else if (t.dtype == format::kDTypeF16) {
        EXPECT_TRUE(type == GgufExportType::kF16 ||
                    t.name.find("down_proj") != std::string::npos);
        for (size_t i = 0; i < have.size(); ++i) ASSERT_EQ(have[i], RoundF16(want[i]));
      } else {
        ASSERT_EQ(t.dtype, format::kDTypeQ8_0);
        for (size_t b = 0; b < want.size() / 32; ++b) {
          float amax = 0;
          for (size_t j = 0; j < 32; ++j)
            amax = std::max(amax, std::fabs(want[32 * b + j]));
          for (size_t j = 0; j < 32; ++j) {
            ASSERT_LE(std::fabs(have[32 * b + j] - want[32 * b + j]),
                      0.6f * amax / 127 + 1e-9f);
          }
        }
      }
    }
  }
}

TEST(ExportGguf, TokenizerArraysMatchLlamaCpp) {
  TQM_SKIP_WITHOUT_SHARED();
  if (!Exists(Fixture("stories260K-f32.gguf")) || !Exists(Tok512())) {
    GTEST_SKIP() << "fixtures or tok512.bin absent";
  }
  TempDir dir;
  auto r = PackStories(dir);
  ASSERT_NE(r, nullptr);
  const std::string out = dir.File("f32.gguf");
  GgufExportOptions opt;
  opt.type = GgufExportType::kF32;
  ASSERT_TRUE(ExportGguf(*r, out, opt).ok());
  auto ours = ReadGgufInfo(out);
  auto theirs = ReadGgufInfo(Fixture("stories260K-f32.gguf"));
  ASSERT_TRUE(ours.ok() && theirs.ok());
  for (const char* key :
       {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
        "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
        "general.architecture", "llama.embedding_length", "llama.feed_forward_length",
        "llama.block_count", "llama.attention.head_count",
        "llama.attention.head_count_kv", "llama.rope.dimension_count",
        "llama.attention.layer_norm_rms_epsilon"}) {
    SCOPED_TRACE(key);
    const GgufKeyValue* a = ours->Find(key);
    const GgufKeyValue* b = theirs->Find(key);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(a->type, b->type);
    EXPECT_EQ(a->array_type, b->array_type);
    EXPECT_EQ(a->uint_value, b->uint_value);
    EXPECT_EQ(a->float_value, b->float_value);
    EXPECT_EQ(a->string_value, b->string_value);
    EXPECT_EQ(a->array_strings, b->array_strings);
    EXPECT_EQ(a->array_numbers, b->array_numbers);
  }
  // Same tensors (names, ne, type) apart from the classifier the fixture repeats.
  for (const GgufTensorInfo& t : theirs->tensors) {
    if (t.name == "output.weight") continue;
    bool found = false;
    for (const GgufTensorInfo& u : ours->tensors) {
      if (u.name != t.name) continue;
      found = true;
      EXPECT_EQ(u.ne, t.ne) << t.name;
      EXPECT_EQ(u.type, t.type) << t.name;
    }
    EXPECT_TRUE(found) << t.name;
  }
}

TEST(ExportGguf, GgufImportPackExportReimport) {
  if (!Exists(Fixture("stories260K-q8_0.gguf"))) GTEST_SKIP() << "fixtures absent";
  TempDir dir;
  auto src = OpenGguf(Fixture("stories260K-q8_0.gguf"));
  ASSERT_TRUE(src.ok()) << src.status();
  auto r = PackAndOpen(**src, dir.File("q8.tqm"));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(
      r->tensors()[r->FindTensor("model.layers.0.self_attn.q_proj.weight")].source_dtype,
      format::kDTypeQ8_0);
  GgufExportOptions opt;
  opt.type = GgufExportType::kQ8_0;
  ASSERT_TRUE(ExportGguf(*r, dir.File("q8.gguf"), opt).ok());
  auto g = OpenGguf(dir.File("q8.gguf"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ((*g)->tensors().size(), 48u);  // output.weight kept: it was stored
  const std::vector<MetaEntry>& m = (*g)->metadata();
  EXPECT_EQ(MetaInt(m, meta_keys::kSeqLen), 128);
  EXPECT_EQ(MetaInt(m, meta_keys::kTiedClassifier), 0);
  EXPECT_EQ(FindMeta(m, "gguf.general.name")->bytes, "llama");
  EXPECT_EQ(FindMeta(m, meta_keys::kTokenizerLlama2c)->bytes,
            FindMeta((*src)->metadata(), meta_keys::kTokenizerLlama2c)->bytes);
  for (const SourceTensor& t : (*g)->tensors()) {
    const std::vector<float> want = Floats(*r, t.name);
    const std::vector<float> have = Floats(**g, t.name);
    ASSERT_EQ(have.size(), want.size()) << t.name;
    float amax = 0;
    for (float x : want) amax = std::max(amax, std::fabs(x));
    for (size_t i = 0; i < have.size(); ++i) {
      ASSERT_LE(std::fabs(have[i] - want[i]), 0.6f * amax / 127 + 1e-9f) << t.name;
    }
  }
}

TEST(ExportGguf, HfLayoutPermutedToMeta) {
  TempDir dir;
  MemorySource m = HfModel();
  auto r = PackAndOpen(m, dir.File("hf.tqm"));
  ASSERT_NE(r, nullptr);
  GgufExportOptions opt;
  opt.type = GgufExportType::kF32;
  ASSERT_TRUE(ExportGguf(*r, dir.File("hf.gguf"), opt).ok());
  auto g = OpenGguf(dir.File("hf.gguf"));
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(FindMeta((*g)->metadata(), meta_keys::kRopeLayout)->bytes, "meta");
  EXPECT_EQ(FindMeta((*g)->metadata(), "gguf.tokenizer.ggml.model")->bytes, "no_vocab");
  EXPECT_EQ(MetaInt((*g)->metadata(), meta_keys::kTiedClassifier), 0);
  std::vector<float> q = Floats(*r, "model.layers.0.self_attn.q_proj.weight");
  internal::HfToMetaRows(absl::MakeSpan(q), 32, 32, 8);
  EXPECT_EQ(Floats(**g, "model.layers.0.self_attn.q_proj.weight"), q);
  EXPECT_EQ(Floats(**g, "lm_head.weight"), Floats(*r, "lm_head.weight"));
}

TEST(ExportGguf, FailedExportLeavesDestination) {
  TempDir dir;
  MemorySource m = tqm_test::SmallModel(1, 32, 64, 96);
  auto r = PackAndOpen(m, dir.File("s.tqm"));
  ASSERT_NE(r, nullptr);
  WriteFile(dir.File("keep.gguf"), "old");
  EXPECT_FALSE(ExportGguf(*r, dir.File("keep.gguf")).ok());  // no n_heads
  EXPECT_EQ(ReadFile(dir.File("keep.gguf")), "old");
}

// ---- safetensors ----

TEST(ExportSafetensors, HalfTypesRoundTrip) {
  TempDir dir;
  MemorySource m = tqm_test::SmallModel(1, 32, 64, 96);
  auto r = PackAndOpen(m, dir.File("s.tqm"));
  ASSERT_NE(r, nullptr);
  for (auto type : {SafetensorsExportType::kF16, SafetensorsExportType::kBF16,
                    SafetensorsExportType::kF32}) {
    const std::string out = dir.File("s.safetensors");
    SafetensorsExportOptions opt;
    opt.type = type;
    ASSERT_TRUE(ExportSafetensors(*r, out, opt).ok());
    auto back = OpenSafetensors(out);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_EQ((*back)->tensors().size(), r->tensors().size());
    for (const SourceTensor& t : (*back)->tensors()) {
      EXPECT_EQ(t.dtype, type == SafetensorsExportType::kF16    ? format::kDTypeF16
                         : type == SafetensorsExportType::kBF16 ? format::kDTypeBF16
                                                                : format::kDTypeF32);
      const std::vector<float> want = Floats(*r, t.name);
      const std::vector<float> have = Floats(**back, t.name);
      for (size_t i = 0; i < want.size(); ++i) {
        const float w =
            type == SafetensorsExportType::kF16 ? RoundF16(want[i])
            : type == SafetensorsExportType::kBF16
                ? internal::BFloat16ToFloat(internal::FloatToBFloat16(want[i]))
                : want[i];
        ASSERT_EQ(have[i], w) << t.name << " " << i;
      }
    }
    const MetaValue* as = FindMeta((*back)->metadata(), "source.meta.tqm.unpacked_as");
    ASSERT_NE(as, nullptr);
    EXPECT_EQ(as->bytes, type == SafetensorsExportType::kF16    ? "f16"
                         : type == SafetensorsExportType::kBF16 ? "bf16"
                                                                : "f32");
  }
}

TEST(ExportSafetensors, F16RangeChecked) {
  TempDir dir;
  MemorySource m;
  m.Add("big", {4}, {1.0f, 2.0f, 1e6f, 3.0f});
  auto r = PackAndOpen(m, dir.File("big.tqm"));
  ASSERT_NE(r, nullptr);
  SafetensorsExportOptions opt;
  opt.type = SafetensorsExportType::kF16;
  absl::Status s = ExportSafetensors(*r, dir.File("big.safetensors"), opt);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("big"), std::string::npos) << s;
  EXPECT_FALSE(Exists(dir.File("big.safetensors")));
  opt.type = SafetensorsExportType::kBF16;
  EXPECT_TRUE(ExportSafetensors(*r, dir.File("big.safetensors"), opt).ok());
}

// ---- sharded safetensors ----

// Writes `names` of `m` (F32) into one shard.
void WriteShard(MemorySource& m, const std::vector<std::string>& names,
                const std::string& path) {
  std::vector<SafetensorsEntry> entries;
  std::vector<size_t> idx;
  for (const std::string& n : names) {
    for (size_t i = 0; i < m.tensors().size(); ++i) {
      if (m.tensors()[i].name == n) {
        entries.push_back({n, "F32", m.tensors()[i].dims});
        idx.push_back(i);
      }
    }
  }
  auto w = SafetensorsWriter::Create(path, entries, {{"format", "pt"}});
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<float> v;
  for (size_t i : idx) {
    ASSERT_TRUE(m.Read(i, &v).ok());
    ASSERT_TRUE((*w)->Write(absl::Span<const uint8_t>(
                                reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4))
                    .ok());
  }
  ASSERT_TRUE((*w)->Finish().ok());
}

struct Sharded {
  TempDir dir;
  MemorySource model = tqm_test::SmallModel(2, 32, 64, 96);
  std::vector<std::string> first, second;
  std::string index;

  Sharded() {
    for (const SourceTensor& t : model.tensors()) {
      (LayerFromName(t.name) == 1 || t.name == "model.norm.weight" ? second : first)
          .push_back(t.name);
    }
    WriteShard(model, first, dir.File("model-00001-of-00002.safetensors"));
    WriteShard(model, second, dir.File("model-00002-of-00002.safetensors"));
    index = dir.File("model.safetensors.index.json");
    WriteIndex({});
  }
  // Writes the index; `move` reassigns one tensor to the other shard.
  void WriteIndex(const std::string& move, const std::string& extra = "") {
    std::string j = "{\"metadata\": {\"total_size\": 12345}, \"weight_map\": {";
    bool comma = false;
    for (int s = 0; s < 2; ++s) {
      for (const std::string& n : s == 0 ? first : second) {
        const int shard = (n == move) ? 1 - s : s;
        j += (comma ? ",\n" : "") + std::string("\"") + n + "\": \"model-0000" +
             std::to_string(shard + 1) + "-of-00002.safetensors\"";
        comma = true;
      }
    }
    j += extra + "}}";
    WriteFile(index, j);
  }
};

TEST(SafetensorsIndex, OpensAllShardsAsOneModel) {
  Sharded sh;
  WriteFile(
      sh.dir.File("config.json"),
      "{\"model_type\": \"llama\", \"num_attention_heads\": 4, \"num_key_value_heads\": "
      "2,"
      " \"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-06, \"hidden_size\": 32}");
  for (const std::string& path : {sh.index, sh.dir.path()}) {
    SCOPED_TRACE(path);
    auto src = OpenModel(path);
    ASSERT_TRUE(src.ok()) << src.status();
    ASSERT_EQ((*src)->tensors().size(), sh.model.tensors().size());
    for (const SourceTensor& t : sh.model.tensors()) {
      EXPECT_EQ(Floats(**src, t.name), Floats(sh.model, t.name)) << t.name;
    }
    const std::vector<MetaEntry>& m = (*src)->metadata();
    // Derived over both shards, and completed by config.json.
    EXPECT_EQ(MetaInt(m, meta_keys::kLayers), 2);
    EXPECT_EQ(MetaInt(m, meta_keys::kDim), 32);
    EXPECT_EQ(MetaInt(m, meta_keys::kHiddenDim), 64);
    EXPECT_EQ(MetaInt(m, meta_keys::kVocabSize), 96);
    EXPECT_EQ(MetaInt(m, meta_keys::kHeads), 4);
    EXPECT_EQ(MetaInt(m, meta_keys::kKvHeads), 2);
    EXPECT_EQ(MetaInt(m, meta_keys::kSeqLen), 256);
    EXPECT_EQ(FindMeta(m, meta_keys::kNormEps)->float64, 1e-6);
    EXPECT_EQ(FindMeta(m, meta_keys::kRopeLayout)->bytes, "hf");
    EXPECT_EQ(FindMeta(m, "source.meta.total_size")->bytes, "12345");
    EXPECT_EQ(FindMeta(m, "source.meta.format")->bytes, "pt");
    EXPECT_EQ(FindMeta(m, "source.meta.llama.n_heads"), nullptr);
  }
  // And it packs and exports (n_heads known from config.json).
  auto src = OpenModel(sh.dir.path());
  ASSERT_TRUE(src.ok());
  auto r = PackAndOpen(**src, sh.dir.File("sharded.tqm"));
  ASSERT_NE(r, nullptr);
  EXPECT_TRUE(ExportGguf(*r, sh.dir.File("sharded.gguf")).ok());
}

TEST(SafetensorsIndex, RejectsInconsistentIndexes) {
  Sharded sh;
  auto expect = [&](absl::StatusCode code, const std::string& what) {
    auto src = OpenModel(sh.index);
    ASSERT_FALSE(src.ok()) << what;
    EXPECT_EQ(src.status().code(), code) << src.status();
    EXPECT_NE(src.status().message().find(what), std::string::npos) << src.status();
  };
  sh.WriteIndex("model.norm.weight");  // listed in the wrong shard
  expect(absl::StatusCode::kDataLoss, "model.norm.weight");
  sh.WriteIndex("", ", \"ghost.weight\": \"model-00001-of-00002.safetensors\"");
  expect(absl::StatusCode::kDataLoss, "ghost.weight");
  sh.WriteIndex("", ", \"x\": \"../model-00001-of-00002.safetensors\"");
  expect(absl::StatusCode::kDataLoss, "not a file name");
  sh.WriteIndex("", ", \"x\": \"model-00003-of-00002.safetensors\"");
  expect(absl::StatusCode::kNotFound, "model-00003");
  WriteFile(sh.index, "{\"weight_map\": [1, 2]}");
  expect(absl::StatusCode::kDataLoss, "weight_map");
  WriteFile(sh.index, "{\"weight_map\": {\"a\": 1}}");
  expect(absl::StatusCode::kDataLoss, "not a string");
  WriteFile(sh.index, "{not json");
  expect(absl::StatusCode::kDataLoss, "JSON");
  sh.WriteIndex("");
  WriteFile(sh.dir.File("config.json"), "{\"hidden_size\": 48}");
  expect(absl::StatusCode::kDataLoss, "contradicts");
  WriteFile(sh.dir.File("config.json"), "[]");
  expect(absl::StatusCode::kDataLoss, "config.json");
  std::remove(sh.dir.File("config.json").c_str());
  std::remove(sh.dir.File("model-00002-of-00002.safetensors").c_str());
  expect(absl::StatusCode::kNotFound, "model-00002");
  // An empty directory opens nothing.
  TempDir empty;
  EXPECT_EQ(OpenModel(empty.path()).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tqm
