// core/data/token_data.cpp: raw and .npy token files (NPY headers built byte by byte, v1.0 and
// v2.0, malformed ones), every option and file error with its message, labels and document
// boundaries as OLMo-core makes them (EOS in every position), and the loader's exact order
// (pinned against an independent implementation of splitmix64 + Fisher-Yates), epochs as
// permutations, resuming at any position, rank slices.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>

#include "core/data/token_data.h"
#include "core/error.h"
#include "test_util.h"

using ::testing::HasSubstr;

namespace {

using olm::ErrorCode;
using olm::data::DataLoader;
using olm::data::DatasetOptions;
using olm::data::TokenDataset;
using olm::testing::expect_error;
using olm::testing::temp_dir;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Little-endian bytes of each value, `width` bytes per value.
std::string le_bytes(const std::vector<int64_t>& values, int width) {
  std::string out;
  for (int64_t v : values)
    for (int i = 0; i < width; ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xFF));
  return out;
}

// An NPY file: "\x93NUMPY", version (major, 0), header length (2 bytes for v1, 4 for v2),
// the header dict padded with spaces to a 64-byte boundary and ended by '\n', then the data.
std::string npy(const std::string& dict, const std::string& data, int major = 1, bool pad = true) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  if (pad) {
    while ((prefix + header.size() + 1) % 64 != 0) header.push_back(' ');
    header.push_back('\n');
  }
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  out += le_bytes({static_cast<int64_t>(header.size())}, major == 1 ? 2 : 4);
  return out + header + data;
}

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

std::string dict(const std::string& descr, const std::string& shape, const std::string& fortran = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
}

DatasetOptions options(int64_t L, int64_t vocab) {
  DatasetOptions o;
  o.sequence_length = L;
  o.vocab_size = vocab;
  return o;
}

std::vector<int64_t> values(const at::Tensor& t) {
  auto c = t.contiguous().to(at::kLong);
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::vector<int64_t> iota(int64_t n, int64_t modulo) {
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = i % modulo;
  return out;
}

TEST(DataNpy, EveryDtypeAndBothHeaderVersionsReadAsOneStream) {
  const auto dir = temp_dir("data_npy");
  const std::string u2 = dir + "/u2.npy", i4 = dir + "/i4.npy", v2 = dir + "/v2.npy", raw = dir + "/raw.bin";
  write_bytes(u2, npy(dict("<u2", "(3,)"), le_bytes({1, 2, 65000}, 2)));
  write_bytes(i4, npy(dict("<i4", "(2,)"), le_bytes({70000, 4}, 4)));
  write_bytes(v2, npy(dict("<u4", "(3,)"), le_bytes({5, 6, 7}, 4), /*major=*/2));
  write_bytes(raw, le_bytes({8, 9, 10}, 2));
  auto ds = TokenDataset::from_files({u2, i4, v2, raw}, options(4, 100000));
  EXPECT_EQ(ds->num_tokens(), 11);
  EXPECT_EQ(ds->num_instances(), 2);  // 3 tokens left over, dropped
  EXPECT_EQ(values(ds->instance(0)), (std::vector<int64_t>{1, 2, 65000, 70000}));
  EXPECT_EQ(values(ds->instance(1)), (std::vector<int64_t>{4, 5, 6, 7}));  // three files
  EXPECT_EQ(ds->instance(1).scalar_type(), at::kLong);
  expect_error([&] { ds->instance(2); }, ErrorCode::kInvalidArgument, "instance index 2 is outside [0, 2)");
  expect_error([&] { ds->instance(-1); }, ErrorCode::kInvalidArgument, "instance index -1");

  // numpy's own spelling: no trailing ", }" space, keys in another order.
  const std::string reordered = dir + "/reordered.npy";
  write_bytes(reordered, npy("{'shape': (2,), 'fortran_order': False, 'descr': '<i8'}", le_bytes({11, 12}, 8)));
  EXPECT_EQ(values(TokenDataset::from_files({reordered}, options(2, 20))->instance(0)),
            (std::vector<int64_t>{11, 12}));
}

TEST(DataNpy, MalformedHeadersAreParseErrorsNamingTheFile) {
  const auto dir = temp_dir("data_npy");
  const auto o = options(1, 100);
  auto expect_parse = [&](const std::string& name, const std::string& bytes, const std::string& needle) {
    const std::string path = dir + "/" + name;
    write_bytes(path, bytes);
    expect_error([&] { TokenDataset::from_files({path}, o); }, ErrorCode::kParse, needle);
    expect_error([&] { TokenDataset::from_files({path}, o); }, ErrorCode::kParse, name);
  };
  const std::string two = le_bytes({1, 2}, 2);
  expect_parse("magic.npy", "\x93NUMPZ" + npy(dict("<u2", "(2,)"), two).substr(6), "bad magic");
  expect_parse("short.npy", "\x93NUM", "bad magic");
  std::string v9 = npy(dict("<u2", "(2,)"), two);
  v9[6] = 9;
  expect_parse("version.npy", v9, "unsupported format version 9");
  expect_parse("fortran.npy", npy(dict("<u2", "(2,)", "True"), two), "fortran_order");
  expect_parse("big_endian.npy", npy(dict(">u2", "(2,)"), two), "unsupported dtype '>u2'");
  expect_parse("float.npy", npy(dict("<f4", "(1,)"), le_bytes({0}, 4)), "unsupported dtype '<f4'");
  expect_parse("bytes.npy", npy(dict("|u1", "(2,)"), "\x01\x02"), "unsupported dtype '|u1'");
  expect_parse("scalar.npy", npy(dict("<u2", "()"), le_bytes({1}, 2)), "1-D array, got 0 dimensions");
  expect_parse("matrix.npy", npy(dict("<u2", "(1, 2)"), two), "1-D array, got 2 dimensions");
  expect_parse("long.npy", npy(dict("<u2", "(3,)"), two), "shape (3,) needs 6 bytes but 4 follow");
  expect_parse("trailing.npy", npy(dict("<u2", "(1,)"), two), "shape (1,) needs 2 bytes but 4 follow");
  expect_parse("no_tokens.npy", npy(dict("<u2", "(0,)"), ""), "holds no tokens");
  expect_parse("no_shape.npy", npy("{'descr': '<u2', 'fortran_order': False, }", two), "no 'shape'");
  std::string truncated = npy(dict("<u2", "(2,)"), two);
  truncated = truncated.substr(0, 40);
  expect_parse("truncated.npy", truncated, "the header claims");
  // A header that stops right after a key (no value, no newline): still a parse error.
  expect_parse("cut.npy", npy("{'descr':   ", "", 1, /*pad=*/false), "cut.npy");
}

TEST(DataFiles, RawFileErrorsNameTheFileOffsetAndValue) {
  const auto dir = temp_dir("data_raw");
  const std::string good = dir + "/good.bin", bad = dir + "/bad.bin";
  write_bytes(good, le_bytes({1, 2, 3, 4}, 2));
  write_bytes(bad, le_bytes({5, 6, 7, 99, 8}, 2));
  // The bad id is in the second file: the message names it and the index within it.
  expect_error([&] { TokenDataset::from_files({good, bad}, options(2, 50)); }, ErrorCode::kParse,
               "token file '" + bad + "': token 99 at index 3 is outside the vocabulary [0, 50)");
  // The boundary: vocab_size - 1 is in, vocab_size is out.
  EXPECT_EQ(TokenDataset::from_files({bad}, options(5, 100))->num_tokens(), 5);
  expect_error([&] { TokenDataset::from_files({bad}, options(5, 99)); }, ErrorCode::kParse, "token 99 at index 3");
  // A negative int32 in an .npy is outside the vocabulary too.
  const std::string negative = dir + "/negative.npy";
  write_bytes(negative, npy(dict("<i4", "(2,)"), le_bytes({1, -3}, 4)));
  expect_error([&] { TokenDataset::from_files({negative}, options(1, 50)); }, ErrorCode::kParse,
               "token -3 at index 1");

  const std::string odd = dir + "/odd.bin", odd32 = dir + "/odd32.bin";
  write_bytes(odd, std::string(1001, '\0'));
  expect_error([&] { TokenDataset::from_files({odd}, options(2, 50)); }, ErrorCode::kParse,
               "token file '" + odd + "' has 1001 bytes, not a multiple of 2 (uint16)");
  write_bytes(odd32, std::string(6, '\0'));
  auto o32 = options(1, 50);
  o32.raw_dtype = "uint32";
  expect_error([&] { TokenDataset::from_files({odd32}, o32); }, ErrorCode::kParse,
               "6 bytes, not a multiple of 4 (uint32)");
  // The same 8 bytes are 4 tokens as uint16 and 2 as uint32.
  write_bytes(odd32, le_bytes({1, 2}, 4));
  EXPECT_EQ(TokenDataset::from_files({odd32}, o32)->num_tokens(), 2);
  EXPECT_EQ(TokenDataset::from_files({odd32}, options(1, 50))->num_tokens(), 4);

  const std::string empty = dir + "/empty.bin";
  write_bytes(empty, "");
  expect_error([&] { TokenDataset::from_files({good, empty}, options(2, 50)); }, ErrorCode::kParse,
               "token file '" + empty + "' is empty");
  expect_error([&] { TokenDataset::from_files({dir + "/nope.bin"}, options(2, 50)); }, ErrorCode::kIo,
               "cannot open token file '" + dir + "/nope.bin'");
  expect_error([&] { TokenDataset::from_files({dir}, options(2, 50)); }, ErrorCode::kIo, "not a regular file");
  // Fewer tokens than one sequence, over all files together.
  EXPECT_EQ(TokenDataset::from_files({good, good}, options(8, 50))->num_instances(), 1);
  expect_error([&] { TokenDataset::from_files({good, good}, options(9, 50)); }, ErrorCode::kParse,
               "token files hold 8 tokens, fewer than one sequence of 9");
}

TEST(DataFiles, BadOptionsAreInvalidArguments) {
  const auto dir = temp_dir("data_opts");
  const std::string f = dir + "/f.bin";
  write_bytes(f, le_bytes({1, 2, 3, 4}, 2));
  auto check = [&](const DatasetOptions& o, const std::string& needle) {
    expect_error([&] { TokenDataset::from_files({f}, o); }, ErrorCode::kInvalidArgument, needle);
    expect_error([&] { TokenDataset::from_tokens({1, 2, 3, 4}, o); }, ErrorCode::kInvalidArgument, needle);
  };
  check(options(0, 10), "sequence_length must be positive (got 0)");
  check(options(-2, 10), "sequence_length must be positive (got -2)");
  check(options(2, 0), "vocab_size must be positive (got 0)");
  auto o = options(2, 10);
  o.raw_dtype = "uint8";
  check(o, "raw_dtype: unknown value 'uint8'");
  o = options(2, 10);
  o.eos_token_id = 10;
  check(o, "eos_token_id 10 is outside the vocabulary");
  expect_error([&] { TokenDataset::from_files({}, options(2, 10)); }, ErrorCode::kInvalidArgument, "paths");

  expect_error([&] { TokenDataset::from_tokens({}, options(2, 10)); }, ErrorCode::kInvalidArgument,
               "0 tokens are fewer than one sequence of 2");
  expect_error([&] { TokenDataset::from_tokens({1, 2, 10}, options(2, 10)); }, ErrorCode::kInvalidArgument,
               "tokens[2]: 10 is outside the vocabulary [0, 10)");
  expect_error([&] { TokenDataset::from_tokens({1, -1}, options(2, 10)); }, ErrorCode::kInvalidArgument,
               "tokens[1]: -1");
  auto ds = TokenDataset::from_tokens({1, 2, 3, 4, 5}, options(2, 10));
  expect_error([&] { olm::data::make_batch(*ds, {}); }, ErrorCode::kInvalidArgument, "at least one instance");
  expect_error([&] { olm::data::make_batch(*ds, {0, 2}); }, ErrorCode::kInvalidArgument, "instance index 2");
}

// OLMo-core's get_labels (clone, -100 at masked positions, shift left, pad -100) and
// get_document_lengths + get_cumulative_document_lengths, written out by hand.
TEST(DataBatches, LabelsAndDocumentsWithEosInEveryPosition) {
  auto o = options(4, 10);
  o.eos_token_id = 9;
  o.masked_token_ids = {9, 3};
  //                                instance 0   | instance 1   | instance 2   | instance 3
  auto ds = TokenDataset::from_tokens({9, 1, 2, 9, 4, 5, 6, 7, 9, 9, 9, 9, 1, 3, 9, 2}, o);
  auto batch = olm::data::make_batch(*ds, {0, 1, 2, 3, 1});
  EXPECT_EQ(batch.instance_indices, (std::vector<int64_t>{0, 1, 2, 3, 1}));
  EXPECT_EQ(values(batch.input_ids),
            (std::vector<int64_t>{9, 1, 2, 9, 4, 5, 6, 7, 9, 9, 9, 9, 1, 3, 9, 2, 4, 5, 6, 7}));
  EXPECT_EQ(batch.input_ids.sizes(), (at::IntArrayRef{5, 4}));
  EXPECT_EQ(batch.labels.sizes(), (at::IntArrayRef{5, 4}));
  EXPECT_EQ(values(batch.labels), (std::vector<int64_t>{1, 2, -100, -100,        //
                                                         5, 6, 7, -100,           //
                                                         -100, -100, -100, -100,  //
                                                         -100, -100, 2, -100,     //
                                                         5, 6, 7, -100}));
  // Documents: [9] [1 2 9] | [4 5 6 7] | [9] [9] [9] [9] | [1 3 9] [2] | [4 5 6 7]
  // (an EOS at an instance's first and last position, a document cut by the instance end
  // and continuing in the next instance as a new document).
  ASSERT_TRUE(batch.cu_doc_lens.has_value());
  EXPECT_EQ(batch.cu_doc_lens->scalar_type(), at::kInt);
  EXPECT_EQ(values(*batch.cu_doc_lens), (std::vector<int64_t>{0, 1, 4, 8, 9, 10, 11, 12, 15, 16, 20}));
  EXPECT_EQ(batch.max_doc_len, 4);

  // Without masked ids every next token is a target; without EOS there are no documents.
  auto plain = TokenDataset::from_tokens({9, 1, 2, 9, 4, 5}, options(3, 10));
  auto b = olm::data::make_batch(*plain, {1, 0});
  EXPECT_EQ(values(b.labels), (std::vector<int64_t>{4, 5, -100, 1, 2, -100}));
  EXPECT_FALSE(b.cu_doc_lens.has_value());
  EXPECT_EQ(b.max_doc_len, 0);
  // L == 1: nothing to predict.
  auto one = TokenDataset::from_tokens({3, 4}, options(1, 10));
  EXPECT_EQ(values(olm::data::make_batch(*one, {0, 1}).labels), (std::vector<int64_t>{-100, -100}));
}

TEST(DataBatches, ConcurrentReadsMatchSerialReads) {
  const auto dir = temp_dir("data_threads");
  const std::string a = dir + "/a.bin", b = dir + "/b.npy";
  write_bytes(a, le_bytes(iota(1001, 500), 2));
  write_bytes(b, npy(dict("<u4", "(999,)"), le_bytes(iota(999, 499), 4)));
  auto ds = TokenDataset::from_files({a, b}, options(7, 500));
  ASSERT_EQ(ds->num_instances(), 2000 / 7);
  std::vector<std::vector<int64_t>> serial;
  for (int64_t i = 0; i < ds->num_instances(); ++i) serial.push_back(values(ds->instance(i)));
  // Instance 143 holds stream tokens 1001..1007: the .npy file's first seven.
  EXPECT_EQ(serial[143], (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(serial[142], (std::vector<int64_t>{494, 495, 496, 497, 498, 499, 0}));  // across the boundary
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int64_t i = ds->num_instances() - 1; i >= 0; --i)
        if (values(ds->instance(i)) != serial[static_cast<size_t>(i)]) ++mismatches[static_cast<size_t>(k)];
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches, (std::vector<int>{0, 0, 0, 0}));
}

std::vector<int64_t> epoch_order(DataLoader& loader) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < loader.batches_per_epoch(); ++i) {
    auto idx = loader.next().instance_indices;
    out.insert(out.end(), idx.begin(), idx.end());
  }
  return out;
}

TEST(DataLoader, OrderIsPinnedAndEachEpochIsAPermutation) {
  auto ds = TokenDataset::from_tokens(iota(12 * 3 + 2, 50), options(3, 50));  // 12 instances
  // splitmix64 seeded with seed * 0x9E3779B97F4A7C15 + epoch + 1, Fisher-Yates from the
  // back, unbiased bounded draws: these orders are fixed forever (computed independently).
  DataLoader zero(ds, 12, 0);
  EXPECT_EQ(epoch_order(zero), (std::vector<int64_t>{4, 6, 7, 9, 11, 3, 10, 1, 2, 0, 8, 5}));
  EXPECT_EQ(epoch_order(zero), (std::vector<int64_t>{11, 7, 5, 8, 0, 6, 2, 9, 3, 1, 4, 10}));
  DataLoader other(ds, 4, 1234);
  EXPECT_EQ(epoch_order(other), (std::vector<int64_t>{3, 6, 2, 8, 4, 10, 5, 0, 11, 7, 1, 9}));
  DataLoader max_seed(ds, 6, UINT64_MAX);
  max_seed.restore({5, 0});
  EXPECT_EQ(epoch_order(max_seed), (std::vector<int64_t>{10, 8, 5, 11, 7, 2, 6, 0, 9, 3, 1, 4}));

  // Every epoch covers every instance once, and no two of the first epochs agree.
  auto many = TokenDataset::from_tokens(iota(4 * 64, 97), options(4, 100));
  DataLoader loader(many, 8, 7);
  std::set<std::vector<int64_t>> orders;
  for (int e = 0; e < 5; ++e) {
    EXPECT_EQ(loader.position().epoch, e == 0 ? 0 : e - 1);
    auto order = epoch_order(loader);
    EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 64u);
    orders.insert(order);
  }
  EXPECT_EQ(orders.size(), 5u);
  // Seeds 7 and 8 give different orders.
  DataLoader eight(many, 8, 8), seven(many, 8, 7);
  EXPECT_NE(epoch_order(eight), epoch_order(seven));
}

TEST(DataLoader, RestoringAnyPositionGivesTheSameBatches) {
  auto o = options(4, 100);
  o.eos_token_id = 0;
  auto ds = TokenDataset::from_tokens(iota(4 * 27, 13), o);  // 27 instances: 3 batches of 8, 3 dropped
  DataLoader reference(ds, 8, 99);
  ASSERT_EQ(reference.batches_per_epoch(), 3);
  std::vector<olm::data::LoaderPosition> positions;
  std::vector<olm::data::Batch> batches;
  for (int i = 0; i < 10; ++i) {
    positions.push_back(reference.position());
    batches.push_back(reference.next());
  }
  EXPECT_EQ(positions[3].epoch, 0);  // after the epoch's last batch, before the rollover
  EXPECT_EQ(positions[3].batch_in_epoch, 3);
  EXPECT_EQ(reference.position().epoch, 3);
  EXPECT_EQ(reference.position().batch_in_epoch, 1);
  for (size_t start = 0; start < positions.size(); ++start) {
    DataLoader resumed(ds, 8, 99);  // a fresh loader, as after a restart
    resumed.restore(positions[start]);
    for (size_t i = start; i < positions.size(); ++i) {
      auto b = resumed.next();
      EXPECT_EQ(b.instance_indices, batches[i].instance_indices) << start << " " << i;
      EXPECT_TRUE(b.input_ids.equal(batches[i].input_ids));
      EXPECT_TRUE(b.labels.equal(batches[i].labels));
      EXPECT_TRUE(b.cu_doc_lens->equal(*batches[i].cu_doc_lens));
      EXPECT_EQ(b.max_doc_len, batches[i].max_doc_len);
    }
  }
  // A loader that has run ahead can be moved back, too.
  reference.restore(positions[4]);
  EXPECT_EQ(reference.next().instance_indices, batches[4].instance_indices);

  expect_error([&] { reference.restore({-1, 0}); }, ErrorCode::kInvalidArgument, "epoch -1");
  expect_error([&] { reference.restore({0, -1}); }, ErrorCode::kInvalidArgument, "outside");
  expect_error([&] { reference.restore({2, 4}); }, ErrorCode::kInvalidArgument, "3 batches per epoch");
}

TEST(DataLoader, RanksTakeContiguousSlicesOfTheGlobalBatch) {
  auto ds = TokenDataset::from_tokens(iota(2 * 48, 31), options(2, 40));  // 48 instances
  DataLoader single(ds, 12, 5);
  std::vector<DataLoader> ranks;
  for (int64_t r = 0; r < 4; ++r) ranks.emplace_back(ds, 12, 5, r, 4);
  for (int step = 0; step < 9; ++step) {  // crosses two epoch boundaries
    auto global = single.next();
    std::vector<int64_t> joined;
    std::vector<at::Tensor> inputs;
    for (auto& rank : ranks) {
      auto b = rank.next();
      EXPECT_EQ(b.input_ids.size(0), 3);
      joined.insert(joined.end(), b.instance_indices.begin(), b.instance_indices.end());
      inputs.push_back(b.input_ids);
      EXPECT_EQ(rank.position().epoch, single.position().epoch);
      EXPECT_EQ(rank.position().batch_in_epoch, single.position().batch_in_epoch);
    }
    EXPECT_EQ(joined, global.instance_indices) << "step " << step;
    EXPECT_TRUE(at::cat(inputs).equal(global.input_ids));
  }
  expect_error([&] { DataLoader(ds, 12, 0, 4, 4); }, ErrorCode::kInvalidArgument,
               "rank 4 is outside [0, world_size=4)");
  expect_error([&] { DataLoader(ds, 12, 0, -1, 4); }, ErrorCode::kInvalidArgument, "rank -1");
  expect_error([&] { DataLoader(ds, 12, 0, 0, 0); }, ErrorCode::kInvalidArgument, "world_size=0");
  expect_error([&] { DataLoader(ds, 10, 0, 0, 4); }, ErrorCode::kInvalidArgument, "divisible by world_size 4");
  expect_error([&] { DataLoader(ds, 0, 0); }, ErrorCode::kInvalidArgument, "must be positive");
  expect_error([&] { DataLoader(ds, 49, 0); }, ErrorCode::kInvalidArgument,
               "the dataset has 48 instances, fewer than one global batch of 49");
  expect_error([&] { DataLoader(nullptr, 4, 0); }, ErrorCode::kInvalidArgument, "dataset");
  EXPECT_EQ(DataLoader(ds, 48, 0).batches_per_epoch(), 1);
}

TEST(DataFiles, RawAndNpyFilesFormOneStream) {
  const auto dir = temp_dir("token_data");
  const auto a = write_raw<uint16_t>(dir + "/a.bin", {1, 2, 3, 4, 5});
  const auto b = write_npy<uint32_t>(dir + "/b.npy", {6, 7, 8}, "<u4");
  const auto c = write_npy<int64_t>(dir + "/c.npy", {9, 10, 11, 12}, "<i8");
  auto ds = olm::data::TokenDataset::from_files({a, b, c}, options(4, 100));
  EXPECT_EQ(ds->num_tokens(), 12);
  EXPECT_EQ(ds->num_instances(), 3);
  EXPECT_EQ(values(ds->instance(0)), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(values(ds->instance(1)), (std::vector<int64_t>{5, 6, 7, 8}));  // crosses two files
  EXPECT_EQ(values(ds->instance(2)), (std::vector<int64_t>{9, 10, 11, 12}));
  auto o32 = options(2, 1 << 20);
  o32.raw_dtype = "uint32";
  const auto wide = write_raw<uint32_t>(dir + "/wide.bin", {70000, 3, 100000, 4});
  auto ds32 = olm::data::TokenDataset::from_files({wide}, o32);
  EXPECT_EQ(values(ds32->instance(1)), (std::vector<int64_t>{100000, 4}));
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
  EXPECT_EQ(values(batch.labels), (std::vector<int64_t>{4, 0, 5, -100, -100,  //
                                                            0, 0, 9, 0, -100,    //
                                                            2, 3, 4, 5, -100}));
  ASSERT_TRUE(batch.cu_doc_lens.has_value());
  auto cu = batch.cu_doc_lens->to(at::kLong);
  // [3 4 0] [5 7] | [8 0] [0] [9 0] | [1 2 3 4 5]
  EXPECT_EQ(values(cu), (std::vector<int64_t>{0, 3, 5, 7, 8, 10, 15}));
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
