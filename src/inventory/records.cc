#include "escdr/inventory/records.h"

#include <fmt/format.h>

#include <charconv>

#include "escdr/base/qemu_version.h"

namespace escdr {
namespace {

// Large enough for any real machine, small enough that sums never overflow
// the 63 bits both databases store.
constexpr std::uint64_t kMaxMemoryMib = std::uint64_t{1} << 40;  // 1 EiB
constexpr std::uint32_t kMaxVcpus = 1u << 20;

Status ValidateName(std::string_view what, std::string_view name) {
  if (name.empty()) return Status::InvalidArgument(fmt::format("{} name is empty", what));
  if (name.size() > 253) {
    return Status::InvalidArgument(fmt::format("{} name '{}...' is longer than 253 bytes", what,
                                               name.substr(0, 32)));
  }
  if (name.front() == '-') {
    return Status::InvalidArgument(fmt::format("{} name '{}' starts with '-'", what, name));
  }
  for (unsigned char c : name) {
    if (c <= 0x20 || c >= 0x7f) {
      return Status::InvalidArgument(
          fmt::format("{} name '{}' contains a space, control or non-ASCII character", what, name));
    }
  }
  return Status::OK();
}

Status ValidateLabel(std::string_view what, std::string_view value) {
  if (value.size() > 64) {
    return Status::InvalidArgument(fmt::format("{} '{}' is longer than 64 bytes", what, value));
  }
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument(fmt::format("{} contains a control character", what));
    }
  }
  return Status::OK();
}

Status ValidateSizes(std::string_view what, std::string_view name, std::uint64_t memory_mib,
                     std::uint32_t vcpus) {
  if (memory_mib == 0 || memory_mib > kMaxMemoryMib) {
    return Status::InvalidArgument(fmt::format("{} {}: memory must be between 1 and {} MiB, not {}",
                                               what, name, kMaxMemoryMib, memory_mib));
  }
  if (vcpus == 0 || vcpus > kMaxVcpus) {
    return Status::InvalidArgument(fmt::format("{} {}: vCPUs must be between 1 and {}, not {}",
                                               what, name, kMaxVcpus, vcpus));
  }
  return Status::OK();
}

Status ValidateAgentAddress(std::string_view host, std::string_view address) {
  if (address.empty()) return Status::OK();
  const auto colon = address.rfind(':');
  auto bad = [&] {
    return Status::InvalidArgument(fmt::format(
        "host {}: agent address '{}' is not host:port with a port from 1 to 65535", host, address));
  };
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == address.size()) return bad();
  unsigned port = 0;
  const char* first = address.data() + colon + 1;
  const char* last = address.data() + address.size();
  auto [ptr, ec] = std::from_chars(first, last, port);
  if (ec != std::errc() || ptr != last || port == 0 || port > 65535) return bad();
  for (unsigned char c : address.substr(0, colon)) {
    if (c <= 0x20 || c >= 0x7f) return bad();
  }
  return Status::OK();
}

Status ValidateQemuVersions(std::string_view host, const std::vector<std::string>& versions) {
  if (versions.size() > 16) {
    return Status::InvalidArgument(fmt::format(
        "host {}: {} QEMU versions given, at most 16 are allowed", host, versions.size()));
  }
  for (const std::string& v : versions) {
    if (!IsQemuVersion(v)) {
      return Status::InvalidArgument(fmt::format(
          "host {}: QEMU version '{}' is not digits and dots like 7.2.19", host,
          v.substr(0, 32)));
    }
  }
  return Status::OK();
}

}  // namespace

const char* HostStateName(HostState state) {
  switch (state) {
    case HostState::kUp:
      return "up";
    case HostState::kDraining:
      return "draining";
    case HostState::kDown:
      return "down";
  }
  return "unknown";
}

Result<HostState> ParseHostState(std::string_view name) {
  for (HostState s : {HostState::kUp, HostState::kDraining, HostState::kDown}) {
    if (name == HostStateName(s)) return s;
  }
  return Err(Status::InvalidArgument(
      fmt::format("unknown host state '{}' (expected up, draining or down)", name)));
}

const char* VmStateName(VmState state) {
  switch (state) {
    case VmState::kDefined:
      return "defined";
    case VmState::kRunning:
      return "running";
    case VmState::kMigrating:
      return "migrating";
    case VmState::kStopped:
      return "stopped";
  }
  return "unknown";
}

Result<VmState> ParseVmState(std::string_view name) {
  for (VmState s : {VmState::kDefined, VmState::kRunning, VmState::kMigrating, VmState::kStopped}) {
    if (name == VmStateName(s)) return s;
  }
  return Err(Status::InvalidArgument(fmt::format(
      "unknown VM state '{}' (expected defined, running, migrating or stopped)", name)));
}

const char* MigrationOutcomeName(MigrationOutcome outcome) {
  switch (outcome) {
    case MigrationOutcome::kInProgress:
      return "in-progress";
    case MigrationOutcome::kSucceeded:
      return "succeeded";
    case MigrationOutcome::kFailed:
      return "failed";
  }
  return "unknown";
}

Result<MigrationOutcome> ParseMigrationOutcome(std::string_view name) {
  for (MigrationOutcome o : {MigrationOutcome::kInProgress, MigrationOutcome::kSucceeded,
                             MigrationOutcome::kFailed}) {
    if (name == MigrationOutcomeName(o)) return o;
  }
  return Err(Status::InvalidArgument(fmt::format(
      "unknown migration outcome '{}' (expected in-progress, succeeded or failed)", name)));
}

Status ValidateHostSpec(const HostSpec& spec) {
  ESCDR_RETURN_IF_ERROR(ValidateName("host", spec.name));
  ESCDR_RETURN_IF_ERROR(ValidateAgentAddress(spec.name, spec.agent_address));
  ESCDR_RETURN_IF_ERROR(ValidateLabel(fmt::format("host {}: rack", spec.name), spec.rack));
  ESCDR_RETURN_IF_ERROR(ValidateLabel(fmt::format("host {}: pod", spec.name), spec.pod));
  ESCDR_RETURN_IF_ERROR(ValidateQemuVersions(spec.name, spec.qemu_versions));
  return ValidateSizes("host", spec.name, spec.memory_mib, spec.vcpus);
}

bool HostRunsQemuSeries(const Host& host, std::string_view series) {
  if (host.qemu_versions.empty()) return true;
  const std::string want = QemuSeriesOf(series);
  for (const std::string& v : host.qemu_versions) {
    if (QemuSeriesOf(v) == want) return true;
  }
  return false;
}

std::string QemuVersionsText(const std::vector<std::string>& versions) {
  if (versions.empty()) return "none reported";
  std::string out;
  for (const std::string& v : versions) out += (out.empty() ? "" : ", ") + v;
  return out;
}

std::string RunSeries(const Vm& vm) {
  return vm.qemu_version.empty() ? vm.kind.hypervisor_version : vm.qemu_version;
}

std::string RunSeries(const VmSpec& spec) {
  return spec.qemu_version.empty() ? spec.kind.hypervisor_version : spec.qemu_version;
}

Status ValidateVmSpec(const VmSpec& spec) {
  ESCDR_RETURN_IF_ERROR(ValidateName("VM", spec.name));
  if (Status s = spec.kind.Validate(); !s.ok()) return s.WithContext("VM " + spec.name);
  ESCDR_RETURN_IF_ERROR(ValidateSizes("VM", spec.name, spec.memory_mib, spec.vcpus));
  if (spec.state == VmState::kMigrating) {
    return Status::InvalidArgument(fmt::format(
        "VM {}: cannot be registered as migrating (migrations begin with BeginMigration)",
        spec.name));
  }
  if (spec.launch_spec.size() > (1u << 20)) {
    return Status::InvalidArgument(fmt::format("VM {}: launch spec is larger than 1 MiB", spec.name));
  }
  if (spec.ram_path.size() > 4096) {
    return Status::InvalidArgument(fmt::format("VM {}: RAM path is longer than 4096 bytes", spec.name));
  }
  if (!spec.qemu_version.empty() && !IsQemuSeries(spec.qemu_version)) {
    return Status::InvalidArgument(fmt::format(
        "VM {}: QEMU series '{}' is not major.minor like 7.2", spec.name,
        spec.qemu_version.substr(0, 32)));
  }
  return Status::OK();
}

}  // namespace escdr
