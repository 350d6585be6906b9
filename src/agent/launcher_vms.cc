// LauncherVms: the VmBackend of escdr's own QEMUs (vm_backend.h). Their
// lifecycle (launch specs, records, re-adoption after a restart) lives in
// Agent::Impl (agent.cc) and their migrations in outgoing_migration.cc and
// incoming_migration.cc; this is the face the serving code sees.
#include <fmt/format.h>

#include "agent/agent_impl.h"
#include "agent/vm_backend.h"

namespace escdr::agent {
namespace {

class LauncherVms final : public VmBackend {
 public:
  explicit LauncherVms(Agent::Impl& agent) : agent_(agent) {}

  const char* carrier() const override { return "escdr"; }
  bool Owns(const std::string& vm) override { return agent_.FindVm(vm) != nullptr; }
  std::vector<VmInfo> Describe() override {
    std::vector<VmInfo> out;
    for (auto& e : agent_.AllVms()) out.push_back(agent_.Describe(e, true));
    return out;
  }
  nlohmann::json StatusJson() override { return nullptr; }
  void ServeMigrateOut(wire::Connection& conn, const nlohmann::json& request) override {
    agent::ServeMigrateOut(agent_, conn, request);
  }
  void ServeMigrateIn(std::unique_ptr<wire::Connection> conn,
                      const nlohmann::json& request) override {
    agent::ServeMigrateIn(agent_, std::move(conn), request);
  }
  Result<nlohmann::json> HandleOp(const std::string& op, const nlohmann::json&) override {
    return Err(Status::NotSupported(fmt::format("unknown control request '{}'", op)));
  }
  void Shutdown() override {}  // Agent::Impl::Shutdown stops what the launcher runs

 private:
  Agent::Impl& agent_;
};

}  // namespace

std::unique_ptr<VmBackend> MakeLauncherVms(Agent::Impl& agent) {
  return std::make_unique<LauncherVms>(agent);
}

}  // namespace escdr::agent
