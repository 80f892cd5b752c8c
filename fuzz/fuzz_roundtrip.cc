// Fuzz target: encode/decode round trip and determinism. The input describes
// a small model (inputs.h, "fuzz_roundtrip"): options (codecs and profile
// included), shapes, metadata and values. It is packed twice with
// PackToString, the second time possibly on two encoder threads; then
//   - both packs succeed or fail alike (InvalidArgument, only for values a
//     quantizer cannot take), and produce identical bytes;
//   - the file opens and verifies; shapes, names and metadata survive;
//   - float32 tensors come back bit for bit; quantized tensors come back as
//     exactly scale * (q - zero) with q = clamp(round(x / scale) + zero) for
//     the affine ChooseAffine picks, and re-quantizing the decoded values
//     gives the stored bytes again (where float32 can represent q - zero).

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "fuzz_check.h"
#include "inputs.h"
#include "tqm/quantize.h"
#include "tqm/reader.h"
#include "tqm/writer.h"

namespace {

bool SameBits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// The spec's formulas, written out independently of quantize.cc.
uint8_t SpecQuantize(float x, tqm::Affine a) {
  float q = std::nearbyint(x / a.scale) + a.zero;
  return static_cast<uint8_t>(q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q));
}
float SpecDequantize(uint8_t q, tqm::Affine a) {
  return a.scale * (static_cast<float>(q) - a.zero);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tqm_fuzz::RoundtripInput in = tqm_fuzz::ParseRoundtripInput(data, size);
  tqm::PackStats stats;
  absl::StatusOr<std::string> a = tqm::PackToString(in.source, in.options, &stats);
  tqm::PackOptions again = in.options;
  if (in.second_threaded) again.threads = 2;
  absl::StatusOr<std::string> b = tqm::PackToString(in.source, again);
  FUZZ_CHECK(a.ok() == b.ok());
  if (!a.ok()) {
    FUZZ_CHECK(a.status() == b.status());
    if (a.status().code() != absl::StatusCode::kInvalidArgument) {
      fprintf(stderr, "pack failed unexpectedly: %s\n", a.status().ToString().c_str());
      abort();
    }
    return 0;
  }
  FUZZ_CHECK(*a == *b);
  FUZZ_CHECK(stats.file_bytes == a->size());

  std::vector<uint8_t> file(a->begin(), a->end());
  auto opened = tqm::Reader::FromBuffer(absl::MakeConstSpan(file), "roundtrip.tqm");
  FUZZ_CHECK_OK(opened.status());
  const tqm::Reader& r = **opened;
  FUZZ_CHECK_OK(r.Verify());
  FUZZ_CHECK(r.table().size() == stats.table_entries);
  for (const tqm::MetaEntry& e : in.source.metadata()) {
    const tqm::MetaValue* v = r.FindMeta(e.key);
    FUZZ_CHECK(v != nullptr && v->type == e.value.type && v->int64 == e.value.int64 &&
               v->bytes == e.value.bytes);
    if (v->type == tqm::format::kMetaFloat64) FUZZ_CHECK(v->float64 == e.value.float64);
  }
  FUZZ_CHECK(r.tensors().size() == in.values.size());

  for (size_t t = 0; t < in.values.size(); ++t) {
    const tqm::TensorInfo& ti = r.tensors()[t];
    const std::vector<float>& x = in.values[t];
    FUZZ_CHECK(ti.name == in.source.tensors()[t].name);
    FUZZ_CHECK(ti.dims == in.dims[t]);
    FUZZ_CHECK(ti.numel == x.size());
    std::vector<float> got(x.size());
    FUZZ_CHECK_OK(r.ReadFloat(t, absl::MakeSpan(got)));
    if (!ti.quantized()) {
      FUZZ_CHECK(std::memcmp(got.data(), x.data(), 4 * x.size()) == 0);
      continue;
    }
    std::vector<uint8_t> q(ti.numel);
    FUZZ_CHECK_OK(r.DecodeTensor(t, absl::MakeSpan(q)));
    const uint64_t rows = ti.affine.size();
    // Per-row storage only when asked for (the writer may still choose
    // per-tensor, e.g. for 1-D tensors).
    const bool per_row = ti.storage == tqm::format::kStorageU8Row;
    FUZZ_CHECK(!per_row || in.options.granularity == tqm::Granularity::kRow);
    FUZZ_CHECK(rows == (per_row ? ti.dims[0] : 1));
    const uint64_t row = ti.numel / rows;
    for (uint64_t k = 0; k < rows; ++k) {
      auto xs = absl::MakeConstSpan(x).subspan(k * row, row);
      absl::StatusOr<tqm::Affine> want = tqm::ChooseAffine(xs);
      FUZZ_CHECK_OK(want.status());
      const tqm::Affine& have = ti.affine[k];
      FUZZ_CHECK(SameBits(want->scale, have.scale) && SameBits(want->zero, have.zero));
      const bool representable = have.scale >= 1e-30f && std::fabs(have.zero) <= 4194304.0f;
      for (uint64_t i = 0; i < row; ++i) {
        const size_t j = k * row + i;
        FUZZ_CHECK(q[j] == SpecQuantize(x[j], have));
        FUZZ_CHECK(SameBits(got[j], SpecDequantize(q[j], have)));
        if (representable && SpecQuantize(got[j], have) != q[j]) {
          fprintf(stderr,
                  "tensor %zu element %zu: x=%a q=%d x'=%a requantizes to %d "
                  "(scale %a zero %a)\n",
                  t, j, x[j], q[j], got[j], SpecQuantize(got[j], have), have.scale,
                  have.zero);
          abort();
        }
      }
    }
  }
  return 0;
}
