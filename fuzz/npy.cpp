// .npy token files (TokenDataset::from_files on a "*.npy" path: magic, version, header dict,
// dtype, shape, data length, vocabulary). Properties of an accepted file: the data section
// the header implies holds exactly num_tokens elements of 2, 4 or 8 bytes, every token reads
// as those bytes' little-endian value and lies in the vocabulary. Rejections are olm::Error.
#include <exception>

#include "core/data/token_data.h"
#include "fuzz/fuzz_util.h"

namespace {
constexpr int64_t kVocab = 1 << 20;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = olm::fuzz::scratch_dir() + "/tokens.npy";
  olm::fuzz::write_file(path, data, size);
  olm::data::DatasetOptions options;
  options.sequence_length = 1;
  options.vocab_size = kVocab;
  std::shared_ptr<olm::data::TokenDataset> ds;
  try {
    ds = olm::data::TokenDataset::from_files({path}, options);
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  // The header's extent, read independently: version 1 has a 2-byte length, 2 and 3 a 4-byte one.
  OLM_FUZZ_CHECK(size >= 10, "a file shorter than the fixed header was accepted");
  const bool v1 = data[6] == 1;
  OLM_FUZZ_CHECK(data[6] >= 1 && data[6] <= 3, "an unknown format version was accepted");
  OLM_FUZZ_CHECK(v1 || size >= 12, "a truncated v2/v3 header was accepted");
  uint64_t header_len = data[8] | (uint64_t{data[9]} << 8);
  if (!v1) header_len |= (uint64_t{data[10]} << 16) | (uint64_t{data[11]} << 24);
  const uint64_t offset = (v1 ? 10 : 12) + header_len;
  OLM_FUZZ_CHECK(offset <= size, "the header runs past the file");
  const int64_t n = ds->num_tokens();
  OLM_FUZZ_CHECK(n > 0, "an empty array was accepted");
  const uint64_t bytes = size - offset;
  OLM_FUZZ_CHECK(bytes % static_cast<uint64_t>(n) == 0, "the data is not num_tokens whole elements");
  const uint64_t es = bytes / static_cast<uint64_t>(n);
  OLM_FUZZ_CHECK(es == 2 || es == 4 || es == 8, "element size " + std::to_string(es));

  options.sequence_length = n;
  auto whole = olm::data::TokenDataset::from_files({path}, options);
  const auto tokens = whole->instance(0);
  OLM_FUZZ_CHECK(tokens.numel() == n, "instance(0) is not every token");
  const int64_t* t = tokens.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    uint64_t v = 0;
    for (uint64_t b = 0; b < es; ++b) v |= uint64_t{data[offset + i * es + b]} << (8 * b);
    OLM_FUZZ_CHECK(t[i] >= 0 && t[i] < kVocab, "token " + std::to_string(i) + " is outside the vocabulary");
    OLM_FUZZ_CHECK(static_cast<uint64_t>(t[i]) == v, "token " + std::to_string(i) + " reads other bytes");
  }
  return 0;
}
