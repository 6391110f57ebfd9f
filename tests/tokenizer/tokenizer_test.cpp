// core/tokenizer/tokenizer.cpp: loading a directory, where tokenizer_config.json's tokenizer
// class may rebuild the special-token template from add_bos_token / add_eos_token, as
// transformers' Llama, CodeLlama, Gemma, Cohere and GPT-NeoX tokenizers do.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

namespace {

using olm::testing::expect_error;

// A directory holding the bpe_template fixture's tokenizer.json (its own template: "<s> $A")
// and this tokenizer_config.json.
std::string tokenizer_dir(const std::string& config_json) {
  const std::string dir = olm::testing::temp_dir("tokenizer_class");
  std::ifstream in(std::string(OLM_TEST_FIXTURES) + "/bpe_template/tokenizer.json", std::ios::binary);
  std::ofstream(dir + "/tokenizer.json", std::ios::binary) << in.rdbuf();
  std::ofstream(dir + "/tokenizer_config.json") << config_json;
  return dir;
}

// Expected ids from transformers 4.57.6: AutoTokenizer.from_pretrained(dir).encode("hello world")
// on the same directories (every character of this text is id 7 in the fixture's vocabulary;
// <s> is 5 and </s> 6).
TEST(TokenizerClass, AddBosAndAddEosRebuildTheTemplateAsTransformersDoes) {
  const std::vector<int32_t> text(10, 7);
  auto with = [&](std::vector<int32_t> before, std::vector<int32_t> after) {
    std::vector<int32_t> ids = before;
    ids.insert(ids.end(), text.begin(), text.end());
    ids.insert(ids.end(), after.begin(), after.end());
    return ids;
  };
  const std::string roles = R"("bos_token": "<s>", "eos_token": "</s>")";
  struct Case {
    std::string config;
    std::vector<int32_t> want;
  };
  const std::vector<Case> cases = {
      {R"({"tokenizer_class": "LlamaTokenizerFast", "add_eos_token": true, )" + roles + "}", with({5}, {6})},
      {R"({"tokenizer_class": "LlamaTokenizer", )" + roles + "}", with({5}, {})},
      {R"({"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": false, )" + roles + "}", with({}, {})},
      {R"({"tokenizer_class": "GPTNeoXTokenizer", )" + roles + "}", with({}, {})},
      {R"({"tokenizer_class": "GemmaTokenizerFast", "add_eos_token": true, )" + roles + "}", with({5}, {6})},
      // Other classes keep tokenizer.json's own template, whatever the flags say.
      {R"({"tokenizer_class": "PreTrainedTokenizerFast", "add_eos_token": true, )" + roles + "}", with({5}, {})},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.config);
    const auto tokenizer = olm::tokenizer::load_tokenizer(tokenizer_dir(c.config));
    EXPECT_EQ(tokenizer->encode("hello world", true), c.want);
    EXPECT_EQ(tokenizer->encode("hello world", false), text);
  }
}

TEST(TokenizerClass, ImpossibleFlagsAreRefusedNamingTheFile) {
  std::string dir = tokenizer_dir(R"({"tokenizer_class": "LlamaTokenizerFast", "add_eos_token": "yes"})");
  expect_error([&] { olm::tokenizer::load_tokenizer(dir); }, olm::ErrorCode::kInvalidConfig,
               dir + "/tokenizer_config.json': add_eos_token is not a boolean");
  dir = tokenizer_dir(R"({"tokenizer_class": "LlamaTokenizerFast", "add_eos_token": true, "bos_token": "<s>", "eos_token": null})");
  expect_error([&] { olm::tokenizer::load_tokenizer(dir); }, olm::ErrorCode::kInvalidConfig,
               "add_eos_token is true but the tokenizer has no eos_token");
}

}  // namespace
