// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Argument checks at the public entry (DESIGN §3): every bad argument throws
// attn::error naming the argument, the expected and the actual value, before
// anything is written.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace errors_test {

using attn::index_t;
namespace ref = attn::ref;

constexpr float sentinel = -1234.5f;

// A valid problem: q (2, 5, 4, 16), k (2, 9, 2, 16), v (2, 9, 2, 12),
// out (2, 5, 4, 12), lse (2, 5, 4). Each test breaks one thing.
struct problem {
  ref::rng g{42};
  ref::tensor4 q = ref::random_bshd(g, 2, 5, 4, 16);
  ref::tensor4 k = ref::random_bshd(g, 2, 9, 2, 16);
  ref::tensor4 v = ref::random_bshd(g, 2, 9, 2, 12);
  ref::tensor4 out = ref::filled<4>({2, 5, 4, 12}, ref::bshd_memory, sentinel);
  ref::tensor3 lse = ref::filled<3>({2, 5, 4}, ref::bsh_memory, sentinel);
  attn::view4<const float> qv = q.cview(), kv = k.cview(), vv = v.cview();
  attn::view4<float> ov = out.view;
  attn::view3<float> lv = lse.view;
  attn::softmax_options opt;

  void call() const { attn::attention(qv, kv, vv, ov, lv, opt); }

  bool outputs_untouched() const {
    for (float x : out.storage)
      if (x != sentinel) return false;
    for (float x : lse.storage)
      if (x != sentinel) return false;
    return true;
  }
};

void expect_rejected(const problem& p, std::initializer_list<std::string> parts) {
  EXPECT_TRUE(ref::throws_naming([&] { p.call(); }, parts));
  EXPECT_TRUE(p.outputs_untouched()) << "out/lse written before the argument check failed";
}

TEST(DenseErrors, ValidProblemRuns) {
  problem p;
  EXPECT_NO_THROW(p.call());
  EXPECT_FALSE(p.outputs_untouched());
}

TEST(DenseErrors, NullViews) {
  {
    problem p;
    p.qv.data = nullptr;
    expect_rejected(p, {"q", "non-null", "null"});
  }
  {
    problem p;
    p.kv.data = nullptr;
    expect_rejected(p, {"k", "non-null", "null"});
  }
  {
    problem p;
    p.vv.data = nullptr;
    expect_rejected(p, {"v", "non-null", "null"});
  }
  {
    problem p;
    p.ov.data = nullptr;
    expect_rejected(p, {"out", "non-null", "null"});
  }
}

TEST(DenseErrors, ShapeMismatches) {
  {
    problem p;  // k batch 1, q batch 2
    p.kv.extent[0] = 1;
    expect_rejected(p, {"k:", "B=2", "(1, 9, 2, 16)"});
  }
  {
    problem p;  // Dk of k differs from q's
    p.kv.extent[3] = 15;
    expect_rejected(p, {"k:", "Dk=16", "(2, 9, 2, 15)"});
  }
  {
    problem p;  // v has fewer keys than k
    p.vv.extent[1] = 8;
    expect_rejected(p, {"v:", "Nk=9", "(2, 8, 2, 12)"});
  }
  {
    problem p;  // v has another kv head count
    p.vv.extent[2] = 1;
    expect_rejected(p, {"v:", "Hkv=2", "(2, 9, 1, 12)"});
  }
  {
    problem p;  // out's Dv differs from v's
    p.ov.extent[3] = 11;
    expect_rejected(p, {"out:", "(B=2, Nq=5, Hq=4, Dv=12)", "(2, 5, 4, 11)"});
  }
  {
    problem p;  // out has fewer queries
    p.ov.extent[1] = 4;
    expect_rejected(p, {"out:", "Nq=5", "(2, 4, 4, 12)"});
  }
  {
    problem p;
    p.lv.extent[2] = 3;
    expect_rejected(p, {"lse:", "(B=2, Nq=5, Hq=4)", "(2, 5, 3)"});
  }
  {
    problem p;  // an extent below zero
    p.qv.extent[1] = -5;
    expect_rejected(p, {"q:", "non-negative extents", "-5"});
  }
}

TEST(DenseErrors, GqaHeadsMustDivide) {
  problem p;
  ref::rng g(3);
  ref::tensor4 k3 = ref::random_bshd(g, 2, 9, 3, 16), v3 = ref::random_bshd(g, 2, 9, 3, 12);
  p.kv = k3.cview();
  p.vv = v3.cview();
  expect_rejected(p, {"k", "Hq = 4", "Hkv = 3"});
}

TEST(DenseErrors, NegativeStrides) {
  {
    problem p;
    p.qv.stride[3] = -1;
    expect_rejected(p, {"q:", "non-negative strides", "stride -1 in dimension 3"});
  }
  {
    problem p;
    p.kv.stride[1] = -32;
    expect_rejected(p, {"k:", "non-negative strides", "stride -32 in dimension 1"});
  }
  {
    problem p;
    p.vv.stride[0] = -216;
    expect_rejected(p, {"v:", "non-negative strides", "stride -216 in dimension 0"});
  }
  {
    problem p;
    p.ov.stride[2] = -12;
    expect_rejected(p, {"out:", "non-negative strides", "stride -12 in dimension 2"});
  }
  {
    problem p;
    p.lv.stride[1] = -4;
    expect_rejected(p, {"lse:", "non-negative strides", "stride -4 in dimension 1"});
  }
}

TEST(DenseErrors, NonFiniteScale) {
  for (float s : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity()}) {
    problem p;
    p.opt.scale = s;
    const std::string shown = std::isnan(s) ? "nan" : (s > 0 ? "inf" : "-inf");
    SCOPED_TRACE(shown);
    expect_rejected(p, {"scale", "finite", shown});
  }
}

TEST(DenseErrors, ElementCountOverflow) {
  problem p;  // (2, 2^32, 2^32, 16) elements do not fit in 64 bits
  p.qv.extent = {2, index_t{1} << 32, index_t{1} << 32, 16};
  expect_rejected(p, {"q:", "fits in 64 bits"});
}

TEST(DenseErrors, OutputAliasesAnInput) {
  {
    problem p;  // out written over q's memory
    std::vector<float> shared(p.q.storage.size(), sentinel);
    p.qv.data = shared.data();
    p.ov = attn::bshd(shared.data() + 1, 2, 5, 4, 12);
    EXPECT_TRUE(ref::throws_naming([&] { p.call(); }, {"out", "disjoint from q", "overlapping"}));
    for (float x : shared) ASSERT_EQ(x, sentinel) << "written before the check failed";
  }
  {
    problem p;  // out on k's memory
    p.ov = attn::bshd(const_cast<float*>(p.k.storage.data()), 2, 5, 4, 12);
    const std::vector<float> before = p.k.storage;
    EXPECT_TRUE(ref::throws_naming([&] { p.call(); }, {"out", "disjoint from k"}));
    EXPECT_EQ(p.k.storage, before);
  }
  {
    problem p;  // out on v's memory
    p.ov = attn::bshd(const_cast<float*>(p.v.storage.data()), 2, 5, 4, 12);
    const std::vector<float> before = p.v.storage;
    EXPECT_TRUE(ref::throws_naming([&] { p.call(); }, {"out", "disjoint from v"}));
    EXPECT_EQ(p.v.storage, before);
  }
  {
    problem p;  // lse inside out
    p.lv = attn::bsh(p.out.storage.data() + 7, 2, 5, 4);
    expect_rejected(p, {"lse", "disjoint from out", "overlapping"});
  }
  {
    problem p;  // lse on q's memory
    p.lv = attn::bsh(const_cast<float*>(p.q.storage.data()), 2, 5, 4);
    const std::vector<float> before = p.q.storage;
    EXPECT_TRUE(ref::throws_naming([&] { p.call(); }, {"lse", "disjoint from q"}));
    EXPECT_EQ(p.q.storage, before);
  }
}

TEST(DenseErrors, WrittenViewWithZeroStride) {
  {
    problem p;
    p.ov.stride[3] = 0;
    expect_rejected(p, {"out:", "own address", "stride 0 in dimension 3"});
  }
  {
    problem p;
    p.ov.stride[1] = 0;
    expect_rejected(p, {"out:", "own address", "stride 0 in dimension 1"});
  }
  {
    problem p;
    p.lv.stride[2] = 0;
    expect_rejected(p, {"lse:", "own address", "stride 0 in dimension 2"});
  }
}

// A written view whose non-zero strides still map two elements to one
// address: out (2, 5, 4, 12) with head stride 1 and channel stride 1, so
// out(b, i, h, d) and out(b, i, h + 1, d - 1) are one float. Threads writing
// different rows then race on it; DESIGN §3 asks for aliased buffers to be
// rejected at the entry.
TEST(DenseErrors, WrittenViewOverlappingItself) {
  problem p;
  p.ov.stride = {5 * 16, 16, 1, 1};
  expect_rejected(p, {"out"});
}

}  // namespace errors_test
