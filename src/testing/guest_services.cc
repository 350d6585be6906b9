#include "testing/guest_services.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cassert>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <iterator>
#include <optional>
#include <random>
#include <string_view>

#include <fmt/format.h>

#include "escdr/sys/unix_socket.h"

namespace escdr::testing {
namespace {

using std::chrono::milliseconds;

constexpr std::size_t kMaxRedisLine = 64 * 1024;
constexpr std::int64_t kMaxRedisBulk = std::int64_t{512} << 20;  // redis's own limit
constexpr std::int64_t kMaxRedisArray = std::int64_t{1} << 20;
constexpr int kMaxRedisDepth = 8;
constexpr std::size_t kMaxHttpHeaders = 64 * 1024;
constexpr std::uint64_t kMaxHttpBody = std::uint64_t{1} << 30;
constexpr std::size_t kMaxCommandLine = 4000;

// `s` with bytes outside printable ASCII as \xNN, cut to `max` bytes.
std::string Printable(std::string_view s, std::size_t max = 80) {
  std::string out;
  for (char c : s.substr(0, max)) {
    auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) {
      out += c;
    } else {
      out += fmt::format("\\x{:02x}", u);
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

// Connection-level failures are Unavailable (the peer is not there, or went
// away); the rest keep errno's text as an IOError.
Status SocketError(std::string_view doing, int e) {
  bool gone = e == ECONNREFUSED || e == ECONNRESET || e == ECONNABORTED || e == EPIPE ||
              e == ENOTCONN || e == EHOSTUNREACH || e == ENETUNREACH;
  return gone ? Status::Unavailable(fmt::format("{}: {}", doing, std::strerror(e)))
              : Status::FromErrno(doing, e);
}

// Waits until `fd` is ready for `events` (Timeout once `deadline` passed).
Status WaitFor(int fd, short events, Deadline deadline, std::string_view doing) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, deadline.PollTimeoutMs());
    if (r > 0) return Status::OK();
    if (r == 0) return Status::Timeout(fmt::format("timed out {}", doing));
    if (errno != EINTR) return Status::FromErrno("poll", errno);
  }
}

Status SendAll(int fd, std::string_view data, Deadline deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ESCDR_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline, "sending"));
    } else if (errno != EINTR) {
      return SocketError("cannot send", errno);
    }
  }
  return Status::OK();
}

// Appends what `fd` has to `*buffer`, waiting until `deadline` for at least
// one byte. Returns false at end of file.
Result<bool> ReadMore(int fd, std::string* buffer, Deadline deadline) {
  char chunk[16384];
  for (;;) {
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer->append(chunk, static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0) return false;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      ESCDR_RETURN_IF_ERROR(WaitFor(fd, POLLIN, deadline, "waiting for data"));
    } else if (errno != EINTR) {
      return Err(SocketError("cannot receive", errno));
    }
  }
}

// A non-blocking TCP connection to `host`:`port` (each resolved address in
// turn; the last failure is returned).
Result<UniqueFd> ConnectTcp(const std::string& host, std::uint16_t port, Deadline deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
  if (rc != 0) {
    return Err(
        Status::InvalidArgument(fmt::format("cannot resolve '{}': {}", host, ::gai_strerror(rc))));
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(list, &::freeaddrinfo);
  Status last = Status::Unavailable("no address to connect to");
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd) return Err(Status::FromErrno("cannot create a TCP socket", errno));
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
      if (errno != EINPROGRESS && errno != EINTR) {
        last = SocketError("cannot connect", errno);
        continue;
      }
      ESCDR_RETURN_IF_ERROR(WaitFor(fd.get(), POLLOUT, deadline, "connecting"));
      int err = 0;
      socklen_t len = sizeof(err);
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      if (err != 0) {
        last = SocketError("cannot connect", err);
        continue;
      }
    }
    int one = 1;  // small requests and replies: do not wait for Nagle
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
  }
  return Err(last);
}

// "-1" or a decimal in [0, max].
Result<std::int64_t> ParseLength(std::string_view s, std::int64_t max) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < -1 || v > max) {
    return Err(Status::ProtocolError(fmt::format("bad length '{}' in reply", Printable(s))));
  }
  return v;
}

// "SET mykey" for messages (a long or binary key shortened).
std::string DescribeCommand(const std::vector<std::string>& args) {
  std::string s = Printable(args[0], 32);
  if (args.size() > 1) s += " " + Printable(args[1], 48);
  return s;
}

// Removes escape sequences (CSI "ESC [ ... final" and two-byte "ESC x") and
// trailing newlines from console output.
std::string CleanConsoleOutput(std::string_view in) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '\x1b') {
      out += in[i];
    } else if (i + 1 < in.size() && in[i + 1] == '[') {
      i += 2;
      while (i < in.size() && !(in[i] >= 0x40 && in[i] <= 0x7e)) ++i;
    } else {
      ++i;
    }
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// The error of `reply`, or ProtocolError if it is not `expected`.
Status ExpectReply(const Result<std::string>& reply, std::string_view expected,
                   const std::string& context) {
  if (!reply.has_value()) return reply.error();
  if (*reply == expected) return Status::OK();
  return Status::ProtocolError(
      fmt::format("{}: reply '{}', not {}", context, Printable(*reply), expected));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RedisClient

Result<RedisClient> RedisClient::Connect(std::string host, std::uint16_t port,
                                         milliseconds timeout) {
  std::string name = fmt::format("redis {}:{}", host, port);
  Deadline deadline = Deadline::After(timeout);
  milliseconds pause(20);
  for (;;) {
    Status status;
    auto fd = ConnectTcp(host, port, deadline);
    if (fd.has_value()) {
      RedisClient client(std::move(*fd), name, timeout);
      status = ExpectReply(client.CommandUntil({"PING"}, deadline), "PONG", name + " PING");
      if (status.ok()) return client;
    } else {
      status = fd.error().WithContext(name);
    }
    if (status.IsInvalidArgument()) return Err(status);
    if (deadline.Expired()) {
      return Err(Status::Timeout(fmt::format("{} did not answer PING within {} ms; last error: {}",
                                             name, timeout.count(), status.message())));
    }
    std::this_thread::sleep_for(std::min(pause, deadline.Remaining()));
    pause = std::min(pause * 2, milliseconds(500));
  }
}

Result<std::string> RedisClient::Command(const std::vector<std::string>& args) {
  return CommandUntil(args, Deadline::After(timeout_));
}

Result<std::string> RedisClient::CommandUntil(const std::vector<std::string>& args,
                                              Deadline deadline) {
  assert(!args.empty());
  std::string context = name_ + " " + DescribeCommand(args);
  if (!fd_) {
    return Err(Status::Unavailable(
        fmt::format("{}: not connected (an earlier error closed the connection)", context)));
  }
  std::string request = fmt::format("*{}\r\n", args.size());
  for (const std::string& arg : args) {
    request += fmt::format("${}\r\n", arg.size());
    request += arg;
    request += "\r\n";
  }
  Status sent = SendAll(fd_.get(), request, deadline);
  Result<std::string> reply = Err(sent);
  if (sent.ok()) reply = ReadReply(deadline, 0);
  if (reply.has_value()) return reply;
  StatusCode code = reply.error().code();
  if (code != StatusCode::kNotFound && code != StatusCode::kFailedPrecondition) {
    fd_.Reset();  // the reply stream is out of step
    buffer_.clear();
  }
  return Err(reply.error().WithContext(context));
}

Result<std::string> RedisClient::ReadLine(Deadline deadline) {
  for (;;) {
    std::size_t end = buffer_.find("\r\n");
    if (end != std::string::npos) {
      std::string line = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      return line;
    }
    if (buffer_.size() > kMaxRedisLine) {
      return Err(Status::ProtocolError("reply line longer than 64 KiB"));
    }
    ESCDR_ASSIGN_OR_RETURN(bool more, ReadMore(fd_.get(), &buffer_, deadline));
    if (!more) return Err(Status::Unavailable("redis closed the connection"));
  }
}

Result<std::string> RedisClient::ReadReply(Deadline deadline, int depth) {
  ESCDR_ASSIGN_OR_RETURN(std::string line, ReadLine(deadline));
  if (line.empty()) return Err(Status::ProtocolError("empty reply line"));
  std::string rest = line.substr(1);
  switch (line[0]) {
    case '+':
      return rest;
    case '-':
      return Err(Status::FailedPrecondition(rest));
    case ':': {
      std::int64_t v = 0;
      auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), v);
      if (ec != std::errc() || end != rest.data() + rest.size()) {
        return Err(Status::ProtocolError(fmt::format("bad integer reply '{}'", Printable(rest))));
      }
      return std::to_string(v);
    }
    case '$': {
      ESCDR_ASSIGN_OR_RETURN(std::int64_t len, ParseLength(rest, kMaxRedisBulk));
      if (len < 0) return Err(Status::NotFound("nil reply"));
      auto size = static_cast<std::size_t>(len);
      while (buffer_.size() < size + 2) {
        ESCDR_ASSIGN_OR_RETURN(bool more, ReadMore(fd_.get(), &buffer_, deadline));
        if (!more) return Err(Status::Unavailable("redis closed the connection within a reply"));
      }
      if (buffer_.compare(size, 2, "\r\n") != 0) {
        return Err(Status::ProtocolError(
            fmt::format("bulk string of {} bytes does not end with CRLF", size)));
      }
      std::string value = buffer_.substr(0, size);
      buffer_.erase(0, size + 2);
      return value;
    }
    case '*': {
      if (depth >= kMaxRedisDepth) return Err(Status::ProtocolError("arrays nested too deep"));
      ESCDR_ASSIGN_OR_RETURN(std::int64_t count, ParseLength(rest, kMaxRedisArray));
      if (count < 0) return Err(Status::NotFound("nil array reply"));
      std::string joined;
      Status first_error;  // an error element; the rest of the array is still read
      for (std::int64_t i = 0; i < count; ++i) {
        Result<std::string> element = ReadReply(deadline, depth + 1);
        if (!element.has_value()) {
          if (element.error().IsNotFound()) {
            element = std::string();
          } else if (element.error().code() == StatusCode::kFailedPrecondition) {
            if (first_error.ok()) first_error = element.error();
            continue;
          } else {
            return element;
          }
        }
        if (i > 0) joined += '\n';
        joined += *element;
      }
      if (!first_error.ok()) return Err(first_error);
      return joined;
    }
    default:
      return Err(Status::ProtocolError(fmt::format("unknown reply '{}'", Printable(line))));
  }
}

Status RedisClient::Set(const std::string& key, const std::string& value) {
  return ExpectReply(Command({"SET", key, value}), "OK", name_ + " SET " + Printable(key));
}

Result<std::string> RedisClient::Get(const std::string& key) { return Command({"GET", key}); }

Status RedisClient::Ping() { return ExpectReply(Command({"PING"}), "PONG", name_ + " PING"); }

// ---------------------------------------------------------------------------------------------
// HttpGet

namespace {

Result<HttpResponse> HttpGetOnce(const std::string& host, std::uint16_t port,
                                 const std::string& path, Deadline deadline) {
  ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, ConnectTcp(host, port, deadline));
  ESCDR_RETURN_IF_ERROR(SendAll(fd.get(),
                                fmt::format("GET {} HTTP/1.0\r\nHost: {}:{}\r\nUser-Agent: "
                                            "escdr-test\r\nConnection: close\r\n\r\n",
                                            path, host, port),
                                deadline));
  std::string data;
  std::size_t header_end;
  while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
    if (data.size() > kMaxHttpHeaders) {
      return Err(Status::ResourceExhausted("response headers longer than 64 KiB"));
    }
    ESCDR_ASSIGN_OR_RETURN(bool more, ReadMore(fd.get(), &data, deadline));
    if (!more && data.empty()) return Err(Status::Unavailable("connection closed, no response"));
    if (!more) {
      return Err(Status::ProtocolError(
          fmt::format("connection closed within the headers: '{}'", Printable(data))));
    }
  }
  std::string_view head(data.data(), header_end);
  std::string_view status_line = head.substr(0, head.find("\r\n"));
  // "HTTP/1.x NNN[ reason]"
  HttpResponse response;
  bool ok = status_line.size() >= 12 && status_line.starts_with("HTTP/1.") &&
            status_line[8] == ' ' && (status_line.size() == 12 || status_line[12] == ' ');
  for (std::size_t i = 9; ok && i < 12; ++i)
    ok = std::isdigit(static_cast<unsigned char>(status_line[i]));
  if (!ok) {
    return Err(
        Status::ProtocolError(fmt::format("malformed status line '{}'", Printable(status_line))));
  }
  response.status = std::stoi(std::string(status_line.substr(9, 3)));
  std::size_t pos = status_line.size();
  while (pos < head.size()) {
    pos += 2;  // the CRLF before this line
    std::size_t eol = std::min(head.find("\r\n", pos), head.size());
    std::string_view line = head.substr(pos, eol - pos);
    pos = eol;
    std::size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) {
      return Err(Status::ProtocolError(fmt::format("malformed header '{}'", Printable(line))));
    }
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    auto [it, inserted] = response.headers.emplace(name, value);
    if (!inserted) it->second += ", " + std::string(value);
  }
  std::string body = data.substr(header_end + 4);
  auto length_header = response.headers.find("content-length");
  if (length_header != response.headers.end()) {
    const std::string& text = length_header->second;
    std::uint64_t length = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), length);
    if (ec != std::errc() || end != text.data() + text.size()) {
      return Err(Status::ProtocolError(fmt::format("bad Content-Length '{}'", Printable(text))));
    }
    if (length > kMaxHttpBody) {
      return Err(Status::ResourceExhausted(fmt::format("Content-Length {} above 1 GiB", length)));
    }
    body.reserve(length);
    while (body.size() < length) {
      ESCDR_ASSIGN_OR_RETURN(bool more, ReadMore(fd.get(), &body, deadline));
      if (!more) {
        return Err(Status::ProtocolError(
            fmt::format("body ended after {} of {} bytes (Content-Length)", body.size(), length)));
      }
    }
    body.resize(length);
  } else {
    for (;;) {
      if (body.size() > kMaxHttpBody) return Err(Status::ResourceExhausted("body above 1 GiB"));
      ESCDR_ASSIGN_OR_RETURN(bool more, ReadMore(fd.get(), &body, deadline));
      if (!more) break;
    }
  }
  response.body = std::move(body);
  return response;
}

}  // namespace

Result<HttpResponse> HttpGet(const std::string& host, std::uint16_t port, const std::string& path,
                             milliseconds timeout) {
  std::string url = fmt::format("http://{}:{}{}", host, port, Printable(path));
  bool path_ok =
      !path.empty() && path[0] == '/' && std::none_of(path.begin(), path.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
      });
  if (!path_ok) {
    return Err(Status::InvalidArgument(fmt::format(
        "cannot GET {}: the path must start with '/' and hold no space or control byte", url)));
  }
  Result<HttpResponse> response = HttpGetOnce(host, port, path, Deadline::After(timeout));
  if (!response.has_value()) return Err(response.error().WithContext("GET " + url));
  return response;
}

// ---------------------------------------------------------------------------------------------
// ConsoleShell

Result<ConsoleShell> ConsoleShell::Connect(const std::string& unix_socket_path,
                                           milliseconds timeout) {
  Deadline deadline = Deadline::After(timeout);
  ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, ConnectUnix(unix_socket_path, timeout));
  ESCDR_RETURN_IF_ERROR(SetNonBlocking(fd.get(), true));
  // A random first marker number: markers of an earlier session on the same
  // serial port, still in the guest's tty buffers, then never match.
  std::random_device random;
  std::uint64_t first_id = 1000000 + random() % 1000000000;
  ConsoleShell shell(std::move(fd), unix_socket_path, first_id);
  milliseconds attempt(1000);
  for (;;) {
    // The leading newline ends any partial line; the settings are idempotent,
    // so they go again with every attempt (agetty flushes what came before it).
    Status sent =
        SendAll(shell.fd_.get(), "\nstty -echo; set +o emacs +o vi; PS1=; PS2=; export TERM=dumb\n",
                deadline);
    if (!sent.ok()) return Err(sent.WithContext("console shell " + unix_socket_path));
    auto marker = shell.Exchange("", shell.next_id_++,
                                 Deadline::After(std::min(attempt, deadline.Remaining())));
    if (marker.has_value()) return shell;
    if (marker.error().code() != StatusCode::kTimeout) {
      return Err(marker.error().WithContext("console shell " + unix_socket_path));
    }
    if (deadline.Expired()) {
      return Err(Status::Timeout(fmt::format("the shell on console {} did not answer within {} ms",
                                             unix_socket_path, timeout.count())));
    }
    attempt = std::min(attempt * 2, milliseconds(5000));
  }
}

Result<CommandResult> ConsoleShell::Exchange(const std::string& command, std::uint64_t id,
                                             Deadline deadline) {
  std::string lines = command.empty() ? "" : command + "\n";
  lines += fmt::format("printf '\\n__escdr_%s:%s__\\n' {} $?\n", id);
  ESCDR_RETURN_IF_ERROR(SendAll(fd_.get(), lines, deadline));
  const std::string prefix = fmt::format("__escdr_{}:", id);
  std::size_t from = 0;
  std::string raw;
  for (;;) {
    std::size_t pos = buffer_.find(prefix, from);
    if (pos != std::string::npos) {
      std::size_t digits = pos + prefix.size();
      std::size_t end = digits;
      while (end < buffer_.size() && std::isdigit(static_cast<unsigned char>(buffer_[end]))) ++end;
      if (end + 2 <= buffer_.size()) {
        int exit_code = -1;
        auto [p, ec] = std::from_chars(buffer_.data() + digits, buffer_.data() + end, exit_code);
        if (end > digits && buffer_.compare(end, 2, "__") == 0 && ec == std::errc()) {
          CommandResult result{exit_code,
                               CleanConsoleOutput(std::string_view(buffer_).substr(0, pos))};
          buffer_.erase(0, end + 2);
          if (!buffer_.empty() && buffer_[0] == '\n') buffer_.erase(0, 1);
          return result;
        }
        from = pos + 1;  // not our marker after all
        continue;
      }
      from = pos;  // the marker may be incomplete: read more
    } else {
      from = buffer_.size() > prefix.size() ? buffer_.size() - prefix.size() : 0;
    }
    raw.clear();
    ESCDR_ASSIGN_OR_RETURN(bool more, ReadMore(fd_.get(), &raw, deadline));
    if (!more) {
      fd_.Reset();
      return Err(Status::Unavailable("the console socket closed"));
    }
    std::copy_if(raw.begin(), raw.end(), std::back_inserter(buffer_),
                 [](char c) { return c != '\r'; });
  }
}

Result<CommandResult> ConsoleShell::Run(const std::string& command, milliseconds timeout) {
  auto bad = std::find_if(command.begin(), command.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
  std::string_view problem = command.empty()                    ? "it is empty"
                             : command.size() > kMaxCommandLine ? "it is longer than 4000 bytes"
                             : bad != command.end() ? "it holds a control character (one line only)"
                                                    : "";
  if (!problem.empty()) {
    return Err(Status::InvalidArgument(
        fmt::format("cannot run '{}' on console {}: {}", Printable(command), path_, problem)));
  }
  if (!fd_) return Err(Status::Unavailable(fmt::format("console {} is closed", path_)));
  Deadline deadline = Deadline::After(timeout);
  // Drop what arrived between commands (kernel messages, late output).
  std::string junk;
  while (ReadMore(fd_.get(), &junk, Deadline::After(milliseconds(0))).value_or(false)) junk.clear();
  buffer_.clear();
  if (needs_resync_) {
    auto resync = Exchange("", next_id_++, deadline);
    if (!resync.has_value()) {
      if (resync.error().code() != StatusCode::kTimeout) {
        return Err(resync.error().WithContext("console " + path_));
      }
      static_cast<void>(SendAll(fd_.get(), "\x03", Deadline::After(milliseconds(100))));
      return Err(Status::Timeout(fmt::format(
          "cannot run '{}' on console {}: the shell is still busy with a command that timed out",
          Printable(command), path_)));
    }
    needs_resync_ = false;
  }
  auto result = Exchange(command, next_id_++, deadline);
  if (result.has_value()) return result;
  if (result.error().code() != StatusCode::kTimeout) {
    return Err(result.error().WithContext(
        fmt::format("running '{}' on console {}", Printable(command), path_)));
  }
  // Ctrl-C interrupts the command (and the tty drops the marker line still
  // queued); the next Run() waits for the shell first.
  needs_resync_ = true;
  static_cast<void>(SendAll(fd_.get(), "\x03", Deadline::After(milliseconds(100))));
  return Err(Status::Timeout(fmt::format("'{}' on console {} did not finish within {} ms",
                                         Printable(command), path_, timeout.count())));
}

Result<std::string> ConsoleShell::RunChecked(const std::string& command, milliseconds timeout) {
  ESCDR_ASSIGN_OR_RETURN(CommandResult result, Run(command, timeout));
  if (result.exit_code != 0) {
    std::string_view tail(result.output);
    if (tail.size() > 300) tail = tail.substr(tail.size() - 300);
    return Err(Status::FailedPrecondition(fmt::format("'{}' on console {} exited with code {}: {}",
                                                      Printable(command), path_, result.exit_code,
                                                      Printable(tail, 300))));
  }
  return std::move(result.output);
}

// ---------------------------------------------------------------------------------------------
// ServiceLoad

Result<std::unique_ptr<ServiceLoad>> ServiceLoad::Start(const LoadOptions& options) {
  std::string_view problem;
  if (options.redis_port == 0 && options.http_port == 0) {
    problem = "neither a redis port nor an HTTP port is set";
  } else if (options.redis_port != 0 &&
             (options.redis_threads <= 0 || options.value_size == 0 || options.key_count == 0)) {
    problem = "redis_threads, value_size and key_count must be positive";
  } else if (options.max_ops_per_second < 0) {
    problem = "max_ops_per_second is negative";
  }
  if (!problem.empty()) {
    return Err(Status::InvalidArgument(fmt::format("cannot start the service load: {}", problem)));
  }
  std::unique_ptr<ServiceLoad> load(new ServiceLoad(options));
  if (options.redis_port != 0) {
    for (int i = 0; i < options.redis_threads; ++i) {
      load->threads_.emplace_back([l = load.get(), i] { l->RedisLoop(i); });
    }
  }
  if (options.http_port != 0) load->threads_.emplace_back([l = load.get()] { l->HttpLoop(); });
  return load;
}

ServiceLoad::~ServiceLoad() { Stop(); }

LoadStats ServiceLoad::Stats() const {
  LoadStats stats;
  stats.redis_ops = redis_ops_.load();
  stats.http_requests = http_requests_.load();
  stats.http_bytes = http_bytes_.load();
  stats.errors = errors_.load();
  std::lock_guard<std::mutex> lock(mu_);
  stats.last_error = last_error_;
  return stats;
}

LoadStats ServiceLoad::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  return Stats();
}

void ServiceLoad::RecordError(const Status& status) {
  errors_.fetch_add(1);
  std::lock_guard<std::mutex> lock(mu_);
  last_error_ = status.message();
}

bool ServiceLoad::WaitUntil(MonotonicClock::time_point until) {
  std::unique_lock<std::mutex> lock(mu_);
  stop_cv_.wait_until(lock, until, [this] { return stopping_; });
  return !stopping_;
}

bool ServiceLoad::Pace(MonotonicClock::time_point* next) {
  if (options_.max_ops_per_second <= 0) return WaitUntil(MonotonicClock::time_point::min());
  auto period = std::chrono::duration_cast<MonotonicClock::duration>(
      std::chrono::duration<double>(1.0 / options_.max_ops_per_second));
  // After a stall (a migration's downtime) resume the rate, not a burst.
  auto now = MonotonicClock::now();
  if (*next + period < now) *next = now;
  if (!WaitUntil(*next)) return false;
  *next += period;
  return true;
}

void ServiceLoad::RedisLoop(int index) {
  std::mt19937_64 rng(options_.seed + static_cast<std::uint64_t>(index));
  std::uniform_int_distribution<std::uint32_t> key_dist(0, options_.key_count - 1);
  std::string value(options_.value_size, '\0');
  std::optional<RedisClient> client;
  auto next = MonotonicClock::now();
  while (Pace(&next)) {
    if (!client.has_value()) {
      auto connected =
          RedisClient::Connect(options_.host, options_.redis_port, options_.io_timeout);
      if (!connected.has_value()) {
        RecordError(connected.error());
        if (!WaitUntil(MonotonicClock::now() + options_.retry_backoff)) return;
        continue;
      }
      client.emplace(std::move(*connected));
    }
    for (std::size_t i = 0; i < value.size(); i += 8) {
      std::uint64_t r = rng();
      std::memcpy(value.data() + i, &r, std::min<std::size_t>(8, value.size() - i));
    }
    Status set = client->Set(options_.key_prefix + std::to_string(key_dist(rng)), value);
    if (set.ok()) {
      redis_ops_.fetch_add(1);
      continue;
    }
    RecordError(set);
    client.reset();  // reconnect, even after an error reply: cheap, and surely in step
    if (!WaitUntil(MonotonicClock::now() + options_.retry_backoff)) return;
  }
}

void ServiceLoad::HttpLoop() {
  auto next = MonotonicClock::now();
  while (Pace(&next)) {
    auto response =
        HttpGet(options_.host, options_.http_port, options_.http_path, options_.io_timeout);
    if (response.has_value() && response->status / 100 == 2) {
      http_requests_.fetch_add(1);
      http_bytes_.fetch_add(response->body.size());
      continue;
    }
    RecordError(response.has_value()
                    ? Status::ProtocolError(fmt::format("GET http://{}:{}{}: HTTP status {}",
                                                        options_.host, options_.http_port,
                                                        options_.http_path, response->status))
                    : response.error());
    if (!WaitUntil(MonotonicClock::now() + options_.retry_backoff)) return;
  }
}

}  // namespace escdr::testing
