#include "agent/interrupted_migration.h"

#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "agent/json_util.h"
#include "escdr/agent/agent_client.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/sys/clock.h"

namespace escdr::agent {
namespace {

using nlohmann::json;

// The destination drops a loaded copy it was never told to take over after
// 60 s (incoming_migration.cc); asking for longer than that settles it.
constexpr std::chrono::seconds kAskFor{90};
constexpr std::chrono::seconds kRetryEvery{2};

// The role the destination's status gives VM `vm` ("" if it has none).
std::string RoleAt(const json& status, const std::string& vm) {
  if (auto it = status.find("vms"); it != status.end() && it->is_array()) {
    for (const json& v : *it) {
      if (StringOr(v, "name") == vm) return StringOr(v, "role");
    }
  }
  return "";
}

void Resolve(Agent::Impl& agent, const std::string& vm) {
  auto held = agent.AcquireVm(vm, "resolving an interrupted migration");
  if (!held.has_value()) {
    spdlog::warn("agent {}: cannot resolve the interrupted migration of {}: {}", agent.host(), vm,
                 held.error().ToString());
    return;
  }
  auto done = [&] { agent.ReleaseVm(*held); };
  auto last = agent.inventory().ListMigrations({.vm = vm, .limit = 1});
  if (!last.has_value() || last->empty() || (*last)[0].source != agent.host()) {
    spdlog::error("agent {}: VM {} is stopped after a migration (QEMU postmigrate) and the "
                  "inventory names no migration of it from this host; left stopped",
                  agent.host(), vm);
    return done();
  }
  const Migration m = (*last)[0];
  const Deadline until = Deadline::After(kAskFor);
  std::string why;
  while (!agent.stopping()) {
    auto host = agent.inventory().GetHost(m.destination);
    if (host.has_value() && !host->agent_address.empty()) {
      AgentClient dest(host->agent_address, std::chrono::seconds(10), agent.tls(),
                       m.destination);
      auto status = dest.GetStatus();
      if (status.has_value()) {
        const std::string role = RoleAt(*status, vm);
        if (role == "running") {
          Status s = agent.SetRole(*held, VmRole::kMigrated, m.id);
          spdlog::warn("agent {}: {} took VM {} over (migration {}) before this agent "
                       "restarted; its source QEMU is kept stopped as migrated{}",
                       agent.host(), m.destination, vm, m.id,
                       s.ok() ? "" : " (its record could not be rewritten: " + s.ToString() + ")");
          return done();
        }
        if (role == "incoming") {
          auto aborted = dest.Call("abort_in", {{"vm", vm}, {"migration_id", m.id}});
          if (!aborted.has_value()) {
            why = "abort_in: " + aborted.error().ToString();
          }
        }
        if (role != "incoming" || why.empty()) {
          Status s = Cont((*held)->proc->qmp());
          if (s.ok()) {
            spdlog::warn("agent {}: the migration {} of VM {} to {} was not committed before "
                         "this agent restarted; the VM runs here again",
                         agent.host(), m.id, vm, m.destination);
          } else {
            spdlog::error("agent {}: cannot resume VM {} after its uncommitted migration: {}",
                          agent.host(), vm, s.ToString());
          }
          return done();
        }
      } else {
        why = status.error().ToString();
      }
    } else {
      why = host.has_value() ? "no agent address" : host.error().ToString();
    }
    if (until.Expired()) break;
    std::this_thread::sleep_for(kRetryEvery);
  }
  spdlog::error("agent {}: VM {} is stopped after its migration {} to {}, which cannot tell "
                "whether it took the VM over ({}); left stopped: start it here with `escdr vm "
                "start` only once {} is known not to run it",
                agent.host(), vm, m.id, m.destination, why, m.destination);
  done();
}

}  // namespace

void ResolveInterruptedMigrations(Agent::Impl& agent) {
  for (const auto& entry : agent.AllVms()) {
    if (agent.stopping()) return;
    if (entry->record.role != VmRole::kRunning || !entry->proc) continue;
    auto state = QueryStatus(entry->proc->qmp());
    if (!state.has_value() || *state != "postmigrate") continue;
    Resolve(agent, entry->record.name);
  }
}

}  // namespace escdr::agent
