#include "escdr/migrate/static_content.h"

#include <algorithm>

#include <fmt/format.h>

namespace escdr {
namespace {

// Page hashes are XXH3 output, uniformly distributed already; folding both
// words keeps crafted low words from piling up in one slot.
std::size_t SlotOf(const PageHash& h) {
  return static_cast<std::size_t>(h.lo ^ (h.hi * 0x9E3779B97F4A7C15ull));
}

}  // namespace

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
  std::size_t capacity = 16;
  while (capacity < 2 * t->hashes_.size()) capacity *= 2;
  t->slots_.assign(capacity, kNoContent);
  t->mask_ = capacity - 1;
  for (std::uint32_t i = 0; i < t->hashes_.size(); ++i) {
    std::size_t slot = SlotOf(t->hashes_[i]) & t->mask_;
    while (t->slots_[slot] != kNoContent) slot = (slot + 1) & t->mask_;
    t->slots_[slot] = i;
  }
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
  for (std::size_t slot = SlotOf(hash) & mask_;; slot = (slot + 1) & mask_) {
    const std::uint32_t index = slots_[slot];
    if (index == kNoContent || hashes_[index] == hash) return index;
  }
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
