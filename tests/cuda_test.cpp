// GPU checks; each skips cleanly when this process has no CUDA device (CI never has one).
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include "core/device.h"
#include "core/generate.h"
#include "core/train/trainer.h"
#include "kernels/rms_norm.h"

namespace {

#define SKIP_WITHOUT_CUDA()                                                 \
  if (olm::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device in this process"

olm::Config small_config() {
  return olm::Config::from_json(R"({"d_model": 64, "vocab_size": 97, "n_layers": 2,
    "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false,
      "rope": {"theta": 500000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
      "feed_forward": {"hidden_size": 192, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

// The fused kernel against the ATen definition on fresh random inputs of awkward shapes,
// with the output poisoned first so an unwritten element shows. float32 sums of up to 4097
// squares in a different order: relative error ~1e-6.
TEST(Cuda, RmsNormKernelMatchesReference) {
  SKIP_WITHOUT_CUDA();
  ASSERT_TRUE(olm::kernels::rms_norm_has_cuda_kernel());
  at::NoGradGuard no_grad;
  for (auto shape : std::vector<std::vector<int64_t>>{{1, 1}, {3, 7}, {5, 33, 256}, {2, 4097}, {1024, 64}}) {
    auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
    auto x = at::randn(shape, opts) * 3 + 0.5;
    auto w = at::randn({shape.back()}, opts);
    auto y = olm::kernels::rms_norm(x, w, 1e-6);
    auto ref = olm::kernels::rms_norm_reference(x.to(at::kDouble), w.to(at::kDouble), 1e-6);
    const double rel = ((y.to(at::kDouble) - ref).norm() / ref.norm()).item<double>();
    EXPECT_LT(rel, 1e-6) << "shape " << at::IntArrayRef(shape);
    EXPECT_TRUE(at::isfinite(y).all().item<bool>());
    auto y_noweight = olm::kernels::rms_norm(x, std::nullopt, 1e-6);
    auto ref_noweight = olm::kernels::rms_norm_reference(x.to(at::kDouble), std::nullopt, 1e-6);
    EXPECT_LT(((y_noweight.to(at::kDouble) - ref_noweight).norm() / ref_noweight.norm()).item<double>(), 1e-6);
  }
}

// The same weights on CPU and GPU give the same logits up to float32 reduction-order
// differences (cuBLAS vs MKL, flash/efficient SDPA vs CPU): 1e-4 absolute.
TEST(Cuda, ForwardMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  olm::Model cpu(small_config(), "cpu", {});
  olm::Model gpu(small_config(), "cuda", {});
  at::Generator gen = at::detail::createCPUGenerator(5);
  auto ids = at::randint(97, {3, 40}, gen, at::kLong);
  auto a = cpu.forward(ids, 0);
  auto b = gpu.forward(ids, 0).cpu();
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-4);
  olm::Model bf16(small_config(), "cuda", {at::kBFloat16, true});
  auto c = bf16.forward(ids, 0).cpu();
  EXPECT_TRUE(at::isfinite(c).all().item<bool>());
}

olm::Config catalogue_config(const std::string& attention_extra, const std::string& rope) {
  return olm::Config::from_json(R"({"d_model": 64, "vocab_size": 97, "n_layers": 2,
    "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false,
      "rope": )" + rope + R"(, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false})" + attention_extra + R"(},
      "feed_forward": {"hidden_size": 192, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

// The catalogue's mask and bias paths on the GPU: intra-document masking (boolean (B,1,T,S)
// masks into SDPA), ALiBi (an additive float mask), the explicit softmax with soft-capping,
// and xPos/interleaved RoPE, each against the CPU (same weights, 1e-4 as above), in float32
// and in bfloat16 (finite only). The configs are built before the skip, so they are checked
// everywhere.
TEST(Cuda, CatalogueMatchesCpu) {
  const std::string rope = R"({"theta": 500000})";
  const std::vector<olm::Config> configs = {
      catalogue_config("", rope), catalogue_config(R"(, "alibi": true)", rope),
      catalogue_config(R"(, "backend": "explicit", "softcap": 5.0)", rope),
      catalogue_config("", R"({"theta": 10000, "interleaved": true, "xpos_scale_base": 64})")};
  SKIP_WITHOUT_CUDA();
  const auto cu = at::tensor(std::vector<int32_t>{0, 5, 16, 40, 41, 80, 97, 120}, at::kInt);
  for (size_t i = 0; i < configs.size(); ++i) {
    olm::Model cpu(configs[i], "cpu", {});
    olm::Model gpu(configs[i], "cuda", {});
    at::Generator gen = at::detail::createCPUGenerator(11);
    auto ids = at::randint(97, {3, 40}, gen, at::kLong);
    for (bool docs : {false, true}) {
      auto a = cpu.forward(ids, 0, docs ? cu : at::Tensor());
      auto b = gpu.forward(ids, 0, docs ? cu : at::Tensor()).cpu();
      EXPECT_LT((a - b).abs().max().item<double>(), 1e-4) << "config " << i << " documents " << docs;
    }
    olm::Model bf16(configs[i], "cuda", {at::kBFloat16, true});
    EXPECT_TRUE(at::isfinite(bf16.forward(ids, 0, cu).cpu()).all().item<bool>()) << "config " << i;
  }
}

TEST(Cuda, TrainingStepsMatchCpu) {
  SKIP_WITHOUT_CUDA();
  const std::string train = R"({"sequence_length": 16, "global_batch_size": 64, "rank_microbatch_size": 32,
    "max_steps": 5, "max_grad_norm": 1.0, "optimizer": {"name": "adamw", "lr": 0.003}})";
  auto config = olm::train::TrainConfig::from_json(train);
  auto cpu_model = std::make_shared<olm::Model>(small_config(), "cpu", olm::ModelOptions{});
  auto gpu_model = std::make_shared<olm::Model>(small_config(), "cuda", olm::ModelOptions{});
  olm::train::Trainer cpu(cpu_model, config), gpu(gpu_model, config);
  at::Generator gen = at::detail::createCPUGenerator(9);
  for (int i = 0; i < 5; ++i) {
    auto ids = at::randint(97, {4, 16}, gen, at::kLong);
    const auto a = cpu.train_batch(ids), b = gpu.train_batch(ids);
    EXPECT_NEAR(a.loss, b.loss, 1e-4 * std::abs(a.loss)) << "step " << i;
  }
}

TEST(Cuda, GenerationWithCacheMatchesWithout) {
  SKIP_WITHOUT_CUDA();
  olm::Model model(small_config(), "cuda", {});
  olm::GenerateOptions o;
  o.temperature = 0;
  o.max_new_tokens = 16;
  auto prompt = at::tensor(std::vector<int64_t>{1, 2, 3}, at::kLong);
  auto a = olm::generate(model, prompt, o);
  o.use_kv_cache = false;
  EXPECT_EQ(a, olm::generate(model, prompt, o));
}

}  // namespace
