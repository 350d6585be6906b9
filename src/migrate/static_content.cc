#include "escdr/migrate/static_content.h"

#include <algorithm>

#include <fmt/format.h>

namespace escdr {

Result<std::unique_ptr<StaticContentTable>> StaticContentTable::Create(
    VmKind kind, std::uint64_t checksum, std::vector<PageHash> hashes,
    std::vector<Position> positions) {
  std::sort(hashes.begin(), hashes.end());
  hashes.erase(std::unique(hashes.begin(), hashes.end()), hashes.end());
  if (hashes.size() >= kNoContent) {
    return Err(Status::InvalidArgument(
        fmt::format("static content of {} hashes does not fit 32-bit indexes", hashes.size())));
  }
  std::unique_ptr<StaticContentTable> t(new StaticContentTable());
  t->kind_ = std::move(kind);
  t->checksum_ = checksum;
  t->hashes_ = std::move(hashes);
  t->index_.reserve(t->hashes_.size());
  for (std::uint32_t i = 0; i < t->hashes_.size(); ++i) t->index_.emplace(t->hashes_[i], i);
  for (const Position& p : positions) {
    if (p.offset % kPageSize != 0) {
      return Err(Status::InvalidArgument(fmt::format(
          "static position {}+{:#x} is not page-aligned", p.block, p.offset)));
    }
    std::uint32_t index = t->Find(p.hash);
    if (index == kNoContent) {
      return Err(Status::InvalidArgument(fmt::format(
          "static position {}+{:#x} has hash {}, which is not content", p.block, p.offset,
          p.hash.ToHex())));
    }
    int block = t->FindBlock(p.block);
    if (block < 0) {
      block = static_cast<int>(t->block_names_.size());
      t->block_names_.push_back(p.block);
      t->positions_.emplace_back();
    }
    t->positions_[block][p.offset / kPageSize] = index;
  }
  return t;
}

std::uint32_t StaticContentTable::Find(const PageHash& hash) const {
  auto it = index_.find(hash);
  return it == index_.end() ? kNoContent : it->second;
}

int StaticContentTable::FindBlock(std::string_view name) const {
  for (std::size_t i = 0; i < block_names_.size(); ++i) {
    if (block_names_[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::uint32_t StaticContentTable::ContentAt(int block, std::uint64_t page_index) const {
  const auto& m = positions_[static_cast<std::size_t>(block)];
  auto it = m.find(page_index);
  return it == m.end() ? kNoContent : it->second;
}

}  // namespace escdr
