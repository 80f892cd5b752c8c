/* Tests of the C API (tqm/c_api.h) from plain C: the golden vectors
 * spec/vectors/{tiny,rows}.tqm decode to their committed .decoded bytes
 * through every path (decode, read_u8, read_f32, pinned layer views),
 * metadata getters, and errors (codes, messages, NULLs, small buffers,
 * corrupt files). Exit status 0 = pass. */

#include "tqm/c_api.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "c_check.h"

static char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  char* buf;
  long n;
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = (char*)malloc(n > 0 ? (size_t)n : 1);
  if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return buf;
}

static int write_file(const char* path, const char* data, size_t size) {
  FILE* f = fopen(path, "wb");
  if (f == NULL) return 0;
  fwrite(data, 1, size, f);
  fclose(f);
  return 1;
}

/* Decodes every tensor of `path` and compares the concatenation with
 * `decoded_path`; cross-checks read_u8 / read_f32 / affine and the layers. */
static void check_vector(const char* path, const char* decoded_path) {
  tqm_file* f = NULL;
  size_t want_size = 0, at = 0, i, k;
  char* want = read_file(decoded_path, &want_size);
  printf("vector %s\n", path);
  CHECK(want != NULL);
  CHECK_OK(tqm_open(path, &f));
  if (f == NULL || want == NULL) {
    free(want);
    return;
  }
  CHECK(tqm_last_error_code() == TQM_OK);
  CHECK(strcmp(tqm_last_error_message(), "") == 0);
  CHECK_OK(tqm_verify(f));
  CHECK(tqm_tensor_count(f) == 2);
  for (i = 0; i < tqm_tensor_count(f); ++i) {
    const char* name = NULL;
    size_t ndim = 0, n_affine = 0, found = 99;
    uint64_t dims[TQM_MAX_DIMS], numel = 0, bytes = 0, prod = 1;
    tqm_storage storage;
    tqm_source_dtype dtype;
    int32_t layer = -5;
    unsigned char* buf;
    CHECK_OK(tqm_tensor_name(f, i, &name));
    CHECK_OK(tqm_tensor_find(f, name, &found));
    CHECK(found == i);
    CHECK_OK(tqm_tensor_ndim(f, i, &ndim));
    CHECK(ndim >= 1 && ndim <= TQM_MAX_DIMS);
    CHECK_OK(tqm_tensor_dims(f, i, dims, TQM_MAX_DIMS));
    for (k = 0; k < ndim; ++k) prod *= dims[k];
    CHECK_OK(tqm_tensor_numel(f, i, &numel));
    CHECK(numel == prod);
    CHECK_OK(tqm_tensor_byte_size(f, i, &bytes));
    CHECK_OK(tqm_tensor_storage(f, i, &storage));
    CHECK_OK(tqm_tensor_source_dtype(f, i, &dtype));
    CHECK(dtype == TQM_DTYPE_F32);
    CHECK_OK(tqm_tensor_layer(f, i, &layer));
    CHECK(layer ==
          (strncmp(name, "model.layers.", 13) == 0 ? atoi(name + 13) : TQM_NO_LAYER));
    CHECK_OK(tqm_tensor_affine_count(f, i, &n_affine));
    CHECK(bytes == (storage == TQM_STORAGE_F32 ? 4 * numel : numel));
    CHECK(n_affine == (storage == TQM_STORAGE_F32         ? 0
                       : storage == TQM_STORAGE_U8_TENSOR ? 1
                                                          : dims[0]));

    buf = (unsigned char*)malloc((size_t)bytes + 1);
    /* One byte short: refused, nothing written. */
    CHECK(tqm_tensor_decode(f, i, buf, (size_t)bytes - 1) == TQM_INVALID_ARGUMENT);
    CHECK(strstr(tqm_last_error_message(), name) != NULL);
    CHECK_OK(tqm_tensor_decode(f, i, buf, (size_t)bytes + 1));
    CHECK(at + bytes <= want_size && memcmp(buf, want + at, (size_t)bytes) == 0);

    {
      float* f32 = (float*)malloc((size_t)numel * sizeof(float));
      CHECK_OK(tqm_tensor_read_f32(f, i, f32, (size_t)numel));
      if (storage == TQM_STORAGE_F32) {
        CHECK(memcmp(f32, buf, (size_t)bytes) == 0);
        CHECK(tqm_tensor_read_u8(f, i, buf, (size_t)numel) == TQM_FAILED_PRECONDITION);
        CHECK(tqm_tensor_affine(f, i, NULL, 0) == TQM_OK);
      } else {
        tqm_affine* a = (tqm_affine*)malloc(n_affine * sizeof(tqm_affine));
        unsigned char* q = (unsigned char*)malloc((size_t)numel);
        uint64_t row_len = n_affine == 1 ? numel : numel / dims[0];
        CHECK(tqm_tensor_affine(f, i, a, n_affine - 1) == TQM_INVALID_ARGUMENT);
        CHECK_OK(tqm_tensor_affine(f, i, a, n_affine));
        CHECK_OK(tqm_tensor_read_u8(f, i, q, (size_t)numel));
        CHECK(memcmp(q, buf, (size_t)numel) == 0);
        for (k = 0; k < numel; ++k) {
          const tqm_affine* p = &a[n_affine == 1 ? 0 : k / row_len];
          const float expect = p->scale * ((float)q[k] - p->zero);
          CHECK(fabsf(f32[k] - expect) <= 1e-6f * (fabsf(expect) + 1.0f));
        }
        free(a);
        free(q);
      }
      free(f32);
    }
    at += (size_t)bytes;
    free(buf);
  }
  CHECK(at == want_size);

  /* The same bytes through the loader: every layer pinned, views compared
   * with tqm_tensor_decode. */
  {
    int32_t layer;
    for (layer = TQM_NO_LAYER; layer < tqm_layer_count(f); ++layer) {
      tqm_layer* l = NULL;
      tqm_status s = tqm_layer_pin(f, layer, &l);
      size_t j;
      if (s == TQM_NOT_FOUND) continue;
      CHECK(s == TQM_OK);
      if (l == NULL) continue;
      CHECK(tqm_layer_tensor_count(l) >= 1);
      for (j = 0; j < tqm_layer_tensor_count(l); ++j) {
        tqm_view v, v2;
        uint64_t bytes = 0;
        unsigned char* buf;
        int32_t tl;
        CHECK_OK(tqm_layer_tensor(l, j, &v));
        CHECK_OK(tqm_tensor_layer(f, v.tensor, &tl));
        CHECK(tl == layer);
        CHECK_OK(tqm_layer_find(l, v.name, &v2));
        CHECK(v2.tensor == v.tensor);
        CHECK((v.q == NULL) != (v.f32 == NULL));
        CHECK(v.rows * v.cols == v.numel);
        CHECK_OK(tqm_tensor_byte_size(f, v.tensor, &bytes));
        buf = (unsigned char*)malloc((size_t)bytes);
        CHECK_OK(tqm_tensor_decode(f, v.tensor, buf, (size_t)bytes));
        CHECK(memcmp(v.q != NULL ? (const void*)v.q : (const void*)v.f32, buf,
                     (size_t)bytes) == 0);
        CHECK((v.q != NULL) == (v.affine != NULL));
        free(buf);
      }
      CHECK(tqm_layer_tensor(l, 99, NULL) == TQM_INVALID_ARGUMENT);
      CHECK(tqm_layer_find(l, "no.such.tensor", &(tqm_view){0}) == TQM_NOT_FOUND);
      tqm_layer_release(l);
    }
    {
      tqm_layer* l = (tqm_layer*)1;
      CHECK(tqm_layer_pin(f, 999, &l) == TQM_NOT_FOUND);
      CHECK(l == NULL);
    }
  }
  tqm_close(f);
  free(want);
}

static void check_metadata(const char* rows_path) {
  tqm_file* f = NULL;
  size_t i, idx = 0, size = 0;
  int64_t iv = 0;
  double dv = 0;
  const char* s = NULL;
  const void* data = NULL;
  tqm_meta_type type;
  CHECK_OK(tqm_open(rows_path, &f));
  if (f == NULL) return;
  CHECK(tqm_metadata_count(f) == 5);
  for (i = 0; i < tqm_metadata_count(f); ++i) {
    const char* key = NULL;
    CHECK_OK(tqm_metadata_key(f, i, &key));
    CHECK_OK(tqm_metadata_find(f, key, &idx));
    CHECK(idx == i);
    CHECK_OK(tqm_metadata_type(f, i, &type));
    CHECK(type >= TQM_META_INT64 && type <= TQM_META_BYTES);
  }
  CHECK_OK(tqm_metadata_find(f, "test.int", &idx));
  CHECK_OK(tqm_metadata_int(f, idx, &iv));
  CHECK(iv == -42);
  CHECK(tqm_metadata_float(f, idx, &dv) == TQM_FAILED_PRECONDITION);
  CHECK(strstr(tqm_last_error_message(), "test.int") != NULL);
  CHECK_OK(tqm_metadata_find(f, "test.float", &idx));
  CHECK_OK(tqm_metadata_float(f, idx, &dv));
  CHECK(dv == 0.125);
  CHECK_OK(tqm_metadata_find(f, "test.bytes", &idx));
  CHECK_OK(tqm_metadata_type(f, idx, &type));
  CHECK(type == TQM_META_BYTES);
  CHECK_OK(tqm_metadata_bytes(f, idx, &data, &size));
  CHECK(size == 3);
  CHECK(tqm_metadata_string(f, idx, &s, &size) == TQM_FAILED_PRECONDITION);
  CHECK_OK(tqm_metadata_find(f, "tqm.granularity", &idx));
  CHECK_OK(tqm_metadata_string(f, idx, &s, &size));
  CHECK(strcmp(s, "row") == 0 && size == 3);
  CHECK(tqm_metadata_find(f, "no.such.key", &idx) == TQM_NOT_FOUND);
  CHECK(strstr(tqm_last_error_message(), "no.such.key") != NULL);
  CHECK(tqm_metadata_key(f, 5, &s) == TQM_INVALID_ARGUMENT);
  CHECK(tqm_metadata_int(f, 0, NULL) == TQM_INVALID_ARGUMENT);
  tqm_close(f);
}

static void check_errors(const char* tiny_path) {
  tqm_file* f = (tqm_file*)1;
  size_t size = 0, i;
  char* bytes;
  char tmp[] = "/tmp/tqm_c_api_test_XXXXXX";
  CHECK(tqm_open("/nonexistent/dir/model.tqm", &f) == TQM_NOT_FOUND);
  CHECK(f == NULL);
  CHECK(strstr(tqm_last_error_message(), "/nonexistent/dir/model.tqm") != NULL);
  CHECK(tqm_open(NULL, &f) == TQM_INVALID_ARGUMENT);
  CHECK(tqm_open(tiny_path, NULL) == TQM_INVALID_ARGUMENT);
  CHECK(tqm_verify(NULL) == TQM_INVALID_ARGUMENT);
  CHECK(tqm_tensor_count(NULL) == 0);
  CHECK(tqm_metadata_count(NULL) == 0);
  CHECK(tqm_layer_count(NULL) == 0);
  tqm_close(NULL);
  tqm_layer_release(NULL);
  CHECK(strcmp(tqm_status_name(TQM_DATA_LOSS), "TQM_DATA_LOSS") == 0);
  CHECK(tqm_version()[0] != '\0');

  /* Corrupt copies: a flipped magic byte, a cut-off file, a flipped data
   * byte (caught by the checksum on decode / verify). */
  bytes = read_file(tiny_path, &size);
  CHECK(bytes != NULL);
  if (bytes == NULL) return;
  {
    int fd = mkstemp(tmp);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
  }
  bytes[1] ^= 0x20;
  CHECK(write_file(tmp, bytes, size));
  CHECK(tqm_open(tmp, &f) == TQM_DATA_LOSS);
  CHECK(strstr(tqm_last_error_message(), tmp) != NULL);
  bytes[1] ^= 0x20;
  CHECK(write_file(tmp, bytes, size / 2));
  fflush(stdout);
  CHECK(tqm_open(tmp, &f) == TQM_DATA_LOSS);
  /* A byte of the first chunk (DATA starts at offset 256 in tiny.tqm). */
  bytes[258] ^= 0x01;
  CHECK(write_file(tmp, bytes, size));
  if (tqm_open(tmp, &f) == TQM_OK) {
    tqm_status worst = TQM_OK;
    unsigned char buf[64];
    CHECK(tqm_verify(f) == TQM_DATA_LOSS);
    for (i = 0; i < tqm_tensor_count(f); ++i) {
      tqm_status s = tqm_tensor_decode(f, i, buf, sizeof(buf));
      if (s != TQM_OK) worst = s;
    }
    CHECK(worst == TQM_DATA_LOSS);
    tqm_close(f);
  }
  /* Every prefix is refused without crashing. */
  for (i = 0; i < size; i += 7) {
    CHECK(write_file(tmp, bytes, i));
    f = NULL;
    CHECK(tqm_open(tmp, &f) != TQM_OK);
    CHECK(f == NULL);
  }
  remove(tmp);
  free(bytes);
}

/* Options: dequantized views, and closing with a layer still pinned. */
static void check_options(const char* rows_path) {
  tqm_open_options o;
  tqm_file* f = NULL;
  tqm_layer* l = NULL;
  tqm_view v;
  tqm_open_options_init(&o);
  CHECK(o.verify_checksums == 1);
  o.dequantize = 1;
  o.threads = 2;
  CHECK_OK(tqm_open_ex(rows_path, &o, &f));
  if (f == NULL) return;
  CHECK(tqm_layer_count(f) == 3);
  CHECK_OK(tqm_layer_pin(f, 2, &l));
  if (l != NULL) {
    float want[64];
    size_t idx = 0;
    CHECK_OK(tqm_layer_find(l, "model.layers.2.b.weight", &v));
    CHECK(v.f32 != NULL && v.q == NULL && v.numel == 64 && v.rows == 4 && v.cols == 16);
    CHECK(v.affine_count == 4);
    CHECK_OK(tqm_tensor_find(f, "model.layers.2.b.weight", &idx));
    CHECK_OK(tqm_tensor_read_f32(f, idx, want, 64));
    CHECK(v.f32 != NULL && memcmp(v.f32, want, sizeof(want)) == 0);
  }
  o.threads = -1;
  {
    tqm_file* g = NULL;
    CHECK(tqm_open_ex(rows_path, &o, &g) == TQM_INVALID_ARGUMENT);
  }
  tqm_close(f); /* releases the pinned layer */
}

/* Format 1.3 tensors (tests/c/format13.tqm, written by export_test's
 * Format13Vector from the formulas below): RAW storage of every dtype read
 * back bit-exact, 0-d and empty tensors, group storage with 4-bit codes. */
static size_t dtype_size(tqm_source_dtype d) {
  switch (d) {
    case TQM_DTYPE_F64:
    case TQM_DTYPE_I64:
    case TQM_DTYPE_U64:
      return 8;
    case TQM_DTYPE_F32:
    case TQM_DTYPE_I32:
    case TQM_DTYPE_U32:
      return 4;
    case TQM_DTYPE_F16:
    case TQM_DTYPE_BF16:
    case TQM_DTYPE_I16:
    case TQM_DTYPE_U16:
      return 2;
    default:
      return 1;
  }
}

static void check_format13(const char* path) {
  static const struct {
    const char* name;
    tqm_source_dtype dtype;
  } kRaw[] = {{"raw.F16", TQM_DTYPE_F16}, {"raw.BF16", TQM_DTYPE_BF16},
              {"raw.F64", TQM_DTYPE_F64}, {"raw.I8", TQM_DTYPE_I8},
              {"raw.I16", TQM_DTYPE_I16}, {"raw.I32", TQM_DTYPE_I32},
              {"raw.I64", TQM_DTYPE_I64}, {"raw.U8", TQM_DTYPE_U8},
              {"raw.U16", TQM_DTYPE_U16}, {"raw.U32", TQM_DTYPE_U32},
              {"raw.U64", TQM_DTYPE_U64}, {"raw.BOOL", TQM_DTYPE_BOOL}};
  tqm_file* f = NULL;
  size_t i, k, idx = 0, ndim = 9, count = 9;
  uint64_t dims[TQM_MAX_DIMS], numel = 0, size = 0;
  tqm_storage storage;
  tqm_source_dtype dtype;
  int32_t bits = -1;
  uint32_t group_size = 1;
  unsigned char buf[64], codes[40];
  float vals[40];
  CHECK_OK(tqm_open(path, &f));
  if (f == NULL) return;
  CHECK_OK(tqm_verify(f));
  for (i = 0; i < sizeof(kRaw) / sizeof(kRaw[0]); ++i) {
    const size_t esize = dtype_size(kRaw[i].dtype);
    CHECK_OK(tqm_tensor_find(f, kRaw[i].name, &idx));
    CHECK_OK(tqm_tensor_storage(f, idx, &storage));
    CHECK(storage == TQM_STORAGE_RAW);
    CHECK_OK(tqm_tensor_source_dtype(f, idx, &dtype));
    CHECK(dtype == kRaw[i].dtype);
    CHECK_OK(tqm_tensor_bits(f, idx, &bits));
    CHECK(bits == 0);
    CHECK_OK(tqm_tensor_byte_size(f, idx, &size));
    CHECK(size == 6 * esize);
    CHECK_OK(tqm_tensor_affine_count(f, idx, &count));
    CHECK(count == 0);
    memset(buf, 0xEE, sizeof(buf));
    CHECK(tqm_tensor_decode(f, idx, buf, (size_t)size - 1) == TQM_INVALID_ARGUMENT);
    CHECK_OK(tqm_tensor_decode(f, idx, buf, sizeof(buf)));
    for (k = 0; k < size; ++k) {
      const unsigned want =
          kRaw[i].dtype == TQM_DTYPE_BOOL ? (unsigned)(k % 2) : (unsigned)((29 * k + 7) & 0xFF);
      CHECK(buf[k] == want);
    }
    CHECK(buf[size] == 0xEE); /* nothing past byte_size */
    CHECK(tqm_tensor_read_u8(f, idx, codes, sizeof(codes)) == TQM_FAILED_PRECONDITION);
  }
  /* Float reads convert RAW elements: I8 exactly, BOOL to 0/1. */
  CHECK_OK(tqm_tensor_find(f, "raw.I8", &idx));
  CHECK_OK(tqm_tensor_read_f32(f, idx, vals, 6));
  for (k = 0; k < 6; ++k) CHECK(vals[k] == (float)(signed char)((29 * k + 7) & 0xFF));
  CHECK_OK(tqm_tensor_find(f, "raw.BOOL", &idx));
  CHECK_OK(tqm_tensor_read_f32(f, idx, vals, 6));
  for (k = 0; k < 6; ++k) CHECK(vals[k] == (float)(k % 2));

  /* 0-d: no dimensions, one element. */
  CHECK_OK(tqm_tensor_find(f, "raw.scalar", &idx));
  CHECK_OK(tqm_tensor_ndim(f, idx, &ndim));
  CHECK(ndim == 0);
  CHECK_OK(tqm_tensor_numel(f, idx, &numel));
  CHECK(numel == 1);
  CHECK_OK(tqm_tensor_decode(f, idx, buf, 4));
  CHECK(buf[0] == 42 && buf[1] == 0 && buf[2] == 0 && buf[3] == 0);
  CHECK_OK(tqm_tensor_find(f, "f32.scalar", &idx));
  CHECK_OK(tqm_tensor_read_f32(f, idx, vals, 1));
  CHECK(vals[0] == 2.5f);
  /* Empty: a zero dimension, no bytes; a NULL buffer is fine. */
  CHECK_OK(tqm_tensor_find(f, "raw.empty", &idx));
  CHECK_OK(tqm_tensor_dims(f, idx, dims, TQM_MAX_DIMS));
  CHECK(dims[0] == 3 && dims[1] == 0);
  CHECK_OK(tqm_tensor_source_dtype(f, idx, &dtype));
  CHECK(dtype == TQM_DTYPE_I64);
  CHECK_OK(tqm_tensor_byte_size(f, idx, &size));
  CHECK(size == 0);
  CHECK_OK(tqm_tensor_decode(f, idx, NULL, 0));
  CHECK_OK(tqm_tensor_find(f, "f32.empty", &idx));
  CHECK_OK(tqm_tensor_read_f32(f, idx, NULL, 0));

  /* Group storage: codes, one pair per group of 8 along the last dimension. */
  CHECK_OK(tqm_tensor_find(f, "group", &idx));
  CHECK_OK(tqm_tensor_storage(f, idx, &storage));
  CHECK(storage == TQM_STORAGE_U8_GROUP);
  CHECK_OK(tqm_tensor_bits(f, idx, &bits));
  CHECK(bits == 4);
  CHECK_OK(tqm_tensor_group_size(f, idx, &group_size));
  CHECK(group_size == 8);
  CHECK_OK(tqm_tensor_affine_count(f, idx, &count));
  CHECK(count == 6);
  {
    tqm_affine pairs[6];
    CHECK_OK(tqm_tensor_affine(f, idx, pairs, 6));
    for (k = 0; k < 6; ++k) {
      CHECK(pairs[k].scale == 0.5f * (float)(k + 1) && pairs[k].zero == (float)k);
    }
  }
  CHECK_OK(tqm_tensor_read_u8(f, idx, codes, 40));
  for (k = 0; k < 40; ++k) CHECK(codes[k] == (7 * k) % 16);
  CHECK_OK(tqm_tensor_read_f32(f, idx, vals, 40));
  for (k = 0; k < 40; ++k) {
    const size_t g = (k / 20) * 3 + (k % 20) / 8;
    CHECK(vals[k] == 0.5f * (float)(g + 1) * ((float)codes[k] - (float)g));
  }
  /* Tensors of other storages report no bits and no group size. */
  CHECK_OK(tqm_tensor_find(f, "f32.scalar", &idx));
  CHECK_OK(tqm_tensor_group_size(f, idx, &group_size));
  CHECK(group_size == 0);
  CHECK(tqm_tensor_bits(f, idx, NULL) == TQM_INVALID_ARGUMENT);
  tqm_close(f);
}

int main(void) {
  const char* dir = TQM_SOURCE_DIR "/spec/vectors/";
  char path[1024], decoded[1024];
  snprintf(path, sizeof(path), "%stiny.tqm", dir);
  snprintf(decoded, sizeof(decoded), "%stiny.decoded", dir);
  check_vector(path, decoded);
  check_errors(path);
  snprintf(path, sizeof(path), "%srows.tqm", dir);
  snprintf(decoded, sizeof(decoded), "%srows.decoded", dir);
  check_vector(path, decoded);
  check_metadata(path);
  check_options(path);
  snprintf(path, sizeof(path), "%s/tests/c/format13.tqm", TQM_SOURCE_DIR);
  check_format13(path);
  if (failures) {
    fprintf(stderr, "c_api_test: %d check(s) failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}
