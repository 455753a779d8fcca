// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <atomic>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

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

// A persistent std::thread pool: threads - 1 workers, created once and joined
// by the destructor, plus the calling thread, which takes part in every loop.
// Indices go out one at a time from a shared counter (work items differ in
// cost under masks); between loops the workers sleep on a condition variable.
//  - Calls from several threads at once are serialised: one loop at a time.
//  - A call from inside a body (of this pool or any other) runs serially on
//    the calling thread, as nested OpenMP regions do by default: waiting for
//    workers that are busy with the outer loop would deadlock.
//  - If a body throws, the remaining indices are skipped and the first
//    exception is rethrown by parallel_for on the calling thread; the pool
//    stays usable.
//  - The workers inherit the CPU affinity of the thread that constructs the
//    pool. Under OMP_PROC_BIND an OpenMP region pins its master thread to one
//    core, and a pool constructed on that thread afterwards runs every worker
//    on that core (serving decode on 16 cores: no speedup at all; README,
//    "Serving decode"): construct it first, or on an unbound thread.
class thread_pool {
 public:
  // threads == 0 means std::thread::hardware_concurrency() (at least 1).
  explicit thread_pool(std::size_t threads = std::thread::hardware_concurrency())
      : threads_(threads > 0 ? threads
                             : std::max<std::size_t>(std::thread::hardware_concurrency(), 1)) {
    try {
      workers_.reserve(threads_ - 1);
      for (std::size_t t = 1; t < threads_; ++t) workers_.emplace_back([this] { work(); });
    } catch (...) {
      stop();  // the threads already started must be joined before unwinding
      throw;
    }
  }
  ~thread_pool() { stop(); }
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  std::size_t concurrency() const { return threads_; }

  template <class F>
  void parallel_for(std::size_t n, F&& body) const {
    if (workers_.empty() || n <= 1 || inside_body()) {
      for (std::size_t i = 0; i < n; ++i) body(i);
      return;
    }
    const index_body erased = std::ref(body);  // the workers call it without knowing F
    const std::lock_guard one_loop(caller_mutex_);
    {
      const std::lock_guard lock(mutex_);
      body_ = &erased;
      n_ = n;
      next_.store(0, std::memory_order_relaxed);
      failed_.store(false, std::memory_order_relaxed);
      busy_ = workers_.size();
      ++generation_;
    }
    wake_.notify_all();
    run_indices(erased, n);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    body_ = nullptr;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  // True on a thread while it runs the bodies of some pool's loop.
  static bool& inside_body() {
    static thread_local bool inside = false;
    return inside;
  }

  // Takes indices until they run out (or a body has thrown). Relaxed order
  // suffices: the loop is published to the workers, and their writes back to
  // the caller, through mutex_.
  void run_indices(const index_body& body, std::size_t n) const {
    inside_body() = true;
    for (std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
         i < n && !failed_.load(std::memory_order_relaxed);
         i = next_.fetch_add(1, std::memory_order_relaxed)) {
      try {
        body(i);
      } catch (...) {
        const std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
      }
    }
    inside_body() = false;
  }

  // A worker: sleeps until a new loop (generation) or stop, joins the loop,
  // and reports when its share is done. Every worker joins every loop, even
  // one with fewer indices than threads (it then finds the counter past n),
  // so that busy_ can count them all.
  void work() const {
    std::size_t seen = 0;
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      const index_body& body = *body_;
      const std::size_t n = n_;
      lock.unlock();
      run_indices(body, n);
      lock.lock();
      if (--busy_ == 0) done_.notify_one();
    }
  }

  void stop() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  std::size_t threads_;
  std::vector<std::thread> workers_;  // threads_ - 1
  mutable std::mutex caller_mutex_;   // one loop at a time
  // The current loop and the hand-shakes, guarded by mutex_ (the loop runs
  // outside it, sharing only next_ and failed_).
  mutable std::mutex mutex_;
  mutable std::condition_variable wake_;  // to workers: a new loop, or stop
  mutable std::condition_variable done_;  // to the caller: the last worker is done
  mutable const index_body* body_ = nullptr;
  mutable std::size_t n_ = 0;
  mutable std::size_t busy_ = 0;              // workers still in the current loop
  mutable std::size_t generation_ = 0;        // loops started
  mutable std::atomic<std::size_t> next_{0};  // the next index to hand out
  mutable std::atomic<bool> failed_{false};   // a body has thrown: skip the rest
  mutable std::exception_ptr error_;          // the first exception
  bool stopping_ = false;
};

}  // namespace attn
