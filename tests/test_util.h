// Helpers shared by the tests: paths to ../shared and the build, small
// deterministic models, and file I/O.

#ifndef TQM_TESTS_TEST_UTIL_H_
#define TQM_TESTS_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "repeating_pattern.h"
#include "tqm/writer.h"

namespace tqm_test {

inline std::string SharedPath(const std::string& rel) {
  return std::string(TQM_SHARED_DIR) + "/" + rel;
}

inline bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

inline std::string Stories260K() { return SharedPath("models/stories260K/stories260K.bin"); }

#define TQM_SKIP_WITHOUT_SHARED()                                                        \
  do {                                                                                   \
    if (!tqm_test::Exists(tqm_test::Stories260K()))                                      \
      GTEST_SKIP() << "../shared/models/stories260K is absent: " << tqm_test::Stories260K() \
                   << " (this test needs the real model)";                               \
  } while (0)

// What a shell command printed on stdout, and its exit status (128 + the
// signal number when a signal ended it).
struct CmdResult {
  int exit_code;
  std::string out;
};

inline CmdResult RunCommand(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  CmdResult r{-1, ""};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

#ifdef TQM_BIN_DIR
// The path of a built tool.
inline std::string Bin(const std::string& tool) {
  return std::string(TQM_BIN_DIR) + "/" + tool;
}
#endif

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), bytes.size());
  if (!f.good()) ADD_FAILURE() << "cannot write " << path;
}

inline absl::Span<const uint8_t> AsSpan(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

inline std::vector<float> Gaussian(size_t n, uint32_t seed, float sigma = 0.02f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A small Llama-shaped model: embedding, `layers` x (norm, q, k, v, o, norm,
// gate, down, up), final norm. Gaussian weights, deterministic by seed.
inline tqm::MemorySource SmallModel(int layers = 2, int dim = 32, int hidden = 64,
                                    int vocab = 96, uint32_t seed = 1) {
  tqm::MemorySource m;
  uint64_t d = dim, h = hidden, v = vocab;
  m.Add("model.embed_tokens.weight", {v, d}, Gaussian(v * d, seed));
  for (int l = 0; l < layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    uint32_t s = seed * 100 + l * 10;
    std::vector<float> ones(d, 1.0f);
    m.Add(p + "input_layernorm.weight", {d}, ones);
    m.Add(p + "self_attn.q_proj.weight", {d, d}, Gaussian(d * d, s + 1));
    m.Add(p + "self_attn.k_proj.weight", {d / 2, d}, Gaussian(d * d / 2, s + 2));
    m.Add(p + "self_attn.v_proj.weight", {d / 2, d}, Gaussian(d * d / 2, s + 3));
    m.Add(p + "self_attn.o_proj.weight", {d, d}, Gaussian(d * d, s + 4));
    m.Add(p + "post_attention_layernorm.weight", {d}, Gaussian(d, s + 5, 1.0f));
    m.Add(p + "mlp.gate_proj.weight", {h, d}, Gaussian(h * d, s + 6));
    m.Add(p + "mlp.down_proj.weight", {d, h}, Gaussian(h * d, s + 7));
    m.Add(p + "mlp.up_proj.weight", {h, d}, Gaussian(h * d, s + 8));
  }
  m.Add("model.norm.weight", {d}, Gaussian(d, seed + 9, 1.0f));
  return m;
}

// A llama2.c tokenizer of `vocab` tokens: <unk>, <s>, </s>, then one
// printable character each.
inline std::string TinyTokenizer(int vocab) {
  std::string b(4, '\0');
  b[0] = 1;
  for (int i = 0; i < vocab; ++i) {
    const std::string s = i == 0   ? "<unk>"
                          : i == 1 ? "\n<s>\n"
                          : i == 2 ? "\n</s>\n"
                                   : std::string(1, static_cast<char>(29 + i));
    const float score = 0;
    const int32_t len = static_cast<int32_t>(s.size());
    b.append(reinterpret_cast<const char*>(&score), 4);
    b.append(reinterpret_cast<const char*>(&len), 4);
    b += s;
  }
  return b;
}

}  // namespace tqm_test

#endif  // TQM_TESTS_TEST_UTIL_H_
