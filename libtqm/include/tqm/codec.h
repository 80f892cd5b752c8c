// Chunk codecs: the bytes of one chunk in, its encoded form out, and back.
// Each chunk of a .tqm file records which codec encoded it (format.h, Codec).
//
// Decoders never trust their input: they check every code and length and
// return DataLossError on anything that does not decode to exactly the
// expected number of bytes.

#ifndef TQM_CODEC_H_
#define TQM_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// Decodes a seqtable chunk a piece at a time, for callers that consume the
// decoded bytes from a small buffer (the runtime's fused dot products):
// the same fast loop and the same validation and messages as
// DecodeSeqTable, with payload offsets counted from the start of `in`.
//
//   SeqTableBlockDecoder dec(payload, table, decoded_size);
//   while (!dec.done()) {
//     TQM_ASSIGN_OR_RETURN(size_t k, dec.Next(absl::MakeSpan(buf)));
//     Use(buf, k);
//   }
//
// The decoder keeps pointers to `in` and `table`: both must stay valid and
// unchanged until the last call to Next().
class SeqTableBlockDecoder {
 public:
  SeqTableBlockDecoder(absl::Span<const uint8_t> in, absl::Span<const uint32_t> table,
                       size_t decoded_size);

  // Decoded bytes not yet returned by Next().
  size_t remaining() const { return 4 * groups_left_ + tail_; }

  // True once Next() has returned the last byte and checked that the
  // payload ends exactly there. A chunk of 0 bytes still needs one Next().
  bool done() const { return done_; }

  // Decodes the next k bytes of the chunk into out[0, k) and returns k:
  // remaining() when they fit in `out`, else out.size() rounded down to a
  // multiple of 4 (whole 4-byte groups). Writes nothing past out[k). The
  // call that decodes the last byte also checks that no payload bytes are
  // left over. Returns 0 once done(). Returns DataLossError (R61/R62) as
  // DecodeSeqTable would, after which every call returns that error and
  // `out` may be partially written; InvalidArgumentError when `out` is
  // smaller than 4 bytes and than remaining().
  absl::StatusOr<size_t> Next(absl::Span<uint8_t> out);

 private:
  absl::Span<const uint8_t> in_;
  absl::Span<const uint32_t> table_;
  size_t pos_ = 0;  // payload bytes consumed
  size_t groups_left_;
  size_t tail_;  // tail bytes not yet returned
  bool done_ = false;
  absl::Status status_;
};

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
