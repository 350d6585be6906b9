// The hardware options of `escdr vm create`: disks, the NIC, port forwards,
// firmware. Each parser turns one flag's text into the LaunchSpec part it
// describes (escdr/qemu/launch_spec.h); errors are InvalidArgument naming the
// flag and the text. The Create* functions make the per-VM files a cloud
// keeps beside its base images: a qcow2 overlay and a UEFI variable store.
#ifndef ESCDR_CLI_VM_HARDWARE_H_
#define ESCDR_CLI_VM_HARDWARE_H_

#include <string>
#include <string_view>

#include "escdr/base/status.h"
#include "escdr/qemu/launch_spec.h"

namespace escdr::cli {

// Where overlays and variable stores go unless --disk-dir says otherwise.
inline constexpr std::string_view kDefaultDiskDir = "/var/lib/escdr/disks";
// Debian's OVMF (package ovmf).
inline constexpr std::string_view kOvmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd";
inline constexpr std::string_view kOvmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd";

// --disk PATH[,format=raw|qcow2][,bus=virtio][,readonly=on|off]. The path is
// made absolute; without format=, a name ending in .qcow2 is qcow2, else raw.
Result<DiskSpec> ParseDiskOption(std::string_view text);

// --nic user | tap:IFNAME | none. "none" gives no NicSpec (has_value false).
Result<std::optional<NicSpec>> ParseNicOption(std::string_view text);

// --forward GUEST_PORT[:HOST_PORT]; no host port (or 0) = any free port.
Result<PortForward> ParseForward(std::string_view text);

// A qcow2 overlay `dir`/`vm`.qcow2 backed by `base` (raw or qcow2, as its
// name says), made with qemu-img. AlreadyExists if the overlay exists: an
// overlay is one VM's disk and is never reused silently.
Result<DiskSpec> CreateOverlay(const std::string& base, const std::string& dir,
                               const std::string& vm);

// A fresh UEFI variable store `dir`/`vm`.vars.fd, copied from `templ`.
Result<std::string> CreateUefiVars(const std::string& templ, const std::string& dir,
                                   const std::string& vm);

}  // namespace escdr::cli

#endif  // ESCDR_CLI_VM_HARDWARE_H_
