// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <span>
#include <vector>

#include <Eigen/Core>

#include "attn/core/tensor.hpp"
#include "attn/variant/dense.hpp"

// The baseline every benchmark is compared with: attention as three Eigen
// operations per head (S = scale Q K^T, row softmax, O = P V), materialising
// the Nq x Nk score matrix, the way a user would write it without a fused
// kernel, with the options' modifiers and masks applied to the full matrix.
// Contiguous BSHD inputs only.
namespace attn::bench {

using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using strided_map = Eigen::Map<const row_matrix, 0, Eigen::OuterStride<>>;
using strided_out = Eigen::Map<row_matrix, 0, Eigen::OuterStride<>>;

inline void naive_eigen_attention(view4<const float> q, view4<const float> k,
                                  view4<const float> v, view4<float> out,
                                  const softmax_options& opt, row_matrix& scores) {
  const index_t batch = q.extent[0], nq = q.extent[1], hq = q.extent[2], dk = q.extent[3];
  const index_t nk = k.extent[1], hkv = k.extent[2], dv = v.extent[3];
  const float scale = 1.0f / std::sqrt(static_cast<float>(dk));
  const index_t off = nk - nq;
  const std::vector<float> slopes = opt.alibi_slopes_for(hq);
  scores.resize(nq, nk);
  // Masks by the library's own predicates, pair by pair over the full matrix.
  auto remove_masked = [&](const auto& mask, index_t b, index_t h) {
    for (index_t i = 0; i < nq; ++i)
      for (index_t j = 0; j < nk; ++j)
        if (!mask.allowed(b, h, i, j)) scores(i, j) = -std::numeric_limits<float>::infinity();
  };
  for (index_t b = 0; b < batch; ++b)
    for (index_t h = 0; h < hq; ++h) {
      const index_t g = h / (hq / hkv);
      const strided_map qh(q.row(b, 0, h), nq, dk, Eigen::OuterStride<>(q.stride[1]));
      const strided_map kh(k.row(b, 0, g), nk, dk, Eigen::OuterStride<>(k.stride[1]));
      const strided_map vh(v.row(b, 0, g), nk, dv, Eigen::OuterStride<>(v.stride[1]));
      strided_out oh(out.row(b, 0, h), nq, dv, Eigen::OuterStride<>(out.stride[1]));
      scores.noalias() = scale * qh * kh.transpose();
      if (opt.softcap) scores = *opt.softcap * (scores.array() / *opt.softcap).tanh().matrix();
      if (!slopes.empty())
        for (index_t i = 0; i < nq; ++i)
          for (index_t j = 0; j < nk; ++j)
            scores(i, j) -= slopes[static_cast<std::size_t>(h)] * static_cast<float>(std::abs(i + off - j));
      if (!opt.bias.empty())
        for (index_t i = 0; i < nq; ++i)
          for (index_t j = 0; j < nk; ++j)
            scores(i, j) += opt.bias(opt.bias.extent[0] == 1 ? 0 : b, opt.bias.extent[1] == 1 ? 0 : h, i, j);
      if (!opt.document_ids.empty()) {
        const std::span<const std::int32_t> ids = opt.document_ids;
        remove_masked(mask_from([&, window = window_mask_of(opt, off)](index_t bb, index_t hh, index_t i,
                                                                      index_t j) {
                        return ids[i + off] == ids[j] && window.allowed(bb, hh, i, j);
                      }),
                      b, h);
      }
      else if (opt.prefix_lm)
        remove_masked(prefix_lm_mask{off, *opt.prefix_lm}, b, h);
      else if (opt.causal || opt.window)
        remove_masked(window_mask_of(opt, off), b, h);
      const Eigen::VectorXf row_max = scores.rowwise().maxCoeff();
      scores = (scores.colwise() - row_max).array().exp().matrix();
      const Eigen::VectorXf row_sum = scores.rowwise().sum();
      scores = row_sum.cwiseInverse().asDiagonal() * scores;
      oh.noalias() = scores * vh;
    }
}

}  // namespace attn::bench
