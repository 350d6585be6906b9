// The simulation kernel: the parts of the simulator that run inside SimGrid.
// Only simulator.cc calls these, each in a process of its own (see
// simulator.h: SimGrid's engine exists once per process).
//
// Thread safety: none; SimGrid actors are cooperative and run one at a time.
#ifndef ESCDR_SRC_SIM_KERNEL_H_
#define ESCDR_SRC_SIM_KERNEL_H_

#include <simgrid/forward.h>

#include <memory>
#include <vector>

#include "escdr/sim/scenario.h"
#include "escdr/sim/simulator.h"
#include "sim/sim_inventory.h"

namespace escdr::sim {

// Starts SimGrid's engine with its logging quiet (critical only) and the
// network model's settings the simulator uses. Once per process; the engine
// lives until the process exits (run processes end with _exit).
simgrid::s4u::Engine* StartEngine();

// Builds the datacenter of `topology`; hosts in SimInventory's index order.
std::vector<simgrid::s4u::Host*> BuildPlatform(const TopologyOptions& topology);

// Draws the scenario's VMs (kind, memory, vCPUs, dirty rate, working set)
// into `inventory`, unplaced, from the seed's "vms" stream.
void DrawVms(const Scenario& scenario, SimInventory& inventory);

// Places every VM of `inventory` under `policy`; returns how many found no room.
std::uint64_t PlaceVms(const Scenario& scenario, PlacementPolicy policy, SimInventory& inventory);

// Runs the workload until its migrations are done. REQUIRES: the engine and
// platform exist and this process has not run the engine yet.
RunResult RunWorkload(const Scenario& scenario, SimInventory& inventory,
                      const std::vector<simgrid::s4u::Host*>& hosts, PlacementPolicy policy,
                      bool escdr);

// The plugin cross-check of simulator.h, in this process (same REQUIRES,
// except that it builds its own two-host platform).
CrossCheckResult RunCrossCheckHere(const CrossCheckParams& params);

}  // namespace escdr::sim

#endif  // ESCDR_SRC_SIM_KERNEL_H_
