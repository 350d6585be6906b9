// FakeQmpServer: a scripted QMP peer for unit tests of QMP users.
//
// The server runs a test-provided script on its own thread against one end of
// a connected socket; the script speaks QMP with the helpers below (greeting,
// expect a command, reply, error, event, close). Helpers report mismatches
// with GoogleTest's ADD_FAILURE (thread-safe) and never hang: every receive
// waits at most kReceiveTimeout.
//
//   auto [client_fd, server_fd] = *UnixSocketPair();
//   FakeQmpServer server(std::move(server_fd), [](FakeQmpServer& s) {
//     s.Handshake();
//     auto cmd = s.ExpectCommand("query-status");
//     s.Reply(cmd, {{"status", "running"}, {"running", true}});
//   });
//   auto qmp = QmpClient::Handshake(std::move(client_fd), "fake");
//
// Thread safety: the helpers are for the script's thread only. The destructor
// waits for the script to end and then closes the socket.
#ifndef ESCDR_TESTING_FAKE_QMP_SERVER_H_
#define ESCDR_TESTING_FAKE_QMP_SERVER_H_

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include "escdr/sys/unique_fd.h"

namespace escdr::testing {

class FakeQmpServer {
 public:
  using Script = std::function<void(FakeQmpServer&)>;
  static constexpr std::chrono::milliseconds kReceiveTimeout{30000};

  FakeQmpServer(UniqueFd fd, Script script);
  ~FakeQmpServer();
  FakeQmpServer(const FakeQmpServer&) = delete;
  FakeQmpServer& operator=(const FakeQmpServer&) = delete;

  // Waits for the script to finish.
  void Join();

  // The QEMU 7.2 greeting banner.
  void SendGreeting();
  // SendGreeting, then expect qmp_capabilities and reply {}.
  void Handshake();
  // Receives the next message; null on end of file or timeout (after
  // ADD_FAILURE for a timeout).
  nlohmann::json Receive();
  // Receives a message and checks that it executes `command`.
  nlohmann::json ExpectCommand(std::string_view command);
  // {"return": value, "id": <id of cmd>} (no id if cmd has none).
  void Reply(const nlohmann::json& cmd, const nlohmann::json& value = nlohmann::json::object());
  // {"error": {"class": cls, "desc": desc}, "id": ...}.
  void ReplyError(const nlohmann::json& cmd, std::string_view cls, std::string_view desc);
  // {"event": name, "data": data, "timestamp": {...}}.
  void SendEvent(std::string_view name, const nlohmann::json& data = nullptr);
  void Send(const nlohmann::json& msg);
  void SendRaw(std::string_view bytes);
  // Closes the server's end (the client sees end of file).
  void Close();

 private:
  UniqueFd fd_;
  std::string buffer_;
  std::thread thread_;
};

}  // namespace escdr::testing

#endif  // ESCDR_TESTING_FAKE_QMP_SERVER_H_
