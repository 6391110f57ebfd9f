// meta.olmk: the CheckpointMeta FlatBuffer with its checksum trailer, written and read back
// with every field checked (counters, data position, configs, RNG state, tensor index).
#include <ATen/CPUGeneratorImpl.h>

#include <cstring>
#include <fstream>
#include <optional>

#include "core/checkpoint/internal.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/crc32.h"
#include "core/io/flatbuffer_alignment.h"
#include "core/io/utf8.h"

namespace olm::checkpoint {
namespace {

using namespace detail;

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::kIo, "cannot open '" + path + "'");
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// meta.olmk's checksum trailer, after the FlatBuffer: its length and CRC-32 (little-endian
// uint32s), then these four bytes. Checked before the buffer is parsed.
constexpr char kTrailerMagic[4] = {'O', 'K', 'C', '1'};
constexpr size_t kTrailerSize = 12;

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint32_t get_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

std::string meta_where(const std::string& dir) { return "checkpoint metadata '" + dir + "/" + kMetaFile + "'"; }

}  // namespace

namespace detail {

uint32_t tensor_crc(const at::Tensor& t) {
  const auto host = t.detach().to(at::kCPU).contiguous();
  return io::crc32(host.data_ptr(), static_cast<size_t>(host.numel()) * host.element_size());
}

std::optional<int64_t> checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return std::nullopt;
  return n;
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  const auto n = checked_numel(shape);
  require(n.has_value(), ErrorCode::kParse, "a tensor shape has a negative dimension or more elements than int64 holds");
  return *n;
}

at::ScalarType dtype_named(const std::string& name, const std::string& what) {
  for (auto dt : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
                  at::kByte, at::kBool})
    if (name == c10::toString(dt)) return dt;
  fail(ErrorCode::kParse, what + ": unknown dtype '" + name + "'");
}

// Every field of a parsed meta.olmk that can be checked without the trainer: counters, data
// position, both configs (through the same validation as a config read from a file), the RNG
// state (by LibTorch's own rules, on a scratch generator, so a bad one never reaches the
// trainer's) and the tensor index. Throws kParse naming the file and the field.
void check_fields(const std::string& dir, CheckedMeta& checked) {
  const auto& m = *checked.native;
  const std::string where = meta_where(dir);
  auto field = [&](bool ok, const std::string& name, const std::string& what) {
    if (!ok) fail(ErrorCode::kParse, where + ": field '" + name + "' " + what + " (corrupt file)");
  };
  const std::string step = std::to_string(m.step);
  field(m.step >= 0, "step", "is " + step + "; a step count is >= 0");
  const int64_t named = step_of_name(split_dir(dir).second);
  field(named < 0 || named == m.step, "step", "is " + step + " but the directory is step" + std::to_string(named));
  field(m.tokens_seen >= 0, "tokens_seen", "is " + std::to_string(m.tokens_seen) + "; a token count is >= 0");
  // Every step trains on a batch of at least one token.
  field(m.tokens_seen >= m.step, "tokens_seen",
        "is " + std::to_string(m.tokens_seen) + ", fewer than one token for each of its " + step + " steps");
  field(m.skipped_steps >= 0 && m.skipped_steps <= m.step, "skipped_steps",
        "is " + std::to_string(m.skipped_steps) + "; it lies in [0, step " + step + "]");
  // The range within an epoch depends on the dataset, which the resuming run opens later: the
  // data loader checks the batch against it then.
  field(m.data_epoch >= 0, "data_epoch", "is " + std::to_string(m.data_epoch) + "; an epoch is >= 0");
  field(m.data_batch_in_epoch >= 0, "data_batch_in_epoch",
        "is " + std::to_string(m.data_batch_in_epoch) + "; a batch index is >= 0");
  field(m.world_size >= 0 && m.world_size <= (1 << 20), "world_size",
        "is " + std::to_string(m.world_size) + "; 0 (one process) or the number of ranks that wrote shards");

  field(!m.model_config.empty(), "model_config", "is empty");
  try {
    checked.model_config = Config::from_flatbuffer(m.model_config.data(), m.model_config.size());
  } catch (const Error& e) {
    field(false, "model_config", std::string("is not a valid model config: ") + io::valid_utf8(e.what()));
  }
  field(!m.train_config.empty(), "train_config", "is empty");
  try {
    checked.train_config = train::TrainConfig::from_flatbuffer(m.train_config.data(), m.train_config.size());
  } catch (const Error& e) {
    field(false, "train_config", std::string("is not a valid train config: ") + io::valid_utf8(e.what()));
  }
  const auto& spec = checked.train_config.spec();
  field(!spec.model || spec.model->to_flatbuffer() == checked.model_config.to_flatbuffer(), "train_config",
        "names a model that differs from field 'model_config'");
  const auto window = static_cast<size_t>(spec.optimizer.rolling_interval_length + 1);
  field(m.recent_losses.size() <= window, "recent_losses",
        "holds " + std::to_string(m.recent_losses.size()) + " values, more than the optimizer's window of " +
            std::to_string(window));
  field(m.recent_grad_norms.size() <= window, "recent_grad_norms",
        "holds " + std::to_string(m.recent_grad_norms.size()) + " values, more than the optimizer's window of " +
            std::to_string(window));

  // Empty only in metadata written by hand (the saver always records it): then not restored.
  if (!m.rng_state.empty()) {
    at::Generator scratch = at::make_generator<at::CPUGeneratorImpl>();
    const int64_t expected = scratch.get_state().numel();
    field(static_cast<int64_t>(m.rng_state.size()) == expected, "rng_state",
          "holds " + std::to_string(m.rng_state.size()) + " bytes; LibTorch's CPU generator state has " +
              std::to_string(expected));
    auto state = at::empty({expected}, at::kByte);
    std::memcpy(state.data_ptr(), m.rng_state.data(), m.rng_state.size());
    bool ok = true;
    try {
      scratch.set_state(state);
    } catch (const c10::Error&) {
      ok = false;  // LibTorch's text names no file: ours does
    }
    field(ok, "rng_state", "is not a valid CPU generator state (its Mersenne Twister position is out of range)");
  }

  for (size_t i = 0; i < m.tensors.size(); ++i) {
    const auto& r = *m.tensors[i];
    const std::string name = "tensors[" + std::to_string(i) + "]";
    field(!r.name.empty(), name + ".name", "is empty");
    field(r.file == kModelFile || r.file == kOptimFile, name + ".file",
          "is '" + io::valid_utf8(r.file) + "', not " + kModelFile + " or " + kOptimFile);
    for (int64_t d : r.shape)
      field(d >= 0, name + ".shape", "of '" + io::valid_utf8(r.name) + "' has the negative dimension " + std::to_string(d));
    // Fuzz finding: a product of dimensions past int64 overflowed (undefined behaviour).
    field(checked_numel(r.shape).has_value(), name + ".shape",
          "of '" + io::valid_utf8(r.name) + "' has more elements than int64 holds");
    dtype_named(r.dtype, where + ": field '" + name + ".dtype' of '" + io::valid_utf8(r.name) + "'");
  }
}

// Reads meta.olmk: the checksum trailer first (before the buffer is parsed), then the
// FlatBuffers verifier, the schema version and every field (check_fields).
CheckedMeta read_meta_native(const std::string& dir) {
  const std::string path = dir + "/" + kMetaFile;
  const std::string where = meta_where(dir);
  auto bytes = read_file(path);
  size_t size = bytes.size();
  if (size >= kTrailerSize && std::memcmp(bytes.data() + size - 4, kTrailerMagic, 4) == 0) {
    const uint32_t length = get_u32(bytes.data() + size - kTrailerSize);
    const uint32_t crc = get_u32(bytes.data() + size - 8);
    require(length == size - kTrailerSize, ErrorCode::kParse,
            where + ": its checksum trailer records " + std::to_string(length) + " bytes of metadata, the file holds " +
                std::to_string(size - kTrailerSize) + " (truncated or corrupt file)");
    require(io::crc32(bytes.data(), length) == crc, ErrorCode::kParse,
            where + ": checksum mismatch (corrupt file)");
    size = length;
  }
  require(size >= 8 && flatbuffers::BufferHasIdentifier(bytes.data(), kMetaIdentifier), ErrorCode::kParse,
          where + ": not an olm checkpoint (identifier \"OLMK\")");
  flatbuffers::Verifier verifier(bytes.data(), size, 64, 1000000);
  require(verifier.VerifyBuffer<fb::CheckpointMeta>(kMetaIdentifier), ErrorCode::kParse,
          where + ": verification failed (corrupt file)");
  const auto* root = flatbuffers::GetRoot<fb::CheckpointMeta>(bytes.data());
  const auto misaligned = [&](const std::string& field) {
    throw Error(ErrorCode::kParse, where + ": " + field + " is misaligned (corrupt file)");
  };
  if (!io::elements_aligned(root->recent_losses())) misaligned("recent_losses");
  if (!io::elements_aligned(root->recent_grad_norms())) misaligned("recent_grad_norms");
  if (root->tensors())
    for (flatbuffers::uoffset_t i = 0; i < root->tensors()->size(); ++i)
      if (!io::elements_aligned(root->tensors()->Get(i)->shape()))
        misaligned("tensors[" + std::to_string(i) + "].shape");
  CheckedMeta checked;
  checked.native = std::make_unique<fb::CheckpointMetaT>();
  root->UnPackTo(checked.native.get());
  const auto& meta = *checked.native;
  // No trailer: a checkpoint written before metadata checksums. It still loads, protected by
  // the FlatBuffers verifier and the field checks alone. (A trailer whose four-byte mark is
  // damaged reads the same way; the buffer before it is then intact, a second fault aside.)
  require(meta.schema_version == 1, ErrorCode::kParse,
          where + ": unsupported schema_version " + std::to_string(meta.schema_version));
  check_fields(dir, checked);
  return checked;
}

// "; the previous checkpoint '<folder>/stepM' would load", naming the newest checkpoint older
// than `dir` in the same save folder whose metadata reads and checks and whose tensor files
// are there; "" when there is none.
std::string older_checkpoint_hint(const std::string& dir) {
  const auto [folder, name] = split_dir(dir);
  const int64_t step = step_of_name(name);
  if (step < 0) return "";
  auto dirs = step_dirs(folder);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    if (it->first >= step) continue;
    try {
      const auto checked = read_meta_native(it->second);
      bool files = true;
      if (checked.native->world_size > 0) {
        for (const auto& sh : checked.native->shards) files = files && is_file(it->second + "/" + sh->file);
      } else {
        for (const auto& r : checked.native->tensors) files = files && is_file(it->second + "/" + r->file);
      }
      if (files) return "; the previous checkpoint '" + io::valid_utf8(it->second) + "' would load";
    } catch (...) {
      // damaged too: try an older one
    }
  }
  return "";
}

fb::CheckpointMetaT base_meta(train::Trainer& trainer, const DataPosition& data) {
  fb::CheckpointMetaT meta;
  meta.schema_version = 1;
  meta.step = trainer.step();
  meta.tokens_seen = trainer.tokens_seen();
  meta.skipped_steps = trainer.skipped_steps();
  meta.model_config = trainer.model().config().to_flatbuffer();
  meta.train_config = trainer.config().to_flatbuffer();
  meta.data_epoch = data.epoch;
  meta.data_batch_in_epoch = data.batch_in_epoch;
  const auto rng = at::detail::getDefaultCPUGenerator().get_state();
  meta.rng_state.assign(rng.data_ptr<uint8_t>(), rng.data_ptr<uint8_t>() + rng.numel());
  meta.recent_losses = trainer.optimizer().recent_losses();
  meta.recent_grad_norms = trainer.optimizer().recent_grad_norms();
  return meta;
}

void write_meta(const std::string& dir, const fb::CheckpointMetaT& meta) {
  const auto bytes = encode_meta(meta);
  io::write_file_atomically(dir + "/" + kMetaFile, [&](int fd) {
    io::write_all(fd, bytes.data(), bytes.size(), dir + "/" + kMetaFile);
  });
}

}  // namespace detail

using namespace detail;

std::vector<uint8_t> encode_meta(const fb::CheckpointMetaT& meta) {
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(fb::CheckpointMeta::Pack(builder, &meta), kMetaIdentifier);
  std::vector<uint8_t> out(builder.GetBufferPointer(), builder.GetBufferPointer() + builder.GetSize());
  const auto length = static_cast<uint32_t>(out.size());
  const uint32_t crc = io::crc32(out.data(), out.size());
  put_u32(out, length);
  put_u32(out, crc);
  out.insert(out.end(), kTrailerMagic, kTrailerMagic + 4);
  return out;
}

Meta read_meta(const std::string& path) {
  const std::string dir = resolve(path);
  auto checked = explained(dir, [&] { return read_meta_native(dir); });
  const auto& native = *checked.native;
  Meta meta;
  meta.schema_version = native.schema_version;
  meta.step = native.step;
  meta.tokens_seen = native.tokens_seen;
  meta.skipped_steps = native.skipped_steps;
  meta.model_config = checked.model_config;
  meta.train_config = checked.train_config;
  meta.data = {native.data_epoch, native.data_batch_in_epoch};
  meta.world_size = native.world_size;
  return meta;
}

}  // namespace olm::checkpoint
