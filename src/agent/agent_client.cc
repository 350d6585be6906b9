#include "escdr/agent/agent_client.h"

#include <charconv>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "agent/json_util.h"
#include "escdr/agent/control_protocol.h"
#include "escdr/wire/codec.h"
#include "escdr/wire/socket.h"

namespace escdr::agent {

using nlohmann::json;

namespace {

// Longest silence accepted from an agent while a migration runs: it sends a
// progress event several times a second.
constexpr std::chrono::seconds kEventSilence{120};

Result<std::unique_ptr<wire::Connection>> Dial(const std::string& address,
                                               const wire::TlsContext* tls,
                                               const std::string& expected_peer,
                                               Deadline deadline) {
  ESCDR_ASSIGN_OR_RETURN(auto hp, ParseAgentAddress(address));
  auto conn = wire::ConnectTcp(hp.first, hp.second, deadline);
  if (!conn.has_value()) {
    return Err(Status(conn.error().code(), fmt::format("cannot reach the agent at {}: {}", address,
                                                       conn.error().message())));
  }
  if (tls == nullptr) return std::move(*conn);
  auto secure = tls->Connect(std::move(*conn), deadline, expected_peer);
  if (!secure.has_value()) {
    return Err(Status(secure.error().code(), fmt::format("cannot reach the agent at {}: {}",
                                                         address, secure.error().message())));
  }
  return std::unique_ptr<wire::Connection>(std::move(*secure));
}

}  // namespace

Result<std::pair<std::string, std::uint16_t>> ParseAgentAddress(const std::string& address) {
  std::size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return Err(Status::InvalidArgument(
        fmt::format("agent address '{}' is not host:port", address)));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned port = 0;
  std::string_view p = std::string_view(address).substr(colon + 1);
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  if (ec != std::errc() || end != p.data() + p.size() || port > 65535) {
    return Err(Status::InvalidArgument(
        fmt::format("agent address '{}' has no valid port", address)));
  }
  return std::make_pair(host, static_cast<std::uint16_t>(port));
}

// ---- JSON forms ----

json VmInfo::ToJson() const {
  json j = {{"name", name},           {"role", role},       {"pid", pid},
            {"run_state", run_state}, {"ram_path", ram_path}, {"serial_log", serial_log},
            {"qmp_socket", qmp_socket}, {"busy", busy}};
  if (counter) j["counter"] = *counter;
  if (!console_socket.empty()) j["console_socket"] = console_socket;
  if (!forwards.empty()) {
    json f = json::object();
    for (auto [guest, host] : forwards) f[std::to_string(guest)] = host;
    j["forwards"] = f;
  }
  return j;
}

VmInfo VmInfo::FromJson(const json& j) {
  VmInfo v;
  v.name = StringOr(j, "name");
  v.role = StringOr(j, "role");
  v.pid = static_cast<std::int64_t>(U64Or(j, "pid"));
  v.run_state = StringOr(j, "run_state");
  v.ram_path = StringOr(j, "ram_path");
  v.serial_log = StringOr(j, "serial_log");
  v.qmp_socket = StringOr(j, "qmp_socket");
  v.console_socket = StringOr(j, "console_socket");
  if (auto it = j.find("forwards"); it != j.end() && it->is_object()) {
    for (const auto& [guest, host] : it->items()) {
      const unsigned long g = std::strtoul(guest.c_str(), nullptr, 10);
      if (host.is_number_unsigned() && g > 0 && g <= 65535 && host.get<std::uint64_t>() <= 65535) {
        v.forwards[static_cast<std::uint16_t>(g)] = host.get<std::uint16_t>();
      }
    }
  }
  if (auto it = j.find("counter"); it != j.end() && it->is_number_unsigned()) {
    v.counter = it->get<std::uint64_t>();
  }
  if (auto it = j.find("busy"); it != j.end() && it->is_boolean()) v.busy = it->get<bool>();
  return v;
}

json MigrationProgress::ToJson() const {
  return {{"phase", phase},
          {"qemu_status", qemu_status},
          {"elapsed_s", elapsed_s},
          {"ram_transferred", ram_transferred},
          {"ram_total", ram_total},
          {"ram_remaining", ram_remaining},
          {"normal_pages", normal_pages},
          {"zero_pages", zero_pages},
          {"wire_bytes_sent", wire_bytes_sent},
          {"wire_bytes_received", wire_bytes_received},
          {"dirty_sync_count", dirty_sync_count}};
}

MigrationProgress MigrationProgress::FromJson(const json& j) {
  MigrationProgress p;
  p.phase = StringOr(j, "phase");
  p.qemu_status = StringOr(j, "qemu_status");
  if (auto it = j.find("elapsed_s"); it != j.end() && it->is_number()) p.elapsed_s = it->get<double>();
  p.ram_transferred = U64Or(j, "ram_transferred");
  p.ram_total = U64Or(j, "ram_total");
  p.ram_remaining = U64Or(j, "ram_remaining");
  p.normal_pages = U64Or(j, "normal_pages");
  p.zero_pages = U64Or(j, "zero_pages");
  p.wire_bytes_sent = U64Or(j, "wire_bytes_sent");
  p.wire_bytes_received = U64Or(j, "wire_bytes_received");
  p.dirty_sync_count = U64Or(j, "dirty_sync_count");
  return p;
}

json MigrationReportToJson(const MigrationReport& r) {
  return {{"stream_bytes", r.stream_bytes},
          {"rebuilt_bytes", r.rebuilt_bytes},
          {"page_records", r.page_records},
          {"zero_records", r.zero_records},
          {"pages_by_position", r.pages_by_position},
          {"pages_by_content", r.pages_by_content},
          {"pages_window_full", r.pages_window_full},
          {"pages_from_donor", r.pages_from_donor},
          {"fallbacks", r.fallbacks},
          {"catalog_entries", r.catalog_entries},
          {"available_entries", r.available_entries},
          {"donor_pages_scanned", r.donor_pages_scanned},
          {"scan_time_us", r.scan_time.count()},
          {"wire_bytes_sent", r.wire_bytes_sent},
          {"wire_bytes_received", r.wire_bytes_received},
          {"return_path_bytes", r.return_path_bytes},
          {"total_time_us", r.total_time.count()},
          {"downtime_us", r.downtime.count()},
          {"downtime_measured", r.downtime_measured},
          {"max_stream_in_flight", r.max_stream_in_flight},
          {"budget_waits", r.budget_waits},
          {"budget_wait_time_us", r.budget_wait_time.count()},
          {"pages_deduplicated", r.pages_deduplicated},
          {"codec", r.CodecLabel()},
          {"codec_frame_bytes", r.codec_frame_bytes},
          {"codec_wire_bytes", r.codec_wire_bytes},
          {"codec_cpu_time_us", r.codec_cpu_time.count()},
          {"wire_pacing_time_us", r.wire_pacing_time.count()},
          {"bytes_saved_by_position", r.bytes_saved_by_position()},
          {"bytes_saved_by_content", r.bytes_saved_by_content()}};
}

MigrationReport MigrationReportFromJson(const json& j) {
  MigrationReport r;
  r.stream_bytes = U64Or(j, "stream_bytes");
  r.rebuilt_bytes = U64Or(j, "rebuilt_bytes");
  r.page_records = U64Or(j, "page_records");
  r.zero_records = U64Or(j, "zero_records");
  r.pages_by_position = U64Or(j, "pages_by_position");
  r.pages_by_content = U64Or(j, "pages_by_content");
  r.pages_window_full = U64Or(j, "pages_window_full");
  r.pages_from_donor = U64Or(j, "pages_from_donor");
  r.fallbacks = U64Or(j, "fallbacks");
  r.catalog_entries = static_cast<std::uint32_t>(U64Or(j, "catalog_entries"));
  r.available_entries = static_cast<std::uint32_t>(U64Or(j, "available_entries"));
  r.donor_pages_scanned = U64Or(j, "donor_pages_scanned");
  r.scan_time = std::chrono::microseconds(U64Or(j, "scan_time_us"));
  r.wire_bytes_sent = U64Or(j, "wire_bytes_sent");
  r.wire_bytes_received = U64Or(j, "wire_bytes_received");
  r.return_path_bytes = U64Or(j, "return_path_bytes");
  r.total_time = std::chrono::microseconds(U64Or(j, "total_time_us"));
  r.downtime = std::chrono::microseconds(U64Or(j, "downtime_us"));
  r.max_stream_in_flight = U64Or(j, "max_stream_in_flight");
  r.budget_waits = U64Or(j, "budget_waits");
  r.budget_wait_time = std::chrono::microseconds(U64Or(j, "budget_wait_time_us"));
  r.pages_deduplicated = U64Or(j, "pages_deduplicated");
  if (auto it = j.find("codec"); it != j.end() && it->is_string()) {
    if (auto spec = wire::ParseCodecSpec(it->get<std::string>()); spec.has_value()) {
      r.codec = static_cast<std::uint8_t>(spec->codec);
      r.codec_level = spec->level;
    }
  }
  r.codec_frame_bytes = U64Or(j, "codec_frame_bytes");
  r.codec_wire_bytes = U64Or(j, "codec_wire_bytes");
  r.codec_cpu_time = std::chrono::microseconds(U64Or(j, "codec_cpu_time_us"));
  r.wire_pacing_time = std::chrono::microseconds(U64Or(j, "wire_pacing_time_us"));
  if (auto it = j.find("downtime_measured"); it != j.end() && it->is_boolean()) {
    r.downtime_measured = it->get<bool>();
  }
  return r;
}

json MigrateOutRequest::ToJson() const {
  return {{"vm", vm},
          {"migration_id", migration_id},
          {"destination_address", destination_address},
          {"escdr", escdr},
          {"keep_paused", keep_paused},
          {"keep_source", keep_source},
          {"max_bandwidth", max_bandwidth},
          {"compress", compress},
          {"codec_threads", codec_threads},
          {"dedup_budget", dedup_budget},
          {"downtime_limit_ms", downtime_limit_ms},
          {"auto_converge", auto_converge},
          {"timeout_s", timeout.count()},
          {"window_pages", window_pages}};
}

Result<MigrateOutRequest> MigrateOutRequest::FromJson(const json& j) {
  MigrateOutRequest r;
  ESCDR_ASSIGN_OR_RETURN(r.vm, RequiredJsonString(j, "vm"));
  ESCDR_ASSIGN_OR_RETURN(r.migration_id, JsonI64(j, "migration_id"));
  ESCDR_ASSIGN_OR_RETURN(r.destination_address, JsonString(j, "destination_address"));
  ESCDR_ASSIGN_OR_RETURN(r.escdr, JsonBool(j, "escdr", true));
  ESCDR_ASSIGN_OR_RETURN(r.keep_paused, JsonBool(j, "keep_paused"));
  ESCDR_ASSIGN_OR_RETURN(r.keep_source, JsonBool(j, "keep_source"));
  ESCDR_ASSIGN_OR_RETURN(r.max_bandwidth, JsonU64(j, "max_bandwidth"));
  ESCDR_ASSIGN_OR_RETURN(r.compress, JsonString(j, "compress"));
  if (!r.compress.empty()) {
    if (auto codec = wire::ParseCodecSpec(r.compress); !codec.has_value()) return Err(codec.error());
  }
  ESCDR_ASSIGN_OR_RETURN(std::uint64_t threads, JsonU64(j, "codec_threads"));
  if (threads > 64) {
    return Err(Status::InvalidArgument(fmt::format("codec_threads {} exceeds 64", threads)));
  }
  r.codec_threads = static_cast<int>(threads);
  ESCDR_ASSIGN_OR_RETURN(r.dedup_budget, JsonU64(j, "dedup_budget", kDefaultDedupBudget));
  if (r.dedup_budget / kPageSize > wire::kMaxDedupPages) {
    return Err(Status::InvalidArgument(fmt::format(
        "dedup_budget {} exceeds {} bytes", r.dedup_budget, std::uint64_t{wire::kMaxDedupPages} * kPageSize)));
  }
  ESCDR_ASSIGN_OR_RETURN(std::uint64_t downtime, JsonU64(j, "downtime_limit_ms"));
  if (downtime > kMaxDowntimeLimitMs) {
    return Err(Status::InvalidArgument(
        fmt::format("downtime_limit_ms {} exceeds {}", downtime, kMaxDowntimeLimitMs)));
  }
  r.downtime_limit_ms = static_cast<std::uint32_t>(downtime);
  ESCDR_ASSIGN_OR_RETURN(r.auto_converge, JsonBool(j, "auto_converge"));
  ESCDR_ASSIGN_OR_RETURN(std::uint64_t t, JsonU64(j, "timeout_s", 900));
  ESCDR_ASSIGN_OR_RETURN(std::uint64_t window, JsonU64(j, "window_pages"));
  if (window > (1u << 20)) {
    return Err(Status::InvalidArgument(fmt::format("window_pages {} exceeds 1048576", window)));
  }
  r.window_pages = static_cast<std::uint32_t>(window);
  if (r.migration_id <= 0) {
    return Err(Status::InvalidArgument("migrate_out needs the inventory's migration_id"));
  }
  if (t == 0 || t > 86400) {
    return Err(Status::InvalidArgument(fmt::format("timeout_s {} is outside [1, 86400]", t)));
  }
  r.timeout = std::chrono::seconds(t);
  return r;
}

json MigrateOutResult::ToJson() const {
  json phases = json::object();
  for (const auto& [name, seconds] : phase_s) phases[name] = seconds;
  return {{"report", MigrationReportToJson(report)},
          {"phase_s", phases},
          {"qemu_total_time_ms", qemu_total_time_ms},
          {"qemu_downtime_ms", qemu_downtime_ms},
          {"qemu_downtime_bytes", qemu_downtime_bytes},
          {"qemu_rounds", qemu_rounds},
          {"qemu_cpu_throttle_max", qemu_cpu_throttle_max},
          {"destination_host", destination_host},
          {"donor", donor},
          {"note", note},
          {"destination_vm", destination_vm.ToJson()},
          {"elapsed_s", elapsed_s}};
}

MigrateOutResult MigrateOutResult::FromJson(const json& j) {
  MigrateOutResult r;
  if (auto it = j.find("report"); it != j.end() && it->is_object()) {
    r.report = MigrationReportFromJson(*it);
  }
  r.qemu_total_time_ms = static_cast<std::int64_t>(U64Or(j, "qemu_total_time_ms"));
  r.qemu_downtime_ms = static_cast<std::int64_t>(U64Or(j, "qemu_downtime_ms"));
  r.qemu_downtime_bytes = U64Or(j, "qemu_downtime_bytes");
  r.qemu_rounds = U64Or(j, "qemu_rounds");
  r.qemu_cpu_throttle_max = U64Or(j, "qemu_cpu_throttle_max");
  r.destination_host = StringOr(j, "destination_host");
  r.donor = StringOr(j, "donor");
  r.note = StringOr(j, "note");
  if (auto it = j.find("destination_vm"); it != j.end() && it->is_object()) {
    r.destination_vm = VmInfo::FromJson(*it);
  }
  if (auto it = j.find("elapsed_s"); it != j.end() && it->is_number()) r.elapsed_s = it->get<double>();
  if (auto it = j.find("phase_s"); it != j.end() && it->is_object()) {
    for (const auto& [name, seconds] : it->items()) {
      if (seconds.is_number()) r.phase_s.emplace_back(name, seconds.get<double>());
    }
  }
  return r;
}

// ---- client ----

AgentClient::AgentClient(std::string address, std::chrono::milliseconds timeout,
                         std::shared_ptr<const wire::TlsContext> tls, std::string expected_peer)
    : address_(std::move(address)),
      timeout_(timeout),
      tls_(std::move(tls)),
      expected_peer_(std::move(expected_peer)) {}

Result<json> AgentClient::Call(const std::string& op, json args,
                               const std::function<void(const json&)>& on_event) {
  const Deadline deadline = Deadline::After(timeout_);
  ESCDR_ASSIGN_OR_RETURN(auto conn, Dial(address_, tls_.get(), expected_peer_, deadline));
  if (!args.is_object()) args = json::object();
  args["version"] = kControlVersion;
  args["op"] = op;
  const std::string peer = fmt::format("the agent at {}", address_);
  ESCDR_RETURN_IF_ERROR(WriteControlFrame(*conn, ControlFrameType::kRequest, args, deadline)
                            .WithContext(fmt::format("cannot send {} to {}", op, peer)));
  for (;;) {
    ESCDR_ASSIGN_OR_RETURN(ControlFrame f, ReadControlFrame(*conn, peer, deadline));
    if (f.type == ControlFrameType::kEvent) {
      if (on_event) on_event(f.body);
      continue;
    }
    if (f.type != ControlFrameType::kReply) {
      return Err(Status::ProtocolError(fmt::format("{} sent a request frame", peer)));
    }
    ESCDR_RETURN_IF_ERROR(ReplyStatus(f.body));
    return std::move(f.body);
  }
}

Result<json> AgentClient::Ping() { return Call("ping"); }
Result<json> AgentClient::GetStatus() { return Call("status"); }

Result<std::vector<VmInfo>> AgentClient::ListVms() {
  ESCDR_ASSIGN_OR_RETURN(json reply, Call("list_vms"));
  std::vector<VmInfo> vms;
  if (auto it = reply.find("vms"); it != reply.end() && it->is_array()) {
    for (const json& v : *it) vms.push_back(VmInfo::FromJson(v));
  }
  return vms;
}

Result<VmInfo> AgentClient::StartVm(const std::string& name) {
  ESCDR_ASSIGN_OR_RETURN(json reply, Call("start_vm", {{"vm", name}}));
  auto it = reply.find("vm");
  if (it == reply.end() || !it->is_object()) {
    return Err(Status::ProtocolError("start_vm reply has no \"vm\" object"));
  }
  return VmInfo::FromJson(*it);
}

Status AgentClient::StopVm(const std::string& name) {
  auto reply = Call("stop_vm", {{"vm", name}});
  return reply.has_value() ? Status::OK() : reply.error();
}

Result<MigrateOutResult> AgentClient::MigrateOut(
    const MigrateOutRequest& request,
    const std::function<void(const MigrationProgress&)>& on_progress,
    const std::atomic<bool>* cancel) {
  ESCDR_ASSIGN_OR_RETURN(auto conn, Dial(address_, tls_.get(), expected_peer_, Deadline::After(timeout_)));
  json args = request.ToJson();
  args["version"] = kControlVersion;
  args["op"] = "migrate_out";
  const std::string peer = fmt::format("the agent at {}", address_);
  ESCDR_RETURN_IF_ERROR(
      WriteControlFrame(*conn, ControlFrameType::kRequest, args, Deadline::After(timeout_))
          .WithContext(fmt::format("cannot send migrate_out to {}", peer)));

  // A cancel request travels on the same connection, written by a helper
  // thread while this one reads (a connection is full duplex).
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::thread canceller;
  if (cancel != nullptr) {
    canceller = std::thread([&] {
      std::unique_lock<std::mutex> lock(mu);
      while (!done) {
        if (cancel->load()) {
          lock.unlock();
          (void)WriteControlFrame(*conn, ControlFrameType::kRequest,
                                  {{"version", kControlVersion}, {"op", "cancel"}},
                                  Deadline::After(std::chrono::seconds(5)));
          return;
        }
        cv.wait_for(lock, std::chrono::milliseconds(100));
      }
    });
  }
  auto finish = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
    cv.notify_all();
    if (canceller.joinable()) canceller.join();
  };

  const Deadline overall = Deadline::After(request.timeout + std::chrono::seconds(120));
  for (;;) {
    Deadline next = Deadline::After(std::min<std::chrono::milliseconds>(
        kEventSilence, overall.Remaining()));
    auto f = ReadControlFrame(*conn, peer, next);
    if (!f.has_value()) {
      finish();
      return Err(f.error().WithContext(
          fmt::format("lost the source agent during the migration of {}", request.vm)));
    }
    if (f->type == ControlFrameType::kEvent) {
      if (on_progress) on_progress(MigrationProgress::FromJson(f->body));
      continue;
    }
    finish();
    if (f->type != ControlFrameType::kReply) {
      return Err(Status::ProtocolError(fmt::format("{} sent a request frame", peer)));
    }
    ESCDR_RETURN_IF_ERROR(ReplyStatus(f->body));
    return MigrateOutResult::FromJson(f->body);
  }
}

}  // namespace escdr::agent
