// The destination side of a migration: one explicit state machine per
// migration.
//
//   StartingQemu -> AwaitPrepare -> Scanning -> Streaming -> AwaitCommit -> Done
//   any state before Done --failure/cancel/abort_in--> Failed
//
// StartingQemu (on migrate_in): the inventory's migration names this VM and
//   this host as destination; QEMU starts from the VM's launch spec with
//   -incoming defer and -S (paused until the source commits), and listens on
//   a local socket (migrate-incoming). A donor is picked. AwaitPrepare: the
//   connection now carries the wire protocol; Hello and Prepare arrive.
//   Scanning: the donor's RAM is hashed against the catalog, Availability
//   sent. Streaming: DestinationSession::Run rebuilds the stream into QEMU.
//   AwaitCommit: QEMU has loaded everything and waits paused; commit_in from
//   the source agent resumes it and makes it this host's VM. Failed: the
//   destination QEMU is killed and its files removed.
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/agent_impl.h"
#include "agent/catalog_content.h"
#include "agent/connections.h"
#include "agent/json_util.h"
#include "escdr/agent/control_protocol.h"
#include "escdr/image/memory_image.h"
#include "escdr/migrate/destination_session.h"
#include "escdr/migrate/donor_scan.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/sys/unix_socket.h"
#include "escdr/wire/socket.h"

namespace escdr::agent {

using nlohmann::json;
using std::chrono::milliseconds;

namespace {

enum class InPhase { kStartingQemu, kAwaitPrepare, kScanning, kStreaming, kAwaitCommit, kDone, kFailed };

const char* InPhaseName(InPhase p) {
  switch (p) {
    case InPhase::kStartingQemu: return "starting-qemu";
    case InPhase::kAwaitPrepare: return "await-prepare";
    case InPhase::kScanning: return "scanning";
    case InPhase::kStreaming: return "streaming";
    case InPhase::kAwaitCommit: return "await-commit";
    case InPhase::kDone: return "done";
    case InPhase::kFailed: return "failed";
  }
  return "?";
}

// How long a loaded, paused destination waits for the source's commit_in.
constexpr std::chrono::seconds kCommitTimeout{60};
constexpr milliseconds kQmpQuick{3000};

}  // namespace

class IncomingMigration final : public ActiveMigration {
 public:
  IncomingMigration(Agent::Impl& agent, std::string vm, std::int64_t migration_id,
                    std::string source_host)
      : agent_(agent), vm_name_(std::move(vm)), id_(migration_id),
        source_host_(std::move(source_host)) {}

  const std::string& vm() const override { return vm_name_; }
  std::int64_t migration_id() const override { return id_; }

  json Describe() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return {{"vm", vm_name_},
            {"direction", "in"},
            {"migration_id", id_},
            {"phase", InPhaseName(phase_)},
            {"source", source_host_},
            {"donor", donor_name_},
            {"qemu_pid", qemu_pid_}};
  }

  void Cancel(const std::string& reason) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (phase_ == InPhase::kDone || phase_ == InPhase::kFailed || cancelled_) return;
    cancelled_ = true;
    cancel_reason_ = reason;
    if (session_) session_->Cancel(reason);
    if (peer_) peer_->Shutdown();
    cv_.notify_all();
  }

  // Handles commit_in: resumes the loaded QEMU (if `resume`) and makes it
  // this host's VM. FailedPrecondition unless QEMU waits for exactly that.
  Result<VmInfo> Commit(bool resume);

  // Runs the migration on the migrate_in connection.
  void Serve(std::unique_ptr<wire::Connection> conn);

 private:
  Status StartQemu();
  Result<MigrationReport> Receive();
  Status AwaitCommit();
  void Fail(const Status& cause);
  void SetPhase(InPhase p) {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = p;
    cv_.notify_all();
  }
  Status CancelledStatus() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_ ? Status::Aborted("migration cancelled: " + cancel_reason_) : Status::OK();
  }
  Status HoldAfterScan();

  Agent::Impl& agent_;
  const std::string vm_name_;
  const std::int64_t id_;
  const std::string source_host_;

  Vm vm_;
  std::shared_ptr<VmEntry> entry_;
  std::shared_ptr<VmEntry> donor_;
  std::unique_ptr<MemoryImage> donor_image_;
  std::unique_ptr<CatalogContent> content_;
  std::string note_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  InPhase phase_ = InPhase::kStartingQemu;
  bool cancelled_ = false;
  std::string cancel_reason_;
  bool committed_ = false;
  std::string donor_name_;
  pid_t qemu_pid_ = 0;
  std::shared_ptr<wire::Connection> peer_;
  std::unique_ptr<DestinationSession> session_;
};

Status IncomingMigration::StartQemu() {
  Inventory& inv = agent_.inventory();
  ESCDR_ASSIGN_OR_RETURN(Migration m, inv.GetMigration(id_));
  if (m.vm != vm_name_ || m.destination != agent_.host() ||
      m.outcome != MigrationOutcome::kInProgress) {
    return Status::FailedPrecondition(fmt::format(
        "inventory migration {} is of VM {} to {} ({}), not an open migration of {} to {}", m.id,
        m.vm, m.destination, MigrationOutcomeName(m.outcome), vm_name_, agent_.host()));
  }
  ESCDR_ASSIGN_OR_RETURN(vm_, inv.GetVm(vm_name_));
  VmRecord rec;
  rec.name = vm_name_;
  rec.role = VmRole::kIncoming;
  rec.kind = vm_.kind;
  rec.migration_id = id_;
  ESCDR_ASSIGN_OR_RETURN(rec.spec, agent_.LocalLaunchSpec(vm_, m.qemu_version));
  rec.spec.incoming = "defer";
  rec.spec.start_paused = true;  // resumed by commit_in only
  rec.pidfile = agent_.PidFile(vm_name_);
  rec.qemu_log = agent_.QemuLog(vm_name_);
  ESCDR_ASSIGN_OR_RETURN(entry_, agent_.ReserveVm(rec, "incoming migration from " + source_host_));
  ESCDR_RETURN_IF_ERROR(agent_.LaunchReserved(entry_).WithContext(
      fmt::format("cannot start the destination QEMU of {}", vm_name_)));
  {
    std::lock_guard<std::mutex> lock(mu_);
    qemu_pid_ = entry_->record.pid;
  }
  const std::string sock = agent_.IncomingSocket(vm_name_);
  ::unlink(sock.c_str());
  ESCDR_RETURN_IF_ERROR(MigrateIncoming(entry_->proc->qmp(), "unix:" + sock)
                            .WithContext("the destination QEMU refused migrate-incoming"));

  std::string preferred = m.donor;
  donor_ = agent_.PickDonor(vm_.kind, vm_name_, preferred);
  if (donor_) {
    auto image = OpenRamFile(donor_->record.spec.ram_path);
    if (image.has_value()) {
      donor_image_ = std::move(*image);
      std::lock_guard<std::mutex> lock(mu_);
      donor_name_ = donor_->record.name;
    } else {
      note_ = fmt::format("donor {} unreadable ({}): nothing elided", donor_->record.name,
                          image.error().message());
      donor_.reset();
    }
  } else {
    note_ = fmt::format("no running donor of {} on {}: nothing elided", vm_.kind.ToString(),
                        agent_.host());
  }
  return CancelledStatus();
}

Status IncomingMigration::HoldAfterScan() {
  const std::string& dir = agent_.hold_after_scan_dir();
  if (dir.empty()) return Status::OK();
  json info = {{"vm", vm_name_},
               {"donor", donor_name_},
               {"donor_ram_path", donor_ ? donor_->record.spec.ram_path : ""}};
  ESCDR_RETURN_IF_ERROR(WriteStringToFile(fmt::format("{}/{}.scanned", dir, vm_name_), info.dump()));
  const std::string release = fmt::format("{}/{}.release", dir, vm_name_);
  const Deadline deadline = Deadline::After(std::chrono::seconds(300));
  while (!std::filesystem::exists(release)) {
    ESCDR_RETURN_IF_ERROR(CancelledStatus());
    if (deadline.Expired()) return Status::Timeout("test hold after scan was never released");
    std::this_thread::sleep_for(milliseconds(20));
  }
  return Status::OK();
}

Result<MigrationReport> IncomingMigration::Receive() {
  SetPhase(InPhase::kAwaitPrepare);
  std::shared_ptr<wire::Connection> peer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    peer = peer_;
  }
  auto accepted = DestinationSession::Accept(std::make_unique<SharedConnection>(peer));
  if (!accepted.has_value()) return Err(accepted.error());
  {
    std::lock_guard<std::mutex> lock(mu_);
    session_ = std::move(*accepted);
    if (cancelled_) session_->Cancel(cancel_reason_);
  }
  ESCDR_RETURN_IF_ERROR(CancelledStatus());
  const wire::Prepare& prep = session_->prepare();
  if (prep.vm_name != vm_name_ || !(prep.kind == vm_.kind)) {
    Status s = Status::FailedPrecondition(fmt::format(
        "the source announced VM {} of {}, but migrate_in was for {} of {}", prep.vm_name,
        prep.kind.ToString(), vm_name_, vm_.kind.ToString()));
    (void)session_->Reject(s);
    return Err(s);
  }

  SetPhase(InPhase::kScanning);
  ESCDR_RETURN_IF_ERROR(OfferDonor(agent_, *session_, vm_.kind, donor_image_.get(), donor_name_,
                                   [this] { return HoldAfterScan(); }, content_, note_));

  SetPhase(InPhase::kStreaming);
  const std::string sock = agent_.IncomingSocket(vm_name_);
  VmProcess* proc = entry_->proc.get();
  auto fd = ConnectUnix(sock, std::chrono::seconds(30), [proc]() -> Status {
    return proc->Alive() ? Status::OK() : Status::Aborted("the destination QEMU exited");
  });
  ::unlink(sock.c_str());
  if (!fd.has_value()) {
    return Err(fd.error().WithContext("cannot connect to the destination QEMU's incoming socket"));
  }
  ESCDR_ASSIGN_OR_RETURN(auto qemu, wire::WrapSocket(std::move(*fd), "unix " + sock));
  auto report = session_->Run(std::move(qemu));
  if (!report.has_value()) {
    Status s = report.error();
    if (!entry_->proc->Alive()) {
      s = s.WithContext(fmt::format("the destination QEMU (pid {}) exited", entry_->record.pid));
    }
    return Err(s);
  }
  return report;
}

Status IncomingMigration::AwaitCommit() {
  // QEMU finishes loading before it sends SHUT and closes the socket, so it
  // has left "inmigrate" by now or very soon.
  QmpClient& qmp = entry_->proc->qmp();
  const Deadline deadline = Deadline::After(std::chrono::seconds(30));
  std::string status;
  for (;;) {
    auto st = qmp.Execute("query-status", nullptr, kQmpQuick);
    if (!st.has_value()) return st.error().WithContext("the destination QEMU does not answer");
    status = StringOr(*st, "status");
    if (status != "inmigrate") break;
    if (deadline.Expired()) return Status::Timeout("the destination QEMU is still loading");
    std::this_thread::sleep_for(milliseconds(20));
  }
  if (status != "paused" && status != "prelaunch") {
    return Status::Aborted(fmt::format("the destination QEMU ended in state {} after loading", status));
  }
  std::unique_lock<std::mutex> lock(mu_);
  phase_ = InPhase::kAwaitCommit;
  cv_.notify_all();
  if (!cv_.wait_for(lock, kCommitTimeout, [&] { return committed_ || cancelled_; })) {
    return Status::Timeout(fmt::format("the source agent did not commit within {} s",
                                       kCommitTimeout.count()));
  }
  if (!committed_) return Status::Aborted("migration cancelled: " + cancel_reason_);
  phase_ = InPhase::kDone;
  return Status::OK();
}

Result<VmInfo> IncomingMigration::Commit(bool resume) {
  std::unique_lock<std::mutex> lock(mu_);
  // The source may commit while this side is still checking QEMU after Run().
  cv_.wait_for(lock, std::chrono::seconds(30), [&] {
    return phase_ == InPhase::kAwaitCommit || phase_ == InPhase::kFailed ||
           phase_ == InPhase::kDone || cancelled_;
  });
  if (phase_ != InPhase::kAwaitCommit || cancelled_) {
    return Err(Status::FailedPrecondition(fmt::format(
        "the incoming migration of {} is in phase {}, not waiting for a commit", vm_name_,
        InPhaseName(phase_))));
  }
  // Resume first: if that fails, the VM must not become ours (the source
  // then resumes its own copy).
  if (resume) {
    Status s = Cont(entry_->proc->qmp());
    if (!s.ok()) {
      cancelled_ = true;
      cancel_reason_ = "cannot resume the destination QEMU: " + s.message();
      cv_.notify_all();
      return Err(s.WithContext("cannot resume the destination QEMU"));
    }
  }
  Status s = agent_.SetRole(entry_, VmRole::kRunning, 0);
  if (!s.ok()) spdlog::error("agent {}: {}", agent_.host(), s.ToString());
  committed_ = true;
  cv_.notify_all();
  lock.unlock();
  return agent_.Describe(entry_, true);
}

void IncomingMigration::Fail(const Status& cause) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = InPhase::kFailed;
    cv_.notify_all();
    if (session_) session_->Cancel(cause.message());
    if (peer_) peer_->Shutdown();
  }
  if (entry_) {
    Status s = agent_.DestroyVm(entry_, /*graceful=*/false);
    if (!s.ok()) spdlog::error("agent {}: {}", agent_.host(), s.ToString());
  }
  const std::string sock = agent_.IncomingSocket(vm_name_);
  ::unlink(sock.c_str());
  spdlog::warn("agent {}: incoming migration of {} from {} failed; destination QEMU removed: {}",
               agent_.host(), vm_name_, source_host_, cause.ToString());
}

void IncomingMigration::Serve(std::unique_ptr<wire::Connection> conn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    peer_ = std::shared_ptr<wire::Connection>(std::move(conn));
  }
  Status s = StartQemu();
  json reply;
  if (s.ok()) {
    reply = OkReply({{"vm", agent_.Describe(entry_, false).ToJson()},
                     {"donor", donor_name_},
                     {"note", note_}});
  } else {
    reply = ErrorReply(s);
  }
  Status w = WriteControlFrame(*peer_, ControlFrameType::kReply, reply,
                               Deadline::After(std::chrono::seconds(30)));
  if (s.ok() && !w.ok()) s = w.WithContext("cannot answer migrate_in");
  if (!s.ok()) {
    Fail(s);
    return;
  }
  auto report = Receive();
  if (!report.has_value()) {
    Fail(report.error());
    return;
  }
  s = AwaitCommit();
  if (!s.ok()) {
    Fail(s);
    return;
  }
  agent_.ReleaseVm(entry_);
  spdlog::info("agent {}: received VM {} from {} (donor {}): {}", agent_.host(), vm_name_,
               source_host_, donor_name_.empty() ? "none" : donor_name_, report->Summary());
}

// ---- shared with the libvirt carrier (libvirt_vms.cc) ----

Status OfferDonor(Agent::Impl& agent, DestinationSession& session, const VmKind& kind,
                  const MemoryImage* donor_image, const std::string& donor_name,
                  const std::function<Status()>& after_scan,
                  std::unique_ptr<CatalogContent>& content_out, std::string& note) {
  const wire::Prepare& prep = session.prepare();
  if (prep.catalog_entries > 0 && donor_image != nullptr) {
    auto content = CatalogContent::Load(agent.inventory(), kind);
    if (!content.has_value()) {
      note = fmt::format("no usable catalog of {} here ({}): nothing elided", kind.ToString(),
                         content.error().message());
    } else if ((*content)->checksum() != prep.catalog_checksum ||
               (*content)->size() != prep.catalog_entries) {
      note = fmt::format("the source's catalog of {} ({:016x}) differs from the inventory's "
                         "({:016x}): nothing elided",
                         kind.ToString(), prep.catalog_checksum, (*content)->checksum());
    } else {
      content_out = std::move(*content);
      ESCDR_ASSIGN_OR_RETURN(DonorAvailability scan, ScanDonor(*donor_image, *content_out));
      spdlog::info("agent {}: donor {} holds {} of {} catalog entries ({} pages scanned in {} ms)",
                   agent.host(), donor_name, scan.available, scan.catalog_entries,
                   scan.pages_scanned, scan.scan_time.count() / 1000);
      if (after_scan) ESCDR_RETURN_IF_ERROR(after_scan());
      return session.OfferScanned(content_out.get(), donor_image, std::move(scan));
    }
  }
  if (!note.empty() && prep.catalog_entries > 0) {
    spdlog::info("agent {}: migration of {}: {}", agent.host(), prep.vm_name, note);
  }
  return session.Offer(nullptr, nullptr);
}

void ServeMigrateIn(Agent::Impl& agent, std::unique_ptr<wire::Connection> conn,
                    const json& request) {
  auto vm = RequiredJsonString(request, "vm");
  auto id = JsonI64(request, "migration_id");
  auto source = JsonString(request, "source_host", "?");
  Status bad;
  if (!vm.has_value()) bad = vm.error();
  else if (!id.has_value()) bad = id.error();
  else if (!source.has_value()) bad = source.error();
  else if (*id <= 0) bad = Status::InvalidArgument("migrate_in needs the inventory's migration_id");
  else if (agent.stopping()) bad = Status::Unavailable("the agent is shutting down");
  if (bad.ok()) bad = ValidateLocalName("VM", *vm);
  if (!bad.ok()) {
    (void)WriteControlFrame(*conn, ControlFrameType::kReply, ErrorReply(bad),
                            Deadline::After(std::chrono::seconds(10)));
    return;
  }
  auto migration = std::make_shared<IncomingMigration>(agent, *vm, *id, *source);
  agent.RegisterMigration(migration);
  migration->Serve(std::move(conn));
  agent.UnregisterMigration(migration.get());
}

Result<json> CommitIncoming(Agent::Impl& agent, const json& request) {
  ESCDR_ASSIGN_OR_RETURN(std::string vm, RequiredJsonString(request, "vm"));
  ESCDR_ASSIGN_OR_RETURN(std::int64_t id, JsonI64(request, "migration_id"));
  ESCDR_ASSIGN_OR_RETURN(bool resume, JsonBool(request, "resume", true));
  auto m = std::dynamic_pointer_cast<IncomingMigration>(agent.FindMigration(vm, id));
  if (!m) {
    return Err(Status::NotFound(fmt::format("agent {} has no incoming migration {} of VM {}",
                                            agent.host(), id, vm)));
  }
  ESCDR_ASSIGN_OR_RETURN(VmInfo info, m->Commit(resume));
  return json{{"vm", info.ToJson()}};
}

Result<json> AbortIncoming(Agent::Impl& agent, const json& request) {
  ESCDR_ASSIGN_OR_RETURN(std::string vm, RequiredJsonString(request, "vm"));
  ESCDR_ASSIGN_OR_RETURN(std::int64_t id, JsonI64(request, "migration_id"));
  auto m = std::dynamic_pointer_cast<IncomingMigration>(agent.FindMigration(vm, id));
  if (m) m->Cancel("the source agent aborted the migration");
  return json{{"vm", vm}, {"found", m != nullptr}};
}

}  // namespace escdr::agent
