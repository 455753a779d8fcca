// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// B::exp2 of every backend against std::exp2 in double: accuracy over the
// normal range and the special values the online softmax relies on.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "attn/backend/registry.hpp"
#include "reference/checks.hpp"

namespace exp2_test {

template <class B>
class Exp2Test : public ::testing::Test {};
TYPED_TEST_SUITE(Exp2Test, attn::ref::all_backend_types, attn::ref::backend_name);

// exp2 of `x` (length a multiple of B::width), a vector at a time.
template <class B>
std::vector<float> exp2_of(const std::vector<float>& x) {
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < x.size(); i += B::width)
    B::store(y.data() + i, B::exp2(B::load(x.data() + i)));
  return y;
}

// Every lane gets the same value.
template <class B>
float exp2_of(float x) {
  return exp2_of<B>(std::vector<float>(B::width, x))[0];
}

TYPED_TEST(Exp2Test, MaxRelativeErrorOverNormalRange) {
  using B = TypeParam;
  constexpr double lo = -126.0, hi = 127.0;
  constexpr std::size_t points = std::size_t{1} << 22;  // a multiple of every width
  static_assert(points % B::width == 0);
  std::vector<float> x(points);
  for (std::size_t i = 0; i < points; ++i)
    x[i] = static_cast<float>(lo + (hi - lo) * static_cast<double>(i) / (points - 1));
  const std::vector<float> y = exp2_of<B>(x);

  double max_rel = 0;
  float worst = 0;
  for (std::size_t i = 0; i < points; ++i) {
    const double want = std::exp2(static_cast<double>(x[i]));
    const double rel = std::fabs(static_cast<double>(y[i]) - want) / want;
    if (!(rel <= max_rel)) {  // a NaN result becomes the worst case
      max_rel = rel;
      worst = x[i];
    }
  }
  // gtest records arithmetic properties as integers: pass text.
  char measured[32], at[32];
  std::snprintf(measured, sizeof measured, "%.3e", max_rel);
  std::snprintf(at, sizeof at, "%.9g", worst);
  this->RecordProperty("max_rel_error", measured);
  this->RecordProperty("worst_x", at);
  std::printf("[ exp2     ] %s: max relative error %s at x = %s over %zu points in [%g, %g]\n",
              B::name, measured, at, points, lo, hi);
  EXPECT_LE(max_rel, 5e-7) << "at x = " << worst;
}

TYPED_TEST(Exp2Test, IntegersAreExactPowersOfTwo) {
  using B = TypeParam;
  for (int n = -126; n <= 127; ++n)
    EXPECT_EQ(exp2_of<B>(static_cast<float>(n)), std::ldexp(1.0f, n)) << n;
}

TYPED_TEST(Exp2Test, SpecialValues) {
  using B = TypeParam;
  constexpr float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(exp2_of<B>(0.0f), 1.0f);
  EXPECT_EQ(exp2_of<B>(-0.0f), 1.0f);
  // Masked scores: exactly zero, so that they vanish from sums.
  EXPECT_EQ(exp2_of<B>(-inf), 0.0f);
  EXPECT_EQ(exp2_of<B>(-150.0f), 0.0f);
  EXPECT_EQ(exp2_of<B>(-1e30f), 0.0f);
  EXPECT_EQ(exp2_of<B>(std::numeric_limits<float>::lowest()), 0.0f);
  // Overflow.
  EXPECT_EQ(exp2_of<B>(128.0f), inf);
  EXPECT_EQ(exp2_of<B>(200.0f), inf);
  EXPECT_EQ(exp2_of<B>(1e30f), inf);
  EXPECT_EQ(exp2_of<B>(inf), inf);
  // NaN propagates.
  EXPECT_TRUE(std::isnan(exp2_of<B>(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(exp2_of<B>(-std::numeric_limits<float>::quiet_NaN())));
}

// Below 2^-127 every backend gives exactly 0 (no subnormal weights), so that
// backends agree on which scores vanish.
TYPED_TEST(Exp2Test, FlushesBelowMinus127ToZero) {
  using B = TypeParam;
  for (float x : {-127.25f, -127.5f, -128.0f, -135.0f, -140.0f, -149.0f})
    EXPECT_EQ(exp2_of<B>(x), 0.0f) << "x = " << x;
}

TYPED_TEST(Exp2Test, LanesAreIndependent) {
  using B = TypeParam;
  constexpr float inf = std::numeric_limits<float>::infinity();
  const float pattern[] = {0.0f,    -inf, 1.5f,   std::numeric_limits<float>::quiet_NaN(),
                           -200.0f, 3.0f, 200.0f, -0.5f};
  std::vector<float> x(B::width * 8);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = pattern[(i * 5 + i / B::width) % 8];
  const std::vector<float> y = exp2_of<B>(x);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp2(static_cast<double>(x[i]));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(y[i])) << "lane " << i;
    } else if (want == 0.0 || std::isinf(want) || x[i] < -126.0f || x[i] > 127.0f) {
      EXPECT_EQ(y[i], x[i] < 0 ? 0.0f : inf) << "lane " << i << " x = " << x[i];
    } else {
      EXPECT_NEAR(y[i], want, 5e-7 * want) << "lane " << i << " x = " << x[i];
    }
  }
}

}  // namespace exp2_test
