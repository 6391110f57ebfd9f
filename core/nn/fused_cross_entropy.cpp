#include "core/nn/fused_cross_entropy.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/Version.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/nn/cpu_fusion.h"
#include "core/nn/fused_cross_entropy_kernel.h"

namespace olm::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using RowsKernel = void (*)(const cross_entropy_kernel::BackwardRows&, int64_t, int64_t);

// The kernel compiled for the capability ATen dispatches its own kernels to (which
// ATEN_CPU_CAPABILITY may lower); nullptr where none is built for it (non-x86 CPUs, whose
// ATen vectorisation differs), and the ATen chain runs instead.
RowsKernel rows_kernel() {
#if defined(__x86_64__)  // the CMake condition that builds the kernels
  // ATen reads its capability (and ATEN_CPU_CAPABILITY) once per process; libtorch exports
  // only its name.
  static const RowsKernel kernel = [] {
    const std::string capability = at::get_cpu_capability();
    return capability == "AVX512"  ? cross_entropy_kernel::backward_rows_avx512
           : capability == "AVX2"    ? cross_entropy_kernel::backward_rows_avx2
           : capability == "DEFAULT" ? cross_entropy_kernel::backward_rows_default
                                     : RowsKernel{nullptr};
  }();
  return kernel;
#else
  return nullptr;
#endif
}

struct FusedCrossEntropy : public torch::autograd::Function<FusedCrossEntropy> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels,
                               int64_t ignore_index, int64_t reduction, bool with_logsumexp) {
    // at::cross_entropy_loss's own ops for 2-D logits and class labels.
    auto log_probs = at::log_softmax(logits, 1, logits.scalar_type());
    auto [loss, total_weight] = at::nll_loss_forward(log_probs, labels, std::nullopt, reduction, ignore_index);
    // An unused output's gradient stays undefined: a materialized zero gradient for the
    // logsumexp would add +0 to the logits' gradient, which autograd's chain never does.
    ctx->set_materialize_grads(false);
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["reduction"] = reduction;
    if (!with_logsumexp) {
      ctx->save_for_backward({log_probs, labels, total_weight});
      return {loss};
    }
    auto lse = logits.logsumexp(-1);
    ctx->save_for_backward({log_probs, labels, total_weight, logits, lse});
    return {loss, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &log_probs = saved[0], &labels = saved[1], &total_weight = saved[2];
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const int64_t reduction = ctx->saved_data["reduction"].toInt();
    const bool lse_grad = grads.size() > 1 && grads[1].defined();
    at::Tensor grad_logits, lse_grad_c;
    if (lse_grad) {
      // The z-loss's share is logsumexp's backward, grads[1] * exp(logits - lse). Its exp is
      // ATen's own, run here as autograd would: ATen's dense float32 exp (TensorIterator over
      // vml::vexp, MKL's VML in this wheel by all appearances) differs from both Sleef's exp,
      // which the kernel could call, and glibc's in about 10% of elements (measured on 1M
      // normal values, AVX-512). The product is a single IEEE operation: the kernel forms it
      // and adds the cross-entropy share to it, and as IEEE addition commutes, that is the
      // sum autograd forms when it accumulates the two gradients of the logits.
      const auto &logits = saved[3], &lse = saved[4];
      grad_logits = (logits - lse.unsqueeze(-1)).exp_();
      lse_grad_c = grads[1].contiguous();
    }
    if (!grads[0].defined()) {
      if (lse_grad) return {grad_logits.mul_(lse_grad_c.unsqueeze(-1)), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};  // nothing flowed in
    }

    if (!lse_grad) grad_logits = at::empty_like(log_probs);
    // nll_loss's gradient at each label (LossNLL.cpp's nll_loss_backward_out_frame).
    at::Tensor label_grad;
    int64_t label_grad_stride = 0;
    if (reduction == at::Reduction::None) {
      label_grad = grads[0].contiguous().mul(-1.0);
      label_grad_stride = 1;
    } else {
      const float grad_output = grads[0].item<float>();
      const float value = reduction == at::Reduction::Mean ? -(grad_output / total_weight.item<float>()) : -grad_output;
      label_grad = at::full({1}, value, log_probs.options());
    }
    const auto log_probs_c = log_probs.contiguous();
    const cross_entropy_kernel::BackwardRows rows{grad_logits.data_ptr<float>(), log_probs_c.data_ptr<float>(),
                                                  labels.data_ptr<int64_t>(), label_grad.data_ptr<float>(),
                                                  label_grad_stride, log_probs.size(1), ignore_index,
                                                  lse_grad ? lse_grad_c.data_ptr<float>() : nullptr};
    const RowsKernel kernel = rows_kernel();
    const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / (16 * rows.vocab));
    at::parallel_for(0, log_probs.size(0), grain, [&](int64_t begin, int64_t end) { kernel(rows, begin, end); });
    return {grad_logits, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool fused_cross_entropy_applies(const at::Tensor& logits, const at::Tensor& labels) {
  // Autocast: its casting policy would have to be reproduced inside the function.
  return cpu_fusion_enabled() && rows_kernel() != nullptr && at::GradMode::is_enabled() &&
         logits.requires_grad() && !at::autocast::is_autocast_enabled(at::kCPU) && logits.device().is_cpu() &&
         logits.scalar_type() == at::kFloat && logits.dim() == 2 && logits.is_contiguous() && logits.size(1) > 0 &&
         labels.device().is_cpu() && labels.scalar_type() == at::kLong && labels.dim() == 1 &&
         labels.is_contiguous() && labels.size(0) == logits.size(0);
}

std::pair<at::Tensor, at::Tensor> fused_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                      int64_t ignore_index, int64_t aten_reduction,
                                                      bool with_logsumexp) {
  auto out = FusedCrossEntropy::apply(logits, labels, ignore_index, aten_reduction, with_logsumexp);
  return {out[0], with_logsumexp ? out[1] : at::Tensor()};
}

}  // namespace olm::nn
