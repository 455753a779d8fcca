// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <cstddef>
#include <functional>
#include <utility>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace attn {

// An executor runs `body(i)` for every i in [0, n), in any order, possibly
// concurrently, and returns when all calls have returned. `concurrency()` is
// the number of threads it will use; the core sizes its work split from it.
template <class E>
concept executor = requires(const E& e, std::size_t n, void (*body)(std::size_t)) {
  { e.concurrency() } -> std::convertible_to<std::size_t>;
  e.parallel_for(n, body);
};

// Runs everything on the calling thread.
struct serial {
  constexpr std::size_t concurrency() const { return 1; }
  template <class F>
  void parallel_for(std::size_t n, F&& body) const {
    for (std::size_t i = 0; i < n; ++i) body(i);
  }
};

// OpenMP with a dynamic schedule (work items differ in cost under masks).
// threads == 0 means the OpenMP default (OMP_NUM_THREADS or all cores).
struct openmp {
  int threads = 0;

  std::size_t concurrency() const {
#if defined(_OPENMP)
    return static_cast<std::size_t>(threads > 0 ? threads : omp_get_max_threads());
#else
    return 1;
#endif
  }

  template <class F>
  void parallel_for(std::size_t n, F&& body) const {
#if defined(_OPENMP)
    const long count = static_cast<long>(n);
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(concurrency()))
    for (long i = 0; i < count; ++i) body(static_cast<std::size_t>(i));
#else
    static_assert(sizeof(F) == 0,
                  "attn::openmp needs OpenMP: link attn::openmp-enabled code with "
                  "OpenMP::OpenMP_CXX (or compile with -fopenmp), or use attn::serial");
#endif
  }
};

// The caller's own thread pool: `run(n, body)` must call body(i) once for each
// i in [0, n) (on any threads) and return when all are done, e.g. a wrapper
// around tbb::parallel_for or a pool's bulk submit.
using index_body = std::function<void(std::size_t)>;

template <class Run>
  requires std::invocable<const Run&, std::size_t, const index_body&>
struct parallel_for_executor {
  std::size_t threads;
  Run run;

  std::size_t concurrency() const { return threads; }
  template <class F>
  void parallel_for(std::size_t n, F&& body) const {
    const index_body erased = std::ref(body);
    run(n, erased);
  }
};

template <class Run>
parallel_for_executor(std::size_t, Run) -> parallel_for_executor<Run>;

}  // namespace attn
