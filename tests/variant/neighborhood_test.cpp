// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Neighborhood attention of rank 1, 2 and 3 (DESIGN §2) against the fp64
// oracle built from the 1-D rule, on every backend.

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/neighborhood_reference.hpp"
#include "reference/random.hpp"

namespace neighborhood_test {

using attn::index_t;
using attn::neighborhood_dim;
namespace ref = attn::ref;

// A (B, grid..., H, D) tensor with `pad` unused elements after every
// dimension's extent (a strided view), filled with uniform values; the
// padding holds NaN, which must never be read.
template <std::size_t N>
struct grid_tensor {
  std::vector<float> storage;
  attn::strided_view<float, N> view;
  grid_tensor(ref::rng& g, const std::array<index_t, N>& extent, index_t pad, bool fill_nan = true) {
    view.extent = extent;
    index_t pitch = 1;
    for (std::size_t d = N; d-- > 0;) {
      view.stride[d] = pitch;
      pitch *= extent[d] + pad;
    }
    storage.assign(static_cast<std::size_t>(pitch), fill_nan ? std::nanf("") : 0.0f);
    view.data = storage.data();
    std::array<index_t, N> i{};
    while (true) {
      index_t off = 0;
      for (std::size_t d = 0; d < N; ++d) off += i[d] * view.stride[d];
      storage[static_cast<std::size_t>(off)] = g.uniform();
      std::size_t d = N;
      while (d-- > 0 && ++i[d] == extent[d]) i[d] = 0;
      if (d == static_cast<std::size_t>(-1)) break;
    }
  }
  attn::strided_view<const float, N> cview() const { return view; }
};

const char* kernel_name(attn::detail::neighborhood_kernel k) {
  using kernel = attn::detail::neighborhood_kernel;
  return k == kernel::tiles ? "tiles" : k == kernel::offsets ? "offsets" : "segments (or offsets where they do not apply)";
}

// out and lse against the oracle's result, read through their strided views.
template <std::size_t R, std::size_t N>
void expect_matches(index_t batch, const std::array<index_t, R>& length, index_t hq, index_t d,
                    const grid_tensor<N>& out, const grid_tensor<N - 1>& lse, const ref::softmax_result& want,
                    const ref::tolerance& tol = {}) {
  ref::grid<R> grid;
  grid.length = length;
  const std::vector<float> out_flat = ref::flatten_grid<R>(out.cview(), grid);
  // lse as a (B, grid, Hq, 1) view, flattened the same way.
  attn::strided_view<const float, N> lse_n{lse.view.data, {}, {}};
  for (std::size_t i = 0; i + 1 < N; ++i) {
    lse_n.extent[i] = lse.view.extent[i];
    lse_n.stride[i] = lse.view.stride[i];
  }
  lse_n.extent[N - 1] = 1;
  lse_n.stride[N - 1] = 1;
  const std::vector<float> lse_flat = ref::flatten_grid<R>(lse_n, grid);
  const index_t tokens = grid.tokens();
  EXPECT_TRUE(ref::within_contract(attn::bshd<const float>(out_flat.data(), batch, tokens, hq, d),
                                   attn::bsh<const float>(lse_flat.data(), batch, tokens, hq), want, tol));
}

// Head dims: Dk for q and k, Dv for v and out.
struct head_dims {
  index_t dk, dv;
  head_dims(index_t d) : dk(d), dv(d) {}  // NOLINT(google-explicit-constructor): Dk = Dv
  head_dims(index_t k, index_t v) : dk(k), dv(v) {}
};

template <class Backend, std::size_t R, class Exec = attn::serial>
void check(index_t batch, const std::array<index_t, R>& length, index_t hq, index_t hkv, head_dims hd,
           const std::array<neighborhood_dim, R>& dims, const Exec& exec = {}) {
  constexpr std::size_t N = R + 3;
  std::string what = "grid";
  for (std::size_t i = 0; i < R; ++i)
    what += " L=" + std::to_string(length[i]) + " K=" + std::to_string(dims[i].kernel) + " D=" +
            std::to_string(dims[i].dilation) + " S=" + std::to_string(dims[i].stride) +
            (dims[i].causal ? " causal" : "");
  SCOPED_TRACE(what + " Hq=" + std::to_string(hq) + " Hkv=" + std::to_string(hkv) + " Dk=" + std::to_string(hd.dk) +
               " Dv=" + std::to_string(hd.dv));
  ref::rng g{static_cast<std::uint64_t>(13 + length[0] * 7 + hd.dk + 3 * hd.dv)};
  auto extent = [&](index_t h, index_t last) {
    std::array<index_t, N> e{};
    e[0] = batch;
    for (std::size_t i = 0; i < R; ++i) e[i + 1] = length[i];
    e[N - 2] = h;
    e[N - 1] = last;
    return e;
  };
  const grid_tensor<N> q(g, extent(hq, hd.dk), 0), k(g, extent(hkv, hd.dk), 2), v(g, extent(hkv, hd.dv), 1);
  const ref::softmax_result want = ref::neighborhood_attention<R>(q.cview(), k.cview(), v.cview(), dims);
  attn::neighborhood_options<R> opt;
  opt.dims = dims;
  // The public entry (its own choice of kernel), then each kernel forced.
  using kernel = attn::detail::neighborhood_kernel;
  for (const std::optional<kernel> forced : {std::optional<kernel>{}, std::optional{kernel::tiles},
                                             std::optional{kernel::offsets}, std::optional{kernel::segments}}) {
    SCOPED_TRACE(!forced ? "chosen kernel" : kernel_name(*forced));
    grid_tensor<N> out(g, extent(hq, hd.dv), 1, false);
    std::array<index_t, N - 1> lse_extent{};
    for (std::size_t i = 0; i + 1 < N; ++i) lse_extent[i] = extent(hq, hd.dv)[i];
    grid_tensor<N - 1> lse(g, lse_extent, 0, false);
    if (forced)
      attn::detail::neighborhood_run<Backend>(q.cview(), k.cview(), v.cview(), out.view, lse.view, opt, exec,
                                              forced);
    else
      attn::neighborhood_attention<Backend>(q.cview(), k.cview(), v.cview(), out.view, lse.view, opt, exec);
    expect_matches<R>(batch, length, hq, hd.dv, out, lse, want);
  }
}

template <class Backend>
class NeighborhoodTest : public ::testing::Test {};
TYPED_TEST_SUITE(NeighborhoodTest, ref::backend_types, ref::backend_name);

TYPED_TEST(NeighborhoodTest, OneDimension) {
  using T = TypeParam;
  check<T, 1>(1, {37}, 2, 2, 16, {neighborhood_dim{5}});
  check<T, 1>(2, {37}, 4, 2, 16, {neighborhood_dim{6}});                // even kernel, GQA
  check<T, 1>(1, {37}, 2, 1, 8, {neighborhood_dim{5, 3}});              // dilation not dividing L
  check<T, 1>(1, {40}, 2, 2, 8, {neighborhood_dim{7, 1, 3}});           // stride
  check<T, 1>(1, {40}, 2, 2, 8, {neighborhood_dim{8, 1, 8}});           // stride = K: blocked
  check<T, 1>(1, {41}, 2, 2, 8, {neighborhood_dim{9, 2, 3, true}});     // causal, dilated, strided
  check<T, 1>(1, {23}, 2, 2, 8, {neighborhood_dim{23}});                // K = L: dense
  check<T, 1>(1, {300}, 2, 2, 32, {neighborhood_dim{129}}, attn::openmp{2});
  // Rows of several segment work items (64 queries each), GQA; dilated and strided.
  check<T, 1>(1, {150}, 4, 2, 16, {neighborhood_dim{13}});
  check<T, 1>(1, {203}, 2, 2, 16, {neighborhood_dim{11, 2, 3}}, attn::openmp{2});
  // Large head dims, and Dk != Dv both ways.
  check<T, 1>(1, {29}, 2, 1, 256, {neighborhood_dim{7}});
  check<T, 1>(1, {70}, 2, 2, {128, 40}, {neighborhood_dim{13, 2}}, attn::openmp{2});
  check<T, 1>(1, {31}, 2, 2, {8, 136}, {neighborhood_dim{31}});
}

TYPED_TEST(NeighborhoodTest, TwoDimensions) {
  using T = TypeParam;
  check<T, 2>(1, {13, 17}, 2, 2, 16, {neighborhood_dim{5}, neighborhood_dim{3}});
  check<T, 2>(2, {13, 17}, 4, 1, 16, {neighborhood_dim{5, 2}, neighborhood_dim{4, 1, 2}});  // GQA
  check<T, 2>(1, {12, 10}, 2, 2, 8, {neighborhood_dim{3, 1, 1, true}, neighborhood_dim{5}});  // causal in X only
  check<T, 2>(1, {5, 7}, 2, 2, 8, {neighborhood_dim{5}, neighborhood_dim{7}});  // L = K: dense
  // Blocked along X (neighbouring rows share no window row), causal along
  // Y, a head dim that is no multiple of any vector width.
  check<T, 2>(1, {16, 19}, 2, 2, 80, {neighborhood_dim{4, 1, 4}, neighborhood_dim{3, 1, 1, true}});
  check<T, 2>(1, {24, 24}, 2, 2, 32, {neighborhood_dim{7, 3}, neighborhood_dim{7, 2, 7}}, attn::openmp{2});
  // 31 window rows: segment work items of fewer than 64 queries, several a row.
  check<T, 2>(1, {33, 100}, 2, 1, 16, {neighborhood_dim{31}, neighborhood_dim{5, 2}}, attn::openmp{2});
  // Last-dimension windows of 4 vectors on AVX2 (29 keys); blocked along Y,
  // where 4 consecutive queries' windows span 2 blocks (segments shrink).
  check<T, 2>(1, {9, 70}, 2, 2, 16, {neighborhood_dim{3}, neighborhood_dim{29}});
  check<T, 2>(1, {7, 70}, 2, 2, 16, {neighborhood_dim{3}, neighborhood_dim{13, 1, 13}});
  // Large heads with Dk != Dv (192 / 128, as MLA's) on the segment kernel's
  // K = 13, and 256-channel values on a dilated window.
  check<T, 2>(1, {15, 17}, 4, 2, {192, 128}, {neighborhood_dim{13}, neighborhood_dim{13}}, attn::openmp{2});
  check<T, 2>(1, {9, 11}, 2, 2, {24, 256}, {neighborhood_dim{3, 2}, neighborhood_dim{5, 2}});
}

TYPED_TEST(NeighborhoodTest, ThreeDimensions) {
  using T = TypeParam;
  check<T, 3>(1, {5, 6, 7}, 2, 2, 16,
              {neighborhood_dim{3, 1, 1, true}, neighborhood_dim{3, 2}, neighborhood_dim{5}});
  check<T, 3>(1, {4, 8, 8}, 8, 2, 16,  // GQA, video-DiT-like
              {neighborhood_dim{3}, neighborhood_dim{5, 1, 2}, neighborhood_dim{5}}, attn::openmp{2});
  check<T, 3>(1, {4, 6, 9}, 2, 1, {40, 16},
              {neighborhood_dim{2}, neighborhood_dim{3, 1, 1, true}, neighborhood_dim{7, 1, 3}});
}

// Seeded random configurations: rank, lengths, per-dimension kernel,
// dilation, stride and causal flag (kernels up to 40 keys reach the segment
// kernel's widest segments), GQA, head dims that fill no vector and some
// that fill several (Dv drawn apart from Dk a third of the time), 1 to 3
// threads; every kernel forced, as above. (Run with more seeds under ASan +
// UBSan on 2026-12-07: 720 configurations; then 240 more, each on the AVX2
// and AVX-512 backends, once Dv was drawn apart.)
template <class Backend, std::size_t R>
void check_random(ref::rng& g) {
  const index_t longest = R == 1 ? 160 : R == 2 ? 40 : 12;
  std::array<index_t, R> length{};
  std::array<neighborhood_dim, R> dims{};
  for (std::size_t i = 0; i < R; ++i) {
    length[i] = g.between(2, longest);
    const index_t dilation = g.between(1, std::min<index_t>(3, length[i] / 2));
    const index_t most = length[i] / dilation;
    const index_t kernel = g.between(0, 3) == 0 ? std::min<index_t>(most, g.between(2, 40)) : g.between(2, most);
    const index_t stride = g.between(0, 2) == 0 ? g.between(1, kernel) : 1;
    dims[i] = neighborhood_dim{kernel, dilation, stride, g.between(0, 3) == 0};
  }
  constexpr index_t dims_drawn[] = {1, 3, 8, 13, 16, 24, 32, 48, 64, 80};
  const index_t hkv = g.between(1, 2), hq = hkv * g.between(1, 3), batch = g.between(1, 2);
  const index_t dk = dims_drawn[g.between(0, 9)];
  const index_t dv = g.between(0, 2) == 0 ? dims_drawn[g.between(0, 9)] : dk;
  const int threads = static_cast<int>(g.between(1, 3));
  if (threads == 1)
    check<Backend, R>(batch, length, hq, hkv, {dk, dv}, dims);
  else
    check<Backend, R>(batch, length, hq, hkv, {dk, dv}, dims, attn::openmp{threads});
}

TYPED_TEST(NeighborhoodTest, RandomConfigurations) {
  ref::rng g{2026};
  for (int n = 0; n < 24; ++n) {
    const auto rank = g.between(1, 3);
    SCOPED_TRACE("random configuration " + std::to_string(n) + ", rank " + std::to_string(rank));
    if (rank == 1) check_random<TypeParam, 1>(g);
    if (rank == 2) check_random<TypeParam, 2>(g);
    if (rank == 3) check_random<TypeParam, 3>(g);
  }
}

// The packed layout's mask, checked exhaustively on small grids: keys() and
// q, k, v and out stored in 16 bits (README, "Reduced precision"), on both
// kernels: against the oracle on the rounded inputs, with the contract of
// the output's type.
template <class T, std::size_t N>
struct stored_grid {
  std::vector<T> storage;
  attn::strided_view<T, N> view;
  explicit stored_grid(grid_tensor<N>& t) : storage(t.storage.size()) {
    for (std::size_t n = 0; n < storage.size(); ++n) {
      storage[n] = attn::from_float<T>(t.storage[n]);
      t.storage[n] = attn::to_float(storage[n]);
    }
    view = {storage.data(), t.view.extent, t.view.stride};
  }
};

template <class Backend, std::size_t R, class Q, class K, class V, class O>
void check_stored(const std::array<index_t, R>& length, index_t hq, index_t hkv, index_t d,
                  const std::array<neighborhood_dim, R>& dims) {
  constexpr std::size_t N = R + 3;
  SCOPED_TRACE(std::string("q ") + attn::element_name<Q>() + " k " + attn::element_name<K>() + " v " +
               attn::element_name<V>() + " out " + attn::element_name<O>() + " L0=" + std::to_string(length[0]));
  ref::rng g{static_cast<std::uint64_t>(29 + length[0] + d)};
  auto extent = [&](index_t h) {
    std::array<index_t, N> e{};
    e[0] = 2;
    for (std::size_t i = 0; i < R; ++i) e[i + 1] = length[i];
    e[N - 2] = h;
    e[N - 1] = d;
    return e;
  };
  grid_tensor<N> q(g, extent(hq), 0), k(g, extent(hkv), 2), v(g, extent(hkv), 1);
  const stored_grid<Q, N> q16(q);
  const stored_grid<K, N> k16(k);
  const stored_grid<V, N> v16(v);
  const ref::softmax_result want = ref::neighborhood_attention<R>(q.cview(), k.cview(), v.cview(), dims);
  attn::neighborhood_options<R> opt;
  opt.dims = dims;
  using kernel = attn::detail::neighborhood_kernel;
  for (const kernel forced : {kernel::tiles, kernel::offsets, kernel::segments}) {
    SCOPED_TRACE(kernel_name(forced));
    grid_tensor<N> out(g, extent(hq), 1, false);
    stored_grid<O, N> out16(out);
    std::array<index_t, N - 1> lse_extent{};
    for (std::size_t i = 0; i + 1 < N; ++i) lse_extent[i] = extent(hq)[i];
    grid_tensor<N - 1> lse(g, lse_extent, 0, false);
    attn::detail::neighborhood_run<Backend>(attn::detail::as_input(q16.view), attn::detail::as_input(k16.view),
                                            attn::detail::as_input(v16.view), out16.view, lse.view, opt,
                                            attn::openmp{2}, forced);
    for (std::size_t n = 0; n < out.storage.size(); ++n) out.storage[n] = attn::to_float(out16.storage[n]);
    expect_matches<R>(2, length, hq, d, out, lse, want, ref::storage_contract<O>());
  }
}

TYPED_TEST(NeighborhoodTest, StoredIn16Bits) {
  using attn::bfloat16, attn::float16;
  check_stored<TypeParam, 2, bfloat16, float16, bfloat16, float16>(
      {13, 17}, 4, 2, 16, {neighborhood_dim{5, 2}, neighborhood_dim{4, 1, 2, true}});
  check_stored<TypeParam, 1, bfloat16, float16, bfloat16, float16>({40}, 2, 2, 32, {neighborhood_dim{9}});
}

// NaN isolation on every kernel: a NaN key (or value) at one token makes
// exactly the rows whose windows hold that token NaN; every other row is
// finite and equals the oracle. A NaN value alone also covers the values'
// masked pairs (p = 0 times NaN must not reach a row that never sees it).
template <class Backend>
void check_nan_isolation(bool nan_key, const std::array<index_t, 2>& at) {
  const std::array<index_t, 2> length{11, 19};
  const std::array<neighborhood_dim, 2> dims{neighborhood_dim{5}, neighborhood_dim{7}};
  constexpr index_t h = 2, d = 16;
  ref::rng g{61};
  const std::array<index_t, 5> extent{1, length[0], length[1], h, d};
  const grid_tensor<5> q(g, extent, 0), clean_k(g, extent, 1), clean_v(g, extent, 0);
  grid_tensor<5> k = clean_k, v = clean_v;
  k.view.data = k.storage.data();
  v.view.data = v.storage.data();
  grid_tensor<5>& poisoned = nan_key ? k : v;
  for (index_t hh = 0; hh < h; ++hh)
    for (index_t c = 0; c < d; ++c)
      poisoned.view.data[at[0] * poisoned.view.stride[1] + at[1] * poisoned.view.stride[2] +
                         hh * poisoned.view.stride[3] + c] = std::nanf("");
  const ref::softmax_result want = ref::neighborhood_attention<2>(q.cview(), clean_k.cview(), clean_v.cview(), dims);
  attn::neighborhood_options<2> opt;
  opt.dims = dims;
  using kernel = attn::detail::neighborhood_kernel;
  for (const kernel forced : {kernel::tiles, kernel::offsets, kernel::segments}) {
    SCOPED_TRACE(std::string(kernel_name(forced)) + (nan_key ? " NaN key" : " NaN value"));
    grid_tensor<5> out(g, extent, 0, false);
    attn::detail::neighborhood_run<Backend>(q.cview(), k.cview(), v.cview(), out.view, {}, opt, attn::serial{},
                                            forced);
    for (index_t y = 0; y < length[0]; ++y)
      for (index_t x = 0; x < length[1]; ++x) {
        const bool sees = attn::neighborhood_allows(dims[0], length[0], y, at[0]) &&
                          attn::neighborhood_allows(dims[1], length[1], x, at[1]);
        for (index_t hh = 0; hh < h; ++hh)
          for (index_t c = 0; c < d; ++c) {
            const float got = out.view.data[y * out.view.stride[1] + x * out.view.stride[2] + hh * d + c];
            if (sees) {
              ASSERT_TRUE(std::isnan(got)) << "query (" << y << ", " << x << ") sees the NaN token";
            } else {
              const double ref_value = want.out[want.row_index(0, y * length[1] + x, hh) * d + c];
              ASSERT_NEAR(got, ref_value, 1e-4) << "query (" << y << ", " << x << ") never sees the NaN token";
            }
          }
      }
  }
}

TYPED_TEST(NeighborhoodTest, NanReachesOnlyTheWindowsHoldingIt) {
  for (const bool nan_key : {true, false}) {
    check_nan_isolation<TypeParam>(nan_key, {5, 9});   // inside
    check_nan_isolation<TypeParam>(nan_key, {0, 18});  // a corner: windows shifted inwards
  }
}

TEST(Neighborhood, Float16KeysAndValuesUnderFloatQueries) {
  check_stored<attn::default_backend, 3, float, attn::float16, attn::float16, float>(
      {4, 8, 8}, 4, 2, 16, {neighborhood_dim{3}, neighborhood_dim{5}, neighborhood_dim{5}});
}

// key_runs() hold every allowed key of a query tile's real tokens; on the
// KV tiles the core cuts from the runs and on ranges anywhere, a `full`
// range allows every pair, an `empty` one none, and remove_pairs leaves
// exactly the allowed pairs.
template <std::size_t R>
void expect_sound_layout(const std::array<index_t, R>& length, const std::array<neighborhood_dim, R>& dims,
                         index_t positions) {
  const attn::detail::neighborhood_layout<R> layout(length, dims, positions, 4, 16);
  const index_t v = layout.volume(), nq = layout.queries(), nk = layout.keys();
  constexpr index_t heads = 2;
  index_t full = 0, partial = 0;
  std::vector<float> st;
  for (index_t qt = 0; qt < nq / v; ++qt) {
    const attn::query_block qb{0, qt * v, (qt + 1) * v, 0, heads, nq, nk};
    const attn::key_range range = layout.keys(qb);
    std::vector<attn::key_range> runs;
    layout.key_runs(qb, runs);
    for (index_t i = qb.i_begin; i < qb.i_end; ++i)
      for (index_t j = 0; j < nk; ++j)
        if (layout.allowed(0, 0, i, j)) {
          ASSERT_TRUE(j >= range.begin && j < range.end) << "keys() misses " << i << ", " << j;
          ASSERT_TRUE(std::any_of(runs.begin(), runs.end(), [&](attn::key_range r) {
            return j >= r.begin && j < r.end;
          })) << "key_runs() misses " << i << ", " << j;
        }
    auto check_range = [&](index_t j0, index_t j1) {
      const attn::tile_kind kind = layout.classify(qb, j0, j1);
      full += kind == attn::tile_kind::full;
      partial += kind == attn::tile_kind::partial;
      const index_t ldq = v * heads;
      st.assign(static_cast<std::size_t>((j1 - j0) * ldq), 1.0f);
      layout.remove_pairs(qb, heads, j0, j1 - j0, st.data(), ldq);
      for (index_t i = qb.i_begin; i < qb.i_end; ++i) {
        if (layout.query_token(i) < 0) continue;  // padding rows are computed and discarded
        for (index_t j = j0; j < j1; ++j) {
          const bool ok = layout.allowed(0, 0, i, j);
          if (kind == attn::tile_kind::full) {
            ASSERT_TRUE(ok) << i << ", " << j;
          }
          if (kind == attn::tile_kind::empty) {
            ASSERT_FALSE(ok) << i << ", " << j;
          }
          for (index_t h = 0; h < heads; ++h)
            ASSERT_EQ(std::isfinite(st[static_cast<std::size_t>((j - j0) * ldq + (i - qb.i_begin) * heads + h)]), ok)
                << "remove_pairs " << i << ", " << j;
        }
      }
    };
    for (const attn::key_range r : runs)
      for (index_t j0 = r.begin; j0 < r.end; j0 += 7) check_range(j0, std::min(j0 + 7, r.end));
    for (index_t j0 = 0; j0 < nk; j0 += 3) check_range(j0, std::min(j0 + 5, nk));
  }
  EXPECT_GT(partial, 0);
  // Every real token appears once as a query and once as a key.
  std::vector<int> seen(static_cast<std::size_t>(ref::grid<R>{length}.tokens()), 0), keys = seen;
  for (index_t t = 0; t < nq; ++t)
    if (layout.query_token(t) >= 0) ++seen[static_cast<std::size_t>(layout.query_token(t))];
  for (index_t t = 0; t < nk; ++t) ++keys[static_cast<std::size_t>(layout.key_token(t))];
  for (std::size_t t = 0; t < seen.size(); ++t) {
    ASSERT_EQ(seen[t], 1);
    ASSERT_EQ(keys[t], 1);
  }
}

TEST(NeighborhoodLayout, ClassificationIsSound) {
  expect_sound_layout<1>({100}, {neighborhood_dim{9}}, 16);
  expect_sound_layout<1>({100}, {neighborhood_dim{9, 3, 2, true}}, 12);
  expect_sound_layout<2>({20, 23}, {neighborhood_dim{7}, neighborhood_dim{5, 2, 3}}, 16);
  expect_sound_layout<2>({20, 23}, {neighborhood_dim{4, 1, 1, true}, neighborhood_dim{6, 3}}, 12);
  expect_sound_layout<3>({6, 9, 10}, {neighborhood_dim{3, 2}, neighborhood_dim{5, 1, 5}, neighborhood_dim{3, 1, 1, true}}, 24);
}

TEST(NeighborhoodErrors, NameTheArgument) {
  ref::rng g{1};
  const grid_tensor<5> q(g, {1, 6, 6, 2, 8}, 0), k(g, {1, 6, 7, 2, 8}, 0);
  grid_tensor<5> out(g, {1, 6, 6, 2, 8}, 0, false);
  auto message = [&](const attn::neighborhood_options<2>& opt, const attn::strided_view<const float, 5>& kk) {
    return ref::error_message(
        [&] { attn::neighborhood_attention(q.cview(), kk, kk, out.view, {}, opt); });
  };
  attn::neighborhood_options<2> ok;
  ok.dims = {neighborhood_dim{3}, neighborhood_dim{3}};
  EXPECT_EQ(message(ok, q.cview()), "");
  EXPECT_NE(message(ok, k.cview()).find("k: expected shape (B, 6, 6, Hkv, Dk = 8)"), std::string::npos);
  attn::neighborhood_options<2> bad = ok;
  bad.dims[1] = neighborhood_dim{4, 2};
  EXPECT_NE(message(bad, q.cview()).find("neighborhood dimension 1 kernel: expected K * D <= L = 6"),
            std::string::npos);
  bad.dims[1] = neighborhood_dim{1};
  EXPECT_NE(message(bad, q.cview()).find("K >= 2"), std::string::npos);
}

}  // namespace neighborhood_test
