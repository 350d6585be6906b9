// Subprocess: a child process that escdr started and owns (QEMU, helpers).
//
// Spawn() forks and executes `argv` with the given environment; stdin is
// /dev/null, stdout and stderr go to files or /dev/null. The child inherits no
// descriptor except 0-2 and those listed in `inherit_fds`, starts with an
// empty signal mask and default SIGPIPE, and (by default) gets
// PR_SET_PDEATHSIG(SIGKILL), so a crashed escdr process leaves no QEMU behind.
// Caveat of PDEATHSIG: Linux sends it when the *thread* that spawned the child
// exits, not the process. Spawn long-lived children from a thread that
// outlives them (the main thread, or an agent's service thread), or turn
// `kill_with_parent` off.
//
// The Subprocess object owns the child: it holds a pidfd, so signals never hit
// a recycled pid, and its destructor sends SIGKILL to a child still running
// and reaps it. It is move-only; a moved-from Subprocess owns nothing.
//
// Thread safety: not synchronized; use one Subprocess from one thread at a
// time (Kill() from another thread while Wait() blocks is fine).
#ifndef ESCDR_SYS_SUBPROCESS_H_
#define ESCDR_SYS_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "escdr/base/status.h"

namespace escdr {

struct SubprocessOptions {
  // argv[0] is the program: a path, or a name looked up in $PATH.
  // REQUIRES: non-empty.
  std::vector<std::string> argv;
  // Start from the parent's environment (true) or an empty one (false), then
  // set each NAME=VALUE in `env` (overriding an inherited NAME).
  bool inherit_env = true;
  std::vector<std::pair<std::string, std::string>> env;
  // Files for the child's stdout and stderr; empty means /dev/null. Created
  // (mode 0644) or truncated, or appended to with `append_output`. The same
  // path for both shares one open file.
  std::string stdout_path;
  std::string stderr_path;
  bool append_output = false;
  // Working directory of the child; empty keeps the parent's.
  std::string cwd;
  // Descriptors that the child keeps, at the same numbers (e.g. for QEMU's
  // "fd:" migration URIs). The caller keeps ownership of them in the parent.
  std::vector<int> inherit_fds;
  // PR_SET_PDEATHSIG(SIGKILL); see the thread caveat above.
  bool kill_with_parent = true;
  // Put the child in its own process group (a terminal's Ctrl-C then reaches
  // only escdr, which cleans up its children itself).
  bool new_process_group = false;
};

// How a child ended.
struct ExitStatus {
  bool exited = false;  // exited normally with `code`
  int code = 0;
  int signal = 0;       // killed by `signal` (when !exited)

  bool success() const { return exited && code == 0; }
  // "exit code 1", "killed by signal 9 (Killed)".
  std::string ToString() const;
};

class Subprocess {
 public:
  // Starts the child. Errors (program not found, cannot open an output file,
  // exec failure such as EACCES) are reported here, never as a child exit
  // code: the child reports a failed exec back through a close-on-exec pipe.
  static Result<Subprocess> Spawn(const SubprocessOptions& options);

  Subprocess() = default;  // owns nothing
  ~Subprocess();
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // The child's pid; -1 if this object owns nothing. Stays valid after the
  // child was reaped (for messages), but then names no process of ours.
  pid_t pid() const { return pid_; }
  // True if this object owns a child (running or already reaped).
  bool valid() const { return pid_ > 0; }

  // Non-blocking: the exit status if the child has ended (it is reaped), or
  // nullopt while it runs.
  Result<std::optional<ExitStatus>> TryWait();
  // Blocks until the child ends; returns its status (again on later calls).
  Result<ExitStatus> Wait();
  // Waits at most `timeout`; Timeout if the child is still running.
  Result<ExitStatus> WaitFor(std::chrono::milliseconds timeout);
  // Sends `signal`. OK if the child already ended (nothing to signal).
  Status Kill(int signal);

  // The exit status once reaped, else nullopt.
  const std::optional<ExitStatus>& exit_status() const { return exit_status_; }

 private:
  Subprocess(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}
  void Destroy();
  Result<ExitStatus> Reap(bool block, bool* reaped);

  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<ExitStatus> exit_status_;
};

// Finds `name` in $PATH (or checks it, if it contains '/'); NotFound if absent.
Result<std::string> FindProgram(const std::string& name);

}  // namespace escdr

#endif  // ESCDR_SYS_SUBPROCESS_H_
