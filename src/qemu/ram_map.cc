#include "escdr/qemu/ram_map.h"

#include <fmt/format.h>

#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "escdr/page/page.h"
#include "escdr/qemu/qmp.h"

namespace escdr {
namespace {

// `text` for an error message: control characters escaped, at most 240 bytes.
std::string Quote(std::string_view text) {
  constexpr std::size_t kMax = 240;
  std::string out = "\"";
  for (std::size_t i = 0; i < text.size() && i < kMax; ++i) {
    const char c = text[i];
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"') {
      out += "\\\"";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  out += "\"";
  if (text.size() > kMax) out += fmt::format(" (first {} of {} bytes)", kMax, text.size());
  return out;
}

std::string_view Trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

// HMP ends lines in "\r\n" (QMP's human-monitor-command keeps them).
std::vector<std::string_view> Lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return lines;
}

std::vector<std::string_view> Words(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

// "0x1f" (the whole word) -> 31.
std::optional<std::uint64_t> ParseHex(std::string_view word) {
  if (word.size() < 3 || word[0] != '0' || (word[1] != 'x' && word[1] != 'X')) return std::nullopt;
  std::uint64_t value = 0;
  const char* end = word.data() + word.size();
  auto [ptr, ec] = std::from_chars(word.data() + 2, end, value, 16);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

// One row of `info ramblock`.
struct RamBlockRow {
  std::string name;
  std::uint64_t used = 0;
  std::optional<std::uint64_t> hva;  // QEMU 10.0 has an HVA column, 7.2 not
};

// Parses the whole `info ramblock` table. The header names the columns; the
// "Block Name" header and each PSize value ("4 KiB") are two words, block
// names are one (QEMU ids and idstrs hold no spaces).
Result<std::vector<RamBlockRow>> ParseRamBlockTable(const std::string& output) {
  const std::vector<std::string_view> lines = Lines(output);
  std::size_t header_line = lines.size();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find("Block Name") != std::string_view::npos) {
      header_line = i;
      break;
    }
  }
  if (header_line == lines.size()) {
    return Err(Status::ProtocolError(fmt::format(
        "'info ramblock' printed no table with a \"Block Name\" header: {}", Quote(output))));
  }
  std::vector<std::string> columns;
  for (std::string_view w : Words(lines[header_line])) columns.emplace_back(w);
  // Merge "Block" "Name" into one column.
  for (std::size_t i = 0; i + 1 < columns.size(); ++i) {
    if (columns[i] == "Block" && columns[i + 1] == "Name") {
      columns[i] = "Block Name";
      columns.erase(columns.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      break;
    }
  }
  auto column = [&](std::string_view name) -> std::optional<std::size_t> {
    for (std::size_t i = 0; i < columns.size(); ++i) {
      if (columns[i] == name) return i;
    }
    return std::nullopt;
  };
  const std::optional<std::size_t> name_col = column("Block Name");
  const std::optional<std::size_t> used_col = column("Used");
  const std::optional<std::size_t> psize_col = column("PSize");
  const std::optional<std::size_t> hva_col = column("HVA");
  if (name_col != 0 || !used_col) {
    return Err(Status::ProtocolError(fmt::format(
        "'info ramblock' header does not start with \"Block Name\" or lacks \"Used\": {}",
        Quote(lines[header_line]))));
  }
  std::vector<RamBlockRow> rows;
  for (std::size_t i = header_line + 1; i < lines.size(); ++i) {
    std::vector<std::string_view> words = Words(lines[i]);
    if (words.empty()) continue;
    // "4 KiB" -> one value.
    if (psize_col && *psize_col + 1 < words.size()) {
      std::string_view unit = words[*psize_col + 1];
      if (unit == "B" || unit == "KiB" || unit == "MiB" || unit == "GiB" || unit == "TiB") {
        words.erase(words.begin() + static_cast<std::ptrdiff_t>(*psize_col) + 1);
      }
    }
    if (words.size() != columns.size()) {
      return Err(Status::ProtocolError(
          fmt::format("'info ramblock' row has {} fields where the header has {} columns: {}",
                      words.size(), columns.size(), Quote(lines[i]))));
    }
    RamBlockRow row;
    row.name = std::string(words[0]);
    std::optional<std::uint64_t> used = ParseHex(words[*used_col]);
    if (!used) {
      return Err(Status::ProtocolError(
          fmt::format("'info ramblock' row of block '{}' has Used {}, not a hex number: {}",
                      row.name, Quote(words[*used_col]), Quote(lines[i]))));
    }
    row.used = *used;
    if (hva_col) {
      row.hva = ParseHex(words[*hva_col]);
      if (!row.hva) {
        return Err(Status::ProtocolError(
            fmt::format("'info ramblock' row of block '{}' has HVA {}, not a hex number: {}",
                        row.name, Quote(words[*hva_col]), Quote(lines[i]))));
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

Result<RamBlockRow> FindRow(const std::string& output, const std::string& block) {
  ESCDR_ASSIGN_OR_RETURN(std::vector<RamBlockRow> rows, ParseRamBlockTable(output));
  std::string names;
  for (RamBlockRow& r : rows) {
    if (r.name == block) {
      if (r.used == 0 || r.used % kPageSize != 0) {
        return Err(Status::ProtocolError(fmt::format(
            "'info ramblock' gives block '{}' a used length of {:#x}, not a positive multiple of "
            "{}",
            block, r.used, kPageSize)));
      }
      return std::move(r);
    }
    names += names.empty() ? r.name : ", " + r.name;
  }
  return Err(Status::NotFound(fmt::format("'info ramblock' lists no block '{}' (it lists: {})",
                                          block, names.empty() ? "none" : names)));
}

}  // namespace

HmpRunner HmpOverQmp(QmpClient& qmp) {
  return [&qmp](const std::string& command) -> Result<std::string> {
    Result<nlohmann::json> r =
        qmp.Execute("human-monitor-command", nlohmann::json{{"command-line", command}});
    if (!r.has_value()) {
      return Err(r.error().WithContext(fmt::format("HMP command '{}'", command)));
    }
    if (!r->is_string()) {
      return Err(Status::ProtocolError(
          fmt::format("HMP command '{}' over QMP {} returned {}, not a string", command, qmp.name(),
                      Quote(r->dump()))));
    }
    return r->get<std::string>();
  };
}

Result<RamMapping> ParseGpa2Hva(const std::string& output) {
  // "Host virtual address for 0x0 (pc.ram) is 0x7f7793e00000\r\n"
  const std::string_view text = Trim(output);
  static constexpr std::string_view kNoMemory = "No memory is mapped at address ";
  static constexpr std::string_view kPrefix = "Host virtual address for ";
  static constexpr std::string_view kIs = ") is ";
  if (text.starts_with(kNoMemory)) {
    return Err(Status::NotFound(fmt::format("gpa2hva: no RAM is mapped there: {}", Quote(output))));
  }
  const std::size_t open = text.find(" (");
  const std::size_t is = text.rfind(kIs);
  if (!text.starts_with(kPrefix) || text.find('\n') != std::string_view::npos ||
      open == std::string_view::npos || is == std::string_view::npos || is <= open + 2) {
    return Err(Status::ProtocolError(fmt::format(
        "gpa2hva printed {}, not \"Host virtual address for 0x<gpa> (<block>) is 0x<hva>\"",
        Quote(output))));
  }
  const std::string_view gpa = text.substr(kPrefix.size(), open - kPrefix.size());
  const std::string_view hva = text.substr(is + kIs.size());
  std::optional<std::uint64_t> hva_value = ParseHex(hva);
  if (!ParseHex(gpa) || !hva_value) {
    return Err(Status::ProtocolError(
        fmt::format("gpa2hva printed {}: guest-physical {} or host-virtual {} is not a hex number",
                    Quote(output), Quote(gpa), Quote(hva))));
  }
  RamMapping m;
  m.block = std::string(text.substr(open + 2, is - (open + 2)));
  m.host_address = *hva_value;
  return m;
}

Result<std::uint64_t> ParseRamBlockUsedLength(const std::string& output, const std::string& block) {
  ESCDR_ASSIGN_OR_RETURN(RamBlockRow row, FindRow(output, block));
  return row.used;
}

Result<RamMapping> QueryMainRam(const HmpRunner& hmp) {
  ESCDR_ASSIGN_OR_RETURN(std::string where, hmp("gpa2hva 0"));
  Result<RamMapping> m = ParseGpa2Hva(where);
  if (!m.has_value()) {
    if (m.error().IsNotFound()) {
      return Err(Status::NotFound(fmt::format(
          "no RAM block holds guest-physical 0: 'gpa2hva 0' printed {}", Quote(where))));
    }
    return Err(m.error());
  }
  ESCDR_ASSIGN_OR_RETURN(std::string table, hmp("info ramblock"));
  Result<RamBlockRow> row = FindRow(table, m->block);
  if (!row.has_value()) {
    // The block gpa2hva named must be in the table: anything else is QEMU
    // answering in a way this parser does not know.
    return Err(Status::ProtocolError(row.error().message()));
  }
  // QEMU 10.0 also prints the block's own host address: guest-physical 0
  // must be its first byte, or the range below would be shifted.
  if (row->hva && *row->hva != m->host_address) {
    return Err(Status::ProtocolError(fmt::format(
        "guest-physical 0 is at {:#x}, but block '{}' starts at {:#x} ('info ramblock')",
        m->host_address, m->block, *row->hva)));
  }
  m->length = row->used;
  return m;
}

}  // namespace escdr
