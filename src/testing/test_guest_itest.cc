// Integration tests of TestGuest: boots real QEMU (TCG) guests.
#include "testing/test_guest.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <set>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "escdr/qemu/launch_spec.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/unique_fd.h"

namespace escdr::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

bool ProcessExists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

bool PathExists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

// Non-zero 4 KiB pages of a file, read in chunks.
Result<std::uint64_t> CountNonZeroPages(const std::string& path) {
  ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  std::vector<char> buf(1 << 20);
  static const char kZero[4096] = {};
  std::uint64_t pages = 0;
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(std::size_t n, ReadFull(fd.get(), buf.data(), buf.size(), path));
    for (std::size_t off = 0; off + 4096 <= n; off += 4096) {
      if (std::memcmp(buf.data() + off, kZero, 4096) != 0) ++pages;
    }
    if (n < buf.size()) break;
  }
  return pages;
}

void Report(const TestGuest& g) {
  std::cout << "[ guest ] " << g.spec().name << ": first counter after "
            << g.first_counter_seconds() << " s, settled after " << g.boot_seconds()
            << " s (" << g.spec().memory_mib << " MiB, kernel " << g.kernel_version() << ")\n";
}

TEST(TestGuestTest, CounterAdvancesStopsWhilePausedAndResumes) {
  auto guest = TestGuest::Boot();
  ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
  TestGuest& g = **guest;
  Report(g);
  ::testing::Test::RecordProperty("first_counter_ms",
                                  static_cast<int>(g.first_counter_seconds() * 1000));

  auto c0 = g.LastCounter();
  ASSERT_TRUE(c0.has_value());
  EXPECT_GE(*c0, 2u);
  auto c1 = g.WaitForCounter(*c0 + 2, seconds(120));
  ASSERT_TRUE(c1.has_value()) << c1.error().ToString();

  ASSERT_TRUE(g.Pause().ok());
  auto status = QueryStatus(g.qmp());
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, "paused");
  auto paused_at = g.LastCounter();
  ASSERT_TRUE(paused_at.has_value());
  // A running guest prints every second; a paused one must stay silent.
  std::this_thread::sleep_for(milliseconds(2500));
  auto still = g.LastCounter();
  ASSERT_TRUE(still.has_value());
  EXPECT_EQ(*still, *paused_at);

  ASSERT_TRUE(g.Resume().ok());
  status = QueryStatus(g.qmp());
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, "running");
  auto resumed = g.WaitForCounter(*paused_at + 2, seconds(120));
  ASSERT_TRUE(resumed.has_value()) << resumed.error().ToString();
}

TEST(TestGuestTest, RamFileHasTheConfiguredSizeAndHoldsTheGuest) {
  GuestOptions o;
  o.memory_mib = 192;
  auto guest = TestGuest::Boot(o);
  ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
  TestGuest& g = **guest;
  struct stat st {};
  ASSERT_EQ(::stat(g.ram_path().c_str(), &st), 0);
  EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), (192ull << 20) + kTcgRamPadBytes);
  ASSERT_TRUE(g.Pause().ok());
  auto pages = CountNonZeroPages(g.ram_path());
  ASSERT_TRUE(pages.has_value()) << pages.error().ToString();
  std::cout << "[ guest ] non-zero pages: " << *pages << " of " << (192u << 8) << " ("
            << (*pages * 4096 >> 20) << " MiB); RAM file blocks in use: "
            << (static_cast<std::uint64_t>(st.st_blocks) * 512 >> 20) << " MiB\n";
  // The kernel image alone is several MiB.
  EXPECT_GT(*pages, 1000u);
  EXPECT_EQ(g.spec().memory_mib, 192u);
}

TEST(TestGuestTest, SaveStreamWritesAQemuStreamAndLeavesTheGuestInPostmigrate) {
  auto guest = TestGuest::Boot();
  ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
  TestGuest& g = **guest;
  std::string stream = g.dir() + "/stream.bin";
  auto info = g.SaveStream(stream);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_EQ(info->status, "completed");
  EXPECT_GT(info->ram_transferred, 0u);
  EXPECT_GT(info->ram_normal, 0u);
  std::cout << "[ guest ] saved stream: " << info->ram_transferred << " RAM bytes, "
            << info->ram_normal << " pages, " << info->ram_duplicate << " zero pages, "
            << info->total_time_ms << " ms\n";

  auto bytes = ReadFileToString(stream);
  ASSERT_TRUE(bytes.has_value());
  ASSERT_GE(bytes->size(), 8u);
  EXPECT_EQ(bytes->substr(0, 4), "QEVM");
  EXPECT_EQ(bytes->substr(4, 4), std::string("\0\0\0\3", 4));  // stream version 3
  EXPECT_GT(bytes->size(), info->ram_normal * 4096);

  auto status = QueryStatus(g.qmp());
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, "postmigrate");
  auto before = g.LastCounter();
  ASSERT_TRUE(before.has_value());
  ASSERT_TRUE(g.Resume().ok());
  auto after = g.WaitForCounter(*before + 1, seconds(120));
  EXPECT_TRUE(after.has_value()) << after.error().ToString();
}

TEST(TestGuestTest, DestructorLeavesNoProcessAndNoFiles) {
  pid_t pid;
  std::string dir, ram;
  {
    auto guest = TestGuest::Boot();
    ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
    pid = (*guest)->pid();
    dir = (*guest)->dir();
    ram = (*guest)->ram_path();
    ASSERT_TRUE(ProcessExists(pid));
    ASSERT_TRUE(PathExists(ram));
  }
  EXPECT_FALSE(ProcessExists(pid));
  EXPECT_FALSE(PathExists(ram));
  EXPECT_FALSE(PathExists(dir));
}

TEST(TestGuestTest, KaslrSeedDirtyAndExtraOptionsReachTheGuest) {
  GuestOptions o;
  o.kaslr = true;
  o.seed = 7;
  o.dirty_mib = 8;
  o.vcpus = 2;
  o.memory_mib = 128;
  o.extra_append = "escdr.test=1";
  o.name = "busy";
  auto guest = TestGuest::Boot(o);
  ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
  TestGuest& g = **guest;
  EXPECT_EQ(g.spec().append.find("nokaslr"), std::string::npos);
  EXPECT_NE(g.spec().append.find("escdr.test=1"), std::string::npos);
  EXPECT_EQ(g.spec().vcpus, 2u);
  for (const char* line : {"escdr-guest: seed 7", "escdr-guest: dirtying 8 MiB", "escdr-guest: up"}) {
    auto has = SerialLogHasLine(g.serial_log_path(), line);
    ASSERT_TRUE(has.has_value());
    EXPECT_TRUE(*has) << "serial log lacks '" << line << "':\n" << g.DiagnosticTail();
  }
  // A busy guest still migrates (pre-copy converges at TCG dirtying speed).
  auto info = g.SaveStream(g.dir() + "/busy.stream");
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_GE(info->ram_dirty_sync_count, 2u);
  std::cout << "[ guest ] busy guest stream: " << info->ram_transferred << " RAM bytes, "
            << info->ram_dirty_sync_count << " dirty syncs\n";
}

TEST(TestGuestTest, BootManyBootsFourGuestsInParallel) {
  GuestOptions base;
  base.seed = 1;
  base.name = "parallel";
  auto guests = TestGuest::BootMany(base, 4);
  ASSERT_TRUE(guests.has_value()) << guests.error().ToString();
  ASSERT_EQ(guests->size(), 4u);
  std::set<pid_t> pids;
  std::set<std::string> rams;
  for (auto& g : *guests) {
    Report(*g);
    pids.insert(g->pid());
    rams.insert(g->ram_path());
    auto c = g->LastCounter();
    ASSERT_TRUE(c.has_value());
    EXPECT_GE(*c, 2u);
  }
  EXPECT_EQ(pids.size(), 4u);
  EXPECT_EQ(rams.size(), 4u);
  auto seed = SerialLogHasLine((*guests)[3]->serial_log_path(), "escdr-guest: seed 4");
  ASSERT_TRUE(seed.has_value());
  EXPECT_TRUE(*seed);
}

TEST(TestGuestTest, MissingGuestDirectoryWithoutBuildScriptIsNotFound) {
  GuestOptions o;
  o.source_dir = "/nonexistent-escdr-source";
  o.guest_dir = "/nonexistent-escdr-guest";
  auto guest = TestGuest::Boot(o);
  ASSERT_FALSE(guest.has_value());
  EXPECT_TRUE(guest.error().IsNotFound());
  EXPECT_NE(guest.error().message().find("/nonexistent-escdr-guest"), std::string::npos);
}

}  // namespace
}  // namespace escdr::testing
