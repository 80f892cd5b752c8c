// Writer: quantize -> choose the sequence table -> encode chunks -> file.
//
// Three passes over the source, each holding one tensor at a time:
//   1. count the aligned 4-byte groups of every quantized tensor;
//   2. for each candidate table size, the exact encoded size of every chunk
//      (chunk = min(stored, seqtable)); the table size with the smallest file
//      wins (each entry costs 4 bytes);
//   3. encode and write.
// Pass 2 and the table are skipped when the seqtable codec is disabled.

#include "tqm/writer.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <chrono>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "atomic_file.h"
#include "checksum.h"
#include "entropy.h"
#include "json.h"
#include "cursor.h"
#include "tqm/codec.h"
#include "tqm/quantize.h"
#include "tqm/reader.h"
#include "tqm/status.h"

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

bool ShouldQuantize(const SourceTensor& t, const PackOptions& o) {
  return o.quantize_all || t.dims.size() >= 2;
}

bool PerRow(const SourceTensor& t, const PackOptions& o) {
  return o.granularity == Granularity::kRow && t.dims.size() >= 2;
}

uint64_t Numel(const SourceTensor& t) {
  uint64_t n = 1;
  for (uint64_t d : t.dims) n *= d;
  return n;
}

size_t SourceElemSize(format::SourceDType d) {
  switch (d) {
    case format::kDTypeF16:
    case format::kDTypeBF16:
      return 2;
    case format::kDTypeQ8_0:
      return 1;  // ignoring the per-block scales: informational only
    default:
      return 4;
  }
}

void ParallelFor(size_t n, unsigned threads, const std::function<void(size_t)>& fn);

// Reads tensor `i`, checks its size and quantizes it. `q` gets the bytes the
// file stores (uint8 or float32 bytes); `affine` the parameters.
absl::Status Prepare(TensorSource& src, size_t i, const PackOptions& o,
                     std::vector<float>* f, std::vector<uint8_t>* q,
                     std::vector<Affine>* affine) {
  const SourceTensor& t = src.tensors()[i];
  TQM_RETURN_IF_ERROR(src.Read(i, f));
  if (f->size() != Numel(t)) {
    return absl::InternalError(absl::StrFormat(
        "tensor '%s': source returned %d values, shape says %d", t.name, f->size(), Numel(t)));
  }
  affine->clear();
  if (!ShouldQuantize(t, o)) {
    q->resize(f->size() * 4);
    if (!f->empty()) std::memcpy(q->data(), f->data(), q->size());
    return absl::OkStatus();
  }
  q->resize(f->size());
  const uint64_t rows = PerRow(t, o) ? t.dims[0] : 1;
  const uint64_t row = f->size() / rows;
  affine->resize(rows);
  if (rows == 1) {
    absl::StatusOr<Affine> a = ChooseAffine(*f);
    if (!a.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s': %s", t.name, a.status().message()));
    }
    (*affine)[0] = *a;
    // Quantize in blocks on the pack threads (element-wise: same bytes).
    constexpr size_t kBlock = size_t{1} << 20;
    const size_t blocks = (f->size() + kBlock - 1) / kBlock;
    ParallelFor(blocks, o.threads, [&](size_t k) {
      const size_t b = k * kBlock, n = std::min(kBlock, f->size() - b);
      QuantizeAffine(absl::MakeConstSpan(*f).subspan(b, n), *a,
                     absl::MakeSpan(*q).subspan(b, n));
    });
    return absl::OkStatus();
  }
  std::vector<absl::Status> errors(rows);
  ParallelFor(rows, o.threads, [&](size_t r) {
    auto in = absl::MakeConstSpan(*f).subspan(r * row, row);
    absl::StatusOr<Affine> a = ChooseAffine(in);
    if (!a.ok()) {
      errors[r] = a.status();
      return;
    }
    QuantizeAffine(in, *a, absl::MakeSpan(*q).subspan(r * row, row));
    (*affine)[r] = *a;
  });
  for (uint64_t r = 0; r < rows; ++r) {
    if (!errors[r].ok()) {
      return absl::InvalidArgumentError(absl::StrFormat("tensor '%s' row %d: %s", t.name, r,
                                                        errors[r].message()));
    }
  }
  return absl::OkStatus();
}

std::string EncodeMetadata(const std::vector<MetaEntry>& meta) {
  std::string out;
  AppendLE<uint32_t>(&out, meta.size());
  AppendLE<uint32_t>(&out, 0);
  for (const MetaEntry& e : meta) {
    AppendLE<uint16_t>(&out, e.key.size());
    out += e.key;
    AppendLE<uint8_t>(&out, e.value.type);
    switch (e.value.type) {
      case format::kMetaInt64:
        AppendLE<int64_t>(&out, e.value.int64);
        break;
      case format::kMetaFloat64:
        AppendLE<double>(&out, e.value.float64);
        break;
      default:
        AppendLE<uint32_t>(&out, e.value.bytes.size());
        out += e.value.bytes;
    }
  }
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

// Decode speed rank of each codec, fastest first (measured by tqm-bench:
// stored is memcpy or in place, seqtable a table lookup per 4 bytes, Huffman
// a table lookup per byte over 8 streams, rANS a division-free state update
// per byte, zstd its own decoder).
int SpeedRank(uint8_t codec) {
  switch (codec) {
    case format::kCodecStored:
      return 0;
    case format::kCodecSeqTable:
      return 1;
    case format::kCodecHuffman:
      return 2;
    case format::kCodecRans:
      return 3;
    default:
      return 4;
  }
}

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
    std::string bytes;
  };
  std::vector<Candidate> cands;
  cands.push_back({format::kCodecStored, best.bytes});
  if (table.size() > 0) {
    Candidate c{format::kCodecSeqTable, {}};
    EncodeSeqTable(in, table, &c.bytes);
    cands.push_back(std::move(c));
  }
  if (o.entropy) {
    Candidate h{format::kCodecHuffman, {}}, r{format::kCodecRans, {}};
    absl::Status s = EncodeHuffman(in, &h.bytes);
    if (s.ok()) s = EncodeRans(in, &r.bytes);
    if (!s.ok()) {
      best.status = s;
      return best;
    }
    cands.push_back(std::move(h));
    cands.push_back(std::move(r));
    if (o.profile == Profile::kSize && o.zstd_level > 0) {
      Candidate z{format::kCodecZstd, {}};
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
    const int ri = SpeedRank(cands[i].codec), rp = SpeedRank(cands[pick].codec);
    if (ri < rp || (ri == rp && cands[i].bytes.size() < cands[pick].bytes.size())) pick = i;
  }
  best.codec = cands[pick].codec;
  best.bytes = std::move(cands[pick].bytes);
  return best;
}

// Runs fn(0..n-1) on up to `threads` threads (0 = all cores).
void ParallelFor(size_t n, unsigned threads, const std::function<void(size_t)>& fn) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<size_t>(threads, n));
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
    });
  }
  for (std::thread& th : pool) th.join();
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
    if (t.dims.empty() || t.dims.size() > format::kMaxDims) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s' has %d dimensions (1..8 supported)", t.name,
                          t.dims.size()));
    }
    uint64_t n = 1;
    for (uint64_t d : t.dims) {
      if (d == 0 || d > (uint64_t{1} << 40) / n) {
        return absl::InvalidArgumentError(
            absl::StrFormat("tensor '%s' has an empty or oversized shape", t.name));
      }
      n *= d;
    }
    prog.bytes_total += n * 4;
  }

  std::vector<float> f;
  std::vector<uint8_t> q;
  std::vector<Affine> affine;

  // Pass 1: count groups.
  std::vector<uint32_t> entries;
  if (o.max_table_entries > 0) {
    GroupCounter counts(o.max_counted_groups);
    prog.pass = 1;
    prog.bytes_done = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (ShouldQuantize(tensors[i], o)) {
        TQM_RETURN_IF_ERROR(Prepare(src, i, o, &f, &q, &affine));
        for (size_t g = 0; g + 4 <= q.size(); g += 4) {
          uint32_t v;
          std::memcpy(&v, &q[g], 4);
          counts.Add(v);
        }
      }
      prog.tensor = i + 1;
      prog.bytes_done += Numel(tensors[i]) * 4;
      if (o.progress) o.progress(prog);
    }
    // Keep the groups that repeat, most frequent first (ties by value: the
    // table is a pure function of the input).
    std::vector<std::pair<uint64_t, uint32_t>> ranked;
    for (const auto& [g, n] : counts.counts()) {
      if (n >= 2) ranked.push_back({n, g});
    }
    st.group_count_prunes = counts.prunes();
    counts = GroupCounter(0);
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    if (ranked.size() > o.max_table_entries) ranked.resize(o.max_table_entries);

    // Pass 2: exact file-size cost of each candidate table size.
    const std::vector<uint32_t> cand = Candidates(static_cast<uint32_t>(ranked.size()));
    absl::flat_hash_map<uint32_t, uint32_t> rank;
    rank.reserve(ranked.size());
    for (uint32_t r = 0; r < ranked.size(); ++r) rank[ranked[r].second] = r;
    std::vector<uint64_t> total(cand.size(), 0);
    std::vector<uint64_t> seq_only(cand.size(), 0);  // every chunk seqtable
    prog.pass = 2;
    prog.bytes_done = 0;
    for (size_t i = 0; i < tensors.size() && cand.size() > 1; ++i) {
      if (ShouldQuantize(tensors[i], o)) {
        TQM_RETURN_IF_ERROR(Prepare(src, i, o, &f, &q, &affine));
        // Per chunk on the pack threads, then summed (order-independent).
        const auto chunks = SplitChunks(q.size(), o.chunk_size);
        std::vector<uint64_t> part(2 * cand.size() * chunks.size(), 0);
        ParallelFor(chunks.size(), o.threads, [&](size_t k) {
          const auto [b, e] = chunks[k];
          std::vector<uint64_t> hist(cand.size(), 0);
          const uint64_t groups = (e - b) / 4, tail = (e - b) % 4;
          for (size_t g = b; g + 4 <= e; g += 4) {
            uint32_t v;
            std::memcpy(&v, &q[g], 4);
            auto it = rank.find(v);
            if (it == rank.end()) continue;
            // First candidate whose table includes rank r: cand[j] > r.
            size_t j = std::upper_bound(cand.begin(), cand.end(), it->second) - cand.begin();
            ++hist[j];
          }
          // Without the table a chunk costs min(stored, entropy-coded); the
          // order-0 bound plus a small header estimates the latter.
          uint64_t alt = e - b;
          if (o.entropy) {
            const double bits = Order0EntropyBits(absl::MakeConstSpan(q).subspan(b, e - b));
            alt = std::min<uint64_t>(alt, static_cast<uint64_t>(bits / 8) + 64);
          }
          uint64_t hits = 0;
          uint64_t* out = &part[2 * cand.size() * k];
          for (size_t j = 0; j < cand.size(); ++j) {
            hits += hist[j];
            uint64_t seq = 2 * hits + 6 * (groups - hits) + tail;
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
      prog.tensor = i + 1;
      prog.bytes_done += Numel(tensors[i]) * 4;
      if (o.progress) o.progress(prog);
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
      st.seqtable_only_bytes = seq_only[best_seq] + 4ull * cand[best_seq];
      st.seqtable_only_table_entries = cand[best_seq];
    }
    for (uint32_t r = 0; r < n; ++r) entries.push_back(ranked[r].second);
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
  put({"tqm.writer", MetaValue::String("libtqm 0.1")});
  put({"tqm.granularity",
       MetaValue::String(o.granularity == Granularity::kRow ? "row" : "tensor")});
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
    AppendLE<uint32_t>(&tb, entries.size());
    AppendLE<uint32_t>(&tb, 0);
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
  AppendLE<uint32_t>(&index, tensors.size());
  AppendLE<uint32_t>(&index, 0);
  uint64_t no_table_seq_bytes = 0;
  prog.pass = 3;
  prog.bytes_done = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SourceTensor& t = tensors[i];
    TQM_RETURN_IF_ERROR(Prepare(src, i, o, &f, &q, &affine));
    const bool quant = ShouldQuantize(t, o);
    ++st.tensors;
    st.weights += f.size();
    st.source_bytes += f.size() * SourceElemSize(t.dtype);
    st.f32_bytes += f.size() * 4;
    st.int8_bytes += q.size();
    if (quant) {
      ++st.quantized_tensors;
      st.quantized_int8_bytes += q.size();
    }

    AppendLE<uint16_t>(&index, t.name.size());
    index += t.name;
    AppendLE<uint8_t>(&index, t.dtype);
    AppendLE<uint8_t>(&index,
                      !quant ? format::kStorageF32
                             : (PerRow(t, o) ? format::kStorageU8Row
                                                                   : format::kStorageU8Tensor));
    AppendLE<uint8_t>(&index, t.dims.size());
    AppendLE<uint8_t>(&index, 0);
    AppendLE<int32_t>(&index, LayerFromName(t.name));
    for (uint64_t d : t.dims) AppendLE<uint64_t>(&index, d);
    for (const Affine& a : affine) {
      AppendLE<float>(&index, a.scale);
      AppendLE<float>(&index, a.zero);
    }
    const auto chunks = SplitChunks(q.size(), o.chunk_size);
    AppendLE<uint32_t>(&index, chunks.size());
    AppendLE<uint32_t>(&index, 0);
    std::vector<EncodedChunk> encoded(chunks.size());
    ParallelFor(chunks.size(), o.threads, [&](size_t k) {
      auto [b, e] = chunks[k];
      encoded[k] = EncodeChunk(absl::MakeConstSpan(q).subspan(b, e - b), quant, table, o);
    });
    for (size_t k = 0; k < chunks.size(); ++k) {
      const EncodedChunk& ec = encoded[k];
      const auto [b, e] = chunks[k];
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
      AppendLE<uint8_t>(&index, ec.codec);
      AppendLE<uint8_t>(&index, 0);
      AppendLE<uint16_t>(&index, 0);
      AppendLE<uint32_t>(&index, e - b);
      AppendLE<uint64_t>(&index, off);
      AppendLE<uint32_t>(&index, ec.bytes.size());
      AppendLE<uint32_t>(&index, 0);
      AppendLE<uint64_t>(&index, Checksum(AsBytes(ec.bytes)));
    }
    prog.tensor = i + 1;
    prog.bytes_done += f.size() * 4;
    if (o.progress) o.progress(prog);
  }
  if (st.seqtable_only_bytes == 0) st.seqtable_only_bytes = no_table_seq_bytes;
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
    AppendLE<uint32_t>(&dir, s.id);
    AppendLE<uint32_t>(&dir, s.flags);
    AppendLE<uint64_t>(&dir, s.offset);
    AppendLE<uint64_t>(&dir, s.length);
    AppendLE<uint64_t>(&dir, s.checksum);
  }
  TQM_RETURN_IF_ERROR(sink->Append(dir));
  std::string header(format::kMagic, format::kMagic + sizeof(format::kMagic));
  AppendLE<uint16_t>(&header, format::kMajorVersion);
  // 1.0 when only the stored and seqtable codecs are used (readable by every
  // v1 reader), 1.1 when any entropy codec is.
  bool v11 = false;
  for (int c = format::kCodecZstd; c < 8; ++c) v11 |= st.chunks_by_codec[c] > 0;
  AppendLE<uint16_t>(&header, v11 ? 1 : 0);
  AppendLE<uint32_t>(&header, 0);  // flags
  AppendLE<uint64_t>(&header, sink->size());
  AppendLE<uint64_t>(&header, dir_offset);
  AppendLE<uint32_t>(&header, sections.size());
  AppendLE<uint32_t>(&header, 0);
  AppendLE<uint64_t>(&header, Checksum(AsBytes(dir)));
  AppendLE<uint64_t>(&header, 0);
  AppendLE<uint64_t>(&header, Checksum(AsBytes(header)));
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

void MemorySource::Add(std::string name, std::vector<uint64_t> dims,
                       std::vector<float> values, format::SourceDType dtype) {
  tensors_.push_back({std::move(name), dtype, std::move(dims)});
  values_.push_back(std::move(values));
}

absl::Status MemorySource::Read(size_t i, std::vector<float>* out) {
  if (i >= values_.size()) return absl::OutOfRangeError("no such tensor");
  *out = values_[i];
  return absl::OkStatus();
}

}  // namespace tqm
