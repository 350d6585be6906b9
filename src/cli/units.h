// Sizes and rates on the command line, parsed one way for every command.
//
// A quantity is a decimal number with an optional binary unit: K, M, G or T
// (also KiB, MiB, GiB, TiB; any case; a rate may end in "/s"). What a bare
// number means is the flag's choice: MiB for --memory, bytes for
// --dedup-budget, bytes/s for --max-bandwidth. Errors are InvalidArgument
// messages that name the flag and the text.
#ifndef ESCDR_CLI_UNITS_H_
#define ESCDR_CLI_UNITS_H_

#include <cstdint>
#include <string_view>

#include "escdr/base/status.h"

namespace escdr::cli {

// A size in MiB, at least 1 MiB: "4096", "512M", "1.5G", "2T".
Result<std::uint64_t> ParseMib(std::string_view flag, std::string_view text);
// A size in bytes: "65536", "64K", "64M", "1G"; 0 only if `allow_zero`.
Result<std::uint64_t> ParseBytes(std::string_view flag, std::string_view text,
                                 bool allow_zero = false);
// A rate in bytes/s, above 0: "125000000", "100M", "1G/s".
Result<std::uint64_t> ParseRate(std::string_view flag, std::string_view text);

}  // namespace escdr::cli

#endif  // ESCDR_CLI_UNITS_H_
