// QemuInstall: one QEMU that this host can run, and what it can run.
//
// A host runs guests of more than one QEMU version while a cloud upgrades
// (docs/qemu-versions.md): its own QEMU (Debian 12's 7.2, `qemu-system-x86_64`
// in $PATH) and others unpacked beside it, such as Debian 13's 10.0 in a tree
// made by tools/install-qemu.sh. Such a tree is run with its own loader and
// libraries, its firmware directories first on QEMU's search path (-L) and
// its module directory, so nothing of the host's QEMU leaks into it and the
// paths escdr gives QEMU (RAM files, sockets, kernels) need no bind mounts.
//
// ProbeQemuInstall() asks the binary itself: its version (`--version`) and
// its machine types (`-machine help`), so a version is never typed by an
// operator. What differs between QEMU versions in how escdr *runs* QEMU lives
// here; what differs in the migration stream lives in the stream parser.
//
// Thread safety: plain values; ProbeQemuInstall runs two short processes.
#ifndef ESCDR_QEMU_QEMU_INSTALL_H_
#define ESCDR_QEMU_QEMU_INSTALL_H_

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "escdr/base/qemu_version.h"  // QemuSeriesOf, CompareQemuVersions
#include "escdr/base/status.h"
#include "escdr/qemu/launch_spec.h"

namespace escdr {

struct QemuInstall {
  std::string path;     // as configured: a program (path or $PATH name) or a tree root
  std::string version;  // "10.0.13", as the binary reports it
  // The argv that runs qemu-system-x86_64, before QEMU's own options (for a
  // tree: its loader, --library-path, the binary, then -L for its firmware).
  std::vector<std::string> command;
  std::vector<std::pair<std::string, std::string>> env;  // NAME, VALUE
  std::vector<std::string> machines;                     // canonical names, sorted
  std::map<std::string, std::string> aliases;            // "pc" -> "pc-i440fx-10.0"

  // "10.0" for version "10.0.13".
  std::string Series() const;
  // The canonical machine type for `machine` (an alias such as "pc", or a
  // canonical name this QEMU has); NotFound naming the QEMU if it has neither.
  Result<std::string> CanonicalMachine(std::string_view machine) const;
};

// Probes `path`: a directory is a tree root (its usr/bin/qemu-system-x86_64
// run by its lib64 loader), anything else a program. NotFound if neither
// exists; Internal with QEMU's output if it does not report a version.
Result<QemuInstall> ProbeQemuInstall(const std::string& path);

// The install of `series` ("10.0") among `installs`, or NotFound naming the
// series and what `installs` has ("... has no QEMU 10.0 (it runs 7.2.19)").
Result<const QemuInstall*> FindQemuSeries(const std::vector<QemuInstall>& installs,
                                          std::string_view series);

// Makes `spec` run on `install`: sets its qemu_command, qemu_env and
// qemu_version, and replaces an alias machine type ("pc") by the canonical
// name it stands for in that QEMU. NotFound if `install` has no such machine.
Status UseQemuInstall(const QemuInstall& install, LaunchSpec* spec);

// True if `machine` is an alias (such as "pc" or "q35") in `install`: its
// meaning changes with the QEMU version.
bool IsMachineAlias(const QemuInstall& install, std::string_view machine);

// Where tools/install-qemu.sh puts its trees: <kQemuTreeRoot>/qemu-SERIES.
inline constexpr const char* kQemuTreeRoot = "/var/lib/escdr";

// What an agent runs when told nothing: the host's qemu-system-x86_64, then
// every tree <kQemuTreeRoot>/qemu-* that holds a qemu-system-x86_64, by name.
std::vector<std::string> DefaultQemuPaths();

// Parsers of QEMU's own output, for tests.
// "QEMU emulator version 10.0.13 (Debian ...)" -> "10.0.13".
Result<std::string> ParseQemuVersionOutput(std::string_view output);
// `-machine help` -> canonical names and aliases.
void ParseQemuMachineHelp(std::string_view output, std::vector<std::string>* machines,
                          std::map<std::string, std::string>* aliases);

}  // namespace escdr

#endif  // ESCDR_QEMU_QEMU_INSTALL_H_
