#include "escdr/sys/unix_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "escdr/sys/clock.h"

namespace escdr {
namespace {

Result<sockaddr_un> MakeAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return Err(Status::InvalidArgument(fmt::format(
        "unix socket path '{}' is {} bytes; it must be 1 to {} bytes", path, path.size(),
        sizeof(addr.sun_path) - 1)));
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Result<UniqueFd> NewSocket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Err(Status::FromErrno(fmt::format("cannot create socket for {}", path), errno));
  return UniqueFd(fd);
}

}  // namespace

Result<UniqueFd> ListenUnix(const std::string& path, int backlog) {
  ESCDR_ASSIGN_OR_RETURN(sockaddr_un addr, MakeAddress(path));
  ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, NewSocket(path));
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) < 0) {
    if (errno == EADDRINUSE) {
      return Err(Status::AlreadyExists(fmt::format("cannot bind unix socket {}: path exists", path)));
    }
    return Err(Status::FromErrno(fmt::format("cannot bind unix socket {}", path), errno));
  }
  if (::listen(fd.get(), backlog) < 0) {
    int e = errno;
    ::unlink(path.c_str());
    return Err(Status::FromErrno(fmt::format("cannot listen on unix socket {}", path), e));
  }
  return fd;
}

Result<UniqueFd> ConnectUnix(const std::string& path, std::chrono::milliseconds timeout,
                             const std::function<Status()>& keep_waiting) {
  ESCDR_ASSIGN_OR_RETURN(sockaddr_un addr, MakeAddress(path));
  Deadline deadline = Deadline::After(timeout);
  // Start fast (QEMU usually creates its socket within milliseconds) and back
  // off to a modest poll interval for a loaded machine.
  auto pause = std::chrono::milliseconds(2);
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, NewSocket(path));
    int r;
    do {
      r = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    } while (r < 0 && errno == EINTR);
    if (r == 0) return fd;
    int e = errno;
    if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN) {
      return Err(Status::FromErrno(fmt::format("cannot connect to unix socket {}", path), e));
    }
    if (deadline.Expired()) {
      return Err(Status::Timeout(fmt::format("cannot connect to unix socket {} within {} ms: {}",
                                             path, timeout.count(), std::strerror(e))));
    }
    if (keep_waiting) ESCDR_RETURN_IF_ERROR(keep_waiting());
    std::this_thread::sleep_for(std::min(pause, deadline.Remaining()));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

Result<UniqueFd> AcceptUnix(int listen_fd, std::chrono::milliseconds timeout) {
  ESCDR_ASSIGN_OR_RETURN(bool ready, WaitReadable(listen_fd, timeout));
  if (!ready) {
    return Err(Status::Timeout(
        fmt::format("no connection on listening socket fd {} within {} ms", listen_fd, timeout.count())));
  }
  int fd;
  do {
    fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Err(Status::FromErrno(fmt::format("cannot accept on fd {}", listen_fd), errno));
  return UniqueFd(fd);
}

Result<std::pair<UniqueFd, UniqueFd>> UnixSocketPair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
    return Err(Status::FromErrno("cannot create unix socket pair", errno));
  }
  return std::pair<UniqueFd, UniqueFd>(UniqueFd(fds[0]), UniqueFd(fds[1]));
}

}  // namespace escdr
