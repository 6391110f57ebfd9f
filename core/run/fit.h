// The outer training loop (olmo_core.train.Trainer.fit): batches from a data loader, metrics
// (callbacks and a JSON-lines file), periodic evaluation and checkpoints, and a clean stop on
// request that saves a checkpoint first. It lives in the run layer, above train and checkpoint,
// because it saves checkpoints of a trainer.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/checkpoint/checkpoint.h"
#include "core/data/token_data.h"
#include "core/train/trainer.h"

namespace olm::run {

struct FitCallbacks {
  // After each step; returning false stops training (a checkpoint is saved first when the
  // config has a save_folder).
  std::function<bool(const train::StepMetrics&)> on_step;
  std::function<void(const train::EvalMetrics&, int64_t step)> on_eval;
  std::function<void(const std::string& message)> on_log;
  const std::atomic<bool>* stop_requested = nullptr;  // polled between steps (e.g. SIGINT)
};

struct FitResult {
  int64_t steps = 0;          // the trainer's step count at the end
  bool stopped_early = false; // by a callback or stop_requested
  std::string last_checkpoint;
  std::optional<train::EvalMetrics> last_eval;
};

// Trains until the config's max_steps. `loader` supplies the training batches; the trainer's
// data_position() follows it and is what checkpoints save. A step's checkpoint is written once
// (a stop right after a periodic save, or before the first step of a resumed run, writes none).
// `eval` (may be null) is evaluated every eval_interval steps and at the end.
// The loop alone: run::fit (run.h) is what callers use, opening the config's data,
// resolving its paths and checking its outputs first.
// `documents` turns intra-document masking (from the batches' document lengths) on or off
// for training and evaluation; nullopt follows the config's data.generate_doc_lengths and
// eval_data.generate_doc_lengths.
// With a process group on the trainer, `loader` must be this rank's
// (DataLoader's rank and world_size), rank 0 alone writes metrics, every rank writes its shard
// of each (sharded) checkpoint, a stop
// asked for on any rank stops all at the same step, and the eval batches are split across
// ranks (every rank gets the same result).
FitResult fit_loop(train::Trainer& trainer, data::DataLoader& loader,
                   std::shared_ptr<const data::TokenDataset> eval, const FitCallbacks& callbacks,
                   std::optional<bool> documents = std::nullopt);

}  // namespace olm::run
