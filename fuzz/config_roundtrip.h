// The round-trip properties the four config targets share (Config and TrainConfig alike).
//
// Known finding (fuzz/README.md): FlatBuffers 2.0.8's JSON printer writes doubles in fixed
// notation with 12 decimals, so to_json loses digits (1e-13 prints as 0.0). With
// OLM_FUZZ_TOLERATE=json-doubles the targets accept that first rounding and check the same
// properties strictly from the once-rounded config on; without it they fail on it.
#pragma once
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>

#include "fuzz/fuzz_util.h"

namespace olm::fuzz {

inline bool tolerate_json_doubles() {
  static const bool on = [] {
    const char* v = std::getenv("OLM_FUZZ_TOLERATE");
    return v && std::strstr(v, "json-doubles") != nullptr;
  }();
  return on;
}

// `config` was accepted by one door: JSON and FlatBuffer round trips must give it back.
template <class C>
void check_config_round_trips(const C& accepted) {
  std::optional<C> config = accepted;
  if (tolerate_json_doubles()) {
    try {
      config = C::from_json(accepted.to_json());
    } catch (const olm::Error&) {
      return;  // the rounding itself made it invalid (a 0.0 where a positive value is needed)
    }
  }
  const std::string json = config->to_json();
  const auto fb = config->to_flatbuffer();
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
