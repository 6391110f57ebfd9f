// Evaluation of a trainer on a token dataset, batch by batch (a collective with a process group).
#include "core/train/evaluate.h"

#include "core/error.h"

namespace olm::train {

bool eval_documents(const TrainSpec& spec) { return spec.eval_data && spec.eval_data->generate_doc_lengths; }

EvalMetrics evaluate_dataset(Trainer& trainer, const data::TokenDataset& dataset, int64_t batch_instances,
                             int64_t max_batches, bool documents, const std::string& argument) {
  const int64_t n = dataset.num_instances();
  require(batch_instances > 0, ErrorCode::kInvalidArgument, "batch_instances must be positive");
  // The ids must index the model's embeddings (as Trainer::train_batch checks a step's). Every
  // rank checks every instance any rank will evaluate, so a bad id fails all ranks alike
  // instead of leaving the others waiting in the evaluation's all-reduce. Labels are the ids
  // shifted (or -100), so checking the ids covers them.
  {
    const int64_t vocab = trainer.model().config().spec().vocab_size;
    const int64_t end = max_batches > 0 ? std::min(n, max_batches * batch_instances) : n;
    for (int64_t first = 0; first < end; first += batch_instances) {
      std::vector<int64_t> indices;
      for (int64_t i = first; i < std::min(end, first + batch_instances); ++i) indices.push_back(i);
      const at::Tensor ids = data::make_batch(dataset, indices).input_ids;
      const at::Tensor bad = ids.lt(0).logical_or(ids.ge(vocab));
      if (bad.any().item<bool>()) {
        const auto flat = bad.flatten().nonzero().select(1, 0);
        const int64_t pos = flat[0].item<int64_t>();
        const int64_t instance = first + pos / ids.size(1);
        fail(ErrorCode::kInvalidArgument,
             argument + ": instance " + std::to_string(instance) + " holds token id " +
                 std::to_string(ids.flatten()[pos].item<int64_t>()) + ", outside the model's vocabulary [0, " +
                 std::to_string(vocab) + ")");
      }
    }
  }
  // With a process group, rank r evaluates batches r, r + world, ... and evaluate() sums the
  // ranks' totals.
  const int64_t rank = trainer.data_parallel_rank(), world = trainer.data_parallel_world_size();
  int64_t next = 0, batches = 0;
  return trainer.evaluate([&](at::Tensor& ids, at::Tensor& labels, at::Tensor& cu_doc_lens) {
    for (;;) {
      if (next >= n || (max_batches > 0 && batches >= max_batches)) return false;
      if (batches % world == rank) break;
      next += batch_instances;
      ++batches;
    }
    std::vector<int64_t> indices;
    for (int64_t i = next; i < std::min(n, next + batch_instances); ++i) indices.push_back(i);
    next += batch_instances;
    ++batches;
    auto batch = data::make_batch(dataset, indices);
    ids = batch.input_ids;
    labels = batch.labels;
    if (documents && batch.cu_doc_lens) cu_doc_lens = *batch.cu_doc_lens;
    return true;
  });
}

}  // namespace olm::train
