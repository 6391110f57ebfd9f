#include "core/tokenizer/tokenizer.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/io/json.h"

namespace olm::tokenizer {
namespace {

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), ErrorCode::kIo, "cannot read tokenizer file '" + path + "'");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  require(!in.bad(), ErrorCode::kIo, "cannot read tokenizer file '" + path + "'");
  return bytes.str();
}

std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// The file a model directory names its tokenizer by: tokenizer.json first, as transformers'
// fast tokenizers prefer it.
std::string tokenizer_file_in(const std::string& dir) {
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const std::string candidate = dir + "/" + name;
    if (is_file(candidate)) return candidate;
  }
  fail(ErrorCode::kIo, "tokenizer directory '" + dir + "' holds neither tokenizer.json nor tokenizer.model");
}

std::shared_ptr<const Tokenizer> load_file(const std::string& path) {
  require(is_file(path), ErrorCode::kIo, "tokenizer file '" + path + "' does not exist or is not a file");
  std::ifstream in(path, std::ios::binary);
  require(static_cast<bool>(in), ErrorCode::kIo, "cannot read tokenizer file '" + path + "'");
  char first = 0;
  while (in.get(first) && (first == ' ' || first == '\t' || first == '\n' || first == '\r')) {
  }
  // A serialized ModelProto starts with a field key; '{' would be field 15 as a group, which
  // ModelProto does not have. So '{' means JSON.
  if (!in || first != '{') return load_sentencepiece(path);
  in.close();
  const std::string text = read_file(path);
  const auto json = io::parse_json(text.data(), text.size(), path);
  bool has_model = false;
  for (const auto& member : json.object) has_model = has_model || member.first == "model";
  require(has_model, ErrorCode::kInvalidConfig,
          "'" + path + "' is a JSON object without a \"model\" member, not a tokenizer.json");
  return load_hf_tokenizer_json(text, path);
}

// A role in tokenizer_config.json: absent (keep the tokenizer's own), null (no such role), a
// token's text, or an AddedToken object {"content": text, ...}.
void apply_role(const io::Json& config, const char* key, const Tokenizer& tokenizer, const std::string& path,
                std::optional<int32_t>* role) {
  for (const auto& [name, value] : config.object) {
    if (name != key) continue;
    if (value.kind == io::Json::kNull) {
      role->reset();
      return;
    }
    const io::Json* content = &value;
    if (value.kind == io::Json::kObject) {
      content = nullptr;
      for (const auto& [field, v] : value.object)
        if (field == "content") content = &v;
      require(content != nullptr, ErrorCode::kInvalidConfig,
              "'" + path + "': " + key + " is an object without \"content\"");
    }
    require(content->kind == io::Json::kString, ErrorCode::kInvalidConfig,
            "'" + path + "': " + key + (value.kind == io::Json::kObject ? ".content" : "") +
                " is neither a string nor an object with a \"content\" string");
    const auto id = tokenizer.token_to_id(content->string);
    require(id.has_value(), ErrorCode::kInvalidConfig,
            "'" + path + "': " + key + " '" + content->string + "' is not a token of the tokenizer");
    *role = *id;
    return;
  }
}

}  // namespace

std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& path) {
  const bool dir = is_directory(path);
  const std::string file = dir ? tokenizer_file_in(path) : path;
  auto loaded = load_file(file);
  const std::string config_path = (dir ? path : directory_of(path)) + "/tokenizer_config.json";
  if (!is_file(config_path)) return loaded;
  const std::string text = read_file(config_path);
  const auto config = io::parse_json(text.data(), text.size(), config_path);
  require(config.kind == io::Json::kObject, ErrorCode::kInvalidConfig,
          "'" + config_path + "' is not a JSON object");
  SpecialIds ids = loaded->special_ids();
  apply_role(config, "bos_token", *loaded, config_path, &ids.bos);
  apply_role(config, "eos_token", *loaded, config_path, &ids.eos);
  apply_role(config, "pad_token", *loaded, config_path, &ids.pad);
  apply_role(config, "unk_token", *loaded, config_path, &ids.unk);
  // Loading owns the object until it is returned: the roles are set before anyone shares it.
  std::const_pointer_cast<Tokenizer>(loaded)->set_special_ids(ids);
  return loaded;
}

}  // namespace olm::tokenizer
