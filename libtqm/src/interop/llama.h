// The Llama layout, written once for the importers (llama2c.cc,
// safetensors.cc, import.cc, gguf.cc), the exporters (export.cc, gguf.cc),
// the runtime (runtime/llama.cc) and the calibration forward
// (quant/calibrate.cc): the tensor names in the llama2.c, Hugging Face and
// GGUF conventions (one table), the per-head q/k row permutation between
// the Hugging Face and Meta rotary layouts, and the hyperparameters
// (LlamaDims, tqm/export.h) with their keys in each convention (one table)
// and the conversions each place needs. docs/LLAMA.md states the facts
// this file encodes.

#ifndef TQM_SRC_INTEROP_LLAMA_H_
#define TQM_SRC_INTEROP_LLAMA_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tqm/export.h"
#include "tqm/metadata.h"
#include "tqm/reader.h"

namespace tqm {
namespace llama {

// ---- Tensor names (docs/LLAMA.md, "Tensor names") ----

// The tensors of a Llama model, in llama2.c checkpoint order.
enum class Tensor {
  kEmbed,       // token_embedding_table / model.embed_tokens / token_embd
  kAttNorm,     // rms_att_weight / input_layernorm / attn_norm
  kWq,          // wq / self_attn.q_proj / attn_q
  kWk,          // wk / self_attn.k_proj / attn_k
  kWv,          // wv / self_attn.v_proj / attn_v
  kWo,          // wo / self_attn.o_proj / attn_output
  kFfnNorm,     // rms_ffn_weight / post_attention_layernorm / ffn_norm
  kGate,        // w1 / mlp.gate_proj / ffn_gate
  kDown,        // w2 / mlp.down_proj / ffn_down
  kUp,          // w3 / mlp.up_proj / ffn_up
  kFinalNorm,   // rms_final_weight / model.norm / output_norm
  kClassifier,  // wcls / lm_head / output
};
inline constexpr int kTensors = 12;

// One row of the name table. `hf` and `gguf` are the names without the
// ".weight"/".bias" suffix and, for per-layer tensors, without the
// "model.layers.N." / "blk.N." prefix.
struct TensorNames {
  Tensor tensor;
  bool per_layer;
  const char* llama2c;
  const char* hf;
  const char* gguf;
};
const TensorNames& NamesOf(Tensor t);

// The nine per-layer tensors, in llama2.c order (the order of the stacked
// arrays in a checkpoint).
inline constexpr std::array<Tensor, 9> kLayerTensors = {
    Tensor::kAttNorm, Tensor::kWq,   Tensor::kWk,   Tensor::kWv, Tensor::kWo,
    Tensor::kFfnNorm, Tensor::kGate, Tensor::kDown, Tensor::kUp};

// "model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.weight";
// `layer` is ignored for a global tensor.
std::string HfName(Tensor t, int64_t layer = 0);
// "token_embd.weight", "blk.3.attn_q.weight".
std::string GgufName(Tensor t, int64_t layer = 0);
// "model.layers.3." (a per-layer Hugging Face name is this prefix and the
// HfLayerSuffix).
std::string HfLayerPrefix(int64_t layer);
// The per-layer part of a Hugging Face name: "self_attn.q_proj.weight".
std::string HfLayerSuffix(Tensor t);

// True when `name` ends with ".<hf>.weight" of the per-layer tensor `t`
// (the test the importers apply to names that carry a layer number).
bool EndsWithLayerSuffix(const std::string& name, Tensor t);

// "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight",
// "token_embd.weight" -> "model.embed_tokens.weight", ... (also ".bias").
// Returns an empty string for a name outside the table.
std::string GgufToHfName(const std::string& gguf_name);
// The inverse; empty for a name outside the table.
std::string HfToGgufName(const std::string& hf_name);

// True for model.layers.N.self_attn.q_proj.weight (and k_proj).
bool IsQProj(const std::string& hf_name);
bool IsKProj(const std::string& hf_name);

// [rows, cols] of tensor `t` in a model of dimensions `d`.
std::vector<uint64_t> Shape(Tensor t, const LlamaDims& d);

// ---- The rotary q/k permutation (docs/LLAMA.md, "The rotary embedding") ----

// Permutes the rows of a [rows, cols] matrix made of heads of `head_size`
// rows from the Hugging Face rotary layout to the Meta one (for head h, Meta
// row 2i is HF row i and Meta row 2i+1 is HF row i + head_size/2), or back.
// Leaves the matrix as it is unless head_size is even and divides rows.
void HfToMetaRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size);
void MetaToHfRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size);
// The same on rows of `row_bytes` bytes (any element type).
void PermuteRows(uint8_t* m, uint64_t rows, uint64_t row_bytes, uint64_t head_size,
                 bool hf_to_meta);

// The values of the metadata key llama.rope_layout: adjacent pairs rotate
// together (Meta: llama2.c, GGUF), or halves of a head (Hugging Face).
inline constexpr char kRopeLayoutMeta[] = "meta";
inline constexpr char kRopeLayoutHf[] = "hf";

// Reads tensor `t` of `r` as float32 (dequantized) into `out`, with q/k rows
// converted to the Meta layout when `dims.rope_hf`.
absl::Status ReadMetaLayout(const Reader& r, size_t t, const LlamaDims& dims,
                            std::vector<float>* out);

// ---- Hyperparameters (docs/LLAMA.md, "Hyperparameters") ----

// The numeric hyperparameters of LlamaDims, in llama2.c header order (the
// first seven) and then the two floating-point ones.
enum class Hparam {
  kDim,
  kHiddenDim,
  kLayers,
  kHeads,
  kKvHeads,
  kVocabSize,
  kSeqLen,
  kNormEps,
  kRopeTheta,
};
inline constexpr int kHparams = 9;
inline constexpr int kLlama2cHeaderFields = 7;

// One row of the key table: the hyperparameter's name in each convention.
struct HparamKeys {
  Hparam hparam;
  const char* tqm;      // metadata key, "llama.dim"
  const char* llama2c;  // header field, "dim" (nullptr: not in the header)
  const char* hf;       // config.json key, "hidden_size"
  const char* gguf;     // GGUF key after "llama.", "embedding_length"
  bool is_float;        // float64 metadata (else int64)
};
// All rows, in Hparam order.
absl::Span<const HparamKeys> HparamTable();
const HparamKeys& KeysOf(Hparam h);

// The value of an integer / floating-point hyperparameter of `d`.
int64_t IntOf(const LlamaDims& d, Hparam h);
double FloatOf(const LlamaDims& d, Hparam h);

// The llama2.c header of `d`: dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size (negative when the classifier is separate),
// seq_len. Values as int64; the caller checks they fit int32.
std::array<int64_t, kLlama2cHeaderFields> ToLlama2cHeader(const LlamaDims& d);
// The inverse: what a llama2.c checkpoint states, with run.c's norm_eps and
// rope_theta, the Meta rotary layout, and `tied` from vocab_size's sign.
// The caller has validated the header (nonzero fields).
LlamaDims FromLlama2cHeader(const std::array<int32_t, kLlama2cHeaderFields>& h);

// The typed llama.* metadata of `d` as the importers write it:
// general.architecture, the nine hyperparameters, llama.rope_layout and
// llama.tied_classifier.
std::vector<MetaEntry> ToTqmMetadata(const LlamaDims& d);

// config.json of a Hugging Face LlamaForCausalLM with the dimensions of `d`,
// `torch_dtype` naming the weights' type ("float32", ...). Finite norm_eps
// and rope_theta are the caller's to check.
std::string ToHfConfigJson(const LlamaDims& d, const char* torch_dtype);

// How a forward pass reads llama.* metadata: the runtime (tqm-run) and the
// calibration forward differ in limits and wording, which are kept.
struct MetadataRules {
  std::string prefix;         // put before each message ("model.tqm: ")
  std::string missing_note;   // appended to "metadata key '...' is missing"
  int64_t max_dim = 1 << 17;  // llama.dim in 1..max_dim
  int64_t max_hidden_dim = 1 << 20;
  bool reject_non_number = false;  // norm_eps/rope_theta neither int nor float
  bool require_finite = false;     // norm_eps/rope_theta finite (as float32)
};

// The hyperparameters in the precision the float32 forward passes compute
// with (run.c's int and float). Derived from the llama.* metadata only.
struct ForwardConfig {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int seq_len = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  bool rope_hf = false;  // rotate halves (Hugging Face) instead of adjacent pairs

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return head_size() * n_kv_heads; }
  // As LlamaDims (seq_len, norm_eps and rope_theta widened).
  LlamaDims dims() const;
};

// Reads the llama.* keys. InvalidArgument naming the key when one is
// missing, out of range or inconsistent (dim not a multiple of n_heads,
// n_heads not a multiple of n_kv_heads, odd head size, ...).
absl::StatusOr<ForwardConfig> ForwardConfigFromMetadata(
    const std::vector<MetaEntry>& meta, const MetadataRules& rules);

// Rotates one token's q (dim values) and k (kv_dim values) at position
// `pos` (RoPE): adjacent pairs within each head (run.c / Meta order), or the
// two halves of each head when c.rope_hf (Hugging Face order; docs/LLAMA.md).
// The runtime and the GPTQ calibration pass both call this one.
void ApplyRope(const ForwardConfig& c, float* q, float* k, int pos);

}  // namespace llama
}  // namespace tqm

#endif  // TQM_SRC_INTEROP_LLAMA_H_
