// The training loop of olmo_core.train (Trainer + TransformerTrainModule) for one process:
// micro-batching with OLMo-core's loss normalization, gradient clipping, LR scheduling,
// bf16 autocast, activation checkpointing, skipped steps on NaN/Inf, metrics.
#pragma once
#include <chrono>
#include <functional>
#include <memory>

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
  std::vector<std::shared_ptr<distributed::ProcessGroup>> mesh_groups_;  // hsdp: the shard and replicate groups
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
