// The paper's list of static content, filled from real guests: for each cell
// (distribution guest × QEMU series), four guests boot independently through
// a real agent (each its own overlay of the image, its own machine-id, KASLR
// on as Debian boots, nginx and redis running), the catalog is learned from
// three of them (`escdr catalog learn --from-vm`) and the fourth is matched
// against it (`escdr catalog match`): pages static by position, by content
// only, zero, and the rest.
//
// --uptime-minutes 1,10,30 then keeps the fourth guest's redis and nginx busy
// (testing/guest_services.h's ServiceLoad) and matches it again after each
// of those minutes of load: how the share decays with uptime and load.
//
//   build/bench/distro_catalog_bench [--guests debian-12,debian-13]
//       [--qemu-versions 7.2,10.0] [--memory MiB] [--uptime-minutes M,...]
//       [--json PATH]
//
// Prints one markdown table (a row per cell and uptime) and writes the
// figures to --json (default distro_catalog_bench.json). The agent, its
// QEMUs, overlays and RAM files go with AgentCluster (RAII, by pid).
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "agent/agent_cluster_testing.h"
#include "agent/json_util.h"
#include "testing/guest_services.h"
#include "testing/test_guest.h"

namespace escdr::catbench {
namespace {

using escdr::bench::LoadAverage1;
using escdr::bench::SplitList;

using nlohmann::json;
using std::chrono::seconds;
using Cluster = escdr::agent::testing::AgentCluster;
using escdr::agent::testing::CliResult;



struct Row {
  std::string guest, qemu;
  int uptime_minutes = 0;  // of service load on the matched guest
  double pages = 0, zero = 0, by_position = 0, by_content = 0, other = 0;
  std::uint64_t load_ops = 0;
  double load1 = 0;

  double NonZero() const { return pages - zero; }
  json ToJson() const {
    return {{"guest", guest},       {"qemu_version", qemu},   {"uptime_minutes", uptime_minutes},
            {"pages", pages},       {"zero", zero},           {"by_position", by_position},
            {"by_content_only", by_content}, {"other", other}, {"load_ops", load_ops},
            {"load1", load1}};
  }
};

// One cell: boots four guests, learns from three, matches the fourth now and
// after each uptime (under load).
Status RunCell(const escdr::testing::DistroGuest& g, const std::string& qemu,
               std::uint64_t memory_mib, const std::vector<int>& uptimes, std::vector<Row>* rows) {
  Cluster cluster;
  ESCDR_RETURN_IF_ERROR(cluster.StartAgent("h1"));
  const std::string os_version = g.name.substr(g.name.rfind('-') + 1);
  const std::vector<std::string> vms = {"s1", "s2", "s3", "probe"};
  for (const std::string& vm : vms) {
    CliResult r = cluster.Cli(
        {"vm", "create", vm, "--host", "h1", "--os", "debian", "--os-version", os_version,
         "--hypervisor-version", qemu, "--memory", std::to_string(memory_mib), "--disk-from",
         g.disk, "--disk-dir", cluster.root() + "/disks", "--forward", "80", "--forward", "6379",
         "--kernel", g.kernel, "--initrd", g.initrd, "--append", g.cmdline});
    if (!r.ok()) return Status::Internal(fmt::format("vm create {}: {}", vm, r.err));
  }
  std::map<std::string, agent::VmInfo> info;
  for (const std::string& vm : vms) {
    Status last = Status::OK();
    const bool up = escdr::agent::testing::WaitUntil(
        [&] {
          auto i = cluster.FindVm("h1", vm);
          if (!i || i->forwards.count(6379) == 0) return false;
          info[vm] = *i;
          auto redis = escdr::testing::RedisClient::Connect("127.0.0.1", i->forwards.at(6379),
                                                            seconds(2));
          last = redis.has_value() ? redis->Ping() : redis.error();
          return last.ok();
        },
        seconds(900));
    if (!up) return Status::Timeout(fmt::format("{} did not come up: {}", vm, last.ToString()));
  }
  // A minute for the services to settle, as an operator's VMs would have.
  std::this_thread::sleep_for(seconds(60));
  CliResult learned = cluster.Cli({"--json", "catalog", "learn", "--from-vm", "s1", "--from-vm",
                                   "s2", "--from-vm", "s3"});
  if (!learned.ok()) return Status::Internal("catalog learn: " + learned.err);
  std::printf("  learned from s1, s2, s3: %s\n", learned.out.c_str());

  auto match = [&](int minutes, std::uint64_t ops) -> Status {
    CliResult r = cluster.Cli({"--json", "catalog", "match", "--os", "debian", "--os-version",
                               os_version, "--hypervisor", "qemu", "--hypervisor-version", qemu,
                               info["probe"].ram_path});
    if (!r.ok()) return Status::Internal("catalog match: " + r.err);
    const json doc = json::parse(r.out, nullptr, false);
    Row row{g.name, qemu, minutes};
    for (const json& b : doc.value("blocks", json::array())) {
      const json p = b.value("pages", json::object());
      row.pages += agent::U64Or(p, "total");
      row.zero += agent::U64Or(p, "zero");
      row.by_position += agent::U64Or(p, "by_position");
      row.by_content += agent::U64Or(p, "by_content_only");
      row.other += agent::U64Or(p, "other");
    }
    row.load_ops = ops;
    row.load1 = LoadAverage1();
    std::printf("  %s on QEMU %s after %d min of load: %.0f pages, zero %.0f, by position %.0f, "
                "by content only %.0f (%.1f%% of non-zero static)\n",
                g.name.c_str(), qemu.c_str(), minutes, row.pages, row.zero, row.by_position,
                row.by_content, 100 * (row.by_position + row.by_content) / row.NonZero());
    std::fflush(stdout);
    rows->push_back(row);
    return Status::OK();
  };
  ESCDR_RETURN_IF_ERROR(match(0, 0));
  if (uptimes.empty()) return Status::OK();
  escdr::testing::LoadOptions lo;
  lo.redis_port = info["probe"].forwards.at(6379);
  lo.http_port = info["probe"].forwards.at(80);
  lo.key_count = 16384;
  lo.max_ops_per_second = 200;  // per thread: a steady service, not a stress test
  ESCDR_ASSIGN_OR_RETURN(auto load, escdr::testing::ServiceLoad::Start(lo));
  int elapsed = 0;
  for (int minutes : uptimes) {
    std::this_thread::sleep_for(seconds(60 * (minutes - elapsed)));
    elapsed = minutes;
    const escdr::testing::LoadStats st = load->Stats();
    ESCDR_RETURN_IF_ERROR(match(minutes, st.redis_ops + st.http_requests));
  }
  load->Stop();
  return Status::OK();
}

int Main(int argc, char** argv) {
  std::vector<std::string> guests = {"debian-12", "debian-13"};
  std::vector<std::string> qemus = {"7.2", "10.0"};
  std::vector<int> uptimes;
  std::uint64_t memory_mib = 1024;
  std::string json_path = "distro_catalog_bench.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--guests") guests = SplitList(v);
    else if (a == "--qemu-versions") qemus = SplitList(v);
    else if (a == "--memory") memory_mib = std::strtoull(v.c_str(), nullptr, 10);
    else if (a == "--json") json_path = v;
    else if (a == "--uptime-minutes") {
      for (const std::string& m : SplitList(v)) uptimes.push_back(std::atoi(m.c_str()));
    } else {
      std::fprintf(stderr, "distro_catalog_bench: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "distro_catalog_bench: %s needs a value\n", argv[argc - 1]);
    return 2;
  }
  std::vector<Row> rows;
  int failed = 0;
  for (const std::string& name : guests) {
    auto g = escdr::testing::EnsureDistroGuest(name);
    if (!g.has_value()) {
      std::fprintf(stderr, "distro_catalog_bench: %s\n", g.error().message().c_str());
      return 1;
    }
    for (const std::string& qemu : qemus) {
      std::printf("== %s on QEMU %s: four guests of %llu MiB\n", name.c_str(), qemu.c_str(),
                  static_cast<unsigned long long>(memory_mib));
      std::fflush(stdout);
      Status s = RunCell(*g, qemu, memory_mib, uptimes, &rows);
      if (!s.ok()) {
        std::fprintf(stderr, "distro_catalog_bench: %s on %s: %s\n", name.c_str(), qemu.c_str(),
                     s.message().c_str());
        ++failed;
      }
    }
  }
  json doc = {{"memory_mib", memory_mib}, {"rows", json::array()}};
  for (const Row& r : rows) doc["rows"].push_back(r.ToJson());
  (void)WriteStringToFile(json_path, doc.dump(2) + "\n");
  std::printf("\n| guest | QEMU | minutes of load | non-zero pages | by position | by content only "
              "| static, %% of non-zero | static, %% of all RAM | load |\n"
              "|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %s | %d | %.0f | %.0f (%.1f %%) | %.0f (%.1f %%) | %.1f %% | %.1f %% | %.1f |\n",
                r.guest.c_str(), r.qemu.c_str(), r.uptime_minutes, r.NonZero(), r.by_position,
                100 * r.by_position / r.NonZero(), r.by_content, 100 * r.by_content / r.NonZero(),
                100 * (r.by_position + r.by_content) / r.NonZero(),
                100 * (r.by_position + r.by_content) / r.pages, r.load1);
  }
  std::printf("\nfigures: %s\n", json_path.c_str());
  return failed == 0 ? 0 : 1;
}

}  // namespace
}  // namespace escdr::catbench

int main(int argc, char** argv) { return escdr::catbench::Main(argc, argv); }
