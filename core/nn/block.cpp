#include "core/nn/block.h"

namespace olm::nn {

TransformerBlock::TransformerBlock(int64_t d_model, const BlockSpec& spec,
                                   std::shared_ptr<BufferCache> cache,
                                   const at::TensorOptions& options)
    : spec_(spec) {
  attention_ = register_module("attention",
                               std::make_shared<Attention>(d_model, spec.attention, std::move(cache), options));
  attention_norm_ = register_module("attention_norm",
                                    std::make_shared<LayerNorm>(d_model, spec.layer_norm, options));
  feed_forward_ = register_module("feed_forward",
                                  std::make_shared<FeedForward>(d_model, spec.feed_forward, options));
  feed_forward_norm_ = register_module("feed_forward_norm",
                                       std::make_shared<LayerNorm>(d_model, spec.layer_norm, options));
}

at::Tensor TransformerBlock::residual(const at::Tensor& residual, const at::Tensor& x) const {
  const bool train = at::GradMode::is_enabled() && spec_.dropout > 0.0;
  return residual + (train ? at::dropout(x, spec_.dropout, /*train=*/true) : x);
}

at::Tensor TransformerBlock::forward(const at::Tensor& x, KVCache* cache) const {
  if (spec_.name == "reordered_norm") {
    auto h = residual(x, attention_norm_->forward(attention_->forward(x, cache)));
    return residual(h, feed_forward_norm_->forward(feed_forward_->forward(h)));
  }
  auto h = residual(x, attention_->forward(attention_norm_->forward(x), cache));
  return residual(h, feed_forward_->forward(feed_forward_norm_->forward(h)));
}

}  // namespace olm::nn
