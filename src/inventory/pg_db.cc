// SqlDb over PostgreSQL through libpq (no exceptions to catch: libpq is C).
// Parameters go as text, except BLOBs which go binary; results come back as
// text, BYTEA columns decoded from their hex form.
#include <libpq-fe.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "escdr/inventory/inventory.h"
#include "inventory/pg_admin.h"
#include "inventory/sql_db.h"

namespace escdr::inventory_internal {
namespace {

// Parameter types are given explicitly, so a statement may leave some of
// its parameters unused (PostgreSQL cannot infer the type of those).
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
constexpr Oid kFloat8Oid = 701;

// The first line of a libpq message, without the trailing newline.
std::string FirstLine(const char* msg) {
  std::string s = msg ? msg : "";
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

void IgnoreNotice(void*, const char*) {}

class PostgresDb final : public SqlDb {
 public:
  PostgresDb(PGconn* conn, std::string url) : conn_(conn), url_(std::move(url)) {}
  ~PostgresDb() override { PQfinish(conn_); }
  PostgresDb(const PostgresDb&) = delete;
  PostgresDb& operator=(const PostgresDb&) = delete;

  Dialect dialect() const override { return Dialect::kPostgres; }
  const std::string& url() const override { return url_; }

  Status Begin(bool write, std::int64_t advisory_lock) override {
    if (PQstatus(conn_) != CONNECTION_OK) {
      // The server restarted or the network blinked: one reconnect attempt.
      PQreset(conn_);
      if (PQstatus(conn_) != CONNECTION_OK) {
        return Status::Unavailable("lost connection to database " + url_ + ": " +
                                   FirstLine(PQerrorMessage(conn_)));
      }
    }
    if (!write) return Status::OK();
    if (advisory_lock != 0) {
      return ExecScript("BEGIN; SELECT pg_advisory_xact_lock(" + std::to_string(advisory_lock) +
                        ")");
    }
    return Exec("BEGIN");
  }
  Status Commit() override {
    if (PQtransactionStatus(conn_) == PQTRANS_IDLE) return Status::OK();  // read-only work
    return Exec("COMMIT");
  }
  void Rollback() override {
    if (PQtransactionStatus(conn_) != PQTRANS_IDLE) (void)Exec("ROLLBACK");
  }

  Result<SqlRows> Query(std::string_view sql, std::initializer_list<SqlParam> params) override {
    std::vector<std::string> text(params.size());
    std::vector<const char*> values(params.size(), nullptr);
    std::vector<int> lengths(params.size(), 0);
    std::vector<int> formats(params.size(), 0);
    std::vector<Oid> types(params.size(), 0);
    std::size_t i = 0;
    for (const SqlParam& p : params) {
      if (auto* n = std::get_if<std::int64_t>(&p)) {
        text[i] = std::to_string(*n);
        values[i] = text[i].c_str();
        types[i] = kInt8Oid;
      } else if (auto* d = std::get_if<double>(&p)) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.17g", *d);
        text[i] = buf;
        values[i] = text[i].c_str();
        types[i] = kFloat8Oid;
      } else if (auto* s = std::get_if<std::string_view>(&p)) {
        text[i] = std::string(*s);
        values[i] = text[i].c_str();
        types[i] = kTextOid;
      } else if (auto* b = std::get_if<Blob>(&p)) {
        values[i] = b->bytes.data() ? b->bytes.data() : "";
        lengths[i] = static_cast<int>(b->bytes.size());
        formats[i] = 1;
        types[i] = kByteaOid;
      }
      ++i;
    }
    const std::string stmt(sql);
    PgResult res(PQexecParams(conn_, stmt.c_str(), static_cast<int>(params.size()), types.data(),
                              values.data(), lengths.data(), formats.data(), 0));
    const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Err(Error(res.get()));
    SqlRows out;
    const int nrows = PQntuples(res.get());
    const int ncols = PQnfields(res.get());
    out.rows.reserve(static_cast<std::size_t>(nrows));
    for (int r = 0; r < nrows; ++r) {
      auto& row = out.rows.emplace_back(static_cast<std::size_t>(ncols));
      for (int c = 0; c < ncols; ++c) {
        if (PQgetisnull(res.get(), r, c)) continue;
        const char* v = PQgetvalue(res.get(), r, c);
        if (PQftype(res.get(), c) == kByteaOid) {
          std::size_t n = 0;
          unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(v), &n);
          if (!raw) return Err(Status::IOError(url_ + ": cannot decode a BYTEA value"));
          row[static_cast<std::size_t>(c)] = std::string(reinterpret_cast<char*>(raw), n);
          PQfreemem(raw);
        } else {
          row[static_cast<std::size_t>(c)] =
              std::string(v, static_cast<std::size_t>(PQgetlength(res.get(), r, c)));
        }
      }
    }
    if (const char* n = PQcmdTuples(res.get()); n && *n) out.affected = std::stoll(n);
    return out;
  }

  Status ExecScript(std::string_view sql) override {
    PgResult res(PQexec(conn_, std::string(sql).c_str()));
    const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return Error(res.get());
    return Status::OK();
  }

 private:
  Status Exec(const char* sql) { return ExecScript(sql); }

  Status Error(const PGresult* res) const {
    if (PQstatus(conn_) != CONNECTION_OK) {
      return Status::Unavailable("lost connection to database " + url_ + ": " +
                                 FirstLine(PQerrorMessage(conn_)));
    }
    const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    const std::string code = state ? state : "";
    const char* primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    const std::string msg = url_ + ": " + (primary ? primary : FirstLine(PQerrorMessage(conn_)));
    // 40001 serialization_failure, 40P01 deadlock_detected, 55P03 lock_not_available.
    if (code == "40001" || code == "40P01" || code == "55P03") return Status::Aborted(msg);
    if (code == "23505") return Status::AlreadyExists(msg);
    if (code == "23514" || code == "23503") return Status::FailedPrecondition(msg);
    if (code.starts_with("08")) return Status::Unavailable(msg);
    return Status::IOError(msg);
  }

  PGconn* conn_;
  std::string url_;
};

Result<PGconn*> Connect(const std::string& uri) {
  PGconn* conn = PQconnectdb(uri.c_str());
  if (!conn) {
    return Err(Status::Unavailable("cannot connect to database " + RedactUrl(uri) +
                                   ": out of memory"));
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = FirstLine(PQerrorMessage(conn));
    PQfinish(conn);
    return Err(Status::Unavailable("cannot connect to database " + RedactUrl(uri) + ": " + why));
  }
  PQsetNoticeProcessor(conn, &IgnoreNotice, nullptr);
  return conn;
}

// Quotes a database name as an identifier.
std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

Status AdminExec(const std::string& admin_url, const std::string& sql, std::string_view what) {
  ESCDR_ASSIGN_OR_RETURN(PGconn * conn, Connect(admin_url));
  PgResult res(PQexec(conn, sql.c_str()));
  Status s;
  if (!res || PQresultStatus(res.get()) != PGRES_COMMAND_OK) {
    s = Status::IOError(std::string(what) + " on " + RedactUrl(admin_url) + " failed: " +
                        FirstLine(PQerrorMessage(conn)));
  }
  PQfinish(conn);
  return s;
}

}  // namespace

Result<std::unique_ptr<SqlDb>> OpenPostgres(const std::string& uri) {
  ESCDR_ASSIGN_OR_RETURN(PGconn * conn, Connect(uri));
  auto db = std::make_unique<PostgresDb>(conn, RedactUrl(uri));
  // Byte-order comparisons match SQLite and std::string, whatever the
  // database's locale; READ COMMITTED plus row locks is the concurrency model.
  ESCDR_RETURN_IF_ERROR(db->ExecScript(
      "SET client_min_messages = warning; "
      "SET default_transaction_isolation = 'read committed'"));
  return std::unique_ptr<SqlDb>(std::move(db));
}

std::string PgUrlWithDatabase(std::string_view url, std::string_view dbname) {
  std::string u(url);
  std::string query;
  if (auto q = u.find('?'); q != std::string::npos) {
    query = u.substr(q);
    u.resize(q);
  }
  const auto scheme = u.find("://");
  const std::size_t authority = scheme == std::string::npos ? 0 : scheme + 3;
  if (auto slash = u.find('/', authority); slash != std::string::npos) u.resize(slash);
  return u + "/" + std::string(dbname) + query;
}

std::string PgUrlWithSchema(std::string_view url, std::string_view schema) {
  std::string u(url);
  u += u.find('?') == std::string::npos ? '?' : '&';
  // "-c search_path=<schema>", percent-encoded as a URI query value.
  return u + "options=-csearch_path%3D" + std::string(schema);
}

Status CreatePgSchema(const std::string& admin_url, std::string_view name) {
  return AdminExec(admin_url, "CREATE SCHEMA " + QuoteIdent(name),
                   "creating schema " + std::string(name));
}

Status DropPgSchema(const std::string& admin_url, std::string_view name) {
  return AdminExec(admin_url, "DROP SCHEMA IF EXISTS " + QuoteIdent(name) + " CASCADE",
                   "dropping schema " + std::string(name));
}

Status CreatePgDatabase(const std::string& admin_url, std::string_view name) {
  return AdminExec(admin_url, "CREATE DATABASE " + QuoteIdent(name) + " TEMPLATE template0",
                   "creating database " + std::string(name));
}

Status DropPgDatabase(const std::string& admin_url, std::string_view name) {
  return AdminExec(admin_url, "DROP DATABASE IF EXISTS " + QuoteIdent(name) + " WITH (FORCE)",
                   "dropping database " + std::string(name));
}

}  // namespace escdr::inventory_internal
