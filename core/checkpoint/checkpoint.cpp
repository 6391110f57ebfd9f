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
#include <random>
#include <set>

#include "core/dist/process_group.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/crc32.h"
#include "core/io/safetensors.h"

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

std::unique_ptr<fb::CheckpointMetaT> read_meta_native(const std::string& dir) {
  const std::string path = dir + "/" + kMetaFile;
  auto bytes = read_file(path);
  require(bytes.size() >= 8 && flatbuffers::BufferHasIdentifier(bytes.data(), kMetaIdentifier),
          ErrorCode::kParse, "checkpoint metadata '" + path + "': not an olm checkpoint (identifier \"OLMK\")");
  flatbuffers::Verifier verifier(bytes.data(), bytes.size(), 64, 1000000);
  require(verifier.VerifyBuffer<fb::CheckpointMeta>(kMetaIdentifier), ErrorCode::kParse,
          "checkpoint metadata '" + path + "': verification failed (corrupt file)");
  auto meta = std::make_unique<fb::CheckpointMetaT>();
  flatbuffers::GetRoot<fb::CheckpointMeta>(bytes.data())->UnPackTo(meta.get());
  require(meta->schema_version == 1, ErrorCode::kParse,
          "checkpoint metadata '" + path + "': unsupported schema_version " +
              std::to_string(meta->schema_version));
  return meta;
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
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(fb::CheckpointMeta::Pack(builder, &meta), kMetaIdentifier);
  io::write_file_atomically(dir + "/" + kMetaFile, [&](int fd) {
    io::write_all(fd, builder.GetBufferPointer(), builder.GetSize(), dir + "/" + kMetaFile);
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
  const auto tensors = trainer_tensors(trainer);
  // Each rank checksums the slices it wrote; one all-reduce hands rank 0 the table.
  auto crcs = at::zeros({static_cast<int64_t>(tensors.size()), world}, at::kLong);
  try {
    std::vector<std::pair<std::string, at::Tensor>> slices;
    auto crc = crcs.accessor<int64_t, 2>();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& [file, name, t] = tensors[i];
      const auto [begin, end] = shard_range(t.numel(), rank, world);
      if (end <= begin) continue;
      auto slice = t.detach().reshape({-1}).slice(0, begin, end).to(at::kCPU).contiguous();
      crc[static_cast<int64_t>(i)][rank] = tensor_crc(slice);
      slices.emplace_back(shard_entry(file, name), slice);
    }
    io::save_safetensors(tmp_dir + "/" + shard_file(rank), slices);
  } catch (...) {
    error = std::current_exception();
  }
  agree("to write its shard");
  try {
    auto on_device = crcs.to(group.comm_device());
    group.all_reduce_sum({on_device});
    crcs = on_device.to(at::kCPU);
  } catch (...) {
    if (rank == 0) remove_tree(tmp_dir);
    throw;
  }
  if (rank == 0) {
    try {
      fb::CheckpointMetaT meta = base_meta(trainer, data);
      meta.world_size = static_cast<int32_t>(world);
      const auto crc = crcs.accessor<int64_t, 2>();
      for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& [file, name, t] = tensors[i];
        auto r = std::make_unique<fb::TensorRecordT>();
        r->name = name;
        r->file = file;
        r->dtype = c10::toString(t.scalar_type());
        r->shape = t.sizes().vec();
        // Integrity is per shard (checksummed by the rank that wrote it), so no rank needs to
        // read a whole tensor: 0 here.
        r->crc32 = 0;
        meta.tensors.push_back(std::move(r));
        for (int64_t k = 0; k < world; ++k) {
          const auto [begin, end] = shard_range(t.numel(), k, world);
          if (end <= begin) continue;
          auto sh = std::make_unique<fb::TensorShardT>();
          sh->tensor = name;
          sh->group = file;
          sh->file = shard_file(k);
          sh->entry = shard_entry(file, name);
          sh->offset = begin;
          sh->numel = end - begin;
          sh->crc32 = static_cast<uint32_t>(crc[static_cast<int64_t>(i)][k]);
          meta.shards.push_back(std::move(sh));
        }
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

// Every tensor of a sharded checkpoint, assembled from its shards and verified.
std::map<std::string, std::map<std::string, at::Tensor>> read_sharded(const std::string& dir,
                                                                        const fb::CheckpointMetaT& meta) {
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
  std::map<std::string, std::map<std::string, at::Tensor>> out;
  size_t used = 0;
  for (const auto& r : meta.tensors) {
    require(r->file == kModelFile || r->file == kOptimFile, ErrorCode::kParse,
            where + ": unknown tensor group '" + r->file + "'");
    const std::string what = where + ": tensor '" + r->name + "' (" + r->file + ")";
    int64_t n = 1;
    for (int64_t d : r->shape) {
      require(d >= 0, ErrorCode::kParse, what + ": negative dimension in its shape");
      n *= d;
    }
    auto it = shards.find({r->file, r->name});
    std::vector<const fb::TensorShardT*> list = it == shards.end() ? std::vector<const fb::TensorShardT*>{} : it->second;
    used += list.size();
    std::sort(list.begin(), list.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    std::vector<at::Tensor> parts;
    int64_t next = 0;
    for (const auto* sh : list) {
      require(sh->offset == next, ErrorCode::kParse,
              what + ": its shards do not tile it (" + sh->file + " starts at element " + std::to_string(sh->offset) +
                  ", expected " + std::to_string(next) + ")");
      next += sh->numel;
      require(next <= n, ErrorCode::kParse,
              what + ": shard in " + sh->file + " ends at element " + std::to_string(next) + " beyond its " +
                  std::to_string(n) + " elements");
      auto& file = open(sh->file);
      const io::SafetensorsEntry* entry = nullptr;
      for (const auto& e : file.entries())
        if (e.name == sh->entry) entry = &e;
      require(entry != nullptr, ErrorCode::kParse, what + ": entry '" + sh->entry + "' is missing from " + sh->file);
      require(entry->shape == std::vector<int64_t>{sh->numel}, ErrorCode::kParse,
              what + ": entry '" + sh->entry + "' in " + sh->file + " has a different shape than recorded");
      require(c10::toString(entry->dtype) == r->dtype, ErrorCode::kParse,
              what + ": entry '" + sh->entry + "' in " + sh->file + " is " + c10::toString(entry->dtype) +
                  ", recorded " + r->dtype);
      auto t = file.read(*entry);
      require(tensor_crc(t) == sh->crc32, ErrorCode::kParse,
              what + ": checksum mismatch in " + sh->file + " (corrupt file)");
      parts.push_back(t);
    }
    require(next == n && (n == 0 || !parts.empty()), ErrorCode::kParse,
            what + ": its shards cover " + std::to_string(next) + " of its " + std::to_string(n) + " elements");
    at::Tensor full;
    if (parts.empty()) {
      // An empty tensor has no shards; its dtype comes from the record.
      full = at::empty(r->shape, at::kFloat);
      for (auto dt : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kByte, at::kBool})
        if (r->dtype == c10::toString(dt)) full = at::empty(r->shape, dt);
    } else {
      full = (parts.size() == 1 ? parts[0] : at::cat(parts)).reshape(r->shape);
    }
    out[r->file][r->name] = full;
  }
  require(used == meta.shards.size(), ErrorCode::kParse, where + ": a shard names a tensor that has no record");
  return out;
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

Meta read_meta(const std::string& path) {
  const std::string dir = resolve(path);
  auto native = read_meta_native(dir);
  Meta meta;
  meta.schema_version = native->schema_version;
  meta.step = native->step;
  meta.tokens_seen = native->tokens_seen;
  meta.skipped_steps = native->skipped_steps;
  meta.model_config = Config::from_flatbuffer(native->model_config.data(), native->model_config.size());
  meta.train_config = train::TrainConfig::from_flatbuffer(native->train_config.data(), native->train_config.size());
  meta.data = {native->data_epoch, native->data_batch_in_epoch};
  meta.world_size = native->world_size;
  return meta;
}

DataPosition load(train::Trainer& trainer, const std::string& path) {
  const std::string dir = resolve(path);
  auto native = read_meta_native(dir);
  const auto expected = trainer.model().config().to_flatbuffer();
  require(native->model_config == expected, ErrorCode::kMismatch,
          "checkpoint '" + dir + "' was written for a different model config");

  // Read and verify every tensor before touching the trainer.
  std::map<std::string, std::map<std::string, at::Tensor>> by_file;
  if (native->world_size > 0) {
    by_file = read_sharded(dir, *native);
  } else {
    require(native->world_size == 0 && native->shards.empty(), ErrorCode::kParse,
            "checkpoint '" + dir + "': shards without a world size");
  std::map<std::string, std::unique_ptr<io::SafetensorsFile>> files;
  for (const auto& r : native->tensors) {
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
    auto t = file->read(*entry);
    require(tensor_crc(t) == r->crc32, ErrorCode::kParse,
            "checkpoint '" + dir + "': checksum mismatch for tensor '" + r->name + "' in " + r->file +
                " (corrupt file)");
    by_file[r->file][r->name] = t;
  }
  }
  auto params = trainer.model().module().named_state();
  for (const auto& p : params) {
    auto it = by_file[kModelFile].find(p.name);
    require(it != by_file[kModelFile].end(), ErrorCode::kMismatch,
            "checkpoint '" + dir + "': parameter '" + p.name + "' is missing");
    require(it->second.sizes() == p.tensor->sizes(), ErrorCode::kMismatch,
            "checkpoint '" + dir + "': parameter '" + p.name + "' has the wrong shape");
  }
  at::NoGradGuard no_grad;
  for (auto& p : params) p.tensor->copy_(by_file[kModelFile][p.name]);
  std::map<std::string, at::Tensor> optim_state;
  for (auto& [name, t] : by_file[kOptimFile]) optim_state[name] = t;
  trainer.optimizer().load_state(optim_state);
  trainer.optimizer().restore_history(native->recent_losses, native->recent_grad_norms);
  trainer.restore_counters(native->step, native->tokens_seen, native->skipped_steps);
  if (!native->rng_state.empty()) {
    auto state = at::empty({static_cast<int64_t>(native->rng_state.size())}, at::kByte);
    std::memcpy(state.data_ptr(), native->rng_state.data(), native->rng_state.size());
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
  return {native->data_epoch, native->data_batch_in_epoch};
}

}  // namespace olm::checkpoint
