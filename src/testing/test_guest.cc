#include "testing/test_guest.h"

#include <sys/stat.h>

#include <cstdlib>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "escdr/qemu/qemu_install.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/clock.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/unique_fd.h"

namespace escdr::testing {
namespace {

constexpr std::chrono::milliseconds kPollInterval{20};

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

bool IsFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// This checkout's root, from where this file was compiled
// (<root>/src/testing/test_guest.cc).
std::string CheckoutRoot() {
  std::string file = __FILE__;
  std::string suffix = "/src/testing/test_guest.cc";
  if (file.size() > suffix.size() && file.ends_with(suffix)) {
    return file.substr(0, file.size() - suffix.size());
  }
  return ".";
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

std::string Qemu10Dir() {
  const char* env = std::getenv("ESCDR_QEMU10_DIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : "/var/lib/escdr/qemu-10.0";
  struct stat st {};
  return ::stat((dir + "/usr/bin/qemu-system-x86_64").c_str(), &st) == 0 ? dir : "";
}

Result<DistroGuest> EnsureDistroGuest(const std::string& name) {
  const std::string out =
      !Env("ESCDR_DISTRO_GUEST_DIR").empty() ? Env("ESCDR_DISTRO_GUEST_DIR") : "/var/lib/escdr/guests";
  const std::string source =
      !Env("ESCDR_SOURCE_DIR").empty() ? Env("ESCDR_SOURCE_DIR") : CheckoutRoot();
  static std::mutex mu;
  static std::set<std::string> checked;
  std::lock_guard lock(mu);
  DistroGuest g{name, out + "/" + name, out + "/" + name + "/disk.img",
                out + "/" + name + "/vmlinuz", out + "/" + name + "/initrd.img", ""};
  if (checked.count(name) == 0) {
    ESCDR_ASSIGN_OR_RETURN(TempDir tmp, TempDir::Create("escdr-distro-build"));
    SubprocessOptions o;
    o.argv = {"bash", source + "/tools/build-distro-guest.sh", name, out};
    o.stdout_path = o.stderr_path = tmp.File("build.log");
    ESCDR_ASSIGN_OR_RETURN(Subprocess build, Subprocess::Spawn(o));
    ESCDR_ASSIGN_OR_RETURN(ExitStatus st, build.WaitFor(std::chrono::minutes(15)));
    if (!st.success()) {
      std::string log = ReadFileToString(tmp.File("build.log")).value_or("");
      if (log.size() > 4000) log = log.substr(log.size() - 4000);
      return Err(Status::Internal(fmt::format("cannot build distribution guest {}: {}: {}", name,
                                              st.ToString(), log)));
    }
    checked.insert(name);
  }
  for (const std::string& f : {g.disk, g.kernel, g.initrd}) {
    if (!IsFile(f)) return Err(Status::NotFound(fmt::format("distribution guest file {} is missing", f)));
  }
  ESCDR_ASSIGN_OR_RETURN(g.cmdline, ReadFileToString(g.dir + "/cmdline"));
  while (!g.cmdline.empty() && (g.cmdline.back() == '\n' || g.cmdline.back() == ' ')) {
    g.cmdline.pop_back();
  }
  return g;
}

Result<std::string> EnsureGuestBuilt(const GuestOptions& options) {
  std::string source = !options.source_dir.empty() ? options.source_dir
                       : !Env("ESCDR_SOURCE_DIR").empty() ? Env("ESCDR_SOURCE_DIR")
                                                          : CheckoutRoot();
  std::string dir = !options.guest_dir.empty()          ? options.guest_dir
                    : !Env("ESCDR_GUEST_DIR").empty() ? Env("ESCDR_GUEST_DIR")
                                                        : source + "/build/guest";
  // The build script is idempotent but not free; once per directory and
  // process is enough.
  static std::mutex mu;
  static std::set<std::string> checked;
  std::lock_guard lock(mu);
  if (checked.count(dir) != 0) return dir;

  std::string script = source + "/tools/build-guest.sh";
  if (IsFile(script)) {
    ESCDR_ASSIGN_OR_RETURN(TempDir tmp, TempDir::Create("escdr-guest-build"));
    SubprocessOptions o;
    o.argv = {"bash", script, dir};
    o.stdout_path = o.stderr_path = tmp.File("build.log");
    ESCDR_ASSIGN_OR_RETURN(Subprocess build, Subprocess::Spawn(o));
    ESCDR_ASSIGN_OR_RETURN(ExitStatus st, build.WaitFor(std::chrono::minutes(5)));
    if (!st.success()) {
      return Err(Status::Internal(fmt::format("cannot build the test guest with {} {}: {}: {}",
                                              script, dir, st.ToString(),
                                              ReadFileToString(tmp.File("build.log")).value_or(""))));
    }
  }
  for (const char* f : {"vmlinuz", "initrd.img", "VERSION"}) {
    if (!IsFile(dir + "/" + f)) {
      return Err(Status::NotFound(fmt::format(
          "test guest {} has no {} (run tools/build-guest.sh {}, or set ESCDR_GUEST_DIR)", dir, f,
          dir)));
    }
  }
  checked.insert(dir);
  return dir;
}

Result<std::unique_ptr<TestGuest>> TestGuest::Launch(const GuestOptions& options,
                                                     const std::string& guest_dir) {
  std::unique_ptr<TestGuest> guest(new TestGuest());
  guest->options_ = options;
  ESCDR_ASSIGN_OR_RETURN(guest->dir_, TempDir::Create("escdr-guest", options.work_parent));
  auto version = ReadFileToString(guest_dir + "/VERSION");
  if (version.has_value()) {
    guest->kernel_version_ = *version;
    while (!guest->kernel_version_.empty() && guest->kernel_version_.back() == '\n') {
      guest->kernel_version_.pop_back();
    }
  }

  LaunchSpec spec;
  spec.name = options.name.empty() ? "escdr-test-guest" : options.name;
  spec.memory_mib = options.memory_mib;
  spec.vcpus = options.vcpus;
  spec.machine = options.machine;
  spec.kernel = guest_dir + "/vmlinuz";
  spec.initrd = guest_dir + "/initrd.img";
  spec.append = "console=ttyS0 quiet";
  if (!options.kaslr) spec.append += " nokaslr";
  if (options.dirty_mib > 0) spec.append += fmt::format(" escdr.dirty={}", options.dirty_mib);
  if (options.seed) spec.append += fmt::format(" escdr.seed={}", *options.seed);
  if (!options.extra_append.empty()) spec.append += " " + options.extra_append;
  spec.ram_path = guest->dir_.File("ram");
  spec.qmp_socket = guest->dir_.File("qmp.sock");
  spec.serial_log = guest->dir_.File("serial.log");
  spec.extra_args = options.extra_qemu_args;
  if (!options.qemu.empty()) {
    ESCDR_ASSIGN_OR_RETURN(QemuInstall qemu, ProbeQemuInstall(options.qemu));
    ESCDR_RETURN_IF_ERROR(UseQemuInstall(qemu, &spec));
  }

  QemuProcessOptions po;
  po.start_timeout = options.boot_timeout;
  po.qemu_log = guest->dir_.File("qemu.log");
  po.remove_ram_file = true;
  guest->started_ = MonotonicClock::now();
  auto process = QemuProcess::Start(spec, po);
  if (!process.has_value()) {
    return Err(process.error().WithContext(fmt::format("cannot boot test guest {}", spec.name)));
  }
  guest->process_ = std::move(*process);
  return guest;
}

Status TestGuest::CheckAlive() {
  if (process_->Running()) return Status::OK();
  std::string how = process_->exit_status() ? process_->exit_status()->ToString() : "unknown status";
  return Status::Aborted(fmt::format("QEMU of test guest {} (pid {}) exited with {}; {}",
                                     spec().name, pid(), how, DiagnosticTail()));
}

Status TestGuest::WaitAllSettled(const std::vector<TestGuest*>& guests) {
  std::vector<TestGuest*> waiting = guests;
  while (!waiting.empty()) {
    for (auto it = waiting.begin(); it != waiting.end();) {
      TestGuest* g = *it;
      ESCDR_ASSIGN_OR_RETURN(std::uint64_t counter, g->LastCounter());
      if (counter >= 1 && g->first_counter_seconds_ == 0) {
        g->first_counter_seconds_ = SecondsSince(g->started_);
      }
      if (counter >= g->options_.settle_counter) {
        g->boot_seconds_ = SecondsSince(g->started_);
        it = waiting.erase(it);
        continue;
      }
      ESCDR_RETURN_IF_ERROR(g->CheckAlive());
      if (MonotonicClock::now() - g->started_ > g->options_.boot_timeout) {
        return Status::Timeout(fmt::format(
            "test guest {} did not reach escdr-counter {} within {} ms (last counter {}); {}",
            g->spec().name, g->options_.settle_counter, g->options_.boot_timeout.count(), counter,
            g->DiagnosticTail()));
      }
      ++it;
    }
    if (!waiting.empty()) std::this_thread::sleep_for(kPollInterval);
  }
  return Status::OK();
}

Result<std::unique_ptr<TestGuest>> TestGuest::Boot(const GuestOptions& options) {
  ESCDR_ASSIGN_OR_RETURN(std::string guest_dir, EnsureGuestBuilt(options));
  ESCDR_ASSIGN_OR_RETURN(std::unique_ptr<TestGuest> guest, Launch(options, guest_dir));
  ESCDR_RETURN_IF_ERROR(WaitAllSettled({guest.get()}));
  return guest;
}

Result<std::vector<std::unique_ptr<TestGuest>>> TestGuest::BootMany(
    const std::vector<GuestOptions>& options) {
  std::vector<std::unique_ptr<TestGuest>> guests;
  // Launching only spawns QEMU and connects QMP (fast); all guests then boot
  // in parallel. Spawning from this thread keeps QEMU alive as long as the
  // caller's thread (see PR_SET_PDEATHSIG in escdr/sys/subprocess.h).
  for (const GuestOptions& o : options) {
    ESCDR_ASSIGN_OR_RETURN(std::string guest_dir, EnsureGuestBuilt(o));
    ESCDR_ASSIGN_OR_RETURN(std::unique_ptr<TestGuest> g, Launch(o, guest_dir));
    guests.push_back(std::move(g));
  }
  std::vector<TestGuest*> raw;
  for (auto& g : guests) raw.push_back(g.get());
  ESCDR_RETURN_IF_ERROR(WaitAllSettled(raw));
  return guests;
}

Result<std::vector<std::unique_ptr<TestGuest>>> TestGuest::BootMany(const GuestOptions& base,
                                                                    int count) {
  std::vector<GuestOptions> all;
  for (int i = 0; i < count; ++i) {
    GuestOptions o = base;
    o.name = fmt::format("{}-{}", base.name.empty() ? "escdr-test-guest" : base.name, i);
    if (base.seed) o.seed = *base.seed + static_cast<std::uint64_t>(i);
    all.push_back(std::move(o));
  }
  return BootMany(all);
}

TestGuest::~TestGuest() { (void)Shutdown(); }

Result<std::uint64_t> TestGuest::LastCounter() const {
  ESCDR_ASSIGN_OR_RETURN(std::optional<std::uint64_t> c, ReadLastCounter(serial_log_path()));
  return c.value_or(0);
}

Result<std::uint64_t> TestGuest::WaitForCounter(std::uint64_t n, std::chrono::milliseconds timeout) {
  Deadline deadline = Deadline::After(timeout);
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(std::uint64_t counter, LastCounter());
    if (counter >= n) return counter;
    ESCDR_RETURN_IF_ERROR(CheckAlive());
    if (deadline.Expired()) {
      return Err(Status::Timeout(fmt::format(
          "test guest {} did not reach escdr-counter {} within {} ms (last counter {}); {}",
          spec().name, n, timeout.count(), counter, DiagnosticTail())));
    }
    std::this_thread::sleep_for(std::min(kPollInterval, deadline.Remaining()));
  }
}

Status TestGuest::Pause() { return Stop(qmp()); }
Status TestGuest::Resume() { return Cont(qmp()); }

Result<MigrationInfo> TestGuest::SaveStream(const std::string& path,
                                            std::chrono::milliseconds timeout) {
  ESCDR_RETURN_IF_ERROR(Migrate(qmp(), "exec:cat > " + ShellQuote(path)));
  auto info = WaitForMigration(qmp(), timeout);
  if (!info.has_value()) {
    return Err(info.error().WithContext(
        fmt::format("cannot save the stream of test guest {} to {}", spec().name, path)));
  }
  return info;
}

Status TestGuest::Shutdown() {
  Status result;
  if (process_) result = process_->Stop();
  Status s = dir_.Remove();
  return result.ok() ? s : result;
}

std::string TestGuest::DiagnosticTail() const {
  return fmt::format("serial log {}:\n{}QEMU log: {}", serial_log_path(),
                     SerialLogTail(serial_log_path()), process_->QemuLogTail());
}

}  // namespace escdr::testing
