// Socket transports for Connection: TCP (between agents) and unix stream
// sockets (to a local QEMU), plus listeners.
//
// A socket Connection owns its descriptor, switches it to non-blocking mode
// and waits with poll(2) until the call's deadline, so a blocked read or write
// never outlives its deadline. Writes use sendmsg(MSG_NOSIGNAL): a vanished
// peer is an Unavailable status, never a SIGPIPE. TCP connections have
// TCP_NODELAY (frames are batched by the sessions already; Nagle would only
// delay the small Ack and return-path frames QEMU waits for) and SO_KEEPALIVE.
//
// Thread safety: as Connection; a listener is used by one thread.
#ifndef ESCDR_WIRE_SOCKET_H_
#define ESCDR_WIRE_SOCKET_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "escdr/base/status.h"
#include "escdr/sys/clock.h"
#include "escdr/sys/unique_fd.h"
#include "escdr/wire/connection.h"

namespace escdr::wire {

// Wraps a connected stream socket (TCP or unix), taking ownership.
// `name` is used in messages. Errors: IOError if it cannot be made
// non-blocking.
Result<std::unique_ptr<Connection>> WrapSocket(UniqueFd fd, std::string name);

// Connects to `host`:`port` (a name or a numeric IPv4/IPv6 address).
// Errors: Unavailable (refused, unreachable), Timeout, InvalidArgument (the
// host does not resolve).
Result<std::unique_ptr<Connection>> ConnectTcp(const std::string& host, std::uint16_t port,
                                               Deadline deadline);

// Connects to the unix stream socket at `path` (one attempt; see
// escdr/sys/unix_socket.h ConnectUnix for retries while QEMU starts).
Result<std::unique_ptr<Connection>> ConnectUnixSocket(const std::string& path, Deadline deadline);

// A connected pair of unix stream sockets, for tests and in-process relays.
Result<std::pair<std::unique_ptr<Connection>, std::unique_ptr<Connection>>> ConnectionPair();

// A listening TCP socket.
class TcpListener {
 public:
  // Listens on `host`:`port`; port 0 picks a free port (see port()).
  static Result<TcpListener> Listen(const std::string& host, std::uint16_t port);

  TcpListener(TcpListener&&) noexcept = default;
  TcpListener& operator=(TcpListener&&) noexcept = default;

  std::uint16_t port() const { return port_; }

  // Accepts one connection, waiting until `deadline` (Timeout).
  Result<std::unique_ptr<Connection>> Accept(Deadline deadline);

 private:
  TcpListener(UniqueFd fd, std::uint16_t port) : fd_(std::move(fd)), port_(port) {}
  UniqueFd fd_;
  std::uint16_t port_ = 0;
};

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_SOCKET_H_
