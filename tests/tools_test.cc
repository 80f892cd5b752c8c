// The command-line tools as a user runs them: tqm-pack, tqm-inspect
// (--verify, --json, escaping), tqm-unpack, exit codes and atomic output.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "test_util.h"
#include "tqm/import.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

namespace fs = std::filesystem;

struct CmdResult {
  int exit_code;
  std::string out;
};

CmdResult Sh(const std::string& cmd) {
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  CmdResult r{-1, ""};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

std::string Bin(const std::string& tool) { return std::string(TQM_BIN_DIR) + "/" + tool; }

class Tools : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* t : {"tqm-pack", "tqm-inspect", "tqm-unpack", "tqm-genmodel"}) {
      ASSERT_TRUE(tqm_test::Exists(Bin(t))) << Bin(t) << " is not built";
    }
    dir_ = fs::temp_directory_path() / ("tqm_tools_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
    // The real model when ../shared is present, a generated one otherwise.
    model_ = tqm_test::Stories260K();
    if (!tqm_test::Exists(model_)) {
      model_ = (dir_ / "gen.bin").string();
      ASSERT_EQ(Sh(Bin("tqm-genmodel") + " -o " + model_).exit_code, 0);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) { return (dir_ / name).string(); }

  fs::path dir_;
  std::string model_;
};

TEST_F(Tools, PackInspectVerifyUnpack) {
  const std::string tqm = Path("m.tqm");
  CmdResult pack = Sh(Bin("tqm-pack") + " " + model_ + " -o " + tqm);
  ASSERT_EQ(pack.exit_code, 0) << pack.out;
  for (const char* field : {"tensors", "int8 size", "tqm size", "ratio", "bits per weight",
                            "table", "escape rate", "time"}) {
    EXPECT_NE(pack.out.find(field), std::string::npos) << "summary lacks " << field;
  }
  CmdResult inspect = Sh(Bin("tqm-inspect") + " --verify " + tqm);
  EXPECT_EQ(inspect.exit_code, 0) << inspect.out;
  EXPECT_NE(inspect.out.find("model.layers.4.mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(inspect.out.find("verify:    OK"), std::string::npos);
  CmdResult json = Sh(Bin("tqm-inspect") + " --json --verify " + tqm);
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_EQ(json.out.front(), '{');
  EXPECT_NE(json.out.find("\"verify\":{\"ok\":true"), std::string::npos);
  EXPECT_NE(json.out.find("\"bits_per_weight\""), std::string::npos);

  // Unpack to float32 and u8 safetensors; both read back to the same values.
  ASSERT_EQ(Sh(Bin("tqm-unpack") + " " + tqm + " -o " + Path("f.safetensors")).exit_code, 0);
  ASSERT_EQ(
      Sh(Bin("tqm-unpack") + " --dtype u8 " + tqm + " -o " + Path("u.safetensors")).exit_code,
      0);
  auto r = tqm::Reader::Open(tqm);
  ASSERT_TRUE(r.ok()) << r.status();
  auto f32 = tqm::OpenSafetensors(Path("f.safetensors"));
  ASSERT_TRUE(f32.ok()) << f32.status();
  ASSERT_EQ((*f32)->tensors().size(), (*r)->tensors().size());
  for (size_t i = 0; i < (*r)->tensors().size(); ++i) {
    const tqm::TensorInfo& t = (*r)->tensors()[i];
    std::vector<float> want(t.numel), got;
    ASSERT_TRUE((*r)->ReadFloat(i, absl::MakeSpan(want)).ok());
    size_t j = 0;
    while (j < (*f32)->tensors().size() && (*f32)->tensors()[j].name != t.name) ++j;
    ASSERT_LT(j, (*f32)->tensors().size()) << t.name;
    ASSERT_TRUE((*f32)->Read(j, &got).ok());
    EXPECT_EQ(got, want) << t.name;
  }
  EXPECT_GT(fs::file_size(Path("f.safetensors")), fs::file_size(Path("u.safetensors")));
}

TEST_F(Tools, VerifyFailsAfterAnySingleByteFlip) {
  const std::string tqm = Path("m.tqm");
  ASSERT_EQ(Sh(Bin("tqm-pack") + " -q " + model_ + " -o " + tqm).exit_code, 0);
  const std::string good = tqm_test::ReadFile(tqm);
  // A deterministic sample spread over the whole file, plus the structure
  // boundaries: first and last bytes.
  std::vector<size_t> positions = {0, 8, 16, 56, good.size() - 1, good.size() / 2};
  for (size_t k = 1; k <= 40; ++k) positions.push_back(k * 7919 * 13 % good.size());
  for (size_t pos : positions) {
    std::string bad = good;
    bad[pos] ^= 0x10;
    tqm_test::WriteFile(Path("bad.tqm"), bad);
    CmdResult v = Sh(Bin("tqm-inspect") + " --verify -q " + Path("bad.tqm"));
    EXPECT_NE(v.exit_code, 0) << "flip at " << pos << " passed --verify";
    EXPECT_LT(v.exit_code, 128) << "crash at " << pos << ": " << v.out;
    EXPECT_NE(v.out.find("bad.tqm"), std::string::npos) << "error does not name the file";
  }
  // Truncation and a missing file: clear errors, non-zero exits.
  tqm_test::WriteFile(Path("short.tqm"), good.substr(0, good.size() - 1));
  CmdResult t = Sh(Bin("tqm-inspect") + " --verify " + Path("short.tqm"));
  EXPECT_EQ(t.exit_code, 1);
  EXPECT_NE(t.out.find("truncated"), std::string::npos) << t.out;
  EXPECT_EQ(Sh(Bin("tqm-inspect") + " " + Path("missing.tqm")).exit_code, 1);
}

TEST_F(Tools, FailedPackLeavesDestinationUntouched) {
  const std::string tqm = Path("keep.tqm");
  tqm_test::WriteFile(tqm, "previous contents");
  tqm_test::WriteFile(Path("garbage.bin"), std::string(100, '\x07'));
  CmdResult pack = Sh(Bin("tqm-pack") + " " + Path("garbage.bin") + " -o " + tqm);
  EXPECT_NE(pack.exit_code, 0);
  EXPECT_NE(pack.out.find("garbage.bin"), std::string::npos) << pack.out;
  EXPECT_EQ(tqm_test::ReadFile(tqm), "previous contents");
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos)
        << "temporary file left behind: " << e.path();
  }
}

TEST_F(Tools, InspectEscapesControlCharactersInNames) {
  tqm::MemorySource src;
  src.Add("evil\x1b[31mname\n.weight", {2, 2}, {1, 2, 3, 4});
  ASSERT_TRUE(tqm::Pack(src, Path("evil.tqm"), {}).ok());
  CmdResult inspect = Sh(Bin("tqm-inspect") + " " + Path("evil.tqm"));
  EXPECT_EQ(inspect.exit_code, 0);
  EXPECT_EQ(inspect.out.find('\x1b'), std::string::npos);
  EXPECT_NE(inspect.out.find("evil\\x1b[31mname\\x0a.weight"), std::string::npos)
      << inspect.out;
  CmdResult json = Sh(Bin("tqm-inspect") + " --json " + Path("evil.tqm"));
  EXPECT_NE(json.out.find("evil\\u001b[31mname\\u000a.weight"), std::string::npos);
}

TEST_F(Tools, HelpTeaches) {
  for (const char* t : {"tqm-pack", "tqm-inspect", "tqm-unpack"}) {
    CmdResult h = Sh(Bin(t) + " --help");
    EXPECT_EQ(h.exit_code, 0);
    EXPECT_NE(h.out.find("Example"), std::string::npos) << t;
  }
  EXPECT_NE(Sh(Bin("tqm-pack")).exit_code, 0);  // missing arguments
}

}  // namespace
