// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
//
// attn_demo: one table per available variant. For each problem: attn's time
// and GFLOP/s, its max error against the fp64 oracle, and the same problem
// through the naive Eigen implementation (three operations per head).
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "attn/attn.hpp"
#include "baselines/naive_eigen.hpp"
#include "flops.hpp"
#include "reference/softmax_reference.hpp"

namespace {

using attn::index_t;

// Median wall time of `runs` calls after one warm-up.
double median_seconds(const std::function<void()>& f, int runs) {
  f();
  std::vector<double> t;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + runs / 2, t.end());
  return t[static_cast<std::size_t>(runs / 2)];
}

struct case_spec {
  const char* name;
  index_t nq, nk, hq, hkv, d;
  bool causal;
  attn::index_t window = 0;  // > 0: sliding window {window - 1, 0}
  attn::index_t documents = 0;  // > 0: that many packed documents of equal length
  bool softcap_alibi = false;   // softcap 30 and ALiBi
};

void run_case(const case_spec& c, int threads) {
  std::vector<float> q(c.nq * c.hq * c.d), k(c.nk * c.hkv * c.d), v(c.nk * c.hkv * c.d);
  std::vector<float> out(c.nq * c.hq * c.d), out_naive(out.size()), lse(c.nq * c.hq);
  std::srand(7);
  for (auto* t : {&q, &k, &v})
    for (float& x : *t) x = static_cast<float>(std::rand()) / RAND_MAX * 2.0f - 1.0f;
  const auto qv = attn::bshd<const float>(q.data(), 1, c.nq, c.hq, c.d);
  const auto kv = attn::bshd<const float>(k.data(), 1, c.nk, c.hkv, c.d);
  const auto vv = attn::bshd<const float>(v.data(), 1, c.nk, c.hkv, c.d);
  attn::softmax_options opt;
  opt.causal = c.causal;
  if (c.window > 0) opt.window = std::array<index_t, 2>{c.window - 1, 0};
  std::vector<std::int32_t> ids;
  for (index_t j = 0; j < c.nk && c.documents > 0; ++j)
    ids.push_back(static_cast<std::int32_t>(j * c.documents / c.nk));
  opt.document_ids = ids;
  if (c.softcap_alibi) {
    opt.softcap = 30.0f;
    opt.alibi = true;
  }

  const double t_attn = median_seconds(
      [&] {
        attn::attention(qv, kv, vv, attn::bshd(out.data(), 1, c.nq, c.hq, c.d),
                        attn::bsh(lse.data(), 1, c.nq, c.hq), opt, attn::openmp{threads});
      },
      5);
  Eigen::setNbThreads(threads);
  attn::bench::row_matrix scores;
  const double t_naive = median_seconds(
      [&] {
        attn::bench::naive_eigen_attention(qv, kv, vv,
                                           attn::bshd(out_naive.data(), 1, c.nq, c.hq, c.d),
                                           opt, scores);
      },
      3);

  const attn::ref::softmax_result ref = attn::ref::softmax_attention(qv, kv, vv, opt);
  double err = 0, err_naive = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    err = std::max(err, std::fabs(out[i] - ref.out[i]));
    err_naive = std::max(err_naive, std::fabs(out_naive[i] - ref.out[i]));
  }
  const double gflop = attn::bench::attention_flops(1, c.nq, c.nk, c.hq, c.d, c.d, opt) * 1e-9;
  std::printf("| %-40s | %8.2f | %7.1f | %8.1e | %8.2f | %7.1f | %8.1e | %5.2fx |\n", c.name,
              t_attn * 1e3, gflop / t_attn, err, t_naive * 1e3, gflop / t_naive, err_naive,
              t_naive / t_attn);
}

}  // namespace

int main() {
  const int threads = static_cast<int>(attn::openmp{}.concurrency());
  std::printf("attn demo: backend %s, %d threads (max error: |out - fp64 oracle|)\n\n",
              attn::default_backend::name, threads);
  std::printf("softmax (dense)\n\n");
  std::printf("| %-40s | %8s | %7s | %8s | %8s | %7s | %8s | %6s |\n", "problem", "attn ms",
              "GFLOP/s", "max err", "Eigen ms", "GFLOP/s", "max err", "speedup");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|%s|\n", std::string(42, '-').c_str(),
              std::string(10, '-').c_str(), std::string(9, '-').c_str(),
              std::string(10, '-').c_str(), std::string(10, '-').c_str(),
              std::string(9, '-').c_str(), std::string(10, '-').c_str(),
              std::string(8, '-').c_str());
  const case_spec cases[] = {
      {"prefill N=1024 H=8 d=64", 1024, 1024, 8, 8, 64, false},
      {"prefill N=1024 H=8 d=64 causal", 1024, 1024, 8, 8, 64, true},
      {"prefill N=1024 Hq=32 Hkv=8 d=128 causal", 1024, 1024, 32, 8, 128, true},
      {"decode Nkv=4096 Hq=32 Hkv=8 d=128", 1, 4096, 32, 8, 128, false},
      {"prefill N=2048 H=8 d=64 window 256", 2048, 2048, 8, 8, 64, true, 256},
      {"prefill N=2048 H=8 d=64 8 docs causal", 2048, 2048, 8, 8, 64, true, 0, 8},
      {"prefill N=1024 H=8 d=128 causal cap ALiBi", 1024, 1024, 8, 8, 128, true, 0, 0, true},
  };
  for (const case_spec& c : cases) run_case(c, threads);
  std::printf("\nNeighborhood attention: examples/04_neighborhood_2d.cpp and "
              "bench/neighborhood_bench.cpp; block-sparse, linear and latent are not implemented "
              "yet.\n");
  return 0;
}
