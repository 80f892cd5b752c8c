#!/usr/bin/env bash
# ThreadSanitizer build (clang, -DTQM_TSAN=ON) running the concurrent-readers
# test: many threads decoding the same memory-mapped file through one Reader,
# and many threads asking one loader Model for its layers.
#
#   scripts/tsan.sh                    # concurrency_test
#   scripts/tsan.sh loader_test ...    # also these test binaries
#
# Environment: TQM_TSAN_BUILD_DIR (default build-tsan), JOBS (default nproc).
# Exit status: nonzero on any data race report or test failure.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${TQM_TSAN_BUILD_DIR:-build-tsan}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
TESTS=(concurrency_test "$@")

if ! command -v clang++ >/dev/null; then
  echo "tsan: clang++ not found (Debian: apt-get install clang)" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S . -B "$DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTQM_TSAN=ON \
  >/dev/null
cmake --build "$DIR" -j "$JOBS" --target "${TESTS[@]}"
# halt_on_error: the first race fails the run; second_deadlock_stack for
# lock-order reports.
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:history_size=4}
for t in "${TESTS[@]}"; do
  echo "tsan: $t"
  "$DIR/bin/$t"
done
echo "tsan: no data races reported"
