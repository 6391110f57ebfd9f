// core/distributed/tensor_parallel.cpp and the model's tensor parallelism
// (Transformer::apply_tensor_parallel): 2 and 4 ranks over Gloo on loopback, each holding its
// slices, against the unsplit model in one process (the same seed and weights, the same whole
// batch): the loss, ce and z losses, the full logits and every gradient (a split parameter's
// equals the slice of the one-process gradient; a replicated one's, summed over the ranks,
// equals the whole). Each rank runs as `olm_dist_tests --worker <gtest flags> VARIANTS OUT`
// (the disabled test TensorParallelRank.Run) and computes the one-process reference itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/distributed/process_group.h"
#include "core/distributed/tensor_parallel.h"
#include "core/error.h"
#include "core/nn/attention.h"
#include "core/nn/transformer.h"
#include "core/train/activation_checkpointing.h"
#include "dist_harness.h"
#include "test_util.h"

namespace {

using namespace olm_dist_testing;

// The tiny model of dist_harness.h (GQA 4 heads / 2 KV heads, QK-norm over the whole
// projection, reordered_norm), its JSON edited per variant; vocab_size 52 splits over 4 ranks.
std::string model_json(const std::string& variant) {
  std::string attention = R"("n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": {"theta": 10000},
      "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false})";
  std::string block = "reordered_norm", norm = R"({"name": "rms", "eps": 1e-6, "bias": false})";
  std::string ff_bias = "false", head_bias = "false", extra;
  if (variant == "head_qk_norm") attention += R"(, "use_head_qk_norm": true)";
  if (variant == "kv_replicated")
    attention = R"("n_heads": 4, "n_kv_heads": 1, "bias": false, "rope": {"theta": 10000},
      "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false})";
  if (variant == "bias_layer_norm") {
    // LayerNorm (mean and variance across the group for the QK-norm) and every bias.
    attention = R"("n_heads": 4, "n_kv_heads": 2, "bias": true, "rope": {"theta": 10000},
      "qk_norm": {"name": "default", "eps": 1e-5, "bias": true})";
    block = "default";
    norm = R"({"name": "default", "eps": 1e-5, "bias": true})";
    ff_bias = head_bias = "true";
  }
  if (variant == "tied") extra = R"(, "tie_word_embeddings": true)";
  if (variant == "gates") attention += R"(, "gate": {"granularity": "headwise"})";
  if (variant == "elementwise_gates") attention += R"(, "gate": {"granularity": "elementwise"})";
  if (variant == "sliding_window")
    attention += R"(, "sliding_window": {"pattern": [3], "force_full_attention_on_first_layer": false,
      "force_full_attention_on_last_layer": false})";
  if (variant == "learned_positions" || variant == "learned_positions_docs") {
    attention = R"("n_heads": 4, "n_kv_heads": 2, "bias": false,
      "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false})";
    extra = R"(, "position_embedding": {"name": "learned", "max_sequence_length": 16})";
  }
  if (variant == "sinusoidal") {
    attention = R"("n_heads": 4, "n_kv_heads": 2, "bias": false,
      "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false})";
    extra = R"(, "position_embedding": {"name": "sinusoidal"})";
  }
  if (variant == "peri_norm") {
    block = "peri_norm";
    extra = R"(, "embedding_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "embed_scale": 2.0)";
  }
  if (variant == "parallel_block") block = "parallel";
  if (variant == "explicit_softcap") attention += R"(, "backend": "explicit", "softcap": 5.0, "clip_qkv": 3.0)";
  if (variant == "alibi") attention = R"("n_heads": 4, "n_kv_heads": 2, "bias": false, "alibi": true)";
  return R"({"d_model": 32, "vocab_size": 52, "n_layers": 2,
    "block": {"name": ")" + block + R"(", "attention": {)" + attention + R"(},
      "feed_forward": {"hidden_size": 64, "bias": )" + ff_bias + R"(}, "layer_norm": )" + norm + R"(},
    "lm_head": {"layer_norm": )" + norm + R"(, "bias": )" + head_bias + "}" + extra + "}";
}

const std::vector<std::string> kVariants{"base",  "head_qk_norm",      "kv_replicated",  "bias_layer_norm",
                                         "tied",  "gates",             "elementwise_gates", "sliding_window",
                                         "learned_positions", "learned_positions_docs", "alibi",
                                         "docs",  "sum_ignore",        "none_ignore", "sinusoidal", "peri_norm",
                                         "parallel_block", "explicit_softcap", "activation_checkpointing"};

constexpr int64_t kBatch = 2, kSeq = 8;

std::unique_ptr<olm::nn::Transformer> build(const olm::Config& config) {
  auto model = std::make_unique<olm::nn::Transformer>(config.spec());
  olm::nn::init_weights(*model);
  // Biases start at zero and norm weights at one, where a bias added on every rank or a
  // weight applied to the wrong slice would not show: move them, the same on every rank.
  at::NoGradGuard no_grad;
  for (auto& p : model->named_parameters())
    if (p.tensor->dim() == 1) p.tensor->add_(at::arange(p.tensor->numel(), p.tensor->options()).sin().mul_(0.1));
  model->to(at::kCPU, at::kFloat);
  return model;
}

// Token ids (and labels) from an LCG, the same on every rank; every fifth label ignored
// where asked.
at::Tensor tokens(uint64_t seed, int64_t vocab, bool ignore_some) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < kBatch * kSeq; ++i) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    v.push_back(ignore_some && i % 5 == 2 ? -100 : static_cast<int64_t>((seed >> 33) % static_cast<uint64_t>(vocab)));
  }
  return at::tensor(v, at::kLong).view({kBatch, kSeq});
}

// Float32 summation in another order (the group's partial sums instead of one kernel's)
// moves a sum of K terms by about sqrt(K) ulps of its magnitude (random rounding errors); the
// longest reduction here has K = 64 (hidden_size; d_model 32, vocabulary 52, 8 positions),
// and a value passes through up to 32 such reductions between the embeddings and a gradient:
// forward, per block, the norms, the q/k/v projections, the QK-norm, the scores, the softmax,
// attention times values, w_out, w1/w3 and w2 (about 8 sums), times 2 blocks, then the head's
// norm, w_out and the cross-entropy's sum of exponentials; and the backward back to the
// parameter retraces up to as many. So |tp - one process| <= 32 * sqrt(64) ulps of the
// tensor's largest magnitude.
constexpr double kUlps = 32.0 * 8.0;

struct Report {
  std::ostringstream text;
  bool ok = true;
  // got vs want, elementwise, within kUlps ulps of the larger tensor's largest magnitude.
  void close(const std::string& what, const at::Tensor& got, const at::Tensor& want) {
    if (!got.sizes().equals(want.sizes())) {
      ok = false;
      text << "FAIL " << what << ": shape " << got.sizes() << " vs " << want.sizes() << "\n";
      return;
    }
    const double scale = std::max(want.abs().max().item<double>(), got.abs().max().item<double>());
    const double tol = kUlps * std::numeric_limits<float>::epsilon() * scale;
    const double err = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
    const bool good = err <= tol;
    ok = ok && good;
    text << (good ? "ok   " : "FAIL ") << what << " err " << err << " tol " << tol << "\n";
  }
  void expect(bool condition, const std::string& what) {
    ok = ok && condition;
    text << (condition ? "ok   " : "FAIL ") << what << "\n";
  }
};

// Every parameter's layout: the names in order, the full shapes, contiguous equal slices.
void check_layout(Report& r, olm::nn::Transformer& tp_model, olm::nn::Transformer& reference, int64_t size,
                  const std::string& variant) {
  auto params = tp_model.named_parameters();
  auto full = reference.named_parameters();
  for (int64_t rank = 0; rank < size; ++rank) {
    const auto slices = tp_model.tensor_parallel_slices(rank);
    bool good = slices.size() == full.size();
    for (size_t i = 0; good && i < slices.size(); ++i) {
      const auto& s = slices[i];
      good = s.name == full[i].name && s.full_shape == full[i].tensor->sizes().vec();
      if (good && s.dim >= 0) good = s.length * size == s.full_shape[static_cast<size_t>(s.dim)] && s.start == rank * s.length;
      if (good && rank == tp_model.tensor_parallel()->rank()) {
        auto local = s.full_shape;
        if (s.dim >= 0) local[static_cast<size_t>(s.dim)] = s.length;
        good = params[i].tensor->sizes().vec() == local;
      }
    }
    r.expect(good, variant + ": tensor_parallel_slices(" + std::to_string(rank) + ") covers every parameter");
  }
}

// The gradient contract: split parameters hold their slice's gradient; replicated ones a
// partial sum, which summed over the group is the whole gradient.
void check_gradients(Report& r, olm::nn::Transformer& tp_model, olm::nn::Transformer& reference,
                     olm::distributed::ProcessGroup& group, const std::string& what) {
  auto params = tp_model.named_parameters();
  auto full = reference.named_parameters();
  const auto slices = tp_model.tensor_parallel_slices(group.rank());
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& s = slices[i];
    at::Tensor got = params[i].tensor->grad();
    const at::Tensor& want_full = full[i].tensor->grad();
    if (!got.defined() || !want_full.defined()) {
      r.expect(got.defined() == want_full.defined(), what + " " + s.name + ": gradient defined alike");
      continue;
    }
    at::Tensor want = want_full;
    if (s.dim >= 0) {
      want = want_full.narrow(s.dim, s.start, s.length);
    } else {
      got = got.clone();
      group.all_reduce_sum({got});
    }
    r.close(what + " grad " + s.name, got, want);
  }
}

void zero_grads(olm::nn::Transformer& model) {
  for (auto& p : model.named_parameters()) p.tensor->mutable_grad() = at::Tensor();
}

void run_variant(Report& r, const std::string& variant, olm::distributed::ProcessGroup& group,
                 const std::shared_ptr<olm::distributed::TensorParallelGroup>& tp) {
  const int64_t size = group.world_size();
  // At 2 ranks the base variant is dist_harness's model itself (vocabulary 50).
  const auto config = variant == "base" && size == 2 ? dense_model_config() : olm::Config::from_json(model_json(variant));
  auto reference = build(config), tp_model = build(config);
  tp_model->apply_tensor_parallel(tp);
  if (variant == "activation_checkpointing") {
    // The recomputation in the backward runs the block's collectives again, in the same order
    // on every rank.
    for (auto* m : {reference.get(), tp_model.get()})
      m->set_block_runner(olm::train::checkpointed_block_forward, std::vector<bool>(m->blocks().size(), true));
  }
  check_layout(r, *tp_model, *reference, size, variant);

  const int64_t vocab = reference->spec().vocab_size;
  const bool ignore = variant == "sum_ignore" || variant == "none_ignore" || variant == "docs";
  olm::nn::LossOptions options;
  options.z_loss_multiplier = 1e-2;  // large enough that its gradient is not lost under the ce's
  if (variant == "sum_ignore") options.reduction = olm::nn::LossReduction::kSum;
  if (variant == "none_ignore") options.reduction = olm::nn::LossReduction::kNone;
  at::Tensor doc_positions;
  if (variant == "docs" || variant == "learned_positions_docs")
    doc_positions = olm::nn::document_positions(at::tensor(std::vector<int64_t>{0, 3, 8, 11, 13, 16}, at::kLong),
                                                kBatch, kSeq);
  // Two micro-batches, both backward before the comparison: gradients accumulate.
  for (int micro = 0; micro < 2; ++micro) {
    const std::string what = variant + " micro-batch " + std::to_string(micro);
    const auto ids = tokens(11 + micro, vocab, false), labels = tokens(29 + micro, vocab, ignore);
    const auto want = reference->loss(ids, labels, options, doc_positions);
    const auto got = tp_model->loss(ids, labels, options, doc_positions);
    r.close(what + " loss", got.loss.detach(), want.loss.detach());
    r.close(what + " ce_loss", got.ce_loss, want.ce_loss);
    r.close(what + " z_loss", *got.z_loss, *want.z_loss);
    // "none": per-token losses, weighted so every position's gradient differs.
    auto objective = [&](const at::Tensor& loss) {
      return loss.dim() == 0 ? loss : (loss * at::arange(1, loss.numel() + 1, loss.options()).view(loss.sizes())).sum();
    };
    objective(want.loss).backward();
    objective(got.loss).backward();
    at::NoGradGuard no_grad;
    r.close(what + " logits", tp_model->forward(ids, 0, nullptr, doc_positions),
            reference->forward(ids, 0, nullptr, doc_positions));
  }
  check_gradients(r, *tp_model, *reference, group, variant);
  zero_grads(*tp_model);
  zero_grads(*reference);
  if (variant == "base") {
    // The sequence must split over the group (a sequence of length 2 * size + 1 does not).
    const auto odd = at::zeros({kBatch, 2 * size + 1}, at::kLong);
    try {
      tp_model->loss(odd, odd, options);
      r.expect(false, "base: odd sequence length refused");
    } catch (const olm::Error& e) {
      r.expect(std::string(e.what()).find("input_ids") != std::string::npos,
               std::string("base: odd sequence length refused naming input_ids: ") + e.what());
    }
    const auto beyond = at::full({kBatch, kSeq}, vocab, at::kLong);
    try {
      tp_model->loss(beyond, tokens(29, vocab, false), options);
      r.expect(false, "base: an id beyond the vocabulary refused");
    } catch (const olm::Error& e) {
      r.expect(std::string(e.what()).find("input_ids: ids must lie in") != std::string::npos,
               std::string("base: an id beyond the vocabulary refused naming input_ids: ") + e.what());
    }
  }
}

// One rank: every variant, the report to the file named last on the command line.
TEST(TensorParallelRank, DISABLED_Run) {
  const auto argv = ::testing::internal::GetArgvs();
  ASSERT_GE(argv.size(), 2u);
  const std::string out = argv.back();
  Report r;
  try {
    olm::distributed::ProcessGroupOptions o;
    o.timeout = std::chrono::seconds(60);
    auto group = olm::distributed::ProcessGroup::create(o);
    auto tp = std::make_shared<olm::distributed::TensorParallelGroup>(group);
    for (const auto& variant : kVariants) run_variant(r, variant, *group, tp);
    group->shutdown();
    r.text << (r.ok ? "done\n" : "failed\n");
  } catch (const std::exception& e) {
    r.text << "FAIL exception: " << e.what() << "\n";
  }
  std::ofstream(out) << r.text.str();
}

void run_ranks(int world) {
  LaunchOptions options;
  options.deadline_s = 240;
  const auto children = launch(world, "tp" + std::to_string(world), [](const Child& c) {
    // Four arguments would make dist_main.cpp take them for its own worker's.
    return std::vector<std::string>{"--gtest_filter=TensorParallelRank.DISABLED_Run", "--gtest_also_run_disabled_tests",
                                    "--gtest_color=no", c.out};
  }, options);
  for (const auto& c : children) {
    const auto report = slurp(c.out);
    EXPECT_TRUE(exited_ok(c)) << "rank " << c.rank << "\n" << slurp(c.log);
    EXPECT_NE(report.find("done\n"), std::string::npos) << "rank " << c.rank << ":\n" << report << slurp(c.log);
    EXPECT_EQ(report.find("FAIL"), std::string::npos) << "rank " << c.rank << ":\n" << report;
  }
}

TEST(TensorParallel, TwoRanksMatchOneProcess) { run_ranks(2); }
TEST(TensorParallel, FourRanksMatchOneProcess) { run_ranks(4); }

// A group of `size` that no collective reaches: the refusals come before any communication.
class NoCollectives : public olm::nn::TensorParallel {
 public:
  explicit NoCollectives(int64_t size) : size_(size) {}
  int64_t rank() const override { return 0; }
  int64_t size() const override { return size_; }
  at::Tensor gather_sequence(const at::Tensor&) override { throw std::logic_error("no collectives"); }
  at::Tensor reduce_scatter_sequence(const at::Tensor&) override { throw std::logic_error("no collectives"); }
  at::Tensor all_reduce_sum(const at::Tensor&) override { throw std::logic_error("no collectives"); }
  at::Tensor gather_last_dim(const at::Tensor&) override { throw std::logic_error("no collectives"); }
  void all_reduce_sum_(at::Tensor&) override { throw std::logic_error("no collectives"); }
  void all_reduce_max_(at::Tensor&) override { throw std::logic_error("no collectives"); }

 private:
  int64_t size_;
};

// What cannot be split is refused naming its field, and the model is left as it was.
TEST(TensorParallel, RefusesWhatDoesNotSplitNamingTheField) {
  auto tp4 = std::make_shared<NoCollectives>(4);
  auto refused = [&](const std::string& json, const std::string& needle) {
    auto model = build(olm::Config::from_json(json));
    const auto before = model->embeddings().clone();
    olm::testing::expect_error([&] { model->apply_tensor_parallel(tp4); }, olm::ErrorCode::kInvalidConfig, needle);
    EXPECT_TRUE(model->embeddings().equal(before)) << needle;
    EXPECT_EQ(model->tensor_parallel(), nullptr) << needle;
  };
  auto edit = [](std::string json, const std::string& from, const std::string& to) {
    const auto at = json.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return json.replace(at, from.size(), to);
  };
  const auto base = model_json("base");
  refused(edit(base, R"("vocab_size": 52)", R"("vocab_size": 50)"),
          "vocab_size: 50 does not split over tensor_parallel.degree 4");
  refused(edit(edit(base, R"("d_model": 32)", R"("d_model": 48)"), R"("n_heads": 4, "n_kv_heads": 2)",
               R"("n_heads": 6, "n_kv_heads": 2)"),
          "blocks[0].attention.n_heads: 6 heads do not split over tensor_parallel.degree 4");
  refused(edit(base, R"("hidden_size": 64)", R"("hidden_size": 66)"),
          "blocks[0].feed_forward.hidden_size: 66 does not split over tensor_parallel.degree 4");
  refused(edit(base, R"("lm_head": {)", R"("lm_head": {"loss_implementation": "fused_linear", )"),
          "lm_head.loss_implementation: fused_linear cannot be combined with tensor parallelism");
  refused(R"({"name": "moe", "d_model": 32, "vocab_size": 52, "n_layers": 1,
      "block": {"name": "moe_reordered_norm", "attention": {"n_heads": 4, "bias": false},
        "feed_forward_moe": {"name": "dropless", "num_experts": 4, "hidden_size": 16, "router": {"top_k": 2}},
        "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
      "lm_head": {"bias": false}})",
          "blocks[0].feed_forward_moe cannot be combined with tensor parallelism");
  refused(R"({"name": "normalized", "d_model": 32, "vocab_size": 52, "n_layers": 1, "init_method": "normalized",
      "block": {"name": "normalized", "attention": {"name": "normalized", "n_heads": 4, "qk_norm": {"name": "l2_norm"}},
        "feed_forward": {"name": "normalized", "hidden_size": 64}},
      "lm_head": {"name": "normalized"}})",
          "name: normalized cannot be combined with tensor parallelism");
  refused(R"({"d_model": 32, "vocab_size": 52, "n_layers": 1,
      "block": {"attention": {"name": "gated_delta_net", "n_heads": 4, "head_dim": 8},
        "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
      "lm_head": {"bias": false}})",
          "blocks[0].sequence_mixer: gated_delta_net cannot be combined with tensor parallelism");
  auto model = build(olm::Config::from_json(base));
  olm::testing::expect_error([&] { model->apply_tensor_parallel(nullptr); }, olm::ErrorCode::kInvalidArgument, "tp");
  olm::testing::expect_error([&] { model->tensor_parallel_slices(1); }, olm::ErrorCode::kInvalidArgument, "rank 1");
}

}  // namespace
