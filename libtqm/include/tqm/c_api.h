/* The C API of tqm (libtqm_c.so): open a .tqm file, query its metadata and
 * tensors, decode tensors into caller buffers, and pin decoded layers through
 * the lazy loader. Plain C99; no C++ type or exception crosses it.
 *
 * Conventions
 * - Handles are opaque: tqm_file (tqm_open / tqm_close) and tqm_layer
 *   (tqm_layer_pin / tqm_layer_release).
 * - Calls that can fail return a tqm_status. TQM_OK is 0. On failure the
 *   calling thread's last error (tqm_last_error_code / tqm_last_error_message)
 *   holds the status and a message naming the file, tensor, field and offset;
 *   every status-returning call sets it, so after TQM_OK the message is "".
 * - Buffers are pointer + size. A buffer too small is TQM_INVALID_ARGUMENT
 *   (the message says how large it must be); nothing is written then.
 * - Strings returned by the library (keys, names, string values) are
 *   NUL-terminated and stay valid until the tqm_file is closed. Byte values
 *   may contain NUL bytes: use the returned size.
 * - Thread safety: every call on a tqm_file may be made from several threads
 *   at once, except tqm_close. A tqm_layer may be read from several threads
 *   and released by one.
 */

#ifndef TQM_C_API_H_
#define TQM_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TQM_API __attribute__((visibility("default")))
#else
#define TQM_API
#endif

/* Status codes. The numbers are stable: never changed, never reused; new
 * codes are only added. */
typedef enum tqm_status {
  TQM_OK = 0,
  TQM_INVALID_ARGUMENT = 1,    /* bad call: NULL, index out of range, small buffer */
  TQM_NOT_FOUND = 2,           /* no such file, key, tensor or layer */
  TQM_DATA_LOSS = 3,           /* corrupt file: structure, bounds or checksum */
  TQM_UNIMPLEMENTED = 4,       /* unknown version, flag, section or codec */
  TQM_RESOURCE_EXHAUSTED = 5,  /* a limit was reached, or out of memory */
  TQM_FAILED_PRECONDITION = 6, /* wrong value type / storage for the call */
  TQM_PERMISSION_DENIED = 7,   /* the operating system refused access */
  TQM_OS_ERROR = 8,            /* other errors from the operating system */
  TQM_OUT_OF_RANGE = 9,
  TQM_INTERNAL = 10 /* a bug in tqm (also: an unexpected C++ exception) */
} tqm_status;

/* Metadata value types (the values of the file format, spec/FORMAT.md). */
typedef enum tqm_meta_type {
  TQM_META_INT64 = 1,
  TQM_META_FLOAT64 = 2,
  TQM_META_STRING = 3, /* UTF-8 text */
  TQM_META_BYTES = 4   /* opaque bytes (e.g. tokenizer.llama2c) */
} tqm_meta_type;

/* How a tensor is stored (what decoding it yields). The numbers are those of
 * the file format (spec/FORMAT.md); new ones are only added. */
typedef enum tqm_storage {
  TQM_STORAGE_F32 = 1,       /* float32 values */
  TQM_STORAGE_U8_TENSOR = 2, /* uint8 codes, one (scale, zero) for the tensor */
  TQM_STORAGE_U8_ROW = 3,    /* uint8 codes, one (scale, zero) per row (dims[0]) */
  /* uint8 codes, one (scale, zero) per group of tqm_tensor_group_size
   * elements along the last dimension (a row's last group may be shorter);
   * the pairs are row-major: the groups of the first row first. */
  TQM_STORAGE_U8_GROUP = 4,
  /* The source's bytes verbatim: little-endian elements of the tensor's
   * tqm_source_dtype (integers, bool, float64, float16 ...). */
  TQM_STORAGE_RAW = 5
} tqm_storage;

/* The tensor's element type in the model it was packed from; for
 * TQM_STORAGE_RAW the type of its bytes. Numbers as in the file format. */
typedef enum tqm_source_dtype {
  TQM_DTYPE_F32 = 1,
  TQM_DTYPE_F16 = 2,
  TQM_DTYPE_BF16 = 3,
  TQM_DTYPE_Q8_0 = 4, /* GGUF blocks, dequantized before packing; never RAW */
  TQM_DTYPE_F64 = 5,
  TQM_DTYPE_I8 = 6,
  TQM_DTYPE_I16 = 7,
  TQM_DTYPE_I32 = 8,
  TQM_DTYPE_I64 = 9,
  TQM_DTYPE_U8 = 10,
  TQM_DTYPE_U16 = 11,
  TQM_DTYPE_U32 = 12,
  TQM_DTYPE_U64 = 13,
  TQM_DTYPE_BOOL = 14 /* one byte, 0 or 1 */
} tqm_source_dtype;

#define TQM_MAX_DIMS 8
#define TQM_NO_LAYER (-1)

typedef struct tqm_file tqm_file;
typedef struct tqm_layer tqm_layer;

/* Dequantized value = scale * (q - zero). Same layout as tqm::Affine. */
typedef struct tqm_affine {
  float scale;
  float zero;
} tqm_affine;

/* ---- library ---- */

/* "major.minor.patch" of the library; static storage. */
TQM_API const char* tqm_version(void);
/* Name of a status ("TQM_DATA_LOSS"); static storage. */
TQM_API const char* tqm_status_name(tqm_status status);
/* The status and message of the calling thread's last status-returning call.
 * The message stays valid until that thread's next call into the library. */
TQM_API tqm_status tqm_last_error_code(void);
TQM_API const char* tqm_last_error_message(void);

/* ---- files ---- */

typedef struct tqm_open_options {
  /* Decode parallelism for layers; 0 = the number of hardware threads. */
  int32_t threads;
  /* Verify each chunk's checksum before decoding it (nonzero, the default). */
  int32_t verify_checksums;
  /* Layer views hold float32 (dequantized) instead of uint8 codes. */
  int32_t dequantize;
  /* Layers to decode ahead in the background after each tqm_layer_pin. */
  int32_t prefetch;
  /* Bytes of decoded layers kept; 0 = unlimited. Unpinned layers are evicted
   * least recently used first. */
  uint64_t budget_bytes;
} tqm_open_options;

/* Fills `options` with the defaults (what tqm_open uses). */
TQM_API void tqm_open_options_init(tqm_open_options* options);

/* Maps `path` read-only and validates its whole index (not tensor data).
 * On success *out is a handle to close with tqm_close. */
TQM_API tqm_status tqm_open(const char* path, tqm_file** out);
/* tqm_open with options (NULL = defaults). */
TQM_API tqm_status tqm_open_ex(const char* path, const tqm_open_options* options,
                               tqm_file** out);
/* Closes `file` (NULL is ignored). Layers still pinned are released first;
 * their tqm_layer pointers become invalid, like every string and view of the
 * file. */
TQM_API void tqm_close(tqm_file* file);
/* Full verification: every section and chunk checksum, every chunk decoded. */
TQM_API tqm_status tqm_verify(const tqm_file* file);

/* ---- metadata ---- */

/* Number of metadata entries (0 for NULL). */
TQM_API size_t tqm_metadata_count(const tqm_file* file);
/* Key of entry `index`. */
TQM_API tqm_status tqm_metadata_key(const tqm_file* file, size_t index, const char** key);
/* Index of the entry called `key`; TQM_NOT_FOUND when there is none. */
TQM_API tqm_status tqm_metadata_find(const tqm_file* file, const char* key,
                                     size_t* index);
TQM_API tqm_status tqm_metadata_type(const tqm_file* file, size_t index,
                                     tqm_meta_type* type);
/* Typed getters: TQM_FAILED_PRECONDITION when the entry has another type. */
TQM_API tqm_status tqm_metadata_int(const tqm_file* file, size_t index, int64_t* value);
TQM_API tqm_status tqm_metadata_float(const tqm_file* file, size_t index, double* value);
/* A TQM_META_STRING value: NUL-terminated, `size` (may be NULL) excludes the NUL. */
TQM_API tqm_status tqm_metadata_string(const tqm_file* file, size_t index,
                                       const char** value, size_t* size);
/* A TQM_META_STRING or TQM_META_BYTES value as bytes. */
TQM_API tqm_status tqm_metadata_bytes(const tqm_file* file, size_t index,
                                      const void** data, size_t* size);

/* ---- tensors ---- */

/* Number of tensors (0 for NULL). */
TQM_API size_t tqm_tensor_count(const tqm_file* file);
/* Index of the tensor called `name`; TQM_NOT_FOUND when there is none. */
TQM_API tqm_status tqm_tensor_find(const tqm_file* file, const char* name, size_t* index);
TQM_API tqm_status tqm_tensor_name(const tqm_file* file, size_t index, const char** name);
/* 0 for a 0-d tensor (one element). A dimension may be 0 (no elements). */
TQM_API tqm_status tqm_tensor_ndim(const tqm_file* file, size_t index, size_t* ndim);
/* Writes ndim dimensions (row-major, dims[0] = rows) into dims[0..capacity). */
TQM_API tqm_status tqm_tensor_dims(const tqm_file* file, size_t index, uint64_t* dims,
                                   size_t capacity);
TQM_API tqm_status tqm_tensor_numel(const tqm_file* file, size_t index, uint64_t* numel);
/* Bytes tqm_tensor_decode writes: numel (uint8 storage), 4 * numel (float32)
 * or numel * the size of the source dtype (RAW storage). */
TQM_API tqm_status tqm_tensor_byte_size(const tqm_file* file, size_t index,
                                        uint64_t* size);
TQM_API tqm_status tqm_tensor_storage(const tqm_file* file, size_t index,
                                      tqm_storage* storage);
TQM_API tqm_status tqm_tensor_source_dtype(const tqm_file* file, size_t index,
                                           tqm_source_dtype* dtype);
/* Bits of the codes of a quantized tensor: every code is below 2^bits (1..8;
 * 8 in files before format 1.3); 0 for float32 and RAW storage. */
TQM_API tqm_status tqm_tensor_bits(const tqm_file* file, size_t index, int32_t* bits);
/* Elements per group of TQM_STORAGE_U8_GROUP; 0 for every other storage. */
TQM_API tqm_status tqm_tensor_group_size(const tqm_file* file, size_t index,
                                         uint32_t* group_size);
/* Layer number, or TQM_NO_LAYER (-1). */
TQM_API tqm_status tqm_tensor_layer(const tqm_file* file, size_t index, int32_t* layer);
/* Number of affine pairs: 0 (float32, RAW), 1 (per tensor), dims[0] (per
 * row) or rows * ceil(dims[ndim-1] / group_size) (per group, rows being the
 * product of the other dimensions). */
TQM_API tqm_status tqm_tensor_affine_count(const tqm_file* file, size_t index,
                                           size_t* count);
/* Copies the affine pairs into affine[0..capacity). */
TQM_API tqm_status tqm_tensor_affine(const tqm_file* file, size_t index,
                                     tqm_affine* affine, size_t capacity);

/* Decodes tensor `index` as stored into out[0..size), size >=
 * tqm_tensor_byte_size: uint8 codes (quantized storages), float32 values
 * (TQM_STORAGE_F32) or the source's bytes verbatim (TQM_STORAGE_RAW, e.g.
 * int64 or bool elements, bit-exact). Checksums are verified. */
TQM_API tqm_status tqm_tensor_decode(const tqm_file* file, size_t index, void* out,
                                     size_t size);
/* The uint8 codes of a quantized tensor into out[0..count), count >= numel;
 * TQM_FAILED_PRECONDITION for float32 and RAW storage. */
TQM_API tqm_status tqm_tensor_read_u8(const tqm_file* file, size_t index, uint8_t* out,
                                      size_t count);
/* Float32 values into out[0..count), count >= numel, for every storage:
 * quantized tensors dequantized with each element's pair (tensor, row or
 * group), RAW tensors converted (float16/bfloat16 exactly; float64 and
 * 32/64-bit integers rounded to nearest; bool as 0 or 1). */
TQM_API tqm_status tqm_tensor_read_f32(const tqm_file* file, size_t index, float* out,
                                       size_t count);

/* ---- layers (the lazy loader) ---- */

/* 1 + the highest layer number (0 when no tensor has one). */
TQM_API int32_t tqm_layer_count(const tqm_file* file);
/* Decodes (or finds decoded) and pins `layer`; TQM_NO_LAYER pins the tensors
 * that belong to no layer (embedding, final norm, ...). TQM_NOT_FOUND when
 * the layer has no tensors. Release with tqm_layer_release. */
TQM_API tqm_status tqm_layer_pin(tqm_file* file, int32_t layer, tqm_layer** out);
/* Drops the pin (NULL is ignored). Views from this layer become invalid. */
TQM_API void tqm_layer_release(tqm_layer* layer);
TQM_API size_t tqm_layer_tensor_count(const tqm_layer* layer);

/* One tensor of a pinned layer. Pointers stay valid until the layer is
 * released. At most one of q / f32 is non-NULL: both are NULL for a tensor
 * with no elements and for RAW storage (read those with tqm_tensor_decode).
 * For group storage, the pair of element e is affine[(e / cols_last) *
 * groups_per_row + (e % cols_last) / group_size], cols_last being the last
 * dimension (tqm_tensor_dims, tqm_tensor_group_size). */
typedef struct tqm_view {
  size_t tensor; /* index in the file */
  const char* name;
  uint64_t numel;
  uint64_t rows;            /* dims[0] */
  uint64_t cols;            /* numel / rows */
  const uint8_t* q;         /* uint8 codes (numel), quantized and not dequantized */
  const float* f32;         /* float32 values (numel) */
  const tqm_affine* affine; /* affine_count pairs, NULL for float32 storage */
  size_t affine_count;
  int32_t in_place; /* nonzero: a view of the mapped file, no copy */
} tqm_view;

TQM_API tqm_status tqm_layer_tensor(const tqm_layer* layer, size_t j, tqm_view* view);
/* The view of the tensor called `name`; TQM_NOT_FOUND if not in this layer. */
TQM_API tqm_status tqm_layer_find(const tqm_layer* layer, const char* name,
                                  tqm_view* view);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TQM_C_API_H_ */
