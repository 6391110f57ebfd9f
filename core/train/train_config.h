// Training configuration: schema/olm.fbs's TrainConfig (buffers identified "OLMT") resolved into
// a validated specification, with OLMo-core's names and defaults.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/data/token_data.h"

namespace olm::train {

struct GroupOverride {
  std::vector<std::string> params;  // globs over OLMo-core parameter names
  std::optional<double> lr;
  std::optional<double> weight_decay;
};

struct OptimizerSpec {
  std::string name = "adamw";
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  double momentum = 0.0;
  int64_t rolling_interval_length = 128;
  double sigma_factor = 6;
  std::vector<GroupOverride> group_overrides;
};

// olmo_core.optim.scheduler, value for value.
struct SchedulerSpec {
  std::string name = "constant";
  bool units_tokens = false;
  std::optional<int64_t> warmup;
  std::optional<double> warmup_fraction;
  double warmup_min_lr = 0.0;
  double alpha_f = 0.1;
  std::optional<int64_t> t_max;
  std::optional<int64_t> decay;
  std::optional<double> decay_fraction;
  double decay_min_lr = 0.0;

  double lr(double initial_lr, int64_t current, int64_t t_max) const;
};

struct DataSpec {
  std::vector<std::string> paths;
  // The dataset's own options, declared once in core/data; sequence_length and vocab_size are
  // left 0 here and filled from the train config and the model when the data is opened.
  data::DatasetOptions dataset;
  bool generate_doc_lengths = false;  // train with intra-document masking (needs eos_token_id)
};

struct TrainSpec {
  std::optional<Config> model;  // from `model` or `model_preset`
  OptimizerSpec optimizer;
  SchedulerSpec scheduler;
  int64_t sequence_length = 0;
  int64_t global_batch_size = 0;     // tokens
  int64_t rank_microbatch_size = 0;  // tokens
  int64_t max_steps = 0;
  std::optional<double> max_grad_norm;
  std::optional<double> z_loss_multiplier;
  bool bf16_autocast = false;
  std::string ac_mode = "none";
  int64_t ac_block_interval = 1;
  int64_t seed = 0;
  std::optional<DataSpec> data;
  std::optional<DataSpec> eval_data;
  int64_t eval_interval = 0;
  int64_t eval_batches = 0;
  std::string save_folder;
  int64_t save_interval = 0;
  int64_t keep_last_n = 3;
  std::string metrics_path;
  int64_t log_interval = 1;
  std::string data_parallel = "ddp";          // data_parallel.name: "ddp", "fsdp" or "hsdp"
  std::string dp_param_dtype = "float32";     // data_parallel.param_dtype (fsdp, hsdp)
  std::string dp_reduce_dtype = "float32";    // data_parallel.reduce_dtype (fsdp, hsdp)
  int64_t dp_num_replicas = 0;                // data_parallel.num_replicas (hsdp; 0: from the launch)
  int64_t dp_shard_degree = 0;                // data_parallel.shard_degree (hsdp; 0: from the launch)
  int64_t dp_prefetch_factor = 0;             // data_parallel.prefetch_factor (fsdp, hsdp)
  bool sharded() const { return data_parallel == "fsdp" || data_parallel == "hsdp"; }
  int64_t tp_degree = 1;                      // tensor_parallel.degree
  int64_t cp_degree = 1;                      // context_parallel.degree
  // context_parallel's style: "ring" (load balancer cp_load_balancer) or "ulysses"; "" when
  // cp_degree is 1 and no style was given.
  std::string cp_style;
  std::string cp_load_balancer;               // ring: "zig_zag" or "llama3"
  // The multiple sequence_length must be of for the sequence to split over the CP ranks and, on
  // each, over the TP ranks (sequence parallelism).
  int64_t sequence_multiple() const {
    return (cp_style == "ring" && cp_load_balancer == "zig_zag" ? 2 : 1) * cp_degree * tp_degree;
  }

  int64_t global_batch_instances() const { return global_batch_size / sequence_length; }
  int64_t microbatch_instances() const { return rank_microbatch_size / sequence_length; }
};

class TrainConfig {
 public:
  // `source` names the text in messages (a file name; default "train config JSON").
  static TrainConfig from_json(std::string_view text, const std::string& source = "");
  // Reads and parses a JSON file; messages name the file (Error(kIo) when it cannot be read).
  static TrainConfig from_json_file(const std::string& path);
  static TrainConfig from_flatbuffer(const void* data, size_t size);
  static TrainConfig from_native(const fb::TrainConfigT& native);

  std::string to_json() const;
  std::vector<uint8_t> to_flatbuffer() const;  // identifier "OLMT"
  const fb::TrainConfigT& native() const { return *native_; }
  const TrainSpec& spec() const { return *spec_; }

 private:
  std::shared_ptr<const fb::TrainConfigT> native_;
  std::shared_ptr<const TrainSpec> spec_;
};

inline constexpr char kTrainConfigIdentifier[] = "OLMT";

}  // namespace olm::train
