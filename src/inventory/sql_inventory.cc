// The Inventory over a SqlDb: one implementation for SQLite and PostgreSQL.
//
// Concurrency model. Every method is one transaction, retried when the
// database reports a serialization failure or deadlock (kAborted). Writers
// on SQLite hold the database write lock from BEGIN IMMEDIATE to COMMIT, so
// they are serialized. On PostgreSQL (READ COMMITTED) a writer locks the rows
// it reads before changing them (SELECT ... FOR UPDATE), always in the order
// migration -> VM -> hosts by id, so two transactions cannot both see room
// on a host and both take it. PlaceVm also takes one advisory lock so that
// concurrent placements see each other's choices and keep spreading. CHECK
// constraints on the host row catch any over-commit that slipped through.
#include "inventory/sql_inventory.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "escdr/base/qemu_version.h"

namespace escdr::inventory_internal {
namespace {

using I64 = std::int64_t;

constexpr int kMaxAttempts = 8;
// Any constant: the PostgreSQL advisory lock that orders placements.
constexpr I64 kPlacementLockKey = 0x65736364'72706c63;  // "escdrplc"

const std::string kHostCols =
    "h.id, h.name, h.agent_address, h.rack, h.pod, h.memory_total_mib, h.vcpus_total, h.state, "
    "h.memory_used_mib, h.vcpus_used, h.memory_reserved_mib, h.vcpus_reserved, h.vm_count, "
    "h.created_at, h.qemu_versions";
constexpr std::size_t kHostColCount = 15;

// "Up, with room for $2 MiB and $3 vCPUs".
const std::string kHasRoom =
    "h.state = 'up' AND h.memory_total_mib - h.memory_used_mib >= $2 AND "
    "h.vcpus_total - h.vcpus_used >= $3";

const std::string kVmCols =
    "v.id, v.name, h.name, k.os, k.os_version, k.hypervisor, k.hypervisor_version, "
    "v.memory_mib, v.vcpus, v.state, v.launch_spec, v.ram_path, v.created_at, v.updated_at, "
    "v.qemu_version";
const std::string kVmFrom =
    " FROM vms v JOIN hosts h ON h.id = v.host_id JOIN kinds k ON k.id = v.kind_id";

const std::string kMigrationCols =
    "m.id, m.vm, k.os, k.os_version, k.hypervisor, k.hypervisor_version, m.source, "
    "m.destination, m.donor, m.memory_mib, m.vcpus, m.outcome, m.bytes_on_wire, "
    "m.bytes_saved_position, m.bytes_saved_content, m.fallback_pages, m.total_ms, "
    "m.downtime_ms, m.error, m.started_at, m.finished_at, m.qemu_version";
const std::string kMigrationFrom = " FROM migrations m JOIN kinds k ON k.id = m.kind_id";

// "Host h runs the QEMU series bound to $<param>": it reported no versions,
// or one of its space-separated versions is that series ("7.2") or starts
// with it and a dot ("7.2.19"). The parameter comes from SeriesParam().
std::string RunsSeriesSql(int param) {
  const std::string list = "(' ' || h.qemu_versions || ' ')";
  const std::string p = "$" + std::to_string(param);
  return "(h.qemu_versions = '' OR " + list + " LIKE ('% ' || " + p + " || ' %') OR " + list +
         " LIKE ('% ' || " + p + " || '.%'))";
}

// The value for RunsSeriesSql(): the series of `series` if it is one (digits
// and dots, so free of LIKE wildcards), else "-", which no reported version
// matches (as in HostRunsQemuSeries()).
std::string SeriesParam(std::string_view series) {
  std::string s = QemuSeriesOf(series);
  return IsQemuSeries(s) ? s : "-";
}

// Versions as stored: oldest first, no duplicates, space-separated.
std::string QemuVersionsColumn(std::vector<std::string> versions) {
  std::sort(versions.begin(), versions.end(), [](const std::string& a, const std::string& b) {
    const int c = CompareQemuVersions(a, b);
    return c != 0 ? c < 0 : a < b;
  });
  versions.erase(std::unique(versions.begin(), versions.end()), versions.end());
  std::string out;
  for (const std::string& v : versions) out += (out.empty() ? "" : " ") + v;
  return out;
}

std::vector<std::string> SplitQemuVersions(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const std::size_t sp = text.find(' ');
    if (sp != 0) out.emplace_back(text.substr(0, sp));
    if (sp == std::string_view::npos) break;
    text.remove_prefix(sp + 1);
  }
  return out;
}

// What vms.qemu_version stores for run series `series` of a VM of `kind`:
// "" when it is the kind's own.
std::string StoredRunSeries(const VmKind& kind, std::string_view series) {
  return series == kind.hypervisor_version ? std::string() : std::string(series);
}

// "host h1 has no QEMU 10.0 (it runs 7.2.19, 8.2.2)".
std::string NoSeries(const Host& h, std::string_view role, std::string_view series) {
  return fmt::format("{} {} has no QEMU {} (it runs {})", role, h.name, series,
                     QemuVersionsText(h.qemu_versions));
}

std::string NowIso8601() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

I64 Signed(std::uint64_t v) { return static_cast<I64>(v); }
std::uint64_t U64(const SqlRows& rows, std::size_t r, std::size_t c) {
  return static_cast<std::uint64_t>(rows.Int(r, c));
}
std::uint32_t U32(const SqlRows& rows, std::size_t r, std::size_t c) {
  return static_cast<std::uint32_t>(rows.Int(r, c));
}

struct HostRow {
  I64 id = 0;
  Host host;
};

// The kHostCols of row `r`, starting at column `c`.
HostRow ParseHost(const SqlRows& rows, std::size_t r, std::size_t c = 0) {
  HostRow out;
  out.id = rows.Int(r, c + 0);
  Host& h = out.host;
  h.name = rows.Text(r, c + 1);
  h.agent_address = rows.Text(r, c + 2);
  h.rack = rows.Text(r, c + 3);
  h.pod = rows.Text(r, c + 4);
  h.memory_mib = U64(rows, r, c + 5);
  h.vcpus = U32(rows, r, c + 6);
  h.state = ParseHostState(rows.Text(r, c + 7)).value_or(HostState::kDown);
  h.memory_used_mib = U64(rows, r, c + 8);
  h.vcpus_used = U32(rows, r, c + 9);
  h.memory_reserved_mib = U64(rows, r, c + 10);
  h.vcpus_reserved = U32(rows, r, c + 11);
  h.vm_count = U32(rows, r, c + 12);
  h.created_at = rows.Text(r, c + 13);
  h.qemu_versions = SplitQemuVersions(rows.Text(r, c + 14));
  return out;
}

Result<Host> HostOnly(Result<HostRow> r) {
  if (!r) return Err(r.error());
  return std::move(r->host);
}

HostView ToView(const Host& h, std::uint32_t same_kind) {
  HostView v;
  v.name = h.name;
  v.rack = h.rack;
  v.pod = h.pod;
  v.memory_total_mib = h.memory_mib;
  v.memory_used_mib = h.memory_used_mib;
  v.vcpus_total = h.vcpus;
  v.vcpus_used = h.vcpus_used;
  v.up = h.state == HostState::kUp;
  v.same_kind_vms = same_kind;
  return v;
}

Vm ParseVm(const SqlRows& rows, std::size_t r) {
  Vm v;
  v.name = rows.Text(r, 1);
  v.host = rows.Text(r, 2);
  v.kind = {rows.Text(r, 3), rows.Text(r, 4), rows.Text(r, 5), rows.Text(r, 6)};
  v.memory_mib = U64(rows, r, 7);
  v.vcpus = U32(rows, r, 8);
  v.state = ParseVmState(rows.Text(r, 9)).value_or(VmState::kStopped);
  v.launch_spec = rows.Text(r, 10);
  v.ram_path = rows.Text(r, 11);
  v.created_at = rows.Text(r, 12);
  v.updated_at = rows.Text(r, 13);
  v.qemu_version = rows.Text(r, 14);
  return v;
}

Migration ParseMigration(const SqlRows& rows, std::size_t r) {
  Migration m;
  m.id = rows.Int(r, 0);
  m.vm = rows.Text(r, 1);
  m.kind = {rows.Text(r, 2), rows.Text(r, 3), rows.Text(r, 4), rows.Text(r, 5)};
  m.source = rows.Text(r, 6);
  m.destination = rows.Text(r, 7);
  m.donor = rows.Text(r, 8);
  m.memory_mib = U64(rows, r, 9);
  m.vcpus = U32(rows, r, 10);
  m.outcome = ParseMigrationOutcome(rows.Text(r, 11)).value_or(MigrationOutcome::kFailed);
  m.figures.bytes_on_wire = U64(rows, r, 12);
  m.figures.bytes_saved_position = U64(rows, r, 13);
  m.figures.bytes_saved_content = U64(rows, r, 14);
  m.figures.fallback_pages = U64(rows, r, 15);
  m.figures.total_ms = U64(rows, r, 16);
  m.figures.downtime_ms = U64(rows, r, 17);
  m.figures.error = rows.Text(r, 18);
  m.started_at = rows.Text(r, 19);
  m.finished_at = rows.Text(r, 20);
  m.qemu_version = rows.Text(r, 21);
  return m;
}

std::string RoomShortage(const Host& h, const VmDemand& d) {
  const std::uint64_t free_mem = h.memory_mib - std::min(h.memory_mib, h.memory_used_mib);
  const std::uint32_t free_cpu = h.vcpus - std::min(h.vcpus, h.vcpus_used);
  if (free_mem < d.memory_mib) {
    return fmt::format("{} MiB free, {} MiB needed", free_mem, d.memory_mib);
  }
  if (free_cpu < d.vcpus) return fmt::format("{} vCPUs free, {} needed", free_cpu, d.vcpus);
  return {};
}

Status StatusOfAny(const Status& s) { return s; }
template <typename T>
Status StatusOfAny(const Result<T>& r) {
  return StatusOf(r);
}

// Turns a driver's unique-violation message into one about `what`.
Status Duplicate(const Status& s, const std::string& context, const std::string& what) {
  if (s.code() == StatusCode::kAlreadyExists) {
    return Status::AlreadyExists(context + ": " + what + " already exists");
  }
  return s.WithContext(context);
}

class SqlInventory final : public Inventory {
 public:
  explicit SqlInventory(std::unique_ptr<SqlDb> db) : db_(std::move(db)) {}

  const std::string& url() const override { return db_->url(); }

  // ------------------------------------------------------------------ hosts

  Result<Host> AddHost(const HostSpec& spec) override {
    const std::string ctx = "cannot add host " + spec.name;
    ESCDR_RETURN_IF_ERROR(ValidateHostSpec(spec));
    return Tx(true, [&]() -> Result<Host> {
      ESCDR_RETURN_IF_ERROR(InsertHost(spec, ctx));
      return HostOnly(FindHost(spec.name, false, ctx));
    });
  }

  Status AddHosts(std::span<const HostSpec> specs) override {
    for (const HostSpec& spec : specs) ESCDR_RETURN_IF_ERROR(ValidateHostSpec(spec));
    return Tx(true, [&]() -> Status {
      for (const HostSpec& spec : specs) {
        ESCDR_RETURN_IF_ERROR(InsertHost(spec, "cannot add host " + spec.name));
      }
      return Status::OK();
    });
  }

  Result<Host> RegisterHost(const HostSpec& spec) override {
    const std::string ctx = "cannot register host " + spec.name;
    ESCDR_RETURN_IF_ERROR(ValidateHostSpec(spec));
    return Tx(true, [&]() -> Result<Host> {
      ESCDR_ASSIGN_OR_RETURN(auto rows, Q("SELECT " + kHostCols + " FROM hosts h WHERE h.name = $1" +
                                              ForUpdate(),
                                          {spec.name}));
      if (rows.empty()) {
        ESCDR_RETURN_IF_ERROR(InsertHost(spec, ctx));
      } else {
        const Host old = ParseHost(rows, 0).host;
        if (spec.memory_mib < old.memory_used_mib || spec.vcpus < old.vcpus_used) {
          return Err(Status::FailedPrecondition(fmt::format(
              "{}: new capacity {} MiB, {} vCPUs is below what is in use ({} MiB, {} vCPUs)", ctx,
              spec.memory_mib, spec.vcpus, old.memory_used_mib, old.vcpus_used)));
        }
        ESCDR_RETURN_IF_ERROR(StatusOf(Q(
            "UPDATE hosts SET agent_address = $2, rack = $3, pod = $4, memory_total_mib = $5, "
            "vcpus_total = $6, qemu_versions = $7 WHERE name = $1",
            {spec.name, spec.agent_address, spec.rack, spec.pod, Signed(spec.memory_mib),
             I64{spec.vcpus}, QemuVersionsColumn(spec.qemu_versions)})));
      }
      return HostOnly(FindHost(spec.name, false, ctx));
    });
  }

  Result<Host> GetHost(std::string_view name) override {
    return Tx(false, [&]() -> Result<Host> {
      return HostOnly(FindHost(name, false, "cannot show host"));
    });
  }

  Result<std::vector<Host>> ListHosts() override {
    return Tx(false, [&]() -> Result<std::vector<Host>> {
      ESCDR_ASSIGN_OR_RETURN(auto rows, Q("SELECT " + kHostCols + " FROM hosts h ORDER BY h.name"));
      std::vector<Host> out;
      out.reserve(rows.rows.size());
      for (std::size_t r = 0; r < rows.rows.size(); ++r) out.push_back(ParseHost(rows, r).host);
      return out;
    });
  }

  Status SetHostState(std::string_view name, HostState state) override {
    return Tx(true, [&]() -> Status {
      ESCDR_ASSIGN_OR_RETURN(auto rows, Q("UPDATE hosts SET state = $2 WHERE name = $1",
                                          {name, std::string_view(HostStateName(state))}));
      if (rows.affected == 0) {
        return Status::NotFound(fmt::format("cannot set state of host {}: no such host", name));
      }
      return Status::OK();
    });
  }

  Status RemoveHost(std::string_view name) override {
    const std::string ctx = fmt::format("cannot remove host {}", name);
    return Tx(true, [&]() -> Status {
      ESCDR_ASSIGN_OR_RETURN(HostRow h, FindHost(name, true, ctx));
      if (h.host.vm_count > 0) {
        return Status::FailedPrecondition(fmt::format(
            "{}: {} VM{} placed on it; remove or migrate them first", ctx, h.host.vm_count,
            h.host.vm_count == 1 ? " is" : "s are"));
      }
      if (h.host.memory_reserved_mib > 0 || h.host.vcpus_reserved > 0) {
        return Status::FailedPrecondition(ctx + ": a migration to it is in progress");
      }
      return StatusOf(Q("DELETE FROM hosts WHERE id = $1", {h.id})).WithContext(ctx);
    });
  }

  // -------------------------------------------------------------------- VMs

  Result<Vm> AddVm(const VmSpec& spec) override {
    const std::string ctx = "cannot add VM " + spec.name;
    ESCDR_RETURN_IF_ERROR(ValidateVmSpec(spec));
    if (spec.host.empty()) {
      return Err(Status::InvalidArgument(ctx + ": no host given (use placement to choose one)"));
    }
    return Tx(true, [&]() -> Result<Vm> {
      KindCache kinds;
      ESCDR_RETURN_IF_ERROR(CheckVmNameFree(spec.name, ctx));
      ESCDR_ASSIGN_OR_RETURN(HostRow h, FindHost(spec.host, true, ctx));
      ESCDR_RETURN_IF_ERROR(InsertVm(spec, h, kinds, ctx));
      return FindVm(spec.name, ctx);
    });
  }

  Status AddVms(std::span<const VmSpec> specs) override {
    for (const VmSpec& spec : specs) {
      ESCDR_RETURN_IF_ERROR(ValidateVmSpec(spec));
      if (spec.host.empty()) {
        return Status::InvalidArgument("cannot add VM " + spec.name + ": no host given");
      }
    }
    return Tx(true, [&]() -> Status {
      KindCache kinds;
      for (const VmSpec& spec : specs) {
        const std::string ctx = "cannot add VM " + spec.name;
        ESCDR_ASSIGN_OR_RETURN(HostRow h, FindHost(spec.host, true, ctx));
        ESCDR_RETURN_IF_ERROR(InsertVm(spec, h, kinds, ctx));
      }
      return Status::OK();
    });
  }

  Result<Placed> PlaceVm(const VmSpec& spec, const PlacementOptions& options) override {
    const std::string ctx = "cannot place VM " + spec.name;
    ESCDR_RETURN_IF_ERROR(ValidateVmSpec(spec));
    if (!spec.host.empty()) {
      return Err(Status::InvalidArgument(ctx + ": a host is already given (" + spec.host + ")"));
    }
    const VmDemand demand{spec.memory_mib, spec.vcpus};
    // The advisory lock (PostgreSQL) orders concurrent placements, so each
    // sees the previous one's VM and spreading holds under concurrency.
    return Tx(
        true,
        [&]() -> Result<Placed> {
          ESCDR_ASSIGN_OR_RETURN(KindAndHosts kh, LookUpKind(spec.kind, spec.name));
          if (kh.vm_exists) {
            return Err(Status::AlreadyExists(ctx + ": a VM of that name already exists"));
          }
          if (kh.kind_id == 0) {
            ESCDR_ASSIGN_OR_RETURN(kh.kind_id, CreateKind(spec.kind));
          }
          std::vector<I64> ids;
          ESCDR_ASSIGN_OR_RETURN(
              PlacementPlan plan,
              GatherPlacement(kh.kind_id, kh.hosts, demand, options, RunSeries(spec), ids));
          if (!plan.decision.chosen) return Err(NoRoom(demand, RunSeries(spec), ctx));
          const std::size_t c = *plan.decision.chosen;
          // Take the room first: the conditional UPDATE locks the host row
          // and re-checks the room, so a concurrent AddVm that filled the
          // host since our read makes us decide again (kAborted = retry).
          ESCDR_ASSIGN_OR_RETURN(
              auto upd,
              Q("UPDATE hosts SET memory_used_mib = memory_used_mib + $2, vcpus_used = "
                "vcpus_used + $3, vm_count = vm_count + 1 WHERE id = $1 AND state = 'up' AND "
                "memory_total_mib - memory_used_mib >= $2 AND vcpus_total - vcpus_used >= $3",
                {ids[c], Signed(spec.memory_mib), I64{spec.vcpus}}));
          if (upd.affected != 1) {
            return Err(Status::Aborted(ctx + ": host " + plan.candidates[c].name +
                                       " filled up concurrently"));
          }
          const std::string now = NowIso8601();
          const std::string series = StoredRunSeries(spec.kind, spec.qemu_version);
          Status s = StatusOf(Q(
              "INSERT INTO vms (name, host_id, kind_id, memory_mib, vcpus, state, launch_spec, "
              "ram_path, created_at, updated_at, qemu_version) VALUES ($1, $2, $3, $4, $5, $6, "
              "$7, $8, $9, $9, $10)",
              {spec.name, ids[c], kh.kind_id, Signed(spec.memory_mib), I64{spec.vcpus},
               std::string_view(VmStateName(spec.state)), spec.launch_spec, spec.ram_path, now,
               series}));
          if (!s.ok()) return Err(Duplicate(s, ctx, "a VM of that name"));
          Vm vm{spec.name,        plan.candidates[c].name, spec.kind, spec.memory_mib,
                spec.vcpus,       spec.state,              spec.launch_spec, spec.ram_path,
                now,              now,                     series};
          return Placed{std::move(vm), std::move(plan)};
        },
        kPlacementLockKey);
  }

  Result<Vm> GetVm(std::string_view name) override {
    return Tx(false, [&]() -> Result<Vm> { return FindVm(name, "cannot show VM"); });
  }

  Result<std::vector<Vm>> ListVms(const VmFilter& filter) override {
    return Tx(false, [&]() -> Result<std::vector<Vm>> {
      std::string sql = "SELECT " + kVmCols + kVmFrom + " WHERE 1 = 1";
      if (!filter.host.empty()) sql += " AND h.name = $1";
      if (filter.kind) {
        sql += " AND k.os = $2 AND k.os_version = $3 AND k.hypervisor = $4 AND "
               "k.hypervisor_version = $5";
      }
      sql += " ORDER BY v.name";
      const VmKind k = filter.kind.value_or(VmKind{});
      ESCDR_ASSIGN_OR_RETURN(auto rows, Q(sql, {filter.host, k.os, k.os_version, k.hypervisor,
                                                k.hypervisor_version}));
      std::vector<Vm> out;
      out.reserve(rows.rows.size());
      for (std::size_t r = 0; r < rows.rows.size(); ++r) out.push_back(ParseVm(rows, r));
      return out;
    });
  }

  Status SetVmState(std::string_view name, VmState state) override {
    const std::string ctx = fmt::format("cannot set VM {} {}", name, VmStateName(state));
    return Tx(true, [&]() -> Status {
      ESCDR_ASSIGN_OR_RETURN(auto rows,
                             Q("SELECT state FROM vms WHERE name = $1" + ForUpdate(), {name}));
      if (rows.empty()) return Status::NotFound(ctx + ": no such VM");
      ESCDR_ASSIGN_OR_RETURN(VmState from, ParseVmState(rows.Text(0, 0)));
      if (from == state) return Status::OK();
      const bool allowed =
          (from == VmState::kDefined &&
           (state == VmState::kRunning || state == VmState::kStopped)) ||
          (from == VmState::kRunning && state == VmState::kStopped) ||
          (from == VmState::kStopped && state == VmState::kRunning);
      if (!allowed) {
        return Status::FailedPrecondition(
            fmt::format("{}: it is {}{}", ctx, VmStateName(from),
                        from == VmState::kMigrating || state == VmState::kMigrating
                            ? " (only migrations move a VM into or out of migrating)"
                            : ""));
      }
      return StatusOf(Q("UPDATE vms SET state = $2, updated_at = $3 WHERE name = $1",
                        {name, std::string_view(VmStateName(state)), Now()}));
    });
  }

  Status SetVmLaunch(std::string_view name, std::string_view launch_spec,
                     std::string_view ram_path) override {
    return Tx(true, [&]() -> Status {
      ESCDR_ASSIGN_OR_RETURN(
          auto rows, Q("UPDATE vms SET launch_spec = $2, ram_path = $3, updated_at = $4 "
                       "WHERE name = $1",
                       {name, launch_spec, ram_path, Now()}));
      if (rows.affected == 0) {
        return Status::NotFound(fmt::format("cannot update launch data of VM {}: no such VM", name));
      }
      return Status::OK();
    });
  }

  Status RemoveVm(std::string_view name) override {
    const std::string ctx = fmt::format("cannot remove VM {}", name);
    return Tx(true, [&]() -> Status {
      ESCDR_ASSIGN_OR_RETURN(
          auto rows, Q("SELECT id, host_id, memory_mib, vcpus, state FROM vms WHERE name = $1" +
                           ForUpdate(),
                       {name}));
      if (rows.empty()) return Status::NotFound(ctx + ": no such VM");
      if (rows.Text(0, 4) == VmStateName(VmState::kMigrating)) {
        return Status::FailedPrecondition(ctx + ": it is migrating; finish the migration first");
      }
      ESCDR_RETURN_IF_ERROR(LockHosts({rows.Int(0, 1)}));
      ESCDR_RETURN_IF_ERROR(StatusOf(Q("DELETE FROM vms WHERE id = $1", {rows.Int(0, 0)})));
      return StatusOf(Q("UPDATE hosts SET memory_used_mib = memory_used_mib - $2, "
                        "vcpus_used = vcpus_used - $3, vm_count = vm_count - 1 WHERE id = $1",
                        {rows.Int(0, 1), rows.Int(0, 2), rows.Int(0, 3)}))
          .WithContext(ctx);
    });
  }

  // -------------------------------------------------------------- decisions

  Result<PlacementPlan> PlanPlacement(const VmKind& kind, const VmDemand& demand,
                                      const PlacementOptions& options) override {
    if (Status s = kind.Validate(); !s.ok()) return Err(s.WithContext("cannot plan placement"));
    if (demand.memory_mib == 0 || demand.vcpus == 0) {
      return Err(Status::InvalidArgument("cannot plan placement: memory and vCPUs must be > 0"));
    }
    return Tx(false, [&]() -> Result<PlacementPlan> {
      ESCDR_ASSIGN_OR_RETURN(KindAndHosts kh, LookUpKind(kind, ""));
      std::vector<I64> ids;
      return GatherPlacement(kh.kind_id, kh.hosts, demand, options, kind.hypervisor_version, ids);
    });
  }

  Result<DestinationPlan> PlanDestination(std::string_view vm,
                                          std::string_view qemu_series) override {
    if (!qemu_series.empty() && !IsQemuSeries(qemu_series)) {
      return Err(Status::InvalidArgument(fmt::format(
          "cannot choose a destination for VM {}: QEMU series '{}' is not major.minor like 7.2",
          vm, qemu_series.substr(0, 32))));
    }
    return Tx(false,
              [&]() -> Result<DestinationPlan> { return GatherDestination(vm, qemu_series); });
  }

  // ------------------------------------------------------------- migrations

  Result<Migration> BeginMigration(std::string_view vm, std::string_view destination,
                                   std::string_view donor, std::string_view qemu_series) override {
    const std::string ctx = fmt::format("cannot migrate VM {} to {}", vm, destination);
    if (!qemu_series.empty() && !IsQemuSeries(qemu_series)) {
      return Err(Status::InvalidArgument(fmt::format(
          "{}: QEMU series '{}' is not major.minor like 7.2", ctx, qemu_series.substr(0, 32))));
    }
    return Tx(true, [&]() -> Result<Migration> {
      // FOR UPDATE OF: lock the VM row only, not its kind.
      ESCDR_ASSIGN_OR_RETURN(
          auto v, Q("SELECT v.id, v.host_id, v.kind_id, v.memory_mib, v.vcpus, v.state, "
                    "v.qemu_version, k.hypervisor_version FROM vms v JOIN kinds k ON k.id = "
                    "v.kind_id WHERE v.name = $1" +
                        std::string(db_->dialect() == Dialect::kPostgres ? " FOR UPDATE OF v"
                                                                         : ""),
                    {vm}));
      if (v.empty()) return Err(Status::NotFound(ctx + ": no such VM"));
      const I64 vm_id = v.Int(0, 0), source_id = v.Int(0, 1), kind_id = v.Int(0, 2);
      const VmDemand demand{U64(v, 0, 3), U32(v, 0, 4)};
      if (v.Text(0, 5) != VmStateName(VmState::kRunning)) {
        return Err(Status::FailedPrecondition(ctx + ": it is " + v.Text(0, 5) + ", not running"));
      }
      const std::string run = v.Text(0, 6).empty() ? v.Text(0, 7) : v.Text(0, 6);
      const std::string target = qemu_series.empty() ? run : std::string(qemu_series);
      ESCDR_RETURN_IF_ERROR(CheckNotDowngrade(run, target, ctx));
      ESCDR_ASSIGN_OR_RETURN(HostRow dest, FindHost(destination, true, ctx));
      if (dest.id == source_id) {
        return Err(Status::InvalidArgument(ctx + ": it already runs there"));
      }
      if (dest.host.state != HostState::kUp) {
        return Err(Status::FailedPrecondition(
            fmt::format("{}: the destination is {}", ctx, HostStateName(dest.host.state))));
      }
      if (!HostRunsQemuSeries(dest.host, target)) {
        return Err(Status::FailedPrecondition(
            fmt::format("{}: {}", ctx, NoSeries(dest.host, "destination", target))));
      }
      if (std::string why = RoomShortage(dest.host, demand); !why.empty()) {
        return Err(Status::ResourceExhausted(ctx + ": no room there (" + why + ")"));
      }
      ESCDR_ASSIGN_OR_RETURN(auto src, Q("SELECT name FROM hosts WHERE id = $1", {source_id}));
      std::string donor_name;
      ESCDR_ASSIGN_OR_RETURN(
          auto donors,
          Q("SELECT name FROM vms WHERE kind_id = $1 AND host_id = $2 AND state = 'running' "
            "AND ($3 = '' OR name = $3) ORDER BY name LIMIT 1",
            {kind_id, dest.id, donor}));
      if (!donors.empty()) {
        donor_name = donors.Text(0, 0);
      } else if (!donor.empty()) {
        return Err(Status::InvalidArgument(
            fmt::format("{}: donor {} is not a running VM of the same kind on {}", ctx, donor,
                        destination)));
      }
      ESCDR_RETURN_IF_ERROR(StatusOf(
          Q("UPDATE hosts SET memory_used_mib = memory_used_mib + $2, vcpus_used = vcpus_used + "
            "$3, memory_reserved_mib = memory_reserved_mib + $2, vcpus_reserved = "
            "vcpus_reserved + $3 WHERE id = $1",
            {dest.id, Signed(demand.memory_mib), I64{demand.vcpus}})));
      const std::string now(Now());
      ESCDR_RETURN_IF_ERROR(
          StatusOf(Q("UPDATE vms SET state = 'migrating', updated_at = $2 WHERE id = $1",
                     {vm_id, now})));
      ESCDR_ASSIGN_OR_RETURN(
          auto ins, Q("INSERT INTO migrations (vm, kind_id, source, destination, donor, "
                      "memory_mib, vcpus, outcome, started_at, qemu_version) VALUES ($1, $2, $3, "
                      "$4, $5, $6, $7, 'in-progress', $8, $9) RETURNING id",
                      {vm, kind_id, src.Text(0, 0), destination, donor_name,
                       Signed(demand.memory_mib), I64{demand.vcpus}, now, target}));
      return FindMigration(ins.Int(0, 0), false, ctx);
    });
  }

  Result<Migration> FinishMigration(std::int64_t id, MigrationOutcome outcome,
                                    const MigrationFigures& figures) override {
    const std::string ctx = fmt::format("cannot finish migration {}", id);
    if (outcome == MigrationOutcome::kInProgress) {
      return Err(Status::InvalidArgument(ctx + ": the outcome must be succeeded or failed"));
    }
    return Tx(true, [&]() -> Result<Migration> {
      ESCDR_ASSIGN_OR_RETURN(Migration m, FindMigration(id, true, ctx));
      if (m.outcome != MigrationOutcome::kInProgress) {
        return Err(Status::FailedPrecondition(
            fmt::format("{}: it already {}", ctx, MigrationOutcomeName(m.outcome))));
      }
      ESCDR_ASSIGN_OR_RETURN(
          auto v, Q("SELECT id, host_id FROM vms WHERE name = $1" + ForUpdate(), {m.vm}));
      ESCDR_ASSIGN_OR_RETURN(auto d, Q("SELECT id FROM hosts WHERE name = $1", {m.destination}));
      if (v.empty() || d.empty()) {
        return Err(Status::Internal(ctx + ": its VM or destination host is gone"));
      }
      const I64 vm_id = v.Int(0, 0), src_id = v.Int(0, 1), dst_id = d.Int(0, 0);
      const I64 mem = Signed(m.memory_mib), cpu = I64{m.vcpus};
      ESCDR_RETURN_IF_ERROR(LockHosts({src_id, dst_id}));
      const std::string now(Now());
      if (outcome == MigrationOutcome::kSucceeded) {
        ESCDR_RETURN_IF_ERROR(StatusOf(
            Q("UPDATE hosts SET memory_used_mib = memory_used_mib - $2, vcpus_used = vcpus_used "
              "- $3, vm_count = vm_count - 1 WHERE id = $1",
              {src_id, mem, cpu})));
        ESCDR_RETURN_IF_ERROR(StatusOf(
            Q("UPDATE hosts SET memory_reserved_mib = memory_reserved_mib - $2, vcpus_reserved = "
              "vcpus_reserved - $3, vm_count = vm_count + 1 WHERE id = $1",
              {dst_id, mem, cpu})));
        // The VM now runs the migration's series ("" for a migration begun
        // before schema 2: unknown, so unchanged).
        const bool new_series = !m.qemu_version.empty();
        ESCDR_RETURN_IF_ERROR(StatusOf(
            Q(new_series ? "UPDATE vms SET host_id = $2, state = 'running', updated_at = $3, "
                           "qemu_version = $4 WHERE id = $1"
                         : "UPDATE vms SET host_id = $2, state = 'running', updated_at = $3 "
                           "WHERE id = $1",
              {vm_id, dst_id, now, StoredRunSeries(m.kind, m.qemu_version)})));
      } else {
        ESCDR_RETURN_IF_ERROR(StatusOf(
            Q("UPDATE hosts SET memory_used_mib = memory_used_mib - $2, vcpus_used = vcpus_used "
              "- $3, memory_reserved_mib = memory_reserved_mib - $2, vcpus_reserved = "
              "vcpus_reserved - $3 WHERE id = $1",
              {dst_id, mem, cpu})));
        ESCDR_RETURN_IF_ERROR(StatusOf(
            Q("UPDATE vms SET state = 'running', updated_at = $2 WHERE id = $1", {vm_id, now})));
      }
      const MigrationFigures& f = figures;
      ESCDR_RETURN_IF_ERROR(StatusOf(Q(
          "UPDATE migrations SET outcome = $2, bytes_on_wire = $3, bytes_saved_position = $4, "
          "bytes_saved_content = $5, fallback_pages = $6, total_ms = $7, downtime_ms = $8, "
          "error = $9, finished_at = $10 WHERE id = $1",
          {id, std::string_view(MigrationOutcomeName(outcome)), Signed(f.bytes_on_wire),
           Signed(f.bytes_saved_position), Signed(f.bytes_saved_content), Signed(f.fallback_pages),
           Signed(f.total_ms), Signed(f.downtime_ms), f.error, now})));
      return FindMigration(id, false, ctx);
    });
  }

  Result<Migration> GetMigration(std::int64_t id) override {
    return Tx(false, [&]() { return FindMigration(id, false, "cannot show migration"); });
  }

  Result<std::vector<Migration>> ListMigrations(const MigrationFilter& filter) override {
    return Tx(false, [&]() -> Result<std::vector<Migration>> {
      std::string sql = "SELECT " + kMigrationCols + kMigrationFrom + " WHERE 1 = 1";
      if (!filter.vm.empty()) sql += " AND m.vm = $1";
      if (filter.in_progress_only) sql += " AND m.outcome = 'in-progress'";
      sql += " ORDER BY m.id DESC";
      if (filter.limit > 0) sql += " LIMIT $2";
      ESCDR_ASSIGN_OR_RETURN(auto rows, Q(sql, {filter.vm, Signed(filter.limit)}));
      std::vector<Migration> out;
      for (std::size_t r = 0; r < rows.rows.size(); ++r) out.push_back(ParseMigration(rows, r));
      return out;
    });
  }

  // ------------------------------------------------------------------ links

  Status SetLink(const Link& link) override {
    const std::string ctx = fmt::format("cannot set link {} - {}", link.a, link.b);
    if (link.a.empty() || link.b.empty()) {
      return Status::InvalidArgument(ctx + ": a link needs two named ends");
    }
    if (link.a == link.b) return Status::InvalidArgument(ctx + ": a link cannot be a loop");
    if (link.cost == 0 || link.cost > (std::uint64_t{1} << 48)) {
      return Status::InvalidArgument(ctx + ": the cost must be between 1 and 2^48");
    }
    const auto& [a, b] = std::minmax(link.a, link.b);
    return Tx(true, [&]() -> Status {
      return StatusOf(Q("INSERT INTO links (a, b, cost) VALUES ($1, $2, $3) "
                        "ON CONFLICT (a, b) DO UPDATE SET cost = excluded.cost",
                        {a, b, Signed(link.cost)}))
          .WithContext(ctx);
    });
  }

  Status RemoveLink(std::string_view a0, std::string_view b0) override {
    const auto& [a, b] = std::minmax(a0, b0);
    return Tx(true, [&]() -> Status {
      ESCDR_ASSIGN_OR_RETURN(auto rows, Q("DELETE FROM links WHERE a = $1 AND b = $2", {a, b}));
      if (rows.affected == 0) {
        return Status::NotFound(fmt::format("cannot remove link {} - {}: no such link", a0, b0));
      }
      return Status::OK();
    });
  }

  Result<std::vector<Link>> ListLinks() override {
    return Tx(false, [&]() { return LoadLinks(); });
  }

  // --------------------------------------------------------------- catalogs

  Status PutCatalog(const VmKind& kind, const std::string& bytes) override {
    const std::string ctx = "cannot store the catalog of " + kind.ToString();
    if (Status s = kind.Validate(); !s.ok()) return s.WithContext(ctx);
    return Tx(true, [&]() -> Status {
      KindCache kinds;
      ESCDR_ASSIGN_OR_RETURN(I64 kind_id, kinds.Get(*this, kind, true));
      return StatusOf(Q("INSERT INTO catalogs (kind_id, bytes, size_bytes, created_at) "
                        "VALUES ($1, $2, $3, $4) ON CONFLICT (kind_id) DO UPDATE SET "
                        "bytes = excluded.bytes, size_bytes = excluded.size_bytes, "
                        "created_at = excluded.created_at",
                        {kind_id, Blob{bytes}, static_cast<I64>(bytes.size()), Now()}))
          .WithContext(ctx);
    });
  }

  Result<std::string> GetCatalog(const VmKind& kind) override {
    return Tx(false, [&]() -> Result<std::string> {
      ESCDR_ASSIGN_OR_RETURN(
          auto rows, Q("SELECT c.bytes FROM catalogs c JOIN kinds k ON k.id = c.kind_id WHERE "
                       "k.os = $1 AND k.os_version = $2 AND k.hypervisor = $3 AND "
                       "k.hypervisor_version = $4",
                       {kind.os, kind.os_version, kind.hypervisor, kind.hypervisor_version}));
      if (rows.empty()) return Err(Status::NotFound("no catalog for " + kind.ToString()));
      return rows.Text(0, 0);
    });
  }

  Result<std::vector<StoredCatalogInfo>> ListCatalogs() override {
    return Tx(false, [&]() -> Result<std::vector<StoredCatalogInfo>> {
      ESCDR_ASSIGN_OR_RETURN(
          auto rows, Q("SELECT k.os, k.os_version, k.hypervisor, k.hypervisor_version, "
                       "c.size_bytes, c.created_at FROM catalogs c JOIN kinds k ON k.id = "
                       "c.kind_id ORDER BY k.os, k.os_version, k.hypervisor, "
                       "k.hypervisor_version"));
      std::vector<StoredCatalogInfo> out;
      for (std::size_t r = 0; r < rows.rows.size(); ++r) {
        out.push_back({{rows.Text(r, 0), rows.Text(r, 1), rows.Text(r, 2), rows.Text(r, 3)},
                       U64(rows, r, 4),
                       rows.Text(r, 5)});
      }
      return out;
    });
  }

  Status RemoveCatalog(const VmKind& kind) override {
    return Tx(true, [&]() -> Status {
      ESCDR_ASSIGN_OR_RETURN(
          auto rows, Q("DELETE FROM catalogs WHERE kind_id IN (SELECT id FROM kinds WHERE "
                       "os = $1 AND os_version = $2 AND hypervisor = $3 AND "
                       "hypervisor_version = $4)",
                       {kind.os, kind.os_version, kind.hypervisor, kind.hypervisor_version}));
      if (rows.affected == 0) {
        return Status::NotFound("cannot remove the catalog of " + kind.ToString() +
                                ": there is none");
      }
      return Status::OK();
    });
  }

 private:
  // Kind ids looked up (or created) within one transaction.
  class KindCache {
   public:
    // The id of `kind`; 0 if it has none and !create.
    Result<I64> Get(SqlInventory& inv, const VmKind& kind, bool create) {
      if (auto it = ids_.find(kind); it != ids_.end()) return it->second;
      const std::string sel =
          "SELECT id FROM kinds WHERE os = $1 AND os_version = $2 AND hypervisor = $3 AND "
          "hypervisor_version = $4";
      ESCDR_ASSIGN_OR_RETURN(auto rows, inv.Q(sel, {kind.os, kind.os_version, kind.hypervisor,
                                                    kind.hypervisor_version}));
      if (rows.empty() && create) {
        ESCDR_RETURN_IF_ERROR(StatusOf(
            inv.Q("INSERT INTO kinds (os, os_version, hypervisor, hypervisor_version) VALUES "
                  "($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                  {kind.os, kind.os_version, kind.hypervisor, kind.hypervisor_version})));
        ESCDR_ASSIGN_OR_RETURN(rows, inv.Q(sel, {kind.os, kind.os_version, kind.hypervisor,
                                                 kind.hypervisor_version}));
      }
      const I64 id = rows.empty() ? 0 : rows.Int(0, 0);
      if (id != 0) ids_.emplace(kind, id);
      return id;
    }

   private:
    std::map<VmKind, I64> ids_;
  };

  // Runs `fn` in a transaction, retrying the whole of it on kAborted, and
  // once on a connection lost before COMMIT was sent (the server restarted
  // since this connection's last use: nothing of the transaction was
  // applied, and the retry's Begin reconnects). A connection lost during
  // COMMIT is returned: whether the transaction was applied is unknown.
  template <typename Fn>
  auto Tx(bool write, Fn&& fn, I64 advisory_lock = 0) -> decltype(fn()) {
    std::lock_guard<std::mutex> lock(mu_);
    bool reconnected = false;
    for (int attempt = 1;; ++attempt) {
      bool committing = false;
      Status s = db_->Begin(write, advisory_lock);
      if (s.ok()) {
        auto r = fn();
        s = StatusOfAny(r);
        if (s.ok()) {
          committing = true;
          s = db_->Commit();
          if (s.ok()) return r;
        }
      }
      db_->Rollback();
      if (s.code() == StatusCode::kUnavailable && !committing && !reconnected &&
          attempt < kMaxAttempts) {
        reconnected = true;
        continue;
      }
      if (s.code() != StatusCode::kAborted || attempt >= kMaxAttempts) return Err(s);
      // Back off a little, with jitter, so that retrying writers spread out.
      thread_local std::minstd_rand rng(std::random_device{}());
      std::this_thread::sleep_for(std::chrono::milliseconds(
          std::uniform_int_distribution<int>(1, 5 << attempt)(rng)));
    }
  }

  Result<SqlRows> Q(const std::string& sql, std::initializer_list<SqlParam> params = {}) {
    return db_->Query(sql, params);
  }

  std::string ForUpdate() const {
    return db_->dialect() == Dialect::kPostgres ? " FOR UPDATE" : "";
  }

  // Timestamps are strings: SqlParam holds a view, so keep the text alive.
  std::string_view Now() {
    now_ = NowIso8601();
    return now_;
  }

  // Locks host rows in id order (PostgreSQL; SQLite already holds the
  // database write lock), so two transactions never wait on each other.
  Status LockHosts(std::vector<I64> ids) {
    if (db_->dialect() != Dialect::kPostgres) return Status::OK();
    std::sort(ids.begin(), ids.end());
    for (I64 id : ids) {
      ESCDR_RETURN_IF_ERROR(StatusOf(Q("SELECT id FROM hosts WHERE id = $1 FOR UPDATE", {id})));
    }
    return Status::OK();
  }

  Result<HostRow> FindHost(std::string_view name, bool lock, const std::string& ctx) {
    ESCDR_ASSIGN_OR_RETURN(
        auto rows,
        Q("SELECT " + kHostCols + " FROM hosts h WHERE h.name = $1" + (lock ? ForUpdate() : ""),
          {name}));
    if (rows.empty()) return Err(Status::NotFound(fmt::format("{}: no host named {}", ctx, name)));
    return ParseHost(rows, 0);
  }

  Result<Vm> FindVm(std::string_view name, const std::string& ctx) {
    ESCDR_ASSIGN_OR_RETURN(auto rows, Q("SELECT " + kVmCols + kVmFrom + " WHERE v.name = $1",
                                        {name}));
    if (rows.empty()) return Err(Status::NotFound(fmt::format("{}: no VM named {}", ctx, name)));
    return ParseVm(rows, 0);
  }

  Result<Migration> FindMigration(I64 id, bool lock, const std::string& ctx) {
    // FOR UPDATE OF: lock the migration row only, not its kind.
    ESCDR_ASSIGN_OR_RETURN(
        auto rows, Q("SELECT " + kMigrationCols + kMigrationFrom + " WHERE m.id = $1" +
                         (lock && db_->dialect() == Dialect::kPostgres ? " FOR UPDATE OF m" : ""),
                     {id}));
    if (rows.empty()) return Err(Status::NotFound(fmt::format("{}: no migration {}", ctx, id)));
    return ParseMigration(rows, 0);
  }

  Status CheckVmNameFree(std::string_view name, const std::string& ctx) {
    ESCDR_ASSIGN_OR_RETURN(auto rows, Q("SELECT 1 FROM vms WHERE name = $1", {name}));
    if (!rows.empty()) return Status::AlreadyExists(ctx + ": a VM of that name already exists");
    return Status::OK();
  }

  Status InsertHost(const HostSpec& spec, const std::string& ctx) {
    Status s = StatusOf(Q("INSERT INTO hosts (name, agent_address, rack, pod, memory_total_mib, "
                          "vcpus_total, state, created_at, qemu_versions) VALUES ($1, $2, $3, $4, "
                          "$5, $6, 'up', $7, $8)",
                          {spec.name, spec.agent_address, spec.rack, spec.pod,
                           Signed(spec.memory_mib), I64{spec.vcpus}, Now(),
                           QemuVersionsColumn(spec.qemu_versions)}));
    return s.ok() ? s : Duplicate(s, ctx, "a host of that name");
  }

  // Inserts the VM on host `h` (locked by the caller) and takes its room.
  Status InsertVm(const VmSpec& spec, const HostRow& h, KindCache& kinds, const std::string& ctx) {
    const VmDemand demand{spec.memory_mib, spec.vcpus};
    if (!HostRunsQemuSeries(h.host, RunSeries(spec))) {
      return Status::FailedPrecondition(
          fmt::format("{}: {}", ctx, NoSeries(h.host, "host", RunSeries(spec))));
    }
    if (std::string why = RoomShortage(h.host, demand); !why.empty()) {
      return Status::ResourceExhausted(
          fmt::format("{}: host {} has no room ({})", ctx, h.host.name, why));
    }
    ESCDR_ASSIGN_OR_RETURN(I64 kind_id, kinds.Get(*this, spec.kind, true));
    const std::string now = NowIso8601();
    Status s = StatusOf(Q(
        "INSERT INTO vms (name, host_id, kind_id, memory_mib, vcpus, state, launch_spec, "
        "ram_path, created_at, updated_at, qemu_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
        "$9, $9, $10)",
        {spec.name, h.id, kind_id, Signed(spec.memory_mib), I64{spec.vcpus},
         std::string_view(VmStateName(spec.state)), spec.launch_spec, spec.ram_path, now,
         StoredRunSeries(spec.kind, spec.qemu_version)}));
    if (!s.ok()) return Duplicate(s, ctx, "a VM of that name");
    // The WHERE clause repeats the room check so that the database itself
    // refuses an over-commit even if the row was not locked.
    ESCDR_ASSIGN_OR_RETURN(
        auto upd, Q("UPDATE hosts SET memory_used_mib = memory_used_mib + $2, vcpus_used = "
                    "vcpus_used + $3, vm_count = vm_count + 1 WHERE id = $1 AND "
                    "memory_total_mib - memory_used_mib >= $2 AND vcpus_total - vcpus_used >= $3",
                    {h.id, Signed(spec.memory_mib), I64{spec.vcpus}}));
    if (upd.affected != 1) {
      return Status::Aborted(ctx + ": host " + h.host.name + " filled up concurrently");
    }
    return Status::OK();
  }

  // The error for "no host can take this VM": too big for any host, no host
  // that is up runs QEMU `series`, or no room anywhere right now.
  Status NoRoom(const VmDemand& d, std::string_view series, const std::string& ctx) {
    auto rows = Q("SELECT count(*), max(h.memory_total_mib), max(h.vcpus_total), "
                  "sum(CASE WHEN h.state = 'up' THEN 1 ELSE 0 END), sum(CASE WHEN h.state = 'up' "
                  "AND " + RunsSeriesSql(1) + " THEN 1 ELSE 0 END) FROM hosts h",
                  {SeriesParam(series)});
    if (!rows) return rows.error();
    const I64 hosts = rows->Int(0, 0);
    if (hosts == 0) return Status::ResourceExhausted(ctx + ": the inventory has no hosts");
    const std::uint64_t max_mem = U64(*rows, 0, 1);
    const std::uint32_t max_cpu = U32(*rows, 0, 2);
    if (d.memory_mib > max_mem || d.vcpus > max_cpu) {
      return Status::InvalidArgument(fmt::format(
          "{}: it needs {} MiB and {} vCPUs, more than any host has (largest: {} MiB, {} vCPUs)",
          ctx, d.memory_mib, d.vcpus, max_mem, max_cpu));
    }
    const I64 up = rows->Int(0, 3), up_with_series = rows->Int(0, 4);
    if (up > 0 && up_with_series == 0) {
      return Status::FailedPrecondition(
          fmt::format("{}: no host that is up runs QEMU {}", ctx, series));
    }
    return Status::ResourceExhausted(fmt::format(
        "{}: no host has room for {} MiB and {} vCPUs ({} of {} hosts up{})", ctx, d.memory_mib,
        d.vcpus, up, hosts,
        up_with_series < up ? fmt::format(", {} of them with QEMU {}", up_with_series, series)
                            : ""));
  }

  // FailedPrecondition if `target` is an older QEMU series than `run`.
  static Status CheckNotDowngrade(std::string_view run, std::string_view target,
                                  const std::string& ctx) {
    if (IsQemuVersion(run) && IsQemuVersion(target) && CompareQemuVersions(target, run) < 0) {
      return Status::FailedPrecondition(fmt::format(
          "{}: QEMU cannot migrate a VM from {} to older {}", ctx, run, target));
    }
    return Status::OK();
  }

  // Hosts that run VMs of kind `kind_id`, with the count per host.
  Result<std::unordered_map<I64, std::uint32_t>> KindCounts(I64 kind_id) {
    std::unordered_map<I64, std::uint32_t> out;
    if (kind_id == 0) return out;
    ESCDR_ASSIGN_OR_RETURN(auto rows,
                           Q("SELECT host_id, count(*) FROM vms WHERE kind_id = $1 GROUP BY "
                             "host_id",
                             {kind_id}));
    for (std::size_t r = 0; r < rows.rows.size(); ++r) out[rows.Int(r, 0)] = U32(rows, r, 1);
    return out;
  }

  // One round trip: the kind's id (0 if unknown), the number of hosts, and
  // whether a VM named `vm` exists.
  struct KindAndHosts {
    I64 kind_id = 0;
    std::uint64_t hosts = 0;
    bool vm_exists = false;
  };
  Result<KindAndHosts> LookUpKind(const VmKind& kind, std::string_view vm) {
    ESCDR_ASSIGN_OR_RETURN(
        auto rows, Q("SELECT (SELECT id FROM kinds WHERE os = $1 AND os_version = $2 AND "
                     "hypervisor = $3 AND hypervisor_version = $4), (SELECT count(*) FROM hosts), "
                     "(SELECT count(*) FROM vms WHERE name = $5)",
                     {kind.os, kind.os_version, kind.hypervisor, kind.hypervisor_version, vm}));
    return KindAndHosts{rows.Int(0, 0), U64(rows, 0, 1), rows.Int(0, 2) > 0};
  }

  Result<I64> CreateKind(const VmKind& kind) {
    KindCache kinds;
    return kinds.Get(*this, kind, /*create=*/true);
  }

  // Candidate hosts for a new VM, gathered with indexed queries, then
  // ranked. `ids` receives the host ids, parallel to plan.candidates.
  Result<PlacementPlan> GatherPlacement(I64 kind_id, std::uint64_t hosts_total,
                                        const VmDemand& demand, const PlacementOptions& options,
                                        std::string_view series, std::vector<I64>& ids) {
    PlacementPlan plan;
    plan.hosts_total = hosts_total;
    plan.qemu_series = std::string(series);
    // Up, with room, and running the series ($5).
    const std::string room = kHasRoom + " AND " + RunsSeriesSql(5);
    const std::string series_param = SeriesParam(series);
    const I64 mem = Signed(demand.memory_mib), cpu = I64{demand.vcpus};
    const I64 k = static_cast<I64>(std::max<std::size_t>(1, options.candidates_per_group));
    std::unordered_set<I64> seen;
    auto add_rows = [&](const SqlRows& rows, bool with_count) {
      for (std::size_t r = 0; r < rows.rows.size(); ++r) {
        HostRow h = ParseHost(rows, r);
        if (!seen.insert(h.id).second) continue;
        ids.push_back(h.id);
        plan.candidates.push_back(ToView(h.host, with_count ? U32(rows, r, kHostColCount) : 0));
      }
    };
    switch (options.policy) {
      case PlacementPolicy::kSpread: {
        // The least loaded hosts with room and no VM of the kind: walks the
        // (state, load_factor, name) index, probes (kind_id, host_id) for
        // each host, and stops after k.
        ESCDR_ASSIGN_OR_RETURN(
            auto free, Q("SELECT " + kHostCols + " FROM hosts h WHERE " + room +
                             " AND NOT EXISTS (SELECT 1 FROM vms v WHERE v.kind_id = $1 AND "
                             "v.host_id = h.id) ORDER BY h.load_factor, h.name LIMIT $4",
                         {kind_id, mem, cpu, k, series_param}));
        add_rows(free, false);
        // Only when every host with room runs the kind (or to explain):
        // those running the fewest VMs of it (the kind's index entries only).
        if ((free.empty() || options.explain) && kind_id != 0) {
          ESCDR_ASSIGN_OR_RETURN(
              auto same, Q("SELECT " + kHostCols + ", c.n FROM (SELECT host_id, count(*) AS n "
                           "FROM vms WHERE kind_id = $1 GROUP BY host_id) c JOIN hosts h ON "
                           "h.id = c.host_id WHERE " + room +
                               " ORDER BY c.n, h.load_factor, h.name LIMIT $4",
                           {kind_id, mem, cpu, k, series_param}));
          add_rows(same, true);
        }
        break;
      }
      case PlacementPolicy::kPack: {
        ESCDR_ASSIGN_OR_RETURN(
            auto rows, Q("SELECT " + kHostCols + " FROM hosts h WHERE " + room +
                             " ORDER BY h.load_factor DESC, h.name LIMIT $4",
                         {kind_id, mem, cpu, k, series_param}));
        add_rows(rows, false);
        break;
      }
      case PlacementPolicy::kRandom: {
        // Every host with room: a uniform draw needs them all.
        ESCDR_ASSIGN_OR_RETURN(auto rows,
                               Q("SELECT " + kHostCols + " FROM hosts h WHERE " + room,
                                 {kind_id, mem, cpu, k, series_param}));
        add_rows(rows, false);
        break;
      }
    }
    if (options.policy != PlacementPolicy::kSpread) {
      ESCDR_ASSIGN_OR_RETURN(auto counts, KindCounts(kind_id));
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (auto it = counts.find(ids[i]); it != counts.end()) {
          plan.candidates[i].same_kind_vms = it->second;
        }
      }
    }
    plan.decision = ChoosePlacement(plan.candidates, demand, options.policy, options.seed);
    return plan;
  }

  Result<std::vector<Link>> LoadLinks() {
    ESCDR_ASSIGN_OR_RETURN(auto rows, Q("SELECT a, b, cost FROM links ORDER BY a, b"));
    std::vector<Link> out;
    for (std::size_t r = 0; r < rows.rows.size(); ++r) {
      out.push_back({rows.Text(r, 0), rows.Text(r, 1), U64(rows, r, 2)});
    }
    return out;
  }

  // Candidate destinations for VM `name`, gathered tier by tier along the
  // rack/pod hierarchy so that a decision reads tens of hosts, not every
  // host that runs the kind:
  //   1. every host in the source's rack, with its count of donors;
  //   2. if none of them is an eligible donor: the least loaded eligible
  //      donors in the source's pod;
  //   3. if still none: the donors anywhere, eligible ones first, nearest
  //      then least loaded (from the kind's VMs in the (kind_id, state,
  //      host_id, name) index; the ineligible ones explain why none fits);
  //   4. if no donor is eligible at all, the least loaded hosts with room in
  //      the pod, then anywhere (the "no donor" fallback).
  // Each tier is only reached when the cheaper ones cannot hold the winner,
  // so the ranking over the candidates equals the ranking over all hosts.
  // With a link graph, path costs ignore racks: every host with room.
  // Every tier only reads hosts that run QEMU `qemu_series` ("" = the VM's
  // run series), so the other hosts are never candidates.
  Result<DestinationPlan> GatherDestination(std::string_view name, std::string_view qemu_series) {
    const std::string ctx = fmt::format("cannot choose a destination for VM {}", name);
    ESCDR_ASSIGN_OR_RETURN(
        auto v, Q("SELECT v.id, v.host_id, v.kind_id, v.memory_mib, v.vcpus, k.os, "
                  "k.os_version, k.hypervisor, k.hypervisor_version, (SELECT count(*) FROM "
                  "hosts), (SELECT count(*) FROM links), v.qemu_version, " + kHostCols +
                      " FROM vms v JOIN kinds k ON k.id = v.kind_id JOIN hosts h ON h.id = "
                      "v.host_id WHERE v.name = $1",
                  {name}));
    if (v.empty()) return Err(Status::NotFound(ctx + ": no such VM"));
    DestinationPlan plan;
    plan.vm = std::string(name);
    const I64 vm_id = v.Int(0, 0), source_id = v.Int(0, 1), kind_id = v.Int(0, 2);
    plan.demand = {U64(v, 0, 3), U32(v, 0, 4)};
    plan.kind = {v.Text(0, 5), v.Text(0, 6), v.Text(0, 7), v.Text(0, 8)};
    plan.hosts_total = U64(v, 0, 9);
    plan.link_graph = v.Int(0, 10) > 0;
    plan.run_series = v.Text(0, 11).empty() ? plan.kind.hypervisor_version : v.Text(0, 11);
    plan.qemu_series = qemu_series.empty() ? plan.run_series : std::string(qemu_series);
    ESCDR_RETURN_IF_ERROR(CheckNotDowngrade(plan.run_series, plan.qemu_series, ctx));
    const HostRow source = ParseHost(v, 0, 12);
    plan.source = source.host.name;
    plan.candidates.push_back(ToView(source.host, 0));
    std::vector<std::string> donors = {""};  // parallel to candidates
    std::unordered_set<I64> seen = {source.id};
    bool eligible_donor = false, eligible_any = false;
    auto add_rows = [&](const SqlRows& rows, bool with_donors) {
      for (std::size_t r = 0; r < rows.rows.size(); ++r) {
        HostRow h = ParseHost(rows, r);
        if (!seen.insert(h.id).second) continue;
        const std::uint32_t n = with_donors ? U32(rows, r, kHostColCount) : 0;
        const bool fits = h.host.state == HostState::kUp &&
                          RoomShortage(h.host, plan.demand).empty();
        eligible_any = eligible_any || fits;
        eligible_donor = eligible_donor || (fits && n > 0);
        plan.candidates.push_back(ToView(h.host, n));
        donors.push_back(with_donors ? rows.Text(r, kHostColCount + 1) : "");
      }
    };
    const std::string& pod = source.host.pod;
    const std::string& rack = source.host.rack;
    const I64 k = 8;
    const std::string runs_series = RunsSeriesSql(9);
    const std::string room =
        "h.state = 'up' AND h.memory_total_mib - h.memory_used_mib >= $6 AND "
        "h.vcpus_total - h.vcpus_used >= $7 AND " + runs_series;
    const std::string series_param = SeriesParam(plan.qemu_series);
    const std::string donor_of_h =
        " FROM vms v WHERE v.kind_id = $1 AND v.state = 'running' AND v.host_id = h.id AND "
        "v.id <> $2)";
    const std::string with_donors = "SELECT " + kHostCols + ", (SELECT count(*)" + donor_of_h +
                                    " AS n, (SELECT min(v.name)" + donor_of_h + " AS donor";
    auto query = [&](const std::string& sql) {
      return Q(sql, {kind_id, vm_id, pod, rack, source_id, Signed(plan.demand.memory_mib),
                     I64{plan.demand.vcpus}, k, series_param});
    };
    std::unique_ptr<PathCost> cost;
    if (plan.link_graph) {
      ESCDR_ASSIGN_OR_RETURN(std::vector<Link> links, LoadLinks());
      std::vector<LinkGraphPathCost::Link> graph;
      for (const Link& l : links) graph.push_back({l.a, l.b, l.cost});
      ESCDR_ASSIGN_OR_RETURN(auto g, LinkGraphPathCost::Create(graph));
      cost = std::make_unique<LinkGraphPathCost>(std::move(g));
      ESCDR_ASSIGN_OR_RETURN(auto all,
                             query(with_donors + " FROM hosts h WHERE h.id <> $5 AND " + room));
      add_rows(all, true);
    } else {
      cost = std::make_unique<HierarchicalPathCost>();
      if (!pod.empty() && !rack.empty()) {
        ESCDR_ASSIGN_OR_RETURN(auto in_rack,
                               query(with_donors + " FROM hosts h WHERE h.pod = $3 AND h.rack = "
                                                   "$4 AND h.id <> $5 AND " + runs_series));
        add_rows(in_rack, true);
      }
      if (!eligible_donor && !pod.empty()) {
        ESCDR_ASSIGN_OR_RETURN(
            auto in_pod, query("SELECT * FROM (" + with_donors + ", h.load_factor AS lf FROM "
                               "hosts h WHERE h.pod = $3 AND h.id <> $5 AND " + room +
                               ") t WHERE t.n > 0 ORDER BY t.lf, t.name LIMIT $8"));
        add_rows(in_pod, true);
      }
      if (!eligible_donor) {
        ESCDR_ASSIGN_OR_RETURN(
            auto anywhere,
            query("SELECT " + kHostCols + ", c.n, c.donor FROM (SELECT host_id, count(*) AS n, "
                  "min(name) AS donor FROM vms WHERE kind_id = $1 AND state = 'running' AND id "
                  "<> $2 GROUP BY host_id) c JOIN hosts h ON h.id = c.host_id WHERE h.id <> $5 "
                  "AND " + runs_series + " ORDER BY CASE WHEN " + room +
                  " THEN 0 ELSE 1 END, CASE WHEN $3 <> '' AND h.pod = $3 AND $4 <> '' AND "
                  "h.rack = $4 THEN 1 WHEN $3 <> '' AND h.pod = $3 "
                  "THEN 2 ELSE 4 END, h.load_factor, h.name LIMIT $8"));
        add_rows(anywhere, true);
      }
      if (!eligible_donor && !eligible_any && !pod.empty()) {
        ESCDR_ASSIGN_OR_RETURN(auto pod_any,
                               query("SELECT " + kHostCols + " FROM hosts h WHERE h.pod = $3 AND "
                                     "h.id <> $5 AND " + room +
                                     " ORDER BY h.load_factor, h.name LIMIT $8"));
        add_rows(pod_any, false);
      }
      if (!eligible_donor && !eligible_any) {
        ESCDR_ASSIGN_OR_RETURN(auto any, query("SELECT " + kHostCols + " FROM hosts h WHERE "
                                               "h.id <> $5 AND " + room +
                                               " ORDER BY h.load_factor, h.name LIMIT $8"));
        add_rows(any, false);
      }
    }
    plan.source_index = 0;
    plan.decision = ChooseDestination(plan.candidates, 0, plan.demand, *cost);
    if (plan.decision.chosen && plan.decision.has_donor) plan.donor = donors[*plan.decision.chosen];
    return plan;
  }

  std::mutex mu_;
  std::unique_ptr<SqlDb> db_;
  std::string now_;
};

}  // namespace

std::unique_ptr<Inventory> NewSqlInventory(std::unique_ptr<SqlDb> db) {
  return std::make_unique<SqlInventory>(std::move(db));
}

}  // namespace escdr::inventory_internal
