#include "escdr/qemu/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "escdr/qemu/serial_log.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {
namespace {

bool PathExists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

Status Unlink(const std::string& path, std::string_view what) {
  if (path.empty() || ::unlink(path.c_str()) == 0 || errno == ENOENT) return Status::OK();
  return Status::FromErrno(fmt::format("cannot remove {} {}", what, path), errno);
}

}  // namespace

QemuProcess::QemuProcess(LaunchSpec spec, QemuProcessOptions options, Subprocess process)
    : spec_(std::move(spec)), options_(std::move(options)), process_(std::move(process)) {
  qemu_log_ = options_.qemu_log.empty() ? spec_.qmp_socket + ".log" : options_.qemu_log;
}

Result<std::unique_ptr<QemuProcess>> QemuProcess::Start(const LaunchSpec& spec,
                                                        const QemuProcessOptions& options) {
  ESCDR_RETURN_IF_ERROR(ValidateLaunchSpec(spec));
  if (PathExists(spec.ram_path)) {
    return Err(Status::AlreadyExists(fmt::format(
        "cannot start {}: RAM file {} already exists (in use by another QEMU?)", spec.name,
        spec.ram_path)));
  }
  if (PathExists(spec.qmp_socket)) {
    return Err(Status::AlreadyExists(fmt::format(
        "cannot start {}: QMP socket {} already exists (another QEMU, or stale?)", spec.name,
        spec.qmp_socket)));
  }
  std::string log = options.qemu_log.empty() ? spec.qmp_socket + ".log" : options.qemu_log;

  SubprocessOptions sp;
  sp.argv = BuildQemuArgv(spec);
  sp.env = QemuEnvPairs(spec);
  sp.stdout_path = log;
  sp.stderr_path = log;
  auto spawned = Subprocess::Spawn(sp);
  if (!spawned.has_value()) {
    (void)Unlink(log, "QEMU log");
    return Err(spawned.error().WithContext(fmt::format("cannot start QEMU for {}", spec.name)));
  }

  // From here the object owns QEMU and its files: an early return stops QEMU
  // and removes everything this start created, the RAM file included.
  QemuProcessOptions start_options = options;
  start_options.remove_ram_file = true;
  std::unique_ptr<QemuProcess> qemu(new QemuProcess(spec, start_options, std::move(*spawned)));

  auto exited = [&qemu]() -> Status {
    auto st = qemu->process_.TryWait();
    if (!st.has_value()) return st.error();
    if (!st->has_value()) return Status::OK();
    return Status::Aborted(fmt::format("QEMU for {} (pid {}) exited during start with {}: {}",
                                       qemu->spec_.name, qemu->pid(), (*st)->ToString(),
                                       qemu->QemuLogTail()));
  };
  auto client = QmpClient::Connect(spec.qmp_socket, options.start_timeout, exited);
  if (!client.has_value()) {
    Status why = client.error();
    // A QEMU that died while we were connecting explains the failure best.
    // It may close the socket an instant before it has exited, so give it a
    // moment to finish exiting before blaming the connection.
    if (qemu->process_.valid()) (void)qemu->process_.WaitFor(std::chrono::milliseconds(1000));
    Status died = exited();
    if (!died.ok()) return Err(died);
    return Err(Status(why.code(),
                      fmt::format("cannot start QEMU for {} (pid {}): {}; QEMU log: {}; serial: {}",
                                  spec.name, qemu->pid(), why.message(), qemu->QemuLogTail(),
                                  SerialLogTail(spec.serial_log, 5))));
  }
  qemu->qmp_ = std::move(*client);
  qemu->qemu_version_ = qemu->qmp_->qemu_version();
  qemu->options_.remove_ram_file = options.remove_ram_file;
  return qemu;
}

QemuProcess::~QemuProcess() { (void)Stop(); }

bool QemuProcess::Running() {
  if (!process_.valid()) return false;
  auto st = process_.TryWait();
  return st.has_value() && !st->has_value();
}

Status QemuProcess::Stop() {
  if (stopped_) return Status::OK();
  stopped_ = true;
  if (Running()) {
    if (qmp_ && qmp_->connected()) {
      // quit makes QEMU exit at once; its reply may or may not arrive first.
      (void)qmp_->Execute("quit", nullptr, options_.stop_grace);
    }
    auto st = process_.WaitFor(options_.stop_grace);
    if (!st.has_value()) {
      (void)process_.Kill(SIGKILL);
      (void)process_.Wait();
    }
  }
  qmp_.reset();
  Status result = Unlink(spec_.qmp_socket, "QMP socket");
  if (!options_.keep_qemu_log) {
    Status s = Unlink(qemu_log_, "QEMU log");
    if (result.ok()) result = s;
  }
  if (options_.remove_ram_file) {
    Status s = Unlink(spec_.ram_path, "RAM file");
    if (result.ok()) result = s;
  }
  return result;
}

std::string QemuProcess::QemuLogTail(std::size_t max_bytes) const {
  auto text = ReadFileToString(qemu_log_);
  if (!text.has_value()) return "(no QEMU log)";
  std::string t = std::move(*text);
  if (t.size() > max_bytes) t = "..." + t.substr(t.size() - max_bytes);
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
  return t.empty() ? "(QEMU log empty)" : t;
}

}  // namespace escdr
