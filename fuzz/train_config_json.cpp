// Train config JSON (TrainConfig::from_json, including its embedded model config). Properties
// of an accepted input: to_json is accepted again, gives an equal config (same FlatBuffer)
// and is a fixed point; the FlatBuffer door reads the same config back
// (fuzz/config_roundtrip.h). Rejections are olm::Error, never another exception.
#include <string_view>

#include "core/train/train_config.h"
#include "fuzz/config_roundtrip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<olm::train::TrainConfig> config;
  try {
    config = olm::train::TrainConfig::from_json(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  olm::fuzz::check_config_round_trips(*config);
  return 0;
}
