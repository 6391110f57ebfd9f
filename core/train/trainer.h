// The training loop of olmo_core.train (Trainer + TransformerTrainModule) for one process:
// micro-batching with OLMo-core's loss normalization, gradient clipping, LR scheduling,
// bf16 autocast, activation checkpointing, skipped steps on NaN/Inf, metrics.
#pragma once
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <tuple>

#include "core/data/token_data.h"
#include "core/model.h"
#include "core/train/step_metrics.h"
#include "core/train/optimizer.h"
#include "core/train/train_config.h"

namespace olm::data {
class DataLoader;
}
namespace olm::distributed {
class ProcessGroup;
class DataParallel;
class FullyShardedDataParallel;
class TensorParallelGroup;
class ContextParallelGroup;
}

namespace olm::train {

struct StepMetrics {
#define OLM_STEP_METRIC_MEMBER(type, name, doc) type name = 0;
  OLM_STEP_METRICS(OLM_STEP_METRIC_MEMBER)
  OLM_STEP_METRICS_COMM(OLM_STEP_METRIC_MEMBER)
  OLM_STEP_METRICS_FSDP(OLM_STEP_METRIC_MEMBER)
#undef OLM_STEP_METRIC_MEMBER
};

struct EvalMetrics {
  double loss = 0;        // mean cross-entropy per target token
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;
};

class Trainer {
 public:
  Trainer(std::shared_ptr<Model> model, TrainConfig config);
  ~Trainer();

  // Data-parallel training over a process group (DDP): broadcasts rank 0's parameters (a
  // collective: every rank calls it, before the first step or right after every rank loaded the
  // same checkpoint), then every step all-reduces the
  // gradients and normalizes the loss by the global batch's target tokens. Each rank then
  // passes its own global_batch_size / world_size tokens to train_batch.
  void set_process_group(std::shared_ptr<distributed::ProcessGroup> group);
  // With the train config's data_parallel.name "fsdp" the parameters, gradients and optimizer
  // state are sharded instead (distributed::FullyShardedDataParallel): the optimizer is rebuilt over
  // this rank's shards (keeping each piece's part of any state the optimizer already had, as
  // after loading a checkpoint), and between steps the model's parameters hold no data until
  // gather_parameters(). Checkpoints save and load each rank's shards (core/checkpoint).
  // Detaching (NULL) gathers them, a collective, and rebuilds the optimizer over the full
  // parameters (fresh state).
  const std::shared_ptr<distributed::ProcessGroup>& process_group() const { return group_; }
  distributed::FullyShardedDataParallel* fsdp() { return fsdp_.get(); }
  // FSDP: gathers every parameter on every rank and keeps them until the next step (a
  // collective); a no-op otherwise.
  void gather_parameters();
  int64_t rank() const;
  int64_t world_size() const;
  // With the train config's tensor_parallel / context_parallel degrees, set_process_group lays
  // the world out as OLMo-core's device mesh (dp_replicate, dp_shard, cp, tp), row-major, and
  // the data-parallel ranks are world_size / (cp x tp) of them: the ranks of one TP or CP group
  // read the same part of the global batch. Without either, these are rank() and world_size().
  int64_t data_parallel_rank() const { return dp_rank_; }
  int64_t data_parallel_world_size() const { return dp_world_; }
  distributed::TensorParallelGroup* tensor_parallel() { return tp_.get(); }
  // Every parameter and buffer whole, by OLMo-core name, on every rank: FSDP's shards gathered
  // (left gathered until the next step, as gather_parameters()) and tensor-parallel slices
  // all-gathered over the TP group. A collective; copies, so the model stays split.
  std::map<std::string, at::Tensor> full_state();
  distributed::ContextParallelGroup* context_parallel() { return cp_.get(); }
  // The mesh's TP group (NULL without tensor parallelism) and the group of the ranks sharing
  // this rank's TP coordinate (data x context parallelism; the whole group without TP).
  const std::shared_ptr<distributed::ProcessGroup>& tensor_parallel_group() const { return tp_group_; }
  const std::shared_ptr<distributed::ProcessGroup>& batch_group() const { return batch_group_; }
  // The mesh's CP group (NULL without context parallelism).
  const std::shared_ptr<distributed::ProcessGroup>& context_parallel_group() const { return cp_group_; }

  // One optimizer step on a batch of input_ids (B, sequence_length), B*L = global_batch_size
  // (divided by world_size with a process group: this rank's part of the global batch).
  // Labels default to OLMo-core's (inputs shifted left, last position ignored).
  // cu_doc_lens (optional): OLMo-core's cumulative document lengths over the flattened batch
  // (intra-document masking; see nn::document_positions).
  StepMetrics train_batch(const at::Tensor& input_ids, const at::Tensor& labels = at::Tensor(),
                          const at::Tensor& cu_doc_lens = at::Tensor());

  // Mean cross-entropy over the batches (each (B, L) input_ids with optional labels).
  // next_batch fills input_ids, labels (undefined: the default) and cu_doc_lens (undefined:
  // no intra-document masking) and returns false when done. With a process group, the batches
  // this rank is given, summed with the other ranks' (a collective).
  EvalMetrics evaluate(
      const std::function<bool(at::Tensor& input_ids, at::Tensor& labels, at::Tensor& cu_doc_lens)>& next_batch);

  Model& model() { return *model_; }
  std::shared_ptr<Model> model_ptr() { return model_; }
  const TrainConfig& config() const { return config_; }
  Optimizer& optimizer() { return *optimizer_; }
  int64_t step() const { return step_; }
  int64_t tokens_seen() const { return tokens_seen_; }
  int64_t skipped_steps() const { return skipped_steps_; }
  void restore_counters(int64_t step, int64_t tokens_seen, int64_t skipped_steps);
  // Where the training data stands (the next batch's epoch and index): fit() advances it with
  // every batch, the run service's data loader continues from it, and checkpoints written and
  // read through core/run save and restore it with the rest of the trainer's state.
  const data::LoaderPosition& data_position() const { return data_position_; }
  void set_data_position(const data::LoaderPosition& position) { data_position_ = position; }

 private:
  std::shared_ptr<Model> model_;
  TrainConfig config_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<nn::NamedParameter> params_;
  std::shared_ptr<distributed::ProcessGroup> group_;
  std::unique_ptr<distributed::DataParallel> ddp_;
  std::unique_ptr<distributed::FullyShardedDataParallel> fsdp_;
  std::vector<std::shared_ptr<distributed::ProcessGroup>> mesh_groups_;  // the device mesh's sub-groups
  // The ranks holding this rank's tensor-parallel coordinate: data x context parallelism. Token
  // counts, losses and gradients are summed over it (the whole group without TP).
  std::shared_ptr<distributed::ProcessGroup> batch_group_;
  std::shared_ptr<distributed::TensorParallelGroup> tp_;
  std::shared_ptr<distributed::ProcessGroup> tp_group_;
  std::shared_ptr<distributed::ContextParallelGroup> cp_;
  std::shared_ptr<distributed::ProcessGroup> cp_group_;
  // Names of the parameters every TP rank holds whole: their gradients are partial sums over
  // the TP group (sequence parallelism), and count once in the gradient norm.
  std::set<std::string> tp_replicated_;
  int64_t dp_rank_ = 0, dp_world_ = 1;
  // Splits the model over tp_ (after a broadcast of the full weights over the TP group), keeping
  // each parameter's slice of any optimizer state already restored.
  void apply_tensor_parallel(std::shared_ptr<distributed::ProcessGroup> tp_group);
  // set_process_group's halves: the mesh over group_ (its sub-groups, CP and TP applied to the
  // model, DDP or FSDP), and dropping the mesh's groups and context parallelism.
  void attach_mesh();
  void detach_mesh();
  // Context parallelism: this rank's part of every sequence (the load balancer's layout), with
  // each token's position in its document (its position in the row without documents), as the
  // attention needs to mask and rotate it.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> shard_sequences(const at::Tensor& input_ids, const at::Tensor& labels,
                                                                 const at::Tensor& doc_positions) const;
  // Sums the replicated parameters' partial gradients over the TP group, and returns the squared
  // gradient norm's TP-local share (split parameters whole, replicated ones divided by the degree).
  at::Tensor reduce_tensor_parallel_grads(const std::vector<nn::NamedParameter>& params);
  int64_t comm_bytes() const;  // sent over the group and the mesh's sub-groups so far
  void install_block_runner();
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  int64_t skipped_steps_ = 0;
  data::LoaderPosition data_position_;
};

// OLMo-core's get_labels: input_ids shifted left by one, the last position ignore_index.
at::Tensor default_labels(const at::Tensor& input_ids, int64_t ignore_index = -100);

}  // namespace olm::train
