// Recursive-descent JSON parser (see json.hpp). Numbers go through std::from_chars, so parsing does not depend on
// the C locale's decimal separator.
#include "json.hpp"

#include <charconv>
#include <cstdint>
#include <stdexcept>
#include <utility>

namespace tardis::json {

Value Value::make_bool(bool b) {
    Value v;
    v.type_ = Type::Bool;
    v.bool_ = b;
    return v;
}

Value Value::make_number(double d) {
    Value v;
    v.type_ = Type::Number;
    v.number_ = d;
    return v;
}

Value Value::make_string(std::string s) {
    Value v;
    v.type_ = Type::String;
    v.string_ = std::move(s);
    return v;
}

Value Value::make_array(std::vector<Value> items) {
    Value v;
    v.type_ = Type::Array;
    v.array_ = std::move(items);
    return v;
}

Value Value::make_object(std::map<std::string, Value> members) {
    Value v;
    v.type_ = Type::Object;
    v.object_ = std::move(members);
    return v;
}

const Value* Value::find(const std::string& key) const {
    if (type_ != Type::Object) return nullptr;
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &it->second;
}

const char* type_name(Value::Type type) {
    switch (type) {
        case Value::Type::Null: return "null";
        case Value::Type::Bool: return "boolean";
        case Value::Type::Number: return "number";
        case Value::Type::String: return "string";
        case Value::Type::Array: return "array";
        case Value::Type::Object: return "object";
    }
    return "?";
}

namespace {

constexpr int kMaxDepth = 256;  // bounds the recursion on hostile input

class Parser {
public:
    explicit Parser(const std::string& text) : text_(text) {}

    Value document() {
        skip_space();
        Value v = value(0);
        skip_space();
        if (pos_ != text_.size()) fail("unexpected text after the JSON value");
        return v;
    }

private:
    const std::string& text_;
    size_t pos_ = 0;

    [[noreturn]] void fail(const std::string& what) const {
        size_t line = 1, column = 1;
        for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
            if (text_[i] == '\n') {
                ++line;
                column = 1;
            } else {
                ++column;
            }
        }
        throw std::invalid_argument("line " + std::to_string(line) + ", column " + std::to_string(column) + ": " +
                                    what);
    }

    bool at_end() const { return pos_ >= text_.size(); }
    char peek() const { return at_end() ? '\0' : text_[pos_]; }

    void skip_space() {
        while (!at_end() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
            ++pos_;
    }

    void expect(char c) {
        if (peek() != c) fail(std::string("expected '") + c + "'");
        ++pos_;
    }

    void literal(const char* word) {
        for (const char* p = word; *p; ++p) {
            if (peek() != *p) fail(std::string("invalid literal, expected '") + word + "'");
            ++pos_;
        }
    }

    Value value(int depth) {
        if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth));
        switch (peek()) {
            case '{': return object(depth);
            case '[': return array(depth);
            case '"': return Value::make_string(string());
            case 't': literal("true"); return Value::make_bool(true);
            case 'f': literal("false"); return Value::make_bool(false);
            case 'n': literal("null"); return Value();
            default: return number();
        }
    }

    Value object(int depth) {
        expect('{');
        std::map<std::string, Value> members;
        skip_space();
        if (peek() == '}') {
            ++pos_;
            return Value::make_object(std::move(members));
        }
        while (true) {
            skip_space();
            if (peek() != '"') fail("expected a string key");
            std::string key = string();
            if (members.count(key)) fail("duplicate key \"" + key + "\"");
            skip_space();
            expect(':');
            skip_space();
            members.emplace(std::move(key), value(depth + 1));
            skip_space();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            expect('}');
            return Value::make_object(std::move(members));
        }
    }

    Value array(int depth) {
        expect('[');
        std::vector<Value> items;
        skip_space();
        if (peek() == ']') {
            ++pos_;
            return Value::make_array(std::move(items));
        }
        while (true) {
            skip_space();
            items.push_back(value(depth + 1));
            skip_space();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            expect(']');
            return Value::make_array(std::move(items));
        }
    }

    uint32_t hex4() {
        uint32_t code = 0;
        for (int i = 0; i < 4; ++i) {
            char c = peek();
            uint32_t digit;
            if (c >= '0' && c <= '9') {
                digit = static_cast<uint32_t>(c - '0');
            } else if (c >= 'a' && c <= 'f') {
                digit = static_cast<uint32_t>(c - 'a' + 10);
            } else if (c >= 'A' && c <= 'F') {
                digit = static_cast<uint32_t>(c - 'A' + 10);
            } else {
                fail("invalid \\u escape");
            }
            code = code * 16 + digit;
            ++pos_;
        }
        return code;
    }

    static void append_utf8(std::string& out, uint32_t code) {
        if (code < 0x80) {
            out += static_cast<char>(code);
        } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
        } else if (code < 0x10000) {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
    }

    std::string string() {
        expect('"');
        std::string out;
        while (true) {
            if (at_end()) fail("unterminated string");
            char c = text_[pos_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') {
                out += c;
                continue;
            }
            char e = peek();
            ++pos_;
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t code = hex4();
                    if (code >= 0xD800 && code < 0xDC00) {  // high surrogate: a low one must follow
                        if (peek() != '\\') fail("unpaired surrogate in \\u escape");
                        ++pos_;
                        if (peek() != 'u') fail("unpaired surrogate in \\u escape");
                        ++pos_;
                        uint32_t low = hex4();
                        if (low < 0xDC00 || low >= 0xE000) fail("invalid low surrogate in \\u escape");
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    } else if (code >= 0xDC00 && code < 0xE000) {
                        fail("unpaired surrogate in \\u escape");
                    }
                    append_utf8(out, code);
                    break;
                }
                default: fail("invalid escape in string");
            }
        }
    }

    Value number() {
        size_t start = pos_;
        if (peek() == '-') ++pos_;
        if (peek() == '0') {
            ++pos_;
        } else if (peek() >= '1' && peek() <= '9') {
            while (peek() >= '0' && peek() <= '9') ++pos_;
        } else {
            fail("expected a value");
        }
        if (peek() == '.') {
            ++pos_;
            if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit after '.'");
            while (peek() >= '0' && peek() <= '9') ++pos_;
        }
        if (peek() == 'e' || peek() == 'E') {
            ++pos_;
            if (peek() == '+' || peek() == '-') ++pos_;
            if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit in the exponent");
            while (peek() >= '0' && peek() <= '9') ++pos_;
        }
        double d = 0.0;
        auto result = std::from_chars(text_.data() + start, text_.data() + pos_, d);
        if (result.ec != std::errc() || result.ptr != text_.data() + pos_) {
            pos_ = start;
            fail("number out of range");
        }
        return Value::make_number(d);
    }
};

}  // namespace

Value parse(const std::string& text) { return Parser(text).document(); }

}  // namespace tardis::json
