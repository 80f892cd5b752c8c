// OpenModel (format sniffing), sharded safetensors models opened through
// their index (OpenSafetensorsIndex), and the input-file helper shared by
// the importers.

#include "tqm/import.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "atomic_file.h"
#include "import_internal.h"
#include "json.h"
#include "safetensors_internal.h"
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

// Reads a whole small file (index, config.json), capped at kMaxIndexSize.
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

// Hugging Face config.json keys -> tqm llama.* keys (typed and checked
// against the tensor shapes by the safetensors metadata builder).
constexpr std::pair<const char*, const char*> kConfigKeys[] = {
    {"hidden_size", meta_keys::kDim},
    {"intermediate_size", meta_keys::kHiddenDim},
    {"num_hidden_layers", meta_keys::kLayers},
    {"num_attention_heads", meta_keys::kHeads},
    {"num_key_value_heads", meta_keys::kKvHeads},
    {"vocab_size", meta_keys::kVocabSize},
    {"max_position_embeddings", meta_keys::kSeqLen},
    {"rms_norm_eps", meta_keys::kNormEps},
    {"rope_theta", meta_keys::kRopeTheta},
};

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
    if (i >= refs_.size()) {
      return absl::OutOfRangeError(
          absl::StrFormat("tensor index %d out of range (%d tensors)", i, refs_.size()));
    }
    return shards_[refs_[i].shard]->Read(refs_[i].index, out);
  }

 private:
  std::vector<std::unique_ptr<TensorSource>> shards_;
  std::vector<Ref> refs_;
  std::vector<SourceTensor> tensors_;
  std::vector<MetaEntry> meta_;
};

}  // namespace

namespace internal {

absl::StatusOr<ShardIndex> ParseShardIndex(absl::string_view json,
                                           const std::string& path) {
  json::ParseOptions options;
  options.max_size = kMaxIndexSize;
  options.max_depth = 16;
  absl::StatusOr<json::Value> root =
      json::Parse(std::string_view(json.data(), json.size()), options);
  if (!root.ok()) {
    return absl::DataLossError(
        absl::StrFormat("%s: safetensors index: %s", path, root.status().message()));
  }
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
    index.by_shard[file].insert(m.key);
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

}  // namespace internal

absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsIndex(
    const std::string& path) {
  TQM_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path));
  TQM_ASSIGN_OR_RETURN(internal::ShardIndex index, internal::ParseShardIndex(text, path));
  const std::map<std::string, std::set<std::string>>& by_shard = index.by_shard;
  std::vector<std::pair<std::string, std::string>> raw;
  std::set<std::string> raw_keys;
  auto add_raw = [&](const std::string& k, const std::string& v) {
    if (raw_keys.insert(k).second) raw.emplace_back(k, v);
  };
  for (const auto& [k, v] : index.metadata) add_raw(k, v);
  json::ParseOptions options;
  options.max_size = kMaxIndexSize;
  options.max_depth = 16;
  const std::string dir = Dirname(path);
  // config.json beside the index: hyperparameters the shapes cannot give.
  std::set<std::string> from_config;
  const std::string config_path = dir + "/config.json";
  struct stat st;
  if (stat(config_path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    TQM_ASSIGN_OR_RETURN(std::string config_text, ReadSmallFile(config_path));
    absl::StatusOr<json::Value> config = json::Parse(config_text, options);
    if (!config.ok() || !config->is_object()) {
      return absl::DataLossError(absl::StrFormat(
          "%s: not a JSON object%s%s", config_path, config.ok() ? "" : ": ",
          config.ok() ? "" : std::string(config.status().message())));
    }
    std::string v;
    for (const auto& [hf, tqm_key] : kConfigKeys) {
      const json::Value* value = config->Find(hf);
      if (value == nullptr || value->is_null() || !ScalarText(*value, &v)) continue;
      if (raw_keys.count(tqm_key) == 0) from_config.insert(tqm_key);
      add_raw(tqm_key, v);
    }
  }

  std::vector<std::unique_ptr<TensorSource>> shards;
  std::vector<ShardedSource::Ref> refs;
  std::vector<SourceTensor> tensors;
  for (const auto& [file, names] : by_shard) {
    const std::string shard_path = dir + "/" + file;
    TQM_ASSIGN_OR_RETURN(internal::SafetensorsShard shard,
                         internal::OpenSafetensorsShard(shard_path));
    const std::vector<SourceTensor>& ts = shard.source->tensors();
    std::set<std::string> seen;
    for (size_t i = 0; i < ts.size(); ++i) {
      if (names.count(ts[i].name) == 0) {
        return IndexError(path, absl::StrFormat("shard %s holds tensor %s, which the "
                                                "weight_map does not assign to it",
                                                file, json::Quote(ts[i].name)));
      }
      seen.insert(ts[i].name);
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
  // Values taken from config.json are typed llama.* keys already; their raw
  // copies under source.meta.* would only repeat them.
  meta.erase(std::remove_if(meta.begin(), meta.end(),
                            [&](const MetaEntry& e) {
                              return e.key.rfind("source.meta.", 0) == 0 &&
                                     from_config.count(e.key.substr(12)) != 0;
                            }),
             meta.end());
  return std::unique_ptr<TensorSource>(new ShardedSource(
      std::move(shards), std::move(refs), std::move(tensors), std::move(meta)));
}

// ---- sniffing ----

absl::StatusOr<std::unique_ptr<TensorSource>> OpenModel(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    for (const char* name : {"model.safetensors.index.json", "model.safetensors"}) {
      const std::string p = path + "/" + name;
      if (stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return OpenModel(p);
    }
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: a directory without model.safetensors.index.json or model.safetensors",
        path));
  }
  absl::StatusOr<std::unique_ptr<internal::InputFile>> file =
      internal::InputFile::Open(path);
  if (!file.ok()) return file.status();
  const uint64_t size = (*file)->size();
  uint8_t head[9] = {0};
  const size_t n = size < sizeof(head) ? static_cast<size_t>(size) : sizeof(head);
  absl::Status s = (*file)->ReadAt(0, head, n);
  if (!s.ok()) return s;
  if (n >= 4 && std::memcmp(head, "GGUF", 4) == 0) return OpenGguf(path);
  // safetensors: u64 header length that fits in the file, then a JSON object.
  if (n == 9) {
    const uint64_t header_len = internal::LoadLE64(head);
    if (header_len >= 2 && header_len <= size - 8 && head[8] == '{') {
      return OpenSafetensors(path);
    }
  }
  // A JSON object: a sharded model's index.
  size_t first = 0;
  while (first < n && (head[first] == ' ' || head[first] == '\n' || head[first] == '\r' ||
                       head[first] == '\t')) {
    ++first;
  }
  if (first < n && head[first] == '{') return OpenSafetensorsIndex(path);
  if (n >= sizeof(format::kMagic) &&
      std::memcmp(head, format::kMagic, sizeof(format::kMagic)) == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: already a .tqm file, not a model to import", path));
  }
  return OpenLlama2c(path);
}

}  // namespace tqm
