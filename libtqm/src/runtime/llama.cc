// The Llama forward pass over the tqm loader (llama.h), and the float32
// reference it is checked against.

#include "runtime/llama.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "runtime/kernels.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"
#include "tqm/status.h"

namespace tqm {
namespace rt {

const char* ModeName(Mode mode) {
  switch (mode) {
    case Mode::kDecodedF32:
      return "decoded-f32";
    case Mode::kInt8:
      return "int8";
    case Mode::kStream:
      return "stream";
    case Mode::kFused:
      return "fused";
  }
  return "?";
}

absl::StatusOr<Mode> ParseMode(absl::string_view name) {
  for (Mode m : {Mode::kDecodedF32, Mode::kInt8, Mode::kStream, Mode::kFused}) {
    if (name == ModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown mode '%s' (decoded-f32, int8, stream or fused)", name));
}

std::string LayerTensorName(int layer, absl::string_view suffix) {
  return absl::StrCat(llama::HfLayerPrefix(layer), suffix);
}

namespace {

// Per-layer tensors in the order LayerIdx holds them (llama::kLayerTensors).
enum { kAttNorm, kWq, kWk, kWv, kWo, kFfnNorm, kW1, kW2, kW3, kLayerTensors };
static_assert(kLayerTensors == llama::kLayerTensors.size(), "one slot per layer tensor");

std::string EmbedName() { return llama::HfName(llama::Tensor::kEmbed); }
std::string FinalNormName() { return llama::HfName(llama::Tensor::kFinalNorm); }
std::string ClassifierName() { return llama::HfName(llama::Tensor::kClassifier); }

std::string LayerName(int layer, int which) {
  return llama::HfName(llama::kLayerTensors[which], layer);
}

std::vector<uint64_t> LayerShape(const LlamaConfig& c, int which) {
  return llama::Shape(llama::kLayerTensors[which], c.dims());
}

void RmsNorm(float* out, const float* x, const float* w, int n, float eps) {
  float ss = 0;
  for (int j = 0; j < n; ++j) ss += x[j] * x[j];
  ss = 1.0f / std::sqrt(ss / n + eps);
  for (int j = 0; j < n; ++j) out[j] = w[j] * (ss * x[j]);
}

// Multi-head attention of query `q` at `pos` over the cached keys/values of
// one layer (kv_dim floats per position); writes n_heads * head_size to out.
void Attention(const LlamaConfig& c, const float* q, const float* keys,
               const float* values, int pos, float* att, float* out) {
  const int hs = c.head_size(), kv_dim = c.kv_dim(), kv_mul = c.n_heads / c.n_kv_heads;
  const float inv = 1.0f / std::sqrt(static_cast<float>(hs));
  for (int h = 0; h < c.n_heads; ++h) {
    const float* qh = q + h * hs;
    float* a = att + static_cast<size_t>(h) * c.seq_len;
    const size_t koff = static_cast<size_t>(h / kv_mul) * hs;
    for (int t = 0; t <= pos; ++t) {
      const float* k = keys + static_cast<size_t>(t) * kv_dim + koff;
      float score = 0;
      for (int i = 0; i < hs; ++i) score += qh[i] * k[i];
      a[t] = score * inv;
    }
    Softmax(absl::MakeSpan(a, pos + 1));
    float* o = out + h * hs;
    std::fill(o, o + hs, 0.0f);
    for (int t = 0; t <= pos; ++t) {
      const float* v = values + static_cast<size_t>(t) * kv_dim + koff;
      const float w = a[t];
      for (int i = 0; i < hs; ++i) o[i] += w * v[i];
    }
  }
}

}  // namespace

absl::StatusOr<LlamaConfig> ConfigFromMetadata(const std::vector<MetaEntry>& meta,
                                               const std::string& file) {
  llama::MetadataRules rules;
  rules.prefix = file + ": ";
  rules.max_dim = 1 << 17;
  rules.max_hidden_dim = rules.max_dim * 8;
  return llama::ForwardConfigFromMetadata(meta, rules);
}

// ---------------------------------------------------------------------------
// Llama

struct Llama::Mat {
  uint64_t rows = 0, cols = 0;
  const float* f32 = nullptr;
  const uint8_t* q = nullptr;
  absl::Span<const Affine> affine;
  const EncodedTensor* enc = nullptr;
  // Group storage: columns per group (at most cols) and groups per row; 0
  // and 1 for per-tensor and per-row parameters, whose pair is RowAffine().
  uint64_t group = 0, per_row = 1;
  const Affine& RowAffine(uint64_t r) const {
    return affine.size() == 1 ? affine[0] : affine[r];
  }
};

struct Llama::Weight {
  int tensor = -1;
  int view = -1;  // index in the layer's LayerHandle::tensors()
  EncodedTensor enc;
};

struct Llama::LayerIdx {
  Weight w[kLayerTensors];
};

void Llama::Free::operator()(float* p) const { std::free(p); }

Llama::~Llama() {
  pinned_.clear();
  globals_.Release();
}

static ModelOptions LoaderOptions(const RuntimeOptions& o) {
  ModelOptions m;
  m.threads = o.threads;
  m.budget_bytes = o.budget_bytes;
  m.verify_checksums = o.verify_checksums;
  m.dequantize = o.mode == Mode::kDecodedF32;
  m.skip_quantized = o.mode == Mode::kFused;
  m.prefetch = o.mode == Mode::kStream ? o.prefetch : 0;
  m.zero_copy = o.zero_copy;
  m.on_warning = o.on_warning;
  return m;
}

absl::StatusOr<std::unique_ptr<Llama>> Llama::Open(const std::string& path,
                                                   const RuntimeOptions& options) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                       Model::Open(path, LoaderOptions(options)));
  std::unique_ptr<Llama> l(new Llama());
  TQM_RETURN_IF_ERROR(l->Init(std::move(model), options));
  return l;
}

absl::StatusOr<std::unique_ptr<Llama>> Llama::FromReader(std::unique_ptr<Reader> reader,
                                                         const RuntimeOptions& options) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                       Model::FromReader(std::move(reader), LoaderOptions(options)));
  std::unique_ptr<Llama> l(new Llama());
  TQM_RETURN_IF_ERROR(l->Init(std::move(model), options));
  return l;
}

absl::Status Llama::Init(std::unique_ptr<Model> model, const RuntimeOptions& options) {
  model_ = std::move(model);
  mode_ = options.mode;
  const Reader& r = model_->reader();
  TQM_ASSIGN_OR_RETURN(config_, ConfigFromMetadata(r.metadata(), r.name()));
  const LlamaConfig& c = config_;
  const int threads =
      options.threads > 0
          ? options.threads
          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  pool_ = std::make_unique<ThreadPool>(threads);

  // Resolves `name`: it must exist, have `dims`, and belong to `layer`.
  auto resolve = [&](const std::string& name, const std::vector<uint64_t>& dims,
                     int layer, Weight* w) -> absl::Status {
    const int t = r.FindTensor(name);
    if (t < 0) {
      return absl::NotFoundError(
          absl::StrFormat("%s: tensor '%s' is missing", r.name(), name));
    }
    const TensorInfo& ti = r.tensors()[t];
    if (ti.dims != dims) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor '%s' has shape [%s], the llama.* metadata implies [%s]", r.name(),
          name, absl::StrJoin(ti.dims, ", "), absl::StrJoin(dims, ", ")));
    }
    if (ti.layer != layer) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: tensor '%s' is in layer %d, expected %d", r.name(), name,
                          ti.layer, layer));
    }
    absl::Span<const int> in_layer = model_->LayerTensors(layer);
    w->tensor = t;
    w->view = static_cast<int>(std::find(in_layer.begin(), in_layer.end(), t) -
                               in_layer.begin());
    if (mode_ == Mode::kFused && ti.quantized()) {
      TQM_ASSIGN_OR_RETURN(w->enc, model_->Encoded(t));
    }
    return absl::OkStatus();
  };
  const uint64_t vocab = c.vocab_size, dim = c.dim;
  globals_weights_.resize(3);
  Weight embed, norm, cls;
  TQM_RETURN_IF_ERROR(resolve(EmbedName(), {vocab, dim}, format::kNoLayer, &embed));
  TQM_RETURN_IF_ERROR(resolve(FinalNormName(), {dim}, format::kNoLayer, &norm));
  const bool tied = r.FindTensor(ClassifierName()) < 0;
  TQM_RETURN_IF_ERROR(resolve(tied ? EmbedName() : ClassifierName(), {vocab, dim},
                              format::kNoLayer, &cls));
  layers_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    for (int k = 0; k < kLayerTensors; ++k) {
      TQM_RETURN_IF_ERROR(
          resolve(LayerName(l, k), LayerShape(c, k), l, &layers_[l].w[k]));
    }
  }
  globals_weights_[0] = std::move(embed);
  globals_weights_[1] = std::move(norm);
  globals_weights_[2] = std::move(cls);

  TQM_ASSIGN_OR_RETURN(globals_, model_->Layer(format::kNoLayer));
  if (mode_ != Mode::kStream) {
    for (int l = 0; l < c.n_layers; ++l) {
      TQM_ASSIGN_OR_RETURN(LayerHandle h, model_->Layer(l));
      pinned_.push_back(std::move(h));
    }
  }

  const size_t kv = c.kv_dim();
  x_.assign(dim, 0);
  xb_.assign(dim, 0);
  xb2_.assign(dim, 0);
  q_.assign(dim, 0);
  hb_.assign(c.hidden_dim, 0);
  hb2_.assign(c.hidden_dim, 0);
  att_.assign(static_cast<size_t>(c.n_heads) * c.seq_len, 0);
  logits_.assign(vocab, 0);
  norm_tmp_.assign(std::max<size_t>(dim, 1), 0);
  const size_t cache = static_cast<size_t>(c.n_layers) * c.seq_len * kv;
  // calloc: pages are committed only as positions are written.
  key_cache_.reset(static_cast<float*>(std::calloc(cache, sizeof(float))));
  value_cache_.reset(static_cast<float*>(std::calloc(cache, sizeof(float))));
  if (!key_cache_ || !value_cache_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: cannot allocate the KV cache (%d floats)", r.name(), 2 * cache));
  }
  return absl::OkStatus();
}

absl::Status Llama::MakeMat(const LayerHandle* h, const Weight& w, Mat* m) {
  const TensorView& v = h->tensors()[w.view];
  *m = Mat();
  m->rows = v.rows();
  m->cols = v.cols();
  if (v.info->storage == format::kStorageU8Group && m->cols > 0) {
    m->group = std::min<uint64_t>(v.info->group_size, m->cols);
    m->per_row = (m->cols + m->group - 1) / m->group;
  }
  if (!v.f32.empty()) {
    m->f32 = v.f32.data();
  } else if (!v.raw.empty()) {
    TQM_ASSIGN_OR_RETURN(m->f32, RawAsFloat(v));
  } else if (!v.q.empty()) {
    m->q = v.q.data();
    m->affine = v.affine;
  } else if (w.enc.info != nullptr) {
    m->enc = &w.enc;
    m->affine = v.affine;
  } else {
    return absl::InternalError(absl::StrFormat("%s: tensor '%s' has no data in mode %s",
                                               model_->name(), v.name(),
                                               ModeName(mode_)));
  }
  // The kernels index the pairs by row or by group without further checks.
  if (m->f32 == nullptr) {
    const uint64_t n = m->affine.size();
    const bool ok = m->group != 0 ? n == m->rows * m->per_row : n == 1 || n == m->rows;
    if (!ok) {
      return absl::InternalError(
          absl::StrFormat("%s: tensor '%s' has %d affine pairs for %d rows of %d columns",
                          model_->name(), v.name(), n, m->rows, m->cols));
    }
  }
  return absl::OkStatus();
}

absl::Status Llama::MatVec(const Mat& m, const float* x, float* out) {
  const uint64_t rows = m.rows, cols = m.cols;
  const int threads = pool_->threads();
  const bool parallel = threads > 1 && rows * cols >= (uint64_t{1} << 16);
  if (m.f32 != nullptr || m.q != nullptr) {
    const size_t blocks = parallel ? std::min<uint64_t>(rows, threads * 4) : 1;
    const float sx = m.q != nullptr ? Sum(x, cols) : 0.0f;
    if (m.q != nullptr && m.group != 0) GroupSums(m, x);
    auto fn = [&](size_t b) {
      const uint64_t r0 = rows * b / blocks, r1 = rows * (b + 1) / blocks;
      if (m.f32 != nullptr) {
        for (uint64_t r = r0; r < r1; ++r) out[r] = DotF32(m.f32 + r * cols, x, cols);
      } else if (m.group != 0) {
        // sum over groups g of scale_g * (dot(q_g, x_g) - zero_g * sum(x_g)).
        for (uint64_t r = r0; r < r1; ++r) {
          const Affine* a = m.affine.data() + r * m.per_row;
          const uint8_t* q = m.q + r * cols;
          float acc = 0;
          for (uint64_t g = 0; g < m.per_row; ++g) {
            const uint64_t c0 = g * m.group, n = std::min(m.group, cols - c0);
            acc += a[g].scale * (DotU8(q + c0, x + c0, n) - a[g].zero * group_sums_[g]);
          }
          out[r] = acc;
        }
      } else {
        for (uint64_t r = r0; r < r1; ++r) {
          const Affine& a = m.RowAffine(r);
          out[r] = a.scale * (DotU8(m.q + r * cols, x, cols) - a.zero * sx);
        }
      }
    };
    if (blocks == 1) {
      fn(0);
    } else {
      pool_->ParallelFor(blocks, fn);
    }
    return absl::OkStatus();
  }
  // Fused: groups of consecutive chunks; each group sums into its own span
  // of segments (rows, or the parameter groups of group storage; those at
  // its two ends may be shared with the neighbours), the spans are added up
  // afterwards.
  const TensorInfo& ti = *m.enc->info;
  const std::vector<ChunkInfo>& chunks = ti.chunks;
  const size_t groups = parallel ? std::min<size_t>(chunks.size(), threads * 2) : 1;
  // The segment element e falls in.
  const uint64_t seg_cols = m.group != 0 ? m.group : cols;
  auto segment = [&](uint64_t e) { return e / cols * m.per_row + e % cols / seg_cols; };
  std::vector<uint64_t> first_seg(groups + 1), acc_off(groups + 1);
  std::vector<size_t> first_chunk(groups + 1);
  for (size_t g = 0; g <= groups; ++g) first_chunk[g] = chunks.size() * g / groups;
  acc_off[0] = 0;
  for (size_t g = 0; g < groups; ++g) {
    const ChunkInfo& a = chunks[first_chunk[g]];
    const ChunkInfo& b = chunks[first_chunk[g + 1] - 1];
    first_seg[g] = segment(a.decoded_offset);
    const uint64_t last_seg = segment(b.decoded_offset + b.decoded_size - 1);
    acc_off[g + 1] = acc_off[g] + (last_seg - first_seg[g] + 1);
  }
  scratch_.assign(acc_off[groups], 0.0f);
  std::vector<absl::Status> errors(groups);
  auto fn = [&](size_t g) {
    float* acc = scratch_.data() + acc_off[g];
    for (size_t c = first_chunk[g]; c < first_chunk[g + 1]; ++c) {
      const ChunkInfo& ch = chunks[c];
      absl::Status s =
          FusedChunkDot(ch.codec, m.enc->chunk(c), m.enc->table, ch.decoded_offset,
                        ch.decoded_size, cols, x, acc, first_seg[g], m.group);
      if (!s.ok()) {
        errors[g] = absl::Status(
            s.code(),
            absl::StrFormat("%s: tensor '%s' chunk %d (offset %d): %s", model_->name(),
                            ti.name, c, ch.offset, s.message()));
        return;
      }
    }
  };
  if (groups == 1) {
    fn(0);
  } else {
    pool_->ParallelFor(groups, fn);
  }
  for (const absl::Status& s : errors) TQM_RETURN_IF_ERROR(s);
  if (m.group != 0) {
    // Per-group partial dot products, then the groups' affine parameters.
    seg_acc_.assign(rows * m.per_row, 0.0f);
    for (size_t g = 0; g < groups; ++g) {
      for (uint64_t k = 0; k < acc_off[g + 1] - acc_off[g]; ++k) {
        seg_acc_[first_seg[g] + k] += scratch_[acc_off[g] + k];
      }
    }
    GroupSums(m, x);
    for (uint64_t r = 0; r < rows; ++r) {
      const Affine* a = m.affine.data() + r * m.per_row;
      const float* d = seg_acc_.data() + r * m.per_row;
      float acc = 0;
      for (uint64_t g = 0; g < m.per_row; ++g) {
        acc += a[g].scale * (d[g] - a[g].zero * group_sums_[g]);
      }
      out[r] = acc;
    }
    return absl::OkStatus();
  }
  std::fill(out, out + rows, 0.0f);
  for (size_t g = 0; g < groups; ++g) {
    for (uint64_t k = 0; k < acc_off[g + 1] - acc_off[g]; ++k) {
      out[first_seg[g] + k] += scratch_[acc_off[g] + k];
    }
  }
  const float sx = Sum(x, cols);
  for (uint64_t r = 0; r < rows; ++r) {
    const Affine& a = m.RowAffine(r);
    out[r] = a.scale * (out[r] - a.zero * sx);
  }
  return absl::OkStatus();
}

absl::Status Llama::ReadRange(int tensor, uint64_t begin, uint64_t count, float* out) {
  const Reader& r = model_->reader();
  const TensorInfo& ti = r.tensors()[tensor];
  const uint64_t es = ti.element_size();
  const uint64_t b0 = begin * es, b1 = (begin + count) * es;
  std::vector<uint8_t> buf;
  // RAW elements may straddle chunks (an F64 element at a chunk boundary
  // that is a multiple of 4 only): gather the bytes, then convert.
  std::vector<uint8_t> raw(ti.raw() ? b1 - b0 : 0);
  for (size_t c = 0; c < ti.chunks.size(); ++c) {
    const ChunkInfo& ch = ti.chunks[c];
    const uint64_t c0 = ch.decoded_offset, c1 = c0 + ch.decoded_size;
    if (c1 <= b0 || c0 >= b1) continue;
    buf.resize(ch.decoded_size);
    TQM_RETURN_IF_ERROR(r.DecodeChunk(tensor, c, absl::MakeSpan(buf),
                                      model_->options().verify_checksums));
    const uint64_t lo = std::max(b0, c0), hi = std::min(b1, c1);
    if (ti.raw()) {
      std::memcpy(raw.data() + (lo - b0), buf.data() + (lo - c0), hi - lo);
    } else if (!ti.quantized()) {
      std::memcpy(reinterpret_cast<uint8_t*>(out) + (lo - b0), buf.data() + (lo - c0),
                  hi - lo);
    } else {
      DequantizeRange(ti, lo, absl::MakeConstSpan(buf).subspan(lo - c0, hi - lo),
                      absl::MakeSpan(out + (lo - b0), hi - lo));
    }
  }
  if (ti.raw()) RawToFloat(ti.source_dtype, raw.data(), count, out);
  return absl::OkStatus();
}

void Llama::GroupSums(const Mat& m, const float* x) {
  group_sums_.resize(m.per_row);
  for (uint64_t g = 0; g < m.per_row; ++g) {
    const uint64_t c0 = g * m.group;
    group_sums_[g] = Sum(x + c0, std::min(m.group, m.cols - c0));
  }
}

absl::StatusOr<const float*> Llama::RawAsFloat(const TensorView& v) {
  // Verbatim tensors (float16/bfloat16 kept as the source stored them) are
  // converted to float32 once and kept for the life of the runtime, in every
  // mode: the kernels here compute on float32 or uint8 codes only.
  std::vector<float>& f = raw_f32_[v.tensor];
  if (f.size() != v.info->numel) {
    f.resize(v.info->numel);
    TQM_RETURN_IF_ERROR(v.ToFloat(absl::MakeSpan(f)));
  }
  return f.data();
}

absl::Status Llama::Norm(const LayerHandle* h, const Weight& w, const float* x,
                         float* out) {
  const TensorView& v = h->tensors()[w.view];
  const float* weights = v.f32.data();
  if (weights == nullptr) {
    if (!v.q.empty() || !v.raw.empty()) {
      TQM_RETURN_IF_ERROR(v.ToFloat(absl::MakeSpan(norm_tmp_.data(), v.info->numel)));
    } else {
      TQM_RETURN_IF_ERROR(ReadRange(w.tensor, 0, v.info->numel, norm_tmp_.data()));
    }
    weights = norm_tmp_.data();
  }
  RmsNorm(out, x, weights, config_.dim, config_.norm_eps);
  return absl::OkStatus();
}

absl::Status Llama::EmbeddingRow(int token, float* out) {
  const Weight& w = globals_weights_[0];
  const TensorView& v = globals_.tensors()[w.view];
  const uint64_t dim = config_.dim, off = static_cast<uint64_t>(token) * dim;
  if (!v.f32.empty()) {
    std::memcpy(out, v.f32.data() + off, dim * sizeof(float));
  } else if (!v.raw.empty()) {
    RawToFloat(v.info->source_dtype, v.raw.data() + off * v.info->element_size(), dim,
               out);
  } else if (!v.q.empty()) {
    DequantizeRange(*v.info, off, v.q.subspan(off, dim), absl::MakeSpan(out, dim));
  } else {
    TQM_RETURN_IF_ERROR(ReadRange(w.tensor, off, dim, out));
  }
  return absl::OkStatus();
}

absl::Status Llama::Layer(int l, const LayerHandle& h, int pos) {
  const LlamaConfig& c = config_;
  const Weight* w = layers_[l].w;
  const size_t kv_dim = c.kv_dim();
  const size_t loff = static_cast<size_t>(l) * c.seq_len * kv_dim;
  float* kc = key_cache_.get() + loff + static_cast<size_t>(pos) * kv_dim;
  float* vc = value_cache_.get() + loff + static_cast<size_t>(pos) * kv_dim;
  Mat m;
  TQM_RETURN_IF_ERROR(Norm(&h, w[kAttNorm], x_.data(), xb_.data()));
  TQM_RETURN_IF_ERROR(MakeMat(&h, w[kWq], &m));
  TQM_RETURN_IF_ERROR(MatVec(m, xb_.data(), q_.data()));
  TQM_RETURN_IF_ERROR(MakeMat(&h, w[kWk], &m));
  TQM_RETURN_IF_ERROR(MatVec(m, xb_.data(), kc));
  TQM_RETURN_IF_ERROR(MakeMat(&h, w[kWv], &m));
  TQM_RETURN_IF_ERROR(MatVec(m, xb_.data(), vc));
  llama::ApplyRope(c, q_.data(), kc, pos);
  Attention(c, q_.data(), key_cache_.get() + loff, value_cache_.get() + loff, pos,
            att_.data(), xb_.data());
  TQM_RETURN_IF_ERROR(MakeMat(&h, w[kWo], &m));
  TQM_RETURN_IF_ERROR(MatVec(m, xb_.data(), xb2_.data()));
  for (int i = 0; i < c.dim; ++i) x_[i] += xb2_[i];

  TQM_RETURN_IF_ERROR(Norm(&h, w[kFfnNorm], x_.data(), xb_.data()));
  TQM_RETURN_IF_ERROR(MakeMat(&h, w[kW1], &m));
  TQM_RETURN_IF_ERROR(MatVec(m, xb_.data(), hb_.data()));
  TQM_RETURN_IF_ERROR(MakeMat(&h, w[kW3], &m));
  TQM_RETURN_IF_ERROR(MatVec(m, xb_.data(), hb2_.data()));
  for (int i = 0; i < c.hidden_dim; ++i) {
    float v = hb_[i];
    v *= 1.0f / (1.0f + std::exp(-v));
    hb_[i] = v * hb2_[i];
  }
  TQM_RETURN_IF_ERROR(MakeMat(&h, w[kW2], &m));
  TQM_RETURN_IF_ERROR(MatVec(m, hb_.data(), xb_.data()));
  for (int i = 0; i < c.dim; ++i) x_[i] += xb_[i];
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> Llama::Forward(int token, int pos) {
  const LlamaConfig& c = config_;
  if (token < 0 || token >= c.vocab_size || pos < 0 || pos >= c.seq_len) {
    return absl::OutOfRangeError(absl::StrFormat(
        "token %d / position %d outside vocabulary %d / sequence length %d", token, pos,
        c.vocab_size, c.seq_len));
  }
  TQM_RETURN_IF_ERROR(EmbeddingRow(token, x_.data()));
  for (int l = 0; l < c.n_layers; ++l) {
    // Fused mode reads the compressed bytes as it computes: ask the kernel
    // to page in the next layer's (stream mode's prefetch does this itself).
    if (mode_ == Mode::kFused) model_->Advise(model_->NextLayer(l));
    if (!pinned_.empty()) {
      TQM_RETURN_IF_ERROR(Layer(l, pinned_[l], pos));
    } else {
      TQM_ASSIGN_OR_RETURN(LayerHandle h, model_->Layer(l));
      TQM_RETURN_IF_ERROR(Layer(l, h, pos));
    }
  }
  TQM_RETURN_IF_ERROR(Norm(&globals_, globals_weights_[1], x_.data(), x_.data()));
  Mat m;
  TQM_RETURN_IF_ERROR(MakeMat(&globals_, globals_weights_[2], &m));
  TQM_RETURN_IF_ERROR(MatVec(m, x_.data(), logits_.data()));
  return absl::MakeConstSpan(logits_);
}

// ---------------------------------------------------------------------------
// ReferenceLlama

absl::StatusOr<std::unique_ptr<ReferenceLlama>> ReferenceLlama::FromReader(
    const Reader& reader) {
  std::unique_ptr<ReferenceLlama> m(new ReferenceLlama());
  TQM_ASSIGN_OR_RETURN(m->config_, ConfigFromMetadata(reader.metadata(), reader.name()));
  TQM_RETURN_IF_ERROR(
      m->Load([&](const std::string& name) -> absl::StatusOr<std::vector<float>> {
        const int t = reader.FindTensor(name);
        if (t < 0) {
          return absl::NotFoundError(
              absl::StrFormat("%s: tensor '%s' is missing", reader.name(), name));
        }
        std::vector<float> v(reader.tensors()[t].numel);
        TQM_RETURN_IF_ERROR(reader.ReadFloat(t, absl::MakeSpan(v)));
        return v;
      }));
  return m;
}

absl::StatusOr<std::unique_ptr<ReferenceLlama>> ReferenceLlama::FromSource(
    TensorSource& source) {
  std::unique_ptr<ReferenceLlama> m(new ReferenceLlama());
  TQM_ASSIGN_OR_RETURN(m->config_, ConfigFromMetadata(source.metadata(), "<source>"));
  TQM_RETURN_IF_ERROR(
      m->Load([&](const std::string& name) -> absl::StatusOr<std::vector<float>> {
        const auto& ts = source.tensors();
        for (size_t i = 0; i < ts.size(); ++i) {
          if (ts[i].name != name) continue;
          std::vector<float> v;
          TQM_RETURN_IF_ERROR(source.Read(i, &v));
          return v;
        }
        return absl::NotFoundError(
            absl::StrFormat("source: tensor '%s' is missing", name));
      }));
  return m;
}

absl::Status ReferenceLlama::Load(const Loader& load) {
  const LlamaConfig& c = config_;
  auto get = [&](const std::string& name, const std::vector<uint64_t>& dims,
                 std::vector<float>* out) -> absl::Status {
    TQM_ASSIGN_OR_RETURN(*out, load(name));
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    if (out->size() != n) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "tensor '%s' has %d values, expected %d", name, out->size(), n));
    }
    return absl::OkStatus();
  };
  const uint64_t vocab = c.vocab_size, dim = c.dim;
  TQM_RETURN_IF_ERROR(get(EmbedName(), {vocab, dim}, &embed_));
  TQM_RETURN_IF_ERROR(get(FinalNormName(), {dim}, &final_norm_));
  if (auto s = get(ClassifierName(), {vocab, dim}, &cls_); !s.ok()) {
    if (!absl::IsNotFound(s)) return s;
    cls_ = embed_;
  }
  layers_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    std::vector<float>* dst[kLayerTensors] = {
        &layers_[l].att_norm, &layers_[l].wq, &layers_[l].wk,
        &layers_[l].wv,       &layers_[l].wo, &layers_[l].ffn_norm,
        &layers_[l].w1,       &layers_[l].w2, &layers_[l].w3};
    for (int k = 0; k < kLayerTensors; ++k) {
      TQM_RETURN_IF_ERROR(get(LayerName(l, k), LayerShape(c, k), dst[k]));
    }
  }
  x_.assign(dim, 0);
  xb_.assign(dim, 0);
  xb2_.assign(dim, 0);
  q_.assign(dim, 0);
  hb_.assign(c.hidden_dim, 0);
  hb2_.assign(c.hidden_dim, 0);
  att_.assign(static_cast<size_t>(c.n_heads) * c.seq_len, 0);
  logits_.assign(vocab, 0);
  key_cache_.assign(static_cast<size_t>(c.n_layers) * c.seq_len * c.kv_dim(), 0);
  value_cache_.assign(key_cache_.size(), 0);
  return absl::OkStatus();
}

// run.c's matmul: out[d] = W[d, n] x[n].
static void RefMatmul(float* out, const float* x, const std::vector<float>& w, int n,
                      int d) {
  for (int i = 0; i < d; ++i) {
    float val = 0;
    for (int j = 0; j < n; ++j) val += w[static_cast<size_t>(i) * n + j] * x[j];
    out[i] = val;
  }
}

absl::Span<const float> ReferenceLlama::Forward(int token, int pos) {
  const LlamaConfig& c = config_;
  const int dim = c.dim, kv_dim = c.kv_dim(), hidden = c.hidden_dim;
  std::memcpy(x_.data(), embed_.data() + static_cast<size_t>(token) * dim,
              dim * sizeof(float));
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& w = layers_[l];
    const size_t loff = static_cast<size_t>(l) * c.seq_len * kv_dim;
    float* kc = key_cache_.data() + loff + static_cast<size_t>(pos) * kv_dim;
    float* vc = value_cache_.data() + loff + static_cast<size_t>(pos) * kv_dim;
    RmsNorm(xb_.data(), x_.data(), w.att_norm.data(), dim, c.norm_eps);
    RefMatmul(q_.data(), xb_.data(), w.wq, dim, dim);
    RefMatmul(kc, xb_.data(), w.wk, dim, kv_dim);
    RefMatmul(vc, xb_.data(), w.wv, dim, kv_dim);
    llama::ApplyRope(c, q_.data(), kc, pos);
    Attention(c, q_.data(), key_cache_.data() + loff, value_cache_.data() + loff, pos,
              att_.data(), xb_.data());
    RefMatmul(xb2_.data(), xb_.data(), w.wo, dim, dim);
    for (int i = 0; i < dim; ++i) x_[i] += xb2_[i];
    RmsNorm(xb_.data(), x_.data(), w.ffn_norm.data(), dim, c.norm_eps);
    RefMatmul(hb_.data(), xb_.data(), w.w1, dim, hidden);
    RefMatmul(hb2_.data(), xb_.data(), w.w3, dim, hidden);
    for (int i = 0; i < hidden; ++i) {
      float v = hb_[i];
      v *= 1.0f / (1.0f + std::exp(-v));
      hb_[i] = v * hb2_[i];
    }
    RefMatmul(xb_.data(), hb_.data(), w.w2, hidden, dim);
    for (int i = 0; i < dim; ++i) x_[i] += xb_[i];
  }
  RmsNorm(x_.data(), x_.data(), final_norm_.data(), dim, c.norm_eps);
  RefMatmul(logits_.data(), x_.data(), cls_, dim, c.vocab_size);
  return logits_;
}

// ---------------------------------------------------------------------------

absl::StatusOr<std::vector<int>> Generate(const ForwardFn& forward,
                                          absl::Span<const int> prompt, int steps,
                                          Sampler& sampler,
                                          const std::function<void(int, int)>& emit) {
  if (prompt.empty()) return absl::InvalidArgumentError("generate: empty prompt");
  std::vector<int> seq = {prompt[0]};
  int token = prompt[0];
  for (int pos = 0; pos < steps;) {
    TQM_ASSIGN_OR_RETURN(absl::Span<const float> logits, forward(token, pos));
    const int next = static_cast<size_t>(pos) + 1 < prompt.size()
                         ? prompt[pos + 1]
                         : sampler.Sample(logits);
    ++pos;
    if (next == kBos) break;
    if (emit) emit(token, next);
    seq.push_back(next);
    token = next;
  }
  return seq;
}

}  // namespace rt
}  // namespace tqm
