#include "escdr/sim/report.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace escdr::sim {
namespace {

TEST(ReportTest, PercentilesUseNearestRank) {
  std::vector<double> v;
  for (int i = 100; i >= 1; --i) v.push_back(i);
  const Percentiles p = ComputePercentiles(v);
  EXPECT_EQ(p.p50, 50);
  EXPECT_EQ(p.p95, 95);
  EXPECT_EQ(p.p99, 99);
  EXPECT_EQ(p.max, 100);
  EXPECT_DOUBLE_EQ(p.mean, 50.5);
  EXPECT_EQ(ComputePercentiles({}).p99, 0);
}

MigrationRecord Record(PathTier tier, std::uint64_t stream, std::uint64_t wire, bool donor) {
  MigrationRecord m;
  m.tier = tier;
  m.has_donor = donor;
  m.start_s = 1;
  m.end_s = 3;
  m.downtime_s = 0.1;
  m.report.stream_bytes = stream;
  m.report.wire_bytes_sent = wire;
  return m;
}

TEST(ReportTest, TierBytesCountEachMigrationOncePerTierItsRouteCrossed) {
  RunResult run;
  run.migrations = {Record(PathTier::kSameRack, 100, 100, false),
                    Record(PathTier::kSamePod, 200, 150, true),
                    Record(PathTier::kCrossPod, 400, 300, true)};
  const RunSummary s = Summarize(run);
  EXPECT_EQ(s.tier_bytes[kHostTier], 550u);
  EXPECT_EQ(s.tier_bytes[kRackTier], 450u);
  EXPECT_EQ(s.tier_bytes[kCoreTier], 300u);
  EXPECT_EQ(s.saved_bytes, 150u);
  EXPECT_EQ(s.with_donor, 2u);
  EXPECT_DOUBLE_EQ(s.time_s.p50, 2);
}

TEST(ReportTest, WriteReportWritesTheSummaryDataAndPlotScript) {
  Scenario scenario;
  scenario.name = "unit";
  RunResult plain, escdr;
  escdr.escdr = true;
  plain.migrations = {Record(PathTier::kCrossPod, 400, 400, true)};
  escdr.migrations = {Record(PathTier::kCrossPod, 400, 250, true)};
  const auto dir = std::filesystem::temp_directory_path() /
                   ("escdr-sim-report-test-" + std::to_string(::getpid()));
  auto files = WriteReport(dir.string(), scenario, {plain, escdr}, ReportInfo{});
  ASSERT_TRUE(files.has_value()) << files.error().ToString();
  for (const char* name : {"summary.md", "results.json", "migrations.csv", "plots.gp"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / name)) << name;
  }
  std::ifstream md(dir / "summary.md");
  std::stringstream text;
  text << md.rdbuf();
  EXPECT_NE(text.str().find("| spread | 100.0% | 400 B | 250 B | 37.5% |"), std::string::npos)
      << text.str();
  std::ifstream csv(dir / "migrations.csv");
  std::string header, row;
  std::getline(csv, header);
  std::getline(csv, row);
  EXPECT_EQ(header.rfind("policy,mode,cause,vm", 0), 0u);
  EXPECT_EQ(row.rfind("spread,plain,drain,0", 0), 0u) << row;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace escdr::sim
