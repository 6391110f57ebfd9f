// Helpers shared by the C ABI test files (they include only olm.h from the library).
#pragma once
#include <gmock/gmock.h>
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

// Takes ownership of an error and returns its message ("" when NULL); *code gets its code.
inline std::string consume(olm_error* err, int32_t* code = nullptr) {
  if (code) *code = olm_error_code(err);
  std::string message = olm_error_message(err);
  olm_error_free(err);
  return message;
}

}  // namespace olm_testing

// The call fails with want_code and a message containing needle.
#define EXPECT_ERR(expr, want_code, needle)                                 \
  do {                                                                      \
    int32_t code_ = 0;                                                      \
    const std::string message_ = olm_testing::consume((expr), &code_);      \
    EXPECT_EQ(code_, want_code) << message_;                                \
    EXPECT_THAT(message_, ::testing::HasSubstr(needle));                    \
  } while (0)
