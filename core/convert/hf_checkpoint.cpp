#include "core/convert/hf_checkpoint.h"

#include <ATen/core/grad_mode.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "core/convert/hf_names.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/json.h"
#include "core/io/safetensors.h"

namespace olm::convert {
namespace {

namespace fs = std::filesystem;

const char* kIndexName = "model.safetensors.index.json";
const char* kSingleName = "model.safetensors";

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The weight files in load order and, with an index, which file holds each tensor.
struct WeightFiles {
  std::vector<std::string> files;              // names inside the directory
  std::map<std::string, std::string> file_of;  // tensor -> file; empty without an index
  std::string index_path;                      // empty without an index
};

WeightFiles find_weight_files(const std::string& dir) {
  WeightFiles w;
  const std::string index = join(dir, kIndexName);
  if (is_file(index)) {
    w.index_path = index;
    const std::string text = read_text_file(index);
    const io::Json root = io::parse_json(text.data(), text.size(), index);
    require(root.kind == io::Json::kObject, ErrorCode::kParse, index + ": must be a JSON object");
    const io::Json* map = nullptr;
    for (const auto& [k, v] : root.object)
      if (k == "weight_map") map = &v;
    require(map && map->kind == io::Json::kObject, ErrorCode::kParse, index + ": 'weight_map' must be an object");
    std::set<std::string> seen_files;
    for (const auto& [tensor, file] : map->object) {
      require(file.kind == io::Json::kString, ErrorCode::kParse,
              index + ": weight_map['" + tensor + "'] must be a file name string");
      require(!w.file_of.count(tensor), ErrorCode::kMismatch, index + ": weight_map names tensor '" + tensor + "' twice");
      const std::string& name = file.string;
      require(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
              ErrorCode::kMismatch,
              index + ": weight_map['" + tensor + "'] is '" + name + "', not a file name in the model directory");
      w.file_of[tensor] = name;
      if (seen_files.insert(name).second) {
        require(is_file(join(dir, name)), ErrorCode::kIo,
                index + ": weight_map['" + tensor + "'] names '" + name + "', which does not exist in " + dir);
        w.files.push_back(name);
      }
    }
    require(!w.files.empty(), ErrorCode::kMismatch, index + ": weight_map is empty");
    return w;
  }
  require(is_file(join(dir, kSingleName)), ErrorCode::kIo,
          dir + ": neither " + std::string(kSingleName) + " nor " + kIndexName + " is there");
  w.files.push_back(kSingleName);
  return w;
}

struct PieceRef {
  size_t plan = 0;
  size_t piece = 0;
};

}  // namespace

HfModelConfig read_hf_config(const std::string& dir, std::optional<c10::ScalarType> dtype) {
  const std::string path = join(dir, "config.json");
  require(is_file(path), ErrorCode::kIo, path + ": no such file (is '" + dir + "' a Hugging Face model directory?)");
  return config_from_hf(read_text_file(path), path, dtype);
}

HfModel load_hf_model(const std::string& dir, const HfLoadOptions& options) {
  HfModel out;
  out.hf = read_hf_config(dir, options.dtype);
  const WeightFiles weights = find_weight_files(dir);
  ModelOptions model_options;
  model_options.init_weights = false;
  auto model = std::make_shared<Model>(out.hf.config, options.device, model_options);
  const ModelSpec& spec = out.hf.config.spec();
  const auto plans = hf_tensor_plan(spec, out.hf.architecture, model->parameters(), out.hf.query_scale);
  std::map<std::string, PieceRef> wanted;
  for (size_t i = 0; i < plans.size(); ++i)
    for (size_t j = 0; j < plans[i].pieces.size(); ++j) wanted[plans[i].pieces[j].hf_name] = {i, j};
  // transformers ignores a stored lm_head.weight when the embeddings are tied; so does olm.
  const bool tied = spec.tie_word_embeddings;
  const std::string arch = hf_architecture_name(out.hf.architecture);

  // Pass 1: every header against the index and the config, before any weight is copied.
  std::map<std::string, std::string> found;  // tensor -> file
  for (const auto& name : weights.files) {
    const std::string path = join(dir, name);
    io::SafetensorsFile file(path);
    for (const auto& e : file.entries()) {
      if (auto prev = found.find(e.name); prev != found.end())
        fail(ErrorCode::kMismatch, path + ": tensor '" + e.name + "' is also in " + prev->second);
      found[e.name] = name;
      if (!weights.index_path.empty()) {
        auto it = weights.file_of.find(e.name);
        require(it != weights.file_of.end(), ErrorCode::kMismatch,
                path + ": tensor '" + e.name + "' is not in " + weights.index_path);
        require(it->second == name, ErrorCode::kMismatch,
                path + ": tensor '" + e.name + "' is here but " + weights.index_path + " places it in " + it->second);
      }
      if (tied && e.name == "lm_head.weight") continue;
      auto w = wanted.find(e.name);
      require(w != wanted.end(), ErrorCode::kMismatch,
              path + ": tensor '" + e.name + "' is not a parameter of the " + arch + " config.json describes");
      const auto& piece = plans[w->second.plan].pieces[w->second.piece];
      require(e.shape == piece.hf_shape, ErrorCode::kMismatch,
              path + ": tensor '" + e.name + "' has shape " + shape_text(e.shape) + " but config.json implies " +
                  shape_text(piece.hf_shape));
      require(at::isFloatingType(e.dtype), ErrorCode::kMismatch,
              path + ": tensor '" + e.name + "' has non-floating dtype " + c10::toString(e.dtype));
    }
  }
  for (const auto& [tensor, file] : weights.file_of)
    require(found.count(tensor), ErrorCode::kMismatch,
            weights.index_path + ": tensor '" + tensor + "' is not in " + join(dir, file));
  for (const auto& [name, ref] : wanted)
    require(found.count(name), ErrorCode::kMismatch,
            dir + ": tensor '" + name + "' (a parameter of the " + arch + " config.json describes) is in no weight file");

  // Pass 2: file by file, each tensor copied (and converted) once into its parameter.
  std::map<std::string, at::Tensor*> params;
  for (auto& p : model->module().named_parameters()) params[p.name] = p.tensor;
  at::NoGradGuard no_grad;
  for (const auto& name : weights.files) {
    io::SafetensorsFile file(join(dir, name));
    for (const auto& e : file.entries()) {
      auto w = wanted.find(e.name);
      if (w == wanted.end()) continue;  // a tied lm_head.weight
      const auto& plan = plans[w->second.plan];
      const auto& piece = plan.pieces[w->second.piece];
      at::Tensor target = params.at(plan.olm_name)->view(plan.olm_view);
      if (plan.pieces.size() > 1 || plan.olm_view.size() == 2)
        target = target.narrow(0, piece.row_offset, piece.transposed ? piece.hf_shape[1] : piece.hf_shape[0]);
      at::Tensor source = file.view(e);
      if (piece.transposed) source = source.t();
      if (plan.offset != 0.0 || plan.scale != 1.0) source = (source.to(at::kFloat) + plan.offset) * plan.scale;
      target.copy_(source);
    }
  }
  out.model = std::move(model);
  return out;
}

const std::vector<std::string>& hf_tokenizer_files() {
  static const std::vector<std::string> files = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                                 "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json"};
  return files;
}

namespace {

void write_text(const std::string& path, const std::string& text) {
  io::write_file_atomically(path, [&](int fd) { io::write_all(fd, text.data(), text.size(), path); });
}

std::string read_binary(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(ErrorCode::kIo, path + ": cannot open: " + std::strerror(errno));
  std::string data;
  char chunk[1 << 16];
  size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) data.append(chunk, n);
  const bool bad = std::ferror(f);
  std::fclose(f);
  require(!bad, ErrorCode::kIo, path + ": read error");
  return data;
}

std::string shard_name(size_t k, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", k, n);
  return buf;
}

}  // namespace

void save_hf_model(Model& model, const std::string& dir, const HfSaveOptions& options) {
  require(!dir.empty(), ErrorCode::kInvalidArgument, "dir: empty path");
  require(options.max_shard_bytes > 0, ErrorCode::kInvalidArgument,
          "max_shard_bytes must be positive (got " + std::to_string(options.max_shard_bytes) + ")");
  model.require_materialized("save_hf_model");
  const ModelSpec& spec = model.config().spec();
  const HfArchitecture arch = hf_architecture_of(spec);
  const auto& params = model.parameters();
  const c10::ScalarType dtype = options.dtype.value_or(params.empty() ? spec.dtype : params.front().dtype);
  require(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf, ErrorCode::kInvalidArgument,
          "dtype: Hugging Face files are written as float32, bfloat16 or float16");
  HfConfigExport config_options;
  config_options.dtype = dtype;
  config_options.bos_token_id = options.bos_token_id;
  config_options.eos_token_id = options.eos_token_id;
  const std::string config_json = hf_config_json(model.config(), config_options);

  // The tokenizer files, found before anything is written.
  std::vector<std::string> tokenizer_files;
  if (!options.tokenizer_source_dir.empty()) {
    for (const auto& name : hf_tokenizer_files())
      if (is_file(join(options.tokenizer_source_dir, name))) tokenizer_files.push_back(name);
    require(!tokenizer_files.empty(), ErrorCode::kIo,
            options.tokenizer_source_dir + ": no tokenizer file (tokenizer.json, tokenizer_config.json, tokenizer.model, ...) there");
  }

  std::error_code ec;
  const fs::path target(dir);
  if (fs::exists(target, ec)) {
    require(fs::is_directory(target, ec) && fs::is_empty(target, ec), ErrorCode::kInvalidArgument,
            dir + ": exists and is not an empty directory; olm never writes over one");
  }
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  io::make_directories(parent.string());
  std::random_device rd;
  const fs::path tmp = parent / ("." + target.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                                 std::to_string(rd()));
  require(fs::create_directory(tmp, ec), ErrorCode::kIo, tmp.string() + ": cannot create directory: " + ec.message());

  try {
    // Shards: tensors in plan order, a new file when the next tensor would pass the limit.
    const auto plans = hf_tensor_plan(spec, arch, params);
    std::map<std::string, at::Tensor*> tensors;
    for (auto& p : model.module().named_parameters()) tensors[p.name] = p.tensor;
    struct Item {
      size_t plan, piece;
      int64_t bytes;
    };
    std::vector<std::vector<Item>> shards(1);
    int64_t current = 0, total = 0;
    const int64_t element = static_cast<int64_t>(c10::elementSize(dtype));
    for (size_t i = 0; i < plans.size(); ++i)
      for (size_t j = 0; j < plans[i].pieces.size(); ++j) {
        int64_t bytes = element;
        for (int64_t d : plans[i].pieces[j].hf_shape) bytes *= d;
        if (!shards.back().empty() && current + bytes > options.max_shard_bytes) {
          shards.emplace_back();
          current = 0;
        }
        shards.back().push_back({i, j, bytes});
        current += bytes;
        total += bytes;
      }
    at::NoGradGuard no_grad;
    std::string weight_map;
    for (size_t k = 0; k < shards.size(); ++k) {
      const std::string name = shards.size() == 1 ? std::string(kSingleName) : shard_name(k + 1, shards.size());
      std::vector<std::pair<std::string, at::Tensor>> contents;
      for (const auto& item : shards[k]) {
        const auto& plan = plans[item.plan];
        const auto& piece = plan.pieces[item.piece];
        at::Tensor t = tensors.at(plan.olm_name)->view(plan.olm_view);
        if (plan.pieces.size() > 1 || plan.olm_view.size() == 2)
          t = t.narrow(0, piece.row_offset, piece.transposed ? piece.hf_shape[1] : piece.hf_shape[0]);
        if (piece.transposed) t = t.t();
        if (plan.offset != 0.0 || plan.scale != 1.0) t = t.to(at::kFloat) / plan.scale - plan.offset;
        contents.emplace_back(piece.hf_name, t.to(dtype).contiguous());
        weight_map += std::string(weight_map.empty() ? "\n    " : ",\n    ") + io::quote_json(piece.hf_name) + ": " +
                      io::quote_json(name);
      }
      io::save_safetensors((tmp / name).string(), contents, {{"format", "pt"}});
    }
    if (shards.size() > 1)
      write_text((tmp / kIndexName).string(), "{\n  \"metadata\": {\"total_size\": " + std::to_string(total) +
                                                  "},\n  \"weight_map\": {" + weight_map + "\n  }\n}\n");
    write_text((tmp / "config.json").string(), config_json);
    std::string generation = "{\n  \"_from_model_config\": true";
    if (options.bos_token_id) generation += ",\n  \"bos_token_id\": " + std::to_string(*options.bos_token_id);
    if (options.eos_token_id) generation += ",\n  \"eos_token_id\": " + std::to_string(*options.eos_token_id);
    write_text((tmp / "generation_config.json").string(), generation + "\n}\n");
    for (const auto& name : tokenizer_files)
      write_text((tmp / name).string(), read_binary(join(options.tokenizer_source_dir, name)));
    // rename(2) replaces an empty directory atomically; a non-empty one makes it fail.
    if (::rename(tmp.c_str(), target.c_str()) != 0)
      fail(ErrorCode::kIo, dir + ": cannot move the finished directory into place: " + std::strerror(errno));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  const int dfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace olm::convert
