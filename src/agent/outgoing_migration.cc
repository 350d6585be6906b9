// The source side of a migration: one explicit state machine per migration.
//
//   Checking -> Connecting -> Preparing -> Setup -> Iterating -> Finishing
//            -> Committing -> Done
//   any state before Committing --failure/cancel--> Recovering -> Failed
//
// Checking: the inventory's migration names this VM, this host and the
//   destination; the VM runs here; QEMU's capabilities leave the stream format
//   alone. Connecting: TCP to the destination agent, migrate_in (it starts the
//   destination QEMU paused). Preparing: SourceSession handshake (the
//   destination scans its donor). Setup: return-path on, bandwidth, QMP
//   migrate to a local socket. Iterating: SourceSession::Run relays the stream
//   (QEMU stops the VM for its last round: "stop-and-copy" in progress
//   events). Finishing: QEMU reports completed. Committing: commit_in makes the
//   destination agent resume its QEMU and own the VM; only then the source QEMU
//   is quit and its RAM file removed. Recovering: the session is cancelled,
//   migrate_cancel, the source VM resumed if it was running, the destination
//   told to drop its QEMU (abort_in); the error names the phase.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/agent_impl.h"
#include "agent/catalog_content.h"
#include "agent/connections.h"
#include "agent/json_util.h"
#include "escdr/agent/control_protocol.h"
#include "escdr/migrate/source_session.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/sys/unix_socket.h"
#include "escdr/wire/socket.h"

namespace escdr::agent {

using nlohmann::json;
using std::chrono::milliseconds;

namespace {

enum class OutPhase {
  kChecking,
  kConnecting,
  kPreparing,
  kSetup,
  kIterating,
  kFinishing,
  kCommitting,
  kDone,
  kRecovering,
  kFailed,
};

const char* OutPhaseName(OutPhase p) {
  switch (p) {
    case OutPhase::kChecking: return "checking";
    case OutPhase::kConnecting: return "connecting";
    case OutPhase::kPreparing: return "preparing";
    case OutPhase::kSetup: return "setup";
    case OutPhase::kIterating: return "iterating";
    case OutPhase::kFinishing: return "finishing";
    case OutPhase::kCommitting: return "committing";
    case OutPhase::kDone: return "done";
    case OutPhase::kRecovering: return "recovering";
    case OutPhase::kFailed: return "failed";
  }
  return "?";
}

// Capabilities that change the stream format (or its topology) so that the
// proxy could not parse or forward it (stream spec §7, §8).
constexpr const char* kRefusedCapabilities[] = {
    "xbzrle", "compress", "x-ignore-shared", "postcopy-ram", "dirty-bitmaps", "block",
    "multifd", "postcopy-preempt", "x-colo", "rdma-pin-all", "zero-copy-send",
};

constexpr milliseconds kQmpQuick{3000};
constexpr milliseconds kConnectTimeout{10000};
// The wire-side rate cap when the request names none: QEMU's own default
// (MAX_THROTTLE, 128 MiB/s), now applied to the bytes between the agents.
constexpr std::uint64_t kDefaultMaxBandwidth = 134217728;
// QEMU's own cap on its local socket, lifted: the wire cap and the stream
// budget pace it (wire-protocol §6).
constexpr std::uint64_t kQemuUncapped = 64ull << 30;
constexpr std::uint32_t kDefaultDowntimeLimitMs = 300;       // QEMU's DEFAULT_MIGRATE_SET_DOWNTIME

std::string Mib(std::uint64_t bytes) { return fmt::format("{:.1f} MiB", bytes / 1048576.0); }

}  // namespace

class OutgoingMigration final : public ActiveMigration {
 public:
  OutgoingMigration(Agent::Impl& agent, MigrateOutRequest request)
      : agent_(agent), req_(std::move(request)), start_(MonotonicClock::now()) {
    counters_ = std::make_shared<CountingConnection::Counters>();
  }

  const std::string& vm() const override { return req_.vm; }
  std::int64_t migration_id() const override { return req_.migration_id; }

  json Describe() const override {
    return {{"vm", req_.vm},
            {"direction", "out"},
            {"migration_id", req_.migration_id},
            {"phase", OutPhaseName(phase_.load())},
            {"destination", dest_host_},
            {"wire_bytes_sent", counters_->written.load()}};
  }

  void Cancel(const std::string& reason) override {
    std::shared_ptr<wire::Connection> peer;
    SourceSession* session = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_) return;
      cancelled_ = true;
      cancel_reason_ = reason;
      peer = peer_;
      session = session_.get();
      // The session and the peer connection stay alive while mu_ is held.
      if (session != nullptr) session->Cancel(reason);
      if (peer) peer->Shutdown();
    }
    spdlog::warn("agent {}: cancelling the migration of {}: {}", agent_.host(), req_.vm, reason);
  }

  // The whole migration; runs on a worker thread.
  Result<MigrateOutResult> Execute();

  // Called by the control thread a few times a second.
  MigrationProgress Progress();

 private:
  Status Check();
  Status Connect();
  Status Prepare();
  Result<std::unique_ptr<wire::Connection>> Setup();
  Result<MigrationReport> Stream(std::unique_ptr<wire::Connection> qemu);
  Result<MigrationInfo> Finish();
  Status Commit();
  Status Recover(const Status& cause, OutPhase failed_in);

  void SetPhase(OutPhase p) {
    const auto now = MonotonicClock::now();
    std::lock_guard<std::mutex> lock(progress_mu_);
    phase_times_.emplace_back(phase_.load(), std::chrono::duration<double>(now - phase_start_).count());
    phase_start_ = now;
    phase_.store(p);
  }
  Status CancelledStatus() {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_ ? Status::Aborted(fmt::format("migration cancelled: {}", cancel_reason_))
                      : Status::OK();
  }
  QmpClient& qmp() { return entry_->proc->qmp(); }

  Agent::Impl& agent_;
  const MigrateOutRequest req_;
  const MonotonicClock::time_point start_;
  std::atomic<OutPhase> phase_{OutPhase::kChecking};

  std::shared_ptr<VmEntry> entry_;
  Vm vm_;
  Migration migration_;
  std::string dest_host_;
  std::string dest_address_;
  std::unique_ptr<CatalogContent> content_;
  std::string note_;
  std::string donor_;
  VmInfo dest_vm_;
  bool was_running_ = false;
  bool migrate_in_sent_ = false;
  bool qemu_migrating_ = false;
  std::shared_ptr<CountingConnection::Counters> counters_;

  std::mutex mu_;  // guards the fields below against Cancel()
  bool cancelled_ = false;
  std::string cancel_reason_;
  std::shared_ptr<wire::Connection> peer_;
  std::unique_ptr<SourceSession> session_;

  std::mutex progress_mu_;  // the last QEMU figures, for progress and errors
  MigrationInfo last_info_;
  // Seconds spent in each phase left so far, in order (guarded by progress_mu_).
  std::vector<std::pair<OutPhase, double>> phase_times_;
  MonotonicClock::time_point phase_start_ = MonotonicClock::now();
  std::uint64_t max_throttle_ = 0;  // the highest cpu-throttle-percentage seen
};

Result<MigrateOutResult> OutgoingMigration::Execute() {
  Status s = Check();
  if (!s.ok()) {
    SetPhase(OutPhase::kFailed);
    if (entry_) agent_.ReleaseVm(entry_);
    return Err(s);
  }
  OutPhase at = OutPhase::kConnecting;
  auto fail = [&](const Status& cause) -> Result<MigrateOutResult> {
    return Err(Recover(cause, at));
  };
  SetPhase(at);
  if (s = Connect(); !s.ok()) return fail(s);
  SetPhase(at = OutPhase::kPreparing);
  if (s = Prepare(); !s.ok()) return fail(s);
  SetPhase(at = OutPhase::kSetup);
  auto qemu_conn = Setup();
  if (!qemu_conn.has_value()) return fail(qemu_conn.error());
  SetPhase(at = OutPhase::kIterating);
  auto report = Stream(std::move(*qemu_conn));
  if (!report.has_value()) return fail(report.error());
  SetPhase(at = OutPhase::kFinishing);
  auto info = Finish();
  if (!info.has_value()) return fail(info.error());
  SetPhase(at = OutPhase::kCommitting);
  const auto commit_start = MonotonicClock::now();
  if (s = Commit(); !s.ok()) return fail(s);
  const auto commit_time =
      std::chrono::duration_cast<std::chrono::microseconds>(MonotonicClock::now() - commit_start);

  // The destination owns the VM now: the source QEMU must never run again.
  if (req_.keep_source) {
    Status r = agent_.SetRole(entry_, VmRole::kMigrated, req_.migration_id);
    if (!r.ok()) spdlog::warn("agent {}: {}", agent_.host(), r.ToString());
    agent_.ReleaseVm(entry_);
  } else {
    Status r = agent_.DestroyVm(entry_, /*graceful=*/true);
    if (!r.ok()) spdlog::error("agent {}: migrated VM {} but cannot end its source QEMU: {}",
                               agent_.host(), req_.vm, r.ToString());
  }
  SetPhase(OutPhase::kDone);

  MigrateOutResult result;
  result.report = *report;
  // The guest stays stopped from QEMU's last round until commit_in resumed it
  // on the destination; the session measured up to SHUT.
  if (result.report.downtime_measured) result.report.downtime += commit_time;
  result.qemu_total_time_ms = info->total_time_ms;
  result.qemu_downtime_ms = info->downtime_ms;
  result.qemu_downtime_bytes = info->ram_downtime_bytes;
  result.qemu_rounds = info->ram_dirty_sync_count;
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    result.qemu_cpu_throttle_max = max_throttle_;
    for (const auto& [phase, seconds] : phase_times_) {
      result.phase_s.emplace_back(OutPhaseName(phase), seconds);
    }
  }
  result.destination_host = dest_host_;
  result.donor = donor_;
  result.note = note_;
  result.destination_vm = dest_vm_;
  result.elapsed_s = SecondsSince(start_);
  std::string phases;
  for (const auto& [name, seconds] : result.phase_s) {
    phases += fmt::format("{}{} {:.3f} s", phases.empty() ? "" : ", ", name, seconds);
  }
  spdlog::info("agent {}: migrated {} to {} in {:.2f} s ({}): {}", agent_.host(), req_.vm,
               dest_host_, result.elapsed_s, phases, result.report.Summary());
  return result;
}

Status OutgoingMigration::Check() {
  Inventory& inv = agent_.inventory();
  ESCDR_ASSIGN_OR_RETURN(migration_, inv.GetMigration(req_.migration_id));
  if (migration_.vm != req_.vm || migration_.source != agent_.host() ||
      migration_.outcome != MigrationOutcome::kInProgress) {
    return Status::FailedPrecondition(fmt::format(
        "inventory migration {} is of VM {} from {} ({}), not an open migration of {} from {}",
        migration_.id, migration_.vm, migration_.source, MigrationOutcomeName(migration_.outcome),
        req_.vm, agent_.host()));
  }
  dest_host_ = migration_.destination;
  ESCDR_ASSIGN_OR_RETURN(vm_, inv.GetVm(req_.vm));
  dest_address_ = req_.destination_address;
  if (dest_address_.empty()) {
    ESCDR_ASSIGN_OR_RETURN(Host dest, inv.GetHost(dest_host_));
    dest_address_ = dest.agent_address;
    if (dest_address_.empty()) {
      return Status::FailedPrecondition(
          fmt::format("host {} has no agent address in the inventory", dest_host_));
    }
  }
  ESCDR_ASSIGN_OR_RETURN(entry_, agent_.AcquireVm(req_.vm, "migrating to " + dest_host_));
  if (entry_->record.role != VmRole::kRunning || !entry_->proc || !entry_->proc->has_qmp() ||
      !entry_->proc->Alive()) {
    return Status::FailedPrecondition(
        fmt::format("VM {} is not running on {} (role {})", req_.vm, agent_.host(),
                    VmRoleName(entry_->record.role)));
  }
  ESCDR_ASSIGN_OR_RETURN(std::string status, QueryStatus(qmp()));
  if (status != "running" && status != "paused") {
    return Status::FailedPrecondition(
        fmt::format("VM {} is in QEMU state {}, not running or paused", req_.vm, status));
  }
  was_running_ = status == "running";
  ESCDR_ASSIGN_OR_RETURN(json caps, qmp().Execute("query-migrate-capabilities"));
  if (caps.is_array()) {
    for (const json& c : caps) {
      const std::string name = StringOr(c, "capability");
      const bool on = c.contains("state") && c["state"].is_boolean() && c["state"].get<bool>();
      for (const char* refused : kRefusedCapabilities) {
        if (on && name == refused) {
          const bool compression = name == "compress" || name == "multifd" || name == "xbzrle";
          return Status::NotSupported(fmt::format(
              "VM {} has the migration capability {} on, which changes the stream format escdr "
              "relays; turn it off{}",
              req_.vm, name,
              compression ? ": escdr compresses and deduplicates on the wire itself, on by "
                            "default (escdr migrate --compress zstd[:LEVEL]|lz4, --codec-threads, "
                            "--dedup-budget)"
                          : ""));
        }
      }
    }
  }
  if (req_.escdr) {
    auto content = CatalogContent::Load(agent_.inventory(), vm_.kind);
    if (content.has_value()) {
      content_ = std::move(*content);
    } else if (content.error().code() == StatusCode::kNotFound) {
      note_ = fmt::format("no catalog for {}: nothing elided", vm_.kind.ToString());
    } else {
      note_ = fmt::format("catalog unusable ({}): nothing elided", content.error().message());
      spdlog::warn("agent {}: {}", agent_.host(), note_);
    }
  } else {
    note_ = "--no-escdr: nothing elided";
  }
  return CancelledStatus();
}

Status OutgoingMigration::Connect() {
  auto tcp = ConnectToAgent(agent_, dest_host_, dest_address_, Deadline::After(kConnectTimeout));
  if (!tcp.has_value()) return tcp.error();
  {
    std::lock_guard<std::mutex> lock(mu_);
    peer_ = std::make_shared<CountingConnection>(std::move(*tcp), counters_);
    if (cancelled_) peer_->Shutdown();
  }
  json request = {{"version", kControlVersion},    {"op", "migrate_in"},
                  {"vm", req_.vm},                 {"migration_id", req_.migration_id},
                  {"source_host", agent_.host()},  {"keep_paused", req_.keep_paused}};
  const Deadline deadline =
      Deadline::After(agent_.options().qemu_start_timeout + std::chrono::seconds(60));
  migrate_in_sent_ = true;
  const std::string peer = fmt::format("the destination agent at {}", dest_address_);
  ESCDR_RETURN_IF_ERROR(WriteControlFrame(*peer_, ControlFrameType::kRequest, request, deadline)
                            .WithContext(fmt::format("cannot send migrate_in to {}", peer)));
  ESCDR_ASSIGN_OR_RETURN(ControlFrame reply, ReadControlFrame(*peer_, peer, deadline));
  Status s = ReplyStatus(reply.body);
  if (!s.ok()) return Status(s.code(), fmt::format("{} refused the migration: {}", peer, s.message()));
  if (auto it = reply.body.find("vm"); it != reply.body.end() && it->is_object()) {
    dest_vm_ = VmInfo::FromJson(*it);
  }
  donor_ = StringOr(reply.body, "donor");
  if (std::string note = StringOr(reply.body, "note"); !note.empty() && note_.empty()) note_ = note;
  return CancelledStatus();
}

Status OutgoingMigration::Prepare() {
  SourceParams params;
  params.vm_name = req_.vm;
  params.kind = vm_.kind;
  params.migration_id = static_cast<std::uint64_t>(req_.migration_id);
  ESCDR_ASSIGN_OR_RETURN(SourceOptions options, SourceOptionsFor(req_, content_ != nullptr));
  std::shared_ptr<wire::Connection> peer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    peer = peer_;
  }
  auto session = SourceSession::Connect(std::make_unique<SharedConnection>(peer),
                                        req_.escdr ? content_.get() : nullptr, params, options);
  if (!session.has_value()) return session.error();
  std::lock_guard<std::mutex> lock(mu_);
  session_ = std::move(*session);
  if (cancelled_) session_->Cancel(cancel_reason_);
  if (content_ != nullptr && session_->available_entries() == 0 && note_.empty()) {
    note_ = donor_.empty() ? fmt::format("no donor of {} on {}: nothing elided",
                                         vm_.kind.ToString(), dest_host_)
                           : "the donor offered no catalog content: nothing elided";
  }
  return cancelled_ ? Status::Aborted("migration cancelled: " + cancel_reason_) : Status::OK();
}

Result<std::unique_ptr<wire::Connection>> OutgoingMigration::Setup() {
  // Every capability and parameter is set each time: a source QEMU keeps
  // what an earlier (failed) migration set.
  ESCDR_RETURN_IF_ERROR(SetMigrationCapabilities(
      qmp(), {{"return-path", true}, {"auto-converge", req_.auto_converge}}));
  ESCDR_RETURN_IF_ERROR(SetMigrationParameters(
      qmp(), {{"max-bandwidth", kQemuUncapped},
              {"downtime-limit", req_.downtime_limit_ms > 0 ? req_.downtime_limit_ms
                                                            : kDefaultDowntimeLimitMs}}));
  const std::string path = agent_.OutgoingSocket(req_.vm);
  ::unlink(path.c_str());
  ESCDR_ASSIGN_OR_RETURN(UniqueFd listener, ListenUnix(path, 1));
  Status s = Migrate(qmp(), "unix:" + path);
  if (!s.ok()) {
    ::unlink(path.c_str());
    return Err(s.WithContext("the source QEMU refused to migrate"));
  }
  qemu_migrating_ = true;
  // Accept in slices so a cancel or a QEMU that gave up is noticed.
  const Deadline deadline = Deadline::After(std::chrono::seconds(60));
  Result<UniqueFd> accepted = Err(Status::Timeout("not yet"));
  while (!deadline.Expired()) {
    accepted = AcceptUnix(listener.get(), milliseconds(200));
    if (accepted.has_value() || accepted.error().code() != StatusCode::kTimeout) break;
    if (Status c = CancelledStatus(); !c.ok()) {
      accepted = Err(c);
      break;
    }
    auto info = QueryMigrate(qmp());
    if (info.has_value() && info->finished()) {
      accepted = Err(Status::Aborted(fmt::format(
          "the source QEMU ended its migration ({}) before connecting: {}", info->status,
          info->error_desc)));
      break;
    }
  }
  ::unlink(path.c_str());
  if (!accepted.has_value()) return Err(accepted.error());
  return wire::WrapSocket(std::move(*accepted), "unix " + path);
}

Result<MigrationReport> OutgoingMigration::Stream(std::unique_ptr<wire::Connection> qemu) {
  SourceSession* session;
  {
    std::lock_guard<std::mutex> lock(mu_);
    session = session_.get();
  }
  // Run() returns only after Cancel() (if any) has taken effect; session_
  // is never reset while it runs.
  return session->Run(std::move(qemu));
}

Result<MigrationInfo> OutgoingMigration::Finish() {
  auto info = WaitForMigration(qmp(), std::chrono::seconds(60));
  if (!info.has_value()) return Err(info.error().WithContext("the source QEMU did not complete"));
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    last_info_ = *info;
  }
  return info;
}

Status OutgoingMigration::Commit() {
  AgentClient dest(dest_address_, std::chrono::seconds(60), agent_.tls(), dest_host_);
  auto reply = dest.Call("commit_in", {{"vm", req_.vm},
                                       {"migration_id", req_.migration_id},
                                       {"resume", !req_.keep_paused && was_running_}});
  if (!reply.has_value()) {
    return reply.error().WithContext(
        fmt::format("the destination agent at {} did not take over the VM", dest_address_));
  }
  if (auto it = reply->find("vm"); it != reply->end() && it->is_object()) {
    dest_vm_ = VmInfo::FromJson(*it);
  }
  return Status::OK();
}

Status OutgoingMigration::Recover(const Status& cause, OutPhase failed_in) {
  SetPhase(OutPhase::kRecovering);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (session_) session_->Cancel(cause.message());
    if (peer_) peer_->Shutdown();
  }
  std::string qemu_detail;
  if (qemu_migrating_) {
    (void)MigrateCancel(qmp());
    // QEMU fails or cancels its migration once the socket is gone; wait for it.
    const Deadline deadline = Deadline::After(std::chrono::seconds(30));
    while (!deadline.Expired()) {
      auto info = QueryMigrate(qmp());
      if (!info.has_value() || info->finished() || info->status == "none") {
        if (info.has_value()) {
          std::lock_guard<std::mutex> lock(progress_mu_);
          if (last_info_.ram_total == 0 || info->ram_transferred > 0) last_info_ = *info;
        }
        break;
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    std::lock_guard<std::mutex> lock(progress_mu_);
    if (last_info_.ram_total > 0 && failed_in <= OutPhase::kIterating) {
      qemu_detail = fmt::format(" (QEMU had sent {} of {} RAM)", Mib(last_info_.ram_transferred),
                                Mib(last_info_.ram_total));
    }
  }
  // The VM must run where it was. QEMU resumes it itself after a failed
  // migration if it was running; make sure of it.
  std::string outcome;
  if (entry_ && entry_->proc && entry_->proc->Alive() && entry_->proc->has_qmp()) {
    auto st = QueryStatus(qmp());
    if (st.has_value() && was_running_ && *st != "running") {
      Status c = Cont(qmp());
      if (c.ok()) st = QueryStatus(qmp());
    }
    if (st.has_value() && (*st == "running" || (!was_running_ && *st == "paused"))) {
      outcome = fmt::format("VM {} keeps running on {}", req_.vm, agent_.host());
      if (!was_running_) outcome = fmt::format("VM {} stays paused on {}", req_.vm, agent_.host());
    } else {
      outcome = fmt::format("VM {} could NOT be resumed on {} (QEMU state {})", req_.vm,
                            agent_.host(), st.has_value() ? *st : st.error().message());
    }
  } else if (entry_) {
    outcome = fmt::format("VM {}'s QEMU on {} is gone", req_.vm, agent_.host());
  }
  if (entry_) agent_.ReleaseVm(entry_);
  if (migrate_in_sent_) {
    // The destination drops its QEMU by itself when its session fails; this
    // also covers a destination whose session succeeded before we failed.
    AgentClient dest(dest_address_, std::chrono::seconds(5), agent_.tls(), dest_host_);
    auto r = dest.Call("abort_in", {{"vm", req_.vm}, {"migration_id", req_.migration_id}});
    if (!r.has_value() && r.error().code() != StatusCode::kUnavailable) {
      spdlog::warn("agent {}: abort_in to {}: {}", agent_.host(), dest_address_, r.error().ToString());
    }
  }
  SetPhase(OutPhase::kFailed);
  std::string phase = OutPhaseName(failed_in);
  if (failed_in == OutPhase::kIterating) {
    std::lock_guard<std::mutex> lock(progress_mu_);
    if (last_info_.status == "device" || last_info_.status == "pre-switchover") phase = "stop-and-copy";
  }
  // A broken connection is the usual way a dead destination agent or a cut
  // network shows; say so before the socket-level detail.
  std::string what = cause.message();
  if ((cause.code() == StatusCode::kUnavailable || cause.code() == StatusCode::kTimeout) &&
      !what.starts_with("destination reported") && failed_in >= OutPhase::kPreparing &&
      failed_in <= OutPhase::kFinishing) {
    what = "lost the connection to the destination agent: " + what;
  }
  Status out(cause.code(),
             fmt::format("migration of VM {} from {} to {} (agent {}) failed in the {} phase{}: {}; {}",
                         req_.vm, agent_.host(), dest_host_, dest_address_, phase, qemu_detail,
                         what, outcome));
  spdlog::warn("agent {}: {}", agent_.host(), out.message());
  return out;
}

MigrationProgress OutgoingMigration::Progress() {
  MigrationProgress p;
  const OutPhase phase = phase_.load();
  p.phase = OutPhaseName(phase);
  p.elapsed_s = SecondsSince(start_);
  p.wire_bytes_sent = counters_->written.load();
  p.wire_bytes_received = counters_->read.load();
  if (phase >= OutPhase::kSetup && phase <= OutPhase::kFinishing && entry_ && entry_->proc &&
      entry_->proc->has_qmp()) {
    auto reply = qmp().Execute("query-migrate", nullptr, kQmpQuick);
    if (reply.has_value()) {
      auto info = ParseMigrationInfo(*reply);
      if (info.has_value()) {
        std::lock_guard<std::mutex> lock(progress_mu_);
        last_info_ = *info;
        max_throttle_ = std::max(max_throttle_, info->cpu_throttle_percentage);
      }
    }
  }
  std::lock_guard<std::mutex> lock(progress_mu_);
  p.qemu_status = last_info_.status;
  p.ram_transferred = last_info_.ram_transferred;
  p.ram_total = last_info_.ram_total;
  p.ram_remaining = last_info_.ram_remaining;
  p.normal_pages = last_info_.ram_normal;
  p.zero_pages = last_info_.ram_duplicate;
  p.dirty_sync_count = last_info_.ram_dirty_sync_count;
  if (phase == OutPhase::kIterating &&
      (last_info_.status == "device" || last_info_.status == "pre-switchover")) {
    p.phase = "stop-and-copy";
  }
  return p;
}

// ---- shared with the libvirt carrier (libvirt_vms.cc) ----

Result<std::unique_ptr<wire::Connection>> ConnectToAgent(const Agent::Impl& agent,
                                                         const std::string& host,
                                                         const std::string& address,
                                                         Deadline deadline) {
  ESCDR_ASSIGN_OR_RETURN(auto hp, ParseAgentAddress(address));
  auto tcp = wire::ConnectTcp(hp.first, hp.second, deadline);
  if (!tcp.has_value()) {
    return Err(Status(tcp.error().code(), fmt::format("cannot reach the destination agent at {}: {}",
                                                      address, tcp.error().message())));
  }
  if (const auto& tls = agent.tls()) {
    // This agent's own credentials; the destination's certificate must name
    // the destination host.
    auto secure = tls->Connect(std::move(*tcp), deadline, host);
    if (!secure.has_value()) {
      return Err(Status(secure.error().code(),
                        fmt::format("cannot reach the destination agent {} at {}: {}", host,
                                    address, secure.error().message())));
    }
    return std::unique_ptr<wire::Connection>(std::move(*secure));
  }
  return std::move(*tcp);
}

Result<SourceOptions> SourceOptionsFor(const MigrateOutRequest& req, bool elide) {
  SourceOptions options;

  options.wire_rate = req.max_bandwidth > 0 ? req.max_bandwidth : kDefaultMaxBandwidth;
  // The stream in flight is what is left to cross the wire when QEMU stops
  // the VM: at most 100 ms of the capped rate, even uncompressed (8 MiB at
  // the default 128 MiB/s; two reads at the least).
  options.max_stream_in_flight = std::clamp<std::uint64_t>(
      options.wire_rate / 10, 2 * std::uint64_t{options.qemu_read_chunk},
      options.max_stream_in_flight);
  // The references in flight are bounded by the budget (each stands for a
  // page of stream), so a window of twice the budget's pages rarely fills;
  // it is mapped and touched once per agent (PageRing's cache), 16 MiB at
  // the default budget instead of 64.
  options.window_pages =
      req.window_pages > 0
          ? req.window_pages
          : static_cast<std::uint32_t>(std::clamp<std::uint64_t>(
                2 * options.max_stream_in_flight / kPageSize, 1024, options.window_pages));
  if (!req.escdr || !elide) options.window_pages = 0;
  if (req.escdr) {
    ESCDR_ASSIGN_OR_RETURN(options.codec, wire::ParseCodecSpec(req.compress.empty()
                                                                   ? wire::CodecSpec{}.ToString()
                                                                   : req.compress));
    if (req.codec_threads > 0) options.codec_threads = req.codec_threads;
    options.dedup_pages = static_cast<std::uint32_t>(req.dedup_budget / kPageSize);
  } else {
    // --no-escdr: the baseline, every byte as QEMU wrote it.
    options.codec = wire::CodecSpec{wire::Codec::kNone, 0};
    options.dedup_pages = 0;
  }
  return options;
}

// ---- the control connection of a migrate_out ----

void ServeMigrateOut(Agent::Impl& agent, wire::Connection& conn, const json& request) {
  const Deadline reply_deadline = Deadline::After(std::chrono::seconds(30));
  auto req = MigrateOutRequest::FromJson(request);
  if (!req.has_value()) {
    (void)WriteControlFrame(conn, ControlFrameType::kReply, ErrorReply(req.error()), reply_deadline);
    return;
  }
  if (agent.stopping()) {
    (void)WriteControlFrame(conn, ControlFrameType::kReply,
                            ErrorReply(Status::Unavailable("the agent is shutting down")),
                            reply_deadline);
    return;
  }
  auto migration = std::make_shared<OutgoingMigration>(agent, *req);
  agent.RegisterMigration(migration);

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Result<MigrateOutResult> result = Err(Status::Internal("migration did not run"));
  std::thread worker([&] {
    auto r = migration->Execute();
    std::lock_guard<std::mutex> lock(mu);
    result = std::move(r);
    done = true;
    cv.notify_all();
  });
  // Cancel requests (or the client going away) arrive while we stream events.
  std::thread reader([&] {
    auto f = ReadControlFrame(conn, "the client", Deadline::Never());
    {
      std::lock_guard<std::mutex> lock(mu);
      if (done) return;
    }
    if (f.has_value() && StringOr(f->body, "op") == "cancel") {
      migration->Cancel("cancelled by the client");
    } else {
      migration->Cancel("the client closed its control connection");
    }
  });

  const auto start = MonotonicClock::now();
  bool client_gone = false;
  std::unique_lock<std::mutex> lock(mu);
  while (!done) {
    cv.wait_for(lock, milliseconds(250));
    if (done) break;
    lock.unlock();
    if (MonotonicClock::now() - start > req->timeout) {
      migration->Cancel(fmt::format("timed out after {} s", req->timeout.count()));
    }
    if (!client_gone) {
      Status s = WriteControlFrame(conn, ControlFrameType::kEvent, migration->Progress().ToJson(),
                                   Deadline::After(std::chrono::seconds(10)));
      if (!s.ok()) {
        client_gone = true;
        migration->Cancel("cannot send progress to the client");
      }
    }
    lock.lock();
  }
  lock.unlock();
  worker.join();
  json body = result.has_value() ? OkReply(result->ToJson()) : ErrorReply(result.error());
  if (!client_gone) {
    (void)WriteControlFrame(conn, ControlFrameType::kReply, body,
                            Deadline::After(std::chrono::seconds(10)));
  }
  conn.Shutdown();
  reader.join();
  agent.UnregisterMigration(migration.get());
}

}  // namespace escdr::agent
