// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "attn/core/tensor.hpp"

// Seeded test tensors: BSHD views over any memory order (BSHD, BHSD, or one
// whose innermost stride is not 1), with padding between rows, heads and
// sequences so that strides are not contiguous. Padding is filled with a
// chosen value: NaN for inputs (a kernel that reads padding poisons its
// output), a sentinel for outputs (a kernel that writes padding is caught).
namespace attn::ref {

// splitmix64: the same stream on every platform and standard library.
class rng {
 public:
  explicit rng(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi).
  float uniform(float lo = -1.0f, float hi = 1.0f) {
    const double u = static_cast<double>(next() >> 11) * 0x1.0p-53;
    return static_cast<float>(lo + (hi - lo) * u);
  }
  // Uniform integer in [lo, hi].
  index_t between(index_t lo, index_t hi) {
    return lo + static_cast<index_t>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }

 private:
  std::uint64_t state_;
};

// Memory layout of a rank-R tensor: `order` lists the logical dimensions from
// the outermost in memory to the innermost; `pad[l]` extra elements follow
// every block of memory level l (pad[R-1]: after each innermost row).
template <std::size_t R>
struct layout {
  std::array<int, R> order;
  std::array<index_t, R> pad{};
};

using layout4 = layout<4>;
using layout3 = layout<3>;

inline constexpr layout4 bshd_memory{{0, 1, 2, 3}, {}};
inline constexpr layout4 bhsd_memory{{0, 2, 1, 3}, {}};
// Innermost stride Hkv (or Hq): exercises the packing paths of the kernels.
inline constexpr layout4 bsdh_memory{{0, 1, 3, 2}, {}};
// BSHD with gaps after every row, head block and sequence block.
inline constexpr layout4 padded_bshd{{0, 1, 2, 3}, {5, 3, 2, 3}};
// BHSD with gaps.
inline constexpr layout4 padded_bhsd{{0, 2, 1, 3}, {1, 4, 7, 1}};
inline constexpr layout3 bsh_memory{{0, 1, 2}, {}};
inline constexpr layout3 padded_bsh{{0, 1, 2}, {2, 3, 1}};

// Owns its storage; the view points into it (moves keep it valid).
template <std::size_t R>
struct tensor {
  std::vector<float> storage;
  strided_view<float, R> view;

  tensor() = default;
  tensor(tensor&&) noexcept = default;
  tensor& operator=(tensor&&) noexcept = default;
  tensor(const tensor&) = delete;
  tensor& operator=(const tensor&) = delete;

  strided_view<const float, R> cview() const { return view; }
  float* data() { return view.data; }

  // True when every storage element the view does not address still holds
  // exactly `fill` (bitwise, so NaN fillers compare equal).
  bool padding_holds(float fill) const {
    std::vector<bool> addressed(storage.size(), false);
    for_each_offset([&](index_t off) { addressed[static_cast<std::size_t>(off)] = true; });
    std::uint32_t want;
    std::memcpy(&want, &fill, sizeof want);
    for (std::size_t n = 0; n < storage.size(); ++n) {
      if (addressed[n]) continue;
      std::uint32_t got;
      std::memcpy(&got, &storage[n], sizeof got);
      if (got != want) return false;
    }
    return true;
  }

  // f(offset) for every element of the view, offsets relative to view.data.
  template <class F>
  void for_each_offset(F&& f) const {
    const index_t n = view.size();
    for (index_t flat = 0; flat < n; ++flat) {
      index_t rest = flat, off = 0;
      for (std::size_t r = R; r-- > 0;) {
        off += (rest % view.extent[r]) * view.stride[r];
        rest /= view.extent[r];
      }
      f(off);
    }
  }
};

using tensor4 = tensor<4>;
using tensor3 = tensor<3>;

// A tensor of the given logical extents in memory layout `mem`; every element
// (padding included) holds `fill`.
template <std::size_t R>
tensor<R> filled(const std::array<index_t, R>& extent, const layout<R>& mem, float fill) {
  tensor<R> t;
  t.view.extent = extent;
  index_t pitch = 1;
  for (std::size_t l = R; l-- > 0;) {
    const int dim = mem.order[l];
    t.view.stride[static_cast<std::size_t>(dim)] = pitch;
    pitch = pitch * extent[static_cast<std::size_t>(dim)] + mem.pad[l];
  }
  // At least one element, so that an empty tensor still has a non-null data
  // pointer (null means "no tensor" to the library).
  t.storage.assign(static_cast<std::size_t>(std::max<index_t>(pitch, 1)), fill);
  t.view.data = t.storage.data();
  return t;
}

// Uniform values in [lo, hi) at every element of the view; padding holds NaN.
template <std::size_t R>
tensor<R> random(rng& g, const std::array<index_t, R>& extent, const layout<R>& mem,
                 float lo = -1.0f, float hi = 1.0f) {
  tensor<R> t = filled(extent, mem, std::numeric_limits<float>::quiet_NaN());
  t.for_each_offset([&](index_t off) { t.view.data[off] = g.uniform(lo, hi); });
  return t;
}

// (B, S, H, D) in BSHD memory, contiguous.
inline tensor4 random_bshd(rng& g, index_t b, index_t s, index_t h, index_t d) {
  return random<4>(g, {b, s, h, d}, bshd_memory);
}

// (B, S, H, D) logical, (B, H, S, D) in memory, contiguous.
inline tensor4 random_bhsd(rng& g, index_t b, index_t s, index_t h, index_t d) {
  return random<4>(g, {b, s, h, d}, bhsd_memory);
}

// A strided (non-contiguous) view with `pad` elements of NaN after every row,
// head block and sequence block.
inline tensor4 random_padded(rng& g, index_t b, index_t s, index_t h, index_t d, index_t pad = 3) {
  return random<4>(g, {b, s, h, d}, layout4{bshd_memory.order, {pad, pad, pad, pad}});
}

// Writes NaN at one element.
inline void inject_nan(view4<float> t, index_t b, index_t s, index_t h, index_t d) {
  t(b, s, h, d) = std::numeric_limits<float>::quiet_NaN();
}

// Writes NaN at every element of one row (b, s, h, :).
inline void inject_nan_row(view4<float> t, index_t b, index_t s, index_t h) {
  for (index_t d = 0; d < t.extent[3]; ++d) inject_nan(t, b, s, h, d);
}

// Varlen (packed) batches keep every sequence's tokens in one (1, T, H, D)
// tensor. packed(x): its (T, H, D) view, as varlen_attention takes it.
// token_rows(x, r0, n): tokens [r0, r0 + n) as a one-sequence (1, n, ...)
// view, the oracle's input for that sequence.
template <class T>
view3<T> packed(const view4<T>& x) {
  return {x.data, {x.extent[1], x.extent[2], x.extent[3]}, {x.stride[1], x.stride[2], x.stride[3]}};
}
template <class T>
view4<T> token_rows(const view4<T>& x, index_t r0, index_t n) {
  return {x.data + r0 * x.stride[1], {1, n, x.extent[2], x.extent[3]}, x.stride};
}
template <class T>
view3<T> token_rows(const view3<T>& x, index_t r0, index_t n) {
  return {x.data + r0 * x.stride[1], {1, n, x.extent[2]}, x.stride};
}

}  // namespace attn::ref
