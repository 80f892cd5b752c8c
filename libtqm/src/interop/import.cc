// OpenModel (formats recognised by content, cross-checked with the
// extension; Hugging Face model directories), sharded safetensors models
// opened through their index (OpenSafetensorsIndex) with config.json,
// CheckModel, and the input-file helper shared by the importers.

#include "tqm/import.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/atomic_file.h"
#include "base/json.h"
#include "interop/import_internal.h"
#include "interop/llama.h"
#include "interop/safetensors_internal.h"
#include "tqm/format.h"
#include "tqm/metadata.h"
#include "tqm/status.h"

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

std::unique_ptr<InputFile> InputFile::FromBuffer(absl::Span<const uint8_t> bytes,
                                                 std::string name) {
  return std::unique_ptr<InputFile>(
      new InputFile(std::move(name), -1, bytes.size(), bytes.data()));
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
  if (fd_ < 0) {
    if (n > 0) std::memcpy(dst, memory_ + offset, n);
    return absl::OkStatus();
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

// ---- sharded safetensors ----

namespace {

constexpr uint64_t kMaxIndexSize = 64ull << 20;

absl::Status IndexError(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrFormat("%s: safetensors index: %s", path, what));
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// A JSON scalar as the text safetensors "__metadata__" would hold.
bool ScalarText(const json::Value& v, std::string* out) {
  if (v.is_string()) {
    *out = v.as_string();
  } else if (v.is_int()) {
    *out = absl::StrCat(v.as_int());
  } else if (v.is_double()) {
    *out = absl::StrCat(v.as_double());
  } else if (v.is_bool()) {
    *out = v.as_bool() ? "true" : "false";
  } else {
    return false;
  }
  return true;
}

json::ParseOptions SmallJsonOptions() {
  json::ParseOptions options;
  options.max_size = kMaxIndexSize;
  options.max_depth = 16;
  return options;
}

// The Hugging Face config.json key of a tqm llama.* key (docs/LLAMA.md).
const char* HfKeyOf(const std::string& tqm_key) {
  for (const llama::HparamKeys& k : llama::HparamTable()) {
    if (tqm_key == k.tqm) return k.hf;
  }
  if (tqm_key == meta_keys::kTiedClassifier) return "tie_word_embeddings";
  return tqm_key.c_str();
}

class ShardedSource : public TensorSource {
 public:
  struct Ref {
    size_t shard;
    size_t index;
  };
  ShardedSource(std::vector<std::unique_ptr<TensorSource>> shards, std::vector<Ref> refs,
                std::vector<SourceTensor> tensors, std::vector<MetaEntry> meta)
      : shards_(std::move(shards)),
        refs_(std::move(refs)),
        tensors_(std::move(tensors)),
        meta_(std::move(meta)) {}

  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<MetaEntry>& metadata() const override { return meta_; }
  absl::Status Read(size_t i, std::vector<float>* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    return shards_[refs_[i].shard]->Read(refs_[i].index, out);
  }
  absl::Status ReadRaw(size_t i, std::string* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    return shards_[refs_[i].shard]->ReadRaw(refs_[i].index, out);
  }
  absl::Status ReadQuantized(size_t i, QuantizedTensor* out) override {
    TQM_RETURN_IF_ERROR(CheckIndex(i));
    return shards_[refs_[i].shard]->ReadQuantized(refs_[i].index, out);
  }

 private:
  absl::Status CheckIndex(size_t i) const {
    if (i >= refs_.size()) {
      return absl::OutOfRangeError(
          absl::StrFormat("tensor index %d out of range (%d tensors)", i, refs_.size()));
    }
    return absl::OkStatus();
  }

  std::vector<std::unique_ptr<TensorSource>> shards_;
  std::vector<Ref> refs_;
  std::vector<SourceTensor> tensors_;
  std::vector<MetaEntry> meta_;
};

}  // namespace

namespace internal {

absl::StatusOr<std::string> ReadSmallFile(const std::string& path) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<internal::InputFile> f,
                       internal::InputFile::Open(path));
  if (f->size() > kMaxIndexSize) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s: %d bytes exceeds the limit of %d for a JSON file", path,
                        f->size(), kMaxIndexSize));
  }
  std::string text(static_cast<size_t>(f->size()), '\0');
  TQM_RETURN_IF_ERROR(f->ReadAt(0, text.data(), text.size()));
  return text;
}

absl::StatusOr<std::vector<MetaEntry>> HfConfigToMetadata(absl::string_view text,
                                                          const std::string& path) {
  absl::StatusOr<json::Value> config =
      json::Parse(std::string_view(text.data(), text.size()), SmallJsonOptions());
  if (!config.ok()) {
    return absl::DataLossError(absl::StrFormat("%s: not a Hugging Face config: %s", path,
                                               config.status().message()));
  }
  if (!config->is_object()) {
    return absl::DataLossError(
        absl::StrFormat("%s: not a Hugging Face config: not a JSON object", path));
  }
  std::vector<MetaEntry> out;
  if (const json::Value* t = config->Find("model_type");
      t != nullptr && t->is_string() && t->as_string() == "llama") {
    out.push_back({meta_keys::kArchitecture, MetaValue::String("llama")});
  }
  const json::Value* heads = nullptr;
  bool have_kv = false;
  for (const llama::HparamKeys& k : llama::HparamTable()) {
    const json::Value* v = config->Find(k.hf);
    if (v == nullptr || v->is_null()) continue;
    if (k.is_float) {
      const double d = v->is_number() ? v->as_double() : 0;
      if (!v->is_number() || !std::isfinite(d) || !(d > 0)) {
        return absl::DataLossError(absl::StrFormat(
            "%s: %s is %s, not a finite positive number", path, k.hf,
            v->is_number() ? absl::StrCat(d) : json::Value::TypeName(v->type())));
      }
      out.push_back({k.tqm, MetaValue::Float(d)});
      continue;
    }
    if (!v->is_int() || v->as_int() < 1 || v->as_int() > INT32_MAX) {
      std::string what;
      if (!ScalarText(*v, &what)) what = json::Value::TypeName(v->type());
      return absl::DataLossError(absl::StrFormat("%s: %s is %s, not an integer in 1..%d",
                                                 path, k.hf, what, INT32_MAX));
    }
    out.push_back({k.tqm, MetaValue::Int(v->as_int())});
    if (k.hparam == llama::Hparam::kHeads) heads = v;
    if (k.hparam == llama::Hparam::kKvHeads) have_kv = true;
  }
  // Hugging Face's LlamaConfig: no num_key_value_heads means as many as
  // attention heads (no grouped-query attention).
  if (heads != nullptr && !have_kv) {
    out.push_back({meta_keys::kKvHeads, MetaValue::Int(heads->as_int())});
  }
  if (const json::Value* tie = config->Find("tie_word_embeddings");
      tie != nullptr && !tie->is_null()) {
    if (!tie->is_bool()) {
      return absl::DataLossError(
          absl::StrFormat("%s: tie_word_embeddings is %s, not true or false", path,
                          json::Value::TypeName(tie->type())));
    }
    out.push_back({meta_keys::kTiedClassifier, MetaValue::Int(tie->as_bool() ? 1 : 0)});
  }
  return out;
}

absl::Status ApplyHfConfig(const std::string& config_path,
                           const std::vector<MetaEntry>& config,
                           const std::vector<SourceTensor>& tensors,
                           std::vector<MetaEntry>* meta) {
  const std::map<std::string, MetaValue> shapes = DeriveLlamaFromShapes(tensors);
  for (const MetaEntry& e : config) {
    auto it = shapes.find(e.key);
    if (e.key == meta_keys::kTiedClassifier) {
      // Tied means "no lm_head.weight of its own". A checkpoint that stores
      // lm_head.weight although the config ties it still holds a classifier
      // (a copy): keep it. One that does not, while the config says the
      // classifier is separate, lacks a tensor.
      if (it != shapes.end() && it->second.int64 == 1 && e.value.int64 == 0) {
        return absl::DataLossError(absl::StrFormat(
            "%s: tie_word_embeddings is false but the checkpoint has no lm_head.weight",
            config_path));
      }
      if (it != shapes.end()) continue;  // the tensors say it
    } else if (it != shapes.end() && e.value.type == format::kMetaInt64 &&
               it->second.int64 != e.value.int64) {
      return absl::DataLossError(absl::StrFormat(
          "%s: %s is %d, which contradicts the tensor shapes: they give %s=%d",
          config_path, HfKeyOf(e.key), e.value.int64, e.key, it->second.int64));
    }
    bool replaced = false;
    for (MetaEntry& m : *meta) {
      if (m.key == e.key) {
        m.value = e.value;
        replaced = true;
      }
    }
    if (!replaced) {
      // Typed keys before source.* ones, as the importers order them.
      auto at = std::find_if(meta->begin(), meta->end(), [](const MetaEntry& m) {
        return m.key.rfind("source.", 0) == 0;
      });
      meta->insert(at, e);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ShardIndex> ParseShardIndex(absl::string_view text,
                                           const std::string& path) {
  absl::StatusOr<json::Value> root =
      json::Parse(std::string_view(text.data(), text.size()), SmallJsonOptions());
  if (!root.ok()) return IndexError(path, std::string(root.status().message()));
  if (!root->is_object()) return IndexError(path, "not a JSON object");
  const json::Value* map = root->Find("weight_map");
  if (map == nullptr || !map->is_object()) {
    return IndexError(path, "no \"weight_map\" object");
  }
  if (map->object().empty()) return IndexError(path, "\"weight_map\" is empty");
  ShardIndex index;
  for (const json::Member& m : map->object()) {
    if (!m.value.is_string()) {
      return IndexError(
          path, absl::StrFormat("weight_map[%s] is not a string", json::Quote(m.key)));
    }
    const std::string& file = m.value.as_string();
    if (file.empty() || file == "." || file == ".." ||
        file.find('/') != std::string::npos || file.find('\0') != std::string::npos) {
      return IndexError(path,
                        absl::StrFormat("weight_map[%s] = %s is not a file name in the "
                                        "index's directory",
                                        json::Quote(m.key), json::Quote(file)));
    }
    index.shards[file].insert(m.key);
  }
  if (const json::Value* meta = root->Find("metadata"); meta != nullptr) {
    if (!meta->is_object()) return IndexError(path, "\"metadata\" is not an object");
    std::string v;
    for (const json::Member& m : meta->object()) {
      if (ScalarText(m.value, &v)) index.metadata.emplace_back(m.key, v);
    }
  }
  return index;
}

absl::StatusOr<uint64_t> CountLlama2cTokens(absl::string_view bytes,
                                            const std::string& name) {
  auto fail = [&](const std::string& what) {
    return absl::DataLossError(
        absl::StrFormat("tokenizer %s: not a llama2.c tokenizer: %s", name, what));
  };
  if (bytes.size() < 4) {
    return fail(
        absl::StrFormat("%d bytes is too short for the 4-byte header", bytes.size()));
  }
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const int32_t max_len = static_cast<int32_t>(LoadLE32(p));
  if (max_len < 1) {
    return fail(
        absl::StrFormat("max_token_length %d at offset 0 is not positive", max_len));
  }
  uint64_t tokens = 0;
  size_t pos = 4;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 8) {
      return fail(absl::StrFormat(
          "token %d at offset %d: %d bytes left, fewer than its score and length", tokens,
          pos, bytes.size() - pos));
    }
    const float score = BitsToFloat(LoadLE32(p + pos));
    const int32_t len = static_cast<int32_t>(LoadLE32(p + pos + 4));
    if (std::isnan(score)) {
      return fail(absl::StrFormat("token %d at offset %d has a NaN score", tokens, pos));
    }
    if (len < 0 || len > max_len) {
      return fail(absl::StrFormat(
          "token %d at offset %d has length %d, outside 0..max_token_length=%d", tokens,
          pos + 4, len, max_len));
    }
    pos += 8;
    if (static_cast<size_t>(len) > bytes.size() - pos) {
      return fail(
          absl::StrFormat("token %d at offset %d has length %d but %d bytes are left",
                          tokens, pos - 4, len, bytes.size() - pos));
    }
    pos += static_cast<size_t>(len);
    ++tokens;
  }
  if (tokens == 0) return fail("it holds no tokens");
  return tokens;
}

}  // namespace internal

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsIndex(
    const std::string& path) {
  TQM_ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(path));
  TQM_ASSIGN_OR_RETURN(internal::ShardIndex index, internal::ParseShardIndex(text, path));
  std::vector<std::pair<std::string, std::string>> raw;
  std::set<std::string> raw_keys;
  auto add_raw = [&](const std::string& k, const std::string& v) {
    if (raw_keys.insert(k).second) raw.emplace_back(k, v);
  };
  for (const auto& [k, v] : index.metadata) add_raw(k, v);
  const std::string dir = Dirname(path);

  std::vector<std::unique_ptr<TensorSource>> shards;
  std::vector<ShardedSource::Ref> refs;
  std::vector<SourceTensor> tensors;
  for (const auto& [file, names] : index.shards) {
    const std::string shard_path = dir + "/" + file;
    TQM_ASSIGN_OR_RETURN(internal::SafetensorsShard shard,
                         internal::OpenSafetensorsShard(shard_path));
    const std::vector<SourceTensor>& ts = shard.source->tensors();
    std::set<std::string> seen;
    for (const std::string& name : shard.header_names) {
      if (names.count(name) == 0) {
        return IndexError(path, absl::StrFormat("shard %s holds tensor %s, which the "
                                                "weight_map does not assign to it",
                                                file, json::Quote(name)));
      }
      seen.insert(name);
    }
    for (size_t i = 0; i < ts.size(); ++i) {
      refs.push_back({shards.size(), i});
      tensors.push_back(ts[i]);
    }
    for (const std::string& n : names) {
      if (seen.count(n) == 0) {
        return IndexError(path, absl::StrFormat("weight_map puts tensor %s in %s, which "
                                                "does not hold it",
                                                json::Quote(n), file));
      }
    }
    for (const auto& [k, v] : shard.raw_metadata) add_raw(k, v);
    shards.push_back(std::move(shard.source));
  }
  TQM_ASSIGN_OR_RETURN(std::vector<MetaEntry> meta,
                       internal::SafetensorsMetadata(path, tensors, raw));
  // config.json beside the index: hyperparameters the shapes cannot give.
  const std::string config_path = dir + "/config.json";
  if (IsRegularFile(config_path)) {
    TQM_ASSIGN_OR_RETURN(std::string config_text, internal::ReadSmallFile(config_path));
    TQM_ASSIGN_OR_RETURN(std::vector<MetaEntry> config,
                         internal::HfConfigToMetadata(config_text, config_path));
    TQM_RETURN_IF_ERROR(internal::ApplyHfConfig(config_path, config, tensors, &meta));
  }
  return std::unique_ptr<TensorSource>(new ShardedSource(
      std::move(shards), std::move(refs), std::move(tensors), std::move(meta)));
}

// ---- checks before packing ----

absl::Status CheckModel(const TensorSource& src,
                        const std::vector<MetaEntry>& extra_metadata,
                        const std::string& tokenizer_name_in) {
  // The tokenizer may come from the model file itself (GGUF).
  const std::string tokenizer_name =
      tokenizer_name_in.empty() ? meta_keys::kTokenizerLlama2c : tokenizer_name_in;
  auto find = [&](const char* key) -> const MetaValue* {
    if (const MetaValue* v = FindMeta(extra_metadata, key)) return v;
    return FindMeta(src.metadata(), key);
  };
  auto get_int = [&](const char* key, int64_t* out) {
    const MetaValue* v = find(key);
    if (v == nullptr || v->type != format::kMetaInt64) return false;
    *out = v->int64;
    return true;
  };
  const SourceTensor* embed = nullptr;
  std::set<int32_t> layers;
  for (const SourceTensor& t : src.tensors()) {
    if (t.name == llama::HfName(llama::Tensor::kEmbed) && t.dims.size() == 2) embed = &t;
    if (const int32_t l = LayerFromName(t.name); l >= 0) layers.insert(l);
  }
  auto mismatch = [](const std::string& what) {
    return absl::InvalidArgumentError(what);
  };
  int64_t dim = 0, vocab = 0, hidden = 0, n_layers = 0, heads = 0, kv_heads = 0;
  const bool has_dim = get_int(meta_keys::kDim, &dim);
  const bool has_vocab = get_int(meta_keys::kVocabSize, &vocab);
  if (embed != nullptr) {
    if (has_dim && static_cast<uint64_t>(dim) != embed->dims[1]) {
      return mismatch(
          absl::StrFormat("llama.dim=%d but model.embed_tokens.weight has %d columns",
                          dim, embed->dims[1]));
    }
    if (has_vocab && static_cast<uint64_t>(vocab) != embed->dims[0]) {
      return mismatch(
          absl::StrFormat("llama.vocab_size=%d but model.embed_tokens.weight has %d rows",
                          vocab, embed->dims[0]));
    }
  }
  if (get_int(meta_keys::kHiddenDim, &hidden)) {
    for (const SourceTensor& t : src.tensors()) {
      if (llama::EndsWithLayerSuffix(t.name, llama::Tensor::kGate) &&
          t.dims.size() == 2 && t.dims[0] != static_cast<uint64_t>(hidden)) {
        return mismatch(absl::StrFormat("llama.hidden_dim=%d but %s has %d rows", hidden,
                                        t.name, t.dims[0]));
      }
    }
  }
  // A file without tensors (a GGUF vocabulary file) has nothing to check.
  if (get_int(meta_keys::kLayers, &n_layers) && !src.tensors().empty() &&
      static_cast<uint64_t>(n_layers) != layers.size()) {
    return mismatch(absl::StrFormat(
        "llama.n_layers=%d but the checkpoint holds %d layers", n_layers, layers.size()));
  }
  if (get_int(meta_keys::kHeads, &heads)) {
    if (heads <= 0 || (has_dim && dim % heads != 0)) {
      return mismatch(
          absl::StrFormat("llama.n_heads=%d does not divide llama.dim=%d", heads, dim));
    }
    if (get_int(meta_keys::kKvHeads, &kv_heads)) {
      if (kv_heads <= 0 || heads % kv_heads != 0) {
        return mismatch(absl::StrFormat(
            "llama.n_kv_heads=%d does not divide llama.n_heads=%d", kv_heads, heads));
      }
      const uint64_t kv_rows =
          has_dim ? static_cast<uint64_t>(dim / heads * kv_heads) : 0;
      for (const SourceTensor& t : src.tensors()) {
        if (has_dim && llama::EndsWithLayerSuffix(t.name, llama::Tensor::kWk) &&
            t.dims.size() == 2 && t.dims[0] != kv_rows) {
          return mismatch(absl::StrFormat(
              "llama.n_kv_heads=%d gives k_proj %d rows (n_kv_heads * dim / n_heads) but "
              "%s has %d",
              kv_heads, kv_rows, t.name, t.dims[0]));
        }
      }
    }
  }
  if (const MetaValue* tok = find(meta_keys::kTokenizerLlama2c); tok != nullptr) {
    if (tok->type != format::kMetaBytes && tok->type != format::kMetaString) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tokenizer %s: metadata %s is a number, not a tokenizer",
                          tokenizer_name, meta_keys::kTokenizerLlama2c));
    }
    TQM_ASSIGN_OR_RETURN(uint64_t tokens,
                         internal::CountLlama2cTokens(tok->bytes, tokenizer_name));
    const bool known = has_vocab || embed != nullptr;
    const uint64_t model_vocab = has_vocab          ? static_cast<uint64_t>(vocab)
                                 : embed != nullptr ? embed->dims[0]
                                                    : 0;
    if (known && tokens != model_vocab) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tokenizer %s has %d tokens, model vocab_size is %d",
                          tokenizer_name, tokens, model_vocab));
    }
  }
  return absl::OkStatus();
}

// ---- recognising formats ----

namespace {

constexpr char kFormatsRead[] =
    "GGUF, safetensors, a safetensors index, llama2.c, a Hugging Face model directory";

std::string LowerExtension(const std::string& path) {
  const std::string base = internal::Basename(path);
  const size_t dot = base.rfind('.');
  if (dot == std::string::npos || dot == 0) return "";
  std::string ext = base.substr(dot);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

// What the first bytes of a file say about its format.
struct Sniff {
  bool gguf = false;
  bool tqm = false;
  bool safetensors = false;
  std::string not_safetensors;  // why not, when !safetensors
  bool json = false;            // starts (after whitespace) with '{'
  std::string start;            // the first bytes, escaped, for messages

  // The format the content has, for "named X but it is Y" messages.
  std::string Content() const {
    if (gguf) return "a GGUF file";
    if (tqm) return "a .tqm file";
    if (safetensors) return "a safetensors file";
    if (json) return "JSON";
    return "";
  }
};

Sniff SniffHead(const uint8_t* head, size_t n, uint64_t size) {
  Sniff s;
  s.gguf = n >= 4 && std::memcmp(head, "GGUF", 4) == 0;
  s.tqm = n >= sizeof(format::kMagic) &&
          std::memcmp(head, format::kMagic, sizeof(format::kMagic)) == 0;
  if (size < 8) {
    s.not_safetensors =
        absl::StrFormat("%d bytes is too short for the 8-byte header length", size);
  } else {
    const uint64_t len = LoadLE64(head);
    if (len > size - 8) {
      s.not_safetensors =
          absl::StrFormat("header length %d exceeds file size %d", len, size);
    } else if (len < 2 || n < 9 || head[8] != '{') {
      s.not_safetensors = "the JSON header does not start with '{' at offset 8";
    } else {
      s.safetensors = true;
    }
  }
  size_t first = 0;
  while (first < n && (head[first] == ' ' || head[first] == '\n' || head[first] == '\r' ||
                       head[first] == '\t')) {
    ++first;
  }
  s.json = first < n && head[first] == '{';
  s.start = absl::CEscape(
      absl::string_view(reinterpret_cast<const char*>(head), std::min<size_t>(n, 8)));
  return s;
}

std::string ButIs(const Sniff& s) {
  const std::string c = s.Content();
  return c.empty() ? "" : absl::StrCat(" (its content is ", c, ")");
}

absl::Status TqmGiven(const std::string& path) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s is a .tqm file; tqm-pack reads float checkpoints (%s), not packed ones "
      "(tqm-unpack turns a .tqm file back into safetensors, GGUF or llama2.c)",
      path, kFormatsRead));
}

// A Hugging Face model directory: model.safetensors.index.json + shards, or
// model.safetensors; config.json beside either supplies hyperparameters.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenHfDirectory(const std::string& dir) {
  const std::string index = dir + "/model.safetensors.index.json";
  const std::string single = dir + "/model.safetensors";
  const std::string config = dir + "/config.json";
  if (IsRegularFile(index)) return OpenSafetensorsIndex(index);
  if (IsRegularFile(single)) {
    return internal::OpenSafetensorsWithConfig(single,
                                               IsRegularFile(config) ? config : "");
  }
  // Name what is there that could be given instead.
  std::vector<std::string> candidates;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      const std::string ext = LowerExtension(name);
      if (ext == ".safetensors" || ext == ".gguf" || ext == ".bin") {
        candidates.push_back(name);
      }
    }
    closedir(d);
  }
  std::sort(candidates.begin(), candidates.end());
  std::string hint;
  if (!candidates.empty()) {
    if (candidates.size() > 3) candidates.resize(3);
    hint = absl::StrFormat("; it holds %s: give a model file itself",
                           absl::StrJoin(candidates, ", "));
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: a directory, but not a Hugging Face model directory: looked for "
      "model.safetensors.index.json and model.safetensors, found neither%s",
      dir, hint));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> OpenModel(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return OpenHfDirectory(path);
  absl::StatusOr<std::unique_ptr<internal::InputFile>> file =
      internal::InputFile::Open(path);
  if (!file.ok()) return file.status();
  const uint64_t size = (*file)->size();
  uint8_t head[16] = {0};
  const size_t n = size < sizeof(head) ? static_cast<size_t>(size) : sizeof(head);
  TQM_RETURN_IF_ERROR((*file)->ReadAt(0, head, n));
  file->reset();
  const Sniff s = SniffHead(head, n, size);
  const std::string ext = LowerExtension(path);
  const std::string base = internal::Basename(path);
  const std::string config = Dirname(path) + "/config.json";

  // The content decides; an extension that promises another format is an
  // error in that format's terms, so that a misnamed or damaged file is not
  // silently read as something else (llama2.c has no magic to tell).
  if (s.tqm) return TqmGiven(path);
  if (ext == ".tqm") {
    return absl::DataLossError(absl::StrFormat(
        "%s: not a .tqm file: it starts with \"%s\", not the .tqm magic%s", path, s.start,
        ButIs(s)));
  }
  if (ext == ".safetensors" && !s.safetensors) {
    return absl::DataLossError(absl::StrFormat("%s: not a safetensors file: %s%s", path,
                                               s.not_safetensors, ButIs(s)));
  }
  if (ext == ".gguf" && !s.gguf) {
    return absl::DataLossError(absl::StrFormat(
        "%s: not a GGUF file: it starts with \"%s\", not the magic \"GGUF\"%s", path,
        s.start, ButIs(s)));
  }
  if (s.gguf) return OpenGguf(path);
  if (s.safetensors) {
    // A model.safetensors beside its config.json is a Hugging Face model.
    return internal::OpenSafetensorsWithConfig(
        path, base == "model.safetensors" && IsRegularFile(config) ? config : "");
  }
  if (s.json) {
    if (base == "config.json") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s is a Hugging Face config, not a model: give its directory", path));
    }
    return OpenSafetensorsIndex(path);
  }
  // llama2.c: no magic, so accepted only when its header is plausible and
  // implies exactly the file's size (OpenLlama2c checks both).
  absl::StatusOr<std::unique_ptr<TensorSource>> l2c = OpenLlama2c(path);
  if (l2c.ok() || l2c.status().code() != absl::StatusCode::kDataLoss) return l2c;
  std::string why(l2c.status().message());
  if (why.rfind(path + ": ", 0) == 0) why = why.substr(path.size() + 2);
  // PyTorch's torch.save writes a zip archive (or, before 1.6, a pickle).
  const bool torch = (n >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) ||
                     (n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5);
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: not a model file this tool reads; tried GGUF (no \"GGUF\" magic), "
      "safetensors (%s), safetensors index JSON (does not start with '{'), llama2.c "
      "(%s), Hugging Face directory (not a directory)%s",
      path, s.not_safetensors, why,
      torch ? "; it looks like a PyTorch checkpoint (zip or pickle): convert it to "
              "safetensors first"
            : ""));
}

}  // namespace tqm
