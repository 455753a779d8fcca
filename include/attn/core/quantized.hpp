// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "attn/core/element.hpp"
#include "attn/core/error.hpp"
#include "attn/core/problem.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"

// int8 K/V caches (README, "Reduced precision"): each row of a kv head, one
// token's Dk or Dv channels, is stored as int8 values and one fp32 scale,
// symmetric (no zero point). Decode reads a quarter of fp32's bytes; the
// kernels widen the values as they load them and apply the scales to the
// score and probability tiles, so max, sum and output stay fp32.
namespace attn {

// A tensor of rows stored as int8 with an fp32 scale each: element
// (b, j, h, d) = scales(b, j, h) * values(b, j, h, d). With scales of
// extent (B, N, 1), one scale serves all heads of a token.
struct quantized {
  view4<const std::int8_t> values;  // (B, N, H, D)
  view3<const float> scales;        // (B, N, H) or (B, N, 1)
};

// A paged int8 cache (typed_paged_kv's layout): the value pools and, row
// for row, their scales.
struct quantized_paged_kv {
  view4<const std::int8_t> k_pages;  // (P, page_size, Hkv, Dk)
  view3<const float> k_scales;       // (P, page_size, Hkv) or (P, page_size, 1)
  view4<const std::int8_t> v_pages;  // (P, page_size, Hkv, Dv)
  view3<const float> v_scales;       // (P, page_size, Hkv) or (P, page_size, 1)
  strided_view<const std::int32_t, 2>
      block_table;  // (B, max pages per sequence), unit inner stride
};

// The largest int8 magnitude a row's scale maps its largest |x| to; -128
// is never used, so the range is symmetric.
inline constexpr int quantized_max = 127;

namespace detail {

// Scales of `heads` heads of (n0, n1) rows, named `name`: (n0, n1, heads)
// or (n0, n1, 1), returned as (n0, n1, heads) with stride 0 across heads
// when one scale serves a row's every head.
inline view3<const float> checked_scales(const view3<const float>& scales, const char* name,
                                         index_t n0, index_t n1, index_t heads, const char* n0_name,
                                         const char* n1_name, const char* heads_name) {
  require_view(scales, name,
               [&] { return concat(dims({{n0_name, n0}, {n1_name, n1}, {heads_name, heads}}), " or (", n0_name, ", ",
                                   n1_name, ", 1)"); },
               scales.extent[0] == n0 && scales.extent[1] == n1 &&
                   (scales.extent[2] == heads || scales.extent[2] == 1));
  return {scales.data,
          {n0, n1, heads},
          {scales.stride[0], scales.stride[1], scales.extent[2] == 1 ? 0 : scales.stride[2]}};
}

}  // namespace detail

// Quantizes x (B, N, H, D) row by row into values (B, N, H, D) and scales:
// per row (scales (B, N, H)) or per token over all its heads (scales
// (B, N, 1)), scale = max |x| / 127 and value = x / scale rounded to
// nearest even, so |x - scale * value| <= scale / 2. A row of zeros (or
// below 127 times the smallest float) gets scale 0; a row holding NaN or
// inf gets a NaN scale and zero values, so it reaches, as NaN, exactly the
// outputs that attend it. Throws attn::error naming a bad argument (nothing
// is written then).
template <class T>
requires storage_element<std::remove_const_t<T>>
void quantize(strided_view<T, 4> x, view4<std::int8_t> values, view3<float> scales) {
  const index_t b = x.extent[0], n = x.extent[1], h = x.extent[2], d = x.extent[3];
  detail::require_view(x, "x", "(B, N, H, D)", true);
  detail::check_written(values, "values", detail::dims({{"B", b}, {"N", n}, {"H", h}, {"D", d}}),
                        values.extent == x.extent, {{x, "x"}});
  detail::check_written(scales, "scales",
                        detail::dims({{"B", b}, {"N", n}, {"H", h}}) + " or (B, N, 1)",
                        scales.extent[0] == b && scales.extent[1] == n &&
                            (scales.extent[2] == h || scales.extent[2] == 1),
                        {{x, "x"}, {values, "values"}});
  const index_t groups = scales.extent[2], heads_per_scale = groups == 1 ? h : 1;
  for (index_t i = 0; i < b; ++i)
    for (index_t j = 0; j < n; ++j)
      for (index_t s = 0; s < groups; ++s) {
        const index_t h0 = s * heads_per_scale, h1 = h0 + heads_per_scale;
        float largest = 0.0f;
        bool finite = true;
        for (index_t hh = h0; hh < h1; ++hh) {
          const auto* row = x.row(i, j, hh);
          for (index_t c = 0; c < d; ++c) {
            const float v = to_float(row[c * x.stride[3]]);
            finite = finite && std::isfinite(v);
            largest = std::max(largest, std::fabs(v));
          }
        }
        const float scale =
            finite ? largest / quantized_max : std::numeric_limits<float>::quiet_NaN();
        scales(i, j, s) = scale;
        for (index_t hh = h0; hh < h1; ++hh) {
          const auto* row = x.row(i, j, hh);
          std::int8_t* out = values.row(i, j, hh);
          for (index_t c = 0; c < d; ++c) {
            const float q =
                scale > 0.0f ? std::nearbyint(to_float(row[c * x.stride[3]]) / scale) : 0.0f;
            out[c * values.stride[3]] = static_cast<std::int8_t>(
                std::clamp(q, -float{quantized_max}, float{quantized_max}));
          }
        }
      }
}

}  // namespace attn
