// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <vector>

#include "attn/mask/neighborhood_window.hpp"
#include "reference/softmax_reference.hpp"

// The fp64 oracle of neighborhood attention (DESIGN §2) for rank R = 1..3:
// tokens on a grid (B, X[, Y[, Z]], H, D), any strides. It flattens the grid
// into a contiguous (B, N, H, D) copy in row-major token order and runs the
// softmax oracle with the pair predicate built from the 1-D rule in every
// dimension; rows of the result are indexed by the flat token index.
namespace attn::ref {

template <std::size_t R>
struct grid {
  std::array<index_t, R> length;
  index_t tokens() const {
    index_t n = 1;
    for (index_t l : length) n *= l;
    return n;
  }
  // Row-major coordinates of flat token t.
  std::array<index_t, R> coords(index_t t) const {
    std::array<index_t, R> c{};
    for (std::size_t d = R; d-- > 0;) {
      c[d] = t % length[d];
      t /= length[d];
    }
    return c;
  }
};

// A contiguous (B, N, H, D) copy of a (B, X[, Y[, Z]], H, D) view.
template <std::size_t R>
std::vector<float> flatten_grid(strided_view<const float, R + 3> x, const grid<R>& g) {
  const index_t b = x.extent[0], h = x.extent[R + 1], d = x.extent[R + 2], n = g.tokens();
  std::vector<float> flat(static_cast<std::size_t>(b * n * h * d));
  for (index_t bi = 0; bi < b; ++bi)
    for (index_t t = 0; t < n; ++t) {
      const std::array<index_t, R> c = g.coords(t);
      index_t off = bi * x.stride[0];
      for (std::size_t r = 0; r < R; ++r) off += c[r] * x.stride[r + 1];
      for (index_t hi = 0; hi < h; ++hi)
        for (index_t di = 0; di < d; ++di)
          flat[static_cast<std::size_t>(((bi * n + t) * h + hi) * d + di)] =
              x.data[off + hi * x.stride[R + 1] + di * x.stride[R + 2]];
    }
  return flat;
}

// Key token j allowed for query token i iff allowed in every dimension.
template <std::size_t R>
bool neighborhood_pair(const grid<R>& g, const std::array<neighborhood_dim, R>& dims, index_t i,
                       index_t j) {
  const std::array<index_t, R> ci = g.coords(i), cj = g.coords(j);
  for (std::size_t d = 0; d < R; ++d)
    if (!neighborhood_allows(dims[d], g.length[d], ci[d], cj[d])) return false;
  return true;
}

template <std::size_t R>
softmax_result neighborhood_attention(strided_view<const float, R + 3> q,
                                      strided_view<const float, R + 3> k,
                                      strided_view<const float, R + 3> v,
                                      const std::array<neighborhood_dim, R>& dims) {
  grid<R> g;
  for (std::size_t d = 0; d < R; ++d) g.length[d] = q.extent[d + 1];
  const index_t b = q.extent[0], n = g.tokens(), hq = q.extent[R + 1], hkv = k.extent[R + 1];
  const index_t dk = q.extent[R + 2], dv = v.extent[R + 2];
  const std::vector<float> qf = flatten_grid<R>(q, g), kf = flatten_grid<R>(k, g),
                           vf = flatten_grid<R>(v, g);
  auto allowed = [&](index_t, index_t, index_t i, index_t j) { return neighborhood_pair(g, dims, i, j); };
  auto identity = [](double s, index_t, index_t, index_t, index_t) { return s; };
  return softmax_attention(bshd<const float>(qf.data(), b, n, hq, dk),
                           bshd<const float>(kf.data(), b, n, hkv, dk),
                           bshd<const float>(vf.data(), b, n, hkv, dv),
                           1.0 / std::sqrt(static_cast<double>(dk)), nullptr, allowed, identity);
}

}  // namespace attn::ref
