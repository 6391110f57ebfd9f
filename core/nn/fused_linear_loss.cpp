#include "core/nn/fused_linear_loss.h"

#include <torch/csrc/autograd/custom_function.h>

namespace olm::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autograd functions take only defined tensors: an empty tensor stands for "no bias" and
// "no logit scale".
bool present(const at::Tensor& t) { return t.numel() > 0; }

// x w^T (+ b), in the parameters' dtype.
at::Tensor chunk_projection(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return at::linear(x, weight, present(bias) ? std::optional<at::Tensor>(bias) : std::nullopt);
}

// As the default head: the scale applied in the parameters' dtype, the loss in float32.
at::Tensor chunk_logits(const at::Tensor& projection, const at::Tensor& scale) {
  return (present(scale) ? scale * projection : projection).to(at::kFloat);
}

struct FusedLinearCrossEntropy : public torch::autograd::Function<FusedLinearCrossEntropy> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& scale, const at::Tensor& labels,
                               int64_t ignore_index) {
    const int64_t n = x.size(0), rows = fused_linear_chunk_rows(weight.size(0));
    auto ce = at::empty({n}, x.options().dtype(at::kFloat));
    auto lse = at::empty({n}, x.options().dtype(at::kFloat));
    for (int64_t start = 0; start < n; start += rows) {
      const int64_t end = std::min(n, start + rows);
      const auto logits = chunk_logits(chunk_projection(x.slice(0, start, end), weight, bias), scale);
      const auto chunk_labels = labels.slice(0, start, end);
      const auto valid = chunk_labels.ne(ignore_index);
      const auto chunk_lse = logits.logsumexp(-1);
      const auto target = logits.gather(1, chunk_labels.clamp_min(0).unsqueeze(1)).squeeze(1);
      lse.slice(0, start, end).copy_(chunk_lse);
      ce.slice(0, start, end).copy_((chunk_lse - target) * valid);
    }
    ctx->save_for_backward({x, weight, bias, scale, labels, lse});
    ctx->saved_data["ignore_index"] = ignore_index;
    return {ce, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &bias = saved[2], &scale = saved[3], &labels = saved[4],
               &lse = saved[5];
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    const int64_t n = x.size(0), rows = fused_linear_chunk_rows(weight.size(0));
    auto zeros = at::zeros({n}, lse.options());
    const auto grad_ce = grads[0].defined() ? grads[0] : zeros;
    const auto grad_lse = grads[1].defined() ? grads[1] : zeros;
    auto grad_x = at::empty_like(x);
    auto grad_w = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
    auto grad_b = present(bias) ? at::zeros(bias.sizes(), bias.options().dtype(at::kFloat)) : at::Tensor();
    auto grad_scale = present(scale) ? at::zeros(scale.sizes(), scale.options().dtype(at::kFloat)) : at::Tensor();
    for (int64_t start = 0; start < n; start += rows) {
      const int64_t end = std::min(n, start + rows);
      const auto xc = x.slice(0, start, end);
      const auto chunk_labels = labels.slice(0, start, end);
      const auto valid = chunk_labels.ne(ignore_index);
      // d ce_i / d logits = softmax - onehot(label) (0 for ignored rows);
      // d lse_i / d logits = softmax.
      const auto projection = chunk_projection(xc, weight, bias);
      auto p = (chunk_logits(projection, scale) - lse.slice(0, start, end).unsqueeze(1)).exp_();
      const auto g_ce = grad_ce.slice(0, start, end) * valid;
      auto g = p.mul_((g_ce + grad_lse.slice(0, start, end)).unsqueeze(1));
      g.scatter_add_(1, chunk_labels.clamp_min(0).unsqueeze(1), -g_ce.unsqueeze(1));
      if (grad_scale.defined()) {
        // logits = scale * projection: the scale's gradient sums g * projection over rows,
        // and the projection's is g * scale.
        grad_scale.add_((g * projection.to(at::kFloat)).sum(0));
        g.mul_(scale.to(at::kFloat));
      }
      grad_x.slice(0, start, end).copy_(at::matmul(g.to(weight.scalar_type()), weight));
      grad_w.addmm_(g.t(), xc.to(at::kFloat));
      if (grad_b.defined()) grad_b.add_(g.sum(0));
    }
    return {grad_x, grad_w.to(weight.scalar_type()),
            grad_b.defined() ? grad_b.to(bias.scalar_type()) : at::Tensor(),
            grad_scale.defined() ? grad_scale.to(scale.scalar_type()) : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

int64_t fused_linear_chunk_rows(int64_t vocab_size) {
  return std::max<int64_t>(1, (int64_t{8} << 20) / std::max<int64_t>(1, vocab_size));
}

std::pair<at::Tensor, at::Tensor> fused_linear_cross_entropy(const at::Tensor& x, const at::Tensor& weight,
                                                             const at::Tensor& bias, const at::Tensor& labels,
                                                             int64_t ignore_index, const at::Tensor& logit_scale) {
  const auto b = bias.defined() ? bias : at::empty({0}, weight.options());
  const auto s = logit_scale.defined() ? logit_scale : at::empty({0}, weight.options());
  auto out = FusedLinearCrossEntropy::apply(x, weight, b, s, labels, ignore_index);
  return {out[0], out[1]};
}

}  // namespace olm::nn
