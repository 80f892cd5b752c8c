// Deterministic weights whose quantized 4-byte groups repeat, shared by the
// tests (test_util.h) and the fuzz seed-corpus generator (no gtest here).

#ifndef TQM_TESTS_REPEATING_PATTERN_H_
#define TQM_TESTS_REPEATING_PATTERN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tqm_test {

// Values on four levels in 4-byte patterns, with about one value in
// `other_one_in` replaced by a scattered other value: quantized, the 4-byte
// groups repeat (seqtable chunks) and the scattered values become escapes.
// Deterministic by seed.
inline std::vector<float> RepeatingPattern(size_t n, uint32_t seed,
                                           uint32_t other_one_in = 7) {
  std::vector<float> v(n);
  uint32_t s = seed;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1103515245u + 12345u;
    v[i] = (i % 4) * 0.25f - 0.5f;
    if ((s >> 16) % other_one_in == 0) {
      v[i] = static_cast<float>((s >> 8) % 255) / 255.0f - 0.5f;
    }
  }
  return v;
}

}  // namespace tqm_test

#endif  // TQM_TESTS_REPEATING_PATTERN_H_
