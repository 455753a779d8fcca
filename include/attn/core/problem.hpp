// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
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

// The four views of an attention problem (DESIGN §1) and the extents every
// variant reads from them; each variant's problem adds its own options.
struct attention_views {
  view4<const float> q;  // (B, Nq, Hq, Dk)
  view4<const float> k;  // (B, Nk, Hkv, Dk)
  view4<const float> v;  // (B, Nk, Hkv, Dv)
  view4<float> out;      // (B, Nq, Hq, Dv)
  // Paged k and v: their extents are the logical (B, Nk, Hkv, D) with Nk the
  // table's capacity, stride[0] steps from page to page and stride[1] from
  // row to row inside a page.
  kv_pages pages{};

  index_t batch() const { return q.extent[0]; }
  index_t nq() const { return q.extent[1]; }
  index_t hq() const { return q.extent[2]; }
  index_t dk() const { return q.extent[3]; }
  index_t nk() const { return k.extent[1]; }
  index_t hkv() const { return k.extent[2]; }
  index_t dv() const { return v.extent[3]; }
  index_t group() const { return hq() / hkv(); }

  // Key row j of sequence b and kv head g of k or v: contiguous, or through
  // the page table. Rows [j, j + n) are evenly strided when no page boundary
  // lies between (pages.contiguous).
  const float* kv_row(const view4<const float>& x, index_t b, index_t j, index_t g) const {
    if (!pages.paged()) return x.row(b, j, g);
    const index_t page = pages.table[b * pages.table_stride + j / pages.page_size];
    return x.data + page * x.stride[0] + (j % pages.page_size) * x.stride[1] + g * x.stride[2];
  }
};

// Checks lse (B, Nq, H) when given: its shape, that it maps each element to
// its own address, and that it overlaps none of `others` (out and the
// inputs); throws attn::error naming the argument.
inline void check_lse(view3<float> lse, const std::array<index_t, 3>& shape, const char* heads,
                      std::initializer_list<std::pair<view4<const float>, const char*>> others) {
  if (lse.empty()) return;
  require_view(lse, "lse", dims({{"B", shape[0]}, {"Nq", shape[1]}, {heads, shape[2]}}), lse.extent == shape);
  require_distinct(lse, "lse");
  for (const auto& [view, name] : others) require_disjoint(lse, "lse", view, name);
}

// Checks the shapes of q, k, v and out against each other (GQA: Hkv divides
// Hq), and that out maps each element to its own address and overlaps none
// of the inputs; throws attn::error naming the argument.
inline attention_views checked_views(view4<const float> q, view4<const float> k, view4<const float> v,
                                     view4<float> out) {
  const index_t b = q.extent[0], nq = q.extent[1], hq = q.extent[2], dk = q.extent[3];
  require_view(q, "q", "(B, Nq, Hq, Dk) with Hq, Dk >= 1", hq >= 1 && dk >= 1);
  const index_t nk = k.extent[1], hkv = k.extent[2];
  require_view(k, "k", dims({{"B", b}, {"Nk", -1}, {"Hkv", -1}, {"Dk", dk}}) + " with Hkv >= 1",
               k.extent[0] == b && hkv >= 1 && k.extent[3] == dk);
  require(hq % hkv == 0, "k", "a kv head count dividing Hq = " + std::to_string(hq) + " (GQA)",
          "Hkv = " + std::to_string(hkv));
  const index_t dv = v.extent[3];
  require_view(v, "v", dims({{"B", b}, {"Nk", nk}, {"Hkv", hkv}, {"Dv", -1}}) + " with Dv >= 1",
               v.extent[0] == b && v.extent[1] == nk && v.extent[2] == hkv && dv >= 1);
  require_view(out, "out", dims({{"B", b}, {"Nq", nq}, {"Hq", hq}, {"Dv", dv}}),
               out.extent == std::array<index_t, 4>{b, nq, hq, dv});
  require_distinct(out, "out");
  require_disjoint(out, "out", q, "q");
  require_disjoint(out, "out", k, "k");
  require_disjoint(out, "out", v, "v");
  return {q, k, v, out};
}

}  // namespace attn::detail
