// Direct migration: one QEMU migrating straight to another QEMU over TCP,
// with no escdr agent in the path. This is the baseline escdr compares itself
// with: migration_bench's `direct` and `direct-zstd` paths and the
// "QEMU multifd+zstd" column of `escdr demo` both run it through here, so the
// two measure the same thing.
//
// MigrateDirect() starts the destination QEMU from a LaunchSpec, paused and
// waiting (`-S -incoming defer`), gives both QEMUs the same capabilities and
// parameters (return-path; multifd on or off, its channel count and
// compression; the source's max-bandwidth), lets the destination listen on
// tcp:127.0.0.1:0 (the kernel picks the port, QEMU reports it in
// query-migrate's socket-address, so no port can be taken in between),
// migrates the source to the address the caller's `route` returns (the
// destination itself, or a relay in front of it that limits or counts
// bytes), and waits until both ends report the migration completed.
//
// Capabilities and parameters are set explicitly on every call, so one source
// QEMU can migrate with and without multifd in turn.
//
// Afterwards the destination is loaded and still paused (the caller compares
// RAM, then `cont`s it) and the source is in run state postmigrate. On any
// error an outgoing migration still running is cancelled (the source keeps
// running), and the destination QEMU is stopped, with its RAM file removed
// when destination_options.remove_ram_file says so.
//
// Thread safety: one call at a time per source QEMU.
#ifndef ESCDR_QEMU_DIRECT_MIGRATION_H_
#define ESCDR_QEMU_DIRECT_MIGRATION_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "escdr/base/status.h"
#include "escdr/qemu/launch_spec.h"
#include "escdr/qemu/launcher.h"
#include "escdr/qemu/qmp.h"
#include "escdr/qemu/qmp_commands.h"

namespace escdr {

struct DirectMigrationOptions {
  // QEMU max-bandwidth of the source, bytes/s (default: QEMU's own, 128
  // MiB/s). Must be > 0. QEMU 7.2 charges it with multifd pages before
  // compression; to cap what goes over the wire instead (as `escdr migrate
  // --max-bandwidth` caps the agents' connection), set it high (64 GiB/s,
  // which QEMU never reaches) and pace a relay in `route`.
  std::uint64_t max_bandwidth = 134217728;
  // QEMU's multifd capability: pages go over multifd_channels extra TCP
  // connections, each compressed with multifd_compression ("none", "zlib" or
  // "zstd", at QEMU's default level). Off: one connection, pages as they are.
  bool multifd = false;
  std::uint32_t multifd_channels = 4;
  std::string multifd_compression = "none";
  // Until both ends report completed (or the source fails).
  std::chrono::milliseconds timeout{600000};
  // Given the address the destination listens on ("127.0.0.1", port), returns
  // the "host:port" the source is to connect to. Unset: the destination's
  // own address. A relay started here must outlive the call.
  std::function<Result<std::string>(const std::string& host, std::uint16_t port)> route;
  // How the destination QEMU process is started and stopped.
  QemuProcessOptions destination_options;
};

struct DirectMigrationResult {
  // Loaded and paused; the caller owns it (and, with remove_ram_file, its RAM).
  std::unique_ptr<QemuProcess> destination;
  // The source's final query-migrate: total-time, downtime, ram.* (under
  // multifd QEMU 7.2 counts the uncompressed page bytes in ram.transferred
  // and ram.multifd-bytes, not what went over the sockets).
  MigrationInfo source;
  // From starting the destination QEMU to the destination reporting
  // completed (everything loaded).
  std::chrono::microseconds elapsed{0};
};

// Migrates the QEMU behind `source` (running or paused, no migration in
// progress) to a new QEMU started from `destination` (its incoming and
// start_paused fields are overridden: -S -incoming defer). Errors: those of
// QemuProcess::Start and the QMP commands; InvalidArgument for bad options;
// ProtocolError if the destination reports no TCP listening address;
// Aborted if either end reports the migration failed; Timeout.
Result<DirectMigrationResult> MigrateDirect(QmpClient& source, LaunchSpec destination,
                                            const DirectMigrationOptions& options);

}  // namespace escdr

#endif  // ESCDR_QEMU_DIRECT_MIGRATION_H_
