#include "escdr/sys/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>

#include <fmt/format.h>

#include "escdr/sys/clock.h"
#include "escdr/sys/unique_fd.h"

extern char** environ;

namespace escdr {
namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

ExitStatus Decode(int wstatus) {
  ExitStatus s;
  if (WIFEXITED(wstatus)) {
    s.exited = true;
    s.code = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    s.signal = WTERMSIG(wstatus);
  }
  return s;
}

// What the child reports through the exec-error pipe when setup fails.
struct ChildFailure {
  int stage;  // 1 = chdir, 2 = exec, 3 = fd setup
  int error;
};

[[noreturn]] void ChildFail(int report_fd, int stage) {
  ChildFailure f{stage, errno};
  ssize_t unused = ::write(report_fd, &f, sizeof(f));
  (void)unused;
  ::_exit(127);
}

// Runs in the child between fork and exec: only async-signal-safe calls.
[[noreturn]] void ChildMain(const SubprocessOptions& o, pid_t parent, int in_fd, int out_fd,
                            int err_fd, int report_fd, const std::vector<int>& keep_sorted,
                            const char* path, char* const* argv, char* const* envp) {
  auto fail = [report_fd](int stage) { ChildFail(report_fd, stage); };
  if (o.new_process_group) ::setpgid(0, 0);
  if (o.kill_with_parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    // The parent (thread) may have died before prctl took effect.
    if (::getppid() != parent) ::_exit(127);
  }
  sigset_t empty;
  sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGPIPE, &dfl, nullptr);

  if (::dup2(in_fd, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(err_fd, 2) < 0) fail(3);
  for (int fd : o.inherit_fds) {
    if (::fcntl(fd, F_SETFD, 0) < 0) fail(3);
  }
  // Close everything else (descriptors opened by libraries without
  // O_CLOEXEC must not leak into QEMU), keeping the report pipe until exec.
  unsigned lo = 3;
  for (int k : keep_sorted) {
    auto uk = static_cast<unsigned>(k);
    if (uk > lo) ::close_range(lo, uk - 1, 0);
    if (uk + 1 > lo) lo = uk + 1;
  }
  ::close_range(lo, ~0U, 0);

  if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) < 0) fail(1);
  ::execve(path, argv, envp);
  ChildFail(report_fd, 2);
}

}  // namespace

std::string ExitStatus::ToString() const {
  if (exited) return fmt::format("exit code {}", code);
  if (signal != 0) return fmt::format("killed by signal {} ({})", signal, ::strsignal(signal));
  return "unknown exit status";
}

Result<std::string> FindProgram(const std::string& name) {
  auto runnable = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (name.empty()) return Err(Status::InvalidArgument("cannot find a program with an empty name"));
  if (name.find('/') != std::string::npos) {
    if (runnable(name)) return name;
    return Err(Status::NotFound(fmt::format("program {} does not exist or is not executable", name)));
  }
  const char* env_path = ::getenv("PATH");
  std::string path = (env_path != nullptr && env_path[0] != '\0') ? env_path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string_view dir = std::string_view(path).substr(start, end - start);
    std::string candidate = fmt::format("{}/{}", dir.empty() ? std::string_view(".") : dir, name);
    if (runnable(candidate)) return candidate;
    start = end + 1;
  }
  return Err(Status::NotFound(fmt::format("program {} not found in PATH {}", name, path)));
}

Result<Subprocess> Subprocess::Spawn(const SubprocessOptions& o) {
  if (o.argv.empty()) return Err(Status::InvalidArgument("cannot spawn a process with an empty argv"));
  ESCDR_ASSIGN_OR_RETURN(std::string path, FindProgram(o.argv[0]));
  for (int fd : o.inherit_fds) {
    if (fd <= 2) {
      return Err(Status::InvalidArgument(
          fmt::format("cannot spawn {}: inherited fd {} collides with stdio", path, fd)));
    }
  }

  // Everything the child needs is prepared here: after fork() it may only
  // make async-signal-safe calls (the parent may have other threads).
  std::vector<char*> argv;
  for (const std::string& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  std::map<std::string, std::string> env_map;
  std::vector<std::string> env_order;
  if (o.inherit_env && environ != nullptr) {
    for (char** e = environ; *e != nullptr; ++e) {
      std::string entry(*e);
      std::size_t eq = entry.find('=');
      if (eq == std::string::npos) continue;
      std::string key = entry.substr(0, eq);
      if (env_map.emplace(key, entry.substr(eq + 1)).second) env_order.push_back(key);
    }
  }
  for (const auto& [k, v] : o.env) {
    if (env_map.find(k) == env_map.end()) env_order.push_back(k);
    env_map[k] = v;
  }
  std::vector<std::string> env_strings;
  for (const std::string& k : env_order) env_strings.push_back(k + "=" + env_map[k]);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  ESCDR_ASSIGN_OR_RETURN(UniqueFd null_in, OpenFile("/dev/null", O_RDONLY));
  int out_flags = O_WRONLY | O_CREAT | (o.append_output ? O_APPEND : O_TRUNC);
  UniqueFd out_fd, err_fd;
  if (o.stdout_path.empty()) {
    ESCDR_ASSIGN_OR_RETURN(out_fd, OpenFile("/dev/null", O_WRONLY));
  } else {
    ESCDR_ASSIGN_OR_RETURN(out_fd, OpenFile(o.stdout_path, out_flags));
  }
  if (o.stderr_path.empty()) {
    ESCDR_ASSIGN_OR_RETURN(err_fd, OpenFile("/dev/null", O_WRONLY));
  } else if (o.stderr_path == o.stdout_path) {
    int dup = ::fcntl(out_fd.get(), F_DUPFD_CLOEXEC, 3);
    if (dup < 0) return Err(Status::FromErrno(fmt::format("cannot duplicate fd for {}", o.stderr_path), errno));
    err_fd.Reset(dup);
  } else {
    ESCDR_ASSIGN_OR_RETURN(err_fd, OpenFile(o.stderr_path, out_flags));
  }

  int report[2];
  if (::pipe2(report, O_CLOEXEC) < 0) {
    return Err(Status::FromErrno(fmt::format("cannot create exec pipe for {}", path), errno));
  }
  UniqueFd report_read(report[0]), report_write(report[1]);
  std::vector<int> keep = o.inherit_fds;
  keep.push_back(report_write.get());
  std::sort(keep.begin(), keep.end());

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return Err(Status::FromErrno(fmt::format("cannot fork to run {}", path), errno));
  if (pid == 0) {
    ChildMain(o, parent, null_in.get(), out_fd.get(), err_fd.get(), report_write.get(), keep,
              path.c_str(), argv.data(), envp.data());
  }
  report_write.Reset();

  // Own the child first, so every error path below kills and reaps it.
  int pidfd = PidfdOpen(pid);
  Subprocess child(pid, pidfd);
  if (pidfd < 0) {
    int e = errno;
    ::kill(pid, SIGKILL);
    return Err(Status::FromErrno(fmt::format("cannot open pidfd for {} (pid {})", path, pid), e));
  }

  ChildFailure failure{};
  ESCDR_ASSIGN_OR_RETURN(std::size_t n, ReadFull(report_read.get(), &failure, sizeof(failure),
                                                 "exec pipe"));
  if (n == 0) return child;  // exec succeeded: the pipe closed on exec
  (void)child.Wait();
  std::string what;
  switch (failure.stage) {
    case 1: what = fmt::format("cannot chdir to {} to run {}", o.cwd, path); break;
    case 2: what = fmt::format("cannot exec {}", path); break;
    default: what = fmt::format("cannot set up the descriptors of {}", path); break;
  }
  Status s = Status::FromErrno(what, failure.error);
  return Err(s);
}

Subprocess::~Subprocess() { Destroy(); }

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      exit_status_(std::exchange(other.exit_status_, std::nullopt)) {}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    Destroy();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    exit_status_ = std::exchange(other.exit_status_, std::nullopt);
  }
  return *this;
}

void Subprocess::Destroy() {
  if (pid_ > 0 && !exit_status_) {
    (void)Kill(SIGKILL);
    (void)Wait();
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  pid_ = -1;
  pidfd_ = -1;
  exit_status_.reset();
}

Result<ExitStatus> Subprocess::Reap(bool block, bool* reaped) {
  *reaped = false;
  if (exit_status_) {
    *reaped = true;
    return *exit_status_;
  }
  if (pid_ <= 0) return Err(Status::FailedPrecondition("cannot wait: no child process"));
  int wstatus = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &wstatus, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Err(Status::FromErrno(fmt::format("cannot wait for pid {}", pid_), errno));
  if (r == 0) return ExitStatus{};
  exit_status_ = Decode(wstatus);
  *reaped = true;
  return *exit_status_;
}

Result<std::optional<ExitStatus>> Subprocess::TryWait() {
  bool reaped = false;
  ESCDR_ASSIGN_OR_RETURN(ExitStatus s, Reap(false, &reaped));
  if (!reaped) return std::optional<ExitStatus>();
  return std::optional<ExitStatus>(s);
}

Result<ExitStatus> Subprocess::Wait() {
  bool reaped = false;
  return Reap(true, &reaped);
}

Result<ExitStatus> Subprocess::WaitFor(std::chrono::milliseconds timeout) {
  if (exit_status_) return *exit_status_;
  if (pid_ <= 0) return Err(Status::FailedPrecondition("cannot wait: no child process"));
  Deadline deadline = Deadline::After(timeout);
  for (;;) {
    bool reaped = false;
    ESCDR_ASSIGN_OR_RETURN(ExitStatus s, Reap(false, &reaped));
    if (reaped) return s;
    if (deadline.Expired()) {
      return Err(Status::Timeout(
          fmt::format("pid {} still running after {} ms", pid_, timeout.count())));
    }
    // The pidfd becomes readable when the child exits.
    ESCDR_ASSIGN_OR_RETURN(bool ready, WaitReadable(pidfd_, deadline.Remaining()));
    (void)ready;
  }
}

Status Subprocess::Kill(int signal) {
  if (pid_ <= 0) return Status::FailedPrecondition("cannot signal: no child process");
  if (exit_status_) return Status::OK();
  if (PidfdSendSignal(pidfd_, signal) < 0 && errno != ESRCH) {
    return Status::FromErrno(fmt::format("cannot send signal {} to pid {}", signal, pid_), errno);
  }
  return Status::OK();
}

}  // namespace escdr
