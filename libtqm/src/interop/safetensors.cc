// safetensors reader (OpenSafetensors) and streaming writer.
//
// File layout (https://github.com/huggingface/safetensors): u64 little-endian
// header length N, N bytes of JSON object, then the data area. Each JSON
// member other than "__metadata__" describes one tensor: dtype, shape and
// data_offsets [begin, end) relative to the data area. The reader validates
// the whole header before any tensor is read: known dtype, element counts
// without overflow, byte ranges of exactly numel * dtype size that tile the
// data area from 0 to its end with no gap or overlap (as the reference
// implementation requires). Weights are read with pread on demand.
//
// Nothing is dropped: float weights are TensorKind::kFloat; F64, integer,
// BOOL, 0-d and empty tensors are kRaw (bytes verbatim); the U8 + .scale +
// .zero triples of tqm-unpack --dtype u8 are kQuantized, so that re-packing
// them stores the same codes instead of quantizing dequantized values.

#include "tqm/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/atomic_file.h"
#include "base/json.h"
#include "interop/import_internal.h"
#include "interop/llama.h"
#include "interop/safetensors_internal.h"
#include "tqm/format.h"
#include "tqm/import.h"
#include "tqm/metadata.h"
#include "tqm/quantize.h"
#include "tqm/source.h"
#include "tqm/status.h"

namespace tqm {
namespace {

using internal::CheckedAdd;
using internal::CheckedMul;

// The reference implementation's limit on the header length.
constexpr uint64_t kMaxHeaderSize = 100000000;
constexpr char kMetadataKey[] = "__metadata__";
// Prefix of the keys under which "__metadata__" strings are kept verbatim.
constexpr char kSourceMetaPrefix[] = "source.meta.";

struct DTypeInfo {
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
    {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
    {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
};

// A tensor as described by the header, before sorting.
struct Entry {
  SourceTensor tensor;
  size_t dtype_size = 0;
  uint64_t numel = 0;
  uint64_t begin = 0;  // relative to the data area
  uint64_t end = 0;
  // TensorKind::kQuantized (the U8 codes of a tqm-unpack --dtype u8 export):
  // the storage and the affine parameters from NAME.scale and NAME.zero.
  format::Storage storage = format::kStorageU8Tensor;
  std::vector<Affine> params;
};

class SafetensorsSource : public TensorSource {
 public:
  SafetensorsSource(std::unique_ptr<internal::InputFile> file, uint64_t data_start,
                    std::vector<Entry> entries, std::vector<MetaEntry> metadata)
      : file_(std::move(file)),
        data_start_(data_start),
        entries_(std::move(entries)),
        metadata_(std::move(metadata)) {
    tensors_.reserve(entries_.size());
    for (const Entry& e : entries_) tensors_.push_back(e.tensor);
  }

  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<MetaEntry>& metadata() const override { return metadata_; }
  void set_metadata(std::vector<MetaEntry> m) { metadata_ = std::move(m); }

  absl::Status Read(size_t i, std::vector<float>* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    const Entry& e = entries_[i];
    if (e.tensor.kind == TensorKind::kRaw) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor %s (%s, %d elements) is kept verbatim and has no float32 values; "
          "read it with ReadRaw",
          file_->path(), e.tensor.name, DTypeName(e.tensor.dtype), e.numel));
    }
    TQM_RETURN_IF_ERROR(CheckFits(e, out->max_size()));
    const size_t n = static_cast<size_t>(e.numel);
    out->resize(n);
    const uint64_t offset = data_start_ + e.begin;
    absl::Status s;
    if (e.tensor.kind == TensorKind::kQuantized) {
      // Exactly tqm::DequantizeAffine over each parameter's span of codes.
      std::vector<uint8_t> codes(n);
      s = file_->ReadAt(offset, codes.data(), n);
      if (s.ok()) {
        const size_t span = n / e.params.size();
        for (size_t p = 0; p < e.params.size(); ++p) {
          DequantizeAffine(absl::MakeConstSpan(codes.data() + p * span, span),
                           e.params[p], absl::MakeSpan(out->data() + p * span, span));
        }
      }
    } else if (e.tensor.dtype == format::kDTypeF32) {
      s = file_->ReadAt(offset, out->data(), n * 4);
      if (s.ok()) internal::FixFloat32Endianness(out->data(), n);
    } else {
      // F16 / BF16: convert through a bounded staging buffer.
      const bool bf16 = e.tensor.dtype == format::kDTypeBF16;
      constexpr size_t kBatch = 1 << 16;
      std::vector<uint8_t> buf(std::min(n, kBatch) * 2);
      for (size_t done = 0; done < n && s.ok();) {
        const size_t m = std::min(n - done, kBatch);
        s = file_->ReadAt(offset + done * 2, buf.data(), m * 2);
        if (!s.ok()) break;
        float* dst = out->data() + done;
        for (size_t j = 0; j < m; ++j) {
          const uint16_t bits = LoadLE16(buf.data() + 2 * j);
          dst[j] = bf16 ? internal::BFloat16ToFloat(bits) : internal::HalfToFloat(bits);
        }
        done += m;
      }
    }
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("tensor %s: %s", e.tensor.name, s.message()));
    }
    return absl::OkStatus();
  }

  absl::Status ReadRaw(size_t i, std::string* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    const Entry& e = entries_[i];
    if (e.tensor.kind == TensorKind::kQuantized) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor %s is quantized (U8 codes with %s.scale and %s.zero); read it "
          "with ReadQuantized",
          file_->path(), e.tensor.name, e.tensor.name, e.tensor.name));
    }
    // The byte size was checked against the data area on open.
    const uint64_t bytes = e.end - e.begin;
    if (bytes > out->max_size()) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: tensor %s: %d bytes do not fit in memory", file_->path(),
                          e.tensor.name, bytes));
    }
    out->resize(static_cast<size_t>(bytes));
    absl::Status s = file_->ReadAt(data_start_ + e.begin, out->data(), out->size());
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("tensor %s: %s", e.tensor.name, s.message()));
    }
    if (e.tensor.dtype == format::kDTypeBool) {
      // safetensors does not say what a BOOL byte other than 0 or 1 means,
      // and .tqm RAW storage allows only those two: refuse to guess.
      for (size_t j = 0; j < out->size(); ++j) {
        const uint8_t b = static_cast<uint8_t>((*out)[j]);
        if (b > 1) {
          return absl::DataLossError(absl::StrFormat(
              "%s: tensor %s: BOOL element %d at file offset %d is %d, not 0 or 1",
              file_->path(), e.tensor.name, j, data_start_ + e.begin + j, b));
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status ReadQuantized(size_t i, QuantizedTensor* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    const Entry& e = entries_[i];
    if (e.tensor.kind != TensorKind::kQuantized) {
      return TensorSource::ReadQuantized(i, out);
    }
    TQM_RETURN_IF_ERROR(CheckFits(e, out->codes.max_size()));
    out->storage = e.storage;
    out->bits = 8;
    out->group_size = 0;
    out->params = e.params;
    out->codes.resize(static_cast<size_t>(e.numel));
    absl::Status s =
        file_->ReadAt(data_start_ + e.begin, out->codes.data(), out->codes.size());
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("tensor %s: %s", e.tensor.name, s.message()));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status CheckIndex(size_t i) const {
    if (i >= entries_.size()) {
      return absl::OutOfRangeError(
          absl::StrFormat("%s: tensor index %d out of range (%d tensors)", file_->path(),
                          i, entries_.size()));
    }
    return absl::OkStatus();
  }
  absl::Status CheckFits(const Entry& e, size_t max_size) const {
    if (e.numel > max_size) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: tensor %s: %d elements do not fit in memory",
                          file_->path(), e.tensor.name, e.numel));
    }
    return absl::OkStatus();
  }

  std::unique_ptr<internal::InputFile> file_;
  uint64_t data_start_;
  std::vector<Entry> entries_;
  std::vector<SourceTensor> tensors_;
  std::vector<MetaEntry> metadata_;
};

// The tqm source dtype of a safetensors dtype name; false for the dtypes
// tqm cannot hold (F8_E4M3, F8_E5M2) and for unknown names.
bool SourceDTypeOf(const std::string& dt, format::SourceDType* out) {
  static constexpr std::pair<const char*, format::SourceDType> kMap[] = {
      {"F32", format::kDTypeF32},   {"F16", format::kDTypeF16},
      {"BF16", format::kDTypeBF16}, {"F64", format::kDTypeF64},
      {"I8", format::kDTypeI8},     {"I16", format::kDTypeI16},
      {"I32", format::kDTypeI32},   {"I64", format::kDTypeI64},
      {"U8", format::kDTypeU8},     {"U16", format::kDTypeU16},
      {"U32", format::kDTypeU32},   {"U64", format::kDTypeU64},
      {"BOOL", format::kDTypeBool},
  };
  for (const auto& [name, dtype] : kMap) {
    if (dt == name) {
      *out = dtype;
      return true;
    }
  }
  return false;
}

absl::Status Corrupt(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrFormat("%s: safetensors header: %s", path, what));
}

std::string Quoted(const std::string& name) { return json::Quote(name); }

// Parses one tensor description of the header.
absl::Status ParseTensor(const std::string& path, const std::string& name,
                         const json::Value& v, uint64_t data_size, Entry* out) {
  const std::string where = "tensor " + Quoted(name);
  if (name.empty() || name.size() > format::kMaxNameLength) {
    return Corrupt(path, absl::StrFormat("%s: name length %d is not in 1..%d", where,
                                         name.size(), format::kMaxNameLength));
  }
  if (!v.is_object()) {
    return Corrupt(path, absl::StrFormat("%s: expected an object, got %s", where,
                                         json::Value::TypeName(v.type())));
  }
  for (const json::Member& m : v.object()) {
    if (m.key != "dtype" && m.key != "shape" && m.key != "data_offsets") {
      return Corrupt(path, absl::StrFormat("%s: unknown field %s", where, Quoted(m.key)));
    }
  }
  const json::Value* dtype = v.Find("dtype");
  const json::Value* shape = v.Find("shape");
  const json::Value* offsets = v.Find("data_offsets");
  if (dtype == nullptr || shape == nullptr || offsets == nullptr) {
    return Corrupt(path, absl::StrFormat("%s: missing field \"%s\"", where,
                                         dtype == nullptr   ? "dtype"
                                         : shape == nullptr ? "shape"
                                                            : "data_offsets"));
  }
  if (!dtype->is_string()) return Corrupt(path, where + ": dtype is not a string");
  const std::string& dt = dtype->as_string();
  out->dtype_size = SafetensorsDTypeSize(dt);
  if (!SourceDTypeOf(dt, &out->tensor.dtype)) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: %s: dtype %s is not supported (F32, F16, BF16, F64, I8, I16, I32, I64, U8, "
        "U16, U32, U64 and BOOL are)%s",
        path, where, Quoted(dt),
        out->dtype_size == 0 ? "; it is not a safetensors dtype either" : ""));
  }

  if (!shape->is_array()) return Corrupt(path, where + ": shape is not an array");
  if (shape->array().size() > format::kMaxDims) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: safetensors header: %s: rank %d exceeds the limit of %d",
                        path, where, shape->array().size(), format::kMaxDims));
  }
  uint64_t numel = 1;
  for (size_t k = 0; k < shape->array().size(); ++k) {
    const json::Value& d = shape->array()[k];
    if (!d.is_int() || d.as_int() < 0) {
      return Corrupt(
          path, absl::StrFormat("%s: shape[%d] is not a non-negative integer", where, k));
    }
    out->tensor.dims.push_back(static_cast<uint64_t>(d.as_int()));
    if (!CheckedMul(numel, static_cast<uint64_t>(d.as_int()), &numel)) {
      return Corrupt(path, where + ": element count overflows 64 bits");
    }
  }
  uint64_t bytes;
  if (!CheckedMul(numel, out->dtype_size, &bytes)) {
    return Corrupt(path, where + ": byte size overflows 64 bits");
  }
  out->numel = numel;
  // Only non-empty floating-point tensors of rank >= 1 are weights a writer
  // may quantize; everything else is kept byte for byte.
  const bool float_dtype = out->tensor.dtype == format::kDTypeF32 ||
                           out->tensor.dtype == format::kDTypeF16 ||
                           out->tensor.dtype == format::kDTypeBF16;
  out->tensor.kind = float_dtype && numel > 0 && !out->tensor.dims.empty()
                         ? TensorKind::kFloat
                         : TensorKind::kRaw;

  if (!offsets->is_array() || offsets->array().size() != 2) {
    return Corrupt(path, where + ": data_offsets is not an array of two integers");
  }
  const json::Value& b = offsets->array()[0];
  const json::Value& e = offsets->array()[1];
  if (!b.is_int() || !e.is_int() || b.as_int() < 0 || e.as_int() < 0) {
    return Corrupt(path, where + ": data_offsets are not non-negative integers");
  }
  out->begin = static_cast<uint64_t>(b.as_int());
  out->end = static_cast<uint64_t>(e.as_int());
  if (out->begin > out->end) {
    return Corrupt(
        path, absl::StrFormat("%s: data_offsets [%d, %d] end before they begin", where,
                              out->begin, out->end));
  }
  if (out->end > data_size) {
    return Corrupt(
        path,
        absl::StrFormat("%s: data_offsets [%d, %d] lie past the end of the data area "
                        "(%d bytes)",
                        where, out->begin, out->end, data_size));
  }
  if (out->end - out->begin != bytes) {
    return Corrupt(
        path,
        absl::StrFormat("%s: data_offsets [%d, %d] hold %d bytes but dtype %s and "
                        "shape give %d",
                        where, out->begin, out->end, out->end - out->begin, dt, bytes));
  }
  return absl::OkStatus();
}

// Typed llama.* / general.* keys a writer (e.g. tqm-unpack) may put in
// "__metadata__" as strings: the architecture, the hyperparameters of
// docs/LLAMA.md's table, the rotary layout and the tied classifier.
enum class Kind { kInt, kFloat, kString };
struct KnownKey {
  const char* key;
  Kind kind;
};
std::vector<KnownKey> KnownKeys() {
  std::vector<KnownKey> keys = {{meta_keys::kArchitecture, Kind::kString}};
  for (const llama::HparamKeys& k : llama::HparamTable()) {
    keys.push_back({k.tqm, k.is_float ? Kind::kFloat : Kind::kInt});
  }
  keys.push_back({meta_keys::kRopeLayout, Kind::kString});
  keys.push_back({meta_keys::kTiedClassifier, Kind::kInt});
  return keys;
}

// Collects the values a quantity takes across tensors; the quantity is
// known only when they all agree.
struct Candidates {
  std::set<uint64_t> values;
  void Add(uint64_t v) { values.insert(v); }
  bool Unambiguous() const { return values.size() == 1; }
  uint64_t value() const { return *values.begin(); }
};

// Derives llama hyperparameters from Hugging Face Llama tensor names and
// shapes. Only quantities every relevant tensor agrees on are returned.
std::map<std::string, MetaValue> DeriveLlama(const std::vector<SourceTensor>& tensors) {
  Candidates dim, vocab, hidden;
  std::set<int64_t> layers;
  bool embed = false, lm_head = false;
  for (const SourceTensor& e : tensors) {
    const std::string& n = e.name;
    const std::vector<uint64_t>& d = e.dims;
    const int32_t layer = LayerFromName(n);
    if (layer >= 0) layers.insert(layer);
    using llama::Tensor;
    auto ends_with = [&](Tensor t) { return llama::EndsWithLayerSuffix(n, t); };
    if (n == llama::HfName(Tensor::kEmbed) && d.size() == 2) {
      embed = true;
      vocab.Add(d[0]);
      dim.Add(d[1]);
    } else if (n == llama::HfName(Tensor::kClassifier) && d.size() == 2) {
      lm_head = true;
      vocab.Add(d[0]);
      dim.Add(d[1]);
    } else if (n == llama::HfName(Tensor::kFinalNorm) && d.size() == 1) {
      dim.Add(d[0]);
    } else if (layer >= 0) {
      if ((ends_with(Tensor::kAttNorm) || ends_with(Tensor::kFfnNorm)) && d.size() == 1) {
        dim.Add(d[0]);
      } else if (ends_with(Tensor::kWq) && d.size() == 2) {
        dim.Add(d[1]);
      } else if ((ends_with(Tensor::kWk) || ends_with(Tensor::kWv)) && d.size() == 2) {
        dim.Add(d[1]);
      } else if (ends_with(Tensor::kWo) && d.size() == 2) {
        dim.Add(d[0]);
      } else if ((ends_with(Tensor::kGate) || ends_with(Tensor::kUp)) && d.size() == 2) {
        hidden.Add(d[0]);
        dim.Add(d[1]);
      } else if (ends_with(Tensor::kDown) && d.size() == 2) {
        dim.Add(d[0]);
        hidden.Add(d[1]);
      }
    }
  }
  std::map<std::string, MetaValue> out;
  auto put = [&](const char* key, const Candidates& c) {
    if (c.Unambiguous() && c.value() > 0 &&
        c.value() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      out[key] = MetaValue::Int(static_cast<int64_t>(c.value()));
    }
  };
  put(meta_keys::kDim, dim);
  put(meta_keys::kHiddenDim, hidden);
  put(meta_keys::kVocabSize, vocab);
  // Layers 0..n-1, each present: the set's largest element is then n-1.
  if (!layers.empty() && *layers.rbegin() + 1 == static_cast<int64_t>(layers.size())) {
    out[meta_keys::kLayers] = MetaValue::Int(static_cast<int64_t>(layers.size()));
  }
  if (embed) out[meta_keys::kTiedClassifier] = MetaValue::Int(lm_head ? 0 : 1);
  return out;
}

bool SameValue(const MetaValue& a, const MetaValue& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case format::kMetaInt64:
      return a.int64 == b.int64;
    case format::kMetaFloat64:
      return a.float64 == b.float64;
    default:
      return a.bytes == b.bytes;
  }
}

std::string ValueText(const MetaValue& v) {
  switch (v.type) {
    case format::kMetaInt64:
      return absl::StrCat(v.int64);
    case format::kMetaFloat64:
      return absl::StrCat(v.float64);
    default:
      return json::Quote(v.bytes);
  }
}

// Builds the metadata of a safetensors source: typed keys first (in
// KnownKeys() order), then source.format, source.file and the raw
// "__metadata__" strings.
absl::StatusOr<std::vector<MetaEntry>> BuildMetadata(
    const std::string& path, const std::vector<SourceTensor>& tensors,
    const std::vector<std::pair<std::string, std::string>>& raw) {
  std::map<std::string, MetaValue> typed;
  bool hf_llama = false;
  for (const SourceTensor& e : tensors) {
    if (LayerFromName(e.name) >= 0) hf_llama = true;
  }
  if (hf_llama) {
    typed = DeriveLlama(tensors);
    typed[meta_keys::kArchitecture] = MetaValue::String("llama");
    typed[meta_keys::kRopeLayout] = MetaValue::String(llama::kRopeLayoutHf);
  }
  const std::map<std::string, MetaValue> derived = typed;
  const std::vector<KnownKey> known_keys = KnownKeys();
  for (const auto& [key, text] : raw) {
    const KnownKey* known = nullptr;
    for (const KnownKey& k : known_keys) {
      if (key == k.key) known = &k;
    }
    if (known == nullptr) continue;
    MetaValue v;
    if (known->kind == Kind::kInt) {
      int64_t i;
      if (!absl::SimpleAtoi(text, &i)) {
        return Corrupt(path, absl::StrFormat("__metadata__ %s=%s is not an integer", key,
                                             json::Quote(text)));
      }
      v = MetaValue::Int(i);
    } else if (known->kind == Kind::kFloat) {
      double d;
      if (!absl::SimpleAtod(text, &d)) {
        return Corrupt(path, absl::StrFormat("__metadata__ %s=%s is not a number", key,
                                             json::Quote(text)));
      }
      v = MetaValue::Float(d);
    } else {
      v = MetaValue::String(text);
    }
    // Shapes are facts; a stated hyperparameter contradicting them means the
    // file is inconsistent. Layout and architecture strings are statements
    // the names cannot verify, so the file's own word wins.
    auto it = derived.find(key);
    if (it != derived.end() && known->kind == Kind::kInt && !SameValue(it->second, v)) {
      return Corrupt(
          path, absl::StrFormat("__metadata__ %s=%s contradicts the tensor shapes, which "
                                "give %s",
                                key, text, ValueText(it->second)));
    }
    typed[key] = v;
  }
  if (auto it = typed.find(meta_keys::kRopeLayout);
      it != typed.end() && it->second.bytes != llama::kRopeLayoutMeta &&
      it->second.bytes != llama::kRopeLayoutHf) {
    return Corrupt(
        path, absl::StrFormat("__metadata__ %s=%s is neither \"meta\" nor \"hf\"",
                              meta_keys::kRopeLayout, json::Quote(it->second.bytes)));
  }
  std::vector<MetaEntry> meta;
  for (const KnownKey& k : known_keys) {
    auto it = typed.find(k.key);
    if (it != typed.end()) meta.push_back({k.key, it->second});
  }
  meta.push_back({meta_keys::kSourceFormat, MetaValue::String("safetensors")});
  meta.push_back({meta_keys::kSourceFile, MetaValue::String(internal::Basename(path))});
  // A key too long for a .tqm file once prefixed is valid safetensors, so it
  // is left out rather than failing the whole import.
  for (const auto& [key, text] : raw) {
    if (key.size() > format::kMaxKeyLength - (sizeof(kSourceMetaPrefix) - 1)) continue;
    meta.push_back({kSourceMetaPrefix + key, MetaValue::String(text)});
  }
  return meta;
}

}  // namespace

size_t SafetensorsDTypeSize(const std::string& dtype) {
  for (const DTypeInfo& d : kDTypes) {
    if (dtype == d.name) return d.size;
  }
  return 0;
}

namespace {

// Reads `n` little-endian float32 values of `e` (n = e.numel).
absl::Status ReadFloats(const internal::InputFile& file, uint64_t data_start,
                        const Entry& e, std::vector<float>* out) {
  out->resize(static_cast<size_t>(e.numel));
  TQM_RETURN_IF_ERROR(file.ReadAt(data_start + e.begin, out->data(), out->size() * 4));
  internal::FixFloat32Endianness(out->data(), out->size());
  return absl::OkStatus();
}

// Finds the triples tqm-unpack --dtype u8 writes (export.cc): a U8 tensor
// NAME with F32 tensors NAME.scale and NAME.zero of one element (one affine
// pair for the tensor) or dims[0] elements (one per row). Each becomes one
// TensorKind::kQuantized entry at NAME's place, so that packing stores the
// codes as they are instead of quantizing their dequantized values again;
// the .scale and .zero entries are dropped. `entries` tile the data area.
absl::Status MergeQuantizedTriples(const internal::InputFile& file, uint64_t data_start,
                                   std::vector<Entry>* entries) {
  const std::string& path = file.path();
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < entries->size(); ++i) by_name[(*entries)[i].tensor.name] = i;
  std::vector<bool> drop(entries->size(), false);
  for (size_t i = 0; i < entries->size(); ++i) {
    Entry& e = (*entries)[i];
    if (e.tensor.dtype != format::kDTypeU8 || drop[i]) continue;
    const std::string& name = e.tensor.name;
    auto scale_it = by_name.find(name + ".scale");
    auto zero_it = by_name.find(name + ".zero");
    if (scale_it == by_name.end() && zero_it == by_name.end()) continue;
    auto bad = [&](const std::string& what) {
      return Corrupt(
          path, absl::StrFormat("quantized tensor %s (U8 %s with %s.scale and "
                                "%s.zero): %s",
                                Quoted(name),
                                absl::StrCat("[", absl::StrJoin(e.tensor.dims, ","), "]"),
                                name, name, what));
    };
    if (scale_it == by_name.end() || zero_it == by_name.end()) {
      return bad(absl::StrFormat(
          "%s is missing",
          Quoted(name + (scale_it == by_name.end() ? ".scale" : ".zero"))));
    }
    const Entry& scale = (*entries)[scale_it->second];
    const Entry& zero = (*entries)[zero_it->second];
    for (const Entry* p : {&scale, &zero}) {
      if (p->tensor.dtype != format::kDTypeF32 || p->tensor.dims.size() != 1) {
        return bad(absl::StrFormat("%s must be a 1-D F32 tensor, not %s of rank %d",
                                   Quoted(p->tensor.name), DTypeName(p->tensor.dtype),
                                   p->tensor.dims.size()));
      }
    }
    if (e.tensor.dims.empty() || e.numel == 0) {
      return bad("codes must have rank >= 1 and at least one element");
    }
    const uint64_t k = scale.numel;
    if (zero.numel != k) {
      return bad(absl::StrFormat("%d scales but %d zeros", k, zero.numel));
    }
    if (k != 1 && k != e.tensor.dims[0]) {
      return bad(
          absl::StrFormat("%d affine pairs; expected 1 (per tensor) or dims[0]=%d "
                          "(per row)",
                          k, e.tensor.dims[0]));
    }
    std::vector<float> scales, zeros;
    TQM_RETURN_IF_ERROR(ReadFloats(file, data_start, scale, &scales));
    TQM_RETURN_IF_ERROR(ReadFloats(file, data_start, zero, &zeros));
    e.params.resize(static_cast<size_t>(k));
    for (size_t j = 0; j < k; ++j) {
      if (!std::isfinite(scales[j]) || !(scales[j] > 0)) {
        return bad(absl::StrFormat("scale[%d] = %g is not a finite positive number", j,
                                   scales[j]));
      }
      if (!std::isfinite(zeros[j]) || std::nearbyint(zeros[j]) != zeros[j]) {
        return bad(absl::StrFormat("zero[%d] = %g is not a finite integer", j, zeros[j]));
      }
      e.params[j] = Affine{scales[j], zeros[j]};
    }
    e.storage = k == 1 ? format::kStorageU8Tensor : format::kStorageU8Row;
    e.tensor.kind = TensorKind::kQuantized;
    e.tensor.dtype = format::kDTypeF32;  // what the codes stand for
    drop[scale_it->second] = true;
    drop[zero_it->second] = true;
  }
  size_t kept = 0;
  for (size_t i = 0; i < entries->size(); ++i) {
    if (drop[i]) continue;
    if (kept != i) (*entries)[kept] = std::move((*entries)[i]);
    ++kept;
  }
  entries->resize(kept);
  return absl::OkStatus();
}

// Opens and validates `path`; the source's metadata is left empty and the
// raw "__metadata__" pairs are returned in *raw_meta_out.
absl::StatusOr<std::unique_ptr<SafetensorsSource>> OpenFile(
    std::unique_ptr<internal::InputFile> file,
    std::vector<std::pair<std::string, std::string>>* raw_meta_out,
    std::vector<std::string>* header_names = nullptr) {
  const std::string path = file->path();
  const uint64_t size = file->size();
  if (size < 8) {
    return absl::DataLossError(absl::StrFormat(
        "%s: %d bytes is too short for a safetensors file (8-byte header length)", path,
        size));
  }
  uint8_t len_bytes[8];
  absl::Status s = file->ReadAt(0, len_bytes, 8);
  if (!s.ok()) return s;
  const uint64_t header_len = LoadLE64(len_bytes);
  if (header_len > kMaxHeaderSize) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: safetensors header length %d at offset 0 exceeds the limit of %d bytes",
        path, header_len, kMaxHeaderSize));
  }
  if (header_len > size - 8) {
    return absl::DataLossError(absl::StrFormat(
        "%s: safetensors header length %d at offset 0 exceeds the %d bytes after it",
        path, header_len, size - 8));
  }
  std::string header(static_cast<size_t>(header_len), '\0');
  s = file->ReadAt(8, header.data(), header.size());
  if (!s.ok()) return s;
  if (header.empty() || header[0] != '{') {
    return Corrupt(path, "does not start with '{' at offset 8");
  }
  json::ParseOptions options;
  options.max_size = kMaxHeaderSize;
  options.max_depth = 8;  // root object -> tensor object -> shape array
  // A real header spends 8 or more bytes a value (a tensor entry is about
  // 100 bytes for 8 values); at most one value per 6 bytes keeps the parsed
  // header within about 17x its size (a Value is about 100 bytes).
  options.max_values = header.size() / 6 + 1024;
  absl::StatusOr<json::Value> parsed = json::Parse(header, options);
  if (!parsed.ok()) {
    return absl::Status(
        parsed.status().code() == absl::StatusCode::kResourceExhausted
            ? absl::StatusCode::kResourceExhausted
            : absl::StatusCode::kDataLoss,
        absl::StrFormat("%s: safetensors header (offset 8, %d bytes): %s", path, header_len,
                        parsed.status().message()));
  }
  if (!parsed->is_object()) return Corrupt(path, "not a JSON object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  std::vector<Entry> entries;
  std::vector<std::pair<std::string, std::string>> raw_meta;
  for (const json::Member& m : parsed->object()) {
    if (m.key == kMetadataKey) {
      if (!m.value.is_object()) {
        return Corrupt(path, "__metadata__ is not an object");
      }
      for (const json::Member& kv : m.value.object()) {
        if (!kv.value.is_string()) {
          return Corrupt(path,
                         absl::StrFormat("__metadata__ value of %s is %s, not a string",
                                         json::Quote(kv.key),
                                         json::Value::TypeName(kv.value.type())));
        }
        raw_meta.emplace_back(kv.key, kv.value.as_string());
      }
      continue;
    }
    Entry e;
    e.tensor.name = m.key;
    s = ParseTensor(path, m.key, m.value, data_size, &e);
    if (!s.ok()) return s;
    entries.push_back(std::move(e));
  }

  // The byte ranges must tile [0, data_size): sorted by offset, each begins
  // where the previous one ended. This rules out overlaps and unaccounted
  // bytes (which could hide data a checker never sees).
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < expected) {
      return Corrupt(
          path,
          absl::StrFormat("tensor %s: data_offsets [%d, %d] overlap tensor %s, which "
                          "ends at %d",
                          Quoted(e.tensor.name), e.begin, e.end,
                          Quoted(entries[i - 1].tensor.name), expected));
    }
    if (e.begin > expected) {
      return Corrupt(
          path, absl::StrFormat(
                    "tensor %s: data_offsets [%d, %d] leave a gap of %d unused "
                    "bytes at data offset %d",
                    Quoted(e.tensor.name), e.begin, e.end, e.begin - expected, expected));
    }
    expected = e.end;
  }
  if (expected != data_size) {
    return Corrupt(
        path,
        absl::StrFormat("tensors cover %d bytes of the %d-byte data area (file offset "
                        "%d on is unaccounted for)",
                        expected, data_size, data_start + expected));
  }

  if (header_names != nullptr) {
    for (const Entry& e : entries) header_names->push_back(e.tensor.name);
  }
  TQM_RETURN_IF_ERROR(MergeQuantizedTriples(*file, data_start, &entries));
  *raw_meta_out = std::move(raw_meta);
  return std::make_unique<SafetensorsSource>(std::move(file), data_start,
                                             std::move(entries), std::vector<MetaEntry>());
}

}  // namespace

namespace internal {

absl::StatusOr<SafetensorsShard> OpenSafetensorsShard(const std::string& path) {
  SafetensorsShard shard;
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  absl::StatusOr<std::unique_ptr<SafetensorsSource>> src =
      OpenFile(std::move(file), &shard.raw_metadata, &shard.header_names);
  if (!src.ok()) return src.status();
  shard.source = std::move(src).value();
  return shard;
}

absl::StatusOr<std::vector<MetaEntry>> SafetensorsMetadata(
    const std::string& path, const std::vector<SourceTensor>& tensors,
    const std::vector<std::pair<std::string, std::string>>& raw) {
  return BuildMetadata(path, tensors, raw);
}

std::map<std::string, MetaValue> DeriveLlamaFromShapes(
    const std::vector<SourceTensor>& tensors) {
  return DeriveLlama(tensors);
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsWithConfig(
    const std::string& path, const std::string& config_path) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  return OpenSafetensorsInputWithConfig(std::move(file), config_path);
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsInput(
    std::unique_ptr<InputFile> file) {
  return OpenSafetensorsInputWithConfig(std::move(file), "");
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsInputWithConfig(
    std::unique_ptr<InputFile> file, const std::string& config_path) {
  const std::string path = file->path();
  std::vector<std::pair<std::string, std::string>> raw_meta;
  absl::StatusOr<std::unique_ptr<SafetensorsSource>> src =
      OpenFile(std::move(file), &raw_meta);
  if (!src.ok()) return src.status();
  TQM_ASSIGN_OR_RETURN(std::vector<MetaEntry> meta,
                       BuildMetadata(path, (*src)->tensors(), raw_meta));
  if (!config_path.empty()) {
    TQM_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(config_path));
    TQM_ASSIGN_OR_RETURN(std::vector<MetaEntry> config,
                         HfConfigToMetadata(text, config_path));
    TQM_RETURN_IF_ERROR(ApplyHfConfig(config_path, config, (*src)->tensors(), &meta));
  }
  (*src)->set_metadata(std::move(meta));
  return std::unique_ptr<TensorSource>(std::move(src).value());
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensors(const std::string& path) {
  return internal::OpenSafetensorsWithConfig(path, "");
}

// ---- writer ----

namespace {

class SafetensorsWriterImpl : public SafetensorsWriter {
 public:
  SafetensorsWriterImpl(std::unique_ptr<AtomicFile> file, std::string path,
                        std::vector<SafetensorsEntry> entries,
                        std::vector<uint64_t> sizes)
      : file_(std::move(file)),
        path_(std::move(path)),
        entries_(std::move(entries)),
        sizes_(std::move(sizes)) {}

  absl::Status Write(absl::Span<const uint8_t> bytes) override {
    if (finished_ || failed_) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: safetensors writer is %s", path_,
                          finished_ ? "finished" : "in a failed state"));
    }
    if (next_ >= entries_.size()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: all %d tensors were already written", path_, entries_.size()));
    }
    if (bytes.size() != sizes_[next_]) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor %s (%s %s) is %d bytes, got %d", path_,
                          entries_[next_].name, entries_[next_].dtype,
                          ShapeText(entries_[next_].shape), sizes_[next_], bytes.size()));
    }
    absl::Status s = file_->Append(bytes);
    if (!s.ok()) {
      failed_ = true;
      return s;
    }
    ++next_;
    return absl::OkStatus();
  }

  absl::Status Finish() override {
    if (finished_ || failed_) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: safetensors writer is %s", path_,
                          finished_ ? "finished" : "in a failed state"));
    }
    if (next_ != entries_.size()) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: only %d of %d tensors were written (next: %s)", path_,
                          next_, entries_.size(), entries_[next_].name));
    }
    absl::Status s = file_->Commit();
    if (!s.ok()) {
      failed_ = true;
      return s;
    }
    finished_ = true;
    return absl::OkStatus();
  }

  static std::string ShapeText(const std::vector<uint64_t>& shape) {
    return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
  }

 private:
  std::unique_ptr<AtomicFile> file_;
  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  std::vector<uint64_t> sizes_;
  size_t next_ = 0;
  bool finished_ = false;
  bool failed_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<SafetensorsEntry> entries,
    std::vector<std::pair<std::string, std::string>> metadata) {
  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: safetensors writer: %s", path, what));
  };
  std::string header = "{";
  if (!metadata.empty()) {
    std::set<std::string> keys;
    header += json::Quote(kMetadataKey);
    header += ":{";
    for (size_t i = 0; i < metadata.size(); ++i) {
      const auto& [key, value] = metadata[i];
      if (!json::IsValidUtf8(key) || !json::IsValidUtf8(value)) {
        return invalid(absl::StrFormat("metadata key %s or its value is not valid UTF-8",
                                       absl::CEscape(key)));
      }
      if (!keys.insert(key).second) {
        return invalid(absl::StrFormat("duplicate metadata key %s", json::Quote(key)));
      }
      if (i > 0) header += ",";
      header += json::Quote(key);
      header += ":";
      header += json::Quote(value);
    }
    header += "}";
  }
  std::vector<uint64_t> sizes;
  sizes.reserve(entries.size());
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const SafetensorsEntry& e : entries) {
    if (e.name.empty() || !json::IsValidUtf8(e.name)) {
      return invalid(absl::StrFormat("tensor name %s is empty or not valid UTF-8",
                                     absl::CEscape(e.name)));
    }
    if (e.name == kMetadataKey) return invalid("a tensor cannot be named __metadata__");
    if (!names.insert(e.name).second) {
      return invalid(absl::StrFormat("duplicate tensor name %s", json::Quote(e.name)));
    }
    const size_t dsize = SafetensorsDTypeSize(e.dtype);
    if (dsize == 0) {
      return invalid(absl::StrFormat("tensor %s: unknown dtype %s", json::Quote(e.name),
                                     json::Quote(e.dtype)));
    }
    uint64_t bytes = dsize;
    for (uint64_t d : e.shape) {
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          !CheckedMul(bytes, d, &bytes)) {
        return invalid(absl::StrFormat("tensor %s: shape %s overflows",
                                       json::Quote(e.name),
                                       SafetensorsWriterImpl::ShapeText(e.shape)));
      }
    }
    uint64_t end;
    if (!CheckedAdd(offset, bytes, &end) ||
        end > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return invalid("total data size overflows");
    }
    if (header.size() > 1) header += ",";
    header += json::Quote(e.name);
    header += absl::StrFormat(":{\"dtype\":%s,\"shape\":%s,\"data_offsets\":[%d,%d]}",
                              json::Quote(e.dtype),
                              SafetensorsWriterImpl::ShapeText(e.shape), offset, end);
    sizes.push_back(bytes);
    offset = end;
  }
  header += "}";
  // Pad with spaces so that the data area starts 8-byte aligned, as the
  // reference implementation does; JSON allows trailing whitespace.
  header.append((8 - header.size() % 8) % 8, ' ');
  if (header.size() > kMaxHeaderSize) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: safetensors header of %d bytes exceeds the limit of %d bytes", path,
        header.size(), kMaxHeaderSize));
  }

  absl::StatusOr<std::unique_ptr<AtomicFile>> file = AtomicFile::Create(path);
  if (!file.ok()) return file.status();
  uint8_t len[8];
  StoreLE64(header.size(), len);
  absl::Status s = (*file)->Append(absl::Span<const uint8_t>(len, 8));
  if (s.ok()) s = (*file)->Append(header);
  if (!s.ok()) return s;
  return std::unique_ptr<SafetensorsWriter>(new SafetensorsWriterImpl(
      std::move(file).value(), path, std::move(entries), std::move(sizes)));
}

}  // namespace tqm
