// The stream parser on whole streams that QEMU 10.0 writes for escdr's test
// guest: idle, busy (rewriting 16 MiB of its RAM during the migration), and
// with machine type pc-i440fx-9.2 (no SWITCHOVER_START). Each stream is saved
// by fuzz/save-guest-stream.sh with the QEMU tree of tools/install-qemu.sh,
// found at $ESCDR_QEMU10_DIR (default /var/lib/escdr/qemu-10.0); without that
// tree the tests are skipped. The guest is the one of testing::TestGuest
// ($ESCDR_GUEST_DIR, docs/test-guest.md).
#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "escdr/page/page.h"
#include "escdr/qemu/stream_parser.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"
#include "testing/test_guest.h"

namespace escdr {
namespace {

using Bytes = std::vector<std::uint8_t>;

std::string Qemu10Dir() {
  const char* v = std::getenv("ESCDR_QEMU10_DIR");
  return v != nullptr && *v != '\0' ? v : "/var/lib/escdr/qemu-10.0";
}

bool IsExecutable(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0;
}

// What the parser reported, in a form cheap enough for 100 MB streams: the
// number and a hash of the bytes, and every event with its stream position.
class Summary : public StreamVisitor {
 public:
  struct Event {
    int kind;  // 1 phase, 2 block list, 3 page, 4 zero
    std::uint64_t a, b, at;
    friend bool operator==(const Event&, const Event&) = default;
  };
  Status OnBytes(std::span<const std::uint8_t> bytes) override {
    Add(bytes.data(), bytes.size());
    return Status::OK();
  }
  Status OnBlockList(const std::vector<RamBlockInfo>& b) override {
    blocks = b;
    events.push_back({2, b.size(), 0, n});
    return Status::OK();
  }
  Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) override {
    events.push_back({3, block, offset, n});
    Add(data, kPageSize);
    return Status::OK();
  }
  Status OnZero(std::uint32_t block, std::uint64_t offset, std::uint8_t fill) override {
    events.push_back({4, block, offset, n});
    if (fill != 0) ++nonzero_fills;
    return Status::OK();
  }
  Status OnPhase(StreamPhase phase) override {
    events.push_back({1, static_cast<std::uint64_t>(phase), 0, n});
    if (phase == StreamPhase::kRamComplete) ram_complete_at = n;
    return Status::OK();
  }
  void Add(const std::uint8_t* p, std::size_t len) {
    for (std::size_t i = 0; i < len; ++i) hash = (hash ^ p[i]) * 0x100000001b3ull;
    n += len;
  }

  std::uint64_t n = 0;
  std::uint64_t hash = 0xcbf29ce484222325ull;
  std::uint64_t ram_complete_at = 0;
  std::uint64_t nonzero_fills = 0;
  std::vector<Event> events;
  std::vector<RamBlockInfo> blocks;
};

class Qemu10StreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tree_ = Qemu10Dir();
    if (!IsExecutable(tree_ + "/usr/bin/qemu-system-x86_64")) {
      GTEST_SKIP() << "no QEMU 10.0 tree at " << tree_
                   << " (tools/install-qemu.sh 10.0, or set ESCDR_QEMU10_DIR)";
    }
    if (!FindProgram("socat").has_value()) GTEST_SKIP() << "socat is not installed";
    auto guest = testing::EnsureGuestBuilt();
    ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
    guest_ = *guest;
    auto dir = TempDir::Create("escdr-qemu10-stream");
    ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
    dir_ = std::move(*dir);
  }

  // Saves a stream with fuzz/save-guest-stream.sh `options`; returns its path.
  std::string Save(const std::string& name, const std::vector<std::string>& options) {
    std::string out = dir_.File(name + ".mig");
    SubprocessOptions o;
    o.argv = {"bash", std::string(ESCDR_SOURCE_DIR) + "/fuzz/save-guest-stream.sh", "--qemu",
              tree_, "--qemu-log", dir_.File(name + ".qemu.log")};
    o.argv.insert(o.argv.end(), options.begin(), options.end());
    o.argv.insert(o.argv.end(), {guest_, out, "128"});
    o.stdout_path = o.stderr_path = dir_.File(name + ".log");
    auto child = Subprocess::Spawn(o);
    EXPECT_TRUE(child.has_value()) << child.error().ToString();
    if (!child.has_value()) return "";
    auto st = child->WaitFor(std::chrono::minutes(8));
    if (!st.has_value()) {
      // SIGTERM: the script's trap stops the QEMU it started and cleans up.
      (void)child->Kill(SIGTERM);
      (void)child->WaitFor(std::chrono::seconds(30));
      ADD_FAILURE() << "save-guest-stream.sh " << name << " did not finish: "
                    << st.error().ToString();
      return "";
    }
    EXPECT_TRUE(st->success()) << "save-guest-stream.sh " << name << ": " << st->ToString()
                               << "\n"
                               << ReadFileToString(dir_.File(name + ".log")).value_or("")
                               << ReadFileToString(dir_.File(name + ".qemu.log")).value_or("");
    return st->success() ? out : "";
  }

  // Parses the file with ParseStreamFile (1 MiB reads) and, from memory, in
  // random pieces; both must agree with each other and with the file.
  void CheckStream(const std::string& path, const std::string& machine,
                   std::uint64_t switchover_starts) {
    std::ifstream in(path, std::ios::binary);
    Bytes s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_GT(s.size(), 1u << 20);
    Summary file;
    Status st = ParseStreamFile(path, &file);
    ASSERT_TRUE(st.ok()) << st.ToString();
    Summary want;
    want.Add(s.data(), s.size());
    EXPECT_EQ(file.n, s.size());
    EXPECT_EQ(file.hash, want.hash);
    EXPECT_EQ(file.nonzero_fills, 0u);
    ASSERT_FALSE(file.blocks.empty());
    EXPECT_EQ(file.blocks[0], (RamBlockInfo{"pc.ram", 128u << 20}));
    const Bytes switchover = {0x08, 0x00, 0x0b, 0x00, 0x00};
    ASSERT_GE(file.ram_complete_at, 5u);
    bool before_end = std::equal(switchover.begin(), switchover.end(),
                                 s.begin() + static_cast<std::ptrdiff_t>(file.ram_complete_at - 5));
    EXPECT_EQ(before_end, switchover_starts == 1);

    std::mt19937 rng(static_cast<std::uint32_t>(s.size()));
    Summary chunked;
    StreamParser parser(&chunked);
    std::size_t i = 0;
    while (i < s.size()) {
      std::size_t n = rng() % 8 == 0 ? 1 + rng() % 64 : 1 + rng() % 70000;
      n = std::min(n, s.size() - i);
      ASSERT_TRUE(parser.Feed({s.data() + i, n}).ok()) << "at byte " << i;
      i += n;
    }
    ASSERT_TRUE(parser.Finish().ok());
    EXPECT_EQ(chunked.n, s.size());
    EXPECT_EQ(chunked.hash, want.hash);
    EXPECT_TRUE(chunked.events == file.events);
    EXPECT_EQ(parser.machine(), machine);
    EXPECT_EQ(parser.stats().switchover_starts, switchover_starts);
    EXPECT_GT(parser.stats().page_records, 0u);
    EXPECT_GT(parser.stats().zero_records, 0u);
    std::printf("%s: %zu bytes, machine %s, %llu PAGE, %llu ZERO, %llu ram sections, "
                "%llu SWITCHOVER_START, END at byte %llu, %llu tail bytes\n",
                path.c_str(), s.size(), parser.machine().c_str(),
                static_cast<unsigned long long>(parser.stats().page_records),
                static_cast<unsigned long long>(parser.stats().zero_records),
                static_cast<unsigned long long>(parser.stats().ram_sections),
                static_cast<unsigned long long>(parser.stats().switchover_starts),
                static_cast<unsigned long long>(file.ram_complete_at),
                static_cast<unsigned long long>(parser.stats().tail_bytes));
  }

  std::string tree_;
  std::string guest_;
  TempDir dir_;
};

TEST_F(Qemu10StreamTest, IdleGuestStreamParses) {
  std::string path = Save("idle", {"--live"});
  ASSERT_FALSE(path.empty());
  CheckStream(path, "pc-i440fx-10.0", 1);
}

TEST_F(Qemu10StreamTest, BusyGuestStreamParses) {
  std::string path = Save("busy", {"--busy", "16"});
  ASSERT_FALSE(path.empty());
  CheckStream(path, "pc-i440fx-10.0", 1);
}

TEST_F(Qemu10StreamTest, StoppedQ35GuestStreamParses) {
  std::string path = Save("q35", {"--machine", "q35"});
  ASSERT_FALSE(path.empty());
  CheckStream(path, "pc-q35-10.0", 1);
}

TEST_F(Qemu10StreamTest, MachineType92StreamHasNoSwitchoverStart) {
  std::string path = Save("pc92", {"--live", "--machine", "pc-i440fx-9.2"});
  ASSERT_FALSE(path.empty());
  CheckStream(path, "pc-i440fx-9.2", 0);
}

}  // namespace
}  // namespace escdr
