// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// MoBA (Mixture of Block Attention): each query attends to its own key block
// (causally) and the top-k - 1 past blocks whose mean key it scores highest.
// Shows the gate's choices, then checks that with every block selected
// (Nk <= block_k * topk) MoBA is exactly causal attention.
//
//   g++ -std=c++20 -O2 -march=native -fopenmp 05_moba.cpp
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <attn/attn.hpp>

int main() {
  const attn::index_t tokens = 1024, q_heads = 4, kv_heads = 2, dim = 64;
  std::vector<float> q(tokens * q_heads * dim), k(tokens * kv_heads * dim), v(tokens * kv_heads * dim),
      out(tokens * q_heads * dim), lse(tokens * q_heads);
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = normal(gen);
  const auto Q = attn::bshd<const float>(q.data(), 1, tokens, q_heads, dim);
  const auto K = attn::bshd<const float>(k.data(), 1, tokens, kv_heads, dim);
  const auto V = attn::bshd<const float>(v.data(), 1, tokens, kv_heads, dim);

  // Blocks of 128 keys, 3 blocks per query (its own included).
  attn::moba_options moba;
  moba.block_k = 128;
  moba.topk = 3;
  const attn::moba_selection sel = attn::moba_gate(Q, K, moba);
  for (attn::index_t i : {5, 300, 1023}) {
    std::printf("query %4lld, head 0 attends to blocks:", static_cast<long long>(i));
    for (int c : sel(0, 0, i)) std::printf(" %d", c);  // ascending, -1 = none
    std::printf("\n");
  }
  attn::moba_attention(Q, K, V, attn::bshd(out.data(), 1, tokens, q_heads, dim),
                       attn::bsh(lse.data(), 1, tokens, q_heads), moba, attn::openmp{});

  // 8 blocks of 128 and topk = 8: every past block is selected, so MoBA must
  // equal causal attention.
  moba.topk = 8;
  attn::moba_attention(Q, K, V, attn::bshd(out.data(), 1, tokens, q_heads, dim), {}, moba);
  std::vector<float> dense(out.size());
  attn::softmax_options causal;
  causal.causal = true;
  attn::attention(Q, K, V, attn::bshd(dense.data(), 1, tokens, q_heads, dim), {}, causal);
  double diff = 0;
  for (std::size_t x = 0; x < out.size(); ++x) diff = std::fmax(diff, std::fabs(out[x] - dense[x]));
  std::printf("MoBA with every block vs causal attention: max difference %.2e\n", diff);
  return diff < 1e-5 ? 0 : 1;
}
