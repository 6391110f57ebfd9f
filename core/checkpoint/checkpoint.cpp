#include "core/checkpoint/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "core/dist/fsdp.h"
#include "core/dist/process_group.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/crc32.h"
#include "core/io/flatbuffer_alignment.h"
#include "core/io/safetensors.h"
#include "core/io/utf8.h"

namespace olm::checkpoint {
namespace {

[[noreturn]] void fail_errno(const std::string& what, const std::string& path) {
  fail(ErrorCode::kIo, what + " '" + path + "': " + std::strerror(errno));
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void fsync_dir(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) fail_errno("cannot open directory", path);
  ::fsync(fd);
  ::close(fd);
}

void remove_tree(const std::string& path) {
  if (DIR* dir = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string child = path + "/" + name;
      if (is_dir(child)) remove_tree(child);
      else ::unlink(child.c_str());
    }
    ::closedir(dir);
  }
  ::rmdir(path.c_str());
}

// step<N> directory names, parsed.
std::vector<std::pair<int64_t, std::string>> step_dirs(const std::string& folder) {
  std::vector<std::pair<int64_t, std::string>> out;
  DIR* dir = ::opendir(folder.c_str());
  if (!dir) return out;
  while (dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name.size() < 5 || name.rfind("step", 0) != 0) continue;
    const std::string digits = name.substr(4);
    if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    const std::string path = folder + "/" + name;
    if (is_file(path + "/" + kMetaFile)) out.emplace_back(std::stoll(digits), path);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

std::string random_suffix() {
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d-%08x", static_cast<int>(::getpid()), rd());
  return buf;
}

uint32_t tensor_crc(const at::Tensor& t) {
  const auto host = t.detach().to(at::kCPU).contiguous();
  return io::crc32(host.data_ptr(), static_cast<size_t>(host.numel()) * host.element_size());
}

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

// "stepN" -> N; -1 for any other name.
int64_t step_of_name(const std::string& name) {
  if (name.size() < 5 || name.size() > 22 || name.rfind("step", 0) != 0) return -1;
  if (!std::all_of(name.begin() + 4, name.end(), ::isdigit)) return -1;
  return std::stoll(name.substr(4));
}

// The directory part and the last name of a checkpoint directory path (trailing '/' ignored).
std::pair<std::string, std::string> split_dir(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const auto slash = dir.find_last_of('/');
  if (slash == std::string::npos) return {".", dir};
  return {slash == 0 ? "/" : dir.substr(0, slash), dir.substr(slash + 1)};
}

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

at::ScalarType dtype_named(const std::string& name, const std::string& what) {
  for (auto dt : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
                  at::kByte, at::kBool})
    if (name == c10::toString(dt)) return dt;
  fail(ErrorCode::kParse, what + ": unknown dtype '" + name + "'");
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string optimizer_keys_text(const std::vector<std::string>& keys) {
  std::string out;
  for (size_t i = 0; i < keys.size(); ++i) out += (i ? ", " : "") + keys[i];
  return out;
}

// The parts of a checkpoint's metadata that only make sense together, checked field by field
// against each other and the rest of the checkpoint before anything is applied.
struct CheckedMeta {
  std::unique_ptr<fb::CheckpointMetaT> native;
  Config model_config;
  train::TrainConfig train_config;
};

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

// Runs f, the reading of checkpoint `dir`; its refusals come back with valid UTF-8 only (names
// read from a damaged file may be anything), and a damaged or unreadable checkpoint's with the
// older checkpoint that would load.
template <class F>
auto explained(const std::string& dir, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    std::string message = io::valid_utf8(e.what());
    if (e.code() == ErrorCode::kParse || e.code() == ErrorCode::kIo) message += older_checkpoint_hint(dir);
    throw Error(e.code(), message);
  }
}

// Removes the leftovers of a writer killed mid-save (see save()).
void clean_stale(const std::string& folder) {
  if (DIR* d = ::opendir(folder.c_str())) {
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
    for (const auto& name : names) {
      const std::string path = folder + "/" + name;
      if (name.rfind(".tmp-step", 0) == 0) {
        remove_tree(path);
      } else if (name.rfind("step", 0) == 0 && name.size() > 4 &&
                 std::all_of(name.begin() + 4, name.end(), ::isdigit) && is_dir(path) &&
                 !is_file(path + "/" + kMetaFile)) {
        remove_tree(path);  // a removal (pruning) cut short: never a checkpoint again
      } else if (name.rfind(".old-step", 0) == 0) {
        const std::string step = name.substr(5, name.find('-', 5) - 5);  // "stepN"
        const std::string original = folder + "/" + step;
        if (is_dir(original)) remove_tree(path);
        else ::rename(path.c_str(), original.c_str());
      }
    }
  }
}

// Renames tmp_dir to final_dir (moving an existing final_dir aside first), fsyncing the folder.
void publish(const std::string& folder, const std::string& tmp_dir, const std::string& final_dir, int64_t step) {
  std::string old_dir;
  if (is_dir(final_dir)) {
    old_dir = folder + "/.old-step" + std::to_string(step) + "-" + random_suffix();
    if (::rename(final_dir.c_str(), old_dir.c_str()) != 0) fail_errno("cannot move aside", final_dir);
  }
  if (::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) fail_errno("cannot rename checkpoint to", final_dir);
  fsync_dir(folder);
  if (!old_dir.empty()) remove_tree(old_dir);
}

// The metadata goes first, so a removal cut short leaves a directory that is no checkpoint
// (clean_stale removes it later) rather than one with files missing.
void remove_checkpoint(const std::string& dir) {
  ::unlink((dir + "/" + kMetaFile).c_str());
  remove_tree(dir);
}

void prune(const std::string& folder, int64_t keep_last_n) {
  auto dirs = step_dirs(folder);
  for (size_t i = 0; i + static_cast<size_t>(keep_last_n) < dirs.size(); ++i) remove_checkpoint(dirs[i].second);
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

// (group file, name) -> tensor, for parameters and optimizer state.
std::vector<std::tuple<std::string, std::string, at::Tensor>> trainer_tensors(train::Trainer& trainer) {
  std::vector<std::tuple<std::string, std::string, at::Tensor>> out;
  for (auto& p : trainer.model().module().named_state()) out.emplace_back(kModelFile, p.name, *p.tensor);
  for (auto& [name, t] : trainer.optimizer().state()) out.emplace_back(kOptimFile, name, t);
  return out;
}

std::string shard_entry(const std::string& group, const std::string& name) {
  return (group == kModelFile ? "model/" : "optim/") + name;
}

// True on every rank when `ok` holds on every rank (an all-reduce of the failures).
bool all_ok(dist::ProcessGroup& group, bool ok) {
  auto flag = at::full({1}, ok ? 0L : 1L, at::TensorOptions(at::kLong).device(group.comm_device()));
  group.all_reduce_sum({flag});
  return flag.item<int64_t>() == 0;
}

// What a sharded save writes. `tensors` is the same list, in the same order, on every rank
// (rank 0 writes the records of shards it never saw); `writes` are this rank's shards of them.
struct ShardPlan {
  struct Tensor {
    std::string group, name;
    std::vector<int64_t> shape;  // global; {} when the writers say it is a scalar copy
    std::string dtype;           // "" when only the writers know it (optimizer state)
    bool always = true;          // recorded even when no rank writes any of it (empty tensors)
  };
  struct Write {
    size_t tensor;
    int64_t offset;  // first element within the tensor's flattened elements
    at::Tensor data;  // 1-D
    bool scalar = false;  // a 0-d tensor every holder has a copy of (FSDP's per-piece .step)
  };
  std::vector<Tensor> tensors;
  std::vector<Write> writes;
  // Scalar copies this rank holds but another rank writes: their checksums are compared with
  // the written one, so ranks that disagree fail the save instead of losing a value.
  std::vector<std::pair<size_t, at::Tensor>> copies;
};

// DDP or one process per rank with the same full state: rank r writes the r-th contiguous
// slice of every tensor.
ShardPlan replicated_plan(train::Trainer& trainer, int64_t rank, int64_t world) {
  ShardPlan plan;
  for (auto& [file, name, t] : trainer_tensors(trainer)) {
    plan.tensors.push_back({file, name, t.sizes().vec(), c10::toString(t.scalar_type()), true});
    const auto [begin, end] = shard_range(t.numel(), rank, world);
    if (end > begin)
      plan.writes.push_back({plan.tensors.size() - 1, begin, t.detach().reshape({-1}).slice(0, begin, end)});
  }
  return plan;
}

// FSDP: every rank writes the pieces of the parameters and of their optimizer state that lie
// in its shard (offsets within the whole parameter, global shapes), so the checkpoint means the
// same as a DDP one. A piece's scalar state (AdamW's step) is identical on every holder: the
// lowest rank holding the parameter (the one whose piece starts at element 0) writes it.
// Buffers are replicated and written as contiguous slices (rank and world: the trainer's
// group). Under HSDP only the first replica writes pieces: its ranks are world ranks
// 0..shard_degree-1, so each one's shard rank is its world rank, which names its file.
ShardPlan fsdp_plan(train::Trainer& trainer, dist::FullyShardedDataParallel& fsdp, int64_t rank, int64_t world) {
  ShardPlan plan;
  std::map<std::string, std::pair<dist::FullyShardedDataParallel::Piece, at::Tensor>> mine;
  const bool writes_pieces = !fsdp.replicate_group() || fsdp.replicate_group()->rank() == 0;
  if (writes_pieces) {
    require(fsdp.group().rank() == rank, ErrorCode::kInternal, "HSDP: the first replica is not world ranks 0..S-1");
    const auto pieces = fsdp.pieces_of_rank(rank);
    const auto tensors = fsdp.shard_parameters();
    require(pieces.size() == tensors.size(), ErrorCode::kInternal, "FSDP: piece layout and shard differ");
    for (size_t i = 0; i < pieces.size(); ++i) mine[pieces[i].name] = {pieces[i], *tensors[i].tensor};
  }
  std::map<std::string, std::vector<int64_t>> param_shapes;
  for (auto& p : trainer.model().module().named_parameters()) param_shapes[p.name] = p.tensor->sizes().vec();
  for (auto& p : trainer.model().module().named_state()) {
    const at::Tensor& t = *p.tensor;
    // A parameter's dtype is its pieces' (the float32 masters under bfloat16 param_dtype, not
    // the module's compute copies): taken from the writers' table.
    const bool param = param_shapes.count(p.name) > 0;
    plan.tensors.push_back({kModelFile, p.name, t.sizes().vec(), param ? "" : c10::toString(t.scalar_type()), true});
    const size_t index = plan.tensors.size() - 1;
    if (param) {
      auto it = mine.find(p.name);
      if (it != mine.end())
        plan.writes.push_back({index, it->second.first.offset, it->second.second.detach().reshape({-1})});
    } else {
      const auto [begin, end] = shard_range(t.numel(), rank, world);
      if (end > begin) plan.writes.push_back({index, begin, t.detach().reshape({-1}).slice(0, begin, end)});
    }
  }
  std::map<std::string, at::Tensor> state;
  for (auto& [name, t] : trainer.optimizer().state()) state[name] = t;
  const auto keys = trainer.optimizer().state_keys();
  for (auto& [param, shape] : param_shapes) {
    for (const auto& key : keys) {
      const std::string name = param + "." + key;
      plan.tensors.push_back({kOptimFile, name, shape, "", false});
      const size_t index = plan.tensors.size() - 1;
      auto st = state.find(name);
      auto piece = mine.find(param);
      if (st == state.end() || !writes_pieces) continue;
      require(piece != mine.end(), ErrorCode::kInternal, "FSDP: optimizer state '" + name + "' without a piece");
      const at::Tensor& t = st->second;
      const auto& pc = piece->second.first;
      if (t.dim() == 0) {
        if (pc.offset == 0) plan.writes.push_back({index, 0, t.detach().reshape({1}), true});
        else plan.copies.emplace_back(index, t.detach());
        continue;
      }
      require(t.numel() == pc.numel, ErrorCode::kInternal,
              "optimizer state '" + name + "': " + std::to_string(t.numel()) + " elements for a piece of " +
                  std::to_string(pc.numel));
      plan.writes.push_back({index, pc.offset, t.detach().reshape({-1})});
    }
  }
  return plan;
}

// The table every rank fills in its own column of and one all-reduce hands to rank 0.
enum ShardColumn : int64_t { kDtype, kCrc, kOffset, kNumel, kScalar, kCopyCrc, kColumns };

std::string save_sharded(train::Trainer& trainer, dist::ProcessGroup& group, const std::string& folder,
                         const DataPosition& data, int64_t keep_last_n) {
  const int64_t rank = group.rank(), world = group.world_size();
  const std::string final_dir = folder + "/step" + std::to_string(trainer.step());
  // Every rank must agree on the name; a leftover from a killed save is removed first.
  const std::string tmp_dir = folder + "/.tmp-step" + std::to_string(trainer.step()) + "-sharded";
  std::exception_ptr error;
  auto agree = [&](const char* what) {
    bool ok = false;
    try {
      ok = all_ok(group, !error);
    } catch (...) {  // a rank is gone: the collective itself failed
      if (rank == 0) remove_tree(tmp_dir);
      throw;
    }
    if (ok) return;
    if (rank == 0) remove_tree(tmp_dir);
    if (error) std::rethrow_exception(error);
    fail(ErrorCode::kIo, std::string("checkpoint '") + final_dir + "': another rank failed " + what +
                             " (nothing was written; earlier checkpoints are intact)");
  };
  if (rank == 0) {
    try {
      io::make_directories(folder);
      clean_stale(folder);
      if (::mkdir(tmp_dir.c_str(), 0755) != 0) fail_errno("cannot create directory", tmp_dir);
    } catch (...) {
      error = std::current_exception();
    }
  }
  agree("to create the checkpoint directory");
  ShardPlan plan;
  // Each rank describes and checksums the shards it wrote; one all-reduce hands rank 0 the table.
  at::Tensor table;
  try {
    plan = trainer.fsdp() ? fsdp_plan(trainer, *trainer.fsdp(), rank, world) : replicated_plan(trainer, rank, world);
    table = at::zeros({static_cast<int64_t>(plan.tensors.size()), world, kColumns}, at::kLong);
    auto cell = table.accessor<int64_t, 3>();
    std::vector<std::pair<std::string, at::Tensor>> slices;
    for (const auto& w : plan.writes) {
      const auto& t = plan.tensors[w.tensor];
      auto slice = w.data.to(at::kCPU).contiguous();
      auto row = cell[static_cast<int64_t>(w.tensor)][rank];
      row[kDtype] = static_cast<int64_t>(slice.scalar_type()) + 1;
      row[kCrc] = tensor_crc(slice);
      row[kOffset] = w.offset;
      row[kNumel] = slice.numel();
      row[kScalar] = w.scalar ? 1 : 0;
      slices.emplace_back(shard_entry(t.group, t.name), slice);
    }
    for (const auto& [index, t] : plan.copies)
      cell[static_cast<int64_t>(index)][rank][kCopyCrc] = static_cast<int64_t>(tensor_crc(t)) + 1;
    io::save_safetensors(tmp_dir + "/" + shard_file(rank), slices);
  } catch (...) {
    error = std::current_exception();
  }
  agree("to write its shard");
  try {
    auto on_device = table.to(group.comm_device());
    group.all_reduce_sum({on_device});
    table = on_device.to(at::kCPU);
  } catch (...) {
    if (rank == 0) remove_tree(tmp_dir);
    throw;
  }
  if (rank == 0) {
    try {
      fb::CheckpointMetaT meta = base_meta(trainer, data);
      meta.world_size = static_cast<int32_t>(world);
      const auto cell = table.accessor<int64_t, 3>();
      for (size_t i = 0; i < plan.tensors.size(); ++i) {
        const auto& t = plan.tensors[i];
        const std::string what = "checkpoint '" + final_dir + "': tensor '" + t.name + "' (" + t.group + ")";
        std::vector<int64_t> writers;
        for (int64_t k = 0; k < world; ++k)
          if (cell[static_cast<int64_t>(i)][k][kDtype] > 0) writers.push_back(k);
        if (writers.empty() && !t.always) continue;
        auto r = std::make_unique<fb::TensorRecordT>();
        r->name = t.name;
        r->file = t.group;
        r->dtype = t.dtype;
        r->shape = t.shape;
        // Integrity is per shard (checksummed by the rank that wrote it), so no rank needs to
        // read a whole tensor: 0 here.
        r->crc32 = 0;
        std::vector<std::unique_ptr<fb::TensorShardT>> shards;
        int64_t covered = 0;
        for (int64_t k : writers) {
          const auto row = cell[static_cast<int64_t>(i)][k];
          const std::string dtype = c10::toString(static_cast<at::ScalarType>(row[kDtype] - 1));
          require(r->dtype.empty() || r->dtype == dtype, ErrorCode::kInternal,
                  what + ": rank " + std::to_string(k) + " holds it as " + dtype + ", others as " + r->dtype);
          r->dtype = dtype;
          if (row[kScalar]) r->shape = {};
          auto sh = std::make_unique<fb::TensorShardT>();
          sh->tensor = t.name;
          sh->group = t.group;
          sh->file = shard_file(k);
          sh->entry = shard_entry(t.group, t.name);
          sh->offset = row[kOffset];
          sh->numel = row[kNumel];
          sh->crc32 = static_cast<uint32_t>(row[kCrc]);
          covered += sh->numel;
          shards.push_back(std::move(sh));
        }
        int64_t n = 1;
        for (int64_t d : r->shape) n *= d;
        // FSDP pieces tile a parameter only when every rank holding one wrote it (optimizer
        // state present on some ranks only would load as garbage elsewhere).
        require(covered == n, ErrorCode::kInternal,
                what + ": the ranks' shards hold " + std::to_string(covered) + " of its " + std::to_string(n) +
                    " elements (state present on some ranks only)");
        for (int64_t k = 0; k < world; ++k) {
          const int64_t copy = cell[static_cast<int64_t>(i)][k][kCopyCrc];
          require(copy == 0 || (!shards.empty() && copy - 1 == static_cast<int64_t>(shards[0]->crc32)),
                  ErrorCode::kInternal,
                  what + ": rank " + std::to_string(k) + "'s copy differs from the one " +
                      (shards.empty() ? std::string("no rank") : shards[0]->file) + " holds");
        }
        meta.tensors.push_back(std::move(r));
        for (auto& sh : shards) meta.shards.push_back(std::move(sh));
      }
      write_meta(tmp_dir, meta);
      fsync_dir(tmp_dir);
      publish(folder, tmp_dir, final_dir, trainer.step());
      prune(folder, keep_last_n);
    } catch (...) {
      error = std::current_exception();
    }
  }
  agree("to publish the checkpoint");
  return final_dir;
}

// Element ranges [begin, end) of a tensor's flattened elements.
using Ranges = std::vector<std::pair<int64_t, int64_t>>;

// What a loading rank needs of a recorded tensor (group, name, global shape): no ranges for
// a tensor it does not need.
using Need =
    std::function<Ranges(const std::string& group, const std::string& name, const std::vector<int64_t>& shape)>;

// A recorded tensor's needed elements: one 1-D part per needed range, in the same order.
struct Loaded {
  std::vector<int64_t> shape;
  Ranges ranges;
  std::vector<at::Tensor> parts;
  // The whole tensor in its recorded shape (when the only range needed was all of it).
  at::Tensor whole() const { return parts.at(0).reshape(shape); }
};
using LoadedTensors = std::map<std::string, std::map<std::string, Loaded>>;

// The needed ranges of a sharded checkpoint's tensors, from the shards that overlap them. Every
// record's shards are checked to tile it; only overlapping shard entries are opened, read and
// checksummed, so a rank reads its own part of the checkpoint, not all of it.
LoadedTensors read_sharded(const std::string& dir, const fb::CheckpointMetaT& meta, const Need& need) {
  const std::string where = "checkpoint '" + dir + "'";
  std::map<std::pair<std::string, std::string>, std::vector<const fb::TensorShardT*>> shards;
  for (const auto& sh : meta.shards) {
    require(sh->numel > 0 && sh->offset >= 0, ErrorCode::kParse,
            where + ": shard of tensor '" + sh->tensor + "' in " + sh->file + " has offset " +
                std::to_string(sh->offset) + " and length " + std::to_string(sh->numel));
    require(sh->file.find('/') == std::string::npos && sh->file.rfind("rank", 0) == 0, ErrorCode::kParse,
            where + ": shard file name '" + sh->file + "' is not rank<r>.safetensors");
    shards[{sh->group, sh->tensor}].push_back(sh.get());
  }
  std::map<std::string, std::unique_ptr<io::SafetensorsFile>> files;
  auto open = [&](const std::string& name) -> io::SafetensorsFile& {
    auto& f = files[name];
    if (!f) {
      const std::string path = dir + "/" + name;
      require(is_file(path), ErrorCode::kIo, where + ": shard file '" + path + "' is missing");
      f = std::make_unique<io::SafetensorsFile>(path);
    }
    return *f;
  };
  LoadedTensors out;
  size_t used = 0;
  for (const auto& r : meta.tensors) {
    require(r->file == kModelFile || r->file == kOptimFile, ErrorCode::kParse,
            where + ": unknown tensor group '" + r->file + "'");
    const std::string what = where + ": tensor '" + r->name + "' (" + r->file + ")";
    for (int64_t d : r->shape) require(d >= 0, ErrorCode::kParse, what + ": negative dimension in its shape");
    const int64_t n = numel_of(r->shape);
    const auto dtype = dtype_named(r->dtype, what);
    auto it = shards.find({r->file, r->name});
    std::vector<const fb::TensorShardT*> list = it == shards.end() ? std::vector<const fb::TensorShardT*>{} : it->second;
    used += list.size();
    std::sort(list.begin(), list.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    // The tiling is checked for every tensor, needed or not (it costs no reading).
    int64_t next = 0;
    for (const auto* sh : list) {
      require(sh->offset == next, ErrorCode::kParse,
              what + ": its shards do not tile it (" + sh->file + " starts at element " + std::to_string(sh->offset) +
                  ", expected " + std::to_string(next) + ")");
      next += sh->numel;
      require(next <= n, ErrorCode::kParse,
              what + ": shard in " + sh->file + " ends at element " + std::to_string(next) + " beyond its " +
                  std::to_string(n) + " elements");
    }
    require(next == n, ErrorCode::kParse,
            what + ": its shards cover " + std::to_string(next) + " of its " + std::to_string(n) + " elements");
    Loaded loaded;
    loaded.shape = r->shape;
    loaded.ranges = need(r->file, r->name, r->shape);
    if (loaded.ranges.empty()) continue;
    for (const auto& [begin, end] : loaded.ranges) {
      require(0 <= begin && begin <= end && end <= n, ErrorCode::kMismatch,
              what + ": elements [" + std::to_string(begin) + ", " + std::to_string(end) + ") are needed, it has " +
                  std::to_string(n));
      loaded.parts.push_back(at::empty({end - begin}, dtype));
    }
    for (const auto* sh : list) {
      const int64_t lo = sh->offset, hi = sh->offset + sh->numel;
      bool overlaps = false;
      for (const auto& [begin, end] : loaded.ranges) overlaps = overlaps || (begin < hi && lo < end);
      if (!overlaps) continue;
      auto& file = open(sh->file);
      const io::SafetensorsEntry* entry = nullptr;
      for (const auto& e : file.entries())
        if (e.name == sh->entry) entry = &e;
      require(entry != nullptr, ErrorCode::kParse, what + ": entry '" + sh->entry + "' is missing from " + sh->file);
      require(entry->shape == std::vector<int64_t>{sh->numel}, ErrorCode::kParse,
              what + ": entry '" + sh->entry + "' in " + sh->file + " has a different shape than recorded");
      require(entry->dtype == dtype, ErrorCode::kParse,
              what + ": entry '" + sh->entry + "' in " + sh->file + " is " + c10::toString(entry->dtype) +
                  ", recorded " + r->dtype);
      auto t = file.read(*entry);
      require(tensor_crc(t) == sh->crc32, ErrorCode::kParse,
              what + ": checksum mismatch in " + sh->file + " (corrupt file)");
      for (size_t j = 0; j < loaded.ranges.size(); ++j) {
        const auto [begin, end] = loaded.ranges[j];
        const int64_t a = std::max(begin, lo), b = std::min(end, hi);
        if (a < b) loaded.parts[j].narrow(0, a - begin, b - a).copy_(t.narrow(0, a - lo, b - a));
      }
    }
    out[r->file][r->name] = std::move(loaded);
  }
  require(used == meta.shards.size(), ErrorCode::kParse, where + ": a shard names a tensor that has no record");
  return out;
}

// The tensors of a single-process checkpoint (whole files), cut to what `need` asks for.
LoadedTensors read_unsharded(const std::string& dir, const fb::CheckpointMetaT& meta, const Need& need) {
  require(meta.shards.empty(), ErrorCode::kParse, "checkpoint '" + dir + "': shards without a world size");
  std::map<std::string, std::unique_ptr<io::SafetensorsFile>> files;
  LoadedTensors out;
  for (const auto& r : meta.tensors) {
    auto& file = files[r->file];
    require(r->file == kModelFile || r->file == kOptimFile, ErrorCode::kParse,
            "checkpoint '" + dir + "': unknown tensor file '" + r->file + "'");
    if (!file) file = std::make_unique<io::SafetensorsFile>(dir + "/" + r->file);
    const io::SafetensorsEntry* entry = nullptr;
    for (const auto& e : file->entries())
      if (e.name == r->name) entry = &e;
    require(entry != nullptr, ErrorCode::kParse,
            "checkpoint '" + dir + "': tensor '" + r->name + "' is missing from " + r->file);
    require(entry->shape == r->shape, ErrorCode::kParse,
            "checkpoint '" + dir + "': tensor '" + r->name + "' has a different shape than recorded");
    Loaded loaded;
    loaded.shape = r->shape;
    loaded.ranges = need(r->file, r->name, r->shape);
    if (loaded.ranges.empty()) continue;
    auto t = file->read(*entry);
    require(tensor_crc(t) == r->crc32, ErrorCode::kParse,
            "checkpoint '" + dir + "': checksum mismatch for tensor '" + r->name + "' in " + r->file +
                " (corrupt file)");
    const auto flat = t.reshape({-1});
    for (const auto& [begin, end] : loaded.ranges) {
      require(0 <= begin && begin <= end && end <= flat.numel(), ErrorCode::kMismatch,
              "checkpoint '" + dir + "': tensor '" + r->name + "': elements [" + std::to_string(begin) + ", " +
                  std::to_string(end) + ") are needed, it has " + std::to_string(flat.numel()));
      loaded.parts.push_back(flat.slice(0, begin, end));
    }
    out[r->file][r->name] = std::move(loaded);
  }
  return out;
}

// A single-process trainer's optimizer state from a checkpoint, checked against what its
// optimizer keeps before load_state sees it (which copies into its slots one parameter after
// another): every name is "<parameter>.<key>" for one of its parameters and keys, a parameter
// has all of its keys or none, and each has the shape its slot has ("step" is a scalar, the
// others are shaped like the parameter; core/train/optimizer.cpp). Moves each onto its
// parameter's device. Throws kMismatch naming the state.
void check_optimizer_state(const std::string& dir, train::Optimizer& optimizer,
                           std::map<std::string, at::Tensor>& state) {
  std::map<std::string, const at::Tensor*> params;
  for (auto& group : optimizer.groups())
    for (size_t i = 0; i < group.params.size(); ++i) params[group.names[i]] = group.params[i];
  const auto keys = optimizer.state_keys();
  const std::string where = "checkpoint '" + dir + "': optimizer state '";
  std::map<std::string, std::set<std::string>> present;
  for (auto& [name, t] : state) {
    const std::string param = train::Optimizer::parameter_of_state(name);
    const std::string key = param.empty() ? name : name.substr(param.size() + 1);
    auto it = params.find(param);
    require(it != params.end() && std::find(keys.begin(), keys.end(), key) != keys.end(), ErrorCode::kMismatch,
            where + name + "' is not state this trainer's optimizer keeps (" + optimizer_keys_text(keys) + " of its parameters)");
    const auto expected = key == "step" ? std::vector<int64_t>{} : it->second->sizes().vec();
    require(t.sizes().vec() == expected, ErrorCode::kMismatch,
            where + name + "' has shape " + shape_text(t.sizes().vec()) + ", its parameter's state has " +
                shape_text(expected));
    present[param].insert(key);
    t = t.to(it->second->device());
  }
  for (const auto& [param, have] : present)
    for (const auto& key : keys)
      require(have.count(key) > 0, ErrorCode::kMismatch,
              where + param + "." + key + "' is missing (the checkpoint has the parameter's other state)");
}

}  // namespace

std::string shard_file(int64_t rank) { return "rank" + std::to_string(rank) + ".safetensors"; }

std::pair<int64_t, int64_t> shard_range(int64_t n, int64_t rank, int64_t world) {
  const int64_t chunk = (n + world - 1) / world;
  return {std::min(n, rank * chunk), std::min(n, (rank + 1) * chunk)};
}

std::string resolve(const std::string& path) {
  if (is_file(path + "/" + kMetaFile)) return path;
  const std::string newest = latest(path);
  require(!newest.empty(), ErrorCode::kIo, "no checkpoint found at '" + path + "'");
  return newest;
}

std::string latest(const std::string& folder) {
  auto dirs = step_dirs(folder);
  return dirs.empty() ? std::string() : dirs.back().second;
}

std::string save(train::Trainer& trainer, const std::string& folder, const DataPosition& data,
                 int64_t keep_last_n) {
  require(!folder.empty(), ErrorCode::kInvalidArgument, "save_folder: empty");
  if (trainer.process_group()) return save_sharded(trainer, *trainer.process_group(), folder, data, keep_last_n);
  io::make_directories(folder);
  // A writer killed mid-save leaves a .tmp-step* directory, which never became a checkpoint,
  // or (re-saving a step) a .old-stepN one, which is the previous stepN if the new one never
  // arrived. (One writer per save folder.)
  clean_stale(folder);
  const std::string final_dir = folder + "/step" + std::to_string(trainer.step());
  const std::string tmp_dir = folder + "/.tmp-step" + std::to_string(trainer.step()) + "-" + random_suffix();
  if (::mkdir(tmp_dir.c_str(), 0755) != 0) fail_errno("cannot create directory", tmp_dir);
  try {
    fb::CheckpointMetaT meta = base_meta(trainer, data);

    auto record = [&](const std::string& file, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
      for (const auto& [name, t] : tensors) {
        auto r = std::make_unique<fb::TensorRecordT>();
        r->name = name;
        r->file = file;
        r->dtype = c10::toString(t.scalar_type());
        r->shape = t.sizes().vec();
        r->crc32 = tensor_crc(t);
        meta.tensors.push_back(std::move(r));
      }
      io::save_safetensors(tmp_dir + "/" + file, tensors);
    };
    std::vector<std::pair<std::string, at::Tensor>> model_tensors;
    for (auto& p : trainer.model().module().named_state()) model_tensors.emplace_back(p.name, *p.tensor);
    record(kModelFile, model_tensors);
    record(kOptimFile, trainer.optimizer().state());

    write_meta(tmp_dir, meta);
    fsync_dir(tmp_dir);
    publish(folder, tmp_dir, final_dir, trainer.step());
  } catch (...) {
    remove_tree(tmp_dir);
    throw;
  }
  prune(folder, keep_last_n);
  return final_dir;
}

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

DataPosition load(train::Trainer& trainer, const std::string& path) {
  // What this trainer needs: whole tensors, or under FSDP only this rank's pieces of the
  // parameters and of their optimizer state (plus the replicated buffers and scalar state).
  dist::FullyShardedDataParallel* fsdp = trainer.fsdp();
  std::map<std::string, dist::FullyShardedDataParallel::Piece> pieces;
  if (fsdp)
    for (auto& piece : fsdp->pieces_of_rank(fsdp->group().rank())) pieces[piece.name] = piece;
  std::set<std::string> param_names;
  for (auto& p : trainer.model().module().named_parameters()) param_names.insert(p.name);
  const Need need = [&](const std::string& group, const std::string& name, const std::vector<int64_t>& shape) {
    const Ranges whole{{0, numel_of(shape)}};
    if (!fsdp) return whole;
    const std::string param = group == kModelFile ? name : train::Optimizer::parameter_of_state(name);
    if (group == kModelFile && !param_names.count(name)) return whole;  // a buffer
    auto it = pieces.find(param);
    if (it == pieces.end()) return Ranges{};  // another rank's parameter (or unknown state)
    const auto& piece = it->second;
    // A scalar state (or a shape that is not the parameter's, refused below): all of it.
    if (numel_of(shape) != numel_of(piece.shape) || shape.empty()) return whole;
    return Ranges{{piece.offset, piece.offset + piece.numel}};
  };

  // Read and verify every needed tensor before touching the trainer. Under FSDP every rank
  // reads different parts, so the ranks agree first (a collective): a failure on one fails all
  // (finding the checkpoint included), and none is left training from a half-restored state.
  std::string dir = path;
  std::unique_ptr<fb::CheckpointMetaT> native;
  LoadedTensors loaded;
  std::map<std::string, at::Tensor> shard;  // FSDP: this rank's parameter pieces
  std::map<std::string, at::Tensor> optim_state;
  std::map<std::string, at::Tensor> model_values;  // the rest: whole tensors on their devices
  auto params = trainer.model().module().named_state();
  std::exception_ptr error;
  at::Tensor rng_state;
  try {
    dir = resolve(path);
    explained(dir, [&] {
      native = read_meta_native(dir).native;
      require(native->model_config == trainer.model().config().to_flatbuffer(), ErrorCode::kMismatch,
              "checkpoint '" + dir + "' was written for a different model config");
      loaded = native->world_size > 0 ? read_sharded(dir, *native, need) : read_unsharded(dir, *native, need);
      auto& model = loaded[kModelFile];
      for (auto& p : params) {
        auto it = model.find(p.name);
        const bool own = !fsdp || !param_names.count(p.name) || pieces.count(p.name);
        if (!own) continue;
        require(it != model.end(), ErrorCode::kMismatch,
                "checkpoint '" + dir + "': parameter '" + p.name + "' is missing");
        require(it->second.shape == p.tensor->sizes().vec(), ErrorCode::kMismatch,
                "checkpoint '" + dir + "': parameter '" + p.name + "' has the wrong shape");
        if (fsdp && param_names.count(p.name)) shard[p.name] = it->second.parts.at(0);
        else model_values[p.name] = it->second.whole().to(p.tensor->device());
      }
      for (auto& [name, t] : loaded[kOptimFile]) {
        if (fsdp) {
          auto it = pieces.find(train::Optimizer::parameter_of_state(name));
          if (it != pieces.end() && !t.shape.empty())
            require(t.shape == it->second.shape, ErrorCode::kMismatch,
                    "checkpoint '" + dir + "': optimizer state '" + name + "' has the wrong shape");
          optim_state[name] = t.shape.empty() || it == pieces.end() ? t.whole() : t.parts.at(0);
        } else {
          optim_state[name] = t.whole();
        }
      }
      if (!fsdp) check_optimizer_state(dir, trainer.optimizer(), optim_state);
      loaded.clear();  // what is needed was moved out above
      if (!native->rng_state.empty()) {  // checked against LibTorch's rules by read_meta_native
        rng_state = at::empty({static_cast<int64_t>(native->rng_state.size())}, at::kByte);
        std::memcpy(rng_state.data_ptr(), native->rng_state.data(), native->rng_state.size());
      }
    });
  } catch (...) {
    if (!fsdp) throw;
    error = std::current_exception();
  }
  if (fsdp) {
    const bool ok = all_ok(*trainer.process_group(), !error);  // every replica, under HSDP
    if (error) std::rethrow_exception(error);
    require(ok, ErrorCode::kIo, "checkpoint '" + dir + "': another rank failed to read it (nothing was loaded)");
  }
  // Everything was read, checked and moved onto the trainer's devices above: from here on only
  // copies of matching shapes into the trainer's tensors, so a refusal above leaves the trainer
  // and model exactly as they were. (A device running out of memory while the optimizer
  // allocates its state for the first time is the one failure left here.)
  at::NoGradGuard no_grad;
  if (fsdp) fsdp->load_shard(shard);
  for (auto& p : params) {
    if (fsdp && param_names.count(p.name)) continue;
    p.tensor->copy_(model_values.at(p.name));
  }
  trainer.optimizer().load_state(optim_state);
  trainer.optimizer().restore_history(native->recent_losses, native->recent_grad_norms);
  trainer.restore_counters(native->step, native->tokens_seen, native->skipped_steps);
  if (rng_state.defined()) {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng_state);
  }
  return {native->data_epoch, native->data_batch_in_epoch};
}

}  // namespace olm::checkpoint
