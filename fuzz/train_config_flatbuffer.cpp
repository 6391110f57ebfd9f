// Train config FlatBuffers (TrainConfig::from_flatbuffer: Verifier, identifier "OLMT",
// validation). Properties of an accepted buffer: it converts to JSON and back to an equal
// config and its re-serialisation reads back the same (fuzz/config_roundtrip.h).
// Rejections are olm::Error, never another exception.
#include "core/train/train_config.h"
#include "fuzz/config_roundtrip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<olm::train::TrainConfig> config;
  try {
    config = olm::train::TrainConfig::from_flatbuffer(data, size);
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  olm::fuzz::check_config_round_trips(*config);
  return 0;
}
