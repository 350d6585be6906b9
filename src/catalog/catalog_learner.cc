#include "escdr/catalog/catalog_learner.h"

#include <algorithm>
#include <cassert>
#include <numeric>
#include <utility>

#include <fmt/format.h>

namespace escdr {
namespace {

// Names the first difference between the block list of the first sample and
// that of a later one, or OK if they are identical.
Status CompareBlockLists(const std::vector<RamBlockInfo>& first, const std::string& first_source,
                         const std::vector<RamBlockInfo>& other, const std::string& other_source) {
  const std::string prefix =
      fmt::format("RAM blocks differ between samples {} and {}: ", first_source, other_source);
  const std::size_t common = std::min(first.size(), other.size());
  for (std::size_t b = 0; b < common; ++b) {
    if (first[b].name != other[b].name) {
      return Status::InvalidArgument(
          fmt::format("{}block {} is \"{}\" in {} but \"{}\" in {}", prefix, b, first[b].name,
                      first_source, other[b].name, other_source));
    }
    if (first[b].length != other[b].length) {
      return Status::InvalidArgument(
          fmt::format("{}block \"{}\" is {} bytes in {} but {} bytes in {}", prefix,
                      first[b].name, first[b].length, first_source, other[b].length, other_source));
    }
  }
  if (first.size() != other.size()) {
    const bool longer = other.size() > first.size();
    const RamBlockInfo& extra = longer ? other[common] : first[common];
    return Status::InvalidArgument(fmt::format("{}block \"{}\" is only in {}", prefix, extra.name,
                                               longer ? other_source : first_source));
  }
  return Status::OK();
}

}  // namespace

CatalogLearner::CatalogLearner(VmKind kind) : kind_(std::move(kind)) {}

Status CatalogLearner::AddSample(const MemoryImage& image) {
  const std::vector<RamBlockInfo>& blocks = image.blocks();
  if (sample_count_ == 0) {
    ESCDR_RETURN_IF_ERROR(ValidateBlockList(blocks, "sample " + image.source()));
    // Candidate ids are u32; refuse up front rather than fail half-way.
    std::uint64_t total_pages = 0;
    for (const RamBlockInfo& b : blocks) total_pages += b.length / kPageSize;
    if (total_pages > Catalog::kMaxContent) {
      return Status::InvalidArgument(fmt::format(
          "sample {} has {} pages, more than a catalog can index ({})", image.source(),
          total_pages, Catalog::kMaxContent));
    }
    first_source_ = image.source();
    blocks_ = blocks;
    position_candidates_.resize(blocks.size());
    for (std::size_t b = 0; b < blocks.size(); ++b) {
      const std::uint8_t* data = image.BlockData(b);
      const std::uint64_t pages = blocks[b].length / kPageSize;
      std::vector<std::uint32_t>& at = position_candidates_[b];
      at.assign(pages, kNoCandidate);
      for (std::uint64_t i = 0; i < pages; ++i) {
        const std::uint8_t* page = data + i * kPageSize;
        if (IsZeroPage(page)) continue;
        const PageHash hash = HashPage(page);
        const auto next_id = static_cast<std::uint32_t>(candidate_hashes_.size());
        const std::uint32_t id = candidates_.FindOrInsert(hash, next_id);
        if (id == next_id) {
          candidate_hashes_.push_back(hash);
          seen_in_.push_back(1);
        }
        at[i] = id;
      }
    }
    sample_count_ = 1;
    return Status::OK();
  }

  ESCDR_RETURN_IF_ERROR(CompareBlockLists(blocks_, first_source_, blocks, image.source()));
  const std::uint32_t seen_so_far = sample_count_;
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    const std::uint8_t* data = image.BlockData(b);
    std::vector<std::uint32_t>& at = position_candidates_[b];
    for (std::uint64_t i = 0; i < at.size(); ++i) {
      const std::uint8_t* page = data + i * kPageSize;
      if (IsZeroPage(page)) {
        at[i] = kNoCandidate;
        continue;
      }
      // kNoCandidate == kAbsent, so a page the first sample lacks also clears
      // the position.
      const std::uint32_t id = candidates_.Find(HashPage(page));
      if (id != PageHashIndex::kAbsent && seen_in_[id] == seen_so_far) seen_in_[id] = seen_so_far + 1;
      if (at[i] != id) at[i] = kNoCandidate;
    }
  }
  sample_count_ = seen_so_far + 1;
  return Status::OK();
}

Result<Catalog> CatalogLearner::Finish() && {
  if (sample_count_ < 2) {
    return Err(Status::InvalidArgument(fmt::format(
        "learning a catalog for {} needs at least 2 samples, got {}", kind_.ToString(),
        sample_count_)));
  }
  // Content: candidates seen in every sample, in ascending hash order.
  std::vector<std::uint32_t> content_ids;
  for (std::uint32_t id = 0; id < seen_in_.size(); ++id) {
    if (seen_in_[id] == sample_count_) content_ids.push_back(id);
  }
  std::sort(content_ids.begin(), content_ids.end(), [this](std::uint32_t a, std::uint32_t b) {
    return candidate_hashes_[a] < candidate_hashes_[b];
  });
  std::vector<PageHash> content;
  content.reserve(content_ids.size());
  std::vector<std::uint32_t> content_index_of(candidate_hashes_.size(), PageHashIndex::kAbsent);
  for (std::size_t i = 0; i < content_ids.size(); ++i) {
    content.push_back(candidate_hashes_[content_ids[i]]);
    content_index_of[content_ids[i]] = static_cast<std::uint32_t>(i);
  }
  // The candidate tables are no longer needed; free them before building the
  // position lists.
  candidates_ = PageHashIndex();
  std::vector<PageHash>().swap(candidate_hashes_);
  std::vector<std::uint32_t>().swap(seen_in_);

  std::vector<std::vector<CatalogPosition>> positions(blocks_.size());
  for (std::size_t b = 0; b < blocks_.size(); ++b) {
    std::vector<std::uint32_t>& at = position_candidates_[b];
    const auto survivors = static_cast<std::size_t>(
        std::count_if(at.begin(), at.end(), [](std::uint32_t id) { return id != kNoCandidate; }));
    positions[b].reserve(survivors);
    for (std::uint64_t i = 0; i < at.size(); ++i) {
      if (at[i] == kNoCandidate) continue;
      // Same hash at this position in every sample implies the hash was in
      // every sample.
      assert(content_index_of[at[i]] != PageHashIndex::kAbsent);
      positions[b].push_back(CatalogPosition{i, content_index_of[at[i]]});
    }
    std::vector<std::uint32_t>().swap(at);
  }
  return Catalog::Create(std::move(kind_), sample_count_, std::move(blocks_), std::move(content),
                         std::move(positions));
}

Result<Catalog> LearnCatalog(const VmKind& kind, std::span<const MemoryImage* const> samples) {
  if (samples.size() < 2) {
    return Err(Status::InvalidArgument(
        fmt::format("learning a catalog for {} needs at least 2 samples, got {}",
                    kind.ToString(), samples.size())));
  }
  ESCDR_RETURN_IF_ERROR(kind.Validate().WithContext("catalog key"));
  // Check every block list before reading any page: a mismatch in the last
  // sample should not cost a pass over the others.
  ESCDR_RETURN_IF_ERROR(ValidateBlockList(samples[0]->blocks(), "sample " + samples[0]->source()));
  for (std::size_t s = 1; s < samples.size(); ++s) {
    ESCDR_RETURN_IF_ERROR(CompareBlockLists(samples[0]->blocks(), samples[0]->source(),
                                            samples[s]->blocks(), samples[s]->source()));
  }
  CatalogLearner learner(kind);
  for (const MemoryImage* sample : samples) ESCDR_RETURN_IF_ERROR(learner.AddSample(*sample));
  return std::move(learner).Finish();
}

}  // namespace escdr
