#include "core/train/trainer.h"

#include <ATen/autocast_mode.h>

#include <cmath>

#include "core/distributed/context_parallel.h"
#include "core/distributed/ddp.h"
#include "core/distributed/fsdp.h"
#include "core/distributed/tensor_parallel.h"
#include "core/error.h"
#include "core/train/activation_checkpointing.h"

namespace olm::train {
namespace {

constexpr int64_t kIgnoreIndex = -100;

// bf16 autocast for the forward (olmo_core's autocast_precision), restored on exit.
class AutocastScope {
 public:
  AutocastScope(bool enabled, at::DeviceType device) : enabled_(enabled), device_(device) {
    if (!enabled_) return;
    prev_enabled_ = at::autocast::is_autocast_enabled(device_);
    prev_dtype_ = at::autocast::get_autocast_dtype(device_);
    at::autocast::set_autocast_enabled(device_, true);
    at::autocast::set_autocast_dtype(device_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(device_, prev_enabled_);
    at::autocast::set_autocast_dtype(device_, prev_dtype_);
  }

 private:
  bool enabled_;
  at::DeviceType device_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

distributed::ContextParallelStyle context_parallel_style(const TrainSpec& spec) {
  return spec.cp_style == "ulysses" ? distributed::ContextParallelStyle::kUlysses
                                    : distributed::ContextParallelStyle::kRingZigZag;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

at::Tensor default_labels(const at::Tensor& input_ids, int64_t ignore_index) {
  auto labels = at::full_like(input_ids, ignore_index);
  labels.slice(1, 0, input_ids.size(1) - 1).copy_(input_ids.slice(1, 1));
  return labels;
}

Trainer::Trainer(std::shared_ptr<Model> model, TrainConfig config)
    : model_(std::move(model)), config_(std::move(config)) {
  require(model_ != nullptr, ErrorCode::kInvalidArgument, "model: NULL");
  const TrainSpec& spec = config_.spec();
  if (spec.model) {
    require(spec.model->to_flatbuffer() == model_->config().to_flatbuffer(), ErrorCode::kInvalidConfig,
            "the train config's model differs from the model given to the trainer");
  }
  params_ = model_->module().named_parameters();
  optimizer_ = make_optimizer(spec.optimizer, params_);
  // A checkpointed block runs its forward without gradients and again in the backward: router
  // jitter would draw different noise the second time (so route differently).
  bool jitter = false;
  for (const auto& block : model_->config().spec().blocks)
    jitter = jitter || (block.moe && block.moe->router.jitter_eps.value_or(0.0) > 0.0);
  require(!(spec.ac_mode != "none" && jitter), ErrorCode::kInvalidConfig,
          "ac_mode: activation checkpointing cannot be combined with block.feed_forward_moe.router.jitter_eps "
          "(the recomputed forward would route differently)");
  install_block_runner();
}

Trainer::~Trainer() = default;

// Activation checkpointing's runner for the selected blocks; under FSDP every block runs
// between its unit's gather and free (checkpointed or not inside).
void Trainer::install_block_runner() {
  const TrainSpec& spec = config_.spec();
  const auto n = model_->module().blocks().size();
  std::vector<bool> mask(n, spec.ac_mode == "full");
  if (spec.ac_mode == "selected_blocks")
    for (size_t i = 0; i < n; i += static_cast<size_t>(spec.ac_block_interval)) mask[i] = true;
  if (!fsdp_) {
    if (spec.ac_mode != "none") model_->module().set_block_runner(checkpointed_block_forward, mask);
    else model_->module().set_block_runner(nullptr, {});
    return;
  }
  std::vector<const nn::TransformerBlock*> blocks;
  for (const auto& b : model_->module().blocks()) blocks.push_back(b.get());
  distributed::FullyShardedDataParallel* fsdp = fsdp_.get();
  auto runner = [fsdp, blocks, mask](nn::TransformerBlock& block, const at::Tensor& x, const at::Tensor& doc_positions,
                                     nn::MoEAuxLosses* aux) {
    size_t i = 0;
    while (i < blocks.size() && blocks[i] != &block) ++i;
    return fsdp->run_block(i, [&]() {
      if (mask[i]) return checkpointed_block_forward(block, x, doc_positions, aux);
      if (!aux) return block.forward(x, nullptr, doc_positions, nullptr);
      // The routers' losses reach the block's parameters without passing through its output:
      // they too must find the block gathered when backward arrives.
      nn::MoEAuxLosses local;
      local.loss_div = aux->loss_div;
      auto y = block.forward(x, nullptr, doc_positions, &local);
      for (const auto& loss : {local.lb_loss, local.router_z_loss})
        if (loss.defined()) fsdp->gather_before_backward(i, loss);
      aux->add(local);
      return y;
    });
  };
  model_->module().set_block_runner(runner, std::vector<bool>(n, true));
}

void Trainer::gather_parameters() {
  if (fsdp_) fsdp_->gather_all();
}

std::map<std::string, at::Tensor> Trainer::full_state() {
  gather_parameters();
  at::NoGradGuard no_grad;
  std::map<std::string, nn::TensorParallelSlice> slices;
  if (tp_)
    for (auto& slice : model_->module().tensor_parallel_slices(tp_group_->rank())) slices[slice.name] = slice;
  std::map<std::string, at::Tensor> out;
  for (auto& p : model_->module().named_state()) {
    auto it = slices.find(p.name);
    if (it == slices.end() || it->second.dim < 0) {
      out[p.name] = p.tensor->detach().clone();
      continue;
    }
    // Rank r's slice starts at r x its length along the split dimension (equal slices).
    const int64_t tp = tp_group_->world_size();
    const auto local = p.tensor->detach().contiguous().to(tp_group_->comm_device());
    auto gathered = at::empty({tp * local.numel()}, local.options());
    tp_group_->all_gather_into_async(gathered, local.reshape({-1}))->wait();
    std::vector<int64_t> shape{tp};
    for (auto d : local.sizes()) shape.push_back(d);
    out[p.name] = at::cat(gathered.view(shape).unbind(0), it->second.dim).to(p.tensor->device());
  }
  return out;
}

int64_t Trainer::comm_bytes() const {
  int64_t bytes = group_ ? group_->stats().bytes : 0;
  for (const auto& g : mesh_groups_) bytes += g->stats().bytes;
  return bytes;
}

void Trainer::set_process_group(std::shared_ptr<distributed::ProcessGroup> group) {
  require(!tp_, ErrorCode::kInvalidArgument,
          "process group: the model is split by tensor parallelism over the current group, whose trainer keeps "
          "it (save a checkpoint and load it into a new trainer to change the layout)");
  if (group) {
    // The layout is checked before anything changes: a refused group leaves the trainer as it was.
    const TrainSpec& spec = config_.spec();
    const int64_t world = group->world_size();
    const int64_t tp = spec.tp_degree, cp = spec.cp_degree;
    require(world % (tp * cp) == 0, ErrorCode::kInvalidConfig,
            "tensor_parallel.degree x context_parallel.degree = " + std::to_string(tp) + " x " + std::to_string(cp) +
                " does not divide world_size " + std::to_string(world));
    const int64_t dp = world / (tp * cp);
    require(spec.global_batch_instances() % dp == 0, ErrorCode::kInvalidConfig,
            "global_batch_size: " + std::to_string(spec.global_batch_instances()) +
                " instances do not divide evenly over " +
                (dp == world ? "world_size " + std::to_string(world)
                             : std::to_string(dp) + " data-parallel ranks (world_size " + std::to_string(world) +
                                   " / (context_parallel.degree x tensor_parallel.degree))"));
    // The model's own refusals (heads, hidden units or vocabulary that do not divide, blocks
    // that cannot be split), before any collective or change.
    if (tp > 1) model_->module().check_tensor_parallel(tp);
    if (cp > 1) model_->module().check_context_parallel();
    if (spec.cp_style == "ulysses" && cp > 1) {
      // Ulysses trades sequence shards for head shards: each rank's heads (after TP's split)
      // must divide over the CP group.
      const auto& blocks = model_->config().spec().blocks;
      for (size_t i = 0; i < blocks.size(); ++i) {
        const int64_t heads = blocks[i].attention.n_heads;
        require(heads % tp != 0 || (heads / tp) % cp == 0, ErrorCode::kInvalidConfig,
                "blocks[" + std::to_string(i) + "].attention.n_heads: " + std::to_string(heads) +
                    (tp > 1 ? " heads / tensor_parallel.degree " + std::to_string(tp) : std::string(" heads")) +
                    " do not split over context_parallel.degree " + std::to_string(cp) + " (Ulysses splits heads)");
      }
    }
  }
  ddp_.reset();
  if (fsdp_) {
    // Back to full float32 parameters on every rank (a collective on the old group).
    fsdp_->release_full_precision();
    fsdp_.reset();
    optimizer_ = make_optimizer(config_.spec().optimizer, params_);
    install_block_runner();
  }
  detach_mesh();
  group_ = std::move(group);
  if (!group_) return;
  try {
    attach_mesh();
  } catch (...) {
    // The model refused the split (heads, hidden size or vocabulary that do not divide, a
    // block kind that cannot be split): before any change to it, so only the groups go.
    detach_mesh();
    group_.reset();
    throw;
  }
}

void Trainer::detach_mesh() {
  if (cp_) model_->module().apply_context_parallel(nullptr);
  cp_.reset();
  cp_group_.reset();
  tp_group_.reset();
  mesh_groups_.clear();
  batch_group_.reset();
  dp_rank_ = 0;
  dp_world_ = 1;
}

void Trainer::attach_mesh() {
  const TrainSpec& spec = config_.spec();
  const int64_t world = group_->world_size();
  const int64_t tp = spec.tp_degree, cp = spec.cp_degree;
  const int64_t dp = world / (tp * cp);
  batch_group_ = group_;
  dp_rank_ = group_->rank();
  dp_world_ = dp;
  std::shared_ptr<distributed::ProcessGroup> shard_group = group_, replicate_group;
  if (spec.data_parallel == "hsdp") {
    const int64_t shard_degree = spec.dp_shard_degree > 0    ? spec.dp_shard_degree
                                 : spec.dp_num_replicas > 0 ? dp / spec.dp_num_replicas
                                                            : std::max<int64_t>(group_->local_world_size() / (tp * cp), 1);
    const int64_t replicas = spec.dp_num_replicas > 0 ? spec.dp_num_replicas : dp / std::max<int64_t>(shard_degree, 1);
    require(replicas * shard_degree == dp, ErrorCode::kInvalidConfig,
            "data_parallel: hsdp needs num_replicas x shard_degree = " +
                (dp == world ? "world_size " + std::to_string(world)
                             : "the data-parallel ranks " + std::to_string(dp) +
                                   " (world_size / (context_parallel.degree x tensor_parallel.degree))") +
                ", got " + std::to_string(replicas) + " x " + std::to_string(shard_degree) +
                (spec.dp_num_replicas > 0 || spec.dp_shard_degree > 0 ? std::string()
                                                                      : " (shard_degree from LOCAL_WORLD_SIZE)"));
    if (tp * cp == 1) {
      // OLMo-core's build_world_mesh for HSDP: a replica is shard_degree consecutive ranks.
      const auto mesh = distributed::DeviceMesh::build(group_, {{"dp_replicate", replicas}, {"dp_shard", shard_degree}});
      shard_group = mesh.group("dp_shard");
      replicate_group = mesh.group("dp_replicate");
      mesh_groups_ = mesh.groups();
    } else {
      auto mesh = distributed::DeviceMesh::build(
          group_, {{"dp_replicate", replicas}, {"dp_shard", shard_degree}, {"cp", cp}, {"tp", tp}});
      dp_rank_ = mesh.coordinate("dp_replicate") * shard_degree + mesh.coordinate("dp_shard");
      if (tp > 1) batch_group_ = mesh.flatten({"dp_replicate", "dp_shard", "cp"}, "dp_cp");
      // FSDP shards over data and context parallelism together (OLMo-core's dp_shard_cp mesh).
      shard_group = mesh.flatten({"dp_shard", "cp"}, "dp_shard_cp");
      replicate_group = mesh.group("dp_replicate");
      mesh_groups_ = mesh.groups();
      if (cp > 1) cp_group_ = mesh.group("cp");
      if (tp > 1) apply_tensor_parallel(mesh.group("tp"));
    }
  } else if (tp * cp > 1) {
    auto mesh = distributed::DeviceMesh::build(group_, {{spec.sharded() ? "dp_shard" : "dp_replicate", dp}, {"cp", cp}, {"tp", tp}});
    dp_rank_ = mesh.coordinate(spec.sharded() ? "dp_shard" : "dp_replicate");
    if (tp > 1) batch_group_ = mesh.flatten({spec.sharded() ? "dp_shard" : "dp_replicate", "cp"}, "dp_cp");
    shard_group = batch_group_;
    mesh_groups_ = mesh.groups();
    if (cp > 1) cp_group_ = mesh.group("cp");
    if (tp > 1) apply_tensor_parallel(mesh.group("tp"));
  }
  if (cp_group_) {
    cp_ = std::make_shared<distributed::ContextParallelGroup>(cp_group_, context_parallel_style(spec));
    model_->module().apply_context_parallel(cp_);
  }
  if (spec.sharded()) {
    distributed::FsdpOptions options;
    options.param_dtype = spec.dp_param_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
    options.reduce_dtype = spec.dp_reduce_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
    options.prefetch = spec.dp_prefetch_factor;
    options.replicate_group = replicate_group;
    // One unit per block ("blocks.<i>."), the root unit for everything else, last.
    const size_t n = model_->module().blocks().size();
    std::vector<distributed::FsdpUnitSpec> units(n + 1);
    units[n].name = "root";
    for (size_t i = 0; i < n; ++i) units[i].name = "blocks." + std::to_string(i);
    for (const auto& p : params_) {
      size_t unit = n;
      if (p.name.rfind("blocks.", 0) == 0) {
        const size_t dot = p.name.find('.', 7);
        unit = static_cast<size_t>(std::stoul(p.name.substr(7, dot - 7)));
      }
      units[unit].params.push_back(p);
    }
    std::vector<distributed::FsdpUnitSpec> nonempty;
    for (auto& u : units)
      if (!u.params.empty() || u.name == "root") nonempty.push_back(std::move(u));
    require(nonempty.back().params.size() > 0 && nonempty.size() == n + 1, ErrorCode::kInvalidConfig,
            "data_parallel.name: fsdp needs parameters in every block and outside the blocks");
    // Optimizer state restored before sharding (a checkpoint loaded into this trainer first)
    // carries over: each piece keeps its elements of the full state, as a sharded load gives.
    const auto full_state = optimizer_->state();
    const auto recent_losses = optimizer_->recent_losses();
    const auto recent_grad_norms = optimizer_->recent_grad_norms();
    fsdp_ = std::make_unique<distributed::FullyShardedDataParallel>(shard_group, std::move(nonempty), options);
    optimizer_ = make_optimizer(config_.spec().optimizer, fsdp_->shard_parameters());
    if (!full_state.empty()) {
      std::map<std::string, distributed::FullyShardedDataParallel::Piece> pieces;
      for (auto& piece : fsdp_->pieces_of_rank(fsdp_->group().rank())) pieces[piece.name] = piece;
      std::map<std::string, at::Tensor> sliced;
      for (const auto& [name, t] : full_state) {
        auto it = pieces.find(Optimizer::parameter_of_state(name));
        if (it == pieces.end()) continue;
        sliced[name] = t.dim() == 0 ? t : t.reshape({-1}).narrow(0, it->second.offset, it->second.numel);
      }
      optimizer_->load_state(sliced);
    }
    optimizer_->restore_history(recent_losses, recent_grad_norms);
    install_block_runner();
    return;
  }
  std::vector<at::Tensor> tensors;
  for (auto& p : params_) tensors.push_back(*p.tensor);
  ddp_ = std::make_unique<distributed::DataParallel>(batch_group_, tensors);
  ddp_->broadcast_parameters();
}

void Trainer::apply_tensor_parallel(std::shared_ptr<distributed::ProcessGroup> tp_group) {
  {
    // Every TP rank slices the same full weights (TP rank 0's), as DDP starts from rank 0's.
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> state;
    for (auto& p : model_->module().named_state()) state.push_back(*p.tensor);
    tp_group->broadcast(state, 0);
  }
  const auto full_state = optimizer_->state();
  const auto recent_losses = optimizer_->recent_losses();
  const auto recent_grad_norms = optimizer_->recent_grad_norms();
  tp_group_ = std::move(tp_group);
  tp_ = std::make_shared<distributed::TensorParallelGroup>(tp_group_);
  model_->module().apply_tensor_parallel(tp_);
  std::map<std::string, nn::TensorParallelSlice> slices;
  for (auto& slice : model_->module().tensor_parallel_slices(tp_group_->rank())) {
    if (slice.dim < 0) tp_replicated_.insert(slice.name);
    slices[slice.name] = slice;
  }
  // The optimizer over the slices; state restored before (a checkpoint loaded into this trainer
  // first) keeps each slice's part, as for FSDP's pieces.
  optimizer_ = make_optimizer(config_.spec().optimizer, params_);
  if (!full_state.empty()) {
    std::map<std::string, at::Tensor> sliced;
    for (const auto& [name, t] : full_state) {
      auto it = slices.find(Optimizer::parameter_of_state(name));
      const bool split = it != slices.end() && it->second.dim >= 0 && t.dim() > it->second.dim;
      sliced[name] = split ? t.narrow(it->second.dim, it->second.start, it->second.length).contiguous() : t;
    }
    optimizer_->load_state(sliced);
  }
  optimizer_->restore_history(recent_losses, recent_grad_norms);
}

at::Tensor Trainer::reduce_tensor_parallel_grads(const std::vector<nn::NamedParameter>& params) {
  std::vector<at::Tensor> partial, split;
  for (const auto& p : params) {
    const at::Tensor& g = p.tensor->grad();
    if (!g.defined()) continue;
    (tp_replicated_.count(p.name) ? partial : split).push_back(g);
  }
  if (!partial.empty()) {
    // One collective for all of them: the partial sums of the TP ranks' sequence shards.
    std::vector<at::Tensor> flat;
    for (const auto& g : partial) flat.push_back(g.reshape({-1}).to(at::kFloat));
    auto buffer = at::cat(flat).to(tp_group_->comm_device());
    tp_group_->all_reduce_sum({buffer});
    buffer = buffer.to(partial[0].device());
    int64_t offset = 0;
    for (auto& g : partial) {
      g.copy_(buffer.narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
  }
  auto squares = [](const std::vector<at::Tensor>& grads) {
    return grads.empty() ? at::zeros({}, at::kFloat) : at::stack(at::_foreach_norm(grads, 2.0)).to(at::kFloat).pow(2).sum().cpu();
  };
  return squares(split) + squares(partial) / static_cast<double>(tp_group_->world_size());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> Trainer::shard_sequences(const at::Tensor& input_ids,
                                                                       const at::Tensor& labels,
                                                                       const at::Tensor& doc_positions) const {
  const at::Tensor positions =
      doc_positions.defined()
          ? doc_positions
          : at::arange(input_ids.size(1), input_ids.options()).unsqueeze(0).expand({input_ids.size(0), -1});
  return {cp_->shard(input_ids, 1, "input_ids"), cp_->shard(labels, 1, "labels"),
          cp_->shard(positions, 1, "doc_positions")};
}

int64_t Trainer::rank() const { return group_ ? group_->rank() : 0; }
int64_t Trainer::world_size() const { return group_ ? group_->world_size() : 1; }

void Trainer::restore_counters(int64_t step, int64_t tokens_seen, int64_t skipped_steps) {
  step_ = step;
  tokens_seen_ = tokens_seen;
  skipped_steps_ = skipped_steps;
}

StepMetrics Trainer::train_batch(const at::Tensor& input_ids_in, const at::Tensor& labels_in,
                                 const at::Tensor& cu_doc_lens) {
  const auto t0 = std::chrono::steady_clock::now();
  const TrainSpec& spec = config_.spec();
  const int64_t vocab = model_->config().spec().vocab_size;
  require(input_ids_in.defined() && input_ids_in.dim() == 2, ErrorCode::kInvalidArgument,
          "input_ids: shape must be (batch, sequence_length)");
  require(input_ids_in.size(1) == spec.sequence_length, ErrorCode::kInvalidArgument,
          "input_ids: sequence length " + std::to_string(input_ids_in.size(1)) +
              " differs from the train config's sequence_length " + std::to_string(spec.sequence_length));
  const int64_t world = dp_world_;
  require(input_ids_in.numel() * world == spec.global_batch_size, ErrorCode::kInvalidArgument,
          "input_ids: " + std::to_string(input_ids_in.numel()) +
              " tokens differ from the train config's global_batch_size " +
              std::to_string(spec.global_batch_size) +
              (world > 1 ? " / " + std::string(world == world_size() ? "world_size " : "data-parallel ranks ") +
                               std::to_string(world)
                         : std::string()));
  require(input_ids_in.scalar_type() == at::kLong || input_ids_in.scalar_type() == at::kInt,
          ErrorCode::kInvalidArgument, "input_ids: dtype must be int32 or int64");
  const auto device = model_->device();
  auto input_ids = input_ids_in.to(device, at::kLong);
  require(input_ids.ge(0).logical_and(input_ids.lt(vocab)).all().item<bool>(), ErrorCode::kInvalidArgument,
          "input_ids: a token id is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  at::Tensor labels;
  if (labels_in.defined()) {
    require(labels_in.sizes() == input_ids_in.sizes(), ErrorCode::kInvalidArgument,
            "labels: shape differs from input_ids");
    require(labels_in.scalar_type() == at::kLong || labels_in.scalar_type() == at::kInt,
            ErrorCode::kInvalidArgument, "labels: dtype must be int32 or int64");
    labels = labels_in.to(device, at::kLong);
    require(labels.eq(kIgnoreIndex).logical_or(labels.ge(0).logical_and(labels.lt(vocab))).all().item<bool>(),
            ErrorCode::kInvalidArgument,
            "labels: a label is outside the vocabulary and is not -100");
  } else {
    labels = default_labels(input_ids, kIgnoreIndex);
  }
  // Positions inside documents for the whole batch; micro-batches take their rows.
  at::Tensor doc_positions =
      cu_doc_lens.defined()
          ? nn::document_positions(cu_doc_lens.to(device), input_ids.size(0), input_ids.size(1))
          : at::Tensor();
  if (cp_) std::tie(input_ids, labels, doc_positions) = shard_sequences(input_ids, labels, doc_positions);

  // OLMo-core: every micro-batch's summed loss is divided by the whole batch's target count,
  // so the accumulated gradient equals one big batch's mean-loss gradient.
  // With DDP the count is the global batch's (summed over ranks) and gradients are summed,
  // so every rank's loss is its share of the single-process loss.
  auto num_tokens_for_loss = labels.ne(kIgnoreIndex).sum();
  const int64_t comm_bytes_before = comm_bytes();
  if (group_) {
    auto count = num_tokens_for_loss.to(group_->comm_device(), at::kLong).reshape({1});
    batch_group_->all_reduce_sum({count});
    num_tokens_for_loss = count.reshape({}).to(device);
  }
  if (fsdp_) {
    fsdp_->free_all();  // after gather_parameters()
    fsdp_->reset_peak();
    fsdp_->gather_root();
  }
  nn::LossOptions loss_options;
  loss_options.reduction = nn::LossReduction::kSum;
  loss_options.z_loss_multiplier = spec.z_loss_multiplier;
  loss_options.loss_div_tensor = num_tokens_for_loss;
  loss_options.ignore_index = kIgnoreIndex;

  auto ce_batch = at::zeros({}, at::TensorOptions().device(device).dtype(at::kFloat));
  auto z_batch = at::zeros({}, at::TensorOptions().device(device).dtype(at::kFloat));
  auto lb_batch = at::zeros({}, at::TensorOptions().device(device).dtype(at::kFloat));
  auto router_z_batch = at::zeros({}, at::TensorOptions().device(device).dtype(at::kFloat));
  const int64_t micro = spec.microbatch_instances();
  {
    at::AutoGradMode grad(true);
    for (int64_t start = 0; start < input_ids.size(0); start += micro) {
      const int64_t end = std::min(start + micro, input_ids.size(0));
      if (ddp_) ddp_->set_sync(end == input_ids.size(0));
      nn::LossOutput out;
      {
        AutocastScope autocast(spec.bf16_autocast, device.type());
        out = model_->module().loss(input_ids.slice(0, start, end), labels.slice(0, start, end), loss_options,
                                   doc_positions.defined() ? doc_positions.slice(0, start, end) : at::Tensor());
      }
      ce_batch += out.ce_loss.to(at::kFloat);
      if (out.z_loss) z_batch += out.z_loss->to(at::kFloat);
      // OLMo-core attaches the routers' losses to the graph (attach_auxiliary_loss): their
      // gradients join the LM loss's, their values are reported apart.
      at::Tensor objective = out.loss;
      if (out.lb_loss) {
        lb_batch += out.lb_loss->detach().to(at::kFloat);
        objective = objective + *out.lb_loss;
      }
      if (out.router_z_loss) {
        router_z_batch += out.router_z_loss->detach().to(at::kFloat);
        objective = objective + *out.router_z_loss;
      }
      objective.backward();
      if (fsdp_) fsdp_->finish_backward();
    }
  }
  if (group_) {
    model_->module().post_batch([this](at::Tensor& t) { batch_group_->all_reduce_sum({t}); });
  } else {
    model_->module().post_batch();
  }

  at::NoGradGuard no_grad;
  if (group_) {
    if (ddp_) ddp_->finish();
    auto losses = at::stack({ce_batch, z_batch}).to(group_->comm_device());
    batch_group_->all_reduce_sum({losses});
    losses = losses.to(device);
    ce_batch = losses[0];
    z_batch = losses[1];
  }
  std::vector<at::Tensor> grads;
  at::Tensor grad_norm;
  if (fsdp_) {
    // The global norm: every rank's squared shard norms, summed over the ranks of one replica.
    grads = fsdp_->shard_grads();
    at::Tensor sq;
    if (tp_) {
      sq = reduce_tensor_parallel_grads(fsdp_->shard_parameters()).reshape({1}).to(group_->comm_device());
      fsdp_->group().all_reduce_sum({sq});
      tp_group_->all_reduce_sum({sq});
    } else {
      sq = grads.empty() ? at::zeros({1}, ce_batch.options())
                         : at::stack(at::_foreach_norm(grads, 2.0)).to(at::kFloat).pow(2).sum().reshape({1});
      sq = sq.to(group_->comm_device());
      fsdp_->group().all_reduce_sum({sq});
    }
    grad_norm = sq.to(device).reshape({}).sqrt();
  } else {
    for (auto& p : params_)
      if (p.tensor->grad().defined()) grads.push_back(p.tensor->grad());
    if (tp_) {
      // The split parameters' squares summed over the TP ranks, the replicated ones' once.
      auto sq = reduce_tensor_parallel_grads(params_).reshape({1}).to(tp_group_->comm_device());
      tp_group_->all_reduce_sum({sq});
      grad_norm = sq.to(device).reshape({}).sqrt();
    } else {
      grad_norm = grads.empty() ? at::zeros({}, ce_batch.options())
                                : at::stack(at::_foreach_norm(grads, 2.0)).norm(2.0);
    }
  }
  if (spec.max_grad_norm && !grads.empty()) {
    // torch.nn.utils.clip_grad_norm_.
    auto coef = at::clamp_max(*spec.max_grad_norm / (grad_norm + 1e-6), 1.0);
    at::_foreach_mul_(grads, coef);
  }
  const auto total_loss = ce_batch + z_batch;
  auto step_factor = at::logical_and(at::isfinite(total_loss), at::isfinite(grad_norm)).to(at::kFloat);
  step_factor = step_factor * optimizer_->step_factor(ce_batch, spec.max_grad_norm ? grad_norm : at::Tensor());

  ++step_;
  tokens_seen_ += input_ids_in.numel() * world;
  const int64_t t_max = spec.scheduler.units_tokens ? spec.max_steps * spec.global_batch_size : spec.max_steps;
  const int64_t current = spec.scheduler.units_tokens ? tokens_seen_ : step_;
  for (auto& group : optimizer_->groups())
    group.lr = spec.scheduler.lr(group.initial_lr, current, std::max<int64_t>(t_max, 1));
  optimizer_->step(step_factor);
  // OLMo-core's post_optim_step: nGPT's matrices go back to the unit sphere (whole matrices,
  // so under FSDP on gathered full-precision copies).
  if (model_->config().spec().normalized) {
    if (fsdp_) fsdp_->update_full_precision([this] { model_->module().normalize_matrices(); });
    else model_->module().normalize_matrices();
  }
  for (auto& p : params_) p.tensor->mutable_grad().reset();
  if (fsdp_) {
    fsdp_->zero_grad();
    fsdp_->free_root();
  }

  StepMetrics m;
  m.step = step_;
  m.ce_loss = ce_batch.item<double>();
  m.z_loss = z_batch.item<double>();
  m.loss = m.ce_loss + m.z_loss;
  m.lb_loss = lb_batch.item<double>();
  m.router_z_loss = router_z_batch.item<double>();
  m.grad_norm = grad_norm.item<double>();
  m.lr = optimizer_->groups().back().lr;
  m.skipped = step_factor.item<float>() == 0.0f;
  if (m.skipped) ++skipped_steps_;
  m.skipped_steps = skipped_steps_;
  m.tokens = input_ids_in.numel() * world;
  if (group_) {
    m.comm_bytes = comm_bytes() - comm_bytes_before;
    m.comm_wait_seconds = ddp_ ? ddp_->last_wait_seconds() : fsdp_->last_wait_seconds();
  }
  if (fsdp_) {
    const auto mem = fsdp_->memory();
    m.param_shard_bytes = mem.shard_bytes;
    m.param_unsharded_bytes = mem.unsharded_bytes;
    m.peak_gathered_bytes = mem.peak_gathered_bytes;
    for (const auto& [name, t] : optimizer_->state())
      m.optim_state_bytes += t.numel() * static_cast<int64_t>(t.element_size());
  }
  m.tokens_seen = tokens_seen_;
  m.step_seconds = seconds_since(t0);
  m.tokens_per_second = m.step_seconds > 0 ? static_cast<double>(m.tokens) / m.step_seconds : 0;
  return m;
}

EvalMetrics Trainer::evaluate(const std::function<bool(at::Tensor&, at::Tensor&, at::Tensor&)>& next_batch) {
  // FSDP: every parameter gathered for the evaluation (a collective), freed at the next step.
  gather_parameters();
  // Tensor and context parallelism run collectives inside the forward, whose backend threads
  // cannot touch inference tensors: those evaluate without gradients instead.
  std::optional<c10::InferenceMode> inference;
  if (!tp_ && !cp_) inference.emplace();
  at::NoGradGuard no_grad;
  const auto device = model_->device();
  double total = 0;
  int64_t tokens = 0;
  nn::LossOptions options;
  options.reduction = nn::LossReduction::kSum;
  at::Tensor ids, labels, cu_doc_lens;
  while (next_batch(ids, labels, cu_doc_lens)) {
    ids = ids.to(device, at::kLong);
    labels = labels.defined() ? labels.to(device, at::kLong) : default_labels(ids, kIgnoreIndex);
    at::Tensor doc_positions =
        cu_doc_lens.defined() ? nn::document_positions(cu_doc_lens.to(device), ids.size(0), ids.size(1)) : at::Tensor();
    if (cp_) std::tie(ids, labels, doc_positions) = shard_sequences(ids, labels, doc_positions);
    AutocastScope autocast(config_.spec().bf16_autocast, device.type());
    auto out = model_->module().loss(ids, labels, options, doc_positions);
    total += out.ce_loss.item<double>();
    tokens += labels.ne(kIgnoreIndex).sum().item<int64_t>();
    ids = at::Tensor();
    labels = at::Tensor();
    cu_doc_lens = at::Tensor();
  }
  if (group_) {
    // Each rank evaluated its share of the batches: sum the totals (float64: exact for counts).
    // A normal tensor: the backend's threads run outside inference mode.
    c10::InferenceMode normal(false);
    auto sums = at::tensor({total, static_cast<double>(tokens)}, at::kDouble).to(group_->comm_device());
    batch_group_->all_reduce_sum({sums});
    sums = sums.cpu();
    total = sums[0].item<double>();
    tokens = static_cast<int64_t>(sums[1].item<double>());
  }
  EvalMetrics m;
  m.tokens = tokens;
  m.loss = tokens > 0 ? total / static_cast<double>(tokens) : std::nan("");
  m.perplexity = std::exp(m.loss);
  return m;
}

}  // namespace olm::train
