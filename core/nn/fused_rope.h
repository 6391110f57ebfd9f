// RoPE's rotation y = (x * cos + rotate(x) * sin) [* scale] as one pass over x forward and one
// pass over the gradient backward, bit-identical to the ATen op chain RotaryEmbedding::rotate
// runs (see fused_rope.cpp for why the bits agree), on CPU in float32.
#pragma once
#include <ATen/ATen.h>

namespace olm::nn {

// Whether fused_rope() serves these operands: the fused CPU kernels enabled, no autocast, and
// x (B, T, H, D) contiguous float32 on CPU; sin, cos and scale (undefined for none) float32
// (1 or B, T, 1, rotary_dim) with unit stride along rotary_dim, none of them requiring grad;
// rotary_dim even and at most D.
bool fused_rope_applies(const at::Tensor& x, const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& scale,
                        int64_t rotary_dim);

// The leading rotary_dim features of each head rotated, half-split pairs (j, j + rotary_dim / 2)
// or interleaved pairs (2i, 2i + 1), times scale where defined; the rest passed through.
// Differentiable in x. Call only where fused_rope_applies().
at::Tensor fused_rope(const at::Tensor& x, const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& scale,
                      int64_t rotary_dim, bool interleaved);

}  // namespace olm::nn
