#include "escdr/agent/control_protocol.h"

#include <array>
#include <vector>

#include <gtest/gtest.h>

#include "escdr/wire/coding.h"
#include "escdr/wire/socket.h"

namespace escdr::agent {
namespace {

using nlohmann::json;
using std::chrono::seconds;

class ControlProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pair = wire::ConnectionPair();
    ASSERT_TRUE(pair.has_value());
    a_ = std::move(pair->first);
    b_ = std::move(pair->second);
  }
  // The raw bytes of one frame as WriteControlFrame puts them on the wire.
  std::vector<std::uint8_t> Encode(ControlFrameType type, const json& body) {
    auto pair = wire::ConnectionPair().value();
    EXPECT_TRUE(WriteControlFrame(*pair.first, type, body, Deadline::After(seconds(5))).ok());
    pair.first->Shutdown();
    std::vector<std::uint8_t> out;
    std::array<std::uint8_t, 4096> buf{};
    for (;;) {
      auto n = pair.second->ReadSome(buf, Deadline::After(seconds(5)));
      if (!n.has_value() || *n == 0) break;
      out.insert(out.end(), buf.begin(), buf.begin() + *n);
    }
    return out;
  }
  void Send(const std::vector<std::uint8_t>& bytes) {
    ASSERT_TRUE(a_->WriteAll(bytes, Deadline::After(seconds(5))).ok());
  }
  Result<ControlFrame> Receive() { return ReadControlFrame(*b_, "the peer", Deadline::After(seconds(5))); }

  std::unique_ptr<wire::Connection> a_, b_;
};

TEST_F(ControlProtocolTest, RoundTrip) {
  const json body = {{"op", "start_vm"}, {"vm", "a"}, {"version", 1}};
  ASSERT_TRUE(WriteControlFrame(*a_, ControlFrameType::kRequest, body, Deadline::After(seconds(5))).ok());
  auto f = Receive();
  ASSERT_TRUE(f.has_value()) << f.error().ToString();
  EXPECT_EQ(f->type, ControlFrameType::kRequest);
  EXPECT_EQ(f->body, body);
}

TEST_F(ControlProtocolTest, ReadsExactlyOneFrame) {
  // Bytes after a control frame belong to whoever reads next (migrate_in
  // hands the connection to the wire protocol).
  std::vector<std::uint8_t> bytes = Encode(ControlFrameType::kReply, {{"ok", true}});
  bytes.insert(bytes.end(), {1, 2, 3});
  Send(bytes);
  ASSERT_TRUE(Receive().has_value());
  std::array<std::uint8_t, 8> rest{};
  auto n = b_->ReadSome(rest, Deadline::After(seconds(5)));
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 3u);
  EXPECT_EQ(rest[0], 1);
}

TEST_F(ControlProtocolTest, FlippedPayloadByteIsCorruption) {
  std::vector<std::uint8_t> bytes = Encode(ControlFrameType::kRequest, {{"op", "ping"}});
  bytes.back() ^= 0x04;
  Send(bytes);
  auto f = Receive();
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code(), StatusCode::kCorruption);
  EXPECT_NE(f.error().message().find("checksum"), std::string::npos);
}

TEST_F(ControlProtocolTest, FlippedLengthIsDetected) {
  std::vector<std::uint8_t> bytes = Encode(ControlFrameType::kRequest, {{"op", "ping"}});
  bytes[8] ^= 0x01;  // length low byte: the CRC covers the header
  a_->WriteAll(bytes, Deadline::After(seconds(5))).ok();
  a_->ShutdownWrite().ok();
  auto f = Receive();
  ASSERT_FALSE(f.has_value());
  EXPECT_TRUE(f.error().code() == StatusCode::kCorruption ||
              f.error().code() == StatusCode::kUnavailable)
      << f.error().ToString();
}

TEST_F(ControlProtocolTest, LengthAboveLimitIsRejectedBeforeReading) {
  std::vector<std::uint8_t> bytes = Encode(ControlFrameType::kRequest, {{"op", "ping"}});
  wire::StoreFixed64(bytes.data() + 8, kMaxControlPayload + 1);
  Send(bytes);
  auto f = Receive();
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code(), StatusCode::kProtocolError);
  EXPECT_NE(f.error().message().find("exceeds the limit"), std::string::npos);
}

TEST_F(ControlProtocolTest, MigrationFrameIsNotAControlFrame) {
  std::vector<std::uint8_t> bytes = Encode(ControlFrameType::kRequest, {{"op", "ping"}});
  wire::StoreFixed16(bytes.data(), static_cast<std::uint16_t>(wire::FrameType::kData));
  Send(bytes);
  auto f = Receive();
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code(), StatusCode::kProtocolError);
  EXPECT_NE(f.error().message().find("Data"), std::string::npos);
}

TEST_F(ControlProtocolTest, PeerClosingIsUnavailable) {
  a_->Shutdown();
  auto f = Receive();
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code(), StatusCode::kUnavailable);
}

TEST_F(ControlProtocolTest, NonObjectBodyIsRefused) {
  EXPECT_EQ(WriteControlFrame(*a_, ControlFrameType::kReply, json::array({1, 2}),
                              Deadline::After(seconds(5)))
                .code(),
            StatusCode::kInvalidArgument);
}

TEST(ControlRepliesTest, ErrorReplyRoundTripsCodeAndMessage) {
  Status s = ReplyStatus(ErrorReply(Status::FailedPrecondition("VM a is busy")));
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "VM a is busy");
  EXPECT_TRUE(ReplyStatus(OkReply({{"vm", "a"}})).ok());
}

TEST(ControlRepliesTest, MalformedRepliesAreProtocolErrors) {
  EXPECT_EQ(ReplyStatus(json::object()).code(), StatusCode::kProtocolError);
  EXPECT_EQ(ReplyStatus({{"ok", "yes"}}).code(), StatusCode::kProtocolError);
  // An unknown code, or a code of the wrong type, reads as internal.
  EXPECT_EQ(ReplyStatus({{"ok", false}, {"code", "weird"}}).code(), StatusCode::kInternal);
  EXPECT_EQ(ReplyStatus({{"ok", false}, {"code", 7}}).code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace escdr::agent
