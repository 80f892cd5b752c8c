// Tests of the strict JSON parser and quoter used for safetensors headers.

#include "base/json.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tqm {
namespace json {
namespace {

using ::testing::HasSubstr;

Value MustParse(const std::string& text) {
  absl::StatusOr<Value> v = Parse(text);
  EXPECT_TRUE(v.ok()) << text << ": " << v.status();
  return v.ok() ? *v : Value();
}

TEST(Json, Scalars) {
  EXPECT_TRUE(MustParse("null").is_null());
  EXPECT_TRUE(MustParse("true").as_bool());
  EXPECT_TRUE(MustParse("false").is_bool());
  EXPECT_FALSE(MustParse("false").as_bool());
  EXPECT_EQ(MustParse("  42 \n").as_int(), 42);
  EXPECT_EQ(MustParse("-7").as_int(), -7);
  EXPECT_EQ(MustParse("0").as_int(), 0);
  EXPECT_TRUE(MustParse("-0").is_int());
  EXPECT_EQ(MustParse("\"hi\"").as_string(), "hi");
}

TEST(Json, Integers) {
  Value max = MustParse("9223372036854775807");
  ASSERT_TRUE(max.is_int());
  EXPECT_EQ(max.as_int(), std::numeric_limits<int64_t>::max());
  Value min = MustParse("-9223372036854775808");
  ASSERT_TRUE(min.is_int());
  EXPECT_EQ(min.as_int(), std::numeric_limits<int64_t>::min());
  // Outside int64: kept as a double, never wrapped.
  Value big = MustParse("9223372036854775808");
  EXPECT_TRUE(big.is_double());
  EXPECT_EQ(big.as_double(), 9223372036854775808.0);
  EXPECT_TRUE(MustParse("-9223372036854775809").is_double());
  EXPECT_TRUE(MustParse("123456789012345678901234567890").is_double());
}

TEST(Json, Doubles) {
  EXPECT_DOUBLE_EQ(MustParse("1.5").as_double(), 1.5);
  EXPECT_DOUBLE_EQ(MustParse("-0.25").as_double(), -0.25);
  EXPECT_DOUBLE_EQ(MustParse("1e3").as_double(), 1000);
  EXPECT_DOUBLE_EQ(MustParse("1E+3").as_double(), 1000);
  EXPECT_DOUBLE_EQ(MustParse("25e-2").as_double(), 0.25);
  EXPECT_TRUE(MustParse("1e3").is_double());
  EXPECT_EQ(MustParse("1e-5").as_double(), 1e-5);
  EXPECT_EQ(MustParse("0.1").as_double(), 0.1);
  EXPECT_EQ(MustParse("3").as_double(), 3.0);
}

TEST(Json, ArraysAndObjects) {
  Value v = MustParse(R"( { "a" : [1, 2.5, "x", null, true, [], {}], "b": {"c": -1} } )");
  ASSERT_TRUE(v.is_object());
  ASSERT_EQ(v.object().size(), 2u);
  EXPECT_EQ(v.object()[0].key, "a");
  EXPECT_EQ(v.object()[1].key, "b");
  const Value* a = v.Find("a");
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->is_array());
  ASSERT_EQ(a->array().size(), 7u);
  EXPECT_EQ(a->array()[0].as_int(), 1);
  EXPECT_EQ(a->array()[1].as_double(), 2.5);
  EXPECT_EQ(a->array()[2].as_string(), "x");
  EXPECT_TRUE(a->array()[3].is_null());
  EXPECT_TRUE(a->array()[4].as_bool());
  EXPECT_TRUE(a->array()[5].is_array());
  EXPECT_TRUE(a->array()[6].is_object());
  ASSERT_NE(v.Find("b"), nullptr);
  ASSERT_NE(v.Find("b")->Find("c"), nullptr);
  EXPECT_EQ(v.Find("b")->Find("c")->as_int(), -1);
  EXPECT_EQ(v.Find("zz"), nullptr);
  EXPECT_EQ(a->Find("a"), nullptr);  // not an object
  EXPECT_TRUE(MustParse("[]").array().empty());
  EXPECT_TRUE(MustParse("{}").object().empty());
}

TEST(Json, StringEscapes) {
  EXPECT_EQ(MustParse(R"("a\"b\\c\/d\b\f\n\r\t")").as_string(), "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(MustParse(R"("\u0041\u00e9\u20AC")").as_string(), "A\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(MustParse(R"("\u0000")").as_string(), std::string(1, '\0'));
  // Surrogate pair: U+1F600.
  EXPECT_EQ(MustParse(R"("\ud83d\ude00")").as_string(), "\xF0\x9F\x98\x80");
  // Raw UTF-8 passes through.
  EXPECT_EQ(MustParse("\"caf\xC3\xA9 \xF0\x9F\x98\x80\"").as_string(),
            "caf\xC3\xA9 \xF0\x9F\x98\x80");
}

struct BadCase {
  const char* name;
  std::string text;
  size_t offset;  // expected byte offset in the message
};

TEST(Json, RejectsMalformedWithOffsets) {
  const BadCase cases[] = {
      {"empty", "", 0},
      {"only_space", "   ", 3},
      {"trailing_data", "{} x", 3},
      {"two_values", "1 2", 2},
      {"trailing_comma_array", "[1,]", 3},
      {"trailing_comma_object", "{\"a\":1,}", 7},
      {"missing_colon", "{\"a\" 1}", 5},
      {"unquoted_key", "{a:1}", 1},
      {"single_quotes", "'a'", 0},
      {"leading_zero", "01", 0},
      {"leading_zero_neg", "-01", 0},
      {"bare_minus", "-", 1},
      {"dot_no_digits", "1.", 2},
      {"leading_dot", ".5", 0},
      {"exp_no_digits", "1e", 2},
      {"plus_sign", "+1", 0},
      {"nan", "NaN", 0},
      {"infinity", "Infinity", 0},
      {"huge_double", "1e400", 0},
      {"bad_literal", "tru", 0},
      {"unterminated_string", "\"abc", 0},
      {"unterminated_array", "[1", 2},
      {"unterminated_object", "{\"a\":1", 6},
      {"control_char", "\"a\nb\"", 2},
      {"bad_escape", "\"\\x\"", 1},
      {"bad_hex", "\"\\u12G4\"", 5},
      {"short_hex", "\"\\u12\"", 3},
      {"lone_low_surrogate", "\"\\udc00\"", 1},
      {"lone_high_surrogate", "\"\\ud800\"", 1},
      {"high_then_nonlow", "\"\\ud800\\u0041\"", 1},
      {"invalid_utf8", "\"\xff\"", 1},
      {"overlong_utf8", "\"\xC0\xAF\"", 1},
      {"utf8_surrogate", "\"\xED\xA0\x80\"", 1},
      {"truncated_utf8", "\"\xE2\x82\"", 1},
      {"duplicate_key", "{\"a\":1,\"a\":2}", 7},
      {"comment", "// x\n1", 0},
  };
  for (const BadCase& c : cases) {
    absl::StatusOr<Value> v = Parse(c.text);
    ASSERT_FALSE(v.ok()) << c.name;
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(v.status().message()),
                HasSubstr("at byte " + std::to_string(c.offset)))
        << c.name << ": " << v.status();
  }
}

TEST(Json, DepthLimit) {
  ParseOptions options;
  options.max_depth = 4;
  EXPECT_TRUE(Parse("[[[[1]]]]", options).ok());
  absl::StatusOr<Value> v = Parse("[[[[[1]]]]]", options);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(v.status().message()), HasSubstr("at byte 4"));
  // Default limit: deep nesting is rejected, not a stack overflow.
  std::string deep(100000, '[');
  v = Parse(deep);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kResourceExhausted);
  std::string deep_obj;
  for (int i = 0; i < 100000; ++i) deep_obj += "{\"a\":";
  EXPECT_EQ(Parse(deep_obj).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(Json, SizeLimit) {
  ParseOptions options;
  options.max_size = 8;
  EXPECT_TRUE(Parse("[1,2,3]", options).ok());
  absl::StatusOr<Value> v = Parse("[1,2,3,4]", options);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(Json, QuoteRoundTrip) {
  const std::string inputs[] = {
      "",
      "plain",
      "quote\" backslash\\ slash/",
      "\b\f\n\r\t",
      std::string("nul\0byte", 8),
      "\x01\x1f\x7f",
      "model.layers.0.self_attn.q_proj.weight",
      "caf\xC3\xA9 \xF0\x9F\x98\x80",
  };
  for (const std::string& s : inputs) {
    std::string q = Quote(s);
    EXPECT_EQ(q.front(), '"');
    EXPECT_EQ(q.back(), '"');
    for (char c : q) EXPECT_GE(static_cast<uint8_t>(c), 0x20) << q;
    absl::StatusOr<Value> v = Parse(q);
    ASSERT_TRUE(v.ok()) << q << ": " << v.status();
    EXPECT_EQ(v->as_string(), s);
  }
  EXPECT_EQ(Quote("a\"b"), "\"a\\\"b\"");
  EXPECT_EQ(Quote("\x01"), "\"\\u0001\"");
}

TEST(Json, Utf8Validation) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("ascii"));
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(IsValidUtf8("\x80"));
  EXPECT_FALSE(IsValidUtf8("\xC1\xBF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\x80"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98"));      // truncated
  EXPECT_FALSE(IsValidUtf8("\xFE"));
}

// Every prefix of a valid document short of the whole is rejected, and
// parsing never reads past the end (run under ASan to check the latter).
TEST(Json, EveryPrefixRejected) {
  const std::string doc =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,3],)"
      R"("data_offsets":[0,12]},"x":[1.5e-3,-2,true,false,null,"\u00e9\ud83d\ude00"]})";
  ASSERT_TRUE(Parse(doc).ok());
  for (size_t n = 0; n < doc.size(); ++n) {
    EXPECT_FALSE(Parse(doc.substr(0, n)).ok()) << n;
  }
}

TEST(Json, MaxValuesBoundsWhatIsParsed) {
  ParseOptions o;
  o.max_values = 5;
  EXPECT_TRUE(Parse("[1,2,3,4]", o).ok());  // the array and 4 numbers
  auto r = Parse("[1,2,3,4,5]", o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("more than 5 values"), std::string::npos);
}

}  // namespace
}  // namespace json
}  // namespace tqm
