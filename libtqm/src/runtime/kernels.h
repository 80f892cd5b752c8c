// Inner loops of the CPU runtime: dot products over float32 and uint8
// weights, and the fused kernel that decodes a seqtable (or stored) chunk
// straight into per-row dot products without writing the decoded bytes
// anywhere. AVX2+FMA versions are chosen at run time when the CPU has them.

#ifndef TQM_EXAMPLES_RUNTIME_KERNELS_H_
#define TQM_EXAMPLES_RUNTIME_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace tqm {
namespace rt {

// True when the AVX2+FMA kernels are in use (false forces the portable ones
// for tests: SetPortableKernels).
bool UsingAvx2();
void SetPortableKernels(bool portable);

// sum_i w[i] * x[i].
float DotF32(const float* w, const float* x, size_t n);
// sum_i float(q[i]) * x[i]: the uint8 half of an affine dot product,
// dot(x, scale * (q - zero)) = scale * (DotU8(q, x) - zero * Sum(x)).
float DotU8(const uint8_t* q, const float* x, size_t n);
float Sum(const float* x, size_t n);

// Decodes one chunk of a row-major uint8
// matrix with `cols` columns, whose decoded bytes are elements
// [begin, begin + size) of the matrix, and adds the DotU8 partial sum of each
// segment it covers to acc[segment - seg0]. A segment is a whole row when
// `group` is 0 (per-tensor and per-row parameters: segment = row), else a
// group of `group` consecutive columns within a row (the last one of a row
// may be shorter): segment = row * ceil(cols / group) + col / group, the
// index of its pair in TensorInfo::affine (TensorInfo::ParamIndex). The
// decoded bytes go through an 8 KiB buffer that stays
// in L1 (seqtable, tqm::SeqTableBlockDecoder) or are read in place (stored);
// other codecs decode into a per-thread buffer
// of one chunk first. Validates like tqm::DecodeSeqTable:
// DataLossError on an invalid code, a cut-off escape, or a payload whose
// length does not match `size`.
absl::Status FusedChunkDot(uint8_t codec, absl::Span<const uint8_t> in,
                           absl::Span<const uint32_t> table, uint64_t begin,
                           uint32_t size, uint64_t cols, const float* x, float* acc,
                           uint64_t seg0, uint64_t group = 0);

}  // namespace rt
}  // namespace tqm

#endif  // TQM_EXAMPLES_RUNTIME_KERNELS_H_
