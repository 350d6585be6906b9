// Status and Result<T>: how every escdr module reports failure.
//
// A Status is either OK or an error with a code from a small fixed set and a
// one-sentence message that names the failed operation and the key values
// ("cannot open RAM file /dev/shm/vm1: No such file or directory"). Result<T>
// holds either a T or a non-OK Status. Both are [[nodiscard]].
//
// Errors are values inside the library: no exception leaves a module boundary.
// Third-party libraries that throw (libpqxx, nlohmann::json, CLI11) are caught
// at the boundary of the module that calls them and turned into a Status.
//
// Thread safety: Status and Result are plain values; distinct objects may be
// used from distinct threads, a shared const object from many.
#ifndef ESCDR_BASE_STATUS_H_
#define ESCDR_BASE_STATUS_H_

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace escdr {

enum class StatusCode : int {
  kOk = 0,
  kNotFound,            // a named thing (file, VM, host, catalog) does not exist
  kAlreadyExists,       // a name is taken
  kInvalidArgument,     // the caller passed something that can never work
  kFailedPrecondition,  // valid request, wrong state (e.g. VM not running)
  kCorruption,          // stored or received data fails its own checks
  kIOError,             // the OS said no (open, read, write, mmap, socket)
  kProtocolError,       // a peer broke the wire protocol or the QEMU stream format
  kVersionMismatch,     // a format or protocol version we do not support
  kNotSupported,        // a valid input that escdr deliberately refuses
  kResourceExhausted,   // no room: no host fits, disk full, window full
  kUnavailable,         // a service or peer cannot be reached
  kTimeout,             // a deadline passed
  kAborted,             // the operation was cancelled or the peer aborted it
  kInternal,            // a bug in escdr
};

// Returns the lower-case name of `code`, e.g. "not found".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  // An OK status.
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  // Lets the ESCDR_* macros below return an error from functions that return
  // either Status or Result<T>.
  Status(std::unexpected<Status> e) : Status(std::move(e).error()) {}  // NOLINT(implicit)

  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status InvalidArgument(std::string m) {
    return {StatusCode::kInvalidArgument, std::move(m)};
  }
  static Status FailedPrecondition(std::string m) {
    return {StatusCode::kFailedPrecondition, std::move(m)};
  }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
  static Status ProtocolError(std::string m) { return {StatusCode::kProtocolError, std::move(m)}; }
  static Status VersionMismatch(std::string m) {
    return {StatusCode::kVersionMismatch, std::move(m)};
  }
  static Status NotSupported(std::string m) { return {StatusCode::kNotSupported, std::move(m)}; }
  static Status ResourceExhausted(std::string m) {
    return {StatusCode::kResourceExhausted, std::move(m)};
  }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status Timeout(std::string m) { return {StatusCode::kTimeout, std::move(m)}; }
  static Status Aborted(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

  // Returns `errno_value` as an IOError: "<what>: <strerror(errno_value)>".
  static Status FromErrno(std::string_view what, int errno_value);

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  bool IsNotFound() const { return code_ == StatusCode::kNotFound; }
  bool IsCorruption() const { return code_ == StatusCode::kCorruption; }
  bool IsInvalidArgument() const { return code_ == StatusCode::kInvalidArgument; }

  // Returns a copy whose message is "<context>: <message>". OK stays OK.
  Status WithContext(std::string_view context) const;

  // "OK" or the message alone (the code is for programs, the message for people).
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Holds a T or a non-OK Status. Construct errors with `std::unexpected(status)`
// or, shorter, `return Status::NotFound(...)` through the helper below.
template <typename T>
using Result = std::expected<T, Status>;

// Lets `return Err(Status::NotFound("..."));` read naturally in a Result<T> function.
inline std::unexpected<Status> Err(Status s) { return std::unexpected<Status>(std::move(s)); }

}  // namespace escdr

// Returns early from a function returning Status or Result<T> when `expr`
// (a Status) is not OK.
#define ESCDR_RETURN_IF_ERROR(expr)                                  \
  do {                                                               \
    ::escdr::Status escdr_status_ = (expr);                          \
    if (!escdr_status_.ok()) return ::escdr::Err(std::move(escdr_status_)); \
  } while (0)

#define ESCDR_CONCAT_INNER_(a, b) a##b
#define ESCDR_CONCAT_(a, b) ESCDR_CONCAT_INNER_(a, b)

// `ESCDR_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result<T>, or
// returns its error from the enclosing function (returning Status or Result<U>).
#define ESCDR_ASSIGN_OR_RETURN(lhs, rexpr) \
  ESCDR_ASSIGN_OR_RETURN_IMPL_(ESCDR_CONCAT_(escdr_result_, __LINE__), lhs, rexpr)
#define ESCDR_ASSIGN_OR_RETURN_IMPL_(result, lhs, rexpr)          \
  auto result = (rexpr);                                          \
  if (!result.has_value()) return ::escdr::Err(std::move(result).error()); \
  lhs = std::move(result).value()

#endif  // ESCDR_BASE_STATUS_H_
