#!/usr/bin/env bash
# Installs tqm into a temporary prefix and builds programs outside the tree
# against it, the way a project that depends on tqm would:
#   - tests/install through find_package(tqm CONFIG): a C program on
#     tqm::tqm_c and a C++ one on tqm::tqm and on tqm::tqm_static (Abseil
#     found by tqmConfig.cmake);
#   - tests/install/consumer.c through `pkg-config --cflags --libs tqm`.
# Each verifies a file packed by the installed tqm-pack (stories260K when
# ../shared, or $TQM_SHARED_DIR, has it, else a tqm-genmodel model) and they
# must agree on it.
#
#   scripts/test-install.sh [BUILD_DIR]     (default build, a Release build)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
BUILD=${1:-build}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

say() { echo "test-install: $*"; }
die() { echo "test-install: FAIL: $*" >&2; exit 1; }

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
# cmake --install copies what the build made: everything must be built.
cmake --build "$BUILD" -j "$JOBS" >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tqm-install.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PREFIX=$TMP/prefix
cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
LIBDIR=$(dirname "$(find "$PREFIX" -name tqm.pc -path '*/pkgconfig/*' | head -1)")/..
LIBDIR=$(cd "$LIBDIR" && pwd)

# What was installed: headers (with the generated version.h), both libraries
# under their sonames, the CMake package, tqm.pc and the tools.
for f in include/tqm/c_api.h include/tqm/reader.h include/tqm/version.h \
         bin/tqm-pack bin/tqm-inspect bin/tqm-unpack bin/tqm-run bin/tqm-bench; do
  [ -e "$PREFIX/$f" ] || die "$f not installed"
done
for lib in libtqm.a libtqm.so libtqm_c.so; do
  [ -e "$LIBDIR/$lib" ] || die "$lib not installed in $LIBDIR"
done
for lib in libtqm.so libtqm_c.so; do
  soname=$(objdump -p "$LIBDIR/$lib" | awk '/SONAME/ {print $2}')
  [ -n "$soname" ] && [ "$soname" != "$lib" ] || die "$lib has no versioned SONAME ($soname)"
  [ -e "$LIBDIR/$soname" ] || die "$soname (the SONAME of $lib) not installed"
done
[ -f "$LIBDIR/cmake/tqm/tqmConfig.cmake" ] || die "tqmConfig.cmake not installed"

# A model packed with the installed tools.
SHARED=${TQM_SHARED_DIR:-$SRC/../shared}/models/stories260K
if [ -f "$SHARED/stories260K.bin" ] && [ -f "$SHARED/tok512.bin" ]; then
  "$PREFIX/bin/tqm-pack" "$SHARED/stories260K.bin" --tokenizer "$SHARED/tok512.bin" \
    -o "$TMP/model.tqm" >/dev/null
  model=stories260K
else
  "$PREFIX/bin/tqm-genmodel" -o "$TMP/model.bin" --tokenizer-out "$TMP/tok.bin" \
    --dim 64 --hidden 160 --layers 2 --heads 4 --kv-heads 2 --vocab 320 >/dev/null
  "$PREFIX/bin/tqm-pack" "$TMP/model.bin" --tokenizer "$TMP/tok.bin" \
    -o "$TMP/model.tqm" >/dev/null
  model="a tqm-genmodel model (../shared absent)"
fi

# find_package(tqm CONFIG), from a directory outside the tree.
cp -r "$SRC/tests/install" "$TMP/consumer"
cmake -S "$TMP/consumer" -B "$TMP/consumer-build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PREFIX" >"$TMP/consumer-configure.log" 2>&1 ||
  { cat "$TMP/consumer-configure.log" >&2; die "find_package(tqm) consumer does not configure"; }
cmake --build "$TMP/consumer-build" -j "$JOBS" >"$TMP/consumer-build.log" 2>&1 ||
  { cat "$TMP/consumer-build.log" >&2; die "find_package(tqm) consumer does not build"; }
out_cmake_c=$("$TMP/consumer-build/consumer_c" "$TMP/model.tqm") ||
  die "consumer_c (tqm::tqm_c) failed"
out_cmake_cxx=$("$TMP/consumer-build/consumer_cxx" "$TMP/model.tqm") ||
  die "consumer_cxx (tqm::tqm) failed"
out_cmake_static=$("$TMP/consumer-build/consumer_cxx_static" "$TMP/model.tqm") ||
  die "consumer_cxx_static (tqm::tqm_static) failed"
# Linked against libtqm.so, not the static library's copy.
objdump -p "$TMP/consumer-build/consumer_cxx" | grep -q 'NEEDED.*libtqm\.so' ||
  die "consumer_cxx does not load libtqm.so"

# pkg-config.
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig
[ "$(pkg-config --modversion tqm)" = "$(sed -n 's/^#define TQM_VERSION_STRING "\(.*\)"/\1/p' \
  "$PREFIX/include/tqm/version.h")" ] || die "tqm.pc and version.h disagree on the version"
# shellcheck disable=SC2046
cc -std=c99 -Wall -Werror -o "$TMP/consumer_pc" "$TMP/consumer/consumer.c" \
  $(pkg-config --cflags --libs tqm) || die "pkg-config consumer does not build"
out_pc=$(LD_LIBRARY_PATH=$LIBDIR "$TMP/consumer_pc" "$TMP/model.tqm") ||
  die "pkg-config consumer failed"

[ "$out_cmake_c" = "$out_cmake_cxx" ] && [ "$out_cmake_c" = "$out_cmake_static" ] &&
  [ "$out_cmake_c" = "$out_pc" ] ||
  die "consumers disagree: C '$out_cmake_c', C++ '$out_cmake_cxx', C++ static '$out_cmake_static', pkg-config '$out_pc'"
say "PASS: installed into a temporary prefix; find_package(tqm) (C on tqm::tqm_c, C++ on tqm::tqm and tqm::tqm_static) and pkg-config (C) consumers verified $model ($out_pc)"
