// Several processes place and migrate VMs in one inventory at the same time:
// no host is ever over-committed, and exactly as many requests succeed as
// there is room for. Run on every backend that several processes can share.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <map>

#include "escdr/inventory/inventory.h"
#include "inventory/inventory_testing.h"

namespace escdr {
namespace {

const VmKind kDebian{"debian", "12", "qemu", "7.2"};

// What one child process reports back through a pipe.
struct ChildReport {
  int succeeded = 0;
  int exhausted = 0;  // ResourceExhausted, or FailedPrecondition where said
  int other = 0;      // anything else: a bug
  char first_other[240] = {};
};

// Runs `work(child_index, inventory, report)` in `n` forked processes that
// start together (a pipe acts as the starting gun), and collects reports.
// Children that are still alive when this returns (a failed assertion) are
// killed by pid; every child is reaped.
class Children {
 public:
  using Work = std::function<void(int, Inventory&, ChildReport&)>;

  Children(const std::string& url, int n, const Work& work) {
    int go[2];
    if (pipe(go) != 0) return;
    for (int i = 0; i < n; ++i) {
      int result[2];
      if (pipe(result) != 0) break;
      const pid_t pid = fork();
      if (pid < 0) {
        close(result[0]);
        close(result[1]);
        break;
      }
      if (pid == 0) {
        close(go[1]);
        close(result[0]);
        ChildReport report;
        {
          auto inv = OpenInventory(url);
          char byte;
          const bool started = read(go[0], &byte, 1) == 1;
          if (!inv.has_value() || !started) {
            report.other = 1;
            std::snprintf(report.first_other, sizeof report.first_other, "%s",
                          inv.has_value() ? "no start signal" : inv.error().message().c_str());
          } else {
            work(i, **inv, report);
          }
        }  // the inventory closes its connection here
        (void)!write(result[1], &report, sizeof report);
        _exit(0);
      }
      close(result[1]);
      pids_.push_back(pid);
      results_.push_back(result[0]);
    }
    close(go[0]);
    // Every child is forked before any of them starts: then they race.
    for (std::size_t i = 0; i < pids_.size(); ++i) (void)!write(go[1], "g", 1);
    close(go[1]);
  }

  ~Children() {
    for (pid_t pid : pids_) {
      if (waitpid(pid, nullptr, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
    for (int fd : results_) close(fd);
  }

  // Waits for every child; the reports in child order.
  std::vector<ChildReport> Wait() {
    std::vector<ChildReport> out;
    for (std::size_t i = 0; i < pids_.size(); ++i) {
      ChildReport r;
      if (read(results_[i], &r, sizeof r) != static_cast<ssize_t>(sizeof r)) {
        r = ChildReport{};
        r.other = 1;
        std::snprintf(r.first_other, sizeof r.first_other, "child %zu sent no report", i);
      }
      int status = 0;
      waitpid(pids_[i], &status, 0);
      out.push_back(r);
    }
    pids_.clear();
    return out;
  }

  std::size_t size() const { return pids_.size(); }

 private:
  std::vector<pid_t> pids_;
  std::vector<int> results_;
};

void Count(const Status& s, ChildReport& report, StatusCode expected_refusal) {
  if (s.ok()) {
    ++report.succeeded;
  } else if (s.code() == expected_refusal) {
    ++report.exhausted;
  } else {
    if (report.other++ == 0) {
      std::snprintf(report.first_other, sizeof report.first_other, "%s", s.message().c_str());
    }
  }
}

ChildReport Sum(const std::vector<ChildReport>& reports) {
  ChildReport total;
  for (const ChildReport& r : reports) {
    total.succeeded += r.succeeded;
    total.exhausted += r.exhausted;
    total.other += r.other;
    if (r.other && !total.first_other[0]) std::memcpy(total.first_other, r.first_other, 240);
  }
  return total;
}

class ConcurrencyTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ESCDR_REQUIRE_BACKEND(GetParam());
    db_ = std::make_unique<inventory_testing::TestDatabase>(GetParam());
    ASSERT_TRUE(db_->ok());
  }
  void TearDown() override { db_.reset(); }

  std::unique_ptr<Inventory> Open() {
    auto inv = OpenInventory(db_->url());
    EXPECT_TRUE(inv.has_value()) << inv.error().ToString();
    return inv.has_value() ? std::move(*inv) : nullptr;
  }

  // Every host's recorded use equals the sum over its VMs (plus
  // reservations) and never exceeds its capacity.
  void ExpectConsistent(Inventory& inv) {
    auto hosts = inv.ListHosts();
    auto vms = inv.ListVms();
    ASSERT_TRUE(hosts.has_value() && vms.has_value());
    std::map<std::string, std::uint64_t> mem;
    std::map<std::string, std::uint32_t> cpus, count;
    for (const Vm& v : *vms) {
      mem[v.host] += v.memory_mib;
      cpus[v.host] += v.vcpus;
      count[v.host] += 1;
    }
    for (const Host& h : *hosts) {
      EXPECT_LE(h.memory_used_mib, h.memory_mib) << h.name << " is over-committed";
      EXPECT_LE(h.vcpus_used, h.vcpus) << h.name << " is over-committed";
      EXPECT_EQ(h.memory_used_mib, mem[h.name] + h.memory_reserved_mib) << h.name;
      EXPECT_EQ(h.vcpus_used, cpus[h.name] + h.vcpus_reserved) << h.name;
      EXPECT_EQ(h.vm_count, count[h.name]) << h.name;
    }
  }

  std::unique_ptr<inventory_testing::TestDatabase> db_;
};

TEST_P(ConcurrencyTest, ConcurrentPlacementsFillEveryHostExactlyAndNeverOverCommit) {
  constexpr int kHosts = 5, kSlotsPerHost = 8, kProcs = 6, kPerProc = 10;
  {
    auto inv = Open();
    ASSERT_TRUE(inv);
    for (int h = 0; h < kHosts; ++h) {
      ASSERT_TRUE(inv->AddHost({"h" + std::to_string(h), "", "r1", "p1", 1024 * kSlotsPerHost,
                                kSlotsPerHost})
                      .has_value());
    }
  }
  Children children(db_->url(), kProcs, [&](int i, Inventory& inv, ChildReport& report) {
    for (int j = 0; j < kPerProc; ++j) {
      VmSpec spec;
      spec.name = "p" + std::to_string(i) + "-" + std::to_string(j);
      spec.kind = kDebian;
      spec.memory_mib = 1024;
      spec.vcpus = 1;
      auto placed = inv.PlaceVm(spec);
      Count(placed.has_value() ? Status::OK() : placed.error(), report,
            StatusCode::kResourceExhausted);
    }
  });
  ASSERT_EQ(children.size(), static_cast<std::size_t>(kProcs));
  const ChildReport total = Sum(children.Wait());
  EXPECT_EQ(total.other, 0) << total.first_other;
  EXPECT_EQ(total.succeeded, kHosts * kSlotsPerHost);
  EXPECT_EQ(total.exhausted, kProcs * kPerProc - kHosts * kSlotsPerHost);

  auto inv = Open();
  ASSERT_TRUE(inv);
  ExpectConsistent(*inv);
  auto hosts = inv->ListHosts();
  ASSERT_TRUE(hosts.has_value());
  for (const Host& h : *hosts) EXPECT_EQ(h.vm_count, static_cast<std::uint32_t>(kSlotsPerHost));
}

TEST_P(ConcurrencyTest, ConcurrentAddsToOneHostStopAtItsCapacity) {
  constexpr int kRoom = 10, kProcs = 6, kPerProc = 5;
  {
    auto inv = Open();
    ASSERT_TRUE(inv);
    ASSERT_TRUE(inv->AddHost({"only", "", "", "", 512 * kRoom, 64}).has_value());
  }
  Children children(db_->url(), kProcs, [&](int i, Inventory& inv, ChildReport& report) {
    for (int j = 0; j < kPerProc; ++j) {
      VmSpec spec;
      spec.name = "a" + std::to_string(i) + "-" + std::to_string(j);
      spec.host = "only";
      spec.kind = kDebian;
      spec.memory_mib = 512;
      spec.vcpus = 1;
      auto added = inv.AddVm(spec);
      Count(added.has_value() ? Status::OK() : added.error(), report,
            StatusCode::kResourceExhausted);
    }
  });
  const ChildReport total = Sum(children.Wait());
  EXPECT_EQ(total.other, 0) << total.first_other;
  EXPECT_EQ(total.succeeded, kRoom);
  auto inv = Open();
  ASSERT_TRUE(inv);
  ExpectConsistent(*inv);
  EXPECT_EQ(inv->GetHost("only")->memory_used_mib, 512u * kRoom);
}

TEST_P(ConcurrencyTest, ConcurrentMigrationsReserveNoMoreThanTheDestinationHas) {
  constexpr int kVms = 8, kRoomFor = 3;
  {
    auto inv = Open();
    ASSERT_TRUE(inv);
    ASSERT_TRUE(inv->AddHost({"src", "", "r1", "p1", 65536, 64}).has_value());
    ASSERT_TRUE(inv->AddHost({"dst", "", "r1", "p1", 2048 * kRoomFor + 1000, 64}).has_value());
    ASSERT_TRUE(inv->AddHost({"roomy", "", "r1", "p1", 65536, 64}).has_value());
    for (int i = 0; i <= kVms; ++i) {  // m0..m7 race for dst; m8 for the second race
      VmSpec spec;
      spec.name = "m" + std::to_string(i);
      spec.host = "src";
      spec.kind = kDebian;
      spec.memory_mib = 2048;
      spec.vcpus = 2;
      spec.state = VmState::kRunning;
      ASSERT_TRUE(inv->AddVm(spec).has_value());
    }
  }
  // Each process migrates its own VM to the same destination...
  Children children(db_->url(), kVms, [&](int i, Inventory& inv, ChildReport& report) {
    auto m = inv.BeginMigration("m" + std::to_string(i), "dst");
    Count(m.has_value() ? Status::OK() : m.error(), report, StatusCode::kResourceExhausted);
  });
  const ChildReport total = Sum(children.Wait());
  EXPECT_EQ(total.other, 0) << total.first_other;
  EXPECT_EQ(total.succeeded, kRoomFor);
  auto inv = Open();
  ASSERT_TRUE(inv);
  ExpectConsistent(*inv);
  EXPECT_EQ(inv->GetHost("dst")->memory_reserved_mib, 2048u * kRoomFor);

  // ...and several processes race to migrate one VM: exactly one wins, the
  // others find it already migrating.
  Children racers(db_->url(), 4, [&](int, Inventory& other, ChildReport& report) {
    auto m = other.BeginMigration("m8", "roomy");
    Count(m.has_value() ? Status::OK() : m.error(), report, StatusCode::kFailedPrecondition);
  });
  const ChildReport race = Sum(racers.Wait());
  EXPECT_EQ(race.other, 0) << race.first_other;
  EXPECT_EQ(race.succeeded, 1);
  EXPECT_EQ(race.exhausted, 3);
  EXPECT_EQ(inv->GetHost("roomy")->memory_reserved_mib, 2048u);
  ExpectConsistent(*inv);
}

// Agents that start together open a database that does not exist yet: every
// one of them must get it (SQLite refuses the switch to WAL at once, not after
// its busy timeout, when several processes take it on one new file together).
TEST_P(ConcurrencyTest, ProcessesOpeningANewDatabaseTogetherAllGetIt) {
  // SQLite: many rounds, each on a new file (the race is short). PostgreSQL:
  // the fixture's new schema, once (the schema lock serializes creation).
  const bool sqlite = GetParam() == "sqlite";
  const int rounds = sqlite ? 100 : 1;
  constexpr int kProcs = 4;
  for (int round = 0; round < rounds; ++round) {
    const std::string url = sqlite ? db_->url() + "." + std::to_string(round) : db_->url();
    int go[2];
    ASSERT_EQ(pipe(go), 0);
    std::vector<pid_t> pids;
    for (int i = 0; i < kProcs; ++i) {
      const pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        close(go[1]);
        char byte;
        if (read(go[0], &byte, 1) != 1) _exit(2);
        auto inv = OpenInventory(url);
        if (!inv.has_value()) {
          std::fprintf(stderr, "round %d, process %d: %s\n", round, i,
                       inv.error().ToString().c_str());
          _exit(1);
        }
        _exit(0);
      }
      pids.push_back(pid);
    }
    close(go[0]);
    for (int i = 0; i < kProcs; ++i) (void)!write(go[1], "g", 1);
    close(go[1]);
    int failed = 0;
    for (pid_t pid : pids) {
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
    }
    ASSERT_EQ(failed, 0) << "round " << round << ": " << failed << " of " << kProcs
                         << " processes could not open " << url << " (their errors above)";
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, ConcurrencyTest, ::testing::Values("sqlite", "postgres"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace escdr
