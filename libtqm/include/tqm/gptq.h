// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers"): data-aware quantization of the
// linear weights of a Llama model onto the same affine grid as
// round-to-nearest (tqm/quantize.h), so that the file format, the readers
// and the runtimes need nothing new. Each weight column is quantized in turn
// and its rounding error is spread over the columns not yet quantized,
// weighted by the inverse Hessian H = 2 X^T X / n of the layer's inputs X,
// which makes the layer's outputs X W^T, not its weights, close to the float
// ones.
//
// GptqQuantize() quantizes one matrix given its Hessian; MakeGptqSource()
// wraps a float Llama model: it tokenizes calibration text with the model's
// llama2.c tokenizer, runs the calibration forward layer by layer (each
// linear's inputs come from the layers already quantized), and exposes the
// seven linears of every layer as TensorKind::kQuantized tensors. Everything
// else (embedding, classifier, norms) passes through as float, for the
// writer to round to nearest.

#ifndef TQM_GPTQ_H_
#define TQM_GPTQ_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tqm/source.h"
#include "tqm/writer.h"

namespace tqm {

struct GptqProgress {
  int layer = 0;       // layer being quantized (0-based)
  int layers = 0;      // total layers
  std::string tensor;  // tensor just quantized ("" while running the forward)
  size_t tokens = 0;   // calibration tokens
};

struct GptqOptions {
  // The grid: code width 1..8 and what one (scale, zero) pair covers, as in
  // PackOptions. For kGroup, a group's pair is chosen when the quantization
  // first reaches one of its columns, from the weights as updated so far
  // (the reference implementation's behaviour in column order).
  int bits = 4;
  Granularity granularity = Granularity::kRow;
  uint32_t group_size = 0;
  // Quantize the columns by decreasing diag(H) ("act-order") instead of in
  // order. The codes and pairs are stored in the original column order.
  bool act_order = false;
  // Added to diag(H) before inverting: `dampening` x mean(diag(H)).
  double dampening = 0.01;
  // Columns per lazy batch update.
  uint32_t block_size = 128;
  // Upper bounds on the calibration tokens: at most `max_tokens`, and at
  // most as many as fit their activations for one layer (about 3 dim + 2
  // hidden_dim floats per token) into `max_activation_bytes`. Text past the
  // bound is not used.
  size_t max_tokens = size_t{1} << 17;
  uint64_t max_activation_bytes = uint64_t{4} << 30;
  // A llama2.c tokenizer (tokenizer.bin bytes) for the calibration text;
  // empty: the source's metadata key tokenizer.llama2c.
  std::string tokenizer_llama2c;
  // Linears for which this returns true are left float (the writer then
  // stores them as PackOptions::keep says). May be empty.
  std::function<bool(const std::string& name)> keep;
  // Threads for the forward and the column updates (0 = all cores).
  unsigned threads = 0;
  // Called after each linear is quantized; may be empty.
  std::function<void(const GptqProgress&)> progress;
};

// Quantizes `w` ([rows, cols] row-major) with GPTQ given the Hessian `h`
// ([cols, cols] row-major, symmetric, positive semi-definite; taken by value
// and overwritten). Returns the codes and pairs in `options`' storage
// (kStorageU8Tensor, kStorageU8Row or kStorageU8Group). With a diagonal H
// of positive entries (uncorrelated inputs) the result equals
// round-to-nearest; the weights of inputs that are always zero (diag(H) ==
// 0) get the code nearest zero, as in the reference implementation.
// `name` appears in errors.
// InvalidArgument for a shape mismatch, non-finite weights or an invalid
// grid; FailedPrecondition when the dampened H is not positive definite.
absl::StatusOr<QuantizedTensor> GptqQuantize(absl::Span<const float> w, uint64_t rows,
                                             uint64_t cols, std::vector<float> h,
                                             const GptqOptions& options,
                                             const std::string& name = "<tensor>");

// Runs GPTQ on every linear (q/k/v/o_proj, gate/up/down_proj) of the Llama
// model `float_source` with `calibration_text` (one sequence per line; each
// line is encoded with BOS as the runtime does and cut into windows of
// llama.seq_len tokens) and returns a source that serves those tensors as
// kQuantized and every other one from `float_source`. `float_source` must
// outlive the result (it is read again for the pass-through tensors).
//
// All quantization happens here; memory peaks at the activations of the
// calibration tokens for one layer, one Hessian (in_features^2 floats, and
// as many doubles while it is summed and factored) and the codes of the linears done
// so far (1 byte per weight). Models the forward cannot run get
// InvalidArgument: missing llama.* metadata or tokenizer (neither
// GptqOptions::tokenizer_llama2c nor tokenizer.llama2c), or a
// missing or misshapen tensor (named).
absl::StatusOr<std::unique_ptr<TensorSource>> MakeGptqSource(
    TensorSource& float_source, const std::string& calibration_text,
    const GptqOptions& options);

}  // namespace tqm

#endif  // TQM_GPTQ_H_
