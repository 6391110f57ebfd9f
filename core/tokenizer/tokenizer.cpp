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

// The first member named `key` of a JSON object, or nullptr.
const io::Json* member(const io::Json& object, const char* key) {
  for (const auto& [name, value] : object.object)
    if (name == key) return &value;
  return nullptr;
}

// A role in tokenizer_config.json: absent (keep the tokenizer's own), null (no such role), a
// token's text, or an AddedToken object {"content": text, ...}.
void apply_role(const io::Json& config, const char* key, const Tokenizer& tokenizer, const std::string& path,
                std::optional<int32_t>* role) {
  const io::Json* value = member(config, key);
  if (value == nullptr) return;
  if (value->kind == io::Json::kNull) {
    role->reset();
    return;
  }
  const io::Json* content = value;
  if (value->kind == io::Json::kObject) {
    content = nullptr;
    for (const auto& [field, v] : value->object)
      if (field == "content") content = &v;
    require(content != nullptr, ErrorCode::kInvalidConfig,
            "'" + path + "': " + key + " is an object without \"content\"");
  }
  require(content->kind == io::Json::kString, ErrorCode::kInvalidConfig,
          "'" + path + "': " + key + (value->kind == io::Json::kObject ? ".content" : "") +
              " is neither a string nor an object with a \"content\" string");
  const auto id = tokenizer.token_to_id(content->string);
  require(id.has_value(), ErrorCode::kInvalidConfig,
          "'" + path + "': " + key + " '" + content->string + "' is not a token of the tokenizer");
  *role = *id;
}

// transformers' tokenizer classes whose constructor rebuilds the single template from
// add_bos_token and add_eos_token (update_post_processor: `[bos] $A [eos]`), with each class's
// defaults; they override the tokenizer file's own post-processor. AutoTokenizer loads the
// fast class for either spelling ("LlamaTokenizer" or "LlamaTokenizerFast").
struct TemplateClass {
  const char* name;
  bool add_bos, add_eos;
};
constexpr TemplateClass kTemplateClasses[] = {
    {"LlamaTokenizer", true, false}, {"CodeLlamaTokenizer", true, false}, {"GemmaTokenizer", true, false},
    {"CohereTokenizer", true, false}, {"GPTNeoXTokenizer", false, false}};

// add_bos_token / add_eos_token: absent keeps the class default; null is false, as in Python.
bool flag(const io::Json& config, const char* key, bool default_value, const std::string& path) {
  const io::Json* value = member(config, key);
  if (value == nullptr) return default_value;
  if (value->kind == io::Json::kNull) return false;
  require(value->kind == io::Json::kBool, ErrorCode::kInvalidConfig, "'" + path + "': " + key + " is not a boolean");
  return value->boolean;
}

void apply_template_class(const io::Json& config, const std::string& path, const SpecialIds& ids, Tokenizer& tokenizer) {
  const io::Json* cls = member(config, "tokenizer_class");
  if (cls == nullptr || cls->kind != io::Json::kString) return;
  std::string name = cls->string;
  if (name.size() > 4 && name.compare(name.size() - 4, 4, "Fast") == 0) name.resize(name.size() - 4);
  for (const auto& rule : kTemplateClasses) {
    if (name != rule.name) continue;
    const bool add_bos = flag(config, "add_bos_token", rule.add_bos, path);
    const bool add_eos = flag(config, "add_eos_token", rule.add_eos, path);
    require(!add_bos || ids.bos, ErrorCode::kInvalidConfig,
            "'" + path + "': add_bos_token is true but the tokenizer has no bos_token");
    require(!add_eos || ids.eos, ErrorCode::kInvalidConfig,
            "'" + path + "': add_eos_token is true but the tokenizer has no eos_token");
    std::vector<int32_t> before, after;
    if (add_bos) before.push_back(*ids.bos);
    if (add_eos) after.push_back(*ids.eos);
    tokenizer.set_single_template(std::move(before), std::move(after));
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
  // Loading owns the object until it is returned: the roles and the template are set before
  // anyone shares it.
  auto& owned = *std::const_pointer_cast<Tokenizer>(loaded);
  owned.set_special_ids(ids);
  apply_template_class(config, config_path, ids, owned);
  return loaded;
}

}  // namespace olm::tokenizer
