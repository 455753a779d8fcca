// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>

#include "attn/core/tensor.hpp"
#include "reference/random.hpp"
#include "reference/softmax_reference.hpp"

// The fp64 oracle of latent attention (DESIGN §2, "Latent") and the
// contiguous cache a paged one stands for, written from the definitions and
// not from the library's code.
namespace attn::ref {

// Softmax attention of one shared kv head: the keys are the cache rows
// (B, Nk, 1, Dc + Dr), the values the first dc channels of the same rows.
// Sequence b sees its first lengths[b] keys (every key when lengths is
// empty); causal, query i of Nq sees keys j <= i + lengths[b] - Nq.
inline softmax_result latent_attention(view4<const float> q, view4<const float> cache, index_t dc,
                                       double scale, std::span<const std::int32_t> lengths,
                                       bool causal) {
  view4<const float> values = cache;
  values.extent[3] = dc;
  const index_t nq = q.extent[1], nk = cache.extent[1];
  auto keys_of = [&](index_t b) {
    return lengths.empty() ? nk : static_cast<index_t>(lengths[static_cast<std::size_t>(b)]);
  };
  auto allowed = [&](index_t b, index_t, index_t i, index_t j) {
    const index_t n = keys_of(b);
    return j < n && (!causal || j <= i + n - nq);
  };
  auto unmodified = [](double s, index_t, index_t, index_t, index_t) { return s; };
  return softmax_attention(q, cache, values, scale, nullptr, allowed, unmodified);
}

// The (B, max_pages * page_size, 1, D) cache of a paged one: key j < lengths[b]
// of sequence b is row j % page_size of page block_table(b, j / page_size);
// rows past a sequence's length hold NaN (they are never keys). A paged
// cache always has lengths: one per sequence, each within its pages.
inline tensor4 unpaged(view4<const float> pages, strided_view<const std::int32_t, 2> block_table,
                       std::span<const std::int32_t> lengths) {
  const index_t batch = block_table.extent[0], page_size = pages.extent[1], d = pages.extent[3];
  if (static_cast<index_t>(lengths.size()) != batch)
    throw std::invalid_argument("ref::unpaged: lengths must have one entry per sequence (" + std::to_string(batch) +
                                "), got " + std::to_string(lengths.size()));
  for (const std::int32_t n : lengths)
    if (n < 0 || n > block_table.extent[1] * page_size)
      throw std::invalid_argument("ref::unpaged: a length must be in [0, " +
                                  std::to_string(block_table.extent[1] * page_size) + "], got " + std::to_string(n));
  tensor4 cache = filled<4>({batch, block_table.extent[1] * page_size, 1, d}, bshd_memory,
                            std::numeric_limits<float>::quiet_NaN());
  for (index_t b = 0; b < batch; ++b)
    for (index_t j = 0; j < lengths[static_cast<std::size_t>(b)]; ++j)
      for (index_t c = 0; c < d; ++c)
        cache.view(b, j, 0, c) = pages(block_table(b, j / page_size), j % page_size, 0, c);
  return cache;
}

}  // namespace attn::ref
