// Tests of the importers (llama2.c, safetensors), OpenModel sniffing and the
// safetensors writer: real and synthetic checkpoints, round trips over a
// table of dtypes, every truncated prefix, and a named catalogue of corrupt
// files with the error each must produce.

#include "tqm/import.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "interop/import_internal.h"
#include "test_util.h"
#include "tqm/export.h"
#include "tqm/metadata.h"
#include "tqm/quantize.h"
#include "tqm/reader.h"
#include "tqm/safetensors.h"
#include "tqm/source.h"
#include "tqm/writer.h"

namespace tqm {
namespace {

using ::testing::HasSubstr;

// ---- helpers ----

class TempDir {
 public:
  TempDir() {
    const ::testing::TestInfo* info =
        ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = absl::StrFormat("%s/tqm_import_test_%d_%s_%s", ::testing::TempDir(), getpid(),
                            info->test_suite_name(), info->name());
    mkdir(path_.c_str(), 0700);
  }
  ~TempDir() {
    if (DIR* d = opendir(path_.c_str())) {
      while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") unlink((path_ + "/" + n).c_str());
      }
      closedir(d);
    }
    rmdir(path_.c_str());
  }
  std::string File(const std::string& name) const { return path_ + "/" + name; }
  // Names of the entries in the directory.
  std::vector<std::string> List() const {
    std::vector<std::string> out;
    if (DIR* d = opendir(path_.c_str())) {
      while (dirent* e = readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") out.push_back(n);
      }
      closedir(d);
    }
    return out;
  }

 private:
  std::string path_;
};

using tqm_test::Exists;
using tqm_test::ReadFile;
using tqm_test::WriteFile;

void AppendI32(std::string* s, int32_t v) {
  for (int i = 0; i < 4; ++i)
    s->push_back(static_cast<char>(static_cast<uint32_t>(v) >> (8 * i)));
}
void AppendF32(std::string* s, float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  AppendI32(s, static_cast<int32_t>(b));
}
void AppendU64(std::string* s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s->push_back(static_cast<char>(v >> (8 * i)));
}
float F32At(const std::string& bytes, uint64_t offset) {
  uint32_t b =
      LoadLE32(reinterpret_cast<const uint8_t*>(bytes.data()) + offset);
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t FloatBits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

const MetaValue* Meta(const TensorSource& src, const std::string& key) {
  return FindMeta(src.metadata(), key);
}
int64_t MetaInt(const TensorSource& src, const std::string& key) {
  const MetaValue* v = Meta(src, key);
  EXPECT_NE(v, nullptr) << key;
  if (v == nullptr) return -1;
  EXPECT_EQ(v->type, format::kMetaInt64) << key;
  return v->int64;
}
std::string MetaString(const TensorSource& src, const std::string& key) {
  const MetaValue* v = Meta(src, key);
  EXPECT_NE(v, nullptr) << key;
  if (v == nullptr) return "";
  EXPECT_EQ(v->type, format::kMetaString) << key;
  return v->bytes;
}

std::vector<std::string> LayerNames(int layers) {
  std::vector<std::string> names = {"model.embed_tokens.weight"};
  for (int l = 0; l < layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    for (const char* s :
         {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
          "self_attn.v_proj.weight", "self_attn.o_proj.weight",
          "post_attention_layernorm.weight", "mlp.gate_proj.weight",
          "mlp.down_proj.weight", "mlp.up_proj.weight"}) {
      names.push_back(p + s);
    }
  }
  names.push_back("model.norm.weight");
  return names;
}

// ---- llama2.c ----

struct Llama2cHeader {
  int32_t dim, hidden, layers, heads, kv_heads, vocab, seq_len;
};

// The expected tensors of a llama2.c checkpoint and their float offsets,
// computed independently of the importer from the layout in SOURCE.md.
struct ExpectedTensor {
  std::string name;
  std::vector<uint64_t> dims;
  uint64_t float_index;  // index of the first float after the header
};

std::vector<ExpectedTensor> ExpectedLlama2c(const Llama2cHeader& h) {
  const uint64_t dim = h.dim, hid = h.hidden, L = h.layers, vocab = std::abs(h.vocab);
  const uint64_t head = dim / h.heads, kv = head * h.kv_heads;
  // Stacked arrays: {per-layer dims} in file order.
  const std::vector<std::vector<uint64_t>> per_layer = {
      {dim}, {dim, dim}, {kv, dim},  {kv, dim}, {dim, dim},
      {dim}, {hid, dim}, {dim, hid}, {hid, dim}};
  auto numel = [](const std::vector<uint64_t>& d) {
    uint64_t n = 1;
    for (uint64_t x : d) n *= x;
    return n;
  };
  std::vector<uint64_t> array_start(per_layer.size());
  uint64_t pos = vocab * dim;
  for (size_t a = 0; a < per_layer.size(); ++a) {
    array_start[a] = pos;
    pos += L * numel(per_layer[a]);
  }
  const std::vector<std::string> names = LayerNames(h.layers);
  std::vector<ExpectedTensor> out;
  out.push_back({names[0], {vocab, dim}, 0});
  for (uint64_t l = 0; l < L; ++l) {
    for (size_t a = 0; a < per_layer.size(); ++a) {
      out.push_back(
          {names[1 + l * 9 + a], per_layer[a], array_start[a] + l * numel(per_layer[a])});
    }
  }
  out.push_back({"model.norm.weight", {dim}, pos});
  pos += dim + 2 * (h.seq_len * head / 2);
  if (h.vocab < 0) out.push_back({"lm_head.weight", {vocab, dim}, pos});
  return out;
}

uint64_t Llama2cFloats(const Llama2cHeader& h) {
  const uint64_t dim = h.dim, hid = h.hidden, L = h.layers, vocab = std::abs(h.vocab);
  const uint64_t head = dim / h.heads, kv = head * h.kv_heads;
  uint64_t n = vocab * dim +
               L * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hid * dim) + dim +
               2 * (h.seq_len * head / 2);
  if (h.vocab < 0) n += vocab * dim;
  return n;
}

// A synthetic checkpoint whose float i (after the header) has value i + 0.5.
std::string MakeLlama2c(const Llama2cHeader& h) {
  std::string s;
  for (int32_t v : {h.dim, h.hidden, h.layers, h.heads, h.kv_heads, h.vocab, h.seq_len}) {
    AppendI32(&s, v);
  }
  const uint64_t n = Llama2cFloats(h);
  for (uint64_t i = 0; i < n; ++i) AppendF32(&s, static_cast<float>(i) + 0.5f);
  return s;
}

std::string StoriesPath() {
  return std::string(TQM_SHARED_DIR) + "/models/stories260K/stories260K.bin";
}

TEST(Llama2c, Stories260K) {
  const std::string path = StoriesPath();
  if (!Exists(path))
    GTEST_SKIP() << "stories260K not found at " << path << " (see ../shared)";
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenLlama2c(path);
  ASSERT_TRUE(src.ok()) << src.status();
  const TensorSource& s = **src;

  const Llama2cHeader h = {64, 172, 5, 8, 4, 512, 512};
  const std::vector<ExpectedTensor> expected = ExpectedLlama2c(h);
  ASSERT_EQ(expected.size(), 47u);
  ASSERT_EQ(s.tensors().size(), expected.size());
  const std::string file = ReadFile(path);
  ASSERT_EQ(file.size(), 28 + 4 * Llama2cFloats(h));

  std::vector<float> values;
  for (size_t i = 0; i < expected.size(); ++i) {
    const SourceTensor& t = s.tensors()[i];
    const ExpectedTensor& e = expected[i];
    EXPECT_EQ(t.name, e.name);
    EXPECT_EQ(t.dims, e.dims) << t.name;
    EXPECT_EQ(t.dtype, format::kDTypeF32);
    ASSERT_TRUE((*src)->Read(i, &values).ok()) << t.name;
    uint64_t n = 1;
    for (uint64_t d : e.dims) n *= d;
    ASSERT_EQ(values.size(), n) << t.name;
    const uint64_t base = 28 + 4 * e.float_index;
    // Spot checks against a direct read of the file, then the whole tensor.
    EXPECT_EQ(FloatBits(values.front()), FloatBits(F32At(file, base))) << t.name;
    EXPECT_EQ(FloatBits(values.back()), FloatBits(F32At(file, base + 4 * (n - 1))))
        << t.name;
    EXPECT_EQ(std::memcmp(values.data(), file.data() + base, 4 * n), 0) << t.name;
  }
  EXPECT_EQ(s.tensors()[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(s.tensors()[2].dims, (std::vector<uint64_t>{64, 64}));
  EXPECT_EQ(s.tensors()[3].dims, (std::vector<uint64_t>{32, 64}));
  EXPECT_EQ(s.tensors()[7].dims, (std::vector<uint64_t>{172, 64}));  // gate
  EXPECT_EQ(s.tensors()[8].dims, (std::vector<uint64_t>{64, 172}));  // down
  EXPECT_EQ(s.tensors()[45].name, "model.layers.4.mlp.up_proj.weight");
  EXPECT_EQ(s.tensors()[46].name, "model.norm.weight");
  // RMSNorm weights of a trained model are O(1) and positive-ish; a misaligned
  // read would produce garbage here.
  ASSERT_TRUE((*src)->Read(46, &values).ok());
  for (float v : values) EXPECT_TRUE(std::isfinite(v) && std::fabs(v) < 100) << v;

  EXPECT_EQ(MetaString(s, meta_keys::kArchitecture), "llama");
  EXPECT_EQ(MetaInt(s, meta_keys::kDim), 64);
  EXPECT_EQ(MetaInt(s, meta_keys::kHiddenDim), 172);
  EXPECT_EQ(MetaInt(s, meta_keys::kLayers), 5);
  EXPECT_EQ(MetaInt(s, meta_keys::kHeads), 8);
  EXPECT_EQ(MetaInt(s, meta_keys::kKvHeads), 4);
  EXPECT_EQ(MetaInt(s, meta_keys::kVocabSize), 512);
  EXPECT_EQ(MetaInt(s, meta_keys::kSeqLen), 512);
  EXPECT_EQ(MetaInt(s, meta_keys::kTiedClassifier), 1);
  ASSERT_NE(Meta(s, meta_keys::kNormEps), nullptr);
  EXPECT_EQ(Meta(s, meta_keys::kNormEps)->type, format::kMetaFloat64);
  EXPECT_EQ(Meta(s, meta_keys::kNormEps)->float64, 1e-5);
  ASSERT_NE(Meta(s, meta_keys::kRopeTheta), nullptr);
  EXPECT_EQ(Meta(s, meta_keys::kRopeTheta)->float64, 10000.0);
  EXPECT_EQ(MetaString(s, meta_keys::kRopeLayout), "meta");
  EXPECT_EQ(MetaString(s, meta_keys::kSourceFormat), "llama2c");
  EXPECT_EQ(MetaString(s, meta_keys::kSourceFile), "stories260K.bin");

  // Out-of-range index is an error, not a crash.
  EXPECT_FALSE((*src)->Read(47, &values).ok());
}

TEST(Llama2c, SeparateClassifier) {
  TempDir dir;
  const Llama2cHeader h = {8, 12, 2, 2, 1, -10, 4};
  const std::string path = dir.File("sep.bin");
  WriteFile(path, MakeLlama2c(h));
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenLlama2c(path);
  ASSERT_TRUE(src.ok()) << src.status();
  const std::vector<ExpectedTensor> expected = ExpectedLlama2c(h);
  ASSERT_EQ((*src)->tensors().size(), 1 + 2 * 9 + 1 + 1u);
  ASSERT_EQ((*src)->tensors().size(), expected.size());
  EXPECT_EQ((*src)->tensors().back().name, "lm_head.weight");
  EXPECT_EQ((*src)->tensors().back().dims, (std::vector<uint64_t>{10, 8}));
  std::vector<float> v;
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ((*src)->tensors()[i].name, expected[i].name);
    EXPECT_EQ((*src)->tensors()[i].dims, expected[i].dims);
    ASSERT_TRUE((*src)->Read(i, &v).ok());
    for (size_t j = 0; j < v.size(); ++j) {
      ASSERT_EQ(v[j], static_cast<float>(expected[i].float_index + j) + 0.5f)
          << expected[i].name << "[" << j << "]";
    }
  }
  // The classifier is the last thing in the file, after the RoPE tables.
  EXPECT_EQ(expected.back().float_index + 80, Llama2cFloats(h));
  EXPECT_EQ(MetaInt(**src, meta_keys::kVocabSize), 10);
  EXPECT_EQ(MetaInt(**src, meta_keys::kTiedClassifier), 0);
  EXPECT_EQ(MetaInt(**src, meta_keys::kKvHeads), 1);
}

TEST(Llama2c, TiedSyntheticHasNoClassifier) {
  TempDir dir;
  const Llama2cHeader h = {8, 12, 1, 2, 2, 10, 4};
  WriteFile(dir.File("tied.bin"), MakeLlama2c(h));
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenLlama2c(dir.File("tied.bin"));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->tensors().size(), 1 + 9 + 1u);
  EXPECT_EQ((*src)->tensors().back().name, "model.norm.weight");
  EXPECT_EQ(MetaInt(**src, meta_keys::kTiedClassifier), 1);
}

struct Llama2cBadCase {
  const char* name;
  std::string bytes;
  const char* message;  // expected substring
};

TEST(Llama2c, RejectsCorruptFiles) {
  const Llama2cHeader good = {8, 12, 2, 2, 1, -10, 4};
  const std::string valid = MakeLlama2c(good);
  auto with = [&](int field, int32_t value) {
    std::string s = valid;
    for (int i = 0; i < 4; ++i)
      s[4 * field + i] = static_cast<char>(static_cast<uint32_t>(value) >> (8 * i));
    return s;
  };
  auto header_only = [](std::initializer_list<int32_t> fields) {
    std::string s;
    for (int32_t v : fields) AppendI32(&s, v);
    s.append(4096, '\0');
    return s;
  };
  std::mt19937 rng(42);
  std::string garbage(4096, '\0');
  for (char& c : garbage) c = static_cast<char>(rng());
  const Llama2cBadCase cases[] = {
      {"empty", "", "too short"},
      {"short_header", valid.substr(0, 27), "too short"},
      {"zero_dim", with(0, 0), "dim=0"},
      {"negative_dim", with(0, -8), "dim=-8"},
      {"zero_hidden", with(1, 0), "hidden_dim=0"},
      {"negative_layers", with(2, -1), "n_layers=-1"},
      {"zero_heads", with(3, 0), "n_heads=0"},
      {"zero_kv_heads", with(4, 0), "n_kv_heads=0"},
      {"zero_vocab", with(5, 0), "vocab_size=0"},
      {"int_min_vocab", with(5, INT32_MIN), "vocab_size=-2147483648"},
      {"zero_seq_len", with(6, 0), "seq_len=0"},
      {"heads_not_dividing_dim", with(3, 3), "does not divide dim"},
      {"kv_heads_above_heads", with(4, 4), "does not divide n_heads"},
      {"kv_heads_not_dividing", header_only({8, 12, 1, 4, 3, 10, 4}),
       "does not divide n_heads"},
      {"odd_head_size", header_only({6, 12, 1, 2, 1, 10, 4}), "is odd"},
      {"huge_dims",
       header_only({INT32_MAX - 1, INT32_MAX, INT32_MAX, 1, 1, INT32_MAX, INT32_MAX}),
       "overflows"},
      {"large_but_no_overflow", header_only({1 << 20, 1 << 20, 64, 2, 1, 32000, 4096}),
       "requires exactly"},
      {"truncated_last_float", valid.substr(0, valid.size() - 4), "truncated"},
      {"trailing_bytes", valid + std::string(4, '\0'), "trailing"},
      {"tied_header_on_untied_file", with(5, 10), "trailing"},
      {"garbage", garbage, ""},
      {"safetensors_like",
       std::string("\x10\0\0\0\0\0\0\0{}      ", 16) + std::string(16, ' '), ""},
  };
  TempDir dir;
  for (const Llama2cBadCase& c : cases) {
    const std::string path = dir.File(c.name);
    WriteFile(path, c.bytes);
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenLlama2c(path);
    ASSERT_FALSE(src.ok()) << c.name;
    EXPECT_EQ(src.status().code(), absl::StatusCode::kDataLoss)
        << c.name << ": " << src.status();
    EXPECT_THAT(std::string(src.status().message()), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(std::string(src.status().message()), HasSubstr(path)) << c.name;
  }
}

TEST(Llama2c, EveryTruncatedPrefixRejected) {
  TempDir dir;
  const std::string valid = MakeLlama2c({8, 12, 1, 2, 1, -10, 4});
  const std::string path = dir.File("prefix.bin");
  for (size_t n = 0; n < valid.size(); ++n) {
    WriteFile(path, valid.substr(0, n));
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenLlama2c(path);
    ASSERT_FALSE(src.ok()) << n;
    ASSERT_EQ(src.status().code(), absl::StatusCode::kDataLoss) << n;
    absl::StatusOr<std::unique_ptr<TensorSource>> any = OpenModel(path);
    ASSERT_FALSE(any.ok()) << n;
  }
}

TEST(Llama2c, MissingFile) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenLlama2c(dir.File("nope.bin"));
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), absl::StatusCode::kNotFound);
  src = OpenModel(dir.File("nope.bin"));
  EXPECT_EQ(src.status().code(), absl::StatusCode::kNotFound);
  // A directory is not a model.
  src = OpenModel(::testing::TempDir());
  EXPECT_FALSE(src.ok());
}

// ---- half-precision conversion ----

double HalfReference(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double sign = (h & 0x8000) ? -1 : 1;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(m, -24);
  return sign * std::ldexp(1024 + m, e - 25);
}

double BFloat16Reference(uint16_t b) {
  const int e = (b >> 7) & 255, m = b & 127;
  const double sign = (b & 0x8000) ? -1 : 1;
  if (e == 255) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(m, -133);
  return sign * std::ldexp(128 + m, e - 134);
}

void ExpectSameValue(float got, double want, uint32_t i) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << i;
  } else {
    EXPECT_EQ(static_cast<double>(got), want) << i;
    EXPECT_EQ(std::signbit(got), std::signbit(want)) << i;
  }
}

TEST(HalfPrecision, AllF16Values) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const float f = internal::HalfToFloat(static_cast<uint16_t>(i));
    ExpectSameValue(f, HalfReference(static_cast<uint16_t>(i)), i);
    if (std::isnan(f)) {
      // Payload and quiet bit preserved.
      EXPECT_EQ(FloatBits(f), ((i & 0x8000u) << 16) | 0x7F800000u | ((i & 0x3FFu) << 13))
          << i;
    }
  }
  EXPECT_EQ(internal::HalfToFloat(0x3C00), 1.0f);
  EXPECT_EQ(internal::HalfToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(internal::HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(internal::HalfToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(internal::HalfToFloat(0x0400), std::ldexp(1.0f, -14));
}

TEST(HalfPrecision, AllBFloat16Values) {
  for (uint32_t i = 0; i < 65536; ++i) {
    ExpectSameValue(internal::BFloat16ToFloat(static_cast<uint16_t>(i)),
                    BFloat16Reference(static_cast<uint16_t>(i)), i);
  }
  EXPECT_EQ(internal::BFloat16ToFloat(0x3F80), 1.0f);
}

// ---- safetensors writer + reader ----

struct TensorData {
  SafetensorsEntry entry;
  std::string bytes;
  std::vector<float> expected;  // as float32
};

std::string ToBytes(const std::vector<uint16_t>& v) {
  std::string s;
  for (uint16_t x : v) {
    s.push_back(static_cast<char>(x & 0xFF));
    s.push_back(static_cast<char>(x >> 8));
  }
  return s;
}

TensorData F32Tensor(const std::string& name, std::vector<uint64_t> shape,
                     std::vector<float> values) {
  TensorData t{{name, "F32", std::move(shape)}, "", values};
  for (float f : values) AppendF32(&t.bytes, f);
  return t;
}

// All 65536 bit patterns of a 16-bit float type.
TensorData AllHalfPatterns(const std::string& name, const std::string& dtype,
                           std::vector<uint64_t> shape) {
  std::vector<uint16_t> bits(65536);
  std::vector<float> values(65536);
  for (uint32_t i = 0; i < 65536; ++i) {
    bits[i] = static_cast<uint16_t>(i);
    values[i] =
        static_cast<float>(dtype == "F16" ? HalfReference(i) : BFloat16Reference(i));
  }
  return TensorData{{name, dtype, std::move(shape)}, ToBytes(bits), values};
}

void WriteSafetensors(const std::string& path, const std::vector<TensorData>& tensors,
                      std::vector<std::pair<std::string, std::string>> metadata) {
  std::vector<SafetensorsEntry> entries;
  for (const TensorData& t : tensors) entries.push_back(t.entry);
  absl::StatusOr<std::unique_ptr<SafetensorsWriter>> w =
      SafetensorsWriter::Create(path, entries, std::move(metadata));
  ASSERT_TRUE(w.ok()) << w.status();
  for (const TensorData& t : tensors) {
    ASSERT_FALSE(Exists(path));  // appears only on Finish
    absl::Status s = (*w)->Write(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(t.bytes.data()), t.bytes.size()));
    ASSERT_TRUE(s.ok()) << s;
  }
  absl::Status s = (*w)->Finish();
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(Exists(path));
}

void ExpectValues(const std::vector<float>& got, const std::vector<float>& want,
                  const std::string& name) {
  ASSERT_EQ(got.size(), want.size()) << name;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(got[i])) << name << "[" << i << "]";
    } else {
      ASSERT_EQ(FloatBits(got[i]), FloatBits(want[i])) << name << "[" << i << "]";
    }
  }
}

struct RoundTripConfig {
  const char* name;
  std::vector<TensorData> tensors;
  std::vector<std::pair<std::string, std::string>> metadata;
};

TEST(Safetensors, RoundTrip) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const float denorm = std::numeric_limits<float>::denorm_min();
  std::vector<RoundTripConfig> configs;
  configs.push_back(
      {"f32", {F32Tensor("w", {2, 3}, {1, -2, 0.5f, -0.0f, 3e38f, denorm})}, {}});
  configs.push_back(
      {"f32_specials", {F32Tensor("s", {4}, {nan, inf, -inf, 1e-40f})}, {}});
  configs.push_back({"f16_all", {AllHalfPatterns("h", "F16", {256, 256})}, {}});
  configs.push_back({"bf16_all", {AllHalfPatterns("b", "BF16", {65536})}, {}});
  configs.push_back(
      {"mixed_with_metadata",
       {F32Tensor("a", {2, 2}, {1, 2, 3, 4}), AllHalfPatterns("b16", "BF16", {2, 32768}),
        F32Tensor("empty", {0, 4}, {}), F32Tensor("scalar", {}, {42}),
        AllHalfPatterns("h16", "F16", {16, 16, 256})},
       {{"format", "pt"}, {"note", "quote\" backslash\\ caf\xC3\xA9\n"}}});
  configs.push_back({"no_tensors", {}, {{"k", "v"}}});
  configs.push_back({"empty_file", {}, {}});
  configs.push_back({"odd_names",
                     {F32Tensor("name with \"quotes\" and \\ and \xC3\xA9", {1}, {7}),
                      F32Tensor("x", {1}, {8})},
                     {}});

  TempDir dir;
  for (const RoundTripConfig& c : configs) {
    SCOPED_TRACE(c.name);
    const std::string path = dir.File(std::string(c.name) + ".safetensors");
    WriteSafetensors(path, c.tensors, c.metadata);

    // Layout: length multiple of 8, header padded with spaces, data contiguous.
    const std::string file = ReadFile(path);
    ASSERT_GE(file.size(), 8u);
    const uint64_t n = LoadLE64(reinterpret_cast<const uint8_t*>(file.data()));
    EXPECT_EQ(n % 8, 0u);
    ASSERT_LE(n, file.size() - 8);
    EXPECT_EQ(file[8], '{');
    const std::string header = file.substr(8, n);
    EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
    EXPECT_EQ(header.find("__metadata__") != std::string::npos, !c.metadata.empty());
    uint64_t data = 0;
    for (const TensorData& t : c.tensors) data += t.bytes.size();
    EXPECT_EQ(file.size(), 8 + n + data);

    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
    ASSERT_TRUE(src.ok()) << src.status();
    ASSERT_EQ((*src)->tensors().size(), c.tensors.size());
    std::vector<float> values;
    for (size_t i = 0; i < c.tensors.size(); ++i) {
      const SourceTensor& t = (*src)->tensors()[i];
      const TensorData& want = c.tensors[i];
      EXPECT_EQ(t.name, want.entry.name);
      EXPECT_EQ(t.dims, want.entry.shape);
      EXPECT_EQ(t.dtype, want.entry.dtype == "F32"   ? format::kDTypeF32
                         : want.entry.dtype == "F16" ? format::kDTypeF16
                                                     : format::kDTypeBF16);
      std::string raw;
      ASSERT_TRUE((*src)->ReadRaw(i, &raw).ok());
      EXPECT_TRUE(raw == want.bytes) << t.name;
      if (t.dims.empty() || want.expected.empty()) {
        // 0-d and empty tensors are kept verbatim, never quantized.
        EXPECT_EQ(t.kind, TensorKind::kRaw) << t.name;
        continue;
      }
      EXPECT_EQ(t.kind, TensorKind::kFloat) << t.name;
      ASSERT_TRUE((*src)->Read(i, &values).ok());
      ExpectValues(values, want.expected, t.name);
    }
    EXPECT_EQ(MetaString(**src, meta_keys::kSourceFormat), "safetensors");
    EXPECT_EQ(MetaString(**src, meta_keys::kSourceFile),
              std::string(c.name) + ".safetensors");
    EXPECT_EQ(Meta(**src, meta_keys::kArchitecture), nullptr);
    for (const MetaEntry& e : (*src)->metadata()) {
      EXPECT_NE(e.key.rfind("llama.", 0), 0u) << e.key;  // no config, no llama.* keys
    }
    for (const auto& [k, v] : c.metadata)
      EXPECT_EQ(MetaString(**src, "source.meta." + k), v);

    // OpenModel recognises it.
    absl::StatusOr<std::unique_ptr<TensorSource>> any = OpenModel(path);
    ASSERT_TRUE(any.ok()) << any.status();
    EXPECT_EQ(MetaString(**any, meta_keys::kSourceFormat), "safetensors");
  }
}

TEST(Safetensors, EmitsTensorsInDataOffsetOrder) {
  // Header order differs from data order; the reader sorts by offset.
  std::string header = R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                       R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string file;
  AppendU64(&file, header.size());
  file += header;
  AppendF32(&file, 1.0f);
  AppendF32(&file, 2.0f);
  TempDir dir;
  WriteFile(dir.File("order.safetensors"), file);
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      OpenSafetensors(dir.File("order.safetensors"));
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ((*src)->tensors().size(), 2u);
  EXPECT_EQ((*src)->tensors()[0].name, "a");
  EXPECT_EQ((*src)->tensors()[1].name, "b");
  std::vector<float> v;
  ASSERT_TRUE((*src)->Read(1, &v).ok());
  EXPECT_EQ(v, std::vector<float>{2.0f});
}

TEST(Safetensors, EveryTruncatedPrefixRejected) {
  TempDir dir;
  const std::string path = dir.File("full.safetensors");
  WriteSafetensors(path,
                   {F32Tensor("a", {3}, {1, 2, 3}), AllHalfPatterns("b", "F16", {65536})},
                   {{"format", "pt"}});
  const std::string full = ReadFile(path);
  const std::string cut = dir.File("cut.safetensors");
  // Every prefix through the header and a little data; then a sample of the rest.
  for (size_t n = 0; n < full.size(); n += (n < 512 ? 1 : 997)) {
    WriteFile(cut, full.substr(0, n));
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(cut);
    ASSERT_FALSE(src.ok()) << n;
    ASSERT_EQ(src.status().code(), absl::StatusCode::kDataLoss)
        << n << ": " << src.status();
    ASSERT_FALSE(OpenModel(cut).ok()) << n;
  }
}

struct SafetensorsBadCase {
  const char* name;
  std::string file;
  absl::StatusCode code;
  const char* message;
};

// A file with the given header (as is) and `data` bytes of zeros.
std::string RawSafetensors(const std::string& header, size_t data) {
  std::string s;
  AppendU64(&s, header.size());
  return s + header + std::string(data, '\0');
}

std::string OneTensor(const std::string& fields) { return R"({"t":{)" + fields + "}}"; }

TEST(Safetensors, RejectsCorruptFiles) {
  const auto kLoss = absl::StatusCode::kDataLoss;
  std::string huge_len;
  AppendU64(&huge_len, uint64_t{1} << 63);
  huge_len += "{}";
  std::string over_cap;
  AppendU64(&over_cap, 100000001);
  over_cap += "{}";
  std::string past_eof;
  AppendU64(&past_eof, 1000);
  past_eof += "{}" + std::string(10, ' ');
  // A header of values two bytes each (an array bomb): bounded before it
  // costs ~50x its size in parsed values.
  std::string bomb = R"({"t":{"dtype":"F32","shape":[)";
  for (int k = 0; k < 100000; ++k) bomb += "0,";
  bomb += R"(0],"data_offsets":[0,0]}})";
  const SafetensorsBadCase cases[] = {
      {"value_bomb", RawSafetensors(bomb, 0), absl::StatusCode::kResourceExhausted,
       "values at byte"},
      {"too_short", std::string(4, '\0'), kLoss, "too short"},
      {"header_len_past_eof", past_eof, kLoss, "exceeds the 12 bytes after it"},
      {"header_len_huge", huge_len, absl::StatusCode::kResourceExhausted,
       "exceeds the limit"},
      {"header_len_over_cap", over_cap, absl::StatusCode::kResourceExhausted, "limit"},
      {"empty_header", RawSafetensors("", 0), kLoss, "does not start with '{'"},
      {"not_json", RawSafetensors("{abc}", 0), kLoss, "at byte 1"},
      {"not_object", RawSafetensors("[1,2]", 0), kLoss, "does not start with '{'"},
      {"leading_space", RawSafetensors(" {}", 0), kLoss, "does not start with '{'"},
      {"trailing_garbage", RawSafetensors("{} x", 0), kLoss, "unexpected data"},
      {"truncated_json", RawSafetensors(R"({"t":{"dtype":"F32")", 0), kLoss, "JSON"},
      {"tensor_not_object", RawSafetensors(R"({"t":1})", 0), kLoss, "expected an object"},
      {"missing_dtype",
       RawSafetensors(OneTensor(R"("shape":[1],"data_offsets":[0,4])"), 4), kLoss,
       "missing field \"dtype\""},
      {"missing_shape",
       RawSafetensors(OneTensor(R"("dtype":"F32","data_offsets":[0,4])"), 4), kLoss,
       "missing field \"shape\""},
      {"missing_offsets", RawSafetensors(OneTensor(R"("dtype":"F32","shape":[1])"), 4),
       kLoss, "missing field \"data_offsets\""},
      {"extra_field",
       RawSafetensors(
           OneTensor(R"("dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1)"), 4),
       kLoss, "unknown field \"x\""},
      {"unknown_dtype",
       RawSafetensors(OneTensor(R"("dtype":"Q4","shape":[1],"data_offsets":[0,4])"), 4),
       absl::StatusCode::kUnimplemented, "tensor \"t\": dtype \"Q4\""},
      {"unsupported_dtype",
       RawSafetensors(OneTensor(R"("dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1])"),
                      1),
       absl::StatusCode::kUnimplemented,
       "tensor \"t\": dtype \"F8_E4M3\" is not supported"},
      {"i64_size_mismatch",
       RawSafetensors(OneTensor(R"("dtype":"I64","shape":[1],"data_offsets":[0,4])"), 4),
       kLoss, "hold 4 bytes but dtype I64 and shape give 8"},
      {"bool_size_mismatch",
       RawSafetensors(OneTensor(R"("dtype":"BOOL","shape":[3],"data_offsets":[0,4])"), 4),
       kLoss, "hold 4 bytes but dtype BOOL and shape give 3"},
      {"dtype_not_string",
       RawSafetensors(OneTensor(R"("dtype":4,"shape":[1],"data_offsets":[0,4])"), 4),
       kLoss, "dtype is not a string"},
      {"shape_not_array",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":1,"data_offsets":[0,4])"), 4),
       kLoss, "shape is not an array"},
      {"negative_dim",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[-1],"data_offsets":[0,4])"), 4),
       kLoss, "shape[0] is not a non-negative integer"},
      {"fractional_dim",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[1,1.5],"data_offsets":[0,4])"),
                      4),
       kLoss, "shape[1]"},
      {"huge_dim",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[1e30],"data_offsets":[0,4])"),
                      4),
       kLoss, "shape[0]"},
      {"shape_overflow",
       RawSafetensors(
           OneTensor(R"("dtype":"F32","shape":[4294967296,4294967296,4294967296],)"
                     R"("data_offsets":[0,4])"),
           4),
       kLoss, "element count overflows"},
      {"byte_size_overflow",
       RawSafetensors(
           OneTensor(
               R"("dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4])"),
           4),
       kLoss, "byte size overflows"},
      {"rank_too_large",
       RawSafetensors(
           OneTensor(R"("dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4])"),
           4),
       absl::StatusCode::kResourceExhausted, "rank 9"},
      {"wrong_size",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":[0,4])"), 4),
       kLoss, "hold 4 bytes but dtype F32 and shape give 8"},
      {"offsets_past_end",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[2],"data_offsets":[0,8])"), 4),
       kLoss, "past the end of the data area"},
      {"begin_after_end",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[1],"data_offsets":[4,0])"), 4),
       kLoss, "end before they begin"},
      {"offsets_not_pair",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[1],"data_offsets":[4])"), 4),
       kLoss, "data_offsets is not an array of two integers"},
      {"negative_offset",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[1],"data_offsets":[-4,0])"), 4),
       kLoss, "non-negative"},
      {"overlapping_offsets",
       RawSafetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      12),
       kLoss, "overlap"},
      {"same_offsets",
       RawSafetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                      8),
       kLoss, "overlap"},
      {"empty_tensor_inside_another",
       RawSafetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                      8),
       kLoss, "overlap"},
      {"gap",
       RawSafetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                      12),
       kLoss, "gap of 4"},
      {"not_starting_at_zero",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[1],"data_offsets":[4,8])"), 8),
       kLoss, "gap"},
      {"trailing_data",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[1],"data_offsets":[0,4])"), 8),
       kLoss, "cover 4 bytes of the 8-byte data area"},
      {"data_without_tensors", RawSafetensors("{}", 4), kLoss, "cover 0 bytes"},
      {"duplicate_tensor",
       RawSafetensors(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      8),
       kLoss, "duplicate object key"},
      {"empty_name",
       RawSafetensors(R"({"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4),
       kLoss, "name length 0"},
      {"metadata_not_object", RawSafetensors(R"({"__metadata__":1})", 0), kLoss,
       "__metadata__ is not an object"},
      {"metadata_value_not_string", RawSafetensors(R"({"__metadata__":{"k":1}})", 0),
       kLoss, "__metadata__ value of \"k\" is integer"},
      {"invalid_utf8_name",
       RawSafetensors(
           "{\"\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
       kLoss, "invalid UTF-8"},
      {"deep_nesting",
       RawSafetensors(OneTensor(R"("dtype":"F32","shape":[[[[[[[[[[1]]]]]]]]]],)"
                                R"("data_offsets":[0,4])"),
                      4),
       absl::StatusCode::kResourceExhausted, "nesting"},
      {"bad_metadata_int",
       RawSafetensors(R"({"__metadata__":{"llama.n_heads":"eight"}})", 0), kLoss,
       "llama.n_heads=\"eight\" is not an integer"},
      {"bad_rope_layout",
       RawSafetensors(R"({"__metadata__":{"llama.rope_layout":"sideways"}})", 0), kLoss,
       "neither \"meta\" nor \"hf\""},
  };
  TempDir dir;
  for (const SafetensorsBadCase& c : cases) {
    const std::string path = dir.File(std::string(c.name) + ".safetensors");
    WriteFile(path, c.file);
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
    ASSERT_FALSE(src.ok()) << c.name;
    EXPECT_EQ(src.status().code(), c.code) << c.name << ": " << src.status();
    EXPECT_THAT(std::string(src.status().message()), HasSubstr(c.message))
        << c.name << ": " << src.status();
    EXPECT_THAT(std::string(src.status().message()), HasSubstr(path)) << c.name;
  }
}

TEST(Safetensors, AcceptsZeroSizedTensorsAndSpacePadding) {
  // Zero-element tensors share offsets with their neighbours' boundaries.
  TempDir dir;
  const std::string header =
      R"({"e":{"dtype":"F16","shape":[0],"data_offsets":[0,0]},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("z":{"dtype":"BF16","shape":[3,0],"data_offsets":[4,4]}}   )";
  std::string file;
  AppendU64(&file, header.size());
  file += header;
  AppendF32(&file, 5.0f);
  WriteFile(dir.File("z.safetensors"), file);
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      OpenSafetensors(dir.File("z.safetensors"));
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ((*src)->tensors().size(), 3u);
  EXPECT_EQ((*src)->tensors()[0].name, "e");
  EXPECT_EQ((*src)->tensors()[1].name, "a");
  EXPECT_EQ((*src)->tensors()[2].name, "z");
  // Empty tensors are kept verbatim: no bytes, their shape preserved.
  EXPECT_EQ((*src)->tensors()[0].kind, TensorKind::kRaw);
  EXPECT_EQ((*src)->tensors()[2].kind, TensorKind::kRaw);
  EXPECT_EQ((*src)->tensors()[2].dims, (std::vector<uint64_t>{3, 0}));
  std::string raw = "x";
  ASSERT_TRUE((*src)->ReadRaw(2, &raw).ok());
  EXPECT_TRUE(raw.empty());
  std::vector<float> v = {1, 2};
  EXPECT_EQ((*src)->Read(2, &v).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*src)->Read(1, &v).ok());
  EXPECT_EQ(v, std::vector<float>{5.0f});
}

// A tiny Hugging Face Llama checkpoint: dim 8, hidden 12, vocab 10, 2 layers.
std::vector<TensorData> TinyHfLlama(bool with_lm_head, int layers = 2) {
  std::vector<TensorData> t;
  auto add = [&](const std::string& name, std::vector<uint64_t> shape) {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    t.push_back(F32Tensor(name, std::move(shape), std::vector<float>(n, 0.25f)));
  };
  add("model.embed_tokens.weight", {10, 8});
  for (int l = 0; l < layers; ++l) {
    if (layers == 3 && l == 1) continue;  // a gap in the layer numbers
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {8});
    add(p + "self_attn.q_proj.weight", {8, 8});
    add(p + "self_attn.k_proj.weight", {4, 8});
    add(p + "self_attn.v_proj.weight", {4, 8});
    add(p + "self_attn.o_proj.weight", {8, 8});
    add(p + "post_attention_layernorm.weight", {8});
    add(p + "mlp.gate_proj.weight", {12, 8});
    add(p + "mlp.down_proj.weight", {8, 12});
    add(p + "mlp.up_proj.weight", {12, 8});
  }
  add("model.norm.weight", {8});
  if (with_lm_head) add("lm_head.weight", {10, 8});
  return t;
}

TEST(Safetensors, DerivesHfLlamaHyperparameters) {
  TempDir dir;
  const std::string path = dir.File("hf.safetensors");
  WriteSafetensors(path, TinyHfLlama(false), {{"format", "pt"}});
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  const TensorSource& s = **src;
  EXPECT_EQ(MetaString(s, meta_keys::kArchitecture), "llama");
  EXPECT_EQ(MetaString(s, meta_keys::kRopeLayout), "hf");
  EXPECT_EQ(MetaInt(s, meta_keys::kDim), 8);
  EXPECT_EQ(MetaInt(s, meta_keys::kHiddenDim), 12);
  EXPECT_EQ(MetaInt(s, meta_keys::kLayers), 2);
  EXPECT_EQ(MetaInt(s, meta_keys::kVocabSize), 10);
  EXPECT_EQ(MetaInt(s, meta_keys::kTiedClassifier), 1);
  EXPECT_EQ(Meta(s, meta_keys::kHeads), nullptr);
  EXPECT_EQ(Meta(s, meta_keys::kKvHeads), nullptr);
  EXPECT_EQ(Meta(s, meta_keys::kSeqLen), nullptr);
  EXPECT_EQ(MetaString(s, "source.meta.format"), "pt");
  EXPECT_EQ(s.tensors().size(), 1 + 2 * 9 + 1u);
  EXPECT_EQ(LayerFromName(s.tensors()[10].name), 1);

  WriteSafetensors(dir.File("hf_head.safetensors"), TinyHfLlama(true), {});
  src = OpenSafetensors(dir.File("hf_head.safetensors"));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(MetaInt(**src, meta_keys::kTiedClassifier), 0);
  EXPECT_EQ(MetaInt(**src, meta_keys::kVocabSize), 10);

  // Layers 0 and 2 only: the layer count is ambiguous and left out.
  WriteSafetensors(dir.File("hf_gap.safetensors"), TinyHfLlama(false, 3), {});
  src = OpenSafetensors(dir.File("hf_gap.safetensors"));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(Meta(**src, meta_keys::kLayers), nullptr);
  EXPECT_EQ(MetaInt(**src, meta_keys::kDim), 8);
}

TEST(Safetensors, MetadataSuppliesWhatShapesCannot) {
  TempDir dir;
  const std::string path = dir.File("hf_meta.safetensors");
  WriteSafetensors(path, TinyHfLlama(false),
                   {{"llama.n_heads", "2"},
                    {"llama.n_kv_heads", "1"},
                    {"llama.dim", "8"},
                    {"llama.norm_eps", "1e-06"},
                    {"llama.rope_layout", "meta"}});
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(MetaInt(**src, meta_keys::kHeads), 2);
  EXPECT_EQ(MetaInt(**src, meta_keys::kKvHeads), 1);
  EXPECT_EQ(MetaInt(**src, meta_keys::kDim), 8);
  ASSERT_NE(Meta(**src, meta_keys::kNormEps), nullptr);
  EXPECT_EQ(Meta(**src, meta_keys::kNormEps)->float64, 1e-6);
  EXPECT_EQ(MetaString(**src, meta_keys::kRopeLayout), "meta");
  EXPECT_EQ(MetaString(**src, "source.meta.llama.n_heads"), "2");

  // A key too long for .tqm metadata once prefixed is left out, not fatal.
  const std::string long_key(300, 'k');
  WriteSafetensors(dir.File("long.safetensors"), TinyHfLlama(false),
                   {{long_key, "v"}, {"ok", "1"}});
  src = OpenSafetensors(dir.File("long.safetensors"));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(Meta(**src, "source.meta." + long_key), nullptr);
  EXPECT_EQ(MetaString(**src, "source.meta.ok"), "1");
  for (const MetaEntry& e : (*src)->metadata())
    EXPECT_LE(e.key.size(), format::kMaxKeyLength);

  // Stated hyperparameters that contradict the shapes are rejected.
  WriteSafetensors(dir.File("bad.safetensors"), TinyHfLlama(false),
                   {{"llama.dim", "16"}});
  src = OpenSafetensors(dir.File("bad.safetensors"));
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(src.status().message()), HasSubstr("llama.dim=16 contradicts"));
}

// ---- every tensor kept: raw dtypes, 0-d, empty, u8 exports ----

// A tensor given by its raw bytes.
TensorData RawTensor(const std::string& name, const std::string& dtype,
                     std::vector<uint64_t> shape, std::string bytes) {
  return TensorData{{name, dtype, std::move(shape)}, std::move(bytes), {}};
}

// `n` bytes counting up from `seed` (any pattern that differs per tensor).
std::string Pattern(size_t n, uint8_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + 7 * i);
  return s;
}

TEST(Safetensors, KeepsEveryDTypeVerbatim) {
  TempDir dir;
  const std::string path = dir.File("all.safetensors");
  struct Want {
    const char* dtype;
    format::SourceDType tqm;
    size_t size;
    std::vector<uint64_t> shape;
  };
  const std::vector<Want> raw = {
      {"F64", format::kDTypeF64, 8, {2, 3}}, {"I8", format::kDTypeI8, 1, {5}},
      {"I16", format::kDTypeI16, 2, {3}},    {"I32", format::kDTypeI32, 4, {2, 2}},
      {"I64", format::kDTypeI64, 8, {1, 2}}, {"U8", format::kDTypeU8, 1, {7}},
      {"U16", format::kDTypeU16, 2, {3}},    {"U32", format::kDTypeU32, 4, {1}},
      {"U64", format::kDTypeU64, 8, {2}},    {"F32", format::kDTypeF32, 4, {}},
      {"I64", format::kDTypeI64, 8, {}},     {"F16", format::kDTypeF16, 2, {4, 0}},
      {"BF16", format::kDTypeBF16, 2, {0}},  {"I32", format::kDTypeI32, 4, {0, 3}},
  };
  std::vector<TensorData> tensors;
  std::vector<std::string> bytes;
  for (size_t i = 0; i < raw.size(); ++i) {
    uint64_t n = raw[i].size;
    for (uint64_t d : raw[i].shape) n *= d;
    bytes.push_back(Pattern(n, static_cast<uint8_t>(i)));
    tensors.push_back(
        RawTensor(absl::StrCat("raw", i), raw[i].dtype, raw[i].shape, bytes.back()));
  }
  tensors.push_back(RawTensor("flags", "BOOL", {2, 2}, std::string("\1\0\0\1", 4)));
  // Float weights stay kFloat and their bytes are served verbatim too.
  tensors.push_back(F32Tensor("w32", {2, 2}, {1.5f, -2.0f, 0.25f, 3.0f}));
  tensors.push_back(RawTensor("w16", "F16", {2}, ToBytes({0x3C00, 0xC000})));
  tensors.push_back(RawTensor("wbf", "BF16", {1, 2}, ToBytes({0x3F80, 0x4000})));
  WriteSafetensors(path, tensors, {});

  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  TensorSource& s = **src;
  ASSERT_EQ(s.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SourceTensor& t = s.tensors()[i];
    ASSERT_EQ(t.name, tensors[i].entry.name);  // file order = offset order
    EXPECT_EQ(t.dims, tensors[i].entry.shape) << t.name;
    EXPECT_EQ(DTypeName(t.dtype), tensors[i].entry.dtype) << t.name;
    std::string got;
    ASSERT_TRUE(s.ReadRaw(i, &got).ok()) << t.name;
    EXPECT_TRUE(got == tensors[i].bytes) << t.name;
    std::vector<float> f;
    if (i < raw.size() + 1) {
      EXPECT_EQ(t.kind, TensorKind::kRaw) << t.name;
      if (i < raw.size()) EXPECT_EQ(t.dtype, raw[i].tqm) << t.name;
      EXPECT_EQ(s.Read(i, &f).code(), absl::StatusCode::kInvalidArgument) << t.name;
    } else {
      EXPECT_EQ(t.kind, TensorKind::kFloat) << t.name;
      EXPECT_TRUE(s.Read(i, &f).ok()) << t.name;
    }
  }
  std::vector<float> f;
  ASSERT_TRUE(s.Read(tensors.size() - 2, &f).ok());
  EXPECT_EQ(f, (std::vector<float>{1.0f, -2.0f}));
}

TEST(Safetensors, BoolBytesMustBeZeroOrOne) {
  TempDir dir;
  const std::string path = dir.File("bool.safetensors");
  WriteSafetensors(path, {RawTensor("mask", "BOOL", {3}, std::string("\1\0\2", 3))}, {});
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  std::string raw;
  absl::Status s = (*src)->ReadRaw(0, &raw);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor mask: BOOL element 2"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("is 2, not 0 or 1"));
}

std::string F32Bytes(const std::vector<float>& v) {
  std::string s;
  for (float f : v) AppendF32(&s, f);
  return s;
}

// A U8 tensor with its .scale and .zero companions, as tqm-unpack --dtype u8
// writes them.
std::vector<TensorData> U8Triple(const std::string& name, std::vector<uint64_t> shape,
                                 const std::string& codes, std::vector<float> scale,
                                 std::vector<float> zero) {
  const uint64_t k = scale.size(), kz = zero.size();
  return {RawTensor(name, "U8", std::move(shape), codes),
          RawTensor(name + ".scale", "F32", {k}, F32Bytes(scale)),
          RawTensor(name + ".zero", "F32", {kz}, F32Bytes(zero))};
}

TEST(Safetensors, U8TriplesBecomeQuantizedTensors) {
  TempDir dir;
  const std::string path = dir.File("u8.safetensors");
  const std::string codes_t = Pattern(6, 3), codes_r = Pattern(6, 100);
  std::vector<TensorData> tensors = {F32Tensor("norm", {2}, {1, 2})};
  for (TensorData& t : U8Triple("a.weight", {2, 3}, codes_t, {0.5f}, {128}))
    tensors.push_back(std::move(t));
  for (TensorData& t : U8Triple("b.weight", {3, 2}, codes_r, {0.25f, 2, 1}, {0, -3, 255}))
    tensors.push_back(std::move(t));
  // A U8 tensor without companions stays raw.
  tensors.push_back(RawTensor("ids", "U8", {2}, "\x05\x06"));
  WriteSafetensors(path, tensors, {{"tqm.unpacked_as", "u8"}});

  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  TensorSource& s = **src;
  ASSERT_EQ(s.tensors().size(), 4u);  // .scale and .zero are not listed
  EXPECT_EQ(s.tensors()[0].name, "norm");
  EXPECT_EQ(s.tensors()[1].name, "a.weight");
  EXPECT_EQ(s.tensors()[2].name, "b.weight");
  EXPECT_EQ(s.tensors()[3].name, "ids");
  EXPECT_EQ(s.tensors()[3].kind, TensorKind::kRaw);
  struct Case {
    size_t index;
    const std::string& codes;
    format::Storage storage;
    std::vector<Affine> params;
  };
  const Case cases[] = {
      {1, codes_t, format::kStorageU8Tensor, {{0.5f, 128}}},
      {2, codes_r, format::kStorageU8Row, {{0.25f, 0}, {2, -3}, {1, 255}}},
  };
  for (const Case& c : cases) {
    const SourceTensor& t = s.tensors()[c.index];
    EXPECT_EQ(t.kind, TensorKind::kQuantized) << t.name;
    EXPECT_EQ(t.dtype, format::kDTypeF32) << t.name;
    QuantizedTensor q;
    ASSERT_TRUE(s.ReadQuantized(c.index, &q).ok()) << t.name;
    EXPECT_EQ(q.storage, c.storage) << t.name;
    EXPECT_EQ(q.bits, 8);
    EXPECT_EQ(std::string(q.codes.begin(), q.codes.end()), c.codes) << t.name;
    ASSERT_EQ(q.params.size(), c.params.size());
    std::vector<float> want(q.codes.size());
    const size_t span = want.size() / c.params.size();
    for (size_t p = 0; p < c.params.size(); ++p) {
      EXPECT_EQ(q.params[p].scale, c.params[p].scale);
      EXPECT_EQ(q.params[p].zero, c.params[p].zero);
      DequantizeAffine(absl::MakeConstSpan(q.codes.data() + p * span, span), c.params[p],
                       absl::MakeSpan(want.data() + p * span, span));
    }
    std::vector<float> got;
    ASSERT_TRUE(s.Read(c.index, &got).ok());
    ExpectValues(got, want, t.name);
    std::string raw;
    EXPECT_EQ(s.ReadRaw(c.index, &raw).code(), absl::StatusCode::kInvalidArgument);
  }
  QuantizedTensor q;
  EXPECT_FALSE(s.ReadQuantized(0, &q).ok());  // a float tensor has no codes
}

TEST(Safetensors, U8ExportRepacksWithoutRequantizing) {
  // pack -> tqm-unpack --dtype u8 -> import: the same codes and parameters.
  TempDir dir;
  for (Granularity g : {Granularity::kTensor, Granularity::kRow}) {
    // Values that differ per element, so that codes are not all equal.
    std::vector<TensorData> varied = TinyHfLlama(true);
    for (size_t i = 0; i < varied.size(); ++i) {
      std::vector<float> v = tqm_test::Gaussian(varied[i].expected.size(), i + 1);
      varied[i] = F32Tensor(varied[i].entry.name, varied[i].entry.shape, v);
    }
    unlink(dir.File("v.safetensors").c_str());
    unlink(dir.File("u8.safetensors").c_str());
    WriteSafetensors(dir.File("v.safetensors"), varied, {});
    absl::StatusOr<std::unique_ptr<TensorSource>> f =
        OpenSafetensors(dir.File("v.safetensors"));
    ASSERT_TRUE(f.ok()) << f.status();
    PackOptions opt;
    opt.granularity = g;
    ASSERT_TRUE(Pack(**f, dir.File("m.tqm"), opt).ok());
    absl::StatusOr<std::unique_ptr<Reader>> r = Reader::Open(dir.File("m.tqm"));
    ASSERT_TRUE(r.ok()) << r.status();
    SafetensorsExportOptions eo;
    eo.type = SafetensorsExportType::kU8;
    ASSERT_TRUE(ExportSafetensors(**r, dir.File("u8.safetensors"), eo).ok());
    absl::StatusOr<std::unique_ptr<TensorSource>> u8 =
        OpenSafetensors(dir.File("u8.safetensors"));
    ASSERT_TRUE(u8.ok()) << u8.status();
    ASSERT_EQ((*u8)->tensors().size(), (*r)->tensors().size());
    size_t quantized = 0;
    for (size_t i = 0; i < (*r)->tensors().size(); ++i) {
      const TensorInfo& t = (*r)->tensors()[i];
      const SourceTensor& st = (*u8)->tensors()[i];
      ASSERT_EQ(st.name, t.name);
      EXPECT_EQ(st.dims, t.dims);
      std::vector<float> want(t.numel), got;
      ASSERT_TRUE((*r)->ReadFloat(i, absl::MakeSpan(want)).ok());
      ASSERT_TRUE((*u8)->Read(i, &got).ok());
      ExpectValues(got, want, t.name);
      if (!t.quantized()) {
        EXPECT_EQ(st.kind, TensorKind::kFloat) << t.name;
        continue;
      }
      ++quantized;
      ASSERT_EQ(st.kind, TensorKind::kQuantized) << t.name;
      QuantizedTensor q;
      ASSERT_TRUE((*u8)->ReadQuantized(i, &q).ok());
      EXPECT_EQ(q.storage, t.storage) << t.name;
      std::vector<uint8_t> codes(t.numel);
      ASSERT_TRUE((*r)->DecodeTensor(i, absl::MakeSpan(codes)).ok());
      EXPECT_EQ(q.codes, codes) << t.name;
      ASSERT_EQ(q.params.size(), t.affine.size());
      for (size_t p = 0; p < q.params.size(); ++p) {
        EXPECT_EQ(FloatBits(q.params[p].scale), FloatBits(t.affine[p].scale));
        EXPECT_EQ(FloatBits(q.params[p].zero), FloatBits(t.affine[p].zero));
      }
    }
    EXPECT_GT(quantized, 0u);
  }
}

TEST(Safetensors, RejectsBadU8Triples) {
  TempDir dir;
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* name;
    std::vector<TensorData> tensors;
    const char* message;
  };
  auto one = [](std::vector<uint64_t> shape, std::vector<float> scale,
                std::vector<float> zero) {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    return U8Triple("w", std::move(shape), Pattern(n, 1), std::move(scale),
                    std::move(zero));
  };
  std::vector<TensorData> missing_zero = one({2, 2}, {1}, {0});
  missing_zero.pop_back();
  std::vector<TensorData> f16_scale = one({2, 2}, {1}, {0});
  f16_scale[1] = RawTensor("w.scale", "F16", {1}, ToBytes({0x3C00}));
  const Case cases[] = {
      {"zero_scale", one({2, 2}, {0}, {0}), "scale[0] = 0 is not a finite positive"},
      {"negative_scale", one({2, 2}, {1, -1}, {0, 0}), "scale[1] = -1"},
      {"inf_scale", one({2, 2}, {inf}, {0}), "scale[0] = inf"},
      {"fractional_zero", one({2, 2}, {1}, {0.5f}),
       "zero[0] = 0.5 is not a finite integer"},
      {"nan_zero", one({2, 2}, {1}, {std::nanf("")}), "zero[0] = nan"},
      {"pairs_not_rows", one({2, 3}, {1, 1, 1}, {0, 0, 0}),
       "3 affine pairs; expected 1 (per tensor) or dims[0]=2"},
      {"scales_vs_zeros", one({2, 2}, {1, 1}, {0}), "2 scales but 1 zeros"},
      {"missing_zero", missing_zero, "\"w.zero\" is missing"},
      {"f16_scale", f16_scale, "\"w.scale\" must be a 1-D F32 tensor, not F16"},
      {"empty_codes", one({0, 2}, {1}, {0}), "at least one element"},
  };
  for (const Case& c : cases) {
    const std::string path = dir.File(std::string(c.name) + ".safetensors");
    WriteSafetensors(path, c.tensors, {});
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
    ASSERT_FALSE(src.ok()) << c.name;
    EXPECT_EQ(src.status().code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_THAT(std::string(src.status().message()), HasSubstr(c.message))
        << c.name << ": " << src.status();
    EXPECT_THAT(std::string(src.status().message()), HasSubstr("quantized tensor \"w\""))
        << c.name;
  }
}

TEST(Llama2c, ReadRawIsTheFileBytes) {
  TempDir dir;
  const std::string path = dir.File("m.bin");
  const std::string file = MakeLlama2c({8, 12, 1, 2, 1, 10, 4});
  WriteFile(path, file);
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenLlama2c(path);
  ASSERT_TRUE(src.ok()) << src.status();
  std::string raw;
  ASSERT_TRUE((*src)->ReadRaw(0, &raw).ok());
  EXPECT_TRUE(raw == file.substr(28, 10 * 8 * 4));  // the embedding follows the header
  ASSERT_TRUE((*src)->ReadRaw(1, &raw).ok());
  EXPECT_TRUE(raw == file.substr(28 + 10 * 8 * 4, 8 * 4));  // layer 0's rms_att
}

TEST(SafetensorsWriter, RejectsMisuse) {
  TempDir dir;
  const std::string path = dir.File("w.safetensors");
  auto create = [&](std::vector<SafetensorsEntry> e,
                    std::vector<std::pair<std::string, std::string>> m = {}) {
    return SafetensorsWriter::Create(path, std::move(e), std::move(m));
  };
  EXPECT_EQ(create({{"a", "Q4", {1}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create({{"a", "F32", {1}}, {"a", "F32", {1}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create({{"", "F32", {1}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create({{"__metadata__", "F32", {1}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create({{"\xff", "F32", {1}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create({{"a", "F32", {uint64_t{1} << 62, 8}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(create({}, {{"k", "1"}, {"k", "2"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(dir.List().empty());

  absl::StatusOr<std::unique_ptr<SafetensorsWriter>> w =
      create({{"a", "F32", {2}}, {"b", "U8", {3}}});
  ASSERT_TRUE(w.ok()) << w.status();
  const uint8_t bytes[8] = {0};
  EXPECT_EQ((*w)->Write(absl::MakeConstSpan(bytes, 4)).code(),
            absl::StatusCode::kInvalidArgument);  // a is 8 bytes
  EXPECT_EQ((*w)->Finish().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*w)->Write(absl::MakeConstSpan(bytes, 8)).ok());
  ASSERT_TRUE((*w)->Write(absl::MakeConstSpan(bytes, 3)).ok());
  EXPECT_EQ((*w)->Write(absl::MakeConstSpan(bytes, 0)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(Exists(path));
  ASSERT_TRUE((*w)->Finish().ok());
  EXPECT_EQ((*w)->Finish().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Exists(path));
  EXPECT_EQ(dir.List().size(), 1u);
  // U8 without .scale/.zero companions is kept verbatim.
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenSafetensors(path);
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_EQ((*src)->tensors().size(), 2u);
  EXPECT_EQ((*src)->tensors()[1].kind, TensorKind::kRaw);
  EXPECT_EQ((*src)->tensors()[1].dtype, format::kDTypeU8);
}

TEST(SafetensorsWriter, AbandonedWriterLeavesNothing) {
  TempDir dir;
  const std::string path = dir.File("abandoned.safetensors");
  {
    absl::StatusOr<std::unique_ptr<SafetensorsWriter>> w =
        SafetensorsWriter::Create(path, {{"a", "F32", {1}}}, {});
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(dir.List().size(), 1u);  // the temporary file
  }
  EXPECT_TRUE(dir.List().empty());
}

TEST(SafetensorsWriter, DTypeSizes) {
  EXPECT_EQ(SafetensorsDTypeSize("F32"), 4u);
  EXPECT_EQ(SafetensorsDTypeSize("F16"), 2u);
  EXPECT_EQ(SafetensorsDTypeSize("BF16"), 2u);
  EXPECT_EQ(SafetensorsDTypeSize("U8"), 1u);
  EXPECT_EQ(SafetensorsDTypeSize("I64"), 8u);
  EXPECT_EQ(SafetensorsDTypeSize("F64"), 8u);
  EXPECT_EQ(SafetensorsDTypeSize("f32"), 0u);
  EXPECT_EQ(SafetensorsDTypeSize(""), 0u);
}

// Random byte changes to valid files: every open either fails cleanly or
// yields a source whose tensors all read (run under ASan/UBSan to check
// memory safety).
void MutateAndOpen(const std::string& valid, size_t region, const std::string& path,
                   uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v;
  for (int iter = 0; iter < 1500; ++iter) {
    std::string m = valid;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t at = rng() % std::min(region, m.size());
      switch (rng() % 3) {
        case 0:
          m[at] = static_cast<char>(rng());
          break;
        case 1:
          m[at] ^= static_cast<char>(1u << (rng() % 8));
          break;
        default:
          m[at] = "{}[],:\"0123456789-e"[rng() % 20];
      }
    }
    if (rng() % 8 == 0) m.resize(rng() % (m.size() + 1));
    WriteFile(path, m);
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenModel(path);
    if (!src.ok()) continue;
    for (size_t i = 0; i < (*src)->tensors().size(); ++i) {
      ASSERT_TRUE((*src)->Read(i, &v).ok());
    }
  }
}

TEST(Import, MutatedFilesNeverCrash) {
  TempDir dir;
  const std::string st = dir.File("valid.safetensors");
  WriteSafetensors(st, TinyHfLlama(true), {{"format", "pt"}, {"llama.n_heads", "2"}});
  const std::string valid_st = ReadFile(st);
  const uint64_t n =
      LoadLE64(reinterpret_cast<const uint8_t*>(valid_st.data()));
  MutateAndOpen(valid_st, 8 + n, dir.File("m.safetensors"), 1);
  MutateAndOpen(MakeLlama2c({8, 12, 2, 2, 1, -10, 4}), 28, dir.File("m.bin"), 2);
}

// ---- OpenModel and names ----

TEST(OpenModel, SniffsFormats) {
  TempDir dir;
  const std::string l2c = dir.File("model.bin");
  WriteFile(l2c, MakeLlama2c({8, 12, 1, 2, 1, 10, 4}));
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenModel(l2c);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(MetaString(**src, meta_keys::kSourceFormat), "llama2c");

  const std::string st = dir.File("model.safetensors");
  WriteSafetensors(st, {F32Tensor("a", {1}, {1})}, {});
  src = OpenModel(st);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(MetaString(**src, meta_keys::kSourceFormat), "safetensors");

  const std::string gguf = dir.File("model.gguf");
  WriteFile(gguf, std::string("GGUF\3\0\0\0", 8) + std::string(64, '\0'));
  src = OpenModel(gguf);
  ASSERT_TRUE(src.ok()) << src.status();  // an empty GGUF v3 file: no tensors, no keys
  EXPECT_EQ(MetaString(**src, meta_keys::kSourceFormat), "gguf");
  WriteFile(gguf, std::string("GGUF\1\0\0\0", 8) + std::string(64, '\0'));
  EXPECT_EQ(OpenModel(gguf).status().code(), absl::StatusCode::kUnimplemented);  // v1

  const std::string tqm = dir.File("model.tqm");
  WriteFile(tqm, std::string(reinterpret_cast<const char*>(format::kMagic), 8) +
                     std::string(64, '\0'));
  src = OpenModel(tqm);
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), absl::StatusCode::kInvalidArgument);

  if (Exists(StoriesPath())) {
    src = OpenModel(StoriesPath());
    ASSERT_TRUE(src.ok()) << src.status();
    EXPECT_EQ(MetaString(**src, meta_keys::kSourceFormat), "llama2c");
    EXPECT_EQ((*src)->tensors().size(), 47u);
  }
}

// A file of `bytes` named `name` in `dir`; returns its path.
std::string Put(const TempDir& dir, const std::string& name, const std::string& bytes) {
  WriteFile(dir.File(name), bytes);
  return dir.File(name);
}

TEST(OpenModel, ExtensionAndContentMustAgree) {
  TempDir dir;
  std::string st_bytes;
  {
    WriteSafetensors(dir.File("src.safetensors"), {F32Tensor("a", {1}, {1})}, {});
    st_bytes = ReadFile(dir.File("src.safetensors"));
  }
  const std::string gguf_bytes = std::string("GGUF\3\0\0\0", 8) + std::string(64, '\0');
  const std::string tqm_bytes =
      std::string(reinterpret_cast<const char*>(format::kMagic), 8) +
      std::string(64, '\0');
  const std::string l2c = MakeLlama2c({8, 12, 1, 2, 1, 10, 4});
  const auto kLoss = absl::StatusCode::kDataLoss;
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  struct Case {
    const char* name;
    std::string bytes;
    absl::StatusCode code;
    std::vector<std::string> message;
  };
  const Case cases[] = {
      {"x.safetensors",
       "hello world\n",
       kLoss,
       {"x.safetensors: not a safetensors file: header length 8031924123371070824 "
        "exceeds file size 12"}},
      {"upper.SAFETENSORS", "hello world\n", kLoss, {"not a safetensors file"}},
      {"g.safetensors",
       gguf_bytes,
       kLoss,
       {"not a safetensors file", "(its content is a GGUF file)"}},
      {"short.safetensors",
       "abc",
       kLoss,
       {"not a safetensors file: 3 bytes is too short for the 8-byte header length"}},
      {"s.gguf",
       st_bytes,
       kLoss,
       {"s.gguf: not a GGUF file: it starts with", "not the magic \"GGUF\"",
        "(its content is a safetensors file)"}},
      {"l.gguf", l2c, kLoss, {"not a GGUF file"}},
      {"l.tqm", l2c, kLoss, {"l.tqm: not a .tqm file"}},
      {"packed.tqm",
       tqm_bytes,
       kInvalid,
       {"packed.tqm is a .tqm file; tqm-pack reads float checkpoints (GGUF, "
        "safetensors"}},
      {"packed.bin", tqm_bytes, kInvalid, {"packed.bin is a .tqm file"}},
      {"notes.txt",
       "hello world\n",
       kInvalid,
       {"notes.txt: not a model file this tool reads; tried GGUF (no \"GGUF\" magic), "
        "safetensors (header length 8031924123371070824 exceeds file size 12), "
        "safetensors index JSON (does not start with '{'), llama2.c (12 bytes is too "
        "short for a llama2.c header (28 bytes)), Hugging Face directory (not a "
        "directory)"}},
      // llama2.c has no magic: a plausible header whose size is off by one
      // byte is not taken for a checkpoint.
      {"trailing.bin",
       l2c + "x",
       kInvalid,
       {"tried GGUF", "llama2.c (llama2.c file is", "(trailing bytes))"}},
      {"zeros.bin",
       std::string(4096, '\0'),
       kInvalid,
       {"llama2.c (llama2.c header field dim=0 at offset 0 is invalid"}},
      {"pytorch_model.bin", std::string("PK\x03\x04", 4) + std::string(100, 'z'),
       kInvalid,
       {"tried GGUF", "it looks like a PyTorch checkpoint (zip or pickle): convert it "
                      "to safetensors first"}},
      {"config.json",
       "{\"hidden_size\": 8}",
       kInvalid,
       {"is a Hugging Face config, not a model: give its directory"}},
  };
  for (const Case& c : cases) {
    const std::string path = Put(dir, c.name, c.bytes);
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenModel(path);
    ASSERT_FALSE(src.ok()) << c.name;
    EXPECT_EQ(src.status().code(), c.code) << c.name << ": " << src.status();
    for (const std::string& m : c.message) {
      EXPECT_THAT(std::string(src.status().message()), HasSubstr(m)) << c.name;
    }
  }
  // The content decides when the extension names no format of its own.
  struct Good {
    const char* name;
    const std::string& bytes;
    const char* format;
  };
  const Good good[] = {{"model.pt", l2c, "llama2c"},
                       {"weights.bin", st_bytes, "safetensors"},
                       {"model.data", gguf_bytes, "gguf"},
                       {"noext", l2c, "llama2c"}};
  for (const Good& g : good) {
    absl::StatusOr<std::unique_ptr<TensorSource>> src =
        OpenModel(Put(dir, g.name, g.bytes));
    ASSERT_TRUE(src.ok()) << g.name << ": " << src.status();
    EXPECT_EQ(MetaString(**src, meta_keys::kSourceFormat), g.format) << g.name;
  }
}

// A Hugging Face config.json for TinyHfLlama (dim 8, hidden 12, 2 layers,
// vocab 10) with `extra` members appended.
std::string TinyConfig(const std::string& extra = "") {
  return R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10,
  "max_position_embeddings": 64, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "tie_word_embeddings": true, "torch_dtype": "float32",
  "rope_scaling": null)" +
         extra + "}";
}

void ExpectTinyConfigMetadata(const TensorSource& s) {
  EXPECT_EQ(MetaString(s, meta_keys::kArchitecture), "llama");
  EXPECT_EQ(MetaInt(s, meta_keys::kDim), 8);
  EXPECT_EQ(MetaInt(s, meta_keys::kHiddenDim), 12);
  EXPECT_EQ(MetaInt(s, meta_keys::kLayers), 2);
  EXPECT_EQ(MetaInt(s, meta_keys::kHeads), 2);
  EXPECT_EQ(MetaInt(s, meta_keys::kKvHeads), 1);
  EXPECT_EQ(MetaInt(s, meta_keys::kVocabSize), 10);
  EXPECT_EQ(MetaInt(s, meta_keys::kSeqLen), 64);
  EXPECT_EQ(MetaInt(s, meta_keys::kTiedClassifier), 1);
  ASSERT_NE(Meta(s, meta_keys::kNormEps), nullptr);
  EXPECT_EQ(Meta(s, meta_keys::kNormEps)->float64, 1e-5);
  ASSERT_NE(Meta(s, meta_keys::kRopeTheta), nullptr);
  EXPECT_EQ(Meta(s, meta_keys::kRopeTheta)->float64, 500000.0);
  EXPECT_EQ(MetaString(s, meta_keys::kRopeLayout), "hf");
  EXPECT_EQ(MetaString(s, meta_keys::kSourceFormat), "safetensors");
}

TEST(OpenModel, HfDirectoryWithOneFile) {
  TempDir dir;
  WriteSafetensors(dir.File("model.safetensors"), TinyHfLlama(false), {});
  // Without config.json: only what the shapes give.
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenModel(dir.File(""));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(Meta(**src, meta_keys::kHeads), nullptr);
  WriteFile(dir.File("config.json"), TinyConfig());
  for (const std::string& path : {dir.File(""), dir.File("model.safetensors")}) {
    src = OpenModel(path);
    ASSERT_TRUE(src.ok()) << path << ": " << src.status();
    ExpectTinyConfigMetadata(**src);
    EXPECT_EQ((*src)->tensors().size(), 1 + 2 * 9 + 1u);
    EXPECT_TRUE(CheckModel(**src, {}).ok());
  }
  // OpenSafetensors on the file alone does not look for a config.
  src = OpenSafetensors(dir.File("model.safetensors"));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(Meta(**src, meta_keys::kHeads), nullptr);
}

TEST(OpenModel, HfDirectoryWithShards) {
  TempDir dir;
  std::vector<TensorData> all = TinyHfLlama(true);
  std::vector<TensorData> first(all.begin(), all.begin() + 10);
  std::vector<TensorData> second(all.begin() + 10, all.end());
  // A u8 export triple in a shard: the index lists all three names.
  for (TensorData& t : U8Triple("extra.weight", {2, 2}, Pattern(4, 9), {0.5f}, {3}))
    second.push_back(std::move(t));
  WriteSafetensors(dir.File("model-00001-of-00002.safetensors"), first, {});
  WriteSafetensors(dir.File("model-00002-of-00002.safetensors"), second, {});
  std::string index = R"({"metadata": {"total_size": 1}, "weight_map": {)";
  for (size_t i = 0; i < first.size() + second.size(); ++i) {
    const TensorData& t = i < first.size() ? first[i] : second[i - first.size()];
    index += absl::StrFormat("%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                             i ? ", " : "", t.entry.name, i < first.size() ? 1 : 2);
  }
  WriteFile(dir.File("model.safetensors.index.json"), index + "}}");
  WriteFile(dir.File("config.json"),
            TinyConfig(R"(, "tie_word_embeddings": false)")
                .replace(TinyConfig().find("\"tie_word_embeddings\": true,"),
                         std::string("\"tie_word_embeddings\": true,").size(), ""));
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenModel(dir.File(""));
  ASSERT_TRUE(src.ok()) << src.status();
  TensorSource& s = **src;
  ASSERT_EQ(s.tensors().size(), all.size() + 1);
  EXPECT_EQ(MetaInt(s, meta_keys::kTiedClassifier), 0);
  EXPECT_EQ(MetaInt(s, meta_keys::kHeads), 2);
  EXPECT_EQ(MetaInt(s, meta_keys::kSeqLen), 64);
  EXPECT_EQ(s.tensors().back().name, "extra.weight");
  EXPECT_EQ(s.tensors().back().kind, TensorKind::kQuantized);
  QuantizedTensor q;
  ASSERT_TRUE(s.ReadQuantized(s.tensors().size() - 1, &q).ok());
  EXPECT_EQ(q.params.size(), 1u);
  std::string raw;
  ASSERT_TRUE(s.ReadRaw(0, &raw).ok());
  EXPECT_TRUE(raw == all[0].bytes);
  EXPECT_TRUE(CheckModel(s, {}).ok());
}

TEST(OpenModel, HfConfigMustAgreeWithShapes) {
  TempDir dir;
  WriteSafetensors(dir.File("model.safetensors"), TinyHfLlama(false), {});
  struct Case {
    std::string config;
    const char* message;
  };
  const Case cases[] = {
      {R"({"hidden_size": 16})",
       "config.json: hidden_size is 16, which contradicts the tensor shapes: they give "
       "llama.dim=8"},
      {R"({"intermediate_size": 11})",
       "intermediate_size is 11, which contradicts the tensor shapes: they give "
       "llama.hidden_dim=12"},
      {R"({"num_hidden_layers": 3})",
       "num_hidden_layers is 3, which contradicts the tensor shapes: they give "
       "llama.n_layers=2"},
      {R"({"vocab_size": 32000})",
       "vocab_size is 32000, which contradicts the tensor shapes: they give "
       "llama.vocab_size=10"},
      {R"({"tie_word_embeddings": false})",
       "tie_word_embeddings is false but the checkpoint has no lm_head.weight"},
      {R"({"num_attention_heads": "2"})",
       "num_attention_heads is 2, not an integer in 1..2147483647"},
      {R"({"num_attention_heads": 0})", "num_attention_heads is 0, not an integer"},
      {R"({"num_attention_heads": 2.5})", "num_attention_heads is 2.5, not an integer"},
      {R"({"rms_norm_eps": -1})", "rms_norm_eps is -1, not a finite positive number"},
      {R"({"rope_theta": "x"})", "rope_theta is string, not a finite positive number"},
      {R"({"tie_word_embeddings": 1})", "tie_word_embeddings is int"},
      {"[1]", "not a Hugging Face config: not a JSON object"},
      {"{", "not a Hugging Face config: JSON"},
  };
  for (const Case& c : cases) {
    WriteFile(dir.File("config.json"), c.config);
    absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenModel(dir.File(""));
    ASSERT_FALSE(src.ok()) << c.config;
    EXPECT_EQ(src.status().code(), absl::StatusCode::kDataLoss) << src.status();
    EXPECT_THAT(std::string(src.status().message()), HasSubstr(c.message)) << c.config;
  }
}

TEST(OpenModel, DirectoryWithoutModelNamesWhatItLookedFor) {
  TempDir dir;
  WriteFile(dir.File("config.json"), TinyConfig());
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenModel(dir.File(""));
  ASSERT_FALSE(src.ok());
  EXPECT_EQ(src.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(src.status().message()),
              HasSubstr("not a Hugging Face model directory: looked for "
                        "model.safetensors.index.json and model.safetensors, found "
                        "neither"));
  WriteFile(dir.File("other.gguf"), "x");
  src = OpenModel(dir.File(""));
  EXPECT_THAT(std::string(src.status().message()), HasSubstr("it holds other.gguf"));
}

TEST(HfConfig, ParsesFromMemory) {
  absl::StatusOr<std::vector<MetaEntry>> m = internal::HfConfigToMetadata(
      R"({"num_attention_heads": 4, "hidden_size": 64})", "c");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_NE(FindMeta(*m, meta_keys::kKvHeads), nullptr);
  EXPECT_EQ(FindMeta(*m, meta_keys::kKvHeads)->int64, 4);  // defaults to the heads
  EXPECT_EQ(FindMeta(*m, meta_keys::kDim)->int64, 64);
  EXPECT_EQ(FindMeta(*m, meta_keys::kArchitecture), nullptr);  // no model_type
  m = internal::HfConfigToMetadata("{}", "c");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->empty());

  absl::StatusOr<internal::ShardIndex> idx = internal::ParseShardIndex(
      R"({"metadata": {"total_size": 8, "n": null}, "weight_map": {"a": "s1", "b": "s2", "c": "s1"}})",
      "i");
  ASSERT_TRUE(idx.ok()) << idx.status();
  ASSERT_EQ(idx->shards.size(), 2u);
  EXPECT_EQ(idx->shards["s1"], (std::set<std::string>{"a", "c"}));
  ASSERT_EQ(idx->metadata.size(), 1u);
  EXPECT_EQ(idx->metadata[0].second, "8");
  for (const char* bad :
       {"", "[]", R"({"weight_map": {}})", R"({"weight_map": {"a": "../x"}})",
        R"({"weight_map": {"a": "s"}, "metadata": 1})"}) {
    idx = internal::ParseShardIndex(bad, "i");
    EXPECT_EQ(idx.status().code(), absl::StatusCode::kDataLoss) << bad;
  }
}

// ---- CheckModel ----

// A llama2.c tokenizer of `n` tokens ("t0", "t1", ...).
std::string MakeTokenizer(int n) {
  std::string s;
  AppendI32(&s, 8);
  for (int i = 0; i < n; ++i) {
    const std::string t = absl::StrCat("t", i);
    AppendF32(&s, -static_cast<float>(i));
    AppendI32(&s, static_cast<int32_t>(t.size()));
    s += t;
  }
  return s;
}

TEST(CheckModel, TokenizerMustMatchTheVocabulary) {
  TempDir dir;
  WriteSafetensors(dir.File("m.safetensors"), TinyHfLlama(false), {});
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      OpenSafetensors(dir.File("m.safetensors"));
  ASSERT_TRUE(src.ok()) << src.status();
  auto with_tokenizer = [](const std::string& bytes) {
    return std::vector<MetaEntry>{
        {meta_keys::kTokenizerLlama2c, MetaValue::Bytes(bytes)}};
  };
  EXPECT_TRUE(CheckModel(**src, with_tokenizer(MakeTokenizer(10)), "tok10.bin").ok());
  absl::Status s = CheckModel(**src, with_tokenizer(MakeTokenizer(4096)), "tok4096.bin");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "tokenizer tok4096.bin has 4096 tokens, model vocab_size is 10");
  // Every truncation of a valid tokenizer either parses to fewer tokens
  // (at a token boundary) or fails to parse; none passes.
  const std::string tok = MakeTokenizer(10);
  for (size_t n = 0; n < tok.size(); ++n) {
    s = CheckModel(**src, with_tokenizer(tok.substr(0, n)), "cut");
    EXPECT_FALSE(s.ok()) << n;
  }
  // A token longer than max_token_length, a NaN score.
  std::string bad = MakeTokenizer(10);
  bad[0] = 1;
  EXPECT_THAT(std::string(CheckModel(**src, with_tokenizer(bad), "b").message()),
              HasSubstr("outside 0..max_token_length=1"));
  bad = MakeTokenizer(10);
  AppendF32(&bad, std::nanf(""));
  AppendI32(&bad, 0);
  EXPECT_THAT(std::string(CheckModel(**src, with_tokenizer(bad), "b").message()),
              HasSubstr("token 10 at offset"));
  // A model file given as the tokenizer.
  if (Exists(StoriesPath())) {
    absl::StatusOr<std::unique_ptr<TensorSource>> stories = OpenModel(StoriesPath());
    ASSERT_TRUE(stories.ok()) << stories.status();
    s = CheckModel(**stories, with_tokenizer(ReadFile(StoriesPath())), "stories260K.bin");
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("tokenizer stories260K.bin: not a llama2.c tokenizer"));
    const std::string tok512 = tqm_test::SharedPath("models/stories260K/tok512.bin");
    EXPECT_TRUE(
        CheckModel(**stories, with_tokenizer(ReadFile(tok512)), "tok512.bin").ok());
  }
}

TEST(CheckModel, HyperparametersMustMatchShapes) {
  TempDir dir;
  WriteSafetensors(dir.File("m.safetensors"), TinyHfLlama(false), {});
  absl::StatusOr<std::unique_ptr<TensorSource>> src =
      OpenSafetensors(dir.File("m.safetensors"));
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE(CheckModel(**src, {}).ok());
  EXPECT_TRUE(CheckModel(**src, {{meta_keys::kHeads, MetaValue::Int(2)},
                                 {meta_keys::kKvHeads, MetaValue::Int(1)}})
                  .ok());
  struct Case {
    std::vector<MetaEntry> meta;
    const char* message;
  };
  const Case cases[] = {
      {{{meta_keys::kDim, MetaValue::Int(16)}},
       "llama.dim=16 but model.embed_tokens.weight has 8 columns"},
      {{{meta_keys::kVocabSize, MetaValue::Int(11)}},
       "llama.vocab_size=11 but model.embed_tokens.weight has 10 rows"},
      {{{meta_keys::kHiddenDim, MetaValue::Int(10)}},
       "llama.hidden_dim=10 but model.layers.0.mlp.gate_proj.weight has 12 rows"},
      {{{meta_keys::kLayers, MetaValue::Int(3)}},
       "llama.n_layers=3 but the checkpoint holds 2 layers"},
      {{{meta_keys::kHeads, MetaValue::Int(3)}},
       "llama.n_heads=3 does not divide llama.dim=8"},
      {{{meta_keys::kHeads, MetaValue::Int(4)}, {meta_keys::kKvHeads, MetaValue::Int(3)}},
       "llama.n_kv_heads=3 does not divide llama.n_heads=4"},
      {{{meta_keys::kHeads, MetaValue::Int(2)}, {meta_keys::kKvHeads, MetaValue::Int(2)}},
       "llama.n_kv_heads=2 gives k_proj 8 rows (n_kv_heads * dim / n_heads) but "
       "model.layers.0.self_attn.k_proj.weight has 4"},
  };
  for (const Case& c : cases) {
    absl::Status s = CheckModel(**src, c.meta);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(s.message(), c.message);
  }
}

TEST(CheckModel, RealModelsPass) {
  if (!Exists(StoriesPath())) GTEST_SKIP() << "../shared/models/stories260K is absent";
  absl::StatusOr<std::unique_ptr<TensorSource>> src = OpenModel(StoriesPath());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_TRUE(CheckModel(**src, {}).ok());
  for (const char* f :
       {"stories260K-f32.gguf", "stories260K-q8_0.gguf", "ggml-vocab-llama-spm.gguf"}) {
    const std::string path = tqm_test::SharedPath(std::string("fixtures/gguf/") + f);
    if (!Exists(path)) continue;
    src = OpenModel(path);
    ASSERT_TRUE(src.ok()) << src.status();
    EXPECT_TRUE(CheckModel(**src, {}).ok()) << f << ": " << CheckModel(**src, {});
  }
}

TEST(LayerFromName, Parses) {
  EXPECT_EQ(LayerFromName("model.layers.0.input_layernorm.weight"), 0);
  EXPECT_EQ(LayerFromName("model.layers.12.mlp.up_proj.weight"), 12);
  EXPECT_EQ(LayerFromName("model.layers.7"), 7);
  EXPECT_EQ(LayerFromName("model.layers.2147483647.x"), 2147483647);
  EXPECT_EQ(LayerFromName("model.layers.2147483648.x"), -1);
  EXPECT_EQ(LayerFromName("model.layers.99999999999999999999.x"), -1);
  EXPECT_EQ(LayerFromName("model.layers.01.x"), -1);
  EXPECT_EQ(LayerFromName("model.layers.x"), -1);
  EXPECT_EQ(LayerFromName("model.layers..x"), -1);
  EXPECT_EQ(LayerFromName("model.layers.3x.y"), -1);
  EXPECT_EQ(LayerFromName("model.embed_tokens.weight"), -1);
  EXPECT_EQ(LayerFromName("model.norm.weight"), -1);
  EXPECT_EQ(LayerFromName("lm_head.weight"), -1);
  EXPECT_EQ(LayerFromName(""), -1);
  EXPECT_EQ(LayerFromName("xmodel.layers.1.y"), 1);
  EXPECT_EQ(LayerFromName("model.xlayers.1.y"), -1);
  // The common naming schemes.
  EXPECT_EQ(LayerFromName("model.decoder.layers.5.fc1.weight"), 5);
  EXPECT_EQ(LayerFromName("transformer.h.11.attn.c_attn.weight"), 11);
  EXPECT_EQ(LayerFromName("encoder.layer.2.attention.self.query.weight"), 2);
  EXPECT_EQ(LayerFromName("bert.encoder.layer.3.output.dense.weight"), 3);
  EXPECT_EQ(LayerFromName("layers.4.attention.wq.weight"), 4);
  EXPECT_EQ(LayerFromName("blk.6.attn_q.weight"), 6);
  EXPECT_EQ(LayerFromName("model.language_model.layers.8.mlp.up_proj.weight"), 8);
  // The first container wins (experts inside a layer).
  EXPECT_EQ(LayerFromName("model.layers.1.mlp.experts.7.w1.weight"), 1);
  EXPECT_EQ(LayerFromName("transformer.wte.weight"), -1);
  EXPECT_EQ(LayerFromName("blk.x.attn_q.weight"), -1);
}

TEST(Metadata, FactoriesAndFind) {
  std::vector<MetaEntry> m = {{"i", MetaValue::Int(-3)},
                              {"f", MetaValue::Float(0.5)},
                              {"s", MetaValue::String("x")},
                              {"b", MetaValue::Bytes(std::string("\0\1", 2))}};
  ASSERT_NE(FindMeta(m, "i"), nullptr);
  EXPECT_EQ(FindMeta(m, "i")->type, format::kMetaInt64);
  EXPECT_EQ(FindMeta(m, "i")->int64, -3);
  EXPECT_EQ(FindMeta(m, "f")->type, format::kMetaFloat64);
  EXPECT_EQ(FindMeta(m, "f")->float64, 0.5);
  EXPECT_EQ(FindMeta(m, "s")->type, format::kMetaString);
  EXPECT_EQ(FindMeta(m, "s")->bytes, "x");
  EXPECT_EQ(FindMeta(m, "b")->type, format::kMetaBytes);
  EXPECT_EQ(FindMeta(m, "b")->bytes.size(), 2u);
  EXPECT_EQ(FindMeta(m, "missing"), nullptr);
}

}  // namespace
}  // namespace tqm
