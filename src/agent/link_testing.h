// FaultyLink: a network link between two agents, for integration tests that
// break it on purpose.
//
// A TCP relay on 127.0.0.1 that forwards every connection it accepts to
// `target` ("host:port"), both directions, through the kernel's socket
// buffers as its queue. While it runs a test can:
//
// * SetRate(bytes/s): forward at most that many bytes per second in each
//   direction, shared by all connections of a direction (a slow link);
// * Stall(true/false): forward nothing until released; the senders block
//   once the socket buffers are full (a link that stops delivering, as a
//   flapping route or a full switch queue does);
// * Cut(): shut every open connection down, both directions (a connection
//   reset); connections made later pass again.
//
// Agents reach a destination through it with `escdr migrate
// --destination-address <address()>`. With no rate, stall or cut it is a
// plain byte-counting relay (forwarded(), forwarded_to_target()): the
// benchmark and `escdr demo` put one in front of a destination QEMU to count
// what a direct QEMU-to-QEMU migration puts on the wire, over all of its
// connections (QEMU's multifd opens several). The destructor shuts
// everything down and joins its threads.
//
// Thread safety: every method may be called from any thread.
#ifndef ESCDR_AGENT_LINK_TESTING_H_
#define ESCDR_AGENT_LINK_TESTING_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "escdr/agent/agent_client.h"
#include "escdr/base/status.h"
#include "escdr/sys/clock.h"
#include "escdr/wire/socket.h"

namespace escdr::agent::testing {

class FaultyLink {
 public:
  explicit FaultyLink(std::string target) : target_(std::move(target)) {
    listener_.emplace(std::move(wire::TcpListener::Listen("127.0.0.1", 0).value()));
    accept_ = std::thread([this] { AcceptLoop(); });
  }
  // As the constructor, but a failure to listen is an error value instead of
  // an exception (for code outside tests).
  static Result<std::unique_ptr<FaultyLink>> Start(std::string target) {
    ESCDR_ASSIGN_OR_RETURN(wire::TcpListener l, wire::TcpListener::Listen("127.0.0.1", 0));
    return std::unique_ptr<FaultyLink>(new FaultyLink(std::move(target), std::move(l)));
  }
  ~FaultyLink() {
    stop_ = true;
    Cut();
    if (accept_.joinable()) accept_.join();
    std::vector<std::thread> pumps;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pumps.swap(pumps_);
    }
    for (auto& t : pumps) t.join();
  }
  FaultyLink(const FaultyLink&) = delete;
  FaultyLink& operator=(const FaultyLink&) = delete;

  std::string address() const { return fmt::format("127.0.0.1:{}", listener_->port()); }
  // Points later connections at another address (a restarted agent listens on
  // a new port).
  void SetTarget(std::string target) {
    std::lock_guard<std::mutex> lock(mu_);
    target_ = std::move(target);
  }
  // 0: no limit.
  void SetRate(std::uint64_t bytes_per_s) { rate_ = bytes_per_s; }
  void Stall(bool on) { stalled_ = on; }
  void Cut() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& c : conns_) c->Shutdown();
    conns_.clear();
    ++cuts_;
  }
  // Bytes forwarded so far, both directions.
  std::uint64_t forwarded() const { return forwarded_.load(); }
  // Of those, the bytes forwarded from the connecting side to the target
  // (a migration's source to its destination, return path excluded).
  std::uint64_t forwarded_to_target() const { return forwarded_to_target_.load(); }
  // Connections accepted and forwarded so far.
  int connections() const { return connections_.load(); }

 private:
  struct Pacer {
    std::mutex mu;
    MonotonicClock::time_point next{};
  };

  FaultyLink(std::string target, wire::TcpListener listener) : target_(std::move(target)) {
    listener_.emplace(std::move(listener));
    accept_ = std::thread([this] { AcceptLoop(); });
  }

  void AcceptLoop() {
    while (!stop_) {
      auto in = listener_->Accept(Deadline::After(std::chrono::milliseconds(100)));
      if (!in.has_value()) continue;
      std::string target;
      {
        std::lock_guard<std::mutex> lock(mu_);
        target = target_;
      }
      auto hp = ParseAgentAddress(target);
      if (!hp.has_value()) continue;  // closes `in`: the caller sees the refusal
      auto out = wire::ConnectTcp(hp->first, hp->second, Deadline::After(std::chrono::seconds(10)));
      if (!out.has_value()) continue;
      std::shared_ptr<wire::Connection> a(std::move(*in)), b(std::move(*out));
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) continue;
      conns_.push_back(a);
      conns_.push_back(b);
      ++connections_;
      pumps_.emplace_back([this, a, b] { Pump(*a, *b, forward_, &forwarded_to_target_); });
      pumps_.emplace_back([this, a, b] { Pump(*b, *a, back_, nullptr); });
    }
  }

  // `direction_count`, if set, also counts what this direction forwarded.
  void Pump(wire::Connection& from, wire::Connection& to, Pacer& pacer,
            std::atomic<std::uint64_t>* direction_count) {
    std::vector<std::uint8_t> buf(16 << 10);
    while (!stop_) {
      while (stalled_ && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      auto n = from.ReadSome(buf, Deadline::After(std::chrono::seconds(600)));
      if (!n.has_value() || *n == 0) break;
      // Data read before a stall began is held back too.
      while (stalled_ && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (const std::uint64_t rate = rate_.load(); rate > 0) {
        MonotonicClock::time_point at;
        {
          std::lock_guard<std::mutex> lock(pacer.mu);
          const auto now = MonotonicClock::now();
          if (pacer.next < now) pacer.next = now;
          at = pacer.next;
          pacer.next += std::chrono::duration_cast<MonotonicClock::duration>(
              std::chrono::duration<double>(static_cast<double>(*n) / static_cast<double>(rate)));
        }
        std::this_thread::sleep_until(at);
      }
      if (!to.WriteAll(std::span<const std::uint8_t>(buf.data(), *n),
                       Deadline::After(std::chrono::seconds(600)))
               .ok()) {
        break;
      }
      forwarded_ += *n;
      if (direction_count != nullptr) *direction_count += *n;
    }
    (void)to.ShutdownWrite();
  }

  std::optional<wire::TcpListener> listener_;
  std::string target_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> stalled_{false};
  std::atomic<std::uint64_t> rate_{0};
  std::atomic<std::uint64_t> forwarded_{0};
  std::atomic<std::uint64_t> forwarded_to_target_{0};
  std::atomic<int> connections_{0};
  Pacer forward_, back_;
  std::mutex mu_;
  int cuts_ = 0;
  std::vector<std::shared_ptr<wire::Connection>> conns_;
  std::thread accept_;
  std::vector<std::thread> pumps_;
};

}  // namespace escdr::agent::testing

#endif  // ESCDR_AGENT_LINK_TESTING_H_
