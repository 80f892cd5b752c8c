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

// Opens a sharded safetensors model through its index
// (model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor:
// shard file}}) as one source. Shards are plain file names in the index's
// directory; every shard is validated as OpenSafetensors does, and the
// weight map must list exactly the tensors each shard holds. Tensors come
// shard by shard (shards in name order). Metadata is derived over all
// shards; a config.json beside the index supplies the Hugging Face
// hyperparameters shapes cannot give (heads, context length, eps, theta).
absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsIndex(
    const std::string& path);

// Opens a GGUF v2/v3 file (llama.cpp) with F32, F16, BF16 and Q8_0 tensors
// (Q8_0 dequantized to float32; the source dtype is recorded). Tensor names
// are mapped from llama.cpp's to Hugging Face's (other names are kept); q/k
// rows are kept as stored and llama.rope_layout is "meta". Metadata: the
// llama.* hyperparameters, tokenizer.llama2c built from the SentencePiece
// vocabulary, every other scalar key as "gguf.<key>". The whole header is
// validated on open (see ReadGgufInfo in gguf.h); tensors are read on demand.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenGguf(const std::string& path);

// Opens `path` by sniffing its contents: GGUF, safetensors, a safetensors
// index (JSON), else llama2.c. A directory opens its
// model.safetensors.index.json, else its model.safetensors.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenModel(const std::string& path);

}  // namespace tqm

#endif  // TQM_IMPORT_H_
