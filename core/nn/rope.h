// olmo_core.nn.rope.RotaryEmbedding: half-split rotation ("rotate_half"), sin/cos tables in
// float32 built as OLMo-core builds them, applied in float32 when full_precision is set.
// OLM's variants: interleaved pairs (2i, 2i+1), dynamic NTK scaling, and xPos (Sun et al.).
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
  // attention rescale factor; column j holds pair j mod (rotary_dim / 2)'s angle (half-split)
  // or pair j / 2's (interleaved). With dynamic NTK, seq_len also picks the base.
  std::pair<at::Tensor, at::Tensor> tables(int64_t seq_len, const at::Device& device) const;

  // xPos: zeta_column ^ (sign * position / scale_base), float32, shape positions.shape +
  // (rotary_dim,); sign +1 for queries, -1 for keys.
  at::Tensor xpos_scales(const at::Tensor& positions, double sign) const;

  // q: (B, T, n_heads, head_dim), k: (B, T, n_kv_heads, head_dim); positions start at
  // start_pos. Returns rotated (q, k) in their input dtypes.
  std::pair<at::Tensor, at::Tensor> apply(const at::Tensor& q, const at::Tensor& k,
                                          int64_t start_pos = 0) const;

  // As apply(), each token at its own position: positions (B, T) int64 (OLMo-core's
  // intra-document RoPE, cu_doc_lens).
  std::pair<at::Tensor, at::Tensor> apply_at(const at::Tensor& q, const at::Tensor& k,
                                             const at::Tensor& positions) const;

  static at::Tensor rotate_half(const at::Tensor& x);
  static at::Tensor rotate_every_two(const at::Tensor& x);

  // The (possibly scaled) inverse frequencies and the attention rescale factor, as
  // olmo_core.nn.rope's compute_scaled_inv_freq returns them; dynamic NTK needs the sequence
  // length the tables cover.
  std::pair<at::Tensor, double> inverse_frequencies(const at::Device& device, int64_t seq_len = 0) const;
  // Dynamic NTK's base for seq_len positions (theta itself up to old_context_len).
  double dynamic_theta(int64_t seq_len) const;
  int64_t rotary_dim() const { return rotary_dim_; }

 private:
  at::Tensor rotate(const at::Tensor& t, const at::Tensor& sin, const at::Tensor& cos,
                    const at::Tensor& scale = at::Tensor()) const;

  int64_t dim_;
  int64_t rotary_dim_;
  RoPESpec spec_;
  std::shared_ptr<BufferCache> cache_;
};

}  // namespace olm::nn
