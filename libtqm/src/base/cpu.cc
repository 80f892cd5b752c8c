// CPU feature detection, capped by TQM_CPU (cpu.h).

#include "base/cpu.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#define TQM_CPU_X86 1
#else
#define TQM_CPU_X86 0
#endif

namespace tqm {
namespace cpu {
namespace {

struct CapSetting {
  Level level = Level::kAvx512;
  const char* name = "native";
};

CapSetting ReadCap() {
  CapSetting c;
  const char* v = std::getenv("TQM_CPU");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "native") == 0) return c;
  if (std::strcmp(v, "avx512") == 0) {
    c.name = "avx512";
  } else if (std::strcmp(v, "avx2") == 0) {
    c.level = Level::kAvx2;
    c.name = "avx2";
  } else {
    c.level = Level::kPortable;
    c.name = "portable";
  }
  return c;
}

const CapSetting& TheCap() {
  static const CapSetting cap = ReadCap();
  return cap;
}

#if TQM_CPU_X86
bool X86Avx2() {
  static const bool have = [] {
    unsigned a, b, c, d;
    const bool lzcnt = __get_cpuid(0x80000001, &a, &b, &c, &d) && (c & (1u << 5));
    return lzcnt && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt");
  }();
  return have;
}
bool X86Avx512() {
  static const bool have = X86Avx2() && __builtin_cpu_supports("avx512f") &&
                           __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl");
  return have;
}
bool X86Avx512Vbmi() {
  static const bool have = X86Avx512() && __builtin_cpu_supports("avx512vbmi") &&
                           __builtin_cpu_supports("avx512vbmi2");
  return have;
}
#endif

}  // namespace

Level Cap() { return TheCap().level; }
const char* CapName() { return TheCap().name; }

bool HasAvx2() {
#if TQM_CPU_X86
  return Cap() >= Level::kAvx2 && X86Avx2();
#else
  return false;
#endif
}

bool HasAvx2Fma() {
#if TQM_CPU_X86
  static const bool fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return Cap() >= Level::kAvx2 && fma;
#else
  return false;
#endif
}

bool HasAvx512() {
#if TQM_CPU_X86
  return Cap() >= Level::kAvx512 && X86Avx512();
#else
  return false;
#endif
}

bool HasAvx512Vbmi() {
#if TQM_CPU_X86
  return Cap() >= Level::kAvx512 && X86Avx512Vbmi();
#else
  return false;
#endif
}

bool HasNeon() {
#if defined(__aarch64__)
  return Cap() != Level::kPortable;
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace tqm
