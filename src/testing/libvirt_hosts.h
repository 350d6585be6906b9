// LibvirtTestHost: a libvirt "host" for integration tests, several on one
// machine (../shared/docs/libvirt-two-hosts.md has the recipe and why).
//
// Start() runs a private virtlogd and libvirtd in their own mount namespace
// (`unshare --mount --propagation private`), with the host's own directories
// bound over the daemon's paths:
//
//   <dir>/<name>/etc    -> /etc/libvirt        top-level files of the real
//                                              /etc/libvirt, plus our own
//                                              qemu.conf and libvirtd.conf
//   <dir>/<name>/run    -> /run/libvirt        sockets, pid files
//   <dir>/<name>/lib    -> /var/lib/libvirt
//   <dir>/<name>/cache  -> /var/cache/libvirt
//   <dir>/<name>/log    -> /var/log/libvirt    libvirtd.log, qemu/<domain>.log
//   <dir>/<name>/mig    -> /run/escdr/migrate  the migration socket directory
//
// qemu.conf runs QEMU as root with no security driver, no dynamic ownership
// and no cgroup controllers; libvirtd.conf gives the host a distinct
// host_uuid (from `index`; libvirt refuses to migrate between equal ones).
// Only the top-level files of /etc/libvirt are copied, never its qemu/,
// storage/ or network definitions: the real host's domains and networks
// must not appear in (or be autostarted by) a test host. Because the binds
// come from ordinary directories, everything stays visible from the root
// namespace under <dir>/<name>. Clients connect from the root namespace
// through uri(); a source daemon reaches another test host through its
// p2p_uri(), whose socket path is not shadowed in its namespace.
//
// The mount points (/run/libvirt, /var/lib/libvirt, /var/cache/libvirt,
// /var/log/libvirt and /run/escdr/migrate) are created in the root namespace
// when missing and left in place: they are empty directories there, and
// removing one would detach the binds of another test process's hosts.
//
// Ownership: the host owns both daemons and every QEMU they started. The
// destructor (or Stop()) destroys and undefines all domains of its libvirtd
// through the API, stops libvirtd and virtlogd by pid (SIGTERM, SIGKILL
// after a grace period), kills by pid any QEMU whose pid file is still there,
// and removes <dir>/<name>. Processes are only ever signalled by the pids
// their own pid files name, after checking the process name.
// Thread safety: the accessors are const and may be used from any thread;
// Stop() and the destructor from one.
//
// Note for users inside `namespace escdr`: this header declares the namespace
// escdr::testing, so write GoogleTest's namespace as ::testing there.
#ifndef ESCDR_TESTING_LIBVIRT_HOSTS_H_
#define ESCDR_TESTING_LIBVIRT_HOSTS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/libvirt/libvirt_host.h"

namespace escdr::testing {

// The directory inside each test host's namespace where migration sockets
// live: a migrate URI "unix:///run/escdr/migrate/NAME.sock" is
// LibvirtTestHost::mig_dir() + "/NAME.sock" seen from the root namespace.
inline constexpr const char* kLibvirtMigrateDir = "/run/escdr/migrate";

// "" when libvirt test hosts can run here; else why not (for GTEST_SKIP):
// not root, libvirtd, virtlogd, unshare, nsenter or qemu-system-x86_64
// missing, or no libvirt-qemu user and group (Debian's libvirtd refuses to
// start its QEMU driver without them, even when qemu.conf says user = "root";
// Debian's libvirt-daemon-system creates them, libvirt-daemon does not).
std::string LibvirtAvailable();

// A libvirt domain of escdr's test guest (docs/test-guest.md).
struct LibvirtGuestOptions {
  std::string name = "escdr-lv-guest";
  std::uint64_t memory_mib = 256;
  std::uint32_t vcpus = 1;
  std::string machine = "pc";  // libvirt expands it, e.g. to "pc-i440fx-7.2"
  // "" = qemu-system-x86_64 from $PATH.
  std::string emulator;
  // The libosinfo id in the domain's metadata; "" for none. The test guest
  // runs Debian 12's kernel, so escdr's tests give it the kind debian 12.
  std::string os_id = "http://debian.org/debian/12";
  bool kaslr = false;        // false adds "nokaslr", as TestGuest does
  std::string extra_append;  // appended to the kernel command line
  std::string guest_dir;     // as GuestOptions::guest_dir ("" = the usual search)
};

// The domain XML: <domain type='qemu'> (TCG) booting the test guest's kernel
// and initrd with "console=ttyS0 quiet [nokaslr]", the first serial port to
// the per-host file /var/log/libvirt/qemu/<name>-serial.log (append='on',
// so a guest that comes back to a host keeps its earlier lines), no disk, no
// network, <memballoon model='none'/>. Builds the guest first when needed
// (EnsureGuestBuilt). Note: unlike TestGuest, the RAM is not padded by 8 KiB
// (libvirt rounds memory to whole MiB), so QEMU 7.2's TCG issue of
// docs/reliability.md §3 applies to guests that keep writing.
Result<std::string> TestGuestDomainXml(const LibvirtGuestOptions& options = {});

class LibvirtTestHost {
 public:
  // Starts host `name` in <dir>/<name> (created; `dir` must exist and be
  // short enough for the socket paths below it, e.g. a TempDir under /tmp).
  // `index` (1..255) picks the host_uuid. Returns once libvirtd answers on
  // its socket. Errors carry the start log and libvirtd's log; whatever was
  // started is stopped again.
  static Result<std::unique_ptr<LibvirtTestHost>> Start(const std::string& dir,
                                                        const std::string& name, int index);

  ~LibvirtTestHost();
  LibvirtTestHost(const LibvirtTestHost&) = delete;
  LibvirtTestHost& operator=(const LibvirtTestHost&) = delete;

  const std::string& name() const { return name_; }
  // <dir>/<name>.
  const std::string& dir() const { return dir_; }
  // "qemu:///system?socket=<dir>/<name>/run/libvirt-sock", for clients.
  std::string uri() const;
  // "qemu+unix:///system?socket=<dir>/<name>/run/libvirt-sock": this host as
  // a peer-to-peer migration destination.
  std::string p2p_uri() const;
  pid_t libvirtd_pid() const { return libvirtd_pid_; }
  pid_t virtlogd_pid() const { return virtlogd_pid_; }
  // {"nsenter", "-t", <virtlogd pid>, "-m", "--"}: prefix an argv with it to
  // run a program inside this host's mount namespace (e.g. an escdr agent
  // that must see the host's /run/escdr/migrate).
  std::vector<std::string> NsEnterPrefix() const;
  // Root-namespace path of the host's /run/escdr/migrate.
  std::string mig_dir() const { return dir_ + "/mig"; }
  // Root-namespace path of the host's /var/log/libvirt/qemu/<domain>-serial.log
  // (the serial console of TestGuestDomainXml's domains on this host).
  std::string SerialLogPath(const std::string& domain) const;
  // The last lines of libvirtd's log and of QEMU's log of `domain` (if
  // given), for failure messages.
  std::string DiagnosticTail(const std::string& domain = "") const;

  // A new client connection (libvirt::LibvirtHost::Open(uri())).
  Result<std::unique_ptr<libvirt::LibvirtHost>> Connect() const;

  // Stops everything and removes the directory now (the destructor does it
  // otherwise). Reports the first problem but always does every step.
  Status Stop();

 private:
  LibvirtTestHost(std::string name, std::string dir)
      : name_(std::move(name)), dir_(std::move(dir)) {}
  Status Launch(int index);

  std::string name_;
  std::string dir_;
  pid_t libvirtd_pid_ = 0;
  pid_t virtlogd_pid_ = 0;
  bool stopped_ = false;
};

}  // namespace escdr::testing

#endif  // ESCDR_TESTING_LIBVIRT_HOSTS_H_
