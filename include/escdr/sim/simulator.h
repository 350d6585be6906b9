// Simulate: runs a scenario on SimGrid, once per placement policy and per
// migration mode (plain pre-copy, ESCDR), and returns what each run recorded.
//
// One run: SimGrid builds the datacenter of the scenario (a star zone per
// rack, racks in pods, pods under a core; every link split-duplex with its
// tier's bandwidth and latency) and simulates it with its flow-level network
// model (LV08). The VM population is drawn once from the seed and placed with
// the real ChoosePlacement under the run's policy; workload events then pick
// hosts to drain, consolidate or unload, and every migration asks the real
// ChooseDestination for its destination at the moment it starts. Each round
// of a migration is one SimGrid communication of the size Precopy gives
// (precopy.h), between the two hosts, sharing links with every other
// migration in flight, so concurrent migrations congest uplinks as they would.
//
// Isolation: SimGrid's engine is a process-wide singleton that cannot be
// created twice, so Simulate forks. One child builds the platform and draws
// the VMs once, places them once per policy, and forks one grandchild per
// (policy, mode) run, at most `jobs` at a time; results come back through
// temporary files. The caller's process never starts SimGrid, so Simulate may
// be called any number of times (tests do).
//
// Determinism: a run is a pure function of the scenario (and its seed): the
// same scenario gives the same records, bit for bit, on the same build.
//
// Thread safety: Simulate forks; call it from a single-threaded process.
#ifndef ESCDR_SIM_SIMULATOR_H_
#define ESCDR_SIM_SIMULATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/placement/placement.h"
#include "escdr/sim/precopy.h"
#include "escdr/sim/scenario.h"

namespace escdr::sim {

struct RunResult {
  PlacementPolicy policy = PlacementPolicy::kSpread;
  bool escdr = false;
  // Completed migrations, in order of completion.
  std::vector<MigrationRecord> migrations;
  std::uint64_t vms_placed = 0;
  std::uint64_t vms_unplaced = 0;        // initial VMs no host had room for
  std::uint64_t migrations_no_room = 0;  // migrations given up: no destination had room
  std::uint64_t events = 0;              // workload events that moved at least one VM
  std::uint64_t peak_concurrent = 0;     // most migrations in flight at once
  double simulated_s = 0;                // simulated time when the last migration ended
  double placement_wall_s = 0;           // wall time of the initial placement
  double run_wall_s = 0;                 // wall time of the SimGrid run
  std::uint64_t peak_rss_kib = 0;        // the run's process, from getrusage
};

struct SimulateOptions {
  // Policies to run; empty: the scenario's placement.policies.
  std::vector<PlacementPolicy> policies;
  // Modes to run for each policy: false = plain pre-copy, true = ESCDR.
  std::vector<bool> modes{false, true};
  // Runs at a time (each is one process on one core).
  int jobs = 1;
  // Wall-time seconds of the platform build, for reports (output).
  double* platform_wall_s = nullptr;
};

// Runs every (policy, mode) of `scenario`; results in policy-then-mode order.
// Errors: InvalidArgument for a scenario that cannot run (e.g. a scripted
// host that does not exist); Internal if a run's process dies, naming the run
// and the signal or exit code.
Result<std::vector<RunResult>> Simulate(const Scenario& scenario,
                                        const SimulateOptions& options = {});

// The name of host `index` in the generated platform: "p<pod>-r<rack>-h<slot>".
std::string HostName(const TopologyOptions& topology, std::uint32_t index);

// Cross-check against SimGrid's own live-migration plugin: the same VM (no
// zero pages, no headers, no device state, no ESCDR) migrated once by
// sg_vm_migrate and once by this simulator's Precopy, between the same two
// hosts of a two-host platform.
struct CrossCheckParams {
  std::uint32_t memory_mib = 1024;
  double link_gbit_s = 1;              // both host links
  double migration_speed_mib_s = 100;  // the plugin's mig_netspeed (its rate cap)
  int dirty_intensity_percent = 30;    // the plugin's dp_intensity (of mig speed)
};
struct CrossCheckResult {
  double plugin_total_s = 0;
  double plugin_downtime_s = 0;
  double model_total_s = 0;
  double model_downtime_s = 0;
  std::uint32_t model_rounds = 0;
  std::uint64_t model_bytes = 0;
};
Result<CrossCheckResult> RunPluginCrossCheck(const CrossCheckParams& params);

}  // namespace escdr::sim

#endif  // ESCDR_SIM_SIMULATOR_H_
