// Strict recursive-descent JSON parser and string quoter (see json.h). The
// parser reads only through `pos_ < text_.size()` checks, recursion is bounded
// by ParseOptions::max_depth, and nothing is allocated beyond what the input
// text itself accounts for.

#include "base/json.h"

#include <charconv>
#include <cmath>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"

namespace tqm {
namespace json {

Value Value::Bool(bool b) {
  Value v;
  v.type_ = Type::kBool;
  v.bool_ = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.type_ = Type::kInt;
  v.int_ = i;
  return v;
}

Value Value::Double(double d) {
  Value v;
  v.type_ = Type::kDouble;
  v.double_ = d;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.type_ = Type::kString;
  v.string_ = std::move(s);
  return v;
}

Value Value::Array(std::vector<Value> elements) {
  Value v;
  v.type_ = Type::kArray;
  v.array_ = std::move(elements);
  return v;
}

Value Value::Object(std::vector<Member> members) {
  Value v;
  v.type_ = Type::kObject;
  v.object_ = std::move(members);
  return v;
}

double Value::as_double() const {
  if (type_ == Type::kInt) return static_cast<double>(int_);
  if (type_ == Type::kDouble) return double_;
  return 0;
}

const Value* Value::Find(std::string_view key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const Member& m : object_) {
    if (m.key == key) return &m.value;
  }
  return nullptr;
}

const char* Value::TypeName(Type t) {
  switch (t) {
    case Type::kNull:
      return "null";
    case Type::kBool:
      return "boolean";
    case Type::kInt:
      return "integer";
    case Type::kDouble:
      return "number";
    case Type::kString:
      return "string";
    case Type::kArray:
      return "array";
    case Type::kObject:
      return "object";
  }
  return "?";
}

namespace {

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 when the
// bytes there are not one (Unicode 15, table 3-7).
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const size_t left = s.size() - i;
  uint8_t c = b(i);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    return left >= 2 && (b(i + 1) & 0xC0) == 0x80 ? 2 : 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3) return 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
    if (b(i + 1) < lo || b(i + 1) > hi) return 0;
    return (b(i + 2) & 0xC0) == 0x80 ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4) return 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    if (b(i + 1) < lo || b(i + 1) > hi) return 0;
    return (b(i + 2) & 0xC0) == 0x80 && (b(i + 3) & 0xC0) == 0x80 ? 4 : 0;
  }
  return 0;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

class Parser {
 public:
  Parser(std::string_view text, const ParseOptions& options)
      : text_(text), options_(options) {}

  absl::StatusOr<Value> ParseDocument() {
    SkipWhitespace();
    Value v;
    absl::Status s = ParseValue(0, &v);
    if (!s.ok()) return s;
    SkipWhitespace();
    if (pos_ != text_.size()) return Error("unexpected data after the value");
    return v;
  }

 private:
  absl::Status Error(const std::string& what) const { return ErrorAt(what, pos_); }
  absl::Status ErrorAt(const std::string& what, size_t at) const {
    return absl::InvalidArgumentError(absl::StrFormat("JSON: %s at byte %d", what, at));
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return text_[pos_]; }

  void SkipWhitespace() {
    while (!AtEnd()) {
      char c = Peek();
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  absl::Status Expect(char c) {
    if (AtEnd()) return Error(absl::StrFormat("expected '%c', got end of input", c));
    if (Peek() != c) return Error(absl::StrFormat("expected '%c'", c));
    ++pos_;
    return absl::OkStatus();
  }

  absl::Status ParseLiteral(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return Error("invalid literal");
    pos_ += word.size();
    return absl::OkStatus();
  }

  absl::Status ParseValue(int depth, Value* out) {
    if (AtEnd()) return Error("expected a value, got end of input");
    if (++values_ > options_.max_values) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "JSON: more than %d values at byte %d", options_.max_values, pos_));
    }
    switch (Peek()) {
      case '{':
        return ParseObject(depth + 1, out);
      case '[':
        return ParseArray(depth + 1, out);
      case '"': {
        std::string s;
        absl::Status st = ParseString(&s);
        if (!st.ok()) return st;
        *out = Value::String(std::move(s));
        return absl::OkStatus();
      }
      case 't': {
        absl::Status st = ParseLiteral("true");
        if (st.ok()) *out = Value::Bool(true);
        return st;
      }
      case 'f': {
        absl::Status st = ParseLiteral("false");
        if (st.ok()) *out = Value::Bool(false);
        return st;
      }
      case 'n': {
        absl::Status st = ParseLiteral("null");
        if (st.ok()) *out = Value::Null();
        return st;
      }
      default:
        if (Peek() == '-' || (Peek() >= '0' && Peek() <= '9')) return ParseNumber(out);
        return Error("expected a value");
    }
  }

  absl::Status CheckDepth(int depth) const {
    if (depth > options_.max_depth) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "JSON: nesting deeper than %d at byte %d", options_.max_depth, pos_));
    }
    return absl::OkStatus();
  }

  absl::Status ParseObject(int depth, Value* out) {
    absl::Status s = CheckDepth(depth);
    if (!s.ok()) return s;
    ++pos_;  // '{'
    std::vector<Member> members;
    SkipWhitespace();
    if (!AtEnd() && Peek() == '}') {
      ++pos_;
      *out = Value::Object(std::move(members));
      return absl::OkStatus();
    }
    while (true) {
      SkipWhitespace();
      if (AtEnd() || Peek() != '"') {
        return AtEnd() ? Error("expected an object key, got end of input")
                       : Error("expected an object key (a string)");
      }
      size_t key_pos = pos_;
      Member m;
      s = ParseString(&m.key);
      if (!s.ok()) return s;
      for (const Member& prev : members) {
        if (prev.key == m.key) {
          return ErrorAt(
              absl::StrFormat("duplicate object key \"%s\"", absl::CEscape(m.key)),
              key_pos);
        }
      }
      SkipWhitespace();
      s = Expect(':');
      if (!s.ok()) return s;
      SkipWhitespace();
      s = ParseValue(depth, &m.value);
      if (!s.ok()) return s;
      members.push_back(std::move(m));
      SkipWhitespace();
      if (AtEnd()) return Error("unterminated object");
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() == '}') {
        ++pos_;
        break;
      }
      return Error("expected ',' or '}' in object");
    }
    *out = Value::Object(std::move(members));
    return absl::OkStatus();
  }

  absl::Status ParseArray(int depth, Value* out) {
    absl::Status s = CheckDepth(depth);
    if (!s.ok()) return s;
    ++pos_;  // '['
    std::vector<Value> elements;
    SkipWhitespace();
    if (!AtEnd() && Peek() == ']') {
      ++pos_;
      *out = Value::Array(std::move(elements));
      return absl::OkStatus();
    }
    while (true) {
      SkipWhitespace();
      Value v;
      s = ParseValue(depth, &v);
      if (!s.ok()) return s;
      elements.push_back(std::move(v));
      SkipWhitespace();
      if (AtEnd()) return Error("unterminated array");
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() == ']') {
        ++pos_;
        break;
      }
      return Error("expected ',' or ']' in array");
    }
    *out = Value::Array(std::move(elements));
    return absl::OkStatus();
  }

  // Reads 4 hex digits at pos_.
  absl::Status ParseHex4(uint32_t* out) {
    if (text_.size() - pos_ < 4) return Error("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text_[pos_ + k];
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        return ErrorAt("invalid hex digit in \\u escape", pos_ + k);
      }
      v = v * 16 + d;
    }
    pos_ += 4;
    *out = v;
    return absl::OkStatus();
  }

  absl::Status ParseString(std::string* out) {
    size_t start = pos_;
    ++pos_;  // '"'
    out->clear();
    while (true) {
      if (AtEnd()) return ErrorAt("unterminated string", start);
      uint8_t c = static_cast<uint8_t>(Peek());
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (c < 0x20) return Error("unescaped control character in string");
      if (c >= 0x80) {
        size_t n = Utf8SequenceLength(text_, pos_);
        if (n == 0) return Error("invalid UTF-8 in string");
        out->append(text_.data() + pos_, n);
        pos_ += n;
        continue;
      }
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      size_t esc = pos_;
      ++pos_;
      if (AtEnd()) return ErrorAt("unterminated escape", esc);
      char e = Peek();
      ++pos_;
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          absl::Status s = ParseHex4(&cp);
          if (!s.ok()) return s;
          if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return ErrorAt("unpaired low surrogate in \\u escape", esc);
          }
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (text_.size() - pos_ < 2 || text_[pos_] != '\\' ||
                text_[pos_ + 1] != 'u') {
              return ErrorAt("unpaired high surrogate in \\u escape", esc);
            }
            pos_ += 2;
            uint32_t lo = 0;
            s = ParseHex4(&lo);
            if (!s.ok()) return s;
            if (lo < 0xDC00 || lo > 0xDFFF) {
              return ErrorAt("high surrogate not followed by a low surrogate", esc);
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          return ErrorAt("invalid escape sequence", esc);
      }
    }
  }

  absl::Status ParseNumber(Value* out) {
    const size_t start = pos_;
    bool negative = false;
    if (Peek() == '-') {
      negative = true;
      ++pos_;
    }
    const auto digit = [&]() { return !AtEnd() && Peek() >= '0' && Peek() <= '9'; };
    if (!digit()) return Error("expected a digit");
    if (Peek() == '0') {
      ++pos_;
      if (digit()) return ErrorAt("leading zero in number", start);
    } else {
      while (digit()) ++pos_;
    }
    bool integral = true;
    if (!AtEnd() && Peek() == '.') {
      integral = false;
      ++pos_;
      if (!digit()) return Error("expected a digit after '.'");
      while (digit()) ++pos_;
    }
    if (!AtEnd() && (Peek() == 'e' || Peek() == 'E')) {
      integral = false;
      ++pos_;
      if (!AtEnd() && (Peek() == '+' || Peek() == '-')) ++pos_;
      if (!digit()) return Error("expected a digit in exponent");
      while (digit()) ++pos_;
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    if (integral) {
      // Accumulate as a negative number so that INT64_MIN fits.
      int64_t v = 0;
      bool overflow = false;
      for (const char* p = first + (negative ? 1 : 0); p < last; ++p) {
        int d = *p - '0';
        if (v < (INT64_MIN + d) / 10) {
          overflow = true;
          break;
        }
        v = v * 10 - d;
      }
      if (!overflow && !negative && v == INT64_MIN) overflow = true;
      if (!overflow) {
        *out = Value::Int(negative ? v : -v);
        return absl::OkStatus();
      }
      // Out of int64 range: fall through and keep it as a double.
    }
    double d = 0;
    std::from_chars_result r = std::from_chars(first, last, d);
    if (r.ec != std::errc() || r.ptr != last || !std::isfinite(d)) {
      return ErrorAt("number out of range", start);
    }
    *out = Value::Double(d);
    return absl::OkStatus();
  }

  std::string_view text_;
  ParseOptions options_;
  size_t pos_ = 0;
  size_t values_ = 0;
};

}  // namespace

absl::StatusOr<Value> Parse(std::string_view text, const ParseOptions& options) {
  if (text.size() > options.max_size) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("JSON: input of %d bytes exceeds the limit of %d bytes at byte 0",
                        text.size(), options.max_size));
  }
  return Parser(text, options).ParseDocument();
}

std::string Quote(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (char ch : s) {
    uint8_t c = static_cast<uint8_t>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
  return out;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t n = Utf8SequenceLength(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

}  // namespace json
}  // namespace tqm
