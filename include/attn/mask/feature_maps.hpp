// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "attn/backend/scalar.hpp"
#include "attn/core/error.hpp"
#include "attn/core/tensor.hpp"

// Feature maps phi of linear attention (DESIGN §2): scores are
// phi(q) . phi(k). A map turns one row of Dk floats into features(Dk) floats;
// the linear kernels apply it while packing a tile, once per query and once
// per key and query head, never as a pass over the whole tensor.
namespace attn {

// A feature map: `features(dk)` output floats per row of dk inputs, and
// `apply<B>(x, dk, y)` writing them, vectorised with the backend B where the
// map can be (x and y are contiguous and do not overlap).
template <class F>
concept feature_map = requires(const F& f, index_t dk, const float* x, float* y) {
  { f.features(dk) } -> std::convertible_to<index_t>;
  f.template apply<backend::scalar>(x, dk, y);
};

namespace feature {

namespace detail {

// y[d] = vector_op(x[d]) over whole vectors of B, scalar_op on the tail.
template <class B, class VectorOp, class ScalarOp>
void map_elements(const float* x, index_t dk, float* y, VectorOp vector_op, ScalarOp scalar_op) {
  constexpr index_t W = static_cast<index_t>(B::width);
  index_t d = 0;
  for (; W > 1 && d + W <= dk; d += W) B::store(y + d, vector_op(B::load(x + d)));
  for (; d < dk; ++d) y[d] = scalar_op(x[d]);
}

inline constexpr float log2e = std::numbers::log2e_v<float>;

}  // namespace detail

// phi(x) = x. Scores are plain dot products; with normalisation the
// denominator can be near zero or negative (see the README's error note).
struct identity {
  index_t features(index_t dk) const { return dk; }
  float operator()(float x) const { return x; }
  template <class B>
  void apply(const float* x, index_t dk, float* y) const {
    for (index_t d = 0; d < dk; ++d) y[d] = x[d];
  }
};

// phi(x) = elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise (Katharopoulos et
// al.): positive features. Vector form max(0, x) + exp(-max(0, -x)), which
// keeps NaN (maxps returns its second operand when one is NaN) and +-inf.
struct elu_plus_one {
  index_t features(index_t dk) const { return dk; }
  float operator()(float x) const { return x > 0.0f ? x + 1.0f : std::exp(x); }
  template <class B>
  void apply(const float* x, index_t dk, float* y) const {
    const auto zero = B::zero();
    const auto log2e = B::broadcast(detail::log2e);
    detail::map_elements<B>(
        x, dk, y,
        [&](auto v) {
          const auto negative_part = B::max(zero, B::sub(zero, v));  // -min(x, 0)
          return B::add(B::max(zero, v), B::exp2(B::mul(B::sub(zero, negative_part), log2e)));
        },
        *this);
  }
};

// phi(x) = max(x, 0); NaN stays NaN.
struct relu {
  index_t features(index_t dk) const { return dk; }
  float operator()(float x) const { return x > 0.0f || x != x ? x : 0.0f; }
  template <class B>
  void apply(const float* x, index_t dk, float* y) const {
    const auto zero = B::zero();
    detail::map_elements<B>(x, dk, y, [&](auto v) { return B::max(zero, v); }, *this);
  }
};

// Any elementwise callable float -> float (run scalar, element by element).
template <class F>
  requires std::is_invocable_r_v<float, const F&, float>
struct elementwise {
  F f;
  index_t features(index_t dk) const { return dk; }
  template <class B>
  void apply(const float* x, index_t dk, float* y) const {
    for (index_t d = 0; d < dk; ++d) y[d] = f(x[d]);
  }
};
template <class F>
elementwise(F) -> elementwise<F>;

// Any row-wise callable f(std::span<const float> x, std::span<float> y)
// producing `dim` features from a row of Dk inputs.
template <class F>
  requires std::is_invocable_v<const F&, std::span<const float>, std::span<float>>
struct rowwise {
  index_t dim;
  F f;
  index_t features(index_t) const { return dim; }
  template <class B>
  void apply(const float* x, index_t dk, float* y) const {
    f(std::span<const float>(x, static_cast<std::size_t>(dk)),
      std::span<float>(y, static_cast<std::size_t>(dim)));
  }
};
template <class F>
rowwise(index_t, F) -> rowwise<F>;

// Performer's FAVOR+ positive random features (Choromanski et al. 2021):
//   phi(x)_r = exp(w_r . x' - |x'|^2 / 2) / sqrt(m),   x' = x / Dk^(1/4),
// so that E[phi(q) . phi(k)] = exp(q . k / sqrt(Dk)), the softmax kernel.
// The m x Dk projection has orthogonal rows in blocks of Dk (Gram-Schmidt of
// Gaussian rows), each rescaled to the norm of an independent Gaussian row;
// the seed makes it reproducible within one standard library.
class favor_plus {
 public:
  favor_plus(index_t dk, index_t features, std::uint64_t seed = 0) : dk_(dk), m_(features) {
    attn::detail::require(dk >= 1, "favor_plus", "Dk >= 1", dk);
    attn::detail::require(features >= 1, "favor_plus", "a feature count >= 1", features);
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> normal;
    w_.resize(static_cast<std::size_t>(m_ * dk_));
    std::vector<double> block(static_cast<std::size_t>(dk_ * dk_));
    for (index_t r0 = 0; r0 < m_; r0 += dk_) {
      // One block of Dk orthonormal rows.
      for (index_t r = 0; r < dk_; ++r) {
        double* row = &block[static_cast<std::size_t>(r * dk_)];
        for (;;) {
          for (index_t d = 0; d < dk_; ++d) row[d] = normal(gen);
          for (index_t p = 0; p < r; ++p) {
            const double* prev = &block[static_cast<std::size_t>(p * dk_)];
            double dot = 0;
            for (index_t d = 0; d < dk_; ++d) dot += row[d] * prev[d];
            for (index_t d = 0; d < dk_; ++d) row[d] -= dot * prev[d];
          }
          double norm = 0;
          for (index_t d = 0; d < dk_; ++d) norm += row[d] * row[d];
          if (norm > 1e-12) {
            for (index_t d = 0; d < dk_; ++d) row[d] /= std::sqrt(norm);
            break;
          }
        }
      }
      for (index_t r = r0; r < std::min(m_, r0 + dk_); ++r) {
        double length = 0;  // the norm of a Gaussian row: chi with Dk degrees
        for (index_t d = 0; d < dk_; ++d) {
          const double g = normal(gen);
          length += g * g;
        }
        length = std::sqrt(length);
        for (index_t d = 0; d < dk_; ++d)
          w_[static_cast<std::size_t>(r * dk_ + d)] =
              static_cast<float>(length * block[static_cast<std::size_t>((r - r0) * dk_ + d)]);
      }
    }
  }

  // Rows of any other Dk are refused (at the entry point, before any work).
  index_t features(index_t dk) const {
    attn::detail::require(dk == dk_, "favor_plus", "rows of its Dk = " + std::to_string(dk_), dk);
    return m_;
  }
  // (m, Dk) row-major.
  std::span<const float> projection() const { return w_; }

  template <class B>
  void apply(const float* x, index_t, float* y) const {
    const float in_scale = 1.0f / std::sqrt(std::sqrt(static_cast<float>(dk_)));
    float sq = 0;
    for (index_t d = 0; d < dk_; ++d) sq += x[d] * x[d];
    const float shift = 0.5f * sq * in_scale * in_scale;
    const float out_scale = 1.0f / std::sqrt(static_cast<float>(m_));
    for (index_t r = 0; r < m_; ++r) {
      const float* w = &w_[static_cast<std::size_t>(r * dk_)];
      float dot = 0;
      for (index_t d = 0; d < dk_; ++d) dot += w[d] * x[d];
      y[r] = (dot * in_scale - shift) * detail::log2e;  // log2 of the feature
    }
    const auto scale = B::broadcast(out_scale);
    detail::map_elements<B>(
        y, m_, y, [&](auto v) { return B::mul(B::exp2(v), scale); },
        [&](float v) { return std::exp2(v) * out_scale; });
  }

 private:
  index_t dk_, m_;
  std::vector<float> w_;
};

}  // namespace feature

// The built-in maps by name, for options and command lines.
enum class feature_kind { identity, elu_plus_one, relu };

}  // namespace attn
