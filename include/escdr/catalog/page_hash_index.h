// PageHashIndex: an open-addressing hash map from PageHash to a 32-bit value.
//
// This is the structure behind the question the migration path asks for every
// page it sees: "is this hash catalog content, and under which index?". A
// lookup is one keyed mix of the 128-bit hash plus, usually, one cache line
// of the slot array (linear probing, load factor at most 1/2), so it answers
// in tens of nanoseconds even when the table is far larger than the caches.
//
// The slot position is a seeded mix of both hash words, with a seed drawn per
// index: a catalog file is checked for corruption but not authenticated, and
// hashes crafted to collide in one slot would otherwise turn lookups linear.
// The seed changes only the slot layout, never the answers.
//
// Thread safety: const methods may run concurrently from many threads;
// FindOrInsert/Set need exclusive access. Movable, not copyable (it can be
// large).
#ifndef ESCDR_CATALOG_PAGE_HASH_INDEX_H_
#define ESCDR_CATALOG_PAGE_HASH_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "escdr/page/page.h"

namespace escdr {

class PageHashIndex {
 public:
  // The value Find() returns for an absent key; never a stored value.
  static constexpr std::uint32_t kAbsent = 0xffffffffu;

  // An empty index with room for `expected_size` keys before it grows.
  explicit PageHashIndex(std::size_t expected_size = 0);

  PageHashIndex(PageHashIndex&&) noexcept = default;
  PageHashIndex& operator=(PageHashIndex&&) noexcept = default;
  PageHashIndex(const PageHashIndex&) = delete;
  PageHashIndex& operator=(const PageHashIndex&) = delete;

  // Returns the value stored for `key`, or kAbsent.
  std::uint32_t Find(const PageHash& key) const;

  // Returns the value already stored for `key`; if there is none, stores
  // `value` and returns it. Grows (rehashes) when half full.
  // REQUIRES: value != kAbsent; size() < 2^31.
  std::uint32_t FindOrInsert(const PageHash& key, std::uint32_t value);

  // Replaces the value of a key that is present; returns false (and changes
  // nothing) if `key` is absent. REQUIRES: value != kAbsent.
  bool Set(const PageHash& key, std::uint32_t value);

  // Number of keys stored.
  std::size_t size() const { return size_; }
  // Heap bytes held by the slot array.
  std::size_t memory_bytes() const { return slots_.capacity() * sizeof(Slot); }

 private:
  struct Slot {
    std::uint64_t hi = 0;
    std::uint64_t lo = 0;
    std::uint32_t value = kAbsent;  // kAbsent marks an empty slot
  };

  std::size_t SlotOf(const PageHash& key) const;
  void Rehash(std::size_t new_capacity);

  std::vector<Slot> slots_;  // size is a power of two (or 0 before first insert)
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
  std::uint64_t seed_ = 0;
};

}  // namespace escdr

#endif  // ESCDR_CATALOG_PAGE_HASH_INDEX_H_
