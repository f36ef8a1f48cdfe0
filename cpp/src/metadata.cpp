// Reading model.json: every check names the file, the key and the offending value.
#include "metadata.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "error.hpp"
#include "json.hpp"

namespace tardis {

namespace fs = std::filesystem;

bool ModelEntry::has_output(const std::string& name) const {
    for (const auto& o : outputs)
        if (o == name) return true;
    return false;
}

const ModelEntry* Metadata::heatmap_model(const std::string& precision) const {
    auto it = models.find(precision + "_heatmaps");
    if (it != models.end() && it->second.outputs_heatmaps()) return &it->second;
    it = models.find(precision);
    if (it != models.end() && it->second.outputs_heatmaps()) return &it->second;
    return nullptr;
}

const ModelEntry* Metadata::keypoint_model(const std::string& precision) const {
    auto it = models.find(precision);
    if (it != models.end() && it->second.outputs_keypoints()) return &it->second;
    return nullptr;
}

std::string Metadata::model_keys() const {
    std::string keys;
    for (const auto& [key, entry] : models) keys += (keys.empty() ? "" : ", ") + key;
    return keys.empty() ? "none" : keys;
}

std::string FinderSpec::model_keys() const {
    std::string keys;
    for (const auto& [key, entry] : models) keys += (keys.empty() ? "" : ", ") + key;
    return keys.empty() ? "none" : keys;
}

tardis_decode_method parse_decode_method(const std::string& name, const std::string& source) {
    if (name == "argmax") return TARDIS_DECODE_ARGMAX;
    if (name == "msra") return TARDIS_DECODE_MSRA;
    if (name == "dark") return TARDIS_DECODE_DARK;
    if (name == "soft_argmax" || name == "softargmax") return TARDIS_DECODE_SOFT_ARGMAX;
    throw Error(TARDIS_ERROR_BAD_METADATA, source + ": unknown decode_method \"" + name +
                                               "\"; expected one of argmax, msra, dark, soft_argmax");
}

namespace {

[[noreturn]] void bad(const std::string& source, const std::string& what) {
    throw Error(TARDIS_ERROR_BAD_METADATA, source + ": " + what);
}

std::string describe(const json::Value& v) {
    switch (v.type()) {
        case json::Value::Type::String: return "\"" + v.as_string() + "\"";
        case json::Value::Type::Number: {
            std::ostringstream s;
            s << v.as_number();
            return s.str();
        }
        default: return json::type_name(v.type());
    }
}

std::string describe_number(double x) {
    std::ostringstream s;
    s << x;
    return s.str();
}

const json::Value& need(const json::Value& obj, const std::string& key, json::Value::Type type,
                        const std::string& source) {
    const json::Value* v = obj.find(key);
    if (!v) bad(source, "missing key \"" + key + "\" (" + json::type_name(type) + ")");
    if (v->type() != type)
        bad(source, "\"" + key + "\" must be a " + json::type_name(type) + ", got " + describe(*v));
    return *v;
}

int positive_int(const json::Value& root, const std::string& key, int fallback, const std::string& source) {
    const json::Value* v = root.find(key);
    if (!v) return fallback;
    if (!v->is_number() || v->as_number() != std::floor(v->as_number()) || v->as_number() < 1 ||
        v->as_number() > 1e6)
        bad(source, "\"" + key + "\" must be a positive integer, got " + describe(*v));
    return static_cast<int>(v->as_number());
}

std::vector<std::string> string_list(const json::Value& v, const std::string& key, const std::string& source) {
    if (!v.is_array()) bad(source, "\"" + key + "\" must be an array of strings, got " + describe(v));
    std::vector<std::string> out;
    for (const auto& item : v.as_array()) {
        if (!item.is_string()) bad(source, "\"" + key + "\" must hold strings only, got " + describe(item));
        out.push_back(item.as_string());
    }
    return out;
}

ModelEntry parse_model(const std::string& key, const json::Value& v, const std::string& source) {
    const std::string where = "models[\"" + key + "\"]";
    if (!v.is_object()) bad(source, where + " must be an object with a \"file\", got " + describe(v));
    ModelEntry entry;
    entry.key = key;
    const json::Value* file = v.find("file");
    if (!file || !file->is_string() || file->as_string().empty())
        bad(source, where + " needs a \"file\" string naming its ONNX graph");
    entry.file = file->as_string();
    if (const json::Value* outputs = v.find("outputs")) {
        if (outputs->is_object()) {  // {"keypoints": [...shape], ...}: the names are the keys
            for (const auto& [name, shape] : outputs->as_object()) entry.outputs.push_back(name);
        } else {
            entry.outputs = string_list(*outputs, where + ".outputs", source);
        }
    } else {
        // Without an explicit list, the artifact's file naming tells: tardis_<precision>_heatmaps.onnx -> heatmaps.
        const std::string suffix = "_heatmaps.onnx";
        bool heatmaps = entry.file.size() >= suffix.size() &&
                        entry.file.compare(entry.file.size() - suffix.size(), suffix.size(), suffix) == 0;
        entry.outputs = heatmaps ? std::vector<std::string>{kOutputHeatmaps}
                                 : std::vector<std::string>{kOutputKeypoints, kOutputScores};
    }
    if (const json::Value* engine = v.find("engine")) {
        if (!engine->is_string()) bad(source, where + ".engine must be a string, got " + describe(*engine));
        entry.engine = engine->as_string();
    }
    return entry;
}

double number_in(const json::Value& obj, const std::string& key, double fallback, double lo, double hi,
                 bool lo_open, const std::string& where, const std::string& source) {
    const json::Value* v = obj.find(key);
    if (!v) return fallback;
    const double x = v->is_number() ? v->as_number() : NAN;
    if (!std::isfinite(x) || x < lo || (lo_open && x == lo) || x > hi)
        bad(source, where + "\"" + key + "\" must be a number in " + (lo_open ? "(" : "[") + describe_number(lo) +
                        ", " + describe_number(hi) + "], got " + describe(*v));
    return x;
}

// model.json's `finder` (tardis_edge.finder.FinderConfig + the graphs), checked as the Python runtime does.
FinderSpec parse_finder(const json::Value& v, const std::string& source) {
    if (!v.is_object()) bad(source, "\"finder\" must be an object (the animal finder), got " + describe(v));
    FinderSpec f;
    const std::string where = "finder.";
    const json::Value* size = v.find("input_size");
    if (!size || !size->is_number() || size->as_number() != std::floor(size->as_number()) ||
        size->as_number() < 32 || size->as_number() > 1e5)
        bad(source, where + "input_size must be an integer >= 32, got " + (size ? describe(*size) : "nothing"));
    f.input_size = static_cast<int>(size->as_number());
    const json::Value* stride = v.find("stride");
    if (!stride || !stride->is_number() || !(stride->as_number() > 0) ||
        std::fabs(f.input_size / stride->as_number() - std::round(f.input_size / stride->as_number())) > 1e-9)
        bad(source, where + "stride must be a positive number dividing input_size " + std::to_string(f.input_size) +
                        ", got " + (stride ? describe(*stride) : "nothing"));
    f.stride = stride->as_number();
    f.sigma = number_in(v, "sigma", f.sigma, 0.0, 1e9, true, where, source);
    f.min_score = number_in(v, "min_score", f.min_score, 0.0, 1.0, false, where, source);
    if (f.min_score >= 1.0) bad(source, where + "min_score must be below 1, got " + describe_number(f.min_score));
    const double most = number_in(v, "max_animals", f.max_animals, 0.0, 1e6, false, where, source);
    if (most != std::floor(most)) bad(source, where + "max_animals must be an integer, got " + describe_number(most));
    f.max_animals = static_cast<int>(most);
    f.min_distance = number_in(v, "min_distance", f.min_distance, 0.0, 1e9, false, where, source);
    f.min_box = number_in(v, "min_box", f.min_box, 0.0, 1e9, false, where, source);
    const json::Value* models = v.find("models");
    if (!models || !models->is_object() || models->as_object().empty())
        bad(source, where + "models must list the finder graphs (precision -> {\"file\": ...}), got " +
                        (models ? describe(*models) : "nothing"));
    for (const auto& [key, value] : models->as_object()) {
        ModelEntry entry = parse_model(key, value, source);
        entry.outputs = {kOutputHeatmaps};  // every finder graph outputs "heatmaps" (tardis_edge.artifact)
        f.models.emplace(key, entry);
    }
    return f;
}

}  // namespace

Metadata parse_metadata(const std::string& text, const std::string& source) {
    json::Value root;
    try {
        root = json::parse(text);
    } catch (const std::invalid_argument& e) {
        bad(source, std::string("is not valid JSON (") + e.what() + "); re-export the artifact with tardis-export");
    }
    if (!root.is_object()) bad(source, "must hold a JSON object, got " + describe(root));

    const json::Value* format = root.find("format");
    if (!format || !format->is_string() || format->as_string() != kArtifactFormat)
        bad(source, std::string("is not a tardis-edge artifact (format=") + (format ? describe(*format) : "missing") +
                        ", expected \"" + kArtifactFormat + "\")");
    if (const json::Value* version = root.find("format_version")) {
        if (!version->is_number()) bad(source, "\"format_version\" must be a number, got " + describe(*version));
        if (version->as_number() > kArtifactFormatVersion)
            bad(source, "has format_version " + describe(*version) + ", newer than this library's " +
                            std::to_string(kArtifactFormatVersion) + "; upgrade tardis-edge");
    }

    Metadata meta;
    meta.source = source;
    meta.keypoint_names = string_list(need(root, "keypoint_names", json::Value::Type::Array, source),
                                      "keypoint_names", source);
    if (meta.keypoint_names.empty()) bad(source, "\"keypoint_names\" is empty; a model has at least one keypoint");
    meta.input_width = positive_int(root, "input_width", meta.input_width, source);
    meta.input_height = positive_int(root, "input_height", meta.input_height, source);
    meta.heatmap_width = positive_int(root, "heatmap_width", meta.heatmap_width, source);
    meta.heatmap_height = positive_int(root, "heatmap_height", meta.heatmap_height, source);
    if (meta.input_width % meta.heatmap_width || meta.input_height % meta.heatmap_height ||
        meta.input_width / meta.heatmap_width != meta.input_height / meta.heatmap_height)
        bad(source, "heatmap size " + std::to_string(meta.heatmap_width) + "x" + std::to_string(meta.heatmap_height) +
                        " does not divide input size " + std::to_string(meta.input_width) + "x" +
                        std::to_string(meta.input_height) + " with one integer stride");

    if (const json::Value* color = root.find("color")) {
        if (!color->is_string() || (color->as_string() != "RGB" && color->as_string() != "BGR"))
            bad(source, "\"color\" must be \"RGB\" or \"BGR\", got " + describe(*color));
        meta.color = color->as_string();
    }
    if (const json::Value* padding = root.find("padding")) {
        if (!padding->is_number() || !(padding->as_number() > 0) || !std::isfinite(padding->as_number()))
            bad(source, "\"padding\" must be a positive number, got " + describe(*padding));
        meta.padding = padding->as_number();
    }
    if (const json::Value* method = root.find("decode_method")) {
        if (!method->is_string()) bad(source, "\"decode_method\" must be a string, got " + describe(*method));
        meta.decode_method = parse_decode_method(method->as_string(), source);
    }
    if (const json::Value* beta = root.find("softargmax_beta"); beta && !beta->is_null()) {
        if (!beta->is_number() || !(beta->as_number() > 0) || !std::isfinite(beta->as_number()))
            bad(source, "\"softargmax_beta\" must be null or a positive number, got " + describe(*beta));
        meta.softargmax_beta = static_cast<float>(beta->as_number());
    }
    if (meta.decode_method == TARDIS_DECODE_SOFT_ARGMAX && !(meta.softargmax_beta > 0))
        bad(source, "decode_method is soft_argmax but \"softargmax_beta\" is missing; export with a beta");

    const json::Value& models = need(root, "models", json::Value::Type::Object, source);
    for (const auto& [key, value] : models.as_object()) meta.models.emplace(key, parse_model(key, value, source));
    // {"fp32": {"file": ..., "heatmaps_file": ...}} is the other spelling of a separate "fp32_heatmaps" entry.
    for (const auto& [key, value] : models.as_object()) {
        const json::Value* heatmaps_file = value.find("heatmaps_file");
        if (!heatmaps_file) continue;
        if (!heatmaps_file->is_string() || heatmaps_file->as_string().empty())
            bad(source, "models[\"" + key + "\"].heatmaps_file must be a file name, got " + describe(*heatmaps_file));
        meta.models.emplace(key + "_heatmaps",
                            ModelEntry{key + "_heatmaps", heatmaps_file->as_string(), {kOutputHeatmaps}, ""});
    }
    if (meta.models.empty()) bad(source, "\"models\" is empty; the artifact lists no ONNX graph");

    if (const json::Value* finder = root.find("finder"); finder && !finder->is_null())
        meta.finder = parse_finder(*finder, source);
    if (const json::Value* sigmas = root.find("oks_sigmas"); sigmas && !sigmas->is_null()) {
        if (!sigmas->is_array() || sigmas->as_array().size() != meta.keypoint_names.size())
            bad(source, "\"oks_sigmas\" must hold one number per keypoint (" +
                            std::to_string(meta.keypoint_names.size()) + "), got " + describe(*sigmas));
        for (const auto& s : sigmas->as_array()) {
            if (!s.is_number() || !(s.as_number() > 0) || !std::isfinite(s.as_number()))
                bad(source, "\"oks_sigmas\" must be positive numbers, got " + describe(s));
            meta.oks_sigmas.push_back(s.as_number());
        }
    }
    return meta;
}

Metadata load_metadata(const std::string& path) {
    fs::path p(path);
    std::error_code ec;
    if (fs::is_directory(p, ec)) p /= kMetadataFile;
    if (!fs::exists(p, ec))
        throw Error(TARDIS_ERROR_NOT_FOUND, p.string() + " not found: an artifact folder written by tardis-export has " +
                                                kMetadataFile);
    std::ifstream in(p, std::ios::binary);
    if (!in) throw Error(TARDIS_ERROR_NOT_FOUND, p.string() + " cannot be opened for reading");
    std::ostringstream text;
    text << in.rdbuf();
    return parse_metadata(text.str(), p.string());
}

}  // namespace tardis
