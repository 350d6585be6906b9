// VmProcess: a QEMU that runs on its own, watched and signalled by pidfd.
//
// The agent's VMs must outlive the agent (a restart or a crash of the agent
// must not take its guests down), so QEMU is started with -daemonize: the
// process escdr spawns forks the real QEMU into a new session and exits once
// QEMU is initialised (0) or failed (non-zero, with its error in the QEMU
// log). The real QEMU writes its pid to a pidfile; escdr opens a pidfd on it,
// checks that the process is the QEMU it expects (its command line names the
// QMP socket) and connects to QMP. The agent makes itself a child subreaper,
// so while it lives it also reaps its QEMUs; after an agent restart, Adopt()
// attaches to a still running QEMU the same way.
//
// Destroying a VmProcess closes the QMP connection and the pidfd; it never
// stops QEMU. Quit() and Kill() do; the QMP client stays valid after them
// (its calls then fail with Unavailable), so other threads holding qmp()
// are never left with a dangling reference.
//
// Thread safety: qmp() may be used from any thread (QmpClient is); the other
// methods from one thread at a time, except Alive() and pid(), which are safe
// anywhere.
#ifndef ESCDR_AGENT_VM_PROCESS_H_
#define ESCDR_AGENT_VM_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "escdr/base/status.h"
#include "escdr/qemu/launch_spec.h"
#include "escdr/qemu/qmp.h"
#include "escdr/sys/unique_fd.h"

namespace escdr::agent {

class VmProcess {
 public:
  // Starts QEMU for `spec` (its ram_path, qmp_socket and serial_log set)
  // detached from the caller, with its pid in `pidfile` and its stdout and
  // stderr in `qemu_log`, and connects to QMP, all within `timeout`.
  // AlreadyExists if the RAM file or QMP socket exists; Aborted (with QEMU's
  // error) if QEMU fails to start; Timeout. On failure nothing is left
  // running and the files QEMU created are removed.
  static Result<std::unique_ptr<VmProcess>> Launch(const LaunchSpec& spec, const std::string& pidfile,
                                                   const std::string& qemu_log,
                                                   std::chrono::milliseconds timeout);

  // Attaches to the running QEMU `pid` whose command line uses `qmp_socket`.
  // With `connect_qmp`, also connects to QMP (within `timeout`). NotFound if
  // no such process runs (gone, or the pid now names another program).
  static Result<std::unique_ptr<VmProcess>> Adopt(pid_t pid, const std::string& qmp_socket,
                                                  bool connect_qmp,
                                                  std::chrono::milliseconds timeout);

  ~VmProcess();
  VmProcess(const VmProcess&) = delete;
  VmProcess& operator=(const VmProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool has_qmp() const { return qmp_ != nullptr; }
  // REQUIRES: has_qmp().
  QmpClient& qmp() { return *qmp_; }

  // False once the process has exited (it is then reaped if it is our child).
  bool Alive() const;

  // SIGKILL, then waits up to `wait` for the process to be gone.
  Status Kill(std::chrono::milliseconds wait = std::chrono::seconds(10));
  // QMP quit, then SIGKILL if it is still there after `grace`.
  Status Quit(std::chrono::milliseconds grace);

 private:
  VmProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  // Waits up to `wait` for the process to exit; true if it did.
  bool WaitGone(std::chrono::milliseconds wait) const;

  pid_t pid_;
  UniqueFd pidfd_;
  std::unique_ptr<QmpClient> qmp_;
};

// True if process `pid` no longer runs: absent, or a zombie nobody reaped
// yet. Reaps it first if it is our child.
bool ProcessGone(pid_t pid);

// Reads a pid from a QEMU pidfile; NotFound if absent or empty.
Result<pid_t> ReadPidFile(const std::string& path);

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_VM_PROCESS_H_
