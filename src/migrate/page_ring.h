// PageRing: the source's window of elided payloads (internal to migrate/).
//
// A fixed ring of `pages` 4 KiB slots in anonymous memory, backed by huge
// pages where the kernel allows it (MADV_HUGEPAGE), and touched when it is
// created: the window is set up while the destination scans its donor, so the
// stream never waits for page faults on it (in a VM, a fault costs tens of
// microseconds; 16384 of them per migration were a third of the proxy's time).
#ifndef ESCDR_MIGRATE_PAGE_RING_H_
#define ESCDR_MIGRATE_PAGE_RING_H_

#include <cstddef>
#include <cstdint>

#include "escdr/base/status.h"
#include "escdr/page/page.h"

namespace escdr::migrate_internal {

class PageRing {
 public:
  PageRing() = default;
  // Errors: ResourceExhausted if the memory cannot be mapped.
  static Result<PageRing> Create(std::uint32_t pages);

  ~PageRing();
  PageRing(PageRing&& other) noexcept { *this = static_cast<PageRing&&>(other); }
  PageRing& operator=(PageRing&& other) noexcept;
  PageRing(const PageRing&) = delete;
  PageRing& operator=(const PageRing&) = delete;

  std::uint32_t pages() const { return pages_; }
  // The slot of sequence number `seq`. REQUIRES: pages() > 0.
  std::uint8_t* slot(std::uint64_t seq) { return base_ + (seq % pages_) * kPageSize; }

 private:
  std::uint8_t* base_ = nullptr;
  std::size_t bytes_ = 0;
  std::uint32_t pages_ = 0;
};

}  // namespace escdr::migrate_internal

#endif  // ESCDR_MIGRATE_PAGE_RING_H_
