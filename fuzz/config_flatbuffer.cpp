// Model config FlatBuffers (Config::from_flatbuffer: Verifier, identifier, validation).
// Properties of an accepted buffer: it converts to JSON and back to an equal config (same
// FlatBuffer, same JSON) and its re-serialisation reads back the same (fuzz/config_roundtrip.h);
// its parameter and FLOP accounting does not overflow (UBSan). Rejections are olm::Error.
#include "core/config/config.h"
#include "fuzz/config_roundtrip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<olm::Config> config;
  try {
    config = olm::Config::from_flatbuffer(data, size);
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  (void)config->num_params();
  (void)config->num_flops_per_token(1);
  olm::fuzz::check_config_round_trips(*config);
  return 0;
}
