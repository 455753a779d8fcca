// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>

#include "attn/core/error.hpp"
#include "attn/core/tensor.hpp"

// Argument checks shared by the public entry points. Each failure names the
// argument, what was expected and what was received.
namespace attn::detail {

// expected_shape is a message part (error.hpp): a string, or a callable
// that builds one when the check fails.
template <class T, std::size_t R, class Shape>
void require_view(const strided_view<T, R>& v, const char* name, const Shape& expected_shape, bool shape_ok) {
  const auto shape = [&] { return shape_string(v); };
  require(v.data != nullptr, name, "a non-null data pointer", "null");
  require(shape_ok, name, [&] { return concat("shape ", message_part(expected_shape)); }, shape);
  for (std::size_t r = 0; r < R; ++r) {
    require(v.extent[r] >= 0, name, "non-negative extents", shape);
    require(v.stride[r] >= 0, name, "non-negative strides",
            [&] { return concat("stride ", v.stride[r], " in dimension ", r); });
  }
  require(v.size() >= 0, name, "an element count that fits in 64 bits", shape);
}

// A written view must not map two elements to one address. Checked by a
// sufficient rule that every real layout meets: with dimensions sorted by
// stride, each stride exceeds the span of the dimensions inside it.
template <class T, std::size_t R>
void require_distinct(const strided_view<T, R>& v, const char* name) {
  if (v.size() <= 1) return;
  std::array<std::size_t, R> order{};
  for (std::size_t r = 0; r < R; ++r) order[r] = r;
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return v.stride[a] < v.stride[b]; });
  index_t inner_span = 0;  // offset of the last element of the inner dimensions
  for (std::size_t r : order) {
    if (v.extent[r] <= 1) continue;
    require(v.stride[r] > inner_span, name, "strides that map every element to its own address (it is written)",
            [&] { return concat("stride ", v.stride[r], " in dimension ", r, " inside a span of ", inner_span + 1); });
    inner_span += (v.extent[r] - 1) * v.stride[r];
  }
}

// The memory a view spans, for the overlap checks of written views.
struct named_memory {
  std::uintptr_t begin = 0, end = 0;  // [begin, end) bytes; empty: nothing to overlap
  const char* name = "";

  template <class T, std::size_t R>
  named_memory(const strided_view<T, R>& view, const char* view_name) : name(view_name) {
    if (view.empty() || view.size() == 0) return;
    begin = reinterpret_cast<std::uintptr_t>(view.data);
    end = begin + static_cast<std::uintptr_t>(view.span()) * sizeof(T);
  }
};

// The memory of a written view must not overlap an input's.
inline void require_disjoint(const named_memory& written, const named_memory& input) {
  require(written.begin == written.end || input.begin == input.end || written.end <= input.begin ||
              input.end <= written.begin,
          written.name, [&] { return concat("memory disjoint from ", input.name); }, "overlapping buffers");
}
// The same for two views.
template <class T, class U, std::size_t R, std::size_t S>
void require_disjoint(const strided_view<T, R>& written, const char* written_name,
                      const strided_view<U, S>& other, const char* other_name) {
  require_disjoint(named_memory(written, written_name), named_memory(other, other_name));
}

inline std::string dims(std::initializer_list<std::pair<const char*, index_t>> named) {
  std::string s = "(";
  bool first = true;
  for (const auto& [n, value] : named) {
    if (!first) s += ", ";
    first = false;
    s += n;
    if (value >= 0) {
      s += '=';
      s += std::to_string(value);
    }
  }
  return s + ")";
}

}  // namespace attn::detail
