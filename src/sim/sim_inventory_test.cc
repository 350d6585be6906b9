#include "sim/sim_inventory.h"

#include <gtest/gtest.h>

namespace escdr::sim {
namespace {

TopologyOptions Topology() {
  TopologyOptions t;
  t.pods = 3;
  t.racks_per_pod = 3;
  t.hosts_per_rack = 4;
  t.host_memory_gib = 16;
  t.host_vcpus = 16;
  return t;
}

TEST(SimInventoryTest, HostsAreNumberedPodMajorWithHierarchicalNames) {
  SimInventory inv(Topology(), 2);
  ASSERT_EQ(inv.host_count(), 36u);
  EXPECT_EQ(inv.view(0).name, "p0-r0-h0");
  EXPECT_EQ(inv.view(5).name, "p0-r1-h1");
  EXPECT_EQ(inv.view(5).rack, "p0-r1");
  EXPECT_EQ(inv.view(13).pod, "p1");
  EXPECT_EQ(inv.TierBetween(0, 3), PathTier::kSameRack);
  EXPECT_EQ(inv.TierBetween(0, 4), PathTier::kSamePod);
  EXPECT_EQ(inv.TierBetween(0, 12), PathTier::kCrossPod);
}

TEST(SimInventoryTest, PlaceAndMoveKeepMemoryAndKindCounts) {
  SimInventory inv(Topology(), 2);
  const std::uint32_t vm = inv.AddVm(SimVm{.kind = 1, .memory_mib = 2048, .vcpus = 2});
  inv.Place(vm, 3);
  EXPECT_EQ(inv.view(3).memory_used_mib, 2048u);
  EXPECT_EQ(inv.same_kind(1, 3), 1u);
  inv.Reserve(vm, 20);
  EXPECT_EQ(inv.view(20).memory_used_mib, 2048u);  // booked while migrating
  EXPECT_EQ(inv.same_kind(1, 20), 0u);             // not a donor until it arrives
  inv.Move(vm, 20);
  EXPECT_EQ(inv.view(3).memory_used_mib, 0u);
  EXPECT_EQ(inv.view(20).vcpus_used, 2u);
  EXPECT_EQ(inv.same_kind(1, 3), 0u);
  EXPECT_EQ(inv.same_kind(1, 20), 1u);
  EXPECT_EQ(inv.vm(vm).host, 20u);
}

TEST(SimInventoryTest, SpreadPutsVmsOfAKindOnDistinctHosts) {
  SimInventory inv(Topology(), 1);
  Rng rng(1);
  for (int i = 0; i < 36; ++i) {
    const std::uint32_t vm = inv.AddVm(SimVm{.kind = 0, .memory_mib = 1024, .vcpus = 1});
    ASSERT_TRUE(inv.PlaceNew(vm, PlacementPolicy::kSpread, 0, rng).has_value());
  }
  for (std::uint32_t h = 0; h < 36; ++h) EXPECT_EQ(inv.same_kind(0, h), 1u) << h;
}

TEST(SimInventoryTest, SampledPlacementStillPlacesEveryVmThatFits) {
  SimInventory inv(Topology(), 1);
  Rng rng(2);
  for (int i = 0; i < 100; ++i) {
    const std::uint32_t vm = inv.AddVm(SimVm{.kind = 0, .memory_mib = 1024, .vcpus = 1});
    ASSERT_TRUE(inv.PlaceNew(vm, PlacementPolicy::kPack, 8, rng).has_value());
  }
}

// The cascade of candidate sets must pick what one call over all hosts picks.
TEST(SimInventoryTest, DestinationCascadeMatchesOneCallOverAllHosts) {
  for (std::uint64_t seed = 1; seed <= 30; ++seed) {
    Rng rng(seed);
    SimInventory inv(Topology(), 5);
    const int vms = 20 + static_cast<int>(rng.Below(120));
    for (int i = 0; i < vms; ++i) {
      SimVm v;
      v.kind = static_cast<std::uint32_t>(rng.Below(5));
      v.memory_mib = static_cast<std::uint32_t>(1024 * (1 + rng.Below(8)));
      v.vcpus = 1;
      const std::uint32_t id = inv.AddVm(v);
      inv.PlaceNew(id, PlacementPolicy::kRandom, 0, rng);
    }
    for (std::uint32_t h = 0; h < inv.host_count(); ++h) {
      if (rng.Below(6) == 0) inv.SetUp(h, false);
    }
    for (std::uint32_t vm = 0; vm < inv.vm_count(); ++vm) {
      if (inv.vm(vm).host == kNoHost) continue;
      const auto fast = inv.ChooseDestinationFor(vm);
      const auto full = inv.ChooseDestinationOverAll(vm);
      ASSERT_EQ(fast.has_value(), full.has_value()) << "seed " << seed << " vm " << vm;
      if (!fast) continue;
      EXPECT_EQ(fast->host, full->host) << "seed " << seed << " vm " << vm;
      EXPECT_EQ(fast->has_donor, full->has_donor) << "seed " << seed << " vm " << vm;
    }
  }
}

// PlaceNew over all hosts (unexplained, over name-ordered views) must pick
// what one explained ChoosePlacement call over the hosts in host order picks.
TEST(SimInventoryTest, PlacementOverAllHostsMatchesTheExplainedRanking) {
  for (PlacementPolicy policy :
       {PlacementPolicy::kSpread, PlacementPolicy::kPack, PlacementPolicy::kRandom}) {
    Rng draws(3);
    Rng rng(4);
    // 12 hosts per rack: name order (h0, h1, h10, h11, h2, ...) is not host order.
    TopologyOptions topology = Topology();
    topology.hosts_per_rack = 12;
    SimInventory inv(topology, 3);
    for (int i = 0; i < 400; ++i) {
      SimVm v;
      v.kind = static_cast<std::uint32_t>(draws.Below(3));
      v.memory_mib = static_cast<std::uint32_t>(1024 * (1 + draws.Below(4)));
      v.vcpus = static_cast<std::uint32_t>(1 + draws.Below(4));
      const std::uint32_t id = inv.AddVm(v);
      if (draws.Below(10) == 0) inv.SetUp(static_cast<std::uint32_t>(draws.Below(inv.host_count())), false);
      Rng peek = rng;
      const auto want = inv.ExplainedPlacementOverAll(id, policy, peek.NextU64());
      const auto got = inv.PlaceNew(id, policy, 0, rng);
      ASSERT_EQ(got, want) << PlacementPolicyName(policy) << " vm " << id;
    }
  }
}

}  // namespace
}  // namespace escdr::sim
