// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "attn/backend/registry.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/kv_cache.hpp"
#include "attn/core/main_loop.hpp"
#include "attn/core/problem.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"
#include "attn/mask/masks.hpp"

// Latent attention (DeepSeek multi-head latent attention, absorbed form,
// DESIGN §2). Every token is cached once as a row of Dc latent channels and
// Dr rope channels, shared by all heads; each head's query was multiplied by
// W_UK beforehand (attn/interop/eigen.hpp), so
//
//   out[b, i, h] = softmax_j(scale * q[b, i, h] . c[b, j]) c[b, j, :Dc]
//
// is multi-query attention whose keys are the cache rows and whose values are
// their first Dc channels, read from the same memory. It runs on the core's
// loop with a query tile of every head of a position (so one step reads the
// cache once, and the tile's Q K^T and P V are GEMMs of H rows), over a
// contiguous or paged cache with per-sequence lengths.
namespace attn {

struct latent_options {
  // The model's softmax scale (required: the cache row's width is not the
  // head dimension the model was trained with; DeepSeek-V3 uses
  // 1 / sqrt(128 + 64) times its YaRN factor).
  std::optional<float> scale;
  index_t dc = 0;        // latent channels: values are the first dc of each cache row (required)
  bool causal = false;   // chunked prefill / multi-token decode: key j <= i + length - Nq
  // Keys of each sequence (B), each at most the cache's capacity; empty:
  // every sequence has Nk keys. Required with a paged cache.
  std::span<const std::int32_t> lengths;
};

namespace detail {

// Query rows per latent tile: every head of a position, and positions up to
// this many rows (multi-token decode); more heads than this make one tile of
// all heads.
inline constexpr index_t latent_tile_rows = 128;

// dc and the scale against rows of Dc + Dr = d channels.
inline void check_latent_options(index_t d, const latent_options& opt) {
  require(opt.dc >= 1 && opt.dc <= d, "dc", "latent channels in [1, Dc + Dr = " + std::to_string(d) + "]",
          opt.dc);
  require(opt.scale.has_value(), "scale", "the model's softmax scale (e.g. 1/sqrt(192) for DeepSeek-V3)",
          "none");
  require(std::isfinite(*opt.scale), "scale", "a finite value", *opt.scale);
}

// The checks every latent entry makes: q, out, lse and options against the
// cache's storage (a contiguous cache or the page pool) and its extents.
template <class Q, class C, class O>
void check_latent(view4<const Q> q, view4<const C> storage, const char* storage_name, index_t nk, view4<O> out,
                  view3<float> lse, const latent_options& opt) {
  const index_t b = q.extent[0], nq = q.extent[1], h = q.extent[2], d = q.extent[3];
  require_view(q, "q", "(B, Nq, H, Dc + Dr) with H, Dc + Dr >= 1", h >= 1 && d >= 1);
  check_latent_options(d, opt);
  require_view(out, "out", dims({{"B", b}, {"Nq", nq}, {"H", h}, {"Dc", opt.dc}}),
               out.extent == std::array<index_t, 4>{b, nq, h, opt.dc});
  require_distinct(out, "out");
  require_disjoint(out, "out", q, "q");
  require_disjoint(out, "out", storage, storage_name);
  check_lse(lse, {b, nq, h}, "H", {{out, "out"}, {q, "q"}, {storage, storage_name}});
  if (!opt.lengths.empty()) {
    require(static_cast<index_t>(opt.lengths.size()) == b, "lengths",
            "one key count per sequence (B = " + std::to_string(b) + ")",
            std::to_string(opt.lengths.size()) + " counts");
    kv_length_mask{opt.lengths.data(), nq, opt.causal}.check(problem_shape{b, h, nq, nk});
  }
}

// The problem of a latent call: keys are the cache rows, values the same
// rows cut to Dc channels.
template <class Q, class C, class O>
typed_softmax_problem<Q, C, C, O> latent_problem(view4<const Q> q, view4<const C> cache, kv_pages pages,
                                                 view4<O> out, view3<float> lse, const latent_options& opt) {
  view4<const C> values = cache;
  values.extent[3] = opt.dc;
  typed_views<Q, C, C, O> views{q, cache, values, out, pages};
  if (!opt.lengths.empty()) views.sequences.k_lengths = opt.lengths.data();  // splits sized per sequence
  const index_t rows = std::max(latent_tile_rows, q.extent[2]);
  return typed_softmax_problem<Q, C, C, O>{views, lse, *opt.scale, nullptr, rows};
}

template <class Backend, class P, class Exec>
void run_latent(const P& p, const latent_options& opt, const Exec& exec) {
  if (!opt.lengths.empty())
    run_softmax<Backend>(p, kv_length_mask{opt.lengths.data(), p.nq(), opt.causal}, no_modifier{}, exec);
  else if (opt.causal)
    run_softmax<Backend>(p, causal_mask{p.nk() - p.nq()}, no_modifier{}, exec);
  else
    run_softmax<Backend>(p, no_mask{}, no_modifier{}, exec);
}

// Packed (varlen) queries over a checked cache (its logical (B, capacity, 1,
// D) view, pages, and the storage out must not overlap): q (Tq, H, D) with
// cu_seqlens_q (B + 1) -> out (Tq, H, Dc), lse (Tq, H). Causal aligns each
// sequence's queries with its last keys.
template <class Backend, class Q, class C, class O, class Exec>
void run_latent_varlen(view3<const Q> q, view4<const C> cache, kv_pages pages,
                       view4<const C> storage, const char* storage_name, view3<O> out,
                       strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                       const latent_options& opt, const Exec& exec) {
  require_view(q, "q", "(Tq, H, Dc + Dr) with H, Dc + Dr >= 1", q.extent[1] >= 1 && q.extent[2] >= 1);
  require(q.extent[2] == cache.extent[3], "q", "rows of Dc + Dr = " + std::to_string(cache.extent[3]) + " channels",
          shape_string(q));
  check_latent_options(q.extent[2], opt);
  const auto pq = checked_packed_queries(q, out, lse, cu_seqlens_q, opt.dc, {{storage, storage_name}});
  if (!opt.lengths.empty())
    kv_length_mask{opt.lengths.data(), 1, false}.check(
        problem_shape{cache.extent[0], q.extent[1], 1, cache.extent[1]});
  auto p = latent_problem(pq.q, cache, pages, pq.out, pq.lse, opt);
  p.sequences.q_starts = cu_seqlens_q.data();
  if (opt.causal)
    run_softmax<Backend>(p, per_sequence{[&p](index_t b) { return causal_mask{p.nk_of(b) - p.nq_of(b)}; }},
                         no_modifier{}, exec);
  else
    run_softmax<Backend>(p, no_mask{}, no_modifier{}, exec);
}


// The bodies of latent_attention for every storage type.
template <class Backend, class Q, class C, class O, class Exec>
void latent_contiguous(view4<const Q> q, view4<const C> cache, view4<O> out, view3<float> lse,
                       const latent_options& opt, const Exec& exec) {
  const index_t b = q.extent[0], d = q.extent[3];
  detail::require_view(cache, "cache", detail::dims({{"B", b}, {"Nk", -1}, {"1", -1}, {"Dc + Dr", d}}),
                       cache.extent[0] == b && cache.extent[2] == 1 && cache.extent[3] == d);
  detail::check_latent(q, cache, "cache", cache.extent[1], out, lse, opt);
  detail::run_latent<Backend>(detail::latent_problem(q, cache, {}, out, lse, opt), opt, exec);
}
template <class Backend, class Q, class C, class O, class Exec>
void latent_paged(view4<const Q> q, const typed_paged_cache<C>& cache, view4<O> out, view3<float> lse,
                  const latent_options& opt, const Exec& exec) {
  const index_t b = q.extent[0], d = q.extent[3];
  const view4<const C>& pool = cache.pages;
  const auto& table = cache.block_table;
  detail::require_view(pool, "pages", detail::dims({{"P", -1}, {"page_size", -1}, {"1", -1}, {"Dc + Dr", d}}) +
                                          " with page_size >= 1",
                       pool.extent[1] >= 1 && pool.extent[2] == 1 && pool.extent[3] == d);
  detail::require(!opt.lengths.empty() || b == 0, "lengths", "one key count per sequence with a paged cache",
                  "none");
  const index_t page_size = pool.extent[1];
  const index_t capacity =
      detail::check_block_table(table, b, pool.extent[0], page_size, opt.lengths, "lengths");
  detail::check_latent(q, pool, "pages", capacity, out, lse, opt);
  // The logical (B, capacity, 1, D) cache: rows are found through the table.
  const view4<const C> logical = detail::logical_cache(pool, b, capacity);
  const detail::kv_pages pages{table.data, table.stride[0], page_size};
  detail::run_latent<Backend>(detail::latent_problem(q, logical, pages, out, lse, opt), opt, exec);
}

}  // namespace detail

// Latent attention over a contiguous cache:
//   q (B, Nq, H, Dc + Dr), cache (B, Nk, 1, Dc + Dr) -> out (B, Nq, H, Dc),
//   lse (B, Nq, H) (natural log) when given.
// Any strides; with opt.lengths, sequence b reads only its first lengths[b]
// cache rows. Nq > 1 with causal is chunked prefill or multi-token decode.
template <simd_backend Backend = default_backend, executor Exec = serial>
void latent_attention(view4<const float> q, view4<const float> cache, view4<float> out, view3<float> lse,
                      const latent_options& opt, const Exec& exec = {}) {
  detail::latent_contiguous<Backend>(q, cache, out, lse, opt, exec);
}

// The same with q, the cache and out each stored as float, attn::float16 or
// attn::bfloat16 (README, "Reduced precision"; e.g. a bf16 cache).
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class C, class O>
  requires mixed_storage<Q, C, C, O>
void latent_attention(strided_view<Q, 4> q, strided_view<C, 4> cache, strided_view<O, 4> out, view3<float> lse,
                      const latent_options& opt, const Exec& exec = {}) {
  detail::latent_contiguous<Backend>(detail::as_input(q), detail::as_input(cache), out, lse, opt, exec);
}

// Latent attention over a paged cache (opt.lengths required): the same
// computation as the contiguous call, whose cache is the one-page case.
template <simd_backend Backend = default_backend, executor Exec = serial>
void latent_attention(view4<const float> q, const paged_cache& cache, view4<float> out, view3<float> lse,
                      const latent_options& opt, const Exec& exec = {}) {
  detail::latent_paged<Backend>(q, cache, out, lse, opt, exec);
}

// The same with 16-bit storage (typed_paged_cache<C>: the pool stored as C).
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class C, class O>
  requires mixed_storage<Q, C, C, O>
void latent_attention(strided_view<Q, 4> q, const typed_paged_cache<C>& cache, strided_view<O, 4> out,
                      view3<float> lse, const latent_options& opt, const Exec& exec = {}) {
  detail::latent_paged<Backend>(detail::as_input(q), cache, out, lse, opt, exec);
}


namespace detail {

// The bodies of latent_varlen_attention for every storage type.
template <class Backend, class Q, class C, class O, class Exec>
void latent_varlen_contiguous(view3<const Q> q, view4<const C> cache, view3<O> out, strided_view<float, 2> lse,
                              std::span<const std::int32_t> cu_seqlens_q, const latent_options& opt,
                              const Exec& exec) {
  const index_t b = sequence_count(cu_seqlens_q, "cu_seqlens_q");
  require_view(cache, "cache", dims({{"B", b}, {"Nk", -1}, {"1", -1}, {"Dc + Dr", -1}}) + " with Dc + Dr >= 1",
               cache.extent[0] == b && cache.extent[2] == 1 && cache.extent[3] >= 1);
  if (!opt.lengths.empty())
    require(static_cast<index_t>(opt.lengths.size()) == b, "lengths",
            "one key count per sequence (B = " + std::to_string(b) + ")", std::to_string(opt.lengths.size()) + " counts");
  run_latent_varlen<Backend>(q, cache, {}, cache, "cache", out, lse, cu_seqlens_q, opt, exec);
}
template <class Backend, class Q, class C, class O, class Exec>
void latent_varlen_paged(view3<const Q> q, const typed_paged_cache<C>& cache, view3<O> out,
                         strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                         const latent_options& opt, const Exec& exec) {
  const index_t b = sequence_count(cu_seqlens_q, "cu_seqlens_q");
  const view4<const C>& pool = cache.pages;
  require_view(pool, "pages", dims({{"P", -1}, {"page_size", -1}, {"1", -1}, {"Dc + Dr", -1}}) +
                                  " with page_size, Dc + Dr >= 1",
               pool.extent[1] >= 1 && pool.extent[2] == 1 && pool.extent[3] >= 1);
  const index_t page_size = pool.extent[1];
  const index_t capacity = check_block_table(cache.block_table, b, pool.extent[0], page_size, opt.lengths, "lengths");
  const kv_pages pages{cache.block_table.data, cache.block_table.stride[0], page_size};
  run_latent_varlen<Backend>(q, logical_cache(pool, b, capacity), pages, pool, "pages", out, lse, cu_seqlens_q,
                             opt, exec);
}

}  // namespace detail

// Latent attention with packed (varlen) queries, FlashAttention's varlen
// form (chunked prefill of several sequences): q (Tq, H, Dc + Dr) with
// sequence b's queries in rows [cu_seqlens_q[b], cu_seqlens_q[b + 1]), the
// cache (B, Nk, 1, Dc + Dr) -> out (Tq, H, Dc), lse (Tq, H) or {}.
// opt.lengths (optional) gives each sequence's keys; with causal, a
// sequence's queries are its last tokens (bottom-right per sequence).
template <simd_backend Backend = default_backend, executor Exec = serial>
void latent_varlen_attention(view3<const float> q, view4<const float> cache, view3<float> out,
                             strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                             const latent_options& opt, const Exec& exec = {}) {
  detail::latent_varlen_contiguous<Backend>(q, cache, out, lse, cu_seqlens_q, opt, exec);
}

// The same with q, the cache and out each stored as float, attn::float16 or
// attn::bfloat16.
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class C, class O>
  requires mixed_storage<Q, C, C, O>
void latent_varlen_attention(strided_view<Q, 3> q, strided_view<C, 4> cache, strided_view<O, 3> out,
                             strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                             const latent_options& opt, const Exec& exec = {}) {
  detail::latent_varlen_contiguous<Backend>(detail::as_input(q), detail::as_input(cache), out, lse, cu_seqlens_q,
                                            opt, exec);
}

// The same over a paged cache (opt.lengths required).
template <simd_backend Backend = default_backend, executor Exec = serial>
void latent_varlen_attention(view3<const float> q, const paged_cache& cache, view3<float> out,
                             strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                             const latent_options& opt, const Exec& exec = {}) {
  detail::latent_varlen_paged<Backend>(q, cache, out, lse, cu_seqlens_q, opt, exec);
}

// The same with 16-bit storage (typed_paged_cache<C>: the pool stored as C).
template <simd_backend Backend = default_backend, executor Exec = serial, class Q, class C, class O>
  requires mixed_storage<Q, C, C, O>
void latent_varlen_attention(strided_view<Q, 3> q, const typed_paged_cache<C>& cache, strided_view<O, 3> out,
                             strided_view<float, 2> lse, std::span<const std::int32_t> cu_seqlens_q,
                             const latent_options& opt, const Exec& exec = {}) {
  detail::latent_varlen_paged<Backend>(detail::as_input(q), cache, out, lse, cu_seqlens_q, opt, exec);
}

}  // namespace attn
