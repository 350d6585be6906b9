// End-to-end tests of SourceSession and DestinationSession over real sockets:
// loopback TCP between the agents, socket pairs to fake QEMUs that play
// synthetic QEMU 7.2 streams.
#include <atomic>

#include <gtest/gtest.h>

#include "escdr/migrate/destination_session.h"
#include "escdr/migrate/source_session.h"
#include "escdr/wire/frame_io.h"
#include "escdr/wire/messages.h"
#include "migrate/session_test_util.h"

namespace escdr {
namespace {

using test::FastTimeouts;
using test::MakeScenario;
using test::RunMigration;
using test::RunOptions;
using test::Scenario;
using test::ScenarioOptions;

std::string Why(const Result<MigrationReport>& r) {
  return r.has_value() ? r->Summary() : r.error().message();
}

bool IsPrefix(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& full) {
  return got.size() <= full.size() && std::equal(got.begin(), got.end(), full.begin());
}

// Fault injection on the source agent's connection to the destination.
class FaultyConnection : public wire::ConnectionWrapper {
 public:
  enum class Fault { kFlipByte, kCutConnection };
  // The fault hits the write that carries byte `at` of the outgoing stream.
  FaultyConnection(std::unique_ptr<wire::Connection> target, Fault fault, std::uint64_t at)
      : ConnectionWrapper(std::move(target)), fault_(fault), at_(at) {}

  Status WriteAllV(std::span<const std::span<const std::uint8_t>> parts,
                   Deadline deadline) override {
    std::vector<std::uint8_t> bytes;
    for (const auto& p : parts) bytes.insert(bytes.end(), p.begin(), p.end());
    const std::uint64_t before = written_;
    written_ += bytes.size();
    if (fired_ || written_ <= at_) return WriteAll(bytes, deadline);
    fired_ = true;
    if (fault_ == Fault::kFlipByte) {
      bytes[at_ - before] ^= 0x20;
      return WriteAll(bytes, deadline);
    }
    // Cut: write up to the byte, then the link dies.
    Status s = ConnectionWrapper::WriteAll(std::span(bytes).first(at_ - before), deadline);
    Shutdown();
    return s.ok() ? Status::Unavailable("test cut the connection") : s;
  }

 private:
  Status WriteAll(std::span<const std::uint8_t> data, Deadline deadline) {
    std::span<const std::uint8_t> one[1] = {data};
    return ConnectionWrapper::WriteAllV(one, deadline);
  }
  Fault fault_;
  std::uint64_t at_;
  std::uint64_t written_ = 0;
  bool fired_ = false;
};

class SessionTest : public ::testing::Test {
 protected:
  Scenario s_ = MakeScenario();
};

TEST_F(SessionTest, OutputIsByteIdenticalWithElisionByPositionAndContent) {
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), FastTimeouts());
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_EQ(out.destination_qemu_bytes, s_.stream);
  const MigrationReport& r = *out.source;
  EXPECT_EQ(r.stream_bytes, s_.stream.size());
  EXPECT_EQ(r.rebuilt_bytes, s_.stream.size());
  EXPECT_EQ(r.page_records, s_.page_records);
  EXPECT_EQ(r.zero_records, s_.zero_records);
  EXPECT_EQ(r.pages_by_position, s_.expect_by_position);
  EXPECT_EQ(r.pages_by_content, s_.expect_by_content);
  EXPECT_EQ(r.pages_from_donor, r.pages_elided());
  EXPECT_EQ(r.fallbacks, 0u);
  EXPECT_EQ(r.pages_window_full, 0u);
  EXPECT_EQ(r.available_entries, s_.content->size());
  EXPECT_TRUE(r.downtime_measured);
  // Both sides agree on the figures they learned from each other.
  const MigrationReport& d = *out.destination;
  EXPECT_EQ(d.pages_by_position, r.pages_by_position);
  EXPECT_EQ(d.pages_from_donor, r.pages_from_donor);
  EXPECT_EQ(d.wire_bytes_received, r.wire_bytes_sent);
  EXPECT_EQ(d.wire_bytes_sent, r.wire_bytes_received);
}

TEST_F(SessionTest, ReturnPathBytesAreRelayedUnchanged) {
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), FastTimeouts());
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  std::vector<std::uint8_t> want = test::PongMessage();
  auto shut = test::ShutMessage();
  want.insert(want.end(), shut.begin(), shut.end());
  EXPECT_EQ(out.source_qemu_returned, want);
  EXPECT_EQ(out.source->return_path_bytes, want.size());
  EXPECT_EQ(out.destination->return_path_bytes, want.size());
}

TEST_F(SessionTest, OutputIsByteIdenticalWithoutReturnPath) {
  Scenario s = MakeScenario({.ram_pages = 500, .return_path = false, .seed = 2});
  RunOptions o = FastTimeouts();
  o.return_path = false;
  auto out = RunMigration(s.stream, s.content.get(), s.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_EQ(out.destination_qemu_bytes, s.stream);
  EXPECT_TRUE(out.source_qemu_returned.empty());
  EXPECT_GT(out.source->pages_elided(), 0u);
}

TEST_F(SessionTest, OutputIsByteIdenticalWithoutCatalog) {
  RunOptions o = FastTimeouts();
  o.source_has_catalog = false;
  o.destination_offers = false;
  auto out = RunMigration(s_.stream, nullptr, nullptr, o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_EQ(out.destination_qemu_bytes, s_.stream);
  EXPECT_EQ(out.source->pages_elided(), 0u);
  EXPECT_EQ(out.source->catalog_entries, 0u);
  EXPECT_GT(out.source->wire_bytes_sent, s_.stream.size());
}

TEST_F(SessionTest, OutputIsByteIdenticalWhenTheDonorOffersNothing) {
  RunOptions o = FastTimeouts();
  o.destination_offers = false;
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  EXPECT_EQ(out.destination_qemu_bytes, s_.stream);
  EXPECT_EQ(out.source->pages_elided(), 0u);
  EXPECT_EQ(out.source->available_entries, 0u);
  EXPECT_EQ(out.source->catalog_entries, s_.content->size());
}

TEST_F(SessionTest, SmallReadsAndFramesStillRebuildExactly) {
  RunOptions o = FastTimeouts();
  o.source.qemu_read_chunk = 777;   // records split across reads and Data flushes
  o.source.max_data_frame = 4096;
  o.source_qemu_chunk = 1313;
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  EXPECT_EQ(out.destination_qemu_bytes, s_.stream);
  EXPECT_EQ(out.source->pages_elided(), s_.expect_by_position + s_.expect_by_content);
}

TEST_F(SessionTest, WireBytesAreFarBelowTheStreamWhenMostPagesAreCatalogContent) {
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), FastTimeouts());
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  const MigrationReport& r = *out.source;
  const std::uint64_t wire = r.wire_bytes_sent + r.wire_bytes_received;
  // 80% of the non-zero pages are catalog content; what remains is the private
  // pages, record headers, device state and protocol overhead.
  EXPECT_LT(wire, s_.stream.size() / 4) << r.Summary();
  EXPECT_EQ(r.bytes_saved_by_position() + r.bytes_saved_by_content(),
            r.pages_elided() * kPageSize);
}

TEST_F(SessionTest, DonorPageChangedAfterTheScanFallsBackToTheSource) {
  RunOptions o = FastTimeouts();
  std::vector<std::uint64_t> changed;
  for (std::size_t k = 3; k < s_.position_offsets.size(); k += 97) {
    changed.push_back(s_.position_offsets[k]);
  }
  o.after_offer = [&] {
    for (std::uint64_t off : changed) s_.donor->MutablePage(0, off)[100] ^= 0xff;
  };
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_EQ(out.destination_qemu_bytes, s_.stream);
  // Pages of round 2 and END are elided again, so a changed page can fall back
  // more than once.
  EXPECT_GE(out.source->fallbacks, changed.size());
  EXPECT_EQ(out.source->fallbacks + out.source->pages_from_donor, out.source->pages_elided());
  EXPECT_EQ(out.destination->fallbacks, out.source->fallbacks);
}

TEST_F(SessionTest, TinyWindowSendsPagesInFullAndStaysCorrect) {
  RunOptions o = FastTimeouts();
  o.source.window_pages = 2;
  o.after_offer = [&] {  // fallbacks under window pressure too
    for (std::size_t k = 0; k < s_.position_offsets.size(); k += 50) {
      s_.donor->MutablePage(0, s_.position_offsets[k])[7] ^= 1;
    }
  };
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_EQ(out.destination_qemu_bytes, s_.stream);
  const MigrationReport& r = *out.source;
  EXPECT_EQ(r.pages_elided() + r.pages_window_full, s_.expect_by_position + s_.expect_by_content);
  EXPECT_EQ(r.fallbacks + r.pages_from_donor, r.pages_elided());
}

TEST_F(SessionTest, WindowOfZeroElidesNothing) {
  RunOptions o = FastTimeouts();
  o.source.window_pages = 0;
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  EXPECT_EQ(out.destination_qemu_bytes, s_.stream);
  EXPECT_EQ(out.source->pages_elided(), 0u);
}

TEST_F(SessionTest, CorruptedFrameFailsTheDestinationAndTheSource) {
  RunOptions o = FastTimeouts();
  o.wrap_source_peer = [](std::unique_ptr<wire::Connection> c) {
    // Far into the stream: inside some Data or Refs frame of the first PART.
    return std::make_unique<FaultyConnection>(std::move(c), FaultyConnection::Fault::kFlipByte,
                                              200000);
  };
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_FALSE(out.destination.has_value());
  EXPECT_EQ(out.destination.error().code(), StatusCode::kCorruption);
  EXPECT_NE(out.destination.error().message().find("frame checksum mismatch"), std::string::npos)
      << out.destination.error().message();
  EXPECT_NE(out.destination.error().message().find("state Streaming"), std::string::npos);
  ASSERT_FALSE(out.source.has_value());
  EXPECT_NE(out.source.error().message().find("destination reported: frame checksum mismatch"),
            std::string::npos)
      << out.source.error().message();
  // The damaged frame never reached the QEMU: what it got is a clean prefix.
  EXPECT_LT(out.destination_qemu_bytes.size(), s_.stream.size());
  EXPECT_TRUE(IsPrefix(out.destination_qemu_bytes, s_.stream));
}

TEST_F(SessionTest, ConnectionCutMidStreamFailsBothSides) {
  RunOptions o = FastTimeouts();
  o.wrap_source_peer = [](std::unique_ptr<wire::Connection> c) {
    return std::make_unique<FaultyConnection>(
        std::move(c), FaultyConnection::Fault::kCutConnection, 300000);
  };
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_FALSE(out.source.has_value());
  EXPECT_EQ(out.source.error().code(), StatusCode::kUnavailable) << out.source.error().message();
  ASSERT_FALSE(out.destination.has_value());
  EXPECT_EQ(out.destination.error().code(), StatusCode::kUnavailable)
      << out.destination.error().message();
  EXPECT_NE(out.destination.error().message().find("the source closed the connection"),
            std::string::npos)
      << out.destination.error().message();
  EXPECT_TRUE(IsPrefix(out.destination_qemu_bytes, s_.stream));
  EXPECT_LT(out.destination_qemu_bytes.size(), s_.stream.size());
}

TEST_F(SessionTest, SourceQemuClosingEarlyFailsBothSides) {
  std::vector<std::uint8_t> truncated(s_.stream.begin(), s_.stream.begin() + s_.stream.size() / 2);
  RunOptions o = FastTimeouts();
  o.return_path = false;
  auto out = RunMigration(truncated, s_.content.get(), s_.donor.get(), o);
  ASSERT_FALSE(out.source.has_value());
  EXPECT_EQ(out.source.error().code(), StatusCode::kProtocolError) << out.source.error().message();
  ASSERT_FALSE(out.destination.has_value());
  EXPECT_NE(out.destination.error().message().find("source reported:"), std::string::npos)
      << out.destination.error().message();
}

TEST_F(SessionTest, DestinationQemuReportingAFailedLoadFailsBothSides) {
  RunOptions o = FastTimeouts();
  o.shut = test::ShutMessage(1);
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_FALSE(out.destination.has_value());
  EXPECT_EQ(out.destination.error().code(), StatusCode::kAborted);
  EXPECT_NE(out.destination.error().message().find("SHUT 1"), std::string::npos);
  ASSERT_FALSE(out.source.has_value());
  EXPECT_NE(out.source.error().message().find("destination reported:"), std::string::npos)
      << out.source.error().message();
  // The source QEMU got the SHUT(1) itself, so it fails the migration too.
  EXPECT_EQ(out.source_qemu_returned.size(), 16u);
}

TEST_F(SessionTest, CancelOnTheSourceAbortsBothSides) {
  RunOptions o = FastTimeouts();
  o.source_qemu_chunk = 4096;
  std::thread canceller;
  o.on_source = [&](SourceSession* s) {
    canceller = std::thread([s] { s->Cancel("operator request"); });
  };
  o.after_source_run = [&] { canceller.join(); };
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_FALSE(out.source.has_value());
  EXPECT_EQ(out.source.error().code(), StatusCode::kAborted);
  ASSERT_FALSE(out.destination.has_value());
  EXPECT_TRUE(IsPrefix(out.destination_qemu_bytes, s_.stream));
}

TEST_F(SessionTest, HeldOutputAboveTheLimitFails) {
  RunOptions o = FastTimeouts();
  o.destination.max_held_bytes = 1;
  // Page 0 starts a run of six position pages in one Refs frame: the pages
  // after the hole must be held, and the limit is hit at once.
  o.after_offer = [&] { s_.donor->MutablePage(0, 0)[0] ^= 0x80; };
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_FALSE(out.destination.has_value());
  EXPECT_EQ(out.destination.error().code(), StatusCode::kResourceExhausted)
      << out.destination.error().message();
  ASSERT_FALSE(out.source.has_value());
}

TEST_F(SessionTest, CatalogMismatchIsRefusedBeforeAnythingIsSent) {
  auto other = StaticContentTable::Create(test::TestKind(), 12345, {PageHash{1, 2}});
  ASSERT_TRUE(other.has_value());
  auto listener = wire::TcpListener::Listen("127.0.0.1", 0);
  ASSERT_TRUE(listener.has_value());
  std::thread src([&] {
    auto peer = wire::ConnectTcp("127.0.0.1", listener->port(), Deadline::After(std::chrono::seconds(10)));
    ASSERT_TRUE(peer.has_value());
    SourceParams params{"vm", test::TestKind(), 0};
    auto session = SourceSession::Connect(std::move(*peer), s_.content.get(), params);
    ASSERT_TRUE(session.has_value()) << session.error().message();
    EXPECT_EQ((*session)->available_entries(), 0u);
  });
  auto peer = listener->Accept(Deadline::After(std::chrono::seconds(10)));
  ASSERT_TRUE(peer.has_value());
  auto session = DestinationSession::Accept(std::move(*peer));
  ASSERT_TRUE(session.has_value()) << session.error().message();
  EXPECT_EQ((*session)->prepare().vm_name, "vm");
  Status s = (*session)->Offer(other->get(), s_.donor.get());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.message();
  // The agent falls back to a plain proxied migration.
  EXPECT_TRUE((*session)->Offer(nullptr, nullptr).ok());
  src.join();
}

TEST_F(SessionTest, UnsupportedVersionIsRejectedWithAnError) {
  auto pair = wire::ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  std::thread src([&] {
    wire::FrameBuffer b;
    b.Append(wire::FrameType::kHello,
             wire::Hello{wire::kProtocolVersion + 1, wire::Role::kSource}.Encode());
    ASSERT_TRUE(pair->first->WriteAll(b.bytes(), Deadline::After(std::chrono::seconds(5))).ok());
    wire::FrameReader reader(pair->first.get(), "destination");
    auto f = reader.Next(std::chrono::seconds(5), "AwaitHello");
    ASSERT_TRUE(f.has_value()) << f.error().message();
    ASSERT_EQ(f->type, wire::FrameType::kError);
    auto st = wire::DecodeError(f->payload);
    ASSERT_TRUE(st.has_value());
    EXPECT_EQ(st->code(), StatusCode::kVersionMismatch);
  });
  auto session = DestinationSession::Accept(std::move(pair->second));
  src.join();
  ASSERT_FALSE(session.has_value());
  EXPECT_EQ(session.error().code(), StatusCode::kVersionMismatch);
  EXPECT_NE(session.error().message().find("too new"), std::string::npos);
}

}  // namespace
}  // namespace escdr
