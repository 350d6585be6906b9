// The inventory through the real `escdr` binary: concurrent `escdr vm add`
// processes never over-commit a host, and bad input gives one error line, a
// non-zero exit and no change, on SQLite and PostgreSQL.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "escdr/inventory/inventory.h"
#include "inventory/inventory_testing.h"
#include "inventory/sql_db.h"

namespace escdr {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kEscdr = std::string(ESCDR_BINARY_DIR) + "/src/cli/escdr";

struct Outcome {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadAll(int fd) {
  std::string s;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) s.append(buf, static_cast<std::size_t>(n));
  return s;
}

// A started escdr process whose stdout and stderr go to files (so that many
// can run at once without pipe deadlocks). Killed and reaped if not waited.
class Process {
 public:
  Process(const std::string& dir, int id, const std::vector<std::string>& args) {
    out_path_ = dir + "/out." + std::to_string(id);
    err_path_ = dir + "/err." + std::to_string(id);
    pid_ = fork();
    if (pid_ == 0) {
      const int out = open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(out, 1);
      dup2(err, 2);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(kEscdr.c_str()));
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(kEscdr.c_str(), argv.data());
      _exit(127);
    }
  }
  ~Process() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  Process(Process&& o) noexcept
      : pid_(std::exchange(o.pid_, -1)), out_path_(o.out_path_), err_path_(o.err_path_) {}

  Outcome Wait() {
    Outcome o;
    int status = 0;
    if (pid_ > 0 && waitpid(pid_, &status, 0) == pid_) {
      o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    pid_ = -1;
    for (auto [path, dst] : {std::pair{&out_path_, &o.out}, std::pair{&err_path_, &o.err}}) {
      const int fd = open(path->c_str(), O_RDONLY);
      if (fd >= 0) {
        *dst = ReadAll(fd);
        close(fd);
      }
    }
    return o;
  }

 private:
  pid_t pid_ = -1;
  std::string out_path_, err_path_;
};

class InventoryCliTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(kEscdr)) << kEscdr << " is missing: build target escdr";
    ESCDR_REQUIRE_BACKEND(GetParam());
    db_ = std::make_unique<inventory_testing::TestDatabase>(GetParam());
    ASSERT_TRUE(db_->ok());
    std::string tmpl = (std::filesystem::temp_directory_path() / "escdr-cli-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    db_.reset();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  Process Start(std::vector<std::string> args) {
    args.insert(args.begin(), {"--db", db_->url(), "--state-dir", dir_});
    return Process(dir_, next_id_++, args);
  }
  Outcome Run(std::vector<std::string> args) { return Start(std::move(args)).Wait(); }
  nlohmann::json Json(std::vector<std::string> args) {
    args.insert(args.begin(), "--json");
    Outcome o = Run(std::move(args));
    EXPECT_EQ(o.exit_code, 0) << o.err;
    return nlohmann::json::parse(o.out, nullptr, /*allow_exceptions=*/false);
  }

  std::unique_ptr<inventory_testing::TestDatabase> db_;
  std::string dir_;
  int next_id_ = 0;
};

const std::vector<std::string> kKind = {"--os", "debian", "--os-version", "12", "--hypervisor",
                                        "qemu", "--hypervisor-version", "7.2"};

std::vector<std::string> VmAdd(const std::string& name, std::vector<std::string> extra) {
  std::vector<std::string> args = {"vm", "add", name};
  args.insert(args.end(), kKind.begin(), kKind.end());
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

TEST_P(InventoryCliTest, ConcurrentVmAddProcessesNeverOverCommit) {
  constexpr int kHosts = 3, kSlots = 4, kProcs = 16;
  for (int h = 0; h < kHosts; ++h) {
    Outcome o = Run({"host", "add", "h" + std::to_string(h), "--memory", "4G", "--vcpus", "64"});
    ASSERT_EQ(o.exit_code, 0) << o.err;
  }
  std::vector<Process> procs;
  for (int i = 0; i < kProcs; ++i) {
    procs.push_back(Start(VmAdd("v" + std::to_string(i), {"--memory", "1G", "--vcpus", "1"})));
  }
  int ok = 0, refused = 0;
  for (Process& p : procs) {
    Outcome o = p.Wait();
    if (o.exit_code == 0) {
      ++ok;
      EXPECT_THAT(o.out, StartsWith("placed v"));
    } else {
      ++refused;
      EXPECT_EQ(o.exit_code, 1);
      EXPECT_THAT(o.err, StartsWith("escdr: cannot place VM v"));
      EXPECT_THAT(o.err, HasSubstr("no host has room"));
    }
  }
  EXPECT_EQ(ok, kHosts * kSlots);
  EXPECT_EQ(refused, kProcs - kHosts * kSlots);
  nlohmann::json hosts = Json({"host", "list"});
  ASSERT_TRUE(hosts.contains("hosts"));
  for (const auto& h : hosts["hosts"]) {
    EXPECT_EQ(h["memory_used_mib"], 4096) << h["name"];
    EXPECT_EQ(h["vm_count"], kSlots) << h["name"] << ": spread evenly";
  }
}

TEST_P(InventoryCliTest, BadInputGivesOneErrorLineAndChangesNothing) {
  ASSERT_EQ(Run({"host", "add", "h1", "--memory", "8G", "--vcpus", "8"}).exit_code, 0);
  ASSERT_EQ(Run(VmAdd("v1", {"--memory", "1G", "--vcpus", "1", "--host", "h1", "--state",
                             "running"}))
                .exit_code,
            0);
  const nlohmann::json hosts_before = Json({"host", "list"});
  const nlohmann::json vms_before = Json({"vm", "list"});

  struct Case {
    std::vector<std::string> args;
    std::string error;
  } cases[] = {
      {{"host", "add", "h1", "--memory", "4G", "--vcpus", "4"},
       "escdr: cannot add host h1: a host of that name already exists"},
      {{"host", "add", "h2", "--memory", "0", "--vcpus", "4"}, "escdr: --memory '0' is too small"},
      {{"host", "add", "h2", "--memory=-4G", "--vcpus", "4"}, "escdr: --memory '-4G' is negative"},
      {{"host", "add", "h2", "--memory", "4G", "--vcpus", "0"}, "escdr: --vcpus 0 must be > 0"},
      {{"host", "show", "nope"}, "escdr: cannot show host: no host named nope"},
      {{"host", "remove", "h1"}, "escdr: cannot remove host h1: 1 VM is placed on it"},
      {VmAdd("v1", {"--memory", "1G", "--vcpus", "1", "--host", "h1"}),
       "escdr: cannot add VM v1: a VM of that name already exists"},
      {VmAdd("v2", {"--memory", "1G", "--vcpus", "1", "--host", "nope"}),
       "escdr: cannot add VM v2: no host named nope"},
      {VmAdd("v2", {"--memory", "64G", "--vcpus", "1"}),
       "escdr: cannot place VM v2: it needs 65536 MiB and 1 vCPUs, more than any host has"},
      {VmAdd("v2", {"--memory", "8G", "--vcpus", "1", "--host", "h1"}),
       "escdr: cannot add VM v2: host h1 has no room (7168 MiB free, 8192 MiB needed)"},
      {{"vm", "show", "nope"}, "escdr: cannot show VM: no VM named nope"},
      {{"vm", "remove", "nope"}, "escdr: cannot remove VM nope: no such VM"},
      {{"destination", "nope"}, "escdr: cannot choose a destination for VM nope: no such VM"},
      {{"destination", "v1"}, "escdr: no destination for VM v1: no host other than h1 has room"},
  };
  for (const Case& c : cases) {
    Outcome o = Run(c.args);
    EXPECT_EQ(o.exit_code, 1) << c.error;
    EXPECT_THAT(o.err, StartsWith(c.error));
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << "one line: " << o.err;
    EXPECT_EQ(o.out, "") << c.error;
  }
  EXPECT_EQ(Json({"host", "list"}), hosts_before);
  EXPECT_EQ(Json({"vm", "list"}), vms_before);
}

TEST_P(InventoryCliTest, UnreachableDatabaseAndNewerSchemaAreOneLineErrors) {
  Outcome pg = Process(dir_, 1000,
                       {"--db", "postgresql://u:secret@/escdr?host=/nonexistent-escdr-dir",
                        "host", "list"})
                   .Wait();
  EXPECT_EQ(pg.exit_code, 1);
  EXPECT_THAT(pg.err, StartsWith("escdr: cannot connect to database postgresql://u:***@/escdr"));
  EXPECT_THAT(pg.err, ::testing::Not(HasSubstr("secret")));
  EXPECT_EQ(std::count(pg.err.begin(), pg.err.end(), '\n'), 1);
  Outcome missing =
      Process(dir_, 1001, {"--db", "/nonexistent-escdr-dir/inv.db", "host", "list"}).Wait();
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err,
            "escdr: cannot open database /nonexistent-escdr-dir/inv.db: directory "
            "/nonexistent-escdr-dir does not exist\n");

  ASSERT_EQ(Run({"host", "list"}).exit_code, 0);  // creates the schema
  {
    auto raw = GetParam() == "postgres"
                   ? inventory_internal::OpenPostgres(db_->url())
                   : inventory_internal::OpenSqlite(db_->url(), db_->url());
    ASSERT_TRUE(raw.has_value()) << raw.error().ToString();
    ASSERT_TRUE((*raw)->ExecScript("UPDATE schema_version SET version = 7").ok());
  }
  Outcome newer = Run({"host", "add", "h", "--memory", "1G", "--vcpus", "1"});
  EXPECT_EQ(newer.exit_code, 1);
  EXPECT_EQ(newer.err, "escdr: database " + RedactUrl(db_->url()) +
                           " has schema version 7; this escdr supports up to " +
                           std::to_string(kInventorySchemaVersion) + ": upgrade escdr\n");
}

TEST_P(InventoryCliTest, PlaceAndDestinationExplainTheirChoice) {
  ASSERT_EQ(Run({"host", "add", "a", "--memory", "8G", "--vcpus", "8", "--rack", "r1", "--pod",
                 "p1"})
                .exit_code,
            0);
  ASSERT_EQ(Run({"host", "add", "b", "--memory", "8G", "--vcpus", "8", "--rack", "r1", "--pod",
                 "p1"})
                .exit_code,
            0);
  ASSERT_EQ(Run({"host", "add", "c", "--memory", "8G", "--vcpus", "8", "--rack", "r9", "--pod",
                 "p9"})
                .exit_code,
            0);
  ASSERT_EQ(Run(VmAdd("v1", {"--memory", "1G", "--vcpus", "1", "--host", "a", "--state",
                             "running"}))
                .exit_code,
            0);
  ASSERT_EQ(Run(VmAdd("donor", {"--memory", "1G", "--vcpus", "1", "--host", "c", "--state",
                                "running"}))
                .exit_code,
            0);
  std::vector<std::string> place = {"place", "--memory", "1G", "--vcpus", "1", "--explain"};
  place.insert(place.end(), kKind.begin(), kKind.end());
  Outcome p = Run(place);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_THAT(p.out, StartsWith("would place the VM on b: chosen: runs no VM of this kind"));
  EXPECT_THAT(p.out, HasSubstr("runs 1 VM of this kind; b runs no VM of this kind"));

  Outcome d = Run({"destination", "v1", "--explain"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_THAT(d.out, StartsWith("destination for v1: c (donor donor;"));
  EXPECT_THAT(d.out, HasSubstr("runs no donor; c does"));
  EXPECT_THAT(d.out, HasSubstr("source host"));
  nlohmann::json j = Json({"destination", "v1"});
  EXPECT_EQ(j["destination"], "c");
  EXPECT_EQ(j["has_donor"], true);
  EXPECT_EQ(j["donor"], "donor");
}

TEST_P(InventoryCliTest, QemuVersionsAreShownAndRespected) {
  ASSERT_EQ(Run({"host", "add", "old", "--memory", "8G", "--vcpus", "8", "--qemu-version",
                 "7.2.19"})
                .exit_code,
            0);
  Outcome added = Run({"host", "add", "new", "--memory", "8G", "--vcpus", "8", "--qemu-version",
                       "10.0.13,7.2.19"});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  EXPECT_EQ(added.out, "added host new (8.0 GiB, 8 vCPUs, QEMU 7.2.19, 10.0.13)\n");
  ASSERT_EQ(Run({"host", "add", "plain", "--memory", "8G", "--vcpus", "8"}).exit_code, 0);
  Outcome bad = Run({"host", "add", "bad", "--memory", "8G", "--vcpus", "8", "--qemu-version",
                     "ten"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("QEMU version 'ten' is not digits and dots"));

  nlohmann::json hosts = Json({"host", "list"});
  ASSERT_EQ(hosts["hosts"].size(), 3u);
  EXPECT_EQ(hosts["hosts"][0]["name"], "new");
  EXPECT_EQ(hosts["hosts"][0]["qemu_versions"], nlohmann::json({"7.2.19", "10.0.13"}));
  EXPECT_EQ(hosts["hosts"][2]["qemu_versions"], nlohmann::json::array());
  Outcome table = Run({"host", "list"});
  ASSERT_EQ(table.exit_code, 0);
  EXPECT_THAT(table.out, HasSubstr("QEMU"));
  EXPECT_THAT(table.out, HasSubstr("7.2.19 10.0.13"));

  // A 7.2 VM that runs 10.0 cannot be registered on a 7.2-only host.
  Outcome refused = Run(VmAdd("v", {"--memory", "1G", "--vcpus", "1", "--host", "old",
                                    "--state", "running", "--qemu-series", "10.0"}));
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(refused.err, "escdr: cannot add VM v: host old has no QEMU 10.0 (it runs 7.2.19)\n");
  ASSERT_EQ(Run(VmAdd("v", {"--memory", "1G", "--vcpus", "1", "--host", "old", "--state",
                            "running"}))
                .exit_code,
            0);
  nlohmann::json vms = Json({"vm", "list"});
  EXPECT_EQ(vms["vms"][0]["qemu_series"], "7.2");
  EXPECT_EQ(vms["vms"][0]["qemu_version"], "");

  Outcome up = Run({"destination", "v", "--qemu-series", "10.0", "--explain"});
  ASSERT_EQ(up.exit_code, 0) << up.err;
  EXPECT_THAT(up.out, StartsWith("destination for v: new on QEMU 10.0 (from 7.2)"));
  EXPECT_THAT(up.out, HasSubstr("only hosts that run QEMU 10.0"));
  nlohmann::json j = Json({"destination", "v", "--qemu-series", "10.0"});
  EXPECT_EQ(j["run_series"], "7.2");
  EXPECT_EQ(j["qemu_series"], "10.0");
  Outcome older = Run({"destination", "v", "--qemu-series", "6.2"});
  EXPECT_EQ(older.exit_code, 1);
  EXPECT_THAT(older.err, HasSubstr("QEMU cannot migrate a VM from 7.2 to older 6.2"));
}

INSTANTIATE_TEST_SUITE_P(Backends, InventoryCliTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace escdr
