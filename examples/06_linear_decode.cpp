// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Generating with linear attention: a causal prefill of a 512-token prompt
// leaves an attn::linear_state, a fixed-size summary of every token seen, and
// attn::linear_step then decodes 64 more tokens one at a time from it, at the
// same cost for every token however long the context grows. elu(x) + 1
// features, normalised, with RetNet's per-head decay 1 - 2^(-5 - h). The
// check: the decoded outputs equal one causal prefill over all 576 tokens.
//
//   g++ -std=c++20 -O2 -march=native -fopenmp 06_linear_decode.cpp
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <attn/attn.hpp>

int main() {
  using attn::index_t;
  const index_t prompt = 512, generated = 64, tokens = prompt + generated;
  const index_t q_heads = 8, kv_heads = 2, dim = 64;

  // q, k and v of every token, (1, tokens, heads, dim); a model would
  // produce the last 64 one by one as it generates.
  std::vector<float> q(tokens * q_heads * dim), k(tokens * kv_heads * dim),
      v(tokens * kv_heads * dim), out(tokens * q_heads * dim), full(tokens * q_heads * dim);
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = normal(gen);

  std::vector<float> decay(q_heads);  // RetNet: from 0.969 (head 0) to 0.99976 (head 7)
  for (index_t h = 0; h < q_heads; ++h) decay[h] = 1.0f - std::exp2(-5.0f - float(h));
  attn::linear_options opt;
  opt.causal = true;
  opt.normalize = true;
  opt.feature = attn::feature_kind::elu_plus_one;
  opt.decay = decay;

  // Tokens [t0, t1) as a (1, t1 - t0, heads, dim) view, and token t as the
  // (1, heads, dim) view of one decode step.
  auto span = [&](float* x, index_t heads, index_t t0, index_t t1) {
    return attn::bshd<const float>(x + t0 * heads * dim, 1, t1 - t0, heads, dim);
  };
  auto token = [&](float* x, index_t heads, index_t t) {
    return attn::view3<float>{x + t * heads * dim, {1, heads, dim}, {tokens * heads * dim, dim, 1}};
  };

  // Prefill: the prompt's outputs, and in `state` the summary after its last token.
  attn::linear_state state;
  attn::linear_attention(span(q.data(), q_heads, 0, prompt), span(k.data(), kv_heads, 0, prompt),
                         span(v.data(), kv_heads, 0, prompt),
                         attn::bshd(out.data(), 1, prompt, q_heads, dim), opt, attn::openmp{},
                         &state);

  // Decode: each step folds token t's key and value into the state and reads
  // token t's output from it.
  for (index_t t = prompt; t < tokens; ++t)
    attn::linear_step(state, token(q.data(), q_heads, t), token(k.data(), kv_heads, t),
                      token(v.data(), kv_heads, t), token(out.data(), q_heads, t), opt);

  // The same 576 tokens in one prefill.
  attn::linear_attention(span(q.data(), q_heads, 0, tokens), span(k.data(), kv_heads, 0, tokens),
                         span(v.data(), kv_heads, 0, tokens),
                         attn::bshd(full.data(), 1, tokens, q_heads, dim), opt, attn::openmp{});
  double diff = 0;
  for (std::size_t x = prompt * q_heads * dim; x < out.size(); ++x)
    diff = std::fmax(diff, std::fabs(out[x] - full[x]));

  // The state holds S (features x Dv) and the normaliser z (features) per
  // query head, whatever the length; a softmax KV cache holds k and v of
  // every token per kv head.
  const double state_bytes = double(sizeof(float)) * state.batch() * state.heads() *
                             (state.features() * state.dv() + state.features());
  const double cache_bytes = double(sizeof(float)) * tokens * kv_heads * 2 * dim;
  std::printf("prefilled %lld tokens, decoded %lld; state after %lld tokens\n",
              static_cast<long long>(prompt), static_cast<long long>(generated),
              static_cast<long long>(state.tokens()));
  std::printf("state: %.0f bytes (fixed); a softmax KV cache at %lld tokens: %.0f bytes (grows)\n",
              state_bytes, static_cast<long long>(tokens), cache_bytes);
  std::printf("decoded tokens vs one prefill over all %lld: max abs difference %.2e\n",
              static_cast<long long>(tokens), diff);
  return diff < 1e-4 && state.tokens() == tokens ? 0 : 1;
}
