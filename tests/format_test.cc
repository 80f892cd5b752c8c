// End-to-end tests of the v1 format: quantization exactness, the seqtable
// codec against its reference decoder, writer/reader round trips over a table
// of configurations, the real stories260K model bit for bit, truncations and
// byte flips.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "codec/entropy.h"
#include "quant/quantize_internal.h"
#include "test_util.h"
#include "tqm/codec.h"
#include "tqm/import.h"
#include "tqm/quantize.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

using tqm_test::AsSpan;

TEST(Quantize, MatchesFormula) {
  std::vector<float> x = {-1.0f, -0.5f, 0.0f, 0.25f, 1.0f, 0.7f};
  auto a = tqm::ChooseAffine(x);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->scale, 2.0f / 255.0f);
  EXPECT_EQ(a->zero, std::nearbyint(1.0f / (2.0f / 255.0f)));
  std::vector<uint8_t> q(x.size());
  tqm::QuantizeAffine(x, *a, absl::MakeSpan(q));
  EXPECT_EQ(q.front(), 0);
  // float32 1/scale is 127.49999: the maximum lands on 254, not 255. That is
  // the formula's behaviour (and the paper's); the error bound still holds.
  EXPECT_EQ(q[4], 254);
  std::vector<float> back(x.size());
  tqm::DequantizeAffine(q, *a, absl::MakeSpan(back));
  for (size_t i = 0; i < x.size(); ++i) EXPECT_LE(std::fabs(back[i] - x[i]), a->scale / 2 * 1.0001f);
}

// The vector loop and the scalar tail against the spec's formula with
// std::nearbyint, on random tensors of every length up to 100 and on ranges
// far from zero (large zero points), and on exact half-way values.
TEST(Quantize, VectorLoopMatchesTheFormula) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 400; ++trial) {
    const size_t n = 1 + trial % 100;
    const float center = trial % 4 == 0 ? 0.0f : (trial % 4 == 1 ? 1e3f : -3e5f);
    std::normal_distribution<float> d(center, trial % 3 == 0 ? 1e-3f : 1.0f);
    std::vector<float> x(n);
    for (float& v : x) v = d(rng);
    if (trial % 5 == 0) {
      for (size_t i = 0; i < n; ++i) x[i] = 0.5f * static_cast<float>(i % 511) - 127.5f;
    }
    auto a = tqm::ChooseAffine(x);
    ASSERT_TRUE(a.ok()) << a.status();
    // Arbitrary affine pairs too, including ones that clamp.
    for (tqm::Affine aff : {*a, tqm::Affine{a->scale * 0.5f, a->zero + 3.0f},
                            tqm::Affine{1.0f, 0.0f}}) {
      std::vector<uint8_t> q(n);
      tqm::QuantizeAffine(x, aff, absl::MakeSpan(q));
      for (size_t i = 0; i < n; ++i) {
        float want = std::nearbyint(x[i] / aff.scale) + aff.zero;
        want = want < 0.0f ? 0.0f : (want > 255.0f ? 255.0f : want);
        ASSERT_EQ(q[i], static_cast<uint8_t>(want))
            << "trial " << trial << " element " << i << " of " << n << " x " << x[i];
      }
    }
  }
}

TEST(Quantize, RoundsHalfToEven) {
  // scale = 1 exactly: x/scale lands on .5 boundaries.
  std::vector<float> x = {0.0f, 255.0f, 0.5f, 1.5f, 2.5f};
  auto a = tqm::ChooseAffine(x);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->scale, 1.0f);
  std::vector<uint8_t> q(x.size());
  tqm::QuantizeAffine(x, *a, absl::MakeSpan(q));
  EXPECT_EQ(q[2], 0);
  EXPECT_EQ(q[3], 2);
  EXPECT_EQ(q[4], 2);
}

// QuantizeAffine's inline rounding against std::nearbyint, bit for bit: a
// stride through every float32 bit pattern, plus every float near the
// thresholds where the method changes (2^22, 2^23) and near half-integers.
TEST(Quantize, RoundingMatchesNearbyintBitForBit) {
  auto check = [](uint32_t bits) {
    float v;
    std::memcpy(&v, &bits, 4);
    const float want = std::nearbyint(v), got = tqm::quantize_internal::RoundHalfEven(v);
    uint32_t wb, gb;
    std::memcpy(&wb, &want, 4);
    std::memcpy(&gb, &got, 4);
    if (std::isnan(v)) return std::isnan(got);
    return wb == gb;
  };
  int bad = 0;
  for (uint32_t bits : {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x7F7FFFFFu,
                        0xFF7FFFFFu, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0x3F000000u,
                        0xBF000000u, 0x3EFFFFFFu, 0xBEFFFFFFu}) {
    EXPECT_TRUE(check(bits)) << "bits 0x" << std::hex << bits;
  }
  for (uint64_t b = 0; b <= 0xFFFFFFFFull && bad < 10; b += 997) {
    if (!check(static_cast<uint32_t>(b))) {
      ADD_FAILURE() << "bits 0x" << std::hex << b;
      ++bad;
    }
  }
  for (float center : {4194304.0f, 8388608.0f, 0.5f, 1.5f, 2.5f, 254.5f, 1e6f + 0.5f}) {
    for (float sign : {1.0f, -1.0f}) {
      uint32_t c;
      const float v = sign * center;
      std::memcpy(&c, &v, 4);
      for (uint32_t d = 0; d < 4096 && bad < 10; ++d) {
        for (uint32_t bits : {c + d, c - d}) {
          if (!check(bits)) {
            ADD_FAILURE() << "bits 0x" << std::hex << bits;
            ++bad;
          }
        }
      }
    }
  }
}

TEST(Quantize, ConstantTensorIsExact) {
  for (float c : {0.0f, 3.25f, -7.5f, 1e-30f}) {
    std::vector<float> x(10, c);
    auto a = tqm::ChooseAffine(x);
    ASSERT_TRUE(a.ok());
    std::vector<uint8_t> q(x.size());
    tqm::QuantizeAffine(x, *a, absl::MakeSpan(q));
    std::vector<float> back(x.size());
    tqm::DequantizeAffine(q, *a, absl::MakeSpan(back));
    for (float b : back) EXPECT_EQ(b, c) << "constant " << c;
  }
}

TEST(Quantize, ZeroPointIsNeverNegativeZero) {
  std::vector<float> x = {0.0f, 1.0f, 0.5f};
  auto a = tqm::ChooseAffine(x);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->zero, 0.0f);
  EXPECT_FALSE(std::signbit(a->zero));
}

TEST(Quantize, RejectsUnderflowingScale) {
  std::vector<float> x = {0.0f, 1e-44f};  // (max - min) / 255 underflows to 0
  EXPECT_EQ(tqm::ChooseAffine(x).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Quantize, RejectsNonFinite) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> x = {1.0f, bad, 2.0f};
    auto a = tqm::ChooseAffine(x);
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  }
  std::vector<float> huge = {-3e38f, 3e38f};
  EXPECT_FALSE(tqm::ChooseAffine(huge).ok());
  EXPECT_FALSE(tqm::ChooseAffine({}).ok());
}

// A byte pattern with repeated groups and some unique ones.
std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i += 4) {
    uint32_t g = rng() % 8 == 0 ? rng() : (rng() % 5) * 0x01010101u;
    for (size_t k = 0; k < 4 && i + k < n; ++k) v[i + k] = static_cast<uint8_t>(g >> (8 * k));
  }
  return v;
}

TEST(SeqTable, RoundTripMatchesReference) {
  tqm::SeqTable table({0x00000000u, 0x01010101u, 0x02020202u, 0x03030303u});
  for (size_t n : {0, 1, 2, 3, 4, 5, 31, 32, 33, 64, 1000, 65536, 65539}) {
    auto in = Pattern(n, static_cast<uint32_t>(n));
    std::string enc;
    tqm::EncodeSeqTable(in, table, &enc);
    EXPECT_EQ(enc.size(), tqm::SeqTableEncodedSize(in, table));
    std::vector<uint8_t> a(n), b(n);
    ASSERT_TRUE(tqm::DecodeSeqTable(AsSpan(enc), table.entries(), absl::MakeSpan(a)).ok());
    ASSERT_TRUE(
        tqm::DecodeSeqTableReference(AsSpan(enc), table.entries(), absl::MakeSpan(b)).ok());
    EXPECT_EQ(a, in);
    EXPECT_EQ(b, in);
  }
}

TEST(SeqTable, RejectsInvalidCodesAndLengths) {
  std::vector<uint32_t> table = {7, 8};
  std::vector<uint8_t> out(8);
  auto run = [&](std::vector<uint8_t> in) {
    absl::Status a = tqm::DecodeSeqTable(in, table, absl::MakeSpan(out));
    absl::Status b = tqm::DecodeSeqTableReference(in, table, absl::MakeSpan(out));
    EXPECT_EQ(a.ok(), b.ok());
    return a;
  };
  EXPECT_TRUE(run({0, 0, 1, 0}).ok());
  // Code 2 == N: invalid; 0xFFFE: invalid.
  EXPECT_EQ(run({2, 0, 1, 0}).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(run({0xFE, 0xFF, 1, 0}).code(), absl::StatusCode::kDataLoss);
  // Escape cut off; too short; trailing bytes.
  EXPECT_FALSE(run({0, 0, 0xFF, 0xFF, 1, 2, 3}).ok());
  EXPECT_TRUE(run({0, 0, 0xFF, 0xFF, 1, 2, 3, 4}).ok());
  EXPECT_FALSE(run({0, 0}).ok());
  EXPECT_FALSE(run({0, 0, 1, 0, 0}).ok());
  // The escape is never a table code, even with a full table.
  std::vector<uint32_t> full(65535, 0x11111111u);
  std::vector<uint8_t> esc = {0xFF, 0xFF, 9, 9, 9, 9};
  std::vector<uint8_t> o4(4);
  ASSERT_TRUE(tqm::DecodeSeqTable(esc, full, absl::MakeSpan(o4)).ok());
  EXPECT_EQ(o4, std::vector<uint8_t>(4, 9));
}

struct Config {
  const char* name;
  tqm::Granularity granularity;
  bool quantize_all;
  uint32_t chunk_size;
  uint32_t max_table;
  bool entropy = false;
  tqm::Profile profile = tqm::Profile::kBalanced;
};

class RoundTrip : public ::testing::TestWithParam<Config> {};

TEST_P(RoundTrip, DecodesToTheQuantizedSource) {
  const Config& c = GetParam();
  tqm::MemorySource src = tqm_test::SmallModel(2, 32, 72, 96, 7);
  // A tensor with repeated groups so that seqtable chunks occur, and one
  // whose byte size is not a multiple of 4.
  std::vector<float> rep(4096);
  for (size_t i = 0; i < rep.size(); ++i) rep[i] = static_cast<float>((i / 4) % 3) - 1.0f;
  src.Add("model.layers.1.extra.weight", {64, 64}, rep);
  src.Add("odd.weight", {3, 5}, tqm_test::Gaussian(15, 3));
  tqm::PackOptions o;
  o.granularity = c.granularity;
  o.quantize_all = c.quantize_all;
  o.chunk_size = c.chunk_size;
  o.max_table_entries = c.max_table;
  o.entropy = c.entropy;
  o.profile = c.profile;
  tqm::PackStats st;
  auto bytes = tqm::PackToString(src, o, &st);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(st.file_bytes, bytes->size());
  auto r = tqm::Reader::FromBuffer(AsSpan(*bytes), c.name);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Verify().ok());
  ASSERT_EQ((*r)->tensors().size(), src.tensors().size());
  if (c.max_table > 0 && !c.entropy) EXPECT_GT(st.chunks_seqtable, 0u);
  if (c.entropy && c.profile != tqm::Profile::kSpeed) {
    EXPECT_GT(st.chunks_by_codec[tqm::format::kCodecRans] +
                  st.chunks_by_codec[tqm::format::kCodecHuffman] +
                  st.chunks_by_codec[tqm::format::kCodecZstd],
              0u);
  }
  for (size_t i = 0; i < src.tensors().size(); ++i) {
    const tqm::TensorInfo& t = (*r)->tensors()[i];
    std::vector<float> orig;
    ASSERT_TRUE(src.Read(i, &orig).ok());
    EXPECT_EQ(t.name, src.tensors()[i].name);
    EXPECT_EQ(t.dims, src.tensors()[i].dims);
    EXPECT_EQ(t.layer, tqm::LayerFromName(t.name));
    std::vector<float> back(t.numel);
    ASSERT_TRUE((*r)->ReadFloat(i, absl::MakeSpan(back)).ok());
    if (!t.quantized()) {
      EXPECT_EQ(back, orig) << t.name;
      EXPECT_FALSE((*r)->InPlace(i).empty());
      continue;
    }
    const uint64_t row = t.ParamRun(0);
    ASSERT_EQ(t.affine.size() * row, t.numel);
    std::vector<uint8_t> q(t.numel), expect(t.numel);
    ASSERT_TRUE((*r)->DecodeTensor(i, absl::MakeSpan(q)).ok());
    for (size_t k = 0; k < t.affine.size(); ++k) {
      auto in = absl::MakeConstSpan(orig).subspan(k * row, row);
      auto a = tqm::ChooseAffine(in);
      ASSERT_TRUE(a.ok());
      EXPECT_EQ(a->scale, t.affine[k].scale);
      EXPECT_EQ(a->zero, t.affine[k].zero);
      tqm::QuantizeAffine(in, *a, absl::MakeSpan(expect).subspan(k * row, row));
      for (size_t j = k * row; j < (k + 1) * row; ++j) {
        ASSERT_LE(std::fabs(back[j] - orig[j]), t.affine[k].scale * 0.5f * 1.0001f)
            << t.name << "[" << j << "]";
      }
    }
    EXPECT_EQ(q, expect) << t.name;
  }
  // The writer is deterministic.
  auto again = tqm::PackToString(src, o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *bytes);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, RoundTrip,
    ::testing::Values(Config{"tensor", tqm::Granularity::kTensor, false, 65536, 65535},
                      Config{"row", tqm::Granularity::kRow, false, 65536, 65535},
                      Config{"quantize_all", tqm::Granularity::kTensor, true, 65536, 65535},
                      Config{"small_chunks", tqm::Granularity::kTensor, false, 256, 65535},
                      Config{"odd_chunks", tqm::Granularity::kRow, true, 100, 65535},
                      Config{"tiny_table", tqm::Granularity::kTensor, false, 1024, 3},
                      Config{"no_table", tqm::Granularity::kTensor, false, 65536, 0},
                      Config{"size", tqm::Granularity::kTensor, false, 4096, 65535, true,
                             tqm::Profile::kSize},
                      Config{"balanced", tqm::Granularity::kRow, false, 4096, 65535, true,
                             tqm::Profile::kBalanced},
                      Config{"speed", tqm::Granularity::kTensor, true, 1000, 65535, true,
                             tqm::Profile::kSpeed}),
    [](const auto& info) { return std::string(info.param.name); });

// The longest Huffman code length in a coded huffman chunk, or 0.
int MaxHuffmanCodeLength(absl::Span<const uint8_t> payload) {
  if (payload.empty() || payload[0] != tqm::entropy_internal::kModeCoded) return 0;
  size_t pos = 1;
  uint32_t lengths[256];
  if (!tqm::entropy_internal::ReadSymbolValues(payload, &pos, 12, "huffman", lengths).ok())
    return -1;
  return static_cast<int>(*std::max_element(lengths, lengths + 256));
}

TEST(Writer, BalancedTakesElevenBitHuffmanCodesWithinItsSlack) {
  // Quantized Gaussian weights, lanes off (a 1.1 file): EncodeHuffman picks
  // 12-bit codes (they save more than 0.25 %); balanced and speed take 11-bit
  // ones (faster to decode, within their size rules); size keeps the
  // smallest encoding.
  tqm::MemorySource src;
  src.Add("model.layers.0.mlp.up_proj.weight", {512, 512},
          tqm_test::Gaussian(512 * 512, 5));
  tqm::PackOptions o;
  o.chunk_size = 65536;
  o.max_table_entries = 0;
  o.lanes = false;
  std::string files[3];
  const tqm::Profile profiles[3] = {tqm::Profile::kSize, tqm::Profile::kBalanced,
                                    tqm::Profile::kSpeed};
  for (int p = 0; p < 3; ++p) {
    o.profile = profiles[p];
    auto bytes = tqm::PackToString(src, o);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    files[p] = *bytes;
  }
  int auto_twelve = 0;
  for (int p = 1; p < 3; ++p) {
    auto r = tqm::Reader::FromBuffer(AsSpan(files[p]), "gaussian.tqm");
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->Verify().ok());
    const tqm::TensorInfo& t = (*r)->tensors()[0];
    ASSERT_EQ(t.chunks.size(), 4u);
    for (size_t c = 0; c < t.chunks.size(); ++c) {
      ASSERT_EQ(t.chunks[c].codec, tqm::format::kCodecHuffman) << "profile " << p;
      EXPECT_EQ(MaxHuffmanCodeLength((*r)->ChunkBytes(0, c)), 11) << "chunk " << c;
      std::vector<uint8_t> decoded(t.chunks[c].decoded_size);
      ASSERT_TRUE((*r)->DecodeChunk(0, c, absl::MakeSpan(decoded)).ok());
      std::string h;
      ASSERT_TRUE(tqm::EncodeHuffman(decoded, &h).ok());
      auto_twelve += MaxHuffmanCodeLength(AsSpan(h)) == 12;
    }
  }
  EXPECT_GT(auto_twelve, 0);  // the profiles chose differently from the default
  EXPECT_LT(files[0].size(), files[1].size());
  EXPECT_LE(files[1].size(), files[0].size() * 1.02);
}

TEST(Writer, BalancedAndSpeedTakeLanesWithinTheirRules) {
  // Quantized Gaussian weights: lanes is within 2 % of the smallest encoding
  // (measured ~0.7 % over Huffman) and the fastest codec that compresses, so
  // balanced and speed take it; size keeps the smallest. A file with lanes
  // chunks is version 1.2; without lanes (PackOptions::lanes = false) it is
  // 1.1 and its chunks decode to the same bytes.
  tqm::MemorySource src;
  src.Add("model.layers.0.mlp.up_proj.weight", {512, 512},
          tqm_test::Gaussian(512 * 512, 9));
  tqm::PackOptions o;
  o.chunk_size = 65536;
  o.max_table_entries = 0;
  std::vector<uint8_t> decoded[4];
  const tqm::Profile profiles[3] = {tqm::Profile::kSize, tqm::Profile::kBalanced,
                                    tqm::Profile::kSpeed};
  size_t sizes[4];
  for (int p = 0; p < 4; ++p) {
    o.profile = profiles[p == 3 ? 1 : p];
    o.lanes = p != 3;
    auto bytes = tqm::PackToString(src, o);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    sizes[p] = bytes->size();
    auto r = tqm::Reader::FromBuffer(AsSpan(*bytes), "gaussian.tqm");
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE((*r)->Verify().ok());
    const bool lanes = p == 1 || p == 2;
    EXPECT_EQ((*r)->header().minor, lanes ? 2 : 1) << "case " << p;
    const tqm::TensorInfo& t = (*r)->tensors()[0];
    for (size_t c = 0; c < t.chunks.size(); ++c) {
      EXPECT_EQ(t.chunks[c].codec == tqm::format::kCodecLanes, lanes) << "case " << p;
      std::vector<uint8_t> chunk(t.chunks[c].decoded_size);
      ASSERT_TRUE((*r)->DecodeChunk(0, c, absl::MakeSpan(chunk)).ok());
      decoded[p].insert(decoded[p].end(), chunk.begin(), chunk.end());
    }
  }
  for (int p = 1; p < 4; ++p) EXPECT_TRUE(decoded[p] == decoded[0]) << "case " << p;
  EXPECT_LT(sizes[0], sizes[1]);
  EXPECT_LE(sizes[1], sizes[0] * 1.02);
  EXPECT_LT(sizes[3], sizes[1]);  // Huffman without lanes: smaller, slower
}

TEST(Writer, NeverLargerThanStoredPlusIndex) {
  tqm::MemorySource src = tqm_test::SmallModel(3, 64, 128, 256, 11);
  tqm::PackStats with, without;
  tqm::PackOptions o;
  auto a = tqm::PackToString(src, o, &with);
  o.max_table_entries = 0;
  auto b = tqm::PackToString(src, o, &without);
  ASSERT_TRUE(a.ok() && b.ok());
  // The table is only kept when it makes the file smaller.
  EXPECT_LE(a->size(), b->size());
}

TEST(Writer, SameBytesWhateverTheThreadsAndBatches) {
  // Small tensors are encoded in batches of several tensors, one chunk a
  // thread or more; a large tensor is a batch of its own. Neither may change
  // a byte of the file, nor may the thread count.
  tqm::MemorySource src = tqm_test::SmallModel(4, 64, 128, 256, 5);
  src.Add("model.layers.9.big.weight", {512, 256}, tqm_test::Gaussian(512 * 256, 77));
  src.Add("model.layers.9.tail.weight", {8, 64}, tqm_test::Gaussian(8 * 64, 78));
  for (uint32_t chunk : {4096u, 65536u}) {
    for (tqm::Granularity g : {tqm::Granularity::kTensor, tqm::Granularity::kRow}) {
      SCOPED_TRACE(testing::Message() << "chunk " << chunk << " granularity "
                                      << static_cast<int>(g));
      tqm::PackOptions o;
      o.chunk_size = chunk;
      o.granularity = g;
      o.threads = 1;
      tqm::PackStats one_stats;
      auto one = tqm::PackToString(src, o, &one_stats);
      ASSERT_TRUE(one.ok()) << one.status();
      for (unsigned threads : {2u, 3u, 8u}) {
        o.threads = threads;
        tqm::PackStats st;
        auto n = tqm::PackToString(src, o, &st);
        ASSERT_TRUE(n.ok()) << n.status();
        EXPECT_TRUE(*n == *one) << threads << " threads";
        EXPECT_EQ(st.tensors, one_stats.tensors);
        EXPECT_EQ(st.int8_bytes, one_stats.int8_bytes);
      }
      auto r = tqm::Reader::FromBuffer(AsSpan(*one));
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_TRUE((*r)->Verify().ok());
      EXPECT_EQ((*r)->tensors().size(), src.tensors().size());
    }
  }
}

TEST(Writer, BoundedGroupCountingStillFindsFrequentGroups) {
  // Mostly four repeated groups among many unique ones.
  tqm::MemorySource src;
  std::mt19937 rng(3);
  std::vector<float> v(1 << 16);
  for (size_t i = 0; i < v.size(); i += 4) {
    bool common = rng() % 4 != 0;
    float c = static_cast<float>(rng() % 4);
    for (size_t k = 0; k < 4; ++k) v[i + k] = common ? c : static_cast<float>(rng() % 256);
  }
  v[0] = 0.0f;
  v[1] = 255.0f;
  src.Add("w", {256, 256}, v);
  tqm::PackOptions exact, bounded;
  exact.entropy = bounded.entropy = false;
  bounded.max_counted_groups = 64;
  tqm::PackStats se, sb;
  auto a = tqm::PackToString(src, exact, &se);
  auto b = tqm::PackToString(src, bounded, &sb);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(se.group_count_prunes, 0u);
  EXPECT_GT(sb.group_count_prunes, 0u);
  EXPECT_GT(sb.table_entries, 0u);
  EXPECT_GT(sb.chunks_seqtable, 0u);
  // Pruning only loses rare groups: the file is within 1% of the exact one.
  EXPECT_LE(b->size(), a->size() * 101 / 100);
  auto r = tqm::Reader::FromBuffer(AsSpan(*b));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)->Verify().ok());
}

TEST(Writer, RejectsBadInput) {
  tqm::MemorySource nan;
  nan.Add("bad.weight", {2, 2}, {1.0f, NAN, 0.0f, 2.0f});
  auto r = tqm::PackToString(nan, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bad.weight"), std::string::npos) << r.status();
  tqm::MemorySource bad_name;
  bad_name.Add(std::string("w\xff\xfe"), {2}, {1, 2});
  EXPECT_FALSE(tqm::PackToString(bad_name, {}).ok());
  tqm::MemorySource bad_meta;
  bad_meta.Add("w", {2}, {1, 2});
  bad_meta.AddMeta({"k", tqm::MetaValue::String("\xc3")});
  EXPECT_FALSE(tqm::PackToString(bad_meta, {}).ok());
  tqm::MemorySource dup;
  dup.Add("a", {2}, {1, 2});
  dup.Add("a", {2}, {1, 2});
  EXPECT_FALSE(tqm::PackToString(dup, {}).ok());
}

TEST(Stories260K, UnpackedValuesRequantizeBitForBit) {
  TQM_SKIP_WITHOUT_SHARED();
  auto src = tqm::OpenLlama2c(tqm_test::Stories260K());
  ASSERT_TRUE(src.ok()) << src.status();
  tqm::PackStats st;
  auto bytes = tqm::PackToString(**src, {}, &st);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto r = tqm::Reader::FromBuffer(AsSpan(*bytes), "stories260K.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Verify().ok());
  EXPECT_EQ(st.weights, 260032u);
  // Never larger than raw int8 plus index/metadata/table overhead.
  EXPECT_LE(st.file_bytes, st.int8_bytes + st.index_bytes + 4 * st.table_entries +
                               8192 /* metadata, header, directory, padding */);
  size_t quantized = 0;
  for (size_t i = 0; i < (*r)->tensors().size(); ++i) {
    const tqm::TensorInfo& t = (*r)->tensors()[i];
    std::vector<float> orig, back(t.numel);
    ASSERT_TRUE((*src)->Read(i, &orig).ok());
    ASSERT_TRUE((*r)->ReadFloat(i, absl::MakeSpan(back)).ok());
    if (!t.quantized()) {
      EXPECT_EQ(0, std::memcmp(orig.data(), back.data(), orig.size() * 4)) << t.name;
      EXPECT_EQ(t.dims.size(), 1u);
      continue;
    }
    ++quantized;
    // Re-quantizing the original gives the stored uint8 values exactly.
    std::vector<uint8_t> stored(t.numel), requant(t.numel);
    ASSERT_TRUE((*r)->DecodeTensor(i, absl::MakeSpan(stored)).ok());
    auto a = tqm::ChooseAffine(orig);
    ASSERT_TRUE(a.ok());
    tqm::QuantizeAffine(orig, *a, absl::MakeSpan(requant));
    EXPECT_EQ(stored, requant) << t.name;
    for (size_t j = 0; j < orig.size(); ++j) {
      ASSERT_LE(std::fabs(back[j] - orig[j]), t.affine[0].scale * 0.5f * 1.0001f) << t.name;
    }
  }
  EXPECT_EQ(quantized, 36u);  // embedding + 5 layers x 7 matrices
}

// Small file used for exhaustive truncation and flip checks.
std::string SmallFile() {
  tqm::MemorySource src = tqm_test::SmallModel(1, 16, 32, 24, 5);
  std::vector<float> rep(1024);
  for (size_t i = 0; i < rep.size(); ++i) rep[i] = static_cast<float>((i / 4) % 3);
  src.Add("rep.weight", {32, 32}, rep);
  tqm::PackOptions o;
  o.chunk_size = 512;
  auto bytes = tqm::PackToString(src, o);
  EXPECT_TRUE(bytes.ok());
  return *bytes;
}

TEST(Reader, RejectsEveryTruncation) {
  const std::string file = SmallFile();
  ASSERT_TRUE(tqm::Reader::FromBuffer(AsSpan(file)).ok());
  for (size_t len = 0; len < file.size(); ++len) {
    auto r = tqm::Reader::FromBuffer(AsSpan(file).subspan(0, len));
    ASSERT_FALSE(r.ok()) << "prefix of " << len << " bytes accepted";
  }
  std::string longer = file + std::string(1, '\0');
  EXPECT_FALSE(tqm::Reader::FromBuffer(AsSpan(longer)).ok());
}

TEST(Reader, EveryByteFlipIsDetected) {
  const std::string file = SmallFile();
  size_t tried = 0;
  for (size_t pos = 0; pos < file.size(); ++pos) {
    for (uint8_t mask : {0x01, 0x80}) {
      std::string bad = file;
      bad[pos] ^= mask;
      auto r = tqm::Reader::FromBuffer(AsSpan(bad));
      if (r.ok()) {
        ASSERT_FALSE((*r)->Verify().ok()) << "flip at " << pos << " not detected";
      }
      ++tried;
    }
  }
  EXPECT_EQ(tried, 2 * file.size());
}

}  // namespace
