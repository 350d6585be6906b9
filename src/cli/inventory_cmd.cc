// `escdr host|vm|place|destination|link|migration ...`: the inventory from the
// command line (docs/cli-inventory.md). Every command opens the inventory of
// --db (default <state-dir>/inventory.db), does one transaction and prints a
// table, or one JSON document with --json.
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/inventory_access.h"
#include "cli/units.h"
#include "escdr/inventory/inventory.h"
#include "escdr/placement/placement.h"

namespace escdr::cli {
namespace {

using nlohmann::json;

void PrintJson(const json& doc) {
  std::fputs(doc.dump(2, ' ', false, json::error_handler_t::replace).c_str(), stdout);
  std::fputc('\n', stdout);
}

void Print(const std::string& text) { std::fputs(text.c_str(), stdout); }

Result<std::uint32_t> ParseCount(const std::string& flag, long long value) {
  if (value <= 0) {
    return Err(Status::InvalidArgument(fmt::format("{} {} must be > 0", flag, value)));
  }
  if (value > (1 << 20)) {
    return Err(Status::InvalidArgument(fmt::format("{} {} is too large", flag, value)));
  }
  return static_cast<std::uint32_t>(value);
}

std::string Percent(double v) { return fmt::format("{:.0f}%", v * 100); }

std::string Mib(std::uint64_t mib) { return HumanBytes(static_cast<double>(mib) * 1024 * 1024); }

json KindJson(const VmKind& k) {
  return {{"os", k.os},
          {"os_version", k.os_version},
          {"hypervisor", k.hypervisor},
          {"hypervisor_version", k.hypervisor_version}};
}

json HostJson(const Host& h) {
  return {{"name", h.name},
          {"agent_address", h.agent_address},
          {"rack", h.rack},
          {"pod", h.pod},
          {"memory_mib", h.memory_mib},
          {"vcpus", h.vcpus},
          {"state", HostStateName(h.state)},
          {"memory_used_mib", h.memory_used_mib},
          {"vcpus_used", h.vcpus_used},
          {"memory_reserved_mib", h.memory_reserved_mib},
          {"vcpus_reserved", h.vcpus_reserved},
          {"vm_count", h.vm_count},
          {"created_at", h.created_at},
          {"qemu_versions", h.qemu_versions}};
}

// "7.2.19 10.0.13", or "-" if the host reported none.
std::string QemuColumn(const Host& h) {
  std::string out;
  for (const std::string& v : h.qemu_versions) out += (out.empty() ? "" : " ") + v;
  return out.empty() ? "-" : out;
}

json VmJson(const Vm& v) {
  return {{"name", v.name},
          {"host", v.host},
          {"kind", KindJson(v.kind)},
          {"memory_mib", v.memory_mib},
          {"vcpus", v.vcpus},
          {"state", VmStateName(v.state)},
          {"launch_spec", v.launch_spec},
          {"ram_path", v.ram_path},
          {"created_at", v.created_at},
          {"updated_at", v.updated_at},
          {"qemu_version", v.qemu_version},
          {"qemu_series", RunSeries(v)}};
}

json MigrationJson(const Migration& m) {
  const MigrationFigures& f = m.figures;
  return {{"id", m.id},
          {"vm", m.vm},
          {"kind", KindJson(m.kind)},
          {"source", m.source},
          {"destination", m.destination},
          {"donor", m.donor},
          {"memory_mib", m.memory_mib},
          {"vcpus", m.vcpus},
          {"outcome", MigrationOutcomeName(m.outcome)},
          {"bytes_on_wire", f.bytes_on_wire},
          {"bytes_saved_position", f.bytes_saved_position},
          {"bytes_saved_content", f.bytes_saved_content},
          {"fallback_pages", f.fallback_pages},
          {"total_ms", f.total_ms},
          {"downtime_ms", f.downtime_ms},
          {"error", f.error},
          {"started_at", m.started_at},
          {"finished_at", m.finished_at},
          {"qemu_version", m.qemu_version}};
}

// The ranking of a decision as JSON, one object per candidate.
json RankingJson(const std::vector<HostView>& candidates, const Decision& d) {
  json out = json::array();
  for (const CandidateExplanation& c : d.ranking) {
    json item{{"host", c.host},
              {"eligible", c.eligible},
              {"load", c.load},
              {"reason", c.reason}};
    for (const HostView& h : candidates) {
      if (h.name == c.host) item["same_kind_vms"] = h.same_kind_vms;
    }
    if (c.path_cost) item["path_cost"] = *c.path_cost;
    if (c.path_cost || c.has_donor) item["has_donor"] = c.has_donor;
    out.push_back(std::move(item));
  }
  return out;
}

// The ranking as a table; at most `limit` rows (0: all).
void PrintRanking(const std::vector<HostView>& candidates, const Decision& d, bool destination,
                  std::size_t limit) {
  std::vector<std::string> head = {">RANK", "HOST", "ELIGIBLE", ">LOAD"};
  if (destination) {
    head.insert(head.end(), {">PATH COST", ">DONORS"});
  } else {
    head.push_back(">SAME KIND");
  }
  head.push_back("REASON");
  Table t(head);
  std::size_t shown = 0;
  for (std::size_t i = 0; i < d.ranking.size(); ++i) {
    if (limit != 0 && shown == limit) break;
    const CandidateExplanation& c = d.ranking[i];
    std::uint32_t same = 0;
    for (const HostView& h : candidates) {
      if (h.name == c.host) same = h.same_kind_vms;
    }
    std::vector<std::string> row = {c.eligible ? std::to_string(i + 1) : "-", c.host,
                                    c.eligible ? "yes" : "no", Percent(c.load)};
    if (destination) {
      row.push_back(c.path_cost ? std::to_string(*c.path_cost) : "none");
      row.push_back(std::to_string(same));
    } else {
      row.push_back(std::to_string(same));
    }
    row.push_back(c.reason);
    t.AddRow(std::move(row));
    ++shown;
  }
  Print(t.Render());
  if (shown < d.ranking.size()) {
    std::printf("... %zu more candidates (--limit 0 shows all)\n", d.ranking.size() - shown);
  }
}

// ------------------------------------------------------------------ kind flags

struct KindFlags {
  std::string os, os_version, hypervisor, hypervisor_version;

  void AddTo(CLI::App* cmd) {
    cmd->add_option("--os", os, "Guest OS, e.g. debian")->required();
    cmd->add_option("--os-version", os_version, "Guest OS version, e.g. 12")->required();
    cmd->add_option("--hypervisor", hypervisor, "Hypervisor, e.g. qemu")->required();
    cmd->add_option("--hypervisor-version", hypervisor_version, "Hypervisor version, e.g. 7.2")
        ->required();
  }
  VmKind Kind() const { return {os, os_version, hypervisor, hypervisor_version}; }
};

struct PolicyFlags {
  std::string policy = "spread";
  std::uint64_t seed = 0;
  bool explain = false;
  std::size_t limit = 20;

  void AddTo(CLI::App* cmd) {
    cmd->add_option("--policy", policy, "spread (default), pack or random");
    cmd->add_option("--seed", seed, "Seed of the random policy");
    cmd->add_flag("--explain", explain, "Show every candidate host and why it won or lost");
    cmd->add_option("--limit", limit, "Candidates shown by --explain (0: all; default 20)");
  }
  Result<PlacementOptions> Options() const {
    PlacementOptions o;
    ESCDR_ASSIGN_OR_RETURN(o.policy, ParsePlacementPolicy(policy));
    o.seed = seed;
    o.explain = explain;
    return o;
  }
};

// ----------------------------------------------------------------------- host

struct HostArgs {
  std::string name, agent, rack, pod, memory, state;
  long long vcpus = 0;
  std::vector<std::string> qemu_versions;
};

void RunHostAdd(const GlobalOptions& global, const HostArgs& a) {
  HostSpec spec;
  spec.name = a.name;
  spec.agent_address = a.agent;
  spec.rack = a.rack;
  spec.pod = a.pod;
  spec.memory_mib = Unwrap(ParseMib("--memory", a.memory));
  spec.vcpus = Unwrap(ParseCount("--vcpus", a.vcpus));
  spec.qemu_versions = a.qemu_versions;
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Host h = Unwrap(inv->AddHost(spec));
  if (global.json) return PrintJson(HostJson(h));
  const std::string qemu =
      h.qemu_versions.empty() ? "" : ", QEMU " + QemuVersionsText(h.qemu_versions);
  std::printf("added host %s (%s, %u vCPUs%s)\n", h.name.c_str(), Mib(h.memory_mib).c_str(),
              h.vcpus, qemu.c_str());
}

void RunHostList(const GlobalOptions& global) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  std::vector<Host> hosts = Unwrap(inv->ListHosts());
  if (global.json) {
    json arr = json::array();
    for (const Host& h : hosts) arr.push_back(HostJson(h));
    return PrintJson(json{{"hosts", arr}});
  }
  Table t({"NAME", "STATE", "POD", "RACK", ">VMS", ">MEMORY USED", ">MEMORY", ">VCPUS USED",
           ">VCPUS", ">RESERVED", "QEMU", "AGENT"});
  for (const Host& h : hosts) {
    t.AddRow({h.name, HostStateName(h.state), h.pod, h.rack, std::to_string(h.vm_count),
              Mib(h.memory_used_mib), Mib(h.memory_mib), std::to_string(h.vcpus_used),
              std::to_string(h.vcpus), h.memory_reserved_mib ? Mib(h.memory_reserved_mib) : "-",
              QemuColumn(h), h.agent_address});
  }
  Print(t.Render());
}

void RunHostShow(const GlobalOptions& global, const std::string& name) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Host h = Unwrap(inv->GetHost(name));
  VmFilter filter;
  filter.host = name;
  std::vector<Vm> vms = Unwrap(inv->ListVms(filter));
  if (global.json) {
    json doc = HostJson(h);
    json arr = json::array();
    for (const Vm& v : vms) arr.push_back(VmJson(v));
    doc["vms"] = arr;
    return PrintJson(doc);
  }
  Table t({"FIELD", "VALUE"});
  t.AddRow({"name", h.name});
  t.AddRow({"state", HostStateName(h.state)});
  t.AddRow({"agent", h.agent_address.empty() ? "-" : h.agent_address});
  t.AddRow({"pod / rack", (h.pod.empty() ? "-" : h.pod) + " / " + (h.rack.empty() ? "-" : h.rack)});
  t.AddRow({"memory", fmt::format("{} used of {} ({} reserved for incoming migrations)",
                                  Mib(h.memory_used_mib), Mib(h.memory_mib),
                                  Mib(h.memory_reserved_mib))});
  t.AddRow({"vCPUs", fmt::format("{} used of {} ({} reserved)", h.vcpus_used, h.vcpus,
                                 h.vcpus_reserved)});
  t.AddRow({"VMs", std::to_string(h.vm_count)});
  t.AddRow({"QEMU", QemuVersionsText(h.qemu_versions)});
  t.AddRow({"added", h.created_at});
  Print(t.Render());
  if (vms.empty()) return;
  std::printf("\n");
  Table vt({"VM", "STATE", "KIND", "QEMU", ">MEMORY", ">VCPUS"});
  for (const Vm& v : vms) {
    vt.AddRow({v.name, VmStateName(v.state), v.kind.ToString(), RunSeries(v), Mib(v.memory_mib),
               std::to_string(v.vcpus)});
  }
  Print(vt.Render());
}

void RunHostRemove(const GlobalOptions& global, const std::string& name) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Check(inv->RemoveHost(name));
  if (global.json) return PrintJson(json{{"removed", name}});
  std::printf("removed host %s\n", name.c_str());
}

void RunHostSetState(const GlobalOptions& global, const HostArgs& a) {
  const HostState state = Unwrap(ParseHostState(a.state));
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Check(inv->SetHostState(a.name, state));
  if (global.json) return PrintJson(HostJson(Unwrap(inv->GetHost(a.name))));
  std::printf("host %s is now %s\n", a.name.c_str(), HostStateName(state));
}

// ------------------------------------------------------------------------- vm

struct VmArgs {
  std::string name, host, memory, state = "defined", launch_spec, ram_path, qemu_series;
  long long vcpus = 0;
  KindFlags kind;
  PolicyFlags policy;
};

void PrintPlacement(const GlobalOptions& global, const std::string& verb, const std::string& vm,
                    const PlacementPlan& plan, const PolicyFlags& flags, const Vm* placed) {
  const Decision& d = plan.decision;
  if (global.json) {
    json doc{{"host", d.chosen ? json(plan.candidates[*d.chosen].name) : json(nullptr)},
             {"policy", flags.policy},
             {"qemu_series", plan.qemu_series},
             {"hosts_total", plan.hosts_total},
             {"candidates", RankingJson(plan.candidates, d)}};
    if (placed) doc["vm"] = VmJson(*placed);
    return PrintJson(doc);
  }
  if (d.chosen) {
    std::printf("%s %s on %s: %s\n", verb.c_str(), vm.c_str(),
                plan.candidates[*d.chosen].name.c_str(), d.ranking.front().reason.c_str());
  } else {
    std::printf("no host has room\n");
  }
  if (flags.explain) {
    std::printf("\n%s policy; %zu candidates preselected out of %llu hosts (only hosts that run "
                "QEMU %s)\n",
                flags.policy.c_str(), plan.candidates.size(),
                static_cast<unsigned long long>(plan.hosts_total), plan.qemu_series.c_str());
    PrintRanking(plan.candidates, d, false, flags.limit);
  }
}

void RunVmAdd(const GlobalOptions& global, const VmArgs& a) {
  VmSpec spec;
  spec.name = a.name;
  spec.host = a.host;
  spec.kind = a.kind.Kind();
  spec.memory_mib = Unwrap(ParseMib("--memory", a.memory));
  spec.vcpus = Unwrap(ParseCount("--vcpus", a.vcpus));
  spec.state = Unwrap(ParseVmState(a.state));
  spec.launch_spec = a.launch_spec;
  spec.ram_path = a.ram_path;
  spec.qemu_version = a.qemu_series;
  Check(ValidateVmSpec(spec));
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  if (!spec.host.empty()) {
    Vm v = Unwrap(inv->AddVm(spec));
    if (global.json) return PrintJson(VmJson(v));
    std::printf("added VM %s on %s\n", v.name.c_str(), v.host.c_str());
    return;
  }
  const PlacementOptions options = Unwrap(a.policy.Options());
  Inventory::Placed placed = Unwrap(inv->PlaceVm(spec, options));
  PrintPlacement(global, "placed", placed.vm.name, placed.plan, a.policy, &placed.vm);
}

void RunVmList(const GlobalOptions& global, const std::string& host) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  VmFilter filter;
  filter.host = host;
  std::vector<Vm> vms = Unwrap(inv->ListVms(filter));
  if (global.json) {
    json arr = json::array();
    for (const Vm& v : vms) arr.push_back(VmJson(v));
    return PrintJson(json{{"vms", arr}});
  }
  // QEMU: the series it runs on, which differs from HV VERSION (its kind's)
  // after a migration to a newer QEMU.
  Table t({"NAME", "HOST", "STATE", "OS", "OS VERSION", "HYPERVISOR", "HV VERSION", "QEMU",
           ">MEMORY", ">VCPUS"});
  for (const Vm& v : vms) {
    t.AddRow({v.name, v.host, VmStateName(v.state), v.kind.os, v.kind.os_version,
              v.kind.hypervisor, v.kind.hypervisor_version, RunSeries(v), Mib(v.memory_mib),
              std::to_string(v.vcpus)});
  }
  Print(t.Render());
}

void RunVmShow(const GlobalOptions& global, const std::string& name) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Vm v = Unwrap(inv->GetVm(name));
  MigrationFilter filter;
  filter.vm = name;
  filter.limit = 10;
  std::vector<Migration> log = Unwrap(inv->ListMigrations(filter));
  if (global.json) {
    json doc = VmJson(v);
    json arr = json::array();
    for (const Migration& m : log) arr.push_back(MigrationJson(m));
    doc["migrations"] = arr;
    return PrintJson(doc);
  }
  Table t({"FIELD", "VALUE"});
  t.AddRow({"name", v.name});
  t.AddRow({"host", v.host});
  t.AddRow({"state", VmStateName(v.state)});
  t.AddRow({"kind", v.kind.ToString()});
  t.AddRow({"QEMU series", v.qemu_version.empty() ? RunSeries(v) + " (its kind's)"
                                                  : v.qemu_version + " (migrated from " +
                                                        v.kind.hypervisor_version + ")"});
  t.AddRow({"memory", Mib(v.memory_mib)});
  t.AddRow({"vCPUs", std::to_string(v.vcpus)});
  t.AddRow({"RAM file", v.ram_path.empty() ? "-" : v.ram_path});
  t.AddRow({"launch spec", v.launch_spec.empty() ? "-" : v.launch_spec});
  t.AddRow({"added", v.created_at});
  t.AddRow({"changed", v.updated_at});
  Print(t.Render());
  if (log.empty()) return;
  std::printf("\nrecent migrations:\n");
  Table mt({">ID", "OUTCOME", "FROM", "TO", "DONOR", ">ON WIRE", ">SAVED", "STARTED"});
  for (const Migration& m : log) {
    mt.AddRow({std::to_string(m.id), MigrationOutcomeName(m.outcome), m.source, m.destination,
               m.donor.empty() ? "-" : m.donor,
               HumanBytes(static_cast<double>(m.figures.bytes_on_wire)),
               HumanBytes(static_cast<double>(m.figures.bytes_saved_position +
                                              m.figures.bytes_saved_content)),
               m.started_at});
  }
  Print(mt.Render());
}

void RunVmRemove(const GlobalOptions& global, const std::string& name) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Check(inv->RemoveVm(name));
  if (global.json) return PrintJson(json{{"removed", name}});
  std::printf("removed VM %s\n", name.c_str());
}

// ---------------------------------------------------------- place, destination

void RunPlace(const GlobalOptions& global, const VmArgs& a) {
  const VmKind kind = a.kind.Kind();
  Check(kind.Validate());
  const VmDemand demand{Unwrap(ParseMib("--memory", a.memory)),
                        Unwrap(ParseCount("--vcpus", a.vcpus))};
  const PlacementOptions options = Unwrap(a.policy.Options());
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  PlacementPlan plan = Unwrap(inv->PlanPlacement(kind, demand, options));
  if (!plan.decision.chosen && !global.json) {
    // Same distinction as PlaceVm: too big for every host vs no room now.
    std::vector<Host> hosts = Unwrap(inv->ListHosts());
    std::uint64_t max_mem = 0;
    std::uint32_t max_cpu = 0;
    for (const Host& h : hosts) {
      max_mem = std::max(max_mem, h.memory_mib);
      max_cpu = std::max(max_cpu, h.vcpus);
    }
    if (hosts.empty()) Fail(Status::ResourceExhausted("cannot place: the inventory has no hosts"));
    if (demand.memory_mib > max_mem || demand.vcpus > max_cpu) {
      Fail(Status::InvalidArgument(fmt::format(
          "cannot place: the VM needs {} MiB and {} vCPUs, more than any host has (largest: {} "
          "MiB, {} vCPUs)",
          demand.memory_mib, demand.vcpus, max_mem, max_cpu)));
    }
    bool up = false, up_with_series = false;
    for (const Host& h : hosts) {
      if (h.state != HostState::kUp) continue;
      up = true;
      up_with_series = up_with_series || HostRunsQemuSeries(h, plan.qemu_series);
    }
    if (up && !up_with_series) {
      Fail(Status::FailedPrecondition(
          fmt::format("cannot place: no host that is up runs QEMU {}", plan.qemu_series)));
    }
    if (a.policy.explain) PrintPlacement(global, "would place", "the VM", plan, a.policy, nullptr);
    Fail(Status::ResourceExhausted(fmt::format(
        "cannot place: no host has room for {} MiB and {} vCPUs now", demand.memory_mib,
        demand.vcpus)));
  }
  PrintPlacement(global, "would place", "the VM", plan, a.policy, nullptr);
}

struct DestinationArgs {
  std::string vm, qemu_series;
  bool explain = false;
  std::size_t limit = 20;
};

void RunDestination(const GlobalOptions& global, const DestinationArgs& a) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  DestinationPlan plan = Unwrap(inv->PlanDestination(a.vm, a.qemu_series));
  const Decision& d = plan.decision;
  const std::string chosen = d.chosen ? plan.candidates[*d.chosen].name : "";
  if (global.json) {
    PrintJson(json{{"vm", plan.vm},
                   {"kind", KindJson(plan.kind)},
                   {"run_series", plan.run_series},
                   {"qemu_series", plan.qemu_series},
                   {"source", plan.source},
                   {"destination", d.chosen ? json(chosen) : json(nullptr)},
                   {"has_donor", d.has_donor},
                   {"donor", plan.donor},
                   {"path_costs", plan.link_graph ? "link graph" : "rack/pod"},
                   {"hosts_total", plan.hosts_total},
                   {"candidates", RankingJson(plan.candidates, d)}});
    if (!d.chosen) Fail(Status::ResourceExhausted("no destination has room for VM " + a.vm));
    return;
  }
  if (!d.chosen) {
    if (a.explain) PrintRanking(plan.candidates, d, true, a.limit);
    Fail(Status::ResourceExhausted(fmt::format(
        "no destination for VM {}: no host other than {} has room for {} and {} vCPUs and runs "
        "QEMU {}",
        a.vm, plan.source, Mib(plan.demand.memory_mib), plan.demand.vcpus, plan.qemu_series)));
  }
  const std::string upgrade =
      plan.qemu_series == plan.run_series
          ? ""
          : fmt::format(" on QEMU {} (from {})", plan.qemu_series, plan.run_series);
  if (d.has_donor) {
    std::printf("destination for %s: %s%s (donor %s; %s)\n", a.vm.c_str(), chosen.c_str(),
                upgrade.c_str(), plan.donor.c_str(), d.ranking.front().reason.c_str());
  } else {
    std::printf("destination for %s: %s%s (no donor: no host with room runs %s, so this "
                "migration will save nothing)\n",
                a.vm.c_str(), chosen.c_str(), upgrade.c_str(), plan.kind.ToString().c_str());
  }
  if (a.explain) {
    std::printf("\nfrom %s; path costs from %s; %zu candidates out of %llu hosts (only hosts that "
                "run QEMU %s)\n",
                plan.source.c_str(), plan.link_graph ? "the link graph" : "rack and pod",
                plan.candidates.size(), static_cast<unsigned long long>(plan.hosts_total),
                plan.qemu_series.c_str());
    PrintRanking(plan.candidates, d, true, a.limit);
  }
}

// ------------------------------------------------------------ link, migration

struct LinkArgs {
  std::string a, b;
  long long cost = 1;
};

void RunLinkSet(const GlobalOptions& global, const LinkArgs& a) {
  if (a.cost <= 0) Fail(Status::InvalidArgument(fmt::format("--cost {} must be > 0", a.cost)));
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Check(inv->SetLink({a.a, a.b, static_cast<std::uint64_t>(a.cost)}));
  if (global.json) return PrintJson(json{{"a", a.a}, {"b", a.b}, {"cost", a.cost}});
  std::printf("link %s - %s costs %lld\n", a.a.c_str(), a.b.c_str(), a.cost);
}

void RunLinkList(const GlobalOptions& global) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  std::vector<Link> links = Unwrap(inv->ListLinks());
  if (global.json) {
    json arr = json::array();
    for (const Link& l : links) arr.push_back(json{{"a", l.a}, {"b", l.b}, {"cost", l.cost}});
    return PrintJson(json{{"links", arr}});
  }
  Table t({"A", "B", ">COST"});
  for (const Link& l : links) t.AddRow({l.a, l.b, std::to_string(l.cost)});
  Print(t.Render());
}

void RunLinkRemove(const GlobalOptions& global, const LinkArgs& a) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Check(inv->RemoveLink(a.a, a.b));
  if (global.json) return PrintJson(json{{"removed", json{{"a", a.a}, {"b", a.b}}}});
  std::printf("removed link %s - %s\n", a.a.c_str(), a.b.c_str());
}

void RunMigrationList(const GlobalOptions& global, const MigrationFilter& filter) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  std::vector<Migration> log = Unwrap(inv->ListMigrations(filter));
  if (global.json) {
    json arr = json::array();
    for (const Migration& m : log) arr.push_back(MigrationJson(m));
    return PrintJson(json{{"migrations", arr}});
  }
  Table t({">ID", "VM", "OUTCOME", "FROM", "TO", "DONOR", "QEMU", ">ON WIRE", ">SAVED",
           ">FALLBACKS", ">TIME", ">DOWNTIME", "STARTED"});
  for (const Migration& m : log) {
    const MigrationFigures& f = m.figures;
    const bool done = m.outcome != MigrationOutcome::kInProgress;
    t.AddRow({std::to_string(m.id), m.vm, MigrationOutcomeName(m.outcome), m.source,
              m.destination, m.donor.empty() ? "-" : m.donor,
              m.qemu_version.empty() ? "-" : m.qemu_version,
              done ? HumanBytes(static_cast<double>(f.bytes_on_wire)) : "-",
              done ? HumanBytes(static_cast<double>(f.bytes_saved_position + f.bytes_saved_content))
                   : "-",
              done ? std::to_string(f.fallback_pages) : "-",
              done ? fmt::format("{} ms", f.total_ms) : "-",
              done ? fmt::format("{} ms", f.downtime_ms) : "-", m.started_at});
  }
  Print(t.Render());
}

// --------------------------------------------------------------- registration

void RegisterInventory(CLI::App& app, GlobalOptions& global) {
  // Arguments live as long as the program: CLI11 fills them during parse()
  // and the callbacks read them afterwards.
  CLI::App* host = GetOrAddSubcommand(app, "host", "Hosts in the inventory: add, list, show, "
                                                   "remove, set-state");
  auto ha = std::make_shared<HostArgs>();
  CLI::App* add = host->add_subcommand("add", "Add a host");
  add->add_option("NAME", ha->name, "Host name (unique)")->required();
  add->add_option("--memory", ha->memory, "Memory capacity: MiB, or with M, G or T")->required();
  add->add_option("--vcpus", ha->vcpus, "vCPU capacity")->required();
  add->add_option("--rack", ha->rack, "Rack name (for path costs)");
  add->add_option("--pod", ha->pod, "Pod name (for path costs)");
  add->add_option("--agent", ha->agent, "Address of its escdr agent, host:port");
  add->add_option("--qemu-version", ha->qemu_versions,
                  "A full QEMU version the host runs, e.g. 7.2.19 (repeat, or separate with "
                  "commas; default: not reported, the host is not filtered by QEMU series)")
      ->delimiter(',');
  add->callback([&global, ha] { RunHostAdd(global, *ha); });
  host->add_subcommand("list", "List hosts with their use")->callback([&global] {
    RunHostList(global);
  });
  auto hname = std::make_shared<std::string>();
  CLI::App* hshow = host->add_subcommand("show", "Show one host and its VMs");
  hshow->add_option("NAME", *hname, "Host name")->required();
  hshow->callback([&global, hname] { RunHostShow(global, *hname); });
  CLI::App* hremove = host->add_subcommand("remove", "Remove a host that has no VMs");
  hremove->add_option("NAME", *hname, "Host name")->required();
  hremove->callback([&global, hname] { RunHostRemove(global, *hname); });
  CLI::App* hstate = host->add_subcommand("set-state", "Mark a host up, draining or down");
  hstate->add_option("NAME", ha->name, "Host name")->required();
  hstate->add_option("STATE", ha->state, "up, draining or down")->required();
  hstate->callback([&global, ha] { RunHostSetState(global, *ha); });

  CLI::App* vm = GetOrAddSubcommand(app, "vm", "VMs in the inventory: add, list, show, remove");
  auto va = std::make_shared<VmArgs>();
  CLI::App* vadd = vm->add_subcommand(
      "add", "Register a VM: on --host, or on the host placement chooses (atomically)");
  vadd->add_option("NAME", va->name, "VM name (unique)")->required();
  va->kind.AddTo(vadd);
  vadd->add_option("--memory", va->memory, "Guest memory: MiB, or with M, G or T")->required();
  vadd->add_option("--vcpus", va->vcpus, "vCPUs")->required();
  vadd->add_option("--host", va->host, "The host it runs on (default: let placement choose)");
  vadd->add_option("--state", va->state, "defined (default), running or stopped");
  vadd->add_option("--launch-spec", va->launch_spec, "Launch spec JSON, kept for the agent");
  vadd->add_option("--ram-path", va->ram_path, "Guest RAM file (memory-backend-file)");
  vadd->add_option("--qemu-series", va->qemu_series,
                   "The QEMU series it runs on, e.g. 10.0, if not --hypervisor-version");
  va->policy.AddTo(vadd);
  vadd->callback([&global, va] { RunVmAdd(global, *va); });
  auto vhost = std::make_shared<std::string>();
  CLI::App* vlist = vm->add_subcommand("list", "List VMs");
  vlist->add_option("--host", *vhost, "Only the VMs on this host");
  vlist->callback([&global, vhost] { RunVmList(global, *vhost); });
  auto vname = std::make_shared<std::string>();
  CLI::App* vshow = vm->add_subcommand("show", "Show one VM and its recent migrations");
  vshow->add_option("NAME", *vname, "VM name")->required();
  vshow->callback([&global, vname] { RunVmShow(global, *vname); });
  CLI::App* vremove = vm->add_subcommand("remove", "Remove a VM from the inventory");
  vremove->add_option("NAME", *vname, "VM name")->required();
  vremove->callback([&global, vname] { RunVmRemove(global, *vname); });

  auto pa = std::make_shared<VmArgs>();
  CLI::App* place =
      app.add_subcommand("place", "Where a new VM of this kind and size would go (writes nothing)");
  pa->kind.AddTo(place);
  place->add_option("--memory", pa->memory, "Guest memory: MiB, or with M, G or T")->required();
  place->add_option("--vcpus", pa->vcpus, "vCPUs")->required();
  pa->policy.AddTo(place);
  place->callback([&global, pa] { RunPlace(global, *pa); });

  auto da = std::make_shared<DestinationArgs>();
  CLI::App* dest = app.add_subcommand(
      "destination", "The best migration destination for VM: a host with a donor, nearest first");
  dest->add_option("VM", da->vm, "VM name")->required();
  dest->add_flag("--explain", da->explain, "Show every candidate host and why it won or lost");
  dest->add_option("--limit", da->limit, "Candidates shown by --explain (0: all; default 20)");
  dest->add_option("--qemu-series", da->qemu_series,
                   "The QEMU series to migrate to, e.g. 10.0 (default: the one it runs on)");
  dest->callback([&global, da] { RunDestination(global, *da); });

  CLI::App* link = GetOrAddSubcommand(
      app, "link", "Network links with costs; when any exist they replace rack/pod path costs");
  auto la = std::make_shared<LinkArgs>();
  CLI::App* lset = link->add_subcommand("set", "Add or update the link between A and B");
  lset->add_option("A", la->a, "A host or switch")->required();
  lset->add_option("B", la->b, "A host or switch")->required();
  lset->add_option("--cost", la->cost, "Cost of the link (> 0; default 1)");
  lset->callback([&global, la] { RunLinkSet(global, *la); });
  link->add_subcommand("list", "List links")->callback([&global] { RunLinkList(global); });
  CLI::App* lremove = link->add_subcommand("remove", "Remove the link between A and B");
  lremove->add_option("A", la->a, "A host or switch")->required();
  lremove->add_option("B", la->b, "A host or switch")->required();
  lremove->callback([&global, la] { RunLinkRemove(global, *la); });

  CLI::App* migration = GetOrAddSubcommand(app, "migration", "The migration log");
  auto mf = std::make_shared<MigrationFilter>();
  CLI::App* mlist = migration->add_subcommand("list", "List migrations, newest first");
  mlist->add_option("--vm", mf->vm, "Only the migrations of this VM");
  mlist->add_option("--limit", mf->limit, "At most this many (0: all; default 100)");
  mlist->add_flag("--in-progress", mf->in_progress_only, "Only migrations not finished yet");
  mlist->callback([&global, mf] { RunMigrationList(global, *mf); });
}

}  // namespace

ESCDR_REGISTER_COMMAND(RegisterInventory);

}  // namespace escdr::cli
