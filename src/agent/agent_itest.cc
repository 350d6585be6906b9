// The agent daemon with real processes: host registration, the control
// channel, `escdr vm create|start|stop`, VMs that outlive a killed agent and
// are adopted again, and stale incoming QEMUs killed at start-up.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <filesystem>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "agent/agent_cluster_testing.h"
#include "agent/connections.h"
#include "agent/json_util.h"
#include "escdr/agent/control_protocol.h"
#include "escdr/qemu/qmp.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/wire/socket.h"

namespace escdr::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::AgentCluster;
using testing::CliResult;
using testing::CounterAdvances;
using testing::WaitUntil;

std::vector<std::string> CreateArgs(const std::string& guest, const std::string& vm) {
  return {"vm", "create", vm, "--os", "debian", "--os-version", "12", "--hypervisor-version",
          "7.2", "--memory", "128", "--kernel", guest + "/vmlinuz", "--initrd",
          guest + "/initrd.img", "--append", "console=ttyS0 quiet nokaslr"};
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto guest = escdr::testing::EnsureGuestBuilt();
    ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
    guest_ = *guest;
  }
  AgentCluster cluster_;
  std::string guest_;
};

TEST_F(AgentTest, RegistersItsHostAndAnswersPing) {
  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  auto inv = cluster_.OpenInventory().value();
  Host h = inv->GetHost("h1").value();
  EXPECT_EQ(h.agent_address, cluster_.Address("h1"));
  EXPECT_EQ(h.memory_mib, 4096u);
  EXPECT_EQ(h.vcpus, 8u);
  auto ping = cluster_.Client("h1").Ping();
  ASSERT_TRUE(ping.has_value()) << ping.error().ToString();
  EXPECT_EQ(StringOr(*ping, "host"), "h1");
  EXPECT_EQ(U64Or(*ping, "pid"), static_cast<std::uint64_t>(cluster_.AgentPid("h1")));
}

TEST_F(AgentTest, BadControlRequestsGetErrorsAndTheAgentStaysUp) {
  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  AgentClient client = cluster_.Client("h1");
  auto unknown = client.Call("reboot-the-world");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), StatusCode::kNotSupported);
  auto missing = client.StartVm("no-such-vm");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound) << missing.error().ToString();

  // A control frame with a flipped payload byte: the agent answers with an
  // error naming the checksum, and keeps serving.
  auto hp = ParseAgentAddress(cluster_.Address("h1")).value();
  std::unique_ptr<wire::Connection> conn =
      wire::ConnectTcp(hp.first, hp.second, Deadline::After(seconds(10))).value();
  if (cluster_.client_tls()) {
    conn = cluster_.client_tls()->Connect(std::move(conn), Deadline::After(seconds(10)), "h1").value();
  }
  auto pair = wire::ConnectionPair().value();
  ASSERT_TRUE(WriteControlFrame(*pair.first, ControlFrameType::kRequest,
                                {{"version", kControlVersion}, {"op", "ping"}},
                                Deadline::After(seconds(5)))
                  .ok());
  std::array<std::uint8_t, 256> buf{};
  std::size_t n = pair.second->ReadSome(buf, Deadline::After(seconds(5))).value();
  buf[n - 3] ^= 0x01;
  ASSERT_TRUE(conn->WriteAll(std::span<const std::uint8_t>(buf.data(), n), Deadline::After(seconds(5))).ok());
  auto reply = ReadControlFrame(*conn, "agent", Deadline::After(seconds(10)));
  ASSERT_TRUE(reply.has_value()) << reply.error().ToString();
  Status s = ReplyStatus(reply->body);
  EXPECT_EQ(s.code(), StatusCode::kCorruption);
  EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.message();
  EXPECT_TRUE(client.Ping().has_value());
}

TEST_F(AgentTest, VmCreateStartStop) {
  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  ASSERT_TRUE(cluster_.StartAgent("h2").ok());
  CliResult r = cluster_.Cli(CreateArgs(guest_, "v1"));
  ASSERT_TRUE(r.ok()) << r.err;
  r = cluster_.Cli(CreateArgs(guest_, "v2"));
  ASSERT_TRUE(r.ok()) << r.err;
  auto inv = cluster_.OpenInventory().value();
  // Spread placement: one VM of the kind per host.
  const std::string host1 = inv->GetVm("v1").value().host;
  const std::string host2 = inv->GetVm("v2").value().host;
  EXPECT_NE(host1, host2);

  auto v1 = cluster_.FindVm(host1, "v1");
  ASSERT_TRUE(v1.has_value());
  EXPECT_EQ(v1->run_state, "running");
  EXPECT_EQ(inv->GetVm("v1").value().state, VmState::kRunning);
  EXPECT_EQ(inv->GetVm("v1").value().ram_path, v1->ram_path);
  EXPECT_TRUE(CounterAdvances(v1->serial_log, seconds(300))) << SerialLogTail(v1->serial_log);

  r = cluster_.Cli({"vm", "stop", "v1"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_TRUE(WaitUntil([&] { return ProcessGone(static_cast<pid_t>(v1->pid)); }, seconds(30)));
  EXPECT_FALSE(std::filesystem::exists(v1->ram_path));
  EXPECT_FALSE(std::filesystem::exists(v1->qmp_socket));
  EXPECT_EQ(inv->GetVm("v1").value().state, VmState::kStopped);
  EXPECT_FALSE(cluster_.FindVm(host1, "v1").has_value());

  r = cluster_.Cli({"vm", "start", "v1"});
  ASSERT_TRUE(r.ok()) << r.err;
  auto again = cluster_.FindVm(host1, "v1");
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(again->pid, v1->pid);
  EXPECT_EQ(inv->GetVm("v1").value().state, VmState::kRunning);

  // A name that cannot be placed again; a start on the wrong host is refused.
  EXPECT_FALSE(cluster_.Cli(CreateArgs(guest_, "v1")).ok());
  auto wrong = cluster_.Client(host2).StartVm("v1");
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code(), StatusCode::kFailedPrecondition);
}

TEST_F(AgentTest, VmOutlivesKilledAgentAndIsAdoptedOnRestart) {
  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  ASSERT_TRUE(cluster_.Cli(CreateArgs(guest_, "v1")).ok());
  auto before = cluster_.FindVm("h1", "v1").value();
  ASSERT_TRUE(CounterAdvances(before.serial_log, seconds(300)));

  cluster_.KillAgent("h1");
  EXPECT_FALSE(ProcessGone(static_cast<pid_t>(before.pid)));
  EXPECT_TRUE(CounterAdvances(before.serial_log));

  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  auto after = cluster_.FindVm("h1", "v1");
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->pid, before.pid);
  EXPECT_EQ(after->run_state, "running");
  // A clean stop of the agent leaves the VM running too.
  ASSERT_TRUE(cluster_.StopAgent("h1").ok());
  EXPECT_TRUE(CounterAdvances(before.serial_log));
  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  ASSERT_TRUE(cluster_.Cli({"vm", "stop", "v1"}).ok());
  EXPECT_TRUE(WaitUntil([&] { return ProcessGone(static_cast<pid_t>(before.pid)); }, seconds(30)));
}

// A source agent killed after its QEMU completed a migration and before the
// commit leaves the guest stopped (QEMU postmigrate). Restarted, the agent
// asks the destination of the VM's last migration, which never took the VM
// over, and resumes the VM here (interrupted_migration.h).
TEST_F(AgentTest, SourceStoppedByAnUncommittedMigrationRunsAgainAfterRestart) {
  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  ASSERT_TRUE(cluster_.Cli(CreateArgs(guest_, "v1")).ok());
  ASSERT_TRUE(cluster_.StartAgent("h2").ok());
  const auto vm = cluster_.FindVm("h1", "v1").value();
  ASSERT_TRUE(CounterAdvances(vm.serial_log, seconds(300)));
  // The inventory's migration to h2, as `escdr migrate` begins it.
  auto inv = cluster_.OpenInventory().value();
  ASSERT_TRUE(inv->BeginMigration("v1", "h2", "").has_value());
  // The agent dies; its QEMU completes a migration (to nowhere), as the
  // source QEMU of a real one does before the commit.
  cluster_.KillAgent("h1");
  {
    auto qmp = QmpClient::Connect(vm.qmp_socket, seconds(10));
    ASSERT_TRUE(qmp.has_value()) << qmp.error().ToString();
    ASSERT_TRUE(Migrate(**qmp, "exec:cat > /dev/null").ok());
    ASSERT_TRUE(WaitForMigration(**qmp, seconds(120)).has_value());
    EXPECT_EQ(QueryStatus(**qmp).value_or(""), "postmigrate");
  }
  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  EXPECT_TRUE(WaitUntil(
      [&] {
        auto now = cluster_.FindVm("h1", "v1");
        return now.has_value() && now->run_state == "running";
      },
      seconds(60)))
      << cluster_.AgentLog("h1");
  EXPECT_TRUE(CounterAdvances(vm.serial_log));
  EXPECT_EQ(cluster_.FindVm("h1", "v1")->pid, vm.pid);
  EXPECT_NE(cluster_.AgentLog("h1").find("was not committed"), std::string::npos)
      << cluster_.AgentLog("h1");
}

TEST_F(AgentTest, VmThatDiesIsNoticedAndMarkedStopped) {
  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  ASSERT_TRUE(cluster_.Cli(CreateArgs(guest_, "v1")).ok());
  auto vm = cluster_.FindVm("h1", "v1").value();
  ASSERT_EQ(::kill(static_cast<pid_t>(vm.pid), SIGKILL), 0);
  auto inv = cluster_.OpenInventory().value();
  EXPECT_TRUE(WaitUntil(
      [&] { return inv->GetVm("v1").value().state == VmState::kStopped; }, seconds(30)));
  EXPECT_FALSE(cluster_.FindVm("h1", "v1").has_value());
  EXPECT_FALSE(std::filesystem::exists(vm.ram_path));
}

TEST_F(AgentTest, StaleIncomingQemuIsKilledAtStartup) {
  // A destination QEMU whose agent crashed mid-migration: it waits with
  // -incoming defer. The agent's record of it says "incoming".
  const std::string state = cluster_.StateDir("h1");
  std::filesystem::create_directories(state + "/vms");
  std::filesystem::create_directories(state + "/run");
  LaunchSpec spec;
  spec.name = "stale";
  spec.memory_mib = 64;
  spec.kernel = guest_ + "/vmlinuz";
  spec.ram_path = state + "/run/stale.ram";
  spec.qmp_socket = state + "/run/stale.qmp";
  spec.serial_log = state + "/run/stale.serial";
  spec.incoming = "defer";
  auto proc = VmProcess::Launch(spec, state + "/run/stale.pid", state + "/run/stale.log", seconds(120));
  ASSERT_TRUE(proc.has_value()) << proc.error().ToString();
  VmRecord rec;
  rec.name = "stale";
  rec.role = VmRole::kIncoming;
  rec.pid = (*proc)->pid();
  rec.spec = spec;
  rec.pidfile = state + "/run/stale.pid";
  rec.migration_id = 7;
  ASSERT_TRUE(WriteVmRecord(state + "/vms", rec).ok());

  ASSERT_TRUE(cluster_.StartAgent("h1").ok());
  EXPECT_TRUE(WaitUntil([&] { return ProcessGone(rec.pid); }, seconds(30)));
  EXPECT_FALSE(std::filesystem::exists(spec.ram_path));
  EXPECT_TRUE(cluster_.Records("h1").empty());
  EXPECT_TRUE(cluster_.Client("h1").ListVms().value().empty());
}

}  // namespace
}  // namespace escdr::agent
