// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// MoBA (DESIGN §2): the gate against a straightforward fp64 gate written here
// (exact selections, ties constructed on purpose), and the attention against
// the fp64 oracle with the pairs that gate selects, on every backend: blocks
// that do not divide N, blocks longer than a KV tile, decode, GQA, strided
// views, topk = 1, Nk <= bk * topk (= causal), NaN, 1 and 2 threads, errors;
// q, k, v and out stored in 16 bits.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace moba_test {

using attn::index_t;
namespace ref = attn::ref;

// ---------------------------------------------------------------------------
// The reference gate, from DESIGN §2 with no tiling: fp64 block means and
// scores q_i . mean(c) for the past blocks c < own = (i + Nk - Nq) / bk,
// stably sorted best first (ties: the lower block first), the best topk - 1
// kept beside the own block.

struct gate_reference {
  index_t batch = 0, heads = 0, queries = 0, width = 0, blocks = 0;
  std::vector<std::int32_t> chosen;  // (B, Hq, Nq, width) ascending, -1 padded
  std::vector<double> scores;        // (B, Hq, Nq, blocks) fp64 gate scores (past blocks)
  std::vector<double> margin;        // (B, Hq, Nq) last kept past score - best dropped one

  std::size_t row(index_t b, index_t h, index_t i) const {
    return static_cast<std::size_t>((b * heads + h) * queries + i);
  }
  std::int32_t at(index_t b, index_t h, index_t i, index_t s) const {
    return chosen[row(b, h, i) * static_cast<std::size_t>(width) + static_cast<std::size_t>(s)];
  }
  bool selects(index_t b, index_t h, index_t i, index_t c) const {
    for (index_t s = 0; s < width; ++s)
      if (at(b, h, i, s) == c) return true;
    return false;
  }
};

gate_reference reference_gate(attn::view4<const float> q, attn::view4<const float> k, index_t bk,
                              index_t topk) {
  const index_t nb = q.extent[0], nq = q.extent[1], hq = q.extent[2], dk = q.extent[3];
  const index_t nk = k.extent[1], hkv = k.extent[2], group = hq / hkv;
  gate_reference r;
  r.batch = nb;
  r.heads = hq;
  r.queries = nq;
  r.blocks = (nk + bk - 1) / bk;
  r.width = std::min(topk, r.blocks);
  r.chosen.assign(static_cast<std::size_t>(nb * hq * nq * r.width), -1);
  r.scores.assign(static_cast<std::size_t>(nb * hq * nq * r.blocks), 0.0);
  r.margin.assign(static_cast<std::size_t>(nb * hq * nq), INFINITY);

  std::vector<double> means(static_cast<std::size_t>(nb * hkv * r.blocks * dk), 0.0);
  auto mean = [&](index_t b, index_t g, index_t c) {
    return means.data() + ((b * hkv + g) * r.blocks + c) * dk;
  };
  for (index_t b = 0; b < nb; ++b)
    for (index_t g = 0; g < hkv; ++g)
      for (index_t c = 0; c < r.blocks; ++c) {
        const index_t j0 = c * bk, j1 = std::min(nk, j0 + bk);
        for (index_t d = 0; d < dk; ++d) {
          double sum = 0;
          for (index_t j = j0; j < j1; ++j) sum += double(k(b, j, g, d));
          mean(b, g, c)[d] = sum / double(j1 - j0);
        }
      }

  for (index_t b = 0; b < nb; ++b)
    for (index_t h = 0; h < hq; ++h)
      for (index_t i = 0; i < nq; ++i) {
        const index_t pos = i + nk - nq;
        if (pos < 0) continue;
        const index_t own = pos / bk;
        double* s = r.scores.data() + r.row(b, h, i) * static_cast<std::size_t>(r.blocks);
        for (index_t c = 0; c < own; ++c) {
          double dot = 0;
          for (index_t d = 0; d < dk; ++d) dot += double(q(b, i, h, d)) * mean(b, h / group, c)[d];
          s[c] = std::isnan(dot) ? -INFINITY : dot;  // NaN ranks below every number
        }
        std::vector<index_t> order(static_cast<std::size_t>(own));
        std::iota(order.begin(), order.end(), index_t{0});
        std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t c) { return s[a] > s[c]; });
        const index_t take = std::min(r.width - 1, own);
        std::vector<std::int32_t> pick(order.begin(), order.begin() + take);
        std::sort(pick.begin(), pick.end());
        pick.push_back(static_cast<std::int32_t>(own));
        std::copy(pick.begin(), pick.end(), r.chosen.begin() + static_cast<std::ptrdiff_t>(r.row(b, h, i) * r.width));
        if (take > 0 && take < own) r.margin[r.row(b, h, i)] = s[order[take - 1]] - s[order[take]];
      }
  return r;
}

// The library's selection equals the reference's, row by row. A row whose
// fp64 margin is nonzero but below fp32 rounding (a near-tie the reference
// decides by a hair) may differ, provided every block it keeps scores within
// that rounding of the last kept one; exact ties (margin 0) must match.
::testing::AssertionResult same_selection(const attn::moba_selection& got, const gate_reference& want,
                                          double near_tie = 1e-4) {
  if (got.batch != want.batch || got.heads != want.heads || got.queries != want.queries ||
      got.topk != want.width || static_cast<index_t>(got.blocks.size()) != want.batch * want.heads * want.queries * want.width)
    return ::testing::AssertionFailure() << "selection shape (" << got.batch << ", " << got.heads << ", "
                                         << got.queries << ", " << got.topk << ") != reference ("
                                         << want.batch << ", " << want.heads << ", " << want.queries
                                         << ", " << want.width << ")";
  index_t near_ties = 0;
  for (index_t b = 0; b < want.batch; ++b)
    for (index_t h = 0; h < want.heads; ++h)
      for (index_t i = 0; i < want.queries; ++i) {
        const auto row = got(b, h, i);
        bool same = true;
        for (index_t s = 0; s < want.width; ++s) same = same && row[s] == want.at(b, h, i, s);
        if (same) continue;
        const double margin = want.margin[want.row(b, h, i)];
        std::string text;
        for (index_t s = 0; s < want.width; ++s)
          text += std::to_string(row[s]) + "/" + std::to_string(want.at(b, h, i, s)) + " ";
        if (!(margin > 0 && margin < near_tie))
          return ::testing::AssertionFailure() << "(b=" << b << ", h=" << h << ", i=" << i
                                               << ") got/want: " << text << " margin " << margin;
        // A near-tie: the same own block and count, every kept past block
        // within near_tie of the reference's last kept score.
        const double* s = want.scores.data() + want.row(b, h, i) * static_cast<std::size_t>(want.blocks);
        double last = INFINITY;
        for (index_t x = 0; x + 1 < want.width && want.at(b, h, i, x + 1) >= 0; ++x)
          last = std::min(last, s[want.at(b, h, i, x)]);
        for (index_t x = 0; x < want.width; ++x) {
          const bool past = x + 1 < want.width && row[x + 1] >= 0;
          if ((row[x] < 0) != (want.at(b, h, i, x) < 0) || (!past && row[x] != want.at(b, h, i, x)) ||
              (past && s[row[x]] < last - near_tie))
            return ::testing::AssertionFailure() << "(b=" << b << ", h=" << h << ", i=" << i
                                                 << ") near-tie row got/want: " << text;
        }
        ++near_ties;
      }
  return ::testing::AssertionSuccess() << near_ties << " near-ties";
}

// ---------------------------------------------------------------------------
// Problems and the attention check.

struct moba_case {
  index_t b, nq, nk, hq, hkv, dk, dv;
  index_t bk, topk;
};

std::string describe(const moba_case& s) {
  return "B=" + std::to_string(s.b) + " Nq=" + std::to_string(s.nq) + " Nk=" + std::to_string(s.nk) +
         " Hq=" + std::to_string(s.hq) + " Hkv=" + std::to_string(s.hkv) + " Dk=" + std::to_string(s.dk) +
         " Dv=" + std::to_string(s.dv) + " bk=" + std::to_string(s.bk) + " topk=" + std::to_string(s.topk);
}

struct layouts {
  ref::layout4 q = ref::bshd_memory, k = ref::bhsd_memory, v = ref::padded_bshd, out = ref::bshd_memory;
  ref::layout3 lse = ref::bsh_memory;
};

struct moba_inputs {
  ref::tensor4 q, k, v, out;
  ref::tensor3 lse;
  moba_inputs(const moba_case& s, std::uint64_t seed, const layouts& mem = {}) {
    ref::rng g{seed};
    q = ref::random<4>(g, {s.b, s.nq, s.hq, s.dk}, mem.q);
    k = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dk}, mem.k);
    v = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dv}, mem.v);
    out = ref::filled<4>({s.b, s.nq, s.hq, s.dv}, mem.out, 7.0f);
    lse = ref::filled<3>({s.b, s.nq, s.hq}, mem.lse, 7.0f);
  }
};

attn::moba_options options_of(const moba_case& s) {
  attn::moba_options opt;
  opt.block_k = s.bk;
  opt.topk = s.topk;
  return opt;
}

// The oracle over the pairs a selection allows, selects(b, h, i, block):
// key j of a selected block, and j <= i + Nk - Nq.
template <class Selects>
ref::softmax_result oracle_over(const moba_inputs& in, const moba_case& s, Selects selects) {
  const index_t off = s.nk - s.nq;
  auto allowed = [&](index_t b, index_t h, index_t i, index_t j) {
    return j <= i + off && selects(b, h, i, j / s.bk);
  };
  auto identity = [](double x, index_t, index_t, index_t, index_t) { return x; };
  return ref::softmax_attention(in.q.cview(), in.k.cview(), in.v.cview(), 1.0 / std::sqrt(double(s.dk)),
                                nullptr, allowed, identity);
}
// Over the pairs the reference gate selects.
ref::softmax_result moba_oracle(const moba_inputs& in, const moba_case& s,
                                const gate_reference& gate) {
  return oracle_over(
      in, s, [&](index_t b, index_t h, index_t i, index_t c) { return gate.selects(b, h, i, c); });
}
// Over the pairs the library's gate selects.
ref::softmax_result moba_oracle(const moba_inputs& in, const moba_case& s,
                                const attn::moba_selection& sel) {
  return oracle_over(in, s, [&](index_t b, index_t h, index_t i, index_t c) {
    const auto row = sel(b, h, i);
    return std::find(row.begin(), row.end(), static_cast<std::int32_t>(c)) != row.end();
  });
}

// Gate exact against the reference, attention within DESIGN §1 of the
// oracle, nothing written outside the views.
template <class Backend, class Exec = attn::serial>
void check_moba(const moba_case& s, const layouts& mem = {}, const Exec& exec = {}) {
  SCOPED_TRACE(describe(s));
  moba_inputs in(s, 17 + static_cast<std::uint64_t>(s.nq * 131 + s.nk * 7 + s.bk), mem);
  const attn::moba_options opt = options_of(s);
  const gate_reference want = reference_gate(in.q.cview(), in.k.cview(), s.bk, s.topk);
  const attn::moba_selection got = attn::moba_gate<Backend>(in.q.cview(), in.k.cview(), opt, exec);
  EXPECT_TRUE(same_selection(got, want, 0.0));  // these seeds hold no near-tie
  attn::moba_attention<Backend>(in.q.cview(), in.k.cview(), in.v.cview(), in.out.view, in.lse.view, opt, exec);
  EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), moba_oracle(in, s, want)));
  EXPECT_TRUE(in.out.padding_holds(7.0f)) << "out written outside its view";
  EXPECT_TRUE(in.lse.padding_holds(7.0f)) << "lse written outside its view";
}

template <class Backend>
class MobaTest : public ::testing::Test {};
TYPED_TEST_SUITE(MobaTest, ref::backend_types, ref::backend_name);

TYPED_TEST(MobaTest, MatchesTheOracle) {
  const index_t tile = TypeParam::kv_tile;
  check_moba<TypeParam>({1, 300, 300, 4, 2, 32, 32, 32, 3});  // bk divides N
  check_moba<TypeParam>({2, 257, 257, 2, 2, 24, 40, 37, 2});  // bk does not divide N
  check_moba<TypeParam>({1, 4 * tile + 9, 4 * tile + 9, 2, 1, 32, 32, tile + 13, 2});  // blocks > a KV tile
  check_moba<TypeParam>({1, 600, 600, 2, 2, 16, 16, 16, 5});  // many blocks, many rows per block
  check_moba<TypeParam>({1, 90, 90, 2, 2, 8, 8, 1, 4});       // bk = 1: a block per key
}

TYPED_TEST(MobaTest, EqualsCausalAttentionWhenEveryBlockFits) {
  // Nk <= bk * topk: every past block is selected, so MoBA is causal attention.
  for (const moba_case& s : {moba_case{1, 300, 300, 4, 2, 32, 32, 100, 3},
                             moba_case{1, 250, 250, 2, 2, 32, 32, 100, 3},  // a short last block
                             moba_case{2, 40, 250, 4, 1, 64, 64, 64, 4},    // Nq < Nk
                             moba_case{1, 200, 200, 2, 2, 16, 16, 8, 1000}}) {
    SCOPED_TRACE(describe(s));
    moba_inputs in(s, 5 + static_cast<std::uint64_t>(s.nk));
    attn::moba_attention<TypeParam>(in.q.cview(), in.k.cview(), in.v.cview(), in.out.view, in.lse.view,
                                    options_of(s));
    attn::softmax_options causal;
    causal.causal = true;
    const ref::softmax_result want = ref::softmax_attention(in.q.cview(), in.k.cview(), in.v.cview(), causal);
    EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), want));

    ref::tensor4 dense = ref::filled<4>({s.b, s.nq, s.hq, s.dv}, ref::bshd_memory, 0.0f);
    attn::attention<TypeParam>(in.q.cview(), in.k.cview(), in.v.cview(), dense.view, {}, causal);
    EXPECT_LE(ref::compare(in.out.cview(), dense.cview()).max_abs, 1e-5) << "MoBA != causal attention";
  }
}

TYPED_TEST(MobaTest, DecodeAgainstALongCache) {
  for (index_t nq : {1, 4}) {
    check_moba<TypeParam>({2, nq, 1000, 8, 2, 64, 64, 64, 4});
    check_moba<TypeParam>({1, nq, 1000, 4, 4, 32, 32, 100, 3}, {}, attn::openmp{2});
  }
}

// Inner stride != 1 (packed K and V), BHSD q, padding everywhere.
layouts strided_layouts() {
  layouts mem;
  mem.q = ref::padded_bhsd;
  mem.k = ref::bsdh_memory;
  mem.v = ref::bsdh_memory;
  mem.out = ref::padded_bshd;
  mem.lse = ref::padded_bsh;
  return mem;
}

TYPED_TEST(MobaTest, GqaAndStridedViews) {
  // Strided layouts; Dv != Dk and not a multiple of the vector width; MQA.
  const layouts strided = strided_layouts();
  check_moba<TypeParam>({2, 200, 200, 6, 2, 24, 20, 30, 3}, strided);
  check_moba<TypeParam>({1, 333, 333, 4, 1, 32, 48, 50, 3}, strided, attn::openmp{2});
  layouts bhsd;
  bhsd.q = ref::bhsd_memory;
  bhsd.v = ref::bhsd_memory;
  bhsd.out = ref::padded_bhsd;
  check_moba<TypeParam>({1, 256, 256, 8, 2, 64, 64, 64, 2}, bhsd);
  // Large head dims: the gate's block means and the scores over 256 channels.
  check_moba<TypeParam>({1, 131, 131, 4, 2, 256, 128, 32, 2}, strided, attn::openmp{2});
}

TYPED_TEST(MobaTest, OwnBlockOnlyWithTopkOne) {
  const moba_case s{1, 301, 301, 4, 2, 32, 32, 50, 1};
  check_moba<TypeParam>(s);
  moba_inputs in(s, 3);
  const attn::moba_selection sel = attn::moba_gate<TypeParam>(in.q.cview(), in.k.cview(), options_of(s));
  ASSERT_EQ(sel.topk, 1);
  for (index_t h = 0; h < s.hq; ++h)
    for (index_t i = 0; i < s.nq; ++i) ASSERT_EQ(sel(0, h, i)[0], i / s.bk) << h << " " << i;
}

TYPED_TEST(MobaTest, TiesGoToTheLowerBlock) {
  // 8 blocks of 4 keys; blocks 1, 5 and 6 hold the same keys, lifted along
  // dimension 0, so a query along e0 scores them equally and above the rest.
  const moba_case s{1, 32, 32, 2, 1, 8, 8, 4, 3};
  moba_inputs in(s, 23);
  for (index_t j = 0; j < 4; ++j)
    for (index_t d = 0; d < s.dk; ++d) {
      const float x = in.k.view(0, 4 + j, 0, d) + (d == 0 ? 5.0f : 0.0f);
      for (index_t c : {1, 5, 6}) in.k.view(0, 4 * c + j, 0, d) = x;
    }
  for (index_t i = 0; i < s.nq; ++i)
    for (index_t d = 0; d < s.dk; ++d) {
      in.q.view(0, i, 0, d) = d == 0 ? 1.0f : 0.0f;  // head 0: along e0
      in.q.view(0, i, 1, d) = 0.0f;                  // head 1: every score 0
    }
  attn::moba_options opt = options_of(s);
  for (index_t topk : {2, 3, 4}) {
    opt.topk = topk;
    const attn::moba_selection got = attn::moba_gate<TypeParam>(in.q.cview(), in.k.cview(), opt);
    EXPECT_TRUE(same_selection(got, reference_gate(in.q.cview(), in.k.cview(), s.bk, topk), 0.0));
    auto expect_row = [&](index_t h, index_t i, std::vector<std::int32_t> want) {
      const auto row = got(0, h, i);
      EXPECT_EQ(std::vector<std::int32_t>(row.begin(), row.end()), want) << "h=" << h << " i=" << i;
    };
    if (topk == 2) {
      expect_row(0, 31, {1, 7});
      expect_row(1, 31, {0, 7});
      expect_row(1, 4, {0, 1});
    } else if (topk == 3) {
      expect_row(0, 31, {1, 5, 7});  // 5 and 6 tie: the lower wins
      expect_row(0, 27, {1, 5, 6});  // own block 6
      expect_row(1, 31, {0, 1, 7});
      expect_row(1, 3, {0, -1, -1});  // fewer eligible blocks than topk
    } else {
      expect_row(0, 31, {1, 5, 6, 7});
      expect_row(1, 31, {0, 1, 2, 7});
    }
  }
  opt.topk = 3;
  attn::moba_attention<TypeParam>(in.q.cview(), in.k.cview(), in.v.cview(), in.out.view, in.lse.view, opt);
  EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(),
                                   moba_oracle(in, s, reference_gate(in.q.cview(), in.k.cview(), s.bk, 3))));
}

TYPED_TEST(MobaTest, EmptyRowsWhenQueriesOutnumberKeys) {
  // Queries i < Nq - Nk sit before the first key: nothing selected, out 0,
  // lse -inf (the oracle's empty rows).
  check_moba<TypeParam>({1, 100, 60, 2, 2, 16, 16, 16, 2});
  moba_inputs in({1, 100, 60, 2, 2, 16, 16, 16, 2}, 1);
  const attn::moba_selection sel =
      attn::moba_gate<TypeParam>(in.q.cview(), in.k.cview(), options_of({1, 100, 60, 2, 2, 16, 16, 16, 2}));
  for (index_t i = 0; i < 40; ++i) EXPECT_EQ(sel(0, 0, i)[0], -1) << i;
  EXPECT_EQ(sel(0, 0, 40)[0], 0);
}

TYPED_TEST(MobaTest, NanStaysInTheRowsThatSelectIt) {
  const moba_case s{1, 320, 320, 2, 1, 32, 32, 32, 3};
  SCOPED_TRACE(describe(s));
  moba_inputs in(s, 9);
  ref::inject_nan_row(in.v.view, 0, 100, 0);  // a value of block 3
  ref::inject_nan(in.k.view, 0, 200, 0, 5);   // block 6's mean is NaN: it ranks last
  const attn::moba_options opt = options_of(s);
  const gate_reference want = reference_gate(in.q.cview(), in.k.cview(), s.bk, s.topk);
  EXPECT_TRUE(same_selection(attn::moba_gate<TypeParam>(in.q.cview(), in.k.cview(), opt), want, 0.0));
  attn::moba_attention<TypeParam>(in.q.cview(), in.k.cview(), in.v.cview(), in.out.view, in.lse.view, opt,
                                  attn::openmp{2});
  EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), moba_oracle(in, s, want)));
  index_t clean = 0;
  for (index_t i = 0; i < s.nq; ++i)
    for (index_t h = 0; h < s.hq; ++h)
      if (!want.selects(0, h, i, 3) && !want.selects(0, h, i, 6)) {
        ++clean;
        EXPECT_TRUE(std::isfinite(in.lse.view(0, i, h))) << i << " " << h;
      }
  EXPECT_GT(clean, 0);
}

TYPED_TEST(MobaTest, OneAndTwoThreadsAgreeBitwise) {
  for (const moba_case& s : {moba_case{2, 500, 500, 4, 2, 32, 32, 40, 3}, moba_case{1, 700, 700, 8, 1, 64, 64, 64, 4}}) {
    SCOPED_TRACE(describe(s));
    moba_inputs one(s, 31), two(s, 31);
    const attn::moba_options opt = options_of(s);
    const attn::moba_selection a = attn::moba_gate<TypeParam>(one.q.cview(), one.k.cview(), opt);
    const attn::moba_selection b = attn::moba_gate<TypeParam>(two.q.cview(), two.k.cview(), opt, attn::openmp{2});
    EXPECT_EQ(a.blocks, b.blocks);
    attn::moba_attention<TypeParam>(one.q.cview(), one.k.cview(), one.v.cview(), one.out.view, one.lse.view, opt);
    attn::moba_attention<TypeParam>(two.q.cview(), two.k.cview(), two.v.cview(), two.out.view, two.lse.view, opt,
                                    attn::openmp{2});
    EXPECT_EQ(ref::compare(one.out.cview(), two.out.cview()).different_bits, 0);
    EXPECT_EQ(ref::compare(one.lse.cview(), two.lse.cview()).different_bits, 0);
  }
}

// ---------------------------------------------------------------------------
// q, k, v and out stored in 16 bits (README, "Reduced precision").

// A tensor's copy stored as T in the same layout; the float tensor is
// rounded to what the copy holds (the fp32 gate's and the oracle's inputs).
template <class T>
struct stored {
  std::vector<T> storage;
  attn::view4<T> view;

  explicit stored(ref::tensor4& t)
      : storage(ref::rounded<T>(t)), view{storage.data(), t.view.extent, t.view.stride} {}
  attn::view4<const T> cview() const { return view; }
};

// Shapes of the 16-bit checks: Nk prime (blocks do not divide it), GQA,
// Nq < Nk with Dv not a multiple of the vector width, topk above the block
// count; each also with q and k strided (inner stride != 1, padding).
const std::vector<moba_case> stored_cases = {
    {1, 257, 257, 4, 2, 32, 32, 37, 3},
    {2, 61, 211, 4, 2, 24, 40, 32, 3},
    {1, 50, 97, 4, 2, 16, 16, 32, 10},
};

// The gate widens q and k exactly: over Q and K it selects what the fp32
// gate selects over the rounded values (the same fp32 sums), and that is
// the reference's selection up to fp32 near-ties.
template <class Backend, class Q, class K, class Exec>
void expect_gate_widens(const moba_case& s, const layouts& mem, const Exec& exec) {
  SCOPED_TRACE(describe(s) + " q " + attn::element_name<Q>() + " k " + attn::element_name<K>());
  moba_inputs in(s, 41 + static_cast<std::uint64_t>(s.nq * 131 + s.nk), mem);
  const stored<Q> q(in.q);
  const stored<K> k(in.k);
  const attn::moba_options opt = options_of(s);
  const attn::moba_selection want = attn::moba_gate<Backend>(in.q.cview(), in.k.cview(), opt, exec);
  const attn::moba_selection got = attn::moba_gate<Backend>(q.cview(), k.cview(), opt, exec);
  EXPECT_EQ(got.topk, want.topk);
  EXPECT_EQ(got.blocks, want.blocks)
      << "the 16-bit gate differs from the fp32 gate on the same values";
  EXPECT_TRUE(same_selection(got, reference_gate(in.q.cview(), in.k.cview(), s.bk, s.topk)));
}

// Attention over Q, K, V stored in 16 bits into an O out: against the oracle
// on the rounded inputs over the gate's selection, with the contract of the
// output's type; nothing written outside out and lse.
template <class Backend, class Q, class K, class V, class O, class Exec>
void expect_stored(const moba_case& s, const layouts& mem, const Exec& exec) {
  SCOPED_TRACE(describe(s) + " q " + attn::element_name<Q>() + " k " + attn::element_name<K>() +
               " v " + attn::element_name<V>() + " out " + attn::element_name<O>());
  moba_inputs in(s, 43 + static_cast<std::uint64_t>(s.nq * 131 + s.nk * 7 + s.bk), mem);
  const stored<Q> q(in.q);
  const stored<K> k(in.k);
  const stored<V> v(in.v);
  stored<O> out(in.out);
  const attn::moba_options opt = options_of(s);
  const attn::moba_selection sel = attn::moba_gate<Backend>(q.cview(), k.cview(), opt, exec);
  EXPECT_TRUE(same_selection(sel, reference_gate(in.q.cview(), in.k.cview(), s.bk, s.topk)));
  attn::moba_attention<Backend>(q.cview(), k.cview(), v.cview(), out.view, in.lse.view, opt, exec);
  for (std::size_t n = 0; n < out.storage.size(); ++n)
    in.out.storage[n] = attn::to_float(out.storage[n]);
  EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), moba_oracle(in, s, sel),
                                   ref::storage_contract<O>()));
  EXPECT_TRUE(in.out.padding_holds(attn::to_float(attn::from_float<O>(7.0f))))
      << "out written outside its view";
  EXPECT_TRUE(in.lse.padding_holds(7.0f)) << "lse written outside its view";
}

TYPED_TEST(MobaTest, GateWidens16BitQueriesAndKeysExactly) {
  using attn::bfloat16, attn::float16;
  for (const moba_case& s : stored_cases)
    for (const layouts& mem : {layouts{}, strided_layouts()}) {
      expect_gate_widens<TypeParam, float16, float16>(s, mem, attn::serial{});
      expect_gate_widens<TypeParam, bfloat16, bfloat16>(s, mem, attn::serial{});
      expect_gate_widens<TypeParam, float16, float16>(s, mem, attn::openmp{2});
      expect_gate_widens<TypeParam, bfloat16, bfloat16>(s, mem, attn::openmp{2});
      expect_gate_widens<TypeParam, float, bfloat16>(s, mem, attn::serial{});
    }
}

template <class Backend, class Exec>
void expect_stored_combinations(const Exec& exec) {
  using attn::bfloat16, attn::float16;
  for (const moba_case& s : stored_cases)
    for (const layouts& mem : {layouts{}, strided_layouts()}) {
      expect_stored<Backend, float16, float16, float16, float16>(s, mem, exec);
      expect_stored<Backend, bfloat16, bfloat16, bfloat16, bfloat16>(s, mem, exec);
      expect_stored<Backend, float, float16, float16, bfloat16>(s, mem, exec);
      expect_stored<Backend, bfloat16, bfloat16, float16, float>(s, mem, exec);
    }
}

TYPED_TEST(MobaTest, StoredIn16BitsMatchesTheOracle) {
  expect_stored_combinations<TypeParam>(attn::serial{});
}

TYPED_TEST(MobaTest, StoredIn16BitsMatchesTheOracleOnTwoThreads) {
  expect_stored_combinations<TypeParam>(attn::openmp{2});
}

TEST(MobaStorage, MutableAndConstViewsCallTheSameOverloads) {
  // Views of mutable elements (no as_input at the call) and the fp32
  // overloads through braces still resolve; results equal the const calls.
  const moba_case s{1, 40, 40, 2, 1, 16, 16, 8, 2};
  moba_inputs in(s, 5);
  stored<attn::float16> q(in.q), k(in.k), v(in.v);
  stored<attn::bfloat16> out(in.out);
  const attn::moba_options opt = options_of(s);
  EXPECT_EQ(attn::moba_gate(q.view, k.view, opt).blocks,
            attn::moba_gate(q.cview(), k.cview(), opt).blocks);
  EXPECT_EQ(attn::moba_gate(in.q.view, in.k.view, opt).blocks,
            attn::moba_gate(in.q.cview(), in.k.cview(), opt).blocks);
  attn::moba_attention(q.view, k.view, v.view, out.view, {}, opt);
  const std::vector<attn::bfloat16> first = out.storage;
  attn::moba_attention(q.cview(), k.cview(), v.cview(), out.view, in.lse.view, opt,
                       attn::openmp{2});
  for (std::size_t n = 0; n < first.size(); ++n) ASSERT_EQ(first[n].bits, out.storage[n].bits) << n;
  ref::tensor4 fp32 = ref::filled<4>({s.b, s.nq, s.hq, s.dv}, ref::bshd_memory, 0.0f);
  attn::moba_attention(in.q.view, in.k.view, in.v.view, fp32.view, {}, opt);
  EXPECT_TRUE(ref::within_contract(
      fp32.cview(), {}, moba_oracle(in, s, attn::moba_gate(in.q.cview(), in.k.cview(), opt))));
}

TEST(MobaStorage, BadShapesAreRefusedNamingTheArgument) {
  ref::rng g{2};
  ref::tensor4 q = ref::random_bshd(g, 1, 8, 4, 16), k = ref::random_bshd(g, 1, 8, 3, 16);
  ref::tensor4 v = ref::random_bshd(g, 1, 8, 3, 16),
               out = ref::filled<4>({1, 8, 4, 16}, ref::bshd_memory, 0.0f);
  const stored<attn::float16> q16(q), k16(k), v16(v);
  stored<attn::bfloat16> out16(out);
  EXPECT_TRUE(ref::throws_naming(
      [&] { (void)attn::moba_gate(q16.cview(), k16.cview(), attn::moba_options{}); },
      {"k: expected a kv head count dividing Hq = 4"}));
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::moba_attention(q16.cview(), k16.cview(), v16.cview(), out16.view, {},
                             attn::moba_options{});
      },
      {"k: expected a kv head count dividing Hq = 4"}));
}

// ---------------------------------------------------------------------------

TEST(MobaErrors, NameTheArgument) {
  ref::rng g{1};
  const ref::tensor4 q = ref::random_bshd(g, 1, 8, 4, 16);
  const ref::tensor4 k = ref::random_bshd(g, 1, 8, 2, 16);
  const ref::tensor4 v = ref::random_bshd(g, 1, 8, 2, 16);
  ref::tensor4 out = ref::filled<4>({1, 8, 4, 16}, ref::bshd_memory, 3.0f);
  ref::tensor3 lse = ref::filled<3>({1, 8, 4}, ref::bsh_memory, 3.0f);
  auto expect_message = [&](const std::string& m, const std::string& part) {
    EXPECT_NE(m.find(part), std::string::npos) << "message: '" << m << "' lacks '" << part << "'";
    for (float x : out.storage) ASSERT_EQ(x, 3.0f) << "output written on bad input";
    for (float x : lse.storage) ASSERT_EQ(x, 3.0f) << "lse written on bad input";
  };
  auto attention = [&](attn::view4<const float> qq, attn::view4<const float> kk, attn::view4<const float> vv,
                       attn::view4<float> oo, const attn::moba_options& opt) {
    return ref::error_message([&] { attn::moba_attention(qq, kk, vv, oo, lse.view, opt); });
  };
  auto gate = [&](attn::view4<const float> qq, attn::view4<const float> kk, const attn::moba_options& opt) {
    return ref::error_message([&] { (void)attn::moba_gate(qq, kk, opt); });
  };
  attn::moba_options opt;
  opt.block_k = 0;
  expect_message(attention(q.cview(), k.cview(), v.cview(), out.view, opt), "block_k: expected a block size >= 1, got 0");
  expect_message(gate(q.cview(), k.cview(), opt), "block_k: expected a block size >= 1, got 0");
  opt = {};
  opt.topk = 0;
  expect_message(attention(q.cview(), k.cview(), v.cview(), out.view, opt), "topk: expected a block count >= 1");
  expect_message(gate(q.cview(), k.cview(), opt), "topk: expected a block count >= 1");
  opt = {};
  opt.scale = std::numeric_limits<float>::infinity();
  expect_message(attention(q.cview(), k.cview(), v.cview(), out.view, opt), "scale: expected a finite value");
  opt = {};
  const ref::tensor4 k3 = ref::random_bshd(g, 1, 8, 3, 16);  // 3 does not divide 4
  expect_message(attention(q.cview(), k3.cview(), k3.cview(), out.view, opt), "k: expected a kv head count dividing Hq = 4");
  expect_message(gate(q.cview(), k3.cview(), opt), "k: expected a kv head count dividing Hq = 4");
  const ref::tensor4 k_dim = ref::random_bshd(g, 1, 8, 2, 12);
  expect_message(attention(q.cview(), k_dim.cview(), v.cview(), out.view, opt), "k: expected shape (B=1, Nk, Hkv, Dk=16)");
  expect_message(gate(q.cview(), k_dim.cview(), opt), "k: expected shape (B=1, Nk, Hkv, Dk=16)");
  const ref::tensor4 v_short = ref::random_bshd(g, 1, 7, 2, 16);
  expect_message(attention(q.cview(), k.cview(), v_short.cview(), out.view, opt), "v: expected shape (B=1, Nk=8, Hkv=2, Dv)");
  ref::tensor4 out_wrong = ref::filled<4>({1, 8, 4, 15}, ref::bshd_memory, 3.0f);
  expect_message(attention(q.cview(), k.cview(), v.cview(), out_wrong.view, opt), "out: expected shape (B=1, Nq=8, Hq=4, Dv=16)");
  expect_message(attention(q.cview(), k.cview(), v.cview(), {}, opt), "out: expected a non-null data pointer");
  expect_message(gate({}, k.cview(), opt), "q: expected a non-null data pointer");
  // out aliasing an input.
  expect_message(attention(q.cview(), k.cview(), v.cview(),
                           attn::view4<float>{const_cast<float*>(q.view.data), out.view.extent, out.view.stride}, opt),
                 "out: expected memory disjoint from q");
}

TEST(MobaSelection, WidthIsTopkCappedByTheBlockCount) {
  ref::rng g{4};
  const ref::tensor4 q = ref::random_bshd(g, 2, 10, 4, 8);
  const ref::tensor4 k = ref::random_bshd(g, 2, 10, 2, 8);
  attn::moba_options opt;
  opt.block_k = 4;  // 3 blocks
  opt.topk = 100;
  const attn::moba_selection sel = attn::moba_gate(q.cview(), k.cview(), opt);
  EXPECT_EQ(sel.batch, 2);
  EXPECT_EQ(sel.heads, 4);
  EXPECT_EQ(sel.queries, 10);
  EXPECT_EQ(sel.topk, 3);
  ASSERT_EQ(sel.blocks.size(), std::size_t{2 * 4 * 10 * 3});
  EXPECT_EQ(std::vector<std::int32_t>(sel(1, 3, 9).begin(), sel(1, 3, 9).end()), (std::vector<std::int32_t>{0, 1, 2}));
  EXPECT_EQ(std::vector<std::int32_t>(sel(1, 3, 5).begin(), sel(1, 3, 5).end()), (std::vector<std::int32_t>{0, 1, -1}));
}

}  // namespace moba_test
