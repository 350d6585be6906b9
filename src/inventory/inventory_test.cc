// The Inventory contract, run against every backend (SQLite file, in-memory
// SQLite, PostgreSQL): the same test suite, so the backends cannot drift.
#include "escdr/inventory/inventory.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <map>
#include <random>
#include <set>

#include "inventory/inventory_testing.h"
#include "inventory/pg_admin.h"
#include "inventory/schema.h"
#include "inventory/sql_db.h"

namespace escdr {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const VmKind kDebian{"debian", "12", "qemu", "7.2"};
const VmKind kDebian11{"debian", "11", "qemu", "7.2"};
const VmKind kAlpine{"alpine", "3.19", "qemu", "7.2"};
const VmKind kDebianOn10{"debian", "12", "qemu", "10.0"};

HostSpec HostOf(std::string name, std::uint64_t mem = 16384, std::uint32_t cpus = 16,
                std::string rack = "r1", std::string pod = "p1") {
  return {std::move(name), "", std::move(rack), std::move(pod), mem, cpus};
}

// A host that reports the QEMU versions `qemu`.
HostSpec HostWithQemu(std::string name, std::vector<std::string> qemu, std::uint64_t mem = 16384,
                      std::string rack = "r1", std::string pod = "p1") {
  HostSpec h = HostOf(std::move(name), mem, 16, std::move(rack), std::move(pod));
  h.qemu_versions = std::move(qemu);
  return h;
}

VmSpec VmOf(std::string name, std::string host, VmKind kind = kDebian, std::uint64_t mem = 1024,
            std::uint32_t cpus = 1, VmState state = VmState::kRunning) {
  VmSpec v;
  v.name = std::move(name);
  v.host = std::move(host);
  v.kind = std::move(kind);
  v.memory_mib = mem;
  v.vcpus = cpus;
  v.state = state;
  return v;
}

class InventoryTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ESCDR_REQUIRE_BACKEND(GetParam());
    db_ = std::make_unique<inventory_testing::TestDatabase>(GetParam());
    ASSERT_TRUE(db_->ok());
    auto inv = OpenInventory(db_->url());
    ASSERT_TRUE(inv.has_value()) << inv.error().ToString();
    inv_ = std::move(*inv);
  }
  void TearDown() override {
    inv_.reset();  // close before the database is dropped
    db_.reset();
  }

  Host MustGetHost(const std::string& name) {
    auto h = inv_->GetHost(name);
    EXPECT_TRUE(h.has_value()) << h.error().ToString();
    return h.value_or(Host{});
  }
  void MustAddHost(const HostSpec& spec) {
    auto h = inv_->AddHost(spec);
    ASSERT_TRUE(h.has_value()) << h.error().ToString();
  }
  void MustAddVm(const VmSpec& spec) {
    auto v = inv_->AddVm(spec);
    ASSERT_TRUE(v.has_value()) << v.error().ToString();
  }
  std::vector<std::string> VmNames(const VmFilter& f = {}) {
    std::vector<std::string> out;
    auto vms = inv_->ListVms(f);
    EXPECT_TRUE(vms.has_value());
    for (const Vm& v : vms.value_or(std::vector<Vm>{})) out.push_back(v.name);
    return out;
  }

  std::unique_ptr<inventory_testing::TestDatabase> db_;
  std::unique_ptr<Inventory> inv_;
};

// ----------------------------------------------------------------- hosts

TEST_P(InventoryTest, AddedHostReadsBackWithAllFields) {
  HostSpec spec{"node-1", "10.0.0.1:7000", "r7", "p2", 65536, 32};
  auto added = inv_->AddHost(spec);
  ASSERT_TRUE(added.has_value()) << added.error().ToString();
  Host h = MustGetHost("node-1");
  EXPECT_EQ(h.name, "node-1");
  EXPECT_EQ(h.agent_address, "10.0.0.1:7000");
  EXPECT_EQ(h.rack, "r7");
  EXPECT_EQ(h.pod, "p2");
  EXPECT_EQ(h.memory_mib, 65536u);
  EXPECT_EQ(h.vcpus, 32u);
  EXPECT_EQ(h.state, HostState::kUp);
  EXPECT_EQ(h.memory_used_mib, 0u);
  EXPECT_EQ(h.vm_count, 0u);
  EXPECT_THAT(h.created_at, ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T.*Z"));
}

TEST_P(InventoryTest, HostsAreListedByName) {
  for (const char* n : {"c", "a", "B", "b"}) MustAddHost(HostOf(n));
  auto hosts = inv_->ListHosts();
  ASSERT_TRUE(hosts.has_value());
  std::vector<std::string> names;
  for (const Host& h : *hosts) names.push_back(h.name);
  EXPECT_THAT(names, ElementsAre("B", "a", "b", "c")) << "byte order on every backend";
}

TEST_P(InventoryTest, DuplicateHostIsRefusedAndTheFirstIsKept) {
  MustAddHost(HostOf("h1", 8192));
  auto dup = inv_->AddHost(HostOf("h1", 4096));
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(dup.error().message(), "cannot add host h1: a host of that name already exists");
  EXPECT_EQ(MustGetHost("h1").memory_mib, 8192u);
}

TEST_P(InventoryTest, BadHostSpecsAreRejected) {
  struct Case {
    HostSpec spec;
    std::string message;
  } cases[] = {
      {HostOf("h", 0), "memory must be between 1"},
      {HostOf("h", 1024, 0), "vCPUs must be between 1"},
      {HostOf(""), "host name is empty"},
      {HostOf("has space"), "contains a space"},
      {{"h", "nohostport", "", "", 1024, 1}, "agent address 'nohostport'"},
      {{"h", "x:99999", "", "", 1024, 1}, "agent address"},
  };
  for (const Case& c : cases) {
    auto r = inv_->AddHost(c.spec);
    ASSERT_FALSE(r.has_value()) << c.message;
    EXPECT_TRUE(r.error().IsInvalidArgument()) << r.error().ToString();
    EXPECT_THAT(r.error().message(), HasSubstr(c.message));
  }
  auto hosts = inv_->ListHosts();
  ASSERT_TRUE(hosts.has_value());
  EXPECT_TRUE(hosts->empty());
}

TEST_P(InventoryTest, AddHostsIsAllOrNothing) {
  MustAddHost(HostOf("exists"));
  std::vector<HostSpec> batch = {HostOf("n1"), HostOf("n2"), HostOf("exists")};
  Status s = inv_->AddHosts(batch);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.ToString();
  EXPECT_EQ(inv_->GetHost("n1").error().code(), StatusCode::kNotFound);
  ASSERT_TRUE(inv_->AddHosts(std::vector<HostSpec>{HostOf("n1"), HostOf("n2")}).ok());
  EXPECT_EQ(inv_->ListHosts()->size(), 3u);
}

TEST_P(InventoryTest, RegisterHostUpdatesButKeepsStateAndRefusesShrinkingBelowUse) {
  auto first = inv_->RegisterHost({"h1", "a:1", "r1", "p1", 8192, 8});
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  ASSERT_TRUE(inv_->SetHostState("h1", HostState::kDraining).ok());
  MustAddVm(VmOf("v1", "h1", kDebian, 4096, 4));
  auto again = inv_->RegisterHost({"h1", "b:2", "r2", "p2", 16384, 16});
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->agent_address, "b:2");
  EXPECT_EQ(again->rack, "r2");
  EXPECT_EQ(again->memory_mib, 16384u);
  EXPECT_EQ(again->state, HostState::kDraining);
  EXPECT_EQ(again->memory_used_mib, 4096u);
  auto shrink = inv_->RegisterHost({"h1", "b:2", "r2", "p2", 2048, 16});
  ASSERT_FALSE(shrink.has_value());
  EXPECT_EQ(shrink.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(MustGetHost("h1").memory_mib, 16384u);
}

TEST_P(InventoryTest, UnknownHostIsNotFound) {
  EXPECT_EQ(inv_->GetHost("nope").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(inv_->SetHostState("nope", HostState::kDown).code(), StatusCode::kNotFound);
  EXPECT_EQ(inv_->RemoveHost("nope").code(), StatusCode::kNotFound);
  auto vm = inv_->AddVm(VmOf("v", "nope"));
  ASSERT_FALSE(vm.has_value());
  EXPECT_EQ(vm.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(vm.error().message(), "cannot add VM v: no host named nope");
}

TEST_P(InventoryTest, HostWithVmsCannotBeRemoved) {
  MustAddHost(HostOf("h1"));
  MustAddVm(VmOf("v1", "h1"));
  Status s = inv_->RemoveHost("h1");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("1 VM is placed on it"));
  ASSERT_TRUE(inv_->RemoveVm("v1").ok());
  ASSERT_TRUE(inv_->RemoveHost("h1").ok());
  EXPECT_EQ(inv_->GetHost("h1").error().code(), StatusCode::kNotFound);
}

// ------------------------------------------------------------------- VMs

TEST_P(InventoryTest, VmTakesCapacityAndRemovingItGivesItBack) {
  MustAddHost(HostOf("h1", 8192, 8));
  VmSpec spec = VmOf("v1", "h1", kDebian, 3000, 3);
  spec.launch_spec = R"({"kernel":"/boot/vmlinuz"})";
  spec.ram_path = "/dev/shm/v1";
  MustAddVm(spec);
  Host h = MustGetHost("h1");
  EXPECT_EQ(h.memory_used_mib, 3000u);
  EXPECT_EQ(h.vcpus_used, 3u);
  EXPECT_EQ(h.vm_count, 1u);
  auto vm = inv_->GetVm("v1");
  ASSERT_TRUE(vm.has_value());
  EXPECT_EQ(vm->host, "h1");
  EXPECT_EQ(vm->kind, kDebian);
  EXPECT_EQ(vm->state, VmState::kRunning);
  EXPECT_EQ(vm->launch_spec, spec.launch_spec);
  EXPECT_EQ(vm->ram_path, "/dev/shm/v1");
  ASSERT_TRUE(inv_->RemoveVm("v1").ok());
  h = MustGetHost("h1");
  EXPECT_EQ(h.memory_used_mib, 0u);
  EXPECT_EQ(h.vcpus_used, 0u);
  EXPECT_EQ(h.vm_count, 0u);
  EXPECT_EQ(inv_->RemoveVm("v1").code(), StatusCode::kNotFound);
}

TEST_P(InventoryTest, VmThatDoesNotFitIsRefusedAndNothingIsWritten) {
  MustAddHost(HostOf("h1", 4096, 4));
  MustAddVm(VmOf("v1", "h1", kDebian, 3072, 1));
  auto r = inv_->AddVm(VmOf("v2", "h1", kAlpine, 2048, 1));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(r.error().message(),
            "cannot add VM v2: host h1 has no room (1024 MiB free, 2048 MiB needed)");
  auto cpu = inv_->AddVm(VmOf("v3", "h1", kAlpine, 512, 4));
  ASSERT_FALSE(cpu.has_value());
  EXPECT_THAT(cpu.error().message(), HasSubstr("3 vCPUs free, 4 needed"));
  EXPECT_THAT(VmNames(), ElementsAre("v1"));
  EXPECT_EQ(MustGetHost("h1").memory_used_mib, 3072u);
}

TEST_P(InventoryTest, DuplicateVmAndBadSizesAreRefused) {
  MustAddHost(HostOf("h1"));
  MustAddVm(VmOf("v1", "h1"));
  auto dup = inv_->AddVm(VmOf("v1", "h1"));
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(dup.error().message(), "cannot add VM v1: a VM of that name already exists");
  auto zero = inv_->AddVm(VmOf("v2", "h1", kDebian, 0));
  ASSERT_FALSE(zero.has_value());
  EXPECT_TRUE(zero.error().IsInvalidArgument());
  auto nocpu = inv_->AddVm(VmOf("v2", "h1", kDebian, 512, 0));
  ASSERT_FALSE(nocpu.has_value());
  EXPECT_TRUE(nocpu.error().IsInvalidArgument());
  auto badkind = inv_->AddVm(VmOf("v2", "h1", VmKind{"debian", "", "qemu", "7.2"}));
  ASSERT_FALSE(badkind.has_value());
  EXPECT_THAT(badkind.error().message(), HasSubstr("OS version is empty"));
  EXPECT_EQ(MustGetHost("h1").memory_used_mib, 1024u);
}

TEST_P(InventoryTest, AddVmsIsAllOrNothing) {
  MustAddHost(HostOf("h1", 4096));
  std::vector<VmSpec> batch = {VmOf("a", "h1", kDebian, 2048), VmOf("b", "h1", kDebian, 2048),
                               VmOf("c", "h1", kDebian, 2048)};
  Status s = inv_->AddVms(batch);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_TRUE(VmNames().empty());
  EXPECT_EQ(MustGetHost("h1").memory_used_mib, 0u);
  batch.pop_back();
  ASSERT_TRUE(inv_->AddVms(batch).ok());
  EXPECT_THAT(VmNames(), ElementsAre("a", "b"));
  EXPECT_EQ(MustGetHost("h1").memory_used_mib, 4096u);
}

TEST_P(InventoryTest, ListVmsFiltersByHostAndKind) {
  MustAddHost(HostOf("h1"));
  MustAddHost(HostOf("h2"));
  MustAddVm(VmOf("a", "h1", kDebian));
  MustAddVm(VmOf("b", "h2", kDebian));
  MustAddVm(VmOf("c", "h1", kAlpine));
  EXPECT_THAT(VmNames(), ElementsAre("a", "b", "c"));
  VmFilter on_h1;
  on_h1.host = "h1";
  VmFilter debian;
  debian.kind = kDebian;
  VmFilter alpine_on_h1 = on_h1;
  alpine_on_h1.kind = kAlpine;
  EXPECT_THAT(VmNames(on_h1), ElementsAre("a", "c"));
  EXPECT_THAT(VmNames(debian), ElementsAre("a", "b"));
  EXPECT_THAT(VmNames(alpine_on_h1), ElementsAre("c"));
}

TEST_P(InventoryTest, VmStateFollowsTheStateMachine) {
  MustAddHost(HostOf("h1"));
  MustAddVm(VmOf("v1", "h1", kDebian, 1024, 1, VmState::kDefined));
  EXPECT_TRUE(inv_->SetVmState("v1", VmState::kRunning).ok());
  EXPECT_TRUE(inv_->SetVmState("v1", VmState::kStopped).ok());
  EXPECT_TRUE(inv_->SetVmState("v1", VmState::kRunning).ok());
  Status s = inv_->SetVmState("v1", VmState::kMigrating);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("only migrations"));
  EXPECT_EQ(inv_->SetVmState("v1", VmState::kDefined).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(inv_->SetVmState("nope", VmState::kRunning).code(), StatusCode::kNotFound);
  EXPECT_EQ(inv_->GetVm("v1")->state, VmState::kRunning);
  ASSERT_TRUE(inv_->SetVmLaunch("v1", "{}", "/dev/shm/x").ok());
  EXPECT_EQ(inv_->GetVm("v1")->ram_path, "/dev/shm/x");
}

// ------------------------------------------------------------- placement

TEST_P(InventoryTest, PlaceVmSpreadsAKindOverHosts) {
  for (const char* h : {"h1", "h2", "h3", "h4"}) MustAddHost(HostOf(h, 16384));
  std::set<std::string> used;
  for (int i = 0; i < 4; ++i) {
    auto placed = inv_->PlaceVm(VmOf("d" + std::to_string(i), "", kDebian));
    ASSERT_TRUE(placed.has_value()) << placed.error().ToString();
    used.insert(placed->vm.host);
    EXPECT_EQ(placed->vm.state, VmState::kRunning);
  }
  EXPECT_EQ(used.size(), 4u) << "four VMs of one kind on four different hosts";
  // A different kind does not care where debian runs: least loaded, by name.
  auto other = inv_->PlaceVm(VmOf("a0", "", kAlpine, 512));
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->vm.host, "h1");
  EXPECT_EQ(other->plan.hosts_total, 4u);
  EXPECT_THAT(other->plan.decision.ranking.front().reason, HasSubstr("chosen"));
}

TEST_P(InventoryTest, PlaceVmAvoidsHostsRunningTheKindEvenIfLessLoaded) {
  MustAddHost(HostOf("busy", 16384));
  MustAddHost(HostOf("idle", 16384));
  MustAddVm(VmOf("x", "busy", kAlpine, 8192));
  MustAddVm(VmOf("d", "idle", kDebian, 512));
  auto plan = inv_->PlanPlacement(kDebian, {1024, 1});
  ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
  ASSERT_TRUE(plan->decision.chosen.has_value());
  EXPECT_EQ(plan->candidates[*plan->decision.chosen].name, "busy");
  EXPECT_EQ(plan->candidates.size(), 1u) << "hosts running the kind cannot win: not read";
  PlacementOptions explain;
  explain.explain = true;
  auto explained = inv_->PlanPlacement(kDebian, {1024, 1}, explain);
  ASSERT_TRUE(explained.has_value());
  EXPECT_EQ(explained->candidates[*explained->decision.chosen].name, "busy");
  ASSERT_EQ(explained->decision.ranking.size(), 2u);
  EXPECT_EQ(explained->decision.ranking[1].host, "idle");
  EXPECT_EQ(explained->decision.ranking[1].reason,
            "runs 1 VM of this kind; busy runs no VM of this kind");
  // Nothing was written by planning.
  EXPECT_EQ(MustGetHost("busy").memory_used_mib, 8192u);
}

TEST_P(InventoryTest, PlaceVmPackAndRandomPolicies) {
  MustAddHost(HostOf("h1", 16384));
  MustAddHost(HostOf("h2", 16384));
  MustAddVm(VmOf("x", "h2", kAlpine, 4096));
  auto pack = inv_->PlaceVm(VmOf("p", "", kDebian), {.policy = PlacementPolicy::kPack});
  ASSERT_TRUE(pack.has_value());
  EXPECT_EQ(pack->vm.host, "h2");
  auto r1 = inv_->PlanPlacement(kDebian, {1024, 1}, {.policy = PlacementPolicy::kRandom, .seed = 7});
  auto r2 = inv_->PlanPlacement(kDebian, {1024, 1}, {.policy = PlacementPolicy::kRandom, .seed = 7});
  ASSERT_TRUE(r1.has_value() && r2.has_value());
  EXPECT_EQ(r1->candidates[*r1->decision.chosen].name, r2->candidates[*r2->decision.chosen].name);
}

TEST_P(InventoryTest, PlaceVmSkipsHostsThatAreNotUp) {
  MustAddHost(HostOf("a"));
  MustAddHost(HostOf("b"));
  ASSERT_TRUE(inv_->SetHostState("a", HostState::kDraining).ok());
  auto placed = inv_->PlaceVm(VmOf("v", "", kDebian));
  ASSERT_TRUE(placed.has_value());
  EXPECT_EQ(placed->vm.host, "b");
  ASSERT_TRUE(inv_->SetHostState("b", HostState::kDown).ok());
  auto none = inv_->PlaceVm(VmOf("w", "", kDebian));
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(none.error().message(), HasSubstr("0 of 2 hosts up"));
}

TEST_P(InventoryTest, VmLargerThanAnyHostIsInvalidAndNoRoomNowIsExhausted) {
  MustAddHost(HostOf("h1", 8192, 8));
  MustAddHost(HostOf("h2", 4096, 16));
  auto big = inv_->PlaceVm(VmOf("big", "", kDebian, 16384, 1));
  ASSERT_FALSE(big.has_value());
  EXPECT_TRUE(big.error().IsInvalidArgument());
  EXPECT_EQ(big.error().message(),
            "cannot place VM big: it needs 16384 MiB and 1 vCPUs, more than any host has "
            "(largest: 8192 MiB, 16 vCPUs)");
  MustAddVm(VmOf("f1", "h1", kAlpine, 8192, 1));
  MustAddVm(VmOf("f2", "h2", kAlpine, 4096, 1));
  auto full = inv_->PlaceVm(VmOf("v", "", kDebian, 1024, 1));
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code(), StatusCode::kResourceExhausted);
  EXPECT_FALSE(inv_->GetVm("v").has_value()) << "nothing half-written";
  EXPECT_FALSE(inv_->PlaceVm(VmOf("v", "", kDebian, 1024, 1)).has_value());
}

TEST_P(InventoryTest, PlaceVmWithDuplicateNameIsRefused) {
  MustAddHost(HostOf("h1"));
  MustAddVm(VmOf("v", "h1"));
  auto dup = inv_->PlaceVm(VmOf("v", "", kAlpine));
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(MustGetHost("h1").vm_count, 1u);
}

// ------------------------------------------------------------ QEMU versions

TEST_P(InventoryTest, HostQemuVersionsAreKeptSortedAndRegisterHostReplacesThem) {
  MustAddHost(HostWithQemu("h1", {"10.0.13", "7.2.19", "7.2.5", "7.2.19"}));
  EXPECT_THAT(MustGetHost("h1").qemu_versions, ElementsAre("7.2.5", "7.2.19", "10.0.13"))
      << "oldest first (numerically), without duplicates";
  MustAddHost(HostOf("plain"));
  EXPECT_TRUE(MustGetHost("plain").qemu_versions.empty());
  auto again = inv_->RegisterHost(HostWithQemu("h1", {"8.2.2"}));
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_THAT(again->qemu_versions, ElementsAre("8.2.2"));
  auto listed = inv_->ListHosts();
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_THAT((*listed)[0].qemu_versions, ElementsAre("8.2.2"));
  // An agent that reports nothing clears the list: unreported again.
  ASSERT_TRUE(inv_->RegisterHost(HostOf("h1")).has_value());
  EXPECT_TRUE(MustGetHost("h1").qemu_versions.empty());
}

TEST_P(InventoryTest, BadQemuVersionsAreRejected) {
  for (const char* bad : {"7", "v7.2", "7.2 rc1", "7.2-rc1", "", "7..2", "10.0.13 7.2.19"}) {
    auto r = inv_->AddHost(HostWithQemu("h", {bad}));
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_TRUE(r.error().IsInvalidArgument()) << r.error().ToString();
    EXPECT_THAT(r.error().message(), HasSubstr("QEMU version")) << bad;
  }
  EXPECT_TRUE(inv_->ListHosts()->empty());
  MustAddHost(HostOf("h1"));
  VmSpec full = VmOf("v", "h1");
  full.qemu_version = "10.0.13";
  auto r = inv_->AddVm(full);
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().IsInvalidArgument());
  EXPECT_THAT(r.error().message(), HasSubstr("QEMU series '10.0.13' is not major.minor"));
}

TEST_P(InventoryTest, AddVmRefusesAHostWithoutTheVmsQemuSeries) {
  MustAddHost(HostWithQemu("old", {"7.2.19"}));
  auto r = inv_->AddVm(VmOf("v", "old", kDebianOn10));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.error().message(), "cannot add VM v: host old has no QEMU 10.0 (it runs 7.2.19)");
  // A VM of a 7.2 kind that migrated to 10.0 runs 10.0: refused too.
  VmSpec upgraded = VmOf("u", "old", kDebian);
  upgraded.qemu_version = "10.0";
  EXPECT_EQ(inv_->AddVm(upgraded).error().code(), StatusCode::kFailedPrecondition);
  std::vector<VmSpec> batch = {VmOf("a", "old", kDebian), VmOf("b", "old", kDebianOn10)};
  EXPECT_EQ(inv_->AddVms(batch).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(MustGetHost("old").vm_count, 0u) << "nothing of the refused adds was written";

  MustAddVm(VmOf("v72", "old", kDebian));
  MustAddHost(HostWithQemu("new", {"7.2.19", "10.0.13"}));
  upgraded.host = "new";
  MustAddVm(upgraded);
  auto u = inv_->GetVm("u");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->qemu_version, "10.0");
  EXPECT_EQ(RunSeries(*u), "10.0");
  VmSpec same = VmOf("s", "new", kDebian);
  same.qemu_version = "7.2";
  MustAddVm(same);
  EXPECT_EQ(inv_->GetVm("s")->qemu_version, "") << "the kind's own series is stored as \"\"";
  EXPECT_EQ(RunSeries(*inv_->GetVm("s")), "7.2");
  // A host that reports no versions takes any series.
  MustAddHost(HostOf("legacy"));
  MustAddVm(VmOf("v10", "legacy", kDebianOn10));
}

TEST_P(InventoryTest, PlacementOnlyConsidersHostsRunningTheVmsSeries) {
  MustAddHost(HostWithQemu("old", {"7.2.19"}));                 // least loaded
  MustAddHost(HostWithQemu("new", {"7.2.19", "10.0.13"}));
  MustAddHost(HostOf("legacy"));                                 // reports nothing
  MustAddVm(VmOf("load-new", "new", kAlpine, 2048));
  MustAddVm(VmOf("load-legacy", "legacy", kAlpine, 4096));
  for (PlacementPolicy policy :
       {PlacementPolicy::kSpread, PlacementPolicy::kPack, PlacementPolicy::kRandom}) {
    PlacementOptions o;
    o.policy = policy;
    o.explain = true;
    auto plan = inv_->PlanPlacement(kDebianOn10, {1024, 1}, o);
    ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
    EXPECT_EQ(plan->qemu_series, "10.0");
    std::set<std::string> names;
    for (const HostView& h : plan->candidates) names.insert(h.name);
    EXPECT_EQ(names, (std::set<std::string>{"new", "legacy"})) << PlacementPolicyName(policy);
  }
  auto placed = inv_->PlaceVm(VmOf("v10", "", kDebianOn10));
  ASSERT_TRUE(placed.has_value()) << placed.error().ToString();
  EXPECT_EQ(placed->vm.host, "new") << "the least loaded host that runs 10.0";
  auto v72 = inv_->PlaceVm(VmOf("v72", "", kDebian));
  ASSERT_TRUE(v72.has_value());
  EXPECT_EQ(v72->vm.host, "old");
  // A VM of a 7.2 kind that runs 10.0 needs a 10.0 host too.
  ASSERT_TRUE(inv_->SetHostState("new", HostState::kDraining).ok());
  VmSpec upgraded = VmOf("u", "", kDebian);
  upgraded.qemu_version = "10.0";
  auto u = inv_->PlaceVm(upgraded);
  ASSERT_TRUE(u.has_value()) << u.error().ToString();
  EXPECT_EQ(u->vm.host, "legacy") << "unreported hosts are not filtered out";
  EXPECT_EQ(u->vm.qemu_version, "10.0");
  EXPECT_EQ(inv_->GetVm("u")->qemu_version, "10.0");
}

TEST_P(InventoryTest, PlaceVmWithoutAHostRunningTheSeriesSaysSo) {
  MustAddHost(HostWithQemu("old", {"7.2.19"}));
  auto none = inv_->PlaceVm(VmOf("v", "", kDebianOn10));
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(none.error().message(), "cannot place VM v: no host that is up runs QEMU 10.0");
  MustAddHost(HostWithQemu("new", {"10.0.13"}, 2048));
  MustAddVm(VmOf("filler", "new", kDebianOn10, 2048));
  auto full = inv_->PlaceVm(VmOf("v", "", kDebianOn10));
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code(), StatusCode::kResourceExhausted);
  EXPECT_THAT(full.error().message(),
              HasSubstr("no host has room for 1024 MiB and 1 vCPUs (2 of 2 hosts up, 1 of them "
                        "with QEMU 10.0)"));
  auto plan = inv_->PlanPlacement(kDebianOn10, {1024, 1});
  ASSERT_TRUE(plan.has_value());
  EXPECT_FALSE(plan->decision.chosen.has_value()) << "old has room but no QEMU 10.0";
}

// ----------------------------------------------------------- destination

class DestinationInventoryTest : public InventoryTest {
 protected:
  void SetUp() override {
    InventoryTest::SetUp();
    if (IsSkipped() || HasFailure()) return;
    // src, rack-mate in p1/r1; pod-mate in p1/r2; far in p2/r1.
    MustAddHost(HostOf("src", 16384, 16, "r1", "p1"));
    MustAddHost(HostOf("rack-mate", 16384, 16, "r1", "p1"));
    MustAddHost(HostOf("pod-mate", 16384, 16, "r2", "p1"));
    MustAddHost(HostOf("far", 16384, 16, "r1", "p2"));
    MustAddVm(VmOf("vm", "src", kDebian, 2048, 2));
  }
  std::string Chosen(const DestinationPlan& p) {
    return p.decision.chosen ? p.candidates[*p.decision.chosen].name : "<none>";
  }
};

TEST_P(DestinationInventoryTest, DonorHostWinsOverCheaperHostWithoutDonor) {
  MustAddVm(VmOf("donor", "far", kDebian));
  MustAddVm(VmOf("other-version", "rack-mate", kDebian11));
  auto plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
  EXPECT_EQ(Chosen(*plan), "far");
  EXPECT_TRUE(plan->decision.has_donor);
  EXPECT_EQ(plan->donor, "donor");
  EXPECT_EQ(plan->source, "src");
  EXPECT_FALSE(plan->link_graph);
}

TEST_P(DestinationInventoryTest, NearestDonorWinsThenLeastLoaded) {
  MustAddVm(VmOf("d-far", "far", kDebian));
  MustAddVm(VmOf("d-pod", "pod-mate", kDebian));
  auto plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(Chosen(*plan), "pod-mate");
  MustAddHost(HostOf("pod-mate-2", 16384, 16, "r3", "p1"));
  MustAddVm(VmOf("d-pod2", "pod-mate-2", kDebian, 512));
  MustAddVm(VmOf("load", "pod-mate", kAlpine, 4096));
  plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(Chosen(*plan), "pod-mate-2");
  EXPECT_EQ(plan->donor, "d-pod2");
}

TEST_P(DestinationInventoryTest, StoppedVmsAreNotDonors) {
  MustAddVm(VmOf("d-stopped", "pod-mate", kDebian, 1024, 1, VmState::kStopped));
  auto plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value());
  EXPECT_FALSE(plan->decision.has_donor);
  EXPECT_EQ(Chosen(*plan), "rack-mate") << "no donor: the cheapest path wins";
  EXPECT_EQ(plan->donor, "");
}

TEST_P(DestinationInventoryTest, DonorHostWithoutRoomLosesToNoDonorFallback) {
  MustAddVm(VmOf("d", "far", kDebian, 15000));
  auto plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(Chosen(*plan), "rack-mate");
  EXPECT_FALSE(plan->decision.has_donor);
  bool far_explained = false;
  for (const auto& c : plan->decision.ranking) {
    if (c.host == "far") {
      far_explained = true;
      EXPECT_FALSE(c.eligible);
      EXPECT_THAT(c.reason, HasSubstr("no room"));
    }
  }
  EXPECT_TRUE(far_explained);
}

TEST_P(DestinationInventoryTest, LinkGraphReplacesTheRackHierarchy) {
  MustAddVm(VmOf("d1", "rack-mate", kDebian));
  MustAddVm(VmOf("d2", "far", kDebian));
  ASSERT_TRUE(inv_->SetLink({"src", "spine", 1}).ok());
  ASSERT_TRUE(inv_->SetLink({"spine", "far", 1}).ok());
  ASSERT_TRUE(inv_->SetLink({"rack-mate", "src", 5}).ok());
  ASSERT_TRUE(inv_->SetLink({"src", "rack-mate", 9}).ok()) << "same link, either order: update";
  auto links = inv_->ListLinks();
  ASSERT_TRUE(links.has_value());
  EXPECT_EQ(links->size(), 3u);
  auto plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value());
  EXPECT_TRUE(plan->link_graph);
  EXPECT_EQ(Chosen(*plan), "far");
  ASSERT_TRUE(inv_->RemoveLink("far", "spine").ok());
  EXPECT_EQ(inv_->RemoveLink("far", "spine").code(), StatusCode::kNotFound);
  plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(Chosen(*plan), "rack-mate");
  EXPECT_TRUE(inv_->SetLink({"a", "a", 1}).IsInvalidArgument());
  EXPECT_TRUE(inv_->SetLink({"a", "b", 0}).IsInvalidArgument());
}

TEST_P(DestinationInventoryTest, UnknownVmIsNotFound) {
  auto plan = inv_->PlanDestination("ghost");
  ASSERT_FALSE(plan.has_value());
  EXPECT_EQ(plan.error().code(), StatusCode::kNotFound);
}

// ------------------------------------------------------------ migrations

TEST_P(DestinationInventoryTest, SuccessfulMigrationMovesTheVmAndItsCapacity) {
  MustAddVm(VmOf("donor", "far", kDebian));
  auto m = inv_->BeginMigration("vm", "far");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->outcome, MigrationOutcome::kInProgress);
  EXPECT_EQ(m->source, "src");
  EXPECT_EQ(m->donor, "donor");
  EXPECT_EQ(m->kind, kDebian);
  EXPECT_EQ(inv_->GetVm("vm")->state, VmState::kMigrating);
  Host far = MustGetHost("far");
  EXPECT_EQ(far.memory_used_mib, 1024u + 2048u) << "the reservation counts as used";
  EXPECT_EQ(far.memory_reserved_mib, 2048u);
  EXPECT_EQ(far.vcpus_reserved, 2u);
  EXPECT_EQ(far.vm_count, 1u);

  MigrationFigures f{.bytes_on_wire = 100, .bytes_saved_position = 70, .bytes_saved_content = 20,
                     .fallback_pages = 3, .total_ms = 1200, .downtime_ms = 40, .error = ""};
  auto done = inv_->FinishMigration(m->id, MigrationOutcome::kSucceeded, f);
  ASSERT_TRUE(done.has_value()) << done.error().ToString();
  EXPECT_EQ(done->outcome, MigrationOutcome::kSucceeded);
  EXPECT_EQ(done->figures.bytes_saved_position, 70u);
  EXPECT_EQ(done->figures.downtime_ms, 40u);
  EXPECT_FALSE(done->finished_at.empty());
  auto vm = inv_->GetVm("vm");
  EXPECT_EQ(vm->host, "far");
  EXPECT_EQ(vm->state, VmState::kRunning);
  far = MustGetHost("far");
  EXPECT_EQ(far.memory_used_mib, 3072u);
  EXPECT_EQ(far.memory_reserved_mib, 0u);
  EXPECT_EQ(far.vcpus_reserved, 0u);
  EXPECT_EQ(far.vm_count, 2u);
  Host src = MustGetHost("src");
  EXPECT_EQ(src.memory_used_mib, 0u);
  EXPECT_EQ(src.vcpus_used, 0u);
  EXPECT_EQ(src.vm_count, 0u);

  auto again = inv_->FinishMigration(m->id, MigrationOutcome::kFailed, {});
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), StatusCode::kFailedPrecondition);
  MigrationFilter of_vm;
  of_vm.vm = "vm";
  auto log = inv_->ListMigrations(of_vm);
  ASSERT_TRUE(log.has_value());
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ((*log)[0].figures.bytes_on_wire, 100u);
}

TEST_P(DestinationInventoryTest, FailedMigrationReleasesTheReservationAndTheVmStays) {
  auto m = inv_->BeginMigration("vm", "pod-mate");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->donor, "");
  auto done = inv_->FinishMigration(m->id, MigrationOutcome::kFailed,
                                    {.error = "destination QEMU exited"});
  ASSERT_TRUE(done.has_value()) << done.error().ToString();
  EXPECT_EQ(done->figures.error, "destination QEMU exited");
  auto vm = inv_->GetVm("vm");
  EXPECT_EQ(vm->host, "src");
  EXPECT_EQ(vm->state, VmState::kRunning);
  Host dst = MustGetHost("pod-mate");
  EXPECT_EQ(dst.memory_used_mib, 0u);
  EXPECT_EQ(dst.memory_reserved_mib, 0u);
  EXPECT_EQ(MustGetHost("src").memory_used_mib, 2048u);
}

TEST_P(DestinationInventoryTest, ReservationsCountInCapacityChecks) {
  MustAddVm(VmOf("filler", "far", kAlpine, 13000));
  auto m = inv_->BeginMigration("vm", "far");  // 2048 of the 3384 MiB left
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  auto r = inv_->AddVm(VmOf("late", "far", kAlpine, 2048));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kResourceExhausted);
  auto plan = inv_->PlanPlacement(kAlpine, {2048, 1});
  ASSERT_TRUE(plan.has_value());
  EXPECT_NE(plan->candidates[*plan->decision.chosen].name, "far");
  EXPECT_EQ(inv_->RemoveHost("far").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(inv_->RemoveVm("vm").code(), StatusCode::kFailedPrecondition);
  MigrationFilter running;
  running.in_progress_only = true;
  auto in_progress = inv_->ListMigrations(running);
  ASSERT_TRUE(in_progress.has_value());
  EXPECT_EQ(in_progress->size(), 1u);
}

TEST_P(DestinationInventoryTest, BeginMigrationRefusesBadRequestsCleanly) {
  MustAddVm(VmOf("big", "far", kAlpine, 15000));
  auto full = inv_->BeginMigration("vm", "far");
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(full.error().message(),
            "cannot migrate VM vm to far: no room there (1384 MiB free, 2048 MiB needed)");
  auto same = inv_->BeginMigration("vm", "src");
  ASSERT_FALSE(same.has_value());
  EXPECT_TRUE(same.error().IsInvalidArgument());
  EXPECT_EQ(inv_->BeginMigration("ghost", "far").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(inv_->BeginMigration("vm", "ghost").error().code(), StatusCode::kNotFound);
  ASSERT_TRUE(inv_->SetHostState("pod-mate", HostState::kDraining).ok());
  EXPECT_EQ(inv_->BeginMigration("vm", "pod-mate").error().code(),
            StatusCode::kFailedPrecondition);
  auto bad_donor = inv_->BeginMigration("vm", "rack-mate", "big");
  ASSERT_FALSE(bad_donor.has_value());
  EXPECT_TRUE(bad_donor.error().IsInvalidArgument());
  // Nothing of the refused attempts was written.
  EXPECT_EQ(inv_->GetVm("vm")->state, VmState::kRunning);
  EXPECT_EQ(MustGetHost("rack-mate").memory_used_mib, 0u);
  EXPECT_TRUE(inv_->ListMigrations()->empty());
  // A VM that is already migrating cannot begin another migration.
  ASSERT_TRUE(inv_->BeginMigration("vm", "rack-mate").has_value());
  auto twice = inv_->BeginMigration("vm", "far");
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(twice.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(inv_->FinishMigration(12345, MigrationOutcome::kFailed, {}).error().code(),
            StatusCode::kNotFound);
}

// ------------------------------------------------- QEMU series of migrations

TEST_P(DestinationInventoryTest, PlanDestinationOnlyConsidersHostsRunningTheTargetSeries) {
  // rack-mate runs only 10.0; far only 7.2; src and pod-mate report nothing.
  ASSERT_TRUE(inv_->RegisterHost(HostWithQemu("rack-mate", {"10.0.13"}, 16384, "r1", "p1"))
                  .has_value());
  ASSERT_TRUE(inv_->RegisterHost(HostWithQemu("far", {"7.2.19"}, 16384, "r1", "p2")).has_value());
  MustAddVm(VmOf("d-far", "far", kDebian));
  auto names = [](const DestinationPlan& p) {
    std::set<std::string> out;
    for (const HostView& h : p.candidates) out.insert(h.name);
    return out;
  };
  auto plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
  EXPECT_EQ(plan->run_series, "7.2");
  EXPECT_EQ(plan->qemu_series, "7.2");
  EXPECT_EQ(Chosen(*plan), "far");
  EXPECT_EQ(plan->donor, "d-far");
  EXPECT_EQ(names(*plan).count("rack-mate"), 0u) << "rack-mate has no QEMU 7.2";
  // A donor on rack-mate cannot be reached: rack-mate cannot hold the VM.
  ASSERT_TRUE(inv_->RegisterHost(HostWithQemu("rack-mate", {"7.2.19", "10.0.13"}, 16384, "r1",
                                              "p1")).has_value());
  MustAddVm(VmOf("d-rack", "rack-mate", kDebian));
  ASSERT_TRUE(inv_->RegisterHost(HostWithQemu("rack-mate", {"10.0.13"}, 16384, "r1", "p1"))
                  .has_value());
  plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(Chosen(*plan), "far");
  // Upgrading to 10.0: far is out, rack-mate (and its donor) in.
  plan = inv_->PlanDestination("vm", "10.0");
  ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
  EXPECT_EQ(plan->qemu_series, "10.0");
  EXPECT_EQ(plan->run_series, "7.2");
  EXPECT_EQ(Chosen(*plan), "rack-mate");
  EXPECT_EQ(plan->donor, "d-rack");
  EXPECT_EQ(names(*plan).count("far"), 0u) << "far has no QEMU 10.0";
  auto bad = inv_->PlanDestination("vm", "10");
  ASSERT_FALSE(bad.has_value());
  EXPECT_TRUE(bad.error().IsInvalidArgument());
  auto older = inv_->PlanDestination("vm", "6.2");
  ASSERT_FALSE(older.has_value());
  EXPECT_EQ(older.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(older.error().message(),
            "cannot choose a destination for VM vm: QEMU cannot migrate a VM from 7.2 to older "
            "6.2");
}

TEST_P(DestinationInventoryTest, NoDestinationRunsTheSeriesIsAPlanWithoutChoice) {
  for (const char* h : {"rack-mate", "pod-mate", "far"}) {
    ASSERT_TRUE(inv_->RegisterHost(HostWithQemu(h, {"10.0.13"}, 16384, "r9", "p9")).has_value());
  }
  auto plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value()) << plan.error().ToString();
  EXPECT_FALSE(plan->decision.chosen.has_value());
  plan = inv_->PlanDestination("vm", "10.0");
  ASSERT_TRUE(plan.has_value());
  EXPECT_TRUE(plan->decision.chosen.has_value());
}

TEST_P(DestinationInventoryTest, BeginMigrationChecksTheTargetSeries) {
  ASSERT_TRUE(inv_->RegisterHost(HostWithQemu("rack-mate", {"10.0.13"}, 16384, "r1", "p1"))
                  .has_value());
  auto missing = inv_->BeginMigration("vm", "rack-mate");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(missing.error().message(),
            "cannot migrate VM vm to rack-mate: destination rack-mate has no QEMU 7.2 (it runs "
            "10.0.13)");
  auto bad = inv_->BeginMigration("vm", "rack-mate", "", "10.0.13");
  ASSERT_FALSE(bad.has_value());
  EXPECT_TRUE(bad.error().IsInvalidArgument()) << bad.error().ToString();
  auto older = inv_->BeginMigration("vm", "pod-mate", "", "6.2");
  ASSERT_FALSE(older.has_value());
  EXPECT_EQ(older.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(older.error().message(),
            "cannot migrate VM vm to pod-mate: QEMU cannot migrate a VM from 7.2 to older 6.2");
  // Nothing of the refused attempts was written.
  EXPECT_EQ(inv_->GetVm("vm")->state, VmState::kRunning);
  EXPECT_EQ(MustGetHost("rack-mate").memory_used_mib, 0u);
  EXPECT_TRUE(inv_->ListMigrations()->empty());

  // Upgrade 7.2 -> 10.0: the migration records its series, success moves the VM onto it.
  auto up = inv_->BeginMigration("vm", "rack-mate", "", "10.0");
  ASSERT_TRUE(up.has_value()) << up.error().ToString();
  EXPECT_EQ(up->qemu_version, "10.0");
  ASSERT_TRUE(inv_->FinishMigration(up->id, MigrationOutcome::kSucceeded, {}).has_value());
  auto vm = inv_->GetVm("vm");
  ASSERT_TRUE(vm.has_value());
  EXPECT_EQ(vm->host, "rack-mate");
  EXPECT_EQ(vm->qemu_version, "10.0");
  EXPECT_EQ(RunSeries(*vm), "10.0");
  EXPECT_EQ(vm->kind, kDebian) << "the kind (and so the donors) stay the same";

  // Back to 7.2 is a downgrade, whether named or implied by a 7.2-only host.
  ASSERT_TRUE(inv_->RegisterHost(HostWithQemu("far", {"7.2.19"}, 16384, "r1", "p2")).has_value());
  auto down = inv_->BeginMigration("vm", "src", "", "7.2");
  ASSERT_FALSE(down.has_value());
  EXPECT_EQ(down.error().message(),
            "cannot migrate VM vm to src: QEMU cannot migrate a VM from 10.0 to older 7.2");
  auto to_far = inv_->BeginMigration("vm", "far");
  ASSERT_FALSE(to_far.has_value());
  EXPECT_THAT(to_far.error().message(), HasSubstr("destination far has no QEMU 10.0"));

  // Without a series the VM stays on its run series (10.0); a failure keeps it.
  auto again = inv_->BeginMigration("vm", "pod-mate");
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->qemu_version, "10.0");
  ASSERT_TRUE(inv_->FinishMigration(again->id, MigrationOutcome::kFailed, {}).has_value());
  vm = inv_->GetVm("vm");
  EXPECT_EQ(vm->host, "rack-mate");
  EXPECT_EQ(vm->qemu_version, "10.0");
  auto plan = inv_->PlanDestination("vm");
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->run_series, "10.0");
  EXPECT_NE(Chosen(*plan), "far");
}

TEST_P(DestinationInventoryTest, MigrationOnTheKindsSeriesStoresNoRunSeries) {
  ASSERT_TRUE(inv_->RegisterHost(HostWithQemu("far", {"7.2.19", "10.0.13"}, 16384, "r1", "p2"))
                  .has_value());
  auto m = inv_->BeginMigration("vm", "far", "", "7.2");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(m->qemu_version, "7.2");
  ASSERT_TRUE(inv_->FinishMigration(m->id, MigrationOutcome::kSucceeded, {}).has_value());
  EXPECT_EQ(inv_->GetVm("vm")->qemu_version, "") << "7.2 is the kind's own series";
  auto listed = inv_->ListMigrations();
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].qemu_version, "7.2");
}

// The inventory ranks a preselection of hosts gathered tier by tier; its
// decisions must equal those of the pure functions over every host.
TEST_P(InventoryTest, DecisionsEqualRankingEveryHost) {
  std::mt19937_64 rng(20261125);
  const VmKind kinds[] = {kDebian, kDebian11, kAlpine, {"fedora", "39", "qemu", "7.2"}};
  std::vector<HostSpec> hosts;
  for (int p = 0; p < 3; ++p) {
    for (int r = 0; r < 4; ++r) {
      for (int h = 0; h < 5; ++h) {
        hosts.push_back(HostOf(fmt::format("p{}r{}h{}", p, r, h), 4096 + 2048 * (rng() % 4), 8,
                               fmt::format("r{}", r), fmt::format("p{}", p)));
      }
    }
  }
  hosts.push_back(HostOf("nowhere", 8192, 8, "", ""));  // no rack, no pod
  // QEMU versions (from their own generator, so the rest of the data set does
  // not depend on them): most hosts run 7.2, some also 10.0, some report
  // nothing, and a few run only 10.0 (no VM of these 7.2 kinds can go there).
  std::mt19937_64 qemu_rng(7);
  for (HostSpec& h : hosts) {
    switch (qemu_rng() % 8) {
      case 0: break;  // not reported
      case 1: h.qemu_versions = {"10.0.13"}; break;
      case 2:
      case 3: h.qemu_versions = {"7.2.19", "10.0.13"}; break;
      default: h.qemu_versions = {"7.2.19"}; break;
    }
  }
  ASSERT_TRUE(inv_->AddHosts(hosts).ok());
  for (const HostSpec& h : hosts) {
    if (rng() % 8 == 0) {
      ASSERT_TRUE(inv_->SetHostState(h.name, HostState::kDraining).ok());
    }
  }
  // Common kinds have donors in most racks; rare ones only in a few pods
  // (exercising the pod and datacenter tiers); a unique kind per "solo" VM
  // has no donor anywhere (the fallback).
  int n = 0;
  for (const HostSpec& h : hosts) {
    for (int i = rng() % 4; i > 0; --i) {
      const std::uint64_t roll = rng() % 16;
      const VmKind kind = roll < 12   ? kinds[roll % 2]
                          : roll < 15 ? kinds[2 + roll % 2]
                                      : VmKind{"solo", std::to_string(n), "qemu", "7.2"};
      VmSpec v = VmOf(fmt::format("vm{}", n++), h.name, kind, 1024 * (1 + rng() % 3), 1,
                      rng() % 4 == 0 ? VmState::kStopped : VmState::kRunning);
      (void)inv_->AddVm(v);  // some do not fit: fine
    }
  }
  auto all_hosts = inv_->ListHosts();
  auto all_vms = inv_->ListVms();
  ASSERT_TRUE(all_hosts.has_value() && all_vms.has_value());
  ASSERT_GT(all_vms->size(), 40u);
  // Every host, those without QEMU `series` marked as unable to take a VM.
  auto views = [&](const VmKind& kind, bool running_only, const std::string& except,
                   const std::string& series) {
    std::vector<HostView> out;
    for (const Host& h : *all_hosts) {
      HostView view{h.name, h.rack, h.pod, h.memory_mib, h.memory_used_mib, h.vcpus,
                    h.vcpus_used, h.state == HostState::kUp && HostRunsQemuSeries(h, series), 0};
      for (const Vm& v : *all_vms) {
        if (v.host == h.name && v.kind == kind && v.name != except &&
            (!running_only || v.state == VmState::kRunning)) {
          ++view.same_kind_vms;
        }
      }
      out.push_back(view);
    }
    return out;
  };
  int with_donor = 0, without = 0;
  std::map<std::uint64_t, int> donor_at_cost;
  int to_10 = 0;
  for (const Vm& vm : *all_vms) {
    // On the VM's own series, and upgrading it to 10.0.
    for (const std::string series : {"", "10.0"}) {
      std::vector<HostView> every =
          views(vm.kind, true, vm.name, series.empty() ? RunSeries(vm) : series);
      std::size_t src = 0;
      while (every[src].name != vm.host) ++src;
      Decision want = ChooseDestination(every, src, {vm.memory_mib, vm.vcpus},
                                        HierarchicalPathCost());
      auto got = inv_->PlanDestination(vm.name, series);
      ASSERT_TRUE(got.has_value()) << got.error().ToString();
      ASSERT_EQ(got->decision.chosen.has_value(), want.chosen.has_value()) << vm.name << series;
      if (!want.chosen) continue;
      EXPECT_EQ(got->candidates[*got->decision.chosen].name, every[*want.chosen].name)
          << vm.name << " " << series;
      EXPECT_EQ(got->decision.has_donor, want.has_donor) << vm.name << " " << series;
      if (!series.empty()) {
        ++to_10;
        continue;
      }
      (want.has_donor ? with_donor : without)++;
      if (want.has_donor) {
        ++donor_at_cost[*HierarchicalPathCost().Cost(every[src], every[*want.chosen])];
      }
    }
  }
  EXPECT_GT(to_10, 10);
  EXPECT_GT(with_donor, 10);
  EXPECT_GT(without, 0);
  // Donors were found in the rack, in the pod and across pods: every tier ran.
  EXPECT_GT(donor_at_cost[1], 0);
  EXPECT_GT(donor_at_cost[2], 0);
  EXPECT_GT(donor_at_cost[4], 0);
  for (const VmKind& kind : kinds) {
    for (std::uint64_t mem : {1024u, 4096u, 8192u}) {
      std::vector<HostView> every = views(kind, false, "", kind.hypervisor_version);
      Decision want = ChoosePlacement(every, {mem, 2});
      PlacementOptions narrow;
      narrow.candidates_per_group = 1;  // the preselection must still hold the winner
      auto got = inv_->PlanPlacement(kind, {mem, 2}, narrow);
      ASSERT_TRUE(got.has_value());
      ASSERT_EQ(got->decision.chosen.has_value(), want.chosen.has_value());
      if (want.chosen) {
        EXPECT_EQ(got->candidates[*got->decision.chosen].name, every[*want.chosen].name)
            << kind.ToString() << " " << mem;
      }
    }
  }
}

// -------------------------------------------------------------- catalogs

TEST_P(InventoryTest, CatalogsRoundTripBinaryBytesAndAreReplaced) {
  std::string bytes("ESCDRCAT\0\x01\xff\x00tail", 17);
  ASSERT_TRUE(inv_->PutCatalog(kDebian, bytes).ok());
  ASSERT_TRUE(inv_->PutCatalog(kAlpine, std::string()).ok());
  auto got = inv_->GetCatalog(kDebian);
  ASSERT_TRUE(got.has_value()) << got.error().ToString();
  EXPECT_EQ(*got, bytes);
  EXPECT_EQ(inv_->GetCatalog(kAlpine).value_or("x"), "");
  ASSERT_TRUE(inv_->PutCatalog(kDebian, "v2").ok());
  EXPECT_EQ(inv_->GetCatalog(kDebian).value_or(""), "v2");
  auto list = inv_->ListCatalogs();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].kind, kAlpine);
  EXPECT_EQ((*list)[1].kind, kDebian);
  EXPECT_EQ((*list)[1].size_bytes, 2u);
  auto missing = inv_->GetCatalog(kDebian11);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.error().message(), "no catalog for debian 11 / qemu 7.2");
  ASSERT_TRUE(inv_->RemoveCatalog(kDebian).ok());
  EXPECT_EQ(inv_->RemoveCatalog(kDebian).code(), StatusCode::kNotFound);
  EXPECT_EQ(inv_->ListCatalogs()->size(), 1u);
}

TEST_P(InventoryTest, LargeCatalogRoundTrips) {
  std::string bytes(3 << 20, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 131 + (i >> 9));
  ASSERT_TRUE(inv_->PutCatalog(kDebian, bytes).ok());
  auto got = inv_->GetCatalog(kDebian);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(*got == bytes);
}

// ---------------------------------------------------- schema and reopening

TEST_P(InventoryTest, DataSurvivesReopening) {
  if (!db_->shared()) GTEST_SKIP() << "an in-memory inventory cannot be reopened";
  MustAddHost(HostOf("h1"));
  MustAddVm(VmOf("v1", "h1"));
  ASSERT_TRUE(inv_->PutCatalog(kDebian, "cat").ok());
  inv_.reset();
  auto again = OpenInventory(db_->url());
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ((*again)->GetVm("v1")->host, "h1");
  EXPECT_EQ((*again)->GetCatalog(kDebian).value_or(""), "cat");
  EXPECT_EQ((*again)->GetHost("h1")->memory_used_mib, 1024u);
}

TEST_P(InventoryTest, NewerSchemaIsRefusedWithAClearMessage) {
  if (!db_->shared()) GTEST_SKIP() << "an in-memory inventory cannot be reopened";
  inv_.reset();
  {
    Result<std::unique_ptr<inventory_internal::SqlDb>> raw =
        GetParam() == "postgres" ? inventory_internal::OpenPostgres(db_->url())
                                 : inventory_internal::OpenSqlite(db_->url(), db_->url());
    ASSERT_TRUE(raw.has_value()) << raw.error().ToString();
    ASSERT_TRUE((*raw)->ExecScript("UPDATE schema_version SET version = 7").ok());
  }
  auto again = OpenInventory(db_->url());
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), StatusCode::kVersionMismatch);
  EXPECT_EQ(again.error().message(),
            "database " + RedactUrl(db_->url()) +
                " has schema version 7; this escdr supports up to 2: upgrade escdr");
}

// A database written by the previous schema (1: no QEMU versions) opens
// with all its data, and the new columns read as "not reported".
TEST_P(InventoryTest, SchemaVersion1IsMigratedForwardKeepingItsData) {
  if (!db_->shared()) GTEST_SKIP() << "an in-memory inventory cannot be reopened";
  inv_.reset();
  {
    Result<std::unique_ptr<inventory_internal::SqlDb>> raw =
        GetParam() == "postgres" ? inventory_internal::OpenPostgres(db_->url())
                                 : inventory_internal::OpenSqlite(db_->url(), db_->url());
    ASSERT_TRUE(raw.has_value()) << raw.error().ToString();
    inventory_internal::SqlDb& db = **raw;
    for (const char* table :
         {"links", "migrations", "catalogs", "vms", "kinds", "hosts", "schema_version"}) {
      ASSERT_TRUE(db.ExecScript(std::string("DROP TABLE ") + table).ok()) << table;
    }
    Status s = inventory_internal::EnsureSchemaVersion(db, 1);
    ASSERT_TRUE(s.ok()) << s.ToString();
    s = db.ExecScript(R"sql(
INSERT INTO hosts (name, agent_address, rack, pod, memory_total_mib, vcpus_total, state,
                   memory_used_mib, vcpus_used, vm_count, created_at)
  VALUES ('h1', 'a:1', 'r1', 'p1', 8192, 8, 'up', 1024, 1, 1, '2026-01-01T00:00:00Z');
INSERT INTO hosts (name, memory_total_mib, vcpus_total, created_at)
  VALUES ('h2', 8192, 8, '2026-01-01T00:00:00Z');
INSERT INTO kinds (os, os_version, hypervisor, hypervisor_version)
  VALUES ('debian', '12', 'qemu', '7.2');
INSERT INTO vms (name, host_id, kind_id, memory_mib, vcpus, state, created_at, updated_at)
  VALUES ('v1', (SELECT id FROM hosts WHERE name = 'h1'), (SELECT id FROM kinds), 1024, 1,
          'running', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');
INSERT INTO migrations (vm, kind_id, source, destination, memory_mib, vcpus, outcome,
                        bytes_on_wire, started_at, finished_at)
  VALUES ('v1', (SELECT id FROM kinds), 'h0', 'h1', 1024, 1, 'succeeded', 4096,
          '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z');
)sql");
    ASSERT_TRUE(s.ok()) << s.ToString();
    auto version = db.Query("SELECT version FROM schema_version");
    ASSERT_TRUE(version.has_value());
    ASSERT_EQ(version->Int(0, 0), 1);
  }
  auto opened = OpenInventory(db_->url());
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  inv_ = std::move(*opened);
  Host h1 = MustGetHost("h1");
  EXPECT_EQ(h1.agent_address, "a:1");
  EXPECT_EQ(h1.memory_used_mib, 1024u);
  EXPECT_EQ(h1.vm_count, 1u);
  EXPECT_TRUE(h1.qemu_versions.empty());
  auto v1 = inv_->GetVm("v1");
  ASSERT_TRUE(v1.has_value()) << v1.error().ToString();
  EXPECT_EQ(v1->host, "h1");
  EXPECT_EQ(v1->kind, kDebian);
  EXPECT_EQ(v1->qemu_version, "");
  EXPECT_EQ(RunSeries(*v1), "7.2");
  auto log = inv_->ListMigrations();
  ASSERT_TRUE(log.has_value());
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ((*log)[0].figures.bytes_on_wire, 4096u);
  EXPECT_EQ((*log)[0].qemu_version, "");
  // The migrated database takes the new data.
  ASSERT_TRUE(inv_->RegisterHost(HostWithQemu("h2", {"10.0.13"}, 8192)).has_value());
  EXPECT_THAT(MustGetHost("h2").qemu_versions, ElementsAre("10.0.13"));
  EXPECT_EQ(inv_->BeginMigration("v1", "h2").error().code(), StatusCode::kFailedPrecondition);
  auto m = inv_->BeginMigration("v1", "h2", "", "10.0");
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  ASSERT_TRUE(inv_->FinishMigration(m->id, MigrationOutcome::kSucceeded, {}).has_value());
  EXPECT_EQ(inv_->GetVm("v1")->qemu_version, "10.0");
  inv_.reset();
  {
    Result<std::unique_ptr<inventory_internal::SqlDb>> raw =
        GetParam() == "postgres" ? inventory_internal::OpenPostgres(db_->url())
                                 : inventory_internal::OpenSqlite(db_->url(), db_->url());
    ASSERT_TRUE(raw.has_value());
    auto version = (*raw)->Query("SELECT version FROM schema_version");
    ASSERT_TRUE(version.has_value());
    EXPECT_EQ(version->Int(0, 0), kInventorySchemaVersion);
  }
}

TEST_P(InventoryTest, TwoInventoriesOnOneDatabaseSeeEachOther) {
  if (!db_->shared()) GTEST_SKIP() << "an in-memory inventory is private";
  auto second = OpenInventory(db_->url());
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  MustAddHost(HostOf("h1", 2048));
  ASSERT_TRUE((*second)->AddVm(VmOf("v1", "h1", kDebian, 2048)).has_value());
  auto r = inv_->AddVm(VmOf("v2", "h1", kDebian, 1));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kResourceExhausted);
}

std::string BackendName(const ::testing::TestParamInfo<std::string>& param) {
  return param.param;
}
INSTANTIATE_TEST_SUITE_P(Backends, InventoryTest,
                         ::testing::Values("sqlite", "memory", "postgres"), BackendName);
INSTANTIATE_TEST_SUITE_P(Backends, DestinationInventoryTest,
                         ::testing::Values("sqlite", "memory", "postgres"), BackendName);

// A PostgreSQL server that restarted, or an administrator's
// pg_terminate_backend, ends the inventory's connection: the next call
// reconnects instead of failing (a long-lived agent would otherwise fail one
// request per restart).
TEST(PostgresInventoryTest, ALostConnectionIsReopenedByTheNextCall) {
  ESCDR_REQUIRE_BACKEND("postgres");
  inventory_testing::TestDatabase db("postgres");
  ASSERT_TRUE(db.ok());
  const std::string app = fmt::format("escdr_reconnect_{}", getpid());
  auto inv = OpenInventory(db.url() + "&application_name=" + app);
  ASSERT_TRUE(inv.has_value()) << inv.error().ToString();
  ASSERT_TRUE((*inv)->AddHost(HostOf("h1")).has_value());

  auto admin = inventory_internal::OpenPostgres(inventory_testing::PgAdminUrl());
  ASSERT_TRUE(admin.has_value()) << admin.error().ToString();
  auto terminate = [&] {
    auto rows = (*admin)->Query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        {std::string_view(app)});
    ASSERT_TRUE(rows.has_value()) << rows.error().ToString();
    ASSERT_EQ(rows->rows.size(), 1u) << "the inventory's one session";
  };

  terminate();
  auto h1 = (*inv)->GetHost("h1");  // a read
  ASSERT_TRUE(h1.has_value()) << h1.error().ToString();
  EXPECT_EQ(h1->name, "h1");

  terminate();
  auto h2 = (*inv)->AddHost(HostOf("h2"));  // a write
  ASSERT_TRUE(h2.has_value()) << h2.error().ToString();
  auto hosts = (*inv)->ListHosts();
  ASSERT_TRUE(hosts.has_value()) << hosts.error().ToString();
  EXPECT_EQ(hosts->size(), 2u);
}

// --------------------------------------------------- opening and URLs

TEST(OpenInventoryTest, MissingDirectoryIsUnavailableAndNamesTheDatabase) {
  auto r = OpenInventory("/nonexistent-escdr-dir/inventory.db");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.error().message(),
            "cannot open database /nonexistent-escdr-dir/inventory.db: directory "
            "/nonexistent-escdr-dir does not exist");
}

TEST(OpenInventoryTest, FileThatIsNotADatabaseIsRefused) {
  inventory_testing::TestDatabase db("sqlite");
  ASSERT_TRUE(db.ok());
  std::ofstream(db.url()) << std::string(4096, 'x');
  auto r = OpenInventory("sqlite:" + db.url());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  EXPECT_THAT(r.error().message(), StartsWith("cannot open database sqlite:" + db.url() + ": "));
  EXPECT_THAT(r.error().message(), HasSubstr("not a database"));
}

TEST(OpenInventoryTest, UnreachablePostgresNamesTheDatabaseButNotThePassword) {
  auto r = OpenInventory("postgresql://escdr:s3cret@/escdr?host=/nonexistent-escdr-socket-dir");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  EXPECT_THAT(r.error().message(),
              StartsWith("cannot connect to database "
                         "postgresql://escdr:***@/escdr?host=/nonexistent-escdr-socket-dir: "));
  EXPECT_THAT(r.error().message(), ::testing::Not(HasSubstr("s3cret")));
  EXPECT_EQ(r.error().message().find('\n'), std::string::npos) << "one line";
}

TEST(OpenInventoryTest, UnknownSchemeIsInvalidArgument) {
  auto r = OpenInventory("mysql://root@localhost/escdr");
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().IsInvalidArgument());
}

TEST(InventoryUrlTest, RedactUrlHidesPasswordsOnly) {
  EXPECT_EQ(RedactUrl("postgresql://u:pw@db.example:5432/inv"),
            "postgresql://u:***@db.example:5432/inv");
  EXPECT_EQ(RedactUrl("postgresql://u@db/inv?password=pw&sslmode=require"),
            "postgresql://u@db/inv?password=***&sslmode=require");
  EXPECT_EQ(RedactUrl("postgresql://u@/inv?host=/run/pg"), "postgresql://u@/inv?host=/run/pg");
  EXPECT_EQ(RedactUrl("/var/lib/escdr/inventory.db"), "/var/lib/escdr/inventory.db");
}

TEST(InventoryUrlTest, ResolveUsesDbElseStateDir) {
  EXPECT_EQ(ResolveInventoryUrl("postgresql://x/y", "/s"), "postgresql://x/y");
  EXPECT_EQ(ResolveInventoryUrl("", "/s"), "/s/inventory.db");
}

TEST(InventoryUrlTest, PgUrlWithDatabaseKeepsServerAndQuery) {
  using inventory_internal::PgUrlWithDatabase;
  EXPECT_EQ(PgUrlWithDatabase("postgresql://postgres@/escdr?host=/tmp/s", "t1"),
            "postgresql://postgres@/t1?host=/tmp/s");
  EXPECT_EQ(PgUrlWithDatabase("postgresql://u:p@h:5432/db", "t2"), "postgresql://u:p@h:5432/t2");
  EXPECT_EQ(PgUrlWithDatabase("postgresql://h", "t3"), "postgresql://h/t3");
}

}  // namespace
}  // namespace escdr
