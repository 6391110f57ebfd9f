#include "core/nn/feed_forward.h"

#include "core/nn/activation.h"

#include <cmath>

#include "core/error.h"
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

std::vector<TensorParallelSplit> FeedForward::tensor_parallel_splits(int64_t degree) const {
  require(spec_.name != "normalized", ErrorCode::kInvalidConfig,
          "feed_forward.name: normalized cannot be combined with tensor parallelism");
  require(spec_.hidden_size % degree == 0, ErrorCode::kInvalidConfig,
          "feed_forward.hidden_size: " + std::to_string(spec_.hidden_size) +
              " does not split over tensor_parallel.degree " + std::to_string(degree));
  std::vector<TensorParallelSplit> splits;
  for (std::string name : {"w1", "w2", "w3"}) {
    if (name == "w3" && !w3_) continue;
    const int64_t dim = name == "w2" ? 1 : 0;
    splits.push_back({name + ".weight", dim});
    if (spec_.bias && dim == 0) splits.push_back({name + ".bias", 0});
  }
  return splits;
}

at::Tensor FeedForward::forward(const at::Tensor& x_in) const {
  if (tp_) {
    const auto x = tp_->gather_sequence(x_in);
    auto h = activate(spec_.activation, w1_->forward(x));
    // Row-parallel w2: the bias once, after the sum over the group.
    auto out = tp_->reduce_scatter_sequence(at::linear(w3_ ? h * w3_->forward(x) : h, w2_->weight()));
    return w2_->bias() ? out + *w2_->bias() : out;
  }
  const at::Tensor& x = x_in;
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
