// The export side of the data path: a .tqm file written back out as a
// safetensors file, a GGUF v3 file that llama.cpp loads, or a llama2.c v0
// checkpoint that karpathy's run.c runs. Each exporter streams: it decodes
// one tensor at a time from the Reader and writes atomically (temporary file
// renamed into place only when complete; a failed export leaves `out_path`
// as it was).
//
// Llama layouts (docs/LLAMA.md): GGUF and llama2.c want the
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
// consistent shapes and a floating-point type (F32 or quantized storage, or
// RAW F16/BF16/F32/F64); metadata that contradicts the shapes is an error.
// With `allow_extra` false, any other tensor is an error as well (GGUF and
// llama2.c have no place for it). FailedPrecondition naming what is missing
// or inconsistent.
absl::StatusOr<LlamaDims> DescribeLlama(const Reader& r,
                                        const ExportOverrides& overrides = {},
                                        bool allow_extra = false);

enum class SafetensorsExportType { kF32, kF16, kBF16, kU8 };

struct SafetensorsExportOptions {
  // kF32/kF16/kBF16: every F32-storage and quantized tensor dequantized and
  // converted (InvalidArgument naming the tensor when a value is out of
  // float16's range).
  // kU8: quantized tensors as U8 codes plus F32 companions NAME.scale and
  // NAME.zero: shape [1] for one pair per tensor, [rows] for one per row,
  // [rows, groups_per_row] for group storage (rows = the product of every
  // dimension but the last, groups_per_row = ceil(last / group_size)).
  // float32 tensors stay F32.
  // Whatever the type, RAW-storage tensors are written with their own dtype
  // (I64, BOOL, F64, F16, ...) and their bytes verbatim, so they come back
  // bit-exact; 0-d tensors get shape [] and empty ones their zero dimension.
  SafetensorsExportType type = SafetensorsExportType::kF32;
  // Threads (0: all cores). Above 1, one of them writes the previous tensor
  // while the others decode and convert the chunks of the next in parallel;
  // the bytes written and the first error reported do not depend on it.
  unsigned threads = 1;
};

// Writes every tensor of `r` under its own name; string and number metadata
// go to "__metadata__" (the tokenizer blob does not fit a string map), plus
// tqm.unpacked_as = f32|f16|bf16|u8. With kU8, each quantized tensor whose
// codes are narrower than 8 bits adds "tqm.bits.NAME" (decimal, 1..7: every
// code is below 2^bits), and each group-storage tensor adds
// "tqm.group_size.NAME" (decimal elements per group along the last
// dimension), so that the codes and pairs can be read back without guessing.
absl::Status ExportSafetensors(const Reader& r, const std::string& out_path,
                               const SafetensorsExportOptions& options = {});

struct HfExportOptions {
  // kF32, kF16 or kBF16 (the config's torch_dtype); kU8 is InvalidArgument
  // (transformers cannot load codes). RAW tensors keep their own dtype.
  SafetensorsExportType type = SafetensorsExportType::kF32;
  ExportOverrides overrides;
  unsigned threads = 1;  // as SafetensorsExportOptions::threads
};

// Writes a Hugging Face Llama model directory `dir`:
//  - config.json: architectures ["LlamaForCausalLM"], model_type "llama",
//    hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
//    num_key_value_heads, vocab_size, max_position_embeddings (seq_len),
//    rms_norm_eps, rope_theta, tie_word_embeddings, hidden_act "silu",
//    torch_dtype, from DescribeLlama;
//  - model.safetensors with {"format": "pt"} as its __metadata__, every
//    tensor under its Hugging Face name (the names tqm stores), q_proj and
//    k_proj rows in the Hugging Face rotary layout (permuted per head when
//    the file says llama.rope_layout=meta, e.g. a llama2.c checkpoint),
//    converted as SafetensorsExportOptions describes. Tensors outside the
//    Llama layout (buffers, integer tensors) are written too, as they are.
// No tokenizer files are written. `dir` is created when missing; an existing
// `dir` must be an empty directory (FailedPrecondition otherwise: nothing in
// it is replaced). Both files appear together or not at all; on failure a
// directory created by the call is removed again.
absl::Status ExportHuggingFace(const Reader& r, const std::string& dir,
                               const HfExportOptions& options = {});

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
