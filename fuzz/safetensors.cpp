// safetensors files (io::SafetensorsFile: header length, JSON header, dtypes, shapes, offsets).
// Properties of an accepted file: every tensor's bytes lie inside the file's data section and
// match its dtype and shape, the tensors tile the data section, every tensor reads; written
// again by save_safetensors, the file reads back with the same names, dtypes, shapes,
// metadata and bytes; names are unique. Rejections are olm::Error, never another exception.
#include <cstring>
#include <exception>
#include <set>

#include "core/io/safetensors.h"
#include "fuzz/fuzz_util.h"

namespace {

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto ca = a.contiguous(), cb = b.contiguous();
  const size_t n = static_cast<size_t>(ca.numel()) * ca.element_size();
  return n == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), n) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = olm::fuzz::scratch_dir() + "/in.safetensors";
  const std::string again_path = olm::fuzz::scratch_dir() + "/again.safetensors";
  olm::fuzz::write_file(path, data, size);
  std::unique_ptr<olm::io::SafetensorsFile> file;
  try {
    file = std::make_unique<olm::io::SafetensorsFile>(path);
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  OLM_FUZZ_CHECK(size >= 8 && header_len <= size - 8, "an accepted header runs past the file");
  const uint64_t data_size = size - 8 - header_len;
  uint64_t covered = 0;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::set<std::string> names;
  for (const auto& e : file->entries()) {
    OLM_FUZZ_CHECK(e.name != "__metadata__" && names.insert(e.name).second, "tensor name '" + e.name + "' twice");
    OLM_FUZZ_CHECK(e.begin <= e.end && e.end <= data_size, "tensor '" + e.name + "' lies outside the file");
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      OLM_FUZZ_CHECK(d >= 0, "tensor '" + e.name + "' has a negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    OLM_FUZZ_CHECK(e.end - e.begin == numel * c10::elementSize(e.dtype),
                   "tensor '" + e.name + "': its bytes do not match its dtype and shape");
    covered += e.end - e.begin;
    at::Tensor t;
    try {
      t = file->read(e);
    } catch (const std::exception& ex) {
      OLM_FUZZ_CHECK(false, "accepted tensor '" + e.name + "' cannot be read: " + ex.what());
    }
    OLM_FUZZ_CHECK(t.sizes().vec() == e.shape && t.scalar_type() == e.dtype, "tensor '" + e.name + "' reads wrong");
    OLM_FUZZ_CHECK(t.numel() == 0 || std::memcmp(t.data_ptr(), data + 8 + header_len + e.begin, e.end - e.begin) == 0,
                   "tensor '" + e.name + "' reads other bytes than the file's");
    tensors.emplace_back(e.name, t);
  }
  OLM_FUZZ_CHECK(covered == data_size, "the tensors do not tile the data section");

  try {
    olm::io::save_safetensors(again_path, tensors, file->metadata());
  } catch (const std::exception& ex) {
    OLM_FUZZ_CHECK(false, std::string("an accepted file cannot be written again: ") + ex.what());
  }
  std::unique_ptr<olm::io::SafetensorsFile> again;
  try {
    again = std::make_unique<olm::io::SafetensorsFile>(again_path);
  } catch (const std::exception& ex) {
    OLM_FUZZ_CHECK(false, std::string("the re-serialised file is rejected: ") + ex.what());
  }
  OLM_FUZZ_CHECK(again->metadata() == file->metadata(), "metadata differs after re-serialising");
  OLM_FUZZ_CHECK(again->entries().size() == tensors.size(), "tensor count differs after re-serialising");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& e = again->entries()[i];
    OLM_FUZZ_CHECK(e.name == tensors[i].first, "tensor name '" + tensors[i].first + "' reads back as '" + e.name + "'");
    OLM_FUZZ_CHECK(same_bytes(again->read(e), tensors[i].second), "tensor '" + e.name + "' reads back different");
  }
  return 0;
}
