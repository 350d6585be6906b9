#include "agent/vm_records.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "agent/json_util.h"
#include "escdr/sys/unique_fd.h"

namespace escdr::agent {

using nlohmann::json;

const char* VmRoleName(VmRole role) {
  switch (role) {
    case VmRole::kRunning: return "running";
    case VmRole::kIncoming: return "incoming";
    case VmRole::kMigrated: return "migrated";
  }
  return "?";
}

Result<VmRole> ParseVmRole(std::string_view name) {
  for (VmRole r : {VmRole::kRunning, VmRole::kIncoming, VmRole::kMigrated}) {
    if (name == VmRoleName(r)) return r;
  }
  return Err(Status::InvalidArgument(fmt::format("unknown VM role '{}'", name)));
}

Status ValidateLocalName(std::string_view what, std::string_view name) {
  bool ok = !name.empty() && name.size() <= 64 && name[0] != '.';
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      ok = false;
    }
  }
  if (ok) return Status::OK();
  return Status::InvalidArgument(fmt::format(
      "{} name '{}' cannot name local files: use 1-64 letters, digits, '-', '_' or '.'", what,
      name));
}

std::string VmRecordToJson(const VmRecord& r) {
  json j = {{"name", r.name},
            {"role", VmRoleName(r.role)},
            {"pid", r.pid},
            {"kind",
             {{"os", r.kind.os},
              {"os_version", r.kind.os_version},
              {"hypervisor", r.kind.hypervisor},
              {"hypervisor_version", r.kind.hypervisor_version}}},
            {"launch_spec", LaunchSpecToJson(r.spec)},
            {"pidfile", r.pidfile},
            {"qemu_log", r.qemu_log},
            {"migration_id", r.migration_id}};
  return j.dump(2) + "\n";
}

Result<VmRecord> VmRecordFromJson(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Err(Status::InvalidArgument("VM record is not a JSON object"));
  VmRecord r;
  ESCDR_ASSIGN_OR_RETURN(r.name, RequiredJsonString(j, "name"));
  ESCDR_ASSIGN_OR_RETURN(std::string role, RequiredJsonString(j, "role"));
  ESCDR_ASSIGN_OR_RETURN(r.role, ParseVmRole(role));
  ESCDR_ASSIGN_OR_RETURN(std::int64_t pid, JsonI64(j, "pid"));
  r.pid = static_cast<pid_t>(pid);
  if (auto k = j.find("kind"); k != j.end() && k->is_object()) {
    ESCDR_ASSIGN_OR_RETURN(r.kind.os, JsonString(*k, "os"));
    ESCDR_ASSIGN_OR_RETURN(r.kind.os_version, JsonString(*k, "os_version"));
    ESCDR_ASSIGN_OR_RETURN(r.kind.hypervisor, JsonString(*k, "hypervisor"));
    ESCDR_ASSIGN_OR_RETURN(r.kind.hypervisor_version, JsonString(*k, "hypervisor_version"));
  }
  auto spec = j.find("launch_spec");
  if (spec == j.end()) return Err(Status::InvalidArgument("VM record has no launch_spec"));
  ESCDR_ASSIGN_OR_RETURN(r.spec, LaunchSpecFromJson(*spec));
  ESCDR_ASSIGN_OR_RETURN(r.pidfile, JsonString(j, "pidfile"));
  ESCDR_ASSIGN_OR_RETURN(r.qemu_log, JsonString(j, "qemu_log"));
  ESCDR_ASSIGN_OR_RETURN(r.migration_id, JsonI64(j, "migration_id"));
  ESCDR_RETURN_IF_ERROR(ValidateLocalName("VM", r.name));
  return r;
}

Status WriteVmRecord(const std::string& dir, const VmRecord& record) {
  ESCDR_RETURN_IF_ERROR(ValidateLocalName("VM", record.name));
  const std::string path = fmt::format("{}/{}.json", dir, record.name);
  const std::string tmp = path + ".tmp";
  ESCDR_RETURN_IF_ERROR(WriteStringToFile(tmp, VmRecordToJson(record)));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = Status::FromErrno(fmt::format("cannot write VM record {}", path), errno);
    ::unlink(tmp.c_str());
    return s;
  }
  return Status::OK();
}

Status RemoveVmRecord(const std::string& dir, const std::string& name) {
  const std::string path = fmt::format("{}/{}.json", dir, name);
  if (::unlink(path.c_str()) == 0 || errno == ENOENT) return Status::OK();
  return Status::FromErrno(fmt::format("cannot remove VM record {}", path), errno);
}

LoadedRecords ReadVmRecords(const std::string& dir) {
  LoadedRecords out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno != ENOENT) out.errors.push_back(fmt::format("cannot list {}: {}", dir, std::strerror(errno)));
    return out;
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 5 && n.ends_with(".json")) names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    const std::string path = dir + "/" + n;
    auto text = ReadFileToString(path);
    if (!text.has_value()) {
      out.errors.push_back(text.error().message());
      continue;
    }
    auto rec = VmRecordFromJson(*text);
    if (!rec.has_value()) {
      out.errors.push_back(fmt::format("VM record {}: {}", path, rec.error().message()));
      continue;
    }
    out.records.push_back(std::move(*rec));
  }
  return out;
}

}  // namespace escdr::agent
