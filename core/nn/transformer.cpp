#include "core/nn/transformer.h"

namespace olm::nn {
static const at::TensorOptions kBuildOptions = at::TensorOptions().dtype(at::kFloat).device(at::kCPU);

Transformer::Transformer(const ModelSpec& spec)
    : spec_(spec),
      embeddings_(register_module("embeddings",
                                  std::make_shared<Embedding>(spec.vocab_size, spec.d_model, kBuildOptions))
                      ->weight()) {
  if (spec.embedding_norm)
    embedding_norm_ = register_module("embedding_norm",
                                      std::make_shared<LayerNorm>(spec.d_model, *spec.embedding_norm, kBuildOptions));
  auto cache = std::make_shared<BufferCache>();
  for (int64_t i = 0; i < spec.n_layers; ++i) {
    // Registered as "blocks.<i>" like OLMo-core's ModuleDict.
    blocks_.push_back(register_module(
        "blocks." + std::to_string(i),
        std::make_shared<TransformerBlock>(spec.d_model, i, spec.blocks[static_cast<size_t>(i)], cache, kBuildOptions)));
  }
  lm_head_ = register_module(
      "lm_head", std::make_shared<LMHead>(spec.d_model, spec.vocab_size, spec.lm_head, kBuildOptions));
}

void Transformer::to(const at::Device& device, at::ScalarType dtype) {
  std::vector<NamedParameter> buffers;
  collect_buffers("", buffers);
  for (auto& b : buffers) *b.tensor = b.tensor->to(device);  // buffers keep their dtype
  for (auto& p : named_parameters()) {
    at::Tensor moved = p.tensor->detach().to(device, dtype);
    moved.set_requires_grad(true);
    *p.tensor = moved;
  }
}

at::Tensor Transformer::hidden_states(const at::Tensor& input_ids, std::vector<KVCache>* caches,
                                     MoEAuxLosses* aux) const {
  auto h = at::embedding(embeddings_, input_ids);
  if (spec_.embed_scale) h = h * *spec_.embed_scale;
  if (embedding_norm_) h = embedding_norm_->forward(h);
  const bool grad = at::GradMode::is_enabled();
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (caches) {
      h = blocks_[i]->forward(h, &(*caches)[i], aux);
    } else if (grad && block_runner_ && i < checkpointed_.size() && checkpointed_[i]) {
      h = block_runner_(*blocks_[i], h, aux);
    } else {
      h = blocks_[i]->forward(h, nullptr, aux);
    }
  }
  return h;
}

at::Tensor Transformer::forward(const at::Tensor& input_ids, int64_t logits_to_keep,
                                std::vector<KVCache>* caches) const {
  return lm_head_->logits(hidden_states(input_ids, caches), logits_to_keep);
}

std::vector<KVCache> Transformer::make_kv_caches(int64_t batch, int64_t max_len) const {
  std::vector<KVCache> caches;
  for (const auto& block : blocks_) {
    auto& att = block->attention();
    const auto options = embeddings_.options().requires_grad(false);
    KVCache c;
    // Uninitialized: only the filled prefix [0, length) is ever read, and untouched pages of a
    // long cache cost no memory.
    c.k = at::empty({batch, max_len, att.n_kv_heads(), att.head_dim()}, options);
    c.v = at::empty_like(c.k);
    caches.push_back(std::move(c));
  }
  return caches;
}

LossOutput Transformer::loss(const at::Tensor& input_ids, const at::Tensor& labels,
                             const LossOptions& options) const {
  if (!spec_.moe) return lm_head_->loss(hidden_states(input_ids), labels, options);
  MoEAuxLosses aux;
  if (options.loss_div_tensor.defined()) {
    aux.loss_div = options.loss_div_tensor;
  } else if (options.loss_div_factor != 1.0) {
    aux.loss_div = at::scalar_tensor(options.loss_div_factor, embeddings_.options().dtype(at::kFloat));
  }
  auto out = lm_head_->loss(hidden_states(input_ids, nullptr, &aux), labels, options);
  if (aux.lb_loss.defined()) out.lb_loss = aux.lb_loss;
  if (aux.router_z_loss.defined()) out.router_z_loss = aux.router_z_loss;
  return out;
}

void Transformer::post_batch() {
  for (auto& block : blocks_)
    if (MoE* moe = block->feed_forward_moe()) moe->router().post_batch();
}

}  // namespace olm::nn
