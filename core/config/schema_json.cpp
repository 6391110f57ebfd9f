// JSON text <-> FlatBuffer through the embedded schema (olm_schema_text.h): our checker
// before FlatBuffers' parser, our writer instead of its printer; and reading text files.
#include "core/config/internal.h"

#include <flatbuffers/idl.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/io/json.h"
#include "core/io/nearest_name.h"
#include "olm_schema_text.h"

namespace olm {
namespace config_internal {
namespace {

// A fresh parser per call: FlatBuffers parsers are not thread-safe and ours is cheap to build.
std::unique_ptr<flatbuffers::Parser> make_parser(const char* root_type) {
  flatbuffers::IDLOptions opts;
  opts.strict_json = true;  // quoted field names: the output is standard JSON
  opts.indent_step = 2;
  opts.skip_unexpected_fields_in_json = false;  // unknown fields are errors
  opts.output_default_scalars_in_json = false;
  auto parser = std::make_unique<flatbuffers::Parser>(opts);
  if (!parser->Parse(schema_text::kOlmFbs) || !parser->SetRootType(root_type)) {
    fail(ErrorCode::kInternal, "embedded schema failed to parse: " + parser->error_);
  }
  return parser;
}

// FlatBuffers reports "LINE: COL: error: ..." without the field; name the last JSON key
// before that position so "wrong type" errors say which field is wrong.
std::string with_field_name(const std::string& source, const std::string& error) {
  // These already name their field, which is not the last key before the position.
  if (error.find("required field is missing") != std::string::npos ||
      error.find("unknown field") != std::string::npos ||
      error.find("field set more than once") != std::string::npos)
    return error;
  size_t offset = std::string::npos;
  // Range errors are raised when the table ends, far from the field: find the bad constant.
  const std::string marker = "invalid number: \"";
  const auto m = error.find(marker);
  if (m != std::string::npos) {
    const auto end = error.find('"', m + marker.size());
    const auto value = error.substr(m + marker.size(), end - m - marker.size());
    // The value as a JSON string, else as a bare token (not inside a longer word or number).
    offset = value.empty() ? std::string::npos : source.find('"' + value + '"');
    for (size_t at = source.find(value); offset == std::string::npos && at != std::string::npos;
         at = source.find(value, at + 1)) {
      const auto bare = [&](size_t i) { return i >= source.size() || !(std::isalnum(static_cast<unsigned char>(source[i])) || source[i] == '.' || source[i] == '_'); };
      if ((at == 0 || bare(at - 1)) && bare(at + value.size())) offset = at;
    }
  } else {
    int line = 0, col = 0;
    if (std::sscanf(error.c_str(), "%d: %d:", &line, &col) != 2 || line < 1) return error;
    offset = 0;
    for (int l = 1; l < line && offset != std::string::npos; ++l) {
      offset = source.find('\n', offset);
      if (offset != std::string::npos) ++offset;
    }
    if (offset != std::string::npos) offset = std::min(source.size(), offset + static_cast<size_t>(std::max(col, 0)));
  }
  if (offset == std::string::npos) return error;
  // Walk back to the nearest `"key" :`.
  for (size_t i = offset; i-- > 0;) {
    if (source[i] != ':') continue;
    size_t q = i;
    while (q > 0 && std::isspace(static_cast<unsigned char>(source[q - 1]))) --q;
    if (q == 0 || source[q - 1] != '"') continue;
    const size_t end = q - 1;
    const size_t start = source.rfind('"', end - 1);
    if (start == std::string::npos) break;
    std::string message = error;
    // FlatBuffers' wording when a string stands where a number or boolean belongs.
    const std::string enum_hint = "enum values need to be qualified by an enum type";
    const auto hint = message.find(enum_hint);
    if (hint != std::string::npos)
      message.replace(hint, enum_hint.size(), "wrong type: a string where a number or boolean is expected");
    return "field '" + source.substr(start + 1, end - start - 1) + "': " + message;
  }
  return error;
}

// What a root table is called in messages.
std::string root_description(const std::string& root_type) {
  if (root_type == "TransformerConfig") return "model config";
  if (root_type == "TrainConfig") return "train config";
  if (root_type == "CheckpointMeta") return "checkpoint metadata";
  return root_type;
}

// "did you mean 'x'?" for a near miss (Levenshtein distance at most 2, or a third of the
// name), else the list of known names.
std::string suggestion(const std::string& name, const std::vector<std::string>& known) {
  const auto best = io::nearest_name(name, known);
  if (best.name && best.distance <= std::max<size_t>(2, name.size() / 3)) return "did you mean '" + *best.name + "'?";
  return "known fields: " + join(known);
}

// The value as written, for "expected X, not <this>".
std::string describe(const io::Json& v) {
  using io::Json;
  switch (v.kind) {
    case Json::kNull: return "null";
    case Json::kBool: return v.boolean ? "true" : "false";
    case Json::kInt:
    case Json::kOther: return v.number;
    case Json::kString: {
      const std::string quoted = io::quote_json(v.string.size() > 40 ? v.string.substr(0, 40) + "..." : v.string);
      return "the string " + quoted;
    }
    case Json::kArray: return "an array";
    case Json::kObject: return "an object";
  }
  return "?";
}

// Checks a JSON document against a schema table before FlatBuffers' parser sees it: every
// key is a field of its table (else the nearest field name is suggested), every value has the
// field's kind and fits its type, required fields are present, strings are UTF-8. Errors
// name the source, line and column, and the field's path ("optimizer.lr").
class JsonSchemaChecker {
 public:
  JsonSchemaChecker(std::string_view text, std::string source, std::string root)
      : text_(text), source_(std::move(source)), root_(std::move(root)) {}

  void table(const flatbuffers::StructDef& def, const io::Json& object, const std::string& path) {
    std::vector<std::string> known;
    for (const auto* f : def.fields.vec)
      if (!f->deprecated) known.push_back(f->name);
    std::vector<const flatbuffers::FieldDef*> seen;
    for (size_t i = 0; i < object.object.size(); ++i) {
      const auto& [key, value] = object.object[i];
      const size_t at = i < object.key_offsets.size() ? object.key_offsets[i] : value.offset;
      const auto* field = def.fields.Lookup(key);
      if (!field || field->deprecated)
        error(at, "unknown field '" + key + "' in " + (path.empty() ? root_ : "'" + path + "'") + "; " +
                      suggestion(key, known));
      const std::string child = path.empty() ? key : path + "." + key;
      if (std::find(seen.begin(), seen.end(), field) != seen.end())
        error(at, "field '" + child + "' is set more than once");
      seen.push_back(field);
      this->value(field->value.type, value, child);
    }
    for (const auto* f : def.fields.vec) {
      if (!f->IsRequired()) continue;
      bool present = false;
      for (const auto& [key, value] : object.object) present = present || (key == f->name && value.kind != io::Json::kNull);
      if (!present)
        error(object.offset, "field '" + (path.empty() ? f->name : path + "." + f->name) + "' is required but missing");
    }
  }

 private:
  [[noreturn]] void error(size_t offset, const std::string& what) const {
    const auto at = io::position_of(text_, offset);
    fail(ErrorCode::kParse, source_ + ", line " + std::to_string(at.line) + ", column " + std::to_string(at.column) +
                                ": " + what);
  }
  [[noreturn]] void expected(const io::Json& v, const std::string& path, const std::string& what) const {
    error(v.offset, "field '" + path + "': expected " + what + ", not " + describe(v));
  }

  void value(const flatbuffers::Type& type, const io::Json& v, const std::string& path) {
    using io::Json;
    using flatbuffers::BaseType;
    if (v.kind == Json::kNull) return;  // null: the field is unset
    const BaseType base = type.base_type;
    if (type.enum_def) {
      // Enums (none in olm.fbs today): FlatBuffers takes a name or a number.
      if (v.kind != Json::kString && v.kind != Json::kInt) expected(v, path, "an enum name or an integer");
      return;
    }
    if (base == flatbuffers::BASE_TYPE_BOOL) {
      if (v.kind != Json::kBool) expected(v, path, "true or false");
    } else if (base == flatbuffers::BASE_TYPE_FLOAT || base == flatbuffers::BASE_TYPE_DOUBLE) {
      if (v.kind != Json::kInt && v.kind != Json::kOther) expected(v, path, "a number");
      // Locale-independent; out of range is an overflow unless the exponent is negative
      // (underflow reads as a denormal or 0, as FlatBuffers' parser does).
      double d = 0;
      const auto r = std::from_chars(v.number.data(), v.number.data() + v.number.size(), d);
      const bool underflow = r.ec == std::errc::result_out_of_range &&
                             (v.number.find("e-") != std::string::npos || v.number.find("E-") != std::string::npos);
      const bool fits = underflow || (r.ec == std::errc() && (base == flatbuffers::BASE_TYPE_DOUBLE
                                                                   ? std::isfinite(d)
                                                                   : std::isfinite(static_cast<float>(d))));
      if (!fits) expected(v, path, "a finite number");
    } else if (flatbuffers::IsInteger(base)) {
      int64_t lo = 0;
      uint64_t hi = 0;
      switch (base) {
        case flatbuffers::BASE_TYPE_CHAR: lo = INT8_MIN, hi = INT8_MAX; break;
        case flatbuffers::BASE_TYPE_UCHAR: lo = 0, hi = UINT8_MAX; break;
        case flatbuffers::BASE_TYPE_SHORT: lo = INT16_MIN, hi = INT16_MAX; break;
        case flatbuffers::BASE_TYPE_USHORT: lo = 0, hi = UINT16_MAX; break;
        case flatbuffers::BASE_TYPE_INT: lo = INT32_MIN, hi = INT32_MAX; break;
        case flatbuffers::BASE_TYPE_UINT: lo = 0, hi = UINT32_MAX; break;
        case flatbuffers::BASE_TYPE_ULONG: lo = 0, hi = INT64_MAX; break;  // JSON integers we read are int64
        default: lo = INT64_MIN, hi = INT64_MAX; break;
      }
      const bool integral_text = v.kind == Json::kOther && v.number.find_first_of(".eE") == std::string::npos;
      if (v.kind != Json::kInt && !integral_text) expected(v, path, "an integer");
      if (v.kind != Json::kInt || v.integer < lo || (v.integer >= 0 && static_cast<uint64_t>(v.integer) > hi))
        expected(v, path, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    } else if (base == flatbuffers::BASE_TYPE_STRING) {
      if (v.kind != Json::kString) expected(v, path, "a string");
      size_t bad = 0;
      if (!io::valid_utf8(v.string, &bad))
        error(v.offset, "field '" + path + "': not valid UTF-8 (byte " + std::to_string(bad) + ")");
    } else if (base == flatbuffers::BASE_TYPE_STRUCT && type.struct_def) {
      if (v.kind != Json::kObject) expected(v, path, "an object");
      table(*type.struct_def, v, path);
    } else if (base == flatbuffers::BASE_TYPE_VECTOR) {
      if (v.kind != Json::kArray) expected(v, path, "an array");
      const flatbuffers::Type element = type.VectorType();
      for (size_t i = 0; i < v.array.size(); ++i) {
        const std::string child = path + "[" + std::to_string(i) + "]";
        if (v.array[i].kind == Json::kNull) error(v.array[i].offset, "field '" + child + "': null in an array");
        value(element, v.array[i], child);
      }
    }
    // Unions and fixed structs are not in olm.fbs; FlatBuffers' parser checks them.
  }

  std::string_view text_;
  std::string source_;
  std::string root_;
};

// The schema's text generation, our way: FlatBuffers 2.0 prints doubles with 12 fixed
// decimals (1e-17 becomes 0) and cannot print invalid UTF-8. This writes the shortest text
// that reads back to the same double, and refuses what it cannot write (a string that is not
// UTF-8, a non-finite number), naming the field: the same walk validates configs whichever
// door they came in by, so whatever is accepted can be written as JSON and read back.
class JsonWriter {
 public:
  explicit JsonWriter(ErrorCode code) : code_(code) {}

  std::string document(const flatbuffers::StructDef& def, const flatbuffers::Table* root, const std::string& prefix) {
    out_.clear();
    table(def, root, prefix, 0);
    out_ += "\n";
    return out_;
  }

 private:
  void newline(int depth) {
    out_ += "\n";
    out_.append(static_cast<size_t>(depth) * 2, ' ');
  }

  void table(const flatbuffers::StructDef& def, const flatbuffers::Table* t, const std::string& path, int depth) {
    require(!def.fixed, ErrorCode::kInternal, path + ": fixed structs are not supported");
    out_ += "{";
    bool first = true;
    for (const auto* f : def.fields.vec) {
      const auto offset = f->value.offset;
      if (f->deprecated || !t->CheckField(offset)) continue;
      out_ += first ? "" : ",";
      first = false;
      newline(depth + 1);
      out_ += io::quote_json(f->name) + ": ";
      field(f->value.type, t, offset, path.empty() ? f->name : path + "." + f->name, depth + 1);
    }
    if (!first) newline(depth);
    out_ += "}";
  }

  template <class T>
  void scalar_text(T value) {
    if constexpr (std::is_floating_point_v<T>) {
      out_ += io::format_double(static_cast<double>(value));
    } else {
      out_ += std::to_string(value);
    }
  }

  template <class T>
  void number(T value, const std::string& path) {
    if constexpr (std::is_floating_point_v<T>)
      require(std::isfinite(value), code_, path + ": not a finite number (JSON cannot hold it)");
    scalar_text(value);
  }

  void string(const flatbuffers::String* s, const std::string& path) {
    require(s != nullptr, ErrorCode::kInternal, path + ": missing string");
    const std::string_view text(s->c_str(), s->size());
    size_t bad = 0;
    if (!io::valid_utf8(text, &bad)) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[bad]));
      fail(code_, path + ": not valid UTF-8 (byte " + hex + " at offset " + std::to_string(bad) + ")");
    }
    out_ += io::quote_json(text);
  }

  void field(const flatbuffers::Type& type, const flatbuffers::Table* t, flatbuffers::voffset_t offset,
             const std::string& path, int depth) {
    using namespace flatbuffers;
    switch (type.base_type) {
      case BASE_TYPE_BOOL: out_ += t->GetField<uint8_t>(offset, 0) ? "true" : "false"; return;
      case BASE_TYPE_CHAR: return number(static_cast<int>(t->GetField<int8_t>(offset, 0)), path);
      case BASE_TYPE_UCHAR: return number(static_cast<unsigned>(t->GetField<uint8_t>(offset, 0)), path);
      case BASE_TYPE_SHORT: return number(t->GetField<int16_t>(offset, 0), path);
      case BASE_TYPE_USHORT: return number(t->GetField<uint16_t>(offset, 0), path);
      case BASE_TYPE_INT: return number(t->GetField<int32_t>(offset, 0), path);
      case BASE_TYPE_UINT: return number(t->GetField<uint32_t>(offset, 0), path);
      case BASE_TYPE_LONG: return number(t->GetField<int64_t>(offset, 0), path);
      case BASE_TYPE_ULONG: return number(t->GetField<uint64_t>(offset, 0), path);
      case BASE_TYPE_FLOAT: return number(t->GetField<float>(offset, 0), path);
      case BASE_TYPE_DOUBLE: return number(t->GetField<double>(offset, 0), path);
      case BASE_TYPE_STRING: return string(t->GetPointer<const String*>(offset), path);
      case BASE_TYPE_STRUCT:
        return table(*type.struct_def, t->GetPointer<const Table*>(offset), path, depth);
      case BASE_TYPE_VECTOR: return vector(type.VectorType(), t->GetPointer<const uint8_t*>(offset), path, depth);
      default: fail(ErrorCode::kInternal, path + ": unsupported field type in the schema");
    }
  }

  template <class T>
  void scalars(const uint8_t* vec, const std::string& path, int depth) {
    const auto* v = reinterpret_cast<const flatbuffers::Vector<T>*>(vec);
    open_array(v->size());
    for (flatbuffers::uoffset_t i = 0; i < v->size(); ++i) {
      element(i, depth);
      if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, int8_t>)
        number(static_cast<int>(v->Get(i)), path + "[" + std::to_string(i) + "]");
      else
        number(v->Get(i), path + "[" + std::to_string(i) + "]");
    }
    close_array(v->size(), depth);
  }
  void open_array(size_t) { out_ += "["; }
  void element(size_t i, int depth) {
    out_ += i ? "," : "";
    newline(depth + 1);
  }
  void close_array(size_t n, int depth) {
    if (n) newline(depth);
    out_ += "]";
  }

  void vector(const flatbuffers::Type& element_type, const uint8_t* vec, const std::string& path, int depth) {
    using namespace flatbuffers;
    switch (element_type.base_type) {
      case BASE_TYPE_BOOL: {
        const auto* v = reinterpret_cast<const Vector<uint8_t>*>(vec);
        open_array(v->size());
        for (uoffset_t i = 0; i < v->size(); ++i) element(i, depth), out_ += v->Get(i) ? "true" : "false";
        return close_array(v->size(), depth);
      }
      case BASE_TYPE_CHAR: return scalars<int8_t>(vec, path, depth);
      case BASE_TYPE_UCHAR: return scalars<uint8_t>(vec, path, depth);
      case BASE_TYPE_SHORT: return scalars<int16_t>(vec, path, depth);
      case BASE_TYPE_USHORT: return scalars<uint16_t>(vec, path, depth);
      case BASE_TYPE_INT: return scalars<int32_t>(vec, path, depth);
      case BASE_TYPE_UINT: return scalars<uint32_t>(vec, path, depth);
      case BASE_TYPE_LONG: return scalars<int64_t>(vec, path, depth);
      case BASE_TYPE_ULONG: return scalars<uint64_t>(vec, path, depth);
      case BASE_TYPE_FLOAT: return scalars<float>(vec, path, depth);
      case BASE_TYPE_DOUBLE: return scalars<double>(vec, path, depth);
      case BASE_TYPE_STRING: {
        const auto* v = reinterpret_cast<const Vector<Offset<String>>*>(vec);
        open_array(v->size());
        for (uoffset_t i = 0; i < v->size(); ++i) element(i, depth), string(v->Get(i), path + "[" + std::to_string(i) + "]");
        return close_array(v->size(), depth);
      }
      case BASE_TYPE_STRUCT: {
        const auto* v = reinterpret_cast<const Vector<Offset<Table>>*>(vec);
        open_array(v->size());
        for (uoffset_t i = 0; i < v->size(); ++i)
          element(i, depth), table(*element_type.struct_def, v->Get(i), path + "[" + std::to_string(i) + "]", depth + 1);
        return close_array(v->size(), depth);
      }
      default: fail(ErrorCode::kInternal, path + ": unsupported vector type in the schema");
    }
  }

  ErrorCode code_;
  std::string out_;
};

}  // namespace

// One parsed copy of the schema for reading its table definitions (never mutated after the
// first call, so it may be shared between threads).
const flatbuffers::StructDef& schema_table(const char* root_type) {
  static const std::unique_ptr<flatbuffers::Parser> schema = make_parser("TransformerConfig");
  const auto* def = schema->structs_.Lookup(std::string("olm.fb.") + root_type);
  require(def != nullptr, ErrorCode::kInternal, std::string("schema/olm.fbs has no table ") + root_type);
  return *def;
}

}  // namespace config_internal

using namespace config_internal;

std::vector<uint8_t> json_to_flatbuffer(std::string_view text, const char* root_type,
                                        const std::string& what) {
  require(text.find('\0') == std::string_view::npos, ErrorCode::kParse, what + ": contains a NUL byte");
  // Our reader first: it knows JSON's kinds and positions, so every problem it finds names
  // the line, the field's path and what was expected. (Standard JSON only: no comments.)
  const io::Json doc = io::parse_json(text.data(), text.size(), what, 64);
  require(doc.kind == io::Json::kObject, ErrorCode::kParse,
          what + ": expected a JSON object ({...}) at the top level, not " + describe(doc));
  auto parser = make_parser(root_type);
  JsonSchemaChecker(text, what, root_description(root_type)).table(*parser->root_struct_def_, doc, "");
  const std::string source(text);  // the parser wants NUL-terminated text
  if (!parser->ParseJson(source.c_str()))
    fail(ErrorCode::kParse, what + ": " + with_field_name(source, parser->error_));
  const uint8_t* buf = parser->builder_.GetBufferPointer();
  return {buf, buf + parser->builder_.GetSize()};
}

std::string flatbuffer_to_json(const uint8_t* buffer, const char* root_type) {
  return JsonWriter(ErrorCode::kInternal)
      .document(schema_table(root_type), flatbuffers::GetRoot<flatbuffers::Table>(buffer), "");
}

void check_json_writable(const uint8_t* buffer, const char* root_type) {
  JsonWriter(ErrorCode::kInvalidConfig)
      .document(schema_table(root_type), flatbuffers::GetRoot<flatbuffers::Table>(buffer), "");
}

std::string read_text_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(ErrorCode::kIo, path + ": cannot open: " + std::strerror(errno));
  std::string text;
  char chunk[65536];
  size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) {
    text.append(chunk, n);
    if (text.size() > (size_t{1} << 30)) {
      std::fclose(f);
      fail(ErrorCode::kIo, path + ": larger than 1 GiB; not a config");
    }
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  require(!failed, ErrorCode::kIo, path + ": read error");
  return text;
}

}  // namespace olm
