// The training-run service: the one place a training run is wired. `olm train`, `olm resume`
// and olm_trainer_fit() all call it and only parse arguments, marshal and report. From a train
// config it resolves the config's relative paths once, checks every output before step 1,
// opens the train and eval data, continues the data order from the trainer's data position,
// and trains (fit_loop, fit.h) with periodic evaluation and checkpoints into the run folder, keeping
// the metrics file free of replayed steps.
//
// The run folder is the config's save_folder: checkpoints (<folder>/step<N>) go there, and a
// run moved or forked into another folder (relocate(), `olm resume DIR`, `--save-folder`)
// writes its checkpoints and its metrics file there, never into the files of the run it came
// from.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/data/token_data.h"
#include "core/run/fit.h"
#include "core/train/trainer.h"

namespace olm::run {

// Reads a train config file (JSON). Every relative path in it (data.paths, eval_data.paths,
// save_folder, metrics_path) is resolved against the file's directory, once, and stored
// absolute: the run works from any current directory, and its checkpoints record where its
// files are. Throws kIo naming the file when it cannot be read.
train::TrainConfig load_config(const std::string& path);

// `config` with its relative paths (as load_config) made absolute against `base_dir`, itself
// taken against the current directory when relative. Absolute paths stay as they are.
train::TrainConfig resolve_paths(const train::TrainConfig& config, const std::string& base_dir);

// `config` writing into the run folder `folder` (made absolute): checkpoints go there, and a
// metrics file, when the config has a metrics_path, keeps its file name but moves into
// `folder`. Unchanged when `folder` is already the config's save_folder.
train::TrainConfig relocate(const train::TrainConfig& config, const std::string& folder);

// `config` with max_steps replaced.
train::TrainConfig with_max_steps(const train::TrainConfig& config, int64_t max_steps);

// Saves the trainer, its data position included, as <folder>/step<N> (checkpoint::save).
std::string save_checkpoint(train::Trainer& trainer, const std::string& folder);
// Loads a checkpoint into the trainer (checkpoint::load) and sets its data position from it.
void load_checkpoint(train::Trainer& trainer, const std::string& path);

// What resuming a checkpoint needs before the model and trainer are built.
struct ResumePlan {
  std::string checkpoint;           // the step directory to load
  std::string run_folder;           // where the resumed run writes
  Config model_config;
  train::TrainConfig train_config;  // the checkpoint's, relocated into run_folder
};
// Plans resuming `path` (a step directory, or a save folder: its newest checkpoint) into
// `folder`; "" resumes into the run folder the checkpoint lies in (its parent directory), so
// a copied run keeps its writes to itself. Relative paths a checkpoint's config may hold
// (checkpoints written before paths were resolved) are taken against the current directory.
ResumePlan plan_resume(const std::string& path, const std::string& folder = "");

// A token dataset from a train config's data or eval_data section.
std::shared_ptr<data::TokenDataset> open_dataset(const train::DataSpec& spec, int64_t sequence_length,
                                                 int64_t vocab_size);

// Refuses, before anything is read or written, a run with nothing to train: max_steps unset
// (0) or not above the trainer's step (a finished run). kInvalidArgument naming max_steps.
void check_steps(const train::Trainer& trainer);

// Checks every output before step 1: the save folder is created and a file can be written in
// it (every rank, agreed), and rank 0 can open the metrics file. kIo naming the config field
// and path.
void check_outputs(const train::Trainer& trainer);

// Rewrites a JSON-lines metrics file keeping the lines of steps <= `step` (dropping a torn
// last line): what a run resumed at `step` will write again. Nothing happens when the file
// does not exist.
void trim_metrics(const std::string& path, int64_t step);

struct FitOptions {
  // Training data; null opens the config's `data` section (an error when it has none).
  std::shared_ptr<const data::TokenDataset> train_data;
  // Evaluation data; null: the config's eval_data when train_data is null too (a run wholly
  // from the config), none otherwise.
  std::shared_ptr<const data::TokenDataset> eval_data;
  std::optional<bool> documents;  // intra-document masking, as fit_loop's
  FitCallbacks callbacks;
  // Called once the data is open and the outputs are checked, right before step 1.
  std::function<void(const data::TokenDataset& train_data)> on_start;
};

// A training run: check_steps, the data opened, check_outputs, the metrics file trimmed to
// the trainer's step (rank 0), then fit_loop from the trainer's data position, which it
// leaves where the data stopped.
FitResult fit(train::Trainer& trainer, const FitOptions& options);

}  // namespace olm::run
