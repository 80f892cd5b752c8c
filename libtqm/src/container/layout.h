// The byte layout of a .tqm file (spec/FORMAT.md): the one place that knows
// where each field of each fixed or variable-length record lies. Each record
// is a plain struct with an Encode that appends its bytes and a Decode that
// reads them through a bounds-checked Cursor and checks the rules that belong
// to the record alone (field ranges, reserved zeros, lengths backed by
// bytes), in the order of the spec's rule numbers and with the reader's error
// messages. What spans several records (uniqueness of ids, keys and names;
// ranges against each other; chunk coverage of a tensor; checksums of other
// structures) stays with the caller: the writer (writer.cc), the reader
// (reader.cc) and the test and fuzz tools that build bad files.
//
// A rule that compares a field with something outside the record (R7: the
// file's size, R17: the file, R55: the DATA section) takes that as an
// argument; a uniqueness rule (R13, R27, R40) is a callback that Decode calls
// right after the identifying field, so that the rules of one record are
// still checked, and reported, in order.

#ifndef TQM_SRC_CONTAINER_LAYOUT_H_
#define TQM_SRC_CONTAINER_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "base/cursor.h"
#include "tqm/format.h"
#include "tqm/metadata.h"
#include "tqm/quantize.h"

namespace tqm {
namespace layout {

// Upper bound on Header::section_count (spec R8): a resource limit.
inline constexpr uint32_t kMaxSections = 64;

// ---------------------------------------------------------------------------
// Header: the 64 bytes at offset 0 (spec "Header").

struct Header {
  static constexpr size_t kSize = format::kHeaderSize;
  // Field offsets.
  static constexpr uint64_t kMagicAt = 0, kMajorVersionAt = 8, kMinorVersionAt = 10,
                            kFlagsAt = 12, kFileSizeAt = 16, kDirectoryOffsetAt = 24,
                            kSectionCountAt = 32, kReserved0At = 36,
                            kDirectoryChecksumAt = 40, kReserved1At = 48,
                            kHeaderChecksumAt = 56;

  uint16_t major_version = format::kMajorVersion;
  uint16_t minor_version = 0;
  uint32_t flags = 0;
  uint64_t file_size = 0;
  uint64_t directory_offset = 0;
  uint32_t section_count = 0;
  uint32_t reserved0 = 0;
  uint64_t directory_checksum = 0;
  uint64_t reserved1 = 0;
  // Decode fills it in; Encode ignores it and writes the checksum of the 56
  // bytes it encoded before it.
  uint64_t header_checksum = 0;
};

// Appends the 64 header bytes: the magic, the fields of `h`, and the header
// checksum of the bytes before it.
void Encode(const Header& h, std::string* out);
// Decodes and checks R2 to R9 (magic, major version before the checksum,
// header checksum, flags, reserved, file size, section count, directory
// alignment). `c` spans the whole file: R7 compares file_size with its
// length. R1 (at least 64 bytes), R10 and R11 are the caller's.
absl::Status Decode(Cursor& c, Header* h);

// ---------------------------------------------------------------------------
// Section directory entry: 32 bytes (spec "Section directory").

struct SectionEntry {
  static constexpr size_t kSize = format::kSectionEntrySize;
  static constexpr uint64_t kIdAt = 0, kFlagsAt = 4, kOffsetAt = 8, kLengthAt = 16,
                            kChecksumAt = 24;

  uint32_t id = 0;
  uint32_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t checksum = 0;
};

// "METADATA (id 1)", ..., "id 9" for the others: how messages name a section.
std::string SectionName(uint32_t id);

void Encode(const SectionEntry& s, std::string* out);
// Decodes and checks R12, R13 (through `unique`, called with the id), R14,
// R15, R16, R17 (against a file of `file_size` bytes) and the REQUIRED flag
// of R19. Overlaps (R18) and presence (R19) are the caller's.
absl::Status Decode(Cursor& c, uint64_t file_size, SectionEntry* s,
                    absl::FunctionRef<absl::Status(uint32_t id)> unique);
absl::Status Decode(Cursor& c, uint64_t file_size, SectionEntry* s);

// ---------------------------------------------------------------------------
// The 8-byte head of METADATA, TABLE and TENSOR_INDEX: a u32 count, then a
// reserved u32 (R21, R30, R34).

struct SectionHead {
  static constexpr size_t kSize = 8;
  static constexpr uint64_t kCountAt = 0, kReservedAt = 4;

  uint32_t count = 0;
  uint32_t reserved = 0;
};

void Encode(const SectionHead& h, std::string* out);
// `count_field` names the count in messages ("count", "tensor_count").
absl::Status Decode(Cursor& c, const char* count_field, SectionHead* h);

// ---------------------------------------------------------------------------
// Metadata entry (spec "METADATA"): u16 key_len, key, u8 type, value.

// The smallest entry: key_len (2), a 1-byte key, type (1), and an empty
// STRING or BYTES value (its 4-byte length).
inline constexpr uint64_t kMinMetaEntrySize = 8;

// The fields of an entry, relative to its first byte.
struct MetaEntryOffsets {
  uint64_t key_len = 0, key = 2, type = 0, value = 0;
};
MetaEntryOffsets MetaOffsets(uint16_t key_len);

using MetaEntryRecord = MetaEntry;

void Encode(const MetaEntryRecord& m, std::string* out);
// Decodes and checks R23 (every read), R24, R25, R27 (through `unique`,
// called with the key and its offset once R25 holds) and R26. The cursor's
// context names the entry; from the key on, messages add the key to it.
absl::Status Decode(Cursor& c, MetaEntryRecord* m,
                    absl::FunctionRef<absl::Status(
                        const Cursor& c, const std::string& key, uint64_t key_offset)>
                        unique);
absl::Status Decode(Cursor& c, MetaEntryRecord* m);

// ---------------------------------------------------------------------------
// Tensor record (spec "Tensor record"): name, dtype, storage, ndim, bits,
// layer, dims, params, chunk_count, reserved1. Its `chunk_count` chunk
// records follow it; they are records of their own (ChunkRecord).

// The fields of a tensor record, relative to its first byte, for a name of
// `L` bytes, `D` dimensions, `P` (scale, zero) pairs and `C` chunk records.
struct TensorRecordOffsets {
  uint64_t name_len = 0, name = 2, source_dtype = 0, storage = 0, ndim = 0, bits = 0,
           layer = 0, dims = 0;
  uint64_t params = 0;  // U8_GROUP: group_size, then reserved; else the pairs
  uint64_t pairs = 0;   // the first (scale, zero) pair
  uint64_t chunk_count = 0, reserved1 = 0, chunks = 0;
  uint64_t size = 0;  // the whole record, its chunk records included
};
// The caller keeps the arguments small enough not to overflow (each is
// bounded by a section length in every use).
TensorRecordOffsets TensorOffsets(uint64_t name_len, uint64_t ndim, uint8_t storage,
                                  uint64_t pairs, uint64_t chunk_count);

// The number of (scale, zero) pairs of a tensor of `storage`: 1 for
// U8_TENSOR, dims[0] for U8_ROW, one per group of each row along the last
// dimension for U8_GROUP (R88), none otherwise; 0 where the shape leaves it
// undefined (no dimension, group_size 0). False when it overflows 64 bits.
bool PairCount(uint8_t storage, absl::Span<const uint64_t> dims, uint32_t group_size,
               uint64_t* pairs);

// Bytes per decoded element: 4 (F32), 1 (U8 storages), the dtype's (RAW).
uint64_t ElementSize(uint8_t storage, uint8_t source_dtype);

struct TensorRecord {
  // The smallest record: 18 fixed bytes, a 1-byte name, one dimension, no
  // parameters, one chunk record (R35); with EXTENDED_TENSORS an empty
  // tensor has no chunk.
  static constexpr uint64_t kMinSize = 18 + 1 + 8 + format::kChunkRecordSize;
  static constexpr uint64_t kMinSizeExtended = 18 + 1 + 8;
  // chunk_count and reserved1, the last fields before the chunk records.
  static constexpr uint64_t kTailSize = 8;

  std::string name;
  uint8_t source_dtype = format::kDTypeF32;
  uint8_t storage = format::kStorageF32;
  // The byte at 5 + name_len: `bits` with EXTENDED_TENSORS, else reserved0.
  uint8_t bits = 0;
  int32_t layer = format::kNoLayer;
  std::vector<uint64_t> dims;  // ndim = dims.size()
  uint32_t group_size = 0;     // U8_GROUP only: the params header
  uint32_t params_reserved = 0;
  std::vector<Affine> params;  // the (scale, zero) pairs
  uint32_t chunk_count = 0;
  uint32_t reserved1 = 0;

  // Set by Decode from the fields (not encoded): the element count (1 for a
  // 0-d tensor) and the byte size numel * ElementSize, below 2^62 (R47).
  uint64_t numel = 0;
  uint64_t byte_size = 0;
};

// Appends the record up to reserved1; the chunk records are the caller's.
void Encode(const TensorRecord& t, std::string* out);
// Decodes and checks R36 (every read, and the pairs and the chunk records
// backed by bytes before anything is allocated), R37, R38, R40 (through
// `unique`, called with the name and its offset), R41 to R48, R86 to R88,
// for a file whose header flags set EXTENDED_TENSORS when `extended`. Leaves
// the cursor at the first chunk record. From the name on, messages add the
// name to the cursor's context.
absl::Status Decode(Cursor& c, bool extended, TensorRecord* t,
                    absl::FunctionRef<absl::Status(
                        const Cursor& c, const std::string& name, uint64_t name_offset)>
                        unique);
absl::Status Decode(Cursor& c, bool extended, TensorRecord* t);

// ---------------------------------------------------------------------------
// Chunk record: 32 bytes (spec "Chunk record").

struct ChunkRecord {
  static constexpr size_t kSize = format::kChunkRecordSize;
  static constexpr uint64_t kCodecAt = 0, kReserved0At = 1, kDecodedSizeAt = 4,
                            kOffsetAt = 8, kEncodedSizeAt = 16, kReserved1At = 20,
                            kChecksumAt = 24;

  uint8_t codec = format::kCodecStored;
  uint32_t reserved0 = 0;  // 3 bytes: only the low 24 bits are encoded
  uint32_t decoded_size = 0;
  uint64_t offset = 0;
  uint32_t encoded_size = 0;
  uint32_t reserved1 = 0;
  uint64_t checksum = 0;
};

// What a chunk record is checked against besides its own fields.
struct ChunkContext {
  uint32_t index = 0;  // the chunk's number in its tensor, for messages
  // The DATA section, which the encoded bytes must lie in (R55).
  uint64_t data_offset = 0;
  uint64_t data_length = std::numeric_limits<uint64_t>::max();
};

void Encode(const ChunkRecord& r, std::string* out);
// Decodes and checks R50 (a codec this library implements), R51 to R56 and
// the optional seqtable size bounds. Messages name "<context>: chunk <index>".
absl::Status Decode(Cursor& c, const ChunkContext& ctx, ChunkRecord* r);

// "<cursor context>: chunk <index>": how messages name a chunk record.
std::string ChunkWhere(const Cursor& c, uint32_t index);

}  // namespace layout
}  // namespace tqm

#endif  // TQM_SRC_CONTAINER_LAYOUT_H_
