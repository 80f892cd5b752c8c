// Helpers shared by TensorSource implementations and their consumers.

#include "tqm/source.h"

#include <cstdint>
#include <string>

namespace tqm {

int32_t LayerFromName(const std::string& name) {
  static constexpr char kPrefix[] = "model.layers.";
  static constexpr size_t kPrefixLen = sizeof(kPrefix) - 1;
  if (name.compare(0, kPrefixLen, kPrefix) != 0) return -1;
  size_t i = kPrefixLen;
  size_t digits_begin = i;
  int64_t layer = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') {
    layer = layer * 10 + (name[i] - '0');
    if (layer > INT32_MAX) return -1;
    ++i;
  }
  const size_t digits = i - digits_begin;
  if (digits == 0) return -1;
  // Canonical numbers only: "model.layers.01" is not layer 1.
  if (digits > 1 && name[digits_begin] == '0') return -1;
  // The number must be a whole name component.
  if (i != name.size() && name[i] != '.') return -1;
  return static_cast<int32_t>(layer);
}

}  // namespace tqm
