// llama2.c tokenizer (tokenizer.h), a bounds-checked port of run.c's
// build_tokenizer / encode / decode.

#include "runtime/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"

namespace tqm {
namespace rt {

absl::StatusOr<Tokenizer> Tokenizer::FromBytes(absl::string_view bytes, int vocab_size,
                                               std::string name) {
  // Encode emits the ids of <s> and </s> (1, 2) and byte fallbacks from 3 on:
  // a smaller vocabulary would index past its end.
  if (vocab_size < 3 || vocab_size > (1 << 24)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: vocabulary size %d out of range (3..%d)", name, vocab_size, 1 << 24));
  }
  size_t pos = 0;
  auto read4 = [&](const char* field, int token, void* out) -> absl::Status {
    if (bytes.size() - pos < 4) {
      return absl::DataLossError(absl::StrFormat(
          "%s: file ends in the %s of token %d at offset %d", name, field, token, pos));
    }
    std::memcpy(out, bytes.data() + pos, 4);  // little-endian host
    pos += 4;
    return absl::OkStatus();
  };
  int32_t max_len = 0;
  if (auto s = read4("header", -1, &max_len); !s.ok()) return s;
  Tokenizer t;
  // Every token takes at least 8 bytes: reserving for a vocabulary size the
  // bytes cannot hold would allocate up to 16M strings for a tiny file.
  const size_t fits = (bytes.size() - pos) / 8;
  t.vocab_.reserve(std::min<size_t>(vocab_size, fits));
  t.scores_.reserve(std::min<size_t>(vocab_size, fits));
  for (int i = 0; i < vocab_size; ++i) {
    float score = 0;
    int32_t len = 0;
    if (auto s = read4("score", i, &score); !s.ok()) return s;
    if (auto s = read4("length", i, &len); !s.ok()) return s;
    if (len < 0 || static_cast<size_t>(len) > bytes.size() - pos) {
      return absl::DataLossError(
          absl::StrFormat("%s: token %d has length %d at offset %d, %d bytes left", name,
                          i, len, pos - 4, bytes.size() - pos));
    }
    t.vocab_.emplace_back(bytes.substr(pos, len));
    t.scores_.push_back(score);
    pos += len;
  }
  for (int i = 0; i < vocab_size; ++i) t.ids_.try_emplace(t.vocab_[i], i);
  return t;
}

absl::StatusOr<Tokenizer> Tokenizer::FromFile(const std::string& path, int vocab_size) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrFormat("%s: cannot open tokenizer", path));
  std::stringstream ss;
  ss << f.rdbuf();
  return FromBytes(ss.str(), vocab_size, path);
}

int Tokenizer::Lookup(absl::string_view s) const {
  auto it = ids_.find(s);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<int> Tokenizer::Encode(absl::string_view text, bool bos, bool eos) const {
  std::vector<int> tokens;
  if (bos) tokens.push_back(kBos);
  // run.c adds a dummy prefix space for non-empty text (sentencepiece's
  // add_dummy_prefix).
  if (!text.empty()) {
    int dummy = Lookup(" ");
    if (dummy >= 0) tokens.push_back(dummy);
  }
  std::string buf;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    // A continuation byte (10xxxxxx) continues the current code point.
    if ((c & 0xC0) != 0x80) buf.clear();
    buf.push_back(static_cast<char>(c));
    const bool next_continues =
        i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
    if (next_continues && buf.size() < 4) continue;
    int id = Lookup(buf);
    if (id >= 0) {
      tokens.push_back(id);
    } else {
      // Byte fallback: the first three ids are <unk>, <s>, </s>.
      for (unsigned char b : buf) {
        if (b + 3 < vocab_.size()) tokens.push_back(b + 3);
      }
    }
    buf.clear();
  }
  // Merge the best-scoring adjacent pair until none merges.
  std::string merged;
  for (;;) {
    float best_score = -1e10f;
    int best_id = -1;
    size_t best_idx = 0;
    for (size_t i = 0; i + 1 < tokens.size(); ++i) {
      merged = vocab_[tokens[i]];
      merged += vocab_[tokens[i + 1]];
      int id = Lookup(merged);
      if (id >= 0 && scores_[id] > best_score) {
        best_score = scores_[id];
        best_id = id;
        best_idx = i;
      }
    }
    if (best_id < 0) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + best_idx + 1);
  }
  if (eos) tokens.push_back(kEos);
  return tokens;
}

std::string Tokenizer::Decode(int prev, int token) const {
  if (token < 0 || token >= vocab_size()) return "";
  absl::string_view piece = vocab_[token];
  if (prev == kBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
  // "<0xNN>" stands for the raw byte NN.
  if (piece.size() == 6 && piece.substr(0, 3) == "<0x" && piece[5] == '>' &&
      std::isxdigit(static_cast<unsigned char>(piece[3])) &&
      std::isxdigit(static_cast<unsigned char>(piece[4]))) {
    const int v = std::stoi(std::string(piece.substr(3, 2)), nullptr, 16);
    return std::string(1, static_cast<char>(v));
  }
  return std::string(piece);
}

std::string Tokenizer::Printable(int prev, int token) const {
  std::string s = Decode(prev, token);
  if (s.size() == 1) {
    const unsigned char c = static_cast<unsigned char>(s[0]);
    if (!(std::isprint(c) || std::isspace(c))) return "";
  }
  return s;
}

}  // namespace rt
}  // namespace tqm
