#include "escdr/placement/placement.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <queue>
#include <unordered_map>
#include <utility>

namespace escdr {
namespace {

std::uint64_t FreeMemory(const HostView& h) {
  return h.memory_total_mib > h.memory_used_mib ? h.memory_total_mib - h.memory_used_mib : 0;
}

std::uint32_t FreeVcpus(const HostView& h) {
  return h.vcpus_total > h.vcpus_used ? h.vcpus_total - h.vcpus_used : 0;
}

std::string Percent(double load) { return fmt::format("{:.0f}%", load * 100); }

// HostLoad, inlined into the one-pass decisions (called once per host per decision).
inline double Load(const HostView& host) {
  auto ratio = [](double used, double total) { return total > 0 ? used / total : 1.0; };
  return std::max(ratio(static_cast<double>(host.memory_used_mib),
                        static_cast<double>(host.memory_total_mib)),
                  ratio(static_cast<double>(host.vcpus_used), static_cast<double>(host.vcpus_total)));
}

// Whether `h` can take `demand` (WhyNoRoom is empty exactly then).
bool HasRoom(const HostView& h, const VmDemand& demand) {
  return h.up && FreeMemory(h) >= demand.memory_mib && FreeVcpus(h) >= demand.vcpus;
}

// Empty when `h` can take `demand`; otherwise why not.
std::string WhyNoRoom(const HostView& h, const VmDemand& demand) {
  if (!h.up) return "host is not up";
  if (FreeMemory(h) < demand.memory_mib) {
    return fmt::format("no room: {} MiB free, {} MiB needed", FreeMemory(h), demand.memory_mib);
  }
  if (FreeVcpus(h) < demand.vcpus) {
    return fmt::format("no room: {} vCPUs free, {} needed", FreeVcpus(h), demand.vcpus);
  }
  return {};
}

std::string KindCount(std::uint32_t n) {
  if (n == 0) return "no VM of this kind";
  return fmt::format("{} VM{} of this kind", n, n == 1 ? "" : "s");
}

std::string DonorCount(std::uint32_t n) {
  if (n == 0) return "no donor";
  return fmt::format("{} donor{}", n, n == 1 ? "" : "s");
}

// Builds the ranking: `order` (eligible hosts, best first) followed by the
// ineligible ones sorted by name. `reason_of(i)` explains eligible host i.
template <typename ReasonFn>
Decision Assemble(std::span<const HostView> hosts, const std::vector<std::size_t>& order,
                  std::vector<std::size_t> ineligible, const std::vector<std::string>& why_not,
                  const std::vector<double>& load,
                  const std::vector<std::optional<std::uint64_t>>* cost,
                  const std::vector<bool>* donor, ReasonFn reason_of) {
  Decision d;
  if (!order.empty()) d.chosen = order.front();
  std::sort(ineligible.begin(), ineligible.end(),
            [&](std::size_t a, std::size_t b) { return hosts[a].name < hosts[b].name; });
  auto add = [&](std::size_t i, bool eligible, std::string reason) {
    CandidateExplanation e;
    e.host = hosts[i].name;
    e.eligible = eligible;
    e.reason = std::move(reason);
    e.load = load[i];
    if (cost) e.path_cost = (*cost)[i];
    if (donor) e.has_donor = (*donor)[i];
    d.ranking.push_back(std::move(e));
  };
  for (std::size_t i : order) add(i, true, reason_of(i));
  for (std::size_t i : ineligible) add(i, false, why_not[i]);
  return d;
}

// splitmix64: a tiny, well-mixed generator whose output is the same on every
// platform (std:: distributions are not), so seeded runs reproduce anywhere.
std::uint64_t SplitMix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [0, n) without modulo bias. REQUIRES: n > 0.
std::uint64_t UniformBelow(std::uint64_t& state, std::uint64_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() -
                              std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t r;
  do {
    r = SplitMix64(state);
  } while (r >= limit);
  return r % n;
}

// The unexplained decisions (DecisionOptions::explain off): one pass that
// keeps the best host so far under the same order the explained ranking
// sorts by, so both choose the same host.

// Whether the later host `i` beats the earlier host `best` on the name
// tie-break. With sorted input (or equal names) the earlier one wins, as the
// explained ranking's name sort (stable where it matters) has it.
bool LaterNameFirst(std::span<const HostView> hosts, std::size_t i, std::size_t best,
                    bool sorted) {
  return !sorted && hosts[i].name < hosts[best].name;
}

Decision FastSpreadOrPack(std::span<const HostView> hosts, const VmDemand& demand, bool spread,
                          bool sorted) {
  std::optional<std::size_t> best;
  double best_load = 0;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    const HostView& h = hosts[i];
    if (!HasRoom(h, demand)) continue;
    if (!best.has_value()) {
      best = i;
      best_load = Load(h);
      continue;
    }
    // Spread: a host running more VMs of the kind loses before its load counts.
    if (spread && h.same_kind_vms != hosts[*best].same_kind_vms) {
      if (h.same_kind_vms < hosts[*best].same_kind_vms) {
        best = i;
        best_load = Load(h);
      }
      continue;
    }
    const double load = Load(h);
    bool take;
    if (load != best_load) {
      take = spread ? load < best_load : load > best_load;
    } else {
      take = LaterNameFirst(hosts, i, *best, sorted);
    }
    if (take) {
      best = i;
      best_load = load;
    }
  }
  Decision d;
  d.chosen = best;
  return d;
}

Decision FastRandom(std::span<const HostView> hosts, const VmDemand& demand, std::uint64_t seed,
                    bool sorted) {
  std::vector<std::size_t> eligible;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    if (HasRoom(hosts[i], demand)) eligible.push_back(i);
  }
  Decision d;
  const std::size_t m = eligible.size();
  if (m == 0) return d;
  // The explained ranking shuffles the name-sorted list (Fisher-Yates, i = m
  // down to 2: swap [i-1] with [draw_i]) and takes its front. Draw the same
  // numbers, then follow the front back through the swaps to the position it
  // came from in name order.
  std::vector<std::uint32_t> draws(m);
  std::uint64_t state = seed;
  for (std::size_t i = m; i > 1; --i) {
    draws[i - 1] = static_cast<std::uint32_t>(UniformBelow(state, i));
  }
  std::size_t pos = 0;
  for (std::size_t i = 2; i <= m; ++i) {
    if (pos == i - 1) {
      pos = draws[i - 1];
    } else if (pos == draws[i - 1]) {
      pos = i - 1;
    }
  }
  if (!sorted) {
    std::nth_element(eligible.begin(), eligible.begin() + static_cast<std::ptrdiff_t>(pos),
                     eligible.end(), [&](std::size_t a, std::size_t b) {
                       if (hosts[a].name != hosts[b].name) return hosts[a].name < hosts[b].name;
                       return a < b;
                     });
  }
  d.chosen = eligible[pos];
  return d;
}

Decision FastDestination(std::span<const HostView> hosts, std::size_t source,
                         const VmDemand& demand, const PathCost& cost, bool sorted) {
  const std::vector<std::optional<std::uint64_t>> costs = cost.CostsFrom(hosts[source], hosts);
  std::optional<std::size_t> best;
  bool best_donor = false;
  std::uint64_t best_cost = 0;
  double best_load = 0;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    if (i == source || !costs[i].has_value() || !HasRoom(hosts[i], demand)) continue;
    const bool donor = hosts[i].same_kind_vms > 0;
    const std::uint64_t c = *costs[i];
    const double load = Load(hosts[i]);
    bool take;
    if (!best.has_value()) {
      take = true;
    } else if (donor != best_donor) {
      take = donor;
    } else if (c != best_cost) {
      take = c < best_cost;
    } else if (load != best_load) {
      take = load < best_load;
    } else {
      take = LaterNameFirst(hosts, i, *best, sorted);
    }
    if (take) {
      best = i;
      best_donor = donor;
      best_cost = c;
      best_load = load;
    }
  }
  Decision d;
  d.chosen = best;
  d.has_donor = best.has_value() && best_donor;
  return d;
}

}  // namespace

double HostLoad(const HostView& host) { return Load(host); }

Result<PlacementPolicy> ParsePlacementPolicy(const std::string& name) {
  if (name == "spread") return PlacementPolicy::kSpread;
  if (name == "pack") return PlacementPolicy::kPack;
  if (name == "random") return PlacementPolicy::kRandom;
  return Err(Status::InvalidArgument("unknown placement policy '" + name +
                                     "' (expected spread, pack or random)"));
}

const char* PlacementPolicyName(PlacementPolicy policy) {
  switch (policy) {
    case PlacementPolicy::kSpread:
      return "spread";
    case PlacementPolicy::kPack:
      return "pack";
    case PlacementPolicy::kRandom:
      return "random";
  }
  return "unknown";
}

std::vector<std::optional<std::uint64_t>> PathCost::CostsFrom(
    const HostView& from, std::span<const HostView> to) const {
  std::vector<std::optional<std::uint64_t>> out;
  out.reserve(to.size());
  for (const HostView& h : to) out.push_back(Cost(from, h));
  return out;
}

std::optional<std::uint64_t> HierarchicalPathCost::Cost(const HostView& from,
                                                         const HostView& to) const {
  if (from.name == to.name) return w_.same_host;
  const bool same_pod = !from.pod.empty() && from.pod == to.pod;
  if (same_pod && !from.rack.empty() && from.rack == to.rack) return w_.same_rack;
  if (same_pod) return w_.same_pod;
  return w_.cross_pod;
}

// ---------------------------------------------------------------------------
// LinkGraphPathCost

struct LinkGraphPathCost::Graph {
  std::unordered_map<std::string, std::size_t> id;
  std::vector<std::vector<std::pair<std::size_t, std::uint64_t>>> adj;

  std::size_t Node(const std::string& name) {
    auto [it, inserted] = id.emplace(name, adj.size());
    if (inserted) adj.emplace_back();
    return it->second;
  }

  // Shortest distances from `src` to every node; max() for unreachable.
  std::vector<std::uint64_t> Dijkstra(std::size_t src) const {
    constexpr std::uint64_t kInf = std::numeric_limits<std::uint64_t>::max();
    std::vector<std::uint64_t> dist(adj.size(), kInf);
    using Item = std::pair<std::uint64_t, std::size_t>;
    std::priority_queue<Item, std::vector<Item>, std::greater<>> queue;
    dist[src] = 0;
    queue.emplace(0, src);
    while (!queue.empty()) {
      auto [d, u] = queue.top();
      queue.pop();
      if (d != dist[u]) continue;
      for (auto [v, c] : adj[u]) {
        // Saturate instead of wrapping: a huge cost must never look cheap.
        const std::uint64_t nd = c > kInf - 1 - d ? kInf - 1 : d + c;
        if (nd < dist[v]) {
          dist[v] = nd;
          queue.emplace(nd, v);
        }
      }
    }
    return dist;
  }
};

LinkGraphPathCost::LinkGraphPathCost(std::unique_ptr<Graph> g) : g_(std::move(g)) {}
LinkGraphPathCost::LinkGraphPathCost(LinkGraphPathCost&&) noexcept = default;
LinkGraphPathCost& LinkGraphPathCost::operator=(LinkGraphPathCost&&) noexcept = default;
LinkGraphPathCost::~LinkGraphPathCost() = default;

Result<LinkGraphPathCost> LinkGraphPathCost::Create(std::span<const Link> links) {
  auto g = std::make_unique<Graph>();
  for (const Link& l : links) {
    if (l.a.empty() || l.b.empty()) {
      return Err(Status::InvalidArgument("cannot add link '" + l.a + "' - '" + l.b +
                                         "': a link needs two named ends"));
    }
    if (l.a == l.b) {
      return Err(Status::InvalidArgument("cannot add link '" + l.a + "' - '" + l.b +
                                         "': a link cannot join a node to itself"));
    }
    const std::size_t a = g->Node(l.a);
    const std::size_t b = g->Node(l.b);
    g->adj[a].emplace_back(b, l.cost);
    g->adj[b].emplace_back(a, l.cost);
  }
  return LinkGraphPathCost(std::move(g));
}

std::optional<std::uint64_t> LinkGraphPathCost::Cost(const HostView& from,
                                                     const HostView& to) const {
  return CostsFrom(from, std::span<const HostView>(&to, 1)).front();
}

std::vector<std::optional<std::uint64_t>> LinkGraphPathCost::CostsFrom(
    const HostView& from, std::span<const HostView> to) const {
  std::vector<std::optional<std::uint64_t>> out(to.size());
  std::vector<std::uint64_t> dist;
  if (auto it = g_->id.find(from.name); it != g_->id.end()) dist = g_->Dijkstra(it->second);
  for (std::size_t i = 0; i < to.size(); ++i) {
    if (to[i].name == from.name) {
      out[i] = 0;
      continue;
    }
    if (dist.empty()) continue;
    auto it = g_->id.find(to[i].name);
    if (it == g_->id.end() || dist[it->second] == std::numeric_limits<std::uint64_t>::max()) {
      continue;
    }
    out[i] = dist[it->second];
  }
  return out;
}

// ---------------------------------------------------------------------------
// Decisions

Decision ChoosePlacement(std::span<const HostView> hosts, const VmDemand& demand,
                         PlacementPolicy policy, std::uint64_t seed,
                         const DecisionOptions& options) {
  if (!options.explain) {
    if (policy == PlacementPolicy::kRandom) {
      return FastRandom(hosts, demand, seed, options.sorted_by_name);
    }
    return FastSpreadOrPack(hosts, demand, policy == PlacementPolicy::kSpread,
                            options.sorted_by_name);
  }
  std::vector<double> load(hosts.size());
  std::vector<std::string> why_not(hosts.size());
  std::vector<std::size_t> eligible, ineligible;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    load[i] = HostLoad(hosts[i]);
    why_not[i] = WhyNoRoom(hosts[i], demand);
    (why_not[i].empty() ? eligible : ineligible).push_back(i);
  }
  auto by_name = [&](std::size_t a, std::size_t b) { return hosts[a].name < hosts[b].name; };
  std::sort(eligible.begin(), eligible.end(), by_name);

  switch (policy) {
    case PlacementPolicy::kSpread: {
      std::stable_sort(eligible.begin(), eligible.end(), [&](std::size_t a, std::size_t b) {
        if (hosts[a].same_kind_vms != hosts[b].same_kind_vms) {
          return hosts[a].same_kind_vms < hosts[b].same_kind_vms;
        }
        return load[a] < load[b];
      });
      return Assemble(hosts, eligible, ineligible, why_not, load, nullptr, nullptr,
                      [&](std::size_t i) -> std::string {
                        const std::size_t w = eligible.front();
                        const HostView& h = hosts[i];
                        const HostView& win = hosts[w];
                        if (i == w) {
                          return fmt::format("chosen: runs {}, load {}", KindCount(h.same_kind_vms),
                                             Percent(load[i]));
                        }
                        if (h.same_kind_vms != win.same_kind_vms) {
                          return fmt::format("runs {}; {} runs {}", KindCount(h.same_kind_vms),
                                             win.name, KindCount(win.same_kind_vms));
                        }
                        if (load[i] != load[w]) {
                          return fmt::format("load {} is above {} on {}", Percent(load[i]),
                                             Percent(load[w]), win.name);
                        }
                        return fmt::format("tied with {}; the name breaks the tie", win.name);
                      });
    }
    case PlacementPolicy::kPack: {
      std::stable_sort(eligible.begin(), eligible.end(),
                       [&](std::size_t a, std::size_t b) { return load[a] > load[b]; });
      return Assemble(hosts, eligible, ineligible, why_not, load, nullptr, nullptr,
                      [&](std::size_t i) -> std::string {
                        const std::size_t w = eligible.front();
                        if (i == w) {
                          return fmt::format("chosen: the most loaded host with room (load {})",
                                             Percent(load[i]));
                        }
                        if (load[i] != load[w]) {
                          return fmt::format("load {} is below {} on {}", Percent(load[i]),
                                             Percent(load[w]), hosts[w].name);
                        }
                        return fmt::format("tied with {}; the name breaks the tie", hosts[w].name);
                      });
    }
    case PlacementPolicy::kRandom: {
      // Shuffle the name-sorted list, so the input order does not matter.
      std::uint64_t state = seed;
      for (std::size_t i = eligible.size(); i > 1; --i) {
        std::swap(eligible[i - 1], eligible[UniformBelow(state, i)]);
      }
      return Assemble(hosts, eligible, ineligible, why_not, load, nullptr, nullptr,
                      [&](std::size_t i) -> std::string {
                        if (i == eligible.front()) {
                          return fmt::format("chosen: drawn at random (seed {})", seed);
                        }
                        return "has room but was not drawn";
                      });
    }
  }
  return {};
}

Decision ChooseDestination(std::span<const HostView> hosts, std::size_t source,
                           const VmDemand& demand, const PathCost& cost,
                           const DecisionOptions& options) {
  if (!options.explain) return FastDestination(hosts, source, demand, cost, options.sorted_by_name);
  std::vector<double> load(hosts.size());
  std::vector<std::string> why_not(hosts.size());
  std::vector<bool> donor(hosts.size());
  std::vector<std::optional<std::uint64_t>> costs = cost.CostsFrom(hosts[source], hosts);
  std::vector<std::size_t> eligible, ineligible;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    load[i] = HostLoad(hosts[i]);
    donor[i] = hosts[i].same_kind_vms > 0;
    if (i == source) {
      why_not[i] = "source host";
    } else if (!costs[i].has_value()) {
      why_not[i] = "no network path from the source";
    } else {
      why_not[i] = WhyNoRoom(hosts[i], demand);
    }
    (why_not[i].empty() ? eligible : ineligible).push_back(i);
  }
  std::sort(eligible.begin(), eligible.end(), [&](std::size_t a, std::size_t b) {
    if (donor[a] != donor[b]) return static_cast<bool>(donor[a]);
    if (*costs[a] != *costs[b]) return *costs[a] < *costs[b];
    if (load[a] != load[b]) return load[a] < load[b];
    return hosts[a].name < hosts[b].name;
  });
  Decision d = Assemble(
      hosts, eligible, ineligible, why_not, load, &costs, &donor,
      [&](std::size_t i) -> std::string {
        const std::size_t w = eligible.front();
        const HostView& win = hosts[w];
        if (i == w) {
          if (!donor[i]) {
            return fmt::format(
                "chosen without a donor: no host with room runs this kind; cheapest path "
                "(cost {}), load {}",
                *costs[i], Percent(load[i]));
          }
          return fmt::format("chosen: runs {}, path cost {}, load {}",
                             DonorCount(hosts[i].same_kind_vms), *costs[i], Percent(load[i]));
        }
        if (donor[i] != donor[w]) return fmt::format("runs no donor; {} does", win.name);
        if (*costs[i] != *costs[w]) {
          return fmt::format("path cost {} is above {} to {}", *costs[i], *costs[w], win.name);
        }
        if (load[i] != load[w]) {
          return fmt::format("load {} is above {} on {}", Percent(load[i]), Percent(load[w]),
                             win.name);
        }
        return fmt::format("tied with {}; the name breaks the tie", win.name);
      });
  d.has_donor = d.chosen.has_value() && donor[*d.chosen];
  return d;
}

}  // namespace escdr
