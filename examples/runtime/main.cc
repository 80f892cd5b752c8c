// tqm-run: generates text with a Llama model stored in a .tqm file, reading
// the weights through the tqm loader in one of four modes (llama.h).
//
//   tqm-run MODEL.tqm --tokenizer tok512.bin --prompt "Once upon a time"
//       --steps 128 --temperature 0 [--mode int8] [--budget-mb N] [--threads N]
//       [-q] [--json]
//
// The command line follows the tools' contract (tools/tool_util.h): exit
// status 0/1/2, --version, the shared --threads, -q and --json.

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "runtime/llama.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"
#include "tool_util.h"
#include "tqm/metadata.h"

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tqm-run: %s\n", std::string(s.ToString()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tqm;
  CLI::App app{"tqm-run: generate text with a Llama model from a .tqm file.\n\n"
               "Example:\n"
               "  tqm-run stories260K.tqm --prompt \"Once upon a time\" --temperature 0\n"};
  SetUpCommandLine(app, "tqm-run");
  std::string model_path, tokenizer_path, prompt, mode_name = "int8";
  int steps = 256, threads = 0, prefetch = 1;
  float temperature = 1.0f, topp = 0.9f;
  uint64_t seed = 0;
  double budget_mb = 0;
  bool no_verify = false, stats = false, no_zero_copy = false, quiet = false, json = false;
  app.add_option("model", model_path, "the .tqm file")->required();
  app.add_option(
      "--tokenizer,-z", tokenizer_path,
      "llama2.c tokenizer file (default: the file's tokenizer.llama2c metadata)");
  app.add_option("--prompt,-i", prompt, "prompt text");
  app.add_option("--steps,-n", steps, "positions to run, prompt included (0: seq_len)");
  app.add_option("--temperature,-t", temperature, "0: greedy")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--topp,-p", topp, "nucleus sampling threshold (outside (0,1): off)");
  app.add_option("--seed,-s", seed, "sampling seed (0: from the clock)");
  app.add_option("--mode,-m", mode_name, "decoded-f32 | int8 | stream | fused")
      ->check(CLI::IsMember({"decoded-f32", "int8", "stream", "fused"}));
  app.add_option("--budget-mb", budget_mb,
                 "loader budget for decoded layers, MiB (0: none)")
      ->check(CLI::NonNegativeNumber);
  AddThreadsOption(app, &threads, "compute and decode threads (0: all cores)");
  app.add_option("--prefetch", prefetch, "stream mode: layers decoded ahead")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--no-verify", no_verify, "skip chunk checksums");
  app.add_flag("--no-zero-copy", no_zero_copy,
               "decode stored tensors into buffers instead of using the mapping");
  app.add_flag("--stats", stats, "print loader statistics to stderr");
  AddQuietFlag(app, &quiet, "only the generated text: no tok/s report, no warnings");
  AddJsonFlag(app, &json,
              "print one JSON object on stdout instead: the generated text, tok/s, "
              "open time and loader statistics");
  TQM_PARSE_COMMAND_LINE(app, argc, argv);

  auto mode = rt::ParseMode(mode_name);
  if (!mode.ok()) return UsageError("tqm-run", std::string(mode.status().message()));
  rt::RuntimeOptions options;
  options.mode = *mode;
  options.threads = threads;
  options.budget_bytes = static_cast<uint64_t>(budget_mb * 1024.0 * 1024.0);
  options.verify_checksums = !no_verify;
  options.prefetch = prefetch;
  options.zero_copy = !no_zero_copy;
  options.on_warning = [quiet](const std::string& m) {
    if (!quiet) std::fprintf(stderr, "tqm-run: warning: %s\n", m.c_str());
  };
  const auto t_open = std::chrono::steady_clock::now();
  auto llama = rt::Llama::Open(model_path, options);
  if (!llama.ok()) return Fail(llama.status());
  const rt::LlamaConfig& c = (*llama)->config();
  const double open_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_open).count();

  absl::StatusOr<rt::Tokenizer> tok = absl::NotFoundError("");
  if (!tokenizer_path.empty()) {
    tok = rt::Tokenizer::FromFile(tokenizer_path, c.vocab_size);
  } else if (const MetaValue* v =
                 (*llama)->model().reader().FindMeta(meta_keys::kTokenizerLlama2c)) {
    tok = rt::Tokenizer::FromBytes(v->bytes, c.vocab_size,
                                   model_path + ":" + meta_keys::kTokenizerLlama2c);
  } else {
    tok = absl::InvalidArgumentError(
        absl::StrFormat("%s has no %s metadata; pass --tokenizer", model_path,
                        meta_keys::kTokenizerLlama2c));
  }
  if (!tok.ok()) return Fail(tok.status());

  if (steps <= 0 || steps > c.seq_len) steps = c.seq_len;
  if (seed == 0) {
    seed = static_cast<uint64_t>(
        std::chrono::system_clock::now().time_since_epoch().count());
  }
  rt::Sampler sampler(temperature, topp, seed);
  const std::vector<int> prompt_tokens = tok->Encode(prompt, true, false);

  // As run.c: time from the end of the first forward pass.
  std::chrono::steady_clock::time_point start;
  int emitted = 0;
  std::string text;  // --json: the text goes into the object
  auto forward = [&](int token, int pos) { return (*llama)->Forward(token, pos); };
  auto emit = [&](int prev, int next) {
    if (emitted++ == 0) start = std::chrono::steady_clock::now();
    std::string piece = tok->Printable(prev, next);
    if (json) {
      text += piece;
      return;
    }
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  auto seq = rt::Generate(forward, prompt_tokens, steps, sampler, emit);
  if (!json) std::printf("\n");
  if (!seq.ok()) return Fail(seq.status());
  const double gen_s =
      emitted > 1
          ? std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()
          : 0.0;
  const double tok_s = emitted > 1 ? (emitted - 1) / gen_s : 0.0;
  if (json) {
    const ModelStats st = (*llama)->model().stats();
    JsonObject loader;
    loader.Add("layer_requests", uint64_t{st.layer_requests}).Add("hits", uint64_t{st.hits});
    loader.Add("decodes", uint64_t{st.decodes}).Add("decode_seconds", st.decode_seconds);
    loader.Add("decoded_bytes", uint64_t{st.decoded_bytes});
    loader.Add("prefetches", uint64_t{st.prefetches}).Add("prefetch_hits", uint64_t{st.prefetch_hits});
    loader.Add("prefetch_skipped", uint64_t{st.prefetch_skipped});
    loader.Add("evictions", uint64_t{st.evictions}).Add("over_budget", uint64_t{st.over_budget});
    loader.Add("peak_resident_bytes", uint64_t{st.peak_resident_bytes});
    JsonObject o;
    o.Add("model", model_path).Add("mode", rt::ModeName(*mode)).Add("text", text);
    o.Add("tokens", emitted).Add("open_ms", open_s * 1e3);
    if (emitted > 1) {
      o.Add("tok_per_s", tok_s);
    } else {
      o.Raw("tok_per_s", "null");
    }
    o.Raw("loader", loader.str());
    std::printf("%s\n", o.str().c_str());
    return kExitSuccess;
  }
  if (quiet) return kExitSuccess;
  if (emitted > 1) {
    std::fflush(stdout);
    std::fprintf(stderr, "achieved tok/s: %.1f (mode %s, open %.1f ms)\n", tok_s,
                 rt::ModeName(*mode), open_s * 1e3);
  }
  if (stats) {
    const ModelStats st = (*llama)->model().stats();
    std::fprintf(stderr,
                 "loader: %llu requests, %llu hits, %llu decodes (%.1f ms, %.1f MiB), "
                 "%llu prefetches (%llu used, %llu skipped), %llu evictions, %llu over "
                 "budget, peak %.1f MiB decoded\n",
                 (unsigned long long)st.layer_requests, (unsigned long long)st.hits,
                 (unsigned long long)st.decodes, st.decode_seconds * 1e3,
                 st.decoded_bytes / 1048576.0, (unsigned long long)st.prefetches,
                 (unsigned long long)st.prefetch_hits,
                 (unsigned long long)st.prefetch_skipped,
                 (unsigned long long)st.evictions, (unsigned long long)st.over_budget,
                 st.peak_resident_bytes / 1048576.0);
  }
  return kExitSuccess;
}
