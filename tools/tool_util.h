// Small helpers shared by the tqm command-line tools: progress bar, signal
// cleanup of temporary files, human-readable sizes, the CPU model and clock
// for benchmarks. Header-only.

#ifndef TQM_TOOLS_TOOL_UTIL_H_
#define TQM_TOOLS_TOOL_UTIL_H_

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/str_format.h"
#include "atomic_file.h"

namespace tqm {

inline void OnFatalSignal(int sig) {
  RemoveTemporaryFilesOnSignal();
  signal(sig, SIG_DFL);
  raise(sig);
}

// Removes temporary output files if the tool is interrupted (SIGINT, SIGTERM,
// SIGHUP), so an interrupted run leaves the destination as it was and no
// litter beside it.
inline void InstallCleanupHandlers() {
  signal(SIGINT, OnFatalSignal);
  signal(SIGTERM, OnFatalSignal);
  signal(SIGHUP, OnFatalSignal);
}

// The CPU model from /proc/cpuinfo ("unknown" when not found), for benchmarks.
inline std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

// The core clock in GHz while this runs, from a chain of dependent adds (one
// per cycle on every x86-64 core): the fastest of five runs of ~3 ms each;
// 0 where that is not available. A VM's clock is not fixed: this project's
// 2-core machine ran at 4.0-4.2 GHz in earlier sessions and at 3.2-3.7 on
// 2026-12-07, and per-core GB/s follow it, so benchmarks print it.
inline double MeasureGhz() {
#if defined(__x86_64__) && defined(__GNUC__)
  using Clock = std::chrono::steady_clock;
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    uint64_t x = 0;
    const uint64_t n = 2500000;  // 4 adds each: 10 M cycles, ~3 ms at 3 GHz
    const auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; ++i) {
      asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    }
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s > 0) best = std::max(best, 4.0 * n / s / 1e9);
  }
  return best;
#else
  return 0;
#endif
}

// "3.52 GHz", or "unknown" where MeasureGhz() could not measure.
inline std::string GhzText(double ghz) {
  return ghz > 0 ? absl::StrFormat("%.2f GHz", ghz) : std::string("unknown");
}

// The same as a JSON number, or null.
inline std::string GhzJson(double ghz) {
  return ghz > 0 ? absl::StrFormat("%.2f", ghz) : std::string("null");
}

inline std::string HumanBytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f %s", b, units[u]) : absl::StrFormat("%.2f %s", b, units[u]);
}

// A one-line progress bar on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  ProgressBar() : tty_(isatty(STDERR_FILENO)) {}
  ~ProgressBar() { Done(); }
  void Update(const std::string& label, double fraction) {
    if (!tty_) return;
    const int width = 30;
    int fill = static_cast<int>(fraction * width + 0.5);
    fill = fill < 0 ? 0 : (fill > width ? width : fill);
    std::fprintf(stderr, "\r%-28s [%s%s] %5.1f%%", label.c_str(), std::string(fill, '#').c_str(),
                 std::string(width - fill, '.').c_str(), 100.0 * fraction);
    std::fflush(stderr);
    drawn_ = true;
  }
  void Done() {
    if (tty_ && drawn_) std::fprintf(stderr, "\r%-70s\r", "");
    drawn_ = false;
  }

 private:
  bool tty_;
  bool drawn_ = false;
};

}  // namespace tqm

#endif  // TQM_TOOLS_TOOL_UTIL_H_
