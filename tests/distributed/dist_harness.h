// Shared by the multi-process tests (distributed/*_test.cpp,
// checkpoint/sharded_test.cpp): the tiny model,
// train config and data every rank trains on, and a launcher that runs ranks as child
// processes of the test binary (`<binary> --worker ARGS...`) with torchrun's environment, on a
// port the OS picked, killing any rank still running at a deadline.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/config/config.h"
#include "core/data/token_data.h"
#include "core/train/train_config.h"
#include "test_util.h"

namespace olm_dist_testing {

// vocab_size 52 splits over 4 tensor-parallel ranks; explicit_softmax computes attention as an
// explicit float32 softmax instead of SDPA (a second exact-in-float32 attention algorithm).
inline olm::Config dense_model_config(int64_t vocab_size = 50, bool explicit_softmax = false) {
  const std::string backend = explicit_softmax ? R"("backend": "explicit", )" : "";
  return olm::Config::from_json(R"({"d_model": 32, "vocab_size": )" + std::to_string(vocab_size) + R"(, "n_layers": 2,
    "block": {"name": "reordered_norm", "attention": {)" + backend + R"("n_heads": 4, "n_kv_heads": 2, "bias": false,
      "rope": {"theta": 10000}, "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
      "feed_forward": {"hidden_size": 64, "bias": false},
      "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})");
}

// 8 instances of 8 tokens per global batch; micro-batches of 2 instances, so one process
// accumulates 4 micro-batches, 2 ranks 2 each (no sync on the first), 4 ranks 1 each.
// AdamW, clipping at a global norm of 1 and z-loss exercise every cross-rank quantity.
inline olm::train::TrainConfig train_config(const std::string& extra = "") {
  return olm::train::TrainConfig::from_json(R"({"sequence_length": 8, "global_batch_size": 64,
      "rank_microbatch_size": 16, "max_steps": 20, "seed": 3, "z_loss_multiplier": 1e-4,
      "max_grad_norm": 1.0, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.1})" +
                                            extra + "}");
}

// Documents with structure (repeated runs) so the loss falls, from a fixed LCG.
inline std::shared_ptr<olm::data::TokenDataset> dataset() {
  std::vector<int64_t> tokens;
  uint64_t x = 12345;
  while (tokens.size() < 8 * 8 * 12) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const int64_t t = static_cast<int64_t>((x >> 33) % 50);
    for (int r = 0; r < 1 + static_cast<int>(t % 3); ++r) tokens.push_back(t);
  }
  olm::data::DatasetOptions o;
  o.sequence_length = 8;
  o.vocab_size = 50;
  return olm::data::TokenDataset::from_tokens(tokens, o);
}

inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// This test binary, which the ranks run with --worker.
inline std::string& self_executable() {
  static std::string self = [] {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string("/proc/self/exe");
  }();
  return self;
}

struct Child {
  pid_t pid = -1;
  int status = -1;
  int rank = 0;
  std::string out, log;  // the worker's result file and its stderr
};

inline bool exited_ok(const Child& c) { return WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0; }

struct LaunchOptions {
  std::vector<int> ranks;       // empty: all of 0..world-1
  double deadline_s = 120;      // ranks still running then are killed (a test failure)
  bool end_with_rank0 = false;  // kill the others once rank 0 has exited
};

// Starts the ranks as `<self> --worker <worker_args(child)...>` and waits for them.
inline std::vector<Child> launch(int world, const std::string& temp_name,
                                 const std::function<std::vector<std::string>(const Child&)>& worker_args,
                                 const LaunchOptions& options = {}) {
  std::vector<int> ranks = options.ranks;
  if (ranks.empty())
    for (int r = 0; r < world; ++r) ranks.push_back(r);
  const auto dir = olm::testing::temp_dir(temp_name);
  const std::string port = std::to_string(free_port());
  const std::string self = self_executable();
  std::vector<Child> children;
  for (int r : ranks) {
    Child c;
    c.rank = r;
    c.out = dir + "/rank" + std::to_string(r) + ".txt";
    c.log = dir + "/rank" + std::to_string(r) + ".log";
    std::vector<std::string> args{self, "--worker"};
    for (auto& a : worker_args(c)) args.push_back(a);
    c.pid = fork();
    if (c.pid == 0) {
      freopen(c.log.c_str(), "w", stderr);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", port.c_str(), 1);
      // As torchrun does: one intra-op thread per rank, or the ranks oversubscribe the cores.
      setenv("OMP_NUM_THREADS", "1", 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(self.c_str(), argv.data());
      _exit(127);
    }
    children.push_back(c);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(options.deadline_s);
  size_t done = 0;
  while (done < children.size()) {
    for (auto& c : children) {
      if (c.status != -1) continue;
      int st;
      if (waitpid(c.pid, &st, WNOHANG) == c.pid) c.status = st, ++done;
    }
    if (options.end_with_rank0 && children[0].status != -1)
      for (auto& c : children)
        if (c.status == -1) kill(c.pid, SIGKILL), waitpid(c.pid, &c.status, 0), ++done;
    if (std::chrono::steady_clock::now() > deadline) {
      for (auto& c : children)
        if (c.status == -1) kill(c.pid, SIGKILL), waitpid(c.pid, &c.status, 0), ++done;
      ADD_FAILURE() << "a rank was still running at the deadline";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return children;
}

}  // namespace olm_dist_testing
