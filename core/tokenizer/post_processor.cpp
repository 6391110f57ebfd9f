// Post-processors for a single sequence: the special tokens around it when encode asks for
// them. Pair templates load (a file defines both) but only the single one is used.
#include "core/tokenizer/components.h"

namespace olm::tokenizer {

namespace {

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& step : steps_) step->process(ids);
  }
  std::vector<int32_t> special_ids() const override {
    std::vector<int32_t> all;
    for (const auto& step : steps_) {
      auto ids = step->special_ids();
      all.insert(all.end(), ids.begin(), ids.end());
    }
    return all;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// The single template, flattened: ids before the sequence, then after it.
class TemplatePostProcessor : public PostProcessor {
 public:
  TemplatePostProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }
  std::vector<int32_t> special_ids() const override {
    std::vector<int32_t> all = before_;
    all.insert(all.end(), after_.begin(), after_.end());
    return all;
  }

 private:
  std::vector<int32_t> before_, after_;
};

class IdentityPostProcessor : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
  std::vector<int32_t> special_ids() const override { return {}; }
};

int32_t read_id(const JsonNode& node) { return static_cast<int32_t>(node.integer(0, INT32_MAX - 1)); }

// [token, id] of BertProcessing and RobertaProcessing.
int32_t read_token_id(const JsonNode& node) {
  if (node.json().kind != io::Json::kArray || node.size() != 2) node.fail(ErrorCode::kParse, "expected [token, id]");
  node[0].string();
  return read_id(node[1]);
}

std::unique_ptr<PostProcessor> make_template(const JsonNode& node) {
  const JsonNode single = node.at("single");
  const JsonNode special_tokens = node.at("special_tokens");
  special_tokens.expect(io::Json::kObject, "an object");
  if (auto pair = node.find_value("pair")) pair->size();  // must be a list; used for pairs only
  std::vector<int32_t> before, after;
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const JsonNode piece = single[i];
    if (auto sequence = piece.find("Sequence")) {
      const std::string& id = sequence->at("id").string();
      if (id != "A")
        sequence->fail(ErrorCode::kInvalidConfig, "the single template can only hold sequence A, not " + id);
      if (seen_sequence) sequence->fail(ErrorCode::kInvalidConfig, "sequence A appears twice in the single template");
      seen_sequence = true;
    } else if (auto special = piece.find("SpecialToken")) {
      const std::string& name = special->at("id").string();
      auto entry = special_tokens.find(name);
      if (!entry) special->fail(ErrorCode::kInvalidConfig, "\"" + name + "\" is not in special_tokens");
      const JsonNode ids = entry->at("ids");
      for (size_t k = 0; k < ids.size(); ++k) (seen_sequence ? after : before).push_back(read_id(ids[k]));
    } else {
      piece.fail(ErrorCode::kParse, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
  }
  if (!seen_sequence) single.fail(ErrorCode::kInvalidConfig, "the single template has no sequence A");
  return std::make_unique<TemplatePostProcessor>(std::move(before), std::move(after));
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const JsonNode& node) {
  const std::string& type = node.type();
  if (type == "Sequence") {
    const JsonNode list = node.at("processors");
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list.size(); ++i) steps.push_back(make_post_processor(list[i]));
    return std::make_unique<SequencePostProcessor>(std::move(steps));
  }
  if (type == "TemplateProcessing") return make_template(node);
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    const int32_t cls = read_token_id(node.at("cls")), sep = read_token_id(node.at("sep"));
    return std::make_unique<TemplatePostProcessor>(std::vector<int32_t>{cls}, std::vector<int32_t>{sep});
  }
  if (type == "ByteLevel") return std::make_unique<IdentityPostProcessor>();  // offsets only
  node.at("type").fail(ErrorCode::kInvalidConfig,
                       "post-processor \"" + type + "\" is not supported (olm implements Sequence, "
                       "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel)");
}

std::unique_ptr<PostProcessor> make_template_post_processor(std::vector<int32_t> before, std::vector<int32_t> after) {
  return std::make_unique<TemplatePostProcessor>(std::move(before), std::move(after));
}

}  // namespace olm::tokenizer
