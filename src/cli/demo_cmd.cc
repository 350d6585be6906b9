// `escdr demo`: the project's main job, end to end on one machine
// (docs/cli-demo.md).
//
// Three agents (this binary, `escdr agent`) stand for three hosts and share
// one SQLite inventory in a temporary directory; four VMs of one kind are
// placed by the inventory; the static-page catalog is learned from three of
// them; the fourth migrates once with ESCDR and once with --no-escdr. A fifth
// guest of the same kind, started by the demo itself outside escdr, migrates
// directly QEMU to QEMU with QEMU's own multifd + zstd (the alternative a user
// has without escdr; escdr/qemu/direct_migration.h) through a byte-counting
// relay, and the three are printed side by side. Every escdr step runs the
// escdr binary itself as a child process with --json, and shows the command,
// so the demo doubles as a tour of the CLI.
//
// The demo owns everything it starts: the agents (by pid), the VMs (stopped
// through the agents, then killed by the pids the agents recorded), the two
// QEMUs of the direct migration (QemuProcess, by pid; stopped as soon as
// their figures are taken, or at cleanup), and its two temporary directories
// (state under $TMPDIR or /tmp, guest RAM under
// /dev/shm). Cleanup runs on success, on error, and on SIGINT/SIGTERM/SIGHUP;
// the child processes run in their own process groups so that a Ctrl-C
// reaches only the demo, which forwards it to the command in progress (a
// migration then cancels cleanly) and then cleans up. --keep leaves it all
// running after a successful run and prints how to stop it.
//
// `--guest debian-<N>` runs the same demo on a real Debian guest of
// tools/build-distro-guest.sh (a disk overlay per VM, a NIC, KASLR): it is up,
// and runs on after a migration, when redis and nginx answer on their
// forwarded ports (DemoGuest, Demo::Probe).
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "agent/json_util.h"
#include "agent/link_testing.h"
#include "agent/vm_process.h"
#include "agent/vm_records.h"
#include "cli/command.h"
#include "cli/vm_hardware.h"
#include "escdr/agent/agent_client.h"
#include "escdr/base/vm_kind.h"
#include "escdr/qemu/direct_migration.h"
#include "escdr/qemu/launcher.h"
#include "escdr/qemu/qemu_install.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/clock.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"

namespace escdr::cli {
namespace {

using agent::StringOr;
using agent::U64Or;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

// The signal that asked the demo to stop (0: none).
std::atomic<int> g_signal{0};
void OnSignal(int sig) { g_signal.store(sig); }

// The test guest as one VmKind (the same as the tests use).
constexpr int kHosts = 3;
constexpr int kVms = 4;
constexpr int kLearnFrom = 3;  // demo-1..demo-3; demo-4 migrates
// The bandwidth cap of every migration of the demo, bytes/s, on what goes
// over the wire: 128 MiB/s, QEMU's own default and the agents' (`escdr
// migrate --max-bandwidth` caps the agents' connection), passed explicitly
// so that the escdr migrations and the direct one are sure to share it. The
// direct one gets it from its relay, with QEMU's own cap lifted (kQemuUncapped):
// QEMU 7.2 would charge its cap with multifd pages before compression.
constexpr std::uint64_t kMaxBandwidth = 134217728;
constexpr std::uint64_t kQemuUncapped = 64ull << 30;
constexpr std::uint32_t kMultifdChannels = 4;

struct DemoArgs {
  std::string guest;
  // The QEMUs the agents get (`escdr agent --qemu`), and the series the
  // demo's VMs run on ("" = that of the first).
  std::vector<std::string> qemu;
  std::string qemu_version;
  std::uint32_t memory_mib = 256;
  bool memory_set = false;  // --memory given (else 512 MiB for a Debian guest)
  bool kaslr = false;
  bool keep = false;
  bool json = false;  // `escdr demo --json`, the same as `escdr --json demo`
};

// "a b 'c d'": an argument list as a shell would need it.
std::string ShellJoin(const std::vector<std::string>& args) {
  std::string out;
  for (const std::string& a : args) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789-_./:=,+@%") == std::string::npos;
    out += plain ? a : "'" + a + "'";
  }
  return out;
}

// The last non-empty line of `text` (a CLI's "escdr: <message>").
std::string LastLine(const std::string& text) {
  std::size_t end = text.find_last_not_of("\r\n ");
  if (end == std::string::npos) return "";
  std::size_t begin = text.rfind('\n', end);
  begin = begin == std::string::npos ? 0 : begin + 1;
  return text.substr(begin, end - begin + 1);
}

std::string Pct(double part, double whole) {
  return whole > 0 ? fmt::format("{:.1f}%", 100.0 * part / whole) : "-";
}

bool ProcessExists(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

// A VM's forwarded ports: guest port -> host port on 127.0.0.1.
using Ports = std::map<std::uint16_t, std::uint16_t>;

// ", port 80 on 127.0.0.1:41873, ..." (nothing without forwards).
std::string PortsNote(const Ports& ports) {
  std::string s;
  for (auto [guest, host] : ports) s += fmt::format(", port {} on 127.0.0.1:{}", guest, host);
  return s;
}

// What the demo boots. The test guest (docs/test-guest.md) counts on its
// serial console; a real Debian guest of tools/build-distro-guest.sh boots its
// own kernel from a qcow2 overlay of disk.img and serves redis and nginx.
struct DemoGuest {
  std::string dir;
  std::string distro;   // "" (the test guest) or "debian-<N>"
  std::string cmdline;  // the image's kernel command line (dir/cmdline)
  seconds boot_timeout{600};
  bool real() const { return !distro.empty(); }
  std::string File(const char* name) const { return dir + "/" + name; }
};

// "debian-<N>": a guest name rather than a directory.
bool IsDistroName(std::string_view g) {
  return g.starts_with("debian-") && g.size() > 7 &&
         g.find_first_not_of("0123456789", 7) == std::string_view::npos;
}

// Sends `request` on a new connection to 127.0.0.1:`port` and returns the
// first line of the answer, all within `timeout`.
Result<std::string> AskLocal(std::uint16_t port, std::string_view request, milliseconds timeout) {
  const Deadline deadline = Deadline::After(timeout);
  const std::string where = fmt::format("127.0.0.1:{}", port);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Err(Status::FromErrno("socket", errno));
  auto wait = [&](short events) -> Status {
    pollfd p{fd.get(), events, 0};
    const int n = ::poll(&p, 1, deadline.PollTimeoutMs());
    if (n < 0 && errno != EINTR) return Status::FromErrno("poll " + where, errno);
    return n == 0 ? Status::Timeout(where + " did not answer in time") : Status::OK();
  };
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int err = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
  if (err == EINPROGRESS) {
    ESCDR_RETURN_IF_ERROR(wait(POLLOUT));
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
  }
  if (err != 0) return Err(Status::FromErrno("connect " + where, err));
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return Err(Status::FromErrno("send " + where, errno));
  }
  std::string got;
  while (got.find("\r\n") == std::string::npos && got.size() < 256) {
    ESCDR_RETURN_IF_ERROR(wait(POLLIN));
    char buf[256];
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n == 0) break;
    if (n < 0 && errno != EAGAIN && errno != EINTR) return Err(Status::FromErrno("recv " + where, errno));
    if (n > 0) got.append(buf, static_cast<std::size_t>(n));
  }
  if (got.empty()) return Err(Status::Unavailable(where + " closed the connection"));
  return got.substr(0, got.find("\r\n"));
}

class Demo {
 public:
  explicit Demo(DemoArgs args) : args_(std::move(args)), out_(args_.json ? stderr : stdout) {}

  // The whole demo; the comparison (JSON) on success.
  Result<json> Run();
  // Stops and removes everything the demo started (or, with keep, says how).
  Status Cleanup(bool keep);

 private:
  struct AgentProc {
    std::string host;
    std::string state_dir;
    std::string address;
    Subprocess process;
  };
  struct DemoVm {
    std::string name;
    std::string host;
    std::int64_t pid = 0;
    std::string ram_path;
    std::string serial_log;
    Ports ports;
  };
  // What a look at a guest saw: `up` (its counter reached the mark, or its
  // services answered), its counter (test guest), and what was seen when up
  // (else, for a real guest, why it is not up).
  struct Seen {
    bool up = false;
    std::uint64_t counter = 0;
    std::string what;
  };

  template <typename... T>
  void Say(fmt::format_string<T...> f, T&&... a) {
    std::fputs(fmt::format(f, std::forward<T>(a)...).c_str(), out_);
    std::fputc('\n', out_);
    std::fflush(out_);
  }

  Status Interrupted() const {
    const int sig = g_signal.load();
    if (sig == 0) return Status::OK();
    const char* name = sigabbrev_np(sig);
    return Status::Aborted(name ? fmt::format("interrupted by SIG{}", name) : "interrupted by a signal");
  }

  Status Prepare();
  Status StartAgents();
  Status CreateVms();
  Status WaitForBoot();
  Result<json> LearnCatalog();
  Result<json> Migrate(const std::string& vm, std::vector<std::string> extra, bool escdr);
  // The kernel command line of the guest with escdr.seed=`seed`.
  std::string GuestAppend(int seed) const;
  // The `vm create` arguments of demo-`i` after --memory: kernel, initrd,
  // command line, and for a real guest its disk overlay and forwards.
  std::vector<std::string> GuestArgs(int i) const;
  // The direct guest's boot and hardware: the same as demo-4's.
  Status FillDirectSpec(LaunchSpec* spec);
  Seen Probe(const std::string& serial_log, const Ports& ports, std::uint64_t min_counter) const;
  // Probes until the guest is up or `timeout` passed (Aborted on a signal).
  Result<Seen> AwaitGuest(const std::string& serial_log, const Ports& ports, std::uint64_t min_counter,
                          seconds timeout);
  // The fifth guest: started outside escdr, migrated by QEMU itself.
  Status StartDirectGuest();
  Status WaitForDirectGuest();
  Result<json> MigrateDirectly();
  // Stops the direct migration's QEMUs (removing their RAM files).
  Status StopDirectQemus();
  void PrintComparison(const json& escdr, const json& plain, const json& direct);

  // Runs `escdr --db DB --state-dir DIR --json ARGS...`, showing `$ escdr
  // ARGS...`, and returns its JSON output. A Ctrl-C of the demo is forwarded
  // (unless !interruptible) and ends the call with Aborted.
  Result<json> Escdr(const std::vector<std::string>& args, seconds timeout, bool interruptible = true);

  DemoArgs args_;
  VmKind kind_{"debian", "12", "qemu", ""};  // hypervisor_version set by Prepare
  const QemuInstall* qemu_ = nullptr;        // of qemus_: the VMs' QEMU
  std::vector<QemuInstall> qemus_;
  std::FILE* out_;
  std::string self_;
  DemoGuest guest_;
  std::string kernel_, initrd_;
  TempDir root_, shm_;
  std::string db_, cli_state_;
  std::string tls_dir_;  // the throwaway CA: ca.crt, h1..h3 and cli certificates
  std::vector<AgentProc> agents_;
  std::vector<DemoVm> vms_;
  // The direct migration's source and (once migrated) destination QEMUs.
  std::unique_ptr<QemuProcess> direct_src_, direct_dst_;
  int runs_ = 0;
};

Result<json> Demo::Escdr(const std::vector<std::string>& args, seconds timeout, bool interruptible) {
  if (interruptible) ESCDR_RETURN_IF_ERROR(Interrupted());
  const int n = ++runs_;
  SubprocessOptions o;
  o.argv = {self_, "--db", db_, "--state-dir", cli_state_, "--tls-dir", tls_dir_,
            "--tls-name", "cli", "--json"};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.stdout_path = root_.File(fmt::format("cmd{}.out", n));
  o.stderr_path = root_.File(fmt::format("cmd{}.err", n));
  o.new_process_group = true;
  Say("$ escdr {}", ShellJoin(args));
  const std::string what = fmt::format("`escdr {}`", ShellJoin(args));
  ESCDR_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(o));
  const Deadline deadline = Deadline::After(timeout);
  std::optional<Deadline> kill_at;  // set once asked to stop
  bool interrupted = false, timed_out = false;
  ExitStatus exit;
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(std::optional<ExitStatus> st, p.TryWait());
    if (st) {
      exit = *st;
      break;
    }
    if (!kill_at && ((interruptible && g_signal.load() != 0) || deadline.Expired())) {
      interrupted = g_signal.load() != 0;
      timed_out = !interrupted;
      (void)p.Kill(SIGINT);  // escdr migrate cancels cleanly on SIGINT
      kill_at = Deadline::After(seconds(60));
    }
    if (kill_at && kill_at->Expired()) (void)p.Kill(SIGKILL);
    std::this_thread::sleep_for(milliseconds(50));
  }
  const std::string err = ReadFileToString(o.stderr_path).value_or("");
  if (interrupted) {
    ESCDR_RETURN_IF_ERROR(Interrupted().WithContext(what));
  }
  if (timed_out) {
    return Err(Status::Timeout(fmt::format("{} did not finish within {} s", what, timeout.count())));
  }
  if (!exit.success()) {
    const std::string line = LastLine(err);
    return Err(Status::Aborted(
        fmt::format("{} failed ({}): {}", what, exit.ToString(), line.empty() ? "no message" : line)));
  }
  const std::string text = ReadFileToString(o.stdout_path).value_or("");
  json doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) {
    return Err(Status::ProtocolError(fmt::format("{} printed no JSON document: {}", what, text.substr(0, 200))));
  }
  return doc;
}

Status Demo::Prepare() {
  std::error_code ec;
  self_ = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return Status::IOError("cannot resolve /proc/self/exe: " + ec.message());
  if (IsDistroName(args_.guest)) {
    // A real Debian guest: its image directory, kind, memory and own command line (KASLR on).
    guest_ = {"/var/lib/escdr/guests/" + args_.guest, args_.guest, "", seconds(900)};
    for (const char* f : {"disk.img", "vmlinuz", "initrd.img", "cmdline"}) {
      if (!std::filesystem::is_regular_file(guest_.File(f), ec)) {
        return Status::NotFound(fmt::format("the guest {} is missing: {} does not exist; build it with "
                                            "tools/build-distro-guest.sh {}",
                                            args_.guest, guest_.File(f), args_.guest));
      }
    }
    const std::string cmdline = ReadFileToString(guest_.File("cmdline")).value_or("");
    guest_.cmdline = cmdline.substr(0, cmdline.find_last_not_of(" \r\n") + 1);
    args_.guest = guest_.dir;
    kind_.os_version = guest_.distro.substr(7);
    args_.kaslr = true;
    if (!args_.memory_set) args_.memory_mib = 512;
  } else if (args_.guest.empty()) {
    // <build>/src/cli/escdr -> <build>/guest, where tools/build-guest.sh puts it.
    args_.guest = (std::filesystem::path(self_).parent_path() / "../../guest").lexically_normal().string();
  }
  args_.guest = std::filesystem::absolute(args_.guest, ec).lexically_normal().string();
  kernel_ = args_.guest + "/vmlinuz";
  initrd_ = args_.guest + "/initrd.img";
  for (const std::string& f : {kernel_, initrd_}) {
    if (!std::filesystem::is_regular_file(f, ec)) {
      return Status::NotFound(fmt::format(
          "the test guest is missing: {} does not exist; build it with tools/build-guest.sh {} "
          "(or pass --guest DIR)",
          f, args_.guest));
    }
  }
  if (!guest_.real()) guest_.dir = args_.guest;
  if (args_.memory_mib < 64 || args_.memory_mib > 65536) {
    return Status::InvalidArgument(
        fmt::format("--memory {} MiB is outside [64, 65536]", args_.memory_mib));
  }
  if (args_.qemu.empty()) args_.qemu = DefaultQemuPaths();
  for (const std::string& path : args_.qemu) {
    ESCDR_ASSIGN_OR_RETURN(QemuInstall q, ProbeQemuInstall(path));
    qemus_.push_back(std::move(q));
  }
  if (args_.qemu_version.empty()) args_.qemu_version = qemus_.front().Series();
  auto found = FindQemuSeries(qemus_, args_.qemu_version);
  if (!found.has_value()) {
    return Status::NotFound(fmt::format("--qemu-version {}: {}{}", args_.qemu_version,
                                        found.error().message(),
                                        args_.qemu_version == "10.0"
                                            ? "; tools/install-qemu.sh 10.0 installs it"
                                            : ""));
  }
  qemu_ = *found;
  kind_.hypervisor_version = args_.qemu_version;
  ESCDR_ASSIGN_OR_RETURN(root_, TempDir::Create("escdr-demo"));
  ESCDR_ASSIGN_OR_RETURN(shm_, TempDir::Create("escdr-demo", "/dev/shm"));
  db_ = root_.File("inventory.db");
  cli_state_ = root_.File("cli");
  tls_dir_ = root_.File("tls");
  std::filesystem::create_directories(cli_state_, ec);
  if (ec) return Status::IOError(fmt::format("cannot create {}: {}", cli_state_, ec.message()));
  return Status::OK();
}

Status Demo::StartAgents() {
  Say("\n== 1. Three agents, hosts h1..h{}, on this machine, speaking mutual TLS 1.3", kHosts);
  Say("  a throwaway CA in {} signs a certificate for each agent and one for this CLI", tls_dir_);
  auto run = [this](const std::vector<std::string>& args) -> Status {
    auto r = Escdr(args, seconds(30));
    return r.has_value() ? Status::OK() : r.error();
  };
  ESCDR_RETURN_IF_ERROR(run({"ca", "init", "--dir", tls_dir_, "--name", "escdr-demo-ca", "--days", "2"}));
  for (const char* name : {"h1", "h2", "h3", "cli"}) {
    // The agents get the agent role, this CLI the operator's (docs/security.md §6).
    const char* role = std::string_view(name) == "cli" ? "operator" : "agent";
    ESCDR_RETURN_IF_ERROR(
        run({"ca", "issue", name, "--dir", tls_dir_, "--days", "2", "--role", role}));
  }
  for (int i = 1; i <= kHosts; ++i) {
    AgentProc a;
    a.host = fmt::format("h{}", i);
    a.state_dir = root_.File(a.host);
    std::error_code ec;
    std::filesystem::create_directories(a.state_dir, ec);
    if (ec) return Status::IOError(fmt::format("cannot create {}: {}", a.state_dir, ec.message()));
    SubprocessOptions o;
    o.argv = {self_,    "--db",   db_,        "--state-dir",   a.state_dir, "--tls-dir",
              tls_dir_, "--json", "agent",    "--name",        a.host,      "--listen",
              "127.0.0.1:0", "--ram-dir", shm_.path()};
    for (const std::string& q : args_.qemu) o.argv.insert(o.argv.end(), {"--qemu", q});
    o.stdout_path = root_.File(a.host + ".out");
    o.stderr_path = root_.File(a.host + ".log");
    o.new_process_group = true;
    // PDEATHSIG takes the agents down with a killed demo, except when they
    // are to outlive it (--keep).
    o.kill_with_parent = !args_.keep;
    std::string qemu_flags;
    for (const std::string& q : args_.qemu) qemu_flags += " --qemu " + q;
    Say("$ escdr --state-dir {} --tls-dir {} agent --name {} --listen 127.0.0.1:0 --ram-dir {}{} &",
        a.state_dir, tls_dir_, a.host, shm_.path(), qemu_flags);
    ESCDR_ASSIGN_OR_RETURN(a.process, Subprocess::Spawn(o));
    agents_.push_back(std::move(a));
  }
  for (AgentProc& a : agents_) {
    const std::string out = root_.File(a.host + ".out");
    const Deadline deadline = Deadline::After(seconds(60));
    for (;;) {
      ESCDR_RETURN_IF_ERROR(Interrupted());
      json doc = json::parse(ReadFileToString(out).value_or(""), nullptr, false);
      if (!doc.is_discarded() && doc.contains("address")) {
        a.address = StringOr(doc, "address");
        break;
      }
      ESCDR_ASSIGN_OR_RETURN(std::optional<ExitStatus> st, a.process.TryWait());
      if (st) {
        return Status::Aborted(fmt::format("agent {} exited at start ({}): {}", a.host, st->ToString(),
                                           LastLine(ReadFileToString(root_.File(a.host + ".log")).value_or(""))));
      }
      if (deadline.Expired()) return Status::Timeout(fmt::format("agent {} did not start within 60 s", a.host));
      std::this_thread::sleep_for(milliseconds(50));
    }
    Say("  agent {} listening on {} (pid {}, TLS: {})", a.host, a.address, a.process.pid(),
        StringOr(json::parse(ReadFileToString(out).value_or(""), nullptr, false), "tls"));
  }
  return Status::OK();
}

Status Demo::CreateVms() {
  Say("\n== 2. Four VMs of kind {}, {} MiB each, placed by the inventory (no --host)",
      kind_.ToString(), args_.memory_mib);
  if (guest_.real()) {
    Say("  each boots Debian from its own qcow2 overlay of {} (in {}), with redis (6379) and nginx (80) "
        "forwarded to free ports of its host", guest_.File("disk.img"), root_.File("disks"));
  }
  for (int i = 1; i <= kVms; ++i) {
    DemoVm vm;
    vm.name = fmt::format("demo-{}", i);
    std::vector<std::string> args = {"vm", "create", vm.name, "--os", kind_.os, "--os-version",
                                     kind_.os_version, "--hypervisor", kind_.hypervisor,
                                     "--hypervisor-version", kind_.hypervisor_version, "--memory",
                                     std::to_string(args_.memory_mib)};
    const std::vector<std::string> hardware = GuestArgs(i);
    args.insert(args.end(), hardware.begin(), hardware.end());
    ESCDR_ASSIGN_OR_RETURN(json doc, Escdr(args, seconds(180)));
    vm.ports = agent::VmInfo::FromJson(doc).forwards;
    vm.host = StringOr(doc, "host");
    vm.pid = static_cast<std::int64_t>(U64Or(doc, "pid"));
    vm.ram_path = StringOr(doc, "ram_path");
    vm.serial_log = StringOr(doc, "serial_log");
    if (vm.host.empty() || vm.ram_path.empty() || vm.serial_log.empty()) {
      return Status::ProtocolError(fmt::format("vm create {} printed no host, RAM file or serial log: {}",
                                               vm.name, doc.dump()));
    }
    Say("  {} on {} (QEMU pid {}, RAM file {}{})", vm.name, vm.host, vm.pid, vm.ram_path,
        PortsNote(vm.ports));
    vms_.push_back(std::move(vm));
  }
  return Status::OK();
}

Status Demo::WaitForBoot() {
  Say("\n== 3. Waiting for the guests to boot (QEMU TCG, no KVM: often {})",
      guest_.real() ? "3-6 min until redis and nginx answer" : "30-90 s");
  const auto start = MonotonicClock::now();
  const Deadline deadline = Deadline::After(guest_.boot_timeout);
  std::vector<std::string> why(vms_.size());
  std::vector<bool> up(vms_.size(), false);
  auto last_note = start;
  for (;;) {
    ESCDR_RETURN_IF_ERROR(Interrupted());
    std::size_t n_up = 0;
    for (std::size_t i = 0; i < vms_.size(); ++i) {
      if (!up[i]) {
        const Seen seen = Probe(vms_[i].serial_log, vms_[i].ports, 2);
        why[i] = seen.what.empty() ? "" : " (" + seen.what + ")";
        if (seen.up) {
          up[i] = true;
          Say("  {} is up after {:.0f} s ({})", vms_[i].name, SecondsSince(start), seen.what);
        } else if (!ProcessExists(static_cast<pid_t>(vms_[i].pid))) {
          return Status::Aborted(fmt::format("the QEMU of {} (pid {}) exited while booting; its console: {}",
                                             vms_[i].name, vms_[i].pid, SerialLogTail(vms_[i].serial_log, 5)));
        }
      }
      n_up += up[i] ? 1 : 0;
    }
    if (n_up == vms_.size()) return Status::OK();
    if (deadline.Expired()) {
      for (std::size_t i = 0; i < vms_.size(); ++i) {
        if (!up[i]) {
          return Status::Timeout(fmt::format("{} did not boot within {} s{}; its console: {}", vms_[i].name,
                                             guest_.boot_timeout.count(), why[i],
                                             SerialLogTail(vms_[i].serial_log, 5)));
        }
      }
    }
    if (SecondsSince(last_note) >= 20) {
      last_note = MonotonicClock::now();
      Say("  ... {:.0f} s, {} of {} up", SecondsSince(start), n_up, vms_.size());
    }
    std::this_thread::sleep_for(milliseconds(200));
  }
}

Result<json> Demo::LearnCatalog() {
  // The kind comes from the VMs themselves (they are all of kind_).
  std::vector<std::string> args = {"catalog", "learn"};
  std::string names;
  for (int i = 0; i < kLearnFrom; ++i) {
    args.insert(args.end(), {"--from-vm", vms_[i].name});
    names += (i ? ", " : "") + vms_[i].name;
  }
  Say("\n== 4. Learning the static-page catalog of the kind from the RAM of {}", names);
  Say("  (pages at the same position with the same content in all three: kernel text, initramfs, "
      "firmware)");
  ESCDR_ASSIGN_OR_RETURN(json doc, Escdr(args, seconds(600)));
  const std::uint64_t positions = U64Or(doc, "position_pages");
  const std::uint64_t contents = U64Or(doc, "content_pages");
  Say("  {} static pages by position ({}), {} distinct contents; stored in the inventory ({} catalog)",
      positions, HumanBytes(static_cast<double>(positions * 4096)), contents,
      HumanBytes(static_cast<double>(U64Or(doc, "size_bytes"))));
  return doc;
}

// One migration of `vm`; returns its figures in the demo's comparison form.
Result<json> Demo::Migrate(const std::string& vm, std::vector<std::string> extra, bool escdr) {
  std::vector<std::string> args = {"migrate", vm};
  args.insert(args.end(), extra.begin(), extra.end());
  // The guest's counter before (the source's serial log goes with its QEMU).
  std::uint64_t from = 0;
  for (const DemoVm& v : vms_) {
    auto c = v.name == vm ? ReadLastCounter(v.serial_log) : Result<std::optional<std::uint64_t>>();
    if (c.has_value() && c->has_value()) from = **c;
  }
  ESCDR_ASSIGN_OR_RETURN(json doc, Escdr(args, seconds(900)));
  const json report = doc.contains("report") && doc["report"].is_object() ? doc["report"] : json::object();
  const json dest_vm =
      doc.contains("destination_vm") && doc["destination_vm"].is_object() ? doc["destination_vm"] : json::object();
  json r = {{"escdr", escdr},
            {"vm", StringOr(doc, "vm")},
            {"source", StringOr(doc, "source")},
            {"destination", StringOr(doc, "destination")},
            {"donor", StringOr(doc, "donor")},
            {"stream_bytes", U64Or(report, "stream_bytes")},
            {"wire_bytes_sent", U64Or(report, "wire_bytes_sent")},
            {"wire_bytes_received", U64Or(report, "wire_bytes_received")},
            {"bytes_saved_by_position", U64Or(report, "bytes_saved_by_position")},
            {"bytes_saved_by_content", U64Or(report, "bytes_saved_by_content")},
            {"pages_by_position", U64Or(report, "pages_by_position")},
            {"pages_by_content", U64Or(report, "pages_by_content")},
            {"page_records", U64Or(report, "page_records")},
            {"zero_pages", U64Or(report, "zero_records")},
            {"pages_from_donor", U64Or(report, "pages_from_donor")},
            {"fallbacks", U64Or(report, "fallbacks")},
            {"qemu_rounds", U64Or(doc, "qemu_rounds")},
            {"total_ms", U64Or(doc, "total_ms")},
            {"downtime_ms", U64Or(doc, "downtime_ms")},
            {"qemu_downtime_ms", U64Or(doc, "qemu_downtime_ms")}};
  const double stream = static_cast<double>(U64Or(report, "stream_bytes"));
  const double wire = static_cast<double>(U64Or(report, "wire_bytes_sent"));
  r["wire_ratio"] = stream > 0 ? wire / stream : 0.0;
  const std::string donor = StringOr(doc, "donor");
  Say("  {} -> {}{} in {:.2f} s: {} on the wire for {} of QEMU stream ({})", StringOr(doc, "source"),
      StringOr(doc, "destination"), donor.empty() ? "" : fmt::format(" (donor {})", donor),
      static_cast<double>(U64Or(doc, "total_ms")) / 1000, HumanBytes(wire), HumanBytes(stream),
      Pct(wire, stream));

  // The VM now runs at the destination: follow it there and show that the
  // guest goes on counting from where it was.
  for (DemoVm& v : vms_) {
    if (v.name != vm) continue;
    const std::string source = v.host;
    v.host = StringOr(doc, "destination");
    v.pid = static_cast<std::int64_t>(U64Or(dest_vm, "pid"));
    v.ram_path = StringOr(dest_vm, "ram_path");
    v.serial_log = StringOr(dest_vm, "serial_log");
    v.ports = agent::VmInfo::FromJson(dest_vm).forwards;
    ESCDR_ASSIGN_OR_RETURN(const Seen seen, AwaitGuest(v.serial_log, v.ports, from + 2, seconds(60)));
    if (!seen.up) {
      return Err(Status::Aborted(
          guest_.real()
              ? fmt::format("{} does not run on {} after the migration: {}", vm, v.host, seen.what)
              : fmt::format("{} does not run on {} after the migration: its counter was {} on {} "
                            "and is {} there", vm, v.host, from, source, seen.counter)));
    }
    Say("  {} goes on running on {}: {}", vm, v.host,
        guest_.real() ? seen.what
                      : fmt::format("escdr-counter {} on {} before, {} on {} now", from, source, seen.counter,
                                    v.host));
  }
  return r;
}

std::string Demo::GuestAppend(int seed) const {
  std::string append = "console=ttyS0 quiet";
  if (!args_.kaslr) append += " nokaslr";
  return append + fmt::format(" escdr.seed={}", seed);
}

std::vector<std::string> Demo::GuestArgs(int i) const {
  // Each test guest writes 256 KiB of its own data (escdr.seed), so the four
  // differ the way real VMs of one kind do; Debian guests differ by themselves.
  if (!guest_.real()) return {"--kernel", kernel_, "--initrd", initrd_, "--append", GuestAppend(i)};
  return {"--disk-from", guest_.File("disk.img"), "--disk-dir", root_.File("disks"), "--forward", "80",
          "--forward", "6379", "--kernel", kernel_, "--initrd", initrd_, "--append", guest_.cmdline};
}

Status Demo::FillDirectSpec(LaunchSpec* spec) {
  spec->kernel = kernel_;
  spec->initrd = initrd_;
  // demo-4's command line (escdr.seed=4): the same guest, so the direct
  // migration moves the same memory as the escdr ones.
  spec->append = guest_.real() ? guest_.cmdline : GuestAppend(kVms);
  if (!guest_.real()) return Status::OK();
  ESCDR_ASSIGN_OR_RETURN(DiskSpec overlay,
                         CreateOverlay(guest_.File("disk.img"), root_.File("disks"), spec->name));
  spec->disks = {overlay};
  NicSpec nic;
  nic.mac = MacForVm(spec->name, 0);
  nic.forwards = {{80, 0}, {6379, 0}};
  spec->nics = {nic};
  return ResolveHostPorts(spec);
}

Demo::Seen Demo::Probe(const std::string& serial_log, const Ports& ports, std::uint64_t min_counter) const {
  Seen s;
  if (!guest_.real()) {
    auto c = ReadLastCounter(serial_log);
    if (c.has_value() && c->has_value()) s.counter = **c;
    s.up = s.counter >= min_counter;
    if (s.up) s.what = fmt::format("escdr-counter {}", s.counter);
    return s;
  }
  const auto redis = ports.find(6379), web = ports.find(80);
  if (redis == ports.end() || web == ports.end()) {
    s.what = "ports 80 and 6379 are not forwarded";
    return s;
  }
  auto pong = AskLocal(redis->second, "PING\r\n", seconds(2));
  if (!pong.has_value() || !pong->starts_with("+PONG")) {
    s.what = fmt::format("redis: {}", pong.has_value() ? "answered '" + *pong + "'" : pong.error().message());
    return s;
  }
  auto status = AskLocal(web->second, "GET / HTTP/1.0\r\n\r\n", seconds(5));
  if (!status.has_value() || !(status->starts_with("HTTP/1.1 200") || status->starts_with("HTTP/1.0 200"))) {
    s.what = fmt::format("nginx: {}",
                         status.has_value() ? "answered '" + *status + "'" : status.error().message());
    return s;
  }
  s.up = true;
  s.what = fmt::format("redis PONG and nginx 200 on 127.0.0.1:{}/{}", redis->second, web->second);
  return s;
}

Result<Demo::Seen> Demo::AwaitGuest(const std::string& serial_log, const Ports& ports,
                                    std::uint64_t min_counter, seconds timeout) {
  const Deadline deadline = Deadline::After(timeout);
  for (;;) {
    ESCDR_RETURN_IF_ERROR(Interrupted());
    std::this_thread::sleep_for(milliseconds(200));
    Seen seen = Probe(serial_log, ports, min_counter);
    if (seen.up || deadline.Expired()) return seen;
  }
}

Status Demo::StartDirectGuest() {
  Say("  and, outside escdr, a fifth guest of the kind for QEMU's own multifd+zstd migration "
      "(same kernel, initrd, memory and command line as {}{})", vms_.back().name,
      guest_.real() ? ", its own overlay of the same disk image, a NIC with the same forwards" : "");
  LaunchSpec spec;
  spec.name = "demo-direct";
  spec.memory_mib = args_.memory_mib;
  ESCDR_RETURN_IF_ERROR(FillDirectSpec(&spec));
  spec.ram_path = shm_.File("direct-1.ram");
  spec.qmp_socket = root_.File("direct-1.qmp");
  spec.serial_log = root_.File("direct-1.serial");
  ESCDR_RETURN_IF_ERROR(UseQemuInstall(*qemu_, &spec));
  QemuProcessOptions o;
  o.remove_ram_file = true;
  ESCDR_ASSIGN_OR_RETURN(direct_src_, QemuProcess::Start(spec, o));
  Say("  demo-direct (QEMU pid {}, RAM file {}{})", direct_src_->pid(), spec.ram_path,
      PortsNote(ForwardedPorts(spec)));
  return Status::OK();
}

Status Demo::WaitForDirectGuest() {
  const Deadline deadline = Deadline::After(guest_.boot_timeout);
  for (;;) {
    ESCDR_RETURN_IF_ERROR(Interrupted());
    const Seen seen = Probe(direct_src_->spec().serial_log, ForwardedPorts(direct_src_->spec()), 2);
    if (seen.up) {
      Say("  demo-direct is up ({})", seen.what);
      return Status::OK();
    }
    if (!direct_src_->Running()) {
      return Status::Aborted(fmt::format("the QEMU of demo-direct exited while booting: {}",
                                         direct_src_->QemuLogTail()));
    }
    if (deadline.Expired()) {
      return Status::Timeout(fmt::format("demo-direct did not boot within {} s{}; its console: {}",
                                         guest_.boot_timeout.count(),
                                         seen.what.empty() ? "" : " (" + seen.what + ")",
                                         SerialLogTail(direct_src_->spec().serial_log, 5)));
    }
    std::this_thread::sleep_for(milliseconds(200));
  }
}

Status Demo::StopDirectQemus() {
  std::vector<std::string> problems;
  for (std::unique_ptr<QemuProcess>* q : {&direct_dst_, &direct_src_}) {
    if (!*q) continue;
    const pid_t pid = (*q)->pid();
    Status s = (*q)->Stop();
    if (!s.ok()) problems.push_back(fmt::format("stopping QEMU pid {}: {}", pid, s.message()));
    q->reset();
  }
  if (problems.empty()) return Status::OK();
  std::string all;
  for (const std::string& p : problems) all += (all.empty() ? "" : "; ") + p;
  return Status::Internal(all);
}

Result<json> Demo::MigrateDirectly() {
  ESCDR_RETURN_IF_ERROR(Interrupted());
  Say("\n   ... and demo-direct, the same guest outside escdr, by QEMU itself: multifd with {} channels, "
      "multifd-compression zstd, straight to a new QEMU (-S -incoming defer) through a relay that counts "
      "the bytes and caps them at the same {} bytes/s", kMultifdChannels, kMaxBandwidth);
  LaunchSpec spec = direct_src_->spec();
  spec.name = "demo-direct-2";
  spec.ram_path = shm_.File("direct-2.ram");
  spec.qmp_socket = root_.File("direct-2.qmp");
  spec.serial_log = root_.File("direct-2.serial");
  // The destination QEMU forwards ports of its own: the source still holds its.
  for (NicSpec& n : spec.nics) {
    for (PortForward& f : n.forwards) f.host_port = 0;
  }
  ESCDR_RETURN_IF_ERROR(ResolveHostPorts(&spec));
  DirectMigrationOptions o;
  o.max_bandwidth = kQemuUncapped;
  o.multifd = true;
  o.multifd_channels = kMultifdChannels;
  o.multifd_compression = "zstd";
  o.timeout = milliseconds(900000);
  o.destination_options.remove_ram_file = true;
  std::unique_ptr<agent::testing::FaultyLink> relay;
  o.route = [&](const std::string& host, std::uint16_t port) -> Result<std::string> {
    ESCDR_ASSIGN_OR_RETURN(relay, agent::testing::FaultyLink::Start(fmt::format("{}:{}", host, port)));
    relay->SetRate(kMaxBandwidth);
    return relay->address();
  };
  Say("  QMP, both QEMUs: migrate-set-capabilities return-path multifd; migrate-set-parameters "
      "multifd-channels {} multifd-compression zstd; source: max-bandwidth {} (uncapped); "
      "migrate-incoming tcp:127.0.0.1:0 / migrate tcp:<relay>", kMultifdChannels, kQemuUncapped);
  std::uint64_t from = 0;
  if (auto c = ReadLastCounter(direct_src_->spec().serial_log); c.has_value() && c->has_value()) from = **c;
  ESCDR_ASSIGN_OR_RETURN(DirectMigrationResult m, MigrateDirect(direct_src_->qmp(), spec, o));
  direct_dst_ = std::move(m.destination);
  // Everything the source sent; the return path is left out, as the ESCDR
  // columns count only wire_bytes_sent.
  const std::uint64_t wire = relay->forwarded_to_target();
  const std::uint64_t returned = relay->forwarded() - wire;
  const int connections = relay->connections();
  relay.reset();
  const MigrationInfo& info = m.source;
  const auto total_ms = static_cast<std::uint64_t>(m.elapsed.count() / 1000);
  json r = {{"multifd_channels", kMultifdChannels},
            {"multifd_compression", "zstd"},
            {"max_bandwidth", kMaxBandwidth},  // the relay's rate; QEMU's own cap is lifted
            {"wire_bytes_sent", wire},
            {"wire_bytes_received", returned},
            {"connections", connections},
            {"qemu_ram_transferred", info.ram_transferred},
            {"qemu_multifd_bytes", info.ram_multifd_bytes},
            {"page_records", info.ram_normal},
            {"zero_pages", info.ram_duplicate},
            {"qemu_rounds", info.ram_dirty_sync_count},
            {"qemu_total_time_ms", info.total_time_ms},
            {"total_ms", total_ms},
            {"downtime_ms", info.downtime_ms}};
  Say("  QEMU pid {} -> QEMU pid {} in {:.2f} s over {} connections: {} on the wire for {} of RAM as QEMU "
      "counts it (before compression)",
      direct_src_->pid(), direct_dst_->pid(), static_cast<double>(total_ms) / 1000, connections,
      HumanBytes(static_cast<double>(wire)),
      HumanBytes(static_cast<double>(info.ram_transferred)));

  // Resume at the destination and see the guest run on, as for demo-4.
  ESCDR_RETURN_IF_ERROR(Cont(direct_dst_->qmp()));
  ESCDR_ASSIGN_OR_RETURN(const Seen seen, AwaitGuest(direct_dst_->spec().serial_log,
                                                     ForwardedPorts(direct_dst_->spec()), from + 2, seconds(60)));
  if (!seen.up) {
    return Err(Status::Aborted(
        guest_.real() ? "demo-direct does not run after QEMU's own migration: " + seen.what
                      : fmt::format("demo-direct does not run after QEMU's own migration: its counter was {} "
                                    "before and is {} now", from, seen.counter)));
  }
  Say("  demo-direct goes on running at the destination: {}",
      guest_.real() ? seen.what : fmt::format("escdr-counter {} before, {} now", from, seen.counter));
  // Its figures are taken: both QEMUs go now (the agents do not know them).
  ESCDR_RETURN_IF_ERROR(StopDirectQemus());
  return r;
}

void Demo::PrintComparison(const json& e, const json& p, const json& d) {
  auto bytes = [](const json& j, const char* k) { return HumanBytes(static_cast<double>(U64Or(j, k))); };
  auto count = [](const json& j, const char* k) { return std::to_string(U64Or(j, k)); };
  auto ms = [](const json& j, const char* k) { return fmt::format("{} ms", U64Or(j, k)); };
  auto route = [](const json& j) {
    std::string donor = StringOr(j, "donor");
    return fmt::format("{} -> {}{}", StringOr(j, "source"), StringOr(j, "destination"),
                       donor.empty() ? "" : " (donor " + donor + ")");
  };
  auto ratio = [](const json& j) {
    return Pct(static_cast<double>(U64Or(j, "wire_bytes_sent")), static_cast<double>(U64Or(j, "stream_bytes")));
  };
  // The direct migration has no escdr session: what QEMU produced is its own
  // ram.transferred (RAM records before compression; the device state, well
  // under 1 MiB, is not in it), and nothing is elided or fetched from a donor.
  const std::string none = "-";
  const double dw = static_cast<double>(U64Or(d, "wire_bytes_sent"));
  const double dq = static_cast<double>(U64Or(d, "qemu_ram_transferred"));
  Table t({"", ">ESCDR", ">--no-escdr", ">QEMU multifd+zstd"});
  t.AddRow({"route", route(e), route(p), fmt::format("QEMU -> QEMU ({} channels)", U64Or(d, "multifd_channels"))});
  t.AddRow({"bytes QEMU produced", bytes(e, "stream_bytes"), bytes(p, "stream_bytes"),
            bytes(d, "qemu_ram_transferred") + " (RAM)"});
  t.AddRow({"bytes on the wire", bytes(e, "wire_bytes_sent"), bytes(p, "wire_bytes_sent"),
            bytes(d, "wire_bytes_sent")});
  t.AddRow({"wire / produced", ratio(e), ratio(p), Pct(dw, dq)});
  t.AddRow({"saved by position", bytes(e, "bytes_saved_by_position"), bytes(p, "bytes_saved_by_position"), none});
  t.AddRow({"saved by content", bytes(e, "bytes_saved_by_content"), bytes(p, "bytes_saved_by_content"), none});
  t.AddRow({"full pages (PAGE records)", count(e, "page_records"), count(p, "page_records"), count(d, "page_records")});
  t.AddRow({"zero pages (ZERO records)", count(e, "zero_pages"), count(p, "zero_pages"), count(d, "zero_pages")});
  t.AddRow({"pages copied from the donor", count(e, "pages_from_donor"), count(p, "pages_from_donor"), none});
  t.AddRow({"fallbacks (donor page changed)", count(e, "fallbacks"), count(p, "fallbacks"), none});
  t.AddRow({"pre-copy rounds (QEMU)", count(e, "qemu_rounds"), count(p, "qemu_rounds"), count(d, "qemu_rounds")});
  t.AddRow({"total time", ms(e, "total_ms"), ms(p, "total_ms"), ms(d, "total_ms")});
  t.AddRow({"downtime", ms(e, "downtime_ms"), ms(p, "downtime_ms"), ms(d, "downtime_ms")});
  Say("\n== 6. ESCDR, a plain migration of the same VM, and QEMU's own multifd+zstd, side by side");
  std::fputs(t.Render().c_str(), out_);
  const double we = static_cast<double>(U64Or(e, "wire_bytes_sent"));
  const double wp = static_cast<double>(U64Or(p, "wire_bytes_sent"));
  if (wp > 0) {
    Say("ESCDR put {} on the wire where the plain migration put {}: {:.0f}% less.", HumanBytes(we),
        HumanBytes(wp), 100.0 * (wp - we) / wp);
  }
  if (dw > 0) {
    Say("QEMU's multifd+zstd put {} on the wire for the same kind of guest: ESCDR sent {:.0f}% {} than it.",
        HumanBytes(dw), 100.0 * std::abs(dw - we) / dw, we <= dw ? "less" : "more");
  }
}

Result<json> Demo::Run() {
  ESCDR_RETURN_IF_ERROR(Prepare());
  Say("escdr demo: {} agents, {} VMs of one kind, a catalog, two migrations compared with QEMU's own "
      "multifd+zstd", kHosts, kVms);
  Say("  guest      {} ({} MiB, {})", args_.guest, args_.memory_mib, args_.kaslr ? "KASLR" : "nokaslr");
  Say("  QEMU       {} ({}), for the kind {}", qemu_->version, qemu_->path, kind_.ToString());
  Say("  work dir   {} (inventory, agent state, logs)", root_.path());
  Say("  guest RAM  {}", shm_.path());
  Say("  every `$ escdr ...` below runs as `escdr --db {} --state-dir {} --tls-dir {} --tls-name cli "
      "--json ...`", db_, cli_state_, tls_dir_);
  ESCDR_RETURN_IF_ERROR(StartAgents());
  ESCDR_RETURN_IF_ERROR(CreateVms());
  ESCDR_RETURN_IF_ERROR(StartDirectGuest());
  ESCDR_RETURN_IF_ERROR(WaitForBoot());
  ESCDR_RETURN_IF_ERROR(WaitForDirectGuest());
  ESCDR_ASSIGN_OR_RETURN(json catalog, LearnCatalog());

  // demo-4 was not learned from: it stands for any new VM of the kind.
  const DemoVm& mover = vms_.back();
  const std::string first_host = mover.host;
  Say("\n== 5. Migrating {} (on {}) with ESCDR; the inventory picks a host with a donor", mover.name,
      first_host);
  const std::string bw = std::to_string(kMaxBandwidth);
  ESCDR_ASSIGN_OR_RETURN(json with, Migrate(mover.name, {"--max-bandwidth", bw}, true));
  // The baseline goes to another host that also runs a VM of the kind, so
  // that ESCDR could have used a donor there too: back to where the VM came
  // from if that host still runs one, else any other such host.
  std::string back;
  for (const DemoVm& v : vms_) {
    if (v.name == mover.name || v.host == mover.host) continue;
    if (back.empty() || v.host == first_host) back = v.host;
  }
  if (back.empty()) return Err(Status::FailedPrecondition("no other host runs a VM of the kind"));
  Say("\n   ... and again without ESCDR (every page sent), to {}, which also runs a VM of the kind", back);
  ESCDR_ASSIGN_OR_RETURN(json plain, Migrate(mover.name, {"--no-escdr", "--to", back, "--max-bandwidth", bw}, false));
  ESCDR_ASSIGN_OR_RETURN(json direct, MigrateDirectly());

  if (!args_.json) PrintComparison(with, plain, direct);
  json hosts = json::array();
  for (const AgentProc& a : agents_) {
    hosts.push_back({{"name", a.host}, {"address", a.address}, {"pid", a.process.pid()}});
  }
  json vms = json::array();
  for (const DemoVm& v : vms_) {
    vms.push_back({{"name", v.name}, {"host", v.host}, {"pid", v.pid}, {"ram_path", v.ram_path}});
  }
  const double we = with["wire_bytes_sent"].get<double>();
  const double wp = plain["wire_bytes_sent"].get<double>();
  return json{{"kind", {{"os", kind_.os}, {"os_version", kind_.os_version}, {"hypervisor", kind_.hypervisor},
                        {"hypervisor_version", kind_.hypervisor_version}}},
              {"guest", args_.guest},
              {"memory_mib", args_.memory_mib},
              {"kaslr", args_.kaslr},
              {"hosts", hosts},
              {"vms", vms},
              {"catalog", {{"learned_from", {vms_[0].name, vms_[1].name, vms_[2].name}},
                           {"position_pages", U64Or(catalog, "position_pages")},
                           {"content_pages", U64Or(catalog, "content_pages")},
                           {"size_bytes", U64Or(catalog, "size_bytes")}}},
              {"escdr", with},
              {"no_escdr", plain},
              {"qemu_multifd_zstd", direct},
              {"wire_reduction", wp > 0 ? (wp - we) / wp : 0.0}};
}

Status Demo::Cleanup(bool keep) {
  if (root_.path().empty()) return Status::OK();  // Prepare() failed early
  // The direct migration's QEMUs are not the agents' and never kept: on
  // success they are already gone, after an error they go here.
  const Status direct_stopped = StopDirectQemus();
  if (keep) {
    Say("\n== Everything keeps running (--keep). To look around:");
    Say("  export ESCDR_DB={} ESCDR_TLS_DIR={} ESCDR_TLS_NAME=cli", db_, tls_dir_);
    Say("  {} --state-dir {} agent status", self_, cli_state_);
    Say("To stop it all:");
    std::string names, pids;
    for (const DemoVm& v : vms_) names += " " + v.name;
    for (const AgentProc& a : agents_) pids += fmt::format(" {}", a.process.pid());
    Say("  for vm in{}; do {} --state-dir {} vm stop $vm; done", names, self_, cli_state_);
    Say("  kill{}", pids);
    Say("  rm -rf {} {}", root_.path(), shm_.path());
    // The Subprocess objects would kill the agents when destroyed.
    for (AgentProc& a : agents_) a.process = Subprocess();
    (void)root_.Release();
    (void)shm_.Release();
    return direct_stopped;
  }
  Say("\n== Cleaning up: the VMs, the agents, {} and {}", root_.path(), shm_.path());
  std::vector<std::string> problems;
  if (!direct_stopped.ok()) problems.push_back(direct_stopped.message());
  // 1. The VMs, through their agents (while the agents run).
  for (const DemoVm& v : vms_) {
    bool agent_up = false;
    for (AgentProc& a : agents_) {
      auto st = a.process.TryWait();
      if (a.host == v.host && st.has_value() && !st->has_value()) agent_up = true;
    }
    if (!agent_up) continue;  // its QEMU is killed by pid below
    auto r = Escdr({"vm", "stop", v.name}, seconds(60), /*interruptible=*/false);
    if (!r.has_value()) problems.push_back(r.error().message());
  }
  // 2. The agents, by the pids the demo started.
  for (AgentProc& a : agents_) {
    auto st = a.process.TryWait();
    if (!st.has_value() || st->has_value()) continue;
    (void)a.process.Kill(SIGTERM);
    if (!a.process.WaitFor(seconds(30)).has_value()) {
      problems.push_back(fmt::format("agent {} (pid {}) ignored SIGTERM; killed it", a.host, a.process.pid()));
      (void)a.process.Kill(SIGKILL);
      (void)a.process.Wait();
    }
  }
  Say("  stopped {} agents", agents_.size());
  // 3. Any QEMU an agent still records (a failed stop, a migration cut
  // short): killed by its recorded pid, after checking it is that QEMU.
  for (const AgentProc& a : agents_) {
    for (const agent::VmRecord& r : agent::ReadVmRecords(a.state_dir + "/vms").records) {
      auto proc = agent::VmProcess::Adopt(r.pid, r.spec.qmp_socket, false, milliseconds(0));
      if (!proc.has_value()) continue;
      Status killed = (*proc)->Kill();
      Say("  killed the QEMU of {} (pid {}) that {} left behind", r.name, r.pid, a.host);
      if (!killed.ok()) problems.push_back(killed.message());
    }
  }
  // 4. The directories (RAM files, sockets, inventory, logs).
  for (TempDir* dir : {&shm_, &root_}) {
    Status s = dir->Remove();
    if (!s.ok()) problems.push_back(s.message());
  }
  if (problems.empty()) {
    Say("  removed the work directory and the guest RAM directory; nothing is left running");
    return Status::OK();
  }
  std::string all;
  for (const std::string& p : problems) all += (all.empty() ? "" : "; ") + p;
  return Status::Internal("cleanup was incomplete: " + all);
}

void RunDemo(const GlobalOptions& global, DemoArgs args) {
  args.json = args.json || global.json;
  // A Ctrl-C (or SIGTERM, SIGHUP) is noted and handled between steps; the
  // children run in their own process groups and do not see the terminal's.
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {}, old_hup {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGHUP, &sa, &old_hup);
  ::signal(SIGPIPE, SIG_IGN);
  // QEMUs whose agent dies are re-parented to the demo, which reaps them.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);

  Demo demo(args);
  Result<json> result = demo.Run();
  Status cleaned = demo.Cleanup(args.keep && result.has_value());
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGHUP, &old_hup, nullptr);
  if (!result.has_value()) {
    const Status& s = result.error();
    Fail(Status(s.code(), fmt::format("demo: {} ({})", s.message(),
                                      cleaned.ok() ? "everything it started was stopped and removed"
                                                   : cleaned.message())));
  }
  if (args.json) {
    json doc = std::move(result).value();
    doc["kept"] = args.keep;
    std::fputs(doc.dump(2).c_str(), stdout);
    std::fputc('\n', stdout);
  }
  Check(cleaned);
}

void RegisterDemoCommand(CLI::App& app, GlobalOptions& global) {
  auto a = std::make_shared<DemoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "demo",
      "Run ESCDR end to end on this machine: 3 agents, 4 VMs of one kind, a learned catalog, "
      "one VM migrated with and without ESCDR, compared with QEMU's own multifd+zstd migration; "
      "cleans up after itself");
  cmd->add_option("--guest", a->guest,
                  "Test guest directory with vmlinuz and initrd.img (tools/build-guest.sh DIR; "
                  "default: <build>/guest next to this binary), or debian-12|debian-13: the real "
                  "Debian guest of tools/build-distro-guest.sh");
  CLI::Option* memory =
      cmd->add_option("--memory", a->memory_mib, "Guest memory in MiB (default 256; 512 for debian-N)");
  cmd->add_option("--qemu-version", a->qemu_version,
                  "QEMU series the VMs run on, e.g. 10.0 (default: that of the first --qemu)");
  cmd->add_option("--qemu", a->qemu,
                  "QEMUs the agents run (escdr agent --qemu; default qemu-system-x86_64 and "
                  "every /var/lib/escdr/qemu-* tree of tools/install-qemu.sh)");
  cmd->add_flag("--kaslr", a->kaslr, "Boot the guests with KASLR (default: nokaslr)");
  cmd->add_flag("--keep", a->keep, "Leave the agents and VMs running at the end and print how to stop them");
  cmd->add_flag("--json", a->json, "Print the comparison as one JSON document (progress goes to stderr)");
  cmd->callback([&global, a, memory] {
    a->memory_set = memory->count() > 0;
    RunDemo(global, *a);
  });
}

}  // namespace

ESCDR_REGISTER_COMMAND(RegisterDemoCommand);

}  // namespace escdr::cli
