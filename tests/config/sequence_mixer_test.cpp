// core/config/sequence_mixer.cpp: which sequence mixer takes which AttentionConfig field,
// from schema/olm.fbs's sequence_mixer attributes, read here from the embedded schema
// independently of core/config.
#include <flatbuffers/idl.h>
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>

#include "core/config/config.h"
#include "core/error.h"
#include "olm_schema_text.h"
#include "test_util.h"

namespace {

using olm::testing::expect_error;

const flatbuffers::StructDef& schema_table(const std::string& name) {
  static const std::unique_ptr<flatbuffers::Parser> parser = [] {
    auto p = std::make_unique<flatbuffers::Parser>();
    if (!p->Parse(olm::schema_text::kOlmFbs)) throw std::runtime_error("schema/olm.fbs: " + p->error_);
    return p;
  }();
  const auto* def = parser->structs_.Lookup("olm.fb." + name);
  if (def == nullptr) throw std::runtime_error("schema/olm.fbs has no table " + name);
  return *def;
}

// The field's sequence_mixer attribute, or "" when it has none.
std::string sequence_mixer(const flatbuffers::FieldDef& f) {
  const auto* attribute = f.attributes.Lookup("sequence_mixer");
  return attribute ? attribute->constant : "";
}

// A JSON value that sets a field of this type: not the field's default (a scalar equal to its
// default is not stored), and a table with its required fields only.
std::string json_value(const flatbuffers::Type& type, const std::string& default_value) {
  using namespace flatbuffers;
  if (type.base_type == BASE_TYPE_BOOL) return default_value == "1" || default_value == "true" ? "false" : "true";
  if (IsInteger(type.base_type)) return default_value == "1" ? "2" : "1";
  if (IsFloat(type.base_type)) return default_value == "0.5" ? "0.25" : "0.5";
  if (type.base_type == BASE_TYPE_STRING) return "\"x\"";
  if (type.base_type == BASE_TYPE_VECTOR) return "[" + json_value(type.VectorType(), "") + "]";
  if (type.base_type == BASE_TYPE_STRUCT && type.struct_def) {
    std::string out;
    for (const auto* f : type.struct_def->fields.vec)
      if (f->IsRequired())
        out += (out.empty() ? "\"" : ", \"") + f->name + "\": " + json_value(f->value.type, f->value.constant);
    return "{" + out + "}";
  }
  throw std::runtime_error("json_value: a field type this test does not know");
}

// A one-layer model whose block's "attention" slot holds these JSON object members.
std::string with_mixer(const std::string& members) {
  return R"({"d_model": 32, "vocab_size": 64, "n_layers": 1, "block": {"attention": {)" + members +
         R"(}, "feed_forward": {"hidden_size": 64}, "layer_norm": {}}, "lm_head": {}})";
}

TEST(ConfigSequenceMixers, EveryAttentionConfigFieldSaysWhichMixersTakeIt) {
  const auto& def = schema_table("AttentionConfig");
  const auto& fields = olm::attention_config_fields();  // Error(kInternal) if one has no attribute
  ASSERT_EQ(fields.size(), def.fields.vec.size());
  for (size_t i = 0; i < fields.size(); ++i) {
    const auto& f = *def.fields.vec[i];
    EXPECT_THAT(sequence_mixer(f), ::testing::AnyOf("attention", "gated_delta_net", "any"))
        << "schema/olm.fbs: AttentionConfig." << f.name << " needs (sequence_mixer: \"attention\" | "
        << "\"gated_delta_net\" | \"any\")";
    EXPECT_EQ(fields[i].name, f.name);
    EXPECT_EQ(fields[i].vtable_offset, f.value.offset) << f.name;
    const auto expected = sequence_mixer(f) == "attention"         ? olm::SequenceMixer::kAttention
                          : sequence_mixer(f) == "gated_delta_net" ? olm::SequenceMixer::kGatedDeltaNet
                                                                   : olm::SequenceMixer::kAny;
    EXPECT_EQ(fields[i].accepted_by, expected) << f.name;
  }
  // Both mixers take the name and the head geometry.
  for (const char* shared : {"name", "n_heads", "head_dim"})
    EXPECT_EQ(sequence_mixer(*def.fields.Lookup(shared)), "any") << shared;
  EXPECT_NO_THROW(olm::Config::from_json(with_mixer(R"("name": "gated_delta_net", "n_heads": 2, "head_dim": 8)")));
  EXPECT_NO_THROW(olm::Config::from_json(with_mixer(R"("name": "default", "n_heads": 2, "head_dim": 8)")));
}

// Every attention field, from the schema (no list here either), set on a GatedDeltaNet is
// refused by name, whichever door the config comes in by.
TEST(ConfigSequenceMixers, GatedDeltaNetRefusesEveryAttentionField) {
  const std::string gdn = R"("name": "gated_delta_net", "n_heads": 2)";
  ASSERT_NO_THROW(olm::Config::from_json(with_mixer(gdn)));
  int refused = 0;
  for (const auto* f : schema_table("AttentionConfig").fields.vec) {
    if (sequence_mixer(*f) != "attention") continue;
    SCOPED_TRACE(f->name);
    const std::string json = with_mixer(gdn + ", \"" + f->name + "\": " + json_value(f->value.type, f->value.constant));
    const std::string message =
        "block.attention." + f->name + ": not supported by block.attention.name \"gated_delta_net\" (a GatedDeltaNet)";
    expect_error([&] { olm::Config::from_json(json); }, olm::ErrorCode::kInvalidConfig, message);
    // The native door: the same object, unpacked from the JSON's buffer.
    const auto buffer = olm::json_to_flatbuffer(json, "TransformerConfig", "test");
    olm::fb::TransformerConfigT native;
    olm::fb::GetTransformerConfig(buffer.data())->UnPackTo(&native);
    expect_error([&] { olm::Config::from_native(native); }, olm::ErrorCode::kInvalidConfig, message);
    ++refused;
  }
  EXPECT_GE(refused, 12);  // n_kv_heads, bias, rope, ..., alibi today
}

// Every GatedDeltaNet field set on attention ("default", the default name, or "normalized") is
// refused by name.
TEST(ConfigSequenceMixers, AttentionRefusesEveryGatedDeltaNetField) {
  int refused = 0;
  for (const auto* f : schema_table("AttentionConfig").fields.vec) {
    if (sequence_mixer(*f) != "gated_delta_net") continue;
    SCOPED_TRACE(f->name);
    const std::string member = "\"" + f->name + "\": " + json_value(f->value.type, f->value.constant);
    for (const std::string name : {"default", "normalized"}) {
      expect_error([&] { olm::Config::from_json(with_mixer(R"("name": ")" + name + R"(", "n_heads": 2, )" + member)); },
                   olm::ErrorCode::kInvalidConfig,
                   "block.attention." + f->name + ": only allowed with block.attention.name \"gated_delta_net\" (got '" +
                       name + "')");
    }
    expect_error([&] { olm::Config::from_json(with_mixer(R"("n_heads": 2, )" + member)); }, olm::ErrorCode::kInvalidConfig,
                 "block.attention." + f->name + ": only allowed with block.attention.name \"gated_delta_net\" (got 'default')");
    ++refused;
  }
  EXPECT_GE(refused, 6);  // n_v_heads, expand_v, allow_neg_eigval, conv_size, conv_bias, norm_eps today
}

}  // namespace
