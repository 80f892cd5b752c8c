// Format 1.3 tensor records (EXTENDED_TENSORS): verbatim (RAW) tensors of
// every dtype, 0-d and empty tensors, already-quantized tensors kept as they
// are, B-bit codes and group parameters, --keep; and that files without them
// keep their 1.2 bytes.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "base/checksum.h"
#include "test_util.h"
#include "tqm/format.h"
#include "tqm/loader.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace tqm {
namespace {

using tqm_test::AsSpan;
using tqm_test::Gaussian;

std::string Bytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

std::unique_ptr<Reader> Open(const std::string& file) {
  auto r = Reader::FromBuffer(AsSpan(file), "ext.tqm");
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

std::string Decoded(const Reader& r, int t) {
  std::string out(r.tensors()[t].byte_size, '\0');
  EXPECT_TRUE(
      r.DecodeTensor(t, absl::MakeSpan(reinterpret_cast<uint8_t*>(out.data()), out.size()))
          .ok());
  return out;
}

TEST(Extended, PlainFilesKeepVersion12AndNoFlag) {
  MemorySource src;
  src.Add("model.layers.0.w", {64, 64}, Gaussian(64 * 64, 1));
  src.Add("model.norm.weight", {64}, Gaussian(64, 2));
  auto file = PackToString(src, PackOptions());
  ASSERT_TRUE(file.ok());
  auto r = Open(*file);
  ASSERT_NE(r, nullptr);
  EXPECT_LE(r->header().minor, 2);
  EXPECT_EQ(r->header().flags, 0u);
  EXPECT_EQ(r->tensors()[0].bits, 8);
  EXPECT_EQ(r->tensors()[1].bits, 0);
}

TEST(Extended, RawTensorsOfEveryDTypeComeBackBitExact) {
  struct Case {
    format::SourceDType dtype;
    std::vector<uint64_t> dims;
  };
  const std::vector<Case> cases = {
      {format::kDTypeF64, {3, 5}},  {format::kDTypeI8, {7}},     {format::kDTypeI16, {2, 3}},
      {format::kDTypeI32, {4}},     {format::kDTypeI64, {1, 9}}, {format::kDTypeU8, {10}},
      {format::kDTypeU16, {6}},     {format::kDTypeU32, {2, 2}}, {format::kDTypeU64, {3}},
      {format::kDTypeF16, {4, 4}},  {format::kDTypeBF16, {8}},
      {format::kDTypeI64, {}},      // 0-d scalar
      {format::kDTypeF64, {0}},     // empty
      {format::kDTypeI64, {2, 0, 3}},  // empty, three dims
  };
  MemorySource src;
  std::vector<std::string> want;
  for (size_t k = 0; k < cases.size(); ++k) {
    uint64_t n = 1;
    for (uint64_t d : cases[k].dims) n *= d;
    want.push_back(Bytes(n * DTypeSize(cases[k].dtype), k + 1));
    src.AddRaw("buffer." + std::to_string(k), cases[k].dims, cases[k].dtype, want.back());
  }
  std::string bools = {0, 1, 1, 0, 1};
  src.AddRaw("mask", {5}, format::kDTypeBool, bools);
  want.push_back(bools);
  src.Add("model.layers.0.w", {32, 32}, Gaussian(32 * 32, 3));
  PackStats st;
  auto file = PackToString(src, PackOptions(), &st);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(st.raw_tensors, cases.size() + 1);
  auto r = Open(*file);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->header().minor, 3);
  EXPECT_EQ(r->header().flags, format::kHeaderFlagExtendedTensors);
  for (size_t k = 0; k < want.size(); ++k) {
    const TensorInfo& t = r->tensors()[k];
    SCOPED_TRACE(t.name);
    EXPECT_TRUE(t.raw());
    EXPECT_FALSE(t.quantized());
    EXPECT_EQ(t.bits, 0);
    EXPECT_EQ(t.byte_size, want[k].size());
    if (k < cases.size()) {
      EXPECT_EQ(t.source_dtype, cases[k].dtype);
      EXPECT_EQ(t.dims, cases[k].dims);
    }
    EXPECT_EQ(Decoded(*r, k), want[k]);
  }
  // The quantized tensor in an extended file records its 8 bits.
  EXPECT_EQ(r->tensors().back().bits, 8);
  EXPECT_TRUE(r->Verify().ok());
  // Conversions to float: exact for small integers and bool.
  const int mask = r->FindTensor("mask");
  std::vector<float> f(5);
  ASSERT_TRUE(r->ReadFloat(mask, absl::MakeSpan(f)).ok());
  EXPECT_EQ(f, (std::vector<float>{0, 1, 1, 0, 1}));
}

TEST(Extended, ZeroDAndEmptyFloat32Tensors) {
  MemorySource src;
  src.Add("scale", {}, {2.5f});
  src.Add("nothing", {0, 4}, {});
  auto file = PackToString(src, PackOptions());
  ASSERT_TRUE(file.ok()) << file.status();
  auto r = Open(*file);
  ASSERT_NE(r, nullptr);
  const TensorInfo& s = r->tensors()[0];
  EXPECT_EQ(s.storage, format::kStorageF32);
  EXPECT_TRUE(s.dims.empty());
  EXPECT_EQ(s.numel, 1u);
  float v = 0;
  ASSERT_TRUE(r->ReadFloat(0, absl::MakeSpan(&v, 1)).ok());
  EXPECT_EQ(v, 2.5f);
  const TensorInfo& e = r->tensors()[1];
  EXPECT_EQ(e.numel, 0u);
  EXPECT_TRUE(e.chunks.empty());
  EXPECT_TRUE(r->ReadFloat(1, absl::Span<float>()).ok());
  EXPECT_TRUE(r->Verify().ok());
}

TEST(Extended, KeepStoresMatchedTensorsInTheirSourceDType) {
  MemorySource src;
  std::vector<float> w = Gaussian(16 * 16, 4);
  src.Add("model.layers.0.mlp.gate.weight", {16, 16}, w);
  src.Add("model.layers.0.mlp.up.weight", {16, 16}, w);
  PackOptions o;
  o.keep = [](const std::string& n) { return n.find("gate") != std::string::npos; };
  auto file = PackToString(src, o);
  ASSERT_TRUE(file.ok());
  auto r = Open(*file);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->tensors()[0].storage, format::kStorageF32);
  EXPECT_TRUE(r->tensors()[1].quantized());
  std::vector<float> back(w.size());
  ASSERT_TRUE(r->ReadFloat(0, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, w);
  // A kept float32 tensor needs no 1.3 feature.
  EXPECT_EQ(r->header().flags, 0u);
}

TEST(Extended, QuantizedSourceTensorsAreStoredWithoutRequantizing) {
  // Codes and parameters a quantizer would never produce from floats (a
  // code that is not the rounding of any value in range): they must come
  // back unchanged.
  QuantizedTensor row;
  row.storage = format::kStorageU8Row;
  row.codes.resize(4 * 8);
  for (size_t i = 0; i < row.codes.size(); ++i) row.codes[i] = (i * 37) % 256;
  for (int k = 0; k < 4; ++k) row.params.push_back({0.01f * (k + 1), 100.0f + k});
  QuantizedTensor group;
  group.storage = format::kStorageU8Group;
  group.group_size = 32;
  group.bits = 8;
  group.codes.resize(3 * 80);
  for (size_t i = 0; i < group.codes.size(); ++i) group.codes[i] = (i * 11) % 256;
  for (int k = 0; k < 3 * 3; ++k) group.params.push_back({0.5f / (k + 1), 128.0f});
  QuantizedTensor four;
  four.storage = format::kStorageU8Tensor;
  four.bits = 4;
  four.codes.resize(64);
  for (size_t i = 0; i < four.codes.size(); ++i) four.codes[i] = i % 16;
  four.params.push_back({0.25f, 8.0f});
  MemorySource src;
  src.AddQuantized("row", {4, 8}, row);
  src.AddQuantized("group", {3, 80}, group);
  src.AddQuantized("four", {8, 8}, four);
  auto file = PackToString(src, PackOptions());
  ASSERT_TRUE(file.ok()) << file.status();
  auto r = Open(*file);
  ASSERT_NE(r, nullptr);
  const QuantizedTensor* want[] = {&row, &group, &four};
  for (int t = 0; t < 3; ++t) {
    const TensorInfo& ti = r->tensors()[t];
    SCOPED_TRACE(ti.name);
    EXPECT_EQ(ti.storage, want[t]->storage);
    EXPECT_EQ(ti.bits, want[t]->bits);
    ASSERT_EQ(ti.affine.size(), want[t]->params.size());
    for (size_t k = 0; k < ti.affine.size(); ++k) {
      EXPECT_EQ(ti.affine[k].scale, want[t]->params[k].scale);
      EXPECT_EQ(ti.affine[k].zero, want[t]->params[k].zero);
    }
    const std::string codes = Decoded(*r, t);
    EXPECT_EQ(std::vector<uint8_t>(codes.begin(), codes.end()), want[t]->codes);
  }
  EXPECT_EQ(r->tensors()[1].group_size, 32u);
  // Group g of row r covers columns [32g, 32g + 32), the last one 16 wide.
  std::vector<float> f(3 * 80);
  ASSERT_TRUE(r->ReadFloat(1, absl::MakeSpan(f)).ok());
  for (size_t e = 0; e < f.size(); ++e) {
    const size_t k = e / 80 * 3 + e % 80 / 32;
    EXPECT_EQ(f[e], group.params[k].scale * (static_cast<float>(group.codes[e]) - 128.0f));
  }
}

TEST(Extended, QuantizedSourceTensorsAreChecked) {
  QuantizedTensor q;
  q.storage = format::kStorageU8Tensor;
  q.bits = 4;
  q.codes = {1, 2, 16, 3};  // 16 does not fit 4 bits
  q.params = {{1.0f, 0.0f}};
  MemorySource src;
  src.AddQuantized("t", {4}, q);
  auto file = PackToString(src, PackOptions());
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("exceeds 4 bits"), std::string::npos)
      << file.status();
  MemorySource src2;
  q.codes = {1, 2, 3, 4};
  q.params = {{0.0f, 0.0f}};
  src2.AddQuantized("t", {4}, q);
  file = PackToString(src2, PackOptions());
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("tensor 't'"), std::string::npos) << file.status();
}

TEST(Extended, BitsAndGroupsQuantizeWithinTheirRange) {
  const uint64_t rows = 24, cols = 200;
  std::vector<float> w = Gaussian(rows * cols, 5);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (uint32_t group : {0u, 32u, 64u, 128u}) {
      SCOPED_TRACE(testing::Message() << bits << " bits, group " << group);
      MemorySource src;
      src.Add("model.layers.0.w", {rows, cols}, w);
      PackOptions o;
      o.bits = bits;
      if (group) {
        o.granularity = Granularity::kGroup;
        o.group_size = group;
      } else {
        o.granularity = Granularity::kRow;
      }
      auto file = PackToString(src, o);
      ASSERT_TRUE(file.ok()) << file.status();
      auto r = Open(*file);
      ASSERT_NE(r, nullptr);
      const TensorInfo& t = r->tensors()[0];
      EXPECT_EQ(t.bits, bits);
      const uint64_t per_row = group ? (cols + group - 1) / group : 1;
      EXPECT_EQ(t.affine.size(), rows * per_row);
      EXPECT_EQ(r->header().flags != 0, bits != 8 || group != 0);
      const std::string codes = Decoded(*r, 0);
      std::vector<float> f(w.size());
      ASSERT_TRUE(r->ReadFloat(0, absl::MakeSpan(f)).ok());
      for (size_t e = 0; e < w.size(); ++e) {
        ASSERT_LT(static_cast<uint8_t>(codes[e]), 1u << bits);
        // Round to nearest: within half a step of the pair's scale.
        const Affine& a = t.affine[t.ParamIndex(e)];
        ASSERT_LE(std::fabs(f[e] - w[e]), a.scale * 0.5001f) << e;
      }
      EXPECT_TRUE(r->Verify().ok());
      // The loader dequantizes the same values.
      ModelOptions mo;
      mo.dequantize = true;
      auto m = Model::FromReader(Open(*file), mo);
      ASSERT_TRUE(m.ok()) << m.status();
      auto h = (*m)->Layer(0);
      ASSERT_TRUE(h.ok()) << h.status();
      const TensorView& v = h->tensors()[0];
      ASSERT_EQ(v.f32.size(), f.size());
      EXPECT_TRUE(std::equal(f.begin(), f.end(), v.f32.begin()));
    }
  }
}

TEST(Extended, LowerBitWidthsCostLessThanEightBits) {
  std::vector<float> w = Gaussian(256 * 256, 6);
  uint64_t last = UINT64_MAX;
  for (int bits : {8, 6, 4, 3, 2}) {
    MemorySource src;
    src.Add("model.layers.0.w", {256, 256}, w);
    PackOptions o;
    o.bits = bits;
    o.granularity = Granularity::kRow;
    PackStats st;
    ASSERT_TRUE(PackToString(src, o, &st).ok());
    EXPECT_LT(st.file_bytes, last) << bits;
    last = st.file_bytes;
  }
}

TEST(Extended, BoolBytesMustBeZeroOrOne) {
  MemorySource src;
  src.AddRaw("mask", {3}, format::kDTypeBool, std::string("\x01\x02\x00", 3));
  auto file = PackToString(src, PackOptions());
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("BOOL element 1 is 2"), std::string::npos)
      << file.status();
}

// The lazy loader groups tensors by the layer number the writer derives
// from each common naming scheme.
TEST(Extended, LoaderGroupsCommonNamingSchemes) {
  const std::vector<std::vector<std::string>> schemes = {
      {"model.layers.%d.mlp.up_proj.weight"},
      {"model.decoder.layers.%d.fc1.weight"},
      {"transformer.h.%d.mlp.c_fc.weight"},
      {"encoder.layer.%d.intermediate.dense.weight"},
      {"layers.%d.feed_forward.w1.weight"},
      {"blk.%d.ffn_up.weight"},
  };
  for (const auto& scheme : schemes) {
    SCOPED_TRACE(scheme[0]);
    MemorySource src;
    for (int l = 0; l < 3; ++l) {
      char name[128];
      std::snprintf(name, sizeof name, scheme[0].c_str(), l);
      src.Add(name, {8, 8}, Gaussian(64, l + 1));
    }
    src.Add("embeddings.weight", {4, 8}, Gaussian(32, 9));
    auto file = PackToString(src, PackOptions());
    ASSERT_TRUE(file.ok());
    auto m = Model::FromReader(Open(*file));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->num_layers(), 3);
    for (int l = 0; l < 3; ++l) EXPECT_EQ((*m)->LayerTensors(l).size(), 1u) << l;
    EXPECT_EQ((*m)->LayerTensors(format::kNoLayer).size(), 1u);
  }
}

TEST(Extended, ReaderRejectsExtendedValuesWithoutTheFlag) {
  MemorySource src;
  src.AddRaw("ids", {4}, format::kDTypeI32, Bytes(16, 9));
  auto file = PackToString(src, PackOptions());
  ASSERT_TRUE(file.ok());
  // Clear the flag and re-seal the header checksum: the RAW storage and
  // dtype are then invalid values.
  std::string f = *file;
  std::memset(&f[12], 0, 4);
  const uint64_t sum = Checksum(AsSpan(f).subspan(0, format::kHeaderChecksummedSize));
  std::memcpy(&f[56], &sum, 8);
  auto r = Reader::FromBuffer(AsSpan(f), "noflag.tqm");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
}

}  // namespace
}  // namespace tqm
