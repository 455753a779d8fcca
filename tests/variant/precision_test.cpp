// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Reduced-precision storage (fp16, bf16) against the fp64 oracle on the
// rounded inputs: the conversions themselves (exhaustively for fp16, against
// an independent rounding oracle and F16C where the CPU has it), every
// backend's widening loads, and softmax attention with each tensor stored
// in its own type, typed over every backend, contiguous, strided and paged,
// decode and prefill, long decode, large logits and NaN isolation.

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace precision_test {

using attn::bfloat16;
using attn::float16;
using attn::index_t;
namespace ref = attn::ref;

// ---------------------------------------------------------------------------
// Conversions.

// The fp16 nearest x >= 0 (ties to the even pattern) by search over every
// finite non-negative half: an oracle that shares nothing with half_bits.
std::uint16_t nearest_half(double x) {
  static const std::vector<double> values = [] {
    std::vector<double> v;
    for (std::uint32_t bits = 0; bits < 0x7c00; ++bits) v.push_back(attn::to_float(float16{static_cast<std::uint16_t>(bits)}));
    return v;
  }();
  if (x >= 65520.0) return 0x7c00;  // rounds past 65504: inf
  const auto above = std::lower_bound(values.begin(), values.end(), x);
  if (above == values.begin()) return 0;
  if (above == values.end()) return 0x7bff;
  const auto hi = static_cast<std::uint16_t>(above - values.begin());
  const auto lo = static_cast<std::uint16_t>(hi - 1);
  const double dl = x - values[lo], dh = values[hi] - x;
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo & 1u) ? hi : lo;
}

// The bf16 nearest finite x (ties to even), comparing the two neighbours
// in fp64; past the largest bf16, inf stands at 2^128 (IEEE overflow).
std::uint16_t nearest_bfloat(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  const auto lo = static_cast<std::uint16_t>(bits >> 16);
  const auto hi = static_cast<std::uint16_t>(lo + 1);
  auto value = [](std::uint16_t b) {
    return (b & 0x7fffu) == 0x7f80u ? std::copysign(0x1p128, attn::to_float(bfloat16{b}))
                                    : static_cast<double>(attn::to_float(bfloat16{b}));
  };
  const double dl = std::fabs(static_cast<double>(x) - value(lo));
  const double dh = std::fabs(value(hi) - static_cast<double>(x));
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return (lo & 1u) ? hi : lo;
}

// Floats spread over every binade a 16-bit type reaches, and the halfway
// points between neighbouring halves (the ties).
std::vector<float> probe_floats() {
  std::vector<float> xs = {0.0f, 1.0f, 65504.0f, 65519.996f, 65520.0f, 65536.0f, 1e30f,
                           0x1p-24f, 0x1p-25f, 0x1.8p-24f, 0x1p-26f, 0x1p-14f, 0x1.ff8p-15f, 3.0e38f,
                           std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max()};
  ref::rng g(7);
  for (int n = 0; n < 200000; ++n) {
    const std::uint32_t bits = static_cast<std::uint32_t>(g.next()) & 0x7fffffffu;
    const float x = std::bit_cast<float>(bits);
    if (std::isfinite(x)) xs.push_back(x);
  }
  for (std::uint32_t h = 0; h + 1 < 0x7c00; h += 7) {  // ties and near-ties
    const double a = attn::to_float(float16{static_cast<std::uint16_t>(h)});
    const double b = attn::to_float(float16{static_cast<std::uint16_t>(h + 1)});
    const auto mid = static_cast<float>((a + b) / 2);
    xs.push_back(mid);
    xs.push_back(std::nextafter(mid, 0.0f));
    xs.push_back(std::nextafter(mid, 1e9f));
  }
  return xs;
}

TEST(Float16, EveryPatternRoundTrips) {
  for (std::uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float16 h{static_cast<std::uint16_t>(bits)};
    const float x = attn::to_float(h);
    const bool nan = (bits & 0x7c00u) == 0x7c00u && (bits & 0x3ffu) != 0;
    ASSERT_EQ(std::isnan(x), nan) << "bits " << bits;
    if (nan) {
      ASSERT_EQ(attn::from_float<float16>(x).bits & 0x7e00u, 0x7e00u) << "NaN stays a quiet NaN, bits " << bits;
      continue;
    }
    ASSERT_EQ(attn::from_float<float16>(x).bits, bits) << "value " << x;
  }
  EXPECT_EQ(attn::to_float(float16{0x3c00}), 1.0f);
  EXPECT_EQ(attn::to_float(float16{0x0001}), 0x1p-24f);
  EXPECT_EQ(attn::to_float(float16{0x7bff}), 65504.0f);
  EXPECT_EQ(attn::to_float(float16{0xfc00}), -std::numeric_limits<float>::infinity());
}

TEST(Float16, RoundsToNearestEven) {
  for (const float x : probe_floats()) {
    const std::uint16_t want = nearest_half(x);
    ASSERT_EQ(attn::from_float<float16>(x).bits, want) << "x = " << x;
    ASSERT_EQ(attn::from_float<float16>(-x).bits, want | 0x8000u) << "x = " << -x;
  }
}

#if defined(__F16C__)
TEST(Float16, AgreesWithF16c) {
  for (const float x : probe_floats())
    ASSERT_EQ(attn::from_float<float16>(x).bits, _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)) << "x = " << x;
}
#endif

TEST(Bfloat16, RoundsToNearestEvenAndWidensExactly) {
  for (const float x : probe_floats()) {
    for (const float s : {x, -x}) {
      const bfloat16 b = attn::from_float<bfloat16>(s);
      ASSERT_EQ(b.bits, nearest_bfloat(s)) << "x = " << s;
      ASSERT_EQ(attn::from_float<bfloat16>(attn::to_float(b)).bits, b.bits) << "x = " << s;
    }
  }
  EXPECT_TRUE(std::isnan(attn::to_float(attn::from_float<bfloat16>(std::nanf("")))));
  EXPECT_EQ(attn::to_float(attn::from_float<bfloat16>(INFINITY)), INFINITY);
  EXPECT_EQ(attn::from_float<bfloat16>(std::numeric_limits<float>::max()).bits, 0x7f80u);  // rounds to inf
}

// Every backend's load from 16-bit storage widens each lane exactly as
// to_float does (NaN to NaN).
template <class B>
class WidenTest : public ::testing::Test {};
TYPED_TEST_SUITE(WidenTest, ref::backend_types, ref::backend_name);

template <class B, class T>
void expect_widens_exactly() {
  constexpr std::size_t W = B::width;
  ref::rng g(11);
  std::vector<T> src(4096 + W);
  for (std::size_t n = 0; n < src.size(); ++n) src[n].bits = static_cast<std::uint16_t>(g.next());
  for (std::uint16_t special : {0x0000, 0x8000, 0x0001, 0x03ff, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x7f80, 0xff81})
    src[static_cast<std::size_t>(special % 64)].bits = special;
  std::vector<float> lanes(W);
  for (std::size_t at = 0; at + W <= src.size(); at += 3) {  // unaligned starts
    B::store(lanes.data(), B::load(src.data() + at));
    for (std::size_t i = 0; i < W; ++i) {
      const float want = attn::to_float(src[at + i]);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(lanes[i])) << attn::element_name<T>() << " bits " << src[at + i].bits;
      } else {
        ASSERT_EQ(std::bit_cast<std::uint32_t>(lanes[i]), std::bit_cast<std::uint32_t>(want))
            << attn::element_name<T>() << " bits " << src[at + i].bits;
      }
    }
  }
}

TYPED_TEST(WidenTest, LoadsWidenEveryLaneExactly) {
  expect_widens_exactly<TypeParam, float16>();
  expect_widens_exactly<TypeParam, bfloat16>();
}

// ---------------------------------------------------------------------------
// Attention with 16-bit tensors.

// A copy of a tensor stored as T, in the same memory layout; the float
// tensor is rounded to what the copy holds (the oracle's inputs).
template <class T>
struct stored {
  std::vector<T> storage;
  attn::view4<T> view;

  explicit stored(ref::tensor4& t) : storage(t.storage.size()) {
    for (std::size_t n = 0; n < storage.size(); ++n) {
      storage[n] = attn::from_float<T>(t.storage[n]);
      t.storage[n] = attn::to_float(storage[n]);
    }
    view = {storage.data(), t.view.extent, t.view.stride};
  }
  attn::view4<const T> cview() const { return view; }
  // The stored values back in the float tensor (the output, to measure it).
  void widen_into(ref::tensor4& t) const {
    for (std::size_t n = 0; n < storage.size(); ++n) t.storage[n] = attn::to_float(storage[n]);
  }
};

// Storage types of q, k, v and out, and the accuracy contract that follows
// (README, "Reduced precision"): fp32 accumulation everywhere, so only the
// final rounding of a 16-bit out adds error.
template <class Q, class K, class V, class O>
struct types {
  using q = Q;
  using k = K;
  using v = V;
  using out = O;
  static std::string name() {
    return std::string(attn::element_name<Q>()) + "_" + attn::element_name<K>() + "_" + attn::element_name<V>() +
           "_" + attn::element_name<O>();
  }
  static ref::tolerance contract() { return ref::storage_contract<O>(); }
};

// Three combinations cover each type in each role: an fp16 cache under
// fp32 q and out (the decode case), everything bf16, and every tensor
// different from its neighbour.
using fp16_kv = types<float, float16, float16, float>;
using bf16_all = types<bfloat16, bfloat16, bfloat16, bfloat16>;
using mixed = types<bfloat16, float16, bfloat16, float16>;
// Two more in the long decode (native backend only).
using bf16_kv = types<float, bfloat16, bfloat16, float>;
using fp16_all = types<float16, float16, float16, float16>;

template <class B, class S>
struct config {
  using backend = B;
  using storage = S;
};
// Each storage combination on the native backend, and the mixed one on every
// backend (their kernels differ only in the widening loads, which
// WidenTest checks lane by lane on each): a typed instantiation compiles
// the whole option dispatch, so the product would be slow to build.
template <class... B>
using configs_of =
    ::testing::Types<config<attn::backend::native, fp16_kv>, config<attn::backend::native, bf16_all>,
                     config<B, mixed>...>;
template <class List>
struct all_configs;
template <class... B>
struct all_configs<attn::backend::list<B...>> {
  using type = configs_of<B...>;
};
struct config_name {
  template <class C>
  static std::string GetName(int) {
    return std::string(C::backend::name) + "_" + C::storage::name();
  }
};

struct shape {
  index_t b, nq, nk, hq, hkv, dk, dv;
};

struct spec {
  shape s{};
  bool causal = false;
  ref::layout4 mem = ref::bshd_memory;
  float range = 1.0f;    // q and k uniform in [-range, range)
  float v_range = 1.0f;  // v uniform in [-v_range, v_range)
  // Looser than the storage's contract where the inputs make fp32 itself
  // less exact (large logits: the rounding of a score grows with it).
  ref::tolerance floor{0, 0, 0};
  index_t nan_key = -1;  // key whose value row is NaN (batch 0, kv head 0)
  index_t page_size = 0; // > 0: k and v in a paged cache of shuffled pages
};

std::string describe(const spec& c) {
  std::ostringstream s;
  s << "B=" << c.s.b << " Nq=" << c.s.nq << " Nk=" << c.s.nk << " Hq=" << c.s.hq << " Hkv=" << c.s.hkv
    << " Dk=" << c.s.dk << " Dv=" << c.s.dv << (c.causal ? " causal" : "") << " range=" << c.range
    << " v_range=" << c.v_range
    << (c.nan_key >= 0 ? " nan_key=" + std::to_string(c.nan_key) : "")
    << (c.page_size > 0 ? " page_size=" + std::to_string(c.page_size) : "");
  return s.str();
}

constexpr float sentinel = -1234.5f;

// Runs one spec with storage S on backend B (2 OpenMP threads) and checks
// it against the oracle on the rounded inputs.
template <class B, class S>
void expect_oracle(const spec& c) {
  SCOPED_TRACE(describe(c));
  const shape& s = c.s;
  ref::rng g(static_cast<std::uint64_t>(s.nq * 131 + s.nk * 7 + s.dk) ^ 0x5eedu);
  ref::tensor4 q = ref::random<4>(g, {s.b, s.nq, s.hq, s.dk}, c.mem, -c.range, c.range);
  ref::tensor4 k = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dk}, c.mem, -c.range, c.range);
  ref::tensor4 v = ref::random<4>(g, {s.b, s.nk, s.hkv, s.dv}, c.mem, -c.v_range, c.v_range);
  if (c.nan_key >= 0) ref::inject_nan_row(v.view, 0, c.nan_key, 0);
  ref::tensor4 out = ref::filled<4>({s.b, s.nq, s.hq, s.dv}, c.mem, sentinel);
  ref::tensor3 lse = ref::filled<3>({s.b, s.nq, s.hq}, ref::bsh_memory, sentinel);
  const stored<typename S::q> q16(q);
  const stored<typename S::k> k16(k);
  const stored<typename S::v> v16(v);
  stored<typename S::out> out16(out);

  attn::softmax_options opt;
  opt.causal = c.causal;
  std::vector<std::int32_t> lengths(static_cast<std::size_t>(s.b), static_cast<std::int32_t>(s.nk));
  if (c.page_size == 0) {
    attn::attention<B>(q16.view, k16.view, v16.view, out16.view, lse.view, opt, attn::openmp{2});
  } else {
    // Pages of k and v in reverse order: sequence b's page n is pool page
    // (pages - 1 - (b * per_seq + n)).
    const index_t per_seq = (s.nk + c.page_size - 1) / c.page_size, pages = s.b * per_seq;
    std::vector<typename S::k> kp(static_cast<std::size_t>(pages * c.page_size * s.hkv * s.dk));
    std::vector<typename S::v> vp(static_cast<std::size_t>(pages * c.page_size * s.hkv * s.dv));
    std::vector<std::int32_t> table(static_cast<std::size_t>(pages));
    for (index_t b = 0; b < s.b; ++b)
      for (index_t n = 0; n < per_seq; ++n) {
        const index_t page = pages - 1 - (b * per_seq + n);
        table[static_cast<std::size_t>(b * per_seq + n)] = static_cast<std::int32_t>(page);
        for (index_t r = 0; r < c.page_size && n * c.page_size + r < s.nk; ++r)
          for (index_t h = 0; h < s.hkv; ++h) {
            for (index_t d = 0; d < s.dk; ++d)
              kp[static_cast<std::size_t>(((page * c.page_size + r) * s.hkv + h) * s.dk + d)] =
                  k16.view(b, n * c.page_size + r, h, d);
            for (index_t d = 0; d < s.dv; ++d)
              vp[static_cast<std::size_t>(((page * c.page_size + r) * s.hkv + h) * s.dv + d)] =
                  v16.view(b, n * c.page_size + r, h, d);
          }
      }
    const attn::typed_paged_kv<typename S::k, typename S::v> cache{
        attn::bshd<const typename S::k>(kp.data(), pages, c.page_size, s.hkv, s.dk),
        attn::bshd<const typename S::v>(vp.data(), pages, c.page_size, s.hkv, s.dv),
        {table.data(), {s.b, per_seq}, {per_seq, 1}}};
    opt.kv_lengths = lengths;
    attn::attention<B>(q16.view, cache, out16.view, lse.view, opt, attn::openmp{2});
    opt.kv_lengths = {};
  }

  out16.widen_into(out);
  const ref::softmax_result expected = ref::softmax_attention(q.cview(), k.cview(), v.cview(), opt);
  ref::tolerance tol = S::contract();
  tol.rel_frobenius = std::max(tol.rel_frobenius, c.floor.rel_frobenius);
  tol.max_abs_over_max_v = std::max(tol.max_abs_over_max_v, c.floor.max_abs_over_max_v);
  tol.lse = std::max(tol.lse, c.floor.lse);
  EXPECT_TRUE(ref::within_contract(out.cview(), lse.cview(), expected, tol));
  EXPECT_TRUE(out.padding_holds(attn::to_float(attn::from_float<typename S::out>(sentinel))))
      << "out was written outside its view";
}

template <class C>
class PrecisionTest : public ::testing::Test {};
TYPED_TEST_SUITE(PrecisionTest, typename all_configs<ref::tested_backends>::type, config_name);

template <class C>
void expect_oracle_both_masks(spec c) {
  c.causal = false;
  expect_oracle<typename C::backend, typename C::storage>(c);
  c.causal = true;
  expect_oracle<typename C::backend, typename C::storage>(c);
}

TYPED_TEST(PrecisionTest, SmallPrimeAndTileEdgeShapes) {
  for (const shape s : {shape{1, 1, 1, 1, 1, 1, 1}, shape{2, 7, 13, 4, 2, 5, 3}, shape{1, 127, 129, 2, 1, 16, 16},
                        shape{1, 97, 257, 3, 1, 64, 64}, shape{2, 33, 33, 8, 8, 80, 80}})
    expect_oracle_both_masks<TypeParam>({s});
}

TYPED_TEST(PrecisionTest, DecodeGroupedHeadsInPlace) {
  // Nq = 1..3 over one or more kv heads: the decode kernels widen K and V
  // as they load them from the cache (in place), also with Dv padded.
  for (const shape s : {shape{1, 1, 300, 32, 8, 128, 128}, shape{3, 1, 1000, 4, 1, 64, 64},
                        shape{1, 2, 515, 8, 2, 256, 256}, shape{2, 1, 77, 6, 3, 32, 40}})
    expect_oracle_both_masks<TypeParam>({s});
}

TYPED_TEST(PrecisionTest, StridedLayouts) {
  for (const ref::layout4 mem : {ref::bhsd_memory, ref::padded_bshd, ref::bsdh_memory}) {
    expect_oracle_both_masks<TypeParam>({{2, 19, 70, 4, 2, 32, 32}, false, mem});
    expect_oracle_both_masks<TypeParam>({{2, 1, 70, 4, 2, 32, 32}, false, mem});
  }
}

TYPED_TEST(PrecisionTest, PagedCacheOfShuffledPages) {
  spec decode{{2, 1, 300, 8, 2, 64, 64}}, prefill{{1, 5, 130, 4, 4, 32, 32}, true};
  decode.page_size = 64;
  prefill.page_size = 7;  // tiles cross pages: gathered
  expect_oracle<typename TypeParam::backend, typename TypeParam::storage>(decode);
  expect_oracle<typename TypeParam::backend, typename TypeParam::storage>(prefill);
}

TYPED_TEST(PrecisionTest, LargeLogitsDoNotOverflow) {
  // |q|, |k| up to 12: logits spread over hundreds, past where exp
  // overflows fp16 (e^11) and fp32 (e^88) without the running max; a score's
  // own fp32 rounding (~1e-7 of the sum of |q_d k_d|) then moves the output
  // by up to ~1e-5, hence the floor.
  const ref::tolerance floor{5e-5, 1e-4, 1e-5};
  expect_oracle_both_masks<TypeParam>({{1, 9, 200, 4, 2, 64, 64}, false, ref::bshd_memory, 12.0f, 1.0f, floor});
  expect_oracle_both_masks<TypeParam>({{1, 1, 200, 4, 2, 64, 64}, false, ref::bshd_memory, 12.0f, 1.0f, floor});
}

TYPED_TEST(PrecisionTest, LargeValuesDoNotOverflow) {
  // |v| up to 6e4 (near fp16's largest) over 2048 keys: an unnormalised
  // sum of p v in fp16 would pass 65504; the fp32 accumulator does not.
  expect_oracle_both_masks<TypeParam>({{1, 3, 2048, 2, 1, 32, 32}, false, ref::bshd_memory, 0.25f, 6.0e4f});
}

TYPED_TEST(PrecisionTest, NanReachesOnlyRowsThatAttendIt) {
  // Causal: queries before key 40 never see its NaN values.
  spec c{{1, 64, 64, 2, 1, 32, 32}, true};
  c.nan_key = 40;
  expect_oracle<typename TypeParam::backend, typename TypeParam::storage>(c);
}

// Varlen (packed) sequences in 16 bits, over packed K/V and over a paged
// cache (one page per sequence, in reverse order): each sequence against the
// oracle on its rounded rows. Empty sequences, more queries than keys
// (causal: empty rows), GQA.
TYPED_TEST(PrecisionTest, VarlenPackedSequences) {
  using B = typename TypeParam::backend;
  using S = typename TypeParam::storage;
  const std::vector<std::int32_t> cu_q{0, 5, 5, 17, 18, 31}, cu_k{0, 9, 20, 150, 150, 200};
  const index_t tq = cu_q.back(), tk = cu_k.back(), hq = 6, hkv = 3, dk = 32, dv = 40, longest = 130;
  for (const bool paged : {false, true})
    for (const bool causal : {false, true}) {
      SCOPED_TRACE(std::string(paged ? "paged" : "packed") + (causal ? " causal" : ""));
      ref::rng g(static_cast<std::uint64_t>(paged) * 2 + causal + 301);
      ref::tensor4 q = ref::random<4>(g, {1, tq, hq, dk}, ref::bshd_memory);
      ref::tensor4 k = ref::random<4>(g, {1, tk, hkv, dk}, ref::padded_bshd);
      ref::tensor4 v = ref::random<4>(g, {1, tk, hkv, dv}, ref::bshd_memory);
      ref::tensor4 out = ref::filled<4>({1, tq, hq, dv}, ref::bshd_memory, sentinel);
      ref::tensor3 lse = ref::filled<3>({1, tq, hq}, ref::bsh_memory, sentinel);
      const stored<typename S::q> q16(q);
      const stored<typename S::k> k16(k);
      const stored<typename S::v> v16(v);
      stored<typename S::out> out16(out);
      const attn::strided_view<float, 2> lse2{lse.view.data, {tq, hq}, {lse.view.stride[1], lse.view.stride[2]}};
      attn::softmax_options opt;
      opt.causal = causal;
      const index_t sequences = static_cast<index_t>(cu_k.size()) - 1;
      std::vector<std::int32_t> lengths, table;
      std::vector<typename S::k> kp;
      std::vector<typename S::v> vp;
      if (!paged) {
        attn::varlen_attention<B>(ref::packed(q16.cview()), ref::packed(k16.cview()),
                                  ref::packed(v16.cview()), ref::packed(out16.view), lse2, cu_q, cu_k,
                                  opt, attn::openmp{2});
      } else {
        // Sequence s is pool page sequences - 1 - s, its keys at the page's start.
        kp.assign(static_cast<std::size_t>(sequences * longest * hkv * dk), attn::from_float<typename S::k>(0.0f));
        vp.assign(static_cast<std::size_t>(sequences * longest * hkv * dv), attn::from_float<typename S::v>(0.0f));
        for (index_t s = 0; s < sequences; ++s) {
          const index_t page = sequences - 1 - s;
          lengths.push_back(cu_k[s + 1] - cu_k[s]);
          table.push_back(static_cast<std::int32_t>(page));
          for (index_t j = 0; j < lengths.back(); ++j)
            for (index_t h = 0; h < hkv; ++h) {
              for (index_t d = 0; d < dk; ++d)
                kp[static_cast<std::size_t>(((page * longest + j) * hkv + h) * dk + d)] = k16.view(0, cu_k[s] + j, h, d);
              for (index_t d = 0; d < dv; ++d)
                vp[static_cast<std::size_t>(((page * longest + j) * hkv + h) * dv + d)] = v16.view(0, cu_k[s] + j, h, d);
            }
        }
        const attn::typed_paged_kv<typename S::k, typename S::v> cache{
            attn::bshd<const typename S::k>(kp.data(), sequences, longest, hkv, dk),
            attn::bshd<const typename S::v>(vp.data(), sequences, longest, hkv, dv),
            {table.data(), {sequences, 1}, {1, 1}}};
        opt.kv_lengths = lengths;
        attn::varlen_attention<B>(ref::packed(q16.cview()), cache, ref::packed(out16.view), lse2, cu_q,
                                  opt, attn::openmp{2});
        opt.kv_lengths = {};
      }
      out16.widen_into(out);
      for (index_t s = 0; s < sequences; ++s) {
        const index_t q0 = cu_q[s], nq = cu_q[s + 1] - q0, k0 = cu_k[s], nk = cu_k[s + 1] - k0;
        const ref::softmax_result want = ref::softmax_attention(ref::token_rows(q.cview(), q0, nq),
                                                                ref::token_rows(k.cview(), k0, nk),
                                                                ref::token_rows(v.cview(), k0, nk), opt);
        EXPECT_TRUE(ref::within_contract(ref::token_rows<const float>(out.view, q0, nq),
                                         ref::token_rows<const float>(lse.view, q0, nq), want, S::contract()))
            << "sequence " << s;
      }
      EXPECT_TRUE(out.padding_holds(attn::to_float(attn::from_float<typename S::out>(sentinel))));
    }
}

// Decode over 65536 keys of fp16 / bf16 K and V: fp32 sums do not drift
// (ggml's and ONNX Runtime's fp16 accumulators do, README).
TEST(PrecisionSlow, LongDecodeDoesNotDrift) {
  expect_oracle<attn::default_backend, fp16_kv>({{1, 1, 65536, 8, 2, 64, 64}});
  expect_oracle<attn::default_backend, bf16_kv>({{1, 1, 65536, 8, 2, 64, 64}});
  expect_oracle<attn::default_backend, fp16_all>({{1, 1, 65536, 8, 2, 64, 64}, true});
}

TEST(Precision, BadShapesAreRefusedNamingTheArgument) {
  std::vector<float16> k(2 * 10 * 2 * 8), v(k.size());
  std::vector<float> q(2 * 3 * 4 * 8), out(q.size());
  const auto qv = attn::bshd<const float>(q.data(), 2, 3, 4, 8);
  const auto vv = attn::bshd<const float16>(v.data(), 2, 10, 2, 8);
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::attention(qv, attn::bshd<const float16>(k.data(), 2, 10, 2, 4), vv, attn::bshd(out.data(), 2, 3, 4, 8));
      },
      {"k", "Dk=8"}));
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::attention(qv, attn::bshd<const float16>(k.data(), 2, 10, 3, 8), vv, attn::bshd(out.data(), 2, 3, 4, 8));
      },
      {"k", "Hq = 4"}));
  // out may not overlap an input, whatever their types.
  EXPECT_TRUE(ref::throws_naming(
      [&] {
        attn::attention(qv, attn::bshd<const float16>(k.data(), 2, 10, 2, 8), vv,
                        attn::bshd(reinterpret_cast<float*>(v.data()), 2, 3, 4, 8));
      },
      {"out", "memory disjoint from"}));
}

}  // namespace precision_test
