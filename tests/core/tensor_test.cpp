// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// attn::strided_view and its factories.

#include "attn/core/tensor.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

namespace tensor_test {

using attn::index_t;

std::vector<float> iota(std::size_t n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), 0.0f);
  return v;
}

TEST(StridedView, IndexingFollowsStrides) {
  std::vector<float> buf = iota(213);
  const attn::view4<float> t{buf.data(), {2, 3, 4, 5}, {100, 7, 30, 2}};
  EXPECT_EQ(t.span(), 213);
  EXPECT_EQ(&t(0, 0, 0, 0), buf.data());
  EXPECT_EQ(t(1, 2, 3, 4), 100 + 14 + 90 + 8);
  EXPECT_EQ(t(0, 1, 0, 3), 7 + 6);
  EXPECT_EQ(t.row(1, 2, 3), buf.data() + 100 + 14 + 90);
  t(1, 0, 1, 1) = -1.0f;
  EXPECT_EQ(buf[100 + 30 + 2], -1.0f);
  EXPECT_FALSE(t.empty());
  EXPECT_TRUE((attn::view4<float>{}.empty()));
  EXPECT_EQ(decltype(t)::rank, 4u);
}

TEST(StridedView, ConvertsToReadOnly) {
  std::vector<float> buf = iota(24);
  const attn::view3<float> t = attn::bsh(buf.data(), 2, 3, 4);
  const attn::view3<const float> c = t;
  EXPECT_EQ(c.data, t.data);
  EXPECT_EQ(c.extent, t.extent);
  EXPECT_EQ(c.stride, t.stride);
  static_assert(std::is_convertible_v<attn::view4<float>, attn::view4<const float>>);
  static_assert(!std::is_convertible_v<attn::view4<const float>, attn::view4<float>>,
                "a read-only view must not turn writable");
}

TEST(Factories, BshdIsContiguousInSequenceHeadChannelOrder) {
  std::vector<float> buf = iota(2 * 3 * 4 * 5);
  const auto t = attn::bshd(buf.data(), 2, 3, 4, 5);
  EXPECT_EQ(t.extent, (std::array<index_t, 4>{2, 3, 4, 5}));
  EXPECT_EQ(t.stride, (std::array<index_t, 4>{60, 20, 5, 1}));
  float expect = 0;
  for (index_t b = 0; b < 2; ++b)
    for (index_t s = 0; s < 3; ++s)
      for (index_t h = 0; h < 4; ++h)
        for (index_t d = 0; d < 5; ++d) EXPECT_EQ(t(b, s, h, d), expect++);
  EXPECT_EQ(t.size(), 120);
  EXPECT_EQ(t.span(), 120);
}

TEST(Factories, BhsdKeepsBshdIndexingOverHeadMajorMemory) {
  std::vector<float> buf = iota(2 * 3 * 4 * 5);
  const auto t = attn::bhsd(buf.data(), 2, 3, 4, 5);  // memory (B=2, H=4, S=3, D=5)
  EXPECT_EQ(t.extent, (std::array<index_t, 4>{2, 3, 4, 5}));
  EXPECT_EQ(t.stride, (std::array<index_t, 4>{60, 5, 15, 1}));
  float expect = 0;
  for (index_t b = 0; b < 2; ++b)
    for (index_t h = 0; h < 4; ++h)
      for (index_t s = 0; s < 3; ++s)
        for (index_t d = 0; d < 5; ++d) EXPECT_EQ(t(b, s, h, d), expect++);
  EXPECT_EQ(t.size(), 120);
  EXPECT_EQ(t.span(), 120);
}

TEST(Factories, Bsh) {
  std::vector<float> buf = iota(24);
  const auto t = attn::bsh(buf.data(), 2, 3, 4);
  EXPECT_EQ(t.stride, (std::array<index_t, 3>{12, 4, 1}));
  EXPECT_EQ(t(1, 2, 3), 23.0f);
  EXPECT_EQ(t.size(), 24);
}

TEST(StridedView, SizeIsTheProductOrMinusOneOnOverflow) {
  constexpr index_t big = index_t{1} << 32;
  EXPECT_EQ((attn::view4<float>{nullptr, {2, 3, 4, 5}, {}}.size()), 120);
  EXPECT_EQ((attn::view4<float>{nullptr, {1, big, big / 4, 1}, {}}.size()), index_t{1} << 62);
  EXPECT_EQ((attn::view4<float>{nullptr, {1, big, big, 1}, {}}.size()), -1);
  EXPECT_EQ((attn::view4<float>{nullptr, {3, big, big / 4, 1}, {}}.size()), -1);
  EXPECT_EQ((attn::view3<float>{nullptr, {std::numeric_limits<index_t>::max(), 2, 1}, {}}.size()),
            -1);
  EXPECT_EQ((attn::view3<float>{nullptr, {std::numeric_limits<index_t>::max(), 1, 1}, {}}.size()),
            std::numeric_limits<index_t>::max());
}

TEST(StridedView, SizeWithAZeroExtentIsZero) {
  constexpr index_t big = index_t{1} << 40;
  EXPECT_EQ((attn::view4<float>{nullptr, {0, big, big, 1}, {}}.size()), 0);
  EXPECT_EQ((attn::view4<float>{nullptr, {2, 0, 4, 5}, {}}.size()), 0);
  // The product is 0 wherever the zero sits, even after a partial product
  // that alone would overflow.
  EXPECT_EQ((attn::view4<float>{nullptr, {big, big, 0, 1}, {}}.size()), 0);
}

TEST(StridedView, SpanIsOnePastTheFurthestElement) {
  const attn::view4<float> t{nullptr, {2, 3, 4, 5}, {100, 7, 30, 2}};
  EXPECT_EQ(t.span(), 100 + 14 + 90 + 8 + 1);
  const attn::view4<float> padded{nullptr, {2, 3, 4, 5}, {80, 24, 6, 1}};  // 1 pad per row
  EXPECT_EQ(padded.span(), 80 + 48 + 18 + 4 + 1);
  EXPECT_EQ((attn::view4<float>{nullptr, {2, 0, 4, 5}, {60, 20, 5, 1}}.span()), 0);
  EXPECT_EQ((attn::view4<float>{nullptr, {1, 1, 1, 1}, {0, 0, 0, 0}}.span()), 1);
  // A broadcast (zero-stride) dimension adds nothing.
  EXPECT_EQ((attn::view4<float>{nullptr, {1, 9, 1, 4}, {0, 0, 0, 1}}.span()), 4);
}

TEST(StridedView, ConstexprUse) {
  constexpr attn::view4<const float> t = attn::bshd<const float>(nullptr, 2, 3, 4, 5);
  static_assert(t.size() == 120 && t.span() == 120);
  static_assert(t.stride[1] == 20);
  SUCCEED();
}

}  // namespace tensor_test
