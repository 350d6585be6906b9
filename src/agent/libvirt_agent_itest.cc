// escdr agents on two libvirt hosts (docs/libvirt.md): adoption of libvirt's
// domains, `virsh migrate --p2p --migrateuri unix://...` and `escdr migrate`
// carried by the agents with pages elided, RAM byte-identical, and a killed
// agent that leaves the domain running on its source.
//
// Two libvirtd (with virtlogd) run in mount namespaces of their own
// (testing/libvirt_hosts.h); each escdr agent runs inside its host's
// namespace (nsenter), so that it sees that host's /run/libvirt and
// /run/escdr/migrate as a real host's agent would.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "agent/agent_cluster_testing.h"
#include "escdr/image/memory_image.h"
#include "escdr/libvirt/libvirt_host.h"
#include "escdr/qemu/ram_map.h"
#include "escdr/sys/subprocess.h"
#include "testing/guest_services.h"
#include "testing/libvirt_hosts.h"
#include "testing/test_guest.h"

namespace escdr::agent {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::AgentCluster;
using testing::CliResult;
using testing::WaitUntil;
using escdr::testing::LibvirtGuestOptions;
using escdr::testing::LibvirtTestHost;

// The guest RAM of `domain` on `host`, read as the agents read donors.
Result<std::unique_ptr<MemoryImage>> DomainRam(LibvirtTestHost& host, const std::string& domain) {
  ESCDR_ASSIGN_OR_RETURN(auto conn, host.Connect());
  ESCDR_ASSIGN_OR_RETURN(libvirt::DomainInfo d, conn->GetDomain(domain));
  if (d.pid <= 0) return Err(Status::NotFound("no QEMU pid for " + domain));
  ESCDR_ASSIGN_OR_RETURN(RamMapping ram, QueryMainRam([&](const std::string& cmd) {
                           return conn->MonitorHmp(domain, cmd);
                         }));
  return ReadProcessRam(d.pid, {ram});
}

// A domain libvirt no longer runs on a host: gone (transient) or only
// defined (persistent, "shutoff").
bool Inactive(const std::string& state) { return state == "absent" || state == "shutoff"; }

// "" if both images hold the same bytes.
std::string Compare(const MemoryImage& a, const MemoryImage& b) {
  if (a.blocks().size() != 1 || b.blocks().size() != 1) return "not one block each";
  const std::uint64_t len = a.blocks()[0].length;
  if (len != b.blocks()[0].length) return "the blocks differ in length";
  std::uint64_t differing = 0, first = 0;
  for (std::uint64_t off = 0; off < len; off += kPageSize) {
    if (std::memcmp(a.BlockData(0) + off, b.BlockData(0) + off, kPageSize) != 0) {
      if (differing++ == 0) first = off;
    }
  }
  return differing == 0 ? "" : fmt::format("{} pages differ, the first at {:#x}", differing, first);
}

Status WriteImage(const MemoryImage& image, const std::string& path) {
  return WriteStringToFile(path, std::string_view(reinterpret_cast<const char*>(image.BlockData(0)),
                                                  image.blocks()[0].length));
}

class LibvirtAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = escdr::testing::LibvirtAvailable(); !why.empty()) GTEST_SKIP() << why;
    root_ = TempDir::Create("escdr-lv").value();
    for (int i = 1; i <= 2; ++i) {
      const std::string name = fmt::format("h{}", i);
      auto h = LibvirtTestHost::Start(root_.path(), name, i);
      ASSERT_TRUE(h.has_value()) << h.error().ToString();
      hosts_[name] = std::move(*h);
    }
  }

  LibvirtTestHost& Host(const std::string& name) { return *hosts_.at(name); }

  void StartDomain(const std::string& host, const std::string& name) {
    LibvirtGuestOptions o;
    o.name = name;
    auto xml = escdr::testing::TestGuestDomainXml(o);
    ASSERT_TRUE(xml.has_value()) << xml.error().ToString();
    auto conn = Host(host).Connect();
    ASSERT_TRUE(conn.has_value()) << conn.error().ToString();
    Status s = (*conn)->DefineAndStart(*xml);
    ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << Host(host).DiagnosticTail(name);
  }

  // Whether `domain` runs (state "running") on `host`, in libvirt's view.
  std::string DomainState(const std::string& host, const std::string& domain) {
    auto conn = Host(host).Connect();
    if (!conn.has_value()) return conn.error().message();
    auto d = (*conn)->GetDomain(domain);
    if (!d.has_value()) return d.error().code() == StatusCode::kNotFound ? "absent" : d.error().message();
    return d->state;
  }

  // "" once the guest's counter on `host` goes past its current value; else
  // what its serial log and libvirt say.
  ::testing::AssertionResult Runs(const std::string& host, const std::string& domain) {
    const std::string log = Host(host).SerialLogPath(domain);
    if (testing::CounterAdvances(log, seconds(20))) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure()
           << domain << " on " << host << " does not count (state " << DomainState(host, domain)
           << "): " << SerialLogTail(log) << Host(host).DiagnosticTail(domain);
  }

  void StartAgent(AgentCluster& cluster, const std::string& host) {
    cluster.SetAgentPrefix(host, Host(host).NsEnterPrefix());
    cluster.SetAgentArgs(host, {"--libvirt", "qemu:///system", "--libvirt-peer-uri",
                                Host(host).p2p_uri()});
    Status s = cluster.StartAgent(host);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // Starts both hosts' agents and waits until they adopted the three domains
  // (web, d1, d2) into the inventory.
  void StartAgentsAndAdopt(AgentCluster& cluster) {
    StartAgent(cluster, "h1");
    StartAgent(cluster, "h2");
    auto inv = cluster.OpenInventory();
    ASSERT_TRUE(inv.has_value()) << inv.error().ToString();
    ASSERT_TRUE(WaitUntil([&] {
      auto vms = (*inv)->ListVms();
      return vms.has_value() && vms->size() == 3;
    }, seconds(30))) << cluster.AgentLog("h1") << cluster.AgentLog("h2");
  }

  // The catalog of debian 12 / qemu 7.2 from donors d1 (h1) and d2 (h2),
  // their RAM read as the agents read donors.
  void LearnCatalogFromDonors(AgentCluster& cluster) {
    auto r1 = DomainRam(Host("h1"), "d1");
    auto r2 = DomainRam(Host("h2"), "d2");
    ASSERT_TRUE(r1.has_value()) << r1.error().ToString();
    ASSERT_TRUE(r2.has_value()) << r2.error().ToString();
    ASSERT_TRUE(WriteImage(**r1, root_.File("d1.ram")).ok());
    ASSERT_TRUE(WriteImage(**r2, root_.File("d2.ram")).ok());
    CliResult learn = cluster.Cli({"catalog", "learn", "--os", "debian", "--os-version", "12",
                                   "--hypervisor", "qemu", "--hypervisor-version", "7.2",
                                   root_.File("d1.ram"), root_.File("d2.ram")});
    ASSERT_TRUE(learn.ok()) << learn.err;
  }

  CliResult Virsh(const std::string& host, std::vector<std::string> args) {
    SubprocessOptions o;
    o.argv = {"virsh", "-c", Host(host).uri()};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    o.stdout_path = root_.File("virsh.out");
    o.stderr_path = root_.File("virsh.err");
    return testing::RunProgram(o);
  }

  TempDir root_;
  std::map<std::string, std::unique_ptr<LibvirtTestHost>> hosts_;
};

TEST_F(LibvirtAgentTest, CarriesVirshAndEscdrMigrationsWithPagesElided) {
  // web and its donor d1 on h1, donor d2 on h2.
  StartDomain("h1", "web");
  StartDomain("h1", "d1");
  StartDomain("h2", "d2");
  for (auto [host, dom] : {std::pair{"h1", "web"}, {"h1", "d1"}, {"h2", "d2"}}) {
    const std::string log = Host(host).SerialLogPath(dom);
    ASSERT_TRUE(WaitUntil([&] { return testing::Counter(log) >= 2; }, seconds(180)))
        << dom << " did not boot: " << SerialLogTail(log) << Host(host).DiagnosticTail(dom);
  }

  AgentCluster cluster;
  // Adoption: every domain registered on its host with the kind from its XML.
  ASSERT_NO_FATAL_FAILURE(StartAgentsAndAdopt(cluster));
  auto inv = cluster.OpenInventory().value();
  const Vm web = inv->GetVm("web").value();
  EXPECT_EQ(web.host, "h1");
  EXPECT_EQ(web.state, VmState::kRunning);
  EXPECT_EQ(web.kind.os, "debian");
  EXPECT_EQ(web.kind.os_version, "12");
  EXPECT_EQ(web.kind.hypervisor_version, "7.2");
  EXPECT_EQ(inv->GetVm("d2").value().host, "h2");

  ASSERT_NO_FATAL_FAILURE(LearnCatalogFromDonors(cluster));

  // 1. virsh migrate of a paused guest, so both RAMs can be compared: the
  //    source's before (it is paused), the destination's after (libvirt
  //    keeps a migrated paused domain paused).
  ASSERT_TRUE(Virsh("h1", {"suspend", "web"}).ok());
  auto before = DomainRam(Host("h1"), "web");
  ASSERT_TRUE(before.has_value()) << before.error().ToString();
  CliResult mig = Virsh("h1", {"migrate", "--live", "--p2p", "web", Host("h2").p2p_uri(),
                               "--migrateuri", "unix:///run/escdr/migrate/web.sock"});
  ASSERT_TRUE(mig.ok()) << mig.err << "\nh1:\n" << cluster.AgentLog("h1") << "\nh2:\n"
                        << cluster.AgentLog("h2");
  EXPECT_TRUE(Inactive(DomainState("h1", "web"))) << DomainState("h1", "web");
  EXPECT_EQ(DomainState("h2", "web"), "paused");
  auto after = DomainRam(Host("h2"), "web");
  ASSERT_TRUE(after.has_value()) << after.error().ToString();
  EXPECT_EQ(Compare(**before, **after), "");
  // The inventory follows: web on h2, the migration logged with pages elided.
  ASSERT_TRUE(WaitUntil([&] { return inv->GetVm("web").value().host == "h2"; }, seconds(30)));
  auto migrations = inv->ListMigrations(MigrationFilter{"web", 10, false}).value();
  ASSERT_FALSE(migrations.empty());
  EXPECT_EQ(migrations[0].outcome, MigrationOutcome::kSucceeded);
  EXPECT_GT(migrations[0].figures.bytes_saved_position + migrations[0].figures.bytes_saved_content,
            0u) << "nothing elided: " << cluster.AgentLog("h2");
  EXPECT_LT(migrations[0].figures.bytes_on_wire, 256ull << 20);
  ASSERT_TRUE(Virsh("h2", {"resume", "web"}).ok());
  EXPECT_TRUE(Runs("h2", "web"));

  // 2. escdr migrate back to h1 (the only other host, with donor d1),
  //    through libvirt's API, the guest again paused so that both RAMs can
  //    be compared: QEMU 7.2 under TCG can lose guest writes while it
  //    migrates a RAM block of a whole number of 64-page groups, and libvirt
  //    sizes RAM in whole MiB (docs/libvirt.md, "Testing it"). The live
  //    migrations below fail on purpose.
  ASSERT_TRUE(Virsh("h2", {"suspend", "web"}).ok());
  before = DomainRam(Host("h2"), "web");
  ASSERT_TRUE(before.has_value()) << before.error().ToString();
  CliResult back = cluster.Cli({"migrate", "web", "--to", "h1"});
  ASSERT_TRUE(back.ok()) << back.err << "\nh1:\n" << cluster.AgentLog("h1") << "\nh2:\n"
                         << cluster.AgentLog("h2");
  EXPECT_EQ(DomainState("h1", "web"), "paused");
  EXPECT_TRUE(Inactive(DomainState("h2", "web"))) << DomainState("h2", "web");
  after = DomainRam(Host("h1"), "web");
  ASSERT_TRUE(after.has_value()) << after.error().ToString();
  EXPECT_EQ(Compare(**before, **after), "");
  EXPECT_EQ(inv->GetVm("web").value().host, "h1");
  ASSERT_TRUE(Virsh("h1", {"resume", "web"}).ok());
  EXPECT_TRUE(Runs("h1", "web"));

  // 3. Either agent killed mid-stream: libvirt's migration fails and web
  //    keeps running on h1; the inventory keeps it there.
  auto count = [](const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  };
  for (const std::string victim : {"h2", "h1"}) {
    SCOPED_TRACE("killing the agent of " + victim);
    const std::size_t scans = count(cluster.AgentLog("h2"), "donor d2 holds");
    auto slow = Subprocess::Spawn(SubprocessOptions{
        .argv = {"virsh", "-c", Host("h1").uri(), "migrate", "--live", "--p2p", "--bandwidth", "1",
                 "web", Host("h2").p2p_uri(), "--migrateuri", "unix:///run/escdr/migrate/web.sock"},
        .stdout_path = root_.File("slow.out"),
        .stderr_path = root_.File("slow.err")});
    ASSERT_TRUE(slow.has_value());
    ASSERT_TRUE(WaitUntil([&] { return count(cluster.AgentLog("h2"), "donor d2 holds") > scans; },
                          seconds(60)))
        << cluster.AgentLog("h2");
    std::this_thread::sleep_for(seconds(1));
    cluster.KillAgent(victim);
    auto st = slow->WaitFor(std::chrono::minutes(2));
    ASSERT_TRUE(st.has_value());
    EXPECT_FALSE(st->success()) << "the migration should have failed";
    EXPECT_NE(ReadFileToString(root_.File("slow.err")).value_or(""), "");
    EXPECT_TRUE(WaitUntil([&] { return DomainState("h1", "web") == "running"; }, seconds(30)));
    EXPECT_TRUE(Inactive(DomainState("h2", "web"))) << DomainState("h2", "web");
    EXPECT_TRUE(Runs("h1", "web"));
    StartAgent(cluster, victim);
    // The failure is recorded by the surviving source agent, or by the
    // restarted one: web stays on h1, running, with no migration open.
    EXPECT_TRUE(WaitUntil([&] {
      auto v = inv->GetVm("web");
      return v.has_value() && v->host == "h1" && v->state == VmState::kRunning;
    }, seconds(30))) << cluster.AgentLog("h1");
    auto open = inv->ListMigrations(MigrationFilter{"web", 10, true}).value();
    EXPECT_TRUE(open.empty());
  }
  EXPECT_NE(cluster.AgentLog("h1").find("keeps running on h1"), std::string::npos)
      << cluster.AgentLog("h1");
  // Figures, for docs/libvirt.md.
  const std::vector<Migration> all = inv->ListMigrations(MigrationFilter{"web", 10, false}).value();
  for (const Migration& m : all) {
    std::printf("migration %lld %s->%s %s: wire %llu, saved %llu+%llu, total %llu ms, %s\n",
                static_cast<long long>(m.id), m.source.c_str(), m.destination.c_str(),
                MigrationOutcomeName(m.outcome), static_cast<unsigned long long>(m.figures.bytes_on_wire),
                static_cast<unsigned long long>(m.figures.bytes_saved_position),
                static_cast<unsigned long long>(m.figures.bytes_saved_content),
                static_cast<unsigned long long>(m.figures.total_ms), m.figures.error.c_str());
  }
}

// By hand (ESCDR_LIBVIRT_DISTRO=1): real Debian 12 guests (tools/build-
// distro-guest.sh) as libvirt domains of another machine type and size than
// the CI test's (q35, 1 GiB, a virtio disk: a qcow2 overlay on storage both
// hosts see, KASLR on), with a root shell on a per-host console socket.
// web moves h1 -> h2 paused (RAM compared byte for byte) and back live,
// both with virsh migrate --unsafe (libvirt sees the overlays on a local
// filesystem; both "hosts" are one machine, so the storage is shared in
// fact); after each move nginx and redis-server are active and web writes
// its disk. Then libvirt's own transport moves it once more, for comparison.
TEST_F(LibvirtAgentTest, DebianGuestsMoveWithTheirServices) {
  if (std::getenv("ESCDR_LIBVIRT_DISTRO") == nullptr) GTEST_SKIP() << "set ESCDR_LIBVIRT_DISTRO=1";
  auto distro = escdr::testing::EnsureDistroGuest("debian-12");
  ASSERT_TRUE(distro.has_value()) << distro.error().ToString();
  const std::string cmdline = [&] {
    std::string c = ReadFileToString(distro->cmdline).value_or("root=/dev/vda2 rw console=ttyS0");
    while (!c.empty() && (c.back() == '\n' || c.back() == ' ')) c.pop_back();
    return c;
  }();
  auto define = [&](const std::string& host, const std::string& name) {
    const std::string overlay = root_.File(name + ".qcow2");
    SubprocessOptions o;
    o.argv = {"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", distro->disk, overlay};
    auto p = Subprocess::Spawn(o);
    ASSERT_TRUE(p.has_value());
    ASSERT_TRUE(p->Wait().value().success());
    const std::string xml = fmt::format(R"(<domain type='qemu'>
  <name>{0}</name>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{1}</kernel>
    <initrd>{2}</initrd>
    <cmdline>{3}</cmdline>
  </os>
  <features><acpi/></features>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='{4}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/{0}-serial.log' append='on'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='/var/log/libvirt/qemu/{0}.console'/>
      <target port='1'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>)", name, distro->kernel, distro->initrd, cmdline, overlay);
    auto conn = Host(host).Connect();
    ASSERT_TRUE(conn.has_value());
    Status s = (*conn)->DefineAndStart(xml);
    ASSERT_TRUE(s.ok()) << s.ToString() << Host(host).DiagnosticTail(name);
  };
  define("h1", "web");
  define("h1", "d1");
  define("h2", "d2");
  auto console = [&](const std::string& host, const std::string& name) {
    return Host(host).dir() + "/log/qemu/" + name + ".console";
  };
  auto services = [&](const std::string& host) -> std::string {
    auto shell = escdr::testing::ConsoleShell::Connect(console(host, "web"), std::chrono::minutes(4));
    if (!shell.has_value()) return shell.error().ToString();
    auto out = shell->RunChecked(
        "systemctl is-active nginx redis-server && dd if=/dev/urandom of=/root/w bs=1M count=4 "
        "conv=fsync status=none && sha256sum /root/w | cut -c1-16",
        std::chrono::seconds(60));
    return out.has_value() ? "" : out.error().ToString();
  };
  for (const auto& [host, dom] : {std::pair{"h1", "web"}, {"h1", "d1"}, {"h2", "d2"}}) {
    auto shell = escdr::testing::ConsoleShell::Connect(console(host, dom), std::chrono::minutes(6));
    ASSERT_TRUE(shell.has_value()) << dom << ": " << shell.error().ToString();
  }
  ASSERT_EQ(services("h1"), "");

  AgentCluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartAgentsAndAdopt(cluster));
  auto inv = cluster.OpenInventory().value();
  ASSERT_NO_FATAL_FAILURE(LearnCatalogFromDonors(cluster));

  ASSERT_TRUE(Virsh("h1", {"suspend", "web"}).ok());
  auto before = DomainRam(Host("h1"), "web");
  ASSERT_TRUE(before.has_value());
  auto start = MonotonicClock::now();
  CliResult mig = Virsh("h1", {"migrate", "--live", "--p2p", "--unsafe", "web", Host("h2").p2p_uri(),
                               "--migrateuri", "unix:///run/escdr/migrate/web.sock"});
  const double there_s = SecondsSince(start);
  ASSERT_TRUE(mig.ok()) << mig.err << cluster.AgentLog("h1") << cluster.AgentLog("h2");
  auto after = DomainRam(Host("h2"), "web");
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(Compare(**before, **after), "");
  ASSERT_TRUE(Virsh("h2", {"resume", "web"}).ok());
  EXPECT_EQ(services("h2"), "");

  start = MonotonicClock::now();
  CliResult back = Virsh("h2", {"migrate", "--live", "--p2p", "--unsafe", "web", Host("h1").p2p_uri(),
                                "--migrateuri", "unix:///run/escdr/migrate/web.sock"});
  const double back_s = SecondsSince(start);
  ASSERT_TRUE(back.ok()) << back.err << cluster.AgentLog("h1") << cluster.AgentLog("h2");
  EXPECT_EQ(DomainState("h1", "web"), "running");
  EXPECT_EQ(services("h1"), "");
  const std::vector<Migration> all = inv->ListMigrations(MigrationFilter{"web", 10, false}).value();
  for (const Migration& m : all) {
    std::printf("migration %s->%s %s: wire %.1f MiB, saved %.1f MiB by position + %.1f by content, "
                "%llu ms\n",
                m.source.c_str(), m.destination.c_str(), MigrationOutcomeName(m.outcome),
                m.figures.bytes_on_wire / 1048576.0, m.figures.bytes_saved_position / 1048576.0,
                m.figures.bytes_saved_content / 1048576.0,
                static_cast<unsigned long long>(m.figures.total_ms));
  }
  std::printf("through escdr: paused %.1f s, live %.1f s\n", there_s, back_s);
  // libvirt on its own, for comparison: the same guest back to h2 and to h1.
  start = MonotonicClock::now();
  CliResult plain = Virsh("h1", {"migrate", "--live", "--p2p", "--unsafe", "web", Host("h2").p2p_uri()});
  ASSERT_TRUE(plain.ok()) << plain.err;
  std::printf("libvirt plain, live: %.1f s\n", SecondsSince(start));
  CliResult info = Virsh("h2", {"domjobinfo", "web", "--completed"});
  std::printf("libvirt plain:\n%s\n", info.out.c_str());
}

// By hand (ESCDR_LIBVIRT_BENCH=1): the same idle 256 MiB guest moved live
// between the two hosts by libvirt's own transport (TCP), by libvirt with
// multifd and zstd, and through escdr's agents; bytes as libvirt or escdr
// count them, and the wall time of `virsh migrate`. Figures in docs/libvirt.md.
TEST_F(LibvirtAgentTest, ComparesWithLibvirtsOwnMigrations) {
  if (std::getenv("ESCDR_LIBVIRT_BENCH") == nullptr) GTEST_SKIP() << "set ESCDR_LIBVIRT_BENCH=1";
  const int rounds = 3;
  StartDomain("h1", "web");
  StartDomain("h1", "d1");
  StartDomain("h2", "d2");
  for (auto [host, dom] : {std::pair{"h1", "web"}, {"h1", "d1"}, {"h2", "d2"}}) {
    ASSERT_TRUE(WaitUntil([&, h = std::string(host), d = std::string(dom)] {
      return testing::Counter(Host(h).SerialLogPath(d)) >= 2;
    }, seconds(180)));
  }
  AgentCluster cluster;
  ASSERT_NO_FATAL_FAILURE(StartAgentsAndAdopt(cluster));
  auto inv = cluster.OpenInventory().value();
  ASSERT_NO_FATAL_FAILURE(LearnCatalogFromDonors(cluster));
  struct Variant {
    const char* name;
    std::vector<std::string> args;
  };
  const std::vector<Variant> variants = {
      {"libvirt, plain (TCP)", {}},
      {"libvirt, multifd + zstd", {"--parallel", "--parallel-connections", "2", "--compressed",
                                   "--comp-methods", "zstd"}},
      {"escdr", {"--migrateuri", "unix:///run/escdr/migrate/web.sock"}},
  };
  std::string at = "h1";
  for (const Variant& v : variants) {
    for (int i = 0; i < rounds; ++i) {
      const std::string to = at == "h1" ? "h2" : "h1";
      std::vector<std::string> args = {"migrate", "--live", "--p2p", "web", Host(to).p2p_uri()};
      args.insert(args.end(), v.args.begin(), v.args.end());
      const auto start = MonotonicClock::now();
      CliResult r = Virsh(at, args);
      const double secs = SecondsSince(start);
      if (!r.ok()) {
        std::printf("%-26s %s->%s: FAILED: %s\n", v.name, at.c_str(), to.c_str(), r.err.c_str());
        break;
      }
      std::string bytes;
      if (std::string(v.name) == "escdr") {
        ASSERT_TRUE(WaitUntil([&] { return inv->GetVm("web").value().host == to; }, seconds(30)));
        const auto ms = inv->ListMigrations(MigrationFilter{"web", 1, false}).value();
        bytes = fmt::format("wire {:.1f} MiB", ms[0].figures.bytes_on_wire / 1048576.0);
      } else {
        CliResult info = Virsh(to, {"domjobinfo", "web", "--completed"});
        for (const char* key : {"Data processed:", "Memory processed:"}) {
          if (auto p = info.out.find(key); p != std::string::npos) {
            bytes += info.out.substr(p, info.out.find('\n', p) - p) + "; ";
          }
        }
      }
      std::printf("%-26s %s->%s: %.2f s, %s\n", v.name, at.c_str(), to.c_str(), secs, bytes.c_str());
      std::fflush(stdout);
      at = to;
    }
  }
}

}  // namespace
}  // namespace escdr::agent
