// A bounds-checked little-endian cursor over untrusted bytes, and the
// matching little-endian appenders used by writers.
//
// Every read checks the remaining length first (without overflow) and fails
// with DataLossError naming `what` and the absolute file offset.

#ifndef TQM_SRC_CURSOR_H_
#define TQM_SRC_CURSOR_H_

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/endian.h"

namespace tqm {

class Cursor {
 public:
  // `base` is the absolute file offset of data[0], used in messages;
  // `context` prefixes them (e.g. "model.tqm: tensor index").
  Cursor(absl::Span<const uint8_t> data, uint64_t base, std::string context)
      : data_(data), base_(base), context_(std::move(context)) {}

  size_t remaining() const { return data_.size() - pos_; }
  uint64_t offset() const { return base_ + pos_; }
  const std::string& context() const { return context_; }

  absl::Status Error(const std::string& what) const {
    return absl::DataLossError(
        absl::StrFormat("%s: %s at offset %d", context_, what, offset()));
  }

  absl::Status Need(size_t n, const char* what) const {
    if (n > remaining()) {
      return Error(absl::StrFormat("%s needs %d bytes but %d remain", what, n, remaining()));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Read(T* v, const char* what) {
    static_assert(std::is_trivially_copyable<T>::value, "");
    absl::Status s = Need(sizeof(T), what);
    if (!s.ok()) return s;
    *v = LoadLE<T>(data_.data() + pos_);
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status Bytes(size_t n, absl::Span<const uint8_t>* out, const char* what) {
    absl::Status s = Need(n, what);
    if (!s.ok()) return s;
    *out = data_.subspan(pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }

  // Reads a u32 that the format requires to be zero.
  absl::Status Reserved32(const char* what) {
    uint32_t v;
    absl::Status s = Read(&v, what);
    if (!s.ok()) return s;
    if (v != 0) return Error(absl::StrFormat("reserved field %s is %d, must be 0", what, v));
    return absl::OkStatus();
  }

 private:
  absl::Span<const uint8_t> data_;
  size_t pos_ = 0;
  uint64_t base_;
  std::string context_;
};

inline void PadTo(std::string* out, size_t alignment) {
  size_t r = out->size() % alignment;
  if (r) out->append(alignment - r, '\0');
}

}  // namespace tqm

#endif  // TQM_SRC_CURSOR_H_
