// Helpers shared by the two session engines (internal to migrate/).
#ifndef ESCDR_MIGRATE_SESSION_UTIL_H_
#define ESCDR_MIGRATE_SESSION_UTIL_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>

#include "escdr/base/status.h"

namespace escdr::migrate_internal {

// The first failure of a session, shared by its threads.
class FailureLatch {
 public:
  // Records `s` if no failure was recorded yet; returns true if it was the first.
  bool Set(Status s);
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  Status status() const;

 private:
  mutable std::mutex mu_;
  Status status_;
  std::atomic<bool> failed_{false};
};

// Follows QEMU's return-path messages (be16 type, be16 length, data; stream
// spec §2.5) in a byte stream cut anywhere, to notice SHUT and its value.
class ReturnPathWatcher {
 public:
  static constexpr std::uint16_t kShut = 1;

  // Consumes the next bytes; returns true if a SHUT message ended in them.
  bool Feed(std::span<const std::uint8_t> bytes);

  bool shut_seen() const { return shut_seen_; }
  // The SHUT value: 0 = the destination loaded the stream, else it failed.
  std::uint32_t shut_value() const { return shut_value_; }

 private:
  std::uint8_t header_[4] = {};
  std::size_t header_have_ = 0;
  std::uint16_t type_ = 0;
  std::uint32_t data_left_ = 0;
  std::uint32_t data_value_ = 0;
  std::uint32_t data_have_ = 0;
  bool shut_seen_ = false;
  std::uint32_t shut_value_ = 0;
};

}  // namespace escdr::migrate_internal

#endif  // ESCDR_MIGRATE_SESSION_UTIL_H_
