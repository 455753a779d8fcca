// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>

#include "attn/core/tensor.hpp"
#include "attn/variant/dense.hpp"

// The FLOP count every benchmark and attnrun report (DESIGN §4).
namespace attn::bench {

// Allowed (query, key) pairs per head: all, or bottom-right aligned causal.
inline double allowed_pairs(index_t nq, index_t nk, bool causal) {
  if (!causal) return static_cast<double>(nq) * static_cast<double>(nk);
  double n = 0;
  for (index_t i = 0; i < nq; ++i) n += static_cast<double>(std::clamp<index_t>(i + nk - nq + 1, 0, nk));
  return n;
}

// Allowed pairs per head under the softmax options' causal mask, window and
// sink tokens, counted row by row from DESIGN §2.
inline double allowed_pairs(index_t nq, index_t nk, const softmax_options& opt) {
  if (!opt.window) return allowed_pairs(nq, nk, opt.causal);
  const window_mask mask = window_mask_of(opt, nk - nq);
  double n = 0;
  for (index_t i = 0; i < nq; ++i) {
    const index_t hi = std::min(nk - 1, mask.hi(i)), lo = std::max<index_t>(0, mask.lo(i));
    const index_t window = std::max<index_t>(0, hi - lo + 1);
    const index_t sinks = std::max<index_t>(0, std::min({mask.sink_tokens, lo, hi + 1}));
    n += static_cast<double>(window + sinks);
  }
  return n;
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

}  // namespace attn::bench
