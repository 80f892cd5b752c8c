// zstd chunk codec (entropy.h, kCodecZstd): one zstd frame per chunk, with
// its content size, decoded only when that size is exactly the expected one.

#include <zstd.h>

#include <cstring>

#include <memory>

#include "absl/strings/str_format.h"
#include "codec/entropy.h"

namespace tqm {
namespace {

// One decompression context per thread: ZSTD_decompress would allocate and
// initialize a fresh one (~100 KiB) for every chunk.
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

ZSTD_DCtx* ThreadDCtx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> ctx(ZSTD_createDCtx());
  return ctx.get();
}

}  // namespace

absl::Status EncodeZstd(absl::Span<const uint8_t> in, int level, std::string* out) {
  if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "zstd: level %d outside [%d, %d]", level, ZSTD_minCLevel(), ZSTD_maxCLevel()));
  }
  const size_t bound = ZSTD_compressBound(in.size());
  if (ZSTD_isError(bound)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("zstd: input of %d bytes is too large", in.size()));
  }
  const size_t start = out->size();
  out->resize(start + bound);
  // ZSTD_compress writes the content size into the frame header.
  const size_t n = ZSTD_compress(&(*out)[start], bound, in.data(), in.size(), level);
  if (ZSTD_isError(n)) {
    out->resize(start);
    return absl::InternalError(absl::StrFormat("zstd: %s", ZSTD_getErrorName(n)));
  }
  out->resize(start + n);
  return absl::OkStatus();
}

absl::Status DecodeZstd(absl::Span<const uint8_t> in, absl::Span<uint8_t> out) {
  // The declared size is checked before decoding, so a frame that claims
  // another size is rejected without work; the frame must also be the whole
  // input (ZSTD_findFrameCompressedSize), which rules out trailing bytes and
  // concatenated frames that ZSTD_decompress would otherwise accept.
  // Only RFC 8878 frames (spec R67): libzstd would also decode legacy 0.x
  // frames and skippable frames, older code that untrusted files must not reach.
  static constexpr uint8_t kFrameMagic[4] = {0x28, 0xB5, 0x2F, 0xFD};
  if (in.size() < 4 || std::memcmp(in.data(), kFrameMagic, 4) != 0) {
    return absl::DataLossError("zstd: payload does not start with the frame magic 28 B5 2F FD");
  }
  const unsigned long long declared = ZSTD_getFrameContentSize(in.data(), in.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR)
    return absl::DataLossError("zstd: not a zstd frame");
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) {
    return absl::DataLossError("zstd: frame does not declare its content size");
  }
  if (declared != out.size()) {
    return absl::DataLossError(absl::StrFormat(
        "zstd: frame declares %d bytes, expected %d", declared, out.size()));
  }
  const size_t frame = ZSTD_findFrameCompressedSize(in.data(), in.size());
  if (ZSTD_isError(frame) || frame != in.size()) {
    return absl::DataLossError(absl::StrFormat(
        "zstd: input is not exactly one frame (%s)",
        ZSTD_isError(frame) ? ZSTD_getErrorName(frame) : "trailing bytes"));
  }
  ZSTD_DCtx* ctx = ThreadDCtx();
  if (ctx == nullptr)
    return absl::ResourceExhaustedError("zstd: cannot allocate a context");
  const size_t n = ZSTD_decompressDCtx(ctx, out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(n)) {
    return absl::DataLossError(absl::StrFormat("zstd: %s", ZSTD_getErrorName(n)));
  }
  if (n != out.size()) {
    return absl::DataLossError(
        absl::StrFormat("zstd: frame decoded to %d bytes, expected %d", n, out.size()));
  }
  return absl::OkStatus();
}

}  // namespace tqm
