// The Llama module (interop/llama.h) on its own: the name table against
// docs/LLAMA.md and its round trips across the llama2.c, Hugging Face and
// GGUF schemes, the q/k row permutation (a hand-checked example and the
// inverse property), and the hyperparameter conversions (llama2.c header,
// tqm metadata, config.json) with the errors on inconsistent values, and a
// model named and shaped by the module through every exporter and back.

#include "interop/llama.h"

#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "interop/import_internal.h"
#include "test_util.h"
#include "tqm/export.h"
#include "tqm/import.h"
#include "tqm/metadata.h"
#include "tqm/reader.h"
#include "tqm/source.h"
#include "tqm/writer.h"

namespace tqm {
namespace {

using llama::Hparam;
using llama::Tensor;

// docs/LLAMA.md's name table, written out by hand (layer 5 for per-layer
// tensors).
struct NameRow {
  Tensor tensor;
  const char* llama2c;
  const char* hf;
  const char* gguf;
};
const NameRow kDocNames[] = {
    {Tensor::kEmbed, "token_embedding_table", "model.embed_tokens.weight",
     "token_embd.weight"},
    {Tensor::kAttNorm, "rms_att_weight", "model.layers.5.input_layernorm.weight",
     "blk.5.attn_norm.weight"},
    {Tensor::kWq, "wq", "model.layers.5.self_attn.q_proj.weight", "blk.5.attn_q.weight"},
    {Tensor::kWk, "wk", "model.layers.5.self_attn.k_proj.weight", "blk.5.attn_k.weight"},
    {Tensor::kWv, "wv", "model.layers.5.self_attn.v_proj.weight", "blk.5.attn_v.weight"},
    {Tensor::kWo, "wo", "model.layers.5.self_attn.o_proj.weight",
     "blk.5.attn_output.weight"},
    {Tensor::kFfnNorm, "rms_ffn_weight", "model.layers.5.post_attention_layernorm.weight",
     "blk.5.ffn_norm.weight"},
    {Tensor::kGate, "w1", "model.layers.5.mlp.gate_proj.weight", "blk.5.ffn_gate.weight"},
    {Tensor::kDown, "w2", "model.layers.5.mlp.down_proj.weight", "blk.5.ffn_down.weight"},
    {Tensor::kUp, "w3", "model.layers.5.mlp.up_proj.weight", "blk.5.ffn_up.weight"},
    {Tensor::kFinalNorm, "rms_final_weight", "model.norm.weight", "output_norm.weight"},
    {Tensor::kClassifier, "wcls", "lm_head.weight", "output.weight"},
};

std::vector<Tensor> AllTensors() {
  std::vector<Tensor> all;
  for (int i = 0; i < llama::kTensors; ++i) all.push_back(static_cast<Tensor>(i));
  return all;
}

TEST(LlamaNames, TableMatchesTheDocumentedNames) {
  ASSERT_EQ(std::size(kDocNames), static_cast<size_t>(llama::kTensors));
  for (const NameRow& row : kDocNames) {
    SCOPED_TRACE(row.hf);
    EXPECT_EQ(llama::NamesOf(row.tensor).tensor, row.tensor);
    EXPECT_STREQ(llama::NamesOf(row.tensor).llama2c, row.llama2c);
    EXPECT_EQ(llama::HfName(row.tensor, 5), row.hf);
    EXPECT_EQ(llama::GgufName(row.tensor, 5), row.gguf);
  }
}

TEST(LlamaNames, RoundTripAcrossSchemesForEveryTensorKind) {
  std::set<std::string> llama2c, hf, gguf;
  for (Tensor t : AllTensors()) {
    for (int64_t layer : {0, 1, 9, 31, 1000}) {
      const std::string h = llama::HfName(t, layer), g = llama::GgufName(t, layer);
      SCOPED_TRACE(h);
      EXPECT_EQ(llama::HfToGgufName(h), g);
      EXPECT_EQ(llama::GgufToHfName(g), h);
      EXPECT_EQ(llama::GgufToHfName(llama::HfToGgufName(h)), h);
      // Biases map like weights.
      const std::string hb = h.substr(0, h.size() - 7) + ".bias";
      const std::string gb = g.substr(0, g.size() - 7) + ".bias";
      EXPECT_EQ(llama::HfToGgufName(hb), gb);
      EXPECT_EQ(llama::GgufToHfName(gb), hb);
      hf.insert(h);
      gguf.insert(g);
    }
    llama2c.insert(llama::NamesOf(t).llama2c);
  }
  // No two tensors share a name in any scheme.
  EXPECT_EQ(llama2c.size(), static_cast<size_t>(llama::kTensors));
  EXPECT_EQ(hf.size(), gguf.size());
}

TEST(LlamaNames, PerLayerNamesCarryTheLayerAndGlobalOnesDoNot) {
  EXPECT_EQ(llama::HfName(Tensor::kEmbed, 7), "model.embed_tokens.weight");
  EXPECT_EQ(llama::GgufName(Tensor::kFinalNorm, 7), "output_norm.weight");
  EXPECT_EQ(llama::HfName(Tensor::kDown, 12), "model.layers.12.mlp.down_proj.weight");
  EXPECT_EQ(llama::HfLayerPrefix(12) + llama::HfLayerSuffix(Tensor::kDown),
            llama::HfName(Tensor::kDown, 12));
}

TEST(LlamaNames, NamesOutsideTheTableMapToNothing) {
  for (const char* gguf :
       {"blk.01.attn_q.weight", "blk.3.attn_q", "blk.3.attn_q.scale",
        "blk..attn_q.weight", "blk.3.token_embd.weight", "attn_q.weight",
        "blk.99999999999.attn_q.weight", "blk.-1.attn_q.weight", ".weight", "",
        "token_embd", "blk.3.attn_qq.weight"}) {
    EXPECT_EQ(llama::GgufToHfName(gguf), "") << gguf;
  }
  for (const char* hf :
       {"model.layers.3.lm_head.weight", "model.layers.03.mlp.up_proj.weight",
        "layers.3.mlp.up_proj.weight", "model.layers.3.mlp.up_proj",
        "model.layers.3.foo.mlp.up_proj.weight", "model.embed_tokens.scale"}) {
    EXPECT_EQ(llama::HfToGgufName(hf), "") << hf;
  }
}

TEST(LlamaNames, QAndKProjectionsAreRecognisedByName) {
  EXPECT_TRUE(llama::IsQProj("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(llama::IsKProj("model.layers.11.self_attn.k_proj.weight"));
  EXPECT_FALSE(llama::IsQProj("model.layers.0.self_attn.k_proj.weight"));
  EXPECT_FALSE(llama::IsKProj("model.layers.0.self_attn.v_proj.weight"));
  EXPECT_FALSE(llama::IsQProj("self_attn.q_proj.weight"));  // no layer number
  EXPECT_FALSE(llama::IsQProj("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_TRUE(
      llama::EndsWithLayerSuffix("x.layers.2.mlp.gate_proj.weight", Tensor::kGate));
  EXPECT_FALSE(
      llama::EndsWithLayerSuffix("x.layers.2.mlp.gate_proj.weight", Tensor::kUp));
}

TEST(LlamaNames, LayerTensorsAreInLlama2cCheckpointOrder) {
  const char* want[] = {"rms_att_weight", "wq", "wk", "wv", "wo",
                        "rms_ffn_weight", "w1", "w2", "w3"};
  ASSERT_EQ(llama::kLayerTensors.size(), std::size(want));
  for (size_t i = 0; i < std::size(want); ++i) {
    EXPECT_STREQ(llama::NamesOf(llama::kLayerTensors[i]).llama2c, want[i]);
    EXPECT_TRUE(llama::NamesOf(llama::kLayerTensors[i]).per_layer);
  }
}

LlamaDims SmallDims() {
  LlamaDims d;
  d.dim = 64;
  d.hidden_dim = 172;
  d.n_layers = 5;
  d.n_heads = 8;
  d.n_kv_heads = 4;
  d.vocab_size = 512;
  d.seq_len = 512;
  d.norm_eps = 1e-6;
  d.rope_theta = 500000.0;
  d.rope_hf = true;
  d.tied = false;
  return d;
}

TEST(LlamaNames, ShapesFollowTheDimensions) {
  const LlamaDims d = SmallDims();  // head 8, kv rows 4 * 8 = 32
  using V = std::vector<uint64_t>;
  EXPECT_EQ(llama::Shape(Tensor::kEmbed, d), (V{512, 64}));
  EXPECT_EQ(llama::Shape(Tensor::kClassifier, d), (V{512, 64}));
  EXPECT_EQ(llama::Shape(Tensor::kAttNorm, d), (V{64}));
  EXPECT_EQ(llama::Shape(Tensor::kFfnNorm, d), (V{64}));
  EXPECT_EQ(llama::Shape(Tensor::kFinalNorm, d), (V{64}));
  EXPECT_EQ(llama::Shape(Tensor::kWq, d), (V{64, 64}));
  EXPECT_EQ(llama::Shape(Tensor::kWk, d), (V{32, 64}));
  EXPECT_EQ(llama::Shape(Tensor::kWv, d), (V{32, 64}));
  EXPECT_EQ(llama::Shape(Tensor::kWo, d), (V{64, 64}));
  EXPECT_EQ(llama::Shape(Tensor::kGate, d), (V{172, 64}));
  EXPECT_EQ(llama::Shape(Tensor::kUp, d), (V{172, 64}));
  EXPECT_EQ(llama::Shape(Tensor::kDown, d), (V{64, 172}));
}

// ---- permutation ----

TEST(LlamaPermutation, HandCheckedExample) {
  // Two heads of four rows, one column; each value names its HF row.
  std::vector<float> m = {0, 1, 2, 3, 4, 5, 6, 7};
  llama::HfToMetaRows(absl::MakeSpan(m), 8, 1, 4);
  // Meta row 2i = HF row i, Meta row 2i+1 = HF row i + 2, per head.
  EXPECT_EQ(m, (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
  llama::MetaToHfRows(absl::MakeSpan(m), 8, 1, 4);
  EXPECT_EQ(m, (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));

  // One head of six rows, two columns: rows move whole.
  std::vector<float> w = {0, 10, 1, 11, 2, 12, 3, 13, 4, 14, 5, 15};
  llama::HfToMetaRows(absl::MakeSpan(w), 6, 2, 6);
  EXPECT_EQ(w, (std::vector<float>{0, 10, 3, 13, 1, 11, 4, 14, 2, 12, 5, 15}));
}

TEST(LlamaPermutation, MetaToHfInvertsHfToMeta) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  for (uint64_t head : {2, 4, 6, 8, 24}) {
    const uint64_t rows = 48, cols = 5;
    std::vector<float> orig(rows * cols);
    for (float& v : orig) v = u(rng);
    std::vector<float> m = orig;
    llama::HfToMetaRows(absl::MakeSpan(m), rows, cols, head);
    if (head > 2) EXPECT_NE(m, orig) << head;  // head 2 is the identity
    llama::MetaToHfRows(absl::MakeSpan(m), rows, cols, head);
    EXPECT_EQ(m, orig) << head;
    llama::MetaToHfRows(absl::MakeSpan(m), rows, cols, head);
    llama::HfToMetaRows(absl::MakeSpan(m), rows, cols, head);
    EXPECT_EQ(m, orig) << head;
  }
}

TEST(LlamaPermutation, ByteRowsMoveLikeFloatRows) {
  // Two-byte elements (F16/BF16 stored verbatim) permute as float rows do.
  std::vector<uint16_t> b(16 * 3);
  std::vector<float> f(16 * 3);
  for (size_t i = 0; i < b.size(); ++i) {
    b[i] = static_cast<uint16_t>(i);
    f[i] = static_cast<float>(i);
  }
  llama::PermuteRows(reinterpret_cast<uint8_t*>(b.data()), 16, 3 * 2, 8, true);
  llama::HfToMetaRows(absl::MakeSpan(f), 16, 3, 8);
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(static_cast<float>(b[i]), f[i]) << i;
}

TEST(LlamaPermutation, ShapesThatDoNotSplitIntoHeadsAreLeftAlone) {
  const std::vector<float> orig = {0, 1, 2, 3, 4, 5};
  for (uint64_t head : {0, 1, 3, 4}) {  // odd, or not dividing 6 rows
    std::vector<float> m = orig;
    llama::HfToMetaRows(absl::MakeSpan(m), 6, 1, head);
    EXPECT_EQ(m, orig) << head;
  }
}

// ---- hyperparameters ----

TEST(LlamaHparams, KeyTableMatchesTheDocumentedKeys) {
  struct Row {
    Hparam h;
    const char* tqm;
    const char* llama2c;
    const char* hf;
    const char* gguf;
    bool is_float;
  };
  const Row want[] = {
      {Hparam::kDim, "llama.dim", "dim", "hidden_size", "embedding_length", false},
      {Hparam::kHiddenDim, "llama.hidden_dim", "hidden_dim", "intermediate_size",
       "feed_forward_length", false},
      {Hparam::kLayers, "llama.n_layers", "n_layers", "num_hidden_layers", "block_count",
       false},
      {Hparam::kHeads, "llama.n_heads", "n_heads", "num_attention_heads",
       "attention.head_count", false},
      {Hparam::kKvHeads, "llama.n_kv_heads", "n_kv_heads", "num_key_value_heads",
       "attention.head_count_kv", false},
      {Hparam::kVocabSize, "llama.vocab_size", "vocab_size", "vocab_size", "vocab_size",
       false},
      {Hparam::kSeqLen, "llama.seq_len", "seq_len", "max_position_embeddings",
       "context_length", false},
      {Hparam::kNormEps, "llama.norm_eps", nullptr, "rms_norm_eps",
       "attention.layer_norm_rms_epsilon", true},
      {Hparam::kRopeTheta, "llama.rope_theta", nullptr, "rope_theta", "rope.freq_base",
       true},
  };
  ASSERT_EQ(llama::HparamTable().size(), std::size(want));
  for (size_t i = 0; i < std::size(want); ++i) {
    const llama::HparamKeys& k = llama::HparamTable()[i];
    SCOPED_TRACE(want[i].tqm);
    EXPECT_EQ(k.hparam, want[i].h);
    EXPECT_EQ(&llama::KeysOf(want[i].h), &k);
    EXPECT_STREQ(k.tqm, want[i].tqm);
    if (want[i].llama2c == nullptr) {
      EXPECT_EQ(k.llama2c, nullptr);
    } else {
      EXPECT_STREQ(k.llama2c, want[i].llama2c);
    }
    EXPECT_STREQ(k.hf, want[i].hf);
    EXPECT_STREQ(k.gguf, want[i].gguf);
    EXPECT_EQ(k.is_float, want[i].is_float);
  }
}

TEST(LlamaHparams, Llama2cHeaderRoundTrips) {
  for (bool tied : {true, false}) {
    LlamaDims d = SmallDims();
    d.tied = tied;
    d.norm_eps = 1e-5;  // what a llama2.c header implies
    d.rope_theta = 10000.0;
    d.rope_hf = false;
    const auto h = llama::ToLlama2cHeader(d);
    EXPECT_EQ(h[0], 64);
    EXPECT_EQ(h[1], 172);
    EXPECT_EQ(h[2], 5);
    EXPECT_EQ(h[3], 8);
    EXPECT_EQ(h[4], 4);
    EXPECT_EQ(h[5], tied ? 512 : -512);  // the sign says whether wcls follows
    EXPECT_EQ(h[6], 512);
    std::array<int32_t, llama::kLlama2cHeaderFields> h32;
    for (int i = 0; i < llama::kLlama2cHeaderFields; ++i)
      h32[i] = static_cast<int32_t>(h[i]);
    const LlamaDims back = llama::FromLlama2cHeader(h32);
    EXPECT_EQ(back.dim, d.dim);
    EXPECT_EQ(back.hidden_dim, d.hidden_dim);
    EXPECT_EQ(back.n_layers, d.n_layers);
    EXPECT_EQ(back.n_heads, d.n_heads);
    EXPECT_EQ(back.n_kv_heads, d.n_kv_heads);
    EXPECT_EQ(back.vocab_size, d.vocab_size);
    EXPECT_EQ(back.seq_len, d.seq_len);
    EXPECT_EQ(back.tied, tied);
    EXPECT_EQ(back.norm_eps, 1e-5);
    EXPECT_EQ(back.rope_theta, 10000.0);
    EXPECT_FALSE(back.rope_hf);
  }
}

TEST(LlamaHparams, TqmMetadataRoundTripsThroughTheForwardConfig) {
  for (bool hf : {true, false}) {
    LlamaDims d = SmallDims();
    d.rope_hf = hf;
    const std::vector<MetaEntry> meta = llama::ToTqmMetadata(d);
    ASSERT_EQ(meta.size(), 12u);
    EXPECT_EQ(meta.front().key, meta_keys::kArchitecture);
    EXPECT_EQ(FindMeta(meta, meta_keys::kDim)->int64, 64);
    EXPECT_EQ(FindMeta(meta, meta_keys::kNormEps)->float64, 1e-6);
    EXPECT_EQ(FindMeta(meta, meta_keys::kRopeLayout)->bytes, hf ? "hf" : "meta");
    EXPECT_EQ(FindMeta(meta, meta_keys::kTiedClassifier)->int64, 0);

    absl::StatusOr<llama::ForwardConfig> c =
        llama::ForwardConfigFromMetadata(meta, llama::MetadataRules());
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->dim, 64);
    EXPECT_EQ(c->hidden_dim, 172);
    EXPECT_EQ(c->n_layers, 5);
    EXPECT_EQ(c->n_heads, 8);
    EXPECT_EQ(c->n_kv_heads, 4);
    EXPECT_EQ(c->vocab_size, 512);
    EXPECT_EQ(c->seq_len, 512);
    EXPECT_EQ(c->norm_eps, 1e-6f);
    EXPECT_EQ(c->rope_theta, 500000.0f);
    EXPECT_EQ(c->rope_hf, hf);
    EXPECT_EQ(c->head_size(), 8);
    EXPECT_EQ(c->kv_dim(), 32);
    const LlamaDims back = c->dims();
    EXPECT_EQ(llama::ToLlama2cHeader(back)[3], 8);
    EXPECT_EQ(back.rope_hf, hf);
  }
}

TEST(LlamaHparams, HfConfigRoundTripsThroughTheImporter) {
  for (bool tied : {true, false}) {
    LlamaDims d = SmallDims();
    d.tied = tied;
    const std::string json = llama::ToHfConfigJson(d, "float16");
    EXPECT_NE(json.find("\"torch_dtype\": \"float16\""), std::string::npos) << json;
    EXPECT_NE(json.find("\"rms_norm_eps\": 1e-06,"), std::string::npos) << json;
    EXPECT_NE(json.find("\"rope_theta\": 500000.0,"), std::string::npos) << json;
    absl::StatusOr<std::vector<MetaEntry>> meta =
        internal::HfConfigToMetadata(json, "config.json");
    ASSERT_TRUE(meta.ok()) << meta.status();
    const std::vector<MetaEntry> want = llama::ToTqmMetadata(d);
    for (const MetaEntry& e : want) {
      if (e.key == meta_keys::kRopeLayout) continue;  // config.json does not say
      const MetaValue* v = FindMeta(*meta, e.key);
      ASSERT_NE(v, nullptr) << e.key;
      EXPECT_EQ(v->type, e.value.type) << e.key;
      EXPECT_EQ(v->int64, e.value.int64) << e.key;
      EXPECT_EQ(v->float64, e.value.float64) << e.key;
      EXPECT_EQ(v->bytes, e.value.bytes) << e.key;
    }
  }
}

// A Llama model whose every tensor is named and shaped by the module.
MemorySource ModelOf(const LlamaDims& d) {
  MemorySource m;
  uint32_t seed = 1;
  auto add = [&](Tensor t, int64_t layer) {
    const std::vector<uint64_t> shape = llama::Shape(t, d);
    uint64_t n = 1;
    for (uint64_t s : shape) n *= s;
    m.Add(llama::HfName(t, layer), shape, tqm_test::Gaussian(n, seed++));
  };
  add(Tensor::kEmbed, 0);
  for (int64_t l = 0; l < d.n_layers; ++l) {
    for (Tensor t : llama::kLayerTensors) add(t, l);
  }
  add(Tensor::kFinalNorm, 0);
  if (!d.tied) add(Tensor::kClassifier, 0);
  return m;
}

void ExpectSameHparams(const std::vector<MetaEntry>& got, const LlamaDims& want,
                       bool floats) {
  for (const llama::HparamKeys& k : llama::HparamTable()) {
    SCOPED_TRACE(k.tqm);
    const MetaValue* v = FindMeta(got, k.tqm);
    ASSERT_NE(v, nullptr);
    if (k.is_float) {
      ASSERT_EQ(v->type, format::kMetaFloat64);
      if (floats) EXPECT_EQ(v->float64, llama::FloatOf(want, k.hparam));
    } else {
      ASSERT_EQ(v->type, format::kMetaInt64);
      EXPECT_EQ(v->int64, llama::IntOf(want, k.hparam));
    }
  }
  const MetaValue* tied = FindMeta(got, meta_keys::kTiedClassifier);
  ASSERT_NE(tied, nullptr);
  EXPECT_EQ(tied->int64, want.tied ? 1 : 0);
}

// Hyperparameters and names written by each exporter come back through the
// matching importer: GGUF keys, the llama2.c header and config.json.
TEST(LlamaHparams, EveryExportFormatRoundTripsThroughItsImporter) {
  char tmpl[] = "/tmp/llama_test_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied" : "separate classifier");
    LlamaDims d;
    d.dim = 32;
    d.hidden_dim = 80;
    d.n_layers = 2;
    d.n_heads = 4;
    d.n_kv_heads = 2;
    d.vocab_size = 96;
    d.seq_len = 256;
    d.norm_eps = 1.0 / 1024;  // exact in GGUF's float32
    d.rope_theta = 500000.0;
    d.tied = tied;
    MemorySource src = ModelOf(d);
    PackOptions opt;
    opt.extra_metadata = llama::ToTqmMetadata(d);
    const std::string tqm = dir + "/m.tqm";
    ASSERT_TRUE(Pack(src, tqm, opt).ok());
    absl::StatusOr<std::unique_ptr<Reader>> r = Reader::Open(tqm);
    ASSERT_TRUE(r.ok()) << r.status();

    absl::StatusOr<LlamaDims> described = DescribeLlama(**r);
    ASSERT_TRUE(described.ok()) << described.status();
    EXPECT_EQ(described->rope_hf, d.rope_hf);
    ExpectSameHparams(llama::ToTqmMetadata(*described), d, true);

    // GGUF: llama.* keys, llama.cpp names.
    const std::string gguf = dir + "/m.gguf";
    ASSERT_TRUE(ExportGguf(**r, gguf, {}).ok());
    absl::StatusOr<std::unique_ptr<TensorSource>> g = OpenGguf(gguf);
    ASSERT_TRUE(g.ok()) << g.status();
    ExpectSameHparams((*g)->metadata(), d, true);
    std::set<std::string> names;
    for (const SourceTensor& t : (*g)->tensors()) names.insert(t.name);
    std::set<std::string> want_names;
    for (const SourceTensor& t : src.tensors()) want_names.insert(t.name);
    EXPECT_EQ(names, want_names);

    // llama2.c: the seven header fields (eps and theta are run.c's).
    const std::string bin = dir + "/m.bin";
    ASSERT_TRUE(ExportLlama2c(**r, bin).ok());
    absl::StatusOr<std::unique_ptr<TensorSource>> c = OpenLlama2c(bin);
    ASSERT_TRUE(c.ok()) << c.status();
    ExpectSameHparams((*c)->metadata(), d, /*floats=*/false);

    // Hugging Face: config.json.
    const std::string hf = dir + "/hf" + (tied ? "1" : "0");
    ASSERT_TRUE(ExportHuggingFace(**r, hf, {}).ok());
    absl::StatusOr<std::vector<MetaEntry>> config = internal::HfConfigToMetadata(
        tqm_test::ReadFile(hf + "/config.json"), "config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    ExpectSameHparams(*config, d, true);
    for (const char* f : {"/config.json", "/model.safetensors"}) {
      ::unlink((hf + f).c_str());
    }
    ::rmdir(hf.c_str());
    for (const std::string& f : {tqm, gguf, bin}) ::unlink(f.c_str());
  }
  ::rmdir(dir.c_str());
}

std::vector<MetaEntry> WithEntry(std::vector<MetaEntry> meta, const std::string& key,
                                 MetaValue v) {
  for (MetaEntry& e : meta) {
    if (e.key == key) {
      e.value = std::move(v);
      return meta;
    }
  }
  meta.push_back({key, std::move(v)});
  return meta;
}

std::vector<MetaEntry> Without(std::vector<MetaEntry> meta, const std::string& key) {
  std::vector<MetaEntry> out;
  for (MetaEntry& e : meta) {
    if (e.key != key) out.push_back(std::move(e));
  }
  return out;
}

std::string ErrorOf(const std::vector<MetaEntry>& meta,
                    const llama::MetadataRules& rules) {
  absl::StatusOr<llama::ForwardConfig> c = llama::ForwardConfigFromMetadata(meta, rules);
  if (c.ok()) return "";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(c.status().message());
}

TEST(LlamaHparams, InconsistentValuesAreRejected) {
  const std::vector<MetaEntry> good = llama::ToTqmMetadata(SmallDims());
  llama::MetadataRules rules;
  rules.prefix = "m.tqm: ";
  ASSERT_EQ(ErrorOf(good, rules), "");

  const std::string inconsistent =
      "m.tqm: llama.dim 64, llama.n_heads %d and llama.n_kv_heads %d are inconsistent "
      "(need dim % n_heads == 0, n_heads % n_kv_heads == 0, even head size)";
  auto want = [&](int heads, int kv) {
    std::string s = inconsistent;
    s.replace(s.find("%d"), 2, std::to_string(heads));
    s.replace(s.find("%d"), 2, std::to_string(kv));
    return s;
  };
  // 6 heads do not divide 64; 3 kv heads do not divide 8; 64 heads of 1 are odd.
  EXPECT_EQ(ErrorOf(WithEntry(good, meta_keys::kHeads, MetaValue::Int(6)), rules),
            want(6, 4));
  EXPECT_EQ(ErrorOf(WithEntry(good, meta_keys::kKvHeads, MetaValue::Int(3)), rules),
            want(8, 3));
  EXPECT_EQ(ErrorOf(WithEntry(WithEntry(good, meta_keys::kHeads, MetaValue::Int(64)),
                              meta_keys::kKvHeads, MetaValue::Int(64)),
                    rules),
            want(64, 64));

  EXPECT_EQ(ErrorOf(Without(good, meta_keys::kSeqLen), rules),
            "m.tqm: metadata key 'llama.seq_len' is missing");
  EXPECT_EQ(ErrorOf(WithEntry(good, meta_keys::kDim, MetaValue::Int(0)), rules),
            "m.tqm: metadata key 'llama.dim' must be an integer in 1..131072");
  EXPECT_EQ(ErrorOf(WithEntry(good, meta_keys::kLayers, MetaValue::String("5")), rules),
            "m.tqm: metadata key 'llama.n_layers' must be an integer in 1..4096");
  EXPECT_EQ(
      ErrorOf(WithEntry(good, meta_keys::kRopeLayout, MetaValue::String("neox")), rules),
      "m.tqm: metadata key 'llama.rope_layout' must be \"meta\" or \"hf\"");
  EXPECT_EQ(ErrorOf(WithEntry(good, meta_keys::kNormEps, MetaValue::Float(0)), rules),
            "m.tqm: llama.norm_eps and llama.rope_theta must be > 0");
  // 1e-50 is positive as a double but 0 in float32, the forward's precision.
  EXPECT_EQ(ErrorOf(WithEntry(good, meta_keys::kNormEps, MetaValue::Float(1e-50)), rules),
            "m.tqm: llama.norm_eps and llama.rope_theta must be > 0");
}

TEST(LlamaHparams, RulesSetLimitsAndStrictness) {
  const std::vector<MetaEntry> good = llama::ToTqmMetadata(SmallDims());
  llama::MetadataRules lax;
  llama::MetadataRules strict;
  strict.missing_note = " (needed)";
  strict.max_dim = 32;
  strict.reject_non_number = true;
  strict.require_finite = true;

  EXPECT_EQ(ErrorOf(good, strict),
            "metadata key 'llama.dim' must be an integer in 1..32");
  strict.max_dim = 64;
  strict.max_hidden_dim = 171;
  EXPECT_EQ(ErrorOf(good, strict),
            "metadata key 'llama.hidden_dim' must be an integer in 1..171");
  strict.max_hidden_dim = 172;
  EXPECT_EQ(ErrorOf(good, strict), "");
  EXPECT_EQ(ErrorOf(Without(good, meta_keys::kHeads), strict),
            "metadata key 'llama.n_heads' is missing (needed)");

  // A non-number: the default under lax rules, an error under strict ones.
  const auto text_eps = WithEntry(good, meta_keys::kNormEps, MetaValue::String("x"));
  absl::StatusOr<llama::ForwardConfig> c =
      llama::ForwardConfigFromMetadata(text_eps, lax);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->norm_eps, 1e-5f);
  EXPECT_EQ(ErrorOf(text_eps, strict), "metadata key 'llama.norm_eps' must be a number");

  // An integer theta is accepted as a number.
  c = llama::ForwardConfigFromMetadata(
      WithEntry(good, meta_keys::kRopeTheta, MetaValue::Int(10000)), strict);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 10000.0f);

  const auto inf_theta =
      WithEntry(good, meta_keys::kRopeTheta,
                MetaValue::Float(std::numeric_limits<double>::infinity()));
  EXPECT_EQ(ErrorOf(inf_theta, lax), "");
  EXPECT_EQ(ErrorOf(inf_theta, strict),
            "llama.norm_eps and llama.rope_theta must be > 0");
}

}  // namespace
}  // namespace tqm
