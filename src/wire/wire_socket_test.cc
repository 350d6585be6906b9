#include "escdr/wire/socket.h"

#include <thread>

#include <gtest/gtest.h>

namespace escdr::wire {
namespace {

using std::chrono::milliseconds;

TEST(SocketTest, TcpLoopbackTransfersBothWays) {
  auto listener = TcpListener::Listen("127.0.0.1", 0);
  ASSERT_TRUE(listener.has_value()) << listener.error().message();
  ASSERT_NE(listener->port(), 0);
  std::unique_ptr<Connection> server;
  std::thread t([&] {
    auto c = listener->Accept(Deadline::After(milliseconds(5000)));
    ASSERT_TRUE(c.has_value()) << c.error().message();
    server = std::move(*c);
  });
  auto client = ConnectTcp("127.0.0.1", listener->port(), Deadline::After(milliseconds(5000)));
  t.join();
  ASSERT_TRUE(client.has_value()) << client.error().message();
  ASSERT_TRUE(server);
  EXPECT_NE((*client)->name().find("tcp 127.0.0.1:"), std::string::npos);

  std::vector<std::uint8_t> a(3 << 20), b(100);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<std::uint8_t>(i * 13);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i);
  std::thread w([&] {
    std::span<const std::uint8_t> parts[2] = {a, b};
    EXPECT_TRUE((*client)->WriteAllV(parts, Deadline::After(milliseconds(10000))).ok());
    EXPECT_TRUE((*client)->ShutdownWrite().ok());
  });
  std::vector<std::uint8_t> got(a.size() + b.size());
  ASSERT_TRUE(ReadFull(*server, got, Deadline::After(milliseconds(10000))).ok());
  w.join();
  EXPECT_TRUE(std::equal(a.begin(), a.end(), got.begin()));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), got.begin() + a.size()));
  std::uint8_t one;
  auto eof = server->ReadSome(std::span<std::uint8_t>(&one, 1), Deadline::After(milliseconds(5000)));
  ASSERT_TRUE(eof.has_value());
  EXPECT_EQ(*eof, 0u);
  // The reverse direction still works after the client's half close.
  ASSERT_TRUE(server->WriteAll(b, Deadline::After(milliseconds(5000))).ok());
  std::vector<std::uint8_t> back(b.size());
  ASSERT_TRUE(ReadFull(**client, back, Deadline::After(milliseconds(5000))).ok());
  EXPECT_EQ(back, b);
}

TEST(SocketTest, ConnectToClosedPortIsUnavailable) {
  std::uint16_t port;
  {
    auto l = TcpListener::Listen("127.0.0.1", 0);
    ASSERT_TRUE(l.has_value());
    port = l->port();
  }
  auto c = ConnectTcp("127.0.0.1", port, Deadline::After(milliseconds(2000)));
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kUnavailable) << c.error().message();
}

TEST(SocketTest, ReadTimesOut) {
  auto pair = ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  std::uint8_t buf[8];
  auto r = pair->first->ReadSome(buf, Deadline::After(milliseconds(30)));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kTimeout);
}

TEST(SocketTest, ShutdownWakesABlockedReader) {
  auto pair = ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  Connection* c = pair->first.get();
  std::thread t([c] {
    std::uint8_t buf[8];
    auto r = c->ReadSome(buf, Deadline::Never());
    // Woken by Shutdown: end of file (or an error), never a hang.
    EXPECT_TRUE(!r.has_value() || *r == 0);
  });
  std::this_thread::sleep_for(milliseconds(20));
  c->Shutdown();
  t.join();
}

TEST(SocketTest, WriteToClosedPeerIsUnavailableNotSigpipe) {
  auto pair = ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  pair->second.reset();
  std::vector<std::uint8_t> data(1 << 20, 1);
  Status s = pair->first->WriteAll(data, Deadline::After(milliseconds(5000)));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.message();
}

TEST(SocketTest, WriteTimesOutWhenThePeerDoesNotRead) {
  auto pair = ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  std::vector<std::uint8_t> data(64 << 20, 1);
  Status s = pair->first->WriteAll(data, Deadline::After(milliseconds(50)));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kTimeout) << s.message();
}

}  // namespace
}  // namespace escdr::wire
