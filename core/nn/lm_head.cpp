#include "core/nn/lm_head.h"

#include <cmath>

#include "core/nn/fused_cross_entropy.h"
#include "core/nn/fused_linear_loss.h"

#include <torch/csrc/autograd/custom_function.h>

#include "core/error.h"

namespace olm::nn {

std::pair<at::Tensor, std::optional<at::Tensor>> cross_entropy_loss(
    const at::Tensor& logits_in, const at::Tensor& labels, int64_t ignore_index,
    LossReduction reduction, std::optional<double> z_loss_multiplier) {
  const auto logits = logits_in.to(at::kFloat);
  const int64_t aten_reduction = reduction == LossReduction::kMean  ? at::Reduction::Mean
                                 : reduction == LossReduction::kSum ? at::Reduction::Sum
                                                                    : at::Reduction::None;
  at::Tensor loss, lse;
  if (fused_cross_entropy_applies(logits, labels)) {
    std::tie(loss, lse) = fused_cross_entropy(logits, labels, ignore_index, aten_reduction, z_loss_multiplier.has_value());
  } else {
    loss = at::cross_entropy_loss(logits, labels, /*weight=*/std::nullopt, aten_reduction, ignore_index,
                                  /*label_smoothing=*/0.0);
    if (z_loss_multiplier) lse = logits.logsumexp(-1);
  }
  if (!z_loss_multiplier) return {loss, std::nullopt};
  return {loss, z_loss_from_logsumexp(lse, labels != ignore_index, reduction, *z_loss_multiplier)};
}

at::Tensor z_loss_from_logsumexp(const at::Tensor& lse, const at::Tensor& mask, LossReduction reduction,
                                 double multiplier) {
  auto z_squared = lse.pow(2);
  // As OLMo-core: ignored positions are masked out of the mean and sum, not out of "none".
  if (reduction == LossReduction::kMean) {
    z_squared = (z_squared * mask).sum() / mask.sum();
  } else if (reduction == LossReduction::kSum) {
    z_squared = (z_squared * mask).sum();
  }
  return multiplier * z_squared;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct VocabParallelCrossEntropy : public torch::autograd::Function<VocabParallelCrossEntropy> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, const at::Tensor& labels,
                               int64_t vocab_start, int64_t ignore_index, TensorParallel* tp) {
    at::NoGradGuard no_grad;
    const int64_t width = logits.size(1);
    auto max = logits.amax(1);
    tp->all_reduce_max_(max);
    const auto shifted = logits - max.unsqueeze(1);
    const auto exp = shifted.exp();
    auto sum_exp = exp.sum(1);
    tp->all_reduce_sum_(sum_exp);
    const auto local = labels - vocab_start;
    const auto valid = labels != ignore_index;
    const auto here = valid.logical_and(local.ge(0)).logical_and(local.lt(width));
    const auto index = local.clamp(0, width - 1);
    auto target = shifted.gather(1, index.unsqueeze(1)).squeeze(1).masked_fill(here.logical_not(), 0.0);
    tp->all_reduce_sum_(target);
    const auto log_sum_exp = sum_exp.log();
    auto loss = (log_sum_exp - target).masked_fill(valid.logical_not(), 0.0);
    auto lse = log_sum_exp + max;
    ctx->save_for_backward({exp / sum_exp.unsqueeze(1), index, here, valid});
    return {loss, lse};
  }

  // d loss_i / d x_ij = p_ij - [j = label_i] (none where ignored); d lse_i / d x_ij = p_ij.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &probs = saved[0], &index = saved[1], &here = saved[2], &valid = saved[3];
    const auto grad_loss = grads[0].masked_fill(valid.logical_not(), 0.0);
    auto grad = probs * (grad_loss + grads[1]).unsqueeze(1);
    grad.scatter_add_(1, index.unsqueeze(1), (-grad_loss).masked_fill(here.logical_not(), 0.0).unsqueeze(1));
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

std::pair<at::Tensor, at::Tensor> vocab_parallel_cross_entropy(const at::Tensor& logits, const at::Tensor& labels,
                                                               int64_t vocab_start, int64_t ignore_index,
                                                               TensorParallel& tp) {
  auto out = VocabParallelCrossEntropy::apply(logits.to(at::kFloat), labels.to(at::kLong), vocab_start,
                                              ignore_index, &tp);
  return {out[0], out[1]};
}

std::vector<TensorParallelSplit> LMHead::tensor_parallel_splits(int64_t) const {
  const std::string why = " cannot be combined with tensor parallelism";
  require(!sz_, ErrorCode::kInvalidConfig, "lm_head.name: normalized" + why);
  require(!fused_linear_loss_, ErrorCode::kInvalidConfig, "lm_head.loss_implementation: fused_linear" + why);
  if (tied_weight_) return {};
  std::vector<TensorParallelSplit> splits{{"w_out.weight", 0}};
  if (w_out_->bias()) splits.push_back({"w_out.bias", 0});
  return splits;
}

at::Tensor LMHead::normed_input(const at::Tensor& h, int64_t logits_to_keep) const {
  auto x = norm_ ? norm_->forward(h) : h;
  return keep_last(tp_ ? tp_->gather_sequence(x) : x, logits_to_keep);
}

LMHead::LMHead(int64_t d_model, int64_t vocab_size, const LMHeadSpec& spec,
               const at::TensorOptions& options, const at::Tensor* tied_weight)
    : vocab_size_(vocab_size), fused_linear_loss_(spec.loss_implementation == "fused_linear"), tied_weight_(tied_weight) {
  if (spec.layer_norm)
    norm_ = register_module("norm", std::make_shared<LayerNorm>(d_model, *spec.layer_norm, options));
  if (!tied_weight)
    w_out_ = register_module("w_out", std::make_shared<Linear>(d_model, vocab_size, spec.bias, options));
  if (spec.normalized) {
    d_model_ = static_cast<double>(d_model);
    sz_ = &register_parameter("sz", at::ones({vocab_size}, options).mul_(1.0 / std::sqrt(d_model_)));
  }
}

const at::Tensor& LMHead::weight() const { return tied_weight_ ? *tied_weight_ : w_out_->weight(); }

at::Tensor LMHead::bias() const {
  const at::Tensor* b = tied_weight_ ? nullptr : w_out_->bias();
  return b ? *b : at::Tensor();
}

void LMHead::normalize_matrices() {
  if (w_out_) w_out_->weight().copy_(l2_normalize(w_out_->weight(), -1));  // tied: the embeddings, done already
}

at::Tensor LMHead::keep_last(const at::Tensor& t, int64_t logits_to_keep) const {
  return logits_to_keep > 0 ? t.slice(1, t.size(1) - logits_to_keep) : t;
}

at::Tensor LMHead::logit_scale() const {
  // OLMo-core's NormalizedLMHead: sz * (sz_init_value / sz_init_scaling), with its
  // Python-float factor.
  return sz_ ? *sz_ * (1.0 / (1.0 / std::sqrt(d_model_))) : at::Tensor();
}

at::Tensor LMHead::project(const at::Tensor& x) const {
  const auto b = bias();
  auto logits = at::linear(x, weight(), b.defined() ? std::optional<at::Tensor>(b) : std::nullopt);
  return sz_ ? logit_scale() * logits : logits;
}

at::Tensor LMHead::logits(const at::Tensor& h, int64_t logits_to_keep) const {
  auto logits = project(normed_input(h, logits_to_keep));
  return tp_ ? tp_->gather_last_dim(logits) : logits;
}

LossOutput LMHead::loss(const at::Tensor& h, const at::Tensor& labels_in,
                        const LossOptions& options) const {
  const int64_t B = h.size(0);
  auto labels = keep_last(labels_in, options.logits_to_keep);
  at::Tensor logits, ce_loss;
  std::optional<at::Tensor> z_loss;
  if (fused_linear_loss_ || tp_) {
    auto x = normed_input(h, options.logits_to_keep);
    const auto flat_labels = labels.contiguous().view({-1});
    at::Tensor ce_rows, lse;
    if (tp_) {
      logits = project(x);
      const int64_t width = logits.size(-1);
      std::tie(ce_rows, lse) = vocab_parallel_cross_entropy(logits.reshape({-1, width}), flat_labels,
                                                            tp_->rank() * width, options.ignore_index, *tp_);
    } else {
      std::tie(ce_rows, lse) = fused_linear_cross_entropy(x.reshape({-1, x.size(-1)}), weight(), bias(), flat_labels,
                                                          options.ignore_index, logit_scale());
    }
    const auto mask = flat_labels != options.ignore_index;
    ce_loss = options.reduction == LossReduction::kMean  ? ce_rows.sum() / mask.sum()
              : options.reduction == LossReduction::kSum ? ce_rows.sum()
                                                         : ce_rows;
    if (options.z_loss_multiplier)
      z_loss = z_loss_from_logsumexp(lse, mask, options.reduction, *options.z_loss_multiplier);
    if (options.return_logits) {
      at::NoGradGuard no_grad;  // asked for, so materialized, but outside the graph
      logits = tp_ ? tp_->gather_last_dim(logits.detach()) : project(x);
    }
  } else {
    logits = this->logits(h, options.logits_to_keep);
    std::tie(ce_loss, z_loss) =
        cross_entropy_loss(logits.view({-1, vocab_size_}), labels.contiguous().view({-1}),
                           options.ignore_index, options.reduction, options.z_loss_multiplier);
  }
  at::Tensor loss = z_loss ? ce_loss + *z_loss : ce_loss;

  auto finalize = [&](at::Tensor t) {
    if (options.reduction == LossReduction::kNone) t = t.view({B, -1});
    if (options.loss_div_tensor.defined()) {
      t = t / options.loss_div_tensor;
    } else if (options.loss_div_factor != 1.0) {
      t = t / options.loss_div_factor;
    }
    return t;
  };
  LossOutput out;
  out.loss = finalize(loss);
  out.ce_loss = finalize(ce_loss.detach());
  if (z_loss) out.z_loss = finalize(z_loss->detach());
  if (options.return_logits) out.logits = logits;
  return out;
}

}  // namespace olm::nn
