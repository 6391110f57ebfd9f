#include "core/run/fit.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/checkpoint/checkpoint.h"
#include "core/distributed/process_group.h"
#include "core/error.h"
#include "core/io/atomic_file.h"
#include "core/train/evaluate.h"

namespace olm::run {
namespace {

std::string json_value(double v) {
  if (!std::isfinite(v)) return "null";
  std::ostringstream os;
  os.precision(9);
  os << v;
  return os.str();
}

std::string json_value(int64_t v) { return std::to_string(v); }
std::string json_value(bool v) { return v ? "true" : "false"; }

std::string metrics_json(const train::StepMetrics& m) {
  std::string out;
#define FIELD(type, name, doc) out += std::string(out.empty() ? "{" : ",") + "\"" #name "\":" + json_value(m.name);
  OLM_STEP_METRICS(FIELD)
  if (m.comm_bytes > 0) {
    OLM_STEP_METRICS_COMM(FIELD)
  }
  if (m.param_shard_bytes > 0) {
    OLM_STEP_METRICS_FSDP(FIELD)
  }
#undef FIELD
  return out + "}";
}

}  // namespace

FitResult fit_loop(train::Trainer& trainer, data::DataLoader& loader,
                   std::shared_ptr<const data::TokenDataset> eval, const FitCallbacks& callbacks,
                   std::optional<bool> documents) {
  const train::TrainSpec& spec = trainer.config().spec();
  std::unique_ptr<std::ofstream> metrics;
  // With a process group, rank 0 alone writes metrics; checkpoints are sharded, each rank
  // writing its slice and rank 0 the metadata.
  const bool writer = trainer.rank() == 0;
  if (!spec.metrics_path.empty() && writer) {
    const auto slash = spec.metrics_path.find_last_of('/');
    if (slash != std::string::npos && slash > 0) io::make_directories(spec.metrics_path.substr(0, slash));
    metrics = std::make_unique<std::ofstream>(spec.metrics_path, std::ios::app);
    require(metrics->good(), ErrorCode::kIo, "cannot open metrics_path '" + spec.metrics_path + "'");
  }
  auto log = [&](const std::string& message) {
    if (callbacks.on_log) callbacks.on_log(message);
  };
  FitResult result;
  // The trainer carries the data position: it starts where the loader stands and moves with it.
  trainer.set_data_position(loader.position());
  // A step is saved once: a stop right after a periodic save, or at the step a run resumed from,
  // does not write the same checkpoint again. Whether that step's checkpoint exists is agreed by
  // every rank (the save is a collective).
  int64_t saved_step = -1;
  if (!spec.save_folder.empty() && trainer.step() > 0) {
    const std::string meta = spec.save_folder + "/step" + std::to_string(trainer.step()) + "/" + checkpoint::kMetaFile;
    bool exists = std::ifstream(meta).good();
    if (trainer.process_group()) {
      auto flag = at::full({1}, exists ? 1L : 0L,
                           at::TensorOptions(at::kLong).device(trainer.process_group()->comm_device()));
      trainer.process_group()->all_reduce_sum({flag});
      exists = flag.item<int64_t>() > 0;
    }
    if (exists) {
      saved_step = trainer.step();
      result.last_checkpoint = spec.save_folder + "/step" + std::to_string(saved_step);
    }
  }
  auto save = [&]() {
    if (spec.save_folder.empty() || trainer.step() == saved_step) return;
    const auto pos = trainer.data_position();
    // With a process group, a collective: every rank writes its shard (checkpoint.h).
    result.last_checkpoint =
        checkpoint::save(trainer, spec.save_folder, {pos.epoch, pos.batch_in_epoch}, spec.keep_last_n);
    saved_step = trainer.step();
    if (writer) log("saved checkpoint " + result.last_checkpoint);
  };
  auto run_eval = [&]() {
    if (!eval) return;
    result.last_eval = train::evaluate_dataset(trainer, *eval, spec.global_batch_instances(), spec.eval_batches,
                                        documents.value_or(train::eval_documents(spec)), "eval_data");
    if (metrics)
      *metrics << "{\"step\":" << trainer.step() << ",\"eval_loss\":" << json_value(result.last_eval->loss)
               << ",\"eval_perplexity\":" << json_value(result.last_eval->perplexity) << "}\n";
    if (callbacks.on_eval) callbacks.on_eval(*result.last_eval, trainer.step());
  };

  // A stop asked for on one rank stops every rank at the same step (one tiny all-reduce per
  // step), so none is left waiting in a collective.
  auto agree_to_stop = [&](bool local) {
    if (!trainer.process_group()) return local;
    auto flag = at::full({1}, local ? 1L : 0L, at::TensorOptions(at::kLong).device(trainer.process_group()->comm_device()));
    trainer.process_group()->all_reduce_sum({flag});
    return flag.item<int64_t>() > 0;
  };
  bool stop = false;
  while (trainer.step() < spec.max_steps) {
    stop = stop || (callbacks.stop_requested && callbacks.stop_requested->load());
    if (agree_to_stop(stop)) {
      result.stopped_early = true;
      break;
    }
    auto batch = loader.next();
    trainer.set_data_position(loader.position());
    const bool masked = documents.value_or(spec.data && spec.data->generate_doc_lengths) && batch.cu_doc_lens;
    const auto m = trainer.train_batch(batch.input_ids, batch.labels, masked ? *batch.cu_doc_lens : at::Tensor());
    if (metrics && (m.step % spec.log_interval == 0 || m.step == spec.max_steps)) {
      *metrics << metrics_json(m) << "\n";
      metrics->flush();
    }
    if (callbacks.on_step && !callbacks.on_step(m)) stop = true;
    if (stop && !trainer.process_group()) {
      result.stopped_early = true;
      break;
    }
    if (spec.eval_interval > 0 && m.step % spec.eval_interval == 0 && m.step < spec.max_steps) run_eval();
    if (spec.save_interval > 0 && m.step % spec.save_interval == 0 && m.step < spec.max_steps) save();
  }
  if (!result.stopped_early) run_eval();
  save();
  // No rank returns (and possibly exits, closing its connections) while another still talks.
  if (trainer.process_group()) trainer.process_group()->barrier();
  result.steps = trainer.step();
  return result;
}

}  // namespace olm::run
