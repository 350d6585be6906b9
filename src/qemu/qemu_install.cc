#include "escdr/qemu/qemu_install.h"

#include <fmt/format.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <csignal>
#include <cstdlib>

#include "escdr/sys/subprocess.h"
#include "escdr/sys/unique_fd.h"

namespace escdr {

namespace {

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Runs `argv` (with `env`) to completion and returns what it printed on
// stdout and stderr together.
Result<std::string> RunForOutput(const std::vector<std::string>& argv,
                                 const std::vector<std::pair<std::string, std::string>>& env) {
  char tmpl[] = "/tmp/escdr-qemu-probe.XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return Err(Status::FromErrno("cannot create a temporary file", errno));
  ::close(fd);
  const std::string out_path = tmpl;
  SubprocessOptions o;
  o.argv = argv;
  o.env = env;
  o.stdout_path = out_path;
  o.stderr_path = out_path;
  auto p = Subprocess::Spawn(o);
  if (!p.has_value()) {
    ::unlink(out_path.c_str());
    return Err(p.error());
  }
  auto st = p->WaitFor(std::chrono::seconds(60));
  Result<std::string> text = ReadFileToString(out_path);
  ::unlink(out_path.c_str());
  if (!st.has_value()) {
    (void)p->Kill(SIGKILL);
    (void)p->Wait();
    return Err(Status::Timeout(fmt::format("{} did not answer within 60 s", argv.front())));
  }
  if (!text.has_value()) return Err(text.error());
  if (!st->success()) {
    return Err(Status::Internal(fmt::format("{} ended with {}: {}", argv.back(), st->ToString(),
                                            text->substr(0, 500))));
  }
  return text;
}

}  // namespace

std::string QemuInstall::Series() const { return QemuSeriesOf(version); }

Result<std::string> QemuInstall::CanonicalMachine(std::string_view machine) const {
  if (auto it = aliases.find(std::string(machine)); it != aliases.end()) return it->second;
  if (std::binary_search(machines.begin(), machines.end(), machine)) return std::string(machine);
  return Err(Status::NotFound(fmt::format(
      "QEMU {} ({}) has no machine type {}", version, path, machine)));
}

Result<const QemuInstall*> FindQemuSeries(const std::vector<QemuInstall>& installs,
                                          std::string_view series) {
  std::string have;
  for (const QemuInstall& q : installs) {
    if (q.Series() == series) return &q;
    have += (have.empty() ? "" : ", ") + q.version;
  }
  return Err(Status::NotFound(
      fmt::format("no QEMU {} here (it runs {})", series, have.empty() ? "none" : have)));
}

Status UseQemuInstall(const QemuInstall& install, LaunchSpec* spec) {
  ESCDR_ASSIGN_OR_RETURN(spec->machine, install.CanonicalMachine(spec->machine));
  spec->qemu_command = install.command;
  spec->qemu_env.clear();
  for (const auto& [name, value] : install.env) spec->qemu_env.push_back(name + "=" + value);
  spec->qemu_version = install.Series();
  return Status::OK();
}

bool IsMachineAlias(const QemuInstall& install, std::string_view machine) {
  return install.aliases.count(std::string(machine)) != 0;
}

Result<std::string> ParseQemuVersionOutput(std::string_view output) {
  constexpr std::string_view kPrefix = "QEMU emulator version ";
  std::size_t at = output.find(kPrefix);
  if (at == std::string_view::npos) {
    return Err(Status::Internal(fmt::format("no \"{}\" in: {}", kPrefix, output.substr(0, 200))));
  }
  at += kPrefix.size();
  std::size_t end = at;
  while (end < output.size() && (std::isdigit(static_cast<unsigned char>(output[end])) ||
                                 output[end] == '.')) {
    ++end;
  }
  std::string v(output.substr(at, end - at));
  if (v.empty() || v.find('.') == std::string::npos) {
    return Err(Status::Internal(fmt::format("no version number after \"{}\"", kPrefix)));
  }
  return v;
}

void ParseQemuMachineHelp(std::string_view output, std::vector<std::string>* machines,
                          std::map<std::string, std::string>* aliases) {
  constexpr std::string_view kAlias = "(alias of ";
  std::size_t i = 0;
  while (i < output.size()) {
    std::size_t eol = output.find('\n', i);
    if (eol == std::string_view::npos) eol = output.size();
    std::string_view line = output.substr(i, eol - i);
    i = eol + 1;
    if (line.empty() || line.front() == ' ' || line.starts_with("Supported machines")) continue;
    std::size_t sp = line.find(' ');
    std::string name(line.substr(0, sp));
    if (name.empty()) continue;
    std::size_t a = line.find(kAlias);
    if (a != std::string_view::npos) {
      std::size_t close = line.find(')', a);
      if (close != std::string_view::npos) {
        (*aliases)[name] = std::string(line.substr(a + kAlias.size(), close - a - kAlias.size()));
        continue;
      }
    }
    machines->push_back(std::move(name));
  }
  std::sort(machines->begin(), machines->end());
}

std::vector<std::string> DefaultQemuPaths() {
  std::vector<std::string> paths = {"qemu-system-x86_64"};
  std::vector<std::string> trees;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(kQemuTreeRoot, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("qemu-") && name.find(".partial") == std::string::npos &&
        IsFile(e.path().string() + "/usr/bin/qemu-system-x86_64")) {
      trees.push_back(e.path().string());
    }
  }
  std::sort(trees.begin(), trees.end());
  paths.insert(paths.end(), trees.begin(), trees.end());
  return paths;
}

Result<QemuInstall> ProbeQemuInstall(const std::string& path) {
  QemuInstall q;
  q.path = path;
  if (IsDirectory(path)) {
    const std::string loader = path + "/lib64/ld-linux-x86-64.so.2";
    const std::string binary = path + "/usr/bin/qemu-system-x86_64";
    for (const std::string* f : {&loader, &binary}) {
      if (!IsFile(*f)) {
        return Err(Status::NotFound(fmt::format(
            "{} is not a QEMU tree: {} is missing (tools/install-qemu.sh makes one)", path, *f)));
      }
    }
    q.command = {loader, "--library-path",
                 path + "/lib/x86_64-linux-gnu:" + path + "/usr/lib/x86_64-linux-gnu", binary};
    // Debian's QEMU looks for firmware in these, in this order; -L puts the
    // tree's copies before the host's.
    for (const char* d : {"/usr/share/qemu", "/usr/share/seabios", "/usr/lib/ipxe/qemu"}) {
      if (IsDirectory(path + d)) q.command.insert(q.command.end(), {"-L", path + d});
    }
    q.env.emplace_back("QEMU_MODULE_DIR", path + "/usr/lib/x86_64-linux-gnu/qemu");
  } else {
    q.command = {path};
  }
  // `--version` must come alone: -L before it is fine for QEMU, which reads
  // its options in order and prints the version at once.
  std::vector<std::string> argv = q.command;
  argv.push_back("--version");
  auto out = RunForOutput(argv, q.env);
  if (!out.has_value()) {
    return Err(out.error().WithContext(fmt::format("cannot probe QEMU {}", path)));
  }
  auto v = ParseQemuVersionOutput(*out);
  if (!v.has_value()) return Err(v.error().WithContext(fmt::format("QEMU {}", path)));
  q.version = std::move(*v);
  argv = q.command;
  argv.insert(argv.end(), {"-machine", "help"});
  out = RunForOutput(argv, q.env);
  if (!out.has_value()) {
    return Err(out.error().WithContext(fmt::format("cannot list the machine types of {}", path)));
  }
  ParseQemuMachineHelp(*out, &q.machines, &q.aliases);
  if (q.machines.empty()) {
    return Err(Status::Internal(fmt::format("QEMU {} listed no machine types", path)));
  }
  return q;
}

}  // namespace escdr
