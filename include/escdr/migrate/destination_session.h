// DestinationSession: the destination agent's half of an ESCDR migration.
//
// Accept() answers the source's Hello and reads its Prepare (which VM, which
// kind, which catalog). The agent then picks a donor and calls Offer(), which
// scans the donor's RAM and sends the Availability bitmap with a fresh random
// key (or offers nothing, or Reject()s the migration). Run() rebuilds the
// source QEMU's stream byte for byte into the destination QEMU's incoming
// socket: Data payloads as they are; each reference as its record word and a
// copy of the donor page whose keyed tag equals the one the source computed
// over its own page, or, if it does not (the donor changed the page, or
// crafted one that collides with the catalog hash), the page fetched from the
// source (PageRequest); each Dup entry (version 4) as its record word and
// the page copied from the stream it already rebuilt (a bounded history,
// checked against the source's key of the page); each Packed frame (version
// 4) as the frames it decodes to, after its declared size was checked
// against the cap. A version 2 source is offered nothing: it cannot tag. It relays the destination QEMU's
// return path back, acknowledges references, and ends after the source's End
// once the destination QEMU closed its socket (it consumed the stream):
// then it sends Result.
//
// On any error Run() sends Error (unless the source reported it), shuts the
// QEMU connection and the write side of the source's down, reads and
// discards what the source still sends for up to 2 s (so that the source
// reads the Error rather than a reset), and returns the error; the destination QEMU then sees a truncated
// stream, fails its load and exits, and the agent removes it. A damaged frame
// never reaches the QEMU: every frame is checked before it is used.
//
// Threads: Run() uses the calling thread for frames from the source and one
// more thread reading the destination QEMU. Cancel() may be called from any
// thread. Everything else: one thread.
// Ownership: the session owns both connections; `content` and `donor` passed
// to Offer() must outlive the session.
#ifndef ESCDR_MIGRATE_DESTINATION_SESSION_H_
#define ESCDR_MIGRATE_DESTINATION_SESSION_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "escdr/base/status.h"
#include "escdr/image/memory_image.h"
#include "escdr/migrate/donor_scan.h"
#include "escdr/migrate/migration_report.h"
#include "escdr/migrate/static_content.h"
#include "escdr/wire/connection.h"
#include "escdr/wire/messages.h"

namespace escdr {

struct DestinationOptions {
  // Output held back while a fallback page is outstanding (it must be
  // written in order). Exceeding it fails the migration (ResourceExhausted).
  // Default 64 MiB.
  std::size_t max_held_bytes = std::size_t{64} << 20;
  // A frame from the source must arrive at least this often, and each write
  // must finish within it. Default 30 s.
  std::chrono::milliseconds idle_timeout{30000};
  // A Keepalive is sent after this long without writing. Default 5 s.
  std::chrono::milliseconds keepalive_interval{5000};
  // After End, how long the destination QEMU may take to close its socket.
  // Default 60 s.
  std::chrono::milliseconds qemu_finish_timeout{60000};
  // The largest dedup history (protocol version 4) a source may ask for, in
  // pages; the destination keeps that many pages of the rebuilt stream. A
  // source that asks for more is refused (ResourceExhausted). Default
  // 65536 = 256 MiB.
  std::uint32_t max_dedup_pages = 65536;
  // Threads that decode the parts of a Packed frame (the receiving thread
  // and codec_threads - 1 workers). Default 2.
  int codec_threads = 2;
};

class DestinationSession {
 public:
  // Reads the source's Hello (answers Hello, or Error if the version is not
  // supported) and Prepare. Errors: VersionMismatch, ProtocolError,
  // Unavailable, Timeout.
  static Result<std::unique_ptr<DestinationSession>> Accept(std::unique_ptr<wire::Connection> peer,
                                                            const DestinationOptions& options = {});
  ~DestinationSession();
  DestinationSession(const DestinationSession&) = delete;
  DestinationSession& operator=(const DestinationSession&) = delete;

  // What the source announced: VM name, kind, catalog identity, window.
  const wire::Prepare& prepare() const;

  // Scans `donor` against `content` and sends the Availability. Both null:
  // offers nothing (every page will come in full). Errors:
  // FailedPrecondition, with nothing sent, if `content` is not the catalog
  // the source named (kind, checksum or entry count differ): the agent may
  // then Offer(nullptr, nullptr) or Reject(); transport errors.
  Status Offer(const StaticContent* content, const MemoryImage* donor);
  // As Offer(), with a scan the agent already made (it must be of `content`).
  Status OfferScanned(const StaticContent* content, const MemoryImage* donor,
                      DonorAvailability availability);
  // Refuses the migration: sends Error with `reason` and ends the connection
  // as after a failure (waits up to 2 s for the source to close).
  Status Reject(const Status& reason);

  // Rebuilds the stream into `qemu` (a connection to the destination QEMU's
  // incoming socket) until Result is sent, or the first error. Call once,
  // after Offer(). Errors: Corruption (damaged frame), ProtocolError (a frame
  // out of place, a bad reference, totals that do not match), Unavailable /
  // Timeout (source or QEMU gone), ResourceExhausted (max_held_bytes),
  // the source's Error, Aborted (Cancel or the source's Abort), Aborted if the
  // destination QEMU reported a failed load (return-path SHUT 1).
  Result<MigrationReport> Run(std::unique_ptr<wire::Connection> qemu);

  // Aborts: sends Abort if the connection is free and shuts both connections
  // down. Idempotent.
  void Cancel(const std::string& reason);

 private:
  class Impl;
  explicit DestinationSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace escdr

#endif  // ESCDR_MIGRATE_DESTINATION_SESSION_H_
