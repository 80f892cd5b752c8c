// The fast seqtable decoders (DecodeSeqTable and SeqTableBlockDecoder, with
// the AVX2 loop where the CPU has it and the portable one) against
// DecodeSeqTableReference: every decoded size from 0 to 300 bytes, table
// hit rates from 0 to 100 %, tables of 0 to 65536 entries, escaped groups
// that hold 0xFFFF or are table entries, then every truncation, invalid
// codes at every item, trailing bytes, cut-off escapes; the same on 64 KiB
// chunks. Buffers have the exact size (ASan sees any access past them) and
// the output is fenced with guard bytes (so do plain builds).

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "codec/codec_internal.h"
#include "tqm/codec.h"
#include "tqm/format.h"

namespace {

using tqm::entropy_internal::Isa;

constexpr uint8_t kGuard = 0xA5;
constexpr size_t kGuardBytes = 64;

// A chunk and where its code items begin (payload offsets).
struct Encoded {
  std::vector<uint8_t> payload;
  std::vector<size_t> items;
};

std::vector<uint32_t> RandomTable(size_t n, std::mt19937& rng) {
  std::vector<uint32_t> t(n);
  for (uint32_t& v : t) v = rng();
  return t;
}

// Groups that are table entries with probability `hit`; the others random,
// often with 0xFFFF halves (escape payloads that read as escapes) or
// all-ones.
std::vector<uint8_t> RandomPlain(size_t size, const std::vector<uint32_t>& table,
                                 double hit, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<uint8_t> v(size);
  for (size_t i = 0; i + 4 <= size; i += 4) {
    uint32_t g;
    if (!table.empty() && u(rng) < hit) {
      g = table[rng() % table.size()];
    } else {
      switch (rng() % 6) {
        case 0:
          g = 0xFFFF0000u | (rng() & 0xFFFF);
          break;
        case 1:
          g = 0x0000FFFFu | (rng() << 16);
          break;
        case 2:
          g = 0xFFFFFFFFu;
          break;
        default:
          g = rng();
      }
    }
    std::memcpy(&v[i], &g, 4);
  }
  for (size_t i = size / 4 * 4; i < size; ++i) v[i] = static_cast<uint8_t>(rng());
  return v;
}

// Encodes like EncodeSeqTable, but escapes a group that is in the table with
// probability `escape_hits` (a decoder must accept that).
Encoded Encode(const std::vector<uint8_t>& plain, const std::vector<uint32_t>& table,
               double escape_hits, std::mt19937& rng) {
  std::unordered_map<uint32_t, uint16_t> codes;
  for (size_t i = 0; i < table.size() && i < tqm::format::kEscape; ++i) {
    codes.emplace(table[i], static_cast<uint16_t>(i));
  }
  std::uniform_real_distribution<double> u(0, 1);
  Encoded e;
  const size_t groups = plain.size() / 4;
  for (size_t g = 0; g < groups; ++g) {
    uint32_t v;
    std::memcpy(&v, &plain[4 * g], 4);
    e.items.push_back(e.payload.size());
    auto it = codes.find(v);
    if (it != codes.end() && !(u(rng) < escape_hits)) {
      e.payload.push_back(static_cast<uint8_t>(it->second));
      e.payload.push_back(static_cast<uint8_t>(it->second >> 8));
    } else {
      e.payload.push_back(0xFF);
      e.payload.push_back(0xFF);
      e.payload.insert(e.payload.end(), &plain[4 * g], &plain[4 * g] + 4);
    }
  }
  e.payload.insert(e.payload.end(), plain.begin() + 4 * groups, plain.end());
  return e;
}

// The reference's status as the fast decoders word it (they say "does not
// match the decoded size"; everything else is the same).
absl::Status AsFast(const absl::Status& ref) {
  if (ref.ok()) return ref;
  return absl::Status(
      ref.code(),
      absl::StrReplaceAll(ref.message(),
                          {{"payload length does not match at",
                            "payload length does not match the decoded size at"}}));
}

std::string Describe(const std::vector<uint8_t>& in, size_t table_size, size_t out_size) {
  return absl::StrCat("payload ", in.size(), " bytes, table ", table_size,
                      " entries, out ", out_size, " bytes");
}

// An output buffer with guard bytes on both sides.
class Fenced {
 public:
  explicit Fenced(size_t n) : buf_(n + 2 * kGuardBytes, kGuard), n_(n) {}
  absl::Span<uint8_t> span() { return absl::MakeSpan(buf_.data() + kGuardBytes, n_); }
  std::vector<uint8_t> bytes() const {
    return std::vector<uint8_t>(buf_.begin() + kGuardBytes,
                                buf_.begin() + kGuardBytes + n_);
  }
  bool GuardsIntact() const {
    for (size_t i = 0; i < kGuardBytes; ++i) {
      if (buf_[i] != kGuard || buf_[kGuardBytes + n_ + i] != kGuard) return false;
    }
    return true;
  }

 private:
  std::vector<uint8_t> buf_;
  size_t n_;
};

// Decodes with SeqTableBlockDecoder into an exact-size buffer of `buf_size`
// bytes per call; returns the status and (on success) all bytes.
absl::Status BlockDecode(const std::vector<uint8_t>& in,
                         const std::vector<uint32_t>& table, size_t out_size,
                         size_t buf_size, std::vector<uint8_t>* out) {
  out->clear();
  tqm::SeqTableBlockDecoder dec(in, table, out_size);
  std::vector<uint8_t> buf(buf_size);
  size_t calls = 0;
  while (!dec.done()) {
    const size_t before = dec.remaining();
    absl::StatusOr<size_t> k = dec.Next(absl::MakeSpan(buf));
    if (!k.ok()) {
      // Errors are sticky.
      absl::StatusOr<size_t> again = dec.Next(absl::MakeSpan(buf));
      EXPECT_EQ(again.status(), k.status());
      return k.status();
    }
    EXPECT_LE(*k, buf_size);
    EXPECT_EQ(dec.remaining(), before - *k);
    if (*k < before) {
      EXPECT_EQ(*k, buf_size / 4 * 4) << "a call short of the end returns whole groups";
    }
    out->insert(out->end(), buf.begin(), buf.begin() + *k);
    if (++calls > out_size + 2) {
      ADD_FAILURE() << "block decoder makes no progress";
      break;
    }
  }
  EXPECT_EQ(dec.remaining(), 0u);
  absl::StatusOr<size_t> after = dec.Next(absl::MakeSpan(buf));
  EXPECT_TRUE(after.ok() && *after == 0);
  return absl::OkStatus();
}

// Runs every decoder on (in, table, out_size) and checks them against the
// reference: same success, same error message (offsets included), same
// bytes. `block_sizes` are the SeqTableBlockDecoder buffer sizes in groups;
// `odd_tail` also tries buffers of 4k + 1..3 bytes.
void CheckAll(const std::vector<uint8_t>& in_bytes, const std::vector<uint32_t>& table,
              size_t out_size, const std::vector<size_t>& block_sizes,
              bool odd_tail = false) {
  // Exact-size copies: ASan reports any read past the payload.
  const std::vector<uint8_t> in(in_bytes);
  std::vector<uint8_t> ref(out_size);
  const absl::Status ref_status =
      tqm::DecodeSeqTableReference(in, table, absl::MakeSpan(ref));
  const absl::Status want = AsFast(ref_status);
  for (Isa isa : {Isa::kAuto, Isa::kPortable}) {
    tqm::codec_internal::SetSeqTableIsa(isa);
    const std::string where =
        absl::StrCat(Describe(in, table.size(), out_size),
                     isa == Isa::kPortable ? ", portable" : ", auto");
    {
      std::vector<uint8_t> exact(out_size);
      const absl::Status s = tqm::DecodeSeqTable(in, table, absl::MakeSpan(exact));
      ASSERT_EQ(s, want) << where;
      if (s.ok()) ASSERT_EQ(exact, ref) << where;
      Fenced fenced(out_size);
      ASSERT_EQ(tqm::DecodeSeqTable(in, table, fenced.span()), want) << where;
      ASSERT_TRUE(fenced.GuardsIntact()) << where << ": wrote outside the output";
      if (want.ok()) ASSERT_EQ(fenced.bytes(), ref) << where;
      ASSERT_EQ(tqm::DecodeChunkBytes(tqm::format::kCodecSeqTable, in, table,
                                      absl::MakeSpan(exact)),
                want)
          << where;
    }
    for (size_t groups : block_sizes) {
      for (size_t extra = 0; extra < (odd_tail ? 4u : 1u); ++extra) {
        const size_t buf_size = 4 * groups + extra;
        std::vector<uint8_t> got;
        const absl::Status s = BlockDecode(in, table, out_size, buf_size, &got);
        ASSERT_EQ(s, want) << where << ", block buffer " << buf_size;
        if (s.ok()) ASSERT_EQ(got, ref) << where << ", block buffer " << buf_size;
      }
    }
  }
  tqm::codec_internal::SetSeqTableIsa(Isa::kAuto);
}

std::vector<size_t> AllBlockSizes() {
  std::vector<size_t> v;
  for (size_t g = 1; g <= 64; ++g) v.push_back(g);
  return v;
}

const std::vector<size_t> kTableSizes = {0, 1, 2, 255, 65535};
const std::vector<double> kHitRates = {0.0, 0.3, 0.6, 0.75, 0.9, 1.0};

TEST(SeqTable, SmallChunksMatchReference) {
  std::mt19937 rng(1);
  const std::vector<size_t> all_blocks = AllBlockSizes();
  for (size_t n : kTableSizes) {
    const std::vector<uint32_t> table = RandomTable(n, rng);
    for (double hit : kHitRates) {
      for (size_t size = 0; size <= 300; ++size) {
        const auto plain = RandomPlain(size, table, hit, rng);
        const Encoded e = Encode(plain, table, size % 5 == 0 ? 0.1 : 0.0, rng);
        std::vector<uint8_t> out(size);
        ASSERT_TRUE(
            tqm::DecodeSeqTableReference(e.payload, table, absl::MakeSpan(out)).ok());
        ASSERT_EQ(out, plain);
        // Every block size for one size in 11 (and buffers of 4k + 1..3
        // bytes for one in 33), a rotating two otherwise.
        if (size % 11 == 0) {
          CheckAll(e.payload, table, size, all_blocks, /*odd_tail=*/size % 33 == 0);
        } else {
          CheckAll(e.payload, table, size, {1 + size % 64, 64 + size % 3});
        }
        if (HasFatalFailure()) return;
      }
    }
  }
}

// Every prefix, trailing bytes, and the wrong decoded size.
TEST(SeqTable, TruncatedAndPaddedPayloads) {
  std::mt19937 rng(2);
  for (size_t n : kTableSizes) {
    const std::vector<uint32_t> table = RandomTable(n, rng);
    for (double hit : {0.0, 0.6, 0.9, 1.0}) {
      for (size_t size = 0; size <= 300; size += (size < 40 ? 1 : 7)) {
        const auto plain = RandomPlain(size, table, hit, rng);
        const Encoded e = Encode(plain, table, 0.0, rng);
        const std::vector<size_t> blocks = {1 + size % 64, 64};
        for (size_t len = 0; len < e.payload.size(); ++len) {
          CheckAll(std::vector<uint8_t>(e.payload.begin(), e.payload.begin() + len),
                   table, size, blocks);
          if (HasFatalFailure()) return;
        }
        for (size_t extra = 1; extra <= 6; ++extra) {
          std::vector<uint8_t> longer = e.payload;
          for (size_t k = 0; k < extra; ++k)
            longer.push_back(static_cast<uint8_t>(rng()));
          CheckAll(longer, table, size, blocks);
          if (HasFatalFailure()) return;
        }
        for (size_t other : {size + 1, size + 3, size + 4, size > 0 ? size - 1 : 0}) {
          CheckAll(e.payload, table, other, blocks);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// An invalid code (N..0xFFFE) in place of each code item in turn, and an
// escape whose 4 bytes are cut by the end of the payload.
TEST(SeqTable, InvalidCodeAtEveryItem) {
  std::mt19937 rng(3);
  for (size_t n : {1, 2, 255, 4096, 65534}) {
    const std::vector<uint32_t> table = RandomTable(n, rng);
    for (double hit : {0.0, 0.6, 0.9, 1.0}) {
      for (size_t size = 4; size <= 300; size += (size < 80 ? 1 : 13)) {
        const auto plain = RandomPlain(size, table, hit, rng);
        const Encoded e = Encode(plain, table, 0.0, rng);
        const std::vector<size_t> blocks = {1 + size % 64, 64};
        for (size_t item : e.items) {
          std::vector<uint8_t> bad = e.payload;
          const uint32_t lo = static_cast<uint32_t>(n);
          const uint16_t code =
              static_cast<uint16_t>(item % 3 == 0   ? lo
                                    : item % 3 == 1 ? 0xFFFE
                                                    : lo + rng() % (0xFFFF - lo));
          bad[item] = static_cast<uint8_t>(code);
          bad[item + 1] = static_cast<uint8_t>(code >> 8);
          CheckAll(bad, table, size, blocks);
          if (HasFatalFailure()) return;
          // An escape in its place instead: its 4 bytes swallow what follows,
          // so the payload is short or ends inside an escape.
          bad[item] = bad[item + 1] = 0xFF;
          CheckAll(bad, table, size, blocks);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// Random bytes as payloads: mostly errors of every kind, some valid.
TEST(SeqTable, RandomPayloads) {
  std::mt19937 rng(4);
  for (size_t n : {0, 1, 3, 200, 60000, 65535, 65536}) {
    const std::vector<uint32_t> table = RandomTable(n, rng);
    for (int iter = 0; iter < 3000; ++iter) {
      const size_t len = rng() % 400;
      std::vector<uint8_t> in(len);
      for (uint8_t& b : in) {
        // Skewed towards 0x00 and 0xFF so that escapes and small codes are common.
        const uint32_t r = rng() % 8;
        b = r < 3   ? 0xFF
            : r < 6 ? static_cast<uint8_t>(rng() % 3)
                    : static_cast<uint8_t>(rng());
      }
      const size_t out_size = rng() % 2 ? len : rng() % 300;
      CheckAll(in, table, out_size, {1 + rng() % 64});
      if (HasFatalFailure()) return;
    }
  }
}

// 64 KiB chunks at the hit rates that matter, runs of escapes whose payloads
// read as escapes, and an invalid code or a cut at random places.
TEST(SeqTable, LargeChunks) {
  std::mt19937 rng(5);
  for (size_t n : {1, 255, 4096, 65535}) {
    const std::vector<uint32_t> table = RandomTable(n, rng);
    for (double hit : {0.0, 0.55, 0.6, 0.75, 0.83, 0.9, 0.99, 1.0}) {
      for (size_t size : {65536, 65537, 65539, 4099}) {
        const auto plain = RandomPlain(size, table, hit, rng);
        const Encoded e = Encode(plain, table, 0.02, rng);
        CheckAll(e.payload, table, size, {512, 37, 64, 1000});
        if (HasFatalFailure()) return;
        for (int k = 0; k < 8; ++k) {
          std::vector<uint8_t> bad = e.payload;
          if (n < 0xFFFF) {  // (a full table leaves no invalid code)
            const size_t item = e.items[rng() % e.items.size()];
            const uint16_t code = static_cast<uint16_t>(n + rng() % (0xFFFF - n));
            bad[item] = static_cast<uint8_t>(code);
            bad[item + 1] = static_cast<uint8_t>(code >> 8);
            CheckAll(bad, table, size, {512});
          }
          bad = e.payload;
          bad.resize(rng() % bad.size());
          CheckAll(bad, table, size, {512});
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// A run of escapes whose payloads are all 0xFFFF, at every alignment with
// respect to the decoders' 64-word blocks.
TEST(SeqTable, EscapesOfAllOnes) {
  const std::vector<uint32_t> table = {7, 8, 9};
  for (size_t before = 0; before < 70; ++before) {
    for (size_t run = 1; run < 30; ++run) {
      std::vector<uint8_t> in;
      std::vector<uint8_t> want;
      for (size_t k = 0; k < before; ++k) {
        in.push_back(static_cast<uint8_t>(k % 3));
        in.push_back(0);
        const uint32_t v = table[k % 3];
        want.insert(want.end(), reinterpret_cast<const uint8_t*>(&v),
                    reinterpret_cast<const uint8_t*>(&v) + 4);
      }
      for (size_t k = 0; k < run; ++k) {
        in.insert(in.end(), 6, 0xFF);
        want.insert(want.end(), 4, 0xFF);
      }
      for (size_t k = 0; k < 40; ++k) {
        in.push_back(1);
        in.push_back(0);
        want.insert(want.end(), {8, 0, 0, 0});
      }
      std::vector<uint8_t> out(want.size());
      for (Isa isa : {Isa::kAuto, Isa::kPortable}) {
        tqm::codec_internal::SetSeqTableIsa(isa);
        ASSERT_TRUE(tqm::DecodeSeqTable(in, table, absl::MakeSpan(out)).ok());
        ASSERT_EQ(out, want) << before << " " << run;
      }
      tqm::codec_internal::SetSeqTableIsa(Isa::kAuto);
      CheckAll(in, table, want.size(), {1, 17, 64});
      if (HasFatalFailure()) return;
    }
  }
}

TEST(SeqTableBlockDecoder, EmptyChunkStillChecksThePayload) {
  const std::vector<uint32_t> table = {1};
  std::vector<uint8_t> buf(8);
  tqm::SeqTableBlockDecoder ok({}, table, 0);
  EXPECT_FALSE(ok.done());
  EXPECT_EQ(ok.remaining(), 0u);
  absl::StatusOr<size_t> k = ok.Next(absl::MakeSpan(buf));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, 0u);
  EXPECT_TRUE(ok.done());

  const std::vector<uint8_t> extra = {0};
  tqm::SeqTableBlockDecoder bad(extra, table, 0);
  EXPECT_EQ(bad.Next(absl::MakeSpan(buf)).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(bad.done());
}

TEST(SeqTableBlockDecoder, RejectsBuffersThatHoldNoGroup) {
  const std::vector<uint32_t> table = {0x04030201u};
  const std::vector<uint8_t> in = {0, 0, 0, 0, 9, 9};  // 2 groups and 2 tail bytes
  tqm::SeqTableBlockDecoder dec(in, table, 10);
  std::vector<uint8_t> small(3), four(4);
  EXPECT_EQ(dec.Next(absl::MakeSpan(small)).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Not sticky: a usable buffer goes on.
  absl::StatusOr<size_t> k = dec.Next(absl::MakeSpan(four));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, 4u);
  k = dec.Next(absl::MakeSpan(four));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, 4u);
  EXPECT_FALSE(dec.done());
  EXPECT_EQ(dec.remaining(), 2u);
  // The 2 tail bytes fit in a 3-byte buffer.
  k = dec.Next(absl::MakeSpan(small));
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, 2u);
  EXPECT_EQ(small[0], 9);
  EXPECT_TRUE(dec.done());
}

TEST(SeqTable, IsaSwitch) {
  // Only reports which loop kAuto takes here; both are tested above.
  std::printf("seqtable AVX2 loop available: %s\n",
              tqm::codec_internal::SeqTableAvx2Available() ? "yes" : "no");
}

}  // namespace
