// Helpers shared by the C ABI test files (they include only olm.h from the library).
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "olm.h"

#define ASSERT_OK(expr)                                  \
  do {                                                   \
    olm_error* err_ = (expr);                            \
    ASSERT_EQ(err_, nullptr) << olm_error_message(err_); \
  } while (0)

namespace olm_testing {

// A fresh directory under OLM_TEST_TMPDIR (or /tmp).
inline std::string temp_dir(const std::string& name) {
  const char* base = std::getenv("OLM_TEST_TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/" + name + "_XXXXXX";
  std::vector<char> buf(dir.begin(), dir.end());
  buf.push_back(0);
  return mkdtemp(buf.data());
}

}  // namespace olm_testing
