#include "escdr/sys/unix_socket.h"

#include <unistd.h>

#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "escdr/sys/temp_dir.h"

namespace escdr {
namespace {

using std::chrono::milliseconds;

class UnixSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("escdr-us");
    ASSERT_TRUE(d.has_value()) << d.error().ToString();
    dir_ = std::move(*d);
  }
  TempDir dir_;
};

TEST_F(UnixSocketTest, ListenAcceptConnectCarriesBytesBothWays) {
  std::string path = dir_.File("s.sock");
  auto listener = ListenUnix(path);
  ASSERT_TRUE(listener.has_value()) << listener.error().ToString();
  auto client = ConnectUnix(path, milliseconds(5000));
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  auto server = AcceptUnix(listener->get(), milliseconds(5000));
  ASSERT_TRUE(server.has_value()) << server.error().ToString();

  ASSERT_TRUE(WriteFull(client->get(), "ping").ok());
  char buf[4];
  auto n = ReadFull(server->get(), buf, 4);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(std::string(buf, *n), "ping");
  ASSERT_TRUE(WriteFull(server->get(), "pong").ok());
  n = ReadFull(client->get(), buf, 4);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(std::string(buf, *n), "pong");
}

TEST_F(UnixSocketTest, ConnectRetriesUntilTheSocketAppears) {
  std::string path = dir_.File("late.sock");
  UniqueFd listener;
  std::thread late([&] {
    std::this_thread::sleep_for(milliseconds(200));
    auto l = ListenUnix(path);
    ASSERT_TRUE(l.has_value());
    listener = std::move(*l);
  });
  auto client = ConnectUnix(path, std::chrono::seconds(60));
  late.join();
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  EXPECT_TRUE(listener.valid());
}

TEST_F(UnixSocketTest, ConnectTimesOutNamingThePath) {
  std::string path = dir_.File("never.sock");
  auto client = ConnectUnix(path, milliseconds(30));
  ASSERT_FALSE(client.has_value());
  EXPECT_EQ(client.error().code(), StatusCode::kTimeout);
  EXPECT_NE(client.error().message().find(path), std::string::npos);
}

TEST_F(UnixSocketTest, KeepWaitingErrorEndsTheWait) {
  int calls = 0;
  auto client = ConnectUnix(dir_.File("never.sock"), std::chrono::seconds(60), [&calls] {
    return ++calls < 3 ? Status::OK() : Status::Aborted("qemu exited");
  });
  ASSERT_FALSE(client.has_value());
  EXPECT_EQ(client.error().code(), StatusCode::kAborted);
  EXPECT_EQ(calls, 3);
}

TEST_F(UnixSocketTest, ListenOnAnExistingPathIsAlreadyExists) {
  std::string path = dir_.File("dup.sock");
  auto first = ListenUnix(path);
  ASSERT_TRUE(first.has_value());
  auto second = ListenUnix(path);
  ASSERT_FALSE(second.has_value());
  EXPECT_EQ(second.error().code(), StatusCode::kAlreadyExists);
}

TEST_F(UnixSocketTest, OverlongPathIsInvalidArgument) {
  std::string path = "/tmp/" + std::string(200, 'a');
  auto l = ListenUnix(path);
  ASSERT_FALSE(l.has_value());
  EXPECT_TRUE(l.error().IsInvalidArgument());
  auto c = ConnectUnix(path, milliseconds(10));
  ASSERT_FALSE(c.has_value());
  EXPECT_TRUE(c.error().IsInvalidArgument());
}

TEST_F(UnixSocketTest, AcceptTimesOutWithoutAClient) {
  auto listener = ListenUnix(dir_.File("quiet.sock"));
  ASSERT_TRUE(listener.has_value());
  auto a = AcceptUnix(listener->get(), milliseconds(20));
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), StatusCode::kTimeout);
}

TEST_F(UnixSocketTest, ConnectionRefusedOnAStaleSocketIsRetriedThenTimesOut) {
  std::string path = dir_.File("stale.sock");
  {
    auto l = ListenUnix(path);
    ASSERT_TRUE(l.has_value());
  }  // closed, but the socket file stays: connect() gets ECONNREFUSED
  auto c = ConnectUnix(path, milliseconds(30));
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kTimeout);
}

}  // namespace
}  // namespace escdr
