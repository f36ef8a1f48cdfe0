// The vendored JSON reader, model.json validation and graph selection, and the thread-local last error.
//
// usage: test_metadata
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>

#include "check.hpp"
#include "error.hpp"
#include "json.hpp"
#include "metadata.hpp"
#include "tardis_edge.h"

namespace {

using tardis::json::parse;

std::string parse_error(const std::string& text) {
    try {
        parse(text);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

void test_json() {
    const auto v = parse(R"( {"a": [1, -2.5e3, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {}} )");
    CHECK(v.is_object() && v.find("a")->as_array().size() == 5);
    CHECK(v.find("a")->as_array()[1].as_number() == -2500.0);
    CHECK(v.find("a")->as_array()[2].as_bool() && v.find("a")->as_array()[4].is_null());
    CHECK(v.find("s")->as_string() == "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");  // é and U+1F600 in UTF-8
    CHECK(v.find("o")->as_object().empty() && v.find("missing") == nullptr);
    CHECK(parse("0.1").as_number() == 0.1 && parse("1E-2").as_number() == 0.01);

    CHECK(parse_error("{\"a\": 1,}").find("line 1, column 9: expected a string key") == 0);
    CHECK(parse_error("{\n  \"a\": tru}").find("line 2, column 11: invalid literal") == 0);
    CHECK(parse_error("[1 2]").find("expected ']'") != std::string::npos);
    CHECK(parse_error("\"abc").find("unterminated string") != std::string::npos);
    CHECK(parse_error("01").find("unexpected text") != std::string::npos);
    CHECK(parse_error("{\"a\": 1, \"a\": 2}").find("duplicate key \"a\"") != std::string::npos);
    CHECK(parse_error("\"\\ud800\"").find("unpaired surrogate") != std::string::npos);
    CHECK(parse_error("1e999").find("number out of range") != std::string::npos);
    CHECK(parse_error(std::string(300, '[') + std::string(300, ']')).find("nesting deeper") != std::string::npos);
    CHECK(parse_error("").find("expected a value") != std::string::npos);
}

tardis_status metadata_status(const std::string& text, std::string* message) {
    try {
        tardis::parse_metadata(text, "model.json");
    } catch (const tardis::Error& e) {
        *message = e.what();
        return e.status();
    }
    return TARDIS_OK;
}

void test_metadata() {
    // As written by tardis_edge.artifact.ArtifactMetadata.to_json (sorted keys, indent 2).
    const std::string text = R"({
  "color": "RGB", "decode_method": "dark", "flip_pairs": [[1, 2]], "format": "tardis-edge-artifact",
  "format_version": 1, "heatmap_height": 48, "heatmap_width": 32, "input_height": 192, "input_width": 128,
  "keypoint_names": ["snout", "leftear", "rightear", "tailbase"], "mean": [0.485, 0.456, 0.406],
  "models": {"fp32": {"file": "tardis_fp32.onnx", "outputs": ["keypoints", "scores"]},
             "fp32_heatmaps": {"file": "tardis_fp32_heatmaps.onnx", "outputs": ["heatmaps"]},
             "fp16": {"file": "tardis_fp16.onnx", "engine": "orin_fp16.engine"},
             "int8": {"file": "tardis_int8_heatmaps.onnx", "outputs": {"heatmaps": [1, 4, 48, 32]}},
             "fp16b": {"file": "b.onnx", "outputs": ["keypoints", "scores"], "heatmaps_file": "b_heatmaps.onnx"}},
  "padding": 1.5, "skeleton": [[0, 1]], "softargmax_beta": null, "std": [0.229, 0.224, 0.225],
  "versions": {"torch": "2.13.0"}, "extra_future_key": 1
})";
    const tardis::Metadata m = tardis::parse_metadata(text, "model.json");
    CHECK(m.num_keypoints() == 4 && m.keypoint_names[3] == "tailbase");
    CHECK(m.input_width == 128 && m.input_height == 192 && m.heatmap_width == 32 && m.heatmap_height == 48);
    CHECK(m.stride() == 4.0f && m.padding == 1.5 && m.decode_method == TARDIS_DECODE_DARK);
    CHECK(m.heatmap_model("fp32") && m.heatmap_model("fp32")->file == "tardis_fp32_heatmaps.onnx");
    CHECK(m.keypoint_model("fp32") && m.keypoint_model("fp32")->file == "tardis_fp32.onnx");
    CHECK(m.keypoint_model("fp16") && m.keypoint_model("fp16")->engine == "orin_fp16.engine");  // outputs inferred
    CHECK(m.heatmap_model("fp16") == nullptr);
    CHECK(m.heatmap_model("int8") && m.keypoint_model("int8") == nullptr);  // outputs given as a shape mapping
    CHECK(m.heatmap_model("fp16b") && m.heatmap_model("fp16b")->file == "b_heatmaps.onnx");
    CHECK(m.keypoint_model("fp16b") && m.keypoint_model("fp16b")->file == "b.onnx");
    CHECK(m.model_keys() == "fp16, fp16b, fp16b_heatmaps, fp32, fp32_heatmaps, int8");

    std::string msg;
    CHECK(metadata_status("[]", &msg) == TARDIS_ERROR_BAD_METADATA && msg.find("must hold a JSON object") != std::string::npos);
    CHECK(metadata_status(R"({"format": "tardis-edge-artifact", "models": {}})", &msg) == TARDIS_ERROR_BAD_METADATA);
    CHECK(msg.find("missing key \"keypoint_names\"") != std::string::npos);
    const std::string head = R"({"format": "tardis-edge-artifact", "keypoint_names": ["a"], )";
    CHECK(metadata_status(head + R"("input_width": 25.5, "models": {"x": {"file": "x.onnx"}}})", &msg) ==
          TARDIS_ERROR_BAD_METADATA);
    CHECK(msg.find("\"input_width\" must be a positive integer, got 25.5") != std::string::npos);
    CHECK(metadata_status(head + R"("color": "GRAY", "models": {"x": {"file": "x.onnx"}}})", &msg) ==
          TARDIS_ERROR_BAD_METADATA);
    CHECK(msg.find("\"color\" must be \"RGB\" or \"BGR\", got \"GRAY\"") != std::string::npos);
    CHECK(metadata_status(head + R"("models": {"x": {"outputs": []}}})", &msg) == TARDIS_ERROR_BAD_METADATA);
    CHECK(msg.find("models[\"x\"] needs a \"file\"") != std::string::npos);
    CHECK(metadata_status(head + R"("softargmax_beta": -1, "models": {"x": {"file": "x.onnx"}}})", &msg) ==
          TARDIS_ERROR_BAD_METADATA);
    CHECK(msg.find("\"softargmax_beta\" must be null or a positive number, got -1") != std::string::npos);
    CHECK(metadata_status(head + R"("decode_method": "softargmax", "softargmax_beta": 20,
                                    "models": {"x": {"file": "x.onnx"}}})",
                          &msg) == TARDIS_OK);
    CHECK(tardis::parse_decode_method("soft_argmax", "m") == TARDIS_DECODE_SOFT_ARGMAX);
}

// The last error is per thread: a failure on another thread leaves this thread's message alone.
void test_last_error_is_thread_local() {
    float kp[2], score;
    CHECK(tardis_decode_heatmaps(nullptr, 1, 1, 1, 1, TARDIS_DECODE_ARGMAX, 0, kp, &score) ==
          TARDIS_ERROR_INVALID_ARGUMENT);
    const std::string mine = tardis_last_error();
    std::string theirs;
    std::thread([&] {
        CHECK(std::string(tardis_last_error()).empty());
        tardis_runner* r = nullptr;
        CHECK(tardis_runner_create("/nonexistent/artifact", nullptr, &r) == TARDIS_ERROR_NOT_FOUND);
        theirs = tardis_last_error();
    }).join();
    CHECK(!mine.empty() && tardis_last_error() == mine);
    CHECK(theirs.find("/nonexistent/artifact not found") != std::string::npos);
}

}  // namespace

int main() {
    test_json();
    test_metadata();
    test_last_error_is_thread_local();
    return tardis::test::finish("test_metadata");
}
