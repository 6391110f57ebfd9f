#include "core/nn/feed_forward.h"

namespace olm::nn {

FeedForward::FeedForward(int64_t d_model, const FeedForwardSpec& spec,
                         const at::TensorOptions& options)
    : spec_(spec) {
  w1_ = register_module("w1", std::make_shared<Linear>(d_model, spec.hidden_size, spec.bias, options));
  w2_ = register_module("w2", std::make_shared<Linear>(spec.hidden_size, d_model, spec.bias, options));
  w3_ = register_module("w3", std::make_shared<Linear>(d_model, spec.hidden_size, spec.bias, options));
}

at::Tensor FeedForward::forward(const at::Tensor& x) const {
  auto gate = w1_->forward(x);
  gate = spec_.activation == "gelu_tanh" ? at::gelu(gate, "tanh") : at::silu(gate);
  return w2_->forward(gate * w3_->forward(x));
}

}  // namespace olm::nn
