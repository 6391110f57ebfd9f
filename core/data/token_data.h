// Token data (olmo_core.data's numpy fixed-sequence-length datasets): token files as one
// memory-mapped stream, fixed-length instances, OLMo-core's labels and document boundaries,
// and a deterministic, resumable order.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace olm::data {

struct DatasetOptions {
  int64_t sequence_length = 0;            // > 0
  int64_t vocab_size = 0;                 // > 0: every token must be below it
  std::optional<int64_t> eos_token_id;    // documents end after it; batches carry cu_doc_lens
  std::vector<int64_t> masked_token_ids;  // never used as targets
  std::string raw_dtype = "uint16";       // raw (non-.npy) files: "uint16" or "uint32"
};

// One contiguous source of tokens (a mapped file or host memory).
class TokenSource;

class TokenDataset {
 public:
  // Raw little-endian uint16/uint32 files (numpy memmap, no header) and 1-D .npy files
  // (<u2, <u4, <i4, <i8), concatenated. Every token is checked against the vocabulary here,
  // so training never meets a bad id later. Throws kIo / kParse naming the file.
  static std::shared_ptr<TokenDataset> from_files(const std::vector<std::string>& paths,
                                                  const DatasetOptions& options);
  static std::shared_ptr<TokenDataset> from_tokens(std::vector<int64_t> tokens, const DatasetOptions& options);

  ~TokenDataset();
  int64_t num_tokens() const { return num_tokens_; }
  // num_tokens / sequence_length; the remainder is dropped, as OLMo-core's FSL dataset does.
  int64_t num_instances() const { return num_tokens_ / options_.sequence_length; }
  const DatasetOptions& options() const { return options_; }
  // tokens [index * L, (index + 1) * L) as int64.
  at::Tensor instance(int64_t index) const;

 private:
  TokenDataset() = default;
  void read(int64_t start, int64_t count, int64_t* out) const;

  DatasetOptions options_;
  std::vector<std::unique_ptr<TokenSource>> sources_;
  std::vector<int64_t> starts_;  // the stream offset of each source
  int64_t num_tokens_ = 0;
};

struct Batch {
  at::Tensor input_ids;                   // (B, L) int64
  at::Tensor labels;                      // (B, L) int64, OLMo-core's get_labels
  std::optional<at::Tensor> cu_doc_lens;  // int32 over the flattened batch, from 0
  int64_t max_doc_len = 0;
  std::vector<int64_t> instance_indices;
};

Batch make_batch(const TokenDataset& dataset, const std::vector<int64_t>& instance_indices);

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch_in_epoch = 0;
};

// A deterministic order per (seed, epoch) from our own PRNG (stable across LibTorch versions
// and platforms); global batches of `global_batch_instances`, the last partial one of an
// epoch dropped; rank r of world_size takes the r-th contiguous slice of each global batch.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const TokenDataset> dataset, int64_t global_batch_instances, uint64_t seed,
             int64_t rank = 0, int64_t world_size = 1);
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  Batch next();
  LoaderPosition position() const { return position_; }
  void restore(const LoaderPosition& position);

 private:
  const std::vector<int64_t>& order(int64_t epoch);

  std::shared_ptr<const TokenDataset> dataset_;
  int64_t global_batch_instances_;
  uint64_t seed_;
  int64_t rank_, world_size_;
  int64_t batches_per_epoch_;
  LoaderPosition position_;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace olm::data
