// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "attn/core/tensor.hpp"
#include "attn/mask/neighborhood_window.hpp"
#include "attn/variant/block_sparse.hpp"
#include "attn/variant/dense.hpp"
#include "attn/variant/moba.hpp"

// The FLOP count every benchmark and attnrun report (DESIGN §4).
namespace attn::bench {

// FLOPs of linear attention (DESIGN §2) as the library runs it, summed over
// batch and query heads, with Df features per row (phi.features(Dk); Dk for
// the built-in maps) and C >= 1 keys per chunk (attn::detail::linear_chunk).
// Per (batch, query head):
//   non-causal: the state S = sum_j phi(k_j) v_j^T, 2 Df Dv per key, and its
//     read phi(q_i) S, 2 Df Dv per query:
//       2 Df Dv (Nk + Nq)
//   causal (chunked, Lightning Attention-2): per key the state update,
//     2 Df Dv; per query that sees a key (min(Nq, Nk) of them, as queries
//     before the first key are 0) the state read, 2 Df Dv; and in each chunk
//     [c0, c0 + n) of keys the causal intra-chunk tile, 2 (Df + Dv) per
//     allowed pair (query position p = i + Nk - Nq in the chunk, key j <= p):
//     n (n + 1) / 2 pairs for a chunk whose every position holds a query
//     (all of them when Nq >= Nk), r0 (r0 + 1) / 2 fewer when its first
//     query sits r0 keys in:
//       2 Df Dv (Nk + min(Nq, Nk)) + 2 (Df + Dv) sum_chunks pairs
// Like the softmax count, which leaves out exp and the running max, this
// leaves out the O(Df) work per token or pair: the feature map, the decay's
// powers and the normaliser.
inline double linear_flops(index_t batch, index_t nq, index_t nk, index_t hq, index_t features,
                           index_t dv, bool causal, index_t chunk) {
  const double df = static_cast<double>(features), d = static_cast<double>(dv);
  const double heads = static_cast<double>(batch) * static_cast<double>(hq);
  if (!causal) return heads * 2.0 * df * d * static_cast<double>(nk + nq);
  const index_t offset = nk - nq;
  double intra_pairs = 0;
  for (index_t c0 = 0; chunk > 0 && c0 < nk; c0 += chunk) {
    // n keys, of which the first r0 come before the first query's position.
    const auto n = static_cast<double>(std::min(chunk, nk - c0));
    const auto r0 = static_cast<double>(std::max<index_t>(0, offset - c0));
    if (r0 < n) intra_pairs += n * (n + 1) / 2 - r0 * (r0 + 1) / 2;
  }
  const double tokens = static_cast<double>(nk + std::min(nq, nk));
  return heads * (2.0 * df * d * tokens + 2.0 * (df + d) * intra_pairs);
}

// Allowed (query, key) pairs per head: all, or bottom-right aligned causal.
inline double allowed_pairs(index_t nq, index_t nk, bool causal) {
  if (!causal) return static_cast<double>(nq) * static_cast<double>(nk);
  double n = 0;
  for (index_t i = 0; i < nq; ++i) n += static_cast<double>(std::clamp<index_t>(i + nk - nq + 1, 0, nk));
  return n;
}

// Allowed pairs per head of a band mask: each key's run of query positions,
// clipped to [0, Nq), summed over the keys (DESIGN §2 through positions()).
template <band_mask M>
double allowed_pairs(const M& mask, index_t nq, index_t nk) {
  double n = 0;
  for (index_t j = 0; j < nk; ++j) {
    const position_range run = mask.positions(j);
    n += static_cast<double>(std::max<index_t>(0, std::min(run.end, nq) - std::max<index_t>(run.begin, 0)));
  }
  return n;
}

// Allowed pairs per head under the softmax options' masks: causal, window,
// sink tokens, documents, prefix-LM (all band masks).
inline double allowed_pairs(index_t nq, index_t nk, const softmax_options& opt) {
  const index_t offset = nk - nq;
  if (!opt.document_ids.empty())
    return allowed_pairs(document_mask(opt.document_ids, offset) & window_mask_of(opt, offset), nq, nk);
  if (opt.prefix_lm) return allowed_pairs(prefix_lm_mask{offset, *opt.prefix_lm}, nq, nk);
  if (!opt.window) return allowed_pairs(nq, nk, opt.causal);
  return allowed_pairs(window_mask_of(opt, offset), nq, nk);
}

inline double attention_flops(index_t batch, index_t nq, index_t nk, index_t hq, index_t dk,
                              index_t dv, const softmax_options& opt) {
  return allowed_pairs(nq, nk, opt) * 2.0 * static_cast<double>(dk + dv) *
         static_cast<double>(hq * batch);
}

// FLOPs a kernel must do: allowed pairs x 2 x (Dk + Dv) per head.
inline double attention_flops(index_t batch, index_t nq, index_t nk, index_t hq, index_t dk,
                              index_t dv, bool causal) {
  return allowed_pairs(nq, nk, causal) * 2.0 * static_cast<double>(dk + dv) *
         static_cast<double>(hq * batch);
}

// Allowed pairs per head of a rank-R neighborhood on a grid of `length`
// (DESIGN §2). A pair is allowed iff it is allowed in every dimension, so the
// count is the product over dimensions of the 1-D counts, each the sum of
// the window sizes of that dimension's queries. Valid parameters only.
template <std::size_t R>
double allowed_pairs(const std::array<index_t, R>& length,
                     const std::array<neighborhood_dim, R>& dims) {
  double pairs = 1;
  for (std::size_t d = 0; d < R; ++d) {
    double n = 0;
    for (index_t i = 0; i < length[d]; ++i) {
      const neighborhood_keys w = neighborhood_window(dims[d], length[d], i);
      n += static_cast<double>(w.last - w.first);
    }
    pairs *= n;
  }
  return pairs;
}

template <std::size_t R>
double attention_flops(index_t batch, const std::array<index_t, R>& length, index_t hq,
                       index_t dk, index_t dv, const std::array<neighborhood_dim, R>& dims) {
  return allowed_pairs(length, dims) * 2.0 * static_cast<double>(dk + dv) *
         static_cast<double>(hq * batch);
}

// Allowed pairs of a block layout (DESIGN §2), summed over the hq query
// heads of one batch entry: per head and query row i, the keys of the key
// blocks layout[h or 0][i / block_q] selects (nonzero), clipped by causal to
// j <= i + Nk - Nq. O(H x Nq x nbk), never Nq x Nk; the layout must have the
// shape block_sparse_attention accepts, (Hq|1, ceil(Nq/bq), ceil(Nk/bk)).
inline double allowed_pairs(const strided_view<const std::uint8_t, 3>& layout, index_t hq,
                            index_t nq, index_t nk, const block_sparse_options& opt) {
  const index_t heads = layout.extent[0], nbk = layout.extent[2], offset = nk - nq;
  double pairs = 0;
  for (index_t h = 0; h < heads; ++h)
    for (index_t i = 0; i < nq; ++i) {
      const index_t end = opt.causal ? std::clamp<index_t>(i + offset + 1, 0, nk) : nk;
      const index_t qb = i / opt.block_q;
      index_t keys = 0;
      for (index_t kb = 0; kb < nbk && kb * opt.block_k < end; ++kb)
        if (layout(h, qb, kb) != 0)
          keys += std::min(end, (kb + 1) * opt.block_k) - kb * opt.block_k;
      pairs += static_cast<double>(keys);
    }
  return heads == 1 ? pairs * static_cast<double>(hq) : pairs;
}

inline double attention_flops(index_t batch, const strided_view<const std::uint8_t, 3>& layout,
                              index_t nq, index_t nk, index_t hq, index_t dk, index_t dv,
                              const block_sparse_options& opt) {
  return allowed_pairs(layout, hq, nq, nk, opt) * 2.0 * static_cast<double>(dk + dv) *
         static_cast<double>(batch);
}

// Allowed pairs of a MoBA gate's selection (DESIGN §2), summed over batch,
// query heads and queries: every key of a selected past block, and of the
// query's own block the keys up to its position i + Nk - Nq (causal inside).
inline double allowed_pairs(const moba_selection& sel, index_t nk, index_t block_k) {
  const index_t offset = nk - sel.queries;
  double pairs = 0;
  for (index_t b = 0; b < sel.batch; ++b)
    for (index_t h = 0; h < sel.heads; ++h)
      for (index_t i = 0; i < sel.queries; ++i) {
        const index_t pos = i + offset;
        for (const std::int32_t c : sel(b, h, i)) {
          if (c < 0) continue;
          const index_t begin = c * block_k;
          const index_t end = std::min({nk, begin + block_k, pos + 1});
          pairs += static_cast<double>(std::max<index_t>(0, end - begin));
        }
      }
  return pairs;
}

inline double attention_flops(const moba_selection& sel, index_t nk, index_t dk, index_t dv,
                              const moba_options& opt) {
  return allowed_pairs(sel, nk, opt.block_k) * 2.0 * static_cast<double>(dk + dv);
}

}  // namespace attn::bench
