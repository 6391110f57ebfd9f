// SentencePiece .model files (load_sentencepiece: olm's own reading of the ModelProto, then
// Debian's libsentencepiece). Rejections are olm::Error; an accepted tokenizer must have the
// properties of fuzz/tokenizer_check.h.
#include "fuzz/tokenizer_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = olm::fuzz::scratch_dir() + "/tokenizer.model";
  olm::fuzz::write_file(path, data, size);
  return olm::fuzz::fuzz_tokenizer_loader([&] { return olm::tokenizer::load_sentencepiece(path); }, data, size);
}
