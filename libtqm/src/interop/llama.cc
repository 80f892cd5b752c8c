// The Llama layout of llama.h: the name and key tables, the q/k row
// permutation, the hyperparameter conversions, and DescribeLlama (the
// dimensions of a .tqm file, tqm/export.h). docs/LLAMA.md states the facts.

#include "interop/llama.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tqm/source.h"
#include "tqm/status.h"

namespace tqm {
namespace llama {
namespace {

// The name table of docs/LLAMA.md, in Tensor order.
constexpr TensorNames kNames[kTensors] = {
    {Tensor::kEmbed, false, "token_embedding_table", "model.embed_tokens", "token_embd"},
    {Tensor::kAttNorm, true, "rms_att_weight", "input_layernorm", "attn_norm"},
    {Tensor::kWq, true, "wq", "self_attn.q_proj", "attn_q"},
    {Tensor::kWk, true, "wk", "self_attn.k_proj", "attn_k"},
    {Tensor::kWv, true, "wv", "self_attn.v_proj", "attn_v"},
    {Tensor::kWo, true, "wo", "self_attn.o_proj", "attn_output"},
    {Tensor::kFfnNorm, true, "rms_ffn_weight", "post_attention_layernorm", "ffn_norm"},
    {Tensor::kGate, true, "w1", "mlp.gate_proj", "ffn_gate"},
    {Tensor::kDown, true, "w2", "mlp.down_proj", "ffn_down"},
    {Tensor::kUp, true, "w3", "mlp.up_proj", "ffn_up"},
    {Tensor::kFinalNorm, false, "rms_final_weight", "model.norm", "output_norm"},
    {Tensor::kClassifier, false, "wcls", "lm_head", "output"},
};

constexpr char kHfLayerPrefix[] = "model.layers.";
constexpr char kGgufLayerPrefix[] = "blk.";

// The key table of docs/LLAMA.md, in Hparam order. vocab_size has a GGUF
// key only on export (import takes it from token_embd.weight's rows).
constexpr HparamKeys kKeys[kHparams] = {
    {Hparam::kDim, meta_keys::kDim, "dim", "hidden_size", "embedding_length", false},
    {Hparam::kHiddenDim, meta_keys::kHiddenDim, "hidden_dim", "intermediate_size",
     "feed_forward_length", false},
    {Hparam::kLayers, meta_keys::kLayers, "n_layers", "num_hidden_layers", "block_count",
     false},
    {Hparam::kHeads, meta_keys::kHeads, "n_heads", "num_attention_heads",
     "attention.head_count", false},
    {Hparam::kKvHeads, meta_keys::kKvHeads, "n_kv_heads", "num_key_value_heads",
     "attention.head_count_kv", false},
    {Hparam::kVocabSize, meta_keys::kVocabSize, "vocab_size", "vocab_size", "vocab_size",
     false},
    {Hparam::kSeqLen, meta_keys::kSeqLen, "seq_len", "max_position_embeddings",
     "context_length", false},
    {Hparam::kNormEps, meta_keys::kNormEps, nullptr, "rms_norm_eps",
     "attention.layer_norm_rms_epsilon", true},
    {Hparam::kRopeTheta, meta_keys::kRopeTheta, nullptr, "rope_theta", "rope.freq_base",
     true},
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Splits "base.weight" / "base.bias" into base and suffix.
bool SplitSuffix(const std::string& name, std::string* base, std::string* suffix) {
  for (const char* s : {".weight", ".bias"}) {
    if (EndsWith(name, s) && name.size() > std::strlen(s)) {
      *base = name.substr(0, name.size() - std::strlen(s));
      *suffix = s;
      return true;
    }
  }
  return false;
}

// Parses "<prefix>N.rest" with a canonical decimal N that fits int32.
bool SplitLayer(const std::string& base, const std::string& prefix, int32_t* layer,
                std::string* rest) {
  if (base.compare(0, prefix.size(), prefix) != 0) return false;
  size_t i = prefix.size();
  const size_t begin = i;
  int64_t n = 0;
  while (i < base.size() && base[i] >= '0' && base[i] <= '9') {
    n = n * 10 + (base[i] - '0');
    if (n > std::numeric_limits<int32_t>::max()) return false;
    ++i;
  }
  if (i == begin || (i - begin > 1 && base[begin] == '0')) return false;
  if (i >= base.size() || base[i] != '.') return false;
  *layer = static_cast<int32_t>(n);
  *rest = base.substr(i + 1);
  return true;
}

std::string MapName(const std::string& name, bool to_hf) {
  std::string base, suffix, rest;
  if (!SplitSuffix(name, &base, &suffix)) return "";
  for (const TensorNames& n : kNames) {
    if (!n.per_layer && base == (to_hf ? n.gguf : n.hf)) {
      return (to_hf ? n.hf : n.gguf) + suffix;
    }
  }
  int32_t layer;
  if (!SplitLayer(base, to_hf ? kGgufLayerPrefix : kHfLayerPrefix, &layer, &rest)) {
    return "";
  }
  for (const TensorNames& n : kNames) {
    if (n.per_layer && rest == (to_hf ? n.gguf : n.hf)) {
      return absl::StrCat(to_hf ? kHfLayerPrefix : kGgufLayerPrefix, layer, ".",
                          to_hf ? n.hf : n.gguf, suffix);
    }
  }
  return "";
}

}  // namespace

const TensorNames& NamesOf(Tensor t) { return kNames[static_cast<int>(t)]; }

std::string HfName(Tensor t, int64_t layer) {
  const TensorNames& n = NamesOf(t);
  if (!n.per_layer) return absl::StrCat(n.hf, ".weight");
  return absl::StrCat(HfLayerPrefix(layer), n.hf, ".weight");
}

std::string GgufName(Tensor t, int64_t layer) {
  const TensorNames& n = NamesOf(t);
  if (!n.per_layer) return absl::StrCat(n.gguf, ".weight");
  return absl::StrCat(kGgufLayerPrefix, layer, ".", n.gguf, ".weight");
}

std::string HfLayerPrefix(int64_t layer) {
  return absl::StrCat(kHfLayerPrefix, layer, ".");
}

std::string HfLayerSuffix(Tensor t) { return absl::StrCat(NamesOf(t).hf, ".weight"); }

bool EndsWithLayerSuffix(const std::string& name, Tensor t) {
  return EndsWith(name, absl::StrCat(".", NamesOf(t).hf, ".weight"));
}

std::string GgufToHfName(const std::string& gguf_name) {
  return MapName(gguf_name, true);
}
std::string HfToGgufName(const std::string& hf_name) { return MapName(hf_name, false); }

bool IsQProj(const std::string& n) {
  return LayerFromName(n) >= 0 && EndsWithLayerSuffix(n, Tensor::kWq);
}
bool IsKProj(const std::string& n) {
  return LayerFromName(n) >= 0 && EndsWithLayerSuffix(n, Tensor::kWk);
}

std::vector<uint64_t> Shape(Tensor t, const LlamaDims& d) {
  // q_proj is [n_heads * head, dim]: dim rows once n_heads divides dim,
  // which every caller checks first.
  const uint64_t dim = d.dim, hidden = d.hidden_dim, vocab = d.vocab_size,
                 kv = d.n_kv_heads * d.head_size();
  switch (t) {
    case Tensor::kEmbed:
    case Tensor::kClassifier:
      return {vocab, dim};
    case Tensor::kAttNorm:
    case Tensor::kFfnNorm:
    case Tensor::kFinalNorm:
      return {dim};
    case Tensor::kWq:
    case Tensor::kWo:
      return {dim, dim};
    case Tensor::kWk:
    case Tensor::kWv:
      return {kv, dim};
    case Tensor::kGate:
    case Tensor::kUp:
      return {hidden, dim};
    case Tensor::kDown:
      return {dim, hidden};
  }
  return {};
}

// ---- permutation ----

void PermuteRows(uint8_t* m, uint64_t rows, uint64_t row_bytes, uint64_t head_size,
                 bool hf_to_meta) {
  if (head_size < 2 || head_size % 2 != 0 || rows % head_size != 0) return;
  std::vector<uint8_t> head(head_size * row_bytes);
  const uint64_t half = head_size / 2;
  for (uint64_t h = 0; h < rows / head_size; ++h) {
    uint8_t* base = m + h * head_size * row_bytes;
    std::memcpy(head.data(), base, head.size());
    for (uint64_t i = 0; i < half; ++i) {
      // Meta row 2i <-> HF row i; Meta row 2i+1 <-> HF row i + half.
      const uint64_t meta_even = 2 * i, meta_odd = 2 * i + 1, hf_lo = i, hf_hi = i + half;
      const uint64_t dst_even = hf_to_meta ? meta_even : hf_lo;
      const uint64_t src_even = hf_to_meta ? hf_lo : meta_even;
      const uint64_t dst_odd = hf_to_meta ? meta_odd : hf_hi;
      const uint64_t src_odd = hf_to_meta ? hf_hi : meta_odd;
      std::memcpy(base + dst_even * row_bytes, head.data() + src_even * row_bytes,
                  row_bytes);
      std::memcpy(base + dst_odd * row_bytes, head.data() + src_odd * row_bytes,
                  row_bytes);
    }
  }
}

void HfToMetaRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size) {
  PermuteRows(reinterpret_cast<uint8_t*>(m.data()), rows, cols * sizeof(float), head_size,
              true);
}
void MetaToHfRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size) {
  PermuteRows(reinterpret_cast<uint8_t*>(m.data()), rows, cols * sizeof(float), head_size,
              false);
}

absl::Status ReadMetaLayout(const Reader& r, size_t t, const LlamaDims& dims,
                            std::vector<float>* out) {
  const TensorInfo& info = r.tensors()[t];
  out->resize(info.numel);
  TQM_RETURN_IF_ERROR(r.ReadFloat(t, absl::MakeSpan(*out)));
  if (dims.rope_hf && (IsQProj(info.name) || IsKProj(info.name)) &&
      info.dims.size() == 2) {
    HfToMetaRows(absl::MakeSpan(*out), info.dims[0], info.dims[1],
                 static_cast<uint64_t>(dims.head_size()));
  }
  return absl::OkStatus();
}

// ---- hyperparameters ----

absl::Span<const HparamKeys> HparamTable() { return kKeys; }
const HparamKeys& KeysOf(Hparam h) { return kKeys[static_cast<int>(h)]; }

int64_t IntOf(const LlamaDims& d, Hparam h) {
  switch (h) {
    case Hparam::kDim:
      return d.dim;
    case Hparam::kHiddenDim:
      return d.hidden_dim;
    case Hparam::kLayers:
      return d.n_layers;
    case Hparam::kHeads:
      return d.n_heads;
    case Hparam::kKvHeads:
      return d.n_kv_heads;
    case Hparam::kVocabSize:
      return d.vocab_size;
    case Hparam::kSeqLen:
      return d.seq_len;
    case Hparam::kNormEps:
    case Hparam::kRopeTheta:
      break;
  }
  return 0;
}

double FloatOf(const LlamaDims& d, Hparam h) {
  if (h == Hparam::kNormEps) return d.norm_eps;
  if (h == Hparam::kRopeTheta) return d.rope_theta;
  return static_cast<double>(IntOf(d, h));
}

std::array<int64_t, kLlama2cHeaderFields> ToLlama2cHeader(const LlamaDims& d) {
  std::array<int64_t, kLlama2cHeaderFields> h;
  for (int i = 0; i < kLlama2cHeaderFields; ++i) h[i] = IntOf(d, kKeys[i].hparam);
  // A negative vocab_size says the classifier is separate (docs/LLAMA.md).
  if (!d.tied) h[static_cast<int>(Hparam::kVocabSize)] = -d.vocab_size;
  return h;
}

LlamaDims FromLlama2cHeader(const std::array<int32_t, kLlama2cHeaderFields>& h) {
  LlamaDims d;
  d.dim = h[0];
  d.hidden_dim = h[1];
  d.n_layers = h[2];
  d.n_heads = h[3];
  d.n_kv_heads = h[4];
  d.tied = h[5] > 0;
  d.vocab_size = h[5] > 0 ? h[5] : -static_cast<int64_t>(h[5]);
  d.seq_len = h[6];
  d.norm_eps = 1e-5;  // what run.c uses
  d.rope_theta = 10000.0;
  d.rope_hf = false;
  return d;
}

std::vector<MetaEntry> ToTqmMetadata(const LlamaDims& d) {
  std::vector<MetaEntry> meta;
  meta.push_back({meta_keys::kArchitecture, MetaValue::String("llama")});
  for (const HparamKeys& k : kKeys) {
    meta.push_back({k.tqm, k.is_float ? MetaValue::Float(FloatOf(d, k.hparam))
                                      : MetaValue::Int(IntOf(d, k.hparam))});
  }
  meta.push_back({meta_keys::kRopeLayout,
                  MetaValue::String(d.rope_hf ? kRopeLayoutHf : kRopeLayoutMeta)});
  meta.push_back({meta_keys::kTiedClassifier, MetaValue::Int(d.tied ? 1 : 0)});
  return meta;
}

namespace {

// A finite double as a JSON number that reads back exactly: 10000.0 for an
// integral value, else the shortest %g form (1e-05), close to what Python's
// json module writes.
std::string JsonDouble(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrFormat("%.1f", v);
  std::string s = absl::StrFormat("%.17g", v);
  for (int prec = 1; prec < 17; ++prec) {
    const std::string t = absl::StrFormat("%.*g", prec, v);
    if (std::strtod(t.c_str(), nullptr) == v) {
      s = t;
      break;
    }
  }
  return s;
}

}  // namespace

std::string ToHfConfigJson(const LlamaDims& d, const char* torch_dtype) {
  std::string j = "{\n";
  absl::StrAppend(&j, "  \"architectures\": [\"LlamaForCausalLM\"],\n");
  absl::StrAppend(&j, "  \"model_type\": \"llama\",\n");
  absl::StrAppend(&j, "  \"hidden_act\": \"silu\",\n");
  for (const HparamKeys& k : kKeys) {
    absl::StrAppend(
        &j, "  \"", k.hf, "\": ",
        k.is_float ? JsonDouble(FloatOf(d, k.hparam)) : absl::StrCat(IntOf(d, k.hparam)),
        ",\n");
  }
  absl::StrAppend(&j, "  \"tie_word_embeddings\": ", d.tied ? "true" : "false", ",\n");
  absl::StrAppend(&j, "  \"torch_dtype\": \"", torch_dtype, "\"\n");
  j += "}\n";
  return j;
}

LlamaDims ForwardConfig::dims() const {
  LlamaDims d;
  d.dim = dim;
  d.hidden_dim = hidden_dim;
  d.n_layers = n_layers;
  d.n_heads = n_heads;
  d.n_kv_heads = n_kv_heads;
  d.vocab_size = vocab_size;
  d.seq_len = seq_len;
  d.norm_eps = norm_eps;
  d.rope_theta = rope_theta;
  d.rope_hf = rope_hf;
  return d;
}

absl::StatusOr<ForwardConfig> ForwardConfigFromMetadata(
    const std::vector<MetaEntry>& meta, const MetadataRules& rules) {
  const std::string& p = rules.prefix;
  auto read_int = [&](Hparam h, int64_t max) -> absl::StatusOr<int> {
    const char* key = KeysOf(h).tqm;
    const MetaValue* v = FindMeta(meta, key);
    if (v == nullptr) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%smetadata key '%s' is missing%s", p, key, rules.missing_note));
    }
    if (v->type != format::kMetaInt64 || v->int64 <= 0 || v->int64 > max) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%smetadata key '%s' must be an integer in 1..%d", p, key, max));
    }
    return static_cast<int>(v->int64);
  };
  auto read_float = [&](Hparam h, double def) -> absl::StatusOr<float> {
    const char* key = KeysOf(h).tqm;
    const MetaValue* v = FindMeta(meta, key);
    if (v == nullptr) return static_cast<float>(def);
    if (v->type == format::kMetaFloat64) return static_cast<float>(v->float64);
    if (v->type == format::kMetaInt64)
      return static_cast<float>(static_cast<double>(v->int64));
    if (rules.reject_non_number) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%smetadata key '%s' must be a number", p, key));
    }
    return static_cast<float>(def);
  };
  constexpr int64_t kMaxCount = 1 << 20;
  ForwardConfig c;
  TQM_ASSIGN_OR_RETURN(c.dim, read_int(Hparam::kDim, rules.max_dim));
  TQM_ASSIGN_OR_RETURN(c.hidden_dim, read_int(Hparam::kHiddenDim, rules.max_hidden_dim));
  TQM_ASSIGN_OR_RETURN(c.n_layers, read_int(Hparam::kLayers, 4096));
  TQM_ASSIGN_OR_RETURN(c.n_heads, read_int(Hparam::kHeads, 4096));
  TQM_ASSIGN_OR_RETURN(c.n_kv_heads, read_int(Hparam::kKvHeads, 4096));
  TQM_ASSIGN_OR_RETURN(c.vocab_size, read_int(Hparam::kVocabSize, kMaxCount * 4));
  TQM_ASSIGN_OR_RETURN(c.seq_len, read_int(Hparam::kSeqLen, kMaxCount));
  TQM_ASSIGN_OR_RETURN(c.norm_eps, read_float(Hparam::kNormEps, 1e-5));
  TQM_ASSIGN_OR_RETURN(c.rope_theta, read_float(Hparam::kRopeTheta, 10000.0));
  if (const MetaValue* v = FindMeta(meta, meta_keys::kRopeLayout)) {
    if (v->type != format::kMetaString ||
        (v->bytes != kRopeLayoutMeta && v->bytes != kRopeLayoutHf)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%smetadata key '%s' must be \"meta\" or \"hf\"", p, meta_keys::kRopeLayout));
    }
    c.rope_hf = v->bytes == kRopeLayoutHf;
  }
  if (c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0 || c.head_size() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%sllama.dim %d, llama.n_heads %d and llama.n_kv_heads %d are inconsistent "
        "(need dim %% n_heads == 0, n_heads %% n_kv_heads == 0, even head size)",
        p, c.dim, c.n_heads, c.n_kv_heads));
  }
  if (!(c.norm_eps > 0) || !(c.rope_theta > 0) ||
      (rules.require_finite &&
       (!std::isfinite(c.norm_eps) || !std::isfinite(c.rope_theta)))) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%sllama.norm_eps and llama.rope_theta must be > 0", p));
  }
  return c;
}

void ApplyRope(const ForwardConfig& c, float* q, float* k, int pos) {
  const int hs = c.head_size(), kv_dim = c.kv_dim();
  if (!c.rope_hf) {
    // Adjacent pairs (x[2i], x[2i+1]) within each head: run.c / Meta.
    for (int i = 0; i < c.dim; i += 2) {
      const int head_dim = i % hs;
      const float freq = 1.0f / std::pow(c.rope_theta, head_dim / static_cast<float>(hs));
      const float val = pos * freq;
      const float fcr = std::cos(val), fci = std::sin(val);
      const int rotn = i < kv_dim ? 2 : 1;
      for (int v = 0; v < rotn; ++v) {
        float* vec = v == 0 ? q : k;
        const float v0 = vec[i], v1 = vec[i + 1];
        vec[i] = v0 * fcr - v1 * fci;
        vec[i + 1] = v0 * fci + v1 * fcr;
      }
    }
    return;
  }
  // Halves (x[i], x[i + head/2]) within each head: Hugging Face.
  const int half = hs / 2;
  for (int i = 0; i < half; ++i) {
    const float freq = 1.0f / std::pow(c.rope_theta, (2 * i) / static_cast<float>(hs));
    const float val = pos * freq;
    const float fcr = std::cos(val), fci = std::sin(val);
    for (int h = 0; h < c.n_heads; ++h) {
      for (int v = 0; v < (h < c.n_kv_heads ? 2 : 1); ++v) {
        float* vec = (v == 0 ? q : k) + h * hs;
        const float v0 = vec[i], v1 = vec[i + half];
        vec[i] = v0 * fcr - v1 * fci;
        vec[i + half] = v0 * fci + v1 * fcr;
      }
    }
  }
}

}  // namespace llama

// ---- DescribeLlama ----

namespace {

absl::Status Unfit(const Reader& r, const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrFormat("%s: not a complete Llama model: %s", r.name(), what));
}

bool MetaInt(const Reader& r, const char* key, int64_t* out) {
  const MetaValue* v = r.FindMeta(key);
  if (v == nullptr || v->type != format::kMetaInt64) return false;
  *out = v->int64;
  return true;
}

bool MetaFloat(const Reader& r, const char* key, double* out) {
  const MetaValue* v = r.FindMeta(key);
  if (v == nullptr) return false;
  if (v->type == format::kMetaFloat64) {
    *out = v->float64;
    return true;
  }
  if (v->type == format::kMetaInt64) {
    *out = static_cast<double>(v->int64);
    return true;
  }
  return false;
}

std::string ShapeText(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) absl::StrAppend(&s, i ? ", " : "", d[i]);
  return s + "]";
}

}  // namespace

namespace {

// True for the element types a Llama weight can have: F32 and quantized
// storage, and RAW floating-point dtypes.
bool FloatingPoint(const TensorInfo& t) {
  if (!t.raw()) return true;
  switch (t.source_dtype) {
    case format::kDTypeF32:
    case format::kDTypeF16:
    case format::kDTypeBF16:
    case format::kDTypeF64:
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<LlamaDims> DescribeLlama(const Reader& r, const ExportOverrides& ov,
                                        bool allow_extra) {
  LlamaDims d;
  const std::string embed_name = llama::HfName(llama::Tensor::kEmbed);
  const int embed = r.FindTensor(embed_name);
  if (embed < 0) return Unfit(r, "no tensor " + embed_name);
  const TensorInfo& e = r.tensors()[embed];
  if (e.dims.size() != 2) {
    return Unfit(
        r, embed_name + " has shape " + ShapeText(e.dims) + ", expected [vocab, dim]");
  }
  d.vocab_size = static_cast<int64_t>(e.dims[0]);
  d.dim = static_cast<int64_t>(e.dims[1]);
  int32_t max_layer = -1;
  for (const TensorInfo& t : r.tensors()) {
    const int32_t l = LayerFromName(t.name);
    const bool llama = t.name == embed_name ||
                       t.name == llama::HfName(llama::Tensor::kFinalNorm) ||
                       t.name == llama::HfName(llama::Tensor::kClassifier) ||
                       (l >= 0 && llama::EndsWith(t.name, ".weight") &&
                        !llama::HfToGgufName(t.name).empty());
    if (!llama) {
      if (allow_extra) continue;
      return Unfit(r, "tensor " + t.name + " is not part of the Llama layout");
    }
    if (l > max_layer) max_layer = l;
    if (!FloatingPoint(t)) {
      return Unfit(r, absl::StrFormat("tensor %s is stored as %s, not floating point",
                                      t.name, DTypeName(t.source_dtype)));
    }
  }
  d.n_layers = max_layer + 1;
  if (d.n_layers == 0) return Unfit(r, "no model.layers.N tensors");

  const int gate0 = r.FindTensor(llama::HfName(llama::Tensor::kGate, 0));
  const int k0 = r.FindTensor(llama::HfName(llama::Tensor::kWk, 0));
  if (gate0 < 0 || k0 < 0)
    return Unfit(r, "layer 0 lacks mlp.gate_proj or self_attn.k_proj");
  d.hidden_dim = static_cast<int64_t>(r.tensors()[gate0].dims[0]);

  int64_t v;
  d.n_heads = ov.n_heads;
  if (d.n_heads == 0 && MetaInt(r, meta_keys::kHeads, &v)) d.n_heads = v;
  if (d.n_heads <= 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: the number of attention heads is unknown (no llama.n_heads metadata); "
        "give it explicitly (--n-heads)",
        r.name()));
  }
  if (d.dim % d.n_heads != 0 || (d.dim / d.n_heads) % 2 != 0) {
    return Unfit(r, absl::StrFormat("n_heads=%d does not split dim=%d into heads of an "
                                    "even size",
                                    d.n_heads, d.dim));
  }
  const uint64_t head = static_cast<uint64_t>(d.head_size());
  const uint64_t k_rows = r.tensors()[k0].dims[0];
  if (r.tensors()[k0].dims.size() != 2 || k_rows % head != 0 || k_rows == 0) {
    return Unfit(r, absl::StrFormat("k_proj shape %s is not [n_kv_heads * %d, %d]",
                                    ShapeText(r.tensors()[k0].dims), head, d.dim));
  }
  d.n_kv_heads = static_cast<int64_t>(k_rows / head);
  if (d.n_heads % d.n_kv_heads != 0) {
    return Unfit(r, absl::StrFormat("n_kv_heads=%d does not divide n_heads=%d",
                                    d.n_kv_heads, d.n_heads));
  }
  auto check = [&](const char* key, int64_t want,
                   int64_t override_value) -> absl::Status {
    int64_t got = override_value;
    if (got == 0 && !MetaInt(r, key, &got)) return absl::OkStatus();
    if (got != want) {
      return Unfit(
          r, absl::StrFormat("%s=%d contradicts the tensor shapes, which give %d", key,
                             got, want));
    }
    return absl::OkStatus();
  };
  TQM_RETURN_IF_ERROR(check(meta_keys::kDim, d.dim, 0));
  TQM_RETURN_IF_ERROR(check(meta_keys::kHiddenDim, d.hidden_dim, 0));
  TQM_RETURN_IF_ERROR(check(meta_keys::kLayers, d.n_layers, 0));
  TQM_RETURN_IF_ERROR(check(meta_keys::kKvHeads, d.n_kv_heads, ov.n_kv_heads));
  TQM_RETURN_IF_ERROR(check(meta_keys::kVocabSize, d.vocab_size, 0));

  // Every tensor present with the shape the dimensions require.
  auto need = [&](const std::string& name, std::vector<uint64_t> shape) -> absl::Status {
    const int t = r.FindTensor(name);
    if (t < 0) return Unfit(r, "no tensor " + name);
    if (r.tensors()[t].dims != shape) {
      return Unfit(r, absl::StrFormat("tensor %s has shape %s, expected %s", name,
                                      ShapeText(r.tensors()[t].dims), ShapeText(shape)));
    }
    return absl::OkStatus();
  };
  auto need_tensor = [&](llama::Tensor t, int64_t layer) {
    return need(llama::HfName(t, layer), llama::Shape(t, d));
  };
  TQM_RETURN_IF_ERROR(need_tensor(llama::Tensor::kFinalNorm, 0));
  for (int64_t l = 0; l < d.n_layers; ++l) {
    for (llama::Tensor t : llama::kLayerTensors) TQM_RETURN_IF_ERROR(need_tensor(t, l));
  }
  const std::string cls = llama::HfName(llama::Tensor::kClassifier);
  d.tied = r.FindTensor(cls) < 0;
  if (!d.tied) TQM_RETURN_IF_ERROR(need_tensor(llama::Tensor::kClassifier, 0));

  d.seq_len = ov.seq_len;
  if (d.seq_len == 0 && MetaInt(r, meta_keys::kSeqLen, &v)) d.seq_len = v;
  if (d.seq_len == 0) d.seq_len = 2048;
  if (d.seq_len < 0) return Unfit(r, absl::StrFormat("seq_len=%d", d.seq_len));
  double f;
  if (MetaFloat(r, meta_keys::kNormEps, &f)) d.norm_eps = f;
  if (MetaFloat(r, meta_keys::kRopeTheta, &f)) d.rope_theta = f;
  if (const MetaValue* layout = r.FindMeta(meta_keys::kRopeLayout)) {
    if (layout->bytes == llama::kRopeLayoutHf) {
      d.rope_hf = true;
    } else if (layout->bytes != llama::kRopeLayoutMeta) {
      return Unfit(r, absl::StrFormat("llama.rope_layout=\"%s\" is neither meta nor hf",
                                      layout->bytes));
    }
  }
  return d;
}

}  // namespace tqm
