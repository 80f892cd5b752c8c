// Tests of the CPU Llama runtime (libtqm/src/runtime): in every mode, greedy
// generation equals a float32 reference forward pass run on the dequantized
// weights, token for token, on a generated random model (always) and on
// stories260K (when ../shared is present); plus the fused kernel against
// plain decoding, the tokenizer, and tqm-run's command line.

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "runtime/kernels.h"
#include "runtime/llama.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"
#include "tqm/codec.h"
#include "tqm/import.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace tqm {
namespace rt {
namespace {

const std::string kStories = std::string(TQM_SHARED_DIR) + "/models/stories260K/";

bool Exists(const std::string& path) { return std::ifstream(path).good(); }

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

absl::Span<const uint8_t> AsSpan(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

struct SmallShape {
  int dim = 64, hidden = 172, layers = 3, heads = 4, kv_heads = 2, vocab = 96, seq = 64;
};

// A random Llama whose weights quantize to few levels around the zero point
// (so most chunks are seqtable) with a few wider values.
MemorySource RandomLlama(const SmallShape& s, uint32_t seed, bool rope_hf = false,
                         bool lm_head = false) {
  MemorySource src;
  namespace k = meta_keys;
  src.AddMeta({k::kArchitecture, MetaValue::String("llama")});
  src.AddMeta({k::kDim, MetaValue::Int(s.dim)});
  src.AddMeta({k::kHiddenDim, MetaValue::Int(s.hidden)});
  src.AddMeta({k::kLayers, MetaValue::Int(s.layers)});
  src.AddMeta({k::kHeads, MetaValue::Int(s.heads)});
  src.AddMeta({k::kKvHeads, MetaValue::Int(s.kv_heads)});
  src.AddMeta({k::kVocabSize, MetaValue::Int(s.vocab)});
  src.AddMeta({k::kSeqLen, MetaValue::Int(s.seq)});
  src.AddMeta({k::kNormEps, MetaValue::Float(1e-5)});
  src.AddMeta({k::kRopeTheta, MetaValue::Float(10000.0)});
  src.AddMeta({k::kRopeLayout, MetaValue::String(rope_hf ? "hf" : "meta")});
  src.AddMeta({k::kTiedClassifier, MetaValue::Int(lm_head ? 0 : 1)});
  std::mt19937 rng(seed);
  // Weights on a grid of seven values around zero plus one wide value of
  // each sign per row: few quantization levels (seqtable chunks), per
  // tensor and per row alike.
  auto matrix = [&](uint64_t rows, uint64_t cols, float scale) {
    std::binomial_distribution<int> b(6, 0.5);
    std::vector<float> v(rows * cols);
    for (float& x : v) x = scale * (b(rng) - 3) * 0.6f;
    for (uint64_t r = 0; r < rows; ++r) {
      v[r * cols + rng() % cols] = 6 * scale;
      v[r * cols + rng() % cols] = -6 * scale;
    }
    return v;
  };
  auto norm = [&](uint64_t n) {
    std::uniform_real_distribution<float> u(0.8f, 1.2f);
    std::vector<float> v(n);
    for (float& x : v) x = u(rng);
    return v;
  };
  const uint64_t d = s.dim, h = s.hidden, kv = uint64_t(s.dim) / s.heads * s.kv_heads;
  const float w = 1.0f / std::sqrt(static_cast<float>(s.dim));
  auto add = [&](std::string name, std::vector<uint64_t> dims, std::vector<float> v) {
    src.Add(std::move(name), std::move(dims), std::move(v));
  };
  add("model.embed_tokens.weight", {uint64_t(s.vocab), d}, matrix(s.vocab, d, 0.1f));
  for (int l = 0; l < s.layers; ++l) {
    auto n = [&](const char* suffix) { return LayerTensorName(l, suffix); };
    add(n("input_layernorm.weight"), {d}, norm(d));
    add(n("self_attn.q_proj.weight"), {d, d}, matrix(d, d, w));
    add(n("self_attn.k_proj.weight"), {kv, d}, matrix(kv, d, w));
    add(n("self_attn.v_proj.weight"), {kv, d}, matrix(kv, d, w));
    add(n("self_attn.o_proj.weight"), {d, d}, matrix(d, d, w));
    add(n("post_attention_layernorm.weight"), {d}, norm(d));
    add(n("mlp.gate_proj.weight"), {h, d}, matrix(h, d, w));
    add(n("mlp.down_proj.weight"), {d, h}, matrix(d, h, 1.0f / std::sqrt(float(h))));
    add(n("mlp.up_proj.weight"), {h, d}, matrix(h, d, w));
  }
  add("model.norm.weight", {d}, norm(d));
  if (lm_head) add("lm_head.weight", {uint64_t(s.vocab), d}, matrix(s.vocab, d, w));
  return src;
}

struct Packed {
  std::string bytes;
  PackStats stats;
};

// entropy = false: stored + seqtable chunks only, the codecs the fused
// kernel decodes inline; true: the writer may also pick the entropy codecs
// (format 1.1), which the fused kernel decodes a chunk at a time.
Packed Pack(TensorSource& src, Granularity g, uint32_t chunk_size, bool entropy = false) {
  PackOptions po;
  po.granularity = g;
  po.chunk_size = chunk_size;
  po.entropy = entropy;
  Packed p;
  auto bytes = PackToString(src, po, &p.stats);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (bytes.ok()) p.bytes = std::move(*bytes);
  return p;
}

// Code width and parameter granularity as tqm-pack's --bits and
// --granularity tensor|row|group:G give them (group_size 0: not grouped).
struct Quant {
  int bits = 8;
  Granularity granularity = Granularity::kTensor;
  uint32_t group_size = 0;
  std::string name() const {
    const char* g = granularity == Granularity::kTensor ? "tensor"
                    : granularity == Granularity::kRow  ? "row"
                                                        : "group";
    return group_size != 0 ? absl::StrFormat("%d bits, %s:%d", bits, g, group_size)
                           : absl::StrFormat("%d bits, %s", bits, g);
  }
};

PackOptions QuantOptions(const Quant& q, uint32_t chunk_size, bool entropy) {
  PackOptions po;
  po.bits = q.bits;
  po.granularity = q.granularity;
  po.group_size = q.group_size;
  po.chunk_size = chunk_size;
  po.entropy = entropy;
  return po;
}

std::unique_ptr<Reader> Open(const std::string& bytes) {
  auto r = Reader::FromBuffer(AsSpan(bytes), "model.tqm");
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(*r) : nullptr;
}

struct GenRun {
  std::vector<int> tokens;
  std::vector<std::vector<float>> logits;
};

GenRun Greedy(const ForwardFn& forward, const std::vector<int>& prompt, int steps) {
  GenRun run;
  Sampler greedy(0.0f, 0.0f, 1);
  auto record = [&](int token, int pos) -> absl::StatusOr<absl::Span<const float>> {
    auto l = forward(token, pos);
    if (l.ok()) run.logits.emplace_back(l->begin(), l->end());
    return l;
  };
  auto seq = Generate(record, prompt, steps, greedy);
  EXPECT_TRUE(seq.ok()) << seq.status();
  if (seq.ok()) run.tokens = *seq;
  return run;
}

GenRun ReferenceRun(const std::string& bytes, const std::vector<int>& prompt, int steps) {
  auto reader = Open(bytes);
  auto ref = ReferenceLlama::FromReader(*reader);
  EXPECT_TRUE(ref.ok()) << ref.status();
  return Greedy(
      [&](int t, int p) -> absl::StatusOr<absl::Span<const float>> {
        return (*ref)->Forward(t, p);
      },
      prompt, steps);
}

struct ModeCase {
  Mode mode;
  bool zero_copy;
  uint64_t budget;  // stream
  int threads;
};

std::vector<ModeCase> AllModes(uint64_t layer_bytes) {
  return {
      {Mode::kDecodedF32, true, 0, 1},
      {Mode::kInt8, true, 0, 1},
      {Mode::kInt8, false, 0, 3},
      // Room for the globals and two layers (the current one and the
      // prefetched next one): every layer is evicted and decoded again on
      // every token.
      {Mode::kStream, false, layer_bytes * 5 / 2, 2},
      {Mode::kStream, true, 0, 1},
      {Mode::kFused, true, 0, 1},
      {Mode::kFused, false, 0, 3},
  };
}

std::string Describe(const ModeCase& c) {
  return absl::StrFormat("mode %s, zero_copy %d, budget %d, threads %d", ModeName(c.mode),
                         c.zero_copy, c.budget, c.threads);
}

// Runs every mode over `bytes` and compares with the reference.
void ExpectAllModesMatchReference(const std::string& bytes,
                                  const std::vector<int>& prompt, int steps,
                                  double logit_tol) {
  const GenRun ref = ReferenceRun(bytes, prompt, steps);
  ASSERT_GT(ref.tokens.size(), prompt.size());
  // A sequence that repeats one token would hide most errors.
  EXPECT_GE(std::set<int>(ref.tokens.begin(), ref.tokens.end()).size(), 10u);
  uint64_t globals = 0, layer = 0;
  {
    auto m = Model::FromReader(Open(bytes), [] {
      ModelOptions o;
      o.zero_copy = false;
      return o;
    }());
    ASSERT_TRUE(m.ok());
    globals = (*m)->LayerBytes(format::kNoLayer);
    layer = (*m)->LayerBytes(0);
  }
  for (ModeCase c : AllModes(layer)) {
    if (c.budget != 0) c.budget += globals;
    SCOPED_TRACE(Describe(c));
    RuntimeOptions o;
    o.mode = c.mode;
    o.zero_copy = c.zero_copy;
    o.budget_bytes = c.budget;
    o.threads = c.threads;
    int warnings = 0;
    o.on_warning = [&](const std::string&) { ++warnings; };
    auto llama = Llama::FromReader(Open(bytes), o);
    ASSERT_TRUE(llama.ok()) << llama.status();
    const GenRun got =
        Greedy([&](int t, int p) { return (*llama)->Forward(t, p); }, prompt, steps);
    EXPECT_EQ(got.tokens, ref.tokens);
    ASSERT_EQ(got.logits.size(), ref.logits.size());
    // Largest logit difference relative to the largest logit magnitude.
    double worst = 0, top = 0;
    for (size_t i = 0; i < got.logits.size(); ++i) {
      for (size_t k = 0; k < got.logits[i].size(); ++k) {
        worst = std::max<double>(worst, std::fabs(got.logits[i][k] - ref.logits[i][k]));
        top = std::max<double>(top, std::fabs(ref.logits[i][k]));
      }
    }
    EXPECT_LT(worst, logit_tol * std::max(1.0, top)) << "largest logit " << top;
    EXPECT_EQ(warnings, 0);
    const ModelStats st = (*llama)->model().stats();
    if (c.mode == Mode::kStream && c.budget != 0) {
      EXPECT_GT(st.evictions, 0u);
      EXPECT_GT(st.prefetch_hits, 0u);
      EXPECT_LE(st.peak_resident_bytes, c.budget);
    }
  }
}

TEST(Runtime, RandomModelAllModesMatchReference) {
  for (Granularity g : {Granularity::kTensor, Granularity::kRow}) {
    SCOPED_TRACE(g == Granularity::kRow ? "per-row" : "per-tensor");
    MemorySource src = RandomLlama(SmallShape(), 7);
    // 1000-byte chunks: chunk boundaries fall inside rows.
    const Packed p = Pack(src, g, 1000);
    EXPECT_GT(p.stats.chunks_seqtable, p.stats.chunks_stored);
    ExpectAllModesMatchReference(p.bytes, {kBos, 5, 17, 33}, 48, 1e-4);
  }
}

// Fewer bits and per-group parameters: every mode (the int8 and fused
// kernels summing over groups) gives the reference's logits on the
// dequantized weights. Rows of 172 columns end in a partial group of 12
// (group:32) or 44 (group:64); 1000-byte chunks end inside groups.
TEST(Runtime, LowBitsAndGroupsAllModesMatchReference) {
  const std::vector<Quant> cases = {
      {4, Granularity::kGroup, 32}, {4, Granularity::kGroup, 64},
      {3, Granularity::kGroup, 32}, {4, Granularity::kRow, 0},
      {4, Granularity::kTensor, 0}, {2, Granularity::kGroup, 128}};
  for (const Quant& q : cases) {
    for (bool quantize_all : {false, true}) {
      SCOPED_TRACE(q.name() + (quantize_all ? ", norms quantized too" : ""));
      MemorySource src = RandomLlama(SmallShape(), 7);
      PackOptions po = QuantOptions(q, 1000, /*entropy=*/true);
      po.quantize_all = quantize_all;
      auto bytes = PackToString(src, po);
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      auto r = Open(*bytes);
      const TensorInfo& down =
          r->tensors()[r->FindTensor("model.layers.0.mlp.down_proj.weight")];
      EXPECT_EQ(down.bits, q.bits);
      if (q.granularity == Granularity::kGroup) {
        ASSERT_EQ(down.storage, format::kStorageU8Group);
        EXPECT_EQ(down.affine.size(), 64u * ((172 + q.group_size - 1) / q.group_size));
      }
      // A long forced prompt: at 2 and 3 bits the random model soon repeats
      // itself, and every position compares logits.
      ExpectAllModesMatchReference(
          *bytes, {kBos, 5, 17, 33, 41, 60, 72, 88, 9, 23, 50, 66}, 40, 1e-4);
    }
  }
}

// Tensors kept verbatim (bfloat16, RAW storage): the embedding, the
// attention norms and the query projections, beside quantized ones.
TEST(Runtime, VerbatimTensorsRunInEveryMode) {
  MemorySource f32 = RandomLlama(SmallShape(), 13);
  MemorySource src;
  for (const MetaEntry& m : f32.metadata()) src.AddMeta(m);
  for (size_t i = 0; i < f32.tensors().size(); ++i) {
    const SourceTensor& t = f32.tensors()[i];
    std::vector<float> v;
    ASSERT_TRUE(f32.Read(i, &v).ok());
    if (t.name.find("embed_tokens") != std::string::npos ||
        t.name.find("input_layernorm") != std::string::npos ||
        t.name.find("q_proj") != std::string::npos) {
      // bfloat16: the high half of each float32.
      std::string bf16;
      for (float x : v) {
        uint32_t b;
        std::memcpy(&b, &x, 4);
        bf16.push_back(static_cast<char>(b >> 16));
        bf16.push_back(static_cast<char>(b >> 24));
      }
      src.AddRaw(t.name, t.dims, format::kDTypeBF16, std::move(bf16));
    } else {
      src.Add(t.name, t.dims, std::move(v));
    }
  }
  PackOptions po = QuantOptions({4, Granularity::kGroup, 32}, 1000, /*entropy=*/true);
  auto bytes = PackToString(src, po);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto r = Open(*bytes);
  EXPECT_TRUE(r->tensors()[r->FindTensor("model.embed_tokens.weight")].raw());
  EXPECT_TRUE(
      r->tensors()[r->FindTensor("model.layers.2.self_attn.q_proj.weight")].raw());
  EXPECT_TRUE(r->tensors()[r->FindTensor("model.layers.1.input_layernorm.weight")].raw());
  ExpectAllModesMatchReference(*bytes, {kBos, 5, 17, 33}, 40, 1e-4);
}

TEST(Runtime, EntropyCodedChunks) {
  MemorySource src = RandomLlama(SmallShape(), 7);
  const Packed p = Pack(src, Granularity::kTensor, 1000, /*entropy=*/true);
  auto r = Open(p.bytes);
  size_t entropy_chunks = 0;
  for (const TensorInfo& t : r->tensors()) {
    for (const ChunkInfo& c : t.chunks) {
      entropy_chunks +=
          c.codec != format::kCodecStored && c.codec != format::kCodecSeqTable;
    }
  }
  EXPECT_GT(entropy_chunks, 0u);
  ExpectAllModesMatchReference(p.bytes, {kBos, 5, 17, 33}, 32, 1e-4);
}

TEST(Runtime, HfRopeAndSeparateClassifier) {
  MemorySource src = RandomLlama(SmallShape(), 11, /*rope_hf=*/true, /*lm_head=*/true);
  const Packed p = Pack(src, Granularity::kTensor, 4096);
  ExpectAllModesMatchReference(p.bytes, {kBos, 9}, 32, 1e-4);
}

TEST(Runtime, PortableKernelsMatchReference) {
  SetPortableKernels(true);
  MemorySource src = RandomLlama(SmallShape(), 3);
  const Packed p = Pack(src, Granularity::kRow, 1000);
  ExpectAllModesMatchReference(p.bytes, {kBos, 2, 3}, 24, 1e-4);
  SetPortableKernels(false);
}

// The fused kernel against DecodeChunk + a plain dot product, on chunks
// with escapes, row boundaries anywhere, and tails of 1..3 bytes.
TEST(Runtime, FusedChunkDotMatchesDecode) {
  for (bool portable : {false, true}) {
    SetPortableKernels(portable);
    std::mt19937 rng(5);
    std::vector<uint32_t> entries;
    for (uint32_t i = 0; i < 300; ++i) entries.push_back(rng());
    SeqTable table(entries);
    for (uint64_t cols : {1u, 3u, 32u, 64u, 100u, 172u}) {
      for (uint32_t size : {1u, 4u, 31u, 35u, 257u, 1000u, 4099u}) {
        std::vector<uint8_t> data(size);
        for (size_t i = 0; i + 4 <= size; i += 4) {
          uint32_t v = rng() % 5 == 0 ? rng() : entries[rng() % entries.size()];
          std::memcpy(&data[i], &v, 4);
        }
        for (size_t i = size / 4 * 4; i < size; ++i) data[i] = rng();
        std::string enc;
        EncodeSeqTable(data, table, &enc);
        const uint64_t begin = (rng() % 7) * cols + rng() % cols;
        std::vector<float> x(cols);
        for (float& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
        const uint64_t row0 = begin / cols, rows = (begin + size - 1) / cols - row0 + 1;
        std::vector<double> want(rows, 0);
        for (uint32_t i = 0; i < size; ++i) {
          want[(begin + i) / cols - row0] += double(data[i]) * x[(begin + i) % cols];
        }
        for (uint8_t codec : {format::kCodecSeqTable, format::kCodecStored}) {
          std::vector<float> acc(rows, 0);
          absl::Span<const uint8_t> in =
              codec == format::kCodecStored ? absl::MakeConstSpan(data) : AsSpan(enc);
          ASSERT_TRUE(FusedChunkDot(codec, in, table.entries(), begin, size, cols,
                                    x.data(), acc.data(), row0)
                          .ok());
          for (uint64_t r = 0; r < rows; ++r) {
            ASSERT_NEAR(acc[r], want[r], 1e-3 * (1 + std::fabs(want[r])))
                << "cols " << cols << " size " << size << " row " << r;
          }
        }
        // Truncated and padded payloads are rejected, not over-read.
        std::vector<float> acc(rows, 0);
        if (!enc.empty()) {
          EXPECT_FALSE(FusedChunkDot(
                           format::kCodecSeqTable, AsSpan(enc).subspan(0, enc.size() - 1),
                           table.entries(), begin, size, cols, x.data(), acc.data(), row0)
                           .ok());
        }
        std::string longer = enc + "x";
        EXPECT_FALSE(FusedChunkDot(format::kCodecSeqTable, AsSpan(longer),
                                   table.entries(), begin, size, cols, x.data(),
                                   acc.data(), row0)
                         .ok());
      }
    }
    // An out-of-table code is DataLoss.
    std::string bad = {'\x00', '\x10', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00',
                       '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00', '\x00'};
    std::vector<float> x(64, 1), acc(2, 0);
    EXPECT_EQ(FusedChunkDot(format::kCodecSeqTable, AsSpan(bad), table.entries(), 0, 32,
                            64, x.data(), acc.data(), 0)
                  .code(),
              absl::StatusCode::kDataLoss);
  }
  SetPortableKernels(false);
}

// Per-group accumulation of the fused kernel: each segment of `group`
// columns (the last of a row shorter) gets its own partial sum, indexed as
// TensorInfo::ParamIndex numbers the groups.
TEST(Runtime, FusedChunkDotGroups) {
  for (bool portable : {false, true}) {
    SetPortableKernels(portable);
    std::mt19937 rng(9);
    std::vector<uint32_t> entries;
    for (uint32_t i = 0; i < 100; ++i) entries.push_back(rng() & 0x0f0f0f0f);
    SeqTable table(entries);
    for (uint64_t cols : {3u, 64u, 100u, 172u}) {
      for (uint64_t group : {1u, 7u, 32u, 64u, 256u}) {
        const uint64_t g = std::min(group, cols), per_row = (cols + g - 1) / g;
        for (uint32_t size : {5u, 257u, 1000u, 4099u}) {
          std::vector<uint8_t> data(size);
          for (size_t i = 0; i + 4 <= size; i += 4) {
            uint32_t v = rng() % 5 == 0 ? rng() : entries[rng() % entries.size()];
            std::memcpy(&data[i], &v, 4);
          }
          for (size_t i = size / 4 * 4; i < size; ++i) data[i] = rng();
          std::string enc;
          EncodeSeqTable(data, table, &enc);
          const uint64_t begin = (rng() % 5) * cols + rng() % cols;
          std::vector<float> x(cols);
          for (float& v : x) v = std::uniform_real_distribution<float>(-1, 1)(rng);
          auto seg = [&](uint64_t e) { return e / cols * per_row + e % cols / g; };
          const uint64_t seg0 = seg(begin), segs = seg(begin + size - 1) - seg0 + 1;
          std::vector<double> want(segs, 0);
          for (uint32_t i = 0; i < size; ++i) {
            want[seg(begin + i) - seg0] += double(data[i]) * x[(begin + i) % cols];
          }
          for (uint8_t codec : {format::kCodecSeqTable, format::kCodecStored}) {
            std::vector<float> acc(segs, 0);
            absl::Span<const uint8_t> in =
                codec == format::kCodecStored ? absl::MakeConstSpan(data) : AsSpan(enc);
            ASSERT_TRUE(FusedChunkDot(codec, in, table.entries(), begin, size, cols,
                                      x.data(), acc.data(), seg0, group)
                            .ok());
            for (uint64_t k = 0; k < segs; ++k) {
              ASSERT_NEAR(acc[k], want[k], 1e-3 * (1 + std::fabs(want[k])))
                  << "cols " << cols << " group " << group << " size " << size
                  << " segment " << k;
            }
          }
        }
      }
    }
  }
  SetPortableKernels(false);
}

TEST(Runtime, CorruptChunkIsReported) {
  MemorySource src = RandomLlama(SmallShape(), 7);
  const Packed p = Pack(src, Granularity::kTensor, 1000);
  auto r = Open(p.bytes);
  const int t = r->FindTensor("model.layers.1.mlp.up_proj.weight");
  std::string bad = p.bytes;
  bad[r->tensors()[t].chunks[1].offset + 3] ^= 1;
  for (Mode mode : {Mode::kDecodedF32, Mode::kInt8, Mode::kStream, Mode::kFused}) {
    SCOPED_TRACE(ModeName(mode));
    RuntimeOptions o;
    o.mode = mode;
    o.threads = 1;
    absl::Status s;
    auto llama = Llama::FromReader(Open(bad), o);
    if (!llama.ok()) {
      s = llama.status();
    } else {
      s = (*llama)->Forward(kBos, 0).status();
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_NE(s.message().find("model.layers.1.mlp.up_proj.weight"), std::string::npos)
        << s;
  }
}

TEST(Runtime, MissingOrMisshapenTensorsAreRejected) {
  SmallShape s;
  MemorySource src = RandomLlama(s, 1);
  PackOptions po;
  po.entropy = false;
  po.extra_metadata.push_back(
      {meta_keys::kDim, MetaValue::Int(32)});  // replaces llama.dim
  auto bytes = PackToString(src, po);
  ASSERT_TRUE(bytes.ok());
  auto llama = Llama::FromReader(Open(*bytes), RuntimeOptions());
  ASSERT_FALSE(llama.ok());
  EXPECT_NE(llama.status().message().find("shape"), std::string::npos) << llama.status();
}

// ---- stories260K ----

class Stories : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!Exists(kStories + "stories260K.bin") || !Exists(kStories + "tok512.bin")) {
      GTEST_SKIP() << "stories260K not found under " << kStories
                   << " (../shared is not checked out beside the project)";
    }
  }
};

std::string DecodeText(const Tokenizer& tok, const std::vector<int>& seq) {
  std::string text;
  for (size_t i = 1; i < seq.size(); ++i) text += tok.Printable(seq[i - 1], seq[i]);
  return text;
}

TEST_F(Stories, AllModesMatchReference) {
  auto src = OpenLlama2c(kStories + "stories260K.bin");
  ASSERT_TRUE(src.ok()) << src.status();
  auto tok = Tokenizer::FromFile(kStories + "tok512.bin", 512);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<int> prompt = tok->Encode("Once upon a time", true, false);
  for (Granularity g : {Granularity::kTensor, Granularity::kRow}) {
    SCOPED_TRACE(g == Granularity::kRow ? "per-row" : "per-tensor");
    const Packed p = Pack(**src, g, format::kDefaultChunkSize, /*entropy=*/true);
    ExpectAllModesMatchReference(p.bytes, prompt, 128, 1e-4);
    if (g == Granularity::kTensor) {
      const std::string text =
          DecodeText(*tok, ReferenceRun(p.bytes, prompt, 128).tokens);
      EXPECT_EQ(text.rfind("Once upon a time, there was a little girl named Lily.", 0),
                0u)
          << text;
    }
  }
}

// tqm-pack --bits 4 with --granularity group:32, row and tensor.
const Quant kStories4Bit[] = {{4, Granularity::kGroup, 32},
                              {4, Granularity::kRow, 0},
                              {4, Granularity::kTensor, 0}};

TEST_F(Stories, FourBitsAllModesMatchReference) {
  auto src = OpenLlama2c(kStories + "stories260K.bin");
  ASSERT_TRUE(src.ok()) << src.status();
  auto tok = Tokenizer::FromFile(kStories + "tok512.bin", 512);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const std::vector<int> prompt = tok->Encode("Once upon a time", true, false);
  for (const Quant& q : kStories4Bit) {
    SCOPED_TRACE(q.name());
    auto bytes =
        PackToString(**src, QuantOptions(q, format::kDefaultChunkSize, /*entropy=*/true));
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    ExpectAllModesMatchReference(*bytes, prompt, 96, 1e-4);
  }
}

TEST_F(Stories, Float32ReferenceGivesTheKnownText) {
  auto src = OpenLlama2c(kStories + "stories260K.bin");
  ASSERT_TRUE(src.ok()) << src.status();
  auto ref = ReferenceLlama::FromSource(**src);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto tok = Tokenizer::FromFile(kStories + "tok512.bin", 512);
  ASSERT_TRUE(tok.ok());
  const GenRun run = Greedy(
      [&](int t, int p) -> absl::StatusOr<absl::Span<const float>> {
        return (*ref)->Forward(t, p);
      },
      tok->Encode("Once upon a time", true, false), 60);
  EXPECT_EQ(
      DecodeText(*tok, run.tokens)
          .rfind(
              "Once upon a time, there was a little girl named Lily. She loved to play "
              "outside in the park. One day, she saw a big, red ball.",
              0),
      0u)
      << DecodeText(*tok, run.tokens);
}

TEST_F(Stories, TokenizerRoundTrip) {
  auto tok = Tokenizer::FromFile(kStories + "tok512.bin", 512);
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (const char* text : {"Once upon a time", "Hello, world! 123", "naïve café ☃", ""}) {
    std::vector<int> ids = tok->Encode(text, true, false);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], kBos);
    std::string decoded;
    for (size_t i = 1; i < ids.size(); ++i) decoded += tok->Decode(ids[i - 1], ids[i]);
    EXPECT_EQ(decoded, text);
  }
  const std::vector<int> eos = tok->Encode("a", false, true);
  EXPECT_EQ(eos.back(), kEos);
  // Truncated files are DataLoss naming the token.
  const std::string bytes = ReadAll(kStories + "tok512.bin");
  auto cut = Tokenizer::FromBytes(bytes.substr(0, bytes.size() / 2), 512, "tok");
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(cut.status().message().find("token"), std::string::npos);
}

// Writes `bytes` to a new temporary file and returns its path ("" on error).
std::string WriteTemp(const std::string& bytes) {
  char path[] = "/tmp/tqm_runtime_testXXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return "";
  const bool ok =
      write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  close(fd);
  if (!ok) {
    std::remove(path);
    return "";
  }
  return path;
}

// tqm-run over `bytes` (packed with `po` plus the tokenizer) in every mode
// prints the reference's greedy text.
void ExpectCommandLineMatchesReference(TensorSource& src, PackOptions po) {
  const std::string exe = std::string(TQM_BIN_DIR) + "/tqm-run";
  if (!Exists(exe)) GTEST_SKIP() << exe << " not built";
  po.extra_metadata.push_back(
      {meta_keys::kTokenizerLlama2c, MetaValue::Bytes(ReadAll(kStories + "tok512.bin"))});
  auto bytes = PackToString(src, po);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  const std::string path = WriteTemp(*bytes);
  ASSERT_FALSE(path.empty());
  auto tok = Tokenizer::FromFile(kStories + "tok512.bin", 512);
  ASSERT_TRUE(tok.ok());
  const std::string want =
      DecodeText(
          *tok,
          ReferenceRun(*bytes, tok->Encode("Once upon a time", true, false), 64).tokens) +
      "\n";
  EXPECT_GT(want.size(), 40u);
  for (const char* mode : {"decoded-f32", "int8", "stream", "fused"}) {
    const std::string cmd = absl::StrFormat(
        "%s %s --prompt 'Once upon a time' --steps 64 --temperature 0 --mode %s "
        "--budget-mb 0.3 --no-zero-copy --threads 2 2>/dev/null",
        exe, path, mode);
    FILE* f = popen(cmd.c_str(), "r");
    ASSERT_NE(f, nullptr);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    EXPECT_EQ(pclose(f), 0) << cmd;
    EXPECT_EQ(out, want) << cmd;
  }
  std::remove(path.c_str());
}

// tqm-run end to end: the tokenizer from the file's metadata, every mode.
TEST_F(Stories, CommandLine) {
  auto src = OpenLlama2c(kStories + "stories260K.bin");
  ASSERT_TRUE(src.ok());
  ExpectCommandLineMatchesReference(**src, PackOptions());  // tqm-pack's defaults
}

TEST_F(Stories, CommandLineFourBits) {
  auto src = OpenLlama2c(kStories + "stories260K.bin");
  ASSERT_TRUE(src.ok());
  for (const Quant& q : kStories4Bit) {
    SCOPED_TRACE(q.name());
    ExpectCommandLineMatchesReference(
        **src, QuantOptions(q, format::kDefaultChunkSize, /*entropy=*/true));
  }
}

}  // namespace
}  // namespace rt
}  // namespace tqm
