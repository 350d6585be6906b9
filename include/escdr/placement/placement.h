// Placement: where a new VM goes, and where a migrating VM should go (paper §3.1).
//
// The functions here are pure: they rank a snapshot of hosts that the caller
// gathered (the inventory from its database, the simulator from memory) and
// return the decision together with the reason each candidate won or lost, so
// that `--explain` can print it; with DecisionOptions::explain off they return
// the same choice without the ranking, in one pass (the simulator's case). They do no I/O and keep no state; the caller
// is responsible for making the decision and its write atomic (the inventory
// does both in one transaction).
//
// Policies for a new VM:
//   kSpread (the paper's, the default): among hosts that are up and have room,
//     prefer hosts that run no VM of the same kind, then the least loaded,
//     then the name (so decisions are deterministic). When every host with
//     room already runs that kind, the host running the fewest VMs of it wins
//     (same_kind_vms is compared as a count, not as a yes/no).
//   kPack: among hosts with room, the most loaded first (fewest hosts used).
//   kRandom: a uniformly random host with room, from `seed`; the same seed and
//     the same set of hosts (in any order) give the same choice.
// Destination for a migration: hosts other than the source, up, with room,
// that run a donor (a VM of exactly the same kind), ordered by network path
// cost from the source, then load, then name. If none runs a donor, the
// cheapest host with room, flagged has_donor = false (ESCDR saves nothing).
//
// Load of a host = max(memory used / memory total, vCPUs used / vCPUs total),
// counting the VMs already placed on it (see HostLoad()).
//
// A host "has room" when memory_total - memory_used >= demand.memory_mib and
// vcpus_total - vcpus_used >= demand.vcpus.
//
// Thread safety: the functions are pure; PathCost implementations are
// immutable after construction and safe to share.
#ifndef ESCDR_PLACEMENT_PLACEMENT_H_
#define ESCDR_PLACEMENT_PLACEMENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "escdr/base/status.h"

namespace escdr {

// What placement knows of one host.
struct HostView {
  std::string name;
  std::string rack;                   // rack name; "" if unknown
  std::string pod;                    // pod name; "" if unknown
  std::uint64_t memory_total_mib = 0;
  std::uint64_t memory_used_mib = 0;  // sum over VMs placed on the host
  std::uint32_t vcpus_total = 0;
  std::uint32_t vcpus_used = 0;
  bool up = true;                     // false: draining, down or unreachable
  // Number of VMs on this host of the kind being placed or migrated
  // (for a migration: not counting the migrating VM itself).
  std::uint32_t same_kind_vms = 0;
};

// The resources a VM needs.
struct VmDemand {
  std::uint64_t memory_mib = 0;
  std::uint32_t vcpus = 0;
};

enum class PlacementPolicy { kSpread, kPack, kRandom };

// The load defined above, before any new VM is added; a zero total counts as
// full (1.0) for that resource.
double HostLoad(const HostView& host);

// Parses "spread", "pack" or "random".
Result<PlacementPolicy> ParsePlacementPolicy(const std::string& name);
const char* PlacementPolicyName(PlacementPolicy policy);

// Network path cost between two hosts: 0 for the same host, larger is dearer.
class PathCost {
 public:
  virtual ~PathCost() = default;
  // Returns the cost of the cheapest path from `from` to `to`, or nullopt if
  // there is no path.
  virtual std::optional<std::uint64_t> Cost(const HostView& from, const HostView& to) const = 0;
  // Cost(from, to[i]) for every i. The default calls Cost() once per host;
  // LinkGraphPathCost overrides it to run one shortest-path search for all.
  virtual std::vector<std::optional<std::uint64_t>> CostsFrom(
      const HostView& from, std::span<const HostView> to) const;
};

// Same host < same rack < same pod < across pods. Default weights 0/1/2/4.
// Same host: equal names. Same rack: equal, non-empty pod and rack names
// (rack names need only be unique within a pod). Same pod: equal, non-empty
// pod names. Anything else, including unknown racks or pods, is across pods.
class HierarchicalPathCost final : public PathCost {
 public:
  struct Weights {
    std::uint64_t same_host = 0;
    std::uint64_t same_rack = 1;
    std::uint64_t same_pod = 2;
    std::uint64_t cross_pod = 4;
  };
  HierarchicalPathCost() = default;
  explicit HierarchicalPathCost(Weights w) : w_(w) {}
  std::optional<std::uint64_t> Cost(const HostView& from, const HostView& to) const override;

 private:
  Weights w_;
};

// An explicit graph of links between named nodes (hosts and switches), each
// with a cost; the path cost is the shortest path (Dijkstra) between hosts.
// A host is a node named like the host; a host absent from the graph has no
// path to any other host (Cost returns nullopt), but 0 to itself.
class LinkGraphPathCost final : public PathCost {
 public:
  struct Link {
    std::string a;
    std::string b;
    std::uint64_t cost = 1;  // links are undirected
  };
  // Errors: InvalidArgument for a link with an empty end or a self-loop.
  static Result<LinkGraphPathCost> Create(std::span<const Link> links);
  std::optional<std::uint64_t> Cost(const HostView& from, const HostView& to) const override;
  std::vector<std::optional<std::uint64_t>> CostsFrom(
      const HostView& from, std::span<const HostView> to) const override;

  LinkGraphPathCost(LinkGraphPathCost&&) noexcept;
  LinkGraphPathCost& operator=(LinkGraphPathCost&&) noexcept;
  ~LinkGraphPathCost() override;

 private:
  struct Graph;
  explicit LinkGraphPathCost(std::unique_ptr<Graph> g);
  std::unique_ptr<Graph> g_;
};

// Why one candidate host ranked where it did.
struct CandidateExplanation {
  std::string host;
  bool eligible = false;     // could take the VM at all
  std::string reason;        // "no room: 512 MiB free, 1024 MiB needed", "runs 2 VMs of this kind", ...
  double load = 0;           // load before the VM is added
  std::optional<std::uint64_t> path_cost;  // destinations only
  bool has_donor = false;    // destinations only
};

struct Decision {
  std::optional<std::size_t> chosen;  // index into the hosts passed in; nullopt: nowhere fits
  bool has_donor = false;             // destinations: the chosen host runs a donor
  // Every host passed in, best first; ineligible hosts last with their reason.
  // Empty when the decision was made with DecisionOptions::explain off.
  std::vector<CandidateExplanation> ranking;
};

// How a decision is made. The defaults give the full, explained ranking.
struct DecisionOptions {
  // true: fill Decision::ranking (every host ordered, each with a formatted
  // reason; O(n log n) and one string per host). false: only `chosen` and
  // `has_donor`, found in one pass over the hosts (O(n), no allocation per
  // host). Both give the same `chosen` for the same input.
  bool explain = true;
  // true promises that `hosts` are in ascending name order (std::string's <),
  // so ties are broken by position instead of comparing names. Only read when
  // `explain` is false. REQUIRES when true: the promise holds (a violated
  // promise gives another tie-break, never undefined behaviour).
  bool sorted_by_name = false;
};

// Ranks `hosts` for a new VM of `demand` under `policy`. `hosts[i].same_kind_vms`
// must count the VMs of the new VM's kind. `seed` is used by kRandom only.
Decision ChoosePlacement(std::span<const HostView> hosts, const VmDemand& demand,
                         PlacementPolicy policy = PlacementPolicy::kSpread,
                         std::uint64_t seed = 0, const DecisionOptions& options = {});

// Ranks `hosts` as destinations for a VM of `demand` now on hosts[source].
// REQUIRES: source < hosts.size().
Decision ChooseDestination(std::span<const HostView> hosts, std::size_t source,
                           const VmDemand& demand, const PathCost& cost,
                           const DecisionOptions& options = {});

}  // namespace escdr

#endif  // ESCDR_PLACEMENT_PLACEMENT_H_
