// The outer training loop (olmo_core.train.Trainer.fit): batches from a data loader, metrics
// (callbacks and a JSON-lines file), periodic evaluation and checkpoints, and a clean stop on
// request that saves a checkpoint first.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/checkpoint/checkpoint.h"
#include "core/data/token_data.h"
#include "core/train/trainer.h"

namespace olm::train {

struct FitCallbacks {
  // After each step; returning false stops training (a checkpoint is saved first when the
  // config has a save_folder).
  std::function<bool(const StepMetrics&)> on_step;
  std::function<void(const EvalMetrics&, int64_t step)> on_eval;
  std::function<void(const std::string& message)> on_log;
  const std::atomic<bool>* stop_requested = nullptr;  // polled between steps (e.g. SIGINT)
};

struct FitResult {
  int64_t steps = 0;          // the trainer's step count at the end
  bool stopped_early = false; // by a callback or stop_requested
  std::string last_checkpoint;
  std::optional<EvalMetrics> last_eval;
};

// Trains until the config's max_steps. `loader` supplies the training batches; the trainer's
// data_position() follows it and is what checkpoints save. A step's checkpoint is written once
// (a stop right after a periodic save, or before the first step of a resumed run, writes none).
// `eval` (may be null) is evaluated every eval_interval steps and at the end.
// The loop alone: core/run (run::fit) is what callers use, opening the config's data,
// resolving its paths and checking its outputs first.
// `documents` turns intra-document masking (from the batches' document lengths) on or off
// for training and evaluation; nullopt follows the config's data.generate_doc_lengths and
// eval_data.generate_doc_lengths.
// With a process group on the trainer, `loader` must be this rank's
// (DataLoader's rank and world_size), rank 0 alone writes metrics, every rank writes its shard
// of each (sharded) checkpoint, a stop
// asked for on any rank stops all at the same step, and the eval batches are split across
// ranks (every rank gets the same result).
FitResult fit(Trainer& trainer, data::DataLoader& loader, std::shared_ptr<const data::TokenDataset> eval,
              const FitCallbacks& callbacks, std::optional<bool> documents = std::nullopt);

// Mean loss over a dataset's instances in order, `max_batches` batches of `batch_instances`
// (0: all); with `documents`, intra-document masking from the batches' document lengths; with a
// process group, rank r takes batches r, r + world_size, ... (a collective). A token id outside
// the model's vocabulary fails with kInvalidArgument naming `argument` (the dataset as the
// caller calls it) before any batch is evaluated, on every rank alike.
EvalMetrics evaluate_dataset(Trainer& trainer, const data::TokenDataset& dataset, int64_t batch_instances,
                             int64_t max_batches, bool documents = false, const std::string& argument = "data");

// Whether evaluation masks documents: the train config's eval_data.generate_doc_lengths.
bool eval_documents(const TrainSpec& spec);

}  // namespace olm::train
