// The standard scenario (10,000 hosts, 100,000 VMs), shortened to 2,000
// migrations: the paper's claim that spreading VMs of a kind over many hosts
// gives migrations more donors must hold against packing them.
#include <gtest/gtest.h>

#include "escdr/sim/report.h"
#include "escdr/sim/simulator.h"

namespace escdr::sim {
namespace {

TEST(StandardScenarioTest, SpreadFindsDonorsAtLeastAsOftenAsPack) {
  auto scenario = LoadScenario(ESCDR_SOURCE_DIR "/scenarios/standard.json");
  ASSERT_TRUE(scenario.has_value()) << scenario.error().ToString();
  scenario->workload.migrations = 2000;
  SimulateOptions options;
  options.policies = {PlacementPolicy::kSpread, PlacementPolicy::kPack};
  options.modes = {true};
  options.jobs = 2;
  auto runs = Simulate(*scenario, options);
  ASSERT_TRUE(runs.has_value()) << runs.error().ToString();
  ASSERT_EQ(runs->size(), 2u);
  const RunSummary spread = Summarize((*runs)[0]);
  const RunSummary pack = Summarize((*runs)[1]);
  ASSERT_EQ(spread.policy, PlacementPolicy::kSpread);
  EXPECT_GT(spread.migrations, 1900u);
  EXPECT_GT(pack.migrations, 1900u);
  EXPECT_GE(spread.donor_share(), pack.donor_share());
  EXPECT_LE(spread.wire_bytes, spread.stream_bytes);
}

}  // namespace
}  // namespace escdr::sim
