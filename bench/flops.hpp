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
