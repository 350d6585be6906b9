// The agent control channel: JSON requests and replies in wire frames.
//
// An escdr agent listens on one TCP port for two kinds of peers: other agents
// migrating a VM to it (the wire protocol of docs/wire-protocol.md, which
// opens with a Hello frame) and control clients (the escdr CLI, and source
// agents announcing a migration). A control connection opens with a
// ControlRequest frame instead of Hello. Control frames use the wire
// protocol's framing unchanged (16-byte header, CRC32C over header and
// payload); their types lie in the optional range reserved for the control
// channel, 0xA001-0xA003, and their payload is one UTF-8 JSON object of at
// most kMaxControlPayload bytes. docs/agent.md specifies the requests.
//
// One request per connection: the client sends ControlRequest, the agent
// answers with zero or more ControlEvent frames (progress) and one
// ControlReply. The one exception is "migrate_in": after an ok reply the same
// connection carries the wire protocol (the source's Hello follows).
//
// Reads are exact: ReadControlFrame() consumes the header and payload of one
// frame and no byte more, so a connection can be handed to a migration
// session right after a control exchange.
//
// Thread safety: pure functions; at most one reader and one writer per
// connection at a time (as wire::Connection).
#ifndef ESCDR_AGENT_CONTROL_PROTOCOL_H_
#define ESCDR_AGENT_CONTROL_PROTOCOL_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "escdr/base/status.h"
#include "escdr/sys/clock.h"
#include "escdr/wire/connection.h"
#include "escdr/wire/format.h"

namespace escdr::agent {

// Frame types of the control channel (optional bit set: a migration peer that
// does not know them would skip them; the agent never sends them to one).
enum class ControlFrameType : std::uint16_t {
  kRequest = 0xA001,  // client -> agent, first frame of the connection
  kEvent = 0xA002,    // agent -> client, progress, zero or more
  kReply = 0xA003,    // agent -> client, last frame of a request
};

// The version of the request vocabulary (field "version" of every request).
inline constexpr int kControlVersion = 1;
// Largest JSON payload of a control frame (the limit of an unknown optional
// frame type in the wire protocol, so the wire FrameReader would accept it).
inline constexpr std::size_t kMaxControlPayload = wire::kMaxUnknownOptionalPayload;

// True if `type` is one of the control frame types.
bool IsControlFrameType(std::uint16_t type);

struct ControlFrame {
  ControlFrameType type = ControlFrameType::kRequest;
  nlohmann::json body;  // always a JSON object
};

// Writes one control frame. InvalidArgument if the body is not an object or
// its encoding exceeds kMaxControlPayload; the connection's errors otherwise.
Status WriteControlFrame(wire::Connection& conn, ControlFrameType type, const nlohmann::json& body,
                         Deadline deadline);

// Reads exactly one control frame. `peer` names the other side in messages.
// Errors: Unavailable (closed before or inside the frame), Timeout,
// ProtocolError (not a control frame type, length above the limit, a payload
// that is not one JSON object), Corruption (CRC mismatch).
Result<ControlFrame> ReadControlFrame(wire::Connection& conn, std::string_view peer,
                                      Deadline deadline);

// As ReadControlFrame, for a frame whose 16-byte header was already read
// (the agent peeks at the header to tell control from migration peers).
Result<ControlFrame> ReadControlFrameAfterHeader(wire::Connection& conn,
                                                 const std::uint8_t* header, std::string_view peer,
                                                 Deadline deadline);

// Reply bodies: {"ok": true, ...fields of `result`} and
// {"ok": false, "code": "<status code name>", "message": "..."}.
nlohmann::json OkReply(nlohmann::json result = nlohmann::json::object());
nlohmann::json ErrorReply(const Status& status);
// The Status a reply body carries: OK for ok replies, else its code and
// message (an unknown code reads as Internal); ProtocolError if malformed.
Status ReplyStatus(const nlohmann::json& reply);

// The status code name as it travels in replies ("not found", ...), and back.
std::string StatusCodeToName(StatusCode code);
StatusCode StatusCodeFromName(std::string_view name);

}  // namespace escdr::agent

#endif  // ESCDR_AGENT_CONTROL_PROTOCOL_H_
