// PackOptions::target (tqm-pack --target): the CPU class whose decode speeds
// order the codecs. A writer choice only: every target's file decodes to the
// same codes, and portable files hold no lanes chunks.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.h"
#include "tqm/format.h"
#include "tqm/import.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

namespace fs = std::filesystem;

absl::Span<const uint8_t> AsSpan(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

struct Packed {
  std::string bytes;
  size_t chunks = 0, lanes = 0;
  std::vector<uint8_t> codes;  // every quantized tensor's decoded chunks, in order
};

// Counts the chunks (all, lanes) of `bytes` and decodes them all.
void Examine(const std::string& bytes, Packed* p) {
  auto r = tqm::Reader::FromBuffer(AsSpan(bytes), "target.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Verify().ok());
  for (size_t t = 0; t < (*r)->tensors().size(); ++t) {
    const tqm::TensorInfo& ti = (*r)->tensors()[t];
    for (size_t c = 0; c < ti.chunks.size(); ++c) {
      ++p->chunks;
      p->lanes += ti.chunks[c].codec == tqm::format::kCodecLanes;
      std::vector<uint8_t> chunk(ti.chunks[c].decoded_size);
      ASSERT_TRUE((*r)->DecodeChunk(t, c, absl::MakeSpan(chunk)).ok());
      p->codes.insert(p->codes.end(), chunk.begin(), chunk.end());
    }
  }
}

Packed PackFor(const tqm::MemorySource& src, tqm::DecodeTarget target,
               tqm::Profile profile) {
  tqm::PackOptions o;
  o.chunk_size = 65536;
  o.max_table_entries = 0;
  o.profile = profile;
  o.target = target;
  tqm::MemorySource copy = src;
  auto bytes = tqm::PackToString(copy, o);
  Packed p;
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return p;
  p.bytes = *bytes;
  Examine(p.bytes, &p);
  return p;
}

tqm::MemorySource GaussianModel() {
  tqm::MemorySource src;
  src.Add("model.layers.0.mlp.up_proj.weight", {512, 512},
          tqm_test::Gaussian(512 * 512, 9));
  src.Add("model.layers.0.mlp.down_proj.weight", {512, 512},
          tqm_test::Gaussian(512 * 512, 10));
  return src;
}

TEST(Target, PortableWritesNoLanesChunksAndDecodesIdentically) {
  // On quantized Gaussian weights the default (AVX-512) order takes lanes,
  // within 2 % of Huffman; the portable target must not.
  const tqm::MemorySource src = GaussianModel();
  for (tqm::Profile profile : {tqm::Profile::kBalanced, tqm::Profile::kSpeed}) {
    const Packed def = PackFor(src, tqm::DecodeTarget::kAvx512, profile);
    const Packed portable = PackFor(src, tqm::DecodeTarget::kPortable, profile);
    ASSERT_GT(def.chunks, 0u);
    EXPECT_EQ(def.lanes, def.chunks) << "the default no longer takes lanes here";
    EXPECT_EQ(portable.chunks, def.chunks);
    EXPECT_EQ(portable.lanes, 0u);
    EXPECT_TRUE(portable.codes == def.codes);
    // No lanes chunk: the file is format 1.1, readable by older readers.
    auto r = tqm::Reader::FromBuffer(AsSpan(portable.bytes), "portable.tqm");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ((*r)->header().minor, 1);
  }
}

TEST(Target, Avx2PrefersHuffmanWhenItIsSmaller) {
  // Huffman is ~0.7 % smaller than lanes on these weights: the AVX2 order,
  // where the two decode at about the same speed, keeps the smaller one.
  const tqm::MemorySource src = GaussianModel();
  const Packed def = PackFor(src, tqm::DecodeTarget::kAvx512, tqm::Profile::kBalanced);
  const Packed avx2 = PackFor(src, tqm::DecodeTarget::kAvx2, tqm::Profile::kBalanced);
  EXPECT_EQ(avx2.lanes, 0u);
  EXPECT_LT(avx2.bytes.size(), def.bytes.size());
  EXPECT_TRUE(avx2.codes == def.codes);
}

TEST(Target, SizeProfileIgnoresTheTarget) {
  // The smallest encoding does not depend on decode speed.
  const tqm::MemorySource src = GaussianModel();
  const Packed def = PackFor(src, tqm::DecodeTarget::kAvx512, tqm::Profile::kSize);
  const Packed avx2 = PackFor(src, tqm::DecodeTarget::kAvx2, tqm::Profile::kSize);
  EXPECT_EQ(def.bytes, avx2.bytes);
}

TEST(Target, PackCommandLine) {
  for (const char* t : {"tqm-pack", "tqm-genmodel", "tqm-unpack"}) {
    ASSERT_TRUE(tqm_test::Exists(tqm_test::Bin(t)))
        << tqm_test::Bin(t) << " is not built";
  }
  const fs::path dir =
      fs::temp_directory_path() / ("tqm_target_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string model = (dir / "gen.bin").string();
  ASSERT_EQ(
      tqm_test::RunCommand(tqm_test::Bin("tqm-genmodel") + " -q -o " + model).exit_code,
      0);
  std::string codes[2];
  Packed packed[2];
  const char* targets[2] = {"avx512", "portable"};
  for (int i = 0; i < 2; ++i) {
    const std::string tqm = (dir / (std::string(targets[i]) + ".tqm")).string();
    const std::string u8 = (dir / (std::string(targets[i]) + ".safetensors")).string();
    ASSERT_EQ(tqm_test::RunCommand(tqm_test::Bin("tqm-pack") + " -q --target " +
                                   targets[i] + " " + model + " -o " + tqm)
                  .exit_code,
              0);
    ASSERT_EQ(tqm_test::RunCommand(tqm_test::Bin("tqm-unpack") + " -q --dtype u8 " + tqm +
                                   " -o " + u8)
                  .exit_code,
              0);
    std::ifstream f(tqm, std::ios::binary), g(u8, std::ios::binary);
    std::stringstream fs_, gs;
    fs_ << f.rdbuf();
    gs << g.rdbuf();
    Examine(fs_.str(), &packed[i]);
    codes[i] = gs.str();
  }
  EXPECT_GT(packed[0].lanes, 0u);
  EXPECT_EQ(packed[1].lanes, 0u);
  EXPECT_EQ(codes[0], codes[1]);  // the same u8 export, byte for byte
  EXPECT_NE(tqm_test::RunCommand(tqm_test::Bin("tqm-pack") + " -q --target neon " +
                                 model + " -o " + (dir / "x.tqm").string())
                .exit_code,
            0);
  fs::remove_all(dir);
}

}  // namespace
