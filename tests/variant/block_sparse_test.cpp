// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Block-sparse attention with an explicit layout (DESIGN §2) against the fp64
// oracle on every backend: random layouts at several densities, block sizes
// that divide neither N nor the core's tiles, per-head and shared layouts,
// dense and list forms, causal, GQA, strided views, empty rows, executors,
// NaN isolation; the mask's classification and masking checked pair by pair;
// errors that name the argument.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace block_sparse_test {

using attn::index_t;
namespace ref = attn::ref;

// A layout (heads, nbq, nbk) of 0/1, contiguous.
struct layout_data {
  index_t heads = 0, nbq = 0, nbk = 0;
  std::vector<std::uint8_t> bytes;

  bool at(index_t h, index_t qk, index_t kb) const {
    return bytes[static_cast<std::size_t>((h * nbq + qk) * nbk + kb)] != 0;
  }
  attn::strided_view<const std::uint8_t, 3> view() const {
    return {bytes.data(), {heads, nbq, nbk}, {nbq * nbk, nbk, 1}};
  }
  attn::block_layout dense() const { return attn::block_layout::dense(view()); }
};

// Each block selected with probability `density` (0: none, 1: all); a
// nonzero entry other than 1 selects too.
layout_data random_layout(ref::rng& g, index_t heads, index_t nbq, index_t nbk, double density) {
  layout_data l{heads, nbq, nbk, {}};
  l.bytes.resize(static_cast<std::size_t>(heads * nbq * nbk));
  for (std::uint8_t& x : l.bytes)
    x = g.uniform(0.0f, 1.0f) < density ? static_cast<std::uint8_t>(g.between(1, 3)) : 0;
  return l;
}

// The same layout as FlexAttention-style lists: indices in a random order,
// one duplicate where there is room, slots past the count holding garbage
// (out of range) that must not be read.
struct list_data {
  index_t heads = 0, nbq = 0, max_blocks = 0;
  std::vector<std::int32_t> counts, indices;
  attn::block_layout layout() const {
    return attn::block_layout::lists(
        {counts.data(), {heads, nbq}, {nbq, 1}},
        {indices.data(), {heads, nbq, max_blocks}, {nbq * max_blocks, max_blocks, 1}});
  }
};
list_data to_lists(const layout_data& l, ref::rng& g) {
  list_data d{l.heads, l.nbq, l.nbk + 2, {}, {}};
  d.counts.assign(static_cast<std::size_t>(l.heads * l.nbq), 0);
  d.indices.assign(static_cast<std::size_t>(l.heads * l.nbq * d.max_blocks), 1 << 30);
  for (index_t h = 0; h < l.heads; ++h)
    for (index_t qk = 0; qk < l.nbq; ++qk) {
      std::vector<std::int32_t> row;
      for (index_t kb = 0; kb < l.nbk; ++kb)
        if (l.at(h, qk, kb)) row.push_back(static_cast<std::int32_t>(kb));
      for (std::size_t n = row.size(); n > 1; --n) std::swap(row[n - 1], row[g.between(0, n - 1)]);
      if (!row.empty() && static_cast<index_t>(row.size()) < l.nbk) row.push_back(row.front());
      d.counts[static_cast<std::size_t>(h * l.nbq + qk)] = static_cast<std::int32_t>(row.size());
      std::copy(row.begin(), row.end(), d.indices.begin() + (h * l.nbq + qk) * d.max_blocks);
    }
  return d;
}

index_t blocks(index_t n, index_t block) { return (n + block - 1) / block; }

struct problem {
  index_t b, nq, nk, hq, hkv, dk, dv;
};

// The oracle's predicate for a layout (DESIGN §2).
ref::pair_predicate predicate(const layout_data& l, const attn::block_sparse_options& opt,
                              index_t offset) {
  return [&l, opt, offset](index_t, index_t h, index_t i, index_t j) {
    if (opt.causal && j > i + offset) return false;
    return l.at(l.heads == 1 ? 0 : h, i / opt.block_q, j / opt.block_k);
  };
}

struct memory {
  ref::layout4 q = ref::bshd_memory, k = ref::bhsd_memory, v = ref::padded_bshd,
               out = ref::bshd_memory;
  ref::layout3 lse = ref::bsh_memory;
};

constexpr float out_fill = 7.0f;

struct inputs {
  problem s;
  ref::tensor4 q, k, v, out;
  ref::tensor3 lse;
  inputs(const problem& s_, std::uint64_t seed, const memory& mem = {}) : s(s_) {
    ref::rng g{seed};
    q = ref::random<4>(g, {s.b, s.nq, s.hq, s.dk}, mem.q);
    k = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dk}, mem.k);
    v = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dv}, mem.v);
    out = ref::filled<4>({s.b, s.nq, s.hq, s.dv}, mem.out, out_fill);
    lse = ref::filled<3>({s.b, s.nq, s.hq}, mem.lse, out_fill);
  }
  template <class Backend, class Exec = attn::serial>
  void compute(const attn::block_layout& layout, const attn::block_sparse_options& opt,
               const Exec& exec = {}) {
    attn::block_sparse_attention<Backend>(q.cview(), k.cview(), v.cview(), out.view, lse.view,
                                          layout, opt, exec);
  }
  ref::softmax_result oracle(const layout_data& l, const attn::block_sparse_options& opt) const {
    const double scale = opt.scale ? double(*opt.scale) : 1.0 / std::sqrt(double(s.dk));
    auto identity = [](double x, index_t, index_t, index_t, index_t) { return x; };
    return ref::softmax_attention(q.cview(), k.cview(), v.cview(), scale, nullptr,
                                  predicate(l, opt, s.nk - s.nq), identity);
  }
};

std::string describe(const problem& s, const attn::block_sparse_options& opt, index_t layout_heads,
                     double density) {
  return "B=" + std::to_string(s.b) + " Nq=" + std::to_string(s.nq) +
         " Nk=" + std::to_string(s.nk) + " Hq=" + std::to_string(s.hq) +
         " Hkv=" + std::to_string(s.hkv) + " Dk=" + std::to_string(s.dk) +
         " Dv=" + std::to_string(s.dv) + " bq=" + std::to_string(opt.block_q) +
         " bk=" + std::to_string(opt.block_k) + (opt.causal ? " causal" : "") +
         " layout heads=" + std::to_string(layout_heads) + " density=" + std::to_string(density);
}

// Runs one problem on a random layout in both forms and holds each to the
// oracle; the two forms must agree bit for bit. Returns the oracle.
template <class Backend, class Exec = attn::serial>
ref::softmax_result check(const problem& s, const attn::block_sparse_options& opt,
                          index_t layout_heads, double density, const Exec& exec = {},
                          const memory& mem = {}) {
  SCOPED_TRACE(describe(s, opt, layout_heads, density));
  const std::uint64_t seed =
      static_cast<std::uint64_t>(s.nq * 1009 + s.nk * 31 + opt.block_q * 7 + opt.block_k);
  ref::rng g{seed};
  const layout_data l =
      random_layout(g, layout_heads, blocks(s.nq, opt.block_q), blocks(s.nk, opt.block_k), density);
  inputs a(s, seed, mem), b(s, seed, mem);
  a.compute<Backend>(l.dense(), opt, exec);
  const ref::softmax_result want = a.oracle(l, opt);
  EXPECT_TRUE(ref::within_contract(a.out.cview(), a.lse.cview(), want));
  EXPECT_TRUE(a.out.padding_holds(out_fill)) << "out written outside its view";
  const list_data lists = to_lists(l, g);
  b.compute<Backend>(lists.layout(), opt, exec);
  EXPECT_EQ(ref::compare<4>(a.out.cview(), b.out.cview()).different_bits, 0)
      << "dense and list forms differ";
  EXPECT_EQ(ref::compare<3>(a.lse.cview(), b.lse.cview()).different_bits, 0)
      << "dense and list forms differ";
  return want;
}

template <class Backend>
class BlockSparseTest : public ::testing::Test {};
TYPED_TEST_SUITE(BlockSparseTest, ref::backend_types, ref::backend_name);

TYPED_TEST(BlockSparseTest, BlockSizesThatDivideNothing) {
  const index_t sizes[] = {1, 7, 16, 64, 128};
  const double densities[] = {0.0, 0.1, 0.5, 1.0};
  int n = 0;
  for (index_t len : {37, 100, 129})
    for (index_t bq : sizes)
      for (index_t bk : sizes) {
        attn::block_sparse_options opt;
        opt.block_q = bq;
        opt.block_k = bk;
        const double density = densities[n % 4];
        const index_t layout_heads = n % 3 == 0 ? 1 : 4;
        ++n;
        check<TypeParam>({1, len, len, 4, 2, 16, 24}, opt, layout_heads, density);
      }
}

TYPED_TEST(BlockSparseTest, EveryDensity) {
  for (double density : {0.0, 0.1, 0.5, 1.0})
    for (index_t layout_heads : {1, 4}) {
      attn::block_sparse_options opt;
      opt.block_q = 16;
      opt.block_k = 7;
      check<TypeParam>({2, 129, 129, 4, 2, 16, 16}, opt, layout_heads, density);
      opt.block_q = 64;
      opt.block_k = 128;
      check<TypeParam>({1, 300, 300, 4, 4, 32, 32}, opt, layout_heads, density);
    }
}

TYPED_TEST(BlockSparseTest, QueriesAndKeysOfDifferentLengths) {
  for (bool causal : {false, true})
    for (const problem& s : {problem{1, 1, 300, 4, 2, 16, 16}, problem{2, 5, 300, 4, 4, 16, 8},
                             problem{1, 70, 200, 2, 1, 16, 16}, problem{1, 200, 70, 2, 2, 16, 16},
                             problem{1, 1, 1, 1, 1, 8, 8}})
      for (index_t layout_heads : {index_t{1}, s.hq}) {
        attn::block_sparse_options opt;
        opt.causal = causal;
        opt.block_q = 16;
        opt.block_k = 32;
        check<TypeParam>(s, opt, layout_heads, 0.5);
        opt.block_q = 7;
        opt.block_k = 64;
        check<TypeParam>(s, opt, layout_heads, 0.5);
      }
}

TYPED_TEST(BlockSparseTest, Causal) {
  for (index_t block : {1, 16, 64, 100}) {
    attn::block_sparse_options opt;
    opt.causal = true;
    opt.block_q = block;
    opt.block_k = block == 100 ? 37 : block;
    for (double density : {0.1, 0.5, 1.0})
      check<TypeParam>({1, 257, 257, 2, 2, 16, 16}, opt, 2, density);
  }
  // Density 1 with causal is causal attention.
  attn::block_sparse_options opt;
  opt.causal = true;
  const problem s{1, 150, 260, 4, 2, 32, 32};
  const ref::softmax_result want = check<TypeParam>(s, opt, 1, 1.0);
  inputs in(s, 3);
  attn::softmax_options causal;
  causal.causal = true;
  EXPECT_EQ(want.keys,
            ref::softmax_attention(in.q.cview(), in.k.cview(), in.v.cview(), causal).keys);
}

TYPED_TEST(BlockSparseTest, GroupedQueryHeadsWithDisagreeingLayouts) {
  // Per-head layouts: the heads of one GQA group share a query tile but
  // select different blocks, so tiles are partial and masked head by head.
  // Large head dims too: Dk = 256 with Dv = 128, and MLA-like 192 / 128.
  for (const problem& s : {problem{1, 150, 150, 8, 2, 32, 16}, problem{1, 150, 150, 8, 1, 16, 40},
                           problem{2, 3, 400, 8, 2, 64, 64}, problem{1, 97, 130, 8, 2, 256, 128},
                           problem{1, 65, 65, 8, 1, 192, 128}})
    for (double density : {0.1, 0.5}) {
      attn::block_sparse_options opt;
      opt.block_q = 32;
      opt.block_k = 16;
      check<TypeParam>(s, opt, 8, density);
      opt.causal = true;
      check<TypeParam>(s, opt, 8, density, attn::openmp{2});
    }
}

TYPED_TEST(BlockSparseTest, StridedViews) {
  memory mem;
  mem.q = ref::padded_bhsd;
  mem.k = ref::bsdh_memory;  // inner stride Hkv: K rows are packed
  mem.v = ref::bhsd_memory;
  mem.out = ref::padded_bshd;
  mem.lse = ref::padded_bsh;
  attn::block_sparse_options opt;
  opt.block_q = 16;
  opt.block_k = 48;
  check<TypeParam>({2, 130, 170, 4, 2, 24, 20}, opt, 4, 0.5, attn::serial{}, mem);
  opt.causal = true;
  check<TypeParam>({2, 130, 170, 4, 2, 24, 20}, opt, 1, 0.5, attn::openmp{2}, mem);
  mem.v = ref::bsdh_memory;
  check<TypeParam>({1, 3, 500, 4, 2, 16, 16}, opt, 4, 0.5, attn::openmp{2}, mem);

  // The layout itself strided: (H, nbq, nbk) over (nbk, H, nbq) memory.
  ref::rng g{12};
  const layout_data l = random_layout(g, 4, blocks(130, 16), blocks(170, 48), 0.5);
  std::vector<std::uint8_t> transposed(l.bytes.size());
  const index_t nbq = l.nbq, nbk = l.nbk;
  const attn::strided_view<std::uint8_t, 3> t{transposed.data(), {4, nbq, nbk}, {nbq, 1, 4 * nbq}};
  for (index_t h = 0; h < 4; ++h)
    for (index_t qk = 0; qk < nbq; ++qk)
      for (index_t kb = 0; kb < nbk; ++kb) t(h, qk, kb) = l.at(h, qk, kb);
  const problem s{1, 130, 170, 4, 2, 16, 16};
  inputs a(s, 4), b(s, 4);
  a.compute<TypeParam>(l.dense(), opt);
  b.compute<TypeParam>(attn::block_layout::dense(t), opt);
  EXPECT_TRUE(ref::within_contract(a.out.cview(), a.lse.cview(), a.oracle(l, opt)));
  EXPECT_EQ(ref::compare<4>(a.out.cview(), b.out.cview()).different_bits, 0);
}

TYPED_TEST(BlockSparseTest, EmptyRowsGiveZeroAndMinusInfinity) {
  const problem s{1, 100, 100, 2, 1, 16, 16};
  attn::block_sparse_options opt;
  opt.block_q = 10;
  opt.block_k = 20;
  ref::rng g{5};
  layout_data l = random_layout(g, 2, 10, 5, 0.6);
  for (index_t kb = 0; kb < 5; ++kb) {
    l.bytes[static_cast<std::size_t>((0 * 10 + 3) * 5 + kb)] = 0;  // head 0, rows 30..39
    l.bytes[static_cast<std::size_t>((1 * 10 + 9) * 5 + kb)] = 0;  // head 1, rows 90..99
  }
  l.bytes[static_cast<std::size_t>((0 * 10 + 4) * 5 + 0)] = 1;
  inputs in(s, 6);
  in.compute<TypeParam>(l.dense(), opt);
  EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), in.oracle(l, opt)));
  for (index_t i = 0; i < s.nq; ++i)
    for (index_t h = 0; h < s.hq; ++h) {
      const bool empty = (h == 0 && i / 10 == 3) || (h == 1 && i / 10 == 9);
      if (!empty) {
        EXPECT_TRUE(std::isfinite(in.lse.view(0, i, h))) << i << " " << h;
        continue;
      }
      EXPECT_EQ(in.lse.view(0, i, h), -std::numeric_limits<float>::infinity()) << i << " " << h;
      for (index_t d = 0; d < s.dv; ++d) EXPECT_EQ(in.out.view(0, i, h, d), 0.0f) << i << " " << h;
    }
  // No block at all, and causal that leaves the first queries nothing
  // (Nq > Nk): every such row is empty.
  layout_data none = random_layout(g, 1, 10, 5, 0.0);
  inputs all_empty(s, 7);
  all_empty.compute<TypeParam>(none.dense(), opt);
  for (float x : all_empty.lse.storage) EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
  for (index_t i = 0; i < s.nq; ++i)
    for (index_t h = 0; h < s.hq; ++h)
      for (index_t d = 0; d < s.dv; ++d) EXPECT_EQ(all_empty.out.view(0, i, h, d), 0.0f);
  opt.causal = true;
  check<TypeParam>({1, 120, 50, 2, 2, 16, 16}, opt, 2, 0.7);
}

TYPED_TEST(BlockSparseTest, SparseLayoutsDifferFromDenseAttention) {
  // The kernel must not ignore the layout: at density 0.1 the result is far
  // from dense attention on the same inputs; at density 1 it is dense
  // attention.
  const problem s{1, 256, 256, 4, 4, 32, 32};
  attn::block_sparse_options opt;
  opt.block_q = 32;
  opt.block_k = 32;
  ref::rng g{8};
  inputs dense(s, 9);
  attn::attention<TypeParam>(dense.q.cview(), dense.k.cview(), dense.v.cview(), dense.out.view,
                             dense.lse.view);
  for (double density : {0.1, 1.0}) {
    const layout_data l = random_layout(g, 4, 8, 8, density);
    inputs sparse(s, 9);
    sparse.compute<TypeParam>(l.dense(), opt);
    EXPECT_TRUE(
        ref::within_contract(sparse.out.cview(), sparse.lse.cview(), sparse.oracle(l, opt)));
    const ref::difference d = ref::compare<4>(sparse.out.cview(), dense.out.cview());
    if (density < 1.0) {
      EXPECT_GT(d.rel_frobenius, 0.3) << "density 0.1 gives dense attention";
    } else {
      EXPECT_LT(d.rel_frobenius, 1e-5);
    }
  }
}

TYPED_TEST(BlockSparseTest, ThreadCountsAgree) {
  // Prefill (no KV split): bit for bit. Decode (KV split across threads):
  // up to summation order.
  struct shape_case {
    problem s;
    bool bitwise;
  };
  for (const shape_case& c : {shape_case{{2, 300, 300, 4, 2, 32, 32}, true},
                              shape_case{{1, 1, 2000, 4, 1, 64, 64}, false}}) {
    attn::block_sparse_options opt;
    opt.block_q = 16;
    opt.block_k = 64;
    opt.causal = true;
    ref::rng g{10};
    const layout_data l = random_layout(g, 4, blocks(c.s.nq, 16), blocks(c.s.nk, 64), 0.4);
    inputs one(c.s, 11), two(c.s, 11), pool(c.s, 11);
    one.compute<TypeParam>(l.dense(), opt, attn::serial{});
    two.compute<TypeParam>(l.dense(), opt, attn::openmp{2});
    pool.compute<TypeParam>(
        l.dense(), opt,
        attn::parallel_for_executor{2, [](std::size_t n, const attn::index_body& f) {
                                      for (std::size_t i = n; i-- > 0;) f(i);
                                    }});
    EXPECT_TRUE(ref::within_contract(one.out.cview(), one.lse.cview(), one.oracle(l, opt)));
    for (const inputs* other : {&two, &pool}) {
      const ref::difference d = ref::compare<4>(other->out.cview(), one.out.cview());
      const ref::difference dl = ref::compare<3>(other->lse.cview(), one.lse.cview());
      if (c.bitwise) {
        EXPECT_EQ(d.different_bits, 0);
        EXPECT_EQ(dl.different_bits, 0);
      } else {
        EXPECT_EQ(d.mismatched_nan + dl.mismatched_nan, 0);
        EXPECT_LE(d.rel_frobenius, 1e-6);
        EXPECT_LE(dl.max_abs, 1e-5);
      }
    }
  }
}

TYPED_TEST(BlockSparseTest, NanReachesOnlyRowsThatAttendIt) {
  const problem s{1, 200, 200, 4, 2, 16, 16};
  attn::block_sparse_options opt;
  opt.block_q = 8;
  opt.block_k = 16;
  ref::rng g{13};
  const layout_data l = random_layout(g, 4, 25, 13, 0.3);
  for (bool in_keys : {false, true})
    for (index_t j : {0, 37, 64, 130, 199}) {
      SCOPED_TRACE(std::string(in_keys ? "NaN in k" : "NaN in v") + " at key " + std::to_string(j));
      inputs in(s, 14);
      const index_t g_head = 1;
      if (in_keys)
        ref::inject_nan(in.k.view, 0, j, g_head, 3);
      else
        ref::inject_nan(in.v.view, 0, j, g_head, 3);
      in.compute<TypeParam>(l.dense(), opt, attn::openmp{2});
      EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), in.oracle(l, opt)));
      for (index_t i = 0; i < s.nq; ++i)
        for (index_t h = 0; h < s.hq; ++h) {
          const bool attends = h / 2 == g_head && l.at(h, i / 8, j / 16);
          const bool nan = std::isnan(in.out.view(0, i, h, 3));
          EXPECT_EQ(nan, attends) << "row (i=" << i << ", h=" << h << ")";
          if (!attends) {
            EXPECT_TRUE(std::isfinite(in.lse.view(0, i, h))) << i << " " << h;
          }
        }
    }
}

// q, k, v and out stored in 16 bits (README, "Reduced precision"): against
// the oracle on the rounded inputs, with the contract of the output's type.
template <class Backend, class Q, class K, class V, class O>
void expect_stored(const problem& s, const attn::block_sparse_options& opt, double density) {
  SCOPED_TRACE(describe(s, opt, s.hq, density) + " q " + attn::element_name<Q>() + " k " +
               attn::element_name<K>() + " v " + attn::element_name<V>() + " out " + attn::element_name<O>());
  const std::uint64_t seed = static_cast<std::uint64_t>(s.nq * 17 + s.nk);
  ref::rng g{seed};
  const layout_data l = random_layout(g, s.hq, blocks(s.nq, opt.block_q), blocks(s.nk, opt.block_k), density);
  inputs in(s, seed);
  const std::vector<Q> q = ref::rounded<Q>(in.q);
  const std::vector<K> k = ref::rounded<K>(in.k);
  const std::vector<V> v = ref::rounded<V>(in.v);
  std::vector<O> out = ref::rounded<O>(in.out);
  attn::block_sparse_attention<Backend>(attn::view4<const Q>{q.data(), in.q.view.extent, in.q.view.stride},
                                        attn::view4<const K>{k.data(), in.k.view.extent, in.k.view.stride},
                                        attn::view4<const V>{v.data(), in.v.view.extent, in.v.view.stride},
                                        attn::view4<O>{out.data(), in.out.view.extent, in.out.view.stride},
                                        in.lse.view, l.dense(), opt, attn::openmp{2});
  for (std::size_t n = 0; n < out.size(); ++n) in.out.storage[n] = attn::to_float(out[n]);
  const ref::tolerance tol = ref::storage_contract<O>();
  EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), in.oracle(l, opt), tol));
  EXPECT_TRUE(in.out.padding_holds(attn::to_float(attn::from_float<O>(out_fill)))) << "out written outside its view";
}

TYPED_TEST(BlockSparseTest, StoredIn16Bits) {
  using attn::bfloat16, attn::float16;
  attn::block_sparse_options opt;
  opt.block_q = 16;
  opt.block_k = 24;
  expect_stored<TypeParam, bfloat16, float16, bfloat16, float16>({2, 70, 100, 4, 2, 32, 32}, opt, 0.5);
  opt.causal = true;
  expect_stored<TypeParam, bfloat16, float16, bfloat16, float16>({1, 1, 300, 8, 2, 64, 64}, opt, 0.6);
}

TEST(BlockSparse, Float16CacheUnderFloatQueries) {
  attn::block_sparse_options opt;
  opt.block_q = 64;
  opt.block_k = 64;
  opt.causal = true;
  expect_stored<attn::default_backend, float, attn::float16, attn::float16, float>({1, 200, 200, 4, 4, 64, 64}, opt, 0.5);
}

// ---------------------------------------------------------------------------
// The mask itself, pair by pair: key_runs cover every allowed pair and only
// selected blocks; a full tile allows every pair and is full whenever every
// pair is allowed; an empty tile allows none; remove_pairs removes exactly
// the disallowed pairs (also over NaN scores) and leaves the others alone.

void expect_sound_mask(index_t nq, index_t nk, index_t hq, index_t group_heads,
                       index_t layout_heads, index_t bq, index_t bk, bool causal,
                       attn::tile_shape tiles, double density) {
  SCOPED_TRACE("Nq=" + std::to_string(nq) + " Nk=" + std::to_string(nk) +
               " bq=" + std::to_string(bq) + " bk=" + std::to_string(bk) +
               " tiles=" + std::to_string(tiles.positions) + "x" + std::to_string(tiles.keys) +
               (causal ? " causal" : "") + " density=" + std::to_string(density));
  ref::rng g{static_cast<std::uint64_t>(nq + 3 * nk + 5 * bq + 7 * bk)};
  const layout_data l = random_layout(g, layout_heads, blocks(nq, bq), blocks(nk, bk), density);
  attn::block_sparse_options opt;
  opt.block_q = bq;
  opt.block_k = bk;
  opt.causal = causal;
  const ref::pair_predicate allowed = predicate(l, opt, nk - nq);
  const attn::detail::block_sparse_mask mask(
      attn::detail::block_bits::read(l.dense(), hq, l.nbq, l.nbk), bq, bk, causal, nq, nk, tiles);
  ASSERT_EQ(mask.tile_shape().positions, tiles.positions);
  constexpr float removed = -std::numeric_limits<float>::infinity();
  index_t full = 0, partial = 0;
  for (index_t h0 = 0; h0 < hq; h0 += group_heads)
    for (index_t i0 = 0; i0 < nq; i0 += tiles.positions) {
      const attn::query_block qb{0,  i0, std::min(nq, i0 + tiles.positions), h0, h0 + group_heads,
                                 nq, nk};
      const index_t positions = qb.i_end - qb.i_begin;
      std::vector<attn::key_range> runs;
      mask.key_runs(qb, runs);
      const attn::key_range range = mask.keys(qb);
      std::vector<char> in_run(static_cast<std::size_t>(nk), 0);
      for (const attn::key_range r : runs) {
        ASSERT_TRUE(r.begin < r.end && r.begin % bk == 0) << r.begin << ".." << r.end;
        for (index_t j = r.begin; j < r.end; ++j) in_run[static_cast<std::size_t>(j)] = 1;
      }
      for (index_t j = 0; j < nk; ++j) {
        bool selected = false, any_allowed = false;
        for (index_t h = qb.h_begin; h < qb.h_end; ++h)
          for (index_t i = qb.i_begin; i < qb.i_end; ++i) {
            selected = selected || l.at(layout_heads == 1 ? 0 : h, i / bq, j / bk);
            any_allowed = any_allowed || allowed(0, h, i, j);
          }
        if (any_allowed) {
          ASSERT_TRUE(in_run[static_cast<std::size_t>(j)]) << "key_runs miss key " << j;
          ASSERT_TRUE(j >= range.begin && j < range.end) << "keys() misses key " << j;
        }
        if (in_run[static_cast<std::size_t>(j)]) {
          ASSERT_TRUE(selected) << "key_runs visit unselected key " << j;
        }
      }
      // Tiles as the core cuts them: from each run's first key.
      for (const attn::key_range r : runs)
        for (index_t j0 = r.begin; j0 < r.end; j0 += tiles.keys) {
          const index_t j1 = std::min(r.end, j0 + tiles.keys), keys = j1 - j0;
          const attn::tile_kind kind = mask.classify(qb, j0, j1);
          bool all = true, none = true;
          for (index_t h = qb.h_begin; h < qb.h_end; ++h)
            for (index_t i = qb.i_begin; i < qb.i_end; ++i)
              for (index_t j = j0; j < j1; ++j) {
                const bool a = allowed(0, h, i, j);
                all = all && a;
                none = none && !a;
              }
          ASSERT_EQ(kind == attn::tile_kind::full, all) << "tile " << j0 << ".." << j1;
          if (kind == attn::tile_kind::empty) {
            ASSERT_TRUE(none) << "tile " << j0 << ".." << j1;
          }
          if (!causal && none) {
            ASSERT_EQ(kind, attn::tile_kind::empty) << "tile " << j0 << ".." << j1;
          }
          full += kind == attn::tile_kind::full;
          partial += kind == attn::tile_kind::partial;
          if (kind != attn::tile_kind::partial) continue;
          const index_t ldq = positions * group_heads + 3;
          std::vector<float> st(static_cast<std::size_t>(keys * ldq));
          for (std::size_t n = 0; n < st.size(); ++n) st[n] = n % 5 == 0 ? std::nanf("") : float(n);
          const std::vector<float> before = st;
          mask.remove_pairs(qb, group_heads, j0, keys, st.data(), ldq);
          for (index_t j = 0; j < keys; ++j)
            for (index_t c = 0; c < ldq; ++c) {
              const std::size_t n = static_cast<std::size_t>(j * ldq + c);
              const bool column = c < positions * group_heads;
              const bool keep =
                  !column || allowed(0, h0 + c % group_heads, i0 + c / group_heads, j0 + j);
              if (keep) {
                ASSERT_TRUE(ref::detail::same_bits(st[n], before[n]))
                    << "kept pair changed: key " << j0 + j << " column " << c;
              } else {
                ASSERT_EQ(st[n], removed) << "key " << j0 + j << " column " << c;
              }
            }
        }
    }
  if (density > 0.2 && density < 1.0) {
    EXPECT_GT(partial, 0);
  }
  if (density == 1.0 && !causal) {
    EXPECT_EQ(partial, 0);
    EXPECT_GT(full, 0);
  }
}

TEST(BlockSparseMask, ClassificationAndMaskingAreExact) {
  for (double density : {0.1, 0.5, 1.0})
    for (bool causal : {false, true}) {
      // Aligned tiles (as block_sparse_attention asks for) and misaligned ones.
      expect_sound_mask(130, 170, 4, 1, 4, 16, 16, causal, {32, 64}, density);
      expect_sound_mask(130, 170, 4, 1, 1, 7, 9, causal, {28, 27}, density);
      expect_sound_mask(130, 170, 4, 2, 4, 16, 16, causal, {16, 64}, density);
      expect_sound_mask(97, 61, 8, 4, 8, 5, 3, causal, {12, 20}, density);  // tiles straddle blocks
      expect_sound_mask(61, 97, 8, 8, 8, 64, 100, causal, {8, 50}, density);  // tiles inside blocks
      expect_sound_mask(1, 300, 4, 4, 4, 1, 64, causal, {1, 128}, density);   // decode
    }
}

TEST(BlockSparseMask, TilesLineUpWithBlocks) {
  using attn::detail::block_aligned;
  EXPECT_EQ(block_aligned(96, 64), 64);   // a multiple of a smaller block
  EXPECT_EQ(block_aligned(96, 7), 91);
  EXPECT_EQ(block_aligned(96, 1), 96);
  EXPECT_EQ(block_aligned(96, 128), 64);  // a divisor of a larger block
  EXPECT_EQ(block_aligned(128, 128), 128);
  EXPECT_EQ(block_aligned(128, 129), 128);  // 129 = 3 x 43: 43 is too small a tile
  EXPECT_EQ(block_aligned(128, 192), 96);
  EXPECT_EQ(block_aligned(128, 131), 128);  // a prime block
  EXPECT_EQ(block_aligned(1, 64), 1);
}

// ---------------------------------------------------------------------------

TEST(BlockSparseErrors, NameTheArgument) {
  ref::rng g{1};
  const ref::tensor4 q = ref::random_bshd(g, 1, 10, 2, 8);
  const ref::tensor4 kv = ref::random_bshd(g, 1, 12, 1, 8);
  ref::tensor4 out = ref::filled<4>({1, 10, 2, 8}, ref::bshd_memory, 3.0f);
  ref::tensor3 lse = ref::filled<3>({1, 10, 2}, ref::bsh_memory, 3.0f);
  attn::block_sparse_options opt;
  opt.block_q = 4;  // nbq = 3
  opt.block_k = 5;  // nbk = 3
  auto message = [&](const attn::block_layout& layout, const attn::block_sparse_options& o,
                     attn::view4<const float> k) {
    return ref::error_message([&] {
      attn::block_sparse_attention(q.cview(), k, kv.cview(), out.view, lse.view, layout, o);
    });
  };
  auto expect = [&](const attn::block_layout& layout, const attn::block_sparse_options& o,
                    const std::string& part, attn::view4<const float> k) {
    const std::string m = message(layout, o, k);
    EXPECT_NE(m.find(part), std::string::npos) << "message: '" << m << "' lacks '" << part << "'";
    for (float x : out.storage) ASSERT_EQ(x, 3.0f) << "output written on bad input";
    for (float x : lse.storage) ASSERT_EQ(x, 3.0f) << "lse written on bad input";
  };
  const layout_data good = random_layout(g, 2, 3, 3, 0.5);
  EXPECT_EQ(message(good.dense(), opt, kv.cview()), "");
  out = ref::filled<4>({1, 10, 2, 8}, ref::bshd_memory, 3.0f);
  lse = ref::filled<3>({1, 10, 2}, ref::bsh_memory, 3.0f);

  attn::block_sparse_options bad = opt;
  bad.block_q = 0;
  expect(good.dense(), bad, "block_q: expected a block size >= 1, got 0", kv.cview());
  bad = opt;
  bad.block_k = -3;
  expect(good.dense(), bad, "block_k: expected a block size >= 1, got -3", kv.cview());
  const ref::tensor4 short_k = ref::random_bshd(g, 1, 12, 1, 7);
  expect(good.dense(), opt, "k: expected shape", short_k.cview());

  const layout_data three_heads = random_layout(g, 3, 3, 3, 0.5);
  expect(three_heads.dense(), opt, "layout: expected shape (Hq|1 = 2|1, nbq = 3, nbk = 3)",
         kv.cview());
  expect(three_heads.dense(), opt, "got (3, 3, 3)", kv.cview());
  const layout_data wide = random_layout(g, 1, 3, 4, 0.5);
  expect(wide.dense(), opt, "layout: expected shape", kv.cview());
  expect(attn::block_layout::dense({nullptr, {2, 3, 3}, {9, 3, 1}}), opt,
         "layout: expected a non-null data pointer", kv.cview());

  list_data lists = to_lists(good, g);
  EXPECT_EQ(message(lists.layout(), opt, kv.cview()), "");
  out = ref::filled<4>({1, 10, 2, 8}, ref::bshd_memory, 3.0f);
  lse = ref::filled<3>({1, 10, 2}, ref::bsh_memory, 3.0f);
  list_data broken = lists;
  broken.counts[4] = 4;
  expect(
      broken.layout(), opt,
      "kv_num_blocks: expected counts in [0, min(nbk, max_blocks)] = [0, 3], got 4 at (h=1, qb=1)",
      kv.cview());
  broken = lists;
  broken.counts[2] = -1;
  expect(broken.layout(), opt, "kv_num_blocks: expected counts in", kv.cview());
  broken = lists;
  broken.counts[1] = 2;
  broken.indices[1 * broken.max_blocks + 0] = 0;
  broken.indices[1 * broken.max_blocks + 1] = 3;
  expect(broken.layout(), opt,
         "kv_indices: expected block indices in [0, nbk) = [0, 3), got 3 at (h=0, qb=1, 1)",
         kv.cview());
  broken.indices[1 * broken.max_blocks + 1] = -2;
  expect(broken.layout(), opt, "kv_indices: expected block indices in [0, nbk)", kv.cview());
  broken = lists;
  expect(attn::block_layout::lists({broken.counts.data(), {2, 2}, {2, 1}},
                                   {broken.indices.data(),
                                    {2, 2, broken.max_blocks},
                                    {2 * broken.max_blocks, broken.max_blocks, 1}}),
         opt, "kv_num_blocks: expected shape (Hq|1 = 2|1, nbq = 3)", kv.cview());
  expect(attn::block_layout::lists({broken.counts.data(), {2, 3}, {3, 1}},
                                   {broken.indices.data(),
                                    {1, 3, broken.max_blocks},
                                    {3 * broken.max_blocks, broken.max_blocks, 1}}),
         opt, "kv_indices: expected shape (2, nbq = 3, max_blocks)", kv.cview());
}

}  // namespace block_sparse_test
