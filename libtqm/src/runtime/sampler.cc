// Sampling (sampler.h), following run.c's sample_mult / sample_topp.

#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

namespace tqm {
namespace rt {

int Argmax(absl::Span<const float> v) {
  int best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = static_cast<int>(i);
  }
  return best;
}

void Softmax(absl::Span<float> v) {
  if (v.empty()) return;
  float max = *std::max_element(v.begin(), v.end());
  float sum = 0;
  for (float& x : v) {
    x = std::exp(x - max);
    sum += x;
  }
  for (float& x : v) x /= sum;
}

Sampler::Sampler(float temperature, float topp, uint64_t seed)
    : temperature_(temperature), topp_(topp), state_(seed == 0 ? 1 : seed) {}

uint32_t Sampler::RandomU32() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return static_cast<uint32_t>((state_ * 0x2545F4914F6CDD1Dull) >> 32);
}

float Sampler::RandomF32() { return (RandomU32() >> 8) / 16777216.0f; }

int Sampler::Sample(absl::Span<const float> logits) {
  if (temperature_ == 0.0f) return Argmax(logits);
  probs_.assign(logits.begin(), logits.end());
  for (float& p : probs_) p /= temperature_;
  Softmax(absl::MakeSpan(probs_));
  const float coin = RandomF32();
  const int n = static_cast<int>(probs_.size());
  if (topp_ <= 0 || topp_ >= 1) {
    float cdf = 0;
    for (int i = 0; i < n; ++i) {
      cdf += probs_[i];
      if (coin < cdf) return i;
    }
    return n - 1;
  }
  // Top-p: drop tokens that cannot be in the nucleus, sort the rest.
  const float cutoff = (1.0f - topp_) / static_cast<float>(n - 1);
  candidates_.clear();
  for (int i = 0; i < n; ++i) {
    if (probs_[i] >= cutoff) candidates_.push_back({probs_[i], i});
  }
  std::sort(candidates_.begin(), candidates_.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  float cum = 0;
  size_t last = candidates_.size() - 1;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    cum += candidates_[i].first;
    if (cum > topp_) {
      last = i;
      break;
    }
  }
  const float r = coin * cum;
  float cdf = 0;
  for (size_t i = 0; i <= last; ++i) {
    cdf += candidates_[i].first;
    if (r < cdf) return candidates_[i].second;
  }
  return candidates_[last].second;
}

}  // namespace rt
}  // namespace tqm
