// VmBackend: how the agent reaches the VMs of one VM manager on its host.
// Not a public interface.
//
// An agent has one backend per VM manager it serves (docs/agent.md §1):
//   * LauncherVms (launcher_vms.cc): escdr's own QEMUs, started from launch
//     specs with guest RAM in files (`escdr vm create/start`); always there;
//   * LibvirtVms (libvirt_vms.h): the domains of the host's libvirt, adopted
//     (`escdr agent --libvirt URI`).
// The agent's serving code knows only this interface: migrate_out goes to
// the backend that owns the VM, migrate_in to the backend of its "carrier",
// status lists every backend's VMs. The backends do not know each other, and
// the migration sessions (migrate/) know neither: each backend hands them
// the QEMU's end of the stream and a donor's RAM.
//
// Thread safety: every method may be called from any thread.
#ifndef ESCDR_AGENT_VM_BACKEND_H_
#define ESCDR_AGENT_VM_BACKEND_H_

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "escdr/agent/agent_client.h"
#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/image/memory_image.h"
#include "escdr/wire/connection.h"

namespace escdr::agent {

class VmBackend {
 public:
  virtual ~VmBackend() = default;

  // What a migrate_in names as its "carrier" for this backend's VMs:
  // "escdr" (the default when a request names none) or "libvirt".
  virtual const char* carrier() const = 0;

  // True if `vm` is one of this backend's VMs on this host.
  virtual bool Owns(const std::string& vm) = 0;

  // Its VMs, as status and list_vms report them.
  virtual std::vector<VmInfo> Describe() = 0;

  // What status adds under the backend's carrier name (null: nothing).
  virtual nlohmann::json StatusJson() = 0;

  // The source side of a migrate_out of one of its VMs: progress events and
  // the final reply on `conn` (docs/agent.md §3).
  virtual void ServeMigrateOut(wire::Connection& conn, const nlohmann::json& request) = 0;

  // The destination side of a migrate_in for its carrier: the reply, then
  // the wire protocol on `conn`.
  virtual void ServeMigrateIn(std::unique_ptr<wire::Connection> conn,
                              const nlohmann::json& request) = 0;

  // A control request only this backend knows (e.g. libvirt_probe), or
  // NotSupported for any other.
  virtual Result<nlohmann::json> HandleOp(const std::string& op, const nlohmann::json& request) = 0;

  // Stops what the backend runs on its own (threads, listeners) and cancels
  // its streams in flight; its VMs keep running. Idempotent.
  virtual void Shutdown() = 0;
};

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_VM_BACKEND_H_
