#include "escdr/qemu/direct_migration.h"

#include <cstdlib>
#include <map>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "escdr/sys/clock.h"

namespace escdr {
namespace {

using std::chrono::milliseconds;

// The TCP port a `-incoming defer` QEMU listens on after migrate-incoming
// tcp:127.0.0.1:0: query-migrate's socket-address. QEMU 7.2 lists the
// listening sockets there while the incoming state is still "none", when
// the reply has no "status" (so the raw reply, not QueryMigrate).
Result<std::uint16_t> ListeningPort(QmpClient& qmp) {
  ESCDR_ASSIGN_OR_RETURN(nlohmann::json reply, qmp.Execute("query-migrate"));
  const nlohmann::json list =
      reply.is_object() && reply.contains("socket-address") ? reply["socket-address"] : nlohmann::json();
  if (list.is_array()) {
    for (const nlohmann::json& a : list) {
      if (!a.is_object() || a.value("type", "") != "inet" || !a.contains("port")) continue;
      // QAPI's InetSocketAddress has the port as a string.
      const std::string port = a["port"].is_string() ? a["port"].get<std::string>()
                                                     : a["port"].dump();
      const unsigned long p = std::strtoul(port.c_str(), nullptr, 10);
      if (p > 0 && p < 65536) return static_cast<std::uint16_t>(p);
    }
  }
  return Err(Status::ProtocolError(fmt::format(
      "the destination QEMU {} reports no TCP listening address after migrate-incoming: {}", qmp.name(),
      reply.dump())));
}

}  // namespace

Result<DirectMigrationResult> MigrateDirect(QmpClient& source, LaunchSpec destination,
                                            const DirectMigrationOptions& options) {
  if (options.max_bandwidth == 0) {
    return Err(Status::InvalidArgument("direct migration: max_bandwidth must be > 0"));
  }
  // Checked with multifd off too: the parameter is set either way.
  if (options.multifd_channels < 1 || options.multifd_channels > 255) {
    return Err(Status::InvalidArgument(
        fmt::format("direct migration: multifd_channels {} is outside [1, 255]", options.multifd_channels)));
  }
  // Both ends must agree on these: a destination without multifd would read
  // a multifd channel's handshake as a second main stream.
  const std::map<std::string, bool> caps = {{"return-path", true}, {"multifd", options.multifd}};
  const nlohmann::json multifd_params = {{"multifd-channels", options.multifd_channels},
                                         {"multifd-compression", options.multifd_compression}};

  DirectMigrationResult out;
  destination.incoming = "defer";
  destination.start_paused = true;
  const auto t0 = MonotonicClock::now();
  ESCDR_ASSIGN_OR_RETURN(out.destination, QemuProcess::Start(destination, options.destination_options));
  QmpClient& dst = out.destination->qmp();
  // From here on a failure returns and `out.destination` stops that QEMU.
  ESCDR_RETURN_IF_ERROR(SetMigrationCapabilities(dst, caps));
  ESCDR_RETURN_IF_ERROR(SetMigrationParameters(dst, multifd_params));
  ESCDR_RETURN_IF_ERROR(MigrateIncoming(dst, "tcp:127.0.0.1:0"));
  ESCDR_ASSIGN_OR_RETURN(std::uint16_t port, ListeningPort(dst));
  std::string target = fmt::format("127.0.0.1:{}", port);
  if (options.route) {
    ESCDR_ASSIGN_OR_RETURN(target, options.route("127.0.0.1", port));
  }

  ESCDR_RETURN_IF_ERROR(SetMigrationCapabilities(source, caps));
  nlohmann::json params = multifd_params;
  params["max-bandwidth"] = options.max_bandwidth;
  ESCDR_RETURN_IF_ERROR(SetMigrationParameters(source, params));
  ESCDR_RETURN_IF_ERROR(Migrate(source, "tcp:" + target));

  // Once `migrate` was accepted, a failure below must not leave the source
  // migrating towards a destination that is about to be stopped.
  auto cancel = [&source](Status s) -> Status {
    (void)MigrateCancel(source);  // best effort: s is the error that matters
    return s;
  };
  // Until the outgoing migration has set its state, a source that was itself
  // the destination of an earlier migration reports that incoming one
  // ("completed", without RAM figures): wait for the outgoing one's figures.
  const Deadline until = Deadline::After(options.timeout);
  for (;;) {
    Result<MigrationInfo> info = WaitForMigration(source, options.timeout, milliseconds(10));
    if (!info.has_value()) return Err(cancel(info.error().WithContext("direct migration, source")));
    if (info->has_ram && info->total_time_ms > 0) {
      out.source = std::move(*info);
      break;
    }
    if (until.Expired()) {
      return Err(cancel(Status::Timeout(fmt::format(
          "direct migration: the source {} never reported its migration's figures", source.name()))));
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  Result<MigrationInfo> loaded = WaitForMigration(dst, options.timeout, milliseconds(10));
  if (!loaded.has_value()) return Err(loaded.error().WithContext("direct migration, destination"));
  out.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(MonotonicClock::now() - t0);
  return out;
}

}  // namespace escdr
