// Model config FlatBuffers (Config::from_flatbuffer: Verifier, identifier, validation).
// Properties of an accepted buffer: it converts to JSON and back to an equal config (same
// FlatBuffer, same JSON), and its re-serialisation is accepted as the same config.
// Rejections are olm::Error, never another exception.
#include <exception>

#include "core/config/config.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::optional<olm::Config> config;
  try {
    config = olm::Config::from_flatbuffer(data, size);
  } catch (const olm::Error&) {
    return 0;
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("rejected with a non-olm exception: ") + e.what());
  }
  const std::string json = config->to_json();
  const auto fb = config->to_flatbuffer();
  std::optional<olm::Config> via_json, via_fb;
  try {
    via_json = olm::Config::from_json(json);
    via_fb = olm::Config::from_flatbuffer(fb.data(), fb.size());
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("an accepted buffer's JSON or re-serialisation is rejected: ") + e.what() +
                              "\n" + json);
  }
  OLM_FUZZ_CHECK(via_json->to_flatbuffer() == fb, "JSON and back gives another config:\n" + json);
  OLM_FUZZ_CHECK(via_json->to_json() == json, "JSON and back gives other JSON:\n" + json);
  OLM_FUZZ_CHECK(via_fb->to_flatbuffer() == fb, "to_flatbuffer is not a fixed point:\n" + json);
  return 0;
}
