#include "escdr/wire/codec.h"

#include <zstd.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "escdr/wire/coding.h"
#include "escdr/wire/messages.h"
#include "escdr/wire/socket.h"

namespace escdr::wire {
namespace {

std::vector<std::uint8_t> Text(std::size_t n, std::uint32_t seed) {
  // Compressible: words from a small vocabulary.
  static const char* kWords[] = {"page ", "guest ", "kernel ", "escdr ", "static ", "zero "};
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> out;
  while (out.size() < n) {
    const char* w = kWords[rng() % 6];
    out.insert(out.end(), w, w + std::strlen(w));
  }
  out.resize(n);
  return out;
}

std::vector<std::uint8_t> Noise(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::uint8_t> out(n);
  for (auto& b : out) b = static_cast<std::uint8_t>(rng());
  return out;
}

// A batch of frames: Data of `data`, then an empty-ish Dup frame.
FrameBuffer Batch(const std::vector<std::uint8_t>& data) {
  FrameBuffer b;
  b.Append(FrameType::kData, data);
  std::vector<std::uint8_t> dup(kDupFixedSize + kDupEntrySize);
  StoreFixed32(dup.data(), 1);
  StoreDupEntry(dup.data() + kDupFixedSize, {0, 0, 7});
  b.Append(FrameType::kDup, dup);
  return b;
}

TEST(CodecSpecTest, ParsesWhatTheCliAccepts) {
  EXPECT_EQ(ParseCodecSpec("none")->codec, Codec::kNone);
  EXPECT_EQ(ParseCodecSpec("lz4")->codec, Codec::kLz4);
  EXPECT_EQ(ParseCodecSpec("zstd")->ToString(), "zstd:1");
  EXPECT_EQ(ParseCodecSpec("zstd:-3")->level, -3);
  EXPECT_EQ(ParseCodecSpec("zstd:19")->ToString(), "zstd:19");
  for (const char* bad : {"", "gzip", "zstd:", "zstd:x", "zstd:99", "zstd:1x", "LZ4"}) {
    auto r = ParseCodecSpec(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(std::string("'") + bad + "'"), std::string::npos);
  }
}

TEST(BatchTest, PackedBatchesDecodeToTheSameFramesWithEveryCodec) {
  const FrameBuffer batch = Batch(Text(300000, 1));
  for (CodecSpec spec : {CodecSpec{Codec::kZstd, 1}, CodecSpec{Codec::kZstd, -5},
                         CodecSpec{Codec::kLz4, 0}}) {
    SCOPED_TRACE(spec.ToString());
    BatchPacker packer(spec);
    std::vector<std::uint8_t> packed;
    ASSERT_TRUE(packer.Pack(batch.bytes(), &packed));
    EXPECT_LT(packed.size(), batch.size() / 2);
    BatchUnpacker unpacker;
    auto decoded = unpacker.Unpack(packed);
    ASSERT_TRUE(decoded.has_value()) << decoded.error().message();
    EXPECT_TRUE(std::equal(decoded->begin(), decoded->end(), batch.bytes().begin(),
                           batch.bytes().end()));
    PackedFrames frames(*decoded);
    auto f1 = frames.Next();
    ASSERT_TRUE(f1.has_value() && f1->has_value());
    EXPECT_EQ((*f1)->type, FrameType::kData);
    EXPECT_EQ((*f1)->payload.size(), 300000u);
    auto f2 = frames.Next();
    ASSERT_TRUE(f2.has_value() && f2->has_value());
    EXPECT_EQ((*f2)->type, FrameType::kDup);
    auto end = frames.Next();
    ASSERT_TRUE(end.has_value());
    EXPECT_FALSE(end->has_value());
  }
}

TEST(BatchTest, IncompressibleBatchesAreNotPacked) {
  const FrameBuffer batch = Batch(Noise(100000, 2));
  std::vector<std::uint8_t> packed;
  EXPECT_FALSE(BatchPacker(CodecSpec{Codec::kZstd, 1}).Pack(batch.bytes(), &packed));
  EXPECT_FALSE(BatchPacker(CodecSpec{Codec::kLz4, 0}).Pack(batch.bytes(), &packed));
  EXPECT_FALSE(BatchPacker(CodecSpec{Codec::kNone, 0}).Pack(batch.bytes(), &packed));
}

TEST(BatchTest, UnpackChecksTheHeaderBeforeDecoding) {
  const FrameBuffer batch = Batch(Text(50000, 3));
  std::vector<std::uint8_t> packed;
  ASSERT_TRUE(BatchPacker(CodecSpec{Codec::kZstd, 1}).Pack(batch.bytes(), &packed));
  BatchUnpacker unpacker;
  // Unknown codec, and codec 0.
  for (std::uint8_t codec : {0, 3, 200}) {
    auto p = packed;
    p[0] = codec;
    auto r = unpacker.Unpack(p);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kProtocolError) << r.error().message();
  }
  // A declared size above the cap, or a smaller cap of the caller's.
  auto big = packed;
  StoreFixed32(big.data() + 4, kMaxPackedDecoded + 1);
  auto r = unpacker.Unpack(big);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kProtocolError);
  r = unpacker.Unpack(packed, 1000);
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("outside 16..1000"), std::string::npos);
  // A declared size that is not what the data decodes to, both ways.
  for (std::int64_t delta : {-1, 1}) {
    auto lie = packed;
    StoreFixed32(lie.data() + 4, static_cast<std::uint32_t>(batch.size() + delta));
    auto l = unpacker.Unpack(lie);
    ASSERT_FALSE(l.has_value());
    EXPECT_EQ(l.error().code(), StatusCode::kCorruption) << l.error().message();
  }
  // Header only, no data.
  r = unpacker.Unpack(std::span(packed).first(kPackedFixedSize));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kProtocolError);
  // No parts, too many, and part sizes that do not add up to the data.
  for (std::uint8_t parts : {0, 200}) {
    auto p = packed;
    p[1] = parts;
    auto e = unpacker.Unpack(p);
    ASSERT_FALSE(e.has_value());
    EXPECT_EQ(e.error().code(), StatusCode::kProtocolError) << e.error().message();
  }
  auto sizes = packed;
  StoreFixed32(sizes.data() + kPackedFixedSize, LoadFixed32(sizes.data() + kPackedFixedSize) - 1);
  auto e = unpacker.Unpack(sizes);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code(), StatusCode::kProtocolError) << e.error().message();
}

TEST(BatchTest, PartsDecodeOnWorkersToTheSameBytes) {
  const FrameBuffer batch = Batch(Text(1000000, 9));
  std::vector<std::uint8_t> packed;
  ASSERT_TRUE(BatchPacker(CodecSpec{Codec::kZstd, 1}).Pack(batch.bytes(), &packed, 64 << 10));
  EXPECT_EQ(packed[1], 16);  // 1 MiB in parts of 64 KiB
  for (int threads : {1, 2, 4}) {
    BatchUnpacker unpacker(threads);
    for (int round = 0; round < 5; ++round) {
      auto d = unpacker.Unpack(packed);
      ASSERT_TRUE(d.has_value()) << d.error().message();
      EXPECT_TRUE(std::equal(d->begin(), d->end(), batch.bytes().begin(), batch.bytes().end()));
    }
    // A damaged part is an error from whichever thread decoded it.
    auto bad = packed;
    bad[bad.size() - 100] ^= 0x55;
    auto e = unpacker.Unpack(bad);
    ASSERT_FALSE(e.has_value());
    EXPECT_EQ(e.error().code(), StatusCode::kCorruption) << e.error().message();
    auto again = unpacker.Unpack(packed);
    ASSERT_TRUE(again.has_value()) << again.error().message();
  }
}

TEST(BatchTest, Lz4DataThatDecodesShortOrLongIsCorruption) {
  const FrameBuffer batch = Batch(Text(50000, 4));
  std::vector<std::uint8_t> packed;
  ASSERT_TRUE(BatchPacker(CodecSpec{Codec::kLz4, 0}).Pack(batch.bytes(), &packed));
  BatchUnpacker unpacker;
  for (std::int64_t delta : {-100, 100}) {
    auto lie = packed;
    StoreFixed32(lie.data() + 4, static_cast<std::uint32_t>(batch.size() + delta));
    auto r = unpacker.Unpack(lie);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kCorruption) << r.error().message();
  }
}

TEST(PackedFramesTest, RefusesFramesThatMayNotBePackedAndDamagedOnes) {
  FrameBuffer b;
  b.Append(FrameType::kData, Text(100, 5));
  b.Append(FrameType::kAck, std::vector<std::uint8_t>(16, 0));
  std::vector<std::uint8_t> bytes(b.bytes().begin(), b.bytes().end());
  PackedFrames frames(bytes);
  ASSERT_TRUE(frames.Next().has_value());
  auto r = frames.Next();
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("Ack"), std::string::npos) << r.error().message();

  FrameBuffer one;
  one.Append(FrameType::kData, Text(100, 6));
  std::vector<std::uint8_t> flipped(one.bytes().begin(), one.bytes().end());
  flipped[40] ^= 1;
  auto c = PackedFrames(flipped).Next();
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kCorruption);

  std::vector<std::uint8_t> cut(one.bytes().begin(), one.bytes().end() - 1);
  auto t = PackedFrames(cut).Next();
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().code(), StatusCode::kProtocolError);
}

// Writes `n` batches through a PackedWriter on `threads` workers into a
// socket pair and reads them back: the frames arrive in order, whole.
void ExpectOrderedDelivery(CodecSpec spec, int threads) {
  auto pair = ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  constexpr int kBatches = 60;
  std::thread reader_thread([&] {
    FrameReader reader(pair->second.get(), "source");
    BatchUnpacker unpacker;
    int next = 0;
    while (next < kBatches) {
      auto f = reader.Next(std::chrono::seconds(10), "test");
      ASSERT_TRUE(f.has_value()) << f.error().message();
      std::vector<std::vector<std::uint8_t>> payloads;
      if (f->type == FrameType::kPacked) {
        auto batch = unpacker.Unpack(f->payload);
        ASSERT_TRUE(batch.has_value()) << batch.error().message();
        PackedFrames frames(*batch);
        for (;;) {
          auto inner = frames.Next();
          ASSERT_TRUE(inner.has_value());
          if (!*inner) break;
          payloads.emplace_back((*inner)->payload.begin(), (*inner)->payload.end());
        }
      } else {
        payloads.emplace_back(f->payload.begin(), f->payload.end());
      }
      for (const auto& p : payloads) {
        const auto want = next % 3 == 0 ? Noise(20000 + next, next) : Text(20000 + next, next);
        ASSERT_EQ(p, want) << "batch " << next;
        ++next;
      }
    }
  });
  FrameWriter writer(pair->first.get(), std::chrono::seconds(10));
  PackedWriter packed(&writer, spec, threads);
  for (int i = 0; i < kBatches; ++i) {
    FrameBuffer b;
    b.Append(FrameType::kData, i % 3 == 0 ? Noise(20000 + i, i) : Text(20000 + i, i));
    ASSERT_TRUE(packed.Write(b).ok());
  }
  ASSERT_TRUE(packed.Flush().ok());
  reader_thread.join();
  const CodecStats st = packed.stats();
  EXPECT_EQ(st.batches, std::uint64_t{kBatches});
  EXPECT_EQ(st.wire_bytes, writer.bytes_written());
  if (spec.codec != Codec::kNone) {
    EXPECT_GT(st.batches_packed, 0u);
    EXPECT_LT(st.batches_packed, st.batches);  // the noise batches go as they are
    EXPECT_LT(st.wire_bytes, st.frame_bytes);
  }
}

TEST(PackedWriterTest, BatchesArriveInOrderFromEveryWorkerCount) {
  for (int threads : {1, 2, 4}) {
    SCOPED_TRACE(threads);
    ExpectOrderedDelivery(CodecSpec{Codec::kZstd, 1}, threads);
    ExpectOrderedDelivery(CodecSpec{Codec::kLz4, 0}, threads);
  }
  ExpectOrderedDelivery(CodecSpec{Codec::kNone, 0}, 1);
}

TEST(PackedWriterTest, AFailedWriteIsReturnedAndLaterWritesFail) {
  auto pair = ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  pair->second.reset();  // nobody reads: writes fail with a broken pipe
  FrameWriter writer(pair->first.get(), std::chrono::seconds(2));
  PackedWriter packed(&writer, CodecSpec{Codec::kZstd, 1}, 3);
  Status s;
  for (int i = 0; i < 50 && s.ok(); ++i) {
    FrameBuffer b;
    b.Append(FrameType::kData, Text(100000, i));
    s = packed.Write(b);
  }
  if (s.ok()) s = packed.Flush();
  EXPECT_FALSE(s.ok());
  FrameBuffer b;
  b.Append(FrameType::kData, Text(100, 1));
  EXPECT_FALSE(packed.Write(b).ok());
}

TEST(FrameWriterTest, RateLimitPacesTheBytesWritten) {
  auto pair = ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  std::thread drain([&] {
    std::vector<std::uint8_t> buf(1 << 16);
    for (;;) {
      auto n = pair->second->ReadSome(buf, Deadline::After(std::chrono::seconds(10)));
      if (!n.has_value() || *n == 0) break;
    }
  });
  FrameWriter writer(pair->first.get(), std::chrono::seconds(10));
  writer.SetRateLimit(4 << 20);  // 4 MiB/s
  const std::vector<std::uint8_t> payload(256 << 10, 1);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(writer.WriteFrame(FrameType::kData, payload).ok());
  // 2 MiB at 4 MiB/s: the writer waited for about half a second, measured
  // by its own pacing counter (not by the wall clock of a shared machine).
  EXPECT_GT(writer.paced_micros(), 300000u);
  pair->first->Shutdown();
  drain.join();
}

}  // namespace
}  // namespace escdr::wire
