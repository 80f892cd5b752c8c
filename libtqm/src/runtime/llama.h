// A Llama forward pass on the CPU (llama2.c's run.c architecture: RMSNorm,
// rotary embeddings, grouped-query attention, SwiGLU, tied or separate
// classifier) that reads every weight through the tqm loader, in one of four
// modes:
//
//   decoded-f32  every layer dequantized to float32 once and kept
//   int8         every layer decoded to uint8 once and kept; matrix-vector
//                products on uint8 with the affine parameters:
//                dot(x, s * (q - z)) = s * (dot(x, q) - z * sum(x)), per
//                row, or summed over a row's groups for group storage:
//                sum_g s_g * (dot(x_g, q_g) - z_g * sum(x_g))
//   stream       layers decoded on demand within a memory budget, evicted
//                and decoded again, the next layer prefetched in the
//                background while the current one computes
//   fused        no layer materialised: each product decodes the compressed
//                chunks straight into the dot products
//
// Every storage runs in every mode: per-tensor, per-row and per-group
// parameters at any code width (the kernels see uint8 codes either way), and
// verbatim (RAW) tensors, which are converted to float32 once and kept.
//
// ReferenceLlama is the plain float32 forward pass (run.c's loops) used as
// the yardstick in tests and measurements.

#ifndef TQM_EXAMPLES_RUNTIME_LLAMA_H_
#define TQM_EXAMPLES_RUNTIME_LLAMA_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/parallel.h"
#include "interop/llama.h"
#include "tqm/loader.h"
#include "tqm/metadata.h"
#include "tqm/reader.h"
#include "tqm/source.h"

namespace tqm {
namespace rt {

class Sampler;

enum class Mode { kDecodedF32, kInt8, kStream, kFused };

// "decoded-f32", "int8", "stream", "fused".
const char* ModeName(Mode mode);
absl::StatusOr<Mode> ParseMode(absl::string_view name);

// The hyperparameters in run.c's int and float (interop/llama.h).
using LlamaConfig = llama::ForwardConfig;

// Reads the llama.* keys (tqm/metadata.h) of `file`. InvalidArgument naming
// the file and the key when one is missing or inconsistent (dim not a
// multiple of n_heads, n_heads not a multiple of n_kv_heads, odd head
// size, ...).
absl::StatusOr<LlamaConfig> ConfigFromMetadata(const std::vector<MetaEntry>& meta,
                                               const std::string& file);

// Tensor names (Hugging Face convention, as the importers write them).
std::string LayerTensorName(int layer, absl::string_view suffix);

struct RuntimeOptions {
  Mode mode = Mode::kInt8;
  int threads = 0;            // compute and decode threads; 0: hardware threads
  uint64_t budget_bytes = 0;  // loader budget (stream mode); 0: unlimited
  bool verify_checksums = true;
  int prefetch = 1;  // stream mode: layers decoded ahead
  // View tensors stored uncompressed in place (ModelOptions::zero_copy).
  // Off: every tensor is decoded into loader buffers (tests, benchmarks).
  bool zero_copy = true;
  std::function<void(const std::string&)> on_warning;
};

class Llama {
 public:
  static absl::StatusOr<std::unique_ptr<Llama>> Open(const std::string& path,
                                                     const RuntimeOptions& options);
  static absl::StatusOr<std::unique_ptr<Llama>> FromReader(std::unique_ptr<Reader> reader,
                                                           const RuntimeOptions& options);
  ~Llama();

  // Runs token `token` at position `pos` (0 <= pos < seq_len; positions
  // before `pos` must have been run) and returns the logits (vocab_size
  // values, valid until the next call).
  absl::StatusOr<absl::Span<const float>> Forward(int token, int pos);

  const LlamaConfig& config() const { return config_; }
  Mode mode() const { return mode_; }
  Model& model() { return *model_; }

 private:
  struct Mat;
  struct Weight;
  struct LayerIdx;
  Llama() = default;
  absl::Status Init(std::unique_ptr<Model> model, const RuntimeOptions& options);
  absl::Status MatVec(const Mat& m, const float* x, float* out);
  absl::Status MakeMat(const LayerHandle* h, const Weight& w, Mat* m);
  absl::Status Norm(const LayerHandle* h, const Weight& w, const float* x, float* out);
  absl::Status EmbeddingRow(int token, float* out);
  absl::Status ReadRange(int tensor, uint64_t begin, uint64_t count, float* out);
  // group_sums_[g] = the sum of x over the columns of group g (group storage).
  void GroupSums(const Mat& m, const float* x);
  absl::StatusOr<const float*> RawAsFloat(const TensorView& v);
  absl::Status Layer(int l, const LayerHandle& h, int pos);

  LlamaConfig config_;
  Mode mode_ = Mode::kInt8;
  std::unique_ptr<Model> model_;
  std::unique_ptr<ThreadPool> pool_;
  std::vector<LayerIdx> layers_;
  std::vector<Weight> globals_weights_;  // embedding, final norm, classifier
  std::vector<LayerHandle> pinned_;      // per layer (when kept), plus globals last
  LayerHandle globals_;
  // Activations and the KV cache.
  std::vector<float> x_, xb_, xb2_, hb_, hb2_, q_, att_, logits_, scratch_;
  std::vector<float> norm_tmp_, group_sums_, seg_acc_;
  // Verbatim (RAW storage) tensors converted to float32, by reader index.
  absl::flat_hash_map<int, std::vector<float>> raw_f32_;
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float, Free> key_cache_, value_cache_;  // lazily touched pages
};

// The float32 forward pass of run.c on weights held as float vectors.
class ReferenceLlama {
 public:
  // Weights = every tensor of `reader` dequantized (Reader::ReadFloat).
  static absl::StatusOr<std::unique_ptr<ReferenceLlama>> FromReader(const Reader& reader);
  // Weights = the float32 values of `source` (the unquantized original).
  static absl::StatusOr<std::unique_ptr<ReferenceLlama>> FromSource(TensorSource& source);

  absl::Span<const float> Forward(int token, int pos);
  const LlamaConfig& config() const { return config_; }

 private:
  using Loader = std::function<absl::StatusOr<std::vector<float>>(const std::string&)>;
  absl::Status Load(const Loader& load);

  LlamaConfig config_;
  std::vector<float> embed_, final_norm_, cls_;
  struct Layer {
    std::vector<float> att_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3;
  };
  std::vector<Layer> layers_;
  std::vector<float> x_, xb_, xb2_, hb_, hb2_, q_, att_, logits_, key_cache_,
      value_cache_;
};

using ForwardFn =
    std::function<absl::StatusOr<absl::Span<const float>>(int token, int pos)>;

// run.c's generate(): starts from prompt[0], forces the remaining prompt
// tokens, then samples, for at most `steps` positions (the caller keeps
// `steps` within the model's sequence length), stopping early at BOS. Calls
// emit(prev, next) for every token after the first. Returns the sequence
// (prompt[0] first).
absl::StatusOr<std::vector<int>> Generate(const ForwardFn& forward,
                                          absl::Span<const int> prompt, int steps,
                                          Sampler& sampler,
                                          const std::function<void(int, int)>& emit = {});

}  // namespace rt
}  // namespace tqm

#endif  // TQM_EXAMPLES_RUNTIME_LLAMA_H_
