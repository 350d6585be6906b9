#include "escdr/sim/simulator.h"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "sim/sim_inventory.h"
#include "sim/kernel.h"

namespace escdr::sim {
namespace {

// Results travel from a run's process to its parent as bytes in a temporary
// file: [u32 tag][payload]. Both ends are the same binary, so trivially
// copyable structs go as they are.
constexpr std::uint32_t kTagResult = 0x52534531;  // "1ESR"
constexpr std::uint32_t kTagError = 0x52524531;
constexpr std::uint32_t kTagCrossCheck = 0x43584531;
constexpr std::uint32_t kTagRuns = 0x4e555231;

struct ResultHeader {
  int policy;
  bool escdr;
  std::uint64_t vms_placed, vms_unplaced, migrations_no_room, events, peak_concurrent;
  double simulated_s, placement_wall_s, run_wall_s;
  std::uint64_t peak_rss_kib;
  std::uint64_t records;
};
static_assert(std::is_trivially_copyable_v<ResultHeader>);
static_assert(std::is_trivially_copyable_v<CrossCheckResult>);

class Writer {
 public:
  explicit Writer(int fd) : fd_(fd) {}
  void Raw(const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0 && ok_) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        ok_ = false;
        break;
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }
  template <typename T>
  void Pod(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    Raw(&v, sizeof v);
  }
  void String(const std::string& s) {
    Pod<std::uint64_t>(s.size());
    Raw(s.data(), s.size());
  }
  bool ok() const { return ok_; }

 private:
  int fd_;
  bool ok_ = true;
};

// Bytes of a result file (a vector, not a string: GCC 12 misreads memcpy out
// of a short string's inline buffer as a read of uninitialised memory).
using Bytes = std::vector<char>;

class Reader {
 public:
  explicit Reader(const Bytes& data) : data_(data.data(), data.size()) {}
  bool Raw(void* out, std::size_t n) {
    if (data_.size() - pos_ < n) return false;
    std::memcpy(out, data_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <typename T>
  bool Pod(T& v) {
    return Raw(&v, sizeof v);
  }
  bool String(std::string& s) {
    std::uint64_t n = 0;
    if (!Pod(n) || data_.size() - pos_ < n) return false;
    s.assign(data_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  std::string_view Rest() const { return data_.substr(pos_); }
  void Skip(std::size_t n) { pos_ += n; }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
};

void WriteError(Writer& w, const Status& status) {
  w.Pod(kTagError);
  w.Pod(static_cast<int>(status.code()));
  w.String(status.message());
}

void WriteResult(Writer& w, const RunResult& r) {
  w.Pod(kTagResult);
  ResultHeader h{static_cast<int>(r.policy), r.escdr, r.vms_placed, r.vms_unplaced,
                 r.migrations_no_room, r.events, r.peak_concurrent, r.simulated_s,
                 r.placement_wall_s, r.run_wall_s, r.peak_rss_kib, r.migrations.size()};
  w.Pod(h);
  w.Raw(r.migrations.data(), r.migrations.size() * sizeof(MigrationRecord));
}

// Parses one result or error frame from `r`.
Result<RunResult> ReadResult(Reader& r) {
  std::uint32_t tag = 0;
  if (!r.Pod(tag)) return Err(Status::Internal("simulation result is truncated"));
  if (tag == kTagError) {
    int code = 0;
    std::string message;
    if (!r.Pod(code) || !r.String(message)) {
      return Err(Status::Internal("simulation error report is truncated"));
    }
    return Err(Status(static_cast<StatusCode>(code), message));
  }
  if (tag != kTagResult) return Err(Status::Internal("simulation result has a bad tag"));
  ResultHeader h{};
  if (!r.Pod(h)) return Err(Status::Internal("simulation result header is truncated"));
  RunResult out;
  out.policy = static_cast<PlacementPolicy>(h.policy);
  out.escdr = h.escdr;
  out.vms_placed = h.vms_placed;
  out.vms_unplaced = h.vms_unplaced;
  out.migrations_no_room = h.migrations_no_room;
  out.events = h.events;
  out.peak_concurrent = h.peak_concurrent;
  out.simulated_s = h.simulated_s;
  out.placement_wall_s = h.placement_wall_s;
  out.run_wall_s = h.run_wall_s;
  out.peak_rss_kib = h.peak_rss_kib;
  out.migrations.resize(h.records);
  if (!r.Raw(out.migrations.data(), h.records * sizeof(MigrationRecord))) {
    return Err(Status::Internal("simulation result records are truncated"));
  }
  return out;
}

Result<Bytes> ReadWhole(int fd) {
  Bytes out;
  char buf[1 << 16];
  off_t offset = 0;
  while (true) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Err(Status::FromErrno("cannot read simulation results", errno));
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
    offset += n;
  }
  return out;
}

std::string DescribeExit(int status) {
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                       strsignal(WTERMSIG(status)));
  }
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  return "ended abnormally";
}

int WaitFor(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

std::string RunName(PlacementPolicy policy, bool escdr) {
  return fmt::format("{}/{}", PlacementPolicyName(policy), escdr ? "escdr" : "plain");
}

// Runs `body` in a child process that writes to a fresh temporary file;
// returns the file's contents once the child has exited.
template <typename Body>
Result<Bytes> InChild(const std::string& what, Body body) {
  std::FILE* file = std::tmpfile();
  if (!file) return Err(Status::FromErrno("cannot create a temporary file for " + what, errno));
  const int fd = fileno(file);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::fclose(file);
    return Err(Status::FromErrno("cannot fork the process for " + what, errno));
  }
  if (pid == 0) {
    Writer w(fd);
    try {
      body(w);
    } catch (const std::exception& e) {
      WriteError(w, Status::Internal(what + " failed: " + e.what()));
    } catch (...) {
      WriteError(w, Status::Internal(what + " failed with an unknown exception"));
    }
    ::_exit(w.ok() ? 0 : 3);
  }
  const int status = WaitFor(pid);
  Result<Bytes> data = ReadWhole(fd);
  std::fclose(file);
  if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return Err(Status::Internal(fmt::format("the process of {} {}", what,
                                            status < 0 ? "was lost" : DescribeExit(status))));
  }
  return data;
}

Status Validate(const Scenario& s) {
  std::set<std::string> names;
  for (const ScriptedEvent& ev : s.workload.script) {
    if (ev.host.empty()) continue;
    if (names.empty()) {
      for (std::uint32_t h = 0; h < s.topology.hosts(); ++h) names.insert(HostName(s.topology, h));
    }
    if (!names.contains(ev.host)) {
      return Status::InvalidArgument(fmt::format(
          "{}: workload.script names host '{}', which the topology ({} pods x {} racks x {} "
          "hosts, named p<pod>-r<rack>-h<slot>) does not have",
          s.origin.empty() ? s.name : s.origin, ev.host, s.topology.pods,
          s.topology.racks_per_pod, s.topology.hosts_per_rack));
    }
  }
  const std::size_t cells = s.kinds.size() * s.topology.hosts();
  if (cells > 200'000'000) {
    return Status::InvalidArgument(fmt::format(
        "{}: {} kinds x {} hosts is too many for the per-host kind counts (at most 2e8)", s.name,
        s.kinds.size(), s.topology.hosts()));
  }
  return Status::OK();
}

// The process that owns SimGrid: builds the platform once and forks the runs.
void Zygote(const Scenario& s, const std::vector<PlacementPolicy>& policies,
            const std::vector<bool>& modes, int jobs, Writer& out) {
  StartEngine();
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<simgrid::s4u::Host*> hosts = BuildPlatform(s.topology);
  const double platform_wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  SimInventory drawn(s.topology, s.kinds.size());
  DrawVms(s, drawn);

  struct Run {
    std::string name;
    pid_t pid = -1;
    std::FILE* file = nullptr;
    Bytes data;
    Status error;
  };
  std::vector<Run> runs;
  std::size_t running = 0;
  auto reap_one = [&] {
    int status = 0;
    pid_t pid;
    do {
      pid = ::wait(&status);
    } while (pid < 0 && errno == EINTR);
    for (Run& run : runs) {
      if (run.pid != pid || run.file == nullptr) continue;
      const int fd = fileno(run.file);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        run.error = Status::Internal(
            fmt::format("simulation run {} {}", run.name, DescribeExit(status)));
      } else if (Result<Bytes> data = ReadWhole(fd); data) {
        run.data = std::move(*data);
      } else {
        run.error = data.error();
      }
      std::fclose(run.file);
      run.file = nullptr;
      --running;
    }
  };

  for (PlacementPolicy policy : policies) {
    SimInventory inventory = drawn;
    const auto p0 = std::chrono::steady_clock::now();
    const std::uint64_t unplaced = PlaceVms(s, policy, inventory);
    const double placement_wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
    for (bool escdr : modes) {
      while (running >= static_cast<std::size_t>(jobs)) reap_one();
      Run run;
      run.name = RunName(policy, escdr);
      run.file = std::tmpfile();
      if (!run.file) {
        run.error = Status::FromErrno("cannot create a temporary file for " + run.name, errno);
        runs.push_back(std::move(run));
        continue;
      }
      std::fflush(nullptr);
      run.pid = ::fork();
      if (run.pid == 0) {
        Writer w(fileno(run.file));
        try {
          RunResult r = RunWorkload(s, inventory, hosts, policy, escdr);
          r.vms_placed = inventory.vm_count() - unplaced;
          r.vms_unplaced = unplaced;
          r.placement_wall_s = placement_wall;
          WriteResult(w, r);
        } catch (const std::exception& e) {
          WriteError(w, Status::Internal("simulation run " + run.name + " failed: " + e.what()));
        }
        ::_exit(w.ok() ? 0 : 3);
      }
      if (run.pid < 0) {
        run.error = Status::FromErrno("cannot fork simulation run " + run.name, errno);
        std::fclose(run.file);
        run.file = nullptr;
      } else {
        ++running;
      }
      runs.push_back(std::move(run));
    }
  }
  while (running > 0) reap_one();

  out.Pod(kTagRuns);
  out.Pod(platform_wall);
  out.Pod<std::uint64_t>(runs.size());
  for (const Run& run : runs) {
    if (!run.error.ok()) {
      out.Pod<std::uint64_t>(0);
      WriteError(out, run.error);
    } else {
      out.Pod<std::uint64_t>(run.data.size());
      out.Raw(run.data.data(), run.data.size());
    }
  }
}

}  // namespace

std::string HostName(const TopologyOptions& t, std::uint32_t index) {
  const std::uint32_t slot = index % t.hosts_per_rack;
  const std::uint32_t rack = index / t.hosts_per_rack % t.racks_per_pod;
  const std::uint32_t pod = index / t.hosts_per_rack / t.racks_per_pod;
  return fmt::format("p{}-r{}-h{}", pod, rack, slot);
}

Result<std::vector<RunResult>> Simulate(const Scenario& scenario, const SimulateOptions& options) {
  ESCDR_RETURN_IF_ERROR(Validate(scenario));
  std::vector<PlacementPolicy> policies =
      options.policies.empty() ? scenario.placement.policies : options.policies;
  if (policies.empty() || options.modes.empty()) {
    return Err(Status::InvalidArgument("simulate needs at least one policy and one mode"));
  }
  const int jobs = std::max(1, options.jobs);
  Result<Bytes> output = InChild("simulation of " + scenario.name, [&](Writer& w) {
    Zygote(scenario, policies, options.modes, jobs, w);
  });
  if (!output) return Err(output.error());
  const Bytes data = std::move(output).value();
  Reader r(data);
  std::uint32_t tag = 0;
  double platform_wall = 0;
  std::uint64_t count = 0;
  if (!r.Pod(tag) || tag != kTagRuns || !r.Pod(platform_wall) || !r.Pod(count)) {
    // The process failed before any run: an error frame is all there is.
    Reader e(data);
    Result<RunResult> err = ReadResult(e);
    if (!err) return Err(err.error());
    return Err(Status::Internal("simulation returned no results"));
  }
  if (options.platform_wall_s) *options.platform_wall_s = platform_wall;
  std::vector<RunResult> results;
  for (std::uint64_t i = 0; i < count; ++i) {
    std::uint64_t size = 0;
    if (!r.Pod(size)) return Err(Status::Internal("simulation results are truncated"));
    ESCDR_ASSIGN_OR_RETURN(RunResult run, ReadResult(r));
    results.push_back(std::move(run));
  }
  return results;
}

Result<CrossCheckResult> RunPluginCrossCheck(const CrossCheckParams& params) {
  if (params.memory_mib == 0 || params.link_gbit_s <= 0 || params.migration_speed_mib_s <= 0 ||
      params.dirty_intensity_percent < 0 || params.dirty_intensity_percent > 100) {
    return Err(Status::InvalidArgument(fmt::format(
        "cross-check needs memory > 0, link > 0, speed > 0 and intensity in [0, 100]; got {} MiB, "
        "{} Gbit/s, {} MiB/s, {}%",
        params.memory_mib, params.link_gbit_s, params.migration_speed_mib_s,
        params.dirty_intensity_percent)));
  }
  Result<Bytes> output = InChild("the plugin cross-check", [&](Writer& w) {
    StartEngine();
    const CrossCheckResult result = RunCrossCheckHere(params);
    w.Pod(kTagCrossCheck);
    w.Pod(result);
  });
  if (!output) return Err(output.error());
  const Bytes data = std::move(output).value();
  Reader r(data);
  std::uint32_t tag = 0;
  CrossCheckResult result;
  if (!r.Pod(tag)) return Err(Status::Internal("cross-check returned nothing"));
  if (tag == kTagError) {
    Reader e(data);
    Result<RunResult> err = ReadResult(e);
    return Err(err ? Status::Internal("cross-check failed") : err.error());
  }
  if (tag != kTagCrossCheck || !r.Pod(result)) {
    return Err(Status::Internal("cross-check result is malformed"));
  }
  return result;
}

}  // namespace escdr::sim
