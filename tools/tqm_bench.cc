// tqm-bench: sizes and speeds of .tqm files against their baselines, all
// measured in one run on the same bytes.
//
// Data sets: stories260K (when ../shared is present) and generated
// per-tensor-quantized tensors from three distributions (Gaussian; Gaussian
// with a few 30-sigma outliers; Student-t with 5 degrees of freedom),
// deterministic by seed. For each: the per-tensor order-0 entropy bound, the
// tqm file size per profile (table and index included), zstd -3 and -19 on
// the same stored bytes, the Tiny-QMoE scheme as published (per-offset group
// counts, escapes widened to uint16), decode throughput (GB/s of output) per
// codec with one and all threads, ZSTD_decompress (a fresh context per call,
// and a reused one) and memcpy of the same data, and pack throughput (MB/s of
// float32 input). Beside the balanced file's codec row, end-to-end rows
// (Reader::Verify, unpacking to safetensors f32 in /dev/shm, the loader
// decoding every layer and streaming them) with their ratio to that row, and
// the unpack's write bound (its bytes written with no decoding).

#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "base/parallel.h"
#include "codec/entropy.h"
#include "tool_util.h"
#include "tqm/codec.h"
#include "tqm/export.h"
#include "tqm/import.h"
#include "tqm/inspect.h"
#include "tqm/loader.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Repeats fn until at least `min_s` seconds have passed; returns seconds per
// call (best of the batches, to damp a noisy 2-core machine).
double TimeIt(const std::function<void()>& fn, double min_s = 0.3) {
  fn();  // warm up
  double best = 1e30, total = 0;
  int calls = 0;
  while (total < min_s || calls < 3) {
    auto t0 = Clock::now();
    fn();
    double s = Since(t0);
    best = std::min(best, s);
    total += s;
    ++calls;
  }
  return best;
}

// Runs work(buf, next) on `threads` threads (the calling one among them) of
// a tqm::ThreadPool started outside the timed region, the pool the loader
// decodes layers on; each worker slot has its own output buffer of
// `buf_bytes`, allocated and zeroed once outside the timed region (zeroing a
// buffer per pass once cost more than decoding stories260K); `next` is the
// shared work counter, reset before each pass. Returns seconds per pass as
// TimeIt does. Waking the pool's workers is inside the timed region.
double TimeWorkers(unsigned threads, size_t buf_bytes,
                   const std::function<void(absl::Span<uint8_t>, std::atomic<size_t>&)>& work) {
  threads = std::max(1u, threads);
  std::vector<std::vector<uint8_t>> bufs(threads, std::vector<uint8_t>(buf_bytes));
  std::atomic<size_t> next{0};
  tqm::ThreadPool pool(static_cast<int>(threads));
  return TimeIt([&] {
    next = 0;
    // One index per slot; a thread that takes two slots runs them in turn
    // (the second finds no work left), so no buffer is ever shared.
    pool.ParallelFor(threads, [&](size_t k) { work(absl::MakeSpan(bufs[k]), next); });
  });
}

// Orders (count, value) pairs by count, most frequent first, ties by value:
// hash map iteration order differs between runs, so ties must not decide.
bool MoreFrequent(const std::pair<uint64_t, uint32_t>& a,
                  const std::pair<uint64_t, uint32_t>& b) {
  return a.first != b.first ? a.first > b.first : a.second < b.second;
}

// Generated tensors, produced on demand (bounded memory, deterministic).
class GeneratedSource : public tqm::TensorSource {
 public:
  GeneratedSource(std::string dist, size_t tensors, uint64_t rows, uint64_t cols,
                  uint64_t seed)
      : dist_(std::move(dist)), seed_(seed) {
    for (size_t i = 0; i < tensors; ++i) {
      tensors_.push_back({absl::StrFormat("model.layers.%d.mlp.up_proj.weight", i),
                          tqm::format::kDTypeF32, {rows, cols}});
    }
  }
  const std::vector<tqm::SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<tqm::MetaEntry>& metadata() const override { return meta_; }
  absl::Status Read(size_t i, std::vector<float>* out) override {
    const auto& d = tensors_[i].dims;
    out->resize(d[0] * d[1]);
    std::mt19937_64 rng(seed_ * 1000003 + i);
    if (dist_ == "student-t5") {
      std::student_t_distribution<float> t(5);
      for (float& x : *out) x = 0.02f * t(rng);
    } else {
      std::normal_distribution<float> n(0.0f, 0.02f);
      for (float& x : *out) x = n(rng);
      if (dist_ == "outliers") {
        // A few 30-sigma outliers per tensor (about 1 in 100,000 weights).
        const size_t count = std::max<size_t>(4, out->size() / 100000);
        for (size_t k = 0; k < count; ++k) {
          (*out)[rng() % out->size()] = (rng() & 1 ? 30.0f : -30.0f) * 0.02f;
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  std::string dist_;
  uint64_t seed_;
  std::vector<tqm::SourceTensor> tensors_;
  std::vector<tqm::MetaEntry> meta_;
};

// Forwards to another source and adds up the wall time spent in Read(), so
// that pack speed can be reported without the source's own cost. The writer
// reads from one thread at a time.
class TimedSource : public tqm::TensorSource {
 public:
  explicit TimedSource(tqm::TensorSource& src) : src_(src) {}
  const std::vector<tqm::SourceTensor>& tensors() const override { return src_.tensors(); }
  const std::vector<tqm::MetaEntry>& metadata() const override { return src_.metadata(); }
  absl::Status Read(size_t i, std::vector<float>* out) override {
    const auto t0 = Clock::now();
    absl::Status s = src_.Read(i, out);
    read_seconds_ += Since(t0);
    return s;
  }
  double read_seconds() const { return read_seconds_; }

 private:
  tqm::TensorSource& src_;
  double read_seconds_ = 0;
};

struct Sizes {
  uint64_t int8 = 0;         // stored bytes (u8 + f32 tensors)
  double bound = 0;          // per-tensor order-0 bound of those bytes
  uint64_t tqm[3] = {};      // size, balanced, speed
  uint64_t tqm_v10 = 0;      // stored + seqtable only (format 1.0)
  uint64_t zstd3 = 0, zstd19 = 0;
  uint64_t paper = 0;        // Tiny-QMoE as published
  uint64_t f32 = 0;
};

struct Speed {
  std::string what;
  uint64_t bytes = 0;       // decoded bytes per pass
  double gbps1 = 0, gbpsN = 0;
  // End-to-end rows: index of the codec row they do on top of (the same
  // file's chunk decode), for the "vs codec" ratios; -1 for the others.
  int codec_row = -1;
};

// Decodes the given chunks of `r` on `threads` threads; returns seconds.
double DecodeChunks(const tqm::Reader& r, const std::vector<std::pair<size_t, size_t>>& list,
                    unsigned threads, bool verify) {
  size_t largest = 0;
  for (auto [t, c] : list) largest = std::max<size_t>(largest, r.tensors()[t].chunks[c].decoded_size);
  return TimeWorkers(threads, largest, [&](absl::Span<uint8_t> buf, std::atomic<size_t>& next) {
    for (size_t i; (i = next.fetch_add(1)) < list.size();) {
      auto [t, c] = list[i];
      absl::Status s =
          r.DecodeChunk(t, c, buf.first(r.tensors()[t].chunks[c].decoded_size), verify);
      if (!s.ok()) {
        std::cerr << "tqm-bench: " << s.message() << "\n";
        std::exit(1);
      }
    }
  });
}

// The Tiny-QMoE scheme as published: count every byte offset's 4-byte group,
// take the 65535 most frequent as the table, code aligned groups as uint16,
// escape = 0xFFFF followed by the 4 bytes each widened to uint16 (10 bytes).
uint64_t PaperSize(const std::vector<std::string>& quantized) {
  absl::flat_hash_map<uint32_t, uint64_t> counts;
  for (const std::string& q : quantized) {
    for (size_t i = 0; i + 4 <= q.size(); ++i) {
      uint32_t v;
      std::memcpy(&v, &q[i], 4);
      ++counts[v];
    }
  }
  std::vector<std::pair<uint64_t, uint32_t>> ranked;
  ranked.reserve(counts.size());
  for (auto& [g, n] : counts) ranked.push_back({n, g});
  const size_t n = std::min<size_t>(65535, ranked.size());
  std::partial_sort(ranked.begin(), ranked.begin() + n, ranked.end(), MoreFrequent);
  absl::flat_hash_map<uint32_t, bool> table;
  for (size_t i = 0; i < n; ++i) table[ranked[i].second] = true;
  uint64_t size = 4 * n;
  for (const std::string& q : quantized) {
    for (size_t i = 0; i + 4 <= q.size(); i += 4) {
      uint32_t v;
      std::memcpy(&v, &q[i], 4);
      size += table.contains(v) ? 2 : 10;
    }
    size += 2 * (q.size() % 4);  // widened tail
  }
  return size;
}

struct DataSet {
  std::string name;
  Sizes sizes;
  std::vector<Speed> speeds;
  double pack_mbps1 = 0, pack_mbpsN = 0;
  double bits_per_weight[3] = {};
  std::string codec_mix[3];
};

// Fails the benchmark on a library error (a bad measurement is no result).
void Check(const absl::Status& s, const std::string& what) {
  if (s.ok()) return;
  std::cerr << "tqm-bench: " << what << ": " << s.message() << "\n";
  std::exit(1);
}

// End-to-end rows over `file` (in memory), each against codec row
// `codec_row` of ds.speeds (the plain chunk decode of the same file): full
// verification, unpacking to a float32 safetensors file in /dev/shm, and
// the loader decoding every layer (fresh buffers) and streaming them (one
// layer's budget, buffers recycled). GB/s of int8-and-f32 bytes decoded,
// as in the codec row, so that the ratios say what each step adds.
void EndToEnd(const std::string& name, absl::Span<const uint8_t> file, uint64_t bytes,
              unsigned threads, int codec_row, DataSet* ds) {
  auto reader = tqm::Reader::FromBuffer(file, name);
  Check(reader.status(), name);
  const tqm::Reader& r = **reader;
  auto add = [&](const std::string& what, const std::function<double(unsigned)>& seconds) {
    Speed s{what, bytes};
    s.codec_row = codec_row;
    s.gbps1 = bytes / seconds(1) / 1e9;
    s.gbpsN = bytes / seconds(threads) / 1e9;
    ds->speeds.push_back(s);
  };
  add("  end to end: Reader::Verify(threads)", [&](unsigned th) {
    return TimeIt([&] { Check(r.Verify(th), name + ": verify"); });
  });
  if (access("/dev/shm", W_OK) == 0) {
    const std::string out = absl::StrFormat("/dev/shm/tqm-bench-%d.safetensors", getpid());
    // The ceiling of the unpack row: the same number of f32 bytes written
    // to a new file through AtomicFile as the exporter writes them (a
    // tensor's worth per call from a reused buffer, then commit), with no
    // decoding at all. Writing 4 bytes per code into the page cache costs
    // more than decoding the code, so this row, not the codec row, is what
    // the unpack row can reach.
    uint64_t f32_bytes = 0, largest = 0;
    for (const tqm::TensorInfo& t : r.tensors()) {
      const uint64_t n = t.raw() ? t.byte_size : t.numel * sizeof(float);
      f32_bytes += n;
      largest = std::max(largest, n);
    }
    add("  bound: write the f32 unpack's bytes to /dev/shm", [&](unsigned) {
      std::vector<uint8_t> block(largest, 1);
      return TimeIt([&] {
        auto f = tqm::AtomicFile::Create(out);
        Check(f.status(), name + ": write bound");
        for (uint64_t done = 0; done < f32_bytes;) {
          const uint64_t n = std::min<uint64_t>(largest, f32_bytes - done);
          Check((*f)->Append(absl::MakeConstSpan(block.data(), n)), name + ": write bound");
          done += n;
        }
        Check((*f)->Commit(), name + ": write bound");
        unlink(out.c_str());
      });
    });
    add("  end to end: unpack to safetensors f32 in /dev/shm", [&](unsigned th) {
      tqm::SafetensorsExportOptions o;
      o.threads = th;
      const double s = TimeIt([&] {
        Check(tqm::ExportSafetensors(r, out, o), name + ": unpack");
        unlink(out.c_str());  // each pass writes a new file, as tqm-unpack does
      });
      return s;
    });
  } else {
    std::cerr << "tqm-bench: no writable /dev/shm: no unpack row\n";
  }
  // The loader decodes every chunk (zero_copy off) so that it does the same
  // work as the codec row; checksums off, as there.
  auto model = [&](unsigned th, uint64_t budget) {
    auto rr = tqm::Reader::FromBuffer(file, name);
    Check(rr.status(), name);
    tqm::ModelOptions o;
    o.threads = static_cast<int>(th);
    o.zero_copy = false;
    o.verify_checksums = false;
    o.budget_bytes = budget;
    auto m = tqm::Model::FromReader(std::move(*rr), o);
    Check(m.status(), name + ": loader");
    return std::move(*m);
  };
  auto every_layer = [&](tqm::Model& m) {
    std::vector<int> layers = {tqm::format::kNoLayer};
    for (int l = 0; l < m.num_layers(); ++l) layers.push_back(l);
    for (int l : layers) {
      if (!m.HasLayer(l)) continue;
      auto h = m.Layer(l);
      Check(h.status(), name + ": layer");
    }
  };
  add("  end to end: loader, every layer into fresh buffers", [&](unsigned th) {
    auto m = model(th, 0);
    return TimeIt([&] {
      m->EvictUnpinned();
      every_layer(*m);
    });
  });
  add("  end to end: loader stream, one layer's budget", [&](unsigned th) {
    uint64_t largest = 0;
    auto probe = model(th, 0);
    largest = probe->LayerBytes(tqm::format::kNoLayer);
    for (int l = 0; l < probe->num_layers(); ++l) {
      largest = std::max(largest, probe->LayerBytes(l));
    }
    auto m = model(th, largest);
    return TimeIt([&] { every_layer(*m); });
  });
}

const char* kProfiles[] = {"size", "balanced", "speed"};

DataSet Measure(const std::string& name, tqm::TensorSource& src, unsigned threads,
                int zstd19_level) {
  DataSet ds;
  ds.name = name;
  std::cerr << "tqm-bench: " << name << ": packing\n";
  std::string files[3];
  for (int p = 0; p < 3; ++p) {
    tqm::PackOptions o;
    o.profile = static_cast<tqm::Profile>(p);
    tqm::PackStats st;
    auto bytes = tqm::PackToString(src, o, &st);
    if (!bytes.ok()) {
      std::cerr << "tqm-bench: " << bytes.status().message() << "\n";
      std::exit(1);
    }
    files[p] = std::move(*bytes);
    ds.sizes.tqm[p] = files[p].size();
    ds.sizes.f32 = st.f32_bytes;
    ds.bits_per_weight[p] = 8.0 * files[p].size() / st.weights;
    for (int c = 0; c < 8; ++c) {
      if (st.chunks_by_codec[c]) {
        ds.codec_mix[p] += absl::StrFormat("%s%s:%d", ds.codec_mix[p].empty() ? "" : " ",
                                           tqm::CodecName(c), st.chunks_by_codec[c]);
      }
    }
  }
  {
    tqm::PackOptions o;
    o.entropy = false;
    auto v10 = tqm::PackToString(src, o);
    ds.sizes.tqm_v10 = v10.ok() ? v10->size() : 0;
  }
  auto span = [](const std::string& s) {
    return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  // The stored bytes of every tensor, from the balanced file.
  auto reader = tqm::Reader::FromBuffer(span(files[1]), name);
  if (!reader.ok()) {
    std::cerr << "tqm-bench: " << reader.status().message() << "\n";
    std::exit(1);
  }
  const tqm::Reader& r = **reader;
  std::vector<std::string> stored(r.tensors().size()), quantized;
  for (size_t t = 0; t < r.tensors().size(); ++t) {
    stored[t].resize(r.tensors()[t].byte_size);
    (void)r.DecodeTensor(t, absl::Span<uint8_t>(reinterpret_cast<uint8_t*>(stored[t].data()),
                                                stored[t].size()));
    ds.sizes.int8 += stored[t].size();
    if (r.tensors()[t].quantized()) {
      ds.sizes.bound += tqm::Order0EntropyBits(span(stored[t])) / 8;
      quantized.push_back(stored[t]);
    } else {
      ds.sizes.bound += stored[t].size();  // float32 kept as is
    }
  }
  std::cerr << "tqm-bench: " << name << ": zstd -3 / -" << zstd19_level << "\n";
  std::vector<std::string> z3(stored.size());
  for (size_t t = 0; t < stored.size(); ++t) {
    std::string z19;
    (void)tqm::EncodeZstd(span(stored[t]), 3, &z3[t]);
    (void)tqm::EncodeZstd(span(stored[t]), zstd19_level, &z19);
    ds.sizes.zstd3 += z3[t].size();
    ds.sizes.zstd19 += z19.size();
  }
  ds.sizes.paper = PaperSize(quantized);
  for (size_t t = 0; t < stored.size(); ++t) {
    if (!r.tensors()[t].quantized()) ds.sizes.paper += stored[t].size();  // f32 as is
  }

  std::cerr << "tqm-bench: " << name << ": decode speed\n";
  // Per codec, over every profile's file (each chunk once per codec).
  for (int p = 0; p < 3; ++p) {
    auto rp = tqm::Reader::FromBuffer(span(files[p]), name);
    std::vector<std::pair<size_t, size_t>> all;
    uint64_t all_bytes = 0;
    for (size_t t = 0; t < (*rp)->tensors().size(); ++t) {
      for (size_t c = 0; c < (*rp)->tensors()[t].chunks.size(); ++c) {
        all.push_back({t, c});
        all_bytes += (*rp)->tensors()[t].chunks[c].decoded_size;
      }
    }
    Speed s{absl::StrFormat("tqm %s file (%s)", kProfiles[p], ds.codec_mix[p]), all_bytes};
    s.gbps1 = all_bytes / DecodeChunks(**rp, all, 1, false) / 1e9;
    s.gbpsN = all_bytes / DecodeChunks(**rp, all, threads, false) / 1e9;
    ds.speeds.push_back(s);
    if (p == 1) {
      Speed v{"tqm balanced file, checksums verified", all_bytes};
      v.gbps1 = all_bytes / DecodeChunks(**rp, all, 1, true) / 1e9;
      v.gbpsN = all_bytes / DecodeChunks(**rp, all, threads, true) / 1e9;
      ds.speeds.push_back(v);
      std::cerr << "tqm-bench: " << name << ": end to end\n";
      EndToEnd(name, span(files[p]), all_bytes, threads,
               static_cast<int>(ds.speeds.size()) - 2, &ds);
    }
  }
  // Each codec alone: re-encode every quantized chunk with it.
  // Lanes three times: its decoder for this CPU (AVX-512 VBMI where
  // present), and those that CPUs without it run (AVX2, plain C++).
  using tqm::entropy_internal::Isa;
  struct Row {
    uint8_t codec;
    Isa isa;
  };
  for (Row row : {Row{tqm::format::kCodecSeqTable, Isa::kAuto},
                  Row{tqm::format::kCodecLanes, Isa::kAuto},
                  Row{tqm::format::kCodecLanes, Isa::kAvx2},
                  Row{tqm::format::kCodecLanes, Isa::kPortable},
                  Row{tqm::format::kCodecHuffman, Isa::kAuto},
                  Row{tqm::format::kCodecRans, Isa::kAuto},
                  Row{tqm::format::kCodecZstd, Isa::kAuto}}) {
    const uint8_t codec = row.codec;
    std::vector<std::string> enc;
    std::vector<size_t> dec;
    std::vector<uint32_t> table;
    tqm::SeqTable st;
    if (codec == tqm::format::kCodecSeqTable) {
      // The table the writer would pick for an all-seqtable file.
      absl::flat_hash_map<uint32_t, uint64_t> counts;
      for (const auto& q : quantized) {
        for (size_t i = 0; i + 4 <= q.size(); i += 4) {
          uint32_t v;
          std::memcpy(&v, &q[i], 4);
          ++counts[v];
        }
      }
      std::vector<std::pair<uint64_t, uint32_t>> byc;
      for (auto& [g, n] : counts) byc.push_back({n, g});
      std::sort(byc.begin(), byc.end(), MoreFrequent);
      for (size_t i = 0; i < std::min<size_t>(65535, byc.size()); ++i) {
        table.push_back(byc[i].second);
      }
      st = tqm::SeqTable(table);
    }
    uint64_t bytes = 0, hits = 0, groups = 0;
    for (const auto& q : quantized) {
      for (size_t b = 0; b < q.size(); b += tqm::format::kDefaultChunkSize) {
        auto in = span(q).subspan(b, std::min<size_t>(tqm::format::kDefaultChunkSize,
                                                      q.size() - b));
        std::string e;
        if (codec == tqm::format::kCodecSeqTable) {
          tqm::EncodeSeqTable(in, st, &e);
          for (size_t g = 0; g + 4 <= in.size(); g += 4) {
            uint32_t v;
            std::memcpy(&v, &in[g], 4);
            hits += st.Lookup(v) != tqm::format::kEscape;
            ++groups;
          }
        } else if (codec == tqm::format::kCodecHuffman) {
          (void)tqm::EncodeHuffman(in, &e);
        } else if (codec == tqm::format::kCodecLanes) {
          (void)tqm::EncodeLanes(in, &e);
        } else if (codec == tqm::format::kCodecRans) {
          (void)tqm::EncodeRans(in, &e);
        } else {
          (void)tqm::EncodeZstd(in, 3, &e);
        }
        enc.push_back(std::move(e));
        dec.push_back(in.size());
        bytes += in.size();
      }
    }
    const size_t largest = dec.empty() ? 0 : *std::max_element(dec.begin(), dec.end());
    auto run = [&](unsigned th) {
      return TimeWorkers(th, largest, [&](absl::Span<uint8_t> buf, std::atomic<size_t>& next) {
        for (size_t i; (i = next.fetch_add(1)) < enc.size();) {
          absl::Status s =
              codec == tqm::format::kCodecLanes
                  ? tqm::entropy_internal::DecodeLanesWith(row.isa, span(enc[i]),
                                                           buf.first(dec[i]))
                  : tqm::DecodeChunkBytes(codec, span(enc[i]), table, buf.first(dec[i]));
          if (!s.ok()) std::exit(1);
        }
      });
    };
    std::string label = absl::StrFormat("every chunk %s", tqm::CodecName(codec));
    if (codec == tqm::format::kCodecSeqTable) {
      label += absl::StrFormat(" (%.1f%% table hits)", groups ? 100.0 * hits / groups : 0.0);
    }
    if (codec == tqm::format::kCodecZstd) {
      label += absl::StrFormat(" -3, %d KiB frames", tqm::format::kDefaultChunkSize / 1024);
    }
    if (codec == tqm::format::kCodecLanes) {
      // The decoder that ran, which on other CPUs is not the one the row is for.
      label += absl::StrFormat(", %s decoder", tqm::entropy_internal::LanesDecoderName(row.isa));
    }
    Speed s{label, bytes};
    s.gbps1 = bytes / run(1) / 1e9;
    s.gbpsN = bytes / run(threads) / 1e9;
    ds.speeds.push_back(s);
  }
  // Baselines: ZSTD_decompress of whole-tensor -3 frames; the same frames
  // with a decompression context reused per thread (ZSTD_decompress
  // allocates and initializes one, ~100 KiB, per call: on stories260K's small
  // tensors that costs more than the decoding); and memcpy.
  {
    size_t largest = 0;
    for (const auto& q : stored) largest = std::max(largest, q.size());
    enum Kind { kZstd, kZstdDCtx, kMemcpy };
    auto run = [&](unsigned th, Kind kind) {
      return TimeWorkers(th, largest, [&](absl::Span<uint8_t> buf, std::atomic<size_t>& next) {
        // Created in the warm-up pass on the threads that take part in it.
        thread_local std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> ctx(ZSTD_createDCtx(),
                                                                         ZSTD_freeDCtx);
        if (kind == kZstdDCtx && ctx == nullptr) {
          std::cerr << "tqm-bench: cannot allocate a zstd decompression context\n";
          std::exit(1);
        }
        for (size_t i; (i = next.fetch_add(1)) < stored.size();) {
          size_t n = 0;
          if (kind == kMemcpy) {
            std::memcpy(buf.data(), stored[i].data(), stored[i].size());
          } else if (kind == kZstd) {
            n = ZSTD_decompress(buf.data(), stored[i].size(), z3[i].data(), z3[i].size());
          } else {
            n = ZSTD_decompressDCtx(ctx.get(), buf.data(), stored[i].size(), z3[i].data(),
                                    z3[i].size());
          }
          if (ZSTD_isError(n)) std::exit(1);
        }
      });
    };
    Speed z{"ZSTD_decompress (zstd -3, one frame per tensor)", ds.sizes.int8};
    z.gbps1 = ds.sizes.int8 / run(1, kZstd) / 1e9;
    z.gbpsN = ds.sizes.int8 / run(threads, kZstd) / 1e9;
    ds.speeds.push_back(z);
    Speed zc{"ZSTD_decompressDCtx, context reused (same frames)", ds.sizes.int8};
    zc.gbps1 = ds.sizes.int8 / run(1, kZstdDCtx) / 1e9;
    zc.gbpsN = ds.sizes.int8 / run(threads, kZstdDCtx) / 1e9;
    ds.speeds.push_back(zc);
    Speed m{"memcpy", ds.sizes.int8};
    m.gbps1 = ds.sizes.int8 / run(1, kMemcpy) / 1e9;
    m.gbpsN = ds.sizes.int8 / run(threads, kMemcpy) / 1e9;
    ds.speeds.push_back(m);
  }
  std::cerr << "tqm-bench: " << name << ": pack speed\n";
  for (unsigned th : {1u, threads}) {
    tqm::PackOptions o;
    o.threads = th;
    // Pack time without the source's own cost (generating the data or
    // reading the file): the writer reads each tensor two to four times, and
    // the time spent inside those reads is measured and subtracted. A pack
    // that takes under 0.3 s (stories260K: about 6 ms) is repeated until 0.3
    // s have passed and the fastest counts, as for the decode passes: one
    // such pack alone swung by 20 % from run to run. Large sets pack once.
    double best = 0, total = 0;
    bool failed = false;
    for (int calls = 0; total < 0.3 && calls < 100; ++calls) {
      TimedSource timed(src);
      const auto t0 = Clock::now();
      auto bytes = tqm::PackToString(timed, o);
      if (!bytes.ok()) {
        std::cerr << "tqm-bench: " << name << ": pack failed: " << bytes.status() << "\n";
        failed = true;
        break;
      }
      const double wall = Since(t0);
      const double pack_s = wall - timed.read_seconds();
      total += wall;
      if (calls == 0 || pack_s < best) best = pack_s;
    }
    if (failed) continue;
    double mbps = best > 0 ? ds.sizes.f32 / best / 1e6 : 0;
    (th == 1 ? ds.pack_mbps1 : ds.pack_mbpsN) = mbps;
  }
  return ds;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tqm-bench: sizes and decode/pack speeds of .tqm files against the order-0\n"
      "entropy bound, zstd -3/-19, the Tiny-QMoE scheme as published, ZSTD_decompress\n"
      "(a fresh context per call, and a reused one) and memcpy, all measured in one\n"
      "run on the same bytes. 'vs zstd' is against the faster ZSTD row, one thread.\n\n"
      "Example:\n"
      "  tqm-bench                 # stories260K + 3 x 256 MiB of generated tensors\n"
      "  tqm-bench --mib 32 --json # smaller, machine-readable\n"};
  tqm::SetUpCommandLine(app, "tqm-bench");
  size_t mib = 256;
  unsigned threads = 0;
  bool json = false;
  std::string model = std::string("../shared/models/stories260K/stories260K.bin");
  std::vector<std::string> only;
  int zstd19 = 19;
  uint64_t seed = 1;
  app.add_option("--mib", mib, "MiB of int8 weights per generated data set (default 256)");
  tqm::AddThreadsOption(app, &threads, "threads for the multi-threaded columns (0: all cores)");
  app.add_option("--model", model, "llama2.c model to include (skipped if absent)");
  app.add_option("--only", only, "data sets to run: stories260K gaussian outliers student-t5");
  app.add_option("--zstd-high", zstd19, "the high zstd level compared (default 19)");
  app.add_option("--seed", seed);
  tqm::AddJsonFlag(app, &json, "print JSON instead of tables");
  TQM_PARSE_COMMAND_LINE(app, argc, argv);
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  auto want = [&](const std::string& n) {
    return only.empty() || std::find(only.begin(), only.end(), n) != only.end();
  };

  const double ghz_start = tqm::MeasureGhz();
  std::vector<DataSet> results;
  if (want("stories260K")) {
    auto src = tqm::OpenLlama2c(model);
    if (src.ok()) {
      results.push_back(Measure("stories260K", **src, threads, zstd19));
    } else {
      std::cerr << "tqm-bench: skipping stories260K: " << src.status().message() << "\n";
    }
  }
  const uint64_t rows = 4096, cols = 4096;  // 16 MiB of int8 per tensor
  const size_t tensors = std::max<size_t>(1, mib * (1 << 20) / (rows * cols));
  for (const char* dist : {"gaussian", "outliers", "student-t5"}) {
    if (!want(dist)) continue;
    GeneratedSource src(dist, tensors, rows, cols, seed);
    results.push_back(Measure(dist, src, threads, zstd19));
  }

  const std::string cpu = tqm::CpuModel();
  const double ghz_end = tqm::MeasureGhz();
  if (json) {
    std::string o = absl::StrFormat(
        "{\"cpu\":%s,\"cores\":%d,\"threads\":%d,\"ghz_start\":%s,\"ghz_end\":%s,"
        "\"datasets\":[",
        tqm::JsonQuote(cpu), std::thread::hardware_concurrency(), threads,
        tqm::GhzJson(ghz_start), tqm::GhzJson(ghz_end));
    for (size_t i = 0; i < results.size(); ++i) {
      const DataSet& d = results[i];
      const Sizes& s = d.sizes;
      o += absl::StrFormat(
          "%s{\"name\":\"%s\",\"int8_bytes\":%d,\"order0_bound_bytes\":%.0f,"
          "\"tqm_size\":%d,\"tqm_balanced\":%d,\"tqm_speed\":%d,\"tqm_v10\":%d,"
          "\"zstd3\":%d,\"zstd_high\":%d,\"paper\":%d,\"pack_mbps_1\":%.1f,"
          "\"pack_mbps_n\":%.1f,\"decode\":[",
          i ? "," : "", d.name, s.int8, s.bound, s.tqm[0], s.tqm[1], s.tqm[2], s.tqm_v10,
          s.zstd3, s.zstd19, s.paper, d.pack_mbps1, d.pack_mbpsN);
      for (size_t k = 0; k < d.speeds.size(); ++k) {
        const Speed& sp = d.speeds[k];
        std::string vs_codec;
        if (sp.codec_row >= 0) {
          const Speed& c = d.speeds[sp.codec_row];
          vs_codec = absl::StrFormat(",\"vs_codec_1\":%.3f,\"vs_codec_n\":%.3f",
                                     sp.gbps1 / c.gbps1, sp.gbpsN / c.gbpsN);
        }
        o += absl::StrFormat("%s{\"what\":%s,\"gbps_1\":%.3f,\"gbps_n\":%.3f%s}",
                             k ? "," : "", tqm::JsonQuote(sp.what), sp.gbps1, sp.gbpsN,
                             vs_codec);
      }
      o += "]}";
    }
    std::cout << o << "]}\n";
    return 0;
  }
  std::cout << absl::StrFormat(
      "machine: %s, %d cores, clock %s at the start and %s at the end (dependent adds); "
      "multi-threaded columns use %d threads\n",
      cpu, std::thread::hardware_concurrency(), tqm::GhzText(ghz_start),
      tqm::GhzText(ghz_end), threads);
  for (const DataSet& d : results) {
    const Sizes& s = d.sizes;
    auto row = [&](const char* what, double bytes) {
      std::cout << absl::StrFormat("  %-44s %12.0f  %6.3f bits/B  %7.4f of bound\n", what,
                                   bytes, 8.0 * bytes / s.int8, s.bound / bytes);
    };
    std::cout << absl::StrFormat("\n== %s: %d bytes stored (int8 + f32 tensors)\n", d.name,
                                 s.int8);
    row("order-0 bound (per tensor)", s.bound);
    for (int p = 0; p < 3; ++p) {
      row(absl::StrFormat("tqm --profile %s", kProfiles[p]).c_str(), s.tqm[p]);
    }
    row("tqm --no-entropy (format 1.0)", s.tqm_v10);
    row("zstd -3", s.zstd3);
    row(absl::StrFormat("zstd -%d", 19).c_str(), s.zstd19);
    row("Tiny-QMoE as published", s.paper);
    for (int p = 0; p < 3; ++p) {
      std::cout << absl::StrFormat("  %-10s chunks: %s\n", kProfiles[p], d.codec_mix[p]);
    }
    // "vs zstd": against the faster of the two ZSTD rows, one thread.
    double zstd1 = 0;
    for (const Speed& sp : d.speeds) {
      if (sp.what.rfind("ZSTD_decompress", 0) == 0) zstd1 = std::max(zstd1, sp.gbps1);
    }
    std::cout << absl::StrFormat("  %-62s %9s %9s %8s %9s %s\n", "decode (GB/s of output)",
                                 "1 thread", "N threads", "N/1", "vs zstd",
                                 " vs codec (1, N threads)");
    for (const Speed& sp : d.speeds) {
      std::string vs_codec;
      if (sp.codec_row >= 0) {
        const Speed& c = d.speeds[sp.codec_row];
        vs_codec = absl::StrFormat("  %6.2f %6.2f", sp.gbps1 / c.gbps1, sp.gbpsN / c.gbpsN);
      }
      std::cout << absl::StrFormat("  %-62s %9.2f %9.2f %8.2f %9.2f%s\n", sp.what, sp.gbps1,
                                   sp.gbpsN, sp.gbpsN / sp.gbps1, sp.gbps1 / zstd1, vs_codec);
    }
    std::cout << absl::StrFormat("  pack (balanced, MB/s of float32 input): %.1f on 1 thread, "
                                 "%.1f on %d\n",
                                 d.pack_mbps1, d.pack_mbpsN, threads);
  }
  return 0;
}
