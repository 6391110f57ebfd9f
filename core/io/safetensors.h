// The safetensors format (an 8-byte little-endian header length, a JSON header, raw data),
// read through a memory map with every header field validated before any tensor is touched.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

namespace olm::io {

struct SafetensorsEntry {
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Throws Error(kIo) when the file cannot be opened or mapped and Error(kParse) for anything
  // malformed: short files, a header length beyond the file, bad JSON, unknown dtypes, offsets
  // outside the data section or inconsistent with the shape.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A CPU tensor holding a copy of the entry's data.
  at::Tensor read(const SafetensorsEntry& entry) const;
  // A read-only CPU tensor over the mapped bytes themselves (no copy), valid while this file
  // is open; for copying straight into a destination tensor. Never write through it.
  at::Tensor view(const SafetensorsEntry& entry) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device; copied to the host) atomically: see atomic_file.h.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace olm::io
