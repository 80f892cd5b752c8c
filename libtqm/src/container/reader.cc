// Reader: maps a .tqm file and validates its header, directory, metadata,
// table and tensor index before handing out anything (spec/FORMAT.md,
// "Validation", rules R1-R58); chunks are checked when decoded (R59-R62) and
// the whole file by Verify() (R63-R66). Comments cite the rule each check
// implements; tests/conformance_test.cc breaks each rule in turn.

#include "tqm/reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/base/casts.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "base/checksum.h"
#include "base/cursor.h"
#include "container/layout.h"
#include "interop/import_internal.h"
#include "tqm/codec.h"
#include "tqm/source.h"
#include "tqm/status.h"

namespace tqm {

namespace bip = boost::interprocess;

struct Reader::Mapping {
  bip::file_mapping file;
  bip::mapped_region region;
};

namespace {

// Every error names where it is ("<file>: <structure>[: <record>]"), the
// field and the problem, and the absolute file offset, in the form Cursor
// uses: "<where>: <what> at offset <off>".
std::string At(const std::string& where, const std::string& what, uint64_t off) {
  return absl::StrFormat("%s: %s at offset %d", where, what, off);
}
absl::Status Loss(const std::string& where, const std::string& what, uint64_t off) {
  return absl::DataLossError(At(where, what, off));
}
// A cursor over the bytes [from, end) of the file.
Cursor Sub(absl::Span<const uint8_t> file, uint64_t from, uint64_t end,
           std::string where) {
  return Cursor(file.subspan(from, end - from), from, std::move(where));
}

}  // namespace

uint64_t TensorInfo::element_size() const {
  switch (storage) {
    case format::kStorageF32:
      return 4;
    case format::kStorageRaw:
      return DTypeSize(source_dtype);
    default:
      return 1;
  }
}

uint64_t TensorInfo::ParamIndex(uint64_t e) const {
  switch (storage) {
    case format::kStorageU8Row:
      return e / (numel / dims[0]);
    case format::kStorageU8Group: {
      const uint64_t cols = dims.back();
      const uint64_t per_row = (cols + group_size - 1) / group_size;
      return e / cols * per_row + e % cols / group_size;
    }
    default:
      return 0;
  }
}

uint64_t TensorInfo::ParamRun(uint64_t e) const {
  switch (storage) {
    case format::kStorageU8Row: {
      const uint64_t row = numel / dims[0];
      return row - e % row;
    }
    case format::kStorageU8Group: {
      const uint64_t c = e % dims.back();
      return std::min<uint64_t>(group_size - c % group_size, dims.back() - c);
    }
    default:
      return numel - e;
  }
}

void DequantizeRange(const TensorInfo& t, uint64_t first, absl::Span<const uint8_t> q,
                     absl::Span<float> out) {
  for (size_t k = 0; k < q.size();) {
    const uint64_t e = first + k;
    const size_t n = std::min<uint64_t>(t.ParamRun(e), q.size() - k);
    DequantizeAffine(q.subspan(k, n), t.affine[t.ParamIndex(e)], out.subspan(k, n));
    k += n;
  }
}

void RawToFloat(format::SourceDType dtype, const uint8_t* in, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    switch (dtype) {
      case format::kDTypeF32:
        out[i] = absl::bit_cast<float>(LoadLE32(in + 4 * i));
        break;
      case format::kDTypeF16:
        out[i] = internal::HalfToFloat(LoadLE16(in + 2 * i));
        break;
      case format::kDTypeBF16:
        out[i] = internal::BFloat16ToFloat(LoadLE16(in + 2 * i));
        break;
      case format::kDTypeF64:
        out[i] = static_cast<float>(absl::bit_cast<double>(LoadLE64(in + 8 * i)));
        break;
      case format::kDTypeI8:
        out[i] = static_cast<int8_t>(in[i]);
        break;
      case format::kDTypeI16:
        out[i] = static_cast<int16_t>(LoadLE16(in + 2 * i));
        break;
      case format::kDTypeI32:
        out[i] = static_cast<float>(static_cast<int32_t>(LoadLE32(in + 4 * i)));
        break;
      case format::kDTypeI64:
        out[i] = static_cast<float>(static_cast<int64_t>(LoadLE64(in + 8 * i)));
        break;
      case format::kDTypeU8:
        out[i] = in[i];
        break;
      case format::kDTypeU16:
        out[i] = LoadLE16(in + 2 * i);
        break;
      case format::kDTypeU32:
        out[i] = static_cast<float>(LoadLE32(in + 4 * i));
        break;
      case format::kDTypeU64:
        out[i] = static_cast<float>(LoadLE64(in + 8 * i));
        break;
      case format::kDTypeBool:
        out[i] = in[i] != 0 ? 1.0f : 0.0f;
        break;
      case format::kDTypeQ8_0:
        out[i] = 0.0f;  // never RAW (the reader rejects it)
        break;
    }
  }
}

Reader::~Reader() = default;

absl::StatusOr<std::unique_ptr<Reader>> Reader::Open(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, "cannot open", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: not a regular file", path));
  }
  if (static_cast<uint64_t>(st.st_size) < format::kHeaderSize) {
    return absl::DataLossError(absl::StrFormat(
        "%s: file is %d bytes, shorter than the %d-byte header (truncated?)", path,
        st.st_size, format::kHeaderSize));
  }
  std::unique_ptr<Reader> r(new Reader());
  r->name_ = path;
  r->mapping_ = std::make_unique<Mapping>();
  try {
    r->mapping_->file = bip::file_mapping(path.c_str(), bip::read_only);
    r->mapping_->region = bip::mapped_region(r->mapping_->file, bip::read_only);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrFormat("%s: cannot map: %s", path, e.what()));
  }
  r->bytes_ = absl::Span<const uint8_t>(
      static_cast<const uint8_t*>(r->mapping_->region.get_address()),
      r->mapping_->region.get_size());
  TQM_RETURN_IF_ERROR(r->Parse());
  return r;
}

absl::StatusOr<std::unique_ptr<Reader>> Reader::FromBuffer(
    absl::Span<const uint8_t> bytes, std::string name) {
  std::unique_ptr<Reader> r(new Reader());
  r->name_ = std::move(name);
  r->bytes_ = bytes;
  TQM_RETURN_IF_ERROR(r->Parse());
  return r;
}

// Validation order (spec "Validation"): R1, R2, R3 first and in that order;
// each structure's checksum before its contents; each field's own rules
// before the field is used to locate or size anything.
absl::Status Reader::Parse() {
  const uint64_t size = bytes_.size();
  const std::string hdr = name_ + ": header";
  // R1.
  if (size < format::kHeaderSize) {
    return absl::DataLossError(absl::StrFormat(
        "%s: file is %d bytes, shorter than the %d-byte header (truncated?)", name_, size,
        format::kHeaderSize));
  }
  // R2 to R9: R3 (another major version) before the header checksum.
  Cursor c(bytes_, 0, hdr);
  layout::Header h;
  TQM_RETURN_IF_ERROR(layout::Decode(c, &h));
  header_.major = h.major_version;
  header_.minor = h.minor_version;
  header_.flags = h.flags;
  header_.file_size = h.file_size;
  header_.directory_offset = h.directory_offset;
  header_.section_count = h.section_count;
  // R10.
  const uint64_t dir_off = header_.directory_offset;
  const uint64_t dir_len = uint64_t{header_.section_count} * layout::SectionEntry::kSize;
  if (dir_off > size || dir_len > size - dir_off) {
    return Loss(
        hdr,
        absl::StrFormat("section directory (directory_offset %d, %d entries of 32 "
                        "bytes) extends past the end of the %d-byte file",
                        dir_off, header_.section_count, size),
        layout::Header::kDirectoryOffsetAt);
  }
  // R11.
  const uint64_t dir_sum = Checksum(bytes_.subspan(dir_off, dir_len));
  if (dir_sum != h.directory_checksum) {
    return Loss(
        name_ + ": section directory",
        absl::StrFormat("checksum %016x does not match directory_checksum %016x (header "
                        "offset 40)",
                        dir_sum, h.directory_checksum),
        dir_off);
  }
  TQM_RETURN_IF_ERROR(ParseDirectory());

  // R19 (presence).
  const SectionInfo* found[5] = {};
  for (const SectionInfo& s : sections_) {
    if (s.id >= format::kSectionMetadata && s.id <= format::kSectionData)
      found[s.id] = &s;
  }
  for (uint32_t id = format::kSectionMetadata; id <= format::kSectionData; ++id) {
    if (found[id] == nullptr) {
      return Loss(
          name_ + ": section directory",
          absl::StrFormat("required section %s is missing", layout::SectionName(id)),
          dir_off);
    }
  }
  const SectionInfo& meta = *found[format::kSectionMetadata];
  const SectionInfo& table = *found[format::kSectionTable];
  const SectionInfo& index = *found[format::kSectionTensorIndex];
  const SectionInfo& data = *found[format::kSectionData];
  // R20. DATA is checked by Verify() (R63) and chunk by chunk (R59).
  for (const SectionInfo* s : {&meta, &table, &index}) {
    const uint64_t got = Checksum(bytes_.subspan(s->offset, s->length));
    if (got != s->checksum) {
      return Loss(absl::StrFormat("%s: section %s", name_, layout::SectionName(s->id)),
                  absl::StrFormat("checksum %016x in the directory does not match its %d "
                                  "bytes (%016x)",
                                  s->checksum, s->length, got),
                  s->offset);
    }
  }
  TQM_RETURN_IF_ERROR(ParseMetadata(meta));
  TQM_RETURN_IF_ERROR(ParseTable(table));
  TQM_RETURN_IF_ERROR(ParseIndex(index, data));
  return absl::OkStatus();
}

absl::Status Reader::ParseDirectory() {
  const uint64_t size = bytes_.size();
  const uint64_t dir_off = header_.directory_offset;
  const uint64_t dir_len = uint64_t{header_.section_count} * layout::SectionEntry::kSize;
  struct Range {
    uint64_t offset, length;
    std::string what;
  };
  std::vector<Range> ranges;
  ranges.push_back({dir_off, dir_len, "the section directory"});
  absl::flat_hash_set<uint32_t> seen;
  for (uint32_t i = 0; i < header_.section_count; ++i) {
    const uint64_t e = dir_off + uint64_t{i} * layout::SectionEntry::kSize;
    const std::string where = absl::StrFormat("%s: section directory entry %d", name_, i);
    Cursor c(bytes_.subspan(e, layout::SectionEntry::kSize), e, where);
    layout::SectionEntry entry;
    // R12 to R17, R19 (flag); R13 here.
    TQM_RETURN_IF_ERROR(layout::Decode(c, size, &entry, [&](uint32_t id) {
      if (seen.insert(id).second) return absl::OkStatus();
      return Loss(
          where, absl::StrFormat("section %s appears twice", layout::SectionName(id)), e);
    }));
    SectionInfo s;
    s.id = entry.id;
    s.flags = entry.flags;
    s.offset = entry.offset;
    s.length = entry.length;
    s.checksum = entry.checksum;
    ranges.push_back({s.offset, s.length, "section " + layout::SectionName(s.id)});
    sections_.push_back(s);
  }
  // R18. Empty ranges overlap nothing (spec "Offsets and ranges"); among
  // non-empty ranges sorted by offset, any overlap shows between neighbours.
  ranges.erase(std::remove_if(ranges.begin(), ranges.end(),
                              [](const Range& r) { return r.length == 0; }),
               ranges.end());
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Range& p = ranges[i - 1];
    const Range& q = ranges[i];
    if (q.offset - p.offset < p.length) {
      return Loss(
          name_ + ": section directory",
          absl::StrFormat("%s (offset %d, length %d) overlaps %s (offset %d, length %d)",
                          q.what, q.offset, q.length, p.what, p.offset, p.length),
          q.offset);
    }
  }
  return absl::OkStatus();
}

absl::Status Reader::ParseMetadata(const SectionInfo& s) {
  const uint64_t end = s.offset + s.length;
  const std::string sec = name_ + ": METADATA";
  Cursor h = Sub(bytes_, s.offset, end, sec);
  // R21.
  layout::SectionHead head;
  TQM_RETURN_IF_ERROR(layout::Decode(h, "count", &head));
  const uint32_t count = head.count;
  // R22: every entry takes at least 8 bytes; cap the count before reserving.
  if (count > h.remaining() / layout::kMinMetaEntrySize) {
    return Loss(
        sec,
        absl::StrFormat("count %d exceeds the %d entries of at least 8 bytes that the "
                        "%d-byte section can hold",
                        count, h.remaining() / layout::kMinMetaEntrySize, s.length),
        s.offset);
  }
  // Reserve only what a small file needs: the count is not yet backed by
  // parsed entries, and an entry struct is larger than its smallest encoding.
  metadata_.reserve(std::min<uint32_t>(count, 256));
  absl::flat_hash_set<std::string> keys;
  uint64_t pos = h.offset();
  for (uint32_t i = 0; i < count; ++i) {
    Cursor c = Sub(bytes_, pos, end, absl::StrFormat("%s: entry %d", sec, i));
    MetaEntry m;
    // R23 to R26; R27 here.
    TQM_RETURN_IF_ERROR(layout::Decode(
        c, &m, [&](const Cursor& at, const std::string& key, uint64_t key_off) {
          if (keys.insert(key).second) return absl::OkStatus();
          return Loss(at.context(), "key appears twice", key_off);
        }));
    pos = c.offset();
    metadata_.push_back(std::move(m));
  }
  // R28.
  if (pos != end) {
    return Loss(
        sec,
        absl::StrFormat("%d bytes remain after the last of %d entries", end - pos, count),
        pos);
  }
  return absl::OkStatus();
}

absl::Status Reader::ParseTable(const SectionInfo& s) {
  const std::string sec = name_ + ": TABLE";
  Cursor c = Sub(bytes_, s.offset, s.offset + s.length, sec);
  // R30.
  layout::SectionHead head;
  TQM_RETURN_IF_ERROR(layout::Decode(c, "count", &head));
  const uint32_t n = head.count;
  // R31.
  if (n > format::kMaxTableEntries) {
    return Loss(sec,
                absl::StrFormat("count %d exceeds the %d codes a table can have", n,
                                format::kMaxTableEntries),
                s.offset);
  }
  // R32.
  if (c.remaining() != uint64_t{n} * 4) {
    return Loss(
        sec,
        absl::StrFormat("section length %d is not 8 + 4 * count (count %d)", s.length, n),
        s.offset);
  }
  absl::Span<const uint8_t> entries;
  TQM_RETURN_IF_ERROR(c.Bytes(uint64_t{n} * 4, &entries, "entries"));
  table_.resize(n);
  if (n) std::memcpy(table_.data(), entries.data(), entries.size());
  // R33 (duplicate entries) is optional and not checked: duplicates do not
  // make decoding ambiguous.
  return absl::OkStatus();
}

absl::Status Reader::ParseIndex(const SectionInfo& s, const SectionInfo& data) {
  const uint64_t end = s.offset + s.length;
  const std::string sec = name_ + ": TENSOR_INDEX";
  Cursor h = Sub(bytes_, s.offset, end, sec);
  // R34.
  layout::SectionHead head;
  TQM_RETURN_IF_ERROR(layout::Decode(h, "tensor_count", &head));
  const uint32_t count = head.count;
  // R35.
  const bool ext = (header_.flags & format::kHeaderFlagExtendedTensors) != 0;
  const uint64_t min_record =
      ext ? layout::TensorRecord::kMinSizeExtended : layout::TensorRecord::kMinSize;
  if (count > h.remaining() / min_record) {
    return Loss(sec,
                absl::StrFormat(
                    "tensor_count %d exceeds the %d records of at least %d bytes "
                    "that the %d-byte section can hold",
                    count, h.remaining() / min_record, min_record, s.length),
                s.offset);
  }
  // As for metadata: grow with the records actually parsed.
  tensors_.reserve(std::min<uint32_t>(count, 1024));
  by_name_.reserve(std::min<uint32_t>(count, 1024));
  struct Span64 {
    uint64_t offset, length;
    uint32_t tensor, chunk;
  };
  std::vector<Span64> chunk_ranges;
  uint64_t pos = h.offset();
  layout::TensorRecord rec;
  for (uint32_t i = 0; i < count; ++i) {
    Cursor c = Sub(bytes_, pos, end, absl::StrFormat("%s: tensor %d", sec, i));
    // R36 to R48, R86 to R88; R40 here.
    TQM_RETURN_IF_ERROR(layout::Decode(
        c, ext, &rec, [&](const Cursor& at, const std::string& name, uint64_t name_off) {
          if (by_name_.emplace(name, static_cast<int>(i)).second) return absl::OkStatus();
          return Loss(at.context(), "name is the name of an earlier tensor", name_off);
        }));
    TensorInfo t;
    t.name = std::move(rec.name);
    t.source_dtype = static_cast<format::SourceDType>(rec.source_dtype);
    t.storage = static_cast<format::Storage>(rec.storage);
    t.dims = std::move(rec.dims);
    t.layer = rec.layer;
    t.bits = !t.quantized() ? 0 : (ext ? rec.bits : 8);
    t.group_size = rec.group_size;
    t.affine = std::move(rec.params);
    t.numel = rec.numel;
    t.byte_size = rec.byte_size;
    const uint64_t cc_off = c.offset() - layout::TensorRecord::kTailSize;  // for R57
    const layout::ChunkContext in_data{0, data.offset, data.length};
    t.chunks.resize(rec.chunk_count);
    uint64_t decoded = 0;
    for (uint32_t k = 0; k < rec.chunk_count; ++k) {
      const uint64_t r = c.offset();
      layout::ChunkRecord cr;
      layout::ChunkContext ctx = in_data;
      ctx.index = k;
      // R50 to R56.
      TQM_RETURN_IF_ERROR(layout::Decode(c, ctx, &cr));
      ChunkInfo& ch = t.chunks[k];
      ch.codec = cr.codec;
      ch.decoded_size = cr.decoded_size;
      ch.offset = cr.offset;
      ch.encoded_size = cr.encoded_size;
      ch.checksum = cr.checksum;
      // R57 (a running check: no sum can exceed the byte size).
      if (ch.decoded_size > t.byte_size - decoded) {
        return Loss(
            layout::ChunkWhere(c, k),
            absl::StrFormat("chunks 0-%d decode to more than the tensor's %d bytes", k,
                            t.byte_size),
            r + layout::ChunkRecord::kDecodedSizeAt);
      }
      ch.decoded_offset = decoded;
      decoded += ch.decoded_size;
      t.encoded_size += ch.encoded_size;
      chunk_ranges.push_back({ch.offset, ch.encoded_size, i, k});
    }
    // R57.
    if (decoded != t.byte_size) {
      return Loss(c.context(),
                  absl::StrFormat("%d chunks decode to %d bytes but the tensor has %d",
                                  rec.chunk_count, decoded, t.byte_size),
                  cc_off);
    }
    pos = c.offset();
    tensors_.push_back(std::move(t));
  }
  // R49.
  if (pos != end) {
    return Loss(sec,
                absl::StrFormat("%d bytes remain after the last of %d tensor records",
                                end - pos, count),
                pos);
  }
  // R58. Chunks are never empty (R53), so neighbours in offset order suffice.
  std::sort(chunk_ranges.begin(), chunk_ranges.end(),
            [](const Span64& a, const Span64& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < chunk_ranges.size(); ++i) {
    const Span64& p = chunk_ranges[i - 1];
    const Span64& q = chunk_ranges[i];
    if (q.offset - p.offset < p.length) {
      return Loss(
          sec,
          absl::StrFormat("chunk %d of tensor '%s' (offset %d, %d bytes) overlaps chunk "
                          "%d of tensor '%s' (offset %d, %d bytes)",
                          q.chunk, absl::CHexEscape(tensors_[q.tensor].name), q.offset,
                          q.length, p.chunk, absl::CHexEscape(tensors_[p.tensor].name),
                          p.offset, p.length),
          q.offset);
    }
  }
  return absl::OkStatus();
}

const MetaValue* Reader::FindMeta(const std::string& key) const {
  return tqm::FindMeta(metadata_, key);
}

int Reader::FindTensor(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? -1 : it->second;
}

absl::Span<const uint8_t> Reader::ChunkBytes(size_t t, size_t c) const {
  // Public: an index out of range is a caller error, not undefined behaviour.
  if (t >= tensors_.size() || c >= tensors_[t].chunks.size()) return {};
  const ChunkInfo& ch = tensors_[t].chunks[c];
  return bytes_.subspan(ch.offset, ch.encoded_size);
}

absl::Status Reader::ChunkError(size_t t, size_t c, const absl::Status& s) const {
  const ChunkInfo& ch = tensors_[t].chunks[c];
  return absl::Status(
      s.code(),
      absl::StrFormat("%s: DATA: tensor '%s' chunk %d (offset %d, %d bytes): %s", name_,
                      absl::CHexEscape(tensors_[t].name), c, ch.offset, ch.encoded_size,
                      s.message()));
}

absl::Status Reader::DecodeChunk(size_t t, size_t c, absl::Span<uint8_t> out,
                                 bool verify_checksum) const {
  if (t >= tensors_.size() || c >= tensors_[t].chunks.size()) {
    return absl::OutOfRangeError(
        absl::StrFormat("%s: no chunk %d of tensor %d", name_, c, t));
  }
  const ChunkInfo& ch = tensors_[t].chunks[c];
  if (out.size() != ch.decoded_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: output buffer of %d bytes for a chunk of %d", name_,
                        out.size(), ch.decoded_size));
  }
  auto in = ChunkBytes(t, c);
  if (verify_checksum) {
    uint64_t sum = Checksum(in);
    if (sum != ch.checksum) {
      // R59.
      return ChunkError(t, c,
                        absl::DataLossError(absl::StrFormat(
                            "chunk checksum %016x does not match its encoded bytes "
                            "(%016x)",
                            ch.checksum, sum)));
    }
  }
  // R60-R62.
  absl::Status s = DecodeChunkBytes(ch.codec, in, table_, out);
  if (!s.ok()) return ChunkError(t, c, s);
  return absl::OkStatus();
}

absl::Status Reader::DecodeTensor(size_t t, absl::Span<uint8_t> out,
                                  bool verify_checksum) const {
  if (t >= tensors_.size()) {
    return absl::OutOfRangeError(absl::StrFormat("%s: no tensor %d", name_, t));
  }
  const TensorInfo& ti = tensors_[t];
  if (out.size() != ti.byte_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: tensor '%s' needs %d bytes, buffer has %d", name_, ti.name,
                        ti.byte_size, out.size()));
  }
  for (size_t c = 0; c < ti.chunks.size(); ++c) {
    const ChunkInfo& ch = ti.chunks[c];
    TQM_RETURN_IF_ERROR(DecodeChunk(t, c, out.subspan(ch.decoded_offset, ch.decoded_size),
                                    verify_checksum));
  }
  return absl::OkStatus();
}

absl::Status Reader::ReadFloat(size_t t, absl::Span<float> out,
                               bool verify_checksum) const {
  if (t >= tensors_.size()) {
    return absl::OutOfRangeError(absl::StrFormat("%s: no tensor %d", name_, t));
  }
  const TensorInfo& ti = tensors_[t];
  if (out.size() != ti.numel) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: tensor '%s' has %d values, buffer has %d", name_, ti.name,
                        ti.numel, out.size()));
  }
  if (ti.storage == format::kStorageF32) {
    return DecodeTensor(
        t, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size() * 4),
        verify_checksum);
  }
  std::vector<uint8_t> q(ti.byte_size);
  TQM_RETURN_IF_ERROR(DecodeTensor(t, absl::MakeSpan(q), verify_checksum));
  if (ti.raw()) {
    RawToFloat(ti.source_dtype, q.data(), ti.numel, out.data());
  } else {
    DequantizeRange(ti, 0, q, out);
  }
  return absl::OkStatus();
}

absl::Span<const uint8_t> Reader::InPlace(size_t t) const {
  if (t >= tensors_.size()) return {};
  const TensorInfo& ti = tensors_[t];
  uint64_t expect = ti.chunks.empty() ? 0 : ti.chunks[0].offset;
  for (const ChunkInfo& ch : ti.chunks) {
    if (ch.codec != format::kCodecStored || ch.offset != expect) return {};
    expect += ch.encoded_size;
  }
  if (ti.chunks.empty()) return {};
  return bytes_.subspan(ti.chunks[0].offset, ti.byte_size);
}

absl::Status Reader::VerifySections() const {
  // R63, R64: every section's checksum, including DATA and the optional
  // sections Open() skipped.
  for (const SectionInfo& s : sections_) {
    const uint64_t sum = Checksum(bytes_.subspan(s.offset, s.length));
    if (sum != s.checksum) {
      return Loss(absl::StrFormat("%s: section %s", name_, layout::SectionName(s.id)),
                  absl::StrFormat("checksum %016x in the directory does not match its %d "
                                  "bytes (%016x)",
                                  s.checksum, s.length, sum),
                  s.offset);
    }
  }
  return absl::OkStatus();
}

absl::Status Reader::VerifyPadding() const {
  // R65: every byte outside the header, the directory, the sections and
  // (inside DATA) the chunks is zero padding.
  struct Used {
    uint64_t offset, length;
    std::string what;
  };
  std::vector<Used> used;
  used.push_back({0, format::kHeaderSize, "the header"});
  used.push_back({header_.directory_offset,
                  uint64_t{header_.section_count} * format::kSectionEntrySize,
                  "the section directory"});
  for (const SectionInfo& s : sections_) {
    // DATA is covered by its chunks; the gaps between them are padding.
    if (s.id != format::kSectionData) {
      used.push_back({s.offset, s.length, "section " + layout::SectionName(s.id)});
    }
  }
  for (const TensorInfo& t : tensors_) {
    for (size_t c = 0; c < t.chunks.size(); ++c) {
      used.push_back(
          {t.chunks[c].offset, t.chunks[c].encoded_size,
           absl::StrFormat("chunk %d of tensor '%s'", c, absl::CHexEscape(t.name))});
    }
  }
  std::sort(used.begin(), used.end(),
            [](const Used& a, const Used& b) { return a.offset < b.offset; });
  uint64_t pos = 0;
  const std::string* after = nullptr;
  auto check_gap = [&](uint64_t from, uint64_t to) -> absl::Status {
    for (uint64_t p = from; p < to; ++p) {
      if (bytes_[p] != 0) {
        return Loss(
            name_ + ": padding",
            absl::StrFormat("byte after %s is 0x%02x, must be 0",
                            after ? *after : std::string("the header"), bytes_[p]),
            p);
      }
    }
    return absl::OkStatus();
  };
  for (const Used& u : used) {
    if (u.offset > pos) TQM_RETURN_IF_ERROR(check_gap(pos, u.offset));
    if (u.offset + u.length >= pos) {
      pos = u.offset + u.length;
      after = &u.what;
    }
  }
  return check_gap(pos, bytes_.size());
}

absl::Status Reader::Verify(unsigned threads) const {
  // The checks as independent items, run on `threads` threads: the section
  // checksums (one sequential pass over the file), the padding, and the
  // chunks (R66: each chunk's checksum, R59, and decode, R60-R62) in runs
  // of about 4 MiB decoded. Each chunk is hashed right before it is
  // decoded, while its bytes are in cache. The error reported is that of
  // the first failing item in this order, as a single thread finds it.
  struct Run {
    size_t t, c_begin, c_end;
  };
  std::vector<Run> runs;
  constexpr uint64_t kRunBytes = uint64_t{4} << 20;
  for (size_t t = 0; t < tensors_.size(); ++t) {
    const auto& chunks = tensors_[t].chunks;
    for (size_t c = 0; c < chunks.size();) {
      size_t e = c;
      uint64_t bytes = 0;
      while (e < chunks.size() && (e == c || bytes + chunks[e].decoded_size <= kRunBytes)) {
        bytes += chunks[e++].decoded_size;
      }
      runs.push_back({t, c, e});
      c = e;
    }
  }
  const size_t items = 2 + runs.size();
  std::vector<absl::Status> errors(items);
  std::atomic<size_t> next{0};
  std::atomic<size_t> first_error{items};
  auto work = [&] {
    std::vector<uint8_t> buf;
    for (size_t i; (i = next.fetch_add(1)) < items;) {
      if (i > first_error.load(std::memory_order_relaxed)) continue;
      absl::Status s;
      if (i == 0) {
        s = VerifySections();
      } else if (i == 1) {
        s = VerifyPadding();
      } else {
        const Run& r = runs[i - 2];
        for (size_t c = r.c_begin; c < r.c_end && s.ok(); ++c) {
          buf.resize(tensors_[r.t].chunks[c].decoded_size);
          s = DecodeChunk(r.t, c, absl::MakeSpan(buf), true);
        }
      }
      if (!s.ok()) {
        errors[i] = std::move(s);
        size_t have = first_error.load();
        while (i < have && !first_error.compare_exchange_weak(have, i)) {
        }
      }
    }
  };
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<size_t>(threads, items));
  std::vector<std::thread> pool;
  for (unsigned k = 1; k < threads; ++k) pool.emplace_back(work);
  work();
  for (std::thread& th : pool) th.join();
  const size_t f = first_error.load();
  return f < items ? errors[f] : absl::OkStatus();
}

}  // namespace tqm
