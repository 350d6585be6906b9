#include "escdr/page/page_ring.h"

#include <cstring>

#include <gtest/gtest.h>

namespace escdr {
namespace {

TEST(PageRingTest, SlotsWrapAroundTheRing) {
  auto ring = PageRing::Create(4).value();
  EXPECT_EQ(ring.pages(), 4u);
  EXPECT_EQ(ring.size_bytes(), 4 * kPageSize);
  EXPECT_EQ(ring.slot(1), ring.data() + kPageSize);
  EXPECT_EQ(ring.slot(5), ring.slot(1));
  EXPECT_EQ(PageRing::Create(0).value().pages(), 0u);
}

TEST(PageRingTest, AReleasedRingIsReusedForTheSameSizeOnly) {
  PageRing::DropCache();
  std::uint8_t* first = nullptr;
  {
    auto ring = PageRing::Create(8).value();
    first = ring.data();
    std::memset(ring.data(), 0x5a, ring.size_bytes());
  }
  auto other = PageRing::Create(16).value();  // another size: a new mapping
  EXPECT_NE(other.data(), first);
  auto again = PageRing::Create(8).value();  // the cached one, as it was left
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(again.data()[100], 0x5a);
  // Moving hands the mapping over; the moved-from ring releases nothing.
  PageRing moved = std::move(again);
  EXPECT_EQ(moved.data(), first);
  EXPECT_EQ(again.data(), nullptr);
  PageRing::DropCache();
}

}  // namespace
}  // namespace escdr
