// TestGuest: a real QEMU guest (escdr's test guest) for integration tests.
//
// Boot() starts the guest built by tools/build-guest.sh (the Debian kernel
// plus a busybox initramfs; docs/test-guest.md) under TCG, with its RAM in a
// share=on file, and returns once the guest's serial counter has reached
// GuestOptions::settle_counter (2 by default: the guest finished booting and
// sits idle, printing "escdr-counter N" every second). Everything lives in a
// fresh temporary directory (RAM file, QMP socket, serial log, QEMU log),
// under /dev/shm by default so guest RAM stays in memory.
//
// Where the guest comes from, first match wins: GuestOptions::guest_dir;
// $ESCDR_GUEST_DIR; "<source>/build/guest", where <source> is
// GuestOptions::source_dir, else $ESCDR_SOURCE_DIR, else this checkout. A
// missing or outdated guest is (re)built with tools/build-guest.sh first.
//
// Ownership: a TestGuest owns its QEMU process and its directory; the
// destructor stops QEMU (QMP quit, then SIGKILL) and removes every file.
// Thread safety: as QemuProcess; qmp() may be used from any thread.
//
// Note for users inside `namespace escdr`: this header declares the namespace
// escdr::testing, so write GoogleTest's namespace as ::testing there.
#ifndef ESCDR_TESTING_TEST_GUEST_H_
#define ESCDR_TESTING_TEST_GUEST_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/qemu/launcher.h"
#include "escdr/qemu/qmp.h"
#include "escdr/qemu/qmp_commands.h"
#include "escdr/sys/temp_dir.h"

namespace escdr::testing {

struct GuestOptions {
  std::uint64_t memory_mib = 256;
  bool kaslr = false;            // false adds "nokaslr" to the kernel command line
  std::string machine = "pc";
  std::string extra_append;      // appended to the kernel command line
  std::uint32_t vcpus = 1;
  std::uint64_t dirty_mib = 0;   // escdr.dirty=<MiB>: keep rewriting that much RAM
  std::optional<std::uint64_t> seed;  // escdr.seed=<n>: 256 KiB of seed-specific data
  std::string name;              // QEMU -name; default "escdr-test-guest"

  std::string guest_dir;         // see the search order above
  std::string source_dir;
  std::string work_parent = "/dev/shm";  // parent of the temporary directory
  std::uint64_t settle_counter = 2;      // Boot() returns once the counter reaches it
  // Generous: a 256 MiB guest reaches its first counter in ~9 s alone on an
  // idle 2-core machine, but took ~75 s when 4 booted at once on a loaded one.
  std::chrono::milliseconds boot_timeout{300000};
  std::vector<std::string> extra_qemu_args;
  // The QEMU to run: "" = the host's qemu-system-x86_64; else a program or a
  // tree of tools/install-qemu.sh (see Qemu10Dir()), as `escdr agent --qemu`.
  std::string qemu;
};

// The QEMU 10.0 tree of tools/install-qemu.sh ($ESCDR_QEMU10_DIR, default
// /var/lib/escdr/qemu-10.0), or "" if it is not there.
std::string Qemu10Dir();

// The guest directory (holding vmlinuz, initrd.img, VERSION) per the search
// order above, built or refreshed with tools/build-guest.sh.
Result<std::string> EnsureGuestBuilt(const GuestOptions& options = {});

// A real distribution guest of tools/build-distro-guest.sh (docs/distro-guests.md):
// its raw disk image with the distribution and its services, the image's own
// kernel and initrd, and the kernel command line to boot them with.
struct DistroGuest {
  std::string name;     // "debian-12", "debian-13"
  std::string dir;
  std::string disk;     // dir/disk.img (raw; VMs use qcow2 overlays of it)
  std::string kernel;   // dir/vmlinuz
  std::string initrd;   // dir/initrd.img
  std::string cmdline;  // dir/cmdline
};

// The distribution guest `name` under $ESCDR_DISTRO_GUEST_DIR (default
// /var/lib/escdr/guests), built first by tools/build-distro-guest.sh when it
// is missing or its recipe changed (about two minutes; needs mmdebstrap and
// Debian's mirrors). Errors carry the build log's tail.
Result<DistroGuest> EnsureDistroGuest(const std::string& name);

class TestGuest {
 public:
  // Boots one guest and waits until it has settled. Errors name the guest and
  // carry the tail of its serial log and QEMU's stderr.
  static Result<std::unique_ptr<TestGuest>> Boot(const GuestOptions& options = {});

  // Boots all guests at once (they boot in parallel) and waits for each.
  // On any failure the guests already started are cleaned up.
  static Result<std::vector<std::unique_ptr<TestGuest>>> BootMany(
      const std::vector<GuestOptions>& options);
  // `count` guests from `base`, named "<base.name or escdr-test-guest>-<i>";
  // if base.seed is set, guest i gets seed base.seed + i.
  static Result<std::vector<std::unique_ptr<TestGuest>>> BootMany(const GuestOptions& base,
                                                                  int count);

  ~TestGuest();
  TestGuest(const TestGuest&) = delete;
  TestGuest& operator=(const TestGuest&) = delete;

  const std::string& ram_path() const { return process_->spec().ram_path; }
  const std::string& serial_log_path() const { return process_->spec().serial_log; }
  const std::string& dir() const { return dir_.path(); }
  const LaunchSpec& spec() const { return process_->spec(); }
  QmpClient& qmp() { return process_->qmp(); }
  QemuProcess& process() { return *process_; }
  pid_t pid() const { return process_->pid(); }
  // The kernel version of the guest (its VERSION file).
  const std::string& kernel_version() const { return kernel_version_; }
  // Seconds from QEMU's start until the first counter line was seen (polled
  // every 20 ms), and until Boot() returned.
  double first_counter_seconds() const { return first_counter_seconds_; }
  double boot_seconds() const { return boot_seconds_; }

  // The last counter the guest printed; 0 before the first one.
  Result<std::uint64_t> LastCounter() const;
  // Waits until the counter is >= n; returns the counter seen. Timeout or
  // Aborted (QEMU exited), with the serial log tail.
  Result<std::uint64_t> WaitForCounter(std::uint64_t n, std::chrono::milliseconds timeout);

  // QMP stop / cont.
  Status Pause();
  Status Resume();

  // Saves the guest's migration stream to `path` (migrate "exec:cat > path")
  // and waits until it completed. Afterwards the guest is in run state
  // "postmigrate" (stopped); Resume() runs it again. Returns QEMU's figures.
  Result<MigrationInfo> SaveStream(const std::string& path,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(300));

  // Stops QEMU and removes the directory now (the destructor does it otherwise).
  Status Shutdown();

  // The serial log's last lines plus QEMU's stderr, for failure messages.
  std::string DiagnosticTail() const;

 private:
  TestGuest() = default;
  static Result<std::unique_ptr<TestGuest>> Launch(const GuestOptions& options,
                                                   const std::string& guest_dir);
  // Waits until every guest's counter reached its settle_counter, polling all
  // of them together so each first-counter time is seen promptly.
  static Status WaitAllSettled(const std::vector<TestGuest*>& guests);
  // Aborted if QEMU has exited, else OK.
  Status CheckAlive();

  GuestOptions options_;
  TempDir dir_;
  std::unique_ptr<QemuProcess> process_;
  std::string kernel_version_;
  std::chrono::steady_clock::time_point started_;
  double first_counter_seconds_ = 0;
  double boot_seconds_ = 0;
};

}  // namespace escdr::testing

#endif  // ESCDR_TESTING_TEST_GUEST_H_
