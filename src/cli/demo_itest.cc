// `escdr demo` end to end, as tools/demo.sh runs it (128 MiB guests to keep
// it short): it must succeed, report an ESCDR migration that sent less than
// the plain one, and leave nothing behind: no agent or QEMU it started, no
// work directory, no guest RAM directory. And a Ctrl-C while the guests boot
// must stop and remove everything the same way.
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"
#include "testing/test_guest.h"

namespace escdr {
namespace {

using nlohmann::json;
using std::chrono::seconds;

std::string EscdrBinary() { return std::string(ESCDR_BINARY_DIR) + "/src/cli/escdr"; }

// True if `pid` names no live process (a zombie nobody reaped counts as gone:
// it runs nothing and holds no memory).
bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::string stat = ReadFileToString(fmt::format("/proc/{}/stat", pid)).value_or("");
  std::size_t paren = stat.rfind(')');
  return paren == std::string::npos || (paren + 2 < stat.size() && stat[paren + 2] == 'Z');
}

// Every "pid N" the demo printed (agents and QEMUs).
std::vector<pid_t> PrintedPids(const std::string& text) {
  std::vector<pid_t> pids;
  static const std::regex re("pid ([0-9]+)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
    pids.push_back(static_cast<pid_t>(std::stol((*it)[1].str())));
  }
  return pids;
}

std::string FirstMatch(const std::string& text, const std::string& pattern) {
  std::smatch m;
  if (std::regex_search(text, m, std::regex(pattern))) return m[1].str();
  return "";
}

class DemoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto guest = testing::EnsureGuestBuilt();
    ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
    guest_ = *guest;
    auto tmp = TempDir::Create("escdr-demo-it");
    ASSERT_TRUE(tmp.has_value());
    tmp_ = std::move(*tmp);
  }

  // Starts `escdr demo --json --memory 128 ...` with its work directory
  // under tmp_ (TMPDIR) and its output in tmp_/out.json, tmp_/err.txt.
  Subprocess Start() {
    SubprocessOptions o;
    o.argv = {EscdrBinary(), "demo", "--json", "--memory", "128", "--guest", guest_};
    o.env = {{"TMPDIR", tmp_.path()}};
    o.stdout_path = tmp_.File("out.json");
    o.stderr_path = tmp_.File("err.txt");
    o.new_process_group = true;
    auto p = Subprocess::Spawn(o);
    EXPECT_TRUE(p.has_value()) << p.error().ToString();
    return p.has_value() ? std::move(*p) : Subprocess();
  }

  std::string Err() const { return ReadFileToString(tmp_.File("err.txt")).value_or(""); }

  // Nothing the demo started may remain.
  void ExpectNothingLeft(const std::string& progress) {
    const std::vector<pid_t> pids = PrintedPids(progress);
    EXPECT_GE(pids.size(), 3u + 4u) << "the demo did not report its agents' and VMs' pids:\n" << progress;
    for (pid_t pid : pids) EXPECT_TRUE(ProcessGone(pid)) << "process " << pid << " is still running";
    // Its work directory lived under TMPDIR (our tmp_), next to our files only.
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(tmp_.path(), ec)) {
      const std::string name = e.path().filename().string();
      EXPECT_TRUE(name == "out.json" || name == "err.txt") << "left behind: " << e.path();
    }
    const std::string shm = FirstMatch(progress, "guest RAM +(/dev/shm/escdr-demo\\.[A-Za-z0-9]+)");
    ASSERT_FALSE(shm.empty()) << progress;
    EXPECT_FALSE(std::filesystem::exists(shm, ec)) << shm << " is still there";
  }

  std::string guest_;
  TempDir tmp_;
};

TEST_F(DemoTest, RunsEndToEndAndLeavesNothingBehind) {
  Subprocess demo = Start();
  ASSERT_TRUE(demo.valid());
  auto st = demo.WaitFor(std::chrono::minutes(14));
  if (!st.has_value()) {
    (void)demo.Kill(SIGINT);  // let it clean up before the test ends
    st = demo.WaitFor(std::chrono::minutes(3));
  }
  ASSERT_TRUE(st.has_value()) << "the demo did not end:\n" << Err();
  const std::string progress = Err();
  ASSERT_TRUE(st->success()) << st->ToString() << "\n" << progress;

  json doc = json::parse(ReadFileToString(tmp_.File("out.json")).value_or(""), nullptr, false);
  ASSERT_FALSE(doc.is_discarded()) << "stdout is not one JSON document";
  ASSERT_TRUE(doc.contains("escdr") && doc.contains("no_escdr")) << doc.dump(2);
  const json& e = doc["escdr"];
  const json& p = doc["no_escdr"];
  EXPECT_EQ(doc["hosts"].size(), 3u);
  EXPECT_EQ(doc["vms"].size(), 4u);
  EXPECT_GT(doc["catalog"]["position_pages"].get<std::uint64_t>(), 0u);
  // Both migrations moved the same VM between hosts that run a donor.
  EXPECT_EQ(e["vm"], p["vm"]);
  EXPECT_NE(e["source"], e["destination"]);
  EXPECT_NE(p["source"], p["destination"]);
  EXPECT_FALSE(e["donor"].get<std::string>().empty());
  // ESCDR elided catalog pages and sent less; the baseline elided nothing.
  EXPECT_GT(e["pages_by_position"].get<std::uint64_t>() + e["pages_by_content"].get<std::uint64_t>(), 0u);
  EXPECT_GT(e["pages_from_donor"].get<std::uint64_t>(), 0u);
  EXPECT_LT(e["wire_bytes_sent"].get<std::uint64_t>(), p["wire_bytes_sent"].get<std::uint64_t>());
  EXPECT_EQ(p["pages_by_position"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(p["pages_by_content"].get<std::uint64_t>(), 0u);
  EXPECT_GE(p["wire_bytes_sent"].get<std::uint64_t>(), p["stream_bytes"].get<std::uint64_t>());
  EXPECT_GT(doc["wire_reduction"].get<double>(), 0.0);
  EXPECT_EQ(doc["kept"], false);
  // The progress went to stderr and showed the commands.
  EXPECT_NE(progress.find("$ escdr catalog learn"), std::string::npos) << progress;
  EXPECT_NE(progress.find("$ escdr migrate demo-4 --no-escdr --to "), std::string::npos) << progress;
  ExpectNothingLeft(progress);
}

TEST_F(DemoTest, CtrlCWhileBootingStopsAndRemovesEverything) {
  Subprocess demo = Start();
  ASSERT_TRUE(demo.valid());
  // Interrupt once all four VMs run (the wait for their boot has begun).
  bool booting = false;
  for (int i = 0; i < 3000 && !booting; ++i) {
    booting = Err().find("== 3.") != std::string::npos;
    auto st = demo.TryWait();
    if (st.has_value() && st->has_value()) break;
    if (!booting) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(booting) << Err();
  ASSERT_TRUE(demo.Kill(SIGINT).ok());
  auto st = demo.WaitFor(std::chrono::minutes(5));
  ASSERT_TRUE(st.has_value()) << "the demo did not end after SIGINT:\n" << Err();
  const std::string progress = Err();
  EXPECT_TRUE(st->exited && st->code != 0) << st->ToString();
  EXPECT_NE(progress.find("interrupted by SIGINT"), std::string::npos) << progress;
  EXPECT_NE(progress.find("everything it started was stopped and removed"), std::string::npos) << progress;
  ExpectNothingLeft(progress);
}

}  // namespace
}  // namespace escdr
