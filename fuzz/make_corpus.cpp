// Writes the generated part of the seed corpora under <corpus root>: every preset's JSON, the
// FlatBuffers of every accepted JSON seed (config_json/ and train_config_json/ also hold the
// examples and the tests' configs, extracted by hand), safetensors files, small .npy
// and raw token files (the checkpoint target writes its own seeds). Usage: make_corpus <repo>/fuzz/corpus
#include <dirent.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "core/config/config.h"
#include "core/io/safetensors.h"
#include "core/train/train_config.h"
#include "fuzz/fuzz_util.h"

namespace {

std::string root;

void put(const std::string& target, const std::string& name, const void* data, size_t size) {
  ::mkdir((root + "/" + target).c_str(), 0755);
  std::ofstream out(root + "/" + target + "/" + name, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}
void put(const std::string& target, const std::string& name, const std::string& text) {
  put(target, name, text.data(), text.size());
}
void put(const std::string& target, const std::string& name, const std::vector<uint8_t>& bytes) {
  put(target, name, bytes.data(), bytes.size());
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.emplace_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string npy(int version, const std::string& descr, int64_t n, size_t es, uint64_t fill) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + std::to_string(n) + ",), }";
  const size_t pre = version == 1 ? 10 : 12;
  while ((pre + dict.size() + 1) % 64) dict.push_back(' ');
  dict.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(version));
  out.push_back(0);
  const size_t len = dict.size();
  for (size_t i = 0; i < pre - 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  out += dict;
  for (int64_t i = 0; i < n; ++i)
    for (size_t b = 0; b < es; ++b) out.push_back(static_cast<char>(((fill + i) >> (8 * b)) & 0xff));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_corpus <repo>/fuzz/corpus\n";
    return 2;
  }
  root = argv[1];
  for (const auto& name : olm::preset_names()) put("config_json", "preset-" + name + ".json", olm::preset(name, 50304).to_json());
  put("train_config_json", "preset-train.json",
      R"({"model_preset": "olmo2_1M", "sequence_length": 64, "global_batch_size": 256, "rank_microbatch_size": 128,
          "max_steps": 10, "scheduler": {"name": "linear_with_warmup", "warmup_fraction": 0.1},
          "data_parallel": {"name": "fsdp", "param_dtype": "bfloat16", "prefetch_factor": 1}})");
  for (const std::string kind : {"config", "train_config"}) {
    for (const auto& file : files_in(root + "/" + kind + "_json")) {
      const std::string text = slurp(root + "/" + kind + "_json/" + file);
      try {
        const auto fb = kind == "config" ? olm::Config::from_json(text).to_flatbuffer()
                                         : olm::train::TrainConfig::from_json(text).to_flatbuffer();
        put(kind + "_flatbuffer", file.substr(0, file.size() - 5) + ".bin", fb);
      } catch (const olm::Error&) {
      }
    }
  }

  using olm::io::save_safetensors;
  const std::string tmp = olm::fuzz::scratch_dir();
  auto safetensors = [&](const std::string& name, const std::vector<std::pair<std::string, at::Tensor>>& t,
                         const std::map<std::string, std::string>& meta) {
    save_safetensors(tmp + "/s", t, meta);
    put("safetensors", name, slurp(tmp + "/s"));
  };
  safetensors("two-f32.safetensors", {{"a", at::arange(6, at::kFloat).reshape({2, 3})}, {"b", at::ones({4}, at::kFloat)}},
              {{"format", "pt"}});
  safetensors("dtypes.safetensors",
              {{"f64", at::arange(2, at::kDouble)}, {"f16", at::arange(2, at::kHalf)}, {"bf16", at::arange(2, at::kBFloat16)},
               {"i64", at::arange(2, at::kLong)}, {"i32", at::arange(2, at::kInt)}, {"i16", at::arange(2, at::kShort)},
               {"i8", at::arange(2, at::kChar)}, {"u8", at::arange(2, at::kByte)}, {"bool", at::ones({2}, at::kBool)}},
              {});
  safetensors("scalar-empty.safetensors", {{"s", at::ones({}, at::kFloat)}, {"z", at::empty({0, 3}, at::kFloat)}},
              {{"format", "pt"}, {"note", "esc\"aped\\"}});
  safetensors("empty.safetensors", {}, {});

  put("npy", "v1-u2.npy", npy(1, "<u2", 8, 2, 7));
  put("npy", "v2-i8.npy", npy(2, "<i8", 3, 8, 100));
  put("npy", "v3-u4.npy", npy(3, "<u4", 5, 4, 70000));
  put("npy", "v1-i4.npy", npy(1, "<i4", 2, 4, 1));

  put("token_file", "u16-half.bin", std::string("\x00\x80" "\x01\x00\x02\x00\x03\x00\x04\x00", 10));
  put("token_file", "u32-third.bin", std::string("\x01\x55" "\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00", 14));
  put("token_file", "u16-eos.bin", std::string("\x02\xff" "\x00\xc4\x01\x00", 6));
  std::cout << "seed corpora written under " << root << "\n";
  return 0;
}
