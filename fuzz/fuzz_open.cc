// Fuzz target: a whole .tqm file from untrusted bytes. Opens it with
// Reader::FromBuffer twice: as given (exercises the header and checksum
// checks) and with every checksum recomputed (file_editor.h), so that
// mutations of the directory, metadata, table and tensor index reach the
// index validation instead of stopping at a checksum. When a file opens, the
// index must satisfy everything Open() promises (checked here independently),
// every chunk is decoded, small tensors are read as floats, and Verify runs.
// Failures must carry the codes the style guide assigns to bad input.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "file_editor.h"
#include "fuzz_check.h"
#include "tqm/format.h"
#include "tqm/reader.h"
#include "tqm/source.h"

namespace {

namespace format = tqm::format;

// Codes a rejected file may produce (STYLE.md, "Errors").
void CheckRejection(const absl::Status& s) {
  FUZZ_CHECK(!s.ok());
  const absl::StatusCode c = s.code();
  if (c != absl::StatusCode::kDataLoss && c != absl::StatusCode::kUnimplemented &&
      c != absl::StatusCode::kResourceExhausted) {
    fprintf(stderr, "unexpected status for bad input: %s\n", s.ToString().c_str());
    abort();
  }
  FUZZ_CHECK(!s.message().empty());
}

// What Open() promises about an index it accepted, checked from scratch.
void CheckIndex(const tqm::Reader& r) {
  const uint64_t size = r.bytes().size();
  FUZZ_CHECK(size >= tqm::format::kHeaderSize);
  FUZZ_CHECK(r.header().file_size == size);
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {
      {0, tqm::format::kHeaderSize},
      {r.header().directory_offset,
       uint64_t{r.header().section_count} * tqm::format::kSectionEntrySize}};
  const tqm::SectionInfo* data = nullptr;
  absl::flat_hash_set<uint32_t> ids;
  for (const tqm::SectionInfo& s : r.sections()) {
    FUZZ_CHECK(ids.insert(s.id).second);
    FUZZ_CHECK(s.offset <= size && s.length <= size - s.offset);
    ranges.push_back({s.offset, s.length});
    if (s.id == tqm::format::kSectionData) data = &s;
  }
  FUZZ_CHECK(data != nullptr);
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    FUZZ_CHECK(ranges[i].first >= ranges[i - 1].first + ranges[i - 1].second);
  }
  FUZZ_CHECK(r.table().size() <= tqm::format::kMaxTableEntries);

  absl::flat_hash_set<std::string> keys;
  for (const tqm::MetaEntry& e : r.metadata()) FUZZ_CHECK(keys.insert(e.key).second);

  // Format 1.3: what the EXTENDED_TENSORS flag allows (spec "Tensor record").
  const bool ext = (r.header().flags & format::kHeaderFlagExtendedTensors) != 0;
  std::vector<std::pair<uint64_t, uint64_t>> chunks;
  for (size_t t = 0; t < r.tensors().size(); ++t) {
    const tqm::TensorInfo& ti = r.tensors()[t];
    FUZZ_CHECK(r.FindTensor(ti.name) == static_cast<int>(t));
    FUZZ_CHECK(ti.source_dtype >= format::kDTypeF32 &&
               ti.source_dtype <= (ext ? format::kMaxDType : format::kMaxDTypeV12));
    FUZZ_CHECK(ti.storage >= format::kStorageF32 &&
               ti.storage <= (ext ? format::kMaxStorage : format::kMaxStorageV12));
    // 0-d tensors and zero dimensions: only unquantized, only with the flag.
    const bool shapeless_ok = ext && !ti.quantized();
    FUZZ_CHECK(ti.dims.size() <= format::kMaxDims);
    FUZZ_CHECK(!ti.dims.empty() || shapeless_ok);
    uint64_t numel = 1;
    for (uint64_t d : ti.dims) {
      FUZZ_CHECK(d >= 1 || shapeless_ok);
      FUZZ_CHECK(numel == 0 || d <= (uint64_t{1} << 62) / numel);
      numel *= d;
    }
    FUZZ_CHECK(numel == ti.numel);
    uint64_t elem = 1;
    if (ti.storage == format::kStorageF32) elem = 4;
    if (ti.raw()) {
      FUZZ_CHECK(ti.source_dtype != format::kDTypeQ8_0);
      elem = tqm::DTypeSize(ti.source_dtype);
    }
    FUZZ_CHECK(elem >= 1 && elem <= 8);
    FUZZ_CHECK(ti.byte_size == elem * numel && ti.byte_size < (uint64_t{1} << 62));
    FUZZ_CHECK(ti.element_size() == elem);
    if (ti.quantized()) {
      FUZZ_CHECK(ti.bits >= format::kMinBits && ti.bits <= format::kMaxBits);
      FUZZ_CHECK(ext || ti.bits == 8);
    } else {
      FUZZ_CHECK(ti.bits == 0);
    }
    size_t n_affine = 0;
    if (ti.storage == format::kStorageU8Tensor) n_affine = 1;
    if (ti.storage == format::kStorageU8Row) n_affine = ti.dims[0];
    if (ti.storage == format::kStorageU8Group) {
      FUZZ_CHECK(ti.group_size >= 1 && ti.group_size <= format::kMaxGroupSize);
      const uint64_t cols = ti.dims.back();
      n_affine = numel / cols * ((cols + ti.group_size - 1) / ti.group_size);
    }
    FUZZ_CHECK(ti.affine.size() == n_affine);
    for (const tqm::Affine& a : ti.affine) {
      FUZZ_CHECK(std::isfinite(a.scale) && a.scale > 0 && std::isfinite(a.zero));
    }
    uint64_t decoded = 0;
    for (size_t c = 0; c < ti.chunks.size(); ++c) {
      const tqm::ChunkInfo& ch = ti.chunks[c];
      FUZZ_CHECK(ch.decoded_offset == decoded);
      FUZZ_CHECK(ch.decoded_size >= 1 && ch.decoded_size <= tqm::format::kMaxChunkDecodedSize);
      FUZZ_CHECK(ch.encoded_size >= 1);
      FUZZ_CHECK(ch.offset >= data->offset && ch.offset - data->offset <= data->length &&
                 ch.encoded_size <= data->length - (ch.offset - data->offset));
      // Stored and seqtable chunks: the decoded bytes are backed by encoded
      // ones (a seqtable code stands for at most 4 bytes). The entropy codecs
      // can legitimately expand far more; their bound is the 4 MiB cap.
      if (ch.codec == tqm::format::kCodecStored || ch.codec == tqm::format::kCodecSeqTable) {
        FUZZ_CHECK(ch.decoded_size <= 2 * uint64_t{ch.encoded_size} + 3);
      }
      auto bytes = r.ChunkBytes(t, c);
      FUZZ_CHECK(bytes.data() == r.bytes().data() + ch.offset);
      FUZZ_CHECK(bytes.size() == ch.encoded_size);
      decoded += ch.decoded_size;
      chunks.push_back({ch.offset, ch.encoded_size});
    }
    FUZZ_CHECK(decoded == ti.byte_size);
    FUZZ_CHECK(ti.chunks.empty() == (ti.byte_size == 0));
    auto in_place = r.InPlace(t);
    if (!in_place.empty()) {
      FUZZ_CHECK(in_place.size() == ti.byte_size);
      FUZZ_CHECK(in_place.data() >= r.bytes().data() &&
                 in_place.data() + in_place.size() <= r.bytes().data() + size);
    }
  }
  std::sort(chunks.begin(), chunks.end());
  for (size_t i = 1; i < chunks.size(); ++i) {
    FUZZ_CHECK(chunks[i].first >= chunks[i - 1].first + chunks[i - 1].second);
  }
}

void Exercise(const tqm::Reader& r) {
  CheckIndex(r);
  std::vector<uint8_t> buf;
  for (size_t t = 0; t < r.tensors().size(); ++t) {
    const tqm::TensorInfo& ti = r.tensors()[t];
    for (size_t c = 0; c < ti.chunks.size(); ++c) {
      // Exactly sized so that ASan sees any write past the chunk.
      std::vector<uint8_t> out(ti.chunks[c].decoded_size);
      absl::Status s = r.DecodeChunk(t, c, absl::MakeSpan(out), /*verify_checksum=*/false);
      if (!s.ok()) CheckRejection(s);
      s = r.DecodeChunk(t, c, absl::MakeSpan(out), /*verify_checksum=*/true);
      if (!s.ok()) CheckRejection(s);
    }
    // Wrong-size buffers and bad indexes are caller errors, not crashes.
    // (An empty tensor has no chunk 0.)
    if (!ti.chunks.empty()) {
      buf.resize(ti.chunks[0].decoded_size + 1);
      FUZZ_CHECK(r.DecodeChunk(t, 0, absl::MakeSpan(buf)).code() ==
                 absl::StatusCode::kInvalidArgument);
    }
    FUZZ_CHECK(r.DecodeChunk(t, ti.chunks.size(), absl::MakeSpan(buf)).code() ==
               absl::StatusCode::kOutOfRange);
    if (ti.numel <= (1u << 20)) {
      std::vector<float> f(ti.numel);
      absl::Status s = r.ReadFloat(t, absl::MakeSpan(f));
      if (!s.ok()) {
        CheckRejection(s);
      } else if (ti.quantized()) {
        // Each element dequantizes with the pair the spec assigns it
        // ("Tensor data"), computed here from the shape alone.
        std::vector<uint8_t> q(ti.byte_size);
        FUZZ_CHECK(r.DecodeTensor(t, absl::MakeSpan(q)).ok());
        const uint64_t cols = ti.dims.back();
        for (uint64_t e = 0; e < ti.numel; ++e) {
          uint64_t k = 0;
          if (ti.storage == format::kStorageU8Row) k = e / (ti.numel / ti.dims[0]);
          if (ti.storage == format::kStorageU8Group) {
            k = e / cols * ((cols + ti.group_size - 1) / ti.group_size) +
                e % cols / ti.group_size;
          }
          const tqm::Affine& a = ti.affine[k];
          const float want = a.scale * (static_cast<float>(q[e]) - a.zero);
          FUZZ_CHECK(std::memcmp(&want, &f[e], sizeof(float)) == 0 ||
                     (std::isnan(want) && std::isnan(f[e])));
        }
      }
    }
  }
  FUZZ_CHECK(r.DecodeChunk(r.tensors().size(), 0, absl::MakeSpan(buf)).code() ==
             absl::StatusCode::kOutOfRange);
  absl::Status v = r.Verify();
  if (!v.ok()) CheckRejection(v);
}

void OpenAndExercise(absl::Span<const uint8_t> bytes) {
  auto r = tqm::Reader::FromBuffer(bytes, "fuzz.tqm");
  if (!r.ok()) {
    CheckRejection(r.status());
    return;
  }
  Exercise(**r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Own copies, exactly sized, so that ASan catches any read past the end.
  std::vector<uint8_t> raw(data, data + size);
  OpenAndExercise(absl::MakeConstSpan(raw));

  std::string fixed(reinterpret_cast<const char*>(data), size);
  tqm_fuzz::FixChecksums(&fixed);
  if (fixed.size() >= 64 && std::memcmp(fixed.data(), data, size) != 0) {
    std::vector<uint8_t> repaired(fixed.begin(), fixed.end());
    OpenAndExercise(absl::MakeConstSpan(repaired));
  }
  return 0;
}
