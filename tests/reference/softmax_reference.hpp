// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/tensor.hpp"
#include "attn/variant/dense.hpp"

// The fp64 oracle of softmax attention (DESIGN §1) and the accuracy checks
// every softmax variant's tests use. Straightforward loops, no tiling, no
// online softmax: it should be obviously right rather than fast.
namespace attn::ref {

inline constexpr double neg_inf = -std::numeric_limits<double>::infinity();

// Oracle output: out (B, Nq, Hq, Dv) and lse (B, Nq, Hq), contiguous BSHD.
struct softmax_result {
  index_t batch = 0, nq = 0, hq = 0, dv = 0;
  std::vector<double> out;    // (B, Nq, Hq, Dv)
  std::vector<double> lse;    // (B, Nq, Hq), natural log
  std::vector<index_t> keys;  // (B, Nq, Hq) allowed keys per row (0: empty row)
  double max_abs_v = 0;       // max |v| over finite values (the abs-error scale)

  std::size_t row_index(index_t b, index_t i, index_t h) const {
    return static_cast<std::size_t>((b * nq + i) * hq + h);
  }
  double o(index_t b, index_t i, index_t h, index_t d) const {
    return out[row_index(b, i, h) * static_cast<std::size_t>(dv) + static_cast<std::size_t>(d)];
  }
  double l(index_t b, index_t i, index_t h) const { return lse[row_index(b, i, h)]; }
};

// Softmax attention in fp64 over strided BSHD views (any memory order):
// scale (default 1/sqrt(Dk)), bottom-right aligned causal mask
// (j <= i + Nk - Nq), sliding window and sink tokens (DESIGN §2), per-head sink logits added to the denominator as
// exp(sigma_h) (not scaled), GQA (query head h reads kv head h / (Hq/Hkv)).
// NaN inputs propagate by IEEE arithmetic to exactly the rows that touch them.
inline softmax_result softmax_attention(view4<const float> q, view4<const float> k,
                                        view4<const float> v, const softmax_options& opt = {}) {
  const index_t nb = q.extent[0], nq = q.extent[1], hq = q.extent[2], dk = q.extent[3];
  const index_t nk = k.extent[1], hkv = k.extent[2], dv = v.extent[3];
  const index_t group = hq / hkv;
  const double scale = opt.scale ? static_cast<double>(*opt.scale) : 1.0 / std::sqrt(double(dk));
  const index_t off = nk - nq;

  softmax_result r;
  r.batch = nb;
  r.nq = nq;
  r.hq = hq;
  r.dv = dv;
  r.out.assign(static_cast<std::size_t>(nb * nq * hq * dv), 0.0);
  r.lse.assign(static_cast<std::size_t>(nb * nq * hq), neg_inf);
  r.keys.assign(static_cast<std::size_t>(nb * nq * hq), 0);
  for (index_t b = 0; b < nb; ++b)
    for (index_t j = 0; j < nk; ++j)
      for (index_t g = 0; g < hkv; ++g)
        for (index_t d = 0; d < dv; ++d)
          if (std::isfinite(v(b, j, g, d)))
            r.max_abs_v = std::max(r.max_abs_v, std::fabs(double(v(b, j, g, d))));

  std::vector<double> s(static_cast<std::size_t>(nk));
  std::vector<double> acc(static_cast<std::size_t>(dv));
  for (index_t b = 0; b < nb; ++b)
    for (index_t i = 0; i < nq; ++i)
      for (index_t h = 0; h < hq; ++h) {
        const index_t g = h / group;
        // DESIGN §2, written out from the definition.
        auto is_allowed = [&](index_t j) {
          const index_t pos = i + off;
          if (opt.causal && j > pos) return false;
          if (!opt.window) return true;
          const index_t left = (*opt.window)[0], right = (*opt.window)[1];
          if (right >= 0 && j > pos + right) return false;
          if (j < opt.sink_tokens) return true;
          return left < 0 || j >= pos - left;
        };
        index_t allowed = 0;
        for (index_t j = 0; j < nk; ++j) allowed += is_allowed(j) ? 1 : 0;
        const bool sink = opt.sinks != nullptr;
        const double sigma = sink ? double(opt.sinks[h]) : neg_inf;
        const std::size_t row = r.row_index(b, i, h);
        r.keys[row] = allowed;
        if (allowed == 0 && !sink) continue;  // empty row: out 0, lse -inf

        double m = sigma;  // fmax ignores NaN scores; they propagate through exp
        for (index_t j = 0; j < nk; ++j) {
          if (!is_allowed(j)) continue;
          double dot = 0;
          for (index_t d = 0; d < dk; ++d) dot += double(q(b, i, h, d)) * double(k(b, j, g, d));
          s[j] = scale * dot;
          m = std::fmax(m, s[j]);
        }
        if (m == neg_inf) m = 0;  // every score NaN: any finite shift keeps them NaN
        double sum = sink ? std::exp(sigma - m) : 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (index_t j = 0; j < nk; ++j) {
          if (!is_allowed(j)) continue;
          const double p = std::exp(s[j] - m);
          sum += p;
          for (index_t d = 0; d < dv; ++d) acc[d] += p * double(v(b, j, g, d));
        }
        for (index_t d = 0; d < dv; ++d) r.out[row * dv + d] = acc[d] / sum;
        r.lse[row] = m + std::log(sum);
      }
  return r;
}

// ---------------------------------------------------------------------------
// Accuracy (DESIGN §1, fp32 storage against the fp64 oracle):
//   ||out - ref||_F / ||ref||_F <= 1e-5, max |out - ref| <= 1e-4 * max|v|,
//   |lse - ref| <= 1e-5 * (1 + |ref|); lse = -inf must match exactly, and an
//   empty row's output is exactly 0.
// NaN isolation: a reference NaN must be NaN in out (resp. lse); in a row the
// reference shows touched by NaN, other entries may be NaN or close; every
// other row must be finite and within tolerance.

}  // namespace attn::ref
