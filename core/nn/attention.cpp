#include "core/nn/attention.h"

#include <cmath>

namespace olm::nn {

Attention::Attention(int64_t d_model, const AttentionSpec& spec, std::shared_ptr<BufferCache> cache,
                     const at::TensorOptions& options)
    : spec_(spec) {
  const int64_t q_dim = spec.n_heads * spec.head_dim;
  const int64_t kv_dim = spec.n_kv_heads * spec.head_dim;
  // Registration order is OLMo-core's: w_q, w_k, w_v, w_out, q_norm, k_norm.
  w_q_ = register_module("w_q", std::make_shared<Linear>(d_model, q_dim, spec.bias, options));
  w_k_ = register_module("w_k", std::make_shared<Linear>(d_model, kv_dim, spec.bias, options));
  w_v_ = register_module("w_v", std::make_shared<Linear>(d_model, kv_dim, spec.bias, options));
  w_out_ = register_module("w_out", std::make_shared<Linear>(q_dim, d_model, spec.bias, options));
  if (spec.gate) {
    const int64_t outputs = spec.gate->elementwise ? q_dim : spec.n_heads;
    w_g_ = register_module("w_g", std::make_shared<Linear>(d_model, outputs, spec.bias, options));
  }
  if (spec.qk_norm) {
    const int64_t q_size = spec.use_head_qk_norm ? spec.head_dim : q_dim;
    const int64_t k_size = spec.use_head_qk_norm ? spec.head_dim : kv_dim;
    q_norm_ = register_module("q_norm", std::make_shared<LayerNorm>(q_size, *spec.qk_norm, options));
    k_norm_ = register_module("k_norm", std::make_shared<LayerNorm>(k_size, *spec.qk_norm, options));
  }
  if (spec.normalized) {
    // OLMo-core's NormalizedAttention: ones scaled by 1/sqrt(d_model) at construction.
    d_model_ = static_cast<double>(d_model);
    const double scaling = 1.0 / std::sqrt(d_model_);
    sq_ = &register_parameter("sq", at::ones({q_dim}, options).mul_(scaling));
    sk_ = &register_parameter("sk", at::ones({kv_dim}, options).mul_(scaling));
  }
  if (spec.rope) rope_.emplace(spec.head_dim, *spec.rope, std::move(cache));
}

void Attention::normalize_matrices() {
  for (Linear* w : {w_q_.get(), w_k_.get(), w_v_.get()}) w->weight().copy_(l2_normalize(w->weight(), -1));
  w_out_->weight().copy_(l2_normalize(w_out_->weight(), 0));
}

at::Tensor Attention::forward(const at::Tensor& x, KVCache* cache) const {
  const int64_t B = x.size(0), T = x.size(1);
  at::Tensor q = w_q_->forward(x), k = w_k_->forward(x), v = w_v_->forward(x);
  if (spec_.clip_qkv) {
    const double c = *spec_.clip_qkv;
    q = q.clamp(-c, c);
    k = k.clamp(-c, c);
    v = v.clamp(-c, c);
  }
  if (q_norm_ && !spec_.use_head_qk_norm) {
    q = q_norm_->forward(q);
    k = k_norm_->forward(k);
  }
  if (sq_) {
    // Effective scales sq * (init_value / init_scaling), with OLMo-core's Python-float factor.
    const double factor = 1.0 / (1.0 / std::sqrt(d_model_));
    q = (*sq_ * factor).view({1, 1, -1}) * q;
    k = (*sk_ * factor).view({1, 1, -1}) * k;
  }
  q = q.view({B, T, -1, spec_.head_dim});
  k = k.view({B, T, -1, spec_.head_dim});
  v = v.view({B, T, -1, spec_.head_dim});
  if (q_norm_ && spec_.use_head_qk_norm) {
    q = q_norm_->forward(q);
    k = k_norm_->forward(k);
  }
  const int64_t start = cache ? cache->length : 0;
  if (rope_) std::tie(q, k) = rope_->apply(q, k, start);
  if (cache) {
    TORCH_CHECK(start + T <= cache->k.size(1), "KV cache overflow");
    cache->k.slice(1, start, start + T).copy_(k);
    cache->v.slice(1, start, start + T).copy_(v);
    cache->length = start + T;
    k = cache->k.slice(1, 0, start + T);
    v = cache->v.slice(1, 0, start + T);
  }
  const int64_t S = k.size(1);

  // GQA: repeat each KV head for its group of query heads, as OLMo-core's torch backend does.
  const int64_t n_rep = spec_.n_heads / spec_.n_kv_heads;
  if (n_rep > 1) {
    k = k.unsqueeze(3).expand({B, S, spec_.n_kv_heads, n_rep, spec_.head_dim})
            .reshape({B, S, spec_.n_heads, spec_.head_dim});
    v = v.unsqueeze(3).expand({B, S, spec_.n_kv_heads, n_rep, spec_.head_dim})
            .reshape({B, S, spec_.n_heads, spec_.head_dim});
  }
  // SDPA wants (B, H, T, D).
  const double dropout = at::GradMode::is_enabled() ? spec_.dropout : 0.0;
  // Query i sits at absolute position start + i and sees keys 0..start+i, and with a sliding
  // window only the last `window` of them (OLMo-core's mask: window_size = (w - 1, 0)).
  // Without a cache prefix or window that is SDPA's own causal mask.
  std::optional<at::Tensor> mask;
  const bool plain_causal = start == 0 && !spec_.window_size;
  if (!plain_causal && (T > 1 || spec_.window_size)) {
    auto rows = at::arange(T, x.options().dtype(at::kLong)).unsqueeze(1) + start;
    auto cols = at::arange(S, x.options().dtype(at::kLong)).unsqueeze(0);
    auto allowed = cols.le(rows);
    if (spec_.window_size) allowed = allowed.logical_and(cols.gt(rows - *spec_.window_size));
    mask = allowed;
  }
  // nGPT's unit-norm queries and keys want a softmax scale of sqrt(head_dim), OLMo-core's
  // sqrt(d_model // n_heads); everything else SDPA's default 1/sqrt(head_dim).
  std::optional<double> scale;
  if (sq_) scale = std::sqrt(static_cast<double>(static_cast<int64_t>(d_model_) / spec_.n_heads));
  auto att = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask,
                                              dropout, plain_causal && T > 1, scale);
  att = att.transpose(1, 2);  // (B, T, H, D)
  if (w_g_) {
    // A sigmoid gate per head (broadcast over head_dim) or per element.
    auto g = w_g_->forward(x);
    if (spec_.gate->full_precision) g = g.to(at::kFloat);
    auto gate = at::sigmoid(g).to(att.scalar_type());
    att = spec_.gate->elementwise ? att.reshape({B, T, -1}) * gate : att * gate.unsqueeze(-1);
  }
  att = att.contiguous().view({B, T, -1});
  return w_out_->forward(att);
}

}  // namespace olm::nn
