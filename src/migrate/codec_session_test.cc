// The wire codec (protocol version 4) through real Source and Destination
// sessions: byte-exact rebuilds with every codec and with dedup, the
// version 3 peer, and hostile Dup and Packed frames from a hand-played source.
#include <zstd.h>

#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "escdr/migrate/destination_session.h"
#include "escdr/migrate/source_session.h"
#include "escdr/page/page.h"
#include "escdr/wire/codec.h"
#include "escdr/wire/coding.h"
#include "escdr/wire/dedup.h"
#include "escdr/wire/frame_io.h"
#include "escdr/wire/messages.h"
#include "migrate/hand_source_testing.h"
#include "migrate/session_test_util.h"

namespace escdr {
namespace {

using test::FastTimeouts;
using test::HandSource;
using test::MakeScenario;
using test::RunMigration;
using test::RunOptions;
using test::Scenario;

std::string Why(const Result<MigrationReport>& r) {
  return r.has_value() ? std::string("ok") : r.error().ToString();
}

class CodecSessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { s_ = new Scenario(MakeScenario({.ram_pages = 3000})); }
  static void TearDownTestSuite() {
    delete s_;
    s_ = nullptr;
  }
  static Scenario* s_;
};
Scenario* CodecSessionTest::s_ = nullptr;

// Runs the scenario's migration with `codec` on `threads` and dedup as given;
// checks the rebuild and returns the source's report.
MigrationReport RunWith(const Scenario& s, wire::CodecSpec codec, int threads,
                        std::uint32_t dedup_pages, bool catalog) {
  RunOptions o = FastTimeouts();
  o.source.codec = codec;
  o.source.codec_threads = threads;
  o.source.dedup_pages = dedup_pages;
  o.source_has_catalog = catalog;
  o.destination_offers = catalog;
  auto out = RunMigration(s.stream, catalog ? s.content.get() : nullptr,
                          catalog ? s.donor.get() : nullptr, o);
  EXPECT_TRUE(out.source.has_value()) << Why(out.source);
  EXPECT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_TRUE(out.destination_qemu_bytes == s.stream) << codec.ToString() << " threads " << threads;
  if (!out.source.has_value() || !out.destination.has_value()) return {};
  EXPECT_EQ(out.source->pages_deduplicated, out.destination->pages_deduplicated);
  EXPECT_EQ(out.source->CodecLabel(), codec.ToString());
  return *out.source;
}

TEST_F(CodecSessionTest, EveryCodecAndThreadCountRebuildsTheStreamExactly) {
  const MigrationReport plain =
      RunWith(*s_, wire::CodecSpec{wire::Codec::kNone, 0}, 1, 0, true);
  for (const char* text : {"zstd:1", "zstd:-5", "zstd:9", "lz4"}) {
    for (int threads : {1, 3}) {
      SCOPED_TRACE(fmt::format("{} on {} threads", text, threads));
      const wire::CodecSpec codec = wire::ParseCodecSpec(text).value();
      const MigrationReport r = RunWith(*s_, codec, threads, 0, true);
      EXPECT_GT(r.codec_frame_bytes, 0u);
      EXPECT_LT(r.codec_wire_bytes, r.codec_frame_bytes);
      EXPECT_LT(r.wire_bytes_sent, plain.wire_bytes_sent);
      EXPECT_EQ(r.pages_elided(), plain.pages_elided());
    }
  }
}

TEST_F(CodecSessionTest, PagesSentBeforeTravelAsDupEntries) {
  // Without a catalog, the second PART resends pages of the first with the
  // same bytes: with dedup they travel as Dup entries, and the rest of the
  // stream is identical.
  const MigrationReport none =
      RunWith(*s_, wire::CodecSpec{wire::Codec::kNone, 0}, 1, 0, false);
  const MigrationReport dedup =
      RunWith(*s_, wire::CodecSpec{wire::Codec::kNone, 0}, 1, 16384, false);
  EXPECT_EQ(none.pages_deduplicated, 0u);
  EXPECT_GT(dedup.pages_deduplicated, 0u);
  EXPECT_LE(dedup.wire_bytes_sent + dedup.pages_deduplicated * (kPageSize - 8 - wire::kDupEntrySize),
            none.wire_bytes_sent + 64 * 1024);
  // A history of one page still rebuilds exactly (few or no Dups).
  const MigrationReport tiny =
      RunWith(*s_, wire::CodecSpec{wire::Codec::kNone, 0}, 1, 1, false);
  EXPECT_LE(tiny.pages_deduplicated, dedup.pages_deduplicated);
  // Dedup, compression and the catalog compose.
  const MigrationReport all = RunWith(*s_, wire::CodecSpec{}, 2, 16384, true);
  EXPECT_GT(all.pages_elided(), 0u);
  EXPECT_LT(all.wire_bytes_sent, dedup.wire_bytes_sent);
}

TEST_F(CodecSessionTest, VersionThreeSourceIsServedWithoutTheCodec) {
  RunOptions o = FastTimeouts();
  o.source.protocol_version = 3;
  auto out = RunMigration(s_->stream, s_->content.get(), s_->donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_TRUE(out.destination_qemu_bytes == s_->stream);
  EXPECT_GT(out.source->pages_from_donor, 0u);
  EXPECT_EQ(out.source->pages_deduplicated, 0u);
  EXPECT_EQ(out.source->CodecLabel(), "none");
  EXPECT_EQ(out.source->codec_frame_bytes, 0u);
}

TEST_F(CodecSessionTest, VersionThreeDestinationRefusalNamesBothVersions) {
  // A version 3 destination answers a version 4 Hello with the Error its
  // AcceptPeerVersion gives.
  auto pair = wire::ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  std::thread dst([&] {
    wire::FrameReader reader(pair->second.get(), "source");
    auto hello = reader.Next(std::chrono::seconds(10), "AwaitHello");
    ASSERT_TRUE(hello.has_value()) << hello.error().message();
    auto h = wire::Hello::Decode(hello->payload);
    ASSERT_TRUE(h.has_value());
    auto refusal = wire::AcceptPeerVersion(h->version, 3);
    ASSERT_FALSE(refusal.has_value());
    wire::FrameWriter w(pair->second.get(), std::chrono::seconds(5));
    ASSERT_TRUE(w.WriteFrame(wire::FrameType::kError, wire::EncodeError(refusal.error())).ok());
  });
  auto session = SourceSession::Connect(std::move(pair->first), s_->content.get(),
                                        {"vm", test::TestKind(), 0});
  dst.join();
  ASSERT_FALSE(session.has_value());
  EXPECT_EQ(session.error().code(), StatusCode::kVersionMismatch);
  const std::string& m = session.error().message();
  EXPECT_NE(m.find("protocol version 4 is too new"), std::string::npos) << m;
  EXPECT_NE(m.find("versions 3 and 2"), std::string::npos) << m;
}

TEST_F(CodecSessionTest, AByteFlippedInAPackedFrameFailsBothSides) {
  RunOptions o = FastTimeouts();
  o.wrap_source_peer = [](std::unique_ptr<wire::Connection> c) {
    return std::make_unique<test::FaultyConnection>(
        std::move(c), test::FaultyConnection::Fault::kFlipByte, 20000);
  };
  auto out = RunMigration(s_->stream, s_->content.get(), s_->donor.get(), o);
  ASSERT_FALSE(out.destination.has_value());
  EXPECT_EQ(out.destination.error().code(), StatusCode::kCorruption)
      << out.destination.error().message();
  ASSERT_FALSE(out.source.has_value());
  EXPECT_NE(out.source.error().message().find("destination reported"), std::string::npos)
      << out.source.error().message();
  EXPECT_LT(out.destination_qemu_bytes.size(), s_->stream.size());
  EXPECT_TRUE(test::IsPrefix(out.destination_qemu_bytes, s_->stream));
}

// ---- hostile frames from a hand-played version 4 source ----

class HostileCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    s_ = MakeScenario({.ram_pages = 20, .return_path = false, .seed = 9});
    pair_ = wire::ConnectionPair();
    qemu_ = wire::ConnectionPair();
    ASSERT_TRUE(pair_.has_value() && qemu_.has_value());
    fake_.emplace(std::move(qemu_->first), 1, false);
    dst_ = std::thread([this] {
      auto session = DestinationSession::Accept(std::move(pair_->second));
      ASSERT_TRUE(session.has_value()) << session.error().message();
      ASSERT_TRUE((*session)->Offer(s_.content.get(), s_.donor.get()).ok());
      dest_result_ = (*session)->Run(std::move(qemu_->second));
    });
    src_.emplace(pair_->first.get());
    wire::Availability avail;
    ASSERT_NO_FATAL_FAILURE(src_->Handshake(wire::kProtocolVersion, *s_.content, &avail, 64));
  }

  // Sends `frames`, then expects the destination to fail with `code` and a
  // message containing `text`, reported back to the source, with at most
  // `max_qemu_bytes` delivered to its QEMU.
  void ExpectRefused(const wire::FrameBuffer& frames, StatusCode code, const std::string& text,
                     std::size_t max_qemu_bytes) {
    ASSERT_TRUE(src_->writer.Write(frames).ok());
    Status error = src_->ReadError();
    EXPECT_EQ(error.code(), code) << error.message();
    EXPECT_NE(error.message().find(text), std::string::npos) << error.message();
    pair_->first->Shutdown();  // ends the destination's linger at once
    dst_.join();
    fake_->Join();
    ASSERT_FALSE(dest_result_.has_value());
    EXPECT_EQ(dest_result_.error().code(), code);
    EXPECT_LE(fake_->received().size(), max_qemu_bytes);
  }

  void TearDown() override {
    if (dst_.joinable()) {
      pair_->first->Shutdown();
      dst_.join();
    }
    if (fake_) fake_->Join();
  }

  // A Dup payload of one entry.
  static std::vector<std::uint8_t> Dup(std::uint64_t offset, std::uint64_t check) {
    std::vector<std::uint8_t> dup(wire::kDupFixedSize + wire::kDupEntrySize);
    wire::StoreFixed32(dup.data(), 1);
    wire::StoreDupEntry(dup.data() + wire::kDupFixedSize, {0, offset, check});
    return dup;
  }

  // A Packed payload {zstd, one part, declared} around the zstd frame of
  // `frames`.
  static std::vector<std::uint8_t> Packed(const wire::FrameBuffer& frames, std::uint32_t declared) {
    const std::size_t head = wire::kPackedFixedSize + 4;
    std::vector<std::uint8_t> out(head + ZSTD_compressBound(frames.size()));
    out[0] = static_cast<std::uint8_t>(wire::Codec::kZstd);
    out[1] = 1;
    wire::StoreFixed32(out.data() + 4, declared);
    const std::size_t n = ZSTD_compress(out.data() + head, out.size() - head,
                                        frames.bytes().data(), frames.size(), 1);
    wire::StoreFixed32(out.data() + wire::kPackedFixedSize, static_cast<std::uint32_t>(n));
    out.resize(head + n);
    return out;
  }

  Scenario s_;
  Result<std::pair<std::unique_ptr<wire::Connection>, std::unique_ptr<wire::Connection>>> pair_ =
      Err(Status::Internal("unset"));
  Result<std::pair<std::unique_ptr<wire::Connection>, std::unique_ptr<wire::Connection>>> qemu_ =
      Err(Status::Internal("unset"));
  std::optional<test::FakeDestinationQemu> fake_;
  std::thread dst_;
  std::optional<HandSource> src_;
  Result<MigrationReport> dest_result_ = Err(Status::Internal("not run"));
};

TEST_F(HostileCodecTest, DupOfAPageNeverSentIsAProtocolError) {
  const std::vector<std::uint8_t> data(100, 0x5a);
  wire::FrameBuffer f;
  f.Append(wire::FrameType::kData, data);
  f.Append(wire::FrameType::kDup, Dup(0, 0));  // only 100 bytes were sent
  ExpectRefused(f, StatusCode::kProtocolError, "outside the", data.size());
}

TEST_F(HostileCodecTest, DupWhoseCheckDoesNotMatchIsCorruption) {
  std::vector<std::uint8_t> page(kPageSize, 0x33);
  wire::FrameBuffer f;
  f.Append(wire::FrameType::kData, page);
  f.Append(wire::FrameType::kDup, Dup(0, wire::DedupKey(HashPage(page.data())) ^ 1));
  ExpectRefused(f, StatusCode::kCorruption, "does not match the source's check", kPageSize);
}

TEST_F(HostileCodecTest, PackedFrameWhoseDeclaredSizeLiesIsCorruption) {
  wire::FrameBuffer inner;
  inner.Append(wire::FrameType::kData, std::vector<std::uint8_t>(5000, 0x11));
  wire::FrameBuffer f;
  f.Append(wire::FrameType::kPacked, Packed(inner, static_cast<std::uint32_t>(inner.size() - 1)));
  ExpectRefused(f, StatusCode::kCorruption, "should decode to", 0);
}

TEST_F(HostileCodecTest, PackedFrameDeclaringMoreThanTheCapIsRefusedBeforeDecoding) {
  // A zstd bomb: 64 MiB of zeros compress to a few KiB.
  wire::FrameBuffer inner;
  const std::vector<std::uint8_t> zeros(wire::kMaxDataPayload, 0);
  for (int i = 0; i < 16; ++i) inner.Append(wire::FrameType::kData, zeros);
  wire::FrameBuffer f;
  f.Append(wire::FrameType::kPacked, Packed(inner, static_cast<std::uint32_t>(inner.size())));
  ExpectRefused(f, StatusCode::kProtocolError,
                fmt::format("outside 16..{}", wire::kMaxPackedDecoded), 0);
}

TEST_F(HostileCodecTest, CorruptedCompressedDataIsCorruption) {
  wire::FrameBuffer inner;
  std::vector<std::uint8_t> data(20000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 / 3);
  inner.Append(wire::FrameType::kData, data);
  std::vector<std::uint8_t> packed = Packed(inner, static_cast<std::uint32_t>(inner.size()));
  packed[packed.size() / 2] ^= 0xff;  // the frame's CRC is computed after this
  wire::FrameBuffer f;
  f.Append(wire::FrameType::kPacked, packed);
  ExpectRefused(f, StatusCode::kCorruption, "Packed frame", 0);
}

TEST_F(HostileCodecTest, PackedFrameCarryingAnEndFrameIsAProtocolError) {
  wire::FrameBuffer inner;
  inner.Append(wire::FrameType::kData, std::vector<std::uint8_t>(3000, 0x22));
  inner.Append(wire::FrameType::kEnd, wire::EndSummary{}.Encode());
  wire::FrameBuffer f;
  f.Append(wire::FrameType::kPacked, Packed(inner, static_cast<std::uint32_t>(inner.size())));
  ExpectRefused(f, StatusCode::kProtocolError, "only Data, Refs and Dup frames may be packed",
                3000);
}

}  // namespace
}  // namespace escdr
