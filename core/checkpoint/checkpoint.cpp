#include "core/checkpoint/checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "core/checkpoint/internal.h"
#include "core/distributed/fsdp.h"
#include "core/distributed/process_group.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"

// Single-process save, the reading of a single-process checkpoint's whole files, and load()
// for every kind. The rest: internal.h.
namespace olm::checkpoint {
namespace {

using namespace detail;

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

using namespace detail;

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

DataPosition load(train::Trainer& trainer, const std::string& path) {
  // What this trainer needs: whole tensors, or under FSDP only this rank's pieces of the
  // parameters and of their optimizer state (plus the replicated buffers and scalar state);
  // under TP its slices of the split parameters and their state (under FSDP its pieces of
  // them), each a list of whole-tensor ranges.
  distributed::FullyShardedDataParallel* fsdp = trainer.fsdp();
  std::map<std::string, distributed::FullyShardedDataParallel::Piece> pieces;
  if (fsdp)
    for (auto& piece : fsdp->pieces_of_rank(fsdp->group().rank())) pieces[piece.name] = piece;
  const TensorParallelLayout tp = tensor_parallel_layout(trainer);
  const auto& split = tp.split;
  // A parameter's whole shape (a split one's pieces and tensor are its slice's).
  std::map<std::string, std::vector<int64_t>> param_shapes;
  for (auto& p : trainer.model().module().named_parameters()) {
    auto it = split.find(p.name);
    param_shapes[p.name] = it != split.end() ? it->second.whole_shape : p.tensor->sizes().vec();
  }
  const Need need = [&](const std::string& group, const std::string& name, const std::vector<int64_t>& shape) {
    const Ranges whole{{0, numel_of(shape)}};
    const std::string param = group == kModelFile ? name : train::Optimizer::parameter_of_state(name);
    if (group == kModelFile && !param_shapes.count(name)) return whole;  // a buffer
    auto sl = split.find(param);
    if (!fsdp && sl == split.end()) return whole;
    auto it = pieces.find(param);
    if (fsdp && it == pieces.end()) return Ranges{};  // another rank's parameter (or unknown state)
    // A scalar state (or a shape that is not the parameter's, refused below): all of it.
    auto ps = param_shapes.find(param);
    if (shape.empty() || ps == param_shapes.end() || shape != ps->second) return whole;
    const Slice slice = sl != split.end() ? sl->second.slice : Slice{};
    if (fsdp) return whole_ranges(shape, slice, it->second.offset, it->second.numel);
    return whole_ranges(shape, slice, 0, numel_of(shape) / shape[static_cast<size_t>(slice.dim)] * slice.length);
  };

  // Read and verify every needed tensor before touching the trainer. Under FSDP or TP every
  // rank reads different parts, so the ranks agree first (a collective): a failure on one fails
  // all (finding the checkpoint included), and none is left training from a half-restored state.
  const bool collective = fsdp || tp.active;
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
        const bool param = param_shapes.count(p.name) > 0;
        const bool own = !fsdp || !param || pieces.count(p.name);
        if (!own) continue;
        require(it != model.end(), ErrorCode::kMismatch,
                "checkpoint '" + dir + "': parameter '" + p.name + "' is missing");
        require(it->second.shape == (param ? param_shapes.at(p.name) : p.tensor->sizes().vec()), ErrorCode::kMismatch,
                "checkpoint '" + dir + "': parameter '" + p.name + "' has the wrong shape");
        // The needed elements in order: a piece, or this rank's slice (its tensor's shape).
        if (fsdp && param) shard[p.name] = it->second.joined();
        else model_values[p.name] = it->second.joined().reshape(p.tensor->sizes()).to(p.tensor->device());
      }
      std::map<std::string, std::vector<int64_t>> local_shapes;
      for (auto& p : trainer.model().module().named_parameters()) local_shapes[p.name] = p.tensor->sizes().vec();
      for (auto& [name, t] : loaded[kOptimFile]) {
        const std::string param = train::Optimizer::parameter_of_state(name);
        auto ps = param_shapes.find(param);
        const bool shaped = !t.shape.empty() && ps != param_shapes.end() && t.shape == ps->second;
        if (fsdp) {
          auto it = pieces.find(param);
          if (it != pieces.end() && !t.shape.empty())
            require(shaped, ErrorCode::kMismatch,
                    "checkpoint '" + dir + "': optimizer state '" + name + "' has the wrong shape");
          optim_state[name] = t.shape.empty() || it == pieces.end() ? t.whole() : t.joined();
        } else {
          // A split parameter's state: this rank's slice, shaped as its tensor (any other
          // shape is whole, refused by check_optimizer_state).
          optim_state[name] = shaped && split.count(param) ? t.joined().reshape(local_shapes.at(param)) : t.whole();
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
    if (!collective) throw;
    error = std::current_exception();
  }
  if (collective) {
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
    if (fsdp && param_shapes.count(p.name)) continue;
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
