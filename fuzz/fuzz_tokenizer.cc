// Fuzz target: a llama2.c tokenizer blob (tokenizer.bin / the
// tokenizer.llama2c metadata value) from untrusted bytes.
//   input: u24 vocabulary size (little-endian) | the blob
// The library's parser (VocabFromLlama2cTokenizer, used by the GGUF export)
// must reject it with DataLoss or return exactly that many tokens, which
// Llama2cTokenizerFromVocab must turn back into a blob that parses to the
// same vocabulary. When the example runtime is built, its loader
// (rt::Tokenizer::FromBytes) parses the same blob and, when it accepts it,
// encodes and decodes a short text.

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/string_view.h"
#include "fuzz_check.h"
#include "tqm/gguf.h"
#ifdef TQM_FUZZ_RUNTIME_TOKENIZER
#include "runtime/tokenizer.h"
#endif

namespace {

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(a)) == 0; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const uint32_t vocab_size = data[0] | (data[1] << 8) | (uint32_t{data[2]} << 16);
  const std::string blob(reinterpret_cast<const char*>(data) + 3, size - 3);

  auto vocab = tqm::VocabFromLlama2cTokenizer(blob, vocab_size);
  if (!vocab.ok()) {
    FUZZ_CHECK(vocab.status().code() == absl::StatusCode::kDataLoss);
    FUZZ_CHECK(!vocab.status().message().empty());
  } else {
    FUZZ_CHECK(vocab->tokens.size() == vocab_size);
    FUZZ_CHECK(vocab->scores.size() == vocab_size && vocab->types.size() == vocab_size);
    auto again = tqm::Llama2cTokenizerFromVocab(*vocab);
    FUZZ_CHECK_OK(again.status());
    auto back = tqm::VocabFromLlama2cTokenizer(*again, vocab_size);
    FUZZ_CHECK_OK(back.status());
    FUZZ_CHECK(back->tokens == vocab->tokens);
    FUZZ_CHECK(back->types == vocab->types);
    for (size_t i = 0; i < vocab_size; ++i) {
      FUZZ_CHECK(SameBits(back->scores[i], vocab->scores[i]));
    }
  }

#ifdef TQM_FUZZ_RUNTIME_TOKENIZER
  auto t = tqm::rt::Tokenizer::FromBytes(absl::string_view(blob),
                                         static_cast<int>(vocab_size), "fuzz.tok");
  if (!t.ok()) {
    const absl::StatusCode c = t.status().code();
    FUZZ_CHECK(c == absl::StatusCode::kDataLoss ||
               (vocab_size < 3 && c == absl::StatusCode::kInvalidArgument));
    FUZZ_CHECK(t.status().message().find("fuzz.tok") != std::string::npos);
  } else {
    // Both parsers read the same layout: they agree on what is well formed.
    FUZZ_CHECK(vocab.ok());
    FUZZ_CHECK(t->vocab_size() == static_cast<int>(vocab_size));
    int prev = tqm::rt::kBos;
    for (int id : t->Encode("Once upon a time, \xC3\xA9t\xC3\xA9 <0x41>!", true, true)) {
      FUZZ_CHECK(id >= 0 && id < t->vocab_size());
      (void)t->Printable(prev, id);
      prev = id;
    }
  }
#endif
  return 0;
}
