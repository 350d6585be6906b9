// SqlDb: the small slice of a SQL database that the inventory needs, so that
// its logic is written once over SQLite and PostgreSQL.
//
// Statements use PostgreSQL-style placeholders $1, $2, ... on both backends
// (SQLite binds them by name). Cells come back as text (integers in decimal,
// BLOB/BYTEA as raw bytes) or nullopt for NULL.
//
// Errors: kAborted means "retry the whole transaction" (serialization
// failure, deadlock, lock timeout); kAlreadyExists a unique-constraint
// violation; kUnavailable a lost connection; kFailedPrecondition a CHECK
// constraint; anything else kIOError. Messages start with the database URL.
//
// Thread safety: none; the owner serializes calls.
#ifndef ESCDR_INVENTORY_SQL_DB_H_
#define ESCDR_INVENTORY_SQL_DB_H_

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "escdr/base/status.h"

namespace escdr::inventory_internal {

struct Blob {
  std::string_view bytes;
};
using SqlParam = std::variant<std::nullptr_t, std::int64_t, double, std::string_view, Blob>;

struct SqlRows {
  std::vector<std::vector<std::optional<std::string>>> rows;
  std::int64_t affected = 0;  // rows changed by INSERT/UPDATE/DELETE

  bool empty() const { return rows.empty(); }
  const std::string& Text(std::size_t r, std::size_t c) const {
    static const std::string kEmpty;
    return rows[r][c] ? *rows[r][c] : kEmpty;
  }
  std::int64_t Int(std::size_t r, std::size_t c) const {
    std::int64_t v = 0;
    if (rows[r][c]) std::from_chars(rows[r][c]->data(), rows[r][c]->data() + rows[r][c]->size(), v);
    return v;
  }
  bool IsNull(std::size_t r, std::size_t c) const { return !rows[r][c].has_value(); }
};

enum class Dialect { kSqlite, kPostgres };

class SqlDb {
 public:
  virtual ~SqlDb() = default;
  virtual Dialect dialect() const = 0;
  virtual const std::string& url() const = 0;  // redacted

  // Starts a transaction. `write`: it will write (SQLite takes the write lock
  // now, so that two writers never deadlock on an upgrade). PostgreSQL runs
  // read-only work without BEGIN/COMMIT (each statement sees committed
  // data), saving two round trips per decision. `advisory_lock`, if not 0,
  // is a PostgreSQL transaction-level advisory lock taken in the same round
  // trip as BEGIN (SQLite's write lock already serializes writers).
  virtual Status Begin(bool write, std::int64_t advisory_lock = 0) = 0;
  virtual Status Commit() = 0;
  virtual void Rollback() = 0;

  virtual Result<SqlRows> Query(std::string_view sql, std::initializer_list<SqlParam> params) = 0;
  Result<SqlRows> Query(std::string_view sql) { return Query(sql, {}); }
  // Several statements without parameters (schema scripts).
  virtual Status ExecScript(std::string_view sql) = 0;
};

// The error of `r`, or OK.
template <typename T>
Status StatusOf(const Result<T>& r) {
  return r.has_value() ? Status::OK() : r.error();
}

// Opens a SQLite database: a path, or ":memory:".
Result<std::unique_ptr<SqlDb>> OpenSqlite(const std::string& path, const std::string& url);
// Connects to PostgreSQL with a libpq URI.
Result<std::unique_ptr<SqlDb>> OpenPostgres(const std::string& uri);

}  // namespace escdr::inventory_internal

#endif  // ESCDR_INVENTORY_SQL_DB_H_
