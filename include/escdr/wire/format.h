// The agent-to-agent wire format: constants, frame types and the frame header.
//
// This header mirrors docs/wire-protocol.md (the specification; read it
// first): every constant here has its section there. A frame is a 16-byte
// little-endian header {u16 type, u16 flags, u32 crc32c, u64 length} and
// `length` payload bytes. The CRC32C covers header bytes 0-3 and 8-15 and the
// payload. Frame types with bit 15 set are optional: a receiver that does not
// know them skips them; an unknown mandatory type is an error.
//
// Thread safety: constants and pure functions only.
#ifndef ESCDR_WIRE_FORMAT_H_
#define ESCDR_WIRE_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "escdr/base/status.h"

namespace escdr::wire {

// §3.1: "ESCDRWIR" as it appears on the wire (u64 little-endian).
inline constexpr std::uint64_t kHelloMagic = 0x5249575244435345ull;
// §7: the version this build speaks; it also accepts kProtocolVersion - 1.
// Version 2 added the Ack's delivered_bytes (§3.7) and the source's stream
// budget (§6); version 3 the donor key in Availability (§3.3) and a keyed
// page tag in every reference (§3.5, §6); version 4 the wire codec: the
// Prepare's codec fields (§3.2), Dup frames (in-migration dedup, §3.13) and
// Packed frames (compressed batches of frames, §3.14).
inline constexpr std::uint16_t kProtocolVersion = 4;

inline constexpr std::size_t kFrameHeaderSize = 16;
inline constexpr std::uint16_t kOptionalFrameBit = 0x8000;

// §3. Values are fixed by the specification; 0 is never valid on the wire.
enum class FrameType : std::uint16_t {
  kInvalid = 0x0000,
  kHello = 0x0001,
  kPrepare = 0x0002,
  kAvailability = 0x0003,
  kData = 0x0004,
  kRefs = 0x0005,
  kPageRequest = 0x0006,
  kPageResponse = 0x0007,
  kAck = 0x0008,
  kReturnPath = 0x0009,
  kEnd = 0x000A,
  kResult = 0x000B,
  kError = 0x000C,
  kAbort = 0x000D,
  kDup = 0x000E,     // version 4
  kPacked = 0x000F,  // version 4
  kKeepalive = 0x8001,
};

// §3.1 Hello.role.
enum class Role : std::uint16_t { kInvalid = 0, kSource = 1, kDestination = 2 };

// §8 limits.
inline constexpr std::size_t kHelloPayloadSize = 16;
inline constexpr std::size_t kMaxPreparePayload = 1024;
inline constexpr std::size_t kPrepareFixedSize = 24;
// §3.3: version 3 adds a 16-byte donor key after the version 2 fixed part.
inline constexpr std::size_t kDonorKeySize = 16;
inline constexpr std::size_t kAvailabilityFixedSizeV2 = 16;
inline constexpr std::size_t kAvailabilityFixedSize = kAvailabilityFixedSizeV2 + kDonorKeySize;
inline constexpr std::uint32_t kMaxCatalogEntries = 1u << 27;
inline constexpr std::size_t kMaxBitmapBytes = kMaxCatalogEntries / 8;  // 16 MiB
inline constexpr std::size_t kMaxAvailabilityPayload = kAvailabilityFixedSize + kMaxBitmapBytes;
inline constexpr std::size_t kRawBitmapCompressThreshold = 4096;
inline constexpr std::size_t kMaxDataPayload = 4u << 20;
inline constexpr std::size_t kDefaultDataFrameBytes = 1u << 20;
inline constexpr std::size_t kRefsFixedSize = 16;
// §3.5: version 3 entries carry a 16-byte page tag after the version 2 fields.
inline constexpr std::size_t kPageTagSize = 16;
inline constexpr std::size_t kRefEntrySizeV2 = 12;
inline constexpr std::size_t kRefEntrySize = kRefEntrySizeV2 + kPageTagSize;
inline constexpr std::size_t RefEntrySize(std::uint16_t version) {
  return version < 3 ? kRefEntrySizeV2 : kRefEntrySize;
}
inline constexpr std::uint32_t kMaxRefsPerFrame = 8192;
// §3.13 (version 4): Dup frames, {u32 count, u32 reserved} then entries
// {u64 record_word, u64 stream_offset, u64 check}.
inline constexpr std::size_t kDupFixedSize = 8;
inline constexpr std::size_t kDupEntrySize = 24;
inline constexpr std::uint32_t kMaxDupsPerFrame = 8192;
// §3.14 (version 4): Packed frames, {u8 codec, u8 parts, u16 reserved,
// u32 decoded_size}, `parts` u32 sizes, then the parts, each compressed on
// its own. The decoded batch is a sequence of whole Data, Refs and Dup
// frames of at most kMaxPackedDecoded bytes; part k decodes to
// PackedPartSize(decoded_size, parts, k) bytes.
inline constexpr std::size_t kPackedFixedSize = 8;
inline constexpr std::size_t kMaxPackedDecoded = 8u << 20;
inline constexpr std::size_t kMaxPackedParts = 128;
// The decoded bytes per part a source aims for (the last part is shorter).
inline constexpr std::size_t kPackedPartBytes = 64u << 10;
inline constexpr std::size_t PackedPartSize(std::size_t decoded, std::size_t parts,
                                            std::size_t k) {
  const std::size_t each = (decoded + parts - 1) / parts;
  const std::size_t start = each * k;
  return start >= decoded ? 0 : (decoded - start < each ? decoded - start : each);
}
inline constexpr std::size_t kMaxPackedPayload =
    kPackedFixedSize + 4 * kMaxPackedParts + kMaxPackedDecoded + (64u << 10);
// §3.2 (version 4): the source's dedup history, in pages, at most 1 GiB.
inline constexpr std::uint32_t kMaxDedupPages = 1u << 18;
inline constexpr std::size_t kPageResponsePayloadSize = 8 + 4096;
// §3.7: {next_seq, delivered_bytes}; version 1 had next_seq only.
inline constexpr std::size_t kAckPayloadSize = 16;
inline constexpr std::size_t kAckPayloadSizeV1 = 8;
inline constexpr std::size_t kMaxReturnPathPayload = 1u << 20;
inline constexpr std::size_t kEndPayloadSize = 56;
inline constexpr std::size_t kResultPayloadSize = 48;
inline constexpr std::size_t kMaxMessageLength = 1024;  // Error, Abort
inline constexpr std::size_t kMaxUnknownOptionalPayload = 1u << 20;
inline constexpr std::size_t kMaxVmNameLength = 255;
inline constexpr std::size_t kMaxKindFieldLength = 64;
inline constexpr std::uint32_t kMaxWindowPages = 1u << 20;
// §3.5: a folded record word carries exactly PAGE | CONTINUE.
inline constexpr std::uint64_t kRecordFlagsMask = 0xfff;
inline constexpr std::uint64_t kPageContinueFlags = 0x028;

// §3.11 error codes on the wire.
enum class WireErrorCode : std::uint16_t {
  kInvalid = 0,
  kProtocolError = 1,
  kVersionMismatch = 2,
  kCorruption = 3,
  kTimeout = 4,
  kUnavailable = 5,
  kResourceExhausted = 6,
  kIOError = 7,
  kFailedPrecondition = 8,
  kNotSupported = 9,
  kAborted = 10,
  kInternal = 11,
  kInvalidArgument = 12,
};
WireErrorCode ToWireErrorCode(StatusCode code);
// Unknown codes read as kInternal (§3.11).
StatusCode FromWireErrorCode(std::uint16_t code);

inline bool IsOptionalFrameType(std::uint16_t type) { return (type & kOptionalFrameBit) != 0; }
// True for the types this version defines (including Keepalive).
bool IsKnownFrameType(std::uint16_t type);
// "Data", "Refs", ... or "type 0x1234" for unknown values.
std::string FrameTypeName(std::uint16_t type);
inline std::string FrameTypeName(FrameType type) {
  return FrameTypeName(static_cast<std::uint16_t>(type));
}
// The largest payload a receiver accepts for `type` (§3 table and §8);
// kMaxUnknownOptionalPayload for unknown optional types, 0 for unknown
// mandatory ones (they are rejected before their length matters).
std::size_t MaxPayloadLength(std::uint16_t type);

struct FrameHeader {
  std::uint16_t type = 0;  // a FrameType value, or an unknown one
  std::uint16_t flags = 0;
  std::uint32_t crc = 0;
  std::uint64_t length = 0;
};

// Writes `header` into `out` (kFrameHeaderSize bytes), as is.
void EncodeFrameHeader(const FrameHeader& header, std::uint8_t* out);
// Reads the kFrameHeaderSize bytes at `in`; no checks (the reader checks).
FrameHeader DecodeFrameHeader(const std::uint8_t* in);
// The frame CRC of a header (its crc field is ignored) and `payload`.
std::uint32_t FrameCrc(const std::uint8_t* header, std::span<const std::uint8_t> payload);

// §7: the version a destination whose own version is `local` speaks with a
// source that announced `peer`: `peer` itself if it is `local` or `local-1`
// (and >= 1). VersionMismatch ("too new" / "too old") otherwise.
Result<std::uint16_t> AcceptPeerVersion(std::uint16_t peer, std::uint16_t local = kProtocolVersion);

}  // namespace escdr::wire

#endif  // ESCDR_WIRE_FORMAT_H_
