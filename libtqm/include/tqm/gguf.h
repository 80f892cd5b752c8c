// GGUF (llama.cpp's model format, versions 2 and 3): the on-disk constants
// this library reads and writes, a strict header reader for inspection and
// tests, and the conversions between GGUF's tokenizer arrays and the llama2.c
// tokenizer blob that tqm keeps in metadata (tokenizer.llama2c).
//
// Importing a GGUF model as a TensorSource is OpenGguf() in import.h;
// writing one from a .tqm file is ExportGguf() in export.h.
//
// GGUF layout (little-endian): magic "GGUF", u32 version, u64 tensor count,
// u64 metadata count, the metadata key/value pairs, the tensor infos (name,
// u32 n_dims, u64 ne[n_dims] with the row length first, u32 ggml type, u64
// offset relative to the data area), then the data area, which starts at
// the next multiple of general.alignment (default 32).

#ifndef TQM_GGUF_H_
#define TQM_GGUF_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tqm {
namespace gguf {

// Values fixed by the GGUF specification (ggml/docs/gguf.md); never change.
inline constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
inline constexpr uint32_t kMinVersion = 2;  // v1 used 32-bit counts: rejected
inline constexpr uint32_t kMaxVersion = 3;
inline constexpr uint32_t kWriteVersion = 3;
inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

// Metadata value types.
enum ValueType : uint32_t {
  kTypeU8 = 0,
  kTypeI8 = 1,
  kTypeU16 = 2,
  kTypeI16 = 3,
  kTypeU32 = 4,
  kTypeI32 = 5,
  kTypeF32 = 6,
  kTypeBool = 7,
  kTypeString = 8,
  kTypeArray = 9,
  kTypeU64 = 10,
  kTypeI64 = 11,
  kTypeF64 = 12,
};

// ggml tensor types this library reads (F32, F16, BF16, Q8_0, and I8, I16,
// I32, I64, F64 kept verbatim) and writes (F32, F16, Q8_0). Other ids are
// rejected with UnimplementedError.
enum GgmlType : uint32_t {
  kGgmlF32 = 0,
  kGgmlF16 = 1,
  kGgmlQ8_0 = 8,
  kGgmlI8 = 24,
  kGgmlI16 = 25,
  kGgmlI32 = 26,
  kGgmlI64 = 27,
  kGgmlF64 = 28,
  kGgmlBF16 = 30,
};
// Q8_0: blocks of 32 weights, each a float16 scale d then 32 int8 q;
// weight = d * q. A row length (ne[0]) must be a multiple of the block.
inline constexpr uint64_t kQ8_0BlockWeights = 32;
inline constexpr uint64_t kQ8_0BlockBytes = 34;

// general.file_type values (llama.cpp's llama_ftype) for what ExportGguf writes.
inline constexpr uint32_t kFileTypeAllF32 = 0;
inline constexpr uint32_t kFileTypeMostlyF16 = 1;
inline constexpr uint32_t kFileTypeMostlyQ8_0 = 7;

// Limits this reader enforces beyond "fits in the file".
inline constexpr uint64_t kMaxStringLength = 64ull << 20;      // one string value
inline constexpr uint64_t kMaxKeptArrayElements = 1ull << 24;  // tokenizer arrays
inline constexpr uint64_t kMaxNameLength = 1024;               // tensor names (ggml: 63)

}  // namespace gguf

// One metadata pair of a GGUF file. Scalars fill the member matching their
// type class; arrays record element type and count, and keep their elements
// (strings / numbers) only for tokenizer.ggml.* keys.
struct GgufKeyValue {
  std::string key;
  gguf::ValueType type = gguf::kTypeU8;
  uint64_t uint_value = 0;   // unsigned integers and bool
  int64_t int_value = 0;     // signed integers
  double float_value = 0;    // F32 / F64
  std::string string_value;  // kTypeString
  gguf::ValueType array_type = gguf::kTypeU8;
  uint64_t array_size = 0;
  bool array_kept = false;
  std::vector<std::string> array_strings;  // kept string arrays
  std::vector<double> array_numbers;       // kept numeric / bool arrays

  bool is_integer() const;
  // The value of an integer or bool scalar as int64; false when it is not one
  // or does not fit.
  bool AsInt64(int64_t* out) const;
};

struct GgufTensorInfo {
  std::string name;          // as stored (llama.cpp naming)
  std::vector<uint64_t> ne;  // ggml order: row length first
  uint32_t type = 0;         // gguf::GgmlType
  uint64_t offset = 0;       // absolute file offset of the data
  uint64_t size = 0;         // bytes of data
  uint64_t numel = 0;
};

struct GgufInfo {
  uint32_t version = 0;
  uint32_t alignment = gguf::kDefaultAlignment;
  uint64_t data_offset = 0;  // absolute offset of the data area
  uint64_t file_size = 0;
  std::vector<GgufKeyValue> metadata;
  std::vector<GgufTensorInfo> tensors;  // file order

  const GgufKeyValue* Find(const std::string& key) const;
};

// Reads and validates the header of the GGUF file at `path` without reading
// tensor data: magic and version, every count capped by the bytes the file
// can hold, string lengths, unique keys and names, known value types, the
// alignment key (a u32 power of two), tensor types and shapes (element
// counts overflow-checked), offsets aligned and every tensor inside the data
// area with no two overlapping. DataLossError for corrupt bytes,
// UnimplementedError for unknown versions and tensor types,
// ResourceExhaustedError for limits; messages name the file, key or tensor
// and the offset.
absl::StatusOr<GgufInfo> ReadGgufInfo(const std::string& path);

// llama.cpp's SentencePiece vocabulary arrays.
struct GgufVocab {
  std::vector<std::string> tokens;  // "\xE2\x96\x81" (U+2581) for spaces
  std::vector<float> scores;
  std::vector<int32_t> types;  // 1 normal, 2 unknown, 3 control, 6 byte
  uint32_t unknown_id = 0, bos_id = 1, eos_id = 2;
};

// The llama2.c tokenizer file (int32 max_token_length, then per token f32
// score, i32 length, bytes) for a GGUF vocabulary, inverting llama.cpp's
// llama2.c converter and llama2.c's tokenizer.py: U+2581 becomes a space,
// BOS and EOS become "\n<s>\n" and "\n</s>\n". InvalidArgument when the arrays
// disagree in length. `scores` may be empty (all 0).
absl::StatusOr<std::string> Llama2cTokenizerFromVocab(const GgufVocab& vocab);

// Parses the first `vocab_size` tokens of a llama2.c tokenizer blob into
// llama.cpp's arrays exactly as llama.cpp's convert-llama2c-to-ggml does
// (token 0 "<unk>", 1 "<s>", 2 "</s>", "<0xNN>" byte tokens, spaces as
// U+2581). DataLossError naming the token and offset on a malformed blob.
absl::StatusOr<GgufVocab> VocabFromLlama2cTokenizer(const std::string& blob,
                                                    uint64_t vocab_size);

}  // namespace tqm

#endif  // TQM_GGUF_H_
