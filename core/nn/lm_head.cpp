#include "core/nn/lm_head.h"

namespace olm::nn {

std::pair<at::Tensor, std::optional<at::Tensor>> cross_entropy_loss(
    const at::Tensor& logits_in, const at::Tensor& labels, int64_t ignore_index,
    LossReduction reduction, std::optional<double> z_loss_multiplier) {
  const auto logits = logits_in.to(at::kFloat);
  const int64_t aten_reduction = reduction == LossReduction::kMean  ? at::Reduction::Mean
                                 : reduction == LossReduction::kSum ? at::Reduction::Sum
                                                                    : at::Reduction::None;
  auto loss = at::cross_entropy_loss(logits, labels, /*weight=*/std::nullopt, aten_reduction,
                                     ignore_index, /*label_smoothing=*/0.0);
  if (!z_loss_multiplier) return {loss, std::nullopt};
  auto z_squared = logits.logsumexp(-1).pow(2);
  // As OLMo-core: ignored positions are masked out of the mean and sum, not out of "none".
  auto mask = labels != ignore_index;
  if (reduction == LossReduction::kMean) {
    z_squared = (z_squared * mask).sum() / mask.sum();
  } else if (reduction == LossReduction::kSum) {
    z_squared = (z_squared * mask).sum();
  }
  return {loss, *z_loss_multiplier * z_squared};
}

LMHead::LMHead(int64_t d_model, int64_t vocab_size, const LMHeadSpec& spec,
               const at::TensorOptions& options, const at::Tensor* tied_weight)
    : vocab_size_(vocab_size), tied_weight_(tied_weight) {
  if (spec.layer_norm)
    norm_ = register_module("norm", std::make_shared<LayerNorm>(d_model, *spec.layer_norm, options));
  if (!tied_weight)
    w_out_ = register_module("w_out", std::make_shared<Linear>(d_model, vocab_size, spec.bias, options));
}

at::Tensor LMHead::keep_last(const at::Tensor& t, int64_t logits_to_keep) const {
  return logits_to_keep > 0 ? t.slice(1, t.size(1) - logits_to_keep) : t;
}

at::Tensor LMHead::logits(const at::Tensor& h, int64_t logits_to_keep) const {
  auto x = norm_ ? norm_->forward(h) : h;
  if (tied_weight_) return at::linear(keep_last(x, logits_to_keep), *tied_weight_);
  return w_out_->forward(keep_last(x, logits_to_keep));
}

LossOutput LMHead::loss(const at::Tensor& h, const at::Tensor& labels_in,
                        const LossOptions& options) const {
  const int64_t B = h.size(0);
  auto labels = keep_last(labels_in, options.logits_to_keep);
  auto logits = this->logits(h, options.logits_to_keep);
  auto [ce_loss, z_loss] =
      cross_entropy_loss(logits.view({-1, vocab_size_}), labels.contiguous().view({-1}),
                         options.ignore_index, options.reduction, options.z_loss_multiplier);
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
