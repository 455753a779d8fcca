// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Latent attention (DeepSeek MLA in absorbed form, DESIGN §2) over contiguous
// and paged caches against the fp64 oracle, typed over every backend of the
// registry, each run on the serial executor and on OpenMP with two threads.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/latent_reference.hpp"
#include "reference/random.hpp"

namespace latent_test {

using attn::index_t;
namespace ref = attn::ref;

constexpr float sentinel = -1234.5f;  // fills outputs: untouched memory keeps it
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();
constexpr float neg_inf = -std::numeric_limits<float>::infinity();
// DeepSeek-V3's scale: 1 / sqrt(128 + 64), the up-projected head's width.
const float deepseek_scale = 1.0f / std::sqrt(192.0f);

// f(exec) on the serial executor and on OpenMP with two threads (which splits
// the keys of a problem with fewer work items than twice its threads).
template <class F>
void on_each_executor(F&& f) {
  {
    SCOPED_TRACE(ref::serial_exec::name);
    f(ref::serial_exec::make());
  }
  {
    SCOPED_TRACE(ref::openmp2_exec::name);
    f(ref::openmp2_exec::make());
  }
}

constexpr index_t ceil_div(index_t x, index_t m) { return (x + m - 1) / m; }

// True when every element of an output's storage still holds the sentinel.
bool untouched(const std::vector<float>& storage) {
  return std::all_of(storage.begin(), storage.end(), [](float x) { return x == sentinel; });
}

// ---------------------------------------------------------------------------
// One problem: shapes, options and memory layouts.

struct shape {
  index_t b, nq, h, nk, d, dc;  // d = Dc + Dr: the cache row; values: its first dc channels
};

struct spec {
  shape s{};
  bool causal = false;
  std::vector<std::int32_t> lengths{};  // (B), or empty: every sequence has Nk keys
  float scale = deepseek_scale;
  bool with_lse = true;
  ref::layout4 q_mem = ref::bshd_memory, cache_mem = ref::bshd_memory, out_mem = ref::bshd_memory;
  ref::layout3 lse_mem = ref::bsh_memory;
};

std::string describe(const spec& c) {
  std::ostringstream s;
  s << "B=" << c.s.b << " Nq=" << c.s.nq << " H=" << c.s.h << " Nk=" << c.s.nk << " D=" << c.s.d
    << " dc=" << c.s.dc << (c.causal ? " causal" : "") << " scale=" << c.scale;
  if (!c.lengths.empty()) {
    s << " lengths={";
    for (std::size_t b = 0; b < c.lengths.size(); ++b) s << (b ? ", " : "") << c.lengths[b];
    s << "}";
  }
  if (!c.with_lse) s << " no-lse";
  return s.str();
}

std::uint64_t seed_of(const std::string& text) {
  std::uint64_t h = 1469598103934665603ull;
  for (char ch : text) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return h;
}

// out and lse of one call, filled with the sentinel beforehand.
struct outputs {
  ref::tensor4 out;  // (B, Nq, H, dc)
  ref::tensor3 lse;  // (B, Nq, H)
};

// Inputs of one spec. Cache rows past a sequence's length hold NaN: they are
// never keys, so a call that reads one poisons its output.
struct run {
  spec c;
  ref::tensor4 q, cache;
  outputs res;

  explicit run(const spec& c_) : c(c_) {
    ref::rng g(seed_of(describe(c)));
    const shape& s = c.s;
    q = ref::random<4>(g, {s.b, s.nq, s.h, s.d}, c.q_mem);
    cache = ref::random<4>(g, {s.b, s.nk, 1, s.d}, c.cache_mem);
    for (index_t b = 0; b < s.b; ++b)
      for (index_t j = keys_of(b); j < s.nk; ++j) ref::inject_nan_row(cache.view, b, j, 0);
    res = fresh_outputs();
  }

  index_t keys_of(index_t b) const {
    return c.lengths.empty() ? c.s.nk : c.lengths[static_cast<std::size_t>(b)];
  }
  outputs fresh_outputs() const {
    const shape& s = c.s;
    return {ref::filled<4>({s.b, s.nq, s.h, s.dc}, c.out_mem, sentinel),
            ref::filled<3>({s.b, s.nq, s.h}, c.lse_mem, sentinel)};
  }
  attn::latent_options options() const {
    attn::latent_options opt;
    opt.scale = c.scale;
    opt.dc = c.s.dc;
    opt.causal = c.causal;
    opt.lengths = c.lengths;
    return opt;
  }
  attn::view3<float> lse_arg(outputs& o) const {
    return c.with_lse ? o.lse.view : attn::view3<float>{};
  }

  // The contiguous call into res.
  template <class B, class Exec>
  void compute(const Exec& exec) {
    res = fresh_outputs();
    attn::latent_attention<B>(q.cview(), cache.cview(), res.out.view, lse_arg(res), options(),
                              exec);
  }

  ref::softmax_result oracle() const { return oracle_over(cache.cview()); }
  ref::softmax_result oracle_over(attn::view4<const float> logical_cache) const {
    return ref::latent_attention(q.cview(), logical_cache, c.s.dc, c.scale, c.lengths, c.causal);
  }

  // o matches the oracle; padding (and an lse that was not asked for) is untouched.
  void expect_matches(const outputs& o, const ref::softmax_result& want) const {
    const attn::view3<const float> lse = c.with_lse ? o.lse.cview() : attn::view3<const float>{};
    EXPECT_TRUE(ref::within_contract(o.out.cview(), lse, want));
    EXPECT_TRUE(o.out.padding_holds(sentinel)) << "out was written outside its view";
    if (c.with_lse) {
      EXPECT_TRUE(o.lse.padding_holds(sentinel)) << "lse was written outside its view";
    } else {
      EXPECT_TRUE(untouched(o.lse.storage)) << "lse memory written although no lse view was given";
    }
  }
  void expect_matches(const ref::softmax_result& want) const { expect_matches(res, want); }
};

// The contiguous call on both executors against the oracle.
template <class B>
void expect_oracle(const spec& c) {
  SCOPED_TRACE(describe(c));
  run r(c);
  const ref::softmax_result want = r.oracle();
  on_each_executor([&](const auto& exec) {
    r.compute<B>(exec);
    r.expect_matches(want);
  });
}

// ---------------------------------------------------------------------------
// A paged copy of a run's cache (FlashMLA's layout).

struct paging {
  index_t page_size;
  index_t spare_pages = 3;                   // pool pages no sequence uses (NaN)
  ref::layout4 pool_mem = ref::bshd_memory;  // of the (P, page_size, 1, D) pool
  index_t table_pad = 0;                     // int32s after every block-table row
  bool share_first_page = false;             // sequence 1 reads sequence 0's first page
};

std::string describe(const paging& pg) {
  return "page_size=" + std::to_string(pg.page_size) + " spare=" + std::to_string(pg.spare_pages) +
         (pg.table_pad ? " table_pad=" + std::to_string(pg.table_pad) : "") +
         (pg.share_first_page ? " shared first page" : "");
}

// Each sequence's first lengths[b] cache rows cut into pages, the pages in
// shuffled order in a pool with spare ones. What a call must never read holds
// NaN (spare pages, the rows of a sequence's last page past its length) or an
// out-of-range index (the table slots past a sequence's last page).
struct paged_copy {
  ref::tensor4 pool;                // (P, page_size, 1, D)
  std::vector<std::int32_t> table;  // (B, max_pages), rows table_stride apart
  index_t batch = 0, max_pages = 0, table_stride = 0;

  attn::strided_view<const std::int32_t, 2> block_table() const {
    return {table.data(), {batch, max_pages}, {table_stride, 1}};
  }
  attn::paged_cache cache() const { return {pool.cview(), block_table()}; }
};

// A shared prefix: sequence 1's rows of the first page become sequence 0's
// (which must hold at least as many keys in that page).
void share_first_page(run& r, index_t page_size) {
  const index_t rows = std::min(page_size, r.keys_of(1));
  ASSERT_GE(r.keys_of(0), rows) << "sequence 0 must fill what sequence 1 reads of the shared page";
  for (index_t j = 0; j < rows; ++j)
    for (index_t d = 0; d < r.c.s.d; ++d) r.cache.view(1, j, 0, d) = r.cache.view(0, j, 0, d);
}

paged_copy page_out(const run& r, const paging& pg) {
  const index_t batch = r.c.s.b, ps = pg.page_size, d = r.c.s.d;
  paged_copy p;
  p.batch = batch;
  p.max_pages = ceil_div(r.c.s.nk, ps);
  p.table_stride = p.max_pages + pg.table_pad;
  index_t used = 0;
  for (index_t b = 0; b < batch; ++b) used += ceil_div(r.keys_of(b), ps);
  const index_t pool_pages = used + pg.spare_pages;
  std::vector<std::int32_t> order(static_cast<std::size_t>(pool_pages));
  std::iota(order.begin(), order.end(), 0);
  ref::rng g(seed_of(describe(r.c) + describe(pg)));
  for (index_t n = pool_pages - 1; n > 0; --n)  // Fisher-Yates
    std::swap(order[static_cast<std::size_t>(n)], order[static_cast<std::size_t>(g.between(0, n))]);

  p.pool = ref::filled<4>({pool_pages, ps, 1, d}, pg.pool_mem, qnan);
  p.table.assign(static_cast<std::size_t>(std::max<index_t>(batch * p.table_stride, 1)), -7);
  std::size_t next = 0;
  for (index_t b = 0; b < batch; ++b)
    for (index_t page = 0; page < p.max_pages; ++page) {
      std::int32_t& slot = p.table[static_cast<std::size_t>(b * p.table_stride + page)];
      if (page * ps >= r.keys_of(b)) {  // never read: alternately -1 and past the pool
        slot = page % 2 ? -1 : static_cast<std::int32_t>(pool_pages + page);
        continue;
      }
      slot = order[next++];
      if (pg.share_first_page && b == 1 && page == 0) slot = p.table[0];
      for (index_t j = page * ps; j < std::min((page + 1) * ps, r.keys_of(b)); ++j)
        for (index_t c = 0; c < d; ++c) p.pool.view(slot, j % ps, 0, c) = r.cache.view(b, j, 0, c);
    }
  return p;
}

// The KV tile of a paged call (core/main_loop.hpp, work_split): the largest
// divisor of the page size up to the backend's tile, unless that is below
// attn::detail::min_page_tile keys (tiny or prime pages): then the backend's
// tile, those crossing a page gathered. A contiguous latent call (one kv
// head) uses the backend's tile.
template <class B>
index_t paged_tile_keys(index_t page_size) {
  index_t divisor = B::kv_tile;
  while (page_size % divisor != 0) --divisor;
  return divisor >= attn::detail::min_page_tile ? divisor : index_t{B::kv_tile};
}

template <class B, class Exec>
outputs compute_paged(const run& r, const paged_copy& p, const Exec& exec) {
  outputs o = r.fresh_outputs();
  attn::latent_attention<B>(r.q.cview(), p.cache(), o.out.view, r.lse_arg(o), r.options(), exec);
  return o;
}

// The paged call against the oracle and against the contiguous call over the
// same rows, whose Nk is the table's capacity (so both cut the keys into the
// same splits). With the same KV tiles, read in place or gathered, both do
// the same arithmetic in the same order: the same bits.
template <class B>
void expect_paged_matches_contiguous(const spec& c, const paging& pg) {
  SCOPED_TRACE(describe(c) + " " + describe(pg));
  ASSERT_EQ(c.s.nk % pg.page_size, 0) << "Nk must be the table's capacity";
  run r(c);
  if (pg.share_first_page) share_first_page(r, pg.page_size);
  const paged_copy p = page_out(r, pg);
  // The oracle reads the rows through the block table (ref::unpaged).
  const ref::tensor4 logical = ref::unpaged(p.pool.cview(), p.block_table(), c.lengths);
  const ref::softmax_result want = r.oracle_over(logical.cview());
  const bool same_tiles = paged_tile_keys<B>(pg.page_size) == B::kv_tile;
  on_each_executor([&](const auto& exec) {
    r.compute<B>(exec);
    r.expect_matches(want);
    const outputs paged = compute_paged<B>(r, p, exec);
    r.expect_matches(paged, want);
    if (same_tiles) {
      EXPECT_EQ(ref::compare<4>(paged.out.cview(), r.res.out.cview()).different_bits, 0)
          << "paged and contiguous calls with the same KV tiles differ";
      EXPECT_EQ(ref::compare<3>(paged.lse.cview(), r.res.lse.cview()).different_bits, 0)
          << "paged and contiguous calls with the same KV tiles differ";
    }
  });
}

// ---------------------------------------------------------------------------
// q, the cache and out stored in 16 bits (README, "Reduced precision"):
// against the oracle on the rounded inputs, with the output type's contract.

// page_size 0: the contiguous cache; else a paged copy, pages in reverse order.
template <class B, class Q, class C, class O>
void expect_stored(const spec& c, index_t page_size = 0) {
  SCOPED_TRACE(describe(c) + " q " + attn::element_name<Q>() + " cache " + attn::element_name<C>() + " out " +
               attn::element_name<O>() + (page_size ? " page_size=" + std::to_string(page_size) : ""));
  run r(c);
  const std::vector<Q> q = ref::rounded<Q>(r.q);
  const std::vector<C> cache = ref::rounded<C>(r.cache);
  std::vector<O> out = ref::rounded<O>(r.res.out);
  const attn::view4<const Q> qv{q.data(), r.q.view.extent, r.q.view.stride};
  const attn::view4<O> ov{out.data(), r.res.out.view.extent, r.res.out.view.stride};
  attn::latent_options opt = r.options();
  if (page_size == 0) {
    attn::latent_attention<B>(qv, attn::view4<const C>{cache.data(), r.cache.view.extent, r.cache.view.stride}, ov,
                              r.lse_arg(r.res), opt, attn::openmp{2});
  } else {
    const shape& s = c.s;
    const index_t per_seq = ceil_div(s.nk, page_size), pages = s.b * per_seq;
    std::vector<C> pool(static_cast<std::size_t>(pages * page_size * s.d));
    std::vector<std::int32_t> table(static_cast<std::size_t>(pages));
    for (index_t n = 0; n < pages; ++n) table[static_cast<std::size_t>(n)] = static_cast<std::int32_t>(pages - 1 - n);
    for (index_t b = 0; b < s.b; ++b)
      for (index_t j = 0; j < s.nk; ++j)
        for (index_t d = 0; d < s.d; ++d)
          pool[static_cast<std::size_t>((table[static_cast<std::size_t>(b * per_seq + j / page_size)] * page_size +
                                         j % page_size) * s.d + d)] =
              cache[static_cast<std::size_t>(&r.cache.view(b, j, 0, d) - r.cache.view.data)];
    std::vector<std::int32_t> lengths = c.lengths;
    if (lengths.empty()) lengths.assign(static_cast<std::size_t>(s.b), static_cast<std::int32_t>(s.nk));
    opt.lengths = lengths;
    const attn::typed_paged_cache<C> paged{attn::bshd<const C>(pool.data(), pages, page_size, 1, s.d),
                                           {table.data(), {s.b, per_seq}, {per_seq, 1}}};
    attn::latent_attention<B>(qv, paged, ov, r.lse_arg(r.res), opt, attn::openmp{2});
  }
  for (std::size_t n = 0; n < out.size(); ++n) r.res.out.storage[n] = attn::to_float(out[n]);
  const ref::tolerance tol = ref::storage_contract<O>();
  const attn::view3<const float> lse = c.with_lse ? r.res.lse.cview() : attn::view3<const float>{};
  EXPECT_TRUE(ref::within_contract(r.res.out.cview(), lse, r.oracle(), tol));
  EXPECT_TRUE(r.res.out.padding_holds(attn::to_float(attn::from_float<O>(sentinel))))
      << "out was written outside its view";
}

template <class B>
class LatentStorageTest : public ::testing::Test {};
TYPED_TEST_SUITE(LatentStorageTest, ref::backend_types, ref::backend_name);

TYPED_TEST(LatentStorageTest, MixedTypesContiguousAndPaged) {
  using attn::bfloat16, attn::float16;
  spec decode{{2, 1, 16, 300, 96, 64}};
  decode.lengths = {300, 171};
  spec prefill{{1, 5, 8, 140, 72, 48}, true};
  expect_stored<TypeParam, bfloat16, float16, bfloat16>(decode);
  expect_stored<TypeParam, bfloat16, float16, bfloat16>(decode, 64);
  expect_stored<TypeParam, bfloat16, float16, bfloat16>(prefill, 7);  // tiles cross pages: gathered
}

TEST(LatentStorage, Bfloat16CacheUnderFloatQueries) {
  spec decode{{1, 2, 128, 1000, 576, 512}, true};
  expect_stored<attn::default_backend, float, attn::bfloat16, float>(decode);
  expect_stored<attn::default_backend, float, attn::bfloat16, float>(decode, 64);
}

// ---------------------------------------------------------------------------
// Contiguous cache against the oracle.

template <class B>
class LatentTest : public ::testing::Test {};
TYPED_TEST_SUITE(LatentTest, ref::backend_types, ref::backend_name);

// Decode and multi-token decode (H = 16) with Nk around every KV tile edge.
TYPED_TEST(LatentTest, KeyCountsAroundTileEdges) {
  constexpr index_t kv = TypeParam::kv_tile;
  std::set<index_t> nks{1, 2, 13, 63, 64, 65, 127, 128, 129, 191, 193, 255, 257, 383, 385};
  for (index_t n : {kv - 1, kv, kv + 1, 2 * kv - 1, 2 * kv + 1}) nks.insert(n);
  for (index_t nk : nks) {
    expect_oracle<TypeParam>({.s = {2, 1, 16, nk, 40, 32}});
    expect_oracle<TypeParam>({.s = {1, 2, 16, nk, 40, 32}, .causal = true});
    expect_oracle<TypeParam>({.s = {1, 4, 16, nk, 40, 32}, .causal = nk % 2 == 1});
  }
  // One sequence of decode on two threads: the keys are split and merged.
  expect_oracle<TypeParam>({.s = {1, 1, 16, 2000, 40, 32}});
  expect_oracle<TypeParam>({.s = {1, 4, 16, 1001, 40, 32}, .causal = true});
}

// Per-sequence lengths in one batch, 0 and 1 among them.
TYPED_TEST(LatentTest, RaggedLengths) {
  constexpr index_t kv = TypeParam::kv_tile;
  const std::vector<std::int32_t> lengths{0, 1, 300, 37, static_cast<std::int32_t>(kv),
                                          static_cast<std::int32_t>(kv + 1)};
  for (index_t nq : {1, 3})
    for (bool causal : {false, true})
      expect_oracle<TypeParam>(
          {.s = {6, nq, 16, 300, 40, 32}, .causal = causal, .lengths = lengths});
  // Every sequence at the capacity, and every sequence empty.
  expect_oracle<TypeParam>({.s = {2, 2, 16, 129, 40, 32}, .causal = true, .lengths = {129, 129}});
  expect_oracle<TypeParam>({.s = {2, 2, 16, 129, 40, 32}, .lengths = {0, 0}});
  // Decode of one or two sequences: two threads split the keys, and splits
  // without a key merge away (or leave an empty row).
  expect_oracle<TypeParam>({.s = {1, 1, 16, 1000, 40, 32}, .lengths = {0}});
  expect_oracle<TypeParam>({.s = {2, 1, 16, 1000, 40, 32}, .lengths = {0, 1000}});
  expect_oracle<TypeParam>({.s = {1, 4, 16, 1000, 40, 32}, .causal = true, .lengths = {2}});
}

// H = 128 (DeepSeek-V3 unsharded: one tile of every head), and head counts
// below, at and above the vector widths (a tile of fewer rows than a vector
// takes the by-rows score kernel).
TYPED_TEST(LatentTest, HeadCounts) {
  for (index_t nq : {1, 2}) {
    expect_oracle<TypeParam>({.s = {1, nq, 128, 1, 40, 32}});
    expect_oracle<TypeParam>(
        {.s = {2, nq, 128, 129, 40, 32}, .causal = true, .lengths = {129, 70}});
    expect_oracle<TypeParam>({.s = {1, nq, 128, 300, 40, 32}, .causal = nq == 2});
  }
  for (index_t h : {1, 3, 4, 8, 17, 48})
    expect_oracle<TypeParam>({.s = {2, 3, h, 150, 48, 32}, .causal = true, .lengths = {150, 61}});
  // More heads than the 128 rows of a latent tile: one tile of every head.
  expect_oracle<TypeParam>({.s = {1, 3, 130, 200, 40, 32}, .causal = true, .lengths = {150}});
  expect_oracle<TypeParam>({.s = {2, 2, 256, 100, 40, 32}, .causal = true});
}

// Row widths and latent channels: dc = D, dc = 1, widths that are not a
// multiple of any vector width, and the DeepSeek row (576 = 512 + 64).
TYPED_TEST(LatentTest, ChannelCounts) {
  const std::pair<index_t, index_t> dims[] = {{40, 40}, {40, 1}, {37, 29},
                                              {33, 32}, {8, 5},  {64, 48}};
  for (const auto& [d, dc] : dims) {
    expect_oracle<TypeParam>({.s = {2, 1, 16, 131, d, dc}, .lengths = {131, 64}});
    expect_oracle<TypeParam>({.s = {1, 3, 16, 70, d, dc}, .causal = true});
  }
  for (float scale : {1.0f, 0.05f, 0.0f, -0.3f})
    expect_oracle<TypeParam>({.s = {1, 2, 16, 100, 40, 32}, .causal = true, .scale = scale});
}

TYPED_TEST(LatentTest, DeepSeekShapes) {
  expect_oracle<TypeParam>({.s = {2, 1, 16, 300, 576, 512}, .lengths = {300, 129}});
  expect_oracle<TypeParam>({.s = {1, 2, 128, 130, 576, 512}, .causal = true});
  expect_oracle<TypeParam>({.s = {1, 1, 16, 1000, 576, 512}});  // split over two threads
}

// Chunked prefill: a chunk of Nq = 37 queries at the end of each sequence's
// keys. A sequence shorter than the chunk leaves its first queries without a
// key: out exactly 0, lse -inf.
TYPED_TEST(LatentTest, CausalChunkedPrefill) {
  using B = TypeParam;
  const spec c{.s = {5, 37, 16, 128, 40, 32}, .causal = true, .lengths = {37, 100, 20, 0, 128}};
  expect_oracle<B>(c);
  expect_paged_matches_contiguous<B>(c, {.page_size = 16});
  // The empty rows explicitly.
  run r(c);
  r.compute<B>(attn::serial{});
  for (index_t b = 0; b < c.s.b; ++b)
    for (index_t i = 0; i < c.s.nq; ++i) {
      const index_t seen = std::clamp<index_t>(i + r.keys_of(b) - c.s.nq + 1, 0, r.keys_of(b));
      if (seen > 0) continue;
      for (index_t h = 0; h < c.s.h; ++h) {
        SCOPED_TRACE("b=" + std::to_string(b) + " i=" + std::to_string(i) +
                     " h=" + std::to_string(h));
        for (index_t d = 0; d < c.s.dc; ++d) ASSERT_EQ(r.res.out.view(b, i, h, d), 0.0f);
        ASSERT_EQ(r.res.lse.view(b, i, h), neg_inf);
      }
    }
  // Without lengths the chunk sits at the end of the Nk keys, Nq > Nk too.
  for (index_t nk : {37, 100, 20})
    expect_oracle<B>({.s = {2, 37, 16, nk, 40, 32}, .causal = true});
}

// Any strides: q in BHSD memory, padded cache rows, padded out and lse rows;
// inner strides other than 1; no lse.
TYPED_TEST(LatentTest, StridedViews) {
  using B = TypeParam;
  const ref::layout4 padded_rows{{0, 1, 2, 3}, {0, 0, 0, 5}};  // row stride D + 5
  // PyTorch's q.transpose(1, 2) over BHSD; cache rows padded; out rows padded.
  expect_oracle<B>({.s = {3, 3, 16, 200, 40, 32},
                    .causal = true,
                    .lengths = {200, 5, 129},
                    .q_mem = ref::bhsd_memory,
                    .cache_mem = padded_rows,
                    .out_mem = padded_rows});
  // Padding everywhere (NaN in inputs, a sentinel in outputs).
  expect_oracle<B>({.s = {2, 4, 16, 150, 40, 32},
                    .causal = true,
                    .q_mem = ref::padded_bhsd,
                    .cache_mem = ref::padded_bshd,
                    .out_mem = ref::padded_bshd,
                    .lse_mem = ref::padded_bsh});
  expect_oracle<B>({.s = {1, 1, 128, 300, 576, 512},
                    .q_mem = ref::padded_bhsd,
                    .cache_mem = padded_rows,
                    .out_mem = ref::padded_bhsd,
                    .lse_mem = ref::padded_bsh});
  // Inner stride H for q and out; inner stride 2 for the cache (channels
  // interleaved with NaN: the packing path).
  const ref::layout4 bsdh{{0, 1, 3, 2}, {}};
  {
    const spec c{.s = {2, 2, 16, 140, 40, 32}, .causal = true, .lengths = {140, 77},
                 .q_mem = bsdh, .out_mem = bsdh};
    SCOPED_TRACE(describe(c) + " cache inner stride 2");
    run r(c);
    ref::tensor4 wide = ref::filled<4>({2, 140, 1, 80}, ref::bshd_memory, qnan);
    attn::view4<float> strided{wide.data(), {2, 140, 1, 40}, wide.view.stride};
    strided.stride[3] = 2;
    for (index_t b = 0; b < 2; ++b)
      for (index_t j = 0; j < 140; ++j)
        for (index_t d = 0; d < 40; ++d) strided(b, j, 0, d) = r.cache.view(b, j, 0, d);
    const ref::softmax_result want = r.oracle();
    on_each_executor([&](const auto& exec) {
      outputs o = r.fresh_outputs();
      attn::latent_attention<B>(r.q.cview(), strided, o.out.view, o.lse.view, r.options(), exec);
      r.expect_matches(o, want);
    });
  }
  // Without lse: the same output bits as with it.
  for (const shape& s : {shape{1, 1, 16, 500, 40, 32}, shape{2, 3, 16, 90, 40, 32}}) {
    spec with{.s = s, .causal = true};
    spec without = with;
    without.with_lse = false;
    expect_oracle<B>(without);
    run a(with), b(without);
    std::copy(a.q.storage.begin(), a.q.storage.end(), b.q.storage.begin());
    std::copy(a.cache.storage.begin(), a.cache.storage.end(), b.cache.storage.begin());
    a.compute<B>(attn::openmp{2});
    b.compute<B>(attn::openmp{2});
    EXPECT_EQ(ref::compare<4>(a.res.out.cview(), b.res.out.cview()).different_bits, 0)
        << "asking for lse changed the output: " << describe(with);
  }
}

// ---------------------------------------------------------------------------
// Paged cache: the same answers as the contiguous one.

template <class B>
class LatentPagedTest : public ::testing::Test {};
TYPED_TEST_SUITE(LatentPagedTest, ref::backend_types, ref::backend_name);

// Page sizes of one key, a small prime, powers of two, not a power of two,
// a prime larger than a KV tile (tiles crossing pages are gathered), larger
// than a tile, and exactly the backend's tile (paged and contiguous agree to
// the bit where their tiles are the same); ragged lengths with 0, 1, a full
// page, a page and one, and a long sequence.
TYPED_TEST(LatentPagedTest, MatchesContiguousAndOracle) {
  constexpr index_t kv = TypeParam::kv_tile;
  for (index_t ps : std::set<index_t>{1, 7, 16, 48, 64, 131, 200, kv}) {
    const index_t longest = std::max<index_t>(300, 3 * ps + 7);
    const index_t nk = (ceil_div(longest, ps) + 1) * ps;  // one table slot more than used
    const std::vector<std::int32_t> lengths{0,
                                            1,
                                            static_cast<std::int32_t>(longest),
                                            static_cast<std::int32_t>(ps),
                                            static_cast<std::int32_t>(ps + 1),
                                            37};
    expect_paged_matches_contiguous<TypeParam>({.s = {6, 1, 16, nk, 40, 32}, .lengths = lengths},
                                               {.page_size = ps});
    expect_paged_matches_contiguous<TypeParam>(
        {.s = {6, 3, 16, nk, 40, 32}, .causal = true, .lengths = lengths}, {.page_size = ps});
  }
}

// One sequence of decode (split over two threads), H = 128, DeepSeek rows, a
// shared first page, a padded pool and block table.
TYPED_TEST(LatentPagedTest, DecodeSharedPagesAndPaddedViews) {
  using B = TypeParam;
  constexpr index_t kv = B::kv_tile;
  expect_paged_matches_contiguous<B>({.s = {1, 1, 16, 1024, 40, 32}, .lengths = {1000}},
                                     {.page_size = 64});
  expect_paged_matches_contiguous<B>({.s = {1, 1, 16, 4 * kv, 40, 32}, .lengths = {3 * kv + 5}},
                                     {.page_size = kv});
  expect_paged_matches_contiguous<B>(
      {.s = {2, 2, 128, 192, 40, 32}, .causal = true, .lengths = {150, 191}}, {.page_size = 48});
  expect_paged_matches_contiguous<B>({.s = {2, 1, 16, 256, 576, 512}, .lengths = {256, 100}},
                                     {.page_size = 64});
  expect_paged_matches_contiguous<B>(
      {.s = {3, 2, 16, 320, 40, 32}, .causal = true, .lengths = {200, 150, 20}},
      {.page_size = 64, .share_first_page = true});
  expect_paged_matches_contiguous<B>(
      {.s = {3, 2, 16, 320, 40, 32}, .causal = true, .lengths = {200, 30, 20}},
      {.page_size = 64, .share_first_page = true});
  expect_paged_matches_contiguous<B>(
      {.s = {3, 5, 16, 330, 37, 29}, .causal = true, .lengths = {0, 3, 329}}, {.page_size = 33});
  expect_paged_matches_contiguous<B>(
      {.s = {3, 2, 16, 288, 40, 32},
       .causal = true,
       .lengths = {288, 17, 130},
       .out_mem = ref::padded_bshd,
       .lse_mem = ref::padded_bsh},
      {.page_size = 48, .pool_mem = ref::padded_bshd, .table_pad = 3});
}

// Every sequence reads the same pages through one table row (stride 0): a
// batch of continuations of one prompt.
TYPED_TEST(LatentPagedTest, SequencesSharingOneTableRow) {
  using B = TypeParam;
  const spec c{.s = {3, 2, 16, 256, 40, 32}, .causal = true, .lengths = {256, 100, 5}};
  SCOPED_TRACE(describe(c));
  run r(c);
  for (index_t b = 1; b < c.s.b; ++b)
    for (index_t j = 0; j < r.keys_of(b); ++j)
      for (index_t d = 0; d < c.s.d; ++d) r.cache.view(b, j, 0, d) = r.cache.view(0, j, 0, d);
  const paged_copy p = page_out(r, {.page_size = 64});
  const attn::strided_view<const std::int32_t, 2> one_row{p.table.data(), {3, p.max_pages}, {0, 1}};
  const ref::softmax_result want = r.oracle();
  on_each_executor([&](const auto& exec) {
    outputs o = r.fresh_outputs();
    attn::latent_attention<B>(r.q.cview(), attn::paged_cache{p.pool.cview(), one_row}, o.out.view,
                              o.lse.view, r.options(), exec);
    r.expect_matches(o, want);
  });
}

// ---------------------------------------------------------------------------
// NaN isolation.

template <class B>
class LatentNanTest : public ::testing::Test {};
TYPED_TEST_SUITE(LatentNanTest, ref::backend_types, ref::backend_name);

bool any_nan(const outputs& o) {
  auto is_nan = [](float x) { return std::isnan(x); };
  bool found = false;
  o.out.for_each_offset([&](index_t off) { found = found || is_nan(o.out.view.data[off]); });
  o.lse.for_each_offset([&](index_t off) { found = found || is_nan(o.lse.view.data[off]); });
  return found;
}

// Rows past a sequence's length (NaN in every run here, in the latent and the
// rope channels) are never keys; the last page of a sequence holds NaN past
// its length too.
TYPED_TEST(LatentNanTest, RowsPastTheLengthAreNeverRead) {
  using B = TypeParam;
  for (bool causal : {false, true}) {
    const spec c{.s = {3, 2, 16, 300, 40, 32}, .causal = causal, .lengths = {129, 1, 256}};
    SCOPED_TRACE(describe(c));
    run r(c);
    const ref::softmax_result want = r.oracle();
    for (const paging& pg :
         {paging{.page_size = 1}, paging{.page_size = 48}, paging{.page_size = 100}}) {
      SCOPED_TRACE(describe(pg));
      const paged_copy p = page_out(r, pg);
      on_each_executor([&](const auto& exec) {
        r.compute<B>(exec);
        EXPECT_FALSE(any_nan(r.res)) << "contiguous";
        r.expect_matches(want);
        const outputs paged = compute_paged<B>(r, p, exec);
        EXPECT_FALSE(any_nan(paged)) << "paged";
        r.expect_matches(paged, want);
      });
    }
  }
}

// Causal, a NaN in the rope channels of key j < length: exactly the queries
// whose horizon includes j (every head of them) give NaN.
TYPED_TEST(LatentNanTest, KeyReachesOnlyQueriesThatSeeIt) {
  using B = TypeParam;
  const spec c{.s = {2, 4, 16, 260, 40, 32}, .causal = true, .lengths = {200, 260}};
  const index_t b = 0, length = 200;
  for (index_t j : {index_t{0}, index_t{127}, index_t{128}, length - 3, length - 2, length - 1}) {
    SCOPED_TRACE(describe(c) + " NaN key j=" + std::to_string(j));
    run r(c);
    ref::inject_nan(r.cache.view, b, j, 0, 35);
    const ref::softmax_result want = r.oracle();
    const paged_copy p = page_out(r, {.page_size = 64});
    on_each_executor([&](const auto& exec) {
      r.compute<B>(exec);
      const outputs paged = compute_paged<B>(r, p, exec);
      for (const outputs* o : {static_cast<const outputs*>(&r.res), &paged}) {
        r.expect_matches(*o, want);
        for (index_t bb = 0; bb < c.s.b; ++bb)
          for (index_t i = 0; i < c.s.nq; ++i)
            for (index_t h = 0; h < c.s.h; ++h) {
              const bool sees = bb == b && j <= i + length - c.s.nq;
              const float l = o->lse.view(bb, i, h);
              bool all_nan = std::isnan(l), finite = std::isfinite(l);
              for (index_t d = 0; d < c.s.dc; ++d) {
                all_nan = all_nan && std::isnan(o->out.view(bb, i, h, d));
                finite = finite && std::isfinite(o->out.view(bb, i, h, d));
              }
              if (sees)
                EXPECT_TRUE(all_nan)
                    << "row (b=" << bb << ", i=" << i << ", h=" << h << ") sees the NaN key";
              else
                EXPECT_TRUE(finite)
                    << "row (b=" << bb << ", i=" << i << ", h=" << h << ") does not see it";
            }
      }
    });
  }
}

// A NaN in the query of one head reaches that head's row only (the tile holds
// every head of a position).
TYPED_TEST(LatentNanTest, QueryHeadIsolated) {
  using B = TypeParam;
  for (index_t h : {16, 128}) {
    const spec c{.s = {2, 2, h, 200, 40, 32}, .causal = true, .lengths = {200, 150}};
    const index_t pb = 1, pi = 0, ph = h / 2 + 1;
    SCOPED_TRACE(describe(c));
    run r(c);
    ref::inject_nan(r.q.view, pb, pi, ph, 3);
    const ref::softmax_result want = r.oracle();
    on_each_executor([&](const auto& exec) {
      r.compute<B>(exec);
      r.expect_matches(want);
      for (index_t b = 0; b < c.s.b; ++b)
        for (index_t i = 0; i < c.s.nq; ++i)
          for (index_t hh = 0; hh < h; ++hh) {
            const bool poisoned = b == pb && i == pi && hh == ph;
            bool all_nan = std::isnan(r.res.lse.view(b, i, hh)), finite = !all_nan;
            for (index_t d = 0; d < c.s.dc; ++d) {
              all_nan = all_nan && std::isnan(r.res.out.view(b, i, hh, d));
              finite = finite && std::isfinite(r.res.out.view(b, i, hh, d));
            }
            EXPECT_TRUE(poisoned ? all_nan : finite)
                << "row (b=" << b << ", i=" << i << ", h=" << hh << ")";
          }
    });
  }
}

// ---------------------------------------------------------------------------
// Empty problems: nothing to do, nothing thrown, nothing written.

TYPED_TEST(LatentTest, EmptyProblems) {
  using B = TypeParam;
  for (const shape& s : {shape{0, 2, 16, 8, 40, 32}, shape{2, 0, 16, 8, 40, 32}}) {
    for (bool causal : {false, true}) {
      spec c{.s = s, .causal = causal};
      if (s.b > 0) c.lengths = {8, 3};
      SCOPED_TRACE(describe(c));
      run r(c);
      on_each_executor([&](const auto& exec) {
        EXPECT_NO_THROW(r.compute<B>(exec));
        const paged_copy p = page_out(r, {.page_size = 4});
        outputs paged;
        EXPECT_NO_THROW(paged = compute_paged<B>(r, p, exec));
        EXPECT_TRUE(untouched(paged.out.storage) && untouched(paged.lse.storage));
        EXPECT_TRUE(untouched(r.res.out.storage) && untouched(r.res.lse.storage));
      });
    }
  }
  // No keys at all (Nk = 0, or every length 0 over an empty pool): every row
  // is empty, out exactly 0 and lse -inf.
  for (const spec& c :
       {spec{.s = {2, 2, 16, 0, 40, 32}}, spec{.s = {2, 2, 16, 0, 40, 32}, .causal = true},
        spec{.s = {2, 2, 16, 8, 40, 32}, .causal = true, .lengths = {0, 0}}}) {
    SCOPED_TRACE(describe(c));
    run r(c);
    const ref::softmax_result want = r.oracle();
    on_each_executor([&](const auto& exec) {
      r.compute<B>(exec);
      r.expect_matches(want);
      if (!c.lengths.empty())
        r.expect_matches(compute_paged<B>(r, page_out(r, {.page_size = 4, .spare_pages = 0}), exec),
                         want);
    });
  }
}

// ---------------------------------------------------------------------------
// Invalid arguments: attn::error naming the argument, outputs untouched.

// Small valid arguments: B = 2, Nq = 2, H = 4, Nk = 8, D = 40, dc = 32; a
// pool of 5 pages of 4 rows, two slots per sequence in the table.
struct error_case {
  ref::rng g{11};
  ref::tensor4 q = ref::random_bshd(g, 2, 2, 4, 40);
  ref::tensor4 cache = ref::random_bshd(g, 2, 8, 1, 40);
  ref::tensor4 pool = ref::random_bshd(g, 5, 4, 1, 40);
  std::vector<std::int32_t> table{3, 0, 4, 1};
  std::vector<std::int32_t> lengths{5, 8};
  ref::tensor4 out = ref::filled<4>({2, 2, 4, 32}, ref::bshd_memory, sentinel);
  ref::tensor3 lse = ref::filled<3>({2, 2, 4}, ref::bsh_memory, sentinel);

  attn::latent_options options() const {
    attn::latent_options opt;
    opt.scale = deepseek_scale;
    opt.dc = 32;
    return opt;
  }
  attn::strided_view<const std::int32_t, 2> block_table() const {
    return {table.data(), {2, 2}, {2, 1}};
  }
  attn::paged_cache pages() const { return {pool.cview(), block_table()}; }

  void call_contiguous(const attn::latent_options& opt) {
    attn::latent_attention(q.cview(), cache.cview(), out.view, lse.view, opt);
  }
  void call_paged(const attn::latent_options& opt) {
    attn::latent_attention(q.cview(), pages(), out.view, lse.view, opt);
  }

  // call() throws attn::error whose message contains `message`; out, lse,
  // the cache and the pool keep their contents (inputs hold no NaN).
  template <class F>
  void expect_rejected(F&& call, const std::string& message) {
    SCOPED_TRACE(message);
    std::fill(out.storage.begin(), out.storage.end(), sentinel);
    std::fill(lse.storage.begin(), lse.storage.end(), sentinel);
    const std::vector<float> cache_before = cache.storage, pool_before = pool.storage;
    const std::string got = ref::error_message(call);
    EXPECT_NE(got.find(message), std::string::npos) << "message: \"" << got << "\"";
    EXPECT_TRUE(untouched(out.storage)) << "out written by a rejected call";
    EXPECT_TRUE(untouched(lse.storage)) << "lse written by a rejected call";
    EXPECT_TRUE(cache_before == cache.storage) << "cache written by a rejected call";
    EXPECT_TRUE(pool_before == pool.storage) << "pages written by a rejected call";
  }
};

TEST(LatentErrors, ValidArgumentsAreAccepted) {
  error_case e;
  attn::latent_options opt = e.options();
  EXPECT_NO_THROW(e.call_contiguous(opt));
  opt.lengths = e.lengths;
  opt.causal = true;
  EXPECT_NO_THROW(e.call_contiguous(opt));
  EXPECT_NO_THROW(e.call_paged(opt));
  // A slot past a sequence's last page is never read, so never checked:
  // sequence 0 (4 keys) uses one page of 4.
  e.lengths = {4, 8};
  e.table[1] = -1;
  opt.lengths = e.lengths;
  EXPECT_NO_THROW(e.call_paged(opt));
  e.table[1] = 5;
  EXPECT_NO_THROW(e.call_paged(opt));
}

TEST(LatentErrors, ScaleAndChannels) {
  error_case e;
  attn::latent_options opt = e.options();
  opt.scale.reset();
  e.expect_rejected([&] { e.call_contiguous(opt); }, "scale: expected the model's softmax scale");
  opt.lengths = e.lengths;
  e.expect_rejected([&] { e.call_paged(opt); }, "scale: expected the model's softmax scale");
  for (float bad : {qnan, std::numeric_limits<float>::infinity(), neg_inf}) {
    opt.scale = bad;
    e.expect_rejected([&] { e.call_contiguous(opt); }, "scale: expected a finite value");
  }
  for (index_t dc : {0, -1, 41}) {
    opt = e.options();
    opt.dc = dc;
    e.expect_rejected([&] { e.call_contiguous(opt); },
                      "dc: expected latent channels in [1, Dc + Dr = 40]");
  }
}

TEST(LatentErrors, CacheShape) {
  error_case e;
  const attn::latent_options opt = e.options();
  ref::rng g{3};
  const ref::tensor4 two_heads = ref::random_bshd(g, 2, 8, 2, 40);
  e.expect_rejected(
      [&] { attn::latent_attention(e.q.cview(), two_heads.cview(), e.out.view, e.lse.view, opt); },
      "cache: expected shape (B=2, Nk, 1, Dc + Dr=40), got (2, 8, 2, 40)");
  const ref::tensor4 wide = ref::random_bshd(g, 2, 8, 1, 41);
  e.expect_rejected(
      [&] { attn::latent_attention(e.q.cview(), wide.cview(), e.out.view, e.lse.view, opt); },
      "cache: expected shape (B=2, Nk, 1, Dc + Dr=40), got (2, 8, 1, 41)");
  const ref::tensor4 one_sequence = ref::random_bshd(g, 1, 8, 1, 40);
  e.expect_rejected(
      [&] {
        attn::latent_attention(e.q.cview(), one_sequence.cview(), e.out.view, e.lse.view, opt);
      },
      "cache: expected shape (B=2");
  // The paged pool: one head, the row width of q.
  attn::latent_options paged_opt = opt;
  paged_opt.lengths = e.lengths;
  const ref::tensor4 pool_two_heads = ref::random_bshd(g, 5, 4, 2, 40);
  e.expect_rejected(
      [&] {
        attn::latent_attention(e.q.cview(),
                               attn::paged_cache{pool_two_heads.cview(), e.block_table()},
                               e.out.view, e.lse.view, paged_opt);
      },
      "pages: expected shape (P, page_size, 1, Dc + Dr=40) with page_size >= 1");
  const ref::tensor4 pool_wide = ref::random_bshd(g, 5, 4, 1, 41);
  e.expect_rejected(
      [&] {
        attn::latent_attention(e.q.cview(), attn::paged_cache{pool_wide.cview(), e.block_table()},
                               e.out.view, e.lse.view, paged_opt);
      },
      "pages: expected shape");
}

TEST(LatentErrors, Lengths) {
  error_case e;
  attn::latent_options opt = e.options();
  const std::vector<std::int32_t> three{8, 8, 8}, too_long{3, 9}, negative{-1, 3}, past_table{8, 9};
  opt.lengths = three;
  e.expect_rejected([&] { e.call_contiguous(opt); },
                    "lengths: expected one key count per sequence (B = 2), got 3 counts");
  opt.lengths = too_long;
  e.expect_rejected(
      [&] { e.call_contiguous(opt); },
      "lengths: expected each sequence's key count in [0, Nk = 8], got lengths[1] = 9");
  opt.lengths = negative;
  e.expect_rejected(
      [&] { e.call_contiguous(opt); },
      "lengths: expected each sequence's key count in [0, Nk = 8], got lengths[0] = -1");
  opt.causal = true;
  e.expect_rejected([&] { e.call_paged(opt); }, "got lengths[0] = -1");
  // The paged capacity is the table's: 2 slots of 4 rows.
  opt.lengths = past_table;
  e.expect_rejected(
      [&] { e.call_paged(opt); },
      "lengths: expected each sequence's key count in [0, capacity = 8], got lengths[1] = 9");
  opt.lengths = {};
  e.expect_rejected([&] { e.call_paged(opt); },
                    "lengths: expected one key count per sequence with a paged cache");
}

TEST(LatentErrors, BlockTable) {
  error_case e;
  attn::latent_options opt = e.options();
  opt.lengths = e.lengths;  // {5, 8}: two pages each
  for (const auto& [slot, value] :
       {std::pair<std::size_t, std::int32_t>{1, 5}, {1, -1}, {2, 7}, {3, -2}}) {
    const std::int32_t kept = e.table[slot];
    e.table[slot] = value;
    const std::string where = "block_table(" + std::to_string(slot / 2) + ", " +
                              std::to_string(slot % 2) + ") = " + std::to_string(value);
    e.expect_rejected([&] { e.call_paged(opt); },
                      "block_table: expected page indices in [0, P = 5), got " + where);
    e.table[slot] = kept;
  }
  // Rows of the table: one per sequence, unit inner stride.
  const std::vector<std::int32_t> wide{3, 9, 0, 9, 4, 9, 1, 9};
  const attn::strided_view<const std::int32_t, 2> strided{wide.data(), {2, 2}, {4, 2}};
  e.expect_rejected(
      [&] {
        attn::latent_attention(e.q.cview(), attn::paged_cache{e.pool.cview(), strided}, e.out.view,
                               e.lse.view, opt);
      },
      "block_table: expected shape (B=2, max_pages) with unit inner stride");
  const attn::strided_view<const std::int32_t, 2> one_row{e.table.data(), {1, 2}, {2, 1}};
  e.expect_rejected(
      [&] {
        attn::latent_attention(e.q.cview(), attn::paged_cache{e.pool.cview(), one_row}, e.out.view,
                               e.lse.view, opt);
      },
      "block_table: expected shape (B=2, max_pages)");
}

TEST(LatentErrors, OutputsAndAliasing) {
  error_case e;
  attn::latent_options opt = e.options();
  ref::tensor3 lse_heads = ref::filled<3>({2, 2, 3}, ref::bsh_memory, sentinel);
  e.expect_rejected(
      [&] {
        attn::latent_attention(e.q.cview(), e.cache.cview(), e.out.view, lse_heads.view, opt);
      },
      "lse: expected shape (B=2, Nq=2, H=4), got (2, 2, 3)");
  EXPECT_TRUE(untouched(lse_heads.storage));
  ref::tensor4 out_full_rows = ref::filled<4>({2, 2, 4, 40}, ref::bshd_memory, sentinel);
  e.expect_rejected(
      [&] {
        attn::latent_attention(e.q.cview(), e.cache.cview(), out_full_rows.view, e.lse.view, opt);
      },
      "out: expected shape (B=2, Nq=2, H=4, Dc=32), got (2, 2, 4, 40)");
  EXPECT_TRUE(untouched(out_full_rows.storage));
  // out over the cache's (or the pool's) memory.
  const attn::view4<float> over_cache = attn::bshd(e.cache.data() + 40, 2, 2, 4, 32);
  e.expect_rejected(
      [&] { attn::latent_attention(e.q.cview(), e.cache.cview(), over_cache, e.lse.view, opt); },
      "out: expected memory disjoint from cache");
  attn::latent_options paged_opt = opt;
  paged_opt.lengths = e.lengths;
  const attn::view4<float> over_pool = attn::bshd(e.pool.data() + 100, 2, 2, 4, 32);
  e.expect_rejected(
      [&] { attn::latent_attention(e.q.cview(), e.pages(), over_pool, e.lse.view, paged_opt); },
      "out: expected memory disjoint from pages");
  // lse over the cache or over out.
  const attn::view3<float> lse_over_cache = attn::bsh(e.cache.data() + 7, 2, 2, 4);
  e.expect_rejected(
      [&] {
        attn::latent_attention(e.q.cview(), e.cache.cview(), e.out.view, lse_over_cache, opt);
      },
      "lse: expected memory disjoint from cache");
  const attn::view3<float> lse_over_out = attn::bsh(e.out.data() + 5, 2, 2, 4);
  const std::string got = ref::error_message(
      [&] { attn::latent_attention(e.q.cview(), e.cache.cview(), e.out.view, lse_over_out, opt); });
  EXPECT_NE(got.find("lse: expected memory disjoint from out"), std::string::npos) << got;
}

}  // namespace latent_test
