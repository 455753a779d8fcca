// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// The mask seam of the core: band masks name, per key, the run of query
// positions that sees it; that run must agree with allowed(), and masking a
// partial tile by runs must give bitwise the same result as asking pair by pair.

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/random.hpp"

namespace mask_test {

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
    attn::attention(q.cview(), k.cview(), v.cview(), pairs_out, {},
                    pairwise_window{attn::window_mask_of(opt, nk - nq)});
    EXPECT_EQ(by_runs, by_pairs) << "window {" << left << ", " << right << "} sinks " << sinks;
  }
}

// ---------------------------------------------------------------------------
// Classification soundness: for every query block and key tile, keys() must
// hold every allowed key, `full` must mean every pair allowed and `empty`
// none; band masks' runs must agree with allowed(). Checked exhaustively on
// small problems for every built-in and for compositions.

template <class M>
void expect_sound(const M& m, index_t nq, index_t nk, index_t hq, const std::string& name) {
  SCOPED_TRACE(name + " Nq=" + std::to_string(nq) + " Nk=" + std::to_string(nk));
  index_t checked = 0;
  for (index_t qs : {index_t{1}, index_t{3}, index_t{8}})
    for (index_t i0 = 0; i0 < nq; i0 += qs) {
      const index_t i1 = std::min(nq, i0 + qs);
      for (index_t h0 = 0; h0 < hq; h0 += 2) {
        const attn::query_block qb{0, i0, i1, h0, std::min(hq, h0 + 2), nq, nk};
        const attn::key_range range = m.keys(qb);
        for (index_t i = i0; i < i1; ++i)
          for (index_t h = qb.h_begin; h < qb.h_end; ++h)
            for (index_t j = 0; j < nk; ++j)
              if (m.allowed(0, h, i, j)) {
                ASSERT_TRUE(j >= range.begin && j < range.end)
                    << "keys() misses allowed pair i " << i << " h " << h << " j " << j;
              }
        for (index_t ks : {index_t{1}, index_t{4}, index_t{7}})
          for (index_t j0 = std::max<index_t>(range.begin, 0); j0 < range.end; j0 += ks) {
            const index_t j1 = std::min(range.end, j0 + ks);
            const attn::tile_kind kind = m.classify(qb, j0, j1);
            index_t allowed = 0, pairs = 0;
            for (index_t i = i0; i < i1; ++i)
              for (index_t h = qb.h_begin; h < qb.h_end; ++h)
                for (index_t j = j0; j < j1; ++j, ++pairs) allowed += m.allowed(0, h, i, j) ? 1 : 0;
            if (kind == attn::tile_kind::full) {
              ASSERT_EQ(allowed, pairs) << "full tile with a disallowed pair: rows [" << i0 << ", "
                                        << i1 << ") keys [" << j0 << ", " << j1 << ")";
            }
            if (kind == attn::tile_kind::empty) {
              ASSERT_EQ(allowed, 0) << "empty tile with an allowed pair: rows [" << i0 << ", "
                                    << i1 << ") keys [" << j0 << ", " << j1 << ")";
            }
            ++checked;
          }
      }
    }
  if constexpr (attn::band_mask<M>) {
    for (index_t j = 0; j < nk; ++j)
      for (index_t i = 0; i < nq; ++i) {
        ASSERT_EQ(m.allowed(0, 0, i, j), i >= m.positions(j).begin && i < m.positions(j).end)
            << "positions() disagrees with allowed() at i " << i << " j " << j;
      }
  }
  EXPECT_GT(checked, 0);
}

std::vector<std::int32_t> documents(std::initializer_list<index_t> lengths) {
  std::vector<std::int32_t> ids;
  std::int32_t id = 7;
  for (index_t n : lengths) {
    ids.insert(ids.end(), static_cast<std::size_t>(n), id);
    id += 3;  // ids need not be consecutive, only contiguous
  }
  return ids;
}

TEST(MaskClassification, BuiltInsAreSound) {
  for (const auto& [nq, nk] : {std::array<index_t, 2>{23, 23}, {9, 23}, {1, 23}})
    for (const auto& [left, right, sinks] : windows) {
      const index_t off = nk - nq;
      expect_sound(attn::window_mask{off, left, right, sinks}, nq, nk, 2, "window");
      expect_sound(attn::causal_mask{off}, nq, nk, 2, "causal");
      for (index_t prefix : {0, 1, 5, 23, 40})
        expect_sound(attn::prefix_lm_mask{off, prefix}, nq, nk, 2, "prefix " + std::to_string(prefix));
    }
}

TEST(MaskClassification, DocumentsAndTheirCompositionsAreSound) {
  const std::vector<std::int32_t> cases[] = {documents({23}), documents({5, 1, 11, 6}),
                                             documents({1, 1, 1, 20}), documents({10, 13})};
  for (const std::vector<std::int32_t>& ids : cases)
    for (index_t nq : {23, 9, 1}) {
      const index_t nk = 23, off = nk - nq;
      const attn::document_mask doc(ids, off);
      expect_sound(doc, nq, nk, 2, "documents");
      expect_sound(doc & attn::causal_mask{off}, nq, nk, 2, "documents & causal");
      expect_sound(doc & attn::window_mask{off, 4, 0, 2}, nq, nk, 2, "documents & window");
      expect_sound(attn::causal_mask{off} & attn::window_mask{off, 6, 3, 0} & doc, nq, nk, 2,
                   "causal & window & documents");
      expect_sound(doc | attn::window_mask{off, 2, 0, 0}, nq, nk, 2, "documents | window");
      expect_sound(attn::prefix_lm_mask{off, 4} | doc, nq, nk, 2, "prefix | documents");
    }
}

TEST(MaskClassification, UserMasksAndBlockMasksAreSound) {
  const index_t nq = 23, nk = 23, hq = 4;
  // A dilated causal window per head: head h sees every (h + 1)-th key.
  auto dilated = [](index_t, index_t h, index_t i, index_t j) {
    return j <= i && i - j < 12 && (i - j) % (h + 1) == 0;
  };
  auto classify = [](const attn::query_block& qb, index_t j0, index_t j1) {
    if (j0 > qb.i_end - 1 || j1 - 1 < qb.i_begin - 11) return attn::tile_kind::empty;
    return attn::tile_kind::partial;
  };
  expect_sound(attn::mask_from(dilated), nq, nk, hq, "predicate");
  expect_sound(attn::mask_from(dilated, classify), nq, nk, hq, "predicate with classifier");
  expect_sound(attn::mask_from(dilated) & attn::causal_mask{0}, nq, nk, hq, "predicate & causal");

  const attn::document_mask doc(documents({5, 1, 11, 6}), 0);
  const auto m = doc & attn::causal_mask{0};
  for (const auto& [bq, bk] : {std::array<index_t, 2>{1, 1}, {4, 4}, {3, 8}, {64, 64}}) {
    const attn::block_mask blocks = attn::block_mask::build(m, 1, 1, nq, nk, bq, bk);
    expect_sound(attn::blocked(blocks, m), nq, nk, hq, "blocks " + std::to_string(bq) + "x" + std::to_string(bk));
  }
  const attn::block_mask per_head = attn::block_mask::build(attn::mask_from(dilated, classify), 1, hq, nq, nk, 4, 4);
  expect_sound(attn::blocked(per_head, attn::mask_from(dilated)), nq, nk, hq, "per-head blocks");
}

TEST(MaskClassification, DocumentIdsMustBeContiguousAndMatchTheProblem) {
  const std::vector<std::int32_t> split{1, 1, 2, 1};
  try {
    attn::document_mask bad(split, 0);
    FAIL() << "non-contiguous document ids were accepted";
  } catch (const attn::error& e) {
    EXPECT_NE(std::string(e.what()).find("document_ids"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos) << e.what();
  }
  EXPECT_THROW(attn::document_mask(split, 5), attn::error);  // Nq > Nk
  EXPECT_EQ(attn::document_mask(documents({5, 1, 11, 6}), 0).documents(), 4);
}

}  // namespace mask_test
