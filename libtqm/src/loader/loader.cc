// The lazy layer loader (tqm/loader.h): layer bookkeeping, the LRU budget,
// parallel chunk decoding and the background prefetch thread.
//
// Locking: one mutex guards every layer's state, pin count, LRU tick and the
// statistics. Decoding and freeing buffers happen outside it; a layer being
// decoded is marked kDecoding (its bytes already counted as resident), so
// other threads wait on the condition variable instead of decoding it twice.

#include "tqm/loader.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/checksum.h"
#include "base/parallel.h"
#include "tqm/status.h"

namespace tqm {

// ---------------------------------------------------------------------------
// Layer state

namespace {

constexpr uint64_t kAlign = 64;
// Layers smaller than this are decoded on the calling thread: waking the
// pool costs more than it saves.
constexpr uint64_t kParallelDecodeBytes = 256 * 1024;

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

size_t PageSize() {
  static const size_t page = [] {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? static_cast<size_t>(p) : size_t{4096};
  }();
  return page;
}

}  // namespace

namespace internal {

// Decoded bytes of one layer. Large buffers come straight from mmap so that
// freeing returns them to the system at once (malloc may keep them), with
// transparent huge pages requested to cut page faults.
class Buffer {
 public:
  Buffer() = default;
  ~Buffer() { Reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      Reset();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      mapped_ = std::exchange(o.mapped_, false);
    }
    return *this;
  }

  bool Allocate(uint64_t size) {
    Reset();
    if (size == 0) return true;
    if (size >= (1u << 20)) {
      void* p =
          mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) return false;
#ifdef MADV_HUGEPAGE
      if (size >= (4u << 20)) madvise(p, size, MADV_HUGEPAGE);
#endif
      data_ = static_cast<uint8_t*>(p);
      mapped_ = true;
    } else {
      data_ = static_cast<uint8_t*>(std::aligned_alloc(kAlign, AlignUp(size, kAlign)));
      if (data_ == nullptr) return false;
    }
    size_ = size;
    return true;
  }

  void Reset() {
    if (data_ == nullptr) return;
    if (mapped_) {
      munmap(data_, size_);
    } else {
      std::free(data_);
    }
    data_ = nullptr;
    size_ = 0;
    mapped_ = false;
  }

  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
};

// Buffers of evicted layers kept for the next decode of the same size, so
// that streaming a model through a budget neither faults in nor zeroes fresh
// pages for every layer. They count against the budget.
struct SpareBuffers {
  std::vector<Buffer> buffers;
};

enum class Residency { kAbsent, kDecoding, kReady };

struct LayerState {
  int layer = 0;
  std::vector<int> tensors;
  std::vector<TensorView> views;
  // Offset of each view's data in `buffer`; kNoBuffer for views that need no
  // decoding (in the mapping, or skipped).
  static constexpr uint64_t kNoBuffer = ~uint64_t{0};
  std::vector<uint64_t> offsets;
  // (view, chunk) pairs to decode.
  std::vector<std::pair<uint32_t, uint32_t>> tasks;
  uint64_t owned_bytes = 0;
  // Bytes counted in ModelStats::resident_bytes for this layer while it is
  // decoding or ready: its buffer's size, which may exceed owned_bytes when
  // the buffer was a larger spare one.
  uint64_t charged = 0;
  // Compressed byte ranges (absolute, merged) for madvise.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;

  Residency state = Residency::kAbsent;
  int pins = 0;
  uint64_t last_use = 0;
  bool prefetched = false;  // decoded by Prefetch() and not yet asked for
  Buffer buffer;
};

}  // namespace internal

using internal::Buffer;
using internal::Residency;

absl::Status TensorView::ToFloat(absl::Span<float> out) const {
  if (out.size() != info->numel) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "tensor '%s' has %d values, buffer has %d", info->name, info->numel, out.size()));
  }
  if (info->numel == 0) return absl::OkStatus();
  if (!f32.empty()) {
    std::memcpy(out.data(), f32.data(), f32.size() * sizeof(float));
    return absl::OkStatus();
  }
  if (!raw.empty()) {
    RawToFloat(info->source_dtype, raw.data(), info->numel, out.data());
    return absl::OkStatus();
  }
  if (q.empty()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("tensor '%s' was not decoded (skip_quantized)", info->name));
  }
  DequantizeRange(*info, 0, q, out);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// LayerHandle

LayerHandle::LayerHandle(LayerHandle&& other) noexcept { *this = std::move(other); }

LayerHandle& LayerHandle::operator=(LayerHandle&& other) noexcept {
  if (this != &other) {
    Release();
    model_ = std::exchange(other.model_, nullptr);
    state_ = std::exchange(other.state_, nullptr);
  }
  return *this;
}

int LayerHandle::layer() const { return state_ ? state_->layer : format::kNoLayer; }

absl::Span<const TensorView> LayerHandle::tensors() const {
  if (!state_) return {};
  return state_->views;
}

const TensorView* LayerHandle::Find(absl::string_view name) const {
  if (!state_) return nullptr;
  int t = model_->reader().FindTensor(std::string(name));
  if (t < 0 || model_->tensor_layer_[t] != state_->layer) return nullptr;
  return &state_->views[model_->tensor_view_[t]];
}

absl::StatusOr<const TensorView*> LayerHandle::Get(absl::string_view name) const {
  const TensorView* v = Find(name);
  if (v == nullptr) {
    return absl::NotFoundError(
        absl::StrFormat("%s: no tensor '%s' in layer %d",
                        model_ ? model_->name() : std::string("<none>"), name, layer()));
  }
  return v;
}

void LayerHandle::Release() {
  if (model_ != nullptr) model_->Unpin(state_);
  model_ = nullptr;
  state_ = nullptr;
}

// ---------------------------------------------------------------------------
// Model

Model::Model(std::unique_ptr<Reader> reader, ModelOptions options, bool mapped)
    : options_(std::move(options)), reader_(std::move(reader)), mapped_(mapped) {}

absl::StatusOr<std::unique_ptr<Model>> Model::Open(const std::string& path,
                                                   ModelOptions options) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<Reader> reader, Reader::Open(path));
  std::unique_ptr<Model> m(new Model(std::move(reader), std::move(options), true));
  TQM_RETURN_IF_ERROR(m->Init());
  return m;
}

namespace {

// Checks every chunk checksum of tensor `t` (for views used in place).
absl::Status VerifyTensorChunks(const Reader& r, int t, const std::string& file) {
  const TensorInfo& ti = r.tensors()[t];
  for (size_t c = 0; c < ti.chunks.size(); ++c) {
    const ChunkInfo& ch = ti.chunks[c];
    const uint64_t sum = Checksum(r.ChunkBytes(t, c));
    if (sum != ch.checksum) {
      return absl::DataLossError(absl::StrFormat(
          "%s: tensor '%s' chunk %d (offset %d): checksum mismatch (stored %016x, "
          "computed %016x)",
          file, ti.name, c, ch.offset, ch.checksum, sum));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::FromReader(std::unique_ptr<Reader> reader,
                                                         ModelOptions options) {
  if (reader == nullptr)
    return absl::InvalidArgumentError("Model::FromReader: null reader");
  std::unique_ptr<Model> m(new Model(std::move(reader), std::move(options), false));
  TQM_RETURN_IF_ERROR(m->Init());
  return m;
}

absl::Status Model::Init() {
  if (options_.dequantize && options_.skip_quantized) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: dequantize and skip_quantized exclude each other", name()));
  }
  const std::vector<TensorInfo>& tensors = reader_->tensors();
  tensor_layer_.resize(tensors.size());
  tensor_view_.resize(tensors.size());
  verified_.reset(new std::atomic<uint8_t>[tensors.size()]);
  int64_t max_layer = -1;
  for (size_t t = 0; t < tensors.size(); ++t) {
    verified_[t].store(0, std::memory_order_relaxed);
    const int layer = tensors[t].layer;
    tensor_layer_[t] = layer;
    auto [it, inserted] = slot_.try_emplace(layer, static_cast<int>(layers_.size()));
    if (inserted) {
      layers_.push_back(std::make_unique<LayerState>());
      layers_.back()->layer = layer;
    }
    LayerState& st = *layers_[it->second];
    tensor_view_[t] = static_cast<int>(st.tensors.size());
    st.tensors.push_back(static_cast<int>(t));
    max_layer = std::max<int64_t>(max_layer, layer);
  }
  num_layers_ = static_cast<int>(std::min<int64_t>(max_layer + 1, INT_MAX));
  for (const auto& st : layers_) {
    if (st->layer >= 0) numbered_.push_back(st->layer);
  }
  std::sort(numbered_.begin(), numbered_.end());

  for (auto& stp : layers_) {
    LayerState& st = *stp;
    st.views.resize(st.tensors.size());
    st.offsets.assign(st.tensors.size(), LayerState::kNoBuffer);
    for (size_t i = 0; i < st.tensors.size(); ++i) {
      const int t = st.tensors[i];
      const TensorInfo& ti = tensors[t];
      TensorView& v = st.views[i];
      v.tensor = t;
      v.info = &ti;
      v.affine = ti.affine;
      for (const ChunkInfo& ch : ti.chunks)
        st.ranges.push_back({ch.offset, ch.encoded_size});
      const bool quantized = ti.quantized();
      if (quantized && options_.skip_quantized) continue;
      const bool to_f32 = ti.storage == format::kStorageF32 ||
                          (quantized && options_.dequantize);
      if (options_.zero_copy && (!quantized || !options_.dequantize)) {
        absl::Span<const uint8_t> place = reader_->InPlace(t);
        if (!place.empty() &&
            (!to_f32 ||
             reinterpret_cast<uintptr_t>(place.data()) % alignof(float) == 0)) {
          v.in_place = true;
          if (quantized) {
            v.q = place;
          } else if (ti.raw()) {
            v.raw = place;
          } else {
            v.f32 = absl::MakeConstSpan(reinterpret_cast<const float*>(place.data()),
                                        ti.numel);
          }
          continue;
        }
      }
      st.offsets[i] = st.owned_bytes;
      st.owned_bytes += AlignUp(to_f32 ? ti.numel * 4 : ti.byte_size, kAlign);
      for (size_t c = 0; c < ti.chunks.size(); ++c) {
        st.tasks.push_back({static_cast<uint32_t>(i), static_cast<uint32_t>(c)});
      }
    }
    // Merge the compressed ranges into page-friendly spans.
    std::sort(st.ranges.begin(), st.ranges.end());
    std::vector<std::pair<uint64_t, uint64_t>> merged;
    for (const auto& [off, len] : st.ranges) {
      if (!merged.empty() &&
          off <= merged.back().first + merged.back().second + PageSize()) {
        uint64_t end = std::max(merged.back().first + merged.back().second, off + len);
        merged.back().second = end - merged.back().first;
      } else {
        merged.push_back({off, len});
      }
    }
    st.ranges = std::move(merged);
    // A layer with nothing to decode is resident from the start.
    if (st.tasks.empty()) st.state = Residency::kReady;
  }

  int threads = options_.threads > 0
                    ? options_.threads
                    : static_cast<int>(std::thread::hardware_concurrency());
  pool_ = std::make_unique<ThreadPool>(std::max(1, threads));
  spare_ = std::make_unique<internal::SpareBuffers>();
  prefetch_thread_ = std::thread([this] { PrefetchLoop(); });
  return absl::OkStatus();
}

Model::~Model() {
  std::vector<Buffer> freed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    for (LayerState* st : prefetch_queue_) {
      st->state = Residency::kAbsent;
      st->prefetched = false;
      stats_.resident_bytes -= st->charged;
      st->charged = 0;
    }
    prefetch_queue_.clear();
  }
  prefetch_cv_.notify_all();
  if (prefetch_thread_.joinable()) prefetch_thread_.join();
  pool_.reset();
}

Model::LayerState* Model::Find(int layer) const {
  auto it = slot_.find(layer);
  return it == slot_.end() ? nullptr : layers_[it->second].get();
}

absl::Span<const int> Model::LayerTensors(int layer) const {
  const LayerState* st = Find(layer);
  if (st == nullptr) return {};
  return st->tensors;
}

uint64_t Model::LayerBytes(int layer) const {
  const LayerState* st = Find(layer);
  return st == nullptr ? 0 : st->owned_bytes;
}

int Model::LayerOf(int tensor) const {
  if (tensor < 0 || static_cast<size_t>(tensor) >= tensor_layer_.size())
    return format::kNoLayer;
  return tensor_layer_[tensor];
}

int Model::NextLayer(int layer, int distance) const {
  if (numbered_.empty()) return -1;
  auto it = std::lower_bound(numbered_.begin(), numbered_.end(), layer);
  size_t pos = static_cast<size_t>(it - numbered_.begin());
  if (it == numbered_.end() || *it != layer) {
    // Not a numbered layer: the first one at or after it is distance 1.
    pos = (pos + numbered_.size() - 1) % numbered_.size();
  }
  return numbered_[(pos + static_cast<size_t>(distance)) % numbered_.size()];
}

bool Model::IsResident(int layer) const {
  std::lock_guard<std::mutex> lock(mu_);
  const LayerState* st = Find(layer);
  return st != nullptr && st->state == Residency::kReady;
}

ModelStats Model::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Model::Warn(const std::string& message) const {
  if (options_.on_warning) options_.on_warning(message);
}

void Model::FreeLayer(LayerState* st) {
  for (size_t i = 0; i < st->views.size(); ++i) {
    if (st->offsets[i] == LayerState::kNoBuffer) continue;
    st->views[i].q = {};
    st->views[i].f32 = {};
  }
  st->state = Residency::kAbsent;
  st->prefetched = false;
}

uint64_t Model::Held() const { return stats_.resident_bytes + stats_.cached_bytes; }

void Model::EvictLocked(LayerState* st, std::vector<Buffer>* freed) {
  Buffer b = std::move(st->buffer);
  FreeLayer(st);
  stats_.resident_bytes -= st->charged;
  st->charged = 0;
  ++stats_.evictions;
  if (options_.budget_bytes != 0 && b.size() != 0) {
    stats_.cached_bytes += b.size();
    spare_->buffers.push_back(std::move(b));
  } else {
    freed->push_back(std::move(b));
  }
}

Model::LayerState* Model::LruVictim(bool for_prefetch) const {
  LayerState* victim = nullptr;
  for (const auto& st : layers_) {
    if (st->state != Residency::kReady || st->pins > 0 || st->owned_bytes == 0) continue;
    // A prefetch does not push out layers prefetched and not yet used.
    if (for_prefetch && st->prefetched) continue;
    if (victim == nullptr || st->last_use < victim->last_use) victim = st.get();
  }
  return victim;
}

bool Model::Reserve(uint64_t bytes, bool for_prefetch, Buffer* reuse,
                    std::vector<Buffer>* freed) {
  const uint64_t budget = options_.budget_bytes;
  // Over the budget already (pins, or the spare kept by TrimLocked): a
  // prefetch would only add to it.
  if (for_prefetch && budget != 0 && Held() > budget) return false;
  for (;;) {
    // The smallest spare buffer that is large enough is taken as it is (its
    // pages are already faulted in; a fresh buffer would be zeroed by the
    // kernel page by page), and counted at its size. Buffers more than
    // twice too large are left for layers they fit better.
    auto& spare = spare_->buffers;
    size_t best = spare.size();
    for (size_t i = 0; i < spare.size(); ++i) {
      const uint64_t size = spare[i].size();
      if (size < bytes || size / 2 > bytes) continue;
      if (best == spare.size() || size < spare[best].size()) best = i;
    }
    if (best != spare.size()) {
      *reuse = std::move(spare[best]);
      spare.erase(spare.begin() + best);
      stats_.cached_bytes -= reuse->size();
      stats_.resident_bytes += reuse->size();
      return true;
    }
    if (budget == 0 || Held() + bytes <= budget) {
      stats_.resident_bytes += bytes;
      return true;
    }
    // Spare buffers of other sizes go first, then least recently used layers
    // (whose buffers may be the right size for the loop above).
    if (!spare.empty()) {
      stats_.cached_bytes -= spare.back().size();
      freed->push_back(std::move(spare.back()));
      spare.pop_back();
      continue;
    }
    LayerState* victim = LruVictim(for_prefetch);
    if (victim == nullptr) return false;
    EvictLocked(victim, freed);
  }
}

void Model::TrimLocked(std::vector<Buffer>* freed) {
  const uint64_t budget = options_.budget_bytes;
  if (budget == 0) return;
  auto& spare = spare_->buffers;
  while (Held() > budget) {
    // Spare buffers go first (smallest first), then least recently used
    // layers. The last spare buffer is kept when only pinned or decoding
    // layers are left and they exceed the budget with it: the next decode of
    // a layer its size goes over the budget anyway and would map and fault in
    // as many fresh bytes. Keeping it leaves the peak where it was and lets a
    // runtime whose pinned tensors crowd the budget stream its layers
    // through one recycled buffer.
    LayerState* victim = spare.size() <= 1 ? LruVictim(false) : nullptr;
    const bool keep_last = victim == nullptr && stats_.resident_bytes > 0;
    if (spare.size() > 1 || (spare.size() == 1 && !keep_last)) {
      auto smallest = std::min_element(
          spare.begin(), spare.end(),
          [](const Buffer& a, const Buffer& b) { return a.size() < b.size(); });
      stats_.cached_bytes -= smallest->size();
      freed->push_back(std::move(*smallest));
      spare.erase(smallest);
      continue;
    }
    if (victim == nullptr) return;
    EvictLocked(victim, freed);
  }
}

void Model::Unpin(LayerState* st) {
  std::vector<Buffer> freed;
  std::lock_guard<std::mutex> lock(mu_);
  --st->pins;
  st->last_use = ++tick_;
  // After an over-budget decode, give the excess back as soon as pins allow.
  TrimLocked(&freed);
}

absl::Status Model::Decode(LayerState* st) {
  const auto start = std::chrono::steady_clock::now();
  uint64_t cap = options_.max_layer_bytes;
  if (cap == 0) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    cap = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * page : UINT64_MAX;
  }
  if (st->owned_bytes > cap) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: layer %d decodes to %d bytes, more than the limit of %d bytes "
        "(ModelOptions::max_layer_bytes)",
        name(), st->layer, st->owned_bytes, cap));
  }
  // st->buffer may hold a spare buffer large enough (Reserve).
  const bool fresh = st->buffer.size() < st->owned_bytes;
  if (fresh && !st->buffer.Allocate(st->owned_bytes)) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: cannot allocate %d bytes for layer %d", name(), st->owned_bytes, st->layer));
  }
  uint8_t* base = st->buffer.data();
  for (size_t i = 0; i < st->views.size(); ++i) {
    if (st->offsets[i] == LayerState::kNoBuffer) continue;
    TensorView& v = st->views[i];
    uint8_t* p = base + st->offsets[i];
    if (v.info->raw()) {
      v.raw = absl::MakeConstSpan(p, v.info->byte_size);
    } else if (!v.info->quantized() || options_.dequantize) {
      v.f32 = absl::MakeConstSpan(reinterpret_cast<const float*>(p), v.info->numel);
    } else {
      v.q = absl::MakeConstSpan(p, v.info->numel);
    }
  }

  std::mutex err_mu;
  absl::Status err;
  std::atomic<bool> failed{false};
  const bool verify = options_.verify_checksums;
  auto task = [&](size_t k) {
    if (failed.load(std::memory_order_relaxed)) return;
    const auto [vi, c] = st->tasks[k];
    const TensorView& v = st->views[vi];
    const TensorInfo& ti = *v.info;
    const ChunkInfo& ch = ti.chunks[c];
    uint8_t* dst = base + st->offsets[vi];
    absl::Status s;
    if (ti.quantized() && options_.dequantize) {
      thread_local std::vector<uint8_t> scratch;
      scratch.resize(ch.decoded_size);
      s = reader_->DecodeChunk(v.tensor, c, absl::MakeSpan(scratch), verify);
      if (s.ok()) {
        float* out = reinterpret_cast<float*>(dst) + ch.decoded_offset;
        DequantizeRange(ti, ch.decoded_offset, scratch,
                        absl::MakeSpan(out, scratch.size()));
      }
    } else {
      s = reader_->DecodeChunk(
          v.tensor, c, absl::MakeSpan(dst + ch.decoded_offset, ch.decoded_size), verify);
    }
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(err_mu);
      if (err.ok()) err = s;
      failed.store(true, std::memory_order_relaxed);
    }
  };
  if (st->owned_bytes < kParallelDecodeBytes || pool_->threads() == 1) {
    for (size_t k = 0; k < st->tasks.size(); ++k) task(k);
  } else {
    pool_->ParallelFor(st->tasks.size(), task);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::lock_guard<std::mutex> lock(mu_);
  stats_.decode_seconds += seconds;
  if (err.ok()) stats_.decoded_bytes += st->owned_bytes;
  if (fresh) ++stats_.fresh_buffers;
  return err;
}

absl::StatusOr<LayerHandle> Model::Layer(int layer) {
  LayerState* st = Find(layer);
  if (st == nullptr) {
    return absl::NotFoundError(
        absl::StrFormat("%s: no tensors in layer %d", name(), layer));
  }
  // Views into the mapping are never decoded, so their checksums are checked
  // here, once per tensor (decoded tensors are checked chunk by chunk).
  if (options_.verify_checksums) {
    for (const TensorView& v : st->views) {
      if (!v.in_place || verified_[v.tensor].load(std::memory_order_acquire) != 0) continue;
      TQM_RETURN_IF_ERROR(VerifyTensorChunks(*reader_, v.tensor, name()));
      verified_[v.tensor].store(1, std::memory_order_release);
    }
  }
  std::vector<Buffer> freed;
  std::string warning;
  std::unique_lock<std::mutex> lock(mu_);
  bool waited = false;
  for (;;) {
    if (st->state == Residency::kReady) {
      if (!waited) ++stats_.hits;
      if (st->prefetched) {
        ++stats_.prefetch_hits;
        st->prefetched = false;
      }
      break;
    }
    if (st->state == Residency::kDecoding) {
      if (!waited) ++stats_.waits;
      waited = true;
      cv_.wait(lock);
      continue;
    }
    // Absent: decode it here.
    const uint64_t held = Held();
    bool over = false;
    if (Reserve(st->owned_bytes, false, &st->buffer, &freed)) {
      st->charged = std::max(st->buffer.size(), st->owned_bytes);
      // A spare buffer kept over the budget (TrimLocked) was taken.
      over = options_.budget_bytes != 0 && Held() > options_.budget_bytes;
    } else {
      over = true;
      stats_.resident_bytes += st->owned_bytes;
      st->charged = st->owned_bytes;
    }
    if (over) {
      ++stats_.over_budget;
      // Once per Model: a runtime whose pinned tensors exceed the budget
      // goes over it on every layer of every token.
      if (!warned_over_budget_) {
        warned_over_budget_ = true;
        warning = absl::StrFormat(
            "%s: layer %d needs %d decoded bytes but the budget is %d bytes (%d held by "
            "pinned, decoding or recycled layer buffers); decoding it over budget (reported "
            "once; ModelStats::over_budget counts every such decode)",
            name(), layer, st->owned_bytes, options_.budget_bytes, held);
      }
    }
    st->state = Residency::kDecoding;
    stats_.peak_resident_bytes = std::max(stats_.peak_resident_bytes, Held());
    lock.unlock();
    freed.clear();
    if (!warning.empty()) Warn(warning);
    absl::Status s = Decode(st);
    lock.lock();
    if (!s.ok()) {
      freed.push_back(std::move(st->buffer));
      FreeLayer(st);
      stats_.resident_bytes -= st->charged;
      st->charged = 0;
      ++stats_.decode_failures;
      cv_.notify_all();
      lock.unlock();
      return s;
    }
    st->state = Residency::kReady;
    ++stats_.decodes;
    cv_.notify_all();
    break;
  }
  ++st->pins;
  st->last_use = ++tick_;
  ++stats_.layer_requests;
  lock.unlock();
  freed.clear();

  LayerHandle h;
  h.model_ = this;
  h.state_ = st;
  if (layer >= 0) {
    for (int k = 1; k <= options_.prefetch; ++k) {
      int next = NextLayer(layer, k);
      if (next == layer) break;
      Prefetch(next);
    }
  }
  return h;
}

void Model::Prefetch(int layer) {
  LayerState* st = Find(layer);
  if (st == nullptr) return;
  Advise(layer);
  std::vector<Buffer> freed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || st->state != Residency::kAbsent) return;
    if (!Reserve(st->owned_bytes, true, &st->buffer, &freed)) {
      ++stats_.prefetch_skipped;
      return;
    }
    st->charged = std::max(st->buffer.size(), st->owned_bytes);
    st->state = Residency::kDecoding;
    st->prefetched = true;
    stats_.peak_resident_bytes = std::max(stats_.peak_resident_bytes, Held());
    ++stats_.prefetches;
    prefetch_queue_.push_back(st);
  }
  prefetch_cv_.notify_one();
}

void Model::PrefetchLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    prefetch_cv_.wait(lock, [this] { return stop_ || !prefetch_queue_.empty(); });
    if (prefetch_queue_.empty()) return;  // stop_
    LayerState* st = prefetch_queue_.front();
    prefetch_queue_.pop_front();
    lock.unlock();
    absl::Status s = Decode(st);
    Buffer failed_buffer;
    lock.lock();
    if (s.ok()) {
      st->state = Residency::kReady;
      st->last_use = ++tick_;
      ++stats_.decodes;
    } else {
      // Layer() will decode again and report the error.
      failed_buffer = std::move(st->buffer);
      FreeLayer(st);
      stats_.resident_bytes -= st->charged;
      st->charged = 0;
      ++stats_.decode_failures;
    }
    cv_.notify_all();
    lock.unlock();
    failed_buffer.Reset();
    lock.lock();
  }
}

void Model::Advise(int layer) const {
  if (!mapped_) return;
  const LayerState* st = Find(layer);
  if (st == nullptr) return;
  const uintptr_t base = reinterpret_cast<uintptr_t>(reader_->bytes().data());
  const uintptr_t page = PageSize();
  for (const auto& [off, len] : st->ranges) {
    uintptr_t start = (base + off) / page * page;
    uintptr_t end = base + off + len;
    madvise(reinterpret_cast<void*>(start), end - start, MADV_WILLNEED);
  }
}

void Model::EvictUnpinned() {
  std::vector<Buffer> freed;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& st : layers_) {
    if (st->state != Residency::kReady || st->pins > 0 || st->owned_bytes == 0) continue;
    freed.push_back(std::move(st->buffer));
    FreeLayer(st.get());
    stats_.resident_bytes -= st->charged;
    st->charged = 0;
    ++stats_.evictions;
  }
  for (Buffer& b : spare_->buffers) freed.push_back(std::move(b));
  spare_->buffers.clear();
  stats_.cached_bytes = 0;
}

absl::StatusOr<EncodedTensor> Model::Encoded(int tensor) {
  const std::vector<TensorInfo>& tensors = reader_->tensors();
  if (tensor < 0 || static_cast<size_t>(tensor) >= tensors.size()) {
    return absl::OutOfRangeError(absl::StrFormat("%s: no tensor %d", name(), tensor));
  }
  const TensorInfo& ti = tensors[tensor];
  if (options_.verify_checksums &&
      verified_[tensor].load(std::memory_order_acquire) == 0) {
    TQM_RETURN_IF_ERROR(VerifyTensorChunks(*reader_, tensor, name()));
    verified_[tensor].store(1, std::memory_order_release);
  }
  EncodedTensor e;
  e.tensor = tensor;
  e.info = &ti;
  e.table = reader_->table();
  e.file = reader_->bytes();
  return e;
}

}  // namespace tqm
