#include "escdr/qemu/qmp_commands.h"

#include <gtest/gtest.h>

#include "escdr/sys/unix_socket.h"
#include "testing/fake_qmp_server.h"

namespace escdr {
namespace {

using std::chrono::milliseconds;
using testing::FakeQmpServer;

// A completed 7.2 source-side query-migrate reply (values from a real run).
const char* kCompleted = R"({
  "status": "completed", "total-time": 1234, "downtime": 56, "setup-time": 3,
  "ram": {"transferred": 105000000, "total": 268435456, "remaining": 0,
          "duplicate": 40000, "normal": 25000, "normal-bytes": 102400000,
          "skipped": 0, "dirty-sync-count": 3, "dirty-pages-rate": 12,
          "pages-per-second": 30000, "page-size": 4096, "mbps": 812.5,
          "precopy-bytes": 104000000, "downtime-bytes": 1000000,
          "postcopy-bytes": 0, "multifd-bytes": 0, "postcopy-requests": 0}})";

class QmpCommandsTest : public ::testing::Test {
 protected:
  QmpClient& Start(FakeQmpServer::Script script) {
    auto pair = UnixSocketPair();
    EXPECT_TRUE(pair.has_value());
    server_ = std::make_unique<FakeQmpServer>(std::move(pair->second),
                                              [script](FakeQmpServer& s) {
                                                s.Handshake();
                                                script(s);
                                              });
    auto c = QmpClient::Handshake(std::move(pair->first), "fake");
    EXPECT_TRUE(c.has_value());
    client_ = std::move(*c);
    return *client_;
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
  }
  std::unique_ptr<FakeQmpServer> server_;
  std::unique_ptr<QmpClient> client_;
};

TEST(ParseMigrationInfoTest, ReadsEveryCounter) {
  auto info = ParseMigrationInfo(nlohmann::json::parse(kCompleted));
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->status, "completed");
  EXPECT_TRUE(info->finished());
  EXPECT_EQ(info->total_time_ms, 1234);
  EXPECT_EQ(info->downtime_ms, 56);
  EXPECT_EQ(info->setup_time_ms, 3);
  EXPECT_TRUE(info->has_ram);
  EXPECT_EQ(info->ram_transferred, 105000000u);
  EXPECT_EQ(info->ram_total, 268435456u);
  EXPECT_EQ(info->ram_duplicate, 40000u);
  EXPECT_EQ(info->ram_normal, 25000u);
  EXPECT_EQ(info->ram_normal_bytes, 102400000u);
  EXPECT_EQ(info->ram_dirty_sync_count, 3u);
  EXPECT_EQ(info->ram_page_size, 4096u);
  EXPECT_EQ(info->ram_downtime_bytes, 1000000u);
  EXPECT_DOUBLE_EQ(info->ram_mbps, 812.5);
  EXPECT_EQ(info->raw["ram"]["postcopy-requests"], 0);
}

TEST(ParseMigrationInfoTest, ReadsTheAutoConvergeThrottle) {
  auto info = ParseMigrationInfo({{"status", "active"}, {"cpu-throttle-percentage", 40}});
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->cpu_throttle_percentage, 40u);
  auto none = ParseMigrationInfo({{"status", "active"}});
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->cpu_throttle_percentage, 0u);
}

TEST(ParseMigrationInfoTest, DestinationReplyHasOnlyAStatus) {
  auto info = ParseMigrationInfo({{"status", "active"}});
  ASSERT_TRUE(info.has_value());
  EXPECT_FALSE(info->has_ram);
  EXPECT_FALSE(info->finished());
  EXPECT_EQ(info->ram_transferred, 0u);
}

TEST(ParseMigrationInfoTest, ReplyWithoutStatusIsAProtocolError) {
  auto info = ParseMigrationInfo(nlohmann::json::object());
  ASSERT_FALSE(info.has_value());
  EXPECT_EQ(info.error().code(), StatusCode::kProtocolError);
  EXPECT_FALSE(ParseMigrationInfo(nlohmann::json::array()).has_value());
}

TEST_F(QmpCommandsTest, StatusStopContAndCapabilities) {
  QmpClient& qmp = Start([](FakeQmpServer& s) {
    s.Reply(s.ExpectCommand("query-status"), {{"status", "postmigrate"}, {"running", false}});
    s.Reply(s.ExpectCommand("stop"));
    s.Reply(s.ExpectCommand("cont"));
    nlohmann::json caps = s.ExpectCommand("migrate-set-capabilities");
    EXPECT_EQ(caps["arguments"]["capabilities"],
              nlohmann::json::parse(R"([{"capability":"events","state":false},
                                        {"capability":"return-path","state":true}])"));
    s.Reply(caps);
    nlohmann::json params = s.ExpectCommand("migrate-set-parameters");
    EXPECT_EQ(params["arguments"]["max-bandwidth"], 1073741824);
    s.Reply(params);
    nlohmann::json mig = s.ExpectCommand("migrate");
    EXPECT_EQ(mig["arguments"]["uri"], "unix:/tmp/out.sock");
    s.Reply(mig);
    nlohmann::json in = s.ExpectCommand("migrate-incoming");
    EXPECT_EQ(in["arguments"]["uri"], "unix:/tmp/in.sock");
    s.Reply(in);
    s.Reply(s.ExpectCommand("migrate_cancel"));
  });
  auto status = QueryStatus(qmp);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, "postmigrate");
  EXPECT_TRUE(Stop(qmp).ok());
  EXPECT_TRUE(Cont(qmp).ok());
  EXPECT_TRUE(SetMigrationCapabilities(qmp, {{"return-path", true}, {"events", false}}).ok());
  EXPECT_TRUE(SetMigrationParameters(qmp, {{"max-bandwidth", 1073741824}}).ok());
  EXPECT_TRUE(Migrate(qmp, "unix:/tmp/out.sock").ok());
  EXPECT_TRUE(MigrateIncoming(qmp, "unix:/tmp/in.sock").ok());
  EXPECT_TRUE(MigrateCancel(qmp).ok());
}

TEST_F(QmpCommandsTest, SetMigrationParametersRejectsANonObject) {
  QmpClient& qmp = Start([](FakeQmpServer&) {});
  Status s = SetMigrationParameters(qmp, nlohmann::json::array());
  EXPECT_TRUE(s.IsInvalidArgument());
}

TEST_F(QmpCommandsTest, WaitForMigrationPollsUntilCompleted) {
  QmpClient& qmp = Start([](FakeQmpServer& s) {
    s.Reply(s.ExpectCommand("query-migrate"), {{"status", "setup"}});
    s.Reply(s.ExpectCommand("query-migrate"), {{"status", "active"}, {"ram", {{"transferred", 5}}}});
    s.Reply(s.ExpectCommand("query-migrate"), nlohmann::json::parse(kCompleted));
  });
  auto info = WaitForMigration(qmp, std::chrono::seconds(60), milliseconds(1));
  ASSERT_TRUE(info.has_value()) << info.error().ToString();
  EXPECT_EQ(info->status, "completed");
  EXPECT_EQ(info->ram_transferred, 105000000u);
}

TEST_F(QmpCommandsTest, FailedMigrationIsAbortedWithQemusReason) {
  QmpClient& qmp = Start([](FakeQmpServer& s) {
    s.Reply(s.ExpectCommand("query-migrate"),
            {{"status", "failed"}, {"error-desc", "Unable to write to socket: Broken pipe"}});
    s.Reply(s.ExpectCommand("query-migrate"), {{"status", "cancelled"}});
  });
  auto info = WaitForMigration(qmp, std::chrono::seconds(60), milliseconds(1));
  ASSERT_FALSE(info.has_value());
  EXPECT_EQ(info.error().code(), StatusCode::kAborted);
  EXPECT_NE(info.error().message().find("Broken pipe"), std::string::npos);
  info = WaitForMigration(qmp, std::chrono::seconds(60), milliseconds(1));
  ASSERT_FALSE(info.has_value());
  EXPECT_NE(info.error().message().find("cancelled"), std::string::npos);
}

TEST_F(QmpCommandsTest, WaitForMigrationTimesOutWithTheLastStatus) {
  QmpClient& qmp = Start([](FakeQmpServer& s) {
    for (;;) {
      nlohmann::json cmd = s.Receive();
      if (cmd.is_null()) return;
      s.Reply(cmd, {{"status", "active"}, {"ram", {{"transferred", 777}}}});
    }
  });
  auto info = WaitForMigration(qmp, milliseconds(30), milliseconds(5));
  ASSERT_FALSE(info.has_value());
  EXPECT_EQ(info.error().code(), StatusCode::kTimeout);
  EXPECT_NE(info.error().message().find("active"), std::string::npos);
  EXPECT_NE(info.error().message().find("777"), std::string::npos);
}

TEST_F(QmpCommandsTest, QuitSucceedsWhenQemuClosesBeforeReplying) {
  QmpClient& qmp = Start([](FakeQmpServer& s) {
    s.ExpectCommand("quit");
    s.Close();
  });
  EXPECT_TRUE(Quit(qmp).ok());
}

}  // namespace
}  // namespace escdr
