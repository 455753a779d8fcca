// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Every operation of every backend against the scalar backend on random data
// (STYLE habit 8; Eigen's packetmath test), lane by lane.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "attn/backend/registry.hpp"
#include "reference/random.hpp"
#include "reference/checks.hpp"

namespace backend_test {

using attn::backend::scalar;

template <class B>
class BackendTest : public ::testing::Test {
 protected:
  static constexpr std::size_t W = B::width;
  static constexpr std::size_t vectors = 257;
  attn::ref::rng g{0xBAC0 + W};

  std::vector<float> random(float lo = -10.0f, float hi = 10.0f) {
    std::vector<float> x(W * vectors);
    for (float& e : x) e = g.uniform(lo, hi);
    return x;
  }

  // Applies a binary op vector-wise with B and lane-wise with scalar; the
  // two must agree bitwise.
  template <class VecOp, class ScalarOp>
  void expect_binary(const char* what, VecOp vec_op, ScalarOp scalar_op) {
    const std::vector<float> a = random(), b = random();
    std::vector<float> got(a.size());
    for (std::size_t i = 0; i < a.size(); i += W)
      B::store(got.data() + i, vec_op(B::load(a.data() + i), B::load(b.data() + i)));
    for (std::size_t i = 0; i < a.size(); ++i)
      ASSERT_EQ(got[i], scalar_op(a[i], b[i]))
          << what << " lane " << i << " a=" << a[i] << " b=" << b[i];
  }
};
TYPED_TEST_SUITE(BackendTest, attn::ref::all_backend_types, attn::ref::backend_name);

TYPED_TEST(BackendTest, ModelsTheConcept) {
  using B = TypeParam;
  static_assert(attn::simd_backend<B>);
  EXPECT_GE(B::width, 1u);
  EXPECT_FALSE(std::string(B::name).empty());
  // The blocking the core relies on: a KV tile holds whole score blocks.
  EXPECT_GE(B::kv_tile, B::score_keys);
  EXPECT_GE(B::query_tile_rows, 1);
}

TYPED_TEST(BackendTest, LoadStoreRoundTrip) {
  using B = TypeParam;
  std::vector<float> x = this->random();
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[5] = -std::numeric_limits<float>::infinity();
  x[7 % x.size()] = -0.0f;
  std::vector<float> y(x.size() + 1, 42.0f);
  // Unaligned on purpose: one float past the start.
  for (std::size_t i = 0; i < x.size(); i += B::width)
    B::store(y.data() + 1 + i, B::load(x.data() + i));
  EXPECT_EQ(y[0], 42.0f) << "store wrote before its address";
  EXPECT_EQ(std::memcmp(y.data() + 1, x.data(), x.size() * sizeof(float)), 0);
}

TYPED_TEST(BackendTest, ZeroAndBroadcast) {
  using B = TypeParam;
  std::vector<float> y(B::width, 1.0f);
  B::store(y.data(), B::zero());
  for (float e : y) EXPECT_EQ(e, 0.0f);
  B::store(y.data(), B::broadcast(-3.25f));
  for (float e : y) EXPECT_EQ(e, -3.25f);
}

TYPED_TEST(BackendTest, ArithmeticMatchesScalar) {
  using B = TypeParam;
  using V = typename B::vec;
  this->expect_binary(
      "add", [](V a, V b) { return B::add(a, b); },
      [](float a, float b) { return scalar::add(a, b); });
  this->expect_binary(
      "sub", [](V a, V b) { return B::sub(a, b); },
      [](float a, float b) { return scalar::sub(a, b); });
  this->expect_binary(
      "mul", [](V a, V b) { return B::mul(a, b); },
      [](float a, float b) { return scalar::mul(a, b); });
  this->expect_binary(
      "max", [](V a, V b) { return B::max(a, b); },
      [](float a, float b) { return scalar::max(a, b); });
}

// a * b + c with one rounding (fused) or two (a multiply, then an add).
TYPED_TEST(BackendTest, FmaIsAMultiplyAdd) {
  using B = TypeParam;
  const std::vector<float> a = this->random(), b = this->random(), c = this->random();
  std::vector<float> got(a.size());
  for (std::size_t i = 0; i < a.size(); i += B::width)
    B::store(got.data() + i,
             B::fma(B::load(a.data() + i), B::load(b.data() + i), B::load(c.data() + i)));
  for (std::size_t i = 0; i < a.size(); ++i) {
    const float product = a[i] * b[i];
    ASSERT_TRUE(got[i] == scalar::fma(a[i], b[i], c[i]) || got[i] == product + c[i])
        << "lane " << i << ": fma(" << a[i] << ", " << b[i] << ", " << c[i] << ") = " << got[i];
  }
}

// Whether the instruction set of a backend has a fused multiply-add: the
// scalar backend (std::fma), FMA3 x86, AVX-512, NEON. SSE and AVX without
// FMA3 have none.
template <class B>
constexpr bool isa_has_fma = true;
template <class A>
constexpr bool isa_has_fma<attn::backend::xsimd_backend<A>> =
    std::is_base_of_v<xsimd::fma3<xsimd::sse4_2>, A> ||
    std::is_base_of_v<xsimd::fma3<xsimd::avx>, A> ||
    std::is_base_of_v<xsimd::fma3<xsimd::avx2>, A> || std::is_base_of_v<xsimd::avx512f, A> ||
    std::is_base_of_v<xsimd::neon, A>;

// Where the ISA has a fused multiply-add, B::fma rounds once, as the scalar
// backend's std::fma does (and independently of what the optimiser sees).
TYPED_TEST(BackendTest, FmaRoundsOnceWhereTheIsaFuses) {
  using B = TypeParam;
  if constexpr (!isa_has_fma<B>) {
    GTEST_SKIP() << B::name << " has no fused multiply-add instruction";
  } else {
    const std::vector<float> a = this->random(), b = this->random(), c = this->random();
    std::vector<float> got(a.size());
    for (std::size_t i = 0; i < a.size(); i += B::width)
      B::store(got.data() + i,
               B::fma(B::load(a.data() + i), B::load(b.data() + i), B::load(c.data() + i)));
    std::size_t unfused = 0;
    for (std::size_t i = 0; i < a.size(); ++i) unfused += got[i] != scalar::fma(a[i], b[i], c[i]);
    EXPECT_EQ(unfused, 0u) << "lanes rounded twice on random data";
    // (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24: a multiply rounded to float loses
    // the 2^-24 term, a fused multiply-add keeps it.
    const float e = 1.0f + 0x1p-12f;
    std::vector<float> out(B::width);
    B::store(out.data(), B::fma(B::broadcast(e), B::broadcast(e), B::broadcast(-1.0f)));
    EXPECT_EQ(scalar::fma(e, e, -1.0f), 0x1p-11f + 0x1p-24f);
    const auto rounded_twice = std::count(out.begin(), out.end(), 0x1p-11f);
    EXPECT_EQ(std::count(out.begin(), out.end(), 0x1p-11f + 0x1p-24f), std::ssize(out))
        << "fma(1 + 2^-12, 1 + 2^-12, -1) = " << out[0] << " in lane 0 (" << rounded_twice
        << " lanes rounded twice), expected 2^-11 + 2^-24";
  }
}

TYPED_TEST(BackendTest, ReduceAddMatchesScalarSum) {
  using B = TypeParam;
  const std::vector<float> x = this->random();
  for (std::size_t i = 0; i < x.size(); i += B::width) {
    double want = 0, magnitude = 0;
    float sequential = 0;
    for (std::size_t l = 0; l < B::width; ++l) {
      want += x[i + l];
      magnitude += std::fabs(x[i + l]);
      sequential = scalar::add(sequential, scalar::reduce_add(x[i + l]));
    }
    const float got = B::reduce_add(B::load(x.data() + i));
    // Any summation order: within width roundings of the scalar sum.
    EXPECT_NEAR(got, sequential, B::width * 0x1p-23 * magnitude) << "vector " << i / B::width;
    EXPECT_NEAR(got, want, B::width * 0x1p-23 * magnitude) << "vector " << i / B::width;
  }
  // Exact when every partial sum is exact.
  std::vector<float> ints(B::width);
  for (std::size_t l = 0; l < B::width; ++l) ints[l] = static_cast<float>(l + 1);
  EXPECT_EQ(B::reduce_add(B::load(ints.data())), static_cast<float>(B::width * (B::width + 1) / 2));
}

TYPED_TEST(BackendTest, ReduceMaxMatchesScalarMax) {
  using B = TypeParam;
  const std::vector<float> x = this->random();
  for (std::size_t i = 0; i < x.size(); i += B::width) {
    float want = scalar::reduce_max(x[i]);
    for (std::size_t l = 1; l < B::width; ++l)
      want = scalar::max(want, scalar::reduce_max(x[i + l]));
    EXPECT_EQ(B::reduce_max(B::load(x.data() + i)), want) << "vector " << i / B::width;
  }
  // The maximum in each lane position in turn, and -inf lanes.
  for (std::size_t pos = 0; pos < B::width; ++pos) {
    std::vector<float> y(B::width, -std::numeric_limits<float>::infinity());
    y[pos] = -5.0f;
    EXPECT_EQ(B::reduce_max(B::load(y.data())), -5.0f) << "max in lane " << pos;
  }
  // A NaN lane makes the reduction NaN, wherever it sits.
  for (std::size_t pos = 0; pos < B::width; ++pos) {
    std::vector<float> y(B::width, 1.0f);
    y[pos] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(std::isnan(B::reduce_max(B::load(y.data())))) << "NaN in lane " << pos;
  }
}

// A width x width block between strided rows, every element moved exactly
// (NaN payloads and signed zeros included) and nothing outside the block
// written.
TYPED_TEST(BackendTest, TransposeMovesEveryElementOfTheBlock) {
  using B = TypeParam;
  constexpr std::ptrdiff_t w = static_cast<std::ptrdiff_t>(B::width), src_stride = w + 3, dst_stride = w + 5;
  std::vector<float> src(static_cast<std::size_t>(w * src_stride));
  for (std::size_t n = 0; n < src.size(); ++n) src[n] = static_cast<float>(n) - 7.5f;
  src[0] = -0.0f;
  if (w > 1) src[static_cast<std::size_t>((w - 1) * src_stride + 1)] = std::numeric_limits<float>::quiet_NaN();
  constexpr float untouched = 12345.0f;
  std::vector<float> dst(static_cast<std::size_t>(w * dst_stride), untouched);
  B::transpose(src.data(), src_stride, dst.data(), dst_stride);
  for (std::ptrdiff_t i = 0; i < w; ++i)
    for (std::ptrdiff_t j = 0; j < dst_stride; ++j) {
      const float got = dst[static_cast<std::size_t>(i * dst_stride + j)];
      if (j >= w) {
        EXPECT_EQ(got, untouched) << "written outside the block at (" << i << ", " << j << ")";
        continue;
      }
      const float want = src[static_cast<std::size_t>(j * src_stride + i)];
      EXPECT_EQ(std::memcmp(&got, &want, sizeof(float)), 0) << "(" << i << ", " << j << "): " << got << " != " << want;
    }
}

TYPED_TEST(BackendTest, MaxWithInfinities) {
  using B = TypeParam;
  constexpr float inf = std::numeric_limits<float>::infinity();
  const float lowest = std::numeric_limits<float>::lowest();
  std::vector<float> out(B::width);
  // The online softmax starts its running max at lowest(); a masked (-inf)
  // score must not lower it, a finite one must raise it.
  B::store(out.data(), B::max(B::broadcast(lowest), B::broadcast(-inf)));
  for (float o : out) EXPECT_EQ(o, lowest);
  B::store(out.data(), B::max(B::broadcast(lowest), B::broadcast(-1e30f)));
  for (float o : out) EXPECT_EQ(o, -1e30f);
  B::store(out.data(), B::max(B::broadcast(inf), B::broadcast(3.0f)));
  for (float o : out) EXPECT_EQ(o, inf);
}

}  // namespace backend_test
