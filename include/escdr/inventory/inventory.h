// Inventory: the database of hosts, VMs, catalogs and migrations (paper §3.1).
//
// One interface, two backends behind OpenInventory():
//   SQLite (the default): one file, WAL mode, no set-up. "memory:" gives a
//     private in-memory SQLite database (tests, the simulator).
//   PostgreSQL: the shared inventory when agents run on many hosts.
// Both store the same versioned schema (docs/inventory.md), migrate an older
// one forward when they open it, and refuse one written by a newer escdr.
//
// Every method is one database transaction: it either happens completely or
// not at all, and concurrent callers in other threads or processes never
// over-commit a host (SQLite: BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR
// UPDATE on the host rows involved, retried on serialization failures).
// Decisions use the pure functions of escdr/placement/placement.h over a
// preselection of hosts that indexed queries gather (never a full scan of
// VMs), so they stay in milliseconds at 10,000 hosts and 100,000 VMs.
//
// Errors: NotFound (unknown host, VM, migration, catalog), AlreadyExists
// (duplicate name), InvalidArgument (bad sizes or names; a VM larger than any
// host), ResourceExhausted (no room now), FailedPrecondition (wrong state,
// e.g. removing a host that still has VMs), Unavailable (database
// unreachable), VersionMismatch (schema from a newer escdr). Messages name
// the operation and the values, never a password.
//
// Thread safety: an Inventory is safe to share between threads (calls are
// serialized on its one connection). Processes coordinate through the
// database. Records returned are copies.
#ifndef ESCDR_INVENTORY_INVENTORY_H_
#define ESCDR_INVENTORY_INVENTORY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/catalog/catalog_store.h"
#include "escdr/inventory/records.h"
#include "escdr/placement/placement.h"

namespace escdr {

// The schema version this escdr writes; it reads this one and older ones.
inline constexpr int kInventorySchemaVersion = 2;

struct PlacementOptions {
  PlacementPolicy policy = PlacementPolicy::kSpread;
  std::uint64_t seed = 0;  // kRandom only
  // How many hosts of each preselected group (hosts without the kind, hosts
  // with it) are ranked; more gives longer explanations, not better choices.
  std::size_t candidates_per_group = 16;
  // Also rank hosts that already run the kind when some host without it has
  // room (they cannot win then, so by default they are not read): for
  // explanations. Costs one more query over the kind's VMs.
  bool explain = false;
};

// A placement decision and what it was made over.
// Hosts that do not run `qemu_series` are never candidates (records.h).
struct PlacementPlan {
  std::vector<HostView> candidates;  // the preselection that was ranked
  Decision decision;                 // indexes into `candidates`
  std::uint64_t hosts_total = 0;     // hosts in the inventory
  std::string qemu_series;           // the QEMU series the VM needs
};

// A destination decision for one VM and what it was made over. Hosts that
// do not run `qemu_series` are never candidates (the source always is).
struct DestinationPlan {
  std::string vm;
  VmKind kind;
  VmDemand demand;
  std::string source;
  std::vector<HostView> candidates;  // includes the source, at source_index
  std::size_t source_index = 0;
  Decision decision;                 // indexes into `candidates`
  std::string donor;                 // a donor VM on the chosen host; "" if none
  bool link_graph = false;           // path costs from links, not rack/pod
  std::uint64_t hosts_total = 0;
  std::string run_series;            // the QEMU series the VM runs on now
  std::string qemu_series;           // the series it would run on at the destination
};

struct VmFilter {
  std::string host;  // "" = any host
  std::optional<VmKind> kind;
};

struct MigrationFilter {
  std::string vm;               // "" = any VM
  std::size_t limit = 100;      // newest first; 0 = no limit
  bool in_progress_only = false;
};

class Inventory : public CatalogStore {
 public:
  ~Inventory() override = default;

  // The URL this inventory was opened with, password removed.
  virtual const std::string& url() const = 0;

  // --- Hosts ---
  // Adds a new host, state up. AlreadyExists if the name is taken.
  virtual Result<Host> AddHost(const HostSpec& spec) = 0;
  // Adds `specs` in one transaction: all of them or, on any error, none.
  virtual Status AddHosts(std::span<const HostSpec> specs) = 0;
  // Adds the host, or updates address, rack, pod, capacity and QEMU versions
  // of the host of that name (the state is kept). What an agent calls when it
  // starts; an agent that reports no QEMU versions clears them (unreported).
  // FailedPrecondition if the new capacity is below what is in use.
  virtual Result<Host> RegisterHost(const HostSpec& spec) = 0;
  virtual Result<Host> GetHost(std::string_view name) = 0;
  virtual Result<std::vector<Host>> ListHosts() = 0;  // ordered by name
  virtual Status SetHostState(std::string_view name, HostState state) = 0;
  // FailedPrecondition while VMs are placed on it or migrations head to it.
  virtual Status RemoveHost(std::string_view name) = 0;

  // --- VMs ---
  // Registers a VM on spec.host (which must be set), if the host has room.
  // ResourceExhausted if it has not; NotFound for an unknown host;
  // FailedPrecondition if the host does not run the VM's QEMU series
  // (RunSeries(spec)): "host h1 has no QEMU 10.0 (it runs 7.2.19)".
  virtual Result<Vm> AddVm(const VmSpec& spec) = 0;
  // Adds `specs` (each with its host) in one transaction: all or none.
  virtual Status AddVms(std::span<const VmSpec> specs) = 0;
  // Chooses a host for a new VM (spec.host must be empty) and registers the
  // VM there, atomically: concurrent PlaceVm calls never over-commit a host.
  // Only hosts that run the VM's QEMU series (RunSeries(spec)) are
  // candidates. Returns the VM and the plan. InvalidArgument if the VM is
  // larger than every host; FailedPrecondition if no host that is up runs
  // its series; ResourceExhausted if no such host has room now.
  struct Placed {
    Vm vm;
    PlacementPlan plan;
  };
  virtual Result<Placed> PlaceVm(const VmSpec& spec, const PlacementOptions& options = {}) = 0;
  virtual Result<Vm> GetVm(std::string_view name) = 0;
  virtual Result<std::vector<Vm>> ListVms(const VmFilter& filter = {}) = 0;  // by name
  // Changes the state along the diagram in records.h; FailedPrecondition for
  // another transition (in particular into or out of kMigrating).
  virtual Status SetVmState(std::string_view name, VmState state) = 0;
  virtual Status SetVmLaunch(std::string_view name, std::string_view launch_spec,
                             std::string_view ram_path) = 0;
  // FailedPrecondition while it migrates. Releases its capacity.
  virtual Status RemoveVm(std::string_view name) = 0;

  // --- Decisions (read only) ---
  // Where a new VM of `kind` and `demand` would go now, among the hosts that
  // run QEMU series kind.hypervisor_version. A plan with no chosen host is a
  // valid answer (nothing fits), not an error.
  virtual Result<PlacementPlan> PlanPlacement(const VmKind& kind, const VmDemand& demand,
                                              const PlacementOptions& options = {}) = 0;
  // Where VM `vm` should migrate to: a host with room running a donor, by
  // path cost then load; else the cheapest host with room (has_donor false).
  // Only hosts that run QEMU series `qemu_series` ("" = the VM's run series,
  // RunSeries()) are candidates. InvalidArgument if `qemu_series` is not a
  // series ("10.0"); FailedPrecondition if it is older than the run series.
  virtual Result<DestinationPlan> PlanDestination(std::string_view vm,
                                                  std::string_view qemu_series = {}) = 0;

  // --- Migrations ---
  // Starts a migration of running VM `vm` to `destination`: reserves the
  // VM's memory and vCPUs there, sets the VM migrating, picks a donor on the
  // destination (a running VM of exactly its kind; `donor` if given, which
  // must be one) and logs the migration with its target QEMU series
  // `qemu_series` ("" = the VM's run series). ResourceExhausted if the
  // destination no longer has room; FailedPrecondition if the VM is not
  // running, the destination not up, the destination does not run the
  // target series ("destination h2 has no QEMU 10.0 (it runs 7.2.19)") or
  // the target series is older than the VM's ("QEMU cannot migrate a VM from
  // 10.0 to older 7.2"); InvalidArgument if destination is the VM's own host
  // or `qemu_series` is not a series.
  virtual Result<Migration> BeginMigration(std::string_view vm, std::string_view destination,
                                           std::string_view donor = {},
                                           std::string_view qemu_series = {}) = 0;
  // Ends migration `id`. kSucceeded: the VM now lives on the destination
  // (the reservation becomes its place), runs the migration's QEMU series
  // (Vm::qemu_version) and the source's capacity is freed.
  // kFailed: the reservation is released and the VM stays on its source.
  // Either way the VM is running again and `figures` are logged.
  // FailedPrecondition if the migration has already finished.
  virtual Result<Migration> FinishMigration(std::int64_t id, MigrationOutcome outcome,
                                            const MigrationFigures& figures) = 0;
  virtual Result<Migration> GetMigration(std::int64_t id) = 0;
  virtual Result<std::vector<Migration>> ListMigrations(const MigrationFilter& filter = {}) = 0;

  // --- Network links (optional; see Link in records.h) ---
  // Adds or updates the link between a and b (either order). InvalidArgument
  // for an empty end, a self-loop or a zero cost.
  virtual Status SetLink(const Link& link) = 0;
  virtual Status RemoveLink(std::string_view a, std::string_view b) = 0;  // NotFound if absent
  virtual Result<std::vector<Link>> ListLinks() = 0;
};

// Opens (creating if needed) the inventory at `url`:
//   "memory:"                   a private in-memory SQLite database
//   "sqlite:PATH" or a PATH     a SQLite file (its directory must exist)
//   "postgresql://..." or "postgres://..."   a libpq connection URI
// Creates or migrates the schema forward. Unavailable if the database cannot
// be reached or opened; VersionMismatch if its schema is newer than
// kInventorySchemaVersion; InvalidArgument for an unknown URL scheme.
Result<std::unique_ptr<Inventory>> OpenInventory(std::string_view url);

// The URL to use: `db` if not empty, else "<state_dir>/inventory.db".
std::string ResolveInventoryUrl(std::string_view db, std::string_view state_dir);

// `url` with any password replaced by "***" (user:***@host, password=***).
std::string RedactUrl(std::string_view url);

}  // namespace escdr

#endif  // ESCDR_INVENTORY_INVENTORY_H_
