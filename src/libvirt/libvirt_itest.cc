// Integration test of LibvirtHost against two real libvirt daemons on this
// machine (testing::LibvirtTestHost), with escdr's test guest as a TCG
// domain: adoption fields, HMP, lifecycle events, and a peer-to-peer live
// migration whose stream goes through a byte relay between the two hosts'
// migration socket directories, as escdr's agents will carry it.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "escdr/libvirt/libvirt_host.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"
#include "escdr/sys/unix_socket.h"
#include "testing/libvirt_hosts.h"

namespace escdr::libvirt {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::HasSubstr;
using testing::LibvirtTestHost;
using ::testing::StartsWith;

constexpr const char* kDomain = "escdr-lv";

// Copies bytes between the connections accepted on one unix socket and
// connections it opens to another, both ways, passing a half-close on.
class Relay {
 public:
  static Result<std::unique_ptr<Relay>> Start(const std::string& listen_path,
                                              const std::string& target_path) {
    ::unlink(listen_path.c_str());  // a stale socket of an earlier migration
    ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, ListenUnix(listen_path));
    std::unique_ptr<Relay> r(new Relay());
    r->listen_path_ = listen_path;
    r->target_path_ = target_path;
    r->listen_ = std::move(fd);
    r->acceptor_ = std::thread([p = r.get()] { p->AcceptLoop(); });
    return r;
  }

  ~Relay() {
    stop_ = true;
    acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (UniqueFd& fd : fds_) ::shutdown(fd.get(), SHUT_RDWR);
    }
    for (std::thread& t : pumps_) t.join();
    ::unlink(listen_path_.c_str());
  }

  std::uint64_t forward_bytes() const { return forward_.load(); }
  std::uint64_t backward_bytes() const { return backward_.load(); }
  int connections() const { return connections_.load(); }

 private:
  Relay() = default;

  void AcceptLoop() {
    while (!stop_) {
      Result<UniqueFd> c = AcceptUnix(listen_.get(), milliseconds(100));
      if (!c.has_value()) continue;
      Result<UniqueFd> t = ConnectUnix(target_path_, seconds(5));
      if (!t.has_value()) {
        std::cerr << "[ relay ] " << t.error().ToString() << "\n";
        continue;
      }
      ++connections_;
      std::lock_guard lock(mu_);
      const int a = c->get();
      const int b = t->get();
      fds_.push_back(std::move(*c));
      fds_.push_back(std::move(*t));
      pumps_.emplace_back([this, a, b] { Pump(a, b, &forward_); });
      pumps_.emplace_back([this, a, b] { Pump(b, a, &backward_); });
    }
  }

  // from -> to until end of file, then shutdown(to, SHUT_WR).
  static void Pump(int from, int to, std::atomic<std::uint64_t>* count) {
    std::vector<char> buf(1 << 16);
    for (;;) {
      const ssize_t n = ::read(from, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      if (!WriteFull(to, buf.data(), static_cast<std::size_t>(n), "relay").ok()) {
        ::shutdown(from, SHUT_RDWR);
        return;
      }
      *count += static_cast<std::uint64_t>(n);
    }
    ::shutdown(to, SHUT_WR);
  }

  std::string listen_path_;
  std::string target_path_;
  UniqueFd listen_;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<UniqueFd> fds_;
  std::vector<std::thread> pumps_;
  std::atomic<std::uint64_t> forward_{0};
  std::atomic<std::uint64_t> backward_{0};
  std::atomic<int> connections_{0};
};

// Lifecycle events of one host, waited for by content.
class EventLog {
 public:
  void Add(const LifecycleEvent& e) {
    std::lock_guard lock(mu_);
    events_.push_back(e);
    cv_.notify_all();
  }
  bool WaitFor(const std::string& domain, const std::string& event, const std::string& detail,
               milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      return std::any_of(events_.begin(), events_.end(), [&](const LifecycleEvent& e) {
        return e.domain == domain && e.event == event && e.detail == detail;
      });
    });
  }
  std::string ToString() {
    std::lock_guard lock(mu_);
    std::string out;
    for (const LifecycleEvent& e : events_) out += e.domain + ":" + e.event + "/" + e.detail + " ";
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<LifecycleEvent> events_;
};

// Waits until the guest's serial log shows a counter >= n; returns it.
Result<std::uint64_t> WaitForCounter(const std::string& serial_log, std::uint64_t n,
                                     milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::uint64_t last = 0;
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(std::optional<std::uint64_t> c, ReadLastCounter(serial_log));
    last = c.value_or(0);
    if (last >= n) return last;
    if (std::chrono::steady_clock::now() > deadline) {
      return Err(Status::Timeout(fmt::format("counter {} not reached in {} (last {}): {}", n,
                                             serial_log, last, SerialLogTail(serial_log, 8))));
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
}

// The exit code of a program, -1 if it could not run or was killed.
int RunToExit(const SubprocessOptions& options) {
  Result<Subprocess> p = Subprocess::Spawn(options);
  if (!p.has_value()) return -1;
  Result<ExitStatus> st = p->WaitFor(seconds(10));
  return st.has_value() && st->exited ? st->code : -1;
}

bool HasDomain(const std::vector<DomainInfo>& domains, const std::string& name) {
  return std::any_of(domains.begin(), domains.end(),
                     [&](const DomainInfo& d) { return d.name == name; });
}

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

TEST(LibvirtHostItest, TwoHostsDomainEventsAndRelayedPeerToPeerMigration) {
  const std::string unavailable = testing::LibvirtAvailable();
  if (!unavailable.empty()) GTEST_SKIP() << unavailable;
  const auto t0 = std::chrono::steady_clock::now();

  Result<TempDir> work = TempDir::Create("escdr-lv");
  ASSERT_TRUE(work.has_value()) << work.error().ToString();
  auto a = LibvirtTestHost::Start(work->path(), "A", 1);
  ASSERT_TRUE(a.has_value()) << a.error().ToString();
  auto b = LibvirtTestHost::Start(work->path(), "B", 2);
  ASSERT_TRUE(b.has_value()) << b.error().ToString();
  LibvirtTestHost& host_a = **a;
  LibvirtTestHost& host_b = **b;
  EXPECT_GT(host_a.libvirtd_pid(), 0);
  EXPECT_GT(host_a.virtlogd_pid(), 0);
  EXPECT_NE(host_a.libvirtd_pid(), host_b.libvirtd_pid());
  std::cout << "[ libvirt ] two hosts up after " << Since(t0) << " s\n";

  // Programs run through NsEnterPrefix() see the host's own socket dir.
  ASSERT_TRUE(WriteStringToFile(host_a.mig_dir() + "/probe", "A").ok());
  {
    SubprocessOptions so;
    so.argv = host_a.NsEnterPrefix();
    for (const char* arg : {"test", "-e", "/run/escdr/migrate/probe"}) so.argv.push_back(arg);
    ASSERT_EQ(RunToExit(so), 0);
    so.argv = host_b.NsEnterPrefix();
    for (const char* arg : {"test", "-e", "/run/escdr/migrate/probe"}) so.argv.push_back(arg);
    ASSERT_EQ(RunToExit(so), 1);
  }
  ::unlink((host_a.mig_dir() + "/probe").c_str());

  EventLog events_a;
  EventLog events_b;
  auto lv_a = host_a.Connect();
  ASSERT_TRUE(lv_a.has_value()) << lv_a.error().ToString();
  auto lv_b = host_b.Connect();
  ASSERT_TRUE(lv_b.has_value()) << lv_b.error().ToString();
  LibvirtHost& va = **lv_a;
  LibvirtHost& vb = **lv_b;
  ASSERT_TRUE(va.WatchLifecycle([&](const LifecycleEvent& e) { events_a.Add(e); }).ok());
  ASSERT_TRUE(vb.WatchLifecycle([&](const LifecycleEvent& e) { events_b.Add(e); }).ok());
  EXPECT_EQ(va.WatchLifecycle([](const LifecycleEvent&) {}).code(),
            StatusCode::kFailedPrecondition);

  // Unknown domains.
  EXPECT_EQ(va.GetDomain("no-such-domain").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(va.MonitorHmp("no-such-domain", "info status").error().code(), StatusCode::kNotFound);

  // Define and boot the test guest on A.
  testing::LibvirtGuestOptions go;
  go.name = kDomain;
  Result<std::string> xml = testing::TestGuestDomainXml(go);
  ASSERT_TRUE(xml.has_value()) << xml.error().ToString();
  Status started = va.DefineAndStart(*xml);
  ASSERT_TRUE(started.ok()) << started.ToString() << "; " << host_a.DiagnosticTail(kDomain);
  Result<std::uint64_t> booted = WaitForCounter(host_a.SerialLogPath(kDomain), 1, seconds(120));
  ASSERT_TRUE(booted.has_value()) << booted.error().ToString();
  std::cout << "[ libvirt ] guest counting on A after " << Since(t0) << " s\n";

  Result<DomainInfo> info = va.GetDomain(kDomain);
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_EQ(info->name, kDomain);
  EXPECT_EQ(info->state, "running");
  EXPECT_EQ(info->state_reason, "booted");
  EXPECT_TRUE(info->persistent);
  EXPECT_GT(info->pid, 0);
  EXPECT_EQ(info->uuid.size(), 36u);
  EXPECT_EQ(info->memory_kib, 256u * 1024);
  EXPECT_EQ(info->vcpus, 1u);
  EXPECT_THAT(info->machine, StartsWith("pc-i440fx-"));
  EXPECT_EQ(info->emulator, FindProgram("qemu-system-x86_64").value_or("?"));
  EXPECT_EQ(info->os_id, "http://debian.org/debian/12");
  Result<OsRelease> os = ParseLibosinfoId(info->os_id);
  ASSERT_TRUE(os.has_value());
  EXPECT_EQ(os->os, "debian");
  EXPECT_EQ(os->version, "12");
  // The pid is QEMU's, running this domain.
  std::string cmdline = ReadFileToString(fmt::format("/proc/{}/cmdline", info->pid)).value_or("");
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  EXPECT_THAT(cmdline, HasSubstr("qemu-system-x86_64"));
  EXPECT_THAT(cmdline, HasSubstr(std::string("guest=") + kDomain));

  Result<std::vector<DomainInfo>> listed = va.ListDomains();
  ASSERT_TRUE(listed.has_value()) << listed.error().ToString();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name, kDomain);
  EXPECT_EQ((*listed)[0].pid, info->pid);
  Result<std::vector<DomainInfo>> listed_b = vb.ListDomains();
  ASSERT_TRUE(listed_b.has_value()) << listed_b.error().ToString();
  EXPECT_TRUE(listed_b->empty());

  Result<std::string> dumped = va.DomainXml(kDomain);
  ASSERT_TRUE(dumped.has_value()) << dumped.error().ToString();
  EXPECT_THAT(*dumped, HasSubstr("<memballoon model='none'"));

  Result<std::string> hva = va.MonitorHmp(kDomain, "gpa2hva 0x0");
  ASSERT_TRUE(hva.has_value()) << hva.error().ToString();
  EXPECT_THAT(*hva, HasSubstr("Host virtual address for 0x0 (pc.ram) is 0x"));

  // Pause and resume, seen as events.
  ASSERT_TRUE(va.Suspend(kDomain).ok());
  Result<DomainInfo> paused = va.GetDomain(kDomain);
  ASSERT_TRUE(paused.has_value());
  EXPECT_EQ(paused->state, "paused");
  EXPECT_EQ(paused->state_reason, "user");
  ASSERT_TRUE(va.Resume(kDomain).ok());
  EXPECT_TRUE(events_a.WaitFor(kDomain, "defined", "added", seconds(10))) << events_a.ToString();
  EXPECT_TRUE(events_a.WaitFor(kDomain, "started", "booted", seconds(10))) << events_a.ToString();
  EXPECT_TRUE(events_a.WaitFor(kDomain, "suspended", "paused", seconds(10))) << events_a.ToString();
  EXPECT_TRUE(events_a.WaitFor(kDomain, "resumed", "unpaused", seconds(10))) << events_a.ToString();

  // A -> B, the stream through the relay between the hosts' socket dirs.
  const std::string sock = std::string(kDomain) + ".sock";
  const std::string migrate_uri = fmt::format("unix://{}/{}", testing::kLibvirtMigrateDir, sock);
  const std::uint64_t counter_before = booted.value();
  {
    auto relay = Relay::Start(host_a.mig_dir() + "/" + sock, host_b.mig_dir() + "/" + sock);
    ASSERT_TRUE(relay.has_value()) << relay.error().ToString();
    MigrateOptions mo;
    mo.destination_uri = host_b.p2p_uri();
    mo.migrate_uri = migrate_uri;
    mo.move_definition = true;
    const auto m0 = std::chrono::steady_clock::now();
    Status migrated = va.MigratePeerToPeer(kDomain, mo);
    ASSERT_TRUE(migrated.ok()) << migrated.ToString() << "; " << host_a.DiagnosticTail(kDomain)
                               << "; " << host_b.DiagnosticTail(kDomain);
    std::cout << "[ libvirt ] migrated A->B in " << Since(m0) << " s, relayed "
              << (*relay)->forward_bytes() << " / " << (*relay)->backward_bytes() << " bytes\n";
    EXPECT_EQ((*relay)->connections(), 1);
    EXPECT_GT((*relay)->forward_bytes(), 4u << 20);
  }
  Result<DomainInfo> on_b = vb.GetDomain(kDomain);
  ASSERT_TRUE(on_b.has_value()) << on_b.error().ToString();
  EXPECT_EQ(on_b->state, "running");
  EXPECT_EQ(on_b->state_reason, "migrated");
  EXPECT_TRUE(on_b->persistent);
  EXPECT_GT(on_b->pid, 0);
  EXPECT_NE(on_b->pid, info->pid);
  EXPECT_EQ(on_b->uuid, info->uuid);
  EXPECT_EQ(on_b->os_id, info->os_id);
  EXPECT_EQ(va.GetDomain(kDomain).error().code(), StatusCode::kNotFound);
  listed = va.ListDomains();
  ASSERT_TRUE(listed.has_value());
  EXPECT_FALSE(HasDomain(*listed, kDomain));
  EXPECT_TRUE(events_a.WaitFor(kDomain, "stopped", "migrated", seconds(10))) << events_a.ToString();
  EXPECT_TRUE(events_b.WaitFor(kDomain, "started", "migrated", seconds(10))) << events_b.ToString();
  EXPECT_TRUE(events_b.WaitFor(kDomain, "resumed", "migrated", seconds(10))) << events_b.ToString();
  // The guest goes on counting on B, where it left off on A.
  Result<std::uint64_t> on_b_counter =
      WaitForCounter(host_b.SerialLogPath(kDomain), counter_before + 2, seconds(30));
  ASSERT_TRUE(on_b_counter.has_value()) << on_b_counter.error().ToString();
  std::cout << "[ libvirt ] guest counting on B (" << *on_b_counter << ") after " << Since(t0)
            << " s\n";

  // B -> A with nothing listening on B's socket: fails, the domain stays on B.
  {
    MigrateOptions mo;
    mo.destination_uri = host_a.p2p_uri();
    mo.migrate_uri = migrate_uri;
    mo.move_definition = true;
    ::unlink((host_b.mig_dir() + "/" + sock).c_str());
    Status failed = vb.MigratePeerToPeer(kDomain, mo);
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(failed.code(), StatusCode::kAborted) << failed.ToString();
    EXPECT_THAT(failed.message(), HasSubstr(migrate_uri));
    std::cout << "[ libvirt ] unrelayed migration: " << failed.ToString() << "\n";
  }
  Result<DomainInfo> still = vb.GetDomain(kDomain);
  ASSERT_TRUE(still.has_value()) << still.error().ToString();
  EXPECT_EQ(still->state, "running");
  EXPECT_EQ(still->pid, on_b->pid);
  Result<std::vector<DomainInfo>> back_on_a = va.ListDomains();
  ASSERT_TRUE(back_on_a.has_value());
  EXPECT_FALSE(HasDomain(*back_on_a, kDomain));
  const std::uint64_t after_failure =
      ReadLastCounter(host_b.SerialLogPath(kDomain)).value_or(std::nullopt).value_or(0);
  Result<std::uint64_t> going_on =
      WaitForCounter(host_b.SerialLogPath(kDomain), after_failure + 1, seconds(15));
  EXPECT_TRUE(going_on.has_value()) << going_on.error().ToString();
  EXPECT_EQ(vb.MigratePeerToPeer(kDomain, MigrateOptions{}).code(), StatusCode::kInvalidArgument);

  // Stop it on B.
  ASSERT_TRUE(vb.Destroy(kDomain).ok());
  EXPECT_TRUE(events_b.WaitFor(kDomain, "stopped", "destroyed", seconds(10)))
      << events_b.ToString();
  Result<DomainInfo> off = vb.GetDomain(kDomain);
  ASSERT_TRUE(off.has_value());
  EXPECT_EQ(off->state, "shutoff");
  EXPECT_EQ(off->state_reason, "destroyed");
  EXPECT_EQ(off->pid, 0);
  EXPECT_EQ(vb.Suspend(kDomain).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(vb.MonitorHmp(kDomain, "info status").error().code(), StatusCode::kFailedPrecondition);
  MigrateOptions to_a;
  to_a.destination_uri = host_a.p2p_uri();
  to_a.migrate_uri = migrate_uri;
  EXPECT_EQ(vb.MigratePeerToPeer(kDomain, to_a).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(vb.Undefine(kDomain).ok());
  EXPECT_TRUE(events_b.WaitFor(kDomain, "undefined", "removed", seconds(10)))
      << events_b.ToString();

  // The hosts stop cleanly and leave nothing behind.
  const pid_t libvirtd_a = host_a.libvirtd_pid();
  const std::string dir_a = host_a.dir();
  lv_a->reset();
  EXPECT_TRUE(host_a.Stop().ok());
  EXPECT_FALSE(std::filesystem::exists(dir_a));
  EXPECT_FALSE(std::filesystem::exists(fmt::format("/proc/{}/exe", libvirtd_a)) &&
               ReadFileToString(fmt::format("/proc/{}/comm", libvirtd_a)).value_or("") ==
                   "libvirtd\n");
  std::cout << "[ libvirt ] done after " << Since(t0) << " s\n";
}

TEST(LibvirtHostItest, OpenFailsWithoutDaemon) {
  Result<std::unique_ptr<LibvirtHost>> h =
      LibvirtHost::Open("qemu:///system?socket=/nonexistent/escdr/libvirt-sock");
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().code(), StatusCode::kUnavailable);
  EXPECT_THAT(h.error().message(), HasSubstr("/nonexistent/escdr/libvirt-sock"));
}

}  // namespace
}  // namespace escdr::libvirt
