// UniqueFd and whole-buffer I/O on file descriptors.
//
// UniqueFd owns one file descriptor and closes it when destroyed; it is
// move-only. ReadFull/WriteFull move a whole buffer, retrying on EINTR and
// short transfers, and wait with poll() when a non-blocking descriptor would
// block, so callers see either the complete transfer or one error. WriteFull
// uses send(MSG_NOSIGNAL) on sockets: a peer that went away is an IOError
// (EPIPE), never a SIGPIPE that kills the process.
//
// Every descriptor escdr opens is close-on-exec, so children started with
// Subprocess inherit only what they are given explicitly.
//
// Thread safety: a UniqueFd is not synchronized; the I/O functions are safe to
// call concurrently on distinct descriptors.
#ifndef ESCDR_SYS_UNIQUE_FD_H_
#define ESCDR_SYS_UNIQUE_FD_H_

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "escdr/base/status.h"

namespace escdr {

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (-1 means none).
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) Reset(other.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }

  // Gives up ownership without closing; returns the descriptor.
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // Closes the owned descriptor (if any) and takes ownership of `fd`. A close
  // error is ignored: on Linux the descriptor is released even then.
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Reads until `size` bytes are in `buf` or end of file. Returns the number of
// bytes read: `size`, or fewer only at end of file. Errors name `what`
// (e.g. "QMP socket /tmp/x/qmp.sock").
Result<std::size_t> ReadFull(int fd, void* buf, std::size_t size, std::string_view what = "fd");

// Writes all `size` bytes. A peer that closed the connection gives an IOError
// ("... Broken pipe").
Status WriteFull(int fd, const void* buf, std::size_t size, std::string_view what = "fd");
inline Status WriteFull(int fd, std::string_view data, std::string_view what = "fd") {
  return WriteFull(fd, data.data(), data.size(), what);
}

// Waits until `fd` is readable (data, end of file or error) for at most
// `timeout`. Returns true if readable, false on timeout.
Result<bool> WaitReadable(int fd, std::chrono::milliseconds timeout);

// Sets or clears O_NONBLOCK.
Status SetNonBlocking(int fd, bool on);

// Reads a whole file into a string. NotFound if it does not exist.
Result<std::string> ReadFileToString(const std::string& path);

// Writes `data` to `path` (created with mode 0644 or truncated).
Status WriteStringToFile(const std::string& path, std::string_view data);

// Opens `path` with open(2) `flags` | O_CLOEXEC and `mode`.
Result<UniqueFd> OpenFile(const std::string& path, int flags, int mode = 0644);

}  // namespace escdr

#endif  // ESCDR_SYS_UNIQUE_FD_H_
