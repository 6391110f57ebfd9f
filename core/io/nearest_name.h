// "Did you mean ...?" for a name that is not known: the known name at the smallest
// Levenshtein distance. One place for configs' field names and the C API's parameter names.
#pragma once
#include <algorithm>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

namespace olm::io {

inline size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

struct NearestName {
  const std::string* name = nullptr;  // nullptr when nothing is known
  size_t distance = std::numeric_limits<size_t>::max();
};

// The first known name at the smallest distance from `name`.
inline NearestName nearest_name(const std::string& name, const std::vector<std::string>& known) {
  NearestName best;
  for (const auto& k : known) {
    const size_t d = edit_distance(name, k);
    if (d < best.distance) best = {&k, d};
  }
  return best;
}

}  // namespace olm::io
