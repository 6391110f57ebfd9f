// capi/capi_tensor.cpp: tensors through the ABI, every dtype and every mistake.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "capi_test_util.h"

using ::testing::HasSubstr;
using namespace olm_testing;

namespace {

TEST(CapiTensor, EveryDtypeAndEveryMistake) {
  struct Dt {
    olm_dtype dtype;
    size_t size;
  };
  for (auto d : {Dt{OLM_DTYPE_INT32, 4}, Dt{OLM_DTYPE_INT64, 8}, Dt{OLM_DTYPE_FLOAT32, 4}, Dt{OLM_DTYPE_BFLOAT16, 2},
                 Dt{OLM_DTYPE_FLOAT16, 2}}) {
    std::vector<uint8_t> data(6 * d.size);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 13 + 1);
    int64_t shape[2] = {2, 3};
    olm_tensor* t = nullptr;
    ASSERT_OK(olm_tensor_create(d.dtype, shape, 2, data.data(), data.size(), &t));
    olm_dtype got = -1;
    ASSERT_OK(olm_tensor_dtype(t, &got));
    EXPECT_EQ(got, d.dtype);
    size_t ndim = 0, nbytes = 0;
    ASSERT_OK(olm_tensor_ndim(t, &ndim));
    ASSERT_OK(olm_tensor_nbytes(t, &nbytes));
    EXPECT_EQ(ndim, 2u);
    EXPECT_EQ(nbytes, data.size());
    int64_t dims[2] = {0, 0};
    ASSERT_OK(olm_tensor_shape(t, dims, 2));
    EXPECT_EQ(dims[0], 2);
    EXPECT_EQ(dims[1], 3);
    std::vector<uint8_t> back(data.size() + 4, 0xEE);
    ASSERT_OK(olm_tensor_copy_to_host(t, back.data(), back.size()));
    EXPECT_TRUE(std::equal(data.begin(), data.end(), back.begin())) << "bytes round trip exactly";
    EXPECT_EQ(back[data.size()], 0xEE) << "nothing written past nbytes";
    std::vector<uint8_t> small(data.size() - 1, 0xAB);
    expect(olm_tensor_copy_to_host(t, small.data(), small.size()), OLM_ERR_INVALID_ARGUMENT, "dst_size");
    EXPECT_EQ(small[0], 0xAB) << "a refused copy writes nothing";
    int64_t one = 0;
    expect(olm_tensor_shape(t, &one, 1), OLM_ERR_INVALID_ARGUMENT, "capacity");
    olm_tensor_free(t);
  }
  int64_t shape[2] = {2, 2}, neg[1] = {-1}, huge[2] = {INT64_MAX / 2, 16}, big[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  float data[4] = {1, 2, 3, 4};
  olm_tensor* t = sentinel<olm_tensor>();
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, shape, 2, data, 12, &t), OLM_ERR_INVALID_ARGUMENT, "data_size: 12 bytes given but the dtype and shape need 16");
  expect(olm_tensor_create(42, shape, 2, data, 16, &t), OLM_ERR_INVALID_ARGUMENT, "unknown dtype 42");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, neg, 1, data, 0, &t), OLM_ERR_INVALID_ARGUMENT, "shape[0]: negative");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, huge, 2, data, 16, &t), OLM_ERR_INVALID_ARGUMENT, "overflows");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, big, 9, data, 4, &t), OLM_ERR_INVALID_ARGUMENT, "OLM_MAX_DIMS");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, nullptr, 2, data, 16, &t), OLM_ERR_INVALID_ARGUMENT, "shape: NULL");
  expect(olm_tensor_create(OLM_DTYPE_FLOAT32, shape, 2, nullptr, 16, &t), OLM_ERR_INVALID_ARGUMENT, "data: NULL");
  EXPECT_EQ(t, sentinel<olm_tensor>());
  // A scalar and an empty tensor are fine.
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_FLOAT32, nullptr, 0, data, 4, &t));
  olm_tensor_free(t);
  int64_t empty[1] = {0};
  ASSERT_OK(olm_tensor_create(OLM_DTYPE_INT64, empty, 1, nullptr, 0, &t));
  ASSERT_OK(olm_tensor_copy_to_host(t, nullptr, 0));
  olm_tensor_free(t);
}

}  // namespace
