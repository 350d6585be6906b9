// OpenInventory: from a URL to a backend with a current schema.
#include <filesystem>
#include <string>

#include "escdr/inventory/inventory.h"
#include "inventory/schema.h"
#include "inventory/sql_db.h"
#include "inventory/sql_inventory.h"

namespace escdr {

using inventory_internal::EnsureSchema;
using inventory_internal::SqlDb;

std::string RedactUrl(std::string_view url) {
  std::string out(url);
  // user:password@ in the authority.
  if (auto scheme = out.find("://"); scheme != std::string::npos) {
    const std::size_t start = scheme + 3;
    const std::size_t end = std::min(out.find('/', start), out.find('?', start));
    const std::size_t at = out.rfind('@', end == std::string::npos ? out.size() : end);
    if (at != std::string::npos && at >= start) {
      if (auto colon = out.find(':', start); colon != std::string::npos && colon < at) {
        out.replace(colon + 1, at - colon - 1, "***");
      }
    }
  }
  // password=... in the query part.
  for (std::size_t pos = out.find("password="); pos != std::string::npos;
       pos = out.find("password=", pos + 1)) {
    if (pos > 0 && out[pos - 1] != '?' && out[pos - 1] != '&') continue;
    const std::size_t value = pos + 9;
    const std::size_t end = std::min(out.find('&', value), out.size());
    out.replace(value, end - value, "***");
  }
  return out;
}

std::string ResolveInventoryUrl(std::string_view db, std::string_view state_dir) {
  if (!db.empty()) return std::string(db);
  return std::string(state_dir) + "/inventory.db";
}

Result<std::unique_ptr<Inventory>> OpenInventory(std::string_view url_in) {
  const std::string url(url_in);
  if (url.empty()) return Err(Status::InvalidArgument("no inventory database given"));
  std::unique_ptr<SqlDb> db;
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
    ESCDR_ASSIGN_OR_RETURN(db, inventory_internal::OpenPostgres(url));
  } else if (url == "memory:") {
    ESCDR_ASSIGN_OR_RETURN(db, inventory_internal::OpenSqlite(":memory:", url));
  } else {
    if (auto scheme = url.find("://"); scheme != std::string::npos) {
      return Err(Status::InvalidArgument(
          "unsupported inventory URL " + RedactUrl(url) +
          ": use a SQLite file path, sqlite:PATH, memory: or postgresql://..."));
    }
    const std::string path = url.starts_with("sqlite:") ? url.substr(7) : url;
    if (path.empty()) return Err(Status::InvalidArgument("no SQLite path in " + url));
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
      return Err(Status::Unavailable("cannot open database " + url + ": directory " +
                                     parent.string() + " does not exist"));
    }
    ESCDR_ASSIGN_OR_RETURN(db, inventory_internal::OpenSqlite(path, url));
  }
  if (Status s = EnsureSchema(*db); !s.ok()) {
    if (s.code() == StatusCode::kVersionMismatch) return Err(s);
    // The message already starts with the URL: "<url>: file is not a database".
    const std::string& m = s.message();
    const std::string detail = m.starts_with(db->url() + ": ") ? m.substr(db->url().size() + 2) : m;
    return Err(Status(s.code() == StatusCode::kIOError ? StatusCode::kUnavailable : s.code(),
                      "cannot open database " + db->url() + ": " + detail));
  }
  return inventory_internal::NewSqlInventory(std::move(db));
}

}  // namespace escdr
