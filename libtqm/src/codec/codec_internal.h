// Test and benchmark hooks of the codecs (tqm/codec.h): not installed.

#ifndef TQM_SRC_CODEC_CODEC_INTERNAL_H_
#define TQM_SRC_CODEC_CODEC_INTERNAL_H_

namespace tqm {
namespace codec_internal {

// Which loop DecodeSeqTable and SeqTableBlockDecoder use, process-wide:
// kAuto (the default) picks AVX2 when the CPU has it. For tests and
// benchmarks, which compare the two on one machine.
enum class SeqIsa { kAuto, kPortable };
void SetSeqTableIsa(SeqIsa isa);
// True when kAuto uses the AVX2 loop on this CPU.
bool SeqTableAvx2Available();

}  // namespace codec_internal
}  // namespace tqm

#endif  // TQM_SRC_CODEC_CODEC_INTERNAL_H_
