// ParallelFor: threads started per call (the writer's and the quantizers'
// loops are long enough that a pool would not pay).

#include "base/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace tqm {
namespace internal {

void ParallelFor(size_t n, unsigned threads, const std::function<void(size_t)>& fn) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<size_t>(threads, n));
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
    });
  }
  for (std::thread& th : pool) th.join();
}

}  // namespace internal
// ---------------------------------------------------------------------------
// ThreadPool

struct ThreadPool::Job {
  const std::function<void(size_t)>* fn = nullptr;
  size_t n = 0;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};  // written under ThreadPool::mu_ (done_cv_)
};

namespace {

// How long an idle thread polls before it sleeps on a condition variable.
// Waking a sleeping thread takes 13-25 us on the project's VM (futex wake
// plus scheduling), a third of decoding stories260K once on one core; a
// runtime decodes layer after layer, so the next job usually comes sooner.
constexpr auto kSpinFor = std::chrono::microseconds(100);

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls until `ready()` or kSpinFor has passed; returns ready().
template <typename Ready>
bool SpinUntil(Ready ready) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      CpuRelax();
    }
    if (std::chrono::steady_clock::now() - start >= kSpinFor) return ready();
  }
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_relaxed);
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Run(const std::shared_ptr<Job>& job) {
  size_t mine = 0;
  for (size_t i; (i = job->next.fetch_add(1, std::memory_order_relaxed)) < job->n;) {
    (*job->fn)(i);
    ++mine;
  }
  if (mine == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  // Release: the caller may see `done` reach n while spinning, without mu_.
  if (job->done.fetch_add(mine, std::memory_order_release) + mine == job->n) {
    done_cv_.notify_all();
  }
}

void ThreadPool::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  bool spun = false;
  for (;;) {
    // Drop jobs whose indices are all claimed; take the first open one.
    while (!queue_.empty() &&
           queue_.front()->next.load(std::memory_order_relaxed) >= queue_.front()->n) {
      queue_.pop_front();
    }
    if (!queue_.empty()) {
      std::shared_ptr<Job> job = queue_.front();
      lock.unlock();
      Run(job);
      lock.lock();
      spun = false;
      continue;
    }
    if (stop_.load(std::memory_order_relaxed)) return;
    if (!spun) {
      // Poll for a new job a while before sleeping (see kSpinFor). The
      // queue is checked again under mu_, so no notify can be lost.
      const uint64_t seen = pushed_.load(std::memory_order_relaxed);
      lock.unlock();
      SpinUntil([&] {
        return pushed_.load(std::memory_order_relaxed) != seen ||
               stop_.load(std::memory_order_relaxed);
      });
      lock.lock();
      spun = true;
      continue;
    }
    work_cv_.wait(lock);
    spun = false;
  }
}

void ThreadPool::ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (workers_.empty() || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job);
    pushed_.fetch_add(1, std::memory_order_relaxed);
  }
  if (n - 1 >= workers_.size()) {
    work_cv_.notify_all();
  } else {
    for (size_t i = 0; i + 1 < n; ++i) work_cv_.notify_one();
  }
  Run(job);
  // The other calls are usually a few microseconds from done: poll first.
  if (SpinUntil([&] { return job->done.load(std::memory_order_acquire) == job->n; })) return;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return job->done.load(std::memory_order_relaxed) == job->n; });
}

}  // namespace tqm
