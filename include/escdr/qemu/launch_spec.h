// LaunchSpec: everything needed to start one QEMU guest the escdr way.
//
// A LaunchSpec is a plain value: it is stored in the inventory (as JSON, see
// LaunchSpecToJson) so that a migration destination can start the same
// virtual hardware with `-incoming defer`. BuildQemuArgv() turns it into the
// one QEMU command line escdr uses: TCG (nested KVM does not work here),
// -nodefaults -nographic -no-user-config, the serial console to a file, QMP
// on a unix socket, and guest RAM in a shared file (memory-backend-file
// id=mem0, share=on) so other processes can read a donor's memory.
//
// The hardware a real VM has is optional (docs/real-vms.md): virtio disks on
// storage both hosts reach (the destination opens the same paths; QEMU's
// image locking and the switchover's flush keep them consistent), one
// virtio-net NIC (user-mode networking with forwarded TCP ports, or a tap),
// SeaBIOS or UEFI (OVMF) firmware, boot from the kernel or from the first
// disk, and a root console on a second serial port (a unix socket).
//
// Thread safety: plain values and pure functions (ValidateLaunchSpec reads
// the file system).
#ifndef ESCDR_QEMU_LAUNCH_SPEC_H_
#define ESCDR_QEMU_LAUNCH_SPEC_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "escdr/base/status.h"

namespace escdr {

// A virtio disk. The image must be reachable under the same path on every
// host the VM may run on (shared storage).
struct DiskSpec {
  std::string path;
  std::string format = "raw";  // "raw" or "qcow2"
  bool read_only = false;

  bool operator==(const DiskSpec&) const = default;
};

// A TCP port of the guest reachable from the host (user-mode networking).
struct PortForward {
  std::uint16_t guest_port = 0;
  // The host port on 127.0.0.1. 0 in the inventory means "any free port":
  // each agent picks one when it starts the VM (ResolveHostPorts) and reports
  // it; a fixed port must be free on every host the VM may run on.
  std::uint16_t host_port = 0;

  bool operator==(const PortForward&) const = default;
};

// One virtio-net NIC.
struct NicSpec {
  std::string mode = "user";  // "user" (QEMU's user-mode network) or "tap"
  std::string tap;            // the host's tap interface (mode "tap")
  std::string mac;            // fixed for the VM's life, so it survives migration
  std::vector<PortForward> forwards;  // mode "user" only

  bool operator==(const NicSpec&) const = default;
};

struct LaunchSpec {
  std::string name;                // VM name: QEMU -name and error messages
  std::uint64_t memory_mib = 256;  // guest RAM, MiB (the RAM file: GuestRamBytes())
  std::uint32_t vcpus = 1;
  std::string machine = "pc";      // -machine type; part of the migration ABI
  std::string kernel;              // -kernel: a bzImage path; "" = boot the first disk
  std::string initrd;              // -initrd path, or empty
  std::string append;              // kernel command line, e.g. "console=ttyS0"
  std::string ram_path;            // memory-backend-file mem-path (required)
  std::string qmp_socket;          // QMP unix socket path (required, < 108 bytes)
  std::string serial_log;          // file receiving the serial console (required)
  std::vector<DiskSpec> disks;     // virtio-blk, in order (the first is /dev/vda)
  std::vector<NicSpec> nics;       // empty: no network (-nic none)
  // "bios" (SeaBIOS) or "uefi": OVMF's code (read-only) and this VM's own
  // variable store (writable, on shared storage like the disks).
  std::string firmware = "bios";
  std::string firmware_code;
  std::string firmware_vars;
  // A root shell on the guest's second serial port (ttyS1), as a unix socket
  // QEMU listens on. `console` asks for one; each agent sets console_socket.
  bool console = false;
  std::string console_socket;
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
// vcpus in [1, 256], a non-empty machine, a readable kernel (and initrd if
// set) or a disk to boot from, readable disk images of a known format,
// NICs of a known mode (forwards only in user mode, no guest port twice),
// firmware files for "uefi", non-empty ram_path/qmp_socket/serial_log whose directories exist,
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

// Gives every forward whose host_port is 0 a port that is free on this host
// now (bound on 127.0.0.1 and released: QEMU binds it moments later).
Status ResolveHostPorts(LaunchSpec* spec);

// The forwarded ports of every NIC of `spec`: guest port -> host port (0
// until ResolveHostPorts gave it one).
std::map<std::uint16_t, std::uint16_t> ForwardedPorts(const LaunchSpec& spec);

// A MAC address for a NIC of VM `name`: 52:54:00 (QEMU's prefix) and three
// bytes of a hash of the name and `index`, so it is stable and distinct.
std::string MacForVm(const std::string& name, std::size_t index);

// The QEMU argv: spec.qemu_command (or {spec.qemu_binary} if that is
// empty), then QEMU's options. Does not validate.
std::vector<std::string> BuildQemuArgv(const LaunchSpec& spec);

// spec.qemu_env as (NAME, VALUE) pairs for SubprocessOptions::env.
std::vector<std::pair<std::string, std::string>> QemuEnvPairs(const LaunchSpec& spec);

// JSON for the parts; absent keys keep their defaults.
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(DiskSpec, path, format, read_only)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(PortForward, guest_port, host_port)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(NicSpec, mode, tap, mac, forwards)

// JSON round trip. Keys are the field names above; ToJson writes all of them.
// FromJson takes missing keys from a default LaunchSpec, ignores unknown keys
// (newer writers), and returns InvalidArgument naming the key on a wrong type.
nlohmann::json LaunchSpecToJson(const LaunchSpec& spec);
Result<LaunchSpec> LaunchSpecFromJson(const nlohmann::json& json);

}  // namespace escdr

#endif  // ESCDR_QEMU_LAUNCH_SPEC_H_
