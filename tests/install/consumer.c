/* A program outside the tqm tree, built against an installed tqm (through
 * find_package(tqm) or pkg-config, scripts/test-install.sh):
 *
 *   tqm-install-consumer FILE.tqm
 *
 * Checks that the installed headers and libtqm_c agree on the version, that
 * FILE verifies (every checksum, every chunk decoded) and was written by this
 * version, and prints "tensors N" for the script to compare. */
#include <stdio.h>
#include <string.h>

#include "tqm/c_api.h"
#include "tqm/version.h"

static int fail(const char* what) {
  fprintf(stderr, "consumer: %s: %s (%s)\n", what, tqm_last_error_message(),
          tqm_status_name(tqm_last_error_code()));
  return 1;
}

int main(int argc, char** argv) {
  tqm_file* f = NULL;
  size_t index = 0;
  const char* writer = NULL;
  size_t n;
  if (argc != 2) {
    fprintf(stderr, "usage: %s FILE.tqm\n", argv[0]);
    return 2;
  }
  /* The header installed with the library must match the library loaded. */
  if (strcmp(tqm_version(), TQM_VERSION_STRING) != 0) {
    fprintf(stderr, "consumer: libtqm_c is %s, tqm/version.h says %s\n", tqm_version(),
            TQM_VERSION_STRING);
    return 1;
  }
  if (tqm_open(argv[1], &f) != TQM_OK) return fail(argv[1]);
  if (tqm_verify(f) != TQM_OK) {
    tqm_close(f);
    return fail("verify");
  }
  if (tqm_metadata_find(f, "tqm.writer", &index) != TQM_OK ||
      tqm_metadata_string(f, index, &writer, NULL) != TQM_OK) {
    tqm_close(f);
    return fail("tqm.writer");
  }
  if (strcmp(writer, "libtqm " TQM_VERSION_MAJOR_MINOR_STRING) != 0) {
    fprintf(stderr, "consumer: %s: tqm.writer is \"%s\", expected \"libtqm %s\"\n", argv[1],
            writer, TQM_VERSION_MAJOR_MINOR_STRING);
    tqm_close(f);
    return 1;
  }
  n = tqm_tensor_count(f);
  tqm_close(f);
  if (n == 0) {
    fprintf(stderr, "consumer: %s: no tensors\n", argv[1]);
    return 1;
  }
  printf("tensors %zu\n", n);
  return 0;
}
