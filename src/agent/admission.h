// ConnectionGate: who gets a place on the agent's port before and after
// authentication (docs/security.md §7).
//
// Every TCP connection first is *unauthenticated* until its TLS handshake
// ends; nothing but the handshake is spoken then, and anyone who reaches
// the port can open one. Such connections are capped three ways, so that
// they cannot take the places of authenticated peers:
//   * per source address: at most `per_address` unauthenticated connections
//     from one IP address; more are closed at once by the accept loop (no
//     thread, no reply);
//   * in all: at most `unauthenticated`; when that pool is full, a new
//     connection takes the place of the oldest unauthenticated connection
//     of the address that holds the most of them (that connection is shut
//     down), so a flood from a few addresses evicts its own connections and
//     never a lone client's handshake in progress;
//   * in time: the agent gives each a short handshake deadline.
// A connection whose handshake succeeds becomes *authenticated* and moves
// to a separate pool of `authenticated` places; when that is full the peer
// gets an error reply over its authenticated channel.
//
// The gate counts refusals and evictions and says when to log them: one
// summary line per period, and single lines only for the first few events
// of a period, so a flood cannot fill the log.
//
// Thread safety: all methods may be called from any thread.
#ifndef ESCDR_AGENT_ADMISSION_H_
#define ESCDR_AGENT_ADMISSION_H_

#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "escdr/wire/connection.h"

namespace escdr::agent {

class ConnectionGate {
 public:
  struct Limits {
    int per_address = 8;       // unauthenticated connections from one address
    int unauthenticated = 64;  // unauthenticated connections in all
    int authenticated = 64;    // authenticated connections being served
  };

  // Counters since the gate was made, and the current occupancy.
  struct Counts {
    int unauthenticated = 0;
    int authenticated = 0;
    std::uint64_t admitted = 0;
    std::uint64_t refused_per_address = 0;
    std::uint64_t evicted = 0;
    std::uint64_t refused_authenticated_full = 0;
    std::uint64_t handshake_timeouts = 0;
    std::uint64_t handshake_failures = 0;
  };

  class Slot;

  // A connection's place, held by the thread that serves it; the place is
  // given back when the Pass is destroyed.
  class Pass {
   public:
    Pass(ConnectionGate* gate, std::shared_ptr<Slot> slot);
    ~Pass();
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    // True if the gate shut this connection down to make room.
    bool evicted() const;
    const std::string& address() const;

   private:
    friend class ConnectionGate;
    ConnectionGate* gate_;
    std::shared_ptr<Slot> slot_;
  };

  struct Admission {
    // `conn` wrapped so that the gate can shut it down while it is
    // unauthenticated.
    std::unique_ptr<wire::Connection> conn;
    std::unique_ptr<Pass> pass;
  };

  explicit ConnectionGate(Limits limits) : limits_(limits) {}
  ConnectionGate(const ConnectionGate&) = delete;
  ConnectionGate& operator=(const ConnectionGate&) = delete;

  const Limits& limits() const { return limits_; }

  // The IP address part of a connection name ("tcp 127.0.0.2:5123" ->
  // "127.0.0.2", "tcp [::1]:80" -> "::1"); the name itself otherwise.
  static std::string AddressOf(const std::string& connection_name);

  // Admits `conn` from `address` as unauthenticated, evicting another if the
  // pool is full; or refuses it (closes it, counted) when `address` holds
  // per_address already. nullopt when refused.
  std::optional<Admission> Admit(const std::string& address,
                                 std::unique_ptr<wire::Connection> conn);

  // After a successful handshake: moves the pass to the authenticated pool.
  // False (counted) if it was evicted meanwhile or the pool is full.
  bool Authenticate(Pass& pass);

  // A failed or timed-out handshake, for the counts.
  void CountHandshakeFailure(bool timeout);

  // Whether an event may have its own log line: the first
  // kSingleLinesPerPeriod of each period do; the rest are counted for the
  // summary.
  bool MayLogSingly(std::chrono::steady_clock::time_point now);

  // A summary of what the gate refused since the last one, once per period
  // and only if anything happened: "in the last 10 s before authentication:
  // 312 refused (8 per address; most from 127.0.0.3: 45), 40 evicted, 25
  // handshake deadlines, 3 failed handshakes, 9 single lines left out; now 64
  // unauthenticated, 2 authenticated".
  std::optional<std::string> TakeSummary(std::chrono::steady_clock::time_point now);

  Counts counts() const;

  static constexpr std::chrono::seconds kPeriod{10};
  static constexpr int kSingleLinesPerPeriod = 10;

 private:
  void Release(Slot& slot);

  const Limits limits_;
  mutable std::mutex mu_;
  std::list<std::shared_ptr<Slot>> unauthenticated_;  // oldest first
  std::map<std::string, int> per_address_;            // unauthenticated, by address
  int authenticated_ = 0;
  std::uint64_t next_id_ = 0;
  Counts total_;
  // This period's events, for the summary.
  Counts period_;
  std::map<std::string, std::uint64_t> period_refused_by_address_;
  std::uint64_t period_suppressed_ = 0;
  int period_single_lines_ = 0;
  std::chrono::steady_clock::time_point period_start_ = std::chrono::steady_clock::now();
};

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_ADMISSION_H_
