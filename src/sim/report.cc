#include "escdr/sim/report.h"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

namespace escdr::sim {
namespace {

using nlohmann::json;

std::string Mode(bool escdr) { return escdr ? "escdr" : "plain"; }

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (b >= 1024 && u < 5) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.2f} {}", b, units[u]);
}

std::string Seconds(double s) {
  if (s < 1) return fmt::format("{:.1f} ms", s * 1000);
  return fmt::format("{:.2f} s", s);
}

std::string Pct(double part, double whole) {
  return whole > 0 ? fmt::format("{:.1f}%", 100.0 * part / whole) : "-";
}

json PercentilesJson(const Percentiles& p) {
  return json{{"p50", p.p50}, {"p95", p.p95}, {"p99", p.p99}, {"mean", p.mean}, {"max", p.max}};
}

// Writes `text` to `path`; IOError naming the file otherwise.
Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status::IOError("cannot write " + path);
  return Status::OK();
}

bool HaveGnuplot() {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = dirs.substr(start, end - start) + "/gnuplot";
    if (::access(candidate.c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

// Runs gnuplot on `script` in `dir`; an error names the script.
Status RunGnuplot(const std::string& dir, const std::string& script) {
  const pid_t pid = ::fork();
  if (pid < 0) return Status::FromErrno("cannot start gnuplot", errno);
  if (pid == 0) {
    if (::chdir(dir.c_str()) != 0) ::_exit(127);
    ::execlp("gnuplot", "gnuplot", script.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Status::FromErrno("cannot wait for gnuplot", errno);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Status::IOError(fmt::format("gnuplot failed on {}/{} (status {})", dir, script, status));
  }
  return Status::OK();
}

const char* kPolicyColors[] = {"#1f77b4", "#d62728", "#2ca02c"};  // spread, pack, random

std::string Label(const RunSummary& s) {
  return fmt::format("{} {}", PlacementPolicyName(s.policy), Mode(s.escdr));
}

// CDF data and the gnuplot command for one figure of per-run distributions.
std::string CdfPlot(const std::string& dir, const std::string& stem, const std::string& title,
                    const std::string& xlabel, const std::vector<RunResult>& runs,
                    double (*value)(const MigrationRecord&), std::vector<std::string>& files,
                    Status& err) {
  std::string plots;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    std::vector<double> v;
    for (const MigrationRecord& m : runs[i].migrations) v.push_back(value(m));
    std::sort(v.begin(), v.end());
    std::string data;
    // At most ~2000 points per curve: enough for the eye, small files.
    const std::size_t step = std::max<std::size_t>(1, v.size() / 2000);
    for (std::size_t k = 0; k < v.size(); k += step) {
      data += fmt::format("{:.6f} {:.6f}\n", v[k], static_cast<double>(k + 1) / v.size());
    }
    if (!v.empty()) data += fmt::format("{:.6f} 1\n", v.back());
    const std::string file = fmt::format("data/{}-{}-{}.dat", stem,
                                         PlacementPolicyName(runs[i].policy), Mode(runs[i].escdr));
    if (Status s = WriteFile(dir + "/" + file, data); !s.ok() && err.ok()) err = s;
    if (v.empty()) continue;
    const char* color = kPolicyColors[static_cast<int>(runs[i].policy) % 3];
    plots += fmt::format("{}'{}' using 1:2 with lines lw {} dt {} lc rgb '{}' title '{} {}'",
                         plots.empty() ? "" : ", \\\n     ", file, runs[i].escdr ? 2.5 : 1.5,
                         runs[i].escdr ? 1 : 2, color, PlacementPolicyName(runs[i].policy),
                         runs[i].escdr ? "ESCDR" : "plain pre-copy");
  }
  if (plots.empty()) return "";
  files.push_back(dir + "/" + stem + ".svg");
  return fmt::format(
      "set output '{}.svg'\nset title '{}'\nset xlabel '{}'\nset ylabel 'share of migrations'\n"
      "set yrange [0:1]\nset xrange [0:*]\nset key bottom right\nset grid\n"
      "set ytics ('0%%' 0, '25%%' 0.25, '50%%' 0.5, '75%%' 0.75, '100%%' 1)\n"
      "plot {}\nset ytics autofreq\nunset xrange\nunset yrange\n\n",
      stem, title, xlabel, plots);
}

// The migration a reference measurement compares with: the first of the
// first run of its mode; nullptr if there is none.
const MigrationRecord* ReferenceMigration(const std::vector<RunResult>& runs,
                                          const ReferenceMeasurement& ref) {
  for (const RunResult& run : runs) {
    if (run.escdr == ref.escdr && !run.migrations.empty()) return &run.migrations.front();
  }
  return nullptr;
}

// QEMU's total-time of a simulated migration: round 1 to completion, without
// the setup before it (what the live benchmark's figure measures).
double QemuTotalSeconds(const MigrationRecord& m) {
  return static_cast<double>(m.report.total_time.count()) / 1e6;
}

}  // namespace

Percentiles ComputePercentiles(std::vector<double> values) {
  Percentiles p;
  if (values.empty()) return p;
  std::sort(values.begin(), values.end());
  auto rank = [&](double q) {
    const auto k = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
    return values[std::clamp<std::size_t>(k, 1, values.size()) - 1];
  };
  p.p50 = rank(0.50);
  p.p95 = rank(0.95);
  p.p99 = rank(0.99);
  double sum = 0;
  for (double v : values) sum += v;
  p.mean = sum / static_cast<double>(values.size());
  p.max = values.back();
  return p;
}

RunSummary Summarize(const RunResult& run) {
  RunSummary s;
  s.policy = run.policy;
  s.escdr = run.escdr;
  s.migrations = run.migrations.size();
  s.no_room = run.migrations_no_room;
  s.simulated_s = run.simulated_s;
  std::vector<double> times, downtimes;
  for (const MigrationRecord& m : run.migrations) {
    if (m.has_donor) ++s.with_donor;
    if (!m.converged) ++s.non_converged;
    const std::uint64_t wire = m.report.wire_bytes_sent;
    s.stream_bytes += m.report.stream_bytes;
    s.wire_bytes += wire;
    s.tier_bytes[kHostTier] += wire;
    if (m.tier != PathTier::kSameRack) s.tier_bytes[kRackTier] += wire;
    if (m.tier == PathTier::kCrossPod) s.tier_bytes[kCoreTier] += wire;
    times.push_back(m.duration_s());
    downtimes.push_back(m.downtime_s);
  }
  s.saved_bytes = s.stream_bytes - std::min(s.stream_bytes, s.wire_bytes);
  s.time_s = ComputePercentiles(std::move(times));
  s.downtime_s = ComputePercentiles(std::move(downtimes));
  return s;
}

std::string SummaryTable(const std::vector<RunSummary>& summaries) {
  std::string out = fmt::format(
      "{:<7} {:<5} {:>10} {:>6} {:>13} {:>13} {:>13} {:>13} {:>10} {:>10} {:>10} {:>10} "
      "{:>10}\n",
      "policy", "mode", "migrations", "donor", "wire bytes", "rack uplinks", "core", "saved",
      "time p50", "time p95", "time p99", "down p50", "down p99");
  for (const RunSummary& s : summaries) {
    out += fmt::format(
        "{:<7} {:<5} {:>10} {:>6} {:>13} {:>13} {:>13} {:>13} {:>10} {:>10} {:>10} {:>10} "
        "{:>10}\n",
        PlacementPolicyName(s.policy), Mode(s.escdr), s.migrations,
        fmt::format("{:.1f}%", 100 * s.donor_share()), Bytes(static_cast<double>(s.wire_bytes)),
        Bytes(static_cast<double>(s.tier_bytes[kRackTier])),
        Bytes(static_cast<double>(s.tier_bytes[kCoreTier])),
        Bytes(static_cast<double>(s.saved_bytes)), Seconds(s.time_s.p50), Seconds(s.time_s.p95),
        Seconds(s.time_s.p99), Seconds(s.downtime_s.p50), Seconds(s.downtime_s.p99));
  }
  return out;
}

std::string TraceText(const Scenario& scenario, const std::vector<RunResult>& runs) {
  std::string out;
  for (const RunResult& run : runs) {
    for (const MigrationRecord& m : run.migrations) {
      out += fmt::format(
          "[{:12.6f}] {}/{} {} vm{} ({} MiB, kind {}) {} -> {} via {}, donor {}, {} rounds{}, "
          "stream {} B, wire {} B, time {:.6f} s, downtime {:.6f} s\n",
          m.end_s, PlacementPolicyName(run.policy), Mode(run.escdr), CauseName(m.cause), m.vm,
          m.memory_mib, m.kind, HostName(scenario.topology, m.source),
          HostName(scenario.topology, m.destination), PathTierName(m.tier),
          m.has_donor ? "yes" : "no", m.rounds, m.converged ? "" : " (forced)",
          m.report.stream_bytes, m.report.wire_bytes_sent, m.duration_s(), m.downtime_s);
    }
  }
  return out;
}

std::string ResultsJson(const Scenario& scenario, const std::vector<RunResult>& runs) {
  json doc;
  const TopologyOptions& t = scenario.topology;
  doc["scenario"] = json{{"name", scenario.name},
                         {"description", scenario.description},
                         {"seed", scenario.seed},
                         {"hosts", t.hosts()},
                         {"pods", t.pods},
                         {"racks_per_pod", t.racks_per_pod},
                         {"hosts_per_rack", t.hosts_per_rack},
                         {"vms", scenario.vms.count},
                         {"kinds", scenario.kinds.size()},
                         {"migrations", scenario.workload.migrations}};
  json kinds = json::array();
  for (const KindSpec& k : scenario.kinds) {
    kinds.push_back(json{{"kind", k.kind.ToString()},
                         {"weight", k.weight},
                         {"zero_fraction", k.zero_fraction},
                         {"static_fraction", k.static_fraction()},
                         {"source", k.source}});
  }
  doc["scenario"]["kind_mix"] = kinds;
  json out_runs = json::array();
  std::map<int, std::pair<const RunSummary*, const RunSummary*>> by_policy;
  std::vector<RunSummary> summaries;
  summaries.reserve(runs.size());
  for (const RunResult& r : runs) summaries.push_back(Summarize(r));
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const RunSummary& s = summaries[i];
    const RunResult& r = runs[i];
    out_runs.push_back(json{
        {"policy", PlacementPolicyName(s.policy)},
        {"mode", Mode(s.escdr)},
        {"migrations", s.migrations},
        {"migrations_no_room", s.no_room},
        {"donor_share", s.donor_share()},
        {"non_converged", s.non_converged},
        {"stream_bytes", s.stream_bytes},
        {"wire_bytes", s.wire_bytes},
        {"saved_bytes", s.saved_bytes},
        {"tier_bytes",
         json{{"host_links", s.tier_bytes[kHostTier]},
              {"rack_uplinks", s.tier_bytes[kRackTier]},
              {"core", s.tier_bytes[kCoreTier]}}},
        {"migration_time_s", PercentilesJson(s.time_s)},
        {"downtime_s", PercentilesJson(s.downtime_s)},
        {"simulated_s", s.simulated_s},
        {"events", r.events},
        {"peak_concurrent_migrations", r.peak_concurrent},
        {"vms_placed", r.vms_placed},
        {"vms_unplaced", r.vms_unplaced},
        {"wall_s", json{{"placement", r.placement_wall_s}, {"run", r.run_wall_s}}},
        {"peak_rss_kib", r.peak_rss_kib}});
    auto& slot = by_policy[static_cast<int>(s.policy)];
    (s.escdr ? slot.second : slot.first) = &s;
  }
  doc["runs"] = out_runs;
  json cmp = json::array();
  for (const auto& [policy, pair] : by_policy) {
    if (!pair.first || !pair.second) continue;
    const RunSummary& p = *pair.first;
    const RunSummary& e = *pair.second;
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    cmp.push_back(json{
        {"policy", PlacementPolicyName(p.policy)},
        {"wire_bytes_ratio", ratio(static_cast<double>(e.wire_bytes), static_cast<double>(p.wire_bytes))},
        {"core_bytes_ratio", ratio(static_cast<double>(e.tier_bytes[kCoreTier]),
                                   static_cast<double>(p.tier_bytes[kCoreTier]))},
        {"migration_time_p50_ratio", ratio(e.time_s.p50, p.time_s.p50)},
        {"migration_time_p95_ratio", ratio(e.time_s.p95, p.time_s.p95)},
        {"donor_share", e.donor_share()}});
  }
  doc["escdr_vs_plain"] = cmp;
  if (!scenario.references.empty()) {
    json refs = json::array();
    for (const ReferenceMeasurement& ref : scenario.references) {
      json r{{"description", ref.description}, {"tolerance", ref.tolerance}, {"escdr", ref.escdr}};
      r["measured_total_s"] = ref.measured_total_s ? json(*ref.measured_total_s) : json(nullptr);
      r["measured_downtime_ms"] =
          ref.measured_downtime_ms ? json(*ref.measured_downtime_ms) : json(nullptr);
      if (const MigrationRecord* m = ReferenceMigration(runs, ref)) {
        const double sim = QemuTotalSeconds(*m);
        r["simulated_total_s"] = sim;
        r["simulated_downtime_s"] = m->downtime_s;
        if (ref.measured_total_s) {
          const double rel = sim / *ref.measured_total_s - 1;
          r["relative_error"] = rel;
          r["within_tolerance"] = std::abs(rel) <= ref.tolerance;
        }
      }
      refs.push_back(r);
    }
    doc["references"] = refs;
  }
  return doc.dump(2);
}

Result<std::vector<std::string>> WriteReport(const std::string& dir, const Scenario& scenario,
                                             const std::vector<RunResult>& runs,
                                             const ReportInfo& info) {
  std::error_code ec;
  std::filesystem::create_directories(dir + "/data", ec);
  if (ec) return Err(Status::IOError("cannot create report directory " + dir + ": " + ec.message()));
  std::vector<std::string> files;
  auto write = [&](const std::string& name, const std::string& text) -> Status {
    files.push_back(dir + "/" + name);
    return WriteFile(dir + "/" + name, text);
  };

  ESCDR_RETURN_IF_ERROR(write("results.json", ResultsJson(scenario, runs) + "\n"));

  {
    std::ofstream csv(dir + "/migrations.csv", std::ios::trunc);
    csv << "policy,mode,cause,vm,kind,memory_mib,source,destination,tier,has_donor,start_s,"
           "end_s,time_s,downtime_s,rounds,converged,stream_bytes,wire_bytes,saved_bytes,"
           "page_records,zero_records,pages_by_position,pages_by_content\n";
    for (const RunResult& run : runs) {
      for (const MigrationRecord& m : run.migrations) {
        csv << fmt::format("{},{},{},{},{},{},{},{},{},{},{:.6f},{:.6f},{:.6f},{:.6f},{},{},{},{},{},"
                           "{},{},{},{}\n",
                           PlacementPolicyName(run.policy), Mode(run.escdr), CauseName(m.cause),
                           m.vm, m.kind, m.memory_mib, HostName(scenario.topology, m.source),
                           HostName(scenario.topology, m.destination), PathTierName(m.tier),
                           m.has_donor ? 1 : 0, m.start_s, m.end_s, m.duration_s(),
                           m.downtime_s, m.rounds, m.converged ? 1 : 0, m.report.stream_bytes,
                           m.report.wire_bytes_sent, m.bytes_saved, m.report.page_records,
                           m.report.zero_records, m.report.pages_by_position,
                           m.report.pages_by_content);
      }
    }
    csv.close();
    if (!csv) return Err(Status::IOError("cannot write " + dir + "/migrations.csv"));
    files.push_back(dir + "/migrations.csv");
  }

  std::vector<RunSummary> summaries;
  for (const RunResult& r : runs) summaries.push_back(Summarize(r));

  // Plots.
  Status plot_error;
  std::string script =
      "set terminal svg size 900,520 dynamic enhanced font 'sans,13' background rgb 'white'\n"
      "set encoding utf8\n\n";
  {
    // Bytes per tier, one cluster per run, in the unit that suits the largest.
    double max_bytes = 0;
    for (const RunSummary& s : summaries) {
      max_bytes = std::max(max_bytes, static_cast<double>(s.tier_bytes[kHostTier]));
    }
    const bool tib = max_bytes >= 1099511627776.0;
    const double unit = tib ? 1099511627776.0 : 1073741824.0;
    std::string data = "# run host rack core\n";
    for (const RunSummary& s : summaries) {
      data += fmt::format("\"{}\" {:.6f} {:.6f} {:.6f}\n", Label(s), s.tier_bytes[kHostTier] / unit,
                          s.tier_bytes[kRackTier] / unit, s.tier_bytes[kCoreTier] / unit);
    }
    plot_error = WriteFile(dir + "/data/bytes_by_tier.dat", data);
    files.push_back(dir + "/bytes_by_tier.svg");
    script += fmt::format(
        "set output 'bytes_by_tier.svg'\n"
        "set title 'Network bytes of all migrations, by link tier crossed'\n"
        "set ylabel '{}'\nset style data histograms\n"
        "set style histogram clustered gap 1\nset style fill solid 0.85 border -1\n"
        "set boxwidth 0.9\nset xtics rotate by -25 nomirror\nset key top right\n"
        "set grid ytics\nset yrange [0:*]\n"
        "plot 'data/bytes_by_tier.dat' using 2:xtic(1) title 'host links (all)' lc rgb '#9ecae1', \\\n"
        "     '' using 3 title 'rack uplinks' lc rgb '#3182bd', \\\n"
        "     '' using 4 title 'core' lc rgb '#08306b'\n"
        "unset style\nset style data lines\nunset xtics\nset xtics\nunset boxwidth\n"
        "unset yrange\nset style fill empty\n\n",
        tib ? "TiB" : "GiB");
  }
  {
    std::string data = "policy donor_share\n";
    for (const RunSummary& s : summaries) {
      if (!s.escdr) continue;
      data += fmt::format("{} {:.6f}\n", PlacementPolicyName(s.policy), 100 * s.donor_share());
    }
    if (Status s = WriteFile(dir + "/data/donor_share.dat", data); !s.ok()) plot_error = s;
    files.push_back(dir + "/donor_share.svg");
    script +=
        "set output 'donor_share.svg'\n"
        "set title 'Migrations that found a donor at the destination (ESCDR runs)'\n"
        "set ylabel 'share of migrations (%)'\nset yrange [0:105]\nset style data histograms\n"
        "set style fill solid 0.85 border -1\nset boxwidth 0.6\nset grid ytics\nunset key\n"
        "plot 'data/donor_share.dat' using 2:xtic(1) lc rgb '#3182bd', \\\n"
        "     '' using 0:($2+3):(sprintf('%.1f%%',$2)) with labels notitle\n"
        "set key\nunset yrange\nset style data lines\nset style fill empty\n\n";
  }
  script += CdfPlot(dir, "migration_time_cdf", "Migration time (first byte to resume), CDF",
                    "seconds", runs, [](const MigrationRecord& m) { return m.duration_s(); },
                    files, plot_error);
  script += CdfPlot(dir, "downtime_cdf", "Downtime (stop-and-copy), CDF", "seconds", runs,
                    [](const MigrationRecord& m) { return m.downtime_s; }, files, plot_error);
  ESCDR_RETURN_IF_ERROR(write("plots.gp", script));
  std::string plot_note;
  if (!plot_error.ok()) {
    plot_note = "Plots are missing: " + plot_error.message() + ".";
  } else if (!HaveGnuplot()) {
    plot_note = "Plots are missing: gnuplot is not installed (Debian: apt-get install "
                "gnuplot-nox); run `gnuplot plots.gp` in this directory to make them.";
  } else if (Status s = RunGnuplot(dir, "plots.gp"); !s.ok()) {
    plot_note = "Plots are missing: " + s.message() + ".";
  }

  // summary.md
  const TopologyOptions& t = scenario.topology;
  std::string md = fmt::format("# Simulation: {}\n\n", scenario.name);
  if (!scenario.description.empty()) md += scenario.description + "\n\n";
  md += fmt::format(
      "{} hosts ({} pods x {} racks x {} hosts; host links {} Gbit/s, rack uplinks {} Gbit/s, "
      "pod uplinks to the core {} Gbit/s), {} VMs of {} kinds, {} migrations per run, seed {}.\n\n",
      t.hosts(), t.pods, t.racks_per_pod, t.hosts_per_rack, t.host_link.bandwidth_gbit_s,
      t.rack_uplink.bandwidth_gbit_s, t.pod_uplink.bandwidth_gbit_s, scenario.vms.count,
      scenario.kinds.size(), scenario.workload.migrations, scenario.seed);
  md += "## ESCDR against plain pre-copy\n\n"
        "| policy | donor found | wire bytes plain | wire bytes ESCDR | saved | core bytes saved | "
        "time p50 plain / ESCDR | time p95 plain / ESCDR | downtime p99 plain / ESCDR |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const RunSummary& p : summaries) {
    if (p.escdr) continue;
    for (const RunSummary& e : summaries) {
      if (!e.escdr || e.policy != p.policy) continue;
      md += fmt::format(
          "| {} | {:.1f}% | {} | {} | {} | {} | {} / {} | {} / {} | {} / {} |\n",
          PlacementPolicyName(p.policy), 100 * e.donor_share(),
          Bytes(static_cast<double>(p.wire_bytes)), Bytes(static_cast<double>(e.wire_bytes)),
          Pct(static_cast<double>(p.wire_bytes) - static_cast<double>(e.wire_bytes),
              static_cast<double>(p.wire_bytes)),
          Pct(static_cast<double>(p.tier_bytes[kCoreTier]) -
                  static_cast<double>(e.tier_bytes[kCoreTier]),
              static_cast<double>(p.tier_bytes[kCoreTier])),
          Seconds(p.time_s.p50), Seconds(e.time_s.p50), Seconds(p.time_s.p95),
          Seconds(e.time_s.p95), Seconds(p.downtime_s.p99), Seconds(e.downtime_s.p99));
    }
  }
  md += "\n![bytes by tier](bytes_by_tier.svg)\n\n![donor share](donor_share.svg)\n\n"
        "![migration time](migration_time_cdf.svg)\n\n![downtime](downtime_cdf.svg)\n\n";
  if (!plot_note.empty()) md += "> " + plot_note + "\n\n";
  md += "## Every run\n\n```\n" + SummaryTable(summaries) + "```\n\n";
  md += "Wire bytes: what crossed the network. Rack uplinks / core: bytes of migrations whose "
        "route crossed that tier (each migration counted once per tier). Time: from the "
        "destination's choice (setup and donor scan, if the scenario sets them) to the end of "
        "stop-and-copy. Downtime: the stop-and-copy "
        "round. Per-migration figures: migrations.csv; all figures: results.json.\n\n";
  if (!scenario.references.empty()) {
    md += "## Reference measurements\n\n";
    for (const ReferenceMeasurement& ref : scenario.references) {
      md += fmt::format("**{}.** {}\n\n", ref.escdr ? "ESCDR" : "Plain pre-copy", ref.description);
      const MigrationRecord* m = ReferenceMigration(runs, ref);
      if (!m) continue;
      const double sim = QemuTotalSeconds(*m);
      if (ref.measured_total_s) {
        const double rel = sim / *ref.measured_total_s - 1;
        md += fmt::format("Simulated {:.3f} s, measured {:.3f} s: {:+.1f}% ({} the {:.0f}% "
                          "tolerance).",
                          sim, *ref.measured_total_s, 100 * rel,
                          std::abs(rel) <= ref.tolerance ? "within" : "outside",
                          100 * ref.tolerance);
        if (ref.measured_downtime_ms) {
          md += fmt::format(" Downtime simulated {:.1f} ms, measured {:.1f} ms.",
                            1000 * m->downtime_s, *ref.measured_downtime_ms);
        }
        md += "\n\n";
      } else {
        md += fmt::format("Simulated {:.3f} s (downtime {:.1f} ms); no live measurement recorded "
                          "yet.\n\n",
                          sim, 1000 * m->downtime_s);
      }
    }
  }
  std::uint64_t peak = 0;
  for (const RunResult& r : runs) peak = std::max(peak, r.peak_rss_kib);
  md += fmt::format("Wall time {:.1f} s (platform build {:.1f} s); largest run process {:.0f} MiB "
                    "peak RSS.\n",
                    info.wall_s, info.platform_wall_s, static_cast<double>(peak) / 1024);
  ESCDR_RETURN_IF_ERROR(write("summary.md", md));
  return files;
}

}  // namespace escdr::sim
