// Hugging Face model directories at the C boundary: olm_config_from_hf_dir,
// olm_model_from_hf_dir, olm_model_save_hf_dir.
#include "capi/capi.h"
#include "core/convert/hf_checkpoint.h"

using olm::ErrorCode;
using olm::require;
using olm::capi::init_options;
using olm::capi::read_options;
using olm::capi::require_arg;

namespace {

void load_defaults(olm_hf_load_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_hf_load_options);
  options->dtype = -1;
  options->device = nullptr;
}

void save_defaults(olm_hf_save_options* options) {
  if (!options) return;
  options->struct_size = sizeof(olm_hf_save_options);
  options->max_shard_bytes = int64_t{5} << 30;
  options->tokenizer_source_dir = nullptr;
  options->dtype = -1;
  options->bos_token_id = -1;
  options->eos_token_id = -1;
}

std::optional<at::ScalarType> model_dtype(olm_dtype dtype) {
  if (dtype == -1) return std::nullopt;
  require(dtype == OLM_DTYPE_FLOAT32 || dtype == OLM_DTYPE_BFLOAT16, ErrorCode::kInvalidArgument,
          "options.dtype must be -1, OLM_DTYPE_FLOAT32 or OLM_DTYPE_BFLOAT16 (got " + std::to_string(dtype) + ")");
  return olm::capi::to_scalar_type(dtype, "options.dtype");
}

std::optional<int64_t> token_id(int64_t id, const char* name) {
  require(id >= -1, ErrorCode::kInvalidArgument,
          std::string("options.") + name + " must be -1 (unknown) or a token id (got " + std::to_string(id) + ")");
  if (id == -1) return std::nullopt;
  return id;
}

}  // namespace

extern "C" {

void olm_hf_load_options_init_sized(olm_hf_load_options* options, size_t struct_size) {
  init_options(options, struct_size, load_defaults);
}

void olm_hf_save_options_init_sized(olm_hf_save_options* options, size_t struct_size) {
  init_options(options, struct_size, save_defaults);
}

olm_error* olm_config_from_hf_dir(const char* dir, const olm_hf_load_options* options, olm_config** out) {
  OLM_API_BEGIN
  require_arg(dir, "dir");
  require_arg(out, "out");
  const auto opts = read_options(options, load_defaults, "options");
  auto hf = olm::convert::read_hf_config(dir, model_dtype(opts.dtype));
  *out = new olm_config{std::move(hf.config)};
  OLM_API_END
}

olm_error* olm_model_from_hf_dir(const char* dir, const olm_hf_load_options* options, olm_model** out) {
  OLM_API_BEGIN
  require_arg(dir, "dir");
  require_arg(out, "out");
  const auto opts = read_options(options, load_defaults, "options");
  olm::convert::HfLoadOptions load;
  load.dtype = model_dtype(opts.dtype);
  if (opts.device) load.device = opts.device;
  auto loaded = olm::convert::load_hf_model(dir, load);
  *out = new olm_model{std::move(loaded.model)};
  OLM_API_END
}

olm_error* olm_model_save_hf_dir(const olm_model* model, const char* dir, const olm_hf_save_options* options) {
  OLM_API_BEGIN
  require_arg(model, "model");
  require_arg(dir, "dir");
  const auto opts = read_options(options, save_defaults, "options");
  olm::convert::HfSaveOptions save;
  require(opts.max_shard_bytes > 0, ErrorCode::kInvalidArgument,
          "options.max_shard_bytes must be positive (got " + std::to_string(opts.max_shard_bytes) + ")");
  save.max_shard_bytes = opts.max_shard_bytes;
  if (opts.tokenizer_source_dir) save.tokenizer_source_dir = opts.tokenizer_source_dir;
  if (opts.dtype != -1) {
    require(opts.dtype == OLM_DTYPE_FLOAT32 || opts.dtype == OLM_DTYPE_BFLOAT16 || opts.dtype == OLM_DTYPE_FLOAT16,
            ErrorCode::kInvalidArgument,
            "options.dtype must be -1, OLM_DTYPE_FLOAT32, OLM_DTYPE_BFLOAT16 or OLM_DTYPE_FLOAT16 (got " +
                std::to_string(opts.dtype) + ")");
    save.dtype = olm::capi::to_scalar_type(opts.dtype, "options.dtype");
  }
  save.bos_token_id = token_id(opts.bos_token_id, "bos_token_id");
  save.eos_token_id = token_id(opts.eos_token_id, "eos_token_id");
  olm::convert::save_hf_model(*model->model, dir, save);
  OLM_API_END
}

}  // extern "C"
