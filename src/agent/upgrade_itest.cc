// Hosts of two QEMU versions, as while a cloud upgrades (docs/qemu-versions.md),
// through the real `escdr` binary, real agents and real guests: h1 runs only
// the host's QEMU 7.2, h2 runs 7.2 and the 10.0 tree of tools/install-qemu.sh.
//
//   * An upgrade migration: a VM of kind qemu 7.2 on h1 moves live to QEMU
//     10.0 on h2, with a donor of its kind (a 7.2 guest on h2) filling in its
//     static pages; the destination runs the source's machine type
//     (pc-i440fx-7.2, what "pc" meant when it started), holds the stopped
//     source's RAM byte for byte, and the guest runs on. The VM keeps its
//     kind; the inventory records that it now runs on 10.0.
//   * What cannot work is refused with its reason, and the VM keeps running
//     where it was: a host without the VM's QEMU (vm create, migrate), a
//     downgrade 10.0 -> 7.2, and a machine type the destination QEMU lacks.
//
// Skipped when the QEMU 10.0 tree is absent ($ESCDR_QEMU10_DIR, default
// /var/lib/escdr/qemu-10.0); CI installs it.
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/agent_cluster_testing.h"
#include "agent/json_util.h"

namespace escdr::agent {
namespace {

using nlohmann::json;
using std::chrono::seconds;
using testing::AgentCluster;
using testing::CliResult;
using testing::CompareRamFiles;
using testing::CounterAdvances;
using testing::WaitUntil;

const VmKind kKind72{"debian", "12", "qemu", "7.2"};

class UpgradeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    qemu10_ = testing::Qemu10Dir();
    if (qemu10_.empty()) GTEST_SKIP() << "no QEMU 10.0 tree (tools/install-qemu.sh)";
    auto guest = escdr::testing::EnsureGuestBuilt();
    ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
    guest_ = *guest;
    cluster_.SetAgentArgs("h1", {"--qemu", "qemu-system-x86_64"});
    cluster_.SetAgentArgs("h2", {"--qemu", "qemu-system-x86_64", "--qemu", qemu10_});
    cluster_.SetAgentArgs("h3", {"--qemu", "qemu-system-x86_64"});
    for (const char* h : {"h1", "h2"}) {
      Status s = cluster_.StartAgent(h);
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
  }

  CliResult Create(const std::string& vm, const std::string& host, const std::string& series,
                   const std::string& machine = "pc") {
    return cluster_.Cli({"--json", "vm", "create", vm, "--host", host, "--os", "debian",
                         "--os-version", "12", "--hypervisor-version", series, "--memory", "256",
                         "--machine", machine, "--kernel", guest_ + "/vmlinuz", "--initrd",
                         guest_ + "/initrd.img", "--append", "console=ttyS0 quiet nokaslr"});
  }

  // Creates `vm` on `host` and waits until its guest counts.
  void CreateAndBoot(const std::string& vm, const std::string& host, const std::string& series,
                     const std::string& machine = "pc") {
    CliResult r = Create(vm, host, series, machine);
    ASSERT_TRUE(r.ok()) << r.err;
    auto info = cluster_.FindVm(host, vm);
    ASSERT_TRUE(info.has_value()) << vm;
    ASSERT_TRUE(WaitUntil([&] { return testing::Counter(info->serial_log) >= 3; }, seconds(300)))
        << vm << " did not boot: " << SerialLogTail(info->serial_log);
  }

  const VmRecord* Record(const std::string& host, const std::string& vm, VmRole role) {
    records_ = cluster_.Records(host);
    for (const VmRecord& r : records_) {
      if (r.name == vm && r.role == role) return &r;
    }
    return nullptr;
  }

  Vm InventoryVm(const std::string& name) {
    return cluster_.OpenInventory().value()->GetVm(name).value();
  }

  // The VM still runs on `host`, and the inventory says so.
  void ExpectStillRunsOn(const std::string& vm, const std::string& host) {
    const Vm v = InventoryVm(vm);
    EXPECT_EQ(v.host, host);
    EXPECT_EQ(v.state, VmState::kRunning);
    auto info = cluster_.FindVm(host, vm);
    ASSERT_TRUE(info.has_value()) << vm;
    EXPECT_EQ(info->run_state, "running");
    EXPECT_TRUE(CounterAdvances(info->serial_log)) << SerialLogTail(info->serial_log);
  }

  AgentCluster cluster_;
  std::string qemu10_, guest_;
  std::vector<VmRecord> records_;
};

TEST_F(UpgradeTest, MigratesA72VmLiveTo100WithADonorByteExact) {
  ASSERT_NO_FATAL_FAILURE(CreateAndBoot("up-1", "h1", "7.2"));
  ASSERT_NO_FATAL_FAILURE(CreateAndBoot("up-2", "h1", "7.2"));
  ASSERT_NO_FATAL_FAILURE(CreateAndBoot("up-3", "h2", "7.2"));  // the donor on h2
  // The machine type is recorded as what "pc" meant to the QEMU that started it.
  EXPECT_EQ(json::parse(InventoryVm("up-1").launch_spec).value("machine", ""), "pc-i440fx-7.2");
  CliResult r = cluster_.Cli({"catalog", "learn", "--from-vm", "up-2", "--from-vm", "up-3"});
  ASSERT_TRUE(r.ok()) << r.err;

  // `host list` shows what each host's agent found.
  r = cluster_.Cli({"--json", "host", "list"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_NE(r.out.find("\"10.0."), std::string::npos) << r.out;

  r = cluster_.Cli({"--json", "migrate", "up-1", "--to", "h2", "--qemu-version", "10.0",
                    "--keep-paused", "--keep-source"});
  ASSERT_TRUE(r.ok()) << r.err << cluster_.AgentLog("h2");
  const json out = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(out.is_object()) << r.out;
  const MigrationReport rep = MigrationReportFromJson(out["report"]);
  std::printf("  7.2 -> 10.0: %s\n", rep.Summary().c_str());
  EXPECT_EQ(StringOr(out, "donor"), "up-3");
  EXPECT_GT(rep.pages_from_donor, 1000u);
  EXPECT_EQ(rep.rebuilt_bytes, rep.stream_bytes);

  // The destination is QEMU 10.0 running the source's machine type.
  const VmRecord* dest = Record("h2", "up-1", VmRole::kRunning);
  ASSERT_NE(dest, nullptr);
  EXPECT_EQ(dest->spec.qemu_version, "10.0");
  EXPECT_EQ(dest->spec.machine, "pc-i440fx-7.2");
  const std::string cmdline =
      ReadFileToString(fmt::format("/proc/{}/cmdline", dest->pid)).value_or("");
  EXPECT_NE(cmdline.find(qemu10_ + "/usr/bin/qemu-system-x86_64"), std::string::npos);
  const std::string dest_ram = dest->spec.ram_path;

  // Byte for byte the stopped source's RAM.
  const VmRecord* src = Record("h1", "up-1", VmRole::kMigrated);
  ASSERT_NE(src, nullptr);
  EXPECT_EQ(CompareRamFiles(src->spec.ram_path, dest_ram), "");

  // The VM keeps its kind (its RAM still holds what 7.2 put there); the
  // inventory knows it runs on 10.0 now, and so does the migration log.
  const Vm moved = InventoryVm("up-1");
  EXPECT_EQ(moved.host, "h2");
  EXPECT_EQ(moved.kind, kKind72);
  EXPECT_EQ(moved.qemu_version, "10.0");
  auto inv = cluster_.OpenInventory().value();
  const Migration m = inv->GetMigration(out["migration_id"].get<std::int64_t>()).value();
  EXPECT_EQ(m.qemu_version, "10.0");
  EXPECT_EQ(m.outcome, MigrationOutcome::kSucceeded);

  // Resumed, the guest counts on.
  r = cluster_.Cli({"vm", "start", "up-1"});
  ASSERT_TRUE(r.ok()) << r.err;
  auto info = cluster_.FindVm("h2", "up-1");
  ASSERT_TRUE(info.has_value());
  EXPECT_TRUE(CounterAdvances(info->serial_log)) << SerialLogTail(info->serial_log);
  r = cluster_.Cli({"vm", "stop", "up-1", "--host", "h1"});
  ASSERT_TRUE(r.ok()) << r.err;

  // Now on 10.0 it cannot go back to a host that has only 7.2, nor down to
  // 7.2 on a host that has both; it keeps running on h2.
  r = cluster_.Cli({"migrate", "up-1", "--to", "h1"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.err.find("10.0"), std::string::npos) << r.err;
  ASSERT_TRUE(cluster_.StartAgent("h3").ok());  // 7.2 only
  r = cluster_.Cli({"migrate", "up-1", "--qemu-version", "7.2"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.err.find("7.2"), std::string::npos) << r.err;
  ExpectStillRunsOn("up-1", "h2");
}

TEST_F(UpgradeTest, RefusesWhatCannotWorkAndKeepsTheVmRunning) {
  // A host without the QEMU a VM needs does not get it.
  CliResult r = Create("up-new", "h1", "10.0");
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.err.find("10.0"), std::string::npos) << r.err;
  EXPECT_FALSE(cluster_.OpenInventory().value()->GetVm("up-new").has_value());

  // A machine type QEMU 10.0 no longer has (7.2 still runs pc-i440fx-2.0):
  // the destination refuses before it starts a QEMU, the source runs on.
  ASSERT_NO_FATAL_FAILURE(CreateAndBoot("up-old", "h1", "7.2", "pc-i440fx-2.0"));
  r = cluster_.Cli({"migrate", "up-old", "--to", "h2", "--qemu-version", "10.0"});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.err.find("pc-i440fx-2.0"), std::string::npos) << r.err;
  EXPECT_EQ(Record("h2", "up-old", VmRole::kIncoming), nullptr);
  ExpectStillRunsOn("up-old", "h1");

  // A VM of kind 10.0 runs on h2's 10.0 and cannot be moved down to 7.2.
  ASSERT_NO_FATAL_FAILURE(CreateAndBoot("up-ten", "h2", "10.0"));
  const VmRecord* ten = Record("h2", "up-ten", VmRole::kRunning);
  ASSERT_NE(ten, nullptr);
  EXPECT_EQ(ten->spec.machine, "pc-i440fx-10.0");
  r = cluster_.Cli({"migrate", "up-ten", "--to", "h1"});
  EXPECT_FALSE(r.ok());
  r = cluster_.Cli({"migrate", "up-ten", "--qemu-version", "7.2"});
  EXPECT_FALSE(r.ok());
  ExpectStillRunsOn("up-ten", "h2");
}

}  // namespace
}  // namespace escdr::agent
