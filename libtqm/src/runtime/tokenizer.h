// The llama2.c tokenizer (tokenizer.bin / tok512.bin): a vocabulary of byte
// strings with merge scores. Encoding is run.c's: optional BOS, a dummy
// space prefix, UTF-8 code points looked up (bytes + 3 as fallback), then
// greedy merges of the adjacent pair whose merged token scores highest.
//
// File layout (little-endian): int32 max_token_length, then per token:
// float32 score, int32 length, `length` bytes.

#ifndef TQM_EXAMPLES_RUNTIME_TOKENIZER_H_
#define TQM_EXAMPLES_RUNTIME_TOKENIZER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tqm {
namespace rt {

inline constexpr int kBos = 1;
inline constexpr int kEos = 2;

class Tokenizer {
 public:
  // Parses `bytes` holding `vocab_size` tokens (the model's vocabulary
  // size; the file does not record it). `name` appears in errors, which are
  // DataLossError naming the token and the byte offset.
  static absl::StatusOr<Tokenizer> FromBytes(absl::string_view bytes, int vocab_size,
                                             std::string name = "<tokenizer>");
  static absl::StatusOr<Tokenizer> FromFile(const std::string& path, int vocab_size);

  int vocab_size() const { return static_cast<int>(vocab_.size()); }

  std::vector<int> Encode(absl::string_view text, bool bos, bool eos) const;

  // The text of `token` following `prev` (run.c's decode): the leading space
  // is dropped right after BOS and "<0xNN>" pieces become the raw byte.
  std::string Decode(int prev, int token) const;

  // Decode() filtered like run.c's safe_printf: a lone control byte that is
  // neither printable nor whitespace becomes "".
  std::string Printable(int prev, int token) const;

  const std::string& piece(int token) const { return vocab_[token]; }
  float score(int token) const { return scores_[token]; }

 private:
  int Lookup(absl::string_view s) const;

  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  absl::flat_hash_map<std::string, int> ids_;
};

}  // namespace rt
}  // namespace tqm

#endif  // TQM_EXAMPLES_RUNTIME_TOKENIZER_H_
