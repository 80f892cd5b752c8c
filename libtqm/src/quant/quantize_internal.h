// Test hooks of the quantizer (tqm/quantize.h): not installed.

#ifndef TQM_SRC_QUANT_QUANTIZE_INTERNAL_H_
#define TQM_SRC_QUANT_QUANTIZE_INTERNAL_H_

namespace tqm {
namespace quantize_internal {
// The rounding QuantizeAffine uses: std::nearbyint in the default rounding
// mode, without a libm call. Exposed for tests.
float RoundHalfEven(float v);
}  // namespace quantize_internal
}  // namespace tqm

#endif  // TQM_SRC_QUANT_QUANTIZE_INTERNAL_H_
