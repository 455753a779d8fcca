// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Sliding-window attention as Mistral and gpt-oss use it: each token sees the
// last W keys (itself included), StreamingLLM's first sink tokens stay
// visible, and gpt-oss's per-head sink logits add a virtual key of value 0.
// Prefill, then one decode step over the same cache, checked by hand.
//
//   g++ -std=c++20 -O2 -march=native -fopenmp 02_sliding_window.cpp
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <attn/attn.hpp>

int main() {
  using attn::index_t;
  const index_t tokens = 1000, q_heads = 8, kv_heads = 2, dim = 64, window = 128, sinks = 4;

  std::vector<float> q(tokens * q_heads * dim), k(tokens * kv_heads * dim), v(k.size()),
      out(q.size());
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = normal(gen);
  const std::vector<float> sink_logits = {0.5f, -1.0f, 0.0f, 2.0f, 0.5f, -1.0f, 0.0f, 2.0f};  // (Hq)

  const auto K = attn::bshd<const float>(k.data(), 1, tokens, kv_heads, dim);
  const auto V = attn::bshd<const float>(v.data(), 1, tokens, kv_heads, dim);

  // Mistral's "window W" is window{W - 1, 0}: W - 1 keys to the left and the
  // token itself. The window is bottom-right aligned like causal, so the same
  // options serve prefill (Nq = Nk) and decode (Nq = 1 against the cache).
  attn::softmax_options opt;
  opt.window = std::array<index_t, 2>{window - 1, 0};
  opt.sink_tokens = sinks;              // keys 0..3 visible to every query
  opt.sinks = sink_logits.data();       // + exp(sigma_h) in each row's sum
  attn::attention(attn::bshd<const float>(q.data(), 1, tokens, q_heads, dim), K, V,
                  attn::bshd(out.data(), 1, tokens, q_heads, dim), {}, opt, attn::openmp{});

  // Decode: a new query over all `tokens` keys; it sees keys 0..3 and the last
  // `window` keys (it sits at position tokens - 1).
  std::vector<float> q1(q_heads * dim), out1(q_heads * dim);
  for (float& x : q1) x = normal(gen);
  attn::attention(attn::bshd<const float>(q1.data(), 1, 1, q_heads, dim), K, V,
                  attn::bshd(out1.data(), 1, 1, q_heads, dim), {}, opt);

  // By hand, query head 3 (kv head 3 / (8 / 2) = 0), channel 0.
  const index_t h = 3, g = h / (q_heads / kv_heads);
  double num = 0, den = std::exp(double(sink_logits[h]));  // the sink key: weight, value 0
  for (index_t j = 0; j < tokens; ++j) {
    if (j >= sinks && j < tokens - window) continue;  // outside both the sinks and the window
    double s = 0;
    for (index_t d = 0; d < dim; ++d) s += q1[h * dim + d] * k[(j * kv_heads + g) * dim + d];
    const double p = std::exp(s / std::sqrt(double(dim)));
    num += p * v[(j * kv_heads + g) * dim];
    den += p;
  }
  const double want = num / den, got = out1[h * dim];
  std::printf("decode out[head 3][0] = %.6f, by hand %.6f\n", got, want);
  return std::fabs(got - want) < 1e-4 * std::max(1.0, std::fabs(want)) ? 0 : 1;
}
