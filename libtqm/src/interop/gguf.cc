// GGUF v2/v3 reader (ReadGgufInfo, OpenGguf as a TensorSource) and writer
// (ExportGguf), plus the tokenizer conversions between GGUF's
// tokenizer.ggml.* arrays and the llama2.c tokenizer blob.
//
// The reader treats the file as hostile, which is what llama.cpp's gguf.cpp
// learned the hard way: the header is read through a bounds-checked,
// buffered cursor; every count is capped by the bytes left in the file
// before anything is allocated; string lengths are capped; element counts
// and byte sizes are overflow-checked; tensor offsets must be aligned, lie
// inside the data area and not overlap. Tensor data is read with pread when
// a tensor is asked for, so opening costs the header only.

#include "tqm/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "base/atomic_file.h"
#include "interop/import_internal.h"
#include "interop/llama.h"
#include "tqm/export.h"
#include "tqm/import.h"
#include "tqm/metadata.h"
#include "tqm/source.h"
#include "tqm/status.h"

namespace tqm {
namespace {

using internal::CheckedAdd;
using internal::CheckedMul;
using internal::InputFile;

constexpr char kSpaceMarker[] = "\xE2\x96\x81";  // U+2581, SentencePiece's space
// A key this long is surely not a real GGUF key; it bounds allocation.
constexpr uint64_t kMaxKeyLength = 1 << 16;
// Metadata pairs in one file. llama.cpp writes a few dozen (the vocabulary
// is one array pair); each costs ~300 bytes in memory once imported for as
// few as 14 in the file, so the cap is what keeps a file of tiny pairs from
// costing 20-30x its size (1024 pairs: well under 1 MiB).
constexpr uint64_t kMaxMetadataPairs = 1 << 10;
// Containers are reserved up to this many elements from a count the file
// states; past it they grow only as elements are actually read, so a count
// near the file-size cap cannot make the reader allocate many times the file.
constexpr uint64_t kReserve = 1 << 16;

// How many elements of type T to reserve for `count` stated by the file with
// `remaining` bytes left: at most kReserve, and never more memory than those
// bytes, so that one corrupt count costs at most the size of the file (a
// GgufKeyValue is ~170 bytes where the smallest pair on disk is 13).
template <typename T>
size_t ReserveFor(uint64_t count, uint64_t remaining) {
  return static_cast<size_t>(std::min({count, kReserve, remaining / sizeof(T)}));
}

// push_back that grows `v` toward `count` elements at most: plain doubling
// could leave a vector of 60000 strings for a 32000-token vocabulary.
template <typename T>
void PushBounded(std::vector<T>* v, T x, uint64_t count) {
  if (v->size() == v->capacity()) {
    v->reserve(static_cast<size_t>(std::min<uint64_t>(count, 2 * v->capacity() + 16)));
  }
  v->push_back(std::move(x));
}

const char* ValueTypeName(uint32_t t) {
  static const char* const kNames[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                       "i32", "f32", "bool", "string", "array",
                                       "u64", "i64", "f64"};
  return t < sizeof(kNames) / sizeof(kNames[0]) ? kNames[t] : "unknown";
}

// Size of a fixed-size value type, 0 for string/array/unknown.
size_t ScalarSize(uint32_t t) {
  switch (t) {
    case gguf::kTypeU8:
    case gguf::kTypeI8:
    case gguf::kTypeBool:
      return 1;
    case gguf::kTypeU16:
    case gguf::kTypeI16:
      return 2;
    case gguf::kTypeU32:
    case gguf::kTypeI32:
    case gguf::kTypeF32:
      return 4;
    case gguf::kTypeU64:
    case gguf::kTypeI64:
    case gguf::kTypeF64:
      return 8;
    default:
      return 0;
  }
}

std::string GgmlTypeName(uint32_t t) {
  // ggml's type ids (ggml.h), for messages about types this reader lacks.
  static const char* const kNames[] = {
      "F32",   "F16",   "Q4_0",    "Q4_1",   "Q4_2(removed)", "Q4_3(removed)", "Q5_0",
      "Q5_1",  "Q8_0",  "Q8_1",    "Q2_K",   "Q3_K",          "Q4_K",          "Q5_K",
      "Q6_K",  "Q8_K",  "IQ2_XXS", "IQ2_XS", "IQ3_XXS",       "IQ1_S",         "IQ4_NL",
      "IQ3_S", "IQ2_S", "IQ4_XS",  "I8",     "I16",           "I32",           "I64",
      "F64",   "IQ1_M", "BF16"};
  if (t < sizeof(kNames) / sizeof(kNames[0])) return kNames[t];
  return absl::StrCat("type ", t);
}

// A buffered, bounds-checked little-endian reader over the header of a file.
class HeaderReader {
 public:
  explicit HeaderReader(const InputFile& file) : file_(file), size_(file.size()) {}

  uint64_t offset() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  const std::string& path() const { return file_.path(); }

  absl::Status Error(const std::string& what, uint64_t at) const {
    return absl::DataLossError(
        absl::StrFormat("%s: GGUF %s at offset %d", file_.path(), what, at));
  }

  absl::Status Bytes(void* dst, uint64_t n, const char* what) {
    if (n > remaining()) {
      return Error(absl::StrFormat("%s needs %d bytes but only %d remain in the file",
                                   what, n, remaining()),
                   pos_);
    }
    uint8_t* out = static_cast<uint8_t*>(dst);
    while (n > 0) {
      if (pos_ >= buf_start_ && pos_ < buf_start_ + buf_.size()) {
        const uint64_t at = pos_ - buf_start_;
        const size_t m = static_cast<size_t>(std::min<uint64_t>(n, buf_.size() - at));
        std::memcpy(out, buf_.data() + at, m);
        out += m;
        pos_ += m;
        n -= m;
        continue;
      }
      if (n >= kBuffer) {  // large reads bypass the buffer
        TQM_RETURN_IF_ERROR(file_.ReadAt(pos_, out, static_cast<size_t>(n)));
        pos_ += n;
        return absl::OkStatus();
      }
      const size_t fill = static_cast<size_t>(std::min<uint64_t>(kBuffer, remaining()));
      buf_.resize(fill);
      TQM_RETURN_IF_ERROR(file_.ReadAt(pos_, buf_.data(), fill));
      buf_start_ = pos_;
    }
    return absl::OkStatus();
  }

  absl::Status Skip(uint64_t n, const char* what) {
    if (n > remaining()) {
      return Error(absl::StrFormat("%s needs %d bytes but only %d remain in the file",
                                   what, n, remaining()),
                   pos_);
    }
    pos_ += n;
    return absl::OkStatus();
  }

  absl::Status U32(uint32_t* v, const char* what) {
    uint8_t b[4];
    TQM_RETURN_IF_ERROR(Bytes(b, 4, what));
    *v = LoadLE32(b);
    return absl::OkStatus();
  }
  absl::Status U64(uint64_t* v, const char* what) {
    uint8_t b[8];
    TQM_RETURN_IF_ERROR(Bytes(b, 8, what));
    *v = LoadLE64(b);
    return absl::OkStatus();
  }

  // A u64 length then that many bytes; `max` bounds the length.
  absl::Status String(std::string* s, const char* what, uint64_t max) {
    const uint64_t at = pos_;
    uint64_t len;
    TQM_RETURN_IF_ERROR(U64(&len, what));
    if (len > remaining()) {
      return Error(absl::StrFormat("%s length %d exceeds the %d bytes left in the file",
                                   what, len, remaining()),
                   at);
    }
    if (len > max) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: GGUF %s length %d at offset %d exceeds the limit of %d",
                          file_.path(), what, len, at, max));
    }
    s->resize(static_cast<size_t>(len));
    return Bytes(s->data(), len, what);
  }

 private:
  // Small: the header is read once, front to back, and a buffer the size of
  // a whole (small) file would double what opening it costs.
  static constexpr size_t kBuffer = 1 << 16;
  const InputFile& file_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::vector<uint8_t> buf_;
  uint64_t buf_start_ = 0;
};

absl::Status ReadScalar(HeaderReader& in, uint32_t type, GgufKeyValue* kv, uint64_t at,
                        const std::string& key) {
  uint8_t b[8];
  const size_t n = ScalarSize(type);
  TQM_RETURN_IF_ERROR(in.Bytes(b, n, "metadata value"));
  uint64_t u = 0;
  for (size_t i = 0; i < n; ++i) u |= static_cast<uint64_t>(b[i]) << (8 * i);
  switch (type) {
    case gguf::kTypeU8:
    case gguf::kTypeU16:
    case gguf::kTypeU32:
    case gguf::kTypeU64:
      kv->uint_value = u;
      break;
    case gguf::kTypeBool:
      if (u > 1) {
        return in.Error(
            absl::StrFormat("key '%s': bool value %d is neither 0 nor 1", key, u), at);
      }
      kv->uint_value = u;
      break;
    case gguf::kTypeI8:
      kv->int_value = static_cast<int8_t>(u);
      break;
    case gguf::kTypeI16:
      kv->int_value = static_cast<int16_t>(u);
      break;
    case gguf::kTypeI32:
      kv->int_value = static_cast<int32_t>(u);
      break;
    case gguf::kTypeI64:
      kv->int_value = static_cast<int64_t>(u);
      break;
    case gguf::kTypeF32:
      kv->float_value = internal::BitsToFloat(static_cast<uint32_t>(u));
      break;
    case gguf::kTypeF64: {
      double d;
      std::memcpy(&d, &u, 8);
      kv->float_value = d;
      break;
    }
  }
  return absl::OkStatus();
}

absl::Status ReadValue(HeaderReader& in, GgufKeyValue* kv) {
  const uint64_t at = in.offset();
  uint32_t type;
  TQM_RETURN_IF_ERROR(in.U32(&type, "metadata value type"));
  if (type > gguf::kTypeF64) {
    return in.Error(absl::StrFormat("key '%s' has unknown value type %d", kv->key, type),
                    at);
  }
  kv->type = static_cast<gguf::ValueType>(type);
  if (type == gguf::kTypeString) {
    return in.String(&kv->string_value, "string value", gguf::kMaxStringLength);
  }
  if (type != gguf::kTypeArray) return ReadScalar(in, type, kv, at, kv->key);

  const uint64_t arr_at = in.offset();
  uint32_t elem;
  uint64_t count;
  TQM_RETURN_IF_ERROR(in.U32(&elem, "array element type"));
  TQM_RETURN_IF_ERROR(in.U64(&count, "array length"));
  if (elem == gguf::kTypeArray) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: GGUF key '%s' at offset %d: arrays of arrays are not supported", in.path(),
        kv->key, arr_at));
  }
  if (elem > gguf::kTypeF64) {
    return in.Error(
        absl::StrFormat("key '%s': array has unknown element type %d", kv->key, elem),
        arr_at);
  }
  // Every element takes at least this many bytes: cap the count by the file.
  const uint64_t min_size = elem == gguf::kTypeString ? 8 : ScalarSize(elem);
  if (count > in.remaining() / min_size) {
    return in.Error(absl::StrFormat("key '%s': array of %d %s elements cannot fit in the "
                                    "%d bytes left in the file",
                                    kv->key, count, ValueTypeName(elem), in.remaining()),
                    arr_at);
  }
  kv->array_type = static_cast<gguf::ValueType>(elem);
  kv->array_size = count;
  kv->array_kept = kv->key.rfind("tokenizer.ggml.", 0) == 0;
  if (kv->array_kept && count > gguf::kMaxKeptArrayElements) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: GGUF key '%s' at offset %d: %d elements exceed the limit of %d", in.path(),
        kv->key, arr_at, count, gguf::kMaxKeptArrayElements));
  }
  if (elem == gguf::kTypeString) {
    std::string s;
    if (kv->array_kept)
      kv->array_strings.reserve(ReserveFor<std::string>(count, in.remaining()));
    for (uint64_t i = 0; i < count; ++i) {
      TQM_RETURN_IF_ERROR(in.String(&s, "array string", gguf::kMaxStringLength));
      if (kv->array_kept) PushBounded(&kv->array_strings, std::move(s), count);
    }
    return absl::OkStatus();
  }
  if (!kv->array_kept) return in.Skip(count * min_size, "array data");
  kv->array_numbers.reserve(ReserveFor<double>(count, in.remaining()));
  GgufKeyValue e;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t eat = in.offset();
    TQM_RETURN_IF_ERROR(ReadScalar(in, elem, &e, eat, kv->key));
    double v;
    if (elem == gguf::kTypeF32 || elem == gguf::kTypeF64) {
      v = e.float_value;
    } else if (elem == gguf::kTypeI8 || elem == gguf::kTypeI16 ||
               elem == gguf::kTypeI32 || elem == gguf::kTypeI64) {
      v = static_cast<double>(e.int_value);
    } else {
      v = static_cast<double>(e.uint_value);
    }
    PushBounded(&kv->array_numbers, v, count);
  }
  return absl::OkStatus();
}

absl::Status ParseTensorInfo(HeaderReader& in, const std::string& path,
                             uint32_t alignment, GgufTensorInfo* t) {
  const uint64_t at = in.offset();
  TQM_RETURN_IF_ERROR(in.String(&t->name, "tensor name", gguf::kMaxNameLength));
  if (t->name.empty() || t->name.find('\0') != std::string::npos) {
    return in.Error("tensor name is empty or contains a NUL byte", at);
  }
  const std::string where = "tensor '" + t->name + "'";
  uint32_t n_dims;
  TQM_RETURN_IF_ERROR(in.U32(&n_dims, "tensor n_dims"));
  if (n_dims == 0 || n_dims > gguf::kMaxDims) {
    return in.Error(absl::StrFormat("%s has %d dimensions (1..%d allowed)", where, n_dims,
                                    gguf::kMaxDims),
                    at);
  }
  uint64_t numel = 1;
  for (uint32_t i = 0; i < n_dims; ++i) {
    uint64_t ne;
    TQM_RETURN_IF_ERROR(in.U64(&ne, "tensor ne"));
    if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        !CheckedMul(numel, ne, &numel) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return in.Error(where + ": element count overflows", at);
    }
    t->ne.push_back(ne);
  }
  t->numel = numel;
  TQM_RETURN_IF_ERROR(in.U32(&t->type, "tensor type"));
  uint64_t bytes = 0;
  bool ok = true;
  switch (t->type) {
    case gguf::kGgmlF32:
      ok = CheckedMul(numel, 4, &bytes);
      break;
    case gguf::kGgmlF16:
    case gguf::kGgmlBF16:
    case gguf::kGgmlI16:
      ok = CheckedMul(numel, 2, &bytes);
      break;
    case gguf::kGgmlI8:
      bytes = numel;
      break;
    case gguf::kGgmlI32:
      ok = CheckedMul(numel, 4, &bytes);
      break;
    case gguf::kGgmlI64:
    case gguf::kGgmlF64:
      ok = CheckedMul(numel, 8, &bytes);
      break;
    case gguf::kGgmlQ8_0:
      if (t->ne[0] % gguf::kQ8_0BlockWeights != 0) {
        return in.Error(absl::StrFormat("%s: Q8_0 row length %d is not a multiple of %d",
                                        where, t->ne[0], gguf::kQ8_0BlockWeights),
                        at);
      }
      ok = CheckedMul(numel / gguf::kQ8_0BlockWeights, gguf::kQ8_0BlockBytes, &bytes);
      break;
    default:
      return absl::UnimplementedError(absl::StrFormat(
          "%s: GGUF %s at offset %d has ggml type %s, which is not supported (F32, F16, "
          "BF16, Q8_0, I8, I16, I32, I64 and F64 are)",
          path, where, at, GgmlTypeName(t->type)));
  }
  if (!ok) return in.Error(where + ": byte size overflows", at);
  t->size = bytes;
  TQM_RETURN_IF_ERROR(in.U64(&t->offset, "tensor offset"));
  if (t->offset % alignment != 0) {
    return in.Error(absl::StrFormat("%s: data offset %d is not a multiple of the "
                                    "alignment %d",
                                    where, t->offset, alignment),
                    at);
  }
  return absl::OkStatus();
}

absl::StatusOr<GgufInfo> ParseGguf(const InputFile& file) {
  const std::string& path = file.path();
  HeaderReader in(file);
  GgufInfo info;
  info.file_size = file.size();
  uint8_t magic[4];
  if (file.size() < 4) {
    return absl::DataLossError(
        absl::StrFormat("%s: %d bytes is too short for a GGUF file", path, file.size()));
  }
  TQM_RETURN_IF_ERROR(in.Bytes(magic, 4, "magic"));
  if (std::memcmp(magic, gguf::kMagic, 4) != 0) {
    return in.Error("magic is not \"GGUF\"", 0);
  }
  TQM_RETURN_IF_ERROR(in.U32(&info.version, "version"));
  if (info.version < gguf::kMinVersion || info.version > gguf::kMaxVersion) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: GGUF version %d at offset 4 is not supported (versions %d and %d are%s)",
        path, info.version, gguf::kMinVersion, gguf::kMaxVersion,
        (info.version & 0xFFFF) == 0 ? "; a big-endian file?" : ""));
  }
  uint64_t n_tensors, n_kv;
  TQM_RETURN_IF_ERROR(in.U64(&n_tensors, "tensor count"));
  TQM_RETURN_IF_ERROR(in.U64(&n_kv, "metadata count"));
  // Smallest metadata pair: key length 8 + type 4 + a 1-byte value; smallest
  // tensor info: name length 8 + 1 + n_dims 4 + ne 8 + type 4 + offset 8.
  if (n_kv > in.remaining() / 13) {
    return in.Error(absl::StrFormat("metadata count %d cannot fit in the %d bytes left",
                                    n_kv, in.remaining()),
                    16);
  }
  // A count the file could hold but more pairs than any real file has.
  if (n_kv > kMaxMetadataPairs) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: GGUF metadata count %d at offset 16 exceeds the limit of %d",
                        path, n_kv, kMaxMetadataPairs));
  }
  if (n_tensors > in.remaining() / 33) {
    return in.Error(absl::StrFormat("tensor count %d cannot fit in the %d bytes left",
                                    n_tensors, in.remaining()),
                    8);
  }
  absl::flat_hash_set<std::string> keys;
  info.metadata.reserve(ReserveFor<GgufKeyValue>(n_kv, in.remaining()));
  for (uint64_t i = 0; i < n_kv; ++i) {
    GgufKeyValue kv;
    const uint64_t at = in.offset();
    TQM_RETURN_IF_ERROR(in.String(&kv.key, "metadata key", kMaxKeyLength));
    if (kv.key.empty())
      return in.Error(absl::StrFormat("metadata key %d is empty", i), at);
    if (!keys.insert(kv.key).second) {
      return in.Error(absl::StrFormat("duplicate metadata key '%s'", kv.key), at);
    }
    TQM_RETURN_IF_ERROR(ReadValue(in, &kv));
    if (kv.key == "general.alignment") {
      if (kv.type != gguf::kTypeU32) {
        return in.Error(absl::StrFormat("general.alignment has type %s, must be u32",
                                        ValueTypeName(kv.type)),
                        at);
      }
      const uint64_t a = kv.uint_value;
      if (a == 0 || (a & (a - 1)) != 0) {
        return in.Error(absl::StrFormat("general.alignment %d is not a power of two", a),
                        at);
      }
      info.alignment = static_cast<uint32_t>(a);
    }
    PushBounded(&info.metadata, std::move(kv), n_kv);
  }
  if (n_tensors > in.remaining() / 33) {
    return in.Error(absl::StrFormat("tensor count %d cannot fit in the %d bytes left",
                                    n_tensors, in.remaining()),
                    8);
  }
  absl::flat_hash_set<std::string> names;
  info.tensors.reserve(ReserveFor<GgufTensorInfo>(n_tensors, in.remaining()));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    const uint64_t at = in.offset();
    TQM_RETURN_IF_ERROR(ParseTensorInfo(in, path, info.alignment, &t));
    if (!names.insert(t.name).second) {
      return in.Error(absl::StrFormat("duplicate tensor name '%s'", t.name), at);
    }
    PushBounded(&info.tensors, std::move(t), n_tensors);
  }
  // The data area starts at the next multiple of the alignment.
  const uint64_t end = in.offset();
  const uint64_t pad = (info.alignment - end % info.alignment) % info.alignment;
  info.data_offset = end + pad;
  if (info.tensors.empty()) return info;
  if (info.data_offset > info.file_size) {
    return in.Error(
        absl::StrFormat("data area (aligned to %d) starts past the end of the "
                        "file (%d bytes)",
                        info.alignment, info.file_size),
        info.data_offset);
  }
  const uint64_t data_size = info.file_size - info.data_offset;
  std::vector<size_t> order(info.tensors.size());
  for (size_t i = 0; i < order.size(); ++i) {
    GgufTensorInfo& t = info.tensors[i];
    if (t.offset > data_size || t.size > data_size - t.offset) {
      return in.Error(
          absl::StrFormat(
              "tensor '%s': %d bytes at data offset %d lie past the end of the "
              "%d-byte data area (truncated?)",
              t.name, t.size, t.offset, data_size),
          info.data_offset + std::min(t.offset, data_size));
    }
    t.offset += info.data_offset;  // absolute from here on
    order[i] = i;
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return info.tensors[a].offset < info.tensors[b].offset;
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensorInfo& p = info.tensors[order[k - 1]];
    const GgufTensorInfo& t = info.tensors[order[k]];
    if (p.offset + p.size > t.offset) {
      return in.Error(absl::StrFormat("tensor '%s' (%d bytes) overlaps tensor '%s'",
                                      p.name, p.size, t.name),
                      t.offset);
    }
  }
  return info;
}

// ---- the TensorSource ----

class GgufSource : public TensorSource {
 public:
  GgufSource(std::unique_ptr<InputFile> file, std::vector<GgufTensorInfo> infos,
             std::vector<SourceTensor> tensors, std::vector<MetaEntry> meta)
      : file_(std::move(file)),
        infos_(std::move(infos)),
        tensors_(std::move(tensors)),
        meta_(std::move(meta)) {}

  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<MetaEntry>& metadata() const override { return meta_; }

  absl::Status Read(size_t i, std::vector<float>* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    const GgufTensorInfo& t = infos_[i];
    if (tensors_[i].kind == TensorKind::kRaw) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor '%s' (%s, %d elements) is kept verbatim and has no float32 "
          "values; read it with ReadRaw",
          file_->path(), t.name, GgmlTypeName(t.type), t.numel));
    }
    if (t.numel > out->max_size() || t.numel > (uint64_t{1} << 40)) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: tensor '%s': %d elements do not fit in memory",
                          file_->path(), t.name, t.numel));
    }
    const size_t n = static_cast<size_t>(t.numel);
    out->resize(n);
    absl::Status s = ReadInto(t, n, out->data());
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("tensor '%s': %s", t.name, s.message()));
    }
    return absl::OkStatus();
  }

  // Q8_0 blocks as group:32 codes, losslessly: a block (fp16 d, int8 q[32])
  // is the pair (scale d, zero 128) and the codes q + 128, so that
  // scale * (code - zero) = d * q exactly, as ggml dequantizes. A block with
  // d = 0 is all zeros (scale 1, codes 128); d < 0 flips the codes (scale -d,
  // codes 128 - q). A non-finite d, or q = -128 with d < 0, has no such
  // pair: an error naming the tensor and block.
  absl::Status ReadQuantized(size_t i, QuantizedTensor* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    const GgufTensorInfo& t = infos_[i];
    if (tensors_[i].kind != TensorKind::kQuantized) return TensorSource::ReadQuantized(i, out);
    if (t.numel > (uint64_t{1} << 40) || t.size > out->codes.max_size()) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: tensor '%s': %d elements do not fit in memory",
                          file_->path(), t.name, t.numel));
    }
    const size_t blocks = static_cast<size_t>(t.numel / gguf::kQ8_0BlockWeights);
    out->storage = format::kStorageU8Group;
    out->bits = 8;
    out->group_size = gguf::kQ8_0BlockWeights;
    out->codes.resize(static_cast<size_t>(t.numel));
    out->params.resize(blocks);
    std::vector<uint8_t> buf;
    constexpr size_t kBlocks = 4096;
    buf.resize(std::min(blocks, kBlocks) * gguf::kQ8_0BlockBytes);
    for (size_t done = 0; done < blocks;) {
      const size_t m = std::min(blocks - done, kBlocks);
      TQM_RETURN_IF_ERROR(file_->ReadAt(t.offset + done * gguf::kQ8_0BlockBytes, buf.data(),
                                        m * gguf::kQ8_0BlockBytes));
      for (size_t b = 0; b < m; ++b) {
        const uint8_t* blk = buf.data() + b * gguf::kQ8_0BlockBytes;
        const float d = internal::HalfToFloat(LoadLE16(blk));
        uint8_t* codes = out->codes.data() + (done + b) * gguf::kQ8_0BlockWeights;
        Affine& a = out->params[done + b];
        a.zero = 128.0f;
        bool ok = std::isfinite(d);
        for (size_t j = 0; ok && j < gguf::kQ8_0BlockWeights; ++j) {
          const int q = static_cast<int8_t>(blk[2 + j]);
          if (d > 0) {
            codes[j] = static_cast<uint8_t>(q + 128);
          } else if (d == 0) {
            codes[j] = 128;
          } else {
            ok = q != -128;
            codes[j] = static_cast<uint8_t>(128 - q);
          }
        }
        if (!ok) {
          return absl::DataLossError(absl::StrFormat(
              "%s: tensor '%s': Q8_0 block %d (scale %g) has no exact (scale, zero) pair",
              file_->path(), t.name, done + b, d));
        }
        a.scale = d > 0 ? d : (d == 0 ? 1.0f : -d);
      }
      done += m;
    }
    return absl::OkStatus();
  }

  // The stored bytes: every type but Q8_0, whose blocks are not elements of
  // one dtype.
  absl::Status ReadRaw(size_t i, std::string* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    const GgufTensorInfo& t = infos_[i];
    if (t.type == gguf::kGgmlQ8_0) return TensorSource::ReadRaw(i, out);
    // t.size was checked against the file on open.
    if (t.size > out->max_size()) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: tensor '%s': %d bytes do not fit in memory", file_->path(),
                          t.name, t.size));
    }
    out->resize(static_cast<size_t>(t.size));
    absl::Status s = file_->ReadAt(t.offset, out->data(), out->size());
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("tensor '%s': %s", t.name, s.message()));
    }
    return absl::OkStatus();
  }

 private:
  absl::Status CheckIndex(size_t i) const {
    if (i >= infos_.size()) {
      return absl::OutOfRangeError(
          absl::StrFormat("%s: tensor index %d out of range (%d tensors)", file_->path(),
                          i, infos_.size()));
    }
    return absl::OkStatus();
  }

  // Safe to call from several threads at once: no state but the file (pread).
  absl::Status ReadInto(const GgufTensorInfo& t, size_t n, float* dst) {
    std::vector<uint8_t> buf;
    if (t.type == gguf::kGgmlF32) {
      TQM_RETURN_IF_ERROR(file_->ReadAt(t.offset, dst, n * 4));
      internal::FixFloat32Endianness(dst, n);
      return absl::OkStatus();
    }
    constexpr size_t kBatch = 1 << 16;  // elements per read
    if (t.type == gguf::kGgmlF16 || t.type == gguf::kGgmlBF16) {
      const bool bf16 = t.type == gguf::kGgmlBF16;
      buf.resize(std::min(n, kBatch) * 2);
      for (size_t done = 0; done < n;) {
        const size_t m = std::min(n - done, kBatch);
        TQM_RETURN_IF_ERROR(file_->ReadAt(t.offset + done * 2, buf.data(), m * 2));
        for (size_t j = 0; j < m; ++j) {
          const uint16_t b = LoadLE16(buf.data() + 2 * j);
          dst[done + j] = bf16 ? internal::BFloat16ToFloat(b) : internal::HalfToFloat(b);
        }
        done += m;
      }
      return absl::OkStatus();
    }
    // Q8_0: weight = fp16 scale * int8, block by block (ggml's dequantize_row_q8_0).
    const size_t blocks = n / gguf::kQ8_0BlockWeights;
    constexpr size_t kBlocks = kBatch / gguf::kQ8_0BlockWeights;
    buf.resize(std::min(blocks, kBlocks) * gguf::kQ8_0BlockBytes);
    for (size_t done = 0; done < blocks;) {
      const size_t m = std::min(blocks - done, kBlocks);
      TQM_RETURN_IF_ERROR(file_->ReadAt(t.offset + done * gguf::kQ8_0BlockBytes,
                                        buf.data(), m * gguf::kQ8_0BlockBytes));
      for (size_t b = 0; b < m; ++b) {
        const uint8_t* blk = buf.data() + b * gguf::kQ8_0BlockBytes;
        const float d = internal::HalfToFloat(LoadLE16(blk));
        float* y = dst + (done + b) * gguf::kQ8_0BlockWeights;
        for (size_t j = 0; j < gguf::kQ8_0BlockWeights; ++j) {
          y[j] = static_cast<float>(static_cast<int8_t>(blk[2 + j])) * d;
        }
      }
      done += m;
    }
    return absl::OkStatus();
  }

  std::unique_ptr<InputFile> file_;
  std::vector<GgufTensorInfo> infos_;
  std::vector<SourceTensor> tensors_;
  std::vector<MetaEntry> meta_;
};

bool ValidTqmKey(const std::string& key) {
  if (key.empty() || key.size() > format::kMaxKeyLength) return false;
  for (char c : key) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
          c == '-')) {
      return false;
    }
  }
  return true;
}

format::SourceDType SourceDTypeOf(uint32_t ggml) {
  switch (ggml) {
    case gguf::kGgmlF16:
      return format::kDTypeF16;
    case gguf::kGgmlBF16:
      return format::kDTypeBF16;
    case gguf::kGgmlQ8_0:
      return format::kDTypeQ8_0;
    case gguf::kGgmlI8:
      return format::kDTypeI8;
    case gguf::kGgmlI16:
      return format::kDTypeI16;
    case gguf::kGgmlI32:
      return format::kDTypeI32;
    case gguf::kGgmlI64:
      return format::kDTypeI64;
    case gguf::kGgmlF64:
      return format::kDTypeF64;
    default:
      return format::kDTypeF32;
  }
}

// Moves the tokenizer.ggml.tokens strings out of `info` (a second copy of a
// large vocabulary would dominate what opening the file costs).
absl::StatusOr<std::vector<MetaEntry>> BuildMetadata(const std::string& path,
                                                     GgufInfo& info) {
  auto corrupt = [&](const std::string& what) {
    return absl::DataLossError(absl::StrFormat("%s: GGUF metadata: %s", path, what));
  };
  std::vector<MetaEntry> meta;
  absl::flat_hash_set<std::string> consumed;
  std::string arch;
  if (const GgufKeyValue* a = info.Find("general.architecture")) {
    if (a->type != gguf::kTypeString)
      return corrupt("general.architecture is not a string");
    arch = a->string_value;
    meta.push_back({meta_keys::kArchitecture, MetaValue::String(arch)});
    consumed.insert(a->key);
  }
  const GgufTensorInfo* embd = nullptr;
  const GgufTensorInfo* output = nullptr;
  int64_t max_block = -1;
  const std::string embd_name = llama::GgufName(llama::Tensor::kEmbed);
  const std::string output_name = llama::GgufName(llama::Tensor::kClassifier);
  for (const GgufTensorInfo& t : info.tensors) {
    if (t.name == embd_name) embd = &t;
    if (t.name == output_name) output = &t;
    const std::string hf = llama::GgufToHfName(t.name);
    if (!hf.empty()) max_block = std::max<int64_t>(max_block, LayerFromName(hf));
  }
  if (arch == "llama") {
    absl::flat_hash_map<std::string, int64_t> ints;
    // The integer keys of docs/LLAMA.md's table; vocab_size comes from
    // token_embd.weight's rows below.
    for (const llama::HparamKeys& m : llama::HparamTable()) {
      if (m.is_float || m.hparam == llama::Hparam::kVocabSize) continue;
      const std::string key = arch + "." + m.gguf;
      const GgufKeyValue* kv = info.Find(key);
      if (kv == nullptr) continue;
      int64_t v;
      if (!kv->AsInt64(&v) || v <= 0 || v > std::numeric_limits<int32_t>::max()) {
        return corrupt(absl::StrFormat("%s (type %s) is not a positive 32-bit integer",
                                       key, ValueTypeName(kv->type)));
      }
      ints[m.tqm] = v;
      consumed.insert(key);
    }
    if (ints.count(meta_keys::kHeads) && !ints.count(meta_keys::kKvHeads)) {
      ints[meta_keys::kKvHeads] = ints[meta_keys::kHeads];  // llama.cpp's default
    }
    if (embd != nullptr && embd->ne.size() == 2) {
      if (ints.count(meta_keys::kDim) &&
          static_cast<uint64_t>(ints[meta_keys::kDim]) != embd->ne[0]) {
        return corrupt(absl::StrFormat(
            "%s.embedding_length=%d contradicts token_embd.weight's row length %d", arch,
            ints[meta_keys::kDim], embd->ne[0]));
      }
      if (embd->ne[1] > 0 && embd->ne[1] <= static_cast<uint64_t>(INT32_MAX)) {
        ints[meta_keys::kVocabSize] = static_cast<int64_t>(embd->ne[1]);
      }
    }
    if (embd == nullptr) {
      const GgufKeyValue* kv = info.Find(arch + ".vocab_size");
      int64_t v;
      if (kv != nullptr && kv->AsInt64(&v) && v > 0 && v <= INT32_MAX) {
        ints[meta_keys::kVocabSize] = v;
        consumed.insert(kv->key);
      }
    }
    if (ints.count(meta_keys::kLayers) && max_block >= ints[meta_keys::kLayers]) {
      return corrupt(absl::StrFormat("tensor blk.%d.* lies beyond %s.block_count=%d",
                                     max_block, arch, ints[meta_keys::kLayers]));
    }
    if (ints.count(meta_keys::kHeads)) {
      const int64_t h = ints[meta_keys::kHeads], kv = ints[meta_keys::kKvHeads];
      if (kv > h || h % kv != 0) {
        return corrupt(
            absl::StrFormat("%s.attention.head_count_kv=%d does not divide "
                            "head_count=%d",
                            arch, kv, h));
      }
    }
    for (const llama::HparamKeys& m : llama::HparamTable()) {
      auto it = ints.find(m.tqm);
      if (it != ints.end()) meta.push_back({m.tqm, MetaValue::Int(it->second)});
    }
    auto float_key = [&](const std::string& key, const char* tqm,
                         double fallback) -> absl::Status {
      const GgufKeyValue* kv = info.Find(key);
      double v = fallback;
      if (kv != nullptr) {
        if (kv->type != gguf::kTypeF32 && kv->type != gguf::kTypeF64) {
          return corrupt(absl::StrFormat("%s has type %s, expected f32", key,
                                         ValueTypeName(kv->type)));
        }
        v = kv->float_value;
        if (!std::isfinite(v) || v <= 0) {
          return corrupt(absl::StrFormat("%s=%g is not a positive number", key, v));
        }
        consumed.insert(key);
      } else if (fallback == 0) {
        return absl::OkStatus();
      }
      meta.push_back({tqm, MetaValue::Float(v)});
      return absl::OkStatus();
    };
    const llama::HparamKeys& eps = llama::KeysOf(llama::Hparam::kNormEps);
    const llama::HparamKeys& theta = llama::KeysOf(llama::Hparam::kRopeTheta);
    TQM_RETURN_IF_ERROR(float_key(arch + "." + eps.gguf, eps.tqm, 0));
    TQM_RETURN_IF_ERROR(float_key(arch + "." + theta.gguf, theta.tqm, 10000.0));
    // llama.cpp's LLAMA architecture rotates adjacent pairs: q/k rows stay as
    // they are (docs/LLAMA.md).
    meta.push_back({meta_keys::kRopeLayout, MetaValue::String(llama::kRopeLayoutMeta)});
    if (embd != nullptr) {
      meta.push_back(
          {meta_keys::kTiedClassifier, MetaValue::Int(output == nullptr ? 1 : 0)});
    }
  }
  meta.push_back({meta_keys::kSourceFormat, MetaValue::String("gguf")});
  meta.push_back({meta_keys::kSourceFile, MetaValue::String(internal::Basename(path))});

  // The SentencePiece vocabulary as a llama2.c tokenizer blob.
  const GgufKeyValue* model = info.Find("tokenizer.ggml.model");
  GgufKeyValue* tokens = nullptr;
  for (GgufKeyValue& kv : info.metadata) {
    if (kv.key == "tokenizer.ggml.tokens") tokens = &kv;
  }
  if (model != nullptr && model->type == gguf::kTypeString &&
      model->string_value == "llama" && tokens != nullptr &&
      tokens->type == gguf::kTypeArray && tokens->array_type == gguf::kTypeString) {
    GgufVocab v;
    v.tokens = std::move(tokens->array_strings);
    if (const GgufKeyValue* s = info.Find("tokenizer.ggml.scores")) {
      if (s->type != gguf::kTypeArray || s->array_size != v.tokens.size() ||
          (s->array_type != gguf::kTypeF32 && s->array_type != gguf::kTypeF64)) {
        return corrupt("tokenizer.ggml.scores is not an f32 array as long as the tokens");
      }
      for (double d : s->array_numbers) v.scores.push_back(static_cast<float>(d));
    }
    if (const GgufKeyValue* t = info.Find("tokenizer.ggml.token_type")) {
      if (t->type != gguf::kTypeArray || t->array_size != v.tokens.size() ||
          t->array_type == gguf::kTypeString || t->array_type == gguf::kTypeF32 ||
          t->array_type == gguf::kTypeF64) {
        return corrupt(
            "tokenizer.ggml.token_type is not an integer array as long as the "
            "tokens");
      }
      for (double d : t->array_numbers) v.types.push_back(static_cast<int32_t>(d));
    }
    int64_t id;
    if (const GgufKeyValue* k = info.Find("tokenizer.ggml.bos_token_id");
        k && k->AsInt64(&id))
      v.bos_id = static_cast<uint32_t>(id);
    if (const GgufKeyValue* k = info.Find("tokenizer.ggml.eos_token_id");
        k && k->AsInt64(&id))
      v.eos_id = static_cast<uint32_t>(id);
    TQM_ASSIGN_OR_RETURN(std::string blob, Llama2cTokenizerFromVocab(v));
    meta.push_back({meta_keys::kTokenizerLlama2c, MetaValue::Bytes(std::move(blob))});
  }

  // Every other scalar key, verbatim under "gguf.".
  for (const GgufKeyValue& kv : info.metadata) {
    if (consumed.count(kv.key) || kv.type == gguf::kTypeArray) continue;
    const std::string key = "gguf." + kv.key;
    if (!ValidTqmKey(key)) continue;  // not representable in a .tqm key
    MetaValue v;
    int64_t i;
    if (kv.type == gguf::kTypeString) {
      v = MetaValue::String(kv.string_value);
    } else if (kv.type == gguf::kTypeF32 || kv.type == gguf::kTypeF64) {
      v = MetaValue::Float(kv.float_value);
    } else if (kv.AsInt64(&i)) {
      v = MetaValue::Int(i);
    } else {
      v = MetaValue::String(absl::StrCat(kv.uint_value));  // u64 above int64
    }
    meta.push_back({key, std::move(v)});
  }
  return meta;
}

}  // namespace

// ---- GgufKeyValue / GgufInfo ----

bool GgufKeyValue::is_integer() const {
  switch (type) {
    case gguf::kTypeU8:
    case gguf::kTypeI8:
    case gguf::kTypeU16:
    case gguf::kTypeI16:
    case gguf::kTypeU32:
    case gguf::kTypeI32:
    case gguf::kTypeU64:
    case gguf::kTypeI64:
      return true;
    default:
      return false;
  }
}

bool GgufKeyValue::AsInt64(int64_t* out) const {
  switch (type) {
    case gguf::kTypeI8:
    case gguf::kTypeI16:
    case gguf::kTypeI32:
    case gguf::kTypeI64:
      *out = int_value;
      return true;
    case gguf::kTypeU8:
    case gguf::kTypeU16:
    case gguf::kTypeU32:
    case gguf::kTypeU64:
    case gguf::kTypeBool:
      if (uint_value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return false;
      *out = static_cast<int64_t>(uint_value);
      return true;
    default:
      return false;
  }
}

const GgufKeyValue* GgufInfo::Find(const std::string& key) const {
  for (const GgufKeyValue& kv : metadata) {
    if (kv.key == key) return &kv;
  }
  return nullptr;
}

absl::StatusOr<GgufInfo> ReadGgufInfo(const std::string& path) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  return ParseGguf(*file);
}

absl::StatusOr<GgufInfo> internal::ReadGgufInfo(const InputFile& file) {
  return ParseGguf(file);
}

absl::StatusOr<std::unique_ptr<TensorSource>> OpenGguf(const std::string& path) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<InputFile> file, InputFile::Open(path));
  return internal::OpenGgufInput(std::move(file));
}

absl::StatusOr<std::unique_ptr<TensorSource>> internal::OpenGgufInput(
    std::unique_ptr<InputFile> file) {
  const std::string path = file->path();
  TQM_ASSIGN_OR_RETURN(GgufInfo info, ParseGguf(*file));
  TQM_ASSIGN_OR_RETURN(std::vector<MetaEntry> meta, BuildMetadata(path, info));
  std::vector<SourceTensor> tensors;
  absl::flat_hash_set<std::string> names;
  for (const GgufTensorInfo& t : info.tensors) {
    SourceTensor s;
    s.name = llama::GgufToHfName(t.name);
    if (s.name.empty()) s.name = t.name;  // outside the Llama table: kept as is
    if (!names.insert(s.name).second) {
      return absl::DataLossError(absl::StrFormat(
          "%s: GGUF tensor '%s' maps to '%s', which another tensor already has", path,
          t.name, s.name));
    }
    s.dtype = SourceDTypeOf(t.type);
    s.dims.assign(t.ne.rbegin(), t.ne.rend());
    // Integer and F64 tensors, and empty ones, are kept byte for byte (an
    // empty Q8_0 tensor has no element dtype to keep: it stays as it was).
    const bool weights = t.type == gguf::kGgmlF32 || t.type == gguf::kGgmlF16 ||
                         t.type == gguf::kGgmlBF16 || t.type == gguf::kGgmlQ8_0;
    s.kind = weights && (t.numel > 0 || t.type == gguf::kGgmlQ8_0) ? TensorKind::kFloat
                                                                    : TensorKind::kRaw;
    // Q8_0 blocks are kept as group:32 codes (ReadQuantized).
    if (t.type == gguf::kGgmlQ8_0 && t.numel > 0) s.kind = TensorKind::kQuantized;
    tensors.push_back(std::move(s));
  }
  return std::unique_ptr<TensorSource>(new GgufSource(
      std::move(file), std::move(info.tensors), std::move(tensors), std::move(meta)));
}

// ---- tokenizer conversions ----

absl::StatusOr<std::string> Llama2cTokenizerFromVocab(const GgufVocab& vocab) {
  const size_t n = vocab.tokens.size();
  if ((!vocab.scores.empty() && vocab.scores.size() != n) ||
      (!vocab.types.empty() && vocab.types.size() != n)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tokenizer arrays disagree: %d tokens, %d scores, %d types", n,
                        vocab.scores.size(), vocab.types.size()));
  }
  // One pass straight into the output (no copy of the texts), reserved up
  // front: every text is at most its token plus the two newlines BOS/EOS get.
  uint64_t reserve = 4;
  for (const std::string& t : vocab.tokens) reserve += 8 + t.size() + 2;
  std::string out;
  out.reserve(static_cast<size_t>(reserve));
  auto put32 = [&out](uint32_t v) {
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>(v >> (8 * b)));
  };
  put32(0);  // max_token_length, patched below
  uint64_t max_len = 0;
  std::string t;
  for (size_t i = 0; i < n; ++i) {
    const std::string& token = vocab.tokens[i];
    if (i == vocab.bos_id && token == "<s>") {
      t = "\n<s>\n";  // what llama2.c's tokenizer.py writes
    } else if (i == vocab.eos_id && token == "</s>") {
      t = "\n</s>\n";
    } else {
      t = absl::StrReplaceAll(token, {{kSpaceMarker, " "}});
    }
    if (t.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
      return absl::InvalidArgumentError(absl::StrFormat("token %d is too long", i));
    }
    max_len = std::max<uint64_t>(max_len, t.size());
    const float score = vocab.scores.empty() ? 0.0f : vocab.scores[i];
    uint32_t bits;
    std::memcpy(&bits, &score, 4);
    put32(bits);
    put32(static_cast<uint32_t>(t.size()));
    out += t;
  }
  for (int b = 0; b < 4; ++b) out[b] = static_cast<char>(max_len >> (8 * b));
  return out;
}

absl::StatusOr<GgufVocab> VocabFromLlama2cTokenizer(const std::string& blob,
                                                    uint64_t vocab_size) {
  auto corrupt = [](const std::string& what, uint64_t at) {
    return absl::DataLossError(
        absl::StrFormat("tokenizer.llama2c: %s at offset %d", what, at));
  };
  const uint8_t* p = reinterpret_cast<const uint8_t*>(blob.data());
  const uint64_t size = blob.size();
  if (size < 4) return corrupt("too short for max_token_length", 0);
  if (vocab_size > (size - 4) / 8) {
    return corrupt(absl::StrFormat("%d tokens cannot fit in %d bytes", vocab_size, size),
                   0);
  }
  GgufVocab v;
  uint64_t pos = 4;
  for (uint64_t i = 0; i < vocab_size; ++i) {
    if (size - pos < 8) return corrupt(absl::StrFormat("token %d is cut off", i), pos);
    const float score = internal::BitsToFloat(LoadLE32(p + pos));
    const int32_t len = static_cast<int32_t>(LoadLE32(p + pos + 4));
    if (len < 0 || static_cast<uint64_t>(len) > size - pos - 8) {
      return corrupt(
          absl::StrFormat("token %d has length %d, more than the %d bytes left", i, len,
                          size - pos - 8),
          pos + 4);
    }
    std::string text =
        blob.substr(static_cast<size_t>(pos + 8), static_cast<size_t>(len));
    pos += 8 + static_cast<uint64_t>(len);
    // llama.cpp's convert-llama2c-to-ggml.cpp, load_vocab().
    int32_t type = 1;  // normal
    auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
    if (i == 0) {
      text = "<unk>";
      type = 2;
    } else if (i == 1) {
      text = "<s>";
      type = 3;
    } else if (i == 2) {
      text = "</s>";
      type = 3;
    } else if (text.empty()) {
      type = 3;
    } else if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && hex(text[3]) &&
               hex(text[4]) && text[5] == '>') {
      type = 6;
    }
    v.tokens.push_back(absl::StrReplaceAll(text, {{" ", kSpaceMarker}}));
    v.scores.push_back(score);
    v.types.push_back(type);
  }
  return v;
}

// ---- GGUF export ----

namespace internal {

// ggml's quantize_row_q8_0_ref over whole blocks of 32.
void QuantizeQ8_0(const float* x, size_t n, std::string* out) {
  for (size_t b = 0; b < n / gguf::kQ8_0BlockWeights; ++b) {
    const float* v = x + b * gguf::kQ8_0BlockWeights;
    float amax = 0.0f;
    for (size_t j = 0; j < gguf::kQ8_0BlockWeights; ++j)
      amax = std::max(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t h = FloatToHalf(d);
    out->push_back(static_cast<char>(h & 0xFF));
    out->push_back(static_cast<char>(h >> 8));
    for (size_t j = 0; j < gguf::kQ8_0BlockWeights; ++j) {
      out->push_back(static_cast<char>(static_cast<int8_t>(std::round(v[j] * id))));
    }
  }
}

}  // namespace internal

namespace {

class KvWriter {
 public:
  uint64_t count() const { return count_; }
  const std::string& bytes() const { return out_; }

  void Str(const std::string& key, const std::string& v) {
    Key(key, gguf::kTypeString);
    RawStr(v);
  }
  void U32(const std::string& key, uint32_t v) {
    Key(key, gguf::kTypeU32);
    Raw32(v);
  }
  void F32(const std::string& key, float v) {
    Key(key, gguf::kTypeF32);
    uint32_t b;
    std::memcpy(&b, &v, 4);
    Raw32(b);
  }
  void StrArray(const std::string& key, const std::vector<std::string>& v) {
    Key(key, gguf::kTypeArray);
    Raw32(gguf::kTypeString);
    Raw64(v.size());
    for (const std::string& s : v) RawStr(s);
  }
  void F32Array(const std::string& key, const std::vector<float>& v) {
    Key(key, gguf::kTypeArray);
    Raw32(gguf::kTypeF32);
    Raw64(v.size());
    for (float f : v) {
      uint32_t b;
      std::memcpy(&b, &f, 4);
      Raw32(b);
    }
  }
  void I32Array(const std::string& key, const std::vector<int32_t>& v) {
    Key(key, gguf::kTypeArray);
    Raw32(gguf::kTypeI32);
    Raw64(v.size());
    for (int32_t i : v) Raw32(static_cast<uint32_t>(i));
  }

  void Raw32(uint32_t v) {
    for (int b = 0; b < 4; ++b) out_.push_back(static_cast<char>(v >> (8 * b)));
  }
  void Raw64(uint64_t v) {
    for (int b = 0; b < 8; ++b) out_.push_back(static_cast<char>(v >> (8 * b)));
  }
  void RawStr(const std::string& s) {
    Raw64(s.size());
    out_ += s;
  }

 private:
  void Key(const std::string& key, uint32_t type) {
    ++count_;
    RawStr(key);
    Raw32(type);
  }
  std::string out_;
  uint64_t count_ = 0;
};

struct OutTensor {
  size_t index;  // in the Reader
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  uint64_t offset;
  uint64_t size;
};

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

const MetaValue* FindTyped(const Reader& r, const std::string& key,
                           format::MetaType type) {
  const MetaValue* v = r.FindMeta(key);
  return v != nullptr && v->type == type ? v : nullptr;
}

}  // namespace

// Writes tensor t's Q8_0 blocks into `out` when its codes are Q8_0 blocks
// already, bit for bit: U8_GROUP of 32 along rows, 8 bits, every zero 128,
// every scale an fp16 value, and no row permutation needed (q/k rows of a
// file in the Hugging Face rotary order are permuted through floats).
// Returns false, leaving `out` empty, otherwise.
bool Q8_0Blocks(const Reader& r, size_t t, const LlamaDims& d, std::string* out) {
  const TensorInfo& ti = r.tensors()[t];
  if (ti.storage != format::kStorageU8Group || ti.group_size != gguf::kQ8_0BlockWeights ||
      ti.bits != 8 || ti.dims.empty() || ti.dims.back() % gguf::kQ8_0BlockWeights != 0) {
    return false;
  }
  if (d.rope_hf && (llama::IsQProj(ti.name) || llama::IsKProj(ti.name))) return false;
  for (const Affine& a : ti.affine) {
    if (a.zero != 128.0f || internal::HalfToFloat(internal::FloatToHalf(a.scale)) != a.scale) {
      return false;
    }
  }
  std::vector<uint8_t> codes(ti.numel);
  if (!r.DecodeTensor(t, absl::MakeSpan(codes)).ok()) return false;
  out->resize(ti.affine.size() * gguf::kQ8_0BlockBytes);
  for (size_t b = 0; b < ti.affine.size(); ++b) {
    char* blk = out->data() + b * gguf::kQ8_0BlockBytes;
    const uint16_t h = internal::FloatToHalf(ti.affine[b].scale);
    blk[0] = static_cast<char>(h & 0xFF);
    blk[1] = static_cast<char>(h >> 8);
    for (size_t j = 0; j < gguf::kQ8_0BlockWeights; ++j) {
      blk[2 + j] = static_cast<char>(static_cast<int>(codes[b * gguf::kQ8_0BlockWeights + j]) - 128);
    }
  }
  return true;
}

absl::Status ExportGguf(const Reader& r, const std::string& out_path,
                        const GgufExportOptions& options) {
  TQM_ASSIGN_OR_RETURN(LlamaDims d, DescribeLlama(r, options.overrides));
  auto fits_u32 = [](int64_t v) { return v >= 0 && v <= 0xFFFFFFFFll; };
  for (int64_t v : {d.dim, d.hidden_dim, d.n_layers, d.n_heads, d.n_kv_heads,
                    d.vocab_size, d.seq_len}) {
    if (!fits_u32(v)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: hyperparameter %d does not fit GGUF's u32", r.name(), v));
    }
  }

  // Tensor table: llama.cpp names, ne order, types, offsets.
  std::vector<OutTensor> out;
  uint64_t offset = 0;
  bool any_q8 = false, any_f16 = false;
  for (size_t i = 0; i < r.tensors().size(); ++i) {
    const TensorInfo& t = r.tensors()[i];
    OutTensor o;
    o.index = i;
    o.name = llama::HfToGgufName(t.name);  // DescribeLlama checked it maps
    o.ne.assign(t.dims.rbegin(), t.dims.rend());
    o.type = gguf::kGgmlF32;
    if (t.dims.size() >= 2) {
      if (options.type == GgufExportType::kF16) {
        o.type = gguf::kGgmlF16;
      } else if (options.type == GgufExportType::kQ8_0) {
        o.type =
            o.ne[0] % gguf::kQ8_0BlockWeights == 0 ? gguf::kGgmlQ8_0 : gguf::kGgmlF16;
      }
    }
    any_q8 |= o.type == gguf::kGgmlQ8_0;
    any_f16 |= o.type == gguf::kGgmlF16;
    o.size = o.type == gguf::kGgmlF32 ? t.numel * 4
             : o.type == gguf::kGgmlF16
                 ? t.numel * 2
                 : t.numel / gguf::kQ8_0BlockWeights * gguf::kQ8_0BlockBytes;
    o.offset = offset;
    offset = AlignUp(offset + o.size, gguf::kDefaultAlignment);
    out.push_back(std::move(o));
  }

  KvWriter kv;
  kv.Str("general.architecture", "llama");
  std::string name = "tqm";
  if (const MetaValue* v = FindTyped(r, "gguf.general.name", format::kMetaString)) {
    name = v->bytes;
  } else if (const MetaValue* v =
                 FindTyped(r, meta_keys::kSourceFile, format::kMetaString)) {
    name = v->bytes.substr(0, v->bytes.find('.'));
  }
  kv.Str("general.name", name);
  kv.U32("general.file_type", any_q8    ? gguf::kFileTypeMostlyQ8_0
                              : any_f16 ? gguf::kFileTypeMostlyF16
                                        : gguf::kFileTypeAllF32);
  if (any_q8) kv.U32("general.quantization_version", 2);
  kv.U32("general.alignment", gguf::kDefaultAlignment);
  // In the order llama.cpp's converters write them (the bytes of the file
  // depend on it), the names from docs/LLAMA.md's table.
  using llama::Hparam;
  auto u32 = [&](Hparam h) {
    kv.U32(absl::StrCat("llama.", llama::KeysOf(h).gguf),
           static_cast<uint32_t>(llama::IntOf(d, h)));
  };
  auto f32 = [&](Hparam h) {
    kv.F32(absl::StrCat("llama.", llama::KeysOf(h).gguf),
           static_cast<float>(llama::FloatOf(d, h)));
  };
  u32(Hparam::kSeqLen);
  u32(Hparam::kDim);
  u32(Hparam::kHiddenDim);
  u32(Hparam::kLayers);
  u32(Hparam::kHeads);
  u32(Hparam::kKvHeads);
  kv.U32("llama.rope.dimension_count", static_cast<uint32_t>(d.head_size()));
  f32(Hparam::kNormEps);
  f32(Hparam::kRopeTheta);
  u32(Hparam::kVocabSize);
  const MetaValue* blob = r.FindMeta(meta_keys::kTokenizerLlama2c);
  if (blob != nullptr && blob->type == format::kMetaBytes) {
    absl::StatusOr<GgufVocab> vocab =
        VocabFromLlama2cTokenizer(blob->bytes, static_cast<uint64_t>(d.vocab_size));
    if (!vocab.ok()) {
      return absl::Status(vocab.status().code(),
                          absl::StrCat(r.name(), ": ", vocab.status().message()));
    }
    auto id = [&](const char* key, uint32_t fallback) {
      const MetaValue* v = FindTyped(r, key, format::kMetaInt64);
      return v != nullptr && v->int64 >= 0 && v->int64 < d.vocab_size
                 ? static_cast<uint32_t>(v->int64)
                 : fallback;
    };
    kv.Str("tokenizer.ggml.model", "llama");
    kv.StrArray("tokenizer.ggml.tokens", vocab->tokens);
    kv.F32Array("tokenizer.ggml.scores", vocab->scores);
    kv.I32Array("tokenizer.ggml.token_type", vocab->types);
    kv.U32("tokenizer.ggml.unknown_token_id",
           id("gguf.tokenizer.ggml.unknown_token_id", 0));
    kv.U32("tokenizer.ggml.bos_token_id", id("gguf.tokenizer.ggml.bos_token_id", 1));
    kv.U32("tokenizer.ggml.eos_token_id", id("gguf.tokenizer.ggml.eos_token_id", 2));
  } else {
    kv.Str("tokenizer.ggml.model", "no_vocab");
  }

  KvWriter head;
  head.Raw32(LoadLE32(gguf::kMagic));
  head.Raw32(gguf::kWriteVersion);
  head.Raw64(out.size());
  head.Raw64(kv.count());
  std::string header = head.bytes() + kv.bytes();
  KvWriter infos;
  for (const OutTensor& o : out) {
    infos.RawStr(o.name);
    infos.Raw32(static_cast<uint32_t>(o.ne.size()));
    for (uint64_t n : o.ne) infos.Raw64(n);
    infos.Raw32(o.type);
    infos.Raw64(o.offset);
  }
  header += infos.bytes();
  header.append(AlignUp(header.size(), gguf::kDefaultAlignment) - header.size(), '\0');

  TQM_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(out_path));
  TQM_RETURN_IF_ERROR(file->Append(header));
  const uint64_t data_start = header.size();
  std::vector<float> f;
  std::string bytes;
  for (const OutTensor& o : out) {
    bytes.clear();
    if (o.type != gguf::kGgmlQ8_0 || !Q8_0Blocks(r, o.index, d, &bytes)) {
      TQM_RETURN_IF_ERROR(llama::ReadMetaLayout(r, o.index, d, &f));
      if (o.type == gguf::kGgmlF32) {
        bytes.assign(reinterpret_cast<const char*>(f.data()), f.size() * 4);
      } else if (o.type == gguf::kGgmlF16) {
        bytes.resize(f.size() * 2);
        for (size_t j = 0; j < f.size(); ++j) {
          const uint16_t h = internal::FloatToHalf(f[j]);
          bytes[2 * j] = static_cast<char>(h & 0xFF);
          bytes[2 * j + 1] = static_cast<char>(h >> 8);
        }
      } else {
        bytes.reserve(o.size);
        internal::QuantizeQ8_0(f.data(), f.size(), &bytes);
      }
    }
    if (file->size() != data_start + o.offset || bytes.size() != o.size) {
      return absl::InternalError(
          absl::StrFormat("%s: GGUF layout mismatch at tensor %s", out_path, o.name));
    }
    bytes.append(AlignUp(bytes.size(), gguf::kDefaultAlignment) - bytes.size(), '\0');
    TQM_RETURN_IF_ERROR(file->Append(bytes));
  }
  return file->Commit();
}

}  // namespace tqm
