#include "escdr/page/page_ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include <fmt/format.h>

namespace escdr {
namespace {

// Released mappings, by size; guarded by CacheMutex().
struct Cached {
  std::uint8_t* base;
  std::size_t bytes;
};
std::mutex& CacheMutex() {
  static std::mutex mu;
  return mu;
}
std::vector<Cached>& Cache() {
  static std::vector<Cached>* cache = new std::vector<Cached>();  // never destroyed
  return *cache;
}
std::size_t cached_bytes = 0;  // guarded by CacheMutex()

}  // namespace

void PageRing::DropCache() {
  std::lock_guard<std::mutex> lock(CacheMutex());
  for (const Cached& c : Cache()) ::munmap(c.base, c.bytes);
  Cache().clear();
  cached_bytes = 0;
}

Result<PageRing> PageRing::Create(std::uint32_t pages) {
  PageRing ring;
  if (pages == 0) return ring;
  const std::size_t bytes = std::size_t{pages} * kPageSize;
  {
    std::lock_guard<std::mutex> lock(CacheMutex());
    auto& cache = Cache();
    for (auto it = cache.begin(); it != cache.end(); ++it) {
      if (it->bytes != bytes) continue;
      ring.base_ = it->base;
      ring.bytes_ = bytes;
      ring.pages_ = pages;
      cached_bytes -= bytes;
      cache.erase(it);
      return ring;
    }
  }
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

namespace {

// Keeps the mapping for a later Create(), or unmaps it if the cache is full.
void Release(std::uint8_t* base, std::size_t bytes) {
  if (base == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(CacheMutex());
    if (cached_bytes + bytes <= PageRing::kCacheBytes) {
      Cache().push_back(Cached{base, bytes});
      cached_bytes += bytes;
      return;
    }
  }
  ::munmap(base, bytes);
}

}  // namespace

PageRing::~PageRing() { Release(base_, bytes_); }

PageRing& PageRing::operator=(PageRing&& other) noexcept {
  if (this != &other) {
    Release(base_, bytes_);
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
