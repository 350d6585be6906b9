#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "escdr/qemu/launch_spec.h"

namespace escdr {
namespace {

Status CheckReadableFile(std::string_view field, const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::NotFound(fmt::format("launch spec {} {} does not exist", field, path));
  }
  if (!S_ISREG(st.st_mode) || ::access(path.c_str(), R_OK) != 0) {
    return Status::InvalidArgument(
        fmt::format("launch spec {} {} is not a readable file", field, path));
  }
  return Status::OK();
}

Status CheckNewFilePath(std::string_view field, const std::string& path) {
  if (path.empty()) return Status::InvalidArgument(fmt::format("launch spec {} is empty", field));
  if (path.find(',') != std::string::npos) {
    return Status::InvalidArgument(
        fmt::format("launch spec {} {} contains ',', which QEMU options cannot take", field, path));
  }
  std::size_t slash = path.rfind('/');
  std::string dir(slash == std::string::npos ? std::string_view(".")
                  : slash == 0               ? std::string_view("/")
                                             : std::string_view(path).substr(0, slash));
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::NotFound(
        fmt::format("launch spec {} {}: directory {} does not exist", field, path, dir));
  }
  return Status::OK();
}

bool KnownIncoming(const std::string& in) {
  if (in.empty() || in == "defer") return true;
  for (const char* scheme : {"unix:", "tcp:", "exec:", "fd:"}) {
    if (in.starts_with(scheme) && in.size() > std::string_view(scheme).size()) return true;
  }
  return false;
}

}  // namespace

Status ValidateLaunchSpec(const LaunchSpec& s) {
  if (s.name.empty()) return Status::InvalidArgument("launch spec has no name");
  if (s.name.find(',') != std::string::npos) {
    return Status::InvalidArgument(fmt::format("launch spec name '{}' contains ','", s.name));
  }
  if (s.memory_mib < 16 || s.memory_mib > 1048576) {
    return Status::InvalidArgument(fmt::format(
        "launch spec {}: memory_mib {} is outside [16, 1048576]", s.name, s.memory_mib));
  }
  if (s.vcpus < 1 || s.vcpus > 256) {
    return Status::InvalidArgument(
        fmt::format("launch spec {}: vcpus {} is outside [1, 256]", s.name, s.vcpus));
  }
  if (s.machine.empty() || s.machine.find(',') != std::string::npos) {
    return Status::InvalidArgument(
        fmt::format("launch spec {}: machine '{}' is not a machine type", s.name, s.machine));
  }
  if (s.kernel.empty()) return Status::InvalidArgument(fmt::format("launch spec {} has no kernel", s.name));
  ESCDR_RETURN_IF_ERROR(CheckReadableFile("kernel", s.kernel));
  if (!s.initrd.empty()) ESCDR_RETURN_IF_ERROR(CheckReadableFile("initrd", s.initrd));
  ESCDR_RETURN_IF_ERROR(CheckNewFilePath("ram_path", s.ram_path));
  ESCDR_RETURN_IF_ERROR(CheckNewFilePath("qmp_socket", s.qmp_socket));
  ESCDR_RETURN_IF_ERROR(CheckNewFilePath("serial_log", s.serial_log));
  if (s.qmp_socket.size() >= sizeof(sockaddr_un::sun_path)) {
    return Status::InvalidArgument(fmt::format(
        "launch spec {}: qmp_socket {} is {} bytes, longer than a unix socket path may be ({})",
        s.name, s.qmp_socket, s.qmp_socket.size(), sizeof(sockaddr_un::sun_path) - 1));
  }
  if (!KnownIncoming(s.incoming)) {
    return Status::InvalidArgument(fmt::format(
        "launch spec {}: incoming '{}' is not \"\", \"defer\" or a unix:/tcp:/exec:/fd: URI",
        s.name, s.incoming));
  }
  for (const std::string& e : s.qemu_env) {
    if (e.find('=') == std::string::npos || e.front() == '=') {
      return Status::InvalidArgument(
          fmt::format("launch spec {}: qemu_env entry '{}' is not NAME=VALUE", s.name, e));
    }
  }
  if (s.qemu_binary.empty() && s.qemu_command.empty()) {
    return Status::InvalidArgument(fmt::format("launch spec {} has no qemu_binary", s.name));
  }
  return Status::OK();
}

std::uint64_t GuestRamBytes(const LaunchSpec& spec) {
  return (spec.memory_mib << 20) + kTcgRamPadBytes;
}

std::vector<std::string> BuildQemuArgv(const LaunchSpec& s) {
  const std::uint64_t ram_kib = GuestRamBytes(s) / 1024;
  std::vector<std::string> argv = s.qemu_command;
  if (argv.empty()) argv.push_back(s.qemu_binary);
  argv.insert(argv.end(), {
      "-name", s.name,
      "-accel", "tcg",
      "-machine", fmt::format("{},memory-backend=mem0", s.machine),
      "-m", fmt::format("{}K", ram_kib),
      "-smp", std::to_string(s.vcpus),
      "-object", fmt::format("memory-backend-file,id=mem0,size={}K,mem-path={},share=on",
                             ram_kib, s.ram_path),
      "-nodefaults", "-nographic", "-no-user-config",
      "-nic", "none",
      "-monitor", "none",
      "-serial", "file:" + s.serial_log,
      "-qmp", fmt::format("unix:{},server=on,wait=off", s.qmp_socket),
      "-kernel", s.kernel,
  });
  if (!s.initrd.empty()) argv.insert(argv.end(), {"-initrd", s.initrd});
  if (!s.append.empty()) argv.insert(argv.end(), {"-append", s.append});
  if (s.start_paused) argv.push_back("-S");
  if (!s.incoming.empty()) argv.insert(argv.end(), {"-incoming", s.incoming});
  argv.insert(argv.end(), s.extra_args.begin(), s.extra_args.end());
  return argv;
}

std::vector<std::pair<std::string, std::string>> QemuEnvPairs(const LaunchSpec& s) {
  std::vector<std::pair<std::string, std::string>> env;
  for (const std::string& e : s.qemu_env) {
    const std::size_t eq = e.find('=');
    if (eq == std::string::npos) continue;  // refused by ValidateLaunchSpec
    env.emplace_back(e.substr(0, eq), e.substr(eq + 1));
  }
  return env;
}

nlohmann::json LaunchSpecToJson(const LaunchSpec& s) {
  return {
      {"name", s.name},           {"memory_mib", s.memory_mib}, {"vcpus", s.vcpus},
      {"machine", s.machine},     {"kernel", s.kernel},         {"initrd", s.initrd},
      {"append", s.append},       {"ram_path", s.ram_path},     {"qmp_socket", s.qmp_socket},
      {"serial_log", s.serial_log}, {"incoming", s.incoming},   {"start_paused", s.start_paused},
      {"extra_args", s.extra_args}, {"qemu_binary", s.qemu_binary},
      {"qemu_version", s.qemu_version}, {"qemu_command", s.qemu_command},
      {"qemu_env", s.qemu_env},
  };
}

Result<LaunchSpec> LaunchSpecFromJson(const nlohmann::json& j) {
  if (!j.is_object()) {
    return Err(Status::InvalidArgument(
        fmt::format("launch spec JSON is a {}, not an object", j.type_name())));
  }
  LaunchSpec s;
  const char* key = "";
  // get<T>() throws type_error on a wrong type; the key being read names it.
  try {
    auto read = [&](const char* k, auto& field) {
      key = k;
      if (auto it = j.find(k); it != j.end()) it->get_to(field);
    };
    auto read_number = [&](const char* k, auto& field) {
      key = k;
      auto it = j.find(k);
      if (it == j.end()) return;
      if (!it->is_number_unsigned()) {
        throw nlohmann::json::type_error::create(302, "must be a non-negative integer", &*it);
      }
      it->get_to(field);
    };
    read("name", s.name);
    read_number("memory_mib", s.memory_mib);
    read_number("vcpus", s.vcpus);
    read("machine", s.machine);
    read("kernel", s.kernel);
    read("initrd", s.initrd);
    read("append", s.append);
    read("ram_path", s.ram_path);
    read("qmp_socket", s.qmp_socket);
    read("serial_log", s.serial_log);
    read("incoming", s.incoming);
    read("start_paused", s.start_paused);
    read("extra_args", s.extra_args);
    read("qemu_binary", s.qemu_binary);
    read("qemu_version", s.qemu_version);
    read("qemu_command", s.qemu_command);
    read("qemu_env", s.qemu_env);
  } catch (const nlohmann::json::exception& e) {
    return Err(Status::InvalidArgument(
        fmt::format("launch spec JSON key {} has the wrong type: {}", key, e.what())));
  }
  return s;
}

}  // namespace escdr
