#include "core/nn/feed_forward.h"

#include "core/nn/activation.h"

namespace olm::nn {

FeedForward::FeedForward(int64_t d_model, const FeedForwardSpec& spec,
                         const at::TensorOptions& options)
    : spec_(spec) {
  w1_ = register_module("w1", std::make_shared<Linear>(d_model, spec.hidden_size, spec.bias, options));
  w2_ = register_module("w2", std::make_shared<Linear>(spec.hidden_size, d_model, spec.bias, options));
  if (spec.name == "default")
    w3_ = register_module("w3", std::make_shared<Linear>(d_model, spec.hidden_size, spec.bias, options));
}

at::Tensor FeedForward::forward(const at::Tensor& x) const {
  auto h = activate(spec_.activation, w1_->forward(x));
  return w2_->forward(w3_ ? h * w3_->forward(x) : h);
}

}  // namespace olm::nn
