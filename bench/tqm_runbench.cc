// tqm-runbench: measurements for the loader and the CPU runtime (issue 4).
// Not a test: it reports numbers, with ratios against a baseline measured
// in the same run.
//
//   tqm-runbench open [--tensors 10000]        Model::Open on a many-tensor file
//   tqm-runbench pack SRC OUT [--per-row] [--tokenizer tok512.bin] [--no-entropy]
//   tqm-runbench quality [--model stories260K.bin] [--per-row]
//                                               8-bit vs float32: top-1, KL
//   tqm-runbench modes MODEL.tqm [--tokens N] [--budget-mb B] [--threads T]
//                                               tok/s and peak RSS per mode
//   tqm-runbench synth OUT.tqm [--layers 24 ...] a Llama-shaped random model
//   tqm-runbench matvec MODEL.tqm [--threads T]  int8 vs fused matrix-vector
//
// Each mode of `modes` runs in its own forked process so that its peak RSS
// (VmHWM) and peak anonymous RSS (RssAnon, sampled every millisecond) are
// its own.

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "base/parallel.h"
#include "runtime/kernels.h"
#include "runtime/llama.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"
#include "tool_util.h"
#include "tqm/import.h"
#include "tqm/loader.h"
#include "tqm/reader.h"
#include "tqm/source.h"
#include "tqm/writer.h"

#ifndef TQM_RUNBENCH_SHARED_DIR
#define TQM_RUNBENCH_SHARED_DIR "../shared"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using tqm::rt::Mode;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "tqm-runbench: %s\n", std::string(s.ToString()).c_str());
  return 1;
}

// Value in kB of a /proc/self/status field ("VmHWM", "RssAnon", ...).
long StatusKb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(f, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') {
      return std::strtol(line.c_str() + n + 1, nullptr, 10);
    }
  }
  return -1;
}

// Samples RssAnon every millisecond while alive.
class AnonPeak {
 public:
  AnonPeak()
      : thread_([this] {
          while (!stop_.load()) {
            peak_ = std::max(peak_.load(), StatusKb("RssAnon"));
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
        }) {}
  ~AnonPeak() { Stop(); }
  long Stop() {
    if (thread_.joinable()) {
      stop_ = true;
      thread_.join();
      peak_ = std::max(peak_.load(), StatusKb("RssAnon"));
    }
    return peak_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<long> peak_{0};
  std::thread thread_;
};

// Runs `fn` in a child process and returns what it printed (a line).
std::string InChild(const std::function<std::string()>& fn) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    std::string out = fn();
    ssize_t w = write(fds[1], out.data(), out.size());
    (void)w;
    close(fds[1]);
    _exit(0);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, n);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (out.empty()) out = absl::StrFormat("child failed (status %d)", status);
  return out;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// ---------------------------------------------------------------------------
// open: a file with many small tensors.

int CmdOpen(int tensors, const std::string& dir) {
  tqm::MemorySource src;
  const int per_layer = 100;
  std::vector<float> v(64);
  for (int i = 0; i < tensors; ++i) {
    for (size_t k = 0; k < v.size(); ++k) v[k] = std::sin(0.1f * (i + k));
    src.Add(absl::StrFormat("model.layers.%d.t%d.weight", i / per_layer, i % per_layer),
            {8, 8}, v);
  }
  const std::string path = dir + "/tqm-runbench-open.tqm";
  tqm::PackOptions po;
  auto stats = tqm::Pack(src, path, po);
  if (!stats.ok()) return Fail(stats.status());
  std::vector<double> reader_ms, model_ms;
  for (int rep = 0; rep < 20; ++rep) {
    auto t0 = Clock::now();
    auto r = tqm::Reader::Open(path);
    auto t1 = Clock::now();
    if (!r.ok()) return Fail(r.status());
    auto m = tqm::Model::Open(path, {});
    auto t2 = Clock::now();
    if (!m.ok()) return Fail(m.status());
    reader_ms.push_back(Seconds(t0, t1) * 1e3);
    model_ms.push_back(Seconds(t1, t2) * 1e3);
  }
  std::sort(reader_ms.begin(), reader_ms.end());
  std::sort(model_ms.begin(), model_ms.end());
  std::printf(
      "open: %d tensors, file %.2f MiB (index %.2f MiB); Reader::Open median %.2f ms "
      "(min "
      "%.2f); Model::Open median %.2f ms (min %.2f); target < 20 ms\n",
      tensors, stats->file_bytes / 1048576.0, stats->index_bytes / 1048576.0,
      reader_ms[10], reader_ms[0], model_ms[10], model_ms[0]);
  std::remove(path.c_str());
  return 0;
}

// ---------------------------------------------------------------------------
// pack

int CmdPack(const std::string& src_path, const std::string& out, bool per_row,
            const std::string& tokenizer, bool no_entropy) {
  if (absl::Status s = tqm::CheckNotAnInput(out, {src_path, tokenizer}); !s.ok()) return Fail(s);
  auto src = tqm::OpenModel(src_path);
  if (!src.ok()) return Fail(src.status());
  tqm::PackOptions po;
  if (per_row) po.granularity = tqm::Granularity::kRow;
  if (no_entropy) po.entropy = false;
  if (!tokenizer.empty()) {
    po.extra_metadata.push_back({tqm::meta_keys::kTokenizerLlama2c,
                                 tqm::MetaValue::Bytes(ReadFileBytes(tokenizer))});
  }
  auto stats = tqm::Pack(**src, out, po);
  if (!stats.ok()) return Fail(stats.status());
  std::printf(
      "%s: %d tensors, %.1f KiB (int8 %.1f KiB), %d stored / %d seqtable chunks\n",
      out.c_str(), (int)stats->tensors, stats->file_bytes / 1024.0,
      stats->int8_bytes / 1024.0, (int)stats->chunks_stored, (int)stats->chunks_seqtable);
  return 0;
}

// ---------------------------------------------------------------------------
// quality: 8-bit stories260K against its float32 original.

struct Agreement {
  long positions = 0, top1 = 0;
  double kl = 0, max_kl = 0, nll_f32 = 0, nll_q = 0;
};

void LogSoftmax(absl::Span<const float> logits, std::vector<double>* out) {
  double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(l - max);
  const double lse = max + std::log(sum);
  out->resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) (*out)[i] = logits[i] - lse;
}

int CmdQuality(const std::string& model_path, const std::string& tok_path, bool per_row,
               bool no_entropy, int sequences) {
  auto src = tqm::OpenLlama2c(model_path);
  if (!src.ok()) return Fail(src.status());
  auto ref = tqm::rt::ReferenceLlama::FromSource(**src);
  if (!ref.ok()) return Fail(ref.status());
  tqm::PackOptions po;
  if (per_row) po.granularity = tqm::Granularity::kRow;
  if (no_entropy) po.entropy = false;
  tqm::PackStats ps;
  auto bytes = tqm::PackToString(**src, po, &ps);
  if (!bytes.ok()) return Fail(bytes.status());
  auto reader = tqm::Reader::FromBuffer(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()),
      "stories260K.tqm");
  if (!reader.ok()) return Fail(reader.status());
  tqm::rt::RuntimeOptions ro;
  ro.mode = Mode::kInt8;
  ro.threads = 1;
  auto q = tqm::rt::Llama::FromReader(std::move(*reader), ro);
  if (!q.ok()) return Fail(q.status());
  const tqm::rt::LlamaConfig& c = (*ref)->config();
  auto tok = tqm::rt::Tokenizer::FromFile(tok_path, c.vocab_size);
  if (!tok.ok()) return Fail(tok.status());

  // The fixed text: continuations of fixed prompts generated by the float32
  // model itself, sampled (temperature 1, no top-p) with fixed seeds, and a
  // greedy one; each runs to the full sequence length.
  const char* prompts[] = {"Once upon a time", "One day, a little boy named Tom",
                           "The cat and the dog", "Lily wanted to", "In a small town"};
  auto ref_forward = [&](int t, int p) -> absl::StatusOr<absl::Span<const float>> {
    return (*ref)->Forward(t, p);
  };
  std::printf("quality: stories260K, 8-bit %s (file %.1f KiB vs float32 %.1f KiB)\n",
              per_row ? "per-row" : "per-tensor", ps.file_bytes / 1024.0,
              ps.f32_bytes / 1024.0);
  for (int greedy = 0; greedy <= 1; ++greedy) {
    Agreement a;
    std::vector<double> lp, lq;
    const int nseq = greedy ? 1 : sequences;
    for (int s = 0; s < nseq; ++s) {
      tqm::rt::Sampler sampler(greedy ? 0.0f : 1.0f, 1.0f, 1000 + s);
      std::vector<int> prompt = tok->Encode(prompts[s % 5], true, false);
      auto seq = tqm::rt::Generate(ref_forward, prompt, c.seq_len, sampler);
      if (!seq.ok()) return Fail(seq.status());
      if (s == 0) {
        std::string text;
        for (size_t i = 1; i < std::min<size_t>(seq->size(), 40); ++i) {
          text += tok->Printable((*seq)[i - 1], (*seq)[i]);
        }
        std::printf("  %s text, first tokens: \"%s...\"\n", greedy ? "greedy" : "sampled",
                    text.c_str());
      }
      // Teacher forcing: both models read the same tokens.
      for (size_t pos = 0; pos < seq->size(); ++pos) {
        absl::Span<const float> lf = (*ref)->Forward((*seq)[pos], pos);
        LogSoftmax(lf, &lp);
        auto lqs = (*q)->Forward((*seq)[pos], pos);
        if (!lqs.ok()) return Fail(lqs.status());
        LogSoftmax(*lqs, &lq);
        double kl = 0;
        for (size_t i = 0; i < lp.size(); ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
        a.kl += kl;
        a.max_kl = std::max(a.max_kl, kl);
        a.top1 += tqm::rt::Argmax(lf) == tqm::rt::Argmax(*lqs);
        if (pos + 1 < seq->size()) {
          a.nll_f32 -= lp[(*seq)[pos + 1]];
          a.nll_q -= lq[(*seq)[pos + 1]];
        }
        ++a.positions;
      }
    }
    const long preds = a.positions - nseq;
    std::printf(
        "  %s text (%d sequence%s, %ld positions): top-1 agreement %.2f%% (%ld/%ld), "
        "mean "
        "KL(f32 || 8-bit) %.3g nats (max %.3g); perplexity f32 %.3f, 8-bit %.3f\n",
        greedy ? "greedy" : "sampled", nseq, nseq > 1 ? "s" : "", a.positions,
        100.0 * a.top1 / a.positions, a.top1, a.positions, a.kl / a.positions, a.max_kl,
        std::exp(a.nll_f32 / preds), std::exp(a.nll_q / preds));
  }
  return 0;
}

// ---------------------------------------------------------------------------
// modes: tok/s and peak RSS per mode.

std::string RunMode(const std::string& path, Mode mode, int threads, double budget_mb,
                    int tokens, int prefetch, bool zero_copy) {
  AnonPeak anon;
  tqm::rt::RuntimeOptions ro;
  ro.mode = mode;
  ro.threads = threads;
  ro.budget_bytes = static_cast<uint64_t>(budget_mb * 1048576.0);
  ro.prefetch = prefetch;
  ro.zero_copy = zero_copy;
  int warnings = 0;
  ro.on_warning = [&](const std::string&) { ++warnings; };
  const auto t0 = Clock::now();
  auto llama = tqm::rt::Llama::Open(path, ro);
  if (!llama.ok()) return std::string(llama.status().ToString());
  const auto t1 = Clock::now();
  const tqm::rt::LlamaConfig& c = (*llama)->config();
  tokens = std::min(tokens, c.seq_len - 1);
  int token = tqm::rt::kBos;
  auto step = [&](int pos) -> absl::Status {
    auto logits = (*llama)->Forward(token, pos);
    if (!logits.ok()) return logits.status();
    token = tqm::rt::Argmax(*logits);
    if (token == tqm::rt::kBos) token = 3;
    return absl::OkStatus();
  };
  if (auto s = step(0); !s.ok()) return std::string(s.ToString());  // warm-up
  const auto t2 = Clock::now();
  for (int pos = 1; pos <= tokens; ++pos) {
    if (auto s = step(pos); !s.ok()) return std::string(s.ToString());
  }
  const auto t3 = Clock::now();
  const long anon_kb = anon.Stop();
  const tqm::ModelStats st = (*llama)->model().stats();
  return absl::StrFormat(
      "%-12s %8.1f tok/s  open+decode %7.1f ms  first token %7.1f ms  peak RSS %7.1f MiB "
      " "
      "peak anon %7.1f MiB  loader peak %6.1f MiB  decodes %d (%d into fresh buffers)  "
      "evictions %d  prefetch %d/%d used  over-budget %d",
      tqm::rt::ModeName(mode), tokens / Seconds(t2, t3), Seconds(t0, t1) * 1e3,
      Seconds(t1, t2) * 1e3, StatusKb("VmHWM") / 1024.0, anon_kb / 1024.0,
      st.peak_resident_bytes / 1048576.0, (int)st.decodes, (int)st.fresh_buffers,
      (int)st.evictions,
      (int)st.prefetch_hits, (int)st.prefetches, (int)st.over_budget);
}

int CmdModes(const std::string& path, int tokens, int threads, double budget_mb,
             const std::string& modes, int prefetch, bool zero_copy) {
  std::printf(
      "modes: %s, %d tokens after one warm-up, threads %d, stream budget %.1f MiB, "
      "prefetch %d, zero-copy %s, kernels %s\n",
      path.c_str(), tokens, threads, budget_mb, prefetch, zero_copy ? "on" : "off",
      tqm::rt::UsingAvx2() ? "avx2" : "portable");
  std::stringstream ss(modes);
  std::string name;
  while (std::getline(ss, name, ',')) {
    auto mode = tqm::rt::ParseMode(name);
    if (!mode.ok()) return Fail(mode.status());
    const double budget = *mode == Mode::kStream ? budget_mb : 0;
    std::printf("  %s\n", InChild([&] {
                            return RunMode(path, *mode, threads, budget, tokens, prefetch,
                                           zero_copy);
                          }).c_str());
  }
  return 0;
}

// ---------------------------------------------------------------------------
// synth: a Llama-shaped model of random weights.

// Weights: a bell-shaped body plus one pair of outliers per tensor, so that
// per-tensor 8-bit quantization uses few levels around the zero point, as
// with real checkpoints (where outliers set the range).
class SynthSource : public tqm::TensorSource {
 public:
  SynthSource(int dim, int hidden, int layers, int heads, int kv_heads, int vocab,
              int seq, float outlier)
      : outlier_(outlier) {
    namespace k = tqm::meta_keys;
    meta_ = {{k::kArchitecture, tqm::MetaValue::String("llama")},
             {k::kDim, tqm::MetaValue::Int(dim)},
             {k::kHiddenDim, tqm::MetaValue::Int(hidden)},
             {k::kLayers, tqm::MetaValue::Int(layers)},
             {k::kHeads, tqm::MetaValue::Int(heads)},
             {k::kKvHeads, tqm::MetaValue::Int(kv_heads)},
             {k::kVocabSize, tqm::MetaValue::Int(vocab)},
             {k::kSeqLen, tqm::MetaValue::Int(seq)},
             {k::kNormEps, tqm::MetaValue::Float(1e-5)},
             {k::kRopeTheta, tqm::MetaValue::Float(10000.0)},
             {k::kRopeLayout, tqm::MetaValue::String("meta")},
             {k::kTiedClassifier, tqm::MetaValue::Int(1)}};
    const uint64_t d = dim, h = hidden, kv = uint64_t(dim) / heads * kv_heads;
    auto add = [&](std::string name, std::vector<uint64_t> dims) {
      tqm::SourceTensor t;
      t.name = std::move(name);
      t.dims = std::move(dims);
      tensors_.push_back(std::move(t));
    };
    add("model.embed_tokens.weight", {uint64_t(vocab), d});
    for (int l = 0; l < layers; ++l) {
      auto n = [&](const char* s) { return tqm::rt::LayerTensorName(l, s); };
      add(n("input_layernorm.weight"), {d});
      add(n("self_attn.q_proj.weight"), {d, d});
      add(n("self_attn.k_proj.weight"), {kv, d});
      add(n("self_attn.v_proj.weight"), {kv, d});
      add(n("self_attn.o_proj.weight"), {d, d});
      add(n("post_attention_layernorm.weight"), {d});
      add(n("mlp.gate_proj.weight"), {h, d});
      add(n("mlp.down_proj.weight"), {d, h});
      add(n("mlp.up_proj.weight"), {h, d});
    }
    add("model.norm.weight", {d});
  }
  const std::vector<tqm::SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<tqm::MetaEntry>& metadata() const override { return meta_; }
  absl::Status Read(size_t i, std::vector<float>* out) override {
    const tqm::SourceTensor& t = tensors_[i];
    uint64_t n = 1;
    for (uint64_t d : t.dims) n *= d;
    out->resize(n);
    uint64_t s = 0x9E3779B97F4A7C15ull * (i + 1);
    auto next = [&s]() {  // splitmix64
      uint64_t z = (s += 0x9E3779B97F4A7C15ull);
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      return z ^ (z >> 31);
    };
    if (t.dims.size() == 1) {
      for (uint64_t k = 0; k < n; ++k)
        (*out)[k] = 1.0f + 0.01f * ((next() >> 40) / 16777216.0f);
      return absl::OkStatus();
    }
    const float sigma = 0.02f;
    for (uint64_t k = 0; k < n; ++k) {
      const uint64_t r = next();
      // Sum of four 16-bit uniforms: mean 2, variance 1/3.
      float u = ((r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48)) /
                    65536.0f -
                2.0f;
      (*out)[k] = u * 1.7320508f * sigma;
    }
    (*out)[0] = outlier_ * sigma;
    (*out)[n - 1] = -outlier_ * sigma;
    return absl::OkStatus();
  }

 private:
  float outlier_;
  std::vector<tqm::SourceTensor> tensors_;
  std::vector<tqm::MetaEntry> meta_;
};

int CmdSynth(const std::string& out, int dim, int hidden, int layers, int heads,
             int kv_heads, int vocab, int seq, float outlier, bool entropy,
             bool no_table, uint32_t max_table) {
  SynthSource src(dim, hidden, layers, heads, kv_heads, vocab, seq, outlier);
  tqm::PackOptions po;
  po.entropy = entropy;
  po.max_table_entries = no_table ? 0 : max_table;
  const auto t0 = Clock::now();
  auto stats = tqm::Pack(src, out, po);
  if (!stats.ok()) return Fail(stats.status());
  std::printf(
      "synth: %s: %d layers, dim %d, hidden %d, vocab %d; %.1f MiB int8, file %.1f MiB "
      "(%.1f%%), table %d entries, %d stored / %d seqtable chunks, %.1f s\n",
      out.c_str(), layers, dim, hidden, vocab, stats->int8_bytes / 1048576.0,
      stats->file_bytes / 1048576.0, 100.0 * stats->file_bytes / stats->int8_bytes,
      (int)stats->table_entries, (int)stats->chunks_stored, (int)stats->chunks_seqtable,
      Seconds(t0, Clock::now()));
  return 0;
}

// ---------------------------------------------------------------------------
// matvec: int8 on decoded data vs fused decode-in-the-dot-product, over every
// quantized matrix of the numbered layers (one token's worth of products).

int CmdMatvec(const std::string& path, int reps, int threads) {
  std::string result = InChild([&]() -> std::string {
    tqm::ModelOptions mo;
    mo.threads = threads;
    auto model = tqm::Model::Open(path, mo);
    if (!model.ok()) return std::string(model.status().ToString());
    tqm::Model& m = **model;
    std::vector<tqm::LayerHandle> handles;
    struct Item {
      const tqm::TensorView* view;
      tqm::EncodedTensor enc;
    };
    std::vector<Item> items;
    uint64_t bytes = 0, max_cols = 0, max_rows = 0;
    std::vector<int> layers;
    for (int l = 0; l < m.num_layers(); ++l) {
      if (!m.HasLayer(l)) continue;
      auto h = m.Layer(l);
      if (!h.ok()) return std::string(h.status().ToString());
      handles.push_back(std::move(*h));
    }
    for (auto& h : handles) {
      for (const tqm::TensorView& v : h.tensors()) {
        if (!v.quantized()) continue;
        auto e = m.Encoded(v.tensor);
        if (!e.ok()) return std::string(e.status().ToString());
        items.push_back({&v, *e});
        bytes += v.info->numel;
        max_cols = std::max(max_cols, v.cols());
        max_rows = std::max(max_rows, v.rows());
      }
    }
    std::vector<float> x(max_cols), out(max_rows + 1);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
    tqm::ThreadPool pool(threads);
    // One matrix, rows split over the pool (int8) or chunks split over the pool
    // with per-group row partials (fused), as the runtime does.
    auto int8 = [&](const Item& it) {
      const tqm::TensorView& v = *it.view;
      const uint64_t rows = v.rows(), cols = v.cols();
      const size_t blocks = std::min<uint64_t>(rows, pool.threads() * 4);
      const float sx = tqm::rt::Sum(x.data(), cols);
      pool.ParallelFor(blocks, [&](size_t b) {
        for (uint64_t r = rows * b / blocks; r < rows * (b + 1) / blocks; ++r) {
          const tqm::Affine& a = v.RowAffine(r);
          out[r] = a.scale *
                   (tqm::rt::DotU8(v.q.data() + r * cols, x.data(), cols) - a.zero * sx);
        }
      });
    };
    std::vector<std::vector<float>> partial(pool.threads() * 2);
    auto fused = [&](const Item& it) {
      const tqm::TensorInfo& ti = *it.enc.info;
      const uint64_t cols = ti.numel / ti.dims[0];
      const size_t groups = std::min<size_t>(ti.chunks.size(), partial.size());
      pool.ParallelFor(groups, [&](size_t g) {
        const size_t c0 = ti.chunks.size() * g / groups,
                     c1 = ti.chunks.size() * (g + 1) / groups;
        const uint64_t r0 = ti.chunks[c0].decoded_offset / cols;
        const uint64_t r1 =
            (ti.chunks[c1 - 1].decoded_offset + ti.chunks[c1 - 1].decoded_size - 1) /
            cols;
        partial[g].assign(r1 - r0 + 1, 0.0f);
        for (size_t c = c0; c < c1; ++c) {
          const tqm::ChunkInfo& ch = ti.chunks[c];
          (void)tqm::rt::FusedChunkDot(ch.codec, it.enc.chunk(c), it.enc.table,
                                       ch.decoded_offset, ch.decoded_size, cols, x.data(),
                                       partial[g].data(), r0);
        }
      });
    };
    auto time = [&](const std::function<void(const Item&)>& fn) {
      std::vector<double> t;
      for (int rep = 0; rep < reps; ++rep) {
        const auto t0 = Clock::now();
        for (const Item& it : items) fn(it);
        t.push_back(Seconds(t0, Clock::now()));
      }
      std::sort(t.begin(), t.end());
      return t[t.size() / 2];
    };
    time(int8);  // page in the decoded layers and the mapping
    time(fused);
    const double ti8 = time(int8), tfu = time(fused);
    size_t seq = 0, stored = 0, other = 0;
    uint64_t enc_bytes = 0;
    for (const Item& it : items) {
      for (const tqm::ChunkInfo& ch : it.enc.info->chunks) {
        enc_bytes += ch.encoded_size;
        if (ch.codec == tqm::format::kCodecSeqTable) {
          ++seq;
        } else if (ch.codec == tqm::format::kCodecStored) {
          ++stored;
        } else {
          ++other;
        }
      }
    }
    return absl::StrFormat(
        "matvec: %d matrices, %.1f MiB int8 (%.1f MiB encoded; %d seqtable / %d stored / "
        "%d "
        "other chunks), threads %d, median of %d: int8 %.2f ms (%.2f GB/s), fused %.2f "
        "ms "
        "(%.2f GB/s decoded), fused/int8 speed %.2fx",
        (int)items.size(), bytes / 1048576.0, enc_bytes / 1048576.0, (int)seq,
        (int)stored, (int)other, pool.threads(), reps, ti8 * 1e3, bytes / ti8 / 1e9,
        tfu * 1e3, bytes / tfu / 1e9, ti8 / tfu);
  });
  std::printf("%s\n", result.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Loader and runtime measurements (tqm issue 4)"};
  app.require_subcommand(1);
  tqm::SetUpCommandLine(app, "tqm-runbench");
  const std::string shared =
      std::string(TQM_RUNBENCH_SHARED_DIR) + "/models/stories260K/";

  int open_tensors = 10000;
  std::string open_dir = "/tmp";
  auto* open = app.add_subcommand("open", "time Model::Open on a file with many tensors");
  open->add_option("--tensors", open_tensors);
  open->add_option("--dir", open_dir);

  std::string pack_src, pack_out, pack_tok;
  bool pack_row = false, pack_noent = false;
  auto* pack =
      app.add_subcommand("pack", "pack a llama2.c/safetensors model (for tqm-run)");
  pack->add_option("src", pack_src)->required();
  pack->add_option("out", pack_out)->required();
  pack->add_flag("--per-row", pack_row);
  pack->add_option("--tokenizer", pack_tok, "embed as tokenizer.llama2c metadata");
  pack->add_flag("--no-entropy", pack_noent,
                 "stored + seqtable chunks only (format 1.0)");

  std::string q_model = shared + "stories260K.bin", q_tok = shared + "tok512.bin";
  bool q_row = false, q_noent = false;
  int q_seqs = 3;
  auto* quality =
      app.add_subcommand("quality", "8-bit vs float32: top-1 agreement and KL");
  quality->add_option("--model", q_model);
  quality->add_option("--tokenizer", q_tok);
  quality->add_option("--sequences", q_seqs, "sampled sequences of seq_len tokens");
  quality->add_flag("--per-row", q_row);
  quality->add_flag("--no-entropy", q_noent);

  std::string m_path, m_modes = "decoded-f32,int8,stream,fused";
  int m_tokens = 64, m_threads = 0, m_prefetch = 1;
  double m_budget = 128;
  auto* modes = app.add_subcommand("modes", "tok/s and peak RSS per mode");
  modes->add_option("model", m_path)->required();
  modes->add_option("--tokens", m_tokens);
  tqm::AddThreadsOption(*modes, &m_threads);
  modes->add_option("--budget-mb", m_budget, "stream mode budget");
  modes->add_option("--prefetch", m_prefetch);
  modes->add_option("--modes", m_modes);
  bool m_no_zero_copy = false;
  modes->add_flag("--no-zero-copy", m_no_zero_copy, "decode stored tensors too");

  std::string s_out;
  int s_dim = 2048, s_hidden = 5632, s_layers = 24, s_heads = 32, s_kv = 4,
      s_vocab = 8192, s_seq = 256;
  float s_outlier = 40;
  bool s_entropy = false, s_no_table = false;
  uint32_t s_max_table = tqm::format::kMaxTableEntries;
  auto* synth = app.add_subcommand("synth", "write a Llama-shaped random model");
  synth->add_option("out", s_out)->required();
  synth->add_option("--dim", s_dim);
  synth->add_option("--hidden", s_hidden);
  synth->add_option("--layers", s_layers);
  synth->add_option("--heads", s_heads);
  synth->add_option("--kv-heads", s_kv);
  synth->add_option("--vocab", s_vocab);
  synth->add_option("--seq-len", s_seq);
  synth->add_option("--outlier", s_outlier, "outlier magnitude in standard deviations");
  synth->add_flag("--entropy", s_entropy, "allow the entropy codecs");
  synth->add_flag("--no-table", s_no_table,
                  "no sequence table: with --entropy off, every chunk is stored "
                  "(read in place by the loader)");
  synth->add_option("--max-table", s_max_table,
                    "upper bound on sequence-table entries (a smaller table stays in "
                    "a faster cache level)");

  std::string v_path;
  int v_reps = 5, v_threads = 0;
  auto* matvec = app.add_subcommand("matvec", "int8 vs fused matrix-vector products");
  matvec->add_option("model", v_path)->required();
  matvec->add_option("--reps", v_reps);
  tqm::AddThreadsOption(*matvec, &v_threads);

  TQM_PARSE_COMMAND_LINE(app, argc, argv);
  const int hw = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  if (*open) return CmdOpen(open_tensors, open_dir);
  if (*pack) return CmdPack(pack_src, pack_out, pack_row, pack_tok, pack_noent);
  if (*quality) return CmdQuality(q_model, q_tok, q_row, q_noent, q_seqs);
  if (*modes) {
    return CmdModes(m_path, m_tokens, m_threads > 0 ? m_threads : hw, m_budget, m_modes,
                    m_prefetch, !m_no_zero_copy);
  }
  if (*synth) {
    return CmdSynth(s_out, s_dim, s_hidden, s_layers, s_heads, s_kv, s_vocab, s_seq,
                    s_outlier, s_entropy, s_no_table, s_max_table);
  }
  if (*matvec) return CmdMatvec(v_path, v_reps, v_threads > 0 ? v_threads : hw);
  return 0;
}
