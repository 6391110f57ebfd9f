// A small JSON reader: objects, arrays, strings, integers, literals, and fractions (kept as
// their text). Depth-limited; every failure is Error(kParse) naming the context and byte offset.
// Used where a document must be inspected as written: safetensors headers, and the exact JSON
// types of config fields (FlatBuffers' parser turns 1 into true).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace olm::io {

struct Json {
  enum Kind { kNull, kBool, kInt, kOther, kString, kArray, kObject } kind = kNull;
  int64_t integer = 0;      // kInt
  bool boolean = false;     // kBool
  std::string string;       // kString
  std::vector<Json> array;  // kArray
  std::vector<std::pair<std::string, Json>> object;  // kObject, in document order
};

Json parse_json(const char* text, size_t size, const std::string& context, int max_depth = 32);

}  // namespace olm::io
