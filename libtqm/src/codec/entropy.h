// Order-0 entropy codecs for the bytes of one chunk (format.h: kCodecRans,
// kCodecHuffman, kCodecZstd): interleaved rANS, multi-stream canonical
// Huffman, and thin wrappers over libzstd. All are pure functions over spans.
//
// The decoders take untrusted bytes. They never read or write outside the
// spans they are given, always terminate, validate the symbol tables they
// read (frequencies sum to the precision, code lengths form a complete prefix
// code) and return DataLossError for anything that does not decode to exactly
// out.size() bytes with every input byte consumed. `out` may be partly
// written when they fail. None of them records the decoded size: the caller
// knows it (the chunk record) and passes it as out.size().
//
// The encoded forms are described in spec/FORMAT.md ("Codec 2: zstd", "Codecs 3 and 4: common structure",
// "Codec 3: rans", "Codec 4: huffman"; reader rules R67-R81); the
// constants below are part of that format and frozen with it.

#ifndef TQM_SRC_ENTROPY_H_
#define TQM_SRC_ENTROPY_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace tqm {

// ---- rANS ----------------------------------------------------------------

// Appends the rANS encoding of `in` to *out. Returns InvalidArgumentError
// when in.size() > kEntropyMaxInput (the format's limit; chunks are far
// smaller). The output is never more than in.size() + 1 bytes.
absl::Status EncodeRans(absl::Span<const uint8_t> in, std::string* out);

// Decodes a rANS encoding `in` into exactly out.size() bytes.
absl::Status DecodeRans(absl::Span<const uint8_t> in, absl::Span<uint8_t> out);

// ---- Huffman -------------------------------------------------------------

// Appends the Huffman encoding of `in` to *out; same limits as EncodeRans.
// Faster to decode than rANS, but its whole-bit code lengths cost more:
// ~0.5-0.8% over the order-0 bound on quantized Gaussian weights against
// rANS's ~0.3%, and more on peaked (heavy-tailed, low-entropy) data, so
// compare sizes before choosing it. Uses codes of at most 11 bits (faster)
// unless they cost more than kHuffmanShortCodeSlack over 12-bit ones.
absl::Status EncodeHuffman(absl::Span<const uint8_t> in, std::string* out);

// Decodes a Huffman encoding `in` into exactly out.size() bytes.
absl::Status DecodeHuffman(absl::Span<const uint8_t> in, absl::Span<uint8_t> out);

// ---- Lanes ---------------------------------------------------------------

// Appends the lanes encoding of `in` to *out: the high 8 - k bits of each
// byte Huffman-coded (codes of at most 8 bits, rare high parts escaped to
// whole bytes) in 16, 32 or 64 lanes, the low k bits stored as they are; k
// and the escapes chosen by size. 0.2-0.5 % larger than EncodeHuffman on
// quantized weights, decoded about 2x faster with AVX-512 VBMI.
// Never more than in.size() + 1 bytes; same input limit as EncodeRans.
absl::Status EncodeLanes(absl::Span<const uint8_t> in, std::string* out);

// Decodes a lanes encoding `in` into exactly out.size() bytes.
absl::Status DecodeLanes(absl::Span<const uint8_t> in, absl::Span<uint8_t> out);

// ---- zstd ----------------------------------------------------------------

// Appends one zstd frame holding `in` (with its content size) to *out,
// compressed at `level` (libzstd's range, e.g. 1..19; 3 is its default).
absl::Status EncodeZstd(absl::Span<const uint8_t> in, int level, std::string* out);

// Decodes a single zstd frame `in` into exactly out.size() bytes. Rejects
// frames that do not declare their content size, declare another size, hold
// trailing bytes, or are not exactly one valid frame.
absl::Status DecodeZstd(absl::Span<const uint8_t> in, absl::Span<uint8_t> out);

// ---- Helpers -------------------------------------------------------------

// Total order-0 (empirical) entropy of `data` in bits:
// sum over byte values b of count(b) * log2(size / count(b)). Zero when
// `data` has at most one distinct byte value.
double Order0EntropyBits(absl::Span<const uint8_t> data);

// Largest input the rANS and Huffman encoders accept (2^30 bytes).
inline constexpr size_t kEntropyMaxInput = size_t{1} << 30;

namespace entropy_internal {

// First byte of a rANS or Huffman encoding.
enum EntropyMode : uint8_t {
  kModeRaw = 0,       // the bytes verbatim (empty input; incompressible data)
  kModeConstant = 1,  // one byte: every output byte has this value
  kModeCoded = 2,     // a symbol table, then the codec's payload
};

// rANS: 32-bit words, 64-bit states held in 7 bytes, 8 interleaved states,
// frequencies summing to 2^kRansPrecision, renormalized once per two symbols
// of a state.
inline constexpr int kRansPrecision = 12;
inline constexpr int kRansLanes = 8;
inline constexpr int kRansStateBytes = 7;
inline constexpr uint64_t kRansLow = uint64_t{1} << 24;  // states lie in [L, 2^32 L)

// Huffman: code lengths 1..kHuffmanMaxLength, kHuffmanStreams independent
// bit streams; stream k codes output bytes k, k + 8, k + 16, ...
inline constexpr int kHuffmanMaxLength = 12;
inline constexpr int kHuffmanStreams = 8;
// Relative size EncodeHuffman gives up for 11-bit instead of 12-bit codes.
// (An encoder choice, not part of the format.)
inline constexpr double kHuffmanShortCodeSlack = 0.0025;

// Counts of each byte value in `in`.
void Histogram(absl::Span<const uint8_t> in, uint32_t counts[256]);

// The symbol table block shared by rANS (frequencies) and Huffman (code
// lengths): the lowest and highest symbol with a nonzero value, one byte
// each, then the values of the symbols between them as adaptively
// Rice-coded zigzag differences from the previous value, LSB-first, padded
// to a byte. Every value must be <= max_value (< 2^15).
void WriteSymbolValues(const uint32_t values[256], uint32_t max_value, std::string* out);

// Reads a block written by WriteSymbolValues from in[*pos...], sets
// values[0..255] and advances *pos past it. Returns DataLossError when the
// block is cut off, lo > hi, or a value is out of [0, max_value]. `what`
// names the block in messages.
absl::Status ReadSymbolValues(absl::Span<const uint8_t> in, size_t* pos,
                              uint32_t max_value, const char* what, uint32_t values[256]);

// LEB128 numbers of at most 32 bits (stream sizes of Huffman and lanes):
// PutVarint appends the shortest form; GetVarint reads in[*pos...], accepts
// at most 5 bytes with a fifth byte <= 0x0F, advances *pos, and returns
// false when the number is cut off or too long.
void PutVarint(uint32_t v, std::string* out);
bool GetVarint(absl::Span<const uint8_t> in, size_t* pos, uint32_t* v);

// Rescales `counts` (of `total` symbols, >= 2 distinct) to frequencies that
// sum to 2^precision, every present symbol >= 1, minimizing the coded size
// sum(count * log2(2^precision / freq)).
void NormalizeFrequencies(const uint32_t counts[256], uint64_t total, int precision,
                          uint32_t freqs[256]);

// Optimal code lengths of at most `max_length` bits for `counts`
// (>= 2 distinct symbols; 2^max_length >= their number), by package-merge.
void LimitedHuffmanLengths(const uint32_t counts[256], int max_length,
                           uint8_t lengths[256]);

// Appends the raw encoding of an empty input or the constant encoding of a
// single-valued one and returns true; otherwise fills `counts` with the
// histogram of `in` and returns false (the caller codes it).
bool EncodeSimpleModes(absl::Span<const uint8_t> in, uint32_t counts[256],
                       std::string* out);

// The raw and constant modes shared by rANS and Huffman, and the coded
// mode's preconditions. `in` is non-empty. Sets *done when the chunk was
// fully decoded here (raw or constant); errors name `codec`.
absl::Status DecodeSimpleModes(const char* codec, absl::Span<const uint8_t> in,
                               absl::Span<uint8_t> out, bool* done);

// Which implementation of a decoder's inner loop to use (the one enum the
// decoders' tests and benchmarks pin them with; base/cpu.h detects the CPU
// and applies TQM_CPU in every case):
//  - kAuto: the best this CPU supports (lanes: AVX-512 VBMI, else AVX2,
//    else NEON on AArch64; Huffman: BMI2; seqtable: AVX2).
//  - kAvx2: at most AVX2 with BMI1/2 (what kAuto picks on x86 CPUs without
//    AVX-512 VBMI, such as Haswell to Alder Lake and Zen 1-3); plain C++
//    where the CPU lacks them.
//  - kPortable: plain C++ for the build's baseline target, the reference
//    the others must match status for status.
// rANS has one loop for all (BMI2 did not make it faster).
enum class Isa { kAuto, kPortable, kAvx2 };

absl::Status DecodeRansWith(Isa isa, absl::Span<const uint8_t> in,
                            absl::Span<uint8_t> out);
absl::Status DecodeHuffmanWith(Isa isa, absl::Span<const uint8_t> in,
                               absl::Span<uint8_t> out);

// Lanes: code lengths 1..kLanesMaxLength for the high parts, k <= kLanesMaxK
// low bits, 16 lanes in each of 1, 2 or 4 groups.
inline constexpr int kLanesMaxLength = 8;
inline constexpr int kLanesMaxK = 7;
// EncodeLanes's group count by chunk size (an encoder choice, not part of the
// format): each lane ends with a partly used word, about a byte, so small
// chunks take fewer lanes; four groups decode fastest (one group is bound by
// the latency of its chain: on stories260K, four groups from 8 KiB and two
// below gave +0.6 % size for +25 % speed over four from 16 KiB, two from
// 4 KiB and one below).
inline constexpr size_t kLanesFourGroupsMin = 8 * 1024;
inline constexpr size_t kLanesTwoGroupsMin = 1024;
int LanesGroupsFor(size_t n);

// Lanes encoding with k low bits (-1: chosen by size) and `groups` groups
// (0: LanesGroupsFor).
absl::Status EncodeLanesWith(absl::Span<const uint8_t> in, int k, int groups,
                             std::string* out);

absl::Status DecodeLanesWith(Isa isa, absl::Span<const uint8_t> in,
                             absl::Span<uint8_t> out);

// Whether this CPU has what the AVX-512 lanes decoder uses.
bool HaveAvx512Vbmi();
// Whether this CPU has what the AVX2 lanes decoder uses (AVX2, BMI1/2, POPCNT).
bool HaveAvx2Bmi2();
// The decoder DecodeLanesWith(isa, ...) runs on this CPU: "AVX-512", "AVX2",
// "NEON" or "portable C++".
const char* LanesDecoderName(Isa isa);

// Huffman encoding with codes of at most `max_length` bits (8..12), or 0
// for EncodeHuffman's choice between 11 and 12.
absl::Status EncodeHuffmanWithLimit(absl::Span<const uint8_t> in, int max_length,
                                    std::string* out);

// EncodeHuffman's encoding of `in` into *out and, when it takes 12-bit codes
// and `short_out` is not null, the encoding with codes of at most 11 bits
// into *short_out (left untouched otherwise). One histogram serves both.
absl::Status EncodeHuffmanAndShortCodes(absl::Span<const uint8_t> in, std::string* out,
                                        std::string* short_out);

// Whether this CPU has BMI2 (and this build can use it).
bool HaveBmi2();

}  // namespace entropy_internal
}  // namespace tqm

#endif  // TQM_SRC_ENTROPY_H_
