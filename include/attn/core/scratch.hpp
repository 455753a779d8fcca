// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace attn::detail {

// Per-thread scratch for tiles: grows to the largest tile a thread has needed
// and is reused across calls, so a work item never allocates. Its size is
// O(tile), independent of the sequence lengths.
class scratch_arena {
 public:
  static constexpr std::size_t alignment = 64;

  float* floats(std::size_t count) {
    const std::size_t bytes = (count * sizeof(float) + alignment - 1) / alignment * alignment;
    if (bytes > capacity_) {
      buffer_.reset(static_cast<float*>(::operator new(bytes, std::align_val_t{alignment})));
      capacity_ = bytes;
    }
    return buffer_.get();
  }

 private:
  struct aligned_delete {
    void operator()(float* p) const { ::operator delete(p, std::align_val_t{alignment}); }
  };
  std::unique_ptr<float, aligned_delete> buffer_;
  std::size_t capacity_ = 0;
};

inline scratch_arena& thread_scratch() {
  thread_local scratch_arena arena;
  return arena;
}

// Carves consecutive 64-byte aligned float arrays out of one buffer.
class scratch_carver {
 public:
  explicit scratch_carver(float* base) : next_(base) {}
  float* take(std::size_t count) {
    float* p = next_;
    next_ += round_up(count);
    return p;
  }
  static constexpr std::size_t round_up(std::size_t count) {
    constexpr std::size_t per_line = scratch_arena::alignment / sizeof(float);
    return (count + per_line - 1) / per_line * per_line;
  }

 private:
  float* next_;
};

}  // namespace attn::detail
