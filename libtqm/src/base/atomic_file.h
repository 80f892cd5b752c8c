// Atomic file creation: bytes go to a temporary file beside the destination,
// which is fsynced and renamed over it only on Commit(). Destroying an
// uncommitted AtomicFile removes the temporary file, so readers of the
// destination see either the old file or the complete new one.
//
// OutputGroup extends that to every output of one command (a checkpoint and
// its tokenizer): each is written to its own temporary file and none is
// renamed into place until all are complete. CheckNotAnInput keeps a tool
// from replacing a file it reads.

#ifndef TQM_SRC_ATOMIC_FILE_H_
#define TQM_SRC_ATOMIC_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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

// All the outputs of one command, committed together. Add() reserves an empty
// temporary file in the destination's own directory (so the final rename
// stays within one file system) and returns its path; the caller writes the
// temporary by any means, including AtomicFile::Create(temp), which renames
// its own temporary onto it. Commit() renames every temporary onto its
// destination only after all were written; should one rename fail, the
// destinations already replaced get their previous files back (kept as hard
// links until the group commits). Destroying an uncommitted group removes its
// temporaries, so on any failure no output appears and files already at
// the destinations are unchanged. The temporaries are registered with
// RemoveTemporaryFilesOnSignal(). Not thread-safe.
class OutputGroup {
 public:
  OutputGroup() = default;
  OutputGroup(const OutputGroup&) = delete;
  OutputGroup& operator=(const OutputGroup&) = delete;
  ~OutputGroup();

  // The temporary path to write in place of `path`. InvalidArgument when
  // `path` is empty, names a directory, or is the same destination as an
  // output added before (same file, or the same name in the same directory);
  // the errno mapping when the temporary cannot be created (e.g. a missing
  // directory).
  absl::StatusOr<std::string> Add(const std::string& path);

  // fsyncs every temporary, renames each onto its destination, fsyncs the
  // directories. FailedPrecondition when called twice.
  absl::Status Commit();

 private:
  struct Output {
    std::string path, temp, backup;
  };
  std::vector<Output> outputs_;
  bool committed_ = false;
};

// OK unless `output` is an existing file that is one of `inputs` (same
// device and inode, so a symbolic or hard link to an input counts too). An
// input that is a directory (a sharded safetensors model) contributes every
// regular file directly in it, and `output` naming that directory itself is
// refused as well. An `output` that does not exist yet is fine, and so is an
// input that cannot be examined (opening it reports the error). The message
// names both paths. Call before anything is written.
absl::Status CheckNotAnInput(const std::string& output, const std::vector<std::string>& inputs);

// Total bytes written by every AtomicFile of this process so far, for
// progress displays of writers that report none themselves.
uint64_t AtomicFileBytesWritten();

// Removes every temporary file created by live AtomicFiles and OutputGroups; safe to call from
// a signal handler (uses only async-signal-safe calls).
void RemoveTemporaryFilesOnSignal();

// Maps errno to a Status whose message names `path` and `what`.
absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path);

}  // namespace tqm

#endif  // TQM_SRC_ATOMIC_FILE_H_
