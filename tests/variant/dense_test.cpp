// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Dense softmax attention against the fp64 oracle, typed over every backend
// of the registry and every executor (serial, OpenMP, a std::thread loop
// behind attn::parallel_for_executor).

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "attn/attn.hpp"
#include "reference/random.hpp"
#include "reference/checks.hpp"

namespace dense_test {

using attn::index_t;
namespace ref = attn::ref;

// ---------------------------------------------------------------------------
// Executors under test.

using attn::ref::thread_loop;
using thread_executor = attn::parallel_for_executor<thread_loop>;
static_assert(attn::executor<thread_executor>, "the std::thread loop must model attn::executor");

using ref::openmp2_exec;
using ref::serial_exec;
// Three threads, so the split-KV cut differs from openmp2's.
struct threads3_exec {
  static constexpr const char* name = "threads3";
  static thread_executor make() { return {3, thread_loop{3}}; }
};

template <class B, class E>
struct config {
  using backend = B;
  using exec = E;
};

// ref::tested_backends x executors -> ::testing::Types<config<B, E>...>.
template <class B, class... E>
using row_of = std::tuple<config<B, E>...>;
template <class Backends, class... E>
struct product;
template <class... B, class... E>
struct product<attn::backend::list<B...>, E...> {
  using tuple = decltype(std::tuple_cat(std::declval<row_of<B, E...>>()...));
};
template <class Tuple>
struct tuple_to_types;
template <class... C>
struct tuple_to_types<std::tuple<C...>> {
  using type = ::testing::Types<C...>;
};
using configs = tuple_to_types<
    product<ref::tested_backends, serial_exec, openmp2_exec, threads3_exec>::tuple>::type;

struct config_name {
  template <class C>
  static std::string GetName(int) {
    return std::string(C::backend::name) + "_" + C::exec::name;
  }
};

// ---------------------------------------------------------------------------
// One problem: shapes, options and memory layouts.

struct shape {
  index_t b, nq, nk, hq, hkv, dk, dv;
};

struct spec {
  shape s{};
  bool causal = false;
  std::optional<float> scale{};
  bool sinks = false;
  bool with_lse = true;
  ref::layout4 q_mem = ref::bshd_memory, k_mem = ref::bshd_memory, v_mem = ref::bshd_memory,
               out_mem = ref::bshd_memory;
  ref::layout3 lse_mem = ref::bsh_memory;
};

std::string describe(const spec& c) {
  std::ostringstream s;
  s << "B=" << c.s.b << " Nq=" << c.s.nq << " Nk=" << c.s.nk << " Hq=" << c.s.hq
    << " Hkv=" << c.s.hkv << " Dk=" << c.s.dk << " Dv=" << c.s.dv << (c.causal ? " causal" : "")
    << (c.scale ? " scale=" + std::to_string(*c.scale) : "") << (c.sinks ? " sinks" : "")
    << (c.with_lse ? "" : " no-lse");
  return s.str();
}

constexpr float sentinel = -1234.5f;  // fills outputs: untouched memory keeps it

// Inputs, outputs and the oracle of one spec.
struct run {
  spec c;
  ref::tensor4 q, k, v, out;
  ref::tensor3 lse;
  std::vector<float> sinks;

  run(const spec& c_, std::uint64_t seed) : c(c_) {
    ref::rng g(seed);
    const shape& s = c.s;
    q = ref::random<4>(g, {s.b, s.nq, s.hq, s.dk}, c.q_mem);
    k = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dk}, c.k_mem);
    v = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dv}, c.v_mem);
    // Sink logits of the size of log(row sum) so that they matter.
    for (index_t h = 0; h < s.hq; ++h)
      sinks.push_back(std::log(static_cast<float>(s.nk) + 1.0f) + g.uniform(-2.0f, 2.0f));
    reset_outputs();
  }

  void reset_outputs() {
    const shape& s = c.s;
    out = ref::filled<4>({s.b, s.nq, s.hq, s.dv}, c.out_mem, sentinel);
    lse = ref::filled<3>({s.b, s.nq, s.hq}, c.lse_mem, sentinel);
  }

  attn::softmax_options options() const {
    attn::softmax_options opt;
    opt.scale = c.scale;
    opt.causal = c.causal;
    opt.sinks = c.sinks ? sinks.data() : nullptr;
    return opt;
  }
  attn::view3<float> lse_arg() const { return c.with_lse ? lse.view : attn::view3<float>{}; }
  attn::view3<const float> lse_result() const {
    return c.with_lse ? lse.cview() : attn::view3<const float>{};
  }

  template <class B, class Exec>
  void compute(const Exec& exec) {
    attn::attention<B>(q.cview(), k.cview(), v.cview(), out.view, lse_arg(), options(), exec);
  }

  ref::softmax_result oracle() const {
    return ref::softmax_attention(q.cview(), k.cview(), v.cview(), options());
  }

  // Outputs match the oracle; padding (and an lse that was not asked for)
  // is untouched.
  void expect_matches(const ref::softmax_result& expected) const {
    EXPECT_TRUE(ref::within_contract(out.cview(), lse_result(), expected));
    EXPECT_TRUE(out.padding_holds(sentinel)) << "out was written outside its view";
    EXPECT_TRUE(lse.padding_holds(sentinel)) << "lse was written outside its view";
    if (!c.with_lse) {
      bool untouched = true;
      for (float x : lse.storage) untouched = untouched && x == sentinel;
      EXPECT_TRUE(untouched) << "lse memory written although no lse view was given";
    }
  }
};

std::uint64_t seed_of(const spec& c) {
  std::uint64_t h = 1469598103934665603ull;
  for (char ch : describe(c)) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return h;
}

template <class C>
void expect_oracle(const spec& c) {
  SCOPED_TRACE(describe(c));
  run r(c, seed_of(c));
  r.compute<typename C::backend>(C::exec::make());
  r.expect_matches(r.oracle());
}

// Each spec with and without the causal mask.
template <class C>
void expect_oracle_both_masks(spec c) {
  c.causal = false;
  expect_oracle<C>(c);
  c.causal = true;
  expect_oracle<C>(c);
}

// ---------------------------------------------------------------------------

template <class C>
class DenseTest : public ::testing::Test {};
TYPED_TEST_SUITE(DenseTest, configs, config_name);

TYPED_TEST(DenseTest, SmallAndPrimeShapes) {
  const shape shapes[] = {
      {1, 1, 1, 1, 1, 8, 8},      {1, 1, 7, 1, 1, 8, 8},      {1, 7, 1, 1, 1, 8, 8},
      {2, 7, 13, 2, 2, 24, 24},   {1, 13, 31, 3, 1, 64, 64},  {1, 31, 97, 2, 2, 8, 8},
      {1, 97, 131, 1, 1, 72, 72}, {1, 131, 97, 2, 1, 24, 24}, {3, 5, 7, 2, 1, 5, 5},
      {2, 13, 13, 7, 7, 13, 7},   {1, 97, 97, 1, 1, 31, 31},
  };
  for (const shape& s : shapes) expect_oracle_both_masks<TypeParam>({.s = s});
}

TYPED_TEST(DenseTest, KvTileEdges) {
  constexpr index_t kv = TypeParam::backend::kv_tile;
  for (index_t nk : {kv - 1, kv, kv + 1, 2 * kv + 1}) {
    expect_oracle_both_masks<TypeParam>({.s = {1, nk, nk, 2, 1, 32, 32}});
    expect_oracle_both_masks<TypeParam>({.s = {2, 5, nk, 2, 2, 16, 16}});
    expect_oracle<TypeParam>({.s = {1, nk + 3, nk, 1, 1, 16, 16}, .causal = true});
  }
}

TYPED_TEST(DenseTest, QueryTileEdges) {
  constexpr index_t rows = TypeParam::backend::query_tile_rows;
  for (index_t nq : {rows - 1, rows, rows + 1, 2 * rows + 1})
    expect_oracle_both_masks<TypeParam>({.s = {1, nq, nq, 1, 1, 16, 16}});
  // GQA groups of exactly one tile, one more head than a tile, and two tiles.
  for (index_t group : {rows, rows + 1, 2 * rows})
    expect_oracle_both_masks<TypeParam>({.s = {1, 3, 40, group, 1, 8, 8}});
}

TYPED_TEST(DenseTest, HeadDims) {
  const std::pair<index_t, index_t> dims[] = {{8, 8},     {24, 24},   {64, 64}, {72, 72},
                                              {128, 128}, {192, 128}, {5, 5},   {33, 33},
                                              {64, 5},    {16, 33},   {1, 1}};
  for (const auto& [dk, dv] : dims)
    expect_oracle_both_masks<TypeParam>({.s = {1, 37, 45, 2, 1, dk, dv}});
  // DeepSeek MLA sizes (absorbed): 576 = 512 + 64, small N.
  expect_oracle_both_masks<TypeParam>({.s = {1, 9, 40, 4, 1, 576, 512}});
}

TYPED_TEST(DenseTest, DecodeAgainstLongCache) {
  expect_oracle_both_masks<TypeParam>({.s = {1, 1, 1000, 8, 2, 64, 64}});
  expect_oracle<TypeParam>({.s = {1, 1, 1000, 32, 8, 128, 128}, .causal = true});
  expect_oracle<TypeParam>({.s = {2, 1, 1000, 4, 1, 33, 33}, .causal = true, .sinks = true});
  // Speculative decode: a few queries at the end of the cache.
  expect_oracle<TypeParam>({.s = {1, 4, 1000, 4, 2, 64, 64}, .causal = true});
  // Many kv heads per work item (the decode KV tile shrinks with them), Dk a
  // multiple of every vector width or not.
  expect_oracle<TypeParam>({.s = {1, 1, 1000, 32, 32, 64, 64}, .causal = true});
  expect_oracle<TypeParam>({.s = {2, 1, 333, 16, 16, 72, 40}});
  expect_oracle<TypeParam>({.s = {1, 3, 500, 8, 2, 64, 64}, .causal = true, .sinks = true});
  expect_oracle<TypeParam>({.s = {1, 5, 500, 8, 2, 33, 64}, .causal = true});
  expect_oracle<TypeParam>({.s = {2, 2, 700, 16, 4, 128, 128}, .causal = true});
  // Query rows per kv head around the vector widths (4, 8, 16).
  for (index_t group : {3, 4, 5, 8, 9, 16, 17})
    expect_oracle<TypeParam>({.s = {1, 1, 400, 2 * group, 2, 64, 48}, .causal = true});
}

TYPED_TEST(DenseTest, LargeDecodeSplitKv) {
  expect_oracle<TypeParam>({.s = {1, 1, 5000, 8, 1, 128, 128}, .causal = true});
  expect_oracle<TypeParam>({.s = {1, 2, 5000, 2, 1, 64, 64}, .causal = true, .sinks = true});
}

TYPED_TEST(DenseTest, GroupedQueryHeads) {
  const shape shapes[] = {
      {2, 17, 33, 8, 2, 32, 32},   // GQA
      {1, 17, 33, 8, 1, 32, 32},   // MQA
      {1, 1, 300, 32, 8, 64, 64},  // decode, Llama-style group of 4
      {1, 3, 70, 128, 1, 16, 16},  // a group larger than a query tile
      {2, 11, 23, 6, 3, 24, 16},
  };
  for (const shape& s : shapes) expect_oracle_both_masks<TypeParam>({.s = s});
}

TYPED_TEST(DenseTest, CausalMoreQueriesThanKeys) {
  using B = typename TypeParam::backend;
  for (bool sinks : {false, true}) {
    const spec c{.s = {2, 20, 7, 4, 2, 16, 8}, .causal = true, .sinks = sinks};
    SCOPED_TRACE(describe(c));
    run r(c, seed_of(c));
    r.compute<B>(TypeParam::exec::make());
    r.expect_matches(r.oracle());
    // Rows i < Nq - Nk see no key: out exactly 0, lse -inf (sigma_h with a sink).
    for (index_t b = 0; b < c.s.b; ++b)
      for (index_t i = 0; i < c.s.nq - c.s.nk; ++i)
        for (index_t h = 0; h < c.s.hq; ++h) {
          for (index_t d = 0; d < c.s.dv; ++d) ASSERT_EQ(r.out.view(b, i, h, d), 0.0f);
          if (sinks)
            ASSERT_EQ(r.lse.view(b, i, h), r.sinks[h]);
          else
            ASSERT_EQ(r.lse.view(b, i, h), -std::numeric_limits<float>::infinity());
        }
  }
}

TYPED_TEST(DenseTest, CustomScale) {
  for (float scale : {1.0f, 0.5f, 2.0f, 0.0f, -0.3f, 1.0f / 13.856406f})
    expect_oracle_both_masks<TypeParam>({.s = {1, 19, 29, 4, 2, 48, 48}, .scale = scale});
}

TYPED_TEST(DenseTest, MemoryLayouts) {
  const shape s{2, 23, 41, 4, 2, 24, 20};
  // BHSD memory (PyTorch's default) for every tensor.
  expect_oracle_both_masks<TypeParam>({.s = s,
                                       .q_mem = ref::bhsd_memory,
                                       .k_mem = ref::bhsd_memory,
                                       .v_mem = ref::bhsd_memory,
                                       .out_mem = ref::bhsd_memory});
  // Innermost stride != 1 for K and V (the packing paths); out too.
  expect_oracle_both_masks<TypeParam>(
      {.s = s, .k_mem = ref::bsdh_memory, .v_mem = ref::bsdh_memory, .out_mem = ref::bsdh_memory});
  // Padded, non-contiguous views everywhere (input padding is NaN, output
  // padding a sentinel that must survive).
  expect_oracle_both_masks<TypeParam>({.s = s,
                                       .q_mem = ref::padded_bshd,
                                       .k_mem = ref::padded_bhsd,
                                       .v_mem = ref::padded_bshd,
                                       .out_mem = ref::padded_bshd,
                                       .lse_mem = ref::padded_bsh});
  expect_oracle<TypeParam>({.s = {1, 1, 700, 8, 2, 64, 64},
                            .causal = true,
                            .k_mem = ref::padded_bhsd,
                            .v_mem = ref::padded_bhsd,
                            .out_mem = ref::padded_bhsd,
                            .lse_mem = ref::padded_bsh});
  // Decode-shaped tiles (queries packed by rows) with q and out channels
  // strided.
  expect_oracle<TypeParam>({.s = {1, 1, 700, 8, 2, 64, 64},
                            .causal = true,
                            .q_mem = ref::bsdh_memory,
                            .out_mem = ref::bsdh_memory});
}

TYPED_TEST(DenseTest, LseIsOptional) {
  using B = typename TypeParam::backend;
  for (const shape& s : {shape{1, 1, 600, 4, 1, 32, 32}, shape{2, 33, 47, 4, 2, 16, 16}}) {
    spec with{.s = s, .causal = true};
    spec without = with;
    without.with_lse = false;
    SCOPED_TRACE(describe(without));
    run a(with, 7), b(without, 7);
    a.compute<B>(TypeParam::exec::make());
    b.compute<B>(TypeParam::exec::make());
    b.expect_matches(b.oracle());
    const ref::difference d = ref::compare<4>(a.out.cview(), b.out.cview());
    EXPECT_EQ(d.different_bits, 0) << "asking for lse changed the output";
  }
}

TYPED_TEST(DenseTest, SinkLogits) {
  expect_oracle_both_masks<TypeParam>({.s = {1, 31, 31, 4, 2, 32, 32}, .sinks = true});
  expect_oracle_both_masks<TypeParam>({.s = {2, 9, 150, 8, 1, 16, 16}, .sinks = true});
  expect_oracle<TypeParam>({.s = {1, 1, 900, 8, 8, 64, 64}, .causal = true, .sinks = true});
  expect_oracle<TypeParam>({.s = {1, 13, 40, 2, 2, 8, 8}, .sinks = true, .with_lse = false});
}

// ---------------------------------------------------------------------------
// NaN isolation: a NaN in key row j reaches exactly the rows that attend j.

template <class C>
class DenseNanTest : public ::testing::Test {};
TYPED_TEST_SUITE(DenseNanTest, configs, config_name);

enum class poisoned { key, value };

// Causal, NaN in (b=1, j, kv head 1). Checks the oracle (which propagates the
// NaN by IEEE arithmetic) and counts the NaN rows explicitly.
template <class C>
void expect_nan_isolated(const shape& s, index_t j, poisoned where) {
  const spec c{.s = s, .causal = true};
  SCOPED_TRACE(describe(c) + (where == poisoned::key ? " NaN in k" : " NaN in v") +
               " at key j=" + std::to_string(j));
  run r(c, seed_of(c));
  const index_t b = 1, g = 1;
  if (where == poisoned::key)
    ref::inject_nan(r.k.view, b, j, g, s.dk / 2);
  else
    ref::inject_nan(r.v.view, b, j, g, s.dv / 2);
  r.compute<typename C::backend>(C::exec::make());
  r.expect_matches(r.oracle());

  const index_t group = s.hq / s.hkv, off = s.nk - s.nq;
  index_t nan_rows = 0, expected_rows = 0;
  for (index_t bb = 0; bb < s.b; ++bb)
    for (index_t i = 0; i < s.nq; ++i)
      for (index_t h = 0; h < s.hq; ++h) {
        const bool attends = bb == b && h / group == g && j <= i + off;
        expected_rows += attends;
        bool any_nan = false, all_nan = true, finite = true;
        for (index_t d = 0; d < s.dv; ++d) {
          const float x = r.out.view(bb, i, h, d);
          any_nan = any_nan || std::isnan(x);
          all_nan = all_nan && std::isnan(x);
          finite = finite && std::isfinite(x);
        }
        nan_rows += any_nan;
        if (!attends) {
          EXPECT_TRUE(finite && std::isfinite(r.lse.view(bb, i, h)))
              << "row (b=" << bb << ", i=" << i << ", h=" << h << ") does not attend key " << j;
        } else if (where == poisoned::key) {
          EXPECT_TRUE(all_nan && std::isnan(r.lse.view(bb, i, h)))
              << "row (b=" << bb << ", i=" << i << ", h=" << h << ") attends the NaN key " << j;
        } else {
          EXPECT_TRUE(std::isnan(r.out.view(bb, i, h, s.dv / 2)))
              << "row (b=" << bb << ", i=" << i << ", h=" << h << ") attends the NaN value " << j;
        }
      }
  EXPECT_EQ(nan_rows, expected_rows);
}

TYPED_TEST(DenseNanTest, NanReachesOnlyRowsThatAttendIt) {
  constexpr index_t kv = TypeParam::backend::kv_tile;
  for (poisoned where : {poisoned::key, poisoned::value}) {
    // Prefill: j on both sides of KV tile edges.
    const shape prefill{2, 2 * kv + 5, 2 * kv + 5, 4, 2, 16, 12};
    for (index_t j : {index_t{0}, kv - 1, kv, kv + 1, 2 * kv, 2 * kv + 4})
      expect_nan_isolated<TypeParam>(prefill, j, where);
    // A few queries at the end of a long cache (the split-KV path with more
    // than one thread): j near tile/split edges and among the last keys.
    const shape decode{2, 3, 4 * kv + 5, 2, 2, 16, 16};
    for (index_t j : {kv - 1, kv, 2 * kv, 3 * kv - 1, 3 * kv, decode.nk - 2, decode.nk - 1})
      expect_nan_isolated<TypeParam>(decode, j, where);
    // Decode with every kv head in one work item: the KV tile is a fraction
    // of kv_tile, so j walks the edges of every power-of-two tile size.
    const shape heads{2, 3, 300, 8, 8, 16, 16};
    for (index_t j : {15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 297, 298, 299})
      expect_nan_isolated<TypeParam>(heads, j, where);
  }
}

// ---------------------------------------------------------------------------
// Executors: every executor gives the serial answer up to summation order
// (split-KV), and every executor is deterministic run to run.

template <class B>
class DenseExecutorTest : public ::testing::Test {};
TYPED_TEST_SUITE(DenseExecutorTest, ref::backend_types, ref::backend_name);

template <class B, class E>
void expect_same_as_serial(const spec& c, const run& serial_run) {
  SCOPED_TRACE(std::string(E::name) + ": " + describe(c));
  run a(c, seed_of(c)), b(c, seed_of(c));
  a.compute<B>(E::make());
  b.compute<B>(E::make());
  EXPECT_EQ(ref::compare<4>(a.out.cview(), b.out.cview()).different_bits, 0) << "not deterministic";
  EXPECT_EQ(ref::compare<3>(a.lse.cview(), b.lse.cview()).different_bits, 0) << "not deterministic";

  const ref::difference d = ref::compare<4>(a.out.cview(), serial_run.out.cview());
  EXPECT_EQ(d.mismatched_nan, 0);
  EXPECT_LE(d.rel_frobenius, 1e-6);
  double max_lse = 0;
  for (float x : serial_run.lse.storage) max_lse = std::max(max_lse, double(std::fabs(x)));
  const ref::difference l = ref::compare<3>(a.lse.cview(), serial_run.lse.cview());
  EXPECT_EQ(l.mismatched_nan, 0);
  EXPECT_LE(l.max_abs, 1e-6 * (1.0 + max_lse));
}

TYPED_TEST(DenseExecutorTest, ThreadCountInvariance) {
  using B = TypeParam;
  const spec specs[] = {
      {.s = {1, 1, 1000, 8, 2, 64, 64}},
      {.s = {2, 1, 1000, 4, 1, 64, 64}, .causal = true, .sinks = true},
      {.s = {1, 5, 700, 4, 4, 32, 32}, .causal = true},
      {.s = {1, 1, 1000, 1, 1, 5, 33}},
      {.s = {1, 150, 150, 4, 2, 64, 64}, .causal = true},
  };
  for (const spec& c : specs) {
    run s1(c, seed_of(c)), s2(c, seed_of(c));
    s1.compute<B>(attn::serial{});
    s2.compute<B>(attn::serial{});
    EXPECT_EQ(ref::compare<4>(s1.out.cview(), s2.out.cview()).different_bits, 0)
        << "serial runs differ: " << describe(c);
    EXPECT_EQ(ref::compare<3>(s1.lse.cview(), s2.lse.cview()).different_bits, 0)
        << "serial runs differ: " << describe(c);
    expect_same_as_serial<B, openmp2_exec>(c, s1);
    expect_same_as_serial<B, threads3_exec>(c, s1);
  }
}

// Every backend agrees with the scalar one (each is also held to the oracle
// by the typed tests above).
template <class B>
class DenseBackendAgreement : public ::testing::Test {};
TYPED_TEST_SUITE(DenseBackendAgreement, ref::backend_types, ref::backend_name);

TYPED_TEST(DenseBackendAgreement, MatchesScalar) {
  const spec specs[] = {
      {.s = {2, 37, 53, 4, 2, 64, 64}, .causal = true},
      {.s = {1, 1, 1000, 8, 1, 128, 128}},
      {.s = {1, 2, 300, 8, 8, 64, 64}, .causal = true},
      {.s = {1, 20, 20, 2, 2, 33, 5}, .sinks = true},
      {.s = {1, 9, 30, 2, 1, 576, 512}, .causal = true},
  };
  for (const spec& c : specs) {
    SCOPED_TRACE(describe(c));
    run a(c, seed_of(c)), b(c, seed_of(c));
    a.compute<attn::backend::scalar>(attn::serial{});
    b.compute<TypeParam>(attn::serial{});
    const ref::difference d = ref::compare<4>(b.out.cview(), a.out.cview());
    double max_v = 0;
    for (float x : a.v.storage)
      if (std::isfinite(x)) max_v = std::max(max_v, double(std::fabs(x)));
    EXPECT_EQ(d.mismatched_nan, 0);
    EXPECT_LE(d.rel_frobenius, 1e-5);
    EXPECT_LE(d.max_abs, 1e-4 * max_v);
    double max_lse = 0;
    for (float x : a.lse.storage) max_lse = std::max(max_lse, double(std::fabs(x)));
    EXPECT_LE(ref::compare<3>(b.lse.cview(), a.lse.cview()).max_abs, 1e-5 * (1.0 + max_lse));
  }
}

// ---------------------------------------------------------------------------
// An empty key/value cache (Nk = 0) passes validation; every row then has no
// allowed key: out 0, lse -inf (sigma_h with a sink). Run in a child process
// so that a crash fails this test instead of ending the test program.

template <class B>
class DenseEmptyCacheDeathTest : public ::testing::Test {};
TYPED_TEST_SUITE(DenseEmptyCacheDeathTest, ref::backend_types, ref::backend_name);

template <class B, class Exec>
bool empty_cache_gives_empty_rows(bool sinks, const Exec& exec) {
  const spec c{.s = {1, 3, 0, 2, 1, 8, 8}, .causal = false, .sinks = sinks};
  run r(c, 1);
  r.compute<B>(exec);
  for (index_t i = 0; i < 3; ++i)
    for (index_t h = 0; h < 2; ++h) {
      for (index_t d = 0; d < 8; ++d)
        if (r.out.view(0, i, h, d) != 0.0f) return false;
      const float want = sinks ? r.sinks[h] : -std::numeric_limits<float>::infinity();
      if (r.lse.view(0, i, h) != want) return false;
    }
  return true;
}

TYPED_TEST(DenseEmptyCacheDeathTest, NoKeysGivesEmptyRows) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  using B = TypeParam;
  EXPECT_EXIT(std::exit(empty_cache_gives_empty_rows<B>(false, attn::serial{}) ? 0 : 1),
              ::testing::ExitedWithCode(0), "")
      << "Nk = 0, serial";
  EXPECT_EXIT(std::exit(empty_cache_gives_empty_rows<B>(true, attn::openmp{2}) ? 0 : 1),
              ::testing::ExitedWithCode(0), "")
      << "Nk = 0, sinks, openmp{2}";
}

}  // namespace dense_test
