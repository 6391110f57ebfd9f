// Training on OLMo-core's device mesh (dp_replicate, dp_shard, cp, tp): tensor parallelism,
// context parallelism (ring with the zig-zag load balancer, Ulysses) and their compositions
// with DDP and FSDP, each 20 AdamW steps with clipping and z-loss on the same global batches as
// one process (expect_matches_single_process: losses within 1e-5 relative at every step, final
// weights within AdamW's drift bound, the evaluation loss within 1e-5).
#include <gtest/gtest.h>

#include "dist_runs.h"

namespace {

using namespace olm_dist_testing;

TEST(TensorParallelTraining, TwoRanksMatchOneProcess) { expect_matches_single_process(2, "tp2"); }

// Four ranks: the 2 key/value heads no longer split over the degree and are replicated.
TEST(TensorParallelTraining, FourRanksMatchOneProcess) { expect_matches_single_process(4, "tp4"); }

TEST(TensorParallelTraining, TwoRanksWithActivationCheckpointingMatchOneProcess) {
  expect_matches_single_process(2, "tp2_ac");
}

TEST(ContextParallelTraining, RingOfTwoMatchesOneProcess) { expect_matches_single_process(2, "cp2_ring"); }

TEST(ContextParallelTraining, RingOfFourMatchesOneProcess) { expect_matches_single_process(4, "cp4_ring"); }

// Packed documents (3, 2 and 3 tokens per row) cross the zig-zag chunks' boundaries.
TEST(ContextParallelTraining, RingOfTwoWithPackedDocumentsMatchesOneProcess) {
  expect_matches_single_process(2, "cp2_ring_docs");
}

TEST(ContextParallelTraining, RingOfFourWithPackedDocumentsMatchesOneProcess) {
  expect_matches_single_process(4, "cp4_ring_docs");
}

TEST(ContextParallelTraining, UlyssesOfTwoMatchesOneProcess) { expect_matches_single_process(2, "cp2_uly"); }

TEST(ContextParallelTraining, UlyssesOfTwoWithPackedDocumentsMatchesOneProcess) {
  expect_matches_single_process(2, "cp2_uly_docs");
}

TEST(ContextParallelTraining, RingWithActivationCheckpointingMatchesOneProcess) {
  expect_matches_single_process(2, "cp2_ring_ac");
}

TEST(DeviceMeshTraining, FsdpTwoByTensorParallelTwoMatchesOneProcess) {
  expect_matches_single_process(4, "fsdp2_tp2");
}

TEST(DeviceMeshTraining, FsdpTwoByContextParallelTwoMatchesOneProcess) {
  expect_matches_single_process(4, "fsdp2_cp2");
}

TEST(DeviceMeshTraining, DataParallelTwoByRingTwoWithDocumentsMatchesOneProcess) {
  expect_matches_single_process(4, "ddp2_cp2_docs");
}

TEST(DeviceMeshTraining, TensorParallelTwoByContextParallelTwoMatchesOneProcess) {
  expect_matches_single_process(4, "tp2_cp2");
}

// What a TP rank holds: exactly 1/degree of every split matrix (and of its AdamW state), the
// replicated parameters whole.
TEST(TensorParallelTraining, SplitParametersAndOptimizerStateFallWithTheDegree) {
  int64_t split_full = 0, replicated = 0;
  {
    olm::Model model(model_config("tp"), "cpu", olm::ModelOptions{});
    auto& module = model.module();
    for (auto& p : module.named_parameters()) {
      // The norms between the sublayers run on sequence shards with whole weights; QK-norm over
      // the whole projection splits with it.
      const bool between = p.name.find("attention_norm") != std::string::npos ||
                           p.name.find("feed_forward_norm") != std::string::npos || p.name == "lm_head.norm.weight";
      (between ? replicated : split_full) += p.tensor->numel() * 4;
    }
  }
  for (int world : {2, 4}) {
    const auto children = launch(world, world == 2 ? "tp2" : "tp4", 60);
    std::vector<TrainRun> runs;
    for (auto& c : children) {
      ASSERT_TRUE(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0) << slurp(c.log);
      runs.push_back(read_run(c.out));
    }
    for (const TrainRun& r : runs) {
      // At degree 4 the 2 key/value heads are replicated: w_k, w_v (16 x 32) and k_norm (16) of
      // both blocks count as replicated.
      const int64_t kv_bytes = world == 4 ? 2 * (2 * 16 * 32 + 16) * 4 : 0;
      EXPECT_EQ(r.tp_replicated_bytes, replicated + kv_bytes);
      EXPECT_EQ(r.tp_split_bytes * world, split_full - kv_bytes);
      // AdamW: exp_avg and exp_avg_sq per element, plus a step counter per parameter.
      EXPECT_GE(r.tp_split_optim_bytes, 2 * r.tp_split_bytes);
      EXPECT_LE(r.tp_split_optim_bytes, 2 * r.tp_split_bytes + 8 * 32);
    }
    std::printf("[ tp ] degree %d: rank 0 holds %ld bytes of split parameters (%.3f of %ld), %ld replicated; "
                "optimizer state %ld bytes for the split ones; %ld bytes communicated per step\n",
                world, static_cast<long>(runs[0].tp_split_bytes),
                static_cast<double>(runs[0].tp_split_bytes) / static_cast<double>(split_full),
                static_cast<long>(split_full), static_cast<long>(runs[0].tp_replicated_bytes),
                static_cast<long>(runs[0].tp_split_optim_bytes), static_cast<long>(runs[0].comm_bytes.back()));
  }
}

// The layout is checked against the world before any collective: one process cannot hold a
// degree of 2.
TEST(DeviceMeshTraining, DegreesThatDoNotDivideTheWorldAreRefused) {
  auto model = std::make_shared<olm::Model>(model_config("tp"), "cpu", olm::ModelOptions{});
  olm::train::Trainer trainer(model, train_config(R"(, "tensor_parallel": {"degree": 2})"));
  try {
    trainer.set_process_group(group_of_one());
    FAIL() << "accepted";
  } catch (const olm::Error& e) {
    EXPECT_EQ(e.code(), olm::ErrorCode::kInvalidConfig);
    EXPECT_NE(std::string(e.what()).find("tensor_parallel.degree x context_parallel.degree = 2 x 1 does not divide "
                                         "world_size 1"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
