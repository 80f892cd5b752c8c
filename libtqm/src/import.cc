// OpenModel (format sniffing) and the input-file helper shared by importers.

#include "tqm/import.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_format.h"
#include "atomic_file.h"
#include "import_internal.h"
#include "tqm/format.h"

namespace tqm {
namespace internal {

absl::StatusOr<std::unique_ptr<InputFile>> InputFile::Open(const std::string& path) {
  int fd;
  do {
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ErrnoStatus(errno, "cannot open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return ErrnoStatus(err, "cannot stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a regular file", path));
  }
  return std::unique_ptr<InputFile>(
      new InputFile(path, fd, static_cast<uint64_t>(st.st_size)));
}

InputFile::~InputFile() {
  if (fd_ >= 0) close(fd_);
}

absl::Status InputFile::ReadAt(uint64_t offset, void* dst, size_t n) const {
  if (offset > size_ || n > size_ - offset) {
    return absl::DataLossError(absl::StrFormat(
        "%s: read of %d bytes at offset %d past the end of the file (%d bytes)", path_, n,
        offset, size_));
  }
  uint8_t* p = static_cast<uint8_t*>(dst);
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd_, p + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(
          errno, absl::StrFormat("read failed at offset %d", offset + done), path_);
    }
    if (r == 0) {
      return absl::DataLossError(absl::StrFormat(
          "%s: unexpected end of file at offset %d (the file shrank while open)", path_,
          offset + done));
    }
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

std::string Basename(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<TensorSource>> OpenModel(const std::string& path) {
  absl::StatusOr<std::unique_ptr<internal::InputFile>> file =
      internal::InputFile::Open(path);
  if (!file.ok()) return file.status();
  const uint64_t size = (*file)->size();
  uint8_t head[9] = {0};
  const size_t n = size < sizeof(head) ? static_cast<size_t>(size) : sizeof(head);
  absl::Status s = (*file)->ReadAt(0, head, n);
  if (!s.ok()) return s;
  // safetensors: u64 header length that fits in the file, then a JSON object.
  if (n == 9) {
    const uint64_t header_len = internal::LoadLE64(head);
    if (header_len >= 2 && header_len <= size - 8 && head[8] == '{') {
      return OpenSafetensors(path);
    }
  }
  if (n >= 4 && std::memcmp(head, "GGUF", 4) == 0) {
    return absl::UnimplementedError(
        absl::StrFormat("%s: GGUF files are not supported by this importer", path));
  }
  if (n >= sizeof(format::kMagic) &&
      std::memcmp(head, format::kMagic, sizeof(format::kMagic)) == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: already a .tqm file, not a model to import", path));
  }
  return OpenLlama2c(path);
}

}  // namespace tqm
