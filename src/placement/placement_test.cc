#include "escdr/placement/placement.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace escdr {
namespace {

using ::testing::HasSubstr;

HostView Host(std::string name, std::uint64_t mem_total, std::uint64_t mem_used,
              std::uint32_t same_kind = 0, std::string rack = "", std::string pod = "") {
  HostView h;
  h.name = std::move(name);
  h.memory_total_mib = mem_total;
  h.memory_used_mib = mem_used;
  h.vcpus_total = 64;
  h.vcpus_used = 0;
  h.same_kind_vms = same_kind;
  h.rack = std::move(rack);
  h.pod = std::move(pod);
  return h;
}

// "h<i>": names whose order is not the numeric order (h10 < h2).
std::string NumberedName(std::size_t i) { return "h" + std::to_string(i); }

std::string Chosen(std::span<const HostView> hosts, const Decision& d) {
  return d.chosen ? hosts[*d.chosen].name : "<none>";
}

std::vector<std::string> RankedNames(const Decision& d) {
  std::vector<std::string> names;
  for (const auto& c : d.ranking) names.push_back(c.host);
  return names;
}

const CandidateExplanation& Explained(const Decision& d, const std::string& host) {
  auto it = std::find_if(d.ranking.begin(), d.ranking.end(),
                         [&](const CandidateExplanation& c) { return c.host == host; });
  EXPECT_NE(it, d.ranking.end()) << host;
  return *it;
}

constexpr VmDemand kSmall{1024, 2};

// --- HostLoad, policy names ---------------------------------------------------

TEST(HostLoadTest, IsTheLargerOfMemoryAndVcpuShares) {
  HostView h = Host("h", 1000, 250);
  h.vcpus_total = 10;
  h.vcpus_used = 5;
  EXPECT_DOUBLE_EQ(HostLoad(h), 0.5);
  h.vcpus_used = 1;
  EXPECT_DOUBLE_EQ(HostLoad(h), 0.25);
}

TEST(HostLoadTest, ZeroCapacityCountsAsFull) {
  HostView h = Host("h", 0, 0);
  EXPECT_DOUBLE_EQ(HostLoad(h), 1.0);
}

TEST(PlacementPolicyTest, NamesRoundTripAndUnknownIsRejected) {
  for (auto p : {PlacementPolicy::kSpread, PlacementPolicy::kPack, PlacementPolicy::kRandom}) {
    auto parsed = ParsePlacementPolicy(PlacementPolicyName(p));
    ASSERT_TRUE(parsed.has_value());
    EXPECT_EQ(*parsed, p);
  }
  auto bad = ParsePlacementPolicy("greedy");
  ASSERT_FALSE(bad.has_value());
  EXPECT_TRUE(bad.error().IsInvalidArgument());
  EXPECT_THAT(bad.error().message(), HasSubstr("greedy"));
}

// --- Spread ---------------------------------------------------------------------

TEST(SpreadTest, PrefersHostWithoutSameKindOverLessLoadedHostWithIt) {
  std::vector<HostView> hosts = {Host("a", 16384, 0, /*same_kind=*/1),
                                 Host("b", 16384, 12000, /*same_kind=*/0)};
  Decision d = ChoosePlacement(hosts, kSmall);
  EXPECT_EQ(Chosen(hosts, d), "b");
  EXPECT_THAT(Explained(d, "a").reason, HasSubstr("runs 1 VM of this kind; b runs no VM"));
  EXPECT_THAT(Explained(d, "b").reason, HasSubstr("chosen"));
}

TEST(SpreadTest, AmongHostsWithoutSameKindLeastLoadedWins) {
  std::vector<HostView> hosts = {Host("a", 16384, 8000), Host("b", 16384, 2000),
                                 Host("c", 16384, 4000)};
  Decision d = ChoosePlacement(hosts, kSmall);
  EXPECT_EQ(Chosen(hosts, d), "b");
  EXPECT_THAT(RankedNames(d), ::testing::ElementsAre("b", "c", "a"));
  EXPECT_THAT(Explained(d, "a").reason, HasSubstr("load 49% is above 12% on b"));
}

TEST(SpreadTest, WhenAllRunTheKindFewestSameKindWins) {
  std::vector<HostView> hosts = {Host("a", 16384, 0, 3), Host("b", 16384, 9000, 1),
                                 Host("c", 16384, 100, 2)};
  Decision d = ChoosePlacement(hosts, kSmall);
  EXPECT_EQ(Chosen(hosts, d), "b");
}

TEST(SpreadTest, TiesAreBrokenByNameWhateverTheInputOrder) {
  std::vector<HostView> hosts = {Host("h3", 8192, 0), Host("h1", 8192, 0), Host("h2", 8192, 0)};
  for (int round = 0; round < 3; ++round) {
    Decision d = ChoosePlacement(hosts, kSmall);
    EXPECT_EQ(Chosen(hosts, d), "h1");
    EXPECT_THAT(RankedNames(d), ::testing::ElementsAre("h1", "h2", "h3"));
    EXPECT_THAT(Explained(d, "h2").reason, HasSubstr("tied with h1"));
    std::rotate(hosts.begin(), hosts.begin() + 1, hosts.end());
  }
}

TEST(SpreadTest, HostsWithoutRoomOrDownAreIneligibleWithTheirReason) {
  std::vector<HostView> hosts = {Host("full", 4096, 3584), Host("down", 65536, 0),
                                 Host("cpu", 65536, 0), Host("ok", 65536, 60000)};
  hosts[1].up = false;
  hosts[2].vcpus_used = 63;
  Decision d = ChoosePlacement(hosts, kSmall);
  EXPECT_EQ(Chosen(hosts, d), "ok");
  EXPECT_THAT(RankedNames(d), ::testing::ElementsAre("ok", "cpu", "down", "full"));
  EXPECT_FALSE(Explained(d, "full").eligible);
  EXPECT_EQ(Explained(d, "full").reason, "no room: 512 MiB free, 1024 MiB needed");
  EXPECT_EQ(Explained(d, "cpu").reason, "no room: 1 vCPUs free, 2 needed");
  EXPECT_EQ(Explained(d, "down").reason, "host is not up");
  EXPECT_TRUE(Explained(d, "ok").eligible);
}

TEST(SpreadTest, ExactFitIsRoom) {
  std::vector<HostView> hosts = {Host("a", 2048, 1024)};
  hosts[0].vcpus_total = 2;
  Decision d = ChoosePlacement(hosts, kSmall);
  EXPECT_EQ(Chosen(hosts, d), "a");
}

TEST(SpreadTest, NothingFitsGivesNoChoice) {
  std::vector<HostView> hosts = {Host("a", 512, 0), Host("b", 2048, 1536)};
  Decision d = ChoosePlacement(hosts, kSmall);
  EXPECT_FALSE(d.chosen.has_value());
  EXPECT_EQ(d.ranking.size(), 2u);
  Decision empty = ChoosePlacement({}, kSmall);
  EXPECT_FALSE(empty.chosen.has_value());
  EXPECT_TRUE(empty.ranking.empty());
}

TEST(SpreadTest, RepeatedPlacementSpreadsAKindOverAllHosts) {
  // The paper's goal: VMs of one kind end up on as many hosts as possible.
  std::vector<HostView> hosts;
  for (int i = 0; i < 8; ++i) hosts.push_back(Host("h" + std::to_string(i), 65536, 0));
  for (int vm = 0; vm < 16; ++vm) {
    Decision d = ChoosePlacement(hosts, kSmall);
    ASSERT_TRUE(d.chosen.has_value());
    HostView& h = hosts[*d.chosen];
    h.memory_used_mib += kSmall.memory_mib;
    h.vcpus_used += kSmall.vcpus;
    h.same_kind_vms += 1;
  }
  for (const HostView& h : hosts) EXPECT_EQ(h.same_kind_vms, 2u) << h.name;
}

// --- Pack and random -----------------------------------------------------------

TEST(PackTest, MostLoadedHostWithRoomWins) {
  std::vector<HostView> hosts = {Host("a", 16384, 1000), Host("b", 16384, 15000),
                                 Host("c", 16384, 8000), Host("full", 16384, 16000)};
  Decision d = ChoosePlacement(hosts, kSmall, PlacementPolicy::kPack);
  EXPECT_EQ(Chosen(hosts, d), "b");
  EXPECT_THAT(RankedNames(d), ::testing::ElementsAre("b", "c", "a", "full"));
  EXPECT_THAT(Explained(d, "c").reason, HasSubstr("below"));
}

TEST(PackTest, FillsOneHostBeforeTheNext) {
  std::vector<HostView> hosts = {Host("a", 4096, 0), Host("b", 4096, 0)};
  std::vector<std::string> order;
  for (int vm = 0; vm < 8; ++vm) {
    Decision d = ChoosePlacement(hosts, kSmall, PlacementPolicy::kPack);
    ASSERT_TRUE(d.chosen.has_value());
    order.push_back(hosts[*d.chosen].name);
    hosts[*d.chosen].memory_used_mib += kSmall.memory_mib;
  }
  EXPECT_THAT(order, ::testing::ElementsAre("a", "a", "a", "a", "b", "b", "b", "b"));
}

TEST(RandomTest, SameSeedSameChoiceRegardlessOfInputOrder) {
  std::vector<HostView> hosts;
  for (int i = 0; i < 20; ++i) hosts.push_back(Host("h" + std::to_string(i), 8192, 0));
  Decision d1 = ChoosePlacement(hosts, kSmall, PlacementPolicy::kRandom, 42);
  std::reverse(hosts.begin(), hosts.end());
  Decision d2 = ChoosePlacement(hosts, kSmall, PlacementPolicy::kRandom, 42);
  EXPECT_EQ(RankedNames(d1), RankedNames(d2));
}

TEST(RandomTest, DifferentSeedsReachEveryHostAndOnlyHostsWithRoom) {
  std::vector<HostView> hosts = {Host("a", 8192, 0), Host("b", 8192, 0), Host("c", 8192, 0),
                                 Host("full", 1024, 512)};
  std::set<std::string> seen;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    Decision d = ChoosePlacement(hosts, kSmall, PlacementPolicy::kRandom, seed);
    ASSERT_TRUE(d.chosen.has_value());
    seen.insert(hosts[*d.chosen].name);
  }
  EXPECT_EQ(seen, (std::set<std::string>{"a", "b", "c"}));
}

// --- Path costs ----------------------------------------------------------------

TEST(HierarchicalPathCostTest, SameHostRackPodAndCrossPodAreOrdered) {
  HierarchicalPathCost cost;
  HostView a = Host("a", 1, 0, 0, "r1", "p1");
  HostView b = Host("b", 1, 0, 0, "r1", "p1");
  HostView c = Host("c", 1, 0, 0, "r2", "p1");
  HostView d = Host("d", 1, 0, 0, "r1", "p2");  // rack r1 of another pod
  HostView e = Host("e", 1, 0, 0, "", "");
  EXPECT_EQ(cost.Cost(a, a), 0u);
  EXPECT_EQ(cost.Cost(a, b), 1u);
  EXPECT_EQ(cost.Cost(a, c), 2u);
  EXPECT_EQ(cost.Cost(a, d), 4u);
  EXPECT_EQ(cost.Cost(a, e), 4u);
  EXPECT_EQ(cost.Cost(e, HostView(e)), 0u);
  HostView f = e;
  f.name = "f";
  EXPECT_EQ(cost.Cost(e, f), 4u) << "unknown racks and pods are not the same rack";
}

TEST(HierarchicalPathCostTest, CustomWeightsAreUsed) {
  HierarchicalPathCost cost({.same_host = 0, .same_rack = 10, .same_pod = 20, .cross_pod = 100});
  HostView a = Host("a", 1, 0, 0, "r1", "p1");
  HostView b = Host("b", 1, 0, 0, "r1", "p1");
  HostView c = Host("c", 1, 0, 0, "r9", "p9");
  EXPECT_EQ(cost.Cost(a, b), 10u);
  EXPECT_EQ(cost.Cost(a, c), 100u);
}

TEST(LinkGraphPathCostTest, ShortestPathBeatsDirectExpensiveLink) {
  // a -10- b directly, but a -1- s -2- b is cheaper.
  std::vector<LinkGraphPathCost::Link> links = {{"a", "b", 10}, {"a", "s", 1}, {"s", "b", 2},
                                                {"b", "c", 5}};
  auto graph = LinkGraphPathCost::Create(links);
  ASSERT_TRUE(graph.has_value());
  HostView a = Host("a", 1, 0), b = Host("b", 1, 0), c = Host("c", 1, 0), z = Host("z", 1, 0);
  EXPECT_EQ(graph->Cost(a, b), 3u);
  EXPECT_EQ(graph->Cost(b, a), 3u) << "links are undirected";
  EXPECT_EQ(graph->Cost(a, c), 8u);
  EXPECT_EQ(graph->Cost(a, a), 0u);
  EXPECT_EQ(graph->Cost(a, z), std::nullopt) << "z is not in the graph";
  EXPECT_EQ(graph->Cost(z, a), std::nullopt);
  EXPECT_EQ(graph->Cost(z, z), 0u);
  std::vector<HostView> all = {a, b, c, z};
  auto costs = graph->CostsFrom(a, all);
  EXPECT_EQ(costs, (std::vector<std::optional<std::uint64_t>>{0, 3, 8, std::nullopt}));
}

TEST(LinkGraphPathCostTest, DisconnectedComponentsHaveNoPath) {
  std::vector<LinkGraphPathCost::Link> links = {{"a", "b", 1}, {"c", "d", 1}};
  auto graph = LinkGraphPathCost::Create(links);
  ASSERT_TRUE(graph.has_value());
  EXPECT_EQ(graph->Cost(Host("a", 1, 0), Host("d", 1, 0)), std::nullopt);
}

TEST(LinkGraphPathCostTest, HugeCostsSaturateInsteadOfWrapping) {
  const std::uint64_t huge = std::numeric_limits<std::uint64_t>::max() - 5;
  std::vector<LinkGraphPathCost::Link> links = {{"a", "b", huge}, {"b", "c", huge}};
  auto graph = LinkGraphPathCost::Create(links);
  ASSERT_TRUE(graph.has_value());
  auto c = graph->Cost(Host("a", 1, 0), Host("c", 1, 0));
  ASSERT_TRUE(c.has_value());
  EXPECT_GE(*c, huge);
}

TEST(LinkGraphPathCostTest, BadLinksAreRejected) {
  std::vector<LinkGraphPathCost::Link> self = {{"a", "a", 1}};
  auto r1 = LinkGraphPathCost::Create(self);
  ASSERT_FALSE(r1.has_value());
  EXPECT_TRUE(r1.error().IsInvalidArgument());
  std::vector<LinkGraphPathCost::Link> empty_end = {{"a", "", 1}};
  auto r2 = LinkGraphPathCost::Create(empty_end);
  ASSERT_FALSE(r2.has_value());
  EXPECT_TRUE(r2.error().IsInvalidArgument());
}

// --- Destination ---------------------------------------------------------------

class DestinationTest : public ::testing::Test {
 protected:
  // src in p1/r1. Hosts in the same rack, same pod, other pod.
  std::vector<HostView> hosts_ = {
      Host("src", 65536, 4096, 0, "r1", "p1"),
      Host("rack-mate", 65536, 1000, 0, "r1", "p1"),
      Host("pod-mate", 65536, 1000, 0, "r2", "p1"),
      Host("far", 65536, 1000, 0, "r1", "p2"),
  };
  HierarchicalPathCost cost_;
};

TEST_F(DestinationTest, DonorBeatsCheaperHostWithoutDonor) {
  hosts_[3].same_kind_vms = 1;  // only "far" runs the kind
  Decision d = ChooseDestination(hosts_, 0, kSmall, cost_);
  EXPECT_EQ(Chosen(hosts_, d), "far");
  EXPECT_TRUE(d.has_donor);
  EXPECT_THAT(Explained(d, "rack-mate").reason, HasSubstr("runs no donor; far does"));
  EXPECT_TRUE(Explained(d, "far").has_donor);
  EXPECT_EQ(Explained(d, "far").path_cost, 4u);
}

TEST_F(DestinationTest, AmongDonorsCheapestPathWinsThenLoad) {
  hosts_[2].same_kind_vms = 1;
  hosts_[3].same_kind_vms = 5;
  Decision d = ChooseDestination(hosts_, 0, kSmall, cost_);
  EXPECT_EQ(Chosen(hosts_, d), "pod-mate");
  EXPECT_THAT(Explained(d, "far").reason, HasSubstr("path cost 4 is above 2 to pod-mate"));

  // Two donors at the same cost: the less loaded one wins.
  hosts_.push_back(Host("pod-mate-2", 65536, 500, 1, "r3", "p1"));
  d = ChooseDestination(hosts_, 0, kSmall, cost_);
  EXPECT_EQ(Chosen(hosts_, d), "pod-mate-2");
  EXPECT_THAT(Explained(d, "pod-mate").reason, HasSubstr("load 2% is above 1% on pod-mate-2"));
}

TEST_F(DestinationTest, SourceIsNeverChosenEvenIfItHasADonor) {
  hosts_[0].same_kind_vms = 3;
  Decision d = ChooseDestination(hosts_, 0, kSmall, cost_);
  ASSERT_TRUE(d.chosen.has_value());
  EXPECT_NE(*d.chosen, 0u);
  EXPECT_FALSE(d.has_donor);
  EXPECT_EQ(Explained(d, "src").reason, "source host");
  EXPECT_FALSE(Explained(d, "src").eligible);
}

TEST_F(DestinationTest, NoDonorFallsBackToCheapestHostAndSaysSo) {
  Decision d = ChooseDestination(hosts_, 0, kSmall, cost_);
  EXPECT_EQ(Chosen(hosts_, d), "rack-mate");
  EXPECT_FALSE(d.has_donor);
  EXPECT_THAT(Explained(d, "rack-mate").reason, HasSubstr("without a donor"));
}

TEST_F(DestinationTest, DonorHostWithoutRoomOrDownIsSkipped) {
  hosts_[1].same_kind_vms = 1;
  hosts_[1].memory_used_mib = 65000;  // no room
  hosts_[2].same_kind_vms = 1;
  hosts_[2].up = false;
  hosts_[3].same_kind_vms = 1;
  Decision d = ChooseDestination(hosts_, 0, kSmall, cost_);
  EXPECT_EQ(Chosen(hosts_, d), "far");
  EXPECT_THAT(Explained(d, "rack-mate").reason, HasSubstr("no room"));
  EXPECT_EQ(Explained(d, "pod-mate").reason, "host is not up");
}

TEST_F(DestinationTest, NoHostWithRoomGivesNoChoice) {
  for (std::size_t i = 1; i < hosts_.size(); ++i) hosts_[i].memory_used_mib = 65536;
  Decision d = ChooseDestination(hosts_, 0, kSmall, cost_);
  EXPECT_FALSE(d.chosen.has_value());
  EXPECT_FALSE(d.has_donor);
  for (const auto& c : d.ranking) EXPECT_FALSE(c.eligible) << c.host;
}

TEST_F(DestinationTest, LinkGraphCostsAndUnreachableHosts) {
  hosts_[1].same_kind_vms = 1;
  hosts_[3].same_kind_vms = 1;
  // In this graph "far" is cheaper than "rack-mate", and "pod-mate" is cut off.
  std::vector<LinkGraphPathCost::Link> links = {
      {"src", "sw1", 1}, {"sw1", "far", 1}, {"sw1", "rack-mate", 7}};
  auto graph = LinkGraphPathCost::Create(links);
  ASSERT_TRUE(graph.has_value());
  Decision d = ChooseDestination(hosts_, 0, kSmall, *graph);
  EXPECT_EQ(Chosen(hosts_, d), "far");
  EXPECT_EQ(Explained(d, "far").path_cost, 2u);
  EXPECT_EQ(Explained(d, "rack-mate").path_cost, 8u);
  EXPECT_EQ(Explained(d, "pod-mate").reason, "no network path from the source");
}

TEST_F(DestinationTest, RankingListsEveryHostBestFirstIneligibleLast) {
  hosts_[2].same_kind_vms = 1;
  hosts_[3].same_kind_vms = 1;
  Decision d = ChooseDestination(hosts_, 0, kSmall, cost_);
  EXPECT_THAT(RankedNames(d), ::testing::ElementsAre("pod-mate", "far", "rack-mate", "src"));
}

// Unexplained decisions (DecisionOptions::explain off) must choose what the
// explained ranking puts first, for every policy, with and without the
// sorted-by-name promise. Random hosts with many ties in load and kind counts
// exercise every tie-break.
std::vector<HostView> RandomHosts(std::mt19937_64& rng, std::size_t n) {
  std::vector<HostView> hosts;
  for (std::size_t i = 0; i < n; ++i) {
    HostView h = Host(NumberedName(i), 4096, 1024 * (rng() % 5), static_cast<std::uint32_t>(rng() % 3),
                      "r" + std::to_string(rng() % 3), "p" + std::to_string(rng() % 2));
    h.vcpus_used = static_cast<std::uint32_t>(16 * (rng() % 5));
    h.up = rng() % 8 != 0;
    hosts.push_back(std::move(h));
  }
  return hosts;
}

TEST(UnexplainedDecisionTest, ChoosesWhatTheRankingPutsFirst) {
  std::mt19937_64 rng(7);
  const HierarchicalPathCost cost;
  for (int round = 0; round < 400; ++round) {
    std::vector<HostView> hosts = RandomHosts(rng, 1 + rng() % 40);
    const VmDemand demand{1024 * (1 + rng() % 3), static_cast<std::uint32_t>(8 * (rng() % 4))};
    for (bool sorted : {false, true}) {
      if (sorted) {
        std::sort(hosts.begin(), hosts.end(),
                  [](const HostView& a, const HostView& b) { return a.name < b.name; });
      }
      const DecisionOptions fast{.explain = false, .sorted_by_name = sorted};
      for (PlacementPolicy policy :
           {PlacementPolicy::kSpread, PlacementPolicy::kPack, PlacementPolicy::kRandom}) {
        const std::uint64_t seed = rng();
        const Decision want = ChoosePlacement(hosts, demand, policy, seed);
        const Decision got = ChoosePlacement(hosts, demand, policy, seed, fast);
        EXPECT_EQ(Chosen(hosts, got), Chosen(hosts, want))
            << PlacementPolicyName(policy) << ", round " << round << ", sorted " << sorted;
        EXPECT_TRUE(got.ranking.empty());
      }
      const std::size_t source = rng() % hosts.size();
      const Decision want = ChooseDestination(hosts, source, demand, cost);
      const Decision got = ChooseDestination(hosts, source, demand, cost, fast);
      EXPECT_EQ(Chosen(hosts, got), Chosen(hosts, want)) << "round " << round;
      EXPECT_EQ(got.has_donor, want.has_donor) << "round " << round;
      EXPECT_TRUE(got.ranking.empty());
    }
  }
}

TEST(UnexplainedDecisionTest, NoHostWithRoomGivesNoChoice) {
  std::vector<HostView> hosts = {Host("a", 1024, 1024), Host("b", 1024, 512)};
  const DecisionOptions fast{.explain = false};
  for (PlacementPolicy policy :
       {PlacementPolicy::kSpread, PlacementPolicy::kPack, PlacementPolicy::kRandom}) {
    EXPECT_FALSE(ChoosePlacement(hosts, {1024, 1}, policy, 1, fast).chosen.has_value());
  }
  const Decision d = ChooseDestination(hosts, 0, {1024, 1}, HierarchicalPathCost(), fast);
  EXPECT_FALSE(d.chosen.has_value());
  EXPECT_FALSE(d.has_donor);
}

}  // namespace
}  // namespace escdr
