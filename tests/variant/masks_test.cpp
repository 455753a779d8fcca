// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Masks and score modifiers (DESIGN §1-2) against the fp64 oracle on every
// backend: documents, prefix-LM, ALiBi, softcap, additive bias, their
// compositions with windows, causal, sinks and sink tokens, and user masks
// and modifiers through attention(..., mask, modifier).

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace masks_test {

using attn::index_t;
namespace ref = attn::ref;

// Contiguous documents of the given lengths (ids need not be consecutive).
std::vector<std::int32_t> documents(const std::vector<index_t>& lengths) {
  std::vector<std::int32_t> ids;
  std::int32_t id = 40;
  for (index_t n : lengths) {
    ids.insert(ids.end(), static_cast<std::size_t>(n), id);
    id -= 7;
  }
  return ids;
}

struct problem {
  index_t b, nq, nk, hq, hkv, d;
};

struct inputs {
  ref::tensor4 q, k, v;
  ref::tensor4 out;
  ref::tensor3 lse;
  inputs(const problem& s, std::uint64_t seed, float spread = 1.0f) {
    ref::rng g{seed};
    q = ref::random<4>(g, {s.b, s.nq, s.hq, s.d}, ref::bshd_memory, -spread, spread);
    k = ref::random_bhsd(g, s.b, s.nk, s.hkv, s.d);
    v = ref::random_padded(g, s.b, s.nk, s.hkv, s.d);
    out = ref::filled<4>({s.b, s.nq, s.hq, s.d}, ref::bshd_memory, 7.0f);
    lse = ref::filled<3>({s.b, s.nq, s.hq}, ref::bsh_memory, 7.0f);
  }
};

std::string describe(const problem& s, const attn::softmax_options& o) {
  std::string r = "B=" + std::to_string(s.b) + " Nq=" + std::to_string(s.nq) + " Nk=" +
                  std::to_string(s.nk) + " Hq=" + std::to_string(s.hq) + " Hkv=" +
                  std::to_string(s.hkv) + " d=" + std::to_string(s.d);
  if (o.causal) r += " causal";
  if (o.window) r += " window{" + std::to_string((*o.window)[0]) + "," + std::to_string((*o.window)[1]) + "}";
  if (o.sink_tokens) r += " sink_tokens=" + std::to_string(o.sink_tokens);
  if (!o.document_ids.empty()) r += " documents";
  if (o.prefix_lm) r += " prefix=" + std::to_string(*o.prefix_lm);
  if (o.softcap) r += " softcap=" + std::to_string(*o.softcap);
  if (o.alibi || o.alibi_slopes) r += " alibi";
  if (!o.bias.empty()) r += " bias";
  if (o.sinks) r += " sinks";
  return r;
}

template <class Backend, class Exec = attn::serial>
void check_options(const problem& s, attn::softmax_options opt, const Exec& exec = {},
                   float spread = 1.0f) {
  SCOPED_TRACE(describe(s, opt));
  inputs in(s, 11 + static_cast<std::uint64_t>(s.nq * 31 + s.nk), spread);
  attn::attention<Backend>(in.q.cview(), in.k.cview(), in.v.cview(), in.out.view, in.lse.view, opt, exec);
  const ref::softmax_result want = ref::softmax_attention(in.q.cview(), in.k.cview(), in.v.cview(), opt);
  EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), want));
}

template <class Backend>
class MasksTest : public ::testing::Test {};
TYPED_TEST_SUITE(MasksTest, ref::backend_types, ref::backend_name);

TYPED_TEST(MasksTest, DocumentsAloneWithCausalAndWithWindows) {
  const index_t t = TypeParam::kv_tile;
  const std::vector<std::int32_t> ids = documents({37, 1, t - 1, t + 1, 90, 3});
  const index_t nk = static_cast<index_t>(ids.size());
  for (index_t nq : {nk, nk - 50, index_t{1}, index_t{16}})
    for (int mode = 0; mode < 4; ++mode) {
      attn::softmax_options opt;
      opt.document_ids = ids;
      opt.causal = mode >= 1;
      if (mode == 2) opt.window = std::array<index_t, 2>{20, 0};  // causal & window & documents
      if (mode == 3) {
        opt.window = std::array<index_t, 2>{9, 3};
        opt.sink_tokens = 5;
        opt.causal = false;
      }
      check_options<TypeParam>({1, nq, nk, 4, 2, 32}, opt);
    }
  attn::softmax_options one_doc;  // a single document equals causal attention
  const std::vector<std::int32_t> same(300, 5);
  one_doc.document_ids = same;
  one_doc.causal = true;
  check_options<TypeParam>({2, 300, 300, 2, 1, 16}, one_doc, attn::openmp{2});
}

TYPED_TEST(MasksTest, PrefixLm) {
  for (index_t prefix : {0, 1, 50, 129, 400}) {
    attn::softmax_options opt;
    opt.prefix_lm = prefix;
    check_options<TypeParam>({1, 257, 257, 4, 4, 24}, opt);
    check_options<TypeParam>({1, 100, 257, 4, 2, 24}, opt);
  }
}

TYPED_TEST(MasksTest, SoftcapAlibiAndBias) {
  const problem s{2, 133, 133, 6, 2, 40};  // 6 heads: ALiBi's non-power-of-two rule
  attn::softmax_options cap;
  cap.softcap = 2.5f;
  check_options<TypeParam>(s, cap, attn::serial{}, 4.0f);  // scores well beyond the cap
  cap.causal = true;
  check_options<TypeParam>(s, cap, attn::serial{}, 4.0f);

  attn::softmax_options alibi;
  alibi.alibi = true;
  check_options<TypeParam>(s, alibi);
  alibi.causal = true;
  check_options<TypeParam>({1, 1, 900, 8, 2, 64}, alibi);  // decode, split KV
  const std::vector<float> slopes{0.5f, 0.25f, 0.0f, 1.0f, 0.125f, 2.0f};
  alibi.alibi_slopes = slopes.data();
  check_options<TypeParam>(s, alibi);

  // Bias (B|1, Hq|1, Nq, Nk) in several memory orders, with -inf entries
  // removing pairs (one row loses every key).
  ref::rng g{3};
  for (const std::array<index_t, 2>& bh : {std::array<index_t, 2>{2, 6}, {1, 6}, {2, 1}, {1, 1}}) {
    ref::tensor4 bias = ref::random<4>(g, {bh[0], bh[1], s.nq, s.nk}, ref::padded_bhsd, -2.0f, 2.0f);
    for (index_t j = 0; j < s.nk; j += 3) bias.view(0, 0, 5, j) = -std::numeric_limits<float>::infinity();
    for (index_t j = 0; j < s.nk; ++j) bias.view(0, 0, 7, j) = -std::numeric_limits<float>::infinity();
    attn::softmax_options opt;
    opt.bias = bias.cview();
    check_options<TypeParam>(s, opt);
    opt.causal = true;
    opt.softcap = 3.0f;
    opt.alibi = true;
    check_options<TypeParam>(s, opt, attn::openmp{2});
  }
}

TYPED_TEST(MasksTest, CompositionsTheIssueNames) {
  const index_t t = TypeParam::kv_tile;
  const std::vector<float> sinks{0.5f, -1.0f, 2.0f, 0.0f};
  for (const problem& s : {problem{1, 3 * t + 5, 3 * t + 5, 4, 2, 32}, problem{1, 7, 2 * t + 3, 4, 1, 64}}) {
    attn::softmax_options opt;  // ALiBi + softcap + window
    opt.window = std::array<index_t, 2>{t / 2, 0};
    opt.softcap = 5.0f;
    opt.alibi = true;
    check_options<TypeParam>(s, opt);
    opt = {};  // sink logits + window
    opt.window = std::array<index_t, 2>{t - 1, 0};
    opt.sinks = sinks.data();
    check_options<TypeParam>(s, opt);
    opt.sinks = nullptr;  // sink tokens + window
    opt.sink_tokens = 4;
    check_options<TypeParam>(s, opt);
    opt.window = std::array<index_t, 2>{0, 0};  // a window of 0: the diagonal (+ sinks)
    check_options<TypeParam>(s, opt);
    opt.window = std::array<index_t, 2>{100000, 100000};  // wider than the sequence
    opt.sink_tokens = 0;
    check_options<TypeParam>(s, opt);
  }
}

TYPED_TEST(MasksTest, DecodeWithGqaOverALongCache) {
  const std::vector<std::int32_t> ids = documents({1500, 700, 800});
  for (index_t nq : {1, 4, 16}) {
    attn::softmax_options opt;
    opt.window = std::array<index_t, 2>{1000, 0};
    opt.sink_tokens = 4;
    opt.alibi = true;
    opt.softcap = 20.0f;
    check_options<TypeParam>({2, nq, 3000, 16, 4, 64}, opt, attn::openmp{2});
    attn::softmax_options docs;
    docs.document_ids = ids;
    docs.causal = true;
    check_options<TypeParam>({1, nq, 3000, 8, 2, 64}, docs, attn::openmp{2});
  }
}

TYPED_TEST(MasksTest, NanStaysInsideItsDocumentAndBehindAMinusInfBias) {
  const std::vector<std::int32_t> ids = documents({150, 170});
  const problem s{1, 320, 320, 2, 1, 32};
  for (int mode = 0; mode < 2; ++mode) {
    inputs in(s, 9);
    ref::inject_nan_row(in.v.view, 0, 200, 0);  // a value of the second document
    // A key of the second document: a mask removes its NaN score, while a
    // -inf bias cannot (NaN + -inf is NaN, as in the oracle), so only there.
    if (mode == 0) ref::inject_nan(in.k.view, 0, 210, 0, 3);
    ref::tensor4 bias = ref::filled<4>({1, 1, s.nq, s.nk}, ref::bshd_memory, 0.0f);
    attn::softmax_options opt;
    if (mode == 0) {
      opt.document_ids = ids;
      opt.causal = true;
    } else {  // the same pairs removed by a -inf bias instead, on full tiles too
      for (index_t i = 0; i < s.nq; ++i)
        for (index_t j = 0; j < s.nk; ++j)
          if (ids[i] != ids[j]) bias.view(0, 0, i, j) = -std::numeric_limits<float>::infinity();
      opt.bias = bias.cview();
    }
    SCOPED_TRACE(describe(s, opt));
    attn::attention<TypeParam>(in.q.cview(), in.k.cview(), in.v.cview(), in.out.view, in.lse.view, opt,
                               attn::openmp{2});
    const ref::softmax_result want = ref::softmax_attention(in.q.cview(), in.k.cview(), in.v.cview(), opt);
    EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), want));
    for (index_t i = 0; i < 150; ++i)  // the first document never sees the NaN
      for (index_t h = 0; h < s.hq; ++h) ASSERT_TRUE(std::isfinite(in.lse.view(0, i, h))) << i;
  }
}

// ---------------------------------------------------------------------------
// The mask and modifier API.

template <class Backend, class Mask, class Modifier = attn::no_modifier>
void check_mask(const problem& s, const Mask& mask, const ref::pair_predicate& allowed,
                const Modifier& modifier = {}, const ref::score_function& modify = {}) {
  inputs in(s, 5);
  attn::attention<Backend>(in.q.cview(), in.k.cview(), in.v.cview(), in.out.view, in.lse.view, mask,
                           modifier, {}, attn::openmp{2});
  const double scale = 1.0 / std::sqrt(double(s.d));
  auto identity = [](double x, index_t, index_t, index_t, index_t) { return x; };
  const ref::softmax_result want = ref::softmax_attention(
      in.q.cview(), in.k.cview(), in.v.cview(), scale, nullptr, allowed,
      modify ? modify : ref::score_function(identity));
  EXPECT_TRUE(ref::within_contract(in.out.cview(), in.lse.cview(), want));
}

// A dilated causal window with a per-head dilation, written by a user.
struct dilated_window {
  index_t offset, width;
  bool operator()(index_t, index_t h, index_t i, index_t j) const {
    const index_t back = i + offset - j;
    return back >= 0 && back < width && back % (h % 3 + 1) == 0;
  }
};

TYPED_TEST(MasksTest, UserPredicatesWithAndWithoutAClassifier) {
  const problem s{1, 300, 300, 6, 2, 32};
  const dilated_window pred{0, 90};
  check_mask<TypeParam>(s, attn::mask_from(pred), pred);
  auto classify = [](const attn::query_block& qb, index_t j0, index_t j1) {
    if (j0 > qb.i_end - 1 || j1 - 1 < qb.i_begin - 89) return attn::tile_kind::empty;
    return attn::tile_kind::partial;
  };
  check_mask<TypeParam>(s, attn::mask_from(pred, classify), pred);
  // Composition with built-ins: (predicate & causal) | sink tokens {0, 1, 2}.
  const auto composed = (attn::mask_from(pred) & attn::causal_mask{0}) |
                        attn::mask_from([](index_t, index_t, index_t, index_t j) { return j < 3; });
  check_mask<TypeParam>(s, composed, [&](index_t b, index_t h, index_t i, index_t j) {
    return (pred(b, h, i, j) && j <= i) || j < 3;
  });
}

TYPED_TEST(MasksTest, BlockMaskBuiltOnceAndReused) {
  const std::vector<std::int32_t> ids = documents({100, 150, 7, 143});
  const index_t n = static_cast<index_t>(ids.size());
  const problem s{1, n, n, 4, 2, 32};
  const auto m = attn::document_mask(ids, 0) & attn::causal_mask{0};
  auto want = [&](index_t, index_t, index_t i, index_t j) { return ids[i] == ids[j] && j <= i; };
  for (index_t block : {1, 64, 100}) {
    const attn::block_mask blocks = attn::block_mask::build(m, 1, 1, n, n, block, block);
    check_mask<TypeParam>(s, attn::blocked(blocks, m), want);
    check_mask<TypeParam>(s, attn::blocked(blocks, m), want);  // reused
  }
}

TYPED_TEST(MasksTest, UserScoreModifiersChain) {
  const problem s{1, 200, 260, 4, 4, 32};
  const std::vector<float> head_bias{0.5f, -0.25f, 1.0f, 0.0f};
  auto user = [&](float x, index_t, index_t h, index_t i, index_t j) {
    return x + head_bias[h] - 0.01f * static_cast<float>((i + 60 - j) % 7);
  };
  auto user_ref = [&](double x, index_t, index_t h, index_t i, index_t j) {
    return x + head_bias[h] - 0.01 * double((i + 60 - j) % 7);
  };
  const attn::causal_mask causal{60};
  auto causal_ref = [](index_t, index_t, index_t i, index_t j) { return j <= i + 60; };
  check_mask<TypeParam>(s, causal, causal_ref, attn::score_mod_from(user), user_ref);
  // softcap then the user's term, in that order.
  check_mask<TypeParam>(s, causal, causal_ref, attn::chain(attn::softcap{0.3f}, attn::score_mod_from(user)),
                        [&](double x, index_t b, index_t h, index_t i, index_t j) {
                          return user_ref(0.3 * std::tanh(x / 0.3), b, h, i, j);
                        });
}

// A predicate that counts its calls and records the pairs it saw.
struct counting_predicate {
  std::atomic<std::int64_t>* calls;
  std::atomic<std::int64_t>* inside_full_tiles;
  index_t keys_per_tile, rows_per_tile;
  bool operator()(index_t, index_t, index_t i, index_t j) const {
    calls->fetch_add(1);
    // A pair this far below the diagonal lies in a tile the classifier
    // declares full, whatever the tile grid.
    if (j + keys_per_tile + rows_per_tile <= i) inside_full_tiles->fetch_add(1);
    return j <= i;
  }
};

TYPED_TEST(MasksTest, FullTilesNeverCallTheMask) {
  const index_t n = 700;
  const problem s{1, n, n, 2, 2, 16};
  std::atomic<std::int64_t> calls{0}, inside{0};
  const counting_predicate pred{&calls, &inside, TypeParam::kv_tile, TypeParam::query_tile_rows};
  auto classify = [](const attn::query_block& qb, index_t j0, index_t j1) {
    if (j0 > qb.i_end - 1) return attn::tile_kind::empty;
    return j1 - 1 <= qb.i_begin ? attn::tile_kind::full : attn::tile_kind::partial;
  };
  auto causal_ref = [](index_t, index_t, index_t i, index_t j) { return j <= i; };
  check_mask<TypeParam>(s, attn::mask_from(pred, classify), causal_ref);
  EXPECT_GT(calls.load(), 0);
  EXPECT_EQ(inside.load(), 0) << "the mask was evaluated inside a full tile";
  EXPECT_LT(calls.load(), n * n * 2 / 2) << "more calls than the partial tiles hold";

  // Every tile full: the mask is never called at all.
  calls = 0;
  auto all_full = [](const attn::query_block&, index_t, index_t) { return attn::tile_kind::full; };
  check_mask<TypeParam>(s, attn::mask_from(pred, all_full),
                        [](index_t, index_t, index_t, index_t) { return true; });
  EXPECT_EQ(calls.load(), 0);
}

// ---------------------------------------------------------------------------

TEST(AlibiSlopes, StandardForAnyHeadCount) {
  for (index_t n = 1; n <= 80; ++n) {
    const std::vector<float> got = attn::alibi_slopes(n);
    const std::vector<double> want = ref::alibi_slopes(n);
    ASSERT_EQ(got.size(), want.size()) << n;
    for (std::size_t h = 0; h < got.size(); ++h) EXPECT_NEAR(got[h], want[h], 1e-7 * want[h]) << n << " " << h;
  }
  EXPECT_FLOAT_EQ(attn::alibi_slopes(8)[0], 0.5f);  // the paper's 8-head slopes 1/2 ... 1/256
  EXPECT_FLOAT_EQ(attn::alibi_slopes(8)[7], 1.0f / 256);
}

TEST(MaskErrors, NameTheArgument) {
  ref::rng g{1};
  const ref::tensor4 q = ref::random_bshd(g, 1, 4, 2, 8);
  const ref::tensor4 kv = ref::random_bshd(g, 1, 6, 2, 8);
  ref::tensor4 out = ref::filled<4>({1, 4, 2, 8}, ref::bshd_memory, 3.0f);
  auto message = [&](const attn::softmax_options& opt) {
    return ref::error_message([&] { attn::attention(q.cview(), kv.cview(), kv.cview(), out.view, {}, opt); });
  };
  auto expect_message = [&](const attn::softmax_options& opt, const std::string& part) {
    const std::string m = message(opt);
    EXPECT_NE(m.find(part), std::string::npos) << "message: '" << m << "' lacks '" << part << "'";
    for (float x : out.storage) ASSERT_EQ(x, 3.0f) << "output written on bad input";
  };
  attn::softmax_options o;
  o.softcap = 0.0f;
  expect_message(o, "softcap: expected a finite value > 0");
  o = {};
  o.softcap = std::numeric_limits<float>::quiet_NaN();
  expect_message(o, "softcap");
  const std::vector<std::int32_t> short_ids{1, 1, 2};
  o = {};
  o.document_ids = short_ids;
  expect_message(o, "document_ids: expected one id per key (Nk = 6)");
  const std::vector<std::int32_t> split{1, 1, 2, 2, 1, 1};
  o.document_ids = split;
  expect_message(o, "contiguous");
  o = {};
  o.prefix_lm = 2;
  o.window = std::array<index_t, 2>{3, 0};
  expect_message(o, "prefix_lm");
  o = {};
  o.prefix_lm = -1;
  expect_message(o, "prefix_lm: expected a prefix length >= 0");
  const ref::tensor4 bad_bias = ref::random_bshd(g, 1, 2, 4, 5);
  o = {};
  o.bias = bad_bias.cview();
  expect_message(o, "bias: expected shape (B|1, Hq|1, Nq, Nk) = (1|1, 2|1, 4, 6)");
  o.bias = attn::view4<const float>{out.view.data, out.view.extent, out.view.stride};
  expect_message(o, "bias");

  // The mask overload: option fields must be unset; block masks must fit.
  o = {};
  o.causal = true;
  EXPECT_NE(ref::error_message([&] {
              attn::attention(q.cview(), kv.cview(), kv.cview(), out.view, {}, attn::causal_mask{2},
                              attn::no_modifier{}, o);
            }).find("softmax_options: expected no mask or score-modifier fields"),
            std::string::npos);
  const attn::block_mask wrong = attn::block_mask::build(attn::causal_mask{0}, 1, 1, 5, 5, 2, 2);
  EXPECT_NE(ref::error_message([&] {
              attn::attention(q.cview(), kv.cview(), kv.cview(), out.view, {},
                              attn::blocked(wrong, attn::causal_mask{2}));
            }).find("block_mask: expected blocks built for this problem"),
            std::string::npos);
  for (float x : out.storage) ASSERT_EQ(x, 3.0f) << "output written on bad input";
}

}  // namespace masks_test
