// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
// Built by the ctest tests isa.<isa>.compile (tests/CMakeLists.txt) with one
// ISA's flags and no -march: proves the headers compile for that ISA and that
// attn::default_backend follows the flags. isa.sse4_2.run also runs it and
// compares the SIMD result with the scalar backend's.
#include <algorithm>
#include <attn/attn.hpp>
#include <cmath>
#include <cstdio>
#include <vector>

#ifndef ATTN_EXPECTED_WIDTH
#error "compile with -DATTN_EXPECTED_WIDTH=<floats per vector of the target ISA>"
#endif
static_assert(attn::default_backend::width == ATTN_EXPECTED_WIDTH,
              "attn::default_backend does not use the widest vectors the ISA flags enable");

namespace {

template <class Backend>
std::vector<float> run(bool causal) {
  constexpr attn::index_t batch = 2, nq = 19, nk = 37, hq = 4, hkv = 2, dk = 24, dv = 20;
  std::vector<float> q(batch * nq * hq * dk), k(batch * nk * hkv * dk), v(batch * nk * hkv * dv);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.37f * static_cast<float>(i));
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.11f * static_cast<float>(i));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.05f * static_cast<float>(i));
  std::vector<float> out(batch * nq * hq * dv), lse(batch * nq * hq);
  attn::softmax_options options;
  options.causal = causal;
  attn::attention<Backend>(
      attn::bshd(q.data(), batch, nq, hq, dk), attn::bshd(k.data(), batch, nk, hkv, dk),
      attn::bshd(v.data(), batch, nk, hkv, dv), attn::bshd(out.data(), batch, nq, hq, dv),
      attn::bsh(lse.data(), batch, nq, hq), options);
  out.insert(out.end(), lse.begin(), lse.end());
  return out;
}

}  // namespace

int main() {
  for (bool causal : {false, true}) {
    const std::vector<float> simd = run<attn::default_backend>(causal);
    const std::vector<float> scalar = run<attn::backend::scalar>(causal);
    float max_error = 0.0f;
    for (std::size_t i = 0; i < simd.size(); ++i) {
      if (!std::isfinite(simd[i])) {
        std::fprintf(stderr, "%s: non-finite output at %zu\n", attn::default_backend::name, i);
        return 1;
      }
      max_error = std::max(max_error, std::abs(simd[i] - scalar[i]));
    }
    std::printf("%s (causal %d): max |simd - scalar| = %g\n", attn::default_backend::name, causal,
                static_cast<double>(max_error));
    if (max_error > 1e-4f) return 1;
  }
  return 0;
}
