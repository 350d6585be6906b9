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

// All functions below work on the raw CRC register (no pre/post inversion);
// Crc32cExtend adds the inversions.
std::uint32_t ExtendSoftware(std::uint32_t state, const std::uint8_t* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) state = kTable[(state ^ p[i]) & 0xff] ^ (state >> 8);
  return state;
}

// The register after `kStripe` zero bytes, as a linear map of the register
// before: applied byte-wise through four tables. The CRC register is linear
// over GF(2), so crc(r, A ++ B) = Shift_|B|(crc(r, A)) ^ crc(0, B); this lets
// three independent streams over consecutive stripes run in parallel and be
// joined afterwards.
constexpr std::size_t kStripe = 4096;

struct ShiftTables {
  std::array<std::array<std::uint32_t, 256>, 4> t{};
};

// 32x32 matrices over GF(2): column j is the image of bit j.
using Matrix = std::array<std::uint32_t, 32>;

std::uint32_t Apply(const Matrix& m, std::uint32_t v) {
  std::uint32_t r = 0;
  for (int j = 0; v != 0; ++j, v >>= 1) {
    if (v & 1) r ^= m[j];
  }
  return r;
}

Matrix Multiply(const Matrix& a, const Matrix& b) {  // a after b
  Matrix r{};
  for (int j = 0; j < 32; ++j) r[j] = Apply(a, b[j]);
  return r;
}

ShiftTables MakeShiftTables() {
  // One zero bit: shift right, xor the polynomial if the low bit was set.
  Matrix bit{};
  bit[0] = kPolynomial;
  for (int j = 1; j < 32; ++j) bit[j] = 1u << (j - 1);
  // kStripe * 8 zero bits, by repeated squaring.
  Matrix result{};
  for (int j = 0; j < 32; ++j) result[j] = 1u << j;
  Matrix power = bit;
  for (std::size_t n = kStripe * 8; n != 0; n >>= 1) {
    if (n & 1) result = Multiply(power, result);
    power = Multiply(power, power);
  }
  ShiftTables s;
  for (int k = 0; k < 4; ++k) {
    for (std::uint32_t b = 0; b < 256; ++b) s.t[k][b] = Apply(result, b << (8 * k));
  }
  return s;
}

const ShiftTables kShift = MakeShiftTables();

inline std::uint32_t ShiftStripe(std::uint32_t v) {
  return kShift.t[0][v & 0xff] ^ kShift.t[1][(v >> 8) & 0xff] ^ kShift.t[2][(v >> 16) & 0xff] ^
         kShift.t[3][v >> 24];
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t ExtendHardware(std::uint32_t state,
                                                                const std::uint8_t* p,
                                                                std::size_t n) {
  std::uint64_t s = state;
  // Three stripes at a time: the crc32 instruction has a latency of three
  // cycles but a throughput of one, so independent streams triple the rate.
  while (n >= 3 * kStripe) {
    std::uint64_t a = s, b = 0, c = 0;
    for (std::size_t i = 0; i < kStripe; i += 8) {
      std::uint64_t wa, wb, wc;
      std::memcpy(&wa, p + i, 8);
      std::memcpy(&wb, p + kStripe + i, 8);
      std::memcpy(&wc, p + 2 * kStripe + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      c = _mm_crc32_u64(c, wc);
    }
    std::uint32_t r = ShiftStripe(static_cast<std::uint32_t>(a)) ^ static_cast<std::uint32_t>(b);
    s = ShiftStripe(r) ^ static_cast<std::uint32_t>(c);
    p += 3 * kStripe;
    n -= 3 * kStripe;
  }
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
