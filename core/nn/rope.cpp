#include "core/nn/rope.h"

#include <sstream>

namespace olm::nn {

RotaryEmbedding::RotaryEmbedding(int64_t head_dim, const RoPESpec& spec,
                                 std::shared_ptr<BufferCache> cache)
    : dim_(head_dim),
      rotary_dim_(static_cast<int64_t>(static_cast<double>(head_dim) * spec.partial_rotary_factor)),
      spec_(spec),
      cache_(std::move(cache)) {}

namespace {

// inv_freq = 1 / theta ** (arange(0, dim, 2) / dim), in float32 as OLMo-core computes it.
at::Tensor inverse_frequencies_for(double theta, int64_t dim, const at::Device& device) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  auto exponent = at::arange(0, dim, 2, f32) / static_cast<double>(dim);
  return at::reciprocal(at::pow(at::Scalar(theta), exponent));
}

}  // namespace

std::pair<at::Tensor, double> RotaryEmbedding::inverse_frequencies(const at::Device& device) const {
  const int64_t dim = rotary_dim_;
  if (!spec_.scaling) return {inverse_frequencies_for(spec_.theta, dim, device), 1.0};
  const auto& sc = *spec_.scaling;
  if (sc.name == "abf") return {inverse_frequencies_for(sc.new_theta, dim, device), sc.attention_rescale_factor};
  auto inv_freq = inverse_frequencies_for(spec_.theta, dim, device);
  if (sc.name == "pi") {
    if (sc.factor != 1.0) inv_freq = inv_freq / sc.factor;
    return {inv_freq, sc.attention_rescale_factor};
  }
  if (sc.name == "stepwise") {
    const double low_freq_factor = 1.0 / (1 - sc.low_freq_proportion);
    const double high_freq_factor = 1.0 / sc.high_freq_proportion;
    const double old = static_cast<double>(sc.old_context_len);
    const double low_band_threshold = old / low_freq_factor;
    const double high_band_threshold = old / high_freq_factor;
    // Python's `scalar / tensor` is reciprocal(tensor) * scalar; the same rounding here.
    auto wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
    inv_freq = at::where(wavelen > low_band_threshold, inv_freq / sc.factor, inv_freq);
    auto interp_weight = (at::reciprocal(wavelen) * old - low_freq_factor) / (high_freq_factor - low_freq_factor);
    auto smoothed = (1 - interp_weight) * inv_freq / sc.factor + interp_weight * inv_freq;
    auto mid_band = wavelen.le(low_band_threshold).logical_and(wavelen.ge(high_band_threshold));
    return {at::where(mid_band, smoothed, inv_freq), sc.attention_rescale_factor};
  }
  // yarn: blend interpolated and original frequencies along a linear ramp over dimensions.
  const auto interpolation = inv_freq / sc.factor;
  const int64_t half_dim = inv_freq.size(0);
  auto idx = at::arange(half_dim, at::TensorOptions().dtype(at::kFloat).device(device));
  auto dim_from_rot = [&](double n_rot) {
    return static_cast<double>(dim) * std::log(static_cast<double>(sc.old_context_len) / (n_rot * 2.0 * M_PI)) /
           (2.0 * std::log(spec_.theta));
  };
  const int64_t low = std::max<int64_t>(static_cast<int64_t>(std::floor(dim_from_rot(static_cast<double>(sc.beta_fast)))), 0);
  const int64_t high = std::min<int64_t>(static_cast<int64_t>(std::ceil(dim_from_rot(static_cast<double>(sc.beta_slow)))), half_dim - 1);
  // Python's max(int, 1e-3) keeps an int span whenever high > low.
  const at::Scalar span = high - low >= 1 ? at::Scalar(high - low) : at::Scalar(1e-3);
  auto ramp = ((idx - low) / span).clamp_(0, 1);
  inv_freq = interpolation * ramp + inv_freq * (1.0 - ramp);
  return {inv_freq, 0.1 * std::log(sc.factor) + 1.0};
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::tables(int64_t seq_len,
                                                          const at::Device& device) const {
  std::ostringstream key;
  key.precision(17);
  key << "rope_theta=" << spec_.theta << "_dim=" << rotary_dim_ << "_" << device.str();
  if (const auto& sc = spec_.scaling)
    key << "_scaling=" << sc->name << "," << sc->attention_rescale_factor << "," << sc->new_theta << ","
        << sc->factor << "," << sc->low_freq_proportion << "," << sc->high_freq_proportion << ","
        << sc->old_context_len << "," << sc->beta_fast << "," << sc->beta_slow;
  at::Tensor sin = cache_->get(key.str() + "_sin");
  at::Tensor cos = cache_->get(key.str() + "_cos");
  if (!sin.defined() || sin.size(0) < seq_len) {
    // The tables outlive this call: built under inference mode they would be inference
    // tensors, which autograd refuses to save when a later training step reuses them.
    c10::InferenceMode not_inference(false);
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    auto [inv_freq, rescale] = inverse_frequencies(device);
    auto seq = at::arange(seq_len, f32);
    auto freqs = at::outer(seq, inv_freq);
    auto positions = at::cat({freqs, freqs}, -1);
    sin = positions.sin();
    cos = positions.cos();
    if (rescale != 1.0) {
      // YaRN section 3.4: the attention temperature rides on the tables.
      sin = sin * rescale;
      cos = cos * rescale;
    }
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
  q_ = rotate(q_, sin_q, cos_q);
  k_ = rotate(k_, sin_k, cos_k);
  return {q_.to(q.scalar_type()), k_.to(k.scalar_type())};
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::apply_at(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& positions) const {
  const int64_t B = q.size(0), T = q.size(1);
  at::Tensor q_ = spec_.full_precision ? q.to(at::kFloat) : q;
  at::Tensor k_ = spec_.full_precision ? k.to(at::kFloat) : k;
  auto [sin, cos] = tables(T, q.device());
  // olmo_core.nn.rope: pos_sin.index_select(0, pos_idx.reshape(-1)).view(B, k_len, -1).
  auto idx = positions.to(q.device(), at::kLong).reshape({-1});
  auto sin_sel = sin.to(q_.scalar_type()).index_select(0, idx).view({B, T, 1, -1});
  auto cos_sel = cos.to(q_.scalar_type()).index_select(0, idx).view({B, T, 1, -1});
  q_ = rotate(q_, sin_sel, cos_sel);
  k_ = rotate(k_, sin_sel, cos_sel);
  return {q_.to(q.scalar_type()), k_.to(k.scalar_type())};
}

at::Tensor RotaryEmbedding::rotate(const at::Tensor& t, const at::Tensor& sin, const at::Tensor& cos) const {
  if (rotary_dim_ == t.size(-1)) return (t * cos + rotate_half(t) * sin).to(t.scalar_type());
  // Partial RoPE: rotate the leading rotary_dim dimensions, pass the rest through.
  auto rot = t.slice(-1, 0, rotary_dim_);
  auto rotated = (rot * cos + rotate_half(rot) * sin).to(t.scalar_type());
  return at::cat({rotated, t.slice(-1, rotary_dim_)}, -1);
}

}  // namespace olm::nn
