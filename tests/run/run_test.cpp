// core/run: the training-run service (paths, checks, metrics, checkpoints once, resume).
#include "core/run/run.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/checkpoint/checkpoint.h"
#include "tests/test_util.h"

namespace {

using olm::testing::expect_error;
using olm::testing::temp_dir;

const char* kModel = R"({"d_model": 32, "vocab_size": 50, "n_layers": 2,
    "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
      "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}})";

std::string train_json(const std::string& extra) {
  return std::string(R"({"model": )") + kModel + R"(, "sequence_length": 8, "global_batch_size": 32,
      "max_steps": 4, "optimizer": {"name": "sgd", "lr": 0.5})" + extra + "}";
}

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// 400 uint16 tokens below 50 in a raw token file.
void write_tokens(const std::string& path) {
  std::string bytes;
  for (int i = 0; i < 400; ++i) {
    const uint16_t t = static_cast<uint16_t>((i * 7 + i / 5) % 50);
    bytes.append(reinterpret_cast<const char*>(&t), 2);
  }
  write(path, bytes);
}

std::unique_ptr<olm::train::Trainer> make_trainer(const olm::train::TrainConfig& config) {
  auto model = std::make_shared<olm::Model>(*config.spec().model, "cpu", olm::ModelOptions{});
  return std::make_unique<olm::train::Trainer>(model, config);
}

TEST(Run, LoadConfigResolvesRelativePathsAgainstTheConfigFilesDirectory) {
  const auto dir = std::filesystem::path(temp_dir("run_paths")).lexically_normal().string();
  write(dir + "/train.json", train_json(R"(, "data": {"paths": ["data/a.bin", "/abs/b.bin"]},
      "eval_data": {"paths": ["../c.bin"]}, "save_folder": "runs/x", "metrics_path": "runs/m.jsonl")"));
  const auto config = olm::run::load_config(dir + "/train.json");
  const auto& spec = config.spec();
  const std::string parent = dir.substr(0, dir.find_last_of('/'));
  EXPECT_EQ(spec.data->paths[0], dir + "/data/a.bin");
  EXPECT_EQ(spec.data->paths[1], "/abs/b.bin");
  EXPECT_EQ(spec.eval_data->paths[0], parent + "/c.bin");
  EXPECT_EQ(spec.save_folder, dir + "/runs/x");
  EXPECT_EQ(spec.metrics_path, dir + "/runs/m.jsonl");
  expect_error([&] { olm::run::load_config(dir + "/missing.json"); }, olm::ErrorCode::kIo, "missing.json");
}

TEST(Run, RelocateMovesCheckpointsAndMetricsIntoTheNewFolder) {
  const auto config = olm::train::TrainConfig::from_json(
      train_json(R"(, "save_folder": "/runs/a", "metrics_path": "/logs/metrics.jsonl")"));
  const auto moved = olm::run::relocate(config, "/runs/b/");
  EXPECT_EQ(moved.spec().save_folder, "/runs/b");
  EXPECT_EQ(moved.spec().metrics_path, "/runs/b/metrics.jsonl");
  const auto same = olm::run::relocate(config, "/runs/a/");
  EXPECT_EQ(same.spec().metrics_path, "/logs/metrics.jsonl");
}

TEST(Run, TrimMetricsKeepsStepsUpToTheCheckpointAndDropsATornLine) {
  const auto dir = temp_dir("run_trim");
  const std::string path = dir + "/metrics.jsonl";
  write(path, "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1}\n{\"step\":2,\"eval_loss\":1}\n"
              "{\"step\":3,\"loss\":1}\n{\"step\":4,\"lo");
  olm::run::trim_metrics(path, 2);
  EXPECT_EQ(read(path), "{\"step\":1,\"loss\":2}\n{\"step\":2,\"loss\":1}\n{\"step\":2,\"eval_loss\":1}\n");
  olm::run::trim_metrics(dir + "/absent.jsonl", 2);  // nothing to do
  EXPECT_FALSE(std::ifstream(dir + "/absent.jsonl").good());
}

TEST(Run, NothingToTrainIsAnErrorAndWritesNothing) {
  const auto dir = temp_dir("run_nothing");
  write_tokens(dir + "/tokens.bin");
  const std::string outputs = R"(, "data": {"paths": [")" + dir + R"(/tokens.bin"]}, "save_folder": ")" + dir +
                              R"(/run", "metrics_path": ")" + dir + R"(/run/metrics.jsonl")";
  auto native = olm::train::TrainConfig::from_json(train_json(outputs)).native();
  native.max_steps = 0;
  auto trainer = make_trainer(olm::train::TrainConfig::from_native(native));
  expect_error([&] { olm::run::fit(*trainer, {}); }, olm::ErrorCode::kInvalidArgument, "max_steps");
  EXPECT_FALSE(std::ifstream(dir + "/run/metrics.jsonl").good());
  EXPECT_EQ(olm::checkpoint::latest(dir + "/run"), "");
}

TEST(Run, AnUnwritableSaveFolderFailsBeforeTheFirstStep) {
  const auto dir = temp_dir("run_unwritable");
  write_tokens(dir + "/tokens.bin");
  write(dir + "/a-file", "");
  auto trainer = make_trainer(olm::train::TrainConfig::from_json(train_json(
      R"(, "data": {"paths": [")" + dir + R"(/tokens.bin"]}, "save_folder": ")" + dir + R"(/a-file/run")")));
  int steps = 0;
  olm::run::FitOptions options;
  options.callbacks.on_step = [&](const olm::train::StepMetrics&) { return ++steps > 0; };
  expect_error([&] { olm::run::fit(*trainer, options); }, olm::ErrorCode::kIo, "save_folder");
  EXPECT_EQ(steps, 0);
  EXPECT_EQ(trainer->step(), 0);
}

// A stop right after a periodic save writes no second checkpoint of that step, and resuming
// continues the data order from the position the trainer carries into its checkpoints.
TEST(Run, StopsSaveOnceAndResumeContinuesTheDataAndTheMetrics) {
  const auto dir = temp_dir("run_resume");
  write_tokens(dir + "/tokens.bin");
  const auto config = olm::train::TrainConfig::from_json(train_json(
      R"(, "data": {"paths": [")" + dir + R"(/tokens.bin"]}, "save_folder": ")" + dir +
      R"(/run", "save_interval": 1, "metrics_path": ")" + dir + R"(/run/metrics.jsonl")"));
  std::vector<double> full;
  {
    auto trainer = make_trainer(olm::train::TrainConfig::from_json(train_json(
        R"(, "data": {"paths": [")" + dir + R"(/tokens.bin"]})")));
    olm::run::FitOptions options;
    options.callbacks.on_step = [&](const olm::train::StepMetrics& m) { return full.push_back(m.loss), true; };
    olm::run::fit(*trainer, options);
  }
  ASSERT_EQ(full.size(), 4u);

  auto first = make_trainer(config);
  std::vector<std::string> saves;
  olm::run::FitOptions options;
  // Like Ctrl-C: the flag is seen before step 3, after step 2's periodic save.
  std::atomic<bool> stop{false};
  options.callbacks.stop_requested = &stop;
  options.callbacks.on_step = [&](const olm::train::StepMetrics& m) {
    if (m.step == 2) stop.store(true);
    return true;
  };
  options.callbacks.on_log = [&](const std::string& message) {
    if (message.find("saved checkpoint") != std::string::npos) saves.push_back(message);
  };
  const auto stopped = olm::run::fit(*first, options);
  EXPECT_TRUE(stopped.stopped_early);
  EXPECT_EQ(saves.size(), 2u) << "step 2 saved twice?";
  // A crash after step 3's metrics line but before its checkpoint: the line is replayed.
  std::ofstream(dir + "/run/metrics.jsonl", std::ios::app) << "{\"step\":3,\"loss\":9}\n";

  auto second = make_trainer(config);
  olm::run::load_checkpoint(*second, dir + "/run");
  EXPECT_EQ(second->step(), 2);
  EXPECT_EQ(second->data_position().batch_in_epoch, first->data_position().batch_in_epoch);
  std::vector<double> rest;
  olm::run::FitOptions resume;
  resume.callbacks.on_step = [&](const olm::train::StepMetrics& m) { return rest.push_back(m.loss), true; };
  olm::run::fit(*second, resume);
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0], full[2]);
  EXPECT_EQ(rest[1], full[3]);
  std::istringstream lines(read(dir + "/run/metrics.jsonl"));
  std::string line;
  std::vector<int64_t> steps;
  while (std::getline(lines, line)) steps.push_back(std::stoll(line.substr(line.find(':') + 1)));
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));
  // A finished run has nothing left to train.
  auto third = make_trainer(config);
  olm::run::load_checkpoint(*third, dir + "/run");
  expect_error([&] { olm::run::fit(*third, {}); }, olm::ErrorCode::kInvalidArgument, "max_steps");
}

}  // namespace
