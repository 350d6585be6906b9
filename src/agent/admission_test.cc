// ConnectionGate: the per-address cap, the pool of unauthenticated
// connections that evicts the oldest of the busiest address (never a lone
// client while others hold more), the separate authenticated pool, places
// given back, and the rate-limited summary. Connections are socket pairs, so
// a closed or shut-down connection shows as end of file at the other end.
#include "agent/admission.h"

#include <gtest/gtest.h>

#include <vector>

#include "escdr/wire/socket.h"

namespace escdr::agent {
namespace {

using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

struct Peer {
  std::unique_ptr<wire::Connection> far;  // the client's end
  std::optional<ConnectionGate::Admission> admitted;
};

Peer Connect(ConnectionGate& gate, const std::string& address) {
  auto pair = wire::ConnectionPair().value();
  Peer p;
  p.far = std::move(pair.first);
  p.admitted = gate.Admit(address, std::move(pair.second));
  return p;
}

// True if the client's end sees the agent's end closed or shut down.
bool ClosedForTheClient(Peer& p) {
  std::uint8_t b;
  auto r = p.far->ReadSome(std::span<std::uint8_t>(&b, 1),
                           Deadline::After(std::chrono::milliseconds(200)));
  return r.has_value() && *r == 0;
}

TEST(ConnectionGateTest, AddressOfAConnectionName) {
  EXPECT_EQ(ConnectionGate::AddressOf("tcp 127.0.0.2:5123"), "127.0.0.2");
  EXPECT_EQ(ConnectionGate::AddressOf("tcp [::1]:80"), "::1");
  EXPECT_EQ(ConnectionGate::AddressOf("socketpair end 1"), "socketpair end 1");
}

TEST(ConnectionGateTest, PerAddressCapRefusesAndClosesAtOnce) {
  ConnectionGate gate({.per_address = 3, .unauthenticated = 10, .authenticated = 10});
  std::vector<Peer> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(Connect(gate, "10.0.0.2"));
    ASSERT_TRUE(held.back().admitted.has_value());
  }
  Peer refused = Connect(gate, "10.0.0.2");
  EXPECT_FALSE(refused.admitted.has_value());
  EXPECT_TRUE(ClosedForTheClient(refused));
  // Another address is not affected; the held ones are not closed.
  Peer other = Connect(gate, "10.0.0.3");
  EXPECT_TRUE(other.admitted.has_value());
  EXPECT_FALSE(ClosedForTheClient(held[0]));
  EXPECT_EQ(gate.counts().refused_per_address, 1u);
  EXPECT_EQ(gate.counts().unauthenticated, 4);
  // A place given back can be taken again.
  held.pop_back();
  EXPECT_TRUE(Connect(gate, "10.0.0.2").admitted.has_value());
}

TEST(ConnectionGateTest, FullPoolEvictsTheOldestOfTheBusiestAddressNotALoneClient) {
  ConnectionGate gate({.per_address = 4, .unauthenticated = 6, .authenticated = 10});
  Peer lone = Connect(gate, "127.0.0.1");  // the oldest of all
  std::vector<Peer> flood;
  for (const char* a : {"127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3", "127.0.0.2"}) {
    flood.push_back(Connect(gate, a));
  }
  EXPECT_EQ(gate.counts().unauthenticated, 6);
  // Full: the next evicts 127.0.0.2's oldest (flood[0]), not the lone client.
  Peer next = Connect(gate, "127.0.0.4");
  ASSERT_TRUE(next.admitted.has_value());
  EXPECT_TRUE(flood[0].admitted->pass->evicted());
  EXPECT_TRUE(ClosedForTheClient(flood[0]));
  EXPECT_FALSE(lone.admitted->pass->evicted());
  EXPECT_FALSE(ClosedForTheClient(lone));
  EXPECT_EQ(gate.counts().evicted, 1u);
  EXPECT_EQ(gate.counts().unauthenticated, 6);
  // An evicted connection cannot authenticate; the lone client can.
  EXPECT_FALSE(gate.Authenticate(*flood[0].admitted->pass));
  EXPECT_TRUE(gate.Authenticate(*lone.admitted->pass));
  // Reopening keeps evicting the flood's own connections.
  for (int i = 0; i < 20; ++i) {
    Peer again = Connect(gate, i % 2 == 0 ? "127.0.0.2" : "127.0.0.3");
    ASSERT_TRUE(again.admitted.has_value());
    flood.push_back(std::move(again));
  }
  EXPECT_FALSE(next.admitted->pass->evicted());
  EXPECT_LE(gate.counts().unauthenticated, 6);
  // Destroying an evicted pass gives nothing back twice.
  flood.clear();
  next.admitted.reset();
  EXPECT_EQ(gate.counts().unauthenticated, 0);
  EXPECT_EQ(gate.counts().authenticated, 1);
}

TEST(ConnectionGateTest, AuthenticatedPlacesAreSeparateAndCapped) {
  ConnectionGate gate({.per_address = 8, .unauthenticated = 2, .authenticated = 2});
  Peer a = Connect(gate, "10.0.0.1");
  Peer b = Connect(gate, "10.0.0.1");
  ASSERT_TRUE(gate.Authenticate(*a.admitted->pass));
  ASSERT_TRUE(gate.Authenticate(*b.admitted->pass));
  // Two more unauthenticated fit although two are served.
  Peer c = Connect(gate, "10.0.0.2");
  Peer d = Connect(gate, "10.0.0.2");
  EXPECT_EQ(gate.counts().unauthenticated, 2);
  EXPECT_EQ(gate.counts().evicted, 0u);
  // The authenticated pool is full.
  EXPECT_FALSE(gate.Authenticate(*c.admitted->pass));
  EXPECT_EQ(gate.counts().refused_authenticated_full, 1u);
  a.admitted.reset();
  EXPECT_TRUE(gate.Authenticate(*d.admitted->pass));
  EXPECT_EQ(gate.counts().authenticated, 2);
}

TEST(ConnectionGateTest, SummaryOncePerPeriodAndSingleLinesLimited) {
  ConnectionGate gate({.per_address = 1, .unauthenticated = 4, .authenticated = 4});
  const auto t0 = Clock::now();
  EXPECT_FALSE(gate.TakeSummary(t0).has_value());
  Peer held = Connect(gate, "10.0.0.9");
  for (int i = 0; i < 30; ++i) EXPECT_FALSE(Connect(gate, "10.0.0.9").admitted.has_value());
  gate.CountHandshakeFailure(true);
  gate.CountHandshakeFailure(false);
  int single = 0;
  for (int i = 0; i < 25; ++i) single += gate.MayLogSingly(t0) ? 1 : 0;
  EXPECT_EQ(single, ConnectionGate::kSingleLinesPerPeriod);
  EXPECT_FALSE(gate.TakeSummary(t0 + seconds(1)).has_value());
  auto line = gate.TakeSummary(t0 + ConnectionGate::kPeriod + seconds(1));
  ASSERT_TRUE(line.has_value());
  std::printf("  %s\n", line->c_str());
  EXPECT_NE(line->find("30 refused at 1 per address (from 1 addresses; most from 10.0.0.9: 30)"),
            std::string::npos)
      << *line;
  EXPECT_NE(line->find("1 handshake deadlines, 1 failed handshakes"), std::string::npos) << *line;
  EXPECT_NE(line->find("15 single log lines left out"), std::string::npos) << *line;
  EXPECT_NE(line->find("now 1 unauthenticated"), std::string::npos) << *line;
  // A quiet period says nothing, and single lines are allowed again.
  EXPECT_FALSE(gate.TakeSummary(t0 + 3 * ConnectionGate::kPeriod).has_value());
  EXPECT_TRUE(gate.MayLogSingly(t0));
}

}  // namespace
}  // namespace escdr::agent
