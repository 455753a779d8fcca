// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "attn/core/error.hpp"

namespace attn {

using index_t = std::int64_t;

// A non-owning strided view of a rank-R tensor. Extents and strides are in
// elements; strides may be any non-negative values, so a BSHD view can sit on
// BHSD memory (or any other permutation) without a copy.
template <class T, std::size_t Rank>
struct strided_view {
  using value_type = T;
  static constexpr std::size_t rank = Rank;

  T* data = nullptr;
  std::array<index_t, Rank> extent{};
  std::array<index_t, Rank> stride{};

  constexpr bool empty() const { return data == nullptr; }

  template <class... I>
    requires(sizeof...(I) == Rank)
  constexpr T& operator()(I... i) const {
    const std::array<index_t, Rank> idx{static_cast<index_t>(i)...};
    index_t off = 0;
    for (std::size_t r = 0; r < Rank; ++r) off += idx[r] * stride[r];
    return data[off];
  }

  // Pointer to the start of the innermost row at the given outer indices.
  template <class... I>
    requires(sizeof...(I) == Rank - 1)
  constexpr T* row(I... i) const {
    const std::array<index_t, Rank - 1> idx{static_cast<index_t>(i)...};
    index_t off = 0;
    for (std::size_t r = 0; r + 1 < Rank; ++r) off += idx[r] * stride[r];
    return data + off;
  }

  // A read-only view of the same memory.
  constexpr operator strided_view<const T, Rank>() const
    requires(!std::is_const_v<T>)
  {
    return {data, extent, stride};
  }

  // Number of elements, or -1 when the product overflows index_t.
  constexpr index_t size() const {
    for (index_t e : extent)
      if (e == 0) return 0;
    index_t n = 1;
    for (index_t e : extent) {
      if (e != 0 && n > INT64_MAX / e) return -1;
      n *= e;
    }
    return n;
  }

  // Offset one past the furthest element addressed (for bounds/aliasing).
  constexpr index_t span() const {
    index_t last = 0;
    for (std::size_t r = 0; r < Rank; ++r) {
      if (extent[r] == 0) return 0;
      last += (extent[r] - 1) * stride[r];
    }
    return last + 1;
  }
};

template <class T>
using view4 = strided_view<T, 4>;  // (B, S, H, D)
template <class T>
using view3 = strided_view<T, 3>;  // (B, S, H), e.g. lse

// A contiguous (B, S, H, D) tensor: the layout of PyTorch SDPA's inputs after
// .transpose(1, 2), of FlashAttention and of ggml.
template <class T>
constexpr view4<T> bshd(T* data, index_t b, index_t s, index_t h, index_t d) {
  return {data, {b, s, h, d}, {s * h * d, h * d, d, 1}};
}

// BSHD meaning over contiguous (B, H, S, D) memory: PyTorch's default layout.
template <class T>
constexpr view4<T> bhsd(T* data, index_t b, index_t s, index_t h, index_t d) {
  return {data, {b, s, h, d}, {h * s * d, d, s * d, 1}};
}

// A contiguous (B, S, H) tensor, the layout of lse.
template <class T>
constexpr view3<T> bsh(T* data, index_t b, index_t s, index_t h) {
  return {data, {b, s, h}, {s * h, h, 1}};
}

namespace detail {

template <class T, std::size_t R>
std::string shape_string(const strided_view<T, R>& v) {
  std::string s = "(";
  for (std::size_t r = 0; r < R; ++r) {
    s += std::to_string(v.extent[r]);
    if (r + 1 < R) s += ", ";
  }
  return s + ")";
}

}  // namespace detail
}  // namespace attn
