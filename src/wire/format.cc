#include "escdr/wire/format.h"

#include <fmt/format.h>

#include "escdr/wire/coding.h"
#include "escdr/wire/crc32c.h"

namespace escdr::wire {

bool IsKnownFrameType(std::uint16_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello:
    case FrameType::kPrepare:
    case FrameType::kAvailability:
    case FrameType::kData:
    case FrameType::kRefs:
    case FrameType::kPageRequest:
    case FrameType::kPageResponse:
    case FrameType::kAck:
    case FrameType::kReturnPath:
    case FrameType::kEnd:
    case FrameType::kResult:
    case FrameType::kError:
    case FrameType::kAbort:
    case FrameType::kDup:
    case FrameType::kPacked:
    case FrameType::kKeepalive:
      return true;
    case FrameType::kInvalid:
      return false;
  }
  return false;
}

std::string FrameTypeName(std::uint16_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kInvalid: return "Invalid";
    case FrameType::kHello: return "Hello";
    case FrameType::kPrepare: return "Prepare";
    case FrameType::kAvailability: return "Availability";
    case FrameType::kData: return "Data";
    case FrameType::kRefs: return "Refs";
    case FrameType::kPageRequest: return "PageRequest";
    case FrameType::kPageResponse: return "PageResponse";
    case FrameType::kAck: return "Ack";
    case FrameType::kReturnPath: return "ReturnPath";
    case FrameType::kEnd: return "End";
    case FrameType::kResult: return "Result";
    case FrameType::kError: return "Error";
    case FrameType::kAbort: return "Abort";
    case FrameType::kDup: return "Dup";
    case FrameType::kPacked: return "Packed";
    case FrameType::kKeepalive: return "Keepalive";
  }
  return fmt::format("type {:#06x}", type);
}

std::size_t MaxPayloadLength(std::uint16_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kInvalid: return 0;
    case FrameType::kHello: return kHelloPayloadSize;
    case FrameType::kPrepare: return kMaxPreparePayload;
    case FrameType::kAvailability: return kMaxAvailabilityPayload;
    case FrameType::kData: return kMaxDataPayload;
    case FrameType::kRefs: return kRefsFixedSize + kRefEntrySize * kMaxRefsPerFrame;
    case FrameType::kPageRequest: return 8;
    case FrameType::kPageResponse: return kPageResponsePayloadSize;
    case FrameType::kAck: return kAckPayloadSize;
    case FrameType::kReturnPath: return kMaxReturnPathPayload;
    case FrameType::kEnd: return kEndPayloadSize;
    case FrameType::kResult: return kResultPayloadSize;
    case FrameType::kError: return 4 + kMaxMessageLength;
    case FrameType::kAbort: return 2 + kMaxMessageLength;
    case FrameType::kDup: return kDupFixedSize + kDupEntrySize * kMaxDupsPerFrame;
    case FrameType::kPacked: return kMaxPackedPayload;
    case FrameType::kKeepalive: return 0;
  }
  return IsOptionalFrameType(type) ? kMaxUnknownOptionalPayload : 0;
}

WireErrorCode ToWireErrorCode(StatusCode code) {
  switch (code) {
    case StatusCode::kProtocolError: return WireErrorCode::kProtocolError;
    case StatusCode::kVersionMismatch: return WireErrorCode::kVersionMismatch;
    case StatusCode::kCorruption: return WireErrorCode::kCorruption;
    case StatusCode::kTimeout: return WireErrorCode::kTimeout;
    case StatusCode::kUnavailable: return WireErrorCode::kUnavailable;
    case StatusCode::kResourceExhausted: return WireErrorCode::kResourceExhausted;
    case StatusCode::kIOError: return WireErrorCode::kIOError;
    case StatusCode::kFailedPrecondition: return WireErrorCode::kFailedPrecondition;
    case StatusCode::kNotSupported: return WireErrorCode::kNotSupported;
    case StatusCode::kAborted: return WireErrorCode::kAborted;
    case StatusCode::kInvalidArgument: return WireErrorCode::kInvalidArgument;
    case StatusCode::kOk:
    case StatusCode::kNotFound:
    case StatusCode::kAlreadyExists:
    case StatusCode::kInternal:
      return WireErrorCode::kInternal;
  }
  return WireErrorCode::kInternal;
}

StatusCode FromWireErrorCode(std::uint16_t code) {
  switch (static_cast<WireErrorCode>(code)) {
    case WireErrorCode::kProtocolError: return StatusCode::kProtocolError;
    case WireErrorCode::kVersionMismatch: return StatusCode::kVersionMismatch;
    case WireErrorCode::kCorruption: return StatusCode::kCorruption;
    case WireErrorCode::kTimeout: return StatusCode::kTimeout;
    case WireErrorCode::kUnavailable: return StatusCode::kUnavailable;
    case WireErrorCode::kResourceExhausted: return StatusCode::kResourceExhausted;
    case WireErrorCode::kIOError: return StatusCode::kIOError;
    case WireErrorCode::kFailedPrecondition: return StatusCode::kFailedPrecondition;
    case WireErrorCode::kNotSupported: return StatusCode::kNotSupported;
    case WireErrorCode::kAborted: return StatusCode::kAborted;
    case WireErrorCode::kInvalidArgument: return StatusCode::kInvalidArgument;
    case WireErrorCode::kInternal:
    case WireErrorCode::kInvalid:
      return StatusCode::kInternal;
  }
  return StatusCode::kInternal;
}

void EncodeFrameHeader(const FrameHeader& header, std::uint8_t* out) {
  StoreFixed16(out, header.type);
  StoreFixed16(out + 2, header.flags);
  StoreFixed32(out + 4, header.crc);
  StoreFixed64(out + 8, header.length);
}

FrameHeader DecodeFrameHeader(const std::uint8_t* in) {
  FrameHeader h;
  h.type = LoadFixed16(in);
  h.flags = LoadFixed16(in + 2);
  h.crc = LoadFixed32(in + 4);
  h.length = LoadFixed64(in + 8);
  return h;
}

std::uint32_t FrameCrc(const std::uint8_t* header, std::span<const std::uint8_t> payload) {
  std::uint32_t crc = Crc32cExtend(0, header, 4);
  crc = Crc32cExtend(crc, header + 8, 8);
  return Crc32cExtend(crc, payload.data(), payload.size());
}

Result<std::uint16_t> AcceptPeerVersion(std::uint16_t peer, std::uint16_t local) {
  if (peer == 0) {
    return Err(Status::VersionMismatch("peer announced protocol version 0, which is invalid"));
  }
  std::string supported = local > 1 ? fmt::format("versions {} and {}", local, local - 1)
                                    : fmt::format("only version {}", local);
  if (peer > local) {
    return Err(Status::VersionMismatch(fmt::format(
        "peer protocol version {} is too new: this agent speaks {}", peer, supported)));
  }
  if (peer + 1 < local) {
    return Err(Status::VersionMismatch(fmt::format(
        "peer protocol version {} is too old: this agent speaks {}", peer, supported)));
  }
  return peer;
}

}  // namespace escdr::wire
