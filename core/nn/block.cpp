#include "core/nn/block.h"

#include <cmath>

#include "core/error.h"

namespace olm::nn {

TransformerBlock::TransformerBlock(int64_t d_model, int64_t block_idx, const BlockSpec& spec,
                                   std::shared_ptr<BufferCache> cache,
                                   const at::TensorOptions& options)
    : spec_(spec) {
  if (spec.gated_delta_net) {
    gated_delta_net_ = register_module("attention", std::make_shared<GatedDeltaNet>(d_model, *spec.gated_delta_net, options));
  } else {
    attention_ = register_module("attention",
                                 std::make_shared<Attention>(d_model, spec.attention, std::move(cache), options));
  }
  if (spec.name == "normalized") {
    feed_forward_ = register_module("feed_forward",
                                    std::make_shared<FeedForward>(d_model, spec.feed_forward, options));
    // OLMo-core keeps these float32 and sets them to ones / sqrt(d_model) at construction.
    d_model_ = static_cast<double>(d_model);
    const double scaling = 1.0 / std::sqrt(d_model_);
    attn_alpha_ = &register_parameter("attn_alpha", at::ones({d_model}, options.dtype(at::kFloat)).mul_(scaling));
    mlp_alpha_ = &register_parameter("mlp_alpha", at::ones({d_model}, options.dtype(at::kFloat)).mul_(scaling));
    return;
  }
  attention_norm_ = register_module("attention_norm",
                                    std::make_shared<LayerNorm>(d_model, spec.layer_norm, options));
  if (spec.moe) {
    // OLMo-core's registration order: feed_forward_moe, feed_forward_norm, then the hybrid
    // blocks' feed_forward and feed_forward_moe_norm.
    moe_ = register_module("feed_forward_moe", std::make_shared<MoE>(d_model, *spec.moe, options));
    feed_forward_norm_ = register_module("feed_forward_norm",
                                         std::make_shared<LayerNorm>(d_model, spec.layer_norm, options));
    if (spec.has_feed_forward()) {
      feed_forward_ = register_module("feed_forward",
                                      std::make_shared<FeedForward>(d_model, spec.feed_forward, options));
      feed_forward_moe_norm_ = register_module("feed_forward_moe_norm",
                                               std::make_shared<LayerNorm>(d_model, spec.layer_norm, options));
    }
    return;
  }
  feed_forward_ = register_module("feed_forward",
                                  std::make_shared<FeedForward>(d_model, spec.feed_forward, options));
  feed_forward_norm_ = register_module("feed_forward_norm",
                                       std::make_shared<LayerNorm>(d_model, spec.layer_norm, options));
  if (spec.name == "peri_norm") {
    post_attention_norm_ = register_module("post_attention_norm",
                                           std::make_shared<LayerNorm>(d_model, spec.layer_norm, options));
    post_feed_forward_norm_ = register_module("post_feed_forward_norm",
                                              std::make_shared<LayerNorm>(d_model, spec.layer_norm, options));
  }
  if (spec.name == "default_scaled") {
    const double scale = 1.0 / std::sqrt(static_cast<double>(block_idx + 1));
    ln_scale_ = &register_buffer("ln_scale", at::scalar_tensor(scale, options.dtype(at::kFloat)));
  }
}

Attention& TransformerBlock::attention() {
  require(attention_ != nullptr, ErrorCode::kInternal, "this block's sequence mixer is a GatedDeltaNet, not attention");
  return *attention_;
}

at::Tensor TransformerBlock::mix(const at::Tensor& x, KVCache* cache, const at::Tensor& doc_positions) const {
  if (gated_delta_net_) return gated_delta_net_->forward(x, doc_positions, cache);
  return attention_->forward(x, cache, doc_positions);
}

at::Tensor TransformerBlock::residual(const at::Tensor& residual, const at::Tensor& x, double alpha) const {
  const bool train = at::GradMode::is_enabled() && spec_.dropout > 0.0;
  return at::add(residual, train ? at::dropout(x, spec_.dropout, /*train=*/true) : x, alpha);
}

void TransformerBlock::normalize_matrices() {
  attention_->normalize_matrices();
  feed_forward_->normalize_matrices();
}

at::Tensor TransformerBlock::forward(const at::Tensor& x, KVCache* cache, const at::Tensor& doc_positions,
                                     MoEAuxLosses* aux) const {
  if (attn_alpha_) {
    // h = norm(lerp(x, norm(attention(x)), |alpha_eff|)), likewise for the feed-forward, with
    // alpha_eff = alpha * (0.05 / (1 / sqrt(d_model))) as OLMo-core computes it.
    const double factor = 0.05 / (1.0 / std::sqrt(d_model_));
    auto h = l2_normalize(
        at::lerp(x, l2_normalize(mix(x, cache, doc_positions)), (*attn_alpha_ * factor).abs()));
    return l2_normalize(at::lerp(h, l2_normalize(feed_forward_->forward(h)), (*mlp_alpha_ * factor).abs()));
  }
  const double a = spec_.attention_residual_alpha, f = spec_.feed_forward_residual_alpha;
  if (moe_) {
    // MoE blocks take no residual alphas (validated): h + dropout(sublayer).
    const auto& name = spec_.name;
    if (name == "moe") {
      auto h = residual(x, mix(attention_norm_->forward(x), cache, doc_positions), 1.0);
      return residual(h, moe_->forward(feed_forward_norm_->forward(h), aux), 1.0);
    }
    if (name == "moe_reordered_norm") {
      auto h = residual(x, attention_norm_->forward(mix(x, cache, doc_positions)), 1.0);
      return residual(h, feed_forward_norm_->forward(moe_->forward(h, aux)), 1.0);
    }
    // Hybrid: sparse_forward(x) + dense_forward(x), the sparse branch reading the block input.
    const bool reordered = name == "moe_hybrid_reordered_norm";
    auto sparse = reordered ? feed_forward_moe_norm_->forward(moe_->forward(x, aux))
                            : moe_->forward(feed_forward_moe_norm_->forward(x), aux);
    const bool train = at::GradMode::is_enabled() && spec_.dropout > 0.0;
    if (train) sparse = at::dropout(sparse, spec_.dropout, /*train=*/true);
    at::Tensor dense;
    if (reordered) {
      auto h = residual(x, attention_norm_->forward(mix(x, cache, doc_positions)), 1.0);
      dense = residual(h, feed_forward_norm_->forward(feed_forward_->forward(h)), 1.0);
    } else {
      auto h = residual(x, mix(attention_norm_->forward(x), cache, doc_positions), 1.0);
      dense = residual(h, feed_forward_->forward(feed_forward_norm_->forward(h)), 1.0);
    }
    return sparse + dense;
  }
  if (spec_.name == "reordered_norm") {
    auto h = residual(x, attention_norm_->forward(mix(x, cache, doc_positions)), a);
    return residual(h, feed_forward_norm_->forward(feed_forward_->forward(h)), f);
  }
  if (spec_.name == "peri_norm") {
    auto h = residual(x, post_attention_norm_->forward(mix(attention_norm_->forward(x), cache, doc_positions)), a);
    return residual(h, post_feed_forward_norm_->forward(feed_forward_->forward(feed_forward_norm_->forward(h))), f);
  }
  if (spec_.name == "parallel") {
    // Both sublayers read the block input: x + attention(norm(x)) + feed_forward(norm'(x)),
    // or half that sum for the "mean" merge.
    const double merge = spec_.parallel_merge == "mean" ? 0.5 : 1.0;
    auto h = residual(x, mix(attention_norm_->forward(x), cache, doc_positions), a * merge);
    return residual(h, feed_forward_->forward(feed_forward_norm_->forward(x)), f * merge);
  }
  if (spec_.name == "default_scaled") {
    const auto scale = ln_scale_->to(x.scalar_type());
    auto h = residual(x, mix(attention_norm_->forward(x) * scale, cache, doc_positions), a);
    return residual(h, feed_forward_->forward(feed_forward_norm_->forward(h) * scale), f);
  }
  auto h = residual(x, mix(attention_norm_->forward(x), cache, doc_positions), a);
  return residual(h, feed_forward_->forward(feed_forward_norm_->forward(h)), f);
}

}  // namespace olm::nn
