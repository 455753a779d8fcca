// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// int8 K/V caches (attn::quantized): attn::quantize's rounding and scales,
// every backend's int8 widening load, and softmax attention over int8 K and
// V against the fp64 oracle on the dequantized inputs (the kernel itself
// adds only fp32 rounding and, in the integer decode score kernel, queries
// rounded to int16), typed over every backend: per-row and per-token
// scales, contiguous, strided and paged, decode and prefill, masks, NaN
// isolation and a long decode; and the accuracy cost of quantizing against
// the unquantized inputs (README, "Reduced precision").

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace quantized_test {

using attn::index_t;
namespace ref = attn::ref;

// ---------------------------------------------------------------------------
// attn::quantize

TEST(Quantize, RoundsEachRowToItsOwnScale) {
  ref::rng g(3);
  ref::tensor4 x = ref::random<4>(g, {2, 5, 3, 37}, ref::padded_bshd, -4.0f, 4.0f);
  x.view(1, 2, 1, 5) = 100.0f;  // one row with a large value: its own scale
  for (index_t d = 0; d < 37; ++d) x.view(0, 1, 2, d) = 0.0f;  // a zero row
  std::vector<std::int8_t> values(2 * 5 * 3 * 37);
  std::vector<float> scales(2 * 5 * 3);
  attn::quantize(x.cview(), attn::bshd(values.data(), 2, 5, 3, 37),
                 attn::view3<float>{scales.data(), {2, 5, 3}, {15, 3, 1}});
  for (index_t b = 0; b < 2; ++b)
    for (index_t j = 0; j < 5; ++j)
      for (index_t h = 0; h < 3; ++h) {
        const float scale = scales[static_cast<std::size_t>((b * 5 + j) * 3 + h)];
        float largest = 0.0f;
        for (index_t d = 0; d < 37; ++d) largest = std::max(largest, std::fabs(x.view(b, j, h, d)));
        ASSERT_EQ(scale, largest / 127.0f);
        for (index_t d = 0; d < 37; ++d) {
          const std::int8_t q = values[static_cast<std::size_t>(((b * 5 + j) * 3 + h) * 37 + d)];
          ASSERT_GE(q, -127);
          ASSERT_LE(std::fabs(x.view(b, j, h, d) - scale * q), scale * 0.5f * (1.0f + 1e-5f))
              << "b=" << b << " j=" << j << " h=" << h << " d=" << d;
        }
      }
  EXPECT_EQ(scales[(0 * 5 + 1) * 3 + 2], 0.0f);  // the zero row
}

TEST(Quantize, OneScalePerTokenSpansItsHeads) {
  ref::rng g(4);
  ref::tensor4 x = ref::random<4>(g, {1, 4, 3, 8}, ref::bshd_memory);
  x.view(0, 2, 2, 7) = -9.0f;
  std::vector<std::int8_t> values(4 * 3 * 8);
  std::vector<float> scales(4);
  attn::quantize(x.cview(), attn::bshd(values.data(), 1, 4, 3, 8),
                 attn::view3<float>{scales.data(), {1, 4, 1}, {4, 1, 1}});
  EXPECT_EQ(scales[2], 9.0f / 127.0f);
  EXPECT_EQ(values[(2 * 3 + 2) * 8 + 7], -127);
  for (index_t j = 0; j < 4; ++j)
    for (index_t h = 0; h < 3; ++h)
      for (index_t d = 0; d < 8; ++d)
        ASSERT_LE(std::fabs(x.view(0, j, h, d) -
                            scales[j] * values[static_cast<std::size_t>((j * 3 + h) * 8 + d)]),
                  scales[j] * 0.5f * (1.0f + 1e-5f));
}

TEST(Quantize, NonFiniteRowGetsNanScaleAndOthersAreUntouched) {
  std::vector<float> x(2 * 4, 0.5f);
  x[5] = std::numeric_limits<float>::infinity();  // row 1
  std::vector<std::int8_t> values(x.size(), 1);
  std::vector<float> scales(2);
  attn::quantize(attn::bshd<const float>(x.data(), 1, 2, 1, 4),
                 attn::bshd(values.data(), 1, 2, 1, 4),
                 attn::view3<float>{scales.data(), {1, 2, 1}, {2, 1, 1}});
  EXPECT_EQ(scales[0], 0.5f / 127.0f);
  EXPECT_TRUE(std::isnan(scales[1]));
  for (int d = 0; d < 4; ++d) {
    EXPECT_EQ(values[static_cast<std::size_t>(d)], 127);
    EXPECT_EQ(values[static_cast<std::size_t>(4 + d)], 0);
  }
}

TEST(Quantize, BadShapesAreRefusedAndNothingIsWritten) {
  std::vector<float> x(2 * 3 * 2 * 4, 1.0f);
  std::vector<std::int8_t> values(x.size(), 7);
  std::vector<float> scales(2 * 3 * 2, -1.0f);
  const auto xv = attn::bshd<const float>(x.data(), 2, 3, 2, 4);
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::quantize(xv, attn::bshd(values.data(), 2, 3, 2, 3),
                       attn::view3<float>{scales.data(), {2, 3, 2}, {6, 2, 1}});
      },
      {"values", "D=4"}));
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::quantize(xv, attn::bshd(values.data(), 2, 3, 2, 4),
                       attn::view3<float>{scales.data(), {2, 3, 3}, {9, 3, 1}});
      },
      {"scales", "(B, N, 1)"}));
  EXPECT_TRUE(std::all_of(values.begin(), values.end(), [](std::int8_t v) { return v == 7; }));
  EXPECT_TRUE(std::all_of(scales.begin(), scales.end(), [](float s) { return s == -1.0f; }));
}

// Every backend's int8 load widens each lane exactly.
// The decode kernel's rounding of query rows to int16 (round_queries):
// every row within half a step of its scale, the padding zero, the int16
// range used; rows it cannot round (NaN, inf, tiny) and rows too long for
// exact int32 lanes are refused.
TEST(RoundQueries, RoundsEachRowWithinHalfAStep) {
  ref::rng g(5);
  for (const index_t dk : {8, 24, 128, 500}) {
    const index_t stride = (dk + 31) / 32 * 32;
    std::vector<float> q(static_cast<std::size_t>(3 * dk));
    for (float& x : q) x = 40.0f * g.uniform();
    std::fill_n(q.begin() + dk, dk, 0.0f);  // row 1: all zero
    std::vector<std::int16_t> out(static_cast<std::size_t>(3 * stride), 7);
    float scales[3];
    ASSERT_TRUE(attn::detail::round_queries(q.data(), 3, dk, out.data(), stride, 8, scales));
    EXPECT_EQ(scales[1], 0.0f);
    std::int64_t largest = 0;
    for (index_t r = 0; r < 3; ++r)
      for (index_t d = 0; d < stride; ++d) {
        const std::int16_t x = out[static_cast<std::size_t>(r * stride + d)];
        largest = std::max<std::int64_t>(largest, std::abs(x));
        if (d >= dk) {
          EXPECT_EQ(x, 0) << "padding, row " << r << " channel " << d;
          continue;
        }
        const float want = q[static_cast<std::size_t>(r * dk + d)];
        EXPECT_LE(std::abs(x * scales[r] - want), 0.501f * scales[r]) << "row " << r << " channel " << d;
      }
    EXPECT_EQ(largest, 32767) << "the rows use the int16 range, Dk " << dk;
  }
}

TEST(RoundQueries, RefusesRowsItCannotRound) {
  float scales[1];
  std::vector<std::int16_t> out(64);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(), 1e-31f}) {
    std::vector<float> q(16, bad == 1e-31f ? 1e-31f : 1.0f);
    q[3] = bad;
    EXPECT_FALSE(attn::detail::round_queries(q.data(), 1, 16, out.data(), 32, 8, scales)) << bad;
  }
  std::vector<float> wide(4100, 1.0f);
  std::vector<std::int16_t> wide_out(4112);
  EXPECT_TRUE(attn::detail::round_queries(wide.data(), 1, 4096, wide_out.data(), 4096, 8, scales));
  EXPECT_FALSE(attn::detail::round_queries(wide.data(), 1, 4100, wide_out.data(), 4112, 8, scales))
      << "4112 channels in 8 lanes";
}

template <class B>
class Int8WidenTest : public ::testing::Test {};
TYPED_TEST_SUITE(Int8WidenTest, ref::backend_types, ref::backend_name);

TYPED_TEST(Int8WidenTest, LoadsWidenEveryLaneExactly) {
  using B = TypeParam;
  constexpr std::size_t W = B::width;
  std::vector<std::int8_t> src(256 + 2 * W);
  for (std::size_t n = 0; n < src.size(); ++n) src[n] = static_cast<std::int8_t>(n * 37 + 128);
  std::vector<float> lanes(W);
  for (std::size_t at = 0; at + W <= src.size(); ++at) {  // every start: unaligned too
    B::store(lanes.data(), B::load(src.data() + at));
    for (std::size_t i = 0; i < W; ++i)
      ASSERT_EQ(lanes[i], static_cast<float>(src[at + i])) << "at " << at;
  }
}

// ---------------------------------------------------------------------------
// Attention over an int8 cache.

// A float tensor quantized with attn::quantize (values in the tensor's own
// layout, scales per row or per token in `scale_memory`); the float tensor
// is replaced by what the cache holds, scale * value (the oracle's inputs).
struct int8_tensor {
  std::vector<std::int8_t> values;
  ref::tensor3 scales;
  attn::view4<std::int8_t> value_view;

  int8_tensor(ref::tensor4& t, bool per_token, const ref::layout3& scale_memory)
      : values(t.storage.size(), 0),
        scales(
            ref::filled<3>({t.view.extent[0], t.view.extent[1], per_token ? 1 : t.view.extent[2]},
                           scale_memory, std::numeric_limits<float>::quiet_NaN())) {
    value_view = {values.data(), t.view.extent, t.view.stride};
    attn::quantize(t.cview(), value_view, scales.view);
    for (index_t b = 0; b < t.view.extent[0]; ++b)
      for (index_t j = 0; j < t.view.extent[1]; ++j)
        for (index_t h = 0; h < t.view.extent[2]; ++h)
          for (index_t d = 0; d < t.view.extent[3]; ++d)
            t.view(b, j, h, d) = scale(b, j, h) * static_cast<float>(value_view(b, j, h, d));
  }
  float& scale(index_t b, index_t j, index_t h) {
    return scales.view(b, j, scales.view.extent[2] == 1 ? 0 : h);
  }
  attn::quantized cache() const { return {value_view, scales.cview()}; }
};

struct shape {
  index_t b, nq, nk, hq, hkv, dk, dv;
};

struct spec {
  shape s{};
  bool causal = false;
  bool per_token = false;  // one scale per token (else per token and head)
  ref::layout4 mem = ref::bshd_memory;
  ref::layout3 scale_memory = ref::bsh_memory;
  std::optional<std::array<index_t, 2>> window{};
  index_t sink_tokens = 0;
  index_t page_size = 0;   // > 0: a paged cache of shuffled pages
  bool varlen = false;     // varlen_attention: queries packed, K/V packed or paged
  index_t nan_key = -1;    // key whose v scale is NaN (batch 0, kv head 0)
  index_t nan_query = -1;  // query head whose first channel is NaN (batch 0, position 0)
  bool user_mask = false;  // the mask overload (causal as a predicate, a softcap)
};

std::string describe(const spec& c) {
  std::ostringstream s;
  s << "B=" << c.s.b << " Nq=" << c.s.nq << " Nk=" << c.s.nk << " Hq=" << c.s.hq
    << " Hkv=" << c.s.hkv << " Dk=" << c.s.dk << " Dv=" << c.s.dv << (c.causal ? " causal" : "")
    << (c.per_token ? " per-token" : "") << (c.window ? " window" : "")
    << (c.page_size > 0 ? " page_size=" + std::to_string(c.page_size) : "") << (c.varlen ? " varlen" : "")
    << (c.nan_key >= 0 ? " nan_key=" + std::to_string(c.nan_key) : "")
    << (c.nan_query >= 0 ? " nan_query=" + std::to_string(c.nan_query) : "")
    << (c.user_mask ? " user mask" : "");
  return s.str();
}

constexpr float sentinel = -1234.5f;

// Pools of `page_size` rows in reverse order (sequence b's page n is pool
// page pages - 1 - (b * per_seq + n)) holding x's rows, and the table.
template <class T>
struct paged_pool {
  std::vector<T> pool;
  attn::strided_view<T, 4> view;
};
template <class T, class View>
paged_pool<T> paged(const View& x, index_t page_size, const std::vector<std::int32_t>& table,
                    index_t per_seq) {
  const index_t b = x.extent[0], nk = x.extent[1], h = x.extent[2];
  index_t d = 1;
  if constexpr (View::rank == 4) d = x.extent[3];
  const index_t pages = b * per_seq;
  paged_pool<T> p{std::vector<T>(static_cast<std::size_t>(pages * page_size * h * d)), {}};
  p.view = {p.pool.data(), {pages, page_size, h, d}, {page_size * h * d, h * d, d, 1}};
  for (index_t s = 0; s < b; ++s)
    for (index_t j = 0; j < nk; ++j) {
      const index_t page = table[static_cast<std::size_t>(s * per_seq + j / page_size)];
      for (index_t hh = 0; hh < h; ++hh)
        for (index_t c = 0; c < d; ++c) {
          if constexpr (View::rank == 4)
            p.view(page, j % page_size, hh, c) = x(s, j, hh, c);
          else
            p.view(page, j % page_size, hh, c) = x(s, j, hh);
        }
    }
  return p;
}

// An int8 K/V pair (B, N, Hkv, D) moved into pools of `page_size` rows in
// reverse order, with its scales beside them, as a quantized_paged_kv (the
// cache points into this object, which therefore stays where it is built).
struct int8_pages {
  index_t per_seq;
  std::vector<std::int32_t> table;
  paged_pool<std::int8_t> k, v;
  paged_pool<float> k_scales, v_scales;
  attn::quantized_paged_kv cache;

  int8_pages(const int8_tensor& k8, const int8_tensor& v8, index_t page_size)
      : per_seq((k8.value_view.extent[1] + page_size - 1) / page_size),
        table(reversed(k8.value_view.extent[0] * per_seq)),
        k(paged<std::int8_t>(k8.value_view, page_size, table, per_seq)),
        v(paged<std::int8_t>(v8.value_view, page_size, table, per_seq)),
        k_scales(paged<float>(k8.scales.view, page_size, table, per_seq)),
        v_scales(paged<float>(v8.scales.view, page_size, table, per_seq)),
        cache{k.view, scales3(k_scales.view), v.view, scales3(v_scales.view),
              {table.data(), {k8.value_view.extent[0], per_seq}, {per_seq, 1}}} {}
  int8_pages(const int8_pages&) = delete;

  static std::vector<std::int32_t> reversed(index_t pages) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(pages));
    for (index_t n = 0; n < pages; ++n) t[static_cast<std::size_t>(n)] = static_cast<std::int32_t>(pages - 1 - n);
    return t;
  }
  static attn::view3<const float> scales3(const attn::strided_view<float, 4>& x) {
    return {x.data, {x.extent[0], x.extent[1], x.extent[2]}, {x.stride[0], x.stride[1], x.stride[2]}};
  }
};

// Runs one spec with q and out stored as QO on backend B (2 OpenMP
// threads) and checks it against the oracle on the dequantized k and v.
template <class B, class QO = float>
void expect_oracle(const spec& c) {
  SCOPED_TRACE(describe(c));
  const shape& s = c.s;
  ref::rng g(static_cast<std::uint64_t>(s.nq * 131 + s.nk * 7 + s.dk) ^ 0x1a8u);
  ref::tensor4 q = ref::random<4>(g, {s.b, s.nq, s.hq, s.dk}, c.mem);
  ref::tensor4 k = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dk}, c.mem);
  ref::tensor4 v = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dv}, c.mem);
  int8_tensor k8(k, c.per_token, c.scale_memory), v8(v, c.per_token, c.scale_memory);
  if (c.nan_key >= 0) {
    v8.scale(0, c.nan_key, 0) = std::numeric_limits<float>::quiet_NaN();
    for (index_t h = 0; h < (c.per_token ? s.hkv : 1); ++h)
      ref::inject_nan_row(v.view, 0, c.nan_key, h);
  }
  if (c.nan_query >= 0) q.view(0, 0, c.nan_query, 0) = std::numeric_limits<float>::quiet_NaN();
  const std::vector<QO> q_stored = ref::rounded<QO>(q);
  ref::tensor4 out = ref::filled<4>({s.b, s.nq, s.hq, s.dv}, c.mem, sentinel);
  std::vector<QO> out_stored = ref::rounded<QO>(out);
  ref::tensor3 lse = ref::filled<3>({s.b, s.nq, s.hq}, ref::bsh_memory, sentinel);
  const attn::view4<const QO> qv{q_stored.data(), q.view.extent, q.view.stride};
  const attn::view4<QO> ov{out_stored.data(), out.view.extent, out.view.stride};

  attn::softmax_options opt;
  opt.causal = c.causal;
  opt.window = c.window;
  opt.sink_tokens = c.sink_tokens;
  // varlen: the batch's rows packed, (B * N, H, D) views of the same memory.
  auto packed = [&](const auto& x) {
    EXPECT_EQ(x.stride[0], x.extent[1] * x.stride[1]) << "the spec's layout cannot be packed";
    return attn::strided_view<std::remove_reference_t<decltype(*x.data)>, 3>{
        x.data, {x.extent[0] * x.extent[1], x.extent[2], x.extent[3]}, {x.stride[1], x.stride[2], x.stride[3]}};
  };
  const attn::strided_view<float, 2> packed_lse{
      lse.view.data, {s.b * s.nq, s.hq}, {lse.view.stride[1], lse.view.stride[2]}};
  auto offsets = [&](index_t n) {
    std::vector<std::int32_t> cu(static_cast<std::size_t>(s.b + 1));
    for (index_t i = 0; i <= s.b; ++i) cu[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i * n);
    return cu;
  };
  if (c.user_mask) {
    opt.causal = true;  // for the oracle
    const auto mask = attn::mask_from(
        [off = s.nk - s.nq](index_t, index_t, index_t i, index_t j) { return j <= i + off; });
    attn::attention<B>(qv, k8.cache(), v8.cache(), ov, lse.view, mask, attn::no_modifier{}, {},
                       attn::openmp{2});
  } else if (c.page_size == 0 && c.varlen) {
    // Packed int8 rows: quantized with one batch entry, (1, B * Nk, Hkv, D).
    auto one_entry = [&](const int8_tensor& x) {
      const attn::view4<std::int8_t>& t = x.value_view;
      const attn::view3<const float>& sc = x.scales.cview();
      EXPECT_EQ(sc.stride[0], sc.extent[1] * sc.stride[1]);
      return attn::quantized{{t.data, {1, t.extent[0] * t.extent[1], t.extent[2], t.extent[3]},
                              {0, t.stride[1], t.stride[2], t.stride[3]}},
                             {sc.data, {1, sc.extent[0] * sc.extent[1], sc.extent[2]}, {0, sc.stride[1], sc.stride[2]}}};
    };
    attn::varlen_attention<B>(packed(qv), one_entry(k8), one_entry(v8), packed(ov), packed_lse, offsets(s.nq),
                              offsets(s.nk), opt, attn::openmp{2});
  } else if (c.page_size == 0) {
    attn::attention<B>(qv, k8.cache(), v8.cache(), ov, lse.view, opt, attn::openmp{2});
  } else {
    const int8_pages pages(k8, v8, c.page_size);
    const attn::quantized_paged_kv& cache = pages.cache;
    std::vector<std::int32_t> lengths(static_cast<std::size_t>(s.b),
                                      static_cast<std::int32_t>(s.nk));
    opt.kv_lengths = lengths;
    if (c.varlen) {
      attn::varlen_attention<B>(packed(qv), cache, packed(ov), packed_lse, offsets(s.nq), opt, attn::openmp{2});
    } else {
      attn::attention<B>(qv, cache, ov, lse.view, opt, attn::openmp{2});
    }
    opt.kv_lengths = {};
  }

  for (std::size_t n = 0; n < out.storage.size(); ++n)
    out.storage[n] = attn::to_float(out_stored[n]);
  const ref::softmax_result expected = ref::softmax_attention(q.cview(), k.cview(), v.cview(), opt);
  EXPECT_TRUE(
      ref::within_contract(out.cview(), lse.cview(), expected, ref::storage_contract<QO>()));
  EXPECT_TRUE(out.padding_holds(attn::to_float(attn::from_float<QO>(sentinel))))
      << "out was written outside its view";
}

template <class B>
class Int8Test : public ::testing::Test {};
TYPED_TEST_SUITE(Int8Test, ref::backend_types, ref::backend_name);

template <class B>
void expect_oracle_both_masks(spec c) {
  c.causal = false;
  expect_oracle<B>(c);
  c.causal = true;
  expect_oracle<B>(c);
}

TYPED_TEST(Int8Test, SmallPrimeAndTileEdgeShapes) {
  for (const shape s :
       {shape{1, 1, 1, 1, 1, 1, 1}, shape{2, 7, 13, 4, 2, 5, 3}, shape{1, 127, 129, 2, 1, 16, 16},
        shape{1, 97, 257, 3, 1, 64, 64}, shape{2, 33, 33, 8, 8, 80, 80}})
    expect_oracle_both_masks<TypeParam>({s});
}

TYPED_TEST(Int8Test, DecodeGroupedHeadsInPlace) {
  // Nq = 1..2 over one or more kv heads: the decode kernels widen K and V
  // in place and scale the score and probability rows; per-token scales too.
  for (const bool per_token : {false, true})
    for (const shape s : {shape{1, 1, 300, 32, 8, 128, 128}, shape{3, 1, 1000, 4, 1, 64, 64},
                          shape{1, 2, 515, 8, 2, 256, 256}, shape{2, 1, 77, 6, 3, 32, 40}})
      expect_oracle_both_masks<TypeParam>({s, false, per_token});
}

TYPED_TEST(Int8Test, DecodeHeadDimsOffTheIntegerKernelsStep) {
  // The integer score kernel (AVX2) takes 16 channels a step: Dk = 24 and
  // 136 end on a half step; 48 and 80 are whole steps of other widths.
  for (const index_t d : {24, 48, 80, 136, 1024})
    expect_oracle<TypeParam>({{2, 1, 150, 8, 2, d, d}});
}

TYPED_TEST(Int8Test, LargestIntegerDotProductsStayExact) {
  // Every key -128 in all 512 W channels against a query of equal
  // channels: each of the integer kernel's W int32 lanes sums 512 products,
  // 128 * 512 * 32767, just under 2^31. The keys' scales differ, so a
  // wrapped sum would move the weights.
  ref::rng g(3);
  const index_t nk = 100, d = 512 * static_cast<index_t>(TypeParam::width);
  ref::tensor4 q = ref::filled<4>({1, 1, 4, d}, ref::bshd_memory, 0.05f);
  ref::tensor4 k = ref::random<4>(g, {1, nk, 1, d}, ref::bshd_memory);
  ref::tensor4 v = ref::random<4>(g, {1, nk, 1, d}, ref::bshd_memory);
  int8_tensor k8(k, false, ref::bsh_memory), v8(v, false, ref::bsh_memory);
  for (index_t j = 0; j < nk; ++j) {
    k8.scale(0, j, 0) = 1e-3f * static_cast<float>(1 + j % 7);
    for (index_t c = 0; c < d; ++c) {
      k8.value_view(0, j, 0, c) = -128;
      k.view(0, j, 0, c) = -128.0f * k8.scale(0, j, 0);
    }
  }
  ref::tensor4 out = ref::filled<4>({1, 1, 4, d}, ref::bshd_memory, sentinel);
  ref::tensor3 lse = ref::filled<3>({1, 1, 4}, ref::bsh_memory, sentinel);
  attn::attention<TypeParam>(q.cview(), k8.cache(), v8.cache(), out.view, lse.view, {}, attn::openmp{2});
  const ref::softmax_result expected = ref::softmax_attention(q.cview(), k.cview(), v.cview());
  EXPECT_TRUE(ref::within_contract(out.cview(), lse.cview(), expected, {}));
}

TYPED_TEST(Int8Test, NanQueryReachesOnlyItsOwnRow) {
  // A NaN query row keeps its kv head's tile off the integer kernel; the
  // other rows of that head and the other heads stay exact.
  spec joint{{1, 1, 300, 8, 2, 64, 64}}, alone{{2, 1, 200, 4, 1, 128, 128}};
  joint.nan_query = 5;
  alone.nan_query = 2;
  expect_oracle<TypeParam>(joint);
  expect_oracle<TypeParam>(alone);
}

TYPED_TEST(Int8Test, StridedValuesAndScales) {
  for (const ref::layout4 mem : {ref::bhsd_memory, ref::padded_bshd, ref::bsdh_memory}) {
    spec prefill{{2, 19, 70, 4, 2, 32, 32}, false, false, mem, ref::padded_bsh};
    spec decode{{2, 1, 70, 4, 2, 32, 32}, false, false, mem, ref::layout3{{0, 2, 1}, {}}};
    expect_oracle_both_masks<TypeParam>(prefill);
    expect_oracle_both_masks<TypeParam>(decode);
  }
}

TYPED_TEST(Int8Test, PagedCacheOfShuffledPages) {
  spec decode{{2, 1, 300, 8, 2, 64, 64}}, prefill{{1, 5, 130, 4, 4, 32, 32}, true, true};
  decode.page_size = 64;
  prefill.page_size = 7;  // tiles cross pages: gathered
  expect_oracle<TypeParam>(decode);
  expect_oracle<TypeParam>(prefill);
}

TYPED_TEST(Int8Test, VarlenPackedRowsAndPagedCache) {
  // Decode and chunked prefill of several sequences: packed int8 K/V rows,
  // or one int8 pool of shuffled pages.
  for (const index_t page_size : {0, 64, 7}) {
    spec decode{{3, 1, 300, 8, 2, 64, 64}}, prefill{{2, 5, 130, 4, 2, 32, 32}, true, true};
    for (spec* c : {&decode, &prefill}) {
      c->varlen = true;
      c->page_size = page_size;
      expect_oracle<TypeParam>(*c);
    }
  }
}

TYPED_TEST(Int8Test, RaggedVarlenRowsEqualEachSequenceAlone) {
  // Sequences of 1, 4 and 0 new queries over 37, 200 and 65 cached keys in
  // one int8 pool of shuffled pages: each packed row equals a call on its
  // sequence alone (attention over quantized_paged_kv, oracle-tested above).
  using B = TypeParam;
  const index_t hq = 8, hkv = 2, d = 64, page = 16, per_seq = 13, b = 3, pages = b * per_seq;
  const std::vector<std::int32_t> cu_q = {0, 1, 5, 5}, nk = {37, 200, 65};
  const index_t tq = cu_q.back();
  ref::rng g(0x5eedu);
  ref::tensor4 kf = ref::random<4>(g, {pages, page, hkv, d}, ref::bshd_memory);
  ref::tensor4 vf = ref::random<4>(g, {pages, page, hkv, d}, ref::bshd_memory);
  ref::tensor4 q = ref::random<4>(g, {1, tq, hq, d}, ref::bshd_memory);
  const int8_tensor k8(kf, false, ref::bsh_memory), v8(vf, false, ref::bsh_memory);
  const std::vector<std::int32_t> table = int8_pages::reversed(pages);
  auto cache_of = [&](index_t first, index_t sequences) {
    return attn::quantized_paged_kv{k8.value_view, k8.scales.cview(), v8.value_view, v8.scales.cview(),
                                    {table.data() + first * per_seq, {sequences, per_seq}, {per_seq, 1}}};
  };
  const attn::view3<const float> q3{q.view.data, {tq, hq, d}, {hq * d, d, 1}};
  std::vector<float> out(static_cast<std::size_t>(tq * hq * d), sentinel), lse(static_cast<std::size_t>(tq * hq));
  attn::softmax_options opt;
  opt.causal = true;
  opt.kv_lengths = nk;
  attn::varlen_attention<B>(q3, cache_of(0, b), attn::view3<float>{out.data(), {tq, hq, d}, {hq * d, d, 1}},
                            attn::strided_view<float, 2>{lse.data(), {tq, hq}, {hq, 1}}, cu_q, opt, attn::openmp{2});
  for (index_t s = 0; s < b; ++s) {
    const index_t i0 = cu_q[static_cast<std::size_t>(s)], n = cu_q[static_cast<std::size_t>(s + 1)] - i0;
    if (n == 0) continue;
    std::vector<float> alone(static_cast<std::size_t>(n * hq * d)), alone_lse(static_cast<std::size_t>(n * hq));
    const std::int32_t length = nk[static_cast<std::size_t>(s)];
    opt.kv_lengths = std::span<const std::int32_t>(&length, 1);
    attn::attention<B>(attn::view4<const float>{q3.data + i0 * hq * d, {1, n, hq, d}, {n * hq * d, hq * d, d, 1}},
                       cache_of(s, 1), attn::bshd(alone.data(), 1, n, hq, d), attn::bsh(alone_lse.data(), 1, n, hq),
                       opt);
    const auto diff = ref::compare<3>(
        attn::view3<const float>{out.data() + i0 * hq * d, {n, hq, d}, {hq * d, d, 1}},
        attn::view3<const float>{alone.data(), {n, hq, d}, {hq * d, d, 1}});
    EXPECT_LE(diff.rel_frobenius, 1e-6) << "sequence " << s;
    EXPECT_EQ(diff.mismatched_nan, 0) << "sequence " << s;
    for (index_t r = 0; r < n * hq; ++r)
      EXPECT_NEAR(lse[static_cast<std::size_t>(i0 * hq + r)], alone_lse[static_cast<std::size_t>(r)],
                  1e-5f * (1 + std::fabs(alone_lse[static_cast<std::size_t>(r)])))
          << "sequence " << s << " row " << r;
  }
}

TYPED_TEST(Int8Test, CascadeOverASharedInt8Prefix) {
  // Three sequences share a 70-key int8 prefix, each with its own 45-key
  // int8 suffix, contiguous or in shuffled pages: the oracle runs on the
  // concatenated, dequantized keys.
  using B = TypeParam;
  const index_t b = 3, nq = 2, np = 70, ns = 45, hq = 8, hkv = 2, d = 32, page = 16;
  for (const bool paged_suffix : {false, true}) {
    SCOPED_TRACE(paged_suffix ? "paged suffix" : "contiguous suffix");
    ref::rng g(paged_suffix ? 0xca5u : 0xca6u);
    ref::tensor4 q = ref::random<4>(g, {b, nq, hq, d}, ref::bshd_memory);
    ref::tensor4 pk = ref::random<4>(g, {1, np, hkv, d}, ref::bshd_memory);
    ref::tensor4 pv = ref::random<4>(g, {1, np, hkv, d}, ref::bshd_memory);
    ref::tensor4 k = ref::random<4>(g, {b, ns, hkv, d}, ref::bshd_memory);
    ref::tensor4 v = ref::random<4>(g, {b, ns, hkv, d}, ref::bshd_memory);
    const int8_tensor pk8(pk, false, ref::bsh_memory), pv8(pv, true, ref::bsh_memory);
    const int8_tensor k8(k, false, ref::bsh_memory), v8(v, false, ref::bsh_memory);
    ref::tensor4 kf = ref::filled<4>({b, np + ns, hkv, d}, ref::bshd_memory, 0.0f);
    ref::tensor4 vf = ref::filled<4>({b, np + ns, hkv, d}, ref::bshd_memory, 0.0f);
    for (index_t s = 0; s < b; ++s)
      for (index_t j = 0; j < np + ns; ++j)
        for (index_t h = 0; h < hkv; ++h)
          for (index_t c = 0; c < d; ++c) {
            kf.view(s, j, h, c) = j < np ? pk.view(0, j, h, c) : k.view(s, j - np, h, c);
            vf.view(s, j, h, c) = j < np ? pv.view(0, j, h, c) : v.view(s, j - np, h, c);
          }
    ref::tensor4 out = ref::filled<4>({b, nq, hq, d}, ref::bshd_memory, sentinel);
    ref::tensor3 lse = ref::filled<3>({b, nq, hq}, ref::bsh_memory, sentinel);
    attn::softmax_options opt;
    opt.causal = true;
    if (paged_suffix) {
      const int8_pages pages(k8, v8, page);
      const std::vector<std::int32_t> lengths(static_cast<std::size_t>(b), static_cast<std::int32_t>(ns));
      opt.kv_lengths = lengths;
      attn::cascade_attention<B>(q.cview(), pk8.cache(), pv8.cache(), pages.cache, out.view, lse.view, opt,
                                 attn::openmp{2});
      opt.kv_lengths = {};
    } else {
      attn::cascade_attention<B>(q.cview(), pk8.cache(), pv8.cache(), k8.cache(), v8.cache(), out.view, lse.view,
                                 opt, attn::openmp{2});
    }
    const ref::softmax_result expected = ref::softmax_attention(q.cview(), kf.cview(), vf.cview(), opt);
    EXPECT_TRUE(ref::within_contract(out.cview(), lse.cview(), expected));
  }
  // The prefix's scales are checked against its rows, naming them.
  ref::rng g(1);
  ref::tensor4 q = ref::random<4>(g, {1, 1, 2, 8}, ref::bshd_memory);
  ref::tensor4 p = ref::random<4>(g, {1, 5, 1, 8}, ref::bshd_memory);
  ref::tensor4 k = ref::random<4>(g, {1, 5, 1, 8}, ref::bshd_memory);
  const int8_tensor p8(p, false, ref::bsh_memory), k8(k, false, ref::bsh_memory);
  ref::tensor4 out = ref::filled<4>({1, 1, 2, 8}, ref::bshd_memory, sentinel);
  const attn::quantized short_scales{p8.value_view, {p8.scales.view.data, {1, 4, 1}, {4, 1, 1}}};
  EXPECT_TRUE(ref::throws_naming(
      [&] { attn::cascade_attention(q.cview(), short_scales, p8.cache(), k8.cache(), k8.cache(), out.view); },
      {"prefix_k.scales", "Np=5"}));
  EXPECT_TRUE(out.padding_holds(sentinel));
  for (const float x : out.storage) EXPECT_EQ(x, sentinel);
}

TYPED_TEST(Int8Test, SlidingWindowWithSinkTokens) {
  spec decode{{1, 1, 700, 8, 2, 64, 64}}, prefill{{1, 40, 300, 4, 2, 32, 32}};
  for (spec* c : {&decode, &prefill}) {
    c->window = std::array<index_t, 2>{63, 0};
    c->sink_tokens = 4;
    expect_oracle<TypeParam>(*c);
  }
}

TYPED_TEST(Int8Test, UserMaskOverload) {
  spec c{{1, 45, 200, 4, 2, 32, 32}};
  c.user_mask = true;
  expect_oracle<TypeParam>(c);
}

TYPED_TEST(Int8Test, NanScaleReachesOnlyRowsThatAttendIt) {
  // Causal: queries before key 40 never see its NaN v scale; decode sees it.
  spec prefill{{1, 64, 64, 2, 1, 32, 32}, true}, decode{{1, 1, 300, 8, 2, 64, 64}};
  prefill.nan_key = 40;
  decode.nan_key = 123;
  expect_oracle<TypeParam>(prefill);
  expect_oracle<TypeParam>(decode);
}

TEST(Int8, Bfloat16QueriesAndOutput) {
  expect_oracle<attn::default_backend, attn::bfloat16>({{2, 1, 300, 8, 2, 64, 64}});
  expect_oracle<attn::default_backend, attn::bfloat16>({{1, 33, 90, 4, 2, 32, 32}, true});
}

// The cost of quantizing itself: the int8 cache's output against the fp64
// oracle on the unquantized fp32 k and v. The README's accuracy table
// quotes these figures (random inputs, |q|, |k|, |v| <= 1, d = 128).
TEST(Int8, AccuracyCostAgainstUnquantizedInputs) {
  for (const bool per_token : {false, true}) {
    SCOPED_TRACE(per_token ? "per token" : "per token and head");
    ref::rng g(17);
    const index_t nk = 4096;
    ref::tensor4 q = ref::random<4>(g, {1, 1, 32, 128}, ref::bshd_memory);
    ref::tensor4 k = ref::random<4>(g, {1, nk, 8, 128}, ref::bshd_memory);
    ref::tensor4 v = ref::random<4>(g, {1, nk, 8, 128}, ref::bshd_memory);
    const ref::softmax_result exact = ref::softmax_attention(q.cview(), k.cview(), v.cview());
    int8_tensor k8(k, per_token, ref::bsh_memory), v8(v, per_token, ref::bsh_memory);
    ref::tensor4 out = ref::filled<4>({1, 1, 32, 128}, ref::bshd_memory, 0.0f);
    ref::tensor3 lse = ref::filled<3>({1, 1, 32}, ref::bsh_memory, 0.0f);
    attn::attention(q.cview(), k8.cache(), v8.cache(), out.view, lse.view);
    const ref::accuracy a = ref::measure(out.cview(), lse.cview(), exact, {1.0, 1.0, 1.0});
    const std::string key = per_token ? "per_token" : "per_row";
    RecordProperty(key + "_rel_frobenius", std::to_string(a.rel_frobenius));
    RecordProperty(key + "_max_abs", std::to_string(a.max_abs));
    RecordProperty(key + "_max_lse", std::to_string(a.max_lse));
    // Each element moves by up to scale / 2 (uniform rounding: ~1/sqrt(12)
    // of a step), and the output averages thousands of such rows.
    EXPECT_LT(a.rel_frobenius, 1e-2) << a.summary();
    EXPECT_GT(a.rel_frobenius, 1e-5) << "quantizing should cost something: " << a.summary();
    EXPECT_LT(a.max_lse, 1e-3) << a.summary();
  }
}

// Decode over 65536 int8 keys: fp32 sums do not drift.
TEST(Int8Slow, LongDecodeDoesNotDrift) {
  expect_oracle<attn::default_backend>({{1, 1, 65536, 8, 2, 64, 64}});
  expect_oracle<attn::default_backend>({{1, 1, 65536, 8, 2, 64, 64}, true, true});
}

TEST(Int8, BadScalesAreRefusedNamingTheArgument) {
  std::vector<std::int8_t> k(2 * 10 * 2 * 8), v(k.size());
  std::vector<float> ks(2 * 10 * 2, 1.0f), vs(ks.size(), 1.0f);
  std::vector<float> q(2 * 3 * 4 * 8), out(q.size(), sentinel);
  const auto qv = attn::bshd<const float>(q.data(), 2, 3, 4, 8);
  const attn::quantized good_v{attn::bshd<const std::int8_t>(v.data(), 2, 10, 2, 8),
                               attn::view3<const float>{vs.data(), {2, 10, 2}, {20, 2, 1}}};
  auto k_with = [&](attn::view3<const float> scales) {
    return attn::quantized{attn::bshd<const std::int8_t>(k.data(), 2, 10, 2, 8), scales};
  };
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::attention(qv, k_with({ks.data(), {2, 9, 2}, {18, 2, 1}}), good_v,
                        attn::bshd(out.data(), 2, 3, 4, 8));
      },
      {"k_scales", "Nk=10"}));
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::attention(qv, k_with({ks.data(), {2, 10, 3}, {30, 3, 1}}), good_v,
                        attn::bshd(out.data(), 2, 3, 4, 8));
      },
      {"k_scales", "Hkv=2"}));
  EXPECT_TRUE(ref::throws_naming(
      [&] { attn::attention(qv, k_with({}), good_v, attn::bshd(out.data(), 2, 3, 4, 8)); },
      {"k_scales"}));
  // out may not overlap the scales.
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::attention(qv, k_with({ks.data(), {2, 10, 2}, {20, 2, 1}}), good_v,
                        attn::bshd(out.data(), 2, 3, 4, 8),
                        attn::view3<float>{ks.data(), {2, 3, 4}, {12, 4, 1}});
      },
      {"lse", "k_scales"}));
  // The paged pools' scales, packed queries: (P, page_size, Hkv) named.
  const std::vector<std::int32_t> table = {0, 1}, lengths = {5, 5}, cu_q = {0, 3, 6};
  auto pool = [&](std::vector<std::int8_t>& x) { return attn::bshd<const std::int8_t>(x.data(), 4, 5, 2, 8); };
  const attn::quantized_paged_kv short_scales{pool(k), {ks.data(), {4, 4, 2}, {8, 2, 1}}, pool(v),
                                              {vs.data(), {4, 5, 2}, {10, 2, 1}}, {table.data(), {2, 1}, {1, 1}}};
  attn::softmax_options opt;
  opt.kv_lengths = lengths;
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::varlen_attention(attn::view3<const float>{q.data(), {6, 4, 8}, {32, 8, 1}}, short_scales,
                               attn::view3<float>{out.data(), {6, 4, 8}, {32, 8, 1}}, {}, cu_q, opt);
      },
      {"k_scales", "page_size=5"}));
  // Packed int8 rows: one batch entry, scales (1, Tk, Hkv | 1).
  const std::vector<std::int32_t> cu_k = {0, 10, 20};
  auto rows = [&](std::vector<std::int8_t>& x, index_t entries) {
    return attn::view4<const std::int8_t>{x.data(), {entries, 20 / entries, 2, 8}, {20 / entries * 16, 16, 8, 1}};
  };
  const attn::view3<const float> row_scales{vs.data(), {1, 20, 2}, {40, 2, 1}};
  auto packed_call = [&](const attn::quantized& kq) {
    attn::varlen_attention(attn::view3<const float>{q.data(), {6, 4, 8}, {32, 8, 1}}, kq,
                           attn::quantized{rows(v, 1), row_scales}, attn::view3<float>{out.data(), {6, 4, 8}, {32, 8, 1}},
                           {}, cu_q, cu_k);
  };
  EXPECT_TRUE(ref::throws_naming([&] { packed_call({rows(k, 2), row_scales}); }, {"k", "(1, Tk, Hkv, D)"}));
  EXPECT_TRUE(ref::throws_naming(
      [&] { packed_call({rows(k, 1), {ks.data(), {1, 19, 2}, {38, 2, 1}}}); }, {"k_scales", "Tk=20"}));
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](float x) { return x == sentinel; }));
}

}  // namespace quantized_test
