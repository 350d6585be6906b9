// Who may use an agent, with real agent processes over mutual TLS
// (docs/security.md §6, §7):
//   * each role's certificate against each control request on a real agent:
//     allowed, or refused with the role and the request named, logged, and
//     nothing done;
//   * revocation and reload during a live migration of a real test guest:
//     `escdr ca revoke` and `escdr ca issue --renew`, then `escdr agent
//     reload` on the source and SIGHUP on the destination; the revoked
//     certificate is refused at the handshake, the renewed one is presented,
//     a failed reload keeps the old credentials, and the migration goes on to
//     a destination whose RAM is byte-identical to the source's;
//   * a flood on loopback: hundreds of idle and slow unauthenticated
//     connections from 127.0.0.2-127.0.0.9, held and reopened against both
//     agents while an operator runs `status` from 127.0.0.1 and a migration
//     runs; both succeed within the bounds stated below.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/admission.h"
#include "agent/agent_cluster_testing.h"
#include "agent/authorization.h"
#include "agent/json_util.h"
#include "escdr/wire/tls.h"
#include "escdr/wire/tls_ca.h"

namespace escdr::agent {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::AgentCluster;
using testing::CliResult;
using testing::CompareRamFiles;
using testing::CounterAdvances;
using testing::WaitUntil;
using Clock = std::chrono::steady_clock;

constexpr const char* kVm = "auth-v1";

std::string FullLog(AgentCluster& c, const std::string& host) {
  return ReadFileToString(c.root() + "/" + host + ".log").value_or("");
}

int CountLines(const std::string& log, const std::string& needle) {
  int n = 0;
  for (std::size_t at = 0; (at = log.find(needle, at)) != std::string::npos; at += needle.size())
    ++n;
  return n;
}

// The line of `log` that holds `needle`, or "".
std::string LineWith(const std::string& log, const std::string& needle) {
  const std::size_t at = log.find(needle);
  if (at == std::string::npos) return "";
  const std::size_t begin = log.rfind('\n', at);
  const std::size_t end = log.find('\n', at);
  return log.substr(begin == std::string::npos ? 0 : begin + 1,
                    end == std::string::npos ? std::string::npos : end - begin - 1);
}

bool LogSays(AgentCluster& c, const std::string& host, const std::string& needle) {
  const bool found =
      WaitUntil([&] { return FullLog(c, host).find(needle) != std::string::npos; }, seconds(10));
  if (found) std::printf("  %s: %s\n", host.c_str(), LineWith(FullLog(c, host), needle).c_str());
  return found;
}

// Runs the escdr CLI as the holder of certificate `name` of the cluster CA.
CliResult CliAs(AgentCluster& c, const std::string& name, const std::vector<std::string>& args) {
  SubprocessOptions o;
  o.argv = {testing::EscdrBinary(),
            "--db",
            c.db(),
            "--state-dir",
            c.root() + "/cli-" + name,
            "--tls-dir",
            c.tls_dir(),
            "--tls-name",
            name};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.stdout_path = c.root() + "/cli-" + name + ".out";
  o.stderr_path = c.root() + "/cli-" + name + ".err";
  return testing::RunProgram(o, seconds(60));
}

std::shared_ptr<const wire::TlsContext> Credentials(AgentCluster& c, const std::string& name) {
  auto tls = wire::TlsContext::FromDirectory(c.tls_dir(), name);
  EXPECT_TRUE(tls.has_value()) << tls.error().ToString();
  return tls.has_value() ? *tls : nullptr;
}

// ---- roles ----

TEST(AuthorizationItest, EachRoleAgainstEachRequestOnARealAgent) {
  AgentCluster c;
  ASSERT_TRUE(c.StartAgent("h1").ok());
  auto guest = escdr::testing::EnsureGuestBuilt();
  ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
  // Placed on h1 but not started: a start_vm that got through would show.
  CliResult placed = c.Cli({"vm", "create", kVm, "--os", "debian", "--os-version", "12",
                            "--hypervisor-version", "7.2", "--memory", "128", "--kernel",
                            *guest + "/vmlinuz", "--host", "h1", "--no-start"});
  ASSERT_TRUE(placed.ok()) << placed.err;
  ASSERT_TRUE(wire::IssueCertificate(c.tls_dir(), "watch", 7, wire::PeerRole::kObserver).ok());
  ASSERT_TRUE(wire::IssueCertificate(c.tls_dir(), "h7", 7, wire::PeerRole::kAgent).ok());

  // Requests with arguments that would do nothing harmful when allowed (an
  // unknown VM, a migration that does not exist), except start_vm and
  // stop_vm, which name the placed VM so that an allowed one would act.
  const std::vector<std::pair<std::string, json>> requests = {
      {"ping", json::object()},
      {"status", json::object()},
      {"list_vms", json::object()},
      {"migrate_in", {{"vm", "no-such-vm"}, {"migration_id", 999}}},
      {"commit_in", {{"vm", "no-such-vm"}, {"migration_id", 999}}},
      {"abort_in", {{"vm", "no-such-vm"}, {"migration_id", 999}}},
      {"libvirt_probe", {{"vm", "no-such-vm"}}},
      {"start_vm", {{"vm", kVm}}},
      {"stop_vm", {{"vm", "no-such-vm"}}},
      {"migrate_out", {{"vm", "no-such-vm"}}},
      {"cancel", json::object()},
      {"reload", json::object()},
  };
  // Every request of the table is tried.
  ASSERT_EQ(requests.size(), RequestRules().size());
  const std::vector<std::pair<std::string, wire::PeerRole>> holders = {
      {"watch", wire::PeerRole::kObserver},
      {"h7", wire::PeerRole::kAgent},
      {"cli", wire::PeerRole::kOperator}};
  int refused = 0;
  for (const auto& [holder, role] : holders) {
    auto tls = Credentials(c, holder);
    ASSERT_NE(tls, nullptr);
    for (const auto& [op, args] : requests) {
      if (op == "start_vm" && role == wire::PeerRole::kOperator) continue;  // tried last
      AgentClient client(c.Address("h1"), seconds(30), tls, "h1");
      auto r = client.Call(op, args);
      const bool may = MaySend(role, op);
      const std::string what = fmt::format("{} ({}) sending {}", holder, wire::RoleName(role), op);
      if (may) {
        // Allowed: whatever the request itself answers, not a refusal.
        if (!r.has_value()) {
          EXPECT_EQ(r.error().message().find("which may not send"), std::string::npos)
              << what << ": " << r.error().message();
        }
        continue;
      }
      ++refused;
      ASSERT_FALSE(r.has_value()) << what << " was allowed";
      EXPECT_EQ(r.error().message(),
                fmt::format("certificate {} has role {}, which may not send {}; {} may", holder,
                            wire::RoleName(role), op, RolesThatMay(op)))
          << what;
    }
  }
  EXPECT_EQ(refused, 9 + 5);  // observers: 9 requests; agents: 5
  // The refusals are logged with the peer and the request.
  EXPECT_TRUE(LogSays(c, "h1", "refused stop_vm from tcp 127.0.0.1:"));
  EXPECT_TRUE(
      LogSays(c, "h1", "certificate h7 has role agent, which may not send stop_vm; operators may"));
  EXPECT_GE(CountLines(FullLog(c, "h1"), "which may not send"), refused);
  // Nothing was started by the refused start_vm requests.
  EXPECT_TRUE(c.Records("h1").empty());
  EXPECT_NE(c.OpenInventory().value()->GetVm(kVm).value().state, VmState::kRunning);

  // The CLI with an observer's certificate: status works, vm start is refused
  // with the reason.
  CliResult status = CliAs(c, "watch", {"agent", "status", "h1"});
  EXPECT_TRUE(status.ok()) << status.err;
  CliResult start = CliAs(c, "watch", {"vm", "start", kVm});
  EXPECT_FALSE(start.ok());
  std::printf("  CLI as observer: %s", start.err.c_str());
  EXPECT_NE(start.err.find("certificate watch has role observer, which may not send start_vm; "
                           "operators may"),
            std::string::npos)
      << start.err;
  EXPECT_TRUE(c.Records("h1").empty());
  // The operator may (and the VM starts; it is stopped with the cluster).
  AgentClient op(c.Address("h1"), seconds(120), c.client_tls(), "h1");
  auto started = op.StartVm(kVm);
  ASSERT_TRUE(started.has_value()) << started.error().ToString();
  EXPECT_EQ(c.Records("h1").size(), 1u);
}

// ---- revocation, reload, and the flood: one cluster, one guest ----

class LiveAgentsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new AgentCluster();
    setup_ = Boot();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(setup_.ok()) << setup_.ToString(); }

  static Status Boot() {
    for (const char* h : {"h1", "h2"}) ESCDR_RETURN_IF_ERROR(cluster_->StartAgent(h));
    ESCDR_ASSIGN_OR_RETURN(std::string guest, escdr::testing::EnsureGuestBuilt());
    CliResult r = cluster_->Cli({"vm", "create", kVm, "--host", "h1", "--os", "debian",
                                 "--os-version", "12", "--hypervisor-version", "7.2", "--memory",
                                 "128", "--kernel", guest + "/vmlinuz", "--initrd",
                                 guest + "/initrd.img", "--append", "console=ttyS0 quiet nokaslr"});
    if (!r.ok()) return Status::Internal("vm create: " + r.err);
    auto info = cluster_->FindVm("h1", kVm);
    if (!info) return Status::Internal("the VM is not listed by h1");
    if (!WaitUntil([&] { return testing::Counter(info->serial_log) >= 3; }, seconds(300))) {
      return Status::Timeout("the guest did not boot: " + SerialLogTail(info->serial_log));
    }
    return Status::OK();
  }

  static std::string HostOf(const std::string& vm) {
    return cluster_->OpenInventory().value()->GetVm(vm).value().host;
  }

  // Starts a slow migration of kVm from `src` to `dst` that keeps both QEMUs
  // (the source's for the comparison of RAM), and waits until its stream
  // flows.
  void StartSlowMigration(const std::string& src, const std::string& dst, const std::string& rate,
                          std::optional<testing::CliRun>* run) {
    run->emplace(cluster_
                     ->StartCli({"--json", "migrate", kVm, "--to", dst, "--max-bandwidth", rate,
                                 "--keep-paused", "--keep-source"})
                     .value());
    const bool flowing = WaitUntil(
        [&] {
          auto st = cluster_->Client(src).GetStatus();
          if (!st.has_value()) return false;
          for (const json& m : (*st)["migrations"]) {
            if (U64Or(m, "wire_bytes_sent") > (256u << 10)) return true;
          }
          return false;
        },
        seconds(120));
    ASSERT_TRUE(flowing) << "the migration never streamed: " << cluster_->AgentLog(src)
                         << cluster_->AgentLog(dst);
  }

  // After the CLI's migration: the kept source and the paused destination
  // hold the same RAM; then the destination runs on and the source goes.
  void FinishAndCompare(const std::string& src, const std::string& dst, const CliResult& r) {
    ASSERT_TRUE(r.ok()) << r.err << cluster_->AgentLog(src) << cluster_->AgentLog(dst);
    const json out = json::parse(r.out);
    std::string src_ram;
    for (const VmRecord& rec : cluster_->Records(src)) {
      if (rec.name == kVm) src_ram = rec.spec.ram_path;
    }
    ASSERT_FALSE(src_ram.empty());
    const VmInfo dest = VmInfo::FromJson(out["destination_vm"]);
    EXPECT_EQ(CompareRamFiles(src_ram, dest.ram_path), "");
    ASSERT_TRUE(cluster_->Cli({"vm", "start", kVm}).ok());
    EXPECT_TRUE(CounterAdvances(dest.serial_log)) << SerialLogTail(dest.serial_log);
    ASSERT_TRUE(cluster_->Client(src).StopVm(kVm).ok());
    EXPECT_EQ(HostOf(kVm), dst);
  }

  static AgentCluster* cluster_;
  static Status setup_;
};

AgentCluster* LiveAgentsTest::cluster_ = nullptr;
Status LiveAgentsTest::setup_;

TEST_F(LiveAgentsTest, RevocationAndRenewalReloadedDuringALiveMigration) {
  AgentCluster& c = *cluster_;
  const std::string src = HostOf(kVm);
  const std::string dst = src == "h1" ? "h2" : "h1";
  const std::string dir = c.tls_dir();
  ASSERT_TRUE(wire::IssueCertificate(dir, "ops2", 7, wire::PeerRole::kOperator).ok());
  auto ops2 = Credentials(c, "ops2");
  ASSERT_TRUE(AgentClient(c.Address(src), seconds(10), ops2, src).Ping().has_value());

  std::optional<testing::CliRun> run;
  ASSERT_NO_FATAL_FAILURE(StartSlowMigration(src, dst, "1M", &run));

  // While it streams: ops2 is revoked, and the destination's certificate is
  // renewed and the old one revoked (as after a leaked key).
  const std::string old_dst_cert = c.root() + "/" + dst + "-old.crt";
  std::filesystem::copy_file(dir + "/" + dst + ".crt", old_dst_cert);
  CliResult revoked = c.Cli({"ca", "revoke", "ops2", "--dir", dir});
  ASSERT_TRUE(revoked.ok()) << revoked.err;
  std::printf("  %s", revoked.out.c_str());
  CliResult renewed = c.Cli({"ca", "issue", dst, "--dir", dir, "--role", "agent", "--renew"});
  ASSERT_TRUE(renewed.ok()) << renewed.err;
  CliResult revoked_old = c.Cli({"ca", "revoke", dst, "--dir", dir, "--cert", old_dst_cert});
  ASSERT_TRUE(revoked_old.ok()) << revoked_old.err;
  EXPECT_EQ(wire::ReadRevokedSerials(dir + "/crl.pem").value().size(), 2u);

  // Not reloaded yet: the agents still take ops2, and a client that loaded
  // the new list refuses the destination's old certificate.
  EXPECT_TRUE(AgentClient(c.Address(src), seconds(10), ops2, src).Ping().has_value());
  auto fresh = Credentials(c, "cli");
  auto old_cert = AgentClient(c.Address(dst), seconds(10), fresh, dst).Ping();
  ASSERT_FALSE(old_cert.has_value());
  EXPECT_NE(old_cert.error().message().find("(certificate revoked): certificate " + dst),
            std::string::npos)
      << old_cert.error().message();

  // The source by `escdr agent reload` (an operator's request), the
  // destination by SIGHUP, both while the migration streams.
  CliResult reload = c.Cli({"agent", "reload", src});
  ASSERT_TRUE(reload.ok()) << reload.err;
  std::printf("  %s", reload.out.c_str());
  EXPECT_NE(reload.out.find("2 revoked"), std::string::npos) << reload.out;
  ASSERT_EQ(::kill(c.AgentPid(dst), SIGHUP), 0);
  EXPECT_TRUE(LogSays(c, dst, "reloaded its credentials"));
  EXPECT_TRUE(LogSays(c, src, "reloaded its credentials"));
  // Both reloads happened while the migration was in progress.
  auto during = c.Client(src).GetStatus();
  ASSERT_TRUE(during.has_value()) << during.error().ToString();
  EXPECT_FALSE((*during)["migrations"].empty()) << "the migration ended before the reloads";

  // The revoked certificate is refused at the handshake by both, logged as
  // revoked; the renewed destination certificate is presented.
  for (const std::string& h : {src, dst}) {
    auto r = AgentClient(c.Address(h), seconds(10), ops2, h).Ping();
    ASSERT_FALSE(r.has_value()) << h << " still takes a revoked certificate";
    std::printf("  ops2 -> %s: %s\n", h.c_str(), r.error().message().c_str());
    EXPECT_TRUE(LogSays(c, h, "its certificate is revoked: TLS handshake with"));
    EXPECT_NE(FullLog(c, h).find("certificate ops2, serial"), std::string::npos);
  }
  auto renewed_ping = AgentClient(c.Address(dst), seconds(10), fresh, dst).Ping();
  EXPECT_TRUE(renewed_ping.has_value()) << renewed_ping.error().ToString();
  // An observer's or agent's certificate may not reload an agent.
  ASSERT_TRUE(wire::IssueCertificate(dir, "watch2", 7, wire::PeerRole::kObserver).ok());
  auto no = AgentClient(c.Address(src), seconds(10), Credentials(c, "watch2"), src).Call("reload");
  ASSERT_FALSE(no.has_value());
  EXPECT_NE(no.error().message().find("may not send reload"), std::string::npos);

  // A reload that fails keeps the old credentials and says why.
  const std::string crl = dir + "/crl.pem";
  const std::string saved = ReadFileToString(crl).value();
  ASSERT_TRUE(WriteStringToFile(crl, "not a revocation list\n").ok());
  auto failed = AgentClient(c.Address(src), seconds(10), fresh, src).Call("reload");
  ASSERT_TRUE(WriteStringToFile(crl, saved).ok());
  ASSERT_FALSE(failed.has_value());
  std::printf("  failed reload: %s\n", failed.error().message().c_str());
  EXPECT_NE(failed.error().message().find("kept its old credentials"), std::string::npos);
  EXPECT_NE(failed.error().message().find("crl.pem holds no PEM CRL"), std::string::npos)
      << failed.error().message();
  EXPECT_TRUE(AgentClient(c.Address(src), seconds(10), fresh, src).Ping().has_value());
  EXPECT_FALSE(AgentClient(c.Address(src), seconds(10), ops2, src).Ping().has_value());

  // The migration went on through all of it, byte for byte.
  ASSERT_NO_FATAL_FAILURE(FinishAndCompare(src, dst, run->Wait()));
}

// One flooding client address: keeps `per_agent` connections open to each
// agent, bound to its own 127.0.0.x; half stay silent, half send a TLS
// record header one byte at a time, every 400 ms (a slow handshake). A
// connection the agent closes (or the kernel refuses) is reopened at the
// next turn (at most kReopenPerTurn per turn of 50 ms: 200 per second per
// address). "Held" counts the connections open from the flooder's side,
// including those still in the agent's accept queue.
class Flooder {
 public:
  Flooder(std::string source, std::vector<std::uint16_t> ports, int per_agent)
      : source_(std::move(source)), ports_(std::move(ports)), per_agent_(per_agent) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~Flooder() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (Conn& c : conns_) {
      if (c.fd >= 0) ::close(c.fd);
    }
    conns_.clear();
  }
  std::uint64_t opened() const { return opened_.load(); }
  std::uint64_t closed_by_agent() const { return closed_.load(); }
  int held() const { return held_.load(); }

  static constexpr int kReopenPerTurn = 10;

 private:
  struct Conn {
    int fd = -1;
    std::uint16_t port = 0;
    bool slow = false;
    int sent = 0;
    Clock::time_point next_byte;
  };

  int Open(std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in local{};
    local.sin_family = AF_INET;
    ::inet_pton(AF_INET, source_.c_str(), &local.sin_addr);
    sockaddr_in remote{};
    remote.sin_family = AF_INET;
    remote.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
        (::connect(fd, reinterpret_cast<sockaddr*>(&remote), sizeof(remote)) != 0 &&
         errno != EINPROGRESS)) {
      ::close(fd);
      return -1;
    }
    ++opened_;
    return fd;
  }

  void Loop() {
    for (std::uint16_t port : ports_) {
      for (int i = 0; i < per_agent_; ++i)
        conns_.push_back(Conn{-1, port, i % 2 == 1, 0, Clock::now()});
    }
    // A TLS record header of a ClientHello, never completed.
    const std::uint8_t hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
    while (!stop_) {
      // One turn per 50 ms at most, whatever poll says, so the flood's rate
      // is bounded: at most kReopenPerTurn new connections per turn.
      const auto turn_end = Clock::now() + milliseconds(50);
      int reopened = 0;
      for (Conn& c : conns_) {
        if (c.fd < 0 && reopened < kReopenPerTurn) {
          c.fd = Open(c.port);
          c.sent = 0;
          c.next_byte = Clock::now() + milliseconds(400);
          ++reopened;
        }
      }
      std::vector<pollfd> fds;
      for (Conn& c : conns_) fds.push_back(pollfd{c.fd, POLLIN, 0});
      ::poll(fds.data(), fds.size(), 50);
      int held = 0;
      for (std::size_t i = 0; i < conns_.size(); ++i) {
        Conn& c = conns_[i];
        if (c.fd < 0) continue;
        bool gone = (fds[i].revents & (POLLHUP | POLLERR)) != 0;
        if (!gone && (fds[i].revents & POLLIN) != 0) {
          std::uint8_t buf[256];
          const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
          gone = n == 0 || (n < 0 && errno != EAGAIN);
        }
        if (!gone && c.slow && Clock::now() >= c.next_byte &&
            c.sent < static_cast<int>(sizeof(hello))) {
          const ssize_t n = ::send(c.fd, hello + c.sent, 1, MSG_NOSIGNAL);
          if (n == 1)
            ++c.sent;
          else if (errno != EAGAIN)
            gone = true;
          c.next_byte = Clock::now() + milliseconds(400);
        }
        if (gone) {
          ::close(c.fd);
          c.fd = -1;
          ++closed_;
        } else {
          ++held;
        }
      }
      held_ = held;
      std::this_thread::sleep_until(turn_end);
    }
  }

  std::string source_;
  std::vector<std::uint16_t> ports_;
  int per_agent_;
  std::vector<Conn> conns_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> opened_{0}, closed_{0};
  std::atomic<int> held_{0};
  std::thread thread_;
};

// The bound: every operator `status` answers within kStatusBound and the
// migration finishes, while the flood runs. Without the gate, 64 held
// connections locked every client out until the old 10 s deadline.
constexpr auto kStatusBound = seconds(5);

TEST_F(LiveAgentsTest, FloodOfUnauthenticatedConnectionsLocksNobodyOut) {
  AgentCluster& c = *cluster_;
  const std::string src = HostOf(kVm);
  const std::string dst = src == "h1" ? "h2" : "h1";
  std::vector<std::uint16_t> ports;
  for (const std::string& h : {src, dst})
    ports.push_back(ParseAgentAddress(c.Address(h)).value().second);

  // Where the agents' logs stand before the flood (the cluster is shared).
  std::map<std::string, std::size_t> log_start;
  for (const std::string& h : {src, dst}) log_start[h] = FullLog(c, h).size();
  // 8 addresses x 2 agents x 20 connections = 320 held and reopened.
  std::vector<std::unique_ptr<Flooder>> flood;
  for (int k = 2; k <= 9; ++k) {
    flood.push_back(std::make_unique<Flooder>(fmt::format("127.0.0.{}", k), ports, 20));
  }
  ASSERT_TRUE(WaitUntil(
      [&] {
        int held = 0;
        for (auto& f : flood) held += f->held();
        return held >= 100;
      },
      seconds(10)));

  const auto flood_start = Clock::now();
  std::optional<testing::CliRun> run;
  ASSERT_NO_FATAL_FAILURE(StartSlowMigration(src, dst, "2M", &run));
  // The operator polls the source's status from 127.0.0.1 until the
  // migration ends, at least 10 times.
  std::vector<milliseconds> latencies;
  int failures = 0;
  std::string first_failure;
  std::atomic<bool> migrating{true};
  std::thread poller([&] {
    while (migrating || latencies.size() < 10) {
      const auto t0 = Clock::now();
      auto st = AgentClient(c.Address(src), seconds(30), c.client_tls(), src).GetStatus();
      latencies.push_back(std::chrono::duration_cast<milliseconds>(Clock::now() - t0));
      if (!st.has_value()) {
        if (failures++ == 0) first_failure = st.error().ToString();
      }
      std::this_thread::sleep_for(milliseconds(200));
    }
  });
  CliResult r = run->Wait();
  migrating = false;
  poller.join();
  const auto flood_time = Clock::now() - flood_start;
  std::uint64_t opened = 0, closed = 0;
  for (auto& f : flood) {
    opened += f->opened();
    closed += f->closed_by_agent();
  }
  int held_at_end = 0;
  for (auto& f : flood) held_at_end += f->held();
  flood.clear();

  const milliseconds worst = *std::max_element(latencies.begin(), latencies.end());
  std::vector<milliseconds> sorted = latencies;
  std::sort(sorted.begin(), sorted.end());
  std::printf(
      "  flood: %llu connections opened from 127.0.0.2-9 in %.1f s, %llu closed by the "
      "agents, %d held at the end\n",
      static_cast<unsigned long long>(opened), std::chrono::duration<double>(flood_time).count(),
      static_cast<unsigned long long>(closed), held_at_end);
  std::printf(
      "  operator status from 127.0.0.1: %zu calls, %d failed, median %lld ms, worst "
      "%lld ms (bound %lld ms)\n",
      latencies.size(), failures, static_cast<long long>(sorted[sorted.size() / 2].count()),
      static_cast<long long>(worst.count()),
      static_cast<long long>(milliseconds(kStatusBound).count()));
  RecordProperty("flood_connections_opened", std::to_string(opened));
  RecordProperty("status_worst_ms", std::to_string(worst.count()));
  RecordProperty("status_median_ms", std::to_string(sorted[sorted.size() / 2].count()));

  EXPECT_EQ(failures, 0) << first_failure;
  EXPECT_LE(worst, kStatusBound);
  EXPECT_GE(opened, 300u);
  // The agents refused and closed, and said so in summary lines, not one
  // line per connection.
  for (const std::string& h : {src, dst}) {
    // One summary per 10 s period: the flood's comes at the latest 10 s
    // after it began.
    const auto flood_log = [&] { return FullLog(c, h).substr(log_start[h]); };
    EXPECT_TRUE(
        WaitUntil([&] { return flood_log().find("refused at 8 per address") != std::string::npos; },
                  seconds(15)))
        << c.AgentLog(h);
    const std::string log = flood_log();
    const std::string summary = LineWith(log, "refused at 8 per address");
    std::printf("  %s: %s\n", h.c_str(), summary.c_str());
    const auto periods = std::chrono::duration_cast<seconds>(flood_time).count() / 10 + 2;
    EXPECT_LE(CountLines(log, "sent nothing for") + CountLines(log, "refused the connection from"),
              periods * ConnectionGate::kSingleLinesPerPeriod + 20);
  }
  ASSERT_NO_FATAL_FAILURE(FinishAndCompare(src, dst, r));
}

}  // namespace
}  // namespace escdr::agent
