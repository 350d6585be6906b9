#include "escdr/wire/format.h"

#include <gtest/gtest.h>

namespace escdr::wire {
namespace {

TEST(FrameHeaderTest, EncodeDecodeRoundTripIsLittleEndian) {
  FrameHeader h{0x0104, 0x0302, 0x08070605, 0x100f0e0d0c0b0a09ull};
  std::uint8_t b[kFrameHeaderSize];
  EncodeFrameHeader(h, b);
  for (int i = 0; i < 16; ++i) {
    // type 04 01, flags 02 03, crc 05..08, length 09..10
    static const std::uint8_t want[16] = {0x04, 0x01, 0x02, 0x03, 0x05, 0x06, 0x07, 0x08,
                                          0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10};
    EXPECT_EQ(b[i], want[i]) << i;
  }
  FrameHeader d = DecodeFrameHeader(b);
  EXPECT_EQ(d.type, h.type);
  EXPECT_EQ(d.flags, h.flags);
  EXPECT_EQ(d.crc, h.crc);
  EXPECT_EQ(d.length, h.length);
}

TEST(FrameHeaderTest, CrcCoversTypeAndLengthButNotItself) {
  std::uint8_t b[kFrameHeaderSize] = {};
  FrameHeader h{static_cast<std::uint16_t>(FrameType::kData), 0, 0, 3};
  EncodeFrameHeader(h, b);
  const std::uint8_t payload[3] = {1, 2, 3};
  const std::uint32_t crc = FrameCrc(b, payload);
  b[4] ^= 0xff;  // the crc field itself is excluded
  EXPECT_EQ(FrameCrc(b, payload), crc);
  b[0] ^= 0x01;  // type
  EXPECT_NE(FrameCrc(b, payload), crc);
  b[0] ^= 0x01;
  b[8] ^= 0x01;  // length
  EXPECT_NE(FrameCrc(b, payload), crc);
}

TEST(FrameTypeTest, OptionalBitAndLimits) {
  EXPECT_TRUE(IsOptionalFrameType(static_cast<std::uint16_t>(FrameType::kKeepalive)));
  EXPECT_FALSE(IsOptionalFrameType(static_cast<std::uint16_t>(FrameType::kData)));
  EXPECT_FALSE(IsKnownFrameType(0));
  EXPECT_FALSE(IsKnownFrameType(0x0077));
  EXPECT_TRUE(IsKnownFrameType(0x000D));
  EXPECT_EQ(MaxPayloadLength(0x0077), 0u);  // unknown mandatory
  EXPECT_EQ(MaxPayloadLength(0x8077), kMaxUnknownOptionalPayload);
  EXPECT_EQ(MaxPayloadLength(static_cast<std::uint16_t>(FrameType::kPageResponse)), 4104u);
  EXPECT_EQ(FrameTypeName(FrameType::kRefs), "Refs");
  EXPECT_EQ(FrameTypeName(0x8077), "type 0x8077");
}

TEST(VersionTest, CurrentVersionIsAccepted) {
  auto v = AcceptPeerVersion(kProtocolVersion);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, kProtocolVersion);
}

TEST(VersionTest, PreviousVersionIsAccepted) {
  auto v = AcceptPeerVersion(4, 5);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, 4);
}

TEST(VersionTest, TooNewVersionIsRejected) {
  auto v = AcceptPeerVersion(kProtocolVersion + 1);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), StatusCode::kVersionMismatch);
  EXPECT_NE(v.error().message().find("too new"), std::string::npos) << v.error().message();
}

TEST(VersionTest, TooOldVersionIsRejected) {
  auto v = AcceptPeerVersion(3, 5);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), StatusCode::kVersionMismatch);
  EXPECT_NE(v.error().message().find("too old"), std::string::npos) << v.error().message();
}

TEST(VersionTest, VersionZeroIsRejected) {
  auto v = AcceptPeerVersion(0);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), StatusCode::kVersionMismatch);
}

TEST(ErrorCodeTest, StatusCodesSurviveTheWire) {
  for (StatusCode c : {StatusCode::kProtocolError, StatusCode::kVersionMismatch,
                       StatusCode::kCorruption, StatusCode::kTimeout, StatusCode::kUnavailable,
                       StatusCode::kResourceExhausted, StatusCode::kIOError,
                       StatusCode::kFailedPrecondition, StatusCode::kNotSupported,
                       StatusCode::kAborted, StatusCode::kInvalidArgument}) {
    EXPECT_EQ(FromWireErrorCode(static_cast<std::uint16_t>(ToWireErrorCode(c))), c);
  }
  EXPECT_EQ(FromWireErrorCode(999), StatusCode::kInternal);
}

}  // namespace
}  // namespace escdr::wire
