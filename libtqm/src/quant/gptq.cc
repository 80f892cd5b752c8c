// GPTQ (tqm/gptq.h), after the reference implementation's fasterquant():
// dead inputs (diag(H) == 0) zeroed, optional act-order permutation,
// dampening, the upper Cholesky factor U of H^-1, then columns quantized in
// blocks of 128: each column's scaled error (w - q) / U[i][i] updates the
// rest of its block at once and the columns after the block in one batch
// when the block ends ("lazy batch updates").
//
// Every row of W is quantized independently of the others (the update of a
// row reads only that row, U and the row's own pairs), so the rows are
// processed in parallel, each as a sequence of blocks.

#include "tqm/gptq.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_format.h"
#include "quant/calibrate.h"
#include "quant/quantize_internal.h"
#include "tqm/status.h"

namespace tqm {
namespace {

// Caps the Hessian at 2^30 entries (4 GiB of float plus 8 GiB of double
// while factored): no Llama has wider linear inputs than 32768.
constexpr uint64_t kMaxInFeatures = uint64_t{1} << 15;

// Factors the symmetric positive-definite `a` (n x n, row-major) in place
// into its lower Cholesky factor L (the upper triangle is left as it was).
// False when a pivot is not positive (or not finite).
bool CholeskyLower(std::vector<double>& a, size_t n, unsigned threads) {
  for (size_t j = 0; j < n; ++j) {
    double* aj = &a[j * n];
    double s = aj[j];
    for (size_t k = 0; k < j; ++k) s -= aj[k] * aj[k];
    if (!(s > 0) || !std::isfinite(s)) return false;
    const double d = std::sqrt(s);
    aj[j] = d;
    const size_t rest = n - j - 1;
    auto row = [&](size_t i) {
      double* ai = &a[i * n];
      double t = ai[j];
      for (size_t k = 0; k < j; ++k) t -= ai[k] * aj[k];
      ai[j] = t / d;
    };
    if (rest * j < (size_t{1} << 16)) {
      for (size_t i = j + 1; i < n; ++i) row(i);
    } else {
      constexpr size_t kRows = 32;
      internal::ParallelFor((rest + kRows - 1) / kRows, threads, [&](size_t b) {
        const size_t end = std::min(n, j + 1 + (b + 1) * kRows);
        for (size_t i = j + 1 + b * kRows; i < end; ++i) row(i);
      });
    }
  }
  return true;
}

// Inverts the lower-triangular `a` (n x n, row-major) in place, row by row:
// row i of the inverse X is -(sum over k < i of L[i][k] X[k]) / L[i][i],
// summed as contiguous row updates (X[k] has entries 0..k) into a buffer,
// since row i of L is read until the sum is complete.
void InvertLower(std::vector<double>& a, size_t n) {
  std::vector<double> sum(n);
  for (size_t i = 0; i < n; ++i) {
    double* ai = &a[i * n];
    std::fill(sum.begin(), sum.begin() + i, 0.0);
    for (size_t k = 0; k < i; ++k) {
      const double lik = ai[k];
      const double* xk = &a[k * n];
      for (size_t j = 0; j <= k; ++j) sum[j] += lik * xk[j];
    }
    const double d = 1.0 / ai[i];
    for (size_t j = 0; j < i; ++j) ai[j] = -sum[j] * d;
    ai[i] = d;
  }
}

int QuantizeOne(float x, const Affine& a, float top) {
  float q = quantize_internal::RoundHalfEven(x / a.scale) + a.zero;
  q = q < 0.0f ? 0.0f : (q > top ? top : q);
  return static_cast<int>(q);
}

absl::Status CheckOptions(const GptqOptions& o) {
  if (o.bits < format::kMinBits || o.bits > format::kMaxBits) {
    return absl::InvalidArgumentError(
        absl::StrFormat("bit width %d is not 1..8", o.bits));
  }
  if (o.granularity == Granularity::kGroup &&
      (o.group_size == 0 || o.group_size > format::kMaxGroupSize)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "group size %d is not 1..%d", o.group_size, format::kMaxGroupSize));
  }
  if (o.block_size == 0) return absl::InvalidArgumentError("block size must be positive");
  if (!(o.dampening >= 0) || !std::isfinite(o.dampening)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("dampening %g must be a finite number >= 0", o.dampening));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<QuantizedTensor> GptqQuantize(absl::Span<const float> w_in, uint64_t rows,
                                             uint64_t cols, std::vector<float> h,
                                             const GptqOptions& options,
                                             const std::string& name) {
  TQM_RETURN_IF_ERROR(CheckOptions(options));
  if (rows == 0 || cols == 0 || cols > kMaxInFeatures ||
      rows > (uint64_t{1} << 40) / cols || w_in.size() != rows * cols ||
      h.size() != cols * cols) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor '%s': GPTQ needs a [rows, cols] matrix with 1..%d columns and a [cols, "
        "cols] Hessian; got %d values for [%d, %d] and %d Hessian entries",
        name, kMaxInFeatures, w_in.size(), rows, cols, h.size()));
  }
  const size_t n = cols;
  const float top = static_cast<float>((1 << options.bits) - 1);
  QuantizedTensor out;
  out.bits = static_cast<uint8_t>(options.bits);
  out.codes.resize(rows * cols);
  auto bad_pair = [&](const char* what, uint64_t k, const absl::Status& s) {
    return absl::InvalidArgumentError(
        absl::StrFormat("tensor '%s'%s %d: %s", name, what, k, s.message()));
  };
  // Pairs chosen from the weights before any update (the reference's
  // find_params before the loop); groups are chosen in the loop.
  uint64_t groups_per_row = 1;
  switch (options.granularity) {
    case Granularity::kTensor: {
      out.storage = format::kStorageU8Tensor;
      absl::StatusOr<Affine> a = ChooseAffine(w_in, options.bits);
      if (!a.ok()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("tensor '%s': %s", name, a.status().message()));
      }
      out.params = {*a};
      break;
    }
    case Granularity::kRow:
      out.storage = format::kStorageU8Row;
      out.params.resize(rows);
      for (uint64_t r = 0; r < rows; ++r) {
        absl::StatusOr<Affine> a = ChooseAffine(w_in.subspan(r * n, n), options.bits);
        if (!a.ok()) return bad_pair(" row", r, a.status());
        out.params[r] = *a;
      }
      break;
    case Granularity::kGroup:
      out.storage = format::kStorageU8Group;
      out.group_size = options.group_size;
      groups_per_row = (n + options.group_size - 1) / options.group_size;
      out.params.resize(rows * groups_per_row);
      break;
  }
  for (size_t i = 0; i < n * n; ++i) {
    if (!std::isfinite(h[i])) {
      return absl::InvalidArgumentError(
          absl::StrFormat("tensor '%s': Hessian entry %d is not finite", name, i));
    }
  }
  // Dead inputs: their weights never matter; H[i][i] = 1 keeps H invertible.
  std::vector<bool> dead(n, false);
  for (size_t i = 0; i < n; ++i) {
    if (h[i * n + i] == 0.0f) {
      dead[i] = true;
      h[i * n + i] = 1.0f;
    }
  }
  std::vector<size_t> perm(n);
  std::iota(perm.begin(), perm.end(), size_t{0});
  if (options.act_order) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](size_t a, size_t b) { return h[a * n + a] > h[b * n + b]; });
  }
  std::vector<size_t> pos_of(n);
  for (size_t p = 0; p < n; ++p) pos_of[perm[p]] = p;
  double mean_diag = 0;
  for (size_t i = 0; i < n; ++i) mean_diag += h[i * n + i];
  mean_diag /= static_cast<double>(n);
  const double damp = options.dampening * mean_diag;
  // U, the upper Cholesky factor of (P H P^T + damp I)^-1, is J L^-1 J
  // where L is the lower Cholesky factor of the same matrix with rows and
  // columns reversed (J): one factorisation and one triangular inverse.
  std::vector<double> a(n * n);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      a[(n - 1 - i) * n + (n - 1 - j)] = h[perm[i] * n + perm[j]];
    }
    a[(n - 1 - i) * n + (n - 1 - i)] += damp;
  }
  if (!CholeskyLower(a, n, options.threads)) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "tensor '%s': the dampened Hessian of its inputs is not positive definite "
        "(dampening %g x mean diagonal %g)",
        name, options.dampening, mean_diag));
  }
  InvertLower(a, n);
  std::vector<float>& u = h;  // H is no longer needed
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      u[i * n + j] = j >= i ? static_cast<float>(a[(n - 1 - i) * n + (n - 1 - j)]) : 0.0f;
    }
  }
  a.clear();
  a.shrink_to_fit();

  // Blocks hold whole groups when the columns are in order, so that a
  // group's pair sees every update made before its first column.
  size_t block = options.block_size;
  if (options.granularity == Granularity::kGroup && !options.act_order) {
    const size_t g = options.group_size;
    block = std::max(g, block / g * g);
  }
  std::vector<absl::Status> errors(rows);
  internal::ParallelFor(rows, options.threads, [&](size_t r) {
    std::vector<float> wr(n), err(block);
    for (size_t p = 0; p < n; ++p) wr[p] = dead[perm[p]] ? 0.0f : w_in[r * n + perm[p]];
    std::vector<bool> group_ready(groups_per_row, false);
    uint8_t* codes = &out.codes[r * n];
    for (size_t i1 = 0; i1 < n; i1 += block) {
      const size_t i2 = std::min(n, i1 + block);
      for (size_t i = i1; i < i2; ++i) {
        const size_t col = perm[i];
        Affine* pair = nullptr;
        switch (out.storage) {
          case format::kStorageU8Tensor:
            pair = &out.params[0];
            break;
          case format::kStorageU8Row:
            pair = &out.params[r];
            break;
          default: {
            const size_t g = col / options.group_size;
            pair = &out.params[r * groups_per_row + g];
            if (!group_ready[g]) {
              // The group's current weights: those in this block are up to
              // date; later ones still lack this block's pending update.
              const size_t c0 = g * options.group_size,
                           c1 = std::min(n, c0 + options.group_size);
              std::vector<float> cur(c1 - c0);
              for (size_t c = c0; c < c1; ++c) {
                const size_t p = pos_of[c];
                float v = wr[p];
                if (p >= i2) {
                  for (size_t k = i1; k < i; ++k) v -= err[k - i1] * u[k * n + p];
                }
                cur[c - c0] = v;
              }
              absl::StatusOr<Affine> ga = ChooseAffine(cur, options.bits);
              if (!ga.ok()) {
                errors[r] = bad_pair(" group", r * groups_per_row + g, ga.status());
                return;
              }
              *pair = *ga;
              group_ready[g] = true;
            }
          }
        }
        const float x = wr[i];
        const int q = QuantizeOne(x, *pair, top);
        codes[col] = static_cast<uint8_t>(q);
        const float dq = pair->scale * (static_cast<float>(q) - pair->zero);
        const float e = (x - dq) / u[i * n + i];
        err[i - i1] = e;
        const float* ui = &u[i * n];
        for (size_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
      }
      // The lazy batch: this block's errors reach the later columns at once.
      for (size_t k = i1; k < i2; ++k) {
        const float e = err[k - i1];
        if (e == 0.0f) continue;
        const float* uk = &u[k * n];
        for (size_t j = i2; j < n; ++j) wr[j] -= e * uk[j];
      }
    }
  });
  for (const absl::Status& s : errors) TQM_RETURN_IF_ERROR(s);
  return out;
}

namespace {

// Dequantizes `q` of a tensor of `rows` x `cols` into `out`.
void Dequantize(const QuantizedTensor& q, uint64_t rows, uint64_t cols,
                std::vector<float>* out) {
  out->resize(rows * cols);
  const uint64_t gpr =
      q.storage == format::kStorageU8Group ? (cols + q.group_size - 1) / q.group_size : 1;
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) {
      const Affine& a = q.storage == format::kStorageU8Tensor ? q.params[0]
                        : q.storage == format::kStorageU8Row
                            ? q.params[r]
                            : q.params[r * gpr + c / q.group_size];
      (*out)[r * cols + c] =
          a.scale * (static_cast<float>(q.codes[r * cols + c]) - a.zero);
    }
  }
}

// H = 2 X^T X / n over the `tokens` rows of `x` ([tokens, width]). Tiles
// of 256 tokens are transposed so that each entry's partial sum is a
// contiguous dot product over a tile held in cache; the tiles' sums are
// added in double, one row of H at a time.
std::vector<float> Hessian(absl::Span<const float> x, size_t width, unsigned threads) {
  constexpr size_t kTile = 256;
  const size_t tokens = x.size() / width;
  const size_t tiles = (tokens + kTile - 1) / kTile;
  std::vector<float> xt(width * kTile);
  std::vector<double> acc(width * width, 0.0);
  for (size_t tile = 0; tile < tiles; ++tile) {
    const size_t t0 = tile * kTile, nt = std::min(kTile, tokens - t0);
    for (size_t t = 0; t < nt; ++t) {
      for (size_t i = 0; i < width; ++i) xt[i * kTile + t] = x[(t0 + t) * width + i];
    }
    for (size_t t = nt; t < kTile; ++t) {
      for (size_t i = 0; i < width; ++i) xt[i * kTile + t] = 0.0f;
    }
    internal::ParallelFor(width, threads, [&](size_t i) {
      const float* xi = &xt[i * kTile];
      double* row = &acc[i * width];
      for (size_t j = i; j < width; ++j) {
        const float* xj = &xt[j * kTile];
        float s[8] = {};
        for (size_t t = 0; t < kTile; t += 8) {
          for (int k = 0; k < 8; ++k) s[k] += xi[t + k] * xj[t + k];
        }
        row[j] += ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
      }
    });
  }
  std::vector<float> h(width * width);
  const double scale = 2.0 / static_cast<double>(tokens);
  for (size_t i = 0; i < width; ++i) {
    for (size_t j = i; j < width; ++j) {
      h[i * width + j] = h[j * width + i] =
          static_cast<float>(acc[i * width + j] * scale);
    }
  }
  return h;
}

class GptqSource : public TensorSource {
 public:
  explicit GptqSource(TensorSource& src) : src_(src), tensors_(src.tensors()) {}

  const std::vector<SourceTensor>& tensors() const override { return tensors_; }
  const std::vector<MetaEntry>& metadata() const override { return src_.metadata(); }

  absl::Status Read(size_t i, std::vector<float>* out) override {
    auto it = quantized_.find(i);
    if (it == quantized_.end()) return src_.Read(i, out);
    const SourceTensor& t = tensors_[i];
    Dequantize(it->second, t.dims[0], t.dims[1], out);
    return absl::OkStatus();
  }
  absl::Status ReadRaw(size_t i, std::string* out) override {
    if (quantized_.contains(i)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s' is quantized (GPTQ): no raw bytes", tensors_[i].name));
    }
    return src_.ReadRaw(i, out);
  }
  absl::Status ReadQuantized(size_t i, QuantizedTensor* out) override {
    auto it = quantized_.find(i);
    if (it == quantized_.end()) return src_.ReadQuantized(i, out);
    *out = it->second;
    return absl::OkStatus();
  }

  void Set(size_t i, QuantizedTensor q) {
    tensors_[i].kind = TensorKind::kQuantized;
    quantized_[i] = std::move(q);
  }

 private:
  TensorSource& src_;
  std::vector<SourceTensor> tensors_;
  absl::flat_hash_map<size_t, QuantizedTensor> quantized_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TensorSource>> MakeGptqSource(
    TensorSource& float_source, const std::string& calibration_text,
    const GptqOptions& options) {
  TQM_RETURN_IF_ERROR(CheckOptions(options));
  TQM_ASSIGN_OR_RETURN(calib::LlamaModel model, calib::LlamaModel::Open(float_source));
  const calib::LlamaConfig& c = model.config();
  if (static_cast<uint64_t>(std::max(c.dim, c.hidden_dim)) > kMaxInFeatures) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("GPTQ: linear inputs of %d features exceed the limit of %d",
                        std::max(c.dim, c.hidden_dim), kMaxInFeatures));
  }
  // The layer forward's peak: x, the normed input, the attention output and
  // the MLP's two hidden activations per token.
  const uint64_t per_token =
      (3 * uint64_t(c.dim) + 2 * uint64_t(c.hidden_dim)) * sizeof(float);
  const size_t max_tokens = static_cast<size_t>(
      std::min<uint64_t>(options.max_tokens, options.max_activation_bytes / per_token));
  if (max_tokens == 0) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "GPTQ: one token's activations (%d bytes) exceed max_activation_bytes %d",
        per_token, options.max_activation_bytes));
  }
  std::vector<MetaEntry> tokenizer_meta;
  if (!options.tokenizer_llama2c.empty()) {
    tokenizer_meta.push_back(
        {meta_keys::kTokenizerLlama2c, MetaValue::Bytes(options.tokenizer_llama2c)});
  }
  TQM_ASSIGN_OR_RETURN(
      calib::Batch batch,
      calib::Tokenize(tokenizer_meta.empty() ? float_source.metadata() : tokenizer_meta,
                      c, calibration_text, max_tokens));
  auto result = std::make_unique<GptqSource>(float_source);
  std::vector<float> x;
  TQM_RETURN_IF_ERROR(model.Embed(batch, &x));
  calib::LayerWeights w;
  for (int l = 0; l < c.n_layers; ++l) {
    TQM_RETURN_IF_ERROR(model.LoadLayer(l, &w));
    auto hook = [&](int stage, absl::Span<const float> in, size_t width,
                    calib::LayerWeights* lw) -> absl::Status {
      std::vector<int> todo;
      for (int k : calib::StageLinears(stage)) {
        const std::string& name = float_source.tensors()[model.LinearIndex(l, k)].name;
        if (!options.keep || !options.keep(name)) todo.push_back(k);
      }
      if (todo.empty()) return absl::OkStatus();
      std::vector<float> h = Hessian(in, width, options.threads);
      for (int k : todo) {
        const int index = model.LinearIndex(l, k);
        const std::string& name = float_source.tensors()[index].name;
        const auto [rows, cols] = model.LinearShape(k);
        TQM_ASSIGN_OR_RETURN(QuantizedTensor q,
                             GptqQuantize(lw->w[k], rows, cols, h, options, name));
        // The following linears see this one's quantized outputs.
        Dequantize(q, rows, cols, &lw->w[k]);
        result->Set(index, std::move(q));
        if (options.progress) {
          options.progress({l, c.n_layers, name, batch.tokens.size()});
        }
      }
      return absl::OkStatus();
    };
    TQM_RETURN_IF_ERROR(model.LayerForward(batch, &w, &x, hook, options.threads));
  }
  return std::unique_ptr<TensorSource>(std::move(result));
}

}  // namespace tqm
