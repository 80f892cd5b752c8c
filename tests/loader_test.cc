// Tests of the lazy layer loader (tqm/loader.h): decoded views against the
// Reader, the memory budget and LRU eviction, pinning, prefetch, concurrent
// readers, corrupt chunks surfacing through Layer(), and the thread pool.

#include "tqm/loader.h"
#include "base/parallel.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace tqm {
namespace {

constexpr int kLayers = 6;
constexpr uint64_t kRows = 64, kCols = 256;

// Values that quantize to few levels (the seqtable codec takes them) or,
// with `noisy`, to all 256 levels (stored chunks).
std::vector<float> Values(uint64_t n, uint32_t seed, bool noisy) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  if (noisy) {
    std::uniform_real_distribution<float> u(-1, 1);
    for (float& x : v) x = u(rng);
  } else {
    std::uniform_int_distribution<int> d(-3, 3);
    for (float& x : v) x = 0.01f * d(rng);
    v[0] = 1.0f;
    v[n - 1] = -1.0f;
  }
  return v;
}

// kLayers layers of three [kRows, kCols] matrices (one noisy) and a float32
// norm; a global embedding and norm. 4 KiB chunks.
std::string MakeFile(Granularity g = Granularity::kTensor) {
  MemorySource src;
  src.Add("model.embed_tokens.weight", {32, kCols}, Values(32 * kCols, 1, false));
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = absl::StrFormat("model.layers.%d.", l);
    src.Add(p + "input_layernorm.weight", {kCols}, Values(kCols, 100 + l, true));
    src.Add(p + "self_attn.q_proj.weight", {kRows, kCols},
            Values(kRows * kCols, 200 + l, false));
    src.Add(p + "self_attn.k_proj.weight", {kRows, kCols},
            Values(kRows * kCols, 300 + l, true));
    src.Add(p + "mlp.up_proj.weight", {kRows, kCols},
            Values(kRows * kCols, 400 + l, false));
  }
  src.Add("model.norm.weight", {kCols}, Values(kCols, 7, true));
  PackOptions po;
  po.granularity = g;
  po.chunk_size = 4096;
  po.entropy = false;
  auto bytes = PackToString(src, po);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::string();
}

absl::Span<const uint8_t> AsSpan(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::unique_ptr<Model> OpenModel(const std::string& bytes, ModelOptions o = {}) {
  auto r = Reader::FromBuffer(AsSpan(bytes), "test.tqm");
  EXPECT_TRUE(r.ok()) << r.status();
  auto m = Model::FromReader(std::move(*r), std::move(o));
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

// Checks every view of `h` against the Reader's own decode.
void ExpectMatchesReader(const Model& m, const LayerHandle& h, bool dequantized) {
  for (const TensorView& v : h.tensors()) {
    const TensorInfo& ti = *v.info;
    if (dequantized || !ti.quantized()) {
      std::vector<float> want(ti.numel);
      ASSERT_TRUE(m.reader().ReadFloat(v.tensor, absl::MakeSpan(want)).ok());
      ASSERT_EQ(v.f32.size(), ti.numel) << ti.name;
      ASSERT_EQ(0, std::memcmp(want.data(), v.f32.data(), ti.numel * 4)) << ti.name;
    } else {
      std::vector<uint8_t> want(ti.numel);
      ASSERT_TRUE(m.reader().DecodeTensor(v.tensor, absl::MakeSpan(want)).ok());
      ASSERT_EQ(v.q.size(), ti.numel) << ti.name;
      ASSERT_EQ(0, std::memcmp(want.data(), v.q.data(), ti.numel)) << ti.name;
      std::vector<float> f(ti.numel), g(ti.numel);
      ASSERT_TRUE(v.ToFloat(absl::MakeSpan(f)).ok());
      ASSERT_TRUE(m.reader().ReadFloat(v.tensor, absl::MakeSpan(g)).ok());
      ASSERT_EQ(f, g) << ti.name;
    }
  }
}

TEST(Loader, GroupsTensorsByLayer) {
  const std::string bytes = MakeFile();
  auto m = OpenModel(bytes);
  EXPECT_EQ(m->num_layers(), kLayers);
  EXPECT_EQ(m->LayerTensors(format::kNoLayer).size(), 2u);
  for (int l = 0; l < kLayers; ++l) EXPECT_EQ(m->LayerTensors(l).size(), 4u);
  EXPECT_TRUE(m->LayerTensors(kLayers).empty());
  EXPECT_EQ(m->NextLayer(kLayers - 1), 0);
  EXPECT_EQ(m->NextLayer(2, 2), 4);
  auto missing = m->Layer(kLayers);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("test.tqm"), std::string::npos);
}

TEST(Loader, ViewsMatchReader) {
  for (Granularity g : {Granularity::kTensor, Granularity::kRow}) {
    const std::string bytes = MakeFile(g);
    for (bool dequantize : {false, true}) {
      for (bool zero_copy : {false, true}) {
        ModelOptions o;
        o.dequantize = dequantize;
        o.zero_copy = zero_copy;
        o.threads = 3;
        auto m = OpenModel(bytes, o);
        for (int l = -1; l < kLayers; ++l) {
          auto h = m->Layer(l);
          ASSERT_TRUE(h.ok()) << h.status();
          ExpectMatchesReader(*m, *h, dequantize);
          const TensorView* view = h->Find("model.layers.0.self_attn.q_proj.weight");
          EXPECT_EQ(view != nullptr, l == 0);
          if (view != nullptr) {
            EXPECT_EQ(view->rows(), kRows);
            EXPECT_EQ(view->cols(), kCols);
            EXPECT_EQ(view->affine.size(), g == Granularity::kRow ? kRows : 1u);
          }
          EXPECT_FALSE(h->Get("no.such.tensor").ok());
        }
      }
    }
  }
}

TEST(Loader, ZeroCopyForStoredTensors) {
  const std::string bytes = MakeFile();
  auto m = OpenModel(bytes);
  auto h = m->Layer(1);
  ASSERT_TRUE(h.ok());
  const uint8_t* lo = m->reader().bytes().data();
  const uint8_t* hi = lo + m->reader().bytes().size();
  // The float32 norm and the noisy (stored) matrix are views of the file.
  const TensorView* norm = h->Find("model.layers.1.input_layernorm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_TRUE(norm->in_place);
  EXPECT_GE(reinterpret_cast<const uint8_t*>(norm->f32.data()), lo);
  EXPECT_LT(reinterpret_cast<const uint8_t*>(norm->f32.data()), hi);
  const TensorView* k = h->Find("model.layers.1.self_attn.k_proj.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_TRUE(k->in_place);
  EXPECT_GE(k->q.data(), lo);
  EXPECT_LT(k->q.data(), hi);
  // The compressible ones are decoded copies, counted in the budget.
  const TensorView* q = h->Find("model.layers.1.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_FALSE(q->in_place);
  EXPECT_EQ(m->LayerBytes(1), 2 * kRows * kCols);
  const ModelStats st = m->stats();
  EXPECT_EQ(st.resident_bytes, 2 * kRows * kCols);
}

TEST(Loader, BudgetAndLruEviction) {
  const std::string bytes = MakeFile();
  ModelOptions o;
  o.zero_copy = false;
  o.threads = 2;
  auto probe = OpenModel(bytes, o);
  const uint64_t layer = probe->LayerBytes(0);
  ASSERT_GT(layer, 0u);
  o.budget_bytes = layer * 5 / 2;  // two layers fit, three do not
  std::vector<std::string> warnings;
  o.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  auto m = OpenModel(bytes, o);
  auto touch = [&](int l) {
    auto h = m->Layer(l);
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_LE(m->stats().resident_bytes, o.budget_bytes);
  };
  touch(0);
  touch(1);
  EXPECT_TRUE(m->IsResident(0));
  EXPECT_TRUE(m->IsResident(1));
  touch(2);  // evicts 0, the least recently used
  EXPECT_FALSE(m->IsResident(0));
  EXPECT_TRUE(m->IsResident(1));
  EXPECT_TRUE(m->IsResident(2));
  touch(1);  // 1 is now more recent than 2
  touch(3);  // evicts 2
  EXPECT_TRUE(m->IsResident(1));
  EXPECT_FALSE(m->IsResident(2));
  EXPECT_TRUE(m->IsResident(3));
  const ModelStats st = m->stats();
  EXPECT_EQ(st.evictions, 2u);
  EXPECT_EQ(st.decodes, 4u);
  EXPECT_EQ(st.hits, 1u);
  EXPECT_LE(st.peak_resident_bytes, o.budget_bytes);
  EXPECT_TRUE(warnings.empty());
  // Decoding again after eviction gives the same data.
  auto h = m->Layer(0);
  ASSERT_TRUE(h.ok());
  ExpectMatchesReader(*m, *h, false);
}

// Layers of different sizes streamed through a budget that holds one: each
// decode takes the evicted layer's buffer (already faulted in) when it is
// large enough and at most twice the size needed, instead of a fresh one,
// and the accounting charges the buffer's whole size.
TEST(Loader, SpareBuffersAreReusedAcrossLayerSizes) {
  MemorySource src;
  for (int l = 0; l < 2; ++l) {
    const std::string p = absl::StrFormat("model.layers.%d.", l);
    for (int m = 0; m < 3 - l; ++m) {  // layer 0: three matrices, layer 1: two
      src.Add(p + absl::StrFormat("mlp.w%d.weight", m), {kRows, kCols},
              Values(kRows * kCols, 10 * l + m, false));
    }
  }
  PackOptions po;
  po.chunk_size = 4096;
  po.entropy = false;
  auto bytes = PackToString(src, po);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ModelOptions o;
  o.zero_copy = false;
  o.prefetch = 0;
  auto probe = OpenModel(*bytes, o);
  const uint64_t big = probe->LayerBytes(0), small = probe->LayerBytes(1);
  ASSERT_GT(big, small);
  ASSERT_LE(big, 2 * small);
  o.budget_bytes = big + small / 2;  // one layer at a time
  auto m = OpenModel(*bytes, o);
  for (int round = 0; round < 3; ++round) {
    for (int l : {0, 1}) {
      auto h = m->Layer(l);
      ASSERT_TRUE(h.ok()) << h.status();
      ExpectMatchesReader(*m, *h, false);
      const ModelStats st = m->stats();
      EXPECT_LE(st.resident_bytes + st.cached_bytes, o.budget_bytes);
      // Layer 1 runs in layer 0's larger buffer and is charged for all of it.
      EXPECT_EQ(st.resident_bytes, big) << "round " << round << " layer " << l;
    }
  }
  ModelStats st = m->stats();
  EXPECT_EQ(st.decodes, 6u);
  EXPECT_EQ(st.fresh_buffers, 1u);
  EXPECT_EQ(st.over_budget, 0u);
  m->EvictUnpinned();
  st = m->stats();
  EXPECT_EQ(st.resident_bytes, 0u);
  EXPECT_EQ(st.cached_bytes, 0u);
}

TEST(Loader, PinnedLayersAreNeverEvicted) {
  const std::string bytes = MakeFile();
  ModelOptions o;
  o.zero_copy = false;
  auto probe = OpenModel(bytes, o);
  o.budget_bytes = probe->LayerBytes(0) * 2;
  auto m = OpenModel(bytes, o);
  auto pinned = m->Layer(0);
  ASSERT_TRUE(pinned.ok());
  const uint8_t* data = pinned->tensors()[1].q.data();
  for (int round = 0; round < 3; ++round) {
    for (int l = 1; l < kLayers; ++l) {
      auto h = m->Layer(l);
      ASSERT_TRUE(h.ok());
      EXPECT_TRUE(m->IsResident(0));
      EXPECT_LE(m->stats().resident_bytes, o.budget_bytes);
    }
  }
  EXPECT_EQ(pinned->tensors()[1].q.data(), data);
  ExpectMatchesReader(*m, *pinned, false);
  EXPECT_EQ(m->stats().over_budget, 0u);
  // Two pins on one layer, released one at a time.
  auto again = m->Layer(0);
  ASSERT_TRUE(again.ok());
  pinned->Release();
  m->EvictUnpinned();
  EXPECT_TRUE(m->IsResident(0));
  *again = LayerHandle();
  m->EvictUnpinned();
  EXPECT_FALSE(m->IsResident(0));
  EXPECT_EQ(m->stats().resident_bytes, 0u);
}

TEST(Loader, LayerLargerThanBudgetIsDecodedWithWarning) {
  const std::string bytes = MakeFile();
  ModelOptions o;
  o.zero_copy = false;
  o.budget_bytes = 1000;
  std::vector<std::string> warnings;
  o.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  auto m = OpenModel(bytes, o);
  {
    auto h = m->Layer(3);
    ASSERT_TRUE(h.ok()) << h.status();
    ExpectMatchesReader(*m, *h, false);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("layer 3"), std::string::npos) << warnings[0];
    EXPECT_NE(warnings[0].find("budget"), std::string::npos) << warnings[0];
    EXPECT_EQ(m->stats().over_budget, 1u);
  }
  // Released: the excess goes back at once.
  EXPECT_FALSE(m->IsResident(3));
  EXPECT_EQ(m->stats().resident_bytes, 0u);
}

// A runtime pins its global tensors for the whole run; when they alone
// exceed the budget, every layer it streams goes over it. That is warned
// about once, not per layer and token, and after the first layer the decodes
// run in one recycled buffer instead of fresh pages each.
TEST(Loader, StreamingWithPinsOverBudgetRecyclesOneBufferAndWarnsOnce) {
  const std::string bytes = MakeFile();
  ModelOptions o;
  o.zero_copy = false;
  o.prefetch = 1;
  std::vector<std::string> warnings;
  o.on_warning = [&](const std::string& w) { warnings.push_back(w); };
  auto probe = OpenModel(bytes, o);
  ASSERT_GT(probe->LayerBytes(format::kNoLayer), 0u);
  o.budget_bytes = probe->LayerBytes(format::kNoLayer) / 2;
  auto m = OpenModel(bytes, o);
  auto globals = m->Layer(format::kNoLayer);
  ASSERT_TRUE(globals.ok()) << globals.status();
  constexpr int kRounds = 4;
  for (int round = 0; round < kRounds; ++round) {
    for (int l = 0; l < kLayers; ++l) {
      auto h = m->Layer(l);
      ASSERT_TRUE(h.ok()) << h.status();
      ExpectMatchesReader(*m, *h, false);
    }
  }
  const ModelStats st = m->stats();
  EXPECT_EQ(st.decodes, 1u + kRounds * kLayers);
  EXPECT_EQ(st.over_budget, st.decodes);
  // The globals and the first layer; every later layer reuses its buffer.
  EXPECT_EQ(st.fresh_buffers, 2u);
  EXPECT_EQ(st.prefetches, 0u);  // never over the budget in the background
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("budget"), std::string::npos) << warnings[0];
  // The kept buffer is one layer's worth, and goes with the pins.
  EXPECT_EQ(st.cached_bytes, m->LayerBytes(0));
  globals->Release();
  const ModelStats after = m->stats();
  EXPECT_LE(after.resident_bytes + after.cached_bytes, o.budget_bytes);
}

TEST(Loader, PrefetchDecodesTheNextLayerInTheBackground) {
  const std::string bytes = MakeFile();
  ModelOptions o;
  o.zero_copy = false;
  o.prefetch = 1;
  auto probe = OpenModel(bytes, o);
  o.budget_bytes = probe->LayerBytes(0) * 2;
  auto m = OpenModel(bytes, o);
  for (int round = 0; round < 2; ++round) {
    for (int l = 0; l < kLayers; ++l) {
      auto h = m->Layer(l);
      ASSERT_TRUE(h.ok());
      ExpectMatchesReader(*m, *h, false);
      // Wait for the prefetch of the next layer (wrapping to 0).
      const int next = m->NextLayer(l);
      for (int i = 0; i < 2000 && !m->IsResident(next); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      EXPECT_TRUE(m->IsResident(next)) << "layer " << next;
      EXPECT_LE(m->stats().resident_bytes, o.budget_bytes);
    }
  }
  const ModelStats st = m->stats();
  EXPECT_GE(st.prefetches, 2u * kLayers - 1);
  EXPECT_GE(st.prefetch_hits, 2u * kLayers - 2);
  EXPECT_EQ(st.over_budget, 0u);
}

TEST(Loader, ConcurrentReadersShareOneDecode) {
  const std::string bytes = MakeFile();
  ModelOptions o;
  o.zero_copy = false;
  o.threads = 2;
  auto m = OpenModel(bytes, o);
  constexpr int kThreads = 8;
  std::atomic<int> ready{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }
      for (int l = 0; l < kLayers; ++l) {
        auto h = m->Layer(l);
        if (!h.ok()) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  const ModelStats st = m->stats();
  EXPECT_EQ(st.decodes, static_cast<uint64_t>(kLayers));  // never twice
  EXPECT_EQ(st.layer_requests, static_cast<uint64_t>(kThreads * kLayers));
}

TEST(Loader, ConcurrentReadersUnderBudget) {
  const std::string bytes = MakeFile();
  ModelOptions o;
  o.zero_copy = false;
  o.threads = 3;
  o.prefetch = 1;
  auto probe = OpenModel(bytes, o);
  // Eight threads may pin eight layers at once; the budget holds three, so
  // some decodes go over it (and the first says so) and evictions are
  // frequent.
  o.budget_bytes = probe->LayerBytes(0) * 3;
  std::atomic<int> warnings{0};
  o.on_warning = [&](const std::string&) { warnings.fetch_add(1); };
  auto m = OpenModel(bytes, o);
  // Expected bytes of every quantized tensor, from the Reader.
  std::vector<std::vector<uint8_t>> want(m->reader().tensors().size());
  for (size_t t = 0; t < want.size(); ++t) {
    want[t].resize(m->reader().tensors()[t].byte_size);
    ASSERT_TRUE(m->reader().DecodeTensor(t, absl::MakeSpan(want[t])).ok());
  }
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 150; ++i) {
        const int l = static_cast<int>(rng() % kLayers);
        auto h = m->Layer(l);
        if (!h.ok()) {
          bad.fetch_add(1);
          continue;
        }
        for (const TensorView& v : h->tensors()) {
          const uint8_t* p =
              v.quantized() ? v.q.data() : reinterpret_cast<const uint8_t*>(v.f32.data());
          if (std::memcmp(p, want[v.tensor].data(), want[v.tensor].size()) != 0) {
            bad.fetch_add(1);
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  const ModelStats st = m->stats();
  EXPECT_GT(st.evictions, 0u);
  // Over-budget decodes are counted each time and warned about once.
  EXPECT_EQ(warnings.load(), st.over_budget > 0 ? 1 : 0);
  // With every pin released the loader is back within its budget.
  EXPECT_LE(st.resident_bytes + st.cached_bytes, o.budget_bytes);
}

// Flips one byte inside the first chunk of `tensor`.
std::string Corrupt(const std::string& bytes, const std::string& tensor) {
  auto r = Reader::FromBuffer(AsSpan(bytes), "x");
  EXPECT_TRUE(r.ok());
  const int t = (*r)->FindTensor(tensor);
  EXPECT_GE(t, 0);
  std::string bad = bytes;
  bad[(*r)->tensors()[t].chunks[0].offset + 1] ^= 0x40;
  return bad;
}

TEST(Loader, CorruptChunkSurfacesThroughLayer) {
  const std::string bytes = Corrupt(MakeFile(), "model.layers.2.mlp.up_proj.weight");
  for (int prefetch : {0, 1}) {
    ModelOptions o;
    o.prefetch = prefetch;
    auto m = OpenModel(bytes, o);   // open does not touch tensor data
    EXPECT_TRUE(m->Layer(1).ok());  // prefetches layer 2, which fails quietly
    auto h = m->Layer(2);
    ASSERT_FALSE(h.ok());
    EXPECT_EQ(h.status().code(), absl::StatusCode::kDataLoss) << h.status();
    EXPECT_NE(h.status().message().find("model.layers.2.mlp.up_proj.weight"),
              std::string::npos)
        << h.status();
    EXPECT_NE(h.status().message().find("test.tqm"), std::string::npos) << h.status();
    EXPECT_NE(h.status().message().find("checksum"), std::string::npos) << h.status();
    EXPECT_FALSE(m->IsResident(2));
    // Asking again reports the same error; other layers are unaffected.
    EXPECT_EQ(m->Layer(2).status().code(), absl::StatusCode::kDataLoss);
    EXPECT_TRUE(m->Layer(3).ok());
    // Encoded() checks checksums too.
    const int t = m->reader().FindTensor("model.layers.2.mlp.up_proj.weight");
    EXPECT_EQ(m->Encoded(t).status().code(), absl::StatusCode::kDataLoss);
  }
  // Without checksums the corrupt bytes reach the codec: either it rejects
  // them or the layer decodes (to wrong values); it must not crash.
  ModelOptions o;
  o.verify_checksums = false;
  auto m = OpenModel(bytes, o);
  (void)m->Layer(2);
}

TEST(Loader, OpenFromFileAndAdvise) {
  const std::string bytes = MakeFile();
  char path[] = "/tmp/tqm_loader_testXXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  close(fd);
  ModelOptions o;
  o.prefetch = 2;
  auto m = Model::Open(path, o);
  ASSERT_TRUE(m.ok()) << m.status();
  for (int l = -1; l < kLayers; ++l) {
    (*m)->Advise(l);
    auto h = (*m)->Layer(l);
    ASSERT_TRUE(h.ok());
    ExpectMatchesReader(**m, *h, false);
  }
  m->reset();
  std::remove(path);
  auto missing = Model::Open("/nonexistent/file.tqm");
  EXPECT_FALSE(missing.ok());
}

TEST(Loader, OptionsExcludeEachOther) {
  const std::string bytes = MakeFile();
  auto r = Reader::FromBuffer(AsSpan(bytes), "test.tqm");
  ASSERT_TRUE(r.ok());
  ModelOptions o;
  o.dequantize = true;
  o.skip_quantized = true;
  EXPECT_EQ(Model::FromReader(std::move(*r), o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Loader, SkipQuantizedKeepsOnlyFloatTensors) {
  const std::string bytes = MakeFile();
  ModelOptions o;
  o.skip_quantized = true;
  o.zero_copy = false;
  auto m = OpenModel(bytes, o);
  EXPECT_EQ(m->LayerBytes(0), kCols * 4);  // the norm only
  auto h = m->Layer(0);
  ASSERT_TRUE(h.ok());
  for (const TensorView& v : h->tensors()) {
    EXPECT_EQ(v.quantized(), v.q.empty() && v.f32.empty()) << v.name();
    if (v.quantized()) {
      std::vector<float> f(v.info->numel);
      EXPECT_EQ(v.ToFloat(absl::MakeSpan(f)).code(),
                absl::StatusCode::kFailedPrecondition);
      auto e = m->Encoded(v.tensor);
      ASSERT_TRUE(e.ok());
      EXPECT_EQ(e->chunk(0).size(), v.info->chunks[0].encoded_size);
    }
  }
}

TEST(ThreadPool, ParallelForRunsEveryIndexOnce) {
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.threads(), threads);
    for (size_t n : {0u, 1u, 3u, 100u, 1000u}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, [&](size_t i) { hits[i].fetch_add(1); });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1);
    }
    // From several threads at once, and nested.
    std::atomic<int> total{0};
    std::vector<std::thread> callers;
    for (int c = 0; c < 4; ++c) {
      callers.emplace_back([&] {
        pool.ParallelFor(
            8, [&](size_t) { pool.ParallelFor(8, [&](size_t) { total.fetch_add(1); }); });
      });
    }
    for (auto& t : callers) t.join();
    EXPECT_EQ(total.load(), 4 * 64);
  }
}

// Idle threads poll a while before they sleep. Jobs back to back (workers
// still polling), after a pause (workers asleep) and a pool destroyed while
// its workers poll: every index runs once, and its plain (non-atomic) writes
// are visible to the caller when ParallelFor returns (TSan checks this).
TEST(ThreadPool, JobsWhileWorkersPollOrSleep) {
  for (int round = 0; round < 3; ++round) {
    ThreadPool pool(3);
    for (int job = 0; job < 200; ++job) {
      const size_t n = 1 + job % 7;
      std::vector<int> out(n, -1);
      pool.ParallelFor(n, [&](size_t i) { out[i] = static_cast<int>(i) + job; });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], static_cast<int>(i) + job);
      if (job % 50 == 49) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // Destroyed right after a job: the workers are polling, not waiting.
  }
}

}  // namespace
}  // namespace tqm

namespace {

// A layer larger than ModelOptions::max_layer_bytes is refused before any
// allocation: the guard against decompression bombs in entropy-coded files.
TEST(LoaderLimits, RefusesLayersAboveMaxLayerBytes) {
  tqm::MemorySource src;
  src.Add("model.layers.0.mlp.up_proj.weight", {256, 256}, std::vector<float>(65536, 0.5f));
  auto bytes = tqm::PackToString(src, {});
  ASSERT_TRUE(bytes.ok());
  auto reader = tqm::Reader::FromBuffer(absl::Span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
  ASSERT_TRUE(reader.ok());
  // The constant tensor is one tiny entropy-coded chunk.
  EXPECT_LT((*reader)->tensors()[0].encoded_size, 1024u);
  tqm::ModelOptions o;
  o.max_layer_bytes = 1000;
  auto model = tqm::Model::FromReader(std::move(*reader), o);
  ASSERT_TRUE(model.ok()) << model.status();
  auto layer = (*model)->Layer(0);
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kResourceExhausted) << layer.status();
}

}  // namespace
