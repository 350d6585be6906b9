// Helpers for tests and benchmarks that need a fresh PostgreSQL database or
// schema: derive a URL for it on the same server, create one, drop one.
//
// Thread safety: each call opens and closes its own connection.
#ifndef ESCDR_INVENTORY_PG_ADMIN_H_
#define ESCDR_INVENTORY_PG_ADMIN_H_

#include <string>
#include <string_view>

#include "escdr/base/status.h"

namespace escdr::inventory_internal {

// `url` (a libpq URI) with its database name replaced by `dbname`; the
// query part (?host=/socket/dir&...) is kept.
std::string PgUrlWithDatabase(std::string_view url, std::string_view dbname);

// `url` with search_path set to `schema` for every session it opens (a
// libpq "options" parameter), so the inventory's tables live in that schema.
std::string PgUrlWithSchema(std::string_view url, std::string_view schema);

// CREATE SCHEMA / DROP SCHEMA ... CASCADE, through `admin_url`. A schema per
// test isolates tests at a fraction of the cost of a database per test.
Status CreatePgSchema(const std::string& admin_url, std::string_view name);
Status DropPgSchema(const std::string& admin_url, std::string_view name);

// CREATE DATABASE `name`, connecting through `admin_url`.
Status CreatePgDatabase(const std::string& admin_url, std::string_view name);

// DROP DATABASE IF EXISTS `name` WITH (FORCE): also ends open sessions.
Status DropPgDatabase(const std::string& admin_url, std::string_view name);

}  // namespace escdr::inventory_internal

#endif  // ESCDR_INVENTORY_PG_ADMIN_H_
