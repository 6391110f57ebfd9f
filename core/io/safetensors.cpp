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
#include <set>

#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/json.h"

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

    Json root = parse_json(reinterpret_cast<const char*>(bytes + 8), header_len, ctx + " header");
    require(root.kind == Json::kObject, ErrorCode::kParse, ctx + ": the header is not a JSON object");
    // A name given twice would leave readers to pick one (the reference reader refuses it).
    std::set<std::string> names;
    for (auto& [name, value] : root.object) {
      require(names.insert(name).second, ErrorCode::kParse, ctx + ": '" + name + "' appears twice in the header");
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

at::Tensor SafetensorsFile::view(const SafetensorsEntry& entry) const {
  if (entry.end == entry.begin) return at::empty(entry.shape, at::TensorOptions().dtype(entry.dtype));
  return at::from_blob(const_cast<uint8_t*>(data_ + entry.begin), entry.shape, at::TensorOptions().dtype(entry.dtype));
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
