// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
// A user's program built against attn by tests/packaging/{find_package,
// add_subdirectory}: one small attention call whose output must be finite.
#include <attn/attn.hpp>
#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  constexpr attn::index_t batch = 1, nq = 3, nk = 5, hq = 2, hkv = 1, dk = 8, dv = 4;
  std::vector<float> q(batch * nq * hq * dk), k(batch * nk * hkv * dk), v(batch * nk * hkv * dv);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.3f * static_cast<float>(i));
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.7f * static_cast<float>(i));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.01f * static_cast<float>(i);
  std::vector<float> out(batch * nq * hq * dv, NAN);

  attn::softmax_options options;
  options.causal = true;
#if defined(_OPENMP)  // find_package/CMakeLists.txt links OpenMP::OpenMP_CXX
  const attn::openmp exec{2};
#else
  const attn::serial exec;
#endif
  attn::attention(attn::bshd(q.data(), batch, nq, hq, dk), attn::bshd(k.data(), batch, nk, hkv, dk),
                  attn::bshd(v.data(), batch, nk, hkv, dv),
                  attn::bshd(out.data(), batch, nq, hq, dv), {}, options, exec);

  for (float x : out) {
    if (!std::isfinite(x)) {
      std::fprintf(stderr, "attn consumer: non-finite output\n");
      return 1;
    }
  }
  std::printf("attn %d.%d.%d, backend %s: out[0] = %g\n", ATTN_VERSION_MAJOR, ATTN_VERSION_MINOR,
              ATTN_VERSION_PATCH, attn::default_backend::name, static_cast<double>(out[0]));
  return 0;
}
