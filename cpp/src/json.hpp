// A minimal JSON reader for model.json (RFC 8259: objects, arrays, strings with escapes, numbers, literals).
// Vendored on purpose: the library has no dependency for its metadata.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tardis::json {

class Value {
public:
    enum class Type { Null, Bool, Number, String, Array, Object };

    Value() = default;
    static Value make_bool(bool b);
    static Value make_number(double d);
    static Value make_string(std::string s);
    static Value make_array(std::vector<Value> items);
    static Value make_object(std::map<std::string, Value> members);

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }
    bool is_number() const { return type_ == Type::Number; }
    bool is_string() const { return type_ == Type::String; }
    bool is_array() const { return type_ == Type::Array; }
    bool is_object() const { return type_ == Type::Object; }

    bool as_bool() const { return bool_; }
    double as_number() const { return number_; }
    const std::string& as_string() const { return string_; }
    const std::vector<Value>& as_array() const { return array_; }
    const std::map<std::string, Value>& as_object() const { return object_; }
    // Member of an object, or nullptr if absent (or if this is not an object).
    const Value* find(const std::string& key) const;

private:
    Type type_ = Type::Null;
    bool bool_ = false;
    double number_ = 0.0;
    std::string string_;
    std::vector<Value> array_;
    std::map<std::string, Value> object_;
};

// Name of a type for error messages ("object", "array", ...).
const char* type_name(Value::Type type);

// Parse a whole document; throws std::invalid_argument "line L, column C: <what>" on malformed input.
Value parse(const std::string& text);

}  // namespace tardis::json
