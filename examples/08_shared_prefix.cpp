// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// Serving with a shared prefix (cascade attention): four conversations share
// one system prompt and each continues with its own tokens, kept in a paged
// KV cache of 16-token pages. A decode step attends every sequence's new
// token to prompt + own tokens in two passes merged per row: the prompt's
// K/V is read once for all four sequences instead of once per sequence.
// Checked against plain attention over each sequence's full, contiguous
// cache (prompt copied in front of its tokens).
//
//   g++ -std=c++20 -O2 -march=native -fopenmp 08_shared_prefix.cpp
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <attn/attn.hpp>

int main() {
  using attn::index_t;
  const index_t batch = 4, prompt = 1000, q_heads = 8, kv_heads = 2, dim = 64, page = 16;
  const std::vector<std::int32_t> own = {37, 250, 1, 96};  // tokens after the prompt, per sequence
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  auto random = [&](index_t n) {
    std::vector<float> x(static_cast<std::size_t>(n));
    for (float& e : x) e = normal(gen);
    return x;
  };
  const index_t row = kv_heads * dim;  // floats per token of K (and of V)

  // The shared prompt's K/V (1, prompt, Hkv, d), and the new tokens' queries.
  const std::vector<float> prompt_k = random(prompt * row), prompt_v = random(prompt * row);
  const std::vector<float> q = random(batch * q_heads * dim);

  // Each sequence's own tokens in a paged pool: page p of sequence b is
  // block_table[b][p]; pages are handed out round-robin, as an allocator would.
  const index_t max_pages = (*std::max_element(own.begin(), own.end()) + page - 1) / page;
  std::vector<std::int32_t> table(static_cast<std::size_t>(batch * max_pages), 0);
  std::int32_t pages = 0;
  for (index_t p = 0; p < max_pages; ++p)
    for (index_t b = 0; b < batch; ++b)
      if (p * page < own[b]) table[b * max_pages + p] = pages++;
  const std::vector<float> pool_k = random(pages * page * row), pool_v = random(pages * page * row);

  std::vector<float> out(batch * q_heads * dim), lse(batch * q_heads);
  const auto Q = attn::bshd<const float>(q.data(), batch, 1, q_heads, dim);
  const attn::paged_kv suffix{attn::bshd<const float>(pool_k.data(), pages, page, kv_heads, dim),
                              attn::bshd<const float>(pool_v.data(), pages, page, kv_heads, dim),
                              {table.data(), {batch, max_pages}, {max_pages, 1}}};
  attn::softmax_options opt;
  opt.causal = true;     // the new token is each sequence's last
  opt.kv_lengths = own;  // keys each sequence holds in the paged cache
  attn::cascade_attention(Q, attn::bshd<const float>(prompt_k.data(), 1, prompt, kv_heads, dim),
                          attn::bshd<const float>(prompt_v.data(), 1, prompt, kv_heads, dim), suffix,
                          attn::bshd(out.data(), batch, 1, q_heads, dim), attn::bsh(lse.data(), batch, 1, q_heads),
                          opt, attn::openmp{});

  // The same step without sharing: each sequence's prompt + tokens copied
  // into a contiguous cache of capacity prompt + max(own), with lengths.
  const index_t capacity = prompt + max_pages * page;
  std::vector<float> k(batch * capacity * row), v(batch * capacity * row);
  std::vector<std::int32_t> lengths(batch);
  for (index_t b = 0; b < batch; ++b) {
    lengths[b] = static_cast<std::int32_t>(prompt + own[b]);
    std::copy(prompt_k.begin(), prompt_k.end(), k.begin() + b * capacity * row);
    std::copy(prompt_v.begin(), prompt_v.end(), v.begin() + b * capacity * row);
    for (index_t j = 0; j < own[b]; ++j) {
      const index_t at = (table[b * max_pages + j / page] * page + j % page) * row;
      std::copy_n(pool_k.begin() + at, row, k.begin() + (b * capacity + prompt + j) * row);
      std::copy_n(pool_v.begin() + at, row, v.begin() + (b * capacity + prompt + j) * row);
    }
  }
  std::vector<float> expected(out.size());
  opt.kv_lengths = lengths;
  attn::attention(Q, attn::bshd<const float>(k.data(), batch, capacity, kv_heads, dim),
                  attn::bshd<const float>(v.data(), batch, capacity, kv_heads, dim),
                  attn::bshd(expected.data(), batch, 1, q_heads, dim), {}, opt);

  double diff = 0;
  for (std::size_t x = 0; x < out.size(); ++x) diff = std::max(diff, double(std::fabs(out[x] - expected[x])));
  std::printf("cascade (prompt read once for %lld sequences) vs per-sequence attention: max difference %.2e\n",
              static_cast<long long>(batch), diff);
  return diff < 1e-5 ? 0 : 1;
}
