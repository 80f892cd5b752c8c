/* tqm-c-example: a complete program over the C API (tqm/c_api.h).
 *
 *   tqm-c-example FILE.tqm [BUDGET_BYTES]
 *
 * Opens FILE, prints its metadata and tensor table, then walks the layers
 * through the lazy loader (each layer decoded in parallel, pinned while it is
 * used, released after; BUDGET_BYTES caps what the loader keeps decoded) and
 * prints the RMS of every tensor computed from the pinned views: uint8 codes
 * dequantized with their affine pairs, or float32 values used in place.
 * Every error is reported with its stable code and the library's message. */

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tqm/c_api.h"

static int fail(const char* what) {
  fprintf(stderr, "tqm-c-example: %s: %s (%s)\n", what, tqm_last_error_message(),
          tqm_status_name(tqm_last_error_code()));
  return 1;
}

static void print_metadata(const tqm_file* f) {
  size_t i;
  printf("metadata (%zu entries):\n", tqm_metadata_count(f));
  for (i = 0; i < tqm_metadata_count(f); ++i) {
    const char* key = NULL;
    tqm_meta_type type;
    int64_t iv;
    double dv;
    const char* s;
    const void* data;
    size_t size;
    if (tqm_metadata_key(f, i, &key) != TQM_OK ||
        tqm_metadata_type(f, i, &type) != TQM_OK) {
      continue;
    }
    printf("  %-32s ", key);
    switch (type) {
      case TQM_META_INT64:
        if (tqm_metadata_int(f, i, &iv) == TQM_OK) printf("%" PRId64 "\n", iv);
        break;
      case TQM_META_FLOAT64:
        if (tqm_metadata_float(f, i, &dv) == TQM_OK) printf("%g\n", dv);
        break;
      case TQM_META_STRING:
        if (tqm_metadata_string(f, i, &s, &size) == TQM_OK) printf("\"%.60s\"\n", s);
        break;
      default:
        if (tqm_metadata_bytes(f, i, &data, &size) == TQM_OK)
          printf("<%zu bytes>\n", size);
        break;
    }
  }
}

static void print_tensors(const tqm_file* f) {
  static const char* storage_names[] = {"?", "f32", "u8/tensor", "u8/row"};
  size_t i, k;
  printf("tensors (%zu):\n", tqm_tensor_count(f));
  for (i = 0; i < tqm_tensor_count(f); ++i) {
    const char* name = NULL;
    size_t ndim = 0;
    uint64_t dims[TQM_MAX_DIMS];
    tqm_storage storage = TQM_STORAGE_F32;
    int32_t layer = TQM_NO_LAYER;
    char shape[128];
    int n = 0;
    tqm_tensor_name(f, i, &name);
    tqm_tensor_ndim(f, i, &ndim);
    tqm_tensor_dims(f, i, dims, TQM_MAX_DIMS);
    tqm_tensor_storage(f, i, &storage);
    tqm_tensor_layer(f, i, &layer);
    n += snprintf(shape + n, sizeof(shape) - n, "[");
    for (k = 0; k < ndim && n < (int)sizeof(shape) - 24; ++k) {
      n += snprintf(shape + n, sizeof(shape) - n, "%s%" PRIu64, k ? ", " : "", dims[k]);
    }
    snprintf(shape + n, sizeof(shape) - n, "]");
    printf("  %-48s %-12s %-10s layer %d\n", name, shape, storage_names[storage & 3],
           layer);
  }
}

/* RMS of one pinned tensor, dequantizing codes with their affine pairs. */
static double view_rms(const tqm_view* v) {
  double sum = 0;
  uint64_t i;
  for (i = 0; i < v->numel; ++i) {
    double x;
    if (v->f32 != NULL) {
      x = v->f32[i];
    } else {
      const tqm_affine* a = &v->affine[v->affine_count == 1 ? 0 : i / v->cols];
      x = a->scale * ((float)v->q[i] - a->zero);
    }
    sum += x * x;
  }
  return v->numel ? sqrt(sum / (double)v->numel) : 0.0;
}

static int walk_layers(tqm_file* f) {
  int32_t layer;
  printf("layers (%d numbered):\n", tqm_layer_count(f));
  for (layer = TQM_NO_LAYER; layer < tqm_layer_count(f); ++layer) {
    tqm_layer* l = NULL;
    size_t j;
    tqm_status s = tqm_layer_pin(f, layer, &l);
    if (s == TQM_NOT_FOUND) continue; /* a layer number with no tensors */
    if (s != TQM_OK) return fail("tqm_layer_pin");
    printf("  layer %d:\n", layer);
    for (j = 0; j < tqm_layer_tensor_count(l); ++j) {
      tqm_view v;
      if (tqm_layer_tensor(l, j, &v) != TQM_OK) {
        tqm_layer_release(l);
        return fail("tqm_layer_tensor");
      }
      printf("    %-46s rms %.6f%s\n", v.name, view_rms(&v),
             v.in_place ? " (in place)" : "");
    }
    tqm_layer_release(l);
  }
  return 0;
}

int main(int argc, char** argv) {
  tqm_open_options options;
  tqm_file* f = NULL;
  int rc;
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s FILE.tqm [BUDGET_BYTES]\n", argv[0]);
    return 2;
  }
  tqm_open_options_init(&options);
  if (argc == 3) options.budget_bytes = strtoull(argv[2], NULL, 10);
  if (tqm_open_ex(argv[1], &options, &f) != TQM_OK) return fail("tqm_open");
  printf("%s (libtqm_c %s)\n", argv[1], tqm_version());
  print_metadata(f);
  print_tensors(f);
  rc = walk_layers(f);
  tqm_close(f);
  return rc;
}
