// escdr simulate: the datacenter simulator (docs/simulator.md).
//
//   escdr simulate SCENARIO.json [--policy spread,pack] [--mode plain,escdr]
//                  [--report DIR] [--trace] [--jobs N] [--migrations N]
//   escdr simulate --cross-check
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/command.h"
#include "escdr/sim/report.h"
#include "escdr/sim/scenario.h"
#include "escdr/sim/simulator.h"

namespace escdr::cli {
namespace {

struct SimulateArgs {
  std::string scenario;
  std::vector<std::string> policies;
  std::vector<std::string> modes;
  std::string report;
  bool trace = false;
  int jobs = 1;
  long long migrations = -1;
  bool cross_check = false;
};

std::vector<std::string> SplitCommas(const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const std::string& s : in) {
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, ',')) {
      if (!part.empty()) out.push_back(part);
    }
  }
  return out;
}

void RunCrossCheck(const GlobalOptions& global) {
  const sim::CrossCheckParams params;
  const sim::CrossCheckResult r = Unwrap(sim::RunPluginCrossCheck(params));
  const double diff = r.plugin_total_s > 0 ? r.model_total_s / r.plugin_total_s - 1 : 0;
  if (global.json) {
    nlohmann::json doc{{"memory_mib", params.memory_mib},
                       {"link_gbit_s", params.link_gbit_s},
                       {"migration_speed_mib_s", params.migration_speed_mib_s},
                       {"dirty_intensity_percent", params.dirty_intensity_percent},
                       {"plugin_total_s", r.plugin_total_s},
                       {"plugin_downtime_s", r.plugin_downtime_s},
                       {"model_total_s", r.model_total_s},
                       {"model_downtime_s", r.model_downtime_s},
                       {"model_rounds", r.model_rounds},
                       {"model_bytes", r.model_bytes},
                       {"relative_difference", diff}};
    std::puts(doc.dump(2).c_str());
    return;
  }
  std::printf("SimGrid live-migration plugin vs escdr's pre-copy model: %u MiB VM, %.0f MiB/s "
              "rate cap, dirty intensity %d%%, %.1f Gbit/s links\n\n",
              params.memory_mib, params.migration_speed_mib_s, params.dirty_intensity_percent,
              params.link_gbit_s);
  Table t({"", ">total time", ">downtime"});
  t.AddRow({"SimGrid plugin", fmt::format("{:.4f} s", r.plugin_total_s),
            fmt::format("{:.2f} ms", 1000 * r.plugin_downtime_s)});
  t.AddRow({fmt::format("escdr model ({} rounds)", r.model_rounds),
            fmt::format("{:.4f} s", r.model_total_s),
            fmt::format("{:.2f} ms", 1000 * r.model_downtime_s)});
  std::fputs(t.Render().c_str(), stdout);
  std::printf("\ndifference in total time: %+.2f%%\n", 100 * diff);
}

void RunSimulate(const GlobalOptions& global, const SimulateArgs& args) {
  if (args.cross_check) {
    RunCrossCheck(global);
    return;
  }
  if (args.scenario.empty()) {
    Fail(Status::InvalidArgument("simulate needs a SCENARIO file (or --cross-check)"));
  }
  sim::Scenario scenario = Unwrap(sim::LoadScenario(args.scenario));
  if (args.migrations >= 0) scenario.workload.migrations = static_cast<std::uint64_t>(args.migrations);

  sim::SimulateOptions options;
  for (const std::string& p : SplitCommas(args.policies)) {
    options.policies.push_back(Unwrap(ParsePlacementPolicy(p)));
  }
  const std::vector<std::string> modes = SplitCommas(args.modes);
  if (!modes.empty()) {
    options.modes.clear();
    for (const std::string& m : modes) {
      if (m != "plain" && m != "escdr") {
        Fail(Status::InvalidArgument("unknown mode '" + m + "' (expected plain or escdr)"));
      }
      options.modes.push_back(m == "escdr");
    }
  }
  if (args.jobs < 1 || args.jobs > 64) {
    Fail(Status::InvalidArgument(fmt::format("--jobs must be in [1, 64], got {}", args.jobs)));
  }
  options.jobs = args.jobs;
  double platform_wall = 0;
  options.platform_wall_s = &platform_wall;

  const auto start = std::chrono::steady_clock::now();
  const std::vector<sim::RunResult> runs = Unwrap(sim::Simulate(scenario, options));
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::vector<std::string> files;
  if (!args.report.empty()) {
    files = Unwrap(sim::WriteReport(args.report, scenario, runs,
                                    sim::ReportInfo{wall, platform_wall}));
  }
  if (global.json) {
    std::puts(sim::ResultsJson(scenario, runs).c_str());
  } else {
    if (args.trace) std::fputs(sim::TraceText(scenario, runs).c_str(), stdout);
    std::vector<sim::RunSummary> summaries;
    for (const sim::RunResult& r : runs) summaries.push_back(sim::Summarize(r));
    std::fputs(sim::SummaryTable(summaries).c_str(), stdout);
    if (!args.report.empty()) std::printf("report: %s/summary.md\n", args.report.c_str());
  }
  std::uint64_t peak = 0;
  for (const sim::RunResult& r : runs) peak = std::max(peak, r.peak_rss_kib);
  // Wall figures vary from run to run: stderr keeps stdout reproducible.
  std::fprintf(stderr, "escdr: simulated %zu runs in %.1f s wall (platform %.1f s), peak RSS of "
                       "a run %.0f MiB\n",
               runs.size(), wall, platform_wall, static_cast<double>(peak) / 1024);
}

void Register(CLI::App& app, GlobalOptions& global) {
  auto args = std::make_shared<SimulateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "simulate",
      "Simulate a datacenter's migrations on SimGrid: ESCDR vs plain pre-copy, per placement "
      "policy");
  cmd->add_option("scenario", args->scenario, "Scenario file (JSON; see docs/simulator.md)");
  cmd->add_option("--policy", args->policies,
                  "Placement policies to run, comma-separated (default: the scenario's)");
  cmd->add_option("--mode", args->modes, "plain, escdr or both (default: plain,escdr)");
  cmd->add_option("--report", args->report,
                  "Write summary.md, results.json, migrations.csv and SVG plots into DIR");
  cmd->add_flag("--trace", args->trace, "Print one line per migration, stamped with sim time");
  cmd->add_option("--jobs", args->jobs, "Runs at a time (one core each; default 1)");
  cmd->add_option("--migrations", args->migrations, "Override the scenario's migration count");
  cmd->add_flag("--cross-check", args->cross_check,
                "Compare the pre-copy model with SimGrid's live-migration plugin");
  cmd->callback([&global, args] { RunSimulate(global, *args); });
}

ESCDR_REGISTER_COMMAND(Register);

}  // namespace
}  // namespace escdr::cli
