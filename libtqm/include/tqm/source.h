// The import side of the data path: a TensorSource yields named float32
// tensors one at a time, so that a writer never holds more than a few tensors
// in memory. Importers (llama2c.h, safetensors.h, ...) implement it.

#ifndef TQM_SOURCE_H_
#define TQM_SOURCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tqm/format.h"
#include "tqm/metadata.h"

namespace tqm {

struct SourceTensor {
  std::string name;               // Hugging Face Llama convention
  format::SourceDType dtype = format::kDTypeF32;  // dtype in the source file
  std::vector<uint64_t> dims;     // row-major, [out_features, in_features]
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // The tensors, in the order a writer should store them.
  virtual const std::vector<SourceTensor>& tensors() const = 0;

  // Metadata describing the model (architecture, hyperparameters, source).
  virtual const std::vector<MetaEntry>& metadata() const = 0;

  // Reads tensor `i` converted to float32 into `out` (resized to its element
  // count). May be called more than once for the same tensor, in any order.
  virtual absl::Status Read(size_t i, std::vector<float>* out) = 0;
};

// Returns the layer number encoded in a Hugging Face style name
// ("model.layers.12.mlp.up_proj.weight" -> 12), or -1 when there is none.
int32_t LayerFromName(const std::string& name);

}  // namespace tqm

#endif  // TQM_SOURCE_H_
