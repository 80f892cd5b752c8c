// Fuzz target: the JSON files a model import reads besides the weights: a
// sharded model's index (model.safetensors.index.json) and a Hugging Face
// config.json. The bytes go through the strict JSON parser (json.h), then
// through the index parser (ParseShardIndex), then through the config
// reader (HfConfigToMetadata). Rejections must be errors with messages,
// never crashes.

#include <cstdint>
#include <string>
#include <string_view>

#include "base/json.h"
#include "fuzz_check.h"
#include "interop/import_internal.h"

namespace {

void CheckError(const absl::Status& s, absl::StatusCode want) {
  FUZZ_CHECK(!s.ok());
  if (s.code() != want && s.code() != absl::StatusCode::kResourceExhausted) {
    fprintf(stderr, "unexpected status: %s\n", s.ToString().c_str());
    abort();
  }
  FUZZ_CHECK(!s.message().empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // The parser alone, with its default limits and with a shallow depth.
  absl::StatusOr<tqm::json::Value> v = tqm::json::Parse(text);
  if (!v.ok()) CheckError(v.status(), absl::StatusCode::kInvalidArgument);
  tqm::json::ParseOptions shallow;
  shallow.max_depth = 2;
  absl::StatusOr<tqm::json::Value> s = tqm::json::Parse(text, shallow);
  if (!s.ok()) CheckError(s.status(), absl::StatusCode::kInvalidArgument);
  // Valid strings quote into valid JSON that parses back to themselves.
  if (v.ok() && v->is_string()) {
    auto back = tqm::json::Parse(tqm::json::Quote(v->as_string()));
    FUZZ_CHECK_OK(back.status());
    FUZZ_CHECK(back->is_string() && back->as_string() == v->as_string());
  }

  // The shard index.
  const std::string index_name = "fuzz.index.json";
  auto index = tqm::internal::ParseShardIndex(absl::string_view(text.data(), text.size()),
                                              index_name);
  if (!index.ok()) {
    CheckError(index.status(), absl::StatusCode::kDataLoss);
    FUZZ_CHECK(index.status().message().find(index_name) != std::string::npos);
  } else {
    FUZZ_CHECK(v.ok() && v->is_object());
    FUZZ_CHECK(!index->shards.empty());
    for (const auto& [file, names] : index->shards) {
      FUZZ_CHECK(!file.empty() && file != "." && file != "..");
      FUZZ_CHECK(file.find('/') == std::string::npos);
      FUZZ_CHECK(file.find('\0') == std::string::npos);
      FUZZ_CHECK(!names.empty());
    }
  }

  // config.json: DataLoss naming the file, or llama.* / general.* metadata
  // of the documented types.
  const std::string config_name = "fuzz.config.json";
  auto config = tqm::internal::HfConfigToMetadata(
      absl::string_view(text.data(), text.size()), config_name);
  if (!config.ok()) {
    CheckError(config.status(), absl::StatusCode::kDataLoss);
    FUZZ_CHECK(config.status().message().find(config_name) != std::string::npos);
  } else {
    FUZZ_CHECK(v.ok() && v->is_object());
    for (const tqm::MetaEntry& e : *config) {
      FUZZ_CHECK(e.key.rfind("llama.", 0) == 0 || e.key.rfind("general.", 0) == 0);
      if (e.value.type == tqm::format::kMetaInt64) FUZZ_CHECK(e.value.int64 >= 0);
    }
  }
  return 0;
}
