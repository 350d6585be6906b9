#include "escdr/sim/random.h"

#include <gtest/gtest.h>

#include <vector>

namespace escdr::sim {
namespace {

TEST(RngTest, RawStreamIsTheStandardMersenneTwister) {
  // The C++ standard fixes mt19937_64's 10000th output for the default seed.
  Rng rng(5489);
  std::uint64_t x = 0;
  for (int i = 0; i < 10000; ++i) x = rng.NextU64();
  EXPECT_EQ(x, 9981545732273789042ull);
}

TEST(RngTest, SameSeedSameDraws) {
  Rng a(42), b(42);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(a.Uniform01(), b.Uniform01());
    EXPECT_EQ(a.Normal(), b.Normal());
    EXPECT_EQ(a.Below(7), b.Below(7));
  }
}

TEST(RngTest, SamplersHaveTheirMeans) {
  Rng rng(1);
  double u = 0, e = 0, n = 0;
  const int k = 200000;
  for (int i = 0; i < k; ++i) {
    u += rng.Uniform01();
    e += rng.Exponential(3.0);
    n += rng.Normal();
  }
  EXPECT_NEAR(u / k, 0.5, 0.01);
  EXPECT_NEAR(e / k, 3.0, 0.05);
  EXPECT_NEAR(n / k, 0.0, 0.01);
}

TEST(RngTest, PickFollowsWeightsAndNeverPicksZeroWeight) {
  Rng rng(3);
  const std::vector<double> w{1, 0, 3};
  int counts[3] = {};
  for (int i = 0; i < 40000; ++i) ++counts[rng.Pick(w)];
  EXPECT_EQ(counts[1], 0);
  EXPECT_NEAR(static_cast<double>(counts[2]) / counts[0], 3.0, 0.15);
}

TEST(RngTest, DerivedSeedsDiffer) {
  EXPECT_NE(DeriveSeed(1, 1), DeriveSeed(1, 2));
  EXPECT_NE(DeriveSeed(1, 1), DeriveSeed(2, 1));
  EXPECT_EQ(DeriveSeed(9, 4), DeriveSeed(9, 4));
}

}  // namespace
}  // namespace escdr::sim
