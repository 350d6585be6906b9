#include "cli/units.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <string>

#include <fmt/format.h>

namespace escdr::cli {
namespace {

// The quantity in `bare` units for a bare number, as bytes (a double, so
// that "1.5G" works); `what` names the kind of quantity in messages.
Result<double> ParseQuantity(std::string_view flag, std::string_view text, double bare,
                             bool rate, std::string_view what) {
  auto bad = [&](std::string_view why) {
    return Err(Status::InvalidArgument(fmt::format("{} '{}' {}", flag, text, why)));
  };
  if (text.empty()) return bad("is empty");
  if (text[0] == '-') return bad(fmt::format("is negative: {}", what));
  double value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr == text.data() || !std::isfinite(value)) {
    return bad(fmt::format("is not {}", what));
  }
  std::string unit(ptr, end);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (rate && unit.ends_with("/S")) unit.resize(unit.size() - 2);
  double mult = 0;
  if (unit.empty()) {
    mult = bare;
  } else if (unit == "B") {
    mult = 1;
  } else if (unit == "K" || unit == "KIB") {
    mult = 1024.0;
  } else if (unit == "M" || unit == "MIB") {
    mult = 1024.0 * 1024;
  } else if (unit == "G" || unit == "GIB") {
    mult = 1024.0 * 1024 * 1024;
  } else if (unit == "T" || unit == "TIB") {
    mult = 1024.0 * 1024 * 1024 * 1024;
  } else {
    return bad("has an unknown unit (use K, M, G or T)");
  }
  const double bytes = value * mult;
  if (bytes > 1e18) return bad("is too large");
  return bytes;
}

}  // namespace

Result<std::uint64_t> ParseMib(std::string_view flag, std::string_view text) {
  ESCDR_ASSIGN_OR_RETURN(double bytes,
                         ParseQuantity(flag, text, 1024.0 * 1024, false,
                                       "a size (MiB, or a number with M, G or T)"));
  const double mib = bytes / (1024.0 * 1024);
  if (!(mib >= 1)) {
    return Err(Status::InvalidArgument(
        fmt::format("{} '{}' is too small: sizes must be at least 1 MiB", flag, text)));
  }
  return static_cast<std::uint64_t>(std::llround(mib));
}

Result<std::uint64_t> ParseBytes(std::string_view flag, std::string_view text, bool allow_zero) {
  ESCDR_ASSIGN_OR_RETURN(double bytes,
                         ParseQuantity(flag, text, 1, false,
                                       "a size (bytes, or a number with K, M, G or T)"));
  if (bytes == 0 && allow_zero) return 0;
  if (!(bytes >= 1)) {
    return Err(Status::InvalidArgument(fmt::format("{} '{}' must be above 0", flag, text)));
  }
  return static_cast<std::uint64_t>(std::llround(bytes));
}

Result<std::uint64_t> ParseRate(std::string_view flag, std::string_view text) {
  ESCDR_ASSIGN_OR_RETURN(double bytes,
                         ParseQuantity(flag, text, 1, true,
                                       "a rate (bytes/s, or a number with K, M or G)"));
  if (!(bytes >= 1)) {
    return Err(Status::InvalidArgument(fmt::format("{} '{}' must be above 0", flag, text)));
  }
  return static_cast<std::uint64_t>(std::llround(bytes));
}

}  // namespace escdr::cli
