// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>

#include "attn/core/error.hpp"
#include "attn/core/tensor.hpp"

// The one-dimensional neighborhood rule of NATTEN / Generalized Neighborhood
// Attention (DESIGN §2). A rank-R neighborhood is the product of R of these:
// key j is allowed for query i iff it is allowed in every dimension.
namespace attn {

// One dimension of a neighborhood: kernel K >= 2, dilation D >= 1, stride
// 1 <= S <= K, causal or not; K * D <= L for the dimension's length L.
struct neighborhood_dim {
  index_t kernel;
  index_t dilation = 1;
  index_t stride = 1;
  bool causal = false;
};

// The keys query i sees along one dimension: those with j % D == group and
// first <= j / D < last (coordinates inside the dilation group).
struct neighborhood_keys {
  index_t group;
  index_t first, last;
};

// Query i of a dimension of length L (DESIGN §2): group g = i % D, group
// coordinate i' = i / D over L' = ceil((L - g) / D) members;
//   non-causal: leader = min((i'/S)*S + S/2, L'-1),
//               start = clamp(leader - K/2, 0, L' - K), end = start + K
//               (the window shifts inwards at borders: always K keys);
//   causal:     leader = min((i'/S)*S + S - 1, L'-1),
//               start = max(leader - K + 1, 0), end = min(i' + 1, L').
constexpr neighborhood_keys neighborhood_window(const neighborhood_dim& n, index_t length, index_t i) {
  const index_t g = i % n.dilation, ig = i / n.dilation;
  const index_t members = (length - g + n.dilation - 1) / n.dilation;
  const index_t block = ig / n.stride * n.stride;
  if (n.causal) {
    const index_t leader = std::min(block + n.stride - 1, members - 1);
    return {g, std::max<index_t>(leader - n.kernel + 1, 0), std::min(ig + 1, members)};
  }
  const index_t leader = std::min(block + n.stride / 2, members - 1);
  const index_t start = std::clamp<index_t>(leader - n.kernel / 2, 0, members - n.kernel);
  return {g, start, start + n.kernel};
}

constexpr bool neighborhood_allows(const neighborhood_dim& n, index_t length, index_t i, index_t j) {
  const neighborhood_keys w = neighborhood_window(n, length, i);
  return j % n.dilation == w.group && j / n.dilation >= w.first && j / n.dilation < w.last;
}

namespace detail {

// Throws attn::error naming the dimension when its parameters are invalid
// (DESIGN §2: an error, never a clamp).
inline void check_neighborhood_dim(const neighborhood_dim& n, index_t length, std::size_t dim) {
  const std::string where = "neighborhood dimension " + std::to_string(dim);
  require(n.kernel >= 2, (where + " kernel").c_str(), "K >= 2", n.kernel);
  require(n.dilation >= 1, (where + " dilation").c_str(), "D >= 1", n.dilation);
  require(n.stride >= 1 && n.stride <= n.kernel, (where + " stride").c_str(),
          "1 <= S <= K = " + std::to_string(n.kernel), n.stride);
  require(n.kernel * n.dilation <= length, (where + " kernel").c_str(),
          "K * D <= L = " + std::to_string(length),
          "K * D = " + std::to_string(n.kernel) + " * " + std::to_string(n.dilation));
}

}  // namespace detail
}  // namespace attn
