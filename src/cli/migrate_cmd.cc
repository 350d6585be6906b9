// `escdr migrate VM [--to HOST]`: one live migration, end to end
// (docs/cli-agent.md).
//
// The CLI drives the inventory side and the source agent does the rest:
// choose (or check) the destination, BeginMigration (reserves capacity there),
// migrate_out to the source agent (progress events stream back), then
// FinishMigration with the outcome and the figures: the VM moves only if the
// migration succeeded; otherwise the reservation is released and the VM stays
// where it was.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/inventory_access.h"
#include "cli/units.h"
#include "escdr/agent/agent_client.h"
#include "escdr/inventory/inventory.h"
#include "escdr/sys/clock.h"
#include "escdr/wire/codec.h"

namespace escdr::cli {
namespace {

using nlohmann::json;

std::atomic<bool> g_cancel{false};

void OnInterrupt(int) { g_cancel.store(true); }

struct MigrateArgs {
  std::string vm;
  std::string to;
  std::string donor;
  std::string qemu_version;  // "" = the series the VM runs on
  std::string destination_address;
  std::string max_bandwidth;
  std::string compress;
  int codec_threads = 0;
  std::string dedup_budget;
  bool no_escdr = false;
  bool keep_paused = false;
  bool keep_source = false;
  bool auto_converge = false;
  std::uint32_t downtime_limit_ms = 0;
  int timeout_s = 900;
  std::uint32_t window_pages = 0;
};

std::string Pct(double part, double whole) {
  return whole > 0 ? fmt::format("{:.1f}%", 100.0 * part / whole) : "-";
}

// The live line on a terminal; phase changes only, otherwise.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(bool enabled) : enabled_(enabled), tty_(::isatty(2) == 1) {}

  void Update(const agent::MigrationProgress& p) {
    if (!enabled_) return;
    if (!tty_) {
      if (p.phase != last_phase_) std::fprintf(stderr, "  %6.1f s  %s\n", p.elapsed_s, p.phase.c_str());
      last_phase_ = p.phase;
      return;
    }
    const double rate = p.elapsed_s > 0 ? p.wire_bytes_sent / p.elapsed_s : 0;
    std::string line = fmt::format(
        "\r  {:<13} {:6.1f} s  RAM {} / {}  pages {} (+{} zero)  wire {} ({}/s)  rounds {}",
        p.phase, p.elapsed_s, HumanBytes(static_cast<double>(p.ram_transferred)),
        HumanBytes(static_cast<double>(p.ram_total)), p.normal_pages, p.zero_pages,
        HumanBytes(static_cast<double>(p.wire_bytes_sent)), HumanBytes(rate), p.dirty_sync_count);
    std::fprintf(stderr, "%-120s", line.c_str());
    std::fflush(stderr);
    dirty_ = true;
  }

  void Done() {
    if (dirty_) std::fputs("\n", stderr);
    dirty_ = false;
  }

 private:
  bool enabled_;
  bool tty_;
  bool dirty_ = false;
  std::string last_phase_;
};

void PrintSummary(const Migration& m, const agent::MigrateOutResult& r, bool escdr) {
  const MigrationReport& rep = r.report;
  const double stream = static_cast<double>(rep.stream_bytes);
  const double wire = static_cast<double>(rep.wire_bytes_sent);
  std::printf("migrated %s from %s to %s (migration %lld%s) in %.2f s\n", m.vm.c_str(),
              m.source.c_str(), m.destination.c_str(), static_cast<long long>(m.id),
              r.donor.empty() ? ", no donor" : fmt::format(", donor {}", r.donor).c_str(),
              r.elapsed_s);
  if (!r.note.empty()) std::printf("  note: %s\n", r.note.c_str());
  Table t({"FIGURE", ">VALUE", ">SHARE"});
  t.AddRow({"bytes QEMU produced", HumanBytes(stream), "100%"});
  t.AddRow({"bytes on the wire (to destination)", HumanBytes(wire), Pct(wire, stream)});
  t.AddRow({"bytes on the wire (back)", HumanBytes(static_cast<double>(rep.wire_bytes_received)), ""});
  t.AddRow({"saved by position", HumanBytes(static_cast<double>(rep.bytes_saved_by_position())),
            Pct(static_cast<double>(rep.bytes_saved_by_position()), stream)});
  t.AddRow({"saved by content", HumanBytes(static_cast<double>(rep.bytes_saved_by_content())),
            Pct(static_cast<double>(rep.bytes_saved_by_content()), stream)});
  t.AddRow({"deduplicated in the migration",
            HumanBytes(static_cast<double>(rep.pages_deduplicated * kPageSize)),
            Pct(static_cast<double>(rep.pages_deduplicated * kPageSize), stream)});
  if (rep.codec_frame_bytes > 0) {
    t.AddRow({fmt::format("compressed ({})", rep.CodecLabel()),
              fmt::format("{} -> {}", HumanBytes(static_cast<double>(rep.codec_frame_bytes)),
                          HumanBytes(static_cast<double>(rep.codec_wire_bytes))),
              Pct(static_cast<double>(rep.codec_wire_bytes),
                  static_cast<double>(rep.codec_frame_bytes))});
  }
  t.AddRow({"full pages (PAGE records)", std::to_string(rep.page_records), ""});
  t.AddRow({"zero pages (ZERO records)", std::to_string(rep.zero_records), ""});
  t.AddRow({"pages from the donor", std::to_string(rep.pages_from_donor), ""});
  t.AddRow({"fallbacks (donor page changed)", std::to_string(rep.fallbacks), ""});
  t.AddRow({"window-full pages sent whole", std::to_string(rep.pages_window_full), ""});
  t.AddRow({"pre-copy rounds (QEMU)", std::to_string(r.qemu_rounds), ""});
  if (r.qemu_cpu_throttle_max > 0) {
    t.AddRow({"vCPU throttle, highest (auto-converge)",
              fmt::format("{}%", r.qemu_cpu_throttle_max), ""});
  }
  t.AddRow({"RAM sent while stopped (QEMU)", HumanBytes(static_cast<double>(r.qemu_downtime_bytes)),
            ""});
  t.AddRow({"total time", fmt::format("{:.2f} s", r.elapsed_s), ""});
  t.AddRow({"downtime (QEMU: stop to completion)", fmt::format("{} ms", r.qemu_downtime_ms), ""});
  if (rep.downtime_measured) {
    t.AddRow({"downtime (escdr: ram end to resumed)",
              fmt::format("{:.1f} ms", rep.downtime.count() / 1000.0), ""});
  }
  std::fputs(t.Render().c_str(), stdout);
  if (!escdr) std::printf("(--no-escdr: every page was sent in full, uncompressed)\n");
}

// How long the outcome of a migration that ran is retried while the
// inventory cannot record it (locked past its busy timeout, disk full,
// server down): the VMs already are where the outcome says, so giving up
// early would leave the inventory wrong (the VM on the wrong host, the
// reservation held, the migration open).
constexpr double kRecordRetrySeconds = 300;

// FinishMigration, retried every second for kRecordRetrySeconds on errors an
// outage gives (busy, I/O, unavailable, timeout); other errors are returned
// at once.
Result<Migration> RecordOutcome(Inventory& inv, std::int64_t id, MigrationOutcome outcome,
                                const MigrationFigures& f) {
  const auto started = MonotonicClock::now();
  bool warned = false;
  for (;;) {
    Result<Migration> r = inv.FinishMigration(id, outcome, f);
    if (r.has_value()) return r;
    const StatusCode c = r.error().code();
    const bool transient = c == StatusCode::kAborted || c == StatusCode::kIOError ||
                           c == StatusCode::kUnavailable || c == StatusCode::kTimeout;
    if (!transient || SecondsSince(started) > kRecordRetrySeconds) return r;
    if (!warned) {
      std::fprintf(stderr, "escdr: the inventory cannot record the migration (%s); retrying for %.0f s\n",
                   r.error().message().c_str(), kRecordRetrySeconds);
      warned = true;
    }
    ::sleep(1);
  }
}

void RunMigrate(const GlobalOptions& global, const MigrateArgs& a) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Vm vm = Unwrap(inv->GetVm(a.vm));
  if (vm.state != VmState::kRunning) {
    Fail(Status::FailedPrecondition(
        fmt::format("VM {} is {}, not running", vm.name, VmStateName(vm.state))));
  }
  // Before the inventory records a migration: missing credentials fail here.
  auto tls = Unwrap(global.AgentTls());
  std::string destination = a.to;
  if (destination.empty()) {
    DestinationPlan plan = Unwrap(inv->PlanDestination(a.vm, a.qemu_version));
    if (!plan.decision.chosen) {
      Fail(Status::ResourceExhausted(fmt::format("no host can take VM {} now", a.vm)));
    }
    destination = plan.candidates[*plan.decision.chosen].name;
    if (!global.json) {
      std::fprintf(stderr, "destination %s%s\n", destination.c_str(),
                   plan.decision.has_donor ? fmt::format(" (donor {})", plan.donor).c_str()
                                           : " (no host runs a donor: nothing will be saved)");
    }
  }
  Migration m = Unwrap(inv->BeginMigration(a.vm, destination, a.donor, a.qemu_version));
  const auto started = MonotonicClock::now();

  agent::MigrateOutRequest req;
  req.vm = a.vm;
  req.migration_id = m.id;
  req.destination_address = a.destination_address;
  req.escdr = !a.no_escdr;
  req.keep_paused = a.keep_paused;
  req.keep_source = a.keep_source;
  // A bad option fails the migration the inventory just began.
  auto give_up = [&](const Status& s) {
    (void)inv->FinishMigration(m.id, MigrationOutcome::kFailed,
                               MigrationFigures{.error = s.message()});
    Fail(s);
  };
  if (!a.max_bandwidth.empty()) {
    auto rate = ParseRate("--max-bandwidth", a.max_bandwidth);
    if (!rate.has_value()) give_up(rate.error());
    req.max_bandwidth = *rate;
  }
  if (!a.compress.empty()) {
    if (auto codec = wire::ParseCodecSpec(a.compress); !codec.has_value()) {
      give_up(Status::InvalidArgument("--compress " + codec.error().message()));
    }
    req.compress = a.compress;
  }
  req.codec_threads = a.codec_threads;
  if (!a.dedup_budget.empty()) {
    auto budget = ParseBytes("--dedup-budget", a.dedup_budget, /*allow_zero=*/true);
    if (!budget.has_value()) give_up(budget.error());
    const std::uint64_t most = std::uint64_t{wire::kMaxDedupPages} * kPageSize;
    if (*budget > most) {
      give_up(Status::InvalidArgument(fmt::format("--dedup-budget '{}' exceeds the protocol's {}",
                                                  a.dedup_budget, HumanBytes(double(most)))));
    }
    req.dedup_budget = *budget;
  }
  req.timeout = std::chrono::seconds(a.timeout_s);
  req.window_pages = a.window_pages;
  req.auto_converge = a.auto_converge;
  req.downtime_limit_ms = a.downtime_limit_ms;

  // Ctrl-C cancels the migration cleanly instead of killing the CLI midway.
  struct sigaction sa {};
  struct sigaction old_int {}, old_term {};
  sa.sa_handler = OnInterrupt;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  g_cancel = false;

  ProgressPrinter progress(!global.json);
  Result<agent::MigrateOutResult> result = Err(Status::Internal("not run"));
  auto source = inv->GetHost(vm.host);
  if (!source.has_value()) {
    result = Err(source.error());
  } else if (source->agent_address.empty()) {
    result = Err(Status::FailedPrecondition(fmt::format("host {} has no agent address", vm.host)));
  } else {
    agent::AgentClient client(source->agent_address, std::chrono::seconds(180), std::move(tls),
                              vm.host);
    result = client.MigrateOut(
        req, [&progress](const agent::MigrationProgress& p) { progress.Update(p); }, &g_cancel);
  }
  progress.Done();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);

  const auto total_ms = static_cast<std::uint64_t>(SecondsSince(started) * 1000);
  if (!result.has_value()) {
    MigrationFigures f;
    f.total_ms = total_ms;
    f.error = result.error().message();
    auto finished = RecordOutcome(*inv, m.id, MigrationOutcome::kFailed, f);
    Status err = result.error();
    if (!finished.has_value()) {
      err = Status(err.code(), fmt::format("{}; and the inventory could not record it: {}",
                                           err.message(), finished.error().message()));
    }
    Fail(err);
  }
  const MigrationReport& rep = result->report;
  MigrationFigures f;
  f.bytes_on_wire = rep.wire_bytes_sent;
  f.bytes_saved_position = rep.bytes_saved_by_position();
  f.bytes_saved_content = rep.bytes_saved_by_content();
  f.fallback_pages = rep.fallbacks;
  f.total_ms = total_ms;
  f.downtime_ms = std::max<std::uint64_t>(
      static_cast<std::uint64_t>(result->qemu_downtime_ms),
      static_cast<std::uint64_t>(rep.downtime.count() / 1000));
  auto finished = RecordOutcome(*inv, m.id, MigrationOutcome::kSucceeded, f);
  if (!finished.has_value()) {
    Fail(Status(finished.error().code(),
                fmt::format("VM {} was migrated to {}, but the inventory could not record it: {}; "
                            "it still places the VM on {} (migration {} stays in progress)",
                            a.vm, destination, finished.error().message(), vm.host, m.id)));
  }
  Migration done = *finished;
  if (!result->destination_vm.ram_path.empty()) {
    Status s = inv->SetVmLaunch(vm.name, vm.launch_spec, result->destination_vm.ram_path);
    if (!s.ok()) std::fprintf(stderr, "escdr: warning: %s\n", s.message().c_str());
  }
  if (global.json) {
    json doc = result->ToJson();
    doc["migration_id"] = done.id;
    doc["vm"] = done.vm;
    doc["source"] = done.source;
    doc["destination"] = done.destination;
    doc["total_ms"] = f.total_ms;
    doc["downtime_ms"] = f.downtime_ms;
    std::fputs(doc.dump(2).c_str(), stdout);
    std::fputc('\n', stdout);
  } else {
    PrintSummary(done, *result, req.escdr);
  }
}

void RegisterMigrateCommand(CLI::App& app, GlobalOptions& global) {
  auto a = std::make_shared<MigrateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "migrate", "Live-migrate a VM; pages a donor at the destination holds are not sent");
  cmd->add_option("VM", a->vm, "The VM to migrate")->required();
  cmd->add_option("--to", a->to, "Destination host (default: the placement module's choice)");
  cmd->add_option("--donor", a->donor, "Donor VM on the destination (default: the inventory's)");
  cmd->add_option("--qemu-version", a->qemu_version,
                  "QEMU series to run the VM on at the destination, e.g. 10.0 to upgrade a VM "
                  "of 7.2 (default: the one it runs on; never older)");
  cmd->add_flag("--no-escdr", a->no_escdr,
                "Elide, deduplicate and compress nothing: the same path as a plain migration, "
                "for comparison");
  cmd->add_flag("--keep-paused", a->keep_paused, "Leave the VM paused at the destination");
  cmd->add_flag("--keep-source", a->keep_source,
                "Keep the finished source QEMU (postmigrate) and its RAM file, e.g. to compare");
  cmd->add_option("--max-bandwidth", a->max_bandwidth,
                  "Rate cap on the connection between the agents, bytes/s or with K, M, G "
                  "(default 128M, QEMU's own default); QEMU's cap is lifted, so bytes escdr "
                  "saves become time");
  cmd->add_option("--compress", a->compress,
                  "Wire codec for what still travels: none, zstd, zstd:LEVEL or lz4 (default "
                  "zstd:1). escdr compresses on the wire itself: QEMU's compress and multifd "
                  "capabilities stay off");
  cmd->add_option("--codec-threads", a->codec_threads,
                  "Threads that compress on the source agent (default 2)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--dedup-budget", a->dedup_budget,
                  "In-migration dedup history on each side, bytes or with K, M, G (default 16M; "
                  "0 = off): a page already sent within it travels as a back-reference");
  cmd->add_option("--downtime-limit", a->downtime_limit_ms,
                  "QEMU's downtime limit in ms: the longest pause it aims for when it stops "
                  "the guest to send the rest (default 300)")
      ->check(CLI::Range(1u, agent::MigrateOutRequest::kMaxDowntimeLimitMs));
  cmd->add_flag("--auto-converge", a->auto_converge,
                "Let QEMU throttle the guest's vCPUs when it dirties memory faster than the "
                "migration sends it, so that a busy guest converges (it runs slower meanwhile)");
  cmd->add_option("--destination-address", a->destination_address,
                  "Reach the destination agent at host:port instead of its inventory address "
                  "(a tunnel or relay)");
  cmd->add_option("--timeout", a->timeout_s, "Give up after this many seconds (default 900)");
  cmd->add_option("--window", a->window_pages,
                  "Elided pages in flight before the destination acknowledges them "
                  "(bounds how far the destination falls behind; default: the agent's)");
  cmd->callback([&global, a] { RunMigrate(global, *a); });
}

}  // namespace

ESCDR_REGISTER_COMMAND(RegisterMigrateCommand);

}  // namespace escdr::cli
