// tqm-eval: how closely a packed (quantized) model follows its float32
// original on a text: perplexity of both, mean KL(reference || model) per
// position, top-1 agreement, teacher-forced over every position.
//
//   tqm-eval MODEL.tqm --reference SOURCE --text FILE [--tokenizer FILE]
//       [--max-tokens N] [--mode int8] [--threads N] [-q] [--json]
//
// MODEL runs on the CPU runtime of libtqm/src/runtime (tqm-run's). SOURCE is
// the float checkpoint in any format tqm-pack reads: it is packed in memory
// with every tensor kept as the source holds it (float32 stays float32) and
// run in the same runtime in float32, so both sides share every kernel but
// the weights. SOURCE may also be a .tqm file (run dequantized to float32).
//
// The text is split into documents at newlines (one story per line in
// ../shared/text); each non-empty line is encoded as run.c encodes a prompt
// (BOS, the dummy-prefix space, the merges) and evaluated in windows of
// seq_len tokens (the shorter of the model's and the reference's): a line
// longer than that continues in further windows that start again with BOS. Every token
// after a window's BOS is a position: the logits at the token before it predict it.
//
// The command line follows the tools' contract (tool_util.h): exit status 0
// success, 1 failure (unreadable or mismatched inputs), 2 usage error.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "runtime/llama.h"
#include "runtime/tokenizer.h"
#include "tool_util.h"
#include "tqm/format.h"
#include "tqm/import.h"
#include "tqm/metadata.h"
#include "tqm/reader.h"
#include "tqm/status.h"
#include "tqm/writer.h"

namespace tqm {
namespace {

constexpr char kTool[] = "tqm-eval";

// Largest text file read (the tokens of 256 MiB of text are far more
// positions than an evaluation needs; --max-tokens caps those).
constexpr uint64_t kMaxTextBytes = uint64_t{256} << 20;

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what,
                                     uint64_t max_bytes) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrFormat("cannot open %s '%s': %s", what, path, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s '%s' is not a regular file", what, path));
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrFormat("cannot open %s '%s'", what, path));
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0 || static_cast<uint64_t>(size) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s '%s' has %d bytes, more than the %d this tool reads", what,
                        path, size, max_bytes));
  }
  f.seekg(0);
  std::string s(static_cast<size_t>(size), '\0');
  if (!f.read(s.data(), size)) {
    return absl::DataLossError(absl::StrFormat("cannot read %s '%s'", what, path));
  }
  return s;
}

// True when `path` starts with the .tqm magic.
bool IsTqm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[sizeof format::kMagic];
  return f && f.read(magic, sizeof magic) &&
         std::equal(magic, magic + sizeof magic,
                    reinterpret_cast<const char*>(format::kMagic));
}

// The float32 reference: a runtime over SOURCE with nothing quantized.
struct Reference {
  std::string packed;  // the in-memory file the runtime reads (non-.tqm sources)
  std::unique_ptr<rt::Llama> llama;
};

absl::StatusOr<std::unique_ptr<Reference>> OpenReference(const std::string& path,
                                                         int threads) {
  auto ref = std::make_unique<Reference>();
  rt::RuntimeOptions o;
  o.mode = rt::Mode::kDecodedF32;
  o.threads = threads;
  if (IsTqm(path)) {
    TQM_ASSIGN_OR_RETURN(ref->llama, rt::Llama::Open(path, o));
    return ref;
  }
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<TensorSource> src, OpenModel(path));
  PackOptions po;
  po.keep = [](const std::string&) { return true; };  // nothing quantized
  po.entropy = false;  // stored chunks: nothing to gain from coding them here
  po.max_table_entries = 0;
  po.threads = static_cast<unsigned>(threads);
  TQM_ASSIGN_OR_RETURN(ref->packed, PackToString(*src, po));
  TQM_ASSIGN_OR_RETURN(
      std::unique_ptr<Reader> reader,
      Reader::FromBuffer(
          absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(ref->packed.data()),
                              ref->packed.size()),
          path));
  TQM_ASSIGN_OR_RETURN(ref->llama, rt::Llama::FromReader(std::move(reader), o));
  return ref;
}

// log-softmax of `logits` in double.
void LogSoftmax(absl::Span<const float> logits, std::vector<double>* out) {
  out->resize(logits.size());
  const double mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(l - mx);
  const double lse = mx + std::log(sum);
  for (size_t i = 0; i < logits.size(); ++i) (*out)[i] = logits[i] - lse;
}

size_t ArgMax(absl::Span<const float> v) {
  return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

struct Totals {
  uint64_t positions = 0;
  uint64_t agree = 0;
  double nll = 0, nll_ref = 0, kl = 0;
};

// run.c's merge loop takes time quadratic in the length of what it encodes:
// longer lines are encoded in pieces of at most this many bytes, cut at a
// space, which the next piece's dummy-prefix space stands for (no token of
// a llama2.c vocabulary spans a word boundary; a piece cut inside a word,
// where a line has no space for this long, gains that one space).
constexpr size_t kMaxPieceBytes = 4096;

std::vector<int> EncodeLine(const rt::Tokenizer& tok, absl::string_view line) {
  std::vector<int> ids = {rt::kBos};
  while (!line.empty()) {
    absl::string_view piece = line;
    size_t next = line.size();
    if (line.size() > kMaxPieceBytes) {
      const size_t space = line.rfind(' ', kMaxPieceBytes);
      if (space != absl::string_view::npos && space > 0) {
        piece = line.substr(0, space);
        next = space + 1;
      } else {
        // No space: cut at a code point boundary.
        size_t cut = kMaxPieceBytes;
        while (cut > 1 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
        piece = line.substr(0, cut);
        next = cut;
      }
    }
    const std::vector<int> p = tok.Encode(piece, /*bos=*/false, /*eos=*/false);
    ids.insert(ids.end(), p.begin(), p.end());
    line.remove_prefix(next);
  }
  return ids;
}

// Splits the text into windows of at most `window` tokens, each starting
// with BOS (see the file comment), until they hold `limit` positions.
std::vector<std::vector<int>> Windows(const rt::Tokenizer& tok, const std::string& text,
                                      int window, uint64_t limit) {
  std::vector<std::vector<int>> out;
  uint64_t positions = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (positions >= limit) break;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == absl::string_view::npos) continue;
    const std::vector<int> ids = EncodeLine(tok, line);
    // ids[0] is BOS; the rest go window - 1 at a time after a BOS each.
    for (size_t i = 1; i < ids.size() && positions < limit; i += window - 1) {
      std::vector<int> w = {rt::kBos};
      const size_t end = std::min(ids.size(), i + window - 1);
      w.insert(w.end(), ids.begin() + i, ids.begin() + end);
      positions += w.size() - 1;
      out.push_back(std::move(w));
    }
  }
  return out;
}

int Run(int argc, char** argv) {
  CLI::App app{
      "tqm-eval: compare a packed model with its float32 original on a text:\n"
      "perplexity of both, mean KL(reference || model) in nats per position, top-1\n"
      "agreement (same argmax), teacher-forced over every position.\n\n"
      "The reference is the float checkpoint (any input tqm-pack reads, run in float32)\n"
      "or another .tqm file (run dequantized). Each non-empty line of the text is one\n"
      "document: BOS, then its tokens (run.c's encoding, with the dummy-prefix space),\n"
      "in windows of seq_len tokens (the shorter of the two models'); a longer line\n"
      "continues in windows that start again with BOS. Every token after a window's\n"
      "BOS is one position; the text's perplexity depends on this split (stories\n"
      "joined into one line without BOS between them score higher).\n\n"
      "Example:\n"
      "  tqm-eval stories260K-q4.tqm --reference stories260K.bin \\\n"
      "      --text stories260K-heldout.txt --json\n"};
  SetUpCommandLine(app, kTool);
  std::string model_path, reference_path, text_path, tokenizer_path, mode_name = "int8";
  int threads = 0;
  int64_t max_tokens = 0;
  bool quiet = false, json = false;
  app.add_option("model", model_path, "the .tqm file to evaluate")->required();
  app.add_option("--reference,-r", reference_path,
                 "the float checkpoint (llama2.c .bin, .safetensors, Hugging Face "
                 "directory, .gguf) or a .tqm file")
      ->required();
  app.add_option("--text", text_path, "UTF-8 text, one document per line")->required();
  app.add_option("--tokenizer,-z", tokenizer_path,
                 "llama2.c tokenizer file (default: the model's tokenizer.llama2c "
                 "metadata, else the reference's)");
  app.add_option("--max-tokens", max_tokens,
                 "evaluate at most this many positions (0: all)");
  app.add_option("--mode,-m", mode_name,
                 "runtime mode for the model: decoded-f32 | int8 | stream | fused")
      ->check(CLI::IsMember({"decoded-f32", "int8", "stream", "fused"}));
  AddThreadsOption(app, &threads, "compute threads per model (0: all cores)");
  AddQuietFlag(app, &quiet, "no progress and no summary (the exit status tells)");
  AddJsonFlag(
      app, &json,
      "print {\"kl\", \"top1\", \"ppl\", \"ppl_reference\", \"positions\"} on stdout");
  TQM_PARSE_COMMAND_LINE(app, argc, argv);

  if (max_tokens < 0) return UsageError(kTool, "--max-tokens must be 0 or more");
  auto mode = rt::ParseMode(mode_name);
  if (!mode.ok()) return UsageError(kTool, std::string(mode.status().message()));
  auto fail = [](const absl::Status& s) {
    return Failure(kTool, std::string(s.message()));
  };

  // The text first: the cheapest input to get wrong.
  auto text = ReadFile(text_path, "text file", kMaxTextBytes);
  if (!text.ok()) return fail(text.status());

  rt::RuntimeOptions o;
  o.mode = *mode;
  o.threads = threads;
  o.on_warning = [quiet](const std::string& m) {
    if (!quiet) std::cerr << kTool << ": warning: " << EscapeForTerminal(m) << "\n";
  };
  auto model = rt::Llama::Open(model_path, o);
  if (!model.ok()) return fail(model.status());
  auto ref = OpenReference(reference_path, threads);
  if (!ref.ok()) return fail(ref.status());
  rt::Llama& m = **model;
  rt::Llama& r = *(*ref)->llama;
  const rt::LlamaConfig &mc = m.config(), &rc = r.config();
  if (mc.vocab_size != rc.vocab_size || mc.dim != rc.dim || mc.n_layers != rc.n_layers) {
    return Failure(
        kTool,
        absl::StrFormat("%s and %s are not the same model: vocabulary %d vs %d, dim "
                        "%d vs %d, layers %d vs %d",
                        model_path, reference_path, mc.vocab_size, rc.vocab_size, mc.dim,
                        rc.dim, mc.n_layers, rc.n_layers));
  }
  const int window = std::min(mc.seq_len, rc.seq_len);
  if (mc.seq_len != rc.seq_len && !quiet) {
    // Shorter windows mean less context and a higher perplexity for both.
    std::cerr << absl::StrFormat(
        "%s: note: windows of %d tokens: seq_len is %d in %s and %d in %s\n", kTool,
        window, mc.seq_len, EscapeForTerminal(model_path), rc.seq_len,
        EscapeForTerminal(reference_path));
  }
  if (window < 2) {
    return Failure(kTool, absl::StrFormat("%s: seq_len %d leaves no position to predict",
                                          model_path, window));
  }

  absl::StatusOr<rt::Tokenizer> tok = absl::NotFoundError("");
  if (!tokenizer_path.empty()) {
    tok = rt::Tokenizer::FromFile(tokenizer_path, mc.vocab_size);
  } else if (const MetaValue* v =
                 m.model().reader().FindMeta(meta_keys::kTokenizerLlama2c)) {
    tok = rt::Tokenizer::FromBytes(v->bytes, mc.vocab_size,
                                   model_path + ":" + meta_keys::kTokenizerLlama2c);
  } else if (const MetaValue* v =
                 r.model().reader().FindMeta(meta_keys::kTokenizerLlama2c)) {
    tok = rt::Tokenizer::FromBytes(v->bytes, mc.vocab_size,
                                   reference_path + ":" + meta_keys::kTokenizerLlama2c);
  } else {
    tok = absl::InvalidArgumentError(
        absl::StrFormat("neither %s nor %s has %s metadata; pass --tokenizer", model_path,
                        reference_path, meta_keys::kTokenizerLlama2c));
  }
  if (!tok.ok()) return fail(tok.status());

  const std::vector<std::vector<int>> windows =
      Windows(*tok, *text, window, max_tokens > 0 ? max_tokens : UINT64_MAX);
  uint64_t total = 0;
  for (const auto& w : windows) total += w.size() - 1;
  if (max_tokens > 0) total = std::min<uint64_t>(total, max_tokens);
  if (total == 0) {
    return Failure(kTool, absl::StrFormat("%s: no text to evaluate", text_path));
  }

  Totals t;
  size_t used_windows = 0;
  ProgressBar bar;
  std::vector<float> lm;
  std::vector<double> lp, lq;
  for (const std::vector<int>& w : windows) {
    if (t.positions == total) break;
    ++used_windows;
    for (size_t pos = 0; pos + 1 < w.size() && t.positions < total; ++pos) {
      auto lr = r.Forward(w[pos], static_cast<int>(pos));
      if (!lr.ok()) return fail(lr.status());
      LogSoftmax(*lr, &lp);
      const size_t ref_top = ArgMax(*lr);
      auto lmod = m.Forward(w[pos], static_cast<int>(pos));
      if (!lmod.ok()) return fail(lmod.status());
      LogSoftmax(*lmod, &lq);
      const size_t top = ArgMax(*lmod);
      const int next = w[pos + 1];
      t.nll_ref -= lp[next];
      t.nll -= lq[next];
      double kl = 0;
      for (size_t i = 0; i < lp.size(); ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
      t.kl += kl;
      t.agree += top == ref_top;
      ++t.positions;
    }
    if (!quiet) {
      bar.Update(absl::StrFormat("%d/%d positions", t.positions, total),
                 static_cast<double>(t.positions) / total);
    }
  }
  bar.Done();

  const double n = static_cast<double>(t.positions);
  const double kl = t.kl / n, top1 = t.agree / n;
  const double ppl = std::exp(t.nll / n), ppl_ref = std::exp(t.nll_ref / n);
  if (quiet) return kExitSuccess;
  if (json) {
    JsonObject j;
    j.Add("kl", kl).Add("top1", top1).Add("ppl", ppl).Add("ppl_reference", ppl_ref);
    j.Add("positions", t.positions);
    std::cout << j.str() << "\n";
    return kExitSuccess;
  }
  std::cout << absl::StrFormat(
      "positions:       %d (%d windows of at most %d tokens)\n"
      "perplexity:      %.4f (reference %.4f)\n"
      "mean KL:         %.6f nats/position (reference || model)\n"
      "top-1 agreement: %.4f\n",
      t.positions, used_windows, window, ppl, ppl_ref, kl, top1);
  return kExitSuccess;
}

}  // namespace
}  // namespace tqm

int main(int argc, char** argv) { return tqm::Run(argc, argv); }
