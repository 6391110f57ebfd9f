#include "core/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>

#include "core/error.h"
#include "core/io/atomic_file.h"

namespace olm::io {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference implementation

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf},   {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort},  {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

const char* dtype_name(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (d.type == type) return d.name;
  fail(ErrorCode::kInvalidArgument, std::string("safetensors: cannot store dtype ") + c10::toString(type));
}

// A small JSON reader for the header: objects, arrays, strings, integers, and (skipped)
// literals and fractions. Depth-limited; every failure names the byte offset.
struct Json {
  enum Kind { kNull, kBool, kInt, kOther, kString, kArray, kObject } kind = kNull;
  int64_t integer = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;
};

class JsonReader {
 public:
  JsonReader(const char* text, size_t size, std::string context)
      : p_(text), begin_(text), end_(text + size), context_(std::move(context)) {}

  Json document() {
    Json value = parse_value(0);
    skip_space();
    if (p_ != end_) error("unexpected trailing characters");
    return value;
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail(ErrorCode::kParse, context_ + ": malformed JSON header at byte " +
                                std::to_string(p_ - begin_) + ": " + what);
  }
  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  void expect(char c) {
    skip_space();
    if (p_ >= end_ || *p_ != c) error(std::string("expected '") + c + "'");
    ++p_;
  }
  bool consume(char c) {
    skip_space();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    while (true) {
      if (p_ >= end_) error("unterminated string");
      const char c = *p_++;
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (p_ >= end_) error("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          if (end_ - p_ < 4) error("short \\u escape");
          unsigned code = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = *p_++;
            code <<= 4;
            if (h >= '0' && h <= '9') code |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f') code |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') code |= static_cast<unsigned>(h - 'A' + 10);
            else error("bad \\u escape");
          }
          // Encode the code unit as UTF-8 (surrogates are kept as-is; names never use them).
          if (code < 0x80) {
            out.push_back(static_cast<char>(code));
          } else if (code < 0x800) {
            out.push_back(static_cast<char>(0xC0 | (code >> 6)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
          } else {
            out.push_back(static_cast<char>(0xE0 | (code >> 12)));
            out.push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
            out.push_back(static_cast<char>(0x80 | (code & 0x3F)));
          }
          break;
        }
        default: error("bad escape");
      }
    }
  }

  Json parse_number() {
    Json value;
    const char* start = p_;
    if (p_ < end_ && *p_ == '-') ++p_;
    bool integral = true;
    while (p_ < end_ && ((*p_ >= '0' && *p_ <= '9') || *p_ == '.' || *p_ == 'e' || *p_ == 'E' ||
                         *p_ == '+' || *p_ == '-')) {
      if (!(*p_ >= '0' && *p_ <= '9')) integral = false;
      ++p_;
    }
    if (p_ == start || (p_ - start == 1 && *start == '-')) error("expected a value");
    if (!integral) {
      value.kind = Json::kOther;
      return value;
    }
    const bool negative = *start == '-';
    uint64_t magnitude = 0;
    for (const char* q = start + (negative ? 1 : 0); q < p_; ++q) {
      const uint64_t digit = static_cast<uint64_t>(*q - '0');
      if (magnitude > (std::numeric_limits<uint64_t>::max() - digit) / 10) error("integer overflow");
      magnitude = magnitude * 10 + digit;
    }
    if (magnitude > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) error("integer overflow");
    value.kind = Json::kInt;
    value.integer = negative ? -static_cast<int64_t>(magnitude) : static_cast<int64_t>(magnitude);
    return value;
  }

  Json parse_value(int depth) {
    if (depth > 32) error("nesting too deep");
    skip_space();
    if (p_ >= end_) error("unexpected end of header");
    Json value;
    const char c = *p_;
    if (c == '{') {
      ++p_;
      value.kind = Json::kObject;
      if (consume('}')) return value;
      do {
        skip_space();
        std::string key = parse_string();
        expect(':');
        value.object.emplace_back(std::move(key), parse_value(depth + 1));
      } while (consume(','));
      expect('}');
    } else if (c == '[') {
      ++p_;
      value.kind = Json::kArray;
      if (consume(']')) return value;
      do {
        value.array.push_back(parse_value(depth + 1));
      } while (consume(','));
      expect(']');
    } else if (c == '"') {
      value.kind = Json::kString;
      value.string = parse_string();
    } else if (c == 't' || c == 'f' || c == 'n') {
      for (const char* word : {"true", "false", "null"}) {
        const size_t n = std::strlen(word);
        if (static_cast<size_t>(end_ - p_) >= n && std::strncmp(p_, word, n) == 0) {
          p_ += n;
          value.kind = c == 'n' ? Json::kNull : Json::kBool;
          return value;
        }
      }
      error("bad literal");
    } else {
      value = parse_number();
    }
    return value;
  }

  const char* p_;
  const char* begin_;
  const char* end_;
  std::string context_;
};

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string ctx = "safetensors file '" + path + "'";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::kIo, "cannot open " + ctx + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::kIo, ctx + " is not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail(ErrorCode::kParse, ctx + " is " + std::to_string(size_) +
                                " bytes long, too short for the 8-byte header length");
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail(ErrorCode::kIo, "cannot map " + ctx + ": " + std::strerror(errno));
  }
  try {
    const auto* bytes = static_cast<const uint8_t*>(map_);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
    const uint64_t available = size_ - 8;
    require(header_len <= available, ErrorCode::kParse,
            ctx + ": the header claims " + std::to_string(header_len) +
                " bytes but only " + std::to_string(available) + " follow (truncated file?)");
    require(header_len <= kMaxHeaderBytes, ErrorCode::kParse,
            ctx + ": the header claims " + std::to_string(header_len) +
                " bytes, more than the 100 MiB limit");
    data_ = bytes + 8 + header_len;
    const uint64_t data_size = available - header_len;

    Json root = JsonReader(reinterpret_cast<const char*>(bytes + 8), header_len, ctx).document();
    require(root.kind == Json::kObject, ErrorCode::kParse, ctx + ": the header is not a JSON object");
    for (auto& [name, value] : root.object) {
      if (name == "__metadata__") {
        require(value.kind == Json::kObject, ErrorCode::kParse, ctx + ": __metadata__ is not an object");
        for (auto& [k, v] : value.object) {
          require(v.kind == Json::kString, ErrorCode::kParse,
                  ctx + ": __metadata__ value '" + k + "' is not a string");
          metadata_[k] = v.string;
        }
        continue;
      }
      const std::string where = ctx + ": tensor '" + name + "'";
      require(value.kind == Json::kObject, ErrorCode::kParse, where + " is not an object");
      const Json* dtype = nullptr;
      const Json* shape = nullptr;
      const Json* offsets = nullptr;
      for (auto& [k, v] : value.object) {
        if (k == "dtype") dtype = &v;
        else if (k == "shape") shape = &v;
        else if (k == "data_offsets") offsets = &v;
      }
      require(dtype && dtype->kind == Json::kString, ErrorCode::kParse, where + ": missing or non-string dtype");
      require(shape && shape->kind == Json::kArray, ErrorCode::kParse, where + ": missing or non-array shape");
      require(offsets && offsets->kind == Json::kArray && offsets->array.size() == 2,
              ErrorCode::kParse, where + ": data_offsets must be an array of two integers");
      SafetensorsEntry entry;
      entry.name = name;
      bool known = false;
      for (const auto& d : kDtypes) {
        if (dtype->string == d.name) {
          entry.dtype = d.type;
          known = true;
        }
      }
      require(known, ErrorCode::kParse, where + ": unsupported dtype '" + dtype->string + "'");
      require(shape->array.size() <= 16, ErrorCode::kParse, where + ": more than 16 dimensions");
      const uint64_t element_size = c10::elementSize(entry.dtype);
      uint64_t nbytes = element_size;
      for (const auto& dim : shape->array) {
        require(dim.kind == Json::kInt && dim.integer >= 0, ErrorCode::kParse,
                where + ": shape entries must be non-negative integers");
        const auto d = static_cast<uint64_t>(dim.integer);
        require(d == 0 || nbytes <= data_size / d, ErrorCode::kParse,
                where + ": its shape needs more bytes than the file holds");
        nbytes *= d;
        entry.shape.push_back(dim.integer);
      }
      for (const auto& o : offsets->array)
        require(o.kind == Json::kInt && o.integer >= 0, ErrorCode::kParse,
                where + ": data_offsets must be non-negative integers");
      entry.begin = static_cast<uint64_t>(offsets->array[0].integer);
      entry.end = static_cast<uint64_t>(offsets->array[1].integer);
      require(entry.begin <= entry.end && entry.end <= data_size, ErrorCode::kParse,
              where + ": data_offsets [" + std::to_string(entry.begin) + ", " +
                  std::to_string(entry.end) + ") lie outside the " + std::to_string(data_size) +
                  "-byte data section (truncated file?)");
      require(entry.end - entry.begin == nbytes, ErrorCode::kParse,
              where + ": data_offsets span " + std::to_string(entry.end - entry.begin) +
                  " bytes but its dtype and shape need " + std::to_string(nbytes));
      entries_.push_back(std::move(entry));
    }
    // As the safetensors reference reader: the tensors tile the data section exactly, so no two
    // share bytes and no bytes hide between them.
    std::vector<const SafetensorsEntry*> by_offset;
    for (const auto& e : entries_) by_offset.push_back(&e);
    std::stable_sort(by_offset.begin(), by_offset.end(),
                     [](const SafetensorsEntry* a, const SafetensorsEntry* b) {
                       return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
                     });
    uint64_t expected = 0;
    for (const auto* e : by_offset) {
      require(e->begin == expected, ErrorCode::kParse,
              ctx + ": tensor '" + e->name + "' starts at byte " + std::to_string(e->begin) +
                  " of the data section but the previous tensor ends at " + std::to_string(expected) +
                  (e->begin < expected ? " (overlapping data_offsets)" : " (a gap between tensors)"));
      expected = e->end;
    }
    require(expected == data_size, ErrorCode::kParse,
            ctx + ": the tensors cover " + std::to_string(expected) + " bytes but the data section holds " +
                std::to_string(data_size) + " (trailing bytes)");
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

at::Tensor SafetensorsFile::read(const SafetensorsEntry& entry) const {
  auto out = at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
  if (entry.end > entry.begin) std::memcpy(out.data_ptr(), data_ + entry.begin, entry.end - entry.begin);
  return out;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> host;
  host.reserve(tensors.size());
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      header += (first ? "\"" : ",\"") + json_escape(k) + "\":\"" + json_escape(v) + "\"";
      first = false;
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, tensor] = tensors[i];
    host.push_back(tensor.detach().to(at::kCPU).contiguous());
    const at::Tensor& t = host.back();
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    std::string shape;
    for (int64_t d = 0; d < t.dim(); ++d) shape += (d ? "," : "") + std::to_string(t.size(d));
    header += (header.size() > 1 ? ",\"" : "\"") + json_escape(name) + "\":{\"dtype\":\"" +
              dtype_name(t.scalar_type()) + "\",\"shape\":[" + shape + "],\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += "}";
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  while ((header.size() % 8) != 0) header.push_back(' ');

  write_file_atomically(path, [&](int fd) {
    uint8_t len[8];
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    write_all(fd, len, sizeof len, path);
    write_all(fd, header.data(), header.size(), path);
    for (const auto& t : host)
      write_all(fd, t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(), path);
  });
}

}  // namespace olm::io
