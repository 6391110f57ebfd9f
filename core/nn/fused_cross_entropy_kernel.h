// The fused cross-entropy backward's inner loop over rows, compiled once per ATen CPU
// capability (fused_cross_entropy_{default,avx2,avx512}.cpp, each with that capability's -m
// flags and ATen's CPU_CAPABILITY defines), so that it runs ATen's own Vectorized<float>, the
// very exp (Sleef) and lane arithmetic of ATen's kernel for the same capability.
#pragma once
#include <cstdint>

namespace olm::nn::cross_entropy_kernel {

struct BackwardRows {
  // (N, V), written. With lse_grad, it holds exp(logits - logsumexp) on entry (ATen's exp),
  // and the z-loss's share, that times lse_grad, joins the cross-entropy's.
  float* grad_logits;
  const float* log_probs;   // (N, V), log_softmax's output
  const int64_t* labels;    // (N)
  const float* label_grad;  // nll_loss's gradient at the label: row i's at label_grad[i * stride]
  int64_t label_grad_stride;  // 0 for the mean and sum reductions (one value for all rows)
  int64_t vocab;
  int64_t ignore_index;
  const float* lse_grad;  // (N) the logsumexp's gradient, or nullptr: no z-loss
};

// Rows [begin, end) of the logits' gradient.
void backward_rows_default(const BackwardRows& rows, int64_t begin, int64_t end);
void backward_rows_avx2(const BackwardRows& rows, int64_t begin, int64_t end);
void backward_rows_avx512(const BackwardRows& rows, int64_t begin, int64_t end);

}  // namespace olm::nn::cross_entropy_kernel
