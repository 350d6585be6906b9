// MatchImage: how much of a memory image a catalog covers, i.e. the expected
// saving of migrating that VM with ESCDR.
//
// Each page of the image falls in exactly one class, tested in this order:
//   zero             all bytes zero (QEMU sends these as one-byte records;
//                    never catalog content, never counted as saved);
//   by position      the catalog records, at this (block, page index), the
//                    hash this page has;
//   by content only  the page's hash is catalog content, but not recorded at
//                    this position (e.g. moved by KASLR, or in a block the
//                    catalog does not list);
//   other            everything else (the bytes a migration must still send).
//
// Every block of the catalog must exist in the image with the same length; an
// image may have extra blocks (a saved stream carries vga.vram, pc.bios...):
// their pages are matched by content only.
//
// Thread safety: pure function of its arguments; concurrent calls are fine.
#ifndef ESCDR_CATALOG_CATALOG_MATCH_H_
#define ESCDR_CATALOG_CATALOG_MATCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/catalog/catalog.h"
#include "escdr/image/memory_image.h"

namespace escdr {

// Page counts by class; total == zero + by_position + by_content_only + other.
struct PageCounts {
  std::uint64_t total = 0;
  std::uint64_t zero = 0;
  std::uint64_t by_position = 0;
  std::uint64_t by_content_only = 0;
  std::uint64_t other = 0;

  // Bytes a migration need not send thanks to the catalog:
  // (by_position + by_content_only) * kPageSize.
  std::uint64_t SavedBytes() const;
  // SavedBytes() as a percentage of all bytes (total pages); 0 if empty.
  double SavedPercent() const;
  // SavedBytes() as a percentage of the non-zero pages' bytes; 0 if none.
  double SavedPercentOfNonZero() const;

  PageCounts& operator+=(const PageCounts& other);
  friend bool operator==(const PageCounts&, const PageCounts&) = default;
};

struct BlockMatch {
  std::string name;
  std::uint64_t length = 0;
  bool in_catalog = false;  // false: an extra block, matched by content only
  PageCounts pages;
};

struct MatchReport {
  std::vector<BlockMatch> blocks;  // in the image's block order
  PageCounts total;                // the sum over blocks
};

// Classifies every page of `image` against `catalog`. Reads each page once.
// Errors: InvalidArgument if a catalog block is missing from the image or has
// a different length there (the message names the block, both lengths and
// image.source()).
Result<MatchReport> MatchImage(const Catalog& catalog, const MemoryImage& image);

}  // namespace escdr

#endif  // ESCDR_CATALOG_CATALOG_MATCH_H_
