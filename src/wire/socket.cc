#include "escdr/wire/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "escdr/sys/unix_socket.h"

namespace escdr::wire {
namespace {

// A peer that went away is Unavailable; anything else the OS says is IOError.
Status SocketError(std::string_view what, const std::string& name, int err) {
  std::string m = fmt::format("{} {}: {}", what, name, std::strerror(err));
  switch (err) {
    case EPIPE:
    case ECONNRESET:
    case ECONNABORTED:
    case ENOTCONN:
    case ETIMEDOUT:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ECONNREFUSED:
      return Status::Unavailable(std::move(m));
    default:
      return Status::IOError(std::move(m));
  }
}

// Waits for `events`; OK when ready, Timeout at the deadline.
Status Wait(int fd, short events, Deadline deadline, std::string_view what,
            const std::string& name) {
  pollfd p{fd, events, 0};
  for (;;) {
    int r = ::poll(&p, 1, deadline.PollTimeoutMs());
    if (r > 0) return Status::OK();
    if (r == 0) {
      if (deadline.Expired()) {
        return Status::Timeout(fmt::format("{} {} timed out", what, name));
      }
      continue;  // poll rounds milliseconds; wait out the remainder
    }
    if (errno != EINTR) return SocketError(fmt::format("cannot poll for {}", what), name, errno);
  }
}

class SocketConnection final : public Connection {
 public:
  SocketConnection(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}

  Result<std::size_t> ReadSome(std::span<std::uint8_t> buf, Deadline deadline) override {
    for (;;) {
      ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        ESCDR_RETURN_IF_ERROR(Wait(fd_.get(), POLLIN, deadline, "read from", name_));
        continue;
      }
      return Err(SocketError("read from", name_, errno));
    }
  }

  Status WriteAllV(std::span<const std::span<const std::uint8_t>> parts,
                   Deadline deadline) override {
    std::vector<iovec> iov;
    iov.reserve(parts.size());
    for (const auto& p : parts) {
      if (!p.empty()) iov.push_back(iovec{const_cast<std::uint8_t*>(p.data()), p.size()});
    }
    std::size_t first = 0;
    while (first < iov.size()) {
      msghdr msg{};
      msg.msg_iov = iov.data() + first;
      msg.msg_iovlen = std::min<std::size_t>(iov.size() - first, IOV_MAX);
      ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          ESCDR_RETURN_IF_ERROR(Wait(fd_.get(), POLLOUT, deadline, "write to", name_));
          continue;
        }
        return SocketError("write to", name_, errno);
      }
      auto left = static_cast<std::size_t>(n);
      while (first < iov.size() && left >= iov[first].iov_len) {
        left -= iov[first].iov_len;
        ++first;
      }
      if (left > 0) {
        iov[first].iov_base = static_cast<std::uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
      }
    }
    return Status::OK();
  }

  Status ShutdownWrite() override {
    if (::shutdown(fd_.get(), SHUT_WR) < 0 && errno != ENOTCONN) {
      return SocketError("shutdown of the write side of", name_, errno);
    }
    return Status::OK();
  }

  void Shutdown() override {
    // ENOTCONN (already shut down or never connected) is the state we want.
    (void)::shutdown(fd_.get(), SHUT_RDWR);
  }

  const std::string& name() const override { return name_; }

 private:
  UniqueFd fd_;
  std::string name_;
};

std::string AddressName(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  std::uint16_t port = 0;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
    return fmt::format("tcp {}:{}", host, port);
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
    return fmt::format("tcp [{}]:{}", host, port);
  }
  return "socket";
}

void SetTcpOptions(int fd) {
  int one = 1;
  // Best effort: a socket without them still works correctly.
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  (void)::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const { ::freeaddrinfo(ai); }
};

Result<std::unique_ptr<addrinfo, AddrInfoDeleter>> Resolve(const std::string& host,
                                                           std::uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) {
    return Err(Status::InvalidArgument(
        fmt::format("cannot resolve {}:{}: {}", host, port, ::gai_strerror(rc))));
  }
  return std::unique_ptr<addrinfo, AddrInfoDeleter>(res);
}

}  // namespace

Result<std::unique_ptr<Connection>> WrapSocket(UniqueFd fd, std::string name) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    return Err(Status::FromErrno(fmt::format("cannot make {} non-blocking", name), errno));
  }
  return std::unique_ptr<Connection>(new SocketConnection(std::move(fd), std::move(name)));
}

Result<std::unique_ptr<Connection>> ConnectTcp(const std::string& host, std::uint16_t port,
                                               Deadline deadline) {
  ESCDR_ASSIGN_OR_RETURN(auto addrs, Resolve(host, port, false));
  Status last = Status::Unavailable(fmt::format("cannot connect to {}:{}: no address", host, port));
  for (addrinfo* ai = addrs.get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                         ai->ai_protocol));
    if (!fd) {
      last = Status::FromErrno(fmt::format("cannot create a socket for {}:{}", host, port), errno);
      continue;
    }
    std::string name = AddressName(ai->ai_addr);
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
      if (errno != EINPROGRESS) {
        last = SocketError("cannot connect to", name, errno);
        continue;
      }
      Status w = Wait(fd.get(), POLLOUT, deadline, "connect to", name);
      if (!w.ok()) {
        last = w;
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      if (err != 0) {
        last = SocketError("cannot connect to", name, err);
        continue;
      }
    }
    SetTcpOptions(fd.get());
    return WrapSocket(std::move(fd), std::move(name));
  }
  return Err(last);
}

Result<std::unique_ptr<Connection>> ConnectUnixSocket(const std::string& path, Deadline deadline) {
  ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, ConnectUnix(path, deadline.Remaining()));
  return WrapSocket(std::move(fd), "unix " + path);
}

Result<std::pair<std::unique_ptr<Connection>, std::unique_ptr<Connection>>> ConnectionPair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
    return Err(Status::FromErrno("cannot create a socket pair", errno));
  }
  UniqueFd a(fds[0]);
  UniqueFd b(fds[1]);
  ESCDR_ASSIGN_OR_RETURN(auto ca, WrapSocket(std::move(a), "socketpair end 0"));
  ESCDR_ASSIGN_OR_RETURN(auto cb, WrapSocket(std::move(b), "socketpair end 1"));
  return std::make_pair(std::move(ca), std::move(cb));
}

Result<TcpListener> TcpListener::Listen(const std::string& host, std::uint16_t port) {
  ESCDR_ASSIGN_OR_RETURN(auto addrs, Resolve(host, port, true));
  Status last = Status::IOError(fmt::format("cannot listen on {}:{}: no address", host, port));
  for (addrinfo* ai = addrs.get(); ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                         ai->ai_protocol));
    if (!fd) {
      last = Status::FromErrno(fmt::format("cannot create a socket for {}:{}", host, port), errno);
      continue;
    }
    int one = 1;
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(fd.get(), 16) < 0) {
      last = Status::FromErrno(fmt::format("cannot listen on {}:{}", host, port), errno);
      continue;
    }
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len) < 0) {
      return Err(Status::FromErrno(fmt::format("cannot read the address of {}:{}", host, port),
                                   errno));
    }
    std::uint16_t bound = 0;
    if (ss.ss_family == AF_INET) {
      bound = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      bound = ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    }
    return TcpListener(std::move(fd), bound);
  }
  return Err(last);
}

Result<std::unique_ptr<Connection>> TcpListener::Accept(Deadline deadline) {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = ::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len,
                       SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      SetTcpOptions(fd);
      return WrapSocket(UniqueFd(fd), AddressName(reinterpret_cast<sockaddr*>(&ss)));
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Err(Status::FromErrno(fmt::format("cannot accept on tcp port {}", port_), errno));
    }
    ESCDR_RETURN_IF_ERROR(
        Wait(fd_.get(), POLLIN, deadline, "accept on", fmt::format("tcp port {}", port_)));
  }
}

}  // namespace escdr::wire
