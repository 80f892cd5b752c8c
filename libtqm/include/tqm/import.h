// Importers: model files in other formats opened as a TensorSource.
// Tensor names follow the Hugging Face Llama convention
// ("model.layers.3.self_attn.q_proj.weight"); see ../shared/LLAMA-LAYOUTS.md.

#ifndef TQM_IMPORT_H_
#define TQM_IMPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tqm/source.h"

namespace tqm {

// Opens a llama2.c v0 checkpoint (7 x int32 header, then float32 arrays).
// Stacked per-layer arrays are split into one tensor per layer; the unused
// RoPE tables are skipped; a separate classifier (negative vocab_size) becomes
// lm_head.weight. Metadata: llama.* hyperparameters, llama.rope_layout=meta,
// llama.tied_classifier, source.*. Errors name the file and the offset.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenLlama2c(const std::string& path);

// Opens a safetensors file (F32, F16, BF16 tensors). Strict: header length,
// JSON, dtypes, shapes and data offsets are validated before any tensor is
// read; the data ranges must tile the data area exactly.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensors(const std::string& path);

// Opens `path` by sniffing its contents: safetensors, else llama2.c.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenModel(const std::string& path);

}  // namespace tqm

#endif  // TQM_IMPORT_H_
