/* CHECK and CHECK_OK for the plain C tests of the C API: a failed check
 * prints the condition and the library's last error, and counts. */
#ifndef TQM_TESTS_C_CHECK_H_
#define TQM_TESTS_C_CHECK_H_

#include <stdio.h>

#include "tqm/c_api.h"

static int failures = 0;

#define CHECK(cond)                                                               \
  do {                                                                            \
    if (!(cond)) {                                                                \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s: %s)\n", __FILE__, \
              __LINE__, #cond, tqm_status_name(tqm_last_error_code()),            \
              tqm_last_error_message());                                          \
      ++failures;                                                                 \
    }                                                                             \
  } while (0)

#define CHECK_OK(expr) CHECK((expr) == TQM_OK)

#endif /* TQM_TESTS_C_CHECK_H_ */
