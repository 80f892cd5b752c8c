// Fuzz target: one chunk payload under every codec id, with a sequence table
// and a decoded size taken from the input (inputs.h, "fuzz_chunk").
//   - DecodeChunkBytes must not crash for any codec id; unknown ids give
//     Unimplemented, bad payloads DataLoss; a payload that decodes always
//     decodes to the same bytes (entropy codecs included).
//   - seqtable: the fast decoder and DecodeSeqTableReference must agree on
//     success or failure, on the error code, and on every output byte.
//   - lanes: the AVX-512 and AVX2 decoders (where the CPU has them) and the
//     portable one must give the same status, message included, and the same
//     bytes.
//   - stored: succeeds exactly when the payload has the decoded size.
//   - encode/decode: any byte string encoded with the table decodes back to
//     itself, in SeqTableEncodedSize() bytes.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "codec/entropy.h"
#include "fuzz_check.h"
#include "inputs.h"
#include "tqm/codec.h"
#include "tqm/format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tqm_fuzz::ChunkInput in = tqm_fuzz::ParseChunkInput(data, size);
  // Exact-size copies so that ASan sees reads past the payload and writes
  // past the output.
  std::vector<uint8_t> payload(in.payload.begin(), in.payload.end());
  const absl::Span<const uint8_t> p = absl::MakeConstSpan(payload);
  const absl::Span<const uint32_t> table = absl::MakeConstSpan(in.table);
  std::vector<uint8_t> out(in.decoded_size, 0xAA);

  absl::Status s = tqm::DecodeChunkBytes(in.codec, p, table, absl::MakeSpan(out));
  switch (in.codec) {
    case tqm::format::kCodecStored:
      FUZZ_CHECK(s.ok() == (payload.size() == out.size()));
      if (s.ok()) FUZZ_CHECK(payload == out);
      if (!s.ok()) FUZZ_CHECK(s.code() == absl::StatusCode::kDataLoss);
      break;
    case tqm::format::kCodecSeqTable: {
      std::vector<uint8_t> ref(in.decoded_size, 0xAA);
      absl::Status r = tqm::DecodeSeqTableReference(p, table, absl::MakeSpan(ref));
      if (s.ok() != r.ok()) {
        fprintf(stderr, "fast: %s\nreference: %s\n", s.ToString().c_str(),
                r.ToString().c_str());
        abort();
      }
      if (s.ok()) {
        FUZZ_CHECK(out == ref);
      } else {
        FUZZ_CHECK(s.code() == absl::StatusCode::kDataLoss);
        FUZZ_CHECK(r.code() == absl::StatusCode::kDataLoss);
      }
      break;
    }
    case tqm::format::kCodecLanes: {
      // Every decoder this CPU has against the portable one: the same status
      // and the same bytes, even on failure (all decode every block first).
      std::vector<uint8_t> ref(in.decoded_size, 0xAA), avx2(in.decoded_size, 0xAA);
      absl::Status r = tqm::entropy_internal::DecodeLanesWith(
          tqm::entropy_internal::Isa::kPortable, p, absl::MakeSpan(ref));
      absl::Status a = tqm::entropy_internal::DecodeLanesWith(
          tqm::entropy_internal::Isa::kAvx2, p, absl::MakeSpan(avx2));
      if (s != r || a != r) {
        fprintf(stderr, "auto: %s\navx2: %s\nportable: %s\n", s.ToString().c_str(),
                a.ToString().c_str(), r.ToString().c_str());
        abort();
      }
      FUZZ_CHECK(out == ref);
      FUZZ_CHECK(avx2 == ref);
      if (!s.ok()) FUZZ_CHECK(s.code() == absl::StatusCode::kDataLoss);
      break;
    }
    default:
      FUZZ_CHECK(tqm::CodecName(in.codec) != nullptr);
      if (!tqm::IsKnownCodec(in.codec)) {
        FUZZ_CHECK(s.code() == absl::StatusCode::kUnimplemented);
        break;
      }
      // Entropy codecs (zstd, rANS, Huffman): bad payloads are DataLoss, and
      // decoding is a function of the payload.
      if (!s.ok()) {
        if (s.code() != absl::StatusCode::kDataLoss) {
          fprintf(stderr, "codec %d: %s\n", in.codec, s.ToString().c_str());
          abort();
        }
      } else {
        std::vector<uint8_t> again(in.decoded_size, 0x55);
        FUZZ_CHECK(tqm::DecodeChunkBytes(in.codec, p, table, absl::MakeSpan(again)).ok());
        FUZZ_CHECK(again == out);
      }
  }

  // Encoder round trip over the payload bytes with the same table (small
  // tables only: building the encoder's hash map dominates otherwise).
  if (payload.size() <= tqm_fuzz::kMaxFuzzDecoded && in.table.size() <= 4096) {
    const tqm::SeqTable st(in.table);
    std::string enc;
    tqm::EncodeSeqTable(p, st, &enc);
    FUZZ_CHECK(enc.size() == tqm::SeqTableEncodedSize(p, st));
    std::vector<uint8_t> back(payload.size());
    std::vector<uint8_t> encoded(enc.begin(), enc.end());
    absl::Status d =
        tqm::DecodeSeqTable(absl::MakeConstSpan(encoded), table, absl::MakeSpan(back));
    if (!d.ok()) {
      fprintf(stderr, "decode of own encoding failed: %s\n", d.ToString().c_str());
      abort();
    }
    FUZZ_CHECK(back == payload);
  }
  return 0;
}
