// Fuzz target: a llama2.c v0 checkpoint from untrusted bytes (7 x int32
// header, then float32 arrays whose sizes follow from it), read through a
// memory-backed InputFile. An opened source must read back every tensor.

#include <cstdint>
#include <string>

#include "import_check.h"
#include "interop/import_internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "fuzz.bin";
  tqm_fuzz::CheckOpened(
      tqm::internal::OpenLlama2cInput(tqm::internal::InputFile::FromBuffer(
          absl::Span<const uint8_t>(data, size), name)),
      name, size);
  return 0;
}
