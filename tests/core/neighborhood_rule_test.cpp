// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// The 1-D neighborhood rule (DESIGN §2, NATTEN / GNA semantics) on cases
// worked out by hand, its invariants over every small parameter set, and the
// fp64 neighborhood oracle against the dense one where they must agree.

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <vector>

#include "attn/mask/neighborhood_window.hpp"
#include "reference/checks.hpp"
#include "reference/neighborhood_reference.hpp"
#include "reference/random.hpp"

namespace neighborhood_rule_test {

using attn::index_t;
using attn::neighborhood_dim;
namespace ref = attn::ref;

// [first, last) in group coordinates for every query of a dimension.
std::vector<std::array<index_t, 2>> windows(const neighborhood_dim& n, index_t length) {
  std::vector<std::array<index_t, 2>> w;
  for (index_t i = 0; i < length; ++i) {
    const attn::neighborhood_keys k = attn::neighborhood_window(n, length, i);
    w.push_back({k.first, k.last});
  }
  return w;
}

using W = std::vector<std::array<index_t, 2>>;

TEST(NeighborhoodRule, HandWorkedCases) {
  // K = 3 on 7 tokens: centred, shifted inwards at the borders.
  EXPECT_EQ(windows({3}, 7), (W{{0, 3}, {0, 3}, {1, 4}, {2, 5}, {3, 6}, {4, 7}, {4, 7}}));
  // Even K = 4: K/2 keys before the query, K/2 - 1 after it.
  EXPECT_EQ(windows({4}, 8), (W{{0, 4}, {0, 4}, {0, 4}, {1, 5}, {2, 6}, {3, 7}, {4, 8}, {4, 8}}));
  // Stride = K: blocked (Swin-style) attention.
  EXPECT_EQ(windows({4, 1, 4}, 8), (W{{0, 4}, {0, 4}, {0, 4}, {0, 4}, {4, 8}, {4, 8}, {4, 8}, {4, 8}}));
  // Stride 2 with K = 3: queries of a stride block share their leader's window.
  EXPECT_EQ(windows({3, 1, 2}, 6), (W{{0, 3}, {0, 3}, {2, 5}, {2, 5}, {3, 6}, {3, 6}}));
  // Causal K = 3: the query and the K - 1 before it, fewer at the start.
  EXPECT_EQ(windows({3, 1, 1, true}, 5), (W{{0, 1}, {0, 2}, {0, 3}, {1, 4}, {2, 5}}));
  // Causal with stride 2: the leader is the last of the block, the end the query.
  EXPECT_EQ(windows({3, 1, 2, true}, 6), (W{{0, 1}, {0, 2}, {1, 3}, {1, 4}, {3, 5}, {3, 6}}));
  // Dilation 2 on 9 tokens: groups {0,2,4,6,8} (L' = 5) and {1,3,5,7} (L' = 4).
  const attn::neighborhood_keys q1 = attn::neighborhood_window({3, 2}, 9, 1);
  EXPECT_EQ(q1.group, 1);
  EXPECT_EQ(q1.first, 0);
  EXPECT_EQ(q1.last, 3);  // keys 1, 3, 5
  const attn::neighborhood_keys q7 = attn::neighborhood_window({3, 2}, 9, 7);
  EXPECT_EQ(q7.first, 1);  // keys 3, 5, 7 (shifted in at the group's end)
  EXPECT_EQ(q7.last, 4);
  EXPECT_TRUE(attn::neighborhood_allows({3, 2}, 9, 7, 3));
  EXPECT_FALSE(attn::neighborhood_allows({3, 2}, 9, 7, 4));  // other group
  EXPECT_FALSE(attn::neighborhood_allows({3, 2}, 9, 7, 1));  // outside the window
}

TEST(NeighborhoodRule, InvariantsOverSmallParameters) {
  for (index_t length = 2; length <= 23; ++length)
    for (index_t kernel = 2; kernel <= length; ++kernel)
      for (index_t dilation = 1; kernel * dilation <= length; ++dilation)
        for (index_t stride = 1; stride <= kernel; ++stride)
          for (bool causal : {false, true}) {
            const neighborhood_dim n{kernel, dilation, stride, causal};
            SCOPED_TRACE("L=" + std::to_string(length) + " K=" + std::to_string(kernel) + " D=" +
                         std::to_string(dilation) + " S=" + std::to_string(stride) +
                         (causal ? " causal" : ""));
            for (index_t i = 0; i < length; ++i) {
              index_t seen = 0;
              for (index_t j = 0; j < length; ++j) {
                const bool ok = attn::neighborhood_allows(n, length, i, j);
                seen += ok ? 1 : 0;
                if (ok) {
                  ASSERT_EQ(j % dilation, i % dilation);  // same dilation group
                  if (causal) {
                    ASSERT_LE(j, i);  // never a later key
                  }
                }
              }
              ASSERT_TRUE(attn::neighborhood_allows(n, length, i, i));  // a query sees itself
              if (!causal) {
                ASSERT_EQ(seen, kernel);  // exactly K keys, borders included
              } else {
                ASSERT_LE(seen, kernel);
              }
            }
          }
}

TEST(NeighborhoodRule, InvalidParametersAreErrorsNamingTheDimension) {
  auto message = [](const neighborhood_dim& n, index_t length) {
    return ref::error_message([&] { attn::detail::check_neighborhood_dim(n, length, 1); });
  };
  EXPECT_NE(message({1}, 8).find("neighborhood dimension 1 kernel: expected K >= 2, got 1"),
            std::string::npos);
  EXPECT_NE(message({3, 1, 4}, 8).find("stride: expected 1 <= S <= K = 3, got 4"), std::string::npos);
  EXPECT_NE(message({3, 3}, 8).find("kernel: expected K * D <= L = 8, got K * D = 3 * 3"),
            std::string::npos);
  EXPECT_NE(message({3, 0}, 8).find("dilation: expected D >= 1"), std::string::npos);
  EXPECT_EQ(message({4, 2, 4, true}, 8), "");
}

TEST(NeighborhoodOracle, FullKernelEqualsDenseAndCausalKernelEqualsCausal) {
  ref::rng g{5};
  // 2-D, 5 x 6 grid, (B, X, Y, H, D) with GQA; K = L in both dimensions is dense.
  const index_t b = 2, x = 5, y = 6, hq = 4, hkv = 2, d = 8;
  auto grid_tensor = [&](index_t h) {
    std::vector<float> t(static_cast<std::size_t>(b * x * y * h * d));
    for (float& e : t) e = g.uniform();
    return t;
  };
  const std::vector<float> q = grid_tensor(hq), k = grid_tensor(hkv), v = grid_tensor(hkv);
  auto view5 = [&](const std::vector<float>& t, index_t h) {
    return attn::strided_view<const float, 5>{t.data(), {b, x, y, h, d}, {x * y * h * d, y * h * d, h * d, d, 1}};
  };
  const ref::softmax_result full = ref::neighborhood_attention<2>(
      view5(q, hq), view5(k, hkv), view5(v, hkv), {neighborhood_dim{x}, neighborhood_dim{y}});
  const ref::softmax_result dense = ref::softmax_attention(
      attn::bshd<const float>(q.data(), b, x * y, hq, d), attn::bshd<const float>(k.data(), b, x * y, hkv, d),
      attn::bshd<const float>(v.data(), b, x * y, hkv, d));
  ASSERT_EQ(full.out.size(), dense.out.size());
  for (std::size_t i = 0; i < full.out.size(); ++i) ASSERT_NEAR(full.out[i], dense.out[i], 1e-12);
  // 1-D causal with K = L is causal attention.
  const ref::softmax_result causal_na = ref::neighborhood_attention<1>(
      attn::strided_view<const float, 4>{q.data(), {b, x * y, hq, d}, {x * y * hq * d, hq * d, d, 1}},
      attn::strided_view<const float, 4>{k.data(), {b, x * y, hkv, d}, {x * y * hkv * d, hkv * d, d, 1}},
      attn::strided_view<const float, 4>{v.data(), {b, x * y, hkv, d}, {x * y * hkv * d, hkv * d, d, 1}},
      {neighborhood_dim{x * y, 1, 1, true}});
  attn::softmax_options causal;
  causal.causal = true;
  const ref::softmax_result want = ref::softmax_attention(
      attn::bshd<const float>(q.data(), b, x * y, hq, d), attn::bshd<const float>(k.data(), b, x * y, hkv, d),
      attn::bshd<const float>(v.data(), b, x * y, hkv, d), causal);
  for (std::size_t i = 0; i < want.out.size(); ++i) ASSERT_NEAR(causal_na.out[i], want.out[i], 1e-12);
}

}  // namespace neighborhood_rule_test
