// The kernel tests' comparison against a double reference.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "ref/ref_ops.h"

namespace palm::testing_util {

// max |got - want| <= tol * max |want| (scale-aware, fails on any single bad element)
inline void expect_close(const std::vector<float>& got, const ref::Vec& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_ref = 1e-30, max_err = 0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(want[i]));
    const double e = std::abs(double(got[i]) - want[i]);
    if (e > max_err) max_err = e, worst = i;
  }
  EXPECT_LE(max_err, tol * max_ref) << what << ": worst element " << worst << " got " << got[worst] << " want "
                                    << want[worst];
}

}  // namespace palm::testing_util
