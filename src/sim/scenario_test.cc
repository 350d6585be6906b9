#include "escdr/sim/scenario.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace escdr::sim {
namespace {

const char* kKind =
    R"("kind": {"os": "debian", "os_version": "12", "hypervisor": "qemu", "hypervisor_version": "7.2"})";

std::string Minimal(const std::string& extra_kind_fields = R"(, "static_fraction": 0.3)",
                    const std::string& extra = "") {
  return std::string(R"({"kinds": [{)") + kKind + extra_kind_fields + "}]" + extra + "}";
}

TEST(ScenarioTest, ShippedSmallScenarioParses) {
  auto s = LoadScenario(ESCDR_SOURCE_DIR "/tests/sim/small/scenario.json");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->name, "small");
  EXPECT_EQ(s->topology.hosts(), 12u);
  ASSERT_EQ(s->kinds.size(), 3u);
  EXPECT_DOUBLE_EQ(s->kinds[0].static_fraction(), 0.2);
  EXPECT_EQ(s->workload.script.size(), 2u);
  EXPECT_EQ(s->workload.script[0].host, "p0-r0-h0");
  EXPECT_EQ(s->vms.memory_mib.type, Distribution::Type::kChoice);
}

TEST(ScenarioTest, DefaultsApplyToAMinimalScenario) {
  auto s = ParseScenario(Minimal(), "");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_TRUE(s->migration.zero_page_skipping);
  EXPECT_EQ(s->placement.policies.size(), 3u);
}

TEST(ScenarioTest, StreamLimitsAndSetupDefaultToNone) {
  auto s = ParseScenario(Minimal(), "");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->migration.stream_rate_mb_s, 0);
  EXPECT_EQ(s->migration.setup_s, 0);
  EXPECT_EQ(s->migration.donor_scan_s, 0);
  EXPECT_TRUE(s->references.empty());
}

TEST(ScenarioTest, MigrationStreamRateAndSetupAreRead) {
  auto s = ParseScenario(
      Minimal(R"(, "static_fraction": 0.3)",
              R"(, "migration": {"stream_rate_mb_s": 30, "setup_s": 0.8, "donor_scan_s": 0.5})"),
      "");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_DOUBLE_EQ(s->migration.stream_rate_mb_s, 30);
  EXPECT_DOUBLE_EQ(s->migration.setup_s, 0.8);
  EXPECT_DOUBLE_EQ(s->migration.donor_scan_s, 0.5);
  auto bad = ParseScenario(
      Minimal(R"(, "static_fraction": 0.3)", R"(, "migration": {"stream_rate_mb_s": -1})"), "x.json");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("migration.stream_rate_mb_s"), std::string::npos);
}

TEST(ScenarioTest, ReferenceIsAnObjectOrAnArray) {
  auto one = ParseScenario(
      Minimal(R"(, "static_fraction": 0.3)",
              R"(, "reference": {"measured_total_s": 2.5, "escdr": true})"),
      "");
  ASSERT_TRUE(one.has_value()) << one.error().ToString();
  ASSERT_EQ(one->references.size(), 1u);
  EXPECT_TRUE(one->references[0].escdr);
  auto two = ParseScenario(
      Minimal(R"(, "static_fraction": 0.3)",
              R"(, "reference": [{"measured_total_s": 7.6, "measured_downtime_ms": 200, "escdr": true},
                                 {"measured_total_s": 30.5}])"),
      "");
  ASSERT_TRUE(two.has_value()) << two.error().ToString();
  ASSERT_EQ(two->references.size(), 2u);
  EXPECT_DOUBLE_EQ(*two->references[0].measured_downtime_ms, 200);
  EXPECT_FALSE(two->references[1].escdr);
  EXPECT_DOUBLE_EQ(*two->references[1].measured_total_s, 30.5);
  auto bad = ParseScenario(
      Minimal(R"(, "static_fraction": 0.3)", R"(, "reference": [{}, {"measured_total_s": 0}])"),
      "x.json");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("reference[1].measured_total_s"), std::string::npos);
}

TEST(ScenarioTest, UnknownKeyIsRejectedWithItsPath) {
  auto s = ParseScenario(Minimal(R"(, "static_fraction": 0.3)",
                                 R"(, "topology": {"hosts_per_rak": 4})"),
                         "x.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("x.json: topology.hosts_per_rak is not a known key"),
            std::string::npos)
      << s.error().message();
}

TEST(ScenarioTest, OutOfRangeValueIsRejected) {
  auto s = ParseScenario(Minimal(R"(, "static_fraction": 0.3)",
                                 R"(, "topology": {"hosts_per_rack": 0})"),
                         "x.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("topology.hosts_per_rack must be an integer in [1"),
            std::string::npos)
      << s.error().message();
}

TEST(ScenarioTest, KindWithoutStaticFractionIsRejected) {
  auto s = ParseScenario(Minimal(""), "x.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("needs static_fraction"), std::string::npos)
      << s.error().message();
}

TEST(ScenarioTest, FractionsAboveOneAreRejected) {
  auto s = ParseScenario(Minimal(R"(, "static_fraction": 0.7, "zero_fraction": 0.5)"), "x.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("exceed 1"), std::string::npos) << s.error().message();
}

TEST(ScenarioTest, MalformedJsonNamesTheFile) {
  auto s = ParseScenario("{\"kinds\": [", "broken.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("cannot parse broken.json"), std::string::npos);
}

TEST(ScenarioTest, MissingFileIsAnIOError) {
  auto s = LoadScenario("/nonexistent/escdr/scenario.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), StatusCode::kIOError);
}

TEST(ScenarioTest, BadDistributionIsRejected) {
  auto s = ParseScenario(
      Minimal(R"(, "static_fraction": 0.3)", R"(, "vms": {"memory_mib": {"uniform": [8, 2]}})"),
      "x.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("vms.memory_mib.uniform must have lo <= hi"),
            std::string::npos)
      << s.error().message();
  s = ParseScenario(
      Minimal(R"(, "static_fraction": 0.3)", R"(, "vms": {"vcpus": {"poisson": 2}})"), "x.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("exactly one of"), std::string::npos);
}

TEST(ScenarioTest, UnknownPolicyAndEventTypeAreRejected) {
  auto s = ParseScenario(Minimal(R"(, "static_fraction": 0.3)",
                                 R"(, "placement": {"policies": ["spread", "best"]})"),
                         "x.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("unknown placement policy 'best'"), std::string::npos);
  s = ParseScenario(Minimal(R"(, "static_fraction": 0.3)",
                            R"(, "workload": {"script": [{"at_s": 1, "type": "reboot"}]})"),
                    "x.json");
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("workload.script[0].type"), std::string::npos);
}

TEST(ScenarioTest, DistributionsSampleWithinTheirBounds) {
  auto s = ParseScenario(
      Minimal(R"(, "static_fraction": 0.3)",
              R"(, "vms": {"dirty_rate_mib_s": {"lognormal": {"median": 10, "sigma": 2}, "max": 50},
                           "memory_mib": {"choice": [1024, 2048], "weights": [0, 1]}})"),
      "x.json");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  Rng rng(5);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_LE(s->vms.dirty_rate_mib_s.Sample(rng), 50);
    EXPECT_EQ(s->vms.memory_mib.Sample(rng), 2048);
  }
}

class CatalogMatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("escdr-sim-scenario-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  std::filesystem::path dir_;
};

// The shape `escdr --json catalog match` prints.
const char* kMatch = R"({"kind": {"os": "debian", "os_version": "12", "hypervisor": "qemu",
  "hypervisor_version": "7.2"}, "image": "/tmp/vm.ram", "blocks": [],
  "pages": {"total": 1000, "zero": 700, "by_position": 200, "by_content_only": 50, "other": 50},
  "total_bytes": 4096000, "saved_bytes": 1024000, "saved_percent": 25.0,
  "saved_percent_of_nonzero": 83.3, "seconds": 0.1})";

TEST_F(CatalogMatchTest, ScenarioReadsFractionsFromAMatchFile) {
  Write("match.json", kMatch);
  const std::string scenario =
      Write("s.json", R"({"kinds": [{"catalog_match": "match.json", "weight": 2}]})");
  auto s = LoadScenario(scenario);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  ASSERT_EQ(s->kinds.size(), 1u);
  EXPECT_EQ(s->kinds[0].kind.os, "debian");
  EXPECT_DOUBLE_EQ(s->kinds[0].zero_fraction, 0.7);
  EXPECT_DOUBLE_EQ(s->kinds[0].by_position_fraction, 0.2);
  EXPECT_DOUBLE_EQ(s->kinds[0].by_content_fraction, 0.05);
  EXPECT_EQ(s->kinds[0].source, (dir_ / "match.json").string());
}

TEST_F(CatalogMatchTest, MatchOutputThatDoesNotAddUpIsRejected) {
  auto f = ParseCatalogMatch(
      R"({"kind": {"os": "a", "os_version": "1", "hypervisor": "q", "hypervisor_version": "7"},
          "pages": {"total": 10, "zero": 5, "by_position": 5, "by_content_only": 5, "other": 0}})",
      "m.json");
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("do not add up"), std::string::npos);
  f = ParseCatalogMatch(R"({"kind": {}, "blocks": []})", "m.json");
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("needs \"kind\" and \"pages\""), std::string::npos);
}

TEST_F(CatalogMatchTest, MissingMatchFileNamesIt) {
  const std::string scenario =
      Write("s.json", R"({"kinds": [{"catalog_match": "nope.json"}]})");
  auto s = LoadScenario(scenario);
  ASSERT_FALSE(s.has_value());
  EXPECT_NE(s.error().message().find("nope.json"), std::string::npos) << s.error().message();
}

}  // namespace
}  // namespace escdr::sim
