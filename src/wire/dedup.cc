#include "escdr/wire/dedup.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace escdr::wire {

// ---- DedupIndex ----

Result<DedupIndex> DedupIndex::Create(std::uint32_t pages) {
  if (pages == 0) return Err(Status::InvalidArgument("a dedup index needs at least one page"));
  DedupIndex index;
  ESCDR_ASSIGN_OR_RETURN(index.copies_, PageRing::Create(pages));
  index.slots_.resize(pages);
  index.by_key_.reserve(pages);
  return index;
}

std::optional<std::uint64_t> DedupIndex::Find(std::uint64_t key, const std::uint8_t* page,
                                              std::uint64_t position) const {
  auto it = by_key_.find(key);
  if (it == by_key_.end()) return std::nullopt;
  const std::uint64_t n = it->second;
  const Slot& slot = slots_[n % slots_.size()];
  // The destination holds the last pages() * kPageSize stream bytes before
  // `position`.
  if (position - slot.position > std::uint64_t{slots_.size()} * kPageSize) return std::nullopt;
  if (std::memcmp(copies_.slot(n), page, kPageSize) != 0) return std::nullopt;
  return slot.position;
}

void DedupIndex::Insert(std::uint64_t key, const std::uint8_t* page, std::uint64_t position) {
  const std::uint64_t n = inserted_++;
  Slot& slot = slots_[n % slots_.size()];
  if (n >= slots_.size()) {
    // The slot's previous page leaves the index, unless a newer copy of the
    // same content took its key over.
    auto it = by_key_.find(slot.key);
    if (it != by_key_.end() && it->second == n - slots_.size()) by_key_.erase(it);
  }
  slot.key = key;
  slot.position = position;
  std::memcpy(copies_.slot(n), page, kPageSize);
  by_key_[key] = n;
}

// ---- StreamHistory ----

Result<StreamHistory> StreamHistory::Create(std::uint32_t pages) {
  if (pages == 0) return Err(Status::InvalidArgument("a stream history needs at least one page"));
  StreamHistory h;
  ESCDR_ASSIGN_OR_RETURN(h.ring_, PageRing::Create(pages));
  return h;
}

void StreamHistory::Append(std::span<const std::uint8_t> bytes) {
  const std::size_t size = ring_.size_bytes();
  if (size == 0 || bytes.empty()) {
    position_ += bytes.size();
    return;
  }
  if (bytes.size() > size) {
    position_ += bytes.size() - size;
    bytes = bytes.last(size);
  }
  std::uint8_t* base = ring_.data();
  const std::size_t at = position_ % size;
  const std::size_t first = std::min(bytes.size(), size - at);
  std::memcpy(base + at, bytes.data(), first);
  if (first < bytes.size()) std::memcpy(base, bytes.data() + first, bytes.size() - first);
  position_ += bytes.size();
}

void StreamHistory::Skip(std::uint64_t n) {
  const std::size_t size = ring_.size_bytes();
  if (size == 0 || n >= size) {
    // Nothing, or everything, of the history is overwritten.
    if (size != 0) std::memset(ring_.data(), 0, size);
    position_ += n;
    return;
  }
  std::uint8_t* base = ring_.data();
  const std::size_t at = position_ % size;
  const std::size_t first = std::min<std::size_t>(n, size - at);
  std::memset(base + at, 0, first);
  if (first < n) std::memset(base, 0, n - first);
  position_ += n;
}

Status StreamHistory::CopyPage(std::uint64_t offset, std::uint64_t check, std::uint8_t* out) const {
  const std::size_t size = ring_.size_bytes();
  if (offset > position_ || position_ - offset < kPageSize || position_ - offset > size) {
    return Status::ProtocolError(fmt::format(
        "Dup names stream offset {}, outside the {} bytes of history before offset {}", offset,
        size, position_));
  }
  const std::uint8_t* base = ring_.data();
  const std::size_t at = offset % size;
  const std::size_t first = std::min(kPageSize, size - at);
  std::memcpy(out, base + at, first);
  if (first < kPageSize) std::memcpy(out + first, base, kPageSize - first);
  if (DedupKey(HashPage(out)) != check) {
    return Status::Corruption(fmt::format(
        "the page at stream offset {} in the destination's history does not match the source's "
        "check {:#018x}",
        offset, check));
  }
  return Status::OK();
}

}  // namespace escdr::wire
