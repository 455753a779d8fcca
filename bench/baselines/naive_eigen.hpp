// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "attn/core/tensor.hpp"
#include "attn/variant/dense.hpp"

// The baseline every benchmark is compared with: attention as three Eigen
// operations per head (S = scale Q K^T, row softmax, O = P V), materialising
// the Nq x Nk score matrix, the way a user would write it without a fused
// kernel. Contiguous BSHD inputs only.
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
  const window_mask mask = window_mask_of(opt, off);
  scores.resize(nq, nk);
  for (index_t b = 0; b < batch; ++b)
    for (index_t h = 0; h < hq; ++h) {
      const index_t g = h / (hq / hkv);
      const strided_map qh(q.row(b, 0, h), nq, dk, Eigen::OuterStride<>(q.stride[1]));
      const strided_map kh(k.row(b, 0, g), nk, dk, Eigen::OuterStride<>(k.stride[1]));
      const strided_map vh(v.row(b, 0, g), nk, dv, Eigen::OuterStride<>(v.stride[1]));
      strided_out oh(out.row(b, 0, h), nq, dv, Eigen::OuterStride<>(out.stride[1]));
      scores.noalias() = scale * qh * kh.transpose();
      if (opt.causal || opt.window)
        for (index_t i = 0; i < nq; ++i)
          for (index_t j = 0; j < nk; ++j)
            if (!mask.allowed(b, h, i, j)) scores(i, j) = -std::numeric_limits<float>::infinity();
      const Eigen::VectorXf row_max = scores.rowwise().maxCoeff();
      scores = (scores.colwise() - row_max).array().exp().matrix();
      const Eigen::VectorXf row_sum = scores.rowwise().sum();
      scores = row_sum.cwiseInverse().asDiagonal() * scores;
      oh.noalias() = scores * vh;
    }
}

}  // namespace attn::bench
