#include <cmath>

#include "capi/capi.h"

using olm::ErrorCode;
using olm::require;
using olm::capi::init_options;
using olm::capi::read_options;
using olm::capi::require_arg;

namespace {

olm_tensor* wrap(at::Tensor t) { return new olm_tensor{std::move(t)}; }

double scalar_value(const at::Tensor& t) { return t.to(at::kCPU).to(at::kDouble).item<double>(); }

// The options that forward and loss share, checked under their olm.h names (the core names
// them as its own parameters). The ids themselves are checked by the model as `input_ids`.
void check_sequence_options(const at::Tensor& ids, int64_t logits_to_keep, const olm_tensor* cu_doc_lens,
                            int64_t max_doc_len) {
  const bool shaped = ids.dim() == 2 && ids.size(0) > 0 && ids.size(1) > 0;
  require(logits_to_keep >= 0 && (!shaped || logits_to_keep <= ids.size(1)), ErrorCode::kInvalidArgument,
          "options.logits_to_keep: must be in [0, seq_len" +
              (shaped ? "=" + std::to_string(ids.size(1)) : std::string()) + "] (got " +
              std::to_string(logits_to_keep) + ")");
  require(max_doc_len >= 0, ErrorCode::kInvalidArgument,
          "options.max_doc_len: must be >= 0 (got " + std::to_string(max_doc_len) + ")");
  if (cu_doc_lens && shaped)
    (void)olm::nn::document_positions(cu_doc_lens->tensor.to(at::kCPU), ids.size(0), ids.size(1), 0,
                                      "options.cu_doc_lens");
}

}  // namespace

extern "C" {

static void model_defaults(olm_model_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_model_options);
  options->param_dtype = -1;
  options->init_weights = 1;
}

void olm_model_options_init_sized(olm_model_options* options, size_t struct_size) {
  init_options(options, struct_size, model_defaults);
}

void(olm_model_options_init)(olm_model_options* options) { init_options(options, sizeof *options, model_defaults); }

static void forward_defaults(olm_forward_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_forward_options);
  options->logits_to_keep = 0;
  options->cu_doc_lens = nullptr;
  options->max_doc_len = 0;
}

void olm_forward_options_init_sized(olm_forward_options* options, size_t struct_size) {
  init_options(options, struct_size, forward_defaults);
}

void(olm_forward_options_init)(olm_forward_options* options) { init_options(options, sizeof *options, forward_defaults); }

static void loss_defaults(olm_loss_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_loss_options);
  options->ignore_index = -100;
  options->loss_reduction = OLM_LOSS_REDUCTION_MEAN;
  options->z_loss_multiplier = 0.0;
  options->loss_div_factor = 0.0;  // unset
  options->return_logits = 0;
  options->logits_to_keep = 0;
  options->cu_doc_lens = nullptr;
  options->max_doc_len = 0;
}

void olm_loss_options_init_sized(olm_loss_options* options, size_t struct_size) {
  init_options(options, struct_size, loss_defaults);
}

void(olm_loss_options_init)(olm_loss_options* options) { init_options(options, sizeof *options, loss_defaults); }

olm_error* olm_model_create(const olm_config* config, const char* device,
                            const olm_model_options* options, olm_model** out) {
  OLM_API_BEGIN
  require_arg(config, "config");
  require_arg(device, "device");
  require_arg(out, "out");
  const auto opts = read_options(options, model_defaults, "options");
  olm::ModelOptions model_options;
  if (opts.param_dtype != -1) {
    require(opts.param_dtype == OLM_DTYPE_FLOAT32 || opts.param_dtype == OLM_DTYPE_BFLOAT16,
            ErrorCode::kInvalidArgument,
            "options.param_dtype must be -1, OLM_DTYPE_FLOAT32 or OLM_DTYPE_BFLOAT16 (got " +
                std::to_string(opts.param_dtype) + ")");
    model_options.param_dtype = olm::capi::to_scalar_type(opts.param_dtype, "options.param_dtype");
  }
  model_options.init_weights = opts.init_weights != 0;
  auto model = std::make_shared<olm::Model>(config->config, device, model_options);
  *out = new olm_model{std::move(model)};
  OLM_API_END
}

olm_error* olm_model_forward(olm_model* model, const olm_tensor* input_ids,
                             const olm_forward_options* options, olm_tensor** logits) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(input_ids, "input_ids");
  require_arg(logits, "logits");
  const auto opts = read_options(options, forward_defaults, "options");
  check_sequence_options(input_ids->tensor, opts.logits_to_keep, opts.cu_doc_lens, opts.max_doc_len);
  *logits = wrap(model->model->forward(input_ids->tensor, opts.logits_to_keep,
                                       opts.cu_doc_lens ? opts.cu_doc_lens->tensor : at::Tensor(),
                                       opts.max_doc_len));
  OLM_API_END
}

olm_error* olm_model_loss(olm_model* model, const olm_tensor* input_ids, const olm_tensor* labels,
                          const olm_loss_options* options, olm_loss_result* out) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(input_ids, "input_ids");
  require_arg(labels, "labels");
  olm::capi::require_result(out, "out");
  const auto opts = read_options(options, loss_defaults, "options");
  check_sequence_options(input_ids->tensor, opts.logits_to_keep, opts.cu_doc_lens, opts.max_doc_len);
  olm::nn::LossOptions loss_options;
  loss_options.ignore_index = opts.ignore_index;
  switch (opts.loss_reduction) {
    case OLM_LOSS_REDUCTION_MEAN: loss_options.reduction = olm::nn::LossReduction::kMean; break;
    case OLM_LOSS_REDUCTION_SUM: loss_options.reduction = olm::nn::LossReduction::kSum; break;
    case OLM_LOSS_REDUCTION_NONE: loss_options.reduction = olm::nn::LossReduction::kNone; break;
    default:
      olm::fail(ErrorCode::kInvalidArgument,
                "options.loss_reduction: unknown value " + std::to_string(opts.loss_reduction));
  }
  require(std::isfinite(opts.z_loss_multiplier) && opts.z_loss_multiplier >= 0,
          ErrorCode::kInvalidArgument, "options.z_loss_multiplier: must be finite and >= 0");
  if (opts.z_loss_multiplier > 0) loss_options.z_loss_multiplier = opts.z_loss_multiplier;
  require(std::isfinite(opts.loss_div_factor), ErrorCode::kInvalidArgument,
          "options.loss_div_factor must be finite (0 leaves it unset)");
  if (opts.loss_div_factor == 1.0) {
    // An explicit 1: core reads a factor of 1 as unset (the MoE losses then fall back to the
    // token count), a divisor tensor it takes as given.
    loss_options.loss_div_tensor =
        at::scalar_tensor(1.0, at::TensorOptions().dtype(at::kFloat).device(model->model->device()));
  } else if (opts.loss_div_factor != 0.0) {
    loss_options.loss_div_factor = opts.loss_div_factor;
  }
  loss_options.return_logits = opts.return_logits != 0;
  loss_options.logits_to_keep = opts.logits_to_keep;

  const auto result = model->model->loss(input_ids->tensor, labels->tensor, loss_options,
                                         opts.cu_doc_lens ? opts.cu_doc_lens->tensor : at::Tensor(),
                                         opts.max_doc_len);

  // Fill a full-size local struct; only the part the caller's struct_size covers is copied
  // out, and tensors that would not be copied are never allocated.
  olm_loss_result full{};
  full.struct_size = sizeof(olm_loss_result);
  const size_t size = out->struct_size;
  auto fits = [&](size_t offset, size_t field_size) { return offset + field_size <= size; };
  std::vector<olm_tensor*> allocated;
  try {
    auto give = [&](olm_tensor*& slot, size_t offset, const at::Tensor& t) {
      if (!fits(offset, sizeof(olm_tensor*))) return;
      slot = wrap(t);
      allocated.push_back(slot);
    };
    give(full.loss, offsetof(olm_loss_result, loss), result.loss.detach());
    give(full.ce_loss, offsetof(olm_loss_result, ce_loss), result.ce_loss);
    if (result.z_loss) give(full.z_loss, offsetof(olm_loss_result, z_loss), *result.z_loss);
    if (result.logits) give(full.logits, offsetof(olm_loss_result, logits), *result.logits);
    if (result.lb_loss) give(full.lb_loss, offsetof(olm_loss_result, lb_loss), result.lb_loss->detach());
    if (result.router_z_loss)
      give(full.router_z_loss, offsetof(olm_loss_result, router_z_loss), result.router_z_loss->detach());
    full.lb_loss_value = result.lb_loss ? scalar_value(*result.lb_loss) : 0.0;
    full.router_z_loss_value = result.router_z_loss ? scalar_value(*result.router_z_loss) : 0.0;
    if (loss_options.reduction != olm::nn::LossReduction::kNone) {
      full.loss_value = scalar_value(result.loss);
      full.ce_loss_value = scalar_value(result.ce_loss);
      full.z_loss_value = result.z_loss ? scalar_value(*result.z_loss) : 0.0;
    }
  } catch (...) {
    for (auto* t : allocated) delete t;
    throw;
  }
  olm::capi::write_result(out, full);
  OLM_API_END
}

void olm_loss_result_free(olm_loss_result* result) {
  if (!result) return;
  const size_t size = result->struct_size;
  auto release = [&](olm_tensor*& slot, size_t offset) {
    if (offset + sizeof(olm_tensor*) <= size) {
      delete slot;
      slot = nullptr;
    }
  };
  release(result->loss, offsetof(olm_loss_result, loss));
  release(result->ce_loss, offsetof(olm_loss_result, ce_loss));
  release(result->z_loss, offsetof(olm_loss_result, z_loss));
  release(result->logits, offsetof(olm_loss_result, logits));
  release(result->lb_loss, offsetof(olm_loss_result, lb_loss));
  release(result->router_z_loss, offsetof(olm_loss_result, router_z_loss));
}

olm_error* olm_model_num_params(const olm_model* model, int64_t* out) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(out, "out");
  *out = model->model->num_params();
  OLM_API_END
}

olm_error* olm_model_normalize_matrices(olm_model* model) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require(model->model->config().spec().normalized, ErrorCode::kInvalidArgument,
          "model: not a normalized (nGPT) transformer; only config name \"normalized\" has unit-norm matrices");
  model->model->module().normalize_matrices();
  OLM_API_END
}

olm_error* olm_model_parameter_count(const olm_model* model, size_t* out) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(out, "out");
  *out = model->model->parameters().size();
  OLM_API_END
}

olm_error* olm_model_parameter_info(const olm_model* model, size_t index, olm_parameter_info* out) {
  OLM_API_BEGIN
  require_arg(model, "model");
  olm::capi::require_result(out, "out");
  const auto& params = model->model->parameters();
  require(index < params.size(), ErrorCode::kInvalidArgument,
          "index: " + std::to_string(index) + " is out of range (the model has " +
              std::to_string(params.size()) + " parameters)");
  const auto& p = params[index];
  olm_parameter_info full{};
  full.struct_size = sizeof(olm_parameter_info);
  full.name = p.name.c_str();
  full.dtype = olm::capi::to_olm_dtype(p.dtype);
  full.ndim = p.shape.size();
  full.shape = p.shape.data();
  full.trainable = p.trainable ? 1 : 0;
  olm::capi::write_result(out, full);
  OLM_API_END
}

olm_error* olm_model_load_safetensors(olm_model* model, const char* path) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(path, "path");
  model->model->load_safetensors(path);
  OLM_API_END
}

olm_error* olm_model_save_safetensors(const olm_model* model, const char* path) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(path, "path");
  model->model->save_safetensors(path);
  OLM_API_END
}

void olm_model_free(olm_model* model) { delete model; }

}  // extern "C"
