// core/distributed/ddp.cpp: data parallelism against the single-process run of the same global
// batches, and its bucketed reduction overlapping backward.
// The ranks are child processes of this binary (`olm_dist_tests --worker ...`, dist_main.cpp).
#include <gtest/gtest.h>

#include "core/distributed/ddp.h"
#include "dist_runs.h"

namespace {

using namespace olm_dist_testing;

TEST(DataParallel, TwoRanksMatchOneProcess) { expect_matches_single_process(2); }

TEST(DataParallel, FourRanksMatchOneProcess) { expect_matches_single_process(4); }
// Activation checkpointing recomputes each block inside backward; the gradient hooks must

// still see every gradient once, and the numbers stay those of one process without it.
TEST(DataParallel, TwoRanksWithActivationCheckpointingMatchOneProcess) { expect_matches_single_process(2, "ac"); }
// MoE: the score biases move by the loads of the whole global batch on every rank.

TEST(DataParallel, TwoRanksOfMoEWithScoreBiasMatchOneProcess) { expect_matches_single_process(2, "moe"); }

// The gradient bytes per step are the parameters once (summed, float32), plus the token count
// and the two losses.
TEST(DataParallel, CommunicatesParametersOncePerStep) {
  const auto children = launch(2, "train", 60);
  ASSERT_TRUE(WIFEXITED(children[0].status) && WEXITSTATUS(children[0].status) == 0) << slurp(children[0].log);
  const TrainRun r = read_run(children[0].out);
  int64_t params = 0;
  for (auto& [name, v] : r.params) params += static_cast<int64_t>(v.size());
  for (int64_t b : r.comm_bytes) EXPECT_EQ(b, params * 4 + 8 + 8);
}

// One process in a group of one: DDP's machinery, exactly the plain numbers.
TEST(DataParallel, GroupOfOneIsExact) {
  const TrainRun r = train(group_of_one());
  const TrainRun& ref = single_process();
  for (int s = 0; s < kSteps; ++s) EXPECT_EQ(r.loss[s], ref.loss[s]) << s;
  EXPECT_EQ(r.params, ref.params);
}

// The reduction overlaps backward: with small buckets, the gradient hooks launch every bucket
// before backward returns. Without sync (an earlier micro-batch) nothing is launched and
// gradients only accumulate. A parameter backward never reaches gets a zero gradient (and,
// since buckets launch in order, holds back the buckets after it until finish()).
TEST(DataParallel, BucketsLaunchDuringBackward) {
  auto group = group_of_one();
  auto a = at::randn({64, 32}).requires_grad_(), b = at::randn({32, 32}).requires_grad_(),
       c = at::randn({32}).requires_grad_();
  olm::distributed::DataParallel ddp(group, {a, b, c}, 4096);  // one parameter per bucket
  ASSERT_EQ(ddp.num_buckets(), 3u);
  const auto x = at::randn({5, 64});
  auto loss = [&] { return (at::tanh(x.matmul(a).matmul(b)) + c).square().sum(); };
  const int64_t all_bytes = 4 * (64 * 32 + 32 * 32 + 32);
  const auto bytes = group->stats().bytes;
  ddp.set_sync(false);
  loss().backward();
  EXPECT_EQ(group->stats().bytes, bytes);
  const auto first = a.grad().clone();
  ddp.set_sync(true);
  loss().backward();
  EXPECT_EQ(group->stats().bytes, bytes + all_bytes);  // launched before backward returned
  ddp.finish();
  EXPECT_EQ(ddp.last_buckets_launched_in_backward(), 3u);
  EXPECT_EQ(group->stats().bytes, bytes + all_bytes);
  EXPECT_TRUE(at::allclose(a.grad(), 2 * first));  // two backwards accumulated; the sum over 1 rank

  auto used = at::randn({16}).requires_grad_(), unused = at::randn({8}).requires_grad_();
  olm::distributed::DataParallel ddp2(group, {used, unused}, 32);
  ddp2.set_sync(true);
  used.square().sum().backward();
  ddp2.finish();
  EXPECT_EQ(ddp2.last_buckets_launched_in_backward(), 0u);
  EXPECT_TRUE(at::allclose(used.grad(), 2 * used.detach()));
  ASSERT_TRUE(unused.grad().defined());
  EXPECT_EQ(unused.grad().abs().sum().item<float>(), 0.0f);
}

}  // namespace
