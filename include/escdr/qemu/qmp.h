// QmpClient: a client of QEMU's QMP monitor over a unix socket.
//
// Connect() reads QEMU's greeting and negotiates capabilities
// (qmp_capabilities); after that Execute() runs one command and returns its
// "return" value. A QMP "error" reply becomes a Status naming the command and
// QEMU's description. Asynchronous events (STOP, RESUME, MIGRATION, ...) are
// queued in arrival order (at most kMaxQueuedEvents; the oldest are dropped
// beyond that) and taken with WaitForEvent() or TakeEvents().
//
// A background reader thread owns the receive side: it matches replies to
// commands by "id" and queues events, so events are never lost while a
// command runs. When QEMU closes the socket (quit, crash), every waiting and
// later call fails with Unavailable. A line that is not a JSON object is a
// ProtocolError and closes the connection.
//
// Thread safety: every method may be called from any thread, concurrently;
// commands are serialized on the socket, and each waiter gets its own reply.
// Ownership: the client owns the socket; destroying it closes the connection
// (QEMU keeps running) and joins the reader thread.
//
// Common commands (query-status, stop, cont, migrate, ...) have typed helpers
// in escdr/qemu/qmp_commands.h.
#ifndef ESCDR_QEMU_QMP_H_
#define ESCDR_QEMU_QMP_H_

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "escdr/base/status.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {

// One QMP event: {"event": name, "data": {...}, "timestamp": {...}}.
struct QmpEvent {
  std::string name;
  nlohmann::json data;       // the "data" member, or null if absent
  double timestamp_s = 0.0;  // QEMU's host wall clock, seconds since the epoch
};

class QmpClient {
 public:
  // Generous: a QEMU under TCG on a loaded 2-core machine can be slow to reply.
  static constexpr std::chrono::milliseconds kDefaultTimeout{60000};
  static constexpr std::size_t kMaxQueuedEvents = 4096;

  // Connects to the QMP socket at `socket_path`, retrying until it exists
  // (QEMU creates it shortly after start), and completes the handshake, all
  // within `timeout`. `keep_waiting` is called between connection attempts; a
  // non-OK Status from it ends the wait (e.g. "QEMU exited"). Outcomes:
  // Timeout, Unavailable (closed during the handshake), ProtocolError (not QMP).
  static Result<std::unique_ptr<QmpClient>> Connect(
      const std::string& socket_path, std::chrono::milliseconds timeout = kDefaultTimeout,
      const std::function<Status()>& keep_waiting = nullptr);

  // The same handshake over an already connected socket (e.g. a socketpair in
  // tests). `name` labels the connection in error messages.
  static Result<std::unique_ptr<QmpClient>> Handshake(
      UniqueFd fd, std::string name, std::chrono::milliseconds timeout = kDefaultTimeout);

  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs `command` with `arguments` (a JSON object, or null for none) and
  // returns the reply's "return" value. Errors: the QMP error (FailedPrecondition,
  // NotSupported for CommandNotFound, NotFound for DeviceNotFound), Timeout
  // (no reply within `timeout`; a late reply is discarded), Unavailable.
  Result<nlohmann::json> Execute(std::string_view command,
                                 const nlohmann::json& arguments = nullptr,
                                 std::chrono::milliseconds timeout = kDefaultTimeout);

  // Removes and returns the oldest queued event called `name`, waiting up to
  // `timeout` for one to arrive. Other events stay queued. Timeout or
  // Unavailable (connection closed and no such event queued).
  Result<QmpEvent> WaitForEvent(std::string_view name, std::chrono::milliseconds timeout);

  // Removes and returns all queued events, oldest first.
  std::vector<QmpEvent> TakeEvents();

  // The greeting's "QMP" object ({"version": ..., "capabilities": [...]}).
  const nlohmann::json& greeting() const;
  // "major.minor.micro" from the greeting, e.g. "7.2.22".
  std::string qemu_version() const;
  // False once the connection closed or broke.
  bool connected() const;
  // Label used in error messages (the socket path).
  const std::string& name() const;

 private:
  class Impl;
  explicit QmpClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace escdr

#endif  // ESCDR_QEMU_QMP_H_
