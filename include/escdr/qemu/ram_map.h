// Where a running QEMU keeps a guest's RAM in its own address space, so that
// another process (an escdr agent, as root or with CAP_SYS_PTRACE) can read
// the pages with process_vm_readv: for anonymous, memfd and file-backed guest
// memory alike, and for QEMUs that escdr did not start (libvirt's).
//
// QEMU says it through its human monitor: `gpa2hva ADDR` names the RAM block
// that holds guest-physical ADDR and the host-virtual address of ADDR, and
// `info ramblock` lists each block's used length. A block is one contiguous
// host mapping, so the main RAM block (the one at guest-physical 0) is
// [gpa2hva(0), gpa2hva(0) + used length). The output formats of QEMU 7.2 and
// 10.0 are parsed here and nowhere else (docs/qemu-versions.md).
//
// Thread safety: free functions; an HmpRunner is called from the caller's
// thread only.
#ifndef ESCDR_QEMU_RAM_MAP_H_
#define ESCDR_QEMU_RAM_MAP_H_

#include <cstdint>
#include <functional>
#include <string>

#include "escdr/base/status.h"

namespace escdr {

class QmpClient;

// One RAM block of a running QEMU as mapped in its address space.
struct RamMapping {
  std::string block;               // QEMU's RAMBlock idstr: "pc.ram", "mem0", ...
  std::uint64_t host_address = 0;  // where its first byte is in QEMU's memory
  std::uint64_t length = 0;        // used length in bytes, a multiple of 4096

  friend bool operator==(const RamMapping&, const RamMapping&) = default;
};

// Runs one human-monitor command in a QEMU and returns what it printed.
using HmpRunner = std::function<Result<std::string>(const std::string& command)>;

// An HmpRunner over a QMP connection (QMP's human-monitor-command).
HmpRunner HmpOverQmp(QmpClient& qmp);

// The guest's main RAM block: the block holding guest-physical 0, with its
// host address (gpa2hva 0) and used length (info ramblock). ProtocolError
// naming the command and quoting its output when QEMU's answer cannot be
// parsed, when the table lacks the block gpa2hva named, or when the table's
// own HVA column (QEMU 10.0) puts the block elsewhere than gpa2hva 0;
// NotFound when no block holds guest-physical 0. The runner's errors pass
// through.
Result<RamMapping> QueryMainRam(const HmpRunner& hmp);

// The parsers behind QueryMainRam, for tests: the block name and host
// address in a `gpa2hva` answer (length left 0; NotFound for "No memory is
// mapped at address ..."), and the used length of `block` in an
// `info ramblock` table (NotFound, listing the blocks, if it has no such
// row). Other unexpected text is a ProtocolError quoting it.
Result<RamMapping> ParseGpa2Hva(const std::string& output);
Result<std::uint64_t> ParseRamBlockUsedLength(const std::string& output, const std::string& block);

}  // namespace escdr

#endif  // ESCDR_QEMU_RAM_MAP_H_
