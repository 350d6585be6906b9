// `escdr agent` (the per-host daemon), `escdr agent status|reload`, and the VM
// lifecycle commands that go through agents: `escdr vm create|start|stop`
// (docs/cli-agent.md).
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "agent/json_util.h"
#include "cli/command.h"
#include "cli/inventory_access.h"
#include "cli/units.h"
#include "cli/vm_hardware.h"
#include "escdr/agent/agent.h"
#include "escdr/agent/agent_client.h"
#include "escdr/base/vm_kind.h"
#include "escdr/inventory/inventory.h"
#include "escdr/qemu/launch_spec.h"
#include "escdr/qemu/qemu_install.h"

namespace escdr::cli {
namespace {

using nlohmann::json;

void PrintJson(const json& doc) {
  std::fputs(doc.dump(2, ' ', false, json::error_handler_t::replace).c_str(), stdout);
  std::fputc('\n', stdout);
}

// The agent of `host`, from the inventory.
// With the global TLS options; the agent's certificate must name `host`.
Result<agent::AgentClient> ClientForHost(const GlobalOptions& global, Inventory& inv,
                                         const std::string& host) {
  ESCDR_ASSIGN_OR_RETURN(auto tls, global.AgentTls());
  ESCDR_ASSIGN_OR_RETURN(Host h, inv.GetHost(host));
  if (h.agent_address.empty()) {
    return Err(Status::FailedPrecondition(
        fmt::format("host {} has no agent address in the inventory (is `escdr agent` running?)", host)));
  }
  return agent::AgentClient(h.agent_address, std::chrono::seconds(180), std::move(tls), host);
}

// ---- escdr agent ----

struct AgentArgs {
  agent::AgentOptions options;
  bool qemu_given = false;  // --qemu on the command line
  std::string memory = "16G";
  double handshake_seconds = 3;
};

void RunAgent(const GlobalOptions& global, AgentArgs& args) {
  agent::SetupAgentLogging(global.verbosity);

  agent::AgentOptions o = args.options;
  if (!args.qemu_given) o.qemu = DefaultQemuPaths();
  o.memory_mib = Unwrap(ParseMib("--memory", args.memory));
  o.state_dir = Unwrap(global.StateDir());
  o.tls = Unwrap(global.AgentTls(o.name));
  o.insecure = global.insecure;
  if (!(args.handshake_seconds > 0 && args.handshake_seconds <= 600)) {
    Fail(Status::InvalidArgument(
        fmt::format("--handshake-timeout {} must be more than 0 and at most 600 seconds",
                    args.handshake_seconds)));
  }
  o.handshake_timeout = std::chrono::milliseconds(std::lround(args.handshake_seconds * 1000));
  // SIGHUP and `escdr agent reload` reread the same files.
  o.reload_tls = [g = global, name = o.name] { return g.AgentTls(name); };
  if (o.inventory_url.empty()) {
    o.inventory_url = Unwrap(InventoryUrl(global));
  }
  // SIGINT and SIGTERM end the agent cleanly (its VMs keep running), SIGHUP
  // rereads its credentials; every thread blocks them and one thread waits
  // for them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto started = agent::Agent::Start(o);
  if (!started.has_value()) Fail(started.error());
  agent::Agent* a = started->get();
  std::thread waiter([a, set] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGHUP) {
        (void)a->Reload();  // logged either way; a failure keeps the old credentials
        continue;
      }
      a->Shutdown();
      return;
    }
  });
  if (global.json) {
    PrintJson({{"agent", o.name},
               {"address", a->address()},
               {"pid", ::getpid()},
               {"tls", o.tls ? o.tls->description() : "none (--insecure)"}});
  } else {
    std::printf("escdr agent %s listening on %s (pid %d, %s)\n", o.name.c_str(),
                a->address().c_str(), ::getpid(),
                o.tls ? ("TLS 1.3, " + o.tls->description()).c_str()
                      : "PLAINTEXT: --insecure, anyone who reaches the port can drive this agent");
  }
  std::fflush(stdout);
  Status s = a->Run();
  // Wake the signal thread if Run() ended for another reason.
  if (waiter.joinable()) {
    ::kill(::getpid(), SIGTERM);
    waiter.join();
  }
  started->reset();
  Check(s);
}

// ---- escdr agent status ----

// The agents `targets` names (hosts of the inventory, or host:port
// addresses), or every host's agent when it names none: {host, address}.
std::vector<std::pair<std::string, std::string>> AgentsToAsk(const GlobalOptions& global,
                                                             const std::vector<std::string>& targets) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  std::vector<std::pair<std::string, std::string>> agents;
  if (targets.empty()) {
    for (const Host& h : Unwrap(inv->ListHosts())) {
      if (!h.agent_address.empty()) agents.emplace_back(h.name, h.agent_address);
    }
    return agents;
  }
  for (const std::string& t : targets) {
    auto h = inv->GetHost(t);
    if (h.has_value()) {
      agents.emplace_back(h->name, h->agent_address);
    } else if (t.find(':') != std::string::npos) {
      agents.emplace_back("", t);
    } else {
      Fail(h.error());
    }
  }
  return agents;
}

void RunAgentStatus(const GlobalOptions& global, const std::vector<std::string>& targets) {
  const auto agents = AgentsToAsk(global, targets);
  auto tls = Unwrap(global.AgentTls());
  json doc = json::array();
  Table agents_table({"HOST", "ADDRESS", "STATE", ">PID", ">VMS", ">MIGRATIONS"});
  Table vms_table({"HOST", "VM", "ROLE", "RUN STATE", ">PID", ">COUNTER", "PORTS", "RAM FILE"});
  // libvirt domains an agent cannot classify (docs/libvirt.md).
  Table unclassified_table({"HOST", "DOMAIN", "STATE", "WHY ESCDR DOES NOT MIGRATE IT"});
  bool any_down = false;
  for (const auto& [host, address] : agents) {
    agent::AgentClient client(address, std::chrono::seconds(10), tls, host);
    auto st = client.GetStatus();
    if (!st.has_value()) {
      any_down = true;
      agents_table.AddRow({host, address, "unreachable", "", "", ""});
      doc.push_back({{"host", host}, {"address", address}, {"error", st.error().message()}});
      continue;
    }
    doc.push_back(*st);
    const json vms = st->contains("vms") && (*st)["vms"].is_array() ? (*st)["vms"] : json::array();
    const json migrations = st->contains("migrations") && (*st)["migrations"].is_array()
                                ? (*st)["migrations"]
                                : json::array();
    const std::string name = agent::StringOr(*st, "host", host);
    agents_table.AddRow({name, address, "up", std::to_string(agent::U64Or(*st, "pid")),
                         std::to_string(vms.size()), std::to_string(migrations.size())});
    for (const json& v : vms) {
      agent::VmInfo info = agent::VmInfo::FromJson(v);
      // Guest port -> host port, e.g. "80>41873,6379>36511".
      std::string ports;
      for (auto [guest, port] : info.forwards) {
        ports += fmt::format("{}{}>{}", ports.empty() ? "" : ",", guest, port);
      }
      vms_table.AddRow({name, info.name, info.role, info.run_state,
                        std::to_string(info.pid),
                        info.counter ? std::to_string(*info.counter) : "-",
                        ports.empty() ? "-" : ports, info.ram_path});
    }
    const json* libvirt = nullptr;
    if (auto b = st->find("backends"); b != st->end() && b->is_object()) {
      if (auto l = b->find("libvirt"); l != b->end() && l->is_object()) libvirt = &*l;
    }
    if (libvirt != nullptr && libvirt->contains("unclassified") &&
        (*libvirt)["unclassified"].is_array()) {
      for (const json& u : (*libvirt)["unclassified"]) {
        unclassified_table.AddRow({name, agent::StringOr(u, "vm"), agent::StringOr(u, "state"),
                                   agent::StringOr(u, "reason")});
      }
    }
  }
  if (global.json) {
    PrintJson(doc);
  } else {
    std::fputs(agents_table.Render().c_str(), stdout);
    std::fputs("\n", stdout);
    std::fputs(vms_table.Render().c_str(), stdout);
    if (unclassified_table.rows() > 0) {
      std::fputs("\n", stdout);
      std::fputs(unclassified_table.Render().c_str(), stdout);
    }
  }
  if (any_down && !targets.empty()) {
    Fail(Status::Unavailable("an agent did not answer"));
  }
}

// ---- escdr agent reload ----

void RunAgentReload(const GlobalOptions& global, const std::vector<std::string>& targets) {
  const auto agents = AgentsToAsk(global, targets);
  auto tls = Unwrap(global.AgentTls());
  json doc = json::array();
  Table table({"HOST", "ADDRESS", "RESULT"});
  int failed = 0;
  for (const auto& [host, address] : agents) {
    agent::AgentClient client(address, std::chrono::seconds(30), tls, host);
    auto r = client.Call("reload");
    if (!r.has_value()) {
      ++failed;
      table.AddRow({host, address, "failed: " + r.error().message()});
      doc.push_back({{"host", host}, {"address", address}, {"error", r.error().message()}});
      continue;
    }
    table.AddRow({host, address, "reloaded: " + agent::StringOr(*r, "tls")});
    doc.push_back({{"host", host}, {"address", address}, {"tls", agent::StringOr(*r, "tls")}});
  }
  if (global.json) {
    PrintJson(doc);
  } else {
    std::fputs(table.Render().c_str(), stdout);
  }
  if (failed > 0) {
    Fail(Status::Unavailable(
        fmt::format("{} of {} agents did not reload (those keep their old credentials)", failed,
                    agents.size())));
  }
}

// ---- escdr vm create|start|stop ----

struct CreateArgs {
  std::string name;
  std::string os, os_version, hypervisor = "qemu", hypervisor_version;
  std::string memory = "256";
  std::uint32_t vcpus = 1;
  std::string kernel, initrd, append = "console=ttyS0", machine = "pc";
  std::vector<std::string> disks;
  std::string disk_from, disk_dir{kDefaultDiskDir}, nic, firmware = "bios";
  std::string firmware_code{kOvmfCode}, firmware_vars{kOvmfVars};
  std::vector<std::string> forwards;
  bool console = false;
  std::string host;
  std::string policy = "spread";
  bool no_start = false;
};

void PrintVm(const GlobalOptions& global, const std::string& verb, const std::string& host,
             const agent::VmInfo& vm) {
  if (global.json) {
    json j = vm.ToJson();
    j["host"] = host;
    PrintJson(j);
    return;
  }
  std::printf("%s VM %s on %s (pid %lld, %s)\n  RAM file    %s\n  serial log  %s\n", verb.c_str(),
              vm.name.c_str(), host.c_str(), static_cast<long long>(vm.pid), vm.run_state.c_str(),
              vm.ram_path.c_str(), vm.serial_log.c_str());
  if (!vm.console_socket.empty()) std::printf("  console     %s\n", vm.console_socket.c_str());
  for (auto [guest, port] : vm.forwards) {
    std::printf("  guest port  %u on 127.0.0.1:%u\n", unsigned{guest}, unsigned{port});
  }
}

std::string AbsolutePath(const std::string& path, const char* flag) {
  if (path.empty()) return path;
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(path, ec);
  if (ec || !std::filesystem::is_regular_file(p, ec)) {
    Fail(Status::NotFound(fmt::format("{} {} is not a readable file", flag, path)));
  }
  return p.string();
}

void RunVmCreate(const GlobalOptions& global, const CreateArgs& a) {
  VmKind kind{a.os, a.os_version, a.hypervisor, a.hypervisor_version};
  Check(kind.Validate().WithContext("vm create"));
  LaunchSpec spec;
  spec.name = a.name;
  spec.memory_mib = Unwrap(ParseMib("--memory", a.memory));
  spec.vcpus = a.vcpus;
  spec.machine = a.machine;
  spec.kernel = AbsolutePath(a.kernel, "--kernel");
  spec.initrd = AbsolutePath(a.initrd, "--initrd");
  spec.append = a.append;
  // Files this command creates, removed again if the VM does not come up.
  std::vector<std::string> created;
  auto remove_created = [&created] {
    std::error_code ec;
    for (const std::string& f : created) std::filesystem::remove(f, ec);
  };
  auto fail = [&remove_created](const Status& s) {
    remove_created();
    Fail(s);
  };
  for (const std::string& d : a.disks) spec.disks.push_back(Unwrap(ParseDiskOption(d)));
  if (!a.disk_from.empty()) {
    DiskSpec overlay = Unwrap(CreateOverlay(a.disk_from, a.disk_dir, a.name));
    created.push_back(overlay.path);
    spec.disks.insert(spec.disks.begin(), overlay);
  }
  // A VM with a disk is a real VM and gets a user-mode NIC unless told otherwise.
  const std::string nic = !a.nic.empty() ? a.nic : spec.disks.empty() ? "none" : "user";
  if (auto n = ParseNicOption(nic); !n.has_value()) {
    fail(n.error());
  } else if (n->has_value()) {
    spec.nics.push_back(**n);
    spec.nics.back().mac = MacForVm(a.name, 0);
  }
  for (const std::string& f : a.forwards) {
    auto fwd = ParseForward(f);
    if (!fwd.has_value()) fail(fwd.error());
    if (spec.nics.empty() || spec.nics[0].mode != "user") {
      fail(Status::InvalidArgument("--forward needs a user-mode NIC (--nic user)"));
    }
    spec.nics[0].forwards.push_back(*fwd);
  }
  spec.firmware = a.firmware;
  if (a.firmware == "uefi") {
    spec.firmware_code = AbsolutePath(a.firmware_code, "--firmware-code");
    auto vars = CreateUefiVars(a.firmware_vars, a.disk_dir, a.name);
    if (!vars.has_value()) fail(vars.error());
    created.push_back(*vars);
    spec.firmware_vars = *vars;
  } else if (a.firmware != "bios") {
    fail(Status::InvalidArgument(fmt::format("--firmware '{}' is not bios or uefi", a.firmware)));
  }
  spec.console = a.console;
  if (spec.kernel.empty() && spec.disks.empty()) {
    fail(Status::InvalidArgument("vm create needs --kernel, or a disk to boot from"));
  }
  if (spec.kernel.empty()) {
    // The firmware boots the disk, whose boot loader has its own command line.
    if (!spec.initrd.empty()) fail(Status::InvalidArgument("--initrd needs --kernel"));
    spec.append.clear();
  }

  VmSpec vs;
  vs.name = a.name;
  vs.host = a.host;
  vs.kind = kind;
  vs.memory_mib = spec.memory_mib;
  vs.vcpus = a.vcpus;
  vs.state = VmState::kDefined;
  vs.launch_spec = LaunchSpecToJson(spec).dump();

  auto inv_or = OpenInventoryFromGlobal(global);
  if (!inv_or.has_value()) fail(inv_or.error());
  auto inv = std::move(*inv_or);
  Vm vm;
  if (!a.host.empty()) {
    auto added = inv->AddVm(vs);
    if (!added.has_value()) fail(added.error());
    vm = *added;
  } else {
    PlacementOptions po;
    auto policy = ParsePlacementPolicy(a.policy);
    if (!policy.has_value()) fail(policy.error());
    po.policy = *policy;
    auto placed = inv->PlaceVm(vs, po);
    if (!placed.has_value()) fail(placed.error());
    vm = placed->vm;
  }
  if (a.no_start) {
    if (global.json) {
      PrintJson({{"name", vm.name}, {"host", vm.host}, {"state", VmStateName(vm.state)}});
    } else {
      std::printf("defined VM %s on %s (not started)\n", vm.name.c_str(), vm.host.c_str());
    }
    return;
  }
  auto client = ClientForHost(global, *inv, vm.host);
  Result<agent::VmInfo> started = client.has_value() ? client->StartVm(vm.name)
                                                     : Result<agent::VmInfo>(Err(client.error()));
  if (!started.has_value()) {
    // Leave no VM behind that nobody runs: the name stays free for a retry.
    Status removed = inv->RemoveVm(vm.name);
    fail(Status(started.error().code(),
                fmt::format("VM {} was placed on {} but could not be started there: {}; {}",
                            vm.name, vm.host, started.error().message(),
                            removed.ok() ? "removed it from the inventory"
                                         : "and could not remove it: " + removed.message())));
  }
  PrintVm(global, "created", vm.host, *started);
}

void RunVmStart(const GlobalOptions& global, const std::string& name) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  Vm vm = Unwrap(inv->GetVm(name));
  auto client = Unwrap(ClientForHost(global, *inv, vm.host));
  PrintVm(global, "started", vm.host, Unwrap(client.StartVm(name)));
}

// `host` names the agent to ask; "" = the VM's host in the inventory. Another
// host is how a source kept by `migrate --keep-source` is removed.
void RunVmStop(const GlobalOptions& global, const std::string& name, std::string host) {
  auto inv = Unwrap(OpenInventoryFromGlobal(global));
  if (host.empty()) host = Unwrap(inv->GetVm(name)).host;
  auto client = Unwrap(ClientForHost(global, *inv, host));
  Check(client.StopVm(name));
  if (global.json) {
    PrintJson({{"name", name}, {"host", host}, {"state", "stopped"}});
  } else {
    std::printf("stopped VM %s on %s\n", name.c_str(), host.c_str());
  }
}

void RegisterAgentCommands(CLI::App& app, GlobalOptions& global) {
  auto aa = std::make_shared<AgentArgs>();
  CLI::App* agent_cmd = GetOrAddSubcommand(
      app, "agent", "Run the escdr agent of this host (a daemon), or query agents");
  agent_cmd->require_subcommand(0, 1);
  agent_cmd->add_option("--name", aa->options.name, "This host's name in the inventory");
  agent_cmd->add_option("--listen", aa->options.listen,
                        "Address to listen on, host:port (default 127.0.0.1:7400)");
  agent_cmd->add_option("--advertise", aa->options.advertise,
                        "Address others reach this agent at (default: the listen address)");
  agent_cmd->add_option("--ram-dir", aa->options.ram_dir,
                        "Directory for guest RAM files (default /dev/shm)");
  agent_cmd->add_option("--memory", aa->memory, "Host memory for VMs: MiB, or with M, G or T");
  agent_cmd->add_option("--vcpus", aa->options.vcpus, "Host vCPUs for VMs (default 16)");
  agent_cmd->add_option("--rack", aa->options.rack, "Rack of this host");
  agent_cmd->add_option("--pod", aa->options.pod, "Pod of this host");
  agent_cmd->add_option_function<std::vector<std::string>>(
      "--qemu",
      [aa](const std::vector<std::string>& paths) {
        aa->options.qemu = paths;
        aa->qemu_given = true;
      },
      "A QEMU to run guests with, one per series: a program, or a tree made by "
      "tools/install-qemu.sh (repeatable; default qemu-system-x86_64 and every "
      "/var/lib/escdr/qemu-* tree)");
  agent_cmd->add_option("--handshake-timeout", aa->handshake_seconds,
                        "Seconds a new connection has for its TLS handshake (default 3)");
  agent_cmd->add_option("--max-connections", aa->options.max_connections,
                        "Authenticated connections served at once (default 64)");
  agent_cmd->add_option("--max-unauthenticated", aa->options.max_unauthenticated,
                        "Connections still in their handshake, in all (default 64; when full, "
                        "the oldest of the busiest source address is closed)");
  agent_cmd->add_option("--max-unauthenticated-per-address",
                        aa->options.max_unauthenticated_per_address,
                        "Connections still in their handshake from one IP address (default 8)");
  agent_cmd->add_option("--libvirt", aa->options.libvirt_uri,
                        "Adopt the domains of this libvirt (e.g. qemu:///system) and carry their "
                        "migrations (docs/libvirt.md)");
  agent_cmd->add_option("--libvirt-socket-dir", aa->options.libvirt_socket_dir,
                        "Where libvirt's QEMUs meet the agent: virsh migrate --migrateuri "
                        "unix://DIR/DOMAIN.sock (default /run/escdr/migrate)");
  agent_cmd->add_option("--libvirt-peer-uri", aa->options.libvirt_peer_uri,
                        "This host's libvirt as other hosts' libvirtd reach it (default "
                        "qemu+tcp://HOST/system)");

  auto targets = std::make_shared<std::vector<std::string>>();
  CLI::App* status = agent_cmd->add_subcommand("status", "Status of agents and the VMs they run");
  status->add_option("HOST", *targets, "Hosts (or host:port addresses); default: every host");
  status->callback([&global, targets] { RunAgentStatus(global, *targets); });

  auto reload_targets = std::make_shared<std::vector<std::string>>();
  CLI::App* reload = agent_cmd->add_subcommand(
      "reload", "Make agents reread their TLS certificate, key, CA and revocation list (as "
                "SIGHUP does); needs an operator certificate");
  reload->add_option("HOST", *reload_targets,
                     "Hosts (or host:port addresses); default: every host with an agent");
  reload->callback([&global, reload_targets] { RunAgentReload(global, *reload_targets); });

  agent_cmd->callback([&global, aa, agent_cmd] {
    if (!agent_cmd->get_subcommands().empty()) return;
    if (aa->options.name.empty()) Fail(Status::InvalidArgument("escdr agent needs --name"));
    RunAgent(global, *aa);
  });

  CLI::App* vm = GetOrAddSubcommand(app, "vm", "VMs: create, start, stop (agents); add, list, show, remove (inventory)");
  auto ca = std::make_shared<CreateArgs>();
  CLI::App* create = vm->add_subcommand(
      "create", "Place a new VM with the placement policy and start it on that host's agent");
  create->add_option("NAME", ca->name, "VM name (unique)")->required();
  create->add_option("--os", ca->os, "Guest OS name, e.g. debian")->required();
  create->add_option("--os-version", ca->os_version, "Guest OS version, e.g. 12")->required();
  create->add_option("--hypervisor", ca->hypervisor, "Hypervisor name (default qemu)");
  create->add_option("--hypervisor-version", ca->hypervisor_version,
                     "QEMU series the VM runs on, e.g. 7.2 or 10.0; its host must have it")
      ->required();
  create->add_option("--memory", ca->memory, "Guest memory: MiB, or with M, G or T (default 256)");
  create->add_option("--vcpus", ca->vcpus, "vCPUs (default 1)");
  create->add_option("--kernel", ca->kernel,
                     "Kernel image (bzImage); without it the VM boots from its first disk");
  create->add_option("--initrd", ca->initrd, "Initial ramdisk");
  create->add_option("--append", ca->append, "Kernel command line (default console=ttyS0)");
  create->add_option("--machine", ca->machine, "QEMU machine type (default pc)");
  create->add_option("--disk", ca->disks,
                     "A virtio disk PATH[,format=raw|qcow2][,readonly=on] on storage every host "
                     "reaches (repeatable)");
  create->add_option("--disk-from", ca->disk_from,
                     "Create this VM's qcow2 overlay DISK-DIR/NAME.qcow2 of a base image; it is "
                     "the first disk");
  create->add_option("--disk-dir", ca->disk_dir,
                     "Shared directory for overlays and UEFI variables (default " +
                         std::string(kDefaultDiskDir) + ")");
  create->add_option("--nic", ca->nic,
                     "user (QEMU user networking), tap:IFNAME or none (default: user for a VM "
                     "with a disk, none otherwise)");
  create->add_option("--forward", ca->forwards,
                     "Forward a host port on 127.0.0.1 to guest TCP port: GUEST[:HOST], no HOST "
                     "= any free port, shown by vm show (repeatable)");
  create->add_option("--firmware", ca->firmware, "bios (SeaBIOS, default) or uefi (OVMF)");
  create->add_option("--firmware-code", ca->firmware_code, "OVMF code for --firmware uefi");
  create->add_option("--firmware-vars", ca->firmware_vars,
                     "OVMF variable template, copied per VM for --firmware uefi");
  create->add_flag("--console", ca->console,
                   "A root console on the guest's ttyS1 as a unix socket on its host");
  create->add_option("--host", ca->host, "Put it on this host instead of asking placement");
  create->add_option("--policy", ca->policy, "Placement policy: spread (default), pack, random");
  create->add_flag("--no-start", ca->no_start, "Only place and register it");
  create->callback([&global, ca] { RunVmCreate(global, *ca); });

  auto name = std::make_shared<std::string>();
  CLI::App* start = vm->add_subcommand("start", "Start a VM on its host (or resume it if paused)");
  start->add_option("NAME", *name, "VM name")->required();
  start->callback([&global, name] { RunVmStart(global, *name); });
  auto stop_host = std::make_shared<std::string>();
  CLI::App* stop = vm->add_subcommand("stop", "Stop a VM: quit its QEMU, remove its RAM file");
  stop->add_option("NAME", *name, "VM name")->required();
  stop->add_option("--host", *stop_host,
                   "Ask this host's agent (e.g. for a source kept by migrate --keep-source)");
  stop->callback([&global, name, stop_host] { RunVmStop(global, *name, *stop_host); });
}

}  // namespace

ESCDR_REGISTER_COMMAND(RegisterAgentCommands);

}  // namespace escdr::cli
