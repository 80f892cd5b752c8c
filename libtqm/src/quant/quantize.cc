// Per-tensor / per-row / per-group B-bit affine quantization (spec/WRITING.md,
// "Quantization"). All arithmetic is float32 with the default rounding mode
// (round half to even), matching the paper's torch implementation.

#include "tqm/quantize.h"
#include "quant/quantize_internal.h"

#include <cfenv>
#include <cmath>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "absl/strings/str_format.h"

namespace tqm {

absl::StatusOr<Affine> ChooseAffine(absl::Span<const float> x, int bits) {
  if (bits < 1 || bits > 8) {
    return absl::InvalidArgumentError(absl::StrFormat("bit width %d is not 1..8", bits));
  }
  const float levels = static_cast<float>((1 << bits) - 1);
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
    a.scale = range / levels;
    if (!(a.scale > 0.0f)) {
      // (max - min) / M underflowed to zero: no valid pair exists
      // (spec/WRITING.md, "Quantization"). Only subnormal ranges do this.
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

namespace {

// std::nearbyint for float32 in the default rounding mode (half to even),
// without a libm call, so that the quantization loop vectorizes: below 2^23
// adding and subtracting 2^23 leaves |v| rounded to an integer by the FPU's
// own rounding; from 2^23 on every float32 is an integer already. The sign
// is put back afterwards (rounding is symmetric; -0.3 gives -0.0 as
// nearbyint does). Bit-identical to std::nearbyint for every float
// (format_test checks that).
inline float RoundHalfEven(float v) {
  constexpr float kTwo23 = 8388608.0f;
  const float a = std::fabs(v);
  const float r = a < kTwo23 ? (a + kTwo23) - kTwo23 : a;
  return std::copysign(r, v);
}

}  // namespace

namespace quantize_internal {
float RoundHalfEven(float v) { return tqm::RoundHalfEven(v); }
}  // namespace quantize_internal

void QuantizeAffine(absl::Span<const float> x, Affine a, absl::Span<uint8_t> out,
                    int bits) {
  const float scale = a.scale, zero = a.zero;
  const float top = static_cast<float>((1 << bits) - 1);
  const float* in = x.data();
  uint8_t* o = out.data();
  size_t i = 0;
#ifdef __SSE2__
  // The same operations four lanes at a time (SSE2 is baseline on x86-64):
  // divide, RoundHalfEven, add the zero point, clamp, convert (exact: the
  // values are integers in [0, 255]), pack 16 to bytes.
  const __m128 vs = _mm_set1_ps(scale), vz = _mm_set1_ps(zero);
  const __m128 two23 = _mm_set1_ps(8388608.0f), sign = _mm_set1_ps(-0.0f);
  const __m128 lo = _mm_setzero_ps(), hi = _mm_set1_ps(top);
  auto quad = [&](const float* p) {
    const __m128 v = _mm_div_ps(_mm_loadu_ps(p), vs);
    const __m128 av = _mm_andnot_ps(sign, v);
    const __m128 small = _mm_cmplt_ps(av, two23);
    const __m128 r = _mm_or_ps(_mm_and_ps(small, _mm_sub_ps(_mm_add_ps(av, two23), two23)),
                               _mm_andnot_ps(small, av));
    __m128 q = _mm_add_ps(_mm_or_ps(r, _mm_and_ps(sign, v)), vz);
    q = _mm_min_ps(_mm_max_ps(q, lo), hi);
    return _mm_cvttps_epi32(q);
  };
  for (; i + 16 <= x.size(); i += 16) {
    const __m128i a16 = _mm_packs_epi32(quad(in + i), quad(in + i + 4));
    const __m128i b16 = _mm_packs_epi32(quad(in + i + 8), quad(in + i + 12));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i), _mm_packus_epi16(a16, b16));
  }
#endif
  for (; i < x.size(); ++i) {
    float q = RoundHalfEven(in[i] / scale) + zero;
    q = q < 0.0f ? 0.0f : (q > top ? top : q);
    o[i] = static_cast<uint8_t>(q);
  }
}

void DequantizeAffine(absl::Span<const uint8_t> q, Affine a, absl::Span<float> out) {
  const float scale = a.scale, zero = a.zero;
  for (size_t i = 0; i < q.size(); ++i) {
    out[i] = scale * (static_cast<float>(q[i]) - zero);
  }
}

}  // namespace tqm
