// Records of the inventory: hosts, VMs, migrations and network links.
//
// These are plain values copied out of (or into) the inventory database; they
// hold no connection and stay valid after the Inventory that returned them is
// gone. Sizes are MiB and vCPUs; every size a caller passes in must be > 0.
//
// VM states (docs/inventory.md draws the diagram):
//   defined   registered, placed on a host, not started yet
//   running   QEMU runs it on its host
//   migrating a migration has begun (BeginMigration); it still runs on its
//             source host, and its destination holds a reservation
//   stopped   not running, still placed (its capacity stays reserved)
// defined -> running | stopped; running <-> stopped; running -> migrating
// (BeginMigration only); migrating -> running (FinishMigration only, on the
// destination after a success, on the source after a failure).
//
// Capacity: every VM placed on a host counts against it whatever its state,
// and so does every reservation for an incoming migration, so a host is never
// promised more memory or vCPUs than it has.
//
// QEMU versions (escdr/base/qemu_version.h): a host lists the full QEMU
// versions its agent can run ("7.2.19", "10.0.13"); an empty list means
// "not reported" (an older agent, a host added by hand), and such a host is
// taken to run every series. A VM runs on one QEMU series, its *run series*
// (RunSeries()): its kind's hypervisor_version until a migration moves it to
// a newer series. A VM is placed, added or migrated only onto a host that
// runs its (target) series (HostRunsQemuSeries()).
//
// Thread safety: plain values.
#ifndef ESCDR_INVENTORY_RECORDS_H_
#define ESCDR_INVENTORY_RECORDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"

namespace escdr {

enum class HostState {
  kUp,        // takes new VMs and incoming migrations
  kDraining,  // keeps its VMs, takes nothing new (maintenance)
  kDown,      // unreachable or switched off
};
const char* HostStateName(HostState state);  // "up", "draining", "down"
Result<HostState> ParseHostState(std::string_view name);

enum class VmState { kDefined, kRunning, kMigrating, kStopped };
const char* VmStateName(VmState state);  // "defined", "running", "migrating", "stopped"
Result<VmState> ParseVmState(std::string_view name);

// What a caller says about a host.
struct HostSpec {
  std::string name;           // unique; printable, no spaces, at most 253 bytes
  std::string agent_address;  // "host:port" of its escdr agent; "" if none yet
  std::string rack;           // "" if unknown (then never "same rack")
  std::string pod;            // "" if unknown (then never "same pod")
  std::uint64_t memory_mib = 0;
  std::uint32_t vcpus = 0;
  // Full QEMU versions the host's agent can run, e.g. {"7.2.19", "10.0.13"};
  // each digits and dots with at least two components, at most 16 of them.
  // Empty: not reported (the host is then not filtered by QEMU series).
  std::vector<std::string> qemu_versions = {};
};

// OK, or InvalidArgument naming the bad field and value.
Status ValidateHostSpec(const HostSpec& spec);

// A host as the inventory knows it.
struct Host {
  std::string name;
  std::string agent_address;
  std::string rack;
  std::string pod;
  std::uint64_t memory_mib = 0;  // capacity
  std::uint32_t vcpus = 0;       // capacity
  HostState state = HostState::kUp;
  // In use: VMs placed here plus reservations for incoming migrations.
  std::uint64_t memory_used_mib = 0;
  std::uint32_t vcpus_used = 0;
  // The part of *_used held for incoming migrations.
  std::uint64_t memory_reserved_mib = 0;
  std::uint32_t vcpus_reserved = 0;
  std::uint32_t vm_count = 0;  // VMs placed here (not counting incoming ones)
  std::string created_at;      // ISO 8601 UTC
  // What its agent last reported (HostSpec::qemu_versions), oldest first,
  // without duplicates; empty if not reported.
  std::vector<std::string> qemu_versions = {};
};

// True if `host` runs QEMU series `series` ("7.2"): its list is empty (not
// reported) or one of its versions is of that series ("7.2.19").
bool HostRunsQemuSeries(const Host& host, std::string_view series);

// "7.2.19, 10.0.13", or "none reported".
std::string QemuVersionsText(const std::vector<std::string>& versions);

// What a caller says about a VM.
struct VmSpec {
  std::string name;  // unique; same rules as host names
  std::string host;  // where it is; "" to let PlaceVm choose
  VmKind kind;
  std::uint64_t memory_mib = 0;
  std::uint32_t vcpus = 0;
  VmState state = VmState::kDefined;  // kMigrating is refused
  std::string launch_spec;            // opaque to the inventory (the agent's JSON)
  std::string ram_path;               // guest RAM file (memory-backend-file), "" if unknown
  // The QEMU series it runs on ("10.0"); "" = kind.hypervisor_version.
  std::string qemu_version = {};
};

// OK, or InvalidArgument naming the bad field. Does not look at `host`.
// qemu_version must be "" or a series (two numeric components).
Status ValidateVmSpec(const VmSpec& spec);

struct Vm {
  std::string name;
  std::string host;
  VmKind kind;
  std::uint64_t memory_mib = 0;
  std::uint32_t vcpus = 0;
  VmState state = VmState::kDefined;
  std::string launch_spec;
  std::string ram_path;
  std::string created_at;  // ISO 8601 UTC
  std::string updated_at;  // last change of host, state, launch data or QEMU series
  // The QEMU series it runs on when that is not its kind's hypervisor_version
  // (it migrated to a newer QEMU); "" otherwise. See RunSeries().
  std::string qemu_version = {};
};

// The QEMU series `vm` runs on: vm.qemu_version, or else its kind's
// hypervisor_version.
std::string RunSeries(const Vm& vm);
std::string RunSeries(const VmSpec& spec);

enum class MigrationOutcome { kInProgress, kSucceeded, kFailed };
const char* MigrationOutcomeName(MigrationOutcome outcome);  // "in-progress", ...
Result<MigrationOutcome> ParseMigrationOutcome(std::string_view name);

// What a finished migration reports. Byte counts are of guest memory pages
// unless said otherwise; times are wall-clock milliseconds.
struct MigrationFigures {
  std::uint64_t bytes_on_wire = 0;         // every byte sent source -> destination
  std::uint64_t bytes_saved_position = 0;  // pages filled from the donor, static by position
  std::uint64_t bytes_saved_content = 0;   // pages filled from the donor, static by content only
  std::uint64_t fallback_pages = 0;        // donor pages that failed verification, sent instead
  std::uint64_t total_ms = 0;              // migrate command to destination running
  std::uint64_t downtime_ms = 0;           // source paused to destination resumed
  std::string error;                       // why it failed; "" on success
};

struct Migration {
  std::int64_t id = 0;
  std::string vm;
  VmKind kind;
  std::string source;
  std::string destination;
  std::string donor;  // donor VM on the destination; "" if none (nothing saved)
  std::uint64_t memory_mib = 0;  // reserved on the destination while in progress
  std::uint32_t vcpus = 0;
  MigrationOutcome outcome = MigrationOutcome::kInProgress;
  MigrationFigures figures;
  std::string started_at;   // ISO 8601 UTC
  std::string finished_at;  // "" while in progress
  // The QEMU series the VM runs on at the destination ("10.0"); "" for
  // migrations logged before the inventory knew QEMU versions (schema 1).
  std::string qemu_version = {};
};

// An undirected network link with a cost, between hosts or switches (named
// nodes). When the inventory holds any link, destination choice uses the
// shortest path over links instead of the rack/pod hierarchy.
struct Link {
  std::string a;
  std::string b;
  std::uint64_t cost = 1;
};

}  // namespace escdr

#endif  // ESCDR_INVENTORY_RECORDS_H_
