// VmKind: the (OS, OS version, hypervisor, hypervisor version) of a VM.
//
// This is the paper's two-dimensional key (§3.2): two VMs of the same kind
// share the same static memory content, so one can serve as the other's
// donor. Fields are compared as exact strings; "debian"/"12" and
// "Debian"/"12.0" are different kinds.
#ifndef ESCDR_BASE_VM_KIND_H_
#define ESCDR_BASE_VM_KIND_H_

#include <compare>
#include <string>

#include "escdr/base/status.h"

namespace escdr {

struct VmKind {
  std::string os;                  // e.g. "debian"
  std::string os_version;          // e.g. "12"
  std::string hypervisor;          // e.g. "qemu"
  std::string hypervisor_version;  // e.g. "7.2"

  friend auto operator<=>(const VmKind&, const VmKind&) = default;

  // "debian 12 / qemu 7.2"
  std::string ToString() const;

  // OK if all four fields are non-empty, printable and at most 64 bytes;
  // InvalidArgument naming the bad field otherwise.
  Status Validate() const;
};

}  // namespace escdr

#endif  // ESCDR_BASE_VM_KIND_H_
