// Helpers shared by the C++ test files.
#pragma once
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"

namespace olm::testing {

// A fresh directory under the test temp dir.
inline std::string temp_dir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/" + name + "_XXXXXX";
  std::vector<char> buf(dir.begin(), dir.end());
  buf.push_back(0);
  return mkdtemp(buf.data());
}

// f must throw olm::Error with `code` and a message containing `needle`.
inline void expect_error(const std::function<void()>& f, olm::ErrorCode code, const std::string& needle) {
  try {
    f();
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const olm::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_THAT(e.what(), ::testing::HasSubstr(needle));
  }
}

}  // namespace olm::testing
