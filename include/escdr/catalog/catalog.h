// Catalog: the static pages of one VmKind, in memory (paper §3.2).
//
// A catalog is learned from N >= 2 memory images of VMs of the same kind
// (catalog_learner.h) and holds two things:
//   * content: every non-zero page hash that appeared in every sample, sorted
//     ascending. A hash's position in that order is its content index, a
//     stable u32 the wire protocol uses to name catalog content. Lookup by
//     hash (FindContent) is one probe of a hash index: tens of nanoseconds.
//   * positions: for each RAM block of the samples, the pages whose content
//     was the same non-zero page in every sample at the same offset, each
//     recorded as (page index, content index). Every position entry is also
//     content, so it costs 16 bytes, not another hash.
// It also records its key, how many samples it was learned from and the
// samples' block list (name, length), which match() requires of an image.
//
// The file/blob encoding is in catalog_format.h (docs/catalog-format.md).
//
// Thread safety: immutable after Create(); all methods are const and safe to
// call concurrently. Movable, not copyable (it can hold millions of entries).
#ifndef ESCDR_CATALOG_CATALOG_H_
#define ESCDR_CATALOG_CATALOG_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/catalog/page_hash_index.h"
#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"

namespace escdr {

// One page that is static by position: block-relative page index (offset /
// kPageSize) and the content index of its hash.
struct CatalogPosition {
  std::uint64_t page_index = 0;
  std::uint32_t content_index = 0;

  friend bool operator==(const CatalogPosition&, const CatalogPosition&) = default;
};

// What a catalog says about itself: everything its header records.
struct CatalogSummary {
  VmKind kind;
  std::uint32_t sample_count = 0;     // images it was learned from (>= 2)
  std::vector<RamBlockInfo> blocks;   // the samples' block list, in their order
  std::uint64_t content_count = 0;    // unique static-by-content hashes
  std::uint64_t position_count = 0;   // static-by-position pages over all blocks
};

// Checks a block list as a catalog needs it: 1..Catalog::kMaxBlocks blocks,
// distinct names of 1..kMaxBlockNameLength bytes, lengths that are non-zero
// multiples of kPageSize up to kMaxBlockLength. `what` names the list's owner
// in the message ("catalog", "image /tmp/a.ram").
// Errors: InvalidArgument naming the first offending block.
Status ValidateBlockList(const std::vector<RamBlockInfo>& blocks, std::string_view what);

class Catalog {
 public:
  // Upper bounds that Create() and the decoder enforce (hostile input).
  static constexpr std::size_t kMaxBlocks = 4096;
  static constexpr std::size_t kMaxBlockNameLength = 256;      // QEMU idstr limit
  static constexpr std::uint64_t kMaxBlockLength = 1ull << 46;  // 64 TiB
  static constexpr std::uint32_t kMaxSamples = 1u << 20;
  static constexpr std::uint64_t kMaxContent = 0xfffffffeull;   // indices fit a u32

  // Builds a catalog from its parts and checks every invariant:
  //   kind.Validate(); 2 <= sample_count <= kMaxSamples; 1..kMaxBlocks blocks
  //   with distinct non-empty names of at most kMaxBlockNameLength bytes and
  //   lengths that are non-zero multiples of kPageSize up to kMaxBlockLength;
  //   content strictly ascending with at most kMaxContent entries;
  //   positions.size() == blocks.size(), each block's entries strictly
  //   ascending by page_index, page_index inside the block, content_index <
  //   content.size().
  // Errors: InvalidArgument naming the first broken invariant.
  static Result<Catalog> Create(VmKind kind, std::uint32_t sample_count,
                                std::vector<RamBlockInfo> blocks, std::vector<PageHash> content,
                                std::vector<std::vector<CatalogPosition>> positions);

  Catalog(Catalog&&) noexcept = default;
  Catalog& operator=(Catalog&&) noexcept = default;
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  const VmKind& kind() const { return kind_; }
  std::uint32_t sample_count() const { return sample_count_; }
  const std::vector<RamBlockInfo>& blocks() const { return blocks_; }
  CatalogSummary Summary() const;

  // Returns the index of the block named `name`, or -1.
  int FindBlock(const std::string& name) const;

  // ---- content (static by content) ----
  std::size_t content_count() const { return content_.size(); }
  // All content hashes, ascending; element i has content index i.
  std::span<const PageHash> content() const { return content_; }
  // REQUIRES: index < content_count().
  const PageHash& ContentHash(std::uint32_t index) const { return content_[index]; }
  // The content index of `hash`, or PageHashIndex::kAbsent if it is not
  // catalog content. The migration path calls this for every page.
  std::uint32_t FindContent(const PageHash& hash) const { return index_.Find(hash); }
  bool IsContent(const PageHash& hash) const {
    return index_.Find(hash) != PageHashIndex::kAbsent;
  }

  // ---- positions (static by position) ----
  std::size_t position_count() const { return position_count_; }
  // The entries of block `block`, ascending by page_index.
  // REQUIRES: block < blocks().size().
  std::span<const CatalogPosition> Positions(std::size_t block) const { return positions_[block]; }
  // The content index recorded at page `page_index` of block `block`, or
  // nullopt if that page is not static by position (or is out of range).
  std::optional<std::uint32_t> ContentAt(std::size_t block, std::uint64_t page_index) const;
  // The hash recorded for (block name, byte offset), or nullopt if the block is
  // not in the catalog or the page there is not static by position.
  // `offset` need not be page-aligned; the page containing it is meant.
  std::optional<PageHash> HashAt(const std::string& block_name, std::uint64_t offset) const;

  // Heap bytes held (content, positions and the hash index), for reports.
  std::size_t memory_bytes() const;

 private:
  Catalog() = default;

  VmKind kind_;
  std::uint32_t sample_count_ = 0;
  std::vector<RamBlockInfo> blocks_;
  std::vector<PageHash> content_;
  std::vector<std::vector<CatalogPosition>> positions_;
  std::size_t position_count_ = 0;
  PageHashIndex index_;
};

}  // namespace escdr

#endif  // ESCDR_CATALOG_CATALOG_H_
