#include "core/train/train_config.h"

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <sstream>

#include "core/distributed/process_group.h"
#include "core/error.h"
#include "core/io/flatbuffer_alignment.h"
#include "core/io/json.h"

namespace olm::train {
namespace {

std::string text(double v) { return io::format_double(v); }

void require_in(double v, double lo, double hi, const std::string& field) {
  require(std::isfinite(v) && v >= lo && v <= hi, ErrorCode::kInvalidConfig,
          field + " must be in [" + text(lo) + ", " + text(hi) + "] (got " + text(v) + ")");
}

void require_one_of(const std::string& value, const std::vector<std::string>& known,
                    const std::string& field) {
  for (const auto& k : known)
    if (value == k) return;
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  fail(ErrorCode::kInvalidConfig, field + ": unknown value '" + value + "' (known: " + list + ")");
}

// Python's round(): halves to even.
int64_t round_half_even(double x) {
  const int saved = std::fegetround();
  std::fesetround(FE_TONEAREST);
  const double r = std::nearbyint(x);
  std::fesetround(saved);
  return static_cast<int64_t>(r);
}

DataSpec resolve_data(const fb::DataConfigT& in, const std::string& field) {
  DataSpec out;
  out.paths = in.paths;
  require(!out.paths.empty(), ErrorCode::kInvalidConfig, field + ".paths: at least one file is required");
  if (!in.raw_dtype.empty()) out.dataset.raw_dtype = in.raw_dtype;
  require_one_of(out.dataset.raw_dtype, {"uint16", "uint32"}, field + ".raw_dtype");
  if (in.eos_token_id.has_value()) out.dataset.eos_token_id = *in.eos_token_id;
  out.dataset.masked_token_ids = in.masked_token_ids;
  out.generate_doc_lengths = in.generate_doc_lengths;
  require(!out.generate_doc_lengths || out.dataset.eos_token_id, ErrorCode::kInvalidConfig,
          field + ".generate_doc_lengths requires " + field + ".eos_token_id (documents end after it)");
  return out;
}

TrainSpec resolve_train(const fb::TrainConfigT& in) {
  TrainSpec s;
  require(!(in.model && !in.model_preset.empty()), ErrorCode::kInvalidConfig,
          "model and model_preset: give one, not both");
  if (in.model) {
    s.model = Config::from_native(*in.model);
  } else if (!in.model_preset.empty()) {
    require(in.model_vocab_size > 0, ErrorCode::kInvalidConfig,
            "model_vocab_size must be positive with model_preset (got " +
                std::to_string(in.model_vocab_size) + ")");
    const auto& names = preset_names();
    if (std::find(names.begin(), names.end(), in.model_preset) == names.end()) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      fail(ErrorCode::kInvalidConfig, "model_preset: unknown preset '" + in.model_preset + "' (known: " + known + ")");
    }
    s.model = preset(in.model_preset, in.model_vocab_size);
  }

  if (in.optimizer) {
    const auto& o = *in.optimizer;
    auto& out = s.optimizer;
    out.name = o.name.empty() ? "adamw" : o.name;
    require_one_of(out.name, {"adamw", "adam", "lion", "skip_step_adamw", "sgd"}, "optimizer.name");
    out.lr = o.lr;
    require_in(out.lr, 0, 1e3, "optimizer.lr");
    out.beta1 = o.beta1;
    out.beta2 = o.beta2;
    require_in(out.beta1, 0, 1, "optimizer.beta1");
    require_in(out.beta2, 0, 1, "optimizer.beta2");
    out.eps = o.eps;
    require_in(out.eps, 0, 1, "optimizer.eps");
    out.weight_decay = o.weight_decay;
    require_in(out.weight_decay, 0, 1e3, "optimizer.weight_decay");
    out.momentum = o.momentum;
    require_in(out.momentum, 0, 1, "optimizer.momentum");
    out.rolling_interval_length = o.rolling_interval_length;
    require(out.rolling_interval_length >= 2, ErrorCode::kInvalidConfig,
            "optimizer.rolling_interval_length must be >= 2");
    out.sigma_factor = o.sigma_factor;
    require_in(out.sigma_factor, 0, 1e6, "optimizer.sigma_factor");
    for (size_t i = 0; i < o.group_overrides.size(); ++i) {
      const auto& g = *o.group_overrides[i];
      const std::string f = "optimizer.group_overrides[" + std::to_string(i) + "]";
      require(!g.params.empty(), ErrorCode::kInvalidConfig, f + ".params: empty");
      GroupOverride go;
      go.params = g.params;
      if (g.lr.has_value()) {
        require_in(*g.lr, 0, 1e3, f + ".lr");
        go.lr = *g.lr;
      }
      if (g.weight_decay.has_value()) {
        require_in(*g.weight_decay, 0, 1e3, f + ".weight_decay");
        go.weight_decay = *g.weight_decay;
      }
      out.group_overrides.push_back(go);
    }
  }
  // No group_overrides (absent or []): every parameter in one group with weight_decay, as
  // OLMo-core 3.0's OptimConfig (group_overrides None). Its training scripts turn decay off for
  // the embeddings with an override: [{"params": ["embeddings.weight"], "weight_decay": 0}].

  if (in.scheduler) {
    const auto& c = *in.scheduler;
    auto& out = s.scheduler;
    out.name = c.name.empty() ? "constant" : c.name;
    require_one_of(out.name,
                   {"constant", "constant_with_warmup", "linear_with_warmup", "cos_with_warmup",
                    "wsd", "inv_sqrt_with_warmup"},
                   "scheduler.name");
    const std::string units = c.units.empty() ? "steps" : c.units;
    require_one_of(units, {"steps", "tokens"}, "scheduler.units");
    out.units_tokens = units == "tokens";
    if (c.warmup.has_value()) out.warmup = *c.warmup;
    if (c.warmup_fraction.has_value()) out.warmup_fraction = *c.warmup_fraction;
    if (out.name != "constant") {
      require(out.warmup.has_value() != out.warmup_fraction.has_value(), ErrorCode::kInvalidConfig,
              "scheduler: give exactly one of warmup and warmup_fraction");
    }
    if (out.warmup) require(*out.warmup >= 0, ErrorCode::kInvalidConfig, "scheduler.warmup must be >= 0");
    if (out.warmup_fraction) require_in(*out.warmup_fraction, 0, 1, "scheduler.warmup_fraction");
    // The warmup starts at warmup_min_lr and climbs to optimizer.lr. Schedules without a
    // warmup ignore it; OLMo-core and PyTorch accept a learning rate of 0 (a frozen run).
    out.warmup_min_lr = c.warmup_min_lr;
    require(std::isfinite(out.warmup_min_lr) && out.warmup_min_lr >= 0 &&
                (out.name == "constant" || out.warmup_min_lr <= s.optimizer.lr),
            ErrorCode::kInvalidConfig,
            "scheduler.warmup_min_lr must be in [0, optimizer.lr] (got " + text(out.warmup_min_lr) +
                " with optimizer.lr " + text(s.optimizer.lr) + ")");
    out.alpha_f = c.alpha_f;
    require_in(out.alpha_f, 0, 1, "scheduler.alpha_f");
    if (c.t_max.has_value()) {
      require(*c.t_max > 0, ErrorCode::kInvalidConfig, "scheduler.t_max must be positive");
      out.t_max = *c.t_max;
    }
    if (c.decay.has_value()) out.decay = *c.decay;
    if (c.decay_fraction.has_value()) out.decay_fraction = *c.decay_fraction;
    if (out.name == "wsd") {
      if (!out.decay && !out.decay_fraction) out.decay_fraction = 0.1;
      require(out.decay.has_value() != out.decay_fraction.has_value(), ErrorCode::kInvalidConfig,
              "scheduler: give exactly one of decay and decay_fraction");
      if (out.decay) require(*out.decay > 0, ErrorCode::kInvalidConfig, "scheduler.decay must be positive");
      if (out.decay_fraction) require_in(*out.decay_fraction, 0, 1, "scheduler.decay_fraction");
    }
    out.decay_min_lr = c.decay_min_lr;
    require(std::isfinite(out.decay_min_lr) && out.decay_min_lr >= 0 &&
                (out.name != "wsd" || out.decay_min_lr <= s.optimizer.lr),
            ErrorCode::kInvalidConfig,
            "scheduler.decay_min_lr must be in [0, optimizer.lr] (got " + text(out.decay_min_lr) +
                " with optimizer.lr " + text(s.optimizer.lr) + ")");
  }

  s.sequence_length = in.sequence_length;
  require(s.sequence_length > 0, ErrorCode::kInvalidConfig,
          "sequence_length must be positive (got " + std::to_string(s.sequence_length) + ")");
  if (s.model) {
    // The trainer reports FLOPs per token at this length: it must be countable.
    try {
      (void)s.model->num_flops_per_token(s.sequence_length);
    } catch (const Error&) {
      fail(ErrorCode::kInvalidConfig, "sequence_length (" + std::to_string(s.sequence_length) +
                                          ") is too large: the model's FLOPs per token do not fit in a 64-bit integer");
    }
  }
  s.global_batch_size = in.global_batch_size;
  require(s.global_batch_size > 0 && s.global_batch_size % s.sequence_length == 0,
          ErrorCode::kInvalidConfig,
          "global_batch_size (" + std::to_string(s.global_batch_size) +
              " tokens) must be a positive multiple of sequence_length (" +
              std::to_string(s.sequence_length) + ")");
  s.rank_microbatch_size = in.rank_microbatch_size.has_value() ? *in.rank_microbatch_size : s.global_batch_size;
  require(s.rank_microbatch_size > 0 && s.rank_microbatch_size % s.sequence_length == 0,
          ErrorCode::kInvalidConfig,
          "rank_microbatch_size (" + std::to_string(s.rank_microbatch_size) +
              " tokens) must be a positive multiple of sequence_length (" +
              std::to_string(s.sequence_length) + ")");
  s.max_steps = in.max_steps;
  require(s.max_steps >= 0, ErrorCode::kInvalidConfig, "max_steps must be >= 0");
  if (in.max_grad_norm.has_value()) {
    require(std::isfinite(*in.max_grad_norm) && *in.max_grad_norm > 0, ErrorCode::kInvalidConfig,
            "max_grad_norm must be positive");
    s.max_grad_norm = *in.max_grad_norm;
  }
  // OLMo-core's z_loss_multiplier is Optional (None: no z-loss); 0 also means off, here as in
  // the C API's olm_loss_options. Negative or non-finite values are refused.
  if (in.z_loss_multiplier.has_value()) {
    require(std::isfinite(*in.z_loss_multiplier) && *in.z_loss_multiplier >= 0, ErrorCode::kInvalidConfig,
            "z_loss_multiplier must be finite and >= 0 (0 or absent: no z-loss; got " + text(*in.z_loss_multiplier) + ")");
    if (*in.z_loss_multiplier > 0) s.z_loss_multiplier = *in.z_loss_multiplier;
  }
  if (!in.autocast_precision.empty()) {
    require_one_of(in.autocast_precision, {"float32", "bfloat16"}, "autocast_precision");
    s.bf16_autocast = in.autocast_precision == "bfloat16";
  }
  s.ac_mode = in.ac_mode.empty() ? "none" : in.ac_mode;
  require_one_of(s.ac_mode, {"none", "full", "selected_blocks"}, "ac_mode");
  s.ac_block_interval = in.ac_block_interval;
  require(s.ac_block_interval >= 1, ErrorCode::kInvalidConfig, "ac_block_interval must be >= 1");
  s.seed = in.seed;
  if (in.data) s.data = resolve_data(*in.data, "data");
  if (in.eval_data) s.eval_data = resolve_data(*in.eval_data, "eval_data");
  s.eval_interval = in.eval_interval;
  s.eval_batches = in.eval_batches;
  require(s.eval_interval >= 0 && s.eval_batches >= 0, ErrorCode::kInvalidConfig,
          "eval_interval and eval_batches must be >= 0");
  s.save_folder = in.save_folder;
  s.save_interval = in.save_interval;
  require(s.save_interval >= 0, ErrorCode::kInvalidConfig, "save_interval must be >= 0");
  s.keep_last_n = in.keep_last_n;
  require(s.keep_last_n >= 1, ErrorCode::kInvalidConfig, "keep_last_n must be >= 1");
  s.metrics_path = in.metrics_path;
  s.log_interval = in.log_interval;
  require(s.log_interval >= 1, ErrorCode::kInvalidConfig, "log_interval must be >= 1");
  if (in.data_parallel) {
    const auto& dp = *in.data_parallel;
    s.data_parallel = dp.name.empty() ? "ddp" : dp.name;
    require_one_of(s.data_parallel, {"ddp", "fsdp", "hsdp"}, "data_parallel.name");
    s.dp_param_dtype = dp.param_dtype.empty() ? "float32" : dp.param_dtype;
    require_one_of(s.dp_param_dtype, {"float32", "bfloat16"}, "data_parallel.param_dtype");
    s.dp_reduce_dtype = dp.reduce_dtype.empty() ? "float32" : dp.reduce_dtype;
    require_one_of(s.dp_reduce_dtype, {"float32", "bfloat16"}, "data_parallel.reduce_dtype");
    require(s.sharded() || (s.dp_param_dtype == "float32" && s.dp_reduce_dtype == "float32"),
            ErrorCode::kInvalidConfig,
            "data_parallel.param_dtype and reduce_dtype: bfloat16 needs data_parallel.name \"fsdp\" or \"hsdp\" "
            "(ddp keeps float32 parameters and gradients)");
    require(dp.num_replicas >= 0 && dp.shard_degree >= 0, ErrorCode::kInvalidConfig,
            "data_parallel.num_replicas and shard_degree must be >= 0");
    require(s.data_parallel == "hsdp" || (dp.num_replicas == 0 && dp.shard_degree == 0), ErrorCode::kInvalidConfig,
            "data_parallel.num_replicas and shard_degree apply to data_parallel.name \"hsdp\" only");
    require(dp.prefetch_factor >= 0, ErrorCode::kInvalidConfig, "data_parallel.prefetch_factor must be >= 0");
    require(s.sharded() || dp.prefetch_factor == 0, ErrorCode::kInvalidConfig,
            "data_parallel.prefetch_factor applies to data_parallel.name \"fsdp\" or \"hsdp\" only");
    s.dp_prefetch_factor = dp.prefetch_factor;
    s.dp_num_replicas = dp.num_replicas;
    s.dp_shard_degree = dp.shard_degree;
  }
  if (in.tensor_parallel) {
    const auto& tp = *in.tensor_parallel;
    require(tp.degree >= 1 && tp.degree <= distributed::kMaxWorldSize, ErrorCode::kInvalidConfig,
            "tensor_parallel.degree must be in [1, " + std::to_string(distributed::kMaxWorldSize) + "] (got " +
                std::to_string(tp.degree) + ")");
    require(!tp.enable_async, ErrorCode::kInvalidConfig,
            "tensor_parallel.enable_async: async tensor parallelism (torch.compile's micro-pipelining over "
            "symmetric memory) is not available in olm");
    s.tp_degree = tp.degree;
  }
  if (in.context_parallel) {
    const auto& cp = *in.context_parallel;
    require(cp.degree >= 1 && cp.degree <= distributed::kMaxWorldSize, ErrorCode::kInvalidConfig,
            "context_parallel.degree must be in [1, " + std::to_string(distributed::kMaxWorldSize) + "] (got " +
                std::to_string(cp.degree) + ")");
    // As OLMo-core's TransformerContextParallelConfig.__post_init__.
    require(!(cp.ring && cp.uly), ErrorCode::kInvalidConfig,
            "context_parallel: only one of ring and uly can be given");
    require(cp.ring || cp.uly, ErrorCode::kInvalidConfig, "context_parallel: one of ring and uly must be given");
    s.cp_degree = cp.degree;
    if (cp.uly) {
      s.cp_style = "ulysses";
    } else {
      s.cp_style = "ring";
      s.cp_load_balancer = cp.ring->load_balancer.empty() ? "zig_zag" : cp.ring->load_balancer;
      require_one_of(s.cp_load_balancer, {"zig_zag"}, "context_parallel.ring.load_balancer");
      require(cp.ring->head_stride == 1, ErrorCode::kInvalidConfig,
              "context_parallel.ring.head_stride: only 1 is supported (every key/value head travels in each ring "
              "pass; got " + std::to_string(cp.ring->head_stride) + ")");
    }
  }
  const int64_t multiple = s.sequence_multiple();
  if (multiple > 1 && s.sequence_length % multiple != 0) {
    std::vector<std::string> factors;
    if (s.cp_degree > 1)
      factors.push_back(s.cp_style == "ring" && s.cp_load_balancer == "zig_zag"
                            ? "2 x context_parallel.degree " + std::to_string(s.cp_degree) + " (zig-zag chunks)"
                            : "context_parallel.degree " + std::to_string(s.cp_degree));
    if (s.tp_degree > 1)
      factors.push_back("tensor_parallel.degree " + std::to_string(s.tp_degree) + " (sequence parallelism)");
    std::string why;
    for (const auto& f : factors) why += (why.empty() ? "" : " x ") + f;
    fail(ErrorCode::kInvalidConfig, "sequence_length " + std::to_string(s.sequence_length) +
                                        " must be a multiple of " + std::to_string(multiple) + ": " + why);
  }
  return s;
}

}  // namespace

double SchedulerSpec::lr(double initial_lr, int64_t current, int64_t t_max_in) const {
  auto linear_warmup = [&](int64_t w) {
    if (w <= 0) return initial_lr;  // OLMo-core would divide by zero here
    return warmup_min_lr + (initial_lr - warmup_min_lr) * static_cast<double>(std::min(current, w)) /
                               static_cast<double>(w);
  };
  auto resolve_warmup = [&](int64_t t) {
    return warmup ? *warmup : round_half_even(static_cast<double>(t) * warmup_fraction.value_or(0.0));
  };
  if (name == "constant") return initial_lr;
  if (name == "constant_with_warmup") {
    const int64_t w = resolve_warmup(t_max_in);
    return current <= w ? linear_warmup(w) : initial_lr;
  }
  if (name == "wsd") {
    const int64_t w = resolve_warmup(t_max_in);
    if (current <= w) return linear_warmup(w);
    const int64_t d = decay ? *decay : round_half_even(static_cast<double>(t_max_in) * *decay_fraction);
    if (current >= t_max_in - d) {
      if (d <= 0) return decay_min_lr;
      const int64_t from_end = t_max_in - current;
      return decay_min_lr + (initial_lr - decay_min_lr) * static_cast<double>(std::min(from_end, d)) /
                                static_cast<double>(d);
    }
    return initial_lr;
  }
  if (name == "inv_sqrt_with_warmup") {
    const int64_t w = resolve_warmup(t_max_in);
    if (current < w) return linear_warmup(w);
    const double eta_min = initial_lr * alpha_f;
    if (current == 0) return initial_lr;  // warmup 0 at step 0: sqrt(0/0)
    return eta_min + (initial_lr - eta_min) * std::sqrt(static_cast<double>(w) / static_cast<double>(current));
  }
  // linear_with_warmup and cos_with_warmup
  const int64_t t_max = this->t_max ? *this->t_max : t_max_in;
  const double eta_min = initial_lr * alpha_f;
  const int64_t w = resolve_warmup(t_max);
  if (current < w) return linear_warmup(w);
  if (current >= t_max) return eta_min;
  const double progress = static_cast<double>(current - w) / static_cast<double>(t_max - w);
  if (name == "linear_with_warmup") return initial_lr - (initial_lr - eta_min) * progress;
  return eta_min + (initial_lr - eta_min) * (1 + std::cos(M_PI * progress)) / 2;
}

TrainConfig TrainConfig::from_native(const fb::TrainConfigT& native) {
  // The one validation, whatever door the config came in by: what JSON can hold (strings in
  // UTF-8, finite numbers; named by their paths, "model." included), then resolve_train's rules.
  TrainConfig config;
  config.native_ = std::make_shared<const fb::TrainConfigT>(native);
  check_json_writable(config.to_flatbuffer().data(), "TrainConfig");
  config.spec_ = std::make_shared<const TrainSpec>(resolve_train(native));
  return config;
}

TrainConfig TrainConfig::from_flatbuffer(const void* data, size_t size) {
  require(data != nullptr, ErrorCode::kInvalidArgument, "data: NULL");
  require(size >= 8 && size < (1ull << 31), ErrorCode::kParse,
          "train config FlatBuffer: " + std::to_string(size) + " bytes is not a valid buffer size");
  std::vector<uint8_t> aligned(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + size);
  require(flatbuffers::BufferHasIdentifier(aligned.data(), kTrainConfigIdentifier), ErrorCode::kParse,
          "train config FlatBuffer: wrong file identifier (expected \"OLMT\")");
  flatbuffers::Verifier verifier(aligned.data(), aligned.size(), 64, 100000);
  require(verifier.VerifyBuffer<fb::TrainConfig>(kTrainConfigIdentifier), ErrorCode::kParse,
          "train config FlatBuffer: verification failed (truncated or corrupt buffer)");
  const auto* root = flatbuffers::GetRoot<fb::TrainConfig>(aligned.data());
  for (const auto& [field, data] : {std::pair{"data", root->data()}, std::pair{"eval_data", root->eval_data()}})
    require(!data || io::elements_aligned(data->masked_token_ids()), ErrorCode::kParse,
            std::string("train config FlatBuffer: ") + field + ".masked_token_ids is misaligned (corrupt buffer)");
  fb::TrainConfigT native;
  root->UnPackTo(&native);
  return from_native(native);
}

TrainConfig TrainConfig::from_json_file(const std::string& path) { return from_json(read_text_file(path), path); }

TrainConfig TrainConfig::from_json(std::string_view text, const std::string& source) {
  const auto buffer = json_to_flatbuffer(text, "TrainConfig", source.empty() ? "train config JSON" : source);
  fb::TrainConfigT native;
  flatbuffers::GetRoot<fb::TrainConfig>(buffer.data())->UnPackTo(&native);
  return from_native(native);
}

std::vector<uint8_t> TrainConfig::to_flatbuffer() const {
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(fb::TrainConfig::Pack(builder, native_.get()), kTrainConfigIdentifier);
  return {builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize()};
}

std::string TrainConfig::to_json() const { return flatbuffer_to_json(to_flatbuffer().data(), "TrainConfig"); }

}  // namespace olm::train
