// VmRecord: what an agent remembers about each QEMU it started, on disk.
//
// One JSON file per VM in `<state_dir>/vms/<name>.json`, written atomically
// (temporary file + rename) whenever the VM's pid or role changes. After a
// crash or restart the agent reads them back: a live "running" or
// "migrated" QEMU is re-adopted, a live "incoming" one (the destination of a
// migration that cannot have finished) is killed, and the files of dead ones
// are removed.
//
// Thread safety: functions are reentrant; callers serialize writes per VM.
#ifndef ESCDR_AGENT_VM_RECORDS_H_
#define ESCDR_AGENT_VM_RECORDS_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/qemu/launch_spec.h"

namespace escdr::agent {

enum class VmRole {
  kRunning,   // this agent's VM
  kIncoming,  // destination QEMU of a migration in progress
  kMigrated,  // a source QEMU kept (postmigrate) after a successful migration
};
const char* VmRoleName(VmRole role);  // "running", "incoming", "migrated"
Result<VmRole> ParseVmRole(std::string_view name);

struct VmRecord {
  std::string name;
  VmRole role = VmRole::kRunning;
  pid_t pid = 0;
  VmKind kind;
  LaunchSpec spec;          // with this host's paths (RAM file, QMP socket, serial log)
  std::string pidfile;
  std::string qemu_log;
  std::int64_t migration_id = 0;  // inventory migration (incoming / migrated), else 0

  bool operator==(const VmRecord&) const = default;
};

std::string VmRecordToJson(const VmRecord& record);
// InvalidArgument naming the bad field.
Result<VmRecord> VmRecordFromJson(std::string_view text);

// Writes `<dir>/<name>.json` atomically.
Status WriteVmRecord(const std::string& dir, const VmRecord& record);
// Removes it; OK if absent.
Status RemoveVmRecord(const std::string& dir, const std::string& name);

struct LoadedRecords {
  std::vector<VmRecord> records;
  std::vector<std::string> errors;  // unreadable files, one message each
};
// Reads every *.json of `dir` (which need not exist).
LoadedRecords ReadVmRecords(const std::string& dir);

// OK if `name` can name files and QEMU options: 1..64 bytes of letters,
// digits, '-', '_', '.', not starting with '.'. InvalidArgument otherwise.
Status ValidateLocalName(std::string_view what, std::string_view name);

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_VM_RECORDS_H_
