// core/train/trainer.cpp: precision, activation checkpointing, parameter groups and the skip-step rule.
// (Optimizer and scheduler values against OLMo-core's own classes are in parity/train_parity.py.)
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/run/fit.h"
#include "core/train/evaluate.h"
#include "test_util.h"
#include "core/train/trainer.h"

namespace {

using olm::testing::expect_error;

olm::Config config() {
  return olm::Config::from_json(R"({"d_model": 32, "vocab_size": 50, "n_layers": 3,
    "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false,
      "rope": {"theta": 10000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
      "feed_forward": {"hidden_size": 64, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

// SGD at lr 0.5 unless `extra` names another optimizer.
olm::train::TrainConfig train_config(const std::string& extra) {
  const bool own_optimizer = extra.find("\"optimizer\"") != std::string::npos;
  return olm::train::TrainConfig::from_json(R"({"sequence_length": 8, "global_batch_size": 32,
      "rank_microbatch_size": 16, "max_steps": 10)" +
      std::string(own_optimizer ? "" : R"(, "optimizer": {"name": "sgd", "lr": 0.5})") + extra + "}");
}

at::Tensor batch(uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  return at::randint(50, {4, 8}, g, at::kLong);
}

std::map<std::string, at::Tensor> weights(olm::Model& m) {
  std::map<std::string, at::Tensor> out;
  for (auto& p : m.module().named_parameters()) out[p.name] = p.tensor->detach().clone();
  return out;
}

double max_weight_diff(olm::Model& a, olm::Model& b) {
  auto wa = weights(a), wb = weights(b);
  double d = 0;
  for (auto& [name, t] : wa) d = std::max(d, (t - wb[name]).abs().max().item<double>());
  return d;
}

// Recomputing blocks in backward gives the same gradients: with SGD at lr 0.5 the weight
// change is the gradient, so the weights after two steps agree to float32 rounding.
TEST(Training, ActivationCheckpointingKeepsGradients) {
  for (const std::string& ac : {R"(, "ac_mode": "full")", R"(, "ac_mode": "selected_blocks", "ac_block_interval": 2)"}) {
    auto plain = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
    auto checkpointed = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
    olm::train::Trainer a(plain, train_config("")), b(checkpointed, train_config(ac));
    for (uint64_t s = 0; s < 2; ++s) {
      const auto ma = a.train_batch(batch(s)), mb = b.train_batch(batch(s));
      EXPECT_NEAR(ma.loss, mb.loss, 1e-6 * std::abs(ma.loss));
      EXPECT_NEAR(ma.grad_norm, mb.grad_norm, 1e-5 * ma.grad_norm);
    }
    EXPECT_LT(max_weight_diff(*plain, *checkpointed), 1e-6) << ac;
  }
}

// Inference first (forward, loss, generate run under inference mode) must not poison the
// cached RoPE tables that a later training step saves for backward; a longer sequence than
// training uses makes the forward grow the tables.
TEST(Training, InferenceBeforeTrainingLeavesTrainingIntact) {
  auto warmed = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  auto fresh = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  auto g = at::detail::createCPUGenerator(7);
  warmed->forward(at::randint(50, {1, 16}, g, at::kLong), 0);
  olm::train::Trainer a(warmed, train_config("")), b(fresh, train_config(""));
  for (uint64_t s = 0; s < 2; ++s) {
    const auto ma = a.train_batch(batch(s)), mb = b.train_batch(batch(s));
    EXPECT_EQ(ma.loss, mb.loss);
    warmed->forward(at::randint(50, {1, 24}, g, at::kLong), 0);
  }
  EXPECT_EQ(max_weight_diff(*warmed, *fresh), 0.0);
}

// bfloat16 autocast keeps float32 master weights and tracks the float32 run: bf16 has 8
// mantissa bits, so losses agree to ~1e-2 relative over a few steps.
TEST(Training, Bf16AutocastTracksFloat32) {
  auto f32 = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  auto bf16 = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer a(f32, train_config("")), b(bf16, train_config(R"(, "autocast_precision": "bfloat16")"));
  for (uint64_t s = 0; s < 3; ++s) {
    const auto ma = a.train_batch(batch(s)), mb = b.train_batch(batch(s));
    EXPECT_NEAR(ma.loss, mb.loss, 2e-2 * ma.loss) << "step " << s;
    EXPECT_FALSE(mb.skipped);
  }
  for (auto& p : bf16->module().named_parameters()) EXPECT_EQ(p.tensor->scalar_type(), at::kFloat) << p.name;
}

// OLMo-core 3.0's optimizer default (group_overrides None): one group, every parameter decays;
// an explicit [] is the same. Its training scripts exempt the embeddings with an override, and
// then, with zero gradients for unseen tokens and AdamW's decoupled decay, rows of never-seen
// tokens stay exactly as they were while other matrices shrink.
TEST(Training, EmbeddingWeightDecayFollowsGroupOverrides) {
  auto ids = at::randint(10, {4, 8}, at::kLong);  // tokens 0..9 only
  for (const char* overrides : {"", R"(, "group_overrides": [])"}) {
    SCOPED_TRACE(overrides);
    auto m = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
    auto before = weights(*m);
    olm::train::Trainer t(m, train_config(R"(, "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.5)" +
                                          std::string(overrides) + "}"));
    ASSERT_EQ(t.optimizer().groups().size(), 1u);
    EXPECT_EQ(t.optimizer().groups()[0].weight_decay, 0.5);
    t.train_batch(ids);
    auto after = weights(*m);
    // Unseen rows only decay: exactly (1 - lr * weight_decay) times what they were.
    EXPECT_TRUE(at::allclose(after["embeddings.weight"].slice(0, 10),
                             before["embeddings.weight"].slice(0, 10) * (1 - 0.01 * 0.5), 0, 1e-7));
  }
  auto m = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  auto before = weights(*m);
  olm::train::Trainer t(m, train_config(R"(, "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.5,
      "group_overrides": [{"params": ["embeddings.weight"], "weight_decay": 0}]})"));
  t.train_batch(ids);
  auto after = weights(*m);
  EXPECT_TRUE(at::equal(before["embeddings.weight"].slice(0, 10), after["embeddings.weight"].slice(0, 10)));
  ASSERT_EQ(t.optimizer().groups().size(), 2u);
  EXPECT_EQ(t.optimizer().groups()[0].names, std::vector<std::string>{"embeddings.weight"});
  EXPECT_EQ(t.optimizer().groups()[0].weight_decay, 0.0);
  EXPECT_EQ(t.optimizer().groups()[1].weight_decay, 0.5);
  // An explicit override by glob: the attention projections get their own learning rate.
  auto m2 = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer t2(m2, train_config(R"(, "optimizer": {"name": "adamw", "lr": 0.01,
      "group_overrides": [{"params": ["blocks.*.attention.w_*"], "lr": 0.001}]})"));
  ASSERT_EQ(t2.optimizer().groups().size(), 2u);
  EXPECT_EQ(t2.optimizer().groups()[0].names.size(), 3u * 4);
  EXPECT_EQ(t2.optimizer().groups()[0].initial_lr, 0.001);
}

TEST(Training, FrozenParametersStayPutWhileTheRestTrains) {
  auto frozen_config = [](const std::string& patterns) {
    auto native = config().native();
    native.freeze_params = {};
    std::stringstream ss(patterns);
    for (std::string p; std::getline(ss, p, ',');) native.freeze_params.push_back(p);
    return olm::Config::from_native(native);
  };
  // `*` crosses dots as in Python's fnmatch: "blocks.1*" freezes all of block 1.
  auto m = std::make_shared<olm::Model>(frozen_config("embeddings.weight,blocks.1*,*.q_norm.weight"), "cpu",
                                        olm::ModelOptions{});
  int64_t frozen = 0;
  for (const auto& p : m->parameters()) frozen += p.trainable ? 0 : 1;
  // The embeddings, block 1's eleven tensors and the q_norms of blocks 0 and 2.
  EXPECT_EQ(frozen, 1 + 11 + 2);
  auto before = weights(*m);
  olm::train::Trainer t(m, train_config(R"(, "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1})"));
  t.train_batch(batch(1));
  t.train_batch(batch(2));
  auto after = weights(*m);
  for (const auto& p : m->parameters()) {
    EXPECT_EQ(at::equal(before[p.name], after[p.name]), !p.trainable) << p.name;
  }
  // The frozen embeddings still take part in the forward pass: the loss is the unfrozen
  // model's on the first step.
  auto m2 = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  auto m3 = std::make_shared<olm::Model>(frozen_config("embeddings.weight"), "cpu", olm::ModelOptions{});
  olm::train::Trainer t2(m2, train_config(""));
  olm::train::Trainer t3(m3, train_config(""));
  EXPECT_EQ(t2.train_batch(batch(1)).loss, t3.train_batch(batch(1)).loss);
  expect_error([&] { frozen_config(",x"); }, olm::ErrorCode::kInvalidConfig, "freeze_params[0]: empty pattern");
}

TEST(Training, NormalizedTransformerStaysOnTheUnitSphere) {
  auto m = std::make_shared<olm::Model>(olm::Config::from_json(R"({"name": "normalized", "d_model": 32, "vocab_size": 64, "n_layers": 2, "init_method": "normalized",
 "block": {"name": "normalized", "attention": {"name": "normalized", "n_heads": 4, "qk_norm": {"name": "l2_norm"},
   "rope": {"theta": 500000}}, "feed_forward": {"name": "normalized", "hidden_size": 96}},
 "lm_head": {"name": "normalized"}})"), "cpu",
                                        olm::ModelOptions{});
  // OLMo-core's NormalizedTransformer matrices: unit rows, except the output projections of
  // attention (w_out) and feed-forward (w2), whose columns are unit vectors.
  auto max_norm_error = [&] {
    double worst = 0;
    for (const auto& [name, w] : weights(*m)) {
      if (w.dim() != 2) continue;
      const bool columns = name.find("w_out") != std::string::npos && name.rfind("lm_head", 0) != 0;
      const int64_t dim = columns || name.find(".w2.") != std::string::npos ? 0 : 1;
      worst = std::max(worst, (at::linalg_vector_norm(w.to(at::kDouble), 2, {dim}) - 1).abs().max().item<double>());
    }
    return worst;
  };
  EXPECT_LT(max_norm_error(), 1e-6);  // after init
  olm::train::Trainer t(m, train_config(R"(, "optimizer": {"name": "adamw", "lr": 0.01})"));
  const auto before = weights(*m);
  const auto s1 = t.train_batch(batch(1));
  EXPECT_TRUE(std::isfinite(s1.loss));
  EXPECT_FALSE(at::equal(before.at("blocks.0.attention.w_q.weight"), weights(*m).at("blocks.0.attention.w_q.weight")));
  EXPECT_LT(max_norm_error(), 1e-6);  // after a step, renormalized
  // The scale vectors train too and are not renormalized.
  EXPECT_FALSE(at::equal(before.at("blocks.0.attn_alpha"), weights(*m).at("blocks.0.attn_alpha")));
  EXPECT_TRUE(at::allclose(before.at("lm_head.sz"), at::full({64}, 1.0 / std::sqrt(32.0))));
}

// SkipStepAdamW skips a step whose loss jumps beyond mean + 6 sigma of the recent window;
// the weights stay as they were and the skip is counted.
TEST(Training, SkipStepAdamWSkipsALossSpike) {
  auto m = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer t(m, train_config(R"(, "max_grad_norm": 1.0, "optimizer": {"name": "skip_step_adamw",
      "lr": 0.0001, "rolling_interval_length": 8, "sigma_factor": 6})"));
  const auto ids = batch(1);
  for (int i = 0; i < 8; ++i) EXPECT_FALSE(t.train_batch(ids).skipped) << i;
  auto before = weights(*m);
  // The same batch with the output layer scaled up: logits x40, a far larger loss.
  {
    at::NoGradGuard g;
    m->module().lm_head().w_out().weight().mul_(40);
  }
  auto spiked = weights(*m);
  const auto s = t.train_batch(ids);
  EXPECT_TRUE(s.skipped) << "loss " << s.loss;
  EXPECT_EQ(s.skipped_steps, 1);
  auto after = weights(*m);
  for (auto& [name, w] : spiked) EXPECT_TRUE(at::equal(w, after[name])) << name;
}

TEST(Training, BatchChecks) {
  auto m = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer t(m, train_config(""));
  EXPECT_THROW(t.train_batch(at::zeros({2, 8}, at::kLong)), olm::Error);   // 16 tokens, not 32
  EXPECT_THROW(t.train_batch(at::zeros({4, 8}, at::kFloat)), olm::Error);  // dtype
  EXPECT_THROW(t.train_batch(at::full({4, 8}, 50, at::kLong)), olm::Error);  // vocabulary
  EXPECT_EQ(t.step(), 0) << "refused batches take no step";
  // Labels default to OLMo-core's: shifted left, last position ignored.
  auto ids = at::arange(8, at::kLong).view({1, 8});
  auto labels = olm::train::default_labels(ids);
  EXPECT_TRUE(at::equal(labels, at::tensor(std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, -100}, at::kLong).view({1, 8})));
}

// Intra-document masking in training: the step's loss is the model's masked mean loss on the
// same batch (micro-batches take their rows of the document positions), it differs from the
// unmasked loss, and activation checkpointing recomputes the masked blocks exactly.
TEST(Training, DocumentMaskingSplitsAcrossMicroBatches) {
  auto ids = batch(3);
  // Row r: documents of lengths {3, 5}, {8}, {1, 7}, {4, 4} (a row boundary every 8).
  auto cu = at::tensor(std::vector<int32_t>{0, 3, 8, 16, 17, 24, 28, 32}, at::kInt);
  auto m = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  olm::nn::LossOptions lo;
  const auto labels = olm::train::default_labels(ids);
  const double masked = m->loss(ids, labels, lo, cu, 0).loss.item<double>();
  const double unmasked = m->loss(ids, labels, lo).loss.item<double>();
  EXPECT_GT(std::abs(masked - unmasked), 1e-4);
  auto ac = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer a(m, train_config("")), b(ac, train_config(R"(, "ac_mode": "full")"));
  const auto ma = a.train_batch(ids, at::Tensor(), cu), mb = b.train_batch(ids, at::Tensor(), cu);
  EXPECT_NEAR(ma.loss, masked, 1e-6 * masked);
  EXPECT_NEAR(ma.loss, mb.loss, 1e-6 * ma.loss);
  EXPECT_NEAR(ma.grad_norm, mb.grad_norm, 1e-5 * ma.grad_norm);
  EXPECT_LT(max_weight_diff(*m, *ac), 1e-6);
  EXPECT_THROW(a.train_batch(ids, at::Tensor(), at::tensor(std::vector<int32_t>{0, 32}, at::kInt)), olm::Error);
}

// fit() trains with the loader's document lengths only when data.generate_doc_lengths says so:
// its first step's loss is the masked (or unmasked) loss of the loader's first batch.
TEST(Training, FitUsesDocumentLengthsWhenAsked) {
  std::vector<int64_t> tokens(64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = i % 5 == 3 ? 0 : static_cast<int64_t>(1 + (i * 17) % 49);
  olm::data::DatasetOptions o;
  o.sequence_length = 8;
  o.vocab_size = 50;
  o.eos_token_id = 0;
  auto ds = olm::data::TokenDataset::from_tokens(tokens, o);
  // The field round-trips through JSON.
  const auto with_docs = train_config(R"(, "data": {"paths": ["unused"], "eos_token_id": 0, "generate_doc_lengths": true})");
  EXPECT_TRUE(with_docs.spec().data->generate_doc_lengths);
  EXPECT_NE(with_docs.to_json().find("\"generate_doc_lengths\": true"), std::string::npos);
  EXPECT_TRUE(olm::train::TrainConfig::from_json(with_docs.to_json()).spec().data->generate_doc_lengths);
  EXPECT_FALSE(train_config(R"(, "data": {"paths": ["unused"], "eos_token_id": 0})").spec().data->generate_doc_lengths);
  auto first = olm::data::DataLoader(ds, 4, 0).next();
  ASSERT_TRUE(first.cu_doc_lens.has_value());
  auto reference = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
  olm::nn::LossOptions lo;
  const double masked = reference->loss(first.input_ids, first.labels, lo, *first.cu_doc_lens).loss.item<double>();
  const double unmasked = reference->loss(first.input_ids, first.labels, lo).loss.item<double>();
  ASSERT_GT(std::abs(masked - unmasked), 1e-4);
  for (bool docs : {false, true}) {
    auto m = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
    olm::train::Trainer t(m, train_config(std::string(R"(, "data": {"paths": ["unused"], "eos_token_id": 0,
        "generate_doc_lengths": )") + (docs ? "true" : "false") + "}"));
    olm::data::DataLoader loader(ds, 4, 0);
    double loss = 0;
    olm::run::FitCallbacks callbacks;
    callbacks.on_step = [&](const olm::train::StepMetrics& step) {
      loss = step.loss;
      return false;
    };
    olm::run::fit_loop(t, loader, nullptr, callbacks);
    EXPECT_NEAR(loss, docs ? masked : unmasked, 1e-6 * loss) << "generate_doc_lengths " << docs;
    // An explicit choice overrides the config.
    auto m2 = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
    olm::train::Trainer t2(m2, train_config(R"(, "data": {"paths": ["unused"], "eos_token_id": 0})"));
    olm::data::DataLoader loader2(ds, 4, 0);
    olm::run::fit_loop(t2, loader2, nullptr, callbacks, docs);
    EXPECT_NEAR(loss, docs ? masked : unmasked, 1e-6 * loss) << "fit(documents=" << docs << ")";
  }
  // Evaluation masks documents on request: the mean of the masked losses.
  {
    auto m3 = std::make_shared<olm::Model>(config(), "cpu", olm::ModelOptions{});
    olm::train::Trainer t3(m3, train_config(""));
    auto second = olm::data::make_batch(*ds, {4, 5, 6, 7});
    auto first_in_order = olm::data::make_batch(*ds, {0, 1, 2, 3});
    olm::nn::LossOptions sum;
    sum.reduction = olm::nn::LossReduction::kSum;
    double total = 0;
    int64_t count = 0;
    for (auto* b : {&first_in_order, &second}) {
      total += reference->loss(b->input_ids, b->labels, sum, *b->cu_doc_lens).loss.item<double>();
      count += b->labels.ne(-100).sum().item<int64_t>();
    }
    const auto eval = olm::train::evaluate_dataset(t3, *ds, 4, 0, true);
    EXPECT_NEAR(eval.loss, total / static_cast<double>(count), 1e-6 * eval.loss);
    EXPECT_GT(std::abs(olm::train::evaluate_dataset(t3, *ds, 4, 0, false).loss - eval.loss), 1e-5);
  }
}

}  // namespace
