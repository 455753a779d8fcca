// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string>

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
// sequence holds are given beside it (softmax_options::kv_lengths).
struct paged_kv {
  view4<const float> k_pages;                       // (P, page_size, Hkv, Dk)
  view4<const float> v_pages;                       // (P, page_size, Hkv, Dv)
  strided_view<const std::int32_t, 2> block_table;  // (B, max pages per sequence), unit inner stride
};

// A paged latent cache (FlashMLA's layout): one pool, keys and values are
// the same rows (latent attention).
struct paged_cache {
  view4<const float> pages;                        // (P, page_size, 1, Dc + Dr)
  strided_view<const std::int32_t, 2> block_table;  // (B, max pages per sequence), unit inner stride
};

namespace detail {

// Checks a block table of `batch` sequences over a pool of `pool_pages`
// pages of `page_size` rows against the sequences' key counts: the table's
// shape, each count in [0, capacity] and every page a sequence uses inside
// the pool (the entries past a sequence's length are never read). Returns
// the capacity, max_pages x page_size.
inline index_t check_block_table(const strided_view<const std::int32_t, 2>& table, index_t batch,
                                 index_t pool_pages, index_t page_size, std::span<const std::int32_t> lengths,
                                 const char* lengths_name) {
  require_view(table, "block_table", dims({{"B", batch}, {"max_pages", -1}}) + " with unit inner stride",
               table.extent[0] == batch && (table.extent[1] <= 1 || table.stride[1] == 1));
  require(table.extent[1] <= std::numeric_limits<index_t>::max() / page_size, "block_table",
          "a capacity max_pages x page_size that fits in 64 bits",
          std::to_string(table.extent[1]) + " pages of " + std::to_string(page_size));
  const index_t capacity = table.extent[1] * page_size;
  require(static_cast<index_t>(lengths.size()) == batch, lengths_name,
          "one key count per sequence (B = " + std::to_string(batch) + ") with a paged cache",
          std::to_string(lengths.size()) + " counts");
  for (index_t s = 0; s < batch; ++s) {
    const index_t length = lengths[static_cast<std::size_t>(s)];
    require(length >= 0 && length <= capacity, lengths_name,
            "each sequence's key count in [0, capacity = " + std::to_string(capacity) + "]",
            std::string(lengths_name) + "[" + std::to_string(s) + "] = " + std::to_string(length));
    for (index_t page = 0; page * page_size < length; ++page) {
      const std::int32_t at = table(s, page);
      require(at >= 0 && at < pool_pages, "block_table",
              "page indices in [0, P = " + std::to_string(pool_pages) + ")",
              "block_table(" + std::to_string(s) + ", " + std::to_string(page) + ") = " + std::to_string(at));
    }
  }
  return capacity;
}

// The logical (B, capacity, H, D) view of a page pool: extents as a
// contiguous cache, stride[0] steps from page to page (rows are found
// through the table).
inline view4<const float> logical_cache(const view4<const float>& pool, index_t batch, index_t capacity) {
  return {pool.data, {batch, capacity, pool.extent[2], pool.extent[3]}, pool.stride};
}

}  // namespace detail
}  // namespace attn
