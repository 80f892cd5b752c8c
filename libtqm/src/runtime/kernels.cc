// Dot-product and fused-decode kernels (kernels.h). The dot products have a
// portable version and, compiled with a target attribute so that the rest of
// the build needs no -mavx2, an AVX2+FMA one chosen once at run time. The
// fused seqtable kernel is libtqm's block decoder feeding either.

#include "runtime/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/cpu.h"
#include "tqm/codec.h"
#include "tqm/format.h"

namespace tqm {
namespace rt {
namespace {

std::atomic<bool> g_portable{false};

// ---- portable ----

float DotF32Portable(const float* w, const float* x, size_t n) {
  float s[8] = {0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += w[i + k] * x[i + k];
  }
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += w[i] * x[i];
  return t;
}

float DotU8Portable(const uint8_t* q, const float* x, size_t n) {
  float s[8] = {0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) s[k] += static_cast<float>(q[i + k]) * x[i + k];
  }
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; ++i) t += static_cast<float>(q[i]) * x[i];
  return t;
}

using DotFn = float (*)(const uint8_t*, const float*, size_t);

// How a row of `cols` columns splits into segments of `group` columns (the
// whole row when group is 0 or at least cols).
struct Segments {
  uint64_t cols, group, per_row;
  Segments(uint64_t c, uint64_t g)
      : cols(c), group(g == 0 || g > c ? c : g), per_row((cols + group - 1) / group) {}
};

// Adds the dot products of the decoded bytes q[0, n) (matrix elements
// [e, e + n)) to the segments they fall in; returns e + n.
inline uint64_t AddSegments(const Segments& s, const uint8_t* q, size_t n, uint64_t e,
                            const float* x, float* acc, uint64_t seg0, DotFn dot) {
  size_t k = 0;
  if (s.per_row == 1) {
    // Whole rows (per-tensor and per-row parameters): no division by group.
    while (k < n) {
      const uint64_t row = e / s.cols, col = e % s.cols;
      const uint64_t m = std::min<uint64_t>(s.cols - col, n - k);
      acc[row - seg0] += dot(q + k, x + col, m);
      e += m;
      k += m;
    }
    return e;
  }
  while (k < n) {
    const uint64_t row = e / s.cols, col = e % s.cols;
    const uint64_t in_seg = col % s.group;
    const uint64_t m =
        std::min<uint64_t>(std::min(s.group - in_seg, s.cols - col), n - k);
    acc[row * s.per_row + col / s.group - seg0] += dot(q + k, x + col, m);
    e += m;
    k += m;
  }
  return e;
}

absl::Status FusedStored(absl::Span<const uint8_t> in, uint64_t begin, uint32_t size,
                         const Segments& segs, const float* x, float* acc, uint64_t seg0,
                         DotFn dot) {
  if (in.size() != size) {
    return absl::DataLossError(
        absl::StrFormat("stored chunk has %d bytes, expected %d", in.size(), size));
  }
  AddSegments(segs, in.data(), size, begin, x, acc, seg0, dot);
  return absl::OkStatus();
}

// Seqtable: decodes a block of groups at a time into a buffer that stays in
// L1 (tqm::SeqTableBlockDecoder, the fast loop of DecodeSeqTable with the
// same validation) and runs the dot product over it, one row segment at a
// time; a block keeps the dot product's loop long. 8 KiB blocks measured 12 %
// faster than 2 KiB ones on a 1 GiB model (tqm-runbench matvec); 16 KiB
// gained another 2-3 %, within noise, and crowds x out of L1 on wide rows.
constexpr size_t kBlockGroups = 2048;  // 8 KiB of weights

absl::Status FusedSeqTable(absl::Span<const uint8_t> in, absl::Span<const uint32_t> table,
                           uint64_t begin, uint32_t size, const Segments& segs,
                           const float* x, float* acc, uint64_t seg0, DotFn dot) {
  alignas(64) uint8_t buf[kBlockGroups * 4];
  uint64_t e = begin;  // matrix element of buf[0]
  SeqTableBlockDecoder decoder(in, table, size);
  while (!decoder.done()) {
    const absl::StatusOr<size_t> len = decoder.Next(absl::MakeSpan(buf));
    if (!len.ok()) return len.status();
    e = AddSegments(segs, buf, *len, e, x, acc, seg0, dot);
  }
  return absl::OkStatus();
}

// ---- AVX2 + FMA ----
#if defined(__x86_64__) || defined(__i386__)
#define TQM_AVX2 __attribute__((target("avx2,fma")))

TQM_AVX2 inline float HSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

TQM_AVX2 inline __m256 U8x8(__m128i v) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
}

TQM_AVX2 float DotF32Avx2(const float* w, const float* x, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
  }
  float s = HSum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

// Adds the 32 weights in `v` times x[0..32) to the four accumulators.
TQM_AVX2 inline void Fma32(__m256i v, const float* x, __m256& a0, __m256& a1, __m256& a2,
                           __m256& a3) {
  const __m128i lo = _mm256_castsi256_si128(v);
  const __m128i hi = _mm256_extracti128_si256(v, 1);
  a0 = _mm256_fmadd_ps(U8x8(lo), _mm256_loadu_ps(x), a0);
  a1 = _mm256_fmadd_ps(U8x8(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + 8), a1);
  a2 = _mm256_fmadd_ps(U8x8(hi), _mm256_loadu_ps(x + 16), a2);
  a3 = _mm256_fmadd_ps(U8x8(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + 24), a3);
}

TQM_AVX2 float DotU8Avx2(const uint8_t* q, const float* x, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    Fma32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i)), x + i, a0, a1, a2,
          a3);
  }
  for (; i + 8 <= n; i += 8) {
    a0 = _mm256_fmadd_ps(U8x8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i))),
                         _mm256_loadu_ps(x + i), a0);
  }
  float s = HSum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += static_cast<float>(q[i]) * x[i];
  return s;
}

#endif

bool Avx2() { return !g_portable.load(std::memory_order_relaxed) && cpu::HasAvx2Fma(); }

}  // namespace

bool UsingAvx2() { return Avx2(); }
void SetPortableKernels(bool portable) { g_portable.store(portable); }

float DotF32(const float* w, const float* x, size_t n) {
#if defined(__x86_64__) || defined(__i386__)
  if (Avx2()) return DotF32Avx2(w, x, n);
#endif
  return DotF32Portable(w, x, n);
}

float DotU8(const uint8_t* q, const float* x, size_t n) {
#if defined(__x86_64__) || defined(__i386__)
  if (Avx2()) return DotU8Avx2(q, x, n);
#endif
  return DotU8Portable(q, x, n);
}

float Sum(const float* x, size_t n) {
  float s = 0;
  for (size_t i = 0; i < n; ++i) s += x[i];
  return s;
}

absl::Status FusedChunkDot(uint8_t codec, absl::Span<const uint8_t> in,
                           absl::Span<const uint32_t> table, uint64_t begin,
                           uint32_t size, uint64_t cols, const float* x, float* acc,
                           uint64_t seg0, uint64_t group) {
  if (cols == 0) return absl::InvalidArgumentError("fused dot: zero columns");
  const Segments segs(cols, group);
  DotFn dot = &DotU8Portable;
#if defined(__x86_64__) || defined(__i386__)
  if (Avx2()) dot = &DotU8Avx2;
#endif
  switch (codec) {
    case format::kCodecStored:
      return FusedStored(in, begin, size, segs, x, acc, seg0, dot);
    case format::kCodecSeqTable:
      return FusedSeqTable(in, table, begin, size, segs, x, acc, seg0, dot);
    default: {
      // Entropy-coded chunks: decode into a per-thread buffer of one chunk
      // (at most format::kMaxChunkDecodedSize), then the stored path.
      thread_local std::vector<uint8_t> buf;
      buf.resize(size);
      absl::Status s = DecodeChunkBytes(codec, in, table, absl::MakeSpan(buf));
      if (!s.ok()) return s;
      return FusedStored(buf, begin, size, segs, x, acc, seg0, dot);
    }
  }
}

}  // namespace rt
}  // namespace tqm
