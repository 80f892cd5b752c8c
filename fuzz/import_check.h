// Checks shared by the importer fuzz targets (fuzz_gguf, fuzz_safetensors,
// fuzz_llama2c) and the corruption campaign (tests/import_fuzz_test.cc): an
// importer given hostile bytes either opens them into a source whose every
// tensor reads back, or fails with a code STYLE.md assigns to bad input and a
// message that names the input.

#ifndef TQM_FUZZ_IMPORT_CHECK_H_
#define TQM_FUZZ_IMPORT_CHECK_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tqm/source.h"

namespace tqm_fuzz {

// Tensors whose float32 output would exceed this are not read (their
// element count is still checked against what the input can hold).
inline constexpr uint64_t kMaxReadBytes = 64ull << 20;

// Empty when `s` is an acceptable rejection of bad input, else why not.
inline std::string RejectionProblem(const absl::Status& s, const std::string& name) {
  if (s.ok()) return "an OK status where an error was expected";
  const absl::StatusCode c = s.code();
  if (c != absl::StatusCode::kDataLoss && c != absl::StatusCode::kUnimplemented &&
      c != absl::StatusCode::kResourceExhausted) {
    return "unexpected status code: " + s.ToString();
  }
  if (s.message().empty()) return "empty error message";
  if (!name.empty() && s.message().find(name) == std::string::npos) {
    return "error does not name the input " + name + ": " + s.ToString();
  }
  return "";
}

inline void CheckRejection(const absl::Status& s, const std::string& name) {
  const std::string problem = RejectionProblem(s, name);
  if (!problem.empty()) {
    fprintf(stderr, "bad rejection: %s\n", problem.c_str());
    abort();
  }
}

struct ReadStats {
  size_t opened = 0;        // sources that opened
  size_t tensors_read = 0;  // tensors read back in full
  size_t read_errors = 0;   // tensors that failed to read (with a proper error)
};

// Reads every tensor of `src` up to kMaxReadBytes of output. Returns "" or a
// description of a broken promise: duplicate or empty names, an element
// count the input cannot back, a read that returns the wrong number of
// values or a bad error.
inline std::string ExerciseSource(tqm::TensorSource& src, const std::string& name,
                                  uint64_t input_size, ReadStats* stats) {
  absl::flat_hash_set<std::string> names;
  std::vector<float> out;
  std::string raw;
  tqm::QuantizedTensor quantized;
  for (size_t i = 0; i < src.tensors().size(); ++i) {
    const tqm::SourceTensor& t = src.tensors()[i];
    if (t.name.empty() || !names.insert(t.name).second) {
      return "empty or duplicate tensor name '" + t.name + "'";
    }
    uint64_t numel = 1;
    bool overflow = false;
    for (uint64_t d : t.dims) overflow |= __builtin_mul_overflow(numel, d, &numel);
    // Every supported dtype takes at least one byte per element (Q8_0: 34
    // bytes per 32), so an accepted count beyond the input is a missed check.
    if (overflow || numel > input_size) {
      return "tensor '" + t.name + "' has more elements than the input can hold";
    }
    if (numel * 8 > kMaxReadBytes) continue;
    // Each kind through its own call: verbatim tensors as bytes, already
    // quantized ones as codes (and dequantized), float ones as float32.
    absl::Status s;
    uint64_t got = 0;
    if (t.kind == tqm::TensorKind::kRaw) {
      s = src.ReadRaw(i, &raw);
      got = tqm::DTypeSize(t.dtype) ? raw.size() / tqm::DTypeSize(t.dtype) : 0;
      if (s.ok() && raw.size() != numel * tqm::DTypeSize(t.dtype)) {
        return "tensor '" + t.name + "' read the wrong byte count";
      }
    } else {
      if (t.kind == tqm::TensorKind::kQuantized) {
        s = src.ReadQuantized(i, &quantized);
        if (s.ok() && quantized.codes.size() != numel) {
          return "tensor '" + t.name + "' read the wrong code count";
        }
      }
      if (s.ok()) s = src.Read(i, &out);
      got = out.size();
    }
    if (!s.ok()) {
      const std::string problem = RejectionProblem(s, name);
      if (!problem.empty()) return "reading '" + t.name + "': " + problem;
      ++stats->read_errors;
      continue;
    }
    if (got != numel) return "tensor '" + t.name + "' read the wrong element count";
    ++stats->tensors_read;
  }
  // Out-of-range indexes are caller errors, not crashes.
  if (src.Read(src.tensors().size(), &out).code() != absl::StatusCode::kOutOfRange) {
    return "Read past the last tensor is not OutOfRange";
  }
  ++stats->opened;
  return "";
}

// Fuzz-target form: aborts on any broken promise.
inline void CheckOpened(const absl::StatusOr<std::unique_ptr<tqm::TensorSource>>& src,
                        const std::string& name, uint64_t input_size) {
  if (!src.ok()) {
    CheckRejection(src.status(), name);
    return;
  }
  ReadStats stats;
  const std::string problem = ExerciseSource(**src, name, input_size, &stats);
  if (!problem.empty()) {
    fprintf(stderr, "%s: %s\n", name.c_str(), problem.c_str());
    abort();
  }
}

}  // namespace tqm_fuzz

#endif  // TQM_FUZZ_IMPORT_CHECK_H_
