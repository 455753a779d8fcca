// SPDX-FileCopyrightText: 2026 The attn authors
// SPDX-License-Identifier: Apache-2.0
// A 2-D neighborhood attention block as in NAT / DiNAT on a 56 x 56 feature map: a 7 x 7
// neighborhood, then the dilated one (dilation 8 covers the whole map), tokens (B, X, Y, H, D).
//   g++ -std=c++20 -O2 -march=native -fopenmp 04_neighborhood_2d.cpp
#include <cmath>
#include <cstdio>
#include <vector>

#include <attn/attn.hpp>

int main() {
  using attn::index_t;
  const index_t side = 56, heads = 4, dim = 32;
  std::vector<float> qkv(side * side * heads * dim), out(qkv.size()), out2(qkv.size());
  for (std::size_t i = 0; i < qkv.size(); ++i) qkv[i] = std::sin(0.37f * float(i % 997));
  // (B=1, X, Y, H, D) in C order; any strides work (e.g. a channels-first buffer).
  auto grid = [&](float* p) {
    return attn::strided_view<float, 5>{
        p, {1, side, side, heads, dim}, {side * side * heads * dim, side * heads * dim, heads * dim, dim, 1}};
  };
  const attn::strided_view<const float, 5> x = grid(qkv.data());  // self-attention: q = k = v = x

  attn::neighborhood_options<2> nat;  // NAT: 7 x 7 around each token, shifted in at borders
  nat.dims = {attn::neighborhood_dim{7}, attn::neighborhood_dim{7}};
  attn::neighborhood_attention(x, x, x, grid(out.data()), {}, nat, attn::openmp{});

  attn::neighborhood_options<2> dinat = nat;  // DiNAT: every 8th token, 7 x 7 of them
  dinat.dims = {attn::neighborhood_dim{7, 8}, attn::neighborhood_dim{7, 8}};
  attn::neighborhood_attention(x, x, x, grid(out2.data()), {}, dinat, attn::openmp{});

  // K = L would be full attention; here check one value by hand: token (0, 0), head 0, channel 0
  // under NAT attends to the 7 x 7 corner block.
  double num = 0, den = 0;
  auto at = [&](index_t i, index_t j, index_t d) { return qkv[((i * side + j) * heads) * dim + d]; };
  for (index_t i = 0; i < 7; ++i)
    for (index_t j = 0; j < 7; ++j) {
      double s = 0;
      for (index_t d = 0; d < dim; ++d) s += at(0, 0, d) * at(i, j, d) / std::sqrt(double(dim));
      num += std::exp(s) * at(i, j, 0);
      den += std::exp(s);
    }
  std::printf("NAT out[0,0,0,0] = %.6f (by hand %.6f), DiNAT out[0,0,0,0] = %.6f\n", out[0], num / den, out2[0]);
  return std::fabs(out[0] - num / den) < 1e-4 && std::isfinite(out2[0]) ? 0 : 1;
}
