// Internals shared by the GGUF importer and the exporters (gguf.cc,
// export.cc): Llama tensor names in the Hugging Face and llama.cpp
// conventions (docs/LLAMA.md), the per-head q/k row permutation
// between the Hugging Face and Meta rotary layouts, float16/bfloat16
// rounding, and reading a tensor of a .tqm file ready for export.

#ifndef TQM_SRC_LLAMA_NAMES_H_
#define TQM_SRC_LLAMA_NAMES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "tqm/export.h"
#include "tqm/reader.h"

namespace tqm {
namespace internal {

// "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight",
// "token_embd.weight" -> "model.embed_tokens.weight", ... (also ".bias").
// Returns an empty string for a name outside the table.
std::string GgufToHfName(const std::string& gguf_name);
// The inverse; empty for a name outside the table.
std::string HfToGgufName(const std::string& hf_name);

// True for model.layers.N.self_attn.q_proj.weight (and k_proj).
bool IsQProj(const std::string& hf_name);
bool IsKProj(const std::string& hf_name);

// Permutes the rows of a [rows, cols] matrix made of heads of `head_size`
// rows from the Hugging Face rotary layout to the Meta one (for head h, Meta
// row 2i is HF row i and Meta row 2i+1 is HF row i + head_size/2), or back.
void HfToMetaRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size);
void MetaToHfRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size);

// IEEE binary32 -> binary16 / bfloat16, round to nearest even; overflow
// gives infinity, NaN stays NaN (quiet).
uint16_t FloatToHalf(float f);
uint16_t FloatToBFloat16(float f);

// Appends the Q8_0 blocks of x[0..n) (n a multiple of 32) to `out`, exactly
// as ggml's quantize_row_q8_0_ref: d = max|x| / 127 stored as float16,
// q = roundf(x / d) with the unrounded d.
void QuantizeQ8_0(const float* x, size_t n, std::string* out);

// Reads tensor `t` of `r` as float32 (dequantized) into `out`, with q/k rows
// converted to the Meta layout when `dims.rope_hf`.
absl::Status ReadMetaLayout(const Reader& r, size_t t, const LlamaDims& dims,
                            std::vector<float>* out);

}  // namespace internal
}  // namespace tqm

#endif  // TQM_SRC_LLAMA_NAMES_H_
