// The agent's internals, shared by agent.cc (daemon, VM lifecycle),
// outgoing_migration.cc (source side) and incoming_migration.cc (destination
// side). Not a public interface.
#ifndef ESCDR_AGENT_AGENT_IMPL_H_
#define ESCDR_AGENT_AGENT_IMPL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/admission.h"
#include "agent/authorization.h"
#include "agent/catalog_content.h"
#include "agent/vm_backend.h"
#include "agent/vm_process.h"
#include "agent/vm_records.h"
#include "escdr/agent/agent.h"
#include "escdr/agent/agent_client.h"
#include "escdr/image/memory_image.h"
#include "escdr/inventory/inventory.h"
#include "escdr/migrate/destination_session.h"
#include "escdr/migrate/source_session.h"
#include "escdr/qemu/qemu_install.h"
#include "escdr/wire/connection.h"
#include "escdr/wire/socket.h"

namespace escdr::agent {

// One QEMU this agent owns. `record` and `busy` are guarded by
// Agent::Impl::mu_; `proc` is set once (under mu_) and never replaced.
struct VmEntry {
  VmRecord record;
  std::unique_ptr<VmProcess> proc;
  std::string busy;  // "" = idle; else what holds the VM ("starting", "migrating to h3", ...)
};

// A migration in progress on this agent, for status and for commit/abort
// requests that arrive on other connections.
class ActiveMigration {
 public:
  virtual ~ActiveMigration() = default;
  virtual const std::string& vm() const = 0;
  virtual std::int64_t migration_id() const = 0;
  virtual nlohmann::json Describe() const = 0;
  // Cancels it (it fails cleanly). Safe from any thread.
  virtual void Cancel(const std::string& reason) = 0;
};

class Agent::Impl {
 public:
  explicit Impl(AgentOptions options) : options_(std::move(options)) {}
  ~Impl();

  Status Init();
  // Probes options_.qemu into qemus_. InvalidArgument for two of one series.
  Status ProbeQemus();
  Status Run();
  void Shutdown();
  const std::string& address() const { return address_; }

  // ---- used by the migrations ----
  const AgentOptions& options() const { return options_; }
  Inventory& inventory() { return *inventory_; }
  const std::string& host() const { return options_.name; }
  bool stopping() const { return stopping_.load(); }

  // This host's files for VM `vm`.
  std::string RamPath(const std::string& vm) const;
  std::string QmpSocket(const std::string& vm) const;
  std::string PidFile(const std::string& vm) const;
  std::string SerialLog(const std::string& vm) const;
  std::string QemuLog(const std::string& vm) const;
  std::string OutgoingSocket(const std::string& vm) const;
  std::string IncomingSocket(const std::string& vm) const;
  // The inventory's launch spec JSON for `vm` with this host's paths, run by
  // this host's QEMU of `qemu_series` ("" = the series the VM runs on now).
  // NotFound if this host has no such QEMU or it lacks the VM's machine type.
  Result<LaunchSpec> LocalLaunchSpec(const Vm& vm, std::string_view qemu_series = {}) const;
  const std::vector<QemuInstall>& qemus() const { return qemus_; }

  // Reserves `name` for a new QEMU (busy `what`). AlreadyExists if taken.
  Result<std::shared_ptr<VmEntry>> ReserveVm(const VmRecord& record, const std::string& what);
  // Launches the reserved entry's QEMU and records it. On failure the
  // reservation is dropped.
  Status LaunchReserved(const std::shared_ptr<VmEntry>& entry);
  // Marks an existing VM busy with `what`. NotFound / FailedPrecondition (busy).
  Result<std::shared_ptr<VmEntry>> AcquireVm(const std::string& name, const std::string& what);
  void ReleaseVm(const std::shared_ptr<VmEntry>& entry);
  // Changes the VM's role and rewrites its record.
  Status SetRole(const std::shared_ptr<VmEntry>& entry, VmRole role, std::int64_t migration_id);
  // Kills (or, with `graceful`, quits) the QEMU, removes its files and
  // record, and drops the entry.
  Status DestroyVm(const std::shared_ptr<VmEntry>& entry, bool graceful);
  std::shared_ptr<VmEntry> FindVm(const std::string& name);
  std::vector<std::shared_ptr<VmEntry>> AllVms();
  // A running VM of `kind` (not `exclude`, not busy) to serve as donor;
  // `preferred` first if it qualifies. nullptr if none.
  std::shared_ptr<VmEntry> PickDonor(const VmKind& kind, const std::string& exclude,
                                     const std::string& preferred);
  VmInfo Describe(const std::shared_ptr<VmEntry>& entry, bool query_qmp);

  void RegisterMigration(const std::shared_ptr<ActiveMigration>& m);
  void UnregisterMigration(const ActiveMigration* m);
  // The registered migration of `vm` with `migration_id`, or nullptr.
  std::shared_ptr<ActiveMigration> FindMigration(const std::string& vm, std::int64_t migration_id);

  // Test hook (docs/agent.md): directory named by ESCDR_AGENT_TEST_HOLD_AFTER_SCAN.
  const std::string& hold_after_scan_dir() const { return hold_after_scan_dir_; }

  // ---- credentials and access control (docs/security.md §6, §7) ----
  // The TLS credentials for new connections, accepted and made (null with
  // --insecure). Reload() replaces them; a caller keeps the context it got
  // for as long as its connection lives.
  std::shared_ptr<const wire::TlsContext> tls() const;
  // Agent::Reload().
  Status Reload();

 private:
  // ---- serving: admission, handshake, authorization ----
  // A connection after the TLS handshake (or, with --insecure, as it came)
  // and who the peer is; `conn` is null when it was refused (logged).
  struct Peer {
    std::unique_ptr<wire::Connection> conn;
    Principal who;
  };
  // REQUIRES: `pass` is the gate's place of `raw`.
  Peer Secure(std::unique_ptr<wire::Connection> raw, ConnectionGate::Pass& pass);
  // Answers a plaintext control request to a TLS-only agent with an error.
  void RefusePlaintext(wire::Connection& conn, Deadline deadline);
  void ServeConnection(std::unique_ptr<wire::Connection> conn,
                       std::unique_ptr<ConnectionGate::Pass> pass);
  void ServeControl(wire::Connection& conn, const nlohmann::json& request);
  Result<nlohmann::json> HandleSimple(const std::string& op, const nlohmann::json& request);
  Result<VmInfo> StartVm(const std::string& name);
  Status StopVm(const std::string& name);
  nlohmann::json StatusJson();
  void Recover();
  void MonitorLoop();
  void CheckVms();
  // Removes the files of a QEMU that is gone.
  void RemoveVmFiles(const VmRecord& record);
  // Marks `vm` stopped in the inventory if it is placed here and running.
  void MarkStoppedInInventory(const std::string& vm);
  void ReapThreads(bool all);

  AgentOptions options_;
  std::vector<QemuInstall> qemus_;  // from options_.qemu, probed by Init
  std::string address_;
  std::string vms_dir_, run_dir_, logs_dir_;
  std::string hold_after_scan_dir_;
  std::unique_ptr<Inventory> inventory_;
  std::optional<wire::TcpListener> listener_;
  std::atomic<bool> stopping_{false};

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<VmEntry>> vms_;
  std::vector<std::shared_ptr<ActiveMigration>> migrations_;

  std::mutex threads_mu_;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Worker> workers_;

  // ---- credentials and access control ----
  mutable std::mutex tls_mu_;
  std::shared_ptr<const wire::TlsContext> tls_;  // guarded by tls_mu_
  std::mutex reload_mu_;                         // one Reload() at a time
  std::unique_ptr<ConnectionGate> gate_;         // made by Init

  std::mutex monitor_mu_;
  std::condition_variable monitor_cv_;
  std::thread monitor_;
  // Resolves migrations a previous agent process left uncommitted
  // (interrupted_migration.h).
  std::thread resolver_;
  // The VM managers this agent serves (vm_backend.h): escdr's own launcher
  // first, then libvirt with --libvirt. Set by Init, never changed after.
  std::vector<std::unique_ptr<VmBackend>> backends_;
};

// Runs the source side of a migration on `conn` (the CLI's control
// connection, which receives progress events and the final reply).
void ServeMigrateOut(Agent::Impl& agent, wire::Connection& conn, const nlohmann::json& request);

// Runs the destination side after a migrate_in request on `conn`; the
// connection then carries the wire protocol.
void ServeMigrateIn(Agent::Impl& agent, std::unique_ptr<wire::Connection> conn,
                    const nlohmann::json& request);

// commit_in / abort_in from the source agent (separate connections).
Result<nlohmann::json> CommitIncoming(Agent::Impl& agent, const nlohmann::json& request);
Result<nlohmann::json> AbortIncoming(Agent::Impl& agent, const nlohmann::json& request);

// ---- shared by both carriers of a stream (escdr's own QEMUs, libvirt's) ----

// The VmBackend of escdr's own QEMUs (launcher_vms.cc).
std::unique_ptr<VmBackend> MakeLauncherVms(Agent::Impl& agent);

// TCP (and, unless the agent is --insecure, TLS with `host`'s certificate)
// to the agent of `host` at `address`. Errors name the address.
Result<std::unique_ptr<wire::Connection>> ConnectToAgent(const Agent::Impl& agent,
                                                         const std::string& host,
                                                         const std::string& address,
                                                         Deadline deadline);

// The source session's options for `request` (rate cap, stream budget,
// codec, dedup); `elide` = a catalog is loaded and escdr is on.
Result<SourceOptions> SourceOptionsFor(const MigrateOutRequest& request, bool elide);

// The destination's answer to the source's Prepare: scans `donor_image` (may
// be null) against the kind's catalog if the source's catalog matches the
// inventory's, calls `after_scan` (may be empty) and offers what the donor
// holds; otherwise offers nothing and says why in `note`. `content_out`
// keeps the catalog alive for the session.
Status OfferDonor(Agent::Impl& agent, DestinationSession& session, const VmKind& kind,
                  const MemoryImage* donor_image, const std::string& donor_name,
                  const std::function<Status()>& after_scan,
                  std::unique_ptr<CatalogContent>& content_out, std::string& note);

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_AGENT_IMPL_H_
