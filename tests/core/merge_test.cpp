// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// attn::merge / attn::merge_row (DESIGN §2): partial results over disjoint
// key sets merge into the result over their union.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/random.hpp"
#include "reference/checks.hpp"

namespace merge_test {

using attn::index_t;
namespace ref = attn::ref;

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// Keys [begin, end) of a (B, Nk, H, D) view.
attn::view4<const float> keys(attn::view4<const float> t, index_t begin, index_t end) {
  t.data += begin * t.stride[1];
  t.extent[1] = end - begin;
  return t;
}

// q (B, Nq, Hq, Dk), k and v (B, Nk, Hkv, D) and the attention of q over the
// key range [begin, end).
struct halves {
  index_t b, nq, nk, hq, hkv, dk, dv;
  ref::rng g{2024};
  ref::tensor4 q = ref::random_bshd(g, b, nq, hq, dk);
  ref::tensor4 k = ref::random_bhsd(g, b, nk, hkv, dk);
  ref::tensor4 v = ref::random_padded(g, b, nk, hkv, dv);

  struct part {
    ref::tensor4 o;
    ref::tensor3 lse;
  };
  part attend(index_t begin, index_t end) const {
    part p{ref::filled<4>({b, nq, hq, dv}, ref::bshd_memory, 0.0f),
           ref::filled<3>({b, nq, hq}, ref::bsh_memory, 0.0f)};
    attn::attention(q.cview(), keys(k.cview(), begin, end), keys(v.cview(), begin, end), p.o.view,
                    p.lse.view);
    return p;
  }
  ref::softmax_result oracle() const {
    return ref::softmax_attention(q.cview(), k.cview(), v.cview());
  }
};

TEST(Merge, TwoHalvesGiveTheFullAttention) {
  for (index_t split : {index_t{1}, index_t{50}, index_t{64}, index_t{99}}) {
    SCOPED_TRACE("split at key " + std::to_string(split));
    const halves h{2, 7, 100, 4, 2, 24, 20};
    const auto a = h.attend(0, split), b = h.attend(split, h.nk);
    auto o = ref::filled<4>({2, 7, 4, 20}, ref::padded_bshd, -7.0f);
    auto lse = ref::filled<3>({2, 7, 4}, ref::padded_bsh, -7.0f);
    attn::merge(a.o.cview(), a.lse.cview(), b.o.cview(), b.lse.cview(), o.view, lse.view);
    EXPECT_TRUE(ref::within_contract(o.cview(), lse.cview(), h.oracle()));
    EXPECT_TRUE(o.padding_holds(-7.0f));
    EXPECT_TRUE(lse.padding_holds(-7.0f));
  }
}

TEST(Merge, IsCommutative) {
  const halves h{1, 5, 40, 2, 1, 16, 16};
  const auto a = h.attend(0, 13), b = h.attend(13, h.nk);
  auto ab = ref::filled<4>({1, 5, 2, 16}, ref::bshd_memory, 0.0f);
  auto ba = ref::filled<4>({1, 5, 2, 16}, ref::bshd_memory, 0.0f);
  auto lab = ref::filled<3>({1, 5, 2}, ref::bsh_memory, 0.0f);
  auto lba = ref::filled<3>({1, 5, 2}, ref::bsh_memory, 0.0f);
  attn::merge(a.o.cview(), a.lse.cview(), b.o.cview(), b.lse.cview(), ab.view, lab.view);
  attn::merge(b.o.cview(), b.lse.cview(), a.o.cview(), a.lse.cview(), ba.view, lba.view);
  EXPECT_LE(ref::compare<4>(ab.cview(), ba.cview()).rel_frobenius, 1e-6);
  EXPECT_LE(ref::compare<3>(lab.cview(), lba.cview()).max_abs, 1e-6);
}

TEST(Merge, InPlaceIntoFirstPart) {
  const halves h{2, 6, 90, 4, 4, 8, 8};
  auto a = h.attend(0, 30);
  const auto b = h.attend(30, h.nk);
  attn::merge(a.o.cview(), a.lse.cview(), b.o.cview(), b.lse.cview(), a.o.view, a.lse.view);
  EXPECT_TRUE(ref::within_contract(a.o.cview(), a.lse.cview(), h.oracle()));
}

TEST(Merge, EmptyPartsDropOut) {
  const halves h{1, 4, 30, 2, 2, 8, 8};
  const auto full = h.attend(0, h.nk);
  // An empty part: lse -inf everywhere; its o values must not matter.
  auto empty_o = ref::filled<4>({1, 4, 2, 8}, ref::bshd_memory, 5.0f);
  auto empty_lse = ref::filled<3>({1, 4, 2}, ref::bsh_memory, neg_inf);
  for (bool empty_first : {true, false}) {
    SCOPED_TRACE(empty_first ? "empty part first" : "empty part second");
    auto o = ref::filled<4>({1, 4, 2, 8}, ref::bshd_memory, 0.0f);
    auto lse = ref::filled<3>({1, 4, 2}, ref::bsh_memory, 0.0f);
    if (empty_first)
      attn::merge(empty_o.cview(), empty_lse.cview(), full.o.cview(), full.lse.cview(), o.view,
                  lse.view);
    else
      attn::merge(full.o.cview(), full.lse.cview(), empty_o.cview(), empty_lse.cview(), o.view,
                  lse.view);
    EXPECT_EQ(o.storage, full.o.storage);
    EXPECT_EQ(lse.storage, full.lse.storage);
  }
}

TEST(Merge, TwoEmptyPartsGiveAnEmptyRow) {
  // Both -inf: lse -inf and out 0 (DESIGN §1: a row with no allowed key).
  auto zeros = ref::filled<4>({1, 3, 2, 5}, ref::bshd_memory, 0.0f);
  auto empty_lse = ref::filled<3>({1, 3, 2}, ref::bsh_memory, neg_inf);
  auto o = ref::filled<4>({1, 3, 2, 5}, ref::bshd_memory, 9.0f);
  auto lse = ref::filled<3>({1, 3, 2}, ref::bsh_memory, 9.0f);
  attn::merge(zeros.cview(), empty_lse.cview(), zeros.cview(), empty_lse.cview(), o.view, lse.view);
  EXPECT_EQ(std::count(o.storage.begin(), o.storage.end(), 0.0f), std::ssize(o.storage));
  EXPECT_EQ(std::count(lse.storage.begin(), lse.storage.end(), neg_inf), std::ssize(lse.storage));
}

TEST(Merge, TwoEmptyPartsIgnoreTheirValues) {
  // -inf parts drop out (DESIGN §2), so what an empty part holds in o cannot
  // reach the result, even when both parts are empty.
  auto junk = ref::filled<4>({1, 3, 2, 5}, ref::bshd_memory, 5.0f);
  auto empty_lse = ref::filled<3>({1, 3, 2}, ref::bsh_memory, neg_inf);
  auto o = ref::filled<4>({1, 3, 2, 5}, ref::bshd_memory, 9.0f);
  auto lse = ref::filled<3>({1, 3, 2}, ref::bsh_memory, 9.0f);
  attn::merge(junk.cview(), empty_lse.cview(), junk.cview(), empty_lse.cview(), o.view, lse.view);
  EXPECT_EQ(std::count(o.storage.begin(), o.storage.end(), 0.0f), std::ssize(o.storage))
      << "o[0] = " << o.storage[0] << ": an empty part's values reached the result";
  EXPECT_EQ(std::count(lse.storage.begin(), lse.storage.end(), neg_inf), std::ssize(lse.storage));
}

::testing::AssertionResult throws_naming(const std::function<void()>& call,
                                         const std::string& name) {
  try {
    call();
  } catch (const attn::error& e) {
    const std::string what = e.what();
    if (what.rfind(name + ":", 0) != 0)
      return ::testing::AssertionFailure()
             << "message \"" << what << "\" does not start with " << name;
    if (what.find("expected") == std::string::npos || what.find("got") == std::string::npos)
      return ::testing::AssertionFailure() << "message \"" << what << "\" lacks expected/got";
    return ::testing::AssertionSuccess() << what;
  }
  return ::testing::AssertionFailure() << "did not throw attn::error";
}

TEST(Merge, ShapeErrorsNameTheArgument) {
  ref::rng g(1);
  auto oa = ref::random_bshd(g, 1, 3, 2, 4), ob = ref::random_bshd(g, 1, 3, 2, 4);
  auto o = ref::filled<4>({1, 3, 2, 4}, ref::bshd_memory, 0.0f);
  auto la = ref::filled<3>({1, 3, 2}, ref::bsh_memory, 0.0f);
  auto lb = ref::filled<3>({1, 3, 2}, ref::bsh_memory, 0.0f);
  auto l = ref::filled<3>({1, 3, 2}, ref::bsh_memory, 0.0f);
  auto call = [&](attn::view4<const float> a, attn::view3<const float> al,
                  attn::view4<const float> b, attn::view3<const float> bl, attn::view4<float> out,
                  attn::view3<float> lout) {
    return [=] { attn::merge(a, al, b, bl, out, lout); };
  };
  auto bad4 = [](attn::view4<float> t, int dim) {
    t.extent[dim] += 1;
    return t;
  };
  auto bad3 = [](attn::view3<float> t, int dim) {
    t.extent[dim] += 1;
    return t;
  };
  const auto oav = oa.cview(), obv = ob.cview();
  EXPECT_TRUE(throws_naming(call(oav, la.view, bad4(ob.view, 3), lb.view, o.view, l.view), "o_b"));
  EXPECT_TRUE(throws_naming(call(oav, la.view, obv, lb.view, bad4(o.view, 1), l.view), "o"));
  EXPECT_TRUE(throws_naming(call(oav, bad3(la.view, 2), obv, lb.view, o.view, l.view), "lse_a"));
  EXPECT_TRUE(throws_naming(call(oav, la.view, obv, bad3(lb.view, 0), o.view, l.view), "lse_b"));
  EXPECT_TRUE(throws_naming(call(oav, la.view, obv, lb.view, o.view, bad3(l.view, 1)), "lse"));
  EXPECT_TRUE(throws_naming(call(oav, la.view, obv, lb.view, attn::view4<float>{}, l.view), "o"));
  EXPECT_TRUE(throws_naming(call(oav, la.view, obv, {}, o.view, l.view), "lse"));
  for (float x : o.storage) EXPECT_EQ(x, 0.0f) << "o written before a check failed";
}

// merge_row on numbers worked by hand: parts with sums 2 and 6 (lse = log 2,
// log 6) and values 1 and 3 merge to lse = log 8, o = (2*1 + 6*3) / 8 = 2.5.
TEST(MergeRow, WorkedExample) {
  std::vector<float> o{1.0f, -1.0f, 0.0f};
  const std::vector<float> ob{3.0f, 5.0f, 4.0f};
  float lse = std::log(2.0f);
  attn::merge_row(o.data(), lse, ob.data(), std::log(6.0f), 3);
  EXPECT_NEAR(lse, std::log(8.0f), 1e-6f);
  EXPECT_NEAR(o[0], 2.5f, 1e-6f);
  EXPECT_NEAR(o[1], (2.0f * -1.0f + 6.0f * 5.0f) / 8.0f, 1e-6f);
  EXPECT_NEAR(o[2], 3.0f, 1e-6f);
}

TEST(MergeRow, NullPartIsAZeroValuedPart) {
  // A sink logit sigma: a virtual key with value 0 and weight e^sigma.
  std::vector<float> o{4.0f, 8.0f};
  float lse = std::log(3.0f);
  attn::merge_row(o.data(), lse, nullptr, std::log(1.0f), 2);
  EXPECT_NEAR(lse, std::log(4.0f), 1e-6f);
  EXPECT_NEAR(o[0], 3.0f, 1e-6f);
  EXPECT_NEAR(o[1], 6.0f, 1e-6f);

  std::vector<float> e{0.0f, 0.0f};
  float empty = neg_inf;
  attn::merge_row(e.data(), empty, nullptr, 1.5f, 2);
  EXPECT_EQ(empty, 1.5f);
  EXPECT_EQ(e[0], 0.0f);
  EXPECT_EQ(e[1], 0.0f);
}

TEST(MergeRow, EmptyPartsDropOutExactly) {
  std::vector<float> o{1.0f, 2.0f};
  const std::vector<float> ob{7.0f, 9.0f};
  float lse = 0.25f;
  attn::merge_row(o.data(), lse, ob.data(), neg_inf, 2);  // b empty: unchanged
  EXPECT_EQ(lse, 0.25f);
  EXPECT_EQ(o, (std::vector<float>{1.0f, 2.0f}));

  float empty = neg_inf;
  std::vector<float> e{0.0f, 0.0f};
  attn::merge_row(e.data(), empty, ob.data(), 0.75f, 2);  // a empty: becomes b
  EXPECT_EQ(empty, 0.75f);
  EXPECT_EQ(e, ob);

  float both = neg_inf;
  std::vector<float> z{0.0f, 0.0f};
  attn::merge_row(z.data(), both, ob.data(), neg_inf, 2);  // both empty
  EXPECT_EQ(both, neg_inf);
  EXPECT_EQ(z, (std::vector<float>{0.0f, 0.0f}));
}

TEST(MergeRow, LargeLseDifferencesStayFinite) {
  // exp(lse) would overflow float; the max shift keeps the weights finite.
  std::vector<float> o{1.0f};
  const std::vector<float> ob{3.0f};
  float lse = 200.0f;
  attn::merge_row(o.data(), lse, ob.data(), 200.0f, 1);
  EXPECT_NEAR(lse, 200.0f + std::log(2.0f), 1e-4f);
  EXPECT_NEAR(o[0], 2.0f, 1e-6f);
  lse = -200.0f;
  o = {1.0f};
  attn::merge_row(o.data(), lse, ob.data(), 100.0f, 1);
  EXPECT_EQ(lse, 100.0f);
  EXPECT_EQ(o[0], 3.0f);
}

TEST(MergeRow, NanPropagates) {
  std::vector<float> o{1.0f, 1.0f};
  const std::vector<float> ob{2.0f, 2.0f};
  float lse = 0.5f;
  attn::merge_row(o.data(), lse, ob.data(), std::numeric_limits<float>::quiet_NaN(), 2);
  EXPECT_TRUE(std::isnan(lse));
  EXPECT_TRUE(std::isnan(o[0]) && std::isnan(o[1]));
}

}  // namespace merge_test
