// Typed key/value metadata carried in a .tqm file (architecture,
// hyperparameters, tokenizer, provenance). See spec/FORMAT.md, "Metadata".

#ifndef TQM_METADATA_H_
#define TQM_METADATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tqm/format.h"

namespace tqm {

// One metadata value. Exactly one of the payload members is meaningful,
// selected by `type`: int64 for kMetaInt64, float64 for kMetaFloat64, and
// `bytes` for kMetaString (UTF-8 text) and kMetaBytes (opaque).
struct MetaValue {
  format::MetaType type = format::kMetaInt64;
  int64_t int64 = 0;
  double float64 = 0;
  std::string bytes;

  static MetaValue Int(int64_t v);
  static MetaValue Float(double v);
  static MetaValue String(std::string v);
  static MetaValue Bytes(std::string v);
};

struct MetaEntry {
  std::string key;
  MetaValue value;
};

// Well-known keys written by tqm-pack. Readers must not require any of them.
namespace meta_keys {
inline constexpr char kArchitecture[] = "general.architecture";  // "llama"
inline constexpr char kSourceFile[] = "source.file";             // basename
inline constexpr char kSourceFormat[] = "source.format";  // llama2c|safetensors|gguf
inline constexpr char kWriter[] = "tqm.writer";
inline constexpr char kDim[] = "llama.dim";
inline constexpr char kHiddenDim[] = "llama.hidden_dim";
inline constexpr char kLayers[] = "llama.n_layers";
inline constexpr char kHeads[] = "llama.n_heads";
inline constexpr char kKvHeads[] = "llama.n_kv_heads";
inline constexpr char kVocabSize[] = "llama.vocab_size";
inline constexpr char kSeqLen[] = "llama.seq_len";
inline constexpr char kNormEps[] = "llama.norm_eps";        // float64
inline constexpr char kRopeTheta[] = "llama.rope_theta";    // float64
inline constexpr char kRopeLayout[] = "llama.rope_layout";  // "meta" | "hf"
inline constexpr char kTiedClassifier[] = "llama.tied_classifier";  // 0|1
inline constexpr char kTokenizerLlama2c[] = "tokenizer.llama2c";    // bytes
}  // namespace meta_keys

// Returns the entry with `key`, or nullptr. The pointer is valid as long as
// `entries` is neither modified nor destroyed.
const MetaValue* FindMeta(const std::vector<MetaEntry>& entries,
                          const std::string& key);

}  // namespace tqm

#endif  // TQM_METADATA_H_
