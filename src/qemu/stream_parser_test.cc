#include "escdr/qemu/stream_parser.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "escdr/page/page.h"
#include "escdr/sys/temp_dir.h"
#include "qemu/stream_builder.h"
#include "qemu/stream_format.h"

namespace escdr {
namespace {

using test::StreamBuilder;
using ::testing::HasSubstr;
namespace sf = stream_format;

using Bytes = std::vector<std::uint8_t>;

struct Event {
  enum Kind { kPage, kZero, kBlockList, kPhase };
  Kind kind = kPage;
  std::uint64_t at = 0;  // bytes reported before this event
  std::uint32_t block = 0;
  std::uint64_t offset = 0;
  std::uint8_t fill = 0;
  PageHash hash;
  StreamPhase phase = StreamPhase::kHeader;
  std::vector<RamBlockInfo> blocks;

  friend bool operator==(const Event&, const Event&) = default;
};

std::ostream& operator<<(std::ostream& os, const Event& e) {
  return os << "{kind " << e.kind << " at " << e.at << " block " << e.block << " offset 0x"
            << std::hex << e.offset << std::dec << " fill " << int{e.fill} << " phase "
            << static_cast<int>(e.phase) << "}";
}

// Records everything the parser reports.
class RecordingVisitor : public StreamVisitor {
 public:
  Status OnBytes(std::span<const std::uint8_t> b) override {
    EXPECT_FALSE(b.empty()) << "OnBytes with an empty span";
    bytes.insert(bytes.end(), b.begin(), b.end());
    ++on_bytes_calls;
    return Status::OK();
  }
  Status OnBlockList(const std::vector<RamBlockInfo>& blocks) override {
    Event e;
    e.kind = Event::kBlockList;
    e.at = bytes.size();
    e.blocks = blocks;
    events.push_back(e);
    block_list = blocks;
    return Status::OK();
  }
  Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) override {
    Event e;
    e.kind = Event::kPage;
    e.at = bytes.size();
    e.block = block;
    e.offset = offset;
    e.hash = HashPage(data);
    events.push_back(e);
    bytes.insert(bytes.end(), data, data + kPageSize);
    return Status::OK();
  }
  Status OnZero(std::uint32_t block, std::uint64_t offset, std::uint8_t fill) override {
    Event e;
    e.kind = Event::kZero;
    e.at = bytes.size();
    e.block = block;
    e.offset = offset;
    e.fill = fill;
    events.push_back(e);
    return Status::OK();
  }
  Status OnPhase(StreamPhase phase) override {
    Event e;
    e.kind = Event::kPhase;
    e.at = bytes.size();
    e.phase = phase;
    events.push_back(e);
    return Status::OK();
  }

  Bytes bytes;
  std::vector<Event> events;
  std::vector<RamBlockInfo> block_list;
  std::size_t on_bytes_calls = 0;
};

struct Outcome {
  Status status;
  RecordingVisitor visitor;
  StreamStats stats;
  bool ram_complete = false;
};

// Feeds `s` in chunks of `chunk` bytes (0 = all at once), then Finish().
Outcome Parse(const Bytes& s, std::size_t chunk = 0) {
  Outcome out;
  StreamParser parser(&out.visitor);
  if (chunk == 0) chunk = std::max<std::size_t>(s.size(), 1);
  for (std::size_t i = 0; i < s.size() && out.status.ok(); i += chunk) {
    out.status = parser.Feed({s.data() + i, std::min(chunk, s.size() - i)});
  }
  if (out.status.ok()) out.status = parser.Finish();
  out.stats = parser.stats();
  out.ram_complete = parser.ram_complete();
  return out;
}

Bytes PatternPage(std::uint32_t seed) {
  Bytes p(kPageSize);
  std::mt19937 rng(seed);
  for (auto& b : p) b = static_cast<std::uint8_t>(rng());
  return p;
}

const std::vector<RamBlockInfo> kBlocks = {
    {"pc.ram", 64 * kPageSize},
    {"0000:00:02.0/vga.vram", 16 * kPageSize},
    {"pc.bios", 4 * kPageSize},
};

// A stream as QEMU writes it, with every feature the parser must pass: a
// return path, a ram section id that is not 2, CONTINUE across sections,
// repeated pages, a non-zero fill byte, an empty PART, a non-empty END.
Bytes RichStream() {
  StreamBuilder b;
  b.Header().Config("pc-i440fx-7.2", {}, /*uuid=*/true).ReturnPathAndPing().Start(5, kBlocks);
  b.Part(5);
  for (std::uint32_t i = 0; i < 8; ++i) b.Page("pc.ram", i * kPageSize, PatternPage(i).data());
  b.Zero("pc.ram", 8 * kPageSize).Zero("pc.ram", 9 * kPageSize, 0xab);
  b.Page("0000:00:02.0/vga.vram", 0, PatternPage(100).data());
  b.EndSection(5);
  b.Part(5);
  b.Page("0000:00:02.0/vga.vram", kPageSize, PatternPage(101).data());  // CONTINUE across
  b.Page("pc.bios", 3 * kPageSize, PatternPage(200).data());
  b.EndSection(5);
  b.Part(5).EndSection(5);
  b.End(5);
  b.Page("pc.ram", 0, PatternPage(1000).data());  // re-sent: later wins
  b.Zero("pc.ram", 63 * kPageSize);
  b.EndSection(5);
  b.Tail();
  return b.bytes();
}

TEST(StreamParserTest, RichStreamParsesAndReportsEveryByteOnce) {
  Bytes s = RichStream();
  Outcome o = Parse(s);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.visitor.bytes, s);
  EXPECT_TRUE(o.ram_complete);
  EXPECT_EQ(o.visitor.block_list, kBlocks);
  EXPECT_EQ(o.stats.bytes, s.size());
  EXPECT_EQ(o.stats.page_records, 12u);
  EXPECT_EQ(o.stats.zero_records, 3u);
  EXPECT_EQ(o.stats.ram_sections, 5u);  // START, 3 PART, END
}

TEST(StreamParserTest, ReportsRecordsInStreamOrderWithBlockAndOffset) {
  Outcome o = Parse(RichStream());
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  std::vector<std::tuple<Event::Kind, std::uint32_t, std::uint64_t, std::uint8_t>> got;
  for (const Event& e : o.visitor.events) {
    if (e.kind == Event::kPage || e.kind == Event::kZero) {
      got.emplace_back(e.kind, e.block, e.offset, e.fill);
    }
  }
  std::vector<std::tuple<Event::Kind, std::uint32_t, std::uint64_t, std::uint8_t>> want;
  for (std::uint32_t i = 0; i < 8; ++i) want.emplace_back(Event::kPage, 0, i * kPageSize, 0);
  want.emplace_back(Event::kZero, 0, 8 * kPageSize, 0);
  want.emplace_back(Event::kZero, 0, 9 * kPageSize, 0xab);
  want.emplace_back(Event::kPage, 1, 0, 0);
  want.emplace_back(Event::kPage, 1, kPageSize, 0);
  want.emplace_back(Event::kPage, 2, 3 * kPageSize, 0);
  want.emplace_back(Event::kPage, 0, 0, 0);
  want.emplace_back(Event::kZero, 0, 63 * kPageSize, 0);
  EXPECT_EQ(got, want);
  // The page content handed out is the payload that was written.
  EXPECT_EQ(o.visitor.events[std::size_t{0}].kind, Event::kPhase);
  auto first_page = std::find_if(o.visitor.events.begin(), o.visitor.events.end(),
                                 [](const Event& e) { return e.kind == Event::kPage; });
  EXPECT_EQ(first_page->hash, HashPage(PatternPage(0).data()));
}

TEST(StreamParserTest, PagePayloadPositionIsExactlyWhereThePayloadStood) {
  Bytes s = RichStream();
  Outcome o = Parse(s);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  for (const Event& e : o.visitor.events) {
    if (e.kind != Event::kPage) continue;
    ASSERT_LE(e.at + kPageSize, s.size());
    EXPECT_EQ(HashPage(s.data() + e.at), e.hash) << e;
  }
}

TEST(StreamParserTest, AnyChunkingGivesIdenticalOutput) {
  Bytes s = RichStream();
  Outcome whole = Parse(s);
  ASSERT_TRUE(whole.status.ok()) << whole.status.ToString();
  for (std::size_t chunk : {1u, 7u, 4096u, 4104u, 4105u, 65536u}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    Outcome o = Parse(s, chunk);
    ASSERT_TRUE(o.status.ok()) << o.status.ToString();
    EXPECT_EQ(o.visitor.bytes, s);
    EXPECT_EQ(o.visitor.events, whole.visitor.events);
    EXPECT_EQ(o.stats.page_records, whole.stats.page_records);
    EXPECT_EQ(o.stats.tail_bytes, whole.stats.tail_bytes);
  }
  // Random chunk sizes.
  std::mt19937 rng(42);
  for (int round = 0; round < 20; ++round) {
    RecordingVisitor v;
    StreamParser parser(&v);
    std::size_t i = 0;
    while (i < s.size()) {
      std::size_t n = std::min<std::size_t>(1 + rng() % 9000, s.size() - i);
      ASSERT_TRUE(parser.Feed({s.data() + i, n}).ok());
      i += n;
    }
    ASSERT_TRUE(parser.Finish().ok());
    EXPECT_EQ(v.bytes, s);
    EXPECT_EQ(v.events, whole.visitor.events);
  }
}

TEST(StreamParserTest, LargeChunksAreReportedInFewOnBytesCalls) {
  // The hot path must not call the visitor per byte: a chunk with a PAGE
  // makes at most a couple of OnBytes calls per record.
  Bytes s = RichStream();
  Outcome o = Parse(s);
  ASSERT_TRUE(o.status.ok());
  EXPECT_LE(o.visitor.on_bytes_calls, 2 * (o.stats.page_records + o.stats.zero_records) + 8);
}

TEST(StreamParserTest, PhasesComeBeforeTheirBytes) {
  Bytes s = RichStream();
  Outcome o = Parse(s, 3);
  ASSERT_TRUE(o.status.ok());
  std::vector<std::pair<StreamPhase, std::uint64_t>> phases;
  for (const Event& e : o.visitor.events) {
    if (e.kind == Event::kPhase) phases.emplace_back(e.phase, e.at);
  }
  ASSERT_EQ(phases.size(), 5u);
  EXPECT_EQ(phases[0], std::make_pair(StreamPhase::kHeader, std::uint64_t{0}));
  EXPECT_EQ(phases[1].first, StreamPhase::kRamSetup);
  EXPECT_EQ(s[phases[1].second], sf::kSectionStart);
  EXPECT_EQ(phases[2].first, StreamPhase::kRamIterate);
  EXPECT_EQ(s[phases[2].second], sf::kSectionPart);
  EXPECT_EQ(phases[3].first, StreamPhase::kRamComplete);
  EXPECT_EQ(s[phases[3].second], sf::kSectionEnd);
  EXPECT_EQ(phases[4].first, StreamPhase::kTail);
  EXPECT_EQ(s[phases[4].second], sf::kSectionFull);
  EXPECT_EQ(s.size() - phases[4].second, o.stats.tail_bytes);
  // The block list comes after the START footer.
  auto bl = std::find_if(o.visitor.events.begin(), o.visitor.events.end(),
                         [](const Event& e) { return e.kind == Event::kBlockList; });
  ASSERT_NE(bl, o.visitor.events.end());
  EXPECT_EQ(s[bl->at - 5], sf::kSectionFooter);
  EXPECT_EQ(s[bl->at], sf::kSectionPart);
}

TEST(StreamParserTest, ContinueRecordUsesTheBlockOfThePreviousSection) {
  StreamBuilder b;
  b.Prologue(2, kBlocks);
  b.Part(2).Page("pc.bios", kPageSize, PatternPage(1).data()).EndSection(2);
  std::size_t second_part = b.size();
  b.Part(2).Page("pc.bios", 2 * kPageSize, PatternPage(2).data()).EndSection(2);
  b.End(2).EndSection(2).Tail();
  Bytes s = b.bytes();
  // The second PART's record carries CONTINUE (no idstr).
  std::uint64_t word = 0;
  for (int i = 0; i < 8; ++i) word = (word << 8) | s[second_part + 5 + i];
  ASSERT_EQ(word & sf::kFlagMask, sf::kFlagPage | sf::kFlagContinue);
  Outcome o = Parse(s);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  std::vector<Event> pages;
  for (const Event& e : o.visitor.events) {
    if (e.kind == Event::kPage) pages.push_back(e);
  }
  ASSERT_EQ(pages.size(), 2u);
  EXPECT_EQ(pages[1].block, 2u);
  EXPECT_EQ(pages[1].offset, 2 * kPageSize);
}

TEST(StreamParserTest, ConfigurationWithoutSubsectionsAndStreamWithoutConfigurationParse) {
  StreamBuilder with;
  with.Prologue(2, kBlocks).End(2).EndSection(2).Tail();
  EXPECT_TRUE(Parse(with.bytes()).status.ok());
  StreamBuilder without;
  without.Header().Start(2, kBlocks).End(2).EndSection(2).Tail();
  EXPECT_TRUE(Parse(without.bytes()).status.ok());
}

TEST(StreamParserTest, EmptyCapabilityListPasses) {
  StreamBuilder c;
  c.Header().Config("pc-q35-7.2");
  c.U8(sf::kSubsection).Counted(sf::kSubsecCapabilities).Be32(1).Be32(0);
  c.Start(2, kBlocks).End(2).EndSection(2).Tail();
  Outcome o = Parse(c.bytes(), 1);
  EXPECT_TRUE(o.status.ok()) << o.status.ToString();
}

TEST(StreamParserTest, VmdescLengthWithZeroBytesAndFakeTrailersInDeviceStateAreHandled) {
  // A 70000-byte vmdesc: its be32 length holds 0x00 bytes, and the device
  // state before it holds "7e .. 00 06 .." look-alikes (see Tail()).
  std::string json = "{\"devices\": [" + std::string(70000 - 15, ' ') + "]}";
  StreamBuilder b;
  b.Prologue(2, kBlocks).End(2).EndSection(2).Tail(5, json);
  for (std::size_t chunk : {0u, 1u, 10u, 11u, 4096u}) {
    Outcome o = Parse(b.bytes(), chunk);
    EXPECT_TRUE(o.status.ok()) << "chunk " << chunk << ": " << o.status.ToString();
  }
}

// ---- Bad input -------------------------------------------------------------

Bytes MinimalStream() {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Page("pc.ram", 0, PatternPage(3).data());
  b.Zero("pc.ram", kPageSize).EndSection(2).End(2).EndSection(2).Tail();
  return b.bytes();
}

TEST(StreamParserErrorTest, EveryProperPrefixIsTruncated) {
  Bytes s = MinimalStream();
  ASSERT_TRUE(Parse(s).status.ok());
  for (std::size_t n = 0; n < s.size(); ++n) {
    Bytes prefix(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(n));
    Outcome o = Parse(prefix);
    ASSERT_EQ(o.status.code(), StatusCode::kProtocolError) << "prefix " << n;
    ASSERT_THAT(o.status.message(), HasSubstr("truncated")) << "prefix " << n;
  }
}

TEST(StreamParserErrorTest, TruncationMessagesSayWhere) {
  Bytes s = MinimalStream();
  auto message_at = [&](std::size_t n) {
    return Parse(Bytes(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(n))).status.message();
  };
  EXPECT_EQ(message_at(0), "truncated migration stream: it is empty");
  EXPECT_EQ(message_at(5), "truncated migration stream: it ends at byte 5 in the file header");
  EXPECT_THAT(message_at(12), HasSubstr("in the configuration section"));
  // Inside the first PAGE payload.
  StreamBuilder before_page;
  before_page.Prologue(2, kBlocks).Part(2);
  std::size_t page_record = before_page.size();
  EXPECT_THAT(message_at(page_record + 100),
              HasSubstr("inside the ram record at byte " + std::to_string(page_record)));
  EXPECT_THAT(message_at(s.size() - 1), HasSubstr("without a complete EOF and vmdesc trailer"));
}

TEST(StreamParserErrorTest, TrailingBytesAfterTheVmdescAreTruncationOfANewRecord) {
  Bytes s = MinimalStream();
  s.push_back('x');
  Outcome o = Parse(s);
  EXPECT_EQ(o.status.code(), StatusCode::kProtocolError);
  EXPECT_THAT(o.status.message(), HasSubstr("without a complete EOF and vmdesc trailer"));
}

// Parses `s` whole and 1 byte at a time: the error must be the same.
Status ParseBothWays(const Bytes& s) {
  Outcome whole = Parse(s);
  Outcome bytewise = Parse(s, 1);
  EXPECT_EQ(whole.status.code(), bytewise.status.code());
  EXPECT_EQ(whole.status.message(), bytewise.status.message());
  return whole.status;
}

TEST(StreamParserErrorTest, WrongMagicIsRejected) {
  StreamBuilder b;
  b.Header(0x51455650).Config().Start(2, kBlocks);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_EQ(s.message(),
            "not a QEMU migration stream: magic 0x51455650 at byte 0, expected 0x5145564d (QEVM)");
}

TEST(StreamParserErrorTest, WrongVersionIsRejected) {
  StreamBuilder b;
  b.Header(sf::kFileMagic, 2).Config();
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kVersionMismatch);
  EXPECT_EQ(s.message(), "migration stream version 2 at byte 4 is not supported, expected 3");
}

TEST(StreamParserErrorTest, UnknownSectionTypeAfterTheHeaderIsRejected) {
  StreamBuilder b;
  b.Header().Config().U8(0x42).Raw("garbage");
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_EQ(s.message(), "unknown section type 0x42 at byte 26");
}

TEST(StreamParserErrorTest, UnknownRecordFlagIsRejected) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Be64(0x1000 | 0x400).Counted("pc.ram");
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_THAT(s.message(), HasSubstr("unknown ram record flags 0x400 at byte"));
}

TEST(StreamParserErrorTest, ObsoleteFullFlagAndCombinationsAreRejected) {
  for (std::uint32_t flags : {sf::kFlagFull, sf::kFlagPage | sf::kFlagZero}) {
    StreamBuilder b;
    b.Prologue(2, kBlocks).Part(2).Be64(flags).Counted("pc.ram");
    Status s = ParseBothWays(b.bytes());
    EXPECT_EQ(s.code(), StatusCode::kProtocolError) << flags;
    EXPECT_THAT(s.message(), HasSubstr("unknown ram record flags"));
  }
}

TEST(StreamParserErrorTest, FooterIdMismatchIsRejected) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Zero("pc.ram", 0).Eos().Footer(3);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_THAT(s.message(), HasSubstr("ram section footer carries section id 3, expected 2"));
}

TEST(StreamParserErrorTest, MissingFooterIsRejected) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Eos().Part(2);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_THAT(s.message(), HasSubstr("missing footer after ram section 2: found byte 0x02"));
}

TEST(StreamParserErrorTest, OffsetOutOfRangeIsRejected) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Zero("pc.bios", 4 * kPageSize);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_THAT(s.message(),
              HasSubstr("ram record offset 0x4000 is beyond block 'pc.bios' of length 0x4000"));
}

TEST(StreamParserErrorTest, UnknownBlockNameIsRejected) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Zero("pc.ram", 0).Zero("nosuch.ram", 0);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_THAT(s.message(), HasSubstr("ram record names unknown block 'nosuch.ram' at byte"));
}

TEST(StreamParserErrorTest, ContinueBeforeAnyIdstrIsRejected) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Be64(sf::kFlagZero | sf::kFlagContinue).U8(0);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_THAT(s.message(), HasSubstr("CONTINUE ram record before any record named a block"));
}

TEST(StreamParserErrorTest, XbzrleRecordIsRefused) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Be64(sf::kFlagXbzrle).Counted("pc.ram").U8(1).Be16(0);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kNotSupported);
  EXPECT_THAT(s.message(), HasSubstr("capability xbzrle"));
}

TEST(StreamParserErrorTest, CompressedPageIsRefused) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).Zero("pc.ram", 0);
  b.Be64(sf::kFlagCompressPage | sf::kFlagContinue).Be32(3).Raw("abc");
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kNotSupported);
  EXPECT_THAT(s.message(), HasSubstr("capability compress"));
}

TEST(StreamParserErrorTest, PostcopyCommandsAreRefused) {
  struct Case {
    std::uint16_t cmd;
    std::string args;
    const char* capability;
  } cases[] = {
      {sf::kCmdPostcopyAdvise, std::string(16, '\0'), "postcopy-ram or dirty-bitmaps"},
      {sf::kCmdPostcopyListen, "", "postcopy-ram"},
      {sf::kCmdPackaged, std::string("\0\0\0\4", 4), "postcopy-ram"},
      {sf::kCmdEnableColo, "", "x-colo"},
      {sf::kCmdRecvBitmap, "x", "postcopy recovery"},
  };
  for (const Case& c : cases) {
    StreamBuilder b;
    b.Header().Config().ReturnPathAndPing().Command(c.cmd, c.args);
    Status s = ParseBothWays(b.bytes());
    EXPECT_EQ(s.code(), StatusCode::kNotSupported) << c.cmd;
    EXPECT_THAT(s.message(), HasSubstr(c.capability));
    EXPECT_THAT(s.message(), HasSubstr("at byte 40 is not supported"));
  }
}

TEST(StreamParserErrorTest, UnknownCommandAndBadPingLengthAreProtocolErrors) {
  StreamBuilder b;
  b.Header().Config().Command(77);
  EXPECT_EQ(ParseBothWays(b.bytes()).message(), "unknown command 77 at byte 26");
  StreamBuilder c;
  c.Header().Config().Command(sf::kCmdPing, "12");
  EXPECT_EQ(ParseBothWays(c.bytes()).message(), "command PING with argument length 2 at byte 26");
}

TEST(StreamParserErrorTest, XIgnoreSharedIsRefused) {
  StreamBuilder b;
  b.Header().Config("pc-q35-7.2", {"x-ignore-shared"}, true).Start(2, kBlocks);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kNotSupported);
  EXPECT_THAT(s.message(), HasSubstr("capability x-ignore-shared"));
}

TEST(StreamParserErrorTest, OtherIterativeSectionIsRefused) {
  StreamBuilder b;
  b.Header().Config().U8(sf::kSectionStart).Be32(1).Counted("block").Be32(0).Be32(1);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kNotSupported);
  EXPECT_THAT(s.message(), HasSubstr("iterative section 'block'"));
}

TEST(StreamParserErrorTest, RamSectionVersionOtherThan4IsRejected) {
  StreamBuilder b;
  b.Header().Config().U8(sf::kSectionStart).Be32(2).Counted("ram").Be32(0).Be32(3);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kVersionMismatch);
  EXPECT_THAT(s.message(), HasSubstr("ram section version 3"));
}

TEST(StreamParserErrorTest, PartBeforeStartAndDeviceStateBeforeEndAreRejected) {
  StreamBuilder b;
  b.Header().Config().Part(2).EndSection(2);
  EXPECT_THAT(ParseBothWays(b.bytes()).message(), HasSubstr("PART section 2 before the ram START"));
  StreamBuilder c;
  c.Prologue(2, kBlocks).Tail();
  EXPECT_THAT(ParseBothWays(c.bytes()).message(), HasSubstr("before the ram END section"));
}

TEST(StreamParserErrorTest, SectionIdOfAnotherSectionIsRejected) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(9);
  EXPECT_THAT(ParseBothWays(b.bytes()).message(),
              HasSubstr("PART section id 9 is not the ram section id 2"));
}

TEST(StreamParserErrorTest, BlockListThatOverrunsItsTotalIsRejected) {
  StreamBuilder b;
  b.Header().Config().U8(sf::kSectionStart).Be32(2).Counted("ram").Be32(0).Be32(4);
  b.Be64(0x3000 | sf::kFlagMemSize).Counted("a").Be64(0x2000).Counted("b").Be64(0x2000);
  EXPECT_THAT(ParseBothWays(b.bytes()).message(),
              HasSubstr("ram block 'b' of length 0x2000 overruns the announced total 0x3000"));
}

TEST(StreamParserErrorTest, VisitorErrorStopsTheParser) {
  class FailOnSecondPage : public RecordingVisitor {
   public:
    Status OnPage(std::uint32_t block, std::uint64_t offset, const std::uint8_t* data) override {
      if (++pages == 2) return Status::Aborted("visitor gave up");
      return RecordingVisitor::OnPage(block, offset, data);
    }
    int pages = 0;
  };
  Bytes s = RichStream();
  FailOnSecondPage v;
  StreamParser parser(&v);
  Status st = parser.Feed(s);
  EXPECT_EQ(st.code(), StatusCode::kAborted);
  EXPECT_EQ(v.pages, 2);
  EXPECT_EQ(parser.Feed(s).code(), StatusCode::kAborted);
  EXPECT_EQ(parser.Finish().code(), StatusCode::kAborted);
}

TEST(StreamParserErrorTest, CorruptedStreamsFailTheSameWayForAnyChunkingAndNeverOverrun) {
  // Deterministic mutations of a valid stream: whatever the outcome, it must
  // not depend on chunking, and reported pages must lie inside their block.
  Bytes good = MinimalStream();
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    Bytes s = good;
    int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      std::size_t pos = rng() % s.size();
      s[pos] = static_cast<std::uint8_t>(rng());
    }
    Outcome whole = Parse(s);
    Outcome odd = Parse(s, 1 + rng() % 5000);
    ASSERT_EQ(whole.status.message(), odd.status.message()) << "round " << round;
    ASSERT_EQ(whole.visitor.events, odd.visitor.events) << "round " << round;
    for (const Event& ev : whole.visitor.events) {
      if (ev.kind == Event::kPage || ev.kind == Event::kZero) {
        ASSERT_LT(ev.block, kBlocks.size());
        ASSERT_LT(ev.offset, kBlocks[ev.block].length);
      }
    }
  }
}

// ---- QEMU 10.0 ---------------------------------------------------------------

constexpr std::string_view kVmdesc10 =
    R"({"configuration": {"vmsd_name": "configuration", "version": 1, "fields": [)"
    R"({"name": "len", "type": "uint32", "size": 4}, {"name": "name", "type": "buffer", )"
    R"("size": 14}]}, "page_size": 4096, "devices": []})";

// A stream as QEMU 10.0 writes it: machine type pc-i440fx-10.0, ram section
// id 1 (escdr's -nodefaults), a return path, PART sections, then
// SWITCHOVER_START right after the last PART's footer, a non-empty END, and a
// vmdesc that starts with the configuration.
Bytes Qemu10Stream(std::size_t* switchover_at = nullptr) {
  StreamBuilder b;
  b.Header().Config("pc-i440fx-10.0").ReturnPathAndPing().Start(1, kBlocks);
  b.Part(1);
  for (std::uint32_t i = 0; i < 4; ++i) b.Page("pc.ram", i * kPageSize, PatternPage(i).data());
  b.Zero("pc.ram", 4 * kPageSize).Zero("pc.bios", 0);
  b.EndSection(1);
  b.Part(1).Page("pc.bios", kPageSize, PatternPage(7).data()).EndSection(1);
  if (switchover_at != nullptr) *switchover_at = b.size();
  b.Command(sf::kCmdSwitchoverStart);
  b.End(1);
  b.Page("pc.bios", 2 * kPageSize, PatternPage(8).data());  // CONTINUE across SWITCHOVER_START
  b.Zero("pc.ram", 0);
  b.EndSection(1);
  b.Tail(3, kVmdesc10);
  return b.bytes();
}

TEST(StreamParser10Test, SwitchoverStartBeforeTheRamEndIsAccepted) {
  std::size_t at = 0;
  Bytes s = Qemu10Stream(&at);
  Outcome whole = Parse(s);
  ASSERT_TRUE(whole.status.ok()) << whole.status.ToString();
  EXPECT_EQ(whole.visitor.bytes, s);
  EXPECT_TRUE(whole.ram_complete);
  EXPECT_EQ(whole.stats.switchover_starts, 1u);
  EXPECT_EQ(whole.stats.page_records, 6u);
  EXPECT_EQ(whole.stats.zero_records, 3u);
  // The command belongs to the iterate phase; the END phase starts right after it.
  auto end_phase = std::find_if(whole.visitor.events.begin(), whole.visitor.events.end(),
                                [](const Event& e) {
                                  return e.kind == Event::kPhase &&
                                         e.phase == StreamPhase::kRamComplete;
                                });
  ASSERT_NE(end_phase, whole.visitor.events.end());
  EXPECT_EQ(end_phase->at, at + 5);
  // The CONTINUE record right after it names the block of the last PART.
  auto last_page = std::find_if(whole.visitor.events.rbegin(), whole.visitor.events.rend(),
                                [](const Event& e) { return e.kind == Event::kPage; });
  EXPECT_EQ(last_page->block, 2u);
  EXPECT_EQ(last_page->offset, 2 * kPageSize);
  for (std::size_t chunk : {1u, 5u, 6u, 4097u}) {
    Outcome o = Parse(s, chunk);
    ASSERT_TRUE(o.status.ok()) << "chunk " << chunk << ": " << o.status.ToString();
    EXPECT_EQ(o.visitor.bytes, s);
    EXPECT_EQ(o.visitor.events, whole.visitor.events);
    EXPECT_EQ(o.stats.switchover_starts, 1u);
  }
}

TEST(StreamParser10Test, StreamWithoutSwitchoverStartStillParses) {
  // Machine types <= 9.2 on QEMU 10.0, and every 7.2 stream, have none.
  Outcome o = Parse(RichStream());
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_EQ(o.stats.switchover_starts, 0u);
}

TEST(StreamParser10Test, SwitchoverStartWithAnArgumentIsRejected) {
  StreamBuilder b;
  b.Prologue(2, kBlocks).Part(2).EndSection(2);
  std::size_t at = b.size();
  b.Command(sf::kCmdSwitchoverStart, "x");
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_EQ(s.message(),
            "command SWITCHOVER_START with argument length 1 at byte " + std::to_string(at));
}

TEST(StreamParser10Test, MachineTypeIsExposedOnceTheConfigurationIsParsed) {
  Bytes s = Qemu10Stream();
  RecordingVisitor v;
  StreamParser parser(&v);
  EXPECT_EQ(parser.machine(), "");
  ASSERT_TRUE(parser.Feed({s.data(), 20}).ok());  // inside the machine name
  EXPECT_EQ(parser.machine(), "");
  ASSERT_TRUE(parser.Feed({s.data() + 20, s.size() - 20}).ok());
  EXPECT_EQ(parser.machine(), "pc-i440fx-10.0");
  EXPECT_TRUE(parser.Finish().ok());

  StreamBuilder without;
  without.Header().Start(2, kBlocks).End(2).EndSection(2).Tail();
  RecordingVisitor v2;
  StreamParser p2(&v2);
  ASSERT_TRUE(p2.Feed(without.bytes()).ok());
  ASSERT_TRUE(p2.Finish().ok());
  EXPECT_EQ(p2.machine(), "");
}

TEST(StreamParser10Test, MultifdFlushRecordIsRefusedNamingMultifd) {
  // 10.0 writes a bare be64 0x200 (no idstr, no payload) in ram sections
  // only with the multifd capability.
  for (bool in_start : {false, true}) {
    StreamBuilder b;
    b.Header().Config("pc-i440fx-10.0");
    std::size_t at = 0;
    if (in_start) {
      b.U8(sf::kSectionStart).Be32(1).Counted("ram").Be32(0).Be32(4);
      b.Be64(kPageSize | sf::kFlagMemSize).Counted("pc.bios").Be64(kPageSize);
      at = b.size();
      b.Be64(sf::kFlagMultifdFlush).Eos().Footer(1);
    } else {
      b.Start(1, kBlocks).Part(1).Zero("pc.ram", 0);
      at = b.size();
      b.Be64(sf::kFlagMultifdFlush).Eos().Footer(1);
    }
    Status s = ParseBothWays(b.bytes());
    EXPECT_EQ(s.code(), StatusCode::kNotSupported) << in_start;
    EXPECT_EQ(s.message(), "MULTIFD_FLUSH record (capability multifd) at byte " +
                               std::to_string(at) + " is not supported");
  }
}

TEST(StreamParser10Test, ZeroRecordWithNonZeroFillIsRejectedForMachineTypes82AndLater) {
  struct Case {
    const char* machine;
    bool refused;
  } cases[] = {
      {"pc-i440fx-10.0", true}, {"pc-q35-10.0", true},  {"pc-q35-8.2", true},
      {"pc-i440fx-9.2", true},  {"pc-q35-8.1", false}, {"pc-i440fx-7.2", false},
      {"microvm", false},       {"pc-i440fx-x.y", false},
  };
  for (const Case& c : cases) {
    StreamBuilder b;
    b.Header().Config(c.machine).Start(1, kBlocks).Part(1).Zero("pc.ram", 0);
    std::size_t at = b.size();
    b.Zero("pc.ram", kPageSize, 0xab).EndSection(1).End(1).EndSection(1).Tail();
    Status s = ParseBothWays(b.bytes());
    if (c.refused) {
      EXPECT_EQ(s.code(), StatusCode::kProtocolError) << c.machine;
      EXPECT_EQ(s.message(), fmt::format("ZERO ram record with fill byte 0xab in a stream of "
                                         "machine type {} (its destination, QEMU >= 8.2, "
                                         "accepts only 0) at byte {}",
                                         c.machine, at));
    } else {
      EXPECT_TRUE(s.ok()) << c.machine << ": " << s.ToString();
    }
  }
}

TEST(StreamParser10Test, MappedRamCapabilityIsRefused) {
  StreamBuilder b;
  b.Header().Config("pc-i440fx-10.0", {"mapped-ram"});
  std::size_t cap_at = 27 + 1 + 1 + sf::kSubsecCapabilities.size() + 4 + 4;
  b.Start(1, kBlocks);
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kNotSupported);
  EXPECT_EQ(s.message(),
            "capability mapped-ram (RAM is written at fixed file offsets, not as a stream of page "
            "records) at byte " +
                std::to_string(cap_at) + " is not supported");
}

TEST(StreamParser10Test, EarlySetupDeviceSectionIsRefusedByName) {
  // A FULL section during setup (virtio-mem's early_setup state), before the
  // ram START and after it.
  for (bool after_start : {false, true}) {
    StreamBuilder b;
    b.Header().Config("pc-q35-10.0");
    if (after_start) b.Start(1, kBlocks);
    std::size_t at = b.size();
    b.U8(sf::kSectionFull).Be32(7).Counted("0000:00:04.0/virtio-mem-early").Be32(0).Be32(1);
    b.Raw("opaque");
    Status s = ParseBothWays(b.bytes());
    EXPECT_EQ(s.code(), StatusCode::kNotSupported);
    EXPECT_EQ(s.message(),
              "early-setup device-state section '0000:00:04.0/virtio-mem-early' (FULL, id 7) "
              "before the ram END section (devices saved during setup, such as virtio-mem) at "
              "byte " + std::to_string(at) + " is not supported");
  }
  // Between PART sections it is malformed.
  StreamBuilder c;
  c.Header().Config("pc-q35-10.0").Start(1, kBlocks).Part(1).EndSection(1);
  std::size_t at = c.size();
  c.U8(sf::kSectionFull).Be32(7).Counted("timer").Be32(0).Be32(1);
  Status s = ParseBothWays(c.bytes());
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_EQ(s.message(), "device-state (FULL) section 'timer' (id 7) before the ram END section "
                         "at byte " + std::to_string(at));
  // Truncated inside its header.
  Bytes cut(c.bytes().begin(), c.bytes().begin() + static_cast<std::ptrdiff_t>(at + 7));
  EXPECT_THAT(Parse(cut).status.message(),
              HasSubstr("inside the section header at byte " + std::to_string(at)));
}

TEST(StreamParser10Test, CompressedPageMessageSaysTheCapabilityIsGoneIn91) {
  StreamBuilder b;
  b.Header().Config("pc-i440fx-10.0").Start(1, kBlocks).Part(1).Zero("pc.ram", 0);
  b.Be64(sf::kFlagCompressPage | sf::kFlagContinue).Be32(3).Raw("abc");
  Status s = ParseBothWays(b.bytes());
  EXPECT_EQ(s.code(), StatusCode::kNotSupported);
  EXPECT_THAT(s.message(),
              HasSubstr("COMPRESS_PAGE record (capability compress, removed in QEMU 9.1)"));
}

TEST(StreamParser10Test, CorruptedQemu10StreamsFailTheSameWayForAnyChunking) {
  Bytes good = Qemu10Stream();
  std::mt19937 rng(10);
  for (int round = 0; round < 200; ++round) {
    Bytes s = good;
    s[rng() % s.size()] = static_cast<std::uint8_t>(rng());
    Outcome whole = Parse(s);
    Outcome odd = Parse(s, 1 + rng() % 300);
    ASSERT_EQ(whole.status.message(), odd.status.message()) << "round " << round;
    ASSERT_EQ(whole.visitor.events, odd.visitor.events) << "round " << round;
  }
}

// ---- Real streams -------------------------------------------------------------
//
// Cut down from streams that QEMU itself wrote for escdr's test guest
// (fuzz/save-guest-stream.sh, escdr_fuzz_seeds; docs/qemu-migration-stream.md):
// QEMU 7.2.22 with the guest stopped, and QEMU 10.0.13
// (1:10.0.13+ds-0+deb13u1) with the guest running idle or rewriting 16 MiB of
// its RAM, `-M pc -m 128 -nodefaults`. Each file starts with the fuzz
// harness's 8 steering bytes.

Bytes CorpusStream(const std::string& name) {
  std::string path = std::string(ESCDR_SOURCE_DIR) + "/fuzz/corpus/stream_parser/" + name;
  std::ifstream in(path, std::ios::binary);
  Bytes b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_GT(b.size(), 8u) << "cannot read " << path;
  if (b.size() <= 8) return {};
  return Bytes(b.begin() + 8, b.end());
}

struct RealStream {
  const char* file;
  const char* machine;
  std::uint64_t switchover_starts;
};

class RealStreamTest : public ::testing::TestWithParam<RealStream> {};

TEST_P(RealStreamTest, ParsesWholeAndInRandomChunksWithTheSameEvents) {
  const RealStream& param = GetParam();
  Bytes s = CorpusStream(param.file);
  ASSERT_FALSE(s.empty());
  Outcome whole = Parse(s);
  ASSERT_TRUE(whole.status.ok()) << whole.status.ToString();
  EXPECT_EQ(whole.visitor.bytes, s);
  EXPECT_TRUE(whole.ram_complete);
  EXPECT_EQ(whole.stats.switchover_starts, param.switchover_starts);
  EXPECT_GT(whole.stats.page_records, 0u);
  EXPECT_GT(whole.stats.zero_records, 0u);
  // -nodefaults: RAM, the ACPI tables, the BIOS and option ROMs.
  ASSERT_EQ(whole.visitor.block_list.size(), 6u);
  EXPECT_EQ(whole.visitor.block_list[0], (RamBlockInfo{"pc.ram", 128u << 20}));
  EXPECT_EQ(whole.visitor.block_list[2].name, "pc.bios");
  for (const Event& e : whole.visitor.events) {
    if (e.kind == Event::kZero) {
      EXPECT_EQ(e.fill, 0) << e;  // real sources write 0
    }
  }
  // SWITCHOVER_START ("08 000b 0000") stands right before the ram END.
  auto end_phase = std::find_if(whole.visitor.events.begin(), whole.visitor.events.end(),
                                [](const Event& e) {
                                  return e.kind == Event::kPhase &&
                                         e.phase == StreamPhase::kRamComplete;
                                });
  ASSERT_NE(end_phase, whole.visitor.events.end());
  const Bytes switchover = {0x08, 0x00, 0x0b, 0x00, 0x00};
  ASSERT_GE(end_phase->at, 5u);
  EXPECT_EQ(Bytes(s.begin() + static_cast<std::ptrdiff_t>(end_phase->at - 5),
                  s.begin() + static_cast<std::ptrdiff_t>(end_phase->at)) == switchover,
            param.switchover_starts == 1);

  std::mt19937 rng(2024);
  for (int round = 0; round < 10; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    RecordingVisitor v;
    StreamParser p(&v);
    std::size_t i = 0;
    while (i < s.size()) {
      // Mostly small pieces, sometimes whole pages and more.
      std::size_t n = rng() % 4 == 0 ? 1 + rng() % 20000 : 1 + rng() % 64;
      n = std::min(n, s.size() - i);
      ASSERT_TRUE(p.Feed({s.data() + i, n}).ok());
      i += n;
    }
    ASSERT_TRUE(p.Finish().ok());
    EXPECT_EQ(v.bytes, s);
    EXPECT_EQ(v.events, whole.visitor.events);
    EXPECT_EQ(p.machine(), param.machine);
    EXPECT_EQ(p.stats().switchover_starts, param.switchover_starts);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Qemu, RealStreamTest,
    ::testing::Values(RealStream{"real-complete-mixed-chunks", "pc-i440fx-7.2", 0},
                      RealStream{"qemu10-idle-complete-mixed-chunks", "pc-i440fx-10.0", 1},
                      RealStream{"qemu10-busy-complete-mixed-chunks", "pc-i440fx-10.0", 1}),
    [](const ::testing::TestParamInfo<RealStream>& param_info) {
      std::string n = param_info.param.file;
      n = n.substr(0, n.find("-complete"));
      std::replace(n.begin(), n.end(), '-', '_');
      return n;
    });

TEST(RealStream10Test, VmdescStartsWithTheConfiguration) {
  Bytes s = CorpusStream("qemu10-idle-complete-mixed-chunks");
  std::string text(s.begin(), s.end());
  std::size_t vmdesc = text.rfind("{\"configuration\": {");
  ASSERT_NE(vmdesc, std::string::npos);
  // 00 (EOF) 06 (VMDESCRIPTION) be32 length, then the JSON to the end.
  ASSERT_GE(vmdesc, 6u);
  EXPECT_EQ(s[vmdesc - 6], sf::kSectionEof);
  EXPECT_EQ(s[vmdesc - 5], sf::kSectionVmdesc);
  std::uint32_t len = (std::uint32_t{s[vmdesc - 4]} << 24) | (std::uint32_t{s[vmdesc - 3]} << 16) |
                      (std::uint32_t{s[vmdesc - 2]} << 8) | s[vmdesc - 1];
  EXPECT_EQ(vmdesc + len, s.size());
}

TEST(RealStream10Test, MultifdMainChannelIsRefusedAtItsFirstMultifdFlush) {
  // The main channel of a QEMU 10.0 migration with capability multifd: the
  // ram START carries a MULTIFD_FLUSH word right before its EOS.
  Bytes s = CorpusStream("qemu10-multifd-main-head");
  ASSERT_FALSE(s.empty());
  Status st = ParseBothWays(s);
  EXPECT_EQ(st.code(), StatusCode::kNotSupported);
  EXPECT_EQ(st.message(), "MULTIFD_FLUSH record (capability multifd) at byte 184 is not supported");
}

TEST(RealStream10Test, MappedRamFileIsRefusedInItsConfiguration) {
  Bytes s = CorpusStream("qemu10-mapped-ram-head");
  ASSERT_FALSE(s.empty());
  Status st = ParseBothWays(s);
  EXPECT_EQ(st.code(), StatusCode::kNotSupported);
  EXPECT_THAT(st.message(), HasSubstr("capability mapped-ram"));
  EXPECT_THAT(st.message(), HasSubstr("at byte 63 is not supported"));
}

// ---- ParseStreamFile --------------------------------------------------------

// A unique temporary directory with helpers to write files into it.
class StreamFiles {
 public:
  StreamFiles() {
    auto d = TempDir::Create("escdr-stream-test");
    EXPECT_TRUE(d.has_value());
    if (d.has_value()) dir_ = std::move(*d);
  }
  std::string File(const std::string& name, const Bytes& content) const {
    std::string p = dir_.File(name);
    std::FILE* f = std::fopen(p.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    if (f != nullptr) {
      // fwrite's buffer must not be null, which an empty vector's data() is.
      if (!content.empty()) std::fwrite(content.data(), 1, content.size(), f);
      std::fclose(f);
    }
    return p;
  }
  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_;
};

TEST(ParseStreamFileTest, ParsesAFileLargerThanOneChunk) {
  StreamBuilder b;
  b.Prologue(7, {{"pc.ram", 512 * kPageSize}}).Part(7);
  for (std::uint32_t i = 0; i < 512; ++i) b.Page("pc.ram", i * kPageSize, PatternPage(i).data());
  b.EndSection(7).End(7).EndSection(7).Tail();
  ASSERT_GT(b.size(), sf::kFileChunkSize);
  StreamFiles dir;
  std::string path = dir.File("big.mig", b.bytes());
  RecordingVisitor v;
  Status s = ParseStreamFile(path, &v);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(v.bytes, b.bytes());
}

TEST(ParseStreamFileTest, VisitorErrorKeepsItsCodeAndNamesTheFile) {
  class FailOnBlockList : public RecordingVisitor {
   public:
    Status OnBlockList(const std::vector<RamBlockInfo>&) override {
      return Status::ResourceExhausted("cannot allocate RAM block 'pc.ram'");
    }
  };
  StreamFiles dir;
  std::string path = dir.File("vm.mig", MinimalStream());
  FailOnBlockList v;
  Status s = ParseStreamFile(path, &v);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(s.message(), path + ": cannot allocate RAM block 'pc.ram'");
}

TEST(ParseStreamFileTest, MissingFileIsNotFound) {
  RecordingVisitor v;
  Status s = ParseStreamFile("/nonexistent/escdr/stream.mig", &v);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(
      s.message(),
      "cannot open migration stream /nonexistent/escdr/stream.mig: No such file or directory");
}

TEST(ParseStreamFileTest, UnreadableFileIsAnIOError) {
  StreamFiles dir;  // a directory opens but cannot be read
  RecordingVisitor v;
  Status s = ParseStreamFile(dir.path(), &v);
  EXPECT_EQ(s.code(), StatusCode::kIOError);
  EXPECT_THAT(s.message(), HasSubstr("cannot read migration stream " + dir.path() + " at byte 0"));
}

TEST(ParseStreamFileTest, EmptyFileIsTruncated) {
  StreamFiles dir;
  std::string path = dir.File("empty.mig", {});
  RecordingVisitor v;
  Status s = ParseStreamFile(path, &v);
  EXPECT_EQ(s.code(), StatusCode::kProtocolError);
  EXPECT_EQ(s.message(), path + ": truncated migration stream: it is empty");
}

TEST(ParseStreamFileTest, TruncatedFileNamesTheFileAndTheOffset) {
  Bytes s = MinimalStream();
  s.resize(s.size() / 2);
  StreamFiles dir;
  std::string path = dir.File("half.mig", s);
  RecordingVisitor v;
  Status st = ParseStreamFile(path, &v);
  EXPECT_EQ(st.code(), StatusCode::kProtocolError);
  EXPECT_THAT(st.message(), HasSubstr(path + ": truncated migration stream: it ends at byte " +
                                      std::to_string(s.size())));
}

}  // namespace
}  // namespace escdr
