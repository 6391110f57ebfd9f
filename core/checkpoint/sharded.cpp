// Sharded checkpoints (checkpoint.h): the collective save of a process group, every rank
// writing rank<r>.safetensors, and the reading of a rank's needed ranges from the shard files.
#include <sys/stat.h>

#include <algorithm>
#include <limits>

#include "core/checkpoint/internal.h"
#include "core/distributed/fsdp.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"

namespace olm::checkpoint {
namespace {

using namespace detail;

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

// What a sharded save writes. `tensors` is the same list, in the same order, on every rank
// (rank 0 writes the records of shards it never saw); `writes` are this rank's shards of them.
struct ShardPlan {
  struct Tensor {
    std::string group, name;
    std::vector<int64_t> shape;  // global (whole, under TP); {} when the writers say it is a scalar copy
    std::string dtype;           // "" when only the writers know it (optimizer state)
    bool always = true;          // recorded even when no rank writes any of it (empty tensors)
  };
  struct Write {
    size_t tensor;
    int64_t offset;  // first element within the tensor's (or the slice's) flattened elements
    at::Tensor data;  // 1-D
    bool scalar = false;  // a 0-d tensor every holder has a copy of (FSDP's per-piece .step)
    Slice slice;          // a tensor-parallel rank's slice of the tensor; whole by default
  };
  std::vector<Tensor> tensors;
  std::vector<Write> writes;
  // Scalar copies this rank holds but another rank writes: their checksums are compared with
  // the written one, so ranks that disagree fail the save instead of losing a value.
  std::vector<std::pair<size_t, at::Tensor>> copies;
};

// Who writes what under tensor parallelism: every rank its part of its slices of the split
// parameters and their state; TP rank 0's ranks the rest, which every TP rank holds alike.
// `part` of `parts`: this rank among those writing the same tensors (the ranks sharing its TP
// coordinate under TP, else the whole group).
struct Writers {
  TensorParallelLayout tp;
  int64_t part = 0, parts = 1;
  bool writes_whole() const { return tp.rank_zero; }
};

Writers writers(train::Trainer& trainer, int64_t rank, int64_t world) {
  Writers w{tensor_parallel_layout(trainer), rank, world};
  if (w.tp.active) {
    w.part = w.tp.batch_rank;
    w.parts = w.tp.batch_size;
  }
  return w;
}

std::string parameter_of(const std::string& group, const std::string& name) {
  return group == kModelFile ? name : train::Optimizer::parameter_of_state(name);
}

// DDP or one process per rank with the same full state: rank r writes the r-th contiguous
// slice of every tensor. Under TP (without FSDP) the ranks of each TP coordinate do so for
// their TP slices, and TP rank 0's for the rest.
ShardPlan replicated_plan(train::Trainer& trainer, int64_t rank, int64_t world) {
  const Writers role = writers(trainer, rank, world);
  ShardPlan plan;
  for (auto& [file, name, t] : trainer_tensors(trainer)) {
    const auto* split = role.tp.slice_of(parameter_of(file, name), t);
    plan.tensors.push_back(
        {file, name, split ? split->whole_shape : t.sizes().vec(), c10::toString(t.scalar_type()), true});
    if (!split && !role.writes_whole()) continue;
    const auto [begin, end] = shard_range(t.numel(), role.part, role.parts);
    if (end > begin)
      plan.writes.push_back({plan.tensors.size() - 1, begin, t.detach().reshape({-1}).slice(0, begin, end), false,
                             split ? split->slice : Slice{}});
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
// Under TP, FSDP shards each TP rank's slices: a piece of a split parameter is recorded with
// its offset within the slice, and the slice; replicated parameters, buffers and scalar state
// are written by TP rank 0's ranks (Writers), the other TP ranks' scalar copies compared.
ShardPlan fsdp_plan(train::Trainer& trainer, distributed::FullyShardedDataParallel& fsdp, int64_t rank, int64_t world) {
  const Writers role = writers(trainer, rank, world);
  ShardPlan plan;
  std::map<std::string, std::pair<distributed::FullyShardedDataParallel::Piece, at::Tensor>> mine;
  const bool writes_pieces = !fsdp.replicate_group() || fsdp.replicate_group()->rank() == 0;
  if (writes_pieces) {
    require(role.tp.active || fsdp.group().rank() == rank, ErrorCode::kInternal,
            "HSDP: the first replica is not world ranks 0..S-1");
    const auto pieces = fsdp.pieces_of_rank(fsdp.group().rank());
    const auto tensors = fsdp.shard_parameters();
    require(pieces.size() == tensors.size(), ErrorCode::kInternal, "FSDP: piece layout and shard differ");
    for (size_t i = 0; i < pieces.size(); ++i) mine[pieces[i].name] = {pieces[i], *tensors[i].tensor};
  }
  std::map<std::string, std::vector<int64_t>> param_shapes;  // global
  for (auto& p : trainer.model().module().named_parameters()) {
    const auto* split = role.tp.slice_of(p.name, *p.tensor);
    param_shapes[p.name] = split ? split->whole_shape : p.tensor->sizes().vec();
  }
  for (auto& p : trainer.model().module().named_state()) {
    const at::Tensor& t = *p.tensor;
    // A parameter's dtype is its pieces' (the float32 masters under bfloat16 param_dtype, not
    // the module's compute copies): taken from the writers' table.
    const bool param = param_shapes.count(p.name) > 0;
    const auto* split = role.tp.slice_of(p.name, t);
    plan.tensors.push_back({kModelFile, p.name, param ? param_shapes[p.name] : t.sizes().vec(),
                            param ? "" : c10::toString(t.scalar_type()), true});
    const size_t index = plan.tensors.size() - 1;
    if (!split && !role.writes_whole()) continue;
    if (param) {
      auto it = mine.find(p.name);
      if (it != mine.end())
        plan.writes.push_back({index, it->second.first.offset, it->second.second.detach().reshape({-1}), false,
                               split ? split->slice : Slice{}});
    } else {
      const auto [begin, end] = shard_range(t.numel(), role.part, role.parts);
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
        if (pc.offset == 0 && role.writes_whole()) plan.writes.push_back({index, 0, t.detach().reshape({1}), true});
        else plan.copies.emplace_back(index, t.detach());
        continue;
      }
      const auto* split = role.tp.slice_of(param, t);
      if (!split && !role.writes_whole()) continue;
      require(t.numel() == pc.numel, ErrorCode::kInternal,
              "optimizer state '" + name + "': " + std::to_string(t.numel()) + " elements for a piece of " +
                  std::to_string(pc.numel));
      plan.writes.push_back({index, pc.offset, t.detach().reshape({-1}), false, split ? split->slice : Slice{}});
    }
  }
  return plan;
}

// The table every rank fills in its own column of and one all-reduce hands to rank 0.
// kSliceDim holds the slice's dimension + 1 (0: the whole tensor).
enum ShardColumn : int64_t {
  kDtype, kCrc, kOffset, kNumel, kScalar, kCopyCrc, kSliceDim, kSliceStart, kSliceLength, kColumns
};

}  // namespace

namespace detail {

TensorParallelLayout tensor_parallel_layout(train::Trainer& trainer) {
  TensorParallelLayout layout;
  if (!trainer.tensor_parallel()) return layout;
  const auto& tp_group = trainer.tensor_parallel_group();
  layout.active = true;
  layout.rank_zero = tp_group->rank() == 0;
  layout.batch_rank = trainer.batch_group()->rank();
  layout.batch_size = trainer.batch_group()->world_size();
  for (auto& s : trainer.model().module().tensor_parallel_slices(tp_group->rank()))
    if (s.dim >= 0) layout.split[s.name] = {{s.dim, s.start, s.length}, s.full_shape};
  return layout;
}

// True on every rank when `ok` holds on every rank (an all-reduce of the failures).
bool all_ok(distributed::ProcessGroup& group, bool ok) {
  auto flag = at::full({1}, ok ? 0L : 1L, at::TensorOptions(at::kLong).device(group.comm_device()));
  group.all_reduce_sum({flag});
  return flag.item<int64_t>() == 0;
}

std::string save_sharded(train::Trainer& trainer, distributed::ProcessGroup& group, const std::string& folder,
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
      row[kSliceDim] = w.slice.dim + 1;
      row[kSliceStart] = w.slice.start;
      row[kSliceLength] = w.slice.length;
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
          sh->slice_dim = static_cast<int32_t>(row[kSliceDim] - 1);
          sh->slice_start = row[kSliceStart];
          sh->slice_length = row[kSliceLength];
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

Ranges whole_ranges(const std::vector<int64_t>& shape, const Slice& slice, int64_t offset, int64_t numel) {
  if (numel <= 0) return {};
  if (slice.dim < 0) return {{offset, offset + numel}};
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(slice.dim) + 1; d < shape.size(); ++d) inner *= shape[d];
  // The slice's elements come in runs of `run`, one per index of the dimensions before
  // slice.dim, `stride` apart in the whole tensor.
  const int64_t run = slice.length * inner, stride = shape[static_cast<size_t>(slice.dim)] * inner;
  if (run <= 0) return {};  // an empty slice (refused by the readers' checks before this)
  Ranges out;
  for (int64_t i = offset, end = offset + numel; i < end;) {
    const int64_t outer = i / run, within = i % run, take = std::min(end - i, run - within);
    const int64_t begin = outer * stride + slice.start * inner + within;
    if (!out.empty() && out.back().second == begin) out.back().second += take;
    else out.emplace_back(begin, begin + take);
    i += take;
  }
  return out;
}

// The needed ranges of a sharded checkpoint's tensors, from the shards that overlap them. Every
// record's shards are checked to cover each of its elements exactly once (whole-tensor runs
// and slices alike); only overlapping shard entries are opened, read and checksummed, so a
// rank reads its own part of the checkpoint, not all of it.
LoadedTensors read_sharded(const std::string& dir, const fb::CheckpointMetaT& meta, const Need& need) {
  const std::string where = "checkpoint '" + dir + "'";
  std::map<std::pair<std::string, std::string>, std::vector<const fb::TensorShardT*>> shards;
  for (const auto& sh : meta.shards) {
    require(sh->numel > 0 && sh->offset >= 0 && sh->numel <= std::numeric_limits<int64_t>::max() - sh->offset,
            ErrorCode::kParse,
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
  // A run of a shard's entry, [local, local + end - begin), holding whole-tensor elements [begin, end).
  struct Segment {
    int64_t begin, end, local;
    const fb::TensorShardT* shard;
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
    const std::vector<const fb::TensorShardT*> list =
        it == shards.end() ? std::vector<const fb::TensorShardT*>{} : it->second;
    used += list.size();
    // Each shard's runs of whole-tensor elements; the coverage is checked for every tensor,
    // needed or not (it costs no reading).
    std::vector<std::vector<Segment>> runs(list.size());
    std::vector<Segment> all;
    for (size_t s = 0; s < list.size(); ++s) {
      const auto* sh = list[s];
      const Slice slice{sh->slice_dim, sh->slice_start, sh->slice_length};
      const std::string shard = what + ": shard in " + sh->file;
      int64_t elements = n;
      if (slice.dim < 0) {
        require(slice.dim == -1 && slice.start == 0 && slice.length == 0, ErrorCode::kParse,
                shard + " has slice_dim " + std::to_string(slice.dim) + ", slice_start " +
                    std::to_string(slice.start) + " and slice_length " + std::to_string(slice.length) +
                    " (a whole-tensor shard has -1, 0 and 0)");
      } else {
        const auto dims = static_cast<int64_t>(r->shape.size());
        require(slice.dim < dims, ErrorCode::kParse,
                shard + " has slice_dim " + std::to_string(slice.dim) + "; its shape has " + std::to_string(dims) +
                    " dimensions");
        const int64_t size = r->shape[static_cast<size_t>(slice.dim)];
        require(slice.start >= 0 && slice.length > 0 && slice.start <= size && slice.length <= size - slice.start,
                ErrorCode::kParse,
                shard + " slices [" + std::to_string(slice.start) + ", +" + std::to_string(slice.length) +
                    ") of dimension " + std::to_string(slice.dim) + ", which has " + std::to_string(size));
        auto sub = r->shape;
        sub[static_cast<size_t>(slice.dim)] = slice.length;
        elements = numel_of(sub);
      }
      require(sh->offset + sh->numel <= elements, ErrorCode::kParse,
              shard + " ends at element " + std::to_string(sh->offset + sh->numel) + " beyond its " +
                  (slice.dim < 0 ? "" : "slice's ") + std::to_string(elements) + " elements");
      int64_t local = 0;
      for (const auto& [begin, end] : whole_ranges(r->shape, slice, sh->offset, sh->numel)) {
        runs[s].push_back({begin, end, local, sh});
        local += end - begin;
      }
      all.insert(all.end(), runs[s].begin(), runs[s].end());
    }
    std::sort(all.begin(), all.end(), [](const Segment& a, const Segment& b) { return a.begin < b.begin; });
    int64_t next = 0;
    for (const auto& seg : all) {
      require(seg.begin == next, ErrorCode::kParse,
              what + ": its shards do not tile it (" + seg.shard->file + " starts at element " +
                  std::to_string(seg.begin) + ", expected " + std::to_string(next) + ": " +
                  (seg.begin < next ? "elements held twice" : "elements held by none") + ")");
      next = seg.end;
    }
    require(next == n, ErrorCode::kParse,
            what + ": its shards cover " + std::to_string(next) + " of its " + std::to_string(n) + " elements");
    Loaded loaded;
    loaded.shape = r->shape;
    loaded.ranges = need(r->file, r->name, r->shape);
    if (loaded.ranges.empty()) continue;
    // The non-empty needed ranges by position: disjoint, so their ends are in order too and
    // a run's overlapping ranges are found by binary search (a slice along dimension 1 needs
    // one range per row, and each of its shards holds one run per row).
    std::vector<size_t> order;
    for (size_t j = 0; j < loaded.ranges.size(); ++j) {
      const auto [begin, end] = loaded.ranges[j];
      require(0 <= begin && begin <= end && end <= n, ErrorCode::kMismatch,
              what + ": elements [" + std::to_string(begin) + ", " + std::to_string(end) + ") are needed, it has " +
                  std::to_string(n));
      loaded.parts.push_back(at::empty({end - begin}, dtype));
      if (end > begin) order.push_back(j);
    }
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return loaded.ranges[a].first < loaded.ranges[b].first; });
    for (size_t k = 1; k < order.size(); ++k)
      require(loaded.ranges[order[k - 1]].second <= loaded.ranges[order[k]].first, ErrorCode::kInternal,
              what + ": the needed ranges overlap");
    auto first_overlapping = [&](int64_t begin) {
      return std::partition_point(order.begin(), order.end(),
                                  [&](size_t j) { return loaded.ranges[j].second <= begin; });
    };
    for (size_t s = 0; s < list.size(); ++s) {
      bool overlaps = false;
      for (const auto& seg : runs[s]) {
        auto j = first_overlapping(seg.begin);
        overlaps = overlaps || (j != order.end() && loaded.ranges[*j].first < seg.end);
      }
      if (!overlaps) continue;
      const auto* sh = list[s];
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
      for (const auto& seg : runs[s]) {
        for (auto j = first_overlapping(seg.begin); j != order.end() && loaded.ranges[*j].first < seg.end; ++j) {
          const auto [begin, end] = loaded.ranges[*j];
          const int64_t a = std::max(begin, seg.begin), b = std::min(end, seg.end);
          loaded.parts[*j].narrow(0, a - begin, b - a).copy_(t.narrow(0, seg.local + a - seg.begin, b - a));
        }
      }
    }
    out[r->file][r->name] = std::move(loaded);
  }
  require(used == meta.shards.size(), ErrorCode::kParse, where + ": a shard names a tensor that has no record");
  return out;
}

}  // namespace detail

using namespace detail;

std::string shard_file(int64_t rank) { return "rank" + std::to_string(rank) + ".safetensors"; }

std::pair<int64_t, int64_t> shard_range(int64_t n, int64_t rank, int64_t world) {
  const int64_t chunk = (n + world - 1) / world;
  return {std::min(n, rank * chunk), std::min(n, (rank + 1) * chunk)};
}

}  // namespace olm::checkpoint
