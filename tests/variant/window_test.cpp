// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// Sliding-window softmax attention with sink tokens (DESIGN §2) against the
// fp64 oracle, on every backend of the registry.

#include <gtest/gtest.h>

#include <array>
#include <string>

#include "attn/attn.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace window_test {

using attn::index_t;
namespace ref = attn::ref;

struct window_case {
  index_t nq, nk, hq, hkv, d;
  index_t left, right;
  index_t sink_tokens;
  bool causal;
};

template <class Backend, class Exec>
void check(const window_case& c, const Exec& exec) {
  SCOPED_TRACE("Nq=" + std::to_string(c.nq) + " Nk=" + std::to_string(c.nk) + " window{" +
               std::to_string(c.left) + ", " + std::to_string(c.right) + "} sinks=" +
               std::to_string(c.sink_tokens) + " causal=" + std::to_string(c.causal));
  ref::rng g{7};
  const ref::tensor4 q = ref::random_bshd(g, 2, c.nq, c.hq, c.d);
  const ref::tensor4 k = ref::random_bhsd(g, 2, c.nk, c.hkv, c.d);
  const ref::tensor4 v = ref::random_padded(g, 2, c.nk, c.hkv, c.d);
  ref::tensor4 out = ref::filled<4>({2, c.nq, c.hq, c.d}, ref::bshd_memory, 0.0f);
  ref::tensor3 lse = ref::filled<3>({2, c.nq, c.hq}, ref::bsh_memory, 0.0f);
  attn::softmax_options opt;
  opt.window = std::array<index_t, 2>{c.left, c.right};
  opt.sink_tokens = c.sink_tokens;
  opt.causal = c.causal;
  attn::attention<Backend>(q.cview(), k.cview(), v.cview(), out.view, lse.view, opt, exec);
  const ref::softmax_result want = ref::softmax_attention(q.cview(), k.cview(), v.cview(), opt);
  EXPECT_TRUE(ref::within_contract(out.cview(), lse.cview(), want));
}

template <class Backend>
class WindowTest : public ::testing::Test {};
TYPED_TEST_SUITE(WindowTest, ref::backend_types, ref::backend_name);

TYPED_TEST(WindowTest, MatchesTheOracle) {
  const index_t t = TypeParam::kv_tile;
  const window_case cases[] = {
      {200, 200, 4, 2, 32, 16, 0, 0, false},          // Mistral-style causal window
      {200, 200, 4, 2, 32, 16, 0, 0, true},           // the same through causal
      {257, 257, 2, 1, 24, t - 1, 0, 0, false},       // window edge at a tile edge
      {257, 257, 2, 1, 24, t, 0, 0, false},
      {130, 300, 4, 4, 16, 31, 7, 0, false},          // two-sided, Nq != Nk
      {97, 97, 2, 2, 8, 0, 0, 0, false},              // the diagonal only
      {97, 97, 2, 2, 8, -1, 0, 0, false},             // window{-1, 0} is causal
      {97, 97, 2, 2, 8, 5, -1, 0, false},             // unbounded on the right
      {64, 64, 2, 1, 16, 1000, 1000, 0, false},       // wider than the sequence
      {300, 300, 4, 2, 32, 40, 0, 4, false},          // StreamingLLM sink tokens
      {300, 300, 4, 2, 32, 40, 0, 4, true},
      {150, 100, 2, 2, 16, 10, 0, 3, false},          // Nq > Nk: the first rows are empty
      {1, 1000, 32, 8, 64, 255, 0, 4, false},         // decode with window and sinks
      {1, 1000, 8, 8, 72, 100, 0, 0, true},
  };
  for (const window_case& c : cases) check<TypeParam>(c, attn::serial{});
  check<TypeParam>({1, 3000, 32, 8, 64, 1000, 0, 4, false}, attn::openmp{2});  // split KV
  check<TypeParam>({300, 300, 4, 2, 32, 40, 0, 4, false}, attn::openmp{2});
}

TEST(WindowErrors, RejectsBadWindowsAndSinkTokensWithoutAWindow) {
  ref::rng g{1};
  const ref::tensor4 q = ref::random_bshd(g, 1, 4, 2, 8);
  const ref::tensor4 kv = ref::random_bshd(g, 1, 4, 2, 8);
  ref::tensor4 out = ref::filled<4>({1, 4, 2, 8}, ref::bshd_memory, 0.0f);
  auto message = [&](const attn::softmax_options& opt) {
    return ref::error_message([&] { attn::attention(q.cview(), kv.cview(), kv.cview(), out.view, {}, opt); });
  };
  attn::softmax_options bad_window;
  bad_window.window = std::array<index_t, 2>{-2, 0};
  EXPECT_NE(message(bad_window).find("window: expected {left, right} with each >= -1"),
            std::string::npos);
  EXPECT_NE(message(bad_window).find("{-2, 0}"), std::string::npos);
  attn::softmax_options sinks_alone;
  sinks_alone.sink_tokens = 4;
  EXPECT_NE(message(sinks_alone).find("sink_tokens: expected a window"), std::string::npos);
}

}  // namespace window_test
