// The C++ side of the installed package: tqm::tqm (libtqm.so) with its Abseil
// dependencies found by tqmConfig.cmake. Verifies FILE.tqm and prints
// "tensors N", as consumer.c does through the C API.
#include <cstdio>
#include <memory>

#include "tqm/reader.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FILE.tqm\n", argv[0]);
    return 2;
  }
  absl::StatusOr<std::unique_ptr<tqm::Reader>> reader = tqm::Reader::Open(argv[1]);
  if (!reader.ok()) {
    std::fprintf(stderr, "consumer++: %s\n", reader.status().ToString().c_str());
    return 1;
  }
  if (absl::Status s = (*reader)->Verify(); !s.ok()) {
    std::fprintf(stderr, "consumer++: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("tensors %zu\n", (*reader)->tensors().size());
  return 0;
}
