#include "escdr/qemu/qmp.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "escdr/sys/clock.h"
#include "escdr/sys/unix_socket.h"

namespace escdr {
namespace {

// QEMU sends one JSON object per line; anything this long is not QMP.
constexpr std::size_t kMaxLineBytes = 64u << 20;

Status FromQmpError(std::string_view command, const std::string& name, const nlohmann::json& err) {
  std::string cls, desc;
  if (err.is_object()) {
    auto c = err.find("class");
    if (c != err.end() && c->is_string()) cls = c->get<std::string>();
    auto d = err.find("desc");
    if (d != err.end() && d->is_string()) desc = d->get<std::string>();
  }
  std::string msg = fmt::format("QMP command {} on {} failed: {}{}", command, name,
                                desc.empty() ? err.dump() : desc,
                                cls.empty() || cls == "GenericError" ? "" : " (" + cls + ")");
  if (cls == "CommandNotFound") return Status::NotSupported(std::move(msg));
  if (cls == "DeviceNotFound") return Status::NotFound(std::move(msg));
  return Status::FailedPrecondition(std::move(msg));
}

// cv.wait_until() with time_point::max() overflows inside libstdc++; a
// deadline that never expires waits without one.
template <typename Pred>
bool WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
               const Deadline& deadline, Pred pred) {
  if (deadline.is_never()) {
    cv.wait(lock, pred);
    return true;
  }
  return cv.wait_until(lock, deadline.time_point(), pred);
}

}  // namespace

class QmpClient::Impl {
 public:
  Impl(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {
    reader_ = std::thread([this] { ReaderLoop(); });
  }

  ~Impl() {
    // Wakes the reader (read() returns 0) without closing the descriptor under it.
    ::shutdown(fd_.get(), SHUT_RDWR);
    reader_.join();
  }

  Status WaitForGreeting(const Deadline& deadline) {
    std::unique_lock lock(mu_);
    bool done = WaitUntil(cv_, lock, deadline,
                          [this] { return have_greeting_ || !open_; });
    if (have_greeting_) return Status::OK();
    if (!done) {
      return Status::Timeout(fmt::format("no QMP greeting from {} in time", name_));
    }
    return closed_;
  }

  Result<nlohmann::json> Execute(std::string_view command, const nlohmann::json& arguments,
                                 std::chrono::milliseconds timeout) {
    Deadline deadline = Deadline::After(timeout);
    std::string line;
    std::uint64_t id;
    {
      std::lock_guard lock(mu_);
      if (!open_) {
        return Err(Status(closed_.code(), fmt::format("cannot run QMP command {}: {}", command,
                                                      closed_.message())));
      }
      id = next_id_++;
      nlohmann::json msg = {{"execute", command}, {"id", id}};
      if (!arguments.is_null()) msg["arguments"] = arguments;
      // replace: invalid UTF-8 in an argument must not throw out of here.
      line = msg.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\r\n";
      pending_.emplace(id, std::nullopt);
    }
    Status sent;
    {
      std::lock_guard wlock(write_mu_);
      sent = WriteFull(fd_.get(), line, name_);
    }
    std::unique_lock lock(mu_);
    if (!sent.ok()) {
      pending_.erase(id);
      return Err(Status::Unavailable(
          fmt::format("cannot send QMP command {} to {}: {}", command, name_, sent.message())));
    }
    bool done = WaitUntil(cv_, lock, deadline, [&] {
      return pending_.at(id).has_value() || !open_;
    });
    std::optional<nlohmann::json> reply = std::move(pending_.at(id));
    pending_.erase(id);
    if (!reply) {
      if (!done) {
        return Err(Status::Timeout(fmt::format("QMP command {} on {} got no reply within {} ms",
                                               command, name_, timeout.count())));
      }
      return Err(Status(closed_.code(), fmt::format("QMP command {} got no reply: {}", command,
                                                    closed_.message())));
    }
    lock.unlock();
    if (auto r = reply->find("return"); r != reply->end()) return std::move(*r);
    if (auto e = reply->find("error"); e != reply->end()) {
      return Err(FromQmpError(command, name_, *e));
    }
    return Err(Status::ProtocolError(
        fmt::format("QMP reply to {} from {} has neither return nor error: {}", command, name_,
                    reply->dump())));
  }

  Result<QmpEvent> WaitForEvent(std::string_view name, std::chrono::milliseconds timeout) {
    Deadline deadline = Deadline::After(timeout);
    std::unique_lock lock(mu_);
    std::optional<QmpEvent> found;
    auto take = [&] {
      for (auto it = events_.begin(); it != events_.end(); ++it) {
        if (it->name == name) {
          found = std::move(*it);
          events_.erase(it);
          return true;
        }
      }
      return !open_;
    };
    bool done = WaitUntil(cv_, lock, deadline, take);
    if (found) return std::move(*found);
    if (!done) {
      return Err(Status::Timeout(
          fmt::format("no QMP event {} from {} within {} ms", name, name_, timeout.count())));
    }
    return Err(Status(closed_.code(),
                      fmt::format("no QMP event {}: {}", name, closed_.message())));
  }

  std::vector<QmpEvent> TakeEvents() {
    std::lock_guard lock(mu_);
    std::vector<QmpEvent> out(std::make_move_iterator(events_.begin()),
                              std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }

  const nlohmann::json& greeting() const {
    // Written once by the reader before have_greeting_ is set, never again.
    return greeting_;
  }
  bool connected() const {
    std::lock_guard lock(mu_);
    return open_;
  }
  const std::string& name() const { return name_; }

 private:
  void ReaderLoop() {
    std::string buf;
    char chunk[65536];
    for (;;) {
      ssize_t n = ::read(fd_.get(), chunk, sizeof(chunk));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        Close(Status::Unavailable(fmt::format("QMP connection to {} closed", name_)));
        return;
      }
      buf.append(chunk, static_cast<std::size_t>(n));
      std::size_t start = 0;
      for (std::size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
        if (!HandleLine(std::string_view(buf).substr(start, nl - start))) return;
      }
      buf.erase(0, start);
      if (buf.size() > kMaxLineBytes) {
        Close(Status::ProtocolError(
            fmt::format("QMP peer {} sent a line longer than {} bytes", name_, kMaxLineBytes)));
        return;
      }
    }
  }

  // Returns false when the connection was closed because of the line.
  bool HandleLine(std::string_view line) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) return true;
    nlohmann::json msg = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (msg.is_discarded() || !msg.is_object()) {
      Close(Status::ProtocolError(fmt::format("QMP peer {} sent a line that is not a JSON object: {}",
                                              name_, line.substr(0, 200))));
      return false;
    }
    std::lock_guard lock(mu_);
    if (!have_greeting_) {
      auto q = msg.find("QMP");
      if (q == msg.end() || !q->is_object()) {
        CloseLocked(Status::ProtocolError(
            fmt::format("{} did not greet with a QMP banner: {}", name_, line.substr(0, 200))));
        return false;
      }
      greeting_ = *q;
      have_greeting_ = true;
    } else if (auto ev = msg.find("event"); ev != msg.end() && ev->is_string()) {
      QmpEvent e;
      e.name = ev->get<std::string>();
      if (auto d = msg.find("data"); d != msg.end()) e.data = *d;
      if (auto t = msg.find("timestamp"); t != msg.end() && t->is_object()) {
        auto s = t->find("seconds"), us = t->find("microseconds");
        if (s != t->end() && s->is_number() && us != t->end() && us->is_number()) {
          e.timestamp_s = s->get<double>() + us->get<double>() / 1e6;
        }
      }
      if (events_.size() >= kMaxQueuedEvents) events_.pop_front();
      events_.push_back(std::move(e));
    } else if (msg.contains("return") || msg.contains("error")) {
      auto id = msg.find("id");
      auto slot = pending_.end();
      if (id != msg.end() && id->is_number_unsigned()) {
        slot = pending_.find(id->get<std::uint64_t>());
      } else if (id == msg.end()) {
        // A reply without id (QEMU's answer to unparsable input) goes to the
        // oldest waiter, which is the command QEMU could not read.
        for (auto it = pending_.begin(); it != pending_.end(); ++it) {
          if (!it->second) {
            slot = it;
            break;
          }
        }
      }
      // No waiter: a late reply to a command that timed out; dropped.
      if (slot != pending_.end() && !slot->second) slot->second = std::move(msg);
    }
    cv_.notify_all();
    return true;
  }

  void Close(Status why) {
    std::lock_guard lock(mu_);
    CloseLocked(std::move(why));
  }
  void CloseLocked(Status why) {
    if (open_) {
      open_ = false;
      closed_ = std::move(why);
    }
    cv_.notify_all();
  }

  UniqueFd fd_;
  const std::string name_;
  std::thread reader_;
  std::mutex write_mu_;  // one command line on the socket at a time
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool have_greeting_ = false;  // guarded by mu_
  nlohmann::json greeting_;     // set once before have_greeting_
  bool open_ = true;            // guarded by mu_
  Status closed_;               // why the connection ended; guarded by mu_
  std::uint64_t next_id_ = 1;   // guarded by mu_
  std::map<std::uint64_t, std::optional<nlohmann::json>> pending_;  // guarded by mu_
  std::deque<QmpEvent> events_;  // guarded by mu_
};

QmpClient::QmpClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
QmpClient::~QmpClient() = default;

Result<std::unique_ptr<QmpClient>> QmpClient::Connect(const std::string& socket_path,
                                                      std::chrono::milliseconds timeout,
                                                      const std::function<Status()>& keep_waiting) {
  Deadline deadline = Deadline::After(timeout);
  ESCDR_ASSIGN_OR_RETURN(UniqueFd fd, ConnectUnix(socket_path, timeout, keep_waiting));
  return Handshake(std::move(fd), socket_path, deadline.Remaining());
}

Result<std::unique_ptr<QmpClient>> QmpClient::Handshake(UniqueFd fd, std::string name,
                                                        std::chrono::milliseconds timeout) {
  Deadline deadline = Deadline::After(timeout);
  auto impl = std::make_unique<Impl>(std::move(fd), std::move(name));
  ESCDR_RETURN_IF_ERROR(impl->WaitForGreeting(deadline));
  std::unique_ptr<QmpClient> client(new QmpClient(std::move(impl)));
  ESCDR_ASSIGN_OR_RETURN(nlohmann::json ignored,
                         client->Execute("qmp_capabilities", nullptr, deadline.Remaining()));
  (void)ignored;
  return client;
}

Result<nlohmann::json> QmpClient::Execute(std::string_view command, const nlohmann::json& arguments,
                                          std::chrono::milliseconds timeout) {
  return impl_->Execute(command, arguments, timeout);
}

Result<QmpEvent> QmpClient::WaitForEvent(std::string_view name, std::chrono::milliseconds timeout) {
  return impl_->WaitForEvent(name, timeout);
}

std::vector<QmpEvent> QmpClient::TakeEvents() { return impl_->TakeEvents(); }
const nlohmann::json& QmpClient::greeting() const { return impl_->greeting(); }
bool QmpClient::connected() const { return impl_->connected(); }
const std::string& QmpClient::name() const { return impl_->name(); }

std::string QmpClient::qemu_version() const {
  const nlohmann::json& g = greeting();
  auto v = g.find("version");
  if (v == g.end() || !v->is_object()) return "";
  auto q = v->find("qemu");
  if (q == v->end() || !q->is_object()) return "";
  auto num = [&](const char* k) {
    auto it = q->find(k);
    return it != q->end() && it->is_number_integer() ? it->get<long long>() : 0LL;
  };
  return fmt::format("{}.{}.{}", num("major"), num("minor"), num("micro"));
}

}  // namespace escdr
