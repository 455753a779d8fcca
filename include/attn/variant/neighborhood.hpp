// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/error.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/main_loop.hpp"
#include "attn/core/schedule.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"
#include "attn/mask/neighborhood_window.hpp"

// Neighborhood attention (NATTEN / GNA semantics, DESIGN §2) of rank R = 1..3
// on the one tiled core, written once over the rank.
//
// Multi-dimensional tiles: tokens are packed once per call (O(input)) into a
// tile-major order: per dilation group, the group's sub-grid is cut into
// hyper-rectangles of T_1 x ... x T_R tokens (padded to full size), so a query
// tile of the core is one hyper-rectangle and a KV tile another. A KV tile is
// skipped when it misses the union of the query tile's windows, and runs
// unmasked when it lies inside their intersection (windows start and end
// monotonically in the query coordinate, so both come from the tile's corners).
namespace attn {

template <std::size_t R>
struct neighborhood_options {
  std::array<neighborhood_dim, R> dims;  // per grid dimension X[, Y[, Z]]
  std::optional<float> scale;            // default 1 / sqrt(Dk)
};

namespace detail {

// The tile-major token order of a rank-R grid, and the neighborhood mask in it.
template <std::size_t R>
class neighborhood_layout {
 public:
  using coords = std::array<index_t, R>;

  // positions: the core's query-tile size; tiles hold at most that many tokens.
  neighborhood_layout(const coords& length, const std::array<neighborhood_dim, R>& dims,
                      index_t positions)
      : length_(length), dims_(dims) {
    choose_tile(positions);
    // Dilation groups in row-major order, then their tiles in row-major order.
    coords group{};
    index_t tiles = 0;
    do {
      group_first_tile_.push_back(tiles);
      coords count{};
      index_t n = 1;
      for (std::size_t d = 0; d < R; ++d) {
        count[d] = ceil_div(members(d, group[d]), tile_[d]);
        n *= count[d];
      }
      group_tiles_.push_back(count);
      group_of_.push_back(group);
      tiles += n;
    } while (next(group, dilation_extents()));
    tile_count_ = tiles;
    // Per packed token: its flat grid token (-1: padding), its group
    // coordinates, and (as a query) the window in each dimension.
    token_.assign(static_cast<std::size_t>(tiles * volume_), -1);
    coord_.assign(token_.size(), coords{});
    first_.assign(token_.size(), coords{});
    last_.assign(token_.size(), coords{});
    for (index_t t = 0; t < tiles; ++t) {
      const coords origin = tile_origin(t), g = group_of_[static_cast<std::size_t>(group_index(t))];
      coords offset{};
      index_t n = t * volume_;
      do {
        bool real = true;
        index_t flat = 0;
        for (std::size_t d = 0; d < R; ++d) {
          const index_t c = origin[d] + offset[d];
          real = real && c < members(d, g[d]);
          const index_t x = c * dims_[d].dilation + g[d];  // grid coordinate
          flat = flat * length_[d] + x;
          coord_[static_cast<std::size_t>(n)][d] = c;
          if (real) {
            const neighborhood_keys w = neighborhood_window(dims_[d], length_[d], x);
            first_[static_cast<std::size_t>(n)][d] = w.first;
            last_[static_cast<std::size_t>(n)][d] = w.last;
          }
        }
        if (real) token_[static_cast<std::size_t>(n)] = flat;
        ++n;
      } while (next(offset, tile_));
    }
  }

  index_t volume() const { return volume_; }
  index_t tokens() const { return tile_count_ * volume_; }
  const coords& tile() const { return tile_; }
  // Flat row-major grid token of packed token n, or -1 for padding.
  index_t token(index_t n) const { return token_[static_cast<std::size_t>(n)]; }

  // --- the mask over packed tokens (attn::mask) ---
  attn::tile_shape tile_shape() const { return {volume_, volume_}; }

  key_range keys(const query_block& qb) const {
    const union_box box = windows_of(qb);
    return {tile_index(box.group, box.lo) * volume_, (tile_index(box.group, box.hi) + 1) * volume_};
  }

  // The same keys as runs of whole tiles: one per row of tiles (all tile
  // coordinates but the last) of the windows' union box.
  void key_runs(const query_block& qb, std::vector<key_range>& runs) const {
    const union_box box = windows_of(qb);
    const coords &lo = box.lo, &hi = box.hi;
    coords row = lo;
    do {
      coords last = row;
      last[R - 1] = hi[R - 1];
      runs.push_back({tile_index(box.group, row) * volume_, (tile_index(box.group, last) + 1) * volume_});
      std::size_t d = R - 1;  // next row: increment the outer coordinates within [lo, hi]
      while (d-- > 0) {
        if (++row[d] <= hi[d]) break;
        row[d] = lo[d];
      }
      if (d == static_cast<std::size_t>(-1)) break;
    } while (true);
  }

  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    const index_t qt = qb.i_begin / volume_;
    if ((j1 - 1) / volume_ != j0 / volume_) return tile_kind::partial;  // not one KV tile
    const index_t kt = j0 / volume_;
    const index_t gi = group_index(qt);
    if (group_index(kt) != gi) return tile_kind::empty;
    const coords g = group_of_[static_cast<std::size_t>(gi)];
    const coords q_origin = tile_origin(qt), k_origin = tile_origin(kt);
    bool full = j0 == kt * volume_ && j1 == (kt + 1) * volume_;
    for (std::size_t d = 0; d < R; ++d) {
      const index_t m = members(d, g[d]);
      const index_t q_last = std::min(q_origin[d] + tile_[d], m) - 1;
      const index_t k_end = std::min(k_origin[d] + tile_[d], m);  // real keys [k_origin, k_end)
      const neighborhood_keys first_row = window(d, g[d], q_origin[d]);
      const neighborhood_keys last_row = window(d, g[d], q_last);
      // Union of the windows: [first_row.first, last_row.last); intersection:
      // [last_row.first, first_row.last).
      if (k_end <= first_row.first || k_origin[d] >= last_row.last) return tile_kind::empty;
      full = full && k_end == k_origin[d] + tile_[d] && k_origin[d] >= last_row.first &&
             k_end <= first_row.last;
    }
    return full ? tile_kind::full : tile_kind::partial;
  }

  // Masks a partial tile (S^T rows: keys j0.., columns: position-major,
  // `heads` per position) with every pair's per-dimension test; one pass of
  // comparisons per key row over per-column window bounds.
  void remove_pairs(const query_block& qb, index_t heads, index_t j0, index_t keys, float* st,
                    index_t ldq) const {
    constexpr float removed = -std::numeric_limits<float>::infinity();
    const index_t columns = (qb.i_end - qb.i_begin) * heads;
    thread_local std::vector<std::int32_t> bounds;
    bounds.resize(static_cast<std::size_t>(2 * R * columns));
    std::int32_t* lo = bounds.data();
    std::int32_t* hi = bounds.data() + R * columns;
    for (index_t c = 0; c < columns; ++c) {
      const auto i = static_cast<std::size_t>(qb.i_begin + c / heads);
      for (std::size_t d = 0; d < R; ++d) {
        lo[d * columns + c] = static_cast<std::int32_t>(first_[i][d]);
        hi[d * columns + c] = static_cast<std::int32_t>(last_[i][d]);
      }
    }
    for (index_t j = 0; j < keys; ++j) {
      float* row = st + j * ldq;
      const auto key = static_cast<std::size_t>(j0 + j);
      if (token_[key] < 0) {
        std::fill(row, row + columns, removed);
        continue;
      }
      std::array<std::int32_t, R> k{};
      for (std::size_t d = 0; d < R; ++d) k[d] = static_cast<std::int32_t>(coord_[key][d]);
      for (index_t c = 0; c < columns; ++c) {
        bool ok = true;
        for (std::size_t d = 0; d < R; ++d)
          ok = ok & (lo[d * columns + c] <= k[d]) & (k[d] < hi[d * columns + c]);
        row[c] = ok ? row[c] : removed;
      }
    }
  }

  bool allowed(index_t, index_t, index_t i, index_t j) const {
    const auto qi = static_cast<std::size_t>(i), kj = static_cast<std::size_t>(j);
    if (token_[qi] < 0 || token_[kj] < 0) return false;
    if (group_index(i / volume_) != group_index(j / volume_)) return false;
    for (std::size_t d = 0; d < R; ++d)
      if (coord_[kj][d] < first_[qi][d] || coord_[kj][d] >= last_[qi][d]) return false;
    return true;
  }

 private:
  // The tiles (corners lo..hi, tile coordinates in dilation group `group`)
  // holding the union of the windows of a query tile's real tokens.
  struct union_box {
    index_t group;
    coords lo, hi;
  };
  union_box windows_of(const query_block& qb) const {
    const index_t t = qb.i_begin / volume_;
    union_box box{group_index(t), {}, {}};
    const coords g = group_of_[static_cast<std::size_t>(box.group)], origin = tile_origin(t);
    for (std::size_t d = 0; d < R; ++d) {
      const index_t m = members(d, g[d]);
      box.lo[d] = window(d, g[d], origin[d]).first / tile_[d];
      box.hi[d] = (window(d, g[d], std::min(origin[d] + tile_[d], m) - 1).last - 1) / tile_[d];
    }
    return box;
  }
  // Members of dilation group g along dimension d: ceil((L - g) / D).
  index_t members(std::size_t d, index_t g) const {
    return ceil_div(length_[d] - g, dims_[d].dilation);
  }
  // The window, in group coordinates, of group coordinate c of group g.
  neighborhood_keys window(std::size_t d, index_t g, index_t c) const {
    return neighborhood_window(dims_[d], length_[d], c * dims_[d].dilation + g);
  }
  coords dilation_extents() const {
    coords e{};
    for (std::size_t d = 0; d < R; ++d) e[d] = dims_[d].dilation;
    return e;
  }
  // Row-major increment of x within extents; false after the last one.
  static bool next(coords& x, const coords& extent) {
    for (std::size_t d = R; d-- > 0;) {
      if (++x[d] < extent[d]) return true;
      x[d] = 0;
    }
    return false;
  }
  // Tiles of T_1 x ... x T_R with T_1 ... T_R <= positions, as even as the
  // largest group's sub-grid allows: prime factors of `positions`, largest
  // first, each to the dimension with the smallest tile that can still grow.
  void choose_tile(index_t positions) {
    tile_.fill(1);
    std::vector<index_t> primes;
    for (index_t n = positions, p = 2; n > 1;) {
      if (p * p > n) p = n;
      if (n % p == 0) {
        primes.push_back(p);
        n /= p;
      } else {
        ++p;
      }
    }
    std::sort(primes.rbegin(), primes.rend());
    for (index_t p : primes) {
      std::size_t best = R;
      for (std::size_t d = 0; d < R; ++d)
        if (tile_[d] * p <= members(d, 0) && (best == R || tile_[d] < tile_[best])) best = d;
      if (best < R) tile_[best] *= p;
    }
    volume_ = 1;
    for (index_t t : tile_) volume_ *= t;
  }
  index_t group_index(index_t tile) const {
    return static_cast<index_t>(std::upper_bound(group_first_tile_.begin(), group_first_tile_.end(), tile) -
                                group_first_tile_.begin()) - 1;
  }
  // Tile coordinates -> tile index within group gi (row-major).
  index_t tile_index(index_t gi, const coords& tc) const {
    const coords& count = group_tiles_[static_cast<std::size_t>(gi)];
    index_t t = 0;
    for (std::size_t d = 0; d < R; ++d) t = t * count[d] + tc[d];
    return group_first_tile_[static_cast<std::size_t>(gi)] + t;
  }
  // First token (group coordinates) of tile t.
  coords tile_origin(index_t t) const {
    const index_t gi = group_index(t);
    const coords& count = group_tiles_[static_cast<std::size_t>(gi)];
    index_t rest = t - group_first_tile_[static_cast<std::size_t>(gi)];
    coords origin{};
    for (std::size_t d = R; d-- > 0;) {
      origin[d] = rest % count[d] * tile_[d];
      rest /= count[d];
    }
    return origin;
  }

  coords length_;
  std::array<neighborhood_dim, R> dims_;
  coords tile_{};
  index_t volume_ = 1, tile_count_ = 0;
  std::vector<index_t> group_first_tile_;  // (groups) first packed tile of each group
  std::vector<coords> group_tiles_;        // (groups) tiles per dimension
  std::vector<coords> group_of_;           // (groups) the group's offsets g_d
  std::vector<index_t> token_;             // (tokens) flat grid token or -1
  std::vector<coords> coord_, first_, last_;  // (tokens) group coords; query windows
};

// Copies rows of a (B, grid..., H, D) view into (B, packed tokens, H, D) order
// (padding rows zero), or back when ToGrid.
template <std::size_t R, bool ToGrid, class Grid, class Packed>
void repack_rows(const neighborhood_layout<R>& layout, const Grid& grid_view, const Packed& packed,
                 const auto& exec) {
  constexpr std::size_t N = R + 3;
  const index_t batch = packed.extent[0], tokens = packed.extent[1], heads = packed.extent[2],
                width = packed.extent[3];
  exec.parallel_for(static_cast<std::size_t>(batch * tokens), [&](std::size_t item) {
    const index_t b = static_cast<index_t>(item) / tokens, n = static_cast<index_t>(item) % tokens;
    index_t t = layout.token(n);
    if (t < 0) {
      if constexpr (!ToGrid)
        for (index_t h = 0; h < heads; ++h) std::fill_n(packed.row(b, n, h), width, 0.0f);
      return;
    }
    index_t off = b * grid_view.stride[0];
    for (std::size_t d = R; d-- > 0;) {
      off += t % grid_view.extent[d + 1] * grid_view.stride[d + 1];
      t /= grid_view.extent[d + 1];
    }
    for (index_t h = 0; h < heads; ++h)
      for (index_t c = 0; c < width; ++c) {
        auto& g = grid_view.data[off + h * grid_view.stride[N - 2] + c * grid_view.stride[N - 1]];
        if constexpr (ToGrid)
          g = packed(b, n, h, c);
        else
          packed(b, n, h, c) = g;
      }
  });
}

}  // namespace detail

// Neighborhood attention of rank R = N - 3 (DESIGN §2):
//   q (B, X[, Y[, Z]], Hq, Dk), k and v (B, X[, Y[, Z]], Hkv, Dk|Dv)
//   -> out (B, X[, Y[, Z]], Hq, Dv), lse (B, X[, Y[, Z]], Hq) or empty.
// Any strides; GQA (Hq % Hkv == 0); per-dimension kernel, dilation, stride
// and causal flag. Extra memory: one tile-major copy of q, k, v and out.
template <simd_backend Backend = default_backend, std::size_t N, std::size_t R, executor Exec = serial>
void neighborhood_attention(strided_view<const float, N> q, strided_view<const float, N> k,
                            strided_view<const float, N> v, strided_view<float, N> out,
                            strided_view<float, N - 1> lse, const neighborhood_options<R>& opt,
                            const Exec& exec = {}) {
  static_assert(R >= 1 && R <= 3, "neighborhood attention has rank 1, 2 or 3");
  static_assert(N == R + 3, "tensors are (B, grid of rank R, heads, dim): rank R + 3");
  using detail::require;
  const index_t b = q.extent[0], hq = q.extent[N - 2], dk = q.extent[N - 1];
  std::array<index_t, R> length{};
  index_t tokens = 1;
  for (std::size_t d = 0; d < R; ++d) tokens *= (length[d] = q.extent[d + 1]);
  const std::string grid = [&] {
    std::string s;
    for (std::size_t d = 0; d < R; ++d) s += (d ? ", " : "") + std::to_string(length[d]);
    return s;
  }();
  detail::require_view(q, "q", "(B, grid, Hq, Dk) with Hq, Dk >= 1", hq >= 1 && dk >= 1);
  const index_t hkv = k.extent[N - 2], dv = v.extent[N - 1];
  auto same_grid = [&](const auto& x) {
    for (std::size_t d = 0; d <= R; ++d)
      if (x.extent[d] != q.extent[d]) return false;
    return true;
  };
  detail::require_view(k, "k", "(B, " + grid + ", Hkv, Dk = " + std::to_string(dk) + ") with Hkv >= 1",
                       same_grid(k) && hkv >= 1 && k.extent[N - 1] == dk);
  require(hq % hkv == 0, "k", "a kv head count dividing Hq = " + std::to_string(hq) + " (GQA)",
          "Hkv = " + std::to_string(hkv));
  detail::require_view(v, "v", "(B, " + grid + ", Hkv = " + std::to_string(hkv) + ", Dv) with Dv >= 1",
                       same_grid(v) && v.extent[N - 2] == hkv && dv >= 1);
  detail::require_view(out, "out", "(B, " + grid + ", Hq = " + std::to_string(hq) + ", Dv = " +
                                       std::to_string(dv) + ")",
                       same_grid(out) && out.extent[N - 2] == hq && out.extent[N - 1] == dv);
  detail::require_distinct(out, "out");
  detail::require_disjoint(out, "out", q, "q");
  detail::require_disjoint(out, "out", k, "k");
  detail::require_disjoint(out, "out", v, "v");
  if (!lse.empty()) {
    bool lse_ok = lse.extent[N - 2] == hq;
    for (std::size_t d = 0; d <= R; ++d) lse_ok = lse_ok && lse.extent[d] == q.extent[d];
    detail::require_view(lse, "lse", "(B, " + grid + ", Hq = " + std::to_string(hq) + ")", lse_ok);
    detail::require_distinct(lse, "lse");
    detail::require_disjoint(lse, "lse", out, "out");
    detail::require_disjoint(lse, "lse", q, "q");
    detail::require_disjoint(lse, "lse", k, "k");
    detail::require_disjoint(lse, "lse", v, "v");
  }
  for (std::size_t d = 0; d < R; ++d) detail::check_neighborhood_dim(opt.dims[d], length[d], d);
  const float scale = opt.scale.value_or(1.0f / std::sqrt(static_cast<float>(dk)));
  require(std::isfinite(scale), "scale", "a finite value", scale);
  if (b == 0) return;

  // Query tiles of the core's size in 1-D; smaller hyper-rectangles (at most
  // 32 tokens) above, where a tile's key footprint grows with its surface
  // (bench/neighborhood_bench.cpp: 32 beat 16, 48 and 96 at 96 x 96).
  const index_t positions = detail::work_split<Backend>::default_positions(hq / hkv);
  const detail::neighborhood_layout<R> layout(length, opt.dims,
                                              R == 1 ? positions : std::min<index_t>(positions, 32));
  const index_t packed = layout.tokens();
  // The packed copies live on between calls (per calling thread), grown
  // when needed: fresh pages cost more than the attention at small kernels.
  thread_local std::vector<float> qp, kp, vp, op, lp;
  auto fit = [](std::vector<float>& buf, index_t n) {
    if (buf.size() < static_cast<std::size_t>(n)) buf.resize(static_cast<std::size_t>(n));
  };
  fit(qp, b * packed * hq * dk);
  fit(kp, b * packed * hkv * dk);
  fit(vp, b * packed * hkv * dv);
  fit(op, b * packed * hq * dv);
  fit(lp, lse.empty() ? 0 : b * packed * hq);
  const view4<float> qv = bshd(qp.data(), b, packed, hq, dk), kv = bshd(kp.data(), b, packed, hkv, dk),
                     vv = bshd(vp.data(), b, packed, hkv, dv), ov = bshd(op.data(), b, packed, hq, dv);
  detail::repack_rows<R, false>(layout, q, qv, exec);
  detail::repack_rows<R, false>(layout, k, kv, exec);
  detail::repack_rows<R, false>(layout, v, vv, exec);
  const view3<float> lv = lse.empty() ? view3<float>{} : bsh(lp.data(), b, packed, hq);
  const detail::softmax_problem p{qv, kv, vv, ov, lv, scale, nullptr};
  detail::run_softmax<Backend>(p, layout, no_modifier{}, exec);
  detail::repack_rows<R, true>(layout, out, ov, exec);
  if (!lse.empty()) {
    // lse (B, grid, Hq) as a (B, grid, Hq, 1) view for the same copy.
    strided_view<float, N> lse4{lse.data, {}, {}};
    strided_view<float, 4> lp4{lp.data(), {b, packed, hq, 1}, {packed * hq, hq, 1, 1}};
    for (std::size_t d = 0; d + 1 < N; ++d) {
      lse4.extent[d] = lse.extent[d];
      lse4.stride[d] = lse.stride[d];
    }
    lse4.extent[N - 1] = 1;
    lse4.stride[N - 1] = 1;
    detail::repack_rows<R, true>(layout, lse4, lp4, exec);
  }
}

}  // namespace attn
