#include <cmath>

#include "capi/capi.h"
#include "core/checkpoint/checkpoint.h"
#include "core/generate.h"
#include "core/run/run.h"

using olm::ErrorCode;
using olm::require;
using olm::capi::make_buffer;
using olm::capi::init_options;
using olm::capi::read_options;
using olm::capi::require_arg;

olm_step_metrics olm::capi::step_metrics_to_c(const olm::train::StepMetrics& m) {
  olm_step_metrics c{};
  c.struct_size = sizeof(olm_step_metrics);
#define COPY(type, name, doc) c.name = static_cast<decltype(c.name)>(m.name);
  OLM_STEP_METRICS(COPY)
  OLM_STEP_METRICS_COMM(COPY)
#undef COPY
  return c;
}

extern "C" {

static void generate_defaults(olm_generate_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_generate_options);
  options->max_new_tokens = 32;
  options->temperature = 1.0;
  options->top_k = 0;
  options->top_p = 1.0;
  options->seed = 0;
  options->stop_tokens = nullptr;
  options->num_stop_tokens = 0;
  options->on_token = nullptr;
  options->user_data = nullptr;
  options->use_kv_cache = 1;
}

void olm_generate_options_init_sized(olm_generate_options* options, size_t struct_size) {
  init_options(options, struct_size, generate_defaults);
}

void(olm_generate_options_init)(olm_generate_options* options) { init_options(options, sizeof *options, generate_defaults); }

olm_error* olm_model_generate(olm_model* model, const olm_tensor* prompt,
                              const olm_generate_options* options, olm_tensor** out) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(prompt, "prompt");
  require_arg(out, "out");
  const auto opts = read_options(options, generate_defaults, "options");
  // The prompt and the options are checked here, under their names in olm.h, before the core
  // (which checks the ids as a forward's input_ids) sees them.
  const at::Tensor& p = prompt->tensor;
  require(p.scalar_type() == at::kLong || p.scalar_type() == at::kInt, ErrorCode::kInvalidArgument,
          std::string("prompt: dtype must be int32 or int64 (got ") + c10::toString(p.scalar_type()) + ")");
  require((p.dim() == 1 || (p.dim() == 2 && p.size(0) == 1)) && p.numel() > 0, ErrorCode::kInvalidArgument,
          "prompt: must hold at least one token id, shape (T,) or (1, T) (got " + std::to_string(p.dim()) +
              "-D with " + std::to_string(p.numel()) + " elements)");
  const int64_t vocab = model->model->config().spec().vocab_size;
  {
    const auto ids = p.to(at::kCPU, at::kLong).flatten();
    const auto bad = ids.lt(0).logical_or(ids.ge(vocab));
    if (bad.any().item<bool>())
      olm::fail(ErrorCode::kInvalidArgument,
                "prompt: token id " + std::to_string(ids.masked_select(bad)[0].item<int64_t>()) +
                    " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  }
  require(opts.max_new_tokens >= 0 && opts.max_new_tokens <= (1 << 24), ErrorCode::kInvalidArgument,
          "options.max_new_tokens: must be in [0, 2^24] (got " + std::to_string(opts.max_new_tokens) + ")");
  require(std::isfinite(opts.temperature) && opts.temperature >= 0, ErrorCode::kInvalidArgument,
          "options.temperature: must be finite and >= 0");
  require(opts.top_k >= 0, ErrorCode::kInvalidArgument, "options.top_k: must be >= 0");
  require(opts.top_p > 0 && opts.top_p <= 1, ErrorCode::kInvalidArgument, "options.top_p: must be in (0, 1]");
  olm::GenerateOptions g;
  g.max_new_tokens = opts.max_new_tokens;
  g.temperature = opts.temperature;
  g.top_k = opts.top_k;
  g.top_p = opts.top_p;
  g.seed = opts.seed;
  require(opts.num_stop_tokens == 0 || opts.stop_tokens != nullptr, ErrorCode::kInvalidArgument,
          "options.stop_tokens: NULL with num_stop_tokens > 0");
  require(opts.num_stop_tokens <= (1u << 20), ErrorCode::kInvalidArgument,
          "options.num_stop_tokens: too many");
  g.stop_tokens.assign(opts.stop_tokens, opts.stop_tokens + opts.num_stop_tokens);
  for (size_t i = 0; i < g.stop_tokens.size(); ++i)
    require(g.stop_tokens[i] >= 0 && g.stop_tokens[i] < vocab, ErrorCode::kInvalidArgument,
            "options.stop_tokens[" + std::to_string(i) + "]: " + std::to_string(g.stop_tokens[i]) +
                " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  g.use_kv_cache = opts.use_kv_cache != 0;
  if (opts.on_token) {
    auto callback = opts.on_token;
    void* user_data = opts.user_data;
    g.on_token = [callback, user_data](int64_t token) { return callback(token, user_data) == 0; };
  }
  const auto tokens = olm::generate(*model->model, prompt->tensor, g);
  auto t = at::empty({static_cast<int64_t>(tokens.size())}, at::kLong);
  if (!tokens.empty()) std::memcpy(t.data_ptr(), tokens.data(), tokens.size() * sizeof(int64_t));
  *out = new olm_tensor{t};
  OLM_API_END
}

olm_error* olm_train_config_from_json(const char* text, size_t len, olm_train_config** out) {
  OLM_API_BEGIN
  require_arg(text, "text");
  require_arg(out, "out");
  *out = new olm_train_config{olm::train::TrainConfig::from_json(std::string_view(text, len))};
  OLM_API_END
}

olm_error* olm_train_config_from_flatbuffer(const void* data, size_t len, olm_train_config** out) {
  OLM_API_BEGIN
  require_arg(data, "data");
  require_arg(out, "out");
  *out = new olm_train_config{olm::train::TrainConfig::from_flatbuffer(data, len)};
  OLM_API_END
}

olm_error* olm_train_config_to_json(const olm_train_config* config, olm_buffer** out) {
  OLM_API_BEGIN
  require_arg(config, "config");
  require_arg(out, "out");
  *out = olm::capi::json_buffer(config->config);
  OLM_API_END
}

olm_error* olm_train_config_to_flatbuffer(const olm_train_config* config, olm_buffer** out) {
  OLM_API_BEGIN
  require_arg(config, "config");
  require_arg(out, "out");
  *out = olm::capi::flatbuffer_buffer(config->config);
  OLM_API_END
}

olm_error* olm_train_config_model(const olm_train_config* config, olm_config** out) {
  OLM_API_BEGIN
  require_arg(config, "config");
  require_arg(out, "out");
  const auto& model = config->config.spec().model;
  require(model.has_value(), ErrorCode::kInvalidArgument,
          "config: the train config has neither `model` nor `model_preset`");
  *out = new olm_config{*model};
  OLM_API_END
}

void olm_train_config_free(olm_train_config* config) { delete config; }

olm_error* olm_trainer_create(olm_model* model, const olm_train_config* config, olm_trainer** out) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(config, "config");
  require_arg(out, "out");
  auto trainer = std::make_unique<olm::train::Trainer>(model->model, config->config);
  *out = new olm_trainer{std::move(trainer)};
  OLM_API_END
}

olm_error* olm_trainer_step(olm_trainer* trainer, const olm_tensor* input_ids, const olm_tensor* labels,
                            olm_step_metrics* out) {
  return olm_trainer_step_documents(trainer, input_ids, labels, nullptr, out);
}

olm_error* olm_trainer_step_documents(olm_trainer* trainer, const olm_tensor* input_ids, const olm_tensor* labels,
                                      const olm_tensor* cu_doc_lens, olm_step_metrics* out) {
  OLM_API_BEGIN
  require_arg(trainer, "trainer");
  require_arg(input_ids, "input_ids");
  olm::capi::require_result(out, "out");
  const auto m = trainer->trainer->train_batch(input_ids->tensor, labels ? labels->tensor : at::Tensor(),
                                               cu_doc_lens ? cu_doc_lens->tensor : at::Tensor());
  olm::capi::write_result(out, olm::capi::step_metrics_to_c(m));
  OLM_API_END
}

olm_error* olm_trainer_save_checkpoint(olm_trainer* trainer, const char* folder, olm_buffer** out_path) {
  OLM_API_BEGIN
  require_arg(trainer, "trainer");
  require_arg(folder, "folder");
  const std::string dir = olm::run::save_checkpoint(*trainer->trainer, folder);
  if (out_path) *out_path = make_buffer(reinterpret_cast<const uint8_t*>(dir.data()), dir.size(), true);
  OLM_API_END
}

olm_error* olm_trainer_load_checkpoint(olm_trainer* trainer, const char* path) {
  OLM_API_BEGIN
  require_arg(trainer, "trainer");
  require_arg(path, "path");
  olm::run::load_checkpoint(*trainer->trainer, path);
  OLM_API_END
}

void olm_trainer_free(olm_trainer* trainer) { delete trainer; }

}  // extern "C"
