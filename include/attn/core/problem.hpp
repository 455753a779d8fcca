// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <string>

#include "attn/core/tensor.hpp"
#include "attn/core/validate.hpp"

namespace attn::detail {

// The four views of an attention problem (DESIGN §1) and the extents every
// variant reads from them; each variant's problem adds its own options.
struct attention_views {
  view4<const float> q;  // (B, Nq, Hq, Dk)
  view4<const float> k;  // (B, Nk, Hkv, Dk)
  view4<const float> v;  // (B, Nk, Hkv, Dv)
  view4<float> out;      // (B, Nq, Hq, Dv)

  index_t batch() const { return q.extent[0]; }
  index_t nq() const { return q.extent[1]; }
  index_t hq() const { return q.extent[2]; }
  index_t dk() const { return q.extent[3]; }
  index_t nk() const { return k.extent[1]; }
  index_t hkv() const { return k.extent[2]; }
  index_t dv() const { return v.extent[3]; }
  index_t group() const { return hq() / hkv(); }
};

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
