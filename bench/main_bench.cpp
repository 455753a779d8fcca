// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#include <benchmark/benchmark.h>

BENCHMARK_MAIN();
