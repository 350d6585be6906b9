#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <deque>

#include <fmt/format.h>

#include "escdr/qemu/serial_log.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {
namespace {

constexpr std::string_view kCounterPrefix = "escdr-counter ";

// The last `max_bytes` of the file; an empty string if it does not exist.
Result<std::string> ReadTail(const std::string& path, std::size_t max_bytes) {
  auto fd = OpenFile(path, O_RDONLY);
  if (!fd.has_value()) {
    if (fd.error().IsNotFound()) return std::string();
    return Err(fd.error());
  }
  struct stat st {};
  if (::fstat(fd->get(), &st) != 0) {
    return Err(Status::FromErrno(fmt::format("cannot stat serial log {}", path), errno));
  }
  auto size = static_cast<std::size_t>(st.st_size);
  std::size_t start = size > max_bytes ? size - max_bytes : 0;
  if (::lseek(fd->get(), static_cast<off_t>(start), SEEK_SET) < 0) {
    return Err(Status::FromErrno(fmt::format("cannot seek in serial log {}", path), errno));
  }
  std::string out(size - start, '\0');
  ESCDR_ASSIGN_OR_RETURN(std::size_t n, ReadFull(fd->get(), out.data(), out.size(), path));
  out.resize(n);
  return out;
}

std::string_view StripCr(std::string_view line) {
  while (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

}  // namespace

std::optional<std::uint64_t> ParseLastCounter(std::string_view text) {
  // Only complete lines count: the last one may still be being written.
  std::size_t end = text.rfind('\n');
  while (end != std::string_view::npos) {
    std::size_t begin = end == 0 ? std::string_view::npos : text.rfind('\n', end - 1);
    std::size_t from = begin == std::string_view::npos ? 0 : begin + 1;
    std::string_view line = StripCr(text.substr(from, end - from));
    std::size_t at = line.rfind(kCounterPrefix);
    if (at != std::string_view::npos) {
      std::string_view digits = line.substr(at + kCounterPrefix.size());
      std::uint64_t n = 0;
      auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
      if (ec == std::errc() && ptr == digits.data() + digits.size() && !digits.empty()) return n;
    }
    if (begin == std::string_view::npos) break;
    end = begin;
  }
  return std::nullopt;
}

Result<std::optional<std::uint64_t>> ReadLastCounter(const std::string& path) {
  ESCDR_ASSIGN_OR_RETURN(std::string tail, ReadTail(path, 64 * 1024));
  return ParseLastCounter(tail);
}

Result<bool> SerialLogHasLine(const std::string& path, std::string_view wanted) {
  ESCDR_ASSIGN_OR_RETURN(std::string text, ReadTail(path, 16u << 20));
  std::string_view rest = text;
  for (std::size_t nl; (nl = rest.find('\n')) != std::string_view::npos; rest.remove_prefix(nl + 1)) {
    std::string_view line = StripCr(rest.substr(0, nl));
    // SeaBIOS's screen-clearing escapes can precede the first guest line.
    if (line.size() >= wanted.size() && line.substr(line.size() - wanted.size()) == wanted) {
      std::string_view head = line.substr(0, line.size() - wanted.size());
      if (head.empty() || head.find("\x1b") != std::string_view::npos) return true;
    }
  }
  return false;
}

std::string SerialLogTail(const std::string& path, std::size_t max_lines) {
  auto tail = ReadTail(path, 16 * 1024);
  if (!tail.has_value()) return fmt::format("(cannot read {}: {})", path, tail.error().message());
  std::string clean;
  const std::string& t = *tail;
  for (std::size_t i = 0; i < t.size(); ++i) {
    char c = t[i];
    if (c == '\x1b') {
      // ESC [ params letter, or ESC + one character.
      if (i + 1 < t.size() && t[i + 1] == '[') {
        i += 2;
        while (i < t.size() && !((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z'))) ++i;
      } else {
        ++i;
      }
      continue;
    }
    if (c == '\n' || c == '\t' || static_cast<unsigned char>(c) >= 0x20) clean.push_back(c);
  }
  std::deque<std::string> lines;
  std::size_t start = 0;
  while (start < clean.size()) {
    std::size_t nl = clean.find('\n', start);
    if (nl == std::string::npos) nl = clean.size();
    lines.emplace_back(clean.substr(start, nl - start));
    if (lines.size() > max_lines) lines.pop_front();
    start = nl + 1;
  }
  std::string out;
  for (const std::string& l : lines) {
    out += l;
    out += '\n';
  }
  return out;
}

}  // namespace escdr
