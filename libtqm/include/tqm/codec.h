// Chunk codecs: the bytes of one chunk in, its encoded form out, and back.
// Each chunk of a .tqm file records which codec encoded it (format.h, Codec).
//
// Decoders never trust their input: they check every code and length and
// return DataLossError on anything that does not decode to exactly the
// expected number of bytes.

#ifndef TQM_CODEC_H_
#define TQM_CODEC_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "tqm/format.h"

namespace tqm {

// The file-wide sequence table: entry i is the 4-byte group that code i
// stands for, held as the uint32 whose little-endian bytes are the group.
class SeqTable {
 public:
  SeqTable() = default;
  explicit SeqTable(std::vector<uint32_t> entries);

  absl::Span<const uint32_t> entries() const { return entries_; }
  size_t size() const { return entries_.size(); }

  // Returns the code of `group`, or format::kEscape when it is not in the
  // table.
  uint16_t Lookup(uint32_t group) const {
    auto it = codes_.find(group);
    return it == codes_.end() ? format::kEscape : it->second;
  }

 private:
  std::vector<uint32_t> entries_;
  absl::flat_hash_map<uint32_t, uint16_t> codes_;
};

// Size in bytes of `in` encoded with the seqtable codec, without encoding it.
size_t SeqTableEncodedSize(absl::Span<const uint8_t> in, const SeqTable& table);

// Appends the seqtable encoding of `in` to `out`.
void EncodeSeqTable(absl::Span<const uint8_t> in, const SeqTable& table,
                    std::string* out);

// Decodes a seqtable chunk `in` into exactly `out.size()` bytes using
// `table`. Returns DataLossError when a code is >= table.size() and not the
// escape, when an escape is cut off, or when `in` has bytes left over or too
// few. `out` may be partially written on error.
absl::Status DecodeSeqTable(absl::Span<const uint8_t> in,
                            absl::Span<const uint32_t> table,
                            absl::Span<uint8_t> out);

// Straightforward reference decoder with the same contract as
// DecodeSeqTable; kept for tests and benchmarks.
absl::Status DecodeSeqTableReference(absl::Span<const uint8_t> in,
                                     absl::Span<const uint32_t> table,
                                     absl::Span<uint8_t> out);

// Decodes one chunk of any codec this build knows. Returns
// UnimplementedError for a codec id it does not know.
absl::Status DecodeChunkBytes(uint8_t codec, absl::Span<const uint8_t> in,
                              absl::Span<const uint32_t> table,
                              absl::Span<uint8_t> out);

// Human-readable codec name ("stored", "seqtable", ...; "codec-N" if unknown).
const char* CodecName(uint8_t codec);

// True when this build can decode `codec`.
bool IsKnownCodec(uint8_t codec);

}  // namespace tqm

#endif  // TQM_CODEC_H_
