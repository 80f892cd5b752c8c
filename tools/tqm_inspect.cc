// tqm-inspect: print what a .tqm file holds; --verify checks all of it.

#include <iostream>

#include "CLI/CLI.hpp"
#include "tool_util.h"
#include "tqm/inspect.h"
#include "tqm/reader.h"

int main(int argc, char** argv) {
  CLI::App app{
      "tqm-inspect: print a .tqm file's header, sections, metadata, sequence table and one\n"
      "row per tensor (shape, dtype, layer, codec mix, bytes, bits per weight).\n\n"
      "Opening a file validates its header, directory, metadata, table and tensor index.\n"
      "--verify also checks every checksum (including the DATA section and all padding)\n"
      "and decodes every chunk. Exit status: 0 valid, 1 invalid or unreadable, 2 usage.\n\n"
      "Examples:\n"
      "  tqm-inspect model.tqm\n"
      "  tqm-inspect --verify model.tqm && echo ok\n"
      "  tqm-inspect --json model.tqm | python3 -m json.tool\n"};
  tqm::SetUpCommandLine(app, "tqm-inspect");
  std::string file;
  bool json = false, verify = false, quiet = false;
  unsigned threads = 0;
  app.add_option("FILE", file, ".tqm file to inspect")->required();
  tqm::AddJsonFlag(app, &json, "print the report as one JSON object");
  app.add_flag("--verify", verify, "verify every checksum and decode every chunk");
  tqm::AddThreadsOption(app, &threads, "threads checking chunks with --verify (0: all cores)");
  tqm::AddQuietFlag(app, &quiet, "print nothing; only the exit status tells");
  TQM_PARSE_COMMAND_LINE(app, argc, argv);

  auto reader = tqm::Reader::Open(file);
  if (!reader.ok()) {
    if (json && !quiet) {
      std::cout << "{\"file\":" << tqm::JsonQuote(file)
                << ",\"verify\":{\"ok\":false,\"error\":"
                << tqm::JsonQuote(std::string(reader.status().message())) << "}}\n";
    }
    std::cerr << "tqm-inspect: " << tqm::EscapeForTerminal(std::string(reader.status().message()))
              << "\n";
    return tqm::kExitFailure;
  }
  tqm::InspectReport report = tqm::Inspect(**reader);
  if (verify) {
    tqm::VerifyInto(**reader, threads, &report);
  }
  if (!quiet) std::cout << (json ? tqm::FormatJson(report) : tqm::FormatText(report));
  if (!report.verify_error.empty()) {
    std::cerr << "tqm-inspect: " << tqm::EscapeForTerminal(report.verify_error) << "\n";
    return tqm::kExitFailure;
  }
  return tqm::kExitSuccess;
}
