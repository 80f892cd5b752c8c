/* Tests of the C writer API (tqm_writer_*) and of partial decoding
 * (tqm_tensor_decode_range, tqm_tensor_read_f32_range, tqm_chunks_decoded)
 * from plain C: a file written with float, float16-kept and verbatim tensors
 * plus typed metadata reads back through the C API (verbatim tensors
 * bit-exact, quantized ones within half a quantization step), a row range
 * decodes fewer chunks than the whole tensor, and bad calls fail with their
 * status. Exit status 0 = pass. */

#define _POSIX_C_SOURCE 200809L /* mkdtemp */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tqm/c_api.h"

#include "c_check.h"

enum { kRows = 64, kCols = 64 };

/* Varied values (rows of different ranges) without libm. */
static float weight(int r, int c) {
  return (float)((r * 37 + c * 11) % 97 - 48) / 16.0f * (float)(1 + r % 5);
}

static float absf(float x) { return x < 0 ? -x : x; }

static size_t find(const tqm_file* f, const char* name) {
  size_t i = (size_t)-1;
  CHECK_OK(tqm_tensor_find(f, name, &i));
  return i;
}

static tqm_storage storage_of(const tqm_file* f, size_t i) {
  tqm_storage s = TQM_STORAGE_F32;
  CHECK_OK(tqm_tensor_storage(f, i, &s));
  return s;
}

/* Decodes tensor `name` verbatim and compares it with want[0..size). */
static void check_bytes(const tqm_file* f, const char* name, tqm_source_dtype dtype,
                        const void* want, size_t size) {
  size_t i = find(f, name);
  uint64_t bytes = 0;
  tqm_source_dtype d = TQM_DTYPE_F32;
  unsigned char* got = (unsigned char*)malloc(size + 1);
  CHECK(storage_of(f, i) == TQM_STORAGE_RAW);
  CHECK_OK(tqm_tensor_source_dtype(f, i, &d));
  CHECK(d == dtype);
  CHECK_OK(tqm_tensor_byte_size(f, i, &bytes));
  CHECK(bytes == size);
  CHECK_OK(tqm_tensor_decode(f, i, got, size + 1));
  CHECK(size == 0 || memcmp(got, want, size) == 0);
  free(got);
}

static void write_and_read(const char* dir) {
  char path[1024];
  tqm_pack_options o;
  tqm_writer* w = NULL;
  tqm_pack_stats stats;
  tqm_file* f = NULL;
  static float wv[kRows * kCols];
  float norm[kCols];
  int64_t ids[6] = {-1, 0, 1, INT64_MAX, INT64_MIN, 42}, given[6];
  unsigned char mask[4] = {1, 0, 0, 1};
  double scalar = 3.141592653589793;
  int32_t borrowed[5] = {5, 4, 3, 2, 1};
  uint16_t half[6] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7e00}; /* f16 bits */
  uint64_t wdims[2] = {kRows, kCols}, ndims[1] = {kCols}, idims[2] = {2, 3};
  uint64_t mdims[1] = {4}, edims[2] = {3, 0}, hdims[2] = {2, 3}, bdims[1] = {5};
  int r, c;

  for (r = 0; r < kRows; ++r)
    for (c = 0; c < kCols; ++c) wv[r * kCols + c] = weight(r, c);
  for (c = 0; c < kCols; ++c) norm[c] = 1.0f + 0.01f * (float)c;
  snprintf(path, sizeof(path), "%s/written.tqm", dir);

  tqm_pack_options_init(&o);
  CHECK(o.bits == 8 && o.entropy == 1 && o.profile == TQM_PROFILE_BALANCED);
  o.granularity = TQM_GRANULARITY_ROW;
  o.chunk_size = 512; /* 4096 codes: 8 chunks */
  o.threads = 2;
  CHECK_OK(tqm_writer_new(&o, &w));
  CHECK_OK(tqm_writer_add_tensor(w, "model.layers.0.mlp.up_proj.weight", TQM_DTYPE_F32,
                                 wdims, 2, wv, sizeof(wv), 0));
  CHECK_OK(tqm_writer_add_tensor(w, "model.norm.weight", TQM_DTYPE_F32, ndims, 1, norm,
                                 sizeof(norm), 0));
  memcpy(given, ids, sizeof(ids));
  CHECK_OK(
      tqm_writer_add_tensor(w, "ids", TQM_DTYPE_I64, idims, 2, given, sizeof(given), 0));
  CHECK_OK(tqm_writer_add_tensor(w, "mask", TQM_DTYPE_BOOL, mdims, 1, mask, 4, 0));
  CHECK_OK(tqm_writer_add_tensor(w, "scalar", TQM_DTYPE_F64, NULL, 0, &scalar, 8, 0));
  CHECK_OK(tqm_writer_add_tensor(w, "empty", TQM_DTYPE_U8, edims, 2, NULL, 0, 0));
  CHECK_OK(tqm_writer_add_tensor(w, "half.kept", TQM_DTYPE_F16, hdims, 2, half,
                                 sizeof(half), TQM_WRITE_KEEP));
  CHECK_OK(tqm_writer_add_tensor(w, "borrowed", TQM_DTYPE_I32, bdims, 1, borrowed,
                                 sizeof(borrowed), TQM_WRITE_BORROW));
  /* Without TQM_WRITE_BORROW the bytes were copied: this changes nothing. */
  given[0] = 7;
  CHECK_OK(tqm_writer_set_metadata_int(w, "test.int", -5));
  CHECK_OK(tqm_writer_set_metadata_float(w, "test.float", 0.25));
  CHECK_OK(tqm_writer_set_metadata_string(w, "test.string", "first", 5));
  CHECK_OK(tqm_writer_set_metadata_bytes(w, "test.bytes", "a\0b", 3));
  CHECK_OK(tqm_writer_set_metadata_string(w, "test.string", "h\xc3\xa9llo", 6));

  /* Bad calls, each with its status; none changes the writer. */
  CHECK(tqm_writer_add_tensor(w, "ids", TQM_DTYPE_I64, idims, 2, ids, sizeof(ids), 0) ==
        TQM_INVALID_ARGUMENT);
  CHECK(strstr(tqm_last_error_message(), "duplicate tensor 'ids'") != NULL);
  CHECK(tqm_writer_add_tensor(w, "short", TQM_DTYPE_I64, idims, 2, ids, 40, 0) ==
        TQM_INVALID_ARGUMENT);
  CHECK(strstr(tqm_last_error_message(), "48") != NULL);
  CHECK(tqm_writer_add_tensor(w, "q8", TQM_DTYPE_Q8_0, ndims, 1, norm, 64, 0) ==
        TQM_INVALID_ARGUMENT);
  CHECK(tqm_writer_add_tensor(w, "dt", 99, ndims, 1, norm, 64, 0) ==
        TQM_INVALID_ARGUMENT);
  {
    unsigned char bad[4] = {0, 1, 2, 0};
    CHECK(tqm_writer_add_tensor(w, "badbool", TQM_DTYPE_BOOL, mdims, 1, bad, 4, 0) ==
          TQM_INVALID_ARGUMENT);
  }
  CHECK(tqm_writer_add_tensor(w, "", TQM_DTYPE_U8, edims, 2, NULL, 0, 0) ==
        TQM_INVALID_ARGUMENT);
  CHECK(tqm_writer_add_tensor(w, "flags", TQM_DTYPE_U8, edims, 2, NULL, 0, 8) ==
        TQM_INVALID_ARGUMENT);
  CHECK(tqm_writer_set_metadata_int(w, "bad key", 1) == TQM_INVALID_ARGUMENT);
  CHECK(tqm_writer_set_metadata_string(w, "test.utf8", "\xff", 1) ==
        TQM_INVALID_ARGUMENT);
  CHECK(tqm_writer_set_metadata_int(NULL, "k", 1) == TQM_INVALID_ARGUMENT);

  memset(&stats, 0, sizeof(stats));
  CHECK_OK(tqm_writer_finish(w, path, &stats));
  CHECK(stats.tensors == 8);
  CHECK(stats.quantized_tensors == 1);
  CHECK(stats.raw_tensors == 6);
  CHECK(stats.file_bytes > 0);
  /* Once finished, only tqm_writer_free. */
  CHECK(tqm_writer_finish(w, path, NULL) == TQM_FAILED_PRECONDITION);
  CHECK(tqm_writer_add_tensor(w, "late", TQM_DTYPE_U8, edims, 2, NULL, 0, 0) ==
        TQM_FAILED_PRECONDITION);
  tqm_writer_free(w);

  CHECK_OK(tqm_open(path, &f));
  if (f == NULL) return;
  CHECK_OK(tqm_verify(f));
  CHECK(tqm_tensor_count(f) == 8);
  {
    size_t k;
    int64_t iv = 0;
    double fv = 0;
    const char* s = NULL;
    const void* b = NULL;
    size_t n = 0;
    CHECK_OK(tqm_metadata_find(f, "test.int", &k));
    CHECK_OK(tqm_metadata_int(f, k, &iv));
    CHECK(iv == -5);
    CHECK_OK(tqm_metadata_find(f, "test.float", &k));
    CHECK_OK(tqm_metadata_float(f, k, &fv));
    CHECK(fv == 0.25);
    CHECK_OK(tqm_metadata_find(f, "test.string", &k));
    CHECK_OK(tqm_metadata_string(f, k, &s, &n));
    CHECK(n == 6 && memcmp(s, "h\xc3\xa9llo", 6) == 0);
    CHECK_OK(tqm_metadata_find(f, "test.bytes", &k));
    CHECK_OK(tqm_metadata_bytes(f, k, &b, &n));
    CHECK(n == 3 && memcmp(b, "a\0b", 3) == 0);
    CHECK_OK(tqm_metadata_find(f, "tqm.granularity", &k));
  }
  check_bytes(f, "ids", TQM_DTYPE_I64, ids, sizeof(ids));
  check_bytes(f, "mask", TQM_DTYPE_BOOL, mask, 4);
  check_bytes(f, "scalar", TQM_DTYPE_F64, &scalar, 8);
  check_bytes(f, "empty", TQM_DTYPE_U8, NULL, 0);
  check_bytes(f, "half.kept", TQM_DTYPE_F16, half, sizeof(half));
  check_bytes(f, "borrowed", TQM_DTYPE_I32, borrowed, sizeof(borrowed));
  {
    size_t i = find(f, "model.norm.weight");
    float got[kCols];
    CHECK(storage_of(f, i) == TQM_STORAGE_F32);
    CHECK_OK(tqm_tensor_read_f32(f, i, got, kCols));
    CHECK(memcmp(got, norm, sizeof(norm)) == 0);
  }
  {
    /* Quantized per row: within half a step of each row's scale. */
    size_t i = find(f, "model.layers.0.mlp.up_proj.weight"), chunks = 0, k;
    static float got[kRows * kCols];
    float rows[3 * kCols];
    unsigned char codes[3 * kCols], all_codes[kRows * kCols];
    tqm_affine aff[kRows];
    int32_t layer = -2;
    uint64_t before, after;
    tqm_chunk_info ci;
    CHECK(storage_of(f, i) == TQM_STORAGE_U8_ROW);
    CHECK_OK(tqm_tensor_layer(f, i, &layer));
    CHECK(layer == 0);
    CHECK_OK(tqm_tensor_affine(f, i, aff, kRows));
    CHECK_OK(tqm_tensor_read_f32(f, i, got, kRows * kCols));
    for (r = 0; r < kRows; ++r)
      for (c = 0; c < kCols; ++c)
        CHECK(absf(got[r * kCols + c] - wv[r * kCols + c]) <= aff[r].scale * 0.5001f);
    CHECK_OK(tqm_tensor_read_u8(f, i, all_codes, sizeof(all_codes)));

    CHECK_OK(tqm_tensor_chunk_count(f, i, &chunks));
    CHECK(chunks == kRows * kCols / 512);
    for (k = 0; k < chunks; ++k) {
      CHECK_OK(tqm_tensor_chunk(f, i, k, &ci));
      CHECK(ci.decoded_offset == 512 * k && ci.decoded_size == 512);
    }
    CHECK(tqm_tensor_chunk(f, i, chunks, &ci) == TQM_INVALID_ARGUMENT);

    /* Rows 20..22 (elements 1280..1472) lie in chunks 2 (1024..1536): one
     * chunk decoded, not eight. */
    before = tqm_chunks_decoded(f);
    CHECK_OK(tqm_tensor_read_f32_range(f, i, 20 * kCols, 3 * kCols, rows, 3 * kCols));
    after = tqm_chunks_decoded(f);
    CHECK(after - before == 1);
    CHECK(memcmp(rows, got + 20 * kCols, sizeof(rows)) == 0);
    CHECK_OK(tqm_tensor_decode_range(f, i, 20 * kCols, 3 * kCols, codes, sizeof(codes)));
    CHECK(tqm_chunks_decoded(f) - after == 1);
    CHECK(memcmp(codes, all_codes + 20 * kCols, sizeof(codes)) == 0);
    /* A range across a chunk boundary: 2 chunks, same values. */
    before = tqm_chunks_decoded(f);
    CHECK_OK(tqm_tensor_read_f32_range(f, i, 500, 30, rows, 30));
    CHECK(tqm_chunks_decoded(f) - before == 2);
    CHECK(memcmp(rows, got + 500, 30 * sizeof(float)) == 0);
    /* The whole tensor: every chunk. */
    before = tqm_chunks_decoded(f);
    CHECK_OK(tqm_tensor_read_f32(f, i, got, kRows * kCols));
    CHECK(tqm_chunks_decoded(f) - before == chunks);

    CHECK(tqm_tensor_read_f32_range(f, i, kRows * kCols - 1, 2, rows, 2) ==
          TQM_OUT_OF_RANGE);
    CHECK(tqm_tensor_decode_range(f, i, 0, 3 * kCols, codes, 10) == TQM_INVALID_ARGUMENT);
    CHECK_OK(tqm_tensor_read_f32_range(f, i, kRows * kCols, 0, NULL, 0));
  }
  {
    /* Ranges of verbatim tensors are bytes of their dtype. */
    int64_t two[2];
    float asf[2];
    size_t i = find(f, "ids");
    CHECK_OK(tqm_tensor_decode_range(f, i, 3, 2, two, sizeof(two)));
    CHECK(two[0] == INT64_MAX && two[1] == INT64_MIN);
    CHECK_OK(tqm_tensor_read_f32_range(f, i, 4, 2, asf, 2));
    CHECK(asf[1] == 42.0f);
  }
  tqm_close(f);

  /* A directory that does not exist: TQM_NOT_FOUND naming the path. */
  {
    char missing[1100];
    snprintf(missing, sizeof(missing), "%s/no/such/dir/x.tqm", dir);
    CHECK_OK(tqm_writer_new(NULL, &w));
    CHECK_OK(
        tqm_writer_add_tensor(w, "ids", TQM_DTYPE_I64, idims, 2, ids, sizeof(ids), 0));
    CHECK(tqm_writer_finish(w, missing, NULL) == TQM_NOT_FOUND);
    CHECK(strstr(tqm_last_error_message(), "no/such/dir") != NULL);
    tqm_writer_free(w);
  }
  /* Options are checked when the writer is made. */
  tqm_pack_options_init(&o);
  o.bits = 9;
  CHECK(tqm_writer_new(&o, &w) == TQM_INVALID_ARGUMENT && w == NULL);
  tqm_pack_options_init(&o);
  o.granularity = TQM_GRANULARITY_GROUP;
  CHECK(tqm_writer_new(&o, &w) == TQM_INVALID_ARGUMENT);
  tqm_pack_options_init(&o);
  o.chunk_size = 6;
  CHECK(tqm_writer_new(&o, &w) == TQM_INVALID_ARGUMENT);
  tqm_pack_options_init(&o);
  o.profile = 7;
  CHECK(tqm_writer_new(&o, &w) == TQM_INVALID_ARGUMENT);
  unlink(path);
}

int main(void) {
  char dir[] = "/tmp/tqm_c_writer_XXXXXX";
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  write_and_read(dir);
  rmdir(dir);
  if (failures) {
    fprintf(stderr, "c_writer_test: %d check(s) failed\n", failures);
    return 1;
  }
  printf("c_writer_test: all checks passed\n");
  return 0;
}
