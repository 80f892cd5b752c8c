// What tqm-inspect reports about a file, as data: Inspect() fills a struct
// from an open Reader; FormatText / FormatJson print it. No format logic
// lives in the tool.

#ifndef TQM_INSPECT_H_
#define TQM_INSPECT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tqm/reader.h"

namespace tqm {

struct TensorReport {
  std::string name;
  std::vector<uint64_t> dims;
  std::string source_dtype;  // "f32", "f16", "bf16", "q8_0", "i64", "bool", ...
  // "f32", "raw" (verbatim source bytes), or "uB/tensor", "uB/row",
  // "uB/group:G" (B-bit codes; one pair per tensor, row or G elements).
  std::string storage;
  int32_t layer = -1;
  uint64_t numel = 0;
  uint64_t decoded_bytes = 0;
  uint64_t encoded_bytes = 0;
  uint64_t chunks_by_codec[256] = {};
  double bits_per_weight = 0;  // encoded bits / numel
};

struct InspectReport {
  std::string file;
  uint64_t file_size = 0;
  FileHeader header;
  std::vector<SectionInfo> sections;
  std::vector<MetaEntry> metadata;
  uint32_t table_entries = 0;
  uint64_t table_bytes = 0;
  std::vector<TensorReport> tensors;
  uint64_t weights = 0;
  uint64_t decoded_bytes = 0;
  uint64_t encoded_bytes = 0;
  uint64_t chunks_by_codec[256] = {};
  double bits_per_weight = 0;  // whole file bits / weights
  // Set by VerifyInto (tqm-inspect --verify).
  bool verified = false;
  std::string verify_error;  // empty when verification passed
  double verify_seconds = 0;
  unsigned verify_threads = 0;
  // The decoders that ran on this CPU under TQM_CPU (ActiveDecoders).
  std::string decoders;
};

InspectReport Inspect(const Reader& reader);

// The decoder each codec uses on this CPU, as capped by TQM_CPU, e.g.
// "lanes AVX-512, huffman BMI2, seqtable AVX2, checksum AVX-512 (TQM_CPU
// native)".
std::string ActiveDecoders();

// Runs reader.Verify(threads) and records the outcome, the time and the
// decoders in `report`.
void VerifyInto(const Reader& reader, unsigned threads, InspectReport* report);

// Human-readable report. Control characters in names and strings are escaped.
std::string FormatText(const InspectReport& r);

// The same report as one JSON object (UTF-8; strings JSON-escaped; bytes
// metadata values given as their length and xxh3 checksum).
std::string FormatJson(const InspectReport& r);

// Returns `s` as a JSON string literal (quotes included); valid UTF-8 passes
// through, control characters and stray bytes become \u00XX.
std::string JsonQuote(const std::string& s);

// Escapes control characters, backslash and non-UTF-8 bytes as \xNN.
std::string EscapeForTerminal(const std::string& s);

}  // namespace tqm

#endif  // TQM_INSPECT_H_
