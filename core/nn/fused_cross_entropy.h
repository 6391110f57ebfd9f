// Cross-entropy on (N, V) float32 CPU logits whose backward writes the logits' gradient in
// one pass over the rows, instead of autograd's chain (nll_loss's backward zero-filling a
// dense (N, V) gradient and scattering at the labels, then log_softmax's backward reading it
// back). It also returns the logsumexp the z-loss needs: that gradient is computed with
// logsumexp's own backward ops (ATen's dense exp is MKL VML's, whose bits no kernel here can
// promise to match) and the pass adds the cross-entropy share into it. The forward runs ATen's
// own ops, and the gradient is bit-identical to autograd's chain on every CPU capability ATen
// dispatches to on x86 (default, AVX2, AVX-512).
#pragma once
#include <ATen/ATen.h>

#include <utility>

namespace olm::nn {

// Whether fused_cross_entropy covers these inputs: olm's CPU fusion switch is on, ATen's CPU
// capability is one the kernel is built for, gradients are wanted, no autocast, and the
// logits are a contiguous (N, V) float32 CPU tensor with int64 (N) labels.
bool fused_cross_entropy_applies(const at::Tensor& logits, const at::Tensor& labels);

// As at::cross_entropy_loss(logits, labels, no weight, aten_reduction, ignore_index, no label
// smoothing), and, when with_logsumexp, logits.logsumexp(-1) (N), differentiable too; otherwise
// the second tensor is undefined.
std::pair<at::Tensor, at::Tensor> fused_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                      int64_t ignore_index, int64_t aten_reduction,
                                                      bool with_logsumexp);

}  // namespace olm::nn
