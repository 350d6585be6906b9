// LaunchSpec: everything needed to start one QEMU guest the escdr way.
//
// A LaunchSpec is a plain value: it is stored in the inventory (as JSON, see
// LaunchSpecToJson) so that a migration destination can start the same
// virtual hardware with `-incoming defer`. BuildQemuArgv() turns it into the
// one QEMU command line escdr uses: TCG (nested KVM does not work here),
// -nodefaults -nographic -no-user-config, no network, the serial console to
// a file, QMP on a unix socket, and guest RAM in a shared file
// (memory-backend-file id=mem0, share=on) so other processes can read a
// donor's memory.
//
// Thread safety: plain values and pure functions (ValidateLaunchSpec reads
// the file system).
#ifndef ESCDR_QEMU_LAUNCH_SPEC_H_
#define ESCDR_QEMU_LAUNCH_SPEC_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "escdr/base/status.h"

namespace escdr {

struct LaunchSpec {
  std::string name;                // VM name: QEMU -name and error messages
  std::uint64_t memory_mib = 256;  // guest RAM, MiB (the RAM file: GuestRamBytes())
  std::uint32_t vcpus = 1;
  std::string machine = "pc";      // -machine type; part of the migration ABI
  std::string kernel;              // -kernel: a bzImage path (required)
  std::string initrd;              // -initrd path, or empty
  std::string append;              // kernel command line, e.g. "console=ttyS0"
  std::string ram_path;            // memory-backend-file mem-path (required)
  std::string qmp_socket;          // QMP unix socket path (required, < 108 bytes)
  std::string serial_log;          // file receiving the serial console (required)
  // "" for a normal start; "defer" to wait for migrate-incoming; or a URI
  // ("unix:/path", "tcp:host:port", "exec:cmd", "fd:N") to listen at once.
  std::string incoming;
  bool start_paused = false;       // -S: vCPUs stopped until `cont`
  std::vector<std::string> extra_args;           // appended verbatim
  std::string qemu_binary = "qemu-system-x86_64";  // path or name in $PATH
  // The QEMU series the VM runs on ("7.2", "10.0"); "" = whichever QEMU
  // starts it. Agents pick their QemuInstall (qemu_install.h) by it.
  std::string qemu_version;
  // From that QemuInstall: the argv before QEMU's own options (empty means
  // {qemu_binary}) and extra environment, "NAME=VALUE".
  std::vector<std::string> qemu_command;
  std::vector<std::string> qemu_env;

  bool operator==(const LaunchSpec&) const = default;
};

// Checks that `spec` can start: a name, memory_mib in [16, 1048576],
// vcpus in [1, 256], a non-empty machine, readable kernel (and initrd if
// set), non-empty ram_path/qmp_socket/serial_log whose directories exist,
// a QMP socket path that fits sockaddr_un, no ',' in paths (QEMU option
// syntax), and a known form of `incoming`. InvalidArgument (or NotFound for a
// missing file) naming the field and value.
Status ValidateLaunchSpec(const LaunchSpec& spec);

// QEMU 7.2 under TCG loses guest writes during a migration when a RAM
// block's length is a multiple of 64 pages: its fast dirty-bitmap sync clears
// dirty bits without resetting the TCG TLB, so later writes through cached
// TLB entries are never marked dirty (fixed upstream for QEMU 9.0, "physmem:
// Fix migration dirty bitmap coherency with TCG memory access"). Giving the
// guest kTcgRamPadBytes more than memory_mib MiB makes QEMU take its slower
// sync, which resets the TLB. docs/reliability.md §3.
inline constexpr std::uint64_t kTcgRamPadBytes = 8192;

// The bytes of guest RAM (and of the RAM file) QEMU gets for `spec`:
// memory_mib MiB plus kTcgRamPadBytes.
std::uint64_t GuestRamBytes(const LaunchSpec& spec);

// The QEMU argv: spec.qemu_command (or {spec.qemu_binary} if that is
// empty), then QEMU's options. Does not validate.
std::vector<std::string> BuildQemuArgv(const LaunchSpec& spec);

// spec.qemu_env as (NAME, VALUE) pairs for SubprocessOptions::env.
std::vector<std::pair<std::string, std::string>> QemuEnvPairs(const LaunchSpec& spec);

// JSON round trip. Keys are the field names above; ToJson writes all of them.
// FromJson takes missing keys from a default LaunchSpec, ignores unknown keys
// (newer writers), and returns InvalidArgument naming the key on a wrong type.
nlohmann::json LaunchSpecToJson(const LaunchSpec& spec);
Result<LaunchSpec> LaunchSpecFromJson(const nlohmann::json& json);

}  // namespace escdr

#endif  // ESCDR_QEMU_LAUNCH_SPEC_H_
