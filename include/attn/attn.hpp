// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
#pragma once

// attn: CPU attention kernels on one tiled online-softmax core.
#include "attn/backend/registry.hpp"
#include "attn/core/error.hpp"
#include "attn/core/executor.hpp"
#include "attn/core/merge.hpp"
#include "attn/core/tensor.hpp"
#include "attn/mask/masks.hpp"
#include "attn/mask/score_mods.hpp"
#include "attn/core/kv_cache.hpp"
#include "attn/core/quantized.hpp"
#include "attn/variant/block_sparse.hpp"
#include "attn/variant/cascade.hpp"
#include "attn/variant/dense.hpp"
#include "attn/variant/latent.hpp"
#include "attn/variant/linear.hpp"
#include "attn/variant/moba.hpp"
#include "attn/variant/neighborhood.hpp"

#define ATTN_VERSION_MAJOR 0
#define ATTN_VERSION_MINOR 1
#define ATTN_VERSION_PATCH 0
