// A small strict JSON parser (RFC 8259) for headers of untrusted files
// (safetensors), and a string quoter for writers that emit JSON.
//
// Strict means: exactly one value, optionally surrounded by whitespace; no
// comments, trailing commas, NaN/Infinity, leading zeros or unescaped control
// characters; strings must be valid UTF-8 and \u escapes must form valid
// surrogate pairs; object keys must be unique. Nesting depth and input size are
// capped. Errors are InvalidArgumentError (or ResourceExhaustedError for the
// limits) and carry the byte offset of the problem.

#ifndef TQM_SRC_JSON_H_
#define TQM_SRC_JSON_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tqm {
namespace json {

class Value;

// One "key": value pair of an object; members keep the order of the text.
struct Member;

class Value {
 public:
  enum class Type { kNull, kBool, kInt, kDouble, kString, kArray, kObject };

  Value() = default;
  static Value Null() { return Value(); }
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Double(double d);
  static Value String(std::string s);
  static Value Array(std::vector<Value> elements);
  static Value Object(std::vector<Member> members);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  // An integer literal (no fraction, no exponent) that fits in int64.
  bool is_int() const { return type_ == Type::kInt; }
  // Any other number, including integer literals outside the int64 range.
  bool is_double() const { return type_ == Type::kDouble; }
  bool is_number() const { return is_int() || is_double(); }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  // Accessors return the zero value / empty container on a type mismatch.
  bool as_bool() const { return type_ == Type::kBool && bool_; }
  int64_t as_int() const { return type_ == Type::kInt ? int_ : 0; }
  // The numeric value of an int or a double.
  double as_double() const;
  const std::string& as_string() const { return string_; }
  const std::vector<Value>& array() const { return array_; }
  const std::vector<Member>& object() const { return object_; }

  // The value of member `key` of an object, or nullptr (also for non-objects).
  // Valid while this Value lives and is not modified.
  const Value* Find(std::string_view key) const;

  // Name of a type, for error messages ("object", "integer", ...).
  static const char* TypeName(Type t);

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  int64_t int_ = 0;
  double double_ = 0;
  std::string string_;
  std::vector<Value> array_;
  std::vector<Member> object_;
};

struct Member {
  std::string key;
  Value value;
};

struct ParseOptions {
  size_t max_size = 100u << 20;  // bytes of input
  int max_depth = 64;            // nested arrays/objects
  // Values parsed (every scalar, array and object counts one). A parsed
  // Value costs about 100 bytes however short its text ("0," is two
  // bytes), so a reader of untrusted text bounds its memory by a multiple
  // of the input with this.
  size_t max_values = SIZE_MAX;
};

// Parses `text` as one JSON value. Error messages read
// "JSON: <problem> at byte <offset>".
absl::StatusOr<Value> Parse(std::string_view text, const ParseOptions& options = {});

// Returns `s` as a quoted JSON string: '"', '\\' and control characters are
// escaped, other bytes (UTF-8) are copied. Callers that need valid JSON must
// pass valid UTF-8 (see IsValidUtf8).
std::string Quote(std::string_view s);

// True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code
// points above U+10FFFF).
bool IsValidUtf8(std::string_view s);

}  // namespace json
}  // namespace tqm

#endif  // TQM_SRC_JSON_H_
