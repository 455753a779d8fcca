// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "attn/backend/scalar.hpp"
#include "attn/core/tensor.hpp"
#include "attn/mask/feature_maps.hpp"
#include "attn/variant/linear.hpp"

// The fp64 oracle of linear attention (DESIGN §2) in two forms, and the
// accuracy check its tests use.
//
//   direct     o_i = sum_j w_ij s_ij v_j [ / (sum_j w_ij s_ij + eps) ],
//              s_ij = scale phi(q_i) . phi(k_j), w_ij = lambda_h^(i+off-j) for
//              j <= i + off (causal, off = Nk - Nq), 1 otherwise: the
//              definition, O(Nq Nk (Df + Dv)).
//   recurrent  S = lambda S + phi(k_j) v_j^T, z = lambda z + phi(k_j) key by
//              key, o = scale phi(q) S [ / (scale phi(q) . z + eps) ] when the
//              query's position is reached: O(N Df Dv), for long sequences,
//              and it gives the state after the last key (linear_state).
//
// Both evaluate phi in fp64 for the built-in maps (identity; elu + 1 =
// x > 0 ? x + 1 : exp(x); relu) and, for any other map, call the map's own
// scalar apply<attn::backend::scalar> on the float row and widen the result.
//
// Error bound. Besides the value, the oracle gives every output element an
// a-priori bound on the error of any fp32 evaluation of the chunked or
// recurrent algorithm (standard rounding-error analysis, Higham ch. 3: a sum
// of n terms computed in any order is off by at most gamma_(n-1) times the
// sum of the terms' absolute values, gamma_n = n u / (1 - n u); underflow
// below 2^-126, which the kernels flush to 0, is left out):
//
//   unnormalised  |o_ie - ref_ie| <= u' A_ie
//   normalised    |o_ie - ref_ie| <= u' (A_ie + |ref_ie| A_i) / (|den_i + eps| - u' A_i)
//                 when |den_i + eps| > u' A_i; otherwise the row is
//                 ill-conditioned and no bound exists (only finiteness is asked)
//
//   A_ie = sum_j w_ij (c + 2 d_ij |ln lambda_h|) |scale| sum_f |phi(q_i)_f phi(k_j)_f| |v_je|
//   A_i  = sum_j w_ij (c + 2 d_ij |ln lambda_h|) |scale| sum_f |phi(q_i)_f phi(k_j)_f| + c eps
//   c    = 2 Nk + 6 ceil(Nk / C) + 2 C + Df + 32,   d_ij = i + off - j,
//   u    = 2^-24 (fp32 unit roundoff),  u' = u / (1 - u c_max),
//   den_i = sum_j w_ij s_ij (the exact normaliser), C the chunk (<= 64 by
//   default), Df the feature count, Nk all keys the state has seen.
//
// Where c comes from: a term w_ij s_ij v_je passes through at most Nk
// additions into the state (2 Nk for linear_step, which rounds lambda S and
// the fma), one decay rescale per chunk and the rounding of each power
// lambda^e (6 per chunk), Df additions in phi(q) . S and in the score, C in
// the intra-chunk product, and a few single roundings (scale, feature map,
// normalisation, eps): 32 covers those. A power lambda^e = exp2(e log2
// lambda) is off by at most (1.5 e |ln lambda| + 4) u relatively, and the
// exponents of one term add up to d_ij: the 2 d_ij |ln lambda| term.
// The per-term sum of |phi(q)_f phi(k)_f| (not |s_ij|) is what makes the
// bound sound for maps with mixed signs (identity): the score and the state
// products both sum over features before the cancellation shows.
// The bound is the worst case: every rounding error at its largest and of the
// same sign. Observed errors are ~1e-3 of it, as rounding errors of either
// sign grow like sqrt(n) u, not n u (the long-sequence test quotes that for
// the state).
namespace attn::ref {

inline constexpr double fp32_unit_roundoff = 0x1.0p-24;

// phi of one contiguous float row in fp64.
template <class Phi>
void features_fp64(const Phi& phi, const float* x, index_t dk, double* y) {
  if constexpr (std::is_same_v<Phi, feature::identity>) {
    for (index_t d = 0; d < dk; ++d) y[d] = x[d];
  } else if constexpr (std::is_same_v<Phi, feature::elu_plus_one>) {
    for (index_t d = 0; d < dk; ++d) {
      const double t = x[d];
      y[d] = t > 0 ? t + 1.0 : std::exp(t);  // exp(NaN) is NaN
    }
  } else if constexpr (std::is_same_v<Phi, feature::relu>) {
    for (index_t d = 0; d < dk; ++d) {
      const double t = x[d];
      y[d] = (t > 0 || std::isnan(t)) ? t : 0.0;
    }
  } else {
    std::vector<float> f(static_cast<std::size_t>(phi.features(dk)));
    phi.template apply<backend::scalar>(x, dk, f.data());
    for (std::size_t e = 0; e < f.size(); ++e) y[e] = f[e];
  }
}

// Oracle output: out (B, Nq, Hq, Dv) with its error bound, contiguous BSHD;
// the recurrent form also leaves the state after the last key.
struct linear_result {
  index_t batch = 0, nq = 0, hq = 0, dv = 0, features = 0;
  std::vector<double> out;    // (B, Nq, Hq, Dv)
  std::vector<double> bound;  // (B, Nq, Hq, Dv) a-priori fp32 error bound; inf: ill-conditioned
  std::vector<double> magnitude;  // (B, Nq, Hq, Dv) M_ie, the size of the summed terms (below)
  std::vector<char> empty;    // (B, Nq, Hq) rows that see no key: out exactly 0
  double max_abs = 0;         // max |out| over finite entries

  // Causal recurrent form only: S (B, Hq, Df, Dv), z (B, Hq, Df) after all
  // keys, with their bounds u' (c M0 + 2 |ln lambda| M1) and magnitudes M0
  // (no scale: the state holds phi(k) v^T).
  bool has_state = false;
  index_t tokens = 0;
  std::vector<double> s, s_bound, s_magnitude, z, z_bound, z_magnitude;

  std::size_t row_index(index_t b, index_t i, index_t h) const {
    return static_cast<std::size_t>((b * nq + i) * hq + h);
  }
  double o(index_t b, index_t i, index_t h, index_t e) const {
    return out[row_index(b, i, h) * static_cast<std::size_t>(dv) + static_cast<std::size_t>(e)];
  }
};

namespace detail {

// The float row x(b, s, h, :) copied to contiguous memory.
inline void read_row(view4<const float> x, index_t b, index_t s, index_t h, float* row) {
  for (index_t d = 0; d < x.extent[3]; ++d) row[d] = x(b, s, h, d);
}

// c of the bound (see the top of this file) for Nk keys and Df features.
inline double bound_constant(const linear_options& opt, index_t nk, index_t features) {
  const index_t chunk = opt.chunk > 0 ? opt.chunk : attn::detail::linear_max_chunk;
  const index_t chunks = (nk + chunk - 1) / chunk;
  return double(2 * nk + 6 * chunks + 2 * chunk + features + 32);
}

struct oracle_setup {
  index_t nb, nq, hq, dk, nk, hkv, dv, group, off, features;
  double scale, eps, c, u;
  std::vector<double> lambda;  // (Hq)

  oracle_setup(view4<const float> q, view4<const float> k, view4<const float> v, index_t df,
               const linear_options& opt)
      : nb(q.extent[0]), nq(q.extent[1]), hq(q.extent[2]), dk(q.extent[3]), nk(k.extent[1]),
        hkv(k.extent[2]), dv(v.extent[3]), group(hq / hkv), off(nk - nq), features(df),
        scale(opt.scale), eps(opt.eps), c(bound_constant(opt, nk, df)) {
    double log_max = 0;
    for (index_t h = 0; h < hq; ++h) {
      lambda.push_back(opt.decay.empty() ? 1.0 : double(opt.decay[static_cast<std::size_t>(h)]));
      log_max = std::max(log_max, std::fabs(std::log(lambda.back())));
    }
    const double c_max = c + 2.0 * double(nk) * log_max;
    u = fp32_unit_roundoff / std::max(1.0 - fp32_unit_roundoff * c_max, 0.5);
  }

  linear_result make_result() const {
    linear_result r;
    r.batch = nb;
    r.nq = nq;
    r.hq = hq;
    r.dv = dv;
    r.features = features;
    r.out.assign(static_cast<std::size_t>(nb * nq * hq * dv), 0.0);
    r.bound.assign(r.out.size(), 0.0);
    r.magnitude.assign(r.out.size(), 0.0);
    r.empty.assign(static_cast<std::size_t>(nb * nq * hq), 0);
    return r;
  }

  // Writes one row from its numerator and denominator, their sums of
  // absolute values (num_abs, den_abs) and the same weighted by
  // c + 2 d |ln lambda| (num_mag, den_mag).
  void finish_row(linear_result& r, index_t b, index_t i, index_t h, bool normalize,
                  const double* num, const double* num_abs, const double* num_mag, double den,
                  double den_abs, double den_mag) const {
    const std::size_t row = r.row_index(b, i, h) * static_cast<std::size_t>(dv);
    const double dt = den + eps;
    const double den_err = u * (den_mag + c * eps);
    for (index_t e = 0; e < dv; ++e) {
      const std::size_t x = row + static_cast<std::size_t>(e);
      if (!normalize) {
        r.out[x] = num[e];
        r.bound[x] = u * num_mag[e];
        r.magnitude[x] = num_abs[e];
      } else {
        const double o = num[e] / dt;
        const double room = std::fabs(dt) - den_err;
        r.out[x] = o;
        r.bound[x] = room > 0 ? (u * num_mag[e] + std::fabs(o) * den_err) / room
                              : std::numeric_limits<double>::infinity();
        r.magnitude[x] = (num_abs[e] + std::fabs(o) * (den_abs + eps)) / std::fabs(dt);
      }
    }
  }
};

inline void finish_max(linear_result& r) {
  for (double x : r.out)
    if (std::isfinite(x)) r.max_abs = std::max(r.max_abs, std::fabs(x));
}

}  // namespace detail

// The definition, pair by pair.
template <class Phi>
linear_result linear_direct(view4<const float> q, view4<const float> k, view4<const float> v,
                            const Phi& phi, const linear_options& opt) {
  const index_t df = q.extent[3] >= 1 ? phi.features(q.extent[3]) : 0;
  const detail::oracle_setup p(q, k, v, df, opt);
  linear_result r = p.make_result();
  const auto F = static_cast<std::size_t>(df);

  // phi of every key row (B, Nk, Hkv, Df).
  std::vector<double> pk(static_cast<std::size_t>(p.nb * p.nk * p.hkv) * F);
  std::vector<float> row(static_cast<std::size_t>(std::max<index_t>(p.dk, 1)));
  for (index_t b = 0; b < p.nb; ++b)
    for (index_t j = 0; j < p.nk; ++j)
      for (index_t g = 0; g < p.hkv; ++g) {
        detail::read_row(k, b, j, g, row.data());
        features_fp64(phi, row.data(), p.dk, &pk[static_cast<std::size_t>((b * p.nk + j) * p.hkv + g) * F]);
      }

  std::vector<double> pq(F), num(static_cast<std::size_t>(p.dv)), num_abs(num.size()), mag(num.size());
  for (index_t b = 0; b < p.nb; ++b)
    for (index_t i = 0; i < p.nq; ++i)
      for (index_t h = 0; h < p.hq; ++h) {
        const index_t g = h / p.group, pos = i + p.off;
        const index_t last = opt.causal ? std::min(pos, p.nk - 1) : p.nk - 1;
        if (last < 0) {  // no key: out 0 (normalised too: 0 / eps)
          r.empty[r.row_index(b, i, h)] = 1;
          continue;
        }
        detail::read_row(q, b, i, h, row.data());
        features_fp64(phi, row.data(), p.dk, pq.data());
        const double lambda = p.lambda[static_cast<std::size_t>(h)], log_lambda = std::fabs(std::log(lambda));
        std::fill(num.begin(), num.end(), 0.0);
        std::fill(num_abs.begin(), num_abs.end(), 0.0);
        std::fill(mag.begin(), mag.end(), 0.0);
        double den = 0, den_abs = 0, den_mag = 0;
        for (index_t j = 0; j <= last; ++j) {
          const double* f = &pk[static_cast<std::size_t>((b * p.nk + j) * p.hkv + g) * F];
          double s = 0, m = 0;
          for (std::size_t x = 0; x < F; ++x) {
            s += pq[x] * f[x];
            m += std::fabs(pq[x] * f[x]);
          }
          s *= p.scale;
          m *= std::fabs(p.scale);
          const double d = double(pos - j);
          const double w = opt.causal ? std::pow(lambda, d) : 1.0;
          const double wc = w * (p.c + 2.0 * d * log_lambda);
          for (index_t e = 0; e < p.dv; ++e) {
            const double ve = v(b, j, g, e);
            num[static_cast<std::size_t>(e)] += w * s * ve;
            num_abs[static_cast<std::size_t>(e)] += w * m * std::fabs(ve);
            mag[static_cast<std::size_t>(e)] += wc * m * std::fabs(ve);
          }
          den += w * s;
          den_abs += w * m;
          den_mag += wc * m;
        }
        p.finish_row(r, b, i, h, opt.normalize, num.data(), num_abs.data(), mag.data(), den, den_abs,
                     den_mag);
      }
  detail::finish_max(r);
  return r;
}

// The recurrence, key by key; queries read the state when their position is
// reached. M0 = sum_j w |phi(k_j)| |v_j|^T and M1 = sum_j w d |phi(k_j)| |v_j|^T
// (d the distance back) carry the bound's magnitudes: M1 <- lambda (M1 + M0).
template <class Phi>
linear_result linear_recurrent(view4<const float> q, view4<const float> k, view4<const float> v,
                               const Phi& phi, const linear_options& opt) {
  const index_t df = q.extent[3] >= 1 ? phi.features(q.extent[3]) : 0;
  const detail::oracle_setup p(q, k, v, df, opt);
  linear_result r = p.make_result();
  const auto F = static_cast<std::size_t>(df), D = static_cast<std::size_t>(p.dv);
  if (opt.causal) {
    r.has_state = true;
    r.tokens = p.nk;
    r.s.assign(static_cast<std::size_t>(p.nb * p.hq) * F * D, 0.0);
    r.s_bound.assign(r.s.size(), 0.0);
    r.s_magnitude.assign(r.s.size(), 0.0);
    r.z.assign(static_cast<std::size_t>(p.nb * p.hq) * F, 0.0);
    r.z_bound.assign(r.z.size(), 0.0);
    r.z_magnitude.assign(r.z.size(), 0.0);
  }

  std::vector<float> row(static_cast<std::size_t>(std::max<index_t>(p.dk, 1)));
  std::vector<double> pq(F), pk(F), vr(D), num(D), num_abs(D), mag(D);
  std::vector<double> s(F * D), m0(F * D), m1(F * D), z(F), z0(F), z1(F);
  for (index_t b = 0; b < p.nb; ++b)
    for (index_t h = 0; h < p.hq; ++h) {
      const index_t g = h / p.group;
      const double lambda = opt.causal ? p.lambda[static_cast<std::size_t>(h)] : 1.0;
      const double log_lambda = std::fabs(std::log(lambda));
      std::fill(s.begin(), s.end(), 0.0);
      std::fill(m0.begin(), m0.end(), 0.0);
      std::fill(m1.begin(), m1.end(), 0.0);
      std::fill(z.begin(), z.end(), 0.0);
      std::fill(z0.begin(), z0.end(), 0.0);
      std::fill(z1.begin(), z1.end(), 0.0);

      auto add_key = [&](index_t j) {
        detail::read_row(k, b, j, g, row.data());
        features_fp64(phi, row.data(), p.dk, pk.data());
        for (std::size_t e = 0; e < D; ++e) vr[e] = v(b, j, g, static_cast<index_t>(e));
        for (std::size_t f = 0; f < F; ++f) {
          for (std::size_t e = 0; e < D; ++e) {
            const std::size_t x = f * D + e;
            if (lambda != 1.0) m1[x] = lambda * (m1[x] + m0[x]);
            m0[x] = lambda * m0[x] + std::fabs(pk[f] * vr[e]);
            s[x] = lambda * s[x] + pk[f] * vr[e];
          }
          if (lambda != 1.0) z1[f] = lambda * (z1[f] + z0[f]);
          z0[f] = lambda * z0[f] + std::fabs(pk[f]);
          z[f] = lambda * z[f] + pk[f];
        }
      };
      auto read = [&](index_t i) {
        detail::read_row(q, b, i, h, row.data());
        features_fp64(phi, row.data(), p.dk, pq.data());
        std::fill(num.begin(), num.end(), 0.0);
        std::fill(num_abs.begin(), num_abs.end(), 0.0);
        std::fill(mag.begin(), mag.end(), 0.0);
        double den = 0, den_abs = 0, den_mag = 0;
        for (std::size_t f = 0; f < F; ++f) {
          const double qf = p.scale * pq[f], aq = std::fabs(qf);
          for (std::size_t e = 0; e < D; ++e) {
            const std::size_t x = f * D + e;
            num[e] += qf * s[x];
            num_abs[e] += aq * m0[x];
            mag[e] += aq * (p.c * m0[x] + 2.0 * log_lambda * m1[x]);
          }
          den += qf * z[f];
          den_abs += aq * z0[f];
          den_mag += aq * (p.c * z0[f] + 2.0 * log_lambda * z1[f]);
        }
        p.finish_row(r, b, i, h, opt.normalize, num.data(), num_abs.data(), mag.data(), den, den_abs,
                     den_mag);
      };

      if (opt.causal) {
        for (index_t i = 0; i < std::min(p.nq, -p.off); ++i) r.empty[r.row_index(b, i, h)] = 1;
        for (index_t j = 0; j < p.nk; ++j) {
          add_key(j);
          if (const index_t i = j - p.off; i >= 0 && i < p.nq) read(i);
        }
        const std::size_t at = static_cast<std::size_t>(b * p.hq + h);
        for (std::size_t x = 0; x < F * D; ++x) {
          r.s[at * F * D + x] = s[x];
          r.s_bound[at * F * D + x] = p.u * (p.c * m0[x] + 2.0 * log_lambda * m1[x]);
          r.s_magnitude[at * F * D + x] = m0[x];
        }
        for (std::size_t f = 0; f < F; ++f) {
          r.z[at * F + f] = z[f];
          r.z_bound[at * F + f] = p.u * (p.c * z0[f] + 2.0 * log_lambda * z1[f]);
          r.z_magnitude[at * F + f] = z0[f];
        }
      } else {
        for (index_t j = 0; j < p.nk; ++j) add_key(j);
        for (index_t i = 0; i < p.nq; ++i) {
          if (p.nk == 0)
            r.empty[r.row_index(b, i, h)] = 1;
          else
            read(i);
        }
      }
    }
  detail::finish_max(r);
  return r;
}

// The cheaper of the two forms for this problem (they are checked against
// each other in tests/variant/linear_test.cpp).
template <class Phi>
linear_result linear_reference(view4<const float> q, view4<const float> k, view4<const float> v,
                               const Phi& phi, const linear_options& opt) {
  const double nq = double(q.extent[1]), nk = double(k.extent[1]), dv = double(v.extent[3]);
  const double df = q.extent[3] >= 1 ? double(phi.features(q.extent[3])) : 0.0;
  const double pairs = opt.causal ? std::min(nq, nk) * nk / 2 : nq * nk;
  const double direct = pairs * (2 * df + 2 * dv);
  const double recurrent = (nk * 4 + nq * 2) * df * dv;
  if (direct >= recurrent) return linear_recurrent(q, k, v, phi, opt);
  return linear_direct(q, k, v, phi, opt);
}

// ---------------------------------------------------------------------------
// The check. Every element within its a-priori bound (always asserted); and
// DESIGN §1's numbers as well, relative Frobenius error <= 1e-5 and max abs
// error <= 1e-4 max |ref|, measured against
//   value      the reference itself (the contract as written), or
//   magnitude  M_ie, the size of the terms the row sums (bound / (u' c)):
//              (sum_j w |scale| sum_f |phi(q)_f phi(k)_f| |v_je|) unnormalised,
//              that plus |ref_ie| times the normaliser's terms, over
//              |den_i + eps|, normalised. M = |ref| when nothing cancels; for
//              a sum that cancels (mixed-sign features: identity) the fp32
//              error is relative to M, not to the result: ||o - ref|| /
//              ||ref|| can only be asked to be 1e-5 times the condition
//              number ||M|| / ||ref||, which is what this measures.
//   none       the a-priori bound only.
// Non-finite reference entries must be non-finite in out; the other entries of
// such a row may be non-finite or within their bound; every other row must be
// finite. A row that sees no key must be exactly 0. A row whose bound is
// infinite (normaliser within rounding of 0) only has to be finite.

enum class relative_to { value, magnitude, none };

struct linear_tolerance {
  relative_to contract = relative_to::value;
  double rel_frobenius = 1e-5;
  double max_abs_over_max_ref = 1e-4;
};

struct linear_accuracy {
  double rel_frobenius = 0, max_abs = 0, max_over_bound = 0;
  std::int64_t rows = 0, ill_conditioned_rows = 0, touched_rows = 0;
  std::vector<std::string> problems;

  std::string summary() const {
    std::ostringstream s;
    s << "rel_frobenius=" << rel_frobenius << " max_abs=" << max_abs
      << " max(err/bound)=" << max_over_bound << " rows=" << rows
      << " ill_conditioned=" << ill_conditioned_rows << " non_finite=" << touched_rows;
    for (const auto& p : problems) s << "\n  " << p;
    return s.str();
  }
};

inline linear_accuracy measure_linear(view4<const float> out, const linear_result& ref,
                                      const linear_tolerance& tol = {}) {
  linear_accuracy a;
  auto problem = [&](const std::string& msg) {
    if (a.problems.size() < 8) a.problems.push_back(msg);
  };
  if (out.extent != std::array<index_t, 4>{ref.batch, ref.nq, ref.hq, ref.dv}) {
    problem("out has shape " + attn::detail::shape_string(out) + ", the reference (" +
            std::to_string(ref.batch) + ", " + std::to_string(ref.nq) + ", " +
            std::to_string(ref.hq) + ", " + std::to_string(ref.dv) + ")");
    return a;
  }
  auto where = [](index_t b, index_t i, index_t h, index_t e) {
    return "out(b=" + std::to_string(b) + ", i=" + std::to_string(i) + ", h=" + std::to_string(h) +
           ")[" + std::to_string(e) + "]";
  };
  double diff2 = 0, ref2 = 0, max_ref = 0;
  for (index_t b = 0; b < ref.batch; ++b)
    for (index_t i = 0; i < ref.nq; ++i)
      for (index_t h = 0; h < ref.hq; ++h) {
        const std::size_t row = ref.row_index(b, i, h) * static_cast<std::size_t>(ref.dv);
        bool touched = false, ill = false;
        for (index_t e = 0; e < ref.dv; ++e) {
          touched = touched || !std::isfinite(ref.out[row + static_cast<std::size_t>(e)]);
          ill = ill || std::isinf(ref.bound[row + static_cast<std::size_t>(e)]);
        }
        const bool empty = ref.empty[ref.row_index(b, i, h)] != 0;
        ++a.rows;
        a.touched_rows += touched;
        a.ill_conditioned_rows += ill && !touched;
        for (index_t e = 0; e < ref.dv; ++e) {
          const double r = ref.out[row + static_cast<std::size_t>(e)];
          const double bound = ref.bound[row + static_cast<std::size_t>(e)];
          const double o = out(b, i, h, e);
          if (empty) {
            if (o != 0.0) problem(where(b, i, h, e) + " sees no key, expected exactly 0, got " + std::to_string(o));
            continue;
          }
          if (!std::isfinite(r)) {
            if (std::isfinite(o))
              problem(where(b, i, h, e) + " = " + std::to_string(o) + ", expected non-finite (" +
                      std::to_string(r) + ")");
            continue;
          }
          if (touched && !std::isfinite(o)) continue;
          if (!std::isfinite(o)) {
            problem(where(b, i, h, e) + " = " + std::to_string(o) + ", expected finite " + std::to_string(r));
            continue;
          }
          if (std::isinf(bound)) continue;  // ill-conditioned: finite is all one can ask
          const double err = std::fabs(o - r);
          if (bound > 0) a.max_over_bound = std::max(a.max_over_bound, err / bound);
          if (!(err <= bound))
            problem(where(b, i, h, e) + " = " + std::to_string(o) + ", expected " + std::to_string(r) +
                    " (error " + std::to_string(err) + " > a-priori bound " + std::to_string(bound) + ")");
          if (touched) continue;
          const double scale = tol.contract == relative_to::magnitude
                                   ? ref.magnitude[row + static_cast<std::size_t>(e)]
                                   : std::fabs(r);
          diff2 += err * err;
          ref2 += scale * scale;
          max_ref = std::max(max_ref, scale);
          a.max_abs = std::max(a.max_abs, err);
        }
      }
  a.rel_frobenius = ref2 > 0 ? std::sqrt(diff2 / ref2) : (diff2 > 0 ? INFINITY : 0.0);
  if (tol.contract != relative_to::none) {
    const std::string of = tol.contract == relative_to::magnitude ? "max M" : "max|ref|";
    if (!(a.rel_frobenius <= tol.rel_frobenius))
      problem("relative Frobenius error " + std::to_string(a.rel_frobenius) + " > " +
              std::to_string(tol.rel_frobenius) +
              (tol.contract == relative_to::magnitude ? " (relative to M)" : ""));
    if (!(a.max_abs <= tol.max_abs_over_max_ref * max_ref))
      problem("max abs error " + std::to_string(a.max_abs) + " > " + std::to_string(tol.max_abs_over_max_ref) +
              " * " + of + " = " + std::to_string(tol.max_abs_over_max_ref * max_ref));
  }
  return a;
}

// EXPECT_TRUE(ref::within_linear_bounds(out, oracle)).
inline ::testing::AssertionResult within_linear_bounds(view4<const float> out, const linear_result& ref,
                                                       const linear_tolerance& tol = {}) {
  const linear_accuracy a = measure_linear(out, ref, tol);
  if (a.problems.empty()) return ::testing::AssertionSuccess() << a.summary();
  return ::testing::AssertionFailure() << a.summary();
}

// The state object's S and z against the causal recurrent oracle's: every
// entry within its bound, relative Frobenius error <= tol.rel_frobenius (of
// the values or of the magnitudes M0, as for the outputs), the same shape,
// normalisation and token count.
inline ::testing::AssertionResult state_matches(const linear_state& st, const linear_result& ref,
                                                const linear_tolerance& tol = {}) {
  if (!ref.has_state) return ::testing::AssertionFailure() << "the reference holds no state (causal recurrent only)";
  if (st.batch() != ref.batch || st.heads() != ref.hq || st.features() != ref.features || st.dv() != ref.dv)
    return ::testing::AssertionFailure() << "state (B=" << st.batch() << ", H=" << st.heads() << ", F="
                                         << st.features() << ", Dv=" << st.dv() << "), reference (B="
                                         << ref.batch << ", H=" << ref.hq << ", F=" << ref.features
                                         << ", Dv=" << ref.dv << ")";
  if (st.tokens() != ref.tokens)
    return ::testing::AssertionFailure() << "state has seen " << st.tokens() << " tokens, expected " << ref.tokens;
  const auto F = static_cast<std::size_t>(ref.features), D = static_cast<std::size_t>(ref.dv);
  double diff2 = 0, ref2 = 0;
  std::ostringstream bad;
  int shown = 0;
  auto check = [&](double got, double want, double bound, double magnitude, const std::string& name) {
    if (!std::isfinite(want)) {
      if (std::isfinite(got) && shown++ < 8) bad << "\n  " << name << " = " << got << ", expected non-finite";
      return;
    }
    const double err = std::fabs(got - want);
    const double scale = tol.contract == relative_to::magnitude ? magnitude : want;
    diff2 += err * err;
    ref2 += scale * scale;
    if (!(err <= bound) && shown++ < 8)
      bad << "\n  " << name << " = " << got << ", expected " << want << " (bound " << bound << ")";
  };
  for (index_t b = 0; b < ref.batch; ++b)
    for (index_t h = 0; h < ref.hq; ++h) {
      const std::size_t at = static_cast<std::size_t>(b * ref.hq + h);
      const std::string head = "(b=" + std::to_string(b) + ", h=" + std::to_string(h) + ")";
      for (std::size_t x = 0; x < F * D; ++x)
        check(st.s(b, h)[x], ref.s[at * F * D + x], ref.s_bound[at * F * D + x], ref.s_magnitude[at * F * D + x],
              "S" + head + "[" + std::to_string(x / D) + "][" + std::to_string(x % D) + "]");
      if (st.normalized() != (st.z(b, h) != nullptr))
        return ::testing::AssertionFailure() << "z present iff normalised";
      if (st.normalized())
        for (std::size_t f = 0; f < F; ++f)
          check(st.z(b, h)[f], ref.z[at * F + f], ref.z_bound[at * F + f], ref.z_magnitude[at * F + f],
                "z" + head + "[" + std::to_string(f) + "]");
    }
  const double rel = ref2 > 0 ? std::sqrt(diff2 / ref2) : (diff2 > 0 ? INFINITY : 0.0);
  const bool rel_ok = tol.contract == relative_to::none || rel <= tol.rel_frobenius;
  if (!rel_ok) bad << "\n  relative Frobenius error " << rel;
  if (shown > 0 || !rel_ok)
    return ::testing::AssertionFailure() << "state rel_frobenius=" << rel << bad.str();
  return ::testing::AssertionSuccess() << "state rel_frobenius=" << rel;
}

}  // namespace attn::ref
