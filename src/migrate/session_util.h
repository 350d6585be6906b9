// Helpers shared by the two session engines (internal to migrate/).
#ifndef ESCDR_MIGRATE_SESSION_UTIL_H_
#define ESCDR_MIGRATE_SESSION_UTIL_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>

#include "escdr/base/status.h"
#include "escdr/sys/clock.h"
#include "escdr/wire/connection.h"

namespace escdr::migrate_internal {

// After a failure a session shuts only the write side of its peer connection
// down (the peer reads its Error or Abort, then end of file) and reads on,
// discarding, for at most this long and this many bytes (wire-protocol §9).
// Closing a TCP socket with unread bytes makes the kernel send a reset, which
// can reach the peer before it has read the Error, and the peer then reports
// the reset instead of the cause.
inline constexpr std::chrono::milliseconds kLingerTime{2000};
inline constexpr std::uint64_t kLingerBytes = std::uint64_t{32} << 20;

// Reads and discards what `conn` still delivers until end of file, a read
// error, `max_bytes` or `deadline`, then shuts `conn` down in both
// directions. REQUIRES: no other thread reads `conn` meanwhile.
void DrainAndShutdown(wire::Connection& conn, Deadline deadline, std::uint64_t max_bytes);

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
