// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <utility>

#include "attn/core/error.hpp"
#include "attn/core/problem.hpp"
#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"

// KV cache views for serving: paged caches through a block table (vLLM,
// FlashMLA) and the checks every entry point that takes one makes. A paged
// cache is read in place: the core finds key j of sequence b through the
// table (attention_views::kv_row), and tiles never cross a page unless the
// page size forces it.
namespace attn {

// A paged K/V cache (vLLM's layout): pools of pages of page_size tokens and
// per sequence a row of the block table naming its pages in order; key j of
// sequence b is row j % page_size of page block_table(b, j / page_size).
// Pages may be shared between sequences and lie in any order. The keys each
// sequence holds are given beside it (softmax_options::kv_lengths). The
// pools are stored as K and V (float, float16 or bfloat16).
template <class K, class V = K>
struct typed_paged_kv {
  view4<const K> k_pages;                           // (P, page_size, Hkv, Dk)
  view4<const V> v_pages;                           // (P, page_size, Hkv, Dv)
  strided_view<const std::int32_t, 2> block_table;  // (B, max pages per sequence), unit inner stride
};
using paged_kv = typed_paged_kv<float>;

// A paged latent cache (FlashMLA's layout): one pool, keys and values are
// the same rows (latent attention), stored as T (float, float16, bfloat16).
template <class T>
struct typed_paged_cache {
  view4<const T> pages;                             // (P, page_size, 1, Dc + Dr)
  strided_view<const std::int32_t, 2> block_table;  // (B, max pages per sequence), unit inner stride
};
using paged_cache = typed_paged_cache<float>;

namespace detail {

// Checks a block table of `batch` sequences over a pool of `pool_pages`
// pages of `page_size` rows against the sequences' key counts: the table's
// shape, each count in [0, capacity] and every page a sequence uses inside
// the pool (the entries past a sequence's length are never read). Returns
// the capacity, max_pages x page_size.
inline index_t check_block_table(const strided_view<const std::int32_t, 2>& table, index_t batch,
                                 index_t pool_pages, index_t page_size, std::span<const std::int32_t> lengths,
                                 const char* lengths_name) {
  require_view(
      table, "block_table", [&] { return dims({{"B", batch}, {"max_pages", -1}}) + " with unit inner stride"; },
      table.extent[0] == batch && (table.extent[1] <= 1 || table.stride[1] == 1));
  require(table.extent[1] <= std::numeric_limits<index_t>::max() / page_size, "block_table",
          "a capacity max_pages x page_size that fits in 64 bits",
          [&] { return concat(table.extent[1], " pages of ", page_size); });
  const index_t capacity = table.extent[1] * page_size;
  require(static_cast<index_t>(lengths.size()) == batch, lengths_name,
          [&] { return concat("one key count per sequence (B = ", batch, ") with a paged cache"); },
          [&] { return concat(lengths.size(), " counts"); });
  for (index_t s = 0; s < batch; ++s) {
    const index_t length = lengths[static_cast<std::size_t>(s)];
    require(length >= 0 && length <= capacity, lengths_name,
            [&] { return concat("each sequence's key count in [0, capacity = ", capacity, "]"); },
            [&] { return concat(lengths_name, "[", s, "] = ", length); });
    for (index_t page = 0; page * page_size < length; ++page) {
      const std::int32_t at = table(s, page);
      require(at >= 0 && at < pool_pages, "block_table",
              [&] { return concat("page indices in [0, P = ", pool_pages, ")"); },
              [&] { return concat("block_table(", s, ", ", page, ") = ", at); });
    }
  }
  return capacity;
}

// The logical (B, capacity, H, D) view of a page pool: extents as a
// contiguous cache, stride[0] steps from page to page (rows are found
// through the table).
template <class T>
view4<const T> logical_cache(const view4<const T>& pool, index_t batch, index_t capacity) {
  return {pool.data, {batch, capacity, pool.extent[2], pool.extent[3]}, pool.stride};
}

// The sequence count B of B + 1 cumulative offsets (an error when empty).
inline index_t sequence_count(std::span<const std::int32_t> cu, const char* name) {
  require(!cu.empty(), name, "B + 1 offsets (cu_seqlens)", "an empty span");
  return static_cast<index_t>(cu.size()) - 1;
}

// cu_seqlens (B + 1): non-decreasing row offsets from >= 0 to <= rows (the
// packed tensor's T). Returns the longest sequence.

inline index_t check_cu_seqlens(std::span<const std::int32_t> cu, const char* name, index_t rows) {
  sequence_count(cu, name);
  require(cu[0] >= 0, name, "offsets >= 0", [&] { return concat(name, "[0] = ", cu[0]); });
  index_t longest = 0;
  for (std::size_t s = 1; s < cu.size(); ++s) {
    require(cu[s] >= cu[s - 1], name, "non-decreasing offsets",
            [&] { return concat(name, "[", s, "] = ", cu[s], " < ", cu[s - 1]); });
    longest = std::max<index_t>(longest, cu[s] - cu[s - 1]);
  }
  require(cu.back() <= rows, name, [&] { return concat("offsets up to the packed rows T = ", rows); },
          [&] { return concat(name, "[", cu.size() - 1, "] = ", cu.back()); });
  return longest;
}

// A packed (T, H, D) view as the (B, longest, H, D) batch of its sequences:
// batch stride 0, rows offset per sequence (sequence_layout::q_starts).
template <class T>
view4<T> packed_batch(const view3<T>& x, index_t batch, index_t longest) {
  return {x.data, {batch, longest, x.extent[1], x.extent[2]}, {0, x.stride[0], x.stride[1], x.stride[2]}};
}

// Packed queries: q (Tq, Hq, Dk), out (Tq, Hq, Dv), lse (Tq, Hq) or empty,
// checked against cu_seqlens_q, each other and the inputs, as the (B,
// longest, H, D) views of their sequences.
template <class Q, class O>
struct packed_queries {
  view4<const Q> q;
  view4<O> out;
  view3<float> lse;
};
template <class Q, class O>
packed_queries<Q, O> checked_packed_queries(view3<const Q> q, view3<O> out, strided_view<float, 2> lse,
                                            std::span<const std::int32_t> cu_seqlens_q, index_t dv,
                                            std::initializer_list<named_memory> inputs) {
  const index_t tq = q.extent[0], hq = q.extent[1];
  const index_t batch = sequence_count(cu_seqlens_q, "cu_seqlens_q");
  const index_t longest = check_cu_seqlens(cu_seqlens_q, "cu_seqlens_q", tq);
  const view4<const Q> rows = packed_batch(q, 1, tq);
  check_written(
      out, "out", [&] { return dims({{"Tq", tq}, {"Hq", hq}, {"Dv", dv}}); },
      out.extent == std::array<index_t, 3>{tq, hq, dv}, {{rows, "q"}});
  for (const named_memory& input : inputs) require_disjoint(named_memory(out, "out"), input);
  if (!lse.empty()) {
    check_written(
        lse, "lse", [&] { return dims({{"Tq", tq}, {"Hq", hq}}); }, lse.extent == std::array<index_t, 2>{tq, hq},
        {{rows, "q"}, {out, "out"}});
    for (const named_memory& input : inputs) require_disjoint(named_memory(lse, "lse"), input);
  }
  const view3<float> lse3 =
      lse.empty() ? view3<float>{} : view3<float>{lse.data, {batch, longest, hq}, {0, lse.stride[0], lse.stride[1]}};
  return {packed_batch(q, batch, longest), packed_batch(out, batch, longest), lse3};
}

}  // namespace detail
}  // namespace attn
