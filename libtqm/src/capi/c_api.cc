// The C API (tqm/c_api.h) over tqm::Model and tqm::Reader. Every entry point
// catches every C++ exception and turns absl::Status into a stable tqm_status
// plus a thread-local message, so nothing C++ crosses the boundary.

#include "tqm/c_api.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "base/json.h"
#include "tqm/loader.h"
#include "tqm/reader.h"
#include "tqm/source.h"
#include "tqm/status.h"
#include "tqm/version.h"
#include "tqm/writer.h"

struct tqm_file {
  std::unique_ptr<tqm::Model> model;
  std::mutex mu;
  std::set<tqm_layer*> layers;  // pinned, released by tqm_close if still held
  // Chunks decoded by the tqm_tensor_* calls (tqm_chunks_decoded).
  mutable std::atomic<uint64_t> chunks_decoded{0};
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
static_assert(TQM_GRANULARITY_GROUP == static_cast<int>(tqm::Granularity::kGroup) &&
                  TQM_GRANULARITY_ROW == static_cast<int>(tqm::Granularity::kRow),
              "granularity ids");
static_assert(TQM_PROFILE_SPEED == static_cast<int>(tqm::Profile::kSpeed) &&
                  TQM_PROFILE_BALANCED == static_cast<int>(tqm::Profile::kBalanced),
              "profile ids");
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

// Decodes bytes [begin, end) of tensor `i`'s decoded form into `out`,
// decoding only the chunks that overlap the range: those wholly inside go
// straight into `out`, the (at most two) cut ones through a scratch buffer.
absl::Status DecodeBytes(const tqm_file* f, size_t i, uint64_t begin, uint64_t end,
                         uint8_t* out) {
  const tqm::TensorInfo& t = R(f).tensors()[i];
  const auto& chunks = t.chunks;
  // The first chunk whose bytes end past `begin` (chunks are in tensor order).
  auto it = std::upper_bound(chunks.begin(), chunks.end(), begin,
                             [](uint64_t b, const tqm::ChunkInfo& c) {
                               return b < c.decoded_offset + c.decoded_size;
                             });
  std::vector<uint8_t> scratch;
  for (; it != chunks.end() && it->decoded_offset < end; ++it) {
    const size_t c = static_cast<size_t>(it - chunks.begin());
    const uint64_t cb = it->decoded_offset;
    const uint64_t ce = cb + it->decoded_size;
    const uint64_t lo = std::max(cb, begin);
    const uint64_t hi = std::min(ce, end);
    f->chunks_decoded.fetch_add(1, std::memory_order_relaxed);
    if (lo == cb && hi == ce) {
      TQM_RETURN_IF_ERROR(
          R(f).DecodeChunk(i, c, absl::MakeSpan(out + (cb - begin), it->decoded_size)));
      continue;
    }
    scratch.resize(it->decoded_size);
    TQM_RETURN_IF_ERROR(R(f).DecodeChunk(i, c, absl::MakeSpan(scratch)));
    std::memcpy(out + (lo - begin), scratch.data() + (lo - cb), hi - lo);
  }
  return absl::OkStatus();
}

// Checks that [first, first + count) lies within tensor `t`.
absl::Status CheckRange(const tqm_file* f, const tqm::TensorInfo& t, uint64_t first,
                        uint64_t count) {
  if (first > t.numel || count > t.numel - first) {
    return absl::OutOfRangeError(
        absl::StrFormat("%s: tensor '%s': elements [%d, %d + %d) pass its %d elements",
                        R(f).name(), t.name, first, first, count, t.numel));
  }
  return absl::OkStatus();
}

absl::Status CheckKey(const char* key) {
  if (key == nullptr) return Null("key");
  const size_t n = std::strlen(key);
  if (n == 0 || n > tqm::format::kMaxKeyLength) {
    return absl::InvalidArgumentError(
        absl::StrFormat("metadata key '%s' is empty or longer than %d bytes", key,
                        tqm::format::kMaxKeyLength));
  }
  for (size_t k = 0; k < n; ++k) {
    const unsigned char c = static_cast<unsigned char>(key[k]);
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-')) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "metadata key '%s' has characters outside [A-Za-z0-9._-]", key));
    }
  }
  return absl::OkStatus();
}

// The tensors given to a tqm_writer, served to tqm::Pack. Float tensors
// (F32, F16, BF16) are converted to float32 on each Read (the writer reads a
// tensor a few times but holds one at a time); every other dtype is kRaw.
class WriterSource : public tqm::TensorSource {
 public:
  struct Entry {
    std::string owned;                  // the copy, unless borrowed
    const uint8_t* borrowed = nullptr;  // the caller's bytes (TQM_WRITE_BORROW)
    size_t size = 0;
    bool keep = false;
    const uint8_t* data() const {
      return borrowed ? borrowed : reinterpret_cast<const uint8_t*>(owned.data());
    }
  };

  const std::vector<tqm::SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<tqm::MetaEntry>& metadata() const override { return meta_; }

  absl::Status Read(size_t i, std::vector<float>* out) override {
    if (i >= tensors_.size()) return absl::OutOfRangeError("no such tensor");
    const tqm::SourceTensor& t = tensors_[i];
    if (t.kind != tqm::TensorKind::kFloat) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s' (%s) is not a float tensor", t.name, tqm::DTypeName(t.dtype)));
    }
    const Entry& e = entries_[i];
    const size_t n = e.size / tqm::DTypeSize(t.dtype);
    out->resize(n);
    if (t.dtype == tqm::format::kDTypeF32) {
      if (n) std::memcpy(out->data(), e.data(), e.size);
    } else {
      tqm::RawToFloat(t.dtype, e.data(), n, out->data());
    }
    return absl::OkStatus();
  }

  absl::Status ReadRaw(size_t i, std::string* out) override {
    if (i >= tensors_.size()) return absl::OutOfRangeError("no such tensor");
    out->assign(reinterpret_cast<const char*>(entries_[i].data()), entries_[i].size);
    return absl::OkStatus();
  }

  bool Has(const std::string& name) const { return names_.count(name) != 0; }
  bool Kept(const std::string& name) const { return kept_.count(name) != 0; }

  void Add(tqm::SourceTensor t, Entry e) {
    names_.insert(t.name);
    if (e.keep) kept_.insert(t.name);
    tensors_.push_back(std::move(t));
    entries_.push_back(std::move(e));
  }

  void Put(tqm::MetaEntry m) {
    for (tqm::MetaEntry& x : meta_) {
      if (x.key == m.key) {
        x = std::move(m);
        return;
      }
    }
    meta_.push_back(std::move(m));
  }

  void Clear() {
    tensors_.clear();
    tensors_.shrink_to_fit();
    entries_.clear();
    entries_.shrink_to_fit();
    names_.clear();
    kept_.clear();
  }

 private:
  std::vector<tqm::SourceTensor> tensors_;
  std::vector<Entry> entries_;
  std::set<std::string> names_;
  std::set<std::string> kept_;
  std::vector<tqm::MetaEntry> meta_;
};

}  // namespace

struct tqm_writer {
  tqm::PackOptions options;
  WriterSource source;
  bool finished = false;
};

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
    f->chunks_decoded.fetch_add(t->chunks.size(), std::memory_order_relaxed);
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
    f->chunks_decoded.fetch_add(t->chunks.size(), std::memory_order_relaxed);
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
    f->chunks_decoded.fetch_add(t->chunks.size(), std::memory_order_relaxed);
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

// ---- partial decoding ----

tqm_status tqm_tensor_chunk_count(const tqm_file* f, size_t i, size_t* count) {
  return Guard([&]() -> absl::Status {
    if (count == nullptr) return Null("count");
    const tqm::TensorInfo* t = nullptr;
    TQM_RETURN_IF_ERROR(Tensor(f, i, &t));
    *count = t->chunks.size();
    return absl::OkStatus();
  });
}

tqm_status tqm_tensor_chunk(const tqm_file* f, size_t i, size_t c, tqm_chunk_info* info) {
  return Guard([&]() -> absl::Status {
    if (info == nullptr) return Null("info");
    const tqm::TensorInfo* t = nullptr;
    TQM_RETURN_IF_ERROR(Tensor(f, i, &t));
    if (c >= t->chunks.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s': chunk %d out of range (%d chunks)",
                          R(f).name(), t->name, c, t->chunks.size()));
    }
    const tqm::ChunkInfo& k = t->chunks[c];
    info->decoded_offset = k.decoded_offset;
    info->decoded_size = k.decoded_size;
    info->encoded_size = k.encoded_size;
    info->file_offset = k.offset;
    info->codec = k.codec;
    return absl::OkStatus();
  });
}

tqm_status tqm_tensor_decode_range(const tqm_file* f, size_t i, uint64_t first,
                                   uint64_t count, void* out, size_t size) {
  return Guard([&]() -> absl::Status {
    const tqm::TensorInfo* t = nullptr;
    TQM_RETURN_IF_ERROR(Tensor(f, i, &t));
    TQM_RETURN_IF_ERROR(CheckRange(f, *t, first, count));
    const uint64_t es = t->element_size();
    // count <= numel and numel * es = byte_size, validated on open: no overflow.
    const uint64_t bytes = count * es;
    if (size < bytes) return Small(f, *t, size, bytes, "bytes");
    if (bytes == 0) return absl::OkStatus();
    if (out == nullptr) return Null("out");
    return DecodeBytes(f, i, first * es, first * es + bytes, static_cast<uint8_t*>(out));
  });
}

tqm_status tqm_tensor_read_f32_range(const tqm_file* f, size_t i, uint64_t first,
                                     uint64_t count, float* out, size_t capacity) {
  return Guard([&]() -> absl::Status {
    const tqm::TensorInfo* t = nullptr;
    TQM_RETURN_IF_ERROR(Tensor(f, i, &t));
    TQM_RETURN_IF_ERROR(CheckRange(f, *t, first, count));
    if (capacity < count) return Small(f, *t, capacity, count, "floats");
    if (count == 0) return absl::OkStatus();
    if (out == nullptr) return Null("out");
    const uint64_t es = t->element_size();
    const uint64_t begin = first * es;
    const uint64_t end = begin + count * es;
    if (t->storage == tqm::format::kStorageF32) {
      return DecodeBytes(f, i, begin, end, reinterpret_cast<uint8_t*>(out));
    }
    std::vector<uint8_t> stored(static_cast<size_t>(end - begin));
    TQM_RETURN_IF_ERROR(DecodeBytes(f, i, begin, end, stored.data()));
    if (t->quantized()) {
      tqm::DequantizeRange(*t, first, stored,
                           absl::MakeSpan(out, static_cast<size_t>(count)));
    } else {
      tqm::RawToFloat(t->source_dtype, stored.data(), static_cast<size_t>(count), out);
    }
    return absl::OkStatus();
  });
}

uint64_t tqm_chunks_decoded(const tqm_file* f) {
  return f ? f->chunks_decoded.load(std::memory_order_relaxed) : 0;
}

// ---- writing ----

void tqm_pack_options_init(tqm_pack_options* o) {
  if (o == nullptr) return;
  const tqm::PackOptions d;
  std::memset(o, 0, sizeof(*o));
  o->profile = static_cast<int32_t>(d.profile);
  o->granularity = static_cast<int32_t>(d.granularity);
  o->group_size = d.group_size;
  o->bits = d.bits;
  o->quantize_all = d.quantize_all ? 1 : 0;
  o->entropy = d.entropy ? 1 : 0;
  o->lanes = d.lanes ? 1 : 0;
  o->zstd_level = d.zstd_level;
  o->threads = static_cast<int32_t>(d.threads);
  o->chunk_size = d.chunk_size;
  o->max_table_entries = d.max_table_entries;
}

tqm_status tqm_writer_new(const tqm_pack_options* options, tqm_writer** out) {
  return Guard([&]() -> absl::Status {
    if (out == nullptr) return Null("out");
    *out = nullptr;
    tqm_pack_options o;
    tqm_pack_options_init(&o);
    if (options != nullptr) o = *options;
    if (o.profile < TQM_PROFILE_SIZE || o.profile > TQM_PROFILE_SPEED) {
      return absl::InvalidArgumentError(absl::StrFormat("unknown profile %d", o.profile));
    }
    if (o.granularity < TQM_GRANULARITY_TENSOR || o.granularity > TQM_GRANULARITY_GROUP) {
      return absl::InvalidArgumentError(
          absl::StrFormat("unknown granularity %d", o.granularity));
    }
    if (o.bits < tqm::format::kMinBits || o.bits > tqm::format::kMaxBits) {
      return absl::InvalidArgumentError(
          absl::StrFormat("bit width %d is not 1..8", o.bits));
    }
    if (o.granularity == TQM_GRANULARITY_GROUP &&
        (o.group_size == 0 || o.group_size > tqm::format::kMaxGroupSize)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "group size %d is not 1..%d", o.group_size, tqm::format::kMaxGroupSize));
    }
    if (o.chunk_size == 0 || o.chunk_size % 4 != 0 ||
        o.chunk_size > tqm::format::kMaxChunkDecodedSize) {
      return absl::InvalidArgumentError(
          absl::StrFormat("chunk size %d is not a multiple of 4 in 4..%d", o.chunk_size,
                          tqm::format::kMaxChunkDecodedSize));
    }
    if (o.threads < 0 || o.zstd_level < 0) {
      return absl::InvalidArgumentError("threads and zstd_level must not be negative");
    }
    auto w = std::make_unique<tqm_writer>();
    tqm::PackOptions& p = w->options;
    p.profile = static_cast<tqm::Profile>(o.profile);
    p.granularity = static_cast<tqm::Granularity>(o.granularity);
    p.group_size = o.group_size;
    p.bits = o.bits;
    p.quantize_all = o.quantize_all != 0;
    p.entropy = o.entropy != 0;
    p.lanes = o.lanes != 0;
    p.zstd_level = o.zstd_level;
    p.threads = static_cast<unsigned>(o.threads);
    p.chunk_size = o.chunk_size;
    p.max_table_entries = o.max_table_entries;
    const WriterSource* src = &w->source;
    p.keep = [src](const std::string& name) { return src->Kept(name); };
    *out = w.release();
    return absl::OkStatus();
  });
}

void tqm_writer_free(tqm_writer* w) { delete w; }

static absl::Status WriterOpen(const tqm_writer* w) {
  if (w == nullptr) return Null("writer");
  if (w->finished) {
    return absl::FailedPreconditionError("the writer has finished: only tqm_writer_free");
  }
  return absl::OkStatus();
}

tqm_status tqm_writer_add_tensor(tqm_writer* w, const char* name, int32_t dtype,
                                 const uint64_t* dims, size_t ndim, const void* data,
                                 size_t size, uint32_t flags) {
  return Guard([&]() -> absl::Status {
    TQM_RETURN_IF_ERROR(WriterOpen(w));
    if (name == nullptr || name[0] == '\0') {
      return absl::InvalidArgumentError("tensor name is NULL or empty");
    }
    if (std::strlen(name) > tqm::format::kMaxNameLength) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor name '%s' is longer than %d bytes", name, tqm::format::kMaxNameLength));
    }
    if (w->source.Has(name)) {
      return absl::InvalidArgumentError(absl::StrFormat("duplicate tensor '%s'", name));
    }
    if ((flags & ~(TQM_WRITE_KEEP | TQM_WRITE_BORROW)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s': unknown flags 0x%x", name, flags));
    }
    const auto d = static_cast<tqm::format::SourceDType>(
        dtype >= 1 && dtype <= tqm::format::kMaxDType ? dtype : 0);
    const size_t es = tqm::DTypeSize(d);
    if (es == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s': dtype %d cannot be written (not 1..14 or block-quantized Q8_0)",
          name, dtype));
    }
    if (ndim > TQM_MAX_DIMS) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s' has %d dimensions, at most %d", name, ndim, TQM_MAX_DIMS));
    }
    if (ndim > 0 && dims == nullptr) return Null("dims");
    // Elements, capped so that numel * es cannot overflow.
    uint64_t numel = 1;
    for (size_t k = 0; k < ndim; ++k) {
      if (numel != 0 && dims[k] > (uint64_t{1} << 48) / numel) {
        return absl::InvalidArgumentError(
            absl::StrFormat("tensor '%s' has an oversized shape", name));
      }
      numel *= dims[k];
    }
    if (numel * es != size) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s': %d bytes given, %d elements of %s need %d", name,
                          size, numel, tqm::DTypeName(d), numel * es));
    }
    if (size > 0 && data == nullptr) return Null("data");
    if (d == tqm::format::kDTypeBool) {
      const auto* b = static_cast<const uint8_t*>(data);
      for (size_t e = 0; e < size; ++e) {
        if (b[e] > 1) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "tensor '%s': BOOL element %d is %d, not 0 or 1", name, e, b[e]));
        }
      }
    }
    tqm::SourceTensor t;
    t.name = name;
    t.dtype = d;
    t.dims.assign(dims, dims + ndim);
    const bool is_float = d == tqm::format::kDTypeF32 || d == tqm::format::kDTypeF16 ||
                          d == tqm::format::kDTypeBF16;
    // 0-d and empty tensors are kRaw too: the writer stores them verbatim.
    t.kind = is_float && ndim > 0 && numel > 0 ? tqm::TensorKind::kFloat
                                               : tqm::TensorKind::kRaw;
    WriterSource::Entry e;
    e.size = size;
    e.keep = (flags & TQM_WRITE_KEEP) != 0;
    if (flags & TQM_WRITE_BORROW) {
      e.borrowed = static_cast<const uint8_t*>(data);
    } else if (size > 0) {
      e.owned.assign(static_cast<const char*>(data), size);
    }
    w->source.Add(std::move(t), std::move(e));
    return absl::OkStatus();
  });
}

static tqm_status SetMeta(tqm_writer* w, const char* key, tqm::MetaValue v) {
  return Guard([&]() -> absl::Status {
    TQM_RETURN_IF_ERROR(WriterOpen(w));
    TQM_RETURN_IF_ERROR(CheckKey(key));
    w->source.Put({key, std::move(v)});
    return absl::OkStatus();
  });
}

tqm_status tqm_writer_set_metadata_int(tqm_writer* w, const char* key, int64_t value) {
  return SetMeta(w, key, tqm::MetaValue::Int(value));
}

tqm_status tqm_writer_set_metadata_float(tqm_writer* w, const char* key, double value) {
  return SetMeta(w, key, tqm::MetaValue::Float(value));
}

tqm_status tqm_writer_set_metadata_string(tqm_writer* w, const char* key,
                                          const char* value, size_t size) {
  if (value == nullptr && size > 0) return Set(Null("value"));
  std::string v(value ? value : "", size);
  if (!tqm::json::IsValidUtf8(v)) {
    return Set(absl::InvalidArgumentError(absl::StrFormat(
        "metadata '%s': value is not valid UTF-8 (use tqm_writer_set_metadata_bytes)",
        key ? key : "(null)")));
  }
  return SetMeta(w, key, tqm::MetaValue::String(std::move(v)));
}

tqm_status tqm_writer_set_metadata_bytes(tqm_writer* w, const char* key, const void* data,
                                         size_t size) {
  if (data == nullptr && size > 0) return Set(Null("data"));
  return SetMeta(w, key,
                 tqm::MetaValue::Bytes(
                     std::string(static_cast<const char*>(data ? data : ""), size)));
}

tqm_status tqm_writer_finish(tqm_writer* w, const char* path, tqm_pack_stats* stats) {
  return Guard([&]() -> absl::Status {
    TQM_RETURN_IF_ERROR(WriterOpen(w));
    if (path == nullptr) return Null("path");
    w->finished = true;
    absl::StatusOr<tqm::PackStats> st = tqm::Pack(w->source, path, w->options);
    w->source.Clear();
    if (!st.ok()) return st.status();
    if (stats != nullptr) {
      stats->tensors = st->tensors;
      stats->quantized_tensors = st->quantized_tensors;
      stats->raw_tensors = st->raw_tensors;
      stats->weights = st->weights;
      stats->source_bytes = st->source_bytes;
      stats->file_bytes = st->file_bytes;
      stats->seconds = st->seconds;
    }
    return absl::OkStatus();
  });
}

}  // extern "C"
