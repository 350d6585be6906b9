// AgentCluster: real `escdr agent` processes on loopback, for integration tests.
//
// Each agent is the escdr binary (ESCDR_BINARY_DIR/src/cli/escdr) started as
// `escdr --db <shared SQLite> --state-dir <root>/<host> --tls-dir <root>/tls
// agent --name <host> --listen 127.0.0.1:0 --ram-dir <shm dir>`, so several
// agents on one machine stand for several hosts. Everything lives in two
// temporary directories (the state under /tmp, guest RAM under /dev/shm) that
// are removed at the end.
//
// Channels are mutual TLS by default: the constructor creates a throwaway CA
// in <root>/tls, StartAgent issues the host's certificate, and the CLI and
// Client() use the certificate "cli". Channel::kPsk gives every end one
// pre-shared key instead; Channel::kInsecure runs everything in plaintext.
//
// Cleanup is RAII and does not trust the agents: the destructor asks every
// live agent to stop its VMs, stops the agents, and then kills by pid every
// QEMU that any agent's state directory still records (pidfd, after checking
// that the process's command line names that state directory), so a failing
// test leaves no guest, agent, socket or RAM file behind. The test process
// makes itself a child subreaper so that QEMUs orphaned by a killed agent are
// reaped (this container's init does not reap).
//
// Thread safety: one test thread.
#ifndef ESCDR_AGENT_AGENT_CLUSTER_TESTING_H_
#define ESCDR_AGENT_AGENT_CLUSTER_TESTING_H_

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "agent/vm_process.h"
#include "agent/vm_records.h"
#include "escdr/agent/agent_client.h"
#include "escdr/image/memory_image.h"
#include "escdr/inventory/inventory.h"
#include "escdr/page/page.h"
#include "escdr/qemu/serial_log.h"
#include "escdr/sys/clock.h"
#include "escdr/sys/subprocess.h"
#include "escdr/sys/temp_dir.h"
#include "escdr/sys/unique_fd.h"
#include "escdr/wire/tls.h"
#include "escdr/wire/tls_ca.h"
#include "testing/test_guest.h"

namespace escdr::agent::testing {

inline std::string EscdrBinary() { return std::string(ESCDR_BINARY_DIR) + "/src/cli/escdr"; }

using escdr::testing::Qemu10Dir;  // testing/test_guest.h

struct CliResult {
  ExitStatus exit;
  std::string out;
  std::string err;
  bool ok() const { return exit.success(); }
};

// A command of the escdr CLI running in the background.
class CliRun {
 public:
  CliRun(Subprocess process, std::string out_path, std::string err_path)
      : process_(std::move(process)), out_(std::move(out_path)), err_(std::move(err_path)) {}

  // Waits for it to end (killing it after `timeout`).
  CliResult Wait(std::chrono::milliseconds timeout = std::chrono::minutes(10)) {
    CliResult r;
    auto st = process_.WaitFor(timeout);
    if (!st.has_value()) {
      (void)process_.Kill(SIGKILL);
      st = process_.Wait();
    }
    r.exit = st.has_value() ? *st : ExitStatus{};
    r.out = ReadFileToString(out_).value_or("");
    r.err = ReadFileToString(err_).value_or("");
    return r;
  }

 private:
  Subprocess process_;
  std::string out_, err_;
};

// Runs `options` (its argv, stdout_path and stderr_path set) to its end,
// killing it after `timeout`, and returns its exit status and output.
inline CliResult RunProgram(const SubprocessOptions& options,
                            std::chrono::milliseconds timeout = std::chrono::minutes(3)) {
  CliResult r;
  auto p = Subprocess::Spawn(options);
  if (!p.has_value()) {
    r.err = p.error().ToString();
    return r;
  }
  auto st = p->WaitFor(timeout);
  if (!st.has_value()) {
    (void)p->Kill(SIGKILL);
    st = p->Wait();
  }
  r.exit = st.has_value() ? *st : ExitStatus{};
  r.out = ReadFileToString(options.stdout_path).value_or("");
  r.err = ReadFileToString(options.stderr_path).value_or("");
  return r;
}

class AgentCluster {
 public:
  // How the agents and the CLI secure their connections.
  enum class Channel { kTls, kPsk, kInsecure };

  explicit AgentCluster(Channel channel = Channel::kTls) : channel_(channel) {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    root_ = TempDir::Create("escdr-agent-it").value();
    shm_ = TempDir::Create("escdr-agent-it", "/dev/shm").value();
    db_ = root_.File("inventory.db");
    tls_dir_ = root_.File("tls");
    if (channel_ == Channel::kTls) {
      Status s = wire::CreateCa(tls_dir_, "escdr-test-ca", 7);
      if (s.ok()) s = wire::IssueCertificate(tls_dir_, "cli", 7, wire::PeerRole::kOperator);
      if (s.ok()) client_tls_ = wire::TlsContext::FromDirectory(tls_dir_, "cli").value();
      if (!s.ok()) std::fprintf(stderr, "AgentCluster: cannot create its CA: %s\n", s.ToString().c_str());
    } else if (channel_ == Channel::kPsk) {
      Status s = wire::WritePskFile(PskFile());
      if (s.ok()) client_tls_ = wire::TlsContext::FromPskFile(PskFile()).value();
      if (!s.ok()) std::fprintf(stderr, "AgentCluster: cannot write its key: %s\n", s.ToString().c_str());
    }
  }

  Channel channel() const { return channel_; }
  // The CA directory (Channel::kTls) and the key file (Channel::kPsk).
  const std::string& tls_dir() const { return tls_dir_; }
  std::string PskFile() const { return root_.File("cluster.psk"); }
  // The CLI's credentials (null with Channel::kInsecure).
  const std::shared_ptr<const wire::TlsContext>& client_tls() const { return client_tls_; }
  // The global options that give an escdr process of `name` (a host, or
  // "cli") the cluster's credentials.
  std::vector<std::string> ChannelArgs(const std::string& name) const {
    switch (channel_) {
      case Channel::kTls: return {"--tls-dir", tls_dir_, "--tls-name", name};
      case Channel::kPsk: return {"--psk-file", PskFile()};
      case Channel::kInsecure: return {"--insecure"};
    }
    return {};
  }

  ~AgentCluster() { Cleanup(); }
  AgentCluster(const AgentCluster&) = delete;
  AgentCluster& operator=(const AgentCluster&) = delete;

  const std::string& db() const { return db_; }
  // Points the agents and the CLI at another inventory (e.g. a postgresql://
  // URL) instead of the SQLite file in the root; before any StartAgent.
  void UseDatabase(std::string url) { db_ = std::move(url); }
  std::string StateDir(const std::string& host) const { return root_.File(host); }
  const std::string& root() const { return root_.path(); }

  // Extra `escdr agent` options for `host` from its next start on, e.g.
  // {"--qemu", "qemu-system-x86_64", "--qemu", Qemu10Dir()}.
  void SetAgentArgs(const std::string& host, std::vector<std::string> args) {
    agent_args_[host] = std::move(args);
  }

  // A command that runs `host`'s agent, before the escdr binary: e.g.
  // {"nsenter", "-t", PID, "-m", "--"} to run it in another mount namespace
  // (nsenter execs, so the agent's pid is the one this cluster knows).
  void SetAgentPrefix(const std::string& host, std::vector<std::string> prefix) {
    agent_prefix_[host] = std::move(prefix);
  }

  // Starts (or restarts, with the same state directory) the agent of `host`
  // and waits until it listens. `env` is added to its environment.
  Status StartAgent(const std::string& host,
                    std::vector<std::pair<std::string, std::string>> env = {}) {
    std::error_code ec;
    std::filesystem::create_directories(StateDir(host), ec);
    const std::string out = root_.File(host + ".out");
    ::unlink(out.c_str());
    if (channel_ == Channel::kTls) {
      Status issued = wire::IssueCertificate(tls_dir_, host, 7, wire::PeerRole::kAgent);
      if (!issued.ok() && issued.code() != StatusCode::kAlreadyExists) return issued;
    }
    SubprocessOptions o;
    o.argv = {EscdrBinary(), "--db", db_, "--state-dir", StateDir(host)};
    if (auto it = agent_prefix_.find(host); it != agent_prefix_.end()) {
      o.argv.insert(o.argv.begin(), it->second.begin(), it->second.end());
    }
    for (std::string& a : ChannelArgs(host)) o.argv.push_back(std::move(a));
    for (const char* a : {"agent", "--name"}) o.argv.emplace_back(a);
    o.argv.insert(o.argv.end(), {host, "--listen", "127.0.0.1:0", "--ram-dir", shm_.path(),
                                 "--memory", "4G", "--vcpus", "8"});
    if (auto it = agent_args_.find(host); it != agent_args_.end()) {
      o.argv.insert(o.argv.end(), it->second.begin(), it->second.end());
    }
    o.env = std::move(env);
    o.stdout_path = out;
    o.stderr_path = root_.File(host + ".log");
    o.append_output = true;
    ESCDR_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(o));
    const Deadline deadline = Deadline::After(std::chrono::seconds(60));
    for (;;) {
      std::string text = ReadFileToString(out).value_or("");
      std::size_t at = text.find(" listening on ");
      if (at != std::string::npos) {
        std::size_t end = text.find(' ', at + 14);
        agents_[host].address = text.substr(at + 14, end - at - 14);
        break;
      }
      auto st = p.TryWait();
      if (st.has_value() && st->has_value()) {
        return Status::Aborted(fmt::format("agent {} exited at start ({}): {}", host,
                                           (*st)->ToString(), AgentLog(host)));
      }
      if (deadline.Expired()) return Status::Timeout("agent " + host + " did not start: " + AgentLog(host));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    agents_[host].process = std::move(p);
    return Status::OK();
  }

  // kill -9, as a crash would.
  void KillAgent(const std::string& host) {
    auto& a = agents_.at(host);
    (void)a.process.Kill(SIGKILL);
    (void)a.process.Wait();
  }

  // SIGTERM and wait: a clean shutdown (VMs keep running).
  Status StopAgent(const std::string& host) {
    auto& a = agents_.at(host);
    ESCDR_RETURN_IF_ERROR(a.process.Kill(SIGTERM));
    auto st = a.process.WaitFor(std::chrono::seconds(60));
    if (!st.has_value()) return st.error();
    return st->success() ? Status::OK()
                         : Status::Internal("agent " + host + " ended with " + st->ToString());
  }

  pid_t AgentPid(const std::string& host) { return agents_.at(host).process.pid(); }
  const std::string& Address(const std::string& host) { return agents_.at(host).address; }
  AgentClient Client(const std::string& host) {
    return AgentClient(Address(host), std::chrono::seconds(60), client_tls_, host);
  }
  std::string AgentLog(const std::string& host) {
    std::string t = ReadFileToString(root_.File(host + ".log")).value_or("");
    return t.size() > 4000 ? t.substr(t.size() - 4000) : t;
  }

  // Runs `escdr --db <db> args...` in the background.
  Result<CliRun> StartCli(std::vector<std::string> args) {
    const int n = ++cli_runs_;
    SubprocessOptions o;
    o.argv = {EscdrBinary(), "--db", db_, "--state-dir", root_.File("cli")};
    for (std::string& a : ChannelArgs("cli")) o.argv.push_back(std::move(a));
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    o.stdout_path = root_.File(fmt::format("cli{}.out", n));
    o.stderr_path = root_.File(fmt::format("cli{}.err", n));
    ESCDR_ASSIGN_OR_RETURN(Subprocess p, Subprocess::Spawn(o));
    return CliRun(std::move(p), o.stdout_path, o.stderr_path);
  }
  // Runs it and waits.
  CliResult Cli(std::vector<std::string> args) {
    auto run = StartCli(std::move(args));
    if (!run.has_value()) {
      CliResult r;
      r.err = run.error().message();
      return r;
    }
    return run->Wait();
  }

  Result<std::unique_ptr<Inventory>> OpenInventory() const { return escdr::OpenInventory(db_); }

  // The VM records in an agent's state directory.
  std::vector<VmRecord> Records(const std::string& host) const {
    return ReadVmRecords(StateDir(host) + "/vms").records;
  }

  // The named VM as `host`'s agent reports it, or nullopt.
  std::optional<VmInfo> FindVm(const std::string& host, const std::string& vm) {
    auto vms = Client(host).ListVms();
    if (!vms.has_value()) return std::nullopt;
    for (VmInfo& v : *vms) {
      if (v.name == vm) return v;
    }
    return std::nullopt;
  }

  void Cleanup() {
    for (auto& [host, a] : agents_) {
      if (!a.process.valid() || a.process.exit_status()) continue;
      auto st = a.process.TryWait();
      if (!st.has_value() || st->has_value()) continue;
      AgentClient c(a.address, std::chrono::seconds(30), client_tls_, host);
      if (auto vms = c.ListVms(); vms.has_value()) {
        for (const VmInfo& v : *vms) (void)c.StopVm(v.name);
      }
      (void)a.process.Kill(SIGTERM);
      if (!a.process.WaitFor(std::chrono::seconds(20)).has_value()) {
        (void)a.process.Kill(SIGKILL);
        (void)a.process.Wait();
      }
    }
    // Whatever the agents did not stop: kill by recorded pid.
    std::error_code ec;
    for (const auto& dir : std::filesystem::directory_iterator(root_.path(), ec)) {
      if (!dir.is_directory()) continue;
      for (const VmRecord& r : ReadVmRecords(dir.path().string() + "/vms").records) {
        auto proc = VmProcess::Adopt(r.pid, r.spec.qmp_socket, false, std::chrono::milliseconds(0));
        if (proc.has_value()) (void)(*proc)->Kill();
      }
    }
    agents_.clear();
  }

 private:
  struct AgentProc {
    Subprocess process;
    std::string address;
  };
  Channel channel_;
  TempDir root_;
  TempDir shm_;
  std::string db_;
  std::string tls_dir_;
  std::shared_ptr<const wire::TlsContext> client_tls_;
  std::map<std::string, AgentProc> agents_;
  std::map<std::string, std::vector<std::string>> agent_args_;
  std::map<std::string, std::vector<std::string>> agent_prefix_;
  int cli_runs_ = 0;
};

// Polls `pred` every 50 ms until it holds or `timeout` passes.
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds timeout) {
  const Deadline deadline = Deadline::After(timeout);
  for (;;) {
    if (pred()) return true;
    if (deadline.Expired()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// The guest's serial counter, read from its log.
inline std::uint64_t Counter(const std::string& serial_log) {
  auto c = ReadLastCounter(serial_log);
  return c.has_value() && c->has_value() ? **c : 0;
}

// True once the counter in `serial_log` has gone past its current value.
inline bool CounterAdvances(const std::string& serial_log,
                            std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  const std::uint64_t start = Counter(serial_log);
  return WaitUntil([&] { return Counter(serial_log) > start; }, timeout);
}

// Compares two guest RAM files page by page: "" if they are byte-identical,
// else how many pages differ and where the first one is.
inline std::string CompareRamFiles(const std::string& a, const std::string& b) {
  auto ia = OpenRamFile(a);
  auto ib = OpenRamFile(b);
  if (!ia.has_value()) return ia.error().message();
  if (!ib.has_value()) return ib.error().message();
  const auto len = (*ia)->blocks()[0].length;
  if (len != (*ib)->blocks()[0].length) return "the RAM files differ in size";
  const std::uint8_t* pa = (*ia)->BlockData(0);
  const std::uint8_t* pb = (*ib)->BlockData(0);
  std::uint64_t differing = 0, first = 0;
  for (std::uint64_t off = 0; off < len; off += kPageSize) {
    if (std::memcmp(pa + off, pb + off, kPageSize) != 0) {
      if (differing++ == 0) first = off;
    }
  }
  if (differing == 0) return "";
  return fmt::format("{} pages differ, the first at offset {:#x}", differing, first);
}

}  // namespace escdr::agent::testing

#endif  // ESCDR_AGENT_AGENT_CLUSTER_TESTING_H_
