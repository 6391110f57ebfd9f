// The round-trip properties the four config targets share (Config and TrainConfig alike).
#pragma once
#include <exception>
#include <optional>
#include <string>

#include "fuzz/fuzz_util.h"

namespace olm::fuzz {

// `config` was accepted by one door: JSON and FlatBuffer round trips must give it back.
template <class C>
void check_config_round_trips(const C& accepted) {
  const std::string json = accepted.to_json();
  const auto fb = accepted.to_flatbuffer();
  std::optional<C> via_json, via_fb;
  try {
    via_json = C::from_json(json);
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("to_json's output is rejected: ") + e.what() + "\n" + json);
  }
  try {
    via_fb = C::from_flatbuffer(fb.data(), fb.size());
  } catch (const std::exception& e) {
    OLM_FUZZ_CHECK(false, std::string("to_flatbuffer's output is rejected: ") + e.what() + "\n" + json);
  }
  OLM_FUZZ_CHECK(via_json->to_flatbuffer() == fb, "from_json(to_json(c)) is another config than c:\n" + json);
  OLM_FUZZ_CHECK(via_json->to_json() == json, "to_json is not a fixed point:\n" + json + "\n" + via_json->to_json());
  OLM_FUZZ_CHECK(via_fb->to_flatbuffer() == fb, "to_flatbuffer is not a fixed point:\n" + json);
  OLM_FUZZ_CHECK(via_fb->to_json() == json, "the FlatBuffer door reads another config:\n" + json);
}

}  // namespace olm::fuzz
