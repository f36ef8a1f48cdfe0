// model.json of an artifact folder (the contract in tardis_edge/artifact.py), read and validated.
#pragma once

#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tardis_edge.h"

namespace tardis {

constexpr const char* kArtifactFormat = "tardis-edge-artifact";
constexpr int kArtifactFormatVersion = 1;
constexpr const char* kMetadataFile = "model.json";
constexpr const char* kInputName = "image";
constexpr const char* kOutputKeypoints = "keypoints";
constexpr const char* kOutputScores = "scores";
constexpr const char* kOutputHeatmaps = "heatmaps";

// One entry of model.json's `models`: a graph file and what it outputs.
struct ModelEntry {
    std::string key;                   // e.g. "fp32", "fp32_heatmaps"
    std::string file;                  // relative to the artifact folder
    std::vector<std::string> outputs;  // {"keypoints", "scores"} or {"heatmaps"}
    std::string engine;                // optional TensorRT engine file ("" if not listed)

    bool has_output(const std::string& name) const;
    bool outputs_heatmaps() const { return has_output(kOutputHeatmaps); }
    bool outputs_keypoints() const { return has_output(kOutputKeypoints) && has_output(kOutputScores); }
};

// model.json's `finder` (multi-animal artifacts): the whole-frame animal finder, tardis_edge.finder.FinderConfig.
struct FinderSpec {
    int input_size = 256;       // side S of the square whole-frame input
    double stride = 4.0;        // input pixels per output pixel; S / stride is an integer
    double sigma = 2.0;         // centre Gaussian (training only)
    double min_score = 0.3;     // a centre peak below this is no animal
    int max_animals = 0;        // keep at most this many animals per frame; 0: no limit
    double min_distance = 2.0;  // peaks closer than this (output pixels) are one animal
    double min_box = 8.0;       // lower bound on a found box side, image pixels
    std::map<std::string, ModelEntry> models;  // precision -> graph (output "heatmaps": (N, 3, S/stride, S/stride))

    int output_size() const { return static_cast<int>(std::lround(input_size / stride)); }
    std::string model_keys() const;
};

struct Metadata {
    std::string source;  // path of model.json, for messages
    std::vector<std::string> keypoint_names;
    int input_width = 256;
    int input_height = 256;
    int heatmap_width = 64;
    int heatmap_height = 64;
    std::string color = "RGB";  // channel order the graph expects
    double padding = 1.25;
    tardis_decode_method decode_method = TARDIS_DECODE_MSRA;
    float softargmax_beta = 0.0f;  // > 0 when decode_method is soft-argmax
    std::map<std::string, ModelEntry> models;
    std::optional<FinderSpec> finder;  // multi-animal artifacts only
    std::vector<double> oks_sigmas;    // per keypoint (tracking's OKS); empty: not recorded

    int num_keypoints() const { return static_cast<int>(keypoint_names.size()); }
    // Input pixels per heatmap pixel (validated: one integer stride on both axes).
    float stride() const { return static_cast<float>(input_width) / static_cast<float>(heatmap_width); }
    // The graph producing heatmaps for `precision`: models[precision + "_heatmaps"] (also filled from
    // models[precision].heatmaps_file), else models[precision] if it outputs heatmaps; nullptr if there is none.
    const ModelEntry* heatmap_model(const std::string& precision) const;
    // The graph with keypoints + scores outputs (decode inside the graph) for `precision`, or nullptr.
    const ModelEntry* keypoint_model(const std::string& precision) const;
    // "fp32, fp32_heatmaps" for messages.
    std::string model_keys() const;
};

// Parse decode_method strings as written by the exporter ("argmax", "msra", "dark", "soft_argmax"/"softargmax").
// Throws Error(TARDIS_ERROR_BAD_METADATA) naming the known ones.
tardis_decode_method parse_decode_method(const std::string& name, const std::string& source);

// Parse and validate model.json text; `source` names the file in messages. Throws Error(BAD_METADATA).
Metadata parse_metadata(const std::string& text, const std::string& source);

// Read <folder>/model.json (or the file itself). Throws Error(NOT_FOUND) or Error(BAD_METADATA).
Metadata load_metadata(const std::string& path);

}  // namespace tardis
