// GPTQ (tqm/gptq.h): lower output error than round-to-nearest on correlated
// inputs, exactly round-to-nearest with a diagonal Hessian, codes and pairs
// on the format's grid, the GPTQ source over a Llama model, and on
// stories260K the held-out KL divergence against the float32 model.

#include "tqm/gptq.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "quant/calibrate.h"
#include "quant/quantize_internal.h"
#include "test_util.h"
#include "tqm/import.h"
#include "tqm/quantize.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

using tqm::Affine;
using tqm::GptqOptions;
using tqm::Granularity;
using tqm::QuantizedTensor;

// Round-to-nearest as the writer does it: pairs from the tensor, each row or
// each group of the original weights.
QuantizedTensor Rtn(const std::vector<float>& w, size_t rows, size_t cols,
                    const GptqOptions& o) {
  QuantizedTensor q;
  q.bits = static_cast<uint8_t>(o.bits);
  q.codes.resize(w.size());
  auto block = [&](size_t b, size_t n) {
    absl::Span<const float> in(w.data() + b, n);
    Affine a = *tqm::ChooseAffine(in, o.bits);
    tqm::QuantizeAffine(in, a, absl::MakeSpan(q.codes).subspan(b, n), o.bits);
    q.params.push_back(a);
  };
  switch (o.granularity) {
    case Granularity::kTensor:
      q.storage = tqm::format::kStorageU8Tensor;
      block(0, w.size());
      break;
    case Granularity::kRow:
      q.storage = tqm::format::kStorageU8Row;
      for (size_t r = 0; r < rows; ++r) block(r * cols, cols);
      break;
    case Granularity::kGroup:
      q.storage = tqm::format::kStorageU8Group;
      q.group_size = o.group_size;
      for (size_t r = 0; r < rows; ++r) {
        for (size_t c = 0; c < cols; c += o.group_size) {
          block(r * cols + c, std::min<size_t>(o.group_size, cols - c));
        }
      }
      break;
  }
  return q;
}

std::vector<float> Dequant(const QuantizedTensor& q, size_t rows, size_t cols) {
  std::vector<float> out(rows * cols);
  const size_t gpr = q.group_size ? (cols + q.group_size - 1) / q.group_size : 1;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) {
      const Affine& a = q.storage == tqm::format::kStorageU8Tensor ? q.params[0]
                        : q.storage == tqm::format::kStorageU8Row
                            ? q.params[r]
                            : q.params[r * gpr + c / q.group_size];
      out[r * cols + c] = a.scale * (q.codes[r * cols + c] - a.zero);
    }
  }
  return out;
}

// ||W X^T - Q X^T||_F^2 over the rows of x ([n, cols]).
double OutputError(const std::vector<float>& w, const std::vector<float>& q,
                   const std::vector<float>& x, size_t rows, size_t cols) {
  const size_t n = x.size() / cols;
  double e = 0;
  for (size_t t = 0; t < n; ++t) {
    for (size_t r = 0; r < rows; ++r) {
      double d = 0;
      for (size_t c = 0; c < cols; ++c)
        d += (w[r * cols + c] - q[r * cols + c]) * x[t * cols + c];
      e += d * d;
    }
  }
  return e;
}

std::vector<float> HessianOf(const std::vector<float>& x, size_t cols) {
  const size_t n = x.size() / cols;
  std::vector<float> h(cols * cols);
  for (size_t i = 0; i < cols; ++i) {
    for (size_t j = 0; j < cols; ++j) {
      double s = 0;
      for (size_t t = 0; t < n; ++t)
        s += static_cast<double>(x[t * cols + i]) * x[t * cols + j];
      h[i * cols + j] = static_cast<float>(2.0 * s / n);
    }
  }
  return h;
}

// Checks the format's rules for quantized codes and pairs (what the writer's
// CheckQuantized enforces), and the storage the options ask for.
void ExpectOnGrid(const QuantizedTensor& q, size_t rows, size_t cols,
                  const GptqOptions& o) {
  ASSERT_EQ(q.codes.size(), rows * cols);
  ASSERT_EQ(q.bits, o.bits);
  const size_t pairs = o.granularity == Granularity::kTensor ? 1
                       : o.granularity == Granularity::kRow
                           ? rows
                           : rows * ((cols + o.group_size - 1) / o.group_size);
  ASSERT_EQ(q.params.size(), pairs);
  for (uint8_t c : q.codes) ASSERT_LT(c, 1u << o.bits);
  for (const Affine& a : q.params) {
    ASSERT_TRUE(std::isfinite(a.scale) && a.scale > 0) << a.scale;
    ASSERT_EQ(std::nearbyint(a.zero), a.zero);
  }
}

struct Problem {
  size_t rows = 48, cols = 160, n = 1024;
  std::vector<float> w, x;
};

// Random W; inputs with strongly correlated features (a shared random
// factor plus a smoothed walk along the features) and a few large ones.
Problem Correlated(uint32_t seed) {
  Problem p;
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  p.w.resize(p.rows * p.cols);
  for (float& v : p.w) v = 0.05f * g(rng);
  p.x.resize(p.n * p.cols);
  std::vector<float> mix(p.cols);
  for (float& m : mix) m = g(rng);
  for (size_t t = 0; t < p.n; ++t) {
    const float f = g(rng);
    float walk = 0;
    for (size_t c = 0; c < p.cols; ++c) {
      walk = 0.9f * walk + g(rng);
      p.x[t * p.cols + c] = (f * mix[c] + 0.5f * walk) * (c % 17 == 0 ? 4.0f : 1.0f);
    }
  }
  return p;
}

TEST(Gptq, LowerOutputErrorThanRoundToNearest) {
  const Problem p = Correlated(7);
  const std::vector<float> h = HessianOf(p.x, p.cols);
  struct Case {
    int bits;
    Granularity g;
    uint32_t group;
    bool act_order;
  };
  for (const Case& k :
       {Case{3, Granularity::kRow, 0, false}, Case{4, Granularity::kRow, 0, false},
        Case{3, Granularity::kRow, 0, true}, Case{4, Granularity::kTensor, 0, false},
        Case{3, Granularity::kGroup, 32, false}, Case{4, Granularity::kGroup, 64, false},
        Case{4, Granularity::kGroup, 32, true}}) {
    SCOPED_TRACE(testing::Message()
                 << k.bits << " bits, granularity " << static_cast<int>(k.g) << " group "
                 << k.group << " act_order " << k.act_order);
    GptqOptions o;
    o.bits = k.bits;
    o.granularity = k.g;
    o.group_size = k.group;
    o.act_order = k.act_order;
    o.block_size = 64;  // several blocks over 160 columns
    auto q = tqm::GptqQuantize(p.w, p.rows, p.cols, h, o, "w");
    ASSERT_TRUE(q.ok()) << q.status();
    ExpectOnGrid(*q, p.rows, p.cols, o);
    if (k.g == Granularity::kRow || k.g == Granularity::kTensor) {
      // Row and tensor pairs come from the original weights, as RTN's.
      const QuantizedTensor rtn = Rtn(p.w, p.rows, p.cols, o);
      for (size_t i = 0; i < rtn.params.size(); ++i) {
        EXPECT_EQ(q->params[i].scale, rtn.params[i].scale);
        EXPECT_EQ(q->params[i].zero, rtn.params[i].zero);
      }
    }
    const double e_gptq =
        OutputError(p.w, Dequant(*q, p.rows, p.cols), p.x, p.rows, p.cols);
    const double e_rtn = OutputError(
        p.w, Dequant(Rtn(p.w, p.rows, p.cols, o), p.rows, p.cols), p.x, p.rows, p.cols);
    std::cout << "  " << k.bits << " bits g" << static_cast<int>(k.g) << "/" << k.group
              << (k.act_order ? " act-order" : "") << ": GPTQ/RTN output error "
              << e_gptq / e_rtn << "\n";
    EXPECT_LT(e_gptq, 0.8 * e_rtn);
  }
}

// GPTQ as the paper writes it, unblocked, in double, with an explicit
// inverse: each column's scaled error updates every later column at once; a
// group's pair is chosen from its current weights at its first column.
QuantizedTensor NaiveGptq(const std::vector<float>& w, size_t rows, size_t n,
                          const std::vector<float>& h_in, const GptqOptions& o) {
  std::vector<size_t> perm(n);
  for (size_t i = 0; i < n; ++i) perm[i] = i;
  if (o.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](size_t a, size_t b) {
      return h_in[a * n + a] > h_in[b * n + b];
    });
  }
  double mean = 0;
  for (size_t i = 0; i < n; ++i) mean += h_in[i * n + i];
  mean /= n;
  // [H + damp I | I] -> [I | H^-1] by Gauss-Jordan (H is positive definite).
  std::vector<double> m(n * 2 * n, 0.0);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) m[i * 2 * n + j] = h_in[perm[i] * n + perm[j]];
    m[i * 2 * n + i] += o.dampening * mean;
    m[i * 2 * n + n + i] = 1;
  }
  for (size_t c = 0; c < n; ++c) {
    const double piv = m[c * 2 * n + c];
    for (size_t j = 0; j < 2 * n; ++j) m[c * 2 * n + j] /= piv;
    for (size_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = m[r * 2 * n + c];
      for (size_t j = 0; j < 2 * n; ++j) m[r * 2 * n + j] -= f * m[c * 2 * n + j];
    }
  }
  // Lower Cholesky factor L of H^-1; U = L^T.
  std::vector<double> l(n * n, 0.0);
  for (size_t j = 0; j < n; ++j) {
    double s = m[j * 2 * n + n + j];
    for (size_t k = 0; k < j; ++k) s -= l[j * n + k] * l[j * n + k];
    l[j * n + j] = std::sqrt(s);
    for (size_t i = j + 1; i < n; ++i) {
      double t = m[i * 2 * n + n + j];
      for (size_t k = 0; k < j; ++k) t -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = t / l[j * n + j];
    }
  }
  auto u = [&](size_t i, size_t j) { return l[j * n + i]; };
  QuantizedTensor q = Rtn(w, rows, n, o);  // storage, row/tensor pairs
  const size_t gs = o.group_size, gpr = gs ? (n + gs - 1) / gs : 1;
  const float top = static_cast<float>((1 << o.bits) - 1);
  for (size_t r = 0; r < rows; ++r) {
    std::vector<double> cur(n);
    for (size_t p = 0; p < n; ++p) cur[p] = w[r * n + perm[p]];
    std::vector<bool> ready(gpr, false);
    for (size_t i = 0; i < n; ++i) {
      const size_t col = perm[i];
      Affine* a = o.granularity == Granularity::kTensor ? &q.params[0]
                  : o.granularity == Granularity::kRow  ? &q.params[r]
                                                        : &q.params[r * gpr + col / gs];
      if (o.granularity == Granularity::kGroup && !ready[col / gs]) {
        std::vector<float> g;
        for (size_t c = col / gs * gs; c < std::min(n, col / gs * gs + gs); ++c) {
          for (size_t p = 0; p < n; ++p) {
            if (perm[p] == c) g.push_back(static_cast<float>(cur[p]));
          }
        }
        *a = *tqm::ChooseAffine(g, o.bits);
        ready[col / gs] = true;
      }
      const float x = static_cast<float>(cur[i]);
      float c = tqm::quantize_internal::RoundHalfEven(x / a->scale) + a->zero;
      c = std::min(std::max(c, 0.0f), top);
      q.codes[r * n + col] = static_cast<uint8_t>(c);
      const double e = (cur[i] - a->scale * (c - a->zero)) / u(i, i);
      for (size_t j = i + 1; j < n; ++j) cur[j] -= e * u(i, j);
    }
  }
  return q;
}

TEST(Gptq, BlockedMatchesUnblockedReference) {
  const Problem p = Correlated(17);
  const std::vector<float> h = HessianOf(p.x, p.cols);
  for (Granularity g : {Granularity::kRow, Granularity::kGroup}) {
    for (bool act_order : {false, true}) {
      for (uint32_t gs : {32u, 48u}) {
        if (g == Granularity::kRow && gs != 32) continue;
        GptqOptions o;
        o.bits = 4;
        o.granularity = g;
        o.group_size = g == Granularity::kGroup ? gs : 0;
        o.act_order = act_order;
        o.block_size = 64;
        auto q = tqm::GptqQuantize(p.w, p.rows, p.cols, h, o, "w");
        ASSERT_TRUE(q.ok()) << q.status();
        const QuantizedTensor ref = NaiveGptq(p.w, p.rows, p.cols, h, o);
        size_t same = 0;
        for (size_t e = 0; e < ref.codes.size(); ++e) same += q->codes[e] == ref.codes[e];
        // Float32 against double rounding may flip a code now and then.
        EXPECT_GE(same, ref.codes.size() * 99 / 100)
            << "granularity " << static_cast<int>(g) << " group " << gs << " act_order "
            << act_order << ": " << same << " of " << ref.codes.size();
        size_t close = 0;
        for (size_t k = 0; k < ref.params.size(); ++k) {
          close += std::fabs(q->params[k].scale - ref.params[k].scale) <=
                       1e-4f * ref.params[k].scale &&
                   q->params[k].zero == ref.params[k].zero;
        }
        EXPECT_GE(close, ref.params.size() * 95 / 100);
      }
    }
  }
}

TEST(Gptq, DiagonalHessianIsRoundToNearest) {
  const Problem p = Correlated(11);
  std::vector<float> identity(p.cols * p.cols, 0.0f), diag = identity;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(0.1f, 10.0f);
  for (size_t i = 0; i < p.cols; ++i) {
    identity[i * p.cols + i] = 1.0f;
    diag[i * p.cols + i] = u(rng);  // uncorrelated inputs of unequal scale
  }
  for (const auto& h : {identity, diag}) {
    for (Granularity g : {Granularity::kTensor, Granularity::kRow, Granularity::kGroup}) {
      for (bool act_order : {false, true}) {
        for (int bits : {3, 4, 8}) {
          GptqOptions o;
          o.bits = bits;
          o.granularity = g;
          o.group_size = g == Granularity::kGroup ? 32 : 0;
          o.act_order = act_order;
          auto q = tqm::GptqQuantize(p.w, p.rows, p.cols, h, o, "w");
          ASSERT_TRUE(q.ok()) << q.status();
          const QuantizedTensor rtn = Rtn(p.w, p.rows, p.cols, o);
          ASSERT_EQ(q->storage, rtn.storage);
          EXPECT_EQ(q->codes, rtn.codes)
              << "granularity " << static_cast<int>(g) << " bits " << bits
              << " act_order " << act_order;
          ASSERT_EQ(q->params.size(), rtn.params.size());
          for (size_t i = 0; i < rtn.params.size(); ++i) {
            EXPECT_EQ(q->params[i].scale, rtn.params[i].scale);
            EXPECT_EQ(q->params[i].zero, rtn.params[i].zero);
          }
        }
      }
    }
  }
}

TEST(Gptq, DeadInputsGetTheCodeOfZero) {
  const Problem p = Correlated(13);
  std::vector<float> h(p.cols * p.cols, 0.0f);
  for (size_t i = 0; i < p.cols; ++i) h[i * p.cols + i] = i % 10 == 3 ? 0.0f : 1.0f;
  GptqOptions o;
  o.bits = 4;
  o.granularity = Granularity::kRow;
  auto q = tqm::GptqQuantize(p.w, p.rows, p.cols, h, o, "w");
  ASSERT_TRUE(q.ok()) << q.status();
  const QuantizedTensor rtn = Rtn(p.w, p.rows, p.cols, o);
  for (size_t r = 0; r < p.rows; ++r) {
    uint8_t zero_code;
    const float zero = 0.0f;
    tqm::QuantizeAffine(absl::MakeConstSpan(&zero, 1), rtn.params[r],
                        absl::MakeSpan(&zero_code, 1), o.bits);
    for (size_t c = 0; c < p.cols; ++c) {
      const size_t e = r * p.cols + c;
      EXPECT_EQ(q->codes[e], c % 10 == 3 ? zero_code : rtn.codes[e]) << r << "," << c;
    }
  }
}

TEST(Gptq, RejectsBadInput) {
  const Problem p = Correlated(5);
  GptqOptions o;
  std::vector<float> h(p.cols * p.cols, 0.0f);
  for (size_t i = 0; i < p.cols; ++i) h[i * p.cols + i] = 1.0f;
  EXPECT_EQ(tqm::GptqQuantize(p.w, p.rows, p.cols + 1, h, o, "w").status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> bad_w = p.w;
  bad_w[5] = NAN;
  auto s = tqm::GptqQuantize(bad_w, p.rows, p.cols, h, o, "w").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'w'"), std::string::npos) << s;
  // Not positive semi-definite: a negative diagonal.
  std::vector<float> neg = h;
  for (size_t i = 0; i < p.cols; ++i) neg[i * p.cols + i] = -1.0f;
  EXPECT_EQ(tqm::GptqQuantize(p.w, p.rows, p.cols, neg, o, "w").status().code(),
            absl::StatusCode::kFailedPrecondition);
  o.bits = 9;
  EXPECT_EQ(tqm::GptqQuantize(p.w, p.rows, p.cols, h, o, "w").status().code(),
            absl::StatusCode::kInvalidArgument);
  o.bits = 4;
  o.granularity = Granularity::kGroup;
  o.group_size = 0;
  EXPECT_EQ(tqm::GptqQuantize(p.w, p.rows, p.cols, h, o, "w").status().code(),
            absl::StatusCode::kInvalidArgument);
}

void AddLlamaMeta(tqm::MemorySource& m, int layers, int dim, int hidden, int vocab,
                  const char* rope = "hf") {
  using tqm::MetaValue;
  namespace k = tqm::meta_keys;
  m.AddMeta({k::kDim, MetaValue::Int(dim)});
  m.AddMeta({k::kHiddenDim, MetaValue::Int(hidden)});
  m.AddMeta({k::kLayers, MetaValue::Int(layers)});
  m.AddMeta({k::kHeads, MetaValue::Int(4)});
  m.AddMeta({k::kKvHeads, MetaValue::Int(2)});
  m.AddMeta({k::kVocabSize, MetaValue::Int(vocab)});
  m.AddMeta({k::kSeqLen, MetaValue::Int(64)});
  m.AddMeta({k::kRopeLayout, MetaValue::String(rope)});
}

TEST(GptqSource, QuantizesTheLinearsOfASmallModel) {
  tqm::MemorySource m = tqm_test::SmallModel(2, 32, 64, 96);
  AddLlamaMeta(m, 2, 32, 64, 96);
  m.AddMeta(
      {tqm::meta_keys::kTokenizerLlama2c, tqm::MetaValue::Bytes(tqm_test::TinyTokenizer(96))});
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Once upon a time, a little cat saw the sun.\n";
  GptqOptions o;
  o.bits = 4;
  o.granularity = Granularity::kRow;
  o.keep = [](const std::string& name) {
    return name == "model.layers.1.mlp.up_proj.weight";
  };
  int calls = 0;
  o.progress = [&](const tqm::GptqProgress& p) {
    ++calls;
    EXPECT_EQ(p.layers, 2);
    EXPECT_GT(p.tokens, 40u);
  };
  auto src = tqm::MakeGptqSource(m, text, o);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(calls, 13);
  size_t quantized = 0;
  for (size_t i = 0; i < (*src)->tensors().size(); ++i) {
    const tqm::SourceTensor& t = (*src)->tensors()[i];
    const bool linear = t.name.find("_proj.") != std::string::npos &&
                        t.name != "model.layers.1.mlp.up_proj.weight";
    EXPECT_EQ(t.kind == tqm::TensorKind::kQuantized, linear) << t.name;
    if (!linear) continue;
    ++quantized;
    QuantizedTensor q;
    ASSERT_TRUE((*src)->ReadQuantized(i, &q).ok());
    ExpectOnGrid(q, t.dims[0], t.dims[1], o);
    std::vector<float> f;
    ASSERT_TRUE((*src)->Read(i, &f).ok());
    EXPECT_EQ(f, Dequant(q, t.dims[0], t.dims[1]));
  }
  EXPECT_EQ(quantized, 13u);
  // The writer stores the codes as they are.
  tqm::PackOptions po;
  po.bits = 4;
  po.granularity = Granularity::kRow;
  auto bytes = tqm::PackToString(**src, po);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto r = tqm::Reader::FromBuffer(tqm_test::AsSpan(*bytes), "gptq.tqm");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE((*r)->Verify().ok());
  const int t = (*r)->FindTensor("model.layers.0.self_attn.q_proj.weight");
  ASSERT_GE(t, 0);
  std::vector<float> got((*r)->tensors()[t].numel), want;
  ASSERT_TRUE((*r)->ReadFloat(t, absl::MakeSpan(got)).ok());
  ASSERT_TRUE((*src)->Read(t, &want).ok());
  EXPECT_EQ(got, want);
}

TEST(GptqSource, CalibrationTokensAreCappedAndWindowed) {
  tqm::MemorySource m = tqm_test::SmallModel(1, 32, 64, 96);
  AddLlamaMeta(m, 1, 32, 64, 96);  // seq_len 64
  GptqOptions o;
  o.tokenizer_llama2c = tqm_test::TinyTokenizer(96);
  size_t tokens = 0;
  o.progress = [&](const tqm::GptqProgress& p) { tokens = p.tokens; };
  const std::string line(150, 'a');  // no merges: BOS, " ", 150 x "a"
  ASSERT_TRUE(tqm::MakeGptqSource(m, line + "\n" + line + "\n", o).ok());
  EXPECT_EQ(tokens, 2u * 152);
  o.max_tokens = 100;
  ASSERT_TRUE(tqm::MakeGptqSource(m, line + "\n" + line + "\n", o).ok());
  EXPECT_EQ(tokens, 100u);
  // 32 dim, 64 hidden: 3 * 32 + 2 * 64 floats = 896 bytes per token.
  o.max_tokens = 1000;
  o.max_activation_bytes = 896 * 120 + 5;
  ASSERT_TRUE(tqm::MakeGptqSource(m, line + "\n" + line + "\n", o).ok());
  EXPECT_EQ(tokens, 120u);
  o.max_activation_bytes = 100;
  EXPECT_EQ(tqm::MakeGptqSource(m, line, o).status().code(),
            absl::StatusCode::kResourceExhausted);
  auto cfg = tqm::calib::ConfigFromMetadata(m.metadata());
  ASSERT_TRUE(cfg.ok());
  std::vector<tqm::MetaEntry> meta = {
      {tqm::meta_keys::kTokenizerLlama2c, tqm::MetaValue::Bytes(tqm_test::TinyTokenizer(96))}};
  auto b = tqm::calib::Tokenize(meta, *cfg, line + "\r\n\n" + line, 1000);
  ASSERT_TRUE(b.ok()) << b.status();
  // Each 152-token line in windows of at most seq_len = 64.
  EXPECT_EQ(b->starts, (std::vector<size_t>{0, 64, 128, 152, 216, 280, 304}));
}

TEST(GptqSource, RejectsModelsItCannotRun) {
  tqm::MemorySource bare = tqm_test::SmallModel(1, 32, 64, 96);
  auto s = tqm::MakeGptqSource(bare, "hello\n", GptqOptions()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("llama.dim"), std::string::npos) << s;

  tqm::MemorySource no_tok = tqm_test::SmallModel(1, 32, 64, 96);
  AddLlamaMeta(no_tok, 1, 32, 64, 96);
  s = tqm::MakeGptqSource(no_tok, "hello\n", GptqOptions()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("tokenizer"), std::string::npos) << s;

  // Metadata for two layers over a one-layer model: layer 1 is missing.
  tqm::MemorySource short_model = tqm_test::SmallModel(1, 32, 64, 96);
  AddLlamaMeta(short_model, 2, 32, 64, 96);
  GptqOptions o;
  o.tokenizer_llama2c = tqm_test::TinyTokenizer(96);
  s = tqm::MakeGptqSource(short_model, "hello\n", o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("model.layers.1.self_attn.q_proj.weight"), std::string::npos)
      << s;

  // A misshapen tensor: hidden_dim says 48.
  tqm::MemorySource wrong = tqm_test::SmallModel(1, 32, 64, 96);
  AddLlamaMeta(wrong, 1, 32, 48, 96);
  s = tqm::MakeGptqSource(wrong, "hello\n", o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("gate_proj"), std::string::npos) << s;

  // Text that yields no token.
  tqm::MemorySource ok = tqm_test::SmallModel(1, 32, 64, 96);
  AddLlamaMeta(ok, 1, 32, 64, 96);
  s = tqm::MakeGptqSource(ok, "\n\n", o).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

// The forward's two RoPE layouts agree once q/k rows are permuted per head
// as docs/LLAMA.md says (Meta row 2i = HF row i, 2i+1 = HF row i + head/2).
TEST(Calibrate, HfLayoutMatchesMetaWithPermutedRows) {
  const int dim = 32, heads = 4, hs = dim / heads;
  tqm::MemorySource base = tqm_test::SmallModel(2, dim, 64, 96);
  // q/k scaled up so that attention is far from uniform and RoPE matters.
  auto copy = [&](bool permute, const char* rope) {
    tqm::MemorySource m;
    for (size_t i = 0; i < base.tensors().size(); ++i) {
      const tqm::SourceTensor& t = base.tensors()[i];
      std::vector<float> v;
      EXPECT_TRUE(base.Read(i, &v).ok());
      if (t.name.find("q_proj") != std::string::npos ||
          t.name.find("k_proj") != std::string::npos) {
        for (float& x : v) x *= 30.0f;
        if (permute) {
          std::vector<float> p(v.size());
          const size_t cols = t.dims[1];
          for (size_t r = 0; r < t.dims[0]; ++r) {
            const size_t head = r / hs, k = r % hs;
            const size_t hf_row = head * hs + (k % 2 == 0 ? k / 2 : k / 2 + hs / 2);
            std::copy(v.begin() + r * cols, v.begin() + (r + 1) * cols,
                      p.begin() + hf_row * cols);
          }
          v = std::move(p);
        }
      }
      m.Add(t.name, t.dims, std::move(v));
    }
    AddLlamaMeta(m, 2, dim, 64, 96, rope);
    return m;
  };
  tqm::MemorySource meta_model = copy(false, "meta"), hf_model = copy(true, "hf"),
                    unpermuted = copy(false, "hf");
  tqm::calib::Batch b;
  for (int s = 0; s < 3; ++s) {
    for (int p = 0; p < 20; ++p) b.tokens.push_back((s * 31 + p * 7) % 96);
    b.starts.push_back(b.tokens.size());
  }
  auto a = tqm::calib::ForwardLogits(meta_model, b, 1);
  auto h = tqm::calib::ForwardLogits(hf_model, b, 1);
  auto u = tqm::calib::ForwardLogits(unpermuted, b, 1);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(h.ok()) << h.status();
  ASSERT_TRUE(u.ok()) << u.status();
  ASSERT_EQ(a->size(), h->size());
  double max_diff = 0, diff_u = 0, max_abs = 0;
  for (size_t i = 0; i < a->size(); ++i) {
    max_diff = std::max<double>(max_diff, std::fabs((*a)[i] - (*h)[i]));
    diff_u = std::max<double>(diff_u, std::fabs((*a)[i] - (*u)[i]));
    max_abs = std::max<double>(max_abs, std::fabs((*a)[i]));
  }
  std::cout << "  max |logit| " << max_abs << ", meta vs permuted hf " << max_diff
            << ", meta vs unpermuted hf " << diff_u << "\n";
  EXPECT_LT(max_diff, 1e-5 * std::max(1.0, max_abs));
  // Without the permutation the layouts disagree (the check can fail).
  EXPECT_GT(diff_u, 100 * max_diff);
  EXPECT_GT(diff_u, 1e-4 * max_abs);
}

// ---- stories260K ----

std::unique_ptr<tqm::Reader> PackAndOpen(tqm::TensorSource& src,
                                         const std::string& tokenizer,
                                         const std::string& path, double* seconds) {
  tqm::PackOptions po;
  po.bits = 4;
  po.granularity = Granularity::kRow;
  po.extra_metadata.push_back(
      {tqm::meta_keys::kTokenizerLlama2c, tqm::MetaValue::Bytes(tokenizer)});
  const auto t0 = std::chrono::steady_clock::now();
  auto stats = tqm::Pack(src, path, po);
  *seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(stats.ok()) << stats.status();
  if (!stats.ok()) return nullptr;
  auto r = tqm::Reader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return nullptr;
  EXPECT_TRUE((*r)->Verify().ok());
  return std::move(*r);
}

// The packed file's weights, dequantized, as a float source.
tqm::MemorySource Dequantized(const tqm::Reader& r) {
  tqm::MemorySource m;
  for (size_t t = 0; t < r.tensors().size(); ++t) {
    std::vector<float> v(r.tensors()[t].numel);
    EXPECT_TRUE(r.ReadFloat(t, absl::MakeSpan(v)).ok());
    m.Add(r.tensors()[t].name, r.tensors()[t].dims, std::move(v));
  }
  for (const tqm::MetaEntry& e : r.metadata()) m.AddMeta(e);
  return m;
}

// Mean over positions of KL(p || q) between the softmaxes of two logit rows.
double MeanKl(const std::vector<float>& p_logits, const std::vector<float>& q_logits,
              size_t vocab) {
  const size_t n = p_logits.size() / vocab;
  double total = 0;
  for (size_t t = 0; t < n; ++t) {
    const float* a = &p_logits[t * vocab];
    const float* b = &q_logits[t * vocab];
    double ma = a[0], mb = b[0];
    for (size_t i = 0; i < vocab; ++i)
      ma = std::max<double>(ma, a[i]), mb = std::max<double>(mb, b[i]);
    double sa = 0, sb = 0;
    for (size_t i = 0; i < vocab; ++i)
      sa += std::exp(a[i] - ma), sb += std::exp(b[i] - mb);
    const double la = std::log(sa) + ma, lb = std::log(sb) + mb;
    double kl = 0;
    for (size_t i = 0; i < vocab; ++i) {
      const double lpa = a[i] - la, lpb = b[i] - lb;
      kl += std::exp(lpa) * (lpa - lpb);
    }
    total += kl;
  }
  return total / n;
}

// The calibration forward and tokenizer on the float32 model: greedy
// decoding from "Once upon a time" gives the text run.c gives (the runtime's
// Float32ReferenceGivesTheKnownText), and encoding a calibration line then
// concatenating the pieces gives the line back.
TEST(Calibrate, Stories260KGreedyTextAndTokenizer) {
  TQM_SKIP_WITHOUT_SHARED();
  const std::string tok_bytes =
      tqm_test::ReadFile(tqm_test::SharedPath("models/stories260K/tok512.bin"));
  auto model = tqm::OpenModel(tqm_test::Stories260K());
  ASSERT_TRUE(model.ok()) << model.status();
  auto cfg = tqm::calib::ConfigFromMetadata((*model)->metadata());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  // The pieces, parsed here independently of calibrate.cc.
  std::vector<std::string> pieces;
  for (size_t pos = 4; pieces.size() < static_cast<size_t>(cfg->vocab_size);) {
    int32_t len;
    ASSERT_LE(pos + 8, tok_bytes.size());
    std::memcpy(&len, tok_bytes.data() + pos + 4, 4);
    pieces.push_back(tok_bytes.substr(pos + 8, len));
    pos += 8 + len;
  }
  auto text_of = [&](const std::vector<int32_t>& ids) {
    std::string t;
    for (size_t i = 1; i < ids.size(); ++i) t += pieces[ids[i]];
    return t.substr(t.empty() || t[0] != ' ' ? 0 : 1);  // the dummy prefix
  };
  std::vector<tqm::MetaEntry> meta = {
      {tqm::meta_keys::kTokenizerLlama2c, tqm::MetaValue::Bytes(tok_bytes)}};
  const std::string line =
      "Once upon a time, there was a little boy named Tim. Tim loved to show his "
      "friends.";
  auto enc = tqm::calib::Tokenize(meta, *cfg, line + "\n\n" + line + "\n", 1 << 20);
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(enc->sequences(), 2u);
  std::vector<int32_t> first(enc->tokens.begin(), enc->tokens.begin() + enc->starts[1]);
  EXPECT_EQ(first[0], 1);  // BOS
  EXPECT_EQ(text_of(first), line);
  EXPECT_LT(first.size(), line.size() / 2);  // merges happened

  auto prompt = tqm::calib::Tokenize(meta, *cfg, "Once upon a time", 1 << 20);
  ASSERT_TRUE(prompt.ok()) << prompt.status();
  tqm::calib::Batch b = *prompt;
  while (b.tokens.size() < 40) {
    b.starts = {0, b.tokens.size()};
    auto logits = tqm::calib::ForwardLogits(**model, b, 0);
    ASSERT_TRUE(logits.ok()) << logits.status();
    const float* last = logits->data() + (b.tokens.size() - 1) * cfg->vocab_size;
    b.tokens.push_back(
        static_cast<int32_t>(std::max_element(last, last + cfg->vocab_size) - last));
  }
  const std::string got = text_of(b.tokens);
  EXPECT_EQ(
      got.rfind("Once upon a time, there was a little girl named Lily. She loved to play "
                "outside in the park.",
                0),
      0u)
      << got;
}

TEST(GptqStories, BeatsRoundToNearestOnHeldOutText) {
  TQM_SKIP_WITHOUT_SHARED();
  const std::string calib_path = tqm_test::SharedPath("text/stories260K-calibration.txt");
  const std::string heldout_path = tqm_test::SharedPath("text/stories260K-heldout.txt");
  if (!tqm_test::Exists(calib_path) || !tqm_test::Exists(heldout_path)) {
    GTEST_SKIP() << "../shared/text/stories260K-*.txt are absent";
  }
  const std::string tokenizer =
      tqm_test::ReadFile(tqm_test::SharedPath("models/stories260K/tok512.bin"));
  auto model = tqm::OpenModel(tqm_test::Stories260K());
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string dir = ::testing::TempDir();

  double rtn_seconds = 0, gptq_seconds = 0;
  auto rtn = PackAndOpen(**model, tokenizer, dir + "/gptq_test_rtn.tqm", &rtn_seconds);
  ASSERT_NE(rtn, nullptr);

  GptqOptions o;
  o.bits = 4;
  o.granularity = Granularity::kRow;
  o.tokenizer_llama2c = tokenizer;
  const auto t0 = std::chrono::steady_clock::now();
  auto gptq_src = tqm::MakeGptqSource(**model, tqm_test::ReadFile(calib_path), o);
  ASSERT_TRUE(gptq_src.ok()) << gptq_src.status();
  gptq_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto gptq =
      PackAndOpen(**gptq_src, tokenizer, dir + "/gptq_test_gptq.tqm", &gptq_seconds);
  ASSERT_NE(gptq, nullptr);

  // Same layout and grid; the linears' codes differ, the rest is identical.
  ASSERT_EQ(rtn->tensors().size(), gptq->tensors().size());
  size_t differing = 0;
  for (size_t t = 0; t < rtn->tensors().size(); ++t) {
    const auto& a = rtn->tensors()[t];
    const auto& b = gptq->tensors()[t];
    ASSERT_EQ(a.name, b.name);
    ASSERT_EQ(a.storage, b.storage) << a.name;
    ASSERT_EQ(a.bits, b.bits) << a.name;
    std::vector<uint8_t> ca(a.byte_size), cb(b.byte_size);
    ASSERT_TRUE(rtn->DecodeTensor(t, absl::MakeSpan(ca)).ok());
    ASSERT_TRUE(gptq->DecodeTensor(t, absl::MakeSpan(cb)).ok());
    const bool linear = a.name.find("_proj.") != std::string::npos;
    if (linear) {
      differing += ca != cb;
    } else {
      EXPECT_EQ(ca, cb) << a.name;
    }
  }
  EXPECT_EQ(differing, 35u);  // 5 layers x 7 linears

  // Held-out KL(fp32 || quantized), teacher-forced, every position.
  auto cfg = tqm::calib::ConfigFromMetadata((*model)->metadata());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  std::vector<tqm::MetaEntry> tok_meta = {
      {tqm::meta_keys::kTokenizerLlama2c, tqm::MetaValue::Bytes(tokenizer)}};
  auto batch =
      tqm::calib::Tokenize(tok_meta, *cfg, tqm_test::ReadFile(heldout_path), 1 << 20);
  ASSERT_TRUE(batch.ok()) << batch.status();
  auto ref = tqm::calib::ForwardLogits(**model, *batch, 0);
  ASSERT_TRUE(ref.ok()) << ref.status();
  tqm::MemorySource rtn_f = Dequantized(*rtn), gptq_f = Dequantized(*gptq);
  auto rtn_logits = tqm::calib::ForwardLogits(rtn_f, *batch, 0);
  auto gptq_logits = tqm::calib::ForwardLogits(gptq_f, *batch, 0);
  ASSERT_TRUE(rtn_logits.ok() && gptq_logits.ok());
  const double kl_rtn = MeanKl(*ref, *rtn_logits, cfg->vocab_size);
  const double kl_gptq = MeanKl(*ref, *gptq_logits, cfg->vocab_size);
  std::cout << "stories260K 4-bit per-row, " << batch->tokens.size()
            << " held-out tokens: KL(fp32||RTN) " << kl_rtn << ", KL(fp32||GPTQ) "
            << kl_gptq << " (ratio " << kl_gptq / kl_rtn << "); pack time RTN "
            << rtn_seconds << " s, GPTQ " << gptq_seconds << " s\n";
  RecordProperty("kl_rtn", std::to_string(kl_rtn));
  RecordProperty("kl_gptq", std::to_string(kl_gptq));
  EXPECT_GT(kl_rtn, 0);
  EXPECT_LE(kl_gptq, 0.8 * kl_rtn);
}

// ---- tqm-pack --calibration / --act-order ----

struct CmdResult {
  int exit_code = -1;
  std::string out;
};

CmdResult Sh(const std::string& cmd) {
  CmdResult r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

TEST(GptqTool, PackWithCalibrationAndActOrder) {
  TQM_SKIP_WITHOUT_SHARED();
  const std::string pack = std::string(TQM_BIN_DIR) + "/tqm-pack";
  if (!tqm_test::Exists(pack)) GTEST_SKIP() << pack << " is not built";
  const std::string calib_path = tqm_test::SharedPath("text/stories260K-calibration.txt");
  if (!tqm_test::Exists(calib_path)) GTEST_SKIP() << calib_path << " is absent";
  const std::string tok_path = tqm_test::SharedPath("models/stories260K/tok512.bin");
  const std::string dir = ::testing::TempDir();
  // The first 20 stories keep the test short.
  std::string text;
  {
    const std::string all = tqm_test::ReadFile(calib_path);
    size_t end = 0;
    for (int i = 0; i < 20 && end != std::string::npos; ++i)
      end = all.find('\n', end + 1);
    text = all.substr(0, end);
  }
  const std::string calib = dir + "/gptq_tool_calibration.txt";
  tqm_test::WriteFile(calib, text);
  const std::string out = dir + "/gptq_tool.tqm";
  CmdResult r = Sh(pack + " " + tqm_test::Stories260K() + " -o " + out + " --tokenizer " +
                   tok_path + " --bits 3 --granularity group:32 --calibration " + calib +
                   " --act-order --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto reader = tqm::Reader::Open(out);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_TRUE((*reader)->Verify().ok());

  // The same codes as the library with the same options.
  auto model = tqm::OpenModel(tqm_test::Stories260K());
  ASSERT_TRUE(model.ok()) << model.status();
  GptqOptions o;
  o.bits = 3;
  o.granularity = Granularity::kGroup;
  o.group_size = 32;
  o.act_order = true;
  o.tokenizer_llama2c = tqm_test::ReadFile(tok_path);
  auto src = tqm::MakeGptqSource(**model, text, o);
  ASSERT_TRUE(src.ok()) << src.status();
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight",
                           "model.layers.4.mlp.down_proj.weight"}) {
    const int t = (*reader)->FindTensor(name);
    ASSERT_GE(t, 0) << name;
    const auto& info = (*reader)->tensors()[t];
    EXPECT_EQ(info.storage, tqm::format::kStorageU8Group) << name;
    EXPECT_EQ(info.bits, 3) << name;
    std::vector<uint8_t> codes(info.byte_size);
    ASSERT_TRUE((*reader)->DecodeTensor(t, absl::MakeSpan(codes)).ok());
    QuantizedTensor q;
    ASSERT_TRUE((*src)->ReadQuantized(t, &q).ok());
    EXPECT_EQ(codes, q.codes) << name;
    ASSERT_EQ(info.affine.size(), q.params.size());
    for (size_t k = 0; k < q.params.size(); ++k) {
      EXPECT_EQ(info.affine[k].scale, q.params[k].scale);
      EXPECT_EQ(info.affine[k].zero, q.params[k].zero);
    }
  }

  // Usage errors: --act-order alone; no tokenizer to read the text with.
  r = Sh(pack + " " + tqm_test::Stories260K() + " -o " + out + " --act-order");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("--act-order needs --calibration"), std::string::npos) << r.out;
  r = Sh(pack + " " + tqm_test::Stories260K() + " -o " + dir + "/gptq_tool_2.tqm" +
         " --calibration " + calib);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("tokenizer"), std::string::npos) << r.out;
  EXPECT_FALSE(tqm_test::Exists(dir + "/gptq_tool_2.tqm"));
}

}  // namespace
