// TLS on the agent's port, with real agent processes: mutual certificates
// and pre-shared keys serve clients, and every peer without the right
// credentials is refused with one log line on the agent naming the peer and
// OpenSSL's reason, a clear error on the client, and nothing started: an
// unknown CA, an expired certificate, a plaintext client against a TLS agent,
// a TLS client against a plaintext agent, a wrong pre-shared key. An agent
// with no credentials at all does not start; a peer that connects and says
// nothing does not hold the agent, and is closed after the handshake
// deadline (3 s by default). Roles, revocation, reload and floods of
// unauthenticated connections: auth_itest.cc.
#include <unistd.h>

#include <filesystem>
#include <regex>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "agent/agent_cluster_testing.h"
#include "agent/json_util.h"
#include "escdr/wire/socket.h"
#include "escdr/wire/tls.h"
#include "escdr/wire/tls_ca.h"

namespace escdr::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::AgentCluster;
using testing::CliResult;
using testing::WaitUntil;
using Channel = AgentCluster::Channel;

constexpr const char* kVm = "tls-v1";

// The agent log lines that contain `needle`.
int CountLines(const std::string& log, const std::string& needle) {
  int n = 0;
  std::size_t at = 0;
  while ((at = log.find(needle, at)) != std::string::npos) {
    ++n;
    at += needle.size();
  }
  return n;
}

std::string FullLog(const AgentCluster& c, const std::string& host) {
  return ReadFileToString(c.root() + "/" + host + ".log").value_or("");
}

class TlsAgentTest : public ::testing::Test {
 protected:
  // Places kVm on h1 without starting it, so a refused start_vm would show.
  void PlaceVm(AgentCluster& c) {
    auto guest = escdr::testing::EnsureGuestBuilt();
    ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
    CliResult r = c.Cli({"vm", "create", kVm, "--os", "debian", "--os-version", "12",
                         "--hypervisor-version", "7.2", "--memory", "128", "--kernel",
                         *guest + "/vmlinuz", "--host", "h1", "--no-start"});
    ASSERT_TRUE(r.ok()) << r.err;
  }

  // Nothing was started on h1: no QEMU record, no VM in its list, the VM still
  // not running in the inventory, no migration logged.
  void ExpectNothingStarted(AgentCluster& c) {
    EXPECT_TRUE(c.Records("h1").empty());
    auto vms = c.Client("h1").ListVms();
    ASSERT_TRUE(vms.has_value()) << vms.error().ToString();
    EXPECT_TRUE(vms->empty());
    auto inv = c.OpenInventory().value();
    EXPECT_NE(inv->GetVm(kVm).value().state, VmState::kRunning);
    EXPECT_TRUE(inv->ListMigrations({.vm = kVm, .limit = 10}).value().empty());
  }

  // Waits for the agent's log to say `needle` (log lines are written as the
  // refusal happens, maybe after the client gave up) and prints that line.
  void ExpectLogLine(AgentCluster& c, const std::string& host, const std::string& needle) {
    std::string log;
    EXPECT_TRUE(WaitUntil(
        [&] {
          log = FullLog(c, host);
          return log.find(needle) != std::string::npos;
        },
        seconds(10)))
        << "no '" << needle << "' in the log of " << host << ":\n" << c.AgentLog(host);
    std::size_t at = log.find(needle);
    if (at == std::string::npos) return;
    std::size_t begin = log.rfind('\n', at);
    std::size_t end = log.find('\n', at);
    std::printf("  agent: %s\n",
                log.substr(begin == std::string::npos ? 0 : begin + 1,
                           end == std::string::npos ? std::string::npos : end - begin - 1)
                    .c_str());
  }
};

TEST_F(TlsAgentTest, MutualCertificatesServeTheCliAndTheAgentLogsThePeer) {
  AgentCluster c;
  ASSERT_TRUE(c.StartAgent("h1").ok());
  const std::string out = ReadFileToString(c.root() + "/h1.out").value_or("");
  EXPECT_NE(out.find("TLS 1.3, mutual certificates (this end h1"), std::string::npos) << out;
  ASSERT_NO_FATAL_FAILURE(PlaceVm(c));
  // A request that changes something is logged with the peer's certificate name.
  auto r = c.Client("h1").Call("abort_in", {{"vm", kVm}, {"migration_id", 1}});
  ExpectLogLine(c, "h1", "abort_in from cli (tcp 127.0.0.1:");
  CliResult status = c.Cli({"agent", "status"});
  EXPECT_TRUE(status.ok()) << status.err;
  EXPECT_NE(status.out.find("h1"), std::string::npos);
}

TEST_F(TlsAgentTest, PeersWithoutValidCredentialsAreRefusedAndNothingStarts) {
  AgentCluster c;
  ASSERT_TRUE(c.StartAgent("h1").ok());
  ASSERT_NO_FATAL_FAILURE(PlaceVm(c));
  const std::string addr = c.Address("h1");

  // A certificate from another CA, from a client that knows the cluster's CA
  // certificate (it is public).
  const std::string rogue = c.root() + "/rogue-ca";
  ASSERT_TRUE(wire::CreateCa(rogue, "rogue-ca", 2).ok());
  ASSERT_TRUE(wire::IssueCertificate(rogue, "cli", 2, wire::PeerRole::kOperator).ok());
  auto rogue_tls = wire::TlsContext::FromCertificates(c.tls_dir() + "/ca.crt", rogue + "/cli.crt",
                                                      rogue + "/cli.key");
  ASSERT_TRUE(rogue_tls.has_value()) << rogue_tls.error().ToString();
  auto unknown = AgentClient(addr, seconds(10), *rogue_tls, "h1").StartVm(kVm);
  ASSERT_FALSE(unknown.has_value());
  std::printf("  client: %s\n", unknown.error().message().c_str());
  EXPECT_NE(unknown.error().message().find("unknown ca"), std::string::npos)
      << unknown.error().message();
  ExpectLogLine(c, "h1", "certificate verify failed (unable to get local issuer certificate)");

  // An expired certificate of the right CA.
  ASSERT_TRUE(
      wire::IssueCertificate(c.tls_dir(), "old-operator", -1, wire::PeerRole::kOperator).ok());
  auto old_tls = wire::TlsContext::FromDirectory(c.tls_dir(), "old-operator");
  ASSERT_TRUE(old_tls.has_value());
  auto expired = AgentClient(addr, seconds(10), *old_tls, "h1").StartVm(kVm);
  ASSERT_FALSE(expired.has_value());
  std::printf("  client: %s\n", expired.error().message().c_str());
  EXPECT_NE(expired.error().message().find("certificate expired"), std::string::npos)
      << expired.error().message();
  ExpectLogLine(c, "h1", "certificate verify failed (certificate has expired)");

  // A plaintext CLI: it learns why in its own framing.
  CliResult plain;
  {
    SubprocessOptions o;
    o.argv = {testing::EscdrBinary(), "--db", c.db(), "--state-dir", c.root() + "/cli-plain",
              "--insecure", "vm", "start", kVm};
    o.stdout_path = c.root() + "/plain.out";
    o.stderr_path = c.root() + "/plain.err";
    auto p = Subprocess::Spawn(o).value();
    auto st = p.WaitFor(seconds(60));
    ASSERT_TRUE(st.has_value());
    plain.exit = *st;
    plain.err = ReadFileToString(o.stderr_path).value_or("");
  }
  EXPECT_FALSE(plain.ok());
  std::printf("  client: %s", plain.err.c_str());
  EXPECT_NE(plain.err.find("accepts only TLS connections"), std::string::npos) << plain.err;
  ExpectLogLine(c, "h1", "refused a plaintext connection from tcp 127.0.0.1:");

  // A client that expects another host at this address.
  auto wrong_host = AgentClient(addr, seconds(10), c.client_tls(), "h2").Ping();
  ASSERT_FALSE(wrong_host.has_value());
  EXPECT_NE(wrong_host.error().message().find("hostname mismatch"), std::string::npos)
      << wrong_host.error().message();

  ExpectNothingStarted(c);
  // One line per refusal.
  EXPECT_EQ(CountLines(FullLog(c, "h1"), "certificate has expired"), 1);
}

TEST_F(TlsAgentTest, TlsClientAgainstPlaintextAgentIsRefused) {
  AgentCluster c(Channel::kInsecure);
  ASSERT_TRUE(c.StartAgent("h1").ok());
  const std::string out = ReadFileToString(c.root() + "/h1.out").value_or("");
  EXPECT_NE(out.find("PLAINTEXT"), std::string::npos) << out;
  ASSERT_NO_FATAL_FAILURE(PlaceVm(c));
  const std::string ca = c.root() + "/ca";
  ASSERT_TRUE(wire::CreateCa(ca, "other-ca", 2).ok());
  ASSERT_TRUE(wire::IssueCertificate(ca, "cli", 2, wire::PeerRole::kOperator).ok());
  auto tls = wire::TlsContext::FromDirectory(ca, "cli").value();
  auto r = AgentClient(c.Address("h1"), seconds(10), tls, "h1").StartVm(kVm);
  ASSERT_FALSE(r.has_value());
  std::printf("  client: %s\n", r.error().message().c_str());
  EXPECT_NE(r.error().message().find("--insecure"), std::string::npos) << r.error().message();
  ExpectLogLine(c, "h1", "refused a TLS connection from tcp 127.0.0.1:");
  ExpectNothingStarted(c);
}

TEST_F(TlsAgentTest, PreSharedKeyServesAndAWrongKeyIsRefused) {
  AgentCluster c(Channel::kPsk);
  ASSERT_TRUE(c.StartAgent("h1").ok());
  ASSERT_NO_FATAL_FAILURE(PlaceVm(c));
  auto ping = c.Client("h1").Ping();
  ASSERT_TRUE(ping.has_value()) << ping.error().ToString();
  EXPECT_EQ(StringOr(*ping, "host"), "h1");

  const std::string other = c.root() + "/other.psk";
  ASSERT_TRUE(wire::WritePskFile(other).ok());
  auto wrong = AgentClient(c.Address("h1"), seconds(10),
                           wire::TlsContext::FromPskFile(other).value(), "h1")
                   .StartVm(kVm);
  ASSERT_FALSE(wrong.has_value());
  std::printf("  client: %s\n", wrong.error().message().c_str());
  EXPECT_NE(wrong.error().message().find("same pre-shared key"), std::string::npos)
      << wrong.error().message();
  ExpectLogLine(c, "h1", "binder does not verify");
  ExpectNothingStarted(c);
}

TEST_F(TlsAgentTest, AgentWithoutCredentialsDoesNotStart) {
  AgentCluster c;
  SubprocessOptions o;
  o.argv = {testing::EscdrBinary(), "--db", c.db(), "--state-dir", c.StateDir("h9"), "agent",
            "--name", "h9", "--listen", "127.0.0.1:0"};
  o.env = {{"ESCDR_TLS_DIR", ""}, {"ESCDR_PSK_FILE", ""}, {"ESCDR_INSECURE", ""}};
  o.stderr_path = c.root() + "/h9.err";
  auto p = Subprocess::Spawn(o).value();
  auto st = p.WaitFor(seconds(60));
  ASSERT_TRUE(st.has_value());
  EXPECT_FALSE(st->success());
  const std::string err = ReadFileToString(o.stderr_path).value_or("");
  std::printf("  %s", err.c_str());
  for (const char* flag : {"--tls-dir", "--psk-file", "--insecure"}) {
    EXPECT_NE(err.find(flag), std::string::npos) << err;
  }
  EXPECT_FALSE(c.OpenInventory().value()->GetHost("h9").has_value());
}

TEST_F(TlsAgentTest, SilentPeerDoesNotHoldTheAgent) {
  AgentCluster c;
  ASSERT_TRUE(c.StartAgent("h1").ok());
  auto hp = ParseAgentAddress(c.Address("h1")).value();
  auto silent = wire::ConnectTcp(hp.first, hp.second, Deadline::After(seconds(10))).value();
  const auto start = std::chrono::steady_clock::now();
  auto ping = c.Client("h1").Ping();
  ASSERT_TRUE(ping.has_value()) << ping.error().ToString();
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));
  // After its deadline the agent closes it.
  std::uint8_t b;
  auto r = silent->ReadSome(std::span<std::uint8_t>(&b, 1), Deadline::After(seconds(30)));
  EXPECT_TRUE(r.has_value() && *r == 0) << (r.has_value() ? "data" : r.error().ToString());
  ExpectLogLine(c, "h1", "it sent nothing for 3000 ms");
}

}  // namespace
}  // namespace escdr::agent
