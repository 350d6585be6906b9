#include "escdr/qemu/qmp_commands.h"

#include <thread>

#include <fmt/format.h>

#include "escdr/sys/clock.h"

namespace escdr {
namespace {

template <typename T>
T Field(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number()) return T{};
  return it->get<T>();
}

Status Simple(QmpClient& qmp, std::string_view command, const nlohmann::json& args = nullptr) {
  ESCDR_ASSIGN_OR_RETURN(nlohmann::json ignored, qmp.Execute(command, args));
  (void)ignored;
  return Status::OK();
}

}  // namespace

Result<MigrationInfo> ParseMigrationInfo(const nlohmann::json& reply) {
  auto status = reply.is_object() ? reply.find("status") : reply.end();
  if (!reply.is_object() || status == reply.end() || !status->is_string()) {
    return Err(Status::ProtocolError(
        fmt::format("query-migrate reply has no status: {}", reply.dump().substr(0, 200))));
  }
  MigrationInfo info;
  info.status = status->get<std::string>();
  if (auto e = reply.find("error-desc"); e != reply.end() && e->is_string()) {
    info.error_desc = e->get<std::string>();
  }
  info.total_time_ms = Field<std::int64_t>(reply, "total-time");
  info.downtime_ms = Field<std::int64_t>(reply, "downtime");
  info.expected_downtime_ms = Field<std::int64_t>(reply, "expected-downtime");
  info.setup_time_ms = Field<std::int64_t>(reply, "setup-time");
  info.cpu_throttle_percentage = Field<std::uint64_t>(reply, "cpu-throttle-percentage");
  if (auto ram = reply.find("ram"); ram != reply.end() && ram->is_object()) {
    const nlohmann::json& r = *ram;
    info.has_ram = true;
    info.ram_transferred = Field<std::uint64_t>(r, "transferred");
    info.ram_total = Field<std::uint64_t>(r, "total");
    info.ram_remaining = Field<std::uint64_t>(r, "remaining");
    info.ram_duplicate = Field<std::uint64_t>(r, "duplicate");
    info.ram_normal = Field<std::uint64_t>(r, "normal");
    info.ram_normal_bytes = Field<std::uint64_t>(r, "normal-bytes");
    info.ram_skipped = Field<std::uint64_t>(r, "skipped");
    info.ram_dirty_sync_count = Field<std::uint64_t>(r, "dirty-sync-count");
    info.ram_dirty_pages_rate = Field<std::uint64_t>(r, "dirty-pages-rate");
    info.ram_pages_per_second = Field<std::uint64_t>(r, "pages-per-second");
    info.ram_page_size = Field<std::uint64_t>(r, "page-size");
    info.ram_precopy_bytes = Field<std::uint64_t>(r, "precopy-bytes");
    info.ram_downtime_bytes = Field<std::uint64_t>(r, "downtime-bytes");
    info.ram_postcopy_bytes = Field<std::uint64_t>(r, "postcopy-bytes");
    info.ram_multifd_bytes = Field<std::uint64_t>(r, "multifd-bytes");
    info.ram_mbps = Field<double>(r, "mbps");
  }
  info.raw = reply;
  return info;
}

Result<std::string> QueryStatus(QmpClient& qmp) {
  ESCDR_ASSIGN_OR_RETURN(nlohmann::json r, qmp.Execute("query-status"));
  auto s = r.is_object() ? r.find("status") : r.end();
  if (!r.is_object() || s == r.end() || !s->is_string()) {
    return Err(Status::ProtocolError(
        fmt::format("query-status reply from {} has no status: {}", qmp.name(), r.dump())));
  }
  return s->get<std::string>();
}

Status Stop(QmpClient& qmp) { return Simple(qmp, "stop"); }
Status Cont(QmpClient& qmp) { return Simple(qmp, "cont"); }

Status SetMigrationCapabilities(QmpClient& qmp, const std::map<std::string, bool>& caps) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [name, state] : caps) list.push_back({{"capability", name}, {"state", state}});
  return Simple(qmp, "migrate-set-capabilities", {{"capabilities", list}});
}

Status SetMigrationParameters(QmpClient& qmp, const nlohmann::json& params) {
  if (!params.is_object()) {
    return Status::InvalidArgument(
        fmt::format("migrate-set-parameters needs a JSON object, got {}", params.dump()));
  }
  return Simple(qmp, "migrate-set-parameters", params);
}

Status Migrate(QmpClient& qmp, const std::string& uri) {
  return Simple(qmp, "migrate", {{"uri", uri}});
}

Status MigrateIncoming(QmpClient& qmp, const std::string& uri) {
  return Simple(qmp, "migrate-incoming", {{"uri", uri}});
}

Status MigrateCancel(QmpClient& qmp) { return Simple(qmp, "migrate_cancel"); }

Result<MigrationInfo> QueryMigrate(QmpClient& qmp) {
  ESCDR_ASSIGN_OR_RETURN(nlohmann::json r, qmp.Execute("query-migrate"));
  return ParseMigrationInfo(r);
}

Result<MigrationInfo> WaitForMigration(QmpClient& qmp, std::chrono::milliseconds timeout,
                                       std::chrono::milliseconds poll_interval) {
  Deadline deadline = Deadline::After(timeout);
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(MigrationInfo info, QueryMigrate(qmp));
    if (info.status == "completed") return info;
    if (info.status == "failed") {
      return Err(Status::Aborted(fmt::format("migration from {} failed: {}", qmp.name(),
                                             info.error_desc.empty() ? "no reason given"
                                                                     : info.error_desc)));
    }
    if (info.status == "cancelled") {
      return Err(Status::Aborted(fmt::format("migration from {} was cancelled", qmp.name())));
    }
    if (deadline.Expired()) {
      return Err(Status::Timeout(fmt::format(
          "migration on {} not finished within {} ms: status {}, {} bytes transferred",
          qmp.name(), timeout.count(), info.status, info.ram_transferred)));
    }
    std::this_thread::sleep_for(std::min(poll_interval, deadline.Remaining()));
  }
}

Status Quit(QmpClient& qmp) {
  auto r = qmp.Execute("quit");
  if (!r.has_value() && r.error().code() != StatusCode::kUnavailable) return r.error();
  return Status::OK();
}

}  // namespace escdr
