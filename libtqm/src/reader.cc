// Reader: maps a .tqm file and validates its header, directory, metadata,
// table and tensor index before handing out anything (spec/FORMAT.md,
// "Reader validation"). Tensor data is checked when it is decoded.

#include "tqm/reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "atomic_file.h"
#include "checksum.h"
#include "cursor.h"
#include "tqm/codec.h"
#include "tqm/status.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "libtqm reads little-endian fields with memcpy; port Cursor first");

namespace tqm {

namespace bip = boost::interprocess;

struct Reader::Mapping {
  bip::file_mapping file;
  bip::mapped_region region;
};

namespace {

constexpr uint32_t kMaxSections = 64;

bool ValidKey(absl::Span<const uint8_t> k) {
  for (uint8_t c : k) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string AsString(absl::Span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace

uint64_t TensorInfo::row_length() const {
  if (storage == format::kStorageU8Row && !dims.empty() && dims[0] != 0) {
    return numel / dims[0];
  }
  return numel;
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
        "%s: file is %d bytes, shorter than the %d-byte header", path, st.st_size,
        format::kHeaderSize));
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

absl::StatusOr<std::unique_ptr<Reader>> Reader::FromBuffer(absl::Span<const uint8_t> bytes,
                                                           std::string name) {
  std::unique_ptr<Reader> r(new Reader());
  r->name_ = std::move(name);
  r->bytes_ = bytes;
  TQM_RETURN_IF_ERROR(r->Parse());
  return r;
}

absl::Status Reader::Parse() {
  const uint64_t size = bytes_.size();
  Cursor c(bytes_, 0, name_ + ": header");
  if (size < format::kHeaderSize) {
    return absl::DataLossError(absl::StrFormat(
        "%s: file is %d bytes, shorter than the %d-byte header", name_, size,
        format::kHeaderSize));
  }
  if (std::memcmp(bytes_.data(), format::kMagic, sizeof(format::kMagic)) != 0) {
    return absl::DataLossError(absl::StrFormat("%s: not a .tqm file (bad magic)", name_));
  }
  // Version before checksum: a future major may lay the header out differently.
  uint16_t major, minor;
  std::memcpy(&major, &bytes_[8], 2);
  std::memcpy(&minor, &bytes_[10], 2);
  if (major != format::kMajorVersion) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: format version %d.%d is not supported (this reader reads %d.x)", name_, major,
        minor, format::kMajorVersion));
  }
  uint64_t stored_sum;
  std::memcpy(&stored_sum, &bytes_[format::kHeaderChecksummedSize], 8);
  uint64_t sum = Checksum(bytes_.subspan(0, format::kHeaderChecksummedSize));
  if (sum != stored_sum) {
    return absl::DataLossError(absl::StrFormat(
        "%s: header checksum mismatch (stored %016x, computed %016x)", name_, stored_sum, sum));
  }
  absl::Span<const uint8_t> magic;
  uint32_t reserved32;
  uint64_t directory_sum, reserved64;
  TQM_RETURN_IF_ERROR(c.Bytes(8, &magic, "magic"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.major, "major"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.minor, "minor"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.flags, "flags"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.file_size, "file_size"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.directory_offset, "directory_offset"));
  TQM_RETURN_IF_ERROR(c.Read(&header_.section_count, "section_count"));
  TQM_RETURN_IF_ERROR(c.Read(&reserved32, "reserved"));
  TQM_RETURN_IF_ERROR(c.Read(&directory_sum, "directory_checksum"));
  TQM_RETURN_IF_ERROR(c.Read(&reserved64, "reserved"));
  if (header_.flags & ~format::kKnownHeaderFlags) {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: header flags 0x%x name features this reader does not know", name_,
        header_.flags));
  }
  if (reserved32 != 0 || reserved64 != 0) {
    return absl::DataLossError(absl::StrFormat("%s: header reserved fields are not zero", name_));
  }
  if (header_.file_size != size) {
    return absl::DataLossError(absl::StrFormat(
        "%s: header says the file is %d bytes but it is %d bytes (truncated or extended)",
        name_, header_.file_size, size));
  }
  if (header_.section_count == 0) {
    return absl::DataLossError(absl::StrFormat("%s: section_count is 0", name_));
  }
  if (header_.section_count > kMaxSections) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: section_count %d exceeds the limit of %d", name_, header_.section_count,
        kMaxSections));
  }
  const uint64_t dir_len = uint64_t{header_.section_count} * format::kSectionEntrySize;
  if (header_.directory_offset < format::kHeaderSize ||
      header_.directory_offset % format::kAlignment != 0 ||
      header_.directory_offset > size || dir_len > size - header_.directory_offset) {
    return absl::DataLossError(absl::StrFormat(
        "%s: section directory (offset %d, %d bytes) is misaligned or outside the file",
        name_, header_.directory_offset, dir_len));
  }
  auto dir = bytes_.subspan(header_.directory_offset, dir_len);
  if (Checksum(dir) != directory_sum) {
    return absl::DataLossError(absl::StrFormat(
        "%s: section directory checksum mismatch at offset %d", name_,
        header_.directory_offset));
  }
  TQM_RETURN_IF_ERROR(ParseDirectory());

  const SectionInfo* meta = nullptr;
  const SectionInfo* table = nullptr;
  const SectionInfo* index = nullptr;
  const SectionInfo* data = nullptr;
  for (const SectionInfo& s : sections_) {
    if (s.id == format::kSectionMetadata) meta = &s;
    if (s.id == format::kSectionTable) table = &s;
    if (s.id == format::kSectionTensorIndex) index = &s;
    if (s.id == format::kSectionData) data = &s;
  }
  if (!meta || !table || !index || !data) {
    return absl::DataLossError(absl::StrFormat(
        "%s: a required section (METADATA, TABLE, TENSOR_INDEX, DATA) is missing", name_));
  }
  for (const SectionInfo* s : {meta, table, index}) {
    if (Checksum(bytes_.subspan(s->offset, s->length)) != s->checksum) {
      return absl::DataLossError(absl::StrFormat(
          "%s: checksum mismatch in section %d at offset %d", name_, s->id, s->offset));
    }
  }
  TQM_RETURN_IF_ERROR(ParseMetadata(*meta));
  TQM_RETURN_IF_ERROR(ParseTable(*table));
  TQM_RETURN_IF_ERROR(ParseIndex(*index, *data));
  return absl::OkStatus();
}

absl::Status Reader::ParseDirectory() {
  Cursor c(bytes_.subspan(header_.directory_offset,
                          uint64_t{header_.section_count} * format::kSectionEntrySize),
           header_.directory_offset, name_ + ": section directory");
  const uint64_t size = bytes_.size();
  // Occupied ranges: header, directory, then each section.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  ranges.push_back({0, format::kHeaderSize});
  ranges.push_back({header_.directory_offset,
                    uint64_t{header_.section_count} * format::kSectionEntrySize});
  absl::flat_hash_set<uint32_t> seen;
  for (uint32_t i = 0; i < header_.section_count; ++i) {
    SectionInfo s;
    TQM_RETURN_IF_ERROR(c.Read(&s.id, "section id"));
    TQM_RETURN_IF_ERROR(c.Read(&s.flags, "section flags"));
    TQM_RETURN_IF_ERROR(c.Read(&s.offset, "section offset"));
    TQM_RETURN_IF_ERROR(c.Read(&s.length, "section length"));
    TQM_RETURN_IF_ERROR(c.Read(&s.checksum, "section checksum"));
    if (s.flags & ~format::kKnownSectionFlags) {
      return absl::UnimplementedError(absl::StrFormat(
          "%s: section %d has flags 0x%x this reader does not know", name_, s.id, s.flags));
    }
    if (s.id == 0) return c.Error("section id 0 is never assigned");
    if (!seen.insert(s.id).second) {
      return c.Error(absl::StrFormat("section id %d appears twice", s.id));
    }
    if (s.offset < format::kHeaderSize || s.offset % format::kAlignment != 0 ||
        s.offset > size || s.length > size - s.offset) {
      return c.Error(absl::StrFormat(
          "section %d (offset %d, length %d) is misaligned or outside the file", s.id,
          s.offset, s.length));
    }
    bool known = s.id >= format::kSectionMetadata && s.id <= format::kSectionData;
    if (known && !(s.flags & format::kSectionFlagRequired)) {
      return c.Error(absl::StrFormat("core section %d lacks the REQUIRED flag", s.id));
    }
    if (!known && (s.flags & format::kSectionFlagRequired)) {
      return absl::UnimplementedError(absl::StrFormat(
          "%s: required section id %d is not supported by this reader", name_, s.id));
    }
    ranges.push_back({s.offset, s.length});
    sections_.push_back(s);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].first + ranges[i - 1].second) {
      return absl::DataLossError(absl::StrFormat(
          "%s: section directory: ranges at offsets %d and %d overlap", name_,
          ranges[i - 1].first, ranges[i].first));
    }
  }
  return absl::OkStatus();
}

absl::Status Reader::ParseMetadata(const SectionInfo& s) {
  Cursor c(bytes_.subspan(s.offset, s.length), s.offset, name_ + ": metadata");
  uint32_t count;
  TQM_RETURN_IF_ERROR(c.Read(&count, "metadata count"));
  TQM_RETURN_IF_ERROR(c.Reserved32("metadata reserved"));
  // Each entry takes at least 2 + 1 + 1 + 8 bytes: cap the count before reserving.
  if (count > c.remaining() / 12) {
    return c.Error(absl::StrFormat("metadata count %d exceeds what the section can hold", count));
  }
  metadata_.reserve(count);
  absl::flat_hash_set<std::string> keys;
  for (uint32_t i = 0; i < count; ++i) {
    uint16_t key_len;
    TQM_RETURN_IF_ERROR(c.Read(&key_len, "key length"));
    if (key_len == 0) return c.Error("metadata key length is 0");
    if (key_len > format::kMaxKeyLength) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%s: metadata key length %d exceeds the limit of %d at offset %d",
                          name_, key_len, format::kMaxKeyLength, c.offset()));
    }
    absl::Span<const uint8_t> key;
    TQM_RETURN_IF_ERROR(c.Bytes(key_len, &key, "key"));
    if (!ValidKey(key)) return c.Error("metadata key has characters outside [A-Za-z0-9._-]");
    MetaEntry e;
    e.key = AsString(key);
    if (!keys.insert(e.key).second) {
      return c.Error(absl::StrFormat("duplicate metadata key '%s'", e.key));
    }
    uint8_t type;
    TQM_RETURN_IF_ERROR(c.Read(&type, "value type"));
    switch (type) {
      case format::kMetaInt64:
        e.value.type = format::kMetaInt64;
        TQM_RETURN_IF_ERROR(c.Read(&e.value.int64, "int64 value"));
        break;
      case format::kMetaFloat64:
        e.value.type = format::kMetaFloat64;
        TQM_RETURN_IF_ERROR(c.Read(&e.value.float64, "float64 value"));
        break;
      case format::kMetaString:
      case format::kMetaBytes: {
        e.value.type = static_cast<format::MetaType>(type);
        uint32_t len;
        absl::Span<const uint8_t> b;
        TQM_RETURN_IF_ERROR(c.Read(&len, "value length"));
        TQM_RETURN_IF_ERROR(c.Bytes(len, &b, "value"));
        e.value.bytes = AsString(b);
        break;
      }
      default:
        return c.Error(absl::StrFormat("unknown metadata type %d for key '%s'", type, e.key));
    }
    metadata_.push_back(std::move(e));
  }
  if (c.remaining() != 0) return c.Error("metadata section has trailing bytes");
  return absl::OkStatus();
}

absl::Status Reader::ParseTable(const SectionInfo& s) {
  Cursor c(bytes_.subspan(s.offset, s.length), s.offset, name_ + ": table");
  uint32_t n;
  TQM_RETURN_IF_ERROR(c.Read(&n, "table size"));
  TQM_RETURN_IF_ERROR(c.Reserved32("table reserved"));
  if (n > format::kMaxTableEntries) {
    return c.Error(absl::StrFormat("table has %d entries, more than %d", n,
                                   format::kMaxTableEntries));
  }
  if (c.remaining() != uint64_t{n} * 4) {
    return c.Error(absl::StrFormat("table of %d entries needs %d bytes, section has %d", n,
                                   uint64_t{n} * 4, c.remaining()));
  }
  absl::Span<const uint8_t> entries;
  TQM_RETURN_IF_ERROR(c.Bytes(uint64_t{n} * 4, &entries, "table entries"));
  table_.resize(n);
  if (n) std::memcpy(table_.data(), entries.data(), entries.size());
  return absl::OkStatus();
}

absl::Status Reader::ParseIndex(const SectionInfo& s, const SectionInfo& data) {
  Cursor c(bytes_.subspan(s.offset, s.length), s.offset, name_ + ": tensor index");
  uint32_t count;
  TQM_RETURN_IF_ERROR(c.Read(&count, "tensor count"));
  TQM_RETURN_IF_ERROR(c.Reserved32("index reserved"));
  // A tensor record takes at least 2+1+1+1+1+1+4+8+4+4+32 bytes.
  constexpr size_t kMinRecord = 59;
  if (count > c.remaining() / kMinRecord) {
    return c.Error(absl::StrFormat("tensor count %d exceeds what the index can hold", count));
  }
  tensors_.reserve(count);
  by_name_.reserve(count);
  struct Span64 {
    uint64_t offset, length;
    uint32_t tensor, chunk;
  };
  std::vector<Span64> chunk_ranges;
  for (uint32_t i = 0; i < count; ++i) {
    TensorInfo t;
    const uint64_t record_offset = c.offset();
    uint16_t name_len;
    TQM_RETURN_IF_ERROR(c.Read(&name_len, "name length"));
    if (name_len == 0) return c.Error(absl::StrFormat("tensor %d: name length is 0", i));
    if (name_len > format::kMaxNameLength) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s: tensor %d: name length %d exceeds the limit of %d at offset %d", name_, i,
          name_len, format::kMaxNameLength, c.offset()));
    }
    absl::Span<const uint8_t> name;
    TQM_RETURN_IF_ERROR(c.Bytes(name_len, &name, "tensor name"));
    if (std::find(name.begin(), name.end(), 0) != name.end()) {
      return c.Error(absl::StrFormat("tensor %d: name contains a NUL byte", i));
    }
    t.name = AsString(name);
    auto where = [&](const std::string& what) {
      return absl::StrFormat("tensor '%s' (record at offset %d): %s", t.name, record_offset,
                             what);
    };
    uint8_t dtype, storage, ndim, reserved8;
    TQM_RETURN_IF_ERROR(c.Read(&dtype, "source dtype"));
    TQM_RETURN_IF_ERROR(c.Read(&storage, "storage"));
    TQM_RETURN_IF_ERROR(c.Read(&ndim, "ndim"));
    TQM_RETURN_IF_ERROR(c.Read(&reserved8, "reserved"));
    TQM_RETURN_IF_ERROR(c.Read(&t.layer, "layer"));
    if (dtype < format::kDTypeF32 || dtype > format::kDTypeQ8_0) {
      return c.Error(where(absl::StrFormat("unknown source dtype %d", dtype)));
    }
    if (storage < format::kStorageF32 || storage > format::kStorageU8Row) {
      return absl::UnimplementedError(
          absl::StrFormat("%s: %s", name_, where(absl::StrFormat("unknown storage %d", storage))));
    }
    if (ndim == 0) return c.Error(where("ndim is 0"));
    if (ndim > format::kMaxDims) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "%s: %s", name_, where(absl::StrFormat("ndim %d exceeds the limit of %d", ndim,
                                                 format::kMaxDims))));
    }
    if (reserved8 != 0) return c.Error(where("reserved byte is not zero"));
    if (t.layer < format::kNoLayer) {
      return c.Error(where(absl::StrFormat("layer %d is negative", t.layer)));
    }
    t.source_dtype = static_cast<format::SourceDType>(dtype);
    t.storage = static_cast<format::Storage>(storage);
    const uint64_t elem = t.storage == format::kStorageF32 ? 4 : 1;
    t.numel = 1;
    for (uint8_t d = 0; d < ndim; ++d) {
      uint64_t v;
      TQM_RETURN_IF_ERROR(c.Read(&v, "dimension"));
      if (v == 0) return c.Error(where(absl::StrFormat("dimension %d is zero", d)));
      if (v >= ((uint64_t{1} << 62) - 1) / elem / t.numel + 1) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "%s: %s", name_, where("tensor size reaches 2^62 bytes")));
      }
      t.numel *= v;
      t.dims.push_back(v);
    }
    t.byte_size = t.numel * elem;
    uint64_t n_affine = t.storage == format::kStorageF32     ? 0
                        : t.storage == format::kStorageU8Tensor ? 1
                                                                : t.dims[0];
    if (n_affine > c.remaining() / 8) {
      return c.Error(where(absl::StrFormat("%d quantization parameters exceed the index",
                                           n_affine)));
    }
    t.affine.resize(n_affine);
    for (uint64_t k = 0; k < n_affine; ++k) {
      TQM_RETURN_IF_ERROR(c.Read(&t.affine[k].scale, "scale"));
      TQM_RETURN_IF_ERROR(c.Read(&t.affine[k].zero, "zero"));
      const Affine& a = t.affine[k];
      if (!std::isfinite(a.scale) || !(a.scale > 0) || !std::isfinite(a.zero) ||
          std::nearbyint(a.zero) != a.zero) {
        return c.Error(where(absl::StrFormat(
            "quantization parameters %d (scale %g, zero %g) are invalid", k, a.scale, a.zero)));
      }
    }
    uint32_t chunk_count;
    TQM_RETURN_IF_ERROR(c.Read(&chunk_count, "chunk count"));
    TQM_RETURN_IF_ERROR(c.Reserved32("chunk list reserved"));
    if (chunk_count > c.remaining() / format::kChunkRecordSize) {
      return c.Error(where(absl::StrFormat("chunk count %d exceeds the index", chunk_count)));
    }
    // Each chunk decodes to at most 4 MiB: the tensor must fit in its chunks.
    if (t.byte_size > uint64_t{chunk_count} * format::kMaxChunkDecodedSize) {
      return c.Error(where(absl::StrFormat("%d bytes cannot fit in %d chunks", t.byte_size,
                                           chunk_count)));
    }
    t.chunks.resize(chunk_count);
    uint64_t decoded = 0;
    for (uint32_t k = 0; k < chunk_count; ++k) {
      ChunkInfo& ch = t.chunks[k];
      uint8_t r1;
      uint16_t r2;
      uint32_t r3;
      TQM_RETURN_IF_ERROR(c.Read(&ch.codec, "codec"));
      TQM_RETURN_IF_ERROR(c.Read(&r1, "reserved"));
      TQM_RETURN_IF_ERROR(c.Read(&r2, "reserved"));
      TQM_RETURN_IF_ERROR(c.Read(&ch.decoded_size, "decoded size"));
      TQM_RETURN_IF_ERROR(c.Read(&ch.offset, "chunk offset"));
      TQM_RETURN_IF_ERROR(c.Read(&ch.encoded_size, "encoded size"));
      TQM_RETURN_IF_ERROR(c.Read(&r3, "reserved"));
      TQM_RETURN_IF_ERROR(c.Read(&ch.checksum, "chunk checksum"));
      auto cwhere = [&](const std::string& what) {
        return where(absl::StrFormat("chunk %d: %s", k, what));
      };
      if (r1 != 0 || r2 != 0 || r3 != 0) return c.Error(cwhere("reserved field is not zero"));
      if (!IsKnownCodec(ch.codec)) {
        return absl::UnimplementedError(absl::StrFormat(
            "%s: %s", name_,
            cwhere(absl::StrFormat("codec %d (%s) is not supported by this reader", ch.codec,
                                   CodecName(ch.codec)))));
      }
      if (ch.decoded_size == 0) return c.Error(cwhere("decoded size is 0"));
      if (ch.decoded_size > format::kMaxChunkDecodedSize) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "%s: %s", name_,
            cwhere(absl::StrFormat("decoded size %d exceeds the limit of %d", ch.decoded_size,
                                   format::kMaxChunkDecodedSize))));
      }
      if (ch.encoded_size == 0) return c.Error(cwhere("encoded size is zero"));
      if (ch.codec == format::kCodecStored && ch.encoded_size != ch.decoded_size) {
        return c.Error(cwhere("stored chunk's encoded and decoded sizes differ"));
      }
      if (ch.codec == format::kCodecSeqTable &&
          (ch.encoded_size < ch.decoded_size / 4 * 2 + ch.decoded_size % 4 ||
           ch.encoded_size > ch.decoded_size / 4 * 6 + ch.decoded_size % 4)) {
        return c.Error(cwhere(absl::StrFormat(
            "seqtable encoded size %d impossible for decoded size %d", ch.encoded_size,
            ch.decoded_size)));
      }
      if (ch.offset % format::kAlignment != 0 || ch.offset < data.offset ||
          ch.offset - data.offset > data.length ||
          ch.encoded_size > data.length - (ch.offset - data.offset)) {
        return c.Error(cwhere(absl::StrFormat(
            "bytes (offset %d, %d bytes) are misaligned or outside the DATA section",
            ch.offset, ch.encoded_size)));
      }
      if (ch.decoded_size > t.byte_size - decoded) {
        return c.Error(cwhere("chunks decode to more bytes than the tensor holds"));
      }
      ch.decoded_offset = decoded;
      decoded += ch.decoded_size;
      t.encoded_size += ch.encoded_size;
      chunk_ranges.push_back({ch.offset, ch.encoded_size, i, k});
    }
    if (decoded != t.byte_size) {
      return c.Error(where(absl::StrFormat("chunks decode to %d bytes, tensor needs %d",
                                           decoded, t.byte_size)));
    }
    if (!by_name_.emplace(t.name, static_cast<int>(i)).second) {
      return c.Error(where("duplicate tensor name"));
    }
    tensors_.push_back(std::move(t));
  }
  if (c.remaining() != 0) return c.Error("tensor index has trailing bytes");
  std::sort(chunk_ranges.begin(), chunk_ranges.end(),
            [](const Span64& a, const Span64& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < chunk_ranges.size(); ++i) {
    const Span64& p = chunk_ranges[i - 1];
    const Span64& q = chunk_ranges[i];
    if (q.offset < p.offset + p.length) {
      return absl::DataLossError(absl::StrFormat(
          "%s: chunk %d of tensor '%s' (offset %d) overlaps chunk %d of tensor '%s'", name_,
          q.chunk, tensors_[q.tensor].name, q.offset, p.chunk, tensors_[p.tensor].name));
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
  const ChunkInfo& ch = tensors_[t].chunks[c];
  return bytes_.subspan(ch.offset, ch.encoded_size);
}

absl::Status Reader::ChunkError(size_t t, size_t c, const absl::Status& s) const {
  const ChunkInfo& ch = tensors_[t].chunks[c];
  return absl::Status(s.code(), absl::StrFormat("%s: tensor '%s' chunk %d (offset %d): %s",
                                                name_, tensors_[t].name, c, ch.offset,
                                                s.message()));
}

absl::Status Reader::DecodeChunk(size_t t, size_t c, absl::Span<uint8_t> out,
                                 bool verify_checksum) const {
  if (t >= tensors_.size() || c >= tensors_[t].chunks.size()) {
    return absl::OutOfRangeError(absl::StrFormat("%s: no chunk %d of tensor %d", name_, c, t));
  }
  const ChunkInfo& ch = tensors_[t].chunks[c];
  if (out.size() != ch.decoded_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: output buffer of %d bytes for a chunk of %d", name_, out.size(), ch.decoded_size));
  }
  auto in = ChunkBytes(t, c);
  if (verify_checksum) {
    uint64_t sum = Checksum(in);
    if (sum != ch.checksum) {
      return ChunkError(t, c, absl::DataLossError(absl::StrFormat(
                                  "checksum mismatch (stored %016x, computed %016x)",
                                  ch.checksum, sum)));
    }
  }
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
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: tensor '%s' needs %d bytes, buffer has %d", name_, ti.name, ti.byte_size,
        out.size()));
  }
  for (size_t c = 0; c < ti.chunks.size(); ++c) {
    const ChunkInfo& ch = ti.chunks[c];
    TQM_RETURN_IF_ERROR(
        DecodeChunk(t, c, out.subspan(ch.decoded_offset, ch.decoded_size), verify_checksum));
  }
  return absl::OkStatus();
}

absl::Status Reader::ReadFloat(size_t t, absl::Span<float> out, bool verify_checksum) const {
  if (t >= tensors_.size()) {
    return absl::OutOfRangeError(absl::StrFormat("%s: no tensor %d", name_, t));
  }
  const TensorInfo& ti = tensors_[t];
  if (out.size() != ti.numel) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: tensor '%s' has %d values, buffer has %d", name_, ti.name, ti.numel, out.size()));
  }
  if (!ti.quantized()) {
    return DecodeTensor(t, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()),
                                               out.size() * 4),
                        verify_checksum);
  }
  std::vector<uint8_t> q(ti.numel);
  TQM_RETURN_IF_ERROR(DecodeTensor(t, absl::MakeSpan(q), verify_checksum));
  const uint64_t row = ti.row_length();
  for (size_t r = 0; r < ti.affine.size(); ++r) {
    DequantizeAffine(absl::MakeConstSpan(q).subspan(r * row, row), ti.affine[r],
                     out.subspan(r * row, row));
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

absl::Status Reader::Verify() const {
  for (const SectionInfo& s : sections_) {
    uint64_t sum = Checksum(bytes_.subspan(s.offset, s.length));
    if (sum != s.checksum) {
      return absl::DataLossError(absl::StrFormat(
          "%s: checksum mismatch in section %d (offset %d, %d bytes)", name_, s.id, s.offset,
          s.length));
    }
  }
  // Every byte outside the header, directory, sections and (inside DATA)
  // chunks must be zero padding.
  std::vector<std::pair<uint64_t, uint64_t>> used;
  used.push_back({0, format::kHeaderSize});
  used.push_back({header_.directory_offset,
                  uint64_t{header_.section_count} * format::kSectionEntrySize});
  for (const SectionInfo& s : sections_) {
    // DATA is covered by its chunks; the gaps between them are padding.
    if (s.id != format::kSectionData) used.push_back({s.offset, s.length});
  }
  for (const TensorInfo& t : tensors_) {
    for (const ChunkInfo& ch : t.chunks) used.push_back({ch.offset, ch.encoded_size});
  }
  std::sort(used.begin(), used.end());
  uint64_t pos = 0;
  for (const auto& r : used) {
    for (uint64_t p = pos; p < r.first; ++p) {
      if (bytes_[p] != 0) {
        return absl::DataLossError(absl::StrFormat(
            "%s: padding byte at offset %d is 0x%02x, must be 0", name_, p, bytes_[p]));
      }
    }
    pos = std::max(pos, r.first + r.second);
  }
  for (uint64_t p = pos; p < bytes_.size(); ++p) {
    if (bytes_[p] != 0) {
      return absl::DataLossError(absl::StrFormat(
          "%s: padding byte at offset %d is 0x%02x, must be 0", name_, p, bytes_[p]));
    }
  }
  std::vector<uint8_t> buf;
  for (size_t t = 0; t < tensors_.size(); ++t) {
    for (size_t c = 0; c < tensors_[t].chunks.size(); ++c) {
      buf.resize(tensors_[t].chunks[c].decoded_size);
      TQM_RETURN_IF_ERROR(DecodeChunk(t, c, absl::MakeSpan(buf), true));
    }
  }
  return absl::OkStatus();
}

}  // namespace tqm
