// Test and fuzz helper (never part of libtqm): finds the fields of a possibly
// hostile .tqm file by a tolerant walk of its layout, lets a test patch them,
// and recomputes the checksums that cover them. Where each field lies comes
// from libtqm's layout module (container/layout.h), the one owner of the byte
// layout; this file only decides how far a damaged file can be walked. A mutation then
// reaches the check it is aimed at instead of dying at a checksum: the bad-file catalogue
// uses it to build each bad file, fuzz_open uses it so that mutated indexes
// get past the section checksums. Every read is bounds-checked; the walk
// stops quietly where the bytes stop making sense.

#ifndef TQM_FUZZ_FILE_EDITOR_H_
#define TQM_FUZZ_FILE_EDITOR_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "base/checksum.h"  // libtqm/src: the format's XXH3-64
#include "container/layout.h"  // libtqm/src: field offsets and record sizes
#include "tqm/format.h"

namespace tqm_fuzz {

using tqm::Checksum;
namespace format = tqm::format;
namespace layout = tqm::layout;

inline absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Little-endian field access; false when [off, off + sizeof(T)) is not in `b`.
template <typename T>
bool Load(const std::string& b, uint64_t off, T* v) {
  if (off > b.size() || sizeof(T) > b.size() - off) return false;
  std::memcpy(v, b.data() + off, sizeof(T));
  return true;
}
template <typename T>
bool Store(std::string* b, uint64_t off, T v) {
  if (off > b->size() || sizeof(T) > b->size() - off) return false;
  std::memcpy(&(*b)[off], &v, sizeof(T));
  return true;
}

// Where things are. All offsets are absolute file offsets of the field named.
struct SectionLoc {
  uint64_t entry = 0;  // directory entry (fields at layout::SectionEntry::k*At)
  uint32_t id = 0;
  uint32_t flags = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool in_file = false;  // offset/length lie inside the file
};

struct MetaLoc {
  uint64_t entry = 0;  // u16 key length
  uint64_t key = 0;
  uint16_t key_len = 0;
  uint64_t type = 0;   // u8 type
  uint8_t type_value = 0;
  uint64_t value = 0;  // value (or its u32 length for STRING/BYTES)
};

struct ChunkLoc {
  uint64_t record = 0;  // chunk record (fields at layout::ChunkRecord::k*At)
  uint8_t codec = 0;
  uint32_t decoded_size = 0;
  uint64_t offset = 0;
  uint32_t encoded_size = 0;
};

struct TensorLoc {
  uint64_t record = 0;  // u16 name length
  uint64_t name = 0;
  uint16_t name_len = 0;
  uint64_t dtype = 0, storage = 0, ndim = 0, reserved = 0, layer = 0;
  uint64_t dims = 0;  // dims[0]; dims[i] at dims + 8 i (none when ndim is 0)
  std::vector<uint64_t> dim_values;
  uint8_t storage_value = 0;
  uint64_t group = 0;   // U8_GROUP: u32 group_size, then u32 reserved; else 0
  uint32_t group_size = 0;
  uint64_t affine = 0;  // first (scale, zero) pair
  uint64_t n_affine = 0;
  uint64_t chunk_count = 0;  // u32 chunk count
  std::vector<ChunkLoc> chunks;
};

struct Layout {
  bool header_ok = false;     // at least 64 bytes
  bool directory_ok = false;  // directory range inside the file
  uint64_t directory_offset = 0;
  uint32_t section_count = 0;
  std::vector<SectionLoc> sections;
  std::vector<MetaLoc> meta;
  std::vector<TensorLoc> tensors;

  const SectionLoc* Find(uint32_t id) const {
    for (const SectionLoc& s : sections) {
      if (s.id == id && s.in_file) return &s;
    }
    return nullptr;
  }
};

namespace internal {

inline void ScanMetadata(const std::string& b, const SectionLoc& s, Layout* l) {
  uint64_t p = s.offset, end = s.offset + s.length;
  uint32_t count;
  if (!Load(b, p + layout::SectionHead::kCountAt, &count)) return;
  p += layout::SectionHead::kSize;
  for (uint32_t i = 0; i < count && p < end; ++i) {
    MetaLoc m;
    m.entry = p;
    if (!Load(b, p, &m.key_len)) return;
    const layout::MetaEntryOffsets o = layout::MetaOffsets(m.key_len);
    m.key = p + o.key;
    m.type = p + o.type;
    if (!Load(b, m.type, &m.type_value)) return;
    m.value = p + o.value;
    uint64_t size = 8;
    if (m.type_value == format::kMetaString || m.type_value == format::kMetaBytes) {
      uint32_t len;
      if (!Load(b, m.value, &len)) return;
      size = 4 + uint64_t{len};
    }
    l->meta.push_back(m);
    p = m.value + size;
  }
}

inline void ScanIndex(const std::string& b, const SectionLoc& s, Layout* l) {
  uint64_t p = s.offset;
  const uint64_t end = s.offset + s.length;
  uint32_t count;
  if (!Load(b, p + layout::SectionHead::kCountAt, &count)) return;
  p += layout::SectionHead::kSize;
  for (uint32_t i = 0; i < count && p < end; ++i) {
    TensorLoc t;
    t.record = p;
    if (!Load(b, p, &t.name_len)) return;
    // The fields up to the dimensions depend on the name's length only.
    const layout::TensorRecordOffsets head =
        layout::TensorOffsets(t.name_len, 0, 0, 0, 0);
    t.name = p + head.name;
    t.dtype = p + head.source_dtype;
    t.storage = p + head.storage;
    t.ndim = p + head.ndim;
    t.reserved = p + head.bits;
    t.layer = p + head.layer;
    t.dims = p + head.dims;
    uint8_t ndim;
    if (!Load(b, t.storage, &t.storage_value) || !Load(b, t.ndim, &ndim)) return;
    if (t.dims > end || uint64_t{ndim} * 8 > end - t.dims) return;
    for (uint8_t d = 0; d < ndim; ++d) {
      uint64_t v;
      if (!Load(b, t.dims + 8 * d, &v)) return;
      t.dim_values.push_back(v);
    }
    const layout::TensorRecordOffsets shaped =
        layout::TensorOffsets(t.name_len, ndim, t.storage_value, 0, 0);
    if (t.storage_value == format::kStorageU8Group) {
      // Format 1.3: the group size and a reserved word precede the pairs.
      // Walked whatever the header flag says (a tolerant walk).
      t.group = p + shaped.params;
      if (t.group > end || end - t.group < 8 || !Load(b, t.group, &t.group_size)) return;
    }
    t.affine = p + shaped.pairs;
    if (!layout::PairCount(t.storage_value, t.dim_values, t.group_size, &t.n_affine)) {
      return;  // not a valid shape anyway
    }
    if (t.affine > end || t.n_affine > (end - t.affine) / 8) return;
    const layout::TensorRecordOffsets o =
        layout::TensorOffsets(t.name_len, ndim, t.storage_value, t.n_affine, 0);
    t.chunk_count = p + o.chunk_count;
    uint32_t chunks;
    if (!Load(b, t.chunk_count, &chunks)) return;
    uint64_t c = p + o.chunks;
    if (c > end || chunks > (end - c) / layout::ChunkRecord::kSize) return;
    for (uint32_t k = 0; k < chunks; ++k, c += layout::ChunkRecord::kSize) {
      ChunkLoc ch;
      ch.record = c;
      if (!Load(b, c + layout::ChunkRecord::kCodecAt, &ch.codec) ||
          !Load(b, c + layout::ChunkRecord::kDecodedSizeAt, &ch.decoded_size) ||
          !Load(b, c + layout::ChunkRecord::kOffsetAt, &ch.offset) ||
          !Load(b, c + layout::ChunkRecord::kEncodedSizeAt, &ch.encoded_size)) {
        return;
      }
      t.chunks.push_back(ch);
    }
    l->tensors.push_back(std::move(t));
    p = c;
  }
}

}  // namespace internal

// Walks header, directory, metadata and tensor index as far as they make sense.
inline Layout Scan(const std::string& b) {
  Layout l;
  if (b.size() < format::kHeaderSize) return l;
  l.header_ok = true;
  Load(b, layout::Header::kDirectoryOffsetAt, &l.directory_offset);
  Load(b, layout::Header::kSectionCountAt, &l.section_count);
  const uint64_t n = l.section_count;
  if (n == 0 || n > layout::kMaxSections || l.directory_offset > b.size() ||
      n * layout::SectionEntry::kSize > b.size() - l.directory_offset) {
    return l;
  }
  l.directory_ok = true;
  for (uint64_t i = 0; i < n; ++i) {
    SectionLoc s;
    s.entry = l.directory_offset + i * layout::SectionEntry::kSize;
    Load(b, s.entry + layout::SectionEntry::kIdAt, &s.id);
    Load(b, s.entry + layout::SectionEntry::kFlagsAt, &s.flags);
    Load(b, s.entry + layout::SectionEntry::kOffsetAt, &s.offset);
    Load(b, s.entry + layout::SectionEntry::kLengthAt, &s.length);
    s.in_file = s.offset <= b.size() && s.length <= b.size() - s.offset;
    l.sections.push_back(s);
  }
  if (const SectionLoc* m = l.Find(format::kSectionMetadata)) internal::ScanMetadata(b, *m, &l);
  if (const SectionLoc* x = l.Find(format::kSectionTensorIndex)) {
    internal::ScanIndex(b, *x, &l);
  }
  return l;
}

struct FixOptions {
  bool chunks = true;         // chunk checksums in the tensor index
  bool sections = true;       // section checksums in the directory
  uint32_t skip_section = 0;  // a section id whose checksum is left as it is
  bool directory = true;      // the directory checksum in the header
  bool header = true;         // the header checksum
};

// Recomputes, innermost first, the checksums `o` names, wherever the layout
// can be found. Fields whose ranges fall outside the file are left alone.
inline void FixChecksums(std::string* b, const FixOptions& o = FixOptions()) {
  const Layout l = Scan(*b);
  if (!l.header_ok) return;
  if (o.chunks) {
    for (const TensorLoc& t : l.tensors) {
      for (const ChunkLoc& c : t.chunks) {
        if (c.offset <= b->size() && c.encoded_size <= b->size() - c.offset) {
          Store<uint64_t>(b, c.record + layout::ChunkRecord::kChecksumAt,
                          Checksum(Bytes(*b).subspan(c.offset, c.encoded_size)));
        }
      }
    }
  }
  if (o.sections) {
    for (const SectionLoc& s : l.sections) {
      if (!s.in_file || (o.skip_section != 0 && s.id == o.skip_section)) continue;
      Store<uint64_t>(b, s.entry + layout::SectionEntry::kChecksumAt,
                      Checksum(Bytes(*b).subspan(s.offset, s.length)));
    }
  }
  if (o.directory && l.directory_ok) {
    Store<uint64_t>(
        b, layout::Header::kDirectoryChecksumAt,
        Checksum(Bytes(*b).subspan(l.directory_offset,
                                   l.section_count * layout::SectionEntry::kSize)));
  }
  if (o.header) {
    Store<uint64_t>(b, layout::Header::kHeaderChecksumAt,
                    Checksum(Bytes(*b).subspan(0, format::kHeaderChecksummedSize)));
  }
}

}  // namespace tqm_fuzz

#endif  // TQM_FUZZ_FILE_EDITOR_H_
