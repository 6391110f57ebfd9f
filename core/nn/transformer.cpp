#include "core/nn/transformer.h"

#include <cmath>

#include "core/error.h"

namespace olm::nn {

using olm::ErrorCode;
using olm::require;
static const at::TensorOptions kBuildOptions = at::TensorOptions().dtype(at::kFloat).device(at::kCPU);

Transformer::Transformer(const ModelSpec& spec)
    : spec_(spec),
      embeddings_(register_module("embeddings",
                                  std::make_shared<Embedding>(spec.vocab_size, spec.d_model, kBuildOptions))
                      ->weight()) {
  if (spec.position_embedding && spec.position_embedding->name == "learned")
    position_embeddings_ = &register_module("position_embeddings",
                                            std::make_shared<Embedding>(spec.position_embedding->max_sequence_length,
                                                                        spec.d_model, kBuildOptions))
                                ->weight();
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
  // Tied: the head reads the embeddings' slot, so moving or loading the table moves it too.
  lm_head_ = register_module(
      "lm_head", std::make_shared<LMHead>(spec.d_model, spec.vocab_size, spec.lm_head, kBuildOptions,
                                          spec.tie_word_embeddings ? &embeddings_ : nullptr));
}

at::Tensor sinusoidal_positions(const at::Tensor& positions, int64_t d_model) {
  const auto f32 = positions.options().dtype(at::kFloat);
  // 10000^(-2i/d) for the pair i of dimensions (2i, 2i+1).
  auto inv = at::exp(at::arange(0, d_model, 2, f32) * (-std::log(10000.0) / static_cast<double>(d_model)));
  auto angles = positions.to(at::kFloat).unsqueeze(-1) * inv;  // (..., ceil(d/2))
  auto pe = at::stack({angles.sin(), angles.cos()}, -1).flatten(-2);  // sin, cos interleaved
  return pe.slice(-1, 0, d_model);
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

void Transformer::check_context_parallel() const {
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const std::string block = "blocks[" + std::to_string(i) + "]";
    // The recurrence runs through the whole sequence in order, and the routers' load-balancing
    // losses need every token of the batch: neither splits over the sequence.
    require(!blocks_[i]->gated_delta_net(), ErrorCode::kInvalidConfig,
            block + ".sequence_mixer: gated_delta_net cannot be combined with context parallelism");
    require(!blocks_[i]->feed_forward_moe(), ErrorCode::kInvalidConfig,
            block + ".feed_forward_moe cannot be combined with context parallelism");
    try {
      blocks_[i]->attention().check_context_parallel();
    } catch (const olm::Error& e) {
      throw olm::Error(e.code(), block + "." + e.what());
    }
  }
}

void Transformer::apply_context_parallel(const std::shared_ptr<ContextParallel>& cp) {
  if (cp) check_context_parallel();
  // Checked above for every block first, so a refusal changes nothing.
  for (auto& block : blocks_)
    if (!block->gated_delta_net()) block->attention().set_context_parallel(cp);
  cp_ = cp;
}

std::vector<TensorParallelSlice> Transformer::tensor_parallel_layout(int64_t degree) const {
  const std::string why = " cannot be combined with tensor parallelism";
  require(!spec_.normalized, ErrorCode::kInvalidConfig, "name: normalized" + why);
  require(spec_.vocab_size % degree == 0, ErrorCode::kInvalidConfig,
          "vocab_size: " + std::to_string(spec_.vocab_size) + " does not split over tensor_parallel.degree " +
              std::to_string(degree));
  std::vector<std::pair<std::string, int64_t>> split_dims{{"embeddings.weight", 0}};
  auto add = [&](const std::string& prefix, const std::vector<TensorParallelSplit>& splits) {
    for (const auto& s : splits) split_dims.emplace_back(prefix + s.name, s.dim);
  };
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const std::string field = "blocks[" + std::to_string(i) + "].", name = "blocks." + std::to_string(i) + ".";
    auto& block = *blocks_[i];
    require(!block.gated_delta_net(), ErrorCode::kInvalidConfig, field + "sequence_mixer: gated_delta_net" + why);
    require(!block.feed_forward_moe(), ErrorCode::kInvalidConfig, field + "feed_forward_moe" + why);
    try {
      add(name + "attention.", block.attention().tensor_parallel_splits(degree));
      add(name + "feed_forward.", block.feed_forward()->tensor_parallel_splits(degree));
    } catch (const olm::Error& e) {
      throw olm::Error(e.code(), field + e.what());
    }
  }
  add("lm_head.", lm_head_->tensor_parallel_splits(degree));

  std::vector<TensorParallelSlice> layout;
  for (auto& p : const_cast<Transformer*>(this)->named_parameters()) {
    TensorParallelSlice slice{p.name, -1, p.tensor->sizes().vec()};
    for (const auto& [name, dim] : split_dims)
      if (name == p.name) slice.dim = dim;
    if (slice.dim >= 0) {
      require(slice.full_shape[static_cast<size_t>(slice.dim)] % degree == 0, ErrorCode::kInternal,
              p.name + ": dimension " + std::to_string(slice.dim) + " does not split over " + std::to_string(degree));
      slice.length = slice.full_shape[static_cast<size_t>(slice.dim)] / degree;
    }
    layout.push_back(std::move(slice));
  }
  return layout;
}

void Transformer::check_tensor_parallel(int64_t degree) const {
  require(degree >= 1, ErrorCode::kInvalidArgument, "tensor_parallel.degree must be >= 1");
  (void)tensor_parallel_layout(degree);
}

void Transformer::apply_tensor_parallel(const std::shared_ptr<TensorParallel>& tp) {
  require(tp != nullptr, ErrorCode::kInvalidArgument, "apply_tensor_parallel: tp is NULL");
  require(!tp_, ErrorCode::kInvalidArgument, "apply_tensor_parallel: tensor parallelism is applied already");
  const int64_t degree = tp->size();
  require(degree >= 1 && tp->rank() >= 0 && tp->rank() < degree, ErrorCode::kInvalidArgument,
          "apply_tensor_parallel: rank " + std::to_string(tp->rank()) + " of size " + std::to_string(degree));
  // Every check (the modules' splits throw) before anything changes.
  std::vector<TensorParallelSlice> layout = tensor_parallel_layout(degree);
  auto params = named_parameters();
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& slice = layout[i];
    if (slice.dim < 0) continue;
    at::Tensor& t = *params[i].tensor;
    const bool requires_grad = t.requires_grad();
    at::Tensor mine = t.detach().narrow(slice.dim, tp->rank() * slice.length, slice.length).clone();
    mine.set_requires_grad(requires_grad);
    t = mine;
  }
  for (auto& block : blocks_) {
    block->attention().set_tensor_parallel(tp);
    block->feed_forward()->set_tensor_parallel(tp);
  }
  lm_head_->set_tensor_parallel(tp);
  tp_layout_ = std::move(layout);
  tp_ = tp;
}

std::vector<TensorParallelSlice> Transformer::tensor_parallel_slices(int64_t rank) const {
  const int64_t degree = tp_ ? tp_->size() : 1;
  require(rank >= 0 && rank < degree, ErrorCode::kInvalidArgument,
          "tensor_parallel_slices: rank " + std::to_string(rank) + " is outside the TP group of size " +
              std::to_string(degree));
  std::vector<TensorParallelSlice> out;
  if (!tp_) {
    for (auto& p : const_cast<Transformer*>(this)->named_parameters())
      out.push_back({p.name, -1, p.tensor->sizes().vec()});
    return out;
  }
  for (auto slice : tp_layout_) {
    if (slice.dim >= 0) slice.start = rank * slice.length;
    out.push_back(std::move(slice));
  }
  return out;
}

at::Tensor Transformer::embed_tensor_parallel(const at::Tensor& input_ids) const {
  const int64_t rows = embeddings_.size(0), first = tp_->rank() * rows;
  const auto local = input_ids - first;
  const auto here = local.ge(0).logical_and(local.lt(rows));
  auto partial = at::embedding(embeddings_, local.clamp(0, rows - 1)) * here.unsqueeze(-1).to(embeddings_.scalar_type());
  return tp_->reduce_scatter_sequence(partial);
}

void Transformer::normalize_matrices() {
  at::NoGradGuard no_grad;
  embeddings_.copy_(l2_normalize(embeddings_, -1));
  for (auto& block : blocks_) block->normalize_matrices();
  lm_head_->normalize_matrices();
}

at::Tensor Transformer::hidden_states(const at::Tensor& input_ids, std::vector<KVCache>* caches,
                                      const at::Tensor& doc_positions, MoEAuxLosses* aux) const {
  // Under TP (sequence parallelism) h holds this rank's contiguous shard of the sequence,
  // tokens [first, first + length) of each row.
  int64_t first = 0, length = input_ids.size(1);
  at::Tensor h;
  if (tp_) {
    require(caches == nullptr, ErrorCode::kInvalidArgument, "caches: KV caches cannot be combined with tensor parallelism");
    require(input_ids.dim() == 2 && input_ids.size(1) % tp_->size() == 0, ErrorCode::kInvalidArgument,
            "input_ids: the sequence length must be a multiple of the tensor-parallel degree " +
                std::to_string(tp_->size()) + " (shape " + c10::str(input_ids.sizes()) + ")");
    // Outside every rank's rows an id would embed as zeros instead of failing as one
    // process's lookup does.
    require(input_ids.numel() == 0 || (input_ids.min().item<int64_t>() >= 0 &&
                                       input_ids.max().item<int64_t>() < spec_.vocab_size),
            ErrorCode::kInvalidArgument, "input_ids: ids must lie in [0, vocab_size = " +
                                             std::to_string(spec_.vocab_size) + ")");
    length /= tp_->size();
    first = tp_->rank() * length;
    h = embed_tensor_parallel(input_ids);
  } else {
    h = at::embedding(embeddings_, input_ids);
  }
  if (spec_.embed_scale) h = h * *spec_.embed_scale;
  if (const auto& pe = spec_.position_embedding) {
    // Each token's position: inside its document, else after the cached ones.
    const int64_t start = caches && !caches->empty() ? (*caches)[0].length : first;
    const at::Tensor positions =
        doc_positions.defined() ? doc_positions.to(input_ids.device()).slice(1, first, first + length)
                                : at::arange(start, start + length, input_ids.options().dtype(at::kLong));
    if (position_embeddings_) {
      const int64_t last = doc_positions.defined() ? positions.max().item<int64_t>() : start + length - 1;
      require(last < pe->max_sequence_length, ErrorCode::kInvalidArgument,
              "input_ids: position " + std::to_string(last) + " is beyond position_embedding.max_sequence_length (" +
                  std::to_string(pe->max_sequence_length) + ")");
      h = h + at::embedding(*position_embeddings_, positions);
    } else {
      h = h + sinusoidal_positions(positions, spec_.d_model).to(h.scalar_type());
    }
  }
  if (embedding_norm_) h = embedding_norm_->forward(h);
  const bool grad = at::GradMode::is_enabled();
  for (size_t i = 0; i < blocks_.size(); ++i) {
    if (caches) {
      h = blocks_[i]->forward(h, &(*caches)[i], at::Tensor(), aux);
    } else if (grad && block_runner_ && i < checkpointed_.size() && checkpointed_[i]) {
      h = block_runner_(*blocks_[i], h, doc_positions, aux);
    } else {
      h = blocks_[i]->forward(h, nullptr, doc_positions, aux);
    }
  }
  return h;
}

at::Tensor Transformer::forward(const at::Tensor& input_ids, int64_t logits_to_keep,
                                std::vector<KVCache>* caches, const at::Tensor& doc_positions) const {
  return lm_head_->logits(hidden_states(input_ids, caches, doc_positions), logits_to_keep);
}

std::vector<KVCache> Transformer::make_kv_caches(int64_t batch, int64_t max_len) const {
  std::vector<KVCache> caches;
  for (const auto& block : blocks_) {
    if (const auto* gdn = block->gated_delta_net()) {
      caches.push_back(gdn->make_cache(batch, embeddings_.scalar_type(), embeddings_.device()));
      continue;
    }
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
                             const LossOptions& options, const at::Tensor& doc_positions) const {
  if (!spec_.moe) return lm_head_->loss(hidden_states(input_ids, nullptr, doc_positions), labels, options);
  MoEAuxLosses aux;
  if (options.loss_div_tensor.defined()) {
    aux.loss_div = options.loss_div_tensor;
  } else if (options.loss_div_factor != 1.0) {
    aux.loss_div = at::scalar_tensor(options.loss_div_factor, embeddings_.options().dtype(at::kFloat));
  }
  auto out = lm_head_->loss(hidden_states(input_ids, nullptr, doc_positions, &aux), labels, options);
  if (aux.lb_loss.defined()) out.lb_loss = aux.lb_loss;
  if (aux.router_z_loss.defined()) out.router_z_loss = aux.router_z_loss;
  return out;
}

void Transformer::post_batch(const std::function<void(at::Tensor&)>& sum_across_ranks) {
  for (auto& block : blocks_)
    if (MoE* moe = block->feed_forward_moe()) moe->router().post_batch(sum_across_ranks);
}

}  // namespace olm::nn
