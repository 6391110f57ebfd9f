// The validators the resolution steps share, and the leaf tables: layer norm, feed-forward, MoE.
#include "core/config/internal.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace olm {
namespace config_internal {

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

void require_one_of(const std::string& value, const std::vector<std::string>& known,
                    const std::string& field) {
  for (const auto& k : known)
    if (value == k) return;
  fail(ErrorCode::kInvalidConfig,
       field + ": unknown value '" + value + "' (known: " + join(known) + ")");
}

std::string or_default(const std::string& value, const char* fallback) {
  return value.empty() ? std::string(fallback) : value;
}

void require_positive(int64_t value, const std::string& field) {
  require(value > 0, ErrorCode::kInvalidConfig,
          field + " must be positive (got " + std::to_string(value) + ")");
}

void require_positive_finite(double value, const std::string& field) {
  std::ostringstream os;
  os << field << " must be a positive finite number (got " << value << ")";
  require(std::isfinite(value) && value > 0, ErrorCode::kInvalidConfig, os.str());
}

void require_probability(double value, const std::string& field) {
  std::ostringstream os;
  os << field << " must be in [0, 1) (got " << value << ")";
  require(std::isfinite(value) && value >= 0 && value < 1, ErrorCode::kInvalidConfig, os.str());
}

LayerNormSpec resolve_layer_norm(const fb::LayerNormConfigT& in, const std::string& field) {
  LayerNormSpec out;
  out.name = or_default(in.name, "default");
  require_one_of(out.name, {"default", "rms", "qwen_rms", "l2_norm"}, field + ".name");
  out.eps = in.eps.has_value() ? *in.eps : 1e-5;
  require_positive_finite(out.eps, field + ".eps");
  // OLMo-core's L2Norm has no parameters (and refuses them).
  const bool l2 = out.name == "l2_norm";
  out.elementwise_affine = in.elementwise_affine.has_value() ? *in.elementwise_affine : !l2;
  out.bias = in.bias.has_value() ? *in.bias : !l2;
  require(!l2 || (!out.elementwise_affine && !out.bias), ErrorCode::kInvalidConfig,
          field + ": l2_norm has no parameters (elementwise_affine and bias must be false or unset)");
  out.full_precision = in.full_precision.has_value() ? *in.full_precision : true;
  return out;
}

FeedForwardSpec resolve_feed_forward(const fb::FeedForwardConfigT& in, int64_t d_model, const std::string& field) {
  FeedForwardSpec out;
  out.name = or_default(in.name, "default");
  require_one_of(out.name, {"default", "classic", "normalized"}, field + ".name");
  out.hidden_size = in.hidden_size;
  if (in.ff_multiplier.has_value()) {
    require(in.hidden_size == 0, ErrorCode::kInvalidConfig,
            field + ": give hidden_size or ff_multiplier, not both");
    require_positive_finite(*in.ff_multiplier, field + ".ff_multiplier");
    // OLM: int(ff_multiplier * embed_dim), truncated as Python's int() does.
    const double hidden = *in.ff_multiplier * static_cast<double>(d_model);
    require(hidden < 2147483648.0, ErrorCode::kInvalidConfig, field + ".ff_multiplier is absurdly large");
    out.hidden_size = static_cast<int64_t>(hidden);
  }
  require_positive(out.hidden_size, field + ".hidden_size");
  out.bias = in.bias.has_value() ? *in.bias : out.name != "normalized";
  out.activation = or_default(in.activation, "silu");
  require_one_of(out.activation, activation_names(), field + ".activation");
  if (out.name == "normalized") {
    require(!out.bias, ErrorCode::kInvalidConfig, field + ".bias: the normalized feed-forward has no biases");
    require(out.activation == "silu", ErrorCode::kInvalidConfig,
            field + ".activation: the normalized feed-forward supports only 'silu' (got '" + out.activation + "')");
  }
  return out;
}

// olmo_core.nn.moe.MoEConfig / MoERouterConfig. OLMo-core raises on the same impossible
// settings (top_k > num_experts in torch.topk, capacity_factor with dropless as a TypeError).
MoESpec resolve_moe(const fb::MoEConfigT& in, int64_t d_model, int64_t n_layers, const std::string& field) {
  MoESpec out;
  const std::string name = or_default(in.name, "default");
  require_one_of(name, {"default", "dropless"}, field + ".name");
  out.dropless = name == "dropless";
  out.num_experts = in.num_experts;
  require_positive(out.num_experts, field + ".num_experts");
  out.hidden_size = in.hidden_size;
  require_positive(out.hidden_size, field + ".hidden_size");
  if (in.capacity_factor.has_value()) {
    require(!out.dropless, ErrorCode::kInvalidConfig,
            field + ".capacity_factor: not allowed with " + field + ".name 'dropless' (dropless MoEs have no capacity)");
    require_positive_finite(*in.capacity_factor, field + ".capacity_factor");
    out.capacity_factor = *in.capacity_factor;
  }
  const std::string rf = field + ".router";
  if (const auto* r = in.router.get()) {
    require_one_of(or_default(r->name, "default"), {"default"}, rf + ".name");
    out.router.top_k = r->top_k;
    if (r->jitter_eps.has_value()) {
      require(std::isfinite(*r->jitter_eps) && *r->jitter_eps >= 0 && *r->jitter_eps < 1,
              ErrorCode::kInvalidConfig, rf + ".jitter_eps must be in [0, 1)");
      out.router.jitter_eps = *r->jitter_eps;
    }
    if (r->normalize_expert_weights.has_value()) {
      require_positive_finite(*r->normalize_expert_weights, rf + ".normalize_expert_weights");
      out.router.normalize_expert_weights = *r->normalize_expert_weights;
    }
    if (r->bias_gamma.has_value()) {
      require_positive_finite(*r->bias_gamma, rf + ".bias_gamma");  // OLMo-core asserts > 0
      out.router.bias_gamma = *r->bias_gamma;
    }
    const std::string gating = or_default(r->gating_function, "softmax");
    require_one_of(gating, {"softmax", "sigmoid"}, rf + ".gating_function");
    out.router.sigmoid = gating == "sigmoid";
  }
  require_positive(out.router.top_k, rf + ".top_k");
  require(out.router.top_k <= out.num_experts, ErrorCode::kInvalidConfig,
          rf + ".top_k (" + std::to_string(out.router.top_k) + ") must not exceed " + field +
              ".num_experts (" + std::to_string(out.num_experts) + ")");
  if (in.shared_mlp) out.shared_mlp = resolve_feed_forward(*in.shared_mlp, d_model, field + ".shared_mlp");
  const double scale = in.scale_loss_by_num_layers ? static_cast<double>(n_layers) : 1.0;
  const double lb = in.lb_loss_weight.value_or(0.01);
  require(std::isfinite(lb) && lb >= 0, ErrorCode::kInvalidConfig, field + ".lb_loss_weight must be finite and >= 0");
  if (lb > 0) out.lb_loss_weight = lb / scale;
  const std::string granularity = or_default(in.lb_loss_granularity, "local_batch");
  require_one_of(granularity, {"local_batch", "instance"}, field + ".lb_loss_granularity");
  out.lb_loss_instance = granularity == "instance";
  if (in.z_loss_weight.has_value()) {
    require(std::isfinite(*in.z_loss_weight) && *in.z_loss_weight >= 0, ErrorCode::kInvalidConfig,
            field + ".z_loss_weight must be finite and >= 0");
    out.z_loss_weight = *in.z_loss_weight / scale;
  }
  return out;
}

}  // namespace config_internal

}  // namespace olm
