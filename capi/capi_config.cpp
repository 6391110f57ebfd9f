#include "capi/capi.h"

using olm::capi::require_arg;


olm_buffer* olm::capi::make_buffer(const uint8_t* data, size_t size, bool nul_terminate) {
  auto buffer = std::make_unique<olm_buffer>();
  buffer->bytes.assign(data, data + size);
  if (nul_terminate) buffer->bytes.push_back(0);
  buffer->size = size;
  return buffer.release();
}

extern "C" {

olm_error* olm_config_from_preset(const char* name, int64_t vocab_size, olm_config** out) {
  OLM_API_BEGIN
  require_arg(name, "name");
  require_arg(out, "out");
  olm::require(vocab_size > 0, olm::ErrorCode::kInvalidArgument,
               "vocab_size must be positive (got " + std::to_string(vocab_size) + ")");
  *out = new olm_config{olm::preset(name, vocab_size)};
  OLM_API_END
}

olm_error* olm_config_from_json(const char* text, size_t len, olm_config** out) {
  OLM_API_BEGIN
  require_arg(text, "text");
  require_arg(out, "out");
  *out = new olm_config{olm::Config::from_json(std::string_view(text, len))};
  OLM_API_END
}

olm_error* olm_config_from_flatbuffer(const void* data, size_t len, olm_config** out) {
  OLM_API_BEGIN
  require_arg(data, "data");
  require_arg(out, "out");
  *out = new olm_config{olm::Config::from_flatbuffer(data, len)};
  OLM_API_END
}

olm_error* olm_config_to_json(const olm_config* config, olm_buffer** out) {
  OLM_API_BEGIN
  require_arg(config, "config");
  require_arg(out, "out");
  *out = olm::capi::json_buffer(config->config);
  OLM_API_END
}

olm_error* olm_config_to_flatbuffer(const olm_config* config, olm_buffer** out) {
  OLM_API_BEGIN
  require_arg(config, "config");
  require_arg(out, "out");
  *out = olm::capi::flatbuffer_buffer(config->config);
  OLM_API_END
}

olm_error* olm_config_num_params(const olm_config* config, int64_t* total, int64_t* non_embedding) {
  OLM_API_BEGIN
  require_arg(config, "config");
  const auto counts = config->config.num_params();
  if (total) *total = counts.total;
  if (non_embedding) *non_embedding = counts.non_embedding;
  OLM_API_END
}

olm_error* olm_config_num_flops_per_token(const olm_config* config, int64_t seq_len, int64_t* flops) {
  OLM_API_BEGIN
  require_arg(config, "config");
  require_arg(flops, "flops");
  *flops = config->config.num_flops_per_token(seq_len);
  OLM_API_END
}

olm_error* olm_config_num_active_params(const olm_config* config, int64_t* active,
                                        int64_t* active_non_embedding) {
  OLM_API_BEGIN
  require_arg(config, "config");
  const auto counts = config->config.num_params();
  if (active) *active = counts.active;
  if (active_non_embedding) *active_non_embedding = counts.active_non_embedding;
  OLM_API_END
}

void olm_config_free(olm_config* config) { delete config; }

}  // extern "C"
