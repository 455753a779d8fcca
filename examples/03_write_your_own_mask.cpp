// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
// A mask and a score modifier of your own, fused into the tiled kernel: a dilated causal
// window (every 2nd key, 512 back) with a per-head relative-position bias (T5-style buckets).
//   g++ -std=c++20 -O2 -march=native -fopenmp 03_write_your_own_mask.cpp
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include <attn/attn.hpp>

int main() {
  using attn::index_t;
  const index_t n = 2048, heads = 4, dim = 64, reach = 512, dilation = 2;
  std::vector<float> q(n * heads * dim, 0.01f), k(q), v(q), out(q.size()), bias(heads * 32);
  for (std::size_t x = 0; x < q.size(); ++x) v[x] = std::cos(0.001f * float(x));
  for (std::size_t x = 0; x < bias.size(); ++x) bias[x] = -0.05f * float(x % 32);
  // The mask: which (batch, head, query, key) pairs attend.
  auto allowed = [=](index_t, index_t, index_t i, index_t j) {
    return j <= i && i - j < reach && (i - j) % dilation == 0;
  };
  // Optional: which key tiles [j0, j1) a query tile cannot touch, so they are skipped.
  auto classify = [=](const attn::query_block& qb, index_t j0, index_t j1) {
    const bool outside = j0 > qb.i_end - 1 || j1 - 1 <= qb.i_begin - reach;
    return outside ? attn::tile_kind::empty : attn::tile_kind::partial;
  };
  // The modifier: s + bias[h][bucket(i - j)], natural-log units; it also sees pairs the mask drops.
  auto relative_bias = [&](float s, index_t, index_t h, index_t i, index_t j) {
    return s + bias[h * 32 + std::clamp<index_t>((i - j) / 16, 0, 31)];
  };
  attn::attention(attn::bshd<const float>(q.data(), 1, n, heads, dim),
                  attn::bshd<const float>(k.data(), 1, n, heads, dim),
                  attn::bshd<const float>(v.data(), 1, n, heads, dim),
                  attn::bshd(out.data(), 1, n, heads, dim), {}, attn::mask_from(allowed, classify),
                  attn::score_mod_from(relative_bias), {}, attn::openmp{});
  std::printf("out[0][0] = %.6f, v[0][0] = %.6f (query 0 sees only key 0)\n", out[0], v[0]);
  return std::fabs(out[0] - v[0]) < 1e-6f ? 0 : 1;
}
