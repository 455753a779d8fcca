// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace attn {

// Thrown by every public entry point when an argument is invalid. The message
// names the argument, the value expected and the value received.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

[[noreturn]] inline void fail(const std::string& message) {
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
  throw error(message);
#else
  std::fprintf(stderr, "attn: %s\n", message.c_str());
  std::abort();
#endif
}

// A part of an error message: a value, written as it is, or a callable that
// returns one, called only when the check fails, so that a passing check
// builds no strings (built eagerly, they were a quarter of a 32-key decode
// call's instructions).
template <class Part>
decltype(auto) message_part(const Part& part) {
  if constexpr (std::is_invocable_v<const Part&>)
    return part();
  else
    return (part);
}

// require(cond, "argument", "expected ...", actual) -> attn::error
// "<argument>: expected <expected>, got <actual>"; expected and actual are
// message parts.
template <class Expected, class Actual>
void require(bool ok, const char* argument, const Expected& expected, const Actual& actual) {
  if (!ok) fail(concat(argument, ": expected ", message_part(expected), ", got ", message_part(actual)));
}

}  // namespace detail
}  // namespace attn
