#include "core/nn/moe.h"

#include <cmath>

namespace olm::nn {

MoERouter::MoERouter(int64_t d_model, const MoESpec& spec, const at::TensorOptions& options)
    : d_model_(d_model),
      spec_(spec),
      weight_(register_parameter("weight", at::zeros({spec.num_experts * d_model}, options))) {
  if (spec.router.bias_gamma) {
    // A float32 persistent buffer, as OLMo-core's register_buffer("score_bias", zeros(E)).
    score_bias_ = &register_buffer("score_bias", at::zeros({spec.num_experts}, options.dtype(at::kFloat)));
  }
}

namespace {

// Undefined: no loss yet.
void add_loss(at::Tensor& into, const at::Tensor& value) {
  if (value.defined()) into = into.defined() ? into + value : value;
}

}  // namespace

void MoEAuxLosses::add(const MoEAuxLosses& other) {
  add_loss(lb_loss, other.lb_loss);
  add_loss(router_z_loss, other.router_z_loss);
}

MoERouter::Routing MoERouter::forward(const at::Tensor& x_in, MoEAuxLosses* aux) const {
  const int64_t E = spec_.num_experts, k = spec_.router.top_k;
  const int64_t B = x_in.size(0), S = x_in.size(1);
  const bool training = at::GradMode::is_enabled();
  at::Tensor x = x_in;
  if (training && spec_.router.jitter_eps) {
    const double low = 1.0 - *spec_.router.jitter_eps, high = 1.0 + *spec_.router.jitter_eps;
    x = x * (low + at::rand_like(x) * (high - low));
  }
  // get_expert_logits: F.linear(x.float(), W.view(E, d).float()), then .float().
  const auto logits = at::linear(x.to(at::kFloat), weight_.view({E, d_model_}).to(at::kFloat)).to(at::kFloat);
  at::Tensor scores = spec_.router.sigmoid ? at::sigmoid(logits) + 1e-7 : logits.softmax(-1);

  Routing r;
  if (!score_bias_) {
    if (k == 1) {
      std::tie(r.weights, r.indices) = scores.max(-1, /*keepdim=*/true);
    } else {
      std::tie(r.weights, r.indices) = at::topk(scores, k, -1);
    }
  } else {
    {
      at::NoGradGuard no_grad;
      r.indices = std::get<1>(at::topk(scores + score_bias_->unsqueeze(0), k, -1));
    }
    r.weights = scores.gather(-1, r.indices);
  }
  if (spec_.router.normalize_expert_weights) {
    r.weights = r.weights / at::norm(r.weights, *spec_.router.normalize_expert_weights, {-1}, /*keepdim=*/true);
  }

  at::Tensor batched_load;  // (B, E): ops.batched_histc summed over the sequence
  {
    at::NoGradGuard no_grad;
    auto flat = r.indices.reshape({B, S * k});
    batched_load = at::zeros({B, E}, flat.options()).scatter_add_(1, flat, at::ones_like(flat));
    r.batch_size_per_expert = batched_load.sum(0);
    if (training && score_bias_) {
      if (!pending_load_.defined()) pending_load_ = at::zeros({E}, weight_.options().dtype(at::kFloat));
      pending_load_ += r.batch_size_per_expert;
    }
  }

  if (aux) {
    if (spec_.lb_loss_weight) {
      // olmo_core.nn.moe.loss.load_balancing_loss; sigmoid scores are normalized first.
      auto s = spec_.router.sigmoid ? scores / scores.sum(-1, /*keepdim=*/true) : scores;
      at::Tensor loss;
      if (spec_.lb_loss_instance) {
        const auto load = batched_load.to(s.scalar_type());
        const auto per_instance = s.view({B, -1, E}).mean(1);
        const auto div = aux->loss_div.defined() ? aux->loss_div : load.sum() / static_cast<double>(k);
        loss = (per_instance * load).sum() / div;
      } else {
        const auto load = r.batch_size_per_expert.to(s.scalar_type());
        loss = at::dot(load, s.view({-1, E}).mean(0));
        loss = aux->loss_div.defined() ? loss / aux->loss_div : loss / static_cast<double>(B * S);
      }
      loss = loss * (static_cast<double>(E) / static_cast<double>(k)) * *spec_.lb_loss_weight;
      add_loss(aux->lb_loss, loss);
    }
    if (spec_.z_loss_weight) {
      // olmo_core.nn.moe.loss.router_z_loss.
      auto z = logits.logsumexp(-1).square().sum();
      z = aux->loss_div.defined() ? z / aux->loss_div : z / static_cast<double>(B * S);
      z = z * *spec_.z_loss_weight;
      add_loss(aux->router_z_loss, z);
    }
  }
  return r;
}

void MoERouter::post_batch(const std::function<void(at::Tensor&)>& sum_across_ranks) {
  if (!score_bias_ || !pending_load_.defined()) return;
  at::NoGradGuard no_grad;
  // As OLMo-core: the expert loads are summed over the data-parallel group first, so every
  // rank moves its bias the same way.
  if (sum_across_ranks) sum_across_ranks(pending_load_);
  const auto ideal = pending_load_.mean(0, /*keepdim=*/true);
  score_bias_->add_((ideal - pending_load_).sign() * *spec_.router.bias_gamma);
  pending_load_.zero_();
}

MoEMLP::MoEMLP(int64_t d_model, const MoESpec& spec, const at::TensorOptions& options)
    : d_model_(d_model),
      hidden_(spec.hidden_size),
      experts_(spec.num_experts),
      dropless_(spec.dropless),
      w1_(register_parameter("w1", spec.dropless ? at::zeros({experts_ * hidden_, d_model}, options)
                                                 : at::zeros({experts_ * d_model, hidden_}, options))),
      w2_(register_parameter("w2", at::zeros({experts_ * hidden_, d_model}, options))),
      w3_(register_parameter("w3", spec.dropless ? at::zeros({experts_ * hidden_, d_model}, options)
                                                 : at::zeros({experts_ * d_model, hidden_}, options))) {}

at::Tensor MoEMLP::forward(const at::Tensor& x_in) const {
  const auto x = x_in.to(w1_.scalar_type());
  at::Tensor w1, w3;
  if (dropless_) {  // x @ w[e]^T with w[e] (hidden, d_model)
    w1 = w1_.view({experts_, hidden_, d_model_}).transpose(1, 2);
    w3 = w3_.view({experts_, hidden_, d_model_}).transpose(1, 2);
  } else {
    w1 = w1_.view({experts_, d_model_, hidden_});
    w3 = w3_.view({experts_, d_model_, hidden_});
  }
  const auto w2 = w2_.view({experts_, hidden_, d_model_});
  return at::bmm(at::silu(at::bmm(x, w1)) * at::bmm(x, w3), w2).to(x_in.scalar_type());
}

MoEExperts::MoEExperts(int64_t d_model, const MoESpec& spec, const at::TensorOptions& options) : spec_(spec) {
  mlp_ = register_module("mlp", std::make_shared<MoEMLP>(d_model, spec, options));
}

int64_t MoEExperts::capacity(int64_t tokens) const {
  // ideal = top_k * tokens / num_experts (a Python float); ensure_multiple_of(int(cf * ideal), 8).
  const double ideal = static_cast<double>(spec_.router.top_k * tokens) / static_cast<double>(spec_.num_experts);
  const auto allowed = static_cast<int64_t>(spec_.capacity_factor * ideal);
  return 8 * static_cast<int64_t>(std::ceil(static_cast<double>(allowed) / 8.0));
}

at::Tensor MoEExperts::forward(const at::Tensor& x_in, const MoERouter::Routing& routing) const {
  const int64_t E = spec_.num_experts, k = spec_.router.top_k, d = x_in.size(-1);
  const auto x = x_in.reshape({-1, d});
  const int64_t N = x.size(0);
  const auto weights = routing.weights.reshape({-1});

  // Sort the N * k (token, choice) pairs by expert, stably (first come, first served within an
  // expert, which decides what a full expert drops), and give each kept pair a slot in the
  // (E, capacity) buffer: expert * capacity + its rank among the expert's pairs.
  at::Tensor order, slot;
  int64_t capacity = 0;
  {
    at::NoGradGuard no_grad;
    auto [bin_ids, sorted_order] = at::sort(routing.indices.reshape({-1}), /*stable=*/true, 0, false);
    const auto load = routing.batch_size_per_expert.to(at::kLong);
    const auto starts = load.cumsum(0) - load;
    const auto rank = at::arange(N * k, bin_ids.options()) - starts.index_select(0, bin_ids);
    capacity = spec_.dropless ? load.max().item<int64_t>() : this->capacity(N);
    const auto keep = rank < capacity;
    order = sorted_order.masked_select(keep);
    slot = bin_ids.masked_select(keep) * capacity + rank.masked_select(keep);
  }
  const auto tokens = order.div(k, "floor");
  auto packed = at::zeros({E * capacity, d}, x.options()).index_copy(0, slot, x.index_select(0, tokens));
  auto y = mlp_->forward(packed.view({E, capacity, d})).view({E * capacity, d}).index_select(0, slot);
  // Weighted in float32, stored in the activation dtype, summed over the k choices.
  y = (y.to(at::kFloat) * weights.index_select(0, order).to(at::kFloat).unsqueeze(1)).to(x.scalar_type());
  auto out = at::zeros({N * k, d}, x.options()).index_copy(0, order, y).view({N, k, d});
  return (k > 1 ? out.sum(1) : out.view({N, d})).view(x_in.sizes());
}

MoE::MoE(int64_t d_model, const MoESpec& spec, const at::TensorOptions& options) : spec_(spec) {
  router_ = register_module("router", std::make_shared<MoERouter>(d_model, spec, options));
  experts_ = register_module("experts", std::make_shared<MoEExperts>(d_model, spec, options));
  if (spec.shared_mlp)
    shared_mlp_ = register_module("shared_mlp", std::make_shared<FeedForward>(d_model, *spec.shared_mlp, options));
}

at::Tensor MoE::forward(const at::Tensor& x, MoEAuxLosses* aux) const {
  const auto routing = router_->forward(x, aux);
  auto out = experts_->forward(x, routing);
  if (shared_mlp_) {
    const auto k = static_cast<double>(spec_.router.top_k);
    out = at::add(shared_mlp_->forward(x) / (k + 1), out, k / (k + 1));
  }
  return out;
}

}  // namespace olm::nn
