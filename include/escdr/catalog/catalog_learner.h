// CatalogLearner: learns the catalog of one VmKind from N >= 2 memory images.
//
// A page is static by position when every sample holds the same non-zero
// content at the same (block, page index); static by content when its hash
// appears, anywhere, in every sample. Zero pages are never catalog content.
// (Content is compared through 128-bit XXH3 hashes; the migration path
// re-verifies every page it copies from a donor.)
//
// Samples are fed one at a time and each page is read and hashed once. The
// first sample defines the block list, which every later sample must repeat
// exactly (names, lengths and order). Memory use is that of the first sample's
// unique non-zero hashes (a hash absent from it can never be content) plus
// 4 bytes per page of candidate positions: it does not grow with N, and a
// caller may close each image after AddSample() returns.
//
// Usage:
//   CatalogLearner learner(kind);
//   for (auto& image : images) ESCDR_RETURN_IF_ERROR(learner.AddSample(*image));
//   ESCDR_ASSIGN_OR_RETURN(Catalog catalog, std::move(learner).Finish());
//
// Thread safety: a learner is used by one thread at a time. Movable.
#ifndef ESCDR_CATALOG_CATALOG_LEARNER_H_
#define ESCDR_CATALOG_CATALOG_LEARNER_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/base/vm_kind.h"
#include "escdr/catalog/catalog.h"
#include "escdr/catalog/page_hash_index.h"
#include "escdr/image/memory_image.h"
#include "escdr/page/page.h"

namespace escdr {

class CatalogLearner {
 public:
  explicit CatalogLearner(VmKind kind);

  CatalogLearner(CatalogLearner&&) noexcept = default;
  CatalogLearner& operator=(CatalogLearner&&) noexcept = default;
  CatalogLearner(const CatalogLearner&) = delete;
  CatalogLearner& operator=(const CatalogLearner&) = delete;

  // Reads every page of `image` once and folds it into the catalog.
  // Errors (the learner is unchanged by a failed call):
  //   InvalidArgument if the first image's block list is unusable (no blocks,
  //   a length that is not a multiple of kPageSize, a duplicate name, more
  //   pages than Catalog::kMaxContent...), or
  //   if a later image's block list differs from the first one's; the message
  //   names the first difference and both images' sources.
  // The image need not outlive the call.
  Status AddSample(const MemoryImage& image);

  // Number of samples added so far.
  std::uint32_t sample_count() const { return sample_count_; }

  // Builds the catalog. Errors: InvalidArgument if fewer than 2 samples were
  // added (or the kind is invalid). Consumes the learner.
  Result<Catalog> Finish() &&;

 private:
  static constexpr std::uint32_t kNoCandidate = PageHashIndex::kAbsent;

  VmKind kind_;
  std::uint32_t sample_count_ = 0;
  std::string first_source_;
  std::vector<RamBlockInfo> blocks_;
  // Unique non-zero hashes of the first sample: hash -> candidate id.
  PageHashIndex candidates_;
  std::vector<PageHash> candidate_hashes_;  // by candidate id
  // By candidate id: how many samples in a row, from the first, contained it.
  std::vector<std::uint32_t> seen_in_;
  // Per block, per page: the candidate id the first sample had there, reset to
  // kNoCandidate as soon as a later sample differs at that position.
  std::vector<std::vector<std::uint32_t>> position_candidates_;
};

// Learns a catalog from `samples` in one call (each must be non-null).
// Errors: those of AddSample() and Finish(); fewer than 2 samples is
// InvalidArgument before any page is read.
Result<Catalog> LearnCatalog(const VmKind& kind, std::span<const MemoryImage* const> samples);

}  // namespace escdr

#endif  // ESCDR_CATALOG_CATALOG_LEARNER_H_
