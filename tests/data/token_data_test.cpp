// core/data/token_data: token files, instances, labels, document boundaries, loader order.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>

#include "core/data/token_data.h"
#include "core/error.h"
#include "test_util.h"

using ::testing::HasSubstr;

namespace {

using olm::testing::expect_error;
using olm::testing::temp_dir;


template <class T>
std::string write_raw(const std::string& path, const std::vector<T>& values) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
  return path;
}

// NPY v1.0 written by hand: magic, version, header length, a Python dict padded with spaces
// to a 64-byte boundary and ended by '\n'.
template <class T>
std::string write_npy(const std::string& path, const std::vector<T>& values, const std::string& descr,
                      const std::string& shape = "") {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" +
                       (shape.empty() ? std::to_string(values.size()) + "," : shape) + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  f.write(reinterpret_cast<const char*>(&len), 2);
  f << header;
  f.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
  return path;
}

olm::data::DatasetOptions options(int64_t L, int64_t vocab) {
  olm::data::DatasetOptions o;
  o.sequence_length = L;
  o.vocab_size = vocab;
  return o;
}

std::vector<int64_t> to_vector(const at::Tensor& t) {
  auto c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}


TEST(DataFiles, RawAndNpyFilesFormOneStream) {
  const auto dir = temp_dir("token_data");
  const auto a = write_raw<uint16_t>(dir + "/a.bin", {1, 2, 3, 4, 5});
  const auto b = write_npy<uint32_t>(dir + "/b.npy", {6, 7, 8}, "<u4");
  const auto c = write_npy<int64_t>(dir + "/c.npy", {9, 10, 11, 12}, "<i8");
  auto ds = olm::data::TokenDataset::from_files({a, b, c}, options(4, 100));
  EXPECT_EQ(ds->num_tokens(), 12);
  EXPECT_EQ(ds->num_instances(), 3);
  EXPECT_EQ(to_vector(ds->instance(0)), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(to_vector(ds->instance(1)), (std::vector<int64_t>{5, 6, 7, 8}));  // crosses two files
  EXPECT_EQ(to_vector(ds->instance(2)), (std::vector<int64_t>{9, 10, 11, 12}));
  auto o32 = options(2, 1 << 20);
  o32.raw_dtype = "uint32";
  const auto wide = write_raw<uint32_t>(dir + "/wide.bin", {70000, 3, 100000, 4});
  auto ds32 = olm::data::TokenDataset::from_files({wide}, o32);
  EXPECT_EQ(to_vector(ds32->instance(1)), (std::vector<int64_t>{100000, 4}));
}

TEST(DataFiles, MalformedFilesAreClearErrors) {
  const auto dir = temp_dir("token_data");
  const auto o = options(2, 50);
  expect_error([&] { olm::data::TokenDataset::from_files({dir + "/missing.bin"}, o); }, olm::ErrorCode::kIo,
               "missing.bin");
  std::ofstream(dir + "/odd.bin", std::ios::binary) << "abc";
  expect_error([&] { olm::data::TokenDataset::from_files({dir + "/odd.bin"}, o); }, olm::ErrorCode::kParse,
               "3 bytes, not a multiple of 2");
  std::ofstream(dir + "/empty.bin", std::ios::binary);
  expect_error([&] { olm::data::TokenDataset::from_files({dir + "/empty.bin"}, o); }, olm::ErrorCode::kParse,
               "empty");
  const auto oov = write_raw<uint16_t>(dir + "/oov.bin", {1, 2, 3, 60, 4});
  expect_error([&] { olm::data::TokenDataset::from_files({oov}, o); }, olm::ErrorCode::kParse,
               "token 60 at index 3 is outside the vocabulary");
  const auto f32 = write_npy<float>(dir + "/f.npy", {1, 2}, "<f4");
  expect_error([&] { olm::data::TokenDataset::from_files({f32}, o); }, olm::ErrorCode::kParse, "unsupported dtype");
  const auto two_d = write_npy<uint16_t>(dir + "/2d.npy", {1, 2, 3, 4}, "<u2", "2, 2");
  expect_error([&] { olm::data::TokenDataset::from_files({two_d}, o); }, olm::ErrorCode::kParse, "1-D");
  const auto lying = write_npy<uint16_t>(dir + "/lie.npy", {1, 2}, "<u2", "9,");
  expect_error([&] { olm::data::TokenDataset::from_files({lying}, o); }, olm::ErrorCode::kParse, "needs 18 bytes");
  std::ofstream(dir + "/bad.npy", std::ios::binary) << "NOTNUMPYATALL";
  expect_error([&] { olm::data::TokenDataset::from_files({dir + "/bad.npy"}, o); }, olm::ErrorCode::kParse,
               "bad magic");
  const auto one = write_raw<uint16_t>(dir + "/one.bin", {1});
  expect_error([&] { olm::data::TokenDataset::from_files({one}, o); }, olm::ErrorCode::kParse,
               "fewer than one sequence");
  expect_error([&] { olm::data::TokenDataset::from_files({one}, options(0, 5)); }, olm::ErrorCode::kInvalidArgument,
               "sequence_length");
  auto bad_dtype = o;
  bad_dtype.raw_dtype = "int8";
  expect_error([&] { olm::data::TokenDataset::from_files({one}, bad_dtype); }, olm::ErrorCode::kInvalidArgument,
               "raw_dtype");
}

// Labels as OLMo-core's get_labels: masked tokens' positions become -100, then shift left
// and pad; documents split after each EOS and at each instance's end
// (get_document_lengths), cumulated over the flattened batch.
TEST(DataBatches, LabelsAndDocumentBoundariesFollowOlmoCore) {
  auto o = options(5, 20);
  o.eos_token_id = 0;
  o.masked_token_ids = {7};
  //            instance 0     | instance 1       | instance 2
  auto ds = olm::data::TokenDataset::from_tokens({3, 4, 0, 5, 7, 8, 0, 0, 9, 0, 1, 2, 3, 4, 5}, o);
  auto batch = olm::data::make_batch(*ds, {0, 1, 2});
  EXPECT_EQ(to_vector(batch.labels), (std::vector<int64_t>{4, 0, 5, -100, -100,  //
                                                            0, 0, 9, 0, -100,    //
                                                            2, 3, 4, 5, -100}));
  ASSERT_TRUE(batch.cu_doc_lens.has_value());
  auto cu = batch.cu_doc_lens->to(at::kLong);
  // [3 4 0] [5 7] | [8 0] [0] [9 0] | [1 2 3 4 5]
  EXPECT_EQ(to_vector(cu), (std::vector<int64_t>{0, 3, 5, 7, 8, 10, 15}));
  EXPECT_EQ(batch.cu_doc_lens->scalar_type(), at::kInt);
  EXPECT_EQ(batch.max_doc_len, 5);
  auto no_eos = olm::data::TokenDataset::from_tokens({1, 2, 3, 4}, options(2, 5));
  EXPECT_FALSE(olm::data::make_batch(*no_eos, {1}).cu_doc_lens.has_value());
}

TEST(DataLoader, OrderIsDeterministicResumableAndSplitsAcrossRanks) {
  std::vector<int64_t> tokens(4 * 50);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int64_t>(i % 97);
  auto ds = olm::data::TokenDataset::from_tokens(tokens, options(4, 100));
  olm::data::DataLoader a(ds, 8, 42), b(ds, 8, 42), c(ds, 8, 43);
  EXPECT_EQ(a.batches_per_epoch(), 6);  // 50 instances, the last 2 dropped
  std::vector<std::vector<int64_t>> epoch1, epoch2;
  for (int i = 0; i < 6; ++i) epoch1.push_back(a.next().instance_indices);
  for (int i = 0; i < 6; ++i) epoch2.push_back(a.next().instance_indices);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(b.next().instance_indices, epoch1[static_cast<size_t>(i)]);
  EXPECT_NE(c.next().instance_indices, epoch1[0]);
  EXPECT_NE(epoch1, epoch2);
  std::set<int64_t> seen;
  for (auto& batch : epoch1) seen.insert(batch.begin(), batch.end());
  EXPECT_EQ(seen.size(), 48u) << "an epoch visits distinct instances";

  // Restoring a saved position gives exactly the following batches.
  olm::data::DataLoader d(ds, 8, 42);
  d.restore({1, 2});
  EXPECT_EQ(d.next().instance_indices, epoch2[2]);
  EXPECT_EQ(d.position().batch_in_epoch, 3);
  expect_error([&] { d.restore({0, 7}); }, olm::ErrorCode::kInvalidArgument, "outside");

  // Two ranks' batches concatenated are the single-process global batch.
  olm::data::DataLoader r0(ds, 8, 42, 0, 2), r1(ds, 8, 42, 1, 2);
  for (int i = 0; i < 3; ++i) {
    auto x = r0.next().instance_indices, y = r1.next().instance_indices;
    x.insert(x.end(), y.begin(), y.end());
    EXPECT_EQ(x, epoch1[static_cast<size_t>(i)]);
  }
  expect_error([&] { olm::data::DataLoader(ds, 7, 0, 0, 2); }, olm::ErrorCode::kInvalidArgument, "divisible");
  expect_error([&] { olm::data::DataLoader(ds, 64, 0); }, olm::ErrorCode::kInvalidArgument, "fewer than one global batch");
}

}  // namespace
