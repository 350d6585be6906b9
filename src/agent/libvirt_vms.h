// LibvirtVms: the agent's VM backend for hosts whose VMs libvirt runs
// (`escdr agent --libvirt URI`, docs/libvirt.md). Not a public interface.
//
// libvirt owns the domains and their hardware; escdr adopts them and carries
// their migration streams:
//   * adoption: every domain of the host's libvirt is classified from its XML
//     (the libosinfo OS id and the QEMU version of its emulator) and the
//     running ones are registered in the inventory on this host; domains that
//     cannot be classified are reported with the reason (status
//     "unclassified"). Lifecycle events, and a refresh every few seconds,
//     keep the inventory current.
//   * source side: for each running classified domain the agent listens on
//     `<socket_dir>/<domain>.sock`. `virsh migrate --live --p2p DOMAIN DEST
//     --migrateuri unix://<socket_dir>/<domain>.sock` makes the source QEMU
//     connect there; the agent finds the destination (the other host whose
//     libvirt now has the domain, asked with `libvirt_probe`), records the
//     migration in the inventory, and relays the stream with a SourceSession
//     to the destination agent. `escdr migrate VM` (migrate_out) does the
//     same through libvirt's peer-to-peer migration API, with the migration
//     the CLI began.
//   * destination side: migrate_in with carrier "libvirt" connects to the
//     destination QEMU that libvirt started listening on the same path, picks
//     a donor (a running domain of the same kind, its RAM read through
//     gpa2hva and process_vm_readv), and rebuilds the stream with a
//     DestinationSession. libvirt resumes the domain when QEMU has it all.
// libvirt decides the outcome: escdr never resumes, stops or kills a domain.
// When escdr cannot carry a stream it closes the QEMU's socket, so libvirt's
// migration fails and the domain keeps running on its source.
//
// Thread safety: all methods may be called from any thread.
#ifndef ESCDR_AGENT_LIBVIRT_VMS_H_
#define ESCDR_AGENT_LIBVIRT_VMS_H_

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/agent_impl.h"
#include "agent/vm_backend.h"
#include "escdr/agent/agent_client.h"
#include "escdr/base/status.h"
#include "escdr/wire/connection.h"

namespace escdr::agent {

class LibvirtVms final : public VmBackend {
 public:
  struct Options {
    std::string uri;          // the host's libvirt, e.g. "qemu:///system"
    std::string socket_dir;   // where the QEMUs meet the agent (same path on every host)
    std::string peer_uri;     // this libvirtd as the other hosts' libvirtd reach it
  };

  // Connects to libvirt, adopts its domains and starts listening. Errors:
  // Unavailable (libvirt), IOError (socket directory).
  static Result<std::unique_ptr<LibvirtVms>> Start(Agent::Impl& agent, Options options);
  ~LibvirtVms() override;
  LibvirtVms(const LibvirtVms&) = delete;
  LibvirtVms& operator=(const LibvirtVms&) = delete;

  const char* carrier() const override { return "libvirt"; }
  // True if `vm` is a domain of this host's libvirt.
  bool Owns(const std::string& vm) override;
  // The classified domains that run (role "running") or arrive ("incoming").
  std::vector<VmInfo> Describe() override;
  // {"uri", "unclassified": [{"vm", "state", "reason"}]}: the domains that
  // could not be classified, with the reason.
  nlohmann::json StatusJson() override;
  // migrate_out of a libvirt domain (escdr migrate): libvirt's peer-to-peer
  // migration through this agent's socket; replies as ServeMigrateOut.
  void ServeMigrateOut(wire::Connection& conn, const nlohmann::json& request) override;
  // migrate_in with "carrier": "libvirt".
  void ServeMigrateIn(std::unique_ptr<wire::Connection> conn,
                      const nlohmann::json& request) override;
  // libvirt_probe: {"vm": NAME} -> {"incoming": bool, "peer_uri", "uri"}:
  // whether this host's libvirt holds NAME as the destination of a
  // migration, and how other hosts' libvirtd reach this one.
  Result<nlohmann::json> HandleOp(const std::string& op, const nlohmann::json& request) override;
  // Stops listening and cancels the streams in flight (their migrations
  // fail; the domains keep running on their sources). Idempotent.
  void Shutdown() override;

  class Impl;

 private:
  explicit LibvirtVms(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_LIBVIRT_VMS_H_
