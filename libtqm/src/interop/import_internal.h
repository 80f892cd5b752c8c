// Internals shared by the importers (llama2c.cc, safetensors.cc, import.cc,
// gguf.cc) and the exporters (export.cc, gguf.cc): a read-only input file
// read with bounds-checked pread, overflow-checked arithmetic, little-endian
// loads and half-precision conversions both ways.

#ifndef TQM_SRC_IMPORT_INTERNAL_H_
#define TQM_SRC_IMPORT_INTERNAL_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/endian.h"
#include "tqm/gguf.h"
#include "tqm/metadata.h"
#include "tqm/source.h"

namespace tqm {
namespace internal {

// A regular file opened read-only, or bytes in memory read the same way (so
// that every importer can be fuzzed without touching the file system).
// ReadAt is safe to call from several threads at once (pread / memcpy).
class InputFile {
 public:
  // Fails with the errno mapping (NotFound, PermissionDenied, ...), or
  // InvalidArgument when `path` is not a regular file.
  static absl::StatusOr<std::unique_ptr<InputFile>> Open(const std::string& path);
  // `bytes` as a file named `name` (used in messages). Nothing is copied: the
  // caller keeps the bytes alive and unchanged for the InputFile's lifetime.
  static std::unique_ptr<InputFile> FromBuffer(absl::Span<const uint8_t> bytes,
                                               std::string name);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  // Size at open time; reads are bounded by it.
  uint64_t size() const { return size_; }

  // Reads exactly `n` bytes at `offset` into `dst`. DataLoss when the range
  // lies outside the file or the file shrank since it was opened.
  absl::Status ReadAt(uint64_t offset, void* dst, size_t n) const;

 private:
  InputFile(std::string path, int fd, uint64_t size, const uint8_t* memory = nullptr)
      : path_(std::move(path)), fd_(fd), size_(size), memory_(memory) {}
  std::string path_;
  int fd_;  // -1 for a memory-backed input
  uint64_t size_;
  const uint8_t* memory_;  // the caller's bytes when fd_ is -1
};

// The last component of `path`.
std::string Basename(const std::string& path);

// ---- Hugging Face model directories (import.cc) ----

// Reads a whole small file (an index, config.json), ResourceExhausted over
// 64 MiB.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path);

// Parses the text of a Hugging Face config.json into typed llama.* metadata
// (the keys the llama2.c and GGUF importers write; the key table of
// interop/llama.h and docs/LLAMA.md): hidden_size ->
// llama.dim, intermediate_size -> llama.hidden_dim, num_hidden_layers ->
// llama.n_layers, num_attention_heads -> llama.n_heads,
// num_key_value_heads (default: num_attention_heads) -> llama.n_kv_heads,
// vocab_size -> llama.vocab_size, max_position_embeddings -> llama.seq_len,
// rms_norm_eps -> llama.norm_eps, rope_theta -> llama.rope_theta,
// tie_word_embeddings -> llama.tied_classifier; model_type "llama" ->
// general.architecture. Absent and null keys are left out. `path` names the
// file in messages. DataLoss for text that is not a JSON object or a value
// of the wrong type or range (counts must be integers in 1..2^31-1, eps and
// theta finite and positive).
absl::StatusOr<std::vector<MetaEntry>> HfConfigToMetadata(absl::string_view json,
                                                          const std::string& path);

// Checks config.json metadata (from HfConfigToMetadata) against the
// quantities the tensor shapes give and merges it into `meta` (replacing
// keys already there). A disagreement is DataLoss naming the config key,
// its value and the value the shapes give.
absl::Status ApplyHfConfig(const std::string& config_path,
                           const std::vector<MetaEntry>& config,
                           const std::vector<SourceTensor>& tensors,
                           std::vector<MetaEntry>* meta);

// A sharded model's model.safetensors.index.json.
struct ShardIndex {
  // Shard file name (a plain name in the index's directory) -> the tensors
  // the weight map puts there. Never empty.
  std::map<std::string, std::set<std::string>> shards;
  // The "metadata" object's scalar members as text, in file order.
  std::vector<std::pair<std::string, std::string>> metadata;
};

// Parses the text of a safetensors index. `path` names the file in
// messages. DataLoss for anything but {"weight_map": {tensor: file, ...}}
// with an optional "metadata" object; shard names must be plain file names.
absl::StatusOr<ShardIndex> ParseShardIndex(absl::string_view json,
                                           const std::string& path);

// ---- tokenizers ----

// Parses a llama2.c tokenizer (int32 max_token_length, then per token:
// float32 score, int32 length, the bytes) to its end and returns the number
// of tokens. Every length is checked against the bytes left and against
// max_token_length (llama2.c sizes its buffers by it). `name` names the
// tokenizer in messages. DataLoss for bytes that are not such a file.
absl::StatusOr<uint64_t> CountLlama2cTokens(absl::string_view bytes,
                                            const std::string& name);

// The importers over an already open input (a file or bytes in memory): what
// OpenSafetensors, OpenLlama2c, OpenGguf and ReadGgufInfo do after opening
// their path. Messages and source.file name file->path().
absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsInput(
    std::unique_ptr<InputFile> file);
absl::StatusOr<std::unique_ptr<TensorSource>> OpenLlama2cInput(
    std::unique_ptr<InputFile> file);
absl::StatusOr<std::unique_ptr<TensorSource>> OpenGgufInput(
    std::unique_ptr<InputFile> file);
absl::StatusOr<GgufInfo> ReadGgufInfo(const InputFile& file);

// *out = a * b; false on overflow.
inline bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
// *out = a + b; false on overflow.
inline bool CheckedAdd(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}

inline float BitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// IEEE 754 binary16 -> binary32, exact: zeros, subnormals, infinities and
// NaN payloads (quiet bit kept) all map to the same value in float32.
inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  if (exp == 0x1F) return BitsToFloat(sign | 0x7F800000u | (mant << 13));
  if (exp != 0) return BitsToFloat(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return BitsToFloat(sign);
  // Subnormal: mant * 2^-24. Normalize so the leading 1 reaches bit 10.
  int e = 113;  // biased float32 exponent of 2^-14
  while ((mant & 0x400) == 0) {
    mant <<= 1;
    --e;
  }
  return BitsToFloat(sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3FF) << 13));
}

// bfloat16 -> binary32: bfloat16 is the upper half of a float32.
inline float BFloat16ToFloat(uint16_t b) {
  return BitsToFloat(static_cast<uint32_t>(b) << 16);
}

// IEEE binary32 -> binary16 / bfloat16, round to nearest even; overflow
// gives infinity, NaN stays NaN (quiet). The exporters' (export.cc).
uint16_t FloatToHalf(float f);
uint16_t FloatToBFloat16(float f);

// Appends the Q8_0 blocks of x[0..n) (n a multiple of 32) to `out`, exactly
// as ggml's quantize_row_q8_0_ref: d = max|x| / 127 stored as float16,
// q = roundf(x / d) with the unrounded d (gguf.cc).
void QuantizeQ8_0(const float* x, size_t n, std::string* out);

// Converts little-endian float32 values already in place (a no-op on
// little-endian hosts).
inline void FixFloat32Endianness(float* values, size_t n) {
#ifdef ABSL_IS_BIG_ENDIAN
  for (size_t i = 0; i < n; ++i) {
    uint8_t b[4];
    std::memcpy(b, &values[i], 4);
    values[i] = BitsToFloat(LoadLE32(b));
  }
#else
  (void)values;
  (void)n;
#endif
}

}  // namespace internal
}  // namespace tqm

#endif  // TQM_SRC_IMPORT_INTERNAL_H_
