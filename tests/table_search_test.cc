// The writer's sequence-table search: the sampled early exit (passes 0-2 in
// writer.cc) must skip the full search on weights no table can help
// (Gaussian-like), must not skip where a table pays (the file is then the
// full search's, byte for byte), and every path must give the same file
// whatever the thread count.

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "test_util.h"
#include "tqm/import.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

using tqm_test::AsSpan;

constexpr uint64_t kFullSearch = UINT64_MAX;
constexpr uint64_t kAlwaysSample = 0;

// Weights as in tqm-bench's generated sets: "gaussian", "outliers" (a few
// 30-sigma weights per tensor, so most weights fall on a few levels) and
// "student-t5"; deterministic by seed.
std::vector<float> Weights(const std::string& dist, size_t n, uint64_t seed) {
  std::vector<float> v(n);
  std::mt19937_64 rng(seed);
  if (dist == "student-t5") {
    std::student_t_distribution<float> t(5);
    for (float& x : v) x = 0.02f * t(rng);
    return v;
  }
  std::normal_distribution<float> d(0.0f, 0.02f);
  for (float& x : v) x = d(rng);
  if (dist == "outliers") {
    const size_t count = std::max<size_t>(4, n / 100000);
    for (size_t k = 0; k < count; ++k)
      v[rng() % n] = (rng() & 1 ? 30.0f : -30.0f) * 0.02f;
  }
  return v;
}

// `tensors` x [rows, cols] of `dist`: 4 MiB of int8 (2^20 groups, the
// default sampling threshold) for 4 x 1024 x 1024.
tqm::MemorySource Model(const std::string& dist, int tensors = 4, uint64_t rows = 1024,
                        uint64_t cols = 1024) {
  tqm::MemorySource m;
  for (int i = 0; i < tensors; ++i) {
    m.Add(absl::StrFormat("model.layers.%d.mlp.up_proj.weight", i), {rows, cols},
          Weights(dist, rows * cols, 1000 + i));
  }
  return m;
}

// Groups drawn from a dictionary of `words` random 4-value patterns, a
// fraction `noise` of them random instead: every byte value about equally
// likely (no order-0 gain for Huffman or rANS), but the groups repeat, so a
// table pays even next to the entropy codecs.
std::vector<float> Dictionary(size_t n, int words, double noise, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> dict(4 * words);
  for (float& x : dict) x = static_cast<float>(rng() % 256);
  std::vector<float> v(n);
  std::bernoulli_distribution random_group(noise);
  for (size_t i = 0; i + 4 <= n; i += 4) {
    const bool r = random_group(rng);
    const size_t w = rng() % words;
    for (size_t k = 0; k < 4; ++k) {
      v[i + k] = r ? static_cast<float>(rng() % 256) : dict[4 * w + k];
    }
  }
  v[0] = 0.0f;  // the full range: the same quantization for every tensor
  v[1] = 255.0f;
  return v;
}

struct Packed {
  std::string bytes;
  tqm::PackStats stats;
};

Packed Pack(tqm::TensorSource& src, tqm::PackOptions o, uint64_t sample_min_groups,
            unsigned threads = 2) {
  o.table_sample_min_groups = sample_min_groups;
  o.threads = threads;
  Packed p;
  absl::StatusOr<std::string> s = tqm::PackToString(src, o, &p.stats);
  EXPECT_TRUE(s.ok()) << s.status();
  if (s.ok()) p.bytes = std::move(*s);
  return p;
}

// File equality without printing megabytes on failure.
::testing::AssertionResult SameFile(const Packed& a, const Packed& b) {
  if (a.bytes == b.bytes) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < a.bytes.size() && i < b.bytes.size() && a.bytes[i] == b.bytes[i]) ++i;
  return ::testing::AssertionFailure()
         << "files differ: " << a.bytes.size() << " vs " << b.bytes.size()
         << " bytes, first difference at offset " << i << "; table "
         << a.stats.table_entries << " vs " << b.stats.table_entries << " entries";
}

tqm::PackOptions Options(bool entropy, tqm::Profile profile = tqm::Profile::kBalanced) {
  tqm::PackOptions o;
  o.entropy = entropy;
  o.profile = profile;
  return o;
}

// The sampled search keeps the full search's file whenever it does not skip,
// and when it skips, the full search found no table either.
void ExpectSameAsFullSearch(tqm::TensorSource& src, const tqm::PackOptions& o,
                            uint64_t sample_min_groups, const std::string& what) {
  SCOPED_TRACE(what);
  const Packed full = Pack(src, o, kFullSearch);
  const Packed sampled = Pack(src, o, sample_min_groups);
  EXPECT_FALSE(full.stats.table_search_skipped);
  EXPECT_TRUE(SameFile(sampled, full));
  EXPECT_EQ(sampled.stats.table_entries, full.stats.table_entries);
  if (sampled.stats.table_search_skipped) EXPECT_EQ(full.stats.table_entries, 0u);
}

TEST(TableSearch, SkipsTheFullSearchOnGaussianWeights) {
  tqm::MemorySource src = Model("gaussian");
  for (bool entropy : {true, false}) {
    SCOPED_TRACE(entropy ? "entropy" : "format 1.0 codecs");
    const tqm::PackOptions o = Options(entropy);
    const Packed sampled = Pack(src, o, tqm::PackOptions{}.table_sample_min_groups);
    const Packed full = Pack(src, o, kFullSearch);
    EXPECT_TRUE(sampled.stats.table_search_skipped);
    EXPECT_EQ(sampled.stats.table_entries, 0u);
    // No group counting happened, so nothing was pruned.
    EXPECT_EQ(sampled.stats.group_count_prunes, 0u);
    EXPECT_FALSE(full.stats.table_search_skipped);
    EXPECT_EQ(full.stats.table_entries, 0u);
    EXPECT_TRUE(SameFile(sampled, full));
    auto r = tqm::Reader::FromBuffer(AsSpan(sampled.bytes));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE((*r)->Verify().ok());
  }
}

TEST(TableSearch, SkipsOnGaussianWeightsPerRowAndInEveryProfile) {
  tqm::MemorySource src = Model("gaussian", 2, 1024, 2048);
  for (tqm::Profile p : {tqm::Profile::kSize, tqm::Profile::kSpeed}) {
    tqm::PackOptions o = Options(true, p);
    o.zstd_level = 3;  // kSize tries zstd; 19 is slow and beside the point
    ExpectSameAsFullSearch(src, o, kAlwaysSample, "profile");
    EXPECT_TRUE(Pack(src, o, kAlwaysSample).stats.table_search_skipped);
  }
  tqm::PackOptions row = Options(true);
  row.granularity = tqm::Granularity::kRow;
  ExpectSameAsFullSearch(src, row, kAlwaysSample, "per row");
  EXPECT_TRUE(Pack(src, row, kAlwaysSample).stats.table_search_skipped);
}

TEST(TableSearch, KeepsTheTableWhereItPays) {
  // Format 1.0 codecs: "outliers" and "student-t5" put most groups on a few
  // levels, and seqtable beats stored (tqm-bench's v1.0 column). (Student-t
  // in one tensor: its 4 M weights reach far enough out for that.)
  tqm::MemorySource outliers = Model("outliers");
  tqm::MemorySource student = Model("student-t5", 1, 4096, 1024);
  for (tqm::MemorySource* src : {&outliers, &student}) {
    const std::string what = src == &outliers ? "outliers" : "student-t5";
    const Packed sampled = Pack(*src, Options(false), kAlwaysSample);
    EXPECT_FALSE(sampled.stats.table_search_skipped) << what;
    EXPECT_GT(sampled.stats.table_entries, 0u) << what;
    EXPECT_GT(sampled.stats.chunks_seqtable, 0u) << what;
    ExpectSameAsFullSearch(*src, Options(false), kAlwaysSample, what);
    // With Huffman and rANS no table pays on these: the sample says so too.
    ExpectSameAsFullSearch(*src, Options(true), kAlwaysSample, what + ", entropy");
  }
  // Repeating groups of uniformly spread bytes pay with or without the
  // entropy codecs, in every profile.
  tqm::MemorySource dict;
  for (int i = 0; i < 4; ++i) {
    dict.Add(absl::StrFormat("model.layers.%d.w", i), {1024, 1024},
             Dictionary(1 << 20, 4096, 0.2, i + 1));
  }
  for (bool entropy : {true, false}) {
    const Packed sampled = Pack(dict, Options(entropy), kAlwaysSample);
    EXPECT_FALSE(sampled.stats.table_search_skipped);
    EXPECT_GT(sampled.stats.table_entries, 0u);
    ExpectSameAsFullSearch(dict, Options(entropy), kAlwaysSample,
                           entropy ? "dictionary" : "dictionary, format 1.0 codecs");
  }
  tqm::PackOptions size = Options(true, tqm::Profile::kSize);
  size.zstd_level = 3;
  ExpectSameAsFullSearch(dict, size, kAlwaysSample, "dictionary, size profile");
  ExpectSameAsFullSearch(dict, Options(true, tqm::Profile::kSpeed), kAlwaysSample,
                         "dictionary, speed profile");
}

TEST(TableSearch, FindsATableThatPaysInOneChunkAmongGaussianTensors) {
  // 4 MiB of Gaussian weights and one 64 KiB tensor of repeating groups: the
  // table pays on that one chunk only (format 1.0 codecs: stored vs
  // seqtable). The sample takes a slice of every chunk, so it sees it.
  tqm::MemorySource src = Model("gaussian");
  src.Add("model.layers.9.w", {64, 1024}, tqm_test::RepeatingPattern(64 * 1024, 9));
  const Packed full = Pack(src, Options(false), kFullSearch);
  ASSERT_GT(full.stats.table_entries, 0u);
  EXPECT_EQ(full.stats.chunks_seqtable, 1u);
  const Packed sampled = Pack(src, Options(false), kAlwaysSample);
  EXPECT_FALSE(sampled.stats.table_search_skipped);
  EXPECT_TRUE(SameFile(sampled, full));
}

TEST(TableSearch, Stories260KKeepsItsTableWhenItPays) {
  TQM_SKIP_WITHOUT_SHARED();
  auto src = tqm::OpenLlama2c(tqm_test::Stories260K());
  ASSERT_TRUE(src.ok()) << src.status();
  // With 4 KiB chunks a table pays on a few chunks (the embedding's); with
  // the default 64 KiB chunks none does. Sampling forced on (the model is
  // under the default threshold): the same file as the full search.
  for (uint32_t chunk : {4096u, 65536u}) {
    for (bool entropy : {true, false}) {
      tqm::PackOptions o = Options(entropy);
      o.chunk_size = chunk;
      const std::string what =
          absl::StrFormat("chunk %d%s", chunk, entropy ? "" : ", 1.0");
      ExpectSameAsFullSearch(**src, o, kAlwaysSample, what);
      const Packed full = Pack(**src, o, kFullSearch);
      if (chunk == 4096) EXPECT_GT(full.stats.table_entries, 0u) << what;
      // Under the default threshold: always the full search.
      EXPECT_FALSE(Pack(**src, o, tqm::PackOptions{}.table_sample_min_groups)
                       .stats.table_search_skipped)
          << what;
    }
  }
}

TEST(TableSearch, GoldenTinyVectorEvenWithSamplingForcedOn) {
  // spec/vectors/tiny.tqm's input (vectors_test.cc): 8 groups, 7 of them
  // table hits. A sample of an input this small is the whole input, and the
  // estimate then never says no where the full search finds a table.
  tqm::MemorySource m;
  std::vector<float> w(35);
  for (size_t i = 0; i < w.size(); ++i) w[i] = (i % 8 < 4) ? 0.5f : -0.25f;
  w[30] = 1.0f;
  m.Add("model.layers.0.mlp.up_proj.weight", {5, 7}, w);
  m.Add("model.norm.weight", {8}, {1, 1, 1, 1, 2, 2, 2, 2});
  m.AddMeta({"general.architecture", tqm::MetaValue::String("llama")});
  const Packed p = Pack(m, Options(false), kAlwaysSample);
  EXPECT_FALSE(p.stats.table_search_skipped);
  EXPECT_GT(p.stats.table_entries, 0u);
  EXPECT_TRUE(p.bytes ==
              tqm_test::ReadFile(std::string(TQM_SOURCE_DIR) + "/spec/vectors/tiny.tqm"));
}

TEST(TableSearch, SmallInputsGetTheFullSearch) {
  tqm::MemorySource src = tqm_test::SmallModel(3, 64, 128, 256, 11);
  const Packed p =
      Pack(src, tqm::PackOptions{}, tqm::PackOptions{}.table_sample_min_groups);
  EXPECT_FALSE(p.stats.table_search_skipped);
  EXPECT_TRUE(SameFile(p, Pack(src, tqm::PackOptions{}, kFullSearch)));
}

TEST(TableSearch, SameFileWhateverTheThreadCount) {
  struct Case {
    const char* what;
    tqm::MemorySource src;
    tqm::PackOptions options;
    uint64_t sample_min_groups;
  };
  tqm::PackOptions pruned = Options(false);
  // Two counting partitions of 2^16 groups each, fewer than the distinct
  // groups of the data: the counts are pruned, and must be pruned alike.
  pruned.max_counted_groups = size_t{1} << 17;
  std::vector<Case> cases;
  cases.push_back(
      {"gaussian, sampled (skips)", Model("gaussian"), Options(true), kAlwaysSample});
  cases.push_back(
      {"outliers, sampled then full", Model("outliers"), Options(false), kAlwaysSample});
  cases.push_back(
      {"outliers, full, pruned counts", Model("outliers"), pruned, kFullSearch});
  for (Case& c : cases) {
    SCOPED_TRACE(c.what);
    const Packed one = Pack(c.src, c.options, c.sample_min_groups, 1);
    for (unsigned threads : {2u, 3u, 8u}) {
      const Packed n = Pack(c.src, c.options, c.sample_min_groups, threads);
      EXPECT_TRUE(SameFile(n, one)) << threads << " threads";
      EXPECT_EQ(n.stats.group_count_prunes, one.stats.group_count_prunes);
    }
    if (c.options.max_counted_groups == pruned.max_counted_groups) {
      EXPECT_GT(one.stats.group_count_prunes, 0u);
      EXPECT_GT(one.stats.table_entries, 0u);
    }
  }
}

TEST(TableSearch, PartitionedCountingIsExactWhenNothingIsPruned) {
  // Inputs of at most 2^22 groups are counted by sorting under the default
  // bound; a bound under their group count sends them to the hash counter,
  // in one partition for bounds under 2^17. Without pruning both count
  // exactly, so the table and file agree.
  tqm::MemorySource src;
  src.Add("w", {512, 1024}, Dictionary(512 * 1024, 4096, 0.01, 5));
  tqm::PackOptions one_part = Options(false);
  one_part.max_counted_groups = size_t{1} << 16;
  const Packed a = Pack(src, Options(false), kFullSearch);
  const Packed b = Pack(src, one_part, kFullSearch);
  ASSERT_EQ(b.stats.group_count_prunes, 0u);
  EXPECT_EQ(a.stats.group_count_prunes, 0u);
  EXPECT_GT(a.stats.table_entries, 0u);
  EXPECT_TRUE(SameFile(a, b));
}

TEST(TableSearch, SampledPassReportsBadWeightsByTensor) {
  for (tqm::Granularity g : {tqm::Granularity::kTensor, tqm::Granularity::kRow}) {
    tqm::MemorySource src = Model("gaussian", 1);
    std::vector<float> bad = Weights("gaussian", 1024 * 1024, 7);
    bad[123457] = NAN;
    src.Add("model.layers.5.bad.weight", {1024, 1024}, bad);
    tqm::PackOptions o;
    o.granularity = g;
    o.table_sample_min_groups = kAlwaysSample;
    auto r = tqm::PackToString(src, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_NE(r.status().message().find("model.layers.5.bad.weight"), std::string::npos)
        << r.status();
  }
}

}  // namespace
