# Cross-compiling for 64-bit Arm Linux on a Debian x86-64 host, tests run
# under qemu-user (scripts/cross-aarch64.sh installs what this needs):
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# Debian multiarch: arm64 libraries under /usr/lib/aarch64-linux-gnu, headers
# and arch-independent CMake packages under /usr.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# The arm64 libc from Debian multiarch (libc6:arm64, pulled in by the arm64
# libraries) is found at its usual path. Not `-L /usr/aarch64-linux-gnu`:
# with that sysroot's loader, qemu 7.2 hangs creating a thread.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
