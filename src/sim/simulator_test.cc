// Runs small scenarios end to end on SimGrid (each run in its own process)
// and checks the properties the simulator's results must have.
#include "escdr/sim/simulator.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "escdr/sim/report.h"

namespace escdr::sim {
namespace {

Scenario Small() {
  auto s = LoadScenario(ESCDR_SOURCE_DIR "/tests/sim/small/scenario.json");
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return *s;
}

const RunResult* Find(const std::vector<RunResult>& runs, PlacementPolicy p, bool escdr) {
  for (const RunResult& r : runs) {
    if (r.policy == p && r.escdr == escdr) return &r;
  }
  return nullptr;
}

TEST(SimulatorTest, SmallScenarioRunsEveryPolicyAndMode) {
  auto runs = Simulate(Small());
  ASSERT_TRUE(runs.has_value()) << runs.error().ToString();
  ASSERT_EQ(runs->size(), 6u);
  for (const RunResult& r : *runs) {
    EXPECT_EQ(r.vms_placed, 30u);
    EXPECT_EQ(r.migrations.size() + r.migrations_no_room, 12u)
        << PlacementPolicyName(r.policy) << " " << r.escdr;
    for (const MigrationRecord& m : r.migrations) {
      EXPECT_NE(m.source, m.destination);
      EXPECT_GT(m.end_s, m.start_s);
      EXPECT_GT(m.downtime_s, 0);
      EXPECT_LE(m.downtime_s, m.duration_s());
      EXPECT_LE(m.report.wire_bytes_sent, m.report.stream_bytes);
      // Only a donor lets ESCDR elide anything.
      if (!(r.escdr && m.has_donor)) EXPECT_EQ(m.report.wire_bytes_sent, m.report.stream_bytes);
      if (r.escdr && m.has_donor) EXPECT_LT(m.report.wire_bytes_sent, m.report.stream_bytes);
    }
  }
}

TEST(SimulatorTest, EscdrNeverSendsMoreThanPlainPreCopy) {
  auto runs = Simulate(Small());
  ASSERT_TRUE(runs.has_value()) << runs.error().ToString();
  for (PlacementPolicy p : {PlacementPolicy::kSpread, PlacementPolicy::kPack,
                            PlacementPolicy::kRandom}) {
    const RunSummary plain = Summarize(*Find(*runs, p, false));
    const RunSummary escdr = Summarize(*Find(*runs, p, true));
    EXPECT_LE(escdr.wire_bytes, plain.wire_bytes) << PlacementPolicyName(p);
    EXPECT_LE(escdr.tier_bytes[kCoreTier], plain.tier_bytes[kCoreTier] + 0)
        << PlacementPolicyName(p);
  }
}

TEST(SimulatorTest, WithoutStaticContentEscdrRunsExactlyLikePlain) {
  Scenario s = Small();
  for (KindSpec& k : s.kinds) k.by_position_fraction = k.by_content_fraction = 0;
  SimulateOptions o;
  o.policies = {PlacementPolicy::kSpread};
  auto runs = Simulate(s, o);
  ASSERT_TRUE(runs.has_value()) << runs.error().ToString();
  const RunResult& plain = *Find(*runs, PlacementPolicy::kSpread, false);
  const RunResult& escdr = *Find(*runs, PlacementPolicy::kSpread, true);
  ASSERT_EQ(plain.migrations.size(), escdr.migrations.size());
  for (std::size_t i = 0; i < plain.migrations.size(); ++i) {
    EXPECT_EQ(plain.migrations[i].report.wire_bytes_sent, escdr.migrations[i].report.wire_bytes_sent);
    EXPECT_EQ(plain.migrations[i].end_s, escdr.migrations[i].end_s);
    EXPECT_EQ(plain.migrations[i].destination, escdr.migrations[i].destination);
  }
}

TEST(SimulatorTest, SameScenarioGivesTheSameRecordsBitForBit) {
  SimulateOptions o;
  o.policies = {PlacementPolicy::kRandom};
  o.modes = {true};
  auto a = Simulate(Small(), o);
  o.jobs = 2;
  auto b = Simulate(Small(), o);
  ASSERT_TRUE(a.has_value() && b.has_value());
  ASSERT_EQ((*a)[0].migrations.size(), (*b)[0].migrations.size());
  EXPECT_EQ(0, std::memcmp((*a)[0].migrations.data(), (*b)[0].migrations.data(),
                           (*a)[0].migrations.size() * sizeof(MigrationRecord)));
}

TEST(SimulatorTest, ScriptedHostThatDoesNotExistIsRejected) {
  Scenario s = Small();
  s.workload.script[0].host = "p9-r9-h9";
  auto runs = Simulate(s);
  ASSERT_FALSE(runs.has_value());
  EXPECT_EQ(runs.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(runs.error().message().find("p9-r9-h9"), std::string::npos);
}

TEST(SimulatorTest, ModelReproducesSimGridsLiveMigrationPlugin) {
  for (int intensity : {0, 30, 60}) {
    CrossCheckParams p;
    p.dirty_intensity_percent = intensity;
    auto r = RunPluginCrossCheck(p);
    ASSERT_TRUE(r.has_value()) << r.error().ToString();
    EXPECT_GT(r->plugin_total_s, 1.0);
    EXPECT_NEAR(r->model_total_s, r->plugin_total_s, 0.01 * r->plugin_total_s)
        << "intensity " << intensity;
    EXPECT_NEAR(r->model_downtime_s, r->plugin_downtime_s, 0.005) << "intensity " << intensity;
  }
}

Scenario Validation() {
  auto s = LoadScenario(ESCDR_SOURCE_DIR "/scenarios/validation-256m.json");
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return *s;
}

// The one migration of each mode of a one-migration scenario: {plain, escdr}.
std::pair<MigrationRecord, MigrationRecord> OneMigrationEach(const Scenario& s) {
  auto runs = Simulate(s);
  EXPECT_TRUE(runs.has_value()) << runs.error().ToString();
  const RunResult* plain = Find(*runs, s.placement.policies[0], false);
  const RunResult* escdr = Find(*runs, s.placement.policies[0], true);
  EXPECT_TRUE(plain && escdr && plain->migrations.size() == 1 && escdr->migrations.size() == 1);
  return {plain->migrations[0], escdr->migrations[0]};
}

double QemuTotal(const MigrationRecord& m) {
  return static_cast<double>(m.report.total_time.count()) / 1e6;
}

TEST(SimulatorTest, MaxBandwidthCapsTheWireSoSavedBytesAreSavedTime) {
  // 125 MB/s max-bandwidth on a 1 Gbit/s path: escdr caps the agents'
  // connection (QEMU's own limiter is lifted), so a round lasts at least its
  // wire bytes / max-bandwidth, and ESCDR's smaller wire bytes shorten it.
  Scenario s = Validation();
  s.migration.stream_rate_mb_s = 0;
  const auto [plain, escdr] = OneMigrationEach(s);
  const double cap = s.migration.max_bandwidth_mb_s * 1e6;
  EXPECT_LT(escdr.report.wire_bytes_sent, escdr.report.stream_bytes / 3);
  EXPECT_GE(QemuTotal(escdr), static_cast<double>(escdr.report.wire_bytes_sent) / cap - 1e-6);
  EXPECT_GE(QemuTotal(plain), static_cast<double>(plain.report.stream_bytes) / cap - 1e-6);
  EXPECT_LT(QemuTotal(escdr), 0.5 * QemuTotal(plain));
  // Without the cap, the network is the limit and ESCDR's bytes save time.
  s.migration.max_bandwidth_mb_s = 0;
  s.topology.host_link.bandwidth_gbit_s = 0.1;
  const auto [plain_link, escdr_link] = OneMigrationEach(s);
  EXPECT_LT(escdr_link.duration_s(), 0.5 * plain_link.duration_s());
}

TEST(SimulatorTest, StreamRateBoundsEveryRound) {
  Scenario s = Validation();
  s.migration.max_bandwidth_mb_s = 0;
  s.migration.stream_rate_mb_s = 20;
  const auto [plain, escdr] = OneMigrationEach(s);
  for (const MigrationRecord& m : {plain, escdr}) {
    EXPECT_GE(QemuTotal(m), static_cast<double>(m.report.stream_bytes) / 20e6 - 1e-6);
    EXPECT_LE(m.report.wire_bytes_sent, m.report.stream_bytes);
  }
  // The network (1 Gbit/s) is not the bottleneck: both modes take about as long.
  EXPECT_NEAR(QemuTotal(escdr), QemuTotal(plain), 0.05 * QemuTotal(plain));
}

TEST(SimulatorTest, SetupAndDonorScanLengthenTheMigrationNotQemusTotal) {
  Scenario s = Validation();
  s.migration.setup_s = 0.8;
  s.migration.donor_scan_s = 0.5;
  const auto [plain, escdr] = OneMigrationEach(s);
  EXPECT_NEAR(plain.duration_s() - QemuTotal(plain), 0.8, 1e-5);
  EXPECT_NEAR(escdr.duration_s() - QemuTotal(escdr), 1.3, 1e-5);
}

TEST(SimulatorTest, HostNamesFollowThePlatformLayout) {
  TopologyOptions t;
  t.pods = 2;
  t.racks_per_pod = 3;
  t.hosts_per_rack = 4;
  EXPECT_EQ(HostName(t, 0), "p0-r0-h0");
  EXPECT_EQ(HostName(t, 5), "p0-r1-h1");
  EXPECT_EQ(HostName(t, 23), "p1-r2-h3");
}

}  // namespace
}  // namespace escdr::sim
