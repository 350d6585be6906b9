// Unix-domain stream sockets: listen, connect with retry, accept with timeout.
//
// QEMU's QMP monitor and migration endpoints are unix sockets that appear some
// time after QEMU starts, so ConnectUnix() retries until a deadline; an
// optional `keep_waiting` callback lets the caller stop early (e.g. when the
// QEMU process has already exited). All descriptors are close-on-exec and
// blocking. Socket paths must fit sockaddr_un (at most 107 bytes): keep them
// in short temporary directories.
//
// Thread safety: the functions are independent and reentrant.
#ifndef ESCDR_SYS_UNIX_SOCKET_H_
#define ESCDR_SYS_UNIX_SOCKET_H_

#include <chrono>
#include <functional>
#include <string>
#include <utility>

#include "escdr/base/status.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {

// Creates a listening socket bound to `path`. AlreadyExists if `path` exists
// (a stale socket is not removed silently); InvalidArgument if the path is
// too long. The caller owns the socket file and unlinks it when done.
Result<UniqueFd> ListenUnix(const std::string& path, int backlog = 16);

// Connects to the socket at `path`, retrying while it does not exist or
// refuses connections, until `timeout` has passed (Timeout, naming the path
// and the last error). Before each retry `keep_waiting` (if set) is called;
// a non-OK Status from it ends the wait and is returned.
Result<UniqueFd> ConnectUnix(const std::string& path, std::chrono::milliseconds timeout,
                             const std::function<Status()>& keep_waiting = nullptr);

// Accepts one connection on `listen_fd`, waiting at most `timeout`
// (Timeout if nobody connected).
Result<UniqueFd> AcceptUnix(int listen_fd, std::chrono::milliseconds timeout);

// A connected pair of unix stream sockets (socketpair(2)).
Result<std::pair<UniqueFd, UniqueFd>> UnixSocketPair();

}  // namespace escdr

#endif  // ESCDR_SYS_UNIX_SOCKET_H_
