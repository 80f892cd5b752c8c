// Corruption campaign over a packed model: the real stories260K (from
// ../shared; skipped when absent) and a generated small model (always).
//   - every single-byte corruption of the file (each byte XORed with one bit,
//     and each byte XORed with 0xFF) must be rejected by Reader::FromBuffer or
//     Reader::Verify -- what `tqm-inspect --verify` runs -- with a DataLoss /
//     Unimplemented / ResourceExhausted status naming the file;
//   - every truncation must be rejected, also with the header's file_size
//     and checksum repaired to match the cut;
//   - every byte of the index structures flipped with all checksums
//     recomputed (so the flip reaches the validation behind them) must not
//     crash, and a file that still opens must decode;
//   - no single allocation the reader makes may exceed what the file's bytes
//     can justify (measured by replacing operator new; skipped under
//     sanitizers, which replace it themselves).
// Samples also go through Reader::Open (the mmap path), tqm::Inspect and the
// loader (Model), which must report the damage when it decodes a layer.
// Counts and the breakdown of where each corruption was caught are printed
// and recorded as test properties. TQM_CORRUPTION_STRIDE=n tests every n-th
// byte only (sanitizer builds use it to stay fast); the default is every byte.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "../fuzz/file_editor.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tqm/import.h"
#include "tqm/inspect.h"
#include "tqm/loader.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

// ---- allocation meter ----
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define TQM_NO_ALLOC_METER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TQM_NO_ALLOC_METER 1
#endif

namespace {
std::atomic<bool> g_metering{false};
std::atomic<size_t> g_largest{0};
}  // namespace

#ifndef TQM_NO_ALLOC_METER
void* operator new(size_t n) {
  if (g_metering.load(std::memory_order_relaxed)) {
    size_t cur = g_largest.load(std::memory_order_relaxed);
    while (n > cur && !g_largest.compare_exchange_weak(cur, n)) {
    }
  }
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
constexpr bool kMetered = true;
#else
constexpr bool kMetered = false;
#endif

namespace {

using tqm_fuzz::Bytes;

// Measures the largest single allocation made while it lives.
class AllocationMeter {
 public:
  AllocationMeter() {
    g_largest.store(0);
    g_metering.store(true);
  }
  ~AllocationMeter() { g_metering.store(false); }
  size_t largest() const { return g_largest.load(); }
};

// The most one allocation may take for a file of `size` bytes: one chunk's
// decoded bytes (Verify's buffer: at most the format's 4 MiB cap, whatever
// the codec), the in-memory index (a few times the index bytes), a whole
// stored/seqtable tensor (at most 2 decoded bytes per encoded byte), plus a
// constant. Generous on purpose: what it catches is a count or length from
// the file driving an allocation the bytes cannot back.
uint64_t AllocationLimit(uint64_t size) {
  return 16 * size + tqm::format::kMaxChunkDecodedSize + (1u << 20);
}

std::vector<float> Gaussian(size_t n, uint32_t seed, float sigma = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A small Llama-shaped model: embedding, two layers, final norm.
std::string GeneratedModel() {
  tqm::MemorySource m;
  const uint64_t d = 32, h = 64, v = 96;
  m.AddMeta({"general.architecture", tqm::MetaValue::String("llama")});
  m.AddMeta({"llama.dim", tqm::MetaValue::Int(d)});
  m.AddMeta({"llama.norm_eps", tqm::MetaValue::Float(1e-5)});
  m.Add("model.embed_tokens.weight", {v, d}, Gaussian(v * d, 1));
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    m.Add(p + "input_layernorm.weight", {d}, std::vector<float>(d, 1.0f));
    m.Add(p + "self_attn.q_proj.weight", {d, d}, Gaussian(d * d, 10 + l));
    m.Add(p + "self_attn.k_proj.weight", {d / 2, d}, Gaussian(d * d / 2, 20 + l));
    m.Add(p + "mlp.up_proj.weight", {h, d}, Gaussian(h * d, 30 + l));
    m.Add(p + "mlp.down_proj.weight", {d, h}, Gaussian(h * d, 40 + l));
  }
  m.Add("model.norm.weight", {d}, Gaussian(d, 9, 1.0f));
  tqm::PackOptions o;
  o.chunk_size = 1024;  // several chunks per tensor
  o.entropy = false;    // seqtable and stored here; stories260K gets the defaults
  absl::StatusOr<std::string> s = tqm::PackToString(m, o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::string();
}

std::string Stories260KPath() {
  return std::string(TQM_SHARED_DIR) + "/models/stories260K/stories260K.bin";
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string Stories260K() {
  auto src = tqm::OpenLlama2c(Stories260KPath());
  EXPECT_TRUE(src.ok()) << src.status();
  if (!src.ok()) return "";
  absl::StatusOr<std::string> s = tqm::PackToString(**src, tqm::PackOptions());
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::string();
}

std::string TempDir() {
  const char* t = getenv("TEST_TMPDIR");
  std::string base = t && *t ? t : "/tmp";
  std::string dir = base + "/tqm_corruption_XXXXXX";
  if (!mkdtemp(dir.data())) return base;
  return dir;
}

void WriteFile(const std::string& path, absl::Span<const uint8_t> bytes) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  close(fd);
}

// Where a rejection came from: the structure its message names first.
std::string Where(const absl::Status& s, const std::string& name) {
  std::string m(s.message());
  if (m.compare(0, name.size(), name) == 0) m = m.substr(name.size());
  if (m.compare(0, 2, ": ") == 0) m = m.substr(2);
  size_t colon = m.find(':');
  std::string w;
  for (char c : colon == std::string::npos ? m : m.substr(0, colon)) {
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      w += c;
    } else if (w.empty() || w.back() != 'N') {
      w += 'N';  // numbers vary; the structure does not
    }
  }
  if (w.size() > 48) w = w.substr(0, 48);
  return w;
}

struct Tally {
  uint64_t cases = 0;
  uint64_t rejected_at_open = 0;
  uint64_t rejected_by_verify = 0;
  uint64_t accepted = 0;  // only legitimate for repaired-checksum flips
  size_t largest_allocation = 0;
  std::map<std::string, uint64_t> where;  // "<stage> <structure> <CODE>"
  std::vector<std::string> problems;      // first few, for the failure message

  void Problem(const std::string& p) {
    if (problems.size() < 10) problems.push_back(p);
  }
  std::string Summary() const {
    std::string s = absl::StrFormat("%d cases: %d rejected at open, %d by Verify, %d accepted",
                                    cases, rejected_at_open, rejected_by_verify, accepted);
    if (kMetered) s += absl::StrFormat("; largest allocation %d bytes", largest_allocation);
    for (const auto& [w, n] : where) s += absl::StrFormat("\n    %8d  %s", n, w);
    return s;
  }
};

bool AllowedCode(absl::StatusCode c) {
  return c == absl::StatusCode::kDataLoss || c == absl::StatusCode::kUnimplemented ||
         c == absl::StatusCode::kResourceExhausted;
}

// Opens and verifies `bytes` the way tqm-inspect --verify does, tallies the
// outcome, and returns it. `decode_accepted` also reads every tensor of a
// file that passes (used when checksums were repaired).
absl::Status Examine(absl::Span<const uint8_t> bytes, const std::string& name, Tally* t,
                     bool decode_accepted = false) {
  ++t->cases;
  absl::Status s;
  std::string stage;
  size_t largest = 0;
  {
    AllocationMeter meter;
    auto r = tqm::Reader::FromBuffer(bytes, name);
    if (!r.ok()) {
      s = r.status();
      stage = "open";
    } else {
      // What tqm-inspect prints before it verifies (sampled: it reads only
      // the index, which a flip inside DATA leaves as it was).
      if (t->cases % 16 == 1 || decode_accepted) {
        tqm::InspectReport report = tqm::Inspect(**r);
        (void)report;
      }
      s = (*r)->Verify();
      stage = "verify";
      if (s.ok() && decode_accepted) {
        for (size_t i = 0; i < (*r)->tensors().size(); ++i) {
          std::vector<float> out;
          {
            g_metering.store(false);  // the caller's buffer is not the reader's
            out.resize((*r)->tensors()[i].numel);
            g_metering.store(true);
          }
          absl::Status d = (*r)->ReadFloat(i, absl::MakeSpan(out));
          if (!d.ok()) t->Problem("verified file fails to decode: " + d.ToString());
        }
      }
    }
    largest = meter.largest();
  }
  t->largest_allocation = std::max(t->largest_allocation, largest);
  if (kMetered && largest > AllocationLimit(bytes.size())) {
    t->Problem(absl::StrFormat("%s: allocation of %d bytes for a %d-byte file (%s)", name,
                               largest, bytes.size(), s.ToString()));
  }
  if (s.ok()) {
    ++t->accepted;
    return s;
  }
  (stage == "open" ? t->rejected_at_open : t->rejected_by_verify)++;
  ++t->where[stage + "  " + Where(s, name) + "  " + absl::StatusCodeToString(s.code())];
  if (!AllowedCode(s.code())) t->Problem("unexpected code: " + s.ToString());
  if (s.message().find(name) == std::string::npos) {
    t->Problem("message does not name the file: " + s.ToString());
  }
  return s;
}

size_t Stride() {
  const char* s = getenv("TQM_CORRUPTION_STRIDE");
  size_t n = s ? strtoul(s, nullptr, 10) : 1;
  return n == 0 ? 1 : n;
}

void Report(const std::string& what, const Tally& t) {
  std::cout << "[corruption] " << what << ": " << t.Summary() << "\n";
  ::testing::Test::RecordProperty(what, t.Summary());
  for (const std::string& p : t.problems) ADD_FAILURE() << what << ": " << p;
}

// Every byte XOR one bit (bit = offset % 8), then every byte XOR 0xFF.
void FlipEveryByte(const std::string& file, const std::string& name) {
  ASSERT_FALSE(file.empty());
  std::vector<uint8_t> b(file.begin(), file.end());  // exactly sized for ASan
  const auto t0 = std::chrono::steady_clock::now();
  const size_t stride = Stride();
  for (int pass = 0; pass < 2; ++pass) {
    Tally t;
    for (size_t i = 0; i < b.size(); i += stride) {
      const uint8_t mask = pass == 0 ? uint8_t(1u << (i % 8)) : uint8_t{0xFF};
      b[i] ^= mask;
      absl::Status s = Examine(absl::MakeConstSpan(b), name, &t);
      if (s.ok()) t.Problem(absl::StrFormat("flip of byte %d (xor 0x%02x) accepted", i, mask));
      b[i] ^= mask;
    }
    Report(absl::StrFormat("%s: %s flips (every %d. byte of %d)", name,
                           pass == 0 ? "single-bit" : "0xFF-byte", stride, b.size()),
           t);
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[corruption] " << name << ": flips took " << secs << " s\n";
}

void TruncateEverywhere(const std::string& file, const std::string& name) {
  ASSERT_FALSE(file.empty());
  const std::vector<uint8_t> b(file.begin(), file.end());
  Tally t;
  for (size_t len = 0; len < b.size(); ++len) {
    // The reader must not look past `len`: exactly sized copies for the
    // short prefixes and a sample of the rest (ASan sees any over-read);
    // views into the whole file for the others.
    if (len <= 4096 || len % 1021 == 0 || len + 64 >= b.size()) {
      std::vector<uint8_t> cut(b.begin(), b.begin() + len);
      if (Examine(absl::MakeConstSpan(cut), name, &t).ok()) {
        t.Problem(absl::StrFormat("truncation to %d bytes accepted", len));
      }
    } else if (Examine(absl::MakeConstSpan(b).subspan(0, len), name, &t).ok()) {
      t.Problem(absl::StrFormat("truncation to %d bytes accepted", len));
    }
  }
  Report(absl::StrFormat("%s: truncations (every length 0..%d)", name, b.size() - 1), t);

  // A truncation whose header was repaired to claim the shorter size.
  Tally r;
  for (size_t len = 64; len < b.size(); len += (len < 8192 ? 1 : 61)) {
    std::string cut(file.data(), len);
    tqm_fuzz::Store<uint64_t>(&cut, 16, len);
    tqm_fuzz::FixOptions header_only;
    header_only.chunks = header_only.sections = header_only.directory = false;
    tqm_fuzz::FixChecksums(&cut, header_only);
    std::vector<uint8_t> exact(cut.begin(), cut.end());
    if (Examine(absl::MakeConstSpan(exact), name, &r).ok()) {
      r.Problem(absl::StrFormat("truncation to %d bytes with a repaired header accepted", len));
    }
  }
  Report(name + ": truncations with file_size and header checksum repaired", r);
}

// Every byte outside DATA flipped, then every checksum recomputed.
void FlipIndexWithRepairedChecksums(const std::string& file, const std::string& name) {
  ASSERT_FALSE(file.empty());
  const tqm_fuzz::Layout l = tqm_fuzz::Scan(file);
  const tqm_fuzz::SectionLoc* data = l.Find(tqm::format::kSectionData);
  ASSERT_NE(data, nullptr);
  Tally t;
  const size_t stride = Stride();
  for (size_t i = 0; i < file.size(); i += stride) {
    if (i >= data->offset && i < data->offset + data->length) continue;
    // Checksum fields themselves would just be recomputed.
    if (i >= 40 && i < 48) continue;
    if (i >= 56 && i < 64) continue;
    std::string b = file;
    b[i] ^= static_cast<char>(1u << (i % 8));
    tqm_fuzz::FixChecksums(&b);
    std::vector<uint8_t> exact(b.begin(), b.end());
    (void)Examine(absl::MakeConstSpan(exact), name, &t, /*decode_accepted=*/true);
  }
  Report(name + ": index flips with every checksum repaired", t);
}

// A sample of corruptions through the other doors: Reader::Open (mmap) and
// the loader, which must fail when it decodes the damaged layer.
void SampleThroughFilesAndLoader(const std::string& file, const std::string& name) {
  ASSERT_FALSE(file.empty());
  const std::string dir = TempDir();
  const std::string path = dir + "/" + name;
  const tqm_fuzz::Layout l = tqm_fuzz::Scan(file);
  uint64_t opened = 0, open_rejected = 0, loader_rejected[2] = {0, 0}, loader_cases = 0;
  std::mt19937 rng(5);
  for (int k = 0; k < 100; ++k) {
    std::string b = file;
    size_t i = rng() % b.size();
    if (k < 40) {
      // Inside a chunk: Open succeeds, the loader must catch it on decode.
      const auto& t = l.tensors[rng() % l.tensors.size()];
      const auto& c = t.chunks[rng() % t.chunks.size()];
      i = c.offset + rng() % c.encoded_size;
    }
    b[i] ^= static_cast<char>(1u << (k % 8));
    WriteFile(path, Bytes(b));
    if (::testing::Test::HasFailure()) return;
    auto r = tqm::Reader::Open(path);
    if (!r.ok()) {
      ++open_rejected;
      EXPECT_TRUE(AllowedCode(r.status().code())) << r.status();
      EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status();
      continue;
    }
    ++opened;
    EXPECT_FALSE((*r)->Verify().ok()) << "flip at " << i;
    if (k >= 40) continue;
    ++loader_cases;
    // The loader, with its zero-copy views off (every chunk is decoded) and
    // with the defaults (stored tensors are viewed in place in the mapping).
    for (bool zero_copy : {false, true}) {
      tqm::ModelOptions o;
      o.threads = 1;
      o.zero_copy = zero_copy;
      auto reopened = tqm::Reader::Open(path);
      ASSERT_TRUE(reopened.ok()) << reopened.status();
      auto m = tqm::Model::FromReader(std::move(*reopened), o);
      ASSERT_TRUE(m.ok()) << m.status();
      absl::Status first;
      for (int layer = tqm::format::kNoLayer; layer < (*m)->num_layers() && first.ok();
           ++layer) {
        if (!(*m)->HasLayer(layer)) continue;
        auto h = (*m)->Layer(layer);
        if (!h.ok()) first = h.status();
      }
      if (!first.ok()) {
        ++loader_rejected[zero_copy];
        EXPECT_EQ(first.code(), absl::StatusCode::kDataLoss) << first;
        EXPECT_NE(first.message().find(path), std::string::npos) << first;
      }
    }
  }
  unlink(path.c_str());
  rmdir(dir.c_str());
  std::cout << "[corruption] " << name << ": 100 sampled flips through Reader::Open: "
            << open_rejected << " rejected at open, " << opened
            << " opened and failed Verify; the loader rejected " << loader_rejected[0]
            << " (zero_copy off) and " << loader_rejected[1] << " (defaults) of "
            << loader_cases << " flips inside chunks when decoding every layer\n";
  EXPECT_EQ(loader_rejected[0], loader_cases) << "the loader decoded a corrupted chunk";
  EXPECT_EQ(loader_rejected[1], loader_cases)
      << "with zero_copy (the default) the loader hands out corrupted stored tensors: "
         "in-place views are never checked against their chunk checksums";
}

// A count the file's bytes back only at the smallest entry size must not
// make the reader reserve its larger in-memory form up front: METADATA holds
// one 4 MiB BYTES value, and its count is raised to the most 8-byte entries
// the section could hold (an 88-byte MetaEntry each: 46 MB if reserved).
TEST(AllocationCaps, MetadataCountDoesNotPreallocate) {
  if (!kMetered) GTEST_SKIP() << "allocation meter off under sanitizers";
  tqm::MemorySource m;
  m.AddMeta({"blob", tqm::MetaValue::Bytes(std::string(4 << 20, 'x'))});
  m.Add("w", {4}, {1, 2, 3, 4});
  tqm::PackOptions o;
  o.entropy = false;
  absl::StatusOr<std::string> packed = tqm::PackToString(m, o);
  ASSERT_TRUE(packed.ok()) << packed.status();
  std::string b = *packed;
  const tqm_fuzz::Layout l = tqm_fuzz::Scan(b);
  const tqm_fuzz::SectionLoc* meta = l.Find(tqm::format::kSectionMetadata);
  ASSERT_NE(meta, nullptr);
  tqm_fuzz::Store<uint32_t>(&b, meta->offset, (meta->length - 8) / 8);
  tqm_fuzz::FixChecksums(&b);
  Tally t;
  absl::Status s = Examine(Bytes(b), "blob.tqm", &t);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  // The 4 MiB value itself is read into a string: the file backs that.
  EXPECT_LE(t.largest_allocation, b.size() + (1u << 20))
      << "metadata count " << (meta->length - 8) / 8 << " reserved up front";
  std::cout << "[corruption] metadata count raised to " << (meta->length - 8) / 8
            << " in a " << b.size() << "-byte file: largest allocation "
            << t.largest_allocation << " bytes\n";
}

class Corruption : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (std::string(GetParam()) == "stories260K.tqm") {
      if (!Exists(Stories260KPath())) {
        GTEST_SKIP() << Stories260KPath() << " is absent (../shared not provided)";
      }
      static const std::string* stories = new std::string(Stories260K());
      file_ = *stories;
    } else {
      static const std::string* generated = new std::string(GeneratedModel());
      file_ = *generated;
    }
    name_ = GetParam();
    ASSERT_FALSE(file_.empty());
    auto r = tqm::Reader::FromBuffer(Bytes(file_), name_);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->Verify().ok());
    std::cout << "[corruption] " << name_ << ": " << file_.size() << " bytes, "
              << (*r)->tensors().size() << " tensors\n";
  }
  std::string file_, name_;
};

TEST_P(Corruption, EverySingleByteFlipIsRejected) { FlipEveryByte(file_, name_); }
TEST_P(Corruption, EveryTruncationIsRejected) { TruncateEverywhere(file_, name_); }
TEST_P(Corruption, IndexFlipsWithRepairedChecksumsNeverCrash) {
  FlipIndexWithRepairedChecksums(file_, name_);
}
TEST_P(Corruption, SampleThroughOpenAndLoader) { SampleThroughFilesAndLoader(file_, name_); }

INSTANTIATE_TEST_SUITE_P(Files, Corruption,
                         ::testing::Values("stories260K.tqm", "generated.tqm"),
                         [](const auto& info) {
                           return std::string(info.param) == "stories260K.tqm" ? "Stories260K"
                                                                               : "Generated";
                         });

}  // namespace
