// Shared by the fuzz targets: a scratch directory for parsers that read files, and a check
// that aborts (libFuzzer then saves the input) when a property of an accepted input fails.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "core/error.h"

namespace olm::fuzz {

// Aborts with a message: a property failed for an input the parser accepted.
#define OLM_FUZZ_CHECK(cond, what)                                                           \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "olm fuzz: property failed: %s (%s:%d): %s\n", #cond, __FILE__,   \
                   __LINE__, std::string(what).c_str());                                     \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

// A per-process scratch directory on tmpfs when there is one (removed by scripts/fuzz.sh).
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("OLM_FUZZ_TMPDIR");
    std::string root = base ? base : (::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    std::string tmpl = root + "/olm_fuzz_XXXXXX";
    if (!::mkdtemp(tmpl.data())) std::abort();
    return tmpl;
  }();
  return dir;
}

inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) std::abort();
}

}  // namespace olm::fuzz
