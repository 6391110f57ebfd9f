#include "core/nn/layer_norm.h"


#include "kernels/rms_norm.h"

namespace olm::nn {

LayerNorm::LayerNorm(int64_t size, const LayerNormSpec& spec, const at::TensorOptions& options)
    : spec_(spec), size_(size) {
  if (spec.elementwise_affine) {
    weight_ = &register_parameter("weight", at::ones({size}, options));
    if (spec.bias) bias_ = &register_parameter("bias", at::zeros({size}, options));
  }
}

at::Tensor l2_normalize(const at::Tensor& x, int64_t dim) {
  return x / at::linalg_vector_norm(x, 2, {dim}, /*keepdim=*/true, at::kFloat).to(x.scalar_type());
}

at::Tensor LayerNorm::forward(const at::Tensor& input) const {
  if (tp_) return forward_split(input);
  if (spec_.name == "l2_norm") return l2_normalize(input);
  const auto og_dtype = input.scalar_type();
  // olmo_core.nn.functional.l2_normalize: x / ||x|| with the norm accumulated in float32 and
  // rounded to x's dtype; no epsilon, no parameters.
  if (spec_.name == "l2_norm")
    return input / at::linalg_vector_norm(input, 2, {-1}, /*keepdim=*/true, at::kFloat).to(og_dtype);
  const at::Tensor x = spec_.full_precision ? input.to(at::kFloat) : input;
  std::optional<at::Tensor> weight, bias;
  if (weight_) weight = weight_->to(x.scalar_type());
  if (bias_) bias = bias_->to(x.scalar_type());
  at::Tensor y;
  if (spec_.name == "qwen_rms") {
    // QwenRMSNorm: normalize in float32, round to the input dtype, then apply the weight.
    y = kernels::rms_norm(x, std::nullopt, spec_.eps).to(og_dtype);
    if (weight_) y = y * weight_->to(og_dtype);
    if (bias_) y = y + bias_->to(og_dtype);
    return y;
  } else if (spec_.name == "rms") {
    y = kernels::rms_norm(x, weight, spec_.eps);
    if (bias) y = y + *bias;
  } else {
    y = at::layer_norm(x, {size_}, weight, bias, spec_.eps);
  }
  return y.to(og_dtype);
}

at::Tensor LayerNorm::forward_split(const at::Tensor& input) const {
  const auto og_dtype = input.scalar_type();
  const double n = static_cast<double>(size_);  // the whole projection's features, over the group
  if (spec_.name == "l2_norm")
    return input / tp_->all_reduce_sum(input.to(at::kFloat).pow(2).sum(-1, true)).sqrt().to(og_dtype);
  const at::Tensor x = spec_.full_precision ? input.to(at::kFloat) : input;
  at::Tensor y;
  if (spec_.name == "rms" || spec_.name == "qwen_rms") {
    y = x * (tp_->all_reduce_sum(x.pow(2).sum(-1, true)) / n + spec_.eps).rsqrt();
  } else {
    // Two passes, as at::layer_norm's biased variance: the mean first, then the squares about it.
    const auto centered = x - tp_->all_reduce_sum(x.sum(-1, true)) / n;
    y = centered * (tp_->all_reduce_sum(centered.pow(2).sum(-1, true)) / n + spec_.eps).rsqrt();
  }
  if (spec_.name == "qwen_rms") {
    y = y.to(og_dtype);
    if (weight_) y = y * weight_->to(og_dtype);
    if (bias_) y = y + bias_->to(og_dtype);
    return y;
  }
  if (weight_) y = y * weight_->to(y.scalar_type());
  if (bias_) y = y + bias_->to(y.scalar_type());
  return y.to(og_dtype);
}

}  // namespace olm::nn
