// The one place that asks the CPU what it can do. Every run-time dispatch
// (lanes, Huffman, seqtable decoders, checksums, the runtime's kernels)
// goes through these queries,
// so that TQM_CPU caps them all alike.
//
// TQM_CPU=avx512|avx2|portable (read once, at the first query) caps the
// instruction set the decoders use: for tests and benchmarks of the slower
// paths, and for users who must reproduce a slower machine. Unset, empty or
// "native": whatever the CPU has. Any other value is treated as "portable"
// and reported by CpuCapName().

#ifndef TQM_SRC_CPU_H_
#define TQM_SRC_CPU_H_

namespace tqm {
namespace cpu {

// Ordered: each level includes the ones below it.
enum class Level { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The cap from TQM_CPU (kAvx512 when unset: no cap).
Level Cap();
// The name of the cap in force: "native", "avx512", "avx2" or "portable".
const char* CapName();

// x86: AVX2 + BMI1/BMI2 + POPCNT + LZCNT (Haswell, Zen 1 and later), allowed
// by the cap.
bool HasAvx2();
// x86: AVX-512 F/BW/VL/VBMI/VBMI2 + the AVX2 set (Ice Lake, Zen 4 and
// later), allowed by the cap.
bool HasAvx512Vbmi();
// x86: AVX-512 F/BW/VL without VBMI (Skylake-SP), allowed by the cap: what
// the checksum kernel needs.
bool HasAvx512();
// x86: AVX2 + FMA (the runtime's float kernels), allowed by the cap.
bool HasAvx2Fma();
// AArch64 NEON (always there on AArch64), allowed unless TQM_CPU=portable.
bool HasNeon();

}  // namespace cpu
}  // namespace tqm

#endif  // TQM_SRC_CPU_H_
