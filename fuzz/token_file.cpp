// Raw token files (TokenDataset::from_files on numpy memmaps, uint16 or uint32, concatenated).
// The input's first byte picks the dtype, its second where the rest splits into two files.
// Properties of accepted files: num_tokens is the files' bytes over the element size, every
// token is the little-endian value of its bytes, in file order across the boundary, and lies
// in the vocabulary. A rejection is olm::Error and happens exactly when a rule is broken.
#include <exception>

#include "core/data/token_data.h"
#include "fuzz/fuzz_util.h"

namespace {
constexpr int64_t kVocab = 50304;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const bool u32 = data[0] & 1;
  const size_t body = size - 2;
  const size_t split = body * data[1] / 255;
  const std::string a = olm::fuzz::scratch_dir() + "/a.bin", b = olm::fuzz::scratch_dir() + "/b.bin";
  olm::fuzz::write_file(a, data + 2, split);
  olm::fuzz::write_file(b, data + 2 + split, body - split);
  const uint8_t* bytes = data + 2;
  const size_t es = u32 ? 4 : 2;

  // What the rules say: both files non-empty, whole elements, every token below the vocabulary.
  bool valid = split > 0 && body - split > 0 && split % es == 0 && (body - split) % es == 0;
  std::vector<int64_t> expected;
  for (size_t i = 0; valid && i + es <= body; i += es) {
    uint64_t v = 0;
    for (size_t k = 0; k < es; ++k) v |= uint64_t{bytes[i + k]} << (8 * k);
    expected.push_back(static_cast<int64_t>(v));
    if (static_cast<int64_t>(v) >= kVocab) valid = false;
  }

  olm::data::DatasetOptions options;
  options.vocab_size = kVocab;
  options.raw_dtype = u32 ? "uint32" : "uint16";
  options.sequence_length = valid ? static_cast<int64_t>(expected.size()) : 1;
  std::shared_ptr<olm::data::TokenDataset> ds;
  try {
    ds = olm::data::TokenDataset::from_files({a, b}, options);
  } catch (const olm::Error& e) {
    OLM_FUZZ_CHECK(!valid, std::string("valid token files rejected: ") + e.what());
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  OLM_FUZZ_CHECK(valid, "invalid token files accepted");
  OLM_FUZZ_CHECK(ds->num_tokens() == static_cast<int64_t>(expected.size()), "num_tokens is not bytes / element size");
  const auto tokens = ds->instance(0);
  const int64_t* t = tokens.data_ptr<int64_t>();
  for (size_t i = 0; i < expected.size(); ++i)
    OLM_FUZZ_CHECK(t[i] == expected[i], "token " + std::to_string(i) + " reads " + std::to_string(t[i]) +
                                            ", its bytes say " + std::to_string(expected[i]));
  return 0;
}
