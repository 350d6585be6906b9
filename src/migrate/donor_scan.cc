#include "escdr/migrate/donor_scan.h"

#include <fmt/format.h>

#include "escdr/sys/clock.h"
#include "escdr/wire/format.h"
#include "escdr/wire/messages.h"

namespace escdr {

DonorAvailability DonorAvailability::None(std::uint32_t catalog_entries) {
  DonorAvailability a;
  a.catalog_entries = catalog_entries;
  a.bitmap.assign(wire::BitmapBytes(catalog_entries), 0);
  return a;
}

Result<DonorAvailability> ScanDonor(const MemoryImage& donor, const StaticContent& content) {
  const std::uint32_t n = content.size();
  if (n > wire::kMaxCatalogEntries) {
    return Err(Status::InvalidArgument(fmt::format(
        "catalog of {} entries exceeds the wire limit of {}", n, wire::kMaxCatalogEntries)));
  }
  const auto start = MonotonicClock::now();
  DonorAvailability a = DonorAvailability::None(n);
  a.locations.resize(n);
  const auto& blocks = donor.blocks();
  for (std::size_t b = 0; b < blocks.size(); ++b) {
    const std::uint8_t* data = donor.BlockData(b);
    const std::uint64_t pages = blocks[b].length / kPageSize;
    for (std::uint64_t p = 0; p < pages; ++p) {
      const std::uint8_t* page = data + p * kPageSize;
      ++a.pages_scanned;
      if (IsZeroPage(page)) {
        ++a.zero_pages;
        continue;
      }
      std::uint32_t index = content.Find(HashPage(page));
      if (index == kNoContent || wire::BitmapTest(a.bitmap, index)) continue;
      wire::BitmapSet(a.bitmap, index);
      a.locations[index] = {static_cast<std::uint32_t>(b), p * kPageSize};
      ++a.available;
    }
  }
  if (a.available == 0) a.locations.clear();
  a.scan_time = std::chrono::duration_cast<std::chrono::microseconds>(MonotonicClock::now() - start);
  return a;
}

}  // namespace escdr
