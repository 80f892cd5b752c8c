// Exporters (GGUF, llama2.c, safetensors F16/BF16) and sharded safetensors
// import: pack -> export -> reimport round trips, llama.cpp compatibility of
// the GGUF tokenizer arrays (compared with the llama.cpp-written fixtures),
// the Hugging Face <-> Meta q/k permutation, and float16 rounding.

#include "tqm/export.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/json.h"
#include "gtest/gtest.h"
#include "interop/import_internal.h"
#include "interop/llama.h"
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
  llama::HfToMetaRows(absl::MakeSpan(meta), rows, cols, head);
  for (uint64_t h = 0; h < rows / head; ++h) {
    for (uint64_t i = 0; i < head / 2; ++i) {
      for (uint64_t c = 0; c < cols; ++c) {
        EXPECT_EQ(meta[(h * head + 2 * i) * cols + c], hf[(h * head + i) * cols + c]);
        EXPECT_EQ(meta[(h * head + 2 * i + 1) * cols + c],
                  hf[(h * head + i + head / 2) * cols + c]);
      }
    }
  }
  llama::MetaToHfRows(absl::MakeSpan(meta), rows, cols, head);
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
    llama::HfToMetaRows(absl::MakeSpan(want), rows, 32, 8);
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
  llama::HfToMetaRows(absl::MakeSpan(q), 32, 32, 8);
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

// ---- threads ----

// Tensors of many small chunks, so that each is decoded on several threads:
// a Llama-shaped model (dim 256) with 4 KiB chunks, and a long float32
// tensor with two values beyond float16's range in different conversion
// runs (2^18 elements each).
MemorySource ManyChunkModel() {
  MemorySource m = tqm_test::SmallModel(2, 256, 512, 300);
  m.AddMeta({meta_keys::kHeads, MetaValue::Int(4)});
  std::vector<float> wide = tqm_test::Gaussian(700000, 9, 1.0f);
  wide[650000] = 2e6f;
  wide[300001] = -1e6f;
  m.Add("wide", {700000}, wide);
  return m;
}

// Exports with 2 and 4 threads (chunks decoded in parallel, written by a
// thread of their own) give the bytes of the one-thread export, in every
// type and for the Hugging Face directory; errors are the ones one thread
// reports first, whatever thread meets them.
TEST(ExportThreads, SameBytesAndSameFirstErrorOnAnyThreadCount) {
  TempDir dir;
  MemorySource m = ManyChunkModel();
  PackOptions po;
  po.chunk_size = 4096;
  auto r = PackAndOpen(m, dir.File("m.tqm"), po);
  ASSERT_NE(r, nullptr);
  const int q = r->FindTensor("model.layers.1.mlp.down_proj.weight");
  ASSERT_GE(q, 0);
  ASSERT_GT(r->tensors()[q].chunks.size(), 8u);
  for (SafetensorsExportType type :
       {SafetensorsExportType::kF32, SafetensorsExportType::kBF16,
        SafetensorsExportType::kU8}) {
    std::string one;
    for (unsigned threads : {1u, 2u, 4u}) {
      SafetensorsExportOptions o;
      o.type = type;
      o.threads = threads;
      const std::string path = dir.File("t" + std::to_string(threads) + ".safetensors");
      ASSERT_TRUE(ExportSafetensors(*r, path, o).ok());
      if (threads == 1) {
        one = ReadFile(path);
        ASSERT_GT(one.size(), 1u << 20);
      } else {
        EXPECT_TRUE(ReadFile(path) == one) << "type " << static_cast<int>(type)
                                           << ", threads " << threads;
      }
    }
  }
  // float16: the first value out of range in element order is reported.
  for (unsigned threads : {1u, 4u}) {
    SafetensorsExportOptions o;
    o.type = SafetensorsExportType::kF16;
    o.threads = threads;
    absl::Status s = ExportSafetensors(*r, dir.File("f16.safetensors"), o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("element 300001"), std::string::npos) << s;
  }
  std::string hf_one;
  for (unsigned threads : {1u, 3u}) {
    HfExportOptions o;
    o.threads = threads;
    const std::string d = dir.File("hf" + std::to_string(threads));
    ASSERT_TRUE(ExportHuggingFace(*r, d, o).ok());
    if (threads == 1) {
      hf_one = ReadFile(d + "/model.safetensors");
    } else {
      EXPECT_TRUE(ReadFile(d + "/model.safetensors") == hf_one);
    }
  }

  // Two corrupt chunks: the later one in file order is met first by some
  // thread more often than not, but the error names the earlier one.
  std::string bytes = ReadFile(dir.File("m.tqm"));
  const ChunkInfo& late = r->tensors()[q].chunks[7];
  const ChunkInfo& early = r->tensors()[q].chunks[2];
  bytes[late.offset + late.encoded_size / 2] ^= 0x5A;
  bytes[early.offset + early.encoded_size / 2] ^= 0x5A;
  WriteFile(dir.File("bad.tqm"), bytes);
  auto bad = Reader::Open(dir.File("bad.tqm"));
  ASSERT_TRUE(bad.ok()) << bad.status();
  std::string first;
  for (unsigned threads : {1u, 2u, 4u}) {
    SafetensorsExportOptions o;
    o.threads = threads;
    absl::Status s = ExportSafetensors(**bad, dir.File("bad.safetensors"), o);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_FALSE(Exists(dir.File("bad.safetensors")));
    if (threads == 1) {
      first = std::string(s.message());
      EXPECT_NE(first.find("chunk 2"), std::string::npos) << first;
    } else {
      EXPECT_EQ(s.message(), first);
    }
  }
}

// ---- format 1.3 tensors in safetensors and Hugging Face exports ----

// One tensor of a safetensors file, read by the test itself (the library's
// reader takes floating-point dtypes only).
struct StTensor {
  std::string dtype;
  std::vector<uint64_t> shape;
  std::string bytes;
};
struct StFile {
  std::map<std::string, StTensor> tensors;
  std::map<std::string, std::string> metadata;
};

StFile ParseSafetensors(const std::string& path) {
  StFile out;
  const std::string file = ReadFile(path);
  EXPECT_GE(file.size(), 8u);
  if (file.size() < 8) return out;
  const uint64_t n = LoadLE64(reinterpret_cast<const uint8_t*>(file.data()));
  EXPECT_LE(n, file.size() - 8);
  if (n > file.size() - 8) return out;
  auto header = json::Parse(std::string_view(file).substr(8, n));
  EXPECT_TRUE(header.ok()) << header.status();
  if (!header.ok()) return out;
  const size_t data = 8 + n;
  for (const json::Member& m : header->object()) {
    if (m.key == "__metadata__") {
      for (const json::Member& kv : m.value.object()) {
        out.metadata[kv.key] = kv.value.as_string();
      }
      continue;
    }
    StTensor t;
    t.dtype = m.value.Find("dtype")->as_string();
    for (const json::Value& d : m.value.Find("shape")->array()) t.shape.push_back(d.as_int());
    const auto& off = m.value.Find("data_offsets")->array();
    const uint64_t b = off[0].as_int(), e = off[1].as_int();
    EXPECT_LE(b, e);
    EXPECT_LE(data + e, file.size());
    t.bytes = file.substr(data + b, e - b);
    out.tensors[m.key] = t;
  }
  return out;
}

// Random bytes that are valid elements of `dtype` (BOOL: 0 or 1).
std::string RandomElements(format::SourceDType dtype, uint64_t numel, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string b(numel * DTypeSize(dtype), '\0');
  for (char& c : b) c = static_cast<char>(rng() & 0xFF);
  if (dtype == format::kDTypeBool) {
    for (char& c : b) c = static_cast<char>(c & 1);
  }
  return b;
}

constexpr format::SourceDType kRawDTypes[] = {
    format::kDTypeF16, format::kDTypeBF16, format::kDTypeF64, format::kDTypeI8,
    format::kDTypeI16, format::kDTypeI32,  format::kDTypeI64, format::kDTypeU8,
    format::kDTypeU16, format::kDTypeU32,  format::kDTypeU64, format::kDTypeBool,
};

std::string Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

TEST(ExportSafetensors, RawTensorsComeBackBitExactInEveryType) {
  TempDir dir;
  MemorySource m;
  std::map<std::string, std::pair<std::vector<uint64_t>, std::string>> raw;
  uint32_t seed = 1;
  for (format::SourceDType dt : kRawDTypes) {
    for (const std::vector<uint64_t>& shape :
         std::vector<std::vector<uint64_t>>{{3, 5}, {}, {4, 0}, {7}}) {
      uint64_t numel = 1;
      for (uint64_t d : shape) numel *= d;
      const std::string name = absl::StrCat("raw.", DTypeName(dt), ".", shape.size(), ".",
                                            numel);
      const std::string bytes = RandomElements(dt, numel, seed++);
      m.AddRaw(name, shape, dt, bytes);
      raw[name] = {shape, bytes};
    }
  }
  // Float32 0-d and empty tensors, and one float weight that gets quantized.
  m.Add("f32.scalar", {}, {2.5f});
  m.Add("f32.empty", {0, 3}, {});
  m.Add("w", {8, 16}, tqm_test::Gaussian(128, 5));
  auto r = PackAndOpen(m, dir.File("raw.tqm"));
  ASSERT_NE(r, nullptr);
  for (auto type : {SafetensorsExportType::kF32, SafetensorsExportType::kF16,
                    SafetensorsExportType::kBF16, SafetensorsExportType::kU8}) {
    SCOPED_TRACE(static_cast<int>(type));
    const std::string out = dir.File("raw.safetensors");
    SafetensorsExportOptions opt;
    opt.type = type;
    ASSERT_TRUE(ExportSafetensors(*r, out, opt).ok());
    const StFile st = ParseSafetensors(out);
    for (const auto& [name, want] : raw) {
      ASSERT_EQ(st.tensors.count(name), 1u) << name;
      const StTensor& t = st.tensors.at(name);
      const int i = r->FindTensor(name);
      EXPECT_EQ(t.dtype, DTypeName(r->tensors()[i].source_dtype)) << name;
      EXPECT_EQ(t.shape, want.first) << name;
      EXPECT_EQ(t.bytes, want.second) << name;
    }
    const StTensor& scalar = st.tensors.at("f32.scalar");
    EXPECT_TRUE(scalar.shape.empty());
    if (type == SafetensorsExportType::kF32 || type == SafetensorsExportType::kU8) {
      EXPECT_EQ(scalar.bytes, Bytes({2.5f}));
    } else {
      EXPECT_EQ(scalar.bytes.size(), 2u);
    }
    const StTensor& empty = st.tensors.at("f32.empty");
    EXPECT_EQ(empty.shape, (std::vector<uint64_t>{0, 3}));
    EXPECT_TRUE(empty.bytes.empty());
  }
}

TEST(ExportSafetensors, GroupCodesAndPairsInU8AndDequantizedInF32) {
  TempDir dir;
  MemorySource m;
  // 2 x 3 rows of 40 elements in groups of 16: three groups per row, the
  // last one partial; 3-bit codes.
  const std::vector<uint64_t> dims = {2, 3, 40};
  QuantizedTensor q;
  q.storage = format::kStorageU8Group;
  q.bits = 3;
  q.group_size = 16;
  std::mt19937 rng(7);
  for (int i = 0; i < 240; ++i) q.codes.push_back(rng() & 7);
  for (int g = 0; g < 18; ++g) {
    q.params.push_back({0.01f * (g + 1), static_cast<float>(g % 5)});
  }
  m.AddQuantized("g", dims, q);
  // A per-row tensor at 8 bits: no tqm.bits entry.
  m.Add("w", {4, 16}, tqm_test::Gaussian(64, 3));
  PackOptions popt;
  popt.granularity = Granularity::kRow;
  auto r = PackAndOpen(m, dir.File("g.tqm"), popt);
  ASSERT_NE(r, nullptr);
  const TensorInfo& info = r->tensors()[r->FindTensor("g")];
  ASSERT_EQ(info.storage, format::kStorageU8Group);

  SafetensorsExportOptions opt;
  opt.type = SafetensorsExportType::kU8;
  ASSERT_TRUE(ExportSafetensors(*r, dir.File("u8.safetensors"), opt).ok());
  StFile st = ParseSafetensors(dir.File("u8.safetensors"));
  const StTensor& codes = st.tensors.at("g");
  EXPECT_EQ(codes.dtype, "U8");
  EXPECT_EQ(codes.shape, dims);
  EXPECT_EQ(codes.bytes, std::string(q.codes.begin(), q.codes.end()));
  std::vector<float> scale, zero;
  for (const Affine& a : q.params) {
    scale.push_back(a.scale);
    zero.push_back(a.zero);
  }
  EXPECT_EQ(st.tensors.at("g.scale").shape, (std::vector<uint64_t>{6, 3}));
  EXPECT_EQ(st.tensors.at("g.zero").shape, (std::vector<uint64_t>{6, 3}));
  EXPECT_EQ(st.tensors.at("g.scale").bytes, Bytes(scale));
  EXPECT_EQ(st.tensors.at("g.zero").bytes, Bytes(zero));
  EXPECT_EQ(st.metadata.at("tqm.group_size.g"), "16");
  EXPECT_EQ(st.metadata.at("tqm.bits.g"), "3");
  EXPECT_EQ(st.metadata.count("tqm.bits.w"), 0u);
  EXPECT_EQ(st.tensors.at("w.scale").shape, (std::vector<uint64_t>{4}));

  // f32: each element dequantized with its own group's pair.
  opt.type = SafetensorsExportType::kF32;
  ASSERT_TRUE(ExportSafetensors(*r, dir.File("f32.safetensors"), opt).ok());
  st = ParseSafetensors(dir.File("f32.safetensors"));
  std::vector<float> want(240);
  for (size_t e = 0; e < 240; ++e) {
    const size_t row = e / 40, group = (e % 40) / 16;
    const Affine a = q.params[row * 3 + group];
    DequantizeAffine(absl::MakeConstSpan(&q.codes[e], 1), a, absl::MakeSpan(&want[e], 1));
  }
  EXPECT_EQ(st.tensors.at("g").dtype, "F32");
  EXPECT_EQ(st.tensors.at("g").bytes, Bytes(want));
  EXPECT_EQ(st.tensors.count("g.scale"), 0u);
}

// SmallModel with its head count, optionally marked as Hugging Face layout.
MemorySource LlamaModel(bool hf_layout) {
  MemorySource m = tqm_test::SmallModel(2, 32, 64, 96);
  m.AddMeta({meta_keys::kHeads, MetaValue::Int(4)});
  m.AddMeta({meta_keys::kNormEps, MetaValue::Float(1e-6)});
  m.AddMeta({meta_keys::kSeqLen, MetaValue::Int(128)});
  if (hf_layout) m.AddMeta({meta_keys::kRopeLayout, MetaValue::String("hf")});
  return m;
}

json::Value ReadConfig(const std::string& dir) {
  auto v = json::Parse(ReadFile(dir + "/config.json"));
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : json::Value();
}

TEST(ExportHuggingFace, WritesConfigAndWeightsInHfLayout) {
  for (bool hf_layout : {false, true}) {
    SCOPED_TRACE(hf_layout ? "hf layout" : "meta layout");
    TempDir dir;
    MemorySource m = LlamaModel(hf_layout);
    auto r = PackAndOpen(m, dir.File("m.tqm"));
    ASSERT_NE(r, nullptr);
    const std::string out = dir.File("hf");
    ASSERT_TRUE(ExportHuggingFace(*r, out).ok());
    const json::Value c = ReadConfig(out);
    EXPECT_EQ(c.Find("architectures")->array()[0].as_string(), "LlamaForCausalLM");
    EXPECT_EQ(c.Find("model_type")->as_string(), "llama");
    EXPECT_EQ(c.Find("hidden_size")->as_int(), 32);
    EXPECT_EQ(c.Find("intermediate_size")->as_int(), 64);
    EXPECT_EQ(c.Find("num_hidden_layers")->as_int(), 2);
    EXPECT_EQ(c.Find("num_attention_heads")->as_int(), 4);
    EXPECT_EQ(c.Find("num_key_value_heads")->as_int(), 2);
    EXPECT_EQ(c.Find("vocab_size")->as_int(), 96);
    EXPECT_EQ(c.Find("max_position_embeddings")->as_int(), 128);
    EXPECT_EQ(c.Find("rms_norm_eps")->as_double(), 1e-6);
    EXPECT_EQ(c.Find("rope_theta")->as_double(), 10000.0);
    EXPECT_TRUE(c.Find("tie_word_embeddings")->as_bool());
    EXPECT_EQ(c.Find("torch_dtype")->as_string(), "float32");

    const StFile st = ParseSafetensors(out + "/model.safetensors");
    EXPECT_EQ(st.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
    ASSERT_EQ(st.tensors.size(), r->tensors().size());
    for (const TensorInfo& t : r->tensors()) {
      std::vector<float> want = Floats(*r, t.name);
      if (!hf_layout && (llama::IsQProj(t.name) || llama::IsKProj(t.name))) {
        llama::MetaToHfRows(absl::MakeSpan(want), t.dims[0], t.dims[1], 8);
        EXPECT_NE(Bytes(want), Bytes(Floats(*r, t.name))) << t.name;
      }
      EXPECT_EQ(st.tensors.at(t.name).dtype, "F32");
      EXPECT_EQ(st.tensors.at(t.name).shape, t.dims);
      EXPECT_EQ(st.tensors.at(t.name).bytes, Bytes(want)) << t.name;
    }
    // Imported again, the directory's weights are the same tensors.
    auto back = OpenSafetensors(out + "/model.safetensors");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ((*back)->tensors().size(), r->tensors().size());
  }
}

TEST(ExportHuggingFace, RawAndExtraTensorsVerbatimAndPermutedByRow) {
  TempDir dir;
  MemorySource m = LlamaModel(false);
  // Layer 1's q_proj kept as F16 bytes: permuted per head as whole rows.
  MemorySource m2;
  for (size_t i = 0; i < m.tensors().size(); ++i) {
    const SourceTensor& t = m.tensors()[i];
    std::vector<float> v;
    ASSERT_TRUE(m.Read(i, &v).ok());
    if (t.name == "model.layers.1.self_attn.q_proj.weight") {
      std::string h;
      for (float x : v) {
        const uint16_t b = internal::FloatToHalf(x);
        h.append(reinterpret_cast<const char*>(&b), 2);
      }
      m2.AddRaw(t.name, t.dims, format::kDTypeF16, h);
    } else {
      m2.Add(t.name, t.dims, v);
    }
  }
  for (const MetaEntry& e : m.metadata()) m2.AddMeta(e);
  const std::string ids = RandomElements(format::kDTypeI64, 6, 9);
  m2.AddRaw("model.position_ids", {1, 6}, format::kDTypeI64, ids);
  m2.AddRaw("model.flag", {}, format::kDTypeBool, std::string(1, '\1'));
  auto r = PackAndOpen(m2, dir.File("m.tqm"));
  ASSERT_NE(r, nullptr);
  HfExportOptions opt;
  opt.type = SafetensorsExportType::kBF16;
  ASSERT_TRUE(ExportHuggingFace(*r, dir.File("hf"), opt).ok());
  EXPECT_EQ(ReadConfig(dir.File("hf")).Find("torch_dtype")->as_string(), "bfloat16");
  const StFile st = ParseSafetensors(dir.File("hf/model.safetensors"));
  EXPECT_EQ(st.tensors.at("model.position_ids").dtype, "I64");
  EXPECT_EQ(st.tensors.at("model.position_ids").bytes, ids);
  EXPECT_EQ(st.tensors.at("model.flag").dtype, "BOOL");
  EXPECT_TRUE(st.tensors.at("model.flag").shape.empty());
  EXPECT_EQ(st.tensors.at("model.flag").bytes, std::string(1, '\1'));
  EXPECT_EQ(st.tensors.at("model.layers.0.mlp.up_proj.weight").dtype, "BF16");
  const StTensor& q1 = st.tensors.at("model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(q1.dtype, "F16");
  const int qi = r->FindTensor("model.layers.1.self_attn.q_proj.weight");
  std::string stored(r->tensors()[qi].byte_size, '\0');
  ASSERT_TRUE(r->DecodeTensor(qi, absl::MakeSpan(reinterpret_cast<uint8_t*>(stored.data()),
                                                 stored.size()))
                  .ok());
  // Row 1 of head 0 in HF layout is Meta row 2 (rows of 32 F16 = 64 bytes).
  EXPECT_EQ(q1.bytes.substr(0, 64), stored.substr(0, 64));
  EXPECT_EQ(q1.bytes.substr(64, 64), stored.substr(2 * 64, 64));
  EXPECT_EQ(q1.bytes.substr(4 * 64, 64), stored.substr(1 * 64, 64));

  // GGUF and llama2.c have no place for the extra tensors.
  absl::Status s = ExportLlama2c(*r, dir.File("m.bin"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("model.position_ids"), std::string::npos) << s;
  s = ExportGguf(*r, dir.File("m.gguf"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST(ExportHuggingFace, IntegerLlamaWeightRefused) {
  TempDir dir;
  MemorySource m = LlamaModel(true);
  MemorySource m2;
  for (size_t i = 0; i < m.tensors().size(); ++i) {
    const SourceTensor& t = m.tensors()[i];
    if (t.name == "model.norm.weight") {
      m2.AddRaw(t.name, t.dims, format::kDTypeI32, RandomElements(format::kDTypeI32, 32, 1));
      continue;
    }
    std::vector<float> v;
    ASSERT_TRUE(m.Read(i, &v).ok());
    m2.Add(t.name, t.dims, v);
  }
  for (const MetaEntry& e : m.metadata()) m2.AddMeta(e);
  auto r = PackAndOpen(m2, dir.File("m.tqm"));
  ASSERT_NE(r, nullptr);
  for (absl::Status s : {ExportHuggingFace(*r, dir.File("hf")),
                         ExportGguf(*r, dir.File("m.gguf")),
                         ExportLlama2c(*r, dir.File("m.bin"))}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(s.message().find("model.norm.weight is stored as I32"), std::string::npos)
        << s;
  }
  EXPECT_FALSE(Exists(dir.File("hf")));
}

TEST(ExportHuggingFace, DirectoryMustBeNewOrEmptyAndAppearsWhole) {
  TempDir dir;
  MemorySource m = LlamaModel(true);
  auto r = PackAndOpen(m, dir.File("m.tqm"));
  ASSERT_NE(r, nullptr);
  // Not empty: refused, nothing touched.
  const std::string full = dir.File("full");
  ASSERT_EQ(mkdir(full.c_str(), 0777), 0);
  WriteFile(full + "/config.json", "old");
  absl::Status s = ExportHuggingFace(*r, full);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("not empty"), std::string::npos) << s;
  EXPECT_EQ(ReadFile(full + "/config.json"), "old");
  EXPECT_FALSE(Exists(full + "/model.safetensors"));
  // A file: refused.
  WriteFile(dir.File("file"), "x");
  EXPECT_EQ(ExportHuggingFace(*r, dir.File("file")).code(),
            absl::StatusCode::kFailedPrecondition);
  // Empty: filled.
  const std::string empty = dir.File("empty");
  ASSERT_EQ(mkdir(empty.c_str(), 0777), 0);
  EXPECT_TRUE(ExportHuggingFace(*r, empty).ok());
  EXPECT_TRUE(Exists(empty + "/config.json"));
  EXPECT_TRUE(Exists(empty + "/model.safetensors"));
  // u8 is not a Hugging Face type.
  HfExportOptions opt;
  opt.type = SafetensorsExportType::kU8;
  EXPECT_EQ(ExportHuggingFace(*r, dir.File("u8")).code(), absl::StatusCode::kOk);
  EXPECT_EQ(ExportHuggingFace(*r, dir.File("u8b"), opt).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(Exists(dir.File("u8b")));
  // A failed export (a value out of float16's range) leaves no directory.
  MemorySource big = LlamaModel(true);
  MemorySource big2;
  for (size_t i = 0; i < big.tensors().size(); ++i) {
    std::vector<float> v;
    ASSERT_TRUE(big.Read(i, &v).ok());
    if (big.tensors()[i].name == "model.norm.weight") v[3] = 1e6f;
    big2.Add(big.tensors()[i].name, big.tensors()[i].dims, v);
  }
  for (const MetaEntry& e : big.metadata()) big2.AddMeta(e);
  auto rb = PackAndOpen(big2, dir.File("big.tqm"));
  ASSERT_NE(rb, nullptr);
  opt.type = SafetensorsExportType::kF16;
  s = ExportHuggingFace(*rb, dir.File("big"), opt);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_FALSE(Exists(dir.File("big")));
}

TEST(ExportHuggingFace, Stories260KLlama2cOriginPermutedToHf) {
  if (!Exists(tqm_test::Stories260K())) GTEST_SKIP() << "stories260K.bin not found";
  TempDir dir;
  auto r = PackStories(dir);
  ASSERT_NE(r, nullptr);
  ASSERT_TRUE(ExportHuggingFace(*r, dir.File("hf")).ok());
  const json::Value c = ReadConfig(dir.File("hf"));
  EXPECT_EQ(c.Find("hidden_size")->as_int(), 64);
  EXPECT_EQ(c.Find("num_attention_heads")->as_int(), 8);
  EXPECT_EQ(c.Find("num_key_value_heads")->as_int(), 4);
  EXPECT_EQ(c.Find("vocab_size")->as_int(), 512);
  EXPECT_EQ(c.Find("max_position_embeddings")->as_int(), 512);
  EXPECT_TRUE(c.Find("tie_word_embeddings")->as_bool());
  auto back = OpenSafetensors(dir.File("hf/model.safetensors"));
  ASSERT_TRUE(back.ok()) << back.status();
  // The importer takes layer-numbered safetensors for the HF layout; exported
  // to llama2.c again, the q/k rows must be those of the original.
  const MetaValue* layout = FindMeta((*back)->metadata(), meta_keys::kRopeLayout);
  ASSERT_NE(layout, nullptr);
  EXPECT_EQ(layout->bytes, "hf");
  for (size_t i = 0; i < (*back)->tensors().size(); ++i) {
    const SourceTensor& t = (*back)->tensors()[i];
    std::vector<float> have;
    ASSERT_TRUE((*back)->Read(i, &have).ok());
    std::vector<float> want = Floats(*r, t.name);
    if (llama::IsQProj(t.name) || llama::IsKProj(t.name)) {
      llama::HfToMetaRows(absl::MakeSpan(have), t.dims[0], t.dims[1], 8);
    }
    EXPECT_EQ(Bytes(have), Bytes(want)) << t.name;
  }
}

// ---- the format 1.3 vector of the C and Python tests ----

// tests/c/format13.tqm holds tensors whose contents follow formulas that
// tests/c/c_api_test.c and tests/python/test_tqm.py compute on their own:
//  - raw.<DTYPE> for every RAW dtype, shape [2, 3]: byte k of the tensor is
//    (29 k + 7) mod 256 (BOOL: k mod 2);
//  - raw.scalar: I32, 0-d, 42; raw.empty: I64 [3, 0];
//  - f32.scalar: F32 0-d, 2.5; f32.empty: F32 [0, 4];
//  - group: U8_GROUP [2, 20], group size 8, 4 bits, code e = 7 e mod 16,
//    pair g (3 per row) = (0.5 (g + 1), g).
// TQM_REGENERATE=1 rewrites the file; otherwise the test checks that the
// committed file still holds exactly that.
MemorySource Format13Vector() {
  MemorySource m;
  for (format::SourceDType dt : kRawDTypes) {
    std::string b(6 * DTypeSize(dt), '\0');
    for (size_t k = 0; k < b.size(); ++k) {
      b[k] = static_cast<char>(dt == format::kDTypeBool ? k % 2 : (29 * k + 7) & 0xFF);
    }
    m.AddRaw(absl::StrCat("raw.", DTypeName(dt)), {2, 3}, dt, b);
  }
  const int32_t v42 = 42;
  m.AddRaw("raw.scalar", {}, format::kDTypeI32, std::string(reinterpret_cast<const char*>(&v42), 4));
  m.AddRaw("raw.empty", {3, 0}, format::kDTypeI64, "");
  m.Add("f32.scalar", {}, {2.5f});
  m.Add("f32.empty", {0, 4}, {});
  QuantizedTensor q;
  q.storage = format::kStorageU8Group;
  q.bits = 4;
  q.group_size = 8;
  for (int e = 0; e < 40; ++e) q.codes.push_back((7 * e) % 16);
  for (int g = 0; g < 6; ++g) q.params.push_back({0.5f * (g + 1), static_cast<float>(g)});
  m.AddQuantized("group", {2, 20}, q);
  return m;
}

TEST(Format13Vector, CommittedFileHoldsTheFormulas) {
  const std::string path = std::string(TQM_SOURCE_DIR) + "/tests/c/format13.tqm";
  MemorySource m = Format13Vector();
  const char* regen = std::getenv("TQM_REGENERATE");
  if (regen != nullptr && std::string(regen) == "1") {
    ASSERT_TRUE(Pack(m, path, {}).ok());
  }
  auto r = Reader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Verify().ok());
  ASSERT_EQ((*r)->tensors().size(), m.tensors().size());
  for (size_t i = 0; i < m.tensors().size(); ++i) {
    const SourceTensor& src = m.tensors()[i];
    const int t = (*r)->FindTensor(src.name);
    ASSERT_GE(t, 0) << src.name;
    const TensorInfo& info = (*r)->tensors()[t];
    EXPECT_EQ(info.dims, src.dims) << src.name;
    std::string got(info.byte_size, '\0');
    ASSERT_TRUE((*r)->DecodeTensor(t, absl::MakeSpan(reinterpret_cast<uint8_t*>(got.data()),
                                                     got.size()))
                    .ok());
    if (src.kind == TensorKind::kRaw) {
      EXPECT_EQ(info.storage, format::kStorageRaw) << src.name;
      EXPECT_EQ(info.source_dtype, src.dtype) << src.name;
      std::string want;
      ASSERT_TRUE(m.ReadRaw(i, &want).ok());
      EXPECT_EQ(got, want) << src.name;
    } else if (src.kind == TensorKind::kQuantized) {
      QuantizedTensor q;
      ASSERT_TRUE(m.ReadQuantized(i, &q).ok());
      EXPECT_EQ(info.storage, format::kStorageU8Group);
      EXPECT_EQ(info.bits, 4);
      EXPECT_EQ(info.group_size, 8u);
      EXPECT_EQ(got, std::string(q.codes.begin(), q.codes.end()));
      ASSERT_EQ(info.affine.size(), q.params.size());
      for (size_t g = 0; g < q.params.size(); ++g) {
        EXPECT_EQ(info.affine[g].scale, q.params[g].scale);
        EXPECT_EQ(info.affine[g].zero, q.params[g].zero);
      }
    } else {
      std::vector<float> want;
      ASSERT_TRUE(m.Read(i, &want).ok());
      EXPECT_EQ(got, Bytes(want)) << src.name;
    }
  }
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
