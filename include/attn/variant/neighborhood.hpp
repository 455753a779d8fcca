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
#include <tuple>
#include <utility>
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
// Multi-dimensional tiles: tokens are packed once per call (O(input)).
// Queries go tile-major: per dilation group, hyper-rectangles of
// T_1 x ... x T_R tokens, one query tile of the core each, shaped from the
// kernel (choose_tile). Keys go row-major per group, so the keys a query tile
// meets (the union of its windows) are one run per grid row: the core walks
// exactly those, unmasked inside the windows' intersection, and masks the
// rest a tile row at a time (windows start and end monotonically in the
// query coordinate, so the queries that see a key form a box).
namespace attn {

template <std::size_t R>
struct neighborhood_options {
  std::array<neighborhood_dim, R> dims;  // per grid dimension X[, Y[, Z]]
  std::optional<float> scale;            // default 1 / sqrt(Dk)
};

namespace detail {

// The packed token orders of a rank-R grid, and the neighborhood mask in them.
//
// Queries are tile-major: per dilation group, the group's sub-grid is cut into
// hyper-rectangles of T_1 x ... x T_R tokens (padded to full size), one query
// tile of the core each. Keys are group-major and row-major inside a group
// (no padding), so the keys of a query tile's window union form one run per
// grid row of that union: the core walks exactly those keys, cut into KV tiles
// from the start of each run, and masks a partial tile with a few fills per
// key (the allowed queries of a key are a sub-box of the query tile, because
// windows start and end monotonically in the query coordinate).
template <std::size_t R>
class neighborhood_layout {
 public:
  using coords = std::array<index_t, R>;

  // positions: query tokens per tile at most; granule: the score kernel's
  // query width in tokens; tile_keys: keys per KV tile.
  neighborhood_layout(const coords& length, const std::array<neighborhood_dim, R>& dims,
                      index_t positions, index_t granule, index_t tile_keys)
      : length_(length), dims_(dims), tile_keys_(tile_keys) {
    choose_tile(positions, granule);
    // Dilation groups in row-major order; per group its query tiles (row
    // major) and its keys.
    coords group{};
    index_t tiles = 0, keys = 0;
    do {
      group_first_tile_.push_back(tiles);
      group_first_key_.push_back(keys);
      coords count{};
      index_t n = 1, m = 1;
      for (std::size_t d = 0; d < R; ++d) {
        count[d] = ceil_div(members(d, group[d]), tile_[d]);
        n *= count[d];
        m *= members(d, group[d]);
      }
      group_tiles_.push_back(count);
      group_of_.push_back(group);
      tiles += n;
      keys += m;
    } while (next(group, dilation_extents()));
    group_first_key_.push_back(keys);
    tile_count_ = tiles;
    query_token_.assign(static_cast<std::size_t>(tiles * volume_), -1);
    for (index_t t = 0; t < tiles; ++t) {
      const index_t gi = group_index(t);
      const coords origin = tile_origin(t);
      coords offset{};
      index_t n = t * volume_;
      do {
        coords c{};
        bool real = true;
        for (std::size_t d = 0; d < R; ++d) {
          c[d] = origin[d] + offset[d];
          real = real && c[d] < members(d, group_of_[static_cast<std::size_t>(gi)][d]);
        }
        if (real) query_token_[static_cast<std::size_t>(n)] = grid_token(gi, c);
        ++n;
      } while (next(offset, tile_));
    }
    key_token_.resize(static_cast<std::size_t>(keys));
    for (std::size_t gi = 0; gi < group_of_.size(); ++gi) {
      coords c{}, extent{};
      for (std::size_t d = 0; d < R; ++d) extent[d] = members(d, group_of_[gi][d]);
      index_t n = group_first_key_[gi];
      do key_token_[static_cast<std::size_t>(n++)] = grid_token(static_cast<index_t>(gi), c);
      while (next(c, extent));
    }
  }

  index_t volume() const { return volume_; }
  const coords& tile() const { return tile_; }
  index_t queries() const { return tile_count_ * volume_; }  // packed query tokens (with padding)
  index_t keys() const { return static_cast<index_t>(key_token_.size()); }
  // Flat row-major grid token of packed query n (-1 for padding) / of key n.
  index_t query_token(index_t n) const { return query_token_[static_cast<std::size_t>(n)]; }
  index_t key_token(index_t n) const { return key_token_[static_cast<std::size_t>(n)]; }

  // --- the mask over packed queries and keys (attn::mask) ---
  attn::tile_shape tile_shape() const { return {volume_, tile_keys_}; }
  // Above rank 1 a query tile's runs (grid rows of its windows' union) are
  // short: the core gathers them into whole KV tiles.
  constexpr bool gathers_runs() const { return R > 1; }

  key_range keys(const query_block& qb) const {
    const tile_windows w = windows_of(qb);
    coords last{};
    for (std::size_t d = 0; d < R; ++d) last[d] = w.hi[d] - 1;
    return {key_index(w.group, w.lo), key_index(w.group, last) + 1};
  }

  // The same keys as runs: one per grid row (all coordinates but the last)
  // of the windows' union.
  void key_runs(const query_block& qb, std::vector<key_range>& runs) const {
    const tile_windows w = windows_of(qb);
    coords row = w.lo;
    do {
      coords last = row;
      last[R - 1] = w.hi[R - 1] - 1;
      runs.push_back({key_index(w.group, row), key_index(w.group, last) + 1});
      std::size_t d = R - 1;  // next row: increment the outer coordinates within [lo, hi)
      while (d-- > 0) {
        if (++row[d] < w.hi[d]) break;
        row[d] = w.lo[d];
      }
      if (d == static_cast<std::size_t>(-1)) break;
    } while (true);
  }

  // Keys [j0, j1) inside one grid row are empty when they miss the windows'
  // union and full inside their intersection; a range over several rows or
  // groups is called partial.
  tile_kind classify(const query_block& qb, index_t j0, index_t j1) const {
    const tile_windows w = windows_of(qb);
    const index_t group = key_group(j0);
    if (key_group(j1 - 1) != group) return tile_kind::partial;
    if (group != w.group) return tile_kind::empty;
    const coords a = key_coords(group, j0), z = key_coords(group, j1 - 1);
    bool full = true;
    for (std::size_t d = 0; d < R; ++d) {
      if (d + 1 < R && a[d] != z[d]) return tile_kind::partial;
      if (z[d] < w.lo[d] || a[d] >= w.hi[d]) return tile_kind::empty;
      full = full && a[d] >= w.inner_lo[d] && z[d] < w.inner_hi[d];
    }
    return full ? tile_kind::full : tile_kind::partial;
  }

  // Masks a partial tile (S^T rows: keys j0.., columns: position-major,
  // `heads` per position). The queries of the tile that see key k form the
  // box [a_d, b_d) of tile offsets (windows start and end monotonically), so
  // a key row is masked per tile row (outer offsets) with one select over
  // the row's columns against the pattern of [a, b) in the last dimension.
  void remove_pairs(const query_block& qb, index_t heads, index_t j0, index_t keys, float* st,
                    index_t ldq) const {
    constexpr float removed = -std::numeric_limits<float>::infinity();
    const index_t t = qb.i_begin / volume_, gi = group_index(t);
    const coords origin = tile_origin(t), g = group_of_[static_cast<std::size_t>(gi)];
    const index_t inner = tile_[R - 1] * heads, outer = volume_ / tile_[R - 1];
    // Per dimension, the window bounds of the tile's query offsets (padding
    // repeats the last real coordinate: its rows are discarded anyway); then
    // the last dimension's keep pattern, one int per column of a tile row.
    thread_local std::vector<index_t> bounds;
    thread_local std::vector<std::int32_t> keep;
    bounds.resize(static_cast<std::size_t>(2 * volume_ * R));
    keep.resize(static_cast<std::size_t>(inner));
    std::array<const index_t*, R> first{}, last{};
    index_t* at = bounds.data();
    for (std::size_t d = 0; d < R; ++d) {
      for (index_t c = 0; c < tile_[d]; ++c) {
        const neighborhood_keys win = window(d, g[d], std::min(origin[d] + c, members(d, g[d]) - 1));
        at[c] = win.first;
        at[tile_[d] + c] = win.last;
      }
      first[d] = at;
      last[d] = at + tile_[d];
      at += 2 * tile_[d];
    }
    // Tile offsets [a, b) whose window holds key coordinate k along d.
    auto seen_by = [&](std::size_t d, index_t k) {
      return std::pair<index_t, index_t>(std::upper_bound(last[d], last[d] + tile_[d], k) - last[d],
                                         std::upper_bound(first[d], first[d] + tile_[d], k) - first[d]);
    };
    thread_local std::vector<std::int32_t> inside;  // per tile row: -1 when its outer offsets see the key row
    inside.resize(static_cast<std::size_t>(outer));
    coords k{}, a{}, b{};
    index_t row_end = j0, group = -1, pattern_a = -1, pattern_b = -1;
    for (index_t j = j0; j < j0 + keys; ++j) {
      float* row = st + (j - j0) * ldq;
      if (j == row_end) {  // a new grid row of keys: its group and outer offsets
        group = key_group(j);
        k = key_coords(group, j);
        row_end = j + members(R - 1, group_of_[static_cast<std::size_t>(group)][R - 1]) - k[R - 1];
        for (std::size_t d = 0; d < R; ++d) std::tie(a[d], b[d]) = seen_by(d, k[d]);
        coords offset{};  // of the outer dimensions; offset[R - 1] stays 0
        for (index_t o = 0; o < outer; ++o) {
          bool in = group == gi;
          for (std::size_t d = 0; d + 1 < R; ++d) in = in && offset[d] >= a[d] && offset[d] < b[d];
          inside[static_cast<std::size_t>(o)] = in ? -1 : 0;
          for (std::size_t d = R - 1; d-- > 0;) {
            if (++offset[d] < tile_[d]) break;
            offset[d] = 0;
          }
        }
      } else {  // the next key of the row: the box's last bounds only grow
        ++k[R - 1];
        while (a[R - 1] < tile_[R - 1] && last[R - 1][a[R - 1]] <= k[R - 1]) ++a[R - 1];
        while (b[R - 1] < tile_[R - 1] && first[R - 1][b[R - 1]] <= k[R - 1]) ++b[R - 1];
      }
      if (a[R - 1] != pattern_a || b[R - 1] != pattern_b) {
        pattern_a = a[R - 1];
        pattern_b = b[R - 1];
        for (index_t c = 0; c < inner; ++c)
          keep[static_cast<std::size_t>(c)] = c >= pattern_a * heads && c < pattern_b * heads ? -1 : 0;
      }
      for (index_t o = 0; o < outer; ++o) {
        const std::int32_t in = inside[static_cast<std::size_t>(o)];
        float* segment = row + o * inner;
        for (index_t c = 0; c < inner; ++c)
          segment[c] = (keep[static_cast<std::size_t>(c)] & in) ? segment[c] : removed;
      }
    }
  }

  bool allowed(index_t, index_t, index_t i, index_t j) const {
    if (query_token_[static_cast<std::size_t>(i)] < 0) return false;
    const index_t t = i / volume_, gi = group_index(t);
    if (key_group(j) != gi) return false;
    const coords k = key_coords(gi, j), origin = tile_origin(t);
    const coords& g = group_of_[static_cast<std::size_t>(gi)];
    index_t rest = i % volume_;
    for (std::size_t d = R; d-- > 0;) {
      const neighborhood_keys w = window(d, g[d], origin[d] + rest % tile_[d]);
      rest /= tile_[d];
      if (k[d] < w.first || k[d] >= w.last) return false;
    }
    return true;
  }

 private:
  // A query tile's dilation group and, per dimension, the union [lo, hi) and
  // the intersection [inner_lo, inner_hi) of its real queries' windows.
  struct tile_windows {
    index_t group;
    coords lo, hi, inner_lo, inner_hi;
  };
  tile_windows windows_of(const query_block& qb) const {
    const index_t t = qb.i_begin / volume_;
    tile_windows w{group_index(t), {}, {}, {}, {}};
    const coords g = group_of_[static_cast<std::size_t>(w.group)], origin = tile_origin(t);
    for (std::size_t d = 0; d < R; ++d) {
      const neighborhood_keys front = window(d, g[d], origin[d]);
      const neighborhood_keys back = window(d, g[d], std::min(origin[d] + tile_[d], members(d, g[d])) - 1);
      w.lo[d] = front.first;
      w.hi[d] = back.last;
      w.inner_lo[d] = back.first;
      w.inner_hi[d] = front.last;
    }
    return w;
  }
  // Members of dilation group g along dimension d: ceil((L - g) / D).
  index_t members(std::size_t d, index_t g) const {
    return ceil_div(length_[d] - g, dims_[d].dilation);
  }
  // The window, in group coordinates, of group coordinate c of group g.
  neighborhood_keys window(std::size_t d, index_t g, index_t c) const {
    return neighborhood_window(dims_[d], length_[d], c * dims_[d].dilation + g);
  }
  // Flat row-major grid token of group coordinates c in group gi.
  index_t grid_token(index_t gi, const coords& c) const {
    index_t flat = 0;
    for (std::size_t d = 0; d < R; ++d)
      flat = flat * length_[d] + c[d] * dims_[d].dilation + group_of_[static_cast<std::size_t>(gi)][d];
    return flat;
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
  // Query tiles of T_1 x ... x T_R <= positions tokens; in 1-D, `positions`.
  // Above, the tile that computes the fewest pairs per query: every query of
  // a tile of extents T_d meets the keys of the windows' union,
  // prod(T_d + K_d - 1) of them, so small tiles waste least; but the score
  // kernel runs `granule` queries at a time (smaller tiles are padded to it),
  // and each tile has a fixed cost (packing, finishing rows) worth
  // `tile_overhead` pairs.
  void choose_tile(index_t positions, index_t granule) {
    tile_.fill(1);
    if constexpr (R == 1) {
      tile_[0] = std::min(positions, members(0, 0));
    } else {
      double best = std::numeric_limits<double>::infinity();
      coords t{}, extent{};
      for (std::size_t d = 0; d < R; ++d) extent[d] = std::min(positions, members(d, 0));
      do {
        coords tile = t;
        index_t volume = 1;
        double keys = 1;
        for (std::size_t d = 0; d < R; ++d) {
          volume *= ++tile[d];  // t counts from 0
          keys *= static_cast<double>(tile[d] + dims_[d].kernel - 1);
        }
        if (volume > positions) continue;
        const double computed = static_cast<double>(round_up(volume, granule));
        const double cost = (keys * computed + tile_overhead) / static_cast<double>(volume);
        if (cost < best) {
          best = cost;
          tile_ = tile;
        }
      } while (next(t, extent));
    }
    volume_ = 1;
    for (index_t t : tile_) volume_ *= t;
  }
  index_t group_index(index_t tile) const {
    return static_cast<index_t>(std::upper_bound(group_first_tile_.begin(), group_first_tile_.end(), tile) -
                                group_first_tile_.begin()) - 1;
  }
  index_t key_group(index_t key) const {
    return static_cast<index_t>(std::upper_bound(group_first_key_.begin(), group_first_key_.end(), key) -
                                group_first_key_.begin()) - 1;
  }
  // Group coordinates <-> packed key index within group gi (row-major).
  index_t key_index(index_t gi, const coords& c) const {
    index_t n = 0;
    for (std::size_t d = 0; d < R; ++d) n = n * members(d, group_of_[static_cast<std::size_t>(gi)][d]) + c[d];
    return group_first_key_[static_cast<std::size_t>(gi)] + n;
  }
  coords key_coords(index_t gi, index_t key) const {
    index_t rest = key - group_first_key_[static_cast<std::size_t>(gi)];
    coords c{};
    for (std::size_t d = R; d-- > 0;) {
      const index_t m = members(d, group_of_[static_cast<std::size_t>(gi)][d]);
      c[d] = rest % m;
      rest /= m;
    }
    return c;
  }
  // First query token (group coordinates) of query tile t.
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

  static constexpr double tile_overhead = 64 * 64;

  coords length_;
  std::array<neighborhood_dim, R> dims_;
  index_t tile_keys_;
  coords tile_{};
  index_t volume_ = 1, tile_count_ = 0;
  std::vector<index_t> group_first_tile_;  // (groups) first query tile of each group
  std::vector<index_t> group_first_key_;   // (groups + 1) first key of each group
  std::vector<coords> group_tiles_;        // (groups) query tiles per dimension
  std::vector<coords> group_of_;           // (groups) the group's offsets g_d
  std::vector<index_t> query_token_;       // (queries) flat grid token or -1
  std::vector<index_t> key_token_;         // (keys) flat grid token
};

// Copies rows of a (B, grid..., H, D) view into (B, packed tokens, H, D) order
// (padding rows, token -1, zero), or back when ToGrid. token(n): the flat
// grid token of packed row n.
template <std::size_t R, bool ToGrid, class Grid, class Packed, class Token>
void repack_rows(const Token& token, const Grid& grid_view, const Packed& packed, const auto& exec) {
  constexpr std::size_t N = R + 3;
  const index_t batch = packed.extent[0], tokens = packed.extent[1], heads = packed.extent[2],
                width = packed.extent[3];
  exec.parallel_for(static_cast<std::size_t>(batch * tokens), [&](std::size_t item) {
    const index_t b = static_cast<index_t>(item) / tokens, n = static_cast<index_t>(item) % tokens;
    index_t t = token(n);
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

  // Query tiles of the core's size at most (their shape from the kernel, see
  // choose_tile); KV tiles of the core's size, cut from each run of keys.
  const index_t heads = std::min<index_t>(hq / hkv, Backend::query_tile_rows);  // per position
  const index_t granule =
      detail::ceil_div(Backend::score_query_vecs * static_cast<index_t>(Backend::width), heads);
  const detail::neighborhood_layout<R> layout(
      length, opt.dims, detail::work_split<Backend>::default_positions(hq / hkv), granule, Backend::kv_tile);
  const index_t nq = layout.queries(), nk = layout.keys();
  // The packed copies live on between calls (per calling thread), grown
  // when needed: fresh pages cost more than the attention at small kernels.
  thread_local std::vector<float> qp, kp, vp, op, lp;
  auto fit = [](std::vector<float>& buf, index_t n) {
    if (buf.size() < static_cast<std::size_t>(n)) buf.resize(static_cast<std::size_t>(n));
  };
  fit(qp, b * nq * hq * dk);
  fit(kp, b * nk * hkv * dk);
  fit(vp, b * nk * hkv * dv);
  fit(op, b * nq * hq * dv);
  fit(lp, lse.empty() ? 0 : b * nq * hq);
  const view4<float> qv = bshd(qp.data(), b, nq, hq, dk), kv = bshd(kp.data(), b, nk, hkv, dk),
                     vv = bshd(vp.data(), b, nk, hkv, dv), ov = bshd(op.data(), b, nq, hq, dv);
  const auto query_token = [&](index_t n) { return layout.query_token(n); };
  const auto key_token = [&](index_t n) { return layout.key_token(n); };
  detail::repack_rows<R, false>(query_token, q, qv, exec);
  detail::repack_rows<R, false>(key_token, k, kv, exec);
  detail::repack_rows<R, false>(key_token, v, vv, exec);
  const view3<float> lv = lse.empty() ? view3<float>{} : bsh(lp.data(), b, nq, hq);
  const detail::softmax_problem p{{qv, kv, vv, ov}, lv, scale, nullptr};
  detail::run_softmax<Backend>(p, layout, no_modifier{}, exec);
  detail::repack_rows<R, true>(query_token, out, ov, exec);
  if (!lse.empty()) {
    // lse (B, grid, Hq) as a (B, grid, Hq, 1) view for the same copy.
    strided_view<float, N> lse4{lse.data, {}, {}};
    strided_view<float, 4> lp4{lp.data(), {b, nq, hq, 1}, {nq * hq, hq, 1, 1}};
    for (std::size_t d = 0; d + 1 < N; ++d) {
      lse4.extent[d] = lse.extent[d];
      lse4.stride[d] = lse.stride[d];
    }
    lse4.extent[N - 1] = 1;
    lse4.stride[N - 1] = 1;
    detail::repack_rows<R, true>(query_token, lse4, lp4, exec);
  }
}

}  // namespace attn
