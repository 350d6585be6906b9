#include "escdr/sys/unique_fd.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include <fmt/format.h>

#include "escdr/sys/clock.h"

namespace escdr {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0 && fd_ != fd) ::close(fd_);
  fd_ = fd;
}

namespace {

// Waits for `events` on `fd` after EAGAIN; no timeout, as the blocking call
// it replaces would have had none.
Status PollFor(int fd, short events, std::string_view what) {
  pollfd p{fd, events, 0};
  while (::poll(&p, 1, -1) < 0) {
    if (errno != EINTR) return Status::FromErrno(fmt::format("cannot poll {}", what), errno);
  }
  return Status::OK();
}

}  // namespace

Result<std::size_t> ReadFull(int fd, void* buf, std::size_t size, std::string_view what) {
  auto* p = static_cast<std::uint8_t*>(buf);
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, p + done, size - done);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
    } else if (n == 0) {
      break;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ESCDR_RETURN_IF_ERROR(PollFor(fd, POLLIN, what));
    } else {
      return Err(Status::FromErrno(fmt::format("cannot read {} bytes from {}", size, what), errno));
    }
  }
  return done;
}

Status WriteFull(int fd, const void* buf, std::size_t size, std::string_view what) {
  const auto* p = static_cast<const std::uint8_t*>(buf);
  std::size_t done = 0;
  bool is_socket = true;
  while (done < size) {
    ssize_t n;
    if (is_socket) {
      n = ::send(fd, p + done, size - done, MSG_NOSIGNAL);
      if (n < 0 && errno == ENOTSOCK) {
        is_socket = false;
        continue;
      }
    } else {
      n = ::write(fd, p + done, size - done);
    }
    if (n >= 0) {
      done += static_cast<std::size_t>(n);
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ESCDR_RETURN_IF_ERROR(PollFor(fd, POLLOUT, what));
    } else {
      return Status::FromErrno(fmt::format("cannot write {} bytes to {}", size, what), errno);
    }
  }
  return Status::OK();
}

Result<bool> WaitReadable(int fd, std::chrono::milliseconds timeout) {
  Deadline deadline = Deadline::After(timeout);
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, deadline.PollTimeoutMs());
    if (r > 0) return true;
    if (r == 0) {
      if (deadline.Expired()) return false;
      continue;
    }
    if (errno != EINTR) return Err(Status::FromErrno(fmt::format("cannot poll fd {}", fd), errno));
  }
}

Status SetNonBlocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return Status::FromErrno(fmt::format("cannot get flags of fd {}", fd), errno);
  flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (::fcntl(fd, F_SETFL, flags) < 0) {
    return Status::FromErrno(fmt::format("cannot set flags of fd {}", fd), errno);
  }
  return Status::OK();
}

Result<UniqueFd> OpenFile(const std::string& path, int flags, int mode) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    Status s = Status::FromErrno(fmt::format("cannot open {}", path), errno);
    if (errno == ENOENT) return Err(Status::NotFound(s.message()));
    return Err(s);
  }
  return UniqueFd(fd);
}

Result<std::string> ReadFileToString(const std::string& path) {
  ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_RDONLY));
  std::string out;
  char buf[65536];
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(std::size_t n, ReadFull(fd.get(), buf, sizeof(buf), path));
    out.append(buf, n);
    if (n < sizeof(buf)) break;
  }
  return out;
}

Status WriteStringToFile(const std::string& path, std::string_view data) {
  ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC, 0644));
  return WriteFull(fd.get(), data.data(), data.size(), path);
}

}  // namespace escdr
