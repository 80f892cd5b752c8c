// Atomic file creation: bytes go to a temporary file beside the destination,
// which is fsynced and renamed over it only on Commit(). Destroying an
// uncommitted AtomicFile removes the temporary file, so readers of the
// destination see either the old file or the complete new one.

#ifndef TQM_SRC_ATOMIC_FILE_H_
#define TQM_SRC_ATOMIC_FILE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tqm {

class AtomicFile {
 public:
  static absl::StatusOr<std::unique_ptr<AtomicFile>> Create(const std::string& path);
  ~AtomicFile();

  absl::Status Append(absl::Span<const uint8_t> bytes);
  absl::Status Append(const std::string& bytes) {
    return Append(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  }
  // Overwrites bytes already written at `offset`.
  absl::Status WriteAt(uint64_t offset, absl::Span<const uint8_t> bytes);
  uint64_t size() const { return size_; }
  const std::string& temp_path() const { return temp_path_; }

  // fsync, rename onto the destination, fsync the directory.
  absl::Status Commit();

 private:
  AtomicFile(std::string path, std::string temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool committed_ = false;
};

// Removes every temporary file created by live AtomicFiles; safe to call from
// a signal handler (uses only async-signal-safe calls).
void RemoveTemporaryFilesOnSignal();

// Maps errno to a Status whose message names `path` and `what`.
absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path);

}  // namespace tqm

#endif  // TQM_SRC_ATOMIC_FILE_H_
