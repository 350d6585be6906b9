#include "escdr/catalog/catalog_match.h"

#include <fmt/format.h>

#include "escdr/page/page.h"

namespace escdr {

std::uint64_t PageCounts::SavedBytes() const {
  return (by_position + by_content_only) * kPageSize;
}

double PageCounts::SavedPercent() const {
  if (total == 0) return 0.0;
  return 100.0 * static_cast<double>(by_position + by_content_only) / static_cast<double>(total);
}

double PageCounts::SavedPercentOfNonZero() const {
  const std::uint64_t non_zero = total - zero;
  if (non_zero == 0) return 0.0;
  return 100.0 * static_cast<double>(by_position + by_content_only) /
         static_cast<double>(non_zero);
}

PageCounts& PageCounts::operator+=(const PageCounts& o) {
  total += o.total;
  zero += o.zero;
  by_position += o.by_position;
  by_content_only += o.by_content_only;
  other += o.other;
  return *this;
}

Result<MatchReport> MatchImage(const Catalog& catalog, const MemoryImage& image) {
  const std::vector<RamBlockInfo>& image_blocks = image.blocks();
  // Check the whole block list before reading pages.
  std::vector<int> catalog_block_of(image_blocks.size(), -1);
  for (std::size_t cb = 0; cb < catalog.blocks().size(); ++cb) {
    const RamBlockInfo& want = catalog.blocks()[cb];
    const int ib = image.FindBlock(want.name);
    if (ib < 0) {
      return Err(Status::InvalidArgument(
          fmt::format("image {} has no RAM block \"{}\", which the catalog of {} requires",
                      image.source(), want.name, catalog.kind().ToString())));
    }
    const RamBlockInfo& have = image_blocks[static_cast<std::size_t>(ib)];
    if (have.length != want.length) {
      return Err(Status::InvalidArgument(fmt::format(
          "image {} RAM block \"{}\" is {} bytes but the catalog of {} expects {} bytes",
          image.source(), want.name, have.length, catalog.kind().ToString(), want.length)));
    }
    catalog_block_of[static_cast<std::size_t>(ib)] = static_cast<int>(cb);
  }

  MatchReport report;
  report.blocks.reserve(image_blocks.size());
  for (std::size_t b = 0; b < image_blocks.size(); ++b) {
    BlockMatch block{image_blocks[b].name, image_blocks[b].length, catalog_block_of[b] >= 0, {}};
    std::span<const CatalogPosition> positions;
    if (block.in_catalog) positions = catalog.Positions(static_cast<std::size_t>(catalog_block_of[b]));
    // Pages are visited in order, so a cursor over the sorted position
    // entries replaces a search per page.
    std::size_t cursor = 0;
    const std::uint8_t* data = image.BlockData(b);
    const std::uint64_t pages = block.length / kPageSize;
    PageCounts& counts = block.pages;
    counts.total = pages;
    for (std::uint64_t i = 0; i < pages; ++i) {
      const std::uint8_t* page = data + i * kPageSize;
      if (IsZeroPage(page)) {
        ++counts.zero;
        continue;
      }
      const std::uint32_t index = catalog.FindContent(HashPage(page));
      if (index == PageHashIndex::kAbsent) {
        ++counts.other;
        continue;
      }
      while (cursor < positions.size() && positions[cursor].page_index < i) ++cursor;
      if (cursor < positions.size() && positions[cursor].page_index == i &&
          positions[cursor].content_index == index) {
        ++counts.by_position;
      } else {
        ++counts.by_content_only;
      }
    }
    report.total += counts;
    report.blocks.push_back(std::move(block));
  }
  return report;
}

}  // namespace escdr
