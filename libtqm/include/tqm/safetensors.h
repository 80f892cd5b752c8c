// Writing safetensors files (the export side of tqm-unpack).

#ifndef TQM_SAFETENSORS_H_
#define TQM_SAFETENSORS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tqm {

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", "U8", ...
  std::vector<uint64_t> shape;
};

// Streams a safetensors file: the header is written from the entries given
// up front, then each tensor's bytes are appended in entry order. The file
// appears at `path` only after Finish() succeeds (temporary file + rename);
// destroying the writer before that removes the temporary file.
class SafetensorsWriter {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<SafetensorsEntry> entries,
      std::vector<std::pair<std::string, std::string>> metadata);
  virtual ~SafetensorsWriter() = default;

  // Appends the bytes of the next tensor (exactly its size in bytes).
  virtual absl::Status Write(absl::Span<const uint8_t> bytes) = 0;
  // Checks all tensors were written, syncs and renames into place.
  virtual absl::Status Finish() = 0;
};

// Bytes per element of a safetensors dtype name, or 0 when unknown.
size_t SafetensorsDTypeSize(const std::string& dtype);

}  // namespace tqm

#endif  // TQM_SAFETENSORS_H_
