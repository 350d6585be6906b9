// LibvirtVms (libvirt_vms.h): adoption of libvirt's domains and the two ends
// of a migration stream carried between libvirt's QEMUs.
#include "agent/libvirt_vms.h"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/connections.h"
#include "agent/json_util.h"
#include "escdr/agent/control_protocol.h"
#include "escdr/base/qemu_version.h"
#include "escdr/libvirt/libvirt_host.h"
#include "escdr/qemu/qemu_install.h"
#include "escdr/qemu/ram_map.h"
#include "escdr/sys/unix_socket.h"
#include "escdr/wire/socket.h"

namespace escdr::agent {

using nlohmann::json;
using std::chrono::milliseconds;

namespace {

constexpr std::chrono::seconds kRefreshEvery{5};
constexpr milliseconds kConnectTimeout{10000};
// How long the source looks for the host that libvirt prepared the domain on.
constexpr std::chrono::seconds kFindDestinationTimeout{15};
// How long libvirt may take, after the stream, to report the outcome.
constexpr std::chrono::seconds kOutcomeTimeout{60};

std::string SocketPath(const std::string& dir, const std::string& vm) {
  return fmt::format("{}/{}.sock", dir, vm);
}

// A migration stream this agent carries for libvirt, either side; for
// status and for Cancel on shutdown.
class CarriedMigration final : public ActiveMigration {
 public:
  CarriedMigration(std::string vm, std::int64_t id, std::string direction, std::string peer)
      : vm_(std::move(vm)), id_(id), direction_(std::move(direction)), peer_host_(std::move(peer)) {}

  const std::string& vm() const override { return vm_; }
  std::int64_t migration_id() const override { return id_; }
  json Describe() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return {{"vm", vm_},
            {"direction", direction_},
            {"migration_id", id_},
            {"carrier", "libvirt"},
            {"phase", phase_},
            {direction_ == "out" ? "destination" : "source", peer_host_},
            {"wire_bytes_sent", counters->written.load()}};
  }
  void Cancel(const std::string& reason) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    reason_ = reason;
    for (auto& c : conns_) c->Shutdown();
    if (source_session_ != nullptr) source_session_->Cancel(reason);
    if (dest_session_ != nullptr) dest_session_->Cancel(reason);
  }

  // Registers a connection that Cancel() shuts down.
  Status Watch(std::shared_ptr<wire::Connection> c) {
    std::lock_guard<std::mutex> lock(mu_);
    conns_.push_back(c);
    if (cancelled_) c->Shutdown();
    return Cancelled();
  }
  Status SetSession(SourceSession* s) {
    std::lock_guard<std::mutex> lock(mu_);
    source_session_ = s;
    if (cancelled_ && s != nullptr) s->Cancel(reason_);
    return Cancelled();
  }
  Status SetSession(DestinationSession* s) {
    std::lock_guard<std::mutex> lock(mu_);
    dest_session_ = s;
    if (cancelled_ && s != nullptr) s->Cancel(reason_);
    return Cancelled();
  }
  void SetPhase(std::string p) {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = std::move(p);
  }
  void SetPeer(std::string host) {
    std::lock_guard<std::mutex> lock(mu_);
    peer_host_ = std::move(host);
  }
  std::string phase() const {
    std::lock_guard<std::mutex> lock(mu_);
    return phase_;
  }

  const std::shared_ptr<CountingConnection::Counters> counters =
      std::make_shared<CountingConnection::Counters>();

 private:
  Status Cancelled() const {
    return cancelled_ ? Status::Aborted("migration cancelled: " + reason_) : Status::OK();
  }

  const std::string vm_;
  const std::int64_t id_;
  const std::string direction_;
  mutable std::mutex mu_;
  std::string peer_host_;
  std::string phase_ = "connecting";
  bool cancelled_ = false;
  std::string reason_;
  std::vector<std::shared_ptr<wire::Connection>> conns_;
  SourceSession* source_session_ = nullptr;
  DestinationSession* dest_session_ = nullptr;
};

// A migration `escdr migrate` asked for: what the stream's carrier needs from
// the migrate_out request, and where it reports back.
struct Pending {
  MigrateOutRequest request;
  std::string dest_host;
  std::string dest_address;
  std::shared_ptr<CarriedMigration> carried;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Result<MigrationReport> report = Err(Status::Aborted("the source QEMU never connected"));
  std::string donor, note;
};

}  // namespace

class LibvirtVms::Impl {
 public:
  Impl(Agent::Impl& agent, Options options) : agent_(agent), options_(std::move(options)) {}
  ~Impl() { Shutdown(); }

  Status Start();
  void Shutdown();

  bool Owns(const std::string& vm) {
    std::lock_guard<std::mutex> lock(mu_);
    return domains_.contains(vm);
  }
  std::vector<VmInfo> Describe();
  json StatusJson();
  void ServeMigrateOut(wire::Connection& conn, const json& request);
  void ServeMigrateIn(std::unique_ptr<wire::Connection> conn, const json& request);
  Result<json> Probe(const json& request);

 private:
  struct Domain {
    libvirt::DomainInfo info;
    std::optional<VmKind> kind;
    std::string why;  // why there is no kind
  };
  struct Listener {
    UniqueFd fd;
    std::string path;
    ino_t inode = 0;
  };

  void RefreshLoop();
  void Refresh();
  void ResolveInterrupted();
  Result<VmKind> Classify(const libvirt::DomainInfo& d);
  void Register(const libvirt::DomainInfo& d, const VmKind& kind);
  void AcceptLoop();
  void ReconcileListeners();
  void DropListener(const std::string& vm, Listener& l);
  void Spawn(std::function<void()> fn);

  void CarryOut(const std::string& vm, UniqueFd qemu_fd);
  Result<MigrationReport> RunCarryOut(const std::string& vm, std::unique_ptr<wire::Connection> qemu,
                                      const std::shared_ptr<Pending>& pending,
                                      CarriedMigration& carried, std::string& donor,
                                      std::string& note);
  Result<std::string> FindDestination(const std::string& vm);
  Result<MigrationOutcome> AwaitOutcome(const std::string& vm);
  Result<std::unique_ptr<MemoryImage>> DonorRam(const VmKind& kind, const std::string& exclude,
                                                std::string& donor_name);

  Agent::Impl& agent_;
  const Options options_;
  std::unique_ptr<libvirt::LibvirtHost> host_;
  std::atomic<bool> stopping_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  bool dirty_ = false;
  std::map<std::string, Domain> domains_;
  std::set<std::string> want_listen_;                 // running, classified domains
  std::map<std::string, std::shared_ptr<Pending>> pending_;
  std::map<std::string, std::string> qemu_series_;    // emulator path -> series

  std::map<std::string, Listener> listeners_;  // the accept thread's only
  std::thread refresher_, acceptor_;
  std::mutex workers_mu_;
  std::vector<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> workers_;
};

// ---- adoption ----

Status LibvirtVms::Impl::Start() {
  ESCDR_ASSIGN_OR_RETURN(host_, libvirt::LibvirtHost::Open(options_.uri));
  std::error_code ec;
  std::filesystem::create_directories(options_.socket_dir, ec);
  if (ec) {
    return Status::IOError(fmt::format("cannot create the migration socket directory {}: {}",
                                       options_.socket_dir, ec.message()));
  }
  Refresh();
  ResolveInterrupted();
  ESCDR_RETURN_IF_ERROR(host_->WatchLifecycle([this](const libvirt::LifecycleEvent& e) {
    spdlog::debug("agent {}: libvirt: domain {} {} ({})", agent_.host(), e.domain, e.event, e.detail);
    std::lock_guard<std::mutex> lock(mu_);
    dirty_ = true;
    cv_.notify_all();
  }));
  refresher_ = std::thread([this] { RefreshLoop(); });
  acceptor_ = std::thread([this] { AcceptLoop(); });
  spdlog::info("agent {}: VMs are libvirt's domains at {} (migration sockets in {})", agent_.host(),
               options_.uri, options_.socket_dir);
  return Status::OK();
}

void LibvirtVms::Impl::Shutdown() {
  if (stopping_.exchange(true)) return;
  cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  if (acceptor_.joinable()) acceptor_.join();
  std::vector<std::pair<std::thread, std::shared_ptr<std::atomic<bool>>>> workers;
  {
    std::lock_guard<std::mutex> lock(workers_mu_);
    workers.swap(workers_);
  }
  for (auto& w : workers) w.first.join();
  for (auto& [vm, l] : listeners_) DropListener(vm, l);
  listeners_.clear();
  host_.reset();
}

void LibvirtVms::Impl::Spawn(std::function<void()> fn) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::lock_guard<std::mutex> lock(workers_mu_);
  std::erase_if(workers_, [](auto& w) {
    if (!w.second->load()) return false;
    w.first.join();
    return true;
  });
  workers_.emplace_back(std::thread([fn = std::move(fn), done] {
                          fn();
                          done->store(true);
                        }),
                        done);
}

void LibvirtVms::Impl::RefreshLoop() {
  while (!stopping_) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, kRefreshEvery, [&] { return dirty_ || stopping_.load(); });
      dirty_ = false;
    }
    if (stopping_) break;
    Refresh();
  }
}

Result<VmKind> LibvirtVms::Impl::Classify(const libvirt::DomainInfo& d) {
  if (d.os_id.empty()) {
    return Err(Status::NotFound(
        "its domain XML names no OS (<metadata><libosinfo:libosinfo><libosinfo:os id=.../>)"));
  }
  ESCDR_ASSIGN_OR_RETURN(libvirt::OsRelease os, libvirt::ParseLibosinfoId(d.os_id));
  if (d.emulator.empty()) return Err(Status::NotFound("its domain XML names no <emulator>"));
  std::string series;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = qemu_series_.find(d.emulator); it != qemu_series_.end()) series = it->second;
  }
  if (series.empty()) {
    auto install = ProbeQemuInstall(d.emulator);
    if (!install.has_value()) {
      return Err(install.error().WithContext(fmt::format("cannot ask its emulator {} its version",
                                                         d.emulator)));
    }
    series = QemuSeriesOf(install->version);
    std::lock_guard<std::mutex> lock(mu_);
    qemu_series_[d.emulator] = series;
  }
  VmKind kind{os.os, os.version, "qemu", series};
  ESCDR_RETURN_IF_ERROR(kind.Validate());
  return kind;
}

void LibvirtVms::Impl::Register(const libvirt::DomainInfo& d, const VmKind& kind) {
  Inventory& inv = agent_.inventory();
  auto vm = inv.GetVm(d.name);
  if (vm.has_value()) {
    if (vm->state == VmState::kMigrating) return;  // the migration's end decides
    if (vm->host == agent_.host()) {
      if (vm->state != VmState::kRunning) {
        Status s = inv.SetVmState(d.name, VmState::kRunning);
        if (!s.ok()) spdlog::warn("agent {}: cannot mark {} running: {}", agent_.host(), d.name, s.ToString());
      }
      return;
    }
    spdlog::warn("agent {}: domain {} runs here but the inventory has it on {}; moving its record",
                 agent_.host(), d.name, vm->host);
    if (Status s = inv.RemoveVm(d.name); !s.ok()) {
      spdlog::warn("agent {}: cannot move the record of {}: {}", agent_.host(), d.name, s.ToString());
      return;
    }
  } else if (vm.error().code() != StatusCode::kNotFound) {
    spdlog::warn("agent {}: inventory: {}", agent_.host(), vm.error().ToString());
    return;
  }
  VmSpec spec;
  spec.name = d.name;
  spec.host = agent_.host();
  spec.kind = kind;
  spec.memory_mib = std::max<std::uint64_t>(1, d.memory_kib / 1024);
  spec.vcpus = std::max<std::uint32_t>(1, d.vcpus);
  spec.state = VmState::kRunning;
  spec.qemu_version = kind.hypervisor_version;
  auto added = inv.AddVm(spec);
  if (added.has_value()) {
    spdlog::info("agent {}: adopted libvirt domain {} ({}, {} MiB)", agent_.host(), d.name,
                 kind.ToString(), spec.memory_mib);
  } else {
    spdlog::warn("agent {}: cannot register libvirt domain {}: {}", agent_.host(), d.name,
                 added.error().ToString());
  }
}

void LibvirtVms::Impl::Refresh() {
  auto list = host_->ListDomains();
  if (!list.has_value()) {
    spdlog::warn("agent {}: cannot list libvirt's domains: {}", agent_.host(), list.error().ToString());
    return;
  }
  std::map<std::string, Domain> domains;
  std::set<std::string> listen;
  for (const libvirt::DomainInfo& d : *list) {
    Domain dom{d, std::nullopt, ""};
    if (Status n = ValidateLocalName("VM", d.name); !n.ok()) {
      dom.why = n.message();
    } else if (auto kind = Classify(d); kind.has_value()) {
      dom.kind = *kind;
    } else {
      dom.why = kind.error().message();
    }
    const bool running = d.state == "running" || (d.state == "paused" && d.state_reason != "migration" &&
                                                  d.state_reason != "starting_up");
    if (dom.kind && running) {
      Register(d, *dom.kind);
      listen.insert(d.name);
    }
    domains.emplace(d.name, std::move(dom));
  }
  // Domains the inventory places here that no longer run here.
  auto placed = agent_.inventory().ListVms(VmFilter{agent_.host(), std::nullopt});
  if (placed.has_value()) {
    for (const Vm& v : *placed) {
      if (v.state != VmState::kRunning || agent_.FindVm(v.name) != nullptr) continue;
      if (!v.launch_spec.empty()) continue;  // one of escdr's own VMs
      // Only a domain that is gone or shut off has stopped: a paused one
      // (by its user, or at either end of a migration) still lives here.
      auto it = domains.find(v.name);
      if (it != domains.end() && it->second.info.state != "shutoff" &&
          it->second.info.state != "crashed") {
        continue;
      }
      Status s = agent_.inventory().SetVmState(v.name, VmState::kStopped);
      if (s.ok()) spdlog::info("agent {}: domain {} no longer runs here: stopped", agent_.host(), v.name);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, dom] : domains) {
    if (!dom.kind && !domains_.contains(name)) {
      spdlog::warn("agent {}: libvirt domain {} is not classified: {}", agent_.host(), name, dom.why);
    }
  }
  domains_ = std::move(domains);
  want_listen_ = std::move(listen);
}

void LibvirtVms::Impl::ResolveInterrupted() {
  // At start no stream is carried by this process: a migration the inventory
  // still has open for a domain that runs here was cut by an agent that
  // died. Where the domain runs says how it ended.
  std::vector<std::string> here;
  {
    std::lock_guard<std::mutex> lock(mu_);
    here.assign(want_listen_.begin(), want_listen_.end());
  }
  Inventory& inv = agent_.inventory();
  for (const std::string& vm : here) {
    auto open = inv.ListMigrations(MigrationFilter{vm, 10, true});
    if (!open.has_value()) continue;
    for (const Migration& m : *open) {
      if (m.source != agent_.host() && m.destination != agent_.host()) continue;
      const bool arrived = m.destination == agent_.host();
      MigrationFigures f;
      if (!arrived) {
        f.error = fmt::format("an agent stopped during the migration; libvirt kept domain {} "
                              "running on its source {}", vm, agent_.host());
      }
      auto r = inv.FinishMigration(m.id, arrived ? MigrationOutcome::kSucceeded
                                                 : MigrationOutcome::kFailed, f);
      if (r.has_value()) {
        spdlog::warn("agent {}: migration {} of {} to {} was left open; domain {} runs here: "
                     "recorded as {}", agent_.host(), m.id, vm, m.destination, vm,
                     arrived ? "succeeded" : "failed");
      }
    }
  }
}

std::vector<VmInfo> LibvirtVms::Impl::Describe() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<VmInfo> out;
  for (const auto& [name, dom] : domains_) {
    if (!dom.kind || dom.info.state == "shutoff") continue;
    VmInfo info;
    info.name = name;
    info.role = want_listen_.contains(name) ? "running" : "incoming";
    info.pid = dom.info.pid;
    info.run_state = dom.info.state;
    info.busy = pending_.contains(name);
    out.push_back(std::move(info));
  }
  return out;
}

json LibvirtVms::Impl::StatusJson() {
  std::lock_guard<std::mutex> lock(mu_);
  json unclassified = json::array();
  for (const auto& [name, dom] : domains_) {
    if (!dom.kind) unclassified.push_back({{"vm", name}, {"state", dom.info.state}, {"reason", dom.why}});
  }
  return {{"uri", options_.uri}, {"socket_dir", options_.socket_dir}, {"unclassified", unclassified}};
}

// ---- the sockets the source QEMUs connect to ----

void LibvirtVms::Impl::DropListener(const std::string& vm, Listener& l) {
  // Unlink only our own socket: a destination QEMU may have bound the path.
  struct stat st {};
  if (::stat(l.path.c_str(), &st) == 0 && st.st_ino == l.inode) ::unlink(l.path.c_str());
  l.fd.Reset();
  spdlog::debug("agent {}: stopped listening for {}", agent_.host(), vm);
}

void LibvirtVms::Impl::ReconcileListeners() {
  std::set<std::string> want;
  {
    std::lock_guard<std::mutex> lock(mu_);
    want = want_listen_;
  }
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    if (want.contains(it->first)) {
      ++it;
      continue;
    }
    DropListener(it->first, it->second);
    it = listeners_.erase(it);
  }
  for (const std::string& vm : want) {
    if (listeners_.contains(vm)) continue;
    Listener l;
    l.path = SocketPath(options_.socket_dir, vm);
    ::unlink(l.path.c_str());  // a stale socket of an earlier migration
    auto fd = ListenUnix(l.path, 4);
    if (!fd.has_value()) {
      spdlog::warn("agent {}: cannot listen for migrations of {}: {}", agent_.host(), vm,
                   fd.error().ToString());
      continue;
    }
    l.fd = std::move(*fd);
    struct stat st {};
    if (::stat(l.path.c_str(), &st) == 0) l.inode = st.st_ino;
    listeners_.emplace(vm, std::move(l));
  }
}

void LibvirtVms::Impl::AcceptLoop() {
  while (!stopping_) {
    ReconcileListeners();
    std::vector<pollfd> fds;
    std::vector<std::string> names;
    for (auto& [vm, l] : listeners_) {
      fds.push_back(pollfd{l.fd.get(), POLLIN, 0});
      names.push_back(vm);
    }
    if (fds.empty()) {
      std::this_thread::sleep_for(milliseconds(200));
      continue;
    }
    int n = ::poll(fds.data(), fds.size(), 200);
    if (n <= 0) continue;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      auto conn = AcceptUnix(fds[i].fd, milliseconds(0));
      if (!conn.has_value()) continue;
      const std::string vm = names[i];
      spdlog::info("agent {}: the QEMU of {} connected to migrate", agent_.host(), vm);
      Spawn([this, vm, fd = std::make_shared<UniqueFd>(std::move(*conn))]() mutable {
        CarryOut(vm, std::move(*fd));
      });
    }
  }
}

// ---- source side ----

Result<std::string> LibvirtVms::Impl::FindDestination(const std::string& vm) {
  ESCDR_ASSIGN_OR_RETURN(std::vector<Host> hosts, agent_.inventory().ListHosts());
  const Deadline deadline = Deadline::After(kFindDestinationTimeout);
  std::string tried;
  while (!deadline.Expired() && !stopping_) {
    tried.clear();
    for (const Host& h : hosts) {
      if (h.name == agent_.host() || h.agent_address.empty()) continue;
      AgentClient peer(h.agent_address, std::chrono::seconds(5), agent_.tls(), h.name);
      auto r = peer.Call("libvirt_probe", {{"vm", vm}});
      if (r.has_value() && r->value("incoming", false)) return h.name;
      tried += fmt::format("{}{} ({})", tried.empty() ? "" : ", ", h.name,
                           r.has_value() ? "does not hold it" : r.error().message());
    }
    std::this_thread::sleep_for(milliseconds(250));
  }
  return Err(Status::NotFound(fmt::format(
      "no agent's libvirt holds domain {} as an incoming migration (asked: {})", vm,
      tried.empty() ? "no other host with an agent" : tried)));
}

Result<MigrationOutcome> LibvirtVms::Impl::AwaitOutcome(const std::string& vm) {
  // After the last byte, libvirt either ends the source domain (success) or
  // resumes it (the destination failed).
  const Deadline deadline = Deadline::After(kOutcomeTimeout);
  while (!deadline.Expired()) {
    auto d = host_->GetDomain(vm);
    if (!d.has_value()) {
      if (d.error().code() == StatusCode::kNotFound) return MigrationOutcome::kSucceeded;
      return Err(d.error());
    }
    if (d->state == "shutoff") return MigrationOutcome::kSucceeded;
    if (d->state == "running") return MigrationOutcome::kFailed;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return Err(Status::Timeout(fmt::format("libvirt did not end the migration of {} within {} s", vm,
                                         kOutcomeTimeout.count())));
}

void LibvirtVms::Impl::CarryOut(const std::string& vm, UniqueFd qemu_fd) {
  std::shared_ptr<Pending> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = pending_.find(vm); it != pending_.end()) pending = it->second;
  }
  auto qemu = wire::WrapSocket(std::move(qemu_fd), "unix " + SocketPath(options_.socket_dir, vm));
  if (!qemu.has_value()) {
    spdlog::warn("agent {}: migration of {}: {}", agent_.host(), vm, qemu.error().ToString());
    return;
  }
  std::shared_ptr<CarriedMigration> carried =
      pending ? pending->carried
              : std::make_shared<CarriedMigration>(vm, 0, "out", "");
  if (!pending) agent_.RegisterMigration(carried);
  std::string donor, note;
  auto report = RunCarryOut(vm, std::move(*qemu), pending, *carried, donor, note);
  if (pending) {
    std::lock_guard<std::mutex> lock(pending->mu);
    pending->report = std::move(report);
    pending->donor = donor;
    pending->note = note;
    pending->done = true;
    pending->cv.notify_all();
    return;
  }
  agent_.UnregisterMigration(carried.get());
}

Result<MigrationReport> LibvirtVms::Impl::RunCarryOut(const std::string& vm,
                                                      std::unique_ptr<wire::Connection> qemu,
                                                      const std::shared_ptr<Pending>& pending,
                                                      CarriedMigration& carried,
                                                      std::string& donor, std::string& note) {
  Inventory& inv = agent_.inventory();
  const auto started = MonotonicClock::now();
  MigrateOutRequest req;
  std::string dest_host, dest_address;
  std::int64_t id = 0;
  if (pending) {
    req = pending->request;
    dest_host = pending->dest_host;
    dest_address = pending->dest_address;
    id = req.migration_id;
  }
  // Without `escdr migrate` (virsh migrate): this agent records it.
  auto record = [&](MigrationOutcome outcome, const MigrationFigures& f) {
    if (pending || id == 0) return;
    auto r = inv.FinishMigration(id, outcome, f);
    if (!r.has_value()) {
      spdlog::error("agent {}: cannot record the outcome of migration {} of {}: {}", agent_.host(),
                    id, vm, r.error().ToString());
    }
  };
  auto fail = [&](const Status& s) -> Result<MigrationReport> {
    carried.Cancel(s.message());
    MigrationFigures f;
    f.total_ms = static_cast<std::uint64_t>(SecondsSince(started) * 1000);
    f.error = s.message();
    record(MigrationOutcome::kFailed, f);
    Status out(s.code(), fmt::format("migration of libvirt domain {} from {} to {} failed: {}; "
                                     "libvirt's migration fails and the domain keeps running on {}",
                                     vm, agent_.host(), dest_host.empty() ? "?" : dest_host,
                                     s.message(), agent_.host()));
    spdlog::warn("agent {}: {}", agent_.host(), out.message());
    return Err(out);
  };
  std::shared_ptr<wire::Connection> qemu_conn(std::move(qemu));
  if (Status s = carried.Watch(qemu_conn); !s.ok()) return fail(s);
  if (!pending) {
    auto dest = FindDestination(vm);
    if (!dest.has_value()) return fail(dest.error());
    dest_host = *dest;
    carried.SetPeer(dest_host);
    auto m = inv.BeginMigration(vm, dest_host);
    if (!m.has_value()) return fail(m.error().WithContext("the inventory refused the migration"));
    id = m->id;
    auto h = inv.GetHost(dest_host);
    if (!h.has_value()) return fail(h.error());
    dest_address = h->agent_address;
  }
  auto v = inv.GetVm(vm);
  if (!v.has_value()) return fail(v.error());
  std::unique_ptr<CatalogContent> content;
  if (req.escdr) {
    auto c = CatalogContent::Load(inv, v->kind);
    if (c.has_value()) {
      content = std::move(*c);
    } else {
      note = fmt::format("no usable catalog for {} ({}): nothing elided", v->kind.ToString(),
                         c.error().message());
    }
  }
  carried.SetPhase("connecting");
  auto tcp = ConnectToAgent(agent_, dest_host, dest_address, Deadline::After(kConnectTimeout));
  if (!tcp.has_value()) return fail(tcp.error());
  auto peer = std::make_shared<CountingConnection>(std::move(*tcp), carried.counters);
  if (Status s = carried.Watch(peer); !s.ok()) return fail(s);
  json request = {{"version", kControlVersion}, {"op", "migrate_in"},
                  {"vm", vm},                   {"migration_id", id},
                  {"source_host", agent_.host()}, {"carrier", "libvirt"}};
  const Deadline deadline = Deadline::After(std::chrono::seconds(120));
  const std::string peer_name = fmt::format("the destination agent at {}", dest_address);
  if (Status s = WriteControlFrame(*peer, ControlFrameType::kRequest, request, deadline); !s.ok()) {
    return fail(s.WithContext("cannot send migrate_in to " + peer_name));
  }
  auto reply = ReadControlFrame(*peer, peer_name, deadline);
  if (!reply.has_value()) return fail(reply.error());
  if (Status s = ReplyStatus(reply->body); !s.ok()) {
    return fail(Status(s.code(), fmt::format("{} refused the migration: {}", peer_name, s.message())));
  }
  donor = StringOr(reply->body, "donor");
  if (std::string n = StringOr(reply->body, "note"); !n.empty() && note.empty()) note = n;

  carried.SetPhase("preparing");
  SourceParams params;
  params.vm_name = vm;
  params.kind = v->kind;
  params.migration_id = static_cast<std::uint64_t>(id);
  auto options = SourceOptionsFor(req, content != nullptr);
  if (!options.has_value()) return fail(options.error());
  auto session = SourceSession::Connect(std::make_unique<SharedConnection>(peer),
                                        req.escdr ? content.get() : nullptr, params, *options);
  if (!session.has_value()) return fail(session.error());
  if (Status s = carried.SetSession(session->get()); !s.ok()) return fail(s);
  carried.SetPhase("iterating");
  auto report = (*session)->Run(std::make_unique<SharedConnection>(qemu_conn));
  (void)carried.SetSession(static_cast<SourceSession*>(nullptr));
  if (!report.has_value()) return fail(report.error());
  qemu_conn->Shutdown();
  carried.SetPhase("finishing");
  if (!pending) {
    auto outcome = AwaitOutcome(vm);
    MigrationFigures f;
    f.bytes_on_wire = report->wire_bytes_sent;
    f.bytes_saved_position = report->bytes_saved_by_position();
    f.bytes_saved_content = report->bytes_saved_by_content();
    f.fallback_pages = report->fallbacks;
    f.total_ms = static_cast<std::uint64_t>(SecondsSince(started) * 1000);
    f.downtime_ms = static_cast<std::uint64_t>(report->downtime.count() / 1000);
    if (!outcome.has_value() || *outcome == MigrationOutcome::kFailed) {
      f.error = outcome.has_value() ? "libvirt resumed the domain on its source after the stream"
                                    : outcome.error().message();
      record(MigrationOutcome::kFailed, f);
      spdlog::warn("agent {}: libvirt did not complete the migration of {} to {}: {}",
                   agent_.host(), vm, dest_host, f.error);
      return Err(Status::Aborted(f.error));
    }
    record(MigrationOutcome::kSucceeded, f);
  }
  carried.SetPhase("done");
  spdlog::info("agent {}: carried the migration of libvirt domain {} to {}: {}", agent_.host(), vm,
               dest_host, report->Summary());
  return report;
}

void LibvirtVms::Impl::ServeMigrateOut(wire::Connection& conn, const json& request) {
  const Deadline reply_deadline = Deadline::After(std::chrono::seconds(30));
  auto answer = [&](const Status& s) {
    (void)WriteControlFrame(conn, ControlFrameType::kReply, ErrorReply(s), reply_deadline);
  };
  auto req = MigrateOutRequest::FromJson(request);
  if (!req.has_value()) return answer(req.error());
  Inventory& inv = agent_.inventory();
  auto m = inv.GetMigration(req->migration_id);
  if (!m.has_value()) return answer(m.error());
  if (m->vm != req->vm || m->source != agent_.host() || m->outcome != MigrationOutcome::kInProgress) {
    return answer(Status::FailedPrecondition(fmt::format(
        "inventory migration {} is of VM {} from {}, not an open migration of {} from {}", m->id,
        m->vm, m->source, req->vm, agent_.host())));
  }
  auto pending = std::make_shared<Pending>();
  pending->request = *req;
  pending->dest_host = m->destination;
  pending->dest_address = req->destination_address;
  if (pending->dest_address.empty()) {
    auto h = inv.GetHost(m->destination);
    if (!h.has_value()) return answer(h.error());
    pending->dest_address = h->agent_address;
  }
  // The destination's libvirt, as this host's libvirt reaches it.
  AgentClient dest(pending->dest_address, std::chrono::seconds(10), agent_.tls(),
                   m->destination);
  auto probe = dest.Call("libvirt_probe", {{"vm", req->vm}});
  if (!probe.has_value()) {
    return answer(probe.error().WithContext(
        fmt::format("the destination agent {} does not run libvirt VMs", m->destination)));
  }
  const std::string peer_uri = StringOr(*probe, "peer_uri");
  pending->carried = std::make_shared<CarriedMigration>(req->vm, req->migration_id, "out", m->destination);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.contains(req->vm)) {
      return answer(Status::FailedPrecondition(fmt::format("VM {} is migrating already", req->vm)));
    }
    pending_[req->vm] = pending;
  }
  agent_.RegisterMigration(pending->carried);
  const auto started = MonotonicClock::now();

  libvirt::MigrateOptions mo;
  mo.destination_uri = peer_uri;
  mo.migrate_uri = "unix://" + SocketPath(options_.socket_dir, req->vm);
  Status libvirt_status;
  bool libvirt_done = false;
  std::mutex mu;
  std::thread migrate([&] {
    Status s = host_->MigratePeerToPeer(req->vm, mo);
    std::lock_guard<std::mutex> lock(mu);
    libvirt_status = s;
    libvirt_done = true;
  });
  bool client_gone = false;
  bool timed_out = false;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (libvirt_done) break;
    }
    std::this_thread::sleep_for(milliseconds(250));
    if (!timed_out && MonotonicClock::now() - started > req->timeout) {
      timed_out = true;
      pending->carried->Cancel(fmt::format("timed out after {} s", req->timeout.count()));
      (void)host_->AbortJob(req->vm);
    }
    if (!client_gone) {
      MigrationProgress p;
      p.phase = pending->carried->phase();
      p.elapsed_s = SecondsSince(started);
      p.wire_bytes_sent = pending->carried->counters->written.load();
      p.wire_bytes_received = pending->carried->counters->read.load();
      if (!WriteControlFrame(conn, ControlFrameType::kEvent, p.ToJson(),
                             Deadline::After(std::chrono::seconds(10)))
               .ok()) {
        client_gone = true;
        pending->carried->Cancel("the client went away");
        (void)host_->AbortJob(req->vm);
      }
    }
  }
  migrate.join();
  // The carrier's result: it ran if QEMU connected.
  {
    std::unique_lock<std::mutex> lock(pending->mu);
    if (!pending->done) {
      pending->carried->Cancel(libvirt_status.ok() ? "libvirt ended the migration"
                                                   : libvirt_status.message());
      pending->cv.wait_for(lock, std::chrono::seconds(30), [&] { return pending->done; });
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(req->vm);
  }
  agent_.UnregisterMigration(pending->carried.get());
  json body;
  if (libvirt_status.ok() && pending->done && pending->report.has_value()) {
    MigrateOutResult result;
    result.report = *pending->report;
    result.destination_host = m->destination;
    result.donor = pending->donor;
    result.note = pending->note;
    result.destination_vm.name = req->vm;
    result.destination_vm.role = "running";
    result.elapsed_s = SecondsSince(started);
    body = OkReply(result.ToJson());
  } else {
    std::string why = libvirt_status.ok() ? "" : "libvirt: " + libvirt_status.message();
    if (pending->done && !pending->report.has_value()) {
      why += fmt::format("{}escdr: {}", why.empty() ? "" : "; ", pending->report.error().message());
    }
    if (why.empty()) why = "the stream did not reach escdr's socket";
    body = ErrorReply(Status::Aborted(fmt::format(
        "migration of libvirt domain {} to {} failed: {}; it keeps running on {}", req->vm,
        m->destination, why, agent_.host())));
  }
  if (!client_gone) {
    (void)WriteControlFrame(conn, ControlFrameType::kReply, body,
                            Deadline::After(std::chrono::seconds(10)));
  }
}

// ---- destination side ----

Result<json> LibvirtVms::Impl::Probe(const json& request) {
  const std::string vm = StringOr(request, "vm");
  bool incoming = false;
  if (!vm.empty()) {
    auto d = host_->GetDomain(vm);
    // libvirt's side of an incoming migration: the domain exists, paused,
    // and this agent does not treat it as its own running VM.
    if (d.has_value() && d->state == "paused") {
      std::lock_guard<std::mutex> lock(mu_);
      incoming = !want_listen_.contains(vm);
    }
  }
  return json{{"incoming", incoming}, {"peer_uri", options_.peer_uri}, {"uri", options_.uri}};
}

Result<std::unique_ptr<MemoryImage>> LibvirtVms::Impl::DonorRam(const VmKind& kind,
                                                                const std::string& exclude,
                                                                std::string& donor_name) {
  std::vector<libvirt::DomainInfo> candidates;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, dom] : domains_) {
      if (name != exclude && dom.kind && *dom.kind == kind && want_listen_.contains(name) &&
          !pending_.contains(name)) {
        candidates.push_back(dom.info);
      }
    }
  }
  std::string tried;
  for (const libvirt::DomainInfo& d : candidates) {
    auto image = [&]() -> Result<std::unique_ptr<MemoryImage>> {
      ESCDR_ASSIGN_OR_RETURN(libvirt::DomainInfo now, host_->GetDomain(d.name));
      if (now.pid <= 0) return Err(Status::NotFound("no QEMU pid"));
      ESCDR_ASSIGN_OR_RETURN(RamMapping ram, QueryMainRam([&](const std::string& cmd) {
                               return host_->MonitorHmp(d.name, cmd);
                             }));
      return ReadProcessRam(now.pid, {ram});
    }();
    if (image.has_value()) {
      donor_name = d.name;
      return image;
    }
    tried += fmt::format("{}{}: {}", tried.empty() ? "" : "; ", d.name, image.error().message());
  }
  return Err(Status::NotFound(tried.empty()
                                  ? fmt::format("no running libvirt domain of {} here", kind.ToString())
                                  : "no donor readable (" + tried + ")"));
}

void LibvirtVms::Impl::ServeMigrateIn(std::unique_ptr<wire::Connection> conn, const json& request) {
  const std::string vm = StringOr(request, "vm");
  const std::string source = StringOr(request, "source_host");
  auto id = JsonI64(request, "migration_id");
  std::shared_ptr<wire::Connection> peer(std::move(conn));
  auto carried = std::make_shared<CarriedMigration>(vm, id.has_value() ? *id : 0, "in", source);
  agent_.RegisterMigration(carried);
  std::unique_ptr<MemoryImage> donor_image;
  std::unique_ptr<CatalogContent> content;
  std::string donor, note;
  std::unique_ptr<DestinationSession> session;
  auto run = [&]() -> Result<MigrationReport> {
    ESCDR_RETURN_IF_ERROR(carried->Watch(peer));
    if (!id.has_value()) return Err(id.error());
    ESCDR_RETURN_IF_ERROR(ValidateLocalName("VM", vm));
    ESCDR_ASSIGN_OR_RETURN(Migration m, agent_.inventory().GetMigration(*id));
    if (m.vm != vm || m.destination != agent_.host() || m.outcome != MigrationOutcome::kInProgress) {
      return Err(Status::FailedPrecondition(fmt::format(
          "inventory migration {} is of VM {} to {}, not an open migration of {} to {}", m.id, m.vm,
          m.destination, vm, agent_.host())));
    }
    ESCDR_ASSIGN_OR_RETURN(Vm v, agent_.inventory().GetVm(vm));
    auto ram = DonorRam(v.kind, vm, donor);
    if (ram.has_value()) {
      donor_image = std::move(*ram);
    } else {
      note = fmt::format("no donor on {}: {}: nothing elided", agent_.host(), ram.error().message());
    }
    VmInfo info;
    info.name = vm;
    info.role = "incoming";
    ESCDR_RETURN_IF_ERROR(WriteControlFrame(*peer, ControlFrameType::kReply,
                                            OkReply({{"vm", info.ToJson()}, {"donor", donor}, {"note", note}}),
                                            Deadline::After(std::chrono::seconds(30))));
    carried->SetPhase("preparing");
    ESCDR_ASSIGN_OR_RETURN(session, DestinationSession::Accept(std::make_unique<SharedConnection>(peer)));
    ESCDR_RETURN_IF_ERROR(carried->SetSession(session.get()));
    const wire::Prepare& prep = session->prepare();
    if (prep.vm_name != vm || !(prep.kind == v.kind)) {
      Status s = Status::FailedPrecondition(fmt::format(
          "the source announced VM {} of {}, but migrate_in was for {} of {}", prep.vm_name,
          prep.kind.ToString(), vm, v.kind.ToString()));
      (void)session->Reject(s);
      return Err(s);
    }
    carried->SetPhase("scanning");
    ESCDR_RETURN_IF_ERROR(OfferDonor(agent_, *session, v.kind, donor_image.get(), donor, {}, content, note));
    carried->SetPhase("streaming");
    // libvirt's destination QEMU listens on the same path on this host.
    const std::string sock = SocketPath(options_.socket_dir, vm);
    auto fd = ConnectUnix(sock, std::chrono::seconds(30), [&]() -> Status {
      return stopping_ ? Status::Aborted("the agent is shutting down") : Status::OK();
    });
    if (!fd.has_value()) {
      return Err(fd.error().WithContext("cannot connect to libvirt's destination QEMU at " + sock));
    }
    ESCDR_ASSIGN_OR_RETURN(auto qemu, wire::WrapSocket(std::move(*fd), "unix " + sock));
    return session->Run(std::move(qemu));
  };
  auto report = run();
  if (report.has_value()) {
    carried->SetPhase("done");
    spdlog::info("agent {}: carried libvirt domain {} in from {} (donor {}): {}", agent_.host(), vm,
                 source, donor.empty() ? "none" : donor, report->Summary());
  } else {
    carried->Cancel(report.error().message());
    if (!session) {
      (void)WriteControlFrame(*peer, ControlFrameType::kReply, ErrorReply(report.error()),
                              Deadline::After(std::chrono::seconds(10)));
    }
    spdlog::warn("agent {}: incoming migration of libvirt domain {} from {} failed (libvirt's "
                 "migration fails; the domain keeps running on {}): {}",
                 agent_.host(), vm, source, source, report.error().ToString());
  }
  (void)carried->SetSession(static_cast<DestinationSession*>(nullptr));
  session.reset();
  agent_.UnregisterMigration(carried.get());
}

// ---- LibvirtVms ----

LibvirtVms::LibvirtVms(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LibvirtVms::~LibvirtVms() = default;

Result<std::unique_ptr<LibvirtVms>> LibvirtVms::Start(Agent::Impl& agent, Options options) {
  auto impl = std::make_unique<Impl>(agent, std::move(options));
  ESCDR_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<LibvirtVms>(new LibvirtVms(std::move(impl)));
}

void LibvirtVms::Shutdown() { impl_->Shutdown(); }
bool LibvirtVms::Owns(const std::string& vm) { return impl_->Owns(vm); }
std::vector<VmInfo> LibvirtVms::Describe() { return impl_->Describe(); }
json LibvirtVms::StatusJson() { return impl_->StatusJson(); }
void LibvirtVms::ServeMigrateOut(wire::Connection& conn, const json& request) {
  impl_->ServeMigrateOut(conn, request);
}
void LibvirtVms::ServeMigrateIn(std::unique_ptr<wire::Connection> conn, const json& request) {
  impl_->ServeMigrateIn(std::move(conn), request);
}
Result<json> LibvirtVms::HandleOp(const std::string& op, const json& request) {
  if (op == "libvirt_probe") return impl_->Probe(request);
  return Err(Status::NotSupported(fmt::format("unknown control request '{}'", op)));
}

}  // namespace escdr::agent
