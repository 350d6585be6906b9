// Agent: the escdr daemon of one host (`escdr agent`).
//
// An agent registers its host in the inventory (RegisterHost), then serves
// one TCP port (docs/agent.md):
//   * control requests from the CLI: start, stop and list VMs, status, and
//     migrate_out (run a migration of one of its VMs to another agent);
//   * incoming migrations from other agents: it starts the destination QEMU
//     from the VM's launch spec with `-incoming defer`, picks a donor (a
//     running VM of the same kind on this host), loads the kind's catalog from
//     the inventory, and rebuilds the stream with a DestinationSession.
// It owns the VMs it starts: QEMU with guest RAM in a memory-backend-file
// (share=on) under `ram_dir`, a QMP socket and a serial log under the state
// directory. VMs run in their own session (QEMU -daemonize) and outlive the
// agent: a crashed or restarted agent finds them again through the records it
// keeps in `<state_dir>/vms/` and re-adopts the live ones. The destination
// QEMU of an incoming migration is different: it never outlives a failed
// migration (it is killed on failure, and at start-up if a crash left one).
//
// Every migration, in either direction, is an explicit state machine
// (docs/agent.md draws both); on any failure the source VM keeps running on
// its source, the destination QEMU is removed, and the error names the phase
// and what failed.
//
// Thread safety: Run() blocks the calling thread until Shutdown() (from any
// thread or a signal-handling thread). Each connection is served by its own
// thread; VM operations are serialized per VM.
#ifndef ESCDR_AGENT_AGENT_H_
#define ESCDR_AGENT_AGENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/wire/tls.h"

namespace escdr::agent {

struct AgentOptions {
  // The host's name in the inventory; also names this agent's RAM files.
  // Required; printable, no '/', ',' or spaces.
  std::string name;
  // Where to listen, "host:port" (port 0 picks a free port; see
  // Agent::address()). Default loopback.
  std::string listen = "127.0.0.1:7400";
  // The address other agents and the CLI use to reach this agent, stored in
  // the inventory; "" = the listen address (with the chosen port).
  std::string advertise;
  // Local state: VM records (vms/), QMP and migration sockets (run/), serial
  // and QEMU logs (logs/). Required. Keep it short: unix socket paths must
  // fit in 107 bytes.
  std::string state_dir;
  // The inventory URL (OpenInventory). Required.
  std::string inventory_url;
  // Where guest RAM files go; tmpfs keeps guest memory in memory. Default /dev/shm.
  std::string ram_dir = "/dev/shm";
  // The host as registered in the inventory: capacity and location.
  std::uint64_t memory_mib = 16384;
  std::uint32_t vcpus = 16;
  std::string rack;
  std::string pod;
  // The QEMUs this host runs guests with (docs/qemu-versions.md): each a
  // program (path or name in $PATH) or a QEMU tree made by
  // tools/install-qemu.sh. Each is asked its version and machine types at
  // start; the versions are registered with the host, and a VM runs on the
  // one of its QEMU series. One per series. `escdr agent` without --qemu
  // passes DefaultQemuPaths() (the host's and tools/install-qemu.sh's).
  std::vector<std::string> qemu = {"qemu-system-x86_64"};
  // Starting a QEMU (TCG on a loaded machine is slow): until QMP answers.
  std::chrono::milliseconds qemu_start_timeout{120000};
  // How long a stopping VM may take to quit before SIGKILL.
  std::chrono::milliseconds qemu_stop_grace{10000};
  // Authenticated connections served at once (after their TLS handshake);
  // more are refused with an error reply. Unauthenticated connections have
  // their own places (below), so they never take these (docs/security.md §7).
  int max_connections = 64;
  // Connections whose handshake has not ended, in all. When full, a new one
  // takes the place of the oldest of the source address that holds the most.
  int max_unauthenticated = 64;
  // Connections whose handshake has not ended, from one IP address; more
  // are closed at once.
  int max_unauthenticated_per_address = 8;
  // How long a new connection has for its TLS handshake (from the accept;
  // with --insecure, for its first byte). Loopback needs milliseconds; a
  // loaded host across a WAN well under a second.
  std::chrono::milliseconds handshake_timeout{3000};
  // TLS 1.3 on every connection the agent accepts (CLI, source agents) and
  // makes (to destination agents): its own credentials, a cluster-CA
  // certificate whose name is `name`, or a pre-shared key
  // (docs/security.md). Required unless `insecure`.
  std::shared_ptr<const wire::TlsContext> tls;
  // Plaintext, unauthenticated connections: anyone who reaches the port can
  // drive the agent. Only when asked for (tests, debugging).
  bool insecure = false;
  // The VMs of this host's libvirt (docs/libvirt.md): its URI, e.g.
  // "qemu:///system"; "" = none. The agent adopts libvirt's domains and
  // carries their migrations; its own launcher still serves `vm start`.
  std::string libvirt_uri;
  // Where libvirt's QEMUs meet the agent: `virsh migrate --migrateuri
  // unix://DIR/DOMAIN.sock`. The same path on every host.
  std::string libvirt_socket_dir = "/run/escdr/migrate";
  // This host's libvirt as the other hosts' libvirtd reach it (the
  // destination URI of a peer-to-peer migration), e.g.
  // "qemu+tls://h2.example/system"; "" = "qemu+tcp://HOST/system" with the
  // host of the advertised address.
  std::string libvirt_peer_uri;
  // Rereads the credentials `tls` was made from (certificate, key, CA and
  // CRL, or the pre-shared key file), for Reload(). Null: Reload() is
  // refused (FailedPrecondition).
  std::function<Result<std::shared_ptr<const wire::TlsContext>>()> reload_tls;
};

class Agent {
 public:
  // Opens the inventory, registers the host, re-adopts the VMs recorded in
  // the state directory (and kills stale incoming QEMUs), and listens.
  // Errors: InvalidArgument (options; also neither `tls` nor `insecure`,
  // or both), Unavailable (inventory, or the port
  // is taken), IOError (state directory).
  static Result<std::unique_ptr<Agent>> Start(const AgentOptions& options);

  // Stops serving (as Shutdown) and joins every thread. VMs keep running.
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // "host:port" as advertised (the real port when listen asked for 0).
  const std::string& address() const;

  // Serves connections until Shutdown(). Returns OK after a shutdown.
  Status Run();

  // Rereads the TLS credentials through options.reload_tls and uses them
  // for every connection accepted (and every migration started) from now
  // on; connections and migrations in progress keep theirs. On error the
  // old credentials stay in use and the error says why (InvalidArgument
  // naming the file, FailedPrecondition without reload_tls or with
  // --insecure). Safe from any thread (SIGHUP, `escdr agent reload`).
  Status Reload();

  // Asks Run() to return: stops accepting, cancels migrations in progress
  // (they fail cleanly: the source VM keeps running) and waits for
  // connection threads. Safe from any thread; idempotent.
  void Shutdown();

  class Impl;

 private:
  explicit Agent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Sends the agent's log lines to stderr, one per line with an ISO timestamp
// and level: info and above, or debug and above when `verbosity` > 0.
// Call once, before Agent::Start().
void SetupAgentLogging(int verbosity);

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_AGENT_H_
