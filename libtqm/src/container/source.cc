// Helpers shared by TensorSource implementations and their consumers.

#include "tqm/source.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "tqm/reader.h"

namespace tqm {

absl::Status TensorSource::ReadRaw(size_t i, std::string* out) {
  const SourceTensor& t = tensors()[i];
  if (t.kind != TensorKind::kFloat || t.dtype != format::kDTypeF32) {
    return absl::UnimplementedError(absl::StrFormat(
        "tensor '%s': this source cannot read its %s bytes verbatim", t.name,
        DTypeName(t.dtype)));
  }
  std::vector<float> f;
  if (absl::Status s = Read(i, &f); !s.ok()) return s;
  out->resize(f.size() * sizeof(float));
  if (!f.empty()) std::memcpy(out->data(), f.data(), out->size());
  return absl::OkStatus();
}

absl::Status TensorSource::ReadQuantized(size_t i, QuantizedTensor*) {
  return absl::UnimplementedError(absl::StrFormat(
      "tensor '%s': this source holds no quantized codes", tensors()[i].name));
}

size_t DTypeSize(format::SourceDType dtype) {
  switch (dtype) {
    case format::kDTypeF32:
    case format::kDTypeI32:
    case format::kDTypeU32:
      return 4;
    case format::kDTypeF16:
    case format::kDTypeBF16:
    case format::kDTypeI16:
    case format::kDTypeU16:
      return 2;
    case format::kDTypeF64:
    case format::kDTypeI64:
    case format::kDTypeU64:
      return 8;
    case format::kDTypeI8:
    case format::kDTypeU8:
    case format::kDTypeBool:
      return 1;
    case format::kDTypeQ8_0:
      return 0;
  }
  return 0;
}

const char* DTypeName(format::SourceDType dtype) {
  switch (dtype) {
    case format::kDTypeF32: return "F32";
    case format::kDTypeF16: return "F16";
    case format::kDTypeBF16: return "BF16";
    case format::kDTypeQ8_0: return "Q8_0";
    case format::kDTypeF64: return "F64";
    case format::kDTypeI8: return "I8";
    case format::kDTypeI16: return "I16";
    case format::kDTypeI32: return "I32";
    case format::kDTypeI64: return "I64";
    case format::kDTypeU8: return "U8";
    case format::kDTypeU16: return "U16";
    case format::kDTypeU32: return "U32";
    case format::kDTypeU64: return "U64";
    case format::kDTypeBool: return "BOOL";
  }
  return "?";
}

namespace {

// Parses a canonical decimal number (no sign, no leading zero) at name[i]
// that forms a whole name component: followed by '.' or the end. Returns
// the number or -1.
int32_t NumberComponent(const std::string& name, size_t i) {
  const size_t begin = i;
  int64_t n = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') {
    n = n * 10 + (name[i] - '0');
    if (n > INT32_MAX) return -1;
    ++i;
  }
  const size_t digits = i - begin;
  if (digits == 0) return -1;
  if (digits > 1 && name[begin] == '0') return -1;  // "layers.01" is not 1
  if (i != name.size() && name[i] != '.') return -1;
  return static_cast<int32_t>(n);
}

}  // namespace

int32_t LayerFromName(const std::string& name) {
  // A container component of one of the common schemes followed by the
  // layer number, the first such pair in the name. Components start at the
  // beginning of the name or after a '.', so prefixes carry over:
  // model.layers.N, model.decoder.layers.N, layers.N, transformer.h.N,
  // encoder.layer.N, bert.encoder.layer.N, blk.N (GGUF), blocks.N.
  static constexpr const char* kSchemes[] = {"layers.", "layer.", "h.", "blk.",
                                             "blocks.", "block."};
  for (size_t at = 0; at < name.size(); ++at) {
    if (at != 0 && name[at - 1] != '.') continue;
    for (const char* scheme : kSchemes) {
      const size_t len = std::strlen(scheme);
      if (name.compare(at, len, scheme) != 0) continue;
      const int32_t n = NumberComponent(name, at + len);
      if (n >= 0) return n;
    }
  }
  return -1;
}


void MemorySource::Add(std::string name, std::vector<uint64_t> dims,
                       std::vector<float> values, format::SourceDType dtype) {
  tensors_.push_back({std::move(name), dtype, std::move(dims), TensorKind::kFloat});
  values_.push_back(std::move(values));
  raw_.emplace_back();
  quantized_.emplace_back();
}

void MemorySource::AddRaw(std::string name, std::vector<uint64_t> dims,
                          format::SourceDType dtype, std::string bytes) {
  tensors_.push_back({std::move(name), dtype, std::move(dims), TensorKind::kRaw});
  values_.emplace_back();
  raw_.push_back(std::move(bytes));
  quantized_.emplace_back();
}

void MemorySource::AddQuantized(std::string name, std::vector<uint64_t> dims,
                                QuantizedTensor q) {
  tensors_.push_back(
      {std::move(name), format::kDTypeF32, std::move(dims), TensorKind::kQuantized});
  values_.emplace_back();
  raw_.emplace_back();
  quantized_.push_back(std::move(q));
}

absl::Status MemorySource::Read(size_t i, std::vector<float>* out) {
  if (i >= values_.size()) return absl::OutOfRangeError("no such tensor");
  const SourceTensor& t = tensors_[i];
  if (t.kind == TensorKind::kRaw) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s' (%s) is not a float tensor", t.name, DTypeName(t.dtype)));
  }
  if (t.kind == TensorKind::kQuantized) {
    const QuantizedTensor& q = quantized_[i];
    TensorInfo info;
    info.storage = q.storage;
    info.dims = t.dims;
    info.group_size = q.group_size;
    info.affine = q.params;
    info.numel = q.codes.size();
    out->resize(q.codes.size());
    DequantizeRange(info, 0, q.codes, absl::MakeSpan(*out));
    return absl::OkStatus();
  }
  *out = values_[i];
  return absl::OkStatus();
}

absl::Status MemorySource::ReadRaw(size_t i, std::string* out) {
  if (i >= values_.size()) return absl::OutOfRangeError("no such tensor");
  if (tensors_[i].kind == TensorKind::kRaw) {
    *out = raw_[i];
    return absl::OkStatus();
  }
  return TensorSource::ReadRaw(i, out);
}

absl::Status MemorySource::ReadQuantized(size_t i, QuantizedTensor* out) {
  if (i >= values_.size()) return absl::OutOfRangeError("no such tensor");
  if (tensors_[i].kind != TensorKind::kQuantized) return TensorSource::ReadQuantized(i, out);
  *out = quantized_[i];
  return absl::OkStatus();
}

}  // namespace tqm
