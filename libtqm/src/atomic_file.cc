// AtomicFile: temporary file + fsync + rename, with a small signal-safe
// registry of live temporary files so that tools can clean up on SIGINT.

#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "absl/strings/str_format.h"

namespace tqm {
namespace {

// Signal-safe registry: fixed slots, each holding a NUL-terminated path.
constexpr int kSlots = 16;
struct Slot {
  std::atomic<bool> used{false};
  char path[PATH_MAX + 32];
};
Slot g_slots[kSlots];

int Register(const std::string& path) {
  if (path.size() >= sizeof(Slot::path)) return -1;
  for (int i = 0; i < kSlots; ++i) {
    bool expected = false;
    if (g_slots[i].used.compare_exchange_strong(expected, true)) {
      // Fill the path before anyone could read it: mark used last would be
      // cleaner, but the handler only unlinks, and an empty path is harmless.
      std::memcpy(g_slots[i].path, path.c_str(), path.size() + 1);
      return i;
    }
  }
  return -1;
}

void Unregister(const std::string& path) {
  for (int i = 0; i < kSlots; ++i) {
    if (g_slots[i].used.load() && path == g_slots[i].path) {
      g_slots[i].path[0] = '\0';
      g_slots[i].used.store(false);
      return;
    }
  }
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::Status ErrnoStatus(int err, const std::string& what, const std::string& path) {
  std::string msg = absl::StrFormat("%s: %s: %s", path, what, strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::PermissionDeniedError(msg);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EFBIG:
      return absl::ResourceExhaustedError(msg);
    case EEXIST:
      return absl::AlreadyExistsError(msg);
    case EINVAL:
    case EISDIR:
    case ENOTDIR:
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(msg);
    default:
      return absl::UnknownError(msg);
  }
}

void RemoveTemporaryFilesOnSignal() {
  for (int i = 0; i < kSlots; ++i) {
    if (g_slots[i].used.load() && g_slots[i].path[0] != '\0') unlink(g_slots[i].path);
  }
}

absl::StatusOr<std::unique_ptr<AtomicFile>> AtomicFile::Create(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty output path");
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: is a directory", path));
  }
  size_t slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string temp = DirName(path) + "/." + base + ".tmp.XXXXXX";
  std::string buf = temp;
  int fd = mkstemp(buf.data());
  if (fd < 0) return ErrnoStatus(errno, "cannot create temporary file", temp);
  // mkstemp creates 0600; give the file the usual umask-governed mode.
  mode_t mask = umask(0);
  umask(mask);
  fchmod(fd, 0666 & ~mask);
  Register(buf);
  return std::unique_ptr<AtomicFile>(new AtomicFile(path, buf, fd));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) close(fd_);
  if (!committed_) {
    unlink(temp_path_.c_str());
    Unregister(temp_path_);
  }
}

absl::Status AtomicFile::Append(absl::Span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = pwrite(fd_, bytes.data() + done, bytes.size() - done, size_ + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write failed", temp_path_);
    }
    done += static_cast<size_t>(n);
  }
  size_ += bytes.size();
  return absl::OkStatus();
}

absl::Status AtomicFile::WriteAt(uint64_t offset, absl::Span<const uint8_t> bytes) {
  if (offset > size_ || bytes.size() > size_ - offset) {
    return absl::InternalError("AtomicFile::WriteAt past the end");
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = pwrite(fd_, bytes.data() + done, bytes.size() - done, offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "write failed", temp_path_);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status AtomicFile::Commit() {
  if (fsync(fd_) != 0) return ErrnoStatus(errno, "fsync failed", temp_path_);
  if (close(fd_) != 0) {
    fd_ = -1;
    return ErrnoStatus(errno, "close failed", temp_path_);
  }
  fd_ = -1;
  if (rename(temp_path_.c_str(), path_.c_str()) != 0) {
    return ErrnoStatus(errno, "cannot rename temporary file onto", path_);
  }
  committed_ = true;
  Unregister(temp_path_);
  int dfd = open(DirName(path_).c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace tqm
