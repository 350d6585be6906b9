// Live migration of the 256 MiB test guest, or of a real distribution guest
// (--guest debian-12), on real QEMU 7.2 or 10.0 (TCG), four ways:
//
//   escdr     `escdr migrate VM --to HOST` through real agents on loopback, to a
//             host that runs a donor of the same kind, with the kind's catalog
//             learned by `escdr catalog learn` from the two running donors;
//   no-escdr  the same command with --no-escdr (same agents and path, nothing
//             elided);
//   direct    the source QEMU's own `migrate` to a destination QEMU started with
//             `-S -incoming defer`, over TCP loopback: the same kernel, command
//             line, RAM backend (share=on file in /dev/shm), return-path
//             capability and max-bandwidth as the agents use;
//   direct-zstd  the same with QEMU's multifd capability on both QEMUs, 4
//             channels, multifd-compression zstd (QEMU's default level): the
//             alternative a user has without escdr.
//
// Both direct paths run through escdr/qemu/direct_migration.h (as the demo's
// "QEMU multifd+zstd" column does) and through a relay (FaultyLink) that
// counts the bytes of every connection, multifd's included: QEMU 7.2 counts
// uncompressed page bytes in ram.transferred, so the relay's count is the
// direct paths' "on the wire". The bandwidth is a cap on the wire for every
// path: `escdr migrate --max-bandwidth` caps the agents' connection (QEMU
// uncapped), and on the direct paths the relay paces at it (QEMU uncapped,
// as its own cap would count multifd pages before compression).
//
// each at a bandwidth of 125 MB/s (1 Gbit/s) and unlimited, several runs
// each, interleaved (run 1 of every path and bandwidth, then run 2, ...) so
// that the load of the shared machine falls on all paths alike. Guest
// variants: `nokaslr` and `kaslr` (idle guests), and `busy` (nokaslr, the
// migrating guest rewrites --busy-mib MiB all the time, escdr.dirty=; 125
// MB/s only).
//
// Every migration is checked: the CLI must succeed, an escdr migration must
// rebuild exactly the bytes the source QEMU wrote and fill every reference
// (from the donor or by fallback), and in every run the destination's RAM file
// is compared page by page with the source's (the destination stays paused
// and the source is kept in postmigrate until the comparison; then the guest
// is resumed at the destination and must go on counting). A run that fails a
// check stops the program with an error: a broken migration is not measured.
//
//   build/bench/migration_bench [--runs N] [--variants nokaslr,kaslr,busy]
//       [--paths escdr,no-escdr,direct,direct-zstd] [--bandwidths 125000000,0]
//       [--busy-mib MiB] [--wire-rate BYTES_PER_S] [--json PATH] [--settle SECONDS]
//       [--insecure] [--qemu-version 7.2|10.0] [--guest debian-12|debian-13 [--memory MiB]
//       [--load-seconds S] [--uptime-minutes M]]
//
// The agents and the CLI speak mutual TLS 1.3 (AgentCluster's throwaway CA),
// as a deployment does; --insecure runs them in plaintext instead, to
// measure what TLS costs.
//
// --wire-rate models a network link in front of every path: every migration
// connection (agent to agent, or QEMU to QEMU) then passes a relay that
// forwards at most that many bytes/s in each direction (on the direct paths
// the lower of it and the bandwidth).
//
// --guest debian-12|debian-13 migrates a real distribution guest instead
// (tools/build-distro-guest.sh, docs/distro-guests.md): --memory MiB (default
// 1024) of RAM, its own qcow2 overlay of the image (the direct path's too),
// a NIC with nginx and redis forwarded to the host, KASLR on as the
// distribution boots. Its variants are `idle` and `loaded` (a load generator
// writes to redis and fetches from nginx for --load-seconds before and
// throughout each migration). A guest counts as running on when redis and
// nginx answer at the destination. --uptime-minutes M lets the guests run M
// minutes (under load for `loaded`) before the first migration.
//
// CPU: for every migration the utime+stime (/proc/PID/stat) the source side
// and the destination side spent: the source QEMU (+ the source agent on the
// escdr paths) from the start of the migration to its end, and the
// destination QEMU (started by the migration, so all of it) + the
// destination agent. The relay in this program is not counted.
//
// Bandwidth 0 means unlimited (--max-bandwidth 64 GiB/s for the agents, no
// pacing in the direct paths' relay). Prints one markdown table per variant and
// writes every run's figures to --json (default migration_bench.json).
//
// Cleanup: agents, their QEMUs, sockets and RAM files go with AgentCluster
// (RAII, by pid); the direct path's QEMUs are QemuProcess objects started by
// this program, stopped and their RAM files removed when they go out of
// scope. SIGINT/SIGTERM stop the program after the migration in progress.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "agent/agent_cluster_testing.h"
#include "agent/json_util.h"
#include "agent/link_testing.h"
#include "agent/vm_records.h"
#include "escdr/agent/agent_client.h"
#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"
#include "escdr/qemu/direct_migration.h"
#include "escdr/qemu/launcher.h"
#include "escdr/qemu/qemu_install.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/clock.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"
#include "testing/guest_services.h"
#include "testing/test_guest.h"

namespace escdr::migbench {
namespace {

using escdr::bench::LoadAverage1;
using escdr::bench::SplitList;

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Cluster = escdr::agent::testing::AgentCluster;
using escdr::agent::testing::CliResult;
using escdr::agent::testing::FaultyLink;

constexpr std::uint64_t kUnlimited = 64ull << 30;  // bytes/s
constexpr const char* kVm = "mig";
// Every guest's RAM: 256 MiB for the test guest, --memory for a real one.
std::uint64_t g_memory_mib = 256;
// The guests' kind; its hypervisor_version is --qemu-version (default 7.2,
// the host's QEMU; 10.0 runs every path on tools/install-qemu.sh's tree).
VmKind kKind{"debian", "12", "qemu", "7.2"};

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

struct Config {
  int runs = 3;
  std::vector<std::string> variants = {"nokaslr", "kaslr"};
  std::vector<std::string> paths = {"escdr", "no-escdr", "direct", "direct-zstd"};
  std::vector<std::uint64_t> bandwidths = {125000000, 0};
  std::uint64_t busy_mib = 32;
  std::string json_path = "migration_bench.json";
  int settle_s = 2;
  // > 0: every migration connection goes through a relay that forwards at
  // most this many bytes/s in each direction (a network link of that rate).
  std::uint64_t wire_rate = 0;
  // Plaintext agent channels (--insecure) instead of mutual TLS.
  bool insecure = false;
  std::string qemu_version = "7.2";
  std::string guest;  // "" = the test guest; else a distribution guest
  int load_seconds = 20;
  int uptime_minutes = 0;
};

struct Variant {
  std::string name;
  bool kaslr = false;
  std::uint64_t dirty_mib = 0;  // on the migrating guest only
  std::vector<std::uint64_t> bandwidths;
  bool service_load = false;    // a real guest's redis and nginx kept busy
};

// ---------------------------------------------------------------- guests

// What the benchmark migrates: escdr's test guest (a kernel and a busybox
// initramfs that prints "escdr-counter N" every second) or a real
// distribution guest with a disk, a NIC and its services.
class BenchGuest {
 public:
  static Result<BenchGuest> Find(const std::string& distro) {
    BenchGuest g;
    if (distro.empty()) {
      ESCDR_ASSIGN_OR_RETURN(g.test_dir_, escdr::testing::EnsureGuestBuilt());
    } else {
      ESCDR_ASSIGN_OR_RETURN(g.distro_, escdr::testing::EnsureDistroGuest(distro));
    }
    return g;
  }
  bool real() const { return distro_.has_value(); }
  std::string Describe() const { return real() ? distro_->dir : test_dir_; }

  // The `escdr vm create` arguments after the kind.
  std::vector<std::string> CreateArgs(const Variant& v, bool migrating,
                                      const std::string& disk_dir) const {
    if (real()) {
      return {"--memory", std::to_string(g_memory_mib), "--disk-from", distro_->disk, "--disk-dir",
              disk_dir, "--forward", "80", "--forward", "6379", "--kernel", distro_->kernel,
              "--initrd", distro_->initrd, "--append", distro_->cmdline};
    }
    return {"--memory", std::to_string(g_memory_mib), "--kernel", test_dir_ + "/vmlinuz",
            "--initrd", test_dir_ + "/initrd.img", "--append", TestAppend(v, migrating)};
  }

  // The direct path's first QEMU: the same hardware, its own overlay in `dir`.
  Status FillDirectSpec(const Variant& v, const std::string& dir, LaunchSpec* spec) const {
    spec->memory_mib = g_memory_mib;
    if (!real()) {
      spec->kernel = test_dir_ + "/vmlinuz";
      spec->initrd = test_dir_ + "/initrd.img";
      spec->append = TestAppend(v, true);
      return Status::OK();
    }
    spec->kernel = distro_->kernel;
    spec->initrd = distro_->initrd;
    spec->append = distro_->cmdline;
    const std::string overlay = dir + "/direct.qcow2";
    SubprocessOptions o;
    o.argv = {"qemu-img", "create", "-q", "-f", "qcow2", "-b", distro_->disk, "-F", "raw", overlay};
    ESCDR_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(o));
    ESCDR_ASSIGN_OR_RETURN(ExitStatus st, p.Wait());
    if (!st.success()) return Status::IOError("qemu-img create " + overlay + ": " + st.ToString());
    spec->disks = {{overlay, "qcow2", false}};
    NicSpec nic;
    nic.mac = MacForVm("direct", 0);
    nic.forwards = {{80, 0}, {6379, 0}};
    spec->nics = {nic};
    return ResolveHostPorts(spec);
  }

  // Up after boot: the counter has reached 3, or redis and nginx answer.
  Status WaitUp(const std::string& serial_log, const std::map<std::uint16_t, std::uint16_t>& fwd,
                seconds timeout) const {
    Status last = Status::OK();
    const bool up = escdr::agent::testing::WaitUntil(
        [&] {
          if (!real()) return escdr::agent::testing::Counter(serial_log) >= 3;
          last = ServicesAnswer(fwd);
          return last.ok();
        },
        timeout);
    if (up) return Status::OK();
    return Status::Timeout(fmt::format("the guest did not come up ({}): {}", last.ToString(),
                                       SerialLogTail(serial_log)));
  }

  // Running on at a destination: the counter advances, or the services answer.
  Status RunsOn(const std::string& serial_log,
                const std::map<std::uint16_t, std::uint16_t>& fwd) const {
    if (!real()) {
      return escdr::agent::testing::CounterAdvances(serial_log, seconds(60))
                 ? Status::OK()
                                         : Status::Aborted("the guest does not count on: " +
                                                           SerialLogTail(serial_log));
    }
    return WaitUp(serial_log, fwd, seconds(60));
  }

  static Status ServicesAnswer(const std::map<std::uint16_t, std::uint16_t>& fwd) {
    if (fwd.count(80) == 0 || fwd.count(6379) == 0) {
      return Status::NotFound("ports 80 and 6379 are not forwarded");
    }
    ESCDR_ASSIGN_OR_RETURN(auto redis,
                           escdr::testing::RedisClient::Connect("127.0.0.1", fwd.at(6379), seconds(2)));
    ESCDR_RETURN_IF_ERROR(redis.Ping());
    ESCDR_ASSIGN_OR_RETURN(auto page, escdr::testing::HttpGet("127.0.0.1", fwd.at(80), "/", seconds(5)));
    if (page.status != 200) return Status::Unavailable(fmt::format("nginx answered {}", page.status));
    return Status::OK();
  }

 private:
  static std::string TestAppend(const Variant& v, bool migrating) {
    std::string a = v.kaslr ? "console=ttyS0 quiet" : "console=ttyS0 quiet nokaslr";
    if (migrating && v.dirty_mib > 0) a += fmt::format(" escdr.dirty={}", v.dirty_mib);
    return a;
  }
  std::string test_dir_;
  std::optional<escdr::testing::DistroGuest> distro_;
};

// One migration's figures. Fields that a path does not have stay at -1.
struct Sample {
  std::string variant, path;
  std::uint64_t bandwidth = 0;  // 0: unlimited
  int run = 0;
  std::string from, to;
  // Bytes on the wire: escdr/no-escdr the source session's frames sent +
  // received; direct paths the relay's bytes, both directions, all
  // connections (the whole stream, device state and return path included).
  double wire_bytes = 0;
  // Bytes the source QEMU wrote (escdr/no-escdr: the whole stream, header to
  // vmdesc; direct paths: ram.transferred, device state not counted, and
  // under multifd the pages before compression).
  double stream_bytes = 0;
  double qemu_total_s = 0;       // source QEMU's query-migrate total-time
  double end_to_end_s = 0;       // escdr: the CLI's BeginMigration..result; direct: dest start..loaded
  double qemu_downtime_ms = 0;   // source QEMU's query-migrate downtime
  double escdr_downtime_ms = -1; // MigrationReport::downtime (ram END .. destination loaded)
  double qemu_downtime_bytes = 0;
  // Direct paths: the source QEMU's ram.multifd-bytes (0 without multifd),
  // and the TCP connections the relay forwarded (1 + multifd channels).
  double multifd_bytes = -1;
  int connections = -1;
  double rounds = 0;
  double page_records = -1, zero_records = -1;
  double by_position = -1, by_content = -1, from_donor = -1, fallbacks = -1, window_full = -1;
  // The wire codec (escdr paths): PAGE payloads sent as Dup entries, and the
  // frames handed to the compressor against the bytes written for them.
  double deduplicated = -1, codec_frame_bytes = -1, codec_wire_bytes = -1;
  double scan_ms = -1;  // the destination's donor scan (MigrationReport::scan_time)
  double load_before = 0, load_after = 0;  // 1-minute load average
  // CPU seconds (utime+stime) of the source QEMU (+ source agent) and of the
  // destination QEMU (+ destination agent) during the migration.
  double cpu_source_s = -1, cpu_destination_s = -1;
  // escdr paths: seconds the source agent spent in each phase (phase_s).
  json phase_s = json::object();
  std::string ram_check;  // "identical" (anything else stops the program)
  std::string donor;
  // A real guest: minutes it ran before the first migration, and the service
  // load's requests and errors around this migration (-1 without load).
  int uptime_minutes = 0;
  double load_ops = -1, load_errors = -1;

  // Guest RAM in GiB, the divisor of the CPU-per-GiB figures.
  static double GiB() { return static_cast<double>(g_memory_mib) / 1024.0; }

  json ToJson() const {
    return {{"variant", variant},         {"path", path},
            {"bandwidth", bandwidth},     {"run", run},
            {"from", from},               {"to", to},
            {"donor", donor},             {"wire_bytes", wire_bytes},
            {"stream_bytes", stream_bytes}, {"qemu_total_s", qemu_total_s},
            {"end_to_end_s", end_to_end_s}, {"qemu_downtime_ms", qemu_downtime_ms},
            {"escdr_downtime_ms", escdr_downtime_ms},
            {"qemu_downtime_bytes", qemu_downtime_bytes},
            {"qemu_multifd_bytes", multifd_bytes},
            {"relay_connections", connections},
            {"rounds", rounds},           {"page_records", page_records},
            {"zero_records", zero_records}, {"pages_by_position", by_position},
            {"pages_by_content", by_content}, {"pages_from_donor", from_donor},
            {"fallbacks", fallbacks},     {"pages_window_full", window_full},
            {"pages_deduplicated", deduplicated},
            {"codec_frame_bytes", codec_frame_bytes}, {"codec_wire_bytes", codec_wire_bytes},
            {"donor_scan_ms", scan_ms},
            {"load1_before", load_before}, {"load1_after", load_after},
            {"cpu_source_s", cpu_source_s}, {"cpu_destination_s", cpu_destination_s},
            {"cpu_source_s_per_gib", cpu_source_s < 0 ? -1 : cpu_source_s / GiB()},
            {"cpu_destination_s_per_gib", cpu_destination_s < 0 ? -1 : cpu_destination_s / GiB()},
            {"phase_s", phase_s},
            {"uptime_minutes", uptime_minutes},
            {"load_ops", load_ops},       {"load_errors", load_errors},
            {"ram_check", ram_check}};
  }
};


std::string BandwidthName(std::uint64_t bw) {
  if (bw == 0) return "unlimited";
  return bw % 1000000 == 0 ? fmt::format("{} MB/s", bw / 1000000)
                           : fmt::format("{:.1f} MB/s", static_cast<double>(bw) / 1e6);
}

// Page-by-page comparison of two guest RAM files: "identical", or what differs.
std::string DiffRam(const std::string& a, const std::string& b) {
  auto ia = OpenRamFile(a);
  auto ib = OpenRamFile(b);
  if (!ia.has_value()) return "cannot open " + a + ": " + ia.error().message();
  if (!ib.has_value()) return "cannot open " + b + ": " + ib.error().message();
  const std::uint64_t len = (*ia)->blocks()[0].length;
  if (len != (*ib)->blocks()[0].length) return "the RAM files differ in size";
  const std::uint8_t* pa = (*ia)->BlockData(0);
  const std::uint8_t* pb = (*ib)->BlockData(0);
  std::uint64_t differing = 0, first = 0;
  for (std::uint64_t off = 0; off < len; off += kPageSize) {
    if (std::memcmp(pa + off, pb + off, kPageSize) != 0 && differing++ == 0) first = off;
  }
  if (differing == 0) return "identical";
  // Which side still changes? Look at the first differing page again later.
  const std::vector<std::uint8_t> a0(pa + first, pa + first + kPageSize), b0(pb + first, pb + first + kPageSize);
  std::this_thread::sleep_for(seconds(2));
  const bool a_changed = std::memcmp(a0.data(), pa + first, kPageSize) != 0;
  const bool b_changed = std::memcmp(b0.data(), pb + first, kPageSize) != 0;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < kPageSize; ++i) bytes += a0[i] != b0[i];
  return fmt::format("{} pages differ, the first at offset {:#x} ({} bytes of it; 2 s later the source's "
                     "copy {}, the destination's {})",
                     differing, first, bytes, a_changed ? "had changed" : "was the same",
                     b_changed ? "had changed" : "was the same");
}

// ---------------------------------------------------------------- CPU

// CPU seconds (utime + stime, all threads) process `pid` has used so far,
// from /proc/PID/stat.
Result<double> CpuSeconds(pid_t pid) {
  const std::string path = fmt::format("/proc/{}/stat", pid);
  ESCDR_ASSIGN_OR_RETURN(std::string stat, ReadFileToString(path));
  // The command name (field 2) is in parentheses and may hold spaces: count
  // fields from the last ')'. utime and stime are fields 14 and 15.
  const std::size_t close = stat.rfind(')');
  if (close == std::string::npos) return Err(Status::ProtocolError(path + " has no command name"));
  const char* p = stat.c_str() + close + 1;
  unsigned long long v[13] = {};
  int field = 3;
  char* end = nullptr;
  for (; field <= 15; ++field) {
    while (*p == ' ') ++p;
    if (field == 3) {  // the state, one character
      if (*p == '\0') break;
      ++p;
      continue;
    }
    v[field - 3] = std::strtoull(p, &end, 10);
    if (end == p) break;
    p = end;
  }
  if (field <= 15) return Err(Status::ProtocolError(fmt::format("{} has fewer than 15 fields", path)));
  return static_cast<double>(v[11] + v[12]) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// The sum of CpuSeconds over `pids`, or -1 when one cannot be read (the
// figure is then left out of the table, not made up).
double CpuSum(const std::vector<pid_t>& pids) {
  double sum = 0;
  for (pid_t pid : pids) {
    Result<double> c = CpuSeconds(pid);
    if (!c.has_value()) {
      std::fprintf(stderr, "migration_bench: CPU of pid %d: %s\n", static_cast<int>(pid),
                   c.error().message().c_str());
      return -1;
    }
    sum += *c;
  }
  return sum;
}

// ---------------------------------------------------------------- escdr paths

class EscdrPaths {
 public:
  EscdrPaths(const Variant& v, const BenchGuest& guest, bool insecure)
      : variant_(v),
        guest_(guest),
        cluster_(insecure ? Cluster::Channel::kInsecure : Cluster::Channel::kTls) {}

  // Three agents (h1, h2, h3); the migrating VM on h1, donors on h2 and h3;
  // the kind's catalog learned from the two donors. Does not wait for the
  // guests to boot (Settle does).
  Status Start() {
    for (const char* h : {"h1", "h2", "h3"}) ESCDR_RETURN_IF_ERROR(cluster_.StartAgent(h));
    for (const auto& [vm, host] : kPlacement) {
      std::vector<std::string> args = {"vm", "create", vm, "--host", host, "--os", kKind.os,
                                       "--os-version", kKind.os_version, "--hypervisor-version",
                                       kKind.hypervisor_version};
      for (std::string& a : guest_.CreateArgs(variant_, vm == kVm, cluster_.root() + "/disks")) {
        args.push_back(std::move(a));
      }
      CliResult r = cluster_.Cli(args);
      if (!r.ok()) return Status::Internal(fmt::format("vm create {} on {}: {}", vm, host, r.err));
    }
    host_ = "h1";
    return Status::OK();
  }

  Status Settle() {
    for (const auto& [vm, host] : kPlacement) {
      auto info = cluster_.FindVm(host, vm);
      if (!info) return Status::NotFound(fmt::format("VM {} is not listed by agent {}", vm, host));
      ESCDR_RETURN_IF_ERROR(guest_.WaitUp(info->serial_log, info->forwards, seconds(900))
                                .WithContext("VM " + vm));
      if (vm != kVm) donor_rams_.push_back(info->ram_path);
    }
    return Status::OK();
  }

  // The catalog, learned from the donors as they are now.
  Status Learn() {
    std::vector<std::string> learn = {"catalog", "learn", "--os", kKind.os, "--os-version",
                                      kKind.os_version, "--hypervisor", kKind.hypervisor,
                                      "--hypervisor-version", kKind.hypervisor_version};
    learn.insert(learn.end(), donor_rams_.begin(), donor_rams_.end());
    CliResult r = cluster_.Cli(learn);
    if (!r.ok()) return Status::Internal("catalog learn: " + r.err);
    std::printf("  %s", r.out.c_str());
    return Status::OK();
  }

  // The migrating VM's forwarded ports where it runs now.
  std::map<std::uint16_t, std::uint16_t> Forwards() {
    auto info = cluster_.FindVm(host_, kVm);
    return info ? info->forwards : std::map<std::uint16_t, std::uint16_t>{};
  }

  // One migration of the VM to the other donor host, checked.
  Result<Sample> Migrate(bool escdr, std::uint64_t bandwidth, std::uint64_t wire_rate) {
    const std::string src = host_;
    const std::string dst = src == "h2" ? "h3" : "h2";
    Sample s;
    s.path = escdr ? "escdr" : "no-escdr";
    s.from = src;
    s.to = dst;
    std::vector<std::string> args = {"--json", "migrate", kVm, "--to", dst, "--max-bandwidth",
                                     std::to_string(bandwidth == 0 ? kUnlimited : bandwidth),
                                     "--keep-paused", "--keep-source", "--timeout", "600"};
    if (!escdr) args.push_back("--no-escdr");
    std::unique_ptr<FaultyLink> link;
    if (wire_rate > 0) {
      ESCDR_ASSIGN_OR_RETURN(link, FaultyLink::Start(cluster_.Address(dst)));
      link->SetRate(wire_rate);
      args.insert(args.end(), {"--destination-address", link->address()});
    }
    auto vm = cluster_.FindVm(src, kVm);
    if (!vm) return Err(Status::NotFound(fmt::format("VM {} is not listed by agent {}", kVm, src)));
    const pid_t src_qemu = static_cast<pid_t>(vm->pid);
    const std::vector<pid_t> agents = {cluster_.AgentPid(src), cluster_.AgentPid(dst)};
    const double cpu_src0 = CpuSum({src_qemu, agents[0]});
    const double cpu_dst_agent0 = CpuSum({agents[1]});
    s.load_before = LoadAverage1();
    CliResult r = cluster_.Cli(args);
    s.load_after = LoadAverage1();
    // Both QEMUs are still there (--keep-source, --keep-paused).
    const double cpu_src1 = CpuSum({src_qemu, agents[0]});
    const double cpu_dst_agent1 = CpuSum({agents[1]});
    if (!r.ok()) {
      return Err(Status::Aborted(fmt::format("escdr migrate {} {} -> {} failed: {}\nsource agent: {}\ndestination agent: {}",
                                             s.path, src, dst, r.err, cluster_.AgentLog(src), cluster_.AgentLog(dst))));
    }
    json out;
    try {
      out = json::parse(r.out);
    } catch (const json::exception& e) {
      return Err(Status::ProtocolError(fmt::format("escdr --json migrate printed no JSON ({}): {}", e.what(), r.out)));
    }
    // The CLI succeeded: from here on the VM's home is the destination.
    host_ = dst;
    const MigrationReport rep = agent::MigrationReportFromJson(out.value("report", json::object()));
    const agent::VmInfo dest = agent::VmInfo::FromJson(out.value("destination_vm", json::object()));
    const double cpu_dst_qemu = CpuSum({static_cast<pid_t>(dest.pid)});
    if (cpu_src0 >= 0 && cpu_src1 >= 0) s.cpu_source_s = cpu_src1 - cpu_src0;
    if (cpu_dst_agent0 >= 0 && cpu_dst_agent1 >= 0 && cpu_dst_qemu >= 0) {
      s.cpu_destination_s = cpu_dst_agent1 - cpu_dst_agent0 + cpu_dst_qemu;
    }
    s.donor = agent::StringOr(out, "donor");
    s.wire_bytes = static_cast<double>(rep.wire_bytes_sent + rep.wire_bytes_received);
    s.stream_bytes = static_cast<double>(rep.stream_bytes);
    s.qemu_total_s = static_cast<double>(agent::U64Or(out, "qemu_total_time_ms")) / 1000.0;
    s.end_to_end_s = static_cast<double>(agent::U64Or(out, "total_ms")) / 1000.0;
    s.qemu_downtime_ms = static_cast<double>(agent::U64Or(out, "qemu_downtime_ms"));
    s.escdr_downtime_ms = rep.downtime_measured ? static_cast<double>(rep.downtime.count()) / 1000.0 : -1;
    s.qemu_downtime_bytes = static_cast<double>(agent::U64Or(out, "qemu_downtime_bytes"));
    s.rounds = static_cast<double>(agent::U64Or(out, "qemu_rounds"));
    s.page_records = static_cast<double>(rep.page_records);
    s.zero_records = static_cast<double>(rep.zero_records);
    s.by_position = static_cast<double>(rep.pages_by_position);
    s.by_content = static_cast<double>(rep.pages_by_content);
    s.from_donor = static_cast<double>(rep.pages_from_donor);
    s.fallbacks = static_cast<double>(rep.fallbacks);
    s.window_full = static_cast<double>(rep.pages_window_full);
    s.deduplicated = static_cast<double>(rep.pages_deduplicated);
    s.codec_frame_bytes = static_cast<double>(rep.codec_frame_bytes);
    s.codec_wire_bytes = static_cast<double>(rep.codec_wire_bytes);
    s.scan_ms = static_cast<double>(rep.scan_time.count()) / 1000.0;
    if (auto it = out.find("phase_s"); it != out.end() && it->is_object()) s.phase_s = *it;

    // The report's own invariants.
    if (rep.rebuilt_bytes != rep.stream_bytes || rep.stream_bytes == 0) {
      return Err(Status::Corruption(fmt::format("{}: the destination wrote {} bytes of a {}-byte stream",
                                                s.path, rep.rebuilt_bytes, rep.stream_bytes)));
    }
    if (rep.pages_from_donor + rep.fallbacks != rep.pages_elided()) {
      return Err(Status::Corruption(fmt::format("{}: {} pages elided but {} from the donor and {} fallbacks",
                                                s.path, rep.pages_elided(), rep.pages_from_donor, rep.fallbacks)));
    }
    if (!escdr && rep.pages_elided() != 0) {
      return Err(Status::Corruption(fmt::format("--no-escdr elided {} pages", rep.pages_elided())));
    }
    if (escdr && rep.pages_elided() == 0) {
      return Err(Status::FailedPrecondition(fmt::format(
          "escdr elided nothing (donor '{}', note '{}')", s.donor, agent::StringOr(out, "note"))));
    }

    // The kept source (postmigrate) and the paused destination hold the same RAM.
    std::string src_ram;
    for (const agent::VmRecord& rec : cluster_.Records(src)) {
      if (rec.name == kVm && rec.role == agent::VmRole::kMigrated) src_ram = rec.spec.ram_path;
    }
    if (src_ram.empty()) return Err(Status::NotFound("the kept source of " + std::string(kVm) + " on " + src));
    s.ram_check = DiffRam(src_ram, dest.ram_path);
    if (s.ram_check != "identical") {
      return Err(Status::Corruption(fmt::format("{} {} -> {}: destination RAM differs from the source's: {}",
                                                s.path, src, dst, s.ram_check)));
    }
    // Resume at the destination, drop the kept source, and see the guest count on.
    CliResult started = cluster_.Cli({"vm", "start", kVm});
    if (!started.ok()) return Err(Status::Internal("vm start after migration: " + started.err));
    Status stopped = cluster_.Client(src).StopVm(kVm);
    if (!stopped.ok()) return Err(stopped.WithContext("removing the kept source on " + src));
    ESCDR_RETURN_IF_ERROR(guest_.RunsOn(dest.serial_log, dest.forwards).WithContext("at " + dst));
    return s;
  }

 private:
  static inline const std::vector<std::pair<std::string, std::string>> kPlacement = {
      {kVm, "h1"}, {"donor-b", "h2"}, {"donor-c", "h3"}};
  Variant variant_;
  const BenchGuest& guest_;
  Cluster cluster_;
  std::string host_;
  std::vector<std::string> donor_rams_;
};

// ---------------------------------------------------------------- direct path

class DirectPath {
 public:
  DirectPath(const Variant& v, const BenchGuest& guest) : variant_(v), guest_(guest) {}

  Status Start() {
    ESCDR_ASSIGN_OR_RETURN(dir_, TempDir::Create("escdr-migbench", "/dev/shm"));
    LaunchSpec spec;
    ESCDR_RETURN_IF_ERROR(guest_.FillDirectSpec(variant_, dir_.path(), &spec));
    SetPaths(spec, 0);
    // The QEMU of the guests' series: the host's, or the 10.0 tree.
    const std::string qemu10 = escdr::agent::testing::Qemu10Dir();
    ESCDR_ASSIGN_OR_RETURN(QemuInstall qemu,
                           ProbeQemuInstall(kKind.hypervisor_version == "7.2" || qemu10.empty()
                                                ? std::string("qemu-system-x86_64")
                                                : qemu10));
    if (qemu.Series() != kKind.hypervisor_version) {
      return Status::NotFound(fmt::format("no QEMU {} here (tools/install-qemu.sh)",
                                          kKind.hypervisor_version));
    }
    ESCDR_RETURN_IF_ERROR(UseQemuInstall(qemu, &spec));
    QemuProcessOptions o;
    o.remove_ram_file = true;
    ESCDR_ASSIGN_OR_RETURN(current_, QemuProcess::Start(spec, o));
    return Status::OK();
  }

  Status Settle() {
    return guest_.WaitUp(current_->spec().serial_log, Forwards(), seconds(900))
        .WithContext("the direct path's guest");
  }

  std::map<std::uint16_t, std::uint16_t> Forwards() const { return ForwardedPorts(current_->spec()); }

  // One migration of the current QEMU to a new one, checked. `zstd`: the
  // direct-zstd path (multifd, 4 channels, zstd); else plain `direct`.
  Result<Sample> Migrate(std::uint64_t bandwidth, std::uint64_t wire_rate, bool zstd) {
    Sample s;
    s.path = zstd ? "direct-zstd" : "direct";
    s.from = fmt::format("qemu{}", generation_);
    s.to = fmt::format("qemu{}", generation_ + 1);
    LaunchSpec spec = current_->spec();
    SetPaths(spec, generation_ + 1);
    // The destination QEMU forwards ports of its own: the source still holds its.
    for (NicSpec& n : spec.nics) {
      for (PortForward& f : n.forwards) f.host_port = 0;
    }
    ESCDR_RETURN_IF_ERROR(ResolveHostPorts(&spec));
    DirectMigrationOptions o;
    // The bandwidth caps the bytes on the wire, as `escdr migrate
    // --max-bandwidth` caps the agents' connection (QEMU uncapped there too):
    // QEMU 7.2 charges its own max-bandwidth with multifd pages before
    // compression, which would hold direct-zstd to the rate of bytes it
    // does not send. So QEMU is uncapped and the relay paces.
    o.max_bandwidth = kUnlimited;
    std::uint64_t rate = bandwidth;
    if (wire_rate > 0 && (rate == 0 || wire_rate < rate)) rate = wire_rate;
    o.multifd = zstd;
    o.multifd_channels = 4;
    o.multifd_compression = zstd ? "zstd" : "none";
    o.destination_options.remove_ram_file = true;
    // Every connection (the main one and multifd's) passes the relay, which
    // counts their bytes and, with --wire-rate, paces them.
    std::unique_ptr<FaultyLink> link;
    o.route = [&](const std::string& host, std::uint16_t port) -> Result<std::string> {
      ESCDR_ASSIGN_OR_RETURN(link, FaultyLink::Start(fmt::format("{}:{}", host, port)));
      link->SetRate(rate);
      return link->address();
    };
    const pid_t src_pid = current_->pid();
    const double cpu_src0 = CpuSum({src_pid});
    s.load_before = LoadAverage1();
    ESCDR_ASSIGN_OR_RETURN(DirectMigrationResult m, MigrateDirect(current_->qmp(), spec, o));
    s.load_after = LoadAverage1();
    const double cpu_src1 = CpuSum({src_pid});
    const double cpu_dst = CpuSum({m.destination->pid()});
    if (cpu_src0 >= 0 && cpu_src1 >= 0) s.cpu_source_s = cpu_src1 - cpu_src0;
    s.cpu_destination_s = cpu_dst;
    const MigrationInfo& info = m.source;
    s.end_to_end_s = static_cast<double>(m.elapsed.count()) / 1e6;
    s.wire_bytes = static_cast<double>(link->forwarded());
    s.connections = link->connections();
    s.stream_bytes = static_cast<double>(info.ram_transferred);
    s.multifd_bytes = static_cast<double>(info.ram_multifd_bytes);
    s.qemu_total_s = static_cast<double>(info.total_time_ms) / 1000.0;
    s.qemu_downtime_ms = static_cast<double>(info.downtime_ms);
    s.qemu_downtime_bytes = static_cast<double>(info.ram_downtime_bytes);
    s.rounds = static_cast<double>(info.ram_dirty_sync_count);
    s.page_records = static_cast<double>(info.ram_normal);
    s.zero_records = static_cast<double>(info.ram_duplicate);

    s.ram_check = DiffRam(current_->spec().ram_path, m.destination->spec().ram_path);
    if (s.ram_check != "identical") {
      return Err(Status::Corruption(s.path + ": destination RAM differs from the source's: " + s.ram_check));
    }
    ESCDR_RETURN_IF_ERROR(Cont(m.destination->qmp()));
    (void)current_->Stop();  // the source, in postmigrate; its RAM file goes with it
    current_ = std::move(m.destination);
    ++generation_;
    ESCDR_RETURN_IF_ERROR(guest_.RunsOn(current_->spec().serial_log, Forwards())
                              .WithContext(s.path + " destination"));
    return s;
  }

 private:
  void SetPaths(LaunchSpec& spec, int gen) const {
    spec.name = fmt::format("migbench-direct-{}", gen);
    spec.ram_path = dir_.File(fmt::format("g{}.ram", gen));
    spec.qmp_socket = dir_.File(fmt::format("g{}.qmp", gen));
    spec.serial_log = dir_.File(fmt::format("g{}.serial", gen));
  }

  Variant variant_;
  const BenchGuest& guest_;
  TempDir dir_;
  std::unique_ptr<QemuProcess> current_;
  int generation_ = 0;
};

// ---------------------------------------------------------------- report

struct Stat {
  double median = 0, min = 0, max = 0;
  bool valid = false;
};

Stat Of(std::vector<double> v) {
  Stat s;
  std::erase_if(v, [](double x) { return x < 0; });
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.valid = true;
  s.min = v.front();
  s.max = v.back();
  const std::size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  return s;
}

// "median (min–max)" with `fmt_spec` for each number, scaled by `scale`.
std::string Cell(const Stat& s, double scale, const char* spec) {
  if (!s.valid) return "–";
  const std::string m = fmt::format(fmt::runtime(spec), s.median / scale);
  if (s.min == s.max) return m;
  return fmt::format("{} ({}–{})", m, fmt::format(fmt::runtime(spec), s.min / scale),
                     fmt::format(fmt::runtime(spec), s.max / scale));
}

// A CPU figure per GiB of guest RAM; -1 (no figure) stays -1.
double PerGiB(double cpu_s) { return cpu_s < 0 ? -1 : cpu_s / Sample::GiB(); }

template <typename F>
Stat Field(const std::vector<Sample>& v, F f) {
  std::vector<double> x;
  for (const Sample& s : v) x.push_back(f(s));
  return Of(x);
}

std::string Table(const std::string& variant, const std::vector<Sample>& all,
                  const std::vector<std::uint64_t>& bandwidths, const std::vector<std::string>& paths) {
  std::string t = fmt::format(
      "\n### {}\n\n"
      "| path | bandwidth | runs | wire MiB | QEMU stream MiB | wire / stream | QEMU total s | end-to-end s "
      "| downtime QEMU ms | downtime escdr ms | RAM sent stopped MiB | rounds | PAGE records | by position "
      "| by content | deduplicated | compressed / frames | fallbacks | donor scan ms | CPU source s "
      "| CPU destination s | CPU source s/GiB | CPU destination s/GiB | RAM |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      variant);
  for (std::uint64_t bw : bandwidths) {
    for (const std::string& path : paths) {
      std::vector<Sample> v;
      for (const Sample& s : all) {
        if (s.variant == variant && s.bandwidth == bw && s.path == path) v.push_back(s);
      }
      if (v.empty()) continue;
      constexpr double kMiB = 1024.0 * 1024.0;
      const Stat ratio = Field(v, [](const Sample& s) { return s.wire_bytes / s.stream_bytes * 100; });
      std::size_t identical = 0;
      for (const Sample& s : v) identical += s.ram_check == "identical";
      t += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} "
                       "| {} | {} | {} | {} | {} | {} | {}/{} identical |\n",
                       path, BandwidthName(bw), v.size(),
                       Cell(Field(v, [](const Sample& s) { return s.wire_bytes; }), kMiB, "{:.1f}"),
                       Cell(Field(v, [](const Sample& s) { return s.stream_bytes; }), kMiB, "{:.1f}"),
                       Cell(ratio, 1, "{:.1f} %"),
                       Cell(Field(v, [](const Sample& s) { return s.qemu_total_s; }), 1, "{:.2f}"),
                       Cell(Field(v, [](const Sample& s) { return s.end_to_end_s; }), 1, "{:.2f}"),
                       Cell(Field(v, [](const Sample& s) { return s.qemu_downtime_ms; }), 1, "{:.0f}"),
                       Cell(Field(v, [](const Sample& s) { return s.escdr_downtime_ms; }), 1, "{:.0f}"),
                       Cell(Field(v, [](const Sample& s) { return s.qemu_downtime_bytes; }), kMiB, "{:.1f}"),
                       Cell(Field(v, [](const Sample& s) { return s.rounds; }), 1, "{:.0f}"),
                       Cell(Field(v, [](const Sample& s) { return s.page_records; }), 1, "{:.0f}"),
                       Cell(Field(v, [](const Sample& s) { return s.by_position; }), 1, "{:.0f}"),
                       Cell(Field(v, [](const Sample& s) { return s.by_content; }), 1, "{:.0f}"),
                       Cell(Field(v, [](const Sample& s) { return s.deduplicated; }), 1, "{:.0f}"),
                       Cell(Field(v,
                                  [](const Sample& s) {
                                    return s.codec_frame_bytes > 0
                                               ? s.codec_wire_bytes / s.codec_frame_bytes
                                               : -1;
                                  }),
                            1, "{:.3f}"),
                       Cell(Field(v, [](const Sample& s) { return s.fallbacks; }), 1, "{:.0f}"),
                       Cell(Field(v, [](const Sample& s) { return s.scan_ms; }), 1, "{:.0f}"),
                       Cell(Field(v, [](const Sample& s) { return s.cpu_source_s; }), 1, "{:.2f}"),
                       Cell(Field(v, [](const Sample& s) { return s.cpu_destination_s; }), 1, "{:.2f}"),
                       Cell(Field(v, [](const Sample& s) { return PerGiB(s.cpu_source_s); }), 1, "{:.1f}"),
                       Cell(Field(v, [](const Sample& s) { return PerGiB(s.cpu_destination_s); }), 1, "{:.1f}"),
                       identical, v.size());
    }
  }
  const Stat load = Field(std::vector<Sample>(all), [&](const Sample& s) {
    return s.variant == variant ? (s.load_before + s.load_after) / 2 : -1;
  });
  t += fmt::format("\n1-minute load average during the runs: median {:.2f}, {:.2f}–{:.2f}\n",
                   load.median, load.min, load.max);
  return t;
}

// ---------------------------------------------------------------- main


bool IsDirect(const std::string& path) { return path == "direct" || path == "direct-zstd"; }

Result<Config> ParseArgs(int argc, char** argv) {
  Config c;
  bool memory_given = false, variants_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> Result<std::string> {
      if (i + 1 >= argc) return Err(Status::InvalidArgument(a + " needs a value"));
      return std::string(argv[++i]);
    };
    if (a == "--runs") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.runs = std::atoi(v.c_str());
    } else if (a == "--variants") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.variants = SplitList(v);
      variants_given = true;
    } else if (a == "--paths") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.paths = SplitList(v);
    } else if (a == "--bandwidths") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.bandwidths.clear();
      for (const std::string& b : SplitList(v)) c.bandwidths.push_back(std::strtoull(b.c_str(), nullptr, 10));
    } else if (a == "--busy-mib") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.busy_mib = std::strtoull(v.c_str(), nullptr, 10);
    } else if (a == "--json") {
      ESCDR_ASSIGN_OR_RETURN(c.json_path, value());
    } else if (a == "--wire-rate") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.wire_rate = std::strtoull(v.c_str(), nullptr, 10);
    } else if (a == "--qemu-version") {
      ESCDR_ASSIGN_OR_RETURN(c.qemu_version, value());
    } else if (a == "--guest") {
      ESCDR_ASSIGN_OR_RETURN(c.guest, value());
    } else if (a == "--memory") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      g_memory_mib = std::strtoull(v.c_str(), nullptr, 10);
      memory_given = true;
    } else if (a == "--load-seconds") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.load_seconds = std::atoi(v.c_str());
    } else if (a == "--uptime-minutes") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.uptime_minutes = std::atoi(v.c_str());
    } else if (a == "--insecure") {
      c.insecure = true;
    } else if (a == "--settle") {
      ESCDR_ASSIGN_OR_RETURN(std::string v, value());
      c.settle_s = std::atoi(v.c_str());
    } else {
      return Err(Status::InvalidArgument(
          "usage: migration_bench [--runs N] [--variants nokaslr,kaslr,busy] "
          "[--paths escdr,no-escdr,direct,direct-zstd] "
          "[--bandwidths 125000000,0] [--wire-rate BYTES_PER_S] [--busy-mib MiB] [--json PATH] [--settle SECONDS] "
          "[--insecure] [--qemu-version 7.2|10.0] [--guest debian-12|debian-13] [--memory MiB] "
          "[--load-seconds S] [--uptime-minutes M]; unknown argument " + a));
    }
  }
  if (c.runs < 1) return Err(Status::InvalidArgument("--runs must be at least 1"));
  kKind.hypervisor_version = c.qemu_version;
  if (!c.guest.empty()) {
    // A distribution guest: its own kind, 1 GiB unless --memory says, idle and loaded.
    const std::size_t dash = c.guest.rfind('-');
    if (!c.guest.starts_with("debian-") || dash + 1 >= c.guest.size()) {
      return Err(Status::InvalidArgument("--guest " + c.guest + " is not debian-12 or debian-13"));
    }
    kKind.os_version = c.guest.substr(dash + 1);
    if (!memory_given) g_memory_mib = 1024;
    if (!variants_given) c.variants = {"idle", "loaded"};
  }
  for (const std::string& p : c.paths) {
    if (p != "escdr" && p != "no-escdr" && !IsDirect(p)) return Err(Status::InvalidArgument("unknown path " + p));
  }
  return c;
}

// Keeps the migrating guest's services busy while it is alive (`loaded`).
Result<std::unique_ptr<escdr::testing::ServiceLoad>> StartLoad(
    const std::map<std::uint16_t, std::uint16_t>& fwd) {
  escdr::testing::LoadOptions lo;
  lo.redis_port = fwd.at(6379);
  lo.http_port = fwd.at(80);
  lo.http_path = "/blob.bin";
  lo.redis_threads = 2;
  lo.key_count = 16384;  // 64 MiB of values rewritten over and over
  lo.value_size = 4096;
  return escdr::testing::ServiceLoad::Start(lo);
}

Status RunVariant(const Config& cfg, const Variant& v, const BenchGuest& guest,
                  std::vector<Sample>& samples, const std::function<void()>& save) {
  std::printf("== %s: booting guests on QEMU %s (agent channels: %s)\n", v.name.c_str(),
              kKind.hypervisor_version.c_str(),
              cfg.insecure ? "plaintext, --insecure" : "mutual TLS 1.3");
  std::fflush(stdout);
  const bool want_escdr = !std::ranges::all_of(cfg.paths, IsDirect);
  const bool want_direct = std::ranges::any_of(cfg.paths, IsDirect);
  std::optional<EscdrPaths> agents;
  std::optional<DirectPath> direct;
  if (want_escdr) {
    agents.emplace(v, guest, cfg.insecure);
    ESCDR_RETURN_IF_ERROR(agents->Start());
  }
  if (want_direct) {
    direct.emplace(v, guest);
    ESCDR_RETURN_IF_ERROR(direct->Start());
  }
  if (agents) ESCDR_RETURN_IF_ERROR(agents->Settle());
  if (direct) ESCDR_RETURN_IF_ERROR(direct->Settle());
  if (agents) ESCDR_RETURN_IF_ERROR(agents->Learn());
  if (cfg.uptime_minutes > 0) {
    // Age the migrating guests (both paths'), under their load if loaded.
    std::vector<std::unique_ptr<escdr::testing::ServiceLoad>> loads;
    if (v.service_load) {
      for (auto fwd : {agents ? agents->Forwards() : decltype(agents->Forwards()){},
                       direct ? direct->Forwards() : decltype(direct->Forwards()){}}) {
        if (fwd.empty()) continue;
        ESCDR_ASSIGN_OR_RETURN(auto load, StartLoad(fwd));
        loads.push_back(std::move(load));
      }
    }
    std::printf("  letting the guests run %d minutes%s\n", cfg.uptime_minutes,
                v.service_load ? " under load" : "");
    std::fflush(stdout);
    for (int i = 0; i < cfg.uptime_minutes * 60 && !g_stop; ++i) std::this_thread::sleep_for(seconds(1));
    for (auto& l : loads) {
      const escdr::testing::LoadStats st = l->Stop();
      std::printf("  load while aging: %llu redis writes, %llu HTTP requests, %llu errors\n",
                  static_cast<unsigned long long>(st.redis_ops),
                  static_cast<unsigned long long>(st.http_requests),
                  static_cast<unsigned long long>(st.errors));
    }
  }
  for (int run = 1; run <= cfg.runs; ++run) {
    for (std::uint64_t bw : v.bandwidths) {
      for (const std::string& path : cfg.paths) {
        if (g_stop) return Status::Aborted("interrupted");
        std::this_thread::sleep_for(seconds(cfg.settle_s));
        std::unique_ptr<escdr::testing::ServiceLoad> load;
        if (v.service_load) {
          ESCDR_ASSIGN_OR_RETURN(load, StartLoad(IsDirect(path) ? direct->Forwards()
                                                                : agents->Forwards()));
          std::this_thread::sleep_for(seconds(cfg.load_seconds));
        }
        Result<Sample> s = IsDirect(path) ? direct->Migrate(bw, cfg.wire_rate, path == "direct-zstd")
                                          : agents->Migrate(path == "escdr", bw, cfg.wire_rate);
        if (load) {
          const escdr::testing::LoadStats st = load->Stop();
          if (s.has_value()) {
            s->load_ops = static_cast<double>(st.redis_ops + st.http_requests);
            s->load_errors = static_cast<double>(st.errors);
          }
        }
        if (!s.has_value()) {
          return s.error().WithContext(fmt::format("{} run {} {} at {}", v.name, run, path, BandwidthName(bw)));
        }
        s->variant = v.name;
        s->bandwidth = bw;
        s->run = run;
        s->uptime_minutes = cfg.uptime_minutes;
        std::printf("  run %d %-11s %-9s %s->%s wire %6.1f MiB stream %6.1f MiB  QEMU total %5.2f s  end-to-end %5.2f s  "
                    "downtime QEMU %4.0f ms escdr %4.0f ms  pos %6.0f cont %5.0f fb %3.0f  CPU src %.2f s dst %.2f s  "
                    "load %.2f  RAM %s\n",
                    run, path.c_str(), BandwidthName(bw).c_str(), s->from.c_str(), s->to.c_str(),
                    s->wire_bytes / 1048576.0, s->stream_bytes / 1048576.0, s->qemu_total_s, s->end_to_end_s,
                    s->qemu_downtime_ms, s->escdr_downtime_ms, s->by_position, s->by_content, s->fallbacks,
                    s->cpu_source_s, s->cpu_destination_s, s->load_after, s->ram_check.c_str());
        std::fflush(stdout);
        samples.push_back(*s);
        save();
      }
    }
  }
  return Status::OK();
}

int Main(int argc, char** argv) {
  auto cfg = ParseArgs(argc, argv);
  if (!cfg.has_value()) {
    std::fprintf(stderr, "migration_bench: %s\n", cfg.error().message().c_str());
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  auto guest = BenchGuest::Find(cfg->guest);
  if (!guest.has_value()) {
    std::fprintf(stderr, "migration_bench: guest: %s\n", guest.error().message().c_str());
    return 1;
  }
  std::vector<Variant> variants;
  for (const std::string& name : cfg->variants) {
    if (name == "nokaslr") variants.push_back({name, false, 0, cfg->bandwidths});
    else if (name == "kaslr") variants.push_back({name, true, 0, cfg->bandwidths});
    else if (name == "busy") variants.push_back({name, false, cfg->busy_mib, {125000000}});
    else if (name == "idle" && guest->real()) variants.push_back({name, true, 0, cfg->bandwidths});
    else if (name == "loaded" && guest->real()) variants.push_back({name, true, 0, {125000000}, true});
    else {
      std::fprintf(stderr, "migration_bench: unknown variant %s\n", name.c_str());
      return 2;
    }
  }

  std::vector<Sample> samples;
  const double load_start = LoadAverage1();
  auto save = [&] {
    json doc = {{"guest_dir", guest->Describe()},
                {"guest", cfg->guest.empty() ? "test guest" : cfg->guest},
                {"qemu_version", kKind.hypervisor_version},
                {"memory_mib", g_memory_mib},
                {"runs", cfg->runs},
                {"busy_mib", cfg->busy_mib},
                {"unlimited_bandwidth", kUnlimited},
                {"wire_rate", cfg->wire_rate},
                {"load1_start", load_start},
                {"samples", json::array()}};
    for (const Sample& s : samples) doc["samples"].push_back(s.ToJson());
    Status st = WriteStringToFile(cfg->json_path, doc.dump(2) + "\n");
    if (!st.ok()) std::fprintf(stderr, "migration_bench: writing %s: %s\n", cfg->json_path.c_str(), st.message().c_str());
  };
  Status failed;
  for (const Variant& v : variants) {
    failed = RunVariant(*cfg, v, *guest, samples, save);
    if (!failed.ok()) break;
  }
  save();
  for (const Variant& v : variants) {
    std::fputs(Table(v.name, samples, v.bandwidths, cfg->paths).c_str(), stdout);
  }
  std::printf("\nfigures of every run: %s\n", cfg->json_path.c_str());
  if (!failed.ok()) {
    std::fprintf(stderr, "migration_bench: %s\n", failed.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace escdr::migbench

int main(int argc, char** argv) { return escdr::migbench::Main(argc, argv); }
