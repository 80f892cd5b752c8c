// tqm-unpack: take everything a .tqm file holds back out as safetensors, a
// GGUF file for llama.cpp, or a llama2.c checkpoint for run.c. A thin main
// over tqm/export.h.

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
      "GGUF and llama2.c need a complete Llama model; q/k rows are written in the Meta\n"
      "rotary layout. --n-heads/--n-kv-heads/--seq-len supply hyperparameters the "
      "file's\n"
      "metadata lacks (e.g. after packing a bare safetensors file).\n"
      "Every chunk is checksum-verified while decoding; the output is written "
      "atomically.\n\n"
      "Examples:\n"
      "  tqm-unpack stories260K.tqm -o stories260K.safetensors\n"
      "  tqm-unpack --format gguf --dtype q8_0 stories260K.tqm -o stories260K-q8_0.gguf\n"
      "  tqm-unpack --format llama2c stories260K.tqm -o out.bin --tokenizer-out "
      "tok.bin\n"};
  std::string file, output, dtype = "f32", fmt = "safetensors", tokenizer_out;
  int64_t n_heads = 0, n_kv_heads = 0, seq_len = 0;
  app.add_option("FILE", file, ".tqm file to unpack")->required();
  app.add_option("-o,--output", output, "output file")->required();
  app.add_option("--format", fmt, "safetensors (default), gguf or llama2c")
      ->check(CLI::IsMember({"safetensors", "gguf", "llama2c"}));
  app.add_option(
         "--dtype", dtype,
         "safetensors: f32, f16, bf16 or u8; gguf: f32, f16 or q8_0; llama2c: f32")
      ->check(CLI::IsMember({"f32", "f16", "bf16", "u8", "q8_0"}));
  app.add_option("--n-heads", n_heads, "attention heads (gguf, llama2c)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--n-kv-heads", n_kv_heads, "key/value heads (gguf, llama2c)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option("--seq-len", seq_len, "context length (gguf, llama2c; default 2048)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  app.add_option(
      "--tokenizer-out", tokenizer_out,
      "also write the embedded llama2.c tokenizer (for run.c -z) to this file");
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const std::string& message) {
    std::cerr << "tqm-unpack: " << tqm::EscapeForTerminal(message) << "\n";
    return 1;
  };
  const bool ok_dtype = fmt == "safetensors" ? dtype != "q8_0"
                        : fmt == "gguf"
                            ? (dtype == "f32" || dtype == "f16" || dtype == "q8_0")
                            : dtype == "f32";
  if (!ok_dtype) {
    return fail("--dtype " + dtype + " is not available with --format " + fmt);
  }
  tqm::InstallCleanupHandlers();
  auto reader = tqm::Reader::Open(file);
  if (!reader.ok()) return fail(std::string(reader.status().message()));
  tqm::ExportOverrides ov;
  ov.n_heads = n_heads;
  ov.n_kv_heads = n_kv_heads;
  ov.seq_len = seq_len;
  absl::Status s;
  if (fmt == "safetensors") {
    tqm::SafetensorsExportOptions opt;
    opt.type = dtype == "u8"     ? tqm::SafetensorsExportType::kU8
               : dtype == "f16"  ? tqm::SafetensorsExportType::kF16
               : dtype == "bf16" ? tqm::SafetensorsExportType::kBF16
                                 : tqm::SafetensorsExportType::kF32;
    s = tqm::ExportSafetensors(**reader, output, opt);
  } else if (fmt == "gguf") {
    tqm::GgufExportOptions opt;
    opt.type = dtype == "q8_0"  ? tqm::GgufExportType::kQ8_0
               : dtype == "f16" ? tqm::GgufExportType::kF16
                                : tqm::GgufExportType::kF32;
    opt.overrides = ov;
    s = tqm::ExportGguf(**reader, output, opt);
  } else {
    s = tqm::ExportLlama2c(**reader, output, ov);
  }
  if (s.ok() && !tokenizer_out.empty())
    s = tqm::ExportLlama2cTokenizer(**reader, tokenizer_out);
  if (!s.ok()) return fail(std::string(s.message()));
  return 0;
}
