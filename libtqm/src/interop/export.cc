// Exporters from a .tqm file to safetensors, Hugging Face directories and
// llama2.c checkpoints, and the float16/bfloat16 rounding they share with
// the GGUF exporter. The Llama layout (names, the q/k permutation,
// DescribeLlama) is interop/llama.h's; the GGUF exporter lives in gguf.cc
// next to the GGUF reader.

#include "tqm/export.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "base/parallel.h"
#include "interop/import_internal.h"
#include "interop/llama.h"
#include "tqm/loader.h"
#include "tqm/metadata.h"
#include "tqm/safetensors.h"
#include "tqm/source.h"
#include "tqm/status.h"

namespace tqm {
namespace internal {

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs > 0x7F800000u)
    return static_cast<uint16_t>(sign | 0x7E00u | ((abs >> 13) & 0x3FF));
  if (abs >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65536: inf
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): value = abs * 2^24 in units of 2^-24.
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to 0
    const uint32_t e = abs >> 23;
    const uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24 bits to drop (to units of 2^-24)
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (q & 1))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias exponent (127 -> 15) and round the mantissa to 10 bits.
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;  // may carry into inf
  return static_cast<uint16_t>(sign | h);
}

uint16_t FloatToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
  const uint32_t lsb = (x >> 16) & 1;
  x += 0x7FFFu + lsb;
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace internal

// ---- safetensors ----

namespace {

const char* TypeName(SafetensorsExportType type) {
  switch (type) {
    case SafetensorsExportType::kF16:
      return "f16";
    case SafetensorsExportType::kBF16:
      return "bf16";
    case SafetensorsExportType::kU8:
      return "u8";
    default:
      return "f32";
  }
}

// Rows and pairs per row of the (scale, zero) companions of a quantized
// tensor in a u8 export: [1] per tensor, [rows] per row, [rows, groups].
std::vector<uint64_t> AffineShape(const TensorInfo& t) {
  if (t.storage != format::kStorageU8Group || t.dims.empty() || t.group_size == 0) {
    return {t.affine.size()};
  }
  const uint64_t last = t.dims.back();
  const uint64_t per_row = last / t.group_size + (last % t.group_size != 0);
  if (per_row == 0) return {0, 0};
  return {t.affine.size() / per_row, per_row};
}

// What to write, shared by the safetensors and Hugging Face exporters.
struct WriteSpec {
  SafetensorsExportType type = SafetensorsExportType::kF32;
  std::vector<std::pair<std::string, std::string>> metadata;
  // Nonzero: q_proj/k_proj rows go from the Meta to the Hugging Face rotary
  // layout, per head of this many rows.
  uint64_t meta_to_hf_head = 0;
  unsigned threads = 1;  // SafetensorsExportOptions::threads
};

bool PermutedToHf(const WriteSpec& spec, const TensorInfo& t) {
  return spec.meta_to_hf_head != 0 && t.dims.size() == 2 &&
         (llama::IsQProj(t.name) || llama::IsKProj(t.name));
}

// Decodes the chunks of tensor `t` into `out` (byte_size bytes) on `pool`.
// A failure reports the first failing chunk in file order, as
// Reader::DecodeTensor does, whatever the thread count.
absl::Status DecodeTensorOn(const Reader& r, size_t t, absl::Span<uint8_t> out,
                            ThreadPool& pool) {
  const TensorInfo& ti = r.tensors()[t];
  if (out.size() != ti.byte_size || pool.threads() == 1 || ti.chunks.size() < 2) {
    return r.DecodeTensor(t, out);
  }
  std::vector<absl::Status> status(ti.chunks.size());
  pool.ParallelFor(ti.chunks.size(), [&](size_t c) {
    const ChunkInfo& ch = ti.chunks[c];
    status[c] = r.DecodeChunk(t, c, out.subspan(ch.decoded_offset, ch.decoded_size));
  });
  for (absl::Status& s : status) TQM_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

// Reader::ReadFloat with the chunks of `t` decoded (and dequantized) on
// `pool`; the same values and the same first error. Each chunk of a
// quantized tensor goes through a per-thread scratch of one chunk (256 KiB
// by default, in L2) kept across tensors, on one thread too: ReadFloat's
// tensor-sized scratch is fresh memory per tensor, and faulting in new pages
// costs more here than decoding them (64 tensors of 4 MiB, 1 GiB unpacked
// as f32 on one thread: see bench/results/2026-12-08-unpack-*.txt).
absl::Status ReadFloatOn(const Reader& r, size_t t, absl::Span<float> out, ThreadPool& pool) {
  const TensorInfo& ti = r.tensors()[t];
  if (out.size() != ti.numel || ti.raw() || ti.chunks.size() < 2) {
    return r.ReadFloat(t, out);
  }
  if (ti.storage == format::kStorageF32) {
    return DecodeTensorOn(
        r, t, absl::MakeSpan(reinterpret_cast<uint8_t*>(out.data()), out.size() * 4), pool);
  }
  // Quantized: one byte per element, so a chunk's decoded range is its
  // element range.
  std::vector<absl::Status> status(ti.chunks.size());
  pool.ParallelFor(ti.chunks.size(), [&](size_t c) {
    const ChunkInfo& ch = ti.chunks[c];
    thread_local std::vector<uint8_t> scratch;
    scratch.resize(ch.decoded_size);
    status[c] = r.DecodeChunk(t, c, absl::MakeSpan(scratch));
    if (status[c].ok()) {
      DequantizeRange(ti, ch.decoded_offset, scratch,
                      out.subspan(ch.decoded_offset, ch.decoded_size));
    }
  });
  for (absl::Status& s : status) TQM_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

// Output bytes of one write. Storage is not zeroed (every byte is written
// before the block is) and is kept at its largest size across reuses.
class Block {
 public:
  uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  absl::Span<uint8_t> span() const { return absl::MakeSpan(data(), size_); }
  // Sets the size; contents are unspecified. new[] aligns for float.
  void Resize(size_t n) {
    if (n > capacity_) {
      data_.reset(new uint8_t[n]);
      capacity_ = n;
    }
    size_ = n;
  }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0, capacity_ = 0;
};

// Writes blocks of output bytes in the order given. With `background`, a
// thread of its own writes while the caller decodes the next tensor; at most
// one block waits and three written ones are kept, so memory stays at a few
// tensors' worth. Used blocks come back through Recycle() so that steady
// state neither allocates nor faults in fresh pages.
class OrderedWriter {
 public:
  OrderedWriter(SafetensorsWriter& w, bool background) : w_(w) {
    if (background) thread_ = std::thread([this] { Loop(); });
  }
  ~OrderedWriter() { Stop(); }

  // Queues `bytes` (taken); waits while a block is already queued. Returns
  // the first write error so far.
  absl::Status Write(Block bytes) {
    if (!thread_.joinable()) {
      absl::Status s = w_.Write(bytes.span());
      Keep(std::move(bytes));
      return s;
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queued_ || !error_.ok(); });
    if (!error_.ok()) return error_;
    block_ = std::move(bytes);
    queued_ = true;
    cv_.notify_all();
    return absl::OkStatus();
  }

  // A block of `bytes` bytes: the smallest written block that holds them,
  // else the largest one grown, else a new one.
  Block Recycle(size_t bytes) {
    Block b;
    {
      std::lock_guard<std::mutex> lock(mu_);
      size_t best = spare_.size();
      for (size_t i = 0; i < spare_.size(); ++i) {
        const size_t cap = spare_[i].capacity();
        if (best == spare_.size()) {
          best = i;
          continue;
        }
        const size_t have = spare_[best].capacity();
        const bool fits = cap >= bytes, best_fits = have >= bytes;
        if (fits ? (!best_fits || cap < have) : (!best_fits && cap > have)) best = i;
      }
      if (best != spare_.size()) {
        b = std::move(spare_[best]);
        spare_.erase(spare_.begin() + best);
      }
    }
    b.Resize(bytes);
    return b;
  }

  // Waits until every queued block is written; returns the first error.
  absl::Status Flush() {
    if (!thread_.joinable()) return absl::OkStatus();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return (!queued_ && !writing_) || !error_.ok(); });
    return error_;
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return queued_ || stop_; });
      if (!queued_) return;
      Block b = std::move(block_);
      queued_ = false;
      writing_ = true;
      cv_.notify_all();
      absl::Status s = absl::OkStatus();
      if (error_.ok()) {
        lock.unlock();
        s = w_.Write(b.span());
        lock.lock();
      }
      writing_ = false;
      if (!s.ok() && error_.ok()) error_ = s;
      KeepLocked(std::move(b));
      cv_.notify_all();
    }
  }

  void Keep(Block b) {
    std::lock_guard<std::mutex> lock(mu_);
    KeepLocked(std::move(b));
  }
  void KeepLocked(Block b) {
    if (spare_.size() < 3) spare_.push_back(std::move(b));
  }

  void Stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  SafetensorsWriter& w_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  Block block_;
  bool queued_ = false, writing_ = false, stop_ = false;
  absl::Status error_;
  std::vector<Block> spare_;
};

absl::Status WriteSafetensorsFile(const Reader& r, const std::string& out,
                                  const WriteSpec& spec) {
  const SafetensorsExportType type = spec.type;
  const bool u8 = type == SafetensorsExportType::kU8;
  const char* float_dtype = type == SafetensorsExportType::kF16    ? "F16"
                            : type == SafetensorsExportType::kBF16 ? "BF16"
                                                                   : "F32";
  std::vector<SafetensorsEntry> entries;
  for (const TensorInfo& t : r.tensors()) {
    if (t.raw()) {
      entries.push_back({t.name, DTypeName(t.source_dtype), t.dims});
    } else if (u8 && t.quantized()) {
      const std::vector<uint64_t> pairs = AffineShape(t);
      entries.push_back({t.name, "U8", t.dims});
      entries.push_back({t.name + ".scale", "F32", pairs});
      entries.push_back({t.name + ".zero", "F32", pairs});
    } else {
      entries.push_back({t.name, u8 ? "F32" : float_dtype, t.dims});
    }
  }
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> w,
                       SafetensorsWriter::Create(out, entries, spec.metadata));
  unsigned threads = spec.threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  // Starting the pool and the writer thread costs more than they save on a
  // small model (stories260K, 256 KiB of codes, unpacked 1.7x slower on two
  // threads than on one).
  uint64_t stored = 0;
  for (const TensorInfo& t : r.tensors()) stored += t.byte_size;
  if (stored < (uint64_t{1} << 20)) threads = 1;
  // With several threads, one writes (the write is the longest serial
  // step: tmpfs takes f32 bytes at about 2 GB/s on one core) and the others
  // decode; a decode thread more than that only competes with the writer
  // for a core (on 2 cores, 3 threads unpacked at half the speed of 1).
  ThreadPool pool(static_cast<int>(std::min(threads > 1 ? threads - 1 : 1, 1024u)));
  OrderedWriter writer(*w, threads > 1);
  auto block_of = [&](uint64_t bytes) { return writer.Recycle(bytes); };
  auto floats_to_block = [&](const std::vector<float>& v) {
    Block b = block_of(v.size() * sizeof(float));
    if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  std::vector<float> f;
  for (size_t i = 0; i < r.tensors().size(); ++i) {
    const TensorInfo& t = r.tensors()[i];
    if (t.raw() || (u8 && t.quantized())) {
      Block q = block_of(t.byte_size);
      TQM_RETURN_IF_ERROR(DecodeTensorOn(r, i, q.span(), pool));
      if (t.raw() && PermutedToHf(spec, t)) {
        llama::PermuteRows(q.data(), t.dims[0], t.dims[1] * t.element_size(),
                           spec.meta_to_hf_head,
                           /*hf_to_meta=*/false);
      }
      TQM_RETURN_IF_ERROR(writer.Write(std::move(q)));
      if (t.raw()) continue;
      std::vector<float> scale, zero;
      scale.reserve(t.affine.size());
      zero.reserve(t.affine.size());
      for (const Affine& a : t.affine) {
        scale.push_back(a.scale);
        zero.push_back(a.zero);
      }
      TQM_RETURN_IF_ERROR(writer.Write(floats_to_block(scale)));
      TQM_RETURN_IF_ERROR(writer.Write(floats_to_block(zero)));
      continue;
    }
    const bool permute = PermutedToHf(spec, t);
    if (u8 || type == SafetensorsExportType::kF32) {
      // Decoded straight into the block that is written.
      Block b = block_of(t.numel * sizeof(float));
      absl::Span<float> fv(reinterpret_cast<float*>(b.data()), t.numel);
      TQM_RETURN_IF_ERROR(ReadFloatOn(r, i, fv, pool));
      if (permute) llama::MetaToHfRows(fv, t.dims[0], t.dims[1], spec.meta_to_hf_head);
      TQM_RETURN_IF_ERROR(writer.Write(std::move(b)));
      continue;
    }
    f.resize(t.numel);
    TQM_RETURN_IF_ERROR(ReadFloatOn(r, i, absl::MakeSpan(f), pool));
    if (permute)
      llama::MetaToHfRows(absl::MakeSpan(f), t.dims[0], t.dims[1], spec.meta_to_hf_head);
    Block b = block_of(f.size() * sizeof(uint16_t));
    uint16_t* h = reinterpret_cast<uint16_t*>(b.data());
    const bool bf16 = type == SafetensorsExportType::kBF16;
    // Converted in runs on the pool; the first value out of range (in
    // element order) is the one reported.
    constexpr size_t kRun = size_t{1} << 18;
    const size_t runs = (f.size() + kRun - 1) / kRun;
    std::vector<size_t> bad(runs, f.size());
    pool.ParallelFor(runs, [&](size_t k) {
      const size_t end = std::min(f.size(), (k + 1) * kRun);
      for (size_t j = k * kRun; j < end; ++j) {
        h[j] = bf16 ? internal::FloatToBFloat16(f[j]) : internal::FloatToHalf(f[j]);
        if ((h[j] & 0x7FFF) == (bf16 ? 0x7F80 : 0x7C00) && std::isfinite(f[j])) {
          bad[k] = j;
          return;
        }
      }
    });
    for (size_t j : bad) {
      if (j == f.size()) continue;
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: tensor %s: value %g at element %d is out of the range of %s", r.name(),
          t.name, f[j], j, float_dtype));
    }
    TQM_RETURN_IF_ERROR(writer.Write(std::move(b)));
  }
  TQM_RETURN_IF_ERROR(writer.Flush());
  return w->Finish();
}

}  // namespace

absl::Status ExportSafetensors(const Reader& r, const std::string& out,
                               const SafetensorsExportOptions& options) {
  WriteSpec spec;
  spec.type = options.type;
  spec.threads = options.threads;
  for (const MetaEntry& e : r.metadata()) {
    switch (e.value.type) {
      case format::kMetaInt64:
        spec.metadata.push_back({e.key, absl::StrCat(e.value.int64)});
        break;
      case format::kMetaFloat64:
        spec.metadata.push_back({e.key, absl::StrCat(e.value.float64)});
        break;
      case format::kMetaString:
        spec.metadata.push_back({e.key, e.value.bytes});
        break;
      default:
        break;  // opaque bytes (tokenizer) do not fit safetensors' string map
    }
  }
  spec.metadata.push_back({"tqm.unpacked_as", TypeName(options.type)});
  if (options.type == SafetensorsExportType::kU8) {
    // A file packed from an earlier u8 export may carry these keys already;
    // the values of this file win.
    auto set = [&](const std::string& key, uint64_t value) {
      for (auto& kv : spec.metadata) {
        if (kv.first == key) {
          kv.second = absl::StrCat(value);
          return;
        }
      }
      spec.metadata.push_back({key, absl::StrCat(value)});
    };
    for (const TensorInfo& t : r.tensors()) {
      if (!t.quantized()) continue;
      if (t.bits != 0 && t.bits < 8) set("tqm.bits." + t.name, t.bits);
      if (t.storage == format::kStorageU8Group) {
        set("tqm.group_size." + t.name, t.group_size);
      }
    }
  }
  return WriteSafetensorsFile(r, out, spec);
}

// ---- Hugging Face directory ----

namespace {

// config.json's torch_dtype for the weights written.
const char* TorchDtype(SafetensorsExportType type) {
  return type == SafetensorsExportType::kF16    ? "float16"
         : type == SafetensorsExportType::kBF16 ? "bfloat16"
                                                : "float32";
}

// Removes the directory the export created when it does not complete.
class CreatedDir {
 public:
  explicit CreatedDir(std::string path) : path_(std::move(path)) {}
  ~CreatedDir() {
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  void Keep() { path_.clear(); }

 private:
  std::string path_;
};

}  // namespace

absl::Status ExportHuggingFace(const Reader& r, const std::string& dir,
                               const HfExportOptions& options) {
  if (options.type == SafetensorsExportType::kU8) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: a Hugging Face directory holds float tensors; u8 codes are not available",
        dir));
  }
  if (dir.empty()) return absl::InvalidArgumentError("empty output directory name");
  TQM_ASSIGN_OR_RETURN(LlamaDims d,
                       DescribeLlama(r, options.overrides, /*allow_extra=*/true));
  for (double v : {d.norm_eps, d.rope_theta}) {
    if (!std::isfinite(v)) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: norm_eps=%g / rope_theta=%g cannot be written to config.json", r.name(),
          d.norm_eps, d.rope_theta));
    }
  }

  // An existing directory must be empty, so that the export never mixes its
  // files with others (a stale tokenizer.json of another model, say).
  bool created = false;
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrFormat("%s exists and is not a directory", dir));
    }
    DIR* d_handle = ::opendir(dir.c_str());
    if (d_handle == nullptr) return ErrnoStatus(errno, "cannot open directory", dir);
    std::string first;
    while (struct dirent* e = ::readdir(d_handle)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") {
        first = n;
        break;
      }
    }
    ::closedir(d_handle);
    if (!first.empty()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "%s: directory is not empty (it holds %s); give a new or empty directory",
          dir, first));
    }
  } else if (errno == ENOENT) {
    if (::mkdir(dir.c_str(), 0777) != 0) {
      return ErrnoStatus(errno, "cannot create directory", dir);
    }
    created = true;
  } else {
    return ErrnoStatus(errno, "cannot examine", dir);
  }
  CreatedDir cleanup(created ? dir : std::string());

  WriteSpec spec;
  spec.type = options.type;
  spec.threads = options.threads;
  spec.metadata.push_back({"format", "pt"});
  if (!d.rope_hf) spec.meta_to_hf_head = static_cast<uint64_t>(d.head_size());
  {
    OutputGroup outputs;
    TQM_ASSIGN_OR_RETURN(std::string weights, outputs.Add(dir + "/model.safetensors"));
    TQM_ASSIGN_OR_RETURN(std::string config, outputs.Add(dir + "/config.json"));
    TQM_RETURN_IF_ERROR(WriteSafetensorsFile(r, weights, spec));
    TQM_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(config));
    TQM_RETURN_IF_ERROR(file->Append(llama::ToHfConfigJson(d, TorchDtype(options.type))));
    TQM_RETURN_IF_ERROR(file->Commit());
    TQM_RETURN_IF_ERROR(outputs.Commit());
  }
  cleanup.Keep();
  return absl::OkStatus();
}

// ---- llama2.c ----

absl::Status ExportLlama2c(const Reader& r, const std::string& out_path,
                           const ExportOverrides& overrides) {
  TQM_ASSIGN_OR_RETURN(LlamaDims d, DescribeLlama(r, overrides));
  const std::array<int64_t, llama::kLlama2cHeaderFields> header =
      llama::ToLlama2cHeader(d);
  std::string head;
  for (int i = 0; i < llama::kLlama2cHeaderFields; ++i) {
    if (header[i] > std::numeric_limits<int32_t>::max() ||
        header[i] < -std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: %s=%d does not fit a llama2.c header (int32)", r.name(),
                          llama::HparamTable()[i].llama2c, header[i]));
    }
    const int32_t v = static_cast<int32_t>(header[i]);
    head.append(reinterpret_cast<const char*>(&v), 4);  // little-endian host
  }
  uint64_t rope_floats;
  if (!internal::CheckedMul(static_cast<uint64_t>(d.seq_len),
                            static_cast<uint64_t>(d.head_size() / 2), &rope_floats) ||
      rope_floats > (uint64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: seq_len=%d makes the RoPE tables too large", r.name(), d.seq_len));
  }
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(out_path));
  TQM_RETURN_IF_ERROR(file->Append(head));
  std::vector<float> buf;
  auto put = [&](const std::string& name) -> absl::Status {
    const int t = r.FindTensor(name);
    TQM_RETURN_IF_ERROR(llama::ReadMetaLayout(r, t, d, &buf));
    return file->Append(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(buf.data()), buf.size() * 4));
  };
  // The arrays in llama2.c order, each per-layer one stacked over the layers.
  TQM_RETURN_IF_ERROR(put(llama::HfName(llama::Tensor::kEmbed)));
  for (llama::Tensor t : llama::kLayerTensors) {
    for (int64_t l = 0; l < d.n_layers; ++l) {
      TQM_RETURN_IF_ERROR(put(llama::HfName(t, l)));
    }
  }
  TQM_RETURN_IF_ERROR(put(llama::HfName(llama::Tensor::kFinalNorm)));
  // freq_cis_real then freq_cis_imag, [seq_len][head_size / 2] each, as
  // llama2.c's legacy export computes them (float32: freq_i = 1 /
  // theta^(2i / head_size), angle = pos * freq_i). Current run.c skips them;
  // versions before August 2023 read them.
  const int64_t half = d.head_size() / 2;
  std::vector<float> freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(d.head_size());
    freq[i] = 1.0f / std::pow(static_cast<float>(d.rope_theta), e);
  }
  for (int part = 0; part < 2; ++part) {
    std::vector<float> row(half);
    for (int64_t pos = 0; pos < d.seq_len; ++pos) {
      for (int64_t i = 0; i < half; ++i) {
        const float angle = static_cast<float>(pos) * freq[i];
        row[i] = part == 0 ? std::cos(angle) : std::sin(angle);
      }
      TQM_RETURN_IF_ERROR(file->Append(absl::Span<const uint8_t>(
          reinterpret_cast<const uint8_t*>(row.data()), row.size() * 4)));
    }
  }
  if (!d.tied) TQM_RETURN_IF_ERROR(put(llama::HfName(llama::Tensor::kClassifier)));
  return file->Commit();
}

absl::Status ExportLlama2cTokenizer(const Reader& r, const std::string& out_path) {
  const MetaValue* blob = r.FindMeta(meta_keys::kTokenizerLlama2c);
  if (blob == nullptr || blob->type != format::kMetaBytes) {
    return absl::NotFoundError(absl::StrFormat(
        "%s: no tokenizer.llama2c metadata (pack with --tokenizer, or from a GGUF file "
        "with a SentencePiece vocabulary)",
        r.name()));
  }
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFile> file, AtomicFile::Create(out_path));
  TQM_RETURN_IF_ERROR(file->Append(blob->bytes));
  return file->Commit();
}

}  // namespace tqm
