#include "escdr/agent/control_protocol.h"

#include <array>
#include <vector>

#include <fmt/format.h>

#include "agent/json_util.h"

namespace escdr::agent {
namespace {

const char* ControlTypeName(std::uint16_t type) {
  switch (static_cast<ControlFrameType>(type)) {
    case ControlFrameType::kRequest: return "ControlRequest";
    case ControlFrameType::kEvent: return "ControlEvent";
    case ControlFrameType::kReply: return "ControlReply";
  }
  return "?";
}

constexpr StatusCode kAllCodes[] = {
    StatusCode::kOk,           StatusCode::kNotFound,          StatusCode::kAlreadyExists,
    StatusCode::kInvalidArgument, StatusCode::kFailedPrecondition, StatusCode::kCorruption,
    StatusCode::kIOError,      StatusCode::kProtocolError,     StatusCode::kVersionMismatch,
    StatusCode::kNotSupported, StatusCode::kResourceExhausted, StatusCode::kUnavailable,
    StatusCode::kTimeout,      StatusCode::kAborted,           StatusCode::kInternal,
};

}  // namespace

bool IsControlFrameType(std::uint16_t type) {
  return type >= static_cast<std::uint16_t>(ControlFrameType::kRequest) &&
         type <= static_cast<std::uint16_t>(ControlFrameType::kReply);
}

Status WriteControlFrame(wire::Connection& conn, ControlFrameType type, const nlohmann::json& body,
                         Deadline deadline) {
  if (!body.is_object()) {
    return Status::InvalidArgument(
        fmt::format("{} body must be a JSON object", ControlTypeName(static_cast<std::uint16_t>(type))));
  }
  // Invalid UTF-8 in a message (e.g. a path) is replaced, never an exception.
  const std::string payload = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (payload.size() > kMaxControlPayload) {
    return Status::InvalidArgument(fmt::format("{} of {} bytes exceeds the limit of {} bytes",
                                               ControlTypeName(static_cast<std::uint16_t>(type)),
                                               payload.size(), kMaxControlPayload));
  }
  std::array<std::uint8_t, wire::kFrameHeaderSize> header{};
  wire::FrameHeader h;
  h.type = static_cast<std::uint16_t>(type);
  h.length = payload.size();
  std::span<const std::uint8_t> bytes(reinterpret_cast<const std::uint8_t*>(payload.data()),
                                      payload.size());
  wire::EncodeFrameHeader(h, header.data());
  h.crc = wire::FrameCrc(header.data(), bytes);
  wire::EncodeFrameHeader(h, header.data());
  std::span<const std::uint8_t> parts[2] = {header, bytes};
  return conn.WriteAllV(parts, deadline);
}

Result<ControlFrame> ReadControlFrame(wire::Connection& conn, std::string_view peer,
                                      Deadline deadline) {
  std::array<std::uint8_t, wire::kFrameHeaderSize> header{};
  Status s = wire::ReadFull(conn, header, deadline);
  if (!s.ok()) {
    if (s.code() == StatusCode::kUnavailable) {
      return Err(Status::Unavailable(fmt::format("{} closed the control connection", peer)));
    }
    return Err(s.WithContext(fmt::format("cannot read a control frame from {}", peer)));
  }
  return ReadControlFrameAfterHeader(conn, header.data(), peer, deadline);
}

Result<ControlFrame> ReadControlFrameAfterHeader(wire::Connection& conn,
                                                 const std::uint8_t* header, std::string_view peer,
                                                 Deadline deadline) {
  const wire::FrameHeader h = wire::DecodeFrameHeader(header);
  if (!IsControlFrameType(h.type)) {
    return Err(Status::ProtocolError(fmt::format("{} sent a {} frame where a control frame was expected",
                                                 peer, wire::FrameTypeName(h.type))));
  }
  if (h.length > kMaxControlPayload) {
    return Err(Status::ProtocolError(fmt::format("{} frame of {} bytes from {} exceeds the limit of {}",
                                                 ControlTypeName(h.type), h.length, peer,
                                                 kMaxControlPayload)));
  }
  std::vector<std::uint8_t> payload(h.length);
  if (!payload.empty()) {
    Status s = wire::ReadFull(conn, payload, deadline);
    if (!s.ok()) {
      return Err(s.WithContext(fmt::format("cannot read a {} frame of {} bytes from {}",
                                           ControlTypeName(h.type), h.length, peer)));
    }
  }
  if (wire::FrameCrc(header, payload) != h.crc) {
    return Err(Status::Corruption(fmt::format("control frame checksum mismatch: {} frame of {} bytes from {}",
                                              ControlTypeName(h.type), h.length, peer)));
  }
  ControlFrame frame;
  frame.type = static_cast<ControlFrameType>(h.type);
  frame.body = nlohmann::json::parse(payload.begin(), payload.end(), nullptr,
                                     /*allow_exceptions=*/false);
  if (!frame.body.is_object()) {
    return Err(Status::ProtocolError(fmt::format("{} frame from {} does not hold a JSON object",
                                                 ControlTypeName(h.type), peer)));
  }
  return frame;
}

std::string StatusCodeToName(StatusCode code) { return std::string(StatusCodeName(code)); }

StatusCode StatusCodeFromName(std::string_view name) {
  for (StatusCode c : kAllCodes) {
    if (StatusCodeName(c) == name) return c;
  }
  return StatusCode::kInternal;
}

nlohmann::json OkReply(nlohmann::json result) {
  if (!result.is_object()) result = nlohmann::json::object();
  result["ok"] = true;
  return result;
}

nlohmann::json ErrorReply(const Status& status) {
  return {{"ok", false},
          {"code", StatusCodeToName(status.ok() ? StatusCode::kInternal : status.code())},
          {"message", status.message()}};
}

Status ReplyStatus(const nlohmann::json& reply) {
  if (!reply.is_object()) return Status::ProtocolError("control reply is not a JSON object");
  auto ok = reply.find("ok");
  if (ok == reply.end() || !ok->is_boolean()) {
    return Status::ProtocolError("control reply has no boolean \"ok\"");
  }
  if (ok->get<bool>()) return Status::OK();
  std::string code = StringOr(reply, "code", "internal error");
  std::string message = StringOr(reply, "message", "(no message)");
  StatusCode c = StatusCodeFromName(code);
  if (c == StatusCode::kOk) c = StatusCode::kInternal;
  return Status(c, std::move(message));
}

}  // namespace escdr::agent
