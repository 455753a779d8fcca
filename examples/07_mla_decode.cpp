// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// DeepSeek multi-head latent attention (MLA) decoding from a paged cache.
// Each token is cached once for all heads, as one row of 576 floats: its
// 512-channel latent c and its 64-channel rope key k_pe, rotated at the
// token's position. (Standard attention would cache 16 x (192 + 128) = 5120
// floats per token for the same 16 heads.) Each decode step
//   1. writes every sequence's new row into its last page, taking a fresh
//      page from the pool when that one is full,
//   2. rotates the query's rope half and absorbs W_UK into it
//      (attn::eigen::apply_rope, attn::eigen::absorb_queries),
//   3. runs attn::latent_attention over the paged cache, each sequence to
//      its own length,
//   4. applies W_UV to the result (attn::eigen::apply_value_up).
// DeepSeek-V3's dimensions with 16 heads, two sequences with 250 and 100
// prompt tokens, 32 steps. The check: the last step's output equals standard
// multi-head attention over the up-projected keys [W_UK c ; k_pe] and values
// W_UV c of every token.
//
//   g++ -std=c++20 -O2 -march=native -fopenmp -I/usr/include/eigen3 07_mla_decode.cpp
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <attn/attn.hpp>
#include <attn/interop/eigen.hpp>

int main() {
  using attn::index_t;
  using attn::eigen::matrix;
  const index_t heads = 16, dc = 512, dr = 64, d_nope = 128, dv = 128, row = dc + dr;
  const index_t batch = 2, steps = 32, page_size = 64, pool_pages = 16, max_pages = 8;
  const index_t prompt[batch] = {250, 100};
  // The model's softmax scale, 1 / sqrt(Dnope + Dr) (V3 also multiplies in
  // its YaRN mscale).
  const float scale = 1.0f / std::sqrt(float(d_nope + dr));

  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  auto fill = [&](float* x, index_t n, float sd) {
    std::generate(x, x + n, [&] { return sd * normal(gen); });
  };

  // kv_b_proj (H (Dnope + Dv), Dc) as DeepSeek stores it, cut into
  // W_UK (H Dnope, Dc) and W_UV (H Dv, Dc).
  matrix kv_b_proj(heads * (d_nope + dv), dc);
  fill(kv_b_proj.data(), kv_b_proj.size(), 1.0f / std::sqrt(float(dc)));
  const attn::eigen::mla_weights w = attn::eigen::split_kv_b_proj(kv_b_proj, heads, d_nope, dv);

  // The page pool (pool_pages, page_size, 1, Dc + Dr) and each sequence's
  // block table row (max_pages), filled as pages are taken.
  std::vector<float> pool(pool_pages * page_size * row);
  std::vector<std::int32_t> table(batch * max_pages, -1), lengths(batch, 0);
  std::int32_t next_free_page = 0;
  const auto pages = attn::bshd(pool.data(), pool_pages, page_size, 1, row);
  // Every token's c and unrotated k_pe, kept only for the check at the end.
  std::vector<std::vector<float>> latents(batch), rope_keys(batch);

  // Appends one token to sequence b: c (Dc) and k_pe (Dr) from the model.
  auto append = [&](index_t b) {
    const index_t position = lengths[b];
    std::int32_t& page = table[b * max_pages + position / page_size];
    if (position % page_size == 0) page = next_free_page++;
    float* cache_row = &pages(page, position % page_size, 0, 0);
    fill(cache_row, row, 1.0f);  // [c ; k_pe] as the model computes them (random here)
    latents[b].insert(latents[b].end(), cache_row, cache_row + dc);
    rope_keys[b].insert(rope_keys[b].end(), cache_row + dc, cache_row + row);
    attn::eigen::apply_rope(attn::bshd(cache_row, 1, 1, 1, row), dc, dr, position);
    ++lengths[b];
  };
  for (index_t b = 0; b < batch; ++b)  // the prompts (a prefill would write them in one go)
    for (index_t t = 0; t < prompt[b]; ++t) append(b);

  attn::latent_options opt;
  opt.scale = scale;
  opt.dc = dc;
  opt.lengths = lengths;  // read at each call: the cache rows each sequence has
  const attn::paged_cache cache{pages, {table.data(), {batch, max_pages}, {max_pages, 1}}};

  // One query token per sequence and step: q_nope, q_pe -> q_latent -> o_latent -> out.
  std::vector<float> q_nope(batch * heads * d_nope), q_pe(batch * heads * dr),
      q_latent(batch * heads * row), o_latent(batch * heads * dc), out(batch * heads * dv);
  for (index_t step = 0; step < steps; ++step) {
    for (index_t b = 0; b < batch; ++b) append(b);
    fill(q_nope.data(), q_nope.size(), 1.0f);
    fill(q_pe.data(), q_pe.size(), 1.0f);
    for (index_t b = 0; b < batch; ++b)  // sequence b's query sits at its newest position
      attn::eigen::apply_rope(attn::bshd(q_pe.data() + b * heads * dr, 1, 1, heads, dr), 0, dr,
                              lengths[b] - 1);
    attn::eigen::absorb_queries(attn::bshd<const float>(q_nope.data(), batch, 1, heads, d_nope),
                                attn::bshd<const float>(q_pe.data(), batch, 1, heads, dr), w.w_uk,
                                attn::bshd(q_latent.data(), batch, 1, heads, row));
    attn::latent_attention(attn::bshd<const float>(q_latent.data(), batch, 1, heads, row), cache,
                           attn::bshd(o_latent.data(), batch, 1, heads, dc), {}, opt,
                           attn::openmp{2});
    attn::eigen::apply_value_up(attn::bshd<const float>(o_latent.data(), batch, 1, heads, dc),
                                w.w_uv, attn::bshd(out.data(), batch, 1, heads, dv));
  }

  // The check, per sequence: standard attention with keys
  // [W_UK[h] c_j ; rope(k_pe_j)] (Dnope + Dr) and values W_UV[h] c_j (Dv).
  double max_diff = 0, max_out = 0;
  for (index_t b = 0; b < batch; ++b) {
    const index_t n = lengths[b], dk = d_nope + dr;
    const Eigen::Map<const matrix> c(latents[b].data(), n, dc);  // (N, Dc)
    const matrix k_nope = c * w.w_uk.transpose();                 // (N, H Dnope)
    const matrix v = c * w.w_uv.transpose();                      // (N, H Dv): (1, N, H, Dv) BSHD
    attn::eigen::apply_rope(attn::bshd(rope_keys[b].data(), 1, n, 1, dr), 0, dr, 0);
    std::vector<float> k(n * heads * dk), q(heads * dk), expected(heads * dv);
    for (index_t j = 0; j < n; ++j)
      for (index_t h = 0; h < heads; ++h) {
        std::copy_n(&k_nope(j, h * d_nope), d_nope, &k[(j * heads + h) * dk]);
        std::copy_n(&rope_keys[b][j * dr], dr, &k[(j * heads + h) * dk + d_nope]);
      }
    for (index_t h = 0; h < heads; ++h) {
      std::copy_n(&q_nope[(b * heads + h) * d_nope], d_nope, &q[h * dk]);
      std::copy_n(&q_pe[(b * heads + h) * dr], dr, &q[h * dk + d_nope]);
    }
    attn::softmax_options standard;
    standard.scale = scale;
    attn::attention(attn::bshd<const float>(q.data(), 1, 1, heads, dk),
                    attn::bshd<const float>(k.data(), 1, n, heads, dk),
                    attn::bshd<const float>(v.data(), 1, n, heads, dv),
                    attn::bshd(expected.data(), 1, 1, heads, dv), {}, standard);
    for (index_t x = 0; x < heads * dv; ++x) {
      max_out = std::max(max_out, std::fabs(double(expected[x])));
      max_diff = std::max(max_diff, std::fabs(double(out[b * heads * dv + x]) - expected[x]));
    }
  }

  std::printf("decoded %lld steps; sequences now %d and %d tokens on %d pages of %lld\n",
              static_cast<long long>(steps), lengths[0], lengths[1], next_free_page,
              static_cast<long long>(page_size));
  std::printf("cache per token: %lld floats for all %lld heads (standard K and V: %lld)\n",
              static_cast<long long>(row), static_cast<long long>(heads),
              static_cast<long long>(heads * (d_nope + dr + dv)));
  std::printf("last step vs standard attention over up-projected K and V: max difference %.2e "
              "(max |out| %.2f)\n", max_diff, max_out);
  return max_diff <= 1e-4 * max_out ? 0 : 1;
}
