// AtomicFile: temporary file + fsync + rename, with a small signal-safe
// registry of live temporary files so that tools can clean up on SIGINT.
// OutputGroup commits several such files together; CheckNotAnInput compares
// inodes so that no tool writes over what it reads.

#include "base/atomic_file.h"

#include <dirent.h>
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
#include "tqm/status.h"

namespace tqm {
namespace {

std::atomic<uint64_t> g_bytes_written{0};

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

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The destination as one spelling: the directory resolved (symbolic links,
// "..", "./"), the last component kept, since rename() replaces that entry
// itself. The path unchanged when the directory cannot be resolved.
std::string DestinationKey(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(DirName(path).c_str(), buf) == nullptr) return path;
  return std::string(buf) + "/" + BaseName(path);
}

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// Creates an empty temporary file beside `path`, with the usual
// umask-governed mode (mkstemp creates 0600); returns its fd and name.
absl::StatusOr<int> MakeTemporary(const std::string& path, std::string* name) {
  const std::string pattern = DirName(path) + "/." + BaseName(path) + ".tmp.XXXXXX";
  *name = pattern;
  int fd = mkstemp(name->data());
  if (fd < 0) return ErrnoStatus(errno, "cannot create temporary file " + pattern, path);
  mode_t mask = umask(0);
  umask(mask);
  fchmod(fd, 0666 & ~mask);
  return fd;
}

void FsyncDirectory(const std::string& path) {
  int dfd = open(DirName(path).c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
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

uint64_t AtomicFileBytesWritten() { return g_bytes_written.load(std::memory_order_relaxed); }

absl::StatusOr<std::unique_ptr<AtomicFile>> AtomicFile::Create(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty output path");
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: is a directory", path));
  }
  std::string buf;
  TQM_ASSIGN_OR_RETURN(int fd, MakeTemporary(path, &buf));
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
  g_bytes_written.fetch_add(bytes.size(), std::memory_order_relaxed);
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
  FsyncDirectory(path_);
  return absl::OkStatus();
}

OutputGroup::~OutputGroup() {
  if (committed_) return;
  for (const Output& o : outputs_) {
    unlink(o.temp.c_str());
    Unregister(o.temp);
    if (!o.backup.empty()) {
      unlink(o.backup.c_str());
      Unregister(o.backup);
    }
  }
}

absl::StatusOr<std::string> OutputGroup::Add(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("empty output path");
  if (committed_) return absl::FailedPreconditionError("OutputGroup::Add after Commit");
  struct stat st;
  const bool exists = stat(path.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: is a directory", path));
  }
  const std::string key = DestinationKey(path);
  for (const Output& o : outputs_) {
    struct stat other;
    if (DestinationKey(o.path) == key ||
        (exists && stat(o.path.c_str(), &other) == 0 && SameFile(st, other))) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s and %s are the same output file", o.path, path));
    }
  }
  std::string temp;
  TQM_ASSIGN_OR_RETURN(int fd, MakeTemporary(path, &temp));
  close(fd);
  Register(temp);
  outputs_.push_back({path, temp, ""});
  return temp;
}

absl::Status OutputGroup::Commit() {
  if (committed_) return absl::FailedPreconditionError("OutputGroup committed twice");
  for (const Output& o : outputs_) {
    int fd = open(o.temp.c_str(), O_RDONLY);
    if (fd < 0) return ErrnoStatus(errno, "cannot open temporary file", o.temp);
    const bool synced = fsync(fd) == 0;
    const int err = errno;
    close(fd);
    if (!synced) return ErrnoStatus(err, "fsync failed", o.temp);
  }
  // Keep each file about to be replaced under a second name, so that a
  // failed rename further on can put it back. Where the file system has no
  // hard links the group still commits, without that rollback.
  for (Output& o : outputs_) {
    struct stat st;
    if (lstat(o.path.c_str(), &st) != 0) continue;
    const std::string backup = o.temp + ".old";
    if (link(o.path.c_str(), backup.c_str()) == 0) {
      o.backup = backup;
      Register(backup);
    } else if (errno == EEXIST) {
      return ErrnoStatus(EEXIST, "cannot keep the previous file as", backup);
    }
  }
  for (size_t i = 0; i < outputs_.size(); ++i) {
    if (rename(outputs_[i].temp.c_str(), outputs_[i].path.c_str()) == 0) continue;
    absl::Status failed =
        ErrnoStatus(errno, "cannot rename temporary file onto", outputs_[i].path);
    for (size_t j = 0; j < i; ++j) {
      Output& o = outputs_[j];
      if (o.backup.empty()) {
        unlink(o.path.c_str());
      } else if (rename(o.backup.c_str(), o.path.c_str()) == 0) {
        Unregister(o.backup);
        o.backup.clear();
      } else {
        // Leave the previous file where it is rather than delete it.
        Unregister(o.backup);
        failed = absl::Status(failed.code(),
                              absl::StrFormat("%s; the previous %s is kept as %s",
                                              failed.message(), o.path, o.backup));
        o.backup.clear();
      }
    }
    return failed;
  }
  committed_ = true;
  for (const Output& o : outputs_) {
    Unregister(o.temp);
    if (!o.backup.empty()) {
      unlink(o.backup.c_str());
      Unregister(o.backup);
    }
    FsyncDirectory(o.path);
  }
  return absl::OkStatus();
}

absl::Status CheckNotAnInput(const std::string& output, const std::vector<std::string>& inputs) {
  struct stat out;
  if (output.empty() || stat(output.c_str(), &out) != 0) return absl::OkStatus();
  auto refuse = [&](const std::string& input) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "refusing to write %s: it is the same file as the input %s", output, input));
  };
  for (const std::string& input : inputs) {
    struct stat in;
    if (input.empty() || stat(input.c_str(), &in) != 0) continue;
    if (SameFile(in, out)) return refuse(input);
    if (!S_ISDIR(in.st_mode)) continue;
    DIR* dir = opendir(input.c_str());
    if (dir == nullptr) continue;
    std::string hit;
    while (const struct dirent* e = readdir(dir)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string file = input + "/" + name;
      struct stat f;
      if (stat(file.c_str(), &f) == 0 && S_ISREG(f.st_mode) && SameFile(f, out)) {
        hit = file;
        break;
      }
    }
    closedir(dir);
    if (!hit.empty()) return refuse(hit);
  }
  return absl::OkStatus();
}

}  // namespace tqm
