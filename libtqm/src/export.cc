// Exporters from a .tqm file to safetensors and llama2.c checkpoints, the
// Llama description they share with the GGUF exporter (DescribeLlama), and
// the name/layout helpers of llama_names.h. The GGUF exporter lives in
// gguf.cc next to the GGUF reader.

#include "tqm/export.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "atomic_file.h"
#include "import_internal.h"
#include "llama_names.h"
#include "tqm/metadata.h"
#include "tqm/safetensors.h"
#include "tqm/source.h"
#include "tqm/status.h"

namespace tqm {
namespace internal {
namespace {

struct NamePair {
  const char* hf;
  const char* gguf;
};
constexpr NamePair kGlobalNames[] = {
    {"model.embed_tokens", "token_embd"},
    {"model.norm", "output_norm"},
    {"lm_head", "output"},
};
constexpr NamePair kLayerNames[] = {
    {"input_layernorm", "attn_norm"},    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},       {"mlp.down_proj", "ffn_down"},
    {"mlp.up_proj", "ffn_up"},
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Splits "base.weight" / "base.bias" into base and suffix.
bool SplitSuffix(const std::string& name, std::string* base, std::string* suffix) {
  for (const char* s : {".weight", ".bias"}) {
    if (EndsWith(name, s) && name.size() > std::strlen(s)) {
      *base = name.substr(0, name.size() - std::strlen(s));
      *suffix = s;
      return true;
    }
  }
  return false;
}

// Parses "<prefix>N.rest" with a canonical decimal N that fits int32.
bool SplitLayer(const std::string& base, const std::string& prefix, int32_t* layer,
                std::string* rest) {
  if (base.compare(0, prefix.size(), prefix) != 0) return false;
  size_t i = prefix.size();
  const size_t begin = i;
  int64_t n = 0;
  while (i < base.size() && base[i] >= '0' && base[i] <= '9') {
    n = n * 10 + (base[i] - '0');
    if (n > std::numeric_limits<int32_t>::max()) return false;
    ++i;
  }
  if (i == begin || (i - begin > 1 && base[begin] == '0')) return false;
  if (i >= base.size() || base[i] != '.') return false;
  *layer = static_cast<int32_t>(n);
  *rest = base.substr(i + 1);
  return true;
}

std::string MapName(const std::string& name, bool to_hf) {
  std::string base, suffix, rest;
  if (!SplitSuffix(name, &base, &suffix)) return "";
  for (const NamePair& p : kGlobalNames) {
    if (base == (to_hf ? p.gguf : p.hf)) return (to_hf ? p.hf : p.gguf) + suffix;
  }
  int32_t layer;
  if (!SplitLayer(base, to_hf ? "blk." : "model.layers.", &layer, &rest)) return "";
  for (const NamePair& p : kLayerNames) {
    if (rest == (to_hf ? p.gguf : p.hf)) {
      return absl::StrCat(to_hf ? "model.layers." : "blk.", layer, ".",
                          to_hf ? p.hf : p.gguf, suffix);
    }
  }
  return "";
}

}  // namespace

std::string GgufToHfName(const std::string& gguf_name) {
  return MapName(gguf_name, true);
}
std::string HfToGgufName(const std::string& hf_name) { return MapName(hf_name, false); }

bool IsQProj(const std::string& n) {
  return LayerFromName(n) >= 0 && EndsWith(n, ".self_attn.q_proj.weight");
}
bool IsKProj(const std::string& n) {
  return LayerFromName(n) >= 0 && EndsWith(n, ".self_attn.k_proj.weight");
}

namespace {
void PermuteRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size,
                 bool hf_to_meta) {
  if (head_size < 2 || head_size % 2 != 0 || rows % head_size != 0) return;
  std::vector<float> head(head_size * cols);
  const uint64_t half = head_size / 2;
  for (uint64_t h = 0; h < rows / head_size; ++h) {
    float* base = m.data() + h * head_size * cols;
    std::memcpy(head.data(), base, head.size() * sizeof(float));
    for (uint64_t i = 0; i < half; ++i) {
      // Meta row 2i <-> HF row i; Meta row 2i+1 <-> HF row i + half.
      const uint64_t meta_even = 2 * i, meta_odd = 2 * i + 1, hf_lo = i, hf_hi = i + half;
      const uint64_t dst_even = hf_to_meta ? meta_even : hf_lo;
      const uint64_t src_even = hf_to_meta ? hf_lo : meta_even;
      const uint64_t dst_odd = hf_to_meta ? meta_odd : hf_hi;
      const uint64_t src_odd = hf_to_meta ? hf_hi : meta_odd;
      std::memcpy(base + dst_even * cols, head.data() + src_even * cols,
                  cols * sizeof(float));
      std::memcpy(base + dst_odd * cols, head.data() + src_odd * cols,
                  cols * sizeof(float));
    }
  }
}
}  // namespace

void HfToMetaRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size) {
  PermuteRows(m, rows, cols, head_size, true);
}
void MetaToHfRows(absl::Span<float> m, uint64_t rows, uint64_t cols, uint64_t head_size) {
  PermuteRows(m, rows, cols, head_size, false);
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u)
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FF));
  if (abs >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65536: inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = abs * 2^24 in units of 2^-24.
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to 0
    const uint32_t e = abs >> 23;
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24 bits to drop (to units of 2^-24)
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias exponent (127 -> 15) and round the mantissa to 10 bits.
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;  // may carry into inf
  return static_cast<uint16_t>(sign | h);
}

uint16_t FloatToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
  const uint32_t lsb = (x >> 16) & 1;
  x += 0x7FFFu + lsb;
  return static_cast<uint16_t>(x >> 16);
}

absl::Status ReadMetaLayout(const Reader& r, size_t t, const LlamaDims& dims,
                            std::vector<float>* out) {
  const TensorInfo& info = r.tensors()[t];
  out->resize(info.numel);
  TQM_RETURN_IF_ERROR(r.ReadFloat(t, absl::MakeSpan(*out)));
  if (dims.rope_hf && (IsQProj(info.name) || IsKProj(info.name)) &&
      info.dims.size() == 2) {
    HfToMetaRows(absl::MakeSpan(*out), info.dims[0], info.dims[1],
                 static_cast<uint64_t>(dims.head_size()));
  }
  return absl::OkStatus();
}

}  // namespace internal

// ---- DescribeLlama ----

namespace {

absl::Status Unfit(const Reader& r, const std::string& what) {
  return absl::FailedPreconditionError(
      absl::StrFormat("%s: not a complete Llama model: %s", r.name(), what));
}

bool MetaInt(const Reader& r, const char* key, int64_t* out) {
  const MetaValue* v = r.FindMeta(key);
  if (v == nullptr || v->type != format::kMetaInt64) return false;
  *out = v->int64;
  return true;
}

bool MetaFloat(const Reader& r, const char* key, double* out) {
  const MetaValue* v = r.FindMeta(key);
  if (v == nullptr) return false;
  if (v->type == format::kMetaFloat64) {
    *out = v->float64;
    return true;
  }
  if (v->type == format::kMetaInt64) {
    *out = static_cast<double>(v->int64);
    return true;
  }
  return false;
}

std::string ShapeText(const std::vector<uint64_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) absl::StrAppend(&s, i ? ", " : "", d[i]);
  return s + "]";
}

}  // namespace

absl::StatusOr<LlamaDims> DescribeLlama(const Reader& r, const ExportOverrides& ov) {
  LlamaDims d;
  const int embed = r.FindTensor("model.embed_tokens.weight");
  if (embed < 0) return Unfit(r, "no tensor model.embed_tokens.weight");
  const TensorInfo& e = r.tensors()[embed];
  if (e.dims.size() != 2) {
    return Unfit(r, "model.embed_tokens.weight has shape " + ShapeText(e.dims) +
                        ", expected [vocab, dim]");
  }
  d.vocab_size = static_cast<int64_t>(e.dims[0]);
  d.dim = static_cast<int64_t>(e.dims[1]);
  int32_t max_layer = -1;
  for (const TensorInfo& t : r.tensors()) {
    const int32_t l = LayerFromName(t.name);
    if (l > max_layer) max_layer = l;
    if (t.name != "model.embed_tokens.weight" && t.name != "model.norm.weight" &&
        t.name != "lm_head.weight" &&
        (l < 0 || !internal::EndsWith(t.name, ".weight") ||
         internal::HfToGgufName(t.name).empty())) {
      return Unfit(r, "tensor " + t.name + " is not part of the Llama layout");
    }
  }
  d.n_layers = max_layer + 1;
  if (d.n_layers == 0) return Unfit(r, "no model.layers.N tensors");

  const int gate0 = r.FindTensor("model.layers.0.mlp.gate_proj.weight");
  const int k0 = r.FindTensor("model.layers.0.self_attn.k_proj.weight");
  if (gate0 < 0 || k0 < 0)
    return Unfit(r, "layer 0 lacks mlp.gate_proj or self_attn.k_proj");
  d.hidden_dim = static_cast<int64_t>(r.tensors()[gate0].dims[0]);

  int64_t v;
  d.n_heads = ov.n_heads;
  if (d.n_heads == 0 && MetaInt(r, meta_keys::kHeads, &v)) d.n_heads = v;
  if (d.n_heads <= 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: the number of attention heads is unknown (no llama.n_heads metadata); "
        "give it explicitly (--n-heads)",
        r.name()));
  }
  if (d.dim % d.n_heads != 0 || (d.dim / d.n_heads) % 2 != 0) {
    return Unfit(r, absl::StrFormat("n_heads=%d does not split dim=%d into heads of an "
                                    "even size",
                                    d.n_heads, d.dim));
  }
  const uint64_t head = static_cast<uint64_t>(d.head_size());
  const uint64_t k_rows = r.tensors()[k0].dims[0];
  if (r.tensors()[k0].dims.size() != 2 || k_rows % head != 0 || k_rows == 0) {
    return Unfit(r, absl::StrFormat("k_proj shape %s is not [n_kv_heads * %d, %d]",
                                    ShapeText(r.tensors()[k0].dims), head, d.dim));
  }
  d.n_kv_heads = static_cast<int64_t>(k_rows / head);
  if (d.n_heads % d.n_kv_heads != 0) {
    return Unfit(r, absl::StrFormat("n_kv_heads=%d does not divide n_heads=%d",
                                    d.n_kv_heads, d.n_heads));
  }
  auto check = [&](const char* key, int64_t want,
                   int64_t override_value) -> absl::Status {
    int64_t got = override_value;
    if (got == 0 && !MetaInt(r, key, &got)) return absl::OkStatus();
    if (got != want) {
      return Unfit(
          r, absl::StrFormat("%s=%d contradicts the tensor shapes, which give %d", key,
                             got, want));
    }
    return absl::OkStatus();
  };
  TQM_RETURN_IF_ERROR(check(meta_keys::kDim, d.dim, 0));
  TQM_RETURN_IF_ERROR(check(meta_keys::kHiddenDim, d.hidden_dim, 0));
  TQM_RETURN_IF_ERROR(check(meta_keys::kLayers, d.n_layers, 0));
  TQM_RETURN_IF_ERROR(check(meta_keys::kKvHeads, d.n_kv_heads, ov.n_kv_heads));
  TQM_RETURN_IF_ERROR(check(meta_keys::kVocabSize, d.vocab_size, 0));

  // Every tensor present with the shape the dimensions require.
  const uint64_t dim = d.dim, hidden = d.hidden_dim, vocab = d.vocab_size,
                 kv = d.n_kv_heads * head;
  auto need = [&](const std::string& name, std::vector<uint64_t> shape) -> absl::Status {
    const int t = r.FindTensor(name);
    if (t < 0) return Unfit(r, "no tensor " + name);
    if (r.tensors()[t].dims != shape) {
      return Unfit(r, absl::StrFormat("tensor %s has shape %s, expected %s", name,
                                      ShapeText(r.tensors()[t].dims), ShapeText(shape)));
    }
    return absl::OkStatus();
  };
  TQM_RETURN_IF_ERROR(need("model.norm.weight", {dim}));
  for (int64_t l = 0; l < d.n_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    TQM_RETURN_IF_ERROR(need(p + "input_layernorm.weight", {dim}));
    TQM_RETURN_IF_ERROR(need(p + "self_attn.q_proj.weight", {dim, dim}));
    TQM_RETURN_IF_ERROR(need(p + "self_attn.k_proj.weight", {kv, dim}));
    TQM_RETURN_IF_ERROR(need(p + "self_attn.v_proj.weight", {kv, dim}));
    TQM_RETURN_IF_ERROR(need(p + "self_attn.o_proj.weight", {dim, dim}));
    TQM_RETURN_IF_ERROR(need(p + "post_attention_layernorm.weight", {dim}));
    TQM_RETURN_IF_ERROR(need(p + "mlp.gate_proj.weight", {hidden, dim}));
    TQM_RETURN_IF_ERROR(need(p + "mlp.down_proj.weight", {dim, hidden}));
    TQM_RETURN_IF_ERROR(need(p + "mlp.up_proj.weight", {hidden, dim}));
  }
  d.tied = r.FindTensor("lm_head.weight") < 0;
  if (!d.tied) TQM_RETURN_IF_ERROR(need("lm_head.weight", {vocab, dim}));

  d.seq_len = ov.seq_len;
  if (d.seq_len == 0 && MetaInt(r, meta_keys::kSeqLen, &v)) d.seq_len = v;
  if (d.seq_len == 0) d.seq_len = 2048;
  if (d.seq_len < 0) return Unfit(r, absl::StrFormat("seq_len=%d", d.seq_len));
  double f;
  if (MetaFloat(r, meta_keys::kNormEps, &f)) d.norm_eps = f;
  if (MetaFloat(r, meta_keys::kRopeTheta, &f)) d.rope_theta = f;
  if (const MetaValue* layout = r.FindMeta(meta_keys::kRopeLayout)) {
    if (layout->bytes == "hf") {
      d.rope_hf = true;
    } else if (layout->bytes != "meta") {
      return Unfit(r, absl::StrFormat("llama.rope_layout=\"%s\" is neither meta nor hf",
                                      layout->bytes));
    }
  }
  return d;
}

// ---- safetensors ----

absl::Status ExportSafetensors(const Reader& r, const std::string& out,
                               const SafetensorsExportOptions& options) {
  const SafetensorsExportType type = options.type;
  const bool u8 = type == SafetensorsExportType::kU8;
  const char* float_dtype = type == SafetensorsExportType::kF16    ? "F16"
                            : type == SafetensorsExportType::kBF16 ? "BF16"
                                                                   : "F32";
  std::vector<SafetensorsEntry> entries;
  for (const TensorInfo& t : r.tensors()) {
    if (u8 && t.quantized()) {
      entries.push_back({t.name, "U8", t.dims});
      entries.push_back({t.name + ".scale", "F32", {t.affine.size()}});
      entries.push_back({t.name + ".zero", "F32", {t.affine.size()}});
    } else {
      entries.push_back({t.name, u8 ? "F32" : float_dtype, t.dims});
    }
  }
  std::vector<std::pair<std::string, std::string>> meta;
  for (const MetaEntry& e : r.metadata()) {
    switch (e.value.type) {
      case format::kMetaInt64:
        meta.push_back({e.key, absl::StrCat(e.value.int64)});
        break;
      case format::kMetaFloat64:
        meta.push_back({e.key, absl::StrCat(e.value.float64)});
        break;
      case format::kMetaString:
        meta.push_back({e.key, e.value.bytes});
        break;
      default:
        break;  // opaque bytes (tokenizer) do not fit safetensors' string map
    }
  }
  meta.push_back({"tqm.unpacked_as", u8                                     ? "u8"
                                     : type == SafetensorsExportType::kF16  ? "f16"
                                     : type == SafetensorsExportType::kBF16 ? "bf16"
                                                                            : "f32"});
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> w,
                       SafetensorsWriter::Create(out, entries, meta));
  auto bytes_of = [](const auto& v) {
    return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()),
                                     v.size() * sizeof(v[0]));
  };
  std::vector<uint8_t> q;
  std::vector<float> f;
  std::vector<uint16_t> h;
  for (size_t i = 0; i < r.tensors().size(); ++i) {
    const TensorInfo& t = r.tensors()[i];
    if (u8 && t.quantized()) {
      q.resize(t.byte_size);
      TQM_RETURN_IF_ERROR(r.DecodeTensor(i, absl::MakeSpan(q)));
      TQM_RETURN_IF_ERROR(w->Write(q));
      std::vector<float> scale, zero;
      for (const Affine& a : t.affine) {
        scale.push_back(a.scale);
        zero.push_back(a.zero);
      }
      TQM_RETURN_IF_ERROR(w->Write(bytes_of(scale)));
      TQM_RETURN_IF_ERROR(w->Write(bytes_of(zero)));
      continue;
    }
    f.resize(t.numel);
    TQM_RETURN_IF_ERROR(r.ReadFloat(i, absl::MakeSpan(f)));
    if (u8 || type == SafetensorsExportType::kF32) {
      TQM_RETURN_IF_ERROR(w->Write(bytes_of(f)));
      continue;
    }
    h.resize(f.size());
    const bool bf16 = type == SafetensorsExportType::kBF16;
    for (size_t j = 0; j < f.size(); ++j) {
      h[j] = bf16 ? internal::FloatToBFloat16(f[j]) : internal::FloatToHalf(f[j]);
      if ((h[j] & 0x7FFF) == (bf16 ? 0x7F80 : 0x7C00) && std::isfinite(f[j])) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s: tensor %s: value %g at element %d is out of the range of %s", r.name(),
            t.name, f[j], j, float_dtype));
      }
    }
    TQM_RETURN_IF_ERROR(w->Write(bytes_of(h)));
  }
  return w->Finish();
}

// ---- llama2.c ----

absl::Status ExportLlama2c(const Reader& r, const std::string& out_path,
                           const ExportOverrides& overrides) {
  TQM_ASSIGN_OR_RETURN(LlamaDims d, DescribeLlama(r, overrides));
  const int64_t header[7] = {d.dim,        d.hidden_dim,
                             d.n_layers,   d.n_heads,
                             d.n_kv_heads, d.tied ? d.vocab_size : -d.vocab_size,
                             d.seq_len};
  const char* names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                          "n_kv_heads", "vocab_size", "seq_len"};
  std::string head;
  for (int i = 0; i < 7; ++i) {
    if (header[i] > std::numeric_limits<int32_t>::max() ||
        header[i] < -std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s=%d does not fit a llama2.c header (int32)", r.name(),
                          names[i], header[i]));
    }
    const int32_t v = static_cast<int32_t>(header[i]);
    head.append(reinterpret_cast<const char*>(&v), 4);  // little-endian host
  }
  uint64_t rope_floats;
  if (!internal::CheckedMul(static_cast<uint64_t>(d.seq_len),
                            static_cast<uint64_t>(d.head_size() / 2), &rope_floats) ||
      rope_floats > (uint64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: seq_len=%d makes the RoPE tables too large", r.name(), d.seq_len));
  }
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(out_path));
  TQM_RETURN_IF_ERROR(file->Append(head));
  std::vector<float> buf;
  auto put = [&](const std::string& name) -> absl::Status {
    const int t = r.FindTensor(name);
    TQM_RETURN_IF_ERROR(internal::ReadMetaLayout(r, t, d, &buf));
    return file->Append(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(buf.data()), buf.size() * 4));
  };
  TQM_RETURN_IF_ERROR(put("model.embed_tokens.weight"));
  for (const char* field :
       {"input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
        "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.down_proj",
        "mlp.up_proj"}) {
    for (int64_t l = 0; l < d.n_layers; ++l) {
      TQM_RETURN_IF_ERROR(put(absl::StrCat("model.layers.", l, ".", field, ".weight")));
    }
  }
  TQM_RETURN_IF_ERROR(put("model.norm.weight"));
  // freq_cis_real then freq_cis_imag, [seq_len][head_size / 2] each, as
  // llama2.c's legacy export computes them (float32: freq_i = 1 /
  // theta^(2i / head_size), angle = pos * freq_i). Current run.c skips them;
  // versions before August 2023 read them.
  const int64_t half = d.head_size() / 2;
  std::vector<float> freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(d.head_size());
    freq[i] = 1.0f / std::pow(static_cast<float>(d.rope_theta), e);
  }
  for (int part = 0; part < 2; ++part) {
    std::vector<float> row(half);
    for (int64_t pos = 0; pos < d.seq_len; ++pos) {
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(pos) * freq[i];
        row[i] = part == 0 ? std::cos(angle) : std::sin(angle);
      }
      TQM_RETURN_IF_ERROR(file->Append(absl::Span<const uint8_t>(
          reinterpret_cast<const uint8_t*>(row.data()), row.size() * 4)));
    }
  }
  if (!d.tied) TQM_RETURN_IF_ERROR(put("lm_head.weight"));
  return file->Commit();
}

absl::Status ExportLlama2cTokenizer(const Reader& r, const std::string& out_path) {
  const MetaValue* blob = r.FindMeta(meta_keys::kTokenizerLlama2c);
  if (blob == nullptr || blob->type != format::kMetaBytes) {
    return absl::NotFoundError(absl::StrFormat(
        "%s: no tokenizer.llama2c metadata (pack with --tokenizer, or from a GGUF file "
        "with a SentencePiece vocabulary)",
        r.name()));
  }
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(out_path));
  TQM_RETURN_IF_ERROR(file->Append(blob->bytes));
  return file->Commit();
}

}  // namespace tqm
