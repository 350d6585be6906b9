// FakeMemoryImage: an in-memory MemoryImage for the catalog's unit tests.
//
// Blocks are zero-filled heap buffers; SetPage() fills one page with content
// determined by a 64-bit "content id" alone, so two pages set with the same id
// are byte-identical and pages with different ids differ (id 0 is the zero
// page). Tests state the memory of a sample as a map of ids.
//
// Thread safety: not synchronized; test-only.
#ifndef ESCDR_CATALOG_FAKE_MEMORY_IMAGE_H_
#define ESCDR_CATALOG_FAKE_MEMORY_IMAGE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"

namespace escdr::catalog_test {

// Fills `out` (kPageSize bytes) with the content of id `id`: a splitmix64
// sequence seeded by the id, so each id gives distinct, non-repeating bytes.
inline void FillPage(std::uint64_t id, std::uint8_t* out) {
  if (id == 0) {
    std::memset(out, 0, kPageSize);
    return;
  }
  std::uint64_t x = id * 0x9e3779b97f4a7c15ull;
  for (std::size_t i = 0; i < kPageSize; i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    for (int b = 0; b < 8; ++b) out[i + static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(z >> (8 * b));
  }
}

// The hash of the page with content id `id`.
inline PageHash HashOfId(std::uint64_t id) {
  std::vector<std::uint8_t> page(kPageSize);
  FillPage(id, page.data());
  return HashPage(page.data());
}

class FakeMemoryImage final : public MemoryImage {
 public:
  FakeMemoryImage(std::string source, std::vector<RamBlockInfo> blocks)
      : source_(std::move(source)), blocks_(std::move(blocks)) {
    for (const RamBlockInfo& b : blocks_) data_.emplace_back(b.length, 0);
  }

  // One block "mem0" of `pages` pages.
  static FakeMemoryImage Single(std::string source, std::uint64_t pages) {
    return FakeMemoryImage(std::move(source), {RamBlockInfo{"mem0", pages * kPageSize}});
  }

  FakeMemoryImage(FakeMemoryImage&& other) noexcept
      : source_(std::move(other.source_)),
        blocks_(std::move(other.blocks_)),
        data_(std::move(other.data_)) {}

  // Sets page `page` of block `block` to the content of id `id` (0: zeros).
  void SetPage(std::size_t block, std::uint64_t page, std::uint64_t id) {
    FillPage(id, data_[block].data() + page * kPageSize);
  }
  // Sets pages of block 0 from `ids`, starting at page 0.
  void SetPages(const std::vector<std::uint64_t>& ids) {
    for (std::size_t i = 0; i < ids.size(); ++i) SetPage(0, i, ids[i]);
  }

  const std::vector<RamBlockInfo>& blocks() const override { return blocks_; }
  const std::uint8_t* BlockData(std::size_t block) const override { return data_[block].data(); }
  const std::string& source() const override { return source_; }

 private:
  std::string source_;
  std::vector<RamBlockInfo> blocks_;
  std::vector<std::vector<std::uint8_t>> data_;
};

}  // namespace escdr::catalog_test

#endif  // ESCDR_CATALOG_FAKE_MEMORY_IMAGE_H_
