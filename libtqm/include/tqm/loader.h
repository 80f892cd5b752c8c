// The lazy layer loader: a .tqm file mapped read-only, its tensors grouped by
// layer, each layer decoded on first access (in parallel over its chunks)
// and kept while it is pinned or while a memory budget allows.
//
// A backend asks for a layer, gets a LayerHandle that pins the decoded
// tensors, uses the TensorViews it holds, and drops the handle. Unpinned
// layers stay decoded until the budget needs their bytes back (least recently
// used first). A background thread can decode the next layers while the
// caller computes, so that a model larger than the budget streams through
// memory layer by layer.
//
// Only bytes the Model allocates count against the budget: tensors stored
// uncompressed in one contiguous range (Reader::InPlace) are viewed in the
// mapping without a copy and cost no budget.

#ifndef TQM_LOADER_H_
#define TQM_LOADER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "tqm/quantize.h"
#include "tqm/reader.h"

namespace tqm {

class ThreadPool;  // base/parallel.h

struct ModelOptions {
  // Decoding parallelism (chunks of one layer at once). 0: the number of
  // hardware threads.
  int threads = 0;
  // Bytes of decoded data the Model may hold (buffers it allocates; views
  // into the mapping are free). 0: unlimited. A layer that does not fit even
  // after evicting every unpinned layer is still decoded when asked for by
  // Layer() (never by Prefetch()) and reported through on_warning, once per
  // Model (ModelStats::over_budget counts them all). While pinned layers
  // leave no room for the next one, one spare buffer is kept over the budget
  // for that decode, so that streaming reuses it instead of fresh pages.
  uint64_t budget_bytes = 0;
  // Refuse (ResourceExhaustedError) to decode a layer whose decoded bytes
  // exceed this, whatever the budget. Entropy-coded chunks can decode to far
  // more bytes than they occupy (a 2-byte constant chunk to 4 MiB), so this
  // is the guard against decompression bombs in untrusted files. 0: the
  // machine's physical memory.
  uint64_t max_layer_bytes = 0;
  // Verify each chunk's XXH3 checksum before decoding it.
  bool verify_checksums = true;
  // Hold quantized tensors as dequantized float32 (TensorView::f32) instead
  // of uint8 (TensorView::q). Costs 4 bytes per weight.
  bool dequantize = false;
  // Do not decode quantized tensors at all: layers hold only float32 tensors
  // (norms); quantized ones are read through Model::Encoded() by kernels that
  // decode chunks themselves.
  bool skip_quantized = false;
  // View tensors stored uncompressed and contiguous in the mapping instead of
  // copying them.
  bool zero_copy = true;
  // After Layer(i), decode the next `prefetch` layers (in layer order,
  // wrapping from the last layer to the first) in the background when the
  // budget has room. 0: no automatic prefetch.
  int prefetch = 0;
  // Receives warnings (over-budget layers). Called without locks held, from
  // whichever thread noticed. May be empty.
  std::function<void(const std::string&)> on_warning;
};

// One tensor of a decoded layer. Spans stay valid while the LayerHandle it
// came from is alive (or, for in_place views, while the Model lives).
struct TensorView {
  int tensor = -1;                   // index in Model::reader().tensors()
  const TensorInfo* info = nullptr;  // owned by the Reader
  // uint8 weights (numel bytes, row-major) of a quantized tensor decoded
  // natively. Empty with ModelOptions::dequantize or skip_quantized.
  absl::Span<const uint8_t> q;
  // float32 values (numel): an unquantized tensor, or a quantized one
  // dequantized with ModelOptions::dequantize.
  absl::Span<const float> f32;
  // The bytes of a tensor stored verbatim (RAW storage, elements of
  // info->source_dtype, little-endian).
  absl::Span<const uint8_t> raw;
  // Affine parameters of a quantized tensor: one (per tensor), rows() (per
  // row) or one per group (TensorInfo::ParamIndex). Empty otherwise.
  absl::Span<const Affine> affine;
  // The data is a view of the mapped file, not a decoded copy.
  bool in_place = false;

  const std::string& name() const { return info->name; }
  bool quantized() const { return info->quantized(); }
  // dims[0] (1 for a 0-d tensor), and the number of elements per dims[0]
  // slice.
  uint64_t rows() const { return info->dims.empty() ? 1 : info->dims[0]; }
  uint64_t cols() const { return rows() == 0 ? 0 : info->numel / rows(); }
  // The pair of `row` for per-tensor and per-row storage (group storage has
  // several per row: TensorInfo::ParamIndex).
  const Affine& RowAffine(uint64_t row) const {
    return affine.size() == 1 ? affine[0] : affine[row];
  }
  // Writes the float32 value of every element (dequantizing when needed)
  // into `out` (numel values). FailedPrecondition when the view holds no
  // data (skip_quantized).
  absl::Status ToFloat(absl::Span<float> out) const;
};

// The compressed chunks of one tensor, for kernels that decode as they go.
// Valid while the Model lives.
struct EncodedTensor {
  int tensor = -1;
  const TensorInfo* info = nullptr;
  absl::Span<const uint32_t> table;  // the file's sequence table
  absl::Span<const uint8_t> file;    // the whole file

  absl::Span<const uint8_t> chunk(size_t c) const {
    return file.subspan(info->chunks[c].offset, info->chunks[c].encoded_size);
  }
};

struct ModelStats {
  uint64_t layer_requests = 0;  // Layer() calls that succeeded
  uint64_t hits = 0;            // found decoded
  uint64_t waits = 0;           // waited for another thread's decode
  uint64_t decodes = 0;         // layer decodes completed (any thread)
  uint64_t decode_failures = 0;
  uint64_t prefetches = 0;        // background decodes started
  uint64_t prefetch_hits = 0;     // Layer() found a prefetched layer
  uint64_t prefetch_skipped = 0;  // no room in the budget
  uint64_t evictions = 0;
  // Decodes into a newly allocated buffer (the others reuse a spare one).
  uint64_t fresh_buffers = 0;
  uint64_t over_budget = 0;     // decodes that went over the budget
  uint64_t resident_bytes = 0;  // decoded bytes held now (incl. decoding)
  // Buffers of evicted layers kept for reuse by later decodes that fit in
  // them (budgeted models only); resident + cached stays within the budget
  // unless pinned layers crowd it out (ModelOptions::budget_bytes).
  uint64_t cached_bytes = 0;
  uint64_t peak_resident_bytes = 0;  // of resident + cached
  uint64_t decoded_bytes = 0;        // total bytes produced by decodes
  double decode_seconds = 0;         // summed wall time of layer decodes
};

class Model;
namespace internal {
// loader.cc
struct LayerState;
class Buffer;
struct SpareBuffers;
}  // namespace internal

// Pins one decoded layer. Move-only; the pin is dropped by the destructor or
// Release(). Must not outlive its Model.
class LayerHandle {
 public:
  LayerHandle() = default;
  ~LayerHandle() { Release(); }
  LayerHandle(LayerHandle&& other) noexcept;
  LayerHandle& operator=(LayerHandle&& other) noexcept;
  LayerHandle(const LayerHandle&) = delete;
  LayerHandle& operator=(const LayerHandle&) = delete;

  bool valid() const { return model_ != nullptr; }
  int layer() const;
  // The layer's tensors, in file order.
  absl::Span<const TensorView> tensors() const;
  // The tensor called `name` if it belongs to this layer, else nullptr.
  const TensorView* Find(absl::string_view name) const;
  // Like Find, but NotFoundError naming the file, layer and tensor.
  absl::StatusOr<const TensorView*> Get(absl::string_view name) const;
  void Release();

 private:
  friend class Model;
  Model* model_ = nullptr;
  internal::LayerState* state_ = nullptr;
};

class Model {
 public:
  // Maps `path` read-only (Reader::Open, which validates the whole index
  // without touching tensor data) and groups the tensors by layer.
  static absl::StatusOr<std::unique_ptr<Model>> Open(const std::string& path,
                                                     ModelOptions options = {});
  // Wraps an already open Reader (e.g. Reader::FromBuffer in tests).
  static absl::StatusOr<std::unique_ptr<Model>> FromReader(std::unique_ptr<Reader> reader,
                                                           ModelOptions options = {});

  // Waits for background decodes. Every LayerHandle must have been released.
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Reader& reader() const { return *reader_; }
  const std::string& name() const { return reader_->name(); }
  const ModelOptions& options() const { return options_; }

  // 1 + the highest layer number in the file (0 when no tensor has one).
  int num_layers() const { return num_layers_; }
  bool HasLayer(int layer) const { return slot_.contains(layer); }
  // Reader tensor indices of `layer` (format::kNoLayer for the tensors that
  // belong to no layer); empty when there are none.
  absl::Span<const int> LayerTensors(int layer) const;
  // Bytes `layer` takes against the budget when decoded.
  uint64_t LayerBytes(int layer) const;
  // Layer number of reader tensor `tensor`.
  int LayerOf(int tensor) const;

  // Returns `layer` decoded and pinned: decodes it now unless it is decoded
  // or being decoded by another thread (then waits for that). Evicts least
  // recently used unpinned layers to stay within the budget. Errors:
  // NotFound for a layer with no tensors; DataLoss (naming the file, tensor,
  // chunk and offset) for a chunk that fails its checksum or does not
  // decode. Then schedules the automatic prefetch (ModelOptions::prefetch).
  absl::StatusOr<LayerHandle> Layer(int layer);

  // Starts decoding `layer` in the background if it is not decoded, not being
  // decoded, and fits in the budget after evicting unpinned layers; issues
  // madvise(MADV_WILLNEED) on its compressed bytes either way. Errors are
  // not reported here: Layer() repeats the decode and returns them.
  void Prefetch(int layer);

  // madvise(MADV_WILLNEED) over the compressed bytes of `layer` (files
  // opened by path only; a no-op for buffers).
  void Advise(int layer) const;

  // The layer after `layer` in layer order, `distance` steps on, wrapping
  // from the last to the first; -1 when there are no numbered layers.
  int NextLayer(int layer, int distance = 1) const;

  // True when `layer` is decoded now.
  bool IsResident(int layer) const;

  // Drops every unpinned decoded layer (for tests and benchmarks).
  void EvictUnpinned();

  // The compressed chunks of reader tensor `tensor`. With
  // verify_checksums, the first call per tensor checks every chunk's
  // checksum (DataLoss naming the chunk on a mismatch).
  absl::StatusOr<EncodedTensor> Encoded(int tensor);

  ModelStats stats() const;

 private:
  friend class LayerHandle;
  using LayerState = internal::LayerState;

  Model(std::unique_ptr<Reader> reader, ModelOptions options, bool mapped);
  absl::Status Init();
  LayerState* Find(int layer) const;
  // With mu_ held: marks `st` absent and clears its decoded views (the
  // caller takes its buffer).
  void FreeLayer(LayerState* st);
  // With mu_ held: bytes counted against the budget (resident + cached).
  uint64_t Held() const;
  // With mu_ held: the least recently used evictable layer, or nullptr.
  LayerState* LruVictim(bool for_prefetch) const;
  // With mu_ held: evicts `st`; its buffer becomes spare (budgeted models)
  // or goes to `freed`, to be released after the lock is dropped.
  void EvictLocked(LayerState* st, std::vector<internal::Buffer>* freed);
  // With mu_ held: counts `bytes` more as resident, taking a spare buffer of
  // that size into *reuse if there is one, else dropping spare buffers and
  // evicting LRU unpinned layers until they fit. False (nothing counted)
  // when they cannot fit.
  bool Reserve(uint64_t bytes, bool for_prefetch, internal::Buffer* reuse,
               std::vector<internal::Buffer>* freed);
  // With mu_ held: back within the budget as far as pins allow.
  void TrimLocked(std::vector<internal::Buffer>* freed);
  // Decodes into st (mu_ not held; st->state is kDecoding).
  absl::Status Decode(LayerState* st);
  void Unpin(LayerState* st);
  void PrefetchLoop();
  void Warn(const std::string& message) const;

  ModelOptions options_;
  std::unique_ptr<Reader> reader_;
  bool mapped_ = false;
  int num_layers_ = 0;
  std::vector<std::unique_ptr<LayerState>> layers_;
  absl::flat_hash_map<int, int> slot_;  // layer number -> index in layers_
  std::vector<int> numbered_;           // layer numbers >= 0, ascending
  std::vector<int> tensor_layer_;       // reader tensor -> layer number
  std::vector<int> tensor_view_;        // reader tensor -> index in its layer
  std::unique_ptr<std::atomic<uint8_t>[]> verified_;  // per tensor (Encoded)
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<internal::SpareBuffers> spare_;  // guarded by mu_

  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t tick_ = 0;
  ModelStats stats_;
  bool warned_over_budget_ = false;  // the over-budget warning was given
  std::deque<LayerState*> prefetch_queue_;
  std::condition_variable prefetch_cv_;
  bool stop_ = false;
  std::thread prefetch_thread_;
};

}  // namespace tqm

#endif  // TQM_LOADER_H_
