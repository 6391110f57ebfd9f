#include "core/run/run.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/checkpoint/checkpoint.h"
#include "core/distributed/process_group.h"
#include "core/error.h"
#include "core/io/atomic_file.h"

namespace olm::run {
namespace fs = std::filesystem;

namespace {

std::string absolute_against(const std::string& path, const fs::path& base) {
  if (path.empty()) return path;
  fs::path p(path);
  if (p.is_relative()) p = base / p;
  return p.lexically_normal().string();
}

// Absolute and normal, without a trailing slash.
fs::path absolute_dir(const std::string& dir) {
  auto p = fs::absolute(dir.empty() ? fs::path(".") : fs::path(dir)).lexically_normal();
  if (p.has_relative_path() && p.filename().empty()) p = p.parent_path();
  return p;
}

// The same folder, whether written with a trailing slash, relative, or through links.
bool same_folder(const std::string& a, const std::string& b) {
  std::error_code ec;
  const auto ca = fs::weakly_canonical(fs::absolute(a), ec);
  if (ec) return false;
  const auto cb = fs::weakly_canonical(fs::absolute(b), ec);
  if (ec) return false;
  auto strip = [](std::string s) {
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    return s;
  };
  return strip(ca.string()) == strip(cb.string());
}

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos || slash == 0 ? std::string() : path.substr(0, slash);
}

// Whether any rank's `local` is true (an all-reduce with a process group).
bool any_rank(const train::Trainer& trainer, bool local) {
  const auto& group = trainer.process_group();
  if (!group) return local;
  auto flag = at::full({1}, local ? 1L : 0L, at::TensorOptions(at::kLong).device(group->comm_device()));
  group->all_reduce_sum({flag});
  return flag.item<int64_t>() > 0;
}

// The "step" a metrics line records, or -1 when the line is not a complete record.
int64_t line_step(const std::string& line) {
  static const std::string key = "\"step\":";
  if (line.empty() || line.front() != '{' || line.back() != '}') return -1;
  const auto at = line.find(key);
  if (at == std::string::npos) return -1;
  const char* begin = line.c_str() + at + key.size();
  char* end = nullptr;
  errno = 0;
  const long long step = std::strtoll(begin, &end, 10);
  return end == begin || errno != 0 ? -1 : static_cast<int64_t>(step);
}

}  // namespace

train::TrainConfig resolve_paths(const train::TrainConfig& config, const std::string& base_dir) {
  const fs::path base = absolute_dir(base_dir);
  auto native = config.native();
  for (auto* data : {native.data.get(), native.eval_data.get()})
    if (data)
      for (auto& path : data->paths) path = absolute_against(path, base);
  native.save_folder = absolute_against(native.save_folder, base);
  native.metrics_path = absolute_against(native.metrics_path, base);
  return train::TrainConfig::from_native(native);
}

train::TrainConfig load_config(const std::string& path) {
  const auto config = train::TrainConfig::from_json_file(path);
  return resolve_paths(config, fs::absolute(path).parent_path().string());
}

train::TrainConfig relocate(const train::TrainConfig& config, const std::string& folder) {
  require(!folder.empty(), ErrorCode::kInvalidArgument, "save_folder: empty");
  const auto& spec = config.spec();
  if (!spec.save_folder.empty() && same_folder(spec.save_folder, folder)) return config;
  auto native = config.native();
  const fs::path target = absolute_dir(folder);
  native.save_folder = target.string();
  if (!native.metrics_path.empty()) native.metrics_path = (target / fs::path(native.metrics_path).filename()).string();
  return train::TrainConfig::from_native(native);
}

train::TrainConfig with_max_steps(const train::TrainConfig& config, int64_t max_steps) {
  auto native = config.native();
  native.max_steps = max_steps;
  return train::TrainConfig::from_native(native);
}

std::string save_checkpoint(train::Trainer& trainer, const std::string& folder) {
  const auto& pos = trainer.data_position();
  return checkpoint::save(trainer, folder, {pos.epoch, pos.batch_in_epoch}, trainer.config().spec().keep_last_n);
}

void load_checkpoint(train::Trainer& trainer, const std::string& path) {
  const auto pos = checkpoint::load(trainer, path);
  trainer.set_data_position({pos.epoch, pos.batch_in_epoch});
}

ResumePlan plan_resume(const std::string& path, const std::string& folder) {
  ResumePlan plan;
  plan.checkpoint = fs::absolute(checkpoint::resolve(path)).lexically_normal().string();
  auto meta = checkpoint::read_meta(plan.checkpoint);
  plan.run_folder = folder.empty() ? parent_dir(plan.checkpoint) : absolute_dir(folder).string();
  require(!plan.run_folder.empty(), ErrorCode::kInvalidArgument,
          "cannot tell the run folder of '" + plan.checkpoint + "': give one");
  plan.model_config = meta.model_config;
  plan.train_config = relocate(resolve_paths(meta.train_config, "."), plan.run_folder);
  return plan;
}

std::shared_ptr<data::TokenDataset> open_dataset(const train::DataSpec& spec, int64_t sequence_length,
                                                 int64_t vocab_size) {
  data::DatasetOptions o = spec.dataset;
  o.sequence_length = sequence_length;
  o.vocab_size = vocab_size;
  return data::TokenDataset::from_files(spec.paths, o);
}

void check_steps(const train::Trainer& trainer) {
  const auto& spec = trainer.config().spec();
  require(spec.max_steps > 0, ErrorCode::kInvalidArgument,
          "max_steps: the train config sets none (or 0), so there is nothing to train; set max_steps");
  require(trainer.step() < spec.max_steps, ErrorCode::kInvalidArgument,
          "max_steps: the run is at step " + std::to_string(trainer.step()) + " and max_steps is " +
              std::to_string(spec.max_steps) + ", so there is nothing to train; raise max_steps");
}

void check_outputs(const train::Trainer& trainer) {
  const auto& spec = trainer.config().spec();
  std::string problem;
  auto attempt = [&](const std::string& field, const std::string& path, const std::function<void()>& check) {
    if (!problem.empty()) return;
    try {
      check();
    } catch (const std::exception& e) {
      problem = field + " '" + path + "' is not writable: " + e.what();
    }
  };
  if (!spec.save_folder.empty()) {
    attempt("save_folder", spec.save_folder, [&] {
      io::make_directories(spec.save_folder);
      const std::string probe =
          spec.save_folder + "/.olm-write-check-" + std::to_string(::getpid()) + "-" + std::to_string(trainer.rank());
      const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) throw std::runtime_error(std::strerror(errno));
      ::close(fd);
      ::unlink(probe.c_str());
    });
  }
  if (!spec.metrics_path.empty() && trainer.rank() == 0) {
    attempt("metrics_path", spec.metrics_path, [&] {
      const auto dir = parent_dir(spec.metrics_path);
      if (!dir.empty()) io::make_directories(dir);
      std::ofstream out(spec.metrics_path, std::ios::app);
      if (!out.good()) throw std::runtime_error(std::strerror(errno));
    });
  }
  const bool failed_here = !problem.empty();
  const bool failed = any_rank(trainer, failed_here);
  if (failed_here) throw Error(ErrorCode::kIo, problem);
  require(!failed, ErrorCode::kIo, "another rank cannot write the run's outputs (save_folder or metrics_path)");
}

void trim_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) return;
  std::string kept, line;
  bool changed = false;
  while (std::getline(in, line)) {
    // A line without its newline was torn by a kill; so is one that is not a record.
    const bool complete = !in.eof();
    const int64_t s = complete ? line_step(line) : -1;
    if (s >= 0 && s <= step) {
      kept += line + "\n";
    } else {
      changed = true;
    }
  }
  in.close();
  if (!changed) return;
  io::write_file_atomically(path, [&](int fd) { io::write_all(fd, kept.data(), kept.size(), path); });
}

FitResult fit(train::Trainer& trainer, const FitOptions& options) {
  check_steps(trainer);
  const auto& spec = trainer.config().spec();
  const int64_t vocab = trainer.model().config().spec().vocab_size;
  auto train_data = options.train_data;
  auto eval_data = options.eval_data;
  if (!train_data) {
    require(spec.data.has_value(), ErrorCode::kInvalidArgument,
            "data: the train config has no `data` section and no training dataset was given");
    train_data = open_dataset(*spec.data, spec.sequence_length, vocab);
    if (!eval_data && spec.eval_data) eval_data = open_dataset(*spec.eval_data, spec.sequence_length, vocab);
  }
  check_outputs(trainer);
  if (!spec.metrics_path.empty() && trainer.rank() == 0) trim_metrics(spec.metrics_path, trainer.step());
  data::DataLoader loader(train_data, spec.global_batch_instances(), static_cast<uint64_t>(spec.seed), trainer.data_parallel_rank(),
                          trainer.data_parallel_world_size());
  loader.restore(trainer.data_position());
  if (options.on_start) options.on_start(*train_data);
  return fit_loop(trainer, loader, eval_data, options.callbacks, options.documents);
}

}  // namespace olm::run
