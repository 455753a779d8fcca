// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Serving-shaped softmax attention (issue #8): ragged key counts, paged
// caches, varlen (packed) batches, forced split counts and cascade (shared
// prefix), each against the fp64 oracle run per sequence on the sequence's
// own keys, typed over every backend and two executors.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/latent_reference.hpp"
#include "reference/random.hpp"
#include "reference/softmax_reference.hpp"

namespace serving_test {

using attn::index_t;
namespace ref = attn::ref;

constexpr float sentinel = -1234.5f;

template <class B, class E>
struct config {
  using backend = B;
  using exec = E;
};
template <class... B>
auto configs_of(attn::backend::list<B...>)
    -> ::testing::Types<config<B, ref::serial_exec>..., config<B, ref::openmp2_exec>...>;
using configs = decltype(configs_of(ref::tested_backends{}));
struct config_name {
  template <class C>
  static std::string GetName(int) {
    return std::string(C::backend::name) + "_" + C::exec::name;
  }
};

// Sequence b of a batched view, cut to its first n rows: (1, n, H, D).
template <class T>
attn::view4<T> sequence(const attn::view4<T>& x, index_t b, index_t n) {
  return {x.data + b * x.stride[0], {1, n, x.extent[2], x.extent[3]}, x.stride};
}
template <class T>
attn::view3<T> sequence(const attn::view3<T>& x, index_t b) {
  return {x.data + b * x.stride[0], {1, x.extent[1], x.extent[2]}, x.stride};
}
// The oracle's options for one sequence: the serving fields cleared.
attn::softmax_options per_sequence(attn::softmax_options opt) {
  opt.kv_lengths = {};
  opt.num_splits = 0;
  return opt;
}

// A paged copy of a (B, capacity, H, D) cache: each sequence's first
// lengths[b] rows in pages of page_size rows, pages shuffled in the pool,
// unused table entries pointing outside the pool (never read).
struct paged_copy {
  index_t page_size, max_pages;
  ref::tensor4 k_pool, v_pool;
  std::vector<std::int32_t> table;

  paged_copy(const attn::view4<const float>& k, const attn::view4<const float>& v,
             const std::vector<std::int32_t>& lengths, index_t page, std::uint64_t seed,
             const ref::layout4& pool_mem = ref::bshd_memory)
      : page_size(page) {
    const index_t batch = k.extent[0], hkv = k.extent[2];
    max_pages = std::max<index_t>(1, (k.extent[1] + page - 1) / page);
    index_t used = 0;
    for (const std::int32_t n : lengths) used += (n + page - 1) / page;
    const index_t pool = used + 2;  // two pages nobody uses
    std::vector<std::int32_t> slots(static_cast<std::size_t>(pool));
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), std::mt19937_64(seed));
    k_pool = ref::filled<4>({pool, page, hkv, k.extent[3]}, pool_mem, std::numeric_limits<float>::quiet_NaN());
    v_pool = ref::filled<4>({pool, page, hkv, v.extent[3]}, pool_mem, std::numeric_limits<float>::quiet_NaN());
    table.assign(static_cast<std::size_t>(batch * max_pages), static_cast<std::int32_t>(pool + 7));
    index_t next = 0;
    for (index_t b = 0; b < batch; ++b)
      for (index_t j = 0; j < lengths[b]; ++j) {
        if (j % page == 0) table[b * max_pages + j / page] = slots[next++];
        const index_t at = table[b * max_pages + j / page];
        for (index_t g = 0; g < hkv; ++g) {
          for (index_t d = 0; d < k.extent[3]; ++d) k_pool.view(at, j % page, g, d) = k(b, j, g, d);
          for (index_t d = 0; d < v.extent[3]; ++d) v_pool.view(at, j % page, g, d) = v(b, j, g, d);
        }
      }
  }
  attn::paged_kv cache() const {
    return {k_pool.cview(), v_pool.cview(),
            attn::strided_view<const std::int32_t, 2>{table.data(), {static_cast<index_t>(table.size()) / max_pages, max_pages}, {max_pages, 1}}};
  }
};

// A batch of B sequences over a cache of `capacity` keys, with lengths.
struct ragged_batch {
  index_t nq, hq, hkv, dk, dv;
  std::vector<std::int32_t> lengths;
  ref::tensor4 q, k, v, out;
  ref::tensor3 lse;
  std::vector<float> sinks;

  ragged_batch(std::vector<std::int32_t> lens, index_t capacity, index_t nq_, index_t hq_, index_t hkv_,
               index_t dk_, index_t dv_, std::uint64_t seed, const ref::layout4& q_mem = ref::bshd_memory)
      : nq(nq_), hq(hq_), hkv(hkv_), dk(dk_), dv(dv_), lengths(std::move(lens)) {
    ref::rng g(seed);
    const index_t b = static_cast<index_t>(lengths.size());
    q = ref::random<4>(g, {b, nq, hq, dk}, q_mem);
    k = ref::random<4>(g, {b, capacity, hkv, dk}, ref::bshd_memory);
    v = ref::random<4>(g, {b, capacity, hkv, dv}, ref::bshd_memory);
    for (index_t h = 0; h < hq; ++h) sinks.push_back(g.uniform(-1.0f, 3.0f));
    reset();
  }
  index_t batch() const { return static_cast<index_t>(lengths.size()); }
  void reset() {
    out = ref::filled<4>({batch(), nq, hq, dv}, q.view.stride[1] == hq * dk ? ref::bshd_memory : ref::bhsd_memory,
                         sentinel);
    lse = ref::filled<3>({batch(), nq, hq}, ref::bsh_memory, sentinel);
  }
  // Every sequence's rows against the oracle over its own keys.
  ::testing::AssertionResult matches_oracle(const attn::softmax_options& opt) const {
    for (index_t b = 0; b < batch(); ++b) {
      const ref::softmax_result want = ref::softmax_attention(
          sequence(q.cview(), b, nq), sequence(k.cview(), b, lengths[b]), sequence(v.cview(), b, lengths[b]),
          per_sequence(opt));
      auto got = ref::within_contract(sequence<const float>(out.view, b, nq), sequence<const float>(lse.view, b),
                                      want);
      if (!got) return got << " in sequence " << b << " (" << lengths[b] << " keys)";
    }
    return ::testing::AssertionSuccess();
  }
};

template <class C>
class Serving : public ::testing::Test {};
TYPED_TEST_SUITE(Serving, configs, config_name);

// Ragged key counts (0, 1, long, tile edges) on a contiguous cache with
// spare capacity: plain, causal, window + sink tokens, sink logits, softcap
// and ALiBi, for decode (Nq = 1) and a few new tokens (Nq = 3).
TYPED_TEST(Serving, RaggedLengthsMatchTheOraclePerSequence) {
  using B = typename TypeParam::backend;
  const auto exec = TypeParam::exec::make();
  for (const index_t nq : {1, 3})
    for (int variant = 0; variant < 5; ++variant) {
      ragged_batch r({0, 1, 300, 129, 37, 3}, 301, nq, 8, 2, 64, 48, 11 + variant);
      attn::softmax_options opt;
      opt.kv_lengths = r.lengths;
      if (variant == 1) opt.causal = true;
      if (variant == 2) {
        opt.window = std::array<index_t, 2>{31, 0};
        opt.sink_tokens = 4;
      }
      if (variant == 3) {
        opt.sinks = r.sinks.data();
        opt.causal = true;
      }
      if (variant == 4) {
        opt.softcap = 5.0f;
        opt.alibi = true;
        opt.causal = true;
      }
      attn::attention<B>(r.q.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt, exec);
      EXPECT_TRUE(r.matches_oracle(opt)) << "Nq=" << nq << " variant " << variant;
    }
}

// A paged cache (pages shuffled, unused table entries out of the pool) gives
// the oracle's result, for page sizes that tile evenly, that are prime and
// that are a single row; BHSD queries and a padded pool exercise strides.
TYPED_TEST(Serving, PagedCacheMatchesTheOracle) {
  using B = typename TypeParam::backend;
  const auto exec = TypeParam::exec::make();
  for (const index_t page : {1, 7, 16, 64, 131})
    for (const bool causal : {false, true}) {
      ragged_batch r({0, 1, 257, 64, 130}, 257, causal ? 2 : 1, 8, 2, 64, 64, 23 + page, ref::bhsd_memory);
      const paged_copy paged(r.k.cview(), r.v.cview(), r.lengths, page, 5 + page,
                             page == 7 ? ref::padded_bshd : ref::bshd_memory);
      attn::softmax_options opt;
      opt.kv_lengths = r.lengths;
      opt.causal = causal;
      opt.window = std::array<index_t, 2>{100, causal ? 0 : -1};
      opt.sink_tokens = 2;
      attn::attention<B>(r.q.cview(), paged.cache(), r.out.view, r.lse.view, opt, exec);
      EXPECT_TRUE(r.matches_oracle(opt)) << "page " << page << (causal ? " causal" : "");
    }
}

// Varlen (packed) batches: sequences with no queries, no keys, more queries
// than keys (causal: empty rows), GQA; against the oracle per sequence.
TYPED_TEST(Serving, VarlenMatchesTheOraclePerSequence) {
  using B = typename TypeParam::backend;
  const auto exec = TypeParam::exec::make();
  const std::vector<std::int32_t> cu_q{0, 5, 5, 17, 18, 18, 31};
  const std::vector<std::int32_t> cu_k{0, 9, 20, 150, 151, 160, 160};
  const index_t tq = cu_q.back(), tk = cu_k.back() + 3, hq = 6, hkv = 3, dk = 32, dv = 40;
  for (const bool causal : {false, true}) {
    ref::rng g(91);
    const ref::tensor4 q = ref::random<4>(g, {1, tq, hq, dk}, ref::bshd_memory);
    const ref::tensor4 k = ref::random<4>(g, {1, tk, hkv, dk}, ref::padded_bshd);
    const ref::tensor4 v = ref::random<4>(g, {1, tk, hkv, dv}, ref::bshd_memory);
    ref::tensor4 out = ref::filled<4>({1, tq, hq, dv}, ref::bshd_memory, sentinel);
    ref::tensor3 lse = ref::filled<3>({1, tq, hq}, ref::bsh_memory, sentinel);
    const attn::strided_view<float, 2> lse2{lse.view.data, {tq, hq}, {lse.view.stride[1], lse.view.stride[2]}};
    attn::softmax_options opt;
    opt.causal = causal;
    attn::varlen_attention<B>(ref::packed(q.cview()), ref::packed(k.cview()), ref::packed(v.cview()),
                              ref::packed(out.view), lse2, cu_q, cu_k, opt, exec);
    for (std::size_t s = 0; s + 1 < cu_q.size(); ++s) {
      const index_t q0 = cu_q[s], nq = cu_q[s + 1] - q0, k0 = cu_k[s], nk = cu_k[s + 1] - k0;
      const ref::softmax_result want =
          ref::softmax_attention(ref::token_rows(q.cview(), q0, nq), ref::token_rows(k.cview(), k0, nk),
                                 ref::token_rows(v.cview(), k0, nk), opt);
      EXPECT_TRUE(ref::within_contract(ref::token_rows<const float>(out.view, q0, nq), ref::token_rows<const float>(lse.view, q0, nq), want))
          << "sequence " << s << (causal ? " causal" : "");
    }
  }
}

// Packed queries over a paged cache (chunked prefill of several sequences):
// each sequence's new queries are the last of its keys.
TYPED_TEST(Serving, VarlenQueriesOverAPagedCache) {
  using B = typename TypeParam::backend;
  const auto exec = TypeParam::exec::make();
  const std::vector<std::int32_t> cu_q{0, 4, 5, 5, 45};
  const std::vector<std::int32_t> lengths{10, 1, 0, 300};
  const index_t tq = cu_q.back(), hq = 4, hkv = 2, dk = 64, dv = 64, capacity = 300;
  ref::rng g(17);
  const ref::tensor4 q = ref::random<4>(g, {1, tq, hq, dk}, ref::bshd_memory);
  const ref::tensor4 k = ref::random<4>(g, {4, capacity, hkv, dk}, ref::bshd_memory);
  const ref::tensor4 v = ref::random<4>(g, {4, capacity, hkv, dv}, ref::bshd_memory);
  const paged_copy paged(k.cview(), v.cview(), lengths, 32, 3);
  ref::tensor4 out = ref::filled<4>({1, tq, hq, dv}, ref::bshd_memory, sentinel);
  ref::tensor3 lse = ref::filled<3>({1, tq, hq}, ref::bsh_memory, sentinel);
  attn::softmax_options opt;
  opt.causal = true;
  opt.kv_lengths = lengths;
  const attn::view3<const float> q3{q.view.data, {tq, hq, dk}, {hq * dk, dk, 1}};
  const attn::view3<float> out3{out.view.data, {tq, hq, dv}, {hq * dv, dv, 1}};
  const attn::strided_view<float, 2> lse2{lse.view.data, {tq, hq}, {hq, 1}};
  attn::varlen_attention<B>(q3, paged.cache(), out3, lse2, cu_q, opt, exec);
  for (std::size_t s = 0; s + 1 < cu_q.size(); ++s) {
    const index_t q0 = cu_q[s], nq = cu_q[s + 1] - q0;
    const ref::softmax_result want = ref::softmax_attention(
        ref::token_rows(q.cview(), q0, nq), sequence(k.cview(), s, lengths[s]), sequence(v.cview(), s, lengths[s]),
        per_sequence(opt));
    EXPECT_TRUE(ref::within_contract(ref::token_rows<const float>(out.view, q0, nq), ref::token_rows<const float>(lse.view, q0, nq), want))
        << "sequence " << s;
  }
}

// Forced split counts 1..16 (flash-decoding's num_splits) agree within 1e-6
// (of max|v|) with the unsplit result, in decode and with a window.
TYPED_TEST(Serving, SplitCountsAgree) {
  using B = typename TypeParam::backend;
  const auto exec = TypeParam::exec::make();
  for (const bool window : {false, true}) {
    ragged_batch r({2000, 1500}, 2000, 1, 8, 2, 64, 64, 5);
    attn::softmax_options opt;
    opt.kv_lengths = r.lengths;
    if (window) {
      opt.window = std::array<index_t, 2>{700, 0};
      opt.sink_tokens = 4;
    }
    opt.num_splits = 1;
    attn::attention<B>(r.q.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt, exec);
    ASSERT_TRUE(r.matches_oracle(opt));
    const std::vector<float> one(r.out.storage), one_lse(r.lse.storage);
    // Within 1e-6 of the values' scale (DESIGN §1 bounds errors by max|v|;
    // these outputs are averages of 2000 values, ~30x smaller than max|v|).
    float scale = 0;
    for (const float x : r.v.storage) scale = std::max(scale, std::fabs(x));
    for (index_t splits = 2; splits <= 16; ++splits) {
      r.reset();
      opt.num_splits = splits;
      attn::attention<B>(r.q.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt, exec);
      for (std::size_t n = 0; n < one.size(); ++n)
        ASSERT_LE(std::fabs(r.out.storage[n] - one[n]), 1e-6 * std::fabs(scale)) << splits << " splits";
      for (std::size_t n = 0; n < one_lse.size(); ++n)
        ASSERT_LE(std::fabs(r.lse.storage[n] - one_lse[n]), 1e-6 * (1 + std::fabs(one_lse[n]))) << splits << " splits";
    }
  }
}

// Seeded random serving calls against the oracle per sequence: batch sizes,
// lengths at tile edges and anywhere (0 included), spare capacity, a few
// queries or one, GQA groups of 1 to 6, head dims from 1 to 128 (Dk != Dv
// too), BHSD queries, causal, windows with or without sink tokens, sink
// logits, softcap, ALiBi, forced split counts, and contiguous or paged caches
// with any page size. (Run with more seeds under ASan + UBSan on 2026-12-07:
// 480 calls per backend and executor.)
TYPED_TEST(Serving, RandomCallsMatchTheOracle) {
  using B = typename TypeParam::backend;
  const auto exec = TypeParam::exec::make();
  ref::rng g(2026);
  constexpr index_t edges[] = {0, 1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 700, 1100};
  constexpr index_t head_dims[] = {1, 8, 13, 16, 24, 64, 80, 128};
  for (int n = 0; n < 16; ++n) {
    std::vector<std::int32_t> lengths(static_cast<std::size_t>(g.between(1, 5)));
    for (std::int32_t& len : lengths)
      len = static_cast<std::int32_t>(g.between(0, 2) != 0 ? edges[g.between(0, 14)] : g.between(0, 1200));
    const index_t capacity = std::max<index_t>(1, *std::max_element(lengths.begin(), lengths.end())) + g.between(0, 3);
    const index_t nq = g.between(0, 2) != 0 ? 1 : g.between(2, 5), hkv = g.between(1, 3), hq = hkv * g.between(1, 6);
    const index_t dk = head_dims[g.between(0, 7)], dv = g.between(0, 1) != 0 ? dk : head_dims[g.between(0, 7)];
    ragged_batch r(lengths, capacity, nq, hq, hkv, dk, dv, 100 + n,
                   g.between(0, 1) != 0 ? ref::bhsd_memory : ref::bshd_memory);
    attn::softmax_options opt;
    opt.kv_lengths = r.lengths;
    opt.causal = g.between(0, 1) != 0;
    if (g.between(0, 2) == 0) {
      opt.window = std::array<index_t, 2>{g.between(-1, 300), opt.causal ? 0 : g.between(-1, 40)};
      if (g.between(0, 1) == 0) opt.sink_tokens = g.between(0, 8);
    }
    if (g.between(0, 3) == 0) opt.sinks = r.sinks.data();
    if (g.between(0, 4) == 0) opt.softcap = 5.0f;
    if (g.between(0, 4) == 0) opt.alibi = true;
    if (g.between(0, 2) == 0) opt.num_splits = g.between(1, 9);
    const bool paged = g.between(0, 1) != 0;
    const index_t page = g.between(0, 1) != 0 ? index_t{1} << g.between(0, 7) : g.between(1, 150);
    SCOPED_TRACE("random call " + std::to_string(n) + ": B=" + std::to_string(lengths.size()) + " Nq=" +
                 std::to_string(nq) + " Hq=" + std::to_string(hq) + " Hkv=" + std::to_string(hkv) + " Dk=" +
                 std::to_string(dk) + " Dv=" + std::to_string(dv) + " splits=" + std::to_string(opt.num_splits) +
                 (paged ? " pages of " + std::to_string(page) : " contiguous"));
    if (paged) {
      const paged_copy cache(r.k.cview(), r.v.cview(), r.lengths, page, 7 + n);
      attn::attention<B>(r.q.cview(), cache.cache(), r.out.view, r.lse.view, opt, exec);
    } else {
      attn::attention<B>(r.q.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt, exec);
    }
    ASSERT_TRUE(r.matches_oracle(opt));
  }
}

// A view of `data` shaped and strided as the tensor t (its stored copy).
template <class T, std::size_t R>
attn::strided_view<T, R> stored_as(std::vector<T>& data, const ref::tensor<R>& t) {
  return {data.data(), t.view.extent, t.view.stride};
}
template <class T, std::size_t R>
attn::strided_view<const T, R> stored_as(const std::vector<T>& data, const ref::tensor<R>& t) {
  return {data.data(), t.view.extent, t.view.stride};
}

// Cascade: a shared prefix plus per-sequence suffixes (contiguous, ragged,
// and paged) equals attention over each sequence's concatenated keys; q,
// prefix and suffix K/V, and out stored as Q, KV and O (the oracle takes the
// rounded inputs, README "Reduced precision").
template <class B, class Q, class KV, class O, class Exec>
void expect_cascade(const Exec& exec) {
  const index_t np = 200, hq = 8, hkv = 2, dk = 64, dv = 64;
  for (const bool paged_suffix : {false, true})
    for (const index_t nq : {1, 2}) {
      ragged_batch r({5, 130, 2, 64}, 130, nq, hq, hkv, dk, dv, 41 + nq);
      ref::rng g(7);
      ref::tensor4 pk = ref::random<4>(g, {1, np, hkv, dk}, ref::bshd_memory);
      ref::tensor4 pv = ref::random<4>(g, {1, np, hkv, dv}, ref::bshd_memory);
      std::vector<Q> q = ref::rounded<Q>(r.q);
      std::vector<KV> k = ref::rounded<KV>(r.k), v = ref::rounded<KV>(r.v);
      std::vector<KV> prefix_k = ref::rounded<KV>(pk), prefix_v = ref::rounded<KV>(pv);
      std::vector<O> out = ref::rounded<O>(r.out);
      attn::softmax_options opt;
      opt.kv_lengths = r.lengths;
      opt.causal = true;
      opt.sinks = r.sinks.data();
      opt.softcap = 8.0f;
      const auto q_view = stored_as(std::as_const(q), r.q), pk_view = stored_as(std::as_const(prefix_k), pk),
                 pv_view = stored_as(std::as_const(prefix_v), pv);
      const auto out_view = stored_as(out, r.out);
      if (paged_suffix) {
        paged_copy paged(r.k.cview(), r.v.cview(), r.lengths, 16, 9);
        std::vector<KV> k_pool = ref::rounded<KV>(paged.k_pool), v_pool = ref::rounded<KV>(paged.v_pool);
        const attn::paged_kv pages = paged.cache();
        const attn::typed_paged_kv<KV> cache{stored_as(std::as_const(k_pool), paged.k_pool),
                                             stored_as(std::as_const(v_pool), paged.v_pool), pages.block_table};
        attn::cascade_attention<B>(q_view, pk_view, pv_view, cache, out_view, r.lse.view, opt, exec);
      } else {
        attn::cascade_attention<B>(q_view, pk_view, pv_view, stored_as(std::as_const(k), r.k),
                                   stored_as(std::as_const(v), r.v), out_view, r.lse.view, opt, exec);
      }
      for (std::size_t n = 0; n < out.size(); ++n) r.out.storage[n] = attn::to_float(out[n]);
      for (index_t b = 0; b < r.batch(); ++b) {
        const index_t n = np + r.lengths[b];
        ref::tensor4 keys = ref::filled<4>({1, n, hkv, dk}, ref::bshd_memory, 0.0f);
        ref::tensor4 values = ref::filled<4>({1, n, hkv, dv}, ref::bshd_memory, 0.0f);
        for (index_t j = 0; j < n; ++j)
          for (index_t h = 0; h < hkv; ++h) {
            for (index_t d = 0; d < dk; ++d)
              keys.view(0, j, h, d) = j < np ? pk.view(0, j, h, d) : r.k.view(b, j - np, h, d);
            for (index_t d = 0; d < dv; ++d)
              values.view(0, j, h, d) = j < np ? pv.view(0, j, h, d) : r.v.view(b, j - np, h, d);
          }
        const ref::softmax_result want =
            ref::softmax_attention(sequence(r.q.cview(), b, nq), keys.cview(), values.cview(), per_sequence(opt));
        EXPECT_TRUE(ref::within_contract(sequence<const float>(r.out.view, b, nq), sequence<const float>(r.lse.view, b),
                                         want, ref::storage_contract<O>()))
            << "sequence " << b << (paged_suffix ? " paged" : "") << " Nq=" << nq;
      }
    }
}

TYPED_TEST(Serving, CascadeEqualsTheConcatenatedKeys) {
  expect_cascade<typename TypeParam::backend, float, float, float>(TypeParam::exec::make());
}

// 16-bit storage: the native backend, one and two threads (the widening
// loads of every backend are tested in tests/variant/precision_test.cpp).
TEST(ServingCascade, StoredIn16Bits) {
  using B = attn::backend::native;
  for (const int threads : {1, 2}) {
    const attn::openmp exec{threads};
    expect_cascade<B, attn::float16, attn::float16, attn::float16>(exec);
    expect_cascade<B, attn::bfloat16, attn::bfloat16, attn::bfloat16>(exec);
    expect_cascade<B, float, attn::float16, attn::bfloat16>(exec);
  }
}

// A 16-bit out is rounded once, after the merge. Equal scores over values
// 1, 1 + u (the prefix) and 1 + u (the suffix), u one bf16 ulp at 1: the
// mean 1 + 2u/3 rounds to 1 + u, but a prefix result rounded first
// (1 + u/2, a tie, to 1) would merge to 1 + u/3 and round to 1.
TEST(ServingCascade, SixteenBitOutIsRoundedOnce) {
  const index_t d = 8;
  const float u = 1.0f / 128;
  const std::vector<float> ones(2 * d, 1.0f), prefix_v = [&] {
    std::vector<float> v(2 * d, 1.0f);
    std::fill(v.begin() + d, v.end(), 1.0f + u);
    return v;
  }();
  const std::vector<float> suffix_v(d, 1.0f + u);
  std::vector<attn::bfloat16> out(d);
  float lse = 0;
  attn::cascade_attention(attn::bshd<const float>(ones.data(), 1, 1, 1, d),
                          attn::bshd<const float>(ones.data(), 1, 2, 1, d),
                          attn::bshd<const float>(prefix_v.data(), 1, 2, 1, d),
                          attn::bshd<const float>(ones.data(), 1, 1, 1, d),
                          attn::bshd<const float>(suffix_v.data(), 1, 1, 1, d), attn::bshd(out.data(), 1, 1, 1, d),
                          attn::bsh(&lse, 1, 1, 1));
  for (const attn::bfloat16 x : out) EXPECT_EQ(attn::to_float(x), 1.0f + u);
}

// NaN in one sequence's keys stays in that sequence (and only reaches rows
// that see the key).
TYPED_TEST(Serving, NanStaysInItsSequence) {
  using B = typename TypeParam::backend;
  const auto exec = TypeParam::exec::make();
  ragged_batch r({100, 100, 50}, 120, 1, 4, 2, 32, 32, 3);
  ref::inject_nan(r.v.view, 1, 10, 0, 3);   // seen by sequence 1, kv head 0
  ref::inject_nan(r.k.view, 2, 70, 1, 0);   // past sequence 2's length: never read
  attn::softmax_options opt;
  opt.kv_lengths = r.lengths;
  const paged_copy paged(r.k.cview(), r.v.cview(), r.lengths, 16, 2);
  attn::attention<B>(r.q.cview(), paged.cache(), r.out.view, r.lse.view, opt, exec);
  EXPECT_TRUE(r.matches_oracle(opt));
  for (index_t h = 0; h < 4; ++h)
    for (index_t d = 0; d < 32; ++d) {
      EXPECT_EQ(std::isnan(r.out.view(1, 0, h, d)), h < 2 && d == 3) << h << " " << d;
      EXPECT_FALSE(std::isnan(r.out.view(0, 0, h, d)));
      EXPECT_FALSE(std::isnan(r.out.view(2, 0, h, d)));
    }
}

// Latent attention with packed (varlen) queries, over a contiguous and a
// paged cache (pages of 16 rows, shuffled), causal or not, against the latent
// oracle per sequence; q, cache and out stored as Q, C and O (the oracle
// takes the rounded inputs, README "Reduced precision"). Native backend,
// serial and two threads (the backends are covered by
// tests/variant/latent_test.cpp).
template <class Q, class C, class O>
void expect_latent_varlen() {
  const std::vector<std::int32_t> cu_q{0, 3, 3, 4, 12};
  const std::vector<std::int32_t> lengths{40, 7, 0, 150};
  const index_t tq = cu_q.back(), h = 16, dc = 32, d = 48, capacity = 160, page = 16;
  ref::rng g(29);
  ref::tensor4 q = ref::random<4>(g, {1, tq, h, d}, ref::bshd_memory);
  ref::tensor4 cache = ref::random<4>(g, {4, capacity, 1, d}, ref::bshd_memory);
  const std::vector<Q> q_stored = ref::rounded<Q>(q);
  const std::vector<C> cache_stored = ref::rounded<C>(cache);
  // The pool: page p of sequence b at slot table[b][p], slots shuffled.
  const index_t max_pages = capacity / page;
  std::vector<std::int32_t> table(static_cast<std::size_t>(4 * max_pages));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937_64(4));
  std::vector<C> pool(static_cast<std::size_t>(4 * capacity * d));
  for (index_t b = 0; b < 4; ++b)
    for (index_t j = 0; j < capacity; ++j)
      for (index_t c = 0; c < d; ++c)
        pool[static_cast<std::size_t>((table[b * max_pages + j / page] * page + j % page) * d + c)] =
            cache_stored[static_cast<std::size_t>((b * capacity + j) * d + c)];
  const attn::typed_paged_cache<C> paged{attn::bshd<const C>(pool.data(), 4 * max_pages, page, 1, d),
                                         {table.data(), {4, max_pages}, {max_pages, 1}}};
  const attn::view3<const Q> q3{q_stored.data(), {tq, h, d}, {h * d, d, 1}};
  const attn::view4<const C> cache4{cache_stored.data(), cache.view.extent, cache.view.stride};
  for (const bool causal : {false, true})
    for (const bool use_pages : {false, true})
      for (const int threads : {1, 2}) {
        ref::tensor4 out = ref::filled<4>({1, tq, h, dc}, ref::bshd_memory, sentinel);
        ref::tensor3 lse = ref::filled<3>({1, tq, h}, ref::bsh_memory, sentinel);
        std::vector<O> out_stored = ref::rounded<O>(out);
        const attn::view3<O> out3{out_stored.data(), {tq, h, dc}, {h * dc, dc, 1}};
        const attn::strided_view<float, 2> lse2{lse.view.data, {tq, h}, {h, 1}};
        attn::latent_options opt;
        opt.scale = 0.15f;
        opt.dc = dc;
        opt.causal = causal;
        opt.lengths = lengths;
        if (use_pages)
          attn::latent_varlen_attention(q3, paged, out3, lse2, cu_q, opt, attn::openmp{threads});
        else
          attn::latent_varlen_attention(q3, cache4, out3, lse2, cu_q, opt, attn::openmp{threads});
        for (std::size_t n = 0; n < out_stored.size(); ++n) out.storage[n] = attn::to_float(out_stored[n]);
        for (std::size_t s = 0; s + 1 < cu_q.size(); ++s) {
          const index_t q0 = cu_q[s], nq = cu_q[s + 1] - q0;
          const std::vector<std::int32_t> length{lengths[s]};
          const ref::softmax_result want =
              ref::latent_attention(ref::token_rows(q.cview(), q0, nq), sequence(cache.cview(), s, capacity),
                                    dc, 0.15, length, causal);
          EXPECT_TRUE(ref::within_contract(ref::token_rows<const float>(out.view, q0, nq), ref::token_rows<const float>(lse.view, q0, nq), want,
                                           ref::storage_contract<O>()))
              << "sequence " << s << (causal ? " causal" : "") << (use_pages ? " paged" : "") << " threads " << threads;
        }
        EXPECT_TRUE(out.padding_holds(attn::to_float(attn::from_float<O>(sentinel))));
      }
}

TEST(ServingLatent, VarlenQueriesMatchTheOraclePerSequence) { expect_latent_varlen<float, float, float>(); }

TEST(ServingLatent, VarlenQueriesStoredIn16Bits) {
  expect_latent_varlen<attn::bfloat16, attn::float16, attn::bfloat16>();
  expect_latent_varlen<float, attn::bfloat16, float>();
}

// ---------------------------------------------------------------------------
// Bad input: a clear error naming the argument, and nothing written.

class ServingErrors : public ::testing::Test {
 protected:
  ragged_batch r{{4, 8}, 8, 1, 4, 2, 16, 16, 1};
  paged_copy paged{r.k.cview(), r.v.cview(), r.lengths, 4, 1};
  attn::softmax_options opt;

  void SetUp() override { opt.kv_lengths = r.lengths; }
  bool untouched() const {
    return std::all_of(r.out.storage.begin(), r.out.storage.end(), [](float x) { return x == sentinel; }) &&
           std::all_of(r.lse.storage.begin(), r.lse.storage.end(), [](float x) { return x == sentinel; });
  }
};

TEST_F(ServingErrors, KvLengths) {
  const std::vector<std::int32_t> too_few{4}, too_long{4, 9}, negative{-1, 2};
  for (const auto* lengths : {&too_few, &too_long, &negative}) {
    opt.kv_lengths = *lengths;
    EXPECT_TRUE(ref::throws_naming([&] { attn::attention(r.q.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt); },
                                   {"kv_lengths"}));
    EXPECT_TRUE(ref::throws_naming([&] { attn::attention(r.q.cview(), paged.cache(), r.out.view, r.lse.view, opt); },
                                   {"kv_lengths"}));
  }
  opt.kv_lengths = {};
  EXPECT_TRUE(ref::throws_naming([&] { attn::attention(r.q.cview(), paged.cache(), r.out.view, r.lse.view, opt); },
                                 {"kv_lengths", "paged"}));
  EXPECT_TRUE(untouched());
}

TEST_F(ServingErrors, BlockTableAndPools) {
  std::vector<std::int32_t> table = paged.table;
  table[1] = 1000;  // a page sequence 0 does not use: never read, no error
  attn::paged_kv cache = paged.cache();
  cache.block_table.data = table.data();
  EXPECT_NO_THROW(attn::attention(r.q.cview(), cache, r.out.view, r.lse.view, opt));
  r.reset();
  table[0] = 1000;  // sequence 0's first page: outside the pool
  EXPECT_TRUE(ref::throws_naming([&] { attn::attention(r.q.cview(), cache, r.out.view, r.lse.view, opt); },
                                 {"block_table", "block_table(0, 0) = 1000"}));
  cache = paged.cache();
  cache.v_pages.extent[1] = 3;
  EXPECT_TRUE(ref::throws_naming([&] { attn::attention(r.q.cview(), cache, r.out.view, r.lse.view, opt); },
                                 {"v_pages", "page_size=4"}));
  cache = paged.cache();
  cache.k_pages.extent[2] = 3;
  EXPECT_TRUE(ref::throws_naming([&] { attn::attention(r.q.cview(), cache, r.out.view, r.lse.view, opt); },
                                 {"k_pages", "GQA"}));
  EXPECT_TRUE(untouched());
}

TEST_F(ServingErrors, OptionsThatDoNotApply) {
  const std::vector<std::int32_t> ids(8, 0);
  opt.document_ids = ids;
  EXPECT_TRUE(ref::throws_naming([&] { attn::attention(r.q.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt); },
                                 {"document_ids", "ragged"}));
  opt.document_ids = {};
  opt.num_splits = -1;
  EXPECT_TRUE(ref::throws_naming([&] { attn::attention(r.q.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt); },
                                 {"num_splits"}));
  opt.num_splits = 0;
  EXPECT_TRUE(ref::throws_naming(
      [&] { attn::attention(r.q.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, attn::causal_mask{0}, {}, opt); },
      {"kv_lengths", "kv_length_mask"}));
  EXPECT_TRUE(untouched());
}

TEST(ServingVarlenErrors, CuSeqlens) {
  ref::rng g(1);
  const ref::tensor4 q = ref::random<4>(g, {1, 6, 2, 8}, ref::bshd_memory);
  const ref::tensor4 k = ref::random<4>(g, {1, 9, 1, 8}, ref::bshd_memory);
  ref::tensor4 out = ref::filled<4>({1, 6, 2, 8}, ref::bshd_memory, sentinel);
  const attn::view3<const float> q3{q.view.data, {6, 2, 8}, {16, 8, 1}}, k3{k.view.data, {9, 1, 8}, {8, 8, 1}};
  const attn::view3<float> out3{out.view.data, {6, 2, 8}, {16, 8, 1}};
  auto call = [&](std::vector<std::int32_t> cq, std::vector<std::int32_t> ck) {
    return [=] { attn::varlen_attention(q3, k3, k3, out3, {}, cq, ck); };
  };
  EXPECT_TRUE(ref::throws_naming(call({0, 4, 3}, {0, 4, 9}), {"cu_seqlens_q", "non-decreasing"}));
  EXPECT_TRUE(ref::throws_naming(call({0, 4, 7}, {0, 4, 9}), {"cu_seqlens_q", "T = 6"}));
  EXPECT_TRUE(ref::throws_naming(call({0, 4, 6}, {0, 10}), {"cu_seqlens_k", "as many offsets"}));
  EXPECT_TRUE(ref::throws_naming(call({0, 4, 6}, {0, 4, 10}), {"cu_seqlens_k", "T = 9"}));
  EXPECT_TRUE(ref::throws_naming(call({}, {}), {"cu_seqlens"}));
  EXPECT_TRUE(std::all_of(out.storage.begin(), out.storage.end(), [](float x) { return x == sentinel; }));
  EXPECT_NO_THROW(call({0, 4, 6}, {0, 4, 9})());
}

TEST(ServingLatentErrors, Varlen) {
  ref::rng g(3);
  const ref::tensor4 q = ref::random<4>(g, {1, 5, 2, 24}, ref::bshd_memory);
  const ref::tensor4 cache = ref::random<4>(g, {2, 8, 1, 24}, ref::bshd_memory);
  ref::tensor4 out = ref::filled<4>({1, 5, 2, 16}, ref::bshd_memory, sentinel);
  const attn::view3<const float> q3{q.view.data, {5, 2, 24}, {48, 24, 1}};
  const attn::view3<float> out3{out.view.data, {5, 2, 16}, {32, 16, 1}};
  attn::latent_options opt;
  opt.scale = 0.2f;
  opt.dc = 16;
  const std::vector<std::int32_t> three{0, 1, 2, 5}, two{0, 2, 5}, lengths{9, 1};
  EXPECT_TRUE(ref::throws_naming([&] { attn::latent_varlen_attention(q3, cache.cview(), out3, {}, three, opt); },
                                 {"cache", "B=3"}));
  opt.lengths = lengths;
  EXPECT_TRUE(ref::throws_naming([&] { attn::latent_varlen_attention(q3, cache.cview(), out3, {}, two, opt); },
                                 {"lengths", "lengths[0] = 9"}));
  opt.lengths = {};
  const std::vector<std::int32_t> table{0, 1};
  const attn::paged_cache paged{cache.cview(), {table.data(), {2, 1}, {1, 1}}};
  EXPECT_TRUE(ref::throws_naming([&] { attn::latent_varlen_attention(q3, paged, out3, {}, two, opt); },
                                 {"lengths", "paged"}));
  opt.dc = 25;
  EXPECT_TRUE(ref::throws_naming([&] { attn::latent_varlen_attention(q3, cache.cview(), out3, {}, two, opt); },
                                 {"dc"}));
  EXPECT_TRUE(std::all_of(out.storage.begin(), out.storage.end(), [](float x) { return x == sentinel; }));
  opt.dc = 16;
  EXPECT_NO_THROW(attn::latent_varlen_attention(q3, cache.cview(), out3, {}, two, opt));
}

TEST_F(ServingErrors, Cascade) {
  ref::rng g(2);
  const ref::tensor4 pk = ref::random<4>(g, {1, 5, 2, 16}, ref::bshd_memory);
  const ref::tensor4 pv = ref::random<4>(g, {1, 5, 2, 16}, ref::bshd_memory);
  opt.causal = true;
  const std::vector<std::int32_t> short_suffix{0, 8};
  opt.kv_lengths = short_suffix;
  EXPECT_TRUE(ref::throws_naming([&] {
    attn::cascade_attention(r.q.cview(), pk.cview(), pv.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt);
  }, {"kv_lengths", "causal"}));
  opt.kv_lengths = r.lengths;
  opt.window = std::array<index_t, 2>{3, 0};
  EXPECT_TRUE(ref::throws_naming([&] {
    attn::cascade_attention(r.q.cview(), pk.cview(), pv.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt);
  }, {"softmax_options", "window"}));
  opt.window.reset();
  ragged_batch bhsd({4, 8}, 8, 2, 4, 2, 16, 16, 1, ref::bhsd_memory);
  EXPECT_TRUE(ref::throws_naming([&] {
    attn::cascade_attention(bhsd.q.cview(), pk.cview(), pv.cview(), bhsd.k.cview(), bhsd.v.cview(), bhsd.out.view,
                            bhsd.lse.view, opt);
  }, {"q", "token-major"}));
  EXPECT_TRUE(ref::throws_naming([&] {
    attn::cascade_attention(r.q.cview(), pk.cview(), r.v.cview(), r.k.cview(), r.v.cview(), r.out.view, r.lse.view, opt);
  }, {"prefix_v"}));
  EXPECT_TRUE(untouched());
}

}  // namespace serving_test
