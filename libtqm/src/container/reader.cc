// Reader: maps a .tqm file and validates its header, directory, metadata,
// table and tensor index before handing out anything (spec/FORMAT.md,
// "Validation", rules R1-R58); chunks are checked when decoded (R59-R62) and
// the whole file by Verify() (R63-R66). Comments cite the rule each check
// implements; tests/conformance_test.cc breaks each rule in turn.

#include "tqm/reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <cmath>
#include <cstring>

#include "absl/base/casts.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "base/checksum.h"
#include "base/cursor.h"
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

// Upper bound on header.section_count (spec R8): a resource limit.
constexpr uint32_t kMaxSections = 64;
// The smallest metadata entry: key_len (2), a 1-byte key, type (1), and an
// empty STRING or BYTES value (its 4-byte length).
constexpr uint64_t kMinMetaEntry = 8;
// The smallest tensor record: 18 fixed bytes, a 1-byte name, one dimension,
// no parameters, one chunk record.
constexpr uint64_t kMinTensorRecord = 18 + 1 + 8 + format::kChunkRecordSize;
// With the 1.3 extensions an empty tensor has no chunk.
constexpr uint64_t kMinTensorRecordExtended = 18 + 1 + 8;
// Header field offsets (spec "Header").
constexpr uint64_t kOffMajor = 8, kOffFlags = 12, kOffFileSize = 16,
                   kOffDirectoryOffset = 24, kOffSectionCount = 32, kOffReserved0 = 36,
                   kOffReserved1 = 48, kOffHeaderChecksum = 56;

bool ValidKey(absl::Span<const uint8_t> k) {
  for (uint8_t c : k) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string AsString(absl::Span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// Every error names where it is ("<file>: <structure>[: <record>]"), the
// field and the problem, and the absolute file offset, in the form Cursor
// uses: "<where>: <what> at offset <off>".
std::string At(const std::string& where, const std::string& what, uint64_t off) {
  return absl::StrFormat("%s: %s at offset %d", where, what, off);
}
absl::Status Loss(const std::string& where, const std::string& what, uint64_t off) {
  return absl::DataLossError(At(where, what, off));
}
absl::Status Unimplemented(const std::string& where, const std::string& what,
                           uint64_t off) {
  return absl::UnimplementedError(At(where, what, off));
}
absl::Status Exhausted(const std::string& where, const std::string& what, uint64_t off) {
  return absl::ResourceExhaustedError(At(where, what, off));
}

// A cursor over the bytes [from, end) of the file.
Cursor Sub(absl::Span<const uint8_t> file, uint64_t from, uint64_t end,
           std::string where) {
  return Cursor(file.subspan(from, end - from), from, std::move(where));
}

std::string SectionName(uint32_t id) {
  switch (id) {
    case format::kSectionMetadata:
      return "METADATA (id 1)";
    case format::kSectionTable:
      return "TABLE (id 2)";
    case format::kSectionTensorIndex:
      return "TENSOR_INDEX (id 3)";
    case format::kSectionData:
      return "DATA (id 4)";
    default:
      return absl::StrFormat("id %d", id);
  }
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
  // R2.
  if (std::memcmp(bytes_.data(), format::kMagic, sizeof(format::kMagic)) != 0) {
    return Loss(hdr, "magic is not 89 54 51 4D 0D 0A 1A 0A (not a .tqm file)", 0);
  }
  // R3, before the checksum: another major version may lay its header out
  // differently, so only the magic and this field can be trusted.
  Cursor c(bytes_.subspan(0, format::kHeaderSize), 0, hdr);
  absl::Span<const uint8_t> magic;
  uint16_t major;
  TQM_RETURN_IF_ERROR(c.Bytes(sizeof(format::kMagic), &magic, "magic"));
  TQM_RETURN_IF_ERROR(c.Read(&major, "major_version"));
  if (major != format::kMajorVersion) {
    return Unimplemented(hdr,
                         absl::StrFormat("major_version %d is not supported (this reader "
                                         "reads version %d.x)",
                                         major, format::kMajorVersion),
                         kOffMajor);
  }
  // R4.
  uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes_.data() + kOffHeaderChecksum, sizeof(stored_sum));
  const uint64_t sum = Checksum(bytes_.subspan(0, format::kHeaderChecksummedSize));
  if (sum != stored_sum) {
    return Loss(
        hdr,
        absl::StrFormat("header_checksum %016x does not match the checksum of bytes "
                        "0-55 (%016x)",
                        stored_sum, sum),
        kOffHeaderChecksum);
  }
  header_.major = major;
  uint32_t reserved0;
  uint64_t directory_sum, reserved1;
  TQM_RETURN_IF_ERROR(c.Read(&header_.minor, "minor_version"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.flags, "flags"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.file_size, "file_size"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.directory_offset, "directory_offset"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.section_count, "section_count"));
  TQM_RETURN_IF_ERROR(c.Read(&reserved0, "reserved0"));
  TQM_RETURN_IF_ERROR(c.Read(&directory_sum, "directory_checksum"));
  TQM_RETURN_IF_ERROR(c.Read(&reserved1, "reserved1"));
  // R5.
  if (header_.flags & ~format::kKnownHeaderFlags) {
    return Unimplemented(
        hdr,
        absl::StrFormat("flags 0x%x has bits this reader does not know", header_.flags),
        kOffFlags);
  }
  // R6.
  if (reserved0 != 0) {
    return Loss(hdr, absl::StrFormat("reserved0 is %d, must be 0", reserved0),
                kOffReserved0);
  }
  if (reserved1 != 0) {
    return Loss(hdr, absl::StrFormat("reserved1 is %d, must be 0", reserved1),
                kOffReserved1);
  }
  // R7.
  if (header_.file_size != size) {
    return Loss(
        hdr,
        absl::StrFormat("file_size says %d bytes but the file is %d bytes (truncated "
                        "or extended)",
                        header_.file_size, size),
        kOffFileSize);
  }
  // R8.
  if (header_.section_count == 0)
    return Loss(hdr, "section_count is 0", kOffSectionCount);
  if (header_.section_count > kMaxSections) {
    return Exhausted(hdr,
                     absl::StrFormat("section_count %d exceeds the limit of %d",
                                     header_.section_count, kMaxSections),
                     kOffSectionCount);
  }
  // R9, R10.
  const uint64_t dir_off = header_.directory_offset;
  const uint64_t dir_len = uint64_t{header_.section_count} * format::kSectionEntrySize;
  if (dir_off < format::kHeaderSize || dir_off % format::kAlignment != 0) {
    return Loss(
        hdr,
        absl::StrFormat("directory_offset %d is not a multiple of 64 of at least 64",
                        dir_off),
        kOffDirectoryOffset);
  }
  if (dir_off > size || dir_len > size - dir_off) {
    return Loss(
        hdr,
        absl::StrFormat("section directory (directory_offset %d, %d entries of 32 "
                        "bytes) extends past the end of the %d-byte file",
                        dir_off, header_.section_count, size),
        kOffDirectoryOffset);
  }
  // R11.
  const uint64_t dir_sum = Checksum(bytes_.subspan(dir_off, dir_len));
  if (dir_sum != directory_sum) {
    return Loss(
        name_ + ": section directory",
        absl::StrFormat("checksum %016x does not match directory_checksum %016x (header "
                        "offset 40)",
                        dir_sum, directory_sum),
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
      return Loss(name_ + ": section directory",
                  absl::StrFormat("required section %s is missing", SectionName(id)),
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
      return Loss(absl::StrFormat("%s: section %s", name_, SectionName(s->id)),
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
  const uint64_t dir_len = uint64_t{header_.section_count} * format::kSectionEntrySize;
  struct Range {
    uint64_t offset, length;
    std::string what;
  };
  std::vector<Range> ranges;
  ranges.push_back({dir_off, dir_len, "the section directory"});
  absl::flat_hash_set<uint32_t> seen;
  for (uint32_t i = 0; i < header_.section_count; ++i) {
    const uint64_t e = dir_off + uint64_t{i} * format::kSectionEntrySize;
    const std::string where = absl::StrFormat("%s: section directory entry %d", name_, i);
    Cursor c(bytes_.subspan(e, format::kSectionEntrySize), e, where);
    SectionInfo s;
    TQM_RETURN_IF_ERROR(c.Read(&s.id, "id"));
    TQM_RETURN_IF_ERROR(c.Read(&s.flags, "flags"));
    TQM_RETURN_IF_ERROR(c.Read(&s.offset, "offset"));
    TQM_RETURN_IF_ERROR(c.Read(&s.length, "length"));
    TQM_RETURN_IF_ERROR(c.Read(&s.checksum, "checksum"));
    const std::string sec = "section " + SectionName(s.id);
    // R12.
    if (s.id == 0) return Loss(where, "section id 0 is never assigned", e);
    // R13.
    if (!seen.insert(s.id).second) {
      return Loss(where, absl::StrFormat("%s appears twice", sec), e);
    }
    // R14.
    if (s.flags & ~format::kKnownSectionFlags) {
      return Unimplemented(
          where,
          absl::StrFormat("%s: flags 0x%x has bits this reader does not know", sec,
                          s.flags),
          e + 4);
    }
    const bool known = s.id >= format::kSectionMetadata && s.id <= format::kSectionData;
    const bool required = (s.flags & format::kSectionFlagRequired) != 0;
    // R15.
    if (!known && required) {
      return Unimplemented(
          where,
          absl::StrFormat("%s is marked REQUIRED but this reader does not know it", sec),
          e);
    }
    // R16.
    if (s.offset < format::kHeaderSize || s.offset % format::kAlignment != 0) {
      return Loss(where,
                  absl::StrFormat("%s: offset %d is not a multiple of 64 of at least 64",
                                  sec, s.offset),
                  e + 8);
    }
    // R17.
    if (s.offset > size || s.length > size - s.offset) {
      return Loss(where,
                  absl::StrFormat("%s (offset %d, length %d) extends past the end of the "
                                  "%d-byte file",
                                  sec, s.offset, s.length, size),
                  e + 16);
    }
    // R19 (flag).
    if (known && !required) {
      return Loss(where, absl::StrFormat("%s lacks the REQUIRED flag", sec), e + 4);
    }
    ranges.push_back({s.offset, s.length, sec});
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
  uint32_t count;
  TQM_RETURN_IF_ERROR(h.Read(&count, "count"));
  TQM_RETURN_IF_ERROR(h.Reserved32("reserved"));
  // R22: every entry takes at least 8 bytes; cap the count before reserving.
  if (count > h.remaining() / kMinMetaEntry) {
    return Loss(
        sec,
        absl::StrFormat("count %d exceeds the %d entries of at least 8 bytes that the "
                        "%d-byte section can hold",
                        count, h.remaining() / kMinMetaEntry, s.length),
        s.offset);
  }
  // Reserve only what a small file needs: the count is not yet backed by
  // parsed entries, and an entry struct is larger than its smallest encoding.
  metadata_.reserve(std::min<uint32_t>(count, 256));
  absl::flat_hash_set<std::string> keys;
  uint64_t pos = h.offset();
  for (uint32_t i = 0; i < count; ++i) {
    const std::string where = absl::StrFormat("%s: entry %d", sec, i);
    Cursor c = Sub(bytes_, pos, end, where);
    // R23 (every read), R24.
    uint16_t key_len;
    const uint64_t key_len_off = c.offset();
    TQM_RETURN_IF_ERROR(c.Read(&key_len, "key_len"));
    if (key_len == 0) return Loss(where, "key_len is 0", key_len_off);
    if (key_len > format::kMaxKeyLength) {
      return Exhausted(where,
                       absl::StrFormat("key_len %d exceeds the limit of %d", key_len,
                                       format::kMaxKeyLength),
                       key_len_off);
    }
    absl::Span<const uint8_t> key;
    const uint64_t key_off = c.offset();
    TQM_RETURN_IF_ERROR(c.Bytes(key_len, &key, "key"));
    MetaEntry m;
    m.key = AsString(key);
    const std::string kwhere = absl::StrFormat("%s '%s'", where, absl::CHexEscape(m.key));
    // R25.
    if (!ValidKey(key)) {
      return Loss(kwhere, "key has characters outside [A-Za-z0-9._-]", key_off);
    }
    // R27.
    if (!keys.insert(m.key).second) return Loss(kwhere, "key appears twice", key_off);
    c = Sub(bytes_, c.offset(), end, kwhere);
    uint8_t type;
    const uint64_t type_off = c.offset();
    TQM_RETURN_IF_ERROR(c.Read(&type, "type"));
    switch (type) {
      case format::kMetaInt64:
        m.value.type = format::kMetaInt64;
        TQM_RETURN_IF_ERROR(c.Read(&m.value.int64, "INT64 value"));
        break;
      case format::kMetaFloat64:
        m.value.type = format::kMetaFloat64;
        TQM_RETURN_IF_ERROR(c.Read(&m.value.float64, "FLOAT64 value"));
        break;
      case format::kMetaString:
      case format::kMetaBytes: {
        m.value.type = static_cast<format::MetaType>(type);
        uint32_t len;
        absl::Span<const uint8_t> b;
        TQM_RETURN_IF_ERROR(c.Read(&len, "value length"));
        TQM_RETURN_IF_ERROR(c.Bytes(len, &b, "value"));
        m.value.bytes = AsString(b);
        break;
      }
      default:
        // R26.
        return Loss(kwhere, absl::StrFormat("type %d is not 1, 2, 3 or 4", type),
                    type_off);
    }
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
  uint32_t n;
  TQM_RETURN_IF_ERROR(c.Read(&n, "count"));
  TQM_RETURN_IF_ERROR(c.Reserved32("reserved"));
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
  uint32_t count;
  TQM_RETURN_IF_ERROR(h.Read(&count, "tensor_count"));
  TQM_RETURN_IF_ERROR(h.Reserved32("reserved"));
  // R35.
  const bool ext = (header_.flags & format::kHeaderFlagExtendedTensors) != 0;
  const uint64_t min_record = ext ? kMinTensorRecordExtended : kMinTensorRecord;
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
  for (uint32_t i = 0; i < count; ++i) {
    TensorInfo t;
    const uint64_t rec = pos;
    // R36 (every read), R37, R38.
    std::string where = absl::StrFormat("%s: tensor %d", sec, i);
    Cursor c = Sub(bytes_, pos, end, where);
    uint16_t name_len;
    TQM_RETURN_IF_ERROR(c.Read(&name_len, "name_len"));
    if (name_len == 0) return Loss(where, "name_len is 0", rec);
    if (name_len > format::kMaxNameLength) {
      return Exhausted(where,
                       absl::StrFormat("name_len %d exceeds the limit of %d", name_len,
                                       format::kMaxNameLength),
                       rec);
    }
    absl::Span<const uint8_t> name;
    TQM_RETURN_IF_ERROR(c.Bytes(name_len, &name, "name"));
    t.name = AsString(name);
    where = absl::StrFormat("%s: tensor %d '%s'", sec, i, absl::CHexEscape(t.name));
    auto nul = std::find(name.begin(), name.end(), 0);
    if (nul != name.end()) {
      return Loss(where, "name contains a 00 byte", rec + 2 + (nul - name.begin()));
    }
    // R40.
    if (!by_name_.emplace(t.name, static_cast<int>(i)).second) {
      return Loss(where, "name is the name of an earlier tensor", rec + 2);
    }
    c = Sub(bytes_, c.offset(), end, where);
    const uint64_t f =
        c.offset();  // source_dtype; storage, ndim, reserved0, layer follow
    uint8_t dtype, storage, ndim, bits;
    TQM_RETURN_IF_ERROR(c.Read(&dtype, "source_dtype"));
    TQM_RETURN_IF_ERROR(c.Read(&storage, "storage"));
    TQM_RETURN_IF_ERROR(c.Read(&ndim, "ndim"));
    TQM_RETURN_IF_ERROR(c.Read(&bits, ext ? "bits" : "reserved0"));
    TQM_RETURN_IF_ERROR(c.Read(&t.layer, "layer"));
    // R41. source_dtype and storage are closed sets: an unknown value is
    // corruption, not a newer feature. The extended values need the flag.
    const uint8_t max_dtype = ext ? format::kMaxDType : format::kMaxDTypeV12;
    if (dtype < format::kDTypeF32 || dtype > max_dtype) {
      return Loss(where,
                  ext ? absl::StrFormat("source_dtype %d is not 1 to %d", dtype, max_dtype)
                      : absl::StrFormat("source_dtype %d is not 1, 2, 3 or 4", dtype),
                  f);
    }
    // R42.
    const uint8_t max_storage = ext ? format::kMaxStorage : format::kMaxStorageV12;
    if (storage < format::kStorageF32 || storage > max_storage) {
      return Loss(where,
                  ext ? absl::StrFormat("storage %d is not 1 to %d", storage, max_storage)
                      : absl::StrFormat("storage %d is not 1, 2 or 3", storage),
                  f + 1);
    }
    t.source_dtype = static_cast<format::SourceDType>(dtype);
    t.storage = static_cast<format::Storage>(storage);
    // R86: RAW storage holds whole elements of a plain dtype.
    if (t.raw() && t.source_dtype == format::kDTypeQ8_0) {
      return Loss(where, "RAW storage of source_dtype 4 (Q8_0)", f);
    }
    // R43. Without elements there is nothing to quantize: 0-d tensors and
    // zero dimensions (R46) only for F32 and RAW storage, in extended files.
    const bool shapeless_ok = ext && !t.quantized();
    if (ndim == 0 && !shapeless_ok) return Loss(where, "ndim is 0", f + 2);
    if (ndim > format::kMaxDims) {
      return Exhausted(
          where,
          absl::StrFormat("ndim %d exceeds the limit of %d", ndim, format::kMaxDims),
          f + 2);
    }
    // R44 (reserved0), R87 (bits).
    if (!ext && bits != 0) {
      return Loss(where, absl::StrFormat("reserved0 is %d, must be 0", bits), f + 3);
    }
    if (ext && t.quantized() && (bits < format::kMinBits || bits > format::kMaxBits)) {
      return Loss(where, absl::StrFormat("bits %d is not 1 to 8", bits), f + 3);
    }
    if (ext && !t.quantized() && bits != 0) {
      return Loss(where, absl::StrFormat("bits is %d, must be 0 for storage %d", bits,
                                         storage),
                  f + 3);
    }
    t.bits = !t.quantized() ? 0 : (ext ? bits : 8);
    // R45.
    if (t.layer < format::kNoLayer) {
      return Loss(where, absl::StrFormat("layer %d is less than -1", t.layer), f + 4);
    }
    const uint64_t elem = t.element_size();
    // R46, R47: B = numel * E < 2^62, i.e. B <= kMaxBytes, without overflow.
    constexpr uint64_t kMaxBytes = (uint64_t{1} << 62) - 1;
    t.numel = 1;
    for (uint8_t d = 0; d < ndim; ++d) {
      uint64_t v;
      const uint64_t dim_off = c.offset();
      TQM_RETURN_IF_ERROR(c.Read(&v, "dims"));
      if (v == 0 && !shapeless_ok) {
        return Loss(where, absl::StrFormat("dims[%d] is 0", d), dim_off);
      }
      if (t.numel != 0 && v > kMaxBytes / elem / t.numel) {
        return Exhausted(
            where,
            absl::StrFormat("dims[%d] = %d makes the tensor's byte size reach "
                            "2^62 (the limit)",
                            d, v),
            dim_off);
      }
      t.numel *= v;
      t.dims.push_back(v);
    }
    t.byte_size = t.numel * elem;
    // R88: U8_GROUP parameters start with the group size.
    if (t.storage == format::kStorageU8Group) {
      const uint64_t g_off = c.offset();
      TQM_RETURN_IF_ERROR(c.Read(&t.group_size, "group_size"));
      TQM_RETURN_IF_ERROR(c.Reserved32("params reserved"));
      if (t.group_size == 0 || t.group_size > format::kMaxGroupSize) {
        return Loss(where,
                    absl::StrFormat("group_size %d is not 1 to %d", t.group_size,
                                    format::kMaxGroupSize),
                    g_off);
      }
    }
    // R36 (parameters backed by bytes before allocating), R48.
    uint64_t n_affine = 0;
    switch (t.storage) {
      case format::kStorageU8Tensor:
        n_affine = 1;
        break;
      case format::kStorageU8Row:
        n_affine = t.dims[0];
        break;
      case format::kStorageU8Group:
        n_affine = t.numel / t.dims.back() *
                   ((t.dims.back() + t.group_size - 1) / t.group_size);
        break;
      default:
        break;
    }
    if (n_affine > c.remaining() / 8) {
      return Loss(
          where,
          absl::StrFormat("%d (scale, zero) pairs of 8 bytes run past the end of the "
                          "section (%d bytes remain)",
                          n_affine, c.remaining()),
          c.offset());
    }
    t.affine.resize(n_affine);
    for (uint64_t k = 0; k < n_affine; ++k) {
      const uint64_t p_off = c.offset();
      TQM_RETURN_IF_ERROR(c.Read(&t.affine[k].scale, "scale"));
      TQM_RETURN_IF_ERROR(c.Read(&t.affine[k].zero, "zero"));
      const Affine& a = t.affine[k];
      if (!std::isfinite(a.scale) || !(a.scale > 0)) {
        return Loss(
            where,
            absl::StrFormat("params[%d]: scale %g is not finite and greater than 0", k,
                            a.scale),
            p_off);
      }
      if (!std::isfinite(a.zero) || std::nearbyint(a.zero) != a.zero) {
        return Loss(
            where,
            absl::StrFormat("params[%d]: zero %g is not finite and integral", k, a.zero),
            p_off + 4);
      }
    }
    // R36 (chunk records backed by bytes before allocating), R44 (reserved1).
    uint32_t chunk_count;
    const uint64_t cc_off = c.offset();
    TQM_RETURN_IF_ERROR(c.Read(&chunk_count, "chunk_count"));
    TQM_RETURN_IF_ERROR(c.Reserved32("reserved1"));
    if (chunk_count > c.remaining() / format::kChunkRecordSize) {
      return Loss(
          where,
          absl::StrFormat("chunk_count %d: its 32-byte records run past the end of the "
                          "section (%d bytes remain)",
                          chunk_count, c.remaining()),
          cc_off);
    }
    t.chunks.resize(chunk_count);
    uint64_t decoded = 0;
    for (uint32_t k = 0; k < chunk_count; ++k) {
      ChunkInfo& ch = t.chunks[k];
      const uint64_t r = c.offset();
      const std::string cw = absl::StrFormat("%s: chunk %d", where, k);
      uint8_t r0a;
      uint16_t r0b;
      uint32_t r1;
      TQM_RETURN_IF_ERROR(c.Read(&ch.codec, "codec"));
      TQM_RETURN_IF_ERROR(c.Read(&r0a, "reserved0"));
      TQM_RETURN_IF_ERROR(c.Read(&r0b, "reserved0"));
      TQM_RETURN_IF_ERROR(c.Read(&ch.decoded_size, "decoded_size"));
      TQM_RETURN_IF_ERROR(c.Read(&ch.offset, "offset"));
      TQM_RETURN_IF_ERROR(c.Read(&ch.encoded_size, "encoded_size"));
      TQM_RETURN_IF_ERROR(c.Read(&r1, "reserved1"));
      TQM_RETURN_IF_ERROR(c.Read(&ch.checksum, "checksum"));
      // R50, at open (the spec allows deferring it to decode).
      if (!IsKnownCodec(ch.codec)) {
        return Unimplemented(
            cw,
            absl::StrFormat("codec %d (%s) is not supported by this reader", ch.codec,
                            CodecName(ch.codec)),
            r);
      }
      // R51.
      if (r0a != 0 || r0b != 0) return Loss(cw, "reserved0 is not zero", r + 1);
      if (r1 != 0)
        return Loss(cw, absl::StrFormat("reserved1 is %d, must be 0", r1), r + 20);
      // R52.
      if (ch.decoded_size == 0) return Loss(cw, "decoded_size is 0", r + 4);
      if (ch.decoded_size > format::kMaxChunkDecodedSize) {
        return Exhausted(cw,
                         absl::StrFormat("decoded_size %d exceeds the limit of %d",
                                         ch.decoded_size, format::kMaxChunkDecodedSize),
                         r + 4);
      }
      // R53.
      if (ch.encoded_size == 0) return Loss(cw, "encoded_size is 0", r + 16);
      // R54, R55.
      if (ch.offset % format::kAlignment != 0) {
        return Loss(cw, absl::StrFormat("offset %d is not a multiple of 64", ch.offset),
                    r + 8);
      }
      if (ch.offset < data.offset || ch.offset - data.offset > data.length ||
          ch.encoded_size > data.length - (ch.offset - data.offset)) {
        return Loss(
            cw,
            absl::StrFormat("encoded bytes (offset %d, %d bytes) lie outside the DATA "
                            "section (offset %d, length %d)",
                            ch.offset, ch.encoded_size, data.offset, data.length),
            r + 8);
      }
      // R56.
      if (ch.codec == format::kCodecStored && ch.encoded_size != ch.decoded_size) {
        return Loss(
            cw,
            absl::StrFormat("stored chunk has encoded_size %d but decoded_size %d",
                            ch.encoded_size, ch.decoded_size),
            r + 16);
      }
      // The optional seqtable size bounds: encoded = 2G + 4X + t.
      if (ch.codec == format::kCodecSeqTable) {
        const uint32_t g = ch.decoded_size / 4, tail = ch.decoded_size % 4;
        if (ch.encoded_size < 2 * g + tail || ch.encoded_size > 6 * g + tail ||
            (ch.encoded_size - tail) % 2 != 0) {
          return Loss(
              cw,
              absl::StrFormat("seqtable encoded_size %d is impossible for decoded_size "
                              "%d (must be 2*%d + 4*escapes + %d)",
                              ch.encoded_size, ch.decoded_size, g, tail),
              r + 16);
        }
      }
      // R57 (a running check: no sum can exceed the byte size).
      if (ch.decoded_size > t.byte_size - decoded) {
        return Loss(
            cw,
            absl::StrFormat("chunks 0-%d decode to more than the tensor's %d bytes", k,
                            t.byte_size),
            r + 4);
      }
      ch.decoded_offset = decoded;
      decoded += ch.decoded_size;
      t.encoded_size += ch.encoded_size;
      chunk_ranges.push_back({ch.offset, ch.encoded_size, i, k});
    }
    // R57.
    if (decoded != t.byte_size) {
      return Loss(where,
                  absl::StrFormat("%d chunks decode to %d bytes but the tensor has %d",
                                  chunk_count, decoded, t.byte_size),
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
      return Loss(absl::StrFormat("%s: section %s", name_, SectionName(s.id)),
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
      used.push_back({s.offset, s.length, "section " + SectionName(s.id)});
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
