// Model config JSON (Config::from_json). Properties of an accepted input: to_json is accepted
// again, gives an equal config (same FlatBuffer) and is a fixed point; the FlatBuffer door
// reads the same config back (fuzz/config_roundtrip.h); its parameter and FLOP accounting
// does not overflow (UBSan). Rejections are olm::Error, never another exception.
#include <string_view>

#include "core/config/config.h"
#include "fuzz/config_roundtrip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<olm::Config> config;
  try {
    config = olm::Config::from_json(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  (void)config->num_params();  // accepted configs are bounded (at most 1e15 parameters)
  (void)config->num_flops_per_token(1);
  olm::fuzz::check_config_round_trips(*config);
  return 0;
}
