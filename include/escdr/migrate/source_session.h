// SourceSession: the source agent's half of an ESCDR migration.
//
// It sits between the source QEMU's migration socket and the destination
// agent (docs/wire-protocol.md). Connect() performs the handshake (Hello,
// Prepare; the destination answers Hello and Availability). Run() then relays
// the source QEMU's stream: it parses it (StreamParser), forwards every byte
// in Data frames except the payloads of PAGE records whose hash is catalog
// content the destination offered, which become references in Refs frames at
// the same place in the byte sequence, each with a tag of the page under the
// destination's key (wire-protocol §6); and it relays the return path
// (ReturnPath frames) to the source QEMU, answers PageRequests from its
// window of unacknowledged payloads, and ends when the destination sends
// Result.
//
// Typical use by the agent:
//   auto s = SourceSession::Connect(ConnectTcp(dest...), &catalog, params, options);
//   ... enable return-path, QMP migrate "unix:<sock>", accept the connection ...
//   auto report = (*s)->Run(WrapSocket(accepted, "unix <sock>"));
// On any error Run() shuts the QEMU connection down, so the source QEMU fails
// the migration and keeps running the VM, sends Error to the destination and
// lets it read that before closing (up to 2 s, wire-protocol §9); the agent should also
// migrate_cancel. On success the source QEMU closed its socket first (with
// return-path, after the destination loaded everything).
//
// Threads: Run() uses the calling thread for the forward path and one more
// thread for frames from the destination. Cancel() may be called from any
// thread, before or during Run(). Everything else: one thread.
// Ownership: the session owns both connections; `content` must outlive it.
#ifndef ESCDR_MIGRATE_SOURCE_SESSION_H_
#define ESCDR_MIGRATE_SOURCE_SESSION_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/migrate/migration_report.h"
#include "escdr/migrate/static_content.h"
#include "escdr/wire/codec.h"
#include "escdr/wire/connection.h"

namespace escdr {

struct SourceOptions {
  // Unacknowledged references the source keeps payloads for (4 KiB each).
  // Default 16384 = 64 MiB. When full, catalog pages are sent in full
  // (counted in pages_window_full) rather than blocking the stream. 0 turns
  // elision off.
  std::uint32_t window_pages = 16384;
  // Largest Data frame payload sent (<= wire::kMaxDataPayload). Default 1 MiB.
  std::size_t max_data_frame = std::size_t{1} << 20;
  // Bytes read from the source QEMU per read. Default 256 KiB.
  std::size_t qemu_read_chunk = std::size_t{256} << 10;
  // The stream budget (wire-protocol §6): the most stream bytes read from the
  // source QEMU that the destination has not yet reported written to its
  // QEMU. While a further read could exceed it, the source stops reading its
  // QEMU (it keeps answering the destination), so QEMU's own socket blocks
  // and QEMU sees the end-to-end rate, and the stream left to load when the
  // VM stops is at most this much. Default 8 MiB: 67 ms at 125 MB/s, enough
  // to keep a path with up to ~60 ms of round trip full at that rate. 0 = no
  // limit (the behaviour of protocol version 1). Otherwise at least
  // max(2 * qemu_read_chunk, 64 KiB).
  std::uint64_t max_stream_in_flight = std::uint64_t{8} << 20;
  // A frame from the destination must arrive at least this often, each
  // write must finish within it, and while the budget is used up the
  // destination must report progress within it. Default 30 s.
  std::chrono::milliseconds idle_timeout{30000};
  // How long Connect() waits for Availability (the destination scans its
  // donor first). Default 300 s.
  std::chrono::milliseconds prepare_timeout{300000};
  // A Keepalive is sent after this long without writing. Default 5 s.
  std::chrono::milliseconds keepalive_interval{5000};

  // ---- the wire codec (protocol version 4, wire-protocol §3.13, §3.14) ----
  // The version announced in Hello: kProtocolVersion, or 3 to speak to a
  // version 3 destination (no codec: the three settings below are ignored).
  std::uint16_t protocol_version = wire::kProtocolVersion;
  // Compression of the frames sent for each read from the source QEMU.
  wire::CodecSpec codec;
  // Threads that compress (1: the forwarding thread itself).
  int codec_threads = 2;
  // The in-migration dedup history, in pages, on both sides (each side keeps
  // this many pages of memory): a page whose bytes were sent within the last
  // dedup_pages * 4 KiB of the stream travels as a Dup entry. Default 4096
  // = 16 MiB. 0 turns dedup off.
  std::uint32_t dedup_pages = 4096;
  // Bytes per second on the connection to the destination, all frames
  // counted (the wire-side rate cap, wire-protocol §6); 0 = no limit.
  std::uint64_t wire_rate = 0;
};

// What the source announces in Prepare besides the catalog.
struct SourceParams {
  std::string vm_name;         // 1..255 bytes
  VmKind kind;                 // the VM's kind (the catalog's, if there is one)
  std::uint64_t migration_id = 0;  // 0: a random one is chosen
};

class SourceSession {
 public:
  // Sends Hello and Prepare on `peer` and waits for the destination's Hello
  // and Availability. `content` may be null (nothing will be elided).
  // Errors: VersionMismatch / ProtocolError (the peer's answer), the peer's
  // Error, Unavailable, Timeout; InvalidArgument for bad params or options.
  static Result<std::unique_ptr<SourceSession>> Connect(std::unique_ptr<wire::Connection> peer,
                                                        const StaticContent* content,
                                                        const SourceParams& params,
                                                        const SourceOptions& options = {});
  ~SourceSession();
  SourceSession(const SourceSession&) = delete;
  SourceSession& operator=(const SourceSession&) = delete;

  std::uint64_t migration_id() const;
  // Content entries the destination's donor offered.
  std::uint32_t available_entries() const;

  // Relays the stream of the source QEMU connected on `qemu` until the
  // destination's Result (success) or the first error. Call once.
  // Errors: ProtocolError / NotSupported (the QEMU stream, or the peer),
  // Corruption (a damaged frame from the peer), Unavailable / Timeout (peer or
  // QEMU gone), the destination's Error (its code, message "destination
  // reported: ..."), Aborted (Cancel or the peer's Abort).
  Result<MigrationReport> Run(std::unique_ptr<wire::Connection> qemu);

  // Aborts the migration: sends Abort if the connection is free, shuts both
  // connections down; Run() then returns Aborted. Idempotent.
  void Cancel(const std::string& reason);

 private:
  class Impl;
  explicit SourceSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace escdr

#endif  // ESCDR_MIGRATE_SOURCE_SESSION_H_
