#include "escdr/wire/messages.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "escdr/wire/coding.h"

namespace escdr::wire {
namespace {

Prepare SamplePrepare() {
  Prepare p;
  p.migration_id = 0x1122334455667788ull;
  p.catalog_checksum = 0xdeadbeefcafef00dull;
  p.catalog_entries = 12345;
  p.window_pages = 16384;
  p.vm_name = "vm-42";
  p.kind = VmKind{"debian", "12", "qemu", "7.2"};
  return p;
}

TEST(MessagesTest, HelloRoundTrip) {
  Hello h{kProtocolVersion, Role::kDestination};
  auto bytes = h.Encode();
  EXPECT_EQ(bytes.size(), kHelloPayloadSize);
  auto d = Hello::Decode(bytes);
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(d->version, kProtocolVersion);
  EXPECT_EQ(d->role, Role::kDestination);
}

TEST(MessagesTest, HelloMagicIsTheAsciiBytes) {
  auto bytes = Hello{1, Role::kSource}.Encode();
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), "ESCDRWIR");
}

TEST(MessagesTest, HelloWithWrongMagicIsRejected) {
  auto bytes = Hello{1, Role::kSource}.Encode();
  bytes[0] = 'X';
  auto d = Hello::Decode(bytes);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), StatusCode::kProtocolError);
  EXPECT_NE(d.error().message().find("not an escdr agent"), std::string::npos);
}

TEST(MessagesTest, HelloWithInvalidRoleIsRejected) {
  auto bytes = Hello{1, Role::kSource}.Encode();
  bytes[10] = 7;
  EXPECT_FALSE(Hello::Decode(bytes).has_value());
}

TEST(MessagesTest, PrepareRoundTrip) {
  Prepare p = SamplePrepare();
  ASSERT_TRUE(p.Validate().ok());
  auto bytes = p.Encode();
  EXPECT_LE(bytes.size(), kMaxPreparePayload);
  auto d = Prepare::Decode(bytes);
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(d->migration_id, p.migration_id);
  EXPECT_EQ(d->catalog_checksum, p.catalog_checksum);
  EXPECT_EQ(d->catalog_entries, p.catalog_entries);
  EXPECT_EQ(d->window_pages, p.window_pages);
  EXPECT_EQ(d->vm_name, p.vm_name);
  EXPECT_EQ(d->kind, p.kind);
}

TEST(MessagesTest, PrepareWithTrailingBytesIsRejected) {
  auto bytes = SamplePrepare().Encode();
  bytes.push_back(0);
  EXPECT_FALSE(Prepare::Decode(bytes).has_value());
}

TEST(MessagesTest, PrepareWithEmptyKindFieldIsRejected) {
  Prepare p = SamplePrepare();
  p.kind.os_version.clear();
  EXPECT_FALSE(p.Validate().ok());
  EXPECT_FALSE(Prepare::Decode(p.Encode()).has_value());
}

TEST(MessagesTest, PrepareWithTooManyCatalogEntriesIsRejected) {
  Prepare p = SamplePrepare();
  p.catalog_entries = kMaxCatalogEntries + 1;
  auto d = Prepare::Decode(p.Encode());
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), StatusCode::kProtocolError);
}

TEST(MessagesTest, AvailabilitySmallBitmapIsRawAndRoundTrips) {
  Availability a;
  a.catalog_entries = 21;
  a.bitmap.assign(BitmapBytes(21), 0);
  BitmapSet(a.bitmap, 0);
  BitmapSet(a.bitmap, 20);
  auto bytes = a.Encode();
  EXPECT_EQ(bytes[8], 0);  // raw
  auto d = Availability::Decode(bytes);
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(d->catalog_entries, 21u);
  EXPECT_EQ(d->available_count(), 2u);
  EXPECT_TRUE(BitmapTest(d->bitmap, 20));
  EXPECT_FALSE(BitmapTest(d->bitmap, 19));
}

TEST(MessagesTest, AvailabilityLargeBitmapIsCompressedAndRoundTrips) {
  Availability a;
  a.catalog_entries = 1000003;
  a.bitmap.assign(BitmapBytes(a.catalog_entries), 0);
  for (std::uint32_t i = 0; i < a.catalog_entries; i += 3) BitmapSet(a.bitmap, i);
  auto bytes = a.Encode();
  EXPECT_EQ(bytes[8], 1);  // zstd
  EXPECT_LT(bytes.size(), a.bitmap.size() / 10);
  auto d = Availability::Decode(bytes);
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ(d->bitmap, a.bitmap);
  EXPECT_EQ(d->available_count(), (a.catalog_entries + 2) / 3);
}

TEST(MessagesTest, AvailabilityWithBitsPastTheEndIsRejected) {
  Availability a;
  a.catalog_entries = 9;
  a.bitmap.assign(2, 0);
  auto bytes = a.Encode();
  bytes.back() = 0x02;  // bit 9
  bytes[4] = 1;         // keep the count consistent
  auto d = Availability::Decode(bytes);
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.error().message().find("past entry 9"), std::string::npos) << d.error().message();
}

TEST(MessagesTest, AvailabilityWithWrongCountIsRejected) {
  Availability a;
  a.catalog_entries = 16;
  a.bitmap.assign(2, 0xff);
  auto bytes = a.Encode();
  bytes[4] = 15;
  EXPECT_FALSE(Availability::Decode(bytes).has_value());
}

TEST(MessagesTest, AvailabilityZstdOfTheWrongSizeIsRejected) {
  Availability a;
  a.catalog_entries = 200000;
  a.bitmap.assign(BitmapBytes(a.catalog_entries), 0);
  auto bytes = a.Encode();
  ASSERT_EQ(bytes[8], 1);
  // Claim more entries than the compressed frame declares: it must not be
  // decompressed into a buffer of the claimed size.
  StoreFixed32(bytes.data(), 400000);
  auto d = Availability::Decode(bytes);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), StatusCode::kCorruption);
}

TEST(MessagesTest, RefsRoundTrip) {
  std::vector<std::uint8_t> payload;
  AppendRefsHeader(&payload, 77, 2);
  std::uint8_t e[kRefEntrySize];
  StoreRefEntry(e, RefEntry{0x5000 | kPageContinueFlags, 9});
  payload.insert(payload.end(), e, e + kRefEntrySize);
  StoreRefEntry(e, RefEntry{0, 11});
  payload.insert(payload.end(), e, e + kRefEntrySize);
  auto v = RefsView::Parse(payload);
  ASSERT_TRUE(v.has_value()) << v.error().message();
  EXPECT_EQ(v->first_seq(), 77u);
  ASSERT_EQ(v->count(), 2u);
  EXPECT_EQ(v->entry(0).record_word, 0x5000 | kPageContinueFlags);
  EXPECT_EQ(v->entry(0).content_index, 9u);
  EXPECT_EQ(v->entry(1).record_word, 0u);
  EXPECT_EQ(v->entry(1).content_index, 11u);
}

TEST(MessagesTest, AvailabilityCarriesTheDonorKeyFromVersionThree) {
  Availability a;
  a.catalog_entries = 12;
  a.bitmap = {0x81, 0x04};
  for (std::size_t i = 0; i < a.key.size(); ++i) a.key[i] = static_cast<std::uint8_t>(0xa0 + i);
  auto v3 = a.Encode();
  ASSERT_EQ(v3.size(), kAvailabilityFixedSize + 2);
  EXPECT_TRUE(std::equal(a.key.begin(), a.key.end(), v3.begin() + kAvailabilityFixedSizeV2));
  auto d3 = Availability::Decode(v3);
  ASSERT_TRUE(d3.has_value()) << d3.error().message();
  EXPECT_EQ(d3->key, a.key);
  EXPECT_EQ(d3->bitmap, a.bitmap);
  // Version 2 has no key; each version's layout is refused by the other.
  auto v2 = a.Encode(2);
  ASSERT_EQ(v2.size(), kAvailabilityFixedSizeV2 + 2);
  auto d2 = Availability::Decode(v2, 2);
  ASSERT_TRUE(d2.has_value()) << d2.error().message();
  EXPECT_EQ(d2->key, DonorKey{});
  EXPECT_EQ(d2->bitmap, a.bitmap);
  EXPECT_FALSE(Availability::Decode(v2).has_value());
  EXPECT_FALSE(Availability::Decode(v3, 2).has_value());
}

TEST(MessagesTest, RefsCarryThePageTagFromVersionThree) {
  RefEntry in{0x7000 | kPageContinueFlags, 42, {}};
  for (std::size_t i = 0; i < in.tag.size(); ++i) in.tag[i] = static_cast<std::uint8_t>(3 * i + 1);
  std::vector<std::uint8_t> v3;
  AppendRefsHeader(&v3, 5, 1);
  v3.resize(kRefsFixedSize + kRefEntrySize);
  StoreRefEntry(v3.data() + kRefsFixedSize, in);
  auto p3 = RefsView::Parse(v3);
  ASSERT_TRUE(p3.has_value()) << p3.error().message();
  EXPECT_EQ(p3->entry(0).record_word, in.record_word);
  EXPECT_EQ(p3->entry(0).content_index, 42u);
  EXPECT_EQ(p3->entry(0).tag, in.tag);
  // Version 2: 12-byte entries, no tag.
  std::vector<std::uint8_t> v2;
  AppendRefsHeader(&v2, 5, 1);
  v2.resize(kRefsFixedSize + kRefEntrySizeV2);
  StoreRefEntry(v2.data() + kRefsFixedSize, in, 2);
  auto p2 = RefsView::Parse(v2, 2);
  ASSERT_TRUE(p2.has_value()) << p2.error().message();
  EXPECT_EQ(p2->entry(0).content_index, 42u);
  EXPECT_EQ(p2->entry(0).tag, PageTag{});
  auto wrong = RefsView::Parse(v2);
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code(), StatusCode::kProtocolError);
  EXPECT_FALSE(RefsView::Parse(v3, 2).has_value());
}

TEST(MessagesTest, RefsWithNonPageRecordWordIsRejected) {
  std::vector<std::uint8_t> payload;
  AppendRefsHeader(&payload, 0, 1);
  std::uint8_t e[kRefEntrySize];
  StoreRefEntry(e, RefEntry{0x5000 | 0x022, 1});  // ZERO|CONTINUE
  payload.insert(payload.end(), e, e + kRefEntrySize);
  auto v = RefsView::Parse(payload);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), StatusCode::kProtocolError);
}

TEST(MessagesTest, RefsWithCountNotMatchingLengthIsRejected) {
  std::vector<std::uint8_t> payload;
  AppendRefsHeader(&payload, 0, 3);
  payload.resize(payload.size() + 2 * kRefEntrySize);
  EXPECT_FALSE(RefsView::Parse(payload).has_value());
  std::vector<std::uint8_t> empty;
  AppendRefsHeader(&empty, 0, 0);
  EXPECT_FALSE(RefsView::Parse(empty).has_value());
}

TEST(MessagesTest, PageRequestResponseAndAckRoundTrip) {
  auto r = PageRequest::Decode(PageRequest{123}.Encode());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->seq, 123u);
  std::vector<std::uint8_t> page(4096);
  for (std::size_t i = 0; i < page.size(); ++i) page[i] = static_cast<std::uint8_t>(i);
  auto bytes = EncodePageResponse(55, page.data());
  auto v = PageResponseView::Parse(bytes);
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->seq, 55u);
  EXPECT_TRUE(std::equal(page.begin(), page.end(), v->page));
  bytes.pop_back();
  EXPECT_FALSE(PageResponseView::Parse(bytes).has_value());
  auto a = Ack::Decode(Ack{999}.Encode());
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->next_seq, 999u);
}

TEST(MessagesTest, AckCarriesDeliveredBytesFromVersionTwo) {
  const Ack ack{12, 1u << 30};
  auto v2 = ack.Encode();
  EXPECT_EQ(v2.size(), kAckPayloadSize);
  auto d2 = Ack::Decode(v2);
  ASSERT_TRUE(d2.has_value()) << d2.error().message();
  EXPECT_EQ(d2->next_seq, 12u);
  EXPECT_EQ(d2->delivered_bytes, 1u << 30);
  // Version 1: next_seq only; the other version's length is refused.
  auto v1 = ack.Encode(1);
  EXPECT_EQ(v1.size(), kAckPayloadSizeV1);
  auto d1 = Ack::Decode(v1, 1);
  ASSERT_TRUE(d1.has_value()) << d1.error().message();
  EXPECT_EQ(d1->next_seq, 12u);
  EXPECT_EQ(d1->delivered_bytes, 0u);
  auto wrong = Ack::Decode(v1);
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code(), StatusCode::kProtocolError);
  EXPECT_NE(wrong.error().message().find(
                fmt::format("protocol version {} expects 16", kProtocolVersion)),
            std::string::npos)
      << wrong.error().message();
  EXPECT_FALSE(Ack::Decode(v2, 1).has_value());
}

TEST(MessagesTest, EndAndResultRoundTrip) {
  EndSummary e{1, 2, 3, 4, 5, 6, 7};
  auto eb = e.Encode();
  EXPECT_EQ(eb.size(), kEndPayloadSize);
  auto ed = EndSummary::Decode(eb);
  ASSERT_TRUE(ed.has_value());
  EXPECT_EQ(ed->stream_bytes, 1u);
  EXPECT_EQ(ed->pages_window_full, 7u);
  DestinationResult r{10, 20, 30, 40, 50, 60};
  auto rb = r.Encode();
  EXPECT_EQ(rb.size(), kResultPayloadSize);
  auto rd = DestinationResult::Decode(rb);
  ASSERT_TRUE(rd.has_value());
  EXPECT_EQ(rd->rebuilt_bytes, 10u);
  EXPECT_EQ(rd->scan_micros, 60u);
}

TEST(MessagesTest, ErrorAndAbortRoundTrip) {
  auto s = DecodeError(EncodeError(Status::Corruption("frame checksum mismatch")));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->code(), StatusCode::kCorruption);
  EXPECT_EQ(s->message(), "frame checksum mismatch");
  auto long_msg = DecodeError(EncodeError(Status::Internal(std::string(5000, 'x'))));
  ASSERT_TRUE(long_msg.has_value());
  EXPECT_EQ(long_msg->message().size(), kMaxMessageLength);
  auto a = DecodeAbort(EncodeAbort("operator cancelled"));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, "operator cancelled");
}

}  // namespace
}  // namespace escdr::wire
