// core/distributed/context_parallel.cpp: ring attention (zig-zag) and Ulysses on 1, 2 and 4 ranks
// against one process's SDPA on the whole sequence (outputs and dq, dk, dv), the tiny model
// under Transformer::apply_context_parallel against the unsplit model (loss and every
// gradient), the load balancer's layout and the refusals; also ProcessGroup's point-to-point
// and all-to-all, which they run on.
//
// The ranks are child processes of this binary that run only ContextParallelRank.RunsCase
// (the case named by OLM_CP_CASE, set by the launching test): each rank computes the
// single-process reference itself from the same seeded inputs, so it checks its own part
// and, after summing the scattered parts over the ranks, the whole.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "core/distributed/context_parallel.h"
#include "core/model.h"
#include "dist_runs.h"
#include "test_util.h"

namespace {

using namespace olm_dist_testing;
using olm::distributed::ContextParallelGroup;
using olm::distributed::ContextParallelStyle;
using olm::distributed::ProcessGroup;

constexpr double kEps = std::numeric_limits<float>::epsilon();

// ---- the rank side ----

// Failures go to stderr too: the launching test shows each rank's stderr.
void expect_close(const at::Tensor& actual, const at::Tensor& expected, double tol, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  const double err = (actual.to(at::kDouble) - expected.to(at::kDouble)).abs().max().item<double>();
  if (!(err <= tol)) {
    std::fprintf(stderr, "%s: max |difference| %.3g exceeds the tolerance %.3g\n", what.c_str(), err, tol);
    ADD_FAILURE() << what << ": max |difference| " << err << " > " << tol;
  }
}

// Attention of (B, H, T, D) inputs: every element of the output and of dq, dk, dv is a sum
// over up to T keys (or queries) of terms that each carry a score, a D-long dot product, and
// a few elementwise roundings (subtract, exp, scale, rescale, divide). Both sides round each
// term to float32 independently, in different orders, so the difference grows like
// sqrt(T * D) ulps of the largest term. The scale of a term is taken as the tensor's largest
// magnitude: exact for the output (a convex combination of v's rows), and for the gradients
// of these unit-Gaussian inputs their terms and their sums are of one order (no large
// cancellation). 16: the ~8 rounding steps per term, twice, for two independently rounded
// computations. (Observed: at most 3% of this; a mask or ring bug is off by O(1).)
double attention_tolerance(const at::Tensor& reference, int64_t T, int64_t D) {
  return 16 * kEps * std::sqrt(static_cast<double>(T * D)) * reference.abs().max().item<double>();
}

// The mask written out directly, for the single-process reference: query i (position pos[b, i]
// in its document) sees key j iff i - pos[b, i] <= j <= i, and with a window j > i - window.
at::Tensor reference_mask(const at::Tensor& pos, int64_t T, std::optional<int64_t> window) {
  const int64_t B = pos.size(0);
  auto mask = at::zeros({B, 1, T, T}, at::kBool);
  auto acc = mask.accessor<bool, 4>();
  auto p = pos.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j)
        acc[b][0][i][j] = j <= i && j >= i - p[b][i] && (!window || j > i - *window);
  return mask;
}

// Two rows of T tokens; documents cross the zig-zag and the contiguous shard boundaries (and
// the row boundary starts a new one, as every row must).
at::Tensor packed_positions(int64_t T) {
  auto cu = at::tensor({int64_t{0}, int64_t{5}, T / 2 + 3, T, T + 3, 2 * T - 1, 2 * T}, at::kLong);
  return olm::nn::document_positions(cu, 2, T);
}

at::Tensor row_positions(int64_t B, int64_t T) { return at::arange(T, at::kLong).unsqueeze(0).expand({B, T}).clone(); }

// Scatters this rank's tokens (dimension `dim`) into a zero tensor of the whole sequence and
// sums over the ranks: the whole tensor when the layout covers every token once.
at::Tensor assemble(ProcessGroup& group, const ContextParallelGroup& cp, const at::Tensor& local, int64_t dim,
                    int64_t T) {
  auto sizes = local.sizes().vec();
  sizes[static_cast<size_t>(dim)] = T;
  auto whole = at::zeros(sizes, local.options().requires_grad(false));
  whole.index_copy_(dim, cp.global_indices(T), local.detach());
  group.all_reduce_sum({whole});
  return whole;
}

struct AttentionCase {
  std::string name;
  bool documents = false;
  std::optional<int64_t> window;
  std::optional<double> scale;
};

void check_attention(ProcessGroup& group, ContextParallelGroup& cp, const AttentionCase& c) {
  const int64_t B = 2, H = 4, D = 8, W = cp.size(), T = 8 * W;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1234);
  auto q = at::randn({B, H, T, D}, gen, at::kFloat), k = at::randn({B, H, T, D}, gen, at::kFloat),
       v = at::randn({B, H, T, D}, gen, at::kFloat), d_out = at::randn({B, H, T, D}, gen, at::kFloat);
  const auto pos = c.documents ? packed_positions(T) : row_positions(B, T);
  // One process: SDPA over the whole sequence.
  auto qr = q.clone().requires_grad_(), kr = k.clone().requires_grad_(), vr = v.clone().requires_grad_();
  auto ref = at::scaled_dot_product_attention(qr, kr, vr, reference_mask(pos, T, c.window), 0.0, false, c.scale);
  (ref * d_out).sum().backward();
  // This rank: its shard of everything.
  auto qc = q.clone().requires_grad_(), kc = k.clone().requires_grad_(), vc = v.clone().requires_grad_();
  const int64_t bytes_before = group.stats().bytes;
  auto out = cp.attention(cp.shard(qc, 2, "q"), cp.shard(kc, 2, "k"), cp.shard(vc, 2, "v"), cp.shard(pos, 1, "pos"),
                          c.window, c.scale);
  const int64_t forward_bytes = group.stats().bytes - bytes_before;
  (out * cp.shard(d_out, 2, "d_out")).sum().backward();
  const std::string on = c.name + " (rank " + std::to_string(cp.rank()) + " of " + std::to_string(W) + ")";
  expect_close(out, cp.shard(ref, 2, "ref"), attention_tolerance(ref, T, D), on + ": this rank's output");
  // dq of this rank's queries is complete here; dk, dv of its keys came back round the ring
  // (or through the all-to-all) with every rank's contributions.
  for (auto [name, mine, whole] : {std::tuple{"dq", qc.grad(), qr.grad()}, std::tuple{"dk", kc.grad(), kr.grad()},
                                   std::tuple{"dv", vc.grad(), vr.grad()}}) {
    expect_close(cp.shard(mine, 2, name), cp.shard(whole, 2, name), attention_tolerance(whole, T, D),
                 on + ": this rank's " + name);
    // The other rows of each rank's gradient are 0, so the sum over ranks is the whole.
    expect_close(assemble(group, cp, cp.shard(mine, 2, name), 2, T), whole, attention_tolerance(whole, T, D),
                 on + ": " + name + " summed over the ranks");
  }
  expect_close(assemble(group, cp, out, 2, T), ref, attention_tolerance(ref, T, D), on + ": output summed over ranks");
  // What the forward sent: the ring passes every key/value block on W - 1 times; Ulysses
  // sends (W-1)/W of q, k, v and of the output, and gathers every rank's positions.
  const int64_t block = B * H * (T / W) * D * 4;
  const int64_t expected = cp.style() == ContextParallelStyle::kRingZigZag
                               ? (W - 1) * 2 * block
                               : 3 * block * (W - 1) / W + block * (W - 1) / W + (W > 1 ? B * T * 8 : 0);
  EXPECT_EQ(forward_bytes, expected) << on;
}

// The tiny models: each rank feeds its shard of the tokens, labels and
// positions; the loss (token sum over the whole batch's count) summed over the ranks and
// every gradient summed over the ranks equal one process's on the whole sequence.
// "dense": dist_harness.h's (GQA, QK-norm, RoPE); "window": the same with a sliding window of
// 5 on both layers; "ngpt": the normalized transformer (softmax scale sqrt(head_dim)).
olm::Config cp_model_config(const std::string& name) {
  if (name == "ngpt") return model_config("ngpt");
  if (name == "dense") return dense_model_config();
  return olm::Config::from_json(R"({"d_model": 32, "vocab_size": 50, "n_layers": 2,
    "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false,
      "rope": {"theta": 10000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false},
      "sliding_window": {"pattern": [5], "force_full_attention_on_first_layer": false,
                         "force_full_attention_on_last_layer": false}},
      "feed_forward": {"hidden_size": 64, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

void check_model(ProcessGroup& group, const std::shared_ptr<ContextParallelGroup>& cp, const std::string& model,
                 bool documents) {
  const int64_t B = 2, W = cp->size(), T = 8 * W;
  olm::Model reference(cp_model_config(model), "cpu", olm::ModelOptions{});
  olm::Model split(cp_model_config(model), "cpu", olm::ModelOptions{});
  split.module().apply_context_parallel(cp);
  if (model == "window")
    for (const auto& block : split.module().spec().blocks) ASSERT_EQ(block.attention.window_size, int64_t{5});
  auto gen = at::make_generator<at::CPUGeneratorImpl>(99);
  const auto ids = at::randint(0, 50, {B, T}, gen, at::kLong), labels = at::randint(0, 50, {B, T}, gen, at::kLong);
  const auto pos = documents ? packed_positions(T) : row_positions(B, T);
  olm::nn::LossOptions options;
  options.reduction = olm::nn::LossReduction::kSum;
  options.loss_div_factor = static_cast<double>(B * T);
  options.z_loss_multiplier = 1e-4;
  auto ref = reference.module().loss(ids, labels, options, documents ? pos : at::Tensor());
  ref.loss.backward();
  auto mine = split.module().loss(cp->shard(ids, 1, "ids"), cp->shard(labels, 1, "labels"), options,
                                  cp->shard(pos, 1, "pos"));
  mine.loss.backward();
  const std::string on = model + ", " + (documents ? "packed documents" : "one document per row") + " (rank " +
                         std::to_string(cp->rank()) + " of " + std::to_string(W) + ")";
  auto loss = mine.loss.detach().reshape({1}).clone();
  group.all_reduce_sum({loss});
  // The loss is a sum of B*T per-token terms, each a log-sum-exp over the 50-word vocabulary
  // of logits that carry the model's rounding: 16 ulps per term, grown by sqrt(B*T).
  const double loss_tol = 16 * kEps * std::sqrt(static_cast<double>(B * T)) * std::abs(ref.loss.item<double>());
  expect_close(loss, ref.loss.detach().reshape({1}), loss_tol, on + ": loss summed over ranks");
  // A gradient element sums over the B*T tokens' contributions, each the product of a chain
  // through 2 blocks of d_model = 32 (attention over up to T keys, the 64-wide feed-forward):
  // sqrt(B*T) from the token sum, sqrt(64) from the widest inner reduction, and 64 for the
  // ~30 sequential roundings of the chain on both sides; relative to the largest element.
  const auto ref_params = reference.module().named_parameters();
  const auto split_params = split.module().named_parameters();
  ASSERT_EQ(ref_params.size(), split_params.size());
  for (size_t i = 0; i < ref_params.size(); ++i) {
    ASSERT_EQ(ref_params[i].name, split_params[i].name);
    const auto& whole = ref_params[i].tensor->grad();
    auto summed = split_params[i].tensor->grad().clone();
    group.all_reduce_sum({summed});
    const double tol = 64 * kEps * std::sqrt(static_cast<double>(B * T * 64)) * whole.abs().max().item<double>();
    expect_close(summed, whole, tol, on + ": gradient of " + ref_params[i].name);
  }
}

// The layout, written out: 2W chunks, rank r holding chunks r and 2W-1-r; contiguous for
// Ulysses. Then what is refused, and how.
void check_layout_and_refusals(ContextParallelGroup& cp) {
  const int64_t W = cp.size(), r = cp.rank(), T = 8 * W;
  std::vector<int64_t> expected;
  if (cp.style() == ContextParallelStyle::kRingZigZag) {
    for (int64_t i = r * 4; i < (r + 1) * 4; ++i) expected.push_back(i);
    for (int64_t i = (2 * W - 1 - r) * 4; i < (2 * W - r) * 4; ++i) expected.push_back(i);
  } else {
    for (int64_t i = r * 8; i < (r + 1) * 8; ++i) expected.push_back(i);
  }
  const auto indices = cp.global_indices(T);
  EXPECT_EQ(std::vector<int64_t>(indices.data_ptr<int64_t>(), indices.data_ptr<int64_t>() + indices.numel()), expected);
  // shard() of any dimension takes the same tokens.
  auto t = at::arange(3 * T, at::kLong).view({T, 3}).t().contiguous();  // (3, T): t[c][i] = 3 i + c
  EXPECT_TRUE(at::equal(cp.shard(t, -1, "t"), t.index_select(1, indices)));
  EXPECT_TRUE(at::equal(cp.shard(t.t(), 0, "t"), t.t().index_select(0, indices)));

  using olm::ErrorCode;
  using olm::testing::expect_error;
  const bool ring = cp.style() == ContextParallelStyle::kRingZigZag;
  const int64_t bad_length = ring ? 2 * W + W : W + 1;  // a multiple of W, not of 2W, for the ring
  expect_error([&] { cp.shard(at::zeros({2, bad_length}), 1, "input_ids"); }, ErrorCode::kInvalidArgument,
               "input_ids: length " + std::to_string(bad_length));
  expect_error([&] { cp.shard(at::zeros({2, T}), 2, "labels"); }, ErrorCode::kInvalidArgument,
               "labels: dimension 2 is out of range");
  expect_error([&] { cp.shard(at::Tensor(), 0, "labels"); }, ErrorCode::kInvalidArgument, "labels: undefined");
  expect_error([&] { cp.global_indices(bad_length); }, ErrorCode::kInvalidArgument, "seq_len");
  const auto q = at::zeros({1, 4, 8, 8});
  const auto pos = at::zeros({1, 8}, at::kLong);
  expect_error([&] { cp.attention(q, q, q.slice(2, 0, 4), pos, std::nullopt, std::nullopt); },
               ErrorCode::kInvalidArgument, "v: must have q's shape");
  expect_error([&] { cp.attention(q, q, q, pos.to(at::kInt), std::nullopt, std::nullopt); },
               ErrorCode::kInvalidArgument, "doc_positions");
  expect_error([&] { cp.attention(q, q, q, pos, int64_t{0}, std::nullopt); }, ErrorCode::kInvalidArgument,
               "window");
  expect_error([&] { cp.attention(q, q, q, pos - 1, std::nullopt, std::nullopt); }, ErrorCode::kInvalidArgument,
               "doc_positions: every token's position");
  if (ring) {
    const auto odd = at::zeros({1, 4, 7, 8});
    expect_error([&] { cp.attention(odd, odd, odd, at::zeros({1, 7}, at::kLong), std::nullopt, std::nullopt); },
                 ErrorCode::kInvalidArgument, "q: T_local (7) must be positive and even");
  } else {
    const auto odd = at::zeros({1, W + 1, 8, 8});
    expect_error([&] { cp.attention(odd, odd, odd, pos, std::nullopt, std::nullopt); }, ErrorCode::kInvalidConfig,
                 "n_heads (" + std::to_string(W + 1) + ") is not divisible by the context-parallel degree (" +
                     std::to_string(W) + ")");
  }
}

// ProcessGroup's point-to-point and all-to-all, which the two styles run on: values, the
// bytes counted, and the refusals.
void check_point_to_point_and_all_to_all(ProcessGroup& group) {
  const int64_t W = group.world_size(), r = group.rank();
  // A ring step: every rank sends to the next and receives from the previous one at once; two
  // tags keep two streams between the same ranks apart even when posted in opposite orders.
  auto mine = at::full({3}, static_cast<float>(r), at::kFloat), other = at::full({2}, 10.0f + r, at::kFloat);
  auto got = at::empty({3}), got_other = at::empty({2});
  const auto before = group.stats();
  auto send_a = group.send_async(mine, (r + 1) % W, 5), send_b = group.send_async(other, (r + 1) % W, 6);
  auto recv_b = group.recv_async(got_other, (r + W - 1) % W, 6), recv_a = group.recv_async(got, (r + W - 1) % W, 5);
  for (auto* p : {send_a.get(), send_b.get(), recv_b.get(), recv_a.get()}) p->wait();
  EXPECT_TRUE(at::equal(got, at::full({3}, static_cast<float>((r + W - 1) % W))));
  EXPECT_TRUE(at::equal(got_other, at::full({2}, 10.0f + static_cast<float>((r + W - 1) % W))));
  EXPECT_EQ(group.stats().bytes - before.bytes, (3 + 2) * 4);  // sends only
  EXPECT_EQ(group.stats().collectives - before.collectives, 4);
  // All-to-all: slice j of rank i's input (value 100 i + j) lands in slice i of rank j's output.
  auto input = (at::arange(W, at::kLong) + 100 * r).repeat_interleave(2).view({W, 2}).contiguous();
  auto output = at::empty_like(input);
  const int64_t bytes_before = group.stats().bytes;
  group.all_to_all_async(output, input)->wait();
  auto expected = (at::arange(W, at::kLong) * 100 + r).repeat_interleave(2).view({W, 2});
  EXPECT_TRUE(at::equal(output, expected)) << output;
  EXPECT_EQ(group.stats().bytes - bytes_before, (W - 1) * 2 * 8);  // all but its own slice

  using olm::ErrorCode;
  using olm::testing::expect_error;
  expect_error([&] { group.send_async(mine, r, 0); }, ErrorCode::kInvalidArgument,
               "send: peer " + std::to_string(r) + " is not another rank");
  expect_error([&] { group.recv_async(got, W, 0); }, ErrorCode::kInvalidArgument,
               "recv: peer " + std::to_string(W) + " is not another rank");
  expect_error([&] { group.send_async(at::zeros({4, 4}).t(), (r + 1) % W, 0); }, ErrorCode::kInvalidArgument,
               "send: the tensor must be defined and contiguous");
  expect_error([&] { group.all_to_all_async(at::empty({W + 1}), at::zeros({W + 1})); }, ErrorCode::kInvalidArgument,
               "all_to_all: input and output must be contiguous, of one shape and dtype, dim 0 a multiple of world_size");
}

// A peer that is gone: the receive fails naming it, instead of waiting forever.
void check_dead_peer(ProcessGroup& group) {
  if (group.rank() == 1) std::_Exit(0);  // leaves without a word (the launching test expects it)
  auto buffer = at::empty({4});
  olm::testing::expect_error([&] { group.recv_async(buffer, 1, 0)->wait(); }, olm::ErrorCode::kDistributed,
                             "recv from rank 1 failed: rank 1 stopped responding");
}

// OLM_CP_CASE: "<ring|ulysses> <attention|model|layout|dead_peer>".
TEST(ContextParallelRank, RunsCase) {
  const char* spec = std::getenv("OLM_CP_CASE");
  if (!spec) GTEST_SKIP() << "a rank of the ContextParallel tests; they launch it";
  std::istringstream in(spec);
  std::string style, kind;
  in >> style >> kind;
  olm::distributed::ProcessGroupOptions o;
  o.timeout = std::chrono::seconds(kind == "dead_peer" ? 5 : 60);
  auto group = ProcessGroup::create(o);
  auto cp = std::make_shared<ContextParallelGroup>(
      group, style == "ring" ? ContextParallelStyle::kRingZigZag : ContextParallelStyle::kUlysses);
  if (kind == "attention") {
    for (const auto& c : {AttentionCase{"causal", false, std::nullopt, std::nullopt},
                          AttentionCase{"packed documents", true, std::nullopt, std::nullopt},
                          AttentionCase{"sliding window 5", false, 5, std::nullopt},
                          AttentionCase{"documents, window 3, scale 0.9", true, 3, 0.9}})
      check_attention(*group, *cp, c);
  } else if (kind == "model") {
    check_model(*group, cp, "dense", false);
    check_model(*group, cp, "dense", true);
    check_model(*group, cp, "window", true);
    check_model(*group, cp, "ngpt", true);
  } else if (kind == "dead_peer") {
    check_dead_peer(*group);
    return;  // the group has lost a rank: no closing barrier
  } else {
    check_layout_and_refusals(*cp);
    check_point_to_point_and_all_to_all(*group);
  }
  group->shutdown();
}

// ---- the launching side ----

void run_ranks(int world, const std::string& style, const std::string& kind) {
  setenv("OLM_CP_CASE", (style + " " + kind).c_str(), 1);
  const auto children = launch(
      world, "cp_" + style + "_" + kind,
      [](const Child&) { return std::vector<std::string>{"--gtest_filter=ContextParallelRank.RunsCase", "--gtest_brief=1"}; },
      LaunchOptions{{}, 150});
  unsetenv("OLM_CP_CASE");
  for (const auto& c : children) EXPECT_TRUE(exited_ok(c)) << "rank " << c.rank << ":\n" << slurp(c.log);
}

class ContextParallel : public ::testing::TestWithParam<std::tuple<int, std::string>> {};

TEST_P(ContextParallel, AttentionMatchesOneProcessSdpaForwardAndBackward) {
  run_ranks(std::get<0>(GetParam()), std::get<1>(GetParam()), "attention");
}

TEST_P(ContextParallel, ModelLossAndGradientsMatchOneProcess) {
  run_ranks(std::get<0>(GetParam()), std::get<1>(GetParam()), "model");
}

TEST_P(ContextParallel, LayoutAndRefusals) { run_ranks(std::get<0>(GetParam()), std::get<1>(GetParam()), "layout"); }

// A group of one rank: the same contract, no communication.
TEST(ContextParallelOneRank, AttentionMatchesOneProcessSdpa) {
  run_ranks(1, "ring", "attention");
  run_ranks(1, "ulysses", "attention");
}

TEST(ContextParallelTransport, ReceiveFromADeadPeerFailsNamingIt) { run_ranks(2, "ring", "dead_peer"); }

INSTANTIATE_TEST_SUITE_P(RingAndUlysses, ContextParallel,
                         ::testing::Combine(::testing::Values(2, 4), ::testing::Values("ring", "ulysses")),
                         [](const auto& info) {
                           return std::get<1>(info.param) + "_" + std::to_string(std::get<0>(info.param));
                         });

}  // namespace
