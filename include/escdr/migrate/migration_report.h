// MigrationReport: the figures of one ESCDR migration, defined once.
//
// Both sessions fill one (SourceSession::Run, DestinationSession::Run). Each
// side measures its own figures and learns the peer's from the End frame
// (source -> destination) or the Result frame (destination -> source), so
// after a successful migration both reports hold every field; the only
// side-specific fields are the wire byte counts and the times, marked below.
// The agent stores it in the inventory's migration log, the CLI prints it,
// and the simulator produces the same struct, so measured and simulated
// migrations compare field by field (STYLE §6.13).
//
// Each field says where its count starts and ends. "The stream" is the byte
// sequence the source QEMU wrote on its migration socket, from its first byte
// to its end of file.
//
// Thread safety: a plain value.
#ifndef ESCDR_MIGRATE_MIGRATION_REPORT_H_
#define ESCDR_MIGRATE_MIGRATION_REPORT_H_

#include <chrono>
#include <cstdint>
#include <string>

#include "escdr/page/page.h"

namespace escdr {

struct MigrationReport {
  // ---- the stream ----
  // Bytes the source QEMU wrote: its whole stream (header to vmdesc).
  std::uint64_t stream_bytes = 0;
  // Bytes the destination session wrote to the destination QEMU; equal to
  // stream_bytes after a successful migration (the byte-exact invariant).
  std::uint64_t rebuilt_bytes = 0;
  // PAGE records (full 4096-byte pages) in the stream, all rounds.
  std::uint64_t page_records = 0;
  // ZERO records in the stream; forwarded as they are (QEMU's own 1-byte encoding).
  std::uint64_t zero_records = 0;

  // ---- elision (decided by the source) ----
  // PAGE payloads replaced by a reference because their (block, offset) holds
  // that content in the catalog (static by position).
  std::uint64_t pages_by_position = 0;
  // PAGE payloads replaced by a reference because their content is catalog
  // content, found elsewhere than at their position (e.g. under KASLR).
  std::uint64_t pages_by_content = 0;
  // Catalog pages the donor had that were sent in full anyway because the
  // source's window of unacknowledged references was full.
  std::uint64_t pages_window_full = 0;

  // ---- the wire codec (protocol version 4) ----
  // PAGE payloads sent as a Dup entry (in-migration dedup): their bytes were
  // sent earlier in this migration and the destination copied them from its
  // history. Counted by each side for itself.
  std::uint64_t pages_deduplicated = 0;
  // The source's codec, a wire::Codec value (0: none, also for version 3),
  // and its level (zstd); CodecLabel() names them ("zstd:1").
  std::uint8_t codec = 0;
  std::int32_t codec_level = 0;
  // Source only: bytes of the frames handed to the compressor, and the bytes
  // written for them (Packed frames, or the frames where packing did not
  // make them smaller); the compression ratio of what still travels.
  std::uint64_t codec_frame_bytes = 0;
  std::uint64_t codec_wire_bytes = 0;
  // CPU time spent compressing (source) or decompressing (destination).
  std::chrono::microseconds codec_cpu_time{0};
  // Source only: time the writers waited for the wire-side rate cap.
  std::chrono::microseconds wire_pacing_time{0};

  // ---- the destination's copy ----
  // References written from a verified donor copy.
  std::uint64_t pages_from_donor = 0;
  // References whose donor copy did not hash to the catalog entry (the donor
  // changed the page after the scan) and were fetched from the source.
  std::uint64_t fallbacks = 0;

  // ---- availability (the destination's scan) ----
  std::uint32_t catalog_entries = 0;     // N, from Prepare (0: no catalog)
  std::uint32_t available_entries = 0;   // entries the donor offered
  std::uint64_t donor_pages_scanned = 0;
  std::chrono::microseconds scan_time{0};

  // ---- the network (this side only) ----
  // All frames this side wrote to / read from the peer connection, headers
  // included, handshake to last frame. The migration's network cost is the
  // source's sent + received.
  std::uint64_t wire_bytes_sent = 0;
  std::uint64_t wire_bytes_received = 0;
  // Return-path bytes (destination QEMU -> source QEMU), counted where they
  // are written: to the source QEMU (source), read from the destination QEMU
  // (destination, which tells the source in Result).
  std::uint64_t return_path_bytes = 0;

  // ---- time (this side's monotonic clock) ----
  // From the start of Run() to its successful end: on the source the receipt
  // of Result, on the destination the sending of Result.
  std::chrono::microseconds total_time{0};
  // Source only (0 on the destination, and when not measured): from the
  // source session's parse of the ram END section header (QEMU writes it
  // after stopping the VM) to the source session's write of the destination
  // QEMU's SHUT message to the source QEMU (the destination has loaded
  // everything), or to the receipt of Result when no SHUT comes (return-path
  // off). QEMU's own query-migrate "downtime" is the VM-level figure.
  std::chrono::microseconds downtime{0};
  bool downtime_measured = false;

  // ---- flow control (source only; 0 on the destination) ----
  // The most stream bytes the source had read from its QEMU but the
  // destination had not yet reported written to its QEMU (wire-protocol §6,
  // the stream budget), sampled after every read. At most
  // SourceOptions::max_stream_in_flight when that is set.
  std::uint64_t max_stream_in_flight = 0;
  // Times the source stopped reading its QEMU because the budget was used
  // up, and how long it waited in total.
  std::uint64_t budget_waits = 0;
  std::chrono::microseconds budget_wait_time{0};

  // Payload bytes that did not cross the network.
  std::uint64_t bytes_saved_by_position() const { return pages_by_position * kPageSize; }
  std::uint64_t bytes_saved_by_content() const { return pages_by_content * kPageSize; }
  std::uint64_t pages_elided() const { return pages_by_position + pages_by_content; }
  // "none", "lz4", "zstd:1".
  std::string CodecLabel() const;

  // One line for logs: "stream 1.0 GiB, wire 120.3 MiB (11.7%), elided 230000
  // pages (position 200000, content 30000), fallbacks 0, ...".
  std::string Summary() const;
};

}  // namespace escdr

#endif  // ESCDR_MIGRATE_MIGRATION_REPORT_H_
