#include "escdr/base/qemu_version.h"

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>

namespace escdr {
namespace {

// Component `i` of `v` as a number; 0 if missing or not a number.
std::uint64_t Component(std::string_view v, std::size_t i) {
  for (; i > 0; --i) {
    const std::size_t dot = v.find('.');
    if (dot == std::string_view::npos) return 0;
    v.remove_prefix(dot + 1);
  }
  v = v.substr(0, v.find('.'));
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  return ec == std::errc() && ptr == v.data() + v.size() ? n : 0;
}

std::size_t Components(std::string_view v) {
  return v.empty() ? 0 : static_cast<std::size_t>(std::count(v.begin(), v.end(), '.')) + 1;
}

}  // namespace

std::string QemuSeriesOf(std::string_view version) {
  const std::size_t first = version.find('.');
  if (first == std::string_view::npos) return std::string(version);
  return std::string(version.substr(0, version.find('.', first + 1)));
}

int CompareQemuVersions(std::string_view a, std::string_view b) {
  const std::size_t n = std::max(Components(a), Components(b));
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t x = Component(a, i), y = Component(b, i);
    if (x != y) return x < y ? -1 : 1;
  }
  return 0;
}

bool IsQemuVersion(std::string_view version) {
  std::size_t components = 0, digits = 0;
  for (char c : version) {
    if (c == '.') {
      if (digits == 0) return false;
      ++components;
      digits = 0;
    } else if (c >= '0' && c <= '9') {
      if (++digits > 9) return false;
    } else {
      return false;
    }
  }
  return digits > 0 && components + 1 >= 2;
}

bool IsQemuSeries(std::string_view series) {
  return IsQemuVersion(series) && Components(series) == 2;
}

}  // namespace escdr
