#include "core/nn/rope.h"

#include <sstream>

#include "core/nn/fused_rope.h"

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

// Hugging Face's DynamicNTKScalingRotaryEmbedding base for sequence lengths (int64) beyond
// old_context_len, theta * (factor * len / old - (factor - 1)) ^ (dim / (dim - 2)), computed as
// transformers does: float32 tensor arithmetic on the integer length, so the tables equal its
// bit for bit.
at::Tensor dynamic_ntk_base(const at::Tensor& lengths, const RoPEScalingSpec& sc, double theta, int64_t rotary_dim) {
  const double dim = static_cast<double>(rotary_dim);
  return ((lengths * sc.factor) / static_cast<double>(sc.old_context_len) - (sc.factor - 1)).pow(dim / (dim - 2)) * theta;
}

}  // namespace

double RotaryEmbedding::dynamic_theta(int64_t seq_len) const {
  const auto& sc = *spec_.scaling;
  if (seq_len <= sc.old_context_len) return spec_.theta;
  // OLM's dynamic-NTK: a larger base (a float32 value, as transformers computes it).
  const auto len = at::scalar_tensor(seq_len, at::TensorOptions().dtype(at::kLong));
  return static_cast<double>(dynamic_ntk_base(len, sc, spec_.theta, rotary_dim_).to(at::kFloat).item<float>());
}

std::pair<at::Tensor, double> RotaryEmbedding::inverse_frequencies(const at::Device& device, int64_t seq_len) const {
  const int64_t dim = rotary_dim_;
  if (!spec_.scaling) return {inverse_frequencies_for(spec_.theta, dim, device), 1.0};
  const auto& sc = *spec_.scaling;
  if (sc.name == "dynamic_ntk") return {inverse_frequencies_for(dynamic_theta(seq_len), dim, device), 1.0};
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
  if (spec_.interleaved) key << "_interleaved";
  // Dynamic NTK beyond the old context: a table for exactly this length (its base depends on it).
  const bool dynamic = spec_.scaling && spec_.scaling->name == "dynamic_ntk" && seq_len > spec_.scaling->old_context_len;
  if (dynamic) key << "_dynamic_len=" << seq_len;
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
    auto [inv_freq, rescale] = inverse_frequencies(device, seq_len);
    auto seq = at::arange(seq_len, f32);
    auto freqs = at::outer(seq, inv_freq);
    auto positions = spec_.interleaved ? at::stack({freqs, freqs}, -1).flatten(-2) : at::cat({freqs, freqs}, -1);
    sin = positions.sin();
    cos = positions.cos();
    if (rescale != 1.0) {
      // YaRN section 3.4: the attention temperature rides on the tables.
      sin = sin * rescale;
      cos = cos * rescale;
    }
    // A dynamic table serves one length only: caching one per decoding step would pile up.
    if (!dynamic) {
      cache_->put(key.str() + "_sin", sin);
      cache_->put(key.str() + "_cos", cos);
    }
  }
  return {sin.slice(0, 0, seq_len), cos.slice(0, 0, seq_len)};
}

at::Tensor RotaryEmbedding::rotate_every_two(const at::Tensor& x) {
  // (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)
  auto pairs = x.unflatten(-1, {-1, 2});
  return at::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1).flatten(-2);
}

at::Tensor RotaryEmbedding::xpos_scales(const at::Tensor& positions, double sign) const {
  const auto f32 = positions.options().dtype(at::kFloat);
  // zeta_i = (2i / d + gamma) / (1 + gamma), gamma = 0.4 (torchscale's XPOS), per column.
  auto pair = at::arange(rotary_dim_ / 2, f32);
  auto zeta = (pair * 2.0 / static_cast<double>(rotary_dim_) + 0.4) / 1.4;
  zeta = spec_.interleaved ? at::stack({zeta, zeta}, -1).flatten(-2) : at::cat({zeta, zeta}, -1);
  auto exponent = positions.to(at::kFloat).unsqueeze(-1) * (sign / *spec_.xpos_scale_base);
  return at::pow(zeta, exponent);
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
  at::Tensor scale_q, scale_k;
  if (spec_.xpos_scale_base) {
    const auto i64 = at::TensorOptions().dtype(at::kLong).device(q.device());
    scale_q = broadcast(xpos_scales(at::arange(q_start, q_start + q_len, i64), 1.0)).to(q_.scalar_type());
    scale_k = broadcast(xpos_scales(at::arange(start_pos, start_pos + k_len, i64), -1.0)).to(k_.scalar_type());
  }
  q_ = rotate(q_, sin_q, cos_q, scale_q);
  k_ = rotate(k_, sin_k, cos_k, scale_k);
  return {q_.to(q.scalar_type()), k_.to(k.scalar_type())};
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::apply_at(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& positions) const {
  const int64_t B = q.size(0), T = q.size(1);
  at::Tensor q_ = spec_.full_precision ? q.to(at::kFloat) : q;
  at::Tensor k_ = spec_.full_precision ? k.to(at::kFloat) : k;
  auto idx = positions.to(q.device(), at::kLong).reshape({-1});
  at::Tensor sin_sel, cos_sel;
  if (spec_.scaling && spec_.scaling->name == "dynamic_ntk") {
    // Dynamic NTK: every document gets the base of its own length, as a separate forward over
    // it would; the angles are built per token the way tables() builds them.
    const auto& sc = *spec_.scaling;
    auto doc_id = idx.eq(0).cumsum(0) - 1;
    auto lengths = at::bincount(doc_id).index_select(0, doc_id);
    const double dim = static_cast<double>(rotary_dim_);
    auto grown = dynamic_ntk_base(lengths, sc, spec_.theta, rotary_dim_).to(at::kFloat);
    auto theta = at::where(lengths.gt(sc.old_context_len), grown, at::full_like(grown, spec_.theta));
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(q.device());
    auto exponent = at::arange(0, rotary_dim_, 2, f32) / dim;
    auto inv_freq = at::reciprocal(at::pow(theta.to(at::kFloat).unsqueeze(1), exponent.unsqueeze(0)));
    auto freqs = idx.to(at::kFloat).unsqueeze(1) * inv_freq;
    auto angles = spec_.interleaved ? at::stack({freqs, freqs}, -1).flatten(-2) : at::cat({freqs, freqs}, -1);
    sin_sel = angles.sin().to(q_.scalar_type()).view({B, T, 1, -1});
    cos_sel = angles.cos().to(q_.scalar_type()).view({B, T, 1, -1});
  } else {
    // Under context parallelism T is this rank's share, and its tokens' positions reach into
    // the whole sequence: the table must cover the largest position, not just T.
    const int64_t rows = T > 0 ? std::max(T, idx.max().item<int64_t>() + 1) : T;
    auto [sin, cos] = tables(rows, q.device());
    // olmo_core.nn.rope: pos_sin.index_select(0, pos_idx.reshape(-1)).view(B, k_len, -1).
    sin_sel = sin.to(q_.scalar_type()).index_select(0, idx).view({B, T, 1, -1});
    cos_sel = cos.to(q_.scalar_type()).index_select(0, idx).view({B, T, 1, -1});
  }
  at::Tensor scale_q, scale_k;
  if (spec_.xpos_scale_base) {
    scale_q = xpos_scales(idx, 1.0).view({B, T, 1, -1}).to(q_.scalar_type());
    scale_k = xpos_scales(idx, -1.0).view({B, T, 1, -1}).to(k_.scalar_type());
  }
  q_ = rotate(q_, sin_sel, cos_sel, scale_q);
  k_ = rotate(k_, sin_sel, cos_sel, scale_k);
  return {q_.to(q.scalar_type()), k_.to(k.scalar_type())};
}

at::Tensor RotaryEmbedding::rotate(const at::Tensor& t, const at::Tensor& sin, const at::Tensor& cos,
                                   const at::Tensor& scale) const {
  if (fused_rope_applies(t, sin, cos, scale, rotary_dim_))
    return fused_rope(t, sin, cos, scale, rotary_dim_, spec_.interleaved);
  auto turn = [&](const at::Tensor& x) {
    auto y = x * cos + (spec_.interleaved ? rotate_every_two(x) : rotate_half(x)) * sin;
    return (scale.defined() ? y * scale : y).to(t.scalar_type());
  };
  if (rotary_dim_ == t.size(-1)) return turn(t);
  // Partial RoPE: rotate the leading rotary_dim dimensions, pass the rest through.
  auto rot = t.slice(-1, 0, rotary_dim_);
  auto rotated = turn(rot);
  return at::cat({rotated, t.slice(-1, rotary_dim_)}, -1);
}

}  // namespace olm::nn
