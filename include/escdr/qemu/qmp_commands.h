// Typed helpers for the QMP commands escdr uses (QEMU 7.2 schema).
//
// Each helper runs one command through a QmpClient (or polls, for
// WaitForMigration) and turns the reply into a typed value. Errors are those of
// QmpClient::Execute, plus ProtocolError when a reply lacks a field that the
// 7.2 schema promises. /work/shared/docs/qemu-7.2-migration-stream.md §7 lists
// what the migration counters mean.
//
// Thread safety: as QmpClient (the helpers keep no state).
#ifndef ESCDR_QEMU_QMP_COMMANDS_H_
#define ESCDR_QEMU_QMP_COMMANDS_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "escdr/base/status.h"
#include "escdr/qemu/qmp.h"

namespace escdr {

// The reply of query-migrate. On the source every field is filled as the
// migration proceeds; on a destination QEMU reports only `status`. Absent
// counters are 0.
struct MigrationInfo {
  // "none", "setup", "active", "pre-switchover", "device", "completed",
  // "failed", "cancelling", "cancelled", ... (MigrationStatus).
  std::string status;
  std::string error_desc;  // set when status is "failed" (QEMU 7.2 "error-desc")

  std::int64_t total_time_ms = 0;         // start until completion (or now)
  std::int64_t downtime_ms = 0;           // guest stopped, once completed
  std::int64_t expected_downtime_ms = 0;  // estimate while active
  std::int64_t setup_time_ms = 0;
  // How much auto-converge throttles the vCPUs now, in percent (0: not at all).
  std::uint64_t cpu_throttle_percentage = 0;

  bool has_ram = false;          // whether the reply had a "ram" object
  std::uint64_t ram_transferred = 0;  // bytes of RAM records incl. headers
  std::uint64_t ram_total = 0;        // bytes of migratable guest RAM
  std::uint64_t ram_remaining = 0;
  std::uint64_t ram_duplicate = 0;    // ZERO records (pages sent as one byte)
  std::uint64_t ram_normal = 0;       // PAGE records (full pages)
  std::uint64_t ram_normal_bytes = 0;
  std::uint64_t ram_skipped = 0;
  std::uint64_t ram_dirty_sync_count = 0;  // completed dirty-bitmap syncs (rounds)
  std::uint64_t ram_dirty_pages_rate = 0;  // pages/s dirtied by the guest
  std::uint64_t ram_pages_per_second = 0;
  std::uint64_t ram_page_size = 0;
  std::uint64_t ram_precopy_bytes = 0;
  std::uint64_t ram_downtime_bytes = 0;    // bytes sent while the guest was stopped
  std::uint64_t ram_postcopy_bytes = 0;
  std::uint64_t ram_multifd_bytes = 0;
  double ram_mbps = 0.0;

  nlohmann::json raw;  // the full reply, for fields not copied above

  // True for the states a migration does not leave on its own:
  // completed, failed, cancelled.
  bool finished() const {
    return status == "completed" || status == "failed" || status == "cancelled";
  }
};

// Decodes a query-migrate reply. ProtocolError if `reply` is not an object
// with a string "status".
Result<MigrationInfo> ParseMigrationInfo(const nlohmann::json& reply);

// query-status: the run state, e.g. "running", "paused", "postmigrate",
// "inmigrate", "finish-migrate", "shutdown".
Result<std::string> QueryStatus(QmpClient& qmp);

// stop / cont: pause and resume the guest's vCPUs. Cont on a source left in
// "postmigrate" resumes it there (QEMU allows it).
Status Stop(QmpClient& qmp);
Status Cont(QmpClient& qmp);

// migrate-set-capabilities with {name: state} pairs, e.g. {{"return-path", true}}.
// Set them before Migrate (source) or MigrateIncoming (destination).
Status SetMigrationCapabilities(QmpClient& qmp, const std::map<std::string, bool>& caps);

// migrate-set-parameters with `params` as the arguments object,
// e.g. {{"max-bandwidth", 1 << 30}, {"downtime-limit", 300}}.
Status SetMigrationParameters(QmpClient& qmp, const nlohmann::json& params);

// migrate {"uri": uri}: starts an outgoing migration ("unix:/path",
// "tcp:host:port", "exec:cat > FILE") and returns at once; follow it with
// WaitForMigration(). The source ends in run state "postmigrate".
Status Migrate(QmpClient& qmp, const std::string& uri);

// migrate-incoming {"uri": uri}. REQUIRES: QEMU started with -incoming defer.
Status MigrateIncoming(QmpClient& qmp, const std::string& uri);

// migrate_cancel.
Status MigrateCancel(QmpClient& qmp);

// query-migrate.
Result<MigrationInfo> QueryMigrate(QmpClient& qmp);

// Polls query-migrate every `poll_interval` until the migration finishes.
// Returns the final info when it completed; Aborted (naming QEMU's
// error-desc) when it failed or was cancelled; Timeout (with the last status
// and bytes transferred) if it is still running after `timeout`.
Result<MigrationInfo> WaitForMigration(
    QmpClient& qmp, std::chrono::milliseconds timeout,
    std::chrono::milliseconds poll_interval = std::chrono::milliseconds(20));

// quit: QEMU exits at once. A connection that closes before the reply
// arrives counts as success.
Status Quit(QmpClient& qmp);

}  // namespace escdr

#endif  // ESCDR_QEMU_QMP_COMMANDS_H_
