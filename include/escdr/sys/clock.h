// Monotonic time for timeouts: Deadline and helpers.
//
// Every timeout in escdr is measured on std::chrono::steady_clock, never the
// wall clock, so it is immune to clock steps. Public APIs take a timeout as
// std::chrono::milliseconds and turn it into a Deadline at the start of the
// operation; loops that retry or poll check that one Deadline, so a timeout
// bounds the whole operation rather than each step.
//
// Thread safety: Deadline is a plain value.
#ifndef ESCDR_SYS_CLOCK_H_
#define ESCDR_SYS_CLOCK_H_

#include <chrono>
#include <climits>
#include <ctime>

namespace escdr {

using MonotonicClock = std::chrono::steady_clock;

class Deadline {
 public:
  // A deadline `timeout` from now. A negative timeout is treated as zero; one
  // of a century or more (e.g. milliseconds::max()) is Never().
  static Deadline After(std::chrono::milliseconds timeout) {
    if (timeout.count() < 0) timeout = std::chrono::milliseconds(0);
    if (timeout >= std::chrono::hours(24 * 365 * 100)) return Never();
    return Deadline(MonotonicClock::now() + timeout);
  }
  bool is_never() const { return at_ == MonotonicClock::time_point::max(); }
  // A deadline that never expires.
  static Deadline Never() { return Deadline(MonotonicClock::time_point::max()); }

  bool Expired() const { return MonotonicClock::now() >= at_; }

  // Time left, zero once expired.
  std::chrono::milliseconds Remaining() const {
    if (at_ == MonotonicClock::time_point::max()) return std::chrono::milliseconds::max();
    auto left = at_ - MonotonicClock::now();
    if (left.count() <= 0) return std::chrono::milliseconds(0);
    // Round up so a poll() with this value never returns before the deadline.
    return std::chrono::ceil<std::chrono::milliseconds>(left);
  }

  // Time left as a poll(2) timeout: -1 for Never(), else min(Remaining, INT_MAX).
  int PollTimeoutMs() const {
    if (at_ == MonotonicClock::time_point::max()) return -1;
    auto ms = Remaining().count();
    return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
  }

  MonotonicClock::time_point time_point() const { return at_; }

 private:
  explicit Deadline(MonotonicClock::time_point at) : at_(at) {}
  MonotonicClock::time_point at_;
};

// Seconds elapsed since `start`, as a double (for reports and log lines).
inline double SecondsSince(MonotonicClock::time_point start) {
  return std::chrono::duration<double>(MonotonicClock::now() - start).count();
}

// CPU time the calling thread has used so far (CLOCK_THREAD_CPUTIME_ID), for
// the CPU figures of reports.
inline std::chrono::microseconds ThreadCpuTime() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) +
         std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::nanoseconds(ts.tv_nsec));
}

}  // namespace escdr

#endif  // ESCDR_SYS_CLOCK_H_
