// Model config JSON (Config::from_json). Properties of an accepted input: to_json is accepted
// again, gives an equal config (same FlatBuffer) and is a fixed point; the FlatBuffer door
// reads the same config back. Rejections are olm::Error, never another exception.
#include <exception>
#include <string_view>

#include "core/config/config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<olm::Config> config;
  try {
    config = olm::Config::from_json(text);
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  const std::string json = config->to_json();
  const auto fb = config->to_flatbuffer();
  std::optional<olm::Config> again;
  try {
    again = olm::Config::from_json(json);
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("to_json's output is rejected: ") + e.what() + "\n" + json);
  }
  OLM_FUZZ_CHECK(again->to_flatbuffer() == fb, "from_json(to_json(c)) differs from c:\n" + json);
  OLM_FUZZ_CHECK(again->to_json() == json, "to_json is not a fixed point:\n" + json + "\n" + again->to_json());
  std::optional<olm::Config> via_fb;
  try {
    via_fb = olm::Config::from_flatbuffer(fb.data(), fb.size());
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("to_flatbuffer's output is rejected: ") + e.what() + "\n" + json);
  }
  OLM_FUZZ_CHECK(via_fb->to_json() == json, "the FlatBuffer door reads another config:\n" + json);
  return 0;
}
