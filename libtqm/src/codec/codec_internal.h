// Test and benchmark hooks of the codecs (tqm/codec.h): not installed.

#ifndef TQM_SRC_CODEC_CODEC_INTERNAL_H_
#define TQM_SRC_CODEC_CODEC_INTERNAL_H_

#include "codec/entropy.h"

namespace tqm {
namespace codec_internal {

// Which loop DecodeSeqTable and SeqTableBlockDecoder use, process-wide:
// kAuto (the default) and kAvx2 pick AVX2 when the CPU has it, kPortable the
// plain C++ loop. For tests and benchmarks, which compare the two on one
// machine.
void SetSeqTableIsa(entropy_internal::Isa isa);
// True when kAuto uses the AVX2 loop on this CPU.
bool SeqTableAvx2Available();

}  // namespace codec_internal
}  // namespace tqm

#endif  // TQM_SRC_CODEC_CODEC_INTERNAL_H_
