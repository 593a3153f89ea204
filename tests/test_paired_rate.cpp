// The estimator palm bench generate reports "% of the floor" and "% of the GEMM rate" with
// (bench/paired_rate.h), on cases whose answer is worked out by hand.
#include "paired_rate.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace palm {
namespace {

// A Beside whose samples are scripted {work, seconds} pairs, recording the variants asked for.
struct Scripted {
  std::vector<std::pair<double, double>> samples;
  std::vector<int> variants;
  Beside beside(int n_variants) {
    return Beside{[this](int v) {
                    variants.push_back(v);
                    return samples.at(variants.size() - 1);
                  },
                  n_variants};
  }
};

TEST(PairedRate, MedianOfOddAndEvenCounts) {
  EXPECT_DOUBLE_EQ(median({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median({4, 1, 3, 2}), 2.5);
  EXPECT_DOUBLE_EQ(median({}), 0);
}

TEST(PairedRate, EachUnitAgainstTheFasterOfItsTwoNeighbouringSamples) {
  // sample rates 10, 20, 10, 40 around units of rate 15, 5, 20:
  // 15 / max(10, 20) = 0.75, 5 / max(20, 10) = 0.25, 20 / max(10, 40) = 0.5; median 0.5
  Scripted s{{{10, 1}, {40, 2}, {5, 0.5}, {80, 2}}, {}};
  Beside b = s.beside(1);
  for (int i = 0; i < 4; ++i) b.take();
  EXPECT_DOUBLE_EQ(b.fraction({15, 5, 20}), 0.5);
  EXPECT_EQ(s.variants, (std::vector<int>{0, 0, 0, 0}));
}

TEST(PairedRate, VariantsTakenInTurnAndTheFasterVariantsTotalIsTheRate) {
  // variant 0: 10 + 30 work in 1 + 2 s = 13.3/s; variant 1: 20 + 40 in 1 + 1 s = 30/s
  Scripted s{{{10, 1}, {20, 1}, {30, 2}, {40, 1}}, {}};
  Beside b = s.beside(2);
  for (int i = 0; i < 4; ++i) b.take();
  EXPECT_EQ(s.variants, (std::vector<int>{0, 1, 0, 1}));
  EXPECT_DOUBLE_EQ(b.rate(), 30);
  // units between them: 10 / max(10, 20), 15 / max(20, 15), 20 / max(15, 40)
  EXPECT_DOUBLE_EQ(b.fraction({10, 15, 20}), 0.5);
}

TEST(PairedRate, OneOddSampleMovesOnlyTheUnitsBesideIt) {
  // Why the median over units: 9 units at 95% of a steady reference of 100, one sample in
  // the middle at 400 (a moment the probe read from a quiet machine). Units 4 and 5 meet
  // it (fraction 95 / 400); the median stays 0.95. The round's total rate over the samples'
  // total (the estimator before) reads 95 / 130 = 0.73.
  std::vector<std::pair<double, double>> samples(10, {100, 1});
  samples[5] = {400, 1};
  Scripted s{samples, {}};
  Beside b = s.beside(1);
  for (int i = 0; i < 10; ++i) b.take();
  EXPECT_DOUBLE_EQ(b.fraction(std::vector<double>(9, 95)), 0.95);
  EXPECT_DOUBLE_EQ(b.rate(), 130);
}

TEST(PairedRate, UnitsWithoutASampleOnEachSideAreAnError) {
  Scripted s{{{10, 1}, {10, 1}}, {}};
  Beside b = s.beside(1);
  b.take();
  b.take();
  try {
    b.fraction({1, 2});
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("2 timed units need 3 samples beside them, not 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(b.fraction({}), std::exception);
}

TEST(PairedRate, RoundsKeepTheBestRateAndTheMedianFraction) {
  PairedRate r;
  r.add(10, 0.9);
  r.add(30, 0.7);
  r.add(20, 1.1);
  EXPECT_DOUBLE_EQ(r.best, 30);
  EXPECT_DOUBLE_EQ(r.median_fraction(), 0.9);
  // batch 16 over batch 1 per round: 80 / 10, 150 / 30, 200 / 20 -> median 8
  EXPECT_DOUBLE_EQ(median_ratio({80, 150, 200}, r), 8);
}

}  // namespace
}  // namespace palm
