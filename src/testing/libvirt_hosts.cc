#include "testing/libvirt_hosts.h"

#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <thread>

#include "escdr/qemu/serial_log.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"
#include "testing/test_guest.h"

namespace escdr::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr seconds kStartTimeout{60};
constexpr seconds kStopGrace{10};

// The mount points the namespace binds over, in the root namespace.
constexpr const char* kMountPoints[] = {"/etc/libvirt",     "/run/libvirt",
                                        "/var/lib/libvirt", "/var/cache/libvirt",
                                        "/var/log/libvirt", kLibvirtMigrateDir};

constexpr const char* kQemuConf =
    "# escdr test host: QEMU runs as root, libvirt touches no file ownership\n"
    "user = \"root\"\n"
    "group = \"root\"\n"
    "dynamic_ownership = 0\n"
    "security_driver = \"none\"\n"
    "cgroup_controllers = [ ]\n";

// Runs inside the new mount namespace; $1 is the host directory.
constexpr const char* kStartScript = R"(set -e
D="$1"
mount --bind "$D/etc" /etc/libvirt
mount --bind "$D/run" /run/libvirt
mount --bind "$D/lib" /var/lib/libvirt
mount --bind "$D/cache" /var/cache/libvirt
mount --bind "$D/log" /var/log/libvirt
mount --bind "$D/mig" /run/escdr/migrate
virtlogd -d -p /run/libvirt/virtlogd.pid
libvirtd -d -p /run/libvirt/libvirtd.pid
)";

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '\'':
        out += "&apos;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Tail(const std::string& path, std::size_t max_bytes = 3000) {
  std::string text = ReadFileToString(path).value_or("");
  if (text.size() > max_bytes) text = "..." + text.substr(text.size() - max_bytes);
  return text;
}

// The process name of `pid` (/proc/PID/comm), "" if there is no such process.
std::string ProcessName(pid_t pid) {
  std::string comm = ReadFileToString(fmt::format("/proc/{}/comm", pid)).value_or("");
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm;
}

// True while `pid` exists and is not a zombie (a daemon that exited is
// reparented, so nobody here can reap it).
bool ProcessLive(pid_t pid) {
  const std::string stat = ReadFileToString(fmt::format("/proc/{}/stat", pid)).value_or("");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  return stat[paren + 2] != 'Z' && stat[paren + 2] != 'X';
}

pid_t ReadPidFile(const std::string& path) {
  const std::string text = ReadFileToString(path).value_or("");
  const long pid = std::strtol(text.c_str(), nullptr, 10);
  return pid > 0 ? static_cast<pid_t>(pid) : 0;
}

// Stops process `pid` if it still is a `name_prefix*` process: SIGTERM, then
// SIGKILL after `grace`. OK if it is already gone.
Status StopProcess(pid_t pid, const std::string& name_prefix, milliseconds grace) {
  if (pid <= 0 || !ProcessLive(pid) || !ProcessName(pid).starts_with(name_prefix)) {
    return Status::OK();
  }
  ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (ProcessLive(pid) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  if (!ProcessLive(pid)) return Status::OK();
  ::kill(pid, SIGKILL);
  const auto kill_deadline = std::chrono::steady_clock::now() + seconds(5);
  while (ProcessLive(pid) && std::chrono::steady_clock::now() < kill_deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  if (ProcessLive(pid)) {
    return Status::Internal(fmt::format("{} (pid {}) survived SIGKILL", name_prefix, pid));
  }
  return Status::Aborted(fmt::format("{} (pid {}) ignored SIGTERM for {} ms and was killed",
                                     name_prefix, pid, grace.count()));
}

Status MakeDirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return Status::IOError(fmt::format("cannot create directory {}: {}", path, ec.message()));
  return Status::OK();
}

}  // namespace

std::string LibvirtAvailable() {
  if (::geteuid() != 0) return "libvirt test hosts need root (mount namespaces, libvirtd)";
  for (const char* program : {"libvirtd", "virtlogd", "unshare", "nsenter", "qemu-system-x86_64"}) {
    if (!FindProgram(program).has_value()) {
      return fmt::format("{} is not installed (tools/bootstrap.sh)", program);
    }
  }
  if (::getpwnam("libvirt-qemu") == nullptr || ::getgrnam("libvirt-qemu") == nullptr) {
    return "the libvirt-qemu user or group does not exist (libvirtd's QEMU driver needs both; "
           "e.g. groupadd --system libvirt-qemu && useradd --system --gid libvirt-qemu "
           "--no-create-home --shell /usr/sbin/nologin libvirt-qemu)";
  }
  return "";
}

Result<std::string> TestGuestDomainXml(const LibvirtGuestOptions& options) {
  GuestOptions g;
  g.guest_dir = options.guest_dir;
  ESCDR_ASSIGN_OR_RETURN(std::string guest_dir, EnsureGuestBuilt(g));
  std::string emulator = options.emulator;
  if (emulator.empty()) {
    ESCDR_ASSIGN_OR_RETURN(emulator, FindProgram("qemu-system-x86_64"));
  }
  std::string cmdline = "console=ttyS0 quiet";
  if (!options.kaslr) cmdline += " nokaslr";
  if (!options.extra_append.empty()) cmdline += " " + options.extra_append;
  std::string metadata;
  if (!options.os_id.empty()) {
    metadata = fmt::format(
        "  <metadata>\n"
        "    <libosinfo:libosinfo "
        "xmlns:libosinfo=\"http://libosinfo.org/xmlns/libvirt/domain/1.0\">\n"
        "      <libosinfo:os id=\"{}\"/>\n"
        "    </libosinfo:libosinfo>\n"
        "  </metadata>\n",
        XmlEscape(options.os_id));
  }
  const std::string name = XmlEscape(options.name);
  return fmt::format(
      "<domain type='qemu'>\n"
      "  <name>{name}</name>\n"
      "{metadata}"
      "  <memory unit='MiB'>{memory}</memory>\n"
      "  <vcpu>{vcpus}</vcpu>\n"
      "  <os>\n"
      "    <type arch='x86_64' machine='{machine}'>hvm</type>\n"
      "    <kernel>{dir}/vmlinuz</kernel>\n"
      "    <initrd>{dir}/initrd.img</initrd>\n"
      "    <cmdline>{cmdline}</cmdline>\n"
      "  </os>\n"
      "  <on_poweroff>destroy</on_poweroff>\n"
      "  <on_reboot>destroy</on_reboot>\n"
      "  <on_crash>destroy</on_crash>\n"
      "  <devices>\n"
      "    <emulator>{emulator}</emulator>\n"
      "    <serial type='file'>\n"
      "      <source path='/var/log/libvirt/qemu/{name}-serial.log' append='on'/>\n"
      "      <target port='0'/>\n"
      "    </serial>\n"
      "    <memballoon model='none'/>\n"
      "  </devices>\n"
      "</domain>\n",
      fmt::arg("name", name), fmt::arg("metadata", metadata),
      fmt::arg("memory", options.memory_mib), fmt::arg("vcpus", options.vcpus),
      fmt::arg("machine", XmlEscape(options.machine)), fmt::arg("dir", XmlEscape(guest_dir)),
      fmt::arg("cmdline", XmlEscape(cmdline)), fmt::arg("emulator", XmlEscape(emulator)));
}

Result<std::unique_ptr<LibvirtTestHost>> LibvirtTestHost::Start(const std::string& dir,
                                                                const std::string& name,
                                                                int index) {
  if (index < 1 || index > 255) {
    return Err(
        Status::InvalidArgument(fmt::format("libvirt test host index {} is not 1..255", index)));
  }
  if (name.empty() || name.find('/') != std::string::npos) {
    return Err(Status::InvalidArgument(fmt::format("bad libvirt test host name '{}'", name)));
  }
  std::unique_ptr<LibvirtTestHost> host(new LibvirtTestHost(name, dir + "/" + name));
  Status s = host->Launch(index);
  if (!s.ok()) {
    Status detail = s.WithContext(fmt::format("cannot start libvirt test host {}", host->dir_));
    detail = Status(detail.code(), detail.message() + "; " + host->DiagnosticTail());
    (void)host->Stop();
    return Err(detail);
  }
  return host;
}

Status LibvirtTestHost::Launch(int index) {
  for (const char* sub : {"etc", "run", "lib", "cache", "log/qemu", "mig"}) {
    ESCDR_RETURN_IF_ERROR(MakeDirs(dir_ + "/" + sub));
  }
  const std::string sock = dir_ + "/run/libvirt-sock";
  if (sock.size() > 100) {
    return Status::InvalidArgument(fmt::format("socket path {} is too long", sock));
  }
  // The top-level configuration files only (see the header).
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator("/etc/libvirt", ec)) {
    if (!e.is_regular_file()) continue;
    fs::copy_file(e.path(), dir_ + "/etc/" + e.path().filename().string(),
                  fs::copy_options::overwrite_existing, ec);
    if (ec) {
      return Status::IOError(fmt::format("cannot copy {}: {}", e.path().string(), ec.message()));
    }
  }
  ESCDR_RETURN_IF_ERROR(WriteStringToFile(dir_ + "/etc/qemu.conf", kQemuConf));
  ESCDR_RETURN_IF_ERROR(
      WriteStringToFile(dir_ + "/etc/libvirtd.conf",
                        fmt::format("# escdr test host {}\n"
                                    "host_uuid = \"11111111-2222-3333-4444-{:012x}\"\n"
                                    "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
                                    name_, index)));
  for (const char* mp : kMountPoints) ESCDR_RETURN_IF_ERROR(MakeDirs(mp));

  SubprocessOptions o;
  o.argv = {"unshare", "--mount",    "--propagation",      "private", "--", "sh",
            "-c",      kStartScript, "escdr-libvirt-host", dir_};
  o.stdout_path = o.stderr_path = dir_ + "/start.log";
  // The daemons fork away from this child, so its death signal is moot.
  o.kill_with_parent = false;
  ESCDR_ASSIGN_OR_RETURN(Subprocess start, Subprocess::Spawn(o));
  Result<ExitStatus> st = start.WaitFor(kStartTimeout);
  virtlogd_pid_ = ReadPidFile(dir_ + "/run/virtlogd.pid");
  libvirtd_pid_ = ReadPidFile(dir_ + "/run/libvirtd.pid");
  if (!st.has_value()) {
    (void)start.Kill(SIGKILL);
    (void)start.Wait();
    return st.error().WithContext("starting the daemons");
  }
  if (!st->success()) {
    return Status::Internal(fmt::format("starting the daemons failed with {}: {}", st->ToString(),
                                        Tail(dir_ + "/start.log")));
  }
  // libvirtd answers once its drivers are up. It forks away before they
  // are, and exits (removing its pid file) when one fails to start.
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  for (;;) {
    if (virtlogd_pid_ == 0) virtlogd_pid_ = ReadPidFile(dir_ + "/run/virtlogd.pid");
    if (libvirtd_pid_ == 0) libvirtd_pid_ = ReadPidFile(dir_ + "/run/libvirtd.pid");
    if (virtlogd_pid_ == 0 || libvirtd_pid_ == 0) {
      return Status::Internal(
          fmt::format("no pid file of virtlogd or libvirtd under {}/run", dir_));
    }
    Result<std::unique_ptr<libvirt::LibvirtHost>> c = Connect();
    if (c.has_value()) return Status::OK();
    if (!ProcessLive(libvirtd_pid_)) {
      return Status::Unavailable(
          fmt::format("libvirtd (pid {}) exited: {}", libvirtd_pid_, c.error().message()));
    }
    if (std::chrono::steady_clock::now() > deadline) return c.error();
    std::this_thread::sleep_for(milliseconds(100));
  }
}

LibvirtTestHost::~LibvirtTestHost() { (void)Stop(); }

std::string LibvirtTestHost::uri() const {
  return fmt::format("qemu:///system?socket={}/run/libvirt-sock", dir_);
}

std::string LibvirtTestHost::p2p_uri() const {
  return fmt::format("qemu+unix:///system?socket={}/run/libvirt-sock", dir_);
}

std::vector<std::string> LibvirtTestHost::NsEnterPrefix() const {
  return {"nsenter", "-t", std::to_string(virtlogd_pid_), "-m", "--"};
}

std::string LibvirtTestHost::SerialLogPath(const std::string& domain) const {
  return fmt::format("{}/log/qemu/{}-serial.log", dir_, domain);
}

std::string LibvirtTestHost::DiagnosticTail(const std::string& domain) const {
  std::string out = fmt::format("libvirtd log of {}: {}", name_, Tail(dir_ + "/log/libvirtd.log"));
  if (!domain.empty()) {
    out += fmt::format("; QEMU log of {}: {}; serial: {}", domain,
                       Tail(fmt::format("{}/log/qemu/{}.log", dir_, domain)),
                       SerialLogTail(SerialLogPath(domain), 8));
  }
  return out;
}

Result<std::unique_ptr<libvirt::LibvirtHost>> LibvirtTestHost::Connect() const {
  return libvirt::LibvirtHost::Open(uri());
}

Status LibvirtTestHost::Stop() {
  if (stopped_) return Status::OK();
  stopped_ = true;
  Status first;
  auto note = [&first](Status s) {
    if (first.ok() && !s.ok()) first = std::move(s);
  };
  // 1. Every domain, through libvirt (it stops QEMU and cleans up after it).
  if (libvirtd_pid_ > 0 && ProcessLive(libvirtd_pid_)) {
    Result<std::unique_ptr<libvirt::LibvirtHost>> c = Connect();
    if (c.has_value()) {
      Result<std::vector<libvirt::DomainInfo>> domains = (*c)->ListDomains();
      if (domains.has_value()) {
        for (const libvirt::DomainInfo& d : *domains) {
          if (d.state != "shutoff") {
            Status s = (*c)->Destroy(d.name);
            if (!s.IsNotFound()) note(s);
          }
          if (d.persistent) {
            Status s = (*c)->Undefine(d.name);
            if (!s.IsNotFound()) note(s);
          }
        }
      } else {
        note(domains.error());
      }
    } else {
      note(c.error());
    }
  }
  // 2. The daemons, by pid.
  const Status libvirtd = StopProcess(libvirtd_pid_, "libvirtd", kStopGrace);
  note(libvirtd);
  // 3. Any QEMU left (libvirt failed above, or libvirtd died earlier).
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_ + "/run/qemu", ec)) {
    if (e.path().extension() != ".pid") continue;
    const pid_t pid = ReadPidFile(e.path().string());
    if (pid > 0 && ProcessLive(pid) && ProcessName(pid).starts_with("qemu")) {
      ::kill(pid, SIGKILL);
      note(Status::Internal(fmt::format("QEMU (pid {}) of {} outlived libvirtd and was killed", pid,
                                        e.path().string())));
    }
  }
  note(StopProcess(virtlogd_pid_, "virtlogd", kStopGrace));
  // 4. The directory (the namespace and its binds went with the daemons).
  if (!dir_.empty()) note(RemoveRecursively(dir_));
  return first;
}

}  // namespace escdr::testing
