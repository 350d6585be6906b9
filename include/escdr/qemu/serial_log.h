// Reading a guest's serial console log (the file behind `-serial file:`).
//
// escdr's test guest (tools/build-guest.sh, docs/test-guest.md) prints
// "escdr-guest: up" once booted and then "escdr-counter N" every second, so
// the last counter tells whether a guest runs and how far it got. QEMU writes
// the console bytes as the guest sends them: lines end in "\r\n" and the last
// line may be incomplete; these helpers handle both.
//
// Thread safety: the functions only read the file; QEMU may append to it
// concurrently (an incomplete last line is ignored).
#ifndef ESCDR_QEMU_SERIAL_LOG_H_
#define ESCDR_QEMU_SERIAL_LOG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "escdr/base/status.h"

namespace escdr {

// The N of the last complete "escdr-counter N" line in `text`, if any.
std::optional<std::uint64_t> ParseLastCounter(std::string_view text);

// ParseLastCounter over the end of the file at `path` (only the last 64 KiB
// are read: a counter line comes every second). nullopt if the file is empty
// or missing (the guest has not printed yet); IOError if unreadable.
Result<std::optional<std::uint64_t>> ReadLastCounter(const std::string& path);

// True if the log contains the complete line `line` (e.g. "escdr-guest: up").
Result<bool> SerialLogHasLine(const std::string& path, std::string_view line);

// The last `max_lines` lines of the log, "\r" removed, escape sequences and
// other control characters dropped (SeaBIOS clears the screen), for error
// messages. Empty if the file is missing.
std::string SerialLogTail(const std::string& path, std::size_t max_lines = 15);

}  // namespace escdr

#endif  // ESCDR_QEMU_SERIAL_LOG_H_
