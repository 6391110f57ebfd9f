// Why the bits agree with RotaryEmbedding::rotate's ATen chain. The chain is products and sums
// of float32 values, each rounded once by its own kernel: y = fl(fl(x * cos) + fl(r * sin)),
// r = rotate(x) (a permutation with negations, exact), then fl(y * scale). ATen's add computes
// a + 1 * b, which is a + b whether or not its vectorised path uses an FMA for the alpha, so the
// result does not depend on the CPU capability ATen dispatches to. This file computes the same
// roundings in the same association; it is compiled with -ffp-contract=off, so the compiler
// fuses no product into a sum, and any vector width gives the same bits.
//
// The backward autograd runs for the chain: scale's MulBackward gives gy = fl(g * scale); add
// passes gy to both products; x * cos gives fl(gy * cos); r * sin gives fl(gy * sin), which
// cat/stack backward splits and neg backward negates (exact), and slice/select backward pads
// with zeros into full-size gradients of x. The engine sums the three gradients of x:
//   half-split:  gx[j] = gy[j] cos[j] + gy[j+h] sin[j+h],  gx[j+h] = gy[j+h] cos[j+h] - gy[j] sin[j]
//   interleaved: gx[2i] = gy[2i] cos[2i] + gy[2i+1] sin[2i+1],  gx[2i+1] = gy[2i+1] cos[2i+1] - gy[2i] sin[2i]
// Each position gets exactly two non-zero terms and a padding +0, so the summation order the
// engine picks cannot change the value, and the padding zero turns a -0 sum into +0: hence the
// "+ 0.0f" below. Partial RoPE's pass-through features get g + 0 the same way (cat backward).
#include "core/nn/fused_rope.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/Version.h>
#include <torch/csrc/autograd/custom_function.h>

#include "core/nn/cpu_fusion.h"

namespace olm::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A float32 (1 or B, T, 1, R) table: the row of (batch b, position t).
struct TableRows {
  const float* data = nullptr;
  int64_t batch_stride = 0;
  int64_t time_stride = 0;

  explicit TableRows(const at::Tensor& t) {
    if (!t.defined() || t.numel() == 0) return;
    data = t.data_ptr<float>();
    batch_stride = t.size(0) == 1 ? 0 : t.stride(0);
    time_stride = t.size(1) == 1 ? 0 : t.stride(1);
  }
  const float* row(int64_t b, int64_t t) const { return data + b * batch_stride + t * time_stride; }
};

struct Shape {
  int64_t B, T, H, D, R;
  const float* sign;  // interleaved pairs' signs, rotary_dim entries
};

template <bool kInterleaved, bool kScaled>
[[gnu::always_inline]] inline void rotate_row(const float* __restrict x, const float* __restrict sin,
                                              const float* __restrict cos, const float* __restrict scale,
                                              const float* __restrict sign, float* __restrict y, int64_t R, int64_t D) {
  if constexpr (kInterleaved) {
    // sign[j]: -1 for even j, +1 for odd j. As a runtime array, not as alternating "-" and
    // "+": GCC 12's vectoriser turns alternating products-and-sums into vfmaddsub even under
    // -ffp-contract=off. Multiplying by -1 is exact: fl(fl(x s) * -1) = fl((-x) s).
    for (int64_t j = 0; j < R; ++j) {
      float v = x[j] * cos[j] + (x[j ^ 1] * sin[j]) * sign[j];
      if constexpr (kScaled) v = v * scale[j];
      y[j] = v;
    }
  } else {
    const int64_t h = R / 2;
    for (int64_t j = 0; j < h; ++j) {
      float low = x[j] * cos[j] + (-x[j + h]) * sin[j];
      if constexpr (kScaled) low = low * scale[j];
      y[j] = low;
    }
    for (int64_t j = h; j < R; ++j) {
      float high = x[j] * cos[j] + x[j - h] * sin[j];
      if constexpr (kScaled) high = high * scale[j];
      y[j] = high;
    }
  }
  for (int64_t j = R; j < D; ++j) y[j] = x[j];
}

template <bool kInterleaved, bool kScaled>
[[gnu::always_inline]] inline void rotate_grad_row(const float* __restrict g, const float* __restrict sin,
                                                   const float* __restrict cos, const float* __restrict scale,
                                                   const float* __restrict sign, float* __restrict gx, int64_t R,
                                                   int64_t D) {
  auto gy = [&](int64_t j) {
    if constexpr (kScaled) return g[j] * scale[j];
    return g[j];
  };
  if constexpr (kInterleaved) {
    // As in rotate_row: the partner's term times a sign array, here +1 for even j, -1 for odd.
    for (int64_t j = 0; j < R; ++j) gx[j] = (gy(j) * cos[j] + (gy(j ^ 1) * sin[j ^ 1]) * sign[j]) + 0.0f;
  } else {
    const int64_t h = R / 2;
    for (int64_t j = 0; j < h; ++j) {
      const float low = gy(j), high = gy(j + h);
      gx[j] = (low * cos[j] + high * sin[j + h]) + 0.0f;
      gx[j + h] = (high * cos[j + h] + (-(low * sin[j]))) + 0.0f;
    }
  }
  for (int64_t j = R; j < D; ++j) gx[j] = g[j] + 0.0f;
}

// Rows (b, t, h) of in (unit stride along D, any other strides) to contiguous out. The row
// kernels are inlined into one loop per instruction set so the compiler vectorises them as
// wide as the machine allows; the bits are the same at every width.
template <bool kBackward, bool kInterleaved, bool kScaled>
[[gnu::always_inline]] inline void rotate_rows(const at::Tensor& in, const TableRows& sin, const TableRows& cos,
                                               const TableRows& scale, float* out, const Shape& s,
                                               int64_t begin, int64_t end) {
  const float* in_data = in.data_ptr<float>();
  const int64_t sb = in.stride(0), st = in.stride(1), sh = in.stride(2);
  for (int64_t n = begin; n < end; ++n) {
    const int64_t h = n % s.H, t = (n / s.H) % s.T, b = n / (s.H * s.T);
    const float* row_in = in_data + b * sb + t * st + h * sh;
    const float* scale_row = kScaled ? scale.row(b, t) : nullptr;
    float* row_out = out + n * s.D;
    if constexpr (kBackward)
      rotate_grad_row<kInterleaved, kScaled>(row_in, sin.row(b, t), cos.row(b, t), scale_row, s.sign, row_out, s.R, s.D);
    else
      rotate_row<kInterleaved, kScaled>(row_in, sin.row(b, t), cos.row(b, t), scale_row, s.sign, row_out, s.R, s.D);
  }
}

using RowsFn = void (*)(const at::Tensor&, const TableRows&, const TableRows&, const TableRows&, float*,
                        const Shape&, int64_t, int64_t);

#if defined(__x86_64__)
template <bool kBackward, bool kInterleaved, bool kScaled>
[[gnu::target("avx512f,avx512vl,avx512bw,avx512dq")]] void rotate_rows_avx512(
    const at::Tensor& in, const TableRows& sin, const TableRows& cos, const TableRows& scale, float* out,
    const Shape& s, int64_t begin, int64_t end) {
  rotate_rows<kBackward, kInterleaved, kScaled>(in, sin, cos, scale, out, s, begin, end);
}

template <bool kBackward, bool kInterleaved, bool kScaled>
[[gnu::target("avx2")]] void rotate_rows_avx2(const at::Tensor& in, const TableRows& sin, const TableRows& cos,
                                              const TableRows& scale, float* out, const Shape& s, int64_t begin,
                                              int64_t end) {
  rotate_rows<kBackward, kInterleaved, kScaled>(in, sin, cos, scale, out, s, begin, end);
}
#endif

template <bool kBackward, bool kInterleaved, bool kScaled>
void rotate_rows_baseline(const at::Tensor& in, const TableRows& sin, const TableRows& cos, const TableRows& scale,
                          float* out, const Shape& s, int64_t begin, int64_t end) {
  rotate_rows<kBackward, kInterleaved, kScaled>(in, sin, cos, scale, out, s, begin, end);
}

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The instruction set ATen itself runs at (ATEN_CPU_CAPABILITY caps it, read once per
// process), so a run forced to a narrower one exercises that build of the loops too.
Isa aten_isa() {
  static const Isa isa = [] {
    const std::string capability = at::get_cpu_capability();
    return capability == "AVX512" ? Isa::kAvx512 : capability == "AVX2" ? Isa::kAvx2 : Isa::kBaseline;
  }();
  return isa;
}

template <bool kBackward, bool kInterleaved, bool kScaled>
RowsFn rows_for_capability() {
#if defined(__x86_64__)
  switch (aten_isa()) {
    case Isa::kAvx512:
      return rotate_rows_avx512<kBackward, kInterleaved, kScaled>;
    case Isa::kAvx2:
      return rotate_rows_avx2<kBackward, kInterleaved, kScaled>;
    case Isa::kBaseline:
      break;
  }
#endif
  return rotate_rows_baseline<kBackward, kInterleaved, kScaled>;
}

template <bool kBackward>
RowsFn rows_for(bool interleaved, bool scaled) {
  if (interleaved)
    return scaled ? rows_for_capability<kBackward, true, true>() : rows_for_capability<kBackward, true, false>();
  return scaled ? rows_for_capability<kBackward, false, true>() : rows_for_capability<kBackward, false, false>();
}

// Autograd functions take only defined tensors: an empty tensor stands for "no scale".
bool present(const at::Tensor& t) { return t.defined() && t.numel() > 0; }

// in: (B, T, H, D) with unit stride along D; returns a contiguous (B, T, H, D) tensor.
template <bool kBackward>
at::Tensor run_rows(at::Tensor in, const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& scale,
                    int64_t rotary_dim, bool interleaved) {
  if (in.stride(3) != 1) in = in.contiguous();
  // Forward: the even feature takes -x[odd] sin; backward: the odd one takes -gy[even] sin.
  std::vector<float> sign(static_cast<size_t>(rotary_dim));
  for (int64_t j = 0; j < rotary_dim; ++j) sign[static_cast<size_t>(j)] = (j % 2 == 0) == kBackward ? 1.0f : -1.0f;
  const Shape s{in.size(0), in.size(1), in.size(2), in.size(3), rotary_dim, sign.data()};
  auto out = at::empty(in.sizes(), in.options().memory_format(at::MemoryFormat::Contiguous));
  const TableRows sin_rows(sin), cos_rows(cos), scale_rows(scale);
  const RowsFn rows = rows_for<kBackward>(interleaved, present(scale));
  float* out_data = out.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, s.D));
  at::parallel_for(0, s.B * s.T * s.H, grain, [&](int64_t begin, int64_t end) {
    rows(in, sin_rows, cos_rows, scale_rows, out_data, s, begin, end);
  });
  return out;
}

// The backward as differentiable ATen ops, for a double backward (create_graph); the same
// roundings as the fused loop.
at::Tensor rope_grad_by_aten(const at::Tensor& g, const at::Tensor& sin, const at::Tensor& cos,
                             const at::Tensor& scale, int64_t rotary_dim, bool interleaved) {
  const int64_t D = g.size(-1);
  auto g_rot = rotary_dim == D ? g : g.slice(-1, 0, rotary_dim);
  auto gy = present(scale) ? g_rot * scale : g_rot;
  auto by_sin = gy * sin;
  at::Tensor moved;
  if (interleaved) {
    auto pairs = by_sin.unflatten(-1, {-1, 2});
    moved = at::stack({pairs.select(-1, 1), -pairs.select(-1, 0)}, -1).flatten(-2);
  } else {
    const int64_t h = rotary_dim / 2;
    moved = at::cat({by_sin.slice(-1, h), -by_sin.slice(-1, 0, h)}, -1);
  }
  auto gx = gy * cos + moved + 0.0;
  if (rotary_dim == D) return gx;
  return at::cat({gx, g.slice(-1, rotary_dim) + 0.0}, -1);
}

struct FusedRope : public torch::autograd::Function<FusedRope> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& sin, const at::Tensor& cos,
                            const at::Tensor& scale, int64_t rotary_dim, bool interleaved) {
    ctx->save_for_backward({sin, cos, scale});
    ctx->saved_data["rotary_dim"] = rotary_dim;
    ctx->saved_data["interleaved"] = interleaved;
    return run_rows<false>(x, sin, cos, scale, rotary_dim, interleaved);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &sin = saved[0], &cos = saved[1], &scale = saved[2];
    const int64_t rotary_dim = ctx->saved_data["rotary_dim"].toInt();
    const bool interleaved = ctx->saved_data["interleaved"].toBool();
    const auto& g = grads[0];
    at::Tensor gx;
    if (g.defined())
      gx = at::GradMode::is_enabled() ? rope_grad_by_aten(g, sin, cos, scale, rotary_dim, interleaved)
                                      : run_rows<true>(g, sin, cos, scale, rotary_dim, interleaved);
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

bool is_table(const at::Tensor& t, const at::Tensor& x, int64_t rotary_dim) {
  return t.device().is_cpu() && t.scalar_type() == at::kFloat && !t.requires_grad() && t.dim() == 4 &&
         (t.size(0) == 1 || t.size(0) == x.size(0)) && t.size(1) == x.size(1) && t.size(2) == 1 &&
         t.size(3) == rotary_dim && t.stride(3) == 1;
}

}  // namespace

bool fused_rope_applies(const at::Tensor& x, const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& scale,
                        int64_t rotary_dim) {
  // Under CPU autocast the chain's ops run as they are (mul and add have no autocast policy),
  // but the fused kernels stay out of mixed-precision runs rather than rely on that.
  if (!cpu_fusion_enabled() || at::autocast::is_autocast_enabled(at::kCPU)) return false;
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() != 4 || !x.is_contiguous()) return false;
  // An odd rotary_dim has no pairing (the chain's tables do not even broadcast): ATen raises.
  if (rotary_dim <= 0 || rotary_dim % 2 != 0 || rotary_dim > x.size(3)) return false;
  return is_table(sin, x, rotary_dim) && is_table(cos, x, rotary_dim) &&
         (!scale.defined() || is_table(scale, x, rotary_dim));
}

at::Tensor fused_rope(const at::Tensor& x, const at::Tensor& sin, const at::Tensor& cos, const at::Tensor& scale,
                      int64_t rotary_dim, bool interleaved) {
  const auto scale_or_empty = scale.defined() ? scale : at::empty({0}, x.options());
  return FusedRope::apply(x, sin, cos, scale_or_empty, rotary_dim, interleaved);
}

}  // namespace olm::nn
