// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Your first attn program: causal self-attention with grouped-query heads,
// then the same keys attended by one new token (decode), on all cores.
//
//   g++ -std=c++20 -O2 -march=native -fopenmp 01_dense_attention.cpp
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <attn/attn.hpp>

int main() {
  const attn::index_t batch = 2, tokens = 300, q_heads = 8, kv_heads = 2, dim = 64;

  // Tensors in the (batch, sequence, heads, dim) layout of FlashAttention.
  // attn::bhsd(...) views PyTorch's (batch, heads, sequence, dim) memory instead.
  std::vector<float> q(batch * tokens * q_heads * dim), k(batch * tokens * kv_heads * dim),
      v(batch * tokens * kv_heads * dim), out(batch * tokens * q_heads * dim),
      lse(batch * tokens * q_heads);
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = normal(gen);

  const auto Q = attn::bshd<const float>(q.data(), batch, tokens, q_heads, dim);
  const auto K = attn::bshd<const float>(k.data(), batch, tokens, kv_heads, dim);
  const auto V = attn::bshd<const float>(v.data(), batch, tokens, kv_heads, dim);

  // Prefill: out = softmax(q k^T / sqrt(dim), causal) v, plus log-sum-exp per row.
  attn::softmax_options causal;
  causal.causal = true;
  attn::attention(Q, K, V, attn::bshd(out.data(), batch, tokens, q_heads, dim),
                  attn::bsh(lse.data(), batch, tokens, q_heads), causal, attn::openmp{});

  // Decode: one query per sequence against the whole cache (causal masks are
  // bottom-right aligned, so the new token sees every key).
  std::vector<float> q1(batch * q_heads * dim, 0.5f), out1(batch * q_heads * dim);
  attn::attention(attn::bshd<const float>(q1.data(), batch, 1, q_heads, dim), K, V,
                  attn::bshd(out1.data(), batch, 1, q_heads, dim), {}, causal);

  // Bad arguments throw attn::error naming the argument.
  try {
    attn::attention(Q, attn::bshd<const float>(k.data(), batch, tokens, 3, dim), V,
                    attn::bshd(out.data(), batch, tokens, q_heads, dim));
    return 1;
  } catch (const attn::error& e) {
    std::printf("expected error: %s\n", e.what());
  }

  // The first query attends only to itself: its output is v[0] of its kv head.
  double diff = 0;
  for (attn::index_t d = 0; d < dim; ++d) diff = std::fmax(diff, std::fabs(out[d] - v[d]));
  std::printf("out[0] == v[0]: max difference %.2e, lse[0] = %.4f\n", diff, lse[0]);
  return diff < 1e-6 && std::isfinite(out1[0]) ? 0 : 1;
}
