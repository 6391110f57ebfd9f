#include "core/nn/attention.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace olm::nn {

using olm::ErrorCode;
using olm::require;

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
  if (spec.alibi) alibi_slopes_ = alibi_slopes(spec.n_heads);
}

void Attention::check_context_parallel() const {
  const std::string why = " cannot be combined with context parallelism";
  require(spec_.backend != "explicit", ErrorCode::kInvalidConfig, "attention.backend: explicit" + why);
  require(!spec_.alibi, ErrorCode::kInvalidConfig, "attention.alibi" + why);
  require(spec_.dropout == 0.0, ErrorCode::kInvalidConfig, "attention.dropout > 0" + why);
}

void Attention::set_context_parallel(std::shared_ptr<ContextParallel> cp) {
  if (cp) check_context_parallel();
  cp_ = std::move(cp);
}

std::vector<TensorParallelSplit> Attention::tensor_parallel_splits(int64_t degree) const {
  const std::string why = " cannot be combined with tensor parallelism";
  require(!spec_.normalized, ErrorCode::kInvalidConfig, "attention.name: normalized" + why);
  require(spec_.n_heads % degree == 0, ErrorCode::kInvalidConfig,
          "attention.n_heads: " + std::to_string(spec_.n_heads) + " heads do not split over tensor_parallel.degree " +
              std::to_string(degree));
  std::vector<TensorParallelSplit> splits;
  auto linear = [&](const std::string& name, int64_t dim) {
    splits.push_back({name + ".weight", dim});
    if (spec_.bias && dim == 0) splits.push_back({name + ".bias", 0});
  };
  const bool kv_split = kv_heads_split(degree);
  linear("w_q", 0);
  if (kv_split) {
    linear("w_k", 0);
    linear("w_v", 0);
  }
  linear("w_out", 1);
  if (w_g_) linear("w_g", 0);
  if (q_norm_ && !spec_.use_head_qk_norm) {
    const bool affine = spec_.qk_norm->elementwise_affine, bias = affine && spec_.qk_norm->bias;
    std::vector<std::string> norms{"q_norm"};
    if (kv_split) norms.push_back("k_norm");
    for (const auto& norm : norms) {
      if (affine) splits.push_back({norm + ".weight", 0});
      if (bias) splits.push_back({norm + ".bias", 0});
    }
  }
  return splits;
}

void Attention::set_tensor_parallel(std::shared_ptr<TensorParallel> tp) {
  if (!tp) {
    require(!tp_, ErrorCode::kInvalidArgument, "attention: tensor parallelism cannot be reverted (its weights are split)");
    return;
  }
  const int64_t degree = tp->size(), heads = spec_.n_heads / degree, first = tp->rank() * heads;
  const int64_t n_rep = spec_.n_heads / spec_.n_kv_heads;
  const bool kv_split = kv_heads_split(degree);
  // With split KV heads this rank computes kv heads [first / n_rep, ...); else all of them.
  const int64_t kv_first = kv_split ? tp->rank() * (spec_.n_kv_heads / degree) : 0;
  kv_index_ = at::arange(first, first + heads, at::kLong).div(n_rep, "floor") - kv_first;
  if (q_norm_ && !spec_.use_head_qk_norm) {
    q_norm_->set_tensor_parallel(tp);
    if (kv_split) k_norm_->set_tensor_parallel(tp);
  }
  if (!alibi_slopes_.empty())
    alibi_slopes_ = std::vector<double>(alibi_slopes_.begin() + first, alibi_slopes_.begin() + first + heads);
  tp_ = std::move(tp);
}

void Attention::normalize_matrices() {
  for (Linear* w : {w_q_.get(), w_k_.get(), w_v_.get()}) w->weight().copy_(l2_normalize(w->weight(), -1));
  w_out_->weight().copy_(l2_normalize(w_out_->weight(), 0));
}

std::vector<double> alibi_slopes(int64_t n) {
  auto power_of_two = [](int64_t m) {
    std::vector<double> out;
    const double start = std::pow(2.0, -8.0 / static_cast<double>(m));
    for (int64_t i = 0; i < m; ++i) out.push_back(std::pow(start, static_cast<double>(i + 1)));
    return out;
  };
  int64_t p = 1;
  while (p * 2 <= n) p *= 2;
  auto slopes = power_of_two(p);
  if (p == n) return slopes;
  const auto extra = alibi_slopes(2 * p);
  for (int64_t i = 0; i < n - p; ++i) slopes.push_back(extra[static_cast<size_t>(2 * i)]);
  return slopes;
}

at::Tensor document_positions(const at::Tensor& cu_doc_lens, int64_t batch, int64_t seq_len,
                              int64_t max_doc_len, const std::string& argument) {
  require(cu_doc_lens.defined(), ErrorCode::kInvalidArgument, argument + ": undefined tensor");
  require(cu_doc_lens.scalar_type() == at::kInt || cu_doc_lens.scalar_type() == at::kLong,
          ErrorCode::kInvalidArgument,
          argument + ": dtype must be int32 or int64 (got " + c10::toString(cu_doc_lens.scalar_type()) + ")");
  require(cu_doc_lens.dim() == 1 && cu_doc_lens.size(0) >= 2, ErrorCode::kInvalidArgument,
          argument + ": must be 1-D with at least 2 elements (0 and batch * seq_len)");
  const int64_t total = batch * seq_len;
  auto cu = cu_doc_lens.to(at::kLong);
  require(cu[0].item<int64_t>() == 0, ErrorCode::kInvalidArgument, argument + ": must start at 0");
  require(cu[-1].item<int64_t>() == total, ErrorCode::kInvalidArgument,
          argument + ": must end at batch * seq_len = " + std::to_string(total) + " (got " +
              std::to_string(cu[-1].item<int64_t>()) + ")");
  require(cu.slice(0, 1).ge(cu.slice(0, 0, -1)).all().item<bool>(), ErrorCode::kInvalidArgument,
          argument + ": must be non-decreasing");
  // olmo_core.nn.rope: doc_id = bucketize(flat_idx, cu_doc_lens[1:], right=True).
  auto flat = at::arange(total, cu.options());
  auto doc = at::bucketize(flat, cu.slice(0, 1), /*out_int32=*/false, /*right=*/true);
  auto pos = (flat - cu.index_select(0, doc)).view({batch, seq_len});
  require(pos.select(1, 0).eq(0).all().item<bool>(), ErrorCode::kInvalidArgument,
          argument + ": every row must start a document (multiples of seq_len = " +
              std::to_string(seq_len) + " must be boundaries)");
  if (max_doc_len > 0) {
    const int64_t longest = pos.max().item<int64_t>() + 1;
    require(longest <= max_doc_len, ErrorCode::kInvalidArgument,
            "max_doc_len (" + std::to_string(max_doc_len) + ") is less than the longest document (" +
                std::to_string(longest) + ")");
  }
  return pos;
}

at::Tensor Attention::forward(const at::Tensor& x_in, KVCache* cache, const at::Tensor& doc_positions) const {
  require(!(tp_ && cache), ErrorCode::kInvalidArgument, "a KV cache cannot be combined with tensor parallelism");
  // Under TP x_in is this rank's sequence shard; the heads need the whole sequence.
  const at::Tensor x = tp_ ? tp_->gather_sequence(x_in) : x_in;
  const int64_t B = x.size(0), T = x.size(1);
  const bool docs = doc_positions.defined();
  // As OLMo-core's RoPE: cu_doc_lens and start_pos are mutually exclusive.
  require(!(docs && cache), ErrorCode::kInvalidArgument, "document masking cannot be combined with a KV cache");
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
  if (rope_) std::tie(q, k) = docs ? rope_->apply_at(q, k, doc_positions) : rope_->apply(q, k, start);
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
  if (tp_) {
    const auto index = kv_index_.to(k.device());
    k = k.index_select(2, index);
    v = v.index_select(2, index);
  } else if (n_rep > 1) {
    k = k.unsqueeze(3).expand({B, S, spec_.n_kv_heads, n_rep, spec_.head_dim})
            .reshape({B, S, spec_.n_heads, spec_.head_dim});
    v = v.unsqueeze(3).expand({B, S, spec_.n_kv_heads, n_rep, spec_.head_dim})
            .reshape({B, S, spec_.n_heads, spec_.head_dim});
  }
  // nGPT's unit-norm queries and keys want a softmax scale of sqrt(head_dim), OLMo-core's
  // sqrt(d_model // n_heads); everything else SDPA's default 1/sqrt(head_dim).
  std::optional<double> scale;
  if (sq_) scale = std::sqrt(static_cast<double>(static_cast<int64_t>(d_model_) / spec_.n_heads));
  at::Tensor att;
  if (cp_) {
    require(docs && !cache, ErrorCode::kInvalidArgument,
            "context parallelism needs every token's position (doc_positions) and no KV cache");
    att = cp_->attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), doc_positions, spec_.window_size,
                         scale);
    return finish(x, att.transpose(1, 2));
  }
  const double dropout = at::GradMode::is_enabled() ? spec_.dropout : 0.0;
  const bool explicit_softmax = spec_.backend == "explicit";
  // Query i sits at absolute position start + i and sees keys 0..start+i, and with a sliding
  // window only the last `window` of them (OLMo-core's mask: window_size = (w - 1, 0)); with
  // documents only keys of its own document (those at most doc_positions[b, i] before it).
  // Without a cache prefix, window or documents that is SDPA's own causal mask.
  std::optional<at::Tensor> mask;  // bool, (T, S) or (B, 1, T, S)
  const bool alibi = !alibi_slopes_.empty();
  const bool plain_causal = start == 0 && !spec_.window_size && !docs && !alibi;
  std::optional<at::Tensor> bias;  // ALiBi: float32 (1, H, T, S)
  if (explicit_softmax || alibi || (!plain_causal && (T > 1 || spec_.window_size))) {
    auto rows = at::arange(T, x.options().dtype(at::kLong)).unsqueeze(1) + start;
    auto cols = at::arange(S, x.options().dtype(at::kLong)).unsqueeze(0);
    auto allowed = cols.le(rows);
    if (spec_.window_size) allowed = allowed.logical_and(cols.gt(rows - *spec_.window_size));
    if (docs) {
      auto first = (rows.unsqueeze(0) - doc_positions.to(x.device()).unsqueeze(2));  // (B, T, 1)
      allowed = allowed.unsqueeze(0).logical_and(cols.unsqueeze(0).ge(first)).unsqueeze(1);
    }
    mask = allowed;
    if (alibi) {
      // slope_h * (key position - query position): 0 on the diagonal, more negative further back.
      auto slopes = at::tensor(alibi_slopes_, at::TensorOptions().dtype(at::kDouble)).to(x.device(), at::kFloat);
      bias = slopes.view({1, -1, 1, 1}) * (cols - rows).to(at::kFloat).unsqueeze(0).unsqueeze(0);
    }
  }
  // (B, H, T, D) for the attention products.
  auto qh = q.transpose(1, 2), kh = k.transpose(1, 2), vh = v.transpose(1, 2);
  if (explicit_softmax) {
    // softmax(q k^T / sqrt(d), soft-capped and masked) v, the scores and softmax in float32.
    auto scores = at::matmul(qh.to(at::kFloat), kh.to(at::kFloat).transpose(-2, -1)) *
                  scale.value_or(1.0 / std::sqrt(static_cast<double>(spec_.head_dim)));
    if (spec_.softcap) scores = at::tanh(scores / *spec_.softcap) * *spec_.softcap;
    if (bias) scores = scores + *bias;
    scores = scores.masked_fill(mask->logical_not(), -std::numeric_limits<double>::infinity());
    auto probs = at::softmax(scores, -1);
    if (dropout > 0) probs = at::dropout(probs, dropout, /*train=*/true);
    att = at::matmul(probs.to(vh.scalar_type()), vh);
  } else {
    if (bias) {
      // SDPA takes one additive mask: the bias with -inf where the boolean mask forbids.
      auto additive = bias->masked_fill(mask->logical_not(), -std::numeric_limits<double>::infinity());
      mask = additive.to(qh.scalar_type());
    }
    att = at::scaled_dot_product_attention(qh, kh, vh, mask, dropout, plain_causal && T > 1, scale);
  }
  return finish(x, att.transpose(1, 2));
}

at::Tensor Attention::finish(const at::Tensor& x, at::Tensor att) const {
  const int64_t B = x.size(0), T = x.size(1);
  if (w_g_) {
    // A sigmoid gate per head (broadcast over head_dim) or per element.
    auto g = w_g_->forward(x);
    if (spec_.gate->full_precision) g = g.to(at::kFloat);
    auto gate = at::sigmoid(g).to(att.scalar_type());
    att = spec_.gate->elementwise ? att.reshape({B, T, -1}) * gate : att * gate.unsqueeze(-1);
  }
  att = att.contiguous().view({B, T, -1});
  if (!tp_) return w_out_->forward(att);
  // Row-parallel: this rank's heads' share of the output, summed over the group into sequence
  // shards; the bias once, after the sum.
  auto out = tp_->reduce_scatter_sequence(at::linear(att, w_out_->weight()));
  return w_out_->bias() ? out + *w_out_->bias() : out;
}

}  // namespace olm::nn
