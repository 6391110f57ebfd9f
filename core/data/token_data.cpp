#include "core/data/token_data.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "core/error.h"

namespace olm::data {

enum class Element { kU16, kU32, kI32, kI64 };

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  virtual int64_t size() const = 0;
  virtual void read(int64_t start, int64_t count, int64_t* out) const = 0;
};

namespace {

size_t element_size(Element e) { return e == Element::kU16 ? 2 : e == Element::kI64 ? 8 : 4; }
const char* element_name(Element e) {
  switch (e) {
    case Element::kU16: return "uint16";
    case Element::kU32: return "uint32";
    case Element::kI32: return "int32";
    case Element::kI64: return "int64";
  }
  return "?";
}

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // little-endian host (x86-64, aarch64)
  return v;
}

class MappedTokens : public TokenSource {
 public:
  MappedTokens(std::string path, void* map, size_t map_size, const uint8_t* data, int64_t count, Element element)
      : path_(std::move(path)), map_(map), map_size_(map_size), data_(data), count_(count), element_(element) {}
  ~MappedTokens() override { ::munmap(map_, map_size_); }
  int64_t size() const override { return count_; }
  int64_t token(int64_t i) const {
    const uint8_t* p = data_ + static_cast<size_t>(i) * element_size(element_);
    switch (element_) {
      case Element::kU16: return load_le<uint16_t>(p);
      case Element::kU32: return load_le<uint32_t>(p);
      case Element::kI32: return load_le<int32_t>(p);
      case Element::kI64: return load_le<int64_t>(p);
    }
    return 0;
  }
  void read(int64_t start, int64_t count, int64_t* out) const override {
    for (int64_t i = 0; i < count; ++i) out[i] = token(start + i);
  }
  // Every token in [0, vocab): a bad one is reported with its offset.
  void check_vocabulary(int64_t vocab) const {
    for (int64_t i = 0; i < count_; ++i) {
      const int64_t t = token(i);
      if (t < 0 || t >= vocab)
        fail(ErrorCode::kParse, "token file '" + path_ + "': token " + std::to_string(t) + " at index " +
                                    std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(vocab) +
                                    ")");
    }
  }

 private:
  std::string path_;
  void* map_;
  size_t map_size_;
  const uint8_t* data_;
  int64_t count_;
  Element element_;
};

class HostTokens : public TokenSource {
 public:
  explicit HostTokens(std::vector<int64_t> tokens) : tokens_(std::move(tokens)) {}
  int64_t size() const override { return static_cast<int64_t>(tokens_.size()); }
  void read(int64_t start, int64_t count, int64_t* out) const override {
    std::memcpy(out, tokens_.data() + start, static_cast<size_t>(count) * sizeof(int64_t));
  }

 private:
  std::vector<int64_t> tokens_;
};

// The header of a .npy file (format versions 1-3): element type and length.
struct NpyHeader {
  size_t data_offset = 0;
  Element element = Element::kU16;
  int64_t length = 0;
};

NpyHeader parse_npy(const uint8_t* bytes, size_t size, const std::string& path) {
  const std::string ctx = "npy file '" + path + "'";
  require(size >= 10 && std::memcmp(bytes, "\x93NUMPY", 6) == 0, ErrorCode::kParse, ctx + ": bad magic");
  const int major = bytes[6];
  require(major >= 1 && major <= 3, ErrorCode::kParse, ctx + ": unsupported format version " + std::to_string(major));
  size_t header_len, header_start;
  if (major == 1) {
    header_len = load_le<uint16_t>(bytes + 8);
    header_start = 10;
  } else {
    require(size >= 12, ErrorCode::kParse, ctx + ": truncated header");
    header_len = load_le<uint32_t>(bytes + 8);
    header_start = 12;
  }
  require(header_start + header_len <= size, ErrorCode::kParse,
          ctx + ": the header claims " + std::to_string(header_len) + " bytes but the file is shorter");
  const std::string header(reinterpret_cast<const char*>(bytes + header_start), header_len);
  auto value_of = [&](const std::string& key) {
    const auto k = header.find("'" + key + "'");
    require(k != std::string::npos, ErrorCode::kParse, ctx + ": header has no '" + key + "'");
    auto colon = header.find(':', k);
    require(colon != std::string::npos, ErrorCode::kParse, ctx + ": malformed header");
    auto start = header.find_first_not_of(' ', colon + 1);
    require(start != std::string::npos, ErrorCode::kParse, ctx + ": header has no value for '" + key + "'");
    return header.substr(start);
  };
  NpyHeader out;
  out.data_offset = header_start + header_len;
  const std::string descr_text = value_of("descr");
  require(descr_text.size() > 2 && (descr_text[0] == '\'' || descr_text[0] == '"'), ErrorCode::kParse,
          ctx + ": malformed descr");
  const std::string descr = descr_text.substr(1, descr_text.find(descr_text[0], 1) - 1);
  if (descr == "<u2") out.element = Element::kU16;
  else if (descr == "<u4") out.element = Element::kU32;
  else if (descr == "<i4") out.element = Element::kI32;
  else if (descr == "<i8") out.element = Element::kI64;
  else fail(ErrorCode::kParse, ctx + ": unsupported dtype '" + descr + "' (expected <u2, <u4, <i4 or <i8)");
  require(value_of("fortran_order").rfind("False", 0) == 0, ErrorCode::kParse,
          ctx + ": fortran_order arrays are not supported");
  const std::string shape = value_of("shape");
  require(!shape.empty() && shape[0] == '(', ErrorCode::kParse, ctx + ": malformed shape");
  const std::string inner = shape.substr(1, shape.find(')') - 1);
  std::vector<int64_t> dims;
  size_t pos = 0;
  while (pos < inner.size()) {
    const auto next = inner.find(',', pos);
    std::string item = inner.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    item.erase(std::remove(item.begin(), item.end(), ' '), item.end());
    if (!item.empty()) {
      require(item.size() <= 18 && std::all_of(item.begin(), item.end(), ::isdigit), ErrorCode::kParse,
              ctx + ": malformed shape");
      dims.push_back(std::stoll(item));
    }
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  require(dims.size() == 1, ErrorCode::kParse,
          ctx + ": expected a 1-D array, got " + std::to_string(dims.size()) + " dimensions");
  out.length = dims[0];
  const uint64_t data_bytes = size - out.data_offset;
  require(static_cast<uint64_t>(out.length) * element_size(out.element) == data_bytes, ErrorCode::kParse,
          ctx + ": the header's shape (" + std::to_string(out.length) + ",) needs " +
              std::to_string(static_cast<uint64_t>(out.length) * element_size(out.element)) + " bytes but " +
              std::to_string(data_bytes) + " follow");
  return out;
}

std::unique_ptr<MappedTokens> map_file(const std::string& path, const DatasetOptions& options) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::kIo, "cannot open token file '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorCode::kIo, "token file '" + path + "' is not a regular file");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    fail(ErrorCode::kParse, "token file '" + path + "' is empty");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(ErrorCode::kIo, "cannot map token file '" + path + "': " + std::strerror(errno));
  try {
    const auto* bytes = static_cast<const uint8_t*>(map);
    const bool npy = path.size() >= 4 && path.compare(path.size() - 4, 4, ".npy") == 0;
    std::unique_ptr<MappedTokens> source;
    if (npy) {
      const auto h = parse_npy(bytes, size, path);
      require(h.length > 0, ErrorCode::kParse, "npy file '" + path + "' holds no tokens");
      source = std::make_unique<MappedTokens>(path, map, size, bytes + h.data_offset, h.length, h.element);
    } else {
      const Element e = options.raw_dtype == "uint32" ? Element::kU32 : Element::kU16;
      const size_t es = element_size(e);
      require(size % es == 0, ErrorCode::kParse,
              "token file '" + path + "' has " + std::to_string(size) + " bytes, not a multiple of " +
                  std::to_string(es) + " (" + element_name(e) + ")");
      source = std::make_unique<MappedTokens>(path, map, size, bytes, static_cast<int64_t>(size / es), e);
    }
    map = nullptr;  // owned by the source now
    ::madvise(const_cast<uint8_t*>(bytes), size, MADV_SEQUENTIAL);
    source->check_vocabulary(options.vocab_size);
    ::madvise(const_cast<uint8_t*>(bytes), size, MADV_NORMAL);
    return source;
  } catch (...) {
    if (map) ::munmap(map, size);
    throw;
  }
}

void validate(const DatasetOptions& o) {
  require(o.sequence_length > 0, ErrorCode::kInvalidArgument,
          "sequence_length must be positive (got " + std::to_string(o.sequence_length) + ")");
  require(o.vocab_size > 0, ErrorCode::kInvalidArgument,
          "vocab_size must be positive (got " + std::to_string(o.vocab_size) + ")");
  require(o.raw_dtype == "uint16" || o.raw_dtype == "uint32", ErrorCode::kInvalidArgument,
          "raw_dtype: unknown value '" + o.raw_dtype + "' (known: uint16, uint32)");
  if (o.eos_token_id)
    require(*o.eos_token_id >= 0 && *o.eos_token_id < o.vocab_size, ErrorCode::kInvalidArgument,
            "eos_token_id " + std::to_string(*o.eos_token_id) + " is outside the vocabulary");
}

// splitmix64: a tiny, well-mixed generator whose sequence is fixed forever.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) without modulo bias.
  uint64_t below(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = next();
    while (v >= limit);
    return v % n;
  }
};

}  // namespace

TokenDataset::~TokenDataset() = default;

std::shared_ptr<TokenDataset> TokenDataset::from_files(const std::vector<std::string>& paths,
                                                       const DatasetOptions& options) {
  validate(options);
  require(!paths.empty(), ErrorCode::kInvalidArgument, "paths: at least one token file is required");
  std::shared_ptr<TokenDataset> ds(new TokenDataset());
  ds->options_ = options;
  for (const auto& path : paths) {
    auto source = map_file(path, options);
    ds->starts_.push_back(ds->num_tokens_);
    ds->num_tokens_ += source->size();
    ds->sources_.push_back(std::move(source));
  }
  require(ds->num_tokens_ >= options.sequence_length, ErrorCode::kParse,
          "token files hold " + std::to_string(ds->num_tokens_) + " tokens, fewer than one sequence of " +
              std::to_string(options.sequence_length));
  return ds;
}

std::shared_ptr<TokenDataset> TokenDataset::from_tokens(std::vector<int64_t> tokens, const DatasetOptions& options) {
  validate(options);
  require(static_cast<int64_t>(tokens.size()) >= options.sequence_length, ErrorCode::kInvalidArgument,
          "tokens: " + std::to_string(tokens.size()) + " tokens are fewer than one sequence of " +
              std::to_string(options.sequence_length));
  for (size_t i = 0; i < tokens.size(); ++i)
    require(tokens[i] >= 0 && tokens[i] < options.vocab_size, ErrorCode::kInvalidArgument,
            "tokens[" + std::to_string(i) + "]: " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " +
                std::to_string(options.vocab_size) + ")");
  std::shared_ptr<TokenDataset> ds(new TokenDataset());
  ds->options_ = options;
  ds->num_tokens_ = static_cast<int64_t>(tokens.size());
  ds->starts_.push_back(0);
  ds->sources_.push_back(std::make_unique<HostTokens>(std::move(tokens)));
  return ds;
}

void TokenDataset::read(int64_t start, int64_t count, int64_t* out) const {
  // The first source that holds `start`, then onwards across file boundaries.
  size_t s = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), start) - starts_.begin()) - 1;
  while (count > 0) {
    const int64_t offset = start - starts_[s];
    const int64_t n = std::min(count, sources_[s]->size() - offset);
    sources_[s]->read(offset, n, out);
    out += n;
    start += n;
    count -= n;
    ++s;
  }
}

at::Tensor TokenDataset::instance(int64_t index) const {
  require(index >= 0 && index < num_instances(), ErrorCode::kInvalidArgument,
          "instance index " + std::to_string(index) + " is outside [0, " + std::to_string(num_instances()) + ")");
  const int64_t L = options_.sequence_length;
  auto out = at::empty({L}, at::kLong);
  read(index * L, L, out.data_ptr<int64_t>());
  return out;
}

Batch make_batch(const TokenDataset& dataset, const std::vector<int64_t>& indices) {
  require(!indices.empty(), ErrorCode::kInvalidArgument, "a batch needs at least one instance");
  const auto& o = dataset.options();
  const int64_t B = static_cast<int64_t>(indices.size()), L = o.sequence_length;
  Batch batch;
  batch.instance_indices = indices;
  batch.input_ids = at::empty({B, L}, at::kLong);
  for (int64_t b = 0; b < B; ++b) batch.input_ids[b].copy_(dataset.instance(indices[b]));
  // OLMo-core's get_labels: mask, then shift left and pad with -100.
  const std::set<int64_t> masked(o.masked_token_ids.begin(), o.masked_token_ids.end());
  batch.labels = at::full({B, L}, -100, at::kLong);
  const int64_t* ids = batch.input_ids.data_ptr<int64_t>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < L; ++t) {
      const int64_t next = ids[b * L + t + 1];
      labels[b * L + t] = masked.count(next) ? -100 : next;
    }
  if (o.eos_token_id) {
    // olmo_core.data.utils.get_document_lengths per instance, then the cumulative lengths.
    std::vector<int32_t> cu{0};
    for (int64_t b = 0; b < B; ++b) {
      int64_t start = 0;
      for (int64_t t = 0; t < L; ++t) {
        if (ids[b * L + t] == *o.eos_token_id || t == L - 1) {
          const int64_t len = t + 1 - start;
          cu.push_back(cu.back() + static_cast<int32_t>(len));
          batch.max_doc_len = std::max(batch.max_doc_len, len);
          start = t + 1;
        }
      }
    }
    batch.cu_doc_lens = at::tensor(cu, at::kInt);
  }
  return batch;
}

DataLoader::DataLoader(std::shared_ptr<const TokenDataset> dataset, int64_t global_batch_instances, uint64_t seed,
                       int64_t rank, int64_t world_size)
    : dataset_(std::move(dataset)),
      global_batch_instances_(global_batch_instances),
      seed_(seed),
      rank_(rank),
      world_size_(world_size) {
  require(dataset_ != nullptr, ErrorCode::kInvalidArgument, "dataset: NULL");
  require(world_size_ >= 1 && rank_ >= 0 && rank_ < world_size_, ErrorCode::kInvalidArgument,
          "rank " + std::to_string(rank_) + " is outside [0, world_size=" + std::to_string(world_size_) + ")");
  require(global_batch_instances_ > 0 && global_batch_instances_ % world_size_ == 0, ErrorCode::kInvalidArgument,
          "the global batch (" + std::to_string(global_batch_instances_) +
              " instances) must be positive and divisible by world_size " + std::to_string(world_size_));
  batches_per_epoch_ = dataset_->num_instances() / global_batch_instances_;
  require(batches_per_epoch_ > 0, ErrorCode::kInvalidArgument,
          "the dataset has " + std::to_string(dataset_->num_instances()) +
              " instances, fewer than one global batch of " + std::to_string(global_batch_instances_));
}

const std::vector<int64_t>& DataLoader::order(int64_t epoch) {
  if (order_epoch_ != epoch) {
    const int64_t n = dataset_->num_instances();
    order_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order_[static_cast<size_t>(i)] = i;
    SplitMix64 rng{seed_ * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1};
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(rng.below(static_cast<uint64_t>(i + 1)))]);
    order_epoch_ = epoch;
  }
  return order_;
}

Batch DataLoader::next() {
  if (position_.batch_in_epoch >= batches_per_epoch_) {
    ++position_.epoch;
    position_.batch_in_epoch = 0;
  }
  const auto& ord = order(position_.epoch);
  const int64_t per_rank = global_batch_instances_ / world_size_;
  const int64_t start = position_.batch_in_epoch * global_batch_instances_ + rank_ * per_rank;
  std::vector<int64_t> indices(ord.begin() + start, ord.begin() + start + per_rank);
  ++position_.batch_in_epoch;
  return make_batch(*dataset_, indices);
}

void DataLoader::restore(const LoaderPosition& position) {
  require(position.epoch >= 0 && position.batch_in_epoch >= 0 && position.batch_in_epoch <= batches_per_epoch_,
          ErrorCode::kInvalidArgument,
          "data position (epoch " + std::to_string(position.epoch) + ", batch " +
              std::to_string(position.batch_in_epoch) + ") is outside this dataset's " +
              std::to_string(batches_per_epoch_) + " batches per epoch");
  position_ = position;
}

}  // namespace olm::data
