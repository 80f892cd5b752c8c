// Fuzz target: a GGUF file from untrusted bytes, read through a memory-backed
// InputFile. The header reader (ReadGgufInfo) must accept or reject it as
// OpenGguf does; an opened source must read back every tensor (F32, F16,
// BF16, Q8_0 conversion paths), and the tokenizer.llama2c blob built from a
// llama vocabulary must parse back into as many tokens as the file holds.

#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "import_check.h"
#include "interop/import_internal.h"
#include "tqm/gguf.h"
#include "tqm/metadata.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name = "fuzz.gguf";
  const absl::Span<const uint8_t> bytes(data, size);
  auto info =
      tqm::internal::ReadGgufInfo(*tqm::internal::InputFile::FromBuffer(bytes, name));
  auto src =
      tqm::internal::OpenGgufInput(tqm::internal::InputFile::FromBuffer(bytes, name));
  // The importer validates no less than the header reader.
  if (!info.ok()) {
    tqm_fuzz::CheckRejection(info.status(), name);
    FUZZ_CHECK(!src.ok());
  }
  tqm_fuzz::CheckOpened(src, name, size);
  if (!src.ok()) return 0;
  FUZZ_CHECK(info.ok());
  FUZZ_CHECK((*src)->tensors().size() == info->tensors.size());
  for (const tqm::MetaEntry& e : (*src)->metadata()) {
    if (e.key != tqm::meta_keys::kTokenizerLlama2c) continue;
    const tqm::GgufKeyValue* tokens = info->Find("tokenizer.ggml.tokens");
    FUZZ_CHECK(tokens != nullptr);
    auto vocab = tqm::VocabFromLlama2cTokenizer(e.value.bytes, tokens->array_size);
    FUZZ_CHECK_OK(vocab.status());
    FUZZ_CHECK(vocab->tokens.size() == tokens->array_size);
  }
  return 0;
}
