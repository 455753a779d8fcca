// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>

#include "attn/core/tensor.hpp"

// The FLOP count every benchmark and attnrun report (DESIGN §4).
namespace attn::bench {

// Allowed (query, key) pairs per head: all, or bottom-right aligned causal.
inline double allowed_pairs(index_t nq, index_t nk, bool causal) {
  if (!causal) return static_cast<double>(nq) * static_cast<double>(nk);
  double n = 0;
  for (index_t i = 0; i < nq; ++i) n += static_cast<double>(std::clamp<index_t>(i + nk - nq + 1, 0, nk));
  return n;
}

// FLOPs a kernel must do: allowed pairs x 2 x (Dk + Dv) per head.
inline double attention_flops(index_t batch, index_t nq, index_t nk, index_t hq, index_t dk,
                              index_t dv, bool causal) {
  return allowed_pairs(nq, nk, causal) * 2.0 * static_cast<double>(dk + dv) *
         static_cast<double>(hq * batch);
}

}  // namespace attn::bench
