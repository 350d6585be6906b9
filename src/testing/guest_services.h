// Host-side clients for the services of a real distribution guest, with no
// agent inside the guest: redis and nginx reached through QEMU user-network
// port forwards on the host (hostfwd=tcp:127.0.0.1:P-:80 and :6379), and a
// root shell on a serial port that QEMU exposes as a unix socket (agetty
// autologin on ttyS1).
//
//   RedisClient   RESP2 client (SET/GET/PING or any command).
//   HttpGet       one HTTP/1.0 GET, Connection: close.
//   ConsoleShell  runs single-line commands on the serial shell and returns
//                 their exit code and output.
//   ServiceLoad   keeps redis and nginx busy from background threads (dirtying
//                 guest memory) until Stop(), counting operations and errors.
//
// Every network call is bounded by a timeout measured on the monotonic clock:
// a paused or hung guest gives a Timeout error, never a hang. Sockets are
// non-blocking and waited on with poll(2); writes never raise SIGPIPE.
//
// Thread safety: a RedisClient or ConsoleShell is used by one thread at a
// time; distinct objects are independent. HttpGet is reentrant. ServiceLoad's
// methods may be called from any thread.
#ifndef ESCDR_TESTING_GUEST_SERVICES_H_
#define ESCDR_TESTING_GUEST_SERVICES_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/sys/clock.h"
#include "escdr/sys/unique_fd.h"

namespace escdr::testing {

// A RESP2 client on one TCP connection.
//
// Errors of Command(): a redis error reply ("-ERR ...", "-LOADING ...") is
// FailedPrecondition naming the command and redis's message, and leaves the
// connection usable; a nil reply is NotFound. Anything else (Timeout,
// Unavailable when redis closed the connection, IOError, ProtocolError for a
// malformed reply) closes the connection, since the reply stream is no longer
// in step: connected() turns false and later commands fail with Unavailable
// until the caller connects again.
class RedisClient {
 public:
  // Connects to `host`:`port` and checks with PING that redis answers,
  // retrying until `timeout` has passed: while the guest boots, a QEMU port
  // forward accepts and then drops the connection, or redis answers -LOADING.
  // Timeout (carrying the last attempt's error) once the time is up;
  // InvalidArgument at once if `host` does not resolve. `timeout` also bounds
  // every later Command() (sending the request and reading the whole reply).
  static Result<RedisClient> Connect(std::string host, std::uint16_t port,
                                     std::chrono::milliseconds timeout);

  RedisClient(RedisClient&&) noexcept = default;
  RedisClient& operator=(RedisClient&&) noexcept = default;
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Sends `args` (REQUIRES: non-empty) as an array of bulk strings and
  // returns the reply as text: a simple string or bulk string as is, an
  // integer in decimal. An array is flattened: its elements (nested arrays
  // recursively, a nil element as "") joined with '\n'; a nil array is
  // NotFound. Errors as described above the class.
  Result<std::string> Command(const std::vector<std::string>& args);

  Status Set(const std::string& key, const std::string& value);
  // NotFound if `key` does not exist.
  Result<std::string> Get(const std::string& key);
  // OK if redis answered PONG.
  Status Ping();

  // False once an error closed the connection.
  bool connected() const { return fd_.valid(); }
  // "redis <host>:<port>", as used in messages.
  const std::string& name() const { return name_; }

 private:
  RedisClient(UniqueFd fd, std::string name, std::chrono::milliseconds timeout)
      : fd_(std::move(fd)), name_(std::move(name)), timeout_(timeout) {}
  Result<std::string> CommandUntil(const std::vector<std::string>& args, Deadline deadline);
  Result<std::string> ReadLine(Deadline deadline);
  Result<std::string> ReadReply(Deadline deadline, int depth);

  UniqueFd fd_;
  std::string name_;
  std::chrono::milliseconds timeout_;
  std::string buffer_;  // received, not yet parsed
};

struct HttpResponse {
  int status = 0;                              // e.g. 200
  std::map<std::string, std::string> headers;  // lower-case names; repeats joined by ", "
  std::string body;
};

// GETs `path` (REQUIRES: starts with '/', no spaces or control characters;
// InvalidArgument otherwise) from `host`:`port` with HTTP/1.0 and
// "Connection: close". The body ends after Content-Length bytes if the
// response has that header, else at end of file. One connection attempt, no
// retry. A non-2xx status is a successful result, not an error. Errors name
// "http://host:port/path": Unavailable (refused, or closed before sending a
// byte), Timeout (`timeout` bounds the whole request), ProtocolError (a
// malformed status line or header, headers cut short, a body shorter than its Content-Length),
// ResourceExhausted (headers above 64 KiB or a body above 1 GiB).
Result<HttpResponse> HttpGet(const std::string& host, std::uint16_t port, const std::string& path,
                             std::chrono::milliseconds timeout);

struct CommandResult {
  int exit_code = 0;
  // stdout and stderr merged, '\r' and terminal escape sequences removed,
  // trailing newlines removed (as the shell's $(...) does).
  std::string output;
};

// A root bash on a serial console, reached through a unix socket (QEMU
// -chardev socket,path=...,server=on,wait=off). The stream is a raw tty:
// echo, "\r\n" line ends, prompts, bracketed-paste escapes.
//
// Connect() makes the shell quiet (stty -echo, no line editing, PS1= PS2=,
// TERM=dumb). Run() sends the command as one line and then a second line,
//   printf '\n__escdr_%s:%s__\n' <N> $?
// and reads until the expanded marker "__escdr_<N>:<exit code>__" with this
// call's N arrives; everything before it is the command's output. An echoed
// marker line shows "%s" and "$?" literally, and stale markers of earlier
// calls or sessions carry other numbers (N starts at a random value), so
// neither is taken for the end. Output that the guest prints on its own
// (kernel messages, background jobs) can still interleave.
class ConsoleShell {
 public:
  // Connects to the unix socket at `path` and waits until the shell runs a
  // marker command, retrying (the socket may not exist yet, agetty may not
  // have started, typed bytes may be flushed by it) until `timeout` has
  // passed (Timeout, naming the path).
  static Result<ConsoleShell> Connect(const std::string& unix_socket_path,
                                      std::chrono::milliseconds timeout);

  ConsoleShell(ConsoleShell&&) noexcept = default;
  ConsoleShell& operator=(ConsoleShell&&) noexcept = default;
  ConsoleShell(const ConsoleShell&) = delete;
  ConsoleShell& operator=(const ConsoleShell&) = delete;

  // Runs `command` and returns its exit code and output. A shell syntax error
  // is exit code 2, not an error. InvalidArgument if the command is empty,
  // longer than 4000 bytes (the tty's line limit is 4095) or contains a
  // control character other than tab (in particular '\n': one line only).
  // Timeout if it has not finished within `timeout`: then Ctrl-C is sent to
  // the shell, and the next Run() first waits (within its own timeout) until
  // the shell answers again, discarding whatever the interrupted command
  // printed. Unavailable if the socket closed.
  Result<CommandResult> Run(const std::string& command, std::chrono::milliseconds timeout);

  // Run(), with a non-zero exit code turned into FailedPrecondition naming the
  // command, the code and the end of its output. Returns the output.
  Result<std::string> RunChecked(const std::string& command, std::chrono::milliseconds timeout);

  const std::string& path() const { return path_; }

 private:
  ConsoleShell(UniqueFd fd, std::string path, std::uint64_t first_id)
      : fd_(std::move(fd)), path_(std::move(path)), next_id_(first_id) {}
  // Sends `command` (may be empty: marker only) and waits for marker `id`.
  Result<CommandResult> Exchange(const std::string& command, std::uint64_t id, Deadline deadline);

  UniqueFd fd_;
  std::string path_;
  std::uint64_t next_id_;
  bool needs_resync_ = false;  // a command timed out; the shell may still be busy
  std::string buffer_;         // received, '\r' removed, not yet consumed
};

struct LoadOptions {
  std::string host = "127.0.0.1";
  // Redis writers: `redis_threads` threads, each on its own connection,
  // SET <key_prefix><i> to `value_size` random bytes, i uniform in
  // [0, key_count). The defaults dirty ~80 MiB of the guest's redis. Port 0
  // runs no writers.
  std::uint16_t redis_port = 0;
  int redis_threads = 2;
  std::size_t value_size = 4096;
  std::uint32_t key_count = 20000;
  std::string key_prefix = "escdr:load:";
  // One thread GETting `http_path` in a loop (a non-2xx status counts as an
  // error). Port 0 runs no HTTP thread.
  std::uint16_t http_port = 0;
  std::string http_path = "/blob.bin";
  // Per-thread operations per second; 0 = as fast as possible.
  double max_ops_per_second = 0;
  // Bounds each connect and each operation. Stop() may wait this long for an
  // operation in flight.
  std::chrono::milliseconds io_timeout{5000};
  // Pause after a failed operation before reconnecting (during a live
  // migration's downtime the services stall briefly; the load goes on).
  std::chrono::milliseconds retry_backoff{200};
  std::uint64_t seed = 1;  // of the keys and values (thread i uses seed + i)
};

struct LoadStats {
  std::uint64_t redis_ops = 0;      // SETs that redis acknowledged
  std::uint64_t http_requests = 0;  // GETs with a 2xx response
  std::uint64_t http_bytes = 0;     // body bytes of those
  std::uint64_t errors = 0;         // failed connects, operations and non-2xx responses
  std::string last_error;           // message of the latest error; "" if none
};

// Background load on a guest's redis and HTTP services (see LoadOptions).
// Every error is counted and followed by a back-off and a new connection;
// nothing ends the load but Stop() or the destructor.
class ServiceLoad {
 public:
  // Starts the threads. InvalidArgument if no port is set, or if
  // redis_threads, value_size or key_count is zero with a redis port, or
  // max_ops_per_second is negative. Connection problems are not errors here:
  // they show in the counters.
  static Result<std::unique_ptr<ServiceLoad>> Start(const LoadOptions& options);

  // Stops and joins the threads.
  ~ServiceLoad();
  ServiceLoad(const ServiceLoad&) = delete;
  ServiceLoad& operator=(const ServiceLoad&) = delete;

  // The counters so far.
  LoadStats Stats() const;
  // Stops the threads (each finishes its operation in flight, bounded by
  // io_timeout), joins them and returns the final counters. Later calls
  // return the same counters.
  LoadStats Stop();

 private:
  explicit ServiceLoad(const LoadOptions& options) : options_(options) {}
  void RedisLoop(int index);
  void HttpLoop();
  void RecordError(const Status& status);
  // Waits until `until` or Stop(); false once stopping.
  bool WaitUntil(MonotonicClock::time_point until);
  // Paces one thread to max_ops_per_second; false once stopping.
  bool Pace(MonotonicClock::time_point* next);

  const LoadOptions options_;
  std::atomic<std::uint64_t> redis_ops_{0};
  std::atomic<std::uint64_t> http_requests_{0};
  std::atomic<std::uint64_t> http_bytes_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::mutex stop_mu_;  // serializes Stop()
  mutable std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;   // guarded by mu_
  std::string last_error_;  // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace escdr::testing

#endif  // ESCDR_TESTING_GUEST_SERVICES_H_
