// Per-tensor bits and granularity for a KL budget (tqm-pack --target-kl):
// the smallest file whose mean KL(float || quantized) on calibration text
// stays under a target. Round-to-nearest on the writer's grid, so the file
// holds exactly the weights measured here.
//
// 1. Sensitivity: for every quantizable tensor t and every setting s of a
//    small grid (bits x tensor / row / group:G), the model with only t
//    quantized with s is run over the calibration tokens and its mean KL
//    against the float model measured (layers before t's are run once, in
//    float, and reused).
// 2. Size: t's codes under s are entropy-coded in the writer's chunks (the
//    smaller of Huffman and rANS, or stored) plus 8 bytes per affine pair.
// 3. Choice: assuming the KLs of the tensors add, a Lagrangian sweep over
//    size + lambda * KL picks one setting per tensor with the sum under the
//    budget, then single-tensor moves spend what is left of it.
// 4. Check: the model with every chosen setting is measured; when its KL
//    exceeds the target (the KLs do not add exactly) the budget is scaled by
//    target / measured and the choice made again, up to `max_rounds` times.

#ifndef TQM_SRC_QUANT_TARGET_KL_H_
#define TQM_SRC_QUANT_TARGET_KL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tqm/source.h"
#include "tqm/writer.h"

namespace tqm {

struct TargetKlOptions {
  // Mean KL(float || quantized) in nats per position to stay under (> 0).
  double target_kl = 0.01;
  // The grid: every width in `bits` with per-tensor, per-row and
  // group:`group_size` pairs (group is skipped where a row fits in one
  // group: it is then the same as per row).
  std::vector<int> bits = {3, 4, 5, 6, 7, 8};
  uint32_t group_size = 64;
  // Calibration tokens measured (the text is cut there). Memory: a float32
  // copy of the model, the float logits of every token (vocab floats each)
  // and the activations at each layer's input (dim floats per token and
  // layer).
  size_t max_tokens = 4096;
  // Choice-and-check rounds (at least 1).
  int max_rounds = 3;
  // A llama2.c tokenizer (tokenizer.bin bytes); empty: the source's
  // metadata key tokenizer.llama2c.
  std::string tokenizer_llama2c;
  unsigned threads = 0;
  // Progress lines (no newline); may be empty.
  std::function<void(const std::string&)> progress;
};

// One tensor's choice and what was measured for it.
struct TensorChoice {
  std::string name;
  QuantSetting setting;
  double kl = 0;       // KL with only this tensor quantized so
  uint64_t bytes = 0;  // estimated encoded bytes (codes + pairs)
  uint64_t weights = 0;
};

struct TargetKlResult {
  // For PackOptions::tensor_settings.
  std::map<std::string, QuantSetting> settings;
  std::vector<TensorChoice> choices;
  double predicted_kl = 0;  // sum of the chosen tensors' KLs
  double measured_kl = 0;   // all chosen settings at once, calibration text
  bool met = false;         // measured_kl <= target_kl
  int rounds = 0;
  size_t positions = 0;    // KL positions measured
  size_t evaluations = 0;  // model forwards run for the sensitivities
  uint64_t bytes = 0;      // estimated bytes of the quantized tensors
  double seconds = 0;
};

// Chooses per-tensor settings for the Llama model `source` (float tensors of
// 2 or more dimensions not kept by base.keep; others are left to the
// writer). `base` supplies keep and chunk_size. When no round meets the
// target, returns the tightest choice with met == false. InvalidArgument for
// a model the forward cannot run (missing llama.* metadata, tokenizer or
// tensor, named), an empty text or an invalid option.
absl::StatusOr<TargetKlResult> ChooseForTargetKl(TensorSource& source,
                                                 const std::string& calibration_text,
                                                 const PackOptions& base,
                                                 const TargetKlOptions& options);

// "8 bits row", "4 bits group:64", "6 bits tensor".
std::string SettingName(const QuantSetting& s);

}  // namespace tqm

#endif  // TQM_SRC_QUANT_TARGET_KL_H_
