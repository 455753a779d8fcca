// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attn/core/error.hpp"
#include "attn/core/tensor.hpp"

namespace attn {

// (o, lse) <- (o, lse) (+) (o_b, lse_b) for one row of dv values (DESIGN §2):
// m = max(lse, lse_b), lse' = m + log(e^(lse-m) + e^(lse_b-m)),
// o' = e^(lse-lse') o + e^(lse_b-lse') o_b. A part with lse = -inf drops out;
// two empty parts give an empty row (o = 0, lse = -inf). o_b may be null for
// an all-zero part (a sink logit is merged this way).
inline void merge_row(float* o, float& lse, const float* o_b, float lse_b, index_t dv) {
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  if (lse_b == neg_inf) {
    if (lse == neg_inf) std::fill_n(o, dv, 0.0f);  // both empty: an empty row
    return;
  }
  if (lse == neg_inf) {
    for (index_t d = 0; d < dv; ++d) o[d] = o_b ? o_b[d] : 0.0f;
    lse = lse_b;
    return;
  }
  const float m = std::max(lse, lse_b);
  const float wa = std::exp(lse - m);
  const float wb = std::exp(lse_b - m);
  const float total = wa + wb;
  const float ca = wa / total;
  const float cb = wb / total;
  for (index_t d = 0; d < dv; ++d) o[d] = ca * o[d] + (o_b ? cb * o_b[d] : 0.0f);
  lse = m + std::log(total);
}

// Merges two partial attention results over disjoint key sets into the
// result over their union: o (B, Nq, H, Dv), lse (B, Nq, H). Any strides; the
// output may alias part a (in-place accumulation) but not part b.
inline void merge(view4<const float> o_a, view3<const float> lse_a, view4<const float> o_b,
                  view3<const float> lse_b, view4<float> o, view3<float> lse) {
  const std::string shape = detail::shape_string(o_a);
  detail::require(!o_a.empty() && !o_b.empty() && !o.empty(), "o", "non-null views",
                  "a null view");
  detail::require(!lse_a.empty() && !lse_b.empty() && !lse.empty(), "lse", "non-null views",
                  "a null view");
  detail::require(o_b.extent == o_a.extent, "o_b", "shape " + shape, detail::shape_string(o_b));
  detail::require(o.extent == o_a.extent, "o", "shape " + shape, detail::shape_string(o));
  const std::array<index_t, 3> rows{o_a.extent[0], o_a.extent[1], o_a.extent[2]};
  const std::string rows_shape = detail::shape_string(view3<const float>{nullptr, rows, {}});
  detail::require(lse_a.extent == rows, "lse_a", "shape " + rows_shape, detail::shape_string(lse_a));
  detail::require(lse_b.extent == rows, "lse_b", "shape " + rows_shape, detail::shape_string(lse_b));
  detail::require(lse.extent == rows, "lse", "shape " + rows_shape, detail::shape_string(lse));
  const index_t dv = o_a.extent[3];
  std::vector<float> a(static_cast<std::size_t>(dv)), b(static_cast<std::size_t>(dv));
  for (index_t n = 0; n < rows[0]; ++n)
    for (index_t i = 0; i < rows[1]; ++i)
      for (index_t h = 0; h < rows[2]; ++h) {
        for (index_t d = 0; d < dv; ++d) {
          a[d] = o_a(n, i, h, d);
          b[d] = o_b(n, i, h, d);
        }
        float l = lse_a(n, i, h);
        merge_row(a.data(), l, b.data(), lse_b(n, i, h), dv);
        for (index_t d = 0; d < dv; ++d) o(n, i, h, d) = a[d];
        lse(n, i, h) = l;
      }
}

}  // namespace attn
