// tqm-codec-bench: sizes and single-thread decode speed of the chunk entropy
// codecs (rANS, Huffman, zstd) on synthetic quantized weights, against the
// order-0 bound, ZSTD_decompress and memcpy measured in the same run.

#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "tool_util.h"
#include "absl/strings/str_format.h"
#include "entropy.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Quantized weights: `dist` samples, scale = (max - min) / 255 over all of
// them (one affine per tensor), q = round((v - min) / scale).
std::vector<uint8_t> MakeWeights(const std::string& dist, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> v(n);
  if (dist == "gaussian") {
    std::normal_distribution<float> d;
    for (auto& x : v) x = d(rng);
  } else if (dist == "laplace") {
    std::exponential_distribution<float> d(1);
    for (auto& x : v) x = (rng() & 1) ? d(rng) : -d(rng);
  } else {  // student-tN
    std::student_t_distribution<float> d(std::stoi(dist.substr(9)));
    for (auto& x : v) x = d(rng);
  }
  auto [mn, mx] = std::minmax_element(v.begin(), v.end());
  const float lo = *mn, scale = (*mx - *mn) / 255;
  std::vector<uint8_t> q(n);
  for (size_t i = 0; i < n; ++i)
    q[i] = static_cast<uint8_t>(std::lround((v[i] - lo) / scale));
  return q;
}

struct Row {
  std::string name;
  size_t input = 0;  // bytes covered
  size_t size = 0;   // encoded bytes
  double bound = 0;  // order-0 bound of the covered chunks, bytes
  double encode_s = 0;
  double decode_s = 0;
  bool ok = true;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tqm-codec-bench: encode synthetic 8-bit quantized weights in chunks with each\n"
      "entropy codec; print sizes against the order-0 bound and single-thread decode\n"
      "speed against ZSTD_decompress and memcpy, all measured in this run."};
  size_t mib = 64, zstd19_mib = 16, chunk_kib = 64;
  int reps = 10;
  uint64_t seed = 1;
  std::string dist = "gaussian";
  app.add_option("--mib", mib, "MiB of weights (default 64)")->check(CLI::Range(1, 4096));
  app.add_option("--chunk-kib", chunk_kib, "chunk size in KiB (default 64)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--zstd19-mib", zstd19_mib,
                 "MiB encoded with zstd -19 (slow; default 16)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--reps", reps,
                 "decode passes per codec, round robin; the fastest counts (default 10)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--seed", seed, "random seed (default 1)");
  app.add_option("--dist", dist, "gaussian, laplace or student-tN (e.g. student-t5)")
      ->check([](const std::string& d) {
        if (d == "gaussian" || d == "laplace") return std::string();
        if (d.rfind("student-t", 0) == 0 && d.size() > 9 &&
            d.find_first_not_of("0123456789", 9) == std::string::npos && d.size() < 13) {
          return std::string();
        }
        return std::string("unknown distribution");
      });
  CLI11_PARSE(app, argc, argv);

  const size_t chunk = chunk_kib << 10;
  const size_t total = std::max(chunk, (mib << 20) / chunk * chunk);
  const size_t nchunks = total / chunk;
  std::vector<uint8_t> data = MakeWeights(dist, total, seed);
  std::vector<double> chunk_bound(nchunks);
  double bound_all = 0;
  for (size_t c = 0; c < nchunks; ++c) {
    chunk_bound[c] = tqm::Order0EntropyBits({data.data() + c * chunk, chunk}) / 8;
    bound_all += chunk_bound[c];
  }
  const double tensor_bound = tqm::Order0EntropyBits(data) / 8;

  std::vector<uint8_t> out(total);
  std::memset(out.data(), 0, out.size());  // fault the pages in before timing

  using EncodeFn = std::function<absl::Status(absl::Span<const uint8_t>, std::string*)>;
  using DecodeFn =
      std::function<absl::Status(absl::Span<const uint8_t>, absl::Span<uint8_t>)>;
  struct Codec {
    Row row;
    DecodeFn decode;
    std::vector<std::string> encoded;
  };
  std::vector<Codec> codecs;
  auto add = [&](const std::string& name, size_t covered, EncodeFn enc, DecodeFn dec) {
    Codec c;
    c.row.name = name;
    c.decode = std::move(dec);
    const size_t n = covered / chunk;
    c.row.input = n * chunk;
    c.encoded.resize(n);
    auto t0 = Clock::now();
    for (size_t i = 0; i < n; ++i) {
      absl::Status s = enc({data.data() + i * chunk, chunk}, &c.encoded[i]);
      if (!s.ok()) {
        std::fprintf(stderr, "%s: encode failed: %s\n", name.c_str(),
                     s.ToString().c_str());
        c.row.ok = false;
        break;
      }
      c.row.size += c.encoded[i].size();
      c.row.bound += chunk_bound[i];
    }
    c.row.encode_s = Seconds(t0, Clock::now());
    c.row.decode_s = 1e30;
    codecs.push_back(std::move(c));
  };
  auto decode_all = [&](Codec& c) {
    auto t1 = Clock::now();
    for (size_t i = 0; i < c.encoded.size(); ++i) {
      const std::string& e = c.encoded[i];
      absl::Status s = c.decode({reinterpret_cast<const uint8_t*>(e.data()), e.size()},
                                {out.data() + i * chunk, chunk});
      if (!s.ok()) {
        std::fprintf(stderr, "%s: decode failed: %s\n", c.row.name.c_str(),
                     s.ToString().c_str());
        c.row.ok = false;
        return;
      }
    }
    c.row.decode_s = std::min(c.row.decode_s, Seconds(t1, Clock::now()));
  };

  namespace ei = tqm::entropy_internal;
  add(
      "memcpy", total,
      [](absl::Span<const uint8_t> in, std::string* o) {
        o->assign(reinterpret_cast<const char*>(in.data()), in.size());
        return absl::OkStatus();
      },
      [](absl::Span<const uint8_t> in, absl::Span<uint8_t> o) {
        std::memcpy(o.data(), in.data(), o.size());
        return absl::OkStatus();
      });
  auto zstd_encoder = [](int level) {
    return [level](absl::Span<const uint8_t> in, std::string* o) {
      return tqm::EncodeZstd(in, level, o);
    };
  };
  // The baseline: libzstd's one-shot API, as a naive caller would use it.
  auto zstd_plain = [](absl::Span<const uint8_t> in, absl::Span<uint8_t> o) {
    size_t r = ZSTD_decompress(o.data(), o.size(), in.data(), in.size());
    return ZSTD_isError(r) || r != o.size() ? absl::DataLossError("zstd")
                                            : absl::OkStatus();
  };
  add("zstd -3 (ZSTD_decompress)", total, zstd_encoder(3), zstd_plain);
  const size_t baseline = codecs.size() - 1;
  add("zstd -3 (DecodeZstd)", total, zstd_encoder(3), tqm::DecodeZstd);
  if (zstd19_mib > 0) {
    add("zstd -19 (DecodeZstd)", std::min(total, zstd19_mib << 20), zstd_encoder(19),
        tqm::DecodeZstd);
  }
  add("rans", total, tqm::EncodeRans,
      [](auto in, auto o) { return ei::DecodeRansWith(ei::Isa::kAuto, in, o); });
  add("rans (portable)", total, tqm::EncodeRans,
      [](auto in, auto o) { return ei::DecodeRansWith(ei::Isa::kPortable, in, o); });
  for (int limit : {12, 11, 0}) {
    auto enc = [limit](absl::Span<const uint8_t> in, std::string* o) {
      return ei::EncodeHuffmanWithLimit(in, limit, o);
    };
    const std::string name =
        limit ? absl::StrFormat("huffman L%d", limit) : "huffman (auto L)";
    add(name, total, enc,
        [](auto in, auto o) { return ei::DecodeHuffmanWith(ei::Isa::kAuto, in, o); });
    if (limit == 0) continue;
    add(name + " (portable)", total, enc,
        [](auto in, auto o) { return ei::DecodeHuffmanWith(ei::Isa::kPortable, in, o); });
  }
  // Round robin, so that a slow spell of a shared machine hits every codec
  // alike; the fastest pass of each counts.
  for (int rep = 0; rep < reps; ++rep) {
    for (Codec& c : codecs) {
      if (!c.row.ok) continue;
      decode_all(c);
      if (rep == 0 && c.row.ok &&
          std::memcmp(out.data(), data.data(), c.row.input) != 0) {
        std::fprintf(stderr, "%s: decoded bytes differ\n", c.row.name.c_str());
        c.row.ok = false;
      }
    }
  }
  std::vector<Row> rows;
  for (const Codec& c : codecs) rows.push_back(c.row);

  std::printf("cpu: %s (bmi2: %s)\n", tqm::CpuModel().c_str(), ei::HaveBmi2() ? "yes" : "no");
  std::printf("data: %s, %.0f MiB in %zu chunks of %zu KiB, seed %llu\n", dist.c_str(),
              total / 1048576.0, nchunks, chunk_kib,
              static_cast<unsigned long long>(seed));
  std::printf(
      "order-0 bound: %.0f bytes summed over chunks (%.4f bits/byte); %.0f bytes for "
      "the whole tensor (%.4f bits/byte)\n",
      bound_all, 8 * bound_all / total, tensor_bound, 8 * tensor_bound / total);
  std::printf(
      "decode: best of %d single-thread runs; x zstd = decode speed / "
      "ZSTD_decompress\n\n",
      reps);
  std::printf(
      "vs chunks / vs tensor: size over the order-0 bound of the chunks coded, summed\n"
      "per chunk / of the whole tensor (pro rata)\n\n");
  std::printf("%-26s %6s %11s %10s %10s %7s %9s %9s\n", "codec", "MiB in", "bytes out",
              "vs chunks", "vs tensor", "ratio", "enc MB/s", "dec GB/s");
  const double base_gbs = rows[baseline].input / rows[baseline].decode_s / 1e9;
  bool all_ok = true;
  for (const Row& r : rows) {
    all_ok &= r.ok;
    if (!r.ok) {
      std::printf("%-26s FAILED\n", r.name.c_str());
      continue;
    }
    const double gbs = r.input / r.decode_s / 1e9;
    const double tensor_share = tensor_bound * r.input / total;
    std::printf("%-26s %6.0f %11zu %+9.3f%% %+9.3f%% %7.4f %9.1f %9.2f  %5.2fx zstd\n",
                r.name.c_str(), r.input / 1048576.0, r.size, 100 * (r.size / r.bound - 1),
                100 * (r.size / tensor_share - 1), static_cast<double>(r.input) / r.size,
                r.input / r.encode_s / 1e6, gbs, gbs / base_gbs);
  }
  return all_ok ? 0 : 1;
}
