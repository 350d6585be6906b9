#include "migrate/session_util.h"

#include <vector>

namespace escdr::migrate_internal {

void DrainAndShutdown(wire::Connection& conn, Deadline deadline, std::uint64_t max_bytes) {
  std::vector<std::uint8_t> buf(64 * 1024);
  std::uint64_t drained = 0;
  while (drained < max_bytes) {
    auto got = conn.ReadSome(buf, deadline);
    // End of file, a reset or the deadline: in every case there is nothing
    // more to wait for, and the caller has its own error already.
    if (!got.has_value() || *got == 0) break;
    drained += *got;
  }
  conn.Shutdown();
}

bool FailureLatch::Set(Status s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (failed_.load(std::memory_order_relaxed)) return false;
  status_ = std::move(s);
  failed_.store(true, std::memory_order_release);
  return true;
}

Status FailureLatch::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

bool ReturnPathWatcher::Feed(std::span<const std::uint8_t> bytes) {
  bool shut_ended = false;
  for (std::size_t i = 0; i < bytes.size();) {
    if (header_have_ < 4) {
      header_[header_have_++] = bytes[i++];
      if (header_have_ == 4) {
        type_ = static_cast<std::uint16_t>((header_[0] << 8) | header_[1]);
        data_left_ = static_cast<std::uint32_t>((header_[2] << 8) | header_[3]);
        data_value_ = 0;
        data_have_ = 0;
      } else {
        continue;
      }
    } else {
      std::size_t n = std::min<std::size_t>(data_left_, bytes.size() - i);
      for (std::size_t k = 0; k < n; ++k, ++data_have_) {
        if (data_have_ < 4) data_value_ = (data_value_ << 8) | bytes[i + k];
      }
      data_left_ -= static_cast<std::uint32_t>(n);
      i += n;
    }
    if (header_have_ == 4 && data_left_ == 0) {
      if (type_ == kShut) {
        shut_seen_ = true;
        shut_value_ = data_value_;
        shut_ended = true;
      }
      header_have_ = 0;
    }
  }
  return shut_ended;
}

}  // namespace escdr::migrate_internal
