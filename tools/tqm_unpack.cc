// tqm-unpack: take everything a .tqm file holds back out as safetensors, a
// GGUF file for llama.cpp, or a llama2.c checkpoint for run.c. A thin main
// over tqm/export.h.

#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "tool_util.h"
#include "tqm/export.h"
#include "tqm/inspect.h"
#include "tqm/reader.h"

int main(int argc, char** argv) {
  CLI::App app{
      "tqm-unpack: write every tensor of a .tqm file to another format.\n\n"
      "--format safetensors (default):\n"
      "  --dtype f32 (default) | f16 | bf16: values dequantized as scale * (q - zero);\n"
      "  --dtype u8: quantized tensors as U8 with companion F32 tensors NAME.scale and\n"
      "  NAME.zero (one value per tensor, or one per row); float32 tensors stay F32.\n"
      "  String and number metadata go to the safetensors __metadata__ map.\n"
      "--format gguf: GGUF v3 with llama.cpp's tensor names and metadata keys, loadable\n"
      "  by llama.cpp; --dtype f32 (default) | f16 | q8_0 for the matrices (norms stay\n"
      "  F32; q8_0 falls back to f16 for rows not a multiple of 32). The vocabulary "
      "comes\n"
      "  from the embedded llama2.c tokenizer (tqm-pack --tokenizer).\n"
      "--format llama2c: a llama2.c v0 checkpoint that karpathy's run.c runs (float32).\n"
      "--format hf: a Hugging Face Llama directory -o DIR (created; an existing DIR must\n"
      "  be empty): config.json and model.safetensors, q/k rows in the Hugging Face\n"
      "  rotary layout; --dtype f32 (default) | f16 | bf16. No tokenizer files.\n"
      "Tensors stored verbatim (integers, bool, F64, ...) keep their dtype in\n"
      "safetensors and hf output.\n"
      "GGUF, llama2.c and hf need a complete Llama model; q/k rows are written in the Meta\n"
      "rotary layout. --n-heads/--n-kv-heads/--seq-len supply hyperparameters the "
      "file's\n"
      "metadata lacks (e.g. after packing a bare safetensors file).\n"
      "Every chunk is checksum-verified while decoding; the output is written "
      "atomically.\n\n"
      "Examples:\n"
      "  tqm-unpack stories260K.tqm -o stories260K.safetensors\n"
      "  tqm-unpack --format gguf --dtype q8_0 stories260K.tqm -o stories260K-q8_0.gguf\n"
      "  tqm-unpack --format hf stories260K.tqm -o stories260K-hf\n"
      "  tqm-unpack --format llama2c stories260K.tqm -o out.bin --tokenizer-out "
      "tok.bin\n"};
  tqm::SetUpCommandLine(app, "tqm-unpack");
  std::string file, output, dtype = "f32", fmt = "safetensors", tokenizer_out;
  int64_t n_heads = 0, n_kv_heads = 0, seq_len = 0;
  bool quiet = false, json = false;
  unsigned threads = 0;
  app.add_option("FILE", file, ".tqm file to unpack")->required();
  app.add_option("-o,--output", output,
                 "output file, or directory for --format hf (written atomically; never "
                 "the input)")
      ->required();
  app.add_option("--format", fmt, "safetensors (default), gguf, llama2c or hf")
      ->check(CLI::IsMember({"safetensors", "gguf", "llama2c", "hf"}));
  app.add_option(
         "--dtype", dtype,
         "safetensors: f32, f16, bf16 or u8; gguf: f32, f16 or q8_0; llama2c: f32; "
         "hf: f32, f16 or bf16")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "u8", "q8_0"}));
  app.add_option("--n-heads", n_heads, "attention heads (gguf, llama2c, hf)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--n-kv-heads", n_kv_heads, "key/value heads (gguf, llama2c, hf)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--seq-len", seq_len, "context length (gguf, llama2c, hf; default 2048)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option(
      "--tokenizer-out", tokenizer_out,
      "also write the embedded llama2.c tokenizer (for run.c -z) to this file; "
      "both outputs appear together or not at all");
  tqm::AddThreadsOption(app, &threads,
                        "safetensors and hf: one thread writes while the others decode "
                        "the next tensor's chunks (0: all cores); the output does not "
                        "depend on it. gguf and llama2c: one thread");
  tqm::AddQuietFlag(app, &quiet, "no progress bar and no summary (not even --json's)");
  tqm::AddJsonFlag(app, &json);
  TQM_PARSE_COMMAND_LINE(app, argc, argv);

  const char* tool = "tqm-unpack";
  const bool ok_dtype = fmt == "safetensors" ? dtype != "q8_0"
                        : fmt == "gguf"
                            ? (dtype == "f32" || dtype == "f16" || dtype == "q8_0")
                        : fmt == "hf" ? (dtype == "f32" || dtype == "f16" || dtype == "bf16")
                                      : dtype == "f32";
  if (!ok_dtype) {
    return tqm::UsageError(tool, "--dtype " + dtype + " is not available with --format " + fmt);
  }
  const bool hf = fmt == "hf";
  if (hf && !tokenizer_out.empty()) {
    return tqm::UsageError(tool, "--tokenizer-out is not available with --format hf");
  }
  for (const std::string& out : {output, tokenizer_out}) {
    absl::Status distinct = tqm::CheckNotAnInput(out, {file});
    if (!distinct.ok()) return tqm::Failure(tool, std::string(distinct.message()));
  }
  tqm::InstallCleanupHandlers();
  auto reader = tqm::Reader::Open(file);
  if (!reader.ok()) return tqm::Failure(tool, std::string(reader.status().message()));

  // Every output goes to a temporary first; none replaces its destination
  // until all are written (a tokenizer that cannot be written must not leave
  // a new checkpoint behind).
  // --format hf writes a directory, all-or-nothing inside ExportHuggingFace.
  tqm::OutputGroup outputs;
  absl::StatusOr<std::string> main_temp = output;
  if (!hf) main_temp = outputs.Add(output);
  if (!main_temp.ok()) return tqm::Failure(tool, std::string(main_temp.status().message()));
  absl::StatusOr<std::string> tokenizer_temp;
  if (!tokenizer_out.empty()) {
    tokenizer_temp = outputs.Add(tokenizer_out);
    if (!tokenizer_temp.ok()) {
      return tqm::Failure(tool, std::string(tokenizer_temp.status().message()));
    }
  }

  // The output size expected, for the progress bar only: bytes per weight
  // of the target type (1-D tensors stay float32 in GGUF and u8 exports).
  uint64_t expected = 0;
  for (const tqm::TensorInfo& t : (*reader)->tensors()) {
    const bool matrix = t.dims.size() >= 2;
    double per = 4;
    if (t.raw()) {
      per = static_cast<double>(t.element_size());
    } else if (fmt == "safetensors" || hf) {
      per = dtype == "u8" ? (t.quantized() ? 1 : 4) : (dtype == "f32" ? 4 : 2);
    } else if (fmt == "gguf" && matrix) {
      per = dtype == "q8_0" ? 34.0 / 32 : (dtype == "f16" ? 2 : 4);
    }
    expected += static_cast<uint64_t>(per * t.numel);
  }

  tqm::ExportOverrides ov;
  ov.n_heads = n_heads;
  ov.n_kv_heads = n_kv_heads;
  ov.seq_len = seq_len;
  const auto t0 = std::chrono::steady_clock::now();
  absl::Status s;
  {
    tqm::WriteProgress progress("unpacking to " + fmt, expected, !quiet);
    if (fmt == "safetensors") {
      tqm::SafetensorsExportOptions opt;
      opt.type = dtype == "u8"     ? tqm::SafetensorsExportType::kU8
                 : dtype == "f16"  ? tqm::SafetensorsExportType::kF16
                 : dtype == "bf16" ? tqm::SafetensorsExportType::kBF16
                                   : tqm::SafetensorsExportType::kF32;
      opt.threads = threads;
      s = tqm::ExportSafetensors(**reader, *main_temp, opt);
    } else if (hf) {
      tqm::HfExportOptions opt;
      opt.type = dtype == "f16"    ? tqm::SafetensorsExportType::kF16
                 : dtype == "bf16" ? tqm::SafetensorsExportType::kBF16
                                   : tqm::SafetensorsExportType::kF32;
      opt.overrides = ov;
      opt.threads = threads;
      s = tqm::ExportHuggingFace(**reader, output, opt);
    } else if (fmt == "gguf") {
      tqm::GgufExportOptions opt;
      opt.type = dtype == "q8_0"  ? tqm::GgufExportType::kQ8_0
                 : dtype == "f16" ? tqm::GgufExportType::kF16
                                  : tqm::GgufExportType::kF32;
      opt.overrides = ov;
      s = tqm::ExportGguf(**reader, *main_temp, opt);
    } else {
      s = tqm::ExportLlama2c(**reader, *main_temp, ov);
    }
    if (!s.ok()) s = absl::Status(s.code(), output + ": " + std::string(s.message()));
    if (s.ok() && !tokenizer_out.empty()) {
      s = tqm::ExportLlama2cTokenizer(**reader, *tokenizer_temp);
      if (!s.ok()) s = absl::Status(s.code(), tokenizer_out + ": " + std::string(s.message()));
    }
  }
  if (s.ok() && !hf) s = outputs.Commit();
  if (!s.ok()) return tqm::Failure(tool, std::string(s.message()));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (quiet) return tqm::kExitSuccess;
  uint64_t bytes = 0;
  for (const std::string& out : {output, tokenizer_out}) {
    std::error_code ec;
    if (out.empty()) continue;
    if (hf) {
      for (const char* name : {"/model.safetensors", "/config.json"}) {
        bytes += std::filesystem::file_size(out + name, ec);
      }
    } else {
      bytes += std::filesystem::file_size(out, ec);
    }
  }
  const double mb_per_s = bytes / 1e6 / std::max(seconds, 1e-9);
  const size_t tensors = (*reader)->tensors().size();
  if (json) {
    tqm::JsonObject o;
    o.Add("input", file).Add("output", output);
    if (!tokenizer_out.empty()) o.Add("tokenizer_out", tokenizer_out);
    o.Add("format", fmt).Add("dtype", dtype).Add("tensors", uint64_t{tensors});
    o.Add("bytes_written", bytes).Add("seconds", seconds).Add("mb_per_s", mb_per_s);
    std::cout << o.str() << "\n";
  } else {
    std::cerr << absl::StrFormat("unpacked %s -> %s%s: %d tensors, %s (%d bytes) in %.2f s (%.1f MB/s)\n",
                                 tqm::EscapeForTerminal(file), tqm::EscapeForTerminal(output),
                                 tokenizer_out.empty() ? "" : " + " + tqm::EscapeForTerminal(tokenizer_out),
                                 tensors, tqm::HumanBytes(bytes), bytes, seconds, mb_per_s);
  }
  return tqm::kExitSuccess;
}
