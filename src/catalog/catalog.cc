#include "escdr/catalog/catalog.h"

#include <algorithm>
#include <set>
#include <utility>

#include <fmt/format.h>

namespace escdr {
Status ValidateBlockList(const std::vector<RamBlockInfo>& blocks, std::string_view what) {
  if (blocks.empty()) return Status::InvalidArgument(fmt::format("{} has no RAM blocks", what));
  if (blocks.size() > Catalog::kMaxBlocks) {
    return Status::InvalidArgument(fmt::format("{} has {} RAM blocks, more than the limit {}",
                                               what, blocks.size(), Catalog::kMaxBlocks));
  }
  std::set<std::string_view> names;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    const RamBlockInfo& block = blocks[b];
    if (block.name.empty() || block.name.size() > Catalog::kMaxBlockNameLength) {
      return Status::InvalidArgument(
          fmt::format("{} RAM block {} has a name of {} bytes (must be 1 to {})", what, b,
                      block.name.size(), Catalog::kMaxBlockNameLength));
    }
    if (!names.insert(block.name).second) {
      return Status::InvalidArgument(
          fmt::format("{} lists RAM block \"{}\" twice", what, block.name));
    }
    if (block.length == 0 || block.length % kPageSize != 0 ||
        block.length > Catalog::kMaxBlockLength) {
      return Status::InvalidArgument(fmt::format(
          "{} RAM block \"{}\" has length {} (must be a non-zero multiple of {} up to {})", what,
          block.name, block.length, kPageSize, Catalog::kMaxBlockLength));
    }
  }
  return Status::OK();
}

Result<Catalog> Catalog::Create(VmKind kind, std::uint32_t sample_count,
                                std::vector<RamBlockInfo> blocks, std::vector<PageHash> content,
                                std::vector<std::vector<CatalogPosition>> positions) {
  ESCDR_RETURN_IF_ERROR(kind.Validate().WithContext("catalog key"));
  if (sample_count < 2 || sample_count > kMaxSamples) {
    return Err(Status::InvalidArgument(fmt::format(
        "catalog records {} samples (must be 2 to {})", sample_count, kMaxSamples)));
  }
  ESCDR_RETURN_IF_ERROR(ValidateBlockList(blocks, "catalog"));
  if (content.size() > kMaxContent) {
    return Err(Status::InvalidArgument(
        fmt::format("catalog has {} content hashes, more than the limit {}", content.size(),
                    kMaxContent)));
  }
  for (std::size_t i = 1; i < content.size(); ++i) {
    if (!(content[i - 1] < content[i])) {
      return Err(Status::InvalidArgument(fmt::format(
          "catalog content hashes are not strictly ascending at index {} ({} after {})", i,
          content[i].ToHex(), content[i - 1].ToHex())));
    }
  }
  if (positions.size() != blocks.size()) {
    return Err(Status::InvalidArgument(
        fmt::format("catalog has position lists for {} blocks but {} blocks", positions.size(),
                    blocks.size())));
  }
  std::size_t position_count = 0;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    const std::uint64_t pages = blocks[b].length / kPageSize;
    const auto& entries = positions[b];
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const CatalogPosition& e = entries[i];
      if (e.page_index >= pages) {
        return Err(Status::InvalidArgument(fmt::format(
            "catalog position entry for block \"{}\" page {} is outside the block ({} pages)",
            blocks[b].name, e.page_index, pages)));
      }
      if (i > 0 && entries[i - 1].page_index >= e.page_index) {
        return Err(Status::InvalidArgument(fmt::format(
            "catalog position entries of block \"{}\" are not strictly ascending at page {}",
            blocks[b].name, e.page_index)));
      }
      if (e.content_index >= content.size()) {
        return Err(Status::InvalidArgument(fmt::format(
            "catalog position entry for block \"{}\" page {} names content index {} of {}",
            blocks[b].name, e.page_index, e.content_index, content.size())));
      }
    }
    position_count += entries.size();
  }

  Catalog catalog;
  catalog.kind_ = std::move(kind);
  catalog.sample_count_ = sample_count;
  catalog.blocks_ = std::move(blocks);
  catalog.position_count_ = position_count;
  catalog.index_ = PageHashIndex(content.size());
  for (std::size_t i = 0; i < content.size(); ++i) {
    catalog.index_.FindOrInsert(content[i], static_cast<std::uint32_t>(i));
  }
  catalog.content_ = std::move(content);
  catalog.positions_ = std::move(positions);
  return catalog;
}

CatalogSummary Catalog::Summary() const {
  return CatalogSummary{kind_, sample_count_, blocks_, content_.size(), position_count_};
}

int Catalog::FindBlock(const std::string& name) const {
  for (std::size_t b = 0; b < blocks_.size(); ++b) {
    if (blocks_[b].name == name) return static_cast<int>(b);
  }
  return -1;
}

std::optional<std::uint32_t> Catalog::ContentAt(std::size_t block,
                                                std::uint64_t page_index) const {
  if (block >= positions_.size()) return std::nullopt;
  const auto& entries = positions_[block];
  auto it = std::lower_bound(
      entries.begin(), entries.end(), page_index,
      [](const CatalogPosition& e, std::uint64_t page) { return e.page_index < page; });
  if (it == entries.end() || it->page_index != page_index) return std::nullopt;
  return it->content_index;
}

std::optional<PageHash> Catalog::HashAt(const std::string& block_name,
                                        std::uint64_t offset) const {
  const int block = FindBlock(block_name);
  if (block < 0) return std::nullopt;
  std::optional<std::uint32_t> index =
      ContentAt(static_cast<std::size_t>(block), offset / kPageSize);
  if (!index) return std::nullopt;
  return content_[*index];
}

std::size_t Catalog::memory_bytes() const {
  std::size_t bytes = content_.capacity() * sizeof(PageHash) + index_.memory_bytes();
  for (const auto& entries : positions_) bytes += entries.capacity() * sizeof(CatalogPosition);
  return bytes;
}

}  // namespace escdr
