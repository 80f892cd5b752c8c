// Importers: model files in other formats opened as a TensorSource.
// Tensor names follow the Hugging Face Llama convention
// ("model.layers.3.self_attn.q_proj.weight"); see docs/LLAMA.md.

#ifndef TQM_IMPORT_H_
#define TQM_IMPORT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tqm/source.h"

namespace tqm {

// Opens a llama2.c v0 checkpoint (7 x int32 header, then float32 arrays).
// Stacked per-layer arrays are split into one tensor per layer; the unused
// RoPE tables are skipped; a separate classifier (negative vocab_size) becomes
// lm_head.weight. Metadata: llama.* hyperparameters, llama.rope_layout=meta,
// llama.tied_classifier, source.*. Errors name the file and the offset.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenLlama2c(const std::string& path);

// Opens a safetensors file. Strict: header length, JSON, dtypes, shapes and
// data offsets are validated before any tensor is read; the data ranges must
// tile the data area exactly. F32, F16 and BF16 tensors of rank >= 1 with
// elements are TensorKind::kFloat; F64, integer and BOOL tensors, 0-d and
// empty ones are kRaw (ReadRaw gives their bytes; a BOOL byte other than 0
// or 1 is DataLoss). A U8 tensor NAME with F32 tensors NAME.scale and
// NAME.zero (what tqm-unpack --dtype u8 writes: one pair, or one per row)
// is one kQuantized tensor; the companions are not listed. F8 dtypes are
// UnimplementedError naming the tensor.
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
// (Q8_0 dequantized to float32; the source dtype is recorded), and I8, I16,
// I32, I64 and F64 tensors kept verbatim (TensorKind::kRaw). Tensor names
// are mapped from llama.cpp's to Hugging Face's (other names are kept); q/k
// rows are kept as stored and llama.rope_layout is "meta". Metadata: the
// llama.* hyperparameters, tokenizer.llama2c built from the SentencePiece
// vocabulary, every other scalar key as "gguf.<key>". The whole header is
// validated on open (see ReadGgufInfo in gguf.h); tensors are read on demand.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenGguf(const std::string& path);

// Opens `path` by its contents: GGUF, safetensors, a safetensors index
// (JSON), else llama2.c when its header is plausible and implies exactly the
// file's size. An extension that names a format (.safetensors, .gguf, .tqm)
// must match the contents: otherwise DataLoss in that format's terms. A .tqm
// file is InvalidArgument (it is packed already); contents of no known
// format are InvalidArgument listing each format tried and why it failed.
// A directory is a Hugging Face model: its model.safetensors.index.json
// (and shards), else its model.safetensors, with the hyperparameters of
// config.json beside them (checked against the tensor shapes); a
// model.safetensors file opened directly uses its config.json too.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenModel(const std::string& path);

// Checks what a runtime would otherwise find wrong only when loading the
// packed model. `extra_metadata` overrides `src.metadata()` key by key (the
// tokenizer a packer adds). Checks:
//  - tokenizer.llama2c, when present, parses as a llama2.c tokenizer to its
//    last byte and holds as many tokens as the model's vocabulary
//    (llama.vocab_size, else the rows of model.embed_tokens.weight);
//  - llama.dim, llama.vocab_size equal the columns and rows of
//    model.embed_tokens.weight; llama.hidden_dim the rows of every
//    mlp.gate_proj.weight; llama.n_layers the number of layers present;
//    llama.n_heads divides llama.dim, llama.n_kv_heads divides llama.n_heads
//    and gives every self_attn.k_proj.weight its row count.
// Checks whose inputs are absent are skipped. `tokenizer_name` names the
// tokenizer in messages (e.g. its file name; empty: "tokenizer.llama2c").
// InvalidArgument naming both values, DataLoss for a tokenizer that does
// not parse.
absl::Status CheckModel(const TensorSource& src,
                        const std::vector<MetaEntry>& extra_metadata,
                        const std::string& tokenizer_name = "tokenizer.llama2c");

}  // namespace tqm

#endif  // TQM_IMPORT_H_
