#include "escdr/qemu/qmp.h"

#include <atomic>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unix_socket.h"
#include "testing/fake_qmp_server.h"

namespace escdr {
namespace {

using std::chrono::milliseconds;
using testing::FakeQmpServer;

// A client connected to a scripted server over a socketpair.
struct Connected {
  std::unique_ptr<FakeQmpServer> server;
  Result<std::unique_ptr<QmpClient>> client = Err(Status::Internal("not connected"));
};

Connected Connect(FakeQmpServer::Script script,
                  milliseconds timeout = QmpClient::kDefaultTimeout) {
  auto pair = UnixSocketPair();
  EXPECT_TRUE(pair.has_value());
  Connected c;
  c.server = std::make_unique<FakeQmpServer>(std::move(pair->second), std::move(script));
  c.client = QmpClient::Handshake(std::move(pair->first), "fake-qmp", timeout);
  return c;
}

TEST(QmpClientTest, HandshakeNegotiatesCapabilitiesAndReportsTheVersion) {
  auto c = Connect([](FakeQmpServer& s) { s.Handshake(); });
  ASSERT_TRUE(c.client.has_value()) << c.client.error().ToString();
  EXPECT_EQ((*c.client)->qemu_version(), "7.2.22");
  EXPECT_TRUE((*c.client)->greeting().contains("capabilities"));
  EXPECT_EQ((*c.client)->name(), "fake-qmp");
}

TEST(QmpClientTest, ExecuteSendsArgumentsAndReturnsTheReturnValue) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    nlohmann::json cmd = s.ExpectCommand("migrate");
    EXPECT_EQ(cmd["arguments"], nlohmann::json({{"uri", "unix:/tmp/m.sock"}}));
    EXPECT_TRUE(cmd.contains("id"));
    s.Reply(cmd, {{"answer", 42}});
    cmd = s.ExpectCommand("query-status");
    EXPECT_FALSE(cmd.contains("arguments"));
    s.Reply(cmd, {{"status", "running"}});
  });
  ASSERT_TRUE(c.client.has_value());
  QmpClient& qmp = **c.client;
  auto r = qmp.Execute("migrate", {{"uri", "unix:/tmp/m.sock"}});
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ((*r)["answer"], 42);
  r = qmp.Execute("query-status");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ((*r)["status"], "running");
}

TEST(QmpClientTest, QmpErrorBecomesAStatusNamingCommandAndDescription) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    s.ReplyError(s.ExpectCommand("cont"), "GenericError", "Migration is not finalized yet");
    s.ReplyError(s.ExpectCommand("frobnicate"), "CommandNotFound",
                 "The command frobnicate has not been found");
    s.ReplyError(s.ExpectCommand("device_del"), "DeviceNotFound", "Device 'x' not found");
  });
  ASSERT_TRUE(c.client.has_value());
  QmpClient& qmp = **c.client;
  auto r = qmp.Execute("cont");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.error().message().find("cont"), std::string::npos);
  EXPECT_NE(r.error().message().find("Migration is not finalized yet"), std::string::npos);
  r = qmp.Execute("frobnicate");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotSupported);
  r = qmp.Execute("device_del", {{"id", "x"}});
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(r.error().IsNotFound());
  // The connection survives errors.
  EXPECT_TRUE(qmp.connected());
}

TEST(QmpClientTest, EventsInterleavedWithRepliesAreQueuedInOrder) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    nlohmann::json cmd = s.ExpectCommand("stop");
    s.SendEvent("STOP");
    s.SendEvent("MIGRATION", {{"status", "setup"}});
    s.Reply(cmd);
    s.SendEvent("MIGRATION", {{"status", "active"}});
    s.SendEvent("RESUME");
  });
  ASSERT_TRUE(c.client.has_value());
  QmpClient& qmp = **c.client;
  ASSERT_TRUE(qmp.Execute("stop").has_value());

  auto resume = qmp.WaitForEvent("RESUME", std::chrono::seconds(30));
  ASSERT_TRUE(resume.has_value()) << resume.error().ToString();
  auto stop = qmp.WaitForEvent("STOP", milliseconds(0));
  ASSERT_TRUE(stop.has_value());
  EXPECT_TRUE(stop->data.is_null());
  EXPECT_DOUBLE_EQ(stop->timestamp_s, 1700000000.25);
  auto m1 = qmp.WaitForEvent("MIGRATION", milliseconds(0));
  auto m2 = qmp.WaitForEvent("MIGRATION", milliseconds(0));
  ASSERT_TRUE(m1.has_value() && m2.has_value());
  EXPECT_EQ(m1->data["status"], "setup");
  EXPECT_EQ(m2->data["status"], "active");
  EXPECT_TRUE(qmp.TakeEvents().empty());
}

TEST(QmpClientTest, TakeEventsDrainsTheQueue) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    s.SendEvent("A");
    s.SendEvent("B");
    s.Reply(s.ExpectCommand("query-status"), {{"status", "running"}});
  });
  ASSERT_TRUE(c.client.has_value());
  // The reply comes after both events, so both are queued once it is back.
  ASSERT_TRUE((*c.client)->Execute("query-status").has_value());
  auto events = (*c.client)->TakeEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].name, "A");
  EXPECT_EQ(events[1].name, "B");
}

TEST(QmpClientTest, WaitForEventTimesOut) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    s.SendEvent("STOP");
    s.Receive();  // keeps the connection open until the client goes
  });
  ASSERT_TRUE(c.client.has_value());
  auto e = (*c.client)->WaitForEvent("SHUTDOWN", milliseconds(30));
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code(), StatusCode::kTimeout);
  EXPECT_NE(e.error().message().find("SHUTDOWN"), std::string::npos);
}

TEST(QmpClientTest, ClosedSocketIsUnavailableForWaitingAndLaterCalls) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    s.ExpectCommand("query-migrate");
    s.Close();
  });
  ASSERT_TRUE(c.client.has_value());
  QmpClient& qmp = **c.client;
  auto r = qmp.Execute("query-migrate");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.error().message().find("query-migrate"), std::string::npos);
  EXPECT_FALSE(qmp.connected());
  r = qmp.Execute("query-status");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  auto e = qmp.WaitForEvent("STOP", std::chrono::seconds(30));
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code(), StatusCode::kUnavailable);
}

TEST(QmpClientTest, QueuedEventsSurviveTheConnectionClosing) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    s.SendEvent("SHUTDOWN", {{"guest", false}});
    s.Close();
  });
  ASSERT_TRUE(c.client.has_value());
  auto e = (*c.client)->WaitForEvent("SHUTDOWN", std::chrono::seconds(30));
  ASSERT_TRUE(e.has_value()) << e.error().ToString();
  EXPECT_EQ(e->data["guest"], false);
}

TEST(QmpClientTest, LineThatIsNotJsonIsAProtocolError) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    s.ExpectCommand("query-status");
    s.SendRaw("this is not json\r\n");
  });
  ASSERT_TRUE(c.client.has_value());
  auto r = (*c.client)->Execute("query-status");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kProtocolError);
  EXPECT_NE(r.error().message().find("not a JSON object"), std::string::npos);
}

TEST(QmpClientTest, PeerWithoutGreetingIsAProtocolError) {
  auto c = Connect([](FakeQmpServer& s) { s.Send({{"return", nlohmann::json::object()}}); });
  ASSERT_FALSE(c.client.has_value());
  EXPECT_EQ(c.client.error().code(), StatusCode::kProtocolError);
}

TEST(QmpClientTest, SilentPeerTimesOutDuringHandshake) {
  auto c = Connect([](FakeQmpServer& s) { s.Receive(); }, milliseconds(30));
  ASSERT_FALSE(c.client.has_value());
  EXPECT_EQ(c.client.error().code(), StatusCode::kTimeout);
}

TEST(QmpClientTest, TimedOutCommandDropsItsLateReply) {
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    nlohmann::json slow = s.ExpectCommand("slow");
    nlohmann::json next = s.ExpectCommand("next");  // sent after "slow" timed out
    s.Reply(slow, {{"which", "slow"}});
    s.Reply(next, {{"which", "next"}});
  });
  ASSERT_TRUE(c.client.has_value());
  QmpClient& qmp = **c.client;
  auto r = qmp.Execute("slow", nullptr, milliseconds(30));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kTimeout);
  r = qmp.Execute("next");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ((*r)["which"], "next");
}

TEST(QmpClientTest, ConcurrentCommandsEachGetTheirOwnReply) {
  constexpr int kThreads = 4;
  auto c = Connect([](FakeQmpServer& s) {
    s.Handshake();
    std::vector<nlohmann::json> cmds;
    for (int i = 0; i < kThreads; ++i) cmds.push_back(s.ExpectCommand("echo"));
    // Answer in reverse order: replies are matched by id, not by position.
    for (int i = kThreads - 1; i >= 0; --i) s.Reply(cmds[i], cmds[i]["arguments"]);
  });
  ASSERT_TRUE(c.client.has_value());
  QmpClient& qmp = **c.client;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&qmp, &ok, i] {
      auto r = qmp.Execute("echo", {{"n", i}});
      if (r.has_value() && (*r)["n"] == i) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads);
}

TEST(QmpClientTest, ConnectWaitsForTheSocketAndSpeaksQmpOverIt) {
  auto dir = TempDir::Create("escdr-qmp");
  ASSERT_TRUE(dir.has_value());
  std::string path = dir->File("qmp.sock");
  std::unique_ptr<FakeQmpServer> server;
  std::thread listener([&] {
    std::this_thread::sleep_for(milliseconds(100));  // the socket appears late
    auto l = ListenUnix(path);
    ASSERT_TRUE(l.has_value());
    auto conn = AcceptUnix(l->get(), std::chrono::seconds(30));
    ASSERT_TRUE(conn.has_value());
    server = std::make_unique<FakeQmpServer>(std::move(*conn), [](FakeQmpServer& s) {
      s.Handshake();
      s.Reply(s.ExpectCommand("query-status"), {{"status", "paused"}});
    });
  });
  auto client = QmpClient::Connect(path, std::chrono::seconds(30));
  listener.join();
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  auto r = (*client)->Execute("query-status");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ((*r)["status"], "paused");
  EXPECT_EQ((*client)->name(), path);
}

TEST(QmpClientTest, ConnectGivesUpWhenKeepWaitingFails) {
  auto dir = TempDir::Create("escdr-qmp");
  ASSERT_TRUE(dir.has_value());
  auto client = QmpClient::Connect(dir->File("none.sock"), std::chrono::seconds(60),
                                   [] { return Status::Aborted("QEMU exited"); });
  ASSERT_FALSE(client.has_value());
  EXPECT_EQ(client.error().code(), StatusCode::kAborted);
}

}  // namespace
}  // namespace escdr
