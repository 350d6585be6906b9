// Rng: the simulator's only source of randomness.
//
// Every random draw of a simulation (VM sizes, kinds, dirty rates, event times,
// which host to drain) comes from an Rng seeded from the scenario's seed, so a
// run is a pure function of its scenario. The samplers are written here over
// the raw output of std::mt19937_64, whose sequence the C++ standard fixes;
// std::uniform_real_distribution and friends are not used because their
// results differ between standard libraries, which would break golden outputs.
//
// Thread safety: an Rng is a plain value; give each thread its own.
#ifndef ESCDR_SIM_RANDOM_H_
#define ESCDR_SIM_RANDOM_H_

#include <cstdint>
#include <random>
#include <span>

namespace escdr::sim {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : engine_(seed) {}

  // The next raw 64-bit output of mt19937_64.
  std::uint64_t NextU64() { return engine_(); }
  // Uniform in [0, 1), 53 random bits.
  double Uniform01();
  // Uniform in [lo, hi).
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform01(); }
  // Uniform integer in [0, n), without modulo bias. REQUIRES: n > 0.
  std::uint64_t Below(std::uint64_t n);
  // Exponential with the given mean (inverse transform). REQUIRES: mean > 0.
  double Exponential(double mean);
  // Standard normal (Box-Muller; one of the pair is discarded so that the
  // stream position never depends on earlier calls).
  double Normal();
  // Index i with probability weights[i] / sum(weights).
  // REQUIRES: weights non-empty, all >= 0, sum > 0.
  std::size_t Pick(std::span<const double> weights);

 private:
  std::mt19937_64 engine_;
};

// An independent seed for sub-stream `stream` of `seed` (SplitMix64 mixing),
// so that adding draws to one stream does not shift the others.
std::uint64_t DeriveSeed(std::uint64_t seed, std::uint64_t stream);

}  // namespace escdr::sim

#endif  // ESCDR_SIM_RANDOM_H_
