// Unit tests of the guest service clients: RedisClient, HttpGet and
// ServiceLoad against fake servers on loopback TCP ports, ConsoleShell against
// a real bash behind a pty (socat).
#include "testing/guest_services.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "escdr/sys/clock.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"

namespace escdr::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A TCP server on 127.0.0.1 (a free port) that runs `handler` on its own
// thread for each connection, on a blocking socket. The destructor shuts the
// connections down (handlers blocked in recv see end of file) and joins.
class FakeTcpServer {
 public:
  using Handler = std::function<void(int fd, int connection_index)>;

  explicit FakeTcpServer(Handler handler) : handler_(std::move(handler)) {
    listen_fd_.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    auto* sa = reinterpret_cast<sockaddr*>(&addr);
    EXPECT_EQ(::bind(listen_fd_.get(), sa, len), 0);
    EXPECT_EQ(::listen(listen_fd_.get(), 16), 0);
    EXPECT_EQ(::getsockname(listen_fd_.get(), sa, &len), 0);
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  ~FakeTcpServer() {
    stop_ = true;
    accept_thread_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    for (std::thread& t : threads_) t.join();
    for (int fd : fds_) ::close(fd);
  }

  std::uint16_t port() const { return port_; }
  int connections() const { return connections_.load(); }

 private:
  void AcceptLoop() {
    while (!stop_) {
      pollfd p{listen_fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      int index = connections_.fetch_add(1);
      std::lock_guard<std::mutex> lock(mu_);
      fds_.push_back(fd);
      threads_.emplace_back([this, fd, index] { handler_(fd, index); });
    }
  }

  Handler handler_;
  UniqueFd listen_fd_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<int> fds_;  // closed by the destructor only, so never reused meanwhile
  std::vector<std::thread> threads_;
};

bool WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Writes one byte per send(), pausing briefly, so the client sees short reads.
bool WriteByteByByte(int fd, std::string_view data) {
  for (char c : data) {
    if (!WriteAll(fd, std::string_view(&c, 1))) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

// Reads one byte (blocking); nullopt at end of file or on error.
std::optional<char> ReadByte(int fd) {
  char c;
  if (::recv(fd, &c, 1, 0) != 1) return std::nullopt;
  return c;
}

std::optional<std::string> ReadLine(int fd) {
  std::string line;
  while (!line.ends_with("\r\n")) {
    auto c = ReadByte(fd);
    if (!c) return std::nullopt;
    line += *c;
  }
  line.resize(line.size() - 2);
  return line;
}

// Reads one RESP command (an array of bulk strings); nullopt at end of file.
std::optional<std::vector<std::string>> ReadCommand(int fd) {
  auto header = ReadLine(fd);
  if (!header || header->empty() || (*header)[0] != '*') return std::nullopt;
  std::vector<std::string> args(std::stoul(header->substr(1)));
  for (std::string& arg : args) {
    auto len = ReadLine(fd);
    if (!len || len->empty() || (*len)[0] != '$') return std::nullopt;
    arg.resize(std::stoul(len->substr(1)) + 2);
    for (char& c : arg) {
      auto b = ReadByte(fd);
      if (!b) return std::nullopt;
      c = *b;
    }
    arg.resize(arg.size() - 2);
  }
  return args;
}

// Expects the command `name` and answers `reply` (byte by byte if `slowly`).
void ExpectAndReply(int fd, const std::string& name, std::string_view reply, bool slowly = false) {
  auto cmd = ReadCommand(fd);
  ASSERT_TRUE(cmd.has_value()) << "expected " << name;
  EXPECT_EQ((*cmd)[0], name);
  ASSERT_TRUE(slowly ? WriteByteByByte(fd, reply) : WriteAll(fd, reply));
}

// Reads until end of file (the client gave up).
void DrainUntilClosed(int fd) {
  while (ReadByte(fd)) {
  }
}

// A small in-memory redis: PING, SET, GET. Each connection is closed after
// `close_after` commands (0: never).
class FakeRedis {
 public:
  explicit FakeRedis(int close_after = 0)
      : close_after_(close_after), server_([this](int fd, int) { Serve(fd); }) {}

  std::uint16_t port() const { return server_.port(); }
  int connections() const { return server_.connections(); }
  std::map<std::string, std::string> data() const {
    std::lock_guard<std::mutex> lock(mu_);
    return data_;
  }
  int sets() const { return sets_.load(); }

 private:
  void Serve(int fd) {
    for (int n = 1;; ++n) {
      auto cmd = ReadCommand(fd);
      if (!cmd) return;
      std::string reply = "-ERR unknown command\r\n";
      if ((*cmd)[0] == "PING") {
        reply = "+PONG\r\n";
      } else if ((*cmd)[0] == "SET" && cmd->size() == 3) {
        std::lock_guard<std::mutex> lock(mu_);
        data_[(*cmd)[1]] = (*cmd)[2];
        sets_.fetch_add(1);
        reply = "+OK\r\n";
      } else if ((*cmd)[0] == "GET" && cmd->size() == 2) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = data_.find((*cmd)[1]);
        reply = it == data_.end()
                    ? "$-1\r\n"
                    : "$" + std::to_string(it->second.size()) + "\r\n" + it->second + "\r\n";
      }
      if (!WriteAll(fd, reply)) return;
      if (close_after_ > 0 && n >= close_after_) {
        ::shutdown(fd, SHUT_RDWR);
        return;
      }
    }
  }

  const int close_after_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> data_;
  std::atomic<int> sets_{0};
  FakeTcpServer server_;  // last: its threads use the members above
};

// Reads an HTTP request up to its blank line.
std::string ReadHttpRequest(int fd) {
  std::string request;
  while (!request.ends_with("\r\n\r\n")) {
    auto c = ReadByte(fd);
    if (!c) break;
    request += *c;
  }
  return request;
}

// An HTTP server answering every request with `response`, then closing.
FakeTcpServer::Handler HttpResponder(std::string response) {
  return [response](int fd, int) {
    ReadHttpRequest(fd);
    WriteAll(fd, response);
    ::shutdown(fd, SHUT_RDWR);
  };
}

// ---------------------------------------------------------------------------------------------

TEST(RedisClientTest, SetGetAndNil) {
  FakeRedis redis;
  auto client = RedisClient::Connect("127.0.0.1", redis.port(), seconds(10));
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  EXPECT_TRUE(client->Ping().ok());
  ASSERT_TRUE(client->Set("k", "v").ok());
  const std::string binary("a\r\nb\0c$-1\r\n", 11);
  ASSERT_TRUE(client->Set("bin", binary).ok());
  EXPECT_EQ(client->Get("k").value_or("?"), "v");
  EXPECT_EQ(client->Get("bin").value_or("?"), binary);
  auto missing = client->Get("missing");
  ASSERT_FALSE(missing.has_value());
  EXPECT_TRUE(missing.error().IsNotFound()) << missing.error().ToString();
  EXPECT_TRUE(client->connected());
  EXPECT_EQ(redis.data().at("bin"), binary);
}

TEST(RedisClientTest, ErrorReplyNamesCommandAndMessageAndKeepsConnection) {
  FakeTcpServer server([](int fd, int) {
    ExpectAndReply(fd, "PING", "+PONG\r\n");
    ExpectAndReply(fd, "HSET", "-WRONGTYPE Operation against a key holding the wrong kind\r\n");
    ExpectAndReply(fd, "INCR", ":42\r\n");
    DrainUntilClosed(fd);
  });
  auto client = RedisClient::Connect("127.0.0.1", server.port(), seconds(10));
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  auto error = client->Command({"HSET", "mykey", "f", "v"});
  ASSERT_FALSE(error.has_value());
  EXPECT_EQ(error.error().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(error.error().message().find("HSET mykey"), std::string::npos)
      << error.error().message();
  EXPECT_NE(error.error().message().find("WRONGTYPE Operation"), std::string::npos)
      << error.error().message();
  EXPECT_TRUE(client->connected());
  EXPECT_EQ(client->Command({"INCR", "n"}).value_or("?"), "42");
}

TEST(RedisClientTest, ArraysAreFlattened) {
  FakeTcpServer server([](int fd, int) {
    ExpectAndReply(fd, "PING", "+PONG\r\n");
    ExpectAndReply(fd, "MGET", "*3\r\n$1\r\na\r\n$-1\r\n*2\r\n:7\r\n+x\r\n");
    ExpectAndReply(fd, "BLPOP", "*-1\r\n");
    ExpectAndReply(fd, "KEYS", "*0\r\n");
    DrainUntilClosed(fd);
  });
  auto client = RedisClient::Connect("127.0.0.1", server.port(), seconds(10));
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  EXPECT_EQ(client->Command({"MGET", "a", "b", "c"}).value_or("?"), "a\n\n7\nx");
  auto nil = client->Command({"BLPOP", "q", "1"});
  ASSERT_FALSE(nil.has_value());
  EXPECT_TRUE(nil.error().IsNotFound());
  EXPECT_EQ(client->Command({"KEYS", "*"}).value_or("?"), "");
}

TEST(RedisClientTest, RepliesArrivingOneByteAtATime) {
  FakeTcpServer server([](int fd, int) {
    ExpectAndReply(fd, "PING", "+PONG\r\n", /*slowly=*/true);
    ExpectAndReply(fd, "GET", "$11\r\nhello world\r\n", true);
    ExpectAndReply(fd, "DBSIZE", ":12345\r\n", true);
    ExpectAndReply(fd, "GET", "$-1\r\n", true);
    DrainUntilClosed(fd);
  });
  auto client = RedisClient::Connect("127.0.0.1", server.port(), seconds(10));
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  EXPECT_EQ(client->Get("k").value_or("?"), "hello world");
  EXPECT_EQ(client->Command({"DBSIZE"}).value_or("?"), "12345");
  auto nil = client->Get("gone");
  ASSERT_FALSE(nil.has_value());
  EXPECT_TRUE(nil.error().IsNotFound());
}

TEST(RedisClientTest, ConnectRetriesWhileConnectionsAreDropped) {
  // As a QEMU port forward does while the guest's redis is not up yet.
  FakeTcpServer server([](int fd, int index) {
    if (index < 3) {
      ::shutdown(fd, SHUT_RDWR);
      return;
    }
    ExpectAndReply(fd, "PING", "+PONG\r\n");
    DrainUntilClosed(fd);
  });
  auto client = RedisClient::Connect("127.0.0.1", server.port(), seconds(30));
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  EXPECT_EQ(server.connections(), 4);
}

TEST(RedisClientTest, ServerThatNeverAnswersPingGivesTimeout) {
  FakeTcpServer server([](int fd, int) { DrainUntilClosed(fd); });
  auto client = RedisClient::Connect("127.0.0.1", server.port(), milliseconds(300));
  ASSERT_FALSE(client.has_value());
  EXPECT_EQ(client.error().code(), StatusCode::kTimeout) << client.error().ToString();
}

TEST(RedisClientTest, ServerThatStopsAnsweringGivesTimeoutAndClosesConnection) {
  FakeTcpServer server([](int fd, int) {
    ExpectAndReply(fd, "PING", "+PONG\r\n");
    DrainUntilClosed(fd);
  });
  auto client = RedisClient::Connect("127.0.0.1", server.port(), milliseconds(300));
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  auto get = client->Get("k");
  ASSERT_FALSE(get.has_value());
  EXPECT_EQ(get.error().code(), StatusCode::kTimeout) << get.error().ToString();
  EXPECT_NE(get.error().message().find("GET k"), std::string::npos) << get.error().message();
  EXPECT_FALSE(client->connected());
  EXPECT_EQ(client->Ping().code(), StatusCode::kUnavailable);
}

TEST(RedisClientTest, MalformedReplyIsProtocolError) {
  FakeTcpServer server([](int fd, int) {
    ExpectAndReply(fd, "PING", "+PONG\r\n");
    ExpectAndReply(fd, "GET", "$5\r\nhello!!\r\n");
    DrainUntilClosed(fd);
  });
  auto client = RedisClient::Connect("127.0.0.1", server.port(), seconds(10));
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  auto get = client->Get("k");
  ASSERT_FALSE(get.has_value());
  EXPECT_EQ(get.error().code(), StatusCode::kProtocolError) << get.error().ToString();
  EXPECT_FALSE(client->connected());
}

// ---------------------------------------------------------------------------------------------

TEST(HttpGetTest, BodyOfContentLength) {
  std::string request;
  std::mutex mu;
  FakeTcpServer server([&](int fd, int) {
    std::string r = ReadHttpRequest(fd);
    {
      std::lock_guard<std::mutex> lock(mu);
      request = r;
    }
    WriteAll(
        fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Thing:  a \r\nx-thing: b\r\n\r\nhelloEXTRA");
    DrainUntilClosed(fd);  // the client must stop at Content-Length, not wait for EOF
  });
  auto response = HttpGet("127.0.0.1", server.port(), "/index.html", seconds(10));
  ASSERT_TRUE(response.has_value()) << response.error().ToString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, "hello");
  EXPECT_EQ(response->headers["content-length"], "5");
  EXPECT_EQ(response->headers["x-thing"], "a, b");
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_TRUE(request.starts_with("GET /index.html HTTP/1.0\r\n")) << request;
  EXPECT_NE(request.find("Connection: close\r\n"), std::string::npos) << request;
}

TEST(HttpGetTest, BodyUntilEndOfFile) {
  FakeTcpServer server([](int fd, int) {
    ReadHttpRequest(fd);
    WriteAll(fd, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ");
    std::this_thread::sleep_for(milliseconds(20));
    WriteAll(fd, "second");
    ::shutdown(fd, SHUT_RDWR);
  });
  auto response = HttpGet("127.0.0.1", server.port(), "/", seconds(10));
  ASSERT_TRUE(response.has_value()) << response.error().ToString();
  EXPECT_EQ(response->body, "first second");
  EXPECT_EQ(response->headers["content-type"], "text/plain");
}

TEST(HttpGetTest, NotFoundStatusIsAResponse) {
  FakeTcpServer server(
      HttpResponder("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"));
  auto response = HttpGet("127.0.0.1", server.port(), "/nope", seconds(10));
  ASSERT_TRUE(response.has_value()) << response.error().ToString();
  EXPECT_EQ(response->status, 404);
  EXPECT_EQ(response->body, "not found");
}

TEST(HttpGetTest, GarbageStatusLineIsProtocolErrorNamingTheUrl) {
  FakeTcpServer server(HttpResponder("SSH-2.0-OpenSSH_9.2\r\n\r\n"));
  auto response = HttpGet("127.0.0.1", server.port(), "/x", seconds(10));
  ASSERT_FALSE(response.has_value());
  EXPECT_EQ(response.error().code(), StatusCode::kProtocolError) << response.error().ToString();
  std::string url = "127.0.0.1:" + std::to_string(server.port()) + "/x";
  EXPECT_NE(response.error().message().find(url), std::string::npos) << response.error().message();
}

TEST(HttpGetTest, BodyShorterThanContentLengthIsProtocolError) {
  FakeTcpServer server(HttpResponder("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"));
  auto response = HttpGet("127.0.0.1", server.port(), "/blob.bin", seconds(10));
  ASSERT_FALSE(response.has_value());
  EXPECT_EQ(response.error().code(), StatusCode::kProtocolError) << response.error().ToString();
}

TEST(HttpGetTest, ServerThatNeverAnswersGivesTimeout) {
  FakeTcpServer server([](int fd, int) { DrainUntilClosed(fd); });
  auto response = HttpGet("127.0.0.1", server.port(), "/", milliseconds(300));
  ASSERT_FALSE(response.has_value());
  EXPECT_EQ(response.error().code(), StatusCode::kTimeout) << response.error().ToString();
}

TEST(HttpGetTest, PathWithSpaceIsRefused) {
  auto response = HttpGet("127.0.0.1", 1, "/a b", seconds(1));
  ASSERT_FALSE(response.has_value());
  EXPECT_TRUE(response.error().IsInvalidArgument());
}

// ---------------------------------------------------------------------------------------------

// A real interactive bash on a pty behind a unix socket, as a guest's serial
// console looks to the host.
class ConsoleShellTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!FindProgram("socat").has_value()) GTEST_SKIP() << "socat is not installed";
    auto dir = TempDir::Create("escdr-console");
    ASSERT_TRUE(dir.has_value()) << dir.error().ToString();
    dir_ = std::move(*dir);
    path_ = dir_.File("serial.sock");
    SubprocessOptions options;
    options.argv = {"socat", "UNIX-LISTEN:" + path_,
                    "EXEC:bash --norc -i,pty,stderr,setsid,ctty,sigint,sane"};
    options.stderr_path = dir_.File("socat.log");
    auto socat = Subprocess::Spawn(options);
    ASSERT_TRUE(socat.has_value()) << socat.error().ToString();
    socat_ = std::move(*socat);
    auto shell = ConsoleShell::Connect(path_, seconds(30));
    ASSERT_TRUE(shell.has_value()) << shell.error().ToString();
    shell_.emplace(std::move(*shell));
  }

  void TearDown() override {
    shell_.reset();  // closing the socket hangs up the pty: bash exits
    if (socat_.valid()) {
      static_cast<void>(socat_.Kill(SIGTERM));
      if (!socat_.WaitFor(seconds(10)).has_value()) static_cast<void>(socat_.Kill(SIGKILL));
    }
  }

  CommandResult MustRun(const std::string& command) {
    auto result = shell_->Run(command, seconds(20));
    EXPECT_TRUE(result.has_value()) << command << ": " << result.error().ToString();
    return result.value_or(CommandResult{-1, ""});
  }

  TempDir dir_;
  std::string path_;
  Subprocess socat_;
  std::optional<ConsoleShell> shell_;
};

TEST_F(ConsoleShellTest, EchoGivesOutputAndExitZero) {
  CommandResult r = MustRun("echo hello");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "hello");
}

TEST_F(ConsoleShellTest, ExitCodesAreReported) {
  EXPECT_EQ(MustRun("false").exit_code, 1);
  EXPECT_EQ(MustRun("(exit 7)").exit_code, 7);
  EXPECT_EQ(MustRun("echo )").exit_code, 2) << "a syntax error";
  auto checked = shell_->RunChecked("echo oops; false", seconds(20));
  ASSERT_FALSE(checked.has_value());
  EXPECT_NE(checked.error().message().find("code 1: oops"), std::string::npos)
      << checked.error().message();
}

TEST_F(ConsoleShellTest, SeveralLinesWithStderrMerged) {
  CommandResult r = MustRun("printf 'one\\ntwo\\n'; echo three >&2; printf 'no newline'");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.output, "one\ntwo\nthree\nno newline");
}

TEST_F(ConsoleShellTest, MarkerWithAnotherNumberIsOutput) {
  CommandResult r = MustRun(
      "echo __escdr_1:0__; printf '\\n__escdr_%s:%s__\\n' 42 0; echo __escdr_:3__; echo done; "
      "(exit 4)");
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.output, "__escdr_1:0__\n\n__escdr_42:0__\n__escdr_:3__\ndone");
}

TEST_F(ConsoleShellTest, MultiLineAndEmptyCommandsAreRefused) {
  for (const char* command : {"echo a\necho b", "echo a\r", "", "echo \x03"}) {
    auto r = shell_->Run(command, seconds(5));
    ASSERT_FALSE(r.has_value()) << command;
    EXPECT_TRUE(r.error().IsInvalidArgument()) << r.error().ToString();
  }
  EXPECT_EQ(MustRun("echo still here").output, "still here");
}

TEST_F(ConsoleShellTest, CommandPastItsTimeoutIsInterrupted) {
  auto r = shell_->Run("echo started; sleep 60; echo finished", milliseconds(500));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kTimeout) << r.error().ToString();
  // Ctrl-C ended the sleep; the shell answers again, without the old output.
  CommandResult next = MustRun("echo back");
  EXPECT_EQ(next.exit_code, 0);
  EXPECT_EQ(next.output, "back");
}

TEST(ConsoleShellConnectTest, NoSocketGivesTimeout) {
  auto dir = TempDir::Create("escdr-console");
  ASSERT_TRUE(dir.has_value());
  auto shell = ConsoleShell::Connect(dir->File("absent.sock"), milliseconds(200));
  ASSERT_FALSE(shell.has_value());
  EXPECT_EQ(shell.error().code(), StatusCode::kTimeout) << shell.error().ToString();
}

// ---------------------------------------------------------------------------------------------

// Polls `stats` until `done` holds; false if it did not within a minute.
bool WaitForStats(const ServiceLoad& load, const std::function<bool(const LoadStats&)>& done) {
  Deadline deadline = Deadline::After(seconds(60));
  while (!done(load.Stats())) {
    if (deadline.Expired()) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return true;
}

TEST(ServiceLoadTest, CountersAdvanceAndStopReturnsThem) {
  FakeRedis redis;
  std::string body(4096, 'b');
  FakeTcpServer http(HttpResponder("HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + body));
  LoadOptions options;
  options.redis_port = redis.port();
  options.redis_threads = 2;
  options.value_size = 1000;
  options.key_count = 50;
  options.key_prefix = "k:";
  options.http_port = http.port();
  auto load = ServiceLoad::Start(options);
  ASSERT_TRUE(load.has_value()) << load.error().ToString();
  ASSERT_TRUE(WaitForStats(**load, [](const LoadStats& s) {
    return s.redis_ops >= 200 && s.http_requests >= 5;
  })) << (*load)->Stats().last_error;
  LoadStats before_stop = (*load)->Stats();
  LoadStats stats = (*load)->Stop();
  EXPECT_GE(stats.redis_ops, before_stop.redis_ops);
  EXPECT_GE(stats.http_requests, before_stop.http_requests);
  EXPECT_EQ(stats.http_bytes, stats.http_requests * 4096);
  EXPECT_EQ(stats.errors, 0u) << stats.last_error;
  EXPECT_EQ(stats.redis_ops, static_cast<std::uint64_t>(redis.sets()));
  EXPECT_EQ(redis.connections(), 2);
  std::map<std::string, std::string> data = redis.data();
  EXPECT_LE(data.size(), 50u);
  std::set<std::string> values;
  for (const auto& [key, value] : data) {
    EXPECT_TRUE(key.starts_with("k:")) << key;
    EXPECT_LT(std::stoi(key.substr(2)), 50) << key;
    EXPECT_EQ(value.size(), 1000u);
    values.insert(value);
  }
  EXPECT_EQ(values.size(), data.size()) << "values are random";
  LoadStats again = (*load)->Stop();
  EXPECT_EQ(again.redis_ops, stats.redis_ops);
}

TEST(ServiceLoadTest, DroppedConnectionsAreCountedAndTheLoadGoesOn) {
  FakeRedis redis(/*close_after=*/4);  // PING and 3 SETs per connection
  FakeTcpServer http([](int fd, int index) {
    ReadHttpRequest(fd);
    if (index % 2 == 0) WriteAll(fd, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    ::shutdown(fd, SHUT_RDWR);  // every other request gets no response
  });
  LoadOptions options;
  options.redis_port = redis.port();
  options.redis_threads = 1;
  options.value_size = 64;
  options.key_count = 10;
  options.http_port = http.port();
  options.retry_backoff = milliseconds(1);
  auto load = ServiceLoad::Start(options);
  ASSERT_TRUE(load.has_value()) << load.error().ToString();
  ASSERT_TRUE(WaitForStats(**load, [](const LoadStats& s) {
    return s.redis_ops >= 30 && s.http_requests >= 5 && s.errors >= 20;
  })) << (*load)->Stats().last_error;
  LoadStats stats = (*load)->Stop();
  EXPECT_GE(redis.connections(), 10);
  EXPECT_FALSE(stats.last_error.empty());
}

TEST(ServiceLoadTest, StartRefusesOptionsWithoutWork) {
  LoadOptions options;
  auto nothing = ServiceLoad::Start(options);
  ASSERT_FALSE(nothing.has_value());
  EXPECT_TRUE(nothing.error().IsInvalidArgument()) << nothing.error().ToString();
  options.redis_port = 6379;
  options.redis_threads = 0;
  auto no_threads = ServiceLoad::Start(options);
  ASSERT_FALSE(no_threads.has_value());
  EXPECT_TRUE(no_threads.error().IsInvalidArgument()) << no_threads.error().ToString();
}

}  // namespace
}  // namespace escdr::testing
