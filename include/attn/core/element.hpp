// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <bit>
#include <concepts>
#include <cstdint>
#include <type_traits>

// Storage types of the tensors a kernel reads and writes. Every kernel
// computes in fp32 (scores, running max and sum, the output accumulator);
// a 16-bit tensor is widened where its tile is loaded or packed, and the
// output rounded once, when its row is stored (README, "Reduced precision").
namespace attn {

// IEEE 754 binary16 (fp16: 1 sign, 5 exponent, 10 mantissa bits), the
// layout of ggml's and PyTorch's float16. Conversions round to nearest even.
struct float16 {
  std::uint16_t bits = 0;
};

// bfloat16 (the upper half of a float: 8 exponent, 7 mantissa bits).
struct bfloat16 {
  std::uint16_t bits = 0;
};

// A type a tensor may be stored in.
template <class T>
concept storage_element = std::same_as<T, float> || std::same_as<T, float16> || std::same_as<T, bfloat16>;

// int8 K or V (a quantized cache): each row of a kv head holds int8 values
// and one fp32 scale beside them (attn::quantized); the kernels widen the
// values and apply the scales to the score and probability tiles.
template <class T>
concept quantized_element = std::same_as<T, std::int8_t>;

// A type K or V may be stored in.
template <class T>
concept kv_element = storage_element<T> || quantized_element<T>;

constexpr float to_float(float x) { return x; }
constexpr float to_float(std::int8_t x) { return static_cast<float>(x); }

constexpr float to_float(float16 h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h.bits & 0x8000u) << 16;
  const std::uint32_t exponent = (h.bits >> 10) & 0x1fu, mantissa = h.bits & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa x 2^-24, exact in a float
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(magnitude));
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

constexpr float to_float(bfloat16 h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h.bits) << 16); }

namespace detail {

// The fp16 bits nearest a float (ties to even); beyond the largest half
// (65504, and everything that rounds above it) gives inf, NaN stays NaN.
constexpr std::uint16_t half_bits(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  std::uint32_t magnitude = x & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  if (magnitude >= 0x47800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 2^16: inf
  if (magnitude < 0x38800000u) {
    // Below 2^-14 the result is subnormal: the units of 2^-24 in |f|,
    // rounded to nearest even by an exact-scale integer rounding.
    const float units = std::bit_cast<float>(magnitude) * 0x1p24f;  // exact: a power-of-two scale
    std::uint32_t n = static_cast<std::uint32_t>(units);             // truncated
    const float rest = units - static_cast<float>(n);
    if (rest > 0.5f || (rest == 0.5f && (n & 1u))) ++n;
    return static_cast<std::uint16_t>(sign | n);  // n = 1024 carries into the smallest normal
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits to
  // nearest even (a carry may step the exponent, up to inf).
  const std::uint32_t odd = (magnitude >> 13) & 1u;
  magnitude += 0xfffu + odd - (112u << 23);
  return static_cast<std::uint16_t>(sign | (magnitude >> 13));
}

// The bf16 bits nearest a float (ties to even); NaN stays a quiet NaN.
constexpr std::uint16_t bfloat_bits(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace detail

// x rounded to the storage type T (nearest, ties to even).
template <storage_element T>
constexpr T from_float(float x) {
  if constexpr (std::is_same_v<T, float>)
    return x;
  else if constexpr (std::is_same_v<T, float16>)
    return float16{detail::half_bits(x)};
  else
    return bfloat16{detail::bfloat_bits(x)};
}

// The views of a call with some tensor in 16 bits: q, k, v (const or not)
// and out (writable) each float, float16 or bfloat16, not all float.
template <class Q, class K, class V, class O>
concept mixed_storage =
    storage_element<std::remove_const_t<Q>> && storage_element<std::remove_const_t<K>> &&
    storage_element<std::remove_const_t<V>> && storage_element<O> &&
    !(std::is_same_v<std::remove_const_t<Q>, float> && std::is_same_v<std::remove_const_t<K>, float> &&
      std::is_same_v<std::remove_const_t<V>, float> && std::is_same_v<O, float>);

// Two views stored alike, whatever the constness of their elements.
template <class A, class B>
concept same_storage = std::same_as<std::remove_const_t<A>, std::remove_const_t<B>>;

// The name attnrun and the errors use for a storage type.
template <kv_element T>
constexpr const char* element_name() {
  if constexpr (std::is_same_v<T, float>)
    return "float32";
  else if constexpr (std::is_same_v<T, float16>)
    return "float16";
  else if constexpr (std::is_same_v<T, bfloat16>)
    return "bfloat16";
  else
    return "int8";
}

}  // namespace attn
