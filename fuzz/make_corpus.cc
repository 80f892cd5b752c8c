// Writes the seed corpora of the fuzz targets: small valid inputs (and a few
// near-misses) from which libFuzzer mutates. Output is deterministic; the
// committed fuzz/corpus/ was made with
//   build/bin/tqm_make_fuzz_corpus fuzz/corpus ../shared
// (the shared directory, by default the one the build was configured with,
// supplies tok512.bin; without it that seed is left out). The importer seeds
// are tiny models written by the library's own exporters (ExportGguf,
// ExportLlama2c, SafetensorsWriter), so that they stay a few KiB where the
// shared fixtures are megabytes. Files libFuzzer later found interesting may
// be merged in beside these.

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "codec/entropy.h"
#include "file_editor.h"
#include "inputs.h"
#include "repeating_pattern.h"
#include "test_util.h"
#include "tqm/codec.h"
#include "tqm/export.h"
#include "tqm/format.h"
#include "tqm/gguf.h"
#include "tqm/reader.h"
#include "tqm/safetensors.h"
#include "tqm/writer.h"

namespace {

void Write(const std::string& dir, const std::string& name, const std::string& bytes) {
  mkdir(dir.c_str(), 0755);
  const std::string path = dir + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), bytes.size());
  if (!f) {
    fprintf(stderr, "cannot write %s\n", path.c_str());
    exit(1);
  }
  printf("%6zu %s\n", bytes.size(), path.c_str());
}

// Values whose quantized 4-byte groups repeat (so a table pays off), with a
// few outliers that become escapes.
std::vector<float> Pattern(size_t n, uint32_t seed) {
  return tqm_test::RepeatingPattern(n, seed, 13);
}

std::string Pack(tqm::MemorySource& m, tqm::PackOptions o, bool entropy = false) {
  o.entropy = entropy;
  o.threads = 1;
  absl::StatusOr<std::string> s = tqm::PackToString(m, o);
  if (!s.ok()) {
    fprintf(stderr, "pack failed: %s\n", s.status().ToString().c_str());
    exit(1);
  }
  return *s;
}

// Values with a skewed byte distribution: what the entropy codecs are for.
std::vector<float> Skewed(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1103515245u + 12345u;
    const int k = static_cast<int>((s >> 16) % 64);
    v[i] = (k < 40 ? 0.0f : k < 52 ? 0.01f : k < 60 ? -0.01f : 0.05f * (k - 59)) - 0.1f;
  }
  return v;
}

void OpenCorpus(const std::string& dir) {
  {
    tqm::MemorySource m;
    m.AddMeta({"general.architecture", tqm::MetaValue::String("llama")});
    m.AddMeta({"llama.dim", tqm::MetaValue::Int(8)});
    m.AddMeta({"llama.norm_eps", tqm::MetaValue::Float(1e-5)});
    m.AddMeta({"tokenizer.llama2c", tqm::MetaValue::Bytes(std::string("\0\1\2", 3))});
    m.Add("model.layers.0.self_attn.q_proj.weight", {8, 16}, Pattern(128, 1));
    m.Add("model.norm.weight", {8}, Pattern(8, 2));
    tqm::PackOptions o;
    o.chunk_size = 64;
    Write(dir, "tensor_seqtable.tqm", Pack(m, o));
    o.granularity = tqm::Granularity::kRow;
    Write(dir, "row_seqtable.tqm", Pack(m, o));
    o.max_table_entries = 0;
    o.quantize_all = true;
    Write(dir, "row_stored_all.tqm", Pack(m, o));
  }
  {
    tqm::MemorySource m;
    m.Add("a", {3}, {1.0f, -2.0f, 3.5f});
    m.Add("b", {1, 1}, {7.0f});
    tqm::PackOptions o;
    o.chunk_size = 4;
    Write(dir, "tiny_chunks.tqm", Pack(m, o));
  }
  {
    tqm::MemorySource m;
    m.Add("model.layers.1.mlp.up_proj.weight", {4, 4, 4}, Pattern(64, 3));
    m.Add("model.layers.1.mlp.down_proj.weight", {2, 30}, Pattern(60, 4));
    tqm::PackOptions o;
    o.chunk_size = 12;
    o.max_table_entries = 3;
    Write(dir, "three_d_small_table.tqm", Pack(m, o));
  }
  {
    // The entropy codecs (format 1.1): Huffman/rANS, and zstd under kSize.
    tqm::MemorySource m;
    m.Add("model.layers.0.mlp.gate_proj.weight", {16, 64}, Skewed(1024, 5));
    tqm::PackOptions o;
    o.chunk_size = 256;
    o.profile = tqm::Profile::kSize;
    Write(dir, "entropy_size.tqm", Pack(m, o, /*entropy=*/true));
    o.profile = tqm::Profile::kBalanced;
    o.max_table_entries = 0;
    Write(dir, "entropy_balanced_no_table.tqm", Pack(m, o, /*entropy=*/true));
  }
}

// The chunks of a packed file whose codec is not stored or seqtable, as
// fuzz_chunk inputs (one per codec).
void EntropyChunks(const std::string& dir) {
  tqm::MemorySource m;
  m.Add("model.layers.0.mlp.gate_proj.weight", {16, 64}, Skewed(1024, 7));
  tqm::PackOptions o;
  o.chunk_size = 512;
  o.max_table_entries = 0;
  bool seen[256] = {};
  for (tqm::Profile p : {tqm::Profile::kSize, tqm::Profile::kBalanced, tqm::Profile::kSpeed}) {
    o.profile = p;
    const std::string f = Pack(m, o, /*entropy=*/true);
    const tqm_fuzz::Layout l = tqm_fuzz::Scan(f);
    for (const tqm_fuzz::TensorLoc& t : l.tensors) {
      for (const tqm_fuzz::ChunkLoc& c : t.chunks) {
        if (c.codec <= 1 || seen[c.codec]) continue;
        seen[c.codec] = true;
        Write(dir, "codec" + std::to_string(c.codec) + "_from_writer.bin",
              tqm_fuzz::MakeChunkInput(c.codec, false, 0, c.decoded_size, 0, {},
                                       f.substr(c.offset, c.encoded_size)));
      }
    }
  }
}

// Lanes chunks (format 1.2) with each group count and a few low-bit counts,
// sizes that end in a partial block, as fuzz_chunk inputs.
void LanesChunks(const std::string& dir) {
  // Bell-shaped bytes: 128 plus a sum of four uniform values in [-16, 16).
  std::vector<uint8_t> q(3000);
  uint32_t s = 9;
  for (uint8_t& b : q) {
    int v = 128;
    for (int i = 0; i < 4; ++i) {
      s = s * 1103515245u + 12345u;
      v += static_cast<int>((s >> 16) % 32) - 16;
    }
    b = static_cast<uint8_t>(v);
  }
  const struct {
    int k, groups;
    size_t n;
  } kinds[] = {{0, 1, 100}, {3, 2, 1000}, {2, 4, 3000}};
  for (const auto& c : kinds) {
    std::string enc;
    if (!tqm::entropy_internal::EncodeLanesWith(absl::MakeConstSpan(q.data(), c.n), c.k,
                                                c.groups, &enc)
             .ok()) {
      std::abort();
    }
    Write(dir,
          "codec5_lanes_k" + std::to_string(c.k) + "_g" + std::to_string(c.groups) + ".bin",
          tqm_fuzz::MakeChunkInput(tqm::format::kCodecLanes, false, 0, c.n, 0, {}, enc));
  }
}

std::string EncodeWith(const std::vector<uint32_t>& table, const std::string& raw) {
  std::string enc;
  tqm::EncodeSeqTable(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()),
      tqm::SeqTable(table), &enc);
  return enc;
}

void ChunkCorpus(const std::string& dir) {
  using tqm_fuzz::MakeChunkInput;
  const uint32_t seed = 0x5eed;
  std::vector<uint32_t> gen;
  for (uint32_t i = 0; i < 16; ++i) gen.push_back(tqm_fuzz::GeneratedEntry(i, seed));
  // 70 bytes: table groups, two escapes, a 2-byte tail.
  std::string raw;
  for (int g = 0; g < 17; ++g) {
    uint32_t v = g % 5 == 4 ? 0x01020304u + g : gen[(g * 7) % 16];
    raw.append(reinterpret_cast<const char*>(&v), 4);
  }
  raw += "xy";
  const std::string enc = EncodeWith(gen, raw);
  Write(dir, "seqtable_generated.bin", MakeChunkInput(1, false, 16, raw.size(), seed, {}, enc));
  Write(dir, "stored.bin", MakeChunkInput(0, false, 0, raw.size(), 0, {}, raw));
  Write(dir, "stored_short.bin", MakeChunkInput(0, false, 0, raw.size() + 1, 0, {}, raw));
  // Explicit table, 64 groups: the eight-codes-at-once path.
  std::vector<uint32_t> t4 = {0, 0xFFFFFFFFu, 0x80808080u, 0x7F7F7F7Fu};
  std::string raw2;
  for (int g = 0; g < 64; ++g) {
    uint32_t v = g == 37 ? 0x12345678u : t4[(g * 3) % 4];
    raw2.append(reinterpret_cast<const char*>(&v), 4);
  }
  Write(dir, "seqtable_explicit.bin",
        MakeChunkInput(1, true, 4, raw2.size(), 0, t4, EncodeWith(t4, raw2)));
  // Near misses: an invalid code (== N), an escape cut off, a leftover byte.
  std::string bad = EncodeWith(t4, raw2);
  bad[16] = 4;
  bad[17] = 0;
  Write(dir, "seqtable_code_n.bin", MakeChunkInput(1, true, 4, raw2.size(), 0, t4, bad));
  std::string cut = std::string("\x00\x00\xff\xff\x01\x02", 6);
  Write(dir, "seqtable_escape_cut.bin", MakeChunkInput(1, true, 4, 8, 0, t4, cut));
  Write(dir, "seqtable_leftover.bin",
        MakeChunkInput(1, true, 4, raw2.size(), 0, t4, EncodeWith(t4, raw2) + "z"));
  Write(dir, "codec_zstd.bin", MakeChunkInput(2, false, 0, 4, 0, {}, "abcd"));
  Write(dir, "codec_255.bin", MakeChunkInput(255, false, 0, 4, 0, {}, "abcd"));
}

std::string B(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s += static_cast<char>(b);
  return s;
}

void RoundtripCorpus(const std::string& dir) {
  // Option byte: bit 0 row, bit 1 quantize_all, bits 2-4 chunk size index,
  // bits 5-7 table limit index (inputs.h).
  auto opt = [](bool row, bool all, int chunk, int limit) {
    return (row ? 1 : 0) | (all ? 2 : 0) | (chunk << 2) | (limit << 5);
  };
  std::string values;
  for (int i = 0; i < 64; ++i) values += static_cast<char>((i * 37) ^ (i >> 3));
  // options, value mode, tensors, metadata, shapes..., metadata..., values
  Write(dir, "palette4_tensor.bin",
        B({opt(false, false, 3, 7), 0, 0 | (24 << 2), 1, 0, 1, 7, 15, 0}) + values);
  Write(dir, "palette16_row.bin",
        B({opt(true, false, 0, 4), 8, 1 | (20 << 2), 2, 1, 1, 3, 3, 0, 9, 3, 9}) + values);
  Write(dir, "int8_all_small_table.bin",
        B({opt(false, true, 2, 2), 0, 2 | (30 << 2), 3, 2, 0, 1, 5, 2, 1, 2, 1, 1, 1,
                    2, 200}) +
            values);
  Write(dir, "raw_floats_stored.bin",
        B({opt(false, false, 5, 0), 0, 3, 1, 0, 1, 3, 3}) + values);
  // Eleven one-letter metadata keys with empty values: 8 bytes per entry.
  std::string meta = B({opt(false, false, 3, 5), 0, 0 | (24 << 2), 0, 11, 0, 3});
  for (int i = 0; i < 11; ++i) meta += B({2, 0});
  Write(dir, "tiny_metadata.bin", meta + values);
  // Entropy codecs: each profile, threaded second pack.
  std::string skew;
  for (int i = 0; i < 256; ++i) skew += static_cast<char>(i % 7 == 0 ? i : 3);
  Write(dir, "entropy_size_zstd19.bin",
        B({opt(false, false, 5, 5), 1 | (0 << 1) | 8 | 16, 2 | (24 << 2), 0, 0, 1, 15, 15}) +
            skew);
  Write(dir, "entropy_balanced.bin",
        B({opt(true, false, 3, 0), 1 | (1 << 1) | 8, 2 | (24 << 2), 1, 0, 1, 15, 15, 0, 9}) +
            skew);
  Write(dir, "entropy_speed.bin",
        B({opt(false, true, 6, 7), 1 | (2 << 1), 0 | (24 << 2), 0, 0, 2, 15, 15, 15}) + skew);
}

// ---- importer seeds ----

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    exit(1);
  }
}

std::string ReadBack(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (!f && !f.eof()) {
    fprintf(stderr, "cannot read %s\n", path.c_str());
    exit(1);
  }
  return s;
}

// A scratch directory for the exporters, which write files.
std::string TempDir() {
  char tmpl[] = "/tmp/tqm_corpus_XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    perror("mkdtemp");
    exit(1);
  }
  return tmpl;
}

// A llama2.c tokenizer blob of `n` tokens: the special ones, byte tokens,
// words with spaces and one with U+2581.
std::string TinyTokenizer(int n) {
  tqm::GgufVocab v;
  // "\u2581" is U+2581 in UTF-8 (a universal character name: exactly four
  // hex digits, unlike "\x81" which would swallow the "c").
  const char* words[] = {"<unk>",   "<s>",   "</s>", "<0x41>", " a",     "b",
                         "\u2581c", "hello", " t",   "\u00e9", "<0xZZ>", ""};
  for (int i = 0; i < n; ++i) {
    v.tokens.push_back(i < 12 ? words[i] : "w" + std::to_string(i));
    v.scores.push_back(-static_cast<float>(i) / 2);
  }
  absl::StatusOr<std::string> blob = tqm::Llama2cTokenizerFromVocab(v);
  Check(blob.status(), "tokenizer");
  return *blob;
}

// A packed tiny Llama model (dim x hidden, one layer, `vocab` tokens) with
// its tokenizer, as a Reader over `*bytes`.
std::unique_ptr<tqm::Reader> TinyLlama(int dim, int hidden, int vocab, bool lm_head,
                                       std::string* bytes) {
  tqm::MemorySource m = tqm_test::SmallModel(1, dim, hidden, vocab, 3);
  if (lm_head) {
    m.Add("lm_head.weight", {uint64_t(vocab), uint64_t(dim)},
          tqm_test::Gaussian(uint64_t(vocab) * dim, 4));
  }
  m.AddMeta({"tokenizer.llama2c", tqm::MetaValue::Bytes(TinyTokenizer(vocab))});
  tqm::PackOptions o;
  *bytes = Pack(m, o);
  absl::StatusOr<std::unique_ptr<tqm::Reader>> r = tqm::Reader::FromBuffer(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()),
      "tiny.tqm");
  Check(r.status(), "reader");
  return std::move(r).value();
}

void GgufCorpus(const std::string& dir, const std::string& tmp) {
  const struct {
    const char* name;
    int dim, hidden;
    tqm::GgufExportType type;
    bool lm_head;
  } kinds[] = {
      {"tiny_f32.gguf", 8, 16, tqm::GgufExportType::kF32, false},
      {"tiny_f16_lm_head.gguf", 8, 16, tqm::GgufExportType::kF16, true},
      {"tiny_q8_0.gguf", 32, 32, tqm::GgufExportType::kQ8_0, false},
  };
  for (const auto& k : kinds) {
    std::string packed;
    std::unique_ptr<tqm::Reader> r = TinyLlama(k.dim, k.hidden, 8, k.lm_head, &packed);
    tqm::GgufExportOptions o;
    o.type = k.type;
    o.overrides.n_heads = 2;
    o.overrides.n_kv_heads = 1;
    o.overrides.seq_len = 4;
    const std::string path = tmp + "/" + k.name;
    Check(tqm::ExportGguf(*r, path, o), k.name);
    Write(dir, k.name, ReadBack(path));
    unlink(path.c_str());
  }
}

void Llama2cCorpus(const std::string& dir, const std::string& tmp) {
  for (bool lm_head : {false, true}) {
    std::string packed;
    std::unique_ptr<tqm::Reader> r = TinyLlama(8, 16, 8, lm_head, &packed);
    tqm::ExportOverrides o;
    o.n_heads = 2;
    o.n_kv_heads = 1;
    o.seq_len = 2;
    const std::string name = lm_head ? "tiny_lm_head.bin" : "tiny_shared.bin";
    const std::string path = tmp + "/" + name;
    Check(tqm::ExportLlama2c(*r, path, o), name.c_str());
    Write(dir, name, ReadBack(path));
    unlink(path.c_str());
  }
}

void SafetensorsCorpus(const std::string& dir, const std::string& tmp) {
  auto write = [&](const std::string& name, std::vector<tqm::SafetensorsEntry> entries,
                   std::vector<std::pair<std::string, std::string>> meta) {
    const std::string path = tmp + "/" + name;
    auto w = tqm::SafetensorsWriter::Create(path, entries, std::move(meta));
    Check(w.status(), name.c_str());
    for (const tqm::SafetensorsEntry& e : entries) {
      uint64_t n = tqm::SafetensorsDTypeSize(e.dtype);
      for (uint64_t d : e.shape) n *= d;
      std::vector<uint8_t> bytes(n);
      for (uint64_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i * 37 + 60);
      Check((*w)->Write(absl::MakeConstSpan(bytes)), name.c_str());
    }
    Check((*w)->Finish(), name.c_str());
    Write(dir, name, ReadBack(path));
    unlink(path.c_str());
  };
  write("dtypes.safetensors",
        {{"model.embed_tokens.weight", "F32", {4, 2}},
         {"model.layers.0.input_layernorm.weight", "F16", {2}},
         {"model.layers.0.mlp.up_proj.weight", "BF16", {3, 2}},
         {"empty", "F32", {0, 3}},
         {"scalar", "F32", {}}},
        {{"format", "pt"}, {"llama.dim", "2"}, {"llama.rope_layout", "hf"}});
  write("one_tensor.safetensors", {{"w", "F16", {2, 2}}}, {});
  write("unsupported_dtype.safetensors", {{"w", "I8", {3}}}, {});
}

void TokenizerCorpus(const std::string& dir, const std::string& shared) {
  auto with_size = [](uint32_t n, const std::string& blob) {
    return std::string{static_cast<char>(n), static_cast<char>(n >> 8),
                       static_cast<char>(n >> 16)} +
           blob;
  };
  const std::string tiny = TinyTokenizer(16);
  Write(dir, "tiny16.bin", with_size(16, tiny));
  Write(dir, "tiny16_as_17.bin", with_size(17, tiny));
  Write(dir, "tiny16_cut.bin", with_size(16, tiny.substr(0, tiny.size() - 3)));
  Write(dir, "zero_tokens.bin", with_size(0, tiny.substr(0, 4)));
  if (!shared.empty()) {
    const std::string path = shared + "/models/stories260K/tok512.bin";
    if (access(path.c_str(), R_OK) == 0)
      Write(dir, "tok512.bin", with_size(512, ReadBack(path)));
  }
}

void JsonCorpus(const std::string& dir) {
  Write(dir, "index.json",
        "{\"metadata\": {\"total_size\": 1234, \"format\": \"pt\", \"ok\": true, "
        "\"eps\": 1e-5, \"n\": null},\n \"weight_map\": {\"model.embed_tokens.weight\": "
        "\"model-00001-of-00002.safetensors\", \"model.norm.weight\": "
        "\"model-00002-of-00002.safetensors\", \"lm_head.weight\": "
        "\"model-00002-of-00002.safetensors\"}}\n");
  Write(dir, "index_bad_file.json", "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
  Write(dir, "index_empty_map.json", "{\"weight_map\": {}, \"metadata\": []}");
  Write(dir, "config.json",
        "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"hidden_size\": 64,\n"
        "  \"intermediate_size\": 172,\n  \"num_hidden_layers\": 5,\n"
        "  \"num_attention_heads\": 8,\n  \"num_key_value_heads\": 4,\n"
        "  \"vocab_size\": 512,\n  \"max_position_embeddings\": 512,\n"
        "  \"rms_norm_eps\": 1e-05,\n  \"rope_theta\": 10000.0,\n"
        "  \"rope_scaling\": null,\n  \"tie_word_embeddings\": true,\n"
        "  \"torch_dtype\": \"float32\"\n}\n");
  Write(dir, "strings.json",
        "[\"\\u00e9\\ud83d\\ude00\\n\\\"\", \"\xC3\xA9\", -0, 1.5e300, "
        "9223372036854775807, -9223372036854775808, 18446744073709551616, [[[]]], {}]");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    fprintf(stderr, "usage: %s CORPUS_DIR [SHARED_DIR]   (writes CORPUS_DIR/fuzz_*/)\n",
            argv[0]);
    return 2;
  }
  const std::string root = argv[1];
  mkdir(root.c_str(), 0755);
  OpenCorpus(root + "/fuzz_open");
  ChunkCorpus(root + "/fuzz_chunk");
  EntropyChunks(root + "/fuzz_chunk");
  LanesChunks(root + "/fuzz_chunk");
  RoundtripCorpus(root + "/fuzz_roundtrip");
  const std::string tmp = TempDir();
  GgufCorpus(root + "/fuzz_gguf", tmp);
  Llama2cCorpus(root + "/fuzz_llama2c", tmp);
  SafetensorsCorpus(root + "/fuzz_safetensors", tmp);
  rmdir(tmp.c_str());
  TokenizerCorpus(root + "/fuzz_tokenizer", argc == 3 ? argv[2] : TQM_SHARED_DIR);
  JsonCorpus(root + "/fuzz_json_import");
  return 0;
}
