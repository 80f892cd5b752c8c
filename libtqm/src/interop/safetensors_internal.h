// Internals of the safetensors importer shared with the sharded-model
// importer (import.cc): one file opened without deriving metadata, and the
// metadata derivation run over the tensors of every shard at once.

#ifndef TQM_SRC_SAFETENSORS_INTERNAL_H_
#define TQM_SRC_SAFETENSORS_INTERNAL_H_

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "tqm/metadata.h"
#include "tqm/source.h"

namespace tqm {
namespace internal {

struct SafetensorsShard {
  // Validated exactly as OpenSafetensors does; its metadata() is empty.
  std::unique_ptr<TensorSource> source;
  // The file's "__metadata__" string pairs, in file order.
  std::vector<std::pair<std::string, std::string>> raw_metadata;
  // Every tensor name in the header, the .scale and .zero tensors that
  // became part of a quantized tensor included (what an index lists).
  std::vector<std::string> header_names;
};

absl::StatusOr<SafetensorsShard> OpenSafetensorsShard(const std::string& path);

// The metadata OpenSafetensors gives a file holding `tensors` with the
// "__metadata__" pairs `raw`; `path` names the model in messages and in
// source.file.
absl::StatusOr<std::vector<MetaEntry>> SafetensorsMetadata(
    const std::string& path, const std::vector<SourceTensor>& tensors,
    const std::vector<std::pair<std::string, std::string>>& raw);

// The llama.* quantities that every relevant tensor's shape agrees on
// (Hugging Face Llama names): llama.dim, llama.hidden_dim, llama.vocab_size,
// llama.n_layers (layers 0..n-1 all present), llama.tied_classifier.
std::map<std::string, MetaValue> DeriveLlamaFromShapes(
    const std::vector<SourceTensor>& tensors);

// OpenSafetensors, with the Hugging Face config.json at `config_path`
// applied to the metadata (ApplyHfConfig) unless `config_path` is empty.
// The same over an already open input (a file or bytes in memory).
absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsInputWithConfig(
    std::unique_ptr<InputFile> file, const std::string& config_path);

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsWithConfig(
    const std::string& path, const std::string& config_path);

}  // namespace internal
}  // namespace tqm

#endif  // TQM_SRC_SAFETENSORS_INTERNAL_H_
