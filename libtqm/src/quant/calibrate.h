// A self-contained float32 Llama forward over a TensorSource, for
// data-aware quantization (gptq.cc) and its tests: it runs a whole batch of
// token sequences through one layer at a time, so that the inputs of each
// linear can be captured for every calibration token and the layer's
// weights replaced (by their quantized values) before the next linear runs.
// It follows libtqm/src/runtime/llama.cc (run.c): RMSNorm, RoPE in the
// layout llama.rope_layout names ("meta": adjacent pairs; "hf": halves),
// grouped-query attention, SwiGLU MLP.

#ifndef TQM_SRC_CALIBRATE_H_
#define TQM_SRC_CALIBRATE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/parallel.h"
#include "interop/llama.h"
#include "tqm/metadata.h"
#include "tqm/source.h"

namespace tqm {
namespace calib {

// The hyperparameters in run.c's int and float (interop/llama.h).
using LlamaConfig = llama::ForwardConfig;

// Reads the llama.* hyperparameters. InvalidArgument naming the key when
// one is missing, out of range or inconsistent.
absl::StatusOr<LlamaConfig> ConfigFromMetadata(const std::vector<MetaEntry>& meta);

// Token sequences laid end to end: sequence s is tokens[starts[s] ..
// starts[s + 1]); a token's position is its offset in its sequence.
struct Batch {
  std::vector<int32_t> tokens;
  std::vector<size_t> starts = {0};
  size_t sequences() const { return starts.size() - 1; }
};

// Encodes `text` with the llama2.c tokenizer in the metadata key
// tokenizer.llama2c (run.c's encode: BOS, a dummy space prefix, greedy
// merges), one sequence per non-empty line, each cut into windows of at
// most `seq_len` tokens; stops at `max_tokens`. InvalidArgument when the
// tokenizer is missing or does not parse, or the text yields no token.
absl::StatusOr<Batch> Tokenize(const std::vector<MetaEntry>& meta, const LlamaConfig& c,
                               const std::string& text, size_t max_tokens);

// The linears of a layer, in forward order.
enum Linear { kQ, kK, kV, kO, kGate, kUp, kDown, kLinears };

// "self_attn.q_proj.weight", ...
const char* LinearSuffix(int linear);
// "model.layers.<layer>.<suffix>"
std::string LayerTensorName(int layer, const std::string& suffix);

// Where the forward hands a layer's activations to the hook: the input of
// q/k/v (after the attention RMSNorm), of o (the attention output), of
// gate/up (after the MLP RMSNorm) and of down (the SwiGLU output).
enum Stage { kStageQkv, kStageO, kStageGateUp, kStageDown, kStages };

// The linears that read the input of `stage`.
std::vector<int> StageLinears(int stage);

struct LayerWeights {
  std::vector<float> att_norm, ffn_norm;
  std::vector<float> w[kLinears];  // [out, in] row-major
};

class LlamaModel {
 public:
  // Checks the metadata and that every tensor the forward needs is present
  // with the shape the metadata implies. InvalidArgument naming what is
  // missing or misshapen.
  static absl::StatusOr<LlamaModel> Open(TensorSource& source);

  const LlamaConfig& config() const { return c_; }
  // [out, in] of linear `k`.
  std::pair<uint64_t, uint64_t> LinearShape(int k) const;
  // The source index of linear `k` of `layer`.
  int LinearIndex(int layer, int k) const { return layers_[layer][k]; }

  absl::Status LoadLayer(int layer, LayerWeights* w) const;

  // x = the embeddings of the batch's tokens, [tokens, dim].
  absl::Status Embed(const Batch& b, std::vector<float>* x) const;

  // Called with the input of each stage, [tokens, width] row-major, before
  // the stage's linears run; may change `w` (the linears then run with the
  // changed weights).
  using Hook = std::function<absl::Status(int stage, absl::Span<const float> in,
                                          size_t width, LayerWeights* w)>;

  // Runs one layer over the batch in place (x: [tokens, dim]).
  absl::Status LayerForward(const Batch& b, LayerWeights* w, std::vector<float>* x,
                            const Hook& hook, unsigned threads) const;

  // Final RMSNorm and classifier: out = logits, [tokens, vocab].
  absl::Status Logits(const std::vector<float>& x, std::vector<float>* out,
                      unsigned threads) const;

 private:
  TensorSource* src_ = nullptr;
  LlamaConfig c_;
  int embed_ = -1, final_norm_ = -1, lm_head_ = -1;    // lm_head_ = embed_ when tied
  std::vector<std::array<int, kLinears + 2>> layers_;  // linears, att_norm, ffn_norm
  absl::Status ReadTensor(int i, std::vector<float>* out) const;
};

// Logits of every position of `b`, [tokens, vocab], through the whole model.
absl::StatusOr<std::vector<float>> ForwardLogits(TensorSource& source, const Batch& b,
                                                 unsigned threads);

using internal::ParallelFor;

// out[t, o] = sum_i in[t, i] w[o, i], for `tokens` rows of `in`.
void MatMulT(const float* in, size_t tokens, const float* w, size_t out_dim,
             size_t in_dim, float* out, unsigned threads);

}  // namespace calib
}  // namespace tqm

#endif  // TQM_SRC_CALIBRATE_H_
