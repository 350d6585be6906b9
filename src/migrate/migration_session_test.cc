// End-to-end tests of SourceSession and DestinationSession over real sockets:
// loopback TCP between the agents, socket pairs to fake QEMUs that play
// synthetic QEMU 7.2 streams.
#include <atomic>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "escdr/migrate/destination_session.h"
#include "escdr/migrate/source_session.h"
#include "escdr/wire/coding.h"
#include "escdr/wire/frame_io.h"
#include "escdr/wire/messages.h"
#include "migrate/hand_source_testing.h"
#include "migrate/session_test_util.h"

namespace escdr {
namespace {

using test::FaultyConnection;
using test::FastTimeouts;
using test::IsPrefix;
using test::HandSource;
using test::MakeScenario;
using test::RunMigration;
using test::RunOptions;
using test::Scenario;
using test::ScenarioOptions;

std::string Why(const Result<MigrationReport>& r) {
  return r.has_value() ? r->Summary() : r.error().message();
}

// A gate a fake QEMU can wait at until the test opens it.
class Gate {
 public:
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
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
  // The plain proxied path: no catalog, no dedup, no compression.
  o.source.codec = wire::CodecSpec{wire::Codec::kNone, 0};
  o.source.dedup_pages = 0;
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
  // Uncompressed frames, so that the offset below lands inside the stream
  // (codec_session_test flips a byte of a Packed frame).
  o.source.codec = wire::CodecSpec{wire::Codec::kNone, 0};
  o.source.dedup_pages = 0;
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
  o.source.codec = wire::CodecSpec{wire::Codec::kNone, 0};
  o.source.dedup_pages = 0;
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
  // The destination notices on its next read (end of file) or on its next
  // Ack (the source's side is shut down).
  const std::string& why = out.destination.error().message();
  EXPECT_TRUE(why.find("the source closed the connection") != std::string::npos ||
              why.find("cannot send an Ack to the source") != std::string::npos)
      << why;
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
  // The destination reports the source's Error frame: the failed source
  // reads on until the destination closes (wire-protocol §9), so its hang-up
  // is no reset that could overtake the Error.
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

// ---- the stream budget (wire-protocol §6) ----

TEST_F(SessionTest, SourceNeverHasMoreThanTheBudgetOfStreamBytesInFlight) {
  // Four times as much stream, most of it elided (12 wire bytes per 4 KiB),
  // into a destination QEMU that reads 16 KiB at a time and yields between
  // reads: without a budget, megabytes of stream would be in flight.
  Scenario s = MakeScenario({.ram_pages = 4000, .seed = 3});
  RunOptions o = FastTimeouts();
  o.source.max_stream_in_flight = 256 << 10;
  o.source.qemu_read_chunk = 64 << 10;
  o.destination_qemu.read_bytes = 16 << 10;
  o.destination_qemu.before_read = [](std::uint64_t) { std::this_thread::yield(); };
  o.after_offer = [&] {  // fallbacks hold output while the source waits
    for (std::size_t k = 5; k < s.position_offsets.size(); k += 301) {
      s.donor->MutablePage(0, s.position_offsets[k])[9] ^= 1;
    }
  };
  auto out = RunMigration(s.stream, s.content.get(), s.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_EQ(out.destination_qemu_bytes, s.stream);
  const MigrationReport& r = *out.source;
  EXPECT_GT(r.fallbacks, 0u);
  EXPECT_GT(r.max_stream_in_flight, 0u);
  EXPECT_LE(r.max_stream_in_flight, o.source.max_stream_in_flight) << r.Summary();
  EXPECT_GT(r.budget_waits, 0u) << r.Summary();
  EXPECT_EQ(r.pages_elided(), s.expect_by_position + s.expect_by_content);
}

TEST_F(SessionTest, WithoutABudgetTheSourceReadsAheadOfTheDestination) {
  // The same migration with the limit off (version 1 behaviour): the counter
  // shows what the budget prevents.
  Scenario s = MakeScenario({.ram_pages = 4000, .seed = 3});
  RunOptions o = FastTimeouts();
  o.source.max_stream_in_flight = 0;
  o.source.qemu_read_chunk = 64 << 10;
  o.destination_qemu.read_bytes = 16 << 10;
  o.destination_qemu.before_read = [](std::uint64_t) { std::this_thread::yield(); };
  auto out = RunMigration(s.stream, s.content.get(), s.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  EXPECT_EQ(out.destination_qemu_bytes, s.stream);
  EXPECT_GT(out.source->max_stream_in_flight, std::uint64_t{256} << 10) << out.source->Summary();
  EXPECT_EQ(out.source->budget_waits, 0u);
}

TEST_F(SessionTest, StalledDestinationQemuStopsTheSourceReadingItsQemu) {
  // The destination QEMU stops reading after 1 MiB until the test lets it
  // go on. The source must then stop reading its QEMU within the budget
  // (plus what the two QEMU sockets hold), not buffer the stream.
  Scenario s = MakeScenario({.ram_pages = 6000, .seed = 4});
  constexpr std::uint64_t kStallAt = 1 << 20;
  constexpr std::uint64_t kBudget = 1 << 20;
  // Two unix socket buffers (about 200 KiB each here) and one read of each
  // fake, with room to spare; far below the stream.
  constexpr std::uint64_t kSocketSlack = 2 << 20;
  ASSERT_GT(s.stream.size(), 4 * (kStallAt + kBudget + kSocketSlack));
  RunOptions o = FastTimeouts();
  o.source.max_stream_in_flight = kBudget;
  o.source.qemu_read_chunk = 64 << 10;
  o.source_qemu_chunk = 4096;
  std::atomic<std::uint64_t> written{0};
  o.source_qemu_written = &written;
  Gate gate;
  std::atomic<bool> stalled{false};
  o.destination_qemu.before_read = [&](std::uint64_t got) {
    if (got >= kStallAt && !stalled.exchange(true)) gate.Wait();
  };
  // Watches the source QEMU's progress; once it stopped (no byte accepted
  // for a second), or after 15 s at most, records it and opens the gate.
  std::uint64_t written_at_stall = 0;
  std::thread watcher([&] {
    std::uint64_t last = written.load();
    int quiet = 0;
    for (int i = 0; i < 300 && quiet < 20; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const std::uint64_t now = written.load();
      quiet = (stalled.load() && now == last) ? quiet + 1 : 0;
      last = now;
    }
    written_at_stall = written.load();
    gate.Open();
  });
  auto out = RunMigration(s.stream, s.content.get(), s.donor.get(), o);
  watcher.join();
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  EXPECT_EQ(out.destination_qemu_bytes, s.stream);
  EXPECT_TRUE(stalled.load());
  std::printf("  the source QEMU stopped after %llu of %zu stream bytes\n",
              static_cast<unsigned long long>(written_at_stall), s.stream.size());
  EXPECT_LE(written_at_stall, kStallAt + kBudget + kSocketSlack)
      << "the source QEMU wrote " << written_at_stall << " of " << s.stream.size()
      << " bytes while the destination QEMU read nothing";
  EXPECT_LE(out.source->max_stream_in_flight, kBudget);
  EXPECT_GT(out.source->budget_waits, 0u);
}

TEST_F(SessionTest, BudgetSmallerThanTwoReadsIsRefused) {
  auto pair = wire::ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  SourceOptions options;
  options.qemu_read_chunk = 256 << 10;
  options.max_stream_in_flight = 300 << 10;
  auto session = SourceSession::Connect(std::move(pair->first), s_.content.get(),
                                        {"vm", test::TestKind(), 0}, options);
  ASSERT_FALSE(session.has_value());
  EXPECT_EQ(session.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(session.error().message().find("max_stream_in_flight"), std::string::npos)
      << session.error().message();
}

TEST_F(SessionTest, PreviousVersionSourceIsServedInItsVersionWithoutTheCodec) {
  // A version 3 source tags its pages, so it gets donor pages; it knows
  // nothing of the codec, so a Dup or Packed frame from it is out of place.
  Scenario s = MakeScenario({.ram_pages = 20, .return_path = false, .seed = 5});
  auto pair = wire::ConnectionPair();
  auto qemu = wire::ConnectionPair();
  ASSERT_TRUE(pair.has_value() && qemu.has_value());
  test::FakeDestinationQemu fake(std::move(qemu->first), 1, false);
  Result<MigrationReport> dest_result = Err(Status::Internal("not run"));
  std::thread dst([&] {
    auto session = DestinationSession::Accept(std::move(pair->second));
    ASSERT_TRUE(session.has_value()) << session.error().message();
    ASSERT_TRUE((*session)->Offer(s.content.get(), s.donor.get()).ok());
    dest_result = (*session)->Run(std::move(qemu->second));
  });
  HandSource src(pair->first.get());
  wire::Availability avail;
  const std::uint16_t previous = wire::kProtocolVersion - 1;
  ASSERT_NO_FATAL_FAILURE(src.Handshake(previous, *s.content, &avail));
  EXPECT_EQ(avail.catalog_entries, s.content->size());
  EXPECT_GT(avail.available_count(), 0u);
  std::vector<std::uint8_t> dup(wire::kDupFixedSize + wire::kDupEntrySize);
  wire::StoreFixed32(dup.data(), 1);
  wire::StoreDupEntry(dup.data() + wire::kDupFixedSize, {0, 0, 0});
  ASSERT_TRUE(src.writer.WriteFrame(wire::FrameType::kDup, dup).ok());
  Status error = src.ReadError();
  EXPECT_EQ(error.code(), StatusCode::kProtocolError) << error.message();
  EXPECT_NE(error.message().find("Dup frame not expected"), std::string::npos) << error.message();
  dst.join();
  fake.Join();
  ASSERT_FALSE(dest_result.has_value());
  EXPECT_EQ(dest_result.error().code(), StatusCode::kProtocolError);
  EXPECT_TRUE(fake.received().empty());
}

TEST_F(SessionTest, SourceOfTwoVersionsBackIsRefused) {
  auto pair = wire::ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  std::thread src([&] {
    wire::FrameBuffer b;
    b.Append(wire::FrameType::kHello,
             wire::Hello{wire::kProtocolVersion - 2, wire::Role::kSource}.Encode());
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
  EXPECT_NE(session.error().message().find("too old"), std::string::npos)
      << session.error().message();
}

// ---- the presence oracle (docs/security.md §3) ----

// A source that names catalog content the destination did not offer (bit 0
// in Availability, or an index past the catalog) fails the migration with a
// protocol error, and no donor page reaches the destination QEMU.
void ExpectUnofferedReferenceIsRefused(bool past_the_end) {
  Scenario s = MakeScenario({.ram_pages = 20, .return_path = false, .seed = 6});
  // The donor no longer holds page 3's content when it is scanned.
  std::uint8_t* page3 = s.donor->MutablePage(0, 3 * kPageSize);
  const std::uint32_t gone = s.content->Find(HashPage(page3));
  ASSERT_NE(gone, kNoContent);
  page3[0] ^= 0x40;
  auto pair = wire::ConnectionPair();
  auto qemu = wire::ConnectionPair();
  ASSERT_TRUE(pair.has_value() && qemu.has_value());
  test::FakeDestinationQemu fake(std::move(qemu->first), 1 + kPageSize, false);
  Result<MigrationReport> dest_result = Err(Status::Internal("not run"));
  std::thread dst([&] {
    auto session = DestinationSession::Accept(std::move(pair->second));
    ASSERT_TRUE(session.has_value()) << session.error().message();
    ASSERT_TRUE((*session)->Offer(s.content.get(), s.donor.get()).ok());
    dest_result = (*session)->Run(std::move(qemu->second));
  });
  HandSource src(pair->first.get());
  wire::Availability avail;
  ASSERT_NO_FATAL_FAILURE(src.Handshake(wire::kProtocolVersion, *s.content, &avail));
  // Everything else is offered: the refusal is about this one entry.
  EXPECT_EQ(avail.available_count(), s.content->size() - 1);
  EXPECT_FALSE(wire::BitmapTest(avail.bitmap, gone));
  const std::uint32_t index = past_the_end ? s.content->size() : gone;
  ASSERT_TRUE(src.SendByteAndReference(wire::kProtocolVersion, index).ok());
  Status error = src.ReadError();
  EXPECT_EQ(error.code(), StatusCode::kProtocolError) << error.message();
  EXPECT_NE(error.message().find(fmt::format("names content index {}, which the destination did "
                                             "not offer",
                                             index)),
            std::string::npos)
      << error.message();
  dst.join();
  fake.Join();
  ASSERT_FALSE(dest_result.has_value());
  EXPECT_EQ(dest_result.error().code(), StatusCode::kProtocolError);
  // At most the Data byte before the reference; nothing from the donor.
  EXPECT_LE(fake.received().size(), 1u);
}

TEST_F(SessionTest, ReferenceToAnEntryWhoseBitIsClearIsAProtocolError) {
  ExpectUnofferedReferenceIsRefused(false);
}

TEST_F(SessionTest, ReferenceToAnEntryPastTheCatalogIsAProtocolError) {
  ExpectUnofferedReferenceIsRefused(true);
}

// ---- the keyed donor-page check (docs/security.md §4) ----

// The source's catalog, except that entry `index` has the hash `forged`: a
// destination catalog under which an altered donor page collides with the
// catalog hash, as an XXH3-128 collision crafted by the donor's guest would.
class CollidingContent final : public StaticContent {
 public:
  CollidingContent(const StaticContent& base, std::uint32_t index, PageHash forged)
      : base_(base), index_(index), forged_(forged) {}
  const VmKind& kind() const override { return base_.kind(); }
  std::uint64_t checksum() const override { return base_.checksum(); }
  std::uint32_t size() const override { return base_.size(); }
  const PageHash& hash(std::uint32_t i) const override {
    return i == index_ ? forged_ : base_.hash(i);
  }
  std::uint32_t Find(const PageHash& h) const override {
    return h == forged_ ? index_ : base_.Find(h);
  }
  int FindBlock(std::string_view name) const override { return base_.FindBlock(name); }
  std::uint32_t ContentAt(int block, std::uint64_t page) const override {
    return base_.ContentAt(block, page);
  }

 private:
  const StaticContent& base_;
  std::uint32_t index_;
  PageHash forged_;
};

TEST_F(SessionTest, DonorPageCollidingOnTheCatalogHashIsRefusedAndFetched) {
  const std::uint64_t off = s_.position_offsets[3];  // page 3: sent once, in round 1
  std::uint8_t* donor_page = s_.donor->MutablePage(0, off);
  const std::uint32_t index = s_.content->Find(HashPage(donor_page));
  ASSERT_NE(index, kNoContent);
  std::vector<std::uint8_t> altered(donor_page, donor_page + kPageSize);
  altered[100] ^= 0xff;
  CollidingContent colliding(*s_.content, index, HashPage(altered.data()));
  // The precondition of the attack: by the catalog hash the destination
  // holds, the altered page is exactly the content the source references.
  ASSERT_EQ(HashPage(altered.data()), colliding.hash(index));
  RunOptions o = FastTimeouts();
  o.destination_content = &colliding;
  o.after_offer = [&] { std::memcpy(donor_page, altered.data(), kPageSize); };
  auto out = RunMigration(s_.stream, s_.content.get(), s_.donor.get(), o);
  ASSERT_TRUE(out.source.has_value()) << Why(out.source);
  ASSERT_TRUE(out.destination.has_value()) << Why(out.destination);
  // The altered page never reached the QEMU: the source's page did.
  EXPECT_EQ(out.destination_qemu_bytes, s_.stream);
  EXPECT_EQ(out.source->fallbacks, 1u);
  EXPECT_EQ(out.destination->fallbacks, 1u);
  EXPECT_EQ(out.source->pages_from_donor + 1, out.source->pages_elided());
}

TEST_F(SessionTest, SourceRefusesADestinationThatAnswersAnotherVersion) {
  auto pair = wire::ConnectionPair();
  ASSERT_TRUE(pair.has_value());
  std::thread dst([&] {
    wire::FrameReader reader(pair->second.get(), "source");
    auto hello = reader.Next(std::chrono::seconds(10), "AwaitHello");
    ASSERT_TRUE(hello.has_value()) << hello.error().message();
    wire::FrameBuffer b;
    b.Append(wire::FrameType::kHello,
             wire::Hello{wire::kProtocolVersion - 1, wire::Role::kDestination}.Encode());
    ASSERT_TRUE(pair->second->WriteAll(b.bytes(), Deadline::After(std::chrono::seconds(5))).ok());
  });
  auto session = SourceSession::Connect(std::move(pair->first), s_.content.get(),
                                        {"vm", test::TestKind(), 0});
  dst.join();
  ASSERT_FALSE(session.has_value());
  EXPECT_EQ(session.error().code(), StatusCode::kVersionMismatch);
  EXPECT_NE(session.error().message().find(
                fmt::format("answered protocol version {} to version {}",
                            wire::kProtocolVersion - 1, wire::kProtocolVersion)),
            std::string::npos)
      << session.error().message();
}

}  // namespace
}  // namespace escdr
