// core/io/safetensors and atomic writes, and Model::load_safetensors's refusals.
#include <ATen/CPUGeneratorImpl.h>
#include <dirent.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "test_util.h"
#include "core/io/safetensors.h"
#include "core/model.h"

using ::testing::HasSubstr;

namespace {

using olm::testing::expect_error;
using olm::testing::temp_dir;


std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A hand-built file: 8-byte little-endian header length, JSON header, data.
std::string file_with_header(const std::string& header, const std::string& data, uint64_t claimed = 0) {
  uint64_t n = claimed ? claimed : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}


std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  closedir(d);
  return names;
}

TEST(Safetensors, RoundTripKeepsValuesDtypesAndLayout) {
  const auto dir = temp_dir("safetensors");
  const std::string path = dir + "/t.safetensors";
  auto g = at::detail::createCPUGenerator(1);
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"a.weight", at::randn({3, 5}, g)},
      {"b", at::randn({7}, g).to(at::kBFloat16)},
      {"c.half", at::randn({2, 2}, g).to(at::kHalf)},
      {"ids", at::arange(6, at::kLong).view({2, 3})},
      {"scalar", at::full({}, 3.5)},
  };
  olm::io::save_safetensors(path, tensors);
  const std::string bytes = read_bytes(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  EXPECT_EQ((8 + header_len) % 8, 0u) << "the data section starts 8-byte aligned";
  const std::string header = bytes.substr(8, header_len);
  EXPECT_THAT(header, HasSubstr("\"__metadata__\":{\"format\":\"pt\"}"));
  EXPECT_THAT(header, HasSubstr("\"b\":{\"dtype\":\"BF16\",\"shape\":[7]"));
  olm::io::SafetensorsFile file(path);
  ASSERT_EQ(file.entries().size(), tensors.size());
  EXPECT_EQ(file.metadata().at("format"), "pt");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& e = file.entries()[i];
    EXPECT_EQ(e.name, tensors[i].first);
    auto t = file.read(e);
    EXPECT_EQ(t.scalar_type(), tensors[i].second.scalar_type());
    EXPECT_TRUE(at::equal(t, tensors[i].second)) << e.name;
  }
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"t.safetensors"}) << "no temporary files left";
}

TEST(Safetensors, MalformedFilesAreRefusedWithTheReason) {
  const auto dir = temp_dir("safetensors");
  auto open = [&](const std::string& bytes) {
    write_bytes(dir + "/bad.safetensors", bytes);
    olm::io::SafetensorsFile f(dir + "/bad.safetensors");
  };
  using olm::ErrorCode;
  expect_error([&] { olm::io::SafetensorsFile f(dir + "/missing.safetensors"); }, ErrorCode::kIo, "missing.safetensors");
  expect_error([&] { open("abc"); }, ErrorCode::kParse, "too short");
  expect_error([&] { open(file_with_header("{}", "", 1000)); }, ErrorCode::kParse, "claims 1000 bytes but only 2 follow");
  expect_error([&] { open(file_with_header("{\"x\":", "")); }, ErrorCode::kParse, "malformed JSON");
  expect_error([&] { open(file_with_header("[1,2]", "")); }, ErrorCode::kParse, "not a JSON object");
  expect_error([&] { open(file_with_header(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234")); },
               ErrorCode::kParse, "its shape needs more bytes than the file holds");
  expect_error([&] { open(file_with_header(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "1234")); },
               ErrorCode::kParse, "outside the 4-byte data section");
  expect_error([&] { open(file_with_header(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", "12345678")); },
               ErrorCode::kParse, "span 8 bytes but its dtype and shape need 4");
  expect_error([&] { open(file_with_header(R"({"x":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}})", "1")); },
               ErrorCode::kParse, "unsupported dtype 'Q4'");
  expect_error([&] { open(file_with_header(R"({"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "")); },
               ErrorCode::kParse, "non-negative");
  expect_error([&] { open(file_with_header(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "")); },
               ErrorCode::kParse, "more bytes than the file holds");
  expect_error([&] { open(file_with_header(R"({"x":{"dtype":"F32","shape":[1]}})", "1234")); }, ErrorCode::kParse,
               "data_offsets");
  // The tensors must tile the data section: no shared bytes, no gaps, nothing after the last.
  expect_error([&] { open(file_with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "12345678")); },
               ErrorCode::kParse, "overlapping data_offsets");
  expect_error([&] { open(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "12345678")); },
               ErrorCode::kParse, "starts at byte 4 of the data section but the previous tensor ends at 0 (a gap");
  expect_error([&] { open(file_with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "12345678")); },
               ErrorCode::kParse, "cover 4 bytes but the data section holds 8 (trailing bytes)");
  std::string deep(100, '[');
  expect_error([&] { open(file_with_header("{\"x\":" + deep, "")); }, ErrorCode::kParse, "nesting too deep");
  // A name twice (seen writing fuzz/safetensors.cpp): both entries tiled the data and were kept.
  expect_error([&] { open(file_with_header(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", "12")); },
               ErrorCode::kParse, "'a' appears twice in the header");
  expect_error([&] { open(file_with_header(R"({"__metadata__":{},"__metadata__":{}})", "")); }, ErrorCode::kParse,
               "'__metadata__' appears twice");
}

olm::Config tiny(int64_t d_model) {
  return olm::Config::from_json(R"({"d_model": )" + std::to_string(d_model) + R"(, "vocab_size": 32, "n_layers": 1,
    "block": {"attention": {"n_heads": 2, "bias": false, "rope": {"theta": 10000}},
      "feed_forward": {"hidden_size": 24, "bias": false}, "layer_norm": {"name": "rms", "bias": false}},
    "lm_head": {"layer_norm": {"name": "rms", "bias": false}, "bias": false}})");
}

TEST(Safetensors, ModelLoadRefusesOtherConfigsAndLeavesWeightsAlone) {
  const auto dir = temp_dir("safetensors");
  olm::Model model(tiny(16), "cpu", {});
  const auto ids = at::arange(8, at::kLong).view({1, 8});
  const auto before = model.forward(ids, 0);

  olm::Model other(tiny(8), "cpu", {});
  other.save_safetensors(dir + "/other.safetensors");
  expect_error([&] { model.load_safetensors(dir + "/other.safetensors"); }, olm::ErrorCode::kMismatch,
               "has shape [32, 8] but the model expects [32, 16]");
  EXPECT_TRUE(at::equal(model.forward(ids, 0), before));

  // A file missing one tensor, and one with an extra tensor.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& p : model.module().named_parameters()) tensors.emplace_back(p.name, *p.tensor * 2);
  auto missing = tensors;
  missing.pop_back();
  olm::io::save_safetensors(dir + "/missing.safetensors", missing);
  expect_error([&] { model.load_safetensors(dir + "/missing.safetensors"); }, olm::ErrorCode::kMismatch,
               "tensor 'lm_head.w_out.weight' is missing");
  auto extra = tensors;
  extra.emplace_back("blocks.9.attention.w_q.weight", at::zeros({2}));
  olm::io::save_safetensors(dir + "/extra.safetensors", extra);
  expect_error([&] { model.load_safetensors(dir + "/extra.safetensors"); }, olm::ErrorCode::kMismatch,
               "unexpected tensor 'blocks.9.attention.w_q.weight'");
  // A truncated copy of a good file.
  olm::io::save_safetensors(dir + "/good.safetensors", tensors);
  const auto good = read_bytes(dir + "/good.safetensors");
  write_bytes(dir + "/cut.safetensors", good.substr(0, good.size() / 2));
  expect_error([&] { model.load_safetensors(dir + "/cut.safetensors"); }, olm::ErrorCode::kParse, "truncated");
  EXPECT_TRUE(at::equal(model.forward(ids, 0), before)) << "failed loads must not touch the weights";
  model.load_safetensors(dir + "/good.safetensors");
  EXPECT_FALSE(at::equal(model.forward(ids, 0), before));
}

TEST(Safetensors, SavesAreAtomic) {
  const auto dir = temp_dir("safetensors");
  olm::Model a(tiny(16), "cpu", {});
  const std::string path = dir + "/model.safetensors";
  write_bytes(path, "old content");
  a.save_safetensors(path);
  olm::io::SafetensorsFile f(path);
  EXPECT_EQ(f.entries().size(), a.parameters().size());
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"model.safetensors"});
  expect_error([&] { a.save_safetensors(dir + "/no/such/dir/model.safetensors"); }, olm::ErrorCode::kIo,
               "no/such/dir");
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"model.safetensors"}) << "a failed save leaves nothing behind";
}

}  // namespace
