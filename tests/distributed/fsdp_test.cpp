// core/distributed/fsdp.cpp: fully and hybrid sharded data parallelism against the
// single-process run of the same global batches, memory per rank, mixed precision, the mesh.
// The ranks are child processes of this binary (`olm_dist_tests --worker ...`, dist_main.cpp).
#include <gtest/gtest.h>

#include "core/distributed/fsdp.h"
#include "dist_runs.h"

namespace {

using namespace olm_dist_testing;

// FSDP: every rank holds half (a quarter) of each block's parameters and their AdamW state,
// gathers each block around its forward and backward and reduce-scatters its gradients; the
// losses and the final (gathered) weights are those of one process with the whole batch.
TEST(FullyShardedDataParallel, TwoRanksMatchOneProcess) { expect_matches_single_process(2, "fsdp"); }

TEST(FullyShardedDataParallel, FourRanksMatchOneProcess) { expect_matches_single_process(4, "fsdp"); }
// Prefetching starts the next block's all-gather (the previous one's in backward) while a block

// computes: the same numbers, with one more block gathered at the peak. Every other block
// checkpointed, so prefetches and recomputations interleave.
TEST(FullyShardedDataParallel, TwoRanksWithPrefetchMatchOneProcess) { expect_matches_single_process(2, "fsdp_prefetch"); }
// Checkpointed blocks recompute inside backward, between the pre-backward gather and the

// reduce-scatter.
TEST(FullyShardedDataParallel, TwoRanksWithActivationCheckpointingMatchOneProcess) {
  expect_matches_single_process(2, "fsdp_ac");
}

// What a rank holds: parameter shards and AdamW state fall to 1/world_size of the unsharded
// amounts (plus at most world_size - 1 padding elements per unit); while a step runs, the
// root unit and one block are gathered at a time.
TEST(FullyShardedDataParallel, MemoryFallsWithWorldSize) {
  int64_t unsharded = 0, unsharded_optim = 0;
  for (int world : {1, 2, 4}) {
    const auto children = launch(world, "fsdp", 60);
    std::vector<TrainRun> runs;
    for (auto& c : children) {
      ASSERT_TRUE(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0) << slurp(c.log);
      runs.push_back(read_run(c.out));
    }
    const TrainRun& r = runs[0];
    if (world == 1) unsharded = r.shard_bytes, unsharded_optim = r.optim_bytes;
    EXPECT_EQ(r.unsharded_bytes, unsharded);
    const int64_t units = 3;  // 2 blocks and the root
    const int64_t pad = units * (world - 1) * 4;
    for (const TrainRun& q : runs) {
      EXPECT_GE(q.shard_bytes * world, unsharded);
      EXPECT_LE(q.shard_bytes * world, unsharded + pad);
      // exp_avg and exp_avg_sq per shard element, plus a step counter per piece.
      EXPECT_LE(q.optim_bytes, 2 * (unsharded / world + pad) + 4 * 64);
      EXPECT_GT(q.peak_gathered_bytes, 0);
      EXPECT_LT(q.peak_gathered_bytes, unsharded + pad);
    }
    std::printf("[ fsdp ] world %d: rank 0 holds %ld parameter bytes (%.3f of %ld unsharded), %ld optimizer-state "
                "bytes (%.3f of %ld), peak gathered %ld bytes; %ld bytes communicated per step\n",
                world, static_cast<long>(r.shard_bytes), static_cast<double>(r.shard_bytes) / unsharded,
                static_cast<long>(unsharded), static_cast<long>(r.optim_bytes),
                static_cast<double>(r.optim_bytes) / unsharded_optim, static_cast<long>(unsharded_optim),
                static_cast<long>(r.peak_gathered_bytes), static_cast<long>(r.comm_bytes.back()));
  }
}

// The collectives themselves: all-gather places rank r's input at r * n; reduce-scatter hands
// rank r the sum of slice r. A group of one, and parameters a unit covers in order.
TEST(FullyShardedDataParallel, GroupOfOneIsExact) {
  const TrainRun r = train(group_of_one(), -1, SIGKILL, R"(, "data_parallel": {"name": "fsdp"})");
  const TrainRun& ref = single_process();
  for (int s = 0; s < kSteps; ++s) EXPECT_NEAR(r.loss[s], ref.loss[s], 1e-6 * ref.loss[s]) << s;
  EXPECT_EQ(r.shard_bytes, r.unsharded_bytes);
}

TEST(FullyShardedDataParallel, ConfigIsCheckedAndDetachingGathers) {
  olm::testing::expect_error([&] { train_config(R"(, "data_parallel": {"name": "zero"})"); },
                             olm::ErrorCode::kInvalidConfig, "data_parallel.name");
  olm::testing::expect_error([&] { train_config(R"(, "data_parallel": {"name": "fsdp", "reduce_dtype": "float16"})"); },
                             olm::ErrorCode::kInvalidConfig, "data_parallel.reduce_dtype");
  olm::testing::expect_error([&] { train_config(R"(, "data_parallel": {"param_dtype": "bfloat16"})"); },
                             olm::ErrorCode::kInvalidConfig, "data_parallel.param_dtype");
  olm::testing::expect_error([&] { train_config(R"(, "data_parallel": {"name": "fsdp", "num_replicas": 2})"); },
                             olm::ErrorCode::kInvalidConfig, "hsdp");
  olm::testing::expect_error([&] { train_config(R"(, "data_parallel": {"name": "fsdp", "prefetch_factor": -1})"); },
                             olm::ErrorCode::kInvalidConfig, "data_parallel.prefetch_factor must be >= 0");
  olm::testing::expect_error([&] { train_config(R"(, "data_parallel": {"name": "ddp", "prefetch_factor": 1})"); },
                             olm::ErrorCode::kInvalidConfig, "data_parallel.prefetch_factor applies to");
  auto model = std::make_shared<olm::Model>(model_config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer trainer(model, train_config(R"(, "data_parallel": {"name": "fsdp"})"));
  trainer.set_process_group(group_of_one());
  EXPECT_NE(trainer.fsdp(), nullptr);
  // Detaching gathers the parameters back and leaves an ordinary trainer.
  trainer.set_process_group(nullptr);
  EXPECT_EQ(trainer.fsdp(), nullptr);
  EXPECT_TRUE(at::isfinite(model->module().named_parameters()[0].tensor->sum()).item<bool>());
}

// MoE under FSDP: the score biases as with DDP; and the routers' losses, whose gradients reach
// a block's router through no block output, find the block gathered (against DDP at the same
// world size: the load-balancing loss is a product of per-rank statistics, so one process
// differs by design).
TEST(FullyShardedDataParallel, TwoRanksOfMoEWithScoreBiasMatchOneProcess) {
  expect_matches_single_process(2, "fsdp_moe");
}

TEST(FullyShardedDataParallel, TwoRanksOfMoEWithRouterLossesMatchDataParallel) {
  std::vector<TrainRun> ddp, fsdp;
  for (auto [mode, runs] : {std::pair{"moe_lb", &ddp}, {"fsdp_moe_lb", &fsdp}})
    for (auto& c : launch(2, mode, 60)) {
      ASSERT_TRUE(exited_ok(c)) << slurp(c.log);
      runs->push_back(read_run(c.out));
    }
  double worst_loss = 0, worst_weight = 0;
  for (size_t r = 0; r < 2; ++r) {
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(fsdp[r].loss[s], ddp[r].loss[s], 1e-5 * ddp[r].loss[s]) << "step " << s + 1;
      worst_loss = std::max(worst_loss, std::abs(fsdp[r].loss[s] - ddp[r].loss[s]) / ddp[r].loss[s]);
    }
    for (auto& [name, v] : ddp[r].params)
      for (size_t i = 0; i < v.size(); ++i)
        worst_weight = std::max(worst_weight, static_cast<double>(std::abs(fsdp[r].params.at(name)[i] - v[i])));
  }
  EXPECT_LT(worst_weight, weight_drift_bound("fsdp_moe_lb"));
  std::printf("[ fsdp ] MoE with router losses, world 2: against DDP, losses within %.2e relative, weights %.2e\n",
              worst_loss, worst_weight);
}

// nGPT under FSDP: after each step the matrices are normalized whole, on a gathered float32
// copy, and each rank keeps its slice.
TEST(FullyShardedDataParallel, TwoRanksOfNormalizedTransformerMatchOneProcess) {
  expect_matches_single_process(2, "fsdp_ngpt");
}

// HSDP: 2 replicas of 2 ranks; each replica shards the parameters over its 2 ranks, and the
// shard gradients are summed over the replicas. Still one process's numbers.
TEST(HybridShardedDataParallel, TwoReplicasOfTwoRanksMatchOneProcess) { expect_matches_single_process(4, "hsdp"); }

TEST(HybridShardedDataParallel, MeshIsCheckedAndLaidOutRowMajor) {
  auto world = group_of_one();
  olm::testing::expect_error([&] { olm::distributed::DeviceMesh::build(world, {{"dp_replicate", 2}, {"dp_shard", 1}}); },
                             olm::ErrorCode::kInvalidConfig,
                             "dp_replicate (2) x dp_shard (1) is 2 ranks, not world_size 1");
  olm::testing::expect_error([&] { olm::distributed::DeviceMesh::build(world, {{"dp", 1}, {"dp", 1}}); },
                             olm::ErrorCode::kInvalidArgument, "dp is named twice");
  olm::testing::expect_error([&] { world->new_subgroup("dp_shard/0", {0, 0}); }, olm::ErrorCode::kInvalidArgument,
                             "listed twice");
  olm::testing::expect_error([&] { world->new_subgroup("dp_shard/0", {1}); }, olm::ErrorCode::kInvalidArgument,
                             "outside [0, world_size=1)");
  const auto mesh = olm::distributed::DeviceMesh::build(world, {{"dp_replicate", 1}, {"dp_shard", 1}});
  EXPECT_EQ(mesh.group("dp_shard")->world_size(), 1);
  EXPECT_EQ(mesh.group("dp_shard")->mesh()[0].name, "dp_shard");
  EXPECT_EQ(mesh.coordinate("dp_replicate"), 0);
  olm::testing::expect_error([&] { mesh.group("tp"); }, olm::ErrorCode::kInvalidArgument,
                             "no dimension tp (it has dp_replicate, dp_shard)");
  auto t = at::ones({3});
  mesh.group("dp_replicate")->all_reduce_sum({t});
  EXPECT_EQ(t.sum().item<float>(), 3.0f);
  // A trainer whose hsdp layout does not fit the world names the config fields.
  auto model = std::make_shared<olm::Model>(model_config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer trainer(model, train_config(mode_setup("hsdp").extra));
  olm::testing::expect_error([&] { trainer.set_process_group(world); }, olm::ErrorCode::kInvalidConfig,
                             "hsdp needs num_replicas x shard_degree = world_size 1, got 2 x 0");
}

// Four ranks as 2 x 2: rank r sits at (r / 2, r % 2); its dp_shard group is its row, its
// dp_replicate group its column, and a sum over either adds exactly those ranks.
TEST(HybridShardedDataParallel, MeshGroupsAreRowsAndColumns) {
  for (auto& c : launch(4, "mesh", 60)) {
    ASSERT_TRUE(exited_ok(c)) << slurp(c.log);
    const int r = c.rank;
    EXPECT_EQ(slurp(c.out), "coords " + std::to_string(r / 2) + " " + std::to_string(r % 2) + " row " +
                                std::to_string(1 << (r / 2 * 2) | 1 << (r / 2 * 2 + 1)) + " column " +
                                std::to_string(1 << (r % 2) | 1 << (r % 2 + 2)) + "\n");
  }
}

// bfloat16 parameters: every rank computes with bfloat16 copies of its float32 shards and
// reduces float32 gradients. Against the same run on a group of one: each rank's micro-batches
// are one process's, in bfloat16 alike, so only the float32 sums differ in order.
TEST(FullyShardedDataParallel, BFloat16ParametersWithFloat32Reduction) {
  const TrainRun one = train(group_of_one(), -1, SIGKILL, mode_setup("fsdp_bf16").extra);
  const TrainRun& f32 = single_process();
  const auto children = launch(2, "fsdp_bf16", 60);
  double worst_loss = 0, worst_f32 = 0;
  for (auto& c : children) {
    ASSERT_TRUE(exited_ok(c)) << slurp(c.log);
    const TrainRun r = read_run(c.out);
    for (int s = 0; s < kSteps; ++s) {
      worst_loss = std::max(worst_loss, std::abs(r.loss[s] - one.loss[s]) / one.loss[s]);
      worst_f32 = std::max(worst_f32, std::abs(r.loss[s] - f32.loss[s]) / f32.loss[s]);
    }
    // Gathered units are bfloat16: half the bytes of the float32 shards' unsharded size.
    EXPECT_LE(r.peak_gathered_bytes * 2, r.unsharded_bytes + 64);
    EXPECT_GE(r.shard_bytes * 2, one.shard_bytes);
    EXPECT_LE(r.shard_bytes * 2, one.shard_bytes + 3 * 4);  // a padding element per unit at most
  }
  std::printf("[ fsdp ] bfloat16 parameters, world 2: losses within %.2e relative of world 1, %.2e of float32\n",
              worst_loss, worst_f32);
  // A float32 master weight that differs in its last bits can round to the neighbouring
  // bfloat16 value, one ulp = 2^-8 relative: the losses stay within that (seen: 1.2e-3).
  EXPECT_LT(worst_loss, 4e-3);
  // bfloat16 against float32 compute: a few ulps of bfloat16 (seen: 1.7e-2).
  EXPECT_LT(worst_f32, 5e-2);
  EXPECT_LT(one.loss.back(), one.loss.front() * 0.95);

  // reduce_dtype bfloat16 as well: half the reduce-scatter bytes, losses still bfloat16's.
  const auto fp32_reduce = read_run(children[0].out);
  for (auto& c : launch(2, "fsdp_bf16_reduce", 60)) {
    ASSERT_TRUE(exited_ok(c)) << slurp(c.log);
    const TrainRun r = read_run(c.out);
    for (int s = 0; s < kSteps; ++s) EXPECT_NEAR(r.loss[s], f32.loss[s], 5e-2 * f32.loss[s]) << s;
    EXPECT_LT(r.comm_bytes.back(), fp32_reduce.comm_bytes.back());
    if (c.rank == 0)
      std::printf("[ fsdp ] bfloat16 parameters, world 2: %ld bytes per rank per step with float32 reduction, %ld "
                  "with bfloat16\n",
                  static_cast<long>(fp32_reduce.comm_bytes.back()), static_cast<long>(r.comm_bytes.back()));
  }
}

// Detaching a bfloat16 FSDP trainer hands back float32 parameters holding the master weights
// (not the bfloat16 copies the steps computed with).
TEST(FullyShardedDataParallel, DetachingRestoresFloat32MasterWeights) {
  auto model = std::make_shared<olm::Model>(model_config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer trainer(model, train_config(mode_setup("fsdp_bf16").extra));
  trainer.set_process_group(group_of_one());
  olm::data::DataLoader loader(dataset(), 8, 3, 0, 1);
  auto b = loader.next();
  trainer.train_batch(b.input_ids, b.labels);
  // A group of one: each shard piece is a whole parameter.
  std::map<std::string, at::Tensor> master;
  for (const auto& p : trainer.fsdp()->shard_parameters()) master[p.name] = p.tensor->detach().clone();
  trainer.set_process_group(nullptr);
  std::vector<at::Tensor> flat;
  for (auto& p : model->module().named_parameters()) {
    EXPECT_EQ(p.tensor->scalar_type(), at::kFloat) << p.name;
    EXPECT_TRUE(at::equal(p.tensor->detach().reshape(-1), master.at(p.name))) << p.name;
    flat.push_back(p.tensor->detach().reshape(-1));
  }
  EXPECT_FALSE(at::equal(at::cat(flat), at::cat(flat).to(at::kBFloat16).to(at::kFloat)));
  b = loader.next();
  EXPECT_TRUE(std::isfinite(trainer.train_batch(b.input_ids, b.labels).loss));
}

// The counters are the storage: between steps a block's parameters own no bytes (the flat
// buffer is resized to zero, not merely forgotten), the root's neither; gathering gives them
// back their values.
TEST(FullyShardedDataParallel, BlocksHoldNoStorageBetweenSteps) {
  auto model = std::make_shared<olm::Model>(model_config(), "cpu", olm::ModelOptions{});
  olm::train::Trainer trainer(model, train_config(R"(, "data_parallel": {"name": "fsdp"})"));
  trainer.set_process_group(group_of_one());
  olm::data::DataLoader loader(dataset(), 8, 3, 0, 1);
  auto b = loader.next();
  const auto m = trainer.train_batch(b.input_ids, b.labels);
  EXPECT_GT(m.peak_gathered_bytes, 0);
  for (auto& p : model->module().named_parameters())
    EXPECT_EQ(p.tensor->storage().nbytes(), 0u) << p.name;
  EXPECT_EQ(trainer.fsdp()->memory().gathered_bytes, 0);
  // Reading or writing the weights now would touch freed memory: refused, naming the reason.
  for (const auto& attempt : std::vector<std::function<void()>>{
           [&] { model->forward(b.input_ids, 0); },
           [&] { model->save_safetensors(olm::testing::temp_dir("fsdp_refused") + "/w.safetensors"); },
           [&] { model->load_safetensors("/nonexistent.safetensors"); }}) {
    try {
      attempt();
      ADD_FAILURE() << "a sharded model was read";
    } catch (const olm::Error& e) {
      EXPECT_EQ(e.code(), olm::ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("sharded across ranks"), std::string::npos) << e.what();
    }
  }
  trainer.gather_parameters();
  EXPECT_NO_THROW(model->forward(b.input_ids, 0));
  for (auto& p : model->module().named_parameters()) {
    EXPECT_GT(p.tensor->storage().nbytes(), 0u) << p.name;
    EXPECT_TRUE(at::isfinite(*p.tensor).all().item<bool>()) << p.name;
  }
  EXPECT_EQ(trainer.fsdp()->memory().gathered_bytes, trainer.fsdp()->memory().shard_bytes);
}

}  // namespace
