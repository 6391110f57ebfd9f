// SentencePiece .model files (load_sentencepiece: olm's own reading of the ModelProto, then
// Debian's libsentencepiece). Rejections are olm::Error; an accepted tokenizer must have the
// properties of fuzz/tokenizer_check.h.
#include <exception>

#include "fuzz/tokenizer_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = olm::fuzz::scratch_dir() + "/tokenizer.model";
  olm::fuzz::write_file(path, data, size);
  std::shared_ptr<const olm::tokenizer::Tokenizer> tok;
  try {
    tok = olm::tokenizer::load_sentencepiece(path);
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  olm::fuzz::check_tokenizer(*tok, data, size);
  return 0;
}
