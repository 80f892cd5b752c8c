// Reading a .tqm file: open (memory-map) and validate the header, directory,
// metadata, table and tensor index; decode chunks and tensors on demand.
//
// Open() validates every structure except tensor data, so that a file that
// opens has a consistent index: every range lies in the file, nothing
// overlaps, every count is backed by bytes, every id is known. Chunk data is
// checked (checksum, then decode) when a chunk is decoded.

#ifndef TQM_READER_H_
#define TQM_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "tqm/format.h"
#include "tqm/metadata.h"
#include "tqm/quantize.h"

namespace tqm {

struct FileHeader {
  uint16_t major = 0;
  uint16_t minor = 0;
  uint32_t flags = 0;
  uint64_t file_size = 0;
  uint64_t directory_offset = 0;
  uint32_t section_count = 0;
};

struct SectionInfo {
  uint32_t id = 0;
  uint32_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t checksum = 0;
};

struct ChunkInfo {
  uint8_t codec = 0;
  uint32_t decoded_size = 0;
  uint64_t offset = 0;          // absolute file offset of the encoded bytes
  uint32_t encoded_size = 0;
  uint64_t checksum = 0;        // xxh3-64 of the encoded bytes
  uint64_t decoded_offset = 0;  // where its bytes start in the tensor
};

struct TensorInfo {
  std::string name;
  // The source element type; for kStorageRaw the stored element type.
  format::SourceDType source_dtype = format::kDTypeF32;
  format::Storage storage = format::kStorageF32;
  // Empty for a 0-d tensor (one element). May hold zeros (no elements) for
  // F32 and RAW storage (format 1.3).
  std::vector<uint64_t> dims;
  int32_t layer = format::kNoLayer;
  // Code width of the U8 storages: every code is below 2^bits (8 in files
  // before format 1.3). 0 for F32 and RAW storage.
  uint8_t bits = 0;
  // kStorageU8Group: elements per group along the last dimension.
  uint32_t group_size = 0;
  // One entry for kStorageU8Tensor, dims[0] entries for kStorageU8Row, one
  // per group for kStorageU8Group (row-major: the groups of row 0 first), none
  // for F32 and RAW storage.
  std::vector<Affine> affine;
  std::vector<ChunkInfo> chunks;
  uint64_t numel = 0;          // product of dims (1 for a 0-d tensor)
  uint64_t byte_size = 0;      // decoded bytes: numel * element_size()
  uint64_t encoded_size = 0;   // sum of the chunks' encoded sizes

  // U8 codes with affine parameters (tensor, row or group).
  bool quantized() const {
    return storage == format::kStorageU8Tensor || storage == format::kStorageU8Row ||
           storage == format::kStorageU8Group;
  }
  // Stored verbatim in source_dtype (format 1.3).
  bool raw() const { return storage == format::kStorageRaw; }
  // Bytes per decoded element: 4 (F32), 1 (U8 storages), the dtype's size (RAW).
  uint64_t element_size() const;
  // The index in `affine` of the pair that element `e` (row-major) uses,
  // and how many elements from `e` on use it too (quantized tensors).
  uint64_t ParamIndex(uint64_t e) const;
  uint64_t ParamRun(uint64_t e) const;
};

// Dequantizes the codes `q` of elements [first, first + q.size()) of the
// quantized tensor `t` into `out` (same length) with each element's pair,
// exactly as spec/FORMAT.md "Dequantization" defines.
void DequantizeRange(const TensorInfo& t, uint64_t first, absl::Span<const uint8_t> q,
                     absl::Span<float> out);

// Converts `n` elements of RAW storage of `dtype` (little-endian bytes at
// `in`) to float32: F16, BF16 exactly; F64, 32/64-bit integers rounded to
// nearest; BOOL as 0 or 1.
void RawToFloat(format::SourceDType dtype, const uint8_t* in, size_t n, float* out);

class Reader {
 public:
  // Maps `path` read-only and validates it. Errors name the file, the field
  // and the offset: DataLossError for corrupt bytes, UnimplementedError for
  // an unknown version, flag or required section/codec.
  static absl::StatusOr<std::unique_ptr<Reader>> Open(const std::string& path);

  // Validates a file held in memory. `bytes` must outlive the Reader. `name`
  // is used in error messages only.
  static absl::StatusOr<std::unique_ptr<Reader>> FromBuffer(
      absl::Span<const uint8_t> bytes, std::string name = "<buffer>");

  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const std::string& name() const { return name_; }
  absl::Span<const uint8_t> bytes() const { return bytes_; }
  const FileHeader& header() const { return header_; }
  const std::vector<SectionInfo>& sections() const { return sections_; }
  const std::vector<MetaEntry>& metadata() const { return metadata_; }
  // Returns the metadata value of `key` or nullptr (valid while *this lives).
  const MetaValue* FindMeta(const std::string& key) const;
  absl::Span<const uint32_t> table() const { return table_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // Index of the tensor called `name`, or -1.
  int FindTensor(const std::string& name) const;

  // The encoded bytes of chunk `c` of tensor `t` (a view into the file), or
  // an empty span when either index is out of range.
  absl::Span<const uint8_t> ChunkBytes(size_t t, size_t c) const;

  // Decodes chunk `c` of tensor `t` into `out` (exactly its decoded_size
  // bytes). Verifies the chunk checksum first when `verify_checksum`.
  absl::Status DecodeChunk(size_t t, size_t c, absl::Span<uint8_t> out,
                           bool verify_checksum = true) const;

  // Decodes all of tensor `t` into `out` (exactly byte_size bytes).
  absl::Status DecodeTensor(size_t t, absl::Span<uint8_t> out,
                            bool verify_checksum = true) const;

  // Decodes tensor `t` and converts it to float32 (dequantizing uint8
  // storage, converting RAW storage with RawToFloat) into `out` (exactly
  // numel values).
  absl::Status ReadFloat(size_t t, absl::Span<float> out,
                         bool verify_checksum = true) const;

  // When tensor `t` is stored uncompressed in one contiguous range, returns
  // that range of the mapping (usable in place); otherwise an empty span.
  absl::Span<const uint8_t> InPlace(size_t t) const;

  // Full verification: every section checksum (including DATA), zero
  // padding between sections and chunks, and every chunk's checksum and
  // decode, on `threads` threads (0: all cores). Returns the first problem
  // in that order, whatever the thread count.
  absl::Status Verify(unsigned threads = 1) const;

 private:
  Reader() = default;
  absl::Status Parse();
  absl::Status ParseDirectory();
  absl::Status ParseMetadata(const SectionInfo& s);
  absl::Status ParseTable(const SectionInfo& s);
  absl::Status ParseIndex(const SectionInfo& s, const SectionInfo& data);
  absl::Status ChunkError(size_t t, size_t c, const absl::Status& s) const;
  absl::Status VerifySections() const;
  absl::Status VerifyPadding() const;

  std::string name_;
  struct Mapping;
  std::unique_ptr<Mapping> mapping_;
  absl::Span<const uint8_t> bytes_;
  FileHeader header_;
  std::vector<SectionInfo> sections_;
  std::vector<MetaEntry> metadata_;
  std::vector<uint32_t> table_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<std::string, int> by_name_;
};

}  // namespace tqm

#endif  // TQM_READER_H_
