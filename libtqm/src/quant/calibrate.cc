// The batched float32 Llama forward of calibrate.h. Every token of the
// batch goes through a layer before the next layer starts, which is what
// layer-by-layer quantization needs; the arithmetic is run.c's.

#include "quant/calibrate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "tqm/status.h"

namespace tqm {
namespace calib {
namespace {

constexpr int kBos = 1;

float Dot(const float* a, const float* b, size_t n) {
  // Eight partial sums: vectorizes without reassociation flags.
  float s[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += a[i + k] * b[i + k];
  }
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) r += a[i] * b[i];
  return r;
}

void RmsNormRows(const float* x, size_t tokens, const float* w, int n, float eps,
                 float* out) {
  for (size_t t = 0; t < tokens; ++t) {
    const float* xt = x + t * n;
    float* ot = out + t * n;
    float ss = 0;
    for (int j = 0; j < n; ++j) ss += xt[j] * xt[j];
    ss = 1.0f / std::sqrt(ss / n + eps);
    for (int j = 0; j < n; ++j) ot[j] = w[j] * (ss * xt[j]);
  }
}

}  // namespace

void MatMulT(const float* in, size_t tokens, const float* w, size_t out_dim,
             size_t in_dim, float* out, unsigned threads) {
  // With W transposed, each input element scales a contiguous row of W^T
  // into the token's outputs: vertical operations that vectorize on any
  // target, the weights read once per four tokens.
  std::vector<float> wt(in_dim * out_dim);
  for (size_t o = 0; o < out_dim; ++o) {
    for (size_t i = 0; i < in_dim; ++i) wt[i * out_dim + o] = w[o * in_dim + i];
  }
  constexpr size_t kRows = 64;
  ParallelFor((tokens + kRows - 1) / kRows, threads, [&](size_t blk) {
    const size_t end = std::min(tokens, (blk + 1) * kRows);
    size_t t = blk * kRows;
    for (; t + 4 <= end; t += 4) {
      float* o0 = out + t * out_dim;
      float *o1 = o0 + out_dim, *o2 = o1 + out_dim, *o3 = o2 + out_dim;
      std::fill(o0, o0 + 4 * out_dim, 0.0f);
      const float* x0 = in + t * in_dim;
      for (size_t i = 0; i < in_dim; ++i) {
        const float a0 = x0[i], a1 = x0[in_dim + i], a2 = x0[2 * in_dim + i],
                    a3 = x0[3 * in_dim + i];
        const float* wi = &wt[i * out_dim];
        for (size_t o = 0; o < out_dim; ++o) {
          o0[o] += a0 * wi[o];
          o1[o] += a1 * wi[o];
          o2[o] += a2 * wi[o];
          o3[o] += a3 * wi[o];
        }
      }
    }
    for (; t < end; ++t) {
      float* ot = out + t * out_dim;
      std::fill(ot, ot + out_dim, 0.0f);
      for (size_t i = 0; i < in_dim; ++i) {
        const float a = in[t * in_dim + i];
        const float* wi = &wt[i * out_dim];
        for (size_t o = 0; o < out_dim; ++o) ot[o] += a * wi[o];
      }
    }
  });
}

absl::StatusOr<LlamaConfig> ConfigFromMetadata(const std::vector<MetaEntry>& meta) {
  llama::MetadataRules rules;
  rules.missing_note = " (the calibration forward needs a Llama model)";
  rules.max_dim = 1 << 16;
  rules.max_hidden_dim = rules.max_dim * 4;
  rules.reject_non_number = true;
  rules.require_finite = true;
  return llama::ForwardConfigFromMetadata(meta, rules);
}

absl::StatusOr<Batch> Tokenize(const std::vector<MetaEntry>& meta, const LlamaConfig& c,
                               const std::string& text, size_t max_tokens) {
  const MetaValue* blob = FindMeta(meta, meta_keys::kTokenizerLlama2c);
  if (blob == nullptr ||
      (blob->type != format::kMetaBytes && blob->type != format::kMetaString)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "metadata key '%s' (a llama2.c tokenizer) is missing: the calibration text "
        "cannot be tokenized (tqm-pack --tokenizer)",
        meta_keys::kTokenizerLlama2c));
  }
  // Parse: int32 max_token_length, then per token float32 score, int32
  // length and the bytes (little-endian; the host is).
  const std::string& bytes = blob->bytes;
  std::vector<std::string> vocab;
  std::vector<float> scores;
  size_t pos = 4;
  auto corrupt = [&](int token) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tokenizer in '%s': token %d is truncated at offset %d (%d bytes)",
        meta_keys::kTokenizerLlama2c, token, pos, bytes.size()));
  };
  if (bytes.size() < 4) return corrupt(-1);
  for (int i = 0; i < c.vocab_size; ++i) {
    float score;
    int32_t len;
    if (bytes.size() - pos < 8) return corrupt(i);
    std::memcpy(&score, bytes.data() + pos, 4);
    std::memcpy(&len, bytes.data() + pos + 4, 4);
    pos += 8;
    if (len < 0 || static_cast<size_t>(len) > bytes.size() - pos) return corrupt(i);
    vocab.emplace_back(bytes.data() + pos, len);
    scores.push_back(score);
    pos += len;
  }
  absl::flat_hash_map<std::string, int> ids;
  for (int i = 0; i < c.vocab_size; ++i) ids.try_emplace(vocab[i], i);
  auto lookup = [&](const std::string& s) {
    auto it = ids.find(s);
    return it == ids.end() ? -1 : it->second;
  };

  Batch b;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (b.tokens.size() >= max_tokens) break;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    // run.c's encode: BOS, dummy prefix, code points (byte fallback), merges.
    std::vector<int> toks = {kBos};
    if (int d = lookup(" "); d >= 0) toks.push_back(d);
    std::string buf;
    for (size_t i = 0; i < line.size(); ++i) {
      const unsigned char ch = static_cast<unsigned char>(line[i]);
      if ((ch & 0xC0) != 0x80) buf.clear();
      buf.push_back(static_cast<char>(ch));
      const bool next_continues =
          i + 1 < line.size() && (static_cast<unsigned char>(line[i + 1]) & 0xC0) == 0x80;
      if (next_continues && buf.size() < 4) continue;
      if (int id = lookup(buf); id >= 0) {
        toks.push_back(id);
      } else {
        for (unsigned char byte : buf) {
          if (byte + 3 < c.vocab_size) toks.push_back(byte + 3);
        }
      }
      buf.clear();
    }
    // Greedy merges of the best-scoring adjacent pair (leftmost on ties);
    // each pair's merge is looked up once and again only when a neighbour
    // changes.
    auto pair_id = [&](size_t i) { return lookup(vocab[toks[i]] + vocab[toks[i + 1]]); };
    std::vector<int> merge(toks.size() > 1 ? toks.size() - 1 : 0);
    for (size_t i = 0; i < merge.size(); ++i) merge[i] = pair_id(i);
    for (;;) {
      float best = -1e10f;
      int best_id = -1;
      size_t at = 0;
      for (size_t i = 0; i < merge.size(); ++i) {
        if (merge[i] >= 0 && scores[merge[i]] > best) {
          best = scores[merge[i]];
          best_id = merge[i];
          at = i;
        }
      }
      if (best_id < 0) break;
      toks[at] = best_id;
      toks.erase(toks.begin() + at + 1);
      merge.erase(merge.begin() + at);
      if (at < merge.size()) merge[at] = pair_id(at);
      if (at > 0) merge[at - 1] = pair_id(at - 1);
    }
    for (size_t s = 0; s < toks.size() && b.tokens.size() < max_tokens;
         s += static_cast<size_t>(c.seq_len)) {
      const size_t n = std::min({toks.size() - s, static_cast<size_t>(c.seq_len),
                                 max_tokens - b.tokens.size()});
      b.tokens.insert(b.tokens.end(), toks.begin() + s, toks.begin() + s + n);
      b.starts.push_back(b.tokens.size());
    }
  }
  if (b.tokens.empty()) {
    return absl::InvalidArgumentError("the calibration text yields no tokens");
  }
  return b;
}

namespace {

// The tensor of each Linear, in Linear order.
constexpr llama::Tensor kLinearTensors[kLinears] = {
    llama::Tensor::kWq,   llama::Tensor::kWk, llama::Tensor::kWv,  llama::Tensor::kWo,
    llama::Tensor::kGate, llama::Tensor::kUp, llama::Tensor::kDown};

}  // namespace

const char* LinearSuffix(int linear) {
  // Built once: callers keep the pointer.
  static const std::vector<std::string>* const kNames = [] {
    auto* names = new std::vector<std::string>;
    for (llama::Tensor t : kLinearTensors) names->push_back(llama::HfLayerSuffix(t));
    return names;
  }();
  return (*kNames)[linear].c_str();
}

std::string LayerTensorName(int layer, const std::string& suffix) {
  return llama::HfLayerPrefix(layer) + suffix;
}

std::vector<int> StageLinears(int stage) {
  switch (stage) {
    case kStageQkv:
      return {kQ, kK, kV};
    case kStageO:
      return {kO};
    case kStageGateUp:
      return {kGate, kUp};
    default:
      return {kDown};
  }
}

std::pair<uint64_t, uint64_t> LlamaModel::LinearShape(int k) const {
  const std::vector<uint64_t> shape = llama::Shape(kLinearTensors[k], c_.dims());
  return {shape[0], shape[1]};
}

absl::StatusOr<LlamaModel> LlamaModel::Open(TensorSource& source) {
  LlamaModel m;
  m.src_ = &source;
  TQM_ASSIGN_OR_RETURN(m.c_, ConfigFromMetadata(source.metadata()));
  const std::vector<SourceTensor>& ts = source.tensors();
  absl::flat_hash_map<std::string, int> by_name;
  for (size_t i = 0; i < ts.size(); ++i)
    by_name.try_emplace(ts[i].name, static_cast<int>(i));
  auto find = [&](const std::string& name, std::vector<uint64_t> dims,
                  bool optional) -> absl::StatusOr<int> {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      if (optional) return -1;
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s' is missing (the calibration forward needs a Llama model)", name));
    }
    const SourceTensor& t = ts[it->second];
    if (t.dims != dims || t.kind == TensorKind::kRaw) {
      std::string got, want;
      for (uint64_t d : t.dims)
        got += absl::StrFormat("%s%d", got.empty() ? "" : ", ", d);
      for (uint64_t d : dims)
        want += absl::StrFormat("%s%d", want.empty() ? "" : ", ", d);
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s' has shape [%s]%s, the llama.* metadata implies float [%s]", name,
          got, t.kind == TensorKind::kRaw ? " (not float)" : "", want));
    }
    return it->second;
  };
  const uint64_t dim = m.c_.dim, vocab = m.c_.vocab_size;
  TQM_ASSIGN_OR_RETURN(m.embed_,
                       find(llama::HfName(llama::Tensor::kEmbed), {vocab, dim}, false));
  TQM_ASSIGN_OR_RETURN(m.final_norm_,
                       find(llama::HfName(llama::Tensor::kFinalNorm), {dim}, false));
  TQM_ASSIGN_OR_RETURN(
      m.lm_head_, find(llama::HfName(llama::Tensor::kClassifier), {vocab, dim}, true));
  if (m.lm_head_ < 0) m.lm_head_ = m.embed_;
  m.layers_.resize(m.c_.n_layers);
  for (int l = 0; l < m.c_.n_layers; ++l) {
    for (int k = 0; k < kLinears; ++k) {
      const auto [rows, cols] = m.LinearShape(k);
      TQM_ASSIGN_OR_RETURN(m.layers_[l][k], find(LayerTensorName(l, LinearSuffix(k)),
                                                 {rows, cols}, false));
    }
    TQM_ASSIGN_OR_RETURN(m.layers_[l][kLinears],
                         find(llama::HfName(llama::Tensor::kAttNorm, l), {dim}, false));
    TQM_ASSIGN_OR_RETURN(m.layers_[l][kLinears + 1],
                         find(llama::HfName(llama::Tensor::kFfnNorm, l), {dim}, false));
  }
  return m;
}

absl::Status LlamaModel::ReadTensor(int i, std::vector<float>* out) const {
  TQM_RETURN_IF_ERROR(src_->Read(i, out));
  uint64_t n = 1;
  for (uint64_t d : src_->tensors()[i].dims) n *= d;
  if (out->size() != n) {
    return absl::InternalError(
        absl::StrFormat("tensor '%s': source returned %d values, shape says %d",
                        src_->tensors()[i].name, out->size(), n));
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::LoadLayer(int layer, LayerWeights* w) const {
  for (int k = 0; k < kLinears; ++k)
    TQM_RETURN_IF_ERROR(ReadTensor(layers_[layer][k], &w->w[k]));
  TQM_RETURN_IF_ERROR(ReadTensor(layers_[layer][kLinears], &w->att_norm));
  TQM_RETURN_IF_ERROR(ReadTensor(layers_[layer][kLinears + 1], &w->ffn_norm));
  return absl::OkStatus();
}

absl::Status LlamaModel::Embed(const Batch& b, std::vector<float>* x) const {
  std::vector<float> table;
  TQM_RETURN_IF_ERROR(ReadTensor(embed_, &table));
  const size_t dim = c_.dim;
  x->resize(b.tokens.size() * dim);
  for (size_t t = 0; t < b.tokens.size(); ++t) {
    const int32_t tok = b.tokens[t];
    if (tok < 0 || tok >= c_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat("token %d out of range", tok));
    }
    std::memcpy(x->data() + t * dim, table.data() + static_cast<size_t>(tok) * dim,
                dim * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status LlamaModel::LayerForward(const Batch& b, LayerWeights* w,
                                      std::vector<float>* x, const Hook& hook,
                                      unsigned threads) const {
  const LlamaConfig& c = c_;
  const size_t n = b.tokens.size(), dim = c.dim, kv_dim = c.kv_dim(),
               hidden = c.hidden_dim;
  std::vector<float> xb(n * dim), q(n * dim), k(n * kv_dim), v(n * kv_dim);
  RmsNormRows(x->data(), n, w->att_norm.data(), c.dim, c.norm_eps, xb.data());
  if (hook) TQM_RETURN_IF_ERROR(hook(kStageQkv, xb, dim, w));
  MatMulT(xb.data(), n, w->w[kQ].data(), dim, dim, q.data(), threads);
  MatMulT(xb.data(), n, w->w[kK].data(), kv_dim, dim, k.data(), threads);
  MatMulT(xb.data(), n, w->w[kV].data(), kv_dim, dim, v.data(), threads);
  // Attention within each sequence; xb becomes the attention output.
  const int hs = c.head_size(), kv_mul = c.n_heads / c.n_kv_heads;
  const float inv = 1.0f / std::sqrt(static_cast<float>(hs));
  ParallelFor(b.sequences(), threads, [&](size_t s) {
    const size_t first = b.starts[s], len = b.starts[s + 1] - first;
    for (size_t p = 0; p < len; ++p) {
      llama::ApplyRope(c, &q[(first + p) * dim], &k[(first + p) * kv_dim], static_cast<int>(p));
    }
    std::vector<float> att(len);
    for (size_t p = 0; p < len; ++p) {
      for (int h = 0; h < c.n_heads; ++h) {
        const float* qh = &q[(first + p) * dim + h * hs];
        const size_t koff = static_cast<size_t>(h / kv_mul) * hs;
        float mx = -INFINITY;
        for (size_t t = 0; t <= p; ++t) {
          att[t] = Dot(qh, &k[(first + t) * kv_dim + koff], hs) * inv;
          mx = std::max(mx, att[t]);
        }
        float sum = 0;
        for (size_t t = 0; t <= p; ++t) {
          att[t] = std::exp(att[t] - mx);
          sum += att[t];
        }
        float* o = &xb[(first + p) * dim + h * hs];
        std::fill(o, o + hs, 0.0f);
        for (size_t t = 0; t <= p; ++t) {
          const float a = att[t] / sum;
          const float* vt = &v[(first + t) * kv_dim + koff];
          for (int i = 0; i < hs; ++i) o[i] += a * vt[i];
        }
      }
    }
  });
  if (hook) TQM_RETURN_IF_ERROR(hook(kStageO, xb, dim, w));
  MatMulT(xb.data(), n, w->w[kO].data(), dim, dim, q.data(), threads);
  for (size_t i = 0; i < n * dim; ++i) (*x)[i] += q[i];
  std::vector<float>().swap(k);  // frees them before the MLP's buffers
  std::vector<float>().swap(v);
  RmsNormRows(x->data(), n, w->ffn_norm.data(), c.dim, c.norm_eps, xb.data());
  if (hook) TQM_RETURN_IF_ERROR(hook(kStageGateUp, xb, dim, w));
  std::vector<float> h1(n * hidden), h3(n * hidden);
  MatMulT(xb.data(), n, w->w[kGate].data(), hidden, dim, h1.data(), threads);
  MatMulT(xb.data(), n, w->w[kUp].data(), hidden, dim, h3.data(), threads);
  for (size_t i = 0; i < n * hidden; ++i) {
    float val = h1[i];
    val *= 1.0f / (1.0f + std::exp(-val));
    h1[i] = val * h3[i];
  }
  std::vector<float>().swap(h3);
  if (hook) TQM_RETURN_IF_ERROR(hook(kStageDown, h1, hidden, w));
  MatMulT(h1.data(), n, w->w[kDown].data(), dim, hidden, q.data(), threads);
  for (size_t i = 0; i < n * dim; ++i) (*x)[i] += q[i];
  return absl::OkStatus();
}

absl::Status LlamaModel::Logits(const std::vector<float>& x, std::vector<float>* out,
                                unsigned threads) const {
  std::vector<float> norm, cls;
  TQM_RETURN_IF_ERROR(ReadTensor(final_norm_, &norm));
  TQM_RETURN_IF_ERROR(ReadTensor(lm_head_, &cls));
  const size_t dim = c_.dim, n = x.size() / dim;
  std::vector<float> xn(x.size());
  RmsNormRows(x.data(), n, norm.data(), c_.dim, c_.norm_eps, xn.data());
  out->resize(n * c_.vocab_size);
  MatMulT(xn.data(), n, cls.data(), c_.vocab_size, dim, out->data(), threads);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> ForwardLogits(TensorSource& source, const Batch& b,
                                                 unsigned threads) {
  TQM_ASSIGN_OR_RETURN(LlamaModel m, LlamaModel::Open(source));
  std::vector<float> x, logits;
  TQM_RETURN_IF_ERROR(m.Embed(b, &x));
  LayerWeights w;
  for (int l = 0; l < m.config().n_layers; ++l) {
    TQM_RETURN_IF_ERROR(m.LoadLayer(l, &w));
    TQM_RETURN_IF_ERROR(m.LayerForward(b, &w, &x, nullptr, threads));
  }
  TQM_RETURN_IF_ERROR(m.Logits(x, &logits, threads));
  return logits;
}

}  // namespace calib
}  // namespace tqm
