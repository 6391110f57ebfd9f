// olm_trainer_fit() over the run service: a C program trains from the same JSON `olm train`
// takes, its `data` and `eval_data` sections included.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;

namespace {

using olm_testing::consume;

const char* kModel = R"({"d_model": 32, "vocab_size": 64, "n_layers": 2,
  "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "bias": false, "rope": {"theta": 10000}},
    "feed_forward": {"hidden_size": 64, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
  "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}})";

struct Log {
  std::vector<int64_t> steps;
};

int32_t on_step(const olm_step_metrics* m, void* user) {
  static_cast<Log*>(user)->steps.push_back(m->step);
  return 0;
}

struct Session {
  olm_train_config* tcfg = nullptr;
  olm_config* cfg = nullptr;
  olm_model* model = nullptr;
  olm_trainer* trainer = nullptr;
  explicit Session(const std::string& json) {
    EXPECT_EQ(olm_train_config_from_json(json.data(), json.size(), &tcfg), nullptr);
    EXPECT_EQ(olm_train_config_model(tcfg, &cfg), nullptr);
    EXPECT_EQ(olm_model_create(cfg, "cpu", nullptr, &model), nullptr);
    EXPECT_EQ(olm_trainer_create(model, tcfg, &trainer), nullptr);
  }
  ~Session() {
    olm_trainer_free(trainer);
    olm_model_free(model);
    olm_config_free(cfg);
    olm_train_config_free(tcfg);
  }
};

std::string train_json(const std::string& dir, const std::string& extra) {
  return std::string(R"({"model": )") + kModel + R"(, "sequence_length": 8, "global_batch_size": 32,
      "max_steps": 4, "optimizer": {"name": "adamw", "lr": 0.01}, "save_folder": ")" + dir +
         R"(/run", "save_interval": 2, "metrics_path": ")" + dir + R"(/run/metrics.jsonl")" + extra + "}";
}

TEST(CapiRunFit, TrainsFromTheConfigsDataSection) {
  const std::string dir = olm_testing::temp_dir("capi_run_fit");
  {
    std::ofstream tokens(dir + "/tokens.bin", std::ios::binary);
    for (int i = 0; i < 2000; ++i) {
      const uint16_t t = static_cast<uint16_t>((i * 13 + i / 7) % 64);
      tokens.write(reinterpret_cast<const char*>(&t), 2);
    }
  }
  const std::string data = R"(, "data": {"paths": [")" + dir + R"(/tokens.bin"]}, "eval_data": {"paths": [")" + dir +
                           R"(/tokens.bin"]}, "eval_batches": 1)";
  Session run(train_json(dir, data));
  Log log;
  olm_fit_options fo;
  olm_fit_options_init(&fo);
  fo.on_step = on_step;
  fo.user_data = &log;
  olm_eval_metrics eval{};
  eval.struct_size = sizeof eval;
  ASSERT_OK(olm_trainer_fit(run.trainer, nullptr, &fo, &eval));
  EXPECT_EQ(log.steps, (std::vector<int64_t>{1, 2, 3, 4}));
  // The config's eval_data was evaluated at the end.
  EXPECT_GT(eval.tokens, 0);
  EXPECT_TRUE(std::isfinite(eval.loss));
  EXPECT_TRUE(std::ifstream(dir + "/run/step4/meta.olmk").good());
  std::ifstream metrics(dir + "/run/metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) ++lines;
  EXPECT_EQ(lines, 5);  // four steps and the final evaluation

  // A resumed trainer continues the data order from the checkpoint, also from the config.
  Session resumed(train_json(dir, data));
  ASSERT_OK(olm_trainer_load_checkpoint(resumed.trainer, (dir + "/run/step2").c_str()));
  Log rest;
  fo.user_data = &rest;
  ASSERT_OK(olm_trainer_fit(resumed.trainer, nullptr, &fo, nullptr));
  EXPECT_EQ(rest.steps, (std::vector<int64_t>{3, 4}));
  // The metrics file holds each step once: the replayed steps' lines were dropped first.
  std::ifstream again(dir + "/run/metrics.jsonl");
  std::vector<std::string> records;
  while (std::getline(again, line)) records.push_back(line.substr(0, line.find(',')));
  EXPECT_EQ(records, (std::vector<std::string>{"{\"step\":1", "{\"step\":2", "{\"step\":3", "{\"step\":4",
                                               "{\"step\":4"}));
  int32_t code = 0;
  // The run at step 4 has nothing left to train at max_steps 4.
  Session finished(train_json(dir, data));
  ASSERT_OK(olm_trainer_load_checkpoint(finished.trainer, (dir + "/run").c_str()));
  EXPECT_THAT(consume(olm_trainer_fit(finished.trainer, nullptr, nullptr, nullptr), &code), HasSubstr("max_steps"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);

  // Without a data section and without a dataset there is nothing to train on.
  Session no_data(train_json(dir + "/other", ""));
  EXPECT_THAT(consume(olm_trainer_fit(no_data.trainer, nullptr, nullptr, nullptr), &code), HasSubstr("data"));
  EXPECT_EQ(code, OLM_ERR_INVALID_ARGUMENT);
}

}  // namespace
