// HandSource: a source agent played by hand, frame by frame, for tests
// that send the destination what no SourceSession would (hostile or
// malformed frames, an older protocol version).
#ifndef ESCDR_MIGRATE_HAND_SOURCE_TESTING_H_
#define ESCDR_MIGRATE_HAND_SOURCE_TESTING_H_

#include <chrono>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "escdr/migrate/static_content.h"
#include "escdr/wire/frame_io.h"
#include "escdr/wire/messages.h"

namespace escdr::test {

// Plays a source agent by hand: Hello with `version`, Prepare for `content`,
// then reads the destination's Hello and Availability (decoded in `version`).
struct HandSource {
  explicit HandSource(wire::Connection* conn)
      : writer(conn, std::chrono::seconds(10)), reader(conn, "destination") {}

  void Handshake(std::uint16_t version, const StaticContent& content, wire::Availability* avail,
                 std::uint32_t dedup_pages = 0) {
    wire::Prepare prepare;
    prepare.migration_id = 7;
    prepare.catalog_checksum = content.checksum();
    prepare.catalog_entries = content.size();
    prepare.window_pages = 4;
    prepare.vm_name = "vm";
    prepare.kind = content.kind();
    prepare.dedup_pages = dedup_pages;
    wire::FrameBuffer b;
    b.Append(wire::FrameType::kHello, wire::Hello{version, wire::Role::kSource}.Encode());
    b.Append(wire::FrameType::kPrepare, prepare.Encode(version));
    ASSERT_TRUE(writer.Write(b).ok());
    auto hello = reader.Next(std::chrono::seconds(10), "AwaitHello");
    ASSERT_TRUE(hello.has_value()) << hello.error().message();
    ASSERT_EQ(hello->type, wire::FrameType::kHello);
    auto h = wire::Hello::Decode(hello->payload);
    ASSERT_TRUE(h.has_value()) << h.error().message();
    EXPECT_EQ(h->version, version);
    auto f = reader.Next(std::chrono::seconds(10), "AwaitAvailability");
    ASSERT_TRUE(f.has_value()) << f.error().message();
    ASSERT_EQ(f->type, wire::FrameType::kAvailability);
    auto a = wire::Availability::Decode(f->payload, version);
    ASSERT_TRUE(a.has_value()) << a.error().message();
    *avail = std::move(*a);
  }

  // Data {0x51}, then one Refs frame of one reference to `index` (zero tag).
  Status SendByteAndReference(std::uint16_t version, std::uint32_t index) {
    std::vector<std::uint8_t> refs;
    wire::AppendRefsHeader(&refs, 0, 1);
    refs.resize(refs.size() + wire::RefEntrySize(version));
    wire::StoreRefEntry(refs.data() + wire::kRefsFixedSize, {0, index, {}}, version);
    const std::uint8_t data[1] = {0x51};
    wire::FrameBuffer f;
    f.Append(wire::FrameType::kData, data);
    f.Append(wire::FrameType::kRefs, refs);
    return writer.Write(f);
  }

  // Reads frames (Acks are skipped) until an Error; its Status, or why none came.
  Status ReadError() {
    for (;;) {
      auto f = reader.Next(std::chrono::seconds(10), "Streaming");
      if (!f.has_value()) return Status::Internal("no Error frame: " + f.error().message());
      if (f->type == wire::FrameType::kAck) continue;
      if (f->type != wire::FrameType::kError) {
        return Status::Internal("got a " + wire::FrameTypeName(f->type) + " frame, not Error");
      }
      auto st = wire::DecodeError(f->payload);
      return st.has_value() ? *st : st.error();
    }
  }

  wire::FrameWriter writer;
  wire::FrameReader reader;
};

}  // namespace escdr::test

#endif  // ESCDR_MIGRATE_HAND_SOURCE_TESTING_H_
