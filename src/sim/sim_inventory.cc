#include "sim/sim_inventory.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <numeric>

namespace escdr::sim {

SimInventory::SimInventory(const TopologyOptions& topology, std::size_t kinds)
    : hosts_per_rack_(topology.hosts_per_rack),
      hosts_per_pod_(topology.hosts_per_rack * topology.racks_per_pod),
      kinds_(kinds) {
  const std::size_t n = topology.hosts();
  std::vector<HostView> by_host(n);
  for (std::uint32_t p = 0; p < topology.pods; ++p) {
    for (std::uint32_t r = 0; r < topology.racks_per_pod; ++r) {
      for (std::uint32_t h = 0; h < topology.hosts_per_rack; ++h) {
        HostView& v = by_host[(static_cast<std::size_t>(p) * topology.racks_per_pod + r) *
                                  topology.hosts_per_rack +
                              h];
        v.pod = fmt::format("p{}", p);
        v.rack = fmt::format("p{}-r{}", p, r);
        v.name = fmt::format("p{}-r{}-h{}", p, r, h);
        v.memory_total_mib = topology.host_memory_gib * 1024;
        v.vcpus_total = topology.host_vcpus;
      }
    }
  }
  host_at_.resize(n);
  std::iota(host_at_.begin(), host_at_.end(), 0u);
  std::sort(host_at_.begin(), host_at_.end(), [&](std::uint32_t a, std::uint32_t b) {
    return by_host[a].name < by_host[b].name;
  });
  pos_.resize(n);
  views_.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    pos_[host_at_[i]] = i;
    views_.push_back(std::move(by_host[host_at_[i]]));
  }
  host_vms_.resize(n);
  counts_.assign(kinds * n, 0);
  kind_hosts_.resize(kinds);
  kind_host_pos_.assign(kinds * n, -1);
  permutation_.resize(n);
  std::iota(permutation_.begin(), permutation_.end(), 0u);
}

PathTier SimInventory::TierBetween(std::uint32_t a, std::uint32_t b) const {
  if (rack_of(a) == rack_of(b)) return PathTier::kSameRack;
  if (pod_of(a) == pod_of(b)) return PathTier::kSamePod;
  return PathTier::kCrossPod;
}

std::uint32_t SimInventory::AddVm(const SimVm& vm) {
  vms_.push_back(vm);
  vms_.back().host = kNoHost;
  return static_cast<std::uint32_t>(vms_.size() - 1);
}

void SimInventory::CountKind(std::uint32_t kind, std::uint32_t host, int delta) {
  const std::size_t cell = Cell(kind, host);
  const std::uint32_t before = counts_[cell];
  counts_[cell] = static_cast<std::uint32_t>(static_cast<int>(before) + delta);
  if (before == 0 && counts_[cell] > 0) {
    kind_host_pos_[cell] = static_cast<std::int32_t>(kind_hosts_[kind].size());
    kind_hosts_[kind].push_back(host);
  } else if (before > 0 && counts_[cell] == 0) {
    auto& list = kind_hosts_[kind];
    const std::int32_t pos = kind_host_pos_[cell];
    const std::uint32_t last = list.back();
    list[pos] = last;
    kind_host_pos_[Cell(kind, last)] = pos;
    list.pop_back();
    kind_host_pos_[cell] = -1;
  }
}

void SimInventory::AddToHost(std::uint32_t vm, std::uint32_t host) {
  vms_[vm].host = host;
  host_vms_[host].push_back(vm);
  CountKind(vms_[vm].kind, host, +1);
}

void SimInventory::Place(std::uint32_t vm, std::uint32_t host) {
  assert(vms_[vm].host == kNoHost);
  Reserve(vm, host);
  AddToHost(vm, host);
}

void SimInventory::Reserve(std::uint32_t vm, std::uint32_t host) {
  HostView& hv = views_[pos_[host]];
  hv.memory_used_mib += vms_[vm].memory_mib;
  hv.vcpus_used += vms_[vm].vcpus;
}

void SimInventory::Move(std::uint32_t vm, std::uint32_t host) {
  SimVm& v = vms_[vm];
  const std::uint32_t from = v.host;
  assert(from != kNoHost && from != host);
  HostView& hv = views_[pos_[from]];
  hv.memory_used_mib -= v.memory_mib;
  hv.vcpus_used -= v.vcpus;
  auto& list = host_vms_[from];
  list.erase(std::find(list.begin(), list.end(), vm));
  CountKind(v.kind, from, -1);
  AddToHost(vm, host);
}

std::optional<std::uint32_t> SimInventory::PlaceNew(std::uint32_t vm, PlacementPolicy policy,
                                                    std::uint32_t candidate_hosts, Rng& rng) {
  const SimVm& v = vms_[vm];
  const VmDemand demand{v.memory_mib, v.vcpus};
  const std::size_t n = views_.size();
  std::optional<std::uint32_t> host;
  if (candidate_hosts == 0 || candidate_hosts >= n) {
    const std::uint32_t* counts = &counts_[Cell(v.kind, 0)];
    for (std::size_t i = 0; i < n; ++i) views_[i].same_kind_vms = counts[host_at_[i]];
    const Decision d = ChoosePlacement(views_, demand, policy, rng.NextU64(),
                                       DecisionOptions{.explain = false, .sorted_by_name = true});
    if (d.chosen) host = host_at_[*d.chosen];
  } else {
    // A partial Fisher-Yates shuffle draws a uniform sample without repeats.
    scratch_.clear();
    scratch_index_.clear();
    for (std::uint32_t i = 0; i < candidate_hosts; ++i) {
      const std::size_t j = i + rng.Below(n - i);
      std::swap(permutation_[i], permutation_[j]);
      const std::uint32_t h = permutation_[i];
      scratch_index_.push_back(h);
      scratch_.push_back(view(h));
      scratch_.back().same_kind_vms = counts_[Cell(v.kind, h)];
    }
    const Decision d = ChoosePlacement(scratch_, demand, policy, rng.NextU64(),
                                       DecisionOptions{.explain = false});
    if (d.chosen) host = scratch_index_[*d.chosen];
  }
  if (host) Place(vm, *host);
  return host;
}

std::optional<std::uint32_t> SimInventory::ExplainedPlacementOverAll(std::uint32_t vm,
                                                                     PlacementPolicy policy,
                                                                     std::uint64_t seed) const {
  const SimVm& v = vms_[vm];
  std::vector<HostView> hosts;
  for (std::uint32_t h = 0; h < views_.size(); ++h) {
    hosts.push_back(view(h));
    hosts.back().same_kind_vms = counts_[Cell(v.kind, h)];
  }
  const Decision d = ChoosePlacement(hosts, VmDemand{v.memory_mib, v.vcpus}, policy, seed);
  if (!d.chosen) return std::nullopt;
  return static_cast<std::uint32_t>(*d.chosen);
}

std::optional<DestinationChoice> SimInventory::Ask(std::span<const std::uint32_t> hosts,
                                                   std::uint32_t vm) {
  const SimVm& v = vms_[vm];
  scratch_.clear();
  std::size_t source = hosts.size();
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    const std::uint32_t h = hosts[i];
    scratch_.push_back(view(h));
    std::uint32_t same = counts_[Cell(v.kind, h)];
    if (h == v.host) {
      source = i;
      --same;  // the migrating VM is no donor to itself
    }
    scratch_.back().same_kind_vms = same;
  }
  assert(source < hosts.size());
  const Decision d = ChooseDestination(scratch_, source, VmDemand{v.memory_mib, v.vcpus}, cost_,
                                       DecisionOptions{.explain = false});
  if (!d.chosen) return std::nullopt;
  return DestinationChoice{hosts[*d.chosen], d.has_donor};
}

std::optional<DestinationChoice> SimInventory::AskRange(std::uint32_t first, std::uint32_t count,
                                                        std::uint32_t vm) {
  scratch_index_.resize(count);
  std::iota(scratch_index_.begin(), scratch_index_.end(), first);
  return Ask(scratch_index_, vm);
}

void SimInventory::KindHosts(std::uint32_t kind, std::uint32_t pod, bool in_pod,
                             std::uint32_t source) {
  scratch_index_.clear();
  bool has_source = false;
  for (std::uint32_t h : kind_hosts_[kind]) {
    if ((pod_of(h) == pod) != in_pod) continue;
    scratch_index_.push_back(h);
    has_source = has_source || h == source;
  }
  if (!has_source) scratch_index_.push_back(source);
}

std::optional<DestinationChoice> SimInventory::ChooseDestinationFor(std::uint32_t vm) {
  const SimVm& v = vms_[vm];
  const std::uint32_t source = v.host;
  const std::uint32_t pod = pod_of(source);
  // 1. The source's rack.
  const std::uint32_t rack_first = rack_of(source) * hosts_per_rack_;
  const std::optional<DestinationChoice> in_rack = AskRange(rack_first, hosts_per_rack_, vm);
  if (in_rack && in_rack->has_donor) return in_rack;
  // 2. The hosts of the source's pod that run the kind.
  KindHosts(v.kind, pod, true, source);
  if (scratch_index_.size() > 1) {
    const std::optional<DestinationChoice> in_pod = Ask(scratch_index_, vm);
    if (in_pod && in_pod->has_donor) return in_pod;
  }
  // 3. The hosts of other pods that run the kind.
  KindHosts(v.kind, pod, false, source);
  if (scratch_index_.size() > 1) {
    const std::optional<DestinationChoice> any = Ask(scratch_index_, vm);
    if (any && any->has_donor) return any;
  }
  // 4. No donor host has room: the cheapest host with room.
  if (in_rack) return in_rack;
  if (hosts_per_pod_ > hosts_per_rack_) {
    const std::optional<DestinationChoice> in_pod =
        AskRange(pod * hosts_per_pod_, hosts_per_pod_, vm);
    if (in_pod) return in_pod;
  }
  if (views_.size() > hosts_per_pod_) {
    return AskRange(0, static_cast<std::uint32_t>(views_.size()), vm);
  }
  return std::nullopt;
}

std::optional<DestinationChoice> SimInventory::ChooseDestinationOverAll(std::uint32_t vm) const {
  const SimVm& v = vms_[vm];
  std::vector<HostView> hosts;
  for (std::uint32_t h = 0; h < views_.size(); ++h) {
    hosts.push_back(view(h));
    hosts.back().same_kind_vms = counts_[Cell(v.kind, h)] - (h == v.host ? 1 : 0);
  }
  const Decision d = ChooseDestination(hosts, v.host, VmDemand{v.memory_mib, v.vcpus}, cost_);
  if (!d.chosen) return std::nullopt;
  return DestinationChoice{static_cast<std::uint32_t>(*d.chosen), d.has_donor};
}

}  // namespace escdr::sim
