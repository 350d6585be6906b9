// Test support: a fresh, empty inventory database per test, on any backend.
//
//   "sqlite"   a file in a new temporary directory, removed afterwards
//   "memory"   memory: (nothing to clean up; cannot be reopened)
//   "postgres" a new schema in the database of $ESCDR_TEST_PG_URL (normally
//              the throwaway cluster of tools/pg-cluster.sh), dropped
//              afterwards; the URL sets search_path to it. Without that variable the test is skipped, except
//              when CI=true: then it fails, so CI can never pass by skipping.
//
// Header-only and GoogleTest-aware: use from *_test.cc / *_itest.cc only.
#ifndef ESCDR_INVENTORY_INVENTORY_TESTING_H_
#define ESCDR_INVENTORY_INVENTORY_TESTING_H_

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "escdr/inventory/inventory.h"
#include "inventory/pg_admin.h"

namespace escdr::inventory_testing {

// $ESCDR_TEST_PG_URL or "".
inline std::string PgAdminUrl() {
  const char* url = std::getenv("ESCDR_TEST_PG_URL");
  return url ? url : "";
}

inline bool InCi() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

// Owns one empty database. Call ESCDR_REQUIRE_BACKEND(backend) first, so a
// missing PostgreSQL skips (or, in CI, fails) the test; then check ok().
class TestDatabase {
 public:
  // Why `backend` cannot run here; "" if it can.
  static std::string MissingReason(const std::string& backend) {
    if (backend != "postgres" || !PgAdminUrl().empty()) return "";
    return InCi() ? "ESCDR_TEST_PG_URL is not set but CI=true: the PostgreSQL tests must run in "
                    "CI (tools/run-tests.sh starts a cluster with tools/pg-cluster.sh)"
                  : "ESCDR_TEST_PG_URL is not set; run eval \"$(tools/pg-cluster.sh start DIR)\" "
                    "to run the PostgreSQL tests";
  }

  explicit TestDatabase(const std::string& backend) : backend_(backend) {
    if (backend == "memory") {
      url_ = "memory:";
    } else if (backend == "sqlite") {
      std::string tmpl = (std::filesystem::temp_directory_path() / "escdr-inv-XXXXXX").string();
      if (!mkdtemp(tmpl.data())) {
        ADD_FAILURE() << "cannot create a temporary directory";
        return;
      }
      dir_ = tmpl;
      url_ = dir_ + "/inventory.db";
    } else if (backend == "postgres") {
      admin_ = PgAdminUrl();
      if (admin_.empty()) {
        ADD_FAILURE() << MissingReason(backend);
        return;
      }
      static std::atomic<int> counter{0};
      std::random_device rd;
      pg_name_ = "escdr_t_" + std::to_string(getpid()) + "_" + std::to_string(counter++) + "_" +
                 std::to_string(rd() % 100000);
      Status s = inventory_internal::CreatePgSchema(admin_, pg_name_);
      if (!s.ok()) {
        ADD_FAILURE() << s.ToString();
        pg_name_.clear();
        return;
      }
      url_ = inventory_internal::PgUrlWithSchema(admin_, pg_name_);
    } else {
      ADD_FAILURE() << "unknown backend " << backend;
      return;
    }
    ok_ = true;
  }
  ~TestDatabase() {
    if (!pg_name_.empty()) {
      Status s = inventory_internal::DropPgSchema(admin_, pg_name_);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  bool ok() const { return ok_; }
  const std::string& url() const { return url_; }
  const std::string& backend() const { return backend_; }
  // Whether a second OpenInventory(url()) sees the same data.
  bool shared() const { return backend_ != "memory"; }

 private:
  std::string backend_;
  std::string url_;
  std::string dir_;
  std::string admin_;
  std::string pg_name_;
  bool ok_ = false;
};

}  // namespace escdr::inventory_testing

// Skips the test when `backend` cannot run here, or fails it in CI.
#define ESCDR_REQUIRE_BACKEND(backend)                                                    \
  do {                                                                                    \
    const std::string escdr_missing_ =                                                    \
        ::escdr::inventory_testing::TestDatabase::MissingReason(backend);                 \
    if (!escdr_missing_.empty()) {                                                        \
      if (::escdr::inventory_testing::InCi()) FAIL() << escdr_missing_;                   \
      GTEST_SKIP() << escdr_missing_;                                                     \
    }                                                                                     \
  } while (0)

#endif  // ESCDR_INVENTORY_INVENTORY_TESTING_H_
