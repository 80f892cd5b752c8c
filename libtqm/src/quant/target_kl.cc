// Per-tensor bits and granularity for a KL budget; see target_kl.h.

#include "quant/target_kl.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "codec/entropy.h"
#include "quant/calibrate.h"
#include "tqm/quantize.h"
#include "tqm/status.h"

namespace tqm {
namespace {

uint64_t Numel(const SourceTensor& t) {
  uint64_t n = 1;
  for (uint64_t d : t.dims) n *= d;
  return n;
}

// A float copy of a source with some tensors replaced: the forward reads the
// model through it, so one tensor can be swapped for its quantized values
// without touching the source.
class OverlaySource : public TensorSource {
 public:
  static absl::StatusOr<std::unique_ptr<OverlaySource>> Make(TensorSource& src) {
    auto o = std::unique_ptr<OverlaySource>(new OverlaySource(src));
    o->values_.resize(src.tensors().size());
    for (size_t i = 0; i < src.tensors().size(); ++i) {
      const SourceTensor& t = src.tensors()[i];
      if (t.kind != TensorKind::kFloat) continue;
      TQM_RETURN_IF_ERROR(src.Read(i, &o->values_[i]));
      if (o->values_[i].size() != Numel(t)) {
        return absl::InternalError(
            absl::StrFormat("tensor '%s': source returned %d values, shape says %d",
                            t.name, o->values_[i].size(), Numel(t)));
      }
    }
    return o;
  }
  const std::vector<SourceTensor>& tensors() const override { return src_.tensors(); }
  const std::vector<MetaEntry>& metadata() const override { return src_.metadata(); }
  absl::Status Read(size_t i, std::vector<float>* out) override {
    if (i >= values_.size()) return absl::OutOfRangeError("tensor index out of range");
    auto it = overrides_.find(i);
    *out = it != overrides_.end() ? it->second : values_[i];
    return absl::OkStatus();
  }
  const std::vector<float>& values(size_t i) const { return values_[i]; }
  absl::flat_hash_map<size_t, std::vector<float>>& overrides() { return overrides_; }

 private:
  explicit OverlaySource(TensorSource& src) : src_(src) {}
  TensorSource& src_;
  std::vector<std::vector<float>> values_;
  absl::flat_hash_map<size_t, std::vector<float>> overrides_;
};

// Round-to-nearest of `f` (tensor `t`) on grid `s`, exactly as the writer
// quantizes (same pairs, same codes): the dequantized values and the
// estimated encoded bytes of codes and pairs.
absl::Status FakeQuantize(const SourceTensor& t, const std::vector<float>& f,
                          const QuantSetting& s, uint32_t chunk_size,
                          std::vector<float>* deq, uint64_t* bytes) {
  // The writer's pair blocks (ParamBlocks in writer.cc): a row of
  // `row_len` elements holds `per_row` blocks of `len` (the last shorter).
  const uint64_t n = f.size();
  uint64_t row_len = n, len = n, per_row = 1;
  if (s.granularity == Granularity::kRow) {
    row_len = len = n / t.dims[0];
  } else if (s.granularity == Granularity::kGroup) {
    row_len = t.dims.back();
    len = s.group_size;
    per_row = (row_len + len - 1) / len;
  }
  const uint64_t pairs = n / row_len * per_row;
  std::vector<uint8_t> codes(n);
  deq->resize(n);
  for (uint64_t k = 0; k < pairs; ++k) {
    const uint64_t r = k / per_row, g = k % per_row;
    const uint64_t b = r * row_len + g * len;
    const uint64_t e = r * row_len + std::min(row_len, (g + 1) * len);
    auto in = absl::MakeConstSpan(f).subspan(b, e - b);
    absl::StatusOr<Affine> a = ChooseAffine(in, s.bits);
    if (!a.ok()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s' pair %d: %s", t.name, k, a.status().message()));
    }
    QuantizeAffine(in, *a, absl::MakeSpan(codes).subspan(b, e - b), s.bits);
    DequantizeAffine(absl::MakeConstSpan(codes).subspan(b, e - b), *a,
                     absl::MakeSpan(*deq).subspan(b, e - b));
  }
  uint64_t total = 8 * pairs;
  std::string enc;
  for (uint64_t c = 0; c < n; c += chunk_size) {
    auto chunk =
        absl::MakeConstSpan(codes).subspan(c, std::min<uint64_t>(chunk_size, n - c));
    uint64_t best = chunk.size();
    if (EncodeHuffman(chunk, &enc).ok()) best = std::min<uint64_t>(best, enc.size());
    if (EncodeRans(chunk, &enc).ok()) best = std::min<uint64_t>(best, enc.size());
    total += best;
  }
  *bytes = total;
  return absl::OkStatus();
}

// Log-softmax of each of `rows` rows of `logits` (width `vocab`) in place.
void LogSoftmax(std::vector<float>* logits, size_t rows, size_t vocab, unsigned threads) {
  calib::ParallelFor(rows, threads, [&](size_t r) {
    float* x = logits->data() + r * vocab;
    const float m = *std::max_element(x, x + vocab);
    double sum = 0;
    for (size_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(x[v] - m));
    const float lse = m + static_cast<float>(std::log(sum));
    for (size_t v = 0; v < vocab; ++v) x[v] -= lse;
  });
}

struct Candidate {
  QuantSetting s;
  double kl = 0;
  uint64_t bytes = 0;
};

struct Tensor {
  size_t index = 0;
  int layer = -1;  // first layer whose input it changes; -1: the embedding
  std::vector<Candidate> cands;
};

// Picks one candidate per tensor minimising total bytes with the sum of KLs
// at most `budget`: the Lagrangian choice for the smallest lambda that meets
// the budget, then greedy single-tensor moves (most bytes saved per KL
// added) while the budget allows. Falls back to each tensor's lowest-KL
// candidate when even that exceeds the budget.
std::vector<size_t> Choose(const std::vector<Tensor>& ts, double budget) {
  auto pick = [&](double lambda) {
    std::vector<size_t> c(ts.size());
    for (size_t t = 0; t < ts.size(); ++t) {
      double best = std::numeric_limits<double>::infinity();
      for (size_t k = 0; k < ts[t].cands.size(); ++k) {
        const Candidate& x = ts[t].cands[k];
        const double cost = static_cast<double>(x.bytes) + lambda * x.kl;
        if (cost < best || (cost == best && x.kl < ts[t].cands[c[t]].kl)) {
          best = cost;
          c[t] = k;
        }
      }
    }
    return c;
  };
  auto kl_of = [&](const std::vector<size_t>& c) {
    double s = 0;
    for (size_t t = 0; t < ts.size(); ++t) s += ts[t].cands[c[t]].kl;
    return s;
  };
  double lo = 0, hi = 1;
  while (kl_of(pick(hi)) > budget && hi < 1e30) hi *= 4;
  std::vector<size_t> c = pick(hi);
  if (kl_of(c) > budget) return c;  // the lowest-KL choice does not fit
  for (int it = 0; it < 100; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (kl_of(pick(mid)) <= budget) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  c = pick(hi);
  for (;;) {
    const double slack = budget - kl_of(c);
    size_t bt = 0, bk = 0;
    double best = 0;
    for (size_t t = 0; t < ts.size(); ++t) {
      const Candidate& cur = ts[t].cands[c[t]];
      for (size_t k = 0; k < ts[t].cands.size(); ++k) {
        const Candidate& x = ts[t].cands[k];
        if (x.bytes >= cur.bytes || x.kl - cur.kl > slack) continue;
        const double gain =
            static_cast<double>(cur.bytes - x.bytes) / std::max(x.kl - cur.kl, 1e-12);
        if (gain > best) best = gain, bt = t, bk = k;
      }
    }
    if (best == 0) break;
    c[bt] = bk;
  }
  return c;
}

}  // namespace

std::string SettingName(const QuantSetting& s) {
  return absl::StrFormat("%d bits %s", s.bits,
                         s.granularity == Granularity::kRow ? std::string("row")
                         : s.granularity == Granularity::kGroup
                             ? absl::StrFormat("group:%d", s.group_size)
                             : std::string("tensor"));
}

absl::StatusOr<TargetKlResult> ChooseForTargetKl(TensorSource& source,
                                                 const std::string& calibration_text,
                                                 const PackOptions& base,
                                                 const TargetKlOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!(o.target_kl > 0) || !std::isfinite(o.target_kl)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("target KL %g is not a positive number", o.target_kl));
  }
  if (o.bits.empty() || o.max_rounds < 1 || o.max_tokens < 2 || o.group_size == 0 ||
      o.group_size > format::kMaxGroupSize || base.chunk_size == 0) {
    return absl::InvalidArgumentError("target KL: empty grid or invalid option");
  }
  for (int b : o.bits) {
    if (b < format::kMinBits || b > format::kMaxBits) {
      return absl::InvalidArgumentError(
          absl::StrFormat("target KL: bit width %d is not 1..8", b));
    }
  }
  auto say = [&](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  auto llama_error = [](const absl::Status& s) {
    return absl::InvalidArgumentError(
        absl::StrFormat("target KL needs a Llama model: %s", s.message()));
  };
  absl::StatusOr<calib::LlamaModel> probe = calib::LlamaModel::Open(source);
  if (!probe.ok()) return llama_error(probe.status());
  const calib::LlamaConfig c = probe->config();
  std::vector<MetaEntry> tok_meta;
  if (!o.tokenizer_llama2c.empty()) {
    tok_meta.push_back(
        {meta_keys::kTokenizerLlama2c, MetaValue::Bytes(o.tokenizer_llama2c)});
  }
  absl::StatusOr<calib::Batch> batch_or = calib::Tokenize(
      tok_meta.empty() ? source.metadata() : tok_meta, c, calibration_text, o.max_tokens);
  if (!batch_or.ok()) return llama_error(batch_or.status());
  const calib::Batch& b = *batch_or;

  TQM_ASSIGN_OR_RETURN(std::unique_ptr<OverlaySource> ov, OverlaySource::Make(source));
  TQM_ASSIGN_OR_RETURN(calib::LlamaModel model, calib::LlamaModel::Open(*ov));

  // The float forward: each layer's input, and the reference log-probs.
  const size_t tokens = b.tokens.size(), vocab = c.vocab_size;
  std::vector<std::vector<float>> acts(c.n_layers + 1);
  TQM_RETURN_IF_ERROR(model.Embed(b, &acts[0]));
  calib::LayerWeights w;
  for (int l = 0; l < c.n_layers; ++l) {
    TQM_RETURN_IF_ERROR(model.LoadLayer(l, &w));
    acts[l + 1] = acts[l];
    TQM_RETURN_IF_ERROR(model.LayerForward(b, &w, &acts[l + 1], nullptr, o.threads));
  }
  std::vector<float> ref;
  TQM_RETURN_IF_ERROR(model.Logits(acts[c.n_layers], &ref, o.threads));
  LogSoftmax(&ref, tokens, vocab, o.threads);
  // Positions: every token but the last of its sequence predicts the next.
  std::vector<size_t> rows;
  for (size_t s = 0; s < b.sequences(); ++s) {
    for (size_t j = b.starts[s]; j + 1 < b.starts[s + 1]; ++j) rows.push_back(j);
  }
  if (rows.empty()) {
    return absl::InvalidArgumentError(
        "target KL: the calibration text gives no position");
  }

  // Mean KL of the model with the overlay's overrides, starting the forward
  // at layer `from` (-1: at the embedding).
  auto measure = [&](int from) -> absl::StatusOr<double> {
    std::vector<float> x;
    if (from < 0) {
      TQM_RETURN_IF_ERROR(model.Embed(b, &x));
      from = 0;
    } else {
      x = acts[from];
    }
    calib::LayerWeights lw;
    for (int l = from; l < c.n_layers; ++l) {
      TQM_RETURN_IF_ERROR(model.LoadLayer(l, &lw));
      TQM_RETURN_IF_ERROR(model.LayerForward(b, &lw, &x, nullptr, o.threads));
    }
    std::vector<float> q;
    TQM_RETURN_IF_ERROR(model.Logits(x, &q, o.threads));
    std::vector<double> part(rows.size());
    calib::ParallelFor(rows.size(), o.threads, [&](size_t r) {
      const float* p = ref.data() + rows[r] * vocab;
      float* z = q.data() + rows[r] * vocab;
      const float m = *std::max_element(z, z + vocab);
      double sum = 0;
      for (size_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(z[v] - m));
      const double lse = m + std::log(sum);
      double kl = 0;
      for (size_t v = 0; v < vocab; ++v) {
        kl += std::exp(static_cast<double>(p[v])) * (p[v] - (z[v] - lse));
      }
      part[r] = kl;
    });
    double total = 0;
    for (double v : part) total += v;
    // Unclamped: rounding may leave a KL near zero slightly negative, and an
    // exact zero (identical logits) marks a tensor the forward never reads.
    return total / rows.size();
  };

  // The tensors to choose for, and the layer each enters the forward at.
  absl::flat_hash_map<size_t, int> layer_of;
  for (int l = 0; l < c.n_layers; ++l) {
    for (int k = 0; k < calib::kLinears; ++k) layer_of[model.LinearIndex(l, k)] = l;
  }
  std::vector<Tensor> ts;
  const auto& st = source.tensors();
  for (size_t i = 0; i < st.size(); ++i) {
    const SourceTensor& t = st[i];
    if (t.kind != TensorKind::kFloat || t.dims.size() < 2 || Numel(t) == 0) continue;
    if (base.keep && base.keep(t.name)) continue;
    Tensor x;
    x.index = i;
    auto it = layer_of.find(i);
    x.layer = it == layer_of.end() ? -1 : it->second;
    for (int bits : o.bits) {
      x.cands.push_back({QuantSetting{bits, Granularity::kTensor, 0}});
      x.cands.push_back({QuantSetting{bits, Granularity::kRow, 0}});
      if (t.dims.back() > o.group_size) {
        x.cands.push_back({QuantSetting{bits, Granularity::kGroup, o.group_size}});
      }
    }
    ts.push_back(std::move(x));
  }
  size_t total_cands = 0;
  for (const Tensor& t : ts) total_cands += t.cands.size();

  TargetKlResult res;
  res.positions = rows.size();
  say(absl::StrFormat("target KL %g: %d tensors x %d settings over %d positions",
                      o.target_kl, ts.size(), ts.empty() ? 0 : total_cands / ts.size(),
                      rows.size()));
  size_t done = 0;
  for (Tensor& t : ts) {
    const SourceTensor& src_t = st[t.index];
    for (Candidate& cand : t.cands) {
      std::vector<float> deq;
      TQM_RETURN_IF_ERROR(FakeQuantize(src_t, ov->values(t.index), cand.s,
                                       base.chunk_size, &deq, &cand.bytes));
      ov->overrides()[t.index] = std::move(deq);
      TQM_ASSIGN_OR_RETURN(cand.kl, measure(t.layer));
      ov->overrides().clear();
      ++res.evaluations;
      say(absl::StrFormat("sensitivity %d/%d: %s %s: KL %.3g, %d bytes", ++done,
                          total_cands, src_t.name, SettingName(cand.s), cand.kl,
                          cand.bytes));
    }
  }
  // A tensor the forward never reads (every KL exactly zero) is left to the
  // writer's defaults rather than given the coarsest grid.
  ts.erase(std::remove_if(ts.begin(), ts.end(),
                          [](const Tensor& t) {
                            for (const Candidate& x : t.cands) {
                              if (x.kl != 0) return false;
                            }
                            return true;
                          }),
           ts.end());
  for (Tensor& t : ts) {
    for (Candidate& x : t.cands) x.kl = std::max(0.0, x.kl);
  }

  double budget = o.target_kl;
  bool have = false;
  int rounds = 0;
  std::vector<std::vector<size_t>> seen;
  uint64_t best_bytes = 0;
  for (int round = 1; round <= o.max_rounds; ++round) {
    const std::vector<size_t> pick = Choose(ts, budget);
    // A choice already measured would measure the same.
    if (std::find(seen.begin(), seen.end(), pick) != seen.end()) break;
    seen.push_back(pick);
    rounds = round;
    TargetKlResult r;
    r.positions = res.positions;
    r.evaluations = res.evaluations;
    for (size_t t = 0; t < ts.size(); ++t) {
      const Candidate& x = ts[t].cands[pick[t]];
      const SourceTensor& src_t = st[ts[t].index];
      r.settings[src_t.name] = x.s;
      r.choices.push_back({src_t.name, x.s, x.kl, x.bytes, Numel(src_t)});
      r.predicted_kl += x.kl;
      r.bytes += x.bytes;
      uint64_t unused;
      std::vector<float> deq;
      TQM_RETURN_IF_ERROR(FakeQuantize(src_t, ov->values(ts[t].index), x.s,
                                       base.chunk_size, &deq, &unused));
      ov->overrides()[ts[t].index] = std::move(deq);
    }
    TQM_ASSIGN_OR_RETURN(r.measured_kl, measure(-1));
    r.measured_kl = std::max(0.0, r.measured_kl);
    ov->overrides().clear();
    r.met = r.measured_kl <= o.target_kl;
    say(absl::StrFormat(
        "round %d: budget %.6g, predicted KL %.6g, measured %.6g, %d bytes", round,
        budget, r.predicted_kl, r.measured_kl, r.bytes));
    // Keep the smallest choice that meets the target; without one, the
    // tightest (lowest measured KL).
    const double measured = r.measured_kl;
    const bool met = r.met;
    const bool better = !have ? true
                        : met ? (!res.met || r.bytes < best_bytes)
                              : (!res.met && measured < res.measured_kl);
    if (better) {
      res = std::move(r);
      best_bytes = res.bytes;
      have = true;
    }
    // Close enough: within 3 % under the target.
    if (met && measured >= 0.97 * o.target_kl) break;
    if (measured <= 0) break;
    // The KLs do not add exactly: scale the budget by what they missed by.
    budget *= std::clamp(o.target_kl / measured, 0.25, 4.0) * (met ? 1.0 : 0.98);
  }
  res.rounds = rounds;
  res.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace tqm
