// MetaValue factories and lookup over a metadata list.

#include "tqm/metadata.h"

#include <utility>

namespace tqm {

MetaValue MetaValue::Int(int64_t v) {
  MetaValue m;
  m.type = format::kMetaInt64;
  m.int64 = v;
  return m;
}

MetaValue MetaValue::Float(double v) {
  MetaValue m;
  m.type = format::kMetaFloat64;
  m.float64 = v;
  return m;
}

MetaValue MetaValue::String(std::string v) {
  MetaValue m;
  m.type = format::kMetaString;
  m.bytes = std::move(v);
  return m;
}

MetaValue MetaValue::Bytes(std::string v) {
  MetaValue m;
  m.type = format::kMetaBytes;
  m.bytes = std::move(v);
  return m;
}

const MetaValue* FindMeta(const std::vector<MetaEntry>& entries, const std::string& key) {
  for (const MetaEntry& e : entries) {
    if (e.key == key) return &e.value;
  }
  return nullptr;
}

}  // namespace tqm
