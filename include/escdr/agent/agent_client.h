// AgentClient: talks to one escdr agent over its control channel.
//
// Every call opens a TCP connection to the agent's address (TLS 1.3 over it
// when the client has a TlsContext; plaintext only for agents started with
// --insecure), sends one
// request (escdr/agent/control_protocol.h, docs/agent.md), reads the reply and
// closes. MigrateOut() also delivers the progress events the source agent
// streams while the migration runs. The client holds no connection between
// calls, so one AgentClient may be used from several threads at once.
//
// Errors: Unavailable when the agent cannot be reached or drops the
// connection ("agent at 127.0.0.1:7401 ..."), Timeout, ProtocolError for a
// malformed reply, and otherwise the agent's own error (its code and message).
#ifndef ESCDR_AGENT_AGENT_CLIENT_H_
#define ESCDR_AGENT_AGENT_CLIENT_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "escdr/base/status.h"
#include "escdr/migrate/migration_report.h"
#include "escdr/wire/tls.h"

namespace escdr::agent {

// Splits "host:port" ("[::1]:7401" for IPv6). InvalidArgument otherwise.
Result<std::pair<std::string, std::uint16_t>> ParseAgentAddress(const std::string& address);

// A VM as its agent sees it (list_vms, start_vm, status).
struct VmInfo {
  std::string name;
  // "running": this agent runs the VM; "incoming": the destination QEMU of a
  // migration in progress; "migrated": a source kept after a successful
  // migration (--keep-source), no longer the VM's home.
  std::string role;
  std::int64_t pid = 0;
  std::string run_state;  // QMP query-status ("running", "paused", "postmigrate", ...)
  std::string ram_path;
  std::string serial_log;
  std::string qmp_socket;
  std::string console_socket;  // the guest's root console (ttyS1), if it has one
  // Guest TCP port -> the host port (127.0.0.1) forwarded to it on this host.
  std::map<std::uint16_t, std::uint16_t> forwards;
  std::optional<std::uint64_t> counter;  // last "escdr-counter N" of the test guest
  bool busy = false;                     // an operation (migration, stop) is running

  nlohmann::json ToJson() const;
  static VmInfo FromJson(const nlohmann::json& j);
};

// What the source agent reports while a migration runs (at most a few per
// second). Byte counts are cumulative since the migration started.
struct MigrationProgress {
  // "connecting", "preparing" (destination starts QEMU, scans its donor),
  // "setup", "iterating" (pre-copy rounds), "stop-and-copy" (VM stopped),
  // "finishing", "recovering" (after a failure).
  std::string phase;
  std::string qemu_status;            // the source QEMU's query-migrate status
  double elapsed_s = 0;
  std::uint64_t ram_transferred = 0;  // QEMU's "ram.transferred": RAM bytes it produced
  std::uint64_t ram_total = 0;
  std::uint64_t ram_remaining = 0;
  std::uint64_t normal_pages = 0;     // PAGE records QEMU wrote
  std::uint64_t zero_pages = 0;       // ZERO records QEMU wrote
  std::uint64_t wire_bytes_sent = 0;  // frames sent to the destination agent
  std::uint64_t wire_bytes_received = 0;
  std::uint64_t dirty_sync_count = 0;  // pre-copy rounds started

  nlohmann::json ToJson() const;
  static MigrationProgress FromJson(const nlohmann::json& j);
};

// MigrationReport as JSON (field names as in migration_report.h; times in
// microseconds with a "_us" suffix).
nlohmann::json MigrationReportToJson(const MigrationReport& report);
MigrationReport MigrationReportFromJson(const nlohmann::json& j);

struct MigrateOutRequest {
  std::string vm;
  // The inventory's migration (BeginMigration): the agent checks that it is
  // in progress and names this VM, this host as source and the destination.
  std::int64_t migration_id = 0;
  // Where to reach the destination agent; "" = the destination host's
  // agent address in the inventory. Lets a tunnel or relay sit in between.
  std::string destination_address;
  // false: elide, deduplicate and compress nothing (the baseline: a plain
  // migration through the same agents and path).
  bool escdr = true;
  bool keep_paused = false;  // destination ends paused (started with -S)
  bool keep_source = false;  // leave the finished source QEMU in postmigrate, RAM file kept
  // The rate cap, bytes/s on the agents' connection (everything the source
  // agent sends counts); 0 = the default, 128 MiB/s (QEMU's own default
  // cap). QEMU's cap on its local socket is lifted; the stream budget makes
  // QEMU's bandwidth estimate follow the capped end-to-end rate.
  std::uint64_t max_bandwidth = 0;
  // The wire codec (protocol version 4): "none", "lz4", "zstd" or
  // "zstd:LEVEL"; "" = the default (wire::CodecSpec{}).
  std::string compress;
  // Threads that compress on the source agent; 0 = the default (2).
  int codec_threads = 0;
  // Bytes of in-migration dedup history on each side (rounded down to
  // pages); 0 turns dedup off. Default 16 MiB: on the test guest it finds
  // as many duplicates as 256 MiB (docs/benchmarks-codec.md), and each side
  // maps and touches it once per agent (PageRing's cache).
  static constexpr std::uint64_t kDefaultDedupBudget = 16ull << 20;
  std::uint64_t dedup_budget = kDefaultDedupBudget;
  // QEMU's own upper bound for downtime-limit (2,000 s).
  static constexpr std::uint32_t kMaxDowntimeLimitMs = 2000000;
  // QEMU's downtime-limit in ms (the most the final stop-and-copy may take by
  // QEMU's bandwidth estimate); 0 = QEMU's default (300 ms).
  std::uint32_t downtime_limit_ms = 0;
  // QEMU's auto-converge capability: when a guest dirties memory faster than
  // the migration sends it, QEMU throttles the guest's vCPUs, more each
  // round, until pre-copy converges. Off by default (it slows the guest).
  bool auto_converge = false;
  std::chrono::seconds timeout{900};  // the whole migration
  // Elided pages the source may have in flight before the destination has
  // acknowledged them (SourceOptions::window_pages); 0 = the agent's default.
  // It also bounds how far the destination QEMU can fall behind the source
  // (each reference expands to a 4 KiB page there), hence the downtime.
  std::uint32_t window_pages = 0;

  nlohmann::json ToJson() const;
  static Result<MigrateOutRequest> FromJson(const nlohmann::json& j);
};

struct MigrateOutResult {
  MigrationReport report;               // the source session's figures
  std::int64_t qemu_total_time_ms = 0;  // the source QEMU's query-migrate "total-time"
  std::int64_t qemu_downtime_ms = 0;    // ... and "downtime" (VM stopped to completion)
  std::uint64_t qemu_downtime_bytes = 0;  // ... "ram.downtime-bytes": RAM sent while stopped
  std::uint64_t qemu_rounds = 0;          // ... "ram.dirty-sync-count": pre-copy rounds
  // The most auto-converge throttled the guest's vCPUs (percent, sampled with
  // the progress events); 0 if it never did or was off.
  std::uint64_t qemu_cpu_throttle_max = 0;
  std::string destination_host;
  std::string donor;                    // the donor the destination used; "" if none
  std::string note;                     // why nothing was saved, if so
  VmInfo destination_vm;                // the VM at its destination (paths, pid)
  double elapsed_s = 0;                 // the agent's whole migrate_out
  // Seconds the source agent spent in each phase of the migration, in order
  // ("checking", "connecting", "preparing", "setup", "iterating",
  // "finishing", "committing"): where the time outside QEMU's own goes.
  std::vector<std::pair<std::string, double>> phase_s;

  nlohmann::json ToJson() const;
  static MigrateOutResult FromJson(const nlohmann::json& j);
};

class AgentClient {
 public:
  // `address` is "host:port"; `timeout` bounds each call (MigrateOut uses
  // the request's timeout instead). With `tls`, every connection is TLS with
  // these credentials, and when `expected_peer` is not empty the agent's
  // certificate must name it (its host name); without `tls` the client
  // speaks plaintext, which only an agent started with --insecure accepts.
  explicit AgentClient(std::string address,
                       std::chrono::milliseconds timeout = std::chrono::seconds(180),
                       std::shared_ptr<const wire::TlsContext> tls = nullptr,
                       std::string expected_peer = "");

  const std::string& address() const { return address_; }

  // Sends {"op": op, ...args} and returns the ok reply's body. Events, if
  // any, are passed to `on_event` (may be null).
  Result<nlohmann::json> Call(const std::string& op, nlohmann::json args = nlohmann::json::object(),
                              const std::function<void(const nlohmann::json&)>& on_event = nullptr);

  // {"agent", "host", "address", "pid", "version"}.
  Result<nlohmann::json> Ping();
  // Ping's fields plus "vms" (VmInfo objects) and "migrations" in progress.
  Result<nlohmann::json> GetStatus();
  Result<std::vector<VmInfo>> ListVms();
  // Starts VM `name` as the inventory describes it, or resumes it if this
  // agent holds it paused. Returns the VM once QMP answers.
  Result<VmInfo> StartVm(const std::string& name);
  // Quits the VM's QEMU and removes its RAM file.
  Status StopVm(const std::string& name);

  // Runs a migration on this (the source) agent. `on_progress` receives the
  // progress events. When `*cancel` becomes true the client asks the agent to
  // cancel (the migration then fails cleanly). Returns the figures on success;
  // the agent's error (naming the phase and what failed) otherwise.
  Result<MigrateOutResult> MigrateOut(
      const MigrateOutRequest& request,
      const std::function<void(const MigrationProgress&)>& on_progress = nullptr,
      const std::atomic<bool>* cancel = nullptr);

 private:
  std::string address_;
  std::chrono::milliseconds timeout_;
  std::shared_ptr<const wire::TlsContext> tls_;
  std::string expected_peer_;
};

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_AGENT_CLIENT_H_
