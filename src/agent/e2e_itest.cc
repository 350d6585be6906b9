// The acceptance test: what an operator does, through the real `escdr`
// binary, with real agents and real QEMU guests. Three agents (h1, h2, h3),
// four idle guests of one kind placed by the spread policy, the catalog
// learned from three running guests (`catalog learn --from-vm`), and a guest
// that shares its host migrated to a host placement chooses (one with a
// donor) and back. Each move must rebuild the guest byte for byte, keep it
// running, and send at most 35 % of the bytes QEMU wrote.
//
// Also here, to share the running guests: the refusals of
// `catalog learn --from-vm`.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
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

// The QEMU series the guests run on: $ESCDR_E2E_QEMU, "7.2" (the host's)
// by default; "10.0" needs tools/install-qemu.sh's tree (CTest runs the
// byte-exact migration once more that way: e2e_itest's qemu10. tests).
std::string E2eSeries() {
  const char* env = std::getenv("ESCDR_E2E_QEMU");
  return env && *env ? env : "7.2";
}
const VmKind kKind{"debian", "12", "qemu", E2eSeries()};
const char* const kHosts[] = {"h1", "h2", "h3"};
const char* const kVms[] = {"e2e-1", "e2e-2", "e2e-3", "e2e-4"};
// The acceptance bound: bytes on the wire, both directions, over the bytes
// QEMU wrote.
constexpr double kMaxWireShare = 0.35;

class E2eTest : public ::testing::Test {
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
    const std::string qemu10 = testing::Qemu10Dir();
    if (kKind.hypervisor_version == "10.0" && qemu10.empty()) {
      return Status::FailedPrecondition(
          "ESCDR_E2E_QEMU=10.0 but no QEMU 10.0 tree (run tools/install-qemu.sh)");
    }
    for (const char* h : kHosts) {
      if (!qemu10.empty()) cluster_->SetAgentArgs(h, {"--qemu", "qemu-system-x86_64", "--qemu", qemu10});
      ESCDR_RETURN_IF_ERROR(cluster_->StartAgent(h));
    }
    ESCDR_ASSIGN_OR_RETURN(std::string guest, escdr::testing::EnsureGuestBuilt());
    // No --host: the spread policy places them.
    for (const char* vm : kVms) {
      CliResult r = cluster_->Cli({"--json", "vm", "create", vm, "--os", kKind.os, "--os-version",
                                   kKind.os_version, "--hypervisor-version",
                                   kKind.hypervisor_version, "--memory", "256", "--kernel",
                                   guest + "/vmlinuz", "--initrd", guest + "/initrd.img",
                                   "--append", "console=ttyS0 quiet nokaslr"});
      if (!r.ok()) return Status::Internal(fmt::format("vm create {}: {}", vm, r.err));
      const std::string host = StringOr(json::parse(r.out, nullptr, false), "host");
      if (host.empty()) return Status::Internal(fmt::format("vm create {} printed {}", vm, r.out));
      placed_[vm] = host;
    }
    for (const auto& [vm, host] : placed_) {
      auto info = cluster_->FindVm(host, vm);
      if (!info) return Status::Internal(fmt::format("{} not listed by {}", vm, host));
      if (!WaitUntil([&] { return testing::Counter(info->serial_log) >= 3; }, seconds(300))) {
        return Status::Timeout(fmt::format("{} did not boot: {}", vm, SerialLogTail(info->serial_log)));
      }
    }
    // The migrating VM: one that shares its host with another of the kind
    // (its partner, the donor when it comes back).
    for (const auto& [vm, host] : placed_) {
      for (const auto& [other, other_host] : placed_) {
        if (other != vm && other_host == host && mover_.empty()) {
          mover_ = vm;
          partner_ = other;
        }
      }
    }
    if (mover_.empty()) return Status::Internal("no two guests share a host");
    // The catalog, learned from the three other running guests (not from the
    // one that migrates), with no kind flags: the kind is the VMs'.
    std::vector<std::string> learn = {"--json", "catalog", "learn"};
    for (const auto& [vm, host] : placed_) {
      if (vm != mover_) learn.insert(learn.end(), {"--from-vm", vm});
    }
    CliResult learned = cluster_->Cli(learn);
    if (!learned.ok()) {
      return Status::Internal(fmt::format("catalog learn --from-vm ended with {}: {}",
                                          learned.exit.ToString(), learned.err));
    }
    learn_out_ = json::parse(learned.out, nullptr, false);
    return Status::OK();
  }

  static Vm InventoryVm(const std::string& name) {
    return cluster_->OpenInventory().value()->GetVm(name).value();
  }

  // The RAM file of the source QEMU that `migrate --keep-source` kept on `host`.
  static std::string KeptSourceRam(const std::string& host, const std::string& vm) {
    for (const VmRecord& rec : cluster_->Records(host)) {
      if (rec.name == vm && rec.role == VmRole::kMigrated) return rec.spec.ram_path;
    }
    return "";
  }

  struct Moved {
    std::string destination;
    std::string donor;
    MigrationReport report;
  };

  // Migrates mover_ from `src` (to `to`, or where placement chooses when
  // empty) with the destination kept paused and the source kept, and checks
  // everything the acceptance test promises: the destination RAM equals the
  // stopped source's, the inventory moved the VM and logged the figures, the
  // wire carried at most kMaxWireShare of QEMU's bytes, and the resumed
  // guest counts on. Stops the kept source at the end.
  static void MigrateAndVerify(const std::string& src, const std::string& to, Moved* moved) {
    std::vector<std::string> args = {"--json", "migrate", mover_, "--keep-paused", "--keep-source"};
    if (!to.empty()) args.insert(args.end(), {"--to", to});
    CliResult r = cluster_->Cli(args);
    ASSERT_TRUE(r.ok()) << r.err << cluster_->AgentLog(src);
    const json out = json::parse(r.out, nullptr, false);
    ASSERT_TRUE(out.is_object()) << r.out;
    const MigrationReport rep = MigrationReportFromJson(out["report"]);
    const std::string dst = StringOr(out, "destination");
    const std::string donor = StringOr(out, "donor");
    moved->destination = dst;
    moved->donor = donor;
    moved->report = rep;
    EXPECT_EQ(StringOr(out, "source"), src);
    if (!to.empty()) {
      EXPECT_EQ(dst, to);
    }
    ASSERT_NE(dst, src);
    // The donor is a running VM of the kind on the destination.
    ASSERT_FALSE(donor.empty()) << r.out;
    const Vm donor_vm = InventoryVm(donor);
    EXPECT_EQ(donor_vm.host, dst);
    EXPECT_EQ(donor_vm.kind, kKind);
    EXPECT_EQ(donor_vm.state, VmState::kRunning);
    EXPECT_GT(rep.pages_from_donor, 1000u);
    EXPECT_EQ(rep.rebuilt_bytes, rep.stream_bytes);

    // (c) The wire, both directions, against the bytes QEMU wrote.
    const std::uint64_t wire = rep.wire_bytes_sent + rep.wire_bytes_received;
    const double share = static_cast<double>(wire) / static_cast<double>(rep.stream_bytes);
    std::printf("  %s -> %s (donor %s): wire %llu B (sent %llu + received %llu) / stream %llu B = %.4f\n"
                "    %s\n",
                src.c_str(), dst.c_str(), donor.c_str(), static_cast<unsigned long long>(wire),
                static_cast<unsigned long long>(rep.wire_bytes_sent),
                static_cast<unsigned long long>(rep.wire_bytes_received),
                static_cast<unsigned long long>(rep.stream_bytes), share, rep.Summary().c_str());
    RecordProperty(fmt::format("wire_share_{}_to_{}", src, dst), fmt::format("{:.4f}", share));
    EXPECT_GT(rep.stream_bytes, 0u);
    EXPECT_LE(static_cast<double>(wire), kMaxWireShare * static_cast<double>(rep.stream_bytes))
        << "wire/stream = " << share;

    // (a) The paused destination holds exactly the stopped source's RAM.
    const std::string src_ram = KeptSourceRam(src, mover_);
    ASSERT_FALSE(src_ram.empty()) << "no kept source of " << mover_ << " on " << src;
    const VmInfo dest = VmInfo::FromJson(out["destination_vm"]);
    auto paused = cluster_->FindVm(dst, mover_);
    ASSERT_TRUE(paused.has_value());
    EXPECT_EQ(paused->run_state, "paused");
    EXPECT_EQ(CompareRamFiles(src_ram, dest.ram_path), "");

    // The inventory: the VM is on the destination, the log has the figures.
    auto inv = cluster_->OpenInventory().value();
    const Vm vm = inv->GetVm(mover_).value();
    EXPECT_EQ(vm.host, dst);
    EXPECT_EQ(vm.ram_path, dest.ram_path);
    EXPECT_EQ(inv->GetHost(dst).value().memory_reserved_mib, 0u);
    const Migration m = inv->GetMigration(out["migration_id"].get<std::int64_t>()).value();
    EXPECT_EQ(m.vm, mover_);
    EXPECT_EQ(m.source, src);
    EXPECT_EQ(m.destination, dst);
    EXPECT_EQ(m.donor, donor);
    EXPECT_EQ(m.outcome, MigrationOutcome::kSucceeded);
    EXPECT_EQ(m.figures.bytes_on_wire, rep.wire_bytes_sent);
    EXPECT_EQ(m.figures.bytes_saved_position + m.figures.bytes_saved_content,
              rep.pages_elided() * kPageSize);
    EXPECT_GT(m.figures.bytes_saved_position + m.figures.bytes_saved_content, 0u);
    EXPECT_TRUE(m.figures.error.empty()) << m.figures.error;

    // (b) Resumed, the guest counts on at the destination.
    r = cluster_->Cli({"vm", "start", mover_});
    ASSERT_TRUE(r.ok()) << r.err;
    EXPECT_TRUE(CounterAdvances(dest.serial_log)) << SerialLogTail(dest.serial_log);
    // The kept source goes away with its RAM file; the VM stays where it went.
    r = cluster_->Cli({"vm", "stop", mover_, "--host", src});
    ASSERT_TRUE(r.ok()) << r.err;
    EXPECT_FALSE(std::filesystem::exists(src_ram));
    EXPECT_EQ(InventoryVm(mover_).host, dst);
    EXPECT_EQ(InventoryVm(mover_).state, VmState::kRunning);
  }

  static AgentCluster* cluster_;
  static Status setup_;
  static std::map<std::string, std::string> placed_;  // VM -> host vm create printed
  static std::string mover_, partner_;
  static json learn_out_;
};

AgentCluster* E2eTest::cluster_ = nullptr;
Status E2eTest::setup_;
std::map<std::string, std::string> E2eTest::placed_;
std::string E2eTest::mover_;
std::string E2eTest::partner_;
json E2eTest::learn_out_;

// One test for what the set-up did (every TEST boots its own guests under
// CTest, so the cheap checks share one boot).
TEST_F(E2eTest, SpreadPlacementThenCatalogLearnedFromRunningVms) {
  // Spread ranks hosts by the VMs of the kind they run, fewest first: the
  // first three go to three different hosts, so four make 2/1/1.
  auto inv = cluster_->OpenInventory().value();
  std::map<std::string, int> per_host;
  for (const char* name : kVms) {
    const Vm vm = inv->GetVm(name).value();
    EXPECT_EQ(vm.host, placed_[name]);
    EXPECT_EQ(vm.state, VmState::kRunning);
    ++per_host[vm.host];
  }
  std::vector<int> counts;
  for (const char* h : kHosts) counts.push_back(per_host[h]);
  std::sort(counts.begin(), counts.end());
  EXPECT_EQ(counts, (std::vector<int>{1, 1, 2}));
  std::set<std::string> first_three;
  for (int i = 0; i < 3; ++i) first_three.insert(placed_[kVms[i]]);
  EXPECT_EQ(first_three.size(), 3u);

  // The catalog: three samples, the kind taken from the VMs, stored in the
  // inventory where the agents find it.
  ASSERT_TRUE(learn_out_.is_object());
  EXPECT_EQ(learn_out_["samples"], 3);
  EXPECT_EQ(StringOr(learn_out_["kind"], "os"), kKind.os);
  EXPECT_EQ(StringOr(learn_out_["kind"], "os_version"), kKind.os_version);
  EXPECT_EQ(StringOr(learn_out_["kind"], "hypervisor"), kKind.hypervisor);
  EXPECT_EQ(StringOr(learn_out_["kind"], "hypervisor_version"), kKind.hypervisor_version);
  std::vector<std::string> vms = learn_out_["vms"].get<std::vector<std::string>>();
  EXPECT_EQ(vms.size(), 3u);
  EXPECT_EQ(std::count(vms.begin(), vms.end(), mover_), 0);
  for (const std::string& vm : vms) {
    EXPECT_NE(std::count(learn_out_["images"].begin(), learn_out_["images"].end(),
                         inv->GetVm(vm).value().ram_path),
              0)
        << vm;
  }
  EXPECT_GT(U64Or(learn_out_, "position_pages"), 1000u);
  auto bytes = inv->GetCatalog(kKind);
  ASSERT_TRUE(bytes.has_value()) << bytes.error().ToString();
  EXPECT_EQ(bytes->size(), U64Or(learn_out_, "size_bytes"));
}

TEST_F(E2eTest, CatalogLearnFromVmRefusals) {
  // VMs the inventory knows but this machine cannot learn from: one on a host
  // elsewhere (its RAM file is not here), one stopped, one of another kind.
  ASSERT_TRUE(cluster_->Cli({"host", "add", "elsewhere", "--memory", "4G", "--vcpus", "8"}).ok());
  const std::string ram = InventoryVm(partner_).ram_path;
  const std::string missing = cluster_->root() + "/no-such-ram";
  struct Fake {
    const char* name;
    VmKind kind;
    const char* state;
    std::string ram;
  };
  const Fake fakes[] = {
      {"far-away", kKind, "running", missing},
      {"asleep", kKind, "stopped", ""},
      {"other-kind", {"ubuntu", "22.04", "qemu", "7.2"}, "running", ram},
  };
  for (const Fake& f : fakes) {
    std::vector<std::string> args = {"vm", "add", f.name, "--host", "elsewhere", "--os", f.kind.os,
                                     "--os-version", f.kind.os_version, "--hypervisor",
                                     f.kind.hypervisor, "--hypervisor-version",
                                     f.kind.hypervisor_version, "--memory", "256", "--vcpus", "1",
                                     "--state", f.state};
    if (!f.ram.empty()) args.insert(args.end(), {"--ram-path", f.ram});
    CliResult r = cluster_->Cli(args);
    ASSERT_TRUE(r.ok()) << r.err;
  }
  const std::string before = cluster_->OpenInventory().value()->GetCatalog(kKind).value();

  const std::string kind = kKind.ToString();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--from-vm", partner_, "--from-vm", "ghost"},
       "catalog learn: VM ghost is not in the inventory"},
      {{"--from-vm", partner_, "--from-vm", "asleep"},
       "catalog learn: VM asleep is stopped on elsewhere, not running"},
      {{"--from-vm", partner_, "--from-vm", "other-kind"},
       fmt::format("catalog learn: VM other-kind is ubuntu 22.04 / qemu 7.2, but VM {} is {}: "
                   "samples must be of one kind",
                   partner_, kind)},
      {{"--from-vm", partner_, "--from-vm", "far-away"},
       fmt::format("catalog learn: the RAM file {} of VM far-away (on elsewhere) is not readable "
                   "on this machine: No such file or directory",
                   missing)},
      {{"--os", "ubuntu", "--from-vm", partner_, "--from-vm", mover_},
       fmt::format("catalog learn: VM {} is for {}, not --os ubuntu", partner_, kind)},
      {{"--from-vm", partner_, "--from-vm", partner_},
       fmt::format("catalog learn: VM {} is named twice by --from-vm", partner_)},
      {{"--from-vm", partner_}, fmt::format("catalog learn needs at least 2 images of {}, got 1", kind)},
      // A file sample as well: the kind must then be given.
      {{"--from-vm", partner_, ram}, "catalog learn needs --os"},
  };
  for (const auto& [extra, message] : cases) {
    std::vector<std::string> args = {"catalog", "learn"};
    args.insert(args.end(), extra.begin(), extra.end());
    CliResult r = cluster_->Cli(args);
    EXPECT_FALSE(r.ok()) << fmt::format("{}", fmt::join(extra, " "));
    EXPECT_TRUE(r.exit.exited && r.exit.code == 1) << r.exit.ToString();
    EXPECT_EQ(r.err, "escdr: " + message + "\n");
  }
  // Nothing was stored by the refused runs.
  EXPECT_EQ(cluster_->OpenInventory().value()->GetCatalog(kKind).value(), before);

  for (const Fake& f : fakes) EXPECT_TRUE(cluster_->Cli({"vm", "remove", f.name}).ok()) << f.name;
  EXPECT_TRUE(cluster_->Cli({"host", "remove", "elsewhere"}).ok());

  // Flags that match the VMs' kind are accepted; the summary is for people.
  std::vector<std::string> args = {"catalog", "learn", "--os", kKind.os, "--hypervisor-version",
                                   kKind.hypervisor_version};
  for (const std::string& vm : learn_out_["vms"].get<std::vector<std::string>>()) {
    args.insert(args.end(), {"--from-vm", vm});
  }
  CliResult r = cluster_->Cli(args);
  ASSERT_TRUE(r.ok()) << r.err;
  std::printf("%s", r.out.c_str());
  EXPECT_EQ(r.out.rfind(fmt::format("learned the catalog of {} from 3 running VMs ({}) ", kind,
                                    fmt::join(learn_out_["vms"].get<std::vector<std::string>>(), ", ")),
                        0),
            0u)
      << r.out;
}

TEST_F(E2eTest, MigratesToADonorHostAndBackByteExact) {
  const std::string home = placed_[mover_];
  ASSERT_EQ(InventoryVm(mover_).host, home);
  ASSERT_EQ(InventoryVm(partner_).host, home);

  // Out: no --to; placement must choose a host with a donor.
  Moved out;
  ASSERT_NO_FATAL_FAILURE(MigrateAndVerify(home, "", &out));
  EXPECT_NE(out.destination, home);
  EXPECT_NE(out.donor, partner_);

  // (d) Back to where it came from, where its partner is the donor.
  Moved back;
  ASSERT_NO_FATAL_FAILURE(MigrateAndVerify(out.destination, home, &back));
  EXPECT_EQ(back.destination, home);
  EXPECT_EQ(back.donor, partner_);

  auto log = cluster_->OpenInventory().value()->ListMigrations({.vm = mover_, .limit = 10}).value();
  ASSERT_EQ(log.size(), 2u);
  for (const Migration& m : log) EXPECT_EQ(m.outcome, MigrationOutcome::kSucceeded);
  // It runs on the QEMU of its kind's series, under the machine type that
  // series' "pc" stood for when it started.
  bool found = false;
  for (const VmRecord& rec : cluster_->Records(home)) {
    if (rec.name != mover_) continue;
    found = true;
    EXPECT_EQ(rec.spec.qemu_version, kKind.hypervisor_version);
    EXPECT_EQ(rec.spec.machine, "pc-i440fx-" + kKind.hypervisor_version);
    const std::string cmdline = ReadFileToString(fmt::format("/proc/{}/cmdline", rec.pid)).value_or("");
    if (kKind.hypervisor_version == "10.0") {
      EXPECT_NE(cmdline.find(testing::Qemu10Dir()), std::string::npos) << cmdline;
    }
  }
  EXPECT_TRUE(found);
  // The other guests ran on undisturbed.
  for (const auto& [vm, host] : placed_) {
    if (vm == mover_) continue;
    auto info = cluster_->FindVm(host, vm);
    ASSERT_TRUE(info.has_value()) << vm;
    EXPECT_EQ(info->run_state, "running");
  }
}

}  // namespace
}  // namespace escdr::agent
