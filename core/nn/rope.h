// olmo_core.nn.rope.RotaryEmbedding: half-split rotation ("rotate_half"), sin/cos tables in
// float32 built as OLMo-core builds them, applied in float32 when full_precision is set.
#pragma once
#include <map>
#include <mutex>

#include "core/config/config.h"
#include "core/nn/module.h"

namespace olm::nn {

// Tables shared by every layer with the same RoPE settings (OLMo-core's BufferCache).
class BufferCache {
 public:
  at::Tensor get(const std::string& key) const {
    auto it = buffers_.find(key);
    return it == buffers_.end() ? at::Tensor() : it->second;
  }
  void put(const std::string& key, at::Tensor value) { buffers_[key] = std::move(value); }

 private:
  std::map<std::string, at::Tensor> buffers_;
};

class RotaryEmbedding {
 public:
  RotaryEmbedding(int64_t head_dim, const RoPESpec& spec, std::shared_ptr<BufferCache> cache);

  // (sin, cos), each (seq_len, rotary_dim) float32 on `device`, times the scaling's
  // attention rescale factor.
  std::pair<at::Tensor, at::Tensor> tables(int64_t seq_len, const at::Device& device) const;

  // q: (B, T, n_heads, head_dim), k: (B, T, n_kv_heads, head_dim); positions start at
  // start_pos. Returns rotated (q, k) in their input dtypes.
  std::pair<at::Tensor, at::Tensor> apply(const at::Tensor& q, const at::Tensor& k,
                                          int64_t start_pos = 0) const;

  // As apply(), each token at its own position: positions (B, T) int64 (OLMo-core's
  // intra-document RoPE, cu_doc_lens).
  std::pair<at::Tensor, at::Tensor> apply_at(const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& positions) const;

  static at::Tensor rotate_half(const at::Tensor& x);

  // The (possibly scaled) inverse frequencies and the attention rescale factor, as
  // olmo_core.nn.rope's compute_scaled_inv_freq returns them.
  std::pair<at::Tensor, double> inverse_frequencies(const at::Device& device) const;
  int64_t rotary_dim() const { return rotary_dim_; }

 private:
  at::Tensor rotate(const at::Tensor& t, const at::Tensor& sin, const at::Tensor& cos) const;

  int64_t dim_;
  int64_t rotary_dim_;
  RoPESpec spec_;
  std::shared_ptr<BufferCache> cache_;
};

}  // namespace olm::nn
