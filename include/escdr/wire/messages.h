// Payloads of the wire protocol's frames: one type per frame, each with an
// Encode() that returns the payload bytes and a Decode() that checks them.
//
// docs/wire-protocol.md §3 gives the byte layout of each; this header is its
// C++ mirror. Decode() treats its input as hostile: exact lengths, bounded
// strings and counts, reserved enum values rejected; every failure is a
// ProtocolError naming the frame and the field. Data and ReturnPath payloads
// are raw stream bytes and have no type here. Refs and PageResponse, the two
// frames of the hot path, are read through views that do not copy.
//
// Thread safety: plain values and pure functions.
#ifndef ESCDR_WIRE_MESSAGES_H_
#define ESCDR_WIRE_MESSAGES_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/wire/format.h"

namespace escdr::wire {

// §3.1
struct Hello {
  std::uint16_t version = kProtocolVersion;
  Role role = Role::kInvalid;

  std::vector<std::uint8_t> Encode() const;
  // Errors: ProtocolError for a wrong length, a wrong magic ("not an escdr
  // agent") or an invalid role. The version is not judged here (see
  // AcceptPeerVersion).
  static Result<Hello> Decode(std::span<const std::uint8_t> payload);
};

// §3.2
struct Prepare {
  std::uint64_t migration_id = 0;
  std::uint64_t catalog_checksum = 0;
  std::uint32_t catalog_entries = 0;  // <= kMaxCatalogEntries
  std::uint32_t window_pages = 0;     // <= kMaxWindowPages
  std::string vm_name;                // 1..kMaxVmNameLength bytes
  VmKind kind;                        // each field 1..kMaxKindFieldLength bytes
  // Version 4 (after the strings): the dedup history the destination must
  // keep, in pages (<= kMaxDedupPages; 0: the source sends no Dup frame),
  // and the codec of the source's Packed frames (a wire::Codec value, for
  // the destination's logs and checks; 0: none).
  std::uint32_t dedup_pages = 0;
  std::uint8_t codec = 0;

  // REQUIRES: the limits above hold (Validate()). Versions before 4 leave
  // out dedup_pages and codec.
  std::vector<std::uint8_t> Encode(std::uint16_t version = kProtocolVersion) const;
  static Result<Prepare> Decode(std::span<const std::uint8_t> payload,
                                std::uint16_t version = kProtocolVersion);
  // InvalidArgument naming the first field out of its limits.
  Status Validate() const;
};

// Bitmaps over catalog content indexes: bit i is byte i/8, bit i%8 (LSB first).
inline std::size_t BitmapBytes(std::uint32_t bits) { return (std::size_t{bits} + 7) / 8; }
inline bool BitmapTest(std::span<const std::uint8_t> bitmap, std::uint32_t i) {
  return (bitmap[i >> 3] >> (i & 7)) & 1;
}
inline void BitmapSet(std::span<std::uint8_t> bitmap, std::uint32_t i) {
  bitmap[i >> 3] = static_cast<std::uint8_t>(bitmap[i >> 3] | (1u << (i & 7)));
}
std::uint32_t BitmapPopcount(std::span<const std::uint8_t> bitmap);

// §3.3 (version 3): the destination's random per-migration key, under which
// the source tags the pages it references (§3.5, §6).
using DonorKey = std::array<std::uint8_t, kDonorKeySize>;
// §3.5 (version 3): the keyed tag of a referenced page.
using PageTag = std::array<std::uint8_t, kPageTagSize>;

// §3.3. The payload depends on the protocol version agreed in Hello: version
// 3 carries `key` between the fixed part and the bitmap, version 2 has no key.
struct Availability {
  std::uint32_t catalog_entries = 0;
  DonorKey key{};                    // version 3; all zero when decoded from version 2
  std::vector<std::uint8_t> bitmap;  // BitmapBytes(catalog_entries) bytes, raw

  std::uint32_t available_count() const { return BitmapPopcount(bitmap); }

  // Compresses the bitmap with zstd when it is larger than
  // kRawBitmapCompressThreshold and compression makes it smaller.
  // REQUIRES: bitmap.size() == BitmapBytes(catalog_entries), entries within
  // limits, version 2 or 3.
  std::vector<std::uint8_t> Encode(std::uint16_t version = kProtocolVersion) const;
  // Errors: ProtocolError (length, encoding, count, bits past N), Corruption
  // (a zstd frame that does not decode to exactly the bitmap size).
  static Result<Availability> Decode(std::span<const std::uint8_t> payload,
                                     std::uint16_t version = kProtocolVersion);
};

// §3.5. One reference: the optional folded record word, the content index
// and (version 3) the keyed tag of the source's page.
struct RefEntry {
  std::uint64_t record_word = 0;  // 0 = none, else flags == kPageContinueFlags
  std::uint32_t content_index = 0;
  PageTag tag{};                  // version 3 only
};
// Appends the fixed part of a Refs payload; entries follow with StoreRefEntry.
void AppendRefsHeader(std::vector<std::uint8_t>* out, std::uint64_t first_seq, std::uint32_t count);
// Writes RefEntrySize(version) bytes at `out`. REQUIRES: version 2 or 3.
void StoreRefEntry(std::uint8_t* out, const RefEntry& entry,
                   std::uint16_t version = kProtocolVersion);

// A checked view of a Refs payload (valid while the payload is).
class RefsView {
 public:
  // Checks the length (exactly kRefsFixedSize + count * RefEntrySize(version)),
  // 1 <= count <= kMaxRefsPerFrame, and every record word. Content indexes
  // and tags are checked by the session, which knows the catalog and the key.
  static Result<RefsView> Parse(std::span<const std::uint8_t> payload,
                                std::uint16_t version = kProtocolVersion);

  std::uint64_t first_seq() const { return first_seq_; }
  std::uint32_t count() const { return count_; }
  // REQUIRES: k < count(). The tag is all zero in version 2.
  RefEntry entry(std::uint32_t k) const;

 private:
  RefsView() = default;
  std::span<const std::uint8_t> entries_;
  std::uint64_t first_seq_ = 0;
  std::uint32_t count_ = 0;
  std::size_t entry_size_ = kRefEntrySize;
};

// §3.13 (version 4): one in-migration duplicate: the optional folded record
// word, then 4096 bytes the destination copies from its own rebuilt stream
// at `stream_offset`; `check` is the low 64 bits of the page's XXH3-128.
struct DupEntry {
  std::uint64_t record_word = 0;  // 0 = none, else flags == kPageContinueFlags
  std::uint64_t stream_offset = 0;
  std::uint64_t check = 0;
};
// Writes kDupEntrySize bytes at `out`.
void StoreDupEntry(std::uint8_t* out, const DupEntry& entry);

// A checked view of a Dup payload (valid while the payload is).
class DupView {
 public:
  // Checks the length (exactly kDupFixedSize + count * kDupEntrySize),
  // 1 <= count <= kMaxDupsPerFrame, and every record word. Offsets and
  // checks are the destination's to check against its history.
  static Result<DupView> Parse(std::span<const std::uint8_t> payload);
  std::uint32_t count() const { return count_; }
  // REQUIRES: k < count().
  DupEntry entry(std::uint32_t k) const;

 private:
  DupView() = default;
  std::span<const std::uint8_t> entries_;
  std::uint32_t count_ = 0;
};

// §3.6
struct PageRequest {
  std::uint64_t seq = 0;
  std::vector<std::uint8_t> Encode() const;
  static Result<PageRequest> Decode(std::span<const std::uint8_t> payload);
};
// PageResponse payload: seq + one page (`page` points to kPageSize bytes).
std::vector<std::uint8_t> EncodePageResponse(std::uint64_t seq, const std::uint8_t* page);
struct PageResponseView {
  std::uint64_t seq = 0;
  const std::uint8_t* page = nullptr;  // into the payload
  static Result<PageResponseView> Parse(std::span<const std::uint8_t> payload);
};

// §3.7. The payload depends on the protocol version the two sides agreed
// on: version 1 carries next_seq only (delivered_bytes reads as 0), version 2
// both fields.
struct Ack {
  std::uint64_t next_seq = 0;
  // Stream bytes the destination has written to its QEMU so far (version 2).
  std::uint64_t delivered_bytes = 0;

  // REQUIRES: version is 1 or 2.
  std::vector<std::uint8_t> Encode(std::uint16_t version = kProtocolVersion) const;
  // Errors: ProtocolError for a length other than the version's.
  static Result<Ack> Decode(std::span<const std::uint8_t> payload,
                            std::uint16_t version = kProtocolVersion);
};

// §3.9
struct EndSummary {
  std::uint64_t stream_bytes = 0;
  std::uint64_t refs = 0;
  std::uint64_t page_records = 0;
  std::uint64_t zero_records = 0;
  std::uint64_t pages_by_position = 0;
  std::uint64_t pages_by_content = 0;
  std::uint64_t pages_window_full = 0;

  std::vector<std::uint8_t> Encode() const;
  static Result<EndSummary> Decode(std::span<const std::uint8_t> payload);
};

// §3.10
struct DestinationResult {
  std::uint64_t rebuilt_bytes = 0;
  std::uint64_t pages_from_donor = 0;
  std::uint64_t fallbacks = 0;
  std::uint64_t return_path_bytes = 0;
  std::uint64_t donor_pages_scanned = 0;
  std::uint64_t scan_micros = 0;

  std::vector<std::uint8_t> Encode() const;
  static Result<DestinationResult> Decode(std::span<const std::uint8_t> payload);
};

// §3.11 Error: a Status as the peer will see it. Encode truncates the message
// to kMaxMessageLength bytes.
std::vector<std::uint8_t> EncodeError(const Status& status);
// The Status carried by an Error payload (code mapped back; an unknown code
// reads as Internal), or a ProtocolError if the payload is malformed.
Result<Status> DecodeError(std::span<const std::uint8_t> payload);

// §3.11 Abort: a reason, truncated to kMaxMessageLength bytes.
std::vector<std::uint8_t> EncodeAbort(std::string_view reason);
Result<std::string> DecodeAbort(std::span<const std::uint8_t> payload);

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_MESSAGES_H_
