// Scenario: everything a simulation run depends on, read from a JSON file.
//
// A scenario describes the datacenter (pods of racks of hosts, the bandwidth
// and latency of each link tier), the VM population (how many, which kinds in
// which proportion, memory sizes and dirty rates drawn from distributions),
// the static and zero fractions of each kind (from real `catalog match --json`
// output or stated in the file), the migration workload (consolidation, load
// balancing and maintenance drains at a rate, or scripted events), the
// pre-copy parameters, and the placement policies to compare. The seed makes
// every run of a scenario reproduce exactly. docs/simulator.md documents the
// file format field by field; the Options structs below carry the same names,
// with units in the names and defaults as initialisers.
//
// Parsing is strict: an unknown key, a wrong type or an out-of-range value is
// an InvalidArgument naming the file and the key path
// ("standard.json: topology.hosts_per_rack must be an integer >= 1, got 0").
//
// Thread safety: plain values; the parse functions are pure except for
// reading the catalog match files a scenario names.
#ifndef ESCDR_SIM_SCENARIO_H_
#define ESCDR_SIM_SCENARIO_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/placement/placement.h"
#include "escdr/sim/random.h"

namespace escdr::sim {

// A distribution of a non-negative quantity. JSON forms: a number (constant);
// {"uniform": [lo, hi]}; {"choice": [v...], "weights": [w...]} (weights
// optional, default equal); {"exponential": mean}; {"lognormal": {"median": m,
// "sigma": s}}. Any form may add "min" and/or "max" to clamp the draw.
struct Distribution {
  enum class Type { kConstant, kUniform, kChoice, kExponential, kLognormal };
  Type type = Type::kConstant;
  double a = 0;  // constant value, uniform lo, exponential mean, lognormal median
  double b = 0;  // uniform hi, lognormal sigma
  std::vector<double> values;   // choice
  std::vector<double> weights;  // choice
  std::optional<double> min;
  std::optional<double> max;

  static Distribution Constant(double v) {
    Distribution d;
    d.a = v;
    return d;
  }
  double Sample(Rng& rng) const;
  // The expected value before clamping (for summaries).
  double Mean() const;
};

// One link tier: a split-duplex link (each direction has the full bandwidth).
struct LinkTierOptions {
  double bandwidth_gbit_s = 10;  // per direction
  double latency_us = 5;
};

struct TopologyOptions {
  std::uint32_t pods = 1;
  std::uint32_t racks_per_pod = 2;
  std::uint32_t hosts_per_rack = 4;
  std::uint64_t host_memory_gib = 512;
  std::uint32_t host_vcpus = 128;
  LinkTierOptions host_link{10, 5};     // host NIC <-> top-of-rack switch
  LinkTierOptions rack_uplink{40, 5};   // top-of-rack <-> pod aggregation
  LinkTierOptions pod_uplink{100, 10};  // pod aggregation <-> core (the core tier)

  std::uint64_t hosts() const {
    return static_cast<std::uint64_t>(pods) * racks_per_pod * hosts_per_rack;
  }
};

// One VM kind of the mix with its page fractions. Fractions are of all guest
// pages and apply to every VM of the kind whatever its size:
// zero + by_position + by_content <= 1.
struct KindSpec {
  VmKind kind;
  double weight = 1;               // share of the VM population, relative
  double zero_fraction = 0;        // pages that are all zero
  double by_position_fraction = 0; // catalog pages at their catalog position
  double by_content_fraction = 0;  // catalog content at another position
  std::string source;              // "scenario" or the catalog match file read

  double static_fraction() const { return by_position_fraction + by_content_fraction; }
};

struct VmOptions {
  std::uint64_t count = 16;
  Distribution memory_mib = Distribution::Constant(4096);
  Distribution vcpus = Distribution::Constant(2);
  // Guest page-dirtying rate while it runs, MiB/s.
  Distribution dirty_rate_mib_s = Distribution::Constant(10);
  // Most distinct pages the guest keeps dirtying (its writable working set),
  // as a fraction of its memory: a round never resends more than this.
  Distribution working_set_fraction = Distribution::Constant(0.1);
};

struct PlacementOptions {
  std::vector<PlacementPolicy> policies{PlacementPolicy::kSpread, PlacementPolicy::kPack,
                                        PlacementPolicy::kRandom};
  // Hosts ChoosePlacement considers for each new VM: 0 (the default) for
  // every host, or a uniform random sample of this many ("relaxed
  // randomization", as large schedulers do; it weakens pack). Every host is
  // affordable: the decision is one pass without explanations, about 0.1 ms
  // per VM at 10,000 hosts; see docs/simulator.md.
  std::uint32_t candidate_hosts = 0;
};

enum class EventType { kConsolidation, kLoadBalancing, kDrain };
const char* EventTypeName(EventType type);

// An event at a fixed time: `count` events of `type`, or the drain of one
// named host.
struct ScriptedEvent {
  double at_s = 0;
  EventType type = EventType::kDrain;
  std::uint32_t count = 1;
  std::string host;  // optional: the host to drain or consolidate
};

struct WorkloadOptions {
  // Migrations to simulate; the run stops starting new ones after this many.
  std::uint64_t migrations = 10;
  // Random events (Poisson arrivals), per hour of simulated time; 0 for none.
  double events_per_hour = 60;
  // Relative weights of the random event types.
  double consolidation_weight = 1;
  double load_balancing_weight = 1;
  double drain_weight = 1;
  // Migrations one event runs at once (a host drains this many VMs at a time).
  std::uint32_t concurrent_per_event = 2;
  // VMs a load-balancing event moves off the most loaded host.
  std::uint32_t load_balancing_vms = 1;
  // A drained host stays down this long after its last VM left, then returns.
  double maintenance_s = 1800;
  // A consolidated (emptied) host stays off this long, then returns.
  double consolidation_off_s = 3600;
  std::vector<ScriptedEvent> script;
};

// Pre-copy as QEMU 7.2 does it; see precopy.h for the round model.
struct MigrationOptions {
  // QEMU's max-bandwidth, MB/s (10^6 B/s); 0: none. It caps the stream QEMU
  // writes, before ESCDR elides pages: a round takes at least its stream
  // bytes / this rate, whatever its wire bytes (precopy.h).
  double max_bandwidth_mb_s = 0;
  // Fastest rate at which the source hypervisor writes the stream when
  // nothing else limits it (its migration thread syncs the dirty bitmap,
  // scans and copies pages), MB/s; 0: unlimited. An execution on the source
  // host that overlaps each round's transfer, one core per migration: a
  // round takes at least its stream bytes / this rate. GB/s under KVM, so
  // datacenter scenarios leave it 0; about 30 MB/s for the TCG test guests
  // of the live benchmark (docs/simulator.md, Validation).
  double stream_rate_mb_s = 0;
  // Time from the destination being chosen to the first round (the
  // destination hypervisor starts), s. Counted in the migration's duration,
  // not in its report.total_time (QEMU's total-time starts at round 1).
  double setup_s = 0;
  // More setup time when ESCDR elides pages (a donor is present): the
  // destination agent loads the catalog and scans its donor, s.
  double donor_scan_s = 0;
  // QEMU's downtime-limit: stop-and-copy starts when the dirty remainder
  // could be sent in this time at the last round's rate.
  double downtime_limit_ms = 300;
  // Rounds (the first included) after which stop-and-copy is forced.
  std::uint32_t max_rounds = 30;
  // Zero pages go as 9-byte ZERO records (QEMU's behaviour); false sends them
  // as full pages, like SimGrid's plugin, which knows no zero pages.
  bool zero_page_skipping = true;
  // Each page record carries QEMU's 8-byte header (4104 bytes per page);
  // false counts bare 4096-byte pages, like SimGrid's plugin.
  bool page_headers = true;
  // Device state and stream trailer sent during stop-and-copy, KiB.
  double device_state_kib = 120;
  // What ESCDR sends instead of one elided static page (batched references).
  double reference_bytes_per_page = 1;
};

// A live measurement a scenario mirrors (scenarios/validation-*.json),
// compared with the first migration of the run of the same mode. Times are
// QEMU's: total-time from round 1 to completion (setup excluded), downtime.
struct ReferenceMeasurement {
  std::string description;
  std::optional<double> measured_total_s;     // nullopt: not measured yet
  std::optional<double> measured_downtime_ms;
  double tolerance = 0.25;                    // relative, on the total time
  bool escdr = false;                         // the measured migration used ESCDR
};

struct Scenario {
  std::string name;         // default: the file name without .json
  std::string description;
  std::string origin;       // the file it came from ("" when parsed from text)
  std::uint64_t seed = 1;
  TopologyOptions topology;
  std::vector<KindSpec> kinds;
  VmOptions vms;
  PlacementOptions placement;
  WorkloadOptions workload;
  MigrationOptions migration;
  // "reference": one object, or an array of them (e.g. one per mode).
  std::vector<ReferenceMeasurement> references;
};

// Parses scenario JSON. `origin` names the text in error messages and is the
// base for relative catalog match paths ("" : the current directory).
Result<Scenario> ParseScenario(std::string_view json_text, const std::string& origin);
// Reads and parses a scenario file. Errors: IOError if it cannot be read.
Result<Scenario> LoadScenario(const std::string& path);

// Page fractions of one image, from `escdr --json catalog match` output.
struct CatalogMatchFractions {
  VmKind kind;
  std::uint64_t total_pages = 0;
  double zero = 0;
  double by_position = 0;
  double by_content = 0;
};
// Parses the JSON printed by `escdr --json catalog match KIND IMAGE`: the
// "kind" object and the "pages" counts (total, zero, by_position,
// by_content_only, other). Errors name `origin` and the missing field.
Result<CatalogMatchFractions> ParseCatalogMatch(std::string_view json_text,
                                                const std::string& origin);

}  // namespace escdr::sim

#endif  // ESCDR_SIM_SCENARIO_H_
