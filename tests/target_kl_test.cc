// Per-tensor bits and granularity for a KL budget (quant/target_kl.h) and
// the writer's per-tensor settings (PackOptions::tensor_settings).

#include "quant/target_kl.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "quant/calibrate.h"
#include "test_util.h"
#include "tqm/metadata.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

using tqm::Granularity;
using tqm::MetaValue;

tqm::MemorySource LlamaModel() {
  tqm::MemorySource m = tqm_test::SmallModel(2, 32, 96, 96);
  namespace k = tqm::meta_keys;
  m.AddMeta({k::kDim, MetaValue::Int(32)});
  m.AddMeta({k::kHiddenDim, MetaValue::Int(96)});
  m.AddMeta({k::kLayers, MetaValue::Int(2)});
  m.AddMeta({k::kHeads, MetaValue::Int(4)});
  m.AddMeta({k::kKvHeads, MetaValue::Int(2)});
  m.AddMeta({k::kVocabSize, MetaValue::Int(96)});
  m.AddMeta({k::kSeqLen, MetaValue::Int(64)});
  m.AddMeta({k::kRopeLayout, MetaValue::String("hf")});
  m.AddMeta({k::kTokenizerLlama2c, MetaValue::Bytes(tqm_test::TinyTokenizer(96))});
  return m;
}

std::string Text() {
  std::string text;
  const char* lines[] = {"Once upon a time, a little cat saw the sun.",
                         "The dog ran to the park and found a red ball!",
                         "She said: \"Let us play a game,\" and they laughed."};
  for (int i = 0; i < 12; ++i) text += std::string(lines[i % 3]) + "\n";
  return text;
}

// Mean KL(reference || model) over the positions ChooseForTargetKl counts
// (every token but the last of its sequence).
double MeanKl(tqm::TensorSource& reference, tqm::TensorSource& model,
              const std::string& text) {
  auto c = tqm::calib::ConfigFromMetadata(reference.metadata());
  EXPECT_TRUE(c.ok()) << c.status();
  auto b = tqm::calib::Tokenize(reference.metadata(), *c, text, 512);
  EXPECT_TRUE(b.ok()) << b.status();
  auto p = tqm::calib::ForwardLogits(reference, *b, 1);
  auto q = tqm::calib::ForwardLogits(model, *b, 1);
  EXPECT_TRUE(p.ok() && q.ok());
  const size_t v = c->vocab_size;
  double sum = 0;
  size_t n = 0;
  for (size_t s = 0; s < b->sequences(); ++s) {
    for (size_t j = b->starts[s]; j + 1 < b->starts[s + 1]; ++j, ++n) {
      const float* x = p->data() + j * v;
      const float* y = q->data() + j * v;
      double mx = x[0], my = y[0];
      for (size_t k = 0; k < v; ++k)
        mx = std::max<double>(mx, x[k]), my = std::max<double>(my, y[k]);
      double zx = 0, zy = 0;
      for (size_t k = 0; k < v; ++k) zx += std::exp(x[k] - mx), zy += std::exp(y[k] - my);
      for (size_t k = 0; k < v; ++k) {
        const double lp = x[k] - mx - std::log(zx), lq = y[k] - my - std::log(zy);
        sum += std::exp(lp) * (lp - lq);
      }
    }
  }
  return sum / n;
}

double MeanBits(const tqm::TargetKlResult& r) {
  double bits = 0, weights = 0;
  for (const tqm::TensorChoice& c : r.choices) {
    bits += c.setting.bits * static_cast<double>(c.weights);
    weights += c.weights;
  }
  return bits / weights;
}

tqm::TargetKlOptions Options(double x) {
  tqm::TargetKlOptions o;
  o.target_kl = x;
  o.bits = {3, 4, 6, 8};
  o.group_size = 32;  // down_proj rows are 96 wide: 3 groups
  o.max_tokens = 512;
  o.threads = 1;
  return o;
}

TEST(TargetKl, LooserTargetGivesFewerBitsAndTheFileMeetsIt) {
  tqm::MemorySource m = LlamaModel();
  const std::string text = Text();
  tqm::PackOptions base;
  auto loose = tqm::ChooseForTargetKl(m, text, base, Options(1e6));
  ASSERT_TRUE(loose.ok()) << loose.status();
  ASSERT_TRUE(loose->met);
  ASSERT_GT(loose->measured_kl, 0);
  // A budget far under what the loosest choice costs.
  const double tight_x = loose->measured_kl / 20;
  auto tight = tqm::ChooseForTargetKl(m, text, base, Options(tight_x));
  ASSERT_TRUE(tight.ok()) << tight.status();
  EXPECT_TRUE(tight->met) << tight->measured_kl << " > " << tight_x;
  EXPECT_LE(tight->measured_kl, tight_x);
  EXPECT_LT(MeanBits(*loose), MeanBits(*tight));
  EXPECT_LT(loose->bytes, tight->bytes);
  // Every linear and the embedding get a setting; the norms are left alone.
  EXPECT_EQ(tight->settings.size(), 15u);
  EXPECT_EQ(tight->settings.count("model.norm.weight"), 0u);
  EXPECT_GT(tight->positions, 100u);

  // The file holds each chosen setting, and its weights give the KL measured.
  tqm::PackOptions o;
  o.tensor_settings = tight->settings;
  tqm::PackStats stats;
  auto bytes = tqm::PackToString(m, o, &stats);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto reader = tqm::Reader::FromBuffer(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()),
      "target.tqm");
  ASSERT_TRUE(reader.ok()) << reader.status();
  tqm::MemorySource file;
  for (const tqm::MetaEntry& e : m.metadata()) file.AddMeta(e);
  size_t checked = 0;
  for (size_t i = 0; i < (*reader)->tensors().size(); ++i) {
    const tqm::TensorInfo& t = (*reader)->tensors()[i];
    auto it = tight->settings.find(t.name);
    if (it != tight->settings.end()) {
      ++checked;
      EXPECT_EQ(t.bits, it->second.bits) << t.name;
      const tqm::format::Storage want =
          it->second.granularity == Granularity::kTensor ? tqm::format::kStorageU8Tensor
          : it->second.granularity == Granularity::kRow  ? tqm::format::kStorageU8Row
                                                         : tqm::format::kStorageU8Group;
      EXPECT_EQ(t.storage, want) << t.name;
    }
    std::vector<float> f(t.numel);
    ASSERT_TRUE((*reader)->ReadFloat(i, absl::MakeSpan(f)).ok());
    file.Add(t.name, t.dims, f);
  }
  EXPECT_EQ(checked, tight->settings.size());
  const double file_kl = MeanKl(m, file, text);
  EXPECT_NEAR(file_kl, tight->measured_kl, 1e-6 + 1e-3 * tight->measured_kl);
  EXPECT_LE(file_kl, tight_x * (1 + 1e-4));
}

TEST(TargetKl, NonLlamaModelIsAClearError) {
  tqm::MemorySource m;
  m.Add("encoder.weight", {8, 8}, std::vector<float>(64, 0.5f));
  auto r = tqm::ChooseForTargetKl(m, Text(), tqm::PackOptions(), Options(0.01));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("Llama"), std::string::npos) << r.status();

  tqm::MemorySource model = LlamaModel();
  auto bad = tqm::ChooseForTargetKl(model, Text(), tqm::PackOptions(), Options(-1));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PackOptions, TensorSettingsAreValidated) {
  tqm::MemorySource m = tqm_test::SmallModel(1, 32, 64, 96);
  tqm::PackOptions o;
  o.tensor_settings["no.such.tensor"] = {4, Granularity::kRow, 0};
  auto r = tqm::PackToString(m, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no.such.tensor"), std::string::npos) << r.status();
  o.tensor_settings.clear();
  o.tensor_settings["model.layers.0.mlp.up_proj.weight"] = {9, Granularity::kRow, 0};
  EXPECT_EQ(tqm::PackToString(m, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.tensor_settings["model.layers.0.mlp.up_proj.weight"] = {4, Granularity::kGroup, 0};
  EXPECT_EQ(tqm::PackToString(m, o).status().code(), absl::StatusCode::kInvalidArgument);
  // A valid one applies to that tensor only.
  o.tensor_settings["model.layers.0.mlp.up_proj.weight"] = {3, Granularity::kGroup, 16};
  auto ok = tqm::PackToString(m, o);
  ASSERT_TRUE(ok.ok()) << ok.status();
  auto reader = tqm::Reader::FromBuffer(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(ok->data()), ok->size()),
      "s.tqm");
  ASSERT_TRUE(reader.ok()) << reader.status();
  for (const tqm::TensorInfo& t : (*reader)->tensors()) {
    if (!t.quantized()) continue;
    if (t.name == "model.layers.0.mlp.up_proj.weight") {
      EXPECT_EQ(t.bits, 3);
      EXPECT_EQ(t.storage, tqm::format::kStorageU8Group);
      EXPECT_EQ(t.group_size, 16u);
    } else {
      EXPECT_EQ(t.bits, 8) << t.name;
      EXPECT_EQ(t.storage, tqm::format::kStorageU8Tensor) << t.name;
    }
  }
}

// Runs `cmd` through the shell; its exit status (-1 when it did not exit).
int Shell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(TargetKl, PackToolChoosesPerTensorSettings) {
  const std::string bin = TQM_BIN_DIR;
  if (Shell("test -x " + bin + "/tqm-pack && test -x " + bin + "/tqm-genmodel") != 0) {
    GTEST_SKIP() << "needs tqm-pack and tqm-genmodel in " << bin;
  }
  const std::string dir = testing::TempDir();
  const std::string model = dir + "/tkl_model.bin", tok = dir + "/tkl_tok.bin",
                    text = dir + "/tkl_text.txt", out = dir + "/tkl.tqm";
  ASSERT_EQ(Shell(bin + "/tqm-genmodel -o " + model + " --tokenizer-out " + tok +
                  " --dim 32 --hidden 64 --layers 2 --heads 4 --kv-heads 4 --vocab 300"
                  " --seq-len 64"),
            0);
  std::ofstream(text) << Text();
  // No calibration text: a usage error.
  EXPECT_EQ(Shell(bin + "/tqm-pack " + model + " --tokenizer " + tok + " -o " + out +
                  " --target-kl 0.01 2>/dev/null"),
            2);
  // With --bits: a usage error.
  EXPECT_EQ(Shell(bin + "/tqm-pack " + model + " --tokenizer " + tok + " -o " + out +
                  " --target-kl 0.01 --bits 4 --calibration " + text + " 2>/dev/null"),
            2);
  ASSERT_EQ(Shell(bin + "/tqm-pack " + model + " --tokenizer " + tok + " -o " + out +
                  " --target-kl 1000 --target-kl-tokens 256 --calibration " + text +
                  " --json > " + out + ".json 2>/dev/null"),
            0);
  const std::string json = ReadAll(out + ".json");
  EXPECT_NE(json.find("\"target_kl\":{\"target\":1000,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"met\":true"), std::string::npos) << json;
  // The loosest target takes the smallest setting: 3 bits for every linear.
  auto reader = tqm::Reader::Open(out);
  ASSERT_TRUE(reader.ok()) << reader.status();
  size_t three = 0;
  for (const tqm::TensorInfo& t : (*reader)->tensors()) {
    if (t.name.find("_proj.") != std::string::npos) three += t.bits == 3;
  }
  EXPECT_EQ(three, 14u);
}

}  // namespace
