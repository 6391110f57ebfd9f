// A value of a parsed tokenizer.json with its path in the document, so every refusal names
// the file and the member: "tokenizer.json: model.merges[12]: ...". A value of the wrong type
// or a missing member is Error(kParse); a component or option olm does not implement, or a
// reference that does not resolve, is Error(kInvalidConfig) (through fail()).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/io/json.h"

namespace olm::tokenizer {

class JsonNode {
 public:
  JsonNode(const io::Json& json, std::string path, const std::string& source)
      : json_(&json), path_(std::move(path)), source_(&source) {}

  const io::Json& json() const { return *json_; }
  const std::string& path() const { return path_; }
  const std::string& source() const { return *source_; }
  bool is_null() const { return json_->kind == io::Json::kNull; }

  [[noreturn]] void fail(ErrorCode code, const std::string& what) const {
    olm::fail(code, *source_ + ": " + (path_.empty() ? std::string("(document)") : path_) + ": " + what);
  }
  std::string where() const { return *source_ + ": " + path_; }

  // A member, absent -> nullopt (null stays a null node).
  std::optional<JsonNode> find(std::string_view key) const {
    expect(io::Json::kObject, "an object");
    for (size_t i = json_->object.size(); i-- > 0;)  // the last of duplicate keys, as serde
      if (json_->object[i].first == key) return JsonNode(json_->object[i].second, child_path(key), *source_);
    return std::nullopt;
  }
  JsonNode at(std::string_view key) const {
    auto node = find(key);
    if (!node) fail(ErrorCode::kParse, "missing member \"" + std::string(key) + "\"");
    return *node;
  }
  // Absent or null -> nullopt.
  std::optional<JsonNode> find_value(std::string_view key) const {
    auto node = find(key);
    if (!node || node->is_null()) return std::nullopt;
    return node;
  }

  size_t size() const {
    expect(io::Json::kArray, "an array");
    return json_->array.size();
  }
  JsonNode operator[](size_t i) const {
    expect(io::Json::kArray, "an array");
    return JsonNode(json_->array[i], path_ + "[" + std::to_string(i) + "]", *source_);
  }

  const std::string& string() const {
    expect(io::Json::kString, "a string");
    return json_->string;
  }
  bool boolean() const {
    expect(io::Json::kBool, "true or false");
    return json_->boolean;
  }
  int64_t integer(int64_t min, int64_t max) const {
    expect(io::Json::kInt, "an integer");
    if (json_->integer < min || json_->integer > max)
      fail(ErrorCode::kParse, json_->number + " is outside [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    return json_->integer;
  }

  std::string string_or(std::string_view key, std::string fallback) const {
    auto node = find_value(key);
    return node ? node->string() : fallback;
  }
  std::optional<std::string> optional_string(std::string_view key) const {
    auto node = find_value(key);
    return node ? std::optional<std::string>(node->string()) : std::nullopt;
  }
  bool bool_or(std::string_view key, bool fallback) const {
    auto node = find_value(key);
    return node ? node->boolean() : fallback;
  }
  int64_t integer_or(std::string_view key, int64_t fallback, int64_t min, int64_t max) const {
    auto node = find_value(key);
    return node ? node->integer(min, max) : fallback;
  }
  // The "type" member of a component.
  const std::string& type() const { return at("type").string(); }

  void expect(io::Json::Kind kind, const char* what) const {
    if (json_->kind != kind) fail(ErrorCode::kParse, std::string("expected ") + what);
  }

 private:
  std::string child_path(std::string_view key) const {
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }

  const io::Json* json_;
  std::string path_;
  const std::string* source_;
};

}  // namespace olm::tokenizer
