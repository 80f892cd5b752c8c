// Corruption campaign over the importers: single-byte flips and truncations
// of the GGUF fixtures (../shared/fixtures/gguf) and of a safetensors file
// written from stories260K, each opened from memory (InputFile::FromBuffer)
// and every tensor read back. Each input must import or fail with a code for
// bad input and a message naming it; no crash, no sanitizer report. This
// binary replaces the global operator new/delete to measure, per input, the
// largest single allocation and the peak of live heap bytes above what was
// live before the open; the peak must stay below 4 x the input size + 1 MiB.
//
// Coverage: every byte of the first kDenseHeader bytes of the header (the
// whole GGUF metadata and tensor infos of the stories260K fixtures, the
// safetensors length and JSON) XOR 0x01, 0x80 and 0xFF, then an even sample
// of the rest of a longer header (the 32000-token vocabulary fixture: its
// first 1 KiB dense), and a sample of the data area; every truncation length
// within the dense header part, an even sample after it.
// TQM_CORRUPTION_STRIDE=n keeps every n-th position only (the sanitizer
// build sets it). Counts and measurements are printed and recorded as test
// properties.

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "../fuzz/import_check.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "interop/import_internal.h"
#include "test_util.h"
#include "tqm/gguf.h"
#include "tqm/import.h"
#include "tqm/safetensors.h"

// ---- heap accounting ----

namespace {

std::atomic<uint64_t> g_live{0};
std::atomic<uint64_t> g_peak{0};
std::atomic<uint64_t> g_largest{0};

void Noted(void* p, size_t n) {
  if (p == nullptr) return;
  const uint64_t live = g_live.fetch_add(malloc_usable_size(p)) + malloc_usable_size(p);
  uint64_t peak = g_peak.load(std::memory_order_relaxed);
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  uint64_t largest = g_largest.load(std::memory_order_relaxed);
  while (n > largest && !g_largest.compare_exchange_weak(largest, n)) {
  }
}

void* Allocate(size_t n, size_t align, bool nothrow) {
  void* p;
  if (align <= alignof(std::max_align_t)) {
    p = malloc(n == 0 ? 1 : n);
  } else {
    p = aligned_alloc(align, (std::max<size_t>(n, 1) + align - 1) / align * align);
  }
  if (p == nullptr && !nothrow) throw std::bad_alloc();
  Noted(p, n);
  return p;
}

void Release(void* p) {
  if (p == nullptr) return;
  g_live.fetch_sub(malloc_usable_size(p));
  free(p);
}

}  // namespace

void* operator new(size_t n) { return Allocate(n, 0, false); }
void* operator new[](size_t n) { return Allocate(n, 0, false); }
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return Allocate(n, 0, true);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return Allocate(n, 0, true);
}
void* operator new(size_t n, std::align_val_t a) {
  return Allocate(n, static_cast<size_t>(a), false);
}
void* operator new[](size_t n, std::align_val_t a) {
  return Allocate(n, static_cast<size_t>(a), false);
}
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return Allocate(n, static_cast<size_t>(a), true);
}
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return Allocate(n, static_cast<size_t>(a), true);
}
void operator delete(void* p) noexcept { Release(p); }
void operator delete[](void* p) noexcept { Release(p); }
void operator delete(void* p, size_t) noexcept { Release(p); }
void operator delete[](void* p, size_t) noexcept { Release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { Release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { Release(p); }
void operator delete(void* p, std::align_val_t) noexcept { Release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { Release(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { Release(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { Release(p); }

namespace {

using tqm::TensorSource;
using tqm::internal::InputFile;
using Opener = std::function<absl::StatusOr<std::unique_ptr<TensorSource>>(
    std::unique_ptr<InputFile>)>;

// Header bytes tested at every position; a longer header is sampled. A
// header past kLongHeader (the vocabulary fixture: 724 KB of tokens, parsed
// in full by every open) gets only kDenseLongHeader dense bytes, which cover
// the counts, the first keys and the start of the token array.
constexpr size_t kDenseHeader = 16 << 10;
constexpr size_t kLongHeader = 64 << 10;
constexpr size_t kDenseLongHeader = 1 << 10;
// Positions sampled beyond the dense part, and in the data area.
constexpr size_t kSampledHeader = 512;
constexpr size_t kSampledData = 64;
constexpr uint8_t kFlips[] = {0x01, 0x80, 0xFF};

size_t Stride() {
  const char* s = getenv("TQM_CORRUPTION_STRIDE");
  const size_t n = s ? strtoul(s, nullptr, 10) : 1;
  return n == 0 ? 1 : n;
}

struct Campaign {
  std::string name;
  Opener open;
  size_t inputs = 0, opened = 0, rejected = 0, tensors_read = 0, read_errors = 0;
  uint64_t largest_alloc = 0;     // bytes, one allocation
  uint64_t worst_peak = 0;        // live bytes above the baseline
  uint64_t worst_peak_input = 0;  // the size of the input that caused it
  std::vector<std::string> problems;

  // Opens `bytes` (an exactly sized heap copy, so ASan sees overreads) and
  // reads every tensor, measuring the heap while it does.
  void Try(const std::vector<uint8_t>& bytes, const std::string& what) {
    ++inputs;
    const uint64_t base = g_live.load();
    g_peak.store(base);
    g_largest.store(0);
    {
      absl::StatusOr<std::unique_ptr<TensorSource>> src =
          open(InputFile::FromBuffer(absl::MakeConstSpan(bytes), name));
      if (!src.ok()) {
        ++rejected;
        const std::string p = tqm_fuzz::RejectionProblem(src.status(), name);
        if (!p.empty()) Problem(what + ": " + p);
      } else {
        tqm_fuzz::ReadStats stats;
        const std::string p = tqm_fuzz::ExerciseSource(**src, name, bytes.size(), &stats);
        if (!p.empty()) Problem(what + ": " + p);
        opened += stats.opened;
        tensors_read += stats.tensors_read;
        read_errors += stats.read_errors;
      }
    }
    const uint64_t peak = g_peak.load() - base;
    largest_alloc = std::max<uint64_t>(largest_alloc, g_largest.load());
    if (peak > worst_peak) {
      worst_peak = peak;
      worst_peak_input = bytes.size();
    }
    const uint64_t bound = 4 * uint64_t{bytes.size()} + (1 << 20);
    if (peak > bound) {
      Problem(
          absl::StrFormat("%s: peak heap %d bytes above the bound %d (input %d bytes)",
                          what, peak, bound, bytes.size()));
    }
  }

  void Problem(const std::string& p) {
    if (problems.size() < 20) problems.push_back(p);
  }

  std::string Summary() const {
    return absl::StrFormat(
        "%d inputs: %d opened (%d tensors read, %d read errors), %d rejected; largest "
        "allocation %d bytes; worst peak %d bytes above baseline (input %d bytes, %.2fx)",
        inputs, opened, tensors_read, read_errors, rejected, largest_alloc, worst_peak,
        worst_peak_input,
        worst_peak_input ? static_cast<double>(worst_peak) / worst_peak_input : 0.0);
  }
};

// Positions [begin, end): all of the first `dense`, then `sampled` evenly
// spread over the rest; every stride-th one kept.
std::vector<size_t> Positions(size_t begin, size_t end, size_t dense, size_t sampled) {
  std::vector<size_t> out;
  const size_t stride = Stride();
  const size_t dense_end = std::min(end, begin + dense);
  for (size_t i = begin; i < dense_end; i += stride) out.push_back(i);
  if (dense_end < end && sampled > 0) {
    const size_t n = std::max<size_t>(1, sampled / stride);
    for (size_t k = 0; k < n; ++k) out.push_back(dense_end + (end - dense_end) * k / n);
  }
  return out;
}

// The whole campaign over one valid file whose header ends at `header_end`.
void RunCampaign(Campaign& c, const std::string& file, size_t header_end) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> b(file.begin(), file.end());
  c.Try(b, "original");
  ASSERT_EQ(c.opened, 1u) << c.name << ": the unmodified file must import";
  ASSERT_TRUE(c.problems.empty()) << c.problems[0];
  const size_t dense = header_end > kLongHeader ? kDenseLongHeader : kDenseHeader;
  const size_t sampled = header_end > kLongHeader ? kSampledHeader / 2 : kSampledHeader;
  std::vector<size_t> flips = Positions(0, header_end, dense, sampled);
  for (size_t p : Positions(header_end, b.size(), 0, kSampledData)) flips.push_back(p);
  for (size_t i : flips) {
    for (uint8_t x : kFlips) {
      b[i] ^= x;
      c.Try(b, absl::StrFormat("byte %d ^ 0x%02x", i, x));
      b[i] ^= x;
    }
  }
  std::vector<size_t> cuts = Positions(0, header_end, dense, sampled);
  for (size_t p : Positions(header_end, b.size(), 0, kSampledData)) cuts.push_back(p);
  cuts.push_back(b.size() - 1);
  for (size_t n : cuts) {
    c.Try(std::vector<uint8_t>(file.begin(), file.begin() + n),
          absl::StrFormat("truncated to %d bytes", n));
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string summary = absl::StrFormat(
      "%s (%d bytes, header %d): %s; %d flip positions x %d values, %d truncations; %.1f "
      "s",
      c.name, file.size(), header_end, c.Summary(), flips.size(), sizeof(kFlips),
      cuts.size(), secs);
  std::cout << "[import campaign] " << summary << "\n";
  ::testing::Test::RecordProperty(c.name, summary);
  for (const std::string& p : c.problems) ADD_FAILURE() << c.name << ": " << p;
}

Opener Gguf() {
  return [](std::unique_ptr<InputFile> f) {
    return tqm::internal::OpenGgufInput(std::move(f));
  };
}

class GgufCampaign : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufCampaign, FlipsAndTruncations) {
  const std::string path = tqm_test::SharedPath("fixtures/gguf/" + GetParam());
  if (!tqm_test::Exists(path)) GTEST_SKIP() << path << " not found (../shared fixtures)";
  const std::string file = tqm_test::ReadFile(path);
  auto info = tqm::ReadGgufInfo(path);
  ASSERT_TRUE(info.ok()) << info.status();
  // A file without tensors is all header.
  const size_t header_end =
      info->tensors.empty() ? file.size() : static_cast<size_t>(info->data_offset);
  Campaign c{GetParam(), Gguf()};
  RunCampaign(c, file, header_end);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufCampaign,
                         ::testing::Values("stories260K-f32.gguf", "stories260K-f16.gguf",
                                           "stories260K-q8_0.gguf",
                                           "ggml-vocab-llama-spm.gguf"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           std::string n = p.param.substr(0, p.param.find(".gguf"));
                           std::replace(n.begin(), n.end(), '-', '_');
                           std::replace(n.begin(), n.end(), '.', '_');
                           return n;
                         });

// stories260K as safetensors through the library: llama2.c import, then the
// safetensors writer (2-D weights F16 and BF16 alternately, norms F32), so
// that all three conversion paths are hit.
TEST(ImportCampaign, SafetensorsFromStories260K) {
  const std::string model = tqm_test::Stories260K();
  if (!tqm_test::Exists(model)) GTEST_SKIP() << model << " not found (../shared models)";
  auto src = tqm::OpenLlama2c(model);
  ASSERT_TRUE(src.ok()) << src.status();
  std::vector<tqm::SafetensorsEntry> entries;
  for (size_t i = 0; i < (*src)->tensors().size(); ++i) {
    const tqm::SourceTensor& t = (*src)->tensors()[i];
    const char* dtype = t.dims.size() < 2 ? "F32" : i % 2 ? "F16" : "BF16";
    entries.push_back({t.name, dtype, t.dims});
  }
  const std::string path = ::testing::TempDir() + "import_fuzz_stories260K.safetensors";
  auto w = tqm::SafetensorsWriter::Create(path, entries, {{"format", "pt"}});
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<float> v;
  for (size_t i = 0; i < entries.size(); ++i) {
    ASSERT_TRUE((*src)->Read(i, &v).ok());
    std::vector<uint8_t> bytes;
    if (entries[i].dtype == "F32") {
      bytes.resize(v.size() * 4);
      memcpy(bytes.data(), v.data(), bytes.size());
    } else {
      for (float f : v) {
        const uint16_t h = entries[i].dtype == "BF16" ? tqm::internal::FloatToBFloat16(f)
                                                      : tqm::internal::FloatToHalf(f);
        bytes.push_back(static_cast<uint8_t>(h));
        bytes.push_back(static_cast<uint8_t>(h >> 8));
      }
    }
    ASSERT_TRUE((*w)->Write(absl::MakeConstSpan(bytes)).ok());
  }
  ASSERT_TRUE((*w)->Finish().ok());
  const std::string file = tqm_test::ReadFile(path);
  unlink(path.c_str());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i)
    header_len = header_len << 8 | static_cast<uint8_t>(file[i]);
  Campaign c{"stories260K.safetensors", [](std::unique_ptr<InputFile> f) {
               return tqm::internal::OpenSafetensorsInput(std::move(f));
             }};
  RunCampaign(c, file, static_cast<size_t>(8 + header_len));
}

// The committed importer seeds (fuzz/corpus/fuzz_gguf, fuzz_safetensors,
// fuzz_llama2c) are valid files: libFuzzer mutates from inputs that reach
// the tensor reads.
TEST(ImportCampaign, SeedCorporaImport) {
  const struct {
    const char* dir;
    const char* file;
    Opener open;
  } seeds[] = {
      {"fuzz_gguf", "tiny_f32.gguf", Gguf()},
      {"fuzz_gguf", "tiny_f16_lm_head.gguf", Gguf()},
      {"fuzz_gguf", "tiny_q8_0.gguf", Gguf()},
      {"fuzz_safetensors", "dtypes.safetensors",
       [](std::unique_ptr<InputFile> f) {
         return tqm::internal::OpenSafetensorsInput(std::move(f));
       }},
      {"fuzz_llama2c", "tiny_shared.bin",
       [](std::unique_ptr<InputFile> f) {
         return tqm::internal::OpenLlama2cInput(std::move(f));
       }},
      {"fuzz_llama2c", "tiny_lm_head.bin",
       [](std::unique_ptr<InputFile> f) {
         return tqm::internal::OpenLlama2cInput(std::move(f));
       }},
  };
  for (const auto& s : seeds) {
    const std::string path =
        std::string(TQM_SOURCE_DIR) + "/fuzz/corpus/" + s.dir + "/" + s.file;
    const std::string file = tqm_test::ReadFile(path);
    ASSERT_FALSE(file.empty()) << path;
    Campaign c{s.file, s.open};
    c.Try(std::vector<uint8_t>(file.begin(), file.end()), "seed");
    EXPECT_EQ(c.opened, 1u) << path;
    EXPECT_GT(c.tensors_read, 0u) << path;
    for (const std::string& p : c.problems) ADD_FAILURE() << p;
  }
}

// The accounting itself: a tracked allocation raises the peak and the
// largest allocation, so a bound violation cannot go unseen.
TEST(ImportCampaign, HeapAccountingSeesAllocations) {
  const uint64_t base = g_live.load();
  g_peak.store(base);
  g_largest.store(0);
  {
    std::vector<uint8_t> big(3 << 20);
    big[0] = 1;
    EXPECT_GE(g_largest.load(), uint64_t{3} << 20);
  }
  EXPECT_GE(g_peak.load() - base, uint64_t{3} << 20);
  EXPECT_LT(g_live.load(), base + (1 << 20));
}

}  // namespace

namespace {

// A GGUF header of `n` metadata pairs, each the smallest possible (a short
// key, a u8 value), and no tensors.
std::vector<uint8_t> TinyPairsGguf(uint64_t n) {
  std::vector<uint8_t> s = {'G', 'G', 'U', 'F'};
  auto put = [&](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) s.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  put(3, 4);
  put(0, 8);
  put(n, 8);
  for (uint64_t i = 0; i < n; ++i) {
    const std::string key = std::to_string(i);
    put(key.size(), 8);
    s.insert(s.end(), key.begin(), key.end());
    put(tqm::gguf::kTypeU8, 4);
    put(1, 1);
  }
  return s;
}

// Each pair costs ~300 bytes in memory once imported for 14-18 in the file:
// the reader caps the count (1024) so that such a file stays within the
// bound, and says so for more.
TEST(ImportCampaign, GgufOfTinyMetadataPairsIsBounded) {
  for (uint64_t n : {uint64_t{1024}, uint64_t{50000}}) {
    const std::vector<uint8_t> file = TinyPairsGguf(n);
    Campaign c{"pairs.gguf", Gguf()};
    c.Try(file, absl::StrFormat("%d pairs", n));
    for (const std::string& p : c.problems) ADD_FAILURE() << p;
    EXPECT_EQ(c.opened, n <= 1024 ? 1u : 0u) << n;
    std::cout << "[import campaign] " << n << " tiny metadata pairs: " << c.Summary()
              << "\n";
  }
  auto big = tqm::internal::ReadGgufInfo(
      *InputFile::FromBuffer(absl::MakeConstSpan(TinyPairsGguf(1025)), "pairs.gguf"));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
}

TEST(InputFileFromBuffer, ReadsLikeAFile) {
  const std::vector<uint8_t> bytes = {1, 2, 3, 4, 5};
  std::unique_ptr<InputFile> f =
      InputFile::FromBuffer(absl::MakeConstSpan(bytes), "mem.bin");
  EXPECT_EQ(f->size(), 5u);
  EXPECT_EQ(f->path(), "mem.bin");
  uint8_t out[3] = {};
  ASSERT_TRUE(f->ReadAt(2, out, 3).ok());
  EXPECT_EQ(out[0], 3);
  EXPECT_EQ(out[2], 5);
  EXPECT_TRUE(f->ReadAt(5, out, 0).ok());
  const absl::Status past = f->ReadAt(3, out, 3);
  EXPECT_EQ(past.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(past.message().find("mem.bin"), std::string::npos) << past;
  EXPECT_EQ(f->ReadAt(~uint64_t{0}, out, 1).code(), absl::StatusCode::kDataLoss);
}

TEST(ParseShardIndex, WeightMapAndMetadata) {
  auto index = tqm::internal::ParseShardIndex(
      R"({"metadata": {"total_size": 12, "x": [1]},
          "weight_map": {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s1.safetensors"}})",
      "m.index.json");
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->shards.size(), 2u);
  EXPECT_EQ(index->shards.at("s1.safetensors").size(), 2u);
  ASSERT_EQ(index->metadata.size(), 1u);  // arrays are not scalars
  EXPECT_EQ(index->metadata[0].second, "12");
  for (const char* bad : {R"({"weight_map": {"a": "../s.safetensors"}})",
                          R"({"weight_map": {}})", "[1]", "{"}) {
    auto s = tqm::internal::ParseShardIndex(bad, "m.index.json");
    EXPECT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << bad;
    EXPECT_NE(s.status().message().find("m.index.json"), std::string::npos) << s.status();
  }
}

}  // namespace
