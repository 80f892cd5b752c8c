// Atomic writes: a Pack() killed at any moment leaves the destination either
// as it was (byte for byte) or as the complete new file, which verifies.
//
// A child process packs a model of a few tens of MB over a destination that
// already holds a valid old file, reporting each progress step down a pipe;
// the parent SIGKILLs it after a chosen step (every pass: counting, table
// choice, encoding, and after the last tensor, when the index, directory,
// header, fsync and rename happen) or after a delay past the last step. No
// handler can run on SIGKILL, so this tests the write protocol itself
// (temporary file + fsync + rename), not cleanup. Stale temporary files are
// counted and removed; they never carry the destination's name.
//
// OutputGroup: several outputs appear together or not at all, and a failed
// rename puts back what the earlier ones replaced. CheckNotAnInput: an
// output that is an input by any name is refused.

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "base/atomic_file.h"
#include "gtest/gtest.h"
#include "test_util.h"
#include "tqm/reader.h"
#include "tqm/status.h"
#include "tqm/writer.h"

namespace {

using tqm_test::ReadFile;
using tqm_test::WriteFile;

tqm::MemorySource Model(int layers, uint64_t dim, uint32_t seed) {
  tqm::MemorySource m;
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  auto values = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = (rng() % 3 == 0) ? d(rng) : 0.01f * (rng() % 5);
    return v;
  };
  m.AddMeta({"general.architecture", tqm::MetaValue::String("llama")});
  for (int l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    m.Add(p + "input_layernorm.weight", {dim}, values(dim));
    m.Add(p + "mlp.up_proj.weight", {2 * dim, dim}, values(2 * dim * dim));
    m.Add(p + "mlp.down_proj.weight", {dim, 2 * dim}, values(2 * dim * dim));
  }
  return m;
}

std::vector<std::string> TempFiles(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.find(".tmp.") != std::string::npos) out.push_back(dir + "/" + n);
    }
    closedir(d);
  }
  return out;
}

// What a kill found at the destination.
enum class Outcome { kOld, kNew, kBroken };

class AtomicWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* t = getenv("TEST_TMPDIR");
    dir_ = std::string(t && *t ? t : "/tmp") + "/tqm_atomic_XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
    dest_ = dir_ + "/model.tqm";
    tqm::MemorySource old_model = Model(1, 64, 1);
    // Format 1.0 codecs: what is tested here is the write protocol.
    options_.entropy = false;
    absl::StatusOr<std::string> old_bytes = tqm::PackToString(old_model, options_);
    ASSERT_TRUE(old_bytes.ok()) << old_bytes.status();
    old_ = *old_bytes;
    // ~6 MB of float32 input in 18 tensors.
    big_ = Model(6, 512, 2);
    options_.threads = 1;  // slower, finer-grained progress
    absl::StatusOr<std::string> new_bytes = tqm::PackToString(big_, options_);
    ASSERT_TRUE(new_bytes.ok()) << new_bytes.status();
    new_ = *new_bytes;
  }
  void TearDown() override {
    for (const std::string& f : TempFiles(dir_)) unlink(f.c_str());
    unlink(dest_.c_str());
    rmdir(dir_.c_str());
  }

  // Packs `big_` onto dest_ in a child; kills it after `step` progress
  // callbacks plus `delay`; a negative step lets it finish. Returns the
  // number of steps the child reported.
  int PackAndKill(int step, std::chrono::microseconds delay) {
    int fds[2];
    if (pipe(fds) != 0) {
      ADD_FAILURE() << "pipe failed";
      return 0;
    }
    pid_t pid = fork();
    if (pid < 0) {
      ADD_FAILURE() << "fork failed";
      return 0;
    }
    if (pid == 0) {
      close(fds[0]);
      tqm::PackOptions o = options_;
      o.progress = [fd = fds[1]](const tqm::PackProgress&) {
        char c = 1;
        (void)!write(fd, &c, 1);
      };
      absl::StatusOr<tqm::PackStats> st = tqm::Pack(big_, dest_, o);
      char done = st.ok() ? 2 : 3;
      (void)!write(fds[1], &done, 1);
      _exit(st.ok() ? 0 : 1);
    }
    close(fds[1]);
    int steps = 0;
    bool finished = false;
    char c;
    while (read(fds[0], &c, 1) == 1) {
      if (c != 1) {
        finished = true;
        break;
      }
      if (++steps == step) {
        if (delay.count() > 0) std::this_thread::sleep_for(delay);
        kill(pid, SIGKILL);
        break;
      }
    }
    int status = 0;
    waitpid(pid, &status, 0);
    close(fds[0]);
    if (step < 0) {
      EXPECT_TRUE(finished && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return steps;
  }

  Outcome Check() {
    const std::string now = ReadFile(dest_);
    if (now == old_) return Outcome::kOld;
    auto r = tqm::Reader::Open(dest_);
    if (!r.ok()) {
      ADD_FAILURE() << "destination is neither the old nor a valid new file: " << r.status();
      return Outcome::kBroken;
    }
    absl::Status v = (*r)->Verify();
    EXPECT_TRUE(v.ok()) << v;
    EXPECT_EQ(now, new_) << "the new file differs from PackToString's";
    return v.ok() && now == new_ ? Outcome::kNew : Outcome::kBroken;
  }

  std::string dir_, dest_, old_, new_;
  tqm::MemorySource big_;
  tqm::PackOptions options_;
};

TEST_F(AtomicWrite, KilledPackLeavesOldOrCompleteNewFile) {
  // An uninterrupted run first: how many progress steps there are.
  WriteFile(dest_, old_);
  const int total = PackAndKill(-1, std::chrono::microseconds(0));
  ASSERT_GT(total, 6);
  ASSERT_EQ(Check(), Outcome::kNew);

  // Kill points: after each step, and after the last step with delays that
  // land in the index/directory/header writes, fsync and rename.
  // TQM_ATOMIC_ALL_STEPS=1 kills after every step instead of a spread.
  std::vector<std::pair<int, int>> kills;  // (step, delay in microseconds)
  const char* all = getenv("TQM_ATOMIC_ALL_STEPS");
  const int every = all && *all == '1' ? 1 : std::max(1, total / 8);
  for (int s = 1; s <= total; s += every) kills.push_back({s, 0});
  for (int s = std::max(1, total - 2); s <= total; ++s) kills.push_back({s, 0});
  for (int us : {50, 200, 1000, 3000, 10000, 30000, 100000, 300000}) {
    kills.push_back({total, us});
  }
  int olds = 0, news = 0, broken = 0;
  size_t stale = 0;
  for (const auto& [step, us] : kills) {
    SCOPED_TRACE(testing::Message() << "killed after step " << step << " of " << total
                                    << " + " << us << " us");
    WriteFile(dest_, old_);
    PackAndKill(step, std::chrono::microseconds(us));
    switch (Check()) {
      case Outcome::kOld:
        ++olds;
        break;
      case Outcome::kNew:
        ++news;
        break;
      case Outcome::kBroken:
        ++broken;
        break;
    }
    for (const std::string& f : TempFiles(dir_)) {
      ++stale;
      unlink(f.c_str());
    }
  }
  EXPECT_EQ(broken, 0);
  EXPECT_GT(olds, 0);
  std::cout << "[atomic] " << kills.size() << " kills over " << total
            << " progress steps: " << olds << " left the old file, " << news
            << " the complete new one, " << broken << " anything else; " << stale
            << " stale temporary files (SIGKILL leaves them) removed\n";
}

// A scratch directory for the OutputGroup and CheckNotAnInput tests.
class Outputs : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* t = getenv("TEST_TMPDIR");
    dir_ = std::string(t && *t ? t : "/tmp") + "/tqm_outputs_XXXXXX";
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

absl::Status WriteWhole(const std::string& path, const std::string& bytes) {
  TQM_ASSIGN_OR_RETURN(std::unique_ptr<tqm::AtomicFile> f, tqm::AtomicFile::Create(path));
  TQM_RETURN_IF_ERROR(f->Append(bytes));
  return f->Commit();
}

TEST_F(Outputs, GroupCommitsAllOutputsTogether) {
  WriteFile(Path("a"), "old a");
  {
    tqm::OutputGroup group;
    auto a = group.Add(Path("a"));
    auto b = group.Add(Path("b"));
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE(WriteWhole(*a, "new a").ok());
    ASSERT_TRUE(WriteWhole(*b, "new b").ok());
    // Written but not committed: nothing visible yet.
    EXPECT_EQ(ReadFile(Path("a")), "old a");
    EXPECT_FALSE(tqm_test::Exists(Path("b")));
    ASSERT_TRUE(group.Commit().ok());
    EXPECT_FALSE(group.Commit().ok());
  }
  EXPECT_EQ(ReadFile(Path("a")), "new a");
  EXPECT_EQ(ReadFile(Path("b")), "new b");
  EXPECT_TRUE(TempFiles(dir_).empty());
  // Only the two outputs remain (no kept previous file).
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_),
                          std::filesystem::directory_iterator()),
            2);
}

TEST_F(Outputs, UncommittedGroupLeavesNothing) {
  WriteFile(Path("a"), "old a");
  {
    tqm::OutputGroup group;
    auto a = group.Add(Path("a"));
    auto b = group.Add(Path("b"));
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_TRUE(WriteWhole(*a, "new a").ok());
    // b's writer failed: the group is dropped.
  }
  EXPECT_EQ(ReadFile(Path("a")), "old a");
  EXPECT_FALSE(tqm_test::Exists(Path("b")));
  EXPECT_TRUE(TempFiles(dir_).empty());
}

TEST_F(Outputs, GroupRefusesMissingDirectoriesAndDuplicates) {
  tqm::OutputGroup group;
  auto missing = group.Add(Path("no/such/dir/t.bin"));
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no/such/dir/t.bin"), std::string::npos)
      << missing.status();
  ASSERT_TRUE(group.Add(Path("a")).ok());
  EXPECT_FALSE(group.Add(dir_ + "/./a").ok());
  EXPECT_FALSE(group.Add(dir_).ok());  // a directory
  EXPECT_FALSE(group.Add("").ok());
}

TEST_F(Outputs, FailedRenamePutsBackWhatWasReplaced) {
  WriteFile(Path("a"), "old a");
  tqm::OutputGroup group;
  auto a = group.Add(Path("a"));
  auto n = group.Add(Path("n"));  // did not exist
  auto b = group.Add(Path("b"));
  ASSERT_TRUE(a.ok() && n.ok() && b.ok());
  ASSERT_TRUE(WriteWhole(*a, "new a").ok());
  ASSERT_TRUE(WriteWhole(*n, "new n").ok());
  ASSERT_TRUE(WriteWhole(*b, "new b").ok());
  // A non-empty directory appears at b's destination: its rename fails
  // after a's and n's succeeded.
  ASSERT_EQ(mkdir(Path("b").c_str(), 0755), 0);
  WriteFile(Path("b/inside"), "x");
  absl::Status s = group.Commit();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(Path("b")), std::string::npos) << s;
  EXPECT_EQ(ReadFile(Path("a")), "old a");
  EXPECT_FALSE(tqm_test::Exists(Path("n")));
  EXPECT_EQ(ReadFile(Path("b/inside")), "x");
}

TEST_F(Outputs, CheckNotAnInputComparesFilesNotNames) {
  WriteFile(Path("in.bin"), "model");
  WriteFile(Path("tok.bin"), "tokenizer");
  ASSERT_EQ(symlink(Path("in.bin").c_str(), Path("sym.bin").c_str()), 0);
  ASSERT_EQ(link(Path("in.bin").c_str(), Path("hard.bin").c_str()), 0);
  const std::vector<std::string> inputs = {Path("in.bin"), Path("tok.bin")};
  for (const std::string& out : {Path("in.bin"), dir_ + "/../" +
                                     std::filesystem::path(dir_).filename().string() +
                                     "/in.bin",
                                 Path("sym.bin"), Path("hard.bin"), Path("tok.bin")}) {
    absl::Status s = tqm::CheckNotAnInput(out, inputs);
    EXPECT_FALSE(s.ok()) << out;
    EXPECT_NE(s.message().find(out), std::string::npos) << s;
  }
  absl::Status named = tqm::CheckNotAnInput(Path("sym.bin"), inputs);
  EXPECT_NE(named.message().find(Path("in.bin")), std::string::npos) << named;
  EXPECT_TRUE(tqm::CheckNotAnInput(Path("new.bin"), inputs).ok());
  WriteFile(Path("other.bin"), "model");  // same bytes, another file
  EXPECT_TRUE(tqm::CheckNotAnInput(Path("other.bin"), inputs).ok());
  EXPECT_TRUE(tqm::CheckNotAnInput(Path("in.bin"), {}).ok());
}

TEST_F(Outputs, CheckNotAnInputCoversDirectoryInputs) {
  ASSERT_EQ(mkdir(Path("hf").c_str(), 0755), 0);
  WriteFile(Path("hf/model-00001-of-00002.safetensors"), "shard");
  WriteFile(Path("hf/model.safetensors.index.json"), "{}");
  ASSERT_EQ(mkdir(Path("hf/sub").c_str(), 0755), 0);
  WriteFile(Path("hf/sub/deeper.bin"), "not directly in it");
  ASSERT_EQ(link(Path("hf/model-00001-of-00002.safetensors").c_str(), Path("shard.lnk").c_str()),
            0);
  const std::vector<std::string> inputs = {Path("hf")};
  for (const std::string& out : {Path("hf/model-00001-of-00002.safetensors"),
                                 Path("hf/model.safetensors.index.json"), Path("shard.lnk"),
                                 Path("hf")}) {
    absl::Status s = tqm::CheckNotAnInput(out, inputs);
    EXPECT_FALSE(s.ok()) << out;
    EXPECT_NE(s.message().find(out), std::string::npos) << s;
  }
  EXPECT_TRUE(tqm::CheckNotAnInput(Path("hf/sub/deeper.bin"), inputs).ok());
  EXPECT_TRUE(tqm::CheckNotAnInput(Path("hf/model.tqm"), inputs).ok());
}

}  // namespace
