// End-to-end migrations between real agents, real QEMU guests and the real
// escdr CLI, and every failure of the migration flow: the destination agent
// killed, the connection cut, a donor page changed, the destination QEMU
// killed, a corrupted frame. After a failure the source VM must run with its
// memory untouched by escdr, no QEMU may be left over, and the inventory must
// be as before.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/agent_cluster_testing.h"
#include "agent/catalog_content.h"
#include "agent/json_util.h"
#include "escdr/catalog/catalog_format.h"
#include "escdr/image/memory_image.h"
#include "escdr/migrate/donor_scan.h"
#include "escdr/page/page.h"
#include "escdr/wire/socket.h"

namespace escdr::agent {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::AgentCluster;
using testing::CliResult;
using testing::CompareRamFiles;
using testing::CounterAdvances;
using testing::WaitUntil;

const VmKind kKind{"debian", "12", "qemu", "7.2"};
constexpr const char* kVm = "mig-a";
constexpr const char* kSlow = "3M";  // bytes/s: a migration that lasts long enough to break

// A TCP relay between the source agent and the destination agent that can cut
// the migration connection, or flip one byte of it, at a given offset of the
// source-to-destination direction. Later connections (commit_in, abort_in)
// pass through, or are refused once the relay has cut.
class Relay {
 public:
  enum class Fault { kNone, kCut, kFlip };

  Relay(const std::string& target, Fault fault, std::uint64_t offset)
      : target_(target), fault_(fault), offset_(offset) {
    listener_.emplace(std::move(wire::TcpListener::Listen("127.0.0.1", 0).value()));
    accept_ = std::thread([this] { AcceptLoop(); });
  }
  ~Relay() {
    stop_ = true;
    CutAll();
    if (accept_.joinable()) accept_.join();
    for (auto& t : pumps_) t.join();
  }

  std::string address() const { return fmt::format("127.0.0.1:{}", listener_->port()); }
  std::uint64_t forwarded() const { return forwarded_.load(); }
  bool faulted() const { return faulted_.load(); }

 private:
  void CutAll() {
    std::lock_guard<std::mutex> lock(mu_);
    cut_ = true;
    for (auto& c : conns_) c->Shutdown();
  }

  void AcceptLoop() {
    int n = 0;
    while (!stop_) {
      auto in = listener_->Accept(Deadline::After(milliseconds(200)));
      if (!in.has_value()) continue;
      auto hp = ParseAgentAddress(target_).value();
      auto out = wire::ConnectTcp(hp.first, hp.second, Deadline::After(seconds(10)));
      if (!out.has_value()) continue;
      std::shared_ptr<wire::Connection> a(std::move(*in)), b(std::move(*out));
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (cut_) continue;  // closes both
        conns_.push_back(a);
        conns_.push_back(b);
      }
      const bool first = n++ == 0;
      pumps_.emplace_back([this, a, b, first] { Pump(*a, *b, first); });
      pumps_.emplace_back([this, a, b] { Pump(*b, *a, false); });
    }
  }

  void Pump(wire::Connection& from, wire::Connection& to, bool faulty) {
    std::vector<std::uint8_t> buf(64 << 10);
    std::uint64_t pos = 0;
    for (;;) {
      auto n = from.ReadSome(buf, Deadline::After(seconds(600)));
      if (!n.has_value() || *n == 0) break;
      std::span<std::uint8_t> chunk(buf.data(), *n);
      if (faulty && fault_ != Fault::kNone && !faulted_ && pos + *n > offset_) {
        if (fault_ == Fault::kCut) {
          faulted_ = true;
          CutAll();
          break;
        }
        chunk[offset_ - pos] ^= 0x20;
        faulted_ = true;
      }
      pos += *n;
      if (faulty) forwarded_ += *n;
      if (!to.WriteAll(chunk, Deadline::After(seconds(600))).ok()) break;
    }
    (void)to.ShutdownWrite();
  }

  std::string target_;
  Fault fault_;
  std::uint64_t offset_;
  std::optional<wire::TcpListener> listener_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> faulted_{false};
  std::atomic<std::uint64_t> forwarded_{0};
  std::mutex mu_;
  bool cut_ = false;
  std::vector<std::shared_ptr<wire::Connection>> conns_;
  std::thread accept_;
  std::vector<std::thread> pumps_;
};

// Pages of `ram` at the catalog's static positions that still hold the
// catalog's content: escdr must never change them on the source.
std::uint64_t StaticPagesHeld(const std::string& ram, const Catalog& catalog) {
  auto image = OpenRamFile(ram);
  if (!image.has_value()) return 0;
  const int block = catalog.FindBlock("mem0");
  if (block < 0) return 0;
  const std::uint8_t* data = (*image)->BlockData(0);
  const std::uint64_t len = (*image)->blocks()[0].length;
  std::uint64_t held = 0;
  for (const CatalogPosition& p : catalog.Positions(static_cast<std::size_t>(block))) {
    const std::uint64_t off = p.page_index * kPageSize;
    if (off + kPageSize <= len && HashPage(data + off) == catalog.ContentHash(p.content_index)) ++held;
  }
  return held;
}

// True if any agent process maps `path` writable.
bool AgentMapsWritable(pid_t agent_pid, const std::string& path) {
  std::string maps = ReadFileToString(fmt::format("/proc/{}/maps", agent_pid)).value_or("");
  std::size_t pos = 0;
  while ((pos = maps.find(path, pos)) != std::string::npos) {
    std::size_t line = maps.rfind('\n', pos);
    line = line == std::string::npos ? 0 : line + 1;
    std::size_t perms = maps.find(' ', line);
    if (perms != std::string::npos && maps[perms + 2] == 'w') return true;
    pos += path.size();
  }
  return false;
}

class MigrateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new AgentCluster();
    setup_ = Boot();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    catalog_.reset();
  }

  void SetUp() override { ASSERT_TRUE(setup_.ok()) << setup_.ToString(); }

  static Status Boot() {
    for (const char* h : {"h1", "h2", "h3"}) ESCDR_RETURN_IF_ERROR(cluster_->StartAgent(h));
    ESCDR_ASSIGN_OR_RETURN(std::string guest, escdr::testing::EnsureGuestBuilt());
    // One VM per host: the migrating one on h1, donors on h2 and h3.
    const std::pair<const char*, const char*> vms[] = {{kVm, "h1"}, {"donor-b", "h2"}, {"donor-c", "h3"}};
    for (const auto& [vm, host] : vms) {
      CliResult r = cluster_->Cli({"vm", "create", vm, "--host", host, "--os", kKind.os,
                                   "--os-version", kKind.os_version, "--hypervisor-version",
                                   kKind.hypervisor_version, "--memory", "256", "--kernel",
                                   guest + "/vmlinuz", "--initrd", guest + "/initrd.img",
                                   "--append", "console=ttyS0 quiet nokaslr"});
      if (!r.ok()) return Status::Internal(fmt::format("vm create {}: {}", vm, r.err));
    }
    for (const auto& [vm, host] : vms) {
      auto info = cluster_->FindVm(host, vm);
      if (!info) return Status::Internal(fmt::format("{} not listed by {}", vm, host));
      if (!WaitUntil([&] { return testing::Counter(info->serial_log) >= 3; }, seconds(300))) {
        return Status::Timeout(fmt::format("{} did not boot: {}", vm, SerialLogTail(info->serial_log)));
      }
    }
    // The catalog of the kind, learned by `escdr catalog learn` from the
    // three running guests' RAM files into the inventory, where the agents
    // look for it.
    std::vector<std::string> learn = {"catalog", "learn", "--os", kKind.os, "--os-version",
                                      kKind.os_version, "--hypervisor", kKind.hypervisor,
                                      "--hypervisor-version", kKind.hypervisor_version};
    for (const auto& [vm, host] : vms) learn.push_back(cluster_->FindVm(host, vm)->ram_path);
    CliResult learned = cluster_->Cli(learn);
    if (!learned.ok()) return Status::Internal("catalog learn: " + learned.err);
    ESCDR_ASSIGN_OR_RETURN(auto inv, cluster_->OpenInventory());
    ESCDR_ASSIGN_OR_RETURN(std::string bytes, inv->GetCatalog(kKind));
    ESCDR_ASSIGN_OR_RETURN(catalog_, CatalogContent::FromBytes(bytes));
    return Status::OK();
  }

  static std::string HostOf(const std::string& vm) {
    auto inv = cluster_->OpenInventory().value();
    return inv->GetVm(vm).value().host;
  }
  static std::string OtherDonorHost(const std::string& src) { return src == "h2" ? "h3" : "h2"; }

  // What a failure test records before it breaks a migration.
  struct Before {
    std::string src, dst;
    VmInfo vm;
    std::uint64_t static_pages = 0;
  };

  Before Snapshot() {
    Before b;
    b.src = HostOf(kVm);
    b.dst = b.src == "h1" ? "h2" : OtherDonorHost(b.src);
    b.vm = cluster_->FindVm(b.src, kVm).value();
    b.static_pages = StaticPagesHeld(b.vm.ram_path, catalog_->catalog());
    return b;
  }

  // Starts a slow migration of kVm and waits until its stream flows.
  // Returns the destination QEMU's pid.
  pid_t StartSlowMigration(const Before& b, std::optional<testing::CliRun>* run,
                           const std::string& via = "") {
    std::vector<std::string> args = {"migrate", kVm, "--to", b.dst, "--max-bandwidth", kSlow};
    if (!via.empty()) args.insert(args.end(), {"--destination-address", via});
    run->emplace(cluster_->StartCli(args).value());
    pid_t qemu_pid = 0;
    const bool flowing = WaitUntil(
        [&] {
          auto st = cluster_->Client(b.dst).GetStatus();
          if (!st.has_value()) return false;
          for (const json& m : (*st)["migrations"]) {
            if (StringOr(m, "vm") == kVm && StringOr(m, "phase") == "streaming") {
              qemu_pid = static_cast<pid_t>(U64Or(m, "qemu_pid"));
            }
          }
          if (qemu_pid == 0) return false;
          auto src = cluster_->Client(b.src).GetStatus();
          if (!src.has_value()) return false;
          for (const json& m : (*src)["migrations"]) {
            if (U64Or(m, "wire_bytes_sent") > (1u << 20)) return true;
          }
          return false;
        },
        seconds(120));
    EXPECT_TRUE(flowing) << "the migration never reached the streaming phase: "
                         << cluster_->AgentLog(b.dst);
    return qemu_pid;
  }

  // Migrates kVm slowly through a Relay that breaks the connection with
  // `fault` at `offset`; waits for the destination QEMU to exist (its pid in
  // *qemu) and for the CLI to end (*r), and checks the relay did break it.
  void MigrateThroughFaultyRelay(const Before& b, Relay::Fault fault, std::uint64_t offset,
                                 pid_t* qemu, CliResult* r) {
    Relay relay(cluster_->Address(b.dst), fault, offset);
    std::optional<testing::CliRun> run;
    run.emplace(cluster_->StartCli({"migrate", kVm, "--to", b.dst, "--max-bandwidth", kSlow,
                                    "--destination-address", relay.address()})
                    .value());
    ASSERT_TRUE(WaitUntil(
        [&] {
          for (const VmRecord& rec : cluster_->Records(b.dst)) {
            if (rec.name == kVm) *qemu = rec.pid;
          }
          return *qemu > 0;
        },
        seconds(120)));
    *r = run->Wait();
    EXPECT_TRUE(relay.faulted());
  }

  // The common checks after a failed migration.
  void ExpectSourceIntact(const Before& b, const CliResult& r, pid_t dest_qemu) {
    EXPECT_FALSE(r.ok()) << r.out;
    std::printf("  the CLI said: %s", r.err.c_str());
    EXPECT_NE(r.err.find(fmt::format("{} keeps running on {}", kVm, b.src)), std::string::npos)
        << r.err;
    // The source VM: same QEMU, running, its guest making progress.
    auto now = cluster_->FindVm(b.src, kVm);
    ASSERT_TRUE(now.has_value());
    EXPECT_EQ(now->pid, b.vm.pid);
    EXPECT_EQ(now->role, "running");
    EXPECT_EQ(now->run_state, "running");
    EXPECT_TRUE(CounterAdvances(now->serial_log)) << SerialLogTail(now->serial_log);
    // Its memory: never mapped writable by escdr, static content still there.
    EXPECT_FALSE(AgentMapsWritable(cluster_->AgentPid(b.src), b.vm.ram_path));
    // (The guest itself may rewrite a page the catalog calls static, e.g.
    // when it reclaims page cache; stream data written by escdr would change
    // thousands.)
    EXPECT_GE(StaticPagesHeld(b.vm.ram_path, catalog_->catalog()), b.static_pages * 99 / 100);
    // No destination QEMU left, no record of it.
    if (dest_qemu > 0) {
      EXPECT_TRUE(WaitUntil([&] { return ProcessGone(dest_qemu); }, seconds(60)))
          << "destination QEMU " << dest_qemu << " is still there";
    }
    EXPECT_TRUE(WaitUntil(
        [&] {
          for (const VmRecord& rec : cluster_->Records(b.dst)) {
            if (rec.name == kVm) return false;
          }
          return true;
        },
        seconds(60)));
    // The inventory: the VM where it was, the reservation released, the
    // failure logged with its reason.
    auto inv = cluster_->OpenInventory().value();
    Vm vm = inv->GetVm(kVm).value();
    EXPECT_EQ(vm.host, b.src);
    EXPECT_EQ(vm.state, VmState::kRunning);
    Host dst = inv->GetHost(b.dst).value();
    EXPECT_EQ(dst.memory_reserved_mib, 0u);
    EXPECT_EQ(dst.vcpus_reserved, 0u);
    auto log = inv->ListMigrations({.vm = kVm, .limit = 1}).value();
    ASSERT_EQ(log.size(), 1u);
    EXPECT_EQ(log[0].outcome, MigrationOutcome::kFailed);
    EXPECT_FALSE(log[0].figures.error.empty());
  }

  static AgentCluster* cluster_;
  static Status setup_;
  static std::unique_ptr<CatalogContent> catalog_;
};

AgentCluster* MigrateTest::cluster_ = nullptr;
Status MigrateTest::setup_;
std::unique_ptr<CatalogContent> MigrateTest::catalog_;

TEST_F(MigrateTest, MigratesToDonorHostByteExactAndResumes) {
  CliResult r = cluster_->Cli({"--json", "migrate", kVm, "--keep-paused", "--keep-source"});
  ASSERT_TRUE(r.ok()) << r.err << cluster_->AgentLog("h1");
  json out = json::parse(r.out);
  const MigrationReport rep = MigrationReportFromJson(out["report"]);
  // Placement chose a host with a donor; pages came from it, verified.
  EXPECT_EQ(StringOr(out, "destination"), "h2");
  EXPECT_EQ(StringOr(out, "donor"), "donor-b");
  EXPECT_GT(rep.pages_by_position + rep.pages_by_content, 1000u);
  // Every reference was filled from a verified donor copy, or (the donor is a
  // live guest and may have changed a page since its scan) from the source.
  EXPECT_EQ(rep.pages_from_donor + rep.fallbacks, rep.pages_elided());
  EXPECT_LT(rep.fallbacks, rep.pages_elided() / 100 + 1);
  EXPECT_EQ(rep.rebuilt_bytes, rep.stream_bytes);
  EXPECT_LT(rep.wire_bytes_sent, rep.stream_bytes);
  RecordProperty("stream_bytes", std::to_string(rep.stream_bytes));
  RecordProperty("wire_bytes_sent", std::to_string(rep.wire_bytes_sent));
  std::printf("  escdr: %s; QEMU downtime %lld ms, %llu bytes while stopped, %llu rounds\n",
              rep.Summary().c_str(), static_cast<long long>(U64Or(out, "qemu_downtime_ms")),
              static_cast<unsigned long long>(U64Or(out, "qemu_downtime_bytes")),
              static_cast<unsigned long long>(U64Or(out, "qemu_rounds")));

  // The kept source (postmigrate) and the paused destination hold the same RAM.
  std::string src_ram;
  for (const VmRecord& rec : cluster_->Records("h1")) {
    if (rec.name == kVm) {
      EXPECT_EQ(rec.role, VmRole::kMigrated);
      src_ram = rec.spec.ram_path;
    }
  }
  const VmInfo dest = VmInfo::FromJson(out["destination_vm"]);
  ASSERT_FALSE(src_ram.empty());
  EXPECT_EQ(cluster_->FindVm("h2", kVm)->run_state, "paused");
  EXPECT_EQ(CompareRamFiles(src_ram, dest.ram_path), "");

  // The inventory moved the VM and logged the figures.
  auto inv = cluster_->OpenInventory().value();
  Vm vm = inv->GetVm(kVm).value();
  EXPECT_EQ(vm.host, "h2");
  EXPECT_EQ(vm.ram_path, dest.ram_path);
  EXPECT_EQ(inv->GetHost("h2").value().memory_reserved_mib, 0u);
  Migration m = inv->GetMigration(out["migration_id"].get<std::int64_t>()).value();
  EXPECT_EQ(m.outcome, MigrationOutcome::kSucceeded);
  EXPECT_EQ(m.figures.bytes_on_wire, rep.wire_bytes_sent);
  EXPECT_EQ(m.figures.bytes_saved_position + m.figures.bytes_saved_content,
            rep.pages_elided() * kPageSize);

  // Resumed, the guest goes on counting at the destination.
  r = cluster_->Cli({"vm", "start", kVm});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_TRUE(CounterAdvances(dest.serial_log)) << SerialLogTail(dest.serial_log);
  // The kept source goes away with its RAM file.
  ASSERT_TRUE(cluster_->Client("h1").StopVm(kVm).ok());
  EXPECT_FALSE(std::filesystem::exists(src_ram));
}

TEST_F(MigrateTest, NoEscdrSendsEveryPage) {
  const std::string src = HostOf(kVm);
  const std::string dst = OtherDonorHost(src);
  CliResult r = cluster_->Cli({"--json", "migrate", kVm, "--to", dst, "--no-escdr"});
  ASSERT_TRUE(r.ok()) << r.err;
  const MigrationReport rep = MigrationReportFromJson(json::parse(r.out)["report"]);
  EXPECT_EQ(rep.pages_elided(), 0u);
  EXPECT_EQ(rep.pages_from_donor, 0u);
  EXPECT_GE(rep.wire_bytes_sent, rep.stream_bytes);
  RecordProperty("no_escdr_wire_bytes_sent", std::to_string(rep.wire_bytes_sent));
  std::printf("  --no-escdr: %s\n", rep.Summary().c_str());
  auto inv = cluster_->OpenInventory().value();
  EXPECT_EQ(inv->GetVm(kVm).value().host, dst);
  auto now = cluster_->FindVm(dst, kVm);
  ASSERT_TRUE(now.has_value());
  EXPECT_EQ(now->run_state, "running");
  EXPECT_TRUE(CounterAdvances(now->serial_log));
  EXPECT_FALSE(cluster_->FindVm(src, kVm).has_value());
}

// The wire codec's settings there and back: every one rebuilds the guest
// byte for byte (the destination kept paused and compared with the kept
// source), and the guest runs on.
TEST_F(MigrateTest, EveryCodecSettingMigratesByteExactBothWays) {
  struct Leg {
    std::vector<std::string> args;
    const char* codec;
  };
  const Leg legs[] = {
      {{"--compress", "lz4", "--codec-threads", "3"}, "lz4"},
      {{"--compress", "zstd:3", "--dedup-budget", "1M", "--max-bandwidth", "32M"}, "zstd:3"},
      {{"--compress", "none", "--dedup-budget", "0"}, "none"},
  };
  for (const Leg& leg : legs) {
    SCOPED_TRACE(leg.codec);
    const std::string src = HostOf(kVm);
    const std::string dst = OtherDonorHost(src);
    std::vector<std::string> args = {"--json", "migrate", kVm, "--to", dst, "--keep-paused",
                                     "--keep-source"};
    args.insert(args.end(), leg.args.begin(), leg.args.end());
    CliResult r = cluster_->Cli(args);
    ASSERT_TRUE(r.ok()) << r.err << cluster_->AgentLog(src);
    json out = json::parse(r.out);
    const MigrationReport rep = MigrationReportFromJson(out["report"]);
    std::printf("  %s: %s\n", leg.codec, rep.Summary().c_str());
    EXPECT_EQ(rep.CodecLabel(), leg.codec);
    EXPECT_EQ(rep.rebuilt_bytes, rep.stream_bytes);
    if (std::string(leg.codec) != "none") {
      EXPECT_LT(rep.codec_wire_bytes, rep.codec_frame_bytes);
    } else {
      EXPECT_EQ(rep.pages_deduplicated, 0u);
      EXPECT_EQ(rep.codec_frame_bytes, 0u);
    }
    std::string src_ram;
    for (const VmRecord& rec : cluster_->Records(src)) {
      if (rec.name == kVm) src_ram = rec.spec.ram_path;
    }
    const VmInfo dest = VmInfo::FromJson(out["destination_vm"]);
    ASSERT_FALSE(src_ram.empty());
    EXPECT_EQ(CompareRamFiles(src_ram, dest.ram_path), "");
    ASSERT_TRUE(cluster_->Cli({"vm", "start", kVm}).ok());
    EXPECT_TRUE(CounterAdvances(dest.serial_log)) << SerialLogTail(dest.serial_log);
    ASSERT_TRUE(cluster_->Client(src).StopVm(kVm).ok());
  }
}

TEST_F(MigrateTest, BadCodecOptionsAreRefusedBeforeAnythingRuns) {
  const std::string src = HostOf(kVm);
  const std::string dst = OtherDonorHost(src);
  for (const auto& bad : std::vector<std::vector<std::string>>{
           {"--compress", "gzip"}, {"--compress", "zstd:99"}, {"--dedup-budget", "2T"},
           {"--max-bandwidth", "fast"}}) {
    std::vector<std::string> args = {"migrate", kVm, "--to", dst};
    args.insert(args.end(), bad.begin(), bad.end());
    CliResult r = cluster_->Cli(args);
    EXPECT_FALSE(r.ok()) << bad[0];
    EXPECT_NE(r.err.find(bad[1]), std::string::npos) << r.err;
    // The VM did not move and keeps running where it was.
    EXPECT_EQ(HostOf(kVm), src);
  }
}

TEST_F(MigrateTest, SummaryForPeopleNamesEveryFigure) {
  const std::string src = HostOf(kVm);
  const std::string dst = OtherDonorHost(src);
  CliResult r = cluster_->Cli({"migrate", kVm, "--to", dst});
  ASSERT_TRUE(r.ok()) << r.err;
  std::printf("%s", r.out.c_str());
  EXPECT_NE(r.out.find(fmt::format("migrated {} from {} to {}", kVm, src, dst)), std::string::npos);
  for (const char* row : {"bytes QEMU produced", "bytes on the wire (to destination)",
                          "saved by position", "saved by content",
                          "deduplicated in the migration", "compressed (zstd:1)", "zero pages",
                          "fallbacks", "total time", "downtime"}) {
    EXPECT_NE(r.out.find(row), std::string::npos) << row;
  }
  // The log shows it too.
  r = cluster_->Cli({"migration", "list"});
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_NE(r.out.find("succeeded"), std::string::npos) << r.out;
}

TEST_F(MigrateTest, DestinationAgentKilledMidMigration) {
  Before b = Snapshot();
  std::optional<testing::CliRun> run;
  const pid_t qemu = StartSlowMigration(b, &run);
  ASSERT_GT(qemu, 0);
  cluster_->KillAgent(b.dst);
  CliResult r = run->Wait();
  EXPECT_NE(r.err.find("lost the connection to the destination agent"), std::string::npos) << r.err;
  // The destination QEMU ends by itself once its incoming stream breaks,
  // before anything restarts the agent.
  EXPECT_TRUE(WaitUntil([&] { return ProcessGone(qemu); }, seconds(60)));
  // Restarted, the agent clears the stale record and finds its donor (which
  // outlived it) again.
  ASSERT_TRUE(cluster_->StartAgent(b.dst).ok());
  ExpectSourceIntact(b, r, qemu);
  auto vms = cluster_->Client(b.dst).ListVms().value();
  ASSERT_EQ(vms.size(), 1u);
  EXPECT_EQ(vms[0].run_state, "running");
}

TEST_F(MigrateTest, ConnectionCutMidMigration) {
  Before b = Snapshot();
  pid_t qemu = 0;
  CliResult r;
  ASSERT_NO_FATAL_FAILURE(MigrateThroughFaultyRelay(b, Relay::Fault::kCut, 2u << 20, &qemu, &r));
  EXPECT_NE(r.err.find("lost the connection to the destination agent"), std::string::npos) << r.err;
  ExpectSourceIntact(b, r, qemu);
}

TEST_F(MigrateTest, DestinationQemuKilledMidMigration) {
  Before b = Snapshot();
  std::optional<testing::CliRun> run;
  const pid_t qemu = StartSlowMigration(b, &run);
  ASSERT_GT(qemu, 0);
  auto proc = VmProcess::Adopt(qemu, cluster_->StateDir(b.dst), false, milliseconds(0));
  ASSERT_TRUE(proc.has_value()) << proc.error().ToString();
  ASSERT_TRUE((*proc)->Kill().ok());
  CliResult r = run->Wait();
  EXPECT_NE(r.err.find("destination reported: cannot write to the destination QEMU"),
            std::string::npos) << r.err;
  ExpectSourceIntact(b, r, qemu);
}

TEST_F(MigrateTest, CorruptedFrameIsDetected) {
  Before b = Snapshot();
  pid_t qemu = 0;
  CliResult r;
  ASSERT_NO_FATAL_FAILURE(
      MigrateThroughFaultyRelay(b, Relay::Fault::kFlip, (3u << 20) / 2, &qemu, &r));
  // Under TLS (the cluster's default) the record layer catches the flipped
  // byte before the frame's CRC32C would.
  EXPECT_TRUE(r.err.find("checksum mismatch") != std::string::npos ||
              r.err.find("bad record mac") != std::string::npos ||
              r.err.find("decryption failed") != std::string::npos)
      << r.err;
  ExpectSourceIntact(b, r, qemu);
}

TEST_F(MigrateTest, ChangedDonorPageFallsBackToSourceAndGuestIsExact) {
  Before b = Snapshot();
  // The destination agent holds each incoming migration after its donor scan.
  TempDir hold = TempDir::Create("escdr-hold").value();
  ASSERT_TRUE(cluster_->StopAgent(b.dst).ok());
  ASSERT_TRUE(cluster_->StartAgent(b.dst, {{"ESCDR_AGENT_TEST_HOLD_AFTER_SCAN", hold.path()}}).ok());

  std::optional<testing::CliRun> run;
  run.emplace(cluster_->StartCli({"--json", "migrate", kVm, "--to", b.dst, "--keep-paused",
                                  "--keep-source"})
                  .value());
  const std::string scanned = hold.File(std::string(kVm) + ".scanned");
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(scanned); }, seconds(120)))
      << cluster_->AgentLog(b.dst);
  const std::string donor_ram = StringOr(json::parse(ReadFileToString(scanned).value()), "donor_ram_path");
  ASSERT_FALSE(donor_ram.empty());

  // Content the source holds and the donor offers: change it in the donor.
  std::set<std::uint32_t> in_source;
  {
    auto src = OpenRamFile(b.vm.ram_path).value();
    for (std::uint64_t off = 0; off < src->blocks()[0].length; off += kPageSize) {
      const std::uint32_t i = catalog_->Find(HashPage(src->BlockData(0) + off));
      if (i != kNoContent) in_source.insert(i);
    }
  }
  const int fd = ::open(donor_ram.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0);
  auto* donor = static_cast<std::uint8_t*>(
      ::mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ::close(fd);
  ASSERT_NE(donor, MAP_FAILED);
  std::set<std::uint32_t> chosen;
  std::vector<std::pair<std::uint64_t, std::vector<std::uint8_t>>> saved;
  for (std::uint64_t off = 0; off < static_cast<std::uint64_t>(st.st_size) && saved.size() < 256;
       off += kPageSize) {
    const std::uint32_t i = catalog_->Find(HashPage(donor + off));
    if (i == kNoContent || !in_source.count(i)) continue;
    if (!chosen.count(i) && chosen.size() >= 64) continue;
    chosen.insert(i);
    saved.emplace_back(off, std::vector<std::uint8_t>(donor + off, donor + off + kPageSize));
    donor[off + 100] ^= 0x5a;
  }
  ASSERT_FALSE(saved.empty());
  ASSERT_TRUE(WriteStringToFile(hold.File(std::string(kVm) + ".release"), "").ok());

  CliResult r = run->Wait();
  for (const auto& [off, page] : saved) std::memcpy(donor + off, page.data(), kPageSize);
  ::munmap(donor, st.st_size);
  ASSERT_TRUE(r.ok()) << r.err << cluster_->AgentLog(b.dst);
  json out = json::parse(r.out);
  const MigrationReport rep = MigrationReportFromJson(out["report"]);
  EXPECT_GE(rep.fallbacks, 1u);
  EXPECT_EQ(rep.rebuilt_bytes, rep.stream_bytes);
  RecordProperty("fallbacks", std::to_string(rep.fallbacks));

  // Byte for byte what the source had, and it runs on.
  const VmInfo dest = VmInfo::FromJson(out["destination_vm"]);
  EXPECT_EQ(CompareRamFiles(b.vm.ram_path, dest.ram_path), "");
  ASSERT_TRUE(cluster_->Cli({"vm", "start", kVm}).ok());
  EXPECT_TRUE(CounterAdvances(dest.serial_log));
  ASSERT_TRUE(cluster_->Client(b.src).StopVm(kVm).ok());
}

// A guest that rewrites 16 MiB without pause never converges at 4 MiB/s:
// QEMU's remaining dirty memory never fits its 300 ms downtime limit. With
// --auto-converge QEMU throttles its vCPUs until it does, and the guest
// arrives byte-identical and runs on.
TEST_F(MigrateTest, BusyGuestConvergesWithAutoConverge) {
  constexpr const char* kBusyVm = "busy";
  const std::string guest = escdr::testing::EnsureGuestBuilt().value();
  CliResult created = cluster_->Cli(
      {"vm", "create", kBusyVm, "--host", "h3", "--os", kKind.os, "--os-version",
       kKind.os_version, "--hypervisor-version", kKind.hypervisor_version, "--memory", "128",
       "--kernel", guest + "/vmlinuz", "--initrd", guest + "/initrd.img", "--append",
       "console=ttyS0 quiet nokaslr escdr.dirty=16"});
  ASSERT_TRUE(created.ok()) << created.err;
  auto src = cluster_->FindVm("h3", kBusyVm);
  ASSERT_TRUE(src.has_value());
  ASSERT_TRUE(WaitUntil([&] { return testing::Counter(src->serial_log) >= 3; }, seconds(300)))
      << SerialLogTail(src->serial_log);
  ASSERT_TRUE(WaitUntil(
      [&] { return SerialLogTail(src->serial_log).find("dirtying 16 MiB") != std::string::npos; },
      seconds(60)))
      << SerialLogTail(src->serial_log);

  CliResult r = cluster_->Cli({"--json", "migrate", kBusyVm, "--to", "h2", "--keep-paused",
                               "--keep-source", "--max-bandwidth", "4M", "--auto-converge",
                               "--timeout", "600"});
  ASSERT_TRUE(r.ok()) << r.err << cluster_->AgentLog("h3");
  json out = json::parse(r.out);
  std::printf("  auto-converge: throttled up to %llu%%, %llu rounds, QEMU downtime %lld ms\n",
              static_cast<unsigned long long>(U64Or(out, "qemu_cpu_throttle_max")),
              static_cast<unsigned long long>(U64Or(out, "qemu_rounds")),
              static_cast<long long>(U64Or(out, "qemu_downtime_ms")));
  EXPECT_GT(U64Or(out, "qemu_cpu_throttle_max"), 0u) << "QEMU never throttled the guest";
  RecordProperty("cpu_throttle_max", std::to_string(U64Or(out, "qemu_cpu_throttle_max")));

  std::string src_ram;
  for (const VmRecord& rec : cluster_->Records("h3")) {
    if (rec.name == kBusyVm && rec.role == VmRole::kMigrated) src_ram = rec.spec.ram_path;
  }
  ASSERT_FALSE(src_ram.empty());
  const VmInfo dest = VmInfo::FromJson(out["destination_vm"]);
  EXPECT_EQ(CompareRamFiles(src_ram, dest.ram_path), "");
  ASSERT_TRUE(cluster_->Cli({"vm", "start", kBusyVm}).ok());
  EXPECT_TRUE(CounterAdvances(dest.serial_log)) << SerialLogTail(dest.serial_log);
  ASSERT_TRUE(cluster_->Client("h3").StopVm(kBusyVm).ok());
  ASSERT_TRUE(cluster_->Cli({"vm", "stop", kBusyVm}).ok());
}

}  // namespace
}  // namespace escdr::agent
