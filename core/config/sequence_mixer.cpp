// Which sequence mixer takes which AttentionConfig field (schema/olm.fbs's sequence_mixer
// attributes, read from the embedded schema), and GatedDeltaNet resolution.
#include "core/config/internal.h"

#include <flatbuffers/idl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace olm {
namespace config_internal {

// The first field set in `in` (in schema order) that `mixer` does not accept, or nullptr.
// "Set" is what a packed buffer holds: an optional scalar with a value, a non-empty string, a
// present table, a non-empty vector, or a scalar with a default that differs from it.
const AttentionConfigField* first_field_refused(const fb::AttentionConfigT& in, SequenceMixer mixer) {
  flatbuffers::FlatBufferBuilder builder;
  builder.Finish(fb::AttentionConfig::Pack(builder, &in));
  const auto* table = flatbuffers::GetRoot<flatbuffers::Table>(builder.GetBufferPointer());
  for (const auto& f : attention_config_fields())
    if (f.accepted_by != SequenceMixer::kAny && f.accepted_by != mixer && table->CheckField(f.vtable_offset))
      return &f;
  return nullptr;
}

// GatedDeltaNetConfig, from the "attention" slot with name "gated_delta_net". OLMo-core asserts
// what we check here; attention-only fields are refused by name.
GatedDeltaNetSpec resolve_gated_delta_net(const fb::AttentionConfigT& in, int64_t d_model,
                                          const std::string& field) {
  // Attention fields (schema/olm.fbs: sequence_mixer "attention").
  if (const auto* f = first_field_refused(in, SequenceMixer::kGatedDeltaNet))
    fail(ErrorCode::kInvalidConfig,
         field + "." + f->name + ": not supported by " + field + ".name \"gated_delta_net\" (a GatedDeltaNet)");
  GatedDeltaNetSpec g;
  g.n_heads = in.n_heads;
  require_positive(g.n_heads, field + ".n_heads");
  g.n_v_heads = in.n_v_heads.value_or(g.n_heads);
  require_positive(g.n_v_heads, field + ".n_v_heads");
  require(g.n_v_heads >= g.n_heads && g.n_v_heads % g.n_heads == 0, ErrorCode::kInvalidConfig,
          field + ".n_v_heads (" + std::to_string(g.n_v_heads) + ") must be a multiple of " + field + ".n_heads (" +
              std::to_string(g.n_heads) + ")");
  g.head_dim = resolve_head_dim(in.head_dim, d_model, g.n_heads, field);
  g.expand_v = in.expand_v.value_or(2.0);
  require_positive_finite(g.expand_v, field + ".expand_v");
  // OLMo-core: int(head_dim * expand_v), asserted to be (close to) the exact product.
  const double v_dim = static_cast<double>(g.head_dim) * g.expand_v;
  g.head_v_dim = static_cast<int64_t>(v_dim);
  require(v_dim < 2147483648.0 && g.head_v_dim > 0 && std::abs(v_dim - static_cast<double>(g.head_v_dim)) <= 1e-5 * v_dim,
          ErrorCode::kInvalidConfig,
          field + ".expand_v: head_dim (" + std::to_string(g.head_dim) + ") * expand_v must be a positive integer");
  g.allow_neg_eigval = in.allow_neg_eigval.value_or(true);
  g.conv_size = in.conv_size.value_or(4);
  require_positive(g.conv_size, field + ".conv_size");
  g.conv_bias = in.conv_bias.value_or(false);
  g.norm_eps = in.norm_eps.value_or(1e-5);
  require_positive_finite(g.norm_eps, field + ".norm_eps");
  return g;
}

}  // namespace config_internal

using namespace config_internal;

const std::vector<AttentionConfigField>& attention_config_fields() {
  static const std::vector<AttentionConfigField> fields = [] {
    std::vector<AttentionConfigField> out;
    for (const auto* f : schema_table("AttentionConfig").fields.vec) {
      const std::string where = "schema/olm.fbs: AttentionConfig." + f->name;
      const auto* attribute = f->attributes.Lookup("sequence_mixer");
      require(attribute != nullptr, ErrorCode::kInternal,
              where + " has no (sequence_mixer: \"attention\" | \"gated_delta_net\" | \"any\") attribute");
      const std::string& value = attribute->constant;
      AttentionConfigField field;
      field.name = f->name;
      field.accepted_by = value == "attention"         ? SequenceMixer::kAttention
                          : value == "gated_delta_net" ? SequenceMixer::kGatedDeltaNet
                                                       : SequenceMixer::kAny;
      require(value == "attention" || value == "gated_delta_net" || value == "any", ErrorCode::kInternal,
              where + ": unknown sequence_mixer '" + value + "' (known: attention, gated_delta_net, any)");
      field.vtable_offset = f->value.offset;
      out.push_back(std::move(field));
    }
    return out;
  }();
  return fields;
}

}  // namespace olm
