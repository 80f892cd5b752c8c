// The command-line tools as a user runs them: tqm-pack, tqm-inspect
// (--verify, --json, escaping), tqm-unpack, exit codes and atomic output,
// and the contract every tool shares: no output over an input, all outputs
// of a command or none, exit status 0/1/2, --version, -q and --json.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <regex>

#include "absl/strings/str_format.h"
#include "base/json.h"
#include "test_util.h"
#include "tqm/format.h"
#include "tqm/import.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

namespace fs = std::filesystem;

using tqm_test::Bin;
using tqm_test::CmdResult;

// stdout and stderr together.
CmdResult Sh(const std::string& cmd) { return tqm_test::RunCommand(cmd + " 2>&1"); }

// stdout only (stderr discarded), for output that must parse.
CmdResult ShStdout(const std::string& cmd) { return Sh(cmd + " 2>/dev/null"); }

// Every tool with its command line; tqm-run is built from examples/runtime/main.cc.
const char* const kAllTools[] = {"tqm-pack",     "tqm-inspect", "tqm-unpack",
                                 "tqm-genmodel", "tqm-bench",   "tqm-codec-bench",
                                 "tqm-runbench", "tqm-run",     "tqm-eval"};

// No stray temporary file (".NAME.tmp.XXXXXX") in `dir`.
void ExpectNoTemporaries(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos)
        << "temporary file left behind: " << e.path();
  }
}

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

// A generated model with a tokenizer (independent of ../shared), packed
// with and without the tokenizer embedded.
class ToolsContract : public Tools {
 protected:
  void SetUp() override {
    Tools::SetUp();
    bin_ = Path("gen.bin");
    tok_ = Path("gen_tok.bin");
    CmdResult g = Sh(Bin("tqm-genmodel") + " -q -o " + bin_ + " --tokenizer-out " + tok_);
    ASSERT_EQ(g.exit_code, 0) << g.out;
    tqm_ = Path("gen.tqm");
    CmdResult p = Sh(Bin("tqm-pack") + " -q " + bin_ + " --tokenizer " + tok_ + " -o " + tqm_);
    ASSERT_EQ(p.exit_code, 0) << p.out;
  }
  std::string bin_, tok_, tqm_;
};

TEST_F(ToolsContract, PackRefusesToWriteOverAnyInput) {
  const std::string bin_bytes = tqm_test::ReadFile(bin_);
  const std::string tok_bytes = tqm_test::ReadFile(tok_);
  fs::create_symlink(bin_, Path("link.bin"));
  fs::create_hard_link(bin_, Path("hard.bin"));
  fs::create_symlink(tok_, Path("link_tok.bin"));
  for (const std::string& out : {bin_, Path("link.bin"), Path("hard.bin"), tok_,
                                 Path("link_tok.bin"), Path("./gen.bin")}) {
    CmdResult r = Sh(Bin("tqm-pack") + " -q " + bin_ + " --tokenizer " + tok_ + " -o " + out);
    EXPECT_EQ(r.exit_code, 1) << out << ": " << r.out;
    EXPECT_NE(r.out.find("refusing to write " + out), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("the input"), std::string::npos) << r.out;
  }
  EXPECT_EQ(tqm_test::ReadFile(bin_), bin_bytes);
  EXPECT_EQ(tqm_test::ReadFile(tok_), tok_bytes);
  EXPECT_TRUE(fs::is_symlink(Path("link.bin")));
  EXPECT_EQ(fs::hard_link_count(bin_), 2u);
  ExpectNoTemporaries(dir_);
  // A new name beside the input is fine.
  EXPECT_EQ(Sh(Bin("tqm-pack") + " -q " + bin_ + " -o " + Path("new.tqm")).exit_code, 0);
}

TEST_F(ToolsContract, PackRefusesToWriteIntoItsInputDirectory) {
  // A directory input counts every regular file directly in it, and the
  // directory itself.
  const fs::path model_dir = dir_ / "hf";
  fs::create_directories(model_dir);
  const std::string shard = (model_dir / "model.safetensors").string();
  ASSERT_EQ(Sh(Bin("tqm-unpack") + " -q " + tqm_ + " -o " + shard).exit_code, 0);
  tqm_test::WriteFile((model_dir / "config.json").string(), "{}");
  const std::string shard_bytes = tqm_test::ReadFile(shard);
  for (const std::string& out :
       {shard, (model_dir / "config.json").string(), model_dir.string()}) {
    CmdResult r = Sh(Bin("tqm-pack") + " -q " + model_dir.string() + " -o " + out);
    EXPECT_EQ(r.exit_code, 1) << out << ": " << r.out;
    EXPECT_NE(r.out.find("refusing to write " + out), std::string::npos) << r.out;
  }
  EXPECT_EQ(tqm_test::ReadFile(shard), shard_bytes);
  EXPECT_EQ(tqm_test::ReadFile((model_dir / "config.json").string()), "{}");
}

TEST_F(ToolsContract, UnpackRefusesToWriteOverItsInput) {
  const std::string tqm_bytes = tqm_test::ReadFile(tqm_);
  fs::create_symlink(tqm_, Path("link.tqm"));
  fs::create_hard_link(tqm_, Path("hard.tqm"));
  for (const std::string& out : {tqm_, Path("link.tqm"), Path("hard.tqm")}) {
    for (const std::string& args :
         {" -o " + out, " --format llama2c -o " + Path("x.bin") + " --tokenizer-out " + out}) {
      CmdResult r = Sh(Bin("tqm-unpack") + " -q " + tqm_ + args);
      EXPECT_EQ(r.exit_code, 1) << args << ": " << r.out;
      EXPECT_NE(r.out.find("refusing to write " + out), std::string::npos) << r.out;
    }
  }
  EXPECT_EQ(tqm_test::ReadFile(tqm_), tqm_bytes);
  EXPECT_FALSE(tqm_test::Exists(Path("x.bin")));
  ExpectNoTemporaries(dir_);
  // Two outputs naming one file are refused too.
  CmdResult same = Sh(Bin("tqm-unpack") + " -q --format llama2c " + tqm_ + " -o " +
                      Path("a.bin") + " --tokenizer-out " + dir_.string() + "/./a.bin");
  EXPECT_EQ(same.exit_code, 1) << same.out;
  EXPECT_FALSE(tqm_test::Exists(Path("a.bin")));
}

TEST_F(ToolsContract, UnpackOutputsAppearTogetherOrNotAtAll) {
  const std::string out = Path("out.bin");
  // The tokenizer's directory does not exist: no checkpoint appears.
  CmdResult r = Sh(Bin("tqm-unpack") + " --format llama2c " + tqm_ + " -o " + out +
                   " --tokenizer-out " + Path("missing/dir/t.bin"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("missing/dir/t.bin"), std::string::npos) << r.out;
  EXPECT_FALSE(tqm_test::Exists(out));
  // A file already at the checkpoint's path stays as it was.
  tqm_test::WriteFile(out, "previous checkpoint");
  r = Sh(Bin("tqm-unpack") + " --format llama2c " + tqm_ + " -o " + out + " --tokenizer-out " +
         Path("missing/dir/t.bin"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(tqm_test::ReadFile(out), "previous checkpoint");
  // The checkpoint is written completely before the tokenizer fails (the
  // file has none): still neither appears.
  const std::string bare = Path("bare.tqm");
  ASSERT_EQ(Sh(Bin("tqm-pack") + " -q " + bin_ + " -o " + bare).exit_code, 0);
  tqm_test::WriteFile(Path("t.bin"), "previous tokenizer");
  r = Sh(Bin("tqm-unpack") + " --format llama2c " + bare + " -o " + out + " --tokenizer-out " +
         Path("t.bin"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(tqm_test::ReadFile(out), "previous checkpoint");
  EXPECT_EQ(tqm_test::ReadFile(Path("t.bin")), "previous tokenizer");
  ExpectNoTemporaries(dir_);
  // Success writes both.
  r = Sh(Bin("tqm-unpack") + " -q --format llama2c " + tqm_ + " -o " + out +
         " --tokenizer-out " + Path("t.bin"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // 8-bit weights: the checkpoint has the original's layout, not its values.
  EXPECT_EQ(fs::file_size(out), fs::file_size(bin_));
  EXPECT_TRUE(tqm_test::ReadFile(Path("t.bin")) == tqm_test::ReadFile(tok_));
  ExpectNoTemporaries(dir_);
}

TEST_F(ToolsContract, UnpackHfWritesAModelDirectory) {
  const fs::path hf = dir_ / "hf-out";
  CmdResult r = ShStdout(Bin("tqm-unpack") + " --json --format hf --dtype bf16 " + tqm_ +
                         " -o " + hf.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto summary = tqm::json::Parse(r.out);
  ASSERT_TRUE(summary.ok()) << summary.status() << r.out;
  EXPECT_EQ(summary->Find("format")->as_string(), "hf");
  EXPECT_EQ(static_cast<uint64_t>(summary->Find("bytes_written")->as_int()),
            fs::file_size(hf / "model.safetensors") + fs::file_size(hf / "config.json"));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(hf)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"config.json", "model.safetensors"}));
  auto config = tqm::json::Parse(tqm_test::ReadFile((hf / "config.json").string()));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->Find("model_type")->as_string(), "llama");
  EXPECT_EQ(config->Find("torch_dtype")->as_string(), "bfloat16");
  auto reader = tqm::Reader::Open(tqm_);
  ASSERT_TRUE(reader.ok());
  auto weights = tqm::OpenSafetensors((hf / "model.safetensors").string());
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->tensors().size(), (*reader)->tensors().size());
  EXPECT_EQ(config->Find("num_hidden_layers")->as_int(),
            tqm::FindMeta((*reader)->metadata(), "llama.n_layers")->int64);

  // Again into the now non-empty directory: refused, nothing replaced.
  const std::string before = tqm_test::ReadFile((hf / "model.safetensors").string());
  r = Sh(Bin("tqm-unpack") + " -q --format hf " + tqm_ + " -o " + hf.string());
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("not empty"), std::string::npos) << r.out;
  EXPECT_EQ(tqm_test::ReadFile((hf / "model.safetensors").string()), before);
  // u8 codes and a separate tokenizer file are not part of an hf directory.
  for (const std::string& args : {std::string(" --dtype u8"), " --tokenizer-out " + Path("t.bin")}) {
    r = Sh(Bin("tqm-unpack") + " -q --format hf " + tqm_ + " -o " + Path("hf2") + args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.out;
  }
  // The parent directory does not exist: error, nothing appears.
  r = Sh(Bin("tqm-unpack") + " -q --format hf " + tqm_ + " -o " + Path("missing/hf"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_FALSE(tqm_test::Exists(Path("hf2")));
  EXPECT_FALSE(tqm_test::Exists(Path("missing")));
  ExpectNoTemporaries(dir_);
  ExpectNoTemporaries(hf);
}

TEST_F(ToolsContract, GenmodelOutputsAppearTogetherOrNotAtAll) {
  CmdResult r = Sh(Bin("tqm-genmodel") + " -q -o " + Path("g.bin") + " --tokenizer-out " +
                   Path("missing/t.bin"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_FALSE(tqm_test::Exists(Path("g.bin")));
  // --vocab too small for the tokenizer is a usage error, found before
  // anything is written.
  r = Sh(Bin("tqm-genmodel") + " -q -o " + Path("g.bin") + " --vocab 100 --tokenizer-out " +
         Path("t.bin"));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_FALSE(tqm_test::Exists(Path("g.bin")));
}

TEST_F(ToolsContract, UsageErrorsExitTwo) {
  // One bad value per tool, caught by the command-line parser or right after.
  const std::pair<const char*, std::string> bad_values[] = {
      {"tqm-pack", bin_ + " -o " + Path("x.tqm") + " --granularity column"},
      {"tqm-pack", bin_ + " -o " + Path("x.tqm") + " --threads many"},
      {"tqm-inspect", tqm_ + " --threads -1"},
      {"tqm-unpack", tqm_ + " -o " + Path("x") + " --format onnx"},
      {"tqm-unpack", tqm_ + " -o " + Path("x") + " --format gguf --dtype bf16"},
      {"tqm-genmodel", "-o " + Path("x") + " --dim 0"},
      {"tqm-bench", "--mib lots"},
      {"tqm-codec-bench", "--dist cauchy"},
      {"tqm-runbench", "matvec " + tqm_ + " --threads -3"},
      {"tqm-run", tqm_ + " --mode turbo"},
  };
  for (const auto& [tool, args] : bad_values) {
    if (!tqm_test::Exists(Bin(tool))) continue;
    CmdResult r = Sh(Bin(tool) + " " + args);
    EXPECT_EQ(r.exit_code, 2) << tool << " " << args << ": " << r.out;
    EXPECT_FALSE(tqm_test::Exists(Path("x"))) << tool;
    EXPECT_FALSE(tqm_test::Exists(Path("x.tqm"))) << tool;
  }
  int checked = 0;
  for (const char* tool : kAllTools) {
    if (!tqm_test::Exists(Bin(tool))) continue;
    ++checked;
    CmdResult r = Sh(Bin(tool) + " --no-such-flag");
    EXPECT_EQ(r.exit_code, 2) << tool << ": " << r.out;
    CmdResult help = Sh(Bin(tool) + " --help");
    EXPECT_EQ(help.exit_code, 0) << tool;
    EXPECT_NE(help.out.find("Exit status: 0 success, 1 failure, 2 usage error"),
              std::string::npos)
        << tool << " --help does not state the exit codes";
  }
  EXPECT_GE(checked, 7);
}

TEST_F(ToolsContract, VersionOnEveryTool) {
  const std::string format = absl::StrFormat("(format %d.%d)", tqm::format::kMajorVersion,
                                             tqm::format::kMinorVersion);
  for (const char* tool : kAllTools) {
    if (!tqm_test::Exists(Bin(tool))) continue;
    CmdResult r = ShStdout(Bin(tool) + " --version");
    EXPECT_EQ(r.exit_code, 0) << tool;
    const std::regex want(std::string("^") + tool + " [0-9]+\\.[0-9]+\\.[0-9]+ \\(format " +
                          std::to_string(tqm::format::kMajorVersion) + "\\." +
                          std::to_string(tqm::format::kMinorVersion) + "\\)\n$");
    EXPECT_TRUE(std::regex_match(r.out, want)) << tool << ": '" << r.out << "' lacks " << format;
  }
}

TEST_F(ToolsContract, JsonSummariesParse) {
  auto parse = [](const std::string& what, const std::string& text) {
    auto v = tqm::json::Parse(text);
    EXPECT_TRUE(v.ok()) << what << ": " << v.status() << "\n" << text;
    return v.ok() ? *v : tqm::json::Value();
  };
  CmdResult pack = ShStdout(Bin("tqm-pack") + " --json " + bin_ + " -o " + Path("j.tqm"));
  ASSERT_EQ(pack.exit_code, 0);
  tqm::json::Value p = parse("tqm-pack", pack.out);
  ASSERT_TRUE(p.is_object());
  EXPECT_GT(p.Find("file_bytes")->as_int(), 0);

  CmdResult unpack = ShStdout(Bin("tqm-unpack") + " --json --format llama2c " + tqm_ + " -o " +
                              Path("j.bin") + " --tokenizer-out " + Path("j_tok.bin"));
  ASSERT_EQ(unpack.exit_code, 0);
  tqm::json::Value u = parse("tqm-unpack", unpack.out);
  ASSERT_TRUE(u.is_object());
  auto reader = tqm::Reader::Open(tqm_);
  ASSERT_TRUE(reader.ok());
  ASSERT_NE(u.Find("tensors"), nullptr);
  EXPECT_EQ(u.Find("tensors")->as_int(), static_cast<int64_t>((*reader)->tensors().size()));
  ASSERT_NE(u.Find("bytes_written"), nullptr);
  EXPECT_EQ(u.Find("bytes_written")->as_int(),
            static_cast<int64_t>(fs::file_size(Path("j.bin")) + fs::file_size(Path("j_tok.bin"))));
  ASSERT_NE(u.Find("seconds"), nullptr);
  EXPECT_TRUE(u.Find("seconds")->is_number());
  ASSERT_NE(u.Find("mb_per_s"), nullptr);

  CmdResult inspect = ShStdout(Bin("tqm-inspect") + " --json --verify " + tqm_);
  ASSERT_EQ(inspect.exit_code, 0);
  EXPECT_TRUE(parse("tqm-inspect", inspect.out).is_object());

  if (tqm_test::Exists(Bin("tqm-run"))) {
    CmdResult run = ShStdout(Bin("tqm-run") + " --json --temperature 0 --steps 8 " + tqm_);
    ASSERT_EQ(run.exit_code, 0);
    tqm::json::Value r = parse("tqm-run", run.out);
    ASSERT_TRUE(r.is_object());
    ASSERT_NE(r.Find("text"), nullptr);
    EXPECT_TRUE(r.Find("text")->is_string());
    ASSERT_NE(r.Find("loader"), nullptr);
    EXPECT_TRUE(r.Find("loader")->is_object());
  }
}

TEST_F(ToolsContract, UnpackPrintsASummaryUnlessQuiet) {
  CmdResult r = Sh(Bin("tqm-unpack") + " " + tqm_ + " -o " + Path("s.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* field : {"tensors", "bytes", " s ", "MB/s"}) {
    EXPECT_NE(r.out.find(field), std::string::npos) << "summary lacks " << field << ": " << r.out;
  }
  // No progress bar when stderr is not a terminal.
  EXPECT_EQ(r.out.find('\r'), std::string::npos) << r.out;
}

TEST_F(ToolsContract, QuietPrintsNothingOnSuccess) {
  const std::string cmds[] = {
      Bin("tqm-pack") + " -q " + bin_ + " -o " + Path("q.tqm"),
      Bin("tqm-pack") + " -q --json " + bin_ + " -o " + Path("q2.tqm"),
      Bin("tqm-inspect") + " -q --verify " + tqm_,
      Bin("tqm-unpack") + " -q " + tqm_ + " -o " + Path("q.safetensors"),
      Bin("tqm-unpack") + " -q --format llama2c " + tqm_ + " -o " + Path("q.bin") +
          " --tokenizer-out " + Path("q_tok.bin"),
      Bin("tqm-genmodel") + " -q -o " + Path("q_gen.bin"),
  };
  for (const std::string& cmd : cmds) {
    CmdResult r = Sh(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.out;
    EXPECT_EQ(r.out, "") << cmd;
  }
  EXPECT_TRUE(tqm_test::Exists(Path("q_tok.bin")));
}

}  // namespace

namespace round_trips {

// Every tensor of `a` is in `b` with the same dtype, shape and bytes
// (decoded, as the file stores them).
void ExpectSameStoredTensors(const std::string& a, const std::string& b) {
  auto ra = tqm::Reader::Open(a);
  auto rb = tqm::Reader::Open(b);
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(rb.ok()) << rb.status();
  ASSERT_EQ((*ra)->tensors().size(), (*rb)->tensors().size());
  for (size_t i = 0; i < (*ra)->tensors().size(); ++i) {
    const tqm::TensorInfo& t = (*ra)->tensors()[i];
    const int j = (*rb)->FindTensor(t.name);
    ASSERT_GE(j, 0) << t.name;
    const tqm::TensorInfo& u = (*rb)->tensors()[j];
    EXPECT_EQ(t.storage, u.storage) << t.name;
    EXPECT_EQ(t.dims, u.dims) << t.name;
    EXPECT_EQ(t.bits, u.bits) << t.name;
    ASSERT_EQ(t.affine.size(), u.affine.size()) << t.name;
    for (size_t k = 0; k < t.affine.size(); ++k) {
      EXPECT_EQ(t.affine[k].scale, u.affine[k].scale) << t.name;
      EXPECT_EQ(t.affine[k].zero, u.affine[k].zero) << t.name;
    }
    std::vector<uint8_t> x(t.byte_size), y(u.byte_size);
    ASSERT_TRUE((*ra)->DecodeTensor(i, absl::MakeSpan(x)).ok());
    ASSERT_TRUE((*rb)->DecodeTensor(j, absl::MakeSpan(y)).ok());
    EXPECT_TRUE(x == y) << t.name;
  }
}

class RoundTrip : public Tools {};

// A checkpoint with the buffers real ones carry (int64 position ids, a
// 0-d scalar, an empty tensor, a bool mask, an F64 table) goes through
// tqm-pack -> tqm-unpack --format hf -> tqm-pack DIR with every tensor intact.
TEST_F(RoundTrip, HfDirectoryWithBuffersSurvivesPackUnpackPack) {
  // A complete one-layer Llama (dim 16, 2 heads, 1 kv head, hidden 24,
  // vocab 32) in the Hugging Face layout.
  tqm::MemorySource m;
  const uint64_t d = 16, kv = 8, h = 24, v = 32;
  uint32_t seed = 1;
  auto add = [&](const std::string& name, std::vector<uint64_t> dims) {
    uint64_t n = 1;
    for (uint64_t x : dims) n *= x;
    m.Add(name, dims, dims.size() == 1 ? std::vector<float>(n, 1.0f)
                                       : tqm_test::Gaussian(n, seed++));
  };
  add("model.embed_tokens.weight", {v, d});
  add("model.layers.0.input_layernorm.weight", {d});
  add("model.layers.0.self_attn.q_proj.weight", {d, d});
  add("model.layers.0.self_attn.k_proj.weight", {kv, d});
  add("model.layers.0.self_attn.v_proj.weight", {kv, d});
  add("model.layers.0.self_attn.o_proj.weight", {d, d});
  add("model.layers.0.post_attention_layernorm.weight", {d});
  add("model.layers.0.mlp.gate_proj.weight", {h, d});
  add("model.layers.0.mlp.up_proj.weight", {h, d});
  add("model.layers.0.mlp.down_proj.weight", {d, h});
  add("model.norm.weight", {d});
  using tqm::MetaValue;
  namespace k = tqm::meta_keys;
  m.AddMeta({k::kArchitecture, MetaValue::String("llama")});
  m.AddMeta({k::kDim, MetaValue::Int(d)});
  m.AddMeta({k::kHiddenDim, MetaValue::Int(h)});
  m.AddMeta({k::kLayers, MetaValue::Int(1)});
  m.AddMeta({k::kHeads, MetaValue::Int(2)});
  m.AddMeta({k::kKvHeads, MetaValue::Int(1)});
  m.AddMeta({k::kVocabSize, MetaValue::Int(v)});
  m.AddMeta({k::kSeqLen, MetaValue::Int(64)});
  m.AddMeta({k::kNormEps, MetaValue::Float(1e-5)});
  m.AddMeta({k::kRopeTheta, MetaValue::Float(10000)});
  m.AddMeta({k::kRopeLayout, MetaValue::String("hf")});
  m.AddMeta({k::kTiedClassifier, MetaValue::Int(1)});
  std::string ids;
  for (int64_t i = 0; i < 8; ++i) ids.append(reinterpret_cast<const char*>(&i), 8);
  m.AddRaw("model.position_ids", {1, 8}, tqm::format::kDTypeI64, ids);
  m.AddRaw("model.mask", {4}, tqm::format::kDTypeBool, std::string("\x01\x00\x00\x01", 4));
  const double table[3] = {0.5, -1.25, 3e300};
  m.AddRaw("model.freqs", {3}, tqm::format::kDTypeF64,
           std::string(reinterpret_cast<const char*>(table), sizeof table));
  m.Add("model.scale", {}, {0.125f});
  m.AddRaw("model.empty", {0}, tqm::format::kDTypeI32, "");
  const std::string a = Path("a.tqm");
  ASSERT_TRUE(tqm::Pack(m, a, {}).ok());
  ASSERT_EQ(Sh(Bin("tqm-inspect") + " -q --verify " + a).exit_code, 0);

  // Unpacked as float32 and packed again with --keep '.*': the same bytes.
  CmdResult r = Sh(Bin("tqm-unpack") + " -q --format hf " + a + " -o " + Path("hf1"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = Sh(Bin("tqm-pack") + " -q " + Path("hf1") + " -o " + Path("b.tqm") + " --keep '.*'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = Sh(Bin("tqm-unpack") + " -q --format hf " + Path("b.tqm") + " -o " + Path("hf2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(tqm_test::ReadFile(Path("hf1/model.safetensors")),
            tqm_test::ReadFile(Path("hf2/model.safetensors")));
  // The buffers are verbatim in b.tqm, with their dtypes and shapes.
  auto rb = tqm::Reader::Open(Path("b.tqm"));
  ASSERT_TRUE(rb.ok()) << rb.status();
  for (const char* name : {"model.position_ids", "model.mask", "model.freqs", "model.empty"}) {
    const int t = (*rb)->FindTensor(name);
    ASSERT_GE(t, 0) << name;
    EXPECT_TRUE((*rb)->tensors()[t].raw()) << name;
  }
  const int s = (*rb)->FindTensor("model.scale");
  ASSERT_GE(s, 0);
  EXPECT_TRUE((*rb)->tensors()[s].dims.empty());
  // Packed again by default, the weights are quantized again and the
  // buffers still kept.
  r = Sh(Bin("tqm-pack") + " -q " + Path("hf1") + " -o " + Path("c.tqm"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto rc = tqm::Reader::Open(Path("c.tqm"));
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ((*rc)->tensors().size(), (*rb)->tensors().size());
  EXPECT_TRUE((*rc)->tensors()[(*rc)->FindTensor("model.position_ids")].raw());
}

// tqm-unpack --dtype u8 -> tqm-pack keeps every code and parameter.
TEST_F(RoundTrip, U8ExportRepacksWithoutRequantizing) {
  for (const std::string& gran : {"tensor", "row"}) {
    SCOPED_TRACE(gran);
    const std::string a = Path("u8-" + gran + ".tqm"), u = Path("u8-" + gran + ".safetensors"),
                      b = Path("u8-" + gran + "-again.tqm");
    ASSERT_EQ(Sh(Bin("tqm-pack") + " -q " + model_ + " --granularity " + gran + " -o " + a)
                  .exit_code,
              0);
    ASSERT_EQ(Sh(Bin("tqm-unpack") + " -q --dtype u8 " + a + " -o " + u).exit_code, 0);
    CmdResult r = Sh(Bin("tqm-pack") + " -q " + u + " -o " + b);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    ExpectSameStoredTensors(a, b);
  }
}

// --bits and --granularity group:G through the command line; the file
// verifies and tqm-inspect names the storage.
TEST_F(RoundTrip, BitsAndGroupsFromTheCommandLine) {
  const std::string a = Path("g.tqm");
  CmdResult r = Sh(Bin("tqm-pack") + " -q " + model_ + " --bits 4 --granularity group:64 -o " + a);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = Sh(Bin("tqm-inspect") + " --verify " + a);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("u4/group:64"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tqm 1.3"), std::string::npos) << r.out;
  for (const char* bad : {"--bits 1", "--bits 9", "--granularity group:48", "--keep '('"}) {
    r = Sh(Bin("tqm-pack") + " -q " + model_ + " " + bad + " -o " + Path("bad.tqm"));
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.out;
    EXPECT_FALSE(tqm_test::Exists(Path("bad.tqm"))) << bad;
  }
}

}  // namespace round_trips
