#include "escdr/libvirt/libvirt_host.h"

#include <fmt/format.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <signal.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>

#include "escdr/sys/unique_fd.h"
#include "libvirt/libvirt_names.h"

namespace escdr::libvirt {
namespace {

// Once per process, before the first connection: libvirt's default event
// loop (connections opened before it exists never deliver events) and no
// error printing to stderr (every error is returned as a Status instead).
void InitLibvirtOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});
    virEventRegisterDefaultImpl();
  });
}

// The thread that runs libvirt's default event loop while any host watches
// lifecycle events. Process-wide: the default loop must be run by one thread.
class EventLoop {
 public:
  static EventLoop& Get() {
    static EventLoop* loop = new EventLoop();  // never destroyed: threads may outlive main
    return *loop;
  }

  void Acquire() {
    std::lock_guard lock(mu_);
    if (refs_++ > 0) return;
    stop_ = false;
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        if (virEventRunDefaultImpl() < 0) {
          // Only a broken event implementation fails here; avoid a busy loop.
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    });
  }

  // Stops the thread when the last user leaves. Never call it from an event
  // callback (the thread would join itself).
  void Release() {
    std::lock_guard lock(mu_);
    if (--refs_ > 0) return;
    stop_ = true;
    // A timer that fires at once ends the loop's current iteration.
    const int timer = virEventAddTimeout(
        0, [](int id, void*) { virEventRemoveTimeout(id); }, nullptr, nullptr);
    if (timer < 0) {
      // Without a wake-up the thread ends at the next event; it cannot be
      // joined safely, so leave it running detached.
      thread_.detach();
      return;
    }
    thread_.join();
  }

 private:
  EventLoop() = default;
  std::mutex mu_;
  int refs_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::string LastErrorMessage() {
  const char* m = virGetLastErrorMessage();
  return m != nullptr ? m : "unknown libvirt error";
}

// A Status for the libvirt call that just failed: "<what>: <libvirt's message>",
// with `code` unless libvirt's error says the domain does not exist
// (NotFound) or is in the wrong state (FailedPrecondition).
Status LibvirtError(StatusCode code, const std::string& what) {
  const virErrorPtr e = virGetLastError();
  if (e != nullptr && e->code == VIR_ERR_NO_DOMAIN) {
    code = StatusCode::kNotFound;
  } else if (e != nullptr && e->code == VIR_ERR_OPERATION_INVALID && code != StatusCode::kAborted) {
    code = StatusCode::kFailedPrecondition;
  }
  return Status(code, fmt::format("{}: {}", what, LastErrorMessage()));
}

struct DomainFree {
  void operator()(virDomain* d) const { virDomainFree(d); }
};
using DomainPtr = std::unique_ptr<virDomain, DomainFree>;

// Percent-decoding of a URI query value ("%2F" -> "/").
std::string PercentDecode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::strtol(std::string(s.substr(i + 1, 2)).c_str(), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// Where a local daemon keeps its QEMU pid files: the directory of the URI's
// socket= parameter plus "/qemu" (a daemon whose /run/libvirt is elsewhere),
// else /run/libvirt/qemu. "" for a remote URI (the pid would be another
// host's).
std::string PidDirOf(const std::string& uri) {
  const auto scheme_end = uri.find("://");
  if (scheme_end == std::string::npos) return "";
  const std::string scheme = uri.substr(0, scheme_end);
  const std::string rest = uri.substr(scheme_end + 3);
  const bool local_transport = scheme.find('+') == std::string::npos || scheme.ends_with("+unix");
  if (!local_transport || !rest.starts_with("/")) return "";  // a host name follows ://
  const auto query = rest.find('?');
  if (query != std::string::npos) {
    std::string_view q = std::string_view(rest).substr(query + 1);
    while (!q.empty()) {
      const auto amp = q.find('&');
      std::string_view kv = q.substr(0, amp);
      if (kv.starts_with("socket=")) {
        const std::string socket = PercentDecode(kv.substr(7));
        const auto slash = socket.rfind('/');
        if (slash != std::string::npos) return socket.substr(0, slash) + "/qemu";
      }
      if (amp == std::string_view::npos) break;
      q.remove_prefix(amp + 1);
    }
  }
  return "/run/libvirt/qemu";
}

// Shared between a host and libvirt's callback registration: the callback
// may still be running on the event thread while the host goes away.
struct WatchState {
  std::mutex mu;
  bool active = true;
  std::function<void(const LifecycleEvent&)> callback;
};

int OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void* opaque) {
  auto* state = static_cast<std::shared_ptr<WatchState>*>(opaque);
  LifecycleEvent e;
  const char* name = virDomainGetName(dom);
  e.domain = name != nullptr ? name : "";
  e.event = LifecycleEventName(event);
  e.detail = LifecycleDetailName(event, detail);
  if (e.event.empty()) e.event = fmt::format("event-{}", event);
  if (e.detail.empty()) e.detail = fmt::format("detail-{}", detail);
  std::lock_guard lock((*state)->mu);
  if ((*state)->active) (*state)->callback(e);
  return 0;
}

}  // namespace

class LibvirtHost::Impl {
 public:
  std::string uri;
  std::string pid_dir;
  virConnectPtr conn = nullptr;

  std::mutex mu;  // guards the watch
  std::shared_ptr<WatchState> watch;
  int callback_id = -1;

  Result<DomainPtr> Lookup(const std::string& name) {
    virDomainPtr d = virDomainLookupByName(conn, name.c_str());
    if (d == nullptr) {
      return Err(LibvirtError(StatusCode::kNotFound,
                              fmt::format("libvirt {}: cannot find domain {}", uri, name)));
    }
    return DomainPtr(d);
  }

  Result<DomainInfo> Describe(virDomainPtr dom) {
    const char* raw_name = virDomainGetName(dom);
    const std::string name = raw_name != nullptr ? raw_name : "?";
    char* xml = virDomainGetXMLDesc(dom, 0);
    if (xml == nullptr) {
      return Err(
          LibvirtError(StatusCode::kUnavailable,
                       fmt::format("libvirt {}: cannot get the XML of domain {}", uri, name)));
    }
    Result<DomainInfo> parsed = ParseDomainXml(xml);
    std::free(xml);
    if (!parsed.has_value()) {
      return Err(parsed.error().WithContext(fmt::format("libvirt {}: domain {}", uri, name)));
    }
    DomainInfo info = std::move(*parsed);
    int state = 0;
    int reason = 0;
    if (virDomainGetState(dom, &state, &reason, 0) < 0) {
      return Err(
          LibvirtError(StatusCode::kUnavailable,
                       fmt::format("libvirt {}: cannot get the state of domain {}", uri, name)));
    }
    info.state = DomainStateName(state);
    info.state_reason = DomainStateReasonName(state, reason);
    info.persistent = virDomainIsPersistent(dom) == 1;
    if (virDomainIsActive(dom) == 1 && !pid_dir.empty()) {
      Result<std::string> text = ReadFileToString(fmt::format("{}/{}.pid", pid_dir, info.name));
      if (text.has_value()) {
        const long pid = std::strtol(text->c_str(), nullptr, 10);
        if (pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) {
          info.pid = static_cast<pid_t>(pid);
        }
      }
    }
    return info;
  }
};

LibvirtHost::LibvirtHost(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LibvirtHost>> LibvirtHost::Open(const std::string& uri) {
  InitLibvirtOnce();
  auto impl = std::make_unique<Impl>();
  impl->uri = uri;
  impl->pid_dir = PidDirOf(uri);
  impl->conn = virConnectOpen(uri.c_str());
  if (impl->conn == nullptr) {
    return Err(Status::Unavailable(
        fmt::format("cannot connect to libvirt {}: {}", uri, LastErrorMessage())));
  }
  return std::unique_ptr<LibvirtHost>(new LibvirtHost(std::move(impl)));
}

LibvirtHost::~LibvirtHost() {
  bool watching = false;
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->watch != nullptr) {
      watching = true;
      virConnectDomainEventDeregisterAny(impl_->conn, impl_->callback_id);
      // Waits for a callback in progress; none runs the user's code afterwards.
      std::lock_guard watch_lock(impl_->watch->mu);
      impl_->watch->active = false;
    }
  }
  virConnectClose(impl_->conn);
  if (watching) EventLoop::Get().Release();
}

const std::string& LibvirtHost::uri() const { return impl_->uri; }

Result<std::vector<DomainInfo>> LibvirtHost::ListDomains() {
  virDomainPtr* domains = nullptr;
  const int n = virConnectListAllDomains(impl_->conn, &domains, 0);
  if (n < 0) {
    return Err(LibvirtError(StatusCode::kUnavailable,
                            fmt::format("libvirt {}: cannot list domains", impl_->uri)));
  }
  std::vector<DomainPtr> owned;
  for (int i = 0; i < n; ++i) owned.emplace_back(domains[i]);
  std::free(domains);
  std::vector<DomainInfo> out;
  for (DomainPtr& d : owned) {
    Result<DomainInfo> info = impl_->Describe(d.get());
    if (!info.has_value()) {
      if (info.error().IsNotFound()) continue;  // went away while we looked
      return Err(info.error());
    }
    out.push_back(std::move(*info));
  }
  return out;
}

Result<DomainInfo> LibvirtHost::GetDomain(const std::string& name) {
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  return impl_->Describe(d.get());
}

Result<std::string> LibvirtHost::DomainXml(const std::string& name) {
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  char* xml = virDomainGetXMLDesc(d.get(), 0);
  if (xml == nullptr) {
    return Err(
        LibvirtError(StatusCode::kUnavailable,
                     fmt::format("libvirt {}: cannot get the XML of domain {}", impl_->uri, name)));
  }
  std::string out = xml;
  std::free(xml);
  return out;
}

Result<std::string> LibvirtHost::MonitorHmp(const std::string& name, const std::string& command) {
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  char* result = nullptr;
  if (virDomainQemuMonitorCommand(d.get(), command.c_str(), &result,
                                  VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP) < 0) {
    return Err(LibvirtError(StatusCode::kUnavailable,
                            fmt::format("libvirt {}: monitor command '{}' for domain {} failed",
                                        impl_->uri, command, name)));
  }
  std::string out = result != nullptr ? result : "";
  std::free(result);
  return out;
}

Status LibvirtHost::WatchLifecycle(std::function<void(const LifecycleEvent&)> callback) {
  std::lock_guard lock(impl_->mu);
  if (impl_->watch != nullptr) {
    return Status::FailedPrecondition(
        fmt::format("libvirt {}: lifecycle events are already watched", impl_->uri));
  }
  auto state = std::make_shared<WatchState>();
  state->callback = std::move(callback);
  auto* opaque = new std::shared_ptr<WatchState>(state);
  EventLoop::Get().Acquire();
  const int id = virConnectDomainEventRegisterAny(
      impl_->conn, nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle),
      opaque, [](void* p) { delete static_cast<std::shared_ptr<WatchState>*>(p); });
  if (id < 0) {
    Status s =
        LibvirtError(StatusCode::kUnavailable,
                     fmt::format("libvirt {}: cannot register for lifecycle events", impl_->uri));
    delete opaque;
    EventLoop::Get().Release();
    return s;
  }
  impl_->watch = std::move(state);
  impl_->callback_id = id;
  return Status::OK();
}

Status LibvirtHost::MigratePeerToPeer(const std::string& name, const MigrateOptions& options) {
  if (options.destination_uri.empty()) {
    return Status::InvalidArgument(fmt::format("migration of domain {}: no destination URI", name));
  }
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  if (virDomainIsActive(d.get()) != 1) {
    return Status::FailedPrecondition(
        fmt::format("libvirt {}: domain {} is not running, cannot migrate it", impl_->uri, name));
  }
  virTypedParameterPtr params = nullptr;
  int nparams = 0;
  int maxparams = 0;
  unsigned int flags = VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER;
  bool ok = true;
  if (!options.migrate_uri.empty()) {
    ok = ok && virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_URI,
                                       options.migrate_uri.c_str()) == 0;
  }
  if (!options.disks_uri.empty()) {
    ok = ok && virTypedParamsAddString(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_DISKS_URI,
                                       options.disks_uri.c_str()) == 0;
  }
  if (options.copy_storage) flags |= VIR_MIGRATE_NON_SHARED_DISK;
  if (options.move_definition) flags |= VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE;
  if (options.bandwidth_mib > 0) {
    ok = ok && virTypedParamsAddULLong(&params, &nparams, &maxparams, VIR_MIGRATE_PARAM_BANDWIDTH,
                                       options.bandwidth_mib) == 0;
  }
  if (!ok) {
    virTypedParamsFree(params, nparams);
    return Status::Internal(
        fmt::format("cannot build migration parameters: {}", LastErrorMessage()));
  }
  const int rc = virDomainMigrateToURI3(d.get(), options.destination_uri.c_str(), params,
                                        static_cast<unsigned int>(nparams), flags);
  virTypedParamsFree(params, nparams);
  if (rc < 0) {
    return LibvirtError(
        StatusCode::kAborted,
        fmt::format("libvirt {}: migration of domain {} to {} via {} failed", impl_->uri, name,
                    options.destination_uri,
                    options.migrate_uri.empty() ? "libvirt's default URI" : options.migrate_uri));
  }
  return Status::OK();
}

Status LibvirtHost::AbortJob(const std::string& name) {
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  if (virDomainAbortJob(d.get()) < 0) {
    return LibvirtError(
        StatusCode::kFailedPrecondition,
        fmt::format("libvirt {}: cannot abort the job of domain {}", impl_->uri, name));
  }
  return Status::OK();
}

Status LibvirtHost::DefineAndStart(const std::string& xml) {
  ESCDR_ASSIGN_OR_RETURN(DomainInfo parsed, ParseDomainXml(xml));
  virDomainPtr existing = virDomainLookupByName(impl_->conn, parsed.name.c_str());
  const bool existed = existing != nullptr;
  if (existing != nullptr) virDomainFree(existing);
  virDomainPtr raw = virDomainDefineXML(impl_->conn, xml.c_str());
  if (raw == nullptr) {
    return LibvirtError(
        StatusCode::kInvalidArgument,
        fmt::format("libvirt {}: cannot define domain {}", impl_->uri, parsed.name));
  }
  DomainPtr d(raw);
  if (virDomainCreate(d.get()) < 0) {
    Status s =
        LibvirtError(StatusCode::kFailedPrecondition,
                     fmt::format("libvirt {}: cannot start domain {}", impl_->uri, parsed.name));
    if (!existed) virDomainUndefine(d.get());  // leave no half-made domain behind
    return s;
  }
  return Status::OK();
}

Status LibvirtHost::Destroy(const std::string& name) {
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  if (virDomainDestroy(d.get()) < 0) {
    return LibvirtError(StatusCode::kFailedPrecondition,
                        fmt::format("libvirt {}: cannot destroy domain {}", impl_->uri, name));
  }
  return Status::OK();
}

Status LibvirtHost::Undefine(const std::string& name) {
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  if (virDomainUndefine(d.get()) < 0) {
    return LibvirtError(StatusCode::kFailedPrecondition,
                        fmt::format("libvirt {}: cannot undefine domain {}", impl_->uri, name));
  }
  return Status::OK();
}

Status LibvirtHost::Suspend(const std::string& name) {
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  if (virDomainSuspend(d.get()) < 0) {
    return LibvirtError(StatusCode::kFailedPrecondition,
                        fmt::format("libvirt {}: cannot suspend domain {}", impl_->uri, name));
  }
  return Status::OK();
}

Status LibvirtHost::Resume(const std::string& name) {
  ESCDR_ASSIGN_OR_RETURN(DomainPtr d, impl_->Lookup(name));
  if (virDomainResume(d.get()) < 0) {
    return LibvirtError(StatusCode::kFailedPrecondition,
                        fmt::format("libvirt {}: cannot resume domain {}", impl_->uri, name));
  }
  return Status::OK();
}

}  // namespace escdr::libvirt
