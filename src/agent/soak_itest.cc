// Soak test: one guest migrated back and forth between two hosts, each
// running a donor of its kind, through real agents and the real `escdr` CLI.
// Every 10th migration goes with --no-escdr, the others through escdr. After
// each: the paused destination's RAM equals the stopped source's byte for
// byte, every reference was filled (from the donor or by fallback) and the
// stream rebuilt exactly, the inventory has the VM on the new host, and the
// resumed guest counts on past the number it had reached on the source.
//
// The environment sets its size: ESCDR_SOAK_ROUNDS migrations (default 3, so
// that a CI run stays short; the full soak is 50), of a guest that keeps
// rewriting ESCDR_SOAK_DIRTY_MIB MiB (escdr.dirty=; default 16, which makes
// QEMU do several pre-copy rounds; 0 is an idle guest). A failed check that
// leaves the guest running (RAM that differs, say) is counted and the soak
// goes on; a guest that stops counting ends it. The per-migration figures
// and their ranges are printed at the end.
//
// A busy guest passes only because the launcher pads TCG guests' RAM by
// kTcgRamPadBytes (escdr/qemu/launch_spec.h): QEMU 7.2 under TCG otherwise
// loses guest writes during a live migration, with or without escdr
// (docs/reliability.md §3).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/agent_cluster_testing.h"
#include "agent/json_util.h"

namespace escdr::agent {
namespace {

using nlohmann::json;
using std::chrono::seconds;
using testing::AgentCluster;
using testing::CliResult;
using testing::CompareRamFiles;
using testing::WaitUntil;

const VmKind kKind{"debian", "12", "qemu", "7.2"};
constexpr const char* kVm = "soak";
// MiB the guest rewrites all the time (see above), and QEMU's bandwidth:
// with 16 MiB QEMU does several pre-copy rounds, and the remainder still fits
// QEMU's default 300 ms downtime at this bandwidth, so every migration
// converges.
constexpr int kDefaultDirtyMib = 16;
constexpr const char* kBandwidth = "48M";
constexpr int kNoEscdrEvery = 10;

// A non-negative integer from the environment, or `fallback`.
int EnvInt(const char* name, int fallback) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return fallback;
  char* end = nullptr;
  const long n = std::strtol(env, &end, 10);
  return *end == '\0' && n >= 0 && n <= 100000 ? static_cast<int>(n) : fallback;
}

int SoakRounds() {
  const int n = EnvInt("ESCDR_SOAK_ROUNDS", 3);
  return n > 0 ? n : 3;
}

std::string LoadAverage() {
  std::string text = ReadFileToString("/proc/loadavg").value_or("?");
  // "1.00 2.00 3.00 1/234 5678": the three averages.
  std::size_t end = 0;
  for (int i = 0; i < 3 && end != std::string::npos; ++i) end = text.find(' ', end + 1);
  return text.substr(0, end);
}

// The figures of one migration.
struct Round {
  int index = 0;
  bool escdr = true;
  std::string from, to;
  double wire_share = 0;  // wire bytes, both directions, over stream bytes
  std::uint64_t stream_bytes = 0;
  std::uint64_t pages_elided = 0;
  std::uint64_t fallbacks = 0;
  std::uint64_t qemu_rounds = 0;
  std::uint64_t total_ms = 0;
  std::uint64_t downtime_ms = 0;  // the larger of QEMU's and escdr's
  std::int64_t qemu_downtime_ms = 0;
  bool failed = false;  // a check failed
  std::string ram_difference;  // CompareRamFiles(): "" when identical
};

class SoakTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* h : {"h1", "h2"}) ASSERT_TRUE(cluster_.StartAgent(h).ok()) << h;
    auto guest = escdr::testing::EnsureGuestBuilt();
    ASSERT_TRUE(guest.has_value()) << guest.error().ToString();
    const std::pair<const char*, const char*> vms[] = {
        {"donor-1", "h1"}, {"donor-2", "h2"}, {kVm, "h1"}};
    for (const auto& [vm, host] : vms) {
      std::string append = "console=ttyS0 quiet nokaslr";
      if (std::string(vm) == kVm && dirty_mib_ > 0) {
        append += fmt::format(" escdr.dirty={}", dirty_mib_);
      }
      CliResult r = cluster_.Cli({"vm", "create", vm, "--host", host, "--os", kKind.os,
                                  "--os-version", kKind.os_version, "--hypervisor-version",
                                  kKind.hypervisor_version, "--memory", "256", "--kernel",
                                  *guest + "/vmlinuz", "--initrd", *guest + "/initrd.img",
                                  "--append", append});
      ASSERT_TRUE(r.ok()) << "vm create " << vm << ": " << r.err;
    }
    for (const auto& [vm, host] : vms) {
      auto info = cluster_.FindVm(host, vm);
      ASSERT_TRUE(info.has_value()) << vm << " not listed by " << host;
      ASSERT_TRUE(WaitUntil([&] { return testing::Counter(info->serial_log) >= 3; },
                            seconds(300)))
          << vm << " did not boot: " << SerialLogTail(info->serial_log);
    }
    // The catalog of the kind, from the two donors (not from the soaking guest).
    CliResult learned =
        cluster_.Cli({"catalog", "learn", "--from-vm", "donor-1", "--from-vm", "donor-2"});
    ASSERT_TRUE(learned.ok()) << "catalog learn: " << learned.err;
  }

  std::string HostOf(const std::string& vm) {
    return cluster_.OpenInventory().value()->GetVm(vm).value().host;
  }

  // The kept source QEMU's record (role "migrated") of kVm on `host`.
  std::optional<VmRecord> KeptSource(const std::string& host) {
    for (const VmRecord& rec : cluster_.Records(host)) {
      if (rec.name == kVm && rec.role == VmRole::kMigrated) return rec;
    }
    return std::nullopt;
  }

  // One migration of kVm to the other host, checked; fills `round`.
  void MigrateAndVerify(Round* round) {
    const std::string src = HostOf(kVm);
    const std::string dst = src == "h1" ? "h2" : "h1";
    round->from = src;
    round->to = dst;
    std::vector<std::string> args = {"--json", "migrate", kVm, "--to", dst, "--keep-paused",
                                     "--keep-source", "--max-bandwidth", kBandwidth};
    if (!round->escdr) args.push_back("--no-escdr");
    CliResult r = cluster_.Cli(args);
    ASSERT_TRUE(r.ok()) << r.err << cluster_.AgentLog(src) << cluster_.AgentLog(dst);
    const json out = json::parse(r.out, nullptr, false);
    ASSERT_TRUE(out.is_object()) << r.out;
    const MigrationReport rep = MigrationReportFromJson(out["report"]);
    round->stream_bytes = rep.stream_bytes;
    round->wire_share = static_cast<double>(rep.wire_bytes_sent + rep.wire_bytes_received) /
                        static_cast<double>(std::max<std::uint64_t>(rep.stream_bytes, 1));
    round->pages_elided = rep.pages_elided();
    round->fallbacks = rep.fallbacks;
    round->qemu_rounds = U64Or(out, "qemu_rounds");
    round->total_ms = U64Or(out, "total_ms");
    round->downtime_ms = U64Or(out, "downtime_ms");
    round->qemu_downtime_ms = static_cast<std::int64_t>(U64Or(out, "qemu_downtime_ms"));

    // The stream: rebuilt exactly, every reference filled.
    EXPECT_GT(rep.stream_bytes, 0u);
    EXPECT_EQ(rep.rebuilt_bytes, rep.stream_bytes);
    EXPECT_EQ(rep.pages_from_donor + rep.fallbacks, rep.pages_elided());
    if (round->escdr) {
      EXPECT_EQ(StringOr(out, "donor"), dst == "h1" ? "donor-1" : "donor-2");
      EXPECT_GT(rep.pages_from_donor, 1000u);
      EXPECT_LT(rep.wire_bytes_sent, rep.stream_bytes);
    } else {
      EXPECT_EQ(rep.pages_elided(), 0u);
    }

    // The paused destination holds exactly the stopped source's RAM.
    const std::optional<VmRecord> kept = KeptSource(src);
    ASSERT_TRUE(kept.has_value()) << "no kept source of " << kVm << " on " << src;
    const VmInfo dest = VmInfo::FromJson(out["destination_vm"]);
    auto paused = cluster_.FindVm(dst, kVm);
    ASSERT_TRUE(paused.has_value());
    EXPECT_EQ(paused->run_state, "paused");
    round->ram_difference = CompareRamFiles(kept->spec.ram_path, dest.ram_path);
    EXPECT_EQ(round->ram_difference, "");

    // The inventory moved the VM.
    {
      auto inv = cluster_.OpenInventory().value();
      const Vm vm = inv->GetVm(kVm).value();
      EXPECT_EQ(vm.host, dst);
      EXPECT_EQ(vm.ram_path, dest.ram_path);
      EXPECT_EQ(inv->GetHost(dst).value().memory_reserved_mib, 0u);
    }

    // Resumed, the guest counts on past where it stopped on the source.
    const std::uint64_t last = testing::Counter(kept->spec.serial_log);
    EXPECT_GT(last, 0u);
    r = cluster_.Cli({"vm", "start", kVm});
    ASSERT_TRUE(r.ok()) << r.err;
    // A guest that stops counting is broken: the soak ends there.
    ASSERT_TRUE(
        WaitUntil([&] { return testing::Counter(dest.serial_log) > last; }, seconds(120)))
        << "counter " << last << " on the source; destination: "
        << SerialLogTail(dest.serial_log);

    // The kept source goes away with its RAM file.
    r = cluster_.Cli({"vm", "stop", kVm, "--host", src});
    ASSERT_TRUE(r.ok()) << r.err;
    EXPECT_FALSE(std::filesystem::exists(kept->spec.ram_path));
    auto inv = cluster_.OpenInventory().value();
    const Vm vm = inv->GetVm(kVm).value();
    EXPECT_EQ(vm.host, dst);
    EXPECT_EQ(vm.state, VmState::kRunning);
  }

  AgentCluster cluster_;
  const int dirty_mib_ = EnvInt("ESCDR_SOAK_DIRTY_MIB", kDefaultDirtyMib);
};

std::string Range(const std::vector<Round>& rounds, bool escdr,
                  double (*get)(const Round&), const char* format) {
  double lo = 0, hi = 0;
  bool any = false;
  for (const Round& r : rounds) {
    if (r.escdr != escdr) continue;
    const double v = get(r);
    lo = any ? std::min(lo, v) : v;
    hi = any ? std::max(hi, v) : v;
    any = true;
  }
  if (!any) return "-";
  return fmt::format(fmt::runtime(format), lo) + " .. " + fmt::format(fmt::runtime(format), hi);
}

TEST_F(SoakTest, GuestMigratesBackAndForthExactly) {
  const int n = SoakRounds();
  const std::string load_before = LoadAverage();
  std::printf("  %d migrations of a 256 MiB guest rewriting %d MiB, QEMU max-bandwidth %s\n", n,
              dirty_mib_, kBandwidth);
  std::vector<Round> rounds;
  for (int i = 0; i < n; ++i) {
    Round round;
    round.index = i + 1;
    round.escdr = (i + 1) % kNoEscdrEvery != 0;
    const int failures_before = ::testing::UnitTest::GetInstance()->current_test_info()->result()
                                    ->total_part_count();
    MigrateAndVerify(&round);
    if (HasFatalFailure()) {
      ADD_FAILURE() << "migration " << round.index << " of " << n << " (" << round.from << " -> "
                    << round.to << (round.escdr ? "" : ", --no-escdr") << ") failed";
      break;
    }
    // A failed check that left the guest running (e.g. RAM that differs):
    // counted, and the soak goes on.
    round.failed = ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count() !=
                   failures_before;
    std::printf("  %2d %s -> %s %-10s wire/stream %.4f  rounds %llu  fallbacks %llu  "
                "total %llu ms  downtime %llu ms (QEMU %lld ms)  load %s%s\n",
                round.index, round.from.c_str(), round.to.c_str(),
                round.escdr ? "escdr" : "no-escdr", round.wire_share,
                static_cast<unsigned long long>(round.qemu_rounds),
                static_cast<unsigned long long>(round.fallbacks),
                static_cast<unsigned long long>(round.total_ms),
                static_cast<unsigned long long>(round.downtime_ms),
                static_cast<long long>(round.qemu_downtime_ms), LoadAverage().c_str(),
                round.failed ? fmt::format("  FAILED {}", round.ram_difference).c_str() : "");
    std::fflush(stdout);
    rounds.push_back(round);
  }
  EXPECT_EQ(rounds.size(), static_cast<std::size_t>(n));

  std::uint64_t fallbacks = 0;
  int failed = 0, ram_differs = 0;
  for (const Round& r : rounds) {
    fallbacks += r.fallbacks;
    failed += r.failed ? 1 : 0;
    ram_differs += r.ram_difference.empty() ? 0 : 1;
  }
  for (bool escdr : {true, false}) {
    const auto count = std::count_if(rounds.begin(), rounds.end(),
                                     [&](const Round& r) { return r.escdr == escdr; });
    if (count == 0) continue;
    std::printf(
        "  %s: %ld migrations; wire/stream %s; QEMU rounds %s; total %s ms; downtime %s ms "
        "(QEMU %s ms)\n",
        escdr ? "escdr" : "--no-escdr", static_cast<long>(count),
        Range(rounds, escdr, [](const Round& r) { return r.wire_share; }, "{:.4f}").c_str(),
        Range(rounds, escdr, [](const Round& r) { return double(r.qemu_rounds); }, "{:.0f}").c_str(),
        Range(rounds, escdr, [](const Round& r) { return double(r.total_ms); }, "{:.0f}").c_str(),
        Range(rounds, escdr, [](const Round& r) { return double(r.downtime_ms); }, "{:.0f}").c_str(),
        Range(rounds, escdr, [](const Round& r) { return double(r.qemu_downtime_ms); }, "{:.0f}")
            .c_str());
  }
  std::printf("  %zu of %d migrations done, %d failed a check (%d with RAM that differs), %llu "
              "fallbacks; load average %s before, %s after\n",
              rounds.size(), n, failed, ram_differs, static_cast<unsigned long long>(fallbacks),
              load_before.c_str(), LoadAverage().c_str());
  RecordProperty("soak_rounds", static_cast<int>(rounds.size()));
  RecordProperty("soak_fallbacks", std::to_string(fallbacks));
}

}  // namespace
}  // namespace escdr::agent
