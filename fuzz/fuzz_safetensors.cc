// Fuzz target: a safetensors file from untrusted bytes (u64 header length,
// JSON header, data area), read through a memory-backed InputFile. An opened
// source must read back every tensor (F32, F16, BF16 conversion paths).

#include <cstdint>
#include <string>

#include "import_check.h"
#include "interop/import_internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "fuzz.safetensors";
  tqm_fuzz::CheckOpened(
      tqm::internal::OpenSafetensorsInput(tqm::internal::InputFile::FromBuffer(
          absl::Span<const uint8_t>(data, size), name)),
      name, size);
  return 0;
}
