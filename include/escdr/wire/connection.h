// Connection: a reliable, ordered byte stream with deadlines.
//
// The seam between the migration sessions and the network (STYLE §6.11): the
// sessions speak to their peer agent and to their local QEMU only through this
// interface, so TCP, unix sockets, a TLS layer (a Connection that wraps
// another) or a fault-injecting test double can be swapped in without
// touching them. ConnectionWrapper forwards every call, so a test overrides
// only the method it wants to break.
//
// Every blocking call takes a Deadline (escdr/sys/clock.h) and fails with
// Timeout when it passes. Errors are one sentence naming the connection:
// Unavailable when the peer went away (reset, broken pipe, end of file inside
// a ReadFull), Timeout, IOError for anything else.
//
// Thread safety: at most one thread reads and at most one thread writes at a
// time (a read and a write may run concurrently: sockets are full duplex).
// Shutdown() may be called from any thread at any time, also while another
// thread is blocked in a read or a write, which it wakes up. Destroying the
// connection closes it; no call may be running then.
#ifndef ESCDR_WIRE_CONNECTION_H_
#define ESCDR_WIRE_CONNECTION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "escdr/base/status.h"
#include "escdr/sys/clock.h"

namespace escdr::wire {

class Connection {
 public:
  virtual ~Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Reads at least one and at most `buf.size()` bytes; returns how many, or 0
  // at an orderly end of file (the peer shut its write side down or closed).
  // REQUIRES: !buf.empty().
  virtual Result<std::size_t> ReadSome(std::span<std::uint8_t> buf, Deadline deadline) = 0;

  // Writes all of `parts`, in order, as one byte sequence (gather write).
  virtual Status WriteAllV(std::span<const std::span<const std::uint8_t>> parts,
                           Deadline deadline) = 0;

  // Shuts the write side down (the peer reads end of file after the bytes
  // already written); reads still work.
  virtual Status ShutdownWrite() = 0;

  // Shuts both directions down and wakes any blocked read or write, which then
  // fail or see end of file. Idempotent; the connection stays open until
  // destroyed.
  virtual void Shutdown() = 0;

  // For messages: "tcp 10.0.0.2:4711", "unix /run/escdr/vm1.sock", ...
  virtual const std::string& name() const = 0;

  // Writes all of `data`.
  Status WriteAll(std::span<const std::uint8_t> data, Deadline deadline) {
    std::span<const std::uint8_t> parts[1] = {data};
    return WriteAllV(parts, deadline);
  }

 protected:
  Connection() = default;
};

// Reads exactly `buf.size()` bytes. End of file before that is Unavailable:
// "<name>: connection closed after k of n bytes".
Status ReadFull(Connection& conn, std::span<std::uint8_t> buf, Deadline deadline);

// Forwards every call to another Connection, which it owns.
class ConnectionWrapper : public Connection {
 public:
  explicit ConnectionWrapper(std::unique_ptr<Connection> target) : target_(std::move(target)) {}

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

  Connection* target() const { return target_.get(); }

 private:
  std::unique_ptr<Connection> target_;
};

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_CONNECTION_H_
