#include "escdr/agent/agent.h"

#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "agent/agent_impl.h"
#include "agent/connections.h"
#include "agent/interrupted_migration.h"
#include "agent/json_util.h"
#include "agent/libvirt_vms.h"
#include "agent/vm_backend.h"
#include "escdr/agent/control_protocol.h"
#include "escdr/migrate/destination_session.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/unique_fd.h"
#include "escdr/wire/format.h"

namespace escdr::agent {

using nlohmann::json;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kFirstFrameTimeout{10000};
constexpr milliseconds kReplyTimeout{30000};
constexpr milliseconds kQuickQmp{3000};

Status MakeDir(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Status::IOError(fmt::format("cannot create directory {}: {}", path, ec.message()));
  return Status::OK();
}

void UnlinkQuietly(const std::string& path) {
  if (!path.empty()) ::unlink(path.c_str());
}

// The inventory's launch spec JSON with `machine` as its machine type: the
// canonical name a started VM keeps for its migrations ("pc-i440fx-7.2",
// not "pc", which means another machine in another QEMU version).
std::string CanonicalLaunchJson(const std::string& launch_json, const std::string& machine) {
  json j = json::parse(launch_json, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return launch_json;  // LocalLaunchSpec parsed it already
  j["machine"] = machine;
  return j.dump();
}

}  // namespace

// ---- Agent (public) ----

void SetupAgentLogging(int verbosity) {
  auto logger = spdlog::stderr_color_mt("escdr-agent");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(verbosity > 0 ? spdlog::level::debug : spdlog::level::info);
}

Agent::Agent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Agent::~Agent() { impl_->Shutdown(); }

Result<std::unique_ptr<Agent>> Agent::Start(const AgentOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  ESCDR_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Agent>(new Agent(std::move(impl)));
}

const std::string& Agent::address() const { return impl_->address(); }
Status Agent::Run() { return impl_->Run(); }
void Agent::Shutdown() { impl_->Shutdown(); }
Status Agent::Reload() { return impl_->Reload(); }

// ---- start-up ----

Agent::Impl::~Impl() { Shutdown(); }

Status Agent::Impl::Init() {
  ESCDR_RETURN_IF_ERROR(ValidateLocalName("agent", options_.name));
  if (options_.state_dir.empty()) return Status::InvalidArgument("the agent needs a state directory");
  if (options_.inventory_url.empty()) return Status::InvalidArgument("the agent needs an inventory");
  if (options_.memory_mib == 0 || options_.vcpus == 0) {
    return Status::InvalidArgument("the agent's host needs a non-zero memory and vCPU capacity");
  }
  if (!options_.tls && !options_.insecure) {
    return Status::InvalidArgument(fmt::format(
        "agent {} has no TLS credentials: give --tls-dir DIR (with ca.crt, {}.crt and {}.key "
        "from `escdr ca`), --psk-file FILE (from `escdr ca psk`), or --insecure for plaintext",
        options_.name, options_.name, options_.name));
  }
  if (options_.tls && options_.insecure) {
    return Status::InvalidArgument(
        fmt::format("agent {}: --insecure and TLS credentials exclude each other", options_.name));
  }
  if (options_.handshake_timeout.count() <= 0 || options_.max_connections < 1 ||
      options_.max_unauthenticated < 1 || options_.max_unauthenticated_per_address < 1) {
    return Status::InvalidArgument(fmt::format(
        "agent {}: the handshake deadline and the connection limits must be positive",
        options_.name));
  }
  tls_ = options_.tls;
  gate_ = std::make_unique<ConnectionGate>(ConnectionGate::Limits{
      .per_address = options_.max_unauthenticated_per_address,
      .unauthenticated = options_.max_unauthenticated,
      .authenticated = options_.max_connections});
  vms_dir_ = options_.state_dir + "/vms";
  run_dir_ = options_.state_dir + "/run";
  logs_dir_ = options_.state_dir + "/logs";
  for (const std::string* d : {&vms_dir_, &run_dir_, &logs_dir_, &options_.ram_dir}) {
    ESCDR_RETURN_IF_ERROR(MakeDir(*d));
  }
  if (const char* hold = std::getenv("ESCDR_AGENT_TEST_HOLD_AFTER_SCAN"); hold && *hold) {
    hold_after_scan_dir_ = hold;
  }
  // Our QEMUs daemonize; as a subreaper we become their parent and reap them.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);

  ESCDR_ASSIGN_OR_RETURN(auto hp, ParseAgentAddress(options_.listen));
  auto listener = wire::TcpListener::Listen(hp.first, hp.second);
  if (!listener.has_value()) {
    return Err(listener.error().WithContext(fmt::format("agent {} cannot listen on {}",
                                                        options_.name, options_.listen)));
  }
  listener_.emplace(std::move(*listener));
  address_ = options_.advertise.empty() ? fmt::format("{}:{}", hp.first, listener_->port())
                                        : options_.advertise;

  ESCDR_RETURN_IF_ERROR(ProbeQemus());

  auto inv = OpenInventory(options_.inventory_url);
  if (!inv.has_value()) return Err(inv.error().WithContext(fmt::format("agent {}", options_.name)));
  inventory_ = std::move(*inv);
  HostSpec host;
  host.name = options_.name;
  host.agent_address = address_;
  host.rack = options_.rack;
  host.pod = options_.pod;
  host.memory_mib = options_.memory_mib;
  host.vcpus = options_.vcpus;
  for (const QemuInstall& q : qemus_) host.qemu_versions.push_back(q.version);
  auto registered = inventory_->RegisterHost(host);
  if (!registered.has_value()) {
    return Err(registered.error().WithContext(
        fmt::format("agent {} cannot register its host", options_.name)));
  }
  Recover();
  backends_.push_back(MakeLauncherVms(*this));
  if (!options_.libvirt_uri.empty()) {
    LibvirtVms::Options lv;
    lv.uri = options_.libvirt_uri;
    lv.socket_dir = options_.libvirt_socket_dir;
    lv.peer_uri = options_.libvirt_peer_uri;
    if (lv.peer_uri.empty()) lv.peer_uri = fmt::format("qemu+tcp://{}/system", hp.first);
    auto libvirt = LibvirtVms::Start(*this, lv);
    if (!libvirt.has_value()) {
      return Err(libvirt.error().WithContext(
          fmt::format("agent {} cannot use libvirt at {}", options_.name, options_.libvirt_uri)));
    }
    backends_.push_back(std::move(*libvirt));
  }
  monitor_ = std::thread([this] { MonitorLoop(); });
  resolver_ = std::thread([this] { ResolveInterruptedMigrations(*this); });
  spdlog::info("agent {} serving on {} (state {}, inventory {}, {})", options_.name, address_,
               options_.state_dir, RedactUrl(options_.inventory_url),
               tls_ ? "TLS 1.3 with " + tls_->description()
                            : std::string("PLAINTEXT: --insecure, no authentication"));
  return Status::OK();
}

Status Agent::Impl::ProbeQemus() {
  if (options_.qemu.empty()) {
    return Status::InvalidArgument(fmt::format("agent {}: no QEMU to run guests with", options_.name));
  }
  for (const std::string& path : options_.qemu) {
    auto q = ProbeQemuInstall(path);
    if (!q.has_value()) return Err(q.error().WithContext(fmt::format("agent {}", options_.name)));
    if (auto same = FindQemuSeries(qemus_, q->Series()); same.has_value()) {
      return Status::InvalidArgument(fmt::format(
          "agent {}: QEMU {} ({}) and {} ({}) are of one series; give one per series",
          options_.name, (*same)->version, (*same)->path, q->version, path));
    }
    spdlog::info("agent {}: QEMU {} from {} ({} machine types)", options_.name, q->version, path,
                 q->machines.size());
    qemus_.push_back(std::move(*q));
  }
  return Status::OK();
}

void Agent::Impl::Recover() {
  LoadedRecords loaded = ReadVmRecords(vms_dir_);
  for (const std::string& e : loaded.errors) spdlog::warn("agent {}: {}", options_.name, e);
  for (VmRecord& rec : loaded.records) {
    if (rec.role == VmRole::kIncoming) {
      // The migration that started it cannot go on without us.
      auto proc = VmProcess::Adopt(rec.pid, rec.spec.qmp_socket, false, milliseconds(0));
      if (proc.has_value()) {
        Status s = (*proc)->Kill();
        spdlog::warn("agent {}: killed stale incoming QEMU of {} (pid {}): {}", options_.name,
                     rec.name, rec.pid, s.ToString());
      }
      RemoveVmFiles(rec);
      UnlinkQuietly(IncomingSocket(rec.name));
      continue;
    }
    auto proc = VmProcess::Adopt(rec.pid, rec.spec.qmp_socket, true, options_.qemu_start_timeout);
    if (!proc.has_value() && proc.error().code() != StatusCode::kNotFound) {
      // Alive but QMP does not answer: keep it (never kill a guest on a hunch).
      proc = VmProcess::Adopt(rec.pid, rec.spec.qmp_socket, false, milliseconds(0));
      spdlog::error("agent {}: VM {} (pid {}) runs but its QMP socket does not answer", options_.name,
                    rec.name, rec.pid);
    }
    if (!proc.has_value()) {
      spdlog::warn("agent {}: VM {} (pid {}) is gone; removing its files", options_.name, rec.name,
                   rec.pid);
      RemoveVmFiles(rec);
      if (rec.role == VmRole::kRunning) MarkStoppedInInventory(rec.name);
      continue;
    }
    auto entry = std::make_shared<VmEntry>();
    entry->record = std::move(rec);
    entry->proc = std::move(*proc);
    spdlog::info("agent {}: adopted VM {} (pid {}, {})", options_.name, entry->record.name,
                 entry->record.pid, VmRoleName(entry->record.role));
    std::lock_guard<std::mutex> lock(mu_);
    vms_[entry->record.name] = std::move(entry);
  }
}

// ---- paths ----

std::string Agent::Impl::RamPath(const std::string& vm) const {
  return fmt::format("{}/escdr-{}-{}.ram", options_.ram_dir, options_.name, vm);
}
std::string Agent::Impl::QmpSocket(const std::string& vm) const {
  return fmt::format("{}/{}.qmp", run_dir_, vm);
}
std::string Agent::Impl::PidFile(const std::string& vm) const {
  return fmt::format("{}/{}.pid", run_dir_, vm);
}
std::string Agent::Impl::SerialLog(const std::string& vm) const {
  return fmt::format("{}/{}.serial.log", logs_dir_, vm);
}
std::string Agent::Impl::QemuLog(const std::string& vm) const {
  return fmt::format("{}/{}.qemu.log", logs_dir_, vm);
}
std::string Agent::Impl::OutgoingSocket(const std::string& vm) const {
  return fmt::format("{}/{}.out", run_dir_, vm);
}
std::string Agent::Impl::IncomingSocket(const std::string& vm) const {
  return fmt::format("{}/{}.in", run_dir_, vm);
}

Result<LaunchSpec> Agent::Impl::LocalLaunchSpec(const Vm& vm, std::string_view qemu_series) const {
  ESCDR_RETURN_IF_ERROR(ValidateLocalName("VM", vm.name));
  json j = json::parse(vm.launch_spec, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) {
    return Err(Status::InvalidArgument(
        fmt::format("the inventory's launch spec of VM {} is not a JSON object", vm.name)));
  }
  auto spec = LaunchSpecFromJson(j);
  if (!spec.has_value()) {
    return Err(spec.error().WithContext(fmt::format("launch spec of VM {}", vm.name)));
  }
  spec->name = vm.name;
  spec->memory_mib = vm.memory_mib;
  spec->vcpus = vm.vcpus;
  spec->ram_path = RamPath(vm.name);
  spec->qmp_socket = QmpSocket(vm.name);
  spec->serial_log = SerialLog(vm.name);
  spec->console_socket = spec->console ? fmt::format("{}/{}.console", run_dir_, vm.name) : "";
  // Ports "any free" in the inventory get this host's own (reported in VmInfo).
  ESCDR_RETURN_IF_ERROR(ResolveHostPorts(&*spec));
  spec->incoming.clear();
  spec->start_paused = false;
  const std::string series(qemu_series.empty() ? RunSeries(vm) : qemu_series);
  auto qemu = FindQemuSeries(qemus_, series);
  if (!qemu.has_value()) {
    return Err(Status::NotFound(fmt::format("VM {} needs QEMU {}, and host {} has {}", vm.name,
                                            series, options_.name, qemu.error().message())));
  }
  if (series != RunSeries(vm) && IsMachineAlias(**qemu, spec->machine)) {
    // "pc" in QEMU 10.0 is not the "pc" the VM was started as.
    return Err(Status::FailedPrecondition(fmt::format(
        "VM {} was started with machine type alias '{}', whose meaning differs between QEMU {} "
        "and {}; restart it with an agent of this version, which records the canonical name",
        vm.name, spec->machine, RunSeries(vm), series)));
  }
  ESCDR_RETURN_IF_ERROR(UseQemuInstall(**qemu, &*spec).WithContext(
      fmt::format("VM {} on host {}", vm.name, options_.name)));
  return std::move(*spec);
}

// ---- the VM table ----

Result<std::shared_ptr<VmEntry>> Agent::Impl::ReserveVm(const VmRecord& record,
                                                        const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vms_.find(record.name);
  if (it != vms_.end()) {
    const VmEntry& e = *it->second;
    return Err(Status::AlreadyExists(fmt::format(
        "agent {} already holds a QEMU for VM {} ({}{}{})", options_.name, record.name,
        VmRoleName(e.record.role), e.busy.empty() ? "" : ", ", e.busy)));
  }
  auto entry = std::make_shared<VmEntry>();
  entry->record = record;
  entry->busy = what;
  vms_[record.name] = entry;
  return entry;
}

Status Agent::Impl::LaunchReserved(const std::shared_ptr<VmEntry>& entry) {
  const VmRecord rec = entry->record;
  auto proc = VmProcess::Launch(rec.spec, rec.pidfile, rec.qemu_log, options_.qemu_start_timeout);
  if (!proc.has_value()) {
    std::lock_guard<std::mutex> lock(mu_);
    vms_.erase(rec.name);
    return proc.error();
  }
  const pid_t pid = (*proc)->pid();
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry->proc = std::move(*proc);
    entry->record.pid = pid;
  }
  Status s = WriteVmRecord(vms_dir_, entry->record);
  if (!s.ok()) {
    // Without a record a restarted agent would not know this QEMU.
    (void)DestroyVm(entry, false);
    return s.WithContext(fmt::format("cannot record VM {}", rec.name));
  }
  return Status::OK();
}

Result<std::shared_ptr<VmEntry>> Agent::Impl::AcquireVm(const std::string& name,
                                                        const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vms_.find(name);
  if (it == vms_.end()) {
    return Err(Status::NotFound(fmt::format("agent {} runs no VM {}", options_.name, name)));
  }
  if (!it->second->busy.empty()) {
    return Err(Status::FailedPrecondition(
        fmt::format("VM {} on {} is busy: {}", name, options_.name, it->second->busy)));
  }
  it->second->busy = what;
  return it->second;
}

void Agent::Impl::ReleaseVm(const std::shared_ptr<VmEntry>& entry) {
  std::lock_guard<std::mutex> lock(mu_);
  entry->busy.clear();
}

Status Agent::Impl::SetRole(const std::shared_ptr<VmEntry>& entry, VmRole role,
                            std::int64_t migration_id) {
  VmRecord rec;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry->record.role = role;
    entry->record.migration_id = migration_id;
    rec = entry->record;
  }
  return WriteVmRecord(vms_dir_, rec);
}

Status Agent::Impl::DestroyVm(const std::shared_ptr<VmEntry>& entry, bool graceful) {
  Status s;
  if (entry->proc) {
    s = graceful ? entry->proc->Quit(options_.qemu_stop_grace) : entry->proc->Kill();
  }
  VmRecord rec;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rec = entry->record;
    auto it = vms_.find(rec.name);
    if (it != vms_.end() && it->second == entry) vms_.erase(it);
  }
  if (!s.ok()) {
    // A QEMU that will not die keeps its files and record, for the next start.
    spdlog::error("agent {}: cannot end QEMU of {} (pid {}): {}", options_.name, rec.name, rec.pid,
                  s.ToString());
    return s;
  }
  RemoveVmFiles(rec);
  return Status::OK();
}

void Agent::Impl::RemoveVmFiles(const VmRecord& rec) {
  UnlinkQuietly(rec.spec.ram_path);
  UnlinkQuietly(rec.spec.qmp_socket);
  if (!rec.spec.console_socket.empty()) UnlinkQuietly(rec.spec.console_socket);
  UnlinkQuietly(rec.pidfile);
  Status s = RemoveVmRecord(vms_dir_, rec.name);
  if (!s.ok()) spdlog::warn("agent {}: {}", options_.name, s.ToString());
}

std::shared_ptr<VmEntry> Agent::Impl::FindVm(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = vms_.find(name);
  return it == vms_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<VmEntry>> Agent::Impl::AllVms() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<VmEntry>> out;
  for (auto& [name, e] : vms_) out.push_back(e);
  return out;
}

std::shared_ptr<VmEntry> Agent::Impl::PickDonor(const VmKind& kind, const std::string& exclude,
                                                const std::string& preferred) {
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<VmEntry> best;
  for (auto& [name, e] : vms_) {
    if (name == exclude || e->record.role != VmRole::kRunning || !e->busy.empty() || !e->proc ||
        !(e->record.kind == kind) || !e->proc->Alive()) {
      continue;
    }
    if (name == preferred) return e;
    if (!best) best = e;
  }
  return best;
}

VmInfo Agent::Impl::Describe(const std::shared_ptr<VmEntry>& entry, bool query_qmp) {
  VmInfo info;
  VmProcess* proc = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    info.name = entry->record.name;
    info.role = VmRoleName(entry->record.role);
    info.pid = entry->record.pid;
    info.ram_path = entry->record.spec.ram_path;
    info.serial_log = entry->record.spec.serial_log;
    info.qmp_socket = entry->record.spec.qmp_socket;
    info.console_socket = entry->record.spec.console_socket;
    info.forwards = ForwardedPorts(entry->record.spec);
    info.busy = !entry->busy.empty();
    proc = entry->proc.get();
  }
  if (proc == nullptr) {
    info.run_state = "starting";
  } else if (!proc->Alive()) {
    info.run_state = "exited";
  } else if (query_qmp && proc->has_qmp()) {
    auto st = proc->qmp().Execute("query-status", nullptr, kQuickQmp);
    info.run_state = st.has_value() ? StringOr(*st, "status", "?") : "unknown";
  } else {
    info.run_state = "unknown";
  }
  auto counter = ReadLastCounter(info.serial_log);
  if (counter.has_value() && counter->has_value()) info.counter = **counter;
  return info;
}

void Agent::Impl::RegisterMigration(const std::shared_ptr<ActiveMigration>& m) {
  std::lock_guard<std::mutex> lock(mu_);
  migrations_.push_back(m);
}

void Agent::Impl::UnregisterMigration(const ActiveMigration* m) {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(migrations_, [m](const auto& p) { return p.get() == m; });
}

std::shared_ptr<ActiveMigration> Agent::Impl::FindMigration(const std::string& vm,
                                                            std::int64_t migration_id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& m : migrations_) {
    if (m->vm() == vm && m->migration_id() == migration_id) return m;
  }
  return nullptr;
}

void Agent::Impl::MarkStoppedInInventory(const std::string& vm) {
  auto rec = inventory_->GetVm(vm);
  if (!rec.has_value() || rec->host != options_.name) return;
  if (rec->state == VmState::kRunning || rec->state == VmState::kDefined) {
    Status s = inventory_->SetVmState(vm, VmState::kStopped);
    if (!s.ok()) spdlog::warn("agent {}: {}", options_.name, s.ToString());
  }
}

// ---- VM lifecycle ----

Result<VmInfo> Agent::Impl::StartVm(const std::string& name) {
  ESCDR_RETURN_IF_ERROR(ValidateLocalName("VM", name));
  if (auto entry = FindVm(name)) {
    // Already here: resume it if it is paused (e.g. after --keep-paused).
    ESCDR_ASSIGN_OR_RETURN(auto held, AcquireVm(name, "resuming"));
    Status s;
    if (held->record.role != VmRole::kRunning) {
      s = Status::FailedPrecondition(fmt::format("VM {} on {} is {}, not a VM this host runs",
                                                 name, options_.name,
                                                 VmRoleName(held->record.role)));
    } else if (!held->proc || !held->proc->has_qmp()) {
      s = Status::Unavailable(fmt::format("VM {} on {} has no QMP connection", name, options_.name));
    } else {
      auto st = QueryStatus(held->proc->qmp());
      if (!st.has_value()) {
        s = st.error();
      } else if (*st != "running") {
        s = Cont(held->proc->qmp());
        if (s.ok()) spdlog::info("agent {}: resumed VM {} (was {})", options_.name, name, *st);
      }
    }
    ReleaseVm(held);
    ESCDR_RETURN_IF_ERROR(s);
    return Describe(held, true);
  }

  ESCDR_ASSIGN_OR_RETURN(Vm vm, inventory_->GetVm(name));
  if (vm.host != options_.name) {
    return Err(Status::FailedPrecondition(fmt::format(
        "VM {} is placed on host {}, not on {}", name, vm.host, options_.name)));
  }
  if (vm.state == VmState::kMigrating) {
    return Err(Status::FailedPrecondition(fmt::format("VM {} is migrating", name)));
  }
  VmRecord rec;
  rec.name = name;
  rec.role = VmRole::kRunning;
  rec.kind = vm.kind;
  ESCDR_ASSIGN_OR_RETURN(rec.spec, LocalLaunchSpec(vm));
  rec.pidfile = PidFile(name);
  rec.qemu_log = QemuLog(name);
  ESCDR_ASSIGN_OR_RETURN(auto entry, ReserveVm(rec, "starting"));
  Status s = LaunchReserved(entry);
  if (!s.ok()) return Err(s.WithContext(fmt::format("cannot start VM {} on {}", name, options_.name)));
  s = inventory_->SetVmLaunch(name, CanonicalLaunchJson(vm.launch_spec, rec.spec.machine),
                             rec.spec.ram_path);
  if (s.ok() && vm.state != VmState::kRunning) s = inventory_->SetVmState(name, VmState::kRunning);
  if (!s.ok()) {
    (void)DestroyVm(entry, false);
    return Err(s.WithContext(fmt::format("VM {} started but the inventory refused it; stopped it", name)));
  }
  ReleaseVm(entry);
  spdlog::info("agent {}: started VM {} (pid {}, RAM {})", options_.name, name, entry->record.pid,
               rec.spec.ram_path);
  return Describe(entry, true);
}

Status Agent::Impl::StopVm(const std::string& name) {
  ESCDR_RETURN_IF_ERROR(ValidateLocalName("VM", name));
  auto held = AcquireVm(name, "stopping");
  if (!held.has_value()) {
    if (held.error().code() != StatusCode::kNotFound) return held.error();
    // Not here: fix the inventory if it still believes the VM runs here.
    auto vm = inventory_->GetVm(name);
    if (vm.has_value() && vm->host == options_.name && vm->state != VmState::kMigrating) {
      if (vm->state != VmState::kStopped) MarkStoppedInInventory(name);
      return Status::OK();
    }
    return held.error();
  }
  const VmRole role = (*held)->record.role;
  if (role == VmRole::kIncoming) {
    ReleaseVm(*held);
    return Status::FailedPrecondition(
        fmt::format("VM {} on {} is the destination of a migration in progress", name, options_.name));
  }
  ESCDR_RETURN_IF_ERROR(DestroyVm(*held, /*graceful=*/true));
  if (role == VmRole::kRunning) MarkStoppedInInventory(name);
  spdlog::info("agent {}: stopped VM {} ({})", options_.name, name, VmRoleName(role));
  return Status::OK();
}

// ---- monitoring ----

void Agent::Impl::MonitorLoop() {
  std::unique_lock<std::mutex> lock(monitor_mu_);
  while (!stopping_) {
    monitor_cv_.wait_for(lock, std::chrono::seconds(1));
    if (stopping_) break;
    lock.unlock();
    CheckVms();
    ReapThreads(false);
    lock.lock();
  }
}

void Agent::Impl::CheckVms() {
  for (auto& entry : AllVms()) {
    VmRecord rec;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!entry->busy.empty() || !entry->proc) continue;
      rec = entry->record;
    }
    if (entry->proc->Alive()) continue;
    spdlog::warn("agent {}: VM {} (pid {}) exited on its own; removing it", options_.name, rec.name,
                 rec.pid);
    (void)DestroyVm(entry, false);
    if (rec.role == VmRole::kRunning) MarkStoppedInInventory(rec.name);
  }
}

// ---- serving ----

Status Agent::Impl::Run() {
  while (!stopping_) {
    if (auto summary = gate_->TakeSummary(std::chrono::steady_clock::now()); summary.has_value()) {
      spdlog::warn("agent {}: {}", options_.name, *summary);
    }
    auto conn = listener_->Accept(Deadline::After(milliseconds(500)));
    if (!conn.has_value()) {
      if (conn.error().code() == StatusCode::kTimeout) continue;
      if (stopping_) break;
      spdlog::warn("agent {}: accept failed: {}", options_.name, conn.error().ToString());
      std::this_thread::sleep_for(milliseconds(100));
      continue;
    }
    // Before authentication a connection only gets a place the gate gives
    // it; a refusal is closed here, without a thread, and counted for the
    // summary line (docs/security.md §7).
    const std::string address = ConnectionGate::AddressOf((*conn)->name());
    auto admitted = gate_->Admit(address, std::move(*conn));
    if (!admitted.has_value()) continue;
    std::lock_guard<std::mutex> lock(threads_mu_);
    std::erase_if(workers_, [](Worker& w) {
      if (!w.done->load()) return false;
      w.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers_.push_back(Worker{
        std::thread([this, done, c = std::move(admitted->conn),
                     pass = std::move(admitted->pass)]() mutable {
          ServeConnection(std::move(c), std::move(pass));
          done->store(true);
        }),
        done});
  }
  ReapThreads(true);
  return Status::OK();
}

void Agent::Impl::ReapThreads(bool all) {
  std::vector<Worker> finished;
  {
    std::lock_guard<std::mutex> lock(threads_mu_);
    auto it = std::partition(workers_.begin(), workers_.end(),
                             [all](Worker& w) { return !all && !w.done->load(); });
    std::move(it, workers_.end(), std::back_inserter(finished));
    workers_.erase(it, workers_.end());
  }
  for (Worker& w : finished) w.thread.join();
}

void Agent::Impl::Shutdown() {
  if (stopping_.exchange(true)) return;
  spdlog::info("agent {}: shutting down (VMs keep running)", options_.name);
  std::vector<std::shared_ptr<ActiveMigration>> active;
  {
    std::lock_guard<std::mutex> lock(mu_);
    active = migrations_;
  }
  for (auto& m : active) m->Cancel(fmt::format("agent {} is shutting down", options_.name));
  for (auto& b : backends_) b->Shutdown();
  monitor_cv_.notify_all();
  if (monitor_.joinable()) monitor_.join();
  if (resolver_.joinable()) resolver_.join();
}

std::shared_ptr<const wire::TlsContext> Agent::Impl::tls() const {
  std::lock_guard<std::mutex> lock(tls_mu_);
  return tls_;
}

Status Agent::Impl::Reload() {
  std::lock_guard<std::mutex> serial(reload_mu_);
  if (options_.insecure) {
    return Status::FailedPrecondition(fmt::format(
        "agent {} runs with --insecure: it has no credentials to reload", options_.name));
  }
  if (!options_.reload_tls) {
    return Status::FailedPrecondition(fmt::format(
        "agent {} was given its credentials without their files; it cannot reread them",
        options_.name));
  }
  auto fresh = options_.reload_tls();
  if (!fresh.has_value()) {
    spdlog::error("agent {}: reload failed, the old credentials stay in use: {}", options_.name,
                  fresh.error().message());
    return fresh.error().WithContext(
        fmt::format("agent {} kept its old credentials: the reload failed", options_.name));
  }
  std::shared_ptr<const wire::TlsContext> old;
  {
    std::lock_guard<std::mutex> lock(tls_mu_);
    old = std::exchange(tls_, std::move(*fresh));
  }
  spdlog::info("agent {}: reloaded its credentials: now {} (was {}); connections and migrations "
               "in progress keep the old ones",
               options_.name, tls()->description(), old ? old->description() : "none");
  return Status::OK();
}

Agent::Impl::Peer Agent::Impl::Secure(std::unique_ptr<wire::Connection> raw,
                                      ConnectionGate::Pass& pass) {
  // One deadline from the accept for the first byte and the whole handshake,
  // so a peer that trickles bytes cannot stretch it.
  const Deadline deadline = Deadline::After(options_.handshake_timeout);
  const std::string from = raw->name();
  const auto now = [] { return std::chrono::steady_clock::now(); };
  std::uint8_t first = 0;
  auto n = raw->ReadSome(std::span<std::uint8_t>(&first, 1), deadline);
  if (!n.has_value() || *n == 0) {
    // A port scan, a client that gave up, or a place the gate took back:
    // nothing to answer.
    if (!n.has_value() && n.error().code() == StatusCode::kTimeout && !pass.evicted()) {
      gate_->CountHandshakeFailure(true);
      if (gate_->MayLogSingly(now())) {
        spdlog::warn("agent {}: closed the connection from {}: it sent nothing for {} ms",
                     options_.name, from, options_.handshake_timeout.count());
      }
    }
    return {};
  }
  auto prefixed = std::make_unique<PrefixedConnection>(std::move(raw), std::vector<std::uint8_t>{first});
  // The credentials of this moment; a reload meanwhile does not change them.
  const std::shared_ptr<const wire::TlsContext> tls = this->tls();
  if (!tls) {
    if (first == wire::kTlsHandshakeByte) {
      spdlog::warn("agent {}: refused a TLS connection from {}: this agent runs with --insecure "
                   "(plaintext); start it with --tls-dir or --psk-file, or give the client "
                   "--insecure", options_.name, from);
      // Read the rest of the ClientHello first: closing with unread bytes
      // would reset the connection, and the client would not see it closed.
      std::vector<std::uint8_t> hello(16384);
      (void)prefixed->ReadSome(hello, Deadline::After(milliseconds(500)));
      (void)prefixed->ReadSome(hello, Deadline::After(milliseconds(100)));
      return {};
    }
    return {std::move(prefixed), InsecurePrincipal()};
  }
  if (first != wire::kTlsHandshakeByte) {
    gate_->CountHandshakeFailure(false);
    if (gate_->MayLogSingly(now())) {
      spdlog::warn(
          "agent {}: refused a plaintext connection from {}: this agent accepts only TLS "
          "(the client needs --tls-dir and --tls-name, or --psk-file)",
          options_.name, from);
    }
    RefusePlaintext(*prefixed, deadline);
    return {};
  }
  auto secured = tls->Accept(std::move(prefixed), deadline);
  if (!secured.has_value()) {
    if (pass.evicted()) return {};  // counted as an eviction already
    gate_->CountHandshakeFailure(secured.error().code() == StatusCode::kTimeout);
    if (gate_->MayLogSingly(now())) {
      const bool revoked =
          secured.error().message().find("(certificate revoked)") != std::string::npos;
      spdlog::warn("agent {}: refused the connection from {}{}: {}", options_.name, from,
                   revoked ? ", its certificate is revoked" : "", secured.error().message());
    }
    return {};
  }
  const wire::TlsConnection& t = **secured;
  Principal who = t.peer_used_psk() ? PskPrincipal()
                                    : CertificatePrincipal(t.peer_identity(), t.peer_role());
  return {std::move(*secured), std::move(who)};
}

void Agent::Impl::RefusePlaintext(wire::Connection& conn, Deadline deadline) {
  // A plaintext control client gets its answer in its own framing, after its
  // request was read (closing with unread bytes would reset the connection
  // and lose the reply).
  std::array<std::uint8_t, wire::kFrameHeaderSize> header{};
  if (!wire::ReadFull(conn, header, deadline).ok()) return;
  const wire::FrameHeader h = wire::DecodeFrameHeader(header.data());
  if (h.type != static_cast<std::uint16_t>(ControlFrameType::kRequest)) return;
  if (!ReadControlFrameAfterHeader(conn, header.data(), "the client", deadline).has_value()) return;
  (void)WriteControlFrame(
      conn, ControlFrameType::kReply,
      ErrorReply(Status::FailedPrecondition(fmt::format(
          "agent {} accepts only TLS connections: give escdr --tls-dir DIR --tls-name NAME, "
          "or --psk-file FILE (or ESCDR_TLS_DIR, ESCDR_TLS_NAME, ESCDR_PSK_FILE)",
          options_.name))),
      Deadline::After(milliseconds(1000)));
  (void)conn.ShutdownWrite();
}

void Agent::Impl::ServeConnection(std::unique_ptr<wire::Connection> raw,
                                  std::unique_ptr<ConnectionGate::Pass> pass) {
  Peer peer = Secure(std::move(raw), *pass);
  if (!peer.conn) return;
  std::unique_ptr<wire::Connection> conn = std::move(peer.conn);
  if (!gate_->Authenticate(*pass)) {
    if (pass->evicted()) return;
    // Authenticated, so it gets its answer over the secure channel.
    spdlog::warn("agent {}: refused {} ({}): {} connections are served already", options_.name,
                 DescribePrincipal(peer.who), conn->name(), options_.max_connections);
    (void)WriteControlFrame(*conn, ControlFrameType::kReply,
                            ErrorReply(Status::ResourceExhausted(fmt::format(
                                "agent {} serves {} connections already; try again",
                                options_.name, options_.max_connections))),
                            Deadline::After(milliseconds(1000)));
    return;
  }
  std::array<std::uint8_t, wire::kFrameHeaderSize> header{};
  Status s = wire::ReadFull(*conn, header, Deadline::After(kFirstFrameTimeout));
  if (!s.ok()) return;  // a port scan or a client that gave up: nothing to say
  const wire::FrameHeader h = wire::DecodeFrameHeader(header.data());
  if (h.type == static_cast<std::uint16_t>(wire::FrameType::kHello)) {
    // A source that skipped migrate_in: answer in its own protocol.
    std::vector<std::uint8_t> prefix(header.begin(), header.end());
    auto session = DestinationSession::Accept(
        std::make_unique<PrefixedConnection>(std::move(conn), std::move(prefix)));
    if (session.has_value()) {
      (void)(*session)->Reject(Status::FailedPrecondition(fmt::format(
          "agent {} takes a migration only after a migrate_in request (docs/agent.md)",
          options_.name)));
    }
    return;
  }
  auto frame = ReadControlFrameAfterHeader(*conn, header.data(), "the client",
                                           Deadline::After(kFirstFrameTimeout));
  if (!frame.has_value()) {
    spdlog::warn("agent {}: bad first frame from {}: {}", options_.name, conn->name(),
                 frame.error().ToString());
    (void)WriteControlFrame(*conn, ControlFrameType::kReply, ErrorReply(frame.error()),
                            Deadline::After(milliseconds(1000)));
    return;
  }
  if (frame->type != ControlFrameType::kRequest) {
    (void)WriteControlFrame(*conn, ControlFrameType::kReply,
                            ErrorReply(Status::ProtocolError("the first control frame must be a request")),
                            Deadline::After(milliseconds(1000)));
    return;
  }
  const json& request = frame->body;
  auto version = JsonI64(request, "version");
  auto op = RequiredJsonString(request, "op");
  Status bad;
  if (!version.has_value()) bad = version.error();
  else if (*version != kControlVersion)
    bad = Status::VersionMismatch(fmt::format("control version {} is not supported (this agent speaks {})",
                                              *version, kControlVersion));
  else if (!op.has_value()) bad = op.error();
  if (!bad.ok()) {
    (void)WriteControlFrame(*conn, ControlFrameType::kReply, ErrorReply(bad),
                            Deadline::After(kReplyTimeout));
    return;
  }
  // Who asked what: the peer's certificate name (or "pre-shared key",
  // "plaintext") and role. Read-only polls only at debug level.
  const bool poll = *op == "ping" || *op == "status" || *op == "list_vms";
  spdlog::log(poll ? spdlog::level::debug : spdlog::level::info, "agent {}: {} from {} ({}, {})",
              options_.name, *op, peer.who.name, conn->name(), DescribePrincipal(peer.who));
  // What the peer's role may ask (authorization.h); a refusal is logged
  // and answered, and nothing of the request runs.
  if (Status allowed = Authorize(peer.who, *op); !allowed.ok()) {
    spdlog::warn("agent {}: refused {} from {}: {}", options_.name, *op, conn->name(),
                 allowed.message());
    (void)WriteControlFrame(*conn, ControlFrameType::kReply, ErrorReply(allowed),
                            Deadline::After(kReplyTimeout));
    return;
  }
  if (*op == "migrate_in") {
    // The destination's VM manager, as the source names it.
    const std::string carrier = request.value("carrier", "escdr");
    for (auto& b : backends_) {
      if (carrier == b->carrier()) return b->ServeMigrateIn(std::move(conn), request);
    }
    (void)WriteControlFrame(*conn, ControlFrameType::kReply,
                            ErrorReply(Status::NotSupported(fmt::format(
                                "agent {} has no {} VMs (start it with --libvirt URI)",
                                options_.name, carrier))),
                            Deadline::After(kReplyTimeout));
    return;
  }
  if (*op == "migrate_out") {
    // The backend that owns the VM; escdr's own launcher answers for
    // unknown VMs (its error names the VM).
    VmBackend* owner = backends_.front().get();
    for (auto& b : backends_) {
      if (b->Owns(request.value("vm", ""))) owner = b.get();
    }
    owner->ServeMigrateOut(*conn, request);
    return;
  }
  auto reply = HandleSimple(*op, request);
  json body = reply.has_value() ? OkReply(std::move(*reply)) : ErrorReply(reply.error());
  (void)WriteControlFrame(*conn, ControlFrameType::kReply, body, Deadline::After(kReplyTimeout));
}

json Agent::Impl::StatusJson() {
  json vms = json::array();
  json backends = json::object();
  for (auto& b : backends_) {
    for (const VmInfo& v : b->Describe()) vms.push_back(v.ToJson());
    if (json extra = b->StatusJson(); !extra.is_null()) backends[b->carrier()] = std::move(extra);
  }
  json migrations = json::array();
  std::vector<std::shared_ptr<ActiveMigration>> active;
  {
    std::lock_guard<std::mutex> lock(mu_);
    active = migrations_;
  }
  for (auto& m : active) migrations.push_back(m->Describe());
  return {{"agent", options_.name}, {"host", options_.name}, {"address", address_},
          {"pid", ::getpid()},      {"version", "0.1.0"},    {"state_dir", options_.state_dir},
          {"vms", vms},             {"migrations", migrations},
          {"backends", backends}};
}

Result<json> Agent::Impl::HandleSimple(const std::string& op, const json& request) {
  if (op == "ping") {
    return json{{"agent", options_.name}, {"host", options_.name}, {"address", address_},
                {"pid", ::getpid()}, {"version", "0.1.0"}};
  }
  if (op == "status") return StatusJson();
  if (op == "list_vms") {
    json vms = json::array();
    for (auto& b : backends_) {
      for (const VmInfo& v : b->Describe()) vms.push_back(v.ToJson());
    }
    return json{{"vms", vms}};
  }
  if (op == "start_vm") {
    ESCDR_ASSIGN_OR_RETURN(std::string vm, RequiredJsonString(request, "vm"));
    ESCDR_ASSIGN_OR_RETURN(VmInfo info, StartVm(vm));
    return json{{"vm", info.ToJson()}};
  }
  if (op == "stop_vm") {
    ESCDR_ASSIGN_OR_RETURN(std::string vm, RequiredJsonString(request, "vm"));
    ESCDR_RETURN_IF_ERROR(StopVm(vm));
    return json{{"vm", vm}};
  }
  if (op == "reload") {
    ESCDR_RETURN_IF_ERROR(Reload());
    return json{{"agent", options_.name}, {"tls", tls()->description()}};
  }
  if (op == "commit_in") return CommitIncoming(*this, request);
  if (op == "abort_in") return AbortIncoming(*this, request);
  if (op == "cancel") {
    return Err(Status::InvalidArgument("cancel is only valid on a migrate_out connection"));
  }
  for (auto& b : backends_) {
    auto r = b->HandleOp(op, request);
    if (r.has_value() || r.error().code() != StatusCode::kNotSupported) return r;
  }
  return Err(Status::NotSupported(fmt::format("unknown control request '{}'", op)));
}

}  // namespace escdr::agent
