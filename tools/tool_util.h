// Small helpers shared by the tqm command-line tools: the command-line
// contract every tool follows (exit status 0 success, 1 failure, 2 usage
// error; --version; the same names for -o/--output, --tokenizer, --threads,
// -q/--quiet and --json), progress bars, JSON summaries, signal cleanup of
// temporary files, human-readable sizes, the CPU model and clock for
// benchmarks. Header-only.

#ifndef TQM_TOOLS_TOOL_UTIL_H_
#define TQM_TOOLS_TOOL_UTIL_H_

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "base/atomic_file.h"
#include "tqm/format.h"
#include "tqm/inspect.h"

// The project version, from CMake's project(VERSION) (root CMakeLists.txt).
#ifndef TQM_VERSION
#error "TQM_VERSION must be defined by the build (root CMakeLists.txt)"
#endif

namespace tqm {

// ---- the command-line contract ----

inline constexpr int kExitSuccess = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// "tqm-pack 0.1.0 (format 1.3)": the tool, the project version and the
// newest format version this build writes.
inline std::string VersionLine(const std::string& tool) {
  return absl::StrFormat("%s %s (format %d.%d)", tool, TQM_VERSION, format::kMajorVersion,
                         format::kMinorVersion);
}

// Adds --version and the exit-status footer every tool's --help shows.
inline void SetUpCommandLine(CLI::App& app, const std::string& tool) {
  app.set_version_flag("--version", VersionLine(tool), "print the version and exit");
  app.footer("Exit status: 0 success, 1 failure, 2 usage error (unknown flag, bad value).");
}

// The names every tool uses for the same things.
inline CLI::Option* AddQuietFlag(CLI::App& app, bool* quiet,
                                 const std::string& help = "no progress and no summary") {
  return app.add_flag("-q,--quiet", *quiet, help);
}
inline CLI::Option* AddJsonFlag(CLI::App& app, bool* json,
                                const std::string& help = "print the summary as JSON on stdout") {
  return app.add_flag("--json", *json, help);
}
template <typename Int>
CLI::Option* AddThreadsOption(CLI::App& app, Int* threads,
                              const std::string& help = "worker threads (0: all cores)") {
  return app.add_option("--threads", *threads, help)->check(CLI::Range(0, 4096));
}

// Parses the command line. Returns -1 when the tool should go on, else the
// status to exit with: 0 after --help or --version, kExitUsage after any
// parse error (CLI11 has printed the message; its own codes, 105-109, would
// contradict the documented 2).
inline int ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitSuccess : kExitUsage;
  }
}

// In main(): parse, or return the exit status.
#define TQM_PARSE_COMMAND_LINE(app, argc, argv)                           \
  do {                                                                    \
    const int tqm_parse_status_ = ::tqm::ParseCommandLine(app, argc, argv); \
    if (tqm_parse_status_ >= 0) return tqm_parse_status_;                 \
  } while (0)

// A usage error found after parsing (flags that do not go together):
// prints "tool: message" and the hint CLI11 gives; returns kExitUsage.
inline int UsageError(const std::string& tool, const std::string& message) {
  std::cerr << tool << ": " << EscapeForTerminal(message)
            << "\nRun with --help for more information.\n";
  return kExitUsage;
}

// A failure: prints "tool: message" (control characters escaped, since
// messages quote file contents); returns kExitFailure.
inline int Failure(const std::string& tool, const std::string& message) {
  std::cerr << tool << ": " << EscapeForTerminal(message) << "\n";
  return kExitFailure;
}

// ---- JSON summaries ----

// One flat JSON object built field by field, for --json summaries.
class JsonObject {
 public:
  JsonObject& Add(const std::string& key, const std::string& value) {
    return Raw(key, JsonQuote(value));
  }
  JsonObject& Add(const std::string& key, const char* value) {
    return Raw(key, JsonQuote(value));
  }
  JsonObject& Add(const std::string& key, bool value) { return Raw(key, value ? "true" : "false"); }
  JsonObject& Add(const std::string& key, int64_t value) {
    return Raw(key, absl::StrFormat("%d", value));
  }
  JsonObject& Add(const std::string& key, uint64_t value) {
    return Raw(key, absl::StrFormat("%d", value));
  }
  JsonObject& Add(const std::string& key, int value) { return Add(key, int64_t{value}); }
  // Non-finite values become null (JSON has no NaN).
  JsonObject& Add(const std::string& key, double value) {
    return Raw(key, std::isfinite(value) ? absl::StrFormat("%.6g", value) : "null");
  }
  // `json` must already be valid JSON (a nested object).
  JsonObject& Raw(const std::string& key, const std::string& json) {
    body_ += absl::StrFormat("%s%s:%s", body_.empty() ? "" : ",", JsonQuote(key), json);
    return *this;
  }
  std::string str() const { return "{" + body_ + "}"; }

 private:
  std::string body_;
};

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
// 2-core machine ran at 4.0-4.2 GHz on 2026-11-23 and at 3.2-3.7 on
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

// A progress bar for writers that report no progress themselves: a thread
// samples AtomicFileBytesWritten() ten times a second against the expected
// output size. Starts nothing when `enabled` is false or stderr is not a
// terminal; the destructor stops it and clears the line.
class WriteProgress {
 public:
  WriteProgress(std::string label, uint64_t expected_bytes, bool enabled)
      : label_(std::move(label)), expected_(std::max<uint64_t>(expected_bytes, 1)),
        start_(AtomicFileBytesWritten()) {
    if (!enabled || !isatty(STDERR_FILENO)) return;
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      while (!stop_) {
        const double done = static_cast<double>(AtomicFileBytesWritten() - start_);
        bar_.Update(label_, std::min(1.0, done / expected_));
        cv_.wait_for(lock, std::chrono::milliseconds(100));
      }
      bar_.Done();
    });
  }
  ~WriteProgress() { Stop(); }
  void Stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::string label_;
  uint64_t expected_;
  uint64_t start_;
  ProgressBar bar_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tqm

#endif  // TQM_TOOLS_TOOL_UTIL_H_
