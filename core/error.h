// The core's one exception type. The C boundary maps its code to OLM_ERR_*; every message
// names the argument, config field, file or tensor it is about.
#pragma once
#include <stdexcept>
#include <string>

namespace olm {

enum class ErrorCode : int {
  kInvalidArgument = 1,
  kInvalidConfig = 2,
  kParse = 3,
  kIo = 4,
  kOutOfMemory = 5,
  kDeviceUnavailable = 6,
  kMismatch = 7,
  kInternal = 8,
  kDistributed = 9,  // a process group failed: a rank missing, dead or timed out
};

// A NUL byte in a message (a tensor name read from a file, a caller's buffer) would end
// what()'s C string, and so the C caller's message, early: it is kept as the two characters
// "\0" instead.
inline std::string escape_nul(std::string message) {
  for (size_t i = message.find('\0'); i != std::string::npos; i = message.find('\0', i + 2))
    message.replace(i, 1, "\\0");
  return message;
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(escape_nul(message)), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

inline void require(bool ok, ErrorCode code, const std::string& message) {
  if (!ok) fail(code, message);
}

}  // namespace olm
