// A model as the outside world sees it: a config, its transformer on a device, input checks
// on every entry point, and weights in and out of safetensors files with OLMo-core's names.
#pragma once
#include "core/config/config.h"
#include "core/nn/transformer.h"

namespace olm {

struct ModelOptions {
  std::optional<at::ScalarType> param_dtype;  // default: the config's dtype
  bool init_weights = true;
};

struct ParameterInfo {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  bool trainable = true;  // false when the config's freeze_params matches the name
};

class Model {
 public:
  // Throws kOutOfMemory when the parameters would not fit in the device's memory,
  // kDeviceUnavailable / kInvalidArgument for bad devices.
  Model(const Config& config, const std::string& device, const ModelOptions& options);

  // input_ids: int32/int64 (B, T), ids in [0, vocab). Returns float32 logits.
  // cu_doc_lens (optional): OLMo-core's cumulative document lengths over the flattened batch
  // (nn::document_positions); attention stays inside documents and RoPE restarts in each.
  // max_doc_len > 0 must bound the longest document.
  at::Tensor forward(const at::Tensor& input_ids, int64_t logits_to_keep,
                     const at::Tensor& cu_doc_lens = at::Tensor(), int64_t max_doc_len = 0) const;
  nn::LossOutput loss(const at::Tensor& input_ids, const at::Tensor& labels,
                      const nn::LossOptions& options, const at::Tensor& cu_doc_lens = at::Tensor(),
                      int64_t max_doc_len = 0) const;

  const Config& config() const { return config_; }
  const at::Device& device() const { return device_; }
  int64_t num_params() const;
  const std::vector<ParameterInfo>& parameters() const { return parameter_info_; }

  void load_safetensors(const std::string& path);
  void save_safetensors(const std::string& path) const;

  nn::Transformer& module() { return *module_; }

  // Throws kInvalidArgument naming `what` when the parameters hold no data (FSDP between steps).
  void require_materialized(const std::string& what) const;

  // `ids` on this model's device as int64, after checking dtype (int32/int64), shape
  // (batch, seq_len), both positive, and every value in [0, vocab) or equal to ignore_index;
  // Error(kInvalidArgument) naming `argument` otherwise.
  at::Tensor checked_tokens(const at::Tensor& ids, const char* argument,
                            std::optional<int64_t> ignore_index) const;

 private:
  at::Tensor checked_doc_positions(const at::Tensor& ids, const at::Tensor& cu_doc_lens,
                                   int64_t max_doc_len) const;

  Config config_;
  at::Device device_;
  std::unique_ptr<nn::Transformer> module_;
  std::vector<ParameterInfo> parameter_info_;
};

}  // namespace olm
