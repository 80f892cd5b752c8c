// Per-tensor / per-row 8-bit affine quantization (spec/FORMAT.md,
// "Quantization"). All arithmetic is float32 with the default rounding mode
// (round half to even), matching the paper's torch implementation.

#include "tqm/quantize.h"

#include <cfenv>
#include <cmath>

#include "absl/strings/str_format.h"

namespace tqm {

absl::StatusOr<Affine> ChooseAffine(absl::Span<const float> x) {
  if (x.empty()) return absl::InvalidArgumentError("cannot quantize an empty tensor");
  float lo = x[0], hi = x[0];
  for (size_t i = 0; i < x.size(); ++i) {
    float v = x[i];
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("non-finite value %f at element %d", v, i));
    }
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  Affine a;
  if (hi == lo) {
    a.scale = lo == 0.0f ? 1.0f : std::fabs(lo);
  } else {
    float range = hi - lo;
    if (!std::isfinite(range)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("value range [%g, %g] overflows float32", lo, hi));
    }
    a.scale = range / 255.0f;
    if (!(a.scale > 0.0f)) {
      // (max - min) / 255 underflowed to zero: no valid pair exists
      // (spec/FORMAT.md, "Quantization"). Only subnormal ranges do this.
      return absl::InvalidArgumentError(absl::StrFormat(
          "value range [%g, %g] is too small to quantize (scale underflows)", lo, hi));
    }
  }
  float z = std::nearbyint(-lo / a.scale);
  if (!std::isfinite(z)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("zero point of range [%g, %g] is not finite", lo, hi));
  }
  a.zero = z + 0.0f;  // -0.0 becomes +0.0: one encoding for zero
  return a;
}

void QuantizeAffine(absl::Span<const float> x, Affine a, absl::Span<uint8_t> out) {
  const float scale = a.scale, zero = a.zero;
  for (size_t i = 0; i < x.size(); ++i) {
    float q = std::nearbyint(x[i] / scale) + zero;
    q = q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q);
    out[i] = static_cast<uint8_t>(q);
  }
}

void DequantizeAffine(absl::Span<const uint8_t> q, Affine a, absl::Span<float> out) {
  const float scale = a.scale, zero = a.zero;
  for (size_t i = 0; i < q.size(); ++i) {
    out[i] = scale * (static_cast<float>(q[i]) - zero);
  }
}

}  // namespace tqm
