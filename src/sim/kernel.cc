#include "sim/kernel.h"

#include <fmt/format.h>
#include <simgrid/plugins/live_migration.h>
#include <simgrid/s4u.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <unordered_map>

#include "escdr/sim/precopy.h"
#include "escdr/sim/random.h"

namespace escdr::sim {
namespace {

namespace sg4 = simgrid::s4u;

// Seed streams: each kind of draw has its own, so that adding draws of one
// kind leaves the others unchanged.
constexpr std::uint64_t kStreamVms = 1;
constexpr std::uint64_t kStreamPlacement = 2;
constexpr std::uint64_t kStreamEvents = 3;
constexpr std::uint64_t kStreamHosts = 4;

double BytesPerSecond(double gbit_s) { return gbit_s * 1e9 / 8; }

sg4::Link* SplitLink(sg4::NetZone* zone, const std::string& name, const LinkTierOptions& tier) {
  sg4::Link* link = zone->create_split_duplex_link(name, BytesPerSecond(tier.bandwidth_gbit_s));
  link->set_latency(tier.latency_us * 1e-6);
  return link;
}

std::vector<sg4::LinkInRoute> Up(const sg4::Link* link) {
  return {sg4::LinkInRoute(link, sg4::LinkInRoute::Direction::UP)};
}

// The network path of one migration: a receiver actor on the destination
// takes what the sender (an actor on the source) puts into a mailbox of its
// own. Mailbox comms, not one-sided Comm::sendto: SimGrid 3.32 ignores
// set_rate() on one-sided comms, and QEMU's max-bandwidth is a rate cap.
class Channel {
 public:
  explicit Channel(sg4::Host* dst) {
    static std::uint64_t next_id = 0;
    mailbox_ = sg4::Mailbox::by_name(fmt::format("migration-{}", next_id++));
    sg4::Mailbox* mailbox = mailbox_;
    // A daemon: it must not keep the simulation alive (or be reported as
    // deadlocked) when a migration stops sending before its last message.
    sg4::Actor::create("receiver", dst, [mailbox] {
      while (*mailbox->get<int>() != kLast) {
      }
    })->daemonize();
  }
  // Starts sending `bytes` at no more than `rate` B/s (0: no cap).
  sg4::CommPtr Start(std::uint64_t bytes, bool last, double rate) {
    sg4::CommPtr comm = mailbox_->put_init(last ? &last_ : &more_, bytes);
    if (rate > 0) comm->set_rate(rate);
    comm->start();
    return comm;
  }

 private:
  static constexpr int kLast = 1;
  int more_ = 0;  // payloads: what the receiver reads, not what is simulated
  int last_ = kLast;
  sg4::Mailbox* mailbox_;
};

// What bounds a round besides the network, in B/s of stream (0: nothing).
struct StreamLimits {
  double max_bandwidth = 0;  // escdr migrate --max-bandwidth: the rate cap, on the wire bytes
  double stream_rate = 0;    // how fast the source hypervisor writes the stream
};

struct Outcome {
  double total_s = 0;
  double downtime_s = 0;
};

// Runs `model` from the calling actor's host (the source) to `dst`, round by
// round. A round is one comm of its wire bytes; under `limits` it also lasts
// at least wire bytes / max-bandwidth (the comm's rate cap: escdr caps the
// agents' connection and lifts QEMU's own limiter) and stream bytes / stream
// rate (an execution on the source host, on one core, that overlaps the
// comm).
Outcome RunPrecopy(Precopy& model, sg4::Host* dst, const StreamLimits& limits) {
  const double start = sg4::Engine::get_clock();
  Channel channel(dst);
  sg4::Host* src = sg4::this_actor::get_host();
  Outcome out;
  Round round = model.First();
  while (true) {
    const double t0 = sg4::Engine::get_clock();
    double cap = 0;
    if (limits.max_bandwidth > 0) cap = limits.max_bandwidth;
    sg4::ExecPtr produce;
    if (limits.stream_rate > 0 && round.stream_bytes > 0) {
      produce = sg4::this_actor::exec_init(static_cast<double>(round.stream_bytes) /
                                           limits.stream_rate * src->get_speed());
      produce->start();
    }
    sg4::CommPtr comm = channel.Start(round.wire_bytes, round.stop_and_copy, cap);
    comm->wait();
    if (produce) produce->wait();
    const double dt = sg4::Engine::get_clock() - t0;
    if (round.stop_and_copy) {
      out.downtime_s = dt;
      break;
    }
    round = model.Next(dt);
  }
  out.total_s = sg4::Engine::get_clock() - start;
  return out;
}

std::chrono::microseconds Micros(double seconds) {
  return std::chrono::microseconds(std::llround(seconds * 1e6));
}

// Runs the workload of one simulation: events pick hosts, lanes migrate VMs.
// Observers subscribe to the signals (the metric collectors below do); the
// core never knows what is collected.
class Kernel {
 public:
  Kernel(const Scenario& scenario, SimInventory& inventory, const std::vector<sg4::Host*>& hosts,
         bool escdr)
      : s_(scenario),
        inv_(inventory),
        hosts_(hosts),
        escdr_(escdr),
        host_rng_(DeriveSeed(scenario.seed, kStreamHosts)),
        busy_(hosts.size(), false),
        incoming_(hosts.size(), 0),
        movable_(hosts.size(), 0),
        remaining_(scenario.workload.migrations) {
    limits_.max_bandwidth = s_.migration.max_bandwidth_mb_s * 1e6;
    limits_.stream_rate = s_.migration.stream_rate_mb_s * 1e6;
    for (std::uint32_t h = 0; h < hosts_.size(); ++h) {
      for (std::uint32_t vm : inv_.vms_on(h)) movable_[h] += inv_.vm(vm).migrating ? 0 : 1;
    }
    for (std::uint32_t h = 0; h < hosts_.size(); ++h) by_name_[inv_.view(h).name] = h;
  }

  std::vector<std::function<void(const MigrationRecord&)>> on_migration_start;
  std::vector<std::function<void(const MigrationRecord&)>> on_migration_end;

  void Start() {
    sg4::Actor::create("workload", hosts_[0], [this] { Workload(); });
  }

  std::uint64_t events() const { return events_; }
  std::uint64_t no_room() const { return no_room_; }

 private:
  struct Lane {
    std::deque<std::uint32_t> vms;
  };

  void Workload() {
    Rng rng(DeriveSeed(s_.seed, kStreamEvents));
    const WorkloadOptions& w = s_.workload;
    std::vector<ScriptedEvent> script = w.script;
    std::stable_sort(script.begin(), script.end(),
                     [](const ScriptedEvent& a, const ScriptedEvent& b) { return a.at_s < b.at_s; });
    const double weights[] = {w.consolidation_weight, w.load_balancing_weight, w.drain_weight};
    const EventType types[] = {EventType::kConsolidation, EventType::kLoadBalancing,
                               EventType::kDrain};
    const double kNever = std::numeric_limits<double>::infinity();
    const double mean_gap = w.events_per_hour > 0 ? 3600.0 / w.events_per_hour : 0;
    double next_random = w.events_per_hour > 0 ? rng.Exponential(mean_gap) : kNever;
    std::size_t next_script = 0;
    // Give up when this many events in a row find nothing to move: the
    // workload cannot use its remaining migrations (e.g. every host is busy
    // or empty for good).
    constexpr int kMaxIdleEvents = 10000;
    int idle = 0;
    while (remaining_ > 0 && idle < kMaxIdleEvents) {
      const bool scripted =
          next_script < script.size() && script[next_script].at_s <= next_random;
      if (!scripted && next_random == kNever) break;
      const double t = scripted ? script[next_script].at_s : next_random;
      sg4::this_actor::sleep_until(t);
      if (scripted) {
        const ScriptedEvent& ev = script[next_script++];
        std::uint32_t host = kNoHost;
        if (!ev.host.empty()) host = by_name_.at(ev.host);
        for (std::uint32_t i = 0; i < ev.count && remaining_ > 0; ++i) {
          idle = Dispatch(ev.type, host) ? 0 : idle + 1;
        }
      } else {
        const EventType type = types[rng.Pick(weights)];
        next_random = t + rng.Exponential(mean_gap);
        idle = Dispatch(type, kNoHost) ? 0 : idle + 1;
      }
    }
  }

  bool Eligible(std::uint32_t h) const {
    return !busy_[h] && incoming_[h] == 0 && movable_[h] > 0 && inv_.view(h).up;
  }

  std::uint32_t PickHost(EventType type) {
    std::uint32_t best = kNoHost;
    double best_load = 0;
    std::uint32_t eligible = 0;
    for (std::uint32_t h = 0; h < hosts_.size(); ++h) {
      if (!Eligible(h)) continue;
      ++eligible;
      const double load = HostLoad(inv_.view(h));
      switch (type) {
        case EventType::kConsolidation:  // the emptiest host with VMs goes
          if (best == kNoHost || load < best_load) best = h, best_load = load;
          break;
        case EventType::kLoadBalancing:  // the fullest host sheds VMs
          if (best == kNoHost || load > best_load) best = h, best_load = load;
          break;
        case EventType::kDrain:  // maintenance comes to a random host
          if (host_rng_.Below(eligible) == 0) best = h;
          break;
      }
    }
    return best;
  }

  // Starts one event; false if it found nothing to move.
  bool Dispatch(EventType type, std::uint32_t host) {
    if (host == kNoHost) host = PickHost(type);
    if (host == kNoHost || !Eligible(host)) return false;
    std::vector<std::uint32_t> vms;
    for (std::uint32_t vm : inv_.vms_on(host)) {
      if (!inv_.vm(vm).migrating) vms.push_back(vm);
    }
    if (type == EventType::kLoadBalancing) {
      // A few VMs drawn at random (partial shuffle).
      const std::size_t k = std::min<std::size_t>(s_.workload.load_balancing_vms, vms.size());
      for (std::size_t i = 0; i < k; ++i) {
        std::swap(vms[i], vms[i + host_rng_.Below(vms.size() - i)]);
      }
      vms.resize(k);
    }
    if (vms.size() > remaining_) vms.resize(remaining_);
    if (vms.empty()) return false;
    remaining_ -= vms.size();
    for (std::uint32_t vm : vms) inv_.vm(vm).migrating = true;
    movable_[host] -= static_cast<std::uint32_t>(vms.size());
    ++events_;
    busy_[host] = true;
    if (type != EventType::kLoadBalancing) inv_.SetUp(host, false);
    sg4::Actor::create("event", hosts_[host],
                       [this, type, host, vms] { RunEvent(type, host, vms); });
    return true;
  }

  void RunEvent(EventType type, std::uint32_t host, std::vector<std::uint32_t> vms) {
    const Cause cause = type == EventType::kConsolidation   ? Cause::kConsolidation
                        : type == EventType::kLoadBalancing ? Cause::kLoadBalancing
                                                            : Cause::kDrain;
    auto lane = std::make_shared<Lane>();
    lane->vms.assign(vms.begin(), vms.end());
    const std::size_t lanes = std::min<std::size_t>(s_.workload.concurrent_per_event, vms.size());
    std::vector<sg4::ActorPtr> actors;
    for (std::size_t i = 0; i < lanes; ++i) {
      actors.push_back(sg4::Actor::create("lane", hosts_[host], [this, lane, cause] {
        while (!lane->vms.empty()) {
          const std::uint32_t vm = lane->vms.front();
          lane->vms.pop_front();
          Migrate(vm, cause);
        }
      }));
    }
    for (const sg4::ActorPtr& a : actors) a->join();
    if (type == EventType::kDrain) sg4::this_actor::sleep_for(s_.workload.maintenance_s);
    if (type == EventType::kConsolidation) {
      sg4::this_actor::sleep_for(s_.workload.consolidation_off_s);
    }
    inv_.SetUp(host, true);
    busy_[host] = false;
  }

  void Migrate(std::uint32_t vm, Cause cause) {
    SimVm& v = inv_.vm(vm);
    const std::optional<DestinationChoice> choice = inv_.ChooseDestinationFor(vm);
    if (!choice) {
      ++no_room_;
      v.migrating = false;
      ++movable_[v.host];
      return;
    }
    const std::uint32_t src = v.host;
    const std::uint32_t dst = choice->host;
    inv_.Reserve(vm, dst);
    ++incoming_[dst];

    MigrationRecord rec;
    rec.vm = vm;
    rec.kind = v.kind;
    rec.source = src;
    rec.destination = dst;
    rec.memory_mib = v.memory_mib;
    rec.cause = cause;
    rec.tier = inv_.TierBetween(src, dst);
    rec.has_donor = choice->has_donor;
    rec.escdr = escdr_;
    rec.start_s = sg4::Engine::get_clock();
    for (const auto& f : on_migration_start) f(rec);

    const bool elide = escdr_ && choice->has_donor;
    Precopy model(PrecopyParams::For(s_.kinds[v.kind], v.memory_mib, v.dirty_rate_mib_s,
                                     v.working_set_fraction, elide, s_.migration));
    const double setup = s_.migration.setup_s + (elide ? s_.migration.donor_scan_s : 0);
    if (setup > 0) sg4::this_actor::sleep_for(setup);
    // Lanes run on the source host (see RunEvent), so the sender is there.
    const Outcome out = RunPrecopy(model, hosts_[dst], limits_);

    rec.end_s = sg4::Engine::get_clock();
    rec.downtime_s = out.downtime_s;
    rec.rounds = model.rounds();
    rec.converged = model.converged();
    rec.report = model.report();
    rec.report.total_time = Micros(out.total_s);
    rec.report.downtime = Micros(out.downtime_s);
    rec.report.downtime_measured = true;
    rec.bytes_saved = model.stream_bytes() - std::min(model.stream_bytes(), model.wire_bytes());

    inv_.Move(vm, dst);
    --incoming_[dst];
    inv_.vm(vm).migrating = false;
    ++movable_[dst];
    for (const auto& f : on_migration_end) f(rec);
  }

  const Scenario& s_;
  SimInventory& inv_;
  const std::vector<sg4::Host*>& hosts_;
  const bool escdr_;
  StreamLimits limits_;
  Rng host_rng_;
  std::vector<bool> busy_;
  std::vector<std::uint32_t> incoming_;
  std::vector<std::uint32_t> movable_;  // [host]: its VMs not migrating (PickHost's test)
  std::uint64_t remaining_;
  std::uint64_t events_ = 0;
  std::uint64_t no_room_ = 0;
  std::unordered_map<std::string, std::uint32_t> by_name_;
};

}  // namespace

sg4::Engine* StartEngine() {
  // SimGrid takes its options from argv; it may rewrite the array.
  // Actor stacks: SimGrid's default is 8 MiB, which glibc serves with an mmap
  // and a munmap (and a TLB flush) per actor; a run creates two actors per
  // migration, and those calls were a third of a run's CPU time. The actors
  // here use a few KiB of stack (no recursion, containers on the heap); the
  // guard page stays, so an overflow faults instead of corrupting memory.
  static std::string args[] = {"escdr-sim", "--log=root.thres:critical",
                               "--cfg=network/optim:Full", "--cfg=contexts/stack-size:256"};
  static char* argv[] = {args[0].data(), args[1].data(), args[2].data(), args[3].data(), nullptr};
  int argc = 4;
  return new sg4::Engine(&argc, argv);
}

std::vector<sg4::Host*> BuildPlatform(const TopologyOptions& t) {
  // SimGrid's star zones route A -> B as A's "up" links then B's "down" links.
  // A zone holding child zones routes to a gateway only if that gateway is
  // inside a child zone too, so each pod's aggregation router sits in a
  // zone of its own.
  std::vector<sg4::Host*> hosts;
  hosts.reserve(t.hosts());
  sg4::NetZone* dc = sg4::create_star_zone("dc");
  for (std::uint32_t p = 0; p < t.pods; ++p) {
    const std::string pod_name = fmt::format("p{}", p);
    sg4::NetZone* pod = sg4::create_star_zone(pod_name);
    pod->set_parent(dc);
    sg4::NetZone* agg = sg4::create_star_zone(pod_name + "-agg");
    agg->set_parent(pod);
    simgrid::kernel::routing::NetPoint* agg_router = agg->create_router(pod_name + "-aggr");
    agg->add_route(agg_router, nullptr, nullptr, nullptr, {}, true);
    agg->seal();
    pod->add_route(agg->get_netpoint(), nullptr, agg_router, nullptr, {}, true);
    for (std::uint32_t r = 0; r < t.racks_per_pod; ++r) {
      const std::string rack_name = fmt::format("p{}-r{}", p, r);
      sg4::NetZone* rack = sg4::create_star_zone(rack_name);
      rack->set_parent(pod);
      simgrid::kernel::routing::NetPoint* tor = rack->create_router(rack_name + "-tor");
      rack->add_route(tor, nullptr, nullptr, nullptr, {}, true);
      for (std::uint32_t h = 0; h < t.hosts_per_rack; ++h) {
        const std::string host_name = fmt::format("{}-h{}", rack_name, h);
        // One core per vCPU: each migration's stream production (an
        // execution, see RunPrecopy) runs on a core of its own.
        sg4::Host* host = rack->create_host(host_name, 1e9);
        host->set_core_count(static_cast<int>(t.host_vcpus));
        const sg4::Link* nic = SplitLink(rack, host_name + "-nic", t.host_link);
        rack->add_route(host->get_netpoint(), nullptr, nullptr, nullptr, Up(nic), true);
        hosts.push_back(host);
      }
      rack->seal();
      const sg4::Link* uplink = SplitLink(pod, rack_name + "-up", t.rack_uplink);
      pod->add_route(rack->get_netpoint(), nullptr, tor, nullptr, Up(uplink), true);
    }
    pod->seal();
    const sg4::Link* uplink = SplitLink(dc, pod_name + "-up", t.pod_uplink);
    dc->add_route(pod->get_netpoint(), nullptr, agg_router, nullptr, Up(uplink), true);
  }
  dc->seal();
  return hosts;
}

void DrawVms(const Scenario& s, SimInventory& inventory) {
  Rng rng(DeriveSeed(s.seed, kStreamVms));
  std::vector<double> weights;
  for (const KindSpec& k : s.kinds) weights.push_back(k.weight);
  for (std::uint64_t i = 0; i < s.vms.count; ++i) {
    SimVm vm;
    vm.kind = static_cast<std::uint32_t>(rng.Pick(weights));
    vm.memory_mib = static_cast<std::uint32_t>(
        std::max<long long>(1, std::llround(s.vms.memory_mib.Sample(rng))));
    vm.vcpus =
        static_cast<std::uint32_t>(std::max<long long>(1, std::llround(s.vms.vcpus.Sample(rng))));
    vm.dirty_rate_mib_s = static_cast<float>(s.vms.dirty_rate_mib_s.Sample(rng));
    vm.working_set_fraction =
        static_cast<float>(std::clamp(s.vms.working_set_fraction.Sample(rng), 0.0, 1.0));
    inventory.AddVm(vm);
  }
}

std::uint64_t PlaceVms(const Scenario& s, PlacementPolicy policy, SimInventory& inventory) {
  Rng rng(DeriveSeed(s.seed, kStreamPlacement));
  std::uint64_t unplaced = 0;
  for (std::uint32_t vm = 0; vm < inventory.vm_count(); ++vm) {
    if (!inventory.PlaceNew(vm, policy, s.placement.candidate_hosts, rng)) ++unplaced;
  }
  return unplaced;
}

RunResult RunWorkload(const Scenario& scenario, SimInventory& inventory,
                      const std::vector<sg4::Host*>& hosts, PlacementPolicy policy, bool escdr) {
  RunResult result;
  result.policy = policy;
  result.escdr = escdr;
  Kernel kernel(scenario, inventory, hosts, escdr);
  std::uint64_t in_flight = 0;
  kernel.on_migration_start.push_back([&](const MigrationRecord&) {
    result.peak_concurrent = std::max(result.peak_concurrent, ++in_flight);
  });
  kernel.on_migration_end.push_back([&](const MigrationRecord& rec) {
    --in_flight;
    result.migrations.push_back(rec);
    result.simulated_s = std::max(result.simulated_s, rec.end_s);
  });
  const auto start = std::chrono::steady_clock::now();
  kernel.Start();
  sg4::Engine::get_instance()->run();
  result.run_wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.events = kernel.events();
  result.migrations_no_room = kernel.no_room();
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    result.peak_rss_kib = static_cast<std::uint64_t>(usage.ru_maxrss);
  }
  return result;
}

CrossCheckResult RunCrossCheckHere(const CrossCheckParams& params) {
  sg_vm_live_migration_plugin_init();
  TopologyOptions t;
  t.pods = 1;
  t.racks_per_pod = 1;
  t.hosts_per_rack = 2;
  t.host_link = LinkTierOptions{params.link_gbit_s, 50};
  t.host_vcpus = 1;  // the plugin's VM runs on a one-core host, as before
  const std::vector<sg4::Host*> hosts = BuildPlatform(t);

  CrossCheckResult result;
  double suspended_at = 0;
  sg4::VirtualMachine::on_suspend_cb(
      [&](const sg4::VirtualMachine&) { suspended_at = sg4::Engine::get_clock(); });
  sg4::VirtualMachine* vm =
      sg_vm_create_migratable(hosts[0], "vm0", 1, static_cast<int>(params.memory_mib),
                              static_cast<int>(params.migration_speed_mib_s),
                              params.dirty_intensity_percent);
  vm->start();
  // The plugin dirties pages in proportion to the computation the VM does.
  sg4::ActorPtr load = sg4::Actor::create("load", vm, [] {
    while (true) sg4::this_actor::execute(1e15);
  });
  sg4::Actor::create("driver", hosts[0], [&] {
    const double t0 = sg4::Engine::get_clock();
    sg_vm_migrate(vm, hosts[1]);
    const double t1 = sg4::Engine::get_clock();
    result.plugin_total_s = t1 - t0;
    result.plugin_downtime_s = t1 - suspended_at;
    load->kill();
    vm->shutdown();

    // The same migration in this simulator's model, on the now idle link.
    const double speed = params.migration_speed_mib_s * 1048576.0;
    PrecopyParams p;
    p.memory_bytes = static_cast<std::uint64_t>(params.memory_mib) << 20;
    p.dirty_rate_bytes_s = params.dirty_intensity_percent / 100.0 * speed;
    p.working_set_fraction = 0.9;  // the plugin's working set: 90% of RAM
    p.options.max_bandwidth_mb_s = speed / 1e6;
    p.options.downtime_limit_ms = 30;  // the plugin's max_downtime
    p.options.max_rounds = 1000000;    // the plugin has no round limit
    p.options.zero_page_skipping = false;
    p.options.page_headers = false;
    p.options.device_state_kib = 0;
    Precopy model(p);
    const Outcome out = RunPrecopy(model, hosts[1], StreamLimits{speed, 0});
    result.model_total_s = out.total_s;
    result.model_downtime_s = out.downtime_s;
    result.model_rounds = model.rounds();
    result.model_bytes = model.wire_bytes();
  });
  sg4::Engine::get_instance()->run();
  return result;
}

}  // namespace escdr::sim
