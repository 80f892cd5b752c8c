// The stored and seqtable chunk codecs, and dispatch to the others
// (spec/FORMAT.md, "Chunk codecs").
//
// The seqtable decoder keeps the dependency carried from one code item to
// the next out of memory: it classifies 64 code words at a time with SIMD
// compares and finds where the items begin from bitmasks (see "The fast
// seqtable loop" below); DecodeSeqTableReference is the plain loop of the
// spec.

#include "tqm/codec.h"
#include "codec/codec_internal.h"

#include "codec/entropy.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "absl/strings/str_format.h"
#include "base/cpu.h"
#include "base/endian.h"
#include "tqm/status.h"

namespace tqm {
namespace {

// Spec R61 (invalid code) and R62 (payload too short or too long).
absl::Status SeqError(const char* what, size_t pos) {
  return absl::DataLossError(
      absl::StrFormat("seqtable: %s at payload byte %d", what, pos));
}

}  // namespace

SeqTable::SeqTable(std::vector<uint32_t> entries) : entries_(std::move(entries)) {
  codes_.reserve(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) {
    codes_.emplace(entries_[i], static_cast<uint16_t>(i));
  }
}

size_t SeqTableEncodedSize(absl::Span<const uint8_t> in, const SeqTable& table) {
  size_t groups = in.size() / 4;
  size_t size = in.size() % 4;
  for (size_t g = 0; g < groups; ++g) {
    uint32_t v;
    std::memcpy(&v, in.data() + 4 * g, 4);
    size += table.Lookup(v) == format::kEscape ? 6 : 2;
  }
  return size;
}

void EncodeSeqTable(absl::Span<const uint8_t> in, const SeqTable& table,
                    std::string* out) {
  size_t groups = in.size() / 4;
  for (size_t g = 0; g < groups; ++g) {
    uint32_t v;
    std::memcpy(&v, in.data() + 4 * g, 4);
    uint16_t code = table.Lookup(v);
    char w[2] = {static_cast<char>(code & 0xFF), static_cast<char>(code >> 8)};
    out->append(w, 2);
    if (code == format::kEscape)
      out->append(reinterpret_cast<const char*>(&in[4 * g]), 4);
  }
  out->append(reinterpret_cast<const char*>(in.data() + 4 * groups), in.size() % 4);
}

absl::Status DecodeSeqTableReference(absl::Span<const uint8_t> in,
                                     absl::Span<const uint32_t> table,
                                     absl::Span<uint8_t> out) {
  const size_t groups = out.size() / 4, tail = out.size() % 4;
  size_t pos = 0;
  for (size_t g = 0; g < groups; ++g) {
    if (in.size() - pos < 2) return SeqError("payload ends inside the codes", pos);
    uint16_t code = static_cast<uint16_t>(in[pos] | (in[pos + 1] << 8));
    pos += 2;
    if (code == format::kEscape) {
      if (in.size() - pos < 4) return SeqError("escape cut off", pos);
      for (int k = 0; k < 4; ++k) out[4 * g + k] = in[pos + k];
      pos += 4;
    } else if (code < table.size()) {
      uint32_t v = table[code];
      for (int k = 0; k < 4; ++k) out[4 * g + k] = static_cast<uint8_t>(v >> (8 * k));
    } else {
      return SeqError(
          absl::StrFormat("invalid code %d (table has %d entries)", code, table.size())
              .c_str(),
          pos - 2);
    }
  }
  if (in.size() - pos != tail) return SeqError("payload length does not match", pos);
  for (size_t k = 0; k < tail; ++k) out[4 * groups + k] = in[pos + k];
  return absl::OkStatus();
}

namespace {

// ---- The fast seqtable loop ----
//
// The payload is read in blocks of up to 64 code words. The words that are
// 0xFFFF and the words >= n become two bitmasks (SIMD compares), and from
// them, with a few bit operations and no loop in the usual case, which words
// begin a code item: an escape at word i makes words i+1 and i+2 its payload.
// Where the next block begins depends only on these masks, not on the
// decoded bytes, so the CPU starts on the next block before this one is
// written. With AVX2 a block is then decoded without a data-dependent
// branch: every word yields a 4-byte value (the table entry at its clamped
// index, or the escape's payload) and the values of the words that begin an
// item are packed together with vpermd. The portable loop walks the escapes
// in the mask instead, expanding the run of table codes before each eight
// at a time. Invalid codes are found from the masks for the whole block; the
// careful one-group loop then decodes that block again and reports the
// exact position. (The old loop, eight codes at a time and a careful step at
// every escape, waited for each escape's load before it could go on: 2.2
// GB/s at 83 % table hits where this one does 6-7; tqm-codec-bench
// --seqtable.)

constexpr uint32_t kBlockWords = 64;
// A block reads up to 132 bytes: its 64 words and, for the escape payload of
// the last word, 4 more (never used if that word is not an escape).
constexpr size_t kBlockReadBytes = 2 * kBlockWords + 8;
// A block writes up to this many bytes past the groups it decodes.
constexpr size_t kBlockSlackBytes = 32;

#if defined(__GNUC__) && !defined(__clang__)
// GCC's SLP vectorizer turns the 4-byte table copies into slow shuffles.
#define TQM_SCALAR_LOOPS __attribute__((optimize("no-tree-vectorize")))
#else
#define TQM_SCALAR_LOOPS
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define TQM_SEQ_AVX2 1
#define TQM_AVX2 __attribute__((target("avx2,popcnt,bmi")))
#else
#define TQM_SEQ_AVX2 0
#endif

std::atomic<int> g_seq_isa{static_cast<int>(entropy_internal::Isa::kAuto)};

bool CpuHasSeqAvx2() {
#if TQM_SEQ_AVX2
  return cpu::HasAvx2();
#else
  return false;
#endif
}

inline uint64_t LowBits(uint32_t k) {
  return k >= 64 ? ~uint64_t{0} : (uint64_t{1} << k) - 1;
}

struct BlockResult {
  uint32_t words;   // code words consumed (whole code items only)
  uint32_t groups;  // groups written
  bool bad;         // an invalid code: nothing was consumed
};

struct BlockPlan {
  uint64_t esc;    // words in [0, w) that are 0xFFFF (escapes or payload)
  uint64_t real;   // the escapes among them, in [0, limit)
  uint64_t keep;   // words that begin a code item, in [0, limit)
  uint32_t limit;  // words consumed
  bool bad;        // a table code >= n among `keep`
};

// Which of the first w (4..64) words begin a code item, from the masks of
// the words that are 0xFFFF (`esc`) and >= n (`big`), up to `max_groups`
// items. An escape whose payload would run past word w ends the block
// before it.
inline BlockPlan PlanBlock(uint64_t esc, uint64_t big, uint32_t w, uint32_t max_groups) {
  esc &= LowBits(w);
  uint64_t real;  // the escapes among them
  uint32_t limit = w;
  if ((esc & ((esc >> 1) | (esc >> 2))) == 0) {
    // No 0xFFFF within two words of another: none is an escape's payload,
    // so all are escapes.
    const uint64_t cut = esc & ~LowBits(w - 2);
    limit = cut != 0 ? static_cast<uint32_t>(__builtin_ctzll(cut)) : w;
    real = esc & LowBits(limit);
  } else {
    // A payload word reads 0xFFFF: walk the escapes in order.
    real = 0;
    uint64_t m = esc;
    while (m != 0) {
      const uint32_t i = static_cast<uint32_t>(__builtin_ctzll(m));
      if (i + 2 >= w) {
        limit = i;
        break;
      }
      real |= uint64_t{1} << i;
      m &= ~(uint64_t{7} << i);
    }
  }
  uint64_t keep = ~((real << 1) | (real << 2)) & LowBits(limit);
  if (max_groups < w) {  // the end of the output: stop before item max_groups
    uint64_t rest = keep;
    for (uint32_t k = 0; k < max_groups && rest != 0; ++k) rest &= rest - 1;
    if (rest != 0) {
      limit = static_cast<uint32_t>(__builtin_ctzll(rest));
      keep &= LowBits(limit);
      real &= LowBits(limit);
    }
  }
  return {esc, real, keep, limit, (big & keep & ~real) != 0};
}

// Reads the 64 code words at `src`. Sets bit j of *esc when word j is
// 0xFFFF, bit j of *big when word j > nm1 (= n - 1), and cw[j] to
// min(word j, nm1), an index that is always in the table.
inline void ClassifyBlock(const uint8_t* src, uint16_t nm1, uint16_t* cw, uint64_t* esc,
                          uint64_t* big) {
#ifdef __SSE2__
  const __m128i lim = _mm_set1_epi16(static_cast<short>(nm1));
  const __m128i ones = _mm_set1_epi32(-1);
  const __m128i zero = _mm_setzero_si128();
  uint64_t e = 0, b = 0;
  for (int k = 0; k < 4; ++k) {
    const __m128i w0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32 * k));
    const __m128i w1 =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32 * k + 16));
    // Saturating w - nm1: zero exactly when w <= nm1; w minus it is min(w, nm1).
    const __m128i s0 = _mm_subs_epu16(w0, lim), s1 = _mm_subs_epu16(w1, lim);
    _mm_store_si128(reinterpret_cast<__m128i*>(cw + 16 * k), _mm_sub_epi16(w0, s0));
    _mm_store_si128(reinterpret_cast<__m128i*>(cw + 16 * k + 8), _mm_sub_epi16(w1, s1));
    const __m128i ok =
        _mm_packs_epi16(_mm_cmpeq_epi16(s0, zero), _mm_cmpeq_epi16(s1, zero));
    const __m128i es =
        _mm_packs_epi16(_mm_cmpeq_epi16(w0, ones), _mm_cmpeq_epi16(w1, ones));
    b |= static_cast<uint64_t>(~_mm_movemask_epi8(ok) & 0xFFFF) << (16 * k);
    e |= static_cast<uint64_t>(_mm_movemask_epi8(es)) << (16 * k);
  }
  *esc = e;
  *big = b;
#else
  uint64_t e = 0, b = 0;
  for (uint32_t j = 0; j < kBlockWords; ++j) {
    const uint16_t w = LoadLE16(src + 2 * j);
    e |= static_cast<uint64_t>(w == format::kEscape) << j;
    b |= static_cast<uint64_t>(w > nm1) << j;
    cw[j] = w > nm1 ? nm1 : w;
  }
  *esc = e;
  *big = b;
#endif
}

// Writes table[cw[0..8)] to o[0, 32).
inline void Expand8(const uint16_t* cw, const uint32_t* t, uint8_t* o) {
  for (int k = 0; k < 8; ++k) std::memcpy(o + 4 * k, &t[cw[k]], 4);
}

// Decodes the first `max_groups` (>= 1) code items that begin in the first
// w words at `src` (4 <= w <= 64; kBlockReadBytes readable) into `dst`,
// which has room for 4 * w + kBlockSlackBytes bytes. Consumes at least
// min(w - 2, max_groups) words.
TQM_SCALAR_LOOPS BlockResult DecodeBlockPortable(const uint8_t* src, uint32_t w,
                                                 uint32_t max_groups, const uint32_t* t,
                                                 uint16_t nm1, uint8_t* dst) {
  alignas(16) uint16_t cw[kBlockWords + 8];
  uint64_t esc, big;
  ClassifyBlock(src, nm1, cw, &esc, &big);
  std::memset(cw + kBlockWords, 0, 8 * sizeof(uint16_t));  // read past a run's end
  if ((esc & LowBits(w)) == 0) {
    // All table codes (or invalid ones).
    const uint32_t g = std::min(w, max_groups);
    for (uint32_t k = 0; k < g; k += 8) Expand8(cw + k, t, dst + 4 * k);
    return {g, g, (big & LowBits(g)) != 0};
  }
  const BlockPlan plan = PlanBlock(esc, big, w, max_groups);
  if (plan.bad) return {0, 0, true};
  // The runs of table codes between escapes, eight lookups at a time; a
  // run's last lookups spill into the places of the escape and the next run,
  // which overwrite them.
  uint64_t m = plan.real;
  uint32_t a = 0;  // first word of the current run
  uint8_t* o = dst;
  while (m != 0) {
    const uint32_t i = static_cast<uint32_t>(__builtin_ctzll(m));
    m &= m - 1;
    const uint32_t len = i - a;
    Expand8(cw + a, t, o);
    for (uint32_t k = 8; k < len; k += 8) Expand8(cw + a + k, t, o + 4 * k);
    std::memcpy(o + 4 * len, src + 2 * i + 2, 4);
    o += 4 * len + 4;
    a = i + 3;
  }
  const uint32_t len = plan.limit - a;
  for (uint32_t k = 0; k < len; k += 8) Expand8(cw + a + k, t, o + 4 * k);
  o += 4 * len;
  return {plan.limit, static_cast<uint32_t>((o - dst) / 4), false};
}

#if TQM_SEQ_AVX2
// kLeftPack[m]: the positions of the set bits of m, in order, one per byte
// (a vpermd control that packs the lanes selected by m to the front).
struct LeftPackTable {
  uint64_t v[256];
};
constexpr LeftPackTable MakeLeftPack() {
  LeftPackTable t{};
  for (int m = 0; m < 256; ++m) {
    uint64_t x = 0;
    int k = 0;
    for (int j = 0; j < 8; ++j) {
      if (m & (1 << j)) x |= static_cast<uint64_t>(j) << (8 * k++);
    }
    t.v[m] = x;
  }
  return t;
}
constexpr LeftPackTable kLeftPack = MakeLeftPack();

// The table entries at the eight indices cw[0..8), as the lanes of a vector.
// (Scalar loads inserted into the lanes beat vpgatherdd on the AMD and Intel
// cores we measured.)
TQM_AVX2 inline __m128i Lookup2(const uint16_t* cw, const uint32_t* t) {
  return _mm_insert_epi32(_mm_cvtsi32_si128(static_cast<int>(t[cw[0]])),
                          static_cast<int>(t[cw[1]]), 1);
}
TQM_AVX2 inline __m256i Lookup8(const uint16_t* cw, const uint32_t* t) {
  const __m128i lo = _mm_unpacklo_epi64(Lookup2(cw, t), Lookup2(cw + 2, t));
  const __m128i hi = _mm_unpacklo_epi64(Lookup2(cw + 4, t), Lookup2(cw + 6, t));
  return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

// DecodeBlockPortable with AVX2 and no data-dependent branch: eight words at
// a time, each word's table entry, or its payload if it is an escape, then
// the lanes of the words that begin an item packed together with vpermd.
TQM_AVX2 BlockResult DecodeBlockAvx2(const uint8_t* src, uint32_t w, uint32_t max_groups,
                                     const uint32_t* t, uint16_t nm1, uint8_t* dst) {
  const __m128i lim = _mm_set1_epi16(static_cast<short>(nm1));
  const __m128i ones = _mm_set1_epi32(-1);
  const __m128i zero = _mm_setzero_si128();
  alignas(32) uint16_t cw[kBlockWords];
  uint64_t esc = 0, big = 0;
  for (int k = 0; k < 4; ++k) {
    const __m128i w0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32 * k));
    const __m128i w1 =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32 * k + 16));
    _mm_store_si128(reinterpret_cast<__m128i*>(cw + 16 * k), _mm_min_epu16(w0, lim));
    _mm_store_si128(reinterpret_cast<__m128i*>(cw + 16 * k + 8), _mm_min_epu16(w1, lim));
    const __m128i ok = _mm_packs_epi16(_mm_cmpeq_epi16(_mm_subs_epu16(w0, lim), zero),
                                       _mm_cmpeq_epi16(_mm_subs_epu16(w1, lim), zero));
    const __m128i es =
        _mm_packs_epi16(_mm_cmpeq_epi16(w0, ones), _mm_cmpeq_epi16(w1, ones));
    big |= static_cast<uint64_t>(~_mm_movemask_epi8(ok) & 0xFFFF) << (16 * k);
    esc |= static_cast<uint64_t>(_mm_movemask_epi8(es)) << (16 * k);
  }
  if ((esc & LowBits(w)) == 0) {
    // All table codes (or invalid ones).
    const uint32_t g = std::min(w, max_groups);
    for (uint32_t s = 0; s < g; s += 8) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 4 * s), Lookup8(cw + s, t));
    }
    return {g, g, (big & LowBits(g)) != 0};
  }
  const BlockPlan plan = PlanBlock(esc, big, w, max_groups);
  if (plan.bad) return {0, 0, true};
  uint8_t* o = dst;
  for (uint32_t s = 0; s < kBlockWords / 8; ++s) {
    const uint8_t* const q = src + 16 * s;
    const __m128i words = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    // Lane j: words j+1 and j+2, the payload if word j is an escape.
    const __m128i w1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 2));
    const __m128i w2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 4));
    const __m256i raw =
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(w1, w2)),
                                _mm_unpackhi_epi16(w1, w2), 1);
    const __m256i is_esc = _mm256_cvtepi16_epi32(_mm_cmpeq_epi16(words, ones));
    const __m256i v = _mm256_blendv_epi8(Lookup8(cw + 8 * s, t), raw, is_esc);
    const uint32_t keep = static_cast<uint32_t>(plan.keep >> (8 * s)) & 0xFF;
    const __m256i perm = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kLeftPack.v[keep])));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o),
                        _mm256_permutevar8x32_epi32(v, perm));
    o += 4 * __builtin_popcount(keep);
  }
  return {plan.limit, static_cast<uint32_t>((o - dst) / 4), false};
}
#endif  // TQM_SEQ_AVX2

// The state of a decode between the fast and the careful loop.
struct SeqCursor {
  const uint8_t* p;  // next code item
  uint8_t* o;        // next group
  size_t left;       // groups still to decode
};

using BlockFn = BlockResult (*)(const uint8_t*, uint32_t, uint32_t, const uint32_t*,
                                uint16_t, uint8_t*);

// Decodes blocks while groups are left and at least 4 words to read,
// stopping at a block with an invalid code. Near the end of the payload the
// block reads from a padded copy, near the end of the output it writes to a
// buffer with slack, so that nothing outside `in` and the 4 * left bytes at
// c->o is touched.
template <BlockFn kBlock>
inline __attribute__((always_inline)) void FastLoop(SeqCursor* c, const uint8_t* end,
                                                    const uint32_t* t, uint16_t nm1) {
  alignas(16) uint8_t src_copy[kBlockReadBytes];
  alignas(32) uint8_t dst_copy[4 * kBlockWords + kBlockSlackBytes];
  const uint8_t* p = c->p;
  uint8_t* o = c->o;
  size_t left = c->left;
  while (left > 0) {
    const size_t avail = static_cast<size_t>(end - p);
    const uint32_t w = static_cast<uint32_t>(std::min<size_t>(kBlockWords, avail / 2));
    if (w < 4) break;
    const uint8_t* src = p;
    if (avail < kBlockReadBytes) {
      std::memset(src_copy, 0, sizeof(src_copy));
      std::memcpy(src_copy, p, avail);
      src = src_copy;
    }
    // The last groups of `o` go through dst_copy, which has the slack.
    uint8_t* const dst = left >= w + kBlockSlackBytes / 4 ? o : dst_copy;
    const uint32_t max_groups =
        static_cast<uint32_t>(std::min<size_t>(left, kBlockWords));
    const BlockResult r = kBlock(src, w, max_groups, t, nm1, dst);
    if (r.bad || r.groups == 0) break;  // (0 cannot happen; never spin)
    if (dst != o) std::memcpy(o, dst_copy, 4 * r.groups);
    p += 2 * r.words;
    o += 4 * r.groups;
    left -= r.groups;
  }
  *c = {p, o, left};
}

TQM_SCALAR_LOOPS void FastLoopPortable(SeqCursor* c, const uint8_t* end,
                                       const uint32_t* t, uint16_t nm1) {
  FastLoop<DecodeBlockPortable>(c, end, t, nm1);
}

#if TQM_SEQ_AVX2
TQM_AVX2 void FastLoopAvx2(SeqCursor* c, const uint8_t* end, const uint32_t* t,
                           uint16_t nm1) {
  FastLoop<DecodeBlockAvx2>(c, end, t, nm1);
}
#endif

// Decodes `count` groups from payload offset *pos into `o` (4 * count
// bytes, nothing written past them) and advances *pos. The errors and
// messages of R61/R62 are those of the careful one-group loop at the end,
// which also decodes the block that the fast loop found an invalid code in.
absl::Status DecodeSeqGroups(absl::Span<const uint8_t> in, size_t* pos,
                             absl::Span<const uint32_t> table, uint8_t* o, size_t count) {
  const uint8_t* const base = in.data();
  const uint8_t* const end = base + in.size();
  const uint32_t* const t = table.data();
  // 0xFFFF is the escape even with a larger table (as in the reference).
  const uint32_t n =
      static_cast<uint32_t>(std::min<size_t>(table.size(), format::kMaxTableEntries));
  SeqCursor c{base + *pos, o, count};
  if (n > 0) {
    const uint16_t nm1 = static_cast<uint16_t>(n - 1);
    const auto isa =
        static_cast<entropy_internal::Isa>(g_seq_isa.load(std::memory_order_relaxed));
#if TQM_SEQ_AVX2
    if (isa != entropy_internal::Isa::kPortable && CpuHasSeqAvx2()) {
      FastLoopAvx2(&c, end, t, nm1);
    } else {
      FastLoopPortable(&c, end, t, nm1);
    }
#else
    (void)isa;
    FastLoopPortable(&c, end, t, nm1);
#endif
  }
  // One group at a time: the last few words, and the block with an invalid
  // code.
  const uint8_t* p = c.p;
  o = c.o;
  for (size_t left = c.left; left > 0; --left) {
    if (end - p < 2) return SeqError("payload ends inside the codes", p - base);
    const uint16_t code = LoadLE16(p);
    p += 2;
    if (code < n) {
      std::memcpy(o, &t[code], 4);
    } else if (code == format::kEscape) {
      if (end - p < 4) return SeqError("escape cut off", p - base);
      std::memcpy(o, p, 4);
      p += 4;
    } else {
      return SeqError(
          absl::StrFormat("invalid code %d (table has %d entries)", code, table.size())
              .c_str(),
          p - 2 - base);
    }
    o += 4;
  }
  *pos = static_cast<size_t>(p - base);
  return absl::OkStatus();
}

absl::Status SeqLengthError(size_t pos) {
  return SeqError("payload length does not match the decoded size", pos);
}

}  // namespace

namespace codec_internal {

void SetSeqTableIsa(entropy_internal::Isa isa) { g_seq_isa.store(static_cast<int>(isa)); }

bool SeqTableAvx2Available() { return CpuHasSeqAvx2(); }

}  // namespace codec_internal

absl::Status DecodeSeqTable(absl::Span<const uint8_t> in,
                            absl::Span<const uint32_t> table, absl::Span<uint8_t> out) {
  const size_t groups = out.size() / 4, tail = out.size() % 4;
  size_t pos = 0;
  TQM_RETURN_IF_ERROR(DecodeSeqGroups(in, &pos, table, out.data(), groups));
  if (in.size() - pos != tail) return SeqLengthError(pos);
  if (tail) std::memcpy(out.data() + 4 * groups, in.data() + pos, tail);
  return absl::OkStatus();
}

SeqTableBlockDecoder::SeqTableBlockDecoder(absl::Span<const uint8_t> in,
                                           absl::Span<const uint32_t> table,
                                           size_t decoded_size)
    : in_(in), table_(table), groups_left_(decoded_size / 4), tail_(decoded_size % 4) {}

absl::StatusOr<size_t> SeqTableBlockDecoder::Next(absl::Span<uint8_t> out) {
  if (!status_.ok()) return status_;
  if (done_) return 0;
  if (out.size() < 4 && out.size() < remaining()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "seqtable block decoder: an output of %d bytes holds neither a group nor the "
        "%d bytes left",
        out.size(), remaining()));
  }
  const size_t g = std::min(groups_left_, out.size() / 4);
  status_ = DecodeSeqGroups(in_, &pos_, table_, out.data(), g);
  if (!status_.ok()) return status_;
  groups_left_ -= g;
  size_t k = 4 * g;
  if (groups_left_ == 0 && out.size() - k >= tail_) {
    if (in_.size() - pos_ != tail_) {
      status_ = SeqLengthError(pos_);
      return status_;
    }
    if (tail_) std::memcpy(out.data() + k, in_.data() + pos_, tail_);
    pos_ += tail_;
    k += tail_;
    tail_ = 0;
    done_ = true;
  }
  return k;
}

const char* CodecName(uint8_t codec) {
  switch (codec) {
    case format::kCodecStored:
      return "stored";
    case format::kCodecSeqTable:
      return "seqtable";
    case format::kCodecZstd:
      return "zstd";
    case format::kCodecRans:
      return "rans";
    case format::kCodecHuffman:
      return "huffman";
    case format::kCodecLanes:
      return "lanes";
    default:
      return "unknown";
  }
}

bool IsKnownCodec(uint8_t codec) {
  return codec == format::kCodecStored || codec == format::kCodecSeqTable ||
         codec == format::kCodecZstd || codec == format::kCodecRans ||
         codec == format::kCodecHuffman || codec == format::kCodecLanes;
}

absl::Status DecodeChunkBytes(uint8_t codec, absl::Span<const uint8_t> in,
                              absl::Span<const uint32_t> table, absl::Span<uint8_t> out) {
  switch (codec) {
    case format::kCodecStored:
      if (in.size() != out.size()) {
        return absl::DataLossError(absl::StrFormat(
            "stored chunk has %d bytes, expected %d", in.size(), out.size()));
      }
      if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
      return absl::OkStatus();
    case format::kCodecSeqTable:
      return DecodeSeqTable(in, table, out);
    case format::kCodecZstd:
      return DecodeZstd(in, out);
    case format::kCodecRans:
      return DecodeRans(in, out);
    case format::kCodecHuffman:
      return DecodeHuffman(in, out);
    case format::kCodecLanes:
      return DecodeLanes(in, out);
    default:
      return absl::UnimplementedError(absl::StrFormat(
          "codec %d (%s) is not supported by this reader", codec, CodecName(codec)));
  }
}

}  // namespace tqm
