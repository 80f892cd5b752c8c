// Next-token sampling as llama2.c's run.c does it: greedy argmax at
// temperature 0, otherwise softmax(logits / temperature) sampled from the
// smallest set of tokens whose probability exceeds top-p (all tokens when
// top-p is outside (0, 1)), with run.c's xorshift* generator.

#ifndef TQM_EXAMPLES_RUNTIME_SAMPLER_H_
#define TQM_EXAMPLES_RUNTIME_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace tqm {
namespace rt {

// Index of the largest value (the first one on ties).
int Argmax(absl::Span<const float> v);

// In place: v = softmax(v).
void Softmax(absl::Span<float> v);

class Sampler {
 public:
  Sampler(float temperature, float topp, uint64_t seed);

  // Chooses the next token from `logits` (not modified).
  int Sample(absl::Span<const float> logits);

  // run.c's random_f32 (xorshift*), exposed for tests.
  float RandomF32();

 private:
  uint32_t RandomU32();

  float temperature_;
  float topp_;
  uint64_t state_;
  std::vector<float> probs_;
  std::vector<std::pair<float, int>> candidates_;
};

}  // namespace rt
}  // namespace tqm

#endif  // TQM_EXAMPLES_RUNTIME_SAMPLER_H_
