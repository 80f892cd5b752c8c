/* The C API of tqm (libtqm_c.so): open a .tqm file, query its metadata and
 * tensors, decode tensors (or ranges of their elements) into caller buffers,
 * pin decoded layers through the lazy loader, and write a .tqm file from
 * tensors in memory. Plain C99; no C++ type or exception crosses it.
 *
 * Conventions
 * - Handles are opaque: tqm_file (tqm_open / tqm_close), tqm_layer
 *   (tqm_layer_pin / tqm_layer_release) and tqm_writer (tqm_writer_new /
 *   tqm_writer_free).
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

/* ---- partial decoding ---- */

/* Where chunk `chunk` of a tensor lies in the tensor's decoded bytes
 * (tqm_tensor_decode's layout) and in the file. */
typedef struct tqm_chunk_info {
  uint64_t decoded_offset; /* first decoded byte of the tensor it holds */
  uint32_t decoded_size;   /* decoded bytes */
  uint32_t encoded_size;   /* bytes in the file */
  uint64_t file_offset;    /* absolute offset of the encoded bytes */
  int32_t codec;           /* the format's codec id (spec/FORMAT.md) */
} tqm_chunk_info;

/* Number of chunks of tensor `index` (0 for a tensor without elements). */
TQM_API tqm_status tqm_tensor_chunk_count(const tqm_file* file, size_t index,
                                          size_t* count);
TQM_API tqm_status tqm_tensor_chunk(const tqm_file* file, size_t index, size_t chunk,
                                    tqm_chunk_info* info);
/* Elements [first, first + count) (row-major) of tensor `index` as
 * tqm_tensor_decode stores them (codes, float32 or verbatim bytes) into
 * out[0..size), size >= count * (tqm_tensor_byte_size / numel). Decodes only
 * the chunks that hold those elements, so reading a few rows of a large
 * tensor costs a few chunks. TQM_OUT_OF_RANGE when the range passes the end. */
TQM_API tqm_status tqm_tensor_decode_range(const tqm_file* file, size_t index,
                                           uint64_t first, uint64_t count, void* out,
                                           size_t size);
/* Elements [first, first + count) as float32, converted as tqm_tensor_read_f32
 * converts them, into out[0..capacity), capacity >= count; the same chunks as
 * tqm_tensor_decode_range. */
TQM_API tqm_status tqm_tensor_read_f32_range(const tqm_file* file, size_t index,
                                             uint64_t first, uint64_t count, float* out,
                                             size_t capacity);
/* Chunks decoded so far by the tqm_tensor_* calls on `file` (decode, read_u8,
 * read_f32 and the range calls; not the layer loader, not tqm_verify): a
 * measure of the work a read did, for tests and profiling. 0 for NULL. */
TQM_API uint64_t tqm_chunks_decoded(const tqm_file* file);

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

/* ---- writing ---- */

/* Build a .tqm file from tensors held in memory: tqm_writer_new, then
 * tqm_writer_add_tensor and tqm_writer_set_metadata_* in any order, then
 * tqm_writer_finish (once) and tqm_writer_free. A writer is used from one
 * thread at a time. */
typedef struct tqm_writer tqm_writer;

/* How the writer picks each chunk's codec (tqm::Profile). */
typedef enum tqm_profile {
  TQM_PROFILE_SIZE = 0,     /* the smallest encoding */
  TQM_PROFILE_BALANCED = 1, /* the fastest-decoding within 2 % of the smallest */
  TQM_PROFILE_SPEED = 2     /* the fastest that saves at least 3 % over stored */
} tqm_profile;

/* What one (scale, zero) pair covers (tqm::Granularity). */
typedef enum tqm_granularity {
  TQM_GRANULARITY_TENSOR = 0,
  TQM_GRANULARITY_ROW = 1,  /* one pair per dims[0] slice (2+ dimensions) */
  TQM_GRANULARITY_GROUP = 2 /* group_size elements along the last dimension */
} tqm_granularity;

typedef struct tqm_pack_options {
  int32_t profile;            /* tqm_profile; default TQM_PROFILE_BALANCED */
  int32_t granularity;        /* tqm_granularity; default TQM_GRANULARITY_TENSOR */
  uint32_t group_size;        /* elements per group for TQM_GRANULARITY_GROUP */
  int32_t bits;               /* code width of quantized tensors, 1..8; default 8 */
  int32_t quantize_all;       /* nonzero: quantize 1-D float tensors too */
  int32_t entropy;            /* nonzero (default): try the entropy codecs */
  int32_t lanes;              /* nonzero (default): try the lanes codec */
  int32_t zstd_level;         /* zstd level of TQM_PROFILE_SIZE, 0 = no zstd; 19 */
  int32_t threads;            /* encoding threads; 0 (default) = all cores */
  uint32_t chunk_size;        /* decoded bytes per chunk, a multiple of 4 */
  uint32_t max_table_entries; /* sequence-table bound; 0 = no seqtable codec */
} tqm_pack_options;

/* What tqm_writer_finish wrote. */
typedef struct tqm_pack_stats {
  uint64_t tensors;
  uint64_t quantized_tensors;
  uint64_t raw_tensors;  /* stored verbatim in their own dtype */
  uint64_t weights;      /* total elements */
  uint64_t source_bytes; /* tensor bytes as given */
  uint64_t file_bytes;
  double seconds;
} tqm_pack_stats;

/* tqm_writer_add_tensor flags. KEEP: store as given, never quantized.
 * BORROW: no copy; `data` stays valid and unchanged until tqm_writer_finish
 * returns or tqm_writer_free. */
#define TQM_WRITE_KEEP 1u
#define TQM_WRITE_BORROW 2u

/* Fills `options` with the defaults (those of tqm-pack). */
TQM_API void tqm_pack_options_init(tqm_pack_options* options);

/* A new, empty writer with a copy of `options` (NULL = defaults), checked
 * here: TQM_INVALID_ARGUMENT for an unknown profile or granularity, bits
 * outside 1..8, a group size outside 1..65536 for TQM_GRANULARITY_GROUP. */
TQM_API tqm_status tqm_writer_new(const tqm_pack_options* options, tqm_writer** out);
/* Frees the writer (NULL is ignored), written or not. */
TQM_API void tqm_writer_free(tqm_writer* writer);

/* Adds tensor `name` (unique, non-empty) of `ndim` dimensions dims[0..ndim)
 * (row-major; ndim 0 is a 0-d scalar; a dimension may be 0), whose elements
 * are data[0..size): little-endian values of `dtype` (a tqm_source_dtype;
 * an int so that any number passed is defined behaviour and gets
 * TQM_INVALID_ARGUMENT when unknown), size = numel * the dtype's
 * size exactly (BOOL: one byte, 0 or 1). TQM_DTYPE_F32, F16 and BF16 tensors
 * of 2 or more dimensions are quantized by the options (1-D ones too with
 * quantize_all; F16/BF16 ones not quantized are stored as float32); every
 * other dtype, 0-d and empty tensors, and tensors added with TQM_WRITE_KEEP
 * are stored verbatim (RAW storage, bit-exact). The data are copied unless
 * `flags` has TQM_WRITE_BORROW. */
TQM_API tqm_status tqm_writer_add_tensor(tqm_writer* writer, const char* name,
                                         int32_t dtype, const uint64_t* dims, size_t ndim,
                                         const void* data, size_t size, uint32_t flags);
/* Metadata entries, in the order set; setting a key again replaces its value
 * in place. The writer adds its own (tqm.writer, tqm.granularity ...) after. */
TQM_API tqm_status tqm_writer_set_metadata_int(tqm_writer* writer, const char* key,
                                               int64_t value);
TQM_API tqm_status tqm_writer_set_metadata_float(tqm_writer* writer, const char* key,
                                                 double value);
/* UTF-8 text of `size` bytes (checked). */
TQM_API tqm_status tqm_writer_set_metadata_string(tqm_writer* writer, const char* key,
                                                  const char* value, size_t size);
TQM_API tqm_status tqm_writer_set_metadata_bytes(tqm_writer* writer, const char* key,
                                                 const void* data, size_t size);

/* Quantizes, encodes and writes the file to `path` atomically: written to a
 * temporary file in the same directory and renamed over `path` only when
 * complete, so a failure leaves `path` as it was. `stats` may be NULL. After
 * it returns (success or not) the writer holds no tensors and accepts only
 * tqm_writer_free: a second call is TQM_FAILED_PRECONDITION. */
TQM_API tqm_status tqm_writer_finish(tqm_writer* writer, const char* path,
                                     tqm_pack_stats* stats);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TQM_C_API_H_ */
