// PageRing: a fixed ring of page slots for the migration path: the source
// session's window of elided payloads, and both ends' in-migration dedup
// history (wire/dedup.h).
//
// A fixed ring of `pages` 4 KiB slots in anonymous memory, backed by huge
// pages where the kernel allows it (MADV_HUGEPAGE), and touched when it is
// created: the window is set up while the destination scans its donor, so the
// stream never waits for page faults on it (in a VM, a fault costs tens of
// microseconds; 16384 of them per migration were a third of the proxy's time).
//
// Mapping and touching 64 MiB costs 25-85 ms here, paid three times per
// migration (the source's window and dedup index, the destination's
// history). So a ring that goes away keeps its memory in a process-wide
// cache (at most kCacheBytes in all), and Create() takes a cached mapping of
// the same size as it is: an agent pays the setup once, not per migration.
// A reused ring holds the bytes of an earlier migration: every user writes a
// slot before it reads it (the history zero-fills what it skips).
#ifndef ESCDR_PAGE_PAGE_RING_H_
#define ESCDR_PAGE_PAGE_RING_H_

#include <cstddef>
#include <cstdint>

#include "escdr/base/status.h"
#include "escdr/page/page.h"

namespace escdr {

class PageRing {
 public:
  PageRing() = default;
  // The most memory the cache of released rings keeps mapped.
  static constexpr std::size_t kCacheBytes = std::size_t{512} << 20;

  // Errors: ResourceExhausted if the memory cannot be mapped.
  static Result<PageRing> Create(std::uint32_t pages);
  // Unmaps every cached ring (tests; a process that wants its memory back).
  static void DropCache();

  ~PageRing();
  PageRing(PageRing&& other) noexcept { *this = static_cast<PageRing&&>(other); }
  PageRing& operator=(PageRing&& other) noexcept;
  PageRing(const PageRing&) = delete;
  PageRing& operator=(const PageRing&) = delete;

  std::uint32_t pages() const { return pages_; }
  // The slot of sequence number `seq`. REQUIRES: pages() > 0.
  std::uint8_t* slot(std::uint64_t seq) { return base_ + (seq % pages_) * kPageSize; }
  const std::uint8_t* slot(std::uint64_t seq) const {
    return base_ + (seq % pages_) * kPageSize;
  }
  // The whole ring as one range of pages() * kPageSize bytes.
  std::uint8_t* data() { return base_; }
  const std::uint8_t* data() const { return base_; }
  std::size_t size_bytes() const { return bytes_; }

 private:
  std::uint8_t* base_ = nullptr;
  std::size_t bytes_ = 0;
  std::uint32_t pages_ = 0;
};

}  // namespace escdr

#endif  // ESCDR_PAGE_PAGE_RING_H_
