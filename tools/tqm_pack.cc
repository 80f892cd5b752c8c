// tqm-pack: quantize a model and write it as one .tqm file.

#include <chrono>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

#include "CLI/CLI.hpp"
#include "quant/target_kl.h"
#include "absl/strings/str_format.h"
#include "tool_util.h"
#include "tqm/codec.h"
#include "tqm/gptq.h"
#include "tqm/import.h"
#include "tqm/inspect.h"
#include "tqm/writer.h"

int main(int argc, char** argv) {
  CLI::App app{
      "tqm-pack: quantize a model (8 bits by default, --bits 2..8; one affine scale/zero\n"
      "per tensor, per row or per group of weights) and write it as one compressed,\n"
      "memory-mappable .tqm file.\n\n"
      "Inputs, recognised by content: a llama2.c checkpoint (e.g. stories260K.bin), a\n"
      "safetensors file, a Hugging Face model directory (model.safetensors or\n"
      "model.safetensors.index.json + shards, hyperparameters from config.json), a GGUF\n"
      "file, or a tqm-unpack --dtype u8 export (codes kept as they are). Float tensors\n"
      "(F32/F16/BF16, GGUF Q8_0) are quantized; integer, bool and F64 tensors, 0-d and\n"
      "empty ones, and any tensor --keep names are stored verbatim. 1-D float tensors\n"
      "(norms, biases) stay float32 unless --quantize-all. A tokenizer must parse and\n"
      "match the model's vocabulary; hyperparameters must match the tensor shapes.\n"
      "Each 256 KiB chunk gets the codec --profile picks among stored, seqtable\n"
      "(the file's sequence table), lanes, Huffman, rANS and (size profile) zstd; a chunk is\n"
      "stored raw when nothing is smaller, so the file is never larger than raw int8\n"
      "plus a small index.\n\n"
      "Examples:\n"
      "  tqm-pack ../shared/models/stories260K/stories260K.bin -o stories260K.tqm \\\n"
      "           --tokenizer ../shared/models/stories260K/tok512.bin\n"
      "  tqm-pack ./Llama-hf-dir -o model.tqm --granularity row\n"
      "  tqm-pack model.safetensors -o m4.tqm --bits 4 --granularity group:64\n"
      "  tqm-pack stories260K.bin -o g4.tqm --tokenizer tok512.bin --bits 4 \\\n"
      "           --granularity row --calibration stories260K-calibration.txt\n"
      "  tqm-pack stories260K.bin -o t.tqm --tokenizer tok512.bin --target-kl 0.03 \\\n"
      "           --calibration stories260K-calibration.txt\n"};
  tqm::SetUpCommandLine(app, "tqm-pack");
  std::string input, output, tokenizer, granularity = "tensor";
  bool quantize_all = false, quiet = false, json = false, no_table = false;
  uint32_t chunk_size = tqm::format::kDefaultChunkSize;
  uint32_t max_table = tqm::format::kMaxTableEntries;
  app.add_option("INPUT", input, "model to pack: llama2.c .bin, .safetensors, a Hugging Face model directory, or .gguf")
      ->required()
      ->check(CLI::ExistingPath);
  app.add_option("-o,--output", output,
                 "output .tqm file (written atomically; never one of the inputs)")
      ->required();
  app.add_option("--tokenizer", tokenizer,
                 "llama2.c tokenizer (tok512.bin) to embed as metadata tokenizer.llama2c")
      ->check(CLI::ExistingFile);
  app.add_flag("--quantize-all", quantize_all,
               "quantize 1-D tensors (norms, biases) too, as the paper did");
  app.add_option("--granularity", granularity,
                 "affine parameters per 'tensor' (default), per 'row' (output channel) or per "
                 "'group:G' (G consecutive weights along the input dimension; G = 32, 64, "
                 "128 or 256; format 1.3)")
      ->check([](const std::string& g) -> std::string {
        if (g == "tensor" || g == "row" || g == "group:32" || g == "group:64" ||
            g == "group:128" || g == "group:256") {
          return "";
        }
        return "must be tensor, row, group:32, group:64, group:128 or group:256";
      });
  int bits = 8;
  app.add_option("--bits", bits,
                 "code width of quantized tensors, 2..8 (default 8). Below 8 the entropy "
                 "codecs store only what the codes use; the file is format 1.3")
      ->check(CLI::Range(2, 8));
  auto* bits_opt = app.get_option("--bits");
  double target_kl = 0;
  app.add_option("--target-kl", target_kl,
                 "choose bits (3..8) and granularity (tensor, row, group) per tensor, round to "
                 "nearest, for the smallest file whose mean KL(float || packed) per position on "
                 "the --calibration text stays under this many nats (measured per tensor, then "
                 "checked on the whole model). Llama models only; replaces --bits and GPTQ; "
                 "--granularity group:G sets G (default 64)")
      ->check(CLI::PositiveNumber);
  size_t target_kl_tokens = 4096;
  app.add_option("--target-kl-tokens", target_kl_tokens,
                 "--target-kl: calibration tokens measured (default 4096)")
      ->check(CLI::Range(size_t{2}, size_t{1} << 20));
  std::string keep;
  app.add_option("--keep", keep,
                 "store the tensors whose name matches this regular expression (ECMAScript, "
                 "searched anywhere in the name) exactly as in the input, unquantized. Integer, "
                 "bool and F64 tensors, 0-d and empty tensors are always kept");
  app.add_option("--chunk-size", chunk_size,
                 "decoded bytes per chunk (multiple of 4, default 262144)")
      ->check(CLI::Range(4u, tqm::format::kMaxChunkDecodedSize));
  app.add_option("--max-table", max_table,
                 "upper bound on sequence-table entries (0..65535; the writer picks the size "
                 "that minimises the file)")
      ->check(CLI::Range(0u, tqm::format::kMaxTableEntries));
  app.add_flag("--no-table", no_table, "disable the seqtable codec");
  bool full_table_search = false;
  app.add_flag("--full-table-search", full_table_search,
               "count every 4-byte group for the sequence table even when a sample of the "
               "weights shows that no table can pay (slower; same file in that case)");
  std::string profile = "balanced";
  app.add_option("--profile", profile,
                 "codec choice per chunk: 'size' = smallest (tries zstd -19 too), "
                 "'balanced' (default) = fastest decode within 2% of the smallest, "
                 "'speed' = fastest decode that saves >= 3% over stored")
      ->check(CLI::IsMember({"size", "balanced", "speed"}));
  bool no_entropy = false;
  app.add_flag("--no-entropy", no_entropy,
               "only the stored and seqtable codecs (a format 1.0 file)");
  bool no_lanes = false;
  app.add_flag("--no-lanes", no_lanes,
               "do not use the lanes codec (format 1.2): a format 1.1 file, for older readers "
               "and for CPUs without AVX-512 VBMI (lanes decodes ~2x Huffman's speed with it, "
               "about the same with AVX2 only, 4-5x slower in plain C++; Arm has a NEON "
               "decoder whose speed is not measured)");
  std::string target = "avx512";
  app.add_option(
         "--target", target,
         "CPU class whose decode speed the balanced and speed profiles serve: "
         "'avx512' (default, also right for AVX2 CPUs, where lanes decodes 1.6-1.8x "
         "faster than Huffman) = lanes first; 'avx2' = the smaller of lanes and "
         "Huffman (the smallest files that decode at least at Huffman speed there); 'portable' = "
         "no lanes (plain C++ decodes it 3-5x slower than Huffman). Not recorded in "
         "the file: every reader decodes it")
      ->check(CLI::IsMember({"avx512", "avx2", "portable"}));
  std::string calibration;
  app.add_option("--calibration", calibration,
                 "text file (one sequence per line) for GPTQ: the linears of a Llama model "
                 "(q/k/v/o, gate/up/down) are quantized layer by layer to minimise their "
                 "output error on this text, on the same grid as --bits/--granularity; the "
                 "embedding and classifier are rounded to nearest. Needs the llama.* "
                 "hyperparameters and a tokenizer (--tokenizer or the input's own)")
      ->check(CLI::ExistingFile);
  bool act_order = false;
  app.add_flag("--act-order", act_order,
               "GPTQ: quantize columns by decreasing input energy (diag of the Hessian) "
               "instead of in order (needs --calibration)");
  unsigned threads = 0;
  tqm::AddThreadsOption(app, &threads, "threads encoding chunks (0: all cores)");
  tqm::AddQuietFlag(app, &quiet, "no progress bar and no summary (not even --json's)");
  tqm::AddJsonFlag(app, &json);
  TQM_PARSE_COMMAND_LINE(app, argc, argv);

  if (act_order && calibration.empty()) {
    return tqm::UsageError("tqm-pack", "--act-order needs --calibration");
  }
  if (target_kl > 0 && calibration.empty()) {
    return tqm::UsageError("tqm-pack", "--target-kl needs --calibration (the text it measures KL on)");
  }
  if (target_kl > 0 && (act_order || bits_opt->count() > 0)) {
    return tqm::UsageError("tqm-pack", "--target-kl chooses the bits itself (round to nearest): "
                                       "drop --bits and --act-order");
  }
  absl::Status distinct = tqm::CheckNotAnInput(output, {input, tokenizer, calibration});
  if (!distinct.ok()) return tqm::Failure("tqm-pack", std::string(distinct.message()));
  tqm::InstallCleanupHandlers();
  auto source = tqm::OpenModel(input);
  if (!source.ok()) return tqm::Failure("tqm-pack", std::string(source.status().message()));
  tqm::PackOptions opt;
  opt.quantize_all = quantize_all;
  if (granularity == "row") {
    opt.granularity = tqm::Granularity::kRow;
  } else if (granularity.rfind("group:", 0) == 0) {
    opt.granularity = tqm::Granularity::kGroup;
    opt.group_size = static_cast<uint32_t>(std::stoul(granularity.substr(6)));
  }
  opt.bits = bits;
  if (!keep.empty()) {
    std::regex re;
    try {
      re = std::regex(keep, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return tqm::UsageError("tqm-pack", "--keep '" + keep + "' is not a valid regular expression: " + e.what());
    }
    opt.keep = [re](const std::string& name) { return std::regex_search(name, re); };
  }
  opt.chunk_size = chunk_size;
  opt.max_table_entries = no_table ? 0 : max_table;
  opt.profile = profile == "size"    ? tqm::Profile::kSize
                : profile == "speed" ? tqm::Profile::kSpeed
                                     : tqm::Profile::kBalanced;
  opt.entropy = !no_entropy;
  opt.lanes = !no_lanes;
  opt.target = target == "portable" ? tqm::DecodeTarget::kPortable
               : target == "avx2"   ? tqm::DecodeTarget::kAvx2
                                    : tqm::DecodeTarget::kAvx512;
  opt.threads = threads;
  if (full_table_search) opt.table_sample_min_groups = UINT64_MAX;
  if (!tokenizer.empty()) {
    std::ifstream f(tokenizer, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    if (!f) return tqm::Failure("tqm-pack", "cannot read tokenizer " + tokenizer);
    opt.extra_metadata.push_back(
        {tqm::meta_keys::kTokenizerLlama2c, tqm::MetaValue::Bytes(ss.str())});
  }
  if (absl::Status s = tqm::CheckModel(**source, opt.extra_metadata, tokenizer); !s.ok()) {
    std::cerr << "tqm-pack: " << input << ": " << s.message() << "\n";
    return 1;
  }
  tqm::ProgressBar bar;
  std::unique_ptr<tqm::TensorSource> gptq;
  double gptq_seconds = 0;
  tqm::TargetKlResult tkl;
  if (target_kl > 0) {
    std::ifstream f(calibration, std::ios::binary);
    std::stringstream text;
    text << f.rdbuf();
    if (!f) return tqm::Failure("tqm-pack", "cannot read calibration text " + calibration);
    tqm::TargetKlOptions t;
    t.target_kl = target_kl;
    t.max_tokens = target_kl_tokens;
    if (opt.granularity == tqm::Granularity::kGroup) t.group_size = opt.group_size;
    t.threads = threads;
    if (const tqm::MetaValue* tok =
            tqm::FindMeta(opt.extra_metadata, tqm::meta_keys::kTokenizerLlama2c)) {
      t.tokenizer_llama2c = tok->bytes;
    }
    if (!quiet) t.progress = [](const std::string& line) { std::cerr << line << "\n"; };
    auto chosen = tqm::ChooseForTargetKl(**source, text.str(), opt, t);
    if (!chosen.ok()) {
      return tqm::Failure("tqm-pack", input + ": " + std::string(chosen.status().message()));
    }
    tkl = std::move(*chosen);
    opt.tensor_settings = tkl.settings;
    if (!quiet) {
      for (const tqm::TensorChoice& ch : tkl.choices) {
        std::cerr << absl::StrFormat("  %-40s %-16s KL %.6f  %d bytes\n", ch.name,
                                     tqm::SettingName(ch.setting), ch.kl, ch.bytes);
      }
      std::cerr << absl::StrFormat(
          "target KL %g: calibration KL %.6f (sum of the tensors' %.6f), %s, %d rounds, "
          "%.1f s\n",
          target_kl, tkl.measured_kl, tkl.predicted_kl, tkl.met ? "met" : "NOT met",
          tkl.rounds, tkl.seconds);
    }
  } else if (!calibration.empty()) {
    std::ifstream f(calibration, std::ios::binary);
    std::stringstream text;
    text << f.rdbuf();
    if (!f) return tqm::Failure("tqm-pack", "cannot read calibration text " + calibration);
    tqm::GptqOptions g;
    g.bits = opt.bits;
    g.granularity = opt.granularity;
    g.group_size = opt.group_size;
    g.act_order = act_order;
    g.keep = opt.keep;
    g.threads = threads;
    // The --tokenizer file (else the input's metadata, read by MakeGptqSource).
    if (const tqm::MetaValue* tok =
            tqm::FindMeta(opt.extra_metadata, tqm::meta_keys::kTokenizerLlama2c)) {
      g.tokenizer_llama2c = tok->bytes;
    }
    if (!quiet) {
      g.progress = [&bar](const tqm::GptqProgress& p) {
        bar.Update(absl::StrFormat("GPTQ layer %d/%d", p.layer + 1, p.layers),
                   static_cast<double>(p.layer + 1) / p.layers);
      };
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto made = tqm::MakeGptqSource(**source, text.str(), g);
    gptq_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bar.Done();
    if (!made.ok()) {
      return tqm::Failure("tqm-pack", input + ": GPTQ: " + std::string(made.status().message()));
    }
    gptq = std::move(*made);
  }
  if (!quiet) {
    opt.progress = [&bar](const tqm::PackProgress& p) {
      static const char* names[] = {"", "counting groups", "sizing table", "encoding"};
      bar.Update(absl::StrFormat("pass %d/3 %s", p.pass, names[p.pass]),
                 p.bytes_total ? static_cast<double>(p.bytes_done) / p.bytes_total : 1.0);
    };
  }
  auto stats = tqm::Pack(gptq ? *gptq : **source, output, opt);
  bar.Done();
  if (!stats.ok()) {
    return tqm::Failure("tqm-pack", input + ": " + std::string(stats.status().message()));
  }
  const tqm::PackStats& s = *stats;
  const double escape = s.groups ? 100.0 * s.escaped_groups / s.groups : 0.0;
  std::string mix, mix_json;
  for (int c = 0; c < 8; ++c) {
    if (!s.chunks_by_codec[c]) continue;
    mix += absl::StrFormat("%s%d %s", mix.empty() ? "" : ", ", s.chunks_by_codec[c],
                           tqm::CodecName(c));
    mix_json += absl::StrFormat("%s\"%s\":%d", mix_json.empty() ? "" : ",",
                                tqm::CodecName(c), s.chunks_by_codec[c]);
  }
  if (quiet) return tqm::kExitSuccess;
  if (json) {
    std::cout << absl::StrFormat(
        "{\"input\":%s,\"output\":%s,\"tensors\":%d,\"quantized_tensors\":%d,"
        "\"weights\":%d,\"source_bytes\":%d,\"f32_bytes\":%d,\"int8_bytes\":%d,"
        "\"file_bytes\":%d,\"table_entries\":%d,\"table_search_skipped\":%s,"
        "\"groups\":%d,\"escaped_groups\":%d,"
        "\"chunks\":{%s},\"profile\":\"%s\",\"seqtable_only_bytes\":%d,\"seqtable_only_table_entries\":%d,"
        "\"quantized_int8_bytes\":%d,\"raw_tensors\":%d,\"bits\":%d,"
        "\"gptq\":%s,\"gptq_seconds\":%.3f,%s\"seconds\":%.3f}\n",
        tqm::JsonQuote(input), tqm::JsonQuote(output), s.tensors, s.quantized_tensors, s.weights, s.source_bytes, s.f32_bytes,
        s.int8_bytes, s.file_bytes, s.table_entries,
        s.table_search_skipped ? "true" : "false", s.groups, s.escaped_groups,
        mix_json, profile, s.seqtable_only_bytes, s.seqtable_only_table_entries,
        s.quantized_int8_bytes, s.raw_tensors, bits, gptq ? "true" : "false", gptq_seconds,
        target_kl > 0
            ? absl::StrFormat("\"target_kl\":{\"target\":%.9g,\"calibration_kl\":%.9g,"
                              "\"predicted_kl\":%.9g,\"met\":%s,\"rounds\":%d,"
                              "\"positions\":%d,\"evaluations\":%d,\"seconds\":%.3f},",
                              target_kl, tkl.measured_kl, tkl.predicted_kl,
                              tkl.met ? "true" : "false", tkl.rounds, tkl.positions,
                              tkl.evaluations, tkl.seconds)
            : std::string(),
        s.seconds);
  } else {
    std::cout << absl::StrFormat(
        "packed %s -> %s\n"
        "  tensors          %d (%d quantized to uint8, %d kept float32%s)\n"
        "  weights          %d\n"
        "  source size      %s (%d bytes, as stored in the input dtype)\n"
        "  int8 size        %s (%d bytes: uint8 weights + float32 1-D tensors)\n"
        "  tqm size         %s (%d bytes, table and index included)\n"
        "  ratio            %.2fx vs source, %.3fx vs int8\n"
        "  bits per weight  %.3f\n"
        "  table            %d entries%s; escape rate %.2f%% of %d groups\n"
        "  chunks           %s\n"
        "  seqtable only    %d bytes (table of %d entries included) if every quantized chunk\n"
        "                   used seqtable, vs %d bytes of int8 for those tensors\n"
        "  time             %.2f s (%.1f MB/s of float32 input)\n",
        tqm::EscapeForTerminal(input), tqm::EscapeForTerminal(output), s.tensors, s.quantized_tensors,
        s.tensors - s.quantized_tensors - s.raw_tensors,
        s.raw_tensors ? absl::StrFormat(", %d verbatim", s.raw_tensors) : std::string(),
        s.weights, tqm::HumanBytes(s.source_bytes),
        s.source_bytes, tqm::HumanBytes(s.int8_bytes), s.int8_bytes,
        tqm::HumanBytes(s.file_bytes), s.file_bytes,
        static_cast<double>(s.source_bytes) / s.file_bytes,
        static_cast<double>(s.file_bytes) / s.int8_bytes, 8.0 * s.file_bytes / s.weights,
        s.table_entries, s.table_search_skipped ? " (a sample showed no table can pay)" : "",
        escape, s.groups, mix,
        s.seqtable_only_bytes, s.seqtable_only_table_entries, s.quantized_int8_bytes, s.seconds, s.f32_bytes / 1e6 / std::max(s.seconds, 1e-9));
    if (gptq) {
      std::cout << absl::StrFormat(
          "  GPTQ             %.2f s (calibration forward and quantization, before packing)\n",
          gptq_seconds);
    }
  }
  return tqm::kExitSuccess;
}
