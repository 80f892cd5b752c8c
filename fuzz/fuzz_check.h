// Assertions for the fuzz targets: a failed check prints where and what,
// then aborts, which libFuzzer and the replay driver report as a finding.

#ifndef TQM_FUZZ_FUZZ_CHECK_H_
#define TQM_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"

#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                    \
    }                                                                             \
  } while (0)

#define FUZZ_CHECK_OK(expr)                                                       \
  do {                                                                            \
    absl::Status s_ = (expr);                                                     \
    if (!s_.ok()) {                                                               \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr,               \
              s_.ToString().c_str());                                             \
      abort();                                                                    \
    }                                                                             \
  } while (0)

#endif  // TQM_FUZZ_FUZZ_CHECK_H_
