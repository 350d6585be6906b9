// StaticContent: the view of a static-page catalog that a migration needs.
//
// Both agents of a migration hold the same catalog version (same kind, same
// checksum, docs/wire-protocol.md §3.2). The sessions ask it four things:
//   * its identity (kind, checksum) and its number of content entries N;
//   * the hash of content entry i (entries are sorted ascending by hash, so
//     an entry's position is its stable u32 content index);
//   * the content index of a page hash, if any (asked for every PAGE of the
//     stream: it must answer in tens of nanoseconds);
//   * the content index recorded at a (block, page) position, if the page is
//     static by position (asked only for pages that are catalog content).
// The catalog module's Catalog provides all of it; an adapter is a few lines.
// StaticContentTable is a self-contained implementation for tests, tools and
// benchmarks.
//
// Thread safety: implementations must allow concurrent const calls.
// Ownership: sessions keep a pointer; the content must outlive them.
#ifndef ESCDR_MIGRATE_STATIC_CONTENT_H_
#define ESCDR_MIGRATE_STATIC_CONTENT_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/page/page.h"

namespace escdr {

// "No content index": the value Find() and ContentAt() return for a miss.
inline constexpr std::uint32_t kNoContent = 0xffffffffu;

class StaticContent {
 public:
  virtual ~StaticContent() = default;

  virtual const VmKind& kind() const = 0;
  // Identifies the catalog version (the XXH3-64 trailer of its encoding).
  virtual std::uint64_t checksum() const = 0;
  // Number of content entries N; content indexes are 0 .. N-1.
  virtual std::uint32_t size() const = 0;
  // REQUIRES: index < size().
  virtual const PageHash& hash(std::uint32_t index) const = 0;
  // The content index of `hash`, or kNoContent.
  virtual std::uint32_t Find(const PageHash& hash) const = 0;
  // A handle for RAM block `name` to pass to ContentAt(), or -1 if the
  // catalog records no positions in that block.
  virtual int FindBlock(std::string_view name) const = 0;
  // The content index recorded at page `page_index` (offset / 4096) of
  // `block`, or kNoContent if that page is not static by position.
  // REQUIRES: block is a handle FindBlock() returned.
  virtual std::uint32_t ContentAt(int block, std::uint64_t page_index) const = 0;
};

// An in-memory StaticContent built from hashes and positions.
class StaticContentTable final : public StaticContent {
 public:
  // A page static by position: block name, byte offset (page-aligned), hash.
  struct Position {
    std::string block;
    std::uint64_t offset = 0;
    PageHash hash;
  };

  // `hashes` in any order (duplicates are merged); every position's hash
  // must be among them. Errors: InvalidArgument naming the first bad
  // position (hash not content, offset not page-aligned) or too many hashes.
  static Result<std::unique_ptr<StaticContentTable>> Create(VmKind kind, std::uint64_t checksum,
                                                            std::vector<PageHash> hashes,
                                                            std::vector<Position> positions = {});

  const VmKind& kind() const override { return kind_; }
  std::uint64_t checksum() const override { return checksum_; }
  std::uint32_t size() const override { return static_cast<std::uint32_t>(hashes_.size()); }
  const PageHash& hash(std::uint32_t index) const override { return hashes_[index]; }
  std::uint32_t Find(const PageHash& hash) const override;
  int FindBlock(std::string_view name) const override;
  std::uint32_t ContentAt(int block, std::uint64_t page_index) const override;

  // All hashes, ascending (element i has content index i).
  std::span<const PageHash> hashes() const { return hashes_; }

 private:
  StaticContentTable() = default;

  VmKind kind_;
  std::uint64_t checksum_ = 0;
  std::vector<PageHash> hashes_;
  // Open addressing (linear probing, at most half full): content indexes,
  // kNoContent for an empty slot. One or two cache lines per lookup.
  std::vector<std::uint32_t> slots_;
  std::size_t mask_ = 0;
  std::vector<std::string> block_names_;
  std::vector<std::unordered_map<std::uint64_t, std::uint32_t>> positions_;  // per block
};

}  // namespace escdr

#endif  // ESCDR_MIGRATE_STATIC_CONTENT_H_
