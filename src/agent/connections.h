// Two Connection wrappers the agent puts around the migration connection.
//
// CountingConnection counts the bytes that pass in each direction, so the
// agent can report wire progress while a session (which owns the connection)
// runs; the counters are shared through a CountingConnection::Counters that
// outlives the session. PrefixedConnection first returns bytes the agent
// already read (the frame header it peeked at to tell control clients from
// migration peers) and then reads from the connection underneath.
//
// SharedConnection forwards to a connection held through a shared_ptr, so
// the agent can shut it down to cancel while a session owns the handle.
//
// Thread safety: as wire::Connection; the counters are atomics.
#ifndef ESCDR_AGENT_CONNECTIONS_H_
#define ESCDR_AGENT_CONNECTIONS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "escdr/wire/connection.h"

namespace escdr::agent {

class CountingConnection final : public wire::ConnectionWrapper {
 public:
  struct Counters {
    std::atomic<std::uint64_t> read{0};
    std::atomic<std::uint64_t> written{0};
  };

  CountingConnection(std::unique_ptr<wire::Connection> target, std::shared_ptr<Counters> counters)
      : ConnectionWrapper(std::move(target)), counters_(std::move(counters)) {}

  Result<std::size_t> ReadSome(std::span<std::uint8_t> buf, Deadline deadline) override {
    auto n = ConnectionWrapper::ReadSome(buf, deadline);
    if (n.has_value()) counters_->read += *n;
    return n;
  }
  Status WriteAllV(std::span<const std::span<const std::uint8_t>> parts,
                   Deadline deadline) override {
    Status s = ConnectionWrapper::WriteAllV(parts, deadline);
    if (s.ok()) {
      std::uint64_t n = 0;
      for (const auto& p : parts) n += p.size();
      counters_->written += n;
    }
    return s;
  }

 private:
  std::shared_ptr<Counters> counters_;
};

class PrefixedConnection final : public wire::ConnectionWrapper {
 public:
  PrefixedConnection(std::unique_ptr<wire::Connection> target, std::vector<std::uint8_t> prefix)
      : ConnectionWrapper(std::move(target)), prefix_(std::move(prefix)) {}

  Result<std::size_t> ReadSome(std::span<std::uint8_t> buf, Deadline deadline) override {
    if (pos_ < prefix_.size()) {
      std::size_t n = std::min(buf.size(), prefix_.size() - pos_);
      std::memcpy(buf.data(), prefix_.data() + pos_, n);
      pos_ += n;
      return n;
    }
    return ConnectionWrapper::ReadSome(buf, deadline);
  }

 private:
  std::vector<std::uint8_t> prefix_;
  std::size_t pos_ = 0;
};

// Forwards to a connection that someone else also holds, so that the agent
// can Shutdown() it (to cancel) while a session that owns this handle runs.
class SharedConnection final : public wire::Connection {
 public:
  explicit SharedConnection(std::shared_ptr<wire::Connection> target) : target_(std::move(target)) {}

  Result<std::size_t> ReadSome(std::span<std::uint8_t> buf, Deadline deadline) override {
    return target_->ReadSome(buf, deadline);
  }
  Status WriteAllV(std::span<const std::span<const std::uint8_t>> parts,
                   Deadline deadline) override {
    return target_->WriteAllV(parts, deadline);
  }
  Status ShutdownWrite() override { return target_->ShutdownWrite(); }
  void Shutdown() override { target_->Shutdown(); }
  const std::string& name() const override { return target_->name(); }

 private:
  std::shared_ptr<wire::Connection> target_;
};

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_CONNECTIONS_H_
