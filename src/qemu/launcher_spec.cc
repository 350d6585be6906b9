#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include <fmt/format.h>

#include "escdr/qemu/launch_spec.h"
#include "escdr/sys/unique_fd.h"

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

Status CheckOptionValue(const std::string& vm, std::string_view field, const std::string& v) {
  if (v.find(',') != std::string::npos) {
    return Status::InvalidArgument(fmt::format(
        "launch spec {}: {} '{}' contains ',', which QEMU options cannot take", vm, field, v));
  }
  return Status::OK();
}

Status ValidateHardware(const LaunchSpec& s) {
  for (const DiskSpec& d : s.disks) {
    ESCDR_RETURN_IF_ERROR(CheckOptionValue(s.name, "disk", d.path));
    ESCDR_RETURN_IF_ERROR(CheckReadableFile("disk", d.path));
    if (d.format != "raw" && d.format != "qcow2") {
      return Status::InvalidArgument(fmt::format(
          "launch spec {}: disk {} has format '{}', not raw or qcow2", s.name, d.path, d.format));
    }
    if (!d.read_only && ::access(d.path.c_str(), W_OK) != 0) {
      return Status::InvalidArgument(
          fmt::format("launch spec {}: disk {} is not writable", s.name, d.path));
    }
  }
  if (s.nics.size() > 1) {
    return Status::InvalidArgument(
        fmt::format("launch spec {} has {} NICs; one is supported", s.name, s.nics.size()));
  }
  for (const NicSpec& n : s.nics) {
    if (n.mode != "user" && n.mode != "tap") {
      return Status::InvalidArgument(
          fmt::format("launch spec {}: NIC mode '{}' is not user or tap", s.name, n.mode));
    }
    if (n.mode == "tap" && (n.tap.empty() || !n.forwards.empty())) {
      return Status::InvalidArgument(fmt::format(
          "launch spec {}: a tap NIC needs an interface name and takes no port forwards", s.name));
    }
    ESCDR_RETURN_IF_ERROR(CheckOptionValue(s.name, "tap", n.tap));
    if (!n.mac.empty() && (n.mac.size() != 17 || n.mac.find_first_not_of(
                                                     "0123456789abcdefABCDEF:") != std::string::npos)) {
      return Status::InvalidArgument(
          fmt::format("launch spec {}: NIC MAC '{}' is not xx:xx:xx:xx:xx:xx", s.name, n.mac));
    }
    std::set<std::uint16_t> guest_ports;
    for (const PortForward& f : n.forwards) {
      if (f.guest_port == 0 || !guest_ports.insert(f.guest_port).second) {
        return Status::InvalidArgument(fmt::format(
            "launch spec {}: guest port {} is zero or forwarded twice", s.name, f.guest_port));
      }
    }
  }
  if (s.firmware == "uefi") {
    ESCDR_RETURN_IF_ERROR(CheckOptionValue(s.name, "firmware_code", s.firmware_code));
    ESCDR_RETURN_IF_ERROR(CheckOptionValue(s.name, "firmware_vars", s.firmware_vars));
    ESCDR_RETURN_IF_ERROR(CheckReadableFile("firmware_code", s.firmware_code));
    ESCDR_RETURN_IF_ERROR(CheckReadableFile("firmware_vars", s.firmware_vars));
  } else if (s.firmware != "bios") {
    return Status::InvalidArgument(
        fmt::format("launch spec {}: firmware '{}' is not bios or uefi", s.name, s.firmware));
  }
  if (s.console) {
    ESCDR_RETURN_IF_ERROR(CheckNewFilePath("console_socket", s.console_socket));
    if (s.console_socket.size() >= sizeof(sockaddr_un::sun_path)) {
      return Status::InvalidArgument(fmt::format(
          "launch spec {}: console_socket {} is longer than a unix socket path may be", s.name,
          s.console_socket));
    }
  }
  return Status::OK();
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
  if (s.kernel.empty() && s.disks.empty()) {
    return Status::InvalidArgument(
        fmt::format("launch spec {} has neither a kernel nor a disk to boot from", s.name));
  }
  if (!s.kernel.empty()) ESCDR_RETURN_IF_ERROR(CheckReadableFile("kernel", s.kernel));
  if (!s.initrd.empty()) ESCDR_RETURN_IF_ERROR(CheckReadableFile("initrd", s.initrd));
  ESCDR_RETURN_IF_ERROR(ValidateHardware(s));
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
      "-monitor", "none",
      "-serial", "file:" + s.serial_log,
      "-qmp", fmt::format("unix:{},server=on,wait=off", s.qmp_socket),
  });
  if (s.console) {
    argv.insert(argv.end(), {"-chardev",
                             fmt::format("socket,id=console,path={},server=on,wait=off",
                                         s.console_socket),
                             "-serial", "chardev:console"});
  }
  if (s.firmware == "uefi") {
    argv.insert(argv.end(),
                {"-drive", fmt::format("if=pflash,format=raw,unit=0,readonly=on,file={}",
                                       s.firmware_code),
                 "-drive", fmt::format("if=pflash,format=raw,unit=1,file={}", s.firmware_vars)});
  }
  for (std::size_t i = 0; i < s.disks.size(); ++i) {
    const DiskSpec& d = s.disks[i];
    argv.insert(argv.end(),
                {"-drive", fmt::format("file={},format={},if=none,id=disk{},readonly={}", d.path,
                                       d.format, i, d.read_only ? "on" : "off"),
                 "-device", fmt::format("virtio-blk-pci,drive=disk{},id=vd{}{}", i, i,
                                        i == 0 && s.kernel.empty() ? ",bootindex=0" : "")});
  }
  if (s.nics.empty()) argv.insert(argv.end(), {"-nic", "none"});
  for (std::size_t i = 0; i < s.nics.size(); ++i) {
    const NicSpec& n = s.nics[i];
    std::string netdev;
    if (n.mode == "tap") {
      netdev = fmt::format("tap,id=net{},ifname={},script=no,downscript=no", i, n.tap);
    } else {
      netdev = fmt::format("user,id=net{}", i);
      for (const PortForward& f : n.forwards) {
        netdev += fmt::format(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host_port, f.guest_port);
      }
    }
    argv.insert(argv.end(), {"-netdev", netdev, "-device",
                             fmt::format("virtio-net-pci,netdev=net{},id=nic{}{}", i, i,
                                         n.mac.empty() ? "" : ",mac=" + n.mac)});
  }
  // -initrd and -append go with -kernel only: a disk boot has its own.
  if (!s.kernel.empty()) {
    argv.insert(argv.end(), {"-kernel", s.kernel});
    if (!s.initrd.empty()) argv.insert(argv.end(), {"-initrd", s.initrd});
    if (!s.append.empty()) argv.insert(argv.end(), {"-append", s.append});
  }
  if (s.start_paused) argv.push_back("-S");
  if (!s.incoming.empty()) argv.insert(argv.end(), {"-incoming", s.incoming});
  argv.insert(argv.end(), s.extra_args.begin(), s.extra_args.end());
  return argv;
}

std::map<std::uint16_t, std::uint16_t> ForwardedPorts(const LaunchSpec& spec) {
  std::map<std::uint16_t, std::uint16_t> ports;
  for (const NicSpec& n : spec.nics) {
    for (const PortForward& f : n.forwards) ports[f.guest_port] = f.host_port;
  }
  return ports;
}

Status ResolveHostPorts(LaunchSpec* spec) {
  for (NicSpec& n : spec->nics) {
    for (PortForward& f : n.forwards) {
      if (f.host_port != 0) continue;
      UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof(addr);
      if (!fd.valid() || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
          ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        return Status::IOError(fmt::format("VM {}: no free host port for guest port {}: {}",
                                           spec->name, f.guest_port, std::strerror(errno)));
      }
      f.host_port = ntohs(addr.sin_port);
    }
  }
  return Status::OK();
}

std::string MacForVm(const std::string& name, std::size_t index) {
  std::uint32_t h = 2166136261u;  // FNV-1a: stable across builds and hosts
  for (char c : name + "#" + std::to_string(index)) {
    h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  }
  return fmt::format("52:54:00:{:02x}:{:02x}:{:02x}", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
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
      {"qemu_env", s.qemu_env},   {"disks", s.disks},           {"nics", s.nics},
      {"firmware", s.firmware},   {"firmware_code", s.firmware_code},
      {"firmware_vars", s.firmware_vars}, {"console", s.console},
      {"console_socket", s.console_socket},
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
    read("disks", s.disks);
    read("nics", s.nics);
    read("firmware", s.firmware);
    read("firmware_code", s.firmware_code);
    read("firmware_vars", s.firmware_vars);
    read("console", s.console);
    read("console_socket", s.console_socket);
  } catch (const nlohmann::json::exception& e) {
    return Err(Status::InvalidArgument(
        fmt::format("launch spec JSON key {} has the wrong type: {}", key, e.what())));
  }
  return s;
}

}  // namespace escdr
