// olm: train, resume, evaluate, sample from, inspect, convert and benchmark models.
//
// Exit codes: 0 success, 1 a failure reported on stderr, 2 a usage error, 128 + the signal when
// train or resume was stopped by SIGINT (Ctrl-C, 130) or SIGTERM (what Slurm and torchrun send
// before a kill, 143): the run saves a checkpoint first when it has a save folder.
//
// train and resume only parse arguments and print progress: the run itself (paths, data,
// checks, checkpoints, metrics) is core/run's, the same service olm_trainer_fit() calls.
//
// Reads no environment variables except a launcher's: under `torchrun --no-python olm train`
// or `srun olm train` (WORLD_SIZE or SLURM_NTASKS above 1) train and resume join a c10d
// process group and train data-parallel; --dist off trains alone regardless.
#include <ATen/Parallel.h>
#include <cxxopts.hpp>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "core/checkpoint/checkpoint.h"
#include "core/config/config.h"
#include "core/cpu_allocator.h"
#include "core/error.h"
#include "core/generate.h"
#include "core/convert/hf_checkpoint.h"
#include "core/convert/hf_names.h"
#include "core/io/atomic_file.h"
#include "core/io/json.h"
#include "core/nn/cpu_fusion.h"
#include "core/io/safetensors.h"
#include "core/model.h"
#include "core/distributed/process_group.h"
#include "core/run/run.h"
#include "core/run/fit.h"
#include "core/tokenizer/parallel_encode.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/evaluate.h"
#include "olm.h"

namespace {

std::atomic<bool> g_stop{false};
volatile std::sig_atomic_t g_signal = 0;

void on_stop_signal(int sig) {
  g_signal = sig;
  g_stop.store(true);
}

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Numeric flags are read as text and parsed here, so that a bad value is refused naming the
// flag and the value (cxxopts and std::stoll name neither).
int64_t parse_int(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) || *end != '\0' || errno == ERANGE)
    throw UsageError(what + ": '" + text + "' is not an integer");
  return static_cast<int64_t>(v);
}

int64_t int_flag(const cxxopts::ParseResult& args, const std::string& name) {
  return parse_int(args[name].as<std::string>(), "--" + name);
}

uint64_t uint_flag(const cxxopts::ParseResult& args, const std::string& name) {
  const auto text = args[name].as<std::string>();
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0])) || *end != '\0' || errno == ERANGE)
    throw UsageError("--" + name + ": '" + text + "' is not a non-negative integer");
  return static_cast<uint64_t>(v);
}

double double_flag(const cxxopts::ParseResult& args, const std::string& name) {
  const auto text = args[name].as<std::string>();
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) || *end != '\0' || errno == ERANGE ||
      !std::isfinite(v))
    throw UsageError("--" + name + ": '" + text + "' is not a number");
  return v;
}

// A numeric flag's declaration: text, parsed by the functions above.
std::shared_ptr<cxxopts::Value> number(const char* default_value = nullptr) {
  auto v = cxxopts::value<std::string>();
  if (default_value) v->default_value(default_value);
  return v;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw olm::Error(olm::ErrorCode::kIo, "cannot read '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string human_seconds(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const auto total = static_cast<int64_t>(s);
  char buf[32];
  if (total >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", total / 3600, (total % 3600) / 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", total / 60, total % 60);
  return buf;
}

long minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

// A one-line progress display on a terminal, plain lines otherwise.
class Progress {
 public:
  Progress(int64_t total, int64_t first) : total_(total), first_(first), tty_(isatty(STDERR_FILENO)) {}
  void update(const olm::train::StepMetrics& m) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, m.step - first_));
    const double eta = per_step * static_cast<double>(total_ - m.step);
    const int width = 24;
    const int filled = static_cast<int>(width * static_cast<double>(m.step) / static_cast<double>(total_));
    std::string bar(static_cast<size_t>(filled), '=');
    if (filled < width) bar += '>' + std::string(static_cast<size_t>(width - filled - 1), ' ');
    char line[256];
    std::snprintf(line, sizeof line, "step %ld/%ld [%s] loss %.4f | %.0f tok/s | lr %.2e | ETA %s%s",
                  m.step, total_, bar.c_str(), m.loss, m.tokens_per_second, m.lr, human_seconds(eta).c_str(),
                  m.skipped ? " | skipped" : "");
    if (tty_) {
      std::fprintf(stderr, "\r%s\033[K", line);
    } else if (m.step == first_ + 1 || m.step % 10 == 0 || m.step == total_) {
      std::fprintf(stderr, "%s\n", line);
    }
  }
  void finish() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  int64_t total_, first_;
  bool tty_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

void add_dist_options(cxxopts::Options& options) {
  options.add_options()("dist", "auto (join a process group when launched by torchrun or srun), on (join one "
                        "even alone) or off",
                        cxxopts::value<std::string>()->default_value("auto"))(
      "dist-timeout", "seconds before a missing or dead rank fails the run", number("300"));
}

// Data-parallel training when a launcher started several processes: the group, joined before
// the model is built, so that "cuda" can mean this rank's GPU (cuda:LOCAL_RANK).
std::shared_ptr<olm::distributed::ProcessGroup> maybe_join(const cxxopts::ParseResult& args, std::string& device) {
  const auto mode = args["dist"].as<std::string>();
  if (mode != "auto" && mode != "on" && mode != "off")
    throw UsageError("--dist must be auto, on or off, not '" + mode + "'");
  const double timeout = double_flag(args, "dist-timeout");
  if (!(timeout > 0)) throw UsageError("--dist-timeout must be positive");
  if (mode == "off" || (mode == "auto" && !olm::distributed::launched_distributed())) return nullptr;
  olm::distributed::ProcessGroupOptions o;
  o.device = device;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000));
  auto group = olm::distributed::ProcessGroup::create(o);
  if (device == "cuda") device = "cuda:" + std::to_string(group->local_rank());
  std::fprintf(stderr, "olm: rank %ld of %ld (local %ld of %ld), %s over %s:%d, on %s\n", group->rank(),
               group->world_size(), group->local_rank(), group->local_world_size(), group->backend_name(),
               group->options().master_addr.c_str(), group->options().master_port, device.c_str());
  return group;
}

// Shared by train and resume: the run service trains; this reports progress and handles signals.
int run_fit(olm::train::Trainer& trainer, const std::string& device) {
  const auto& spec = trainer.config().spec();
  // With several ranks only rank 0 reports (the numbers are global, hence equal everywhere).
  const bool quiet = trainer.rank() != 0;
  Progress progress(spec.max_steps, trainer.step());
  olm::run::FitOptions options;
  options.on_start = [&](const olm::data::TokenDataset& train_data) {
    const auto counts = trainer.model().config().num_params();
    std::fprintf(stderr, "olm: %ld parameters (%ld non-embedding) on %s; %ld training tokens, %ld instances of %ld\n",
                 counts.total, counts.non_embedding, device.c_str(), train_data.num_tokens(),
                 train_data.num_instances(), spec.sequence_length);
  };
  auto& callbacks = options.callbacks;
  callbacks.stop_requested = &g_stop;
  double first_loss = NAN, last_loss = NAN;
  callbacks.on_step = [&](const olm::train::StepMetrics& m) {
    if (std::isnan(first_loss)) first_loss = m.loss;
    last_loss = m.loss;
    if (!quiet) progress.update(m);
    return true;
  };
  callbacks.on_eval = [&](const olm::train::EvalMetrics& e, int64_t step) {
    if (!quiet) std::fprintf(stderr, "%seval at step %ld: loss %.4f, perplexity %.2f\n", isatty(STDERR_FILENO) ? "\n" : "",
                 step, e.loss, e.perplexity);
  };
  callbacks.on_log = [&](const std::string& message) {
    std::fprintf(stderr, "%s%s\n", isatty(STDERR_FILENO) ? "\n" : "", message.c_str());
  };
  // Ctrl-C and SIGTERM (Slurm, torchrun) alike: stop after the current step, on every rank at
  // the same step, save a checkpoint and exit with 128 + the signal.
  g_stop.store(false);
  g_signal = 0;
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  olm::run::FitResult result;
  try {
    result = olm::run::fit(trainer, options);
  } catch (...) {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    throw;
  }
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  const int code = result.stopped_early ? 128 + (g_signal ? static_cast<int>(g_signal) : SIGINT) : 0;
  if (quiet) return code;
  progress.finish();
  std::printf("trained to step %ld: loss %.4f -> %.4f%s\n", result.steps, first_loss, last_loss,
              result.stopped_early ? (g_signal == SIGTERM ? " (terminated)" : " (interrupted)") : "");
  if (!result.last_checkpoint.empty()) std::printf("checkpoint: %s\n", result.last_checkpoint.c_str());
  return code;
}

int cmd_train(int argc, char** argv) {
  cxxopts::Options options("olm train", "Train a model from a train config (JSON, schema/olm.fbs TrainConfig).");
  options.add_options()("c,config", "train config JSON", cxxopts::value<std::string>())(
      "d,device", "cpu, cuda or cuda:N", cxxopts::value<std::string>()->default_value("cpu"))(
      "save-folder", "write checkpoints and the metrics file into this run folder instead",
      cxxopts::value<std::string>())("max-steps", "override max_steps", number())("h,help", "show this help");
  add_dist_options(options);
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help()
              << "\nRelative paths in the config are taken against the config file's directory.\n"
                 "Ctrl-C or SIGTERM saves a checkpoint (with a save folder) and exits with 130 or 143.\n";
    return 0;
  }
  if (!args.count("config")) throw UsageError("--config is required\n" + options.help());
  std::optional<int64_t> max_steps;
  if (args.count("max-steps")) max_steps = int_flag(args, "max-steps");
  auto config = olm::run::load_config(args["config"].as<std::string>());
  if (args.count("save-folder")) config = olm::run::relocate(config, args["save-folder"].as<std::string>());
  if (max_steps) config = olm::run::with_max_steps(config, *max_steps);
  if (!config.spec().model) throw UsageError("the train config names no model (`model` or `model_preset`)");
  std::string device = args["device"].as<std::string>();
  auto group = maybe_join(args, device);
  auto model = std::make_shared<olm::Model>(*config.spec().model, device, olm::ModelOptions{});
  olm::train::Trainer trainer(model, config);
  trainer.set_process_group(group);
  return run_fit(trainer, device);
}

int cmd_resume(int argc, char** argv) {
  cxxopts::Options options("olm resume",
                           "Resume training from a checkpoint directory or save folder, writing into that run folder.");
  options.add_options()("dir", "checkpoint directory or save folder", cxxopts::value<std::string>())(
      "d,device", "cpu, cuda or cuda:N", cxxopts::value<std::string>()->default_value("cpu"))(
      "save-folder", "fork: write checkpoints and the metrics file into this run folder instead",
      cxxopts::value<std::string>())("max-steps", "override max_steps", number())("h,help", "show this help");
  add_dist_options(options);
  options.parse_positional({"dir"});
  options.positional_help("DIR");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help()
              << "\nCheckpoints and metrics go to the folder resumed (DIR, or the save folder of the step\n"
                 "directory DIR), or to --save-folder. Ctrl-C or SIGTERM saves and exits with 130 or 143.\n";
    return 0;
  }
  if (!args.count("dir")) throw UsageError("a checkpoint directory is required\n" + options.help());
  std::optional<int64_t> max_steps;
  if (args.count("max-steps")) max_steps = int_flag(args, "max-steps");
  auto plan = olm::run::plan_resume(args["dir"].as<std::string>(),
                                    args.count("save-folder") ? args["save-folder"].as<std::string>() : "");
  auto config = max_steps ? olm::run::with_max_steps(plan.train_config, *max_steps) : plan.train_config;
  std::string device = args["device"].as<std::string>();
  auto group = maybe_join(args, device);
  olm::ModelOptions model_options;
  model_options.init_weights = false;
  auto model = std::make_shared<olm::Model>(plan.model_config, device, model_options);
  olm::train::Trainer trainer(model, config);
  // Joined first: under FSDP each rank then reads only its own shards of the checkpoint.
  trainer.set_process_group(group);
  olm::run::load_checkpoint(trainer, plan.checkpoint);
  if (trainer.rank() == 0)
    std::fprintf(stderr, "olm: resumed %s at step %ld, writing to %s\n", plan.checkpoint.c_str(), trainer.step(),
                 plan.run_folder.c_str());
  return run_fit(trainer, device);
}

// A model and trainer restored from a checkpoint, for eval and generate.
struct Restored {
  std::shared_ptr<olm::Model> model;
  std::unique_ptr<olm::train::Trainer> trainer;
};

Restored restore(const std::string& path, const std::string& device) {
  const auto dir = olm::checkpoint::resolve(path);
  auto meta = olm::checkpoint::read_meta(dir);
  olm::ModelOptions model_options;
  model_options.init_weights = false;
  Restored r;
  r.model = std::make_shared<olm::Model>(meta.model_config, device, model_options);
  r.trainer = std::make_unique<olm::train::Trainer>(r.model, meta.train_config);
  olm::run::load_checkpoint(*r.trainer, dir);
  return r;
}

int cmd_eval(int argc, char** argv) {
  cxxopts::Options options("olm eval", "Validation loss and perplexity of a checkpoint over token files.");
  options.add_options()("checkpoint", "checkpoint directory or save folder", cxxopts::value<std::string>())(
      "data", "token files (default: the train config's eval_data)", cxxopts::value<std::vector<std::string>>())(
      "raw-dtype", "uint16 or uint32", cxxopts::value<std::string>()->default_value("uint16"))(
      "batches", "at most this many batches (0: all)", number("0"))(
      "d,device", "cpu, cuda or cuda:N", cxxopts::value<std::string>()->default_value("cpu"))("h,help", "show this help");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  if (!args.count("checkpoint")) throw UsageError("--checkpoint is required\n" + options.help());
  const int64_t batches = int_flag(args, "batches");
  if (batches < 0) throw UsageError("--batches: " + std::to_string(batches) + " is negative (0 evaluates all)");
  auto r = restore(args["checkpoint"].as<std::string>(), args["device"].as<std::string>());
  const auto& spec = r.trainer->config().spec();
  olm::train::DataSpec data;
  if (args.count("data")) {
    data.paths = args["data"].as<std::vector<std::string>>();
    data.dataset.raw_dtype = args["raw-dtype"].as<std::string>();
  } else if (spec.eval_data) {
    data = *spec.eval_data;
  } else {
    throw UsageError("no --data and the train config has no eval_data");
  }
  auto dataset = olm::run::open_dataset(data, spec.sequence_length, r.model->config().spec().vocab_size);
  auto m = olm::train::evaluate_dataset(*r.trainer, *dataset, spec.global_batch_instances(), batches);
  std::printf("eval: loss %.6f perplexity %.4f over %ld tokens\n", m.loss, m.perplexity, m.tokens);
  return 0;
}

std::vector<int64_t> parse_ids(const std::string& text, const std::string& flag) {
  std::vector<int64_t> ids;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      ids.push_back(parse_int(item, flag));
    } catch (const UsageError&) {
      throw UsageError(flag + ": '" + text + "' is not a list of comma-separated token ids ('" + item + "')");
    }
  }
  if (ids.empty()) throw UsageError(flag + ": no token ids in '" + text + "'");
  return ids;
}

// A text prompt through a tokenizer, its special tokens added as transformers' generate does.
std::vector<int64_t> encode_prompt(const olm::tokenizer::Tokenizer& tokenizer, const std::string& text) {
  size_t bad = 0;
  if (!olm::io::valid_utf8(text, &bad)) throw UsageError("--prompt: not UTF-8 at byte " + std::to_string(bad));
  const auto ids = tokenizer.encode(text, true);
  if (ids.empty()) throw UsageError("--prompt: the tokenizer gives no tokens for it");
  return {ids.begin(), ids.end()};
}

// Samples through a tokenizer, printing the text as it grows. Ends at --stop, else at the
// tokenizer's EOS.
int generate_text(olm::Model& model, const olm::tokenizer::Tokenizer& tokenizer, const std::vector<int64_t>& prompt_ids,
                  olm::GenerateOptions g) {
  if (g.stop_tokens.empty() && tokenizer.special_ids().eos) g.stop_tokens = {*tokenizer.special_ids().eos};
  std::vector<int32_t> ids;
  for (int64_t id : prompt_ids) {
    if (id < 0 || id >= tokenizer.vocab_size())
      throw UsageError("--prompt-ids: " + std::to_string(id) + " is outside the tokenizer's vocabulary");
    ids.push_back(static_cast<int32_t>(id));
  }
  // Pieces decode differently at the start of a text (SentencePiece drops the first space), so
  // the text printed is always a suffix of the whole sequence's decoding.
  std::string printed = tokenizer.decode(ids.data(), ids.size(), true);
  std::fwrite(printed.data(), 1, printed.size(), stdout);
  g.on_token = [&](int64_t token) {
    if (token < 0 || token >= tokenizer.vocab_size()) return true;  // the model's padding rows
    ids.push_back(static_cast<int32_t>(token));
    const std::string text = tokenizer.decode(ids.data(), ids.size(), true);
    // An incomplete UTF-8 sequence decodes to U+FFFD until its last byte arrives.
    const bool pending = text.size() >= 3 && text.compare(text.size() - 3, 3, "\xEF\xBF\xBD") == 0;
    if (!pending && text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::fwrite(text.data() + printed.size(), 1, text.size() - printed.size(), stdout);
      printed = text;
    }
    std::fflush(stdout);
    return true;
  };
  olm::generate(model, at::tensor(prompt_ids, at::kLong), g);
  // What is still held back (an incomplete UTF-8 sequence at the very end) is printed as it decodes.
  const std::string text = tokenizer.decode(ids.data(), ids.size(), true);
  if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0)
    std::fwrite(text.data() + printed.size(), 1, text.size() - printed.size(), stdout);
  std::printf("\n");
  return 0;
}

int cmd_generate(int argc, char** argv) {
  cxxopts::Options options("olm generate", "Sample text from a checkpoint with the KV cache.");
  options.add_options()("checkpoint", "checkpoint directory or save folder", cxxopts::value<std::string>())(
      "hf", "a Hugging Face model directory, instead of --checkpoint", cxxopts::value<std::string>())(
      "prompt", "prompt text (byte-level tokens, or --tokenizer's)", cxxopts::value<std::string>())(
      "tokenizer", "tokenizer file or model directory: --prompt is encoded with it, the sample printed as text",
      cxxopts::value<std::string>())(
      "prompt-ids", "prompt as comma-separated token ids", cxxopts::value<std::string>())(
      "max-new-tokens", "token budget", number("64"))("temperature", "0 is greedy", number("0.8"))(
      "top-k", "0 disables", number("0"))("top-p", "1 disables", number("1.0"))("seed", "sampler seed", number("0"))(
      "stop", "stop token ids, comma-separated", cxxopts::value<std::string>())(
      "timing", "print time to first token and decode tokens/s to stderr as JSON (not with --tokenizer)")(
      "d,device", "cpu, cuda or cuda:N", cxxopts::value<std::string>()->default_value("cpu"))("h,help", "show this help");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\nWith --prompt, tokens are bytes and ids >= 256 print as nothing.\n";
    return 0;
  }
  if (args.count("timing") && args.count("tokenizer")) throw UsageError("--timing measures ids, not text: drop --tokenizer");
  if (args.count("checkpoint") + args.count("hf") != 1)
    throw UsageError("give exactly one of --checkpoint and --hf\n" + options.help());
  if (args.count("prompt") == args.count("prompt-ids")) throw UsageError("give exactly one of --prompt and --prompt-ids");
  olm::GenerateOptions g;
  g.max_new_tokens = int_flag(args, "max-new-tokens");
  g.temperature = double_flag(args, "temperature");
  g.top_k = int_flag(args, "top-k");
  g.top_p = double_flag(args, "top-p");
  g.seed = uint_flag(args, "seed");
  if (args.count("stop")) g.stop_tokens = parse_ids(args["stop"].as<std::string>(), "--stop");
  std::vector<int64_t> prompt_ids;
  if (args.count("prompt-ids")) prompt_ids = parse_ids(args["prompt-ids"].as<std::string>(), "--prompt-ids");
  Restored r;
  if (args.count("hf")) {
    olm::convert::HfLoadOptions load;
    load.device = args["device"].as<std::string>();
    r.model = olm::convert::load_hf_model(args["hf"].as<std::string>(), load).model;
  } else {
    r = restore(args["checkpoint"].as<std::string>(), args["device"].as<std::string>());
  }
  std::shared_ptr<const olm::tokenizer::Tokenizer> tokenizer;
  if (args.count("tokenizer")) tokenizer = olm::tokenizer::load_tokenizer(args["tokenizer"].as<std::string>());
  if (tokenizer)
    return generate_text(*r.model, *tokenizer,
                         args.count("prompt") ? encode_prompt(*tokenizer, args["prompt"].as<std::string>()) : prompt_ids,
                         g);
  const bool bytes = args.count("prompt") > 0;
  std::vector<int64_t> prompt;
  if (bytes) {
    for (unsigned char c : args["prompt"].as<std::string>()) prompt.push_back(c);
  } else {
    prompt = prompt_ids;
  }
  if (bytes) std::fwrite(args["prompt"].as<std::string>().data(), 1, args["prompt"].as<std::string>().size(), stdout);
  g.on_token = [&](int64_t token) {
    if (bytes) {
      if (token < 256) std::fputc(static_cast<int>(token), stdout);
    } else {
      std::printf("%ld ", token);
    }
    std::fflush(stdout);
    return true;
  };
  // Time to first token includes the prompt's forward pass; decode rate is over the tokens after it.
  using Clock = std::chrono::steady_clock;
  Clock::time_point first, last;
  int64_t generated = 0;
  if (args.count("timing")) {
    g.on_token = [print = g.on_token, &first, &last, &generated](int64_t token) {
      last = Clock::now();
      if (generated++ == 0) first = last;
      return print(token);
    };
  }
  auto prompt_tensor = at::tensor(prompt, at::kLong);
  const auto start = Clock::now();
  olm::generate(*r.model, prompt_tensor, g);
  std::printf("\n");
  if (args.count("timing")) {
    const double ttft = std::chrono::duration<double>(first - start).count();
    const double decode = std::chrono::duration<double>(last - first).count();
    std::fprintf(stderr, "{\"prompt_tokens\": %zu, \"new_tokens\": %ld, \"time_to_first_token_s\": %.6f, "
                 "\"decode_tokens_per_s\": %.2f}\n", prompt.size(), generated, ttft,
                 generated > 1 ? static_cast<double>(generated - 1) / decode : 0.0);
  }
  return 0;
}

// Whether a config file's top-level keys are a train config's (TrainConfig's fields that no
// model config has).
bool is_train_config(const std::string& text, const std::string& path) {
  static const char* const keys[] = {"model", "model_preset", "optimizer", "scheduler", "sequence_length",
                                     "global_batch_size", "rank_microbatch_size", "max_steps", "data",
                                     "eval_data", "save_folder", "metrics_path", "data_parallel"};
  const auto json = olm::io::parse_json(text.data(), text.size(), path);
  if (json.kind != olm::io::Json::kObject) return false;
  for (const auto& [key, value] : json.object)
    for (const char* k : keys)
      if (key == k) return true;
  return false;
}

olm::Config config_from_args(const cxxopts::ParseResult& args) {
  if (args.count("config")) {
    const std::string path = args["config"].as<std::string>();
    const std::string text = read_text(path);
    // A train config carries its model; a model config is the model. Which one the file is
    // follows from its keys, so that the error reported is the one for what it is.
    if (is_train_config(text, path)) {
      auto train = olm::train::TrainConfig::from_json(text, path);
      if (!train.spec().model) throw UsageError("the train config '" + path + "' names no model (`model` or `model_preset`)");
      return *train.spec().model;
    }
    return olm::Config::from_json(text, path);
  }
  if (args.count("preset")) return olm::preset(args["preset"].as<std::string>(), int_flag(args, "vocab"));
  throw UsageError("give --config or --preset");
}

int cmd_info(int argc, char** argv) {
  cxxopts::Options options("olm info", "Parameters, FLOPs per token and a memory estimate for a config.");
  options.add_options()("config", "model or train config JSON", cxxopts::value<std::string>())(
      "preset", "a preset name", cxxopts::value<std::string>())(
      "vocab", "vocabulary size for --preset", number("100278"))("seq-len", "sequence length for FLOPs", number("4096"))(
      "json", "print the config as JSON too")("h,help", "show this help");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  auto config = config_from_args(args);
  const auto counts = config.num_params();
  const int64_t seq = int_flag(args, "seq-len");
  const double gib = 1024.0 * 1024.0 * 1024.0;
  std::printf("parameters:               %ld\n", counts.total);
  std::printf("non-embedding parameters: %ld\n", counts.non_embedding);
  if (config.spec().moe) {
    std::printf("active parameters:        %ld\n", counts.active);
    std::printf("active non-embedding:     %ld\n", counts.active_non_embedding);
  }
  std::printf("FLOPs per token (seq %ld): %ld\n", seq, config.num_flops_per_token(seq));
  std::printf("memory, float32 weights:  %.2f GiB\n", static_cast<double>(counts.total) * 4 / gib);
  std::printf("memory, bfloat16 weights: %.2f GiB\n", static_cast<double>(counts.total) * 2 / gib);
  std::printf("memory, AdamW training:   %.2f GiB (float32 weights, gradients and two moments; "
              "activations extra)\n",
              static_cast<double>(counts.total) * 16 / gib);
  if (args.count("json")) std::printf("%s", config.to_json().c_str());
  return 0;
}

// "5GB", "500MB", "2GiB", "100KB", "123": bytes, with Hugging Face's decimal units (KB = 1000)
// and binary ones (KiB = 1024).
int64_t parse_size(const std::string& text, const std::string& flag) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw UsageError(flag + " must be a size such as 5GB or 500MB (got '" + text + "')");
  }
  const std::string unit = text.substr(used);
  static const std::vector<std::pair<std::string, double>> units = {
      {"", 1},      {"B", 1},         {"KB", 1e3},          {"MB", 1e6},         {"GB", 1e9},
      {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  for (const auto& [name, factor] : units)
    if (unit == name) {
      const double bytes = value * factor;
      if (!(bytes >= 1 && bytes < 9.2e18)) throw UsageError(flag + " must be at least one byte (got '" + text + "')");
      return static_cast<int64_t>(bytes);
    }
  throw UsageError(flag + ": unknown unit '" + unit + "' (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
}

std::optional<at::ScalarType> dtype_flag(const cxxopts::ParseResult& args, bool allow_half) {
  if (!args.count("dtype")) return std::nullopt;
  const std::string d = args["dtype"].as<std::string>();
  if (d == "float32") return at::kFloat;
  if (d == "bfloat16") return at::kBFloat16;
  if (d == "float16" && allow_half) return at::kHalf;
  throw UsageError(std::string("--dtype must be float32") + (allow_half ? ", bfloat16 or float16" : " or bfloat16") +
                   " (got '" + d + "')");
}

int cmd_convert(int argc, char** argv) {
  cxxopts::Options options("olm convert",
                           "Convert between olm checkpoints, OLMo-core / Hugging Face safetensors state dicts and "
                           "Hugging Face model directories.");
  options.add_options()("checkpoint", "olm checkpoint to export (single-process or sharded by a process group)", cxxopts::value<std::string>())(
      "input", "safetensors state dict to import", cxxopts::value<std::string>())(
      "train-config", "train config for an imported checkpoint", cxxopts::value<std::string>())(
      "names", "olmo-core (default) or hf", cxxopts::value<std::string>()->default_value("olmo-core"))(
      "o,output", "output file (export) or save folder (import)", cxxopts::value<std::string>())(
      "from-hf", "a Hugging Face model directory to import", cxxopts::value<std::string>())(
      "to-hf", "a Hugging Face model directory to write (must not exist or be empty)", cxxopts::value<std::string>())(
      "config", "olm model config JSON of the --weights to export with --to-hf", cxxopts::value<std::string>())(
      "weights", "OLMo-core-named safetensors for --config", cxxopts::value<std::string>())(
      "max-shard-size", "largest weight file for --to-hf (5GB, 500MB, 2GiB, ...)", cxxopts::value<std::string>()->default_value("5GB"))(
      "tokenizer", "directory whose tokenizer files --to-hf copies", cxxopts::value<std::string>())(
      "dtype", "--from-hf: the model's (float32 or bfloat16; default config.json's); --to-hf: the files' (also float16)",
      cxxopts::value<std::string>())(
      "bos-id", "--to-hf: bos_token_id for config.json and generation_config.json", cxxopts::value<int64_t>())(
      "eos-id", "--to-hf: eos_token_id for config.json and generation_config.json", cxxopts::value<int64_t>())(
      "h,help", "show this help");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help()
              << "\nExport: olm convert --checkpoint DIR --output model.safetensors [--names hf]\n"
                 "Import: olm convert --input model.safetensors --train-config train.json --output FOLDER [--names hf]\n"
                 "From Hugging Face: olm convert --from-hf DIR --output FOLDER   (olm_config.json + model.safetensors)\n"
                 "                   olm convert --from-hf DIR --train-config train.json --output FOLDER   (a checkpoint)\n"
                 "To Hugging Face:   olm convert --to-hf DIR (--checkpoint CKPT | --config model.json --weights model.safetensors)\n"
                 "                   [--max-shard-size 5GB] [--tokenizer TOKDIR] [--dtype bfloat16] [--bos-id N --eos-id N]\n";
    return 0;
  }
  if (args.count("from-hf") && args.count("to-hf")) throw UsageError("give one of --from-hf and --to-hf");
  if (args.count("from-hf")) {
    if (!args.count("output")) throw UsageError("--from-hf needs --output");
    olm::convert::HfLoadOptions load;
    load.dtype = dtype_flag(args, false);
    auto loaded = olm::convert::load_hf_model(args["from-hf"].as<std::string>(), load);
    const std::string out = args["output"].as<std::string>();
    if (args.count("train-config")) {
      // The train config's model (if any) gives way to the one config.json describes.
      const auto given = olm::run::load_config(args["train-config"].as<std::string>());
      olm::fb::TrainConfigT native = given.native();
      native.model = std::make_unique<olm::fb::TransformerConfigT>(loaded.model->config().native());
      native.model_preset.clear();
      native.model_vocab_size = 0;
      olm::train::Trainer trainer(loaded.model, olm::train::TrainConfig::from_native(native));
      const auto dir = olm::run::save_checkpoint(trainer, out);
      std::printf("wrote checkpoint %s\n", dir.c_str());
      return 0;
    }
    olm::io::make_directories(out);
    const std::string config_path = out + "/olm_config.json", weights_path = out + "/model.safetensors";
    const std::string json = loaded.model->config().to_json();
    olm::io::write_file_atomically(config_path, [&](int fd) { olm::io::write_all(fd, json.data(), json.size(), config_path); });
    loaded.model->save_safetensors(weights_path);
    std::printf("imported %s (%ld parameters): wrote %s and %s\n",
                olm::convert::hf_architecture_name(loaded.hf.architecture), loaded.model->num_params(),
                config_path.c_str(), weights_path.c_str());
    return 0;
  }
  if (args.count("to-hf")) {
    std::shared_ptr<olm::Model> model;
    if (args.count("checkpoint")) {
      model = restore(args["checkpoint"].as<std::string>(), "cpu").model;
    } else if (args.count("config") && args.count("weights")) {
      const auto config = olm::Config::from_json_file(args["config"].as<std::string>());
      olm::convert::hf_architecture_of(config.spec());  // refuse before reading any weight
      olm::ModelOptions model_options;
      model_options.init_weights = false;
      model = std::make_shared<olm::Model>(config, "cpu", model_options);
      model->load_safetensors(args["weights"].as<std::string>());
    } else {
      throw UsageError("--to-hf needs --checkpoint, or --config with --weights");
    }
    olm::convert::HfSaveOptions save;
    save.max_shard_bytes = parse_size(args["max-shard-size"].as<std::string>(), "--max-shard-size");
    if (args.count("tokenizer")) save.tokenizer_source_dir = args["tokenizer"].as<std::string>();
    save.dtype = dtype_flag(args, true);
    if (args.count("bos-id")) save.bos_token_id = args["bos-id"].as<int64_t>();
    if (args.count("eos-id")) save.eos_token_id = args["eos-id"].as<int64_t>();
    const std::string dir = args["to-hf"].as<std::string>();
    olm::convert::save_hf_model(*model, dir, save);
    std::printf("wrote %s as %s\n", dir.c_str(),
                olm::convert::hf_architecture_name(olm::convert::hf_architecture_of(model->config().spec())));
    return 0;
  }
  if (!args.count("output")) throw UsageError("--output is required");
  const std::string names = args["names"].as<std::string>();
  if (names != "olmo-core" && names != "hf") throw UsageError("--names must be olmo-core or hf");
  const bool hf = names == "hf";
  if (args.count("checkpoint")) {
    auto r = restore(args["checkpoint"].as<std::string>(), "cpu");
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    // OLMo-core's state dict includes persistent buffers; HF layouts have none of ours.
    auto& module = r.model->module();
    for (auto& p : hf ? module.named_parameters() : module.named_state())
      tensors.emplace_back(hf ? olm::convert::to_hf_name(p.name, r.model->config().spec()) : p.name, *p.tensor);
    olm::io::save_safetensors(args["output"].as<std::string>(), tensors);
    std::printf("wrote %zu tensors to %s\n", tensors.size(), args["output"].as<std::string>().c_str());
    return 0;
  }
  if (!args.count("input") || !args.count("train-config"))
    throw UsageError("give --checkpoint (export), --input with --train-config (import), --from-hf or --to-hf");
  auto config = olm::run::load_config(args["train-config"].as<std::string>());
  if (!config.spec().model) throw UsageError("the train config names no model");
  olm::ModelOptions model_options;
  model_options.init_weights = false;
  auto model = std::make_shared<olm::Model>(*config.spec().model, "cpu", model_options);
  std::string input = args["input"].as<std::string>();
  if (hf) {
    // Rename into a temporary OLMo-core-named file, then load with the model's checks.
    olm::io::SafetensorsFile file(input);
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (const auto& e : file.entries())
      tensors.emplace_back(olm::convert::from_hf_name(e.name, model->config().spec()), file.read(e));
    input = args["output"].as<std::string>() + ".import.safetensors";
    olm::io::save_safetensors(input, tensors);
  }
  model->load_safetensors(input);
  if (hf) std::remove(input.c_str());
  olm::train::Trainer trainer(model, config);
  const auto dir = olm::run::save_checkpoint(trainer, args["output"].as<std::string>());
  std::printf("wrote checkpoint %s\n", dir.c_str());
  return 0;
}

int cmd_bench(int argc, char** argv) {
  cxxopts::Options options("olm bench", "Training throughput: tokens/s, step time, peak memory, MFU.");
  options.add_options()("config", "model or train config JSON", cxxopts::value<std::string>())(
      "preset", "a preset name", cxxopts::value<std::string>())(
      "vocab", "vocabulary size for --preset", number("16384"))("seq-len", "sequence length", number("256"))(
      "batch", "instances per step", number("16"))("steps", "measured steps", number("10"))(
      "warmup", "unmeasured steps first", number("2"))("lr", "AdamW learning rate", number("1e-3"))(
      "batches", "raw int64 file of (warmup+steps, batch, seq-len) token ids (default: random)",
      cxxopts::value<std::string>())("losses", "write each step's loss to this file", cxxopts::value<std::string>())(
      "peak-tflops", "device peak for MFU", number("0"))(
      "d,device", "cpu, cuda or cuda:N", cxxopts::value<std::string>()->default_value("cpu"))(
      "bf16", "bfloat16 autocast")("z-loss", "z-loss multiplier (0: no z-loss)", number("0"))(
      "no-caching-allocator", "host tensors from LibTorch's allocator, not olm's caching one (for A/B runs)")(
      "no-fused-kernels", "ATen's op chains instead of olm's bit-identical fused CPU kernels (for A/B runs)")(
      "h,help", "show this help");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  if (args.count("no-caching-allocator")) olm::set_cpu_allocator_caching(false);
  if (args.count("no-fused-kernels")) olm::nn::set_cpu_fusion_enabled(false);
  const int64_t seq = int_flag(args, "seq-len"), batch = int_flag(args, "batch");
  const int64_t steps = int_flag(args, "steps"), warmup = int_flag(args, "warmup");
  const double lr = double_flag(args, "lr"), peak_tflops = double_flag(args, "peak-tflops");
  if (seq <= 0 || batch <= 0 || steps <= 0 || warmup < 0)
    throw UsageError("--seq-len, --batch and --steps must be positive and --warmup not negative");
  auto config = config_from_args(args);
  olm::fb::TrainConfigT native;
  native.sequence_length = seq;
  native.global_batch_size = seq * batch;
  native.max_steps = warmup + steps;
  native.optimizer = std::make_unique<olm::fb::OptimizerConfigT>();
  native.optimizer->name = "adamw";
  native.optimizer->lr = lr;
  if (args.count("bf16")) native.autocast_precision = "bfloat16";
  if (const double z_loss = double_flag(args, "z-loss"); z_loss != 0) native.z_loss_multiplier = z_loss;
  auto train_config = olm::train::TrainConfig::from_native(native);
  const std::string device = args["device"].as<std::string>();
  auto model = std::make_shared<olm::Model>(config, device, olm::ModelOptions{});
  olm::train::Trainer trainer(model, train_config);

  at::Tensor all;
  const int64_t vocab = config.spec().vocab_size;
  if (args.count("batches")) {
    const std::string raw = read_text(args["batches"].as<std::string>());
    const int64_t expected = (warmup + steps) * batch * seq;
    if (static_cast<int64_t>(raw.size()) != expected * 8)
      throw UsageError("--batches file holds " + std::to_string(raw.size() / 8) + " ids, expected " +
                       std::to_string(expected));
    all = at::empty({warmup + steps, batch, seq}, at::kLong);
    std::memcpy(all.data_ptr(), raw.data(), raw.size());
  } else {
    at::Generator gen = at::detail::createCPUGenerator(1234);
    all = at::randint(vocab, {warmup + steps, batch, seq}, gen, at::kLong);
  }
  std::unique_ptr<std::ofstream> losses;
  if (args.count("losses")) losses = std::make_unique<std::ofstream>(args["losses"].as<std::string>());
  double measured = 0;
  long faults_before = 0;
  for (int64_t i = 0; i < warmup + steps; ++i) {
    if (i == warmup) faults_before = minor_page_faults();
    const auto m = trainer.train_batch(all[i]);
    if (losses) *losses << std::setprecision(9) << m.ce_loss << "\n";
    if (i >= warmup) measured += m.step_seconds;
  }
  // Pages the kernel had to clear and map during the measured steps: what a caching
  // allocator saves, counted independently of the machine's load.
  const double faults_per_step = static_cast<double>(minor_page_faults() - faults_before) / static_cast<double>(steps);
  const double step_time = measured / static_cast<double>(std::max<int64_t>(steps, 1));
  const double tps = static_cast<double>(batch * seq) / step_time;
  const double flops = static_cast<double>(config.num_flops_per_token(seq)) * tps;
  const double peak = peak_tflops * 1e12;
  std::printf("{\"tokens_per_second\": %.1f, \"step_seconds\": %.5f, \"peak_rss_mib\": %.1f, "
              "\"minor_faults_per_step\": %.0f, \"tflops\": %.4f%s}\n",
              tps, step_time, peak_rss_mib(), faults_per_step, flops / 1e12,
              peak > 0 ? (", \"mfu\": " + std::to_string(flops / peak)).c_str() : "");
  return 0;
}

// ---- olm tokenize: text files -> OLMo-core/dolma token files (core/data/token_data reads them).

// The documents of one input file, in order: the whole file; with --fortunes the entries between
// lines holding a single "%"; with --jsonl the `field` string of each line's object.
class DocumentReader {
 public:
  enum class Split { kFile, kFortunes, kJsonl };
  DocumentReader(const std::string& path, Split split, std::string field)
      : path_(path), split_(split), field_(std::move(field)), in_(path, std::ios::binary) {
    if (!in_) throw olm::Error(olm::ErrorCode::kIo, "cannot read '" + path + "'");
  }
  // False at the end of the file. `offset` is the document's first byte in the file.
  bool next(std::string* doc, uint64_t* offset) {
    doc->clear();
    if (split_ == Split::kFile) {
      if (done_) return false;
      done_ = true;
      std::ostringstream all;
      all << in_.rdbuf();
      if (in_.bad()) throw olm::Error(olm::ErrorCode::kIo, "cannot read '" + path_ + "'");
      *doc = all.str();
      *offset = 0;
      position_ = doc->size();
      return true;
    }
    std::string line;
    bool any = false;
    *offset = position_;
    while (std::getline(in_, line)) {
      const uint64_t line_start = position_;
      position_ += line.size() + 1;
      ++line_number_;
      if (split_ == Split::kJsonl) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        *doc = jsonl_text(line);
        *offset = line_start;
        return true;
      }
      if (line == "%") {
        if (any) return true;
        *offset = position_;
        continue;
      }
      *doc += line;
      *doc += '\n';
      any = true;
    }
    if (in_.bad()) throw olm::Error(olm::ErrorCode::kIo, "cannot read '" + path_ + "'");
    return any;
  }
  uint64_t position() const { return position_; }

 private:
  std::string jsonl_text(const std::string& line) const {
    const std::string where = path_ + ":" + std::to_string(line_number_);
    const auto json = olm::io::parse_json(line.data(), line.size(), where);
    if (json.kind != olm::io::Json::kObject) throw olm::Error(olm::ErrorCode::kParse, where + ": not a JSON object");
    for (const auto& [key, value] : json.object) {
      if (key != field_) continue;
      if (value.kind != olm::io::Json::kString)
        throw olm::Error(olm::ErrorCode::kParse, where + ": \"" + field_ + "\" is not a string");
      return value.string;
    }
    throw olm::Error(olm::ErrorCode::kParse, where + ": no \"" + field_ + "\" member");
  }

  std::string path_;
  Split split_;
  std::string field_;
  std::ifstream in_;
  bool done_ = false;
  uint64_t position_ = 0;
  uint64_t line_number_ = 0;
};

// A .npy header (format 1.0) for a 1-D array, padded to a fixed 128 bytes so that the final
// length can be written over the placeholder once it is known.
std::string npy_header(const char* descr, uint64_t length) {
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" +
                     std::to_string(length) + ",), }";
  const size_t total = 128;
  dict.resize(total - 10 - 1, ' ');
  dict += '\n';
  std::string header = "\x93NUMPY";
  header += '\x01';
  header += '\x00';
  header += static_cast<char>(dict.size() & 0xFF);
  header += static_cast<char>(dict.size() >> 8);
  return header + dict;
}

// A progress line on stderr, only when stderr is a terminal.
class TokenizeProgress {
 public:
  explicit TokenizeProgress(uint64_t total_bytes)
      : total_(total_bytes), enabled_(isatty(STDERR_FILENO) == 1), start_(std::chrono::steady_clock::now()) {}
  void update(uint64_t bytes, int64_t documents, int64_t tokens) {
    if (!enabled_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double fraction = total_ > 0 ? std::min(1.0, static_cast<double>(bytes) / static_cast<double>(total_)) : 1.0;
    const int width = 30, filled = static_cast<int>(fraction * width);
    std::fprintf(stderr, "\r[%s%s] %5.1f%%  %.1f MB/s  %ld documents  %ld tokens  ETA %s ",
                 std::string(static_cast<size_t>(filled), '#').c_str(),
                 std::string(static_cast<size_t>(width - filled), '.').c_str(), 100 * fraction,
                 s > 0 ? static_cast<double>(bytes) / 1e6 / s : 0.0, documents, tokens,
                 human_seconds(fraction > 0 ? s / fraction - s : -1).c_str());
    std::fflush(stderr);
  }
  void finish() {
    if (enabled_) std::fputc('\n', stderr);
  }

 private:
  uint64_t total_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

// Without --tokenizer, tokens are bytes and every document ends with --eos (default 256); with
// one, documents are encoded in parallel (the library's threads, --threads) and written in order.
int cmd_tokenize(int argc, char** argv) {
  cxxopts::Options options("olm tokenize", "Tokenize text files into an OLMo-core/dolma token file (.npy or raw).");
  options.add_options()("tokenizer", "tokenizer.json, SentencePiece .model or a Hugging Face model directory "
                                     "(without it, tokens are bytes)", cxxopts::value<std::string>())(
      "o,out,output", "output token file (.npy: a NumPy array, else raw little-endian)", cxxopts::value<std::string>())(
      "format", "npy or raw (default: from the output's name)", cxxopts::value<std::string>())(
      "dtype", "uint16 or uint32 (default: uint16 when the vocabulary fits)", cxxopts::value<std::string>())(
      "jsonl", "inputs are JSON lines; each line's --text-field is a document")(
      "text-field", "the JSONL member holding the text", cxxopts::value<std::string>()->default_value("text"))(
      "fortunes", "split documents at lines holding a single %")(
      "add-eos", "end every document with the EOS id (always on without --tokenizer)")(
      "eos", "the EOS id (implies --add-eos; default: the tokenizer's, 256 for bytes)", number())(
      "force", "overwrite an existing output")(
      "inputs", "text files or directories", cxxopts::value<std::vector<std::string>>())("h,help", "show this help");
  options.parse_positional({"inputs"});
  options.positional_help("INPUT...");
  auto args = options.parse(argc, argv);
  if (args.count("help")) {
    std::cout << options.help()
              << "\nDocuments: one per file; with --fortunes one per entry; with --jsonl one per line. Documents\n"
                 "that are only whitespace are skipped. Directories are read in name order (dot files,\n"
                 "*.dat and *.u8 skipped).\n";
    return 0;
  }
  if (!args.count("output") || !args.count("inputs")) throw UsageError("--out and input files are required");
  if (args.count("jsonl") && args.count("fortunes")) throw UsageError("give at most one of --jsonl and --fortunes");
  const std::string out = args["output"].as<std::string>();
  const bool out_is_npy = out.size() >= 4 && out.compare(out.size() - 4, 4, ".npy") == 0;
  const std::string format = args.count("format") ? args["format"].as<std::string>() : (out_is_npy ? "npy" : "raw");
  if (format != "npy" && format != "raw") throw UsageError("--format must be npy or raw, not '" + format + "'");
  // Token files are told apart by name (core/data/token_data): the name must say what the file is.
  if ((format == "npy") != out_is_npy)
    throw UsageError("--format " + format + " needs an output name " + (out_is_npy ? "not " : "") +
                     "ending in .npy (token readers tell the formats apart by name): '" + out + "'");

  std::shared_ptr<const olm::tokenizer::Tokenizer> tokenizer;
  if (args.count("tokenizer")) tokenizer = olm::tokenizer::load_tokenizer(args["tokenizer"].as<std::string>());
  const int64_t vocab = tokenizer ? tokenizer->vocab_size() : 256;
  const bool add_eos = !tokenizer || args.count("add-eos") > 0 || args.count("eos") > 0;
  int64_t eos = -1;
  if (args.count("eos")) eos = int_flag(args, "eos");
  else if (!tokenizer) eos = 256;
  else if (tokenizer->special_ids().eos) eos = *tokenizer->special_ids().eos;
  if (add_eos && eos < 0)
    throw UsageError("--add-eos: the tokenizer has no EOS token; give its id with --eos");
  if (add_eos && tokenizer && eos >= vocab)
    throw UsageError("--eos " + std::to_string(eos) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  if (add_eos && !tokenizer && eos < 256) throw UsageError("--eos must be at least 256 for byte tokens");
  const int64_t largest = std::max(vocab - 1, add_eos ? eos : 0);
  const std::string dtype = args.count("dtype") ? args["dtype"].as<std::string>() : (largest <= 65535 ? "uint16" : "uint32");
  if (dtype != "uint16" && dtype != "uint32") throw UsageError("--dtype must be uint16 or uint32, not '" + dtype + "'");
  if (dtype == "uint16" && largest > 65535)
    throw UsageError("--dtype uint16 cannot hold token id " + std::to_string(largest) +
                     (vocab - 1 == largest ? " (the vocabulary has " + std::to_string(vocab) + " tokens)" : " (--eos)") +
                     "; use --dtype uint32");
  if (largest > 0xFFFFFFFFll) throw UsageError("--eos does not fit uint32");
  const bool wide = dtype == "uint32";

  std::vector<std::string> files;
  for (const auto& path : args["inputs"].as<std::vector<std::string>>()) {
    if (DIR* dir = opendir(path.c_str())) {
      std::vector<std::string> names;
      while (dirent* e = readdir(dir)) {
        const std::string name = e->d_name;
        if (name[0] == '.' || name.size() > 4 && (name.substr(name.size() - 4) == ".dat" || name.substr(name.size() - 3) == ".u8"))
          continue;
        const std::string full = path + "/" + name;
        struct stat st {};
        if (stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode)) names.push_back(full);
      }
      closedir(dir);
      std::sort(names.begin(), names.end());
      files.insert(files.end(), names.begin(), names.end());
    } else {
      files.push_back(path);
    }
  }
  uint64_t total_bytes = 0;
  std::vector<uint64_t> file_bytes;
  for (const auto& file : files) {
    struct stat st {};
    if (stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      throw olm::Error(olm::ErrorCode::kIo, "cannot read '" + file + "': not a file");
    file_bytes.push_back(static_cast<uint64_t>(st.st_size));
    total_bytes += file_bytes.back();
  }
  struct stat existing {};
  if (!args.count("force") && stat(out.c_str(), &existing) == 0)
    throw olm::Error(olm::ErrorCode::kIo, "'" + out + "' exists; pass --force to overwrite it");

  const auto split = args.count("jsonl") ? DocumentReader::Split::kJsonl
                     : args.count("fortunes") ? DocumentReader::Split::kFortunes
                                              : DocumentReader::Split::kFile;
  int64_t documents = 0;
  uint64_t tokens = 0;
  TokenizeProgress progress(total_bytes);
  olm::io::write_file_atomically(out, [&](int fd) {
    if (format == "npy") olm::io::write_all(fd, npy_header(wide ? "<u4" : "<u2", 0).data(), 128, out);
    uint64_t finished_bytes = 0;  // the input files done
    const DocumentReader* reading = nullptr;
    // Documents go to the threads in batches of about 16 MB of text, each written as soon as it is encoded.
    std::vector<std::string> batch;
    size_t batch_bytes = 0;
    std::vector<uint8_t> buffer;
    auto flush = [&]() {
      std::vector<std::string_view> views(batch.begin(), batch.end());
      std::vector<std::vector<int32_t>> encoded;
      if (tokenizer) {
        encoded = olm::tokenizer::encode_parallel(*tokenizer, views, false);
      } else {
        for (const auto& doc : batch) encoded.emplace_back(doc.begin(), doc.end());
        for (auto& ids : encoded)
          for (auto& id : ids) id &= 0xFF;  // bytes, not signed chars
      }
      size_t count = 0;
      for (const auto& ids : encoded) count += ids.size() + (add_eos ? 1 : 0);
      const size_t element = wide ? 4 : 2;
      buffer.resize(count * element);
      uint8_t* p = buffer.data();
      auto put = [&](uint32_t id) {
        // Little-endian, as NumPy's '<u2'/'<u4' and OLMo-core's raw memmaps.
        for (size_t b = 0; b < element; ++b) *p++ = static_cast<uint8_t>(id >> (8 * b));
      };
      for (const auto& ids : encoded) {
        for (int32_t id : ids) put(static_cast<uint32_t>(id));
        if (add_eos) put(static_cast<uint32_t>(eos));
      }
      olm::io::write_all(fd, buffer.data(), buffer.size(), out);
      tokens += count;
      documents += static_cast<int64_t>(batch.size());
      batch.clear();
      batch_bytes = 0;
      progress.update(finished_bytes + (reading ? reading->position() : 0), documents, static_cast<int64_t>(tokens));
    };
    for (size_t f = 0; f < files.size(); ++f) {
      const std::string& file = files[f];
      DocumentReader reader(file, split, args["text-field"].as<std::string>());
      reading = &reader;
      std::string doc;
      uint64_t offset = 0;
      while (reader.next(&doc, &offset)) {
        if (doc.find_first_not_of(" \t\r\n") == std::string::npos) continue;
        size_t bad = 0;
        if (tokenizer && !olm::io::valid_utf8(doc, &bad))
          throw olm::Error(olm::ErrorCode::kParse,
                           "'" + file + "': not UTF-8 at byte " + std::to_string(offset + bad) +
                               (split == DocumentReader::Split::kJsonl ? " (of the line's decoded text)" : ""));
        batch_bytes += doc.size();
        batch.push_back(std::move(doc));
        if (batch_bytes >= (16u << 20)) flush();
      }
      reading = nullptr;
      finished_bytes += file_bytes[f];
    }
    flush();
    if (format == "npy") {
      const std::string header = npy_header(wide ? "<u4" : "<u2", tokens);
      if (::pwrite(fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size()))
        throw olm::Error(olm::ErrorCode::kIo, "cannot write '" + out + "': " + std::strerror(errno));
    }
  });
  progress.finish();
  std::printf("%zu files, %ld documents, %lu tokens (%s %s) -> %s\n", files.size(), documents,
              static_cast<unsigned long>(tokens), dtype.c_str(), format.c_str(), out.c_str());
  return 0;
}

void usage() {
  std::printf(
      "usage: olm <command> [options]   (olm <command> --help for details)\n\n"
      "commands:\n"
      "  train      train a model from a train config\n"
      "  resume     resume training from a checkpoint\n"
      "  eval       validation loss and perplexity of a checkpoint\n"
      "  generate   sample from a checkpoint\n"
      "  info       parameters, FLOPs per token and memory for a config\n"
      "  convert    olm checkpoints to and from OLMo-core / Hugging Face safetensors\n"
      "  bench      training throughput\n"
      "  tokenize   text files to token files (a tokenizer's or bytes)\n"
      "  version    print the library version\n\n"
      "every command also takes --threads N: the CPU threads the library uses (1..1024)\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  try {
    // --threads N, for every command: ATen's CPU threads for the whole process (olm_set_num_threads).
    for (int i = 2; i + 1 < argc; ++i) {
      if (std::string(argv[i]) != "--threads") continue;
      char* end = nullptr;
      const long n = std::strtol(argv[i + 1], &end, 10);
      if (*end != '\0' || n < 1 || n > 1024) throw UsageError("--threads must be an integer in [1, 1024]");
      at::set_num_threads(static_cast<int>(n));
      for (int j = i; j + 2 <= argc; ++j) argv[j] = argv[j + 2];  // hidden from the command's parser
      argc -= 2;
      break;
    }
    if (command == "train") return cmd_train(argc - 1, argv + 1);
    if (command == "resume") return cmd_resume(argc - 1, argv + 1);
    if (command == "eval") return cmd_eval(argc - 1, argv + 1);
    if (command == "generate") return cmd_generate(argc - 1, argv + 1);
    if (command == "info") return cmd_info(argc - 1, argv + 1);
    if (command == "convert") return cmd_convert(argc - 1, argv + 1);
    if (command == "bench") return cmd_bench(argc - 1, argv + 1);
    if (command == "tokenize") return cmd_tokenize(argc - 1, argv + 1);
    // `olm --version` as well as `olm version`: the project VERSION, as olm_version() (tested
    // against the package version by tests/install).
    if (command == "version" || command == "--version") {
      std::printf("olm %d.%d.%d\n", OLM_VERSION_MAJOR, OLM_VERSION_MINOR, OLM_VERSION_PATCH);
      return 0;
    }
    std::fprintf(stderr, "olm: unknown command '%s'\n\n", command.c_str());
    usage();
    return 2;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "olm %s: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const cxxopts::exceptions::exception& e) {
    std::fprintf(stderr, "olm %s: %s\n", command.c_str(), e.what());
    return 2;
  } catch (const olm::Error& e) {
    std::fprintf(stderr, "olm %s: error: %s\n", command.c_str(), e.what());
    return 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "olm %s: error: %s\n", command.c_str(), e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "olm %s: error: %s\n", command.c_str(), e.what());
    return 1;
  }
}
