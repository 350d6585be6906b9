#include "escdr/wire/frame_io.h"

#include <thread>

#include <gtest/gtest.h>

#include "escdr/wire/coding.h"
#include "escdr/wire/messages.h"
#include "escdr/wire/socket.h"

namespace escdr::wire {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kIdle{5000};

class FrameIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pair = ConnectionPair();
    ASSERT_TRUE(pair.has_value()) << pair.error().message();
    writer_end_ = std::move(pair->first);
    reader_end_ = std::move(pair->second);
    reader_ = std::make_unique<FrameReader>(reader_end_.get(), "source");
  }

  // Writes raw bytes to the reader's peer.
  void Send(std::span<const std::uint8_t> bytes) {
    ASSERT_TRUE(writer_end_->WriteAll(bytes, Deadline::After(kIdle)).ok());
  }
  void SendFrame(FrameType type, std::span<const std::uint8_t> payload) {
    FrameBuffer b;
    b.Append(type, payload);
    Send(b.bytes());
  }
  // A frame with an arbitrary header (bad type, bad length), CRC made valid.
  static std::vector<std::uint8_t> RawFrame(std::uint16_t type, std::uint64_t length,
                                            std::span<const std::uint8_t> payload) {
    std::vector<std::uint8_t> f(kFrameHeaderSize);
    FrameHeader h{type, 0, 0, length};
    EncodeFrameHeader(h, f.data());
    h.crc = FrameCrc(f.data(), payload);
    EncodeFrameHeader(h, f.data());
    f.insert(f.end(), payload.begin(), payload.end());
    return f;
  }

  std::unique_ptr<Connection> writer_end_;
  std::unique_ptr<Connection> reader_end_;
  std::unique_ptr<FrameReader> reader_;
};

// Every frame type of the protocol survives FrameBuffer -> socket -> FrameReader.
TEST_F(FrameIoTest, RoundTripEveryFrameType) {
  Prepare prepare;
  prepare.vm_name = "vm";
  prepare.kind = VmKind{"a", "b", "c", "d"};
  Availability avail;
  avail.catalog_entries = 10;
  avail.bitmap = {0x05, 0x02};
  std::vector<std::uint8_t> refs;
  AppendRefsHeader(&refs, 0, 1);
  refs.resize(refs.size() + kRefEntrySize);
  std::vector<std::uint8_t> page(4096, 0xab);
  std::vector<std::uint8_t> data(1000, 0x11);
  const std::vector<std::pair<FrameType, std::vector<std::uint8_t>>> frames = {
      {FrameType::kHello, Hello{1, Role::kSource}.Encode()},
      {FrameType::kPrepare, prepare.Encode()},
      {FrameType::kAvailability, avail.Encode()},
      {FrameType::kData, data},
      {FrameType::kRefs, refs},
      {FrameType::kPageRequest, PageRequest{4}.Encode()},
      {FrameType::kPageResponse, EncodePageResponse(4, page.data())},
      {FrameType::kAck, Ack{5}.Encode()},
      {FrameType::kReturnPath, {0, 1, 0, 4, 0, 0, 0, 0}},
      {FrameType::kEnd, EndSummary{}.Encode()},
      {FrameType::kResult, DestinationResult{}.Encode()},
      {FrameType::kError, EncodeError(Status::Timeout("t"))},
      {FrameType::kAbort, EncodeAbort("cancel")},
  };
  FrameBuffer all;
  for (const auto& [type, payload] : frames) all.Append(type, payload);
  std::thread t([&] { Send(all.bytes()); });
  for (const auto& [type, payload] : frames) {
    auto f = reader_->Next(kIdle, "Test");
    ASSERT_TRUE(f.has_value()) << f.error().message();
    EXPECT_EQ(f->type, type);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), f->payload.begin(), f->payload.end()))
        << FrameTypeName(type);
  }
  t.join();
  EXPECT_EQ(reader_->bytes_read(), all.size());
}

TEST_F(FrameIoTest, IncrementalPayloadAndTrim) {
  FrameBuffer b;
  b.Begin(FrameType::kData);
  b.AppendPayload(std::vector<std::uint8_t>{1, 2, 3});
  std::uint8_t* p = b.ExtendPayload(2);
  p[0] = 4;
  p[1] = 5;
  b.TrimPayload(1);
  EXPECT_EQ(b.open_payload_size(), 4u);
  b.End();
  b.Begin(FrameType::kRefs);
  b.End(/*drop_if_empty=*/true);
  EXPECT_EQ(b.size(), kFrameHeaderSize + 4);
  Send(b.bytes());
  auto f = reader_->Next(kIdle, "Test");
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(std::vector<std::uint8_t>(f->payload.begin(), f->payload.end()),
            (std::vector<std::uint8_t>{1, 2, 3, 4}));
}

TEST_F(FrameIoTest, PayloadByReferenceTrimAndPatchRoundTrip) {
  std::vector<std::uint8_t> ext(100);
  for (std::size_t i = 0; i < ext.size(); ++i) ext[i] = static_cast<std::uint8_t>(i);
  FrameBuffer b;
  b.Begin(FrameType::kData);
  b.AppendPayload(std::vector<std::uint8_t>{0xaa, 0xbb, 0xcc, 0xdd});
  b.AppendPayloadRef(std::span(ext).first(50));
  b.AppendPayloadRef(std::span(ext).subspan(50));  // adjacent: one piece
  std::uint8_t tail[3];
  ASSERT_TRUE(b.CopyPayloadTail(tail, 3));
  EXPECT_EQ(tail[0], 97);
  EXPECT_EQ(tail[2], 99);
  b.TrimPayload(10);  // 90 referenced bytes left
  b.PatchPayload(1, std::vector<std::uint8_t>{0x11, 0x22});
  b.End();
  b.Begin(FrameType::kData);
  b.AppendPayload(std::vector<std::uint8_t>{1});
  b.AppendPayloadRef(std::span(ext).first(5));
  b.TrimPayload(5);  // trims the reference away
  b.End();
  EXPECT_EQ(b.size(), 2 * kFrameHeaderSize + 94 + 1);
  FrameWriter w(writer_end_.get(), kIdle);
  ASSERT_TRUE(w.Write(b).ok());
  auto f = reader_->Next(kIdle, "Test");
  ASSERT_TRUE(f.has_value()) << f.error().message();
  std::vector<std::uint8_t> want = {0xaa, 0x11, 0x22, 0xdd};
  want.insert(want.end(), ext.begin(), ext.begin() + 90);
  EXPECT_EQ(std::vector<std::uint8_t>(f->payload.begin(), f->payload.end()), want);
  f = reader_->Next(kIdle, "Test");
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->payload.size(), 1u);
}

TEST_F(FrameIoTest, LengthAboveLimitIsRejected) {
  // Only the header is sent: the reader must refuse before waiting for (or
  // allocating) the claimed payload.
  auto f = RawFrame(static_cast<std::uint16_t>(FrameType::kData), kMaxDataPayload + 1, {});
  Send(std::span<const std::uint8_t>(f).first(kFrameHeaderSize));
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kProtocolError);
  EXPECT_NE(r.error().message().find("exceeds the limit"), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("Data frame"), std::string::npos);
}

TEST_F(FrameIoTest, HugeLengthOnSmallFrameTypeIsRejected) {
  auto f = RawFrame(static_cast<std::uint16_t>(FrameType::kAck), 1ull << 60, {});
  Send(std::span<const std::uint8_t>(f).first(kFrameHeaderSize));
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kProtocolError);
}

TEST_F(FrameIoTest, UnknownMandatoryTypeIsRejected) {
  std::vector<std::uint8_t> payload = {1, 2};
  Send(RawFrame(0x0042, payload.size(), payload));
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kProtocolError);
  EXPECT_NE(r.error().message().find("unknown mandatory frame type 0x0042"), std::string::npos)
      << r.error().message();
}

TEST_F(FrameIoTest, TypeZeroIsRejected) {
  Send(RawFrame(0, 0, {}));
  auto r = reader_->Next(kIdle, "AwaitHello");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kProtocolError);
}

TEST_F(FrameIoTest, UnknownOptionalTypeIsSkipped) {
  std::vector<std::uint8_t> junk(300, 0x77);
  Send(RawFrame(0x8042, junk.size(), junk));
  SendFrame(FrameType::kKeepalive, {});
  SendFrame(FrameType::kAck, Ack{3}.Encode());
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->type, FrameType::kAck);
  EXPECT_EQ(reader_->unknown_optional_skipped(), 1u);
  EXPECT_EQ(reader_->frames_read(), 3u);
}

TEST_F(FrameIoTest, ChecksumMismatchIsRejected) {
  FrameBuffer b;
  std::vector<std::uint8_t> payload(5000, 0x42);
  b.Append(FrameType::kData, payload);
  std::vector<std::uint8_t> bytes(b.bytes().begin(), b.bytes().end());
  bytes[kFrameHeaderSize + 1234] ^= 0x10;
  Send(bytes);
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorruption);
  EXPECT_NE(r.error().message().find("frame checksum mismatch: Data frame of 5000 bytes"),
            std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("state Streaming"), std::string::npos);
}

TEST_F(FrameIoTest, DamagedTypeIsDetectedByTheChecksum) {
  FrameBuffer b;
  b.Append(FrameType::kData, std::vector<std::uint8_t>(8, 1));
  std::vector<std::uint8_t> bytes(b.bytes().begin(), b.bytes().end());
  bytes[0] = static_cast<std::uint8_t>(FrameType::kReturnPath);  // Data -> ReturnPath
  Send(bytes);
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorruption);
}

TEST_F(FrameIoTest, TruncatedFrameIsUnavailable) {
  FrameBuffer b;
  b.Append(FrameType::kData, std::vector<std::uint8_t>(1000, 3));
  Send(b.bytes().first(kFrameHeaderSize + 400));
  writer_end_->Shutdown();
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.error().message().find("after 416 of 1016 bytes of Data frame of 1000 bytes"),
            std::string::npos)
      << r.error().message();
}

TEST_F(FrameIoTest, PeerClosesMidHeaderIsUnavailable) {
  FrameBuffer b;
  b.Append(FrameType::kAck, Ack{1}.Encode());
  Send(b.bytes().first(7));
  writer_end_.reset();  // close
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.error().message().find("after 7 of 16 bytes of a frame header"), std::string::npos)
      << r.error().message();
}

TEST_F(FrameIoTest, PeerClosesBetweenFramesIsUnavailable) {
  SendFrame(FrameType::kAck, Ack{1}.Encode());
  writer_end_.reset();
  ASSERT_TRUE(reader_->Next(kIdle, "Streaming").has_value());
  auto r = reader_->Next(kIdle, "Streaming");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.error().message().find("the source closed the connection in state Streaming"),
            std::string::npos)
      << r.error().message();
}

TEST_F(FrameIoTest, SilentPeerTimesOut) {
  auto r = reader_->Next(milliseconds(50), "AwaitPrepare");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kTimeout);
  EXPECT_NE(r.error().message().find("no frame from the source"), std::string::npos)
      << r.error().message();
}

TEST_F(FrameIoTest, ManySmallFramesAndOneLargeFrameInOneBurst) {
  FrameBuffer b;
  for (std::uint64_t i = 0; i < 5000; ++i) b.Append(FrameType::kAck, Ack{i}.Encode());
  std::vector<std::uint8_t> big(kMaxDataPayload, 0x9c);
  b.Append(FrameType::kData, big);
  std::thread t([&] { Send(b.bytes()); });
  for (std::uint64_t i = 0; i < 5000; ++i) {
    auto f = reader_->Next(kIdle, "Streaming");
    ASSERT_TRUE(f.has_value()) << f.error().message();
    auto a = Ack::Decode(f->payload);
    ASSERT_TRUE(a.has_value());
    ASSERT_EQ(a->next_seq, i);
  }
  auto f = reader_->Next(kIdle, "Streaming");
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->payload.size(), big.size());
  EXPECT_TRUE(std::equal(big.begin(), big.end(), f->payload.begin()));
  t.join();
}

TEST_F(FrameIoTest, WriterCountsBytesAndTryWriteSkipsWhenBusy) {
  FrameWriter w(writer_end_.get(), kIdle);
  ASSERT_TRUE(w.WriteFrame(FrameType::kAck, Ack{1}.Encode()).ok());
  EXPECT_EQ(w.bytes_written(), kFrameHeaderSize + kAckPayloadSize);
  EXPECT_TRUE(w.TryWriteFrame(FrameType::kAbort, EncodeAbort("x"), kIdle));
  auto f = reader_->Next(kIdle, "Streaming");
  ASSERT_TRUE(f.has_value());
  f = reader_->Next(kIdle, "Streaming");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->type, FrameType::kAbort);
}

}  // namespace
}  // namespace escdr::wire
