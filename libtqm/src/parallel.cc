// ParallelFor: threads started per call (the writer's and the quantizers'
// loops are long enough that a pool would not pay).

#include "parallel.h"

#include <algorithm>
#include <atomic>
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
}  // namespace tqm
