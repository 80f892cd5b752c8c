// The C API (tqm/c_api.h) over tqm::Model and tqm::Reader. Every entry point
// catches every C++ exception and turns absl::Status into a stable tqm_status
// plus a thread-local message, so nothing C++ crosses the boundary.

#include "tqm/c_api.h"

#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "tqm/loader.h"
#include "tqm/reader.h"
#include "tqm/source.h"
#include "tqm/version.h"

struct tqm_file {
  std::unique_ptr<tqm::Model> model;
  std::mutex mu;
  std::set<tqm_layer*> layers;  // pinned, released by tqm_close if still held
};

struct tqm_layer {
  tqm_file* file = nullptr;
  tqm::LayerHandle handle;
};

static_assert(sizeof(tqm_affine) == sizeof(tqm::Affine), "tqm_affine layout");
static_assert(offsetof(tqm_affine, zero) == offsetof(tqm::Affine, zero),
              "tqm_affine layout");
static_assert(static_cast<int>(TQM_META_BYTES) == tqm::format::kMetaBytes, "meta types");
static_assert(static_cast<int>(TQM_STORAGE_U8_ROW) == tqm::format::kStorageU8Row,
              "storage ids");
static_assert(static_cast<int>(TQM_STORAGE_U8_GROUP) == tqm::format::kStorageU8Group,
              "storage ids");
static_assert(static_cast<int>(TQM_STORAGE_RAW) == tqm::format::kStorageRaw,
              "storage ids");
static_assert(static_cast<int>(TQM_STORAGE_RAW) == tqm::format::kMaxStorage,
              "every storage has a C name");
static_assert(static_cast<int>(TQM_DTYPE_Q8_0) == tqm::format::kDTypeQ8_0, "dtype ids");
static_assert(static_cast<int>(TQM_DTYPE_F64) == tqm::format::kDTypeF64, "dtype ids");
static_assert(static_cast<int>(TQM_DTYPE_I64) == tqm::format::kDTypeI64, "dtype ids");
static_assert(static_cast<int>(TQM_DTYPE_U64) == tqm::format::kDTypeU64, "dtype ids");
static_assert(static_cast<int>(TQM_DTYPE_BOOL) == tqm::format::kDTypeBool, "dtype ids");
static_assert(static_cast<int>(TQM_DTYPE_BOOL) == tqm::format::kMaxDType,
              "every dtype has a C name");
static_assert(TQM_NO_LAYER == tqm::format::kNoLayer, "no-layer id");
static_assert(TQM_MAX_DIMS == tqm::format::kMaxDims, "max dims");

namespace {

thread_local tqm_status g_code = TQM_OK;
thread_local std::string g_message;

tqm_status CodeOf(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      return TQM_OK;
    case absl::StatusCode::kInvalidArgument:
      return TQM_INVALID_ARGUMENT;
    case absl::StatusCode::kNotFound:
      return TQM_NOT_FOUND;
    case absl::StatusCode::kDataLoss:
      return TQM_DATA_LOSS;
    case absl::StatusCode::kUnimplemented:
      return TQM_UNIMPLEMENTED;
    case absl::StatusCode::kResourceExhausted:
      return TQM_RESOURCE_EXHAUSTED;
    case absl::StatusCode::kFailedPrecondition:
      return TQM_FAILED_PRECONDITION;
    case absl::StatusCode::kPermissionDenied:
      return TQM_PERMISSION_DENIED;
    case absl::StatusCode::kOutOfRange:
      return TQM_OUT_OF_RANGE;
    case absl::StatusCode::kInternal:
      return TQM_INTERNAL;
    default:
      return TQM_OS_ERROR;
  }
}

tqm_status Set(tqm_status code, std::string message) {
  g_code = code;
  g_message = std::move(message);
  return code;
}

tqm_status Set(const absl::Status& s) {
  return Set(CodeOf(s), s.ok() ? std::string() : std::string(s.message()));
}

// Runs `f` (returning absl::Status) with every exception caught.
template <typename F>
tqm_status Guard(F&& f) noexcept {
  try {
    return Set(f());
  } catch (const std::bad_alloc&) {
    return Set(TQM_RESOURCE_EXHAUSTED, "out of memory");
  } catch (const std::exception& e) {
    return Set(TQM_INTERNAL, std::string("unexpected C++ exception: ") + e.what());
  } catch (...) {
    return Set(TQM_INTERNAL, "unexpected C++ exception");
  }
}

absl::Status Null(const char* what) {
  return absl::InvalidArgumentError(absl::StrFormat("%s is NULL", what));
}

const tqm::Reader& R(const tqm_file* f) { return f->model->reader(); }

// Validates a tensor index, returning the tensor or an error.
absl::Status Tensor(const tqm_file* f, size_t index, const tqm::TensorInfo** out) {
  if (f == nullptr) return Null("file");
  const auto& ts = R(f).tensors();
  if (index >= ts.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: tensor index %d out of range (%d tensors)", R(f).name(), index, ts.size()));
  }
  *out = &ts[index];
  return absl::OkStatus();
}

absl::Status Entry(const tqm_file* f, size_t index, const tqm::MetaEntry** out) {
  if (f == nullptr) return Null("file");
  const auto& m = R(f).metadata();
  if (index >= m.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: metadata index %d out of range (%d entries)", R(f).name(), index, m.size()));
  }
  *out = &m[index];
  return absl::OkStatus();
}

absl::Status WrongType(const tqm_file* f, const tqm::MetaEntry& e, const char* want) {
  static const char* const kNames[] = {"?", "int64", "float64", "string", "bytes"};
  const int t = e.value.type;
  return absl::FailedPreconditionError(
      absl::StrFormat("%s: metadata '%s' is %s, not %s", R(f).name(), e.key,
                      t >= 1 && t <= 4 ? kNames[t] : "?", want));
}

absl::Status Small(const tqm_file* f, const tqm::TensorInfo& t, size_t have,
                   uint64_t need, const char* unit) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: tensor '%s': buffer of %d %s is smaller than the %d needed",
                      R(f).name(), t.name, have, unit, need));
}

void FillView(const tqm::TensorView& v, tqm_view* out) {
  out->tensor = static_cast<size_t>(v.tensor);
  out->name = v.info->name.c_str();
  out->numel = v.info->numel;
  out->rows = v.info->dims.empty() ? 0 : v.info->dims[0];
  out->cols = out->rows ? v.info->numel / out->rows : 0;
  out->q = v.q.empty() ? nullptr : v.q.data();
  out->f32 = v.f32.empty() ? nullptr : v.f32.data();
  out->affine =
      v.affine.empty() ? nullptr : reinterpret_cast<const tqm_affine*>(v.affine.data());
  out->affine_count = v.affine.size();
  out->in_place = v.in_place ? 1 : 0;
}

}  // namespace

extern "C" {

const char* tqm_version(void) { return TQM_VERSION_STRING; }

const char* tqm_status_name(tqm_status s) {
  switch (s) {
    case TQM_OK:
      return "TQM_OK";
    case TQM_INVALID_ARGUMENT:
      return "TQM_INVALID_ARGUMENT";
    case TQM_NOT_FOUND:
      return "TQM_NOT_FOUND";
    case TQM_DATA_LOSS:
      return "TQM_DATA_LOSS";
    case TQM_UNIMPLEMENTED:
      return "TQM_UNIMPLEMENTED";
    case TQM_RESOURCE_EXHAUSTED:
      return "TQM_RESOURCE_EXHAUSTED";
    case TQM_FAILED_PRECONDITION:
      return "TQM_FAILED_PRECONDITION";
    case TQM_PERMISSION_DENIED:
      return "TQM_PERMISSION_DENIED";
    case TQM_OS_ERROR:
      return "TQM_OS_ERROR";
    case TQM_OUT_OF_RANGE:
      return "TQM_OUT_OF_RANGE";
    case TQM_INTERNAL:
      return "TQM_INTERNAL";
  }
  return "TQM_UNKNOWN_STATUS";
}

tqm_status tqm_last_error_code(void) { return g_code; }
const char* tqm_last_error_message(void) { return g_message.c_str(); }

void tqm_open_options_init(tqm_open_options* o) {
  if (o == nullptr) return;
  std::memset(o, 0, sizeof(*o));
  o->verify_checksums = 1;
}

tqm_status tqm_open_ex(const char* path, const tqm_open_options* options,
                       tqm_file** out) {
  return Guard([&]() -> absl::Status {
    if (out == nullptr) return Null("out");
    *out = nullptr;
    if (path == nullptr) return Null("path");
    tqm_open_options o;
    tqm_open_options_init(&o);
    if (options != nullptr) o = *options;
    if (o.threads < 0 || o.prefetch < 0) {
      return absl::InvalidArgumentError("threads and prefetch must not be negative");
    }
    tqm::ModelOptions mo;
    mo.threads = o.threads;
    mo.verify_checksums = o.verify_checksums != 0;
    mo.dequantize = o.dequantize != 0;
    mo.prefetch = o.prefetch;
    mo.budget_bytes = o.budget_bytes;
    absl::StatusOr<std::unique_ptr<tqm::Model>> m = tqm::Model::Open(path, mo);
    if (!m.ok()) return m.status();
    auto f = std::make_unique<tqm_file>();
    f->model = std::move(m).value();
    *out = f.release();
    return absl::OkStatus();
  });
}

tqm_status tqm_open(const char* path, tqm_file** out) {
  return tqm_open_ex(path, nullptr, out);
}

void tqm_close(tqm_file* f) {
  if (f == nullptr) return;
  try {
    std::set<tqm_layer*> held;
    {
      std::lock_guard<std::mutex> lock(f->mu);
      held.swap(f->layers);
    }
    for (tqm_layer* l : held) delete l;  // the LayerHandle drops its pin
    delete f;
  } catch (...) {
    // Destructors do not throw; nothing may escape regardless.
  }
}

tqm_status tqm_verify(const tqm_file* f) {
  return Guard([&]() -> absl::Status {
    if (f == nullptr) return Null("file");
    return R(f).Verify();
  });
}

// ---- metadata ----

size_t tqm_metadata_count(const tqm_file* f) { return f ? R(f).metadata().size() : 0; }

tqm_status tqm_metadata_key(const tqm_file* f, size_t i, const char** key) {
  return Guard([&]() -> absl::Status {
    if (key == nullptr) return Null("key");
    const tqm::MetaEntry* e = nullptr;
    absl::Status s = Entry(f, i, &e);
    if (!s.ok()) return s;
    *key = e->key.c_str();
    return absl::OkStatus();
  });
}

tqm_status tqm_metadata_find(const tqm_file* f, const char* key, size_t* index) {
  return Guard([&]() -> absl::Status {
    if (f == nullptr) return Null("file");
    if (key == nullptr || index == nullptr) return Null(key ? "index" : "key");
    const auto& m = R(f).metadata();
    for (size_t i = 0; i < m.size(); ++i) {
      if (m[i].key == key) {
        *index = i;
        return absl::OkStatus();
      }
    }
    return absl::NotFoundError(
        absl::StrFormat("%s: no metadata key '%s'", R(f).name(), key));
  });
}

tqm_status tqm_metadata_type(const tqm_file* f, size_t i, tqm_meta_type* type) {
  return Guard([&]() -> absl::Status {
    if (type == nullptr) return Null("type");
    const tqm::MetaEntry* e = nullptr;
    absl::Status s = Entry(f, i, &e);
    if (!s.ok()) return s;
    *type = static_cast<tqm_meta_type>(e->value.type);
    return absl::OkStatus();
  });
}

tqm_status tqm_metadata_int(const tqm_file* f, size_t i, int64_t* value) {
  return Guard([&]() -> absl::Status {
    if (value == nullptr) return Null("value");
    const tqm::MetaEntry* e = nullptr;
    absl::Status s = Entry(f, i, &e);
    if (!s.ok()) return s;
    if (e->value.type != tqm::format::kMetaInt64) return WrongType(f, *e, "int64");
    *value = e->value.int64;
    return absl::OkStatus();
  });
}

tqm_status tqm_metadata_float(const tqm_file* f, size_t i, double* value) {
  return Guard([&]() -> absl::Status {
    if (value == nullptr) return Null("value");
    const tqm::MetaEntry* e = nullptr;
    absl::Status s = Entry(f, i, &e);
    if (!s.ok()) return s;
    if (e->value.type != tqm::format::kMetaFloat64) return WrongType(f, *e, "float64");
    *value = e->value.float64;
    return absl::OkStatus();
  });
}

tqm_status tqm_metadata_string(const tqm_file* f, size_t i, const char** value,
                               size_t* size) {
  return Guard([&]() -> absl::Status {
    if (value == nullptr) return Null("value");
    const tqm::MetaEntry* e = nullptr;
    absl::Status s = Entry(f, i, &e);
    if (!s.ok()) return s;
    if (e->value.type != tqm::format::kMetaString) return WrongType(f, *e, "string");
    *value = e->value.bytes.c_str();
    if (size != nullptr) *size = e->value.bytes.size();
    return absl::OkStatus();
  });
}

tqm_status tqm_metadata_bytes(const tqm_file* f, size_t i, const void** data,
                              size_t* size) {
  return Guard([&]() -> absl::Status {
    if (data == nullptr || size == nullptr) return Null(data ? "size" : "data");
    const tqm::MetaEntry* e = nullptr;
    absl::Status s = Entry(f, i, &e);
    if (!s.ok()) return s;
    if (e->value.type != tqm::format::kMetaString &&
        e->value.type != tqm::format::kMetaBytes) {
      return WrongType(f, *e, "string or bytes");
    }
    *data = e->value.bytes.data();
    *size = e->value.bytes.size();
    return absl::OkStatus();
  });
}

// ---- tensors ----

size_t tqm_tensor_count(const tqm_file* f) { return f ? R(f).tensors().size() : 0; }

tqm_status tqm_tensor_find(const tqm_file* f, const char* name, size_t* index) {
  return Guard([&]() -> absl::Status {
    if (f == nullptr) return Null("file");
    if (name == nullptr || index == nullptr) return Null(name ? "index" : "name");
    const int t = R(f).FindTensor(name);
    if (t < 0) {
      return absl::NotFoundError(
          absl::StrFormat("%s: no tensor '%s'", R(f).name(), name));
    }
    *index = static_cast<size_t>(t);
    return absl::OkStatus();
  });
}

#define TQM_TENSOR_GETTER(fn, type, arg, expr)            \
  tqm_status fn(const tqm_file* f, size_t i, type* arg) { \
    return Guard([&]() -> absl::Status {                  \
      if (arg == nullptr) return Null(#arg);              \
      const tqm::TensorInfo* t = nullptr;                 \
      absl::Status s = Tensor(f, i, &t);                  \
      if (!s.ok()) return s;                              \
      *arg = (expr);                                      \
      return absl::OkStatus();                            \
    });                                                   \
  }

TQM_TENSOR_GETTER(tqm_tensor_name, const char*, name, t->name.c_str())
TQM_TENSOR_GETTER(tqm_tensor_ndim, size_t, ndim, t->dims.size())
TQM_TENSOR_GETTER(tqm_tensor_numel, uint64_t, numel, t->numel)
TQM_TENSOR_GETTER(tqm_tensor_byte_size, uint64_t, size, t->byte_size)
TQM_TENSOR_GETTER(tqm_tensor_storage, tqm_storage, storage,
                  static_cast<tqm_storage>(t->storage))
TQM_TENSOR_GETTER(tqm_tensor_source_dtype, tqm_source_dtype, dtype,
                  static_cast<tqm_source_dtype>(t->source_dtype))
TQM_TENSOR_GETTER(tqm_tensor_layer, int32_t, layer, t->layer)
TQM_TENSOR_GETTER(tqm_tensor_bits, int32_t, bits, t->quantized() ? t->bits : 0)
TQM_TENSOR_GETTER(tqm_tensor_group_size, uint32_t, group_size,
                  t->storage == tqm::format::kStorageU8Group ? t->group_size : 0)
TQM_TENSOR_GETTER(tqm_tensor_affine_count, size_t, count, t->affine.size())

#undef TQM_TENSOR_GETTER

tqm_status tqm_tensor_dims(const tqm_file* f, size_t i, uint64_t* dims, size_t capacity) {
  return Guard([&]() -> absl::Status {
    if (dims == nullptr) return Null("dims");
    const tqm::TensorInfo* t = nullptr;
    absl::Status s = Tensor(f, i, &t);
    if (!s.ok()) return s;
    if (capacity < t->dims.size()) return Small(f, *t, capacity, t->dims.size(), "dims");
    for (size_t k = 0; k < t->dims.size(); ++k) dims[k] = t->dims[k];
    return absl::OkStatus();
  });
}

tqm_status tqm_tensor_affine(const tqm_file* f, size_t i, tqm_affine* affine,
                             size_t capacity) {
  return Guard([&]() -> absl::Status {
    const tqm::TensorInfo* t = nullptr;
    absl::Status s = Tensor(f, i, &t);
    if (!s.ok()) return s;
    if (t->affine.empty()) return absl::OkStatus();
    if (affine == nullptr) return Null("affine");
    if (capacity < t->affine.size())
      return Small(f, *t, capacity, t->affine.size(), "pairs");
    for (size_t k = 0; k < t->affine.size(); ++k) {
      affine[k].scale = t->affine[k].scale;
      affine[k].zero = t->affine[k].zero;
    }
    return absl::OkStatus();
  });
}

tqm_status tqm_tensor_decode(const tqm_file* f, size_t i, void* out, size_t size) {
  return Guard([&]() -> absl::Status {
    const tqm::TensorInfo* t = nullptr;
    absl::Status s = Tensor(f, i, &t);
    if (!s.ok()) return s;
    if (size < t->byte_size) return Small(f, *t, size, t->byte_size, "bytes");
    if (out == nullptr && t->byte_size > 0) return Null("out");
    return R(f).DecodeTensor(
        i, absl::MakeSpan(static_cast<uint8_t*>(out), static_cast<size_t>(t->byte_size)));
  });
}

tqm_status tqm_tensor_read_u8(const tqm_file* f, size_t i, uint8_t* out, size_t count) {
  return Guard([&]() -> absl::Status {
    const tqm::TensorInfo* t = nullptr;
    absl::Status s = Tensor(f, i, &t);
    if (!s.ok()) return s;
    if (!t->quantized()) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s: tensor '%s' is stored %s, it has no uint8 codes",
                          R(f).name(), t->name,
                          t->raw() ? std::string("verbatim as ") +
                                         tqm::DTypeName(t->source_dtype)
                                   : std::string("as float32")));
    }
    if (count < t->numel) return Small(f, *t, count, t->numel, "bytes");
    if (out == nullptr && t->numel > 0) return Null("out");
    return R(f).DecodeTensor(i, absl::MakeSpan(out, static_cast<size_t>(t->numel)));
  });
}

tqm_status tqm_tensor_read_f32(const tqm_file* f, size_t i, float* out, size_t count) {
  return Guard([&]() -> absl::Status {
    const tqm::TensorInfo* t = nullptr;
    absl::Status s = Tensor(f, i, &t);
    if (!s.ok()) return s;
    if (count < t->numel) return Small(f, *t, count, t->numel, "floats");
    if (out == nullptr && t->numel > 0) return Null("out");
    return R(f).ReadFloat(i, absl::MakeSpan(out, static_cast<size_t>(t->numel)));
  });
}

// ---- layers ----

int32_t tqm_layer_count(const tqm_file* f) { return f ? f->model->num_layers() : 0; }

tqm_status tqm_layer_pin(tqm_file* f, int32_t layer, tqm_layer** out) {
  return Guard([&]() -> absl::Status {
    if (out == nullptr) return Null("out");
    *out = nullptr;
    if (f == nullptr) return Null("file");
    absl::StatusOr<tqm::LayerHandle> h = f->model->Layer(layer);
    if (!h.ok()) return h.status();
    auto l = std::make_unique<tqm_layer>();
    l->file = f;
    l->handle = std::move(h).value();
    std::lock_guard<std::mutex> lock(f->mu);
    f->layers.insert(l.get());
    *out = l.release();
    return absl::OkStatus();
  });
}

void tqm_layer_release(tqm_layer* l) {
  if (l == nullptr) return;
  try {
    {
      std::lock_guard<std::mutex> lock(l->file->mu);
      l->file->layers.erase(l);
    }
    delete l;
  } catch (...) {
  }
}

size_t tqm_layer_tensor_count(const tqm_layer* l) {
  return l ? l->handle.tensors().size() : 0;
}

tqm_status tqm_layer_tensor(const tqm_layer* l, size_t j, tqm_view* view) {
  return Guard([&]() -> absl::Status {
    if (l == nullptr || view == nullptr) return Null(l ? "view" : "layer");
    const auto ts = l->handle.tensors();
    if (j >= ts.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: layer %d: tensor %d out of range (%d tensors)",
                          l->file->model->name(), l->handle.layer(), j, ts.size()));
    }
    FillView(ts[j], view);
    return absl::OkStatus();
  });
}

tqm_status tqm_layer_find(const tqm_layer* l, const char* name, tqm_view* view) {
  return Guard([&]() -> absl::Status {
    if (l == nullptr || view == nullptr || name == nullptr) {
      return Null(l == nullptr ? "layer" : view == nullptr ? "view" : "name");
    }
    absl::StatusOr<const tqm::TensorView*> v = l->handle.Get(name);
    if (!v.ok()) return v.status();
    FillView(**v, view);
    return absl::OkStatus();
  });
}

}  // extern "C"
