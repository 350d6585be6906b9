#include "escdr/wire/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace escdr::wire {
namespace {

constexpr std::uint32_t kPolynomial = 0x82F63B78u;

constexpr std::array<std::uint32_t, 256> MakeTable() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPolynomial : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<std::uint32_t, 256> kTable = MakeTable();

std::uint32_t ExtendSoftware(std::uint32_t state, const std::uint8_t* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) state = kTable[(state ^ p[i]) & 0xff] ^ (state >> 8);
  return state;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t ExtendHardware(std::uint32_t state,
                                                                const std::uint8_t* p,
                                                                std::size_t n) {
  std::uint64_t s = state;
  while (n >= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    s = _mm_crc32_u64(s, word);
    p += 8;
    n -= 8;
  }
  auto s32 = static_cast<std::uint32_t>(s);
  while (n > 0) {
    s32 = _mm_crc32_u8(s32, *p++);
    --n;
  }
  return s32;
}

bool DetectHardware() { return __builtin_cpu_supports("sse4.2"); }
#else
std::uint32_t ExtendHardware(std::uint32_t state, const std::uint8_t* p, std::size_t n) {
  return ExtendSoftware(state, p, n);
}
bool DetectHardware() { return false; }
#endif

const bool kHardware = DetectHardware();

}  // namespace

std::uint32_t Crc32cExtend(std::uint32_t crc, const std::uint8_t* data, std::size_t size) {
  std::uint32_t state = ~crc;
  state = kHardware ? ExtendHardware(state, data, size) : ExtendSoftware(state, data, size);
  return ~state;
}

bool Crc32cIsHardwareAccelerated() { return kHardware; }

}  // namespace escdr::wire
