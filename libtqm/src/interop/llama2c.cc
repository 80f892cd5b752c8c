// llama2.c v0 checkpoint importer. The file is a 7 x int32 header followed by
// float32 arrays whose sizes all follow from the header; every field is
// validated and the exact file size is computed with overflow-checked
// arithmetic before a single weight is read. Stacked per-layer arrays become
// one Hugging Face named tensor per layer; weights are read with pread on
// demand, so opening costs no more than the header.

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "interop/import_internal.h"
#include "interop/llama.h"
#include "tqm/import.h"
#include "tqm/metadata.h"
#include "tqm/source.h"

namespace tqm {
namespace {

using internal::CheckedAdd;
using internal::CheckedMul;

constexpr uint64_t kHeaderBytes = llama::kLlama2cHeaderFields * 4;

class Llama2cSource : public TensorSource {
 public:
  Llama2cSource(std::unique_ptr<internal::InputFile> file,
                std::vector<SourceTensor> tensors, std::vector<uint64_t> offsets,
                std::vector<MetaEntry> metadata)
      : file_(std::move(file)),
        tensors_(std::move(tensors)),
        offsets_(std::move(offsets)),
        metadata_(std::move(metadata)) {}

  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<MetaEntry>& metadata() const override { return metadata_; }

  absl::Status Read(size_t i, std::vector<float>* out) override {
    if (i >= tensors_.size()) {
      return absl::OutOfRangeError(
          absl::StrFormat("%s: tensor index %d out of range (%d tensors)", file_->path(),
                          i, tensors_.size()));
    }
    // Element counts were bounded by the file size when the file was opened.
    uint64_t n = 1;
    for (uint64_t d : tensors_[i].dims) n *= d;
    if (n > out->max_size()) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: tensor %s: %d elements do not fit in memory",
                          file_->path(), tensors_[i].name, n));
    }
    out->resize(static_cast<size_t>(n));
    absl::Status s = file_->ReadAt(offsets_[i], out->data(), static_cast<size_t>(n) * 4);
    if (!s.ok()) {
      return absl::Status(
          s.code(), absl::StrFormat("tensor %s: %s", tensors_[i].name, s.message()));
    }
    internal::FixFloat32Endianness(out->data(), out->size());
    return absl::OkStatus();
  }

  // The little-endian float32 bytes as the file holds them.
  absl::Status ReadRaw(size_t i, std::string* out) override {
    if (i >= tensors_.size()) {
      return absl::OutOfRangeError(
          absl::StrFormat("%s: tensor index %d out of range (%d tensors)", file_->path(),
                          i, tensors_.size()));
    }
    // Sizes were bounded by the file size when the file was opened.
    uint64_t n = 4;
    for (uint64_t d : tensors_[i].dims) n *= d;
    if (n > out->max_size()) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: tensor %s: %d bytes do not fit in memory", file_->path(),
                          tensors_[i].name, n));
    }
    out->resize(static_cast<size_t>(n));
    absl::Status s = file_->ReadAt(offsets_[i], out->data(), out->size());
    if (!s.ok()) {
      return absl::Status(
          s.code(), absl::StrFormat("tensor %s: %s", tensors_[i].name, s.message()));
    }
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<internal::InputFile> file_;
  std::vector<SourceTensor> tensors_;
  std::vector<uint64_t> offsets_;  // byte offset of each tensor
  std::vector<MetaEntry> metadata_;
};

// Product of `factors`, or an error naming `what` when it overflows.
absl::Status Product(const std::string& path, const char* what,
                     absl::Span<const uint64_t> factors, uint64_t* out) {
  uint64_t p = 1;
  for (uint64_t f : factors) {
    if (!CheckedMul(p, f, &p)) {
      return absl::DataLossError(absl::StrFormat(
          "%s: llama2.c header: size of %s overflows 64 bits", path, what));
    }
  }
  *out = p;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> OpenLlama2c(const std::string& path) {
  absl::StatusOr<std::unique_ptr<internal::InputFile>> opened =
      internal::InputFile::Open(path);
  if (!opened.ok()) return opened.status();
  return internal::OpenLlama2cInput(std::move(opened).value());
}

absl::StatusOr<std::unique_ptr<TensorSource>> internal::OpenLlama2cInput(
    std::unique_ptr<InputFile> file) {
  const std::string path = file->path();
  const uint64_t file_size = file->size();
  if (file_size < kHeaderBytes) {
    return absl::DataLossError(
        absl::StrFormat("%s: %d bytes is too short for a llama2.c header (%d bytes)",
                        path, file_size, kHeaderBytes));
  }
  uint8_t raw[kHeaderBytes];
  absl::Status s = file->ReadAt(0, raw, sizeof(raw));
  if (!s.ok()) return s;
  std::array<int32_t, llama::kLlama2cHeaderFields> h;
  for (int i = 0; i < llama::kLlama2cHeaderFields; ++i)
    h[i] = static_cast<int32_t>(LoadLE32(raw + 4 * i));

  // Every field but vocab_size must be positive; vocab_size must be nonzero
  // (its sign says whether the classifier is separate).
  constexpr int kVocab = static_cast<int>(llama::Hparam::kVocabSize);
  for (int i = 0; i < llama::kLlama2cHeaderFields; ++i) {
    const bool ok = i == kVocab ? (h[i] != 0 && h[i] != INT32_MIN) : h[i] > 0;
    if (!ok) {
      return absl::DataLossError(absl::StrFormat(
          "%s: llama2.c header field %s=%d at offset %d is invalid (not a llama2.c "
          "checkpoint?)",
          path, llama::HparamTable()[i].llama2c, h[i], 4 * i));
    }
  }
  const LlamaDims d = llama::FromLlama2cHeader(h);
  const uint64_t dim = d.dim, layers = d.n_layers, heads = d.n_heads,
                 kv_heads = d.n_kv_heads, seq_len = d.seq_len, vocab = d.vocab_size;
  const bool shared_classifier = d.tied;
  if (dim % heads != 0) {
    return absl::DataLossError(absl::StrFormat(
        "%s: llama2.c header: n_heads=%d (offset 12) does not divide dim=%d", path, heads,
        dim));
  }
  if (kv_heads > heads || heads % kv_heads != 0) {
    return absl::DataLossError(absl::StrFormat(
        "%s: llama2.c header: n_kv_heads=%d (offset 16) does not divide n_heads=%d", path,
        kv_heads, heads));
  }
  const uint64_t head_size = dim / heads;
  if (head_size % 2 != 0) {
    return absl::DataLossError(absl::StrFormat(
        "%s: llama2.c header: head size dim/n_heads=%d is odd (rotary embeddings need "
        "pairs)",
        path, head_size));
  }

  // Element counts of each array, in file order.
  // c[a]: element count of array a over all layers: embedding, rms_att, wq, wk,
  // wv, wo, rms_ffn, w1, w2, w3 (llama::kLayerTensors, each stacked over the
  // layers), rms_final, freq_cis_real, freq_cis_imag, wcls.
  uint64_t c[14];
  using llama::Tensor;
  s = Product(path, llama::NamesOf(Tensor::kEmbed).llama2c, {vocab, dim}, &c[0]);
  for (size_t i = 0; i < llama::kLayerTensors.size() && s.ok(); ++i) {
    const Tensor t = llama::kLayerTensors[i];
    std::vector<uint64_t> stacked = llama::Shape(t, d);
    stacked.insert(stacked.begin(), layers);
    s = Product(path, llama::NamesOf(t).llama2c, stacked, &c[1 + i]);
  }
  c[10] = dim;  // rms_final_weight
  if (s.ok()) s = Product(path, "freq_cis_real", {seq_len, head_size / 2}, &c[11]);
  c[12] = c[11];                         // freq_cis_imag
  c[13] = shared_classifier ? 0 : c[0];  // wcls
  if (!s.ok()) return s;

  uint64_t offsets[15];
  offsets[0] = kHeaderBytes;
  for (int i = 0; i < 14; ++i) {
    uint64_t bytes;
    if (!CheckedMul(c[i], 4, &bytes) || !CheckedAdd(offsets[i], bytes, &offsets[i + 1])) {
      return absl::DataLossError(absl::StrFormat(
          "%s: llama2.c header: total size overflows 64 bits (dim=%d hidden_dim=%d "
          "n_layers=%d vocab_size=%d seq_len=%d)",
          path, h[0], h[1], h[2], h[5], h[6]));
    }
  }
  const uint64_t expected = offsets[14];
  if (file_size != expected) {
    return absl::DataLossError(absl::StrFormat(
        "%s: llama2.c file is %d bytes but its header (dim=%d hidden_dim=%d n_layers=%d "
        "n_heads=%d n_kv_heads=%d vocab_size=%d seq_len=%d) requires exactly %d bytes%s",
        path, file_size, h[0], h[1], h[2], h[3], h[4], h[5], h[6], expected,
        file_size < expected ? " (truncated?)" : " (trailing bytes)"));
  }

  std::vector<SourceTensor> tensors;
  std::vector<uint64_t> tensor_offsets;
  auto add = [&](std::string name, std::vector<uint64_t> dims, uint64_t offset) {
    SourceTensor t;
    t.name = std::move(name);
    t.dtype = format::kDTypeF32;
    t.dims = std::move(dims);
    tensors.push_back(std::move(t));
    tensor_offsets.push_back(offset);
  };
  add(llama::HfName(Tensor::kEmbed), llama::Shape(Tensor::kEmbed, d), offsets[0]);
  // Per-layer slice l of stacked array a starts at offsets[a] + l * (count/layers) * 4;
  // array 1 + i holds per-layer tensor i (llama::kLayerTensors order).
  auto slice = [&](int a, uint64_t l) { return offsets[a] + l * (c[a] / layers) * 4; };
  for (uint64_t l = 0; l < layers; ++l) {
    for (size_t i = 0; i < llama::kLayerTensors.size(); ++i) {
      const Tensor t = llama::kLayerTensors[i];
      add(llama::HfName(t, l), llama::Shape(t, d), slice(1 + static_cast<int>(i), l));
    }
  }
  add(llama::HfName(Tensor::kFinalNorm), llama::Shape(Tensor::kFinalNorm, d),
      offsets[10]);
  if (!shared_classifier) {
    add(llama::HfName(Tensor::kClassifier), llama::Shape(Tensor::kClassifier, d),
        offsets[13]);
  }

  std::vector<MetaEntry> meta = llama::ToTqmMetadata(d);
  meta.push_back({meta_keys::kSourceFormat, MetaValue::String("llama2c")});
  meta.push_back({meta_keys::kSourceFile, MetaValue::String(internal::Basename(path))});
  return std::unique_ptr<TensorSource>(new Llama2cSource(
      std::move(file), std::move(tensors), std::move(tensor_offsets), std::move(meta)));
}

}  // namespace tqm
