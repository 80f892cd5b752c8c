// Replay driver for builds without libFuzzer: runs LLVMFuzzerTestOneInput
// once on every file named on the command line, and on every regular file
// of every directory named (sorted, so runs are reproducible). ctest uses it
// to replay the committed corpora (fuzz/corpus/<target>/) on every build; a
// crash or abort fails the test just as it would under libFuzzer.

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> Expand(const std::string& path) {
  if (!IsDirectory(path)) return {path};
  std::vector<std::string> files;
  if (DIR* d = opendir(path.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string full = path + "/" + name;
      if (!IsDirectory(full)) files.push_back(full);
    }
    closedir(d);
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
    return 2;
  }
  size_t runs = 0, bytes = 0;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] == '-') continue;  // libFuzzer flags: ignored here
    const std::vector<std::string> files = Expand(argv[i]);
    if (files.empty()) {
      fprintf(stderr, "%s: no inputs\n", argv[i]);
      return 1;
    }
    for (const std::string& f : files) {
      std::ifstream in(f, std::ios::binary);
      if (!in) {
        fprintf(stderr, "%s: cannot read\n", f.c_str());
        return 1;
      }
      std::vector<uint8_t> data((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
      // A heap copy of exactly the input's size, as libFuzzer passes it.
      uint8_t* copy = new uint8_t[data.size()];
      std::copy(data.begin(), data.end(), copy);
      LLVMFuzzerTestOneInput(copy, data.size());
      delete[] copy;
      ++runs;
      bytes += data.size();
    }
  }
  printf("replayed %zu inputs (%zu bytes)\n", runs, bytes);
  return 0;
}
