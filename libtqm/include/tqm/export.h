// The export side of the data path: a .tqm file written back out as a
// safetensors file, a GGUF v3 file that llama.cpp loads, or a llama2.c v0
// checkpoint that karpathy's run.c runs. Each exporter streams: it decodes
// one tensor at a time from the Reader and writes atomically (temporary file
// renamed into place only when complete; a failed export leaves `out_path`
// as it was).
//
// Llama layouts (../shared/LLAMA-LAYOUTS.md): GGUF and llama2.c want the
// Meta rotary layout for q/k; a file whose metadata says
// llama.rope_layout="hf" has its q_proj/k_proj rows permuted back per head
// while exporting. Hyperparameters come from the file's llama.* metadata,
// checked against (and completed from) the tensor shapes; ExportOverrides
// supplies what neither holds (e.g. n_heads of a safetensors import).

#ifndef TQM_EXPORT_H_
#define TQM_EXPORT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "tqm/reader.h"

namespace tqm {

// Values that override or complete the file's llama.* metadata; 0 = unset.
struct ExportOverrides {
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t seq_len = 0;  // default when the file has none: 2048
};

// The Llama hyperparameters of a .tqm file, as the exporters see them.
struct LlamaDims {
  int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0,
          vocab_size = 0, seq_len = 0;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool rope_hf = false;  // q/k rows in the Hugging Face layout
  bool tied = true;      // no lm_head.weight: the classifier is the embedding
  int64_t head_size() const { return n_heads ? dim / n_heads : 0; }
};

// Derives LlamaDims from `r`: the Hugging Face Llama tensors must all be
// present (embedding, final norm, and nine tensors per layer 0..n-1) with
// consistent shapes; metadata that contradicts the shapes is an error.
// FailedPrecondition naming what is missing or inconsistent.
absl::StatusOr<LlamaDims> DescribeLlama(const Reader& r,
                                        const ExportOverrides& overrides = {});

enum class SafetensorsExportType { kF32, kF16, kBF16, kU8 };

struct SafetensorsExportOptions {
  // kF32/kF16/kBF16: every tensor dequantized and converted (InvalidArgument
  // naming the tensor when a value is out of float16's range).
  // kU8: quantized tensors as U8 codes plus F32 companions NAME.scale and
  // NAME.zero (one per tensor or one per row); float32 tensors stay F32.
  SafetensorsExportType type = SafetensorsExportType::kF32;
};

// Writes every tensor of `r` under its own name; string and number metadata
// go to "__metadata__" (the tokenizer blob does not fit a string map), plus
// tqm.unpacked_as = f32|f16|bf16|u8.
absl::Status ExportSafetensors(const Reader& r, const std::string& out_path,
                               const SafetensorsExportOptions& options = {});

enum class GgufExportType { kF32, kF16, kQ8_0 };

struct GgufExportOptions {
  // Type of the 2-D weights. 1-D tensors (norms) are always F32. With kQ8_0
  // a matrix whose rows are not a multiple of 32 weights is written F16, as
  // llama-quantize does.
  GgufExportType type = GgufExportType::kF16;
  ExportOverrides overrides;
};

// Writes a GGUF v3 file with llama.cpp's tensor names and metadata keys
// (general.architecture=llama, llama.*, tokenizer.ggml.* built from the
// tokenizer.llama2c blob when present, else tokenizer.ggml.model=no_vocab).
// q/k are written in the Meta layout. The classifier is omitted when tied
// (llama.cpp then uses token_embd). Requires DescribeLlama to succeed.
absl::Status ExportGguf(const Reader& r, const std::string& out_path,
                        const GgufExportOptions& options = {});

// Writes a llama2.c v0 checkpoint: the 7 x int32 header (vocab_size negative
// when lm_head.weight is separate), the float32 arrays in run.c's order, two
// zero RoPE tables of seq_len * head_size / 2 floats, then the classifier
// when separate. q/k in the Meta layout. Header values must fit int32.
absl::Status ExportLlama2c(const Reader& r, const std::string& out_path,
                           const ExportOverrides& overrides = {});

// Writes the llama2.c tokenizer embedded in `r` (metadata tokenizer.llama2c,
// e.g. from tqm-pack --tokenizer or a GGUF vocabulary) to `out_path`, for
// run.c's -z option. NotFound when the file has none.
absl::Status ExportLlama2cTokenizer(const Reader& r, const std::string& out_path);

}  // namespace tqm

#endif  // TQM_EXPORT_H_
