// LibvirtHost: one connection to a libvirt daemon (libvirt's C API), with
// what escdr needs from it: the domains and their kind, the QEMU behind each,
// its human monitor, lifecycle events, and peer-to-peer live migration.
//
// A domain's kind comes from its XML: the libosinfo OS id in
// <metadata><libosinfo:libosinfo><libosinfo:os id=.../> (e.g.
// "http://debian.org/debian/12" is os "debian", version "12") and the QEMU
// version of its <emulator> binary. escdr never parses virsh output.
//
// Errors are Status values naming the URI, the domain and libvirt's own
// message (virGetLastError): Unavailable when the daemon cannot be reached,
// NotFound for an unknown domain, FailedPrecondition for a domain in the
// wrong state, Aborted for a failed migration.
//
// Thread safety: every method may be called from any thread (libvirt's
// connections are thread-safe). Lifecycle callbacks run on the host's own
// event thread, one at a time; they must not block for long.
#ifndef ESCDR_LIBVIRT_LIBVIRT_HOST_H_
#define ESCDR_LIBVIRT_LIBVIRT_HOST_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "escdr/base/status.h"

namespace escdr::libvirt {

// What the domain XML and libvirt's state say about one domain.
struct DomainInfo {
  std::string name;
  std::string uuid;
  // "running", "paused", "shutoff", "crashed", "pmsuspended", "blocked",
  // "shutdown" or "nostate" (virDomainState).
  std::string state;
  // The reason libvirt gives for the state, as its enum name without prefix
  // in lower case, e.g. "booted", "migrated", "migration", "user", "unknown"
  // ("" for a value this libvirt version does not name).
  std::string state_reason;
  bool persistent = false;
  // The QEMU process; 0 when not running or unknown. libvirt's API has no
  // pid: it is read from the daemon's pid file <run dir>/qemu/<name>.pid,
  // where <run dir> is the directory of the URI's socket= parameter (a
  // daemon whose /run/libvirt is elsewhere, e.g. socket=/x/run/libvirt-sock
  // gives /x/run/qemu/<name>.pid), else /run/libvirt. Always 0 for a URI that
  // names a remote host.
  pid_t pid = 0;
  std::uint64_t memory_kib = 0;  // <memory>
  std::uint32_t vcpus = 0;
  std::string machine;   // <os><type machine=...>, e.g. "pc-i440fx-7.2"
  std::string emulator;  // <devices><emulator>
  std::string os_id;     // libosinfo id, "" if the XML has none
};

// "http://debian.org/debian/12" -> {"debian", "12"}; the last two path
// components of an http(s) libosinfo id. InvalidArgument otherwise.
struct OsRelease {
  std::string os;
  std::string version;
};
Result<OsRelease> ParseLibosinfoId(const std::string& id);

// Parses the fields of DomainInfo that live in the domain XML (name, uuid,
// memory, vcpus, machine, emulator, os_id). ProtocolError for XML that does
// not parse or has no <name>.
Result<DomainInfo> ParseDomainXml(const std::string& xml);

// A lifecycle event: the domain, the event ("defined", "undefined",
// "started", "suspended", "resumed", "stopped", "shutdown", "pmsuspended",
// "crashed") and its detail ("booted", "migrated", "failed", ... as
// libvirt's enum name without prefix, lower case).
struct LifecycleEvent {
  std::string domain;
  std::string event;
  std::string detail;
};

struct MigrateOptions {
  // libvirt URI of the destination daemon, as the *source* daemon resolves
  // it (peer to peer), e.g. "qemu+tcp://h2/system".
  std::string destination_uri;
  // Where the two QEMUs meet, e.g. "unix:///run/escdr/migrate/web.sock"
  // (VIR_MIGRATE_PARAM_URI).
  std::string migrate_uri;
  // --disks-uri when storage is copied ("" = shared storage).
  std::string disks_uri;
  bool copy_storage = false;
  // MiB/s, 0 = libvirt's default.
  std::uint64_t bandwidth_mib = 0;
  // Move the definition too (VIR_MIGRATE_PERSIST_DEST |
  // VIR_MIGRATE_UNDEFINE_SOURCE): the domain is then persistent on the
  // destination and no longer defined here. Off, a persistent domain stays
  // defined (shut off, reason "migrated") here and runs transient there, as
  // with a plain `virsh migrate --live --p2p`.
  bool move_definition = false;
};

class LibvirtHost {
 public:
  // Connects to `uri` ("qemu:///system", "qemu:///system?socket=...").
  // Unavailable with libvirt's reason when the daemon cannot be reached.
  static Result<std::unique_ptr<LibvirtHost>> Open(const std::string& uri);

  ~LibvirtHost();
  LibvirtHost(const LibvirtHost&) = delete;
  LibvirtHost& operator=(const LibvirtHost&) = delete;

  const std::string& uri() const;

  // Every domain libvirt knows (active and defined), by name.
  Result<std::vector<DomainInfo>> ListDomains();
  Result<DomainInfo> GetDomain(const std::string& name);
  Result<std::string> DomainXml(const std::string& name);

  // Runs a human-monitor command in the domain's QEMU
  // (virDomainQemuMonitorCommand with the HMP flag).
  Result<std::string> MonitorHmp(const std::string& name, const std::string& command);

  // Calls `callback` for every lifecycle event from now on, until the host
  // is destroyed; FailedPrecondition on a second call. Events come from one
  // process-wide thread that runs libvirt's default event loop while any host
  // watches (Open() registers that loop before the first connection). Never
  // destroy a host from inside a callback.
  Status WatchLifecycle(std::function<void(const LifecycleEvent&)> callback);

  // Live migration, peer to peer (VIR_MIGRATE_LIVE | VIR_MIGRATE_PEER2PEER,
  // virDomainMigrateToURI3), of running domain `name`; returns when libvirt
  // reports the outcome (the domain then runs on the destination, or, on
  // error, still on this host). Aborted with libvirt's message;
  // FailedPrecondition if the domain is not running.
  Status MigratePeerToPeer(const std::string& name, const MigrateOptions& options);
  // Cancels the domain's running job (virDomainAbortJob).
  Status AbortJob(const std::string& name);

  // For tests and tools: define and start a domain from XML, destroy
  // (hard stop) and undefine.
  Status DefineAndStart(const std::string& xml);
  Status Destroy(const std::string& name);
  Status Undefine(const std::string& name);
  // Pause and resume (virDomainSuspend / virDomainResume).
  Status Suspend(const std::string& name);
  Status Resume(const std::string& name);

  class Impl;

 private:
  explicit LibvirtHost(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace escdr::libvirt

#endif  // ESCDR_LIBVIRT_LIBVIRT_HOST_H_
