// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "attn/backend/registry.hpp"
#include "attn/core/element.hpp"
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

// Row-major increment of x within extents; false after the last one.
template <std::size_t R>
bool next_row_major(std::array<index_t, R>& x, const std::array<index_t, R>& extent) {
  for (std::size_t d = R; d-- > 0;) {
    if (++x[d] < extent[d]) return true;
    x[d] = 0;
  }
  return false;
}

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
    } while (next_row_major(group, dilation_extents()));
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
      } while (next_row_major(offset, tile_));
    }
    key_token_.resize(static_cast<std::size_t>(keys));
    for (std::size_t gi = 0; gi < group_of_.size(); ++gi) {
      coords c{}, extent{};
      for (std::size_t d = 0; d < R; ++d) extent[d] = members(d, group_of_[gi][d]);
      index_t n = group_first_key_[gi];
      do key_token_[static_cast<std::size_t>(n++)] = grid_token(static_cast<index_t>(gi), c);
      while (next_row_major(c, extent));
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
      } while (next_row_major(t, extent));
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
          g = from_float<std::remove_cvref_t<decltype(g)>>(packed(b, n, h, c));  // rounded once, if 16-bit
        else
          packed(b, n, h, c) = to_float(g);  // widened, if 16-bit
      }
  });
}

// The offset kernel's packed keys and values, transposed: per (batch, kv
// head) slot, per dilation group, per grid row (all coordinates but the
// last, row-major) one panel of C channel rows, each padded with zeros on
// both sides so that every query vector's window loads stay inside it. A
// window row's channels are one compact panel (a few pages), not C planes
// a page or more apart: the TLB holds a window's rows.
template <std::size_t R>
class neighborhood_panels {
 public:
  using coords = std::array<index_t, R>;
  struct group {
    coords offset, members;
    index_t rows, first_row;  // outer rows of the group; rows of the groups before it
    index_t pitch;            // floats per padded channel row
    index_t first;            // floats per channel of the groups before it
  };

  neighborhood_panels(const coords& length, const std::array<neighborhood_dim, R>& dims, index_t width)
      : dims_(dims), length_(length), pad_(dims[R - 1].kernel) {
    coords g{}, extent{};
    for (std::size_t d = 0; d < R; ++d) extent[d] = dims[d].dilation;
    do {
      group gr{g, {}, 1, rows_, 0, floats_};
      for (std::size_t d = 0; d < R; ++d) {
        gr.members[d] = ceil_div(length[d] - g[d], dims[d].dilation);
        if (d + 1 < R) gr.rows *= gr.members[d];
      }
      // Loads reach offsets in [-(K - 1), K) of a query and W - 1 lanes past it.
      gr.pitch = pad_ + gr.members[R - 1] + pad_ + width;
      groups_.push_back(gr);
      rows_ += gr.rows;
      floats_ += gr.rows * gr.pitch;
    } while (next_row_major(g, extent));
  }

  const std::vector<group>& groups() const { return groups_; }
  index_t rows() const { return rows_; }  // outer rows of all groups
  index_t pad() const { return pad_; }
  // Floats per (batch, head) slot with `channels` channel rows per panel.
  index_t slot(index_t channels) const { return channels * floats_; }
  // The group holding slot row r (0 <= r < rows()).
  const group& group_of_row(index_t r) const {
    return *(std::upper_bound(groups_.begin(), groups_.end(), r,
                              [](index_t x, const group& gr) { return x < gr.first_row; }) - 1);
  }
  // Group coordinates of outer row `row` of a group (the last one left 0).
  coords outer(const group& gr, index_t row) const {
    coords c{};
    for (std::size_t d = R - 1; d-- > 0;) {
      c[d] = row % gr.members[d];
      row /= gr.members[d];
    }
    return c;
  }
  // The window [first, last), in group coordinates, of coordinate c along d.
  neighborhood_keys window(std::size_t d, const group& gr, index_t c) const {
    return neighborhood_window(dims_[d], length_[d], c * dims_[d].dilation + gr.offset[d]);
  }
  // The outer rows (flat within the group, row-major, so sorted) of the
  // window of a query at outer group coordinates c (the last one unused).
  void window_rows(const group& gr, const coords& c, std::vector<index_t>& rows) const {
    rows.clear();
    coords lo{}, hi{}, w{};
    for (std::size_t d = 0; d + 1 < R; ++d) {
      const neighborhood_keys win = window(d, gr, c[d]);
      lo[d] = w[d] = win.first;
      hi[d] = win.last;
    }
    do {
      index_t n = 0;
      for (std::size_t d = 0; d + 1 < R; ++d) n = n * gr.members[d] + w[d];
      rows.push_back(n);
      std::size_t d = R - 1;
      while (d-- > 0) {
        if (++w[d] < hi[d]) break;
        w[d] = lo[d];
      }
      if (d == static_cast<std::size_t>(-1)) break;
    } while (true);
  }
  template <class View>
  index_t last_step(const View& x) const { return dims_[R - 1].dilation * x.stride[R]; }
  // Element offset of group coordinates c (batch and head excluded) in a
  // (B, grid..., H, C) view.
  template <class View>
  index_t grid_offset(const View& x, const group& gr, const coords& c) const {
    index_t off = 0;
    for (std::size_t d = 0; d < R; ++d) off += (c[d] * dims_[d].dilation + gr.offset[d]) * x.stride[d + 1];
    return off;
  }

 private:
  std::array<neighborhood_dim, R> dims_;
  coords length_;
  index_t pad_, rows_ = 0, floats_ = 0;
  std::vector<group> groups_;
};

// A work item of the panel kernels (offsets, segments): one head, one chunk
// of a panel row, items numbered head-minor so that the query and output rows
// of a token (all heads) are read and written by consecutive items.
struct panel_item {
  index_t b, row, chunk, h;  // row: of all groups' rows (neighborhood_panels::rows)
};
inline panel_item locate_panel_item(std::size_t item, index_t heads, index_t chunks, index_t rows) {
  index_t rest = static_cast<index_t>(item);
  panel_item it;
  it.h = rest % heads;
  rest /= heads;
  it.chunk = rest % chunks;
  rest /= chunks;
  it.row = rest % rows;
  it.b = rest / rows;
  return it;
}

// Copies a (B, grid..., H, C) view into its panels (zero padding), as
// floats whatever its storage type. fp32 rows with unit channel stride go
// W tokens x W channels at a time through the backend's in-register
// transpose; the rest (16-bit storage, strided channels, tails) element by
// element.
template <class B, std::size_t R, class View>
void pack_panels(const neighborhood_panels<R>& layout, const View& x, float* packed, const auto& exec) {
  constexpr std::size_t N = R + 3;
  const index_t heads = x.extent[N - 2], channels = x.extent[N - 1], rows = layout.rows(),
                slot = layout.slot(channels), pad = layout.pad();
  // Items go head-minor: a row's tokens are read from memory once, for all heads.
  exec.parallel_for(static_cast<std::size_t>(x.extent[0] * rows * heads), [&](std::size_t item) {
    const index_t h = static_cast<index_t>(item) % heads, br = static_cast<index_t>(item) / heads;
    const index_t b = br / rows, r = br % rows, bh = b * heads + h;
    const auto& gr = layout.group_of_row(r);
    const index_t row = r - gr.first_row, members = gr.members[R - 1];
    const index_t step = layout.last_step(x);  // between consecutive members of a row
    const auto* src =
        x.data + b * x.stride[0] + h * x.stride[N - 2] + layout.grid_offset(x, gr, layout.outer(gr, row));
    float* dst = packed + bh * slot + channels * (gr.first + row * gr.pitch);  // (channels, pitch)
    const index_t cs = x.stride[N - 1];
    for (index_t c = 0; c < channels; ++c) {
      std::fill_n(dst + c * gr.pitch, pad, 0.0f);
      std::fill(dst + c * gr.pitch + pad + members, dst + (c + 1) * gr.pitch, 0.0f);
    }
    // Whole W x W blocks of tokens [0, tokens) and channels [0, whole) by transposes ...
    constexpr index_t W = static_cast<index_t>(B::width);
    constexpr bool fp32 = std::is_same_v<std::remove_const_t<typename View::value_type>, float>;
    const bool blocks = fp32 && cs == 1;
    const index_t tokens = blocks ? members / W * W : 0, whole = blocks ? channels / W * W : 0;
    if constexpr (fp32)
      for (index_t u = 0; u < tokens; u += W)
        for (index_t c = 0; c < whole; c += W)
          B::transpose(src + u * step + c, step, dst + c * gr.pitch + pad + u, gr.pitch);
    // ... and the rest element by element (widened, if 16-bit).
    for (index_t c = 0; c < channels; ++c)
      for (index_t t = c < whole ? tokens : 0; t < members; ++t)
        dst[c * gr.pitch + pad + t] = to_float(src[t * step + c * cs]);
  });
}

// Whether every value of a (B, grid..., H, C) view is finite (one pass, no
// copy; C a whole number of vectors with unit stride). Masked pairs have
// p = 0, but 0 * NaN is NaN: the kernels that multiply a masked pair's value
// (the union of several queries' windows) skip p = 0 pairs explicitly, or
// (segments) take each query's own window alone, when it is not.
template <class B, std::size_t R, class View>
bool all_values_finite(const neighborhood_panels<R>& layout, const View& v, const auto& exec) {
  constexpr std::size_t N = R + 3;
  const index_t heads = v.extent[N - 2], rows = layout.rows(), step = layout.last_step(v);
  std::atomic<bool> finite{true};
  exec.parallel_for(static_cast<std::size_t>(v.extent[0] * rows * heads), [&](std::size_t item) {
    const index_t h = static_cast<index_t>(item) % heads, br = static_cast<index_t>(item) / heads;
    const index_t b = br / rows, r = br % rows;
    const auto& gr = layout.group_of_row(r);
    const auto* row = v.data + b * v.stride[0] + h * v.stride[N - 2] +
                      layout.grid_offset(v, gr, layout.outer(gr, r - gr.first_row));
    if (!tile_is_finite<B>(row, step, gr.members[R - 1], v.extent[N - 1])) finite = false;
  });
  return finite;
}

// Neighborhood attention by the offset micro-kernels. A query vector is W
// queries consecutive along the last grid dimension; its window is one run
// of offsets per grid row of the window, computed exactly, and the whole
// window's scores are one S^T tile, so the online softmax core runs once per
// vector. Vectors at borders, or strided or causal along the last dimension,
// load the union of their lanes' offsets and mask the rest. A work item is
// up to 8 vectors of one head in a band of up to 4 grid rows that are
// neighbours along the second-to-last dimension: a window row is computed
// for all the band's rows that hold it (a contiguous range of them, as
// windows start and end monotonically) with one load of each key and value.
template <class B, std::size_t N, std::size_t R, class QStored, class KStored, class VStored, class OStored>
void neighborhood_offsets(strided_view<const QStored, N> q, strided_view<const KStored, N> k,
                          strided_view<const VStored, N> v, strided_view<OStored, N> out, strided_view<float, N - 1> lse,
                          const std::array<neighborhood_dim, R>& dims, float scale, const auto& exec) {
  constexpr index_t W = static_cast<index_t>(B::width);
  // Accumulators per micro-kernel call: the core's P.V register budget
  // (24 on AVX-512, 12 with 16 registers); bands as tall as leave blocks of
  // at least 6 offsets or channels per query row.
  constexpr int budget = B::pv_rows * B::pv_col_vecs;
  constexpr int band_rows = std::clamp(budget / 6, 1, offset_run::max_queries);
  const index_t batch = q.extent[0], hq = q.extent[N - 2], dk = q.extent[N - 1], hkv = k.extent[N - 2],
                dv = v.extent[N - 1], group = hq / hkv;
  std::array<index_t, R> length{};
  for (std::size_t d = 0; d < R; ++d) length[d] = q.extent[d + 1];
  const neighborhood_panels<R> layout(length, dims, W);
  thread_local std::vector<float> kp, vp;  // live on between calls, as the tile path's copies
  const auto fit = [](std::vector<float>& buf, index_t n) {
    if (buf.size() < static_cast<std::size_t>(n)) buf.resize(static_cast<std::size_t>(n));
  };
  fit(kp, batch * hkv * layout.slot(dk));
  fit(vp, batch * hkv * layout.slot(dv));
  pack_panels<B>(layout, k, kp.data(), exec);
  pack_panels<B>(layout, v, vp.data(), exec);

  const float* kt_all = kp.data();
  const float* vt_all = vp.data();
  // Whether every packed value is finite (see all_values_finite), a slot
  // (batch, kv head) at a time.
  std::atomic<bool> values_finite{true};
  exec.parallel_for(static_cast<std::size_t>(batch * hkv), [&](std::size_t slot) {
    const index_t n = layout.slot(dv), whole = n / W * W;
    const float* x = vt_all + static_cast<index_t>(slot) * n;
    bool finite = tile_is_finite<B>(x, 0, 1, whole);
    for (index_t i = whole; i < n; ++i) finite = finite && std::isfinite(x[i]);
    if (!finite) values_finite = false;
  });
  const bool finite = values_finite;
  const index_t rows = layout.rows(), pad = layout.pad();
  // Bands run along dimension R - 2 (lines of `line` rows); rank 1 has one
  // row per group.
  const auto line_of = [](const auto& gr) {
    if constexpr (R > 1) return gr.members[R - 2];
    return index_t{1};
  };
  index_t most_vectors = 0;
  for (const auto& gr : layout.groups())
    most_vectors = std::max(most_vectors, ceil_div(gr.members[R - 1], W));
  constexpr index_t vectors_per_item = 8;
  const index_t chunks = ceil_div(most_vectors, vectors_per_item);
  const float qscale = scale * log2e;
  // A row that does not start a band starts no item of its own.
  exec.parallel_for(static_cast<std::size_t>(batch * rows * chunks * hq), [&](std::size_t item) {
    const auto [b, r, chunk, h] = locate_panel_item(item, hq, chunks, rows);
    const index_t kvh = h / group;
    const auto& gr = layout.group_of_row(r);
    const index_t row = r - gr.first_row, line = line_of(gr), members = gr.members[R - 1];
    if (row % line % band_rows != 0) return;
    const index_t u_begin = chunk * vectors_per_item * W;
    if (u_begin >= members) return;
    const index_t u_end = std::min(members, u_begin + vectors_per_item * W);
    const int band = static_cast<int>(std::min<index_t>(band_rows, line - row % line));

    // Per query row of the band, its outer coordinates and window rows
    // (row-major, so sorted).
    std::array<std::array<index_t, R>, band_rows> c{};
    thread_local std::vector<index_t> window[band_rows];
    for (int p = 0; p < band; ++p) {
      c[p] = layout.outer(gr, row + p);
      layout.window_rows(gr, c[p], window[p]);
    }
    // The band's window rows, each with the range of query rows [first,
    // first + count) that hold it, grouped by that range: (first, count,
    // grid row) sorted.
    struct shared_row {
      int first, count;
      index_t n;
      auto operator<=>(const shared_row&) const = default;
    };
    thread_local std::vector<shared_row> shared;
    shared.clear();
    for (int p = 0; p < band; ++p)
      for (index_t n : window[p]) {
        if (p > 0 && std::binary_search(window[p - 1].begin(), window[p - 1].end(), n)) continue;
        int count = 1;
        while (p + count < band && std::binary_search(window[p + count].begin(), window[p + count].end(), n))
          ++count;
        shared.push_back({p, count, n});
      }
    std::sort(shared.begin(), shared.end());
    const float* kt = kt_all + (b * hkv + kvh) * layout.slot(dk) + dk * gr.first;
    const float* vt = vt_all + (b * hkv + kvh) * layout.slot(dv) + dv * gr.first;
    const QStored* qh = q.data + b * q.stride[0] + h * q.stride[N - 2];
    OStored* oh = out.data + b * out.stride[0] + h * out.stride[N - 2];

    for (index_t u0 = u_begin; u0 < u_end; u0 += W) {
      const index_t lanes = std::min(W, members - u0);
      // Per lane its window along the last dimension, relative to its query:
      // offsets [lo, hi); the vector loads the union [e_lo, e_hi). The same
      // for every row of the band.
      index_t lo[W], hi[W];
      index_t e_lo = std::numeric_limits<index_t>::max(), e_hi = std::numeric_limits<index_t>::min();
      for (index_t i = 0; i < W; ++i) {
        lo[i] = hi[i] = 0;  // a lane past the row's end sees nothing
        if (i >= lanes) continue;
        const neighborhood_keys win = layout.window(R - 1, gr, u0 + i);
        lo[i] = win.first - (u0 + i);
        hi[i] = win.last - (u0 + i);
        e_lo = std::min(e_lo, lo[i]);
        e_hi = std::max(e_hi, hi[i]);
      }
      bool masked = lanes < W;
      for (index_t i = 0; i < lanes; ++i) masked = masked || lo[i] != e_lo || hi[i] != e_hi;
      const index_t count = e_hi - e_lo;

      std::array<index_t, band_rows> total{};
      std::size_t floats = 0;
      for (int p = 0; p < band; ++p) {
        total[p] = static_cast<index_t>(window[p].size()) * count;
        for (index_t n : {dk * W, total[p] * W, dv * W, W, W, W})
          floats += scratch_carver::round_up(static_cast<std::size_t>(n));
      }
      scratch_carver carve(thread_scratch().floats(floats));
      std::array<float*, band_rows> qt{}, st{}, ot{}, m{}, l{}, alpha{};
      for (int p = 0; p < band; ++p) {
        qt[p] = carve.take(static_cast<std::size_t>(dk * W));
        st[p] = carve.take(static_cast<std::size_t>(total[p] * W));
        ot[p] = carve.take(static_cast<std::size_t>(dv * W));
        m[p] = carve.take(W);
        l[p] = carve.take(W);
        alpha[p] = carve.take(W);
        // Q^T of the vector, scaled into log2 units; lanes past the row are 0.
        for (index_t i = 0; i < W; ++i) {
          if (i < lanes) {
            c[p][R - 1] = u0 + i;
            const QStored* src = qh + layout.grid_offset(q, gr, c[p]);
            for (index_t d = 0; d < dk; ++d) qt[p][d * W + i] = to_float(src[d * q.stride[N - 1]]) * qscale;
          } else {
            for (index_t d = 0; d < dk; ++d) qt[p][d * W + i] = 0.0f;
          }
        }
        std::fill_n(ot[p], dv * W, 0.0f);
      }
      // The runs in the key and value panels, in `shared` order; row[j]: the
      // S^T row of the run in query row first + j's tile.
      thread_local std::vector<offset_run> k_runs, v_runs;
      k_runs.clear();
      v_runs.clear();
      for (const shared_row& sr : shared) {
        offset_run run{0, count, {}};
        for (int j = 0; j < sr.count; ++j) {
          const std::vector<index_t>& wp = window[sr.first + j];
          const auto at = std::lower_bound(wp.begin(), wp.end(), sr.n);
          run.row[j] = static_cast<index_t>(at - wp.begin()) * count;
        }
        run.start = sr.n * dk * gr.pitch + pad + u0 + e_lo;
        k_runs.push_back(run);
        run.start = sr.n * dv * gr.pitch + pad + u0 + e_lo;
        v_runs.push_back(run);
      }
      // Scores, a window row at a time for the query rows holding it.
      for (std::size_t w = 0; w < shared.size(); ++w) {
        const offset_run& run = k_runs[w];
        with_count<band_rows>(shared[w].count, [&](auto qn) {
          constexpr int Q = decltype(qn)::value;
          for_each_even_block<std::max(1, budget / Q)>(count, [&](index_t e0, auto n) {
            float* at[Q];
            for (int j = 0; j < Q; ++j) at[j] = st[shared[w].first + j] + (run.row[j] + e0) * W;
            offset_score_block<B, Q, decltype(n)::value>(&qt[shared[w].first], dk, kt + run.start + e0,
                                                        gr.pitch, at);
          });
        });
      }
      // The lanes' keep pattern per offset (the same for every row of the band).
      thread_local std::vector<std::int32_t> keep;
      if (masked) {
        keep.resize(static_cast<std::size_t>(count * W));
        for (index_t e = 0; e < count; ++e)
          for (index_t i = 0; i < W; ++i)
            keep[static_cast<std::size_t>(e * W + i)] = e_lo + e >= lo[i] && e_lo + e < hi[i] ? -1 : 0;
      }
      for (int p = 0; p < band; ++p) {
        if (masked) {
          constexpr float removed = -std::numeric_limits<float>::infinity();
          for (index_t e = 0; e < total[p]; ++e) {
            float* srow = st[p] + e * W;
            const std::int32_t* krow = keep.data() + e % count * W;
            for (index_t i = 0; i < W; ++i) srow[i] = krow[i] ? srow[i] : removed;
          }
        }
        std::fill_n(m[p], W, lowest_score);
        std::fill_n(l[p], W, 0.0f);
        softmax_update<B>(st[p], total[p], W, m[p], l[p], alpha[p]);
      }
      // Values: per range of query rows, its window rows at once.
      for (std::size_t w0 = 0; w0 < shared.size();) {
        std::size_t w1 = w0;
        while (w1 < shared.size() && shared[w1].first == shared[w0].first &&
               shared[w1].count == shared[w0].count)
          ++w1;
        const int first = shared[w0].first;
        if (finite) {
          with_count<band_rows>(shared[w0].count, [&](auto qn) {
            constexpr int Q = decltype(qn)::value;
            for_each_even_block<std::max(1, budget / Q)>(dv, [&](index_t c0, auto n) {
              float* o[Q];
              for (int j = 0; j < Q; ++j) o[j] = ot[first + j] + c0 * W;
              offset_value_block<B, Q, decltype(n)::value>(&st[first], &v_runs[w0],
                                                          static_cast<index_t>(w1 - w0),
                                                          vt + c0 * gr.pitch, gr.pitch, o, true);
            });
          });
        } else {  // masked pairs (p = 0) skipped: 0 * NaN would reach a lane that never sees it
          for (std::size_t w = w0; w < w1; ++w)
            for (int j = 0; j < shared[w0].count; ++j) {
              const offset_run& vr = v_runs[w];
              const float* pt = st[first + j] + vr.row[j] * W;
              for (index_t e = 0; e < vr.count; ++e)
                for (index_t i = 0; i < W; ++i) {
                  const float p = pt[e * W + i];
                  if (p == 0.0f) continue;
                  for (index_t d = 0; d < dv; ++d)
                    ot[first + j][d * W + i] += p * vt[d * gr.pitch + vr.start + e + i];
                }
            }
        }
        w0 = w1;
      }
      for (int p = 0; p < band; ++p)
        for (index_t i = 0; i < lanes; ++i) {
          c[p][R - 1] = u0 + i;
          const row_result res = finish_row(m[p][i], l[p][i]);
          OStored* dst = oh + layout.grid_offset(out, gr, c[p]);
          for (index_t d = 0; d < dv; ++d)
            dst[d * out.stride[N - 1]] = from_float<OStored>(ot[p][d * W + i] * res.inverse_sum);
          if (!lse.empty())
            lse.data[b * lse.stride[0] + h * lse.stride[N - 2] + layout.grid_offset(lse, gr, c[p])] = res.lse;
        }
    }
  });
}

// The segment kernel's shapes: up to segment_queries queries a segment, the
// union of their windows along the last dimension in up to segment_vectors
// vectors of keys.
inline constexpr int segment_queries = 4;
inline constexpr int segment_vectors = 4;
// Accumulators a segment keeps (T x NV): a border or a stride that widens the
// union takes fewer queries (AVX2's 16 registers: 12 + NV loads + 1).
inline constexpr int segment_accumulators = 12;
// Queries per work item along a grid row (a few segments): at most
// segment_chunk, fewer where their scores (queries x window rows x
// segment_vectors W floats) would pass segment_score_floats (128 KiB).
// 32, 64, 96 and 128 measured alike (AVX2, 96 x 96, K = 13).
inline constexpr index_t segment_chunk = 64;
inline constexpr index_t segment_score_floats = 32768;

// Value vectors a segment's P V block takes: the registers of a dot_rows x
// pv_few_rows_col_vecs block (accumulators, value loads, one broadcast)
// spent on T queries (AVX2: 3 for 3 or 4 queries, 5 for 2, 7 for 1).
template <class B, int T>
inline constexpr int segment_value_vecs = (B::dot_rows + 1) * B::pv_few_rows_col_vecs / (T + 1);

// Queries a segment takes: the most (up to segment_queries) whose union of
// windows, K + T - 1 keys inside the grid with stride 1, needs no more key
// vectors than one query's window (K = 13 on AVX2: 4 queries, 16 keys; K = 7:
// 2 queries, 8 keys, the rest of the register budget going to window rows).
template <class B>
int segment_width(index_t kernel) {
  constexpr index_t W = static_cast<index_t>(B::width);
  int t = 1;
  while (t < segment_queries && ceil_div(t + 1 + kernel - 1, W) == ceil_div(kernel, W)) ++t;
  return t;
}

// Whether the segment kernel applies: one query's window along the last
// dimension within segment_vectors vectors, and values it can read in place
// (unit channel stride, whole vectors).
template <class B, std::size_t R, class V, std::size_t N>
bool segments_apply(const std::array<neighborhood_dim, R>& dims, const strided_view<const V, N>& v) {
  constexpr index_t W = static_cast<index_t>(B::width);
  return dims[R - 1].kernel <= segment_vectors * W && v.stride[N - 1] == 1 && v.extent[N - 1] % W == 0;
}

// Neighborhood attention by the segment micro-kernel (segment_score_block).
// A work item is up to segment_chunk queries of one head along one grid row,
// taken T at a time: a segment's queries share their window rows (the grid
// rows of their windows in the other dimensions) and, in each, the union of
// their windows along the last one, NV vectors of keys loaded whole from the
// transposed key panels and multiplied by broadcast queries, a GEMM-shaped
// block instead of one unaligned load per offset. The item's scores are
// computed a window row at a time for all its segments, so a row's keys come
// from memory once per item rather than once per segment (they overlap by
// all but T keys); each query's scores (window rows x NV W keys) then lose
// the pairs outside its own window and get one softmax (no running state: the
// whole window is there), and the values are read in place in the same
// order, a window row at a time for every segment.
template <class B, std::size_t N, std::size_t R, class QStored, class KStored, class VStored, class OStored>
void neighborhood_segments(strided_view<const QStored, N> q, strided_view<const KStored, N> k,
                           strided_view<const VStored, N> v, strided_view<OStored, N> out,
                           strided_view<float, N - 1> lse, const std::array<neighborhood_dim, R>& dims, float scale,
                           const auto& exec) {
  constexpr index_t W = static_cast<index_t>(B::width);
  constexpr float removed = -std::numeric_limits<float>::infinity();
  const index_t batch = q.extent[0], hq = q.extent[N - 2], dk = q.extent[N - 1], hkv = k.extent[N - 2],
                dv = v.extent[N - 1], group = hq / hkv;
  std::array<index_t, R> length{};
  for (std::size_t d = 0; d < R; ++d) length[d] = q.extent[d + 1];
  const neighborhood_panels<R> layout(length, dims, W);
  thread_local std::vector<float> kp;  // lives on between calls, as the other kernels' copies
  if (kp.size() < static_cast<std::size_t>(batch * hkv * layout.slot(dk)))
    kp.resize(static_cast<std::size_t>(batch * hkv * layout.slot(dk)));
  pack_panels<B>(layout, k, kp.data(), exec);
  const float* kt_all = kp.data();  // the calling thread's copy (kp names each thread's own)

  const index_t rows = layout.rows(), pad = layout.pad();
  const index_t vstep = layout.last_step(v);  // between values consecutive along a row
  const bool finite = all_values_finite<B>(layout, v, exec);

  index_t most = 0, most_rows = 1;
  for (const auto& gr : layout.groups()) most = std::max(most, gr.members[R - 1]);
  for (std::size_t d = 0; d + 1 < R; ++d) most_rows *= dims[d].kernel;
  const index_t chunk_queries =
      std::clamp<index_t>(segment_score_floats / (most_rows * segment_vectors * W), segment_queries, segment_chunk);
  const index_t chunks = ceil_div(most, chunk_queries);
  const int widest = segment_width<B>(dims[R - 1].kernel);
  // Window rows a score call takes: its G for the widest segments.
  const index_t row_block = std::clamp<index_t>(8 / (widest * ceil_div(dims[R - 1].kernel, W)), 1, 4);
  const float qscale = scale * log2e;
  // Items numbered (batch, kv head, grid row, head of the group, chunk): a
  // thread's consecutive items share most of their window rows, so the key
  // panels and values stay in L2 between them.
  exec.parallel_for(static_cast<std::size_t>(batch * rows * chunks * hq), [&](std::size_t item) {
    index_t rest = static_cast<index_t>(item);
    const index_t chunk = rest % chunks;
    rest /= chunks;
    const index_t hg = rest % group;
    rest /= group;
    const index_t r = rest % rows;
    rest /= rows;
    const index_t kvh = rest % hkv, b = rest / hkv, h = kvh * group + hg;
    const auto& gr = layout.group_of_row(r);
    const index_t members = gr.members[R - 1];
    const index_t u_begin = chunk * chunk_queries;
    if (u_begin >= members) return;
    const index_t u_end = std::min(members, u_begin + chunk_queries);

    // The item's window rows (row-major, flat within the group).
    std::array<index_t, R> c = layout.outer(gr, r - gr.first_row);
    thread_local std::vector<index_t> window;
    layout.window_rows(gr, c, window);
    const index_t wrows = static_cast<index_t>(window.size());
    // The chunk's segments: a segment's queries, their windows along the
    // last dimension and the union [xlo, xlo + run): fewer queries where a
    // stride or the border widens the union past segment_vectors vectors or
    // segment_accumulators.
    struct segment {
      index_t u0, xlo, run, scores;  // scores: offset of its (T, wrows * run) block
      int count;
      index_t first[segment_queries], last[segment_queries];
    };
    thread_local std::vector<segment> segments;
    segments.clear();
    index_t score_floats = 0;
    for (index_t u0 = u_begin; u0 < u_end;) {
      segment sg{};
      sg.u0 = u0;
      sg.count = static_cast<int>(std::min<index_t>(widest, u_end - u0));
      index_t xhi;
      while (true) {
        sg.xlo = std::numeric_limits<index_t>::max();
        xhi = std::numeric_limits<index_t>::min();
        for (int t = 0; t < sg.count; ++t) {
          const neighborhood_keys win = layout.window(R - 1, gr, u0 + t);
          sg.first[t] = win.first;
          sg.last[t] = win.last;
          sg.xlo = std::min(sg.xlo, win.first);
          xhi = std::max(xhi, win.last);
        }
        const index_t nv = ceil_div(xhi - sg.xlo, W);
        if ((nv <= segment_vectors && sg.count * nv <= segment_accumulators) || sg.count == 1) break;
        --sg.count;
      }
      sg.run = ceil_div(xhi - sg.xlo, W) * W;
      sg.scores = score_floats;
      score_floats += sg.count * wrows * sg.run;
      segments.push_back(sg);
      u0 += sg.count;
    }
    const index_t queries = u_end - u_begin;
    scratch_carver carve(thread_scratch().floats(scratch_carver::round_up(static_cast<std::size_t>(queries * dk)) +
                                                 scratch_carver::round_up(static_cast<std::size_t>(score_floats)) +
                                                 scratch_carver::round_up(static_cast<std::size_t>(queries * dv))));
    float* qrows = carve.take(static_cast<std::size_t>(queries * dk));  // (queries, dk)
    float* s = carve.take(static_cast<std::size_t>(score_floats));      // per segment (T, wrows * run)
    float* o = carve.take(static_cast<std::size_t>(queries * dv));      // (queries, dv)
    // Per window row: its value row at the last coordinate 0.
    thread_local std::vector<index_t> vbase;
    vbase.resize(window.size());
    for (std::size_t w = 0; w < window.size(); ++w)
      vbase[w] = layout.grid_offset(v, gr, layout.outer(gr, window[w]));
    const float* kt_slot = kt_all + (b * hkv + kvh) * layout.slot(dk) + dk * gr.first;
    const QStored* qh = q.data + b * q.stride[0] + h * q.stride[N - 2];
    const VStored* vh = v.data + b * v.stride[0] + kvh * v.stride[N - 2];
    OStored* oh = out.data + b * out.stride[0] + h * out.stride[N - 2];
    for (index_t u = u_begin; u < u_end; ++u) {
      c[R - 1] = u;
      scale_row<B>(qh + layout.grid_offset(q, gr, c), q.stride[N - 1], qrows + (u - u_begin) * dk, 1, dk, qscale);
    }
    // Scores, a window row (or G) at a time for every segment of the chunk:
    // neighbouring segments share most of their keys, so a row's keys are
    // read from memory once per chunk, not once per segment.
    for (index_t w0 = 0; w0 < wrows; w0 += row_block) {
      const index_t rows_here = std::min(row_block, wrows - w0);
      for (const segment& sg : segments)
        with_count<segment_queries>(sg.count, [&](auto tn) {
          with_count<segment_vectors>(static_cast<int>(sg.run / W), [&](auto vn) {
            constexpr int T = decltype(tn)::value, NV = decltype(vn)::value;
            constexpr int G = std::clamp(8 / (T * NV), 1, 4);  // G T NV <= segment_accumulators
            const index_t lds = wrows * sg.run;
            if constexpr (T * NV <= segment_accumulators)  // (segments never have more)
              for_each_block<G>(rows_here, [&](index_t g0, auto gn) {
              const float* kt[decltype(gn)::value];
              for (int g = 0; g < decltype(gn)::value; ++g)
                kt[g] = kt_slot + window[w0 + g0 + g] * dk * gr.pitch + pad + sg.xlo;
              segment_score_block<B, decltype(gn)::value, T, NV>(qrows + (sg.u0 - u_begin) * dk, dk, kt, gr.pitch,
                                                                 s + sg.scores + (w0 + g0) * sg.run, lds);
            });
          });
        });
    }
    // The pairs outside each query's own window removed, one softmax a query.
    float m[segment_chunk], l[segment_chunk];  // per query of the item
    for (const segment& sg : segments)
      for (int t = 0; t < sg.count; ++t) {
        const index_t lds = wrows * sg.run;
        float* row = s + sg.scores + t * lds;
        for (index_t w = 0; w < wrows; ++w) {
          std::fill(row + w * sg.run, row + w * sg.run + (sg.first[t] - sg.xlo), removed);
          std::fill(row + w * sg.run + (sg.last[t] - sg.xlo), row + (w + 1) * sg.run, removed);
        }
        std::tie(m[sg.u0 - u_begin + t], l[sg.u0 - u_begin + t]) = softmax_row<B>(row, lds);
      }
    // Values, read in place a window row at a time as the keys were (keys
    // past the row's end, in the union's last vector, have p = 0 and are
    // not read).
    std::fill_n(o, queries * dv, 0.0f);
    for (index_t w = 0; w < wrows; ++w)
      for (const segment& sg : segments) {
        const index_t keys = std::min(sg.run, members - sg.xlo), lds = wrows * sg.run;
        const float* p = s + sg.scores + w * sg.run;
        const VStored* vrow = vh + vbase[w] + sg.xlo * vstep;
        float* os = o + (sg.u0 - u_begin) * dv;
        if (finite) {
          with_count<segment_queries>(sg.count, [&](auto tn) {
            constexpr int T = decltype(tn)::value;
            for_each_even_block<segment_value_vecs<B, T>>(dv / W, [&](index_t cv, auto vecs) {
              value_block<B, T, decltype(vecs)::value>(p, 1, lds, vrow + cv * W, vstep, keys, os + cv * W, dv);
            });
          });
        } else {  // each query over its own window only: 0 * NaN of a masked pair would reach the row
          for (int t = 0; t < sg.count; ++t) {
            const index_t a = sg.first[t] - sg.xlo, n = sg.last[t] - sg.first[t];
            for_each_even_block<segment_value_vecs<B, 1>>(dv / W, [&](index_t cv, auto vecs) {
              value_block<B, 1, decltype(vecs)::value>(p + t * lds + a, 1, lds, vrow + a * vstep + cv * W, vstep, n,
                                                       os + t * dv + cv * W, dv);
            });
          }
        }
      }
    for (index_t u = u_begin; u < u_end; ++u) {
      c[R - 1] = u;
      const row_result res = finish_row(m[u - u_begin], l[u - u_begin]);
      scale_row<B>(o + (u - u_begin) * dv, 1, oh + layout.grid_offset(out, gr, c), out.stride[N - 1], dv,
                   res.inverse_sum);
      if (!lse.empty())
        lse.data[b * lse.stride[0] + h * lse.stride[N - 2] + layout.grid_offset(lse, gr, c)] = res.lse;
    }
  });
}

// The three kernels: query tiles over the core's GEMM micro-kernels (any
// window; they compute the union of a tile's windows), the offset
// micro-kernels (exact windows; the whole window's scores in one tile), or
// the segment micro-kernel (a few queries along a row and the union of their
// windows in whole vectors of keys, for small windows; where its values
// cannot be read in place it falls back to the offsets).
enum class neighborhood_kernel { tiles, offsets, segments };

// Offsets where a query vector's S^T tile (the window's volume x W floats)
// fits in half of a 32 KiB L1: measured (bench/neighborhood_bench.cpp, Zen 4,
// AVX-512) they beat the tiles at K = 7 and 13 in 2-D and at (3, 7, 7) in 3-D
// (1.2-1.5x), and lose at K = 31 (0.9x) and in 1-D at K = 2049 (0.6x), where
// the tiles' union of windows is a small overhead and their register-blocked
// GEMM kernels need far fewer loads per FMA.
inline constexpr index_t offset_tile_floats = 4096;
// The segments wherever they apply (a query's window along the last
// dimension within segment_vectors vectors, values read in place) and the
// window has at most segment_window_rows rows or would take the offsets:
// measured faster than the offsets at K = 7 and 13 on AVX2 and AVX-512, even
// where they compute 16 keys per window row for 7 (AVX-512, 96 x 96, K = 7:
// 29-32 -> 26.5 ms), and than the tiles at K = 31 (AVX2, 96 x 96, 2 threads:
// 357-420 -> 273-300 ms; AVX-512 alike) and K = (7, 31) (122 -> 73 ms); the
// tiles stay ahead at K = (63, 13) (383 against 404 ms).
inline constexpr index_t segment_window_rows = 32;
template <class Backend, std::size_t R>
neighborhood_kernel choose_neighborhood_kernel(const std::array<neighborhood_dim, R>& dims, bool segments_apply) {
  const index_t W = static_cast<index_t>(Backend::width);
  index_t rows = 1;
  for (std::size_t d = 0; d + 1 < R; ++d) rows *= dims[d].kernel;
  const index_t floats = W * rows * dims[R - 1].kernel;
  if (segments_apply && (floats <= offset_tile_floats || rows <= segment_window_rows))
    return neighborhood_kernel::segments;
  return floats > offset_tile_floats ? neighborhood_kernel::tiles : neighborhood_kernel::offsets;
}

// neighborhood_attention with the kernel chosen (by choose_neighborhood_kernel
// when kernel is empty; tests run both).
template <simd_backend Backend, std::size_t N, std::size_t R, executor Exec, class Q, class K, class V, class O>
void neighborhood_run(strided_view<const Q, N> q, strided_view<const K, N> k, strided_view<const V, N> v,
                      strided_view<O, N> out, strided_view<float, N - 1> lse, const neighborhood_options<R>& opt,
                      const Exec& exec, std::optional<neighborhood_kernel> kernel) {
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
  const bool segments = detail::segments_apply<Backend>(opt.dims, v);
  const neighborhood_kernel chosen = kernel.value_or(choose_neighborhood_kernel<Backend>(opt.dims, segments));
  if (chosen == neighborhood_kernel::segments && segments) {
    neighborhood_segments<Backend>(q, k, v, out, lse, opt.dims, scale, exec);
    return;
  }
  if (chosen != neighborhood_kernel::tiles) {  // offsets, or segments where they do not apply
    neighborhood_offsets<Backend>(q, k, v, out, lse, opt.dims, scale, exec);
    return;
  }

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

}  // namespace detail

// Neighborhood attention of rank R = N - 3 (DESIGN §2):
//   q (B, X[, Y[, Z]], Hq, Dk), k and v (B, X[, Y[, Z]], Hkv, Dk|Dv)
//   -> out (B, X[, Y[, Z]], Hq, Dv), lse (B, X[, Y[, Z]], Hq) or empty.
// Any strides; GQA (Hq % Hkv == 0); per-dimension kernel, dilation, stride
// and causal flag. Extra memory: one packed copy of k, and of v except
// under the segment kernel (and of q and out for windows too large for the
// offset and segment kernels).
template <simd_backend Backend = default_backend, std::size_t N, std::size_t R, executor Exec = serial>
void neighborhood_attention(strided_view<const float, N> q, strided_view<const float, N> k,
                            strided_view<const float, N> v, strided_view<float, N> out,
                            strided_view<float, N - 1> lse, const neighborhood_options<R>& opt,
                            const Exec& exec = {}) {
  detail::neighborhood_run<Backend>(q, k, v, out, lse, opt, exec, std::nullopt);
}

// The same with tensors stored in 16 bits (README, "Reduced precision"):
// q, k, v and out each float, attn::float16 or attn::bfloat16. The kernels
// already copy their inputs into packed fp32 tiles, which is where 16-bit
// values are widened (the segment kernel's values as its P V loads them);
// out is rounded once when stored.
template <simd_backend Backend = default_backend, std::size_t N, std::size_t R, executor Exec = serial, class Q,
          class K, class V, class O>
  requires mixed_storage<Q, K, V, O>
void neighborhood_attention(strided_view<Q, N> q, strided_view<K, N> k, strided_view<V, N> v,
                            strided_view<O, N> out, strided_view<float, N - 1> lse,
                            const neighborhood_options<R>& opt, const Exec& exec = {}) {
  detail::neighborhood_run<Backend>(detail::as_input(q), detail::as_input(k), detail::as_input(v), out, lse, opt,
                                    exec, std::nullopt);
}

}  // namespace attn
