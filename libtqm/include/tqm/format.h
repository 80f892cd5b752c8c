// On-disk constants of the .tqm format, version 1 (spec/FORMAT.md).
//
// Every value in this header is FROZEN: it is written into files that already
// exist. Never change a value; never reuse a retired id (leave it commented
// out with the version that retired it). New ids are only ever added.

#ifndef TQM_FORMAT_H_
#define TQM_FORMAT_H_

#include <cstddef>
#include <cstdint>

namespace tqm {
namespace format {

// File magic: 0x89 'T' 'Q' 'M' CR LF SUB LF. The high byte catches 7-bit
// transports, CR LF and LF catch newline translation, SUB stops `type` on DOS.
inline constexpr uint8_t kMagic[8] = {0x89, 'T', 'Q', 'M', 0x0D, 0x0A, 0x1A, 0x0A};

inline constexpr uint16_t kMajorVersion = 1;
// 1.0: stored and seqtable codecs. 1.1: adds the zstd, rANS and Huffman
// codecs (ids 2, 3, 4). 1.2: adds the lanes codec (id 5). 1.3: adds the
// extended tensor records behind kHeaderFlagExtendedTensors (bit widths,
// group parameters, verbatim storage, more dtypes, 0-d and empty tensors).
// Writers record the lowest minor version whose features the file uses.
inline constexpr uint16_t kMinorVersion = 3;

// Fixed header at offset 0.
inline constexpr size_t kHeaderSize = 64;
// Bytes of the header covered by its own checksum (everything before it).
inline constexpr size_t kHeaderChecksummedSize = 56;

// Every section and every chunk starts at a multiple of this.
inline constexpr uint64_t kAlignment = 64;

// Header flags. A reader rejects any set bit it does not know.
// 1.3: the tensor records use the extensions of version 1.3: the `bits`
// field, storages U8_GROUP and RAW, source dtypes 5-14, ndim 0 and zero
// dimensions. Set only when some tensor needs one of them.
inline constexpr uint32_t kHeaderFlagExtendedTensors = 1u << 0;
inline constexpr uint32_t kKnownHeaderFlags = kHeaderFlagExtendedTensors;

// Section directory entry.
inline constexpr size_t kSectionEntrySize = 32;
inline constexpr uint32_t kSectionFlagRequired = 1u << 0;
inline constexpr uint32_t kKnownSectionFlags = kSectionFlagRequired;

enum SectionId : uint32_t {
  kSectionMetadata = 1,
  kSectionTable = 2,
  kSectionTensorIndex = 3,
  kSectionData = 4,
};

// Metadata value types.
enum MetaType : uint8_t {
  kMetaInt64 = 1,
  kMetaFloat64 = 2,
  kMetaString = 3,
  kMetaBytes = 4,
};

// Element type of a tensor in the file it came from. Informational for the
// F32 and U8 storages; the element type of RAW storage. Values 5-14 are
// valid only in files with kHeaderFlagExtendedTensors (1.3).
enum SourceDType : uint8_t {
  kDTypeF32 = 1,
  kDTypeF16 = 2,
  kDTypeBF16 = 3,
  kDTypeQ8_0 = 4,  // GGUF Q8_0 blocks (imported, dequantized before packing)
  kDTypeF64 = 5,   // 1.3
  kDTypeI8 = 6,    // 1.3
  kDTypeI16 = 7,   // 1.3
  kDTypeI32 = 8,   // 1.3
  kDTypeI64 = 9,   // 1.3
  kDTypeU8 = 10,   // 1.3
  kDTypeU16 = 11,  // 1.3
  kDTypeU32 = 12,  // 1.3
  kDTypeU64 = 13,  // 1.3
  kDTypeBool = 14, // 1.3: one byte, 0 or 1
};
inline constexpr uint8_t kMaxDTypeV12 = kDTypeQ8_0;
inline constexpr uint8_t kMaxDType = kDTypeBool;

// How a tensor's bytes are stored (what its chunks decode to).
enum Storage : uint8_t {
  kStorageF32 = 1,          // little-endian float32 values, unquantized
  kStorageU8Tensor = 2,     // uint8, one affine (scale, zero) per tensor
  kStorageU8Row = 3,        // uint8, one affine (scale, zero) per row (dims[0])
  // 1.3 (kHeaderFlagExtendedTensors): uint8, one affine pair per group of
  // `group_size` consecutive elements along the last dimension.
  kStorageU8Group = 4,
  // 1.3: the source's bytes verbatim, elements of `source_dtype`.
  kStorageRaw = 5,
};
inline constexpr uint8_t kMaxStorageV12 = kStorageU8Row;
inline constexpr uint8_t kMaxStorage = kStorageRaw;
// 1.3: bit widths of quantized codes (the `bits` field).
inline constexpr uint8_t kMinBits = 1;
inline constexpr uint8_t kMaxBits = 8;
// 1.3: U8_GROUP group sizes, 1 to kMaxGroupSize.
inline constexpr uint32_t kMaxGroupSize = 1u << 16;

// Chunk codecs. A reader rejects (UnimplementedError) a file or chunk that
// uses a codec it does not implement. Ids are never reused.
enum Codec : uint8_t {
  kCodecStored = 0,    // the decoded bytes, verbatim
  kCodecSeqTable = 1,  // uint16 codes into the file's sequence table
  kCodecZstd = 2,      // 1.1: one zstd frame
  kCodecRans = 3,      // 1.1: interleaved order-0 rANS
  kCodecHuffman = 4,   // 1.1: multi-stream canonical Huffman
  kCodecLanes = 5,     // 1.2: Huffman-coded high bits in 16-wide lanes, raw low bits
};

// Sequence table: codes 0..N-1 index it; kEscape is never a table code;
// codes N..0xFFFE are invalid.
inline constexpr uint16_t kEscape = 0xFFFF;
inline constexpr uint32_t kMaxTableEntries = 65535;
inline constexpr size_t kTableHeaderSize = 8;

// Tensor index.
inline constexpr size_t kIndexHeaderSize = 8;
inline constexpr size_t kChunkRecordSize = 32;
inline constexpr uint32_t kMaxNameLength = 1024;
inline constexpr uint32_t kMaxDims = 8;
inline constexpr int32_t kNoLayer = -1;
// A chunk decodes to at most this many bytes: this bounds any allocation a
// reader makes for one chunk, whatever the file says.
inline constexpr uint32_t kMaxChunkDecodedSize = 1u << 22;  // 4 MiB
// Default chunk size used by writers: 256 Ki weights of int8. (Any size up to
// kMaxChunkDecodedSize is valid; this is a writer default, not a format
// constant.) Measured on quantized Gaussian weights: the Huffman decoder runs
// 16 % faster on 256 KiB chunks than on 64 KiB ones (2.70 vs 2.32 GB/s per
// core; per-chunk table and stream set-up), 1 MiB adds 1 %; a layer still
// splits into dozens of chunks for parallel decode.
inline constexpr uint32_t kDefaultChunkSize = 1u << 18;

// Metadata.
inline constexpr size_t kMetaHeaderSize = 8;
inline constexpr uint32_t kMaxKeyLength = 256;

}  // namespace format
}  // namespace tqm

#endif  // TQM_FORMAT_H_
