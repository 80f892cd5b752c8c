// B-bit affine quantization (B = 1..8, default 8), exactly as spec/WRITING.md
// "Quantization" defines it: with M = 2^B - 1, scale = (max - min) / M,
// zero = round(-min / scale), q = clamp(round(x / scale) + zero, 0, M), all
// in float32 with round-half-to-even. Dequantized value: scale * (q - zero).

#ifndef TQM_QUANTIZE_H_
#define TQM_QUANTIZE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace tqm {

struct Affine {
  float scale = 1.0f;
  float zero = 0.0f;  // integral value, stored as float32
};

// Chooses the affine parameters of `x`. Returns InvalidArgument when `x`
// is empty, holds a NaN or an infinity, or its range overflows float32.
// A constant tensor (max == min) gets scale = |min| (1 when min == 0) so that
// every value dequantizes exactly.
absl::StatusOr<Affine> ChooseAffine(absl::Span<const float> x, int bits = 8);

// Quantizes `x` into `out` (same length) with `a`: codes 0 .. 2^bits - 1.
void QuantizeAffine(absl::Span<const float> x, Affine a, absl::Span<uint8_t> out,
                    int bits = 8);

// Dequantizes `q` into `out` (same length) with `a`.
void DequantizeAffine(absl::Span<const uint8_t> q, Affine a, absl::Span<float> out);

}  // namespace tqm

#endif  // TQM_QUANTIZE_H_
