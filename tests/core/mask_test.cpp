// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// The mask seam of the core: band masks name, per key, the run of query
// positions that sees it; that run must agree with allowed(), and masking a
// partial tile by runs must give bitwise the same result as asking pair by pair.

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "attn/attn.hpp"
#include "reference/random.hpp"

namespace {

using attn::index_t;
namespace ref = attn::ref;

// A window mask with the band shortcut hidden: the core must ask it per pair.
struct pairwise_window {
  attn::window_mask m;
  attn::key_range keys(const attn::query_block& qb) const { return m.keys(qb); }
  attn::tile_kind classify(const attn::query_block& qb, index_t j0, index_t j1) const {
    return m.classify(qb, j0, j1);
  }
  bool allowed(index_t b, index_t h, index_t i, index_t j) const { return m.allowed(b, h, i, j); }
};
static_assert(attn::mask<pairwise_window> && !attn::band_mask<pairwise_window>);

const std::array<index_t, 3> windows[] = {
    {-1, 0, 0}, {0, 0, 0}, {16, 0, 0}, {31, 7, 0}, {5, -1, 0}, {40, 0, 4}, {3, 2, 9}, {-1, -1, 0}};

TEST(BandMask, PositionsAgreeWithAllowed) {
  for (index_t off : {-5, 0, 17})
    for (const auto& [left, right, sinks] : windows) {
      const attn::window_mask m{off, left, right, sinks};
      for (index_t j = 0; j < 60; ++j) {
        const attn::position_range run = m.positions(j);
        for (index_t i = -10; i < 80; ++i)
          EXPECT_EQ(m.allowed(0, 0, i, j), i >= run.begin && i < run.end)
              << "off " << off << " window {" << left << ", " << right << "} sinks " << sinks
              << " i " << i << " j " << j;
      }
    }
  const attn::causal_mask c{3};
  for (index_t j = 0; j < 40; ++j)
    for (index_t i = -5; i < 40; ++i)
      EXPECT_EQ(c.allowed(0, 0, i, j), i >= c.positions(j).begin && i < c.positions(j).end);
}

TEST(BandMask, RunsAndPairsMaskTilesIdentically) {
  ref::rng g{11};
  const index_t nq = 150, nk = 170, hq = 4, hkv = 2, d = 16;
  const ref::tensor4 q = ref::random_bshd(g, 1, nq, hq, d);
  const ref::tensor4 k = ref::random_bshd(g, 1, nk, hkv, d);
  const ref::tensor4 v = ref::random_bshd(g, 1, nk, hkv, d);
  for (const auto& [left, right, sinks] : windows) {
    std::vector<float> by_runs(nq * hq * d), by_pairs(nq * hq * d);
    attn::softmax_options opt;
    opt.window = std::array<index_t, 2>{left, right};
    opt.sink_tokens = sinks;
    const attn::view4<float> runs_out = attn::bshd(by_runs.data(), 1, nq, hq, d);
    const attn::view4<float> pairs_out = attn::bshd(by_pairs.data(), 1, nq, hq, d);
    attn::attention(q.cview(), k.cview(), v.cview(), runs_out, {}, opt);
    const auto problem =
        attn::detail::make_softmax_problem(q.cview(), k.cview(), v.cview(), pairs_out, {}, opt);
    attn::detail::run_softmax<attn::default_backend>(
        problem, pairwise_window{attn::window_mask_of(opt, nk - nq)}, attn::serial{});
    EXPECT_EQ(by_runs, by_pairs) << "window {" << left << ", " << right << "} sinks " << sinks;
  }
}

}  // namespace
