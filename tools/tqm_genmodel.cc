// tqm-genmodel: write a random Llama-shaped llama2.c checkpoint (and a
// byte-level llama2.c tokenizer) of any size. Used by `make demo` when
// ../shared is absent, and by benchmarks that need a model larger than
// stories260K. Deterministic by seed; writes atomically.

#include <iostream>
#include <random>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "tool_util.h"

namespace {

absl::Status WriteFloats(tqm::AtomicFile* f, size_t n, float sigma, float mean,
                         std::mt19937* rng) {
  std::normal_distribution<float> d(mean, sigma);
  std::vector<float> buf;
  while (n > 0) {
    size_t k = std::min<size_t>(n, 1 << 20);
    buf.resize(k);
    for (float& x : buf) x = sigma == 0 ? mean : d(*rng);
    absl::Status s = f->Append(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(buf.data()), k * 4));
    if (!s.ok()) return s;
    n -= k;
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status Put(tqm::AtomicFile* f, T v) {
  return f->Append(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof(v)));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tqm-genmodel: write a random Llama-shaped llama2.c checkpoint (Gaussian weights,\n"
      "sigma 0.02; norms 1.0) and, with --tokenizer-out, a byte-level llama2.c tokenizer\n"
      "that covers every byte. Deterministic by --seed.\n\n"
      "Example (about 1 GiB of int8 weights):\n"
      "  tqm-genmodel -o big.bin --dim 2048 --hidden 5632 --layers 22 --heads 32 \\\n"
      "               --kv-heads 4 --vocab 32000\n"};
  tqm::SetUpCommandLine(app, "tqm-genmodel");
  std::string out, tok_out;
  int dim = 64, hidden = 172, layers = 5, heads = 8, kv_heads = 4, vocab = 512, seq_len = 256;
  uint32_t seed = 1;
  bool quiet = false;
  app.add_option("-o,--output", out, "checkpoint to write")->required();
  app.add_option("--tokenizer-out", tok_out,
                 "also write a tokenizer for this vocab (both files appear together or "
                 "not at all)");
  app.add_option("--dim", dim)->check(CLI::Range(2, 1 << 16));
  app.add_option("--hidden", hidden)->check(CLI::Range(1, 1 << 18));
  app.add_option("--layers", layers)->check(CLI::Range(1, 1024));
  app.add_option("--heads", heads)->check(CLI::Range(1, 1024));
  app.add_option("--kv-heads", kv_heads)->check(CLI::Range(1, 1024));
  app.add_option("--vocab", vocab, "vocabulary size (>= 259 for the tokenizer)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--seq-len", seq_len)->check(CLI::Range(1, 1 << 20));
  app.add_option("--seed", seed);
  tqm::AddQuietFlag(app, &quiet, "no summary line");
  TQM_PARSE_COMMAND_LINE(app, argc, argv);
  const char* tool = "tqm-genmodel";
  if (dim % heads != 0 || heads % kv_heads != 0 || (dim / heads) % 2 != 0) {
    return tqm::UsageError(tool,
                           "need dim % heads == 0, heads % kv_heads == 0, even head size");
  }
  if (!tok_out.empty() && vocab < 259) {
    return tqm::UsageError(tool, "a byte-level tokenizer needs --vocab >= 259");
  }
  tqm::InstallCleanupHandlers();
  std::mt19937 rng(seed);
  tqm::OutputGroup outputs;
  auto out_temp = outputs.Add(out);
  if (!out_temp.ok()) return tqm::Failure(tool, std::string(out_temp.status().message()));
  absl::StatusOr<std::string> tok_temp;
  if (!tok_out.empty()) {
    tok_temp = outputs.Add(tok_out);
    if (!tok_temp.ok()) return tqm::Failure(tool, std::string(tok_temp.status().message()));
  }
  auto f = tqm::AtomicFile::Create(*out_temp);
  if (!f.ok()) return tqm::Failure(tool, std::string(f.status().message()));
  const size_t d = dim, h = hidden, L = layers, v = vocab, kv = d / heads * kv_heads;
  absl::Status s;
  for (int x : {dim, hidden, layers, heads, kv_heads, vocab, seq_len}) {
    if (s.ok()) s = Put<int32_t>(f->get(), x);
  }
  struct Part {
    size_t n;
    float sigma, mean;
  } parts[] = {{v * d, 0.02f, 0},  {L * d, 0, 1.0f},      {L * d * d, 0.02f, 0},
               {L * kv * d, 0.02f, 0}, {L * kv * d, 0.02f, 0}, {L * d * d, 0.02f, 0},
               {L * d, 0, 1.0f},   {L * h * d, 0.02f, 0},  {L * d * h, 0.02f, 0},
               {L * h * d, 0.02f, 0},  {d, 0, 1.0f},
               // legacy RoPE tables (unused by readers)
               {2 * size_t(seq_len) * (d / heads) / 2, 0, 0}};
  for (const Part& p : parts) {
    if (s.ok()) s = WriteFloats(f->get(), p.n, p.sigma, p.mean, &rng);
  }
  if (s.ok()) s = (*f)->Commit();
  if (!s.ok()) return tqm::Failure(tool, std::string(s.message()));
  if (!tok_out.empty()) {
    auto t = tqm::AtomicFile::Create(*tok_temp);
    if (!t.ok()) return tqm::Failure(tool, std::string(t.status().message()));
    absl::Status ts = Put<int32_t>(t->get(), 16);
    auto piece = [&](const std::string& p, float score) {
      if (!ts.ok()) return;
      ts = Put<float>(t->get(), score);
      if (ts.ok()) ts = Put<int32_t>(t->get(), static_cast<int32_t>(p.size()));
      if (ts.ok()) ts = (*t)->Append(p);
    };
    piece("<unk>", 0);
    piece("\n<s>\n", 0);
    piece("\n</s>\n", 0);
    for (int b = 0; b < 256; ++b) piece(absl::StrFormat("<0x%02X>", b), 0);
    const char* letters = " etaoinshrdlucmfwypvbgkqjxz";
    for (int i = 259; i < vocab; ++i) {
      int k = i - 259;
      std::string p;
      p += letters[k % 27];
      p += letters[(k / 27) % 27];
      if (k >= 27 * 27) p += letters[(k / 729) % 27];
      if (k >= 27 * 27 * 27) p += absl::StrFormat("%d", k);
      piece(p, -static_cast<float>(k));
    }
    if (ts.ok()) ts = (*t)->Commit();
    if (!ts.ok()) return tqm::Failure(tool, std::string(ts.message()));
  }
  s = outputs.Commit();
  if (!s.ok()) return tqm::Failure(tool, std::string(s.message()));
  if (quiet) return tqm::kExitSuccess;
  std::cout << absl::StrFormat("wrote %s: dim %d hidden %d layers %d heads %d/%d vocab %d\n",
                               out, dim, hidden, layers, heads, kv_heads, vocab);
  return tqm::kExitSuccess;
}
