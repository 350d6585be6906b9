#include "escdr/catalog/page_hash_index.h"

#include <bit>
#include <cassert>
#include <random>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace escdr {
namespace {

// One seed per process: enough to make crafted collisions unpredictable, and
// it spares a random_device read per index.
std::uint64_t ProcessSeed() {
  static const std::uint64_t seed = [] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }();
  return seed;
}

}  // namespace

PageHashIndex::PageHashIndex(std::size_t expected_size) : seed_(ProcessSeed()) {
  if (expected_size > 0) Rehash(std::bit_ceil(expected_size * 2));
}

std::size_t PageHashIndex::SlotOf(const PageHash& key) const {
  const std::uint64_t words[2] = {key.hi, key.lo};
  return static_cast<std::size_t>(XXH3_64bits_withSeed(words, sizeof words, seed_)) & mask_;
}

std::uint32_t PageHashIndex::Find(const PageHash& key) const {
  if (size_ == 0) return kAbsent;
  for (std::size_t i = SlotOf(key);; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.value == kAbsent) return kAbsent;
    if (s.lo == key.lo && s.hi == key.hi) return s.value;
  }
}

std::uint32_t PageHashIndex::FindOrInsert(const PageHash& key, std::uint32_t value) {
  assert(value != kAbsent);
  if ((size_ + 1) * 2 > slots_.size()) Rehash(slots_.empty() ? 64 : slots_.size() * 2);
  for (std::size_t i = SlotOf(key);; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.value == kAbsent) {
      s = Slot{key.hi, key.lo, value};
      ++size_;
      return value;
    }
    if (s.lo == key.lo && s.hi == key.hi) return s.value;
  }
}

bool PageHashIndex::Set(const PageHash& key, std::uint32_t value) {
  assert(value != kAbsent);
  if (size_ == 0) return false;
  for (std::size_t i = SlotOf(key);; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.value == kAbsent) return false;
    if (s.lo == key.lo && s.hi == key.hi) {
      s.value = value;
      return true;
    }
  }
}

void PageHashIndex::Rehash(std::size_t new_capacity) {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(new_capacity, Slot{});
  mask_ = new_capacity - 1;
  for (const Slot& s : old) {
    if (s.value == kAbsent) continue;
    std::size_t i = SlotOf(PageHash{s.hi, s.lo});
    while (slots_[i].value != kAbsent) i = (i + 1) & mask_;
    slots_[i] = s;
  }
}

}  // namespace escdr
