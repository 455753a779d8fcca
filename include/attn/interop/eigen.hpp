// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

// Eigen interop for DeepSeek multi-head latent attention (MLA).
//
// This header, alone in attn, includes Eigen: attn::attn does not link Eigen,
// so a user of this header needs Eigen 3.4 or newer on the include path
// (find_package(Eigen3 3.4) and Eigen3::Eigen in CMake). The rest of attn
// does not need it.
//
// MLA caches per token one row c = [latent (Dc) ; rope key (Dr)], shared by
// all heads, and runs attn::latent_attention (variant/latent.hpp) on it. The
// helpers here are the steps around that call, in the order of a decode step:
//
//   apply_rope       rotary embedding of the rope halves (query and cache row)
//   absorb_queries   q_latent = [W_UK[h]^T q_nope ; q_rope]      (Dc + Dr)
//   latent_attention o_latent = softmax(scale q_latent . c) c[:Dc]   (Dc)
//   apply_value_up   out = W_UV[h] o_latent                      (Dv)
//
// which equals standard multi-head attention with keys [W_UK[h] c[:Dc] ;
// c[Dc:]] and values W_UV[h] c[:Dc] (tests/interop/eigen_test.cpp), without
// ever forming those per-head keys and values. Weights are row-major fp32
// matrices, PyTorch's nn.Linear layout: split_kv_b_proj cuts DeepSeek's
// kv_b_proj weight into W_UK and W_UV.

#include <array>
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "attn/core/error.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"

static_assert(EIGEN_VERSION_AT_LEAST(3, 4, 0),
              "attn/interop/eigen.hpp needs Eigen 3.4 or newer (GEMM into strided outputs); "
              "put Eigen 3.4 on the include path");

namespace attn::eigen {

// A row-major fp32 matrix: the layout of a PyTorch weight (out_features,
// in_features).
using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A weight argument: a row-major matrix, a Map of row-major memory (e.g. a
// PyTorch weight's buffer) or a block of one, bound without a copy. Any other
// dense float expression (a column-major matrix, say) is copied once per call.
using weight_ref = Eigen::Ref<const matrix>;

namespace detail {

using attn::detail::dims;
using attn::detail::require;
using attn::detail::require_disjoint;
using attn::detail::require_distinct;
using attn::detail::require_view;

inline std::string shape_of(const weight_ref& w) {
  return "(" + std::to_string(w.rows()) + ", " + std::to_string(w.cols()) + ")";
}

// True when the (b, n) rows of a head are evenly spaced across batches, so
// that the B * Nq rows of one head form one strided matrix.
template <class T>
bool batch_follows_sequence(const view4<T>& v) {
  return v.extent[0] <= 1 || v.extent[1] <= 1 || v.stride[0] == v.extent[1] * v.stride[1];
}

template <class T>
bool unit_channel_stride(const view4<T>& v) {
  return v.extent[3] <= 1 || v.stride[3] == 1;
}

// The (b, n) rows of one head, cut into blocks of evenly strided rows: one
// block of B * Nq rows when every view allows it, else one block of Nq rows
// per batch. Each block of each head is one GEMM.
struct head_rows {
  bool merged;
  index_t blocks, rows;

  template <class T, class... U>
  explicit head_rows(const view4<T>& first, const view4<U>&... rest)
      : merged(batch_follows_sequence(first) && (batch_follows_sequence(rest) && ...)),
        blocks(merged ? 1 : first.extent[0]),
        rows(merged ? first.extent[0] * first.extent[1] : first.extent[1]) {}

  // Rows [0, rows) of block k at channels [c0, c0 + cols) of head h of v, as
  // a (rows, cols) row-major map. Stride is Eigen::OuterStride<> when the
  // channels are contiguous (GEMM reads them in place), else
  // Eigen::Stride<Dynamic, Dynamic> (Eigen packs them first).
  template <class Stride, class T>
  auto map(const view4<T>& v, index_t k, index_t h, index_t c0, index_t cols) const {
    using mapped = std::conditional_t<std::is_const_v<T>, const matrix, matrix>;
    const index_t row_stride = !merged ? v.stride[1] : v.extent[1] > 1 ? v.stride[1] : v.stride[0];
    T* first = v.data + k * v.stride[0] + h * v.stride[2] + c0 * v.stride[3];
    if constexpr (std::is_same_v<Stride, Eigen::OuterStride<>>)
      return Eigen::Map<mapped, Eigen::Unaligned, Stride>(first, rows, cols, Stride(row_stride));
    else
      return Eigen::Map<mapped, Eigen::Unaligned, Stride>(first, rows, cols,
                                                          Stride(row_stride, v.stride[3]));
  }
};

// f(std::type_identity<Stride>{}) with the map stride type for these views.
template <class F, class... T>
void with_channel_stride(F&& f, const view4<T>&... v) {
  if ((unit_channel_stride(v) && ...))
    f(std::type_identity<Eigen::OuterStride<>>{});
  else
    f(std::type_identity<Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>{});
}

}  // namespace detail

// DeepSeek's kv_b_proj weight cut into its two per-head up-projections.
struct mla_weights {
  matrix w_uk;  // (H * Dnope, Dc): head h's keys are rows [h Dnope, (h + 1) Dnope) times c[:Dc]
  matrix w_uv;  // (H * Dv, Dc):    head h's values are rows [h Dv, (h + 1) Dv) times c[:Dc]
};

// kv_b_proj (H * (Dnope + Dv), Dc), DeepSeek's nn.Linear(kv_lora_rank,
// n_heads * (qk_nope_head_dim + v_head_dim)) weight: per head, Dnope rows of
// W_UK then Dv rows of W_UV -> {W_UK (H * Dnope, Dc), W_UV (H * Dv, Dc)}.
// A copy, made once when the model is loaded.
inline mla_weights split_kv_b_proj(const weight_ref& kv_b_proj, index_t heads, index_t d_nope,
                                   index_t d_v) {
  detail::require(heads >= 1, "heads", "at least 1", heads);
  detail::require(d_nope >= 1, "d_nope", "at least 1", d_nope);
  detail::require(d_v >= 1, "d_v", "at least 1", d_v);
  const index_t per_head = d_nope + d_v;
  detail::require(
      kv_b_proj.rows() == heads * per_head && kv_b_proj.cols() >= 1, "kv_b_proj",
      "shape (H * (Dnope + Dv) = " + std::to_string(heads * per_head) + ", Dc) with Dc >= 1",
      detail::shape_of(kv_b_proj));
  const index_t dc = kv_b_proj.cols();
  mla_weights w{matrix(heads * d_nope, dc), matrix(heads * d_v, dc)};
  for (index_t h = 0; h < heads; ++h) {
    w.w_uk.middleRows(h * d_nope, d_nope) = kv_b_proj.middleRows(h * per_head, d_nope);
    w.w_uv.middleRows(h * d_v, d_v) = kv_b_proj.middleRows(h * per_head + d_nope, d_v);
  }
  return w;
}

// Absorbs W_UK into the queries:
//   q_nope (B, Nq, H, Dnope), q_rope (B, Nq, H, Dr), w_uk (H * Dnope, Dc)
//   -> q_latent (B, Nq, H, Dc + Dr):
//   q_latent[..., h, :Dc] = W_UK[h]^T q_nope[..., h, :]   (so q_latent . c = q_nope . W_UK[h] c)
//   q_latent[..., h, Dc:] = q_rope[..., h, :]             (already rotated: apply_rope)
// with W_UK[h] = rows [h Dnope, (h + 1) Dnope) of w_uk. One GEMM per head
// over all B * Nq rows of that head (per batch when the views' batch stride
// does not continue their sequence stride). Any strides; q_latent must not
// overlap the inputs.
inline void absorb_queries(view4<const float> q_nope, view4<const float> q_rope,
                           const weight_ref& w_uk, view4<float> q_latent) {
  const index_t b = q_nope.extent[0], nq = q_nope.extent[1], h = q_nope.extent[2];
  const index_t dn = q_nope.extent[3];
  detail::require_view(q_nope, "q_nope", "(B, Nq, H, Dnope) with H, Dnope >= 1", h >= 1 && dn >= 1);
  detail::require_view(q_rope, "q_rope", detail::dims({{"B", b}, {"Nq", nq}, {"H", h}, {"Dr", -1}}),
                       q_rope.extent[0] == b && q_rope.extent[1] == nq && q_rope.extent[2] == h);
  detail::require(w_uk.rows() == h * dn && w_uk.cols() >= 1, "w_uk",
                  "shape (H * Dnope = " + std::to_string(h * dn) + ", Dc) with Dc >= 1",
                  detail::shape_of(w_uk));
  const index_t dc = w_uk.cols(), dr = q_rope.extent[3];
  detail::require_view(q_latent, "q_latent",
                       detail::dims({{"B", b}, {"Nq", nq}, {"H", h}, {"Dc + Dr", dc + dr}}),
                       q_latent.extent == std::array<index_t, 4>{b, nq, h, dc + dr});
  detail::require_distinct(q_latent, "q_latent");
  detail::require_disjoint(q_latent, "q_latent", q_nope, "q_nope");
  detail::require_disjoint(q_latent, "q_latent", q_rope, "q_rope");
  if (b * nq == 0) return;

  const detail::head_rows rows(q_nope, q_rope, view4<const float>(q_latent));
  detail::with_channel_stride(
      [&]<class Stride>(std::type_identity<Stride>) {
        for (index_t head = 0; head < h; ++head)
          for (index_t k = 0; k < rows.blocks; ++k) {
            auto latent = rows.map<Stride>(q_latent, k, head, 0, dc);         // (rows, Dc)
            latent.noalias() = rows.map<Stride>(q_nope, k, head, 0, dn)       // (rows, Dnope)
                               * w_uk.middleRows(head * dn, dn);              // (Dnope, Dc)
            if (dr > 0)
              rows.map<Stride>(q_latent, k, head, dc, dr) =                   // (rows, Dr)
                  rows.map<Stride>(q_rope, k, head, 0, dr);
          }
      },
      q_nope, q_rope, view4<const float>(q_latent));
}

// Applies W_UV to latent attention's output:
//   o_latent (B, Nq, H, Dc), w_uv (H * Dv, Dc) -> out (B, Nq, H, Dv),
//   out[..., h, :] = W_UV[h] o_latent[..., h, :]
// with W_UV[h] = rows [h Dv, (h + 1) Dv) of w_uv. One GEMM per head over all
// B * Nq rows, like absorb_queries. Any strides; out must not overlap o_latent.
inline void apply_value_up(view4<const float> o_latent, const weight_ref& w_uv, view4<float> out) {
  const index_t b = o_latent.extent[0], nq = o_latent.extent[1], h = o_latent.extent[2];
  const index_t dc = o_latent.extent[3];
  detail::require_view(o_latent, "o_latent", "(B, Nq, H, Dc) with H, Dc >= 1", h >= 1 && dc >= 1);
  detail::require(
      w_uv.cols() == dc && w_uv.rows() >= h && w_uv.rows() % h == 0, "w_uv",
      "shape (H * Dv, Dc = " + std::to_string(dc) + ") with H = " + std::to_string(h) + ", Dv >= 1",
      detail::shape_of(w_uv));
  const index_t dv = w_uv.rows() / h;
  detail::require_view(out, "out", detail::dims({{"B", b}, {"Nq", nq}, {"H", h}, {"Dv", dv}}),
                       out.extent == std::array<index_t, 4>{b, nq, h, dv});
  detail::require_distinct(out, "out");
  detail::require_disjoint(out, "out", o_latent, "o_latent");
  if (b * nq == 0) return;

  const detail::head_rows rows(o_latent, view4<const float>(out));
  detail::with_channel_stride(
      [&]<class Stride>(std::type_identity<Stride>) {
        for (index_t head = 0; head < h; ++head)
          for (index_t k = 0; k < rows.blocks; ++k)
            rows.map<Stride>(out, k, head, 0, dv).noalias() =                 // (rows, Dv)
                rows.map<Stride>(o_latent, k, head, 0, dc)                    // (rows, Dc)
                * w_uv.middleRows(head * dv, dv).transpose();                 // (Dc, Dv)
      },
      o_latent, view4<const float>(out));
}

// Rotary position embedding, in place, on channels [first_channel,
// first_channel + dims) of every row of x (B, N, H, D); token n is at
// position first_position + n in every sequence (for sequences at different
// positions, call it on each sequence's (1, N, H, D) slice).
//
// DeepSeek's convention (its inference code's apply_rotary_emb, complex
// pairs): channel pairs (x[2i], x[2i+1]) of the rotated range are
// interleaved, not split in halves as in GPT-NeoX / Llama's rotate_half, and
// pair i at position p turns by the angle p * theta^(-2i / dims):
//   x[2i]   <- x[2i] cos a - x[2i+1] sin a
//   x[2i+1] <- x[2i] sin a + x[2i+1] cos a.
// Angles and rotations are taken in fp64 (DeepSeek tabulates the angles in
// fp32). Plain RoPE frequencies: the YaRN correction DeepSeek-V3 makes to
// them when serving past its 4096-token training length is not applied.
//
// It makes the rope half of both sides: a query's q_pe (every head), and the
// cache row's k_pe, computed once per token and shared by all heads, e.g.
// apply_rope(cache, Dc, Dr, first_position) on cache (B, N, 1, Dc + Dr).
inline void apply_rope(view4<float> x, index_t first_channel, index_t dims, index_t first_position,
                       float theta = 10000.0f) {
  const index_t d = x.extent[3];
  detail::require_view(x, "x", "(B, N, H, D)", true);
  detail::require_distinct(x, "x");
  detail::require(first_channel >= 0 && first_channel <= d, "first_channel",
                  "a channel in [0, D = " + std::to_string(d) + "]", first_channel);
  detail::require(dims >= 2 && dims % 2 == 0 && dims <= d - first_channel, "dims",
                  "an even count >= 2 of channels within D - first_channel = " +
                      std::to_string(d - first_channel),
                  dims);
  detail::require(first_position >= 0, "first_position", "a position >= 0", first_position);
  detail::require(std::isfinite(theta) && theta > 0, "theta", "a finite base > 0", theta);

  // Per position n: the cosine and sine of each pair's angle, then every
  // (b, h) row at n turned by them.
  const auto pairs = static_cast<std::size_t>(dims / 2);
  const index_t step = x.stride[3];
  std::vector<double> inv_freq(pairs), cos_a(pairs), sin_a(pairs);
  for (std::size_t i = 0; i < pairs; ++i)
    inv_freq[i] = std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / dims);
  for (index_t n = 0; n < x.extent[1]; ++n) {
    const auto position = static_cast<double>(first_position + n);
    for (std::size_t i = 0; i < pairs; ++i) {
      cos_a[i] = std::cos(position * inv_freq[i]);
      sin_a[i] = std::sin(position * inv_freq[i]);
    }
    for (index_t b = 0; b < x.extent[0]; ++b)
      for (index_t h = 0; h < x.extent[2]; ++h) {
        // x[2i] at pair[0], x[2i+1] at pair[step].
        float* pair = x.row(b, n, h) + first_channel * step;
        for (std::size_t i = 0; i < pairs; ++i, pair += 2 * step) {
          const double re = pair[0], im = pair[step];
          pair[0] = static_cast<float>(re * cos_a[i] - im * sin_a[i]);
          pair[step] = static_cast<float>(re * sin_a[i] + im * cos_a[i]);
        }
      }
  }
}

}  // namespace attn::eigen
