// Hugging Face model directories through the C ABI: a round trip (olm -> HF directory -> olm
// gives the same logits), the files written, and every kind of bad directory refused with a
// message naming the file and the tensor or field, the output handle untouched.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;

namespace {

namespace fs = std::filesystem;

// OLMo-2 shaped (reordered norms, QK-norm): Olmo2ForCausalLM.
const char* kOlmo2 = R"({"d_model": 64, "vocab_size": 256, "n_layers": 2, "init_seed": 3,
 "block": {"name": "reordered_norm", "attention": {"n_heads": 4, "n_kv_heads": 2, "bias": false, "rope": {"theta": 10000},
   "qk_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
   "feed_forward": {"hidden_size": 192, "bias": false},
   "layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}},
 "lm_head": {"layer_norm": {"name": "rms", "eps": 1e-6, "bias": false}, "bias": false}})";

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

void write(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

void replace(std::string& s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
}

void expect_error(olm_error* e, int32_t code, const std::vector<std::string>& needles) {
  ASSERT_NE(e, nullptr) << "expected an error";
  const std::string message = olm_error_message(e);
  EXPECT_EQ(olm_error_code(e), code) << message;
  for (const auto& n : needles) EXPECT_THAT(message, HasSubstr(n));
  olm_error_free(e);
}

olm_model* const kUntouched = reinterpret_cast<olm_model*>(static_cast<uintptr_t>(0x51));

struct HfDir : ::testing::Test {
  olm_config* cfg = nullptr;
  olm_model* model = nullptr;
  std::string base;
  std::string dir;  // a sharded export of `model`

  void SetUp() override {
    ASSERT_OK(olm_config_from_json(kOlmo2, std::strlen(kOlmo2), &cfg));
    ASSERT_OK(olm_model_create(cfg, "cpu", nullptr, &model));
    base = olm_testing::temp_dir("capi_hf");
    dir = base + "/export";
    olm_hf_save_options o;
    olm_hf_save_options_init(&o);
    o.max_shard_bytes = 40000;  // the 64 KiB embeddings alone, the blocks in a few more files
    o.bos_token_id = 1;
    o.eos_token_id = 2;
    ASSERT_OK(olm_model_save_hf_dir(model, dir.c_str(), &o));
  }
  void TearDown() override {
    olm_model_free(model);
    olm_config_free(cfg);
    std::error_code ec;
    fs::remove_all(base, ec);
  }

  std::vector<float> logits(olm_model* m) {
    std::vector<int64_t> ids = {1, 5, 9, 200, 17, 3, 255, 0, 42, 7, 8, 100};
    int64_t shape[2] = {2, 6};
    olm_tensor* in = nullptr;
    olm_tensor* out = nullptr;
    EXPECT_EQ(olm_tensor_create(OLM_DTYPE_INT64, shape, 2, ids.data(), ids.size() * 8, &in), nullptr);
    EXPECT_EQ(olm_model_forward(m, in, nullptr, &out), nullptr);
    std::vector<float> v(2 * 6 * 256);
    EXPECT_EQ(olm_tensor_copy_to_host(out, v.data(), v.size() * 4), nullptr);
    olm_tensor_free(in);
    olm_tensor_free(out);
    return v;
  }

  // A copy of the export to break.
  std::string copy(const std::string& name) {
    const std::string to = base + "/" + name;
    fs::copy(dir, to, fs::copy_options::recursive);
    return to;
  }

  void expect_load_error(const std::string& d, int32_t code, const std::vector<std::string>& needles) {
    olm_model* out = kUntouched;
    expect_error(olm_model_from_hf_dir(d.c_str(), nullptr, &out), code, needles);
    EXPECT_EQ(out, kUntouched);
  }

  std::vector<std::string> shards() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

TEST_F(HfDir, ExportWritesAShardedDirectoryThatLoadsBackWithTheSameLogits) {
  const auto files = shards();
  ASSERT_GE(files.size(), 3u);
  char first[64];
  std::snprintf(first, sizeof first, "model-00001-of-%05zu.safetensors", files.size());
  EXPECT_EQ(files.front(), first);
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  const std::string config = read(dir + "/config.json");
  EXPECT_THAT(config, HasSubstr("\"Olmo2ForCausalLM\""));
  EXPECT_THAT(config, HasSubstr("\"model_type\": \"olmo2\""));
  EXPECT_THAT(config, HasSubstr("\"torch_dtype\": \"float32\""));
  EXPECT_THAT(read(dir + "/generation_config.json"), HasSubstr("\"eos_token_id\": 2"));
  EXPECT_THAT(read(dir + "/model.safetensors.index.json"),
              HasSubstr("\"model.layers.1.post_feedforward_layernorm.weight\""));

  olm_model* back = nullptr;
  ASSERT_OK(olm_model_from_hf_dir(dir.c_str(), nullptr, &back));
  EXPECT_EQ(logits(back), logits(model));
  olm_model_free(back);

  // bfloat16 on request.
  olm_hf_load_options o;
  olm_hf_load_options_init(&o);
  o.dtype = OLM_DTYPE_BFLOAT16;
  ASSERT_OK(olm_model_from_hf_dir(dir.c_str(), &o, &back));
  olm_parameter_info info;
  info.struct_size = sizeof info;
  ASSERT_OK(olm_model_parameter_info(back, 0, &info));
  EXPECT_EQ(info.dtype, OLM_DTYPE_BFLOAT16);
  olm_model_free(back);
}

TEST_F(HfDir, OneFileWhenItFitsAndTokenizerFilesCopied) {
  const std::string tok = base + "/tok";
  fs::create_directories(tok);
  write(tok + "/tokenizer.json", "{\"model\": {}}");
  write(tok + "/tokenizer_config.json", "{}");
  olm_hf_save_options o;
  olm_hf_save_options_init(&o);
  o.tokenizer_source_dir = tok.c_str();
  const std::string one = base + "/one";
  ASSERT_OK(olm_model_save_hf_dir(model, one.c_str(), &o));
  EXPECT_TRUE(fs::exists(one + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(one + "/model.safetensors.index.json"));
  EXPECT_EQ(read(one + "/tokenizer.json"), "{\"model\": {}}");
  EXPECT_TRUE(fs::exists(one + "/tokenizer_config.json"));
  olm_model* back = nullptr;
  ASSERT_OK(olm_model_from_hf_dir(one.c_str(), nullptr, &back));
  EXPECT_EQ(logits(back), logits(model));
  olm_model_free(back);
}

TEST_F(HfDir, ConfigOnly) {
  olm_config* c = nullptr;
  ASSERT_OK(olm_config_from_hf_dir(dir.c_str(), nullptr, &c));
  olm_buffer* json = nullptr;
  ASSERT_OK(olm_config_to_json(c, &json));
  const std::string text(reinterpret_cast<const char*>(olm_buffer_data(json)), olm_buffer_size(json));
  EXPECT_THAT(text, HasSubstr("reordered_norm"));
  olm_buffer_free(json);
  olm_config_free(c);
}

TEST_F(HfDir, SaveRefusesANonEmptyDirectoryAndUnexpressibleModels) {
  expect_error(olm_model_save_hf_dir(model, dir.c_str(), nullptr), OLM_ERR_INVALID_ARGUMENT, {dir, "not an empty directory"});
  std::string biased = kOlmo2;
  replace(biased, "\"n_kv_heads\": 2, \"bias\": false", "\"n_kv_heads\": 2, \"bias\": true");
  olm_config* c = nullptr;
  olm_model* m = nullptr;
  ASSERT_OK(olm_config_from_json(biased.c_str(), biased.size(), &c));
  ASSERT_OK(olm_model_create(c, "cpu", nullptr, &m));
  const std::string target = base + "/biased";
  expect_error(olm_model_save_hf_dir(m, target.c_str(), nullptr), OLM_ERR_INVALID_CONFIG, {"attention.bias"});
  EXPECT_FALSE(fs::exists(target));
  olm_model_free(m);
  olm_config_free(c);
  expect_error(olm_model_save_hf_dir(nullptr, target.c_str(), nullptr), OLM_ERR_INVALID_ARGUMENT, {"model"});
  olm_hf_save_options o;
  olm_hf_save_options_init(&o);
  o.max_shard_bytes = 0;
  expect_error(olm_model_save_hf_dir(model, target.c_str(), &o), OLM_ERR_INVALID_ARGUMENT, {"max_shard_bytes"});
}

TEST_F(HfDir, BadArgumentsAndConfigs) {
  olm_model* out = kUntouched;
  expect_error(olm_model_from_hf_dir(nullptr, nullptr, &out), OLM_ERR_INVALID_ARGUMENT, {"dir"});
  expect_error(olm_model_from_hf_dir(dir.c_str(), nullptr, nullptr), OLM_ERR_INVALID_ARGUMENT, {"out"});
  olm_hf_load_options o;
  olm_hf_load_options_init(&o);
  o.struct_size = 0;
  expect_error(olm_model_from_hf_dir(dir.c_str(), &o, &out), OLM_ERR_INVALID_ARGUMENT, {"options.struct_size"});
  olm_hf_load_options_init(&o);
  o.dtype = OLM_DTYPE_INT64;
  expect_error(olm_model_from_hf_dir(dir.c_str(), &o, &out), OLM_ERR_INVALID_ARGUMENT, {"options.dtype"});
  EXPECT_EQ(out, kUntouched);

  expect_load_error(base + "/nowhere", OLM_ERR_IO, {"config.json"});

  const std::string truncated = copy("truncated");
  const std::string text = read(truncated + "/config.json");
  write(truncated + "/config.json", text.substr(0, text.size() / 2));
  expect_load_error(truncated, OLM_ERR_PARSE, {truncated + "/config.json"});

  const std::string unknown = copy("unknown");
  std::string u = read(unknown + "/config.json");
  replace(u, "Olmo2ForCausalLM", "MambaForCausalLM");
  write(unknown + "/config.json", u);
  expect_load_error(unknown, OLM_ERR_INVALID_CONFIG, {"architectures", "MambaForCausalLM"});

  const std::string biased = copy("biased");
  std::string b = read(biased + "/config.json");
  replace(b, "\"attention_bias\": false", "\"attention_bias\": true");
  write(biased + "/config.json", b);
  expect_load_error(biased, OLM_ERR_INVALID_CONFIG, {"config.json", "attention_bias"});

  const std::string extra = copy("extra");
  std::string x = read(extra + "/config.json");
  replace(x, "{", "{\"attn_temperature_tuning\": 4,");
  write(extra + "/config.json", x);
  expect_load_error(extra, OLM_ERR_INVALID_CONFIG, {"config.json", "attn_temperature_tuning"});

  const std::string scaled = copy("scaled");
  std::string s = read(scaled + "/config.json");
  replace(s, "\"rope_scaling\": null", "\"rope_scaling\": {\"rope_type\": \"longrope\", \"factor\": 2}");
  write(scaled + "/config.json", s);
  expect_load_error(scaled, OLM_ERR_INVALID_CONFIG, {"rope_scaling.rope_type", "longrope"});
}

TEST_F(HfDir, BadWeightFiles) {
  const auto files = shards();
  // A shard the index names is gone.
  const std::string missing = copy("missing");
  fs::remove(missing + "/" + files[1]);
  expect_load_error(missing, OLM_ERR_IO, {"model.safetensors.index.json", files[1], "does not exist"});

  // The index names a tensor twice.
  const std::string twice = copy("twice");
  std::string index = read(twice + "/model.safetensors.index.json");
  replace(index, "\"weight_map\": {", "\"weight_map\": {\n    \"model.norm.weight\": \"" + files[0] + "\",");
  write(twice + "/model.safetensors.index.json", index);
  expect_load_error(twice, OLM_ERR_MISMATCH, {"model.safetensors.index.json", "model.norm.weight", "twice"});

  // The index places a tensor in another shard than the one holding it (the embeddings'
  // own shard, then named by no entry, is not read).
  const std::string moved = copy("moved");
  std::string m = read(moved + "/model.safetensors.index.json");
  replace(m, "\"model.embed_tokens.weight\": \"" + files[0] + "\"",
          "\"model.embed_tokens.weight\": \"" + files[1] + "\"");
  write(moved + "/model.safetensors.index.json", m);
  expect_load_error(moved, OLM_ERR_MISMATCH, {"model.safetensors.index.json", "model.embed_tokens.weight", files[1]});

  // A tensor in two files: a shard the index lists (for another tensor) holds the embeddings too.
  const std::string dup = copy("dup");
  std::string header = R"({"model.embed_tokens.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("extra.weight":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  while (header.size() % 8) header += ' ';
  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write(dup + "/extra.safetensors", length + header + std::string(8, '\0'));
  std::string dup_index = read(dup + "/model.safetensors.index.json");
  // Listed last, so the embeddings' own shard is read first.
  dup_index.insert(dup_index.rfind("\n  }"), ",\n    \"extra.weight\": \"extra.safetensors\"");
  write(dup + "/model.safetensors.index.json", dup_index);
  expect_load_error(dup, OLM_ERR_MISMATCH, {"extra.safetensors", "model.embed_tokens.weight", "also in " + files[0]});

  // The shards do not match the config: a wrong shape, a missing and an unexpected tensor.
  const std::string wide = copy("wide");
  std::string w = read(wide + "/config.json");
  replace(w, "\"intermediate_size\": 192", "\"intermediate_size\": 200");
  write(wide + "/config.json", w);
  expect_load_error(wide, OLM_ERR_MISMATCH, {".safetensors", "mlp.", "has shape [", "200"});

  const std::string deeper = copy("deeper");
  std::string d = read(deeper + "/config.json");
  replace(d, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
  write(deeper + "/config.json", d);
  expect_load_error(deeper, OLM_ERR_MISMATCH, {"model.layers.2.", "in no weight file"});

  const std::string shallower = copy("shallower");
  std::string sh = read(shallower + "/config.json");
  replace(sh, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
  write(shallower + "/config.json", sh);
  expect_load_error(shallower, OLM_ERR_MISMATCH, {".safetensors", "model.layers.1.", "not a parameter"});

  // No weights at all.
  const std::string empty = copy("empty");
  for (const auto& f : files) fs::remove(empty + "/" + f);
  fs::remove(empty + "/model.safetensors.index.json");
  expect_load_error(empty, OLM_ERR_IO, {"model.safetensors"});

  // A truncated shard.
  const std::string cut = copy("cut");
  const std::string bytes = read(cut + "/" + files[0]);
  write(cut + "/" + files[0], bytes.substr(0, bytes.size() - 100));
  expect_load_error(cut, OLM_ERR_PARSE, {files[0]});
}

}  // namespace
