// The distributed part of the C ABI as a C caller uses it: argument errors name the argument,
// a group of one trains exactly like no group, a missing rank is named, shutdown is final.
// (Several ranks through the C ABI: tests/distributed/dist_cli_test.sh's C program.)
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;

namespace {

using olm_testing::consume;

int32_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

olm_dist_options options(int64_t rank, int64_t world) {
  olm_dist_options o;
  olm_dist_options_init(&o);
  o.rank = rank;
  o.world_size = world;
  o.master_addr = "127.0.0.1";
  o.master_port = free_port();
  o.timeout_seconds = 20;
  return o;
}

const char* kFsdp = R"(, "data_parallel": {"name": "fsdp"})";
const char* kTrain = R"({"model": {"d_model": 32, "vocab_size": 64, "n_layers": 2,
  "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 500000}},
    "feed_forward": {"hidden_size": 96, "bias": false}, "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
  "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}},
  "sequence_length": 8, "global_batch_size": 32, "rank_microbatch_size": 16, "max_steps": 3,
  "optimizer": {"name": "adamw", "lr": 0.01}})";

// One model and trainer through the C API (with `dist` attached when given), freed at the end.
struct CapiRun {
  olm_train_config* tcfg = nullptr;
  olm_config* cfg = nullptr;
  olm_model* model = nullptr;
  olm_trainer* trainer = nullptr;
  bool distributed = false;
  // data_parallel: kTrain's addition (e.g. kFsdp).
  explicit CapiRun(olm_dist* dist, const char* data_parallel = "") : distributed(dist != nullptr) {
    std::string json = kTrain;
    json.insert(json.rfind('}'), data_parallel);
    EXPECT_EQ(olm_train_config_from_json(json.data(), json.size(), &tcfg), nullptr);
    EXPECT_EQ(olm_train_config_model(tcfg, &cfg), nullptr);
    EXPECT_EQ(olm_model_create(cfg, "cpu", nullptr, &model), nullptr);
    EXPECT_EQ(olm_trainer_create(model, tcfg, &trainer), nullptr);
    if (dist) EXPECT_EQ(olm_trainer_set_dist(trainer, dist), nullptr);
  }
  ~CapiRun() {
    olm_trainer_free(trainer);
    olm_model_free(model);
    olm_config_free(cfg);
    olm_train_config_free(tcfg);
  }
  std::vector<double> steps(int from, int to) {
    std::vector<double> losses;
    for (int s = from; s < to; ++s) {
      std::vector<int64_t> ids(32);
      for (int i = 0; i < 32; ++i) ids[i] = (i * 7 + s * 13 + 3) % 64;
      const int64_t shape[] = {4, 8};
      olm_tensor* t = nullptr;
      EXPECT_EQ(olm_tensor_create(OLM_DTYPE_INT64, shape, 2, ids.data(), ids.size() * 8, &t), nullptr);
      olm_step_metrics m;
      m.struct_size = sizeof m;
      EXPECT_EQ(olm_trainer_step(trainer, t, nullptr, &m), nullptr);
      EXPECT_EQ(m.comm_bytes > 0, distributed);
      losses.push_back(m.loss);
      olm_tensor_free(t);
    }
    return losses;
  }
};

std::vector<double> train(olm_dist* dist) { return CapiRun(dist).steps(0, 3); }

TEST(CapiDist, ArgumentsAreNamed) {
  olm_dist* dist = nullptr;
  EXPECT_ERR(olm_dist_create(nullptr, nullptr), OLM_ERR_INVALID_ARGUMENT, "out");
  olm_dist_options o = options(0, 1);
  o.struct_size = 0;
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.struct_size");
  o = options(0, 1);
  o.backend = 7;
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.backend");
  o = options(0, 1);
  o.master_port = 70000;
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "master_port");
  o = options(0, 1);
  o.timeout_seconds = 0;
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "timeout_seconds");
  o = options(3, 2);
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "rank 3 is outside [0, world_size=2)");
  o = options(0, 1);
  o.backend = OLM_DIST_NCCL;
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_DEVICE_UNAVAILABLE, "nccl");
  EXPECT_EQ(dist, nullptr);  // untouched on error
  olm_dist_info info;
  info.struct_size = sizeof info;
  EXPECT_ERR(olm_dist_info_get(nullptr, &info), OLM_ERR_INVALID_ARGUMENT, "dist");
  EXPECT_ERR(olm_dist_barrier(nullptr), OLM_ERR_INVALID_ARGUMENT, "dist");
  EXPECT_ERR(olm_dist_shutdown(nullptr), OLM_ERR_INVALID_ARGUMENT, "dist");
  EXPECT_ERR(olm_dist_all_reduce_sum(nullptr, nullptr), OLM_ERR_INVALID_ARGUMENT, "dist");
  EXPECT_ERR(olm_trainer_set_dist(nullptr, nullptr), OLM_ERR_INVALID_ARGUMENT, "trainer");
  olm_trainer_layout layout;
  layout.struct_size = sizeof layout;
  EXPECT_ERR(olm_trainer_layout_get(nullptr, &layout), OLM_ERR_INVALID_ARGUMENT, "trainer");
  olm_dist_free(nullptr);
  olm_dist_options_init_sized(nullptr, sizeof(olm_dist_options));
}

// With one rank, every collective is the identity: DDP must give exactly the plain numbers.
TEST(CapiDist, GroupOfOneTrainsExactlyLikeNoGroup) {
  olm_dist* dist = nullptr;
  olm_dist_options o = options(0, 1);
  ASSERT_OK(olm_dist_create(&o, &dist));
  olm_dist_info info;
  info.struct_size = sizeof info;
  ASSERT_OK(olm_dist_info_get(dist, &info));
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.local_world_size, 1);
  EXPECT_EQ(info.backend, OLM_DIST_GLOO);
  EXPECT_ERR(olm_dist_all_reduce_sum(dist, nullptr), OLM_ERR_INVALID_ARGUMENT, "tensor");
  const float values[] = {1.5f, -2.0f};
  const int64_t shape[] = {2};
  olm_tensor* t = nullptr;
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_FLOAT32, shape, 1, values, sizeof values, &t));
  ASSERT_OK(olm_dist_all_reduce_sum(dist, t));
  float back[2];
  ASSERT_OK(olm_tensor_copy_to_host(t, back, sizeof back));
  EXPECT_EQ(back[0], 1.5f);
  EXPECT_EQ(back[1], -2.0f);
  olm_tensor_free(t);
  const int32_t ints[] = {1, 2};
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT32, shape, 1, ints, sizeof ints, &t));
  EXPECT_ERR(olm_dist_all_reduce_sum(dist, t), OLM_ERR_INVALID_ARGUMENT, "float32 or int64");
  olm_tensor_free(t);

  EXPECT_EQ(train(dist), train(nullptr));
  ASSERT_OK(olm_dist_info_get(dist, &info));
  EXPECT_GT(info.bytes, 0);
  EXPECT_GT(info.collectives, 0);
  ASSERT_OK(olm_dist_barrier(dist));
  ASSERT_OK(olm_dist_shutdown(dist));
  ASSERT_OK(olm_dist_shutdown(dist));  // a no-op the second time
  EXPECT_ERR(olm_dist_barrier(dist), OLM_ERR_DISTRIBUTED, "shut down");
  olm_dist_free(dist);
}

// The layout of a trainer alone and in a group of one: all of the batch, no TP or CP group;
// a tensor-parallel degree the world cannot hold is refused naming both fields, leaving the
// trainer alone.
TEST(CapiDist, LayoutReportsTheMeshAndRefusesDegreesTheWorldCannotHold) {
  CapiRun alone(nullptr);
  olm_trainer_layout layout;
  layout.struct_size = sizeof layout;
  EXPECT_ERR(olm_trainer_layout_get(alone.trainer, nullptr), OLM_ERR_INVALID_ARGUMENT, "out");
  ASSERT_OK(olm_trainer_layout_get(alone.trainer, &layout));
  EXPECT_EQ(layout.struct_size, sizeof layout);
  EXPECT_EQ(std::vector<int64_t>({layout.data_parallel_rank, layout.data_parallel_size, layout.tensor_parallel_rank,
                                  layout.tensor_parallel_size, layout.context_parallel_rank,
                                  layout.context_parallel_size}),
            std::vector<int64_t>({0, 1, 0, 1, 0, 1}));
  olm_dist* dist = nullptr;
  olm_dist_options o = options(0, 1);
  ASSERT_OK(olm_dist_create(&o, &dist));
  {
    CapiRun tp(nullptr, R"(, "tensor_parallel": {"degree": 2})");
    EXPECT_ERR(olm_trainer_set_dist(tp.trainer, dist), OLM_ERR_INVALID_CONFIG,
               "tensor_parallel.degree x context_parallel.degree = 2 x 1 does not divide world_size 1");
    ASSERT_OK(olm_trainer_layout_get(tp.trainer, &layout));
    EXPECT_EQ(layout.data_parallel_size, 1);
    EXPECT_EQ(layout.tensor_parallel_size, 1);
  }
  {
    CapiRun one(dist);
    ASSERT_OK(olm_trainer_layout_get(one.trainer, &layout));
    EXPECT_EQ(layout.data_parallel_rank, 0);
    EXPECT_EQ(layout.data_parallel_size, 1);
    EXPECT_EQ(layout.tensor_parallel_size, 1);
    EXPECT_EQ(layout.context_parallel_size, 1);
  }
  olm_dist_free(dist);
}

// FSDP through the C ABI: olm_trainer_save_checkpoint under a group writes the sharded
// checkpoint (no longer refused), and an FSDP trainer or a plain one resumes from it with the
// uninterrupted run's losses (a group of one: exactly).
TEST(CapiDist, FsdpCheckpointSavesAndResumes) {
  const std::string folder = olm_testing::temp_dir("capi_fsdp_ckpt");
  olm_dist* dist = nullptr;
  olm_dist_options o = options(0, 1);
  ASSERT_OK(olm_dist_create(&o, &dist));
  std::vector<double> after;
  std::string dir;
  {
    CapiRun run(dist, kFsdp);
    run.steps(0, 2);
    olm_buffer* path = nullptr;
    ASSERT_OK(olm_trainer_save_checkpoint(run.trainer, folder.c_str(), &path));
    dir.assign(reinterpret_cast<const char*>(olm_buffer_data(path)), olm_buffer_size(path));
    olm_buffer_free(path);
    after = run.steps(2, 4);
  }
  EXPECT_EQ(access((dir + "/rank0.safetensors").c_str(), F_OK), 0) << dir;
  for (olm_dist* group : {dist, static_cast<olm_dist*>(nullptr)}) {
    CapiRun resumed(group, kFsdp);
    ASSERT_OK(olm_trainer_load_checkpoint(resumed.trainer, dir.c_str()));
    const auto losses = resumed.steps(2, 4);
    ASSERT_EQ(losses.size(), after.size());
    for (size_t i = 0; i < losses.size(); ++i)
      EXPECT_NEAR(losses[i], after[i], 1e-6 * std::abs(after[i])) << (group ? "FSDP" : "no group") << " step " << i + 3;
  }
  olm_dist_free(dist);
}

TEST(CapiDist, MissingRankIsNamed) {
  olm_dist* dist = nullptr;
  olm_dist_options o = options(0, 2);
  o.timeout_seconds = 1;
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_DISTRIBUTED, "rank 1 of world_size 2 never arrived");
  EXPECT_EQ(dist, nullptr);
}

}  // namespace

// ---- Issue #12: bad input at the C boundary and in process groups ----

// Device strings and rank ranges are checked before any rendezvous, naming the field.
TEST(CapiDist, Issue12DeviceAndRanksAreValidated) {
  olm_dist* dist = nullptr;
  for (const char* device : {"gpu", "cuda:x", "", "cuda:-1", "cuda:12345", "cuda:", "cpu0", "CUDA"}) {
    SCOPED_TRACE(device);
    olm_dist_options o = options(0, 1);
    o.device = device;
    EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.device");
  }
  olm_dist_options o = options(0, (int64_t{1} << 20) + 1);
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.world_size");
  o = options(0, INT64_MAX);
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.world_size");
  o = options(2, 2);
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.rank: rank 2 is outside [0, world_size=2)");
  o = options(INT64_MAX, -1);
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.rank");
  o = options(0, 1);
  o.local_rank = 3;
  o.local_world_size = 2;
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.local_rank");
  o = options(0, 1);
  o.local_world_size = (int64_t{1} << 20) + 1;
  EXPECT_ERR(olm_dist_create(&o, &dist), OLM_ERR_INVALID_ARGUMENT, "options.local_world_size");
  EXPECT_EQ(dist, nullptr);
  // The valid spellings pass validation (a group of one on the CPU).
  o = options(0, 1);
  o.device = "cpu";
  ASSERT_OK(olm_dist_create(&o, &dist));
  olm_dist_free(dist);
}

// A rank whose rank 0 never comes fails within its timeout plus the granularity of its
// connection attempts (at most 0.1 s each, then a 50 ms pause; 0.5 s of slack covers a loaded
// machine), with one line naming what it waited for.
TEST(CapiDist, Issue12TimeoutHoldsWhenRankZeroNeverComes) {
  olm_dist* dist = nullptr;
  olm_dist_options o = options(1, 2);
  o.timeout_seconds = 3;
  const auto t0 = std::chrono::steady_clock::now();
  int32_t code = 0;
  const std::string message = consume(olm_dist_create(&o, &dist), &code);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code, OLM_ERR_DISTRIBUTED) << message;
  EXPECT_THAT(message, HasSubstr("rank 1 cannot reach the rendezvous store"));
  EXPECT_THAT(message, HasSubstr("rank 0, which never arrived"));
  EXPECT_THAT(message, HasSubstr("within 3.0 s"));
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(message.find("Exception raised from"), std::string::npos) << message;
  EXPECT_GE(seconds, 2.9);
  EXPECT_LT(seconds, 3.5) << message;
  EXPECT_EQ(dist, nullptr);
}

// The whole rendezvous is bounded by one deadline whatever the world size: rank 0 of the
// largest world waits its 2 s, names the first missing ranks and counts the rest.
TEST(CapiDist, Issue12HugeWorldStillKeepsTheTimeout) {
  olm_dist* dist = nullptr;
  olm_dist_options o = options(0, int64_t{1} << 20);
  o.timeout_seconds = 2;
  const auto t0 = std::chrono::steady_clock::now();
  int32_t code = 0;
  const std::string message = consume(olm_dist_create(&o, &dist), &code);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code, OLM_ERR_DISTRIBUTED) << message;
  EXPECT_THAT(message, HasSubstr("ranks 1, 2, 3"));
  EXPECT_THAT(message, HasSubstr("and 1048559 more of world_size 1048576 never arrived"));
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_LT(seconds, 3.0) << message;
  EXPECT_EQ(dist, nullptr);
}
