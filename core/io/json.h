// A small JSON reader: objects, arrays, strings, numbers and literals. Depth-limited; every
// failure is Error(kParse) naming the context, line and column. Used where a document must be
// inspected as written: safetensors headers, and config JSON checked field by field against
// the schema before FlatBuffers' parser sees it (which turns 1 into true and reports errors
// without the field's path).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace olm::io {

struct Json {
  // kInt: an integer literal that fits in int64; kOther: any other number (a fraction, an
  // exponent, or an integer too large for int64), kept as its text in `number`.
  enum Kind { kNull, kBool, kInt, kOther, kString, kArray, kObject } kind = kNull;
  int64_t integer = 0;      // kInt
  bool boolean = false;     // kBool
  std::string number;       // kInt and kOther: the number as written
  std::string string;       // kString (escapes decoded to UTF-8)
  std::vector<Json> array;  // kArray
  std::vector<std::pair<std::string, Json>> object;  // kObject, in document order
  std::vector<size_t> key_offsets;  // kObject: byte offset of each member's key
  size_t offset = 0;        // byte offset of the value in the text
};

Json parse_json(const char* text, size_t size, const std::string& context, int max_depth = 32);

// 1-based line and column (in bytes) of a byte offset.
struct TextPosition {
  size_t line = 1;
  size_t column = 1;
};
TextPosition position_of(std::string_view text, size_t offset);

// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF);
// on failure *bad_offset (if given) is the offset of the first bad byte.
bool valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

// The shortest decimal text that reads back as exactly `v` (finite values only), written as
// ECMAScript's Number.prototype.toString does: plain digits for 1e-7 <= |v| < 1e21
// ("0.000001", "500000", "0.02"), else an exponent ("1e-17", "1.5e+300").
std::string format_double(double v);

// A JSON string literal (quotes included) for UTF-8 text: '"', '\\' and control characters
// escaped, everything else as is.
std::string quote_json(std::string_view s);

}  // namespace olm::io
