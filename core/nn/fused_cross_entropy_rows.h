// The body of the cross_entropy_kernel::backward_rows_* functions, included by one
// translation unit per ATen CPU capability; the including file defines CPU_CAPABILITY and
// CPU_CAPABILITY_<NAME> as ATen's build does, and compiles with that capability's flags.
//
// What it reproduces, per row (ATen 2.11, float32, log_softmax over the last, contiguous dim):
// nll_loss's backward zero-fills the row and writes g at the label (g = -grad_output[i] for
// reduction none, -(grad_output / total_weight) for mean, -grad_output for sum; nothing for
// an ignored row). log_softmax's backward (_vec_host_softmax_backward_lastdim) then forms
// sum = vec::reduce_all(+) over that row and writes x - exp(y) * sum lane by lane with
// Vectorized<float> (x: the nll gradient, y: log_softmax's output), partial vectors included.
// The row sum of one g among +0s is g itself, except that -0 plus +0 is +0, so for rows of
// two or more entries it is g + 0.0f. Every lane's result depends only on its own x and y, so
// writing 0 - exp(y) * sum everywhere and recomputing the label's entry with x = g gives the
// same bits without the dense gradient.
#pragma once
#include <ATen/cpu/vec/vec.h>

#include "core/nn/fused_cross_entropy_kernel.h"

namespace olm::nn::cross_entropy_kernel {
namespace {

using Vec = at::vec::Vectorized<float>;

// The lambda of ATen's log_softmax backward, x - exp(y) * sum, as the torch wheel's binary
// computes it. Its AVX2 and AVX-512 kernels are built by GCC in GNU mode, whose default
// -ffp-contract=fast fuses the multiply and the subtraction into one fnmadd (one rounding;
// with two roundings the label's entry differed by an ulp in a third of the shapes tried):
// spelled out here rather than left to this compiler's contraction (these files build with
// -ffp-contract=off). Without -mfma (the default capability) nothing is fused.
inline Vec log_softmax_input_grad(Vec grad, Vec log_probs, Vec sum) {
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  return at::vec::fnmadd(log_probs.exp(), sum, grad);
#else
  return grad - log_probs.exp() * sum;
#endif
}

// logsumexp's backward, grad * exp(logits - lse), one rounding (no contraction here: this
// file builds with -ffp-contract=off, and autograd adds it to the cross-entropy's share in a
// separate pass).
inline Vec logsumexp_input_grad(Vec exp_shifted, Vec grad) { return exp_shifted * grad; }

void backward_rows(const BackwardRows& a, int64_t begin, int64_t end) {
  constexpr int64_t width = Vec::size();
  const int64_t vocab = a.vocab;
  for (int64_t i = begin; i < end; ++i) {
    float* out = a.grad_logits + i * vocab;
    const float* log_probs = a.log_probs + i * vocab;
    const int64_t label = a.labels[i];
    const bool counted = label != a.ignore_index;
    const float label_grad = counted ? a.label_grad[i * a.label_grad_stride] : 0.0f;
    const float row_sum = vocab >= 2 ? label_grad + 0.0f : label_grad;
    const Vec sum(row_sum), zero(0.0f), lse_grad(a.lse_grad ? a.lse_grad[i] : 0.0f);
    float label_z = 0.0f;  // read before the row is overwritten
    if (counted && a.lse_grad) logsumexp_input_grad(Vec::loadu(out + label, 1), lse_grad).store(&label_z, 1);
    int64_t d = 0;
    for (; d + width <= vocab; d += width) {
      Vec r = log_softmax_input_grad(zero, Vec::loadu(log_probs + d), sum);
      if (a.lse_grad) r = r + logsumexp_input_grad(Vec::loadu(out + d), lse_grad);
      r.store(out + d);
    }
    if (d < vocab) {
      const int64_t rest = vocab - d;
      Vec r = log_softmax_input_grad(zero, Vec::loadu(log_probs + d, rest), sum);
      if (a.lse_grad) r = r + logsumexp_input_grad(Vec::loadu(out + d, rest), lse_grad);
      r.store(out + d, rest);
    }
    if (counted) {
      float lane[width];
      log_softmax_input_grad(Vec(label_grad), Vec::loadu(log_probs + label, 1), sum).store(lane, 1);
      out[label] = a.lse_grad ? lane[0] + label_z : lane[0];
    }
  }
}

}  // namespace
}  // namespace olm::nn::cross_entropy_kernel
