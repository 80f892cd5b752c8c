// Encode and Decode of every record of the .tqm layout (layout.h). The
// comments cite the spec rule each check implements; the messages are the
// reader's ("<where>: <what> at offset <off>"), which tests pin down.

#include "container/layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "base/checksum.h"
#include "base/endian.h"
#include "tqm/codec.h"
#include "tqm/source.h"
#include "tqm/status.h"

namespace tqm {
namespace layout {
namespace {

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

std::string AsString(absl::Span<const uint8_t> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

// Continues `c` at its position under a new context (the record's name once
// it is known).
void Rename(Cursor* c, std::string context) {
  const uint64_t off = c->offset();
  absl::Span<const uint8_t> rest;
  (void)c->Bytes(c->remaining(), &rest, "rest");
  *c = Cursor(rest, off, std::move(context));
}

std::string Named(const std::string& where, const std::string& name) {
  return absl::StrFormat("%s '%s'", where, absl::CHexEscape(name));
}

bool ValidKey(absl::Span<const uint8_t> k) {
  for (uint8_t c : k) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool IsQuantized(uint8_t storage) {
  return storage == format::kStorageU8Tensor || storage == format::kStorageU8Row ||
         storage == format::kStorageU8Group;
}

}  // namespace

// ---------------------------------------------------------------------------
// Header.

void Encode(const Header& h, std::string* out) {
  const size_t start = out->size();
  out->append(reinterpret_cast<const char*>(format::kMagic), sizeof(format::kMagic));
  AppendLE<uint16_t>(out, h.major_version);
  AppendLE<uint16_t>(out, h.minor_version);
  AppendLE<uint32_t>(out, h.flags);
  AppendLE<uint64_t>(out, h.file_size);
  AppendLE<uint64_t>(out, h.directory_offset);
  AppendLE<uint32_t>(out, h.section_count);
  AppendLE<uint32_t>(out, h.reserved0);
  AppendLE<uint64_t>(out, h.directory_checksum);
  AppendLE<uint64_t>(out, h.reserved1);
  const uint64_t sum = Checksum(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(out->data()) + start,
                                format::kHeaderChecksummedSize));
  AppendLE<uint64_t>(out, sum);
}

absl::Status Decode(Cursor& c, Header* h) {
  const uint64_t size = c.remaining();  // the whole file
  const uint64_t base = c.offset();
  const std::string& hdr = c.context();
  absl::Span<const uint8_t> b;
  TQM_RETURN_IF_ERROR(c.Bytes(Header::kSize, &b, "header"));
  // R2.
  if (std::memcmp(b.data(), format::kMagic, sizeof(format::kMagic)) != 0) {
    return Loss(hdr, "magic is not 89 54 51 4D 0D 0A 1A 0A (not a .tqm file)",
                base + Header::kMagicAt);
  }
  // R3, before the checksum: another major version may lay its header out
  // differently, so only the magic and this field can be trusted.
  Cursor f(b, base, hdr);
  absl::Span<const uint8_t> magic;
  TQM_RETURN_IF_ERROR(f.Bytes(sizeof(format::kMagic), &magic, "magic"));
  TQM_RETURN_IF_ERROR(f.Read(&h->major_version, "major_version"));
  if (h->major_version != format::kMajorVersion) {
    return Unimplemented(hdr,
                         absl::StrFormat("major_version %d is not supported (this reader "
                                         "reads version %d.x)",
                                         h->major_version, format::kMajorVersion),
                         base + Header::kMajorVersionAt);
  }
  // R4.
  h->header_checksum = LoadLE64(b.data() + Header::kHeaderChecksumAt);
  const uint64_t sum = Checksum(b.subspan(0, format::kHeaderChecksummedSize));
  if (sum != h->header_checksum) {
    return Loss(
        hdr,
        absl::StrFormat("header_checksum %016x does not match the checksum of bytes "
                        "0-55 (%016x)",
                        h->header_checksum, sum),
        base + Header::kHeaderChecksumAt);
  }
  TQM_RETURN_IF_ERROR(f.Read(&h->minor_version, "minor_version"));
  TQM_RETURN_IF_ERROR(f.Read(&h->flags, "flags"));
  TQM_RETURN_IF_ERROR(f.Read(&h->file_size, "file_size"));
  TQM_RETURN_IF_ERROR(f.Read(&h->directory_offset, "directory_offset"));
  TQM_RETURN_IF_ERROR(f.Read(&h->section_count, "section_count"));
  TQM_RETURN_IF_ERROR(f.Read(&h->reserved0, "reserved0"));
  TQM_RETURN_IF_ERROR(f.Read(&h->directory_checksum, "directory_checksum"));
  TQM_RETURN_IF_ERROR(f.Read(&h->reserved1, "reserved1"));
  // R5.
  if (h->flags & ~format::kKnownHeaderFlags) {
    return Unimplemented(
        hdr, absl::StrFormat("flags 0x%x has bits this reader does not know", h->flags),
        base + Header::kFlagsAt);
  }
  // R6.
  if (h->reserved0 != 0) {
    return Loss(hdr, absl::StrFormat("reserved0 is %d, must be 0", h->reserved0),
                base + Header::kReserved0At);
  }
  if (h->reserved1 != 0) {
    return Loss(hdr, absl::StrFormat("reserved1 is %d, must be 0", h->reserved1),
                base + Header::kReserved1At);
  }
  // R7.
  if (h->file_size != size) {
    return Loss(
        hdr,
        absl::StrFormat("file_size says %d bytes but the file is %d bytes (truncated "
                        "or extended)",
                        h->file_size, size),
        base + Header::kFileSizeAt);
  }
  // R8.
  if (h->section_count == 0) {
    return Loss(hdr, "section_count is 0", base + Header::kSectionCountAt);
  }
  if (h->section_count > kMaxSections) {
    return Exhausted(hdr,
                     absl::StrFormat("section_count %d exceeds the limit of %d",
                                     h->section_count, kMaxSections),
                     base + Header::kSectionCountAt);
  }
  // R9.
  if (h->directory_offset < format::kHeaderSize ||
      h->directory_offset % format::kAlignment != 0) {
    return Loss(
        hdr,
        absl::StrFormat("directory_offset %d is not a multiple of 64 of at least 64",
                        h->directory_offset),
        base + Header::kDirectoryOffsetAt);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Section directory entry.

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

void Encode(const SectionEntry& s, std::string* out) {
  AppendLE<uint32_t>(out, s.id);
  AppendLE<uint32_t>(out, s.flags);
  AppendLE<uint64_t>(out, s.offset);
  AppendLE<uint64_t>(out, s.length);
  AppendLE<uint64_t>(out, s.checksum);
}

absl::Status Decode(Cursor& c, uint64_t size, SectionEntry* s,
                    absl::FunctionRef<absl::Status(uint32_t id)> unique) {
  const uint64_t e = c.offset();
  const std::string& where = c.context();
  TQM_RETURN_IF_ERROR(c.Read(&s->id, "id"));
  TQM_RETURN_IF_ERROR(c.Read(&s->flags, "flags"));
  TQM_RETURN_IF_ERROR(c.Read(&s->offset, "offset"));
  TQM_RETURN_IF_ERROR(c.Read(&s->length, "length"));
  TQM_RETURN_IF_ERROR(c.Read(&s->checksum, "checksum"));
  // R12.
  if (s->id == 0) return Loss(where, "section id 0 is never assigned", e);
  // R13.
  TQM_RETURN_IF_ERROR(unique(s->id));
  const std::string sec = "section " + SectionName(s->id);
  // R14.
  if (s->flags & ~format::kKnownSectionFlags) {
    return Unimplemented(
        where,
        absl::StrFormat("%s: flags 0x%x has bits this reader does not know", sec,
                        s->flags),
        e + SectionEntry::kFlagsAt);
  }
  const bool known = s->id >= format::kSectionMetadata && s->id <= format::kSectionData;
  const bool required = (s->flags & format::kSectionFlagRequired) != 0;
  // R15.
  if (!known && required) {
    return Unimplemented(
        where,
        absl::StrFormat("%s is marked REQUIRED but this reader does not know it", sec),
        e + SectionEntry::kIdAt);
  }
  // R16.
  if (s->offset < format::kHeaderSize || s->offset % format::kAlignment != 0) {
    return Loss(where,
                absl::StrFormat("%s: offset %d is not a multiple of 64 of at least 64",
                                sec, s->offset),
                e + SectionEntry::kOffsetAt);
  }
  // R17.
  if (s->offset > size || s->length > size - s->offset) {
    return Loss(where,
                absl::StrFormat("%s (offset %d, length %d) extends past the end of the "
                                "%d-byte file",
                                sec, s->offset, s->length, size),
                e + SectionEntry::kLengthAt);
  }
  // R19 (flag).
  if (known && !required) {
    return Loss(where, absl::StrFormat("%s lacks the REQUIRED flag", sec),
                e + SectionEntry::kFlagsAt);
  }
  return absl::OkStatus();
}

absl::Status Decode(Cursor& c, uint64_t size, SectionEntry* s) {
  return Decode(c, size, s, [](uint32_t) { return absl::OkStatus(); });
}

// ---------------------------------------------------------------------------
// Section head.

void Encode(const SectionHead& h, std::string* out) {
  AppendLE<uint32_t>(out, h.count);
  AppendLE<uint32_t>(out, h.reserved);
}

absl::Status Decode(Cursor& c, const char* count_field, SectionHead* h) {
  TQM_RETURN_IF_ERROR(c.Read(&h->count, count_field));
  h->reserved = 0;
  return c.Reserved32("reserved");
}

// ---------------------------------------------------------------------------
// Metadata entry.

MetaEntryOffsets MetaOffsets(uint16_t key_len) {
  MetaEntryOffsets o;
  o.type = o.key + key_len;
  o.value = o.type + 1;
  return o;
}

void Encode(const MetaEntryRecord& m, std::string* out) {
  AppendLE<uint16_t>(out, m.key.size());
  *out += m.key;
  AppendLE<uint8_t>(out, m.value.type);
  switch (m.value.type) {
    case format::kMetaInt64:
      AppendLE<int64_t>(out, m.value.int64);
      break;
    case format::kMetaFloat64:
      AppendLE<double>(out, m.value.float64);
      break;
    default:
      AppendLE<uint32_t>(out, m.value.bytes.size());
      *out += m.value.bytes;
  }
}

absl::Status Decode(Cursor& c, MetaEntryRecord* m,
                    absl::FunctionRef<absl::Status(
                        const Cursor& c, const std::string& key, uint64_t key_offset)>
                        unique) {
  // R23 (every read), R24.
  uint16_t key_len;
  const uint64_t key_len_off = c.offset();
  TQM_RETURN_IF_ERROR(c.Read(&key_len, "key_len"));
  if (key_len == 0) return Loss(c.context(), "key_len is 0", key_len_off);
  if (key_len > format::kMaxKeyLength) {
    return Exhausted(c.context(),
                     absl::StrFormat("key_len %d exceeds the limit of %d", key_len,
                                     format::kMaxKeyLength),
                     key_len_off);
  }
  absl::Span<const uint8_t> key;
  const uint64_t key_off = c.offset();
  TQM_RETURN_IF_ERROR(c.Bytes(key_len, &key, "key"));
  m->key = AsString(key);
  Rename(&c, Named(c.context(), m->key));
  // R25.
  if (!ValidKey(key)) {
    return Loss(c.context(), "key has characters outside [A-Za-z0-9._-]", key_off);
  }
  // R27.
  TQM_RETURN_IF_ERROR(unique(c, m->key, key_off));
  uint8_t type;
  const uint64_t type_off = c.offset();
  TQM_RETURN_IF_ERROR(c.Read(&type, "type"));
  switch (type) {
    case format::kMetaInt64:
      m->value.type = format::kMetaInt64;
      TQM_RETURN_IF_ERROR(c.Read(&m->value.int64, "INT64 value"));
      break;
    case format::kMetaFloat64:
      m->value.type = format::kMetaFloat64;
      TQM_RETURN_IF_ERROR(c.Read(&m->value.float64, "FLOAT64 value"));
      break;
    case format::kMetaString:
    case format::kMetaBytes: {
      m->value.type = static_cast<format::MetaType>(type);
      uint32_t len;
      absl::Span<const uint8_t> b;
      TQM_RETURN_IF_ERROR(c.Read(&len, "value length"));
      TQM_RETURN_IF_ERROR(c.Bytes(len, &b, "value"));
      m->value.bytes = AsString(b);
      break;
    }
    default:
      // R26.
      return Loss(c.context(), absl::StrFormat("type %d is not 1, 2, 3 or 4", type),
                  type_off);
  }
  return absl::OkStatus();
}

absl::Status Decode(Cursor& c, MetaEntryRecord* m) {
  return Decode(
      c, m, [](const Cursor&, const std::string&, uint64_t) { return absl::OkStatus(); });
}

// ---------------------------------------------------------------------------
// Tensor record.

TensorRecordOffsets TensorOffsets(uint64_t name_len, uint64_t ndim, uint8_t storage,
                                  uint64_t pairs, uint64_t chunk_count) {
  TensorRecordOffsets o;
  o.source_dtype = o.name + name_len;
  o.storage = o.source_dtype + 1;
  o.ndim = o.source_dtype + 2;
  o.bits = o.source_dtype + 3;
  o.layer = o.source_dtype + 4;
  o.dims = o.source_dtype + 8;
  o.params = o.dims + 8 * ndim;
  o.pairs = o.params + (storage == format::kStorageU8Group ? 8 : 0);
  o.chunk_count = o.pairs + 8 * pairs;
  o.reserved1 = o.chunk_count + 4;
  o.chunks = o.chunk_count + TensorRecord::kTailSize;
  o.size = o.chunks + format::kChunkRecordSize * chunk_count;
  return o;
}

bool PairCount(uint8_t storage, absl::Span<const uint64_t> dims, uint32_t group_size,
               uint64_t* pairs) {
  *pairs = 0;
  switch (storage) {
    case format::kStorageU8Tensor:
      *pairs = 1;
      return true;
    case format::kStorageU8Row:
      if (!dims.empty()) *pairs = dims[0];
      return true;
    case format::kStorageU8Group: {
      if (dims.empty() || group_size == 0) return true;
      uint64_t rows = 1;
      for (size_t d = 0; d + 1 < dims.size() && rows != 0; ++d) {
        if (dims[d] != 0 && rows > ~uint64_t{0} / dims[d]) return false;
        rows *= dims[d];
      }
      const uint64_t cols = dims.back();
      const uint64_t per_row = cols / group_size + (cols % group_size != 0);
      if (per_row != 0 && rows > ~uint64_t{0} / per_row) return false;
      *pairs = rows * per_row;
      return true;
    }
    default:
      return true;
  }
}

uint64_t ElementSize(uint8_t storage, uint8_t source_dtype) {
  switch (storage) {
    case format::kStorageF32:
      return 4;
    case format::kStorageRaw:
      return DTypeSize(static_cast<format::SourceDType>(source_dtype));
    default:
      return 1;
  }
}

void Encode(const TensorRecord& t, std::string* out) {
  AppendLE<uint16_t>(out, t.name.size());
  *out += t.name;
  AppendLE<uint8_t>(out, t.source_dtype);
  AppendLE<uint8_t>(out, t.storage);
  AppendLE<uint8_t>(out, t.dims.size());
  AppendLE<uint8_t>(out, t.bits);
  AppendLE<int32_t>(out, t.layer);
  for (uint64_t d : t.dims) AppendLE<uint64_t>(out, d);
  if (t.storage == format::kStorageU8Group) {
    AppendLE<uint32_t>(out, t.group_size);
    AppendLE<uint32_t>(out, t.params_reserved);
  }
  for (const Affine& a : t.params) {
    AppendLE<float>(out, a.scale);
    AppendLE<float>(out, a.zero);
  }
  AppendLE<uint32_t>(out, t.chunk_count);
  AppendLE<uint32_t>(out, t.reserved1);
}

absl::Status Decode(Cursor& c, bool ext, TensorRecord* t,
                    absl::FunctionRef<absl::Status(
                        const Cursor& c, const std::string& name, uint64_t name_offset)>
                        unique) {
  const uint64_t rec = c.offset();
  // R36 (every read), R37, R38.
  uint16_t name_len;
  TQM_RETURN_IF_ERROR(c.Read(&name_len, "name_len"));
  if (name_len == 0) return Loss(c.context(), "name_len is 0", rec);
  if (name_len > format::kMaxNameLength) {
    return Exhausted(c.context(),
                     absl::StrFormat("name_len %d exceeds the limit of %d", name_len,
                                     format::kMaxNameLength),
                     rec);
  }
  absl::Span<const uint8_t> name;
  TQM_RETURN_IF_ERROR(c.Bytes(name_len, &name, "name"));
  t->name = AsString(name);
  Rename(&c, Named(c.context(), t->name));
  const std::string& where = c.context();
  auto nul = std::find(name.begin(), name.end(), 0);
  if (nul != name.end()) {
    return Loss(where, "name contains a 00 byte", rec + 2 + (nul - name.begin()));
  }
  // R40.
  TQM_RETURN_IF_ERROR(unique(c, t->name, rec + 2));
  const uint64_t f = c.offset();  // source_dtype; storage, ndim, bits, layer follow
  uint8_t ndim;
  TQM_RETURN_IF_ERROR(c.Read(&t->source_dtype, "source_dtype"));
  TQM_RETURN_IF_ERROR(c.Read(&t->storage, "storage"));
  TQM_RETURN_IF_ERROR(c.Read(&ndim, "ndim"));
  TQM_RETURN_IF_ERROR(c.Read(&t->bits, ext ? "bits" : "reserved0"));
  TQM_RETURN_IF_ERROR(c.Read(&t->layer, "layer"));
  const uint8_t dtype = t->source_dtype, storage = t->storage, bits = t->bits;
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
  const bool quantized = IsQuantized(storage);
  // R86: RAW storage holds whole elements of a plain dtype.
  if (storage == format::kStorageRaw && dtype == format::kDTypeQ8_0) {
    return Loss(where, "RAW storage of source_dtype 4 (Q8_0)", f);
  }
  // R43. Without elements there is nothing to quantize: 0-d tensors and
  // zero dimensions (R46) only for F32 and RAW storage, in extended files.
  const bool shapeless_ok = ext && !quantized;
  if (ndim == 0 && !shapeless_ok) return Loss(where, "ndim is 0", f + 2);
  if (ndim > format::kMaxDims) {
    return Exhausted(
        where, absl::StrFormat("ndim %d exceeds the limit of %d", ndim, format::kMaxDims),
        f + 2);
  }
  // R44 (reserved0), R87 (bits).
  if (!ext && bits != 0) {
    return Loss(where, absl::StrFormat("reserved0 is %d, must be 0", bits), f + 3);
  }
  if (ext && quantized && (bits < format::kMinBits || bits > format::kMaxBits)) {
    return Loss(where, absl::StrFormat("bits %d is not 1 to 8", bits), f + 3);
  }
  if (ext && !quantized && bits != 0) {
    return Loss(where,
                absl::StrFormat("bits is %d, must be 0 for storage %d", bits, storage),
                f + 3);
  }
  // R45.
  if (t->layer < format::kNoLayer) {
    return Loss(where, absl::StrFormat("layer %d is less than -1", t->layer), f + 4);
  }
  const uint64_t elem = ElementSize(storage, dtype);
  // R46, R47: B = numel * E < 2^62, i.e. B <= kMaxBytes, without overflow.
  constexpr uint64_t kMaxBytes = (uint64_t{1} << 62) - 1;
  t->numel = 1;
  t->dims.clear();
  t->dims.reserve(ndim);
  for (uint8_t d = 0; d < ndim; ++d) {
    uint64_t v;
    const uint64_t dim_off = c.offset();
    TQM_RETURN_IF_ERROR(c.Read(&v, "dims"));
    if (v == 0 && !shapeless_ok) {
      return Loss(where, absl::StrFormat("dims[%d] is 0", d), dim_off);
    }
    if (t->numel != 0 && v > kMaxBytes / elem / t->numel) {
      return Exhausted(where,
                       absl::StrFormat("dims[%d] = %d makes the tensor's byte size reach "
                                       "2^62 (the limit)",
                                       d, v),
                       dim_off);
    }
    t->numel *= v;
    t->dims.push_back(v);
  }
  t->byte_size = t->numel * elem;
  // R88: U8_GROUP parameters start with the group size.
  t->group_size = 0;
  t->params_reserved = 0;
  if (storage == format::kStorageU8Group) {
    const uint64_t g_off = c.offset();
    TQM_RETURN_IF_ERROR(c.Read(&t->group_size, "group_size"));
    TQM_RETURN_IF_ERROR(c.Reserved32("params reserved"));
    if (t->group_size == 0 || t->group_size > format::kMaxGroupSize) {
      return Loss(where,
                  absl::StrFormat("group_size %d is not 1 to %d", t->group_size,
                                  format::kMaxGroupSize),
                  g_off);
    }
  }
  // R36 (parameters backed by bytes before allocating), R48. The shape is
  // valid here, so the count cannot overflow.
  uint64_t n_affine = 0;
  PairCount(storage, t->dims, t->group_size, &n_affine);
  if (n_affine > c.remaining() / 8) {
    return Loss(where,
                absl::StrFormat("%d (scale, zero) pairs of 8 bytes run past the end of "
                                "the section (%d bytes remain)",
                                n_affine, c.remaining()),
                c.offset());
  }
  t->params.resize(n_affine);
  for (uint64_t k = 0; k < n_affine; ++k) {
    const uint64_t p_off = c.offset();
    Affine& a = t->params[k];
    TQM_RETURN_IF_ERROR(c.Read(&a.scale, "scale"));
    TQM_RETURN_IF_ERROR(c.Read(&a.zero, "zero"));
    if (!std::isfinite(a.scale) || !(a.scale > 0)) {
      return Loss(where,
                  absl::StrFormat("params[%d]: scale %g is not finite and greater than 0",
                                  k, a.scale),
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
  const uint64_t cc_off = c.offset();
  TQM_RETURN_IF_ERROR(c.Read(&t->chunk_count, "chunk_count"));
  t->reserved1 = 0;
  TQM_RETURN_IF_ERROR(c.Reserved32("reserved1"));
  if (t->chunk_count > c.remaining() / format::kChunkRecordSize) {
    return Loss(
        where,
        absl::StrFormat("chunk_count %d: its 32-byte records run past the end of the "
                        "section (%d bytes remain)",
                        t->chunk_count, c.remaining()),
        cc_off);
  }
  return absl::OkStatus();
}

absl::Status Decode(Cursor& c, bool extended, TensorRecord* t) {
  return Decode(c, extended, t, [](const Cursor&, const std::string&, uint64_t) {
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------
// Chunk record.

std::string ChunkWhere(const Cursor& c, uint32_t index) {
  return absl::StrFormat("%s: chunk %d", c.context(), index);
}

void Encode(const ChunkRecord& r, std::string* out) {
  AppendLE<uint8_t>(out, r.codec);
  AppendLE<uint8_t>(out, r.reserved0 & 0xFF);
  AppendLE<uint16_t>(out, (r.reserved0 >> 8) & 0xFFFF);
  AppendLE<uint32_t>(out, r.decoded_size);
  AppendLE<uint64_t>(out, r.offset);
  AppendLE<uint32_t>(out, r.encoded_size);
  AppendLE<uint32_t>(out, r.reserved1);
  AppendLE<uint64_t>(out, r.checksum);
}

absl::Status Decode(Cursor& c, const ChunkContext& ctx, ChunkRecord* ch) {
  const uint64_t r = c.offset();
  uint8_t r0a;
  uint16_t r0b;
  TQM_RETURN_IF_ERROR(c.Read(&ch->codec, "codec"));
  TQM_RETURN_IF_ERROR(c.Read(&r0a, "reserved0"));
  TQM_RETURN_IF_ERROR(c.Read(&r0b, "reserved0"));
  TQM_RETURN_IF_ERROR(c.Read(&ch->decoded_size, "decoded_size"));
  TQM_RETURN_IF_ERROR(c.Read(&ch->offset, "offset"));
  TQM_RETURN_IF_ERROR(c.Read(&ch->encoded_size, "encoded_size"));
  TQM_RETURN_IF_ERROR(c.Read(&ch->reserved1, "reserved1"));
  TQM_RETURN_IF_ERROR(c.Read(&ch->checksum, "checksum"));
  ch->reserved0 = r0a | uint32_t{r0b} << 8;
  // Messages name the chunk; the name is built only for an error, so that
  // a valid record costs no allocation.
  // R50, at open (the spec allows deferring it to decode).
  if (!IsKnownCodec(ch->codec)) {
    return Unimplemented(ChunkWhere(c, ctx.index),
                         absl::StrFormat("codec %d (%s) is not supported by this reader",
                                         ch->codec, CodecName(ch->codec)),
                         r + ChunkRecord::kCodecAt);
  }
  // R51.
  if (ch->reserved0 != 0) {
    return Loss(ChunkWhere(c, ctx.index), "reserved0 is not zero",
                r + ChunkRecord::kReserved0At);
  }
  if (ch->reserved1 != 0) {
    return Loss(ChunkWhere(c, ctx.index),
                absl::StrFormat("reserved1 is %d, must be 0", ch->reserved1),
                r + ChunkRecord::kReserved1At);
  }
  // R52.
  if (ch->decoded_size == 0) {
    return Loss(ChunkWhere(c, ctx.index), "decoded_size is 0",
                r + ChunkRecord::kDecodedSizeAt);
  }
  if (ch->decoded_size > format::kMaxChunkDecodedSize) {
    return Exhausted(ChunkWhere(c, ctx.index),
                     absl::StrFormat("decoded_size %d exceeds the limit of %d",
                                     ch->decoded_size, format::kMaxChunkDecodedSize),
                     r + ChunkRecord::kDecodedSizeAt);
  }
  // R53.
  if (ch->encoded_size == 0) {
    return Loss(ChunkWhere(c, ctx.index), "encoded_size is 0",
                r + ChunkRecord::kEncodedSizeAt);
  }
  // R54, R55.
  if (ch->offset % format::kAlignment != 0) {
    return Loss(ChunkWhere(c, ctx.index),
                absl::StrFormat("offset %d is not a multiple of 64", ch->offset),
                r + ChunkRecord::kOffsetAt);
  }
  if (ch->offset < ctx.data_offset || ch->offset - ctx.data_offset > ctx.data_length ||
      ch->encoded_size > ctx.data_length - (ch->offset - ctx.data_offset)) {
    return Loss(
        ChunkWhere(c, ctx.index),
        absl::StrFormat("encoded bytes (offset %d, %d bytes) lie outside the DATA "
                        "section (offset %d, length %d)",
                        ch->offset, ch->encoded_size, ctx.data_offset, ctx.data_length),
        r + ChunkRecord::kOffsetAt);
  }
  // R56.
  if (ch->codec == format::kCodecStored && ch->encoded_size != ch->decoded_size) {
    return Loss(ChunkWhere(c, ctx.index),
                absl::StrFormat("stored chunk has encoded_size %d but decoded_size %d",
                                ch->encoded_size, ch->decoded_size),
                r + ChunkRecord::kEncodedSizeAt);
  }
  // The optional seqtable size bounds: encoded = 2G + 4X + t.
  if (ch->codec == format::kCodecSeqTable) {
    const uint32_t g = ch->decoded_size / 4, tail = ch->decoded_size % 4;
    if (ch->encoded_size < 2 * g + tail || ch->encoded_size > 6 * g + tail ||
        (ch->encoded_size - tail) % 2 != 0) {
      return Loss(
          ChunkWhere(c, ctx.index),
          absl::StrFormat("seqtable encoded_size %d is impossible for decoded_size "
                          "%d (must be 2*%d + 4*escapes + %d)",
                          ch->encoded_size, ch->decoded_size, g, tail),
          r + ChunkRecord::kEncodedSizeAt);
    }
  }
  return absl::OkStatus();
}

}  // namespace layout
}  // namespace tqm
