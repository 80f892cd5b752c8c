// Small helpers shared by the tqm command-line tools: progress bar, signal
// cleanup of temporary files, human-readable sizes. Header-only.

#ifndef TQM_TOOLS_TOOL_UTIL_H_
#define TQM_TOOLS_TOOL_UTIL_H_

#include <signal.h>
#include <unistd.h>

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
