// A parallel loop for the writer and the quantizers: fn(0), ..., fn(n - 1)
// on up to `threads` threads (0 = all cores), each index exactly once, in
// no particular order. Returns when all are done.

#ifndef TQM_SRC_PARALLEL_H_
#define TQM_SRC_PARALLEL_H_

#include <cstddef>
#include <functional>

namespace tqm {
namespace internal {

void ParallelFor(size_t n, unsigned threads, const std::function<void(size_t)>& fn);

}  // namespace internal
}  // namespace tqm

#endif  // TQM_SRC_PARALLEL_H_
