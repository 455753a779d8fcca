// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
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

// A pair predicate (b, h, i, j) and a score modifier (s, b, h, i, j) -> s
// in natural-log units, both evaluated in fp64 by the oracle.
using pair_predicate = std::function<bool(index_t, index_t, index_t, index_t)>;
using score_function = std::function<double(double, index_t, index_t, index_t, index_t)>;

// Softmax attention in fp64 over strided BSHD views (any memory order):
// s = scale * q.k, then modify(s, b, h, i, j), then pairs with
// !allowed(b, h, i, j) removed; per-head sink logits added to the
// denominator as exp(sigma_h) (not scaled), GQA (query head h reads kv head
// h / (Hq/Hkv)). NaN inputs propagate by IEEE arithmetic to exactly the rows
// that touch them.
inline softmax_result softmax_attention(view4<const float> q, view4<const float> k,
                                        view4<const float> v, double scale, const float* sinks,
                                        const pair_predicate& allowed_pair,
                                        const score_function& modify) {
  const index_t nb = q.extent[0], nq = q.extent[1], hq = q.extent[2], dk = q.extent[3];
  const index_t nk = k.extent[1], hkv = k.extent[2], dv = v.extent[3];
  const index_t group = hq / hkv;

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
  std::vector<char> keep(static_cast<std::size_t>(nk));
  std::vector<double> acc(static_cast<std::size_t>(dv));
  for (index_t b = 0; b < nb; ++b)
    for (index_t i = 0; i < nq; ++i)
      for (index_t h = 0; h < hq; ++h) {
        const index_t g = h / group;
        index_t allowed = 0;
        for (index_t j = 0; j < nk; ++j) {
          keep[j] = allowed_pair(b, h, i, j) ? 1 : 0;
          allowed += keep[j];
        }
        const bool sink = sinks != nullptr;
        const double sigma = sink ? double(sinks[h]) : neg_inf;
        const std::size_t row = r.row_index(b, i, h);
        r.keys[row] = allowed;
        if (allowed == 0 && !sink) continue;  // empty row: out 0, lse -inf

        double m = sigma;  // fmax ignores NaN scores; they propagate through exp
        for (index_t j = 0; j < nk; ++j) {
          if (!keep[j]) continue;
          double dot = 0;
          for (index_t d = 0; d < dk; ++d) dot += double(q(b, i, h, d)) * double(k(b, j, g, d));
          s[j] = modify(scale * dot, b, h, i, j);
          m = std::fmax(m, s[j]);
        }
        if (m == neg_inf) {  // every score -inf (a bias) or NaN
          bool any_nan = false;
          for (index_t j = 0; j < nk; ++j) any_nan = any_nan || (keep[j] && std::isnan(s[j]));
          if (!any_nan && !sink) {
            r.keys[row] = 0;  // a -inf bias removed every pair: an empty row
            continue;
          }
          m = 0;  // any finite shift keeps NaN scores NaN
        }
        double sum = sink ? std::exp(sigma - m) : 0.0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (index_t j = 0; j < nk; ++j) {
          if (!keep[j] || s[j] == neg_inf) continue;
          const double p = std::exp(s[j] - m);
          sum += p;
          for (index_t d = 0; d < dv; ++d) acc[d] += p * double(v(b, j, g, d));
        }
        for (index_t d = 0; d < dv; ++d) r.out[row * dv + d] = acc[d] / sum;
        r.lse[row] = m + std::log(sum);
      }
  return r;
}

// The standard ALiBi slopes, from their definition: for n a power of two,
// 2^(-8k/n), k = 1..n; else those of the largest power of two p < n, then
// the odd-indexed (1st, 3rd, ...) slopes of 2p for the other n - p heads.
inline std::vector<double> alibi_slopes(index_t n) {
  auto pow2 = [](index_t p) {
    std::vector<double> s;
    for (index_t k = 1; k <= p; ++k) s.push_back(std::pow(2.0, -8.0 * double(k) / double(p)));
    return s;
  };
  index_t p = 1;
  while (p * 2 <= n) p *= 2;
  std::vector<double> s = pow2(p);
  const std::vector<double> finer = pow2(2 * p);
  for (index_t k = 0; s.size() < static_cast<std::size_t>(n); k += 2) s.push_back(finer[k]);
  return s;
}

// The options' built-ins written out from DESIGN §1-2: causal, window, sink
// tokens, document ids, prefix-LM, softcap, ALiBi, additive bias.
inline softmax_result softmax_attention(view4<const float> q, view4<const float> k,
                                        view4<const float> v, const softmax_options& opt = {}) {
  const index_t nq = q.extent[1], hq = q.extent[2], dk = q.extent[3], nk = k.extent[1];
  const double scale = opt.scale ? static_cast<double>(*opt.scale) : 1.0 / std::sqrt(double(dk));
  const index_t off = nk - nq;
  auto allowed = [&opt, off](index_t, index_t, index_t i, index_t j) {
    const index_t pos = i + off;
    if (!opt.document_ids.empty() && opt.document_ids[pos] != opt.document_ids[j]) return false;
    if (opt.prefix_lm) return j < *opt.prefix_lm || j <= pos;
    if (opt.causal && j > pos) return false;
    if (!opt.window) return true;
    const index_t left = (*opt.window)[0], right = (*opt.window)[1];
    if (right >= 0 && j > pos + right) return false;
    if (j < opt.sink_tokens) return true;
    return left < 0 || j >= pos - left;
  };
  std::vector<double> slopes;
  if (opt.alibi_slopes)
    slopes.assign(opt.alibi_slopes, opt.alibi_slopes + hq);
  else if (opt.alibi)
    slopes = alibi_slopes(hq);
  auto modify = [&](double s, index_t b, index_t h, index_t i, index_t j) {
    if (opt.softcap) s = double(*opt.softcap) * std::tanh(s / double(*opt.softcap));
    if (!slopes.empty()) s -= slopes[h] * double(std::abs(i + off - j));
    if (!opt.bias.empty()) {
      const view4<const float>& bias = opt.bias;
      s += double(bias(bias.extent[0] == 1 ? 0 : b, bias.extent[1] == 1 ? 0 : h, i, j));
    }
    return s;
  };
  return softmax_attention(q, k, v, scale, opt.sinks, allowed, modify);
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
