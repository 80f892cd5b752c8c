// Writer: quantize -> choose the sequence table -> encode chunks -> file.
//
// Passes over the source, each holding one tensor at a time:
//   0. (inputs of at least PackOptions::table_sample_min_groups groups) size
//      the best table on a sample of the chunks; when even an optimistic
//      extrapolation cannot pay for the table, keep none and go to pass 3;
//   1. count the aligned 4-byte groups of every quantized tensor (on the
//      pack threads, in fixed hash partitions);
//   2. for each candidate table size, the exact encoded size of every chunk
//      (chunk = min(seqtable, no-table cost)); the table size with the
//      smallest file wins (each entry costs 4 bytes);
//   3. encode and write.
// Passes 0-2 and the table are skipped when the seqtable codec is disabled.
// Every pass gives the same result whatever the thread count.

#include "tqm/writer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "base/checksum.h"
#include "base/cursor.h"
#include "base/json.h"
#include "base/parallel.h"
#include "codec/entropy.h"
#include "container/layout.h"
#include "tqm/codec.h"
#include "tqm/quantize.h"
#include "tqm/reader.h"
#include "tqm/status.h"
#include "tqm/version.h"

namespace tqm {
namespace {

// Balanced: the fastest codec within 2 % of the smallest encoding.
constexpr double kBalancedSlack = 0.02;
// Speed: the fastest codec that saves at least 3 % over stored, else stored.
constexpr double kSpeedMinSaving = 0.03;

// Where the bytes of a file go: a temporary file or a string.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual absl::Status Append(const std::string& bytes) = 0;
  virtual absl::Status WriteAt(uint64_t offset, const std::string& bytes) = 0;
  virtual uint64_t size() const = 0;
};

class FileSink : public Sink {
 public:
  explicit FileSink(std::unique_ptr<AtomicFile> f) : f_(std::move(f)) {}
  absl::Status Append(const std::string& b) override { return f_->Append(b); }
  absl::Status WriteAt(uint64_t off, const std::string& b) override {
    return f_->WriteAt(off, absl::Span<const uint8_t>(
                                reinterpret_cast<const uint8_t*>(b.data()), b.size()));
  }
  uint64_t size() const override { return f_->size(); }
  AtomicFile* file() { return f_.get(); }

 private:
  std::unique_ptr<AtomicFile> f_;
};

class StringSink : public Sink {
 public:
  absl::Status Append(const std::string& b) override {
    s_ += b;
    return absl::OkStatus();
  }
  absl::Status WriteAt(uint64_t off, const std::string& b) override {
    std::memcpy(&s_[off], b.data(), b.size());
    return absl::OkStatus();
  }
  uint64_t size() const override { return s_.size(); }
  std::string& str() { return s_; }

 private:
  std::string s_;
};

uint64_t Numel(const SourceTensor& t) {
  uint64_t n = 1;
  for (uint64_t d : t.dims) n *= d;
  return n;
}

// Kept tensors are stored as the source holds them.
bool Kept(const SourceTensor& t, const PackOptions& o) {
  return t.kind == TensorKind::kRaw || (o.keep && o.keep(t.name));
}

bool ShouldQuantize(const SourceTensor& t, const PackOptions& o) {
  if (t.kind == TensorKind::kQuantized) return true;
  if (Kept(t, o) || Numel(t) == 0 || t.dims.empty()) return false;
  return o.quantize_all || t.dims.size() >= 2;
}

// What the file stores for a tensor that is not quantized: F32 (converted
// from F16/BF16 unless kept) or RAW in the source dtype.
format::Storage UnquantizedStorage(const SourceTensor& t, const PackOptions& o) {
  return Kept(t, o) && t.dtype != format::kDTypeF32 ? format::kStorageRaw
                                                     : format::kStorageF32;
}

// The grid of float tensor `t`: its PackOptions::tensor_settings entry, else
// the options' own.
QuantSetting SettingFor(const SourceTensor& t, const PackOptions& o) {
  auto it = o.tensor_settings.find(t.name);
  if (it != o.tensor_settings.end()) return it->second;
  return QuantSetting{o.bits, o.granularity, o.group_size};
}

// The storage the grid `g` gives a float tensor that is quantized.
format::Storage QuantizedStorage(const SourceTensor& t, const QuantSetting& g) {
  if (g.granularity == Granularity::kGroup) return format::kStorageU8Group;
  if (g.granularity == Granularity::kRow && t.dims.size() >= 2) {
    return format::kStorageU8Row;
  }
  return format::kStorageU8Tensor;
}

size_t SourceElemSize(format::SourceDType d) {
  const size_t n = DTypeSize(d);
  return n != 0 ? n : 1;  // Q8_0: ignoring the per-block scales
}

using internal::ParallelFor;

// A tensor as the file stores it: its storage, code width, group size,
// parameters and decoded bytes.
struct Stored {
  format::Storage storage = format::kStorageF32;
  uint8_t bits = 0;
  uint32_t group_size = 0;
  std::vector<Affine> affine;
  uint64_t numel = 0;
};

// The (begin, end) element ranges that share one affine pair, in pair
// order, for `storage` over a tensor of shape `dims`.
struct ParamBlocks {
  ParamBlocks(format::Storage storage, const std::vector<uint64_t>& dims,
              uint32_t group_size, uint64_t numel) {
    cols = dims.empty() ? 1 : dims.back();
    switch (storage) {
      case format::kStorageU8Row:
        len = numel / dims[0];
        per_row = 1;
        cols = len;
        break;
      case format::kStorageU8Group:
        len = group_size;
        per_row = (cols + len - 1) / len;
        break;
      default:
        len = cols = numel;
        per_row = 1;
    }
    count = numel == 0 ? 0 : numel / cols * per_row;
  }
  std::pair<uint64_t, uint64_t> operator[](uint64_t k) const {
    const uint64_t r = k / per_row, g = k % per_row;
    const uint64_t b = r * cols + g * len;
    return {b, r * cols + std::min(cols, (g + 1) * len)};
  }
  uint64_t Of(uint64_t e) const { return e / cols * per_row + e % cols / len; }
  uint64_t cols, len, per_row, count;
};

absl::Status QuantizeError(const SourceTensor& t, format::Storage storage, uint64_t k,
                           const absl::Status& s) {
  if (storage == format::kStorageU8Tensor) {
    return absl::InvalidArgumentError(absl::StrFormat("tensor '%s': %s", t.name, s.message()));
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("tensor '%s' %s %d: %s", t.name,
                      storage == format::kStorageU8Row ? "row" : "group", k, s.message()));
}

// Checks what a source returned for an already quantized tensor.
absl::Status CheckQuantized(const SourceTensor& t, const QuantizedTensor& qt) {
  const uint64_t n = Numel(t);
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s': quantized codes: %s", t.name, what));
  };
  if (qt.codes.size() != n) {
    return bad(absl::StrFormat("%d codes, shape says %d", qt.codes.size(), n));
  }
  if (qt.bits < format::kMinBits || qt.bits > format::kMaxBits) {
    return bad(absl::StrFormat("bit width %d is not 1..8", qt.bits));
  }
  if (qt.storage != format::kStorageU8Tensor && qt.storage != format::kStorageU8Row &&
      qt.storage != format::kStorageU8Group) {
    return bad(absl::StrFormat("storage %d is not a quantized storage", qt.storage));
  }
  if (n == 0 || t.dims.empty()) return bad("no elements");
  if (qt.storage == format::kStorageU8Group &&
      (qt.group_size == 0 || qt.group_size > format::kMaxGroupSize)) {
    return bad(absl::StrFormat("group size %d is not 1..%d", qt.group_size,
                               format::kMaxGroupSize));
  }
  const ParamBlocks blocks(qt.storage, t.dims, qt.group_size, n);
  if (qt.params.size() != blocks.count) {
    return bad(absl::StrFormat("%d parameter pairs, the storage needs %d", qt.params.size(),
                               blocks.count));
  }
  for (size_t k = 0; k < qt.params.size(); ++k) {
    const Affine& a = qt.params[k];
    if (!std::isfinite(a.scale) || !(a.scale > 0) || !std::isfinite(a.zero) ||
        std::nearbyint(a.zero) != a.zero) {
      return bad(absl::StrFormat("pair %d (scale %g, zero %g) is invalid", k, a.scale,
                                 a.zero));
    }
  }
  const uint8_t top = static_cast<uint8_t>((1u << qt.bits) - 1);
  for (size_t e = 0; e < n; ++e) {
    if (qt.codes[e] > top) {
      return bad(absl::StrFormat("code %d at element %d exceeds %d bits", qt.codes[e], e,
                                 qt.bits));
    }
  }
  return absl::OkStatus();
}

// Reads float tensor `i` into `f`, checking its size against its shape.
absl::Status ReadFloats(TensorSource& src, size_t i, std::vector<float>* f) {
  const SourceTensor& t = src.tensors()[i];
  TQM_RETURN_IF_ERROR(src.Read(i, f));
  if (f->size() != Numel(t)) {
    return absl::InternalError(absl::StrFormat(
        "tensor '%s': source returned %d values, shape says %d", t.name, f->size(), Numel(t)));
  }
  return absl::OkStatus();
}

// Reads tensor `i` and turns it into what the file stores: `q` gets the
// decoded bytes (codes, float32 or verbatim source bytes), `out` the rest.
absl::Status Prepare(TensorSource& src, size_t i, const PackOptions& o,
                     std::vector<float>* f, std::vector<uint8_t>* q, Stored* out) {
  const SourceTensor& t = src.tensors()[i];
  out->affine.clear();
  out->numel = Numel(t);
  out->bits = 0;
  out->group_size = 0;
  if (t.kind == TensorKind::kQuantized) {
    QuantizedTensor qt;
    TQM_RETURN_IF_ERROR(src.ReadQuantized(i, &qt));
    TQM_RETURN_IF_ERROR(CheckQuantized(t, qt));
    out->storage = qt.storage;
    out->bits = qt.bits;
    out->group_size = qt.storage == format::kStorageU8Group ? qt.group_size : 0;
    out->affine = std::move(qt.params);
    *q = std::move(qt.codes);
    return absl::OkStatus();
  }
  if (!ShouldQuantize(t, o)) {
    out->storage = UnquantizedStorage(t, o);
    if (out->storage == format::kStorageRaw || t.kind == TensorKind::kRaw) {
      std::string raw;
      TQM_RETURN_IF_ERROR(src.ReadRaw(i, &raw));
      const size_t elem = DTypeSize(t.dtype);
      if (elem == 0 || raw.size() != out->numel * elem) {
        return absl::InternalError(absl::StrFormat(
            "tensor '%s': source returned %d bytes, shape and dtype %s say %d", t.name,
            raw.size(), DTypeName(t.dtype), out->numel * elem));
      }
      if (t.dtype == format::kDTypeBool) {
        // The format's BOOL is one byte, 0 or 1.
        for (size_t e = 0; e < raw.size(); ++e) {
          if (static_cast<uint8_t>(raw[e]) > 1) {
            return absl::InvalidArgumentError(absl::StrFormat(
                "tensor '%s': BOOL element %d is %d, not 0 or 1", t.name, e,
                static_cast<uint8_t>(raw[e])));
          }
        }
      }
      out->storage = t.dtype == format::kDTypeF32 ? format::kStorageF32 : format::kStorageRaw;
      q->assign(raw.begin(), raw.end());
      return absl::OkStatus();
    }
    TQM_RETURN_IF_ERROR(ReadFloats(src, i, f));
    q->resize(f->size() * 4);
    if (!f->empty()) std::memcpy(q->data(), f->data(), q->size());
    return absl::OkStatus();
  }
  TQM_RETURN_IF_ERROR(ReadFloats(src, i, f));
  const QuantSetting g = SettingFor(t, o);
  out->storage = QuantizedStorage(t, g);
  out->bits = static_cast<uint8_t>(g.bits);
  out->group_size = out->storage == format::kStorageU8Group ? g.group_size : 0;
  q->resize(f->size());
  const ParamBlocks blocks(out->storage, t.dims, out->group_size, f->size());
  out->affine.resize(blocks.count);
  if (blocks.count == 1) {
    absl::StatusOr<Affine> a = ChooseAffine(*f, g.bits);
    if (!a.ok()) return QuantizeError(t, out->storage, 0, a.status());
    out->affine[0] = *a;
    // Quantize in blocks on the pack threads (element-wise: same bytes).
    constexpr size_t kBlock = size_t{1} << 20;
    const size_t n_blocks = (f->size() + kBlock - 1) / kBlock;
    ParallelFor(n_blocks, o.threads, [&](size_t k) {
      const size_t b = k * kBlock, n = std::min(kBlock, f->size() - b);
      QuantizeAffine(absl::MakeConstSpan(*f).subspan(b, n), *a,
                     absl::MakeSpan(*q).subspan(b, n), g.bits);
    });
    return absl::OkStatus();
  }
  // One task per group of pairs (rows, or the groups of a few rows).
  const uint64_t per_task = std::max<uint64_t>(1, 4096 / std::max<uint64_t>(1, blocks.len));
  const uint64_t tasks = (blocks.count + per_task - 1) / per_task;
  std::vector<absl::Status> errors(tasks);
  ParallelFor(tasks, o.threads, [&](size_t task) {
    const uint64_t k_end = std::min(blocks.count, (task + 1) * per_task);
    for (uint64_t k = task * per_task; k < k_end; ++k) {
      const auto [b, e] = blocks[k];
      auto in = absl::MakeConstSpan(*f).subspan(b, e - b);
      absl::StatusOr<Affine> a = ChooseAffine(in, g.bits);
      if (!a.ok()) {
        errors[task] = QuantizeError(t, out->storage, k, a.status());
        return;
      }
      QuantizeAffine(in, *a, absl::MakeSpan(*q).subspan(b, e - b), g.bits);
      out->affine[k] = *a;
    }
  });
  for (const absl::Status& e : errors) TQM_RETURN_IF_ERROR(e);
  return absl::OkStatus();
}

// Reads tensor `i` (quantized) and quantizes only the byte ranges `ranges`
// (ascending, disjoint) of what Prepare would store, appending them to `out`:
// the same bytes, as quantization is element-wise and the affine pairs come
// from the whole tensor, row or group as there, without quantizing the rest.
absl::Status PrepareSlices(TensorSource& src, size_t i, const PackOptions& o,
                           std::vector<float>* f,
                           const std::vector<std::pair<size_t, size_t>>& ranges,
                           std::vector<uint8_t>* out) {
  const SourceTensor& t = src.tensors()[i];
  if (t.kind == TensorKind::kQuantized) {
    std::vector<uint8_t> q;
    Stored stored;
    TQM_RETURN_IF_ERROR(Prepare(src, i, o, f, &q, &stored));
    for (const auto& [b, e] : ranges) out->insert(out->end(), q.begin() + b, q.begin() + e);
    return absl::OkStatus();
  }
  TQM_RETURN_IF_ERROR(ReadFloats(src, i, f));
  const QuantSetting g = SettingFor(t, o);
  const format::Storage storage = QuantizedStorage(t, g);
  const ParamBlocks blocks(storage, t.dims,
                           storage == format::kStorageU8Group ? g.group_size : 0, f->size());
  uint64_t have = blocks.count;  // the pair `a` belongs to
  Affine a;
  for (const auto& [b, e] : ranges) {
    for (size_t p = b; p < e;) {
      const uint64_t k = blocks.Of(p);
      const auto [kb, ke] = blocks[k];
      if (k != have) {
        absl::StatusOr<Affine> x =
            ChooseAffine(absl::MakeConstSpan(*f).subspan(kb, ke - kb), g.bits);
        if (!x.ok()) return QuantizeError(t, storage, k, x.status());
        a = *x;
        have = k;
      }
      const size_t end = std::min<size_t>(e, ke);
      const size_t at = out->size();
      out->resize(at + (end - p));
      QuantizeAffine(absl::MakeConstSpan(*f).subspan(p, end - p), a,
                     absl::MakeSpan(*out).subspan(at, end - p), g.bits);
      p = end;
    }
  }
  return absl::OkStatus();
}

std::string EncodeMetadata(const std::vector<MetaEntry>& meta) {
  std::string out;
  layout::Encode(layout::SectionHead{static_cast<uint32_t>(meta.size())}, &out);
  for (const MetaEntry& e : meta) layout::Encode(e, &out);
  return out;
}

absl::Status CheckMetadata(const std::vector<MetaEntry>& meta) {
  absl::flat_hash_map<std::string, int> seen;
  for (const MetaEntry& e : meta) {
    if (e.key.empty() || e.key.size() > format::kMaxKeyLength) {
      return absl::InvalidArgumentError(absl::StrFormat("metadata key '%s' has bad length", e.key));
    }
    for (char c : e.key) {
      if (!(isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
        return absl::InvalidArgumentError(
            absl::StrFormat("metadata key '%s' has characters outside [A-Za-z0-9._-]", e.key));
      }
    }
    if (e.value.type == format::kMetaString && !json::IsValidUtf8(e.value.bytes)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("metadata '%s': STRING value is not valid UTF-8", e.key));
    }
    if (e.value.bytes.size() > 0xFFFFFFFFu) {
      return absl::InvalidArgumentError(absl::StrFormat("metadata '%s' too large", e.key));
    }
    if (!seen.emplace(e.key, 0).second) {
      return absl::InvalidArgumentError(absl::StrFormat("duplicate metadata key '%s'", e.key));
    }
  }
  return absl::OkStatus();
}

// Counts 4-byte groups in bounded memory. Exact while fewer than `cap`
// distinct groups have been seen; past that it prunes (lossy counting): every
// group whose count is at most the current threshold is dropped and the
// threshold rises, so a group that survives is undercounted by at most the
// threshold. Frequent groups, the only ones a table wants, survive. The exact
// file size of the resulting ranking is measured in pass 2 regardless.
class GroupCounter {
 public:
  explicit GroupCounter(size_t cap) : cap_(cap) {}
  void Add(uint32_t g) {
    ++counts_[g];
    if (counts_.size() > cap_) Prune();
  }
  const absl::flat_hash_map<uint32_t, uint64_t>& counts() const { return counts_; }
  uint64_t prunes() const { return prunes_; }

 private:
  void Prune() {
    // Raise the threshold until at least half the entries go.
    while (counts_.size() > cap_ / 2) {
      ++threshold_;
      absl::erase_if(counts_, [t = threshold_](const auto& kv) { return kv.second <= t; });
    }
    ++prunes_;
  }
  size_t cap_;
  uint64_t threshold_ = 0;
  uint64_t prunes_ = 0;
  absl::flat_hash_map<uint32_t, uint64_t> counts_;
};

// Sorts `v` ascending: an LSD radix sort in three passes of 11 bits, with
// `tmp` (resized to v's size) as the other buffer. Several times faster than
// std::sort or hashing for the millions of mostly distinct groups of a
// weight tensor.
void RadixSort(std::vector<uint32_t>* v, std::vector<uint32_t>* tmp) {
  constexpr int kBits = 11, kBuckets = 1 << kBits;
  const size_t n = v->size();
  tmp->resize(n);
  std::vector<size_t> hist(3 * kBuckets, 0);
  for (uint32_t x : *v) {
    ++hist[x & (kBuckets - 1)];
    ++hist[kBuckets + ((x >> kBits) & (kBuckets - 1))];
    ++hist[2 * kBuckets + (x >> (2 * kBits))];
  }
  uint32_t* src = v->data();
  uint32_t* dst = tmp->data();
  for (int pass = 0; pass < 3; ++pass) {
    size_t* h = &hist[pass * kBuckets];
    size_t sum = 0;
    for (int b = 0; b < kBuckets; ++b) {
      const size_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    const int shift = pass * kBits;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t x = src[i];
      dst[h[(x >> shift) & (kBuckets - 1)]++] = x;
    }
    std::swap(src, dst);
  }
  v->swap(*tmp);  // three passes: the sorted values are in tmp's buffer
}

// The groups of `groups` (in any order) that occur at least twice, as
// (count, group), counted exactly by sorting. `groups` is left sorted.
std::vector<std::pair<uint64_t, uint32_t>> RepeatedGroups(std::vector<uint32_t>* groups) {
  std::vector<uint32_t> tmp;
  RadixSort(groups, &tmp);
  std::vector<std::pair<uint64_t, uint32_t>> out;
  const std::vector<uint32_t>& g = *groups;
  for (size_t i = 0; i < g.size();) {
    size_t j = i + 1;
    while (j < g.size() && g[j] == g[i]) ++j;
    if (j - i >= 2) out.push_back({j - i, g[i]});
    i = j;
  }
  return out;
}

// Appends the aligned 4-byte groups of `q` (a trailing partial group is
// ignored) to `groups`.
void AppendGroups(absl::Span<const uint8_t> q, std::vector<uint32_t>* groups) {
  const size_t n = q.size() / 4, old = groups->size();
  groups->resize(old + n);
  if (n > 0) std::memcpy(groups->data() + old, q.data(), 4 * n);
}

// GroupCounters over fixed hash partitions of the group values, so that pass
// 1 runs on the pack threads: a window of groups is scattered by partition
// (in parallel over blocks), then each partition counts its groups in input
// order (in parallel over partitions). What each partition sees, and so every
// count and prune, depends only on the input, never on the thread count.
// Without pruning the counts are exact, as with one counter. The partition
// count is fixed by `cap` (64 partitions of cap/64 groups for the default
// cap; one partition for caps under 2^17, as small caps are for tests).
class PartitionedGroupCounter {
 public:
  explicit PartitionedGroupCounter(size_t cap) {
    while (shift_ < kMaxPartitionBits && (cap >> (shift_ + 1)) >= kMinPartitionCap)
      ++shift_;
    const size_t parts = size_t{1} << shift_;
    parts_.assign(parts, GroupCounter(std::max<size_t>(1, cap / parts)));
  }

  // Counts the aligned groups of `q` (a trailing partial group is ignored).
  void Add(absl::Span<const uint8_t> q, unsigned threads) {
    const size_t groups = q.size() / 4;
    if (parts_.size() == 1) {
      for (size_t g = 0; g < groups; ++g) parts_[0].Add(Load(q, g));
      return;
    }
    const size_t parts = parts_.size();
    for (size_t w = 0; w < groups; w += kWindowGroups) {
      const size_t n = std::min(kWindowGroups, groups - w);
      const size_t blocks = (n + kBlockGroups - 1) / kBlockGroups;
      bins_.resize(std::max(bins_.size(), blocks * parts));
      ParallelFor(blocks, threads, [&](size_t b) {
        std::vector<uint32_t>* bin = &bins_[b * parts];
        for (size_t p = 0; p < parts; ++p) bin[p].clear();
        const size_t end = w + std::min(n, (b + 1) * kBlockGroups);
        for (size_t g = w + b * kBlockGroups; g < end; ++g) {
          const uint32_t v = Load(q, g);
          bin[Partition(v)].push_back(v);
        }
      });
      ParallelFor(parts, threads, [&](size_t p) {
        for (size_t b = 0; b < blocks; ++b) {
          for (uint32_t v : bins_[b * parts + p]) parts_[p].Add(v);
        }
      });
    }
  }

  uint64_t prunes() const {
    uint64_t n = 0;
    for (const GroupCounter& c : parts_) n += c.prunes();
    return n;
  }

  // The groups counted at least `min_count` times, as (count, group).
  std::vector<std::pair<uint64_t, uint32_t>> Groups(uint64_t min_count) const {
    std::vector<std::pair<uint64_t, uint32_t>> out;
    for (const GroupCounter& c : parts_) {
      for (const auto& [g, n] : c.counts()) {
        if (n >= min_count) out.push_back({n, g});
      }
    }
    return out;
  }

 private:
  static constexpr int kMaxPartitionBits = 6;
  static constexpr size_t kMinPartitionCap = size_t{1} << 16;
  static constexpr size_t kWindowGroups = size_t{1} << 22;  // 16 MiB of groups
  static constexpr size_t kBlockGroups = size_t{1} << 16;

  static uint32_t Load(absl::Span<const uint8_t> q, size_t g) {
    uint32_t v;
    std::memcpy(&v, &q[4 * g], 4);
    return v;
  }
  size_t Partition(uint32_t v) const { return (v * 0x9E3779B1u) >> (32 - shift_); }

  int shift_ = 0;
  std::vector<GroupCounter> parts_;
  std::vector<std::vector<uint32_t>> bins_;  // [block][partition], reused
};

// Decode speed rank of each candidate encoding, fastest first (measured by
// tqm-bench and tqm-codec-bench: stored is memcpy or in place, seqtable a
// table lookup per 4 bytes, lanes 16 codes per vector instruction with
// AVX-512 VBMI (2x Huffman on 256 KiB chunks), Huffman a table lookup per byte over 8 streams,
// five codes per 64-bit load when they are at most 11 bits long and four
// when they reach 12 (~13 % slower), rANS a division-free state update per
// byte, zstd its own decoder).
enum SpeedRank : int {
  kRankStored = 0,
  kRankSeqTable = 1,
  kRankLanes = 2,
  kRankHuffman11 = 3,  // Huffman with codes of at most 11 bits
  kRankHuffman = 4,    // EncodeHuffman's choice of 11 or 12 bits
  kRankRans = 5,
  kRankZstd = 6,
};

struct EncodedChunk {
  absl::Status status;
  uint8_t codec = format::kCodecStored;
  std::string bytes;
  uint64_t groups = 0;
  uint64_t escaped_groups = 0;
};

// Encodes one chunk with every codec the profile allows and keeps the one the
// profile prefers (writer.h, Profile).
EncodedChunk EncodeChunk(absl::Span<const uint8_t> in, bool quantized, const SeqTable& table,
                         const PackOptions& o) {
  EncodedChunk best;
  best.bytes.assign(reinterpret_cast<const char*>(in.data()), in.size());
  if (!quantized) return best;  // float32 stays stored: used in place
  best.groups = in.size() / 4;
  best.escaped_groups = best.groups;  // an empty table escapes every group
  if (table.size() > 0) {
    best.escaped_groups = 0;
    for (size_t g = 0; g < best.groups; ++g) {
      uint32_t v;
      std::memcpy(&v, &in[4 * g], 4);
      best.escaped_groups += table.Lookup(v) == format::kEscape;
    }
  }
  struct Candidate {
    uint8_t codec;
    int rank;  // SpeedRank
    std::string bytes;
  };
  std::vector<Candidate> cands;
  cands.push_back({format::kCodecStored, kRankStored, best.bytes});
  if (table.size() > 0) {
    Candidate c{format::kCodecSeqTable, kRankSeqTable, {}};
    EncodeSeqTable(in, table, &c.bytes);
    cands.push_back(std::move(c));
  }
  if (o.entropy) {
    Candidate h{format::kCodecHuffman, kRankHuffman, {}}, r{format::kCodecRans, kRankRans, {}};
    // Balanced and speed also weigh 11-bit codes, which EncodeHuffman takes
    // only when they cost < 0.25 % more: they decode ~13 % faster, and the
    // profile's own rule decides whether the size is worth it.
    Candidate h11{format::kCodecHuffman, kRankHuffman11, {}};
    absl::Status s = entropy_internal::EncodeHuffmanAndShortCodes(
        in, &h.bytes, o.profile == Profile::kSize ? nullptr : &h11.bytes);
    if (s.ok()) s = EncodeRans(in, &r.bytes);
    if (!s.ok()) {
      best.status = s;
      return best;
    }
    if (!h11.bytes.empty()) cands.push_back(std::move(h11));
    cands.push_back(std::move(h));
    cands.push_back(std::move(r));
    if (o.lanes && o.target != DecodeTarget::kPortable) {
      Candidate l{format::kCodecLanes,
                  o.target == DecodeTarget::kAvx2 ? kRankHuffman : kRankLanes,
                  {}};
      s = EncodeLanes(in, &l.bytes);
      if (!s.ok()) {
        best.status = s;
        return best;
      }
      cands.push_back(std::move(l));
    }
    if (o.profile == Profile::kSize && o.zstd_level > 0) {
      Candidate z{format::kCodecZstd, kRankZstd, {}};
      s = EncodeZstd(in, o.zstd_level, &z.bytes);
      if (!s.ok()) {
        best.status = s;
        return best;
      }
      cands.push_back(std::move(z));
    }
  }
  size_t smallest = 0;
  for (size_t i = 1; i < cands.size(); ++i) {
    if (cands[i].bytes.size() < cands[smallest].bytes.size()) smallest = i;
  }
  const double s_min = static_cast<double>(cands[smallest].bytes.size());
  const double stored = static_cast<double>(in.size());
  auto eligible = [&](size_t i) {
    const double size = static_cast<double>(cands[i].bytes.size());
    switch (o.profile) {
      case Profile::kSize:
        return size == s_min;
      case Profile::kBalanced:
        return size <= s_min * (1.0 + kBalancedSlack);
      case Profile::kSpeed:
        if (s_min > stored * (1.0 - kSpeedMinSaving)) {
          return cands[i].codec == format::kCodecStored;
        }
        return size <= stored * (1.0 - kSpeedMinSaving);
    }
    return false;
  };
  size_t pick = eligible(smallest) ? smallest : 0;  // candidate 0 is stored
  for (size_t i = 0; i < cands.size(); ++i) {
    if (!eligible(i)) continue;
    const int ri = cands[i].rank, rp = cands[pick].rank;
    if (ri < rp || (ri == rp && cands[i].bytes.size() < cands[pick].bytes.size())) pick = i;
  }
  best.codec = cands[pick].codec;
  best.bytes = std::move(cands[pick].bytes);
  return best;
}

// Candidate table sizes: 0, then roughly x1.25 steps up to `limit`.
std::vector<uint32_t> Candidates(uint32_t limit) {
  std::vector<uint32_t> c = {0};
  for (double k = 1; k < limit; k = std::max(k + 1, k * 1.25)) {
    c.push_back(static_cast<uint32_t>(k));
  }
  if (limit > 0) c.push_back(limit);
  c.erase(std::unique(c.begin(), c.end()), c.end());
  return c;
}

// [begin, end) byte ranges of at most `chunk` bytes covering n bytes.
std::vector<std::pair<size_t, size_t>> SplitChunks(size_t n, size_t chunk) {
  std::vector<std::pair<size_t, size_t>> r;
  for (size_t b = 0; b < n; b += chunk) r.push_back({b, std::min(n, b + chunk)});
  return r;
}

absl::Span<const uint8_t> AsBytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// The tensor being worked on: source floats, stored bytes, affine pairs.
struct Scratch {
  std::vector<float> f;
  std::vector<uint8_t> q;
  Stored stored;
};

uint64_t ChunkCount(const SourceTensor& t, const PackOptions& o) {
  return (Numel(t) + o.chunk_size - 1) / o.chunk_size;  // u8: one byte a weight
}

// The aligned 4-byte groups of every quantized tensor (what pass 1 counts).
uint64_t QuantizedGroups(const std::vector<SourceTensor>& tensors, const PackOptions& o) {
  uint64_t groups = 0;
  for (const SourceTensor& t : tensors) {
    if (ShouldQuantize(t, o)) groups += Numel(t) / 4;
  }
  return groups;
}

void Progress(const PackOptions& o, PackProgress* prog, size_t i, uint64_t bytes) {
  prog->tensor = i + 1;
  prog->bytes_done += bytes;
  if (o.progress) o.progress(*prog);
}

// What a chunk costs without the table: min(stored, entropy-coded), the
// latter estimated by the order-0 bound plus a small header.
uint64_t NoTableCost(absl::Span<const uint8_t> chunk, const PackOptions& o) {
  uint64_t alt = chunk.size();
  if (o.entropy) {
    const double bits = Order0EntropyBits(chunk);
    alt = std::min<uint64_t>(alt, static_cast<uint64_t>(bits / 8) + 64);
  }
  return alt;
}

// What a chunk costs in seqtable: 2 bytes a hit, 6 an escape, the tail raw.
uint64_t SeqTableCost(uint64_t groups, uint64_t hits, uint64_t tail) {
  return 2 * hits + 6 * (groups - hits) + tail;
}

// NoTableCost of a chunk of `chunk_bytes` estimated from a slice of it: the
// slice's order-0 bound with the Miller-Madow correction (the plug-in entropy
// of a sample is biased low; the correction errs towards a dearer chunk,
// which favours the table), scaled to the chunk.
uint64_t NoTableCostFromSlice(absl::Span<const uint8_t> slice, uint64_t chunk_bytes,
                              const PackOptions& o) {
  if (!o.entropy || slice.empty()) return chunk_bytes;
  uint32_t counts[256];
  entropy_internal::Histogram(slice, counts);
  const double n = static_cast<double>(slice.size());
  double bits = 0;
  int used = 0;
  for (uint32_t c : counts) {
    if (c == 0) continue;
    bits += c * std::log2(n / c);
    ++used;
  }
  bits += (used - 1) / (2 * std::log(2.0));
  return std::min<uint64_t>(chunk_bytes,
                            static_cast<uint64_t>(bits * (chunk_bytes / n) / 8) + 64);
}

// hist[j] += the groups of `chunk` that a table of the cand[j] best-ranked
// groups holds and one of cand[j - 1] does not (cand[0] is 0, cand ascends),
// so the hits of table cand[j] are hist[1] + ... + hist[j].
void CountHits(absl::Span<const uint8_t> chunk,
               const absl::flat_hash_map<uint32_t, uint32_t>& rank,
               const std::vector<uint32_t>& cand, std::vector<uint64_t>* hist) {
  for (size_t g = 0; g + 4 <= chunk.size(); g += 4) {
    uint32_t v;
    std::memcpy(&v, &chunk[g], 4);
    auto it = rank.find(v);
    if (it == rank.end()) continue;
    // First candidate whose table includes rank r: cand[j] > r.
    ++(*hist)[std::upper_bound(cand.begin(), cand.end(), it->second) - cand.begin()];
  }
}

// Groups most frequent first, ties by value (the table is a pure function of
// the input), at most `limit`.
void RankGroups(std::vector<std::pair<uint64_t, uint32_t>>* ranked, uint32_t limit) {
  std::sort(ranked->begin(), ranked->end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  if (ranked->size() > limit) ranked->resize(limit);
}

absl::flat_hash_map<uint32_t, uint32_t> RankIndex(
    const std::vector<std::pair<uint64_t, uint32_t>>& ranked) {
  absl::flat_hash_map<uint32_t, uint32_t> rank;
  rank.reserve(ranked.size());
  for (uint32_t r = 0; r < ranked.size(); ++r) rank[ranked[r].second] = r;
  return rank;
}

// The sampled table search (pass 0) looks at a slice of each chunk: 1/16 of
// it (kSampleEvery), more when that would make a sample under
// kMinSampleBytes (small samples overfit), at least kMinSliceGroups groups.
// Past kMaxSampleBytes (which keeps its group counts within the default bound
// of the full count) or kMaxSampledChunks it takes evenly spaced chunks
// instead of all of them.
constexpr uint64_t kSampleEvery = 16;
// Pass 1 counts by sorting (RepeatedGroups) when the quantized tensors hold
// at most this many groups (16 MiB of them, 32 MiB while sorting; the hash
// counter's default bound of 2^22 groups takes 64 MiB or more) and the
// counting bound is not smaller.
constexpr uint64_t kSortCountMaxGroups = uint64_t{1} << 22;
constexpr uint64_t kMinSampleBytes = uint64_t{1} << 20;
constexpr uint64_t kMaxSampleBytes = uint64_t{16} << 20;
constexpr uint64_t kMinSliceGroups = 64;
constexpr uint64_t kMaxSampledChunks = uint64_t{1} << 16;
// The sample is first judged when it reaches this size, then each time it
// has doubled (SampledTableMayPay stops at the first "may pay").
constexpr uint64_t kFirstCheckpointBytes = uint64_t{1} << 20;
// Optimism of the estimate: of the hits h and escapes g - h that a chunk's
// slice suggests, whichever is fewer is taken to be off by kHitError of
// itself, in the table's favour, plus kHitSlack of the groups. (Sampling
// error is symmetric in hits and escapes; a plain factor on the hits would
// call a chunk with 80 % hits all hits, and tables that cannot pay, such as
// the one for Gaussian weights with 30-sigma outliers next to Huffman and
// rANS, would be searched in full.)
constexpr double kHitError = 0.25;
constexpr double kHitSlack = 0.02;

// One chunk of the sample: its slice, in the sample's pool, and the size of
// the whole chunk.
struct SampledChunk {
  size_t begin = 0, end = 0;
  uint64_t groups = 0, tail = 0;
};

// Whether some table of the sample's repeating groups saves more than it
// costs, by the optimistic estimate described at SampledTableMayPay; `scale`
// is all groups / groups of the sampled chunks.
bool SampleSaysTableMayPay(const std::vector<uint8_t>& pool,
                           const std::vector<SampledChunk>& chunks, double scale,
                           const PackOptions& o) {
  // The sample's own best tables: its groups seen twice or more.
  std::vector<std::pair<uint64_t, uint32_t>> ranked;
  {
    std::vector<uint32_t> groups;
    AppendGroups(pool, &groups);
    ranked = RepeatedGroups(&groups);
  }
  RankGroups(&ranked, o.max_table_entries);
  const std::vector<uint32_t> cand = Candidates(static_cast<uint32_t>(ranked.size()));
  const absl::flat_hash_map<uint32_t, uint32_t> rank = RankIndex(ranked);

  // What each candidate table saves (optimistically) over none, summed per
  // block of chunks on the pack threads (integers: order-independent).
  constexpr size_t kBlock = 64;
  const size_t blocks = (chunks.size() + kBlock - 1) / kBlock;
  std::vector<uint64_t> part(cand.size() * blocks, 0);
  ParallelFor(blocks, o.threads, [&](size_t blk) {
    uint64_t* saved = &part[cand.size() * blk];
    std::vector<uint64_t> hist(cand.size());
    for (size_t k = blk * kBlock; k < std::min(chunks.size(), (blk + 1) * kBlock); ++k) {
      const SampledChunk& c = chunks[k];
      const auto piece = absl::MakeConstSpan(pool).subspan(c.begin, c.end - c.begin);
      std::fill(hist.begin(), hist.end(), 0);
      CountHits(piece, rank, cand, &hist);
      const uint64_t alt = NoTableCostFromSlice(piece, 4 * c.groups + c.tail, o);
      const double per_hit = static_cast<double>(c.groups) / (piece.size() / 4);
      const double g = static_cast<double>(c.groups);
      const uint64_t none = std::min(SeqTableCost(c.groups, 0, c.tail), alt);
      uint64_t hits = 0;
      for (size_t j = 1; j < cand.size(); ++j) {
        hits += hist[j];
        if (hits == 0) continue;
        const double est = per_hit * hits;
        const double opt = est + kHitError * std::min(est, g - est) + kHitSlack * g;
        const uint64_t h =
            std::min<uint64_t>(c.groups, static_cast<uint64_t>(std::ceil(opt)));
        saved[j] += none - std::min(SeqTableCost(c.groups, h, c.tail), alt);
      }
    }
  });
  std::vector<uint64_t> saved(cand.size(), 0);
  for (size_t blk = 0; blk < blocks; ++blk) {
    for (size_t j = 0; j < cand.size(); ++j) saved[j] += part[cand.size() * blk + j];
  }
  for (size_t j = 1; j < cand.size(); ++j) {
    if (scale * static_cast<double>(saved[j]) > 4.0 * cand[j]) return true;
  }
  return false;
}

// Pass 0: whether a table may pay, judged on a sample. Every chunk of the
// quantized tensors (or, past the caps above, chunk floor((2i + 1) C / 2S)
// for i < S of the C, in tensor order) contributes one contiguous slice of
// its groups, at an offset that rotates from chunk to chunk; only the slices
// are quantized, and a tensor without a sampled chunk is not read. The best
// tables for the sample (the groups seen at least twice in it, most frequent
// first, every candidate size of pass 2) are then sized chunk by chunk as
// pass 2 does, a chunk's hits and cost without a table estimated from its
// slice and both leaning towards the table (kHitError, kHitSlack,
// NoTableCostFromSlice); the saving over no table, scaled by all groups /
// groups of the sampled chunks, is compared with the table's 4 bytes an
// entry. Optimistic on purpose: the table is fitted to the very slices it is
// judged on and the hits are inflated, so a table that pays on the whole
// input should look better still here; "no" means even this estimate cannot
// pay for a table. When the sample is the whole input (every chunk, whole
// slices: inputs of about 1 MiB) the estimate of each candidate is at least
// its exact saving in pass 2 (same ranking unless pass 1 prunes; up to the
// few bytes of a tensor's last partial group), so "no" is then exact. A "may pay" from the sample so far (judged at tensor ends
// each time it has doubled) ends the pass early: the full search decides
// then, and the file does not depend on this pass. Deterministic: the sample
// and the points where it is judged depend only on the input and the
// options, never on `threads`.
absl::StatusOr<bool> SampledTableMayPay(TensorSource& src, const PackOptions& o,
                                        Scratch* s, PackProgress* prog) {
  const auto& tensors = src.tensors();
  uint64_t total_chunks = 0, total_groups = 0;
  for (const SourceTensor& t : tensors) {
    if (!ShouldQuantize(t, o)) continue;
    total_chunks += ChunkCount(t, o);
    total_groups += Numel(t) / 4;
  }
  if (total_groups == 0) return false;  // nothing a table could hold
  const uint64_t chunk_groups = o.chunk_size / 4;
  const uint64_t slice = std::clamp<uint64_t>(
      std::max(chunk_groups / kSampleEvery, kMinSampleBytes / 4 / total_chunks),
      std::min(kMinSliceGroups, chunk_groups), chunk_groups);
  const uint64_t slots = chunk_groups / slice;  // slice offsets rotate over these
  const uint64_t samples = std::clamp<uint64_t>(
      std::min(kMaxSampleBytes / (4 * slice), kMaxSampledChunks), 1, total_chunks);
  // The i-th sampled chunk, floor((2i + 1) C / 2S), without overflow: with
  // C = 2S q + r, it is (2i + 1) q + floor((2i + 1) r / 2S), r < 2S <= 2^17.
  const uint64_t per = total_chunks / (2 * samples), rest = total_chunks % (2 * samples);
  auto sample_chunk = [&](uint64_t i) {
    return (2 * i + 1) * per + (2 * i + 1) * rest / (2 * samples);
  };

  // Quantize each sampled chunk's slice (only the slices) into `pool`. Once
  // the sample so far says a table may pay, stop: the full search decides
  // then, and its file does not depend on this pass. (Checked at tensor ends
  // each time the sample has doubled, so at most twice the final work.)
  std::vector<uint8_t> pool;
  std::vector<SampledChunk> chunks;
  size_t checkpoint = kFirstCheckpointBytes, judged = 0;  // pool sizes
  std::vector<std::pair<size_t, size_t>> ranges;          // slices of one tensor
  uint64_t chunk_groups_sampled = 0;
  auto scale = [&] { return static_cast<double>(total_groups) / chunk_groups_sampled; };
  uint64_t next = 0, first = 0;  // next sample; global index of tensor's chunk 0
  prog->pass = 1;
  prog->bytes_done = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SourceTensor& t = tensors[i];
    if (ShouldQuantize(t, o)) {
      const uint64_t n = ChunkCount(t, o), bytes = Numel(t);
      ranges.clear();
      size_t end = pool.size();
      for (; next < samples && sample_chunk(next) < first + n; ++next) {
        const uint64_t j = sample_chunk(next);
        const uint64_t b = (j - first) * o.chunk_size;
        const uint64_t e = std::min<uint64_t>(bytes, b + o.chunk_size);
        SampledChunk c;
        c.groups = (e - b) / 4;
        c.tail = (e - b) % 4;
        if (c.groups == 0) continue;
        const uint64_t off =
            std::min((j % slots) * slice, c.groups > slice ? c.groups - slice : 0);
        const uint64_t len = std::min(slice, c.groups - off);
        ranges.push_back({b + 4 * off, b + 4 * (off + len)});
        c.begin = end;
        c.end = end += 4 * len;
        chunks.push_back(c);
        chunk_groups_sampled += c.groups;
      }
      if (!ranges.empty()) {
        TQM_RETURN_IF_ERROR(PrepareSlices(src, i, o, &s->f, ranges, &pool));
      }
      first += n;
    }
    Progress(o, prog, i, Numel(t) * 4);
    if (pool.size() >= checkpoint) {
      judged = pool.size();
      if (SampleSaysTableMayPay(pool, chunks, scale(), o)) return true;
      while (checkpoint <= pool.size()) checkpoint *= 2;
    }
  }
  if (chunks.empty()) return true;  // nothing to judge by: search in full
  return judged != pool.size() && SampleSaysTableMayPay(pool, chunks, scale(), o);
}

// Passes 1 and 2: the table that minimises the file. Fills the table fields
// of `st`.
absl::StatusOr<std::vector<uint32_t>> SearchTable(TensorSource& src, const PackOptions& o,
                                                  Scratch* s, PackProgress* prog,
                                                  PackStats* st) {
  const auto& tensors = src.tensors();
  // Pass 1: count groups; keep those that repeat.
  std::vector<std::pair<uint64_t, uint32_t>> ranked;
  const uint64_t total_groups = QuantizedGroups(tensors, o);
  prog->pass = 1;
  prog->bytes_done = 0;
  if (total_groups <= std::min<uint64_t>(kSortCountMaxGroups, o.max_counted_groups)) {
    // Every group fits in memory within the counting bound: count exactly
    // by sorting, which is what the hash counter computes when it does not
    // prune, at a fraction of the time.
    std::vector<uint32_t> groups;
    groups.reserve(total_groups);
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (ShouldQuantize(tensors[i], o)) {
        TQM_RETURN_IF_ERROR(Prepare(src, i, o, &s->f, &s->q, &s->stored));
        AppendGroups(s->q, &groups);
      }
      Progress(o, prog, i, Numel(tensors[i]) * 4);
    }
    ranked = RepeatedGroups(&groups);
  } else {
    PartitionedGroupCounter counts(o.max_counted_groups);
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (ShouldQuantize(tensors[i], o)) {
        TQM_RETURN_IF_ERROR(Prepare(src, i, o, &s->f, &s->q, &s->stored));
        counts.Add(s->q, o.threads);
      }
      Progress(o, prog, i, Numel(tensors[i]) * 4);
    }
    ranked = counts.Groups(2);
    st->group_count_prunes = counts.prunes();
  }
  RankGroups(&ranked, o.max_table_entries);

  // Pass 2: exact file-size cost of each candidate table size.
  const std::vector<uint32_t> cand = Candidates(static_cast<uint32_t>(ranked.size()));
  const absl::flat_hash_map<uint32_t, uint32_t> rank = RankIndex(ranked);
  std::vector<uint64_t> total(cand.size(), 0);
  std::vector<uint64_t> seq_only(cand.size(), 0);  // every chunk seqtable
  prog->pass = 2;
  prog->bytes_done = 0;
  for (size_t i = 0; i < tensors.size() && cand.size() > 1; ++i) {
    if (ShouldQuantize(tensors[i], o)) {
      TQM_RETURN_IF_ERROR(Prepare(src, i, o, &s->f, &s->q, &s->stored));
      const std::vector<uint8_t>& q = s->q;
      // Per chunk on the pack threads, then summed (order-independent).
      const auto chunks = SplitChunks(q.size(), o.chunk_size);
      std::vector<uint64_t> part(2 * cand.size() * chunks.size(), 0);
      ParallelFor(chunks.size(), o.threads, [&](size_t k) {
        const auto [b, e] = chunks[k];
        const auto chunk = absl::MakeConstSpan(q).subspan(b, e - b);
        std::vector<uint64_t> hist(cand.size(), 0);
        CountHits(chunk, rank, cand, &hist);
        const uint64_t groups = (e - b) / 4, tail = (e - b) % 4;
        const uint64_t alt = NoTableCost(chunk, o);
        uint64_t hits = 0;
        uint64_t* out = &part[2 * cand.size() * k];
        for (size_t j = 0; j < cand.size(); ++j) {
          hits += hist[j];
          const uint64_t seq = SeqTableCost(groups, hits, tail);
          out[j] = std::min<uint64_t>(seq, alt);
          out[cand.size() + j] = seq;
        }
      });
      for (size_t k = 0; k < chunks.size(); ++k) {
        const uint64_t* in = &part[2 * cand.size() * k];
        for (size_t j = 0; j < cand.size(); ++j) {
          total[j] += in[j];
          seq_only[j] += in[cand.size() + j];
        }
      }
    }
    Progress(o, prog, i, Numel(tensors[i]) * 4);
  }
  size_t best = 0;
  for (size_t j = 1; j < cand.size(); ++j) {
    if (total[j] + 4ull * cand[j] < total[best] + 4ull * cand[best]) best = j;
  }
  const uint32_t n = cand.empty() ? 0 : cand[best];
  size_t best_seq = 0;
  for (size_t j = 1; j < cand.size(); ++j) {
    if (seq_only[j] + 4ull * cand[j] < seq_only[best_seq] + 4ull * cand[best_seq]) {
      best_seq = j;
    }
  }
  if (cand.size() > 1) {
    st->seqtable_only_bytes = seq_only[best_seq] + 4ull * cand[best_seq];
    st->seqtable_only_table_entries = cand[best_seq];
  }
  std::vector<uint32_t> entries;
  for (uint32_t r = 0; r < n; ++r) entries.push_back(ranked[r].second);
  return entries;
}

absl::StatusOr<PackStats> PackTo(TensorSource& src, const PackOptions& o, Sink* sink) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto& tensors = src.tensors();
  if (o.chunk_size == 0 || o.chunk_size % 4 != 0 ||
      o.chunk_size > format::kMaxChunkDecodedSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "chunk size %d must be a positive multiple of 4 up to %d", o.chunk_size,
        format::kMaxChunkDecodedSize));
  }
  if (o.max_table_entries > format::kMaxTableEntries) {
    return absl::InvalidArgumentError("table limit above 65535");
  }
  PackStats st;
  PackProgress prog;
  prog.tensors = tensors.size();
  absl::flat_hash_map<std::string, int> names;
  for (const SourceTensor& t : tensors) {
    if (t.name.empty() || t.name.size() > format::kMaxNameLength ||
        t.name.find('\0') != std::string::npos || !json::IsValidUtf8(t.name)) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor name '%s' is invalid", t.name));
    }
    if (!names.emplace(t.name, 0).second) {
      return absl::InvalidArgumentError(absl::StrFormat("duplicate tensor name '%s'", t.name));
    }
    if (t.dims.size() > format::kMaxDims) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s' has %d dimensions (0..8 supported)", t.name,
                          t.dims.size()));
    }
    uint64_t n = 1;
    for (uint64_t d : t.dims) {
      if (n != 0 && d > (uint64_t{1} << 40) / n) {
        return absl::InvalidArgumentError(
            absl::StrFormat("tensor '%s' has an oversized shape", t.name));
      }
      n *= d;
    }
    if (t.kind == TensorKind::kRaw && DTypeSize(t.dtype) == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s': dtype %s cannot be stored verbatim", t.name, DTypeName(t.dtype)));
    }
    prog.bytes_total += n * 4;
  }
  if (o.bits < format::kMinBits || o.bits > format::kMaxBits) {
    return absl::InvalidArgumentError(absl::StrFormat("bit width %d is not 1..8", o.bits));
  }
  if (o.granularity == Granularity::kGroup &&
      (o.group_size == 0 || o.group_size > format::kMaxGroupSize)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "group size %d is not 1..%d", o.group_size, format::kMaxGroupSize));
  }
  for (const auto& [name, g] : o.tensor_settings) {
    if (!names.contains(name)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("per-tensor setting names no tensor: '%s'", name));
    }
    if (g.bits < format::kMinBits || g.bits > format::kMaxBits ||
        (g.granularity == Granularity::kGroup &&
         (g.group_size == 0 || g.group_size > format::kMaxGroupSize))) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s': per-tensor setting of %d bits, group size %d is invalid", name,
          g.bits, g.group_size));
    }
  }

  Scratch scratch;
  std::vector<float>& f = scratch.f;
  std::vector<uint8_t>& q = scratch.q;
  Stored& stored = scratch.stored;

  // Passes 0-2: the sequence table.
  std::vector<uint32_t> entries;
  if (o.max_table_entries > 0) {
    bool search = true;
    if (QuantizedGroups(tensors, o) >= o.table_sample_min_groups) {
      TQM_ASSIGN_OR_RETURN(search, SampledTableMayPay(src, o, &scratch, &prog));
      st.table_search_skipped = !search;
    }
    if (search) {
      TQM_ASSIGN_OR_RETURN(entries, SearchTable(src, o, &scratch, &prog, &st));
    }
  }
  const SeqTable table(entries);
  st.table_entries = static_cast<uint32_t>(entries.size());

  // Metadata: the source's, then extras (replacing same keys), then ours.
  std::vector<MetaEntry> meta = src.metadata();
  auto put = [&meta](MetaEntry e) {
    for (MetaEntry& m : meta) {
      if (m.key == e.key) {
        m = std::move(e);
        return;
      }
    }
    meta.push_back(std::move(e));
  };
  for (const MetaEntry& e : o.extra_metadata) put(e);
  put({"tqm.writer", MetaValue::String("libtqm " TQM_VERSION_MAJOR_MINOR_STRING)});
  put({"tqm.granularity",
       MetaValue::String(o.granularity == Granularity::kRow     ? "row"
                         : o.granularity == Granularity::kGroup
                             ? absl::StrFormat("group:%d", o.group_size)
                             : "tensor")});
  if (o.bits != 8) put({"tqm.bits", MetaValue::Int(o.bits)});
  TQM_RETURN_IF_ERROR(CheckMetadata(meta));

  // Layout: header, METADATA, TABLE, DATA, TENSOR_INDEX, directory.
  std::vector<SectionInfo> sections;
  auto pad = [&](StreamChecksum* sum) -> absl::Status {
    std::string zeros((format::kAlignment - sink->size() % format::kAlignment) %
                          format::kAlignment,
                      '\0');
    if (sum) sum->Update(AsBytes(zeros));
    return sink->Append(zeros);
  };
  auto add_section = [&](uint32_t id, const std::string& body) -> absl::Status {
    TQM_RETURN_IF_ERROR(pad(nullptr));
    SectionInfo s;
    s.id = id;
    s.flags = format::kSectionFlagRequired;
    s.offset = sink->size();
    s.length = body.size();
    s.checksum = Checksum(AsBytes(body));
    sections.push_back(s);
    return sink->Append(body);
  };
  TQM_RETURN_IF_ERROR(sink->Append(std::string(format::kHeaderSize, '\0')));
  TQM_RETURN_IF_ERROR(add_section(format::kSectionMetadata, EncodeMetadata(meta)));
  {
    std::string tb;
    layout::Encode(layout::SectionHead{static_cast<uint32_t>(entries.size())}, &tb);
    for (uint32_t e : entries) AppendLE<uint32_t>(&tb, e);
    TQM_RETURN_IF_ERROR(add_section(format::kSectionTable, tb));
  }

  // Pass 3: encode and write the DATA section, building the index as we go.
  TQM_RETURN_IF_ERROR(pad(nullptr));
  SectionInfo data;
  data.id = format::kSectionData;
  data.flags = format::kSectionFlagRequired;
  data.offset = sink->size();
  StreamChecksum data_sum;
  std::string index;
  layout::Encode(layout::SectionHead{static_cast<uint32_t>(tensors.size())}, &index);
  uint64_t no_table_seq_bytes = 0;
  prog.pass = 3;
  prog.bytes_done = 0;
  // Tensors are encoded in batches: consecutive tensors are read and
  // quantized until the batch holds a chunk for every pack thread (or more),
  // then all of its chunks are encoded in parallel and written in order. A
  // tensor of several chunks is a batch of its own; small ones (norms,
  // attention of small models) would otherwise leave all but one thread
  // idle. Memory: one batch, at most one tensor past threads * chunk_size.
  // The bytes written do not depend on the batching.
  const unsigned pack_threads =
      o.threads != 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  const uint64_t batch_bytes = uint64_t{pack_threads} * o.chunk_size;
  struct Prepared {
    size_t i = 0;
    std::vector<uint8_t> q;
    Stored stored;
    std::vector<std::pair<size_t, size_t>> chunks;
    std::vector<EncodedChunk> encoded;
  };
  std::vector<Prepared> batch;
  bool extended = false;
  std::vector<std::pair<size_t, uint8_t>> bits_at;  // (index offset, bits)
  for (size_t next = 0; next < tensors.size();) {
    batch.clear();
    uint64_t held = 0;
    do {
      TQM_RETURN_IF_ERROR(Prepare(src, next, o, &f, &q, &stored));
      Prepared p;
      p.i = next++;
      p.chunks = SplitChunks(q.size(), o.chunk_size);
      p.encoded.resize(p.chunks.size());
      held += q.size();
      p.q = std::move(q);
      p.stored = std::move(stored);
      q.clear();
      stored = Stored();
      batch.push_back(std::move(p));
    } while (next < tensors.size() && pack_threads > 1 && held < batch_bytes);
    std::vector<std::pair<size_t, size_t>> work;  // (tensor in batch, chunk)
    for (size_t b = 0; b < batch.size(); ++b) {
      for (size_t k = 0; k < batch[b].chunks.size(); ++k) work.push_back({b, k});
    }
    ParallelFor(work.size(), o.threads, [&](size_t w) {
      Prepared& p = batch[work[w].first];
      const auto [b, e] = p.chunks[work[w].second];
      p.encoded[work[w].second] = EncodeChunk(absl::MakeConstSpan(p.q).subspan(b, e - b),
                                              ShouldQuantize(tensors[p.i], o), table, o);
    });
    for (Prepared& p : batch) {
      const size_t i = p.i;
      const SourceTensor& t = tensors[i];
      const Stored& ps = p.stored;
      const bool quant = ps.storage != format::kStorageF32 && ps.storage != format::kStorageRaw;
      ++st.tensors;
      st.weights += ps.numel;
      st.source_bytes += ps.numel * SourceElemSize(t.dtype);
      st.f32_bytes += ps.numel * 4;
      st.int8_bytes += p.q.size();
      if (quant) {
        ++st.quantized_tensors;
        st.quantized_int8_bytes += p.q.size();
      }
      if (ps.storage == format::kStorageRaw) ++st.raw_tensors;
      // Format 1.3 (EXTENDED_TENSORS) only where a tensor needs it, so
      // that every other file keeps its 1.2 bytes.
      extended |= ps.storage == format::kStorageU8Group ||
                  ps.storage == format::kStorageRaw || (quant && ps.bits != 8) ||
                  t.dtype > format::kMaxDTypeV12 || t.dims.empty() || ps.numel == 0;

      layout::TensorRecord rec;
      rec.name = t.name;
      rec.source_dtype = t.dtype;
      rec.storage = ps.storage;
      rec.bits = 0;  // filled in below when extended
      rec.layer = LayerFromName(t.name);
      rec.dims = t.dims;
      rec.group_size = ps.storage == format::kStorageU8Group ? ps.group_size : 0;
      rec.params = std::move(p.stored.affine);
      rec.chunk_count = p.chunks.size();
      bits_at.push_back(
          {index.size() + layout::TensorOffsets(t.name.size(), 0, 0, 0, 0).bits,
           ps.bits});
      layout::Encode(rec, &index);
      for (size_t k = 0; k < p.chunks.size(); ++k) {
        const EncodedChunk& ec = p.encoded[k];
        const auto [b, e] = p.chunks[k];
        if (!ec.status.ok()) {
          return absl::Status(ec.status.code(),
                              absl::StrFormat("tensor '%s' chunk %d: %s", t.name, k,
                                              ec.status.message()));
        }
        st.groups += ec.groups;
        st.escaped_groups += ec.escaped_groups;
        no_table_seq_bytes += ec.groups * 6 + (e - b) % 4;
        ++st.chunks_by_codec[ec.codec];
        if (ec.codec == format::kCodecStored) ++st.chunks_stored;
        if (ec.codec == format::kCodecSeqTable) ++st.chunks_seqtable;
        TQM_RETURN_IF_ERROR(pad(&data_sum));
        const uint64_t off = sink->size();
        data_sum.Update(AsBytes(ec.bytes));
        TQM_RETURN_IF_ERROR(sink->Append(ec.bytes));
        layout::ChunkRecord cr;
        cr.codec = ec.codec;
        cr.decoded_size = e - b;
        cr.offset = off;
        cr.encoded_size = ec.bytes.size();
        cr.checksum = Checksum(AsBytes(ec.bytes));
        layout::Encode(cr, &index);
      }
      prog.tensor = i + 1;
      prog.bytes_done += ps.numel * 4;
      if (o.progress) o.progress(prog);
    }
    // A batch of one tensor (any large tensor) hands its buffer to the next
    // Prepare, which then reuses it instead of faulting in fresh memory.
    if (batch.size() == 1) q = std::move(batch[0].q);
  }
  if (st.seqtable_only_bytes == 0) st.seqtable_only_bytes = no_table_seq_bytes;
  if (extended) {
    for (const auto& [at, bits] : bits_at) index[at] = static_cast<char>(bits);
  }
  data.length = sink->size() - data.offset;
  data.checksum = data_sum.Digest();
  sections.push_back(data);
  TQM_RETURN_IF_ERROR(add_section(format::kSectionTensorIndex, index));
  st.index_bytes = index.size();

  // Directory, then the header that points at it.
  TQM_RETURN_IF_ERROR(pad(nullptr));
  const uint64_t dir_offset = sink->size();
  std::string dir;
  for (const SectionInfo& s : sections) {
    layout::Encode(layout::SectionEntry{s.id, s.flags, s.offset, s.length, s.checksum},
                   &dir);
  }
  TQM_RETURN_IF_ERROR(sink->Append(dir));
  layout::Header h;
  // 1.0 when only the stored and seqtable codecs are used (readable by every
  // v1 reader), 1.1 when zstd, rANS or Huffman is, 1.2 when lanes is.
  for (int c = format::kCodecZstd; c <= format::kCodecHuffman; ++c) {
    if (st.chunks_by_codec[c] > 0) h.minor_version = 1;
  }
  if (st.chunks_by_codec[format::kCodecLanes] > 0) h.minor_version = 2;
  if (extended) h.minor_version = 3;
  h.flags = extended ? format::kHeaderFlagExtendedTensors : 0;
  h.file_size = sink->size();
  h.directory_offset = dir_offset;
  h.section_count = sections.size();
  h.directory_checksum = Checksum(AsBytes(dir));
  std::string header;
  layout::Encode(h, &header);
  TQM_RETURN_IF_ERROR(sink->WriteAt(0, header));
  st.file_bytes = sink->size();
  st.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

}  // namespace

absl::StatusOr<PackStats> Pack(TensorSource& source, const std::string& out_path,
                               const PackOptions& options) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(out_path));
  FileSink sink(std::move(file));
  TQM_ASSIGN_OR_RETURN(PackStats st, PackTo(source, options, &sink));
  TQM_RETURN_IF_ERROR(sink.file()->Commit());
  return st;
}

absl::StatusOr<std::string> PackToString(TensorSource& source, const PackOptions& options,
                                         PackStats* stats) {
  StringSink sink;
  TQM_ASSIGN_OR_RETURN(PackStats st, PackTo(source, options, &sink));
  if (stats) *stats = st;
  return std::move(sink.str());
}

}  // namespace tqm
