#include "core/nn/rope.h"

#include <sstream>

namespace olm::nn {

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, const RoPESpec& spec,
                                 std::shared_ptr<BufferCache> cache)
    : dim_(head_dim), spec_(spec), cache_(std::move(cache)) {}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::tables(int64_t seq_len,
                                                          const at::Device& device) const {
  std::ostringstream key;
  key.precision(17);
  key << "rope_theta=" << spec_.theta << "_dim=" << dim_ << "_" << device.str();
  at::Tensor sin = cache_->get(key.str() + "_sin");
  at::Tensor cos = cache_->get(key.str() + "_cos");
  if (!sin.defined() || sin.size(0) < seq_len) {
    // inv_freq = 1 / theta ** (arange(0, dim, 2) / dim), all in float32, as OLMo-core.
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    auto exponent = at::arange(0, dim_, 2, f32) / static_cast<double>(dim_);
    auto inv_freq = at::reciprocal(at::pow(at::Scalar(spec_.theta), exponent));
    auto seq = at::arange(seq_len, f32);
    auto freqs = at::outer(seq, inv_freq);
    auto positions = at::cat({freqs, freqs}, -1);
    sin = positions.sin();
    cos = positions.cos();
    cache_->put(key.str() + "_sin", sin);
    cache_->put(key.str() + "_cos", cos);
  }
  return {sin.slice(0, 0, seq_len), cos.slice(0, 0, seq_len)};
}

at::Tensor RotaryEmbedding::rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.slice(-1, 0, half);
  auto x2 = x.slice(-1, half);
  return at::cat({-x2, x1}, -1);
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::apply(const at::Tensor& q, const at::Tensor& k,
                                                         int64_t start_pos) const {
  const int64_t q_len = q.size(1);
  const int64_t k_len = k.size(1);
  at::Tensor q_ = spec_.full_precision ? q.to(at::kFloat) : q;
  at::Tensor k_ = spec_.full_precision ? k.to(at::kFloat) : k;
  auto [sin, cos] = tables(start_pos + k_len, q.device());
  sin = sin.to(q_.scalar_type());
  cos = cos.to(q_.scalar_type());
  // Queries sit at the end of the key window (OLMo-core: q_abs_start = k_len - q_len).
  const int64_t q_start = start_pos + k_len - q_len;
  auto broadcast = [](const at::Tensor& t) { return t.unsqueeze(0).unsqueeze(2); };  // (1,T,1,D)
  auto sin_q = broadcast(sin.slice(0, q_start, q_start + q_len));
  auto cos_q = broadcast(cos.slice(0, q_start, q_start + q_len));
  auto sin_k = broadcast(sin.slice(0, start_pos, start_pos + k_len));
  auto cos_k = broadcast(cos.slice(0, start_pos, start_pos + k_len));
  q_ = (q_ * cos_q + rotate_half(q_) * sin_q).to(q_.scalar_type());
  k_ = (k_ * cos_k + rotate_half(k_) * sin_k).to(k_.scalar_type());
  return {q_.to(q.scalar_type()), k_.to(k.scalar_type())};
}

}  // namespace olm::nn
