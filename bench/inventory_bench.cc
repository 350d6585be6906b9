// Inventory decisions at datacenter scale: 10,000 hosts in pods and racks,
// 100,000 VMs of 50 OS/hypervisor kinds, on SQLite and PostgreSQL.
//
// Measures the latency of one decision as a caller sees it (one transaction:
// gather candidates with indexed queries, rank them, and for PlaceVm insert
// the VM): p50 and p99 over many random decisions, reported as counters and
// in a summary against the targets (SQLite < 10 ms, PostgreSQL < 50 ms).
//
//   build/bench/inventory_bench [--hosts N] [--vms N] [--kinds N] [--samples N]
//                               [--pg URL] [benchmark flags...]
// PostgreSQL runs in a fresh database on the server of --pg or
// $ESCDR_TEST_PG_URL (tools/pg-cluster.sh), dropped afterwards; without
// either, it is skipped with a message.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "escdr/inventory/inventory.h"
#include "inventory/pg_admin.h"

namespace escdr {
namespace {

struct Config {
  int hosts = 10000;
  int vms = 100000;
  int kinds = 50;
  int samples = 1000;
  int hosts_per_rack = 40;
  int racks_per_pod = 25;
  std::string pg;
};

// Wall-clock latency of each decision, and the CPU time this process spent
// on it (thread CPU clock). On a shared machine the gap between the two is
// time spent waiting for a CPU (and, for PostgreSQL, the server's work).
struct Latencies {
  std::vector<double> ms;
  std::vector<double> cpu_ms;
  double Percentile(double p) const { return Of(ms, p); }
  double CpuPercentile(double p) const { return Of(cpu_ms, p); }
  static double Of(const std::vector<double>& samples, double p) {
    if (samples.empty()) return 0;
    std::vector<double> v = samples;
    std::sort(v.begin(), v.end());
    const std::size_t i = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size())));
    return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
  }
};

// (backend, decision) -> latencies, for the summary.
std::map<std::pair<std::string, std::string>, Latencies>& Results() {
  static std::map<std::pair<std::string, std::string>, Latencies> results;
  return results;
}

VmKind KindNo(int k) {
  // 10 OS versions x 5 hypervisor versions = 50 kinds.
  return {k % 2 ? "debian" : "ubuntu", std::to_string(10 + k / 5), "qemu",
          fmt::format("7.{}", k % 5)};
}

Status Populate(Inventory& inv, const Config& c) {
  std::vector<HostSpec> hosts;
  for (int h = 0; h < c.hosts; ++h) {
    const int rack = h / c.hosts_per_rack;
    hosts.push_back({fmt::format("host-{:05}", h), fmt::format("10.{}.{}.{}:7000", h >> 16,
                                                               (h >> 8) & 255, h & 255),
                     fmt::format("rack-{}", rack % c.racks_per_pod),
                     fmt::format("pod-{}", rack / c.racks_per_pod), 512 * 1024, 128});
  }
  ESCDR_RETURN_IF_ERROR(inv.AddHosts(hosts));
  std::mt19937_64 rng(42);
  std::vector<VmSpec> batch;
  for (int v = 0; v < c.vms; ++v) {
    VmSpec s;
    s.name = fmt::format("vm-{:06}", v);
    s.host = hosts[rng() % hosts.size()].name;
    s.kind = KindNo(static_cast<int>(rng() % static_cast<unsigned>(c.kinds)));
    s.memory_mib = 1024u << (rng() % 4);  // 1, 2, 4 or 8 GiB
    s.vcpus = 1u << (rng() % 3);          // 1, 2 or 4
    s.state = VmState::kRunning;
    batch.push_back(std::move(s));
    if (batch.size() == 10000 || v + 1 == c.vms) {
      ESCDR_RETURN_IF_ERROR(inv.AddVms(batch));
      batch.clear();
    }
  }
  return Status::OK();
}

double Ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double ThreadCpuMs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Times one call: wall clock and thread CPU.
template <typename Fn>
auto Timed(Latencies& lat, Fn&& fn) {
  const double cpu0 = ThreadCpuMs();
  const auto t0 = std::chrono::steady_clock::now();
  auto result = fn();
  lat.ms.push_back(Ms(std::chrono::steady_clock::now() - t0));
  lat.cpu_ms.push_back(ThreadCpuMs() - cpu0);
  return result;
}

void Record(benchmark::State& state, const std::string& backend, const std::string& what,
            const Latencies& lat) {
  state.counters["p50_ms"] = lat.Percentile(0.50);
  state.counters["p99_ms"] = lat.Percentile(0.99);
  state.counters["cpu_p99_ms"] = lat.CpuPercentile(0.99);
  Results()[{backend, what}] = lat;
}

void RegisterFor(const std::string& backend, Inventory* inv, const Config& c) {
  const int samples = c.samples;
  benchmark::RegisterBenchmark(
      ("destination/" + backend).c_str(),
      [=](benchmark::State& state) {
        std::mt19937_64 rng(7);
        Latencies lat;
        for (auto _ : state) {
          const std::string vm = fmt::format("vm-{:06}", rng() % static_cast<unsigned>(c.vms));
          auto plan = Timed(lat, [&] { return inv->PlanDestination(vm); });
          if (!plan.has_value() || !plan->decision.chosen) {
            state.SkipWithError(plan ? "no destination" : plan.error().message().c_str());
            return;
          }
          benchmark::DoNotOptimize(plan->decision.chosen);
        }
        Record(state, backend, "destination", lat);
      })
      ->Iterations(samples)
      ->Unit(benchmark::kMillisecond);

  benchmark::RegisterBenchmark(
      ("plan_placement/" + backend).c_str(),
      [=](benchmark::State& state) {
        std::mt19937_64 rng(8);
        Latencies lat;
        for (auto _ : state) {
          const VmKind kind = KindNo(static_cast<int>(rng() % static_cast<unsigned>(c.kinds)));
          const VmDemand demand{1024u << (rng() % 4), 1u << (rng() % 3)};
          auto plan = Timed(lat, [&] { return inv->PlanPlacement(kind, demand); });
          if (!plan.has_value() || !plan->decision.chosen) {
            state.SkipWithError(plan ? "nowhere to place" : plan.error().message().c_str());
            return;
          }
        }
        Record(state, backend, "plan_placement", lat);
      })
      ->Iterations(samples)
      ->Unit(benchmark::kMillisecond);

  benchmark::RegisterBenchmark(
      ("place_vm/" + backend).c_str(),
      [=](benchmark::State& state) {
        std::mt19937_64 rng(9);
        Latencies lat;
        static int serial = 0;
        for (auto _ : state) {
          VmSpec s;
          s.name = fmt::format("new-{}-{}", backend, serial++);
          s.kind = KindNo(static_cast<int>(rng() % static_cast<unsigned>(c.kinds)));
          s.memory_mib = 1024u << (rng() % 4);
          s.vcpus = 1u << (rng() % 3);
          auto placed = Timed(lat, [&] { return inv->PlaceVm(s); });
          if (!placed.has_value()) {
            state.SkipWithError(placed.error().message().c_str());
            return;
          }
        }
        Record(state, backend, "place_vm", lat);
      })
      ->Iterations(samples)
      ->Unit(benchmark::kMillisecond);
}

// Removes our flags from argv (Google Benchmark rejects unknown ones).
Config ParseFlags(int& argc, char** argv) {
  Config c;
  if (const char* url = std::getenv("ESCDR_TEST_PG_URL")) c.pg = url;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--hosts") {
      c.hosts = std::atoi(value().c_str());
    } else if (a == "--vms") {
      c.vms = std::atoi(value().c_str());
    } else if (a == "--kinds") {
      c.kinds = std::atoi(value().c_str());
    } else if (a == "--samples") {
      c.samples = std::atoi(value().c_str());
    } else if (a == "--pg") {
      c.pg = value();
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  return c;
}

int Main(int argc, char** argv) {
  Config c = ParseFlags(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (c.hosts <= 0 || c.vms <= 0 || c.kinds <= 0 || c.samples <= 0) {
    std::fprintf(stderr, "inventory_bench: --hosts, --vms, --kinds and --samples must be > 0\n");
    return 2;
  }

  // SQLite: a file in a temporary directory, removed at the end.
  std::string dir = (std::filesystem::temp_directory_path() / "escdr-bench-XXXXXX").string();
  if (!mkdtemp(dir.data())) {
    std::perror("mkdtemp");
    return 1;
  }
  std::vector<std::pair<std::string, std::unique_ptr<Inventory>>> backends;
  auto setup = [&](const std::string& name, const std::string& url) -> bool {
    auto inv = OpenInventory(url);
    if (!inv.has_value()) {
      std::fprintf(stderr, "inventory_bench: %s\n", inv.error().message().c_str());
      return false;
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (Status s = Populate(**inv, c); !s.ok()) {
      std::fprintf(stderr, "inventory_bench: populating %s: %s\n", name.c_str(),
                   s.message().c_str());
      return false;
    }
    std::fprintf(stderr, "inventory_bench: %s: %d hosts, %d VMs of %d kinds loaded in %.1f s\n",
                 name.c_str(), c.hosts, c.vms, c.kinds,
                 Ms(std::chrono::steady_clock::now() - t0) / 1000);
    backends.emplace_back(name, std::move(*inv));
    return true;
  };
  int rc = 0;
  if (!setup("sqlite", dir + "/inventory.db")) rc = 1;

  std::string pg_db;
  if (c.pg.empty()) {
    std::fprintf(stderr,
                 "inventory_bench: PostgreSQL skipped: set ESCDR_TEST_PG_URL or --pg "
                 "(eval \"$(tools/pg-cluster.sh start DIR)\")\n");
  } else {
    pg_db = fmt::format("escdr_bench_{}", getpid());
    if (Status s = inventory_internal::CreatePgDatabase(c.pg, pg_db); !s.ok()) {
      std::fprintf(stderr, "inventory_bench: %s\n", s.message().c_str());
      pg_db.clear();
      rc = 1;
    } else if (!setup("postgres", inventory_internal::PgUrlWithDatabase(c.pg, pg_db))) {
      rc = 1;
    }
  }

  for (auto& [name, inv] : backends) RegisterFor(name, inv.get(), c);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) < 1) load[0] = -1;
  std::printf("\n%d hosts, %d VMs, %d kinds; load average %.1f on %ld CPUs\n", c.hosts, c.vms,
              c.kinds, load[0], sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("%-10s %-16s %8s %8s %8s %12s %12s %8s\n", "backend", "decision", "samples",
              "p50 ms", "p99 ms", "cpu p50 ms", "cpu p99 ms", "target");
  for (const auto& [key, lat] : Results()) {
    const double target = key.first == "sqlite" ? 10 : 50;
    const double p99 = lat.Percentile(0.99);
    std::printf("%-10s %-16s %8zu %8.2f %8.2f %12.3f %12.3f %5.0f ms %s\n", key.first.c_str(),
                key.second.c_str(), lat.ms.size(), lat.Percentile(0.5), p99,
                lat.CpuPercentile(0.5), lat.CpuPercentile(0.99), target,
                p99 < target ? "ok" : "MISSED (p99)");
  }

  backends.clear();  // close connections before dropping the database
  if (!pg_db.empty()) {
    if (Status s = inventory_internal::DropPgDatabase(c.pg, pg_db); !s.ok()) {
      std::fprintf(stderr, "inventory_bench: %s\n", s.message().c_str());
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}

}  // namespace
}  // namespace escdr

int main(int argc, char** argv) { return escdr::Main(argc, argv); }
