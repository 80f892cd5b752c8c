// tqm-unpack: take everything a .tqm file holds back out as safetensors.

#include <iostream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "tool_util.h"
#include "tqm/inspect.h"
#include "tqm/reader.h"
#include "tqm/safetensors.h"
#include "tqm/status.h"

namespace {

absl::Status Unpack(const tqm::Reader& r, const std::string& out, bool u8) {
  std::vector<tqm::SafetensorsEntry> entries;
  for (const tqm::TensorInfo& t : r.tensors()) {
    if (u8 && t.quantized()) {
      entries.push_back({t.name, "U8", t.dims});
      entries.push_back({t.name + ".scale", "F32", {t.affine.size()}});
      entries.push_back({t.name + ".zero", "F32", {t.affine.size()}});
    } else {
      entries.push_back({t.name, "F32", t.dims});
    }
  }
  std::vector<std::pair<std::string, std::string>> meta;
  for (const tqm::MetaEntry& e : r.metadata()) {
    switch (e.value.type) {
      case tqm::format::kMetaInt64:
        meta.push_back({e.key, absl::StrCat(e.value.int64)});
        break;
      case tqm::format::kMetaFloat64:
        meta.push_back({e.key, absl::StrCat(e.value.float64)});
        break;
      case tqm::format::kMetaString:
        meta.push_back({e.key, e.value.bytes});
        break;
      default:
        break;  // opaque bytes (tokenizer) do not fit safetensors' string map
    }
  }
  meta.push_back({"tqm.unpacked_as", u8 ? "u8" : "f32"});
  auto w = tqm::SafetensorsWriter::Create(out, entries, meta);
  if (!w.ok()) return w.status();
  std::vector<uint8_t> q;
  std::vector<float> f;
  for (size_t i = 0; i < r.tensors().size(); ++i) {
    const tqm::TensorInfo& t = r.tensors()[i];
    if (u8 && t.quantized()) {
      q.resize(t.byte_size);
      TQM_RETURN_IF_ERROR(r.DecodeTensor(i, absl::MakeSpan(q)));
      TQM_RETURN_IF_ERROR((*w)->Write(q));
      std::vector<float> scale, zero;
      for (const tqm::Affine& a : t.affine) {
        scale.push_back(a.scale);
        zero.push_back(a.zero);
      }
      for (auto* v : {&scale, &zero}) {
        TQM_RETURN_IF_ERROR((*w)->Write(absl::Span<const uint8_t>(
            reinterpret_cast<const uint8_t*>(v->data()), v->size() * 4)));
      }
    } else {
      f.resize(t.numel);
      TQM_RETURN_IF_ERROR(r.ReadFloat(i, absl::MakeSpan(f)));
      TQM_RETURN_IF_ERROR((*w)->Write(absl::Span<const uint8_t>(
          reinterpret_cast<const uint8_t*>(f.data()), f.size() * 4)));
    }
  }
  return (*w)->Finish();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tqm-unpack: write every tensor of a .tqm file to a safetensors file.\n\n"
      "--dtype f32 (default): float32 values, dequantized as scale * (q - zero).\n"
      "--dtype u8: quantized tensors as U8 with companion F32 tensors NAME.scale and\n"
      "NAME.zero (one value per tensor, or one per row); float32 tensors stay F32.\n"
      "String and number metadata go to the safetensors __metadata__ map.\n"
      "Every chunk is checksum-verified while decoding; the output is written atomically.\n\n"
      "Example:\n"
      "  tqm-unpack stories260K.tqm -o stories260K.safetensors\n"};
  std::string file, output, dtype = "f32";
  app.add_option("FILE", file, ".tqm file to unpack")->required();
  app.add_option("-o,--output", output, "output .safetensors file")->required();
  app.add_option("--dtype", dtype, "f32 (dequantized) or u8 (raw codes + scale/zero)")
      ->check(CLI::IsMember({"f32", "u8"}));
  CLI11_PARSE(app, argc, argv);
  tqm::InstallCleanupHandlers();
  auto reader = tqm::Reader::Open(file);
  if (!reader.ok()) {
    std::cerr << "tqm-unpack: " << tqm::EscapeForTerminal(std::string(reader.status().message()))
              << "\n";
    return 1;
  }
  absl::Status s = Unpack(**reader, output, dtype == "u8");
  if (!s.ok()) {
    std::cerr << "tqm-unpack: " << tqm::EscapeForTerminal(std::string(s.message())) << "\n";
    return 1;
  }
  return 0;
}
