// The import side of the data path: a TensorSource yields named tensors one
// at a time, so that a writer never holds more than a few tensors in memory.
// Importers (import.h) implement it.
//
// A tensor comes in one of three kinds:
//  - kFloat: floating-point weights the writer may quantize; Read() gives
//    float32 values, ReadRaw() the source bytes (F32, F16, BF16, F64).
//  - kRaw: a tensor the writer must store verbatim (integers, bool, 0-d
//    scalars, empty tensors, F64): only ReadRaw().
//  - kQuantized: codes and affine parameters that are already quantized
//    (a tqm-unpack --dtype u8 export, GGUF Q8_0): ReadQuantized(), stored as
//    they are, without re-quantizing. Read() dequantizes.

#ifndef TQM_SOURCE_H_
#define TQM_SOURCE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "tqm/format.h"
#include "tqm/metadata.h"
#include "tqm/quantize.h"

namespace tqm {

enum class TensorKind { kFloat, kRaw, kQuantized };

struct SourceTensor {
  std::string name;               // Hugging Face convention
  format::SourceDType dtype = format::kDTypeF32;  // dtype in the source file
  // Row-major, [out_features, in_features]. May be empty (a 0-d scalar) and
  // may hold zeros (an empty tensor) for kRaw tensors.
  std::vector<uint64_t> dims;
  TensorKind kind = TensorKind::kFloat;
};

// Codes and parameters of an already quantized tensor (TensorKind::
// kQuantized), in the file's storage terms (spec/FORMAT.md "Tensor data").
struct QuantizedTensor {
  format::Storage storage = format::kStorageU8Tensor;
  uint8_t bits = 8;           // codes are < 2^bits
  uint32_t group_size = 0;    // kStorageU8Group only: elements per group
  std::vector<uint8_t> codes;  // numel bytes, row-major
  std::vector<Affine> params;  // 1, dims[0] or one per group
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
  // kRaw tensors: InvalidArgument.
  virtual absl::Status Read(size_t i, std::vector<float>* out) = 0;

  // Reads the bytes of tensor `i` exactly as the source holds them
  // (little-endian elements of `dtype`, row-major) into `out`. kFloat and
  // kRaw tensors. The default implementation serves F32 tensors through
  // Read() and fails for every other dtype.
  virtual absl::Status ReadRaw(size_t i, std::string* out);

  // Reads an already quantized tensor (kQuantized). The default fails.
  virtual absl::Status ReadQuantized(size_t i, QuantizedTensor* out);
};

// Bytes per element of `dtype` in the source (and in RAW storage); 0 for
// block-quantized dtypes (Q8_0) and unknown values.
size_t DTypeSize(format::SourceDType dtype);

// The dtype's name as safetensors spells it ("F32", "I64", "BOOL", ...), or
// "Q8_0"; "?" for unknown values.
const char* DTypeName(format::SourceDType dtype);

// Returns the layer number encoded in a tensor name, or -1 when there is
// none. Recognised: model.layers.N., model.decoder.layers.N.,
// transformer.h.N., encoder.layer.N., layers.N., blk.N. (and any of them
// behind further prefixes such as "model.language_model.").
int32_t LayerFromName(const std::string& name);

// A TensorSource over tensors held in memory (tests, generated models).
class MemorySource : public TensorSource {
 public:
  void Add(std::string name, std::vector<uint64_t> dims, std::vector<float> values,
           format::SourceDType dtype = format::kDTypeF32);
  // A tensor stored verbatim: `bytes` are numel elements of `dtype`.
  void AddRaw(std::string name, std::vector<uint64_t> dims, format::SourceDType dtype,
              std::string bytes);
  // An already quantized tensor (codes and parameters kept as they are).
  void AddQuantized(std::string name, std::vector<uint64_t> dims, QuantizedTensor q);
  void AddMeta(MetaEntry entry) { meta_.push_back(std::move(entry)); }

  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<MetaEntry>& metadata() const override { return meta_; }
  absl::Status Read(size_t i, std::vector<float>* out) override;
  absl::Status ReadRaw(size_t i, std::string* out) override;
  absl::Status ReadQuantized(size_t i, QuantizedTensor* out) override;

 private:
  std::vector<SourceTensor> tensors_;
  std::vector<std::vector<float>> values_;
  std::vector<std::string> raw_;
  std::vector<QuantizedTensor> quantized_;
  std::vector<MetaEntry> meta_;
};

}  // namespace tqm

#endif  // TQM_SOURCE_H_
