// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0

// attn/interop/eigen.hpp: the proof that DeepSeek MLA's absorbed form,
//   apply_rope -> absorb_queries -> latent_attention -> apply_value_up,
// equals standard multi-head attention over the up-projected keys
// [W_UK[h] c ; rope(k_pe)] and values W_UV[h] c (attn::attention with
// Hkv = H), causal or not, from one token to DeepSeek-V3's shapes; each
// helper against a direct formula (fp64 for the rotary embedding) on strided
// layouts; the kv_b_proj split; and every argument error.
//
// The tolerance of the equivalence (kAbsorbedTolerance below): both paths
// compute the same scores and outputs in fp32, in different association
// orders -- (W_UK^T q_nope) . c against q_nope . (W_UK c) for the scores,
// W_UV (sum_j p_j c_j) against sum_j p_j (W_UV c_j) for the outputs -- so they
// differ by fp32 rounding of sums of Dc or Dnope products: a few units of
// 2^-24 sqrt(Dc) times the size of the terms, so growing with Dc. Measured
// (AVX2 build, the cases here and 60 more seeds): at most 1.0e-6 of max |out|
// with Dc = 64 and 3.3e-6 with Dc = 512; lse within 3.3e-7 (1 + |lse|). The
// bounds, 2e-5 of max |out| and 2e-6 (1 + |lse|), leave a factor of 6 for
// other ISAs' summation orders, while a real mistake (a wrong head block, a
// transposed weight, a lost rope half, a scale off by a factor) moves the
// outputs by 1e-2 or more.

#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <complex>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "attn/attn.hpp"
#include "attn/interop/eigen.hpp"
#include "reference/checks.hpp"
#include "reference/random.hpp"

namespace eigen_test {

using attn::index_t;
namespace ref = attn::ref;
using attn::eigen::matrix;

constexpr double kAbsorbedTolerance = 2e-5;  // of max |out|, see the top of the file
constexpr double kLseTolerance = 2e-6;       // of 1 + |lse|
constexpr float sentinel = -1234.5f;

// A row-major matrix of uniform values in [-a, a).
matrix random_matrix(ref::rng& g, index_t rows, index_t cols, float a) {
  matrix m(rows, cols);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) m(r, c) = g.uniform(-a, a);
  return m;
}

struct mla_shape {
  index_t batch, nq, nk, heads;
  index_t dc, d_nope, d_rope, dv;
  bool causal;
};

std::string describe(const mla_shape& s) {
  return "B=" + std::to_string(s.batch) + " Nq=" + std::to_string(s.nq) +
         " Nk=" + std::to_string(s.nk) + " H=" + std::to_string(s.heads) +
         " Dc=" + std::to_string(s.dc) + " Dnope=" + std::to_string(s.d_nope) +
         " Dr=" + std::to_string(s.d_rope) + " Dv=" + std::to_string(s.dv) +
         (s.causal ? " causal" : "");
}

struct equivalence {
  double max_out_diff = 0;  // max |absorbed - standard| / max |standard|
  double max_lse_diff = 0;  // max |absorbed - standard| / (1 + |standard|), finite rows
  bool lse_infinities_agree = true;
};

// Both paths of one random MLA problem, compared.
equivalence absorbed_vs_standard(const mla_shape& s, std::uint64_t seed) {
  const index_t B = s.batch, Nq = s.nq, Nk = s.nk, H = s.heads;
  const index_t Dc = s.dc, Dn = s.d_nope, Dr = s.d_rope, Dv = s.dv, Dk = Dn + Dr;
  ref::rng g(seed);

  // Weights with unit-variance outputs (W c has entries of variance 1/3 for
  // c uniform in [-1, 1)), queries 4x larger so the softmax is not flat.
  const float w_bound = std::sqrt(3.0f / static_cast<float>(Dc));
  const matrix w_uk = random_matrix(g, H * Dn, Dc, w_bound);  // (H Dnope, Dc)
  const matrix w_uv = random_matrix(g, H * Dv, Dc, w_bound);  // (H Dv, Dc)
  // The cache: latent c then k_pe, rotated at positions 0 .. Nk - 1.
  ref::tensor4 cache = ref::random_bshd(g, B, Nk, 1, Dc + Dr);     // (B, Nk, 1, Dc + Dr)
  attn::eigen::apply_rope(cache.view, Dc, Dr, 0);
  auto queries = [&](index_t d) {
    return ref::random<4>(g, {B, Nq, H, d}, ref::bshd_memory, -4, 4);
  };
  ref::tensor4 q_nope = queries(Dn);                                // (B, Nq, H, Dnope)
  ref::tensor4 q_pe = queries(Dr);                                  // (B, Nq, H, Dr)
  // Query i sits at key position i + Nk - Nq (DESIGN §1); those before the
  // first key (causal rows with no key) are rotated from position 0.
  attn::eigen::apply_rope(q_pe.view, 0, Dr, std::max<index_t>(Nk - Nq, 0));
  const float scale = 1.0f / std::sqrt(static_cast<float>(Dk));

  // Standard: q = [q_nope ; q_pe], k = [W_UK[h] c ; k_pe], v = W_UV[h] c, the
  // up-projections in fp64 and rounded once.
  std::vector<float> q(B * Nq * H * Dk), k(B * Nk * H * Dk), v(B * Nk * H * Dv);
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < Nq; ++i)
      for (index_t h = 0; h < H; ++h) {
        float* row = q.data() + ((b * Nq + i) * H + h) * Dk;
        for (index_t d = 0; d < Dn; ++d) row[d] = q_nope.view(b, i, h, d);
        for (index_t d = 0; d < Dr; ++d) row[Dn + d] = q_pe.view(b, i, h, d);
      }
  const Eigen::MatrixXd uk = w_uk.cast<double>(), uv = w_uv.cast<double>();
  for (index_t b = 0; b < B; ++b) {
    Eigen::MatrixXd c(Nk, Dc);  // (Nk, Dc)
    for (index_t j = 0; j < Nk; ++j)
      for (index_t d = 0; d < Dc; ++d) c(j, d) = cache.view(b, j, 0, d);
    const Eigen::MatrixXd k_nope = c * uk.transpose();  // (Nk, H Dnope)
    const Eigen::MatrixXd values = c * uv.transpose();  // (Nk, H Dv)
    for (index_t j = 0; j < Nk; ++j)
      for (index_t h = 0; h < H; ++h) {
        float* k_row = k.data() + ((b * Nk + j) * H + h) * Dk;
        float* v_row = v.data() + ((b * Nk + j) * H + h) * Dv;
        for (index_t d = 0; d < Dn; ++d) k_row[d] = static_cast<float>(k_nope(j, h * Dn + d));
        for (index_t d = 0; d < Dr; ++d) k_row[Dn + d] = cache.view(b, j, 0, Dc + d);
        for (index_t d = 0; d < Dv; ++d) v_row[d] = static_cast<float>(values(j, h * Dv + d));
      }
  }
  std::vector<float> out_std(B * Nq * H * Dv), lse_std(B * Nq * H);
  attn::softmax_options standard;
  standard.scale = scale;
  standard.causal = s.causal;
  attn::attention(attn::bshd<const float>(q.data(), B, Nq, H, Dk),
                  attn::bshd<const float>(k.data(), B, Nk, H, Dk),
                  attn::bshd<const float>(v.data(), B, Nk, H, Dv),
                  attn::bshd(out_std.data(), B, Nq, H, Dv), attn::bsh(lse_std.data(), B, Nq, H),
                  standard);

  // Absorbed: q_latent = [W_UK^T q_nope ; q_pe] over the shared cache rows.
  std::vector<float> q_latent(B * Nq * H * (Dc + Dr)), o_latent(B * Nq * H * Dc),
      out_abs(B * Nq * H * Dv), lse_abs(B * Nq * H);
  attn::eigen::absorb_queries(q_nope.cview(), q_pe.cview(), w_uk,
                              attn::bshd(q_latent.data(), B, Nq, H, Dc + Dr));
  attn::latent_options latent;
  latent.scale = scale;
  latent.dc = Dc;
  latent.causal = s.causal;
  attn::latent_attention(attn::bshd<const float>(q_latent.data(), B, Nq, H, Dc + Dr),
                         cache.cview(), attn::bshd(o_latent.data(), B, Nq, H, Dc),
                         attn::bsh(lse_abs.data(), B, Nq, H), latent);
  attn::eigen::apply_value_up(attn::bshd<const float>(o_latent.data(), B, Nq, H, Dc), w_uv,
                              attn::bshd(out_abs.data(), B, Nq, H, Dv));

  equivalence e;
  double max_out = 0, max_diff = 0;
  for (std::size_t x = 0; x < out_std.size(); ++x) {
    max_out = std::max(max_out, std::fabs(double(out_std[x])));
    max_diff = std::max(max_diff, std::fabs(double(out_abs[x]) - double(out_std[x])));
    if (std::isnan(out_abs[x]) != std::isnan(out_std[x])) max_diff = INFINITY;
  }
  e.max_out_diff = max_out > 0 ? max_diff / max_out : max_diff;
  for (std::size_t x = 0; x < lse_std.size(); ++x) {
    if (std::isinf(lse_std[x]) || std::isinf(lse_abs[x])) {
      e.lse_infinities_agree &= lse_std[x] == lse_abs[x];
      continue;
    }
    const double diff = std::fabs(double(lse_abs[x]) - double(lse_std[x]));
    e.max_lse_diff = std::max(e.max_lse_diff, diff / (1 + std::fabs(double(lse_std[x]))));
    if (std::isnan(diff)) e.max_lse_diff = INFINITY;
  }
  return e;
}

void expect_equivalent(const mla_shape& s, std::uint64_t seed) {
  SCOPED_TRACE(describe(s));
  const equivalence e = absorbed_vs_standard(s, seed);
  EXPECT_LE(e.max_out_diff, kAbsorbedTolerance);
  EXPECT_LE(e.max_lse_diff, kLseTolerance);
  EXPECT_TRUE(e.lse_infinities_agree);
}

TEST(EigenInterop, AbsorbedEqualsStandardAttention) {
  std::uint64_t seed = 1;
  for (index_t nq : {1, 3})
    for (index_t nk : {1, 37, 200})
      for (bool causal : {false, true})
        expect_equivalent({2, nq, nk, 4, 64, 16, 8, 16, causal}, seed++);
}

TEST(EigenInterop, AbsorbedEqualsStandardAttentionDeepSeekV3) {
  // DeepSeek-V3: kv_lora_rank 512, qk_rope_head_dim 64, qk_nope_head_dim 128,
  // v_head_dim 128; 16 heads (one tensor-parallel shard of 128).
  expect_equivalent({1, 1, 300, 16, 512, 128, 64, 128, false}, 100);
  expect_equivalent({2, 4, 300, 16, 512, 128, 64, 128, true}, 101);
}

// --- absorb_queries and apply_value_up against their formulas.

std::string layout_name(const ref::layout4& mem) {
  std::string s = "memory order ";
  for (int d : mem.order) s += std::to_string(d);
  return s + (mem.pad[3] > 0 ? " padded" : "");
}

// q_latent[b, i, h, :Dc] = W_UK[h]^T q_nope[b, i, h], [Dc:] = q_rope, in fp64.
double absorb_error(const ref::tensor4& q_nope, const ref::tensor4& q_rope, const matrix& w_uk,
                    const ref::tensor4& q_latent) {
  const auto& n = q_nope.view;
  const index_t dn = n.extent[3], dc = w_uk.cols(), dr = q_rope.view.extent[3];
  double worst = 0;
  for (index_t b = 0; b < n.extent[0]; ++b)
    for (index_t i = 0; i < n.extent[1]; ++i)
      for (index_t h = 0; h < n.extent[2]; ++h) {
        for (index_t c = 0; c < dc; ++c) {
          double want = 0, size = 0;
          for (index_t d = 0; d < dn; ++d) {
            want += double(w_uk(h * dn + d, c)) * n(b, i, h, d);
            size += std::fabs(double(w_uk(h * dn + d, c)) * n(b, i, h, d));
          }
          worst = std::max(worst, std::fabs(q_latent.view(b, i, h, c) - want) / size);
        }
        for (index_t d = 0; d < dr; ++d)
          if (q_latent.view(b, i, h, dc + d) != q_rope.view(b, i, h, d)) worst = INFINITY;
      }
  return worst;
}

TEST(EigenInterop, AbsorbQueriesMatchesFormulaOnAnyLayout) {
  // bshd: one GEMM of B Nq rows per head; bhsd and padded: one per batch
  // (the batch stride does not continue the sequence stride); bsdh: channels
  // strided by H (Eigen packs them).
  const index_t B = 3, Nq = 5, H = 4, Dn = 16, Dr = 8, Dc = 32;
  ref::rng g(7);
  const matrix w_uk = random_matrix(g, H * Dn, Dc, 1);
  for (const ref::layout4& mem : {ref::bshd_memory, ref::bhsd_memory, ref::bsdh_memory,
                                  ref::padded_bshd, ref::padded_bhsd})
    for (index_t nq : {index_t{1}, Nq}) {
      SCOPED_TRACE("Nq=" + std::to_string(nq) + " " + layout_name(mem));
      const ref::tensor4 q_nope = ref::random<4>(g, {B, nq, H, Dn}, mem);
      const ref::tensor4 q_rope = ref::random<4>(g, {B, nq, H, Dr}, mem);
      ref::tensor4 q_latent = ref::filled<4>({B, nq, H, Dc + Dr}, mem, sentinel);
      attn::eigen::absorb_queries(q_nope.cview(), q_rope.cview(), w_uk, q_latent.view);
      // fp32 sums of Dnope = 16 products: within 16 ulps of the sum of |terms|.
      EXPECT_LE(absorb_error(q_nope, q_rope, w_uk, q_latent), 16 * FLT_EPSILON);
      EXPECT_TRUE(q_latent.padding_holds(sentinel)) << "wrote outside q_latent";
    }
}

// out[b, i, h] = W_UV[h] o_latent[b, i, h], in fp64.
double value_up_error(const ref::tensor4& o_latent, const matrix& w_uv, const ref::tensor4& out) {
  const auto& o = o_latent.view;
  const index_t dc = o.extent[3], dv = out.view.extent[3];
  double worst = 0;
  for (index_t b = 0; b < o.extent[0]; ++b)
    for (index_t i = 0; i < o.extent[1]; ++i)
      for (index_t h = 0; h < o.extent[2]; ++h)
        for (index_t d = 0; d < dv; ++d) {
          double want = 0, size = 0;
          for (index_t c = 0; c < dc; ++c) {
            want += double(w_uv(h * dv + d, c)) * o(b, i, h, c);
            size += std::fabs(double(w_uv(h * dv + d, c)) * o(b, i, h, c));
          }
          worst = std::max(worst, std::fabs(out.view(b, i, h, d) - want) / size);
        }
  return worst;
}

TEST(EigenInterop, ApplyValueUpMatchesFormulaOnAnyLayout) {
  const index_t B = 2, Nq = 3, H = 4, Dc = 32, Dv = 12;
  ref::rng g(8);
  const matrix w_uv = random_matrix(g, H * Dv, Dc, 1);
  for (const ref::layout4& mem : {ref::bshd_memory, ref::bhsd_memory, ref::bsdh_memory,
                                  ref::padded_bshd, ref::padded_bhsd})
    for (index_t nq : {index_t{1}, Nq}) {
      SCOPED_TRACE("Nq=" + std::to_string(nq) + " " + layout_name(mem));
      const ref::tensor4 o_latent = ref::random<4>(g, {B, nq, H, Dc}, mem);
      ref::tensor4 out = ref::filled<4>({B, nq, H, Dv}, mem, sentinel);
      attn::eigen::apply_value_up(o_latent.cview(), w_uv, out.view);
      EXPECT_LE(value_up_error(o_latent, w_uv, out), 32 * FLT_EPSILON);  // sums of Dc = 32 products
      EXPECT_TRUE(out.padding_holds(sentinel)) << "wrote outside out";
    }
}

TEST(EigenInterop, WeightsBindWithoutLayoutRequirements) {
  // A Map of a PyTorch weight's buffer, a column-major copy (Eigen::Ref makes
  // a row-major temporary) and a block of a larger matrix all give the same
  // result as the row-major matrix.
  const index_t H = 2, Dc = 16, Dv = 8;
  ref::rng g(9);
  const matrix w_uv = random_matrix(g, H * Dv, Dc, 1);
  const ref::tensor4 o = ref::random_bshd(g, 1, 3, H, Dc);
  std::vector<float> want(3 * H * Dv), got(want.size());
  attn::eigen::apply_value_up(o.cview(), w_uv, attn::bshd(want.data(), 1, 3, H, Dv));

  const std::vector<float> buffer(w_uv.data(), w_uv.data() + w_uv.size());
  attn::eigen::apply_value_up(o.cview(), Eigen::Map<const matrix>(buffer.data(), H * Dv, Dc),
                              attn::bshd(got.data(), 1, 3, H, Dv));
  EXPECT_EQ(got, want);
  const Eigen::MatrixXf column_major = w_uv;
  attn::eigen::apply_value_up(o.cview(), column_major, attn::bshd(got.data(), 1, 3, H, Dv));
  EXPECT_EQ(got, want);
  matrix larger = matrix::Zero(H * Dv + 3, Dc + 5);
  larger.block(2, 1, H * Dv, Dc) = w_uv;
  attn::eigen::apply_value_up(o.cview(), larger.block(2, 1, H * Dv, Dc),
                              attn::bshd(got.data(), 1, 3, H, Dv));
  EXPECT_EQ(got, want);
}

// --- split_kv_b_proj.

TEST(EigenInterop, SplitKvBProjCutsEachHeadsRows) {
  // DeepSeek: wkv_b.view(H, Dnope + Dv, Dc); W_UK[h] = [h, :Dnope],
  // W_UV[h] = [h, Dnope:].
  const index_t H = 3, Dn = 4, Dv = 5, Dc = 6;
  ref::rng g(10);
  const matrix kv_b_proj = random_matrix(g, H * (Dn + Dv), Dc, 1);
  const attn::eigen::mla_weights w = attn::eigen::split_kv_b_proj(kv_b_proj, H, Dn, Dv);
  ASSERT_EQ(w.w_uk.rows(), H * Dn);
  ASSERT_EQ(w.w_uk.cols(), Dc);
  ASSERT_EQ(w.w_uv.rows(), H * Dv);
  ASSERT_EQ(w.w_uv.cols(), Dc);
  for (index_t h = 0; h < H; ++h)
    for (index_t c = 0; c < Dc; ++c) {
      for (index_t d = 0; d < Dn; ++d)
        EXPECT_EQ(w.w_uk(h * Dn + d, c), kv_b_proj(h * (Dn + Dv) + d, c));
      for (index_t d = 0; d < Dv; ++d)
        EXPECT_EQ(w.w_uv(h * Dv + d, c), kv_b_proj(h * (Dn + Dv) + Dn + d, c));
    }
}

// --- apply_rope.

TEST(EigenInterop, ApplyRopeMatchesFp64ComplexPairs) {
  // x (B, N, H, D) on a padded layout; channels [4, 20) rotated from
  // position 1000: pair i of a row is the complex number x[2i] + i x[2i+1],
  // multiplied by exp(i p theta^(-2i/16)) (DeepSeek's apply_rotary_emb).
  const index_t B = 2, N = 5, H = 3, D = 24, first = 4, dims = 16, p0 = 1000;
  const double theta = 50000;
  ref::rng g(11);
  ref::tensor4 x = ref::random<4>(g, {B, N, H, D}, ref::padded_bhsd);
  const std::vector<float> saved = x.storage;
  auto before = [&](index_t b, index_t n, index_t h, index_t d) {
    return saved[static_cast<std::size_t>(&x.view(b, n, h, d) - x.view.data)];
  };
  attn::eigen::apply_rope(x.view, first, dims, p0, static_cast<float>(theta));
  for (index_t b = 0; b < B; ++b)
    for (index_t n = 0; n < N; ++n)
      for (index_t h = 0; h < H; ++h) {
        for (index_t d = 0; d < D; ++d)
          if (d < first || d >= first + dims) {
            EXPECT_EQ(x.view(b, n, h, d), before(b, n, h, d)) << "channel " << d;
          }
        for (index_t i = 0; i < dims / 2; ++i) {
          const double angle = double(p0 + n) * std::pow(theta, -2.0 * double(i) / double(dims));
          const std::complex<double> want =
              std::complex<double>(before(b, n, h, first + 2 * i),
                                   before(b, n, h, first + 2 * i + 1)) *
              std::polar(1.0, angle);
          // Rounded once from fp64: within one fp32 ulp.
          EXPECT_NEAR(x.view(b, n, h, first + 2 * i), want.real(),
                      FLT_EPSILON * std::fabs(want.real()) + 1e-30);
          EXPECT_NEAR(x.view(b, n, h, first + 2 * i + 1), want.imag(),
                      FLT_EPSILON * std::fabs(want.imag()) + 1e-30);
        }
      }
  EXPECT_TRUE(x.padding_holds(std::numeric_limits<float>::quiet_NaN()));
}

TEST(EigenInterop, ApplyRopeRotatesInterleavedPairs) {
  // (1, 0, 1, 0) at position 1 with dims 4, theta 10000: pair 0 turns by
  // 1 rad, pair 1 by 10000^(-1/2) = 0.01 rad; channel 4 is not rotated.
  std::vector<float> x = {1, 0, 1, 0, 7};
  attn::eigen::apply_rope(attn::bshd(x.data(), 1, 1, 1, 5), 0, 4, 1);
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-7);
  EXPECT_NEAR(x[1], std::sin(1.0), 1e-7);
  EXPECT_NEAR(x[2], std::cos(0.01), 1e-7);
  EXPECT_NEAR(x[3], std::sin(0.01), 1e-7);
  EXPECT_EQ(x[4], 7.0f);
  // Position 0 is the identity; token n of a call is at first_position + n.
  std::vector<float> y = {0.5f, -0.25f, 0.5f, -0.25f};
  attn::eigen::apply_rope(attn::bshd(y.data(), 1, 2, 1, 2), 0, 2, 0);
  EXPECT_EQ(y[0], 0.5f);
  EXPECT_EQ(y[1], -0.25f);
  std::vector<float> z = {0.5f, -0.25f};
  attn::eigen::apply_rope(attn::bshd(z.data(), 1, 1, 1, 2), 0, 2, 1);
  EXPECT_EQ(y[2], z[0]);
  EXPECT_EQ(y[3], z[1]);
}

// --- argument errors.

bool all_equal(const std::vector<float>& v, float value) {
  return std::all_of(v.begin(), v.end(), [&](float x) { return x == value; });
}

// A valid absorb/value-up problem: q_nope (2, 3, 4, 16), q_rope (2, 3, 4, 8),
// w_uk (64, 32), q_latent (2, 3, 4, 40); o_latent (2, 3, 4, 32), w_uv (48, 32),
// out (2, 3, 4, 12). Each test breaks one thing.
struct mla_problem {
  ref::rng g{12};
  ref::tensor4 q_nope = ref::random_bshd(g, 2, 3, 4, 16);
  ref::tensor4 q_rope = ref::random_bshd(g, 2, 3, 4, 8);
  matrix w_uk = random_matrix(g, 64, 32, 1);
  std::vector<float> q_latent = std::vector<float>(2 * 3 * 4 * 40, sentinel);
  ref::tensor4 o_latent = ref::random_bshd(g, 2, 3, 4, 32);
  matrix w_uv = random_matrix(g, 48, 32, 1);
  std::vector<float> out = std::vector<float>(2 * 3 * 4 * 12, sentinel);

  attn::view4<const float> nope = q_nope.cview(), rope = q_rope.cview(), o = o_latent.cview();
  attn::view4<float> latent = attn::bshd(q_latent.data(), 2, 3, 4, 40);
  attn::view4<float> up = attn::bshd(out.data(), 2, 3, 4, 12);

  void absorb() const { attn::eigen::absorb_queries(nope, rope, w_uk, latent); }
  void value_up() const { attn::eigen::apply_value_up(o, w_uv, up); }
};

void expect_absorb_rejected(const mla_problem& p, std::initializer_list<std::string> parts) {
  EXPECT_TRUE(ref::throws_naming([&] { p.absorb(); }, parts));
  EXPECT_TRUE(all_equal(p.q_latent, sentinel)) << "q_latent written before the check failed";
}

void expect_value_up_rejected(const mla_problem& p, std::initializer_list<std::string> parts) {
  EXPECT_TRUE(ref::throws_naming([&] { p.value_up(); }, parts));
  EXPECT_TRUE(all_equal(p.out, sentinel)) << "out written before the check failed";
}

TEST(EigenInteropErrors, ValidProblemRuns) {
  mla_problem p;
  EXPECT_NO_THROW(p.absorb());
  EXPECT_NO_THROW(p.value_up());
  EXPECT_FALSE(all_equal(p.q_latent, sentinel));
  EXPECT_FALSE(all_equal(p.out, sentinel));
}

TEST(EigenInteropErrors, AbsorbQueries) {
  {
    mla_problem p;
    p.nope.data = nullptr;
    expect_absorb_rejected(p, {"q_nope:", "non-null"});
  }
  {
    mla_problem p;
    p.nope.extent[2] = 0;
    expect_absorb_rejected(p, {"q_nope:", "H, Dnope >= 1", "(2, 3, 0, 16)"});
  }
  {
    mla_problem p;
    p.rope.extent[0] = 1;
    expect_absorb_rejected(p, {"q_rope:", "(B=2, Nq=3, H=4, Dr)", "(1, 3, 4, 8)"});
  }
  {
    mla_problem p;
    p.rope.extent[2] = 3;
    expect_absorb_rejected(p, {"q_rope:", "H=4", "(2, 3, 3, 8)"});
  }
  {
    mla_problem p;
    p.w_uk = matrix::Zero(60, 32);
    expect_absorb_rejected(p, {"w_uk:", "H * Dnope = 64", "(60, 32)"});
  }
  {
    mla_problem p;
    p.latent.extent[3] = 39;
    expect_absorb_rejected(p, {"q_latent:", "Dc + Dr=40", "(2, 3, 4, 39)"});
  }
  {
    mla_problem p;
    p.latent.stride[2] = 0;
    expect_absorb_rejected(p, {"q_latent:", "own address"});
  }
  {
    mla_problem p;  // q_latent over q_nope's memory
    p.latent.data = p.q_nope.data();
    p.latent.extent[3] = 16 + 8;  // a (2, 3, 4, 24) q_latent with Dc = 16
    p.w_uk = matrix::Zero(64, 16);
    expect_absorb_rejected(p, {"q_latent:", "memory disjoint from q_nope"});
  }
}

TEST(EigenInteropErrors, ApplyValueUp) {
  {
    mla_problem p;
    p.o.data = nullptr;
    expect_value_up_rejected(p, {"o_latent:", "non-null"});
  }
  {
    mla_problem p;
    p.w_uv = matrix::Zero(48, 31);
    expect_value_up_rejected(p, {"w_uv:", "Dc = 32", "H = 4", "(48, 31)"});
  }
  {
    mla_problem p;
    p.w_uv = matrix::Zero(50, 32);
    expect_value_up_rejected(p, {"w_uv:", "(H * Dv, Dc = 32)", "(50, 32)"});
  }
  {
    mla_problem p;
    p.up.extent[3] = 11;
    expect_value_up_rejected(p, {"out:", "(B=2, Nq=3, H=4, Dv=12)", "(2, 3, 4, 11)"});
  }
  {
    mla_problem p;
    p.up.extent[1] = 2;
    expect_value_up_rejected(p, {"out:", "Nq=3", "(2, 2, 4, 12)"});
  }
  {
    mla_problem p;  // out over o_latent's memory
    p.up.data = p.o_latent.data();
    expect_value_up_rejected(p, {"out:", "memory disjoint from o_latent"});
  }
}

TEST(EigenInteropErrors, ApplyRope) {
  std::vector<float> data(2 * 3 * 4 * 24, 0.5f);
  const attn::view4<float> x = attn::bshd(data.data(), 2, 3, 4, 24);
  auto rejected = [&](attn::view4<float> v, index_t first, index_t dims, index_t pos, float theta,
                      std::initializer_list<std::string> parts) {
    EXPECT_TRUE(ref::throws_naming([&] { attn::eigen::apply_rope(v, first, dims, pos, theta); }, parts));
    EXPECT_TRUE(all_equal(data, 0.5f)) << "x written before the check failed";
  };
  rejected({nullptr, x.extent, x.stride}, 0, 8, 0, 1e4f, {"x:", "non-null"});
  rejected({x.data, x.extent, {x.stride[0], 0, x.stride[2], 1}}, 0, 8, 0, 1e4f,
           {"x:", "own address"});
  rejected(x, -1, 8, 0, 1e4f, {"first_channel:", "[0, D = 24]", "-1"});
  rejected(x, 25, 2, 0, 1e4f, {"first_channel:", "got 25"});
  rejected(x, 0, 7, 0, 1e4f, {"dims:", "even", "got 7"});
  rejected(x, 0, 0, 0, 1e4f, {"dims:", ">= 2", "got 0"});
  rejected(x, 20, 8, 0, 1e4f, {"dims:", "D - first_channel = 4", "got 8"});
  rejected(x, 0, 8, -1, 1e4f, {"first_position:", ">= 0", "got -1"});
  rejected(x, 0, 8, 0, 0.0f, {"theta:", "> 0", "got 0"});
  rejected(x, 0, 8, 0, std::numeric_limits<float>::quiet_NaN(), {"theta:", "finite"});
}

TEST(EigenInteropErrors, SplitKvBProj) {
  const matrix w = matrix::Zero(3 * (4 + 5), 6);
  auto split = [&](index_t heads, index_t d_nope, index_t d_v) {
    return [=, &w] { attn::eigen::split_kv_b_proj(w, heads, d_nope, d_v); };
  };
  EXPECT_TRUE(ref::throws_naming(split(0, 4, 5), {"heads:", "got 0"}));
  EXPECT_TRUE(ref::throws_naming(split(3, 0, 5), {"d_nope:", "got 0"}));
  EXPECT_TRUE(ref::throws_naming(split(3, 4, -1), {"d_v:", "got -1"}));
  EXPECT_TRUE(ref::throws_naming(split(3, 4, 6), {"kv_b_proj:", "H * (Dnope + Dv) = 30", "(27, 6)"}));
  EXPECT_TRUE(ref::throws_naming(split(4, 4, 5), {"kv_b_proj:", "= 36", "(27, 6)"}));
  EXPECT_NO_THROW(split(3, 4, 5)());
}

}  // namespace eigen_test
