#include "testing/fake_qmp_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <gtest/gtest.h>

namespace escdr::testing {

FakeQmpServer::FakeQmpServer(UniqueFd fd, Script script) : fd_(std::move(fd)) {
  thread_ = std::thread([this, script = std::move(script)] { script(*this); });
}

FakeQmpServer::~FakeQmpServer() { Join(); }

void FakeQmpServer::Join() {
  if (thread_.joinable()) thread_.join();
  fd_.Reset();
}

void FakeQmpServer::SendGreeting() {
  Send({{"QMP",
         {{"version", {{"qemu", {{"micro", 22}, {"minor", 2}, {"major", 7}}}, {"package", "Debian 1:7.2+dfsg-7+deb12u22"}}},
          {"capabilities", {"oob"}}}}});
}

void FakeQmpServer::Handshake() {
  SendGreeting();
  nlohmann::json cmd = ExpectCommand("qmp_capabilities");
  Reply(cmd);
}

nlohmann::json FakeQmpServer::Receive() {
  for (;;) {
    std::size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      nlohmann::json msg = nlohmann::json::parse(line, nullptr, false);
      if (msg.is_discarded()) {
        ADD_FAILURE() << "fake QMP server received a line that is not JSON: " << line;
        return nullptr;
      }
      return msg;
    }
    auto ready = WaitReadable(fd_.get(), kReceiveTimeout);
    if (!ready.has_value() || !*ready) {
      ADD_FAILURE() << "fake QMP server got no message within " << kReceiveTimeout.count() << " ms";
      return nullptr;
    }
    char chunk[4096];
    ssize_t n = ::read(fd_.get(), chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return nullptr;
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

nlohmann::json FakeQmpServer::ExpectCommand(std::string_view command) {
  nlohmann::json msg = Receive();
  EXPECT_TRUE(msg.is_object() && msg.value("execute", "") == command)
      << "fake QMP server expected " << command << ", got " << msg.dump();
  return msg;
}

void FakeQmpServer::Reply(const nlohmann::json& cmd, const nlohmann::json& value) {
  nlohmann::json msg = {{"return", value}};
  if (cmd.is_object() && cmd.contains("id")) msg["id"] = cmd["id"];
  Send(msg);
}

void FakeQmpServer::ReplyError(const nlohmann::json& cmd, std::string_view cls,
                               std::string_view desc) {
  nlohmann::json msg = {{"error", {{"class", cls}, {"desc", desc}}}};
  if (cmd.is_object() && cmd.contains("id")) msg["id"] = cmd["id"];
  Send(msg);
}

void FakeQmpServer::SendEvent(std::string_view name, const nlohmann::json& data) {
  nlohmann::json msg = {{"event", name},
                        {"timestamp", {{"seconds", 1700000000}, {"microseconds", 250000}}}};
  if (!data.is_null()) msg["data"] = data;
  Send(msg);
}

void FakeQmpServer::Send(const nlohmann::json& msg) { SendRaw(msg.dump() + "\r\n"); }

void FakeQmpServer::SendRaw(std::string_view bytes) {
  Status s = WriteFull(fd_.get(), bytes, "fake QMP client");
  // The client may legitimately have gone away in a test about disconnects.
  if (!s.ok() && s.code() != StatusCode::kIOError) ADD_FAILURE() << s.ToString();
}

void FakeQmpServer::Close() {
  ::shutdown(fd_.get(), SHUT_RDWR);
  fd_.Reset();
}

}  // namespace escdr::testing
