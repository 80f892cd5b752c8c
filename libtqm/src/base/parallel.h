// Parallel loops: internal::ParallelFor starts threads per call (the writer
// and the quantizers, whose loops are long); ThreadPool keeps its workers
// (the loader, the exporters and the runtime, whose loops are short).

#ifndef TQM_SRC_PARALLEL_H_
#define TQM_SRC_PARALLEL_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tqm {
namespace internal {

// fn(0), ..., fn(n - 1) on up to `threads` threads (0 = all cores), each
// index exactly once, in no particular order. Returns when all are done.
void ParallelFor(size_t n, unsigned threads, const std::function<void(size_t)>& fn);

}  // namespace internal

// A small fork-join pool. The thread calling ParallelFor works on the loop
// too, so ParallelFor never deadlocks, may be called from several threads at
// once, and runs serially when the pool has no workers. An idle worker, and
// a caller waiting for the last calls of its loop, poll for 100 us before
// sleeping: waking a sleeping thread costs more than decoding a small layer.
class ThreadPool {
 public:
  // `threads` is the total parallelism including the caller: the pool
  // starts threads - 1 workers. Values < 1 mean 1.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i) for every i in [0, n), spread over the workers and the
  // caller; returns when all calls have returned.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);

 private:
  struct Job;
  void WorkerLoop();
  void Run(const std::shared_ptr<Job>& job);

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  // Written under mu_; atomic for idle workers polling without it.
  std::atomic<bool> stop_{false};
  // Jobs pushed so far, for idle workers polling before they sleep.
  std::atomic<uint64_t> pushed_{0};
  std::vector<std::thread> workers_;
};
}  // namespace tqm

#endif  // TQM_SRC_PARALLEL_H_
