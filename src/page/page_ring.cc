#include "escdr/page/page_ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace escdr {

Result<PageRing> PageRing::Create(std::uint32_t pages) {
  PageRing ring;
  if (pages == 0) return ring;
  const std::size_t bytes = std::size_t{pages} * kPageSize;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return Err(Status::ResourceExhausted(fmt::format(
        "cannot map a ring of {} pages ({} bytes): {}", pages, bytes, std::strerror(errno))));
  }
  // Advice only: without transparent huge pages the ring works the same.
  (void)::madvise(p, bytes, MADV_HUGEPAGE);
  std::memset(p, 0, bytes);
  ring.base_ = static_cast<std::uint8_t*>(p);
  ring.bytes_ = bytes;
  ring.pages_ = pages;
  return ring;
}

PageRing::~PageRing() {
  if (base_ != nullptr) ::munmap(base_, bytes_);
}

PageRing& PageRing::operator=(PageRing&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, bytes_);
    base_ = other.base_;
    bytes_ = other.bytes_;
    pages_ = other.pages_;
    other.base_ = nullptr;
    other.bytes_ = 0;
    other.pages_ = 0;
  }
  return *this;
}

}  // namespace escdr
