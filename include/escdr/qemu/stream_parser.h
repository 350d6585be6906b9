// StreamParser: an incremental parser of the QEMU precopy migration stream, as
// QEMU 7.2 and QEMU 10.0 write it.
//
// Spec: docs/qemu-migration-stream.md (our summary, with what 10.0 changes)
// and the byte-level references it cites. The parser is a push parser: feed it the stream in
// chunks of any size, as they arrive from a socket or a file; it keeps only a
// bounded amount of state (at most one record, < 8 KiB) between calls.
//
// It understands the header, the configuration section, COMMAND records and
// the "ram" iterative section (START block list, PART and END records). After
// the ram END section's footer, the rest (device state, EOF, vmdesc) is opaque
// "tail" bytes: it holds no guest RAM in 7.2 or 10.0 precopy. QEMU 10.0's
// SWITCHOVER_START command (just before the ram END) is accepted and counted.
//
// Contract with the visitor (what the proxy relies on):
//   * Every input byte is reported exactly once, in stream order, either in an
//     OnBytes() call or as the `data` of an OnPage() call. Concatenating those
//     reproduces the input exactly.
//   * A PAGE record is reported as OnBytes(its header: be64 word [+ idstr]),
//     then OnPage(...) with its 4096-byte payload.
//   * A ZERO record is reported as OnBytes(header + fill byte), then OnZero().
//   * OnBlockList() comes after the START section's bytes have been reported.
//   * OnBytes spans follow the input chunks: a record's header may arrive in
//     several OnBytes calls, and bytes of several records in one. Everything
//     else (the sequence of OnPage, OnZero, OnBlockList and OnPhase calls, and
//     where they fall in the byte sequence) is the same for any chunking.
//   * A PAGE payload is a pointer into the caller's chunk when the chunk holds
//     all of it, and into a parser buffer (one copy) only when it straddles
//     chunks.
//   * Spans and pointers passed to the visitor are valid during the call only.
//   * A non-OK Status from the visitor stops the parser; Feed() returns it.
//
// Refused with NotSupported and a message naming the capability and the byte
// offset: XBZRLE, COMPRESS_PAGE and MULTIFD_FLUSH records (capabilities
// xbzrle, compress, multifd), POSTCOPY/PACKAGED commands (postcopy-ram,
// dirty-bitmaps), iterative sections other than "ram" (block migration, dirty
// bitmaps, VFIO), early-setup device sections (virtio-mem), and the
// x-ignore-shared and mapped-ram capabilities. Multifd without MULTIFD_FLUSH
// records (machine types <= 8.0) cannot be seen on the main channel, nor can
// migration mode cpr-transfer; the agent refuses them by checking the
// source's capabilities and parameters.
// Malformed input is a ProtocolError naming the byte offset and what was
// wrong; that includes a ZERO record with a fill byte other than 0 in a stream
// whose machine type is 8.2 or newer (its destination would refuse it). In
// older or unversioned machine types such a record is passed on, and OnZero
// reports its fill byte.
//
// Thread safety: none; one parser per stream, used by one thread.
#ifndef ESCDR_QEMU_STREAM_PARSER_H_
#define ESCDR_QEMU_STREAM_PARSER_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/image/memory_image.h"

namespace escdr {

// Where in the stream the parser is; reported through OnPhase().
enum class StreamPhase {
  kHeader,       // magic, version, configuration, commands
  kRamSetup,     // ram START: the block list
  kRamIterate,   // ram PART sections: the live pre-copy rounds
  kRamComplete,  // ram END section: the guest is stopped (downtime has begun)
  kTail,         // device state, EOF, vmdesc: opaque bytes
};

class StreamVisitor {
 public:
  virtual ~StreamVisitor() = default;

  // Bytes that are not a PAGE payload (headers, ZERO records, device state...).
  virtual Status OnBytes(std::span<const std::uint8_t> bytes) = 0;

  // The ram START block list, in stream order. Block indexes in OnPage and
  // OnZero refer to this list.
  virtual Status OnBlockList(const std::vector<RamBlockInfo>& blocks) {
    (void)blocks;
    return Status::OK();
  }

  // A PAGE record's payload for page `offset` (page-aligned, < block length)
  // of block `block`. `data` holds kPageSize bytes.
  virtual Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) = 0;

  // A ZERO record: page `offset` of `block` is kPageSize bytes of `fill`.
  virtual Status OnZero(std::uint32_t block, std::uint64_t offset, std::uint8_t fill) {
    (void)block, (void)offset, (void)fill;
    return Status::OK();
  }

  // The parser entered `phase`; called before the bytes of that phase.
  virtual Status OnPhase(StreamPhase phase) {
    (void)phase;
    return Status::OK();
  }
};

// Counters kept by the parser; all counts are records of the ram section.
struct StreamStats {
  std::uint64_t bytes = 0;         // stream bytes consumed so far
  std::uint64_t page_records = 0;  // PAGE records (full 4096-byte pages)
  std::uint64_t zero_records = 0;  // ZERO records
  std::uint64_t ram_sections = 0;  // START + PART + END sections seen
  std::uint64_t tail_bytes = 0;    // bytes after the ram END footer
  // SWITCHOVER_START commands (QEMU >= 10.0 with machine types >= 10.0: one,
  // right after the source VM stopped and before the ram END section).
  std::uint64_t switchover_starts = 0;
};

class StreamParser {
 public:
  // `visitor` must outlive the parser.
  explicit StreamParser(StreamVisitor* visitor);
  ~StreamParser();
  StreamParser(const StreamParser&) = delete;
  StreamParser& operator=(const StreamParser&) = delete;

  // Parses the next `chunk` of the stream. Returns the first error (the
  // parser's or the visitor's); after an error every later call fails too.
  Status Feed(std::span<const std::uint8_t> chunk);

  // Declares the end of the stream. Returns ProtocolError("truncated ...") if
  // the stream stopped before the ram END section and a complete EOF/vmdesc
  // trailer; OK otherwise.
  Status Finish();

  // True once the ram END section's footer has been parsed (all RAM is in).
  bool ram_complete() const;

  // The ram START block list, empty until it has been parsed.
  const std::vector<RamBlockInfo>& blocks() const;

  // The machine type named by the configuration section, as the source
  // resolved it ("pc-i440fx-10.0", "pc-q35-7.2"); empty until the section has
  // been parsed, and for a stream without one.
  const std::string& machine() const;

  const StreamStats& stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads the file at `path` in 1 MiB chunks and feeds it all to a parser with
// `visitor`, then Finish(). Errors name the file: NotFound/IOError if it
// cannot be opened or read, else the parser's or the visitor's error.
Status ParseStreamFile(const std::string& path, StreamVisitor* visitor);

}  // namespace escdr

#endif  // ESCDR_QEMU_STREAM_PARSER_H_
