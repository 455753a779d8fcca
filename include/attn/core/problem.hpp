// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>

#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"

namespace attn::detail {

// Where the rows of a paged K/V cache live (vLLM, FlashMLA): key j of
// sequence b is row j % page_size of page table[b * table_stride + j /
// page_size] of a pool of pages. Without a table the cache is contiguous.
struct kv_pages {
  const std::int32_t* table = nullptr;
  index_t table_stride = 0;
  index_t page_size = 0;

  bool paged() const { return table != nullptr; }
  // True when keys [j0, j0 + keys) lie in one page (always, unpaged).
  bool contiguous(index_t j0, index_t keys) const {
    return !paged() || keys <= 0 || j0 / page_size == (j0 + keys - 1) / page_size;
  }
};

// Ragged batches (FlashAttention's varlen API, a KV cache filled to a
// different length per sequence): where sequence b's queries and keys lie
// and how many of them it has. Each pointer is optional; all null is the
// plain (B, Nq, ...) / (B, Nk, ...) batch.
struct sequence_layout {
  // (B + 1) cu_seqlens_q: sequence b's queries (and outputs, lse) are rows
  // [q_starts[b], q_starts[b + 1]) of packed (T, H, D) tensors, whose views
  // then have batch stride 0 and Nq = the longest sequence.
  const std::int32_t* q_starts = nullptr;
  const std::int32_t* k_starts = nullptr;   // (B + 1) cu_seqlens_k, likewise for k and v
  const std::int32_t* k_lengths = nullptr;  // (B) keys sequence b uses (seqused_k, cache lengths)
};

// The four views of an attention problem (DESIGN §1) and the extents every
// variant reads from them; each variant's problem adds its own options. Each
// tensor has its own storage type (README, "Reduced precision"): Q, K, V
// and O are float, float16 or bfloat16, and K, V may be int8 with scales.
template <class Q, class K, class V, class O>
struct typed_views {
  using q_type = Q;
  using k_type = K;
  using v_type = V;
  using out_type = O;

  view4<const Q> q;  // (B, Nq, Hq, Dk)
  view4<const K> k;  // (B, Nk, Hkv, Dk)
  view4<const V> v;  // (B, Nk, Hkv, Dv)
  view4<O> out;      // (B, Nq, Hq, Dv)
  // Paged k and v: their extents are the logical (B, Nk, Hkv, D) with Nk the
  // table's capacity, stride[0] steps from page to page and stride[1] from
  // row to row inside a page.
  kv_pages pages{};
  sequence_layout sequences{};
  // int8 k or v (attn::quantized): the fp32 scale of each row, indexed as
  // the rows (B, Nk, Hkv), stride 0 across heads when one scale serves a
  // token's every head; empty otherwise.
  view3<const float> k_scales{}, v_scales{};

  index_t batch() const { return q.extent[0]; }
  index_t nq() const { return q.extent[1]; }
  index_t hq() const { return q.extent[2]; }
  index_t dk() const { return q.extent[3]; }
  index_t nk() const { return k.extent[1]; }
  index_t hkv() const { return k.extent[2]; }
  index_t dv() const { return v.extent[3]; }
  index_t group() const { return hq() / hkv(); }
  bool ragged() const {
    return sequences.q_starts != nullptr || sequences.k_starts != nullptr || sequences.k_lengths != nullptr;
  }
  // Queries and keys of sequence b (at most nq() and nk()).
  index_t nq_of(index_t b) const {
    return sequences.q_starts ? sequences.q_starts[b + 1] - sequences.q_starts[b] : nq();
  }
  index_t nk_of(index_t b) const {
    if (sequences.k_lengths) return sequences.k_lengths[b];
    return sequences.k_starts ? sequences.k_starts[b + 1] - sequences.k_starts[b] : nk();
  }
  // Row of query i of sequence b (packed or batched), likewise for out.
  index_t q_index(index_t b, index_t i) const { return sequences.q_starts ? sequences.q_starts[b] + i : i; }
  const Q* q_row(index_t b, index_t i, index_t h) const { return q.row(b, q_index(b, i), h); }
  O* out_row(index_t b, index_t i, index_t h) const { return out.row(b, q_index(b, i), h); }

  // Key row j of sequence b and kv head g of k or v: contiguous, or through
  // the page table. Rows [j, j + n) are evenly strided when no page boundary
  // lies between (pages.contiguous).
  template <class T>
  const T* kv_row(const view4<const T>& x, index_t b, index_t j, index_t g) const {
    return kv_at(x, b, j, g);
  }
  // The scale of key j of sequence b, kv head g, of an int8 k or v.
  const float& kv_scale(const view3<const float>& scales, index_t b, index_t j, index_t g) const {
    return *kv_at(scales, b, j, g);
  }

 private:
  // Element (b, j, g, 0) of a view indexed as the keys (k, v, their scales).
  template <class T, std::size_t R>
  const T* kv_at(const strided_view<const T, R>& x, index_t b, index_t j, index_t g) const {
    if (!pages.paged()) {
      const index_t row = sequences.k_starts ? sequences.k_starts[b] + j : j;
      return x.data + b * x.stride[0] + row * x.stride[1] + g * x.stride[2];
    }
    const index_t page = pages.table[b * pages.table_stride + j / pages.page_size];
    return x.data + page * x.stride[0] + (j % pages.page_size) * x.stride[1] + g * x.stride[2];
  }
};

// A view read only, whatever its element's constness (the typed entry
// points take views of const or mutable elements alike).
template <class T, std::size_t R>
strided_view<const std::remove_const_t<T>, R> as_input(const strided_view<T, R>& v) {
  return {v.data, v.extent, v.stride};
}

// The all-fp32 problem every variant takes.
using attention_views = typed_views<float, float, float, float>;

// Checks a view the call writes (out, lse): its shape, that it maps each
// element to its own address, and that it overlaps none of the inputs.
// expected_shape is a message part (error.hpp).
template <class T, std::size_t R, class Shape>
void check_written(const strided_view<T, R>& written, const char* name, const Shape& expected_shape,
                   bool shape_ok, std::initializer_list<named_memory> inputs) {
  require_view(written, name, expected_shape, shape_ok);
  require_distinct(written, name);
  for (const named_memory& input : inputs) require_disjoint(named_memory(written, name), input);
}

// Checks lse (B, Nq, H) when given: its shape, that it maps each element to
// its own address, and that it overlaps none of `others` (out and the
// inputs); throws attn::error naming the argument.
inline void check_lse(view3<float> lse, const std::array<index_t, 3>& shape, const char* heads,
                      std::initializer_list<named_memory> others) {
  if (lse.empty()) return;
  check_written(
      lse, "lse", [&] { return dims({{"B", shape[0]}, {"Nq", shape[1]}, {heads, shape[2]}}); }, lse.extent == shape,
      others);
}

// Checks the shapes of q, k, v and out against each other (GQA: Hkv divides
// Hq), and that out maps each element to its own address and overlaps none
// of the inputs; throws attn::error naming the argument.
template <class Q, class K, class V, class O>
typed_views<Q, K, V, O> checked_views(view4<const Q> q, view4<const K> k, view4<const V> v, view4<O> out) {
  const index_t b = q.extent[0], nq = q.extent[1], hq = q.extent[2], dk = q.extent[3];
  require_view(q, "q", "(B, Nq, Hq, Dk) with Hq, Dk >= 1", hq >= 1 && dk >= 1);
  const index_t nk = k.extent[1], hkv = k.extent[2];
  require_view(
      k, "k", [&] { return dims({{"B", b}, {"Nk", -1}, {"Hkv", -1}, {"Dk", dk}}) + " with Hkv >= 1"; },
      k.extent[0] == b && hkv >= 1 && k.extent[3] == dk);
  require(hq % hkv == 0, "k", [&] { return concat("a kv head count dividing Hq = ", hq, " (GQA)"); },
          [&] { return concat("Hkv = ", hkv); });
  const index_t dv = v.extent[3];
  require_view(
      v, "v", [&] { return dims({{"B", b}, {"Nk", nk}, {"Hkv", hkv}, {"Dv", -1}}) + " with Dv >= 1"; },
      v.extent[0] == b && v.extent[1] == nk && v.extent[2] == hkv && dv >= 1);
  check_written(
      out, "out", [&] { return dims({{"B", b}, {"Nq", nq}, {"Hq", hq}, {"Dv", dv}}); },
      out.extent == std::array<index_t, 4>{b, nq, hq, dv}, {{q, "q"}, {k, "k"}, {v, "v"}});
  return {q, k, v, out};
}

}  // namespace attn::detail
