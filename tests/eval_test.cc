// tqm-eval as a user runs it: a packed stories260K against its float32
// checkpoint (or against itself) on the held-out text of ../shared/text,
// the --json keys, --max-tokens, the tokenizer sources, windows over lines
// longer than the model's context, and bad inputs (exit 1 for unreadable or
// mismatched files, 2 for usage errors, each with a message that names the
// problem).

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/json.h"
#include "test_util.h"
#include "tqm/import.h"
#include "tqm/metadata.h"
#include "tqm/writer.h"

namespace {

namespace fs = std::filesystem;

using tqm_test::Bin;
using tqm_test::CmdResult;

CmdResult Sh(const std::string& cmd) { return tqm_test::RunCommand(cmd); }

const std::string kTokenizer = tqm_test::SharedPath("models/stories260K/tok512.bin");
const std::string kHeldout = tqm_test::SharedPath("text/stories260K-heldout.txt");

class Eval : public ::testing::Test {
 protected:
  void SetUp() override {
    TQM_SKIP_WITHOUT_SHARED();
    if (!tqm_test::Exists(kHeldout)) GTEST_SKIP() << kHeldout << " is absent";
    if (!tqm_test::Exists(Bin("tqm-eval")))
      GTEST_SKIP() << Bin("tqm-eval") << " not built";
    dir_ = fs::temp_directory_path() / ("tqm_eval_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string Path(const std::string& name) { return (dir_ / name).string(); }

  // Packs stories260K into `name` with `po` (plus the tokenizer unless
  // `tokenizer` is false); returns the path.
  std::string PackStories(const std::string& name, tqm::PackOptions po,
                          bool tokenizer = true) {
    auto src = tqm::OpenLlama2c(tqm_test::Stories260K());
    EXPECT_TRUE(src.ok()) << src.status();
    if (!src.ok()) return "";
    if (tokenizer) {
      po.extra_metadata.push_back(
          {tqm::meta_keys::kTokenizerLlama2c,
           tqm::MetaValue::Bytes(tqm_test::ReadFile(kTokenizer))});
    }
    auto bytes = tqm::PackToString(**src, po);
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    const std::string path = Path(name);
    if (bytes.ok()) tqm_test::WriteFile(path, *bytes);
    return path;
  }

  // Runs tqm-eval --json and parses its stdout (stderr discarded).
  tqm::json::Value EvalJson(const std::string& args) {
    CmdResult r = Sh(Bin("tqm-eval") + " --json --threads 2 " + args + " 2>/dev/null");
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.out;
    auto v = tqm::json::Parse(r.out);
    EXPECT_TRUE(v.ok()) << v.status() << "\n" << r.out;
    return v.ok() ? *v : tqm::json::Value();
  }

  fs::path dir_;
};

double Num(const tqm::json::Value& v, const char* key) {
  const tqm::json::Value* f = v.Find(key);
  EXPECT_NE(f, nullptr) << key;
  EXPECT_TRUE(f != nullptr && f->is_number()) << key;
  return f != nullptr ? f->as_double() : -1;
}

TEST_F(Eval, FileAgainstItselfAgreesExactly) {
  tqm::PackOptions po;
  po.granularity = tqm::Granularity::kRow;
  const std::string model = PackStories("s8.tqm", po);
  const tqm::json::Value v = EvalJson(absl::StrFormat(
      "%s --reference %s --text %s --max-tokens 3000", model, model, kHeldout));
  // The model runs on uint8 codes, the reference on the same weights
  // dequantized: only float rounding separates them.
  EXPECT_NEAR(Num(v, "kl"), 0.0, 1e-9);
  EXPECT_EQ(Num(v, "top1"), 1.0);
  EXPECT_NEAR(Num(v, "ppl"), Num(v, "ppl_reference"), 1e-5);
  EXPECT_EQ(Num(v, "positions"), 3000);
  // Dequantized on both sides: the same logits, bit for bit.
  const tqm::json::Value f = EvalJson(
      absl::StrFormat("%s --reference %s --text %s --max-tokens 500 --mode decoded-f32",
                      model, model, kHeldout));
  EXPECT_EQ(Num(f, "kl"), 0.0);
  EXPECT_EQ(Num(f, "top1"), 1.0);
  EXPECT_EQ(Num(f, "ppl"), Num(f, "ppl_reference"));
}

TEST_F(Eval, JsonHasExactlyTheDocumentedKeys) {
  const std::string model = PackStories("s8.tqm", tqm::PackOptions());
  const tqm::json::Value v =
      EvalJson(absl::StrFormat("%s --reference %s --text %s --max-tokens 200", model,
                               tqm_test::Stories260K(), kHeldout));
  ASSERT_TRUE(v.is_object());
  std::vector<std::string> keys;
  for (const tqm::json::Member& m : v.object()) keys.push_back(m.key);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"kl", "positions", "ppl", "ppl_reference",
                                            "top1"}));
  EXPECT_TRUE(v.Find("positions")->is_int());
  EXPECT_EQ(v.Find("positions")->as_int(), 200);
}

// 8 bits per row, round to nearest: close to the float32 model but not
// identical; the float32 perplexity is the model's own on its text (about
// 2.74 over the whole file).
TEST_F(Eval, EightBitsIsCloseToFloat32) {
  tqm::PackOptions po;
  po.granularity = tqm::Granularity::kRow;
  const std::string model = PackStories("s8.tqm", po);
  const tqm::json::Value v =
      EvalJson(absl::StrFormat("%s --reference %s --text %s --max-tokens 4000", model,
                               tqm_test::Stories260K(), kHeldout));
  const double kl = Num(v, "kl");
  EXPECT_GT(kl, 0.0);
  EXPECT_LT(kl, 0.01);
  EXPECT_GT(Num(v, "top1"), 0.95);
  EXPECT_LT(Num(v, "top1"), 1.0);
  EXPECT_GT(Num(v, "ppl_reference"), 2.0);
  EXPECT_LT(Num(v, "ppl_reference"), 3.5);
  EXPECT_NEAR(Num(v, "ppl") / Num(v, "ppl_reference"), 1.0, 0.01);
  EXPECT_EQ(Num(v, "positions"), 4000);
}

// Fewer bits follow the float32 model less closely: KL grows and top-1
// agreement falls from 8 to 3 bits, and group parameters beat one pair per
// tensor at 4 bits. Every mode of the runtime gives the same figures.
TEST_F(Eval, FewerBitsDriftFurther) {
  auto eval = [&](int bits, tqm::Granularity g, uint32_t group, const char* mode) {
    tqm::PackOptions po;
    po.bits = bits;
    po.granularity = g;
    po.group_size = group;
    const std::string model = PackStories(
        absl::StrFormat("s%d_%d_%d.tqm", bits, static_cast<int>(g), group), po);
    return EvalJson(
        absl::StrFormat("%s --reference %s --text %s --max-tokens 1500 --mode %s", model,
                        tqm_test::Stories260K(), kHeldout, mode));
  };
  const tqm::json::Value b8 = eval(8, tqm::Granularity::kRow, 0, "int8");
  const tqm::json::Value b4 = eval(4, tqm::Granularity::kRow, 0, "int8");
  const tqm::json::Value b3 = eval(3, tqm::Granularity::kRow, 0, "int8");
  EXPECT_LT(Num(b8, "kl"), Num(b4, "kl"));
  EXPECT_LT(Num(b4, "kl"), Num(b3, "kl"));
  EXPECT_GT(Num(b8, "top1"), Num(b3, "top1"));
  const tqm::json::Value t4 = eval(4, tqm::Granularity::kTensor, 0, "int8");
  const tqm::json::Value g4 = eval(4, tqm::Granularity::kGroup, 64, "int8");
  EXPECT_LT(Num(g4, "kl"), Num(t4, "kl"));
  for (const char* mode : {"decoded-f32", "fused", "stream"}) {
    SCOPED_TRACE(mode);
    const tqm::json::Value m = eval(4, tqm::Granularity::kGroup, 64, mode);
    EXPECT_NEAR(Num(m, "kl"), Num(g4, "kl"), 1e-4 * Num(g4, "kl"));
    // A near tie may fall the other way under other rounding.
    EXPECT_NEAR(Num(m, "top1"), Num(g4, "top1"), 2.0 / 1500);
  }
}

TEST_F(Eval, TokenizerFromFlagOrReference) {
  const std::string with = PackStories("with.tqm", tqm::PackOptions());
  const std::string without = PackStories("without.tqm", tqm::PackOptions(), false);
  const std::string args = absl::StrFormat(" --text %s --max-tokens 300", kHeldout);
  const tqm::json::Value a = EvalJson(with + " --reference " + with + args);
  // No tokenizer in the model: --tokenizer, or the reference's metadata.
  const tqm::json::Value b =
      EvalJson(without + " --reference " + without + " --tokenizer " + kTokenizer + args);
  const tqm::json::Value c = EvalJson(without + " --reference " + with + args);
  EXPECT_EQ(Num(a, "ppl"), Num(b, "ppl"));
  EXPECT_EQ(Num(a, "ppl"), Num(c, "ppl"));
  // Neither has one: exit 1 saying what to pass.
  CmdResult r =
      Sh(Bin("tqm-eval") + " " + without + " --reference " + without + args + " 2>&1");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("--tokenizer"), std::string::npos) << r.out;
}

// One line of text longer than the model's 512 positions is evaluated in
// several windows (each restarting at BOS), every token after the first
// BOS counted once.
TEST_F(Eval, LongLinesSpanSeveralWindows) {
  const std::string text = tqm_test::ReadFile(kHeldout);
  std::string joined;
  for (char c : text.substr(0, 8000)) joined.push_back(c == '\n' ? ' ' : c);
  tqm_test::WriteFile(Path("long.txt"), joined + "\n");
  const std::string model = PackStories("s8.tqm", tqm::PackOptions());
  CmdResult r =
      Sh(absl::StrFormat("%s %s --reference %s --text %s --threads 2 2>/dev/null",
                         Bin("tqm-eval"), model, model, Path("long.txt")));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  // About 4.5 characters per token: several windows of at most 512 tokens.
  int positions = 0, windows = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str(), "positions: %d (%d windows", &positions, &windows),
            2)
      << r.out;
  EXPECT_GE(windows, 3);
  EXPECT_GT(positions, 511 * (windows - 1));
  EXPECT_LE(positions, 511 * windows);
}

// llama.cpp's stories260K GGUF records a context of 128 tokens: the
// windows shrink to the shorter seq_len, and tqm-eval says so.
// A line of 300 KB without a space encodes in bounded time (in pieces:
// run.c's merges are quadratic in what they encode).
TEST_F(Eval, HugeLineWithoutSpaces) {
  tqm_test::WriteFile(Path("huge.txt"), std::string(300000, 'a') + "\n");
  const std::string model = PackStories("s8.tqm", tqm::PackOptions());
  const tqm::json::Value v = EvalJson(absl::StrFormat(
      "%s --reference %s --text %s --max-tokens 1500", model, model, Path("huge.txt")));
  EXPECT_EQ(Num(v, "positions"), 1500);
}

TEST_F(Eval, ShorterReferenceContextShrinksTheWindows) {
  const std::string gguf = tqm_test::SharedPath("fixtures/gguf/stories260K-f32.gguf");
  if (!tqm_test::Exists(gguf)) GTEST_SKIP() << gguf << " is absent";
  const std::string model = PackStories("s8.tqm", tqm::PackOptions());
  CmdResult r = Sh(absl::StrFormat("%s %s --reference %s --text %s --max-tokens 600 2>&1",
                                   Bin("tqm-eval"), model, gguf, kHeldout));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("windows of 128 tokens: seq_len is 512"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("windows of at most 128 tokens"), std::string::npos) << r.out;
}

TEST_F(Eval, BadInputsExitWithClearErrors) {
  const std::string model = PackStories("s8.tqm", tqm::PackOptions());
  const std::string ref = tqm_test::Stories260K();
  const std::string eval = Bin("tqm-eval");
  struct Case {
    std::string args;
    int exit_code;
    std::string message;  // expected in stderr
  };
  tqm_test::WriteFile(Path("empty.txt"), "\n \n");
  const std::string bytes = tqm_test::ReadFile(model);
  tqm_test::WriteFile(Path("cut.tqm"), bytes.substr(0, bytes.size() / 2));
  const std::vector<Case> cases = {
      // Usage errors.
      {model + " --text " + kHeldout, 2, "--reference"},
      {model + " --reference " + ref, 2, "--text"},
      {model + " --reference " + ref + " --text " + kHeldout + " --max-tokens -5", 2,
       "--max-tokens"},
      {model + " --reference " + ref + " --text " + kHeldout + " --mode fast", 2,
       "--mode"},
      {model + " --reference " + ref + " --text " + kHeldout + " --no-such-flag", 2,
       "no-such-flag"},
      // Failures.
      {Path("missing.tqm") + " --reference " + ref + " --text " + kHeldout, 1,
       "missing.tqm"},
      {Path("cut.tqm") + " --reference " + ref + " --text " + kHeldout, 1, "cut.tqm"},
      {model + " --reference " + kTokenizer + " --text " + kHeldout, 1, "tok512.bin"},
      {model + " --reference " + Path("nope.bin") + " --text " + kHeldout, 1, "nope.bin"},
      {model + " --reference " + ref + " --text " + Path("nope.txt"), 1, "nope.txt"},
      {model + " --reference " + ref + " --text " + Path("empty.txt"), 1, "no text"},
      {model + " --reference " + ref + " --text " + kHeldout + " --tokenizer " +
           Path("empty.txt"),
       1, "empty.txt"},
  };
  for (const Case& c : cases) {
    CmdResult r = Sh(eval + " " + c.args + " 2>&1 >/dev/null");
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << "\n" << r.out;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << c.args << "\n" << r.out;
  }
}

// A reference of another shape: exit 1 naming both files.
TEST_F(Eval, MismatchedReferenceIsRejected) {
  const std::string model = PackStories("s8.tqm", tqm::PackOptions());
  tqm::MemorySource other = tqm_test::SmallModel();
  namespace k = tqm::meta_keys;
  other.AddMeta({k::kArchitecture, tqm::MetaValue::String("llama")});
  other.AddMeta({k::kDim, tqm::MetaValue::Int(32)});
  other.AddMeta({k::kHiddenDim, tqm::MetaValue::Int(64)});
  other.AddMeta({k::kLayers, tqm::MetaValue::Int(2)});
  other.AddMeta({k::kHeads, tqm::MetaValue::Int(4)});
  other.AddMeta({k::kKvHeads, tqm::MetaValue::Int(2)});
  other.AddMeta({k::kVocabSize, tqm::MetaValue::Int(96)});
  other.AddMeta({k::kSeqLen, tqm::MetaValue::Int(64)});
  auto bytes = tqm::PackToString(other, tqm::PackOptions());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  tqm_test::WriteFile(Path("other.tqm"), *bytes);
  CmdResult r = Sh(absl::StrFormat("%s %s --reference %s --text %s 2>&1 >/dev/null",
                                   Bin("tqm-eval"), model, Path("other.tqm"), kHeldout));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("not the same model"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("other.tqm"), std::string::npos) << r.out;
}

}  // namespace
