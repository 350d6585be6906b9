// SimInventory: the simulator's in-memory inventory of hosts and VMs, and its
// use of the real placement code (escdr/placement/placement.h).
//
// It keeps one HostView per host (names built once; memory, vCPUs and "up"
// updated in place on every change) and a per-kind count of VMs on each host,
// so a decision fills same_kind_vms without scanning VMs. Hosts are numbered
// pod-major: host = (pod * racks_per_pod + rack) * hosts_per_rack + slot, so a
// rack and a pod are index ranges. The HostViews themselves are stored in
// name order, so a placement over all hosts passes them to ChoosePlacement
// as they are, with the sorted-by-name promise (no copy, no name compare).
//
// Every decision is made without explanations (DecisionOptions::explain off):
// the same host as the explained ranking, in one pass over the candidates.
//
// Destination choice asks ChooseDestination about a few candidate sets in
// turn instead of all hosts at once, so a migration looks at tens or hundreds
// of hosts instead of 10,000. The cascade returns exactly the host the single
// call over all hosts returns (sim_inventory_test.cc checks this on random
// inventories), because with HierarchicalPathCost's weights (same rack 1 <
// same pod 2 < across pods 4) and donors ranked before non-donors:
//   1. the source's rack: a donor chosen here has the cheapest possible path;
//   2. the hosts of the source's pod running the kind (plus the source): a
//      donor chosen here beats every donor in another pod;
//   3. the hosts of other pods running the kind (plus the source): the best
//      donor, if any donor host has room;
//   4. no donor has room: the cheapest host with room, i.e. the rack's choice
//      from step 1, else the pod's, else the choice over all hosts.
//
// Thread safety: not thread-safe; one simulation owns one inventory.
#ifndef ESCDR_SRC_SIM_SIM_INVENTORY_H_
#define ESCDR_SRC_SIM_SIM_INVENTORY_H_

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "escdr/placement/placement.h"
#include "escdr/sim/precopy.h"
#include "escdr/sim/random.h"
#include "escdr/sim/scenario.h"

namespace escdr::sim {

inline constexpr std::uint32_t kNoHost = 0xffffffffu;

struct SimVm {
  std::uint32_t kind = 0;
  std::uint32_t memory_mib = 0;
  std::uint32_t vcpus = 0;
  float dirty_rate_mib_s = 0;
  float working_set_fraction = 0;
  std::uint32_t host = kNoHost;
  bool migrating = false;
};

struct DestinationChoice {
  std::uint32_t host = kNoHost;
  bool has_donor = false;
};

class SimInventory {
 public:
  SimInventory(const TopologyOptions& topology, std::size_t kinds);

  std::size_t host_count() const { return views_.size(); }
  const HostView& view(std::uint32_t host) const { return views_[pos_[host]]; }
  std::uint32_t rack_of(std::uint32_t host) const { return host / hosts_per_rack_; }
  std::uint32_t pod_of(std::uint32_t host) const { return host / hosts_per_pod_; }
  PathTier TierBetween(std::uint32_t a, std::uint32_t b) const;
  const std::vector<std::uint32_t>& vms_on(std::uint32_t host) const { return host_vms_[host]; }
  std::uint32_t same_kind(std::uint32_t kind, std::uint32_t host) const {
    return counts_[Cell(kind, host)];
  }
  void SetUp(std::uint32_t host, bool up) { views_[pos_[host]].up = up; }

  std::uint32_t AddVm(const SimVm& vm);
  SimVm& vm(std::uint32_t id) { return vms_[id]; }
  const SimVm& vm(std::uint32_t id) const { return vms_[id]; }
  std::size_t vm_count() const { return vms_.size(); }

  // Puts an unplaced VM on `host` (counts its memory, vCPUs and kind).
  void Place(std::uint32_t vm, std::uint32_t host);
  // Books the VM's memory and vCPUs on `host` for an incoming migration.
  void Reserve(std::uint32_t vm, std::uint32_t host);
  // Ends a migration: the VM leaves its host for `host`, where it was reserved.
  void Move(std::uint32_t vm, std::uint32_t host);

  // Places a new VM with ChoosePlacement under `policy`, over all hosts or a
  // uniform sample of `candidate_hosts` of them (drawn from `rng`, which also
  // seeds kRandom). Places it and returns the host, or nullopt if none fits.
  std::optional<std::uint32_t> PlaceNew(std::uint32_t vm, PlacementPolicy policy,
                                        std::uint32_t candidate_hosts, Rng& rng);
  // The host one explained ChoosePlacement call over every host, in host
  // order, picks for `vm` (for tests: PlaceNew with candidate_hosts 0 must
  // agree when its rng's next output is `seed`). Places nothing.
  std::optional<std::uint32_t> ExplainedPlacementOverAll(std::uint32_t vm, PlacementPolicy policy,
                                                         std::uint64_t seed) const;

  // The destination ChooseDestination picks for `vm` (on its host), by the
  // cascade described above; nullopt if no host has room.
  std::optional<DestinationChoice> ChooseDestinationFor(std::uint32_t vm);
  // The same, from one explained ChooseDestination call over every host, in
  // host order (for tests).
  std::optional<DestinationChoice> ChooseDestinationOverAll(std::uint32_t vm) const;

 private:
  std::size_t Cell(std::uint32_t kind, std::uint32_t host) const {
    return static_cast<std::size_t>(kind) * views_.size() + host;
  }
  void AddToHost(std::uint32_t vm, std::uint32_t host);
  void CountKind(std::uint32_t kind, std::uint32_t host, int delta);
  // Ranks `hosts` (indices) with ChooseDestination; maps the choice back.
  std::optional<DestinationChoice> Ask(std::span<const std::uint32_t> hosts, std::uint32_t vm);
  std::optional<DestinationChoice> AskRange(std::uint32_t first, std::uint32_t count,
                                            std::uint32_t vm);
  // Candidates for Ask: the hosts running `kind` inside (in_pod) or outside
  // the pod `pod`, plus `source`.
  void KindHosts(std::uint32_t kind, std::uint32_t pod, bool in_pod, std::uint32_t source);

  std::uint32_t hosts_per_rack_;
  std::uint32_t hosts_per_pod_;
  std::size_t kinds_;
  std::vector<HostView> views_;      // in name order
  std::vector<std::uint32_t> pos_;   // [host]: its index in views_
  std::vector<std::uint32_t> host_at_;  // [index in views_]: the host
  std::vector<std::vector<std::uint32_t>> host_vms_;
  std::vector<SimVm> vms_;
  std::vector<std::uint32_t> counts_;  // [kind][host]: VMs of the kind on the host
  std::vector<std::vector<std::uint32_t>> kind_hosts_;  // [kind]: hosts with count > 0
  std::vector<std::int32_t> kind_host_pos_;             // [kind][host]: index in kind_hosts_
  std::vector<std::uint32_t> permutation_;              // for sampling candidates
  std::vector<HostView> scratch_;
  std::vector<std::uint32_t> scratch_index_;
  HierarchicalPathCost cost_;
};

}  // namespace escdr::sim

#endif  // ESCDR_SRC_SIM_SIM_INVENTORY_H_
