// Integration tests of QemuProcess: real QEMU processes (TCG).
#include "escdr/qemu/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>
#include <thread>

#include <gtest/gtest.h>

#include "escdr/qemu/qmp_commands.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/clock.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"
#include "testing/test_guest.h"

namespace escdr {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

bool ProcessExists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }
bool PathExists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

class QemuProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto guest_dir = testing::EnsureGuestBuilt();
    ASSERT_TRUE(guest_dir.has_value()) << guest_dir.error().ToString();
    auto d = TempDir::Create("escdr-launcher", "/dev/shm");
    ASSERT_TRUE(d.has_value());
    dir_ = std::move(*d);
    spec_.name = "launcher-test";
    spec_.memory_mib = 128;
    spec_.kernel = *guest_dir + "/vmlinuz";
    spec_.initrd = *guest_dir + "/initrd.img";
    spec_.append = "console=ttyS0 quiet nokaslr";
    spec_.ram_path = dir_.File("ram");
    spec_.qmp_socket = dir_.File("qmp.sock");
    spec_.serial_log = dir_.File("serial.log");
  }
  TempDir dir_;
  LaunchSpec spec_;
};

TEST_F(QemuProcessTest, QemuFailingAtStartIsAbortedWithItsStderrAndLeavesNothing) {
  spec_.extra_args = {"-device", "escdr-no-such-device"};
  auto q = QemuProcess::Start(spec_);
  ASSERT_FALSE(q.has_value());
  EXPECT_EQ(q.error().code(), StatusCode::kAborted);
  EXPECT_NE(q.error().message().find("escdr-no-such-device"), std::string::npos)
      << q.error().ToString();
  EXPECT_FALSE(PathExists(spec_.ram_path));
  EXPECT_FALSE(PathExists(spec_.qmp_socket));
  EXPECT_FALSE(PathExists(spec_.qmp_socket + ".log"));
}

TEST_F(QemuProcessTest, ExistingRamFileOrSocketIsRefused) {
  ASSERT_TRUE(WriteStringToFile(spec_.ram_path, "someone else's RAM").ok());
  auto q = QemuProcess::Start(spec_);
  ASSERT_FALSE(q.has_value());
  EXPECT_EQ(q.error().code(), StatusCode::kAlreadyExists);
  // The refused start must not touch the existing file.
  EXPECT_EQ(ReadFileToString(spec_.ram_path).value_or(""), "someone else's RAM");
}

TEST_F(QemuProcessTest, InvalidSpecIsRejectedBeforeSpawning) {
  spec_.memory_mib = 0;
  auto q = QemuProcess::Start(spec_);
  ASSERT_FALSE(q.has_value());
  EXPECT_TRUE(q.error().IsInvalidArgument());
}

TEST_F(QemuProcessTest, StopQuitsAndKeepsTheRamFileByDefault) {
  spec_.start_paused = true;  // no guest code runs: a cheap QEMU
  auto q = QemuProcess::Start(spec_);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  QemuProcess& qemu = **q;
  EXPECT_EQ(qemu.qemu_version().substr(0, 4), "7.2.");
  auto status = QueryStatus(qemu.qmp());
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, "prelaunch");
  pid_t pid = qemu.pid();
  EXPECT_TRUE(qemu.Running());
  ASSERT_TRUE(qemu.Stop().ok());
  EXPECT_FALSE(ProcessExists(pid));
  ASSERT_TRUE(qemu.exit_status().has_value());
  EXPECT_TRUE(qemu.exit_status()->success()) << qemu.exit_status()->ToString();
  EXPECT_FALSE(PathExists(spec_.qmp_socket));
  EXPECT_FALSE(PathExists(qemu.qemu_log_path()));
  struct stat st {};
  ASSERT_EQ(::stat(spec_.ram_path.c_str(), &st), 0);  // the caller's file survives
  EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), GuestRamBytes(spec_));
  EXPECT_TRUE(qemu.Stop().ok());  // idempotent
}

TEST_F(QemuProcessTest, RemoveRamFileMakesStopDeleteIt) {
  spec_.start_paused = true;
  QemuProcessOptions o;
  o.remove_ram_file = true;
  {
    auto q = QemuProcess::Start(spec_, o);
    ASSERT_TRUE(q.has_value()) << q.error().ToString();
    EXPECT_TRUE(PathExists(spec_.ram_path));
  }
  EXPECT_FALSE(PathExists(spec_.ram_path));
  EXPECT_FALSE(PathExists(spec_.qmp_socket));
}

TEST_F(QemuProcessTest, StopKillsAQemuThatDoesNotAnswer) {
  spec_.start_paused = true;
  QemuProcessOptions o;
  o.stop_grace = milliseconds(500);
  o.remove_ram_file = true;
  auto q = QemuProcess::Start(spec_, o);
  ASSERT_TRUE(q.has_value()) << q.error().ToString();
  pid_t pid = (*q)->pid();
  ASSERT_EQ(::kill(pid, SIGSTOP), 0);  // a hung QEMU: no reply to quit
  ASSERT_TRUE((*q)->Stop().ok());
  ASSERT_TRUE((*q)->exit_status().has_value());
  EXPECT_EQ((*q)->exit_status()->signal, SIGKILL);
  EXPECT_FALSE(ProcessExists(pid));
}

// The path every escdr migration builds on: a source guest, a destination
// QEMU started from the same LaunchSpec with -incoming defer, a unix socket
// between them. The destination is started with -S so that it stays paused
// after the migration: then its RAM file must equal the source's byte for byte.
TEST_F(QemuProcessTest, LiveMigrationBetweenTwoQemusPreservesRamExactly) {
  testing::GuestOptions go;
  go.memory_mib = 128;
  go.seed = 11;
  auto source = testing::TestGuest::Boot(go);
  ASSERT_TRUE(source.has_value()) << source.error().ToString();
  testing::TestGuest& src = **source;

  LaunchSpec dst_spec = src.spec();
  dst_spec.name = "destination";
  dst_spec.ram_path = dir_.File("dst.ram");
  dst_spec.qmp_socket = dir_.File("dst.qmp");
  dst_spec.serial_log = dir_.File("dst.serial");
  dst_spec.incoming = "defer";
  dst_spec.start_paused = true;
  QemuProcessOptions o;
  o.remove_ram_file = true;
  auto dst = QemuProcess::Start(dst_spec, o);
  ASSERT_TRUE(dst.has_value()) << dst.error().ToString();

  std::string uri = "unix:" + dir_.File("migrate.sock");
  ASSERT_TRUE(MigrateIncoming((*dst)->qmp(), uri).ok());
  ASSERT_TRUE(Migrate(src.qmp(), uri).ok());
  auto info = WaitForMigration(src.qmp(), seconds(300));
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  auto dst_info = WaitForMigration((*dst)->qmp(), seconds(300));
  ASSERT_TRUE(dst_info.has_value()) << dst_info.error().ToString();
  std::cout << "[ migrate ] " << info->ram_transferred << " RAM bytes, " << info->ram_normal
            << " pages, " << info->ram_duplicate << " zero pages, total " << info->total_time_ms
            << " ms, downtime " << info->downtime_ms << " ms\n";

  auto src_status = QueryStatus(src.qmp());
  ASSERT_TRUE(src_status.has_value());
  EXPECT_EQ(*src_status, "postmigrate");
  auto dst_status = QueryStatus((*dst)->qmp());
  ASSERT_TRUE(dst_status.has_value());
  EXPECT_EQ(*dst_status, "paused");

  auto src_ram = ReadFileToString(src.ram_path());
  auto dst_ram = ReadFileToString(dst_spec.ram_path);
  ASSERT_TRUE(src_ram.has_value() && dst_ram.has_value());
  ASSERT_EQ(src_ram->size(), dst_ram->size());
  EXPECT_TRUE(*src_ram == *dst_ram) << "destination RAM differs from the source's";

  // The guest continues on the destination where it stopped on the source.
  auto last = src.LastCounter();
  ASSERT_TRUE(last.has_value());
  ASSERT_TRUE(Cont((*dst)->qmp()).ok());
  Deadline deadline = Deadline::After(seconds(120));
  std::optional<std::uint64_t> dst_counter;
  while (!deadline.Expired()) {
    auto c = ReadLastCounter(dst_spec.serial_log);
    ASSERT_TRUE(c.has_value());
    dst_counter = *c;
    if (dst_counter && *dst_counter > *last) break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_TRUE(dst_counter.has_value()) << SerialLogTail(dst_spec.serial_log);
  EXPECT_GT(*dst_counter, *last);
}

}  // namespace
}  // namespace escdr
