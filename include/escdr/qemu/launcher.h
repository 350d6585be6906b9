// QemuProcess: one running QEMU, started from a LaunchSpec and owned by escdr.
//
// Start() validates the spec, spawns QEMU (escdr/sys/subprocess.h: pidfd,
// SIGKILL when the spawning thread dies), waits for its QMP socket and
// completes the QMP handshake. If QEMU exits or the socket does not appear in
// time, Start() fails with QEMU's own stderr (or the serial log tail) in the
// message and leaves nothing running.
//
// Files: QEMU creates the QMP socket, the serial log and the RAM file; escdr
// creates QEMU's stdout/stderr log (`qemu_log`). Stop() and the destructor
// remove the QMP socket and the QEMU log (unless keep_qemu_log). The RAM
// file belongs to the caller by default and survives: a migration source's
// or a donor's RAM is still needed after its QEMU process is gone (to verify,
// or to compare); set remove_ram_file (or call set_remove_ram_file) to make
// the QemuProcess delete it on Stop(). The serial log is never removed.
// Start() refuses a RAM file or QMP socket that already exists: two QEMUs on
// one share=on RAM file would corrupt each other, and a stale socket could
// belong to another QEMU.
//
// Thread safety: Stop(), the destructor and Start() must not race with other
// calls; qmp() may be used from any thread (QmpClient is thread-safe).
#ifndef ESCDR_QEMU_LAUNCHER_H_
#define ESCDR_QEMU_LAUNCHER_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "escdr/base/status.h"
#include "escdr/qemu/launch_spec.h"
#include "escdr/qemu/qmp.h"
#include "escdr/sys/subprocess.h"

namespace escdr {

struct QemuProcessOptions {
  // Until the QMP handshake is done. TCG on a loaded machine is slow to start.
  std::chrono::milliseconds start_timeout{120000};
  // How long Stop() waits after QMP "quit" before SIGKILL.
  std::chrono::milliseconds stop_grace{10000};
  // QEMU's stdout and stderr; empty means "<qmp_socket>.log".
  std::string qemu_log;
  bool keep_qemu_log = false;
  // Delete spec.ram_path on Stop() (see the ownership note above).
  bool remove_ram_file = false;
};

class QemuProcess {
 public:
  // Starts QEMU for `spec`. On success QEMU runs (or waits, with -S or
  // -incoming) and qmp() is connected. Errors: those of ValidateLaunchSpec;
  // AlreadyExists for an existing RAM file or QMP socket; NotFound for a
  // missing qemu_binary; Aborted if QEMU exits during start (with its
  // stderr); Timeout.
  static Result<std::unique_ptr<QemuProcess>> Start(const LaunchSpec& spec,
                                                     const QemuProcessOptions& options = {});

  // Stop()s QEMU (errors ignored; call Stop() to see them).
  ~QemuProcess();
  QemuProcess(const QemuProcess&) = delete;
  QemuProcess& operator=(const QemuProcess&) = delete;

  // The QMP connection. REQUIRES: Stop() not yet called.
  QmpClient& qmp() { return *qmp_; }
  pid_t pid() const { return process_.pid(); }
  const LaunchSpec& spec() const { return spec_; }
  const std::string& qemu_log_path() const { return qemu_log_; }
  // "major.minor.micro" as QEMU reported it in its QMP greeting.
  const std::string& qemu_version() const { return qemu_version_; }

  // True while the QEMU process has not exited (a non-blocking check).
  bool Running();

  // Ends QEMU: QMP quit, then SIGKILL after options.stop_grace; reaps it and
  // removes the files it owns (see above). Idempotent. The returned Status
  // reports a failure to remove a file; how QEMU ended is in exit_status().
  Status Stop();
  // How QEMU ended, once it has been reaped (by Stop or Running).
  const std::optional<ExitStatus>& exit_status() const { return process_.exit_status(); }

  void set_remove_ram_file(bool remove) { options_.remove_ram_file = remove; }
  bool remove_ram_file() const { return options_.remove_ram_file; }

  // The last `max_bytes` of QEMU's stdout/stderr log (for error messages).
  std::string QemuLogTail(std::size_t max_bytes = 2000) const;

 private:
  QemuProcess(LaunchSpec spec, QemuProcessOptions options, Subprocess process);

  LaunchSpec spec_;
  QemuProcessOptions options_;
  std::string qemu_log_;
  Subprocess process_;
  std::unique_ptr<QmpClient> qmp_;
  std::string qemu_version_;
  bool stopped_ = false;
};

}  // namespace escdr

#endif  // ESCDR_QEMU_LAUNCHER_H_
