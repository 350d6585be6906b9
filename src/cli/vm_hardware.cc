#include "cli/vm_hardware.h"

#include <charconv>
#include <filesystem>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "escdr/sys/subprocess.h"

namespace escdr::cli {
namespace {

namespace fs = std::filesystem;

std::vector<std::string_view> Split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  for (;;) {
    const std::size_t at = text.find(sep);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

Result<std::uint16_t> ParsePort(std::string_view flag, std::string_view text, bool allow_zero) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > 65535 ||
      (value == 0 && !allow_zero)) {
    return Err(Status::InvalidArgument(fmt::format("{} '{}' is not a TCP port", flag, text)));
  }
  return static_cast<std::uint16_t>(value);
}

std::string FormatOfName(const std::string& path) {
  return path.ends_with(".qcow2") ? "qcow2" : "raw";
}

}  // namespace

Result<DiskSpec> ParseDiskOption(std::string_view text) {
  std::vector<std::string_view> parts = Split(text, ',');
  if (parts[0].empty()) {
    return Err(Status::InvalidArgument(fmt::format("--disk '{}' has no path", text)));
  }
  DiskSpec d;
  std::error_code ec;
  d.path = fs::absolute(fs::path(parts[0]), ec).lexically_normal().string();
  d.format = FormatOfName(d.path);
  for (std::size_t i = 1; i < parts.size(); ++i) {
    const std::size_t eq = parts[i].find('=');
    const std::string_view key = parts[i].substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? "" : parts[i].substr(eq + 1);
    if (key == "format" && (value == "raw" || value == "qcow2")) {
      d.format = value;
    } else if (key == "bus" && value == "virtio") {
      // the only bus
    } else if (key == "readonly" && (value == "on" || value == "off")) {
      d.read_only = value == "on";
    } else {
      return Err(Status::InvalidArgument(fmt::format(
          "--disk '{}': '{}' is not format=raw|qcow2, bus=virtio or readonly=on|off", text,
          parts[i])));
    }
  }
  return d;
}

Result<std::optional<NicSpec>> ParseNicOption(std::string_view text) {
  if (text == "none") return std::optional<NicSpec>();
  NicSpec n;
  if (text == "user") return std::optional<NicSpec>(n);
  if (text.starts_with("tap:") && text.size() > 4 && text.find(',') == std::string_view::npos) {
    n.mode = "tap";
    n.tap = text.substr(4);
    return std::optional<NicSpec>(n);
  }
  return Err(Status::InvalidArgument(
      fmt::format("--nic '{}' is not user, tap:IFNAME or none", text)));
}

Result<PortForward> ParseForward(std::string_view text) {
  std::vector<std::string_view> parts = Split(text, ':');
  if (parts.size() > 2) {
    return Err(Status::InvalidArgument(
        fmt::format("--forward '{}' is not GUEST_PORT[:HOST_PORT]", text)));
  }
  PortForward f;
  ESCDR_ASSIGN_OR_RETURN(f.guest_port, ParsePort("--forward guest port", parts[0], false));
  if (parts.size() == 2) {
    ESCDR_ASSIGN_OR_RETURN(f.host_port, ParsePort("--forward host port", parts[1], true));
  }
  return f;
}

Result<DiskSpec> CreateOverlay(const std::string& base, const std::string& dir,
                               const std::string& vm) {
  std::error_code ec;
  const fs::path base_path = fs::absolute(base, ec).lexically_normal();
  if (!fs::is_regular_file(base_path, ec)) {
    return Err(Status::NotFound(fmt::format("--disk-from {} is not a readable file", base)));
  }
  fs::create_directories(dir, ec);
  if (ec) {
    return Err(Status::IOError(fmt::format("cannot create disk directory {}: {}", dir,
                                           ec.message())));
  }
  DiskSpec d;
  d.path = (fs::absolute(dir, ec) / (vm + ".qcow2")).lexically_normal().string();
  d.format = "qcow2";
  if (fs::exists(d.path, ec)) {
    return Err(Status::AlreadyExists(fmt::format(
        "overlay {} exists already (another VM's disk, or one left behind): remove it or pick "
        "another name", d.path)));
  }
  ESCDR_ASSIGN_OR_RETURN(std::string qemu_img, FindProgram("qemu-img"));
  SubprocessOptions o;
  o.argv = {qemu_img, "create", "-q", "-f", "qcow2", "-b", base_path.string(), "-F",
            FormatOfName(base_path.string()), d.path};
  ESCDR_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(o));
  ESCDR_ASSIGN_OR_RETURN(ExitStatus st, p.Wait());
  if (!st.success()) {
    fs::remove(d.path, ec);
    return Err(Status::IOError(
        fmt::format("qemu-img could not create overlay {} of {}: {}", d.path, base, st.ToString())));
  }
  return d;
}

Result<std::string> CreateUefiVars(const std::string& templ, const std::string& dir,
                                   const std::string& vm) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string path = (fs::absolute(dir, ec) / (vm + ".vars.fd")).lexically_normal().string();
  if (fs::exists(path, ec)) {
    return Err(Status::AlreadyExists(fmt::format("UEFI variable store {} exists already", path)));
  }
  fs::copy_file(templ, path, ec);
  if (ec) {
    return Err(Status::IOError(fmt::format("cannot copy UEFI variables {} to {}: {}", templ, path,
                                           ec.message())));
  }
  return path;
}

}  // namespace escdr::cli
