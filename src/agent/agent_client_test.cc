#include "escdr/agent/agent_client.h"

#include <gtest/gtest.h>

namespace escdr::agent {
namespace {

using nlohmann::json;

TEST(AgentAddressTest, ParsesHostAndPort) {
  auto a = ParseAgentAddress("127.0.0.1:7401");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->first, "127.0.0.1");
  EXPECT_EQ(a->second, 7401);
  auto v6 = ParseAgentAddress("[::1]:80");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->first, "::1");
  for (const char* bad : {"localhost", ":80", "host:", "host:99999", "host:8x"}) {
    EXPECT_FALSE(ParseAgentAddress(bad).has_value()) << bad;
  }
}

TEST(MigrateOutRequestTest, RoundTrip) {
  MigrateOutRequest r;
  r.vm = "a";
  r.migration_id = 3;
  r.destination_address = "127.0.0.1:9";
  r.escdr = false;
  r.keep_paused = true;
  r.keep_source = true;
  r.max_bandwidth = 1 << 20;
  r.downtime_limit_ms = 750;
  r.auto_converge = true;
  r.timeout = std::chrono::seconds(60);
  auto back = MigrateOutRequest::FromJson(r.ToJson());
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->ToJson(), r.ToJson());
  EXPECT_EQ(back->downtime_limit_ms, 750u);
  EXPECT_TRUE(back->auto_converge);
  // An older client sends neither: QEMU's defaults, no throttling.
  auto old = MigrateOutRequest::FromJson({{"vm", "a"}, {"migration_id", 1}});
  ASSERT_TRUE(old.has_value()) << old.error().ToString();
  EXPECT_EQ(old->downtime_limit_ms, 0u);
  EXPECT_FALSE(old->auto_converge);
}

TEST(MigrateOutRequestTest, RefusesBadFields) {
  EXPECT_FALSE(MigrateOutRequest::FromJson({{"vm", "a"}}).has_value());  // no migration id
  EXPECT_FALSE(MigrateOutRequest::FromJson({{"migration_id", 1}}).has_value());  // no vm
  EXPECT_FALSE(MigrateOutRequest::FromJson({{"vm", "a"}, {"migration_id", 1}, {"escdr", "yes"}})
                   .has_value());
  EXPECT_FALSE(MigrateOutRequest::FromJson({{"vm", "a"}, {"migration_id", 1}, {"timeout_s", 0}})
                   .has_value());
  EXPECT_FALSE(MigrateOutRequest::FromJson({{"vm", "a"}, {"migration_id", 1}, {"max_bandwidth", -5}})
                   .has_value());
  auto long_downtime = MigrateOutRequest::FromJson(
      {{"vm", "a"}, {"migration_id", 1}, {"downtime_limit_ms", 2000001}});
  ASSERT_FALSE(long_downtime.has_value());
  EXPECT_EQ(long_downtime.error().message(), "downtime_limit_ms 2000001 exceeds 2000000");
  EXPECT_FALSE(MigrateOutRequest::FromJson({{"vm", "a"}, {"migration_id", 1}, {"auto_converge", 1}})
                   .has_value());
}

TEST(MigrationReportJsonTest, RoundTripKeepsEveryFigure) {
  MigrationReport r;
  r.stream_bytes = 1;
  r.rebuilt_bytes = 2;
  r.page_records = 3;
  r.zero_records = 4;
  r.pages_by_position = 5;
  r.pages_by_content = 6;
  r.pages_window_full = 7;
  r.pages_from_donor = 8;
  r.fallbacks = 9;
  r.catalog_entries = 10;
  r.available_entries = 11;
  r.donor_pages_scanned = 12;
  r.scan_time = std::chrono::microseconds(13);
  r.wire_bytes_sent = 14;
  r.wire_bytes_received = 15;
  r.return_path_bytes = 16;
  r.total_time = std::chrono::microseconds(17);
  r.downtime = std::chrono::microseconds(18);
  r.downtime_measured = true;
  r.max_stream_in_flight = 19;
  r.budget_waits = 20;
  r.budget_wait_time = std::chrono::microseconds(21);
  const json j = MigrationReportToJson(r);
  EXPECT_EQ(MigrationReportToJson(MigrationReportFromJson(j)), j);
  EXPECT_EQ(j["bytes_saved_by_position"], 5 * 4096);
  EXPECT_EQ(j["budget_wait_time_us"], 21);
}

TEST(VmInfoJsonTest, RoundTripAndMissingFields) {
  VmInfo v;
  v.name = "a";
  v.role = "running";
  v.pid = 12;
  v.run_state = "paused";
  v.ram_path = "/dev/shm/x";
  v.counter = 42;
  EXPECT_EQ(VmInfo::FromJson(v.ToJson()).ToJson(), v.ToJson());
  VmInfo empty = VmInfo::FromJson({{"name", 5}});
  EXPECT_EQ(empty.name, "");
  EXPECT_FALSE(empty.counter.has_value());
}

}  // namespace
}  // namespace escdr::agent
