// tqm-codec-bench: sizes and single-thread decode speed of the chunk entropy
// codecs (rANS, Huffman, zstd) on synthetic quantized weights, against the
// order-0 bound, ZSTD_decompress and memcpy measured in the same run.
// With --seqtable: decode speed of the seqtable codec at controlled table
// hit rates, against the reference decoder, the previous fast decoder (kept
// below for comparison only) and memcpy, on the same bytes.

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
#include <unordered_set>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "codec/codec_internal.h"
#include "codec/entropy.h"
#include "tool_util.h"
#include "tqm/codec.h"
#include "tqm/format.h"

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

// ---- --seqtable ----

absl::Status SeqError(const char* what, size_t pos) {
  return absl::DataLossError(
      absl::StrFormat("seqtable: %s at payload byte %d", what, pos));
}

// The fast decoder libtqm had before the block decoder (eight codes at a time,
// one careful step at every escape), for comparison only.
absl::Status OldDecodeSeqTable(absl::Span<const uint8_t> in,
                               absl::Span<const uint32_t> table,
                               absl::Span<uint8_t> out) {
  const size_t groups = out.size() / 4, tail = out.size() % 4;
  const uint8_t* p = in.data();
  const uint8_t* const end = in.data() + in.size();
  uint8_t* o = out.data();
  const uint32_t* t = table.data();
  const uint32_t n = static_cast<uint32_t>(table.size());
  size_t g = 0;
  while (g < groups) {
    // Fast path: up to eight table codes in a row. The codes before the first
    // escape or invalid code are expanded without further branches; that
    // code then takes the careful path below.
    if (groups - g >= 8 && end - p >= 16) {
      uint16_t c[8];
      std::memcpy(c, p, 16);
      uint32_t bad = 0;
      for (int k = 0; k < 8; ++k) bad |= static_cast<uint32_t>(c[k] >= n) << k;
      if (!bad) {
        for (int k = 0; k < 8; ++k) std::memcpy(o + 4 * k, &t[c[k]], 4);
        p += 16;
        o += 32;
        g += 8;
        continue;
      }
      // Expand all eight with clamped indices (branch-free, in bounds since
      // n >= 1 here), then keep only the valid prefix.
      const int valid = __builtin_ctz(bad);
      if (n > 0) {
        for (int k = 0; k < 8; ++k) {
          const uint32_t idx = c[k] < n ? c[k] : n - 1;
          std::memcpy(o + 4 * k, &t[idx], 4);
        }
      }
      p += 2 * valid;
      o += 4 * valid;
      g += valid;
    }
    if (end - p < 2) return SeqError("payload ends inside the codes", p - in.data());
    uint16_t code;
    std::memcpy(&code, p, 2);
    p += 2;
    if (code < n) {
      std::memcpy(o, &t[code], 4);
    } else if (code == tqm::format::kEscape) {
      if (end - p < 4) return SeqError("escape cut off", p - in.data());
      std::memcpy(o, p, 4);
      p += 4;
    } else {
      return SeqError(
          absl::StrFormat("invalid code %d (table has %d entries)", code, n).c_str(),
          p - 2 - in.data());
    }
    o += 4;
    ++g;
  }
  if (static_cast<size_t>(end - p) != tail) {
    return SeqError("payload length does not match the decoded size", p - in.data());
  }
  if (tail) std::memcpy(o, p, tail);  // (p may be null for an empty payload)
  return absl::OkStatus();
}

// Chunks of `chunk` bytes whose 4-byte groups are table entries with
// probability `hit` (uniform over the table) and otherwise random groups
// that are not in the table, escaped at random positions.
struct SeqData {
  std::vector<uint8_t> plain;
  std::vector<std::string> encoded;
  size_t hits = 0, groups = 0, encoded_bytes = 0;
};

SeqData MakeSeqData(const tqm::SeqTable& table,
                    const std::unordered_set<uint32_t>& in_table, double hit,
                    size_t total, size_t chunk, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  SeqData d;
  d.plain.resize(total);
  const auto e = table.entries();
  for (size_t i = 0; i + 4 <= total; i += 4) {
    uint32_t v;
    if (u(rng) < hit) {
      v = e[rng() % e.size()];
      ++d.hits;
    } else {
      do v = static_cast<uint32_t>(rng());
      while (in_table.count(v));
    }
    std::memcpy(&d.plain[i], &v, 4);
    ++d.groups;
  }
  for (size_t c = 0; c < total / chunk; ++c) {
    std::string enc;
    tqm::EncodeSeqTable({d.plain.data() + c * chunk, chunk}, table, &enc);
    d.encoded_bytes += enc.size();
    d.encoded.push_back(std::move(enc));
  }
  return d;
}

int RunSeqTableBench(size_t mib, size_t chunk_kib, size_t table_entries, int reps,
                     uint64_t seed) {
  const size_t chunk = chunk_kib << 10;
  const size_t total = std::max(chunk, (mib << 20) / chunk * chunk);
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> entries;
  std::unordered_set<uint32_t> in_table;
  while (entries.size() < table_entries) {
    const uint32_t v = static_cast<uint32_t>(rng());
    if (in_table.insert(v).second) entries.push_back(v);
  }
  const tqm::SeqTable table(entries);
  const std::vector<double> rates = {0.60, 0.75, 0.83, 0.90, 1.00};
  std::vector<SeqData> data;
  for (size_t r = 0; r < rates.size(); ++r) {
    data.push_back(MakeSeqData(table, in_table, rates[r], total, chunk, seed + 1 + r));
  }
  std::vector<uint8_t> out(total);
  std::memset(out.data(), 0, out.size());  // fault the pages in before timing

  using Fn = std::function<absl::Status(absl::Span<const uint8_t>, absl::Span<uint8_t>)>;
  const auto t = table.entries();
  const std::vector<std::pair<std::string, Fn>> decoders = {
      {"memcpy", nullptr},  // copies the decoded bytes: the speed of light
      {"reference",
       [t](auto in, auto o) { return tqm::DecodeSeqTableReference(in, t, o); }},
      {"old fast", [t](auto in, auto o) { return OldDecodeSeqTable(in, t, o); }},
      {"DecodeSeqTable", [t](auto in, auto o) { return tqm::DecodeSeqTable(in, t, o); }},
      {"new portable",
       [t](auto in, auto o) {
         tqm::codec_internal::SetSeqTableIsa(tqm::entropy_internal::Isa::kPortable);
         absl::Status s = tqm::DecodeSeqTable(in, t, o);
         tqm::codec_internal::SetSeqTableIsa(tqm::entropy_internal::Isa::kAuto);
         return s;
       }},
      {"block 2 KiB",
       [t](absl::Span<const uint8_t> in, absl::Span<uint8_t> o) -> absl::Status {
         // As the runtime's fused kernel uses it: 512 groups at a time into
         // a buffer that stays in L1, copied out here so that it can be checked.
         alignas(64) uint8_t buf[2048];
         tqm::SeqTableBlockDecoder dec(in, t, o.size());
         size_t at = 0;
         while (!dec.done()) {
           absl::StatusOr<size_t> k = dec.Next(absl::MakeSpan(buf));
           if (!k.ok()) return k.status();
           std::memcpy(o.data() + at, buf, *k);
           at += *k;
         }
         return absl::OkStatus();
       }},
  };
  constexpr size_t kOld = 2, kNew = 3;  // rows of `decoders`
  // best[r][d]: fastest pass, seconds.
  std::vector<std::vector<double>> best(rates.size(),
                                        std::vector<double>(decoders.size(), 1e30));
  bool all_ok = true;
  for (int rep = 0; rep < reps; ++rep) {
    for (size_t r = 0; r < rates.size(); ++r) {
      const SeqData& d = data[r];
      for (size_t k = 0; k < decoders.size(); ++k) {
        if (best[r][k] < 0) continue;  // failed before
        auto t0 = Clock::now();
        for (size_t c = 0; c < d.encoded.size(); ++c) {
          absl::Span<uint8_t> o(out.data() + c * chunk, chunk);
          if (!decoders[k].second) {
            std::memcpy(o.data(), d.plain.data() + c * chunk, chunk);
            continue;
          }
          const std::string& e = d.encoded[c];
          absl::Status s = decoders[k].second(
              {reinterpret_cast<const uint8_t*>(e.data()), e.size()}, o);
          if (!s.ok()) {
            std::fprintf(stderr, "%s: decode failed: %s\n", decoders[k].first.c_str(),
                         s.ToString().c_str());
            best[r][k] = -1;
            break;
          }
        }
        if (best[r][k] < 0) {
          all_ok = false;
          continue;
        }
        best[r][k] = std::min(best[r][k], Seconds(t0, Clock::now()));
        if (rep == 0 && std::memcmp(out.data(), d.plain.data(), total) != 0) {
          std::fprintf(stderr, "%s: decoded bytes differ\n", decoders[k].first.c_str());
          best[r][k] = -1;
          all_ok = false;
        }
        std::memset(out.data(), 0, out.size());
      }
    }
  }
  std::printf("cpu: %s, clock %s (dependent adds)\n", tqm::CpuModel().c_str(),
              tqm::GhzText(tqm::MeasureGhz()).c_str());
  std::printf(
      "seqtable: %.0f MiB per hit rate in chunks of %zu KiB, table of %zu entries "
      "(uniform hits), seed %llu\n",
      total / 1048576.0, chunk_kib, table_entries, static_cast<unsigned long long>(seed));
  std::printf(
      "decode: GB/s of decoded bytes, best of %d single-thread passes, round robin; "
      "new/old = DecodeSeqTable / old fast\n"
      "DecodeSeqTable: %s loop; new portable: the loop of CPUs without AVX2; block 2 "
      "KiB: "
      "SeqTableBlockDecoder 512 groups at a time, plus a copy out\n\n",
      reps, tqm::codec_internal::SeqTableAvx2Available() ? "AVX2" : "portable");
  std::printf("%6s %7s", "hits", "ratio");
  for (const auto& dec : decoders) std::printf(" %15s", dec.first.c_str());
  std::printf(" %8s\n", "new/old");
  for (size_t r = 0; r < rates.size(); ++r) {
    const SeqData& d = data[r];
    std::printf("%5.1f%% %7.3f", 100.0 * d.hits / d.groups,
                static_cast<double>(total) / d.encoded_bytes);
    for (size_t k = 0; k < decoders.size(); ++k) {
      if (best[r][k] < 0) {
        std::printf(" %15s", "FAILED");
      } else {
        std::printf(" %15.2f", total / best[r][k] / 1e9);
      }
    }
    std::printf(" %7.2fx\n", best[r][kOld] / best[r][kNew]);
  }
  return all_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tqm-codec-bench: encode synthetic 8-bit quantized weights in chunks with each\n"
      "entropy codec; print sizes against the order-0 bound and single-thread decode\n"
      "speed against ZSTD_decompress and memcpy, all measured in this run."};
  tqm::SetUpCommandLine(app, "tqm-codec-bench");
  size_t mib = 64, zstd19_mib = 16, chunk_kib = 64;
  int reps = 10;
  uint64_t seed = 1;
  std::string dist = "gaussian";
  bool seqtable = false;
  size_t table_entries = 4096;
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
  app.add_flag("--seqtable", seqtable,
               "instead: seqtable decode speed at table hit rates 60-100 %, --mib MiB "
               "per rate (e.g. --seqtable --mib 8)");
  app.add_option("--table-entries", table_entries,
                 "--seqtable: table size (default 4096)")
      ->check(CLI::Range(1, 65535));
  TQM_PARSE_COMMAND_LINE(app, argc, argv);
  if (seqtable) return RunSeqTableBench(mib, chunk_kib, table_entries, reps, seed);

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

  std::printf("cpu: %s, clock %s (dependent adds; bmi2: %s)\n", tqm::CpuModel().c_str(),
              tqm::GhzText(tqm::MeasureGhz()).c_str(), ei::HaveBmi2() ? "yes" : "no");
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
