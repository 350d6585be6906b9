// Report: the figures of simulation runs, as tables, JSON, CSV and plots.
//
// RunSummary condenses one run: migrations, the share that found a donor,
// bytes on the network in total and per link tier, and the distribution
// (p50/p95/p99) of migration time and downtime. Per-tier bytes count each
// migration's wire bytes once for every tier its route crossed: every
// migration crosses the host tier (its source's and destination's NICs), one
// between racks also the rack-uplink tier, one between pods also the core.
// Percentiles use the nearest-rank method on the sorted values.
//
// WriteReport(dir) writes summary.md (the page to read first), results.json,
// migrations.csv and SVG plots made with gnuplot, when gnuplot is installed
// (otherwise summary.md says the plots are missing and why).
//
// Thread safety: pure functions, except WriteReport, which writes files.
#ifndef ESCDR_SIM_REPORT_H_
#define ESCDR_SIM_REPORT_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/sim/scenario.h"
#include "escdr/sim/simulator.h"

namespace escdr::sim {

struct Percentiles {
  double p50 = 0, p95 = 0, p99 = 0, mean = 0, max = 0;
};
// Nearest-rank percentiles of `values` (any order); all zero when empty.
Percentiles ComputePercentiles(std::vector<double> values);

enum Tier { kHostTier = 0, kRackTier = 1, kCoreTier = 2 };

struct RunSummary {
  PlacementPolicy policy = PlacementPolicy::kSpread;
  bool escdr = false;
  std::uint64_t migrations = 0;
  std::uint64_t with_donor = 0;
  std::uint64_t no_room = 0;
  std::uint64_t non_converged = 0;
  std::uint64_t stream_bytes = 0;  // what plain pre-copy would send for these migrations
  std::uint64_t wire_bytes = 0;    // what crossed the network
  std::uint64_t saved_bytes = 0;   // stream_bytes - wire_bytes
  std::array<std::uint64_t, 3> tier_bytes{};  // indexed by Tier
  Percentiles time_s;
  Percentiles downtime_s;
  double simulated_s = 0;

  double donor_share() const {
    return migrations ? static_cast<double>(with_donor) / static_cast<double>(migrations) : 0;
  }
};
RunSummary Summarize(const RunResult& run);

// The people's table of every run (one row each), deterministic: no wall
// times, so golden tests can compare it.
std::string SummaryTable(const std::vector<RunSummary>& summaries);
// One line per migration, in completion order, stamped with the simulated
// time it ended (like SimGrid's tesh logs); for golden tests and debugging.
std::string TraceText(const Scenario& scenario, const std::vector<RunResult>& runs);

// results.json: the scenario's key figures, each run's summary, and the
// ESCDR-versus-plain comparison per policy.
std::string ResultsJson(const Scenario& scenario, const std::vector<RunResult>& runs);

struct ReportInfo {
  double wall_s = 0;           // whole simulation, wall clock
  double platform_wall_s = 0;  // platform build
};
// Writes summary.md, results.json, migrations.csv and plots into `dir`
// (created if missing). Returns the files written. Errors: IOError naming
// the file that could not be written.
Result<std::vector<std::string>> WriteReport(const std::string& dir, const Scenario& scenario,
                                             const std::vector<RunResult>& runs,
                                             const ReportInfo& info);

}  // namespace escdr::sim

#endif  // ESCDR_SIM_REPORT_H_
