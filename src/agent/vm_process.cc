#include "agent/vm_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>

#include <fmt/format.h>

#include "escdr/qemu/qmp_commands.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/clock.h"
#include "escdr/sys/subprocess.h"

namespace escdr::agent {
namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool PathExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void Unlink(const std::string& path) {
  if (!path.empty()) ::unlink(path.c_str());
}

// Reaps `pid` if it is our child and has exited; harmless otherwise.
void TryReap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) < 0 && errno == EINTR) {
  }
}

// True if /proc/<pid>/cmdline mentions `needle` (the QMP socket path).
bool CmdlineMentions(pid_t pid, const std::string& needle) {
  auto cmdline = ReadFileToString(fmt::format("/proc/{}/cmdline", pid));
  return cmdline.has_value() && cmdline->find(needle) != std::string::npos;
}

std::string LogTail(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.has_value() || text->empty()) return "(QEMU printed nothing)";
  std::string t = std::move(*text);
  if (t.size() > 1500) t = "..." + t.substr(t.size() - 1500);
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t;
}

}  // namespace

Result<pid_t> ReadPidFile(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.has_value()) return Err(text.error());
  std::string_view t = *text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.remove_suffix(1);
  pid_t pid = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), pid);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size() || pid <= 1) {
    return Err(Status::NotFound(fmt::format("pidfile {} holds no pid", path)));
  }
  return pid;
}

bool ProcessGone(pid_t pid) {
  if (pid <= 0) return true;
  TryReap(pid);
  auto stat = ReadFileToString(fmt::format("/proc/{}/stat", pid));
  if (!stat.has_value()) return true;
  // "pid (comm) S ...": the state follows the last ')'.
  std::size_t paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() &&
         ((*stat)[paren + 2] == 'Z' || (*stat)[paren + 2] == 'X');
}

Result<std::unique_ptr<VmProcess>> VmProcess::Launch(const LaunchSpec& spec,
                                                     const std::string& pidfile,
                                                     const std::string& qemu_log,
                                                     std::chrono::milliseconds timeout) {
  ESCDR_RETURN_IF_ERROR(ValidateLaunchSpec(spec));
  for (const std::string* p : {&spec.ram_path, &spec.qmp_socket}) {
    if (PathExists(*p)) {
      return Err(Status::AlreadyExists(fmt::format(
          "cannot start QEMU for {}: {} already exists (in use by another QEMU, or stale?)",
          spec.name, *p)));
    }
  }
  Unlink(pidfile);
  const Deadline deadline = Deadline::After(timeout);

  // -daemonize refuses -nographic, which only stands for "no display" here:
  // -nodefaults, -serial file: and -monitor none already route everything else.
  std::vector<std::string> argv;
  for (std::string& a : BuildQemuArgv(spec)) {
    if (a == "-nographic") {
      argv.push_back("-display");
      argv.push_back("none");
    } else {
      argv.push_back(std::move(a));
    }
  }
  argv.insert(argv.end(), {"-daemonize", "-pidfile", pidfile});

  SubprocessOptions sp;
  sp.argv = std::move(argv);
  sp.env = QemuEnvPairs(spec);
  sp.stdout_path = qemu_log;
  sp.stderr_path = qemu_log;
  sp.kill_with_parent = false;
  auto cleanup_files = [&] {
    Unlink(spec.ram_path);
    Unlink(spec.qmp_socket);
    Unlink(pidfile);
  };
  auto kill_daemon = [&] {
    auto pid = ReadPidFile(pidfile);
    if (pid.has_value() && CmdlineMentions(*pid, spec.qmp_socket)) {
      UniqueFd fd(PidfdOpen(*pid));
      if (fd.valid()) ::syscall(SYS_pidfd_send_signal, fd.get(), SIGKILL, nullptr, 0);
    }
  };

  auto spawned = Subprocess::Spawn(sp);
  if (!spawned.has_value()) {
    return Err(spawned.error().WithContext(fmt::format("cannot start QEMU for {}", spec.name)));
  }
  Subprocess launcher = std::move(*spawned);
  auto exited = launcher.WaitFor(deadline.Remaining());
  if (!exited.has_value()) {
    (void)launcher.Kill(SIGKILL);
    (void)launcher.Wait();
    kill_daemon();
    cleanup_files();
    return Err(Status::Timeout(fmt::format("QEMU for {} did not finish starting within {} ms: {}",
                                           spec.name, timeout.count(), LogTail(qemu_log))));
  }
  if (!exited->success()) {
    kill_daemon();
    cleanup_files();
    return Err(Status::Aborted(fmt::format("QEMU for {} failed to start ({}): {}", spec.name,
                                           exited->ToString(), LogTail(qemu_log))));
  }
  auto pid = ReadPidFile(pidfile);
  if (!pid.has_value()) {
    cleanup_files();
    return Err(Status::Internal(fmt::format(
        "QEMU for {} started but wrote no pid to {}", spec.name, pidfile)));
  }
  auto proc = Adopt(*pid, spec.qmp_socket, /*connect_qmp=*/true, deadline.Remaining());
  if (!proc.has_value()) {
    kill_daemon();
    cleanup_files();
    return Err(proc.error().WithContext(fmt::format("QEMU for {} (pid {})", spec.name, *pid)));
  }
  return proc;
}

Result<std::unique_ptr<VmProcess>> VmProcess::Adopt(pid_t pid, const std::string& qmp_socket,
                                                    bool connect_qmp,
                                                    std::chrono::milliseconds timeout) {
  UniqueFd pidfd(PidfdOpen(pid));
  if (!pidfd.valid()) {
    if (errno == ESRCH) return Err(Status::NotFound(fmt::format("no process {}", pid)));
    return Err(Status::FromErrno(fmt::format("cannot open a pidfd for process {}", pid), errno));
  }
  // The pidfd pins the process: if its command line names our QMP socket
  // now, every later signal reaches this very QEMU, never a recycled pid.
  if (!CmdlineMentions(pid, qmp_socket) || ProcessGone(pid)) {
    return Err(Status::NotFound(
        fmt::format("process {} is not the QEMU serving {} (it has exited)", pid, qmp_socket)));
  }
  std::unique_ptr<VmProcess> proc(new VmProcess(pid, std::move(pidfd)));
  if (connect_qmp) {
    const VmProcess* raw = proc.get();
    auto qmp = QmpClient::Connect(qmp_socket, timeout, [raw]() -> Status {
      return raw->Alive() ? Status::OK()
                          : Status::Aborted(fmt::format("QEMU (pid {}) exited", raw->pid()));
    });
    if (!qmp.has_value()) return Err(qmp.error());
    proc->qmp_ = std::move(*qmp);
  }
  return proc;
}

VmProcess::~VmProcess() = default;

bool VmProcess::Alive() const {
  pollfd p{pidfd_.get(), POLLIN, 0};
  int r = ::poll(&p, 1, 0);
  if (r > 0) {
    TryReap(pid_);
    return false;
  }
  return true;
}

bool VmProcess::WaitGone(std::chrono::milliseconds wait) const {
  Deadline deadline = Deadline::After(wait);
  for (;;) {
    pollfd p{pidfd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, deadline.PollTimeoutMs());
    if (r > 0) {
      TryReap(pid_);
      return true;
    }
    if (r == 0 || (r < 0 && errno != EINTR) || deadline.Expired()) return false;
  }
}

Status VmProcess::Kill(std::chrono::milliseconds wait) {
  if (!Alive()) return Status::OK();
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0) < 0 && errno != ESRCH) {
    return Status::FromErrno(fmt::format("cannot kill QEMU pid {}", pid_), errno);
  }
  if (!WaitGone(wait)) {
    return Status::Timeout(fmt::format("QEMU pid {} still runs {} ms after SIGKILL", pid_,
                                       wait.count()));
  }
  return Status::OK();
}

Status VmProcess::Quit(std::chrono::milliseconds grace) {
  if (!Alive()) return Status::OK();
  if (qmp_ && qmp_->connected()) (void)escdr::Quit(*qmp_);
  if (WaitGone(grace)) return Status::OK();
  return Kill();
}

}  // namespace escdr::agent
