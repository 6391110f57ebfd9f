// Evaluating a trainer's model on a token dataset: the mean loss over its instances, in order.
// The fit loop (core/run/fit.h) evaluates with it every eval_interval steps.
#pragma once
#include <cstdint>
#include <string>

#include "core/data/token_data.h"
#include "core/train/trainer.h"

namespace olm::train {

// Mean loss over a dataset's instances in order, `max_batches` batches of `batch_instances`
// (0: all); with `documents`, intra-document masking from the batches' document lengths; with a
// process group, rank r takes batches r, r + world_size, ... (a collective). A token id outside
// the model's vocabulary fails with kInvalidArgument naming `argument` (the dataset as the
// caller calls it) before any batch is evaluated, on every rank alike.
EvalMetrics evaluate_dataset(Trainer& trainer, const data::TokenDataset& dataset, int64_t batch_instances,
                             int64_t max_batches, bool documents = false, const std::string& argument = "data");

// Whether evaluation masks documents: the train config's eval_data.generate_doc_lengths.
bool eval_documents(const TrainSpec& spec);

}  // namespace olm::train
