// Donor availability: which catalog content a donor VM can supply right now.
//
// Before the source starts sending, the destination hashes every non-zero
// page of its donor's RAM (a MemoryImage, usually the donor's live
// memory-backend-file mapped read-only) and records, for each catalog content
// index, whether the donor holds that content and where (block, offset). The
// bitmap goes to the source in the Availability frame (wire-protocol §3.3);
// the locations stay on the destination, which copies and re-verifies each
// referenced page from there (the donor keeps running, so the scan is a hint,
// never a promise).
//
// Thread safety: ScanDonor is reentrant; DonorAvailability is a plain value.
#ifndef ESCDR_MIGRATE_DONOR_SCAN_H_
#define ESCDR_MIGRATE_DONOR_SCAN_H_

#include <chrono>
#include <cstdint>
#include <vector>

#include "escdr/base/status.h"
#include "escdr/image/memory_image.h"
#include "escdr/migrate/static_content.h"

namespace escdr {

struct DonorAvailability {
  // Where a content entry lies in the donor: block index in the image, byte
  // offset. kNowhere (block) marks an entry the donor does not hold.
  struct Location {
    static constexpr std::uint32_t kNowhere = 0xffffffffu;
    std::uint32_t block = kNowhere;
    std::uint64_t offset = 0;
  };

  std::uint32_t catalog_entries = 0;   // N of the catalog scanned against
  std::vector<std::uint8_t> bitmap;    // wire::BitmapBytes(N) bytes; bit i = available
  std::vector<Location> locations;     // N entries (empty when nothing is available)
  std::uint32_t available = 0;         // bits set
  std::uint64_t pages_scanned = 0;     // donor pages looked at (all blocks)
  std::uint64_t zero_pages = 0;        // of which zero (never catalog content)
  std::chrono::microseconds scan_time{0};

  // Nothing available, for N entries (no donor, or a catalog mismatch).
  static DonorAvailability None(std::uint32_t catalog_entries);
};

// Scans every page of every block of `donor` against `content`: the first
// location found for each content entry is kept. Errors: InvalidArgument if
// the catalog is larger than the wire limit (kMaxCatalogEntries).
Result<DonorAvailability> ScanDonor(const MemoryImage& donor, const StaticContent& content);

}  // namespace escdr

#endif  // ESCDR_MIGRATE_DONOR_SCAN_H_
