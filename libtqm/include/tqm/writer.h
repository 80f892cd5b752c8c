// Writing a .tqm file: quantize the tensors of a TensorSource, choose the
// sequence table that minimises the file, encode every chunk with the
// smallest codec, and write the file atomically.
//
// Memory: the writer holds one tensor at a time (plus the group counts of
// the table search, or its sample of at most 16 MiB); it reads each tensor
// from the source twice when the sampled table search stops early (the usual
// case for real weights), up to four times when it counts every group.

#ifndef TQM_WRITER_H_
#define TQM_WRITER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tqm/metadata.h"
#include "tqm/source.h"

namespace tqm {

// What one (scale, zero) pair covers: the whole tensor, one row (dims[0]
// slice), or `PackOptions::group_size` consecutive elements along the last
// dimension (the input dimension of a weight matrix; a row's last group
// may be shorter).
enum class Granularity { kTensor, kRow, kGroup };

// How the writer picks each chunk's codec among those it tries (stored,
// seqtable when the table is non-empty, lanes, Huffman, rANS, and zstd for
// kSize):
//  kSize:     the smallest encoding (ties: the faster codec).
//  kBalanced: the fastest-decoding codec whose size is within 2 % of the
//             smallest (decode speed order: stored, seqtable, lanes, Huffman
//             with codes of at most 11 bits, Huffman with EncodeHuffman's
//             choice of 11 or 12 bits, rANS, zstd). The order is that of a
//             CPU with AVX-512 VBMI; with AVX2 only, lanes decodes about as
//             fast as Huffman, in plain C++ (x86 without AVX2, other
//             CPUs but AArch64) 4-5x slower (PackOptions::lanes).
//  kSpeed:    the fastest codec that saves at least 3 % over stored; stored
//             when none does (same order).
// Float32 tensors are always stored (used in place from the mapping).
enum class Profile { kSize, kBalanced, kSpeed };

// The quantization grid of one tensor: code width and what one (scale,
// zero) pair covers, as PackOptions::bits / granularity / group_size.
struct QuantSetting {
  int bits = 8;
  Granularity granularity = Granularity::kTensor;
  uint32_t group_size = 0;  // kGroup only
};

// The CPU class whose decode speeds order the codecs for kBalanced and kSpeed
// (measured per class with TQM_CPU; bench/results/2026-12-08-target-*.txt).
// Only a writer choice: the file does not record it, and every reader
// decodes every file whatever the target.
//  kAvx512:   the order above, lanes first among the entropy codecs (the
//             default and the behaviour before targets existed).
//  kAvx2:     lanes ranks with 12-bit Huffman, so 11-bit Huffman is
//             preferred to it and the smaller of lanes and Huffman is kept:
//             the smallest files that decode at least at Huffman speed on
//             AVX2 CPUs. (Since the AVX2 lanes decoder's rework, lanes
//             decodes 1.6-1.8x faster than Huffman there, so kAvx512 serves
//             AVX2 CPUs well too; bench/results/2026-12-08-lanes-avx2*.txt.)
//  kPortable: no lanes chunks (plain C++ decodes lanes 3-5x slower than
//             Huffman).
enum class DecodeTarget { kAvx512, kAvx2, kPortable };

struct PackProgress {
  int pass = 0;            // 1: counting table groups, 2: encoding
  size_t tensor = 0;       // tensors done in this pass
  size_t tensors = 0;      // total tensors
  uint64_t bytes_done = 0; // float32 input bytes done in this pass
  uint64_t bytes_total = 0;
};

struct PackOptions {
  // Quantize 1-D tensors (norms, biases) too; by default they stay float32.
  bool quantize_all = false;
  // Per-row applies to tensors of 2 or more dimensions; 1-D tensors that are
  // quantized (quantize_all) always get one affine pair.
  Granularity granularity = Granularity::kTensor;
  // Elements per group for Granularity::kGroup (1 to format::kMaxGroupSize).
  uint32_t group_size = 0;
  // Code width of quantized tensors, 1..8. Below 8 the codes use only the
  // low `bits` bits of each byte and the entropy codecs store what they use
  // (the file records `bits`, format 1.3).
  int bits = 8;
  // Per-tensor grids by tensor name: a float tensor named here that is
  // quantized gets this grid instead of bits / granularity / group_size
  // (the file records each tensor's bits and storage, format 1.3; the
  // tqm.bits and tqm.granularity metadata keep the options' defaults).
  // Names that match no tensor are InvalidArgument. Chosen per tensor by
  // --target-kl (quant/target_kl.h).
  std::map<std::string, QuantSetting> tensor_settings;
  // Tensors for which this returns true are stored as they are in the
  // source, never quantized: float32 as F32, other dtypes verbatim (RAW
  // storage, format 1.3). Non-float tensors (integers, bool, F64), 0-d and
  // empty tensors are always stored verbatim. May be empty.
  std::function<bool(const std::string& name)> keep;
  // Decoded bytes per chunk (a multiple of 4, at most
  // format::kMaxChunkDecodedSize).
  uint32_t chunk_size = format::kDefaultChunkSize;
  Profile profile = Profile::kBalanced;
  // Try the entropy codecs (Huffman, rANS; zstd in kSize). Off: stored and
  // seqtable only, as in format 1.0 files.
  bool entropy = true;
  // Also try the lanes codec (format 1.2; needs `entropy`). It decodes about
  // 2x faster than Huffman with AVX-512 VBMI (Zen 4 and later, Ice Lake and
  // later Xeons), about as fast with AVX2 only, and 4-5x slower in plain C++
  // (x86 without AVX2; architectures other than AArch64, whose NEON decoder
  // has not been timed on Arm hardware). Off: a format 1.1 file.
  bool lanes = true;
  // Which CPU class the codec choice serves (DecodeTarget).
  DecodeTarget target = DecodeTarget::kAvx512;
  // zstd level tried by Profile::kSize (0 disables zstd).
  int zstd_level = 19;
  // Threads encoding chunks in parallel (0 = all cores).
  unsigned threads = 0;
  // Upper bound on sequence-table entries (0 disables the seqtable codec).
  uint32_t max_table_entries = format::kMaxTableEntries;
  // Memory bound for counting table groups: at most this many distinct
  // groups are tracked (about 20 bytes each); past it, rare groups are pruned
  // (lossy counting). The default, 2^22, keeps counting under ~100 MiB for
  // any model size. From 2^17 up the groups are counted (on the pack threads)
  // in 2 to 64 fixed hash partitions sharing the bound, 64 for the default;
  // the result never depends on `threads`. When the quantized tensors hold
  // no more groups than the bound and at most 2^22, they are all held (4
  // bytes each, twice while sorting) and counted exactly by sorting.
  size_t max_counted_groups = size_t{1} << 22;
  // Sampled table search. When the quantized tensors hold at least this many
  // 4-byte groups, the writer first sizes the best table on a deterministic
  // sample (a slice of 1/16 of every chunk, at most 16 MiB; past that, of
  // evenly spaced chunks) with the table's hits estimated optimistically, and
  // keeps no table, without counting every group, when even that estimate
  // saves less than the table costs (as on Gaussian-like weights). Smaller
  // inputs always get the full search. 0: always sample first; UINT64_MAX:
  // never (always the full search). The file does not depend on `threads`.
  uint64_t table_sample_min_groups = uint64_t{1} << 20;
  // Extra metadata appended after the source's own (same key replaces).
  std::vector<MetaEntry> extra_metadata;
  // Called after each tensor of each pass; may be empty.
  std::function<void(const PackProgress&)> progress;
};

struct PackStats {
  size_t tensors = 0;
  size_t quantized_tensors = 0;
  size_t raw_tensors = 0;          // stored verbatim in their source dtype
  uint64_t weights = 0;            // total elements
  uint64_t source_bytes = 0;       // tensor bytes in their source dtype
  uint64_t f32_bytes = 0;          // 4 * weights
  uint64_t int8_bytes = 0;         // u8 tensors at 1 byte + the others' bytes
  uint64_t quantized_int8_bytes = 0;  // the u8 tensors alone
  uint64_t file_bytes = 0;         // size of the written file
  uint64_t index_bytes = 0;        // header + directory + metadata + index
  uint32_t table_entries = 0;
  uint64_t groups = 0;             // 4-byte groups in quantized tensors
  uint64_t escaped_groups = 0;     // of those, not in the table
  uint64_t group_count_prunes = 0; // times the bounded group counter pruned
  // The sampled table search stopped early (PackOptions::
  // table_sample_min_groups): no table; seqtable_only_bytes is then the
  // no-table figure (every group escaped), not the best-table one.
  bool table_search_skipped = false;
  uint64_t chunks_by_codec[8] = {};  // indexed by format::Codec
  uint64_t chunks_stored = 0;
  uint64_t chunks_seqtable = 0;
  // Bytes of the quantized tensors' chunks plus table if every one of them
  // used seqtable (the paper's scheme with our escape), with the table size
  // best for that scheme; for comparison with what the writer chose.
  uint64_t seqtable_only_bytes = 0;
  uint32_t seqtable_only_table_entries = 0;
  double seconds = 0;
};

// Packs `source` into `out_path`. The file is written to a temporary file
// in the same directory and renamed over `out_path` only when complete, so
// an interrupted pack leaves `out_path` as it was.
absl::StatusOr<PackStats> Pack(TensorSource& source, const std::string& out_path,
                               const PackOptions& options);

// Packs `source` into memory (tests, golden vectors).
absl::StatusOr<std::string> PackToString(TensorSource& source,
                                         const PackOptions& options,
                                         PackStats* stats = nullptr);

}  // namespace tqm

#endif  // TQM_WRITER_H_
