#include "core/nn/feed_forward.h"

#include "core/nn/activation.h"

#include <cmath>

#include "core/nn/layer_norm.h"

namespace olm::nn {

FeedForward::FeedForward(int64_t d_model, const FeedForwardSpec& spec,
                         const at::TensorOptions& options)
    : spec_(spec) {
  w1_ = register_module("w1", std::make_shared<Linear>(d_model, spec.hidden_size, spec.bias, options));
  w2_ = register_module("w2", std::make_shared<Linear>(spec.hidden_size, d_model, spec.bias, options));
  if (spec.name != "classic")
    w3_ = register_module("w3", std::make_shared<Linear>(d_model, spec.hidden_size, spec.bias, options));
  if (spec.name == "normalized") {
    sqrt_d_model_ = std::sqrt(static_cast<double>(d_model));
    sw1_ = &register_parameter("sw1", at::ones({spec.hidden_size}, options));
    sw3_ = &register_parameter("sw3", at::ones({spec.hidden_size}, options));
  }
}

void FeedForward::normalize_matrices() {
  w1_->weight().copy_(l2_normalize(w1_->weight(), -1));
  w2_->weight().copy_(l2_normalize(w2_->weight(), 0));
  w3_->weight().copy_(l2_normalize(w3_->weight(), -1));
}

at::Tensor FeedForward::forward(const at::Tensor& x) const {
  if (sw1_) {
    // OLMo-core's NormalizedFeedForward: w2(silu(sw1 sqrt(d) * w1 x) * (sw3 * w3 x)).
    const auto sw1 = *sw1_ * ((1.0 / 1.0) * sqrt_d_model_);
    const auto sw3 = *sw3_ * (1.0 / 1.0);
    return w2_->forward(at::silu(sw1 * w1_->forward(x)) * (sw3 * w3_->forward(x)));
  }
  auto h = activate(spec_.activation, w1_->forward(x));
  return w2_->forward(w3_ ? h * w3_->forward(x) : h);
}

}  // namespace olm::nn
