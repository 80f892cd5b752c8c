#!/usr/bin/env bash
# Hostile-input gate: an ASan+UBSan clang build runs the whole ctest suite
# (which replays every committed fuzz corpus and the bad-file catalogue), then,
# when libFuzzer is available, each fuzzer runs for a bounded time.
#
#   scripts/sanitize.sh              # ~15 minutes on 2 cores
#   TQM_FUZZ_SECONDS=600 scripts/sanitize.sh
#
# Environment:
#   TQM_FUZZ_SECONDS       seconds per fuzz target (default 60; 0 skips fuzzing)
#   TQM_IMPORT_FUZZ_SECONDS  seconds per importer fuzz target (fuzz_gguf,
#                          fuzz_safetensors, fuzz_llama2c, fuzz_tokenizer,
#                          fuzz_json_import; default 40, or TQM_FUZZ_SECONDS
#                          when that is less)
#   TQM_ASAN_BUILD_DIR     default build-asan
#   TQM_FUZZ_BUILD_DIR     default build-fuzz (its corpus/ keeps what the
#                          fuzzers found between runs; crashes go to artifacts/)
#   TQM_CORRUPTION_STRIDE  corruption_test and import_fuzz_test test every n-th
#                          byte (default 4 here; the plain Release suite tests
#                          every byte)
#   TQM_SANITIZE_CTEST_EXCLUDE  ctest -E regex (default ^py_: Python cannot load
#                          the sanitized shared library)
#   JOBS                   parallel build/test jobs (default: nproc)
# Exit status: nonzero on any sanitizer report, test failure or fuzzer crash.
set -euo pipefail
cd "$(dirname "$0")/.."

ASAN_DIR=${TQM_ASAN_BUILD_DIR:-build-asan}
FUZZ_DIR=${TQM_FUZZ_BUILD_DIR:-build-fuzz}
FUZZ_SECONDS=${TQM_FUZZ_SECONDS:-60}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
TARGETS=(fuzz_open fuzz_chunk fuzz_roundtrip)
IMPORT_TARGETS=(fuzz_gguf fuzz_safetensors fuzz_llama2c fuzz_tokenizer fuzz_json_import)
IMPORT_FUZZ_SECONDS=${TQM_IMPORT_FUZZ_SECONDS:-$(( FUZZ_SECONDS < 40 ? FUZZ_SECONDS : 40 ))}
CTEST_EXCLUDE=${TQM_SANITIZE_CTEST_EXCLUDE:-^py_}

if ! command -v clang++ >/dev/null; then
  echo "sanitize: clang++ not found (Debian: apt-get install clang)" >&2
  exit 1
fi
start=$(date +%s)
stamp() { echo "sanitize: [$(( $(date +%s) - start ))s] $*"; }

# Sanitizer reports abort the process so that ctest and libFuzzer see them.
# Leak checking needs ptrace, which some containers forbid: on by default,
# ASAN_OPTIONS overrides.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TQM_CORRUPTION_STRIDE=${TQM_CORRUPTION_STRIDE:-4}

# ---- ASan + UBSan: the whole suite ----
stamp "configure $ASAN_DIR (clang, -DTQM_SANITIZE=ON)"
# C programs over the C API link with the C driver, which leaves out the C++
# parts of the UBSan runtime (vptr checks) that libtqm needs: add them.
CC=clang CXX=clang++ cmake -S . -B "$ASAN_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTQM_SANITIZE=ON "-DCMAKE_C_STANDARD_LIBRARIES=-fsanitize-link-c++-runtime -lstdc++" \
  >/dev/null
stamp "build $ASAN_DIR"
cmake --build "$ASAN_DIR" -j "$JOBS"
# Python tests load libtqm_c.so into an uninstrumented interpreter, which the
# static sanitizer runtimes cannot serve: they run in the plain build.
stamp "ctest in $ASAN_DIR (excluding: $CTEST_EXCLUDE)"
suite=0
(cd "$ASAN_DIR" && ctest --output-on-failure -j "$JOBS" -E "$CTEST_EXCLUDE") || suite=1
if [ "$suite" = 0 ]; then
  stamp "ASan+UBSan suite passed"
else
  stamp "ASan+UBSan suite FAILED (fuzzing still runs; the exit status will say so)"
fi
finish() {
  if [ "$suite" != 0 ]; then
    stamp "FAILED: the ASan+UBSan test suite"
    exit 1
  fi
  exit "${1:-0}"
}

# ---- libFuzzer: each target for FUZZ_SECONDS ----
if [ "$FUZZ_SECONDS" = "0" ]; then
  stamp "TQM_FUZZ_SECONDS=0: fuzzing skipped"
  finish
fi
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"$probe/p.cc"
if ! clang++ -fsanitize=fuzzer "$probe/p.cc" -o "$probe/p" 2>/dev/null; then
  stamp "libFuzzer not available (Debian: libclang-rt-14-dev); fuzzing skipped"
  finish
fi
stamp "configure $FUZZ_DIR (-DTQM_FUZZ=ON -DTQM_SANITIZE=ON)"
CC=clang CXX=clang++ cmake -S . -B "$FUZZ_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTQM_FUZZ=ON -DTQM_SANITIZE=ON >/dev/null
stamp "build fuzzers"
cmake --build "$FUZZ_DIR" -j "$JOBS" --target "${TARGETS[@]}" "${IMPORT_TARGETS[@]}"
mkdir -p "$FUZZ_DIR/artifacts"
failed=0
for t in "${TARGETS[@]}" "${IMPORT_TARGETS[@]}"; do
  seconds=$FUZZ_SECONDS
  case " ${IMPORT_TARGETS[*]} " in *" $t "*) seconds=$IMPORT_FUZZ_SECONDS ;; esac
  [ "$seconds" = 0 ] && continue
  work="$FUZZ_DIR/corpus/$t"
  mkdir -p "$work"
  stamp "fuzz $t for ${seconds}s (corpus: $work + fuzz/corpus/$t)"
  # New inputs go to the first directory; the committed corpus is only read.
  if ! "$FUZZ_DIR/bin/$t" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
      -malloc_limit_mb=512 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="$FUZZ_DIR/artifacts/$t-" "$work" "fuzz/corpus/$t" \
      >"$FUZZ_DIR/$t.log" 2>&1; then
    failed=1
    echo "sanitize: $t FAILED; last lines of $FUZZ_DIR/$t.log:" >&2
    tail -40 "$FUZZ_DIR/$t.log" >&2
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' \
    "$FUZZ_DIR/$t.log" | sed "s/^/  $t /" || true
  echo "  $t corpus: $(ls "$work" | wc -l) files, $(du -sk "$work" | cut -f1) KiB"
done
if [ "$failed" != 0 ]; then
  stamp "a fuzzer found a problem: reproduce with $FUZZ_DIR/bin/<target> $FUZZ_DIR/artifacts/<file>"
  finish 1
fi
stamp "all fuzzers ran (${FUZZ_SECONDS}s each, importers ${IMPORT_FUZZ_SECONDS}s) without a finding"
finish
