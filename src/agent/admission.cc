#include "agent/admission.h"

#include <fmt/format.h>

#include <algorithm>

namespace escdr::agent {

class ConnectionGate::Slot {
 public:
  enum class State { kUnauthenticated, kAuthenticated, kEvicted, kReleased };

  Slot(std::uint64_t id, std::string address) : id_(id), address_(std::move(address)) {}

  const std::uint64_t id_;
  const std::string address_;
  State state_ = State::kUnauthenticated;  // guarded by the gate's mu_

  // The connection underneath, while it lives (GatedConnection), so that an
  // eviction can shut it down from the accept loop.
  std::mutex conn_mu_;
  wire::Connection* conn_ = nullptr;
};

namespace {

// Forwards to the accepted connection and lets the gate reach it until it
// is destroyed.
class GatedConnection final : public wire::ConnectionWrapper {
 public:
  GatedConnection(std::unique_ptr<wire::Connection> target,
                  std::shared_ptr<ConnectionGate::Slot> slot)
      : ConnectionWrapper(std::move(target)), slot_(std::move(slot)) {
    std::lock_guard<std::mutex> lock(slot_->conn_mu_);
    slot_->conn_ = this->target();
  }
  ~GatedConnection() override {
    std::lock_guard<std::mutex> lock(slot_->conn_mu_);
    slot_->conn_ = nullptr;
  }

 private:
  std::shared_ptr<ConnectionGate::Slot> slot_;
};

}  // namespace

ConnectionGate::Pass::Pass(ConnectionGate* gate, std::shared_ptr<Slot> slot)
    : gate_(gate), slot_(std::move(slot)) {}

ConnectionGate::Pass::~Pass() { gate_->Release(*slot_); }

bool ConnectionGate::Pass::evicted() const {
  std::lock_guard<std::mutex> lock(gate_->mu_);
  return slot_->state_ == Slot::State::kEvicted;
}

const std::string& ConnectionGate::Pass::address() const { return slot_->address_; }

std::string ConnectionGate::AddressOf(const std::string& name) {
  std::string s = name;
  if (s.starts_with("tcp ")) s = s.substr(4);
  if (s.starts_with("[")) {
    const std::size_t end = s.find(']');
    return end == std::string::npos ? s : s.substr(1, end - 1);
  }
  const std::size_t colon = s.rfind(':');
  return colon == std::string::npos ? s : s.substr(0, colon);
}

std::optional<ConnectionGate::Admission> ConnectionGate::Admit(
    const std::string& address, std::unique_ptr<wire::Connection> conn) {
  std::shared_ptr<Slot> victim;
  std::shared_ptr<Slot> slot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = per_address_.find(address);
    if (it != per_address_.end() && it->second >= limits_.per_address) {
      ++total_.refused_per_address;
      ++period_.refused_per_address;
      ++period_refused_by_address_[address];
      return std::nullopt;  // `conn` closes here
    }
    if (static_cast<int>(unauthenticated_.size()) >= limits_.unauthenticated &&
        !unauthenticated_.empty()) {
      // The oldest connection of the address that holds the most.
      int most = 0;
      for (const auto& [a, n] : per_address_) most = std::max(most, n);
      for (auto s = unauthenticated_.begin(); s != unauthenticated_.end(); ++s) {
        if (per_address_[(*s)->address_] == most) {
          victim = *s;
          unauthenticated_.erase(s);
          break;
        }
      }
      if (victim) {
        if (--per_address_[victim->address_] <= 0) per_address_.erase(victim->address_);
        victim->state_ = Slot::State::kEvicted;
        ++total_.evicted;
        ++period_.evicted;
        std::lock_guard<std::mutex> conn_lock(victim->conn_mu_);
        if (victim->conn_ != nullptr) victim->conn_->Shutdown();
      }
    }
    slot = std::make_shared<Slot>(next_id_++, address);
    unauthenticated_.push_back(slot);
    ++per_address_[address];
    ++total_.admitted;
    ++period_.admitted;
  }
  Admission a;
  a.conn = std::make_unique<GatedConnection>(std::move(conn), slot);
  a.pass = std::make_unique<Pass>(this, std::move(slot));
  return a;
}

bool ConnectionGate::Authenticate(Pass& pass) {
  std::lock_guard<std::mutex> lock(mu_);
  Slot& slot = *pass.slot_;
  if (slot.state_ != Slot::State::kUnauthenticated) return false;
  unauthenticated_.remove(pass.slot_);
  if (--per_address_[slot.address_] <= 0) per_address_.erase(slot.address_);
  if (authenticated_ >= limits_.authenticated) {
    slot.state_ = Slot::State::kReleased;
    ++total_.refused_authenticated_full;
    ++period_.refused_authenticated_full;
    return false;
  }
  ++authenticated_;
  slot.state_ = Slot::State::kAuthenticated;
  return true;
}

void ConnectionGate::Release(Slot& slot) {
  std::lock_guard<std::mutex> lock(mu_);
  switch (slot.state_) {
    case Slot::State::kUnauthenticated:
      unauthenticated_.remove_if(
          [&slot](const std::shared_ptr<Slot>& s) { return s.get() == &slot; });
      if (--per_address_[slot.address_] <= 0) per_address_.erase(slot.address_);
      break;
    case Slot::State::kAuthenticated:
      --authenticated_;
      break;
    case Slot::State::kEvicted:
    case Slot::State::kReleased:
      break;
  }
  slot.state_ = Slot::State::kReleased;
}

void ConnectionGate::CountHandshakeFailure(bool timeout) {
  std::lock_guard<std::mutex> lock(mu_);
  if (timeout) {
    ++total_.handshake_timeouts;
    ++period_.handshake_timeouts;
  } else {
    ++total_.handshake_failures;
    ++period_.handshake_failures;
  }
}

bool ConnectionGate::MayLogSingly(std::chrono::steady_clock::time_point /*now*/) {
  // The period is rolled over by TakeSummary, which the accept loop calls
  // at least twice a second.
  std::lock_guard<std::mutex> lock(mu_);
  if (period_single_lines_ < kSingleLinesPerPeriod) {
    ++period_single_lines_;
    return true;
  }
  ++period_suppressed_;
  return false;
}

std::optional<std::string> ConnectionGate::TakeSummary(std::chrono::steady_clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (now - period_start_ < kPeriod) return std::nullopt;
  const Counts p = period_;
  const std::uint64_t suppressed = period_suppressed_;
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(now - period_start_).count();
  std::string most;
  std::uint64_t most_n = 0;
  for (const auto& [a, n] : period_refused_by_address_) {
    if (n > most_n) {
      most = a;
      most_n = n;
    }
  }
  const std::size_t addresses = period_refused_by_address_.size();
  period_ = Counts{};
  period_refused_by_address_.clear();
  period_suppressed_ = 0;
  period_single_lines_ = 0;
  period_start_ = now;
  if (p.refused_per_address + p.evicted + p.refused_authenticated_full + p.handshake_timeouts +
          p.handshake_failures + suppressed ==
      0) {
    return std::nullopt;
  }
  std::string out = fmt::format("in the last {} s before authentication: {} connections admitted",
                                seconds, p.admitted);
  if (p.refused_per_address > 0) {
    out += fmt::format(", {} refused at {} per address (from {} addresses; most from {}: {})",
                       p.refused_per_address, limits_.per_address, addresses, most, most_n);
  }
  if (p.evicted > 0) {
    out +=
        fmt::format(", {} evicted to make room (pool of {})", p.evicted, limits_.unauthenticated);
  }
  if (p.handshake_timeouts > 0)
    out += fmt::format(", {} handshake deadlines", p.handshake_timeouts);
  if (p.handshake_failures > 0) out += fmt::format(", {} failed handshakes", p.handshake_failures);
  if (p.refused_authenticated_full > 0) {
    out += fmt::format(", {} authenticated peers refused ({} served already)",
                       p.refused_authenticated_full, limits_.authenticated);
  }
  if (suppressed > 0) out += fmt::format(", {} single log lines left out", suppressed);
  out += fmt::format("; now {} unauthenticated, {} authenticated", unauthenticated_.size(),
                     authenticated_);
  return out;
}

ConnectionGate::Counts ConnectionGate::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  Counts c = total_;
  c.unauthenticated = static_cast<int>(unauthenticated_.size());
  c.authenticated = authenticated_;
  return c;
}

}  // namespace escdr::agent
