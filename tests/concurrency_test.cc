// Concurrent readers (run under ThreadSanitizer by scripts/tsan.sh): many
// threads decode every chunk of the same memory-mapped file through one
// Reader, in different orders, with and without checksum verification, while
// others read tensors as floats, look up names and metadata, and run
// Verify(); every result must equal the single-threaded one. The same for
// several threads asking one loader Model for its layers under a budget that
// forces evictions. Files are packed with the format 1.0 codecs only, with the
// writer's defaults and with Profile::kSize, so that every codec's decoder
// (and any lazily initialised decoder state) runs on many threads at once.

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "tqm/loader.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

constexpr int kThreads = 8;

std::vector<float> Values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> v(n);
  // Runs of four values that repeat (the seqtable codec wins on those
  // chunks), noisy groups in some regions (entropy codecs or stored win).
  for (size_t g = 0; g < n; g += 4) {
    const bool noisy = (g / 1024) % 3 == 2 || rng() % 16 == 0;
    for (size_t i = g; i < std::min(n, g + 4); ++i) {
      v[i] = noisy ? d(rng) : 0.01f * static_cast<float>((i % 4) + (g / 64) % 3) - 0.02f;
    }
  }
  return v;
}

enum class Codecs { kFormat10, kBalanced, kSize };

std::string PackModel(Codecs codecs) {
  tqm::MemorySource m;
  const uint64_t d = 64, h = 128, v = 256;
  m.AddMeta({"general.architecture", tqm::MetaValue::String("llama")});
  m.Add("model.embed_tokens.weight", {v, d}, Values(v * d, 1));
  for (int l = 0; l < 4; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    m.Add(p + "input_layernorm.weight", {d}, std::vector<float>(d, 1.0f));
    m.Add(p + "self_attn.q_proj.weight", {d, d}, Values(d * d, 10 + l));
    m.Add(p + "mlp.up_proj.weight", {h, d}, Values(h * d, 20 + l));
    m.Add(p + "mlp.down_proj.weight", {d, h}, Values(h * d, 30 + l));
  }
  m.Add("model.norm.weight", {d}, Values(d, 9));
  tqm::PackOptions o;
  o.chunk_size = 2048;  // many chunks
  o.entropy = codecs != Codecs::kFormat10;
  o.profile = codecs == Codecs::kSize ? tqm::Profile::kSize : tqm::Profile::kBalanced;
  absl::StatusOr<std::string> s = tqm::PackToString(m, o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::string();
}

class Concurrency : public ::testing::TestWithParam<Codecs> {
 protected:
  void SetUp() override {
    const std::string bytes = PackModel(GetParam());
    ASSERT_FALSE(bytes.empty());
    const char* t = getenv("TEST_TMPDIR");
    dir_ = std::string(t && *t ? t : "/tmp") + "/tqm_concurrency_XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    path_ = dir_ + "/model.tqm";
    int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    close(fd);
  }
  void TearDown() override {
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_, path_;
};

TEST_P(Concurrency, ManyThreadsDecodeOneReader) {
  auto opened = tqm::Reader::Open(path_);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const tqm::Reader& r = **opened;

  // Single-threaded reference.
  struct Job {
    size_t t, c;
  };
  std::vector<Job> jobs;
  std::vector<std::vector<uint8_t>> want;
  for (size_t t = 0; t < r.tensors().size(); ++t) {
    for (size_t c = 0; c < r.tensors()[t].chunks.size(); ++c) {
      jobs.push_back({t, c});
      want.emplace_back(r.tensors()[t].chunks[c].decoded_size);
      ASSERT_TRUE(r.DecodeChunk(t, c, absl::MakeSpan(want.back())).ok());
    }
  }
  std::vector<std::vector<float>> want_f(r.tensors().size());
  for (size_t t = 0; t < r.tensors().size(); ++t) {
    want_f[t].resize(r.tensors()[t].numel);
    ASSERT_TRUE(r.ReadFloat(t, absl::MakeSpan(want_f[t])).ok());
  }
  ASSERT_GT(jobs.size(), 40u);
  std::map<int, int> codecs;
  for (const Job& j : jobs) ++codecs[r.tensors()[j.t].chunks[j.c].codec];

  std::atomic<int> ready{0};
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      std::vector<size_t> order(jobs.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::mt19937 rng(k);
      std::shuffle(order.begin(), order.end(), rng);
      ready.fetch_add(1);
      while (ready.load() < kThreads) {
      }
      for (int round = 0; round < 3; ++round) {
        for (size_t i : order) {
          const Job& j = jobs[i];
          std::vector<uint8_t> out(want[i].size());
          absl::Status s = r.DecodeChunk(j.t, j.c, absl::MakeSpan(out), (i + k) % 2 == 0);
          if (!s.ok()) ++errors;
          if (out != want[i]) ++mismatches;
        }
        // Whole tensors, lookups, metadata, in-place views.
        for (size_t t = k % 3; t < r.tensors().size(); t += 3) {
          std::vector<float> f(r.tensors()[t].numel);
          if (!r.ReadFloat(t, absl::MakeSpan(f)).ok()) ++errors;
          if (f != want_f[t]) ++mismatches;
          if (r.FindTensor(r.tensors()[t].name) != static_cast<int>(t)) ++mismatches;
          (void)r.InPlace(t);
        }
        if (r.FindMeta("general.architecture") == nullptr) ++mismatches;
        if (k == 0 && !r.Verify().ok()) ++errors;
      }
      // A Reader of its own over the same mapping, opened concurrently.
      auto mine = tqm::Reader::FromBuffer(r.bytes(), "shared-bytes");
      if (!mine.ok() || (*mine)->tensors().size() != r.tensors().size()) ++errors;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  std::cout << "[concurrency] " << kThreads << " threads x 3 rounds x " << jobs.size()
            << " chunks (codec:count";
  for (const auto& [codec, n] : codecs) std::cout << " " << codec << ":" << n;
  std::cout << ")\n";
}

TEST_P(Concurrency, ManyThreadsAskOneModelForLayers) {
  auto reference = tqm::Reader::Open(path_);
  ASSERT_TRUE(reference.ok()) << reference.status();
  std::vector<std::vector<float>> want((*reference)->tensors().size());
  for (size_t t = 0; t < want.size(); ++t) {
    want[t].resize((*reference)->tensors()[t].numel);
    ASSERT_TRUE((*reference)->ReadFloat(t, absl::MakeSpan(want[t])).ok());
  }

  tqm::ModelOptions o;
  o.threads = 4;
  o.dequantize = true;               // compare float values
  o.budget_bytes = 3 * 128 * 64 * 4;  // a few layers: forces evictions
  o.prefetch = 1;
  auto m = tqm::Model::Open(path_, o);
  ASSERT_TRUE(m.ok()) << m.status();
  tqm::Model& model = **m;

  std::atomic<int> errors{0}, mismatches{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 4; ++round) {
        for (int i = 0; i < model.num_layers(); ++i) {
          const int layer = (i + k) % model.num_layers();
          auto h = model.Layer(layer);
          if (!h.ok()) {
            ++errors;
            continue;
          }
          for (const tqm::TensorView& v : h->tensors()) {
            const std::vector<float>& w = want[v.tensor];
            if (v.f32.size() != w.size() || !std::equal(v.f32.begin(), v.f32.end(), w.begin())) {
              ++mismatches;
            }
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Files, Concurrency,
                         ::testing::Values(Codecs::kFormat10, Codecs::kBalanced,
                                           Codecs::kSize),
                         [](const auto& info) {
                           switch (info.param) {
                             case Codecs::kFormat10:
                               return "StoredAndSeqtable";
                             case Codecs::kBalanced:
                               return "WriterDefaults";
                             default:
                               return "ProfileSize";
                           }
                         });

}  // namespace
