// Real VMs through escdr: Debian 12 guests (tools/build-distro-guest.sh) with
// a qcow2 overlay disk on storage both hosts reach, a user-mode NIC whose
// nginx and redis ports are forwarded to the host, and a root console, run by
// two real agents and migrated with the real `escdr` binary.
//
// Three guests boot independently (each its own machine-id, its own boot):
// `web` on h1, and a peer of the same kind on each host, which are the
// donors. The catalog is learned from the two peers only, never from the
// guest that moves. `web` then moves h1 -> h2 idle and h2 -> h1 while a load
// generator keeps redis and nginx busy. Each move must rebuild the guest's
// RAM byte for byte (destination kept paused, compared with the stopped
// source), and after it the guest's services must answer with the data
// written before it: a redis key, nginx's pages, and a file written and
// fsynced in the guest, read back from the disk the destination opened.
//
// ESCDR_REAL_GUEST (default debian-12) picks the distribution guest.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/agent_cluster_testing.h"
#include "agent/json_util.h"
#include "testing/guest_services.h"

namespace escdr::agent {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::AgentCluster;
using testing::CliResult;
using testing::CompareRamFiles;
using testing::WaitUntil;
namespace guest = ::escdr::testing;

std::string GuestName() {
  const char* env = std::getenv("ESCDR_REAL_GUEST");
  return env && *env ? env : "debian-12";
}
const VmKind kKind{"debian", GuestName().substr(GuestName().rfind('-') + 1), "qemu", "7.2"};
constexpr const char* kMemory = "512";
// web moves; peer-1 (h2) and peer-2 (h1) are the donors and the catalog's samples.
const std::map<std::string, std::string> kPlacement = {
    {"web", "h1"}, {"peer-1", "h2"}, {"peer-2", "h1"}};

constexpr milliseconds kServiceTimeout = seconds(20);

// A console command's output without the blanks and control characters a
// tty may put around it (a stray newline or escape before the first line).
std::string Trim(const std::string& s) {
  auto blank = [](unsigned char c) { return c <= ' ' || c == 0x7f; };
  std::size_t b = 0, e = s.size();
  while (b < e && blank(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && blank(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// Waits until `vm` on `host` answers on redis and nginx.
Status WaitForServicesOn(AgentCluster& cluster, const std::string& host, const std::string& vm,
                         milliseconds timeout) {
  auto Info = [&](const std::string& h, const std::string& v) {
    return cluster.FindVm(h, v).value_or(VmInfo{});
  };
  Status last = Status::NotFound(fmt::format("{} is not listed by {}", vm, host));
  const bool up = WaitUntil(
      [&] {
        const VmInfo info = Info(host, vm);
        if (info.forwards.count(80) == 0 || info.forwards.count(6379) == 0) return false;
        auto redis =
            guest::RedisClient::Connect("127.0.0.1", info.forwards.at(6379), seconds(2));
        if (!redis.has_value()) {
          last = redis.error();
          return false;
        }
        if (Status ping = redis->Ping(); !ping.ok()) {
          last = ping;
          return false;
        }
        auto page = guest::HttpGet("127.0.0.1", info.forwards.at(80), "/", seconds(5));
        if (!page.has_value()) {
          last = page.error();
          return false;
        }
        return page->status == 200;
      },
      timeout);
  if (up) return Status::OK();
  const VmInfo info = Info(host, vm);
  return Status::Timeout(fmt::format("{} on {}: services not up after {} s ({}); console: {}", vm,
                                     host, timeout.count() / 1000, last.ToString(),
                                     SerialLogTail(info.serial_log)));
}

class RealGuestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new AgentCluster();
    setup_ = Boot();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(setup_.ok()) << setup_.ToString(); }

  static Status Boot() {
    ESCDR_ASSIGN_OR_RETURN(guest_, guest::EnsureDistroGuest(GuestName()));
    for (const char* h : {"h1", "h2"}) ESCDR_RETURN_IF_ERROR(cluster_->StartAgent(h));
    disk_dir_ = cluster_->root() + "/shared-disks";
    for (const auto& [vm, host] : kPlacement) {
      CliResult r = cluster_->Cli(
          {"--json", "vm", "create", vm, "--host", host, "--os", kKind.os, "--os-version",
           kKind.os_version, "--hypervisor-version", kKind.hypervisor_version, "--memory", kMemory,
           "--disk-from", guest_.disk, "--disk-dir", disk_dir_, "--forward", "80", "--forward",
           "6379", "--console", "--kernel", guest_.kernel, "--initrd", guest_.initrd, "--append",
           guest_.cmdline});
      if (!r.ok()) return Status::Internal(fmt::format("vm create {}: {}", vm, r.err));
    }
    // All three boot at once; each is up when redis answers and nginx serves.
    for (const auto& [vm, host] : kPlacement) {
      Status up = WaitForServices(host, vm, seconds(600));
      if (!up.ok()) return up;
    }
    CliResult learned = cluster_->Cli(
        {"--json", "catalog", "learn", "--from-vm", "peer-1", "--from-vm", "peer-2"});
    if (!learned.ok()) return Status::Internal("catalog learn: " + learned.err);
    learn_out_ = json::parse(learned.out, nullptr, false);
    return Status::OK();
  }

  static VmInfo Info(const std::string& host, const std::string& vm) {
    auto info = cluster_->FindVm(host, vm);
    return info.value_or(VmInfo{});
  }

  static Status WaitForServices(const std::string& host, const std::string& vm,
                                milliseconds timeout) {
    return WaitForServicesOn(*cluster_, host, vm, timeout);
  }

  static Result<guest::ConsoleShell> Console(const std::string& host, const std::string& vm) {
    return guest::ConsoleShell::Connect(Info(host, vm).console_socket, seconds(60));
  }

  // What the guest holds before a move, checked again after it.
  struct Witness {
    std::string key, value;
    std::string file, file_sha256;
    std::string index_page, blob_sha256;
  };

  static void Write(const std::string& host, const std::string& tag, Witness* w) {
    const VmInfo info = Info(host, "web");
    auto redis = guest::RedisClient::Connect("127.0.0.1", info.forwards.at(6379), kServiceTimeout);
    ASSERT_TRUE(redis.has_value()) << redis.error().ToString();
    w->key = "witness:" + tag;
    w->value = fmt::format("{}-{}", tag, std::rand());
    ASSERT_TRUE(redis->Set(w->key, w->value).ok());
    auto index = guest::HttpGet("127.0.0.1", info.forwards.at(80), "/", kServiceTimeout);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    w->index_page = index->body;
    auto shell = Console(host, "web");
    ASSERT_TRUE(shell.has_value()) << shell.error().ToString();
    w->file = "/root/witness-" + tag;
    // Written and fsynced in the guest: on the shared overlay, not only in RAM.
    auto wrote = shell->Run(fmt::format("head -c 4M /dev/urandom > {0} && sync {0} && "
                                        "sha256sum {0} | cut -d' ' -f1",
                                        w->file),
                            seconds(60));
    ASSERT_TRUE(wrote.has_value()) << wrote.error().ToString();
    ASSERT_EQ(wrote->exit_code, 0) << wrote->output;
    w->file_sha256 = Trim(wrote->output);
    ASSERT_EQ(w->file_sha256.size(), 64u) << json(wrote->output).dump();  // hex digits
    auto blob = shell->Run("sha256sum /var/www/html/blob.bin | cut -d' ' -f1", seconds(30));
    ASSERT_TRUE(blob.has_value()) << blob.error().ToString();
    w->blob_sha256 = Trim(blob->output);
  }

  static void Verify(const std::string& host, const Witness& w) {
    ASSERT_TRUE(WaitForServices(host, "web", seconds(60)).ok());
    const VmInfo info = Info(host, "web");
    auto redis = guest::RedisClient::Connect("127.0.0.1", info.forwards.at(6379), kServiceTimeout);
    ASSERT_TRUE(redis.has_value()) << redis.error().ToString();
    auto value = redis->Get(w.key);
    ASSERT_TRUE(value.has_value()) << value.error().ToString();
    EXPECT_EQ(*value, w.value);
    auto index = guest::HttpGet("127.0.0.1", info.forwards.at(80), "/", kServiceTimeout);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    EXPECT_EQ(index->status, 200);
    EXPECT_EQ(index->body, w.index_page);
    auto blob = guest::HttpGet("127.0.0.1", info.forwards.at(80), "/blob.bin", kServiceTimeout);
    ASSERT_TRUE(blob.has_value()) << blob.error().ToString();
    EXPECT_EQ(blob->body.size(), 1u << 20);
    auto shell = Console(host, "web");
    ASSERT_TRUE(shell.has_value()) << shell.error().ToString();
    // Read back from the disk the destination opened, not from the page cache.
    auto read = shell->Run(fmt::format("sync && echo 3 > /proc/sys/vm/drop_caches && "
                                       "sha256sum {} | cut -d' ' -f1",
                                       w.file),
                           seconds(60));
    ASSERT_TRUE(read.has_value()) << read.error().ToString();
    EXPECT_EQ(read->exit_code, 0) << read->output;
    EXPECT_EQ(Trim(read->output), w.file_sha256);
    auto services = shell->Run("systemctl is-active nginx redis-server", seconds(30));
    ASSERT_TRUE(services.has_value()) << services.error().ToString();
    EXPECT_EQ(Trim(services->output), "active\nactive");
    // The destination may write the disk now: the source let go of it.
    auto write = shell->Run("echo after > /root/after && sync /root/after && cat /root/after",
                            seconds(30));
    ASSERT_TRUE(write.has_value()) << write.error().ToString();
    EXPECT_EQ(Trim(write->output), "after");
  }

  // Moves web from `src` to `dst` with the destination kept paused and the
  // source kept, compares their RAM, resumes it and stops the kept source.
  static void Move(const std::string& src, const std::string& dst, MigrationReport* report) {
    CliResult r = cluster_->Cli(
        {"--json", "migrate", "web", "--to", dst, "--keep-paused", "--keep-source"});
    ASSERT_TRUE(r.ok()) << r.err << cluster_->AgentLog(src) << cluster_->AgentLog(dst);
    const json out = json::parse(r.out, nullptr, false);
    ASSERT_TRUE(out.is_object()) << r.out;
    *report = MigrationReportFromJson(out["report"]);
    EXPECT_EQ(StringOr(out, "donor"), dst == "h2" ? "peer-1" : "peer-2");
    std::printf("  web %s -> %s: %s\n", src.c_str(), dst.c_str(), report->Summary().c_str());
    std::string src_ram;
    for (const VmRecord& rec : cluster_->Records(src)) {
      if (rec.name == "web" && rec.role == VmRole::kMigrated) src_ram = rec.spec.ram_path;
    }
    ASSERT_FALSE(src_ram.empty());
    const VmInfo dest = VmInfo::FromJson(out["destination_vm"]);
    EXPECT_EQ(Info(dst, "web").run_state, "paused");
    EXPECT_EQ(CompareRamFiles(src_ram, dest.ram_path), "");
    ASSERT_TRUE(cluster_->Cli({"vm", "start", "web"}).ok());
    ASSERT_TRUE(cluster_->Cli({"vm", "stop", "web", "--host", src}).ok());
  }

  static AgentCluster* cluster_;
  static Status setup_;
  static guest::DistroGuest guest_;
  static std::string disk_dir_;
  static json learn_out_;
};

AgentCluster* RealGuestTest::cluster_ = nullptr;
Status RealGuestTest::setup_;
guest::DistroGuest RealGuestTest::guest_;
std::string RealGuestTest::disk_dir_;
json RealGuestTest::learn_out_;

// One test: the guests boot once (two minutes under TCG) for every check.
TEST_F(RealGuestTest, MovesIdleAndUnderLoadKeepingServicesDataAndDisk) {
  // The catalog of the kind, from the two peers.
  ASSERT_TRUE(learn_out_.is_object());
  EXPECT_EQ(learn_out_["samples"], 2);
  std::printf("  catalog of %s: %s\n", kKind.ToString().c_str(), learn_out_.dump().c_str());
  // Each VM has its own overlay of the base image, under the shared directory.
  for (const auto& [vm, host] : kPlacement) {
    const json spec = json::parse(cluster_->OpenInventory().value()->GetVm(vm).value().launch_spec);
    ASSERT_EQ(spec["disks"].size(), 1u);
    EXPECT_EQ(spec["disks"][0]["path"], disk_dir_ + "/" + vm + ".qcow2");
  }

  // A migration that cannot finish (1 MB/s for 512 MiB, given 8 s) fails;
  // the source keeps its disk and writes it, and no QEMU of web is left on h2.
  {
    CliResult r = cluster_->Cli({"migrate", "web", "--to", "h2", "--max-bandwidth", "1M",
                                 "--timeout", "8"});
    EXPECT_FALSE(r.ok()) << r.out;
    std::printf("  failed as intended: %s", r.err.c_str());
    EXPECT_FALSE(cluster_->FindVm("h2", "web").has_value());
    EXPECT_EQ(cluster_->OpenInventory().value()->GetVm("web").value().host, "h1");
    ASSERT_TRUE(WaitUntil([&] { return Info("h1", "web").run_state == "running"; }, seconds(30)));
    auto shell = Console("h1", "web");
    ASSERT_TRUE(shell.has_value()) << shell.error().ToString();
    auto write = shell->Run("echo still-mine > /root/after-failure && sync /root/after-failure && "
                            "cat /root/after-failure",
                            seconds(60));
    ASSERT_TRUE(write.has_value()) << write.error().ToString();
    EXPECT_EQ(write->exit_code, 0);
    EXPECT_EQ(Trim(write->output), "still-mine");
  }

  // Idle, h1 -> h2.
  Witness idle;
  ASSERT_NO_FATAL_FAILURE(Write("h1", "idle", &idle));
  MigrationReport out;
  ASSERT_NO_FATAL_FAILURE(Move("h1", "h2", &out));
  EXPECT_GT(out.pages_from_donor, 10000u) << out.Summary();
  EXPECT_LT(out.wire_bytes_sent, out.stream_bytes / 2) << out.Summary();
  ASSERT_NO_FATAL_FAILURE(Verify("h2", idle));

  // Under load, h2 -> h1: redis writers and nginx readers run throughout.
  Witness loaded;
  ASSERT_NO_FATAL_FAILURE(Write("h2", "loaded", &loaded));
  const VmInfo info = Info("h2", "web");
  guest::LoadOptions lo;
  lo.redis_port = info.forwards.at(6379);
  lo.http_port = info.forwards.at(80);
  lo.http_path = "/blob.bin";
  lo.redis_threads = 2;
  lo.key_count = 8192;  // 32 MiB of values, rewritten over and over
  lo.value_size = 4096;
  auto load = guest::ServiceLoad::Start(lo);
  ASSERT_TRUE(load.has_value()) << load.error().ToString();
  // Let it dirty the working set first.
  ASSERT_TRUE(WaitUntil([&] { return (*load)->Stats().redis_ops > 2000; }, seconds(120)))
      << (*load)->Stats().last_error;
  MigrationReport back;
  ASSERT_NO_FATAL_FAILURE(Move("h2", "h1", &back));
  const guest::LoadStats stats = (*load)->Stop();
  std::printf("  load: %llu redis writes, %llu HTTP requests, %llu errors (%s)\n",
              static_cast<unsigned long long>(stats.redis_ops),
              static_cast<unsigned long long>(stats.http_requests),
              static_cast<unsigned long long>(stats.errors), stats.last_error.c_str());
  EXPECT_GT(stats.redis_ops, 2000u);
  EXPECT_GT(stats.http_requests, 0u);
  EXPECT_GT(back.pages_from_donor, 5000u) << back.Summary();
  ASSERT_NO_FATAL_FAILURE(Verify("h1", loaded));
  ASSERT_NO_FATAL_FAILURE(Verify("h1", idle));

  // The inventory agrees; the donors ran on undisturbed.
  EXPECT_EQ(cluster_->OpenInventory().value()->GetVm("web").value().host, "h1");
  EXPECT_EQ(Info("h2", "peer-1").run_state, "running");
  EXPECT_EQ(Info("h1", "peer-2").run_state, "running");
}

// UEFI: two guests that OVMF boots from their disks (systemd-boot on the
// image's ESP, no --kernel), each with its own variable store beside its
// overlay; one moves to the other's host, the other is its donor. OVMF under
// TCG adds minutes to a boot, so CI leaves this to a run by hand:
// ESCDR_REAL_GUEST_UEFI=1 build/src/agent/real_guest_itest --gtest_filter='Uefi*'.
TEST(UefiGuestTest, BootsFromItsDiskAndMovesByteExact) {
  const char* on = std::getenv("ESCDR_REAL_GUEST_UEFI");
  if (on == nullptr || std::string(on) != "1") {
    GTEST_SKIP() << "by hand: ESCDR_REAL_GUEST_UEFI=1 (OVMF boots take minutes under TCG)";
  }
  auto image = guest::EnsureDistroGuest(GuestName());
  ASSERT_TRUE(image.has_value()) << image.error().ToString();
  AgentCluster cluster;
  for (const char* h : {"h1", "h2"}) ASSERT_TRUE(cluster.StartAgent(h).ok());
  const std::string disks = cluster.root() + "/shared-disks";
  for (const auto& [vm, host] : {std::pair<std::string, std::string>{"efi-web", "h1"},
                                 {"efi-peer", "h2"}}) {
    CliResult r = cluster.Cli({"vm", "create", vm, "--host", host, "--os", kKind.os,
                               "--os-version", kKind.os_version, "--hypervisor-version",
                               kKind.hypervisor_version, "--memory", kMemory, "--firmware",
                               "uefi", "--disk-from", image->disk, "--disk-dir", disks,
                               "--forward", "80", "--forward", "6379"});
    ASSERT_TRUE(r.ok()) << r.err;
    const json spec = json::parse(cluster.OpenInventory().value()->GetVm(vm).value().launch_spec);
    EXPECT_EQ(spec["kernel"], "");
    EXPECT_EQ(spec["firmware_vars"], disks + "/" + vm + ".vars.fd");
  }
  for (const auto& [vm, host] : {std::pair<std::string, std::string>{"efi-web", "h1"},
                                 {"efi-peer", "h2"}}) {
    ASSERT_TRUE(WaitForServicesOn(cluster, host, vm, seconds(900)).ok());
  }
  ASSERT_TRUE(cluster.Cli({"catalog", "learn", "--from-vm", "efi-web", "--from-vm", "efi-peer"}).ok());
  CliResult r = cluster.Cli(
      {"--json", "migrate", "efi-web", "--to", "h2", "--keep-paused", "--keep-source"});
  ASSERT_TRUE(r.ok()) << r.err;
  const json out = json::parse(r.out, nullptr, false);
  const MigrationReport rep = MigrationReportFromJson(out["report"]);
  std::printf("  efi-web h1 -> h2: %s\n", rep.Summary().c_str());
  EXPECT_GT(rep.pages_from_donor, 1000u);
  std::string src_ram;
  for (const VmRecord& rec : cluster.Records("h1")) {
    if (rec.name == "efi-web" && rec.role == VmRole::kMigrated) src_ram = rec.spec.ram_path;
  }
  ASSERT_FALSE(src_ram.empty());
  EXPECT_EQ(CompareRamFiles(src_ram, VmInfo::FromJson(out["destination_vm"]).ram_path), "");
  ASSERT_TRUE(cluster.Cli({"vm", "start", "efi-web"}).ok());
  ASSERT_TRUE(cluster.Cli({"vm", "stop", "efi-web", "--host", "h1"}).ok());
  EXPECT_TRUE(WaitForServicesOn(cluster, "h2", "efi-web", seconds(120)).ok());
}

}  // namespace
}  // namespace escdr::agent
