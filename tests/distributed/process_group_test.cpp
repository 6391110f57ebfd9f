// core/distributed/process_group.cpp: c10d process groups over loopback, their options from
// the caller and the environment, dead, stuck and missing ranks named, NCCL refused or used.
// The ranks are child processes of this binary (`olm_dist_tests --worker ...`, dist_main.cpp).
#include <gtest/gtest.h>

#include "core/distributed/process_group.h"
#include "dist_runs.h"

namespace {

using namespace olm_dist_testing;

// A rank killed mid-training makes the survivor fail, naming it, well within the timeout.
TEST(ProcessGroup, KilledRankIsNamedBySurvivor) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto children = launch(2, "die", 10, {}, 60);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(WIFSIGNALED(children[1].status)) << "rank 1 should have killed itself";
  ASSERT_TRUE(WIFEXITED(children[0].status)) << slurp(children[0].log);
  EXPECT_EQ(WEXITSTATUS(children[0].status), 3) << slurp(children[0].log);
  const auto log = slurp(children[0].log);
  EXPECT_NE(log.find("rank 1 stopped responding"), std::string::npos) << log;
  EXPECT_LT(seconds, 30);
}

// A rank that hangs (stopped, its connections open) makes the survivor fail once the
// collective timeout has passed, naming it, instead of waiting forever.
TEST(ProcessGroup, StuckRankIsNamedAfterTimeout) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto children = launch(2, "stop", 3, {}, 60, /*end_with_rank0=*/true);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(WIFEXITED(children[0].status)) << slurp(children[0].log);
  EXPECT_EQ(WEXITSTATUS(children[0].status), 3) << slurp(children[0].log);
  const auto log = slurp(children[0].log);
  EXPECT_NE(log.find("rank 1 stopped responding"), std::string::npos) << log;
  EXPECT_LT(seconds, 30);
}

// A rank that never starts: the others fail after the timeout, naming it.
TEST(ProcessGroup, MissingRankIsNamedAfterTimeout) {
  olm::distributed::ProcessGroupOptions o;
  o.rank = 0;
  o.world_size = 3;
  o.master_addr = "127.0.0.1";
  o.master_port = free_port();
  o.timeout = std::chrono::milliseconds(1500);
  const auto t0 = std::chrono::steady_clock::now();
  olm::testing::expect_error([&] { olm::distributed::ProcessGroup::create(o); }, olm::ErrorCode::kDistributed,
                             "ranks 1, 2 of world_size 3 never arrived");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(seconds, 1.4);
  EXPECT_LT(seconds, 10);
}

// A client whose rank 0 never hosts the store fails after the timeout too.
TEST(ProcessGroup, MissingStoreHostIsNamed) {
  olm::distributed::ProcessGroupOptions o;
  o.rank = 1;
  o.world_size = 2;
  o.master_addr = "127.0.0.1";
  o.master_port = free_port();
  o.timeout = std::chrono::milliseconds(1500);
  olm::testing::expect_error([&] { olm::distributed::ProcessGroup::create(o); }, olm::ErrorCode::kDistributed,
                             "rank 0, which never arrived");
}

struct EnvGuard {
  std::vector<std::string> names;
  explicit EnvGuard(std::vector<std::string> n) : names(std::move(n)) {
    for (auto& x : names) unsetenv(x.c_str());
  }
  ~EnvGuard() {
    for (auto& x : names) unsetenv(x.c_str());
  }
};

TEST(ProcessGroup, OptionsFromTorchrunAndSlurmEnvironments) {
  EnvGuard guard({"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                  "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"});
  auto o = olm::distributed::resolve_options({});
  EXPECT_EQ(o.rank, 0);
  EXPECT_EQ(o.world_size, 1);
  EXPECT_EQ(o.master_addr, "127.0.0.1");
  EXPECT_EQ(o.master_port, 29500);
  EXPECT_EQ(o.backend, olm::distributed::BackendKind::kGloo);
  EXPECT_FALSE(olm::distributed::launched_distributed());

  setenv("SLURM_PROCID", "5", 1), setenv("SLURM_NTASKS", "8", 1), setenv("SLURM_LOCALID", "1", 1);
  setenv("SLURM_NTASKS_PER_NODE", "4(x2)", 1), setenv("MASTER_ADDR", "node01", 1), setenv("MASTER_PORT", "1234", 1);
  o = olm::distributed::resolve_options({});
  EXPECT_EQ(o.rank, 5);
  EXPECT_EQ(o.world_size, 8);
  EXPECT_EQ(o.local_rank, 1);
  EXPECT_EQ(o.local_world_size, 4);
  EXPECT_EQ(o.master_addr, "node01");
  EXPECT_EQ(o.master_port, 1234);
  EXPECT_TRUE(olm::distributed::launched_distributed());

  // Across nodes Slurm gives no rendezvous host: the error says how to set one.
  unsetenv("MASTER_ADDR");
  olm::testing::expect_error([] { olm::distributed::resolve_options({}); }, olm::ErrorCode::kInvalidArgument,
                             "MASTER_ADDR is not set and this Slurm job spans several nodes");
  setenv("SLURM_NTASKS_PER_NODE", "8", 1);  // one node: the loopback will do
  EXPECT_EQ(olm::distributed::resolve_options({}).master_addr, "127.0.0.1");
  setenv("MASTER_ADDR", "node01", 1);

  // torchrun's variables win over Slurm's (torchrun inside an allocation).
  setenv("RANK", "2", 1), setenv("WORLD_SIZE", "4", 1), setenv("LOCAL_RANK", "0", 1), setenv("LOCAL_WORLD_SIZE", "2", 1);
  o = olm::distributed::resolve_options({});
  EXPECT_EQ(o.rank, 2);
  EXPECT_EQ(o.world_size, 4);
  EXPECT_EQ(o.local_world_size, 2);
  // Explicit options win over both.
  olm::distributed::ProcessGroupOptions explicit_options;
  explicit_options.rank = 1;
  explicit_options.world_size = 2;
  explicit_options.local_rank = 1;
  explicit_options.local_world_size = 2;
  explicit_options.device = "cuda:1";
  o = olm::distributed::resolve_options(explicit_options);
  EXPECT_EQ(o.rank, 1);
  EXPECT_EQ(o.backend, olm::distributed::BackendKind::kNccl);

  setenv("RANK", "4", 1);
  olm::testing::expect_error([] { olm::distributed::resolve_options({}); }, olm::ErrorCode::kInvalidArgument,
                             "rank 4 is outside [0, world_size=4)");
  setenv("RANK", "x", 1);
  olm::testing::expect_error([] { olm::distributed::resolve_options({}); }, olm::ErrorCode::kInvalidArgument,
                             "RANK='x'");
}

// The values a caller sets are checked in core, by field name, whichever door they came by:
// the C API's tests (CapiDist.Issue12DeviceAndRanksAreValidated) expect these same messages.
TEST(ProcessGroup, GivenOptionsAreCheckedByFieldName) {
  EnvGuard guard({"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"});
  const auto refused = [](void (*edit)(olm::distributed::ProcessGroupOptions&), const std::string& needle) {
    olm::distributed::ProcessGroupOptions o;
    edit(o);
    olm::testing::expect_error([&] { olm::distributed::resolve_options(o); }, olm::ErrorCode::kInvalidArgument,
                               needle);
  };
  refused([](auto& o) { o.rank = -2; }, "options.rank: -2 is neither -1 nor a rank in [0, 1048576)");
  refused([](auto& o) { o.world_size = 0; }, "options.world_size: 0 is neither -1 nor in [1, 1048576]");
  refused([](auto& o) { o.rank = 3, o.world_size = 2; }, "options.rank: rank 3 is outside [0, world_size=2)");
  refused([](auto& o) { o.local_rank = 2, o.local_world_size = 2; },
          "options.local_rank: local rank 2 is outside [0, local_world_size=2)");
  refused([](auto& o) { o.master_port = 70000; }, "options.master_port: 70000 is outside [0, 65535]");
  refused([](auto& o) { o.device = std::string("cu\x01" "da"); }, "options.device: 'cu\\x01da' is not");
  refused([](auto& o) { o.backend = static_cast<olm::distributed::BackendKind>(7); }, "options.backend: 7 is not");
  refused([](auto& o) { o.timeout = std::chrono::milliseconds(0); }, "options.timeout: must be positive");
  // -1 still means "from the environment" (here: none, a group of one).
  EXPECT_EQ(olm::distributed::resolve_options({}).world_size, 1);
}

TEST(ProcessGroup, NcclIsRefusedClearly) {
  if (olm::cuda_device_count() > 0) GTEST_SKIP() << "a CUDA device is present (NcclGroupOfOneTrainsLikeOneProcess)";
  olm::distributed::ProcessGroupOptions o;
  o.rank = 0;
  o.world_size = 1;
  o.backend = olm::distributed::BackendKind::kNccl;
  olm::testing::expect_error([&] { olm::distributed::ProcessGroup::create(o); }, olm::ErrorCode::kDeviceUnavailable,
                             "nccl");
}

// The NCCL path, on a machine with a CUDA device (a group of one: one GPU): its collectives
// give a group of one's answers, and DDP and FSDP training of a CUDA model follow plain CUDA
// training (5 steps; CUDA's atomics reorder some float32 sums, hence 1e-5 relative).
TEST(ProcessGroup, NcclGroupOfOneTrainsLikeOneProcess) {
  if (olm::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device in this process";
  auto group = group_of_one("cuda");
  EXPECT_STREQ(group->backend_name(), "nccl");
  const auto values = at::arange(6, at::TensorOptions(at::kFloat).device(at::kCUDA));
  auto summed = values.clone();
  group->all_reduce_sum({summed});
  auto gathered = at::empty_like(values), scattered = at::empty_like(values);
  group->all_gather_into_async(gathered, values)->wait();
  group->reduce_scatter_sum_async(scattered, values)->wait();
  for (const auto& t : {summed, gathered, scattered}) EXPECT_TRUE(at::equal(t.cpu(), values.cpu()));

  auto cuda_losses = [&](const std::string& extra, const std::shared_ptr<olm::distributed::ProcessGroup>& g) {
    auto model = std::make_shared<olm::Model>(model_config(), "cuda", olm::ModelOptions{});
    olm::train::Trainer trainer(model, train_config(extra));
    if (g) trainer.set_process_group(g);
    olm::data::DataLoader loader(dataset(), 8, 3, 0, 1);
    std::vector<double> losses;
    for (int s = 0; s < 5; ++s) {
      auto b = loader.next();
      losses.push_back(trainer.train_batch(b.input_ids, b.labels).loss);
    }
    if (g) trainer.set_process_group(nullptr);
    return losses;
  };
  const auto plain = cuda_losses("", nullptr);
  const auto ddp = cuda_losses("", group);
  const auto fsdp = cuda_losses(R"(, "data_parallel": {"name": "fsdp", "prefetch_factor": 1})", group);
  for (size_t s = 0; s < plain.size(); ++s) {
    EXPECT_NEAR(ddp[s], plain[s], 1e-5 * plain[s]) << "DDP, step " << s + 1;
    EXPECT_NEAR(fsdp[s], plain[s], 1e-5 * plain[s]) << "FSDP, step " << s + 1;
  }
  std::printf("[ nccl ] CUDA, group of one: losses %.6f -> %.6f; DDP and FSDP within 1e-5 relative\n", plain.front(),
              plain.back());
  group->shutdown();
}

// Issue #12: the timeout holds from a client's side too. Its rank 0 never hosts the store: it
// gives up within the timeout plus its connection attempts' granularity (0.1 s attempts, 50 ms
// pauses; 0.5 s of slack for a loaded machine), with one line (no c10d stack dump).
TEST(ProcessGroup, Issue12ClientKeepsItsTimeoutWithOneLine) {
  olm::distributed::ProcessGroupOptions o;
  o.rank = 1;
  o.world_size = 2;
  o.master_addr = "127.0.0.1";
  o.master_port = free_port();
  o.timeout = std::chrono::milliseconds(3000);
  const auto t0 = std::chrono::steady_clock::now();
  std::string message;
  try {
    olm::distributed::ProcessGroup::create(o);
    ADD_FAILURE() << "a client without its store host must fail";
  } catch (const olm::Error& e) {
    EXPECT_EQ(e.code(), olm::ErrorCode::kDistributed);
    message = e.what();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(message.find("within 3.0 s"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_GE(seconds, 2.9);
  EXPECT_LT(seconds, 3.5) << message;
}

}  // namespace
